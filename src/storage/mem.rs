//! The simulation's disk: Raft's saved state and snapshot in memory, shared by the peer that
//! writes them and the harness that inspects and crashes it.
//!
//! A crash works as in 6.5840: the harness takes [`MemPersister::copy`] of exactly what was last
//! saved and gives the copy to the restarted peer, while a still-running old instance can only
//! write to the old object.

use std::sync::{Arc, Mutex, MutexGuard};

use super::Persister;
use crate::messages::storage::{SavedState, StateUpdate};

#[derive(Default)]
struct Disk {
    state: SavedState,
    snapshot: Arc<Vec<u8>>,
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
        let disk = self.disk();
        MemPersister {
            disk: Arc::new(Mutex::new(Disk {
                state: disk.state.clone(),
                snapshot: disk.snapshot.clone(),
            })),
        }
    }
}

impl Persister for MemPersister {
    fn save(&mut self, update: StateUpdate) -> std::io::Result<()> {
        let mut disk = self.disk();
        if let Some(snapshot) = &update.snapshot {
            disk.snapshot = snapshot.data.clone();
        }
        disk.state.apply(update);
        Ok(())
    }

    fn load(&self) -> std::io::Result<SavedState> {
        Ok(self.disk().state.clone())
    }

    fn read_snapshot(&self) -> Arc<Vec<u8>> {
        self.disk().snapshot.clone()
    }

    fn raft_state_size(&self) -> usize {
        self.disk().state.encoded_size()
    }

    fn snapshot_size(&self) -> usize {
        self.disk().snapshot.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::raft::LogEntry;

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
}
