//! What Raft hands to the service above it: committed commands and installed snapshots, in
//! index order, each exactly once (6.5840's `ApplyMsg`), or the news that Raft has halted.

use std::sync::Arc;

use actix::prelude::*;

use crate::messages::raft::Membership;

/// One committed command, one snapshot to install, or the end.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub enum ApplyMsg {
    /// A committed log entry.
    Command {
        /// Its log index (the first command has index 1).
        index: u64,
        /// The term it was created in.
        term: u64,
        /// The service's encoded command.
        command: Vec<u8>,
    },
    /// A committed membership entry (see [`crate::messages::raft::ChangeMembership`]): it has
    /// no command, but it takes its index, so the service counts it as applied.
    Membership {
        /// Its log index.
        index: u64,
        /// The term it was created in.
        term: u64,
        /// The cluster's members from this index on.
        membership: Membership,
    },
    /// A snapshot received from the leader: the service replaces its state with it.
    Snapshot {
        /// The last log index the snapshot covers.
        index: u64,
        /// The term of that entry.
        term: u64,
        /// The service's encoded state.
        data: Arc<Vec<u8>>,
    },
    /// Raft has stopped for good because an invariant broke or its state could not be saved;
    /// nothing more follows. The service must stop serving too.
    Halted {
        /// Which kind of failure it was.
        cause: HaltCause,
        /// What broke.
        reason: String,
    },
}

/// Why a replica stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltCause {
    /// Its disk failed: a save returned an error (no space, an I/O error, a failed fsync), so
    /// nothing after it may be acknowledged. A process running the replica should exit, so that
    /// whoever supervises it sees the failure; a restart recovers from what is on disk.
    Storage,
    /// It met something it cannot trust: a broken Raft invariant, a gap in the committed
    /// indexes, a log entry or snapshot that does not decode. A restart would meet it again.
    Untrusted,
}

/// Committed entries and snapshots from a Raft peer to its applier, in the order Raft produced
/// them.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct ApplyBatch(pub Vec<ApplyMsg>);
