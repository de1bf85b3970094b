//! Where a Raft peer keeps what must survive a crash.
//!
//! A [`Persister`] stores two blobs, the encoded Raft state and the service's latest snapshot,
//! and replaces both atomically on every [`Persister::save`], as 6.5840's persister does.
//! [`MemPersister`] is the simulation's in-memory disk with 6.5840's crash semantics.

mod mem;

pub use mem::MemPersister;

use std::sync::Arc;

/// Durable storage for one Raft peer.
pub trait Persister {
    /// Atomically replaces the Raft state and the snapshot. Raft answers nothing that depends
    /// on this state before `save` returns.
    fn save(&mut self, raft_state: Vec<u8>, snapshot: Arc<Vec<u8>>) -> std::io::Result<()>;
    /// The last saved Raft state (empty if none).
    fn read_raft_state(&self) -> Vec<u8>;
    /// The last saved snapshot (empty if none).
    fn read_snapshot(&self) -> Arc<Vec<u8>>;
    /// Size in bytes of the saved Raft state.
    fn raft_state_size(&self) -> usize;
    /// Size in bytes of the saved snapshot.
    fn snapshot_size(&self) -> usize;
}
