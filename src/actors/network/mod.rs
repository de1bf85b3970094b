//! The simulated network: the routed mailbox every inter-node RPC goes through.
//!
//! Its semantics follow 6.5840's labrpc (see `shared/TESTS.md` §1): named client ends that start
//! disabled, servers hosting several services, a reliable or lossy net, long delays for calls
//! that cannot be delivered, long reordering of replies, and replies from a server that was
//! deleted or disconnected while its handler ran are dropped. Three additions: one-way link
//! cuts between servers (a cut `a → b` loses a's calls to b and a's replies to b's calls, as a
//! broken direction of a real link would), duplicate delivery of requests, and a one-call
//! partition helper.
//!
//! Every call also pays a fixed wire latency (default 1 ms) each way. labrpc adds none on a
//! reliable net, but under virtual time a client looping on zero-latency calls would keep the
//! runtime busy forever and time would never advance. Real-time runs use zero latency: there the
//! scheduling of real tasks is the wire.
//!
//! Handles: [`Call`], the control messages of [`crate::messages::net`] and `HandlerDone`
//! (internal). Sends: [`Dispatch`] to the services of the called server, and each caller's
//! outcome through its oneshot channel. All timing goes through one deadline queue
//! (`timers.rs`) with a single armed timer; handlers run as separate tasks so a slow handler
//! never blocks the network.
//!
//! With a recording [`Tracer`] (see [`Network::with_trace`]) it also emits a trace event for
//! every send, delivery, reply and drop.

mod handle;
mod timers;
mod trace;

pub use handle::NetworkHandle;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix::prelude::*;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::messages::net::*;
use crate::trace::{EventKind, NetStep, Tracer};
use timers::DeadlineQueue;
use trace::TraceHash;

/// labrpc's short delay bound on an unreliable net (`rand % 27` ms).
const SHORT_DELAY_MS: u64 = 27;
/// Calls that cannot be delivered fail after up to this long when long delays are on.
pub(crate) const LONG_DELAY_MS: u64 = 7000;
/// … and after up to this long otherwise.
pub(crate) const FAIL_DELAY_MS: u64 = 100;
/// Loss probability per mille for requests and replies on an unreliable net.
const LOSS_PER_MILLE: u32 = 100;
/// Probability per mille that a delivered request is delivered a second time, when on.
const DUPLICATE_PER_MILLE: u32 = 100;

type Outcome = Result<Vec<u8>, RpcError>;

struct EndState {
    enabled: bool,
    server: Option<ServerName>,
    owner: Option<ServerName>,
}

struct ServerEntry {
    /// Bumped on every `AddServer`, so a replaced server is told apart from its successor.
    generation: u64,
    server: Server,
    rpc_count: u64,
}

/// Where an in-flight call is.
enum Stage {
    /// Waiting out its delivery delay; dispatched to this handler when due.
    Delivering(Recipient<Dispatch>),
    /// The handler is running.
    Running,
    /// The reply is decided and on its way (delayed by latency or reordering).
    Replying(Vec<u8>),
    /// The call will fail when its delay is up.
    Failing,
}

struct PendingCall {
    end: EndName,
    server: ServerName,
    generation: u64,
    method: &'static str,
    args: Vec<u8>,
    stage: Stage,
    reply_to: oneshot::Sender<Outcome>,
}

/// What the deadline queue holds.
#[derive(Debug, Clone, Copy)]
enum Event {
    Dispatch(CallId),
    Fail(CallId),
    Reply(CallId),
}

/// The simulated network actor. Create it with [`Network::new`] and drive it through a
/// [`NetworkHandle`].
pub struct Network {
    ends: BTreeMap<EndName, EndState>,
    servers: BTreeMap<ServerName, ServerEntry>,
    /// One-way cuts `(from, to)` between servers.
    cut_links: BTreeSet<(ServerName, ServerName)>,
    reliable: bool,
    long_delays: bool,
    long_reordering: bool,
    duplicates: bool,
    latency: Duration,
    total_calls: u64,
    total_bytes: u64,
    next_generation: u64,
    next_call: CallId,
    calls: BTreeMap<CallId, PendingCall>,
    queue: DeadlineQueue<Event>,
    /// The armed timer and its deadline.
    armed: Option<(Instant, SpawnHandle)>,
    rng: ChaCha8Rng,
    trace: TraceHash,
    started: Instant,
    /// Structured events, when recording.
    tracer: Tracer,
}

impl Network {
    /// A reliable network with short failure delays and 1 ms wire latency, whose random choices
    /// all come from `seed`.
    pub fn new(seed: u64) -> Self {
        Network {
            ends: BTreeMap::new(),
            servers: BTreeMap::new(),
            cut_links: BTreeSet::new(),
            reliable: true,
            long_delays: false,
            long_reordering: false,
            duplicates: false,
            latency: Duration::from_millis(1),
            total_calls: 0,
            total_bytes: 0,
            next_generation: 0,
            next_call: 0,
            calls: BTreeMap::new(),
            queue: DeadlineQueue::new(),
            armed: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
            trace: TraceHash::new(),
            started: Instant::now(),
            tracer: Tracer::off(),
        }
    }

    /// Emits a structured event for every send, delivery, reply and drop to `tracer`.
    pub fn with_trace(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// The names of the calling and the called server of `call` (for an undeliverable call,
    /// the server its end points at).
    fn parties(&self, call: &PendingCall) -> (String, String) {
        let end = self.ends.get(&call.end);
        let from = end
            .and_then(|end| end.owner.clone())
            .unwrap_or_else(|| "client".to_string());
        let to = match call.server.is_empty() {
            true => end.and_then(|end| end.server.clone()).unwrap_or_default(),
            false => call.server.clone(),
        };
        (from, to)
    }

    /// Emits one step of `call` to the tracer, if it records.
    fn trace_step(&self, step: NetStep, call: CallId, dup: bool) {
        if !self.tracer.is_on() {
            return;
        }
        if let Some(pending) = self.calls.get(&call) {
            let (from, to) = self.parties(pending);
            self.tracer.emit(|| EventKind::Net {
                step,
                id: call,
                kind: pending.method.to_string(),
                from,
                to,
                dup,
            });
        }
    }

    /// Emits the loss of `call` to the tracer, if it records.
    fn trace_drop(&self, call: CallId, why: &'static str) {
        if !self.tracer.is_on() {
            return;
        }
        if let Some(pending) = self.calls.get(&call) {
            let (from, to) = self.parties(pending);
            self.tracer.emit(|| EventKind::Drop {
                id: call,
                kind: pending.method.to_string(),
                from,
                to,
                why,
            });
        }
    }

    /// Sets the one-way wire latency added to every request and reply.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    fn record(&mut self, kind: &str, call: CallId) {
        let at = self.started.elapsed().as_nanos();
        let (end, server) = self
            .calls
            .get(&call)
            .map(|c| (c.end.as_str(), c.server.as_str()))
            .unwrap_or(("", ""));
        self.trace.record(at, kind, end, server, call);
    }

    fn ms(&mut self, bound: u64) -> Duration {
        Duration::from_millis(self.rng.gen_range(0..bound))
    }

    fn lose(&mut self) -> bool {
        self.rng.gen_range(0..1000) < LOSS_PER_MILLE
    }

    /// Whether the one-way link `from → to` is cut.
    fn is_cut(&self, from: &ServerName, to: &ServerName) -> bool {
        self.cut_links.contains(&(from.clone(), to.clone()))
    }

    /// Whether the reply of `call` is lost on a cut link back to the calling server.
    fn reply_is_cut(&self, call: &PendingCall) -> bool {
        self.ends
            .get(&call.end)
            .and_then(|end| end.owner.as_ref())
            .is_some_and(|owner| self.is_cut(&call.server, owner))
    }

    /// A copy of the request of `call`, delivered to `handler` on its own after a short random
    /// delay; its reply goes nowhere (a duplicated packet).
    fn duplicate(&mut self, call: CallId, handler: Recipient<Dispatch>, ctx: &mut Context<Self>) {
        let Some(original) = self.calls.get(&call) else {
            return;
        };
        let (reply_to, _) = oneshot::channel();
        let copy = PendingCall {
            end: original.end.clone(),
            server: original.server.clone(),
            generation: original.generation,
            method: original.method,
            args: original.args.clone(),
            stage: Stage::Delivering(handler),
            reply_to,
        };
        let id = self.next_call;
        self.next_call += 1;
        self.calls.insert(id, copy);
        self.record("duplicate", id);
        self.trace_step(NetStep::Send, id, true);
        let delay = self.latency + self.ms(SHORT_DELAY_MS);
        self.schedule(delay, Event::Dispatch(id), ctx);
    }

    /// Whether calls on `end` can reach its server right now; if so, the server's name.
    fn route(&self, end: &EndState) -> Option<ServerName> {
        let server = end.server.as_ref()?;
        if !end.enabled || !self.servers.contains_key(server) {
            return None;
        }
        if end
            .owner
            .as_ref()
            .is_some_and(|owner| self.is_cut(owner, server))
        {
            return None;
        }
        Some(server.clone())
    }

    /// labrpc's "is the server dead?" check for a call whose handler ran.
    fn is_dead(&self, call: &PendingCall) -> bool {
        let alive = self
            .ends
            .get(&call.end)
            .and_then(|end| self.route(end))
            .is_some_and(|server| server == call.server)
            && self
                .servers
                .get(&call.server)
                .is_some_and(|s| s.generation == call.generation);
        !alive
    }

    fn schedule(&mut self, delay: Duration, event: Event, ctx: &mut Context<Self>) {
        if delay.is_zero() {
            // Only with zero wire latency (real-time runs): no timer round trip.
            return self.fire(event, ctx);
        }
        let deadline = Instant::now() + delay;
        self.queue.push(deadline, event);
        if self.armed.as_ref().is_none_or(|(at, _)| deadline < *at) {
            self.arm(deadline, ctx);
        }
    }

    fn arm(&mut self, deadline: Instant, ctx: &mut Context<Self>) {
        if let Some((_, handle)) = self.armed.take() {
            ctx.cancel_future(handle);
        }
        let delay = deadline.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |network, ctx| {
            network.armed = None;
            network.fire_due(ctx);
        });
        self.armed = Some((deadline, handle));
    }

    fn fire_due(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        while let Some(event) = self.queue.pop_due(now) {
            self.fire(event, ctx);
        }
        if let Some(deadline) = self.queue.next_deadline() {
            self.arm(deadline, ctx);
        }
    }

    fn fire(&mut self, event: Event, ctx: &mut Context<Self>) {
        match event {
            Event::Dispatch(call) => self.dispatch(call, ctx),
            Event::Fail(call) => self.fail(call, "fail"),
            Event::Reply(call) => self.deliver_reply(call),
        }
    }

    fn fail(&mut self, call: CallId, why: &'static str) {
        self.record(why, call);
        match why {
            // The loss was traced when it was decided.
            "fail" => {}
            "drop-reply" => self.trace_drop(call, "lost-reply"),
            why => self.trace_drop(call, why),
        }
        if let Some(pending) = self.calls.remove(&call) {
            // The caller may have given up waiting; that is fine.
            let _ = pending.reply_to.send(Err(RpcError::Unreachable));
        }
    }

    fn dispatch(&mut self, call: CallId, ctx: &mut Context<Self>) {
        let Some(pending) = self.calls.get_mut(&call) else {
            return;
        };
        let Stage::Delivering(handler) = std::mem::replace(&mut pending.stage, Stage::Running)
        else {
            return;
        };
        let message = Dispatch {
            method: pending.method,
            args: std::mem::take(&mut pending.args),
        };
        if let Some(server) = self.servers.get_mut(&pending.server) {
            if server.generation == pending.generation {
                server.rpc_count += 1;
            }
        }
        self.record("dispatch", call);
        self.trace_step(NetStep::Deliver, call, false);
        let network = ctx.address();
        actix::spawn(async move {
            let result = handler.send(message).await;
            network.do_send(HandlerDone { call, result });
        });
    }

    fn deliver_reply(&mut self, call: CallId) {
        self.record("reply", call);
        self.trace_step(NetStep::Reply, call, false);
        if let Some(pending) = self.calls.remove(&call) {
            if let Stage::Replying(bytes) = pending.stage {
                self.total_bytes += bytes.len() as u64;
                let _ = pending.reply_to.send(Ok(bytes));
            }
        }
    }

    /// Fails every call whose handler is running (or about to run) on a server that is now
    /// dead to it: labrpc's dead-server check, done at once instead of on a 100 ms poll.
    fn fail_dead_calls(&mut self) {
        let victims: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.stage, Stage::Delivering(_) | Stage::Running))
            .filter(|(_, c)| self.is_dead(c))
            .map(|(id, _)| *id)
            .collect();
        for call in victims {
            self.fail(call, "dead");
        }
    }
}

impl Actor for Network {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Control messages sent with `send` must never wait behind a full mailbox.
        ctx.set_mailbox_capacity(usize::MAX);
        self.started = Instant::now();
    }
}

impl Handler<Call> for Network {
    type Result = ();

    fn handle(&mut self, msg: Call, ctx: &mut Self::Context) {
        self.total_calls += 1;
        self.total_bytes += msg.args.len() as u64;
        let call = self.next_call;
        self.next_call += 1;

        let target = self.ends.get(&msg.end).and_then(|end| self.route(end));
        let server = target.clone().unwrap_or_default();
        let (generation, handler) = match self.servers.get(&server) {
            Some(entry) => (
                entry.generation,
                entry.server.services.get(service_of(msg.method)).cloned(),
            ),
            None => (0, None),
        };
        self.calls.insert(
            call,
            PendingCall {
                end: msg.end,
                server,
                generation,
                method: msg.method,
                args: msg.args,
                stage: Stage::Failing,
                reply_to: msg.reply_to,
            },
        );
        self.trace_step(NetStep::Send, call, false);

        if target.is_none() {
            let bound = if self.long_delays {
                LONG_DELAY_MS
            } else {
                FAIL_DELAY_MS
            };
            let delay = self.ms(bound);
            self.record("undeliverable", call);
            self.trace_drop(call, "unreachable");
            self.schedule(delay, Event::Fail(call), ctx);
            return;
        }
        let Some(handler) = handler else {
            log::error!("no service for method {} on the called server", msg.method);
            self.record("unknown-method", call);
            self.trace_drop(call, "unknown-method");
            if let Some(pending) = self.calls.remove(&call) {
                let _ = pending
                    .reply_to
                    .send(Err(RpcError::UnknownMethod(msg.method.to_string())));
            }
            return;
        };
        let mut delay = self.latency;
        if !self.reliable {
            delay += self.ms(SHORT_DELAY_MS);
            if self.lose() {
                self.record("drop-request", call);
                self.trace_drop(call, "lost-request");
                self.schedule(delay, Event::Fail(call), ctx);
                return;
            }
        }
        if self.duplicates && self.rng.gen_range(0..1000) < DUPLICATE_PER_MILLE {
            self.duplicate(call, handler.clone(), ctx);
        }
        if let Some(pending) = self.calls.get_mut(&call) {
            pending.stage = Stage::Delivering(handler);
        }
        self.schedule(delay, Event::Dispatch(call), ctx);
    }
}

impl Handler<HandlerDone> for Network {
    type Result = ();

    fn handle(&mut self, msg: HandlerDone, ctx: &mut Self::Context) {
        let call = msg.call;
        let Some(pending) = self.calls.get(&call) else {
            return; // already failed: the server died while the handler ran
        };
        let reply = match msg.result {
            Ok(Ok(bytes)) if !self.is_dead(pending) => bytes,
            Ok(Err(RpcError::UnknownMethod(method))) => {
                log::error!("service has no method {method}");
                if let Some(pending) = self.calls.remove(&call) {
                    let _ = pending.reply_to.send(Err(RpcError::UnknownMethod(method)));
                }
                return;
            }
            _ => return self.fail(call, "dead"),
        };
        if self.reply_is_cut(pending) {
            return self.fail(call, "cut-reply");
        }
        if !self.reliable && self.lose() {
            return self.fail(call, "drop-reply");
        }
        let delay = if self.long_reordering && self.rng.gen_range(0..900) < 600 {
            let spread = self.rng.gen_range(0..2000) + 1;
            Duration::from_millis(200 + self.rng.gen_range(0..spread))
        } else {
            self.latency
        };
        self.record("replying", call);
        self.trace_step(NetStep::Respond, call, false);
        if let Some(pending) = self.calls.get_mut(&call) {
            pending.stage = Stage::Replying(reply);
        }
        self.schedule(delay, Event::Reply(call), ctx);
    }
}

impl Handler<MakeEnd> for Network {
    type Result = Result<(), NetError>;

    fn handle(&mut self, msg: MakeEnd, _: &mut Self::Context) -> Self::Result {
        if self.ends.contains_key(&msg.name) {
            return Err(NetError::DuplicateEnd(msg.name));
        }
        let state = EndState {
            enabled: false,
            server: None,
            owner: msg.owner,
        };
        self.ends.insert(msg.name, state);
        Ok(())
    }
}

impl Handler<DeleteEnd> for Network {
    type Result = ();

    fn handle(&mut self, msg: DeleteEnd, _: &mut Self::Context) {
        self.ends.remove(&msg.0);
        self.fail_dead_calls();
    }
}

impl Handler<Connect> for Network {
    type Result = Result<(), NetError>;

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) -> Self::Result {
        let end = self
            .ends
            .get_mut(&msg.end)
            .ok_or(NetError::NoSuchEnd(msg.end))?;
        end.server = Some(msg.server);
        Ok(())
    }
}

impl Handler<Enable> for Network {
    type Result = Result<(), NetError>;

    fn handle(&mut self, msg: Enable, _: &mut Self::Context) -> Self::Result {
        let end = self
            .ends
            .get_mut(&msg.end)
            .ok_or_else(|| NetError::NoSuchEnd(msg.end.clone()))?;
        end.enabled = msg.enabled;
        if !msg.enabled {
            self.fail_dead_calls();
        }
        Ok(())
    }
}

impl Handler<AddServer> for Network {
    type Result = ();

    fn handle(&mut self, msg: AddServer, _: &mut Self::Context) {
        self.next_generation += 1;
        let entry = ServerEntry {
            generation: self.next_generation,
            server: msg.server,
            rpc_count: 0,
        };
        self.servers.insert(msg.name, entry);
        self.fail_dead_calls();
    }
}

impl Handler<DeleteServer> for Network {
    type Result = ();

    fn handle(&mut self, msg: DeleteServer, _: &mut Self::Context) {
        self.servers.remove(&msg.0);
        self.fail_dead_calls();
    }
}

impl Handler<SetLink> for Network {
    type Result = ();

    fn handle(&mut self, msg: SetLink, _: &mut Self::Context) {
        if msg.up {
            self.cut_links.remove(&(msg.from, msg.to));
        } else {
            self.cut_links.insert((msg.from, msg.to));
            self.fail_dead_calls();
        }
    }
}

impl Handler<Partition> for Network {
    type Result = ();

    fn handle(&mut self, msg: Partition, _: &mut Self::Context) {
        let groups = msg.0;
        for (i, group) in groups.iter().enumerate() {
            for (j, other) in groups.iter().enumerate() {
                for a in group {
                    for b in other {
                        let link = (a.clone(), b.clone());
                        if i == j {
                            self.cut_links.remove(&link);
                        } else {
                            self.cut_links.insert(link);
                        }
                    }
                }
            }
        }
        self.fail_dead_calls();
    }
}

impl Handler<SetFaults> for Network {
    type Result = ();

    fn handle(&mut self, msg: SetFaults, _: &mut Self::Context) {
        match msg {
            SetFaults::Reliable(on) => self.reliable = on,
            SetFaults::LongDelays(on) => self.long_delays = on,
            SetFaults::LongReordering(on) => self.long_reordering = on,
            SetFaults::Duplicates(on) => self.duplicates = on,
        }
    }
}

impl Handler<GetCount> for Network {
    type Result = u64;

    fn handle(&mut self, msg: GetCount, _: &mut Self::Context) -> u64 {
        match msg {
            GetCount::Server(name) => self.servers.get(&name).map_or(0, |s| s.rpc_count),
            GetCount::TotalCalls => self.total_calls,
            GetCount::TotalBytes => self.total_bytes,
            GetCount::TraceHash => self.trace.value(),
        }
    }
}
