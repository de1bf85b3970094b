//! The actors, one module per kind.
//!
//! - [`network`]: the simulated network every inter-node RPC goes through.

pub mod network;
