//! Raft's wire types: the three RPCs of the Raft paper (Figure 2 and Figure 13) and their replies.
//!
//! Field names follow the paper so the figure can be laid beside the code. Replies carry enough
//! for the leader to act without remembering the request it answers: a successful AppendEntries
//! reply says how far the follower's log now matches, a failed one says where the conflict is,
//! and an InstallSnapshot reply names the snapshot it answers. That keeps the leader correct when
//! replies are delayed, duplicated or reordered by the network.

use std::collections::BTreeMap;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::messages::net::Rpc;

/// One entry of the replicated log: the term in which a leader received it and either the
/// service's opaque command or a new cluster membership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Term of the leader that first appended this entry.
    pub term: u64,
    /// The service's command, opaque to Raft (empty in a membership entry).
    #[serde(with = "serde_bytes")]
    pub command: Vec<u8>,
    /// A membership entry: the cluster's members from this entry on (Raft thesis §4.1: a
    /// peer uses the latest membership in its log, committed or not). Absent from the encoding
    /// of a command entry, so logs written before membership change decode unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
}

impl LogEntry {
    /// An entry carrying the service's `command`.
    pub fn command(term: u64, command: Vec<u8>) -> Self {
        LogEntry {
            term,
            command,
            membership: None,
        }
    }
}

/// Who is in the cluster (Raft thesis chapter 4). Voters elect leaders and count towards
/// commits; learners receive the log and snapshots but do neither. Each member carries its
/// *contact*: how the deployment reaches it (its addresses), empty in a simulation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Voting members, by id.
    pub voters: BTreeMap<usize, String>,
    /// Non-voting members, by id.
    pub learners: BTreeMap<usize, String>,
}

/// One change of membership: the cluster changes one server at a time (thesis §4.1), so any
/// majority of the old voters overlaps any majority of the new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// A new non-voting member, reached through `contact`.
    AddLearner {
        /// Its id, not yet a member.
        id: usize,
        /// How the deployment reaches it.
        contact: String,
    },
    /// A learner becomes a voter.
    Promote(usize),
    /// A member (voter or learner) leaves.
    Remove(usize),
}

/// RequestVote RPC arguments, sent by a candidate to gather votes, or by a pre-candidate to
/// ask whether it could win (a pre-vote, Raft thesis §9.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestVoteArgs {
    /// The candidate's term; for a pre-vote, the term it would campaign in (its own + 1).
    pub term: u64,
    /// The candidate requesting the vote.
    pub candidate_id: usize,
    /// Index of the candidate's last log entry.
    pub last_log_index: u64,
    /// Term of the candidate's last log entry.
    pub last_log_term: u64,
    /// A pre-vote: the voter changes nothing (term, vote, timer), it only says whether it
    /// would grant the vote.
    pub pre_vote: bool,
    /// The candidate campaigns because the leader handed it leadership (TimeoutNow): voters
    /// that still hear from that leader vote anyway.
    pub leadership_transfer: bool,
}

/// RequestVote RPC reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestVoteReply {
    /// The voter's current term, for the candidate to update itself; for a granted pre-vote,
    /// the term asked about.
    pub term: u64,
    /// True means the candidate received this vote.
    pub vote_granted: bool,
    /// It answers a pre-vote.
    pub pre_vote: bool,
}

/// AppendEntries RPC arguments: replicates log entries, and doubles as the heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppendEntriesArgs {
    /// The leader's term.
    pub term: u64,
    /// The leader, so followers can redirect clients.
    pub leader_id: usize,
    /// Index of the log entry immediately preceding the new ones.
    pub prev_log_index: u64,
    /// Term of the entry at `prev_log_index`.
    pub prev_log_term: u64,
    /// Entries to store (empty for a heartbeat).
    pub entries: Vec<LogEntry>,
    /// The leader's commit index.
    pub leader_commit: u64,
    /// The latest ReadIndex round the leader has started (0: none); echoed in the reply, which
    /// thereby confirms the leader's leadership for the reads of that round.
    pub read_round: u64,
}

/// AppendEntries RPC reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppendEntriesReply {
    /// The follower's current term, for the leader to update itself.
    pub term: u64,
    /// True if the follower contained an entry matching `prev_log_index` and `prev_log_term`.
    pub success: bool,
    /// On success: the index up to which the follower's log now matches the leader's
    /// (`prev_log_index + entries.len()`). Zero on failure.
    pub match_index: u64,
    /// On failure because of a term mismatch: the term of the follower's entry at
    /// `prev_log_index`. `None` when the follower's log is too short.
    pub conflict_term: Option<u64>,
    /// On failure: the first index of `conflict_term` in the follower's log, or the follower's
    /// last index + 1 when its log is too short. The leader resumes from there. 0 when the
    /// request was rejected for its stale term (no information about the log).
    pub conflict_index: u64,
    /// The `read_round` of the request this reply answers.
    pub read_round: u64,
}

/// InstallSnapshot RPC arguments (Figure 13): one chunk of the snapshot, at `offset`, the last
/// one with `done`. Chunks are at most `max_bytes_per_append` long, so a snapshot of any size
/// travels in frames of a bounded size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallSnapshotArgs {
    /// The leader's term.
    pub term: u64,
    /// The leader, so followers can redirect clients.
    pub leader_id: usize,
    /// The snapshot replaces all entries up through and including this index.
    pub last_included_index: u64,
    /// Term of the entry at `last_included_index`.
    pub last_included_term: u64,
    /// The membership at `last_included_index`: the snapshot replaces the entries that set it.
    pub membership: Membership,
    /// Where this chunk starts in the snapshot, in bytes.
    pub offset: u64,
    /// This is the last chunk.
    pub done: bool,
    /// The chunk: the snapshot's bytes from `offset`.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// InstallSnapshot RPC reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallSnapshotReply {
    /// The follower's current term, for the leader to update itself.
    pub term: u64,
    /// The `last_included_index` of the snapshot this reply answers: the follower's log now
    /// matches the leader's at least up to here (it installed the snapshot, or had already
    /// committed past it). 0 if the request was rejected for its stale term, so that a leader
    /// re-elected in the follower's current term never mistakes the answer to its older request
    /// for an acknowledgement. Also 0 while the snapshot is still arriving.
    pub last_included_index: u64,
    /// While the snapshot is arriving: the `last_included_index` of the snapshot the
    /// follower is receiving (0: none) and how many of its bytes it holds, which is where the
    /// leader's next chunk must start.
    pub received: (u64, u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = rmp_serde::to_vec(&value).expect("encode");
        let back: T = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(value, back);
    }

    #[test]
    fn every_message_round_trips_through_rmp_serde() {
        let entries = vec![
            LogEntry::command(1, b"put x 1".to_vec()),
            LogEntry::command(3, vec![]),
        ];
        round_trip(entries[0].clone());
        round_trip(RequestVoteArgs {
            term: 4,
            candidate_id: 2,
            last_log_index: 9,
            last_log_term: 3,
            pre_vote: true,
            leadership_transfer: false,
        });
        round_trip(RequestVoteReply {
            term: 4,
            vote_granted: true,
            pre_vote: true,
        });
        round_trip(AppendEntriesArgs {
            term: 4,
            leader_id: 1,
            prev_log_index: 7,
            prev_log_term: 2,
            entries,
            leader_commit: 6,
            read_round: 3,
        });
        round_trip(AppendEntriesReply {
            term: 4,
            success: false,
            match_index: 0,
            conflict_term: Some(2),
            conflict_index: 5,
            read_round: 3,
        });
        round_trip(AppendEntriesReply {
            term: 4,
            success: true,
            match_index: 9,
            conflict_term: None,
            conflict_index: 0,
            read_round: 0,
        });
        round_trip(TimeoutNowArgs {
            term: 5,
            leader_id: 1,
        });
        round_trip(TimeoutNowReply { term: 5 });
        round_trip(InstallSnapshotArgs {
            term: 5,
            leader_id: 0,
            last_included_index: 20,
            last_included_term: 4,
            membership: Membership::with_voters(3),
            offset: 1 << 20,
            done: true,
            data: vec![1, 2, 3],
        });
        round_trip(InstallSnapshotReply {
            term: 5,
            last_included_index: 20,
            received: (0, 0),
        });
    }

    #[test]
    fn commands_are_encoded_as_msgpack_bin_not_arrays() {
        // serde_bytes keeps a 100-byte command at ~100 bytes instead of up to 200.
        let entry = LogEntry::command(1, vec![0xff; 100]);
        let bytes = rmp_serde::to_vec(&entry).expect("encode");
        assert!(bytes.len() < 110, "encoded {} bytes", bytes.len());
    }
}

impl Rpc for RequestVoteArgs {
    const METHOD: &'static str = "Raft.RequestVote";
    type Reply = RequestVoteReply;
}

impl Rpc for AppendEntriesArgs {
    const METHOD: &'static str = "Raft.AppendEntries";
    type Reply = AppendEntriesReply;

    fn payload_len(&self) -> usize {
        // Each entry also carries its term and the framing of its command.
        const PER_ENTRY: usize = 16;
        self.entries
            .iter()
            .map(|e| e.command.len() + PER_ENTRY)
            .sum()
    }
}

/// TimeoutNow RPC arguments (Raft thesis §3.10): the leader hands leadership to this peer,
/// whose log it has brought up to date: start an election at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeoutNowArgs {
    /// The leader's term.
    pub term: u64,
    /// The leader handing over.
    pub leader_id: usize,
}

/// TimeoutNow RPC reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeoutNowReply {
    /// The receiver's current term.
    pub term: u64,
}

impl Rpc for TimeoutNowArgs {
    const METHOD: &'static str = "Raft.TimeoutNow";
    type Reply = TimeoutNowReply;
}

impl Rpc for InstallSnapshotArgs {
    const METHOD: &'static str = "Raft.InstallSnapshot";
    type Reply = InstallSnapshotReply;

    fn payload_len(&self) -> usize {
        self.data.len()
    }
}

// The local API of a peer: 6.5840's `Start` (here [`Propose`]), `GetState` and `Snapshot`;
// its `Kill` is [`crate::messages::lifecycle::Stop`]. Role changes are pushed to subscribers.

/// Asks the peer to append a command to its log: answered at once, without waiting for
/// agreement (6.5840's `Start`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Proposed, NotLeader>")]
pub struct Propose(pub Vec<u8>);

/// Where a proposed command will sit if it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposed {
    /// Its log index.
    pub index: u64,
    /// The term it was proposed in: it commits at `index` only if the entry there still has
    /// this term.
    pub term: u64,
}

/// The peer is not the leader, so it did not take the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotLeader {
    /// The peer's current term.
    pub term: u64,
    /// The leader of that term, if the peer knows it (a hint for redirecting).
    pub leader: Option<usize>,
}

/// Asks for the peer's term, role and progress (6.5840's `GetState`, plus progress figures).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "RaftState")]
pub struct GetState;

/// A peer's view of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftState {
    /// Current term.
    pub term: u64,
    /// Its role in the current term (follower, candidate or leader).
    pub role: Role,
    /// The leader of the current term, if known.
    pub leader: Option<usize>,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index handed to the applier.
    pub last_applied: u64,
    /// Index of its last log entry (counting compacted ones).
    pub last_index: u64,
    /// Index of the last entry its snapshot covers (0 if none).
    pub snapshot_index: u64,
    /// Size of that snapshot, in bytes.
    pub snapshot_bytes: u64,
    /// A leader's `match_index` (Figure 2): for each peer, the highest log index known to be
    /// replicated on it; its own entry is its last log index. Empty unless it leads.
    pub match_index: Vec<u64>,
    /// The latest membership in its log (committed or not).
    pub membership: Membership,
}

impl RaftState {
    /// Whether the peer believes it leads the current term.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
}

/// A peer's term, role or known leader changed: sent to every subscriber, so no actor ever
/// has to ask "am I leader?" on a timer.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct RoleChanged {
    /// The current term.
    pub term: u64,
    /// The role in that term.
    pub role: Role,
    /// The leader of that term, if known.
    pub leader: Option<usize>,
}

impl RoleChanged {
    /// Whether the peer leads `term`.
    pub fn leads(&self, term: u64) -> bool {
        self.role == Role::Leader && self.term == term
    }
}

/// Subscribes to a peer's [`RoleChanged`] messages; the current state is sent at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeRoles(pub Recipient<RoleChanged>);

/// The service has applied everything up to `index` and `data` is its state there: Raft may
/// discard the log up to it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Snapshot {
    /// Last index the snapshot covers.
    pub index: u64,
    /// The service's encoded state.
    pub data: Vec<u8>,
}

/// The role a peer plays in its current term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election, without raising its term (pre-vote).
    PreCandidate,
    /// Campaigns for votes.
    Candidate,
    /// Leads its term.
    Leader,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        };
        f.pad(name)
    }
}

/// The reply to one of a peer's own calls, sent back to the peer by the task that made it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) enum PeerReply {
    Vote(usize, RequestVoteReply),
    Append(usize, AppendEntriesReply),
    Snapshot(usize, InstallSnapshotReply),
    TimeoutNow(usize, TimeoutNowReply),
}

/// Asks the leader for a read index (Raft thesis §6.4): answered once the leader has confirmed
/// its leadership after the request arrived, with its commit index at that point. A read that
/// waits until its state machine has applied that index is linearizable.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<u64, NotLeader>")]
pub struct ReadIndex;

/// Asks the leader to hand leadership to peer `to` (Raft thesis §3.10): it brings `to` up to
/// date, stops taking proposals meanwhile, and tells it to campaign at once.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), TransferError>")]
pub struct TransferLeadership {
    /// The peer to take over.
    pub to: usize,
}

/// Why a leadership transfer was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferError {
    /// This peer is not the leader.
    NotLeader(NotLeader),
    /// `to` is not another peer of the cluster.
    NoSuchPeer(usize),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::NotLeader(n) => {
                write!(f, "not the leader (term {}, leader {:?})", n.term, n.leader)
            }
            TransferError::NoSuchPeer(to) => write!(f, "no other peer {to}"),
        }
    }
}

impl std::error::Error for TransferError {}

impl std::fmt::Display for MembershipChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipChange::AddLearner { id, contact } if contact.is_empty() => {
                write!(f, "add learner {id}")
            }
            MembershipChange::AddLearner { id, contact } => {
                write!(f, "add learner {id} ({contact})")
            }
            MembershipChange::Promote(id) => write!(f, "promote {id}"),
            MembershipChange::Remove(id) => write!(f, "remove {id}"),
        }
    }
}

/// Asks the leader to change the cluster's membership by one server (Raft thesis §4.1):
/// answered once the change is committed, with the index of its entry.
///
/// The leader takes one change at a time, and only once an entry of its own term is committed
/// (the fix to the single-server change bug of 2015): before that it commits a membership
/// entry that restates the current members, then the change.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<u64, MembershipError>")]
pub struct ChangeMembership(pub MembershipChange);

/// Why a membership change was refused or did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipError {
    /// This peer is not the leader (or stopped leading before the change committed: it may
    /// still commit under the next leader).
    NotLeader(NotLeader),
    /// Another change is in flight.
    Busy,
    /// The change does not apply to the current members (an unknown id, an existing one, the
    /// last voter, ...); the reason says which.
    Invalid(String),
    /// The learner to promote is too far behind the leader's log.
    Lagging {
        /// The learner's last replicated index as the leader knows it.
        matched: u64,
        /// The leader's last index.
        last: u64,
    },
}

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipError::NotLeader(n) => write!(
                f,
                "not the leader (term {}, leader {:?}); a change already proposed may still commit",
                n.term, n.leader
            ),
            MembershipError::Busy => write!(f, "another membership change is in progress"),
            MembershipError::Invalid(why) => write!(f, "invalid change: {why}"),
            MembershipError::Lagging { matched, last } => write!(
                f,
                "the learner has {matched} of the leader's {last} entries; promote it once it has caught up"
            ),
        }
    }
}

impl std::error::Error for MembershipError {}
