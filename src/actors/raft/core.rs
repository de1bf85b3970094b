//! The pure Raft state machine: Figure 2 of the Raft paper plus log compaction (Figure 13).
//!
//! [`RaftCore`] does no I/O and keeps no clock. Its caller (the actor shell) feeds it ticks of
//! logical time, proposals and incoming RPCs; handlers for requests return the reply directly,
//! and every other effect is collected in a [`Ready`] that the caller drains with
//! [`RaftCore::take_ready`]: requests to send, committed entries or snapshots to apply, role
//! changes. What must survive a crash is taken apart, with [`RaftCore::take_unsaved`], when the
//! caller's storage is free; the caller reports it durable with [`RaftCore::saved`].
//!
//! The durability contract: a reply to an RPC, and a RequestVote, may leave only once every
//! state change made before it is durable (a vote or an acknowledged entry that a crash could
//! take back would break Raft). A leader's AppendEntries and InstallSnapshot may leave at
//! once: the core counts the leader's own log towards a majority only as far as it is durable.
//!
//! Randomness (election timeouts) comes from a ChaCha8 generator seeded by the caller, and
//! nothing iterates a hash map, so the same seed and the same inputs give the same outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use log::{debug, error, trace};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{RaftConfig, Ticks};
use super::log::RaftLog;
use super::progress::{Progress, ProgressState};
use super::read_only::ReadOnly;
use crate::messages::apply::ApplyMsg;
use crate::messages::raft::{
    AppendEntriesArgs, AppendEntriesReply, InstallSnapshotArgs, InstallSnapshotReply, LogEntry,
    Membership, MembershipChange, MembershipError, NotLeader, Proposed, RequestVoteArgs,
    RequestVoteReply, Role, RoleChanged, TimeoutNowArgs, TimeoutNowReply, TransferError,
};
use crate::messages::storage::{NewSnapshot, SavedState, StateUpdate};

/// Who a peer is and how it is timed, as the core uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Params {
    /// This peer's id.
    id: usize,
    /// The membership the cluster started with, until a snapshot or a log entry says
    /// otherwise (empty for a peer joining a running cluster: it learns from the leader).
    initial: Membership,
    /// The configuration in ticks of [`RaftCore::tick`].
    ticks: Ticks,
}

impl Params {
    fn new(id: usize, initial: Membership, config: &RaftConfig) -> Result<Params, RestoreError> {
        if !initial.voters.is_empty() && !initial.contains(id) {
            return Err(RestoreError::InvalidConfig(format!(
                "id {id} is not a member of the initial membership {:?}",
                initial.ids().collect::<Vec<_>>()
            )));
        }
        let ticks = config
            .ticks()
            .map_err(|e| RestoreError::InvalidConfig(e.0))?;
        Ok(Params { id, initial, ticks })
    }
}

/// An outgoing request. Its reply comes back through the matching `handle_*_reply`.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A candidate asks for a vote.
    RequestVote(RequestVoteArgs),
    /// A leader replicates entries or sends a heartbeat.
    AppendEntries(AppendEntriesArgs),
    /// A leader sends its snapshot to a follower that needs compacted entries.
    InstallSnapshot(InstallSnapshotArgs),
    /// A leader hands leadership to a follower it brought up to date.
    TimeoutNow(TimeoutNowArgs),
}

/// Effects collected since the last [`RaftCore::take_ready`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ready {
    /// Requests to send, as `(peer id, request)`, in the order they were produced.
    pub messages: Vec<(usize, Message)>,
    /// Committed entries and received snapshots, in index order.
    pub apply: Vec<ApplyMsg>,
    /// The term, role or known leader differs from the last `Ready` that reported them (the
    /// first `Ready` always reports them).
    pub role_changed: Option<RoleChanged>,
    /// A Raft invariant broke (say, a second leader in this peer's own term): this peer must
    /// stop at once, loudly, rather than go on with a state it cannot trust.
    pub fault: Option<String>,
    /// Answers to [`RaftCore::read_index`]: the read index for the caller's `ctx` (serve the
    /// read once that index is applied), or why there is none.
    pub reads: Vec<(u64, Result<u64, NotLeader>)>,
    /// Outcomes of [`RaftCore::change_membership`]: the index of the committed change for the
    /// caller's `ctx`, or why it failed.
    pub changes: Vec<(u64, Result<u64, MembershipError>)>,
}

impl Ready {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.apply.is_empty()
            && self.fault.is_none()
            && self.role_changed.is_none()
            && self.reads.is_empty()
            && self.changes.is_empty()
    }
}

/// Why [`RaftCore::restore`] refused persisted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    /// The configuration is invalid (see [`RaftConfig::validate`]).
    InvalidConfig(String),
    /// The bytes are not an encoded Raft state.
    Decode(String),
    /// The bytes decode but break an invariant (e.g. a vote for an unknown peer).
    Invalid(String),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::InvalidConfig(why) => write!(f, "invalid Raft config: {}", why),
            RestoreError::Decode(why) => write!(f, "persisted Raft state does not decode: {}", why),
            RestoreError::Invalid(why) => {
                write!(f, "persisted Raft state is inconsistent: {}", why)
            }
        }
    }
}

impl std::error::Error for RestoreError {}

/// A snapshot a follower is receiving, chunk by chunk.
#[derive(Debug)]
struct IncomingSnapshot {
    /// The sending leader's term, the snapshot's last included index and that entry's term:
    /// a chunk of anything else starts over.
    key: (u64, u64, u64),
    /// The bytes gathered so far, in order from the start.
    data: Vec<u8>,
}

/// A snapshot a leader is sending to one follower.
#[derive(Debug)]
struct OutgoingSnapshot {
    index: u64,
    term: u64,
    membership: Membership,
    data: Arc<Vec<u8>>,
}

/// A membership change the leader took and has not seen committed.
#[derive(Debug)]
struct PendingChange {
    /// The caller's id for it.
    ctx: u64,
    change: MembershipChange,
    /// Its entry's index, once appended (it waits for an entry of the term to commit first).
    index: Option<u64>,
}

/// A leadership transfer in progress (Raft thesis §3.10).
#[derive(Debug, Clone, Copy)]
struct Transfer {
    /// The peer taking over.
    to: usize,
    /// Ticks since it began: given up after an election timeout.
    elapsed: u32,
    /// TimeoutNow has been sent.
    told: bool,
}

/// One Raft peer as a pure state machine. See the module docs for the calling contract.
#[derive(Debug)]
pub struct RaftCore {
    cfg: Params,
    rng: ChaCha8Rng,

    // Persistent state (Figure 2), saved through `Ready::persist`.
    current_term: u64,
    voted_for: Option<usize>,
    log: RaftLog,
    snapshot: Arc<Vec<u8>>,
    /// The membership at the snapshot's index.
    snapshot_membership: Membership,
    /// Term, vote or log changed since the last `take_ready`.
    unsaved: bool,
    /// The snapshot changed since the last `take_ready`.
    snapshot_unsaved: bool,
    /// New entries were proposed since the last `take_ready`: replicate them then.
    replicate_pending: bool,

    // Volatile state on all servers.
    commit_index: u64,
    /// Highest index handed to the service through `Ready::apply`.
    last_applied: u64,
    role: Role,
    leader_id: Option<usize>,
    election_elapsed: u32,
    election_timeout: u32,
    heartbeat_elapsed: u32,

    /// Ticks since the peer started: the clock leases are measured on.
    now: u64,

    /// The latest membership in the log (committed or not), and the index of the entry that
    /// set it (the snapshot's index if the log holds none).
    membership: Membership,
    membership_index: u64,

    // (Pre-)candidate state: who granted a (pre-)vote in this round.
    votes: BTreeSet<usize>,
    // Leader state: one entry per other member.
    progress: BTreeMap<usize, Progress>,
    /// Check-quorum: who answered since the last check, and ticks since it.
    recently_heard: BTreeSet<usize>,
    quorum_elapsed: u32,
    /// Reads waiting for their heartbeat round.
    reads: ReadOnly,
    /// A leadership transfer in progress.
    transfer: Option<Transfer>,
    /// The membership change in progress, if this leader took one.
    change: Option<PendingChange>,
    /// Follower: the snapshot arriving chunk by chunk (not saved: a restart starts it over).
    incoming: Option<IncomingSnapshot>,
    /// Leader: per follower, the snapshot being sent to it, kept until it is taken even if
    /// a newer one replaces it here meanwhile (else a snapshot taken during every transfer
    /// would restart every transfer).
    outgoing: BTreeMap<usize, OutgoingSnapshot>,

    /// Term, role and leader as last reported through `Ready::role_changed`.
    reported_role: Option<RoleChanged>,
    /// The log is durable up to here: what a leader counts for itself.
    durable_index: u64,
    /// The last index and its term in the update handed out and not yet reported saved.
    saving: Option<(u64, u64)>,
    ready: Ready,
}

impl RaftCore {
    /// A fresh peer `id` whose cluster starts with the `initial` members: term 0, empty log,
    /// follower. An empty `initial` makes a peer that joins a running cluster: it learns the
    /// members from the leader, and campaigns only once it is a voter. Fails on an invalid
    /// configuration (see [`RaftConfig::validate`]) or an id that is not an initial member.
    pub fn new(
        id: usize,
        initial: Membership,
        config: &RaftConfig,
        seed: u64,
    ) -> Result<Self, RestoreError> {
        let cfg = Params::new(id, initial, config)?;
        let mut core = RaftCore {
            rng: ChaCha8Rng::seed_from_u64(seed),
            current_term: 0,
            voted_for: None,
            log: RaftLog::new(),
            snapshot: Arc::new(Vec::new()),
            snapshot_membership: cfg.initial.clone(),
            membership: cfg.initial.clone(),
            membership_index: 0,
            change: None,
            incoming: None,
            outgoing: BTreeMap::new(),
            unsaved: false,
            snapshot_unsaved: false,
            replicate_pending: false,
            commit_index: 0,
            last_applied: 0,
            role: Role::Follower,
            leader_id: None,
            election_elapsed: 0,
            election_timeout: 0,
            heartbeat_elapsed: 0,
            now: 0,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            recently_heard: BTreeSet::new(),
            quorum_elapsed: 0,
            reads: ReadOnly::default(),
            transfer: None,
            reported_role: None,
            durable_index: 0,
            saving: None,
            ready: Ready::default(),
            cfg,
        };
        core.reset_election_timer();
        Ok(core)
    }

    /// A peer restarted from what the shell saved: the state its persister loads and the
    /// snapshot saved with it. A default `saved` state means a fresh peer. The commit and
    /// applied points start at the snapshot's index; the service loads the snapshot itself, so
    /// no [`ApplyMsg::Snapshot`] is emitted.
    pub fn restore(
        id: usize,
        initial: Membership,
        config: &RaftConfig,
        seed: u64,
        saved: SavedState,
        snapshot: Arc<Vec<u8>>,
    ) -> Result<Self, RestoreError> {
        let mut core = Self::new(id, initial, config, seed)?;
        if let Some(m) = saved.snapshot_membership {
            core.snapshot_membership = m;
        }
        let log = RaftLog::from_saved(saved.snapshot_index, saved.snapshot_term, saved.entries);
        log.validate(saved.term).map_err(RestoreError::Invalid)?;

        core.current_term = saved.term;
        core.voted_for = saved.voted_for;
        core.commit_index = log.snapshot_index();
        core.last_applied = log.snapshot_index();
        core.durable_index = log.last_index();
        core.log = log;
        core.snapshot = snapshot;
        core.refresh_membership();
        debug!(
            "peer {}: restored term {} voted_for {:?} log {}..={}",
            core.cfg.id,
            core.current_term,
            core.voted_for,
            core.log.snapshot_index(),
            core.log.last_index()
        );
        Ok(core)
    }

    /// Advances logical time by one tick: followers and candidates count towards their election
    /// timeout, a leader towards its next heartbeat.
    pub fn tick(&mut self) {
        self.now += 1;
        match self.role {
            Role::Leader => {
                self.heartbeat_elapsed += 1;
                if self.heartbeat_elapsed >= self.cfg.ticks.heartbeat {
                    self.heartbeat_elapsed = 0;
                    self.broadcast_heartbeat();
                }
                self.quorum_elapsed += 1;
                if self.quorum_elapsed >= self.cfg.ticks.election.start {
                    self.quorum_elapsed = 0;
                    self.check_quorum();
                }
                if let Some(transfer) = &mut self.transfer {
                    transfer.elapsed += 1;
                    if transfer.elapsed >= self.cfg.ticks.election.start {
                        debug!(
                            "peer {}: transfer to {} timed out",
                            self.cfg.id, transfer.to
                        );
                        self.transfer = None;
                    }
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.election_timeout {
                    if !self.membership.is_voter(self.cfg.id) {
                        // A learner, a peer still joining or one removed: never campaigns.
                        self.reset_election_timer();
                    } else if self.cfg.ticks.pre_vote {
                        self.pre_campaign();
                    } else {
                        self.campaign(false);
                    }
                }
            }
        }
    }

    /// Appends `command` to the log if this peer is the leader; the next [`Self::take_ready`]
    /// sends it to every follower (with any other entries proposed meanwhile). Returns the
    /// index and term it will be committed at, if it ever is.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<Proposed, NotLeader> {
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        if let Some(transfer) = self.transfer {
            // Handing over: the new leader will take it.
            return Err(NotLeader {
                term: self.current_term,
                leader: Some(transfer.to),
            });
        }
        let term = self.current_term;
        let index = self.log.append(LogEntry::command(term, command));
        self.unsaved = true;
        trace!(
            "peer {}: proposed index {} term {}",
            self.cfg.id,
            index,
            term
        );
        // Sent at the next `take_ready`: proposals that arrive together share one message per
        // follower, and none waits for a heartbeat.
        self.replicate_pending = true;
        // A single-peer cluster commits on its own.
        self.maybe_commit();
        Ok(Proposed { index, term })
    }

    /// RequestVote RPC handler (Figure 2, "Receiver implementation").
    pub fn handle_request_vote(&mut self, from: usize, args: RequestVoteArgs) -> RequestVoteReply {
        let up_to_date = args.last_log_term > self.log.last_term()
            || (args.last_log_term == self.log.last_term()
                && args.last_log_index >= self.log.last_index());
        // Leader stickiness: while a live leader is heard, nobody else is helped to win
        // (unless that leader handed over), and its term is not even adopted.
        let sticky = self.in_lease() && !args.leadership_transfer;
        // Only voters vote, and only for voters (as this peer's log knows them).
        let eligible =
            self.membership.is_voter(self.cfg.id) && self.membership.is_voter(args.candidate_id);
        if args.pre_vote {
            // Changes nothing here: only says whether the vote would be granted.
            let vote_granted = args.term > self.current_term && eligible && up_to_date && !sticky;
            debug!(
                "peer {}: pre-vote for {} in term {}: {vote_granted}",
                self.cfg.id, args.candidate_id, args.term
            );
            return RequestVoteReply {
                term: if vote_granted {
                    args.term
                } else {
                    self.current_term
                },
                vote_granted,
                pre_vote: true,
            };
        }
        if sticky && args.term > self.current_term {
            debug!(
                "peer {}: ignores {}'s campaign for term {}: its leader is alive",
                self.cfg.id, args.candidate_id, args.term
            );
            return RequestVoteReply {
                term: self.current_term,
                vote_granted: false,
                pre_vote: false,
            };
        }
        self.observe_term(args.term);
        let free = self.voted_for.is_none_or(|v| v == args.candidate_id);
        let vote_granted = args.term == self.current_term && eligible && free && up_to_date;
        if vote_granted {
            if self.voted_for.is_none() {
                self.voted_for = Some(args.candidate_id);
                self.unsaved = true;
            }
            self.reset_election_timer();
        }
        debug!(
            "peer {}: vote for {} (from {}) in term {}: {}",
            self.cfg.id, args.candidate_id, from, args.term, vote_granted
        );
        RequestVoteReply {
            term: self.current_term,
            vote_granted,
            pre_vote: false,
        }
    }

    /// Handles the answer to our RequestVote: steps down on a higher term, wins the election on
    /// a majority of votes granted in the current term.
    pub fn handle_request_vote_reply(&mut self, from: usize, reply: RequestVoteReply) {
        if reply.pre_vote {
            return self.handle_pre_vote_reply(from, reply);
        }
        if !self.reply_is_current(from, reply.term, Role::Candidate) {
            return;
        }
        if reply.vote_granted {
            self.votes.insert(from);
            if self.membership.has_majority(&self.votes) {
                self.become_leader();
            }
        }
    }

    /// AppendEntries RPC handler (Figure 2). A failed consistency check answers with the
    /// conflicting term and its first index; entries are only truncated on a real conflict, so
    /// a late duplicate of an older request never removes entries.
    pub fn handle_append_entries(
        &mut self,
        from: usize,
        args: AppendEntriesArgs,
    ) -> AppendEntriesReply {
        let read_round = args.read_round;
        let reject = |term, conflict_term, conflict_index| AppendEntriesReply {
            term,
            success: false,
            match_index: 0,
            conflict_term,
            conflict_index,
            read_round,
        };
        if args.term < self.current_term {
            return reject(self.current_term, None, 0);
        }
        if !self.accept_leader(from, args.term, args.leader_id) {
            return reject(self.current_term, None, 0);
        }

        // Consistency check. Entries up to the snapshot are committed, so they match anything a
        // legitimate leader sends; only indexes past the snapshot can conflict.
        let prev = args.prev_log_index;
        if prev > self.log.last_index() {
            trace!("peer {}: log too short for prev {}", self.cfg.id, prev);
            return reject(self.current_term, None, self.log.last_index() + 1);
        }
        if prev >= self.log.snapshot_index() {
            let term = self.log.term_at(prev).unwrap_or(0);
            if term != args.prev_log_term {
                let first = self.log.first_index_of_term_at(prev, term);
                trace!(
                    "peer {}: conflict at {} (term {}, first {})",
                    self.cfg.id,
                    prev,
                    term,
                    first
                );
                return reject(self.current_term, Some(term), first);
            }
        }

        let match_index = prev + args.entries.len() as u64;
        let mut membership_changed = false;
        for (offset, entry) in args.entries.into_iter().enumerate() {
            let index = prev + 1 + offset as u64;
            if index <= self.log.snapshot_index() {
                continue;
            }
            match self.log.term_at(index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    if index <= self.commit_index {
                        // Cannot happen with a correct leader: committed entries never conflict.
                        self.fail(format!(
                            "leader {} of term {} conflicts with committed index {index}",
                            args.leader_id, args.term
                        ));
                        return reject(self.current_term, None, 0);
                    }
                    debug!("peer {}: truncating log from {}", self.cfg.id, index);
                    self.log.truncate(index);
                    self.durable_index = self.durable_index.min(index - 1);
                    membership_changed |= index <= self.membership_index;
                }
                None => {}
            }
            membership_changed |= entry.membership.is_some();
            self.log.append(entry);
            self.unsaved = true;
        }
        if membership_changed {
            self.refresh_membership();
        }

        if args.leader_commit > self.commit_index {
            let new_commit = args.leader_commit.min(match_index);
            if new_commit > self.commit_index {
                self.commit_index = new_commit;
                self.apply_committed();
            }
        }
        AppendEntriesReply {
            term: self.current_term,
            success: true,
            match_index,
            conflict_term: None,
            conflict_index: 0,
            read_round,
        }
    }

    /// Handles a follower's answer to AppendEntries. Success moves its `match_index` forward
    /// (never back) and may commit; a rejection backs `next_index` up past the follower's
    /// conflicting term. Replies from older terms and stale rejections are ignored.
    pub fn handle_append_entries_reply(&mut self, from: usize, reply: AppendEntriesReply) {
        if !self.reply_is_current(from, reply.term, Role::Leader) {
            return;
        }
        // Any answer in our term says the follower still takes us for its leader.
        self.recently_heard.insert(from);
        self.reads.ack(from, reply.read_round);
        self.release_reads();
        let last = self.log.last_index();
        if reply.success {
            let Some(pr) = self.progress.get_mut(&from) else {
                return;
            };
            let advanced = pr.on_success(reply.match_index.min(last));
            match pr.state {
                ProgressState::Probe => pr.become_replicate(),
                ProgressState::Snapshot { pending, .. } if pr.match_index >= pending => {
                    pr.become_replicate();
                    self.outgoing.remove(&from);
                }
                _ => {}
            }
            if advanced {
                self.maybe_commit();
                if self.transfer.is_some_and(|t| t.to == from && !t.told) {
                    self.maybe_hand_over();
                }
            }
            self.send_append(from, false);
        } else {
            let next = match reply.conflict_term {
                Some(term) => self
                    .log
                    .last_index_of_term(term)
                    .map_or(reply.conflict_index, |i| i + 1),
                None => reply.conflict_index,
            };
            let Some(pr) = self.progress.get_mut(&from) else {
                return;
            };
            if next <= pr.match_index && !pr.lost_reported {
                let patience = u64::from(self.cfg.ticks.election.start);
                if pr.lost_data(self.now, patience) {
                    pr.lost_reported = true;
                    error!(
                        "peer {}: follower {from} keeps saying its log ends at {}, below the {} \
                         entries it saved and acknowledged: it has lost data (a wiped data \
                         directory restarted under its old id, or a disk that lost writes). Raft \
                         never rewinds what a follower acknowledged, so it will not catch up: \
                         replace it (`rainkv-ctl member remove {from}`, then a node with an \
                         empty directory and `serve --join` under a new id)",
                        self.cfg.id,
                        next.saturating_sub(1),
                        pr.match_index
                    );
                }
            }
            if next <= pr.match_index || matches!(pr.state, ProgressState::Snapshot { .. }) {
                trace!("peer {}: stale rejection from {}", self.cfg.id, from);
                return;
            }
            // Never move forward on a rejection: a stale one could point past the real conflict.
            // In Probe, a rejection that does not move back answers an older probe (an answer
            // to the current one always moves back): the probe in flight covers it.
            let next = next.min(pr.next_index).min(last + 1);
            if pr.state == ProgressState::Probe && next >= pr.next_index {
                trace!("peer {}: duplicate rejection from {}", self.cfg.id, from);
                return;
            }
            trace!(
                "peer {}: {} rejected, probing from {}",
                self.cfg.id,
                from,
                next
            );
            pr.become_probe(next);
            self.send_append(from, false);
        }
    }

    /// InstallSnapshot RPC handler (Figure 13). Ignores snapshots not newer than the commit
    /// index; gathers the chunks of a newer one in order (a chunk that does not start where
    /// the gathered bytes end is answered with where they end; a chunk of another snapshot, or
    /// of another leader's term, starts over); with the last chunk, keeps the log suffix if it
    /// holds the snapshot's last entry with the same term, else drops the log, and hands the
    /// snapshot to the service via [`ApplyMsg::Snapshot`].
    pub fn handle_install_snapshot(
        &mut self,
        from: usize,
        args: InstallSnapshotArgs,
    ) -> InstallSnapshotReply {
        let index = args.last_included_index;
        let term = args.last_included_term;
        let reply = |term, last_included_index, received| InstallSnapshotReply {
            term,
            last_included_index,
            received,
        };
        if args.term < self.current_term || !self.accept_leader(from, args.term, args.leader_id) {
            // Index 0 vouches for nothing: a leader re-elected in our current term must not take
            // this answer to its older request as an acknowledgement.
            return reply(self.current_term, 0, (0, 0));
        }
        if index <= self.commit_index {
            trace!(
                "peer {}: snapshot at {} is not newer than commit {}",
                self.cfg.id,
                index,
                self.commit_index
            );
            self.incoming = None;
            return reply(self.current_term, index, (0, 0));
        }
        let key = (args.term, index, term);
        let mut incoming = match self.incoming.take() {
            Some(incoming) if incoming.key == key => incoming,
            _ => IncomingSnapshot {
                key,
                data: Vec::new(),
            },
        };
        if args.offset == 0 {
            incoming.data.clear();
        }
        let gathered = incoming.data.len() as u64;
        if args.offset != gathered {
            trace!(
                "peer {}: snapshot chunk at {} of {}, expected at {}",
                self.cfg.id,
                args.offset,
                index,
                gathered
            );
            self.incoming = Some(incoming);
            return reply(self.current_term, 0, (index, gathered));
        }
        incoming.data.extend_from_slice(&args.data);
        if !args.done {
            let gathered = incoming.data.len() as u64;
            self.incoming = Some(incoming);
            return reply(self.current_term, 0, (index, gathered));
        }
        debug!(
            "peer {}: installing snapshot at {} term {}",
            self.cfg.id, index, term
        );
        if self.log.term_at(index) != Some(term) {
            // The log is discarded: what is on disk agrees with it only up to the snapshot.
            self.durable_index = self.durable_index.min(index);
        }
        self.log.compact(index, term);
        self.snapshot = Arc::new(incoming.data);
        self.snapshot_membership = args.membership;
        self.refresh_membership();
        self.commit_index = index;
        self.last_applied = index;
        self.unsaved = true;
        self.snapshot_unsaved = true;
        self.ready.apply.push(ApplyMsg::Snapshot {
            index,
            term,
            data: Arc::clone(&self.snapshot),
        });
        reply(self.current_term, index, (0, 0))
    }

    /// Handles a follower's answer to InstallSnapshot: with the whole snapshot taken, its log
    /// matches up to the snapshot's last index, so replication resumes from there; while the
    /// snapshot is arriving, the next chunk goes out from where the follower's bytes end.
    pub fn handle_install_snapshot_reply(&mut self, from: usize, reply: InstallSnapshotReply) {
        if !self.reply_is_current(from, reply.term, Role::Leader) {
            return;
        }
        self.recently_heard.insert(from);
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if reply.last_included_index == 0 {
            let (receiving, gathered) = reply.received;
            if let ProgressState::Snapshot { pending, offset } = pr.state {
                if receiving == pending && gathered < offset {
                    debug!(
                        "peer {}: {} holds {} bytes of the snapshot at {}, not {}: resending from there",
                        self.cfg.id, from, gathered, pending, offset
                    );
                }
                if receiving == pending {
                    pr.state = ProgressState::Snapshot {
                        pending,
                        offset: gathered,
                    };
                    pr.paused = false;
                    self.send_snapshot(from);
                }
            }
            return;
        }
        let advanced = pr.on_success(reply.last_included_index.min(last));
        if let ProgressState::Snapshot { pending, .. } = pr.state {
            if pr.match_index >= pending {
                pr.become_replicate();
                self.outgoing.remove(&from);
            }
        }
        if advanced {
            self.maybe_commit();
        }
        self.send_append(from, false);
    }

    /// Asks for a read index (Raft thesis §6.4) on behalf of the caller's `ctx`; the answer
    /// comes in a later [`Ready::reads`]. The leader answers once an entry of its own term is
    /// committed (before that, its commit index may lag its predecessor's) and a heartbeat
    /// round started after the request has been answered by a majority: then it was still
    /// the leader when the read arrived. With lease reads on, a valid lease answers at once.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), NotLeader> {
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        if self.serves_reads() && self.lease_holds() {
            self.ready.reads.push((ctx, Ok(self.commit_index)));
            return Ok(());
        }
        self.reads.add(ctx);
        Ok(())
    }

    /// Whether an entry of the leader's own term is committed.
    fn serves_reads(&self) -> bool {
        self.log.term_at(self.commit_index) == Some(self.current_term)
    }

    /// Whether the leader's lease holds: a majority answered a heartbeat round started less
    /// than the lease ago (those peers refuse other candidates for longer than that).
    fn lease_holds(&self) -> bool {
        match (self.cfg.ticks.lease, self.reads.confirmed_at()) {
            (Some(lease), Some(at)) => self.now < at + lease,
            _ => false,
        }
    }

    /// Moves the reads a majority has confirmed to [`Ready::reads`].
    fn release_reads(&mut self) {
        for read in self.reads.take_confirmed(self.cfg.id, &self.membership) {
            self.ready.reads.push((read.ctx, Ok(read.index)));
        }
    }

    /// Hands leadership to peer `to` (Raft thesis §3.10): no more proposals are taken; once
    /// `to`'s log matches ours it is told to campaign at once. Given up after an election
    /// timeout.
    pub fn transfer_leadership(&mut self, to: usize) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader(self.not_leader()));
        }
        if to == self.cfg.id || !self.membership.is_voter(to) {
            return Err(TransferError::NoSuchPeer(to));
        }
        debug!("peer {}: handing leadership to {to}", self.cfg.id);
        self.transfer = Some(Transfer {
            to,
            elapsed: 0,
            told: false,
        });
        self.maybe_hand_over();
        self.send_append(to, false);
        Ok(())
    }

    /// Tells the transferee to campaign once its log matches ours.
    fn maybe_hand_over(&mut self) {
        let last = self.log.last_index();
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        if self.progress.get(&transfer.to).map(|pr| pr.match_index) == Some(last) {
            transfer.told = true;
            let args = TimeoutNowArgs {
                term: self.current_term,
                leader_id: self.cfg.id,
            };
            self.ready
                .messages
                .push((transfer.to, Message::TimeoutNow(args)));
        }
    }

    /// TimeoutNow RPC handler: our leader hands us leadership; campaign at once.
    pub fn handle_timeout_now(&mut self, from: usize, args: TimeoutNowArgs) -> TimeoutNowReply {
        if args.term == self.current_term
            && self.role == Role::Follower
            && self.leader_id == Some(args.leader_id)
            && self.is_peer(from)
        {
            debug!("peer {}: takes over from {from}", self.cfg.id);
            self.campaign(true);
        }
        TimeoutNowReply {
            term: self.current_term,
        }
    }

    /// Handles the answer to our TimeoutNow: only its term matters.
    pub fn handle_timeout_now_reply(&mut self, _from: usize, reply: TimeoutNowReply) {
        self.observe_term(reply.term);
    }

    /// Changes the membership by one server on behalf of the caller's `ctx` (Raft thesis §4.1);
    /// the outcome comes in a later [`Ready::changes`], once the change is committed (or this
    /// peer stops leading first). Refused at once if this peer does not lead, if a change is
    /// in flight (its own, or an uncommitted one it inherited), if the change does not apply,
    /// or if a learner to promote lags more than `promote_lag` entries behind.
    ///
    /// A change is appended only once an entry of the leader's term is committed: otherwise a
    /// change by a previous leader that never committed could combine with this one into two
    /// disjoint majorities (the single-server change bug found in 2015). If none is, the leader
    /// first appends a membership entry that restates the current members.
    pub fn change_membership(
        &mut self,
        ctx: u64,
        change: MembershipChange,
    ) -> Result<(), MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader(self.not_leader()));
        }
        if let Some(transfer) = self.transfer {
            return Err(MembershipError::NotLeader(NotLeader {
                term: self.current_term,
                leader: Some(transfer.to),
            }));
        }
        if self.change.is_some() || self.membership_index > self.commit_index {
            return Err(MembershipError::Busy);
        }
        self.membership
            .apply(&change)
            .map_err(MembershipError::Invalid)?;
        if let MembershipChange::Promote(id) = change {
            let matched = self.progress.get(&id).map_or(0, |pr| pr.match_index);
            let last = self.log.last_index();
            if matched.saturating_add(self.cfg.ticks.promote_lag) < last {
                return Err(MembershipError::Lagging { matched, last });
            }
        }
        debug!("peer {}: membership change {change:?}", self.cfg.id);
        self.change = Some(PendingChange {
            ctx,
            change,
            index: None,
        });
        if !self.serves_reads() && self.log.last_term() != self.current_term {
            // Nothing of this term to wait for: commit a restatement of the members first.
            self.append_membership(self.membership.clone());
        }
        self.advance_change();
        Ok(())
    }

    /// Moves the change in progress on: appends it once an entry of the term is committed,
    /// reports it once its own entry is.
    fn advance_change(&mut self) {
        let Some(mut pending) = self.change.take() else {
            return;
        };
        match pending.index {
            None if self.serves_reads() => match self.membership.apply(&pending.change) {
                Ok(next) => pending.index = Some(self.append_membership(next)),
                Err(why) => {
                    let outcome = Err(MembershipError::Invalid(why));
                    return self.ready.changes.push((pending.ctx, outcome));
                }
            },
            Some(index) if index <= self.commit_index => {
                debug!(
                    "peer {}: membership change at {index} committed",
                    self.cfg.id
                );
                return self.ready.changes.push((pending.ctx, Ok(index)));
            }
            _ => {}
        }
        self.change = Some(pending);
    }

    /// Leader: appends a membership entry, which takes effect at once; returns its index.
    fn append_membership(&mut self, membership: Membership) -> u64 {
        let index = self.log.append(LogEntry {
            term: self.current_term,
            command: Vec::new(),
            membership: Some(membership.clone()),
        });
        self.unsaved = true;
        self.replicate_pending = true;
        self.set_membership(membership, index);
        index
    }

    /// Acts on `membership`, set by the entry at `index`: a leader starts replicating to new
    /// members and stops for removed ones.
    fn set_membership(&mut self, membership: Membership, index: u64) {
        if membership != self.membership {
            debug!(
                "peer {}: membership at {index}: voters {:?} learners {:?}",
                self.cfg.id,
                membership.voters.keys().collect::<Vec<_>>(),
                membership.learners.keys().collect::<Vec<_>>()
            );
        }
        self.membership = membership;
        self.membership_index = index;
        if self.role != Role::Leader {
            return;
        }
        // A new member gets the log from this entry at once; its answer says where to start.
        for peer in self.other_peers() {
            self.progress
                .entry(peer)
                .or_insert_with(|| Progress::new(index.saturating_sub(1)));
        }
        let members = &self.membership;
        self.progress.retain(|p, _| members.contains(*p));
        self.outgoing.retain(|p, _| members.contains(*p));
        if self.transfer.is_some_and(|t| !members.is_voter(t.to)) {
            self.transfer = None;
        }
    }

    /// The membership at `index` and the index that set it: the last membership entry at or
    /// before `index`, else the snapshot's.
    fn membership_at(&self, index: u64) -> (Membership, u64) {
        let mut i = index.min(self.log.last_index());
        while i > self.log.snapshot_index() {
            if let Some(m) = self.log.entry(i).and_then(|e| e.membership.as_ref()) {
                return (m.clone(), i);
            }
            i -= 1;
        }
        (self.snapshot_membership.clone(), self.log.snapshot_index())
    }

    /// Recomputes the membership from the log after it changed under a follower.
    fn refresh_membership(&mut self) {
        let (membership, index) = self.membership_at(self.log.last_index());
        self.set_membership(membership, index);
    }

    /// The service has applied everything up to `index` and saved it in `data`: compact the log
    /// up to there. Ignored if `index` is not past the current snapshot or not yet applied.
    pub fn snapshot(&mut self, index: u64, data: Vec<u8>) {
        if index <= self.log.snapshot_index() || index > self.last_applied {
            debug!(
                "peer {}: ignoring snapshot at {} (snapshot {}, applied {})",
                self.cfg.id,
                index,
                self.log.snapshot_index(),
                self.last_applied
            );
            return;
        }
        let Some(term) = self.log.term_at(index) else {
            return;
        };
        self.snapshot_membership = self.membership_at(index).0;
        self.log.compact(index, term);
        self.snapshot = Arc::new(data);
        self.unsaved = true;
        self.snapshot_unsaved = true;
        debug!("peer {}: compacted log up to {}", self.cfg.id, index);
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.current_term
    }

    /// Whether this peer believes it leads the current term.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The role in the current term.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader of the current term, if known (a hint for redirecting clients).
    pub fn leader_id(&self) -> Option<usize> {
        self.leader_id
    }

    /// The followers this leader found to have lost entries they had acknowledged, this term:
    /// for an election timeout, each rejection said its log ends below its `match_index`.
    /// Empty unless it leads.
    pub fn followers_lost_data(&self) -> Vec<usize> {
        self.progress
            .iter()
            .filter(|(_, pr)| pr.lost_reported)
            .map(|(&id, _)| id)
            .collect()
    }

    /// A leader's `match_index` (Figure 2): for each peer, the highest log index known to be
    /// replicated on it; its own entry is its last log index. Empty unless it leads.
    /// Ids that are not members read 0.
    pub fn match_index(&self) -> Vec<u64> {
        if self.role != Role::Leader {
            return Vec::new();
        }
        let ids = self
            .membership
            .ids()
            .chain([self.cfg.id])
            .max()
            .unwrap_or(0);
        (0..=ids)
            .map(|p| {
                if p == self.cfg.id {
                    self.log.last_index()
                } else {
                    self.progress.get(&p).map_or(0, |pr| pr.match_index)
                }
            })
            .collect()
    }

    /// The latest membership in the log, committed or not: the one this peer acts on.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The candidate voted for in the current term, if any.
    pub fn voted_for(&self) -> Option<usize> {
        self.voted_for
    }

    /// Highest log index known to be committed.
    pub fn commit_index(&self) -> u64 {
        self.commit_index
    }

    /// Highest index handed to the service (through `Ready::apply` or the restored snapshot).
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// Index of the last log entry (counting compacted ones).
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// Index of the last entry covered by the snapshot (0 if none).
    pub fn snapshot_index(&self) -> u64 {
        self.log.snapshot_index()
    }

    /// The whole persistent state (term, vote, snapshot position, log), as a persister that
    /// applied every update holds it.
    pub fn saved_state(&self) -> SavedState {
        SavedState {
            term: self.current_term,
            voted_for: self.voted_for,
            snapshot_index: self.log.snapshot_index(),
            snapshot_term: self.log.snapshot_term(),
            entries: self.log.slice(0, u64::MAX).to_vec(),
            snapshot_membership: Some(self.snapshot_membership.clone()),
        }
    }

    /// The latest snapshot (empty if none); saved atomically with the state.
    pub fn snapshot_data(&self) -> Arc<Vec<u8>> {
        Arc::clone(&self.snapshot)
    }

    /// Records a broken invariant for the shell, which stops the peer (the first one wins).
    fn fail(&mut self, why: String) {
        error!("peer {}: {why}", self.cfg.id);
        self.ready.fault.get_or_insert(why);
    }

    /// Drains the effects produced since the last call.
    pub fn take_ready(&mut self) -> Ready {
        if std::mem::take(&mut self.replicate_pending) && self.role == Role::Leader {
            for peer in self.other_peers() {
                self.send_append(peer, false);
            }
        }
        if self.role == Role::Leader && self.reads.has_waiting() && self.serves_reads() {
            // One heartbeat round for every read that arrived since the last one.
            self.reads.start_round(self.commit_index, self.now);
            for peer in self.other_peers() {
                self.send_append(peer, true);
            }
            self.release_reads();
        }
        let role = RoleChanged {
            term: self.current_term,
            role: self.role,
            leader: self.leader_id,
        };
        if self.reported_role != Some(role) {
            self.reported_role = Some(role);
            self.ready.role_changed = Some(role);
        }
        std::mem::take(&mut self.ready)
    }

    /// Whether some state change is not yet handed out by [`RaftCore::take_unsaved`].
    pub fn has_unsaved(&self) -> bool {
        self.unsaved
    }

    /// What changed since the last update handed out, if anything: save it atomically, then
    /// call [`RaftCore::saved`]. Hand out the next one only after that.
    pub fn take_unsaved(&mut self) -> Option<StateUpdate> {
        if !self.unsaved {
            return None;
        }
        let update = self.state_update();
        self.saving = Some((self.log.last_index(), self.log.last_term()));
        Some(update)
    }

    /// The update last handed out by [`RaftCore::take_unsaved`] is durable. A leader may now
    /// count its own log that far towards a majority.
    pub fn saved(&mut self) {
        let Some((index, term)) = self.saving.take() else {
            return;
        };
        // By the Log Matching property, the same term at `index` means the same log up to
        // it; if the entry changed since, `durable_index` was lowered when it did.
        if self.log.term_at(index) == Some(term) {
            self.durable_index = index;
        }
        self.maybe_commit();
    }

    /// What changed since the last save: term and vote, a new snapshot, and the log from the
    /// lowest index written (or compacted past) on.
    fn state_update(&mut self) -> StateUpdate {
        let snapshot = std::mem::take(&mut self.snapshot_unsaved).then(|| NewSnapshot {
            index: self.log.snapshot_index(),
            term: self.log.snapshot_term(),
            data: Arc::clone(&self.snapshot),
            membership: Some(self.snapshot_membership.clone()),
        });
        let first_index = self
            .log
            .unsaved_from()
            .unwrap_or(self.log.last_index() + 1)
            .max(self.log.snapshot_index() + 1);
        let entries = self.log.slice(first_index, u64::MAX).to_vec();
        self.log.mark_saved();
        self.unsaved = false;
        StateUpdate {
            term: self.current_term,
            voted_for: self.voted_for,
            snapshot,
            first_index,
            entries,
        }
    }

    // ---- internals -----------------------------------------------------------------------

    /// Every other member, voter or learner, ascending. (Collected: callers mutate `self`.)
    fn other_peers(&self) -> Vec<usize> {
        let id = self.cfg.id;
        self.membership.ids().filter(|p| *p != id).collect()
    }

    fn is_peer(&self, peer: usize) -> bool {
        peer != self.cfg.id && self.membership.contains(peer)
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout = self.rng.gen_range(self.cfg.ticks.election.clone());
    }

    /// Whether a reply from `from` in `term` is for us as we are now (in `role`, in the current
    /// term); a higher term makes us follower first.
    fn reply_is_current(&mut self, from: usize, term: u64, role: Role) -> bool {
        !self.observe_term(term)
            && self.role == role
            && term == self.current_term
            && self.is_peer(from)
    }

    /// Figure 2, "all servers": on a higher term, adopt it and become follower. Returns true if
    /// that happened.
    fn observe_term(&mut self, term: u64) -> bool {
        if term > self.current_term {
            self.become_follower(term, None);
            true
        } else {
            false
        }
    }

    fn become_follower(&mut self, term: u64, leader_id: Option<usize>) {
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
            self.unsaved = true;
        }
        if self.role == Role::Leader {
            // Reads not confirmed yet cannot be: another leader may already exist.
            let not_leader = NotLeader {
                term: self.current_term,
                leader: leader_id,
            };
            for ctx in self.reads.drain() {
                self.ready.reads.push((ctx, Err(not_leader)));
            }
            if let Some(change) = self.change.take() {
                self.ready
                    .changes
                    .push((change.ctx, Err(MembershipError::NotLeader(not_leader))));
            }
            self.transfer = None;
        }
        if self.role != Role::Follower {
            debug!(
                "peer {}: follower in term {}",
                self.cfg.id, self.current_term
            );
            self.role = Role::Follower;
            self.reset_election_timer();
        }
        self.leader_id = leader_id;
    }

    /// Common part of AppendEntries and InstallSnapshot from a leader of `term >= current_term`:
    /// follow it and reset the election timer. Returns false if we lead this very term ourselves
    /// (impossible with a correct peer set).
    fn accept_leader(&mut self, from: usize, term: u64, leader_id: usize) -> bool {
        if term == self.current_term && self.role == Role::Leader {
            self.fail(format!(
                "a second leader {leader_id} (from {from}) in term {term}, which this peer leads"
            ));
            return false;
        }
        self.become_follower(term, Some(leader_id));
        self.reset_election_timer();
        true
    }

    /// Pre-vote (Raft thesis §9.6): ask whether a majority would vote for us in the next
    /// term, without raising ours; campaign only if so.
    fn pre_campaign(&mut self) {
        if self.membership.has_majority(&BTreeSet::from([self.cfg.id])) {
            return self.campaign(false);
        }
        self.role = Role::PreCandidate;
        // Forget the leader we knew: we no longer hear it, and peers judge our pre-vote by
        // their own view of the leader, not by ours.
        self.leader_id = None;
        self.votes = BTreeSet::from([self.cfg.id]);
        self.reset_election_timer();
        debug!(
            "peer {}: pre-campaigning for term {}",
            self.cfg.id,
            self.current_term + 1
        );
        self.ask_for_votes(self.current_term + 1, true, false);
    }

    /// Handles the answer to our pre-vote: a majority of grants for the next term starts the
    /// real campaign. Answers to an earlier round, or arriving when we no longer pre-campaign,
    /// count for nothing (a late grant must not start an election another peer has won).
    fn handle_pre_vote_reply(&mut self, from: usize, reply: RequestVoteReply) {
        if self.role != Role::PreCandidate || !self.is_peer(from) {
            return;
        }
        if !reply.vote_granted {
            if reply.term > self.current_term {
                self.become_follower(reply.term, None);
            }
            return;
        }
        if reply.term != self.current_term + 1 {
            return;
        }
        self.votes.insert(from);
        if self.membership.has_majority(&self.votes) {
            self.campaign(false);
        }
    }

    /// Starts an election in the next term. `leadership_transfer`: the leader asked us to
    /// (TimeoutNow), so voters that still hear from it vote anyway.
    fn campaign(&mut self, leadership_transfer: bool) {
        self.current_term += 1;
        self.role = Role::Candidate;
        self.voted_for = Some(self.cfg.id);
        self.leader_id = None;
        self.unsaved = true;
        self.votes = BTreeSet::from([self.cfg.id]);
        self.reset_election_timer();
        debug!(
            "peer {}: campaigning in term {}",
            self.cfg.id, self.current_term
        );
        if self.membership.has_majority(&self.votes) {
            self.become_leader();
            return;
        }
        self.ask_for_votes(self.current_term, false, leadership_transfer);
    }

    fn ask_for_votes(&mut self, term: u64, pre_vote: bool, leadership_transfer: bool) {
        let args = RequestVoteArgs {
            term,
            candidate_id: self.cfg.id,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
            leadership_transfer,
        };
        let voters: Vec<usize> = self.membership.voters.keys().copied().collect();
        for peer in voters.into_iter().filter(|p| *p != self.cfg.id) {
            self.ready
                .messages
                .push((peer, Message::RequestVote(args.clone())));
        }
    }

    /// Leader stickiness: whether this peer heard from a live leader within the minimum
    /// election timeout (a leader hears from a majority, or it would have stepped down).
    fn in_lease(&self) -> bool {
        self.cfg.ticks.check_quorum
            && match self.role {
                Role::Leader => true,
                _ => {
                    self.leader_id.is_some()
                        && self.election_elapsed < self.cfg.ticks.election.start
                }
            }
    }

    /// Check-quorum: a leader that heard from no majority during the last election timeout
    /// steps down, so clients cut off with it stop waiting on it.
    fn check_quorum(&mut self) {
        let mut heard = std::mem::take(&mut self.recently_heard);
        heard.insert(self.cfg.id);
        if self.cfg.ticks.check_quorum && !self.membership.has_majority(&heard) {
            debug!(
                "peer {}: heard from no majority of the voters {:?} in term {}: stepping down",
                self.cfg.id,
                self.membership.voters.keys().collect::<Vec<_>>(),
                self.current_term
            );
            self.become_follower(self.current_term, None);
        }
    }

    fn not_leader(&self) -> NotLeader {
        NotLeader {
            term: self.current_term,
            leader: self.leader_id,
        }
    }

    fn become_leader(&mut self) {
        debug!(
            "peer {}: leader of term {} at index {}",
            self.cfg.id,
            self.current_term,
            self.log.last_index()
        );
        self.role = Role::Leader;
        self.leader_id = Some(self.cfg.id);
        self.heartbeat_elapsed = 0;
        self.quorum_elapsed = 0;
        self.recently_heard = BTreeSet::new();
        self.reads = ReadOnly::default();
        self.transfer = None;
        self.change = None;
        let last = self.log.last_index();
        self.progress = self
            .other_peers()
            .into_iter()
            .map(|p| (p, Progress::new(last)))
            .collect();
        self.outgoing.clear();
        // Announce the term at once; no no-op entry (6.5840 expects exact indexes).
        for peer in self.other_peers() {
            self.send_append(peer, true);
        }
        self.maybe_commit();
    }

    fn broadcast_heartbeat(&mut self) {
        for peer in self.other_peers() {
            self.send_append(peer, true);
        }
    }

    /// Sends `peer` what it needs next: entries from its `next_index` (within the per-message
    /// caps on entries and bytes, and at least one), or the snapshot if those are compacted. Outside a heartbeat
    /// (`heartbeat == false`) this respects flow control and sends nothing empty. A heartbeat to
    /// a streaming follower checks the optimistic point `next_index - 1`, so a lost message
    /// shows up as a rejection. A heartbeat to a follower whose probe is unanswered asks the
    /// probe's question again without its entries: if the probe was lost, this answer gets the
    /// follower going; if it was not, its entries are not sent twice.
    fn send_append(&mut self, peer: usize, heartbeat: bool) {
        let Some(pr) = self.progress.get(&peer) else {
            return;
        };
        if let ProgressState::Snapshot { .. } = pr.state {
            if heartbeat {
                self.send_snapshot(peer);
            }
            return;
        }
        let cap = self.cfg.ticks.in_flight;
        if !heartbeat && !pr.can_send(cap) {
            return;
        }
        if pr.next_index <= self.log.snapshot_index() {
            self.send_snapshot(peer);
            return;
        }
        let last = self.log.last_index();
        let prev_log_index = (pr.next_index - 1).min(last);
        let prev_log_term = self.log.term_at(prev_log_index).unwrap_or(0);
        let unanswered_probe = heartbeat && pr.state == ProgressState::Probe && pr.paused;
        // A heartbeat to a follower at the cap checks the optimistic point, carrying nothing.
        let streaming_full = pr.state == ProgressState::Replicate && pr.is_full(cap);
        let entries = if unanswered_probe || streaming_full {
            Vec::new()
        } else {
            self.entries_to_send(prev_log_index + 1)
        };
        let hi = prev_log_index + entries.len() as u64;
        if entries.is_empty() && !heartbeat {
            return;
        }
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        match pr.state {
            ProgressState::Replicate => {
                pr.next_index = hi + 1;
                if !entries.is_empty() {
                    pr.sent(hi, entries.iter().map(|e| e.command.len()).sum());
                }
            }
            ProgressState::Probe => pr.paused = true,
            ProgressState::Snapshot { .. } => {}
        }
        trace!(
            "peer {}: AppendEntries to {} prev {} entries {}",
            self.cfg.id,
            peer,
            prev_log_index,
            entries.len()
        );
        let args = AppendEntriesArgs {
            term: self.current_term,
            leader_id: self.cfg.id,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
            read_round: self.reads.round(),
        };
        self.ready
            .messages
            .push((peer, Message::AppendEntries(args)));
    }

    /// The entries from `first` on that one AppendEntries carries: at most `max_entries`, and
    /// no more command bytes than `max_bytes` unless the first entry alone is larger.
    fn entries_to_send(&self, first: u64) -> Vec<LogEntry> {
        let candidates = self.log.slice(
            first,
            first.saturating_add(self.cfg.ticks.max_entries as u64),
        );
        let mut bytes = 0;
        let fits = candidates
            .iter()
            .take_while(|entry| {
                bytes += entry.command.len();
                bytes <= self.cfg.ticks.max_bytes
            })
            .count();
        candidates[..fits.max(1).min(candidates.len())].to_vec()
    }

    /// Sends `peer` the chunk it needs next of the snapshot being sent to it, from where the
    /// acknowledged bytes end; starts the current snapshot if none is being sent.
    fn send_snapshot(&mut self, peer: usize) {
        let Some(state) = self.progress.get(&peer).map(|pr| pr.state) else {
            return;
        };
        let resumed = match (state, self.outgoing.get(&peer)) {
            (ProgressState::Snapshot { pending, offset }, Some(out)) if out.index == pending => {
                Some(offset)
            }
            _ => None,
        };
        let offset = match resumed {
            Some(offset) => offset,
            None => {
                let out = OutgoingSnapshot {
                    index: self.log.snapshot_index(),
                    term: self.log.snapshot_term(),
                    membership: self.snapshot_membership.clone(),
                    data: Arc::clone(&self.snapshot),
                };
                debug!(
                    "peer {}: InstallSnapshot to {} at {} ({} bytes)",
                    self.cfg.id,
                    peer,
                    out.index,
                    out.data.len()
                );
                self.outgoing.insert(peer, out);
                0
            }
        };
        let Some(out) = self.outgoing.get(&peer) else {
            return;
        };
        let len = out.data.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(self.cfg.ticks.max_bytes).min(len);
        let args = InstallSnapshotArgs {
            term: self.current_term,
            leader_id: self.cfg.id,
            last_included_index: out.index,
            last_included_term: out.term,
            membership: out.membership.clone(),
            offset: start as u64,
            done: end == len,
            data: out.data[start..end].to_vec(),
        };
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.become_snapshot(out.index, start as u64);
        }
        self.ready
            .messages
            .push((peer, Message::InstallSnapshot(args)));
    }

    /// Leader: commit the highest index stored on a majority, but only by counting replicas of
    /// an entry from the current term (Figure 8); earlier entries commit with it.
    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let own = self.durable_index.min(self.log.last_index());
        let candidate = self.membership.committed_index(|p| {
            if p == self.cfg.id {
                own
            } else {
                self.progress.get(&p).map_or(0, |pr| pr.match_index)
            }
        });
        if candidate > self.commit_index && self.log.term_at(candidate) == Some(self.current_term) {
            trace!(
                "peer {}: commit {} -> {}",
                self.cfg.id,
                self.commit_index,
                candidate
            );
            self.commit_index = candidate;
            self.apply_committed();
            self.advance_change();
            if self.membership_index <= self.commit_index && !self.membership.is_voter(self.cfg.id)
            {
                debug!(
                    "peer {}: no longer a voter from index {}: stepping down",
                    self.cfg.id, self.membership_index
                );
                self.become_follower(self.current_term, None);
            }
        }
    }

    /// Hands newly committed entries to the service, in order.
    fn apply_committed(&mut self) {
        while self.last_applied < self.commit_index {
            let index = self.last_applied + 1;
            let Some(entry) = self.log.entry(index) else {
                self.fail(format!("committed index {index} is not in the log"));
                return;
            };
            self.ready.apply.push(match &entry.membership {
                Some(membership) => ApplyMsg::Membership {
                    index,
                    term: entry.term,
                    membership: membership.clone(),
                },
                None => ApplyMsg::Command {
                    index,
                    term: entry.term,
                    command: entry.command.clone(),
                },
            });
            self.last_applied = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Raft paper's election, without pre-vote and check-quorum (they have tests of
    /// their own below).
    fn classic() -> RaftConfig {
        RaftConfig {
            pre_vote: false,
            check_quorum: false,
            ..RaftConfig::default()
        }
    }

    fn core(id: usize, peers: usize, seed: u64) -> RaftCore {
        RaftCore::new(id, Membership::with_voters(peers), &classic(), seed).expect("valid config")
    }

    fn entry(term: u64, c: u8) -> LogEntry {
        LogEntry::command(term, vec![c])
    }

    /// A core of `peers` with id 0, in `term`, whose log holds entries of the given terms.
    fn core_with_log(peers: usize, term: u64, terms: &[u64]) -> RaftCore {
        let mut core = core(0, peers, 7);
        core.current_term = term;
        for (i, &t) in terms.iter().enumerate() {
            core.log.append(entry(t, i as u8 + 1));
        }
        core
    }

    /// Drains the effects as a shell with an instant disk would: saves and reports the save.
    fn flush(core: &mut RaftCore) -> Ready {
        let ready = core.take_ready();
        if core.take_unsaved().is_some() {
            core.saved();
        }
        ready
    }

    /// Ticks until the core campaigns, then grants it every vote. Clears the ready buffer.
    fn elect(core: &mut RaftCore) {
        for _ in 0..1000 {
            if core.role() == Role::Candidate {
                break;
            }
            core.tick();
        }
        assert_eq!(core.role(), Role::Candidate);
        let term = core.term();
        for peer in core.other_peers() {
            core.handle_request_vote_reply(
                peer,
                RequestVoteReply {
                    term,
                    vote_granted: true,
                    pre_vote: false,
                },
            );
        }
        assert!(core.is_leader());
        flush(core);
    }

    fn appends(ready: &Ready) -> Vec<(usize, AppendEntriesArgs)> {
        ready
            .messages
            .iter()
            .filter_map(|(to, m)| match m {
                Message::AppendEntries(a) => Some((*to, a.clone())),
                _ => None,
            })
            .collect()
    }

    fn ok_reply(term: u64, match_index: u64) -> AppendEntriesReply {
        AppendEntriesReply {
            term,
            success: true,
            match_index,
            conflict_term: None,
            conflict_index: 0,
            read_round: 0,
        }
    }

    fn ae(
        term: u64,
        prev: u64,
        prev_term: u64,
        entries: Vec<LogEntry>,
        commit: u64,
    ) -> AppendEntriesArgs {
        AppendEntriesArgs {
            term,
            leader_id: 1,
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: commit,
            read_round: 0,
        }
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let config = RaftConfig::default();
        assert!(matches!(
            RaftCore::new(3, Membership::with_voters(3), &config, 1),
            Err(RestoreError::InvalidConfig(_))
        ));
        let bad = RaftConfig {
            max_entries_per_append: 0,
            ..config.clone()
        };
        assert!(matches!(
            RaftCore::new(0, Membership::with_voters(3), &bad, 1),
            Err(RestoreError::InvalidConfig(_))
        ));
        assert!(matches!(
            RaftCore::restore(
                5,
                Membership::with_voters(3),
                &config,
                1,
                SavedState::default(),
                Arc::default()
            ),
            Err(RestoreError::InvalidConfig(_))
        ));
    }

    #[test]
    fn follower_campaigns_after_a_seeded_random_timeout() {
        let ticks_to_campaign = |seed| {
            let mut core = core(0, 3, seed);
            let mut ticks = 0;
            while core.role() == Role::Follower {
                core.tick();
                ticks += 1;
            }
            (ticks, core.take_ready(), core.has_unsaved())
        };
        let (ticks, ready, unsaved) = ticks_to_campaign(1);
        assert!(
            (30..60).contains(&ticks),
            "campaigned after {} ticks",
            ticks
        );
        assert!(unsaved, "term and vote must be persisted");
        let votes: Vec<_> = ready.messages.iter().map(|(to, _)| *to).collect();
        assert_eq!(votes, vec![1, 2]);
        assert!(
            matches!(&ready.messages[0].1, Message::RequestVote(a) if a.term == 1 && a.candidate_id == 0)
        );
        assert_eq!(
            ticks_to_campaign(1),
            (ticks, ready, unsaved),
            "same seed, same behaviour"
        );
        let spread: std::collections::BTreeSet<u32> =
            (0..20).map(|s| ticks_to_campaign(s).0).collect();
        assert!(
            spread.len() > 3,
            "timeouts are not randomised: {:?}",
            spread
        );
    }

    #[test]
    fn votes_once_per_term_and_only_for_up_to_date_logs() {
        let mut core = core_with_log(3, 2, &[1, 2]);
        let ask = |term, candidate_id, last_log_index, last_log_term| RequestVoteArgs {
            term,
            candidate_id,
            last_log_index,
            last_log_term,
            pre_vote: false,
            leadership_transfer: false,
        };
        // Stale term.
        assert!(!core.handle_request_vote(1, ask(1, 1, 5, 2)).vote_granted);
        // Log behind: lower last term, or same term and shorter.
        assert!(!core.handle_request_vote(1, ask(3, 1, 9, 1)).vote_granted);
        assert_eq!(
            core.term(),
            3,
            "a higher term is adopted even when the vote is denied"
        );
        assert!(!core.handle_request_vote(1, ask(3, 1, 1, 2)).vote_granted);
        flush(&mut core);
        // Up to date: granted and persisted; repeated requests are idempotent.
        let reply = core.handle_request_vote(1, ask(3, 1, 2, 2));
        assert_eq!(
            reply,
            RequestVoteReply {
                term: 3,
                vote_granted: true,
                pre_vote: false,
            }
        );
        assert!(core.take_unsaved().is_some());
        assert!(core.handle_request_vote(1, ask(3, 1, 2, 2)).vote_granted);
        // Another candidate in the same term is refused.
        assert!(!core.handle_request_vote(2, ask(3, 2, 9, 3)).vote_granted);
        // A new term frees the vote.
        assert!(core.handle_request_vote(2, ask(4, 2, 9, 3)).vote_granted);
        assert_eq!(core.voted_for(), Some(2));
    }

    #[test]
    fn new_leader_announces_itself_and_heartbeats_every_interval() {
        let mut core = core(0, 3, 3);
        for _ in 0..1000 {
            if core.role() == Role::Candidate {
                break;
            }
            core.tick();
        }
        let term = core.term();
        flush(&mut core);
        core.handle_request_vote_reply(
            1,
            RequestVoteReply {
                term: term - 1,
                vote_granted: true,
                pre_vote: false,
            },
        );
        assert!(
            !core.is_leader(),
            "a vote from an older term does not count"
        );
        core.handle_request_vote_reply(
            1,
            RequestVoteReply {
                term,
                vote_granted: true,
                pre_vote: false,
            },
        );
        assert!(core.is_leader());
        let ready = flush(&mut core);
        let sent = appends(&ready);
        assert_eq!(sent.len(), 2, "heartbeat at once to both followers");
        assert!(sent
            .iter()
            .all(|(_, a)| a.entries.is_empty() && a.prev_log_index == 0));
        let mut count = 0;
        for _ in 0..100 {
            core.tick();
            count += appends(&flush(&mut core)).len();
        }
        assert_eq!(count, 20, "2 followers x 10 heartbeats per 100 ticks");
    }

    #[test]
    fn higher_term_in_any_reply_makes_the_leader_step_down() {
        let mut core = core(0, 3, 4);
        elect(&mut core);
        let term = core.term();
        core.handle_append_entries_reply(
            2,
            AppendEntriesReply {
                term: term + 3,
                success: false,
                match_index: 0,
                conflict_term: None,
                conflict_index: 0,
                read_round: 0,
            },
        );
        assert_eq!(
            (core.role(), core.term(), core.voted_for()),
            (Role::Follower, term + 3, None)
        );
        assert!(core.take_unsaved().is_some());
        assert!(core.propose(vec![1]).is_err());
    }

    #[test]
    fn candidate_yields_to_a_leader_of_its_term() {
        let mut core = core(0, 3, 5);
        while core.role() != Role::Candidate {
            core.tick();
        }
        let term = core.term();
        let reply = core.handle_append_entries(1, ae(term, 0, 0, vec![], 0));
        assert!(reply.success);
        assert_eq!((core.role(), core.leader_id()), (Role::Follower, Some(1)));
        // A leader of an older term is rejected with our term.
        let reply = core.handle_append_entries(2, ae(term - 1, 0, 0, vec![], 0));
        assert_eq!((reply.success, reply.term), (false, term));
    }

    #[test]
    fn propose_replicates_at_once_and_commits_on_a_majority() {
        let mut core = core(0, 3, 6);
        elect(&mut core);
        let term = core.term();
        assert_eq!(
            core.propose(b"a".to_vec()),
            Ok(Proposed { index: 1, term }),
            "first command at index 1"
        );
        let ready = core.take_ready();
        assert!(core.take_unsaved().is_some());
        core.saved();
        let sent = appends(&ready);
        assert_eq!(
            sent.len(),
            2,
            "sent to both followers without waiting for a heartbeat"
        );
        assert_eq!(
            sent[0].1.entries,
            vec![LogEntry::command(term, b"a".to_vec())]
        );
        core.handle_append_entries_reply(1, ok_reply(term, 1));
        assert_eq!(core.commit_index(), 1);
        let ready = flush(&mut core);
        assert_eq!(
            ready.apply,
            vec![ApplyMsg::Command {
                index: 1,
                term,
                command: b"a".to_vec()
            }]
        );
        // Follower 1 is now in Replicate: the next proposal goes out alone, once.
        core.propose(b"b".to_vec()).expect("leader");
        let sent = appends(&flush(&mut core));
        let to_1: Vec<_> = sent.iter().filter(|(to, _)| *to == 1).collect();
        assert_eq!(to_1.len(), 1);
        assert_eq!((to_1[0].1.prev_log_index, to_1[0].1.entries.len()), (1, 1));
    }

    #[test]
    fn a_leader_counts_its_own_log_only_once_it_is_durable() {
        let mut leader = core(0, 3, 6);
        elect(&mut leader);
        let term = leader.term();
        leader.propose(b"a".to_vec()).expect("leader");
        leader.take_ready();
        let update = leader.take_unsaved().expect("the entry is to be saved");
        assert_eq!(update.entries.len(), 1);
        // One follower has it, the leader's save is still running: one durable copy of three.
        leader.handle_append_entries_reply(1, ok_reply(term, 1));
        assert_eq!(leader.commit_index(), 0);
        leader.saved();
        assert_eq!(leader.commit_index(), 1, "two durable copies of three");
    }

    #[test]
    fn single_peer_cluster_elects_and_commits_alone() {
        let mut core = core(0, 1, 1);
        for _ in 0..100 {
            core.tick();
        }
        assert!(core.is_leader());
        assert_eq!(core.propose(vec![9]).map(|p| p.index), Ok(1));
        assert_eq!(core.commit_index(), 0, "not before its own log is durable");
        flush(&mut core);
        assert_eq!(core.commit_index(), 1);
        assert_eq!(flush(&mut core).apply.len(), 1);
    }

    #[test]
    fn follower_reports_conflict_term_and_first_index() {
        let mut core = core_with_log(3, 5, &[1, 1, 2, 2, 2]);
        // Log too short.
        let r = core.handle_append_entries(1, ae(5, 9, 4, vec![], 0));
        assert_eq!(
            (r.success, r.conflict_term, r.conflict_index),
            (false, None, 6)
        );
        // Term mismatch at 4 (ours is 2): first index of term 2 is 3.
        let r = core.handle_append_entries(1, ae(5, 4, 3, vec![], 0));
        assert_eq!(
            (r.success, r.conflict_term, r.conflict_index),
            (false, Some(2), 3)
        );
        assert_eq!(core.last_index(), 5, "a rejection changes nothing");
    }

    #[test]
    fn follower_truncates_only_on_a_real_conflict() {
        let mut core = core_with_log(3, 3, &[]);
        let three = vec![entry(3, 1), entry(3, 2), entry(3, 3)];
        let r = core.handle_append_entries(1, ae(3, 0, 0, three.clone(), 0));
        assert_eq!((r.success, r.match_index), (true, 3));
        // A late duplicate of an older, shorter request must not remove entries 2..=3.
        let r = core.handle_append_entries(1, ae(3, 0, 0, three[..1].to_vec(), 0));
        assert_eq!((r.success, r.match_index), (true, 1));
        assert_eq!(core.last_index(), 3);
        // A real conflict at index 2 replaces the tail.
        let r = core.handle_append_entries(1, ae(4, 1, 3, vec![entry(4, 9)], 0));
        assert_eq!((r.success, r.match_index), (true, 2));
        assert_eq!(core.last_index(), 2);
        assert_eq!(core.log.term_at(2), Some(4));
    }

    #[test]
    fn follower_commits_up_to_the_last_entry_it_verified() {
        let mut core = core_with_log(3, 2, &[1, 1, 1, 1]); // uncommitted old tail
        let r = core.handle_append_entries(1, ae(2, 0, 0, vec![entry(1, 1)], 4));
        assert!(r.success);
        // leader_commit is 4, but only index 1 was verified against the leader.
        assert_eq!(core.commit_index(), 1);
        assert_eq!(flush(&mut core).apply.len(), 1);
        let r = core.handle_append_entries(1, ae(2, 1, 1, vec![entry(1, 2), entry(1, 3)], 4));
        assert!(r.success);
        assert_eq!(core.commit_index(), 3);
        assert_eq!(core.last_applied(), 3);
        let applied: Vec<u64> = core
            .take_ready()
            .apply
            .iter()
            .filter_map(|m| match m {
                ApplyMsg::Command { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(applied, vec![2, 3]);
    }

    #[test]
    fn leader_backs_up_a_whole_term_per_rejection() {
        // Leader log terms: 1 1 1 4 4 5 5 6 6 6 ; follower has 1 1 1 2 2 2 3 3 3 3 3.
        let mut leader = core_with_log(2, 6, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
        leader.current_term = 7;
        leader.role = Role::Leader;
        leader.progress = [(1, Progress::new(10)), (2, Progress::new(10))].into();
        let mut follower = core_with_log(2, 6, &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]);
        follower.cfg.id = 1;
        leader.send_append(1, true);
        let mut round_trips = 0;
        loop {
            let ready = flush(&mut leader);
            let Some((_, args)) = appends(&ready).into_iter().next() else {
                break;
            };
            round_trips += 1;
            let reply = follower.handle_append_entries(0, args);
            let done = reply.success;
            leader.handle_append_entries_reply(1, reply);
            if done && leader.progress[&1].match_index == 10 {
                break;
            }
            assert!(round_trips < 10);
        }
        // prev=10 (too short? no: term 3 vs 6) -> back past term 3, past term 2 -> match at 3.
        assert!(round_trips <= 3, "{} round trips", round_trips);
        assert_eq!(follower.last_index(), 10);
        assert_eq!(follower.log.term_at(10), Some(6));
        assert_eq!(leader.progress[&1].state, ProgressState::Replicate);
    }

    #[test]
    fn figure8_only_current_term_entries_commit_by_counting() {
        // The leader of term 4 holds an entry of term 2 at index 2 that is on a majority.
        let mut leader = core_with_log(3, 4, &[1, 2]);
        leader.role = Role::Leader;
        leader.progress = (1..3).map(|p| (p, Progress::new(2))).collect();
        leader.handle_append_entries_reply(1, ok_reply(4, 2));
        assert_eq!(
            leader.commit_index(),
            0,
            "a term-2 entry must not commit by counting in term 4"
        );
        leader.propose(vec![3]).expect("leader");
        flush(&mut leader);
        leader.handle_append_entries_reply(1, ok_reply(4, 3));
        assert_eq!(
            leader.commit_index(),
            3,
            "committing index 3 commits index 2 with it"
        );
        assert_eq!(flush(&mut leader).apply.len(), 3);
    }

    #[test]
    fn a_silent_follower_gets_at_most_the_cap_in_flight_then_one_more_per_answer() {
        let config = RaftConfig {
            max_appends_in_flight: 4,
            ..classic()
        };
        let mut leader = RaftCore::new(0, Membership::with_voters(3), &config, 8).expect("valid");
        elect(&mut leader);
        flush(&mut leader);
        let term = leader.term();
        let appends_to_1 = |ready: &Ready| {
            ready
                .messages
                .iter()
                .filter(|(to, m)| {
                    *to == 1 && matches!(m, Message::AppendEntries(a) if !a.entries.is_empty())
                })
                .count()
        };
        // Ten proposals, each flushed alone: follower 2 answers, follower 1 is silent.
        let mut sent = 0;
        for c in 0..10 {
            leader.propose(vec![c]).expect("leader");
            sent += appends_to_1(&flush(&mut leader));
            leader.handle_append_entries_reply(2, ok_reply(term, leader.last_index()));
        }
        assert_eq!(sent, 4, "four messages in flight to the silent follower");
        assert_eq!(
            leader.commit_index(),
            10,
            "the other follower makes a majority"
        );
        // A heartbeat carries no entries while at the cap.
        for _ in 0..20 {
            leader.tick();
        }
        assert_eq!(appends_to_1(&flush(&mut leader)), 0);
        // Its answer to the first two frees two slots: what waited goes, within the cap.
        leader.handle_append_entries_reply(1, ok_reply(term, 2));
        let ready = flush(&mut leader);
        assert_eq!(appends_to_1(&ready), 1, "one message per answer");
        let Some((_, Message::AppendEntries(next))) =
            ready.messages.iter().find(|(to, _)| *to == 1)
        else {
            panic!("no AppendEntries to follower 1");
        };
        assert_eq!((next.prev_log_index, next.entries.len()), (4, 6));
    }

    #[test]
    fn stale_replies_never_move_match_back_or_reset_progress() {
        let mut leader = core(0, 3, 8);
        elect(&mut leader);
        let term = leader.term();
        for c in 0..5 {
            leader.propose(vec![c]).expect("leader");
        }
        leader.handle_append_entries_reply(1, ok_reply(term, 5));
        flush(&mut leader);
        // Delayed success for an earlier message.
        leader.handle_append_entries_reply(1, ok_reply(term, 2));
        assert_eq!(leader.progress[&1].match_index, 5);
        // Delayed rejection from the election heartbeat (the follower then had nothing).
        leader.handle_append_entries_reply(
            1,
            AppendEntriesReply {
                term,
                success: false,
                match_index: 0,
                conflict_term: None,
                conflict_index: 1,
                read_round: 0,
            },
        );
        assert_eq!(leader.progress[&1].match_index, 5);
        assert_eq!(leader.progress[&1].state, ProgressState::Replicate);
        assert!(flush(&mut leader).messages.is_empty());
        // A reply from an older term is ignored.
        leader.handle_append_entries_reply(2, ok_reply(term - 1, 5));
        assert_eq!(leader.progress[&2].match_index, 0);
    }

    #[test]
    fn dropped_append_is_repaired_one_heartbeat_later() {
        let mut leader = core(0, 2, 9);
        elect(&mut leader);
        let term = leader.term();
        leader.handle_append_entries_reply(1, ok_reply(term, 0));
        leader.propose(vec![1]).expect("leader");
        leader.propose(vec![2]).expect("leader");
        flush(&mut leader); // both AppendEntries are lost
        let mut heartbeat = None;
        for tick in 1..=10 {
            leader.tick();
            if let Some((_, a)) = appends(&flush(&mut leader)).pop() {
                heartbeat = Some((tick, a));
                break;
            }
        }
        let (tick, args) = heartbeat.expect("no heartbeat");
        assert_eq!(tick, 10);
        assert_eq!(
            (args.prev_log_index, args.entries.len()),
            (2, 0),
            "checks the optimistic point"
        );
        // The follower has nothing: it rejects, and the leader resends both entries at once.
        let mut follower = core(1, 2, 1);
        let reply = follower.handle_append_entries(0, args);
        assert_eq!((reply.success, reply.conflict_index), (false, 1));
        leader.handle_append_entries_reply(1, reply);
        let sent = appends(&flush(&mut leader));
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].1.prev_log_index, sent[0].1.entries.len()), (0, 2));
        let reply = follower.handle_append_entries(0, sent[0].1.clone());
        leader.handle_append_entries_reply(1, reply);
        assert_eq!(leader.commit_index(), 2);
        assert_eq!(leader.progress[&1].state, ProgressState::Replicate);
    }

    #[test]
    fn a_heartbeat_repeats_an_unanswered_probe_without_its_entries() {
        let mut leader = core(0, 2, 9);
        elect(&mut leader);
        let term = leader.term();
        for c in 1..=5 {
            leader.propose(vec![c]).expect("leader");
        }
        flush(&mut leader); // the AppendEntries are lost
                            // The follower has nothing: the leader probes from index 1 with all five entries.
        leader.handle_append_entries_reply(
            1,
            AppendEntriesReply {
                term,
                success: false,
                match_index: 0,
                conflict_term: None,
                conflict_index: 1,
                read_round: 0,
            },
        );
        let probe = appends(&flush(&mut leader));
        assert_eq!(
            (probe[0].1.prev_log_index, probe[0].1.entries.len()),
            (0, 5)
        );
        // A heartbeat falls before the probe is answered: same question, no entries.
        for _ in 0..10 {
            leader.tick();
        }
        let heartbeat = appends(&flush(&mut leader));
        assert_eq!(
            (heartbeat[0].1.prev_log_index, heartbeat[0].1.entries.len()),
            (0, 0)
        );
        // The probe's answer, then the heartbeat's: the entries went out once.
        let mut follower = core(1, 2, 1);
        let probe_reply = follower.handle_append_entries(0, probe[0].1.clone());
        let heartbeat_reply = follower.handle_append_entries(0, heartbeat[0].1.clone());
        leader.handle_append_entries_reply(1, probe_reply);
        leader.handle_append_entries_reply(1, heartbeat_reply);
        assert!(appends(&flush(&mut leader)).is_empty());
        assert_eq!(leader.progress[&1].state, ProgressState::Replicate);
        assert_eq!(leader.commit_index(), 5);
    }

    #[test]
    fn duplicate_rejections_do_not_multiply_probes() {
        let mut leader = core_with_log(3, 3, &[1, 1, 1, 1]);
        leader.role = Role::Leader;
        leader.progress = (1..3).map(|p| (p, Progress::new(4))).collect();
        let reject = AppendEntriesReply {
            term: 3,
            success: false,
            match_index: 0,
            conflict_term: None,
            conflict_index: 2,
            read_round: 0,
        };
        leader.handle_append_entries_reply(1, reject.clone());
        assert_eq!(appends(&flush(&mut leader)).len(), 1);
        // The same rejection again (a delayed duplicate, or the answer to a second message
        // sent before the first rejection arrived) must not send another probe.
        leader.handle_append_entries_reply(1, reject);
        assert!(flush(&mut leader).messages.is_empty());
    }

    /// A leader whose 4 entries follower 1 has acknowledged, and what that follower answers
    /// once its log is empty again.
    fn leader_matched_by_one() -> (RaftCore, AppendEntriesReply) {
        let mut leader = core_with_log(3, 3, &[1, 1, 1, 1]);
        leader.role = Role::Leader;
        leader.progress = (1..3).map(|p| (p, Progress::new(4))).collect();
        leader.handle_append_entries_reply(1, ok_reply(3, 4));
        let emptied = AppendEntriesReply {
            term: 3,
            success: false,
            match_index: 0,
            conflict_term: None,
            conflict_index: 1,
            read_round: 0,
        };
        (leader, emptied)
    }

    #[test]
    fn a_follower_that_keeps_denying_what_it_acknowledged_is_reported() {
        let (mut leader, emptied) = leader_matched_by_one();
        let patience = leader.cfg.ticks.election.start;
        // Its answers to heartbeats, one per heartbeat, for an election timeout.
        for _ in 0..=patience / leader.cfg.ticks.heartbeat {
            assert!(leader.followers_lost_data().is_empty());
            leader.handle_append_entries_reply(1, emptied.clone());
            for _ in 0..leader.cfg.ticks.heartbeat {
                leader.tick();
            }
        }
        leader.handle_append_entries_reply(1, emptied);
        assert_eq!(leader.followers_lost_data(), vec![1]);
        // Its progress is left as it was: what it acknowledged is never taken back.
        assert_eq!(leader.match_index()[1], 4);
    }

    #[test]
    fn stale_rejections_below_the_match_are_not_a_loss() {
        let (mut leader, emptied) = leader_matched_by_one();
        let patience = leader.cfg.ticks.election.start;
        // Stale rejections that overtook successes, over a long time, each followed by a
        // success: never reported.
        for round in 0..4 * patience {
            leader.handle_append_entries_reply(1, emptied.clone());
            leader.tick();
            leader.handle_append_entries_reply(1, ok_reply(3, 4));
            assert!(leader.followers_lost_data().is_empty(), "round {round}");
        }
    }

    #[test]
    fn snapshot_compacts_applied_entries_only() {
        let mut leader = core(0, 1, 1);
        for _ in 0..100 {
            leader.tick();
        }
        for c in 0..30u8 {
            leader.propose(vec![c; 20]).expect("leader");
        }
        flush(&mut leader);
        let full = leader.saved_state().encoded_size();
        leader.snapshot(40, vec![1]); // not applied yet
        leader.snapshot(0, vec![1]);
        assert_eq!(leader.snapshot_index(), 0);
        assert!(leader.take_unsaved().is_none());
        leader.snapshot(25, b"snap".to_vec());
        let update = leader.take_unsaved().expect("compaction is saved");
        assert_eq!(update.snapshot.map(|s| s.index), Some(25));
        assert_eq!(leader.snapshot_index(), 25);
        assert_eq!(leader.last_index(), 30);
        assert_eq!(*leader.snapshot_data(), b"snap".to_vec());
        assert!(leader.saved_state().encoded_size() < full / 4);
        leader.snapshot(20, vec![]); // older than the current snapshot
        assert_eq!(leader.snapshot_index(), 25);
    }

    #[test]
    fn leader_sends_install_snapshot_for_compacted_entries() {
        let mut leader = core(0, 3, 10);
        elect(&mut leader);
        let term = leader.term();
        for c in 0..10u8 {
            leader.propose(vec![c]).expect("leader");
        }
        flush(&mut leader); // the entries go out to both followers
        leader.handle_append_entries_reply(1, ok_reply(term, 10));
        leader.snapshot(8, b"eight".to_vec());
        flush(&mut leader);
        // Follower 2 answers the election heartbeat: it has nothing.
        leader.handle_append_entries_reply(
            2,
            AppendEntriesReply {
                term,
                success: false,
                match_index: 0,
                conflict_term: None,
                conflict_index: 1,
                read_round: 0,
            },
        );
        let ready = flush(&mut leader);
        let Some((2, Message::InstallSnapshot(args))) = ready.messages.first() else {
            panic!("expected InstallSnapshot, got {:?}", ready.messages);
        };
        assert_eq!(
            (args.last_included_index, args.last_included_term),
            (8, term)
        );
        assert_eq!(args.data, b"eight".to_vec());
        // The answer resumes replication right after the snapshot.
        leader.handle_install_snapshot_reply(
            2,
            InstallSnapshotReply {
                term,
                last_included_index: 8,
                received: (0, 0),
            },
        );
        assert_eq!(leader.progress[&2].match_index, 8);
        let sent = appends(&flush(&mut leader));
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].1.prev_log_index, sent[0].1.entries.len()), (8, 2));
    }

    fn snap_args(term: u64, index: u64, snap_term: u64) -> InstallSnapshotArgs {
        InstallSnapshotArgs {
            term,
            leader_id: 1,
            last_included_index: index,
            last_included_term: snap_term,
            membership: Membership::with_voters(3),
            offset: 0,
            done: true,
            data: vec![index as u8],
        }
    }

    /// The InstallSnapshot chunks in `ready`, to `peer`.
    fn chunks_to(ready: &Ready, peer: usize) -> Vec<InstallSnapshotArgs> {
        ready
            .messages
            .iter()
            .filter_map(|(to, m)| match m {
                Message::InstallSnapshot(args) if *to == peer => Some(args.clone()),
                _ => None,
            })
            .collect()
    }

    /// A leader of 3 with 4-byte snapshot chunks whose log up to 8 is compacted into `data`
    /// (follower 1 has it all); follower 2 has just refused with an empty log. Returns the
    /// leader and the chunks it sent follower 2.
    fn leader_sending_snapshot(data: &[u8]) -> (RaftCore, Vec<InstallSnapshotArgs>) {
        let mut leader = core(0, 3, 10);
        leader.cfg.ticks.max_bytes = 4;
        elect(&mut leader);
        let term = leader.term();
        for c in 0..10u8 {
            leader.propose(vec![c]).expect("leader");
        }
        flush(&mut leader);
        leader.handle_append_entries_reply(1, ok_reply(term, 10));
        leader.snapshot(8, data.to_vec());
        flush(&mut leader);
        let refused = AppendEntriesReply {
            term,
            success: false,
            match_index: 0,
            conflict_term: None,
            conflict_index: 1,
            read_round: 0,
        };
        leader.handle_append_entries_reply(2, refused);
        let sent = chunks_to(&flush(&mut leader), 2);
        (leader, sent)
    }

    /// Delivers `next` and every following chunk to follower 2 until the last; returns the
    /// follower's answer to the last one (not yet delivered to the leader).
    fn send_until_done(
        leader: &mut RaftCore,
        follower: &mut RaftCore,
        mut next: InstallSnapshotArgs,
    ) -> InstallSnapshotReply {
        loop {
            let reply = follower.handle_install_snapshot(0, next.clone());
            if next.done {
                return reply;
            }
            leader.handle_install_snapshot_reply(2, reply);
            next = chunks_to(&flush(leader), 2).remove(0);
        }
    }

    #[test]
    fn a_snapshot_travels_in_chunks_through_loss_duplication_reordering_and_a_restart() {
        let data = b"0123456789abcdefghij".to_vec(); // five chunks of four bytes
        let (mut leader, mut sent) = leader_sending_snapshot(&data);
        let mut follower = core(2, 3, 11);
        assert_eq!(sent.len(), 1);
        let first = sent.remove(0);
        assert_eq!(
            (first.offset, first.done, &first.data[..]),
            (0, false, &b"0123"[..])
        );
        // Chunk 0 arrives twice; the second copy's answer is the same.
        let reply = follower.handle_install_snapshot(0, first.clone());
        assert_eq!((reply.last_included_index, reply.received), (0, (8, 4)));
        assert_eq!(
            follower.handle_install_snapshot(0, first.clone()).received,
            (8, 4)
        );
        leader.handle_install_snapshot_reply(2, reply);
        let second = chunks_to(&flush(&mut leader), 2).remove(0);
        assert_eq!((second.offset, &second.data[..]), (4, &b"4567"[..]));
        // The second chunk is lost; a heartbeat sends it again.
        for _ in 0..leader.cfg.ticks.heartbeat {
            leader.tick();
        }
        let again = chunks_to(&leader.take_ready(), 2).remove(0);
        assert_eq!(again, second);
        let reply = follower.handle_install_snapshot(0, again);
        leader.handle_install_snapshot_reply(2, reply);
        let third = chunks_to(&flush(&mut leader), 2).remove(0);
        // A chunk from the future (reordered) is answered with where the bytes end.
        let mut early = third.clone();
        early.offset += 4;
        assert_eq!(follower.handle_install_snapshot(0, early).received, (8, 8));
        // The follower restarts: it lost the chunks, and says so.
        let mut follower = core(2, 3, 12);
        let reply = follower.handle_install_snapshot(0, third);
        assert_eq!(reply.received, (8, 0));
        leader.handle_install_snapshot_reply(2, reply);
        let next = chunks_to(&flush(&mut leader), 2).remove(0);
        assert_eq!(next.offset, 0, "the leader starts over");
        let installed = send_until_done(&mut leader, &mut follower, next);
        assert_eq!(installed.last_included_index, 8);
        assert_eq!(*follower.snapshot_data(), data);
        leader.handle_install_snapshot_reply(2, installed);
        assert_eq!(leader.progress[&2].match_index, 8);
    }

    #[test]
    fn a_newer_snapshot_does_not_restart_a_transfer() {
        let (mut leader, mut sent) = leader_sending_snapshot(b"old-snapshot");
        let mut follower = core(2, 3, 11);
        let first = sent.remove(0);
        let reply = follower.handle_install_snapshot(0, first);
        leader.snapshot(10, b"new".to_vec());
        flush(&mut leader);
        leader.handle_install_snapshot_reply(2, reply);
        let next = chunks_to(&flush(&mut leader), 2).remove(0);
        assert_eq!((next.last_included_index, next.offset), (8, 4));
        let installed = send_until_done(&mut leader, &mut follower, next);
        assert_eq!(*follower.snapshot_data(), b"old-snapshot".to_vec());
        leader.handle_install_snapshot_reply(2, installed);
        assert_eq!(leader.progress[&2].match_index, 8);
        // The entries after 8 are compacted too: the newer snapshot follows.
        let newer = chunks_to(&flush(&mut leader), 2).remove(0);
        assert_eq!((newer.last_included_index, newer.offset), (10, 0));
    }

    #[test]
    fn chunks_of_another_leader_or_snapshot_start_over() {
        let mut follower = core(1, 3, 1);
        let chunk = |term, index, offset, data: &[u8], done| InstallSnapshotArgs {
            term,
            leader_id: 0,
            last_included_index: index,
            last_included_term: term,
            membership: Membership::with_voters(3),
            offset,
            done,
            data: data.to_vec(),
        };
        assert_eq!(
            follower
                .handle_install_snapshot(0, chunk(2, 5, 0, b"old", false))
                .received,
            (5, 3)
        );
        // A new leader (term 3) sends its own snapshot: the old bytes are not kept.
        let reply = follower.handle_install_snapshot(2, chunk(3, 5, 3, b"new", false));
        assert_eq!(reply.received, (5, 0));
        follower.handle_install_snapshot(2, chunk(3, 5, 0, b"NEW", false));
        let done = follower.handle_install_snapshot(2, chunk(3, 5, 3, b"!", true));
        assert_eq!(done.last_included_index, 5);
        assert_eq!(*follower.snapshot_data(), b"NEW!".to_vec());
    }

    #[test]
    fn rejected_install_snapshot_acknowledges_nothing() {
        // Leader 0 sent a snapshot in term 2, lost and regained leadership (term 4); follower 1,
        // now in term 4, rejects the late request with *our* current term.
        let mut follower = core_with_log(3, 4, &[1]);
        follower.cfg.id = 1;
        let reply = follower.handle_install_snapshot(0, snap_args(2, 9, 2));
        assert_eq!(
            reply,
            InstallSnapshotReply {
                term: 4,
                last_included_index: 0,
                received: (0, 0),
            }
        );
        let mut leader = core_with_log(3, 4, &[1, 2, 2, 2, 2, 2, 2, 2, 2, 4]);
        leader.role = Role::Leader;
        leader.progress = (1..3).map(|p| (p, Progress::new(10))).collect();
        leader.handle_install_snapshot_reply(1, reply);
        assert_eq!(leader.progress[&1].match_index, 0);
        // Likewise a rejected AppendEntries of an older term.
        let reply = follower.handle_append_entries(0, ae(3, 0, 0, vec![], 0));
        assert!(!reply.success);
        leader.handle_append_entries_reply(1, reply);
        assert_eq!(leader.progress[&1].match_index, 0);
        assert_eq!(leader.progress[&1].state, ProgressState::Replicate);
    }

    #[test]
    fn install_snapshot_keeps_a_matching_suffix() {
        let mut core = core_with_log(3, 2, &[1, 1, 2, 2, 2]);
        let reply = core.handle_install_snapshot(1, snap_args(2, 3, 2));
        assert_eq!(
            reply,
            InstallSnapshotReply {
                term: 2,
                last_included_index: 3,
                received: (0, 0),
            }
        );
        assert_eq!((core.snapshot_index(), core.last_index()), (3, 5));
        assert_eq!((core.commit_index(), core.last_applied()), (3, 3));
        let ready = core.take_ready();
        assert!(core.has_unsaved());
        assert_eq!(
            ready.apply,
            vec![ApplyMsg::Snapshot {
                index: 3,
                term: 2,
                data: Arc::new(vec![3])
            }]
        );
    }

    #[test]
    fn install_snapshot_drops_a_conflicting_log() {
        let mut core = core_with_log(3, 3, &[1, 1, 2]);
        core.handle_install_snapshot(1, snap_args(3, 2, 3));
        assert_eq!(
            (
                core.snapshot_index(),
                core.last_index(),
                core.log.last_term()
            ),
            (2, 2, 3)
        );
        let mut core = core_with_log(3, 3, &[1]);
        core.handle_install_snapshot(1, snap_args(3, 9, 3));
        assert_eq!((core.snapshot_index(), core.last_index()), (9, 9));
    }

    #[test]
    fn install_snapshot_not_past_commit_is_ignored() {
        let mut core = core_with_log(3, 2, &[]);
        core.handle_append_entries(1, ae(2, 0, 0, vec![entry(2, 1), entry(2, 2)], 2));
        flush(&mut core);
        let reply = core.handle_install_snapshot(1, snap_args(2, 2, 2));
        assert_eq!(reply.last_included_index, 2);
        assert_eq!(core.snapshot_index(), 0);
        assert!(flush(&mut core).apply.is_empty());
    }

    #[test]
    fn restore_round_trips_state_and_snapshot() {
        let mut core = core_with_log(3, 4, &[1, 2, 2, 4]);
        core.voted_for = Some(2);
        core.commit_index = 4;
        core.last_applied = 4;
        core.snapshot(2, b"two".to_vec());
        let state = core.saved_state();
        let back = RaftCore::restore(
            0,
            Membership::with_voters(3),
            &RaftConfig::default(),
            1,
            state,
            core.snapshot_data(),
        )
        .expect("restore");
        assert_eq!(
            (back.term(), back.voted_for(), back.role()),
            (4, Some(2), Role::Follower)
        );
        assert_eq!((back.snapshot_index(), back.last_index()), (2, 4));
        assert_eq!((back.commit_index(), back.last_applied()), (2, 2));
        assert_eq!(back.saved_state(), core.saved_state());
        assert_eq!(*back.snapshot_data(), b"two".to_vec());
        let mut back = back;
        let ready = back.take_ready();
        assert!(
            ready.apply.is_empty() && !back.has_unsaved(),
            "restore emits no ApplyMsg::Snapshot and saves nothing"
        );
        let role = ready
            .role_changed
            .expect("the first Ready reports the role");
        assert_eq!(
            (role.term, role.role, role.leader),
            (4, Role::Follower, None)
        );
        assert!(back.take_ready().is_empty(), "and reports it once");
    }

    #[test]
    fn restore_from_empty_state_is_a_fresh_peer() {
        let core = RaftCore::restore(
            1,
            Membership::with_voters(3),
            &RaftConfig::default(),
            1,
            SavedState::default(),
            Arc::default(),
        )
        .expect("fresh");
        assert_eq!(
            (core.term(), core.last_index(), core.voted_for()),
            (0, 0, None)
        );
    }

    #[test]
    fn inconsistent_state_is_a_clear_error() {
        // (A vote for a peer that is no member is not inconsistent: the peer may have been
        // removed since.) The log's terms go backwards.
        let bad = core_with_log(3, 4, &[3, 1]);
        let err = RaftCore::restore(
            0,
            Membership::with_voters(3),
            &RaftConfig::default(),
            1,
            bad.saved_state(),
            Arc::default(),
        )
        .expect_err("decreasing terms");
        assert!(matches!(err, RestoreError::Invalid(_)));
        assert!(err.to_string().contains("inconsistent"));
    }

    // ---- pre-vote, check-quorum, ReadIndex, leadership transfer --------------------------

    fn modern(id: usize, peers: usize, seed: u64) -> RaftCore {
        RaftCore::new(
            id,
            Membership::with_voters(peers),
            &RaftConfig::default(),
            seed,
        )
        .expect("valid config")
    }

    /// Ticks until `core` asks for (pre-)votes and returns the requests.
    fn time_out(core: &mut RaftCore) -> Vec<RequestVoteArgs> {
        for _ in 0..1000 {
            core.tick();
            let asks: Vec<RequestVoteArgs> = flush(core)
                .messages
                .into_iter()
                .filter_map(|(_, m)| match m {
                    Message::RequestVote(a) => Some(a),
                    _ => None,
                })
                .collect();
            if !asks.is_empty() {
                return asks;
            }
        }
        panic!("never timed out");
    }

    fn grant(term: u64, pre_vote: bool) -> RequestVoteReply {
        RequestVoteReply {
            term,
            vote_granted: true,
            pre_vote,
        }
    }

    /// A peer of `peers` elected with pre-vote (flushed).
    fn modern_leader(peers: usize, seed: u64) -> RaftCore {
        let mut leader = modern(0, peers, seed);
        time_out(&mut leader);
        for p in 1..peers {
            leader.handle_request_vote_reply(p, grant(1, true));
        }
        for p in 1..peers {
            leader.handle_request_vote_reply(p, grant(1, false));
        }
        assert!(leader.is_leader());
        flush(&mut leader);
        leader
    }

    #[test]
    fn a_pre_candidate_keeps_its_term_until_a_majority_would_vote() {
        let mut core = modern(0, 3, 3);
        let asks = time_out(&mut core);
        assert_eq!((core.role(), core.term()), (Role::PreCandidate, 0));
        assert!(asks.iter().all(|a| a.pre_vote && a.term == 1));
        assert!(!core.has_unsaved(), "a pre-vote saves nothing");
        core.handle_request_vote_reply(1, grant(1, true));
        assert_eq!((core.role(), core.term()), (Role::Candidate, 1));
        let asks: Vec<_> = appends_or_votes(&flush(&mut core));
        assert!(asks.iter().all(|a| !a.pre_vote && a.term == 1));
    }

    fn appends_or_votes(ready: &Ready) -> Vec<RequestVoteArgs> {
        ready
            .messages
            .iter()
            .filter_map(|(_, m)| match m {
                Message::RequestVote(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_late_pre_vote_grant_starts_nothing() {
        let mut core = modern(0, 3, 4);
        time_out(&mut core);
        // A leader of term 1 shows up: the pre-campaign is over.
        core.handle_append_entries(2, ae(1, 0, 0, vec![], 0));
        assert_eq!((core.role(), core.term()), (Role::Follower, 1));
        core.handle_request_vote_reply(1, grant(1, true));
        assert_eq!((core.role(), core.term()), (Role::Follower, 1));
        // A grant for an earlier round's term does not count in a later round either.
        time_out(&mut core);
        core.handle_request_vote_reply(1, grant(1, true));
        assert_eq!((core.role(), core.term()), (Role::PreCandidate, 1));
    }

    #[test]
    fn a_follower_that_hears_its_leader_refuses_other_candidates() {
        let mut follower = modern(1, 3, 5);
        follower.handle_append_entries(0, ae(2, 0, 0, vec![], 0));
        let ask = |term, pre_vote, leadership_transfer| RequestVoteArgs {
            term,
            candidate_id: 2,
            last_log_index: 0,
            last_log_term: 0,
            pre_vote,
            leadership_transfer,
        };
        let reply = follower.handle_request_vote(2, ask(3, true, false));
        assert_eq!((reply.vote_granted, reply.term), (false, 2));
        let reply = follower.handle_request_vote(2, ask(3, false, false));
        assert!(!reply.vote_granted);
        assert_eq!(follower.term(), 2, "the candidate's term is not adopted");
        // The leader handed over: the vote is granted.
        assert!(
            follower
                .handle_request_vote(2, ask(3, false, true))
                .vote_granted
        );
        assert_eq!(follower.term(), 3);
        // Once the leader is silent for an election timeout, a pre-vote is granted.
        let mut follower = modern(1, 3, 5);
        follower.handle_append_entries(0, ae(2, 0, 0, vec![], 0));
        for _ in 0..30 {
            follower.tick();
        }
        let reply = follower.handle_request_vote(2, ask(3, true, false));
        assert_eq!((reply.vote_granted, reply.term), (true, 3));
        assert_eq!(follower.term(), 2, "a pre-vote changes nothing");
    }

    #[test]
    fn a_leader_that_hears_no_majority_steps_down() {
        let mut leader = modern_leader(3, 6);
        let term = leader.term();
        for _ in 0..29 {
            leader.tick();
        }
        leader.handle_append_entries_reply(1, ok_reply(term, 0));
        leader.tick(); // the check: peer 1 answered
        assert!(leader.is_leader());
        for _ in 0..30 {
            leader.tick();
        }
        assert_eq!(
            leader.role(),
            Role::Follower,
            "nobody answered for 30 ticks"
        );
        assert_eq!(leader.term(), term);
    }

    #[test]
    fn a_read_waits_for_an_entry_of_the_term_and_a_majority_round() {
        let mut leader = modern_leader(3, 7);
        let term = leader.term();
        leader.read_index(41).expect("leader");
        assert!(
            flush(&mut leader).reads.is_empty(),
            "nothing of term {term} committed"
        );
        leader.propose(b"noop".to_vec()).expect("leader");
        flush(&mut leader);
        leader.handle_append_entries_reply(1, ok_reply(term, 1));
        assert_eq!(leader.commit_index(), 1);
        // The next flush starts a round for the read: a heartbeat to each follower.
        let ready = flush(&mut leader);
        let sent = appends(&ready);
        assert_eq!(sent.len(), 2);
        let round = sent[0].1.read_round;
        assert!(round > 0 && ready.reads.is_empty());
        let mut reply = ok_reply(term, 1);
        reply.read_round = round;
        leader.handle_append_entries_reply(2, reply);
        assert_eq!(flush(&mut leader).reads, vec![(41, Ok(1))]);
    }

    #[test]
    fn stepping_down_fails_the_reads_in_flight() {
        let mut leader = modern_leader(3, 8);
        let term = leader.term();
        leader.propose(b"noop".to_vec()).expect("leader");
        flush(&mut leader);
        leader.handle_append_entries_reply(1, ok_reply(term, 1));
        leader.read_index(7).expect("leader");
        flush(&mut leader);
        leader.handle_append_entries_reply(1, ok_reply(term + 1, 0)); // a later term
        let reads = flush(&mut leader).reads;
        assert_eq!(reads.len(), 1);
        assert!(reads[0].1.is_err());
        assert!(leader.read_index(8).is_err());
    }

    #[test]
    fn a_lease_answers_reads_without_a_round() {
        let config = RaftConfig {
            lease_reads: true,
            ..RaftConfig::default()
        };
        let mut leader = RaftCore::new(0, Membership::with_voters(3), &config, 9).expect("valid");
        time_out(&mut leader);
        leader.handle_request_vote_reply(1, grant(1, true));
        leader.handle_request_vote_reply(1, grant(1, false));
        flush(&mut leader);
        leader.propose(b"noop".to_vec()).expect("leader");
        flush(&mut leader);
        leader.handle_append_entries_reply(1, ok_reply(1, 1));
        // No lease yet: the first read takes a round, whose answer starts the lease.
        leader.read_index(1).expect("leader");
        let round = appends(&flush(&mut leader))[0].1.read_round;
        let mut reply = ok_reply(1, 1);
        reply.read_round = round;
        leader.handle_append_entries_reply(1, reply);
        assert_eq!(flush(&mut leader).reads, vec![(1, Ok(1))]);
        leader.read_index(2).expect("leader");
        let ready = flush(&mut leader);
        assert_eq!(ready.reads, vec![(2, Ok(1))], "within the lease");
        assert!(appends(&ready).is_empty(), "and without a round");
        for _ in 0..27 {
            leader.tick();
        }
        flush(&mut leader);
        leader.read_index(3).expect("leader");
        assert!(flush(&mut leader).reads.is_empty(), "the lease ran out");
    }

    #[test]
    fn a_transfer_brings_the_target_up_to_date_then_hands_over() {
        let mut leader = modern_leader(3, 10);
        let term = leader.term();
        leader.propose(b"a".to_vec()).expect("leader");
        flush(&mut leader);
        leader.transfer_leadership(2).expect("leader");
        assert!(
            leader.propose(b"b".to_vec()).is_err(),
            "no proposals while handing over"
        );
        assert!(!flush(&mut leader)
            .messages
            .iter()
            .any(|(_, m)| matches!(m, Message::TimeoutNow(_))));
        leader.handle_append_entries_reply(2, ok_reply(term, 1));
        let told: Vec<_> = flush(&mut leader)
            .messages
            .into_iter()
            .filter(|(to, m)| *to == 2 && matches!(m, Message::TimeoutNow(_)))
            .collect();
        assert_eq!(told.len(), 1);
        // The target campaigns at once, and voters that hear the old leader vote anyway.
        let mut target = modern(2, 3, 11);
        let mut append = ae(term, 0, 0, vec![entry(term, 1)], 0);
        append.leader_id = 0;
        target.handle_append_entries(0, append);
        flush(&mut target);
        let Message::TimeoutNow(args) = told[0].1.clone() else {
            unreachable!()
        };
        target.handle_timeout_now(0, args);
        let asks = appends_or_votes(&flush(&mut target));
        assert!(asks.iter().all(|a| a.leadership_transfer && !a.pre_vote));
        assert_eq!((target.role(), target.term()), (Role::Candidate, term + 1));
    }

    #[test]
    fn a_leader_reports_how_far_each_follower_matches() {
        let mut leader = modern_leader(3, 12);
        let term = leader.term();
        assert_eq!(leader.match_index(), vec![0, 0, 0]);
        leader.propose(b"a".to_vec()).expect("leader");
        leader.propose(b"b".to_vec()).expect("leader");
        flush(&mut leader);
        leader.handle_append_entries_reply(1, ok_reply(term, 1));
        leader.handle_append_entries_reply(2, ok_reply(term, 2));
        assert_eq!(leader.match_index(), vec![2, 1, 2]);
        // A follower knows nothing of the others.
        let mut follower = modern(2, 3, 13);
        follower.handle_append_entries(1, ae(term, 0, 0, vec![], 0));
        assert!(follower.match_index().is_empty());
    }

    #[test]
    fn saved_state_stays_small_after_compaction() {
        // The 3D tests: snapshots every 10 entries of small commands, state < 2000 bytes.
        let mut core = core(0, 1, 1);
        for _ in 0..100 {
            core.tick();
        }
        for i in 1..=200u64 {
            core.propose(i.to_le_bytes().to_vec()).expect("leader");
            flush(&mut core);
            if i % 10 == 0 {
                core.snapshot(i, vec![0; 64]);
            }
        }
        let size = core.saved_state().encoded_size();
        assert!(size < 100, "{size} bytes");
    }
}
