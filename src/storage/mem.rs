//! The simulation's disk: two blobs in memory, shared by the peer that writes them and the
//! harness that inspects and crashes it.
//!
//! A crash works as in 6.5840: the harness takes [`MemPersister::copy`] of exactly what was last
//! saved and gives the copy to the restarted peer, while a still-running old instance can only
//! write to the old object.

use std::sync::{Arc, Mutex, MutexGuard};

use super::Persister;

#[derive(Default)]
struct Blobs {
    raft_state: Arc<Vec<u8>>,
    snapshot: Arc<Vec<u8>>,
}

/// An in-memory [`Persister`]; clones share the same storage.
#[derive(Clone, Default)]
pub struct MemPersister {
    blobs: Arc<Mutex<Blobs>>,
}

impl MemPersister {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    fn blobs(&self) -> MutexGuard<'_, Blobs> {
        // The lock is never held across a panic point that could poison it in a way that
        // matters: the blobs are replaced whole.
        self.blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// New, independent storage holding what this one holds now.
    pub fn copy(&self) -> MemPersister {
        let blobs = self.blobs();
        MemPersister {
            blobs: Arc::new(Mutex::new(Blobs {
                raft_state: blobs.raft_state.clone(),
                snapshot: blobs.snapshot.clone(),
            })),
        }
    }
}

impl Persister for MemPersister {
    fn save(&mut self, raft_state: Vec<u8>, snapshot: Arc<Vec<u8>>) -> std::io::Result<()> {
        let mut blobs = self.blobs();
        blobs.raft_state = Arc::new(raft_state);
        blobs.snapshot = snapshot;
        Ok(())
    }

    fn read_raft_state(&self) -> Vec<u8> {
        self.blobs().raft_state.as_ref().clone()
    }

    fn read_snapshot(&self) -> Arc<Vec<u8>> {
        self.blobs().snapshot.clone()
    }

    fn raft_state_size(&self) -> usize {
        self.blobs().raft_state.len()
    }

    fn snapshot_size(&self) -> usize {
        self.blobs().snapshot.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_is_independent_of_later_saves() {
        let mut p = MemPersister::new();
        p.save(vec![1, 2], Arc::new(vec![9])).unwrap();
        let copy = p.copy();
        p.save(vec![3], Arc::new(vec![])).unwrap();
        assert_eq!(copy.read_raft_state(), vec![1, 2]);
        assert_eq!(*copy.read_snapshot(), vec![9]);
        assert_eq!(p.raft_state_size(), 1);
        assert_eq!(p.snapshot_size(), 0);
    }
}
