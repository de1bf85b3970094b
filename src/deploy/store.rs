//! Where a deployed node keeps its Raft state and snapshots: the one place that chooses the
//! persister for `rainkv serve`, the demo and the benchmark.
//!
//! Deployed nodes use the durable [`FilePersister`]: a checksummed write-ahead log and snapshot
//! files in the node's data directory, fsynced before Raft answers anything that depends on
//! them, so an acknowledged write survives a crash of the process or the machine.

use std::path::Path;

use crate::storage::FilePersister;

/// The persister deployed nodes use.
pub type NodeStore = FilePersister;

/// Opens (and recovers) the store of a node whose data directory is `data_dir`.
pub fn open_store(data_dir: &Path) -> std::io::Result<NodeStore> {
    FilePersister::open(data_dir)
}
