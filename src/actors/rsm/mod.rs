//! The replicated state machine layer, written once for every service on Raft (the KV server,
//! the shard controller, sharded KV).
//!
//! An [`Rsm`] actor owns a [`StateMachine`] and its Raft peer. [`Submit`] puts a command in the
//! log and answers once the command is applied at the index and term Raft gave it, or with
//! [`SubmitError::WrongLeader`] when that cannot happen (not leader, leadership lost, the entry
//! was replaced, the server is shutting down, or no answer within [`REQUEST_TIMEOUT`]). The
//! peer tells the RSM of every change of term or role ([`RoleChanged`]): a deposed leader fails
//! its pending requests at once, and a new leader commits a no-op of its term. A client
//! registers a session first ([`RegisterSession`]); commands that carry it (client id,
//! sequence number) are executed at most once: the last output per client is kept and returned
//! to retries, and sessions expire by the time in the log (`sessions.rs`). The state and the
//! session table are snapshotted when the Raft state nears `max_raft_state` bytes, and
//! restored on restart.
//! [`LinearizableRead`] runs a read-only function once it is linearizable, without a log entry:
//! the peer confirms its leadership ([`ReadIndex`]) and the read waits until its index is
//! applied. [`Read`] runs one on the applied state as it is, for background work that must look
//! at it (the shard migrator).
//!
//! A replica that meets something it cannot trust (an undecodable snapshot or log entry, or
//! [`ApplyMsg::Halted`] from Raft: a failed save, a broken invariant) halts: it stops its
//! peer, fails what is pending, refuses what comes, says why through [`GetHealth`], and answers
//! whoever waits for it to halt ([`WaitHalt`]: `rainkv serve`, which exits when the cause is
//! its storage).
//!
//! With a recording tracer it emits a `snapshot` event when it takes or installs a snapshot,
//! and an `apply` event for each applied command its service finds worth noting
//! ([`StateMachine::trace_note`]: a new shard configuration, shards installed or deleted).
//!
//! Handles: [`Submit`], [`RegisterSession`], [`LinearizableRead`], [`Read`], [`GetSessions`],
//! [`GetHealth`], [`WaitHalt`], [`ApplyMsg`] (from the peer's applier), [`RoleChanged`] (from
//! the peer), [`Stop`]. Sends: [`SubscribeRoles`],
//! [`Propose`], [`ReadIndex`], [`Snapshot`] and [`Stop`] to its Raft peer.

mod sessions;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::time::Duration;

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::actors::client_end::ClientEnd;
use crate::actors::raft::{Connector, PeerSetup, RaftConfig, RaftPeer, RestoreError};
use crate::messages::apply::{ApplyMsg, HaltCause};
use crate::messages::lifecycle::Stop;
use crate::messages::raft::{
    Membership, Propose, ReadIndex, RoleChanged, Snapshot, SubscribeRoles,
};
use crate::messages::rsm::{
    ClientId, GetHealth, GetSessions, Halt, Halted, Health, LinearizableRead, Read,
    RegisterSession, Session, Submit, SubmitError, WaitHalt,
};
use crate::metrics::Metrics;
use crate::storage::Persister;
use crate::trace::{EventKind, Tracer};
pub use sessions::{SessionClock, SessionPolicy};
use sessions::{SessionTable, Verdict};

/// A pending request is answered `WrongLeader` if not applied within this long, so a leader
/// stranded in a minority never holds a client forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// A deterministic service state that commands change.
pub trait StateMachine: Default + Serialize + DeserializeOwned + Unpin + 'static {
    /// What the log carries.
    type Command: Serialize + DeserializeOwned + Clone + Debug + Send + Unpin + 'static;
    /// What applying a command returns to its submitter.
    type Output: Serialize + DeserializeOwned + Clone + Debug + Send + Unpin + 'static;

    /// Applies one committed command. Must be deterministic: every replica applies the same
    /// commands in the same order and must reach the same state.
    fn apply(&mut self, command: Self::Command) -> Self::Output;

    /// A few words for the trace when applying `command` gave `output` (`self` is the state
    /// after it), if it is worth a mark on the replica's lane: a new configuration, shards
    /// moving. Called only while tracing; most commands (a client's Put) are not worth one.
    fn trace_note(&self, command: &Self::Command, output: &Self::Output) -> Option<String> {
        let _ = (command, output);
        None
    }
}

/// One entry of the log as the RSM writes it.
#[derive(Serialize, Deserialize)]
struct Entry<C> {
    /// The proposing leader's clock, in milliseconds (see [`SessionClock`]).
    stamp: u64,
    op: EntryOp<C>,
}

#[derive(Serialize, Deserialize)]
enum EntryOp<C> {
    /// A new leader's no-op.
    Noop,
    /// A client's registration: its id is this entry's index.
    Register,
    /// A service command, under a session or none.
    Command {
        session: Option<Session>,
        command: C,
    },
}

/// What applying an entry gave its submitter.
enum Applied<O> {
    Output(O),
    Registered(ClientId),
}

/// What a snapshot holds: the applied point, the state and the session table.
#[derive(Serialize, Deserialize)]
struct SnapshotData<S, T> {
    index: u64,
    state: S,
    sessions: T,
}

/// A confirmed read waiting for its index: runs on the state and the index it was applied to.
type PendingRead<S> = Box<dyn FnOnce(&S, u64)>;

struct Waiter<O> {
    term: u64,
    reply: oneshot::Sender<Result<Applied<O>, SubmitError>>,
}

/// The replicated state machine actor of one server.
pub struct Rsm<S: StateMachine> {
    state: S,
    sessions: SessionTable<S::Output>,
    session_policy: SessionPolicy,
    raft: Addr<RaftPeer>,
    /// Read only for sizes: the same storage the Raft peer writes.
    persister: Box<dyn Persister>,
    max_raft_state: Option<usize>,
    proportional_snapshots: bool,
    last_applied: u64,
    last_snapshot: u64,
    /// Bytes of log entries applied since the last snapshot was taken or installed.
    applied_since_snapshot: usize,
    pending: BTreeMap<u64, Waiter<S::Output>>,
    /// `(deadline, index, term)` of each request in the order they were taken: deadlines are
    /// then in order too, so one timer, armed for the first, serves them all.
    deadlines: VecDeque<(Instant, u64, u64)>,
    deadline_timer: bool,
    /// The peer's term and role as last reported (`None` before its first report).
    role: Option<RoleChanged>,
    /// Why the replica halted, once it has.
    halted: Option<Halt>,
    /// Who waits to hear that it halted.
    halt_waiters: Vec<oneshot::Sender<Halt>>,
    /// Linearizable reads confirmed by the leader, waiting until their read index is applied.
    reads: BTreeMap<u64, Vec<PendingRead<S>>>,
    /// A snapshot was handed to Raft and not yet taken.
    snapshot_in_flight: bool,
    /// Where the cost of each snapshot taken is counted.
    metrics: Metrics,
    /// The last term in which this replica, as leader, proposed a no-op.
    noop_term: Option<u64>,
    /// Where its snapshots and notable applied commands are traced, named after its server.
    trace: Tracer,
}

/// Everything needed to start one replica of a service on Raft: the KV server, a controller
/// server, a shard group member, or any [`StateMachine`] of the embedder's.
pub struct ReplicaSetup<P> {
    /// This replica's id: its index among the peers.
    pub id: usize,
    /// Ends to every peer's Raft service (index = peer id; the replica's own is unused).
    pub peers: Vec<ClientEnd>,
    /// The cluster's first members (see [`PeerSetup::initial_members`]).
    pub initial_members: Membership,
    /// Makes ends to members added later (see [`PeerSetup::connect`]).
    pub connect: Option<Connector>,
    /// Its storage; clones must share it (the RSM reads sizes through its own handle).
    pub persister: P,
    /// The Raft peer's timing and message sizes.
    pub raft: RaftConfig,
    /// Snapshot when the Raft state reaches this many bytes (`None`: never).
    pub max_raft_state: Option<usize>,
    /// Count the log applied since the last snapshot instead of the Raft state: snapshot once
    /// it reaches `max_raft_state` and the last snapshot's size. Each byte of log then causes
    /// at most one byte of snapshot writing, however large the state, and a backlog of
    /// entries not yet applied cannot set off snapshots that would not shrink the log
    /// (deployments; 6.5840's tests hold the Raft state under a fixed bound and leave it off).
    pub proportional_snapshots: bool,
    /// Seed for the Raft peer's randomness.
    pub seed: u64,
    /// How long client sessions live, how many there may be, and which clock stamps them.
    pub sessions: SessionPolicy,
    /// Where the Raft peer's state changes, the replica's snapshots and its notable applied
    /// commands are traced, named after the server ([`Tracer::for_node`]; off:
    /// [`Tracer::off`]).
    pub trace: Tracer,
    /// Where the Raft peer and its storage count (off: [`Metrics::off`]).
    pub metrics: Metrics,
}

impl<S: StateMachine> Rsm<S> {
    /// Starts a replica and its Raft peer, restoring the latest snapshot. Fails on a corrupt
    /// persisted state.
    pub fn start<P: Persister + Clone + Send + 'static>(
        setup: ReplicaSetup<P>,
    ) -> Result<(Addr<Rsm<S>>, Addr<RaftPeer>), RestoreError> {
        let snapshot = setup.persister.read_snapshot();
        let restored = if snapshot.is_empty() {
            SnapshotData {
                index: 0,
                state: S::default(),
                sessions: SessionTable::default(),
            }
        } else {
            rmp_serde::from_slice::<SnapshotData<S, SessionTable<S::Output>>>(&snapshot)
                .map_err(|e| RestoreError::Decode(format!("service snapshot: {e}")))?
        };
        let context = Context::new();
        let raft = RaftPeer::start(PeerSetup {
            id: setup.id,
            peers: setup.peers,
            config: setup.raft,
            persister: Box::new(setup.persister.clone()),
            service: context.address().recipient(),
            seed: setup.seed,
            trace: setup.trace.clone(),
            metrics: setup.metrics.clone(),
            initial_members: setup.initial_members,
            connect: setup.connect,
        })?;
        let rsm = Rsm {
            state: restored.state,
            sessions: restored.sessions.reindexed(),
            session_policy: setup.sessions,
            raft: raft.clone(),
            persister: Box::new(setup.persister),
            max_raft_state: setup.max_raft_state,
            proportional_snapshots: setup.proportional_snapshots,
            last_applied: restored.index,
            last_snapshot: restored.index,
            applied_since_snapshot: 0,
            pending: BTreeMap::new(),
            deadlines: VecDeque::new(),
            deadline_timer: false,
            role: None,
            halted: None,
            halt_waiters: Vec::new(),
            reads: BTreeMap::new(),
            snapshot_in_flight: false,
            noop_term: None,
            trace: setup.trace,
            metrics: setup.metrics,
        };
        Ok((context.run(rsm), raft))
    }

    fn apply_command(&mut self, index: u64, term: u64, bytes: &[u8]) {
        let entry = match rmp_serde::from_slice::<Entry<S::Command>>(bytes) {
            Ok(entry) => entry,
            // Every replica has the same entry: skipping it would hide a bug, and applying
            // anything after it could build a state no one can explain.
            Err(e) => {
                let reason = format!("log entry {index} does not decode: {e}");
                return self.halt(HaltCause::Untrusted, reason);
            }
        };
        self.last_applied = index;
        self.applied_since_snapshot += bytes.len();
        let applied = self.execute(index, entry);
        if let Some(waiter) = self.pending.remove(&index) {
            let answer = match applied {
                // Same index and term: the entry is the one this waiter submitted.
                _ if waiter.term != term => Err(SubmitError::WrongLeader),
                Ok(Some(applied)) => Ok(applied),
                Ok(None) => Err(SubmitError::WrongLeader),
                Err(e) => Err(e),
            };
            let _ = waiter.reply.send(answer);
        }
    }

    /// Executes the entry at `index` once per session sequence number; duplicates return the
    /// saved output, stale requests nothing, and requests of an unknown session are refused.
    fn execute(
        &mut self,
        index: u64,
        entry: Entry<S::Command>,
    ) -> Result<Option<Applied<S::Output>>, SubmitError> {
        self.sessions.advance(entry.stamp, self.session_policy.ttl);
        let (session, command) = match entry.op {
            EntryOp::Noop => return Ok(None),
            EntryOp::Register => {
                self.sessions
                    .register(index, self.session_policy.max_sessions);
                return Ok(Some(Applied::Registered(index)));
            }
            EntryOp::Command { session, command } => (session, command),
        };
        let Some((client, seq)) = session else {
            return Ok(Some(Applied::Output(self.apply_traced(index, command))));
        };
        match self.sessions.verdict(client, seq) {
            Verdict::Execute => {
                let output = self.apply_traced(index, command);
                self.sessions.executed(client, seq, output.clone());
                Ok(Some(Applied::Output(output)))
            }
            Verdict::Duplicate(output) => Ok(Some(Applied::Output(output.clone()))),
            Verdict::Stale => Ok(None),
            Verdict::Expired => Err(SubmitError::SessionExpired),
        }
    }

    /// Applies `command`, the entry at `index`, and traces it if its service notes it.
    fn apply_traced(&mut self, index: u64, command: S::Command) -> S::Output {
        if !self.trace.is_on() {
            return self.state.apply(command);
        }
        let copy = command.clone();
        let output = self.state.apply(command);
        if let Some(what) = self.state.trace_note(&copy, &output) {
            self.trace.emit(|| EventKind::Apply {
                node: self.trace.node().to_string(),
                index,
                what,
            });
        }
        output
    }

    /// Traces a snapshot at `index` taken (`install` false) or installed.
    fn trace_snapshot(&self, index: u64, install: bool) {
        self.trace.emit(|| EventKind::Snapshot {
            node: self.trace.node().to_string(),
            index,
            install,
        });
    }

    fn install_snapshot(&mut self, index: u64, data: &[u8]) {
        match rmp_serde::from_slice::<SnapshotData<S, SessionTable<S::Output>>>(data) {
            Ok(snapshot) => {
                self.state = snapshot.state;
                self.sessions = snapshot.sessions.reindexed();
                self.last_applied = index;
                self.last_snapshot = index;
                self.applied_since_snapshot = 0;
                self.trace_snapshot(index, true);
                self.fail_pending(|index_of_waiter, _| index_of_waiter <= index);
            }
            // Raft already replaced its log with this snapshot: without it the state cannot
            // catch up, and serving the old one would be serving a lie.
            Err(e) => {
                let reason = format!("the snapshot at {index} does not decode: {e}");
                self.halt(HaltCause::Untrusted, reason);
            }
        }
    }

    /// Stops serving for good: the Raft peer is stopped, pending requests fail, whoever waits
    /// for a halt hears of it, and [`GetHealth`] tells why from now on.
    fn halt(&mut self, cause: HaltCause, reason: String) {
        if self.halted.is_some() {
            return;
        }
        log::error!("replica halted: {reason}");
        let halt = Halt { cause, reason };
        for waiter in self.halt_waiters.drain(..) {
            // A waiter that gave up is no one to tell.
            let _ = waiter.send(halt.clone());
        }
        self.halted = Some(halt);
        self.raft.do_send(Stop);
        self.fail_pending(|_, _| true);
        // Their callers see the channel close: a failure.
        self.reads.clear();
    }

    /// Runs `read` once everything up to `index` is applied.
    fn read_at(&mut self, index: u64, read: PendingRead<S>) {
        if index <= self.last_applied {
            read(&self.state, self.last_applied);
        } else {
            self.reads.entry(index).or_default().push(read);
        }
    }

    /// Runs the reads whose index is now applied.
    fn serve_reads(&mut self) {
        while let Some(entry) = self.reads.first_entry() {
            if *entry.key() > self.last_applied {
                break;
            }
            for read in entry.remove() {
                read(&self.state, self.last_applied);
            }
        }
    }

    fn maybe_snapshot(&mut self, ctx: &mut Context<Self>) {
        let Some(max) = self.max_raft_state else {
            return;
        };
        let log = self.persister.raft_state_size();
        // Proportional: what a snapshot would cut from the log is what was applied since the
        // last one, and it must reach the threshold and the last snapshot's size. (The log's
        // size alone would not do: under load, entries not yet applied can hold it over the
        // threshold, and a snapshot per applied entry would follow.)
        let too_soon = if self.proportional_snapshots {
            self.applied_since_snapshot < max.max(self.persister.snapshot_size())
        } else {
            log < max
        };
        if self.snapshot_in_flight || self.last_applied <= self.last_snapshot || too_soon {
            return;
        }
        let snapshot = SnapshotData {
            index: self.last_applied,
            state: &self.state,
            sessions: &self.sessions,
        };
        // The last snapshot's size is a good guess of this one's: the buffer seldom regrows.
        let mut data = Vec::with_capacity(self.persister.snapshot_size() + (64 << 10));
        let started = std::time::Instant::now();
        match rmp_serde::encode::write(&mut data, &snapshot) {
            Ok(()) => {
                self.metrics
                    .snapshot_encoded(self.last_applied, data.len(), started.elapsed());
                self.last_snapshot = self.last_applied;
                self.applied_since_snapshot = 0;
                self.trace_snapshot(self.last_applied, false);
                // One at a time: until Raft has taken this one, its state still looks too big,
                // and encoding a snapshot per applied entry would be wasted work.
                self.snapshot_in_flight = true;
                let taken = Snapshot {
                    index: self.last_applied,
                    data,
                };
                let request = self.raft.send(taken).into_actor(self).map(|_, rsm, _| {
                    rsm.snapshot_in_flight = false;
                });
                ctx.spawn(request);
            }
            Err(e) => log::error!("cannot encode snapshot: {e}"),
        }
    }

    fn fail_pending(&mut self, doomed: impl Fn(u64, &Waiter<S::Output>) -> bool) {
        let indexes: Vec<u64> = self
            .pending
            .iter()
            .filter(|(index, waiter)| doomed(**index, waiter))
            .map(|(index, _)| *index)
            .collect();
        for index in indexes {
            if let Some(waiter) = self.pending.remove(&index) {
                let _ = waiter.reply.send(Err(SubmitError::WrongLeader));
            }
        }
    }

    /// Waits for the command proposed at `index` in `term`, or fails it at once if the peer
    /// is already known to have lost that term.
    fn wait_for(
        &mut self,
        index: u64,
        term: u64,
        reply: oneshot::Sender<Result<Applied<S::Output>, SubmitError>>,
        ctx: &mut Context<Self>,
    ) {
        // A report of an older term may still be on its way; only a newer one, or this term
        // without the lead, says the proposal is lost.
        let lost = self
            .role
            .is_some_and(|role| role.term > term || (role.term == term && !role.leads(term)));
        if lost || index <= self.last_applied {
            // Applied before we could wait for it: the retry finds the session.
            let _ = reply.send(Err(SubmitError::WrongLeader));
            return;
        }
        if let Some(old) = self.pending.insert(index, Waiter { term, reply }) {
            let _ = old.reply.send(Err(SubmitError::WrongLeader));
        }
        self.deadlines
            .push_back((Instant::now() + REQUEST_TIMEOUT, index, term));
        self.arm_deadline_timer(ctx);
    }

    fn arm_deadline_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(&(deadline, _, _)) = self.deadlines.front() else {
            return;
        };
        if self.deadline_timer {
            return;
        }
        self.deadline_timer = true;
        let wait = deadline.saturating_duration_since(Instant::now());
        ctx.run_later(wait, |rsm, ctx| {
            rsm.deadline_timer = false;
            rsm.expire_requests(ctx);
        });
    }

    /// Fails the requests that waited [`REQUEST_TIMEOUT`] without being applied.
    fn expire_requests(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        while let Some(&(deadline, index, term)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self.pending.get(&index).is_some_and(|w| w.term == term) {
                self.fail_pending(|i, _| i == index);
            }
        }
        self.arm_deadline_timer(ctx);
    }

    /// A leader commits entries of earlier terms only together with one of its own (Raft's
    /// Figure 8 rule). Without client traffic, the tail a new leader inherited would wait
    /// forever; a no-op of its term commits it.
    fn commit_noop(&self) {
        match rmp_serde::to_vec(&self.entry(EntryOp::Noop)) {
            Ok(bytes) => self.raft.do_send(Propose(bytes)),
            Err(e) => log::error!("cannot encode a no-op: {e}"),
        }
    }

    /// `op` stamped with this replica's clock (it is proposing as the leader).
    fn entry(&self, op: EntryOp<S::Command>) -> Entry<S::Command> {
        Entry {
            stamp: self.session_policy.clock.now_ms(),
            op,
        }
    }

    /// Proposes `op`; the receiver hears what applying it gave, or why it was not applied.
    fn propose(
        &mut self,
        op: EntryOp<S::Command>,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<Applied<S::Output>, SubmitError>> {
        let (reply, answer) = oneshot::channel();
        let bytes = match rmp_serde::to_vec(&self.entry(op)) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::error!("cannot encode command: {e}");
                let _ = reply.send(Err(SubmitError::WrongLeader));
                return answer;
            }
        };
        let propose =
            self.raft.send(Propose(bytes)).into_actor(self).map(
                |proposed, rsm, ctx| match proposed {
                    Ok(Ok(proposed)) => rsm.wait_for(proposed.index, proposed.term, reply, ctx),
                    _ => {
                        let _ = reply.send(Err(SubmitError::WrongLeader));
                    }
                },
            );
        // If the actor stops before the peer answers, this future and `reply` are dropped.
        ctx.spawn(propose);
        answer
    }
}

impl<S: StateMachine> Actor for Rsm<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.raft.do_send(SubscribeRoles(ctx.address().recipient()));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.raft.do_send(Stop);
        self.fail_pending(|_, _| true);
    }
}

impl<S: StateMachine> Handler<Submit<S::Command, S::Output>> for Rsm<S> {
    // The answer is awaited outside the actor's context: futures on the context are dropped
    // when the actor stops, and a submitter must still get `WrongLeader` then.
    type Result = ResponseFuture<Result<S::Output, SubmitError>>;

    fn handle(
        &mut self,
        msg: Submit<S::Command, S::Output>,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        if self.halted.is_some() {
            return Box::pin(async { Err(SubmitError::Halted) });
        }
        if let Some((client, seq)) = msg.session {
            if let Verdict::Duplicate(output) = self.sessions.verdict(client, seq) {
                let output = output.clone();
                return Box::pin(async move { Ok(output) });
            }
        }
        let op = EntryOp::Command {
            session: msg.session,
            command: msg.command,
        };
        let answer = self.propose(op, ctx);
        Box::pin(async move {
            match answer.await {
                Ok(Ok(Applied::Output(output))) => Ok(output),
                Ok(Err(e)) => Err(e),
                Ok(Ok(Applied::Registered(_))) | Err(_) => Err(SubmitError::WrongLeader),
            }
        })
    }
}

impl<S: StateMachine> Handler<RegisterSession> for Rsm<S> {
    // Awaited outside the actor's context, like a submit.
    type Result = ResponseFuture<Result<ClientId, SubmitError>>;

    fn handle(&mut self, _: RegisterSession, ctx: &mut Self::Context) -> Self::Result {
        if self.halted.is_some() {
            return Box::pin(async { Err(SubmitError::Halted) });
        }
        let answer = self.propose(EntryOp::Register, ctx);
        Box::pin(async move {
            match answer.await {
                Ok(Ok(Applied::Registered(client))) => Ok(client),
                Ok(Err(e)) => Err(e),
                Ok(Ok(Applied::Output(_))) | Err(_) => Err(SubmitError::WrongLeader),
            }
        })
    }
}

impl<S: StateMachine> Handler<GetSessions> for Rsm<S> {
    type Result = MessageResult<GetSessions>;

    fn handle(&mut self, _: GetSessions, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.sessions.list())
    }
}

impl<S: StateMachine, R: Send + 'static> Handler<Read<S, R>> for Rsm<S> {
    type Result = MessageResult<Read<S, R>>;

    fn handle(&mut self, msg: Read<S, R>, _: &mut Self::Context) -> Self::Result {
        if self.halted.is_some() {
            return MessageResult(Err(Halted));
        }
        MessageResult(Ok((msg.0)(&self.state, self.last_applied)))
    }
}

impl<S: StateMachine, R: Send + 'static> Handler<LinearizableRead<S, R>> for Rsm<S> {
    // Awaited outside the actor's context, like a submit: a stopping replica still answers.
    type Result = ResponseFuture<Result<R, SubmitError>>;

    fn handle(&mut self, msg: LinearizableRead<S, R>, ctx: &mut Self::Context) -> Self::Result {
        if self.halted.is_some() {
            return Box::pin(async { Err(SubmitError::Halted) });
        }
        let (reply, answer) = oneshot::channel();
        let confirm = self
            .raft
            .send(ReadIndex)
            .into_actor(self)
            .map(move |index, rsm, _| match index {
                Ok(Ok(index)) => {
                    let f = msg.0;
                    rsm.read_at(
                        index,
                        Box::new(move |state, applied| {
                            let _ = reply.send(Ok(f(state, applied)));
                        }),
                    );
                }
                _ => {
                    let _ = reply.send(Err(SubmitError::WrongLeader));
                }
            });
        ctx.spawn(confirm);
        // A leader cut off from the majority never confirms (until check-quorum makes it
        // step down): the caller is answered within the request timeout anyway.
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) | Err(_) => Err(SubmitError::WrongLeader),
            }
        })
    }
}

impl<S: StateMachine> Handler<GetHealth> for Rsm<S> {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _: GetHealth, _: &mut Self::Context) -> Self::Result {
        MessageResult(match &self.halted {
            None => Health::Serving,
            Some(halt) => Health::Halted {
                reason: halt.reason.clone(),
            },
        })
    }
}

impl<S: StateMachine> Handler<WaitHalt> for Rsm<S> {
    // Awaited outside the actor's context: when the replica stops without halting, the
    // waiter's sender is dropped and the answer is `None`.
    type Result = ResponseFuture<Option<Halt>>;

    fn handle(&mut self, _: WaitHalt, _: &mut Self::Context) -> Self::Result {
        if let Some(halt) = &self.halted {
            let halt = halt.clone();
            return Box::pin(async move { Some(halt) });
        }
        let (tell, told) = oneshot::channel();
        self.halt_waiters.push(tell);
        Box::pin(async move { told.await.ok() })
    }
}

impl<S: StateMachine> Handler<ApplyMsg> for Rsm<S> {
    type Result = ();

    fn handle(&mut self, msg: ApplyMsg, ctx: &mut Self::Context) {
        if self.halted.is_some() {
            return;
        }
        match msg {
            ApplyMsg::Command {
                index,
                term,
                command,
            } => {
                if index <= self.last_applied {
                    return;
                }
                self.apply_command(index, term, &command);
                self.serve_reads();
                self.maybe_snapshot(ctx);
            }
            ApplyMsg::Membership { index, .. } => {
                if index <= self.last_applied {
                    return;
                }
                // No command of the service's: whatever waited at this index lost its place.
                self.last_applied = index;
                if let Some(waiter) = self.pending.remove(&index) {
                    let _ = waiter.reply.send(Err(SubmitError::WrongLeader));
                }
                self.serve_reads();
                self.maybe_snapshot(ctx);
            }
            ApplyMsg::Snapshot { index, data, .. } => {
                if index > self.last_applied {
                    self.install_snapshot(index, &data);
                    self.serve_reads();
                }
            }
            ApplyMsg::Halted { cause, reason } => {
                self.halt(cause, format!("Raft halted: {reason}"));
            }
        }
    }
}

impl<S: StateMachine> Handler<RoleChanged> for Rsm<S> {
    type Result = ();

    fn handle(&mut self, role: RoleChanged, _: &mut Self::Context) {
        self.role = Some(role);
        self.fail_pending(|_, waiter| !role.leads(waiter.term));
        if role.leads(role.term) && self.noop_term != Some(role.term) {
            self.noop_term = Some(role.term);
            self.commit_noop();
        }
    }
}

impl<S: StateMachine> Handler<Stop> for Rsm<S> {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
