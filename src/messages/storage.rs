//! The storage protocol: a Raft peer hands its state changes ([`StateUpdate`]) to its storage
//! actor, one save at a time, and learns from the answer when they are durable; a restarted
//! peer gets back the whole [`SavedState`].

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::messages::raft::{LogEntry, Membership};

/// Saves one state update atomically; answered once it is durable (or with the I/O error that
/// stopped it).
#[derive(Message, Debug)]
#[rtype(result = "std::io::Result<()>")]
pub(crate) struct Save(pub StateUpdate);

/// A simulated disk latency: every save from now on takes this much longer (zero: none).
/// Tests use it to show that nothing leaves a peer before the state it depends on is durable.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetDiskLatency(pub Duration);

/// A simulated disk stall: no save completes until this long from now (saves asked for
/// meanwhile wait, in order). Tests use it to show a cluster rides out a leader's stuck disk.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StallDisk(pub Duration);

/// Raft's durable state (Figure 2's persistent state plus the snapshot's position).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// Latest term seen (0: the peer has never saved anything).
    pub term: u64,
    /// Candidate voted for in `term`.
    pub voted_for: Option<usize>,
    /// Last index covered by the snapshot (0: none).
    pub snapshot_index: u64,
    /// Term of that entry.
    pub snapshot_term: u64,
    /// The log after the snapshot: indexes `snapshot_index + 1 ..`.
    pub entries: Vec<LogEntry>,
    /// The membership at `snapshot_index` (`None`: the peer's initial membership; states
    /// saved before membership change have none).
    #[serde(default)]
    pub snapshot_membership: Option<Membership>,
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
    /// The membership at `index` (`None`: not known here; the saved one stays).
    pub membership: Option<Membership>,
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
            if snapshot.index >= self.snapshot_index && snapshot.membership.is_some() {
                self.snapshot_membership = snapshot.membership;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, c: u8) -> LogEntry {
        LogEntry::command(term, vec![c])
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
            membership: None,
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
            membership: None,
        });
        s.apply(u);
        assert_eq!((s.snapshot_index, s.last_index()), (10, 10));
        assert!(s.entries.is_empty());
    }
}
