//! Sharded KV (6.5840's `ShardKV`): replica groups, each a Raft group serving the shards the
//! controller assigns it, moving shards between groups as the configs change.
//!
//! One group member is a Raft peer, an [`Rsm`] over the group's [`ShardStore`] (in [`store`]:
//! per-shard status, keys and duplicate table, and the current config), the [`ShardKv`] network
//! face below, and a [`Migrator`] that follows the controller and moves shards
//! (`migrator.rs` describes the migration protocol). [`ShardKvNode`] starts and kills
//! them together; [`clerk`] is the client.
//!
//! Client operations go through the log *without* an RSM session: the store keeps one
//! duplicate table per shard, which travels with the shard, so at-most-once holds across
//! moves. A request for a shard the group does not serve at that point of the log gets
//! `ShardKvError::WrongGroup`.
//!
//! [`ShardKv`] handles: [`Dispatch`] (`ShardKV.Get`, `ShardKV.PutAppend`, and from other
//! groups' migrators `ShardKV.PullShards`, answered from the applied state with [`Read`],
//! and `ShardKV.DeleteShards`, which goes through the log). Sends: [`Submit`] and [`Read`] to
//! its [`Rsm`].
//!
//! [`Rsm`]: crate::actors::rsm::Rsm
//! [`ShardStore`]: store::ShardStore
//! [`Dispatch`]: crate::messages::net::Dispatch
//! [`Read`]: crate::messages::rsm::Read
//! [`Submit`]: crate::messages::rsm::Submit

pub mod clerk;
mod migrator;
mod node;
mod server;
pub mod store;

pub use self::migrator::Migrator;
#[cfg(feature = "testkit")]
pub(crate) use self::migrator::POLL_INTERVAL;
pub use self::node::{ShardKvNode, ShardKvSetup};
pub use self::server::ShardKv;
