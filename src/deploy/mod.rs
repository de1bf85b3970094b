//! Running RainKV for real: nodes on TCP, configured from a file, and the programs built on
//! them (the `rainkv` and `rainkv-ctl` binaries are thin shells over this module).
//!
//! - [`cluster_file`]: the cluster file (TOML): the nodes, their addresses, name and token,
//!   and where the TLS certificates are.
//! - [`sharded_file`]: the deployment file of a sharded cluster (the controller's group and
//!   the replica groups), each group seen as a cluster file of its own.
//! - `certs` (with the `cli` feature): a cluster CA and the certificates mutual TLS needs.
//! - [`store`]: the one place that picks the persister deployed nodes use.
//! - [`node`]: one node ([`node::TcpNode`]): Raft peer, its service (the KV server, or in a
//!   sharded deployment the shard controller or a replica group's store and migrator) and
//!   admin service behind a peer port and a client port, and a metrics port if it has an
//!   address for one.
//! - `http` (with the `cli` feature): a node's HTTP port, `/metrics` and `/health`.
//! - [`client`]: a client of a running cluster (clerks, node status).
//! - [`shard_client`]: a client of a running sharded deployment (the sharded clerk, the
//!   controller's clerk, each group's status and shard states).
//! - [`local`]: a whole cluster inside this process on loopback, for the demo, the benchmark
//!   and tests.
//! - [`local_sharded`]: a whole sharded deployment (controller group and replica groups)
//!   inside this process on loopback, for a one-process sharded demo or benchmark and tests.
//! - [`stats`]: latency percentiles and the benchmark's result line.
//! - [`bench`](mod@bench): the benchmark workloads (`rainkv bench`).
//! - [`bench_sharded`]: the same workloads on 1, 2, 3... groups, and the time to move a shard
//!   by its size (`rainkv bench --sharded`).
//! - [`scale`]: how cost grows (`rainkv bench --scale`): the workloads swept over clients and
//!   value sizes, and a cluster loaded up to millions of keys, measured at each count.
//! - `etcd_bench` (with the `cli` feature): etcd measured at the same points, through the
//!   repository's `benches/etcd` scripts.
//! - `report` (with the `cli` feature): the scale report as one HTML page of SVG plots.
//! - [`demo`]: the fault demo (`rainkv demo`), checked with [`crate::check`].
//! - [`demo_sharded`]: the sharded demo (`rainkv demo --sharded`): groups join and leave,
//!   shards move, leaders die mid-migration; checked the same way, and every shard must end
//!   at its owner.

pub mod bench;
pub mod bench_sharded;
#[cfg(feature = "cli")]
pub mod certs;
pub mod client;
pub mod cluster_file;
pub mod demo;
pub mod demo_sharded;
#[cfg(feature = "cli")]
pub mod etcd_bench;
#[cfg(feature = "cli")]
pub mod http;
pub mod local;
pub mod local_sharded;
pub mod node;
#[cfg(feature = "cli")]
pub mod report;
pub mod scale;
pub mod shard_client;
pub mod sharded_file;
pub mod stats;
pub mod store;
