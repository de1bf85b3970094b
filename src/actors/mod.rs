//! The actors, one module per kind.
//!
//! - [`client_end`]: how any actor calls a server, over whichever transport.
//! - [`network`]: the simulated network every inter-node RPC goes through.
//! - [`raft`]: the Raft peer (a pure core inside an actor shell).
//! - `storage`: runs a peer's persister, so the peer never waits for a disk.
//! - `applier`: hands a peer's committed entries to its service, in order.
//! - [`rsm`]: the replicated state machine layer every service on Raft shares.
//! - [`kv_server`], [`clerk`]: the linearizable KV service and its client.
//! - [`ctrler`]: the shard controller service and its clerk.
//! - [`shardkv`]: the sharded KV service, its clerk, and the migrator that moves shards
//!   between groups.
//! - [`admin`]: a node's status service (role, term, commit and applied index).
//! - [`metrics`]: a node's metrics service (its `/metrics` page and `/health` verdict);
//!   [`metered`]: the wrappers that count a node's client requests and Raft RPCs.
//! - [`tcp`]: the real transport (TCP links and listeners) behind the same client ends.

pub mod admin;
pub(crate) mod applier;
pub mod clerk;
pub mod client_end;
pub mod ctrler;
pub mod kv_server;
pub mod metered;
pub mod metrics;
pub mod network;
pub mod raft;
pub mod rsm;
pub mod shardkv;
pub(crate) mod storage;
pub mod tcp;
