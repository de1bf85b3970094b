//! # RainKV
//!
//! A distributed key/value store on Raft in which every moving part is an actix actor talking
//! through typed messages: the MIT 6.5840 lab architecture, done in Rust.
//!
//! ## A tour
//! - [`messages`]: every message that crosses an actor boundary, one file per protocol. Start
//!   with [`messages::net`]: an RPC is a serde type implementing [`messages::net::Rpc`], which
//!   names its method and its reply type.
//! - [`actors`]: one module per actor kind. [`actors::network`] is the simulated network
//!   (6.5840's labrpc): named client ends, servers hosting services, loss, delays, reordering,
//!   partitions, and counters of RPCs and bytes. A [`actors::network::ClientEnd`] gives typed
//!   calls; a service is any actor handling [`messages::net::Dispatch`].
//! - [`actors::tcp`]: the real transport behind the same client ends: a `Link` actor per
//!   remote address handles calls, a `Listener` actor per port hands requests to services.
//! - [`deploy`]: nodes on TCP, the cluster config file, a client of a running cluster, a whole
//!   cluster in one process, the demo and the benchmark (what the `rainkv` and `rainkv-ctl`
//!   binaries run).
//! - [`testkit`]: the deterministic harness. A scenario runs inside an actix `System` on a
//!   current-thread tokio runtime with paused time, so a 30-second scenario takes milliseconds;
//!   every random choice derives from one seed (`RAINKV_SEED`), printed when a test fails.
//!
//! ## Where to read next
//! `actors/network/mod.rs` for how a call travels; `tests/network.rs` for the labrpc tests that
//! pin its semantics down; `actors/shardkv/mod.rs` and `actors/migrator.rs` for how shards
//! move between replica groups.

pub mod actors;
pub mod deploy;
pub mod messages;
pub mod storage;
#[cfg(feature = "testkit")]
pub mod testkit;
