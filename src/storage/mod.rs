//! Where a Raft peer keeps what must survive a crash.
//!
//! A peer saves *changes*: each [`StateUpdate`] (a type of the storage protocol,
//! `messages::storage`) carries the term and vote, possibly a new
//! snapshot (which replaces the log up to its index), and the log entries written since the
//! previous save. A [`Persister`] applies updates atomically and gives back the whole
//! [`SavedState`] on restart. Saving changes rather than the whole log keeps a save's cost
//! proportional to what changed, which matters for long logs and for a write-ahead log on disk.
//!
//! [`MemPersister`] is the simulation's in-memory disk with 6.5840's crash semantics;
//! [`FilePersister`] the durable one (checksummed write-ahead log, atomic snapshot files).
//! Around the durable one: [`check_wal`] reports a WAL's records and what recovery would do
//! with it (`rainkv wal check`), and [`DataDirLock`] keeps a second process out of a data
//! directory.
//!
//! Files: `wal.rs` frames the files and tells a torn tail from damage; `record.rs` is what a
//! record holds and reads a WAL whole; `recover.rs` reads a data directory without changing
//! it (what a restart starts from, or why it refuses); `file.rs` the durable persister;
//! `check.rs` the read-only check; `lock.rs` the lock; `mem.rs` the simulation's persister.

mod check;
mod file;
mod lock;
mod mem;
mod record;
mod recover;
mod wal;

pub use check::{check_wal, RecoveredState, WalCheck, WalRecordInfo, WalVerdict};
pub use file::{FilePersister, FAIL_FSYNC_VAR, FAIL_WRITES_AFTER_VAR};
pub use lock::DataDirLock;
pub use mem::MemPersister;

use std::sync::Arc;

use crate::messages::storage::{SavedState, StateUpdate};

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
