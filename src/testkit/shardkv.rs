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
//!
//! The harness also watches the liveness of migration ([`super::settle`]): it marks every Join
//! or Leave it makes and every group server it crashes or starts, looks for the settled state
//! after the last one (every [`WATCH_PERIOD`] of virtual time, through the replicas' applied
//! state, no RPC), and [`ShardKvHarness::assert_settles`] checks how long that took.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use actix::Addr;
use rand::Rng;
use tokio::time::{sleep, Instant};

use super::cluster::{Cluster, ClusterOptions, ServerContext, ServerKind, TestStore};
use super::ctrler::CtrlerHarness;
use super::kv::{OpLog, OpRecorder};
use super::settle::{unsettled, GroupView, SettleBound};
use super::{rand_string, Sim};
use crate::actors::clerk::Clerk;
use crate::actors::client_end::EndMaker;
use crate::actors::ctrler::clerk::CtrlerClerk;
use crate::actors::ctrler::ConfigHistory;
use crate::actors::network::NetworkHandle;
use crate::actors::raft::{RaftPeer, RestoreError};
use crate::actors::rsm::ReplicaSetup;
use crate::actors::shardkv::clerk;
use crate::actors::shardkv::store::ShardStore;
use crate::actors::shardkv::{ShardKvNode, ShardKvSetup};
use crate::messages::ctrler::{ConfigNum, Gid, ShardConfig};
use crate::messages::net::Server;
use crate::messages::rsm::Read;
use crate::storage::Persister;

/// Number of replica groups (gids 100, 101, 102).
pub const NGROUPS: usize = 3;

/// How often the harness looks for the settled state after a change (virtual time): a
/// settling time is measured up to this much late.
pub const WATCH_PERIOD: Duration = Duration::from_millis(10);

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

/// The last change that can hold migration up, and what was seen after it.
#[derive(Clone, Copy)]
struct Change {
    /// Counts changes, so a look begun before a change is not taken for one after it.
    seq: u64,
    at: Instant,
    /// The lowest config any group was at when it happened (once read).
    floor: Option<ConfigNum>,
    /// When the cluster was first seen settled after it.
    settled_at: Option<Instant>,
}

/// The liveness watch (see the module docs).
struct Watch {
    change: Change,
    /// A task is looking for the settled state.
    watching: bool,
    /// The highest config each group was seen at: a group's applied config never goes back,
    /// even while its servers are down or replaying their logs.
    known: [ConfigNum; NGROUPS],
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
    watch: Rc<RefCell<Watch>>,
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
        let now = Instant::now();
        let harness = ShardKvHarness {
            sim: sim.clone(),
            ctl,
            mck,
            groups: Rc::new(groups),
            make_end,
            recorder: Rc::new(OpRecorder::new()),
            part: Rc::new(Cell::new(Part::default())),
            created: now,
            watch: Rc::new(RefCell::new(Watch {
                change: Change {
                    seq: 0,
                    at: now,
                    floor: None,
                    settled_at: None,
                },
                watching: false,
                known: [0; NGROUPS],
            })),
        };
        harness.changed();
        harness
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
        self.changed();
    }

    /// `ShutdownServer(gi, i)`: disable its group and controller ends, delete it, keep a copy
    /// of its storage, kill it.
    pub fn shutdown_server(&self, gi: usize, i: usize) {
        self.group(gi).crash(i);
        self.changed();
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
        self.changed();
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
        self.changed();
    }

    /// The latest config of the main controller.
    pub async fn query(&self) -> ShardConfig {
        self.mck
            .latest()
            .await
            .unwrap_or_else(|e| panic!("query: {e}"))
    }

    /// The leader of group `gi`: its first running server whose Raft peer says it leads.
    pub async fn group_leader(&self, gi: usize) -> Option<usize> {
        self.group(gi).leader().await
    }

    /// What group `gi` has applied, as its most advanced running replica (the highest applied
    /// index) has it; `None` when none of its servers runs. Read from the replicas' state, no
    /// RPC.
    pub async fn group_view(&self, gi: usize) -> Option<GroupView> {
        let (group, gid) = (self.group(gi), self.gid(gi));
        let mut best: Option<GroupView> = None;
        for i in group.all() {
            let Some(node) = group.node(i) else {
                continue;
            };
            let read = Read::new(move |s: &ShardStore, applied| GroupView {
                gid,
                applied,
                num: s.config().num,
                shards: s.shards().iter().map(|(&k, v)| (k, v.status)).collect(),
            });
            if let Ok(Ok(view)) = node.rsm.send(read).await {
                let ahead = best.as_ref().map(|b| view.applied > b.applied);
                if ahead != Some(false) {
                    best = Some(view);
                }
            }
        }
        if let Some(view) = &best {
            let known = &mut self.watch.borrow_mut().known[gi];
            *known = (*known).max(view.num);
        }
        best
    }

    /// The controller's latest config, as its most advanced running replica applied it (no
    /// RPC).
    async fn latest_config(&self) -> Option<ShardConfig> {
        let ctl = self.ctl.cluster();
        let mut best: Option<(u64, ShardConfig)> = None;
        for i in ctl.all() {
            let Some(node) = ctl.node(i) else {
                continue;
            };
            let read = Read::new(|h: &ConfigHistory, applied| (applied, h.latest().clone()));
            if let Ok(Ok((applied, config))) = node.rsm.send(read).await {
                if best.as_ref().map(|(b, _)| applied > *b) != Some(false) {
                    best = Some((applied, config));
                }
            }
        }
        best.map(|(_, config)| config)
    }

    /// What keeps the cluster from being settled under the latest config now, one line per
    /// cause (empty: settled; see [`super::settle`]).
    pub async fn unsettled(&self) -> Vec<String> {
        let Some(config) = self.latest_config().await else {
            return vec!["no controller server runs".to_string()];
        };
        let (mut views, mut lines) = (Vec::new(), Vec::new());
        for gi in 0..NGROUPS {
            match self.group_view(gi).await {
                Some(view) => views.push(view),
                None => lines.push(format!("no server of group {} runs", self.gid(gi))),
            }
        }
        lines.extend(unsettled(&config, &views));
        lines
    }

    /// Marks a change that can hold migration up: reads how far behind the groups are, and
    /// looks for the settled state from now on.
    fn changed(&self) {
        let seq = {
            let mut watch = self.watch.borrow_mut();
            watch.change = Change {
                seq: watch.change.seq + 1,
                at: Instant::now(),
                floor: None,
                settled_at: None,
            };
            watch.change.seq
        };
        let this = self.clone();
        // Reads of the replicas' state take no virtual time: this is the floor as of the change.
        actix::spawn(async move {
            let mut floor = ConfigNum::MAX;
            for gi in 0..NGROUPS {
                let seen = this.group_view(gi).await.map_or(0, |view| view.num);
                floor = floor.min(seen.max(this.watch.borrow().known[gi]));
            }
            let mut watch = this.watch.borrow_mut();
            if watch.change.seq == seq {
                watch.change.floor = Some(floor);
            }
        });
        let start = !std::mem::replace(&mut self.watch.borrow_mut().watching, true);
        if start {
            actix::spawn(self.clone().watch_settling());
        }
    }

    /// Looks for the settled state every [`WATCH_PERIOD`] until it is seen after the last
    /// change.
    async fn watch_settling(self) {
        loop {
            let seq = self.watch.borrow().change.seq;
            let settled = self.unsettled().await.is_empty();
            {
                let mut watch = self.watch.borrow_mut();
                if settled && watch.change.seq == seq {
                    watch.change.settled_at = Some(Instant::now());
                    watch.watching = false;
                    return;
                }
            }
            sleep(WATCH_PERIOD).await;
        }
    }

    /// The liveness assertion: waits until the cluster has settled under the controller's
    /// latest config (every shard `Serving` at its owner, no other copy left anywhere; see
    /// [`super::settle`]) and fails the test unless that happened within [`SettleBound`] of
    /// the last change (a Join or Leave answered, a group server crashed or started).
    /// Liveness is promised only with a connected majority in every group, so it fails the
    /// test if a group has none. Returns how long settling took.
    pub async fn assert_settles(&self) -> Duration {
        for gi in 0..NGROUPS {
            let group = self.group(gi);
            let live = (group.all().into_iter())
                .filter(|&i| group.is_up(i) && group.is_connected(i))
                .count();
            assert!(
                2 * live > group.n(),
                "group {}: {live} of {} servers run connected; liveness needs a majority",
                self.gid(gi),
                group.n()
            );
        }
        let bound = SettleBound::for_groups(self.group(0).options());
        loop {
            let change = self.watch.borrow().change;
            let latest = self.latest_config().await.map_or(0, |config| config.num);
            let Some(floor) = change.floor else {
                sleep(WATCH_PERIOD).await;
                continue;
            };
            let behind = latest.saturating_sub(floor);
            let limit = bound.within(behind);
            if let Some(settled_at) = change.settled_at {
                let took = settled_at - change.at;
                println!(
                    "  settled {} ms after the last change ({behind} configs behind; bound {} ms)",
                    took.as_millis(),
                    limit.as_millis()
                );
                assert!(
                    took <= limit,
                    "settled {took:?} after the last change: over the bound {limit:?} \
                     ({behind} configs behind)"
                );
                return took;
            }
            if change.at.elapsed() > limit {
                panic!(
                    "not settled {:?} after the last change (bound {limit:?}, {behind} configs \
                     behind):\n{}",
                    change.at.elapsed(),
                    self.unsettled().await.join("\n")
                );
            }
            sleep(WATCH_PERIOD).await;
        }
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
