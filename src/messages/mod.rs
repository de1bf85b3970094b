//! Every typed message that crosses an actor boundary, grouped by protocol.
//!
//! - [`net`]: the simulated network's envelope ([`net::Dispatch`]), its control messages and the
//!   [`net::Rpc`] trait that ties a request type to its reply type.
//! - [`raft`]: Raft's RPCs and a peer's local API (`Start`, `GetState`, `Snapshot`).
//! - [`apply`]: what Raft hands to its service ([`apply::ApplyMsg`]).
//! - [`rsm`]: a service's commands to its replicated state machine ([`rsm::Submit`],
//!   [`rsm::Read`]) and the client sessions that make them execute at most once.
//! - [`kv`]: clerk ↔ KV server RPCs and the KV commands.
//! - [`ctrler`]: the shard controller's configs, operations and RPCs.
//! - [`shard`]: sharded KV RPCs: clerk ↔ group, and shard migration between groups.
//! - [`admin`]: what an operator's tool asks a node: its status, a leadership transfer.
//! - [`storage`]: a Raft peer's saves to its storage actor.
//! - [`lifecycle`]: [`lifecycle::Stop`], which every stoppable actor handles.
//! - [`metrics`]: what a node's HTTP port asks its metrics service (`/metrics`, `/health`).
//! - [`tcp`]: the TCP transport's local control protocol: link and listener status, blocking.

pub mod admin;
pub mod apply;
pub mod ctrler;
pub mod kv;
pub mod lifecycle;
pub mod metrics;
pub mod net;
pub mod raft;
pub mod rsm;
pub mod shard;
pub mod storage;
pub mod tcp;
