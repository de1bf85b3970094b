//! The simulation's disk: Raft's saved state and snapshot in memory, shared by the peer that
//! writes them and the harness that inspects and crashes it.
//!
//! A crash works as in 6.5840: the harness takes [`MemPersister::copy`] of exactly what was last
//! saved and gives the copy to the restarted peer, while a still-running old instance can only
//! write to the old object.
//!
//! The state's encoded size (6.5840's `RaftStateSize`, which the replicated state machine asks
//! after every command it applies) is kept up to date as saves change the log, from each
//! entry's size, rather than found by encoding the whole state on every question.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Persister;
use crate::messages::raft::LogEntry;
use crate::messages::storage::{SavedState, StateUpdate};

#[derive(Default, Clone)]
struct Disk {
    state: SavedState,
    snapshot: Arc<Vec<u8>>,
    /// The encoded size of each entry of `state.entries`, in order.
    entry_sizes: VecDeque<usize>,
    /// `state.encoded_size()`, as of the last save.
    size: usize,
}

impl Disk {
    /// Applies `update` to the state and brings the sizes up to date.
    fn apply(&mut self, update: StateUpdate) {
        let old_snapshot_index = self.state.snapshot_index;
        let added: Vec<usize> = update.entries.iter().map(encoded_size).collect();
        self.state.apply(update);
        // The log lost its first entries to a snapshot, then its tail from the update's first
        // index, then gained the update's entries: whatever is not new is an old entry kept.
        let dropped = (self.state.snapshot_index - old_snapshot_index) as usize;
        self.entry_sizes
            .drain(..dropped.min(self.entry_sizes.len()));
        self.entry_sizes
            .truncate(self.state.entries.len() - added.len());
        self.entry_sizes.extend(added);
        let entries = std::mem::take(&mut self.state.entries);
        // An empty log encodes as a one-byte array header.
        let rest = self.state.encoded_size() - 1;
        self.state.entries = entries;
        self.size = rest
            + array_header_size(self.entry_sizes.len())
            + self.entry_sizes.iter().sum::<usize>();
    }
}

fn encoded_size(entry: &LogEntry) -> usize {
    rmp_serde::to_vec(entry).map_or(0, |bytes| bytes.len())
}

/// Bytes of a MessagePack array header for `len` elements.
fn array_header_size(len: usize) -> usize {
    match len {
        0..=15 => 1,
        16..=0xffff => 3,
        _ => 5,
    }
}

/// An in-memory [`Persister`]; clones share the same storage.
#[derive(Clone, Default)]
pub struct MemPersister {
    disk: Arc<Mutex<Disk>>,
}

impl MemPersister {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        // Every update is applied whole under the lock, so a poisoned lock still guards a
        // consistent state.
        self.disk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// New, independent storage holding what this one holds now.
    pub fn copy(&self) -> MemPersister {
        MemPersister {
            disk: Arc::new(Mutex::new(self.disk().clone())),
        }
    }
}

impl Persister for MemPersister {
    fn save(&mut self, update: StateUpdate) -> std::io::Result<()> {
        let mut disk = self.disk();
        if let Some(snapshot) = &update.snapshot {
            disk.snapshot = snapshot.data.clone();
        }
        disk.apply(update);
        Ok(())
    }

    fn load(&self) -> std::io::Result<SavedState> {
        Ok(self.disk().state.clone())
    }

    fn read_snapshot(&self) -> Arc<Vec<u8>> {
        self.disk().snapshot.clone()
    }

    fn raft_state_size(&self) -> usize {
        self.disk().size
    }

    fn snapshot_size(&self) -> usize {
        self.disk().snapshot.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::raft::LogEntry;
    use crate::messages::storage::NewSnapshot;

    #[test]
    fn copy_is_independent_of_later_saves() {
        let mut p = MemPersister::new();
        let update = |term, first_index| StateUpdate {
            term,
            voted_for: None,
            snapshot: None,
            first_index,
            entries: vec![LogEntry::command(term, vec![1])],
        };
        p.save(update(1, 1)).unwrap();
        let copy = p.copy();
        p.save(update(2, 2)).unwrap();
        assert_eq!(copy.load().unwrap().last_index(), 1);
        assert_eq!(p.load().unwrap().last_index(), 2);
        assert!(p.raft_state_size() > copy.raft_state_size());
        assert_eq!(p.snapshot_size(), 0);
    }

    #[test]
    fn the_kept_size_is_the_encoded_size_through_appends_cuts_and_snapshots() {
        let mut p = MemPersister::new();
        let exact = |p: &MemPersister| p.disk().state.encoded_size();
        assert_eq!(p.raft_state_size(), 0);
        let entries = |n: usize, len: usize| -> Vec<LogEntry> {
            (0..n)
                .map(|i| LogEntry::command(2, vec![i as u8; len]))
                .collect()
        };
        let update = |first_index, entries, snapshot| StateUpdate {
            term: 2,
            voted_for: Some(1),
            snapshot,
            first_index,
            entries,
        };
        // Past the one-byte and the three-byte array headers, with entries of many sizes.
        p.save(update(1, entries(10, 3), None)).unwrap();
        assert_eq!(p.raft_state_size(), exact(&p));
        p.save(update(11, entries(100, 40), None)).unwrap();
        assert_eq!(p.raft_state_size(), exact(&p));
        p.save(update(11, entries(70_000, 1), None)).unwrap();
        assert_eq!(p.raft_state_size(), exact(&p));
        // A conflicting tail replaced.
        p.save(update(50, entries(5, 300), None)).unwrap();
        assert_eq!(p.raft_state_size(), exact(&p));
        // A snapshot inside the log, then one past its end.
        let snapshot = |index| {
            Some(NewSnapshot {
                index,
                term: 2,
                data: Arc::new(vec![7; 10]),
                membership: None,
            })
        };
        p.save(update(55, vec![], snapshot(20))).unwrap();
        assert_eq!(p.raft_state_size(), exact(&p));
        p.save(update(100, entries(2, 9), snapshot(99))).unwrap();
        assert_eq!(p.raft_state_size(), exact(&p));
        assert_eq!(p.copy().raft_state_size(), exact(&p));
    }
}
