//! 6.5840's shardkv harness (`shardkv/config.go`, 2024 edition).
//!
//! [`ShardKvHarness`] runs one controller service of 3 servers (a [`CtrlerHarness`], named
//! `ctlr-{random}-{i}`) and 3 replica groups, gids 100, 101 and 102, each a [`Cluster`] of
//! `n` [`ShardGroup`] servers named `server-{gid}-{i}` with the "ShardKV" and "Raft" services.
//! Every server starts with fresh enabled ends to its group and to the controller; for calls
//! to other groups it gets a `make_end` that makes fresh enabled ends by server name.
//! Shutting a server down disables its group and controller ends and deletes it; the ends it
//! made itself stay enabled, so a killed server must stop sending on its own. More controller
//! services can be started ([`ShardKvHarness::start_ctrler_service`]) and clerks pointed at
//! any of them. The op wrappers count operations and can record them for the
//! linearizability checker.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use actix::Addr;
use rand::Rng;
use tokio::time::Instant;

use super::cluster::{Cluster, ClusterOptions, ServerContext, ServerKind, TestStore};
use super::ctrler::CtrlerHarness;
use super::kv::{OpLog, OpRecorder};
use super::{rand_string, Sim};
use crate::actors::clerk::Clerk;
use crate::actors::client_end::EndMaker;
use crate::actors::ctrler::clerk::CtrlerClerk;
use crate::actors::network::NetworkHandle;
use crate::actors::raft::{RaftPeer, RestoreError};
use crate::actors::rsm::ReplicaSetup;
use crate::actors::shardkv::clerk;
use crate::actors::shardkv::{ShardKvNode, ShardKvSetup};
use crate::messages::ctrler::{Gid, ShardConfig};
use crate::messages::net::Server;
use crate::storage::Persister;

/// Number of replica groups (gids 100, 101, 102).
pub const NGROUPS: usize = 3;

/// Members of one replica group.
pub struct ShardGroup {
    gid: Gid,
    /// The controller servers' names.
    ctrlers: Vec<String>,
    make_end: EndMaker,
}

impl ServerKind for ShardGroup {
    type Node = ShardKvNode;

    fn start(
        &self,
        replica: ReplicaSetup<TestStore>,
        ctx: &mut ServerContext,
    ) -> impl Future<Output = Result<ShardKvNode, RestoreError>> {
        let (gid, make_end) = (self.gid, self.make_end.clone());
        let ctrler_names = self.ctrlers.clone();
        async move {
            let mut ctrlers = Vec::with_capacity(ctrler_names.len());
            for name in &ctrler_names {
                ctrlers.push(ctx.make_end_to(name).await);
            }
            ShardKvNode::start(ShardKvSetup {
                replica,
                gid,
                ctrlers,
                make_end,
            })
        }
    }

    fn services(&self, node: &ShardKvNode) -> Server {
        node.server()
    }

    fn raft(&self, node: &ShardKvNode) -> Addr<RaftPeer> {
        node.raft.clone()
    }

    fn stop(&self, node: &ShardKvNode) {
        node.kill();
    }
}

/// Statistics of the current test part (`begin` to `end`).
#[derive(Default, Clone, Copy)]
struct Part {
    t0: Option<Instant>,
    rpcs0: u64,
    ops0: u64,
}

/// 6.5840's shardkv test configuration. Clones share the cluster.
#[derive(Clone)]
pub struct ShardKvHarness {
    sim: Sim,
    ctl: CtrlerHarness,
    mck: CtrlerClerk,
    groups: Rc<Vec<Cluster<ShardGroup>>>,
    make_end: EndMaker,
    recorder: Rc<OpRecorder>,
    part: Rc<Cell<Part>>,
    created: Instant,
}

/// 6.5840's `make_end`: fresh enabled ends, named `mkend-{k}`, to a server by name.
fn end_maker(net: NetworkHandle) -> EndMaker {
    let made = Rc::new(Cell::new(0u64));
    Rc::new(move |server: &str| {
        let name = format!("mkend-{}", made.get());
        made.set(made.get() + 1);
        let (net, server) = (net.clone(), server.to_string());
        Box::pin(async move {
            let end = net.make_end(&name, None).await?;
            net.connect(&name, &server);
            net.enable(&name, true);
            Ok(end)
        })
    })
}

impl ShardKvHarness {
    /// `make_config(n, unreliable, maxraftstate)`: the controller service, then all servers of
    /// the 3 groups (none joined). `options.servers` is the size of each group; its
    /// `reliable` and `max_raft_state` apply to the groups.
    pub async fn new(sim: &Sim, options: ClusterOptions) -> Self {
        let mut rng = sim.rng("shardkv-config");
        let ctl = CtrlerHarness::new(
            sim,
            ClusterOptions {
                servers: 3,
                name: format!("ctlr-{}-", rand_string(&mut rng, 8)),
                ..ClusterOptions::default()
            },
        )
        .await;
        let mck = ctl.make_client().await;
        let make_end = end_maker(sim.network().clone());
        let ctrlers: Vec<String> = ctl
            .cluster()
            .all()
            .iter()
            .map(|&i| ctl.cluster().server_name(i))
            .collect();
        let mut groups = Vec::with_capacity(NGROUPS);
        for gi in 0..NGROUPS {
            let gid = 100 + gi as Gid;
            let kind = ShardGroup {
                gid,
                ctrlers: ctrlers.clone(),
                make_end: make_end.clone(),
            };
            let group_options = ClusterOptions {
                name: format!("server-{gid}-"),
                ..options.clone()
            };
            groups.push(Cluster::start(sim, kind, group_options).await);
        }
        ShardKvHarness {
            sim: sim.clone(),
            ctl,
            mck,
            groups: Rc::new(groups),
            make_end,
            recorder: Rc::new(OpRecorder::new()),
            part: Rc::new(Cell::new(Part::default())),
            created: Instant::now(),
        }
    }

    fn group(&self, gi: usize) -> &Cluster<ShardGroup> {
        &self.groups[gi]
    }

    /// The gid of group `gi`.
    pub fn gid(&self, gi: usize) -> Gid {
        self.group(gi).kind().gid
    }

    /// A random value of `n` characters from the harness's seeded generator.
    pub fn rand_string(&self, n: usize) -> String {
        self.ctl.cluster().rand_string(n)
    }

    /// A random number in `0..n` from the harness's seeded generator.
    pub fn rand_below(&self, n: u64) -> u64 {
        self.ctl.cluster().with_rng(|rng| rng.gen_range(0..n))
    }

    /// `StartCtrlerService`: another controller service of 3 servers on the same network.
    pub async fn start_ctrler_service(&self) -> CtrlerHarness {
        let name = format!("ctlr-{}-", self.rand_string(8));
        CtrlerHarness::new(
            &self.sim,
            ClusterOptions {
                servers: 3,
                name,
                ..ClusterOptions::default()
            },
        )
        .await
    }

    /// `makeClient(ctl)`: a clerk that asks `ctl` for configs.
    pub async fn make_client_of(&self, ctl: &CtrlerHarness) -> Clerk {
        let ctrler = ctl.make_client().await;
        let client_id = self.ctl.cluster().with_rng(|rng| rng.gen::<u64>());
        clerk::start(ctrler, self.make_end.clone(), client_id)
    }

    /// `makeClient()`: a clerk of the main controller.
    pub async fn make_client(&self) -> Clerk {
        self.make_client_of(&self.ctl).await
    }

    /// `StartServer(gi, i)`: a server from a copy of its storage, with fresh enabled ends to
    /// its group and to the controller.
    pub async fn start_server(&self, gi: usize, i: usize) {
        let group = self.group(gi);
        group.restart(i).await;
        group.connect(i);
    }

    /// `ShutdownServer(gi, i)`: disable its group and controller ends, delete it, keep a copy
    /// of its storage, kill it.
    pub fn shutdown_server(&self, gi: usize, i: usize) {
        self.group(gi).crash(i);
    }

    /// `StartGroup(gi)`.
    pub async fn start_group(&self, gi: usize) {
        for i in 0..self.group(gi).n() {
            self.start_server(gi, i).await;
        }
    }

    /// `ShutdownGroup(gi)`.
    pub fn shutdown_group(&self, gi: usize) {
        for i in 0..self.group(gi).n() {
            self.shutdown_server(gi, i);
        }
    }

    /// The Join argument for groups `gis`: each gid with its servers' names.
    pub fn group_servers(&self, gis: &[usize]) -> BTreeMap<Gid, Vec<String>> {
        gis.iter()
            .map(|&gi| {
                let group = self.group(gi);
                let names = group.all().iter().map(|&i| group.server_name(i)).collect();
                (self.gid(gi), names)
            })
            .collect()
    }

    /// Joins groups `gis` in one Join through the given controller clerk.
    pub async fn join_through(&self, gis: &[usize], mck: &CtrlerClerk) {
        let servers = self.group_servers(gis);
        mck.join(servers)
            .await
            .unwrap_or_else(|e| panic!("join {gis:?}: {e}"));
    }

    /// `join(gi)`.
    pub async fn join(&self, gi: usize) {
        self.join_groups(&[gi]).await;
    }

    /// `joinm(gis)`: several groups in one Join.
    pub async fn join_groups(&self, gis: &[usize]) {
        self.join_through(gis, &self.mck).await;
    }

    /// `leave(gi)`.
    pub async fn leave(&self, gi: usize) {
        self.leave_groups(&[gi]).await;
    }

    /// `leavem(gis)`: several groups in one Leave.
    pub async fn leave_groups(&self, gis: &[usize]) {
        let gids = gis.iter().map(|&gi| self.gid(gi)).collect();
        self.mck
            .leave(gids)
            .await
            .unwrap_or_else(|e| panic!("leave {gis:?}: {e}"));
    }

    /// The latest config of the main controller.
    pub async fn query(&self) -> ShardConfig {
        self.mck
            .latest()
            .await
            .unwrap_or_else(|e| panic!("query: {e}"))
    }

    /// `checklogs()`: with snapshots, no Raft state above 8 × maxraftstate; without, no
    /// snapshot at all.
    pub fn check_logs(&self) {
        for (gi, group) in self.groups.iter().enumerate() {
            for i in group.all() {
                let Some(saved) = group.storage(i) else {
                    continue;
                };
                let (raft, snap) = (saved.raft_state_size(), saved.snapshot_size());
                let name = group.server_name(i);
                match group.options().max_raft_state {
                    Some(max) => assert!(
                        raft <= 8 * max,
                        "{name}: persister.RaftStateSize() {raft}, but maxraftstate {max}"
                    ),
                    None => assert!(
                        snap == 0,
                        "{name} (group {gi}): maxraftstate is -1, but snapshot is non-empty!"
                    ),
                }
            }
        }
    }

    /// Persisted Raft state plus snapshot bytes, summed over every server of every group.
    pub fn stored_bytes(&self) -> usize {
        self.groups.iter().map(|g| g.stored_bytes()).sum()
    }

    /// The history's clock (see [`OpRecorder::now`]).
    pub fn now(&self) -> u64 {
        self.recorder.now()
    }

    /// Get through `ck`, counted, and logged into `log` as `client` if given.
    pub async fn get(&self, ck: &Clerk, key: &str, log: Option<&OpLog>, client: u64) -> String {
        self.recorder.get(ck, key, log, client).await
    }

    /// Put through `ck`, counted and optionally logged.
    pub async fn put(&self, ck: &Clerk, key: &str, value: &str, log: Option<&OpLog>, client: u64) {
        self.recorder.put(ck, key, value, log, client).await
    }

    /// Append through `ck`, counted and optionally logged.
    pub async fn append(
        &self,
        ck: &Clerk,
        key: &str,
        value: &str,
        log: Option<&OpLog>,
        client: u64,
    ) {
        self.recorder.append(ck, key, value, log, client).await
    }

    /// `check(ck, key, value)`: a Get must return `value`.
    pub async fn check(&self, ck: &Clerk, key: &str, value: &str) {
        self.recorder.check(ck, key, value).await
    }

    /// Prints the test's title and starts its statistics.
    pub async fn begin(&self, description: &str) {
        println!("{description} ...");
        let rpcs0 = self.total_calls().await;
        self.part.set(Part {
            t0: Some(Instant::now()),
            rpcs0,
            ops0: self.recorder.ops(),
        });
    }

    /// The time limit and the statistics line: virtual seconds, servers, RPCs, clerk ops.
    pub async fn end(&self) {
        super::check_time_limit(self.created);
        let rpcs = self.total_calls().await;
        let part = self.part.get();
        let servers: usize = self.groups.iter().map(|g| g.n()).sum::<usize>() + self.ctl.n();
        println!(
            "  ... Passed --  {:4.1}  {} {:6} {:5}",
            part.t0.map_or(0.0, |t0| t0.elapsed().as_secs_f64()),
            servers,
            rpcs - part.rpcs0,
            self.recorder.ops() - part.ops0,
        );
    }

    async fn total_calls(&self) -> u64 {
        self.sim.network().total_calls().await.unwrap_or(0)
    }

    /// Stops every server, the controller's included.
    pub fn cleanup(&self) {
        for group in self.groups.iter() {
            group.shutdown();
        }
        self.ctl.cleanup();
    }
}
