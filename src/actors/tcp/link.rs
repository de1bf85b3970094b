//! The dialling side of the TCP transport: a [`Link`] is one node's (or client's) way to one
//! remote address, and stands where the simulated network stands for a client end.
//!
//! A link keeps two lanes to its target, each its own TCP connection: `Control` for small calls
//! and `Bulk` for large ones, so a snapshot in transit never delays a heartbeat. Lanes connect
//! when first needed and again after a loss; after a failed attempt a lane waits out a back-off
//! (doubling, with jitter) and calls on it fail at once meanwhile. Every call gets an id, many
//! are in flight on one connection, and replies are matched by id in any order. A call fails
//! with `Unreachable` when its lane is down, its connection breaks, or no reply comes within the
//! lane's call timeout; a connection that stays silent through a timeout is dropped and redialled
//! (the peer may be half-open).
//!
//! Each lane's connection is run by a task of its own (`lane.rs`), which the link owns and
//! feeds through an outbox; the task reports back with [`LaneEvent`]s to a weak recipient, so
//! it never names the link.
//!
//! With a recording [`Tracer`] ([`Link::start_traced`]) it emits a `send` event per call,
//! then its `reply` or its `drop` (unreachable, timeout, connection lost, failed); the call's
//! id, also its frame's, then comes from the tracer, so that ids are unique across every link
//! of the recording and the serving side's `deliver` and `respond` pair with them.
//!
//! Handles: [`Call`] (from client ends); [`SetBlocked`], [`GetLinkStatus`] and [`Stop`] (the
//! control protocol, `messages/tcp.rs`); [`LaneEvent`]s from its lane tasks. Sends: request
//! frames to its lane tasks, which write them to the target; each call's outcome through the
//! call's oneshot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::frame::{Frame, Lane, REQUEST_OVERHEAD};
use super::lane::{self, LaneState};
use super::settings::TcpSettings;
use crate::messages::lifecycle::Stop;
use crate::messages::net::{Call, RpcError};
use crate::messages::tcp::{GetLinkStatus, LaneEvent, LinkStatus, SetBlocked};
use crate::trace::{EventKind, NetStep, Tracer};

/// How often calls in flight are checked against their deadlines.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

type CallResult = Result<Vec<u8>, RpcError>;

struct PendingCall {
    /// The method, for the trace.
    method: &'static str,
    lane: Lane,
    generation: u64,
    sent: Instant,
    deadline: Instant,
    reply_to: oneshot::Sender<CallResult>,
}

/// One link to one remote address.
pub struct Link {
    target: SocketAddr,
    settings: Arc<TcpSettings>,
    control: LaneState,
    bulk: LaneState,
    pending: HashMap<u64, PendingCall>,
    next_id: u64,
    next_generation: u64,
    blocked: bool,
    sweeping: bool,
    last_error: Option<String>,
    /// Where calls are traced (off unless started with [`Link::start_traced`]); its node name
    /// is the calling side's.
    trace: Tracer,
    /// The called side's name in the trace.
    trace_to: String,
}

impl Link {
    /// Starts a link to `target` on the current arbiter. It connects on the first call.
    pub fn start(target: SocketAddr, settings: Arc<TcpSettings>) -> Addr<Link> {
        Link::start_traced(target, settings, Tracer::off(), "")
    }

    /// Starts a link to `target` whose calls are traced to `trace` (named after the calling
    /// side, [`Tracer::for_node`]) as going to `to`.
    pub fn start_traced(
        target: SocketAddr,
        settings: Arc<TcpSettings>,
        trace: Tracer,
        to: &str,
    ) -> Addr<Link> {
        Link {
            target,
            settings,
            control: LaneState::new(),
            bulk: LaneState::new(),
            pending: HashMap::new(),
            next_id: 1,
            next_generation: 1,
            blocked: false,
            sweeping: false,
            last_error: None,
            trace,
            trace_to: to.to_string(),
        }
        .start()
    }

    /// Traces step `step` of call `id`.
    fn trace_step(&self, step: NetStep, id: u64, method: &str) {
        self.trace.emit(|| EventKind::Net {
            step,
            id,
            kind: method.to_string(),
            from: self.trace.node().to_string(),
            to: self.trace_to.clone(),
            dup: false,
        });
    }

    /// Traces the loss of call `id`, and why.
    fn trace_drop(&self, id: u64, method: &str, why: &'static str) {
        self.trace.emit(|| EventKind::Drop {
            id,
            kind: method.to_string(),
            from: self.trace.node().to_string(),
            to: self.trace_to.clone(),
            why,
        });
    }

    fn lane_state(&self, lane: Lane) -> &LaneState {
        match lane {
            Lane::Control => &self.control,
            Lane::Bulk => &self.bulk,
        }
    }

    fn lane(&mut self, lane: Lane) -> &mut LaneState {
        match lane {
            Lane::Control => &mut self.control,
            Lane::Bulk => &mut self.bulk,
        }
    }

    fn timeout(&self, lane: Lane) -> Duration {
        match lane {
            Lane::Control => self.settings.call_timeout,
            Lane::Bulk => self.settings.bulk_call_timeout,
        }
    }

    /// Puts `frame` (request `id`) on its way; `Some(generation)` of the connection or attempt
    /// that carries it, `None` if it cannot go now.
    fn submit(
        &mut self,
        lane: Lane,
        id: u64,
        frame: Frame,
        ctx: &mut Context<Self>,
    ) -> Option<u64> {
        let now = Instant::now();
        let target = self.target;
        match self.lane(lane) {
            // While dialling, requests wait in the outbox; the task sends them once up.
            LaneState::Up {
                generation, outbox, ..
            }
            | LaneState::Dialing {
                generation, outbox, ..
            } => match outbox.try_send(frame) {
                Ok(()) => Some(*generation),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    log::debug!("link to {target}: {lane:?} outbox full; call {id} fails");
                    None
                }
                // The task has ended (a failed attempt or a lost connection); its report is
                // on the way.
                Err(mpsc::error::TrySendError::Closed(_)) => None,
            },
            LaneState::Down { retry_at, failures } => {
                if retry_at.is_some_and(|at| now < at) {
                    return None;
                }
                let failures = *failures;
                let generation = self.next_generation;
                self.next_generation += 1;
                let (outbox, task) = lane::open(
                    target,
                    lane,
                    generation,
                    self.settings.clone(),
                    ctx.address().downgrade().recipient(),
                );
                // A fresh queue has room for one frame.
                let queued = outbox.try_send(frame).is_ok();
                *self.lane(lane) = LaneState::Dialing {
                    generation,
                    failures,
                    outbox,
                    task,
                };
                queued.then_some(generation)
            }
        }
    }

    fn fail_where(&mut self, why: &'static str, doomed: impl Fn(&PendingCall) -> bool) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, call)| doomed(call))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(call) = self.pending.remove(&id) {
                self.trace_drop(id, call.method, why);
                // The caller may have stopped waiting; nothing to do then.
                let _ = call.reply_to.send(Err(RpcError::Unreachable));
            }
        }
    }

    /// Drops the lane's connection or attempt and fails the calls it carried.
    fn reset_lane(&mut self, lane: Lane, down: LaneState) {
        let old = std::mem::replace(self.lane(lane), down);
        if let Some(generation) = old.generation() {
            self.fail_where("connection-lost", |call| {
                call.lane == lane && call.generation == generation
            });
        }
    }

    fn arm_sweep(&mut self, ctx: &mut Context<Self>) {
        if !self.sweeping && !self.pending.is_empty() {
            self.sweeping = true;
            ctx.run_later(SWEEP_INTERVAL, |link, ctx| {
                link.sweeping = false;
                link.sweep();
                link.arm_sweep(ctx);
            });
        }
    }

    /// Fails calls past their deadline. A connection that has not said a word since such a
    /// call went out is presumed dead (a half-open or frozen peer) and dropped, so the next
    /// call dials afresh.
    fn sweep(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, call)| call.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut silent = Vec::new();
        for id in expired {
            let Some(call) = self.pending.remove(&id) else {
                continue;
            };
            self.trace_drop(id, call.method, "timeout");
            let _ = call.reply_to.send(Err(RpcError::Unreachable));
            if let LaneState::Up {
                generation,
                last_heard,
                ..
            } = self.lane(call.lane)
            {
                if *generation == call.generation
                    && *last_heard < call.sent
                    && !silent.contains(&call.lane)
                {
                    silent.push(call.lane);
                }
            }
        }
        for lane in silent {
            let quiet = self.timeout(lane);
            log::warn!(
                "link to {}: no reply on the {lane:?} lane for {quiet:?}; dropping the connection",
                self.target
            );
            self.last_error = Some(format!("no reply for {quiet:?}"));
            self.reset_lane(lane, LaneState::new());
        }
    }

    /// The lane's attempt `generation` got through: its requests are on their way.
    fn connected(&mut self, lane: Lane, generation: u64) {
        let LaneState::Dialing { outbox, task, .. } =
            std::mem::replace(self.lane(lane), LaneState::new())
        else {
            return;
        };
        *self.lane(lane) = LaneState::Up {
            generation,
            outbox,
            last_heard: Instant::now(),
            _task: task,
        };
        if self.last_error.take().is_some() {
            log::info!("link to {}: {lane:?} lane connected again", self.target);
        } else {
            log::debug!("link to {}: {lane:?} lane connected", self.target);
        }
    }

    /// The lane whose current attempt or connection is `generation`, if any is.
    fn lane_of(&self, generation: u64) -> Option<Lane> {
        [Lane::Control, Lane::Bulk]
            .into_iter()
            .find(|&lane| self.lane_state(lane).generation() == Some(generation))
    }

    fn dial_failed(&mut self, lane: Lane, reason: String) {
        let failures = match self.lane(lane) {
            LaneState::Dialing { failures, .. } => *failures + 1,
            _ => 1,
        };
        let backoff = self.settings.backoff(failures);
        // ±25% jitter, so nodes that lost the same peer do not all knock at once.
        let backoff = backoff.mul_f64(rand::thread_rng().gen_range(0.75..1.25));
        if failures == 1 {
            log::warn!(
                "link to {}: cannot connect the {lane:?} lane: {reason}; retrying with back-off",
                self.target
            );
        } else {
            log::debug!(
                "link to {}: attempt {failures} failed: {reason}; next in {backoff:?}",
                self.target
            );
        }
        self.last_error = Some(reason);
        let down = LaneState::Down {
            retry_at: Some(Instant::now() + backoff),
            failures,
        };
        self.reset_lane(lane, down);
    }
}

impl Actor for Link {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Calls arrive with `do_send`; lane events must never be turned away either.
        ctx.set_mailbox_capacity(usize::MAX);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.fail_where("connection-lost", |_| true);
    }
}

impl Handler<Call> for Link {
    type Result = ();

    fn handle(&mut self, call: Call, ctx: &mut Self::Context) {
        if self.blocked {
            if let Some(id) = self.trace.next_id() {
                self.trace_step(NetStep::Send, id, call.method);
                self.trace_drop(id, call.method, "unreachable");
            }
            let _ = call.reply_to.send(Err(RpcError::Unreachable));
            return;
        }
        let size = call.args.len() + call.method.len() + REQUEST_OVERHEAD;
        if size > self.settings.max_frame {
            let why = format!(
                "request {} of {} bytes exceeds the maximum frame size {}",
                call.method,
                call.args.len(),
                self.settings.max_frame
            );
            log::error!("link to {}: {why}", self.target);
            let _ = call.reply_to.send(Err(RpcError::Codec(why)));
            return;
        }
        let lane = Lane::for_request(call.method, call.args.len(), self.settings.bulk_threshold);
        // Traced, ids come from the recording, unique across all its links.
        let id = self.trace.next_id().unwrap_or_else(|| {
            let id = self.next_id;
            self.next_id += 1;
            id
        });
        let method = call.method;
        self.trace_step(NetStep::Send, id, method);
        let frame = Frame::Request {
            id,
            method: call.method.to_string(),
            args: call.args,
        };
        let Some(generation) = self.submit(lane, id, frame, ctx) else {
            self.trace_drop(id, method, "unreachable");
            let _ = call.reply_to.send(Err(RpcError::Unreachable));
            return;
        };
        let sent = Instant::now();
        let pending = PendingCall {
            method,
            lane,
            generation,
            sent,
            deadline: sent + self.timeout(lane),
            reply_to: call.reply_to,
        };
        self.pending.insert(id, pending);
        self.arm_sweep(ctx);
    }
}

impl Handler<LaneEvent> for Link {
    type Result = ();

    fn handle(&mut self, event: LaneEvent, _: &mut Self::Context) {
        match event {
            LaneEvent::Connected { generation } => {
                // No lane: a stale attempt (the lane was reset meanwhile).
                if let Some(lane) = self.lane_of(generation) {
                    self.connected(lane, generation);
                }
            }
            LaneEvent::DialFailed { generation, reason } => {
                if let Some(lane) = self.lane_of(generation) {
                    self.dial_failed(lane, reason);
                }
            }
            LaneEvent::Reply {
                generation,
                id,
                result,
            } => {
                if let Some(lane) = self.lane_of(generation) {
                    if let LaneState::Up { last_heard, .. } = self.lane(lane) {
                        *last_heard = Instant::now();
                    }
                }
                // Ids are never reused, so even a reply on a dropped connection is the
                // answer its call waits for.
                if let Some(call) = self.pending.remove(&id) {
                    match &result {
                        Ok(_) => self.trace_step(NetStep::Reply, id, call.method),
                        Err(_) => self.trace_drop(id, call.method, "failed"),
                    }
                    let _ = call.reply_to.send(result);
                }
            }
            LaneEvent::Lost { generation, reason } => {
                let Some(lane) = self.lane_of(generation) else {
                    return;
                };
                log::info!(
                    "link to {}: {lane:?} connection lost: {reason}",
                    self.target
                );
                self.last_error = Some(reason);
                self.reset_lane(lane, LaneState::new());
            }
        }
    }
}

impl Handler<SetBlocked> for Link {
    type Result = ();

    fn handle(&mut self, msg: SetBlocked, _: &mut Self::Context) {
        self.blocked = msg.0;
        if msg.0 {
            self.reset_lane(Lane::Control, LaneState::new());
            self.reset_lane(Lane::Bulk, LaneState::new());
            self.fail_where("unreachable", |_| true);
        }
    }
}

impl Handler<GetLinkStatus> for Link {
    type Result = MessageResult<GetLinkStatus>;

    fn handle(&mut self, _: GetLinkStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(LinkStatus {
            target: self.target,
            control: self.control.describe(),
            bulk: self.bulk.describe(),
            last_error: self.last_error.clone(),
        })
    }
}

impl Handler<Stop> for Link {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
