//! 6.5840's shard controller harness (`shardctrler/config.go`), also used by the shardkv
//! harness for its controller services.
//!
//! [`CtrlerHarness`] is a [`Cluster`] of controller servers ([`Controllers`]: each a network
//! server `{name}{i}` with the "ShardCtrler" and "Raft" services). Servers are shut down and
//! restarted as in kvraft: a restart gets a copy of the storage and fresh ends that stay
//! disabled until [`CtrlerHarness::connect_all`]. Clerks get fresh enabled ends to every
//! server, in shuffled order.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;

use actix::Addr;
use rand::seq::SliceRandom;
use tokio::time::Instant;

use super::cluster::{Cluster, ClusterOptions, ServerContext, ServerKind, TestStore};
use super::Sim;
use crate::actors::ctrler::clerk::CtrlerClerk;
use crate::actors::ctrler::CtrlerNode;
use crate::actors::raft::{RaftPeer, RestoreError};
use crate::actors::rsm::ReplicaSetup;
use crate::messages::net::Server;

/// Controller servers: a Raft peer, a replicated config history and its "ShardCtrler" face
/// each.
pub struct Controllers;

impl ServerKind for Controllers {
    type Node = CtrlerNode;

    fn start(
        &self,
        setup: ReplicaSetup<TestStore>,
        _: &mut ServerContext,
    ) -> impl Future<Output = Result<CtrlerNode, RestoreError>> {
        std::future::ready(CtrlerNode::start(setup))
    }

    fn services(&self, node: &CtrlerNode) -> Server {
        node.server()
    }

    fn raft(&self, node: &CtrlerNode) -> Addr<RaftPeer> {
        node.raft.clone()
    }

    fn stop(&self, node: &CtrlerNode) {
        node.kill();
    }
}

/// Statistics of the current test part (`begin` to `end`).
#[derive(Default, Clone, Copy)]
struct Part {
    t0: Option<Instant>,
    rpcs0: u64,
}

/// A cluster of controller servers. Clones share it.
#[derive(Clone)]
pub struct CtrlerHarness {
    cluster: Cluster<Controllers>,
    part: Rc<Cell<Part>>,
}

impl CtrlerHarness {
    /// `make_config(n)`: starts `options.servers` servers named `{options.name}0..` and
    /// connects them. (The controller tests run the network reliable and never snapshot.)
    pub async fn new(sim: &Sim, options: ClusterOptions) -> CtrlerHarness {
        CtrlerHarness {
            cluster: Cluster::start(sim, Controllers, options).await,
            part: Rc::new(Cell::new(Part::default())),
        }
    }

    /// The cluster underneath.
    pub fn cluster(&self) -> &Cluster<Controllers> {
        &self.cluster
    }

    /// Number of servers.
    pub fn n(&self) -> usize {
        self.cluster.n()
    }

    /// Every server reaches every other.
    pub fn connect_all(&self) {
        self.cluster.connect_all();
    }

    /// `makeClient`: a clerk with fresh enabled ends to every server, in shuffled order.
    pub async fn make_client(&self) -> CtrlerClerk {
        let mut ends = self.cluster.client_ends(&self.cluster.all()).await.ends;
        self.cluster.with_rng(|rng| ends.shuffle(rng));
        CtrlerClerk::start(ends)
    }

    /// `ShutdownServer(i)`: cut it off, delete it, keep a copy of its storage, kill it.
    pub fn shutdown_server(&self, i: usize) {
        self.cluster.crash(i);
    }

    /// `StartServer(i)`: a new server from a copy of its storage, with fresh disabled ends.
    pub async fn start_server(&self, i: usize) {
        self.cluster.restart(i).await;
    }

    /// `Leader()`: the first running server whose Raft says it is leader.
    pub async fn leader(&self) -> Option<usize> {
        self.cluster.leader().await
    }

    /// `begin(description)`.
    pub async fn begin(&self, description: &str) {
        println!("{description} ...");
        let rpcs0 = self.total_calls().await;
        self.part.set(Part {
            t0: Some(Instant::now()),
            rpcs0,
        });
    }

    /// `end()`: the time limit and the statistics line (virtual seconds, servers, RPCs).
    pub async fn end(&self) {
        self.cluster.check_time_limit();
        let rpcs = self.total_calls().await;
        let part = self.part.get();
        println!(
            "  ... Passed --  {:4.1}  {} {:5}",
            part.t0.map_or(0.0, |t0| t0.elapsed().as_secs_f64()),
            self.n(),
            rpcs - part.rpcs0,
        );
    }

    async fn total_calls(&self) -> u64 {
        self.cluster
            .sim()
            .network()
            .total_calls()
            .await
            .unwrap_or(0)
    }

    /// Stops every server.
    pub fn cleanup(&self) {
        self.cluster.shutdown();
    }
}
