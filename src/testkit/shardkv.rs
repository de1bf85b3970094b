//! 6.5840's shardkv harness (`shardkv/config.go`, 2024 edition).
//!
//! [`ShardKvConfig`] runs one controller service of 3 servers ([`CtrlerConfig`], named
//! `ctlr-{random}-{i}`) and 3 replica groups, gids 100, 101 and 102, of `n` servers each,
//! named `server-{gid}-{i}`, each with the "ShardKV" and "Raft" services. Every server starts
//! with fresh enabled ends to its group and to the controller; for calls to other groups it
//! gets a `make_end` that makes fresh enabled ends by server name. Shutting a server down
//! disables its group and controller ends and deletes it; the ends it made itself stay
//! enabled, so a killed server must stop sending on its own. More controller services can be
//! started ([`ShardKvConfig::start_ctrler_service`]) and clerks pointed at any of them.
//! The op wrappers count operations and can record them for the linearizability checker.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::ctrler::CtrlerConfig;
use super::kv::{OpLog, OpRecorder};
use super::{check_time_limit, rand_string, Sim};
use crate::actors::clerk::Clerk;
use crate::actors::client_end::EndMaker;
use crate::actors::ctrler::clerk::CtrlerClerk;
use crate::actors::network::NetworkHandle;
use crate::actors::shardkv::clerk;
use crate::actors::shardkv::{ShardKvNode, ShardKvSetup};
use crate::messages::ctrler::{Config, Gid};
use crate::storage::{MemPersister, Persister};

/// Number of replica groups (gids 100, 101, 102).
pub const NGROUPS: usize = 3;

struct Group {
    gid: Gid,
    nodes: Vec<Option<ShardKvNode>>,
    saved: Vec<MemPersister>,
    /// Per server, the names of its ends to its group and to the controller.
    end_names: Vec<Vec<String>>,
    incarnations: Vec<u64>,
}

struct State {
    groups: Vec<Group>,
    rng: ChaCha8Rng,
    t0: Instant,
    rpcs0: u64,
    ops0: u64,
}

/// 6.5840's shardkv test configuration. Clones share the cluster.
#[derive(Clone)]
pub struct ShardKvConfig {
    sim: Sim,
    n: usize,
    max_raft_state: Option<usize>,
    ctl: CtrlerConfig,
    mck: CtrlerClerk,
    make_end: EndMaker,
    created: Instant,
    recorder: Rc<OpRecorder>,
    state: Rc<RefCell<State>>,
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

impl ShardKvConfig {
    /// `make_config(n, unreliable, maxraftstate)`: the controller service, then all servers of
    /// the 3 groups (none joined), then the network's reliability. `max_raft_state < 0`
    /// means never snapshot.
    pub async fn new(sim: &Sim, n: usize, unreliable: bool, max_raft_state: i64) -> Self {
        let mut rng = sim.rng("shardkv-config");
        let ctl = CtrlerConfig::new(sim, 3, &format!("ctlr-{}-", rand_string(&mut rng, 8))).await;
        let mck = ctl.make_client().await;
        let groups = (0..NGROUPS)
            .map(|gi| Group {
                gid: 100 + gi as Gid,
                nodes: vec![None; n],
                saved: (0..n).map(|_| MemPersister::new()).collect(),
                end_names: vec![Vec::new(); n],
                incarnations: vec![0; n],
            })
            .collect();
        let cfg = ShardKvConfig {
            sim: sim.clone(),
            n,
            max_raft_state: usize::try_from(max_raft_state).ok(),
            ctl,
            mck,
            make_end: end_maker(sim.network().clone()),
            created: Instant::now(),
            recorder: Rc::new(OpRecorder::new()),
            state: Rc::new(RefCell::new(State {
                groups,
                rng,
                t0: Instant::now(),
                rpcs0: 0,
                ops0: 0,
            })),
        };
        for gi in 0..NGROUPS {
            cfg.start_group(gi).await;
        }
        sim.network().set_reliable(!unreliable);
        cfg
    }

    /// The gid of group `gi`.
    pub fn gid(&self, gi: usize) -> Gid {
        self.state.borrow().groups[gi].gid
    }

    /// A random value of `n` characters from the harness's seeded generator.
    pub fn rand_string(&self, n: usize) -> String {
        rand_string(&mut self.state.borrow_mut().rng, n)
    }

    /// A random number in `0..n` from the harness's seeded generator.
    pub fn rand_below(&self, n: u64) -> u64 {
        self.state.borrow_mut().rng.gen_range(0..n)
    }

    /// The network name of server `i` of group `gi`.
    pub fn server_name(&self, gi: usize, i: usize) -> String {
        format!("server-{}-{i}", self.gid(gi))
    }

    /// `StartCtrlerService`: another controller service of 3 servers on the same network.
    pub async fn start_ctrler_service(&self) -> CtrlerConfig {
        let prefix = format!("ctlr-{}-", self.rand_string(8));
        CtrlerConfig::new(&self.sim, 3, &prefix).await
    }

    /// `makeClient(ctl)`: a clerk that asks `ctl` for configs.
    pub async fn make_client_of(&self, ctl: &CtrlerConfig) -> Clerk {
        let ctrler = ctl.make_client().await;
        let client_id = self.state.borrow_mut().rng.gen::<u64>();
        clerk::start(ctrler, self.make_end.clone(), client_id)
    }

    /// `makeClient()`: a clerk of the main controller.
    pub async fn make_client(&self) -> Clerk {
        self.make_client_of(&self.ctl).await
    }

    /// `StartServer(gi, i)`: a server from a copy of its storage, with fresh enabled ends to
    /// its group and to the controller.
    pub async fn start_server(&self, gi: usize, i: usize) {
        let me = self.server_name(gi, i);
        let net = self.sim.network().clone();
        let mut peers = Vec::with_capacity(self.n);
        for j in 0..self.n {
            let name = self.rand_string(20);
            let end = net
                .make_end(&name, Some(&me))
                .await
                .unwrap_or_else(|e| panic!("start_server({gi}, {i}): {e}"));
            net.connect(&name, &self.server_name(gi, j));
            net.enable(&name, true);
            peers.push(end);
        }
        let ctrlers = self.ctl.make_ends(Some(&me)).await;
        let (persister, gid, incarnation) = {
            let mut state = self.state.borrow_mut();
            let group = &mut state.groups[gi];
            group.end_names[i] = peers
                .iter()
                .chain(&ctrlers)
                .map(|end| end.name().to_string())
                .collect();
            group.incarnations[i] += 1;
            let persister = group.saved[i].copy();
            group.saved[i] = persister.clone();
            (persister, group.gid, group.incarnations[i])
        };
        let node = ShardKvNode::start(ShardKvSetup {
            peers,
            me: i,
            persister,
            max_raft_state: self.max_raft_state,
            gid,
            ctrlers,
            make_end: self.make_end.clone(),
            seed: self.sim.derive(&format!("{me}-{incarnation}")),
        })
        .unwrap_or_else(|e| panic!("start_server({gi}, {i}): {e}"));
        net.add_server(&me, node.server());
        self.state.borrow_mut().groups[gi].nodes[i] = Some(node);
    }

    /// `ShutdownServer(gi, i)`: disable its group and controller ends, delete it, keep a copy
    /// of its storage, kill it.
    pub fn shutdown_server(&self, gi: usize, i: usize) {
        let net = self.sim.network();
        let mut state = self.state.borrow_mut();
        let group = &mut state.groups[gi];
        for name in &group.end_names[i] {
            net.enable(name, false);
        }
        net.delete_server(&format!("server-{}-{i}", group.gid));
        let copy = group.saved[i].copy();
        group.saved[i] = copy;
        if let Some(node) = group.nodes[i].take() {
            node.kill();
        }
    }

    /// `StartGroup(gi)`.
    pub async fn start_group(&self, gi: usize) {
        for i in 0..self.n {
            self.start_server(gi, i).await;
        }
    }

    /// `ShutdownGroup(gi)`.
    pub fn shutdown_group(&self, gi: usize) {
        for i in 0..self.n {
            self.shutdown_server(gi, i);
        }
    }

    /// The Join argument for groups `gis`: each gid with its servers' names.
    pub fn group_servers(&self, gis: &[usize]) -> BTreeMap<Gid, Vec<String>> {
        gis.iter()
            .map(|&gi| {
                let names = (0..self.n).map(|i| self.server_name(gi, i)).collect();
                (self.gid(gi), names)
            })
            .collect()
    }

    /// `joinm(gis, ctl)` through the given controller clerk.
    pub async fn ctljoin(&self, gis: &[usize], mck: &CtrlerClerk) {
        let servers = self.group_servers(gis);
        mck.join(servers)
            .await
            .unwrap_or_else(|e| panic!("join {gis:?}: {e}"));
    }

    /// `join(gi)`.
    pub async fn join(&self, gi: usize) {
        self.joinm(&[gi]).await;
    }

    /// `joinm(gis)`: several groups in one Join.
    pub async fn joinm(&self, gis: &[usize]) {
        self.ctljoin(gis, &self.mck).await;
    }

    /// `leave(gi)`.
    pub async fn leave(&self, gi: usize) {
        self.leavem(&[gi]).await;
    }

    /// `leavem(gis)`: several groups in one Leave.
    pub async fn leavem(&self, gis: &[usize]) {
        let gids = gis.iter().map(|&gi| self.gid(gi)).collect();
        self.mck
            .leave(gids)
            .await
            .unwrap_or_else(|e| panic!("leave {gis:?}: {e}"));
    }

    /// The latest config of the main controller.
    pub async fn query(&self) -> Config {
        self.mck
            .query(-1)
            .await
            .unwrap_or_else(|e| panic!("query: {e}"))
    }

    /// `checklogs()`: with snapshots, no Raft state above 8 × maxraftstate; without, no
    /// snapshot at all.
    pub fn checklogs(&self) {
        let state = self.state.borrow();
        for group in &state.groups {
            for (i, saved) in group.saved.iter().enumerate() {
                let (raft, snap) = (saved.raft_state_size(), saved.snapshot_size());
                match self.max_raft_state {
                    Some(max) => assert!(
                        raft <= 8 * max,
                        "server-{}-{i}: persister.RaftStateSize() {raft}, but maxraftstate {max}",
                        group.gid
                    ),
                    None => assert!(
                        snap == 0,
                        "server-{}-{i}: maxraftstate is -1, but snapshot is non-empty!",
                        group.gid
                    ),
                }
            }
        }
    }

    /// Persisted Raft state plus snapshot bytes, summed over every server of every group.
    pub fn stored_bytes(&self) -> usize {
        let state = self.state.borrow();
        state
            .groups
            .iter()
            .flat_map(|g| &g.saved)
            .map(|p| p.raft_state_size() + p.snapshot_size())
            .sum()
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
        let rpcs = self.sim.network().total_calls().await.unwrap_or(0);
        let mut state = self.state.borrow_mut();
        state.t0 = Instant::now();
        state.rpcs0 = rpcs;
        state.ops0 = self.recorder.ops();
    }

    /// The time limit and the statistics line: virtual seconds, servers, RPCs, clerk ops.
    pub async fn end(&self) {
        check_time_limit(self.created);
        let rpcs = self.sim.network().total_calls().await.unwrap_or(0);
        let state = self.state.borrow();
        println!(
            "  ... Passed --  {:4.1}  {} {:6} {:5}",
            state.t0.elapsed().as_secs_f64(),
            NGROUPS * self.n + self.ctl.n(),
            rpcs - state.rpcs0,
            self.recorder.ops() - state.ops0,
        );
    }

    /// Stops every server, the controller's included.
    pub fn cleanup(&self) {
        for gi in 0..NGROUPS {
            let mut state = self.state.borrow_mut();
            for node in state.groups[gi].nodes.iter_mut() {
                if let Some(node) = node.take() {
                    node.kill();
                }
            }
        }
        self.ctl.cleanup();
    }
}
