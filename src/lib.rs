//! # RainKV
//!
//! A distributed key/value store on Raft in which every moving part is an actix actor talking
//! through typed messages: the MIT 6.5840 lab architecture, done in Rust.
//!
//! ## A tour
//! - [`messages`]: every message that crosses an actor boundary, one file per protocol; it uses
//!   nothing else of ours. Start with [`messages::net`]: an RPC is a serde type implementing
//!   [`messages::net::Rpc`], which names its method and its reply type; a service is any actor
//!   handling [`messages::net::Dispatch`].
//! - [`actors`]: one module per actor kind. A Put goes [`actors::clerk`] (retries, leader
//!   hint) → the transport → [`actors::kv_server`] (the service) → [`actors::rsm`] (the
//!   replicated state machine layer: submit, wait for the apply, dedup, snapshots) →
//!   [`actors::raft`] (a pure `RaftCore` in a `RaftPeer` actor shell, which saves through a
//!   storage actor and replicates to the followers) → the applier (committed entries back to
//!   the service, in order) → [`actors::rsm`], which answers. The README draws all thirteen
//!   mailbox hops.
//! - Transports: every call goes through an [`actors::client_end::ClientEnd`].
//!   [`actors::network`] is the simulated network (6.5840's labrpc: loss, delays, reordering,
//!   partitions, counters); [`actors::tcp`] the real one (a `Link` actor per remote address, a
//!   `Listener` actor per port).
//! - Sharding: [`actors::ctrler`] (the shard controller) and [`actors::shardkv`] (replica
//!   groups that hand shards to each other, a migrator actor each).
//! - [`storage`]: what Raft saves: `MemPersister` for simulations, `FilePersister` (a
//!   checksummed write-ahead log and snapshot files) for real disks; `check_wal` (what
//!   `rainkv wal check` prints) and `DataDirLock` (one process per data directory).
//! - [`deploy`]: nodes on TCP, the cluster file, a client of a running cluster, a whole
//!   cluster in one process, the demo, the benchmark and its scale sweeps with their HTML
//!   report (what the `rainkv` and `rainkv-ctl` binaries run); for a sharded deployment, its file (`deploy::sharded_file`: a controller
//!   group and replica groups), nodes running the controller or a group's store and migrator
//!   ([`TcpNode::start_sharded`]), a client with the sharded clerk
//!   (`deploy::shard_client`), and a whole sharded deployment in one process for the sharded
//!   demo and benchmark (`deploy::demo_sharded`, `deploy::bench_sharded`).
//! - [`check`]: the linearizability checker, used by the testkit and by the demo.
//! - [`metrics`]: what a node counts for its `/metrics` page (atomic counters, fixed-bucket
//!   histograms, off unless the node has a metrics port) and the Prometheus text format.
//! - [`trace`]: structured events of a run (messages, Raft state, faults, client operations),
//!   off unless asked for, written as JSON Lines.
//! - `testkit` (feature `testkit`, off by default): the deterministic harness. A scenario runs
//!   inside an actix `System` on a current-thread tokio runtime with paused time, so a
//!   30-second scenario takes milliseconds; every random choice derives from one seed
//!   (`RAINKV_SEED`), printed when a test fails. One cluster builder (`testkit::Cluster`)
//!   starts, crashes, restarts and partitions servers of any kind; the 6.5840 harnesses are
//!   thin layers over it, and the sharded one checks that migration settles in bounded time
//!   (`testkit::settle`).
//!
//! Which module may use which: `deploy` → `actors` → `storage` → `messages`, and `actors` →
//! `messages`; `testkit` → `actors`, `storage`, `messages`, `check`; `actors`, `deploy` and
//! `testkit` may use `trace` and `metrics`; `check`, `trace`, `metrics` and `messages` use
//! nothing of ours (`tests/architecture.rs` checks it).
//!
//! The types most programs need are re-exported here: [`KvNode`], [`Clerk`], [`RaftPeer`],
//! [`RaftConfig`], [`Rsm`], [`StateMachine`], [`ReplicaSetup`], ...
//!
//! ## Where to read next
//! `actors/network/mod.rs` for how a call travels; `actors/raft/core.rs` beside the Raft
//! paper's Figure 2; `tests/raft.rs` and `tests/kvraft.rs` for the 6.5840 tests that pin the
//! behaviour down; `actors/shardkv/migrator.rs` for how shards move between replica groups.

pub mod actors;
pub mod check;
pub mod deploy;
pub mod messages;
pub mod metrics;
pub mod storage;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod trace;

// The types most programs need, at the crate root.
pub use actors::clerk::Clerk;
pub use actors::client_end::ClientEnd;
pub use actors::ctrler::{clerk::CtrlerClerk, CtrlerNode};
pub use actors::kv_server::{KvNode, KvStore};
pub use actors::network::NetworkHandle;
pub use actors::raft::{PeerSetup, RaftConfig, RaftPeer};
pub use actors::rsm::{ReplicaSetup, Rsm, SessionPolicy, StateMachine};
pub use actors::shardkv::{ShardKvNode, ShardKvSetup};
pub use deploy::cluster_file::ClusterFile;
pub use deploy::node::TcpNode;
pub use messages::kv::{ClerkError, KvCommand};
pub use messages::raft::{ChangeMembership, Membership, MembershipChange, MembershipError};
pub use messages::rsm::{Health, Read, Submit, SubmitError};
pub use storage::{FilePersister, MemPersister, Persister};
