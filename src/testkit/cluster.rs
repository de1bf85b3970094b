//! One cluster builder for every simulated test: start, crash, restart, partition and connect
//! the servers of any service on the simulated network.
//!
//! A [`Cluster`] runs `servers` servers of one [`ServerKind`] (Raft peers alone, KV servers,
//! controller servers, members of a shard group, or a test's own kind), each registered on the
//! network as `{name}{i}` with the services the kind names. Servers reach each other through
//! client ends that the cluster makes fresh for every incarnation; which of them work follows
//! the cluster's link table, so a restarted server comes back exactly as connected as the
//! faults applied so far say. Faults are methods named for what they do: [`Cluster::crash`],
//! [`Cluster::restart`], [`Cluster::disconnect`], [`Cluster::partition`], ...; network-wide
//! settings (loss, long delays) are on [`Sim::network`].
//!
//! Every server's "Raft" service sits behind a [`RaftTap`] that counts what reaches it
//! ([`Cluster::raft_traffic`]).
//!
//! A crash keeps what the server last saved, with 6.5840's semantics: in memory, the restarted
//! server gets a copy, and the old instance, should it still be winding down, writes only to
//! the original; on disk ([`StorageKind::Files`]) the old handle is closed before the files
//! are opened again.
//!
//! The 6.5840 harnesses (`raft.rs`, `kv.rs`, `ctrler.rs`, `shardkv.rs`) are thin layers over
//! this one.

use std::cell::RefCell;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::time::{sleep, Instant};

use super::traffic::{RaftTap, RaftTraffic, TrafficCounter};
use super::{check_time_limit, first_leader, rand_string, Sim};
use crate::actors::client_end::ClientEnd;
use crate::actors::raft::{RaftConfig, RaftPeer, RestoreError};
use crate::actors::rsm::{ReplicaSetup, SessionClock, SessionPolicy};
use crate::messages::net::Server;
use crate::messages::raft::{GetState, Membership};
use crate::messages::storage::{SavedState, StateUpdate};
use crate::messages::storage::{SetDiskLatency, StallDisk};
use crate::metrics::Metrics;
use crate::storage::{FilePersister, MemPersister, Persister};
use crate::trace::EventKind;

/// Where the servers of a cluster keep their state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StorageKind {
    /// In memory ([`MemPersister`]); a restarted server gets a copy of what was saved.
    #[default]
    Memory,
    /// On disk ([`FilePersister`]), server i in `dir/i`.
    Files(PathBuf),
}

/// How to build a cluster. Start from `ClusterOptions::default()` and name what differs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of servers.
    pub servers: usize,
    /// Server i is registered on the network as `{name}{i}`; the name also labels the seeds
    /// derived for the cluster, so clusters sharing one network need different names.
    pub name: String,
    /// Whether the network delivers every message (false: 6.5840's unreliable net). This
    /// setting is network-wide.
    pub reliable: bool,
    /// Whether undeliverable calls fail after up to 7 s instead of 100 ms (network-wide).
    pub long_delays: bool,
    /// Servers snapshot when their Raft state reaches this many bytes (`None`: never).
    pub max_raft_state: Option<usize>,
    /// Where servers keep their state.
    pub storage: StorageKind,
    /// Whether the servers start connected to each other; without, each stays isolated until
    /// [`Cluster::connect`].
    pub connected: bool,
    /// The Raft peers' timing, message sizes and features.
    pub raft: RaftConfig,
    /// Client sessions' lifetime and cap (the clock is always the run's virtual time).
    pub sessions: SessionPolicy,
    /// How many of the servers are the cluster's first voters (`None`: all of them). The
    /// others start with no members, as nodes that join a running cluster do, and take part
    /// once a membership change adds them.
    pub initial_voters: Option<usize>,
}

impl Default for ClusterOptions {
    /// Three connected servers in memory on a reliable net, no snapshots, and Raft's defaults
    /// (pre-vote and check-quorum on) unless `RAINKV_PLAIN_RAFT` is set: then both are off, so
    /// any suite can be run against the lab's plain Raft.
    fn default() -> Self {
        let plain = super::runner::env_flag("RAINKV_PLAIN_RAFT");
        let raft = RaftConfig {
            pre_vote: !plain,
            check_quorum: !plain,
            ..RaftConfig::default()
        };
        ClusterOptions {
            servers: 3,
            name: String::new(),
            reliable: true,
            long_delays: false,
            max_raft_state: None,
            storage: StorageKind::Memory,
            connected: true,
            raft,
            sessions: SessionPolicy::default(),
            initial_voters: None,
        }
    }
}

/// The storage a test server runs on: either kind of [`StorageKind`].
#[derive(Clone)]
pub enum TestStore {
    /// In memory.
    Memory(MemPersister),
    /// On disk.
    Files(FilePersister),
}

impl TestStore {
    fn persister(&self) -> &dyn Persister {
        match self {
            TestStore::Memory(p) => p,
            TestStore::Files(p) => p,
        }
    }
}

impl Persister for TestStore {
    fn save(&mut self, update: StateUpdate) -> std::io::Result<()> {
        match self {
            TestStore::Memory(p) => p.save(update),
            TestStore::Files(p) => p.save(update),
        }
    }

    fn load(&self) -> std::io::Result<SavedState> {
        self.persister().load()
    }

    fn read_snapshot(&self) -> Arc<Vec<u8>> {
        self.persister().read_snapshot()
    }

    fn raft_state_size(&self) -> usize {
        self.persister().raft_state_size()
    }

    fn snapshot_size(&self) -> usize {
        self.persister().snapshot_size()
    }

    /// Never: in a simulation even a store on disk is saved on the simulation's thread, so the
    /// run stays deterministic and virtual time does not jump while a real fsync runs.
    fn blocks(&self) -> bool {
        false
    }
}

/// What a server is made of: how to start one, what it offers on the network, how to stop it.
pub trait ServerKind: 'static {
    /// A running server's handles.
    type Node: Clone + 'static;

    /// Starts a server from `setup` (its ends to its peers, its storage, its seed); `ctx`
    /// names it and makes whatever other ends it needs.
    fn start(
        &self,
        setup: ReplicaSetup<TestStore>,
        ctx: &mut ServerContext,
    ) -> impl Future<Output = Result<Self::Node, RestoreError>>;

    /// The services to register for it on the network.
    fn services(&self, node: &Self::Node) -> Server;

    /// Its Raft peer.
    fn raft(&self, node: &Self::Node) -> Addr<RaftPeer>;

    /// Stops it (a crash: nothing more is sent).
    fn stop(&self, node: &Self::Node);
}

/// What a [`ServerKind`] gets to know about the server it starts.
pub struct ServerContext {
    name: String,
    sim: Sim,
    /// Ends this incarnation made besides its peer ends; disabled when it crashes.
    owned_ends: Vec<String>,
    rng: ChaCha8Rng,
}

impl ServerContext {
    /// The server's network name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The simulation the server runs in.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// A fresh enabled end from this server to the server named `to` (of any cluster on the
    /// network), disabled when this server crashes.
    pub async fn make_end_to(&mut self, to: &str) -> ClientEnd {
        let name = rand_string(&mut self.rng, 20);
        let net = self.sim.network();
        let end = net
            .make_end(&name, Some(&self.name))
            .await
            .unwrap_or_else(|e| panic!("{}: cannot make an end to {to}: {e}", self.name));
        net.connect(&name, to);
        net.enable(&name, true);
        self.owned_ends.push(name);
        end
    }
}

/// Fresh client ends to every server of a cluster, in server order.
pub struct ClientEnds {
    names: Vec<String>,
    /// The ends; `ends[i]` reaches server i.
    pub ends: Vec<ClientEnd>,
}

struct Slot<N> {
    node: Option<N>,
    /// What a restart starts from (in memory: the copy taken at the crash).
    store: Option<TestStore>,
    /// `peer_ends[j]`: the name of this server's end to server j.
    peer_ends: Vec<String>,
    owned_ends: Vec<String>,
    incarnation: u64,
    /// What its Raft service received, over all incarnations.
    traffic: TrafficCounter,
}

struct State<N> {
    slots: Vec<Slot<N>>,
    /// `links[i][j]`: server i's end to server j works.
    links: Vec<Vec<bool>>,
    /// 6.5840's `connected[i]`: server i is attached to the net (see [`Cluster::connect`]).
    attached: Vec<bool>,
    rng: ChaCha8Rng,
}

/// A cluster of servers of one kind on the simulated network. Clones are handles on the same
/// cluster.
pub struct Cluster<K: ServerKind> {
    sim: Sim,
    kind: Rc<K>,
    options: Rc<ClusterOptions>,
    created: Instant,
    state: Rc<RefCell<State<K::Node>>>,
}

impl<K: ServerKind> Clone for Cluster<K> {
    fn clone(&self) -> Self {
        Cluster {
            sim: self.sim.clone(),
            kind: self.kind.clone(),
            options: self.options.clone(),
            created: self.created,
            state: self.state.clone(),
        }
    }
}

impl<K: ServerKind> Cluster<K> {
    /// Starts every server (connected to each other unless `options.connected` is false) and
    /// applies the network settings of `options`.
    pub async fn start(sim: &Sim, kind: K, options: ClusterOptions) -> Cluster<K> {
        let n = options.servers;
        let net = sim.network();
        net.set_reliable(options.reliable);
        net.set_long_delays(options.long_delays);
        let cluster = Cluster {
            sim: sim.clone(),
            kind: Rc::new(kind),
            created: Instant::now(),
            state: Rc::new(RefCell::new(State {
                slots: (0..n)
                    .map(|_| Slot {
                        node: None,
                        store: None,
                        peer_ends: Vec::new(),
                        owned_ends: Vec::new(),
                        incarnation: 0,
                        traffic: TrafficCounter::default(),
                    })
                    .collect(),
                links: vec![vec![false; n]; n],
                attached: vec![false; n],
                rng: sim.rng(&format!("cluster-{}", options.name)),
            })),
            options: Rc::new(options),
        };
        for i in 0..n {
            cluster.restart(i).await;
        }
        if cluster.options.connected {
            cluster.connect_all();
        }
        cluster
    }

    /// The simulation this cluster runs in.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// The options it was built with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The kind of its servers.
    pub fn kind(&self) -> &K {
        &self.kind
    }

    /// Number of servers.
    pub fn n(&self) -> usize {
        self.options.servers
    }

    /// Every server's index.
    pub fn all(&self) -> Vec<usize> {
        (0..self.n()).collect()
    }

    /// The network name of server i.
    pub fn server_name(&self, i: usize) -> String {
        format!("{}{i}", self.options.name)
    }

    /// Runs `f` with the cluster's seeded generator.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
        f(&mut self.state.borrow_mut().rng)
    }

    /// A random string of `n` characters from the cluster's generator.
    pub fn rand_string(&self, n: usize) -> String {
        self.with_rng(|rng| rand_string(rng, n))
    }

    /// Server i's handles, if it is running.
    pub fn node(&self, i: usize) -> Option<K::Node> {
        self.state.borrow().slots[i].node.clone()
    }

    /// Server i's handles; panics if it is down.
    pub fn running(&self, i: usize) -> K::Node {
        self.node(i)
            .unwrap_or_else(|| panic!("server {} is not running", self.server_name(i)))
    }

    /// Server i's Raft peer, if it is running.
    pub fn raft(&self, i: usize) -> Option<Addr<RaftPeer>> {
        self.node(i).map(|node| self.kind.raft(&node))
    }

    /// Whether server i is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.state.borrow().slots[i].node.is_some()
    }

    /// Whether server i is attached to the net (6.5840's `connected[i]`).
    pub fn is_connected(&self, i: usize) -> bool {
        self.state.borrow().attached[i]
    }

    /// Crashes server i: cuts it off, removes it from the network, keeps what it last saved
    /// and stops it. Nothing it does afterwards reaches anyone or its storage.
    pub fn crash(&self, i: usize) {
        self.sim.trace().emit(|| EventKind::Crash {
            node: self.server_name(i),
        });
        self.disconnect(i);
        let net = self.sim.network();
        net.delete_server(&self.server_name(i));
        let mut state = self.state.borrow_mut();
        let slot = &mut state.slots[i];
        for name in slot.owned_ends.drain(..) {
            net.enable(&name, false);
        }
        slot.store = match slot.store.take() {
            Some(TestStore::Memory(saved)) => Some(TestStore::Memory(saved.copy())),
            Some(TestStore::Files(files)) => {
                files.close();
                None
            }
            None => None,
        };
        if let Some(node) = slot.node.take() {
            self.kind.stop(&node);
        }
    }

    /// (Re)starts server i from what it last saved, with fresh ends, as connected as the link
    /// table says (a crashed server is cut off until connected again).
    pub async fn restart(&self, i: usize) {
        if self.is_up(i) {
            self.crash(i);
        }
        let me = self.server_name(i);
        let net = self.sim.network().clone();
        let n = self.n();
        let names: Vec<String> = (0..n).map(|_| self.rand_string(20)).collect();
        let mut peers = Vec::with_capacity(n);
        for (j, name) in names.iter().enumerate() {
            let end = net
                .make_end(name, Some(&me))
                .await
                .unwrap_or_else(|e| panic!("restart({me}): {e}"));
            net.connect(name, &self.server_name(j));
            peers.push(end);
        }
        let (store, incarnation) = {
            let mut state = self.state.borrow_mut();
            let slot = &mut state.slots[i];
            slot.peer_ends = names;
            slot.incarnation += 1;
            let store = match (slot.store.take(), &self.options.storage) {
                (Some(TestStore::Memory(saved)), _) => TestStore::Memory(saved.copy()),
                (_, StorageKind::Memory) => TestStore::Memory(MemPersister::new()),
                (_, StorageKind::Files(dir)) => {
                    let dir = dir.join(i.to_string());
                    TestStore::Files(FilePersister::open(&dir).unwrap_or_else(|e| {
                        panic!("restart({me}): cannot open {}: {e}", dir.display())
                    }))
                }
            };
            slot.store = Some(store.clone());
            (store, slot.incarnation)
        };
        let voters = self.options.initial_voters.unwrap_or(n).min(n);
        let setup = ReplicaSetup {
            id: i,
            peers,
            initial_members: if i < voters {
                Membership::with_voters(voters)
            } else {
                Membership::default()
            },
            // Every server's ends are made up front, joining ones included.
            connect: None,
            persister: store,
            raft: self.options.raft.clone(),
            max_raft_state: self.options.max_raft_state,
            proportional_snapshots: false,
            seed: self.sim.derive(&format!("{me}-{incarnation}")),
            // Virtual time since the run started: every replica stamps with the same clock.
            sessions: SessionPolicy {
                clock: SessionClock::Since(self.sim.started()),
                ..self.options.sessions.clone()
            },
            trace: self.sim.trace().for_node(&me),
            metrics: Metrics::off(),
        };
        let mut ctx = ServerContext {
            name: me.clone(),
            sim: self.sim.clone(),
            owned_ends: Vec::new(),
            rng: self.sim.rng(&format!("{me}-{incarnation}-ends")),
        };
        let node = self
            .kind
            .start(setup, &mut ctx)
            .await
            .unwrap_or_else(|e| panic!("restart({me}): cannot restore its state: {e}"));
        let mut services = self.kind.services(&node);
        if let Some(raft) = services.services.remove("Raft") {
            let counter = self.state.borrow().slots[i].traffic.clone();
            let tap = RaftTap::new(raft, counter).start();
            services = services.with_service("Raft", tap.recipient());
        }
        net.add_server(&me, services);
        self.sim
            .trace()
            .emit(|| EventKind::Restart { node: me.clone() });
        {
            let mut state = self.state.borrow_mut();
            let slot = &mut state.slots[i];
            slot.node = Some(node);
            slot.owned_ends = ctx.owned_ends;
        }
        self.apply_links(i, &self.all());
    }

    /// Enables or disables the ends between i and each of `others` as the link table says.
    fn apply_links(&self, i: usize, others: &[usize]) {
        let state = self.state.borrow();
        let net = self.sim.network();
        for &j in others {
            if let Some(name) = state.slots[i].peer_ends.get(j) {
                net.enable(name, state.links[i][j]);
            }
            if let Some(name) = state.slots[j].peer_ends.get(i) {
                net.enable(name, state.links[j][i]);
            }
        }
    }

    fn set_links(&self, i: usize, others: &[usize], up: bool) {
        {
            let mut state = self.state.borrow_mut();
            for &j in others {
                if i != j && state.links[i][j] != up {
                    self.sim.trace().emit(|| EventKind::Link {
                        a: self.server_name(i),
                        b: self.server_name(j),
                        up,
                        one_way: false,
                    });
                }
                state.links[i][j] = up;
                state.links[j][i] = up;
            }
        }
        self.apply_links(i, others);
    }

    /// 6.5840's `connect(i)`: attaches server i; its links to every attached server work.
    pub fn connect(&self, i: usize) {
        let attached: Vec<usize> = {
            let mut state = self.state.borrow_mut();
            state.attached[i] = true;
            (0..self.n()).filter(|&j| state.attached[j]).collect()
        };
        self.set_links(i, &attached, true);
    }

    /// 6.5840's `disconnect(i)`: detaches server i; none of its links work.
    pub fn disconnect(&self, i: usize) {
        self.state.borrow_mut().attached[i] = false;
        self.set_links(i, &self.all(), false);
    }

    /// The links between server i and each of `others` work (both directions).
    pub fn connect_to(&self, i: usize, others: &[usize]) {
        self.set_links(i, others, true);
    }

    /// The links between server i and each of `others` are cut (both directions).
    pub fn disconnect_from(&self, i: usize, others: &[usize]) {
        self.set_links(i, others, false);
    }

    /// Every server is attached and reaches every other.
    pub fn connect_all(&self) {
        for i in 0..self.n() {
            self.connect(i);
        }
    }

    /// Servers within each side reach each other and nothing across; servers in neither are
    /// left as they are.
    pub fn partition(&self, p1: &[usize], p2: &[usize]) {
        for &i in p1 {
            self.disconnect_from(i, p2);
            self.connect_to(i, p1);
        }
        for &i in p2 {
            self.connect_to(i, p2);
        }
    }

    /// Cuts (`up == false`) or restores one direction of the link between two servers: while
    /// cut, nothing server `from` sends reaches server `to` — its calls to `to` fail, and `to`'s
    /// calls to it are handled but their replies are lost. The other direction is untouched,
    /// and the cut is independent of [`Cluster::connect`] and [`Cluster::disconnect`].
    pub fn set_one_way(&self, from: usize, to: usize, up: bool) {
        self.sim.trace().emit(|| EventKind::Link {
            a: self.server_name(from),
            b: self.server_name(to),
            up,
            one_way: true,
        });
        let net = self.sim.network();
        net.set_link(&self.server_name(from), &self.server_name(to), up);
    }

    /// Delivers one request in ten a second time, a little later (a duplicated packet).
    pub fn set_duplicates(&self, on: bool) {
        self.sim.network().set_duplicates(on);
    }

    /// Fresh client ends (owned by no server) to every server, in server order; the ends to
    /// the servers in `enabled` work.
    pub async fn client_ends(&self, enabled: &[usize]) -> ClientEnds {
        let net = self.sim.network();
        let mut ends = ClientEnds {
            names: Vec::with_capacity(self.n()),
            ends: Vec::with_capacity(self.n()),
        };
        for j in 0..self.n() {
            let name = self.rand_string(20);
            let end = net
                .make_end(&name, None)
                .await
                .unwrap_or_else(|e| panic!("client_ends: {e}"));
            net.connect(&name, &self.server_name(j));
            ends.names.push(name);
            ends.ends.push(end);
        }
        self.set_client_links(&ends, enabled, true);
        ends
    }

    /// Enables or disables the client's ends to the servers in `servers`.
    pub fn set_client_links(&self, client: &ClientEnds, servers: &[usize], up: bool) {
        for &j in servers {
            self.sim.network().enable(&client.names[j], up);
        }
    }

    /// 6.5840's `Leader()`: the first running server, in index order, whose Raft leads.
    pub async fn leader(&self) -> Option<usize> {
        first_leader((0..self.n()).map(|i| self.raft(i)).collect()).await
    }

    /// 6.5840's `checkOneLeader`: after rounds of about half a second (at most ten), the
    /// leader of the highest term among attached servers; fails the test if a term has two.
    pub async fn check_one_leader(&self) -> usize {
        for _ in 0..10 {
            let pause = self.with_rng(|rng| rng.gen_range(450..550));
            sleep(Duration::from_millis(pause)).await;
            let mut leaders: std::collections::BTreeMap<u64, Vec<usize>> = Default::default();
            for i in 0..self.n() {
                let Some(raft) = self.raft(i).filter(|_| self.is_connected(i)) else {
                    continue;
                };
                if let Ok(state) = raft.send(GetState).await {
                    if state.is_leader() {
                        leaders.entry(state.term).or_default().push(i);
                    }
                }
            }
            for (term, ids) in &leaders {
                assert!(ids.len() <= 1, "term {term} has {} (>1) leaders", ids.len());
            }
            if let Some((_, ids)) = leaders.last_key_value() {
                return ids[0];
            }
        }
        panic!("expected one leader, got none");
    }

    /// The Raft traffic server i has received so far, over all its incarnations.
    pub fn raft_traffic(&self, i: usize) -> RaftTraffic {
        self.state.borrow().slots[i].traffic.get()
    }

    /// The Raft traffic all servers have received so far.
    pub fn total_raft_traffic(&self) -> RaftTraffic {
        (0..self.n()).fold(RaftTraffic::default(), |sum, i| {
            sum.plus(&self.raft_traffic(i))
        })
    }

    /// Makes every save of server i's current incarnation take `latency` longer (a slow
    /// disk); zero turns it off.
    pub fn set_disk_latency(&self, i: usize, latency: Duration) {
        if let Some(raft) = self.raft(i) {
            raft.do_send(SetDiskLatency(latency));
        }
    }

    /// Holds every save of server i's current incarnation until `stall` from now (a stuck
    /// disk); saves asked for meanwhile complete, in order, when it ends.
    pub fn stall_disk(&self, i: usize, stall: Duration) {
        if let Some(raft) = self.raft(i) {
            raft.do_send(StallDisk(stall));
        }
    }

    /// What server i keeps (the storage its current or next incarnation uses).
    pub fn storage(&self, i: usize) -> Option<TestStore> {
        self.state.borrow().slots[i].store.clone()
    }

    /// The largest saved Raft state over all servers, in bytes.
    pub fn max_raft_state_size(&self) -> usize {
        self.stores()
            .map(|s| s.raft_state_size())
            .max()
            .unwrap_or(0)
    }

    /// The largest saved snapshot over all servers, in bytes.
    pub fn max_snapshot_size(&self) -> usize {
        self.stores().map(|s| s.snapshot_size()).max().unwrap_or(0)
    }

    /// Saved Raft state plus snapshot bytes, summed over all servers.
    pub fn stored_bytes(&self) -> usize {
        self.stores()
            .map(|s| s.raft_state_size() + s.snapshot_size())
            .sum()
    }

    fn stores(&self) -> impl Iterator<Item = TestStore> {
        let stores: Vec<TestStore> = self
            .state
            .borrow()
            .slots
            .iter()
            .filter_map(|slot| slot.store.clone())
            .collect();
        stores.into_iter()
    }

    /// 6.5840's `checkTimeout`: fails the test if the cluster has run longer than the limit.
    pub fn check_time_limit(&self) {
        check_time_limit(self.created);
    }

    /// Stops every server (6.5840's `cleanup`).
    pub fn shutdown(&self) {
        let nodes: Vec<K::Node> = self
            .state
            .borrow_mut()
            .slots
            .iter_mut()
            .filter_map(|slot| slot.node.take())
            .collect();
        for node in &nodes {
            self.kind.stop(node);
        }
    }
}
