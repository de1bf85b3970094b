//! The Raft peer actor: the shell around the pure [`RaftCore`].
//!
//! It owns what the core must not: the tick timer, the ends to the other peers, the applier
//! and the storage actor. Every input (a tick, an RPC, a reply, a proposal) goes into the core.
//! Once the mailbox is drained, the peer drains the core's [`Ready`] in one go: it sends a
//! leader's AppendEntries and InstallSnapshots at once, hands committed entries to the
//! [`Applier`], tells its subscribers of a new term, role or leader, and holds back the replies
//! to the RPCs it handled and its RequestVotes until the state they depend on is durable.
//!
//! A broken invariant the core reports, or a save that fails, halts the peer: it stops, and
//! its service gets [`ApplyMsg::Halted`] after the entries already committed.
//!
//! Saves go to the [`Storage`] actor, one at a time, so the peer keeps handling votes,
//! heartbeats and proposals while a disk syncs. Everything that changes while a save runs goes
//! into the next one (group commit). Saves are numbered; each held reply or request waits for
//! the number of the first save that covers the state it was produced in. When a save
//! completes, the core learns it ([`RaftCore::saved`]): a leader counts its own log towards a
//! majority only as far as it is durable.
//!
//! Handles: [`Dispatch`] (`Raft.RequestVote`, `Raft.AppendEntries`, `Raft.InstallSnapshot`,
//! `Raft.TimeoutNow`), [`Propose`], [`ReadIndex`], [`ChangeMembership`] (answered once the
//! change commits), [`TransferLeadership`], [`GetState`],
//! [`SubscribeRoles`], [`Snapshot`], [`SetDiskLatency`] and [`StallDisk`] (passed to its
//! storage), [`Stop`], and [`PeerReply`] (replies to its own calls). Sends: Raft RPCs
//! through its [`ClientEnd`]s, [`Save`] to its storage, [`ApplyBatch`] to its applier,
//! [`RoleChanged`] to its subscribers. With a recording [`Tracer`] it emits a `raft` trace
//! event whenever its role, term, leader, commit, applied or last index changed; with
//! [`Metrics`] on it counts proposals, read-index requests and snapshots (its storage counts
//! saves).

use std::collections::{BTreeMap, VecDeque};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::config::RaftConfig;
use super::core::{Message, RaftCore, Ready, RestoreError};
use crate::actors::applier::Applier;
use crate::actors::client_end::ClientEnd;
use crate::actors::storage::StorageHandle;
use crate::messages::apply::{ApplyBatch, ApplyMsg, HaltCause};
use crate::messages::lifecycle::Stop;
use crate::messages::net::{encode, Dispatch, Rpc, RpcError};
use crate::messages::raft::Membership;
use crate::messages::raft::*;
use crate::messages::storage::{Save, SetDiskLatency, StallDisk};
use crate::metrics::Metrics;
use crate::storage::Persister;
use crate::trace::{EventKind, Tracer};

type Reply = Result<Vec<u8>, RpcError>;

/// Makes an end to member `id` from its contact (see [`PeerSetup::connect`]).
pub type Connector = Box<dyn FnMut(usize, &str) -> Option<ClientEnd>>;

/// Everything needed to start one Raft peer.
pub struct PeerSetup {
    /// This peer's id: its index among the peers.
    pub id: usize,
    /// Ends to every peer's Raft service (index = peer id; the peer's own is unused).
    pub peers: Vec<ClientEnd>,
    /// The cluster's first members (usually [`Membership::with_voters`]`(peers.len())`), used
    /// until the peer's storage holds a membership. Empty for a peer that joins a running
    /// cluster: it learns the members from the leader, once it was added as a learner.
    pub initial_members: Membership,
    /// Makes an end to a member that `peers` has none for (one added since), from its id and
    /// its contact in the membership; `None` when there is no way (a simulation, whose ends
    /// are all made up front).
    pub connect: Option<Connector>,
    /// Timing and message sizes.
    pub config: RaftConfig,
    /// Where its state is saved; what it holds is restored first.
    pub persister: Box<dyn Persister + Send>,
    /// The service that applies committed commands.
    pub service: Recipient<ApplyMsg>,
    /// Seed for its randomness (election timeouts).
    pub seed: u64,
    /// Where its state changes are traced; events carry the tracer's node name.
    pub trace: Tracer,
    /// Where it and its storage count proposals, reads, snapshots and saves (off:
    /// [`Metrics::off`]).
    pub metrics: Metrics,
}

/// Something that may leave only once a save is durable.
enum Held {
    /// The reply to an RPC this peer handled.
    Reply(oneshot::Sender<Reply>, Reply),
    /// A request to another peer (a RequestVote: the candidate's term and self-vote first).
    Request(usize, Message),
}

/// One Raft peer. Build it with [`RaftPeer::start`].
pub struct RaftPeer {
    core: RaftCore,
    me: usize,
    /// The length of one core tick.
    tick: std::time::Duration,
    /// `peers[j]` reaches peer j; `peers[me]` is never used.
    peers: BTreeMap<usize, ClientEnd>,
    /// Makes the ends of members added later.
    connect: Option<Connector>,
    storage: StorageHandle,
    applier: Addr<Applier>,
    /// A flush is scheduled for the end of the current mailbox batch.
    flush_scheduled: bool,
    /// Replies to RPCs handled since the last flush.
    replies: Vec<(oneshot::Sender<Reply>, Reply)>,
    /// Saves handed to storage so far (numbered from 1) and the last one durable.
    issued: u64,
    durable: u64,
    /// Held items, each with the number of the save it waits for (non-decreasing).
    held: VecDeque<(u64, Held)>,
    /// Who hears of every change of term, role or leader.
    subscribers: Vec<Recipient<RoleChanged>>,
    /// The latest state they were told of.
    role: Option<RoleChanged>,
    /// It stopped because it could not go on safely.
    halted: bool,
    /// Read-index requests in flight, by the id the core knows them by.
    reads: BTreeMap<u64, oneshot::Sender<Result<u64, NotLeader>>>,
    next_read: u64,
    /// Membership changes in flight, by the id the core knows them by.
    changes: BTreeMap<u64, oneshot::Sender<Result<u64, MembershipError>>>,
    next_change: u64,
    tracer: Tracer,
    /// The state last traced: role, term, leader, commit, applied, last index.
    traced: Option<(Role, u64, Option<usize>, u64, u64, u64)>,
    /// Counts proposals, reads and snapshots.
    metrics: Metrics,
}

impl RaftPeer {
    /// Starts a peer, restoring whatever its persister holds, delivering committed entries to
    /// its service. Fails on an invalid configuration or a corrupt persisted state.
    pub fn start(setup: PeerSetup) -> Result<Addr<RaftPeer>, RestoreError> {
        let PeerSetup {
            id,
            peers,
            initial_members,
            connect,
            config,
            persister,
            service,
            seed,
            trace: tracer,
            metrics,
        } = setup;
        let saved = persister
            .load()
            .map_err(|e| RestoreError::Decode(format!("cannot load Raft state: {e}")))?;
        let snapshot = persister.read_snapshot();
        let core = RaftCore::restore(id, initial_members, &config, seed, saved, snapshot)?;
        let storage = StorageHandle::start(persister, metrics.clone())
            .map_err(|e| RestoreError::Decode(format!("cannot start the storage thread: {e}")))?;
        let applier = Applier::new(service, core.last_applied()).start();
        let peer = RaftPeer {
            core,
            me: id,
            tick: config.tick,
            peers: peers.into_iter().enumerate().collect(),
            connect,
            storage,
            applier,
            flush_scheduled: false,
            replies: Vec::new(),
            issued: 0,
            durable: 0,
            held: VecDeque::new(),
            subscribers: Vec::new(),
            role: None,
            halted: false,
            reads: BTreeMap::new(),
            next_read: 0,
            changes: BTreeMap::new(),
            next_change: 0,
            tracer,
            traced: None,
            metrics,
        };
        Ok(peer.start())
    }

    /// Flushes once the mailbox is drained: actix polls spawned futures after it has handled
    /// every queued message, so everything that arrived together is handled in one go.
    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.spawn(fut::ready(()).map(|(), peer: &mut Self, ctx| {
                peer.flush_scheduled = false;
                peer.flush(ctx);
            }));
        }
    }

    /// Drains the core's effects: sends what may go now, holds what must wait for a save,
    /// starts a save if none runs, applies, and reports role changes.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Ready {
            messages,
            apply,
            role_changed,
            fault,
            reads,
            changes,
        } = self.core.take_ready();
        if let Some(reason) = fault {
            return self.halt(HaltCause::Untrusted, reason, ctx);
        }
        // A read index depends on no state of this peer's disk: answer at once.
        for (read, result) in reads {
            if let Some(reply_to) = self.reads.remove(&read) {
                let _ = reply_to.send(result);
            }
        }
        // A change's outcome comes with its commit, which is durable on a majority.
        for (change, result) in changes {
            if let Some(reply_to) = self.changes.remove(&change) {
                let _ = reply_to.send(result);
            }
        }
        // Everything produced so far depends on the state as it is now: covered by the saves
        // already issued, or by the next one if something changed since.
        let covering = self.issued + u64::from(self.core.has_unsaved());
        self.start_save(ctx);
        for (to, message) in messages {
            match message {
                Message::RequestVote(_) => self.hold(covering, Held::Request(to, message)),
                _ => self.send(to, message, ctx),
            }
        }
        for (reply_to, reply) in std::mem::take(&mut self.replies) {
            self.hold(covering, Held::Reply(reply_to, reply));
        }
        self.release(ctx);
        if !apply.is_empty() {
            self.applier.do_send(ApplyBatch(apply));
        }
        if let Some(role) = role_changed {
            self.role = Some(role);
            for subscriber in &self.subscribers {
                subscriber.do_send(role);
            }
        }
        if self.tracer.is_on() {
            self.trace_state();
        }
    }

    /// Emits a `raft` event if anything traced changed since the last one.
    fn trace_state(&mut self) {
        let core = &self.core;
        let state = (
            core.role(),
            core.term(),
            core.leader_id(),
            core.commit_index(),
            core.last_applied(),
            core.last_index(),
        );
        if self.traced == Some(state) {
            return;
        }
        self.traced = Some(state);
        let (role, term, leader, commit, applied, last) = state;
        self.tracer.emit(|| EventKind::Raft {
            node: self.tracer.node().to_string(),
            role: role.to_string(),
            term,
            leader,
            commit,
            applied,
            last,
        });
    }

    fn hold(&mut self, save: u64, item: Held) {
        self.held.push_back((save, item));
    }

    /// Sends or answers everything whose save is durable.
    fn release(&mut self, ctx: &mut Context<Self>) {
        while self
            .held
            .front()
            .is_some_and(|(save, _)| *save <= self.durable)
        {
            let Some((_, item)) = self.held.pop_front() else {
                break;
            };
            match item {
                // The caller may have given up; nothing to do then.
                Held::Reply(reply_to, reply) => {
                    let _ = reply_to.send(reply);
                }
                Held::Request(to, message) => self.send(to, message, ctx),
            }
        }
    }

    /// Hands the core's unsaved changes to storage, unless a save is already running.
    fn start_save(&mut self, ctx: &mut Context<Self>) {
        if self.issued > self.durable {
            return;
        }
        let Some(update) = self.core.take_unsaved() else {
            return;
        };
        self.issued += 1;
        let number = self.issued;
        let save = self.storage.addr().send(Save(update));
        ctx.spawn(save.into_actor(self).map(move |result, peer, ctx| {
            peer.saved(number, result, ctx);
        }));
    }

    fn saved(
        &mut self,
        number: u64,
        result: Result<std::io::Result<()>, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("the storage actor is gone ({e})")),
        };
        if let Some(error) = error {
            // Answering anything now could acknowledge state that is not durable, and the
            // store refuses every later save: the peer never retries.
            let reason = format!("cannot save the Raft state: {error}");
            return self.halt(HaltCause::Storage, reason, ctx);
        }
        self.durable = number;
        self.core.saved();
        self.release(ctx);
        // What changed meanwhile goes into the next save; a leader may have committed.
        self.schedule_flush(ctx);
    }

    /// Stops this peer for good because it cannot go on safely, and has its service told why
    /// (after the entries already committed).
    fn halt(&mut self, cause: HaltCause, reason: String, ctx: &mut Context<Self>) {
        log::error!("peer {}: {reason}; halting", self.me);
        self.halted = true;
        self.applier
            .do_send(ApplyBatch(vec![ApplyMsg::Halted { cause, reason }]));
        ctx.stop();
    }

    /// The end to peer `to`, made from its contact if it is a member added since the start.
    fn end(&mut self, to: usize) -> Option<ClientEnd> {
        if let Some(end) = self.peers.get(&to) {
            return Some(end.clone());
        }
        let members = self.core.membership();
        let contact = members
            .voters
            .get(&to)
            .or(members.learners.get(&to))?
            .clone();
        let end = (self.connect.as_mut()?)(to, &contact)?;
        log::info!("peer {}: reaches new member {to} at {contact:?}", self.me);
        self.peers.insert(to, end.clone());
        Some(end)
    }

    fn send(&mut self, to: usize, message: Message, ctx: &mut Context<Self>) {
        let Some(end) = self.end(to) else {
            log::error!("peer {}: message to unknown peer {to}", self.me);
            return;
        };
        let me = ctx.address();
        // Each call runs as its own task: the peer never waits for the network.
        actix::spawn(async move {
            let reply = match message {
                Message::RequestVote(args) => end.call(&args).await.map(|r| PeerReply::Vote(to, r)),
                Message::AppendEntries(args) => {
                    end.call(&args).await.map(|r| PeerReply::Append(to, r))
                }
                Message::InstallSnapshot(args) => {
                    end.call(&args).await.map(|r| PeerReply::Snapshot(to, r))
                }
                Message::TimeoutNow(args) => {
                    end.call(&args).await.map(|r| PeerReply::TimeoutNow(to, r))
                }
            };
            if let Ok(reply) = reply {
                me.do_send(reply);
            }
        });
    }

    fn handle_rpc(&mut self, msg: &Dispatch) -> Result<Vec<u8>, RpcError> {
        match msg.method {
            RequestVoteArgs::METHOD => {
                let args = msg.decode::<RequestVoteArgs>()?;
                let from = args.candidate_id;
                encode(&self.core.handle_request_vote(from, args))
            }
            AppendEntriesArgs::METHOD => {
                let args = msg.decode::<AppendEntriesArgs>()?;
                let from = args.leader_id;
                encode(&self.core.handle_append_entries(from, args))
            }
            InstallSnapshotArgs::METHOD => {
                let args = msg.decode::<InstallSnapshotArgs>()?;
                let from = args.leader_id;
                encode(&self.core.handle_install_snapshot(from, args))
            }
            TimeoutNowArgs::METHOD => {
                let args = msg.decode::<TimeoutNowArgs>()?;
                let from = args.leader_id;
                encode(&self.core.handle_timeout_now(from, args))
            }
            other => Err(RpcError::UnknownMethod(other.to_string())),
        }
    }
}

impl Actor for RaftPeer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.tick, |peer, ctx| {
            peer.core.tick();
            peer.schedule_flush(ctx);
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Halted, the applier stops itself once the service has heard; otherwise this is a
        // crash, and the applier drops what it still holds.
        if !self.halted {
            self.applier.do_send(Stop);
        }
        log::debug!("peer {} stopped in term {}", self.me, self.core.term());
    }
}

impl Handler<Dispatch> for RaftPeer {
    type Result = ResponseFuture<Reply>;

    fn handle(&mut self, msg: Dispatch, ctx: &mut Self::Context) -> Self::Result {
        let reply = self.handle_rpc(&msg);
        // The reply leaves only after the state it depends on is saved.
        let (reply_to, released) = oneshot::channel();
        self.replies.push((reply_to, reply));
        self.schedule_flush(ctx);
        Box::pin(async move { released.await.unwrap_or(Err(RpcError::Unreachable)) })
    }
}

impl Handler<PeerReply> for RaftPeer {
    type Result = ();

    fn handle(&mut self, msg: PeerReply, ctx: &mut Self::Context) {
        match msg {
            PeerReply::Vote(from, reply) => self.core.handle_request_vote_reply(from, reply),
            PeerReply::Append(from, reply) => self.core.handle_append_entries_reply(from, reply),
            PeerReply::Snapshot(from, reply) => {
                self.core.handle_install_snapshot_reply(from, reply)
            }
            PeerReply::TimeoutNow(from, reply) => self.core.handle_timeout_now_reply(from, reply),
        }
        self.schedule_flush(ctx);
    }
}

impl Handler<Propose> for RaftPeer {
    type Result = MessageResult<Propose>;

    fn handle(&mut self, msg: Propose, ctx: &mut Self::Context) -> Self::Result {
        let proposed = self.core.propose(msg.0);
        self.metrics.proposal(proposed.is_ok());
        self.schedule_flush(ctx);
        MessageResult(proposed)
    }
}

impl Handler<ReadIndex> for RaftPeer {
    type Result = ResponseFuture<Result<u64, NotLeader>>;

    fn handle(&mut self, _: ReadIndex, ctx: &mut Self::Context) -> Self::Result {
        let read = self.next_read;
        self.next_read += 1;
        let asked = self.core.read_index(read);
        self.metrics.read_index(asked.is_ok());
        if let Err(not_leader) = asked {
            return Box::pin(async move { Err(not_leader) });
        }
        let (reply_to, answer) = oneshot::channel();
        self.reads.insert(read, reply_to);
        self.schedule_flush(ctx);
        let stopped = NotLeader {
            term: self.core.term(),
            leader: None,
        };
        Box::pin(async move { answer.await.unwrap_or(Err(stopped)) })
    }
}

impl Handler<ChangeMembership> for RaftPeer {
    type Result = ResponseFuture<Result<u64, MembershipError>>;

    fn handle(&mut self, msg: ChangeMembership, ctx: &mut Self::Context) -> Self::Result {
        let change = self.next_change;
        self.next_change += 1;
        if let Err(refused) = self.core.change_membership(change, msg.0) {
            return Box::pin(async move { Err(refused) });
        }
        let (reply_to, answer) = oneshot::channel();
        self.changes.insert(change, reply_to);
        self.schedule_flush(ctx);
        let stopped = MembershipError::NotLeader(NotLeader {
            term: self.core.term(),
            leader: None,
        });
        Box::pin(async move { answer.await.unwrap_or(Err(stopped)) })
    }
}

impl Handler<TransferLeadership> for RaftPeer {
    type Result = MessageResult<TransferLeadership>;

    fn handle(&mut self, msg: TransferLeadership, ctx: &mut Self::Context) -> Self::Result {
        let started = self.core.transfer_leadership(msg.to);
        self.schedule_flush(ctx);
        MessageResult(started)
    }
}

impl Handler<SubscribeRoles> for RaftPeer {
    type Result = ();

    fn handle(&mut self, msg: SubscribeRoles, _: &mut Self::Context) {
        // Until the first flush reports it, the state is the one the peer started in.
        let current = self.role.unwrap_or(RoleChanged {
            term: self.core.term(),
            role: self.core.role(),
            leader: self.core.leader_id(),
        });
        msg.0.do_send(current);
        self.subscribers.push(msg.0);
    }
}

impl Handler<GetState> for RaftPeer {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _: &mut Self::Context) -> Self::Result {
        MessageResult(RaftState {
            term: self.core.term(),
            role: self.core.role(),
            leader: self.core.leader_id(),
            commit_index: self.core.commit_index(),
            last_applied: self.core.last_applied(),
            last_index: self.core.last_index(),
            snapshot_index: self.core.snapshot_index(),
            snapshot_bytes: self.core.snapshot_data().len() as u64,
            match_index: self.core.match_index(),
            membership: self.core.membership().clone(),
        })
    }
}

impl Handler<Snapshot> for RaftPeer {
    type Result = ();

    fn handle(&mut self, msg: Snapshot, ctx: &mut Self::Context) {
        self.core.snapshot(msg.index, msg.data);
        self.metrics.snapshot_taken();
        self.schedule_flush(ctx);
    }
}

impl Handler<SetDiskLatency> for RaftPeer {
    type Result = ();

    fn handle(&mut self, msg: SetDiskLatency, _: &mut Self::Context) {
        self.storage.addr().do_send(msg);
    }
}

impl Handler<StallDisk> for RaftPeer {
    type Result = ();

    fn handle(&mut self, msg: StallDisk, _: &mut Self::Context) {
        self.storage.addr().do_send(msg);
    }
}

impl Handler<Stop> for RaftPeer {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
