//! Where a deployed node keeps its Raft state and snapshots: the one place that chooses the
//! persister for `rainkv serve`, the demo and the benchmark.
//!
//! For now that is the in-memory [`MemPersister`]: a node restarted inside the same process
//! (the demo, the tests) gets back exactly what it last saved, as from a disk, but a process
//! that exits loses everything. The durable file store replaces it here, and nowhere else.

use std::path::Path;

use crate::storage::MemPersister;

/// The persister deployed nodes use.
pub type NodeStore = MemPersister;

/// Whether a [`NodeStore`] survives the process (`rainkv serve` warns when it does not).
pub const DURABLE: bool = false;

/// Opens the store of a node whose data directory is `data_dir`.
pub fn open_store(data_dir: &Path) -> std::io::Result<NodeStore> {
    log::debug!(
        "in-memory store for {} (nothing is written there yet)",
        data_dir.display()
    );
    Ok(MemPersister::new())
}

/// Opens the store of a node restarted in this process after a crash: what the crashed
/// instance last saved, and nothing it might still write on its way down.
pub fn reopen_store(crashed: &NodeStore, data_dir: &Path) -> std::io::Result<NodeStore> {
    log::debug!("reopening the in-memory store for {}", data_dir.display());
    Ok(crashed.copy())
}
