//! Where a Raft peer keeps what must survive a crash.
//!
//! A peer saves *changes*: each [`StateUpdate`] carries the term and vote, possibly a new
//! snapshot (which replaces the log up to its index), and the log entries written since the
//! previous save. A [`Persister`] applies updates atomically and gives back the whole
//! [`SavedState`] on restart. Saving changes rather than the whole log keeps a save's cost
//! proportional to what changed, which matters for long logs and for a write-ahead log on disk.
//!
//! [`MemPersister`] is the simulation's in-memory disk with 6.5840's crash semantics;
//! [`FilePersister`] the durable one (checksummed write-ahead log, atomic snapshot files).

mod file;
mod mem;
pub mod wal;

pub use file::FilePersister;
pub use mem::MemPersister;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::messages::raft::LogEntry;

/// Raft's durable state (Figure 2's persistent state plus the snapshot's position).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// Latest term seen.
    pub term: u64,
    /// Candidate voted for in `term`.
    pub voted_for: Option<usize>,
    /// Last index covered by the snapshot (0: none).
    pub snapshot_index: u64,
    /// Term of that entry.
    pub snapshot_term: u64,
    /// The log after the snapshot: indexes `snapshot_index + 1 ..`.
    pub entries: Vec<LogEntry>,
}

/// A snapshot to save: the service's state up to and including `index`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSnapshot {
    /// Last log index the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The service's encoded state.
    pub data: Arc<Vec<u8>>,
}

/// What changed since the previous save; applied in field order.
#[derive(Debug, Clone, PartialEq)]
pub struct StateUpdate {
    /// The current term.
    pub term: u64,
    /// The vote in that term.
    pub voted_for: Option<usize>,
    /// A new snapshot: the saved log up to its index is discarded.
    pub snapshot: Option<NewSnapshot>,
    /// The saved log is cut before this index, then `entries` are appended from here.
    pub first_index: u64,
    /// New entries, starting at `first_index`.
    pub entries: Vec<LogEntry>,
}

impl SavedState {
    /// Index of the last saved entry.
    pub fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    /// Applies `update`, as a persister must (atomically).
    pub fn apply(&mut self, update: StateUpdate) {
        self.term = update.term;
        self.voted_for = update.voted_for;
        if let Some(snapshot) = update.snapshot {
            if snapshot.index > self.snapshot_index {
                let covered = (snapshot.index - self.snapshot_index) as usize;
                self.entries.drain(..covered.min(self.entries.len()));
                self.snapshot_index = snapshot.index;
                self.snapshot_term = snapshot.term;
            }
        }
        let keep = update.first_index.saturating_sub(self.snapshot_index + 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend(update.entries);
    }

    /// Size in bytes of this state in rmp-serde form: 6.5840's `RaftStateSize`, which services
    /// compare with `maxraftstate`.
    pub fn encoded_size(&self) -> usize {
        rmp_serde::to_vec(self).map_or(0, |bytes| bytes.len())
    }
}

/// Durable storage for one Raft peer.
pub trait Persister {
    /// Applies `update` atomically. Raft answers nothing that depends on it before this
    /// returns.
    fn save(&mut self, update: StateUpdate) -> std::io::Result<()>;
    /// Everything saved so far (the default state if nothing was).
    fn load(&self) -> std::io::Result<SavedState>;
    /// The last saved snapshot (empty if none).
    fn read_snapshot(&self) -> Arc<Vec<u8>>;
    /// Size in bytes of the saved Raft state (term, vote, log).
    fn raft_state_size(&self) -> usize;
    /// Size in bytes of the saved snapshot.
    fn snapshot_size(&self) -> usize;
    /// Whether `save` blocks on real I/O (disk writes, fsync): such a persister runs on a
    /// thread of its own, so a slow disk never stalls the Raft peer.
    fn blocks(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, c: u8) -> LogEntry {
        LogEntry {
            term,
            command: vec![c],
        }
    }

    fn update(first_index: u64, entries: Vec<LogEntry>) -> StateUpdate {
        StateUpdate {
            term: 2,
            voted_for: Some(1),
            snapshot: None,
            first_index,
            entries,
        }
    }

    #[test]
    fn updates_append_truncate_and_compact() {
        let mut s = SavedState::default();
        s.apply(update(1, vec![entry(1, 1), entry(1, 2), entry(1, 3)]));
        assert_eq!(s.last_index(), 3);
        s.apply(update(3, vec![entry(2, 9)])); // replaces index 3
        assert_eq!(s.entries, vec![entry(1, 1), entry(1, 2), entry(2, 9)]);
        let mut u = update(4, vec![entry(2, 4)]);
        u.snapshot = Some(NewSnapshot {
            index: 2,
            term: 1,
            data: Arc::new(vec![7]),
        });
        s.apply(u);
        assert_eq!((s.snapshot_index, s.snapshot_term), (2, 1));
        assert_eq!(s.entries, vec![entry(2, 9), entry(2, 4)]);
        assert_eq!((s.term, s.voted_for), (2, Some(1)));
    }

    #[test]
    fn a_snapshot_past_the_log_discards_it() {
        let mut s = SavedState::default();
        s.apply(update(1, vec![entry(1, 1), entry(1, 2)]));
        let mut u = update(11, vec![]);
        u.snapshot = Some(NewSnapshot {
            index: 10,
            term: 3,
            data: Arc::new(vec![]),
        });
        s.apply(u);
        assert_eq!((s.snapshot_index, s.last_index()), (10, 10));
        assert!(s.entries.is_empty());
    }
}
