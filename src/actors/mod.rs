//! The actors, one module per kind.
//!
//! - [`network`]: the simulated network every inter-node RPC goes through.
//! - [`raft`]: the Raft peer (a pure core inside an actor shell).
//! - [`applier`]: hands a peer's committed entries to its service, in order.

pub mod applier;
pub mod network;
pub mod raft;
