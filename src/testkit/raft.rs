//! 6.5840's Raft test harness (`raft/config.go`), on the simulated network and virtual time.
//!
//! [`RaftHarness`] is a [`Cluster`] of bare Raft peers ([`RaftServers`]: one `"Raft"` service
//! per server, and the tester's applier as the service above each peer). It offers the
//! original helpers with the same contracts under full names: `restart`/`crash` (6.5840's
//! `start1`/`crash1`: restart from a copy of exactly what was last saved),
//! `connect`/`disconnect`, `check_one_leader`, `check_terms`, `check_no_leader`,
//! `n_committed`, `wait`, `one`, `begin`/`end` with the statistics line, and both appliers
//! with their safety checks. An apply error fails the test with a clear message at the next
//! check instead of killing the process.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, Instant};

use super::cluster::{Cluster, ClusterOptions, ServerContext, ServerKind, TestStore};
use super::Sim;
use crate::actors::raft::{PeerSetup, RaftPeer, RestoreError};
use crate::actors::rsm::ReplicaSetup;
use crate::messages::apply::ApplyMsg;
use crate::messages::lifecycle::Stop;
use crate::messages::net::Server;
use crate::messages::raft::{GetState, Membership, Propose, Proposed, RaftState, Snapshot};
use crate::storage::Persister;

/// 6.5840's `RaftElectionTimeout`: elections are allowed a second.
pub const RAFT_ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// The snapshot applier snapshots every this many entries.
pub const SNAPSHOT_INTERVAL: u64 = 10;
/// 3D's bound on the persisted Raft state, in bytes.
pub const MAX_LOG_SIZE: usize = 2000;

/// A test command: 6.5840's tests commit Go ints and strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    /// An integer command.
    Int(i64),
    /// A string command.
    Str(String),
}

impl From<i64> for Cmd {
    fn from(x: i64) -> Self {
        Cmd::Int(x)
    }
}

impl From<String> for Cmd {
    fn from(s: String) -> Self {
        Cmd::Str(s)
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cmd::Int(x) => write!(f, "{x}"),
            Cmd::Str(s) if s.chars().count() > 20 => {
                write!(f, "{}…", s.chars().take(20).collect::<String>())
            }
            Cmd::Str(s) => write!(f, "{s}"),
        }
    }
}

impl Cmd {
    fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).unwrap_or_default()
    }
}

/// How the tester records a membership entry among the commands:
/// `membership voters [..] learners [..]`, so the servers' logs are compared entry by entry.
pub fn membership_cmd(membership: &Membership) -> Cmd {
    Cmd::Str(format!(
        "membership voters {:?} learners {:?}",
        membership.voters.keys().collect::<Vec<_>>(),
        membership.learners.keys().collect::<Vec<_>>()
    ))
}

/// What the tester's appliers record, shared by all of them (6.5840's `cfg.logs` and friends).
#[derive(Default)]
struct Applied {
    /// `logs[i][index]`: what server i applied at index.
    logs: Vec<BTreeMap<u64, Cmd>>,
    last_applied: Vec<u64>,
    max_index: u64,
    /// The first apply error, if any.
    error: Option<String>,
}

impl Applied {
    fn fail(&mut self, message: String) {
        log::error!("apply error: {message}");
        self.error.get_or_insert(message);
    }

    /// `checkLogs`: records `cmd` at `index` for server i unless another server applied a
    /// different command there; returns whether i had applied `index - 1`.
    fn check_logs(&mut self, i: usize, index: u64, cmd: Cmd) -> bool {
        let conflict = self.logs.iter().enumerate().find_map(|(j, log)| {
            log.get(&index)
                .filter(|old| **old != cmd)
                .map(|old| format!("commit index={index} server={i} {cmd} != server={j} {old}"))
        });
        if let Some(message) = conflict {
            self.fail(message);
        }
        let prev_ok = self.logs[i].contains_key(&(index - 1));
        self.logs[i].insert(index, cmd);
        self.max_index = self.max_index.max(index);
        prev_ok
    }

    /// `ingestSnap`: replaces server i's log with the snapshot's commands.
    fn ingest_snapshot(&mut self, i: usize, data: &[u8], index: Option<u64>) {
        let Ok((last_included, commands)) = rmp_serde::from_slice::<(u64, Vec<Option<Cmd>>)>(data)
        else {
            return self.fail(format!("server {i}: snapshot does not decode"));
        };
        if index.is_some_and(|index| index != last_included) {
            return self.fail(format!(
                "server {i} snapshot doesn't match m.SnapshotIndex ({last_included} != {index:?})"
            ));
        }
        self.logs[i] = commands
            .into_iter()
            .enumerate()
            .filter_map(|(j, cmd)| cmd.map(|cmd| (j as u64, cmd)))
            .collect();
        self.last_applied[i] = last_included;
    }

    /// The snapshot the snapshot applier hands to Raft at `index`.
    fn encode_snapshot(&self, i: usize, index: u64) -> Vec<u8> {
        let commands: Vec<Option<Cmd>> =
            (0..=index).map(|j| self.logs[i].get(&j).cloned()).collect();
        rmp_serde::to_vec(&(index, commands)).unwrap_or_default()
    }
}

/// The tester's applier for one peer: 6.5840's `applier` or, with snapshots, `applierSnap`.
struct TesterApplier {
    me: usize,
    applied: Rc<RefCell<Applied>>,
    snapshots: bool,
    peer: Addr<RaftPeer>,
}

impl Actor for TesterApplier {
    type Context = Context<Self>;
}

impl Handler<ApplyMsg> for TesterApplier {
    type Result = ();

    fn handle(&mut self, msg: ApplyMsg, _: &mut Self::Context) {
        let i = self.me;
        let mut applied = self.applied.borrow_mut();
        match msg {
            ApplyMsg::Halted { reason, .. } => applied.fail(format!("server {i} halted: {reason}")),
            ApplyMsg::Snapshot { index, data, .. } => {
                if self.snapshots {
                    applied.ingest_snapshot(i, &data, Some(index));
                }
            }
            ApplyMsg::Command { .. } | ApplyMsg::Membership { .. } => {
                let (index, cmd) = match msg {
                    ApplyMsg::Command { index, command, .. } => {
                        match rmp_serde::from_slice::<Cmd>(&command) {
                            Ok(cmd) => (index, cmd),
                            Err(_) => {
                                let why = format!("server {i}: command {index} does not decode");
                                return applied.fail(why);
                            }
                        }
                    }
                    ApplyMsg::Membership {
                        index, membership, ..
                    } => (index, membership_cmd(&membership)),
                    _ => return,
                };
                if self.snapshots && index != applied.last_applied[i] + 1 {
                    let expected = applied.last_applied[i] + 1;
                    return applied.fail(format!(
                        "server {i} apply out of order, expected index {expected}, got {index}"
                    ));
                }
                let prev_ok = applied.check_logs(i, index, cmd);
                if index > 1 && !prev_ok {
                    applied.fail(format!("server {i} apply out of order {index}"));
                }
                applied.last_applied[i] = index;
                if self.snapshots && (index + 1) % SNAPSHOT_INTERVAL == 0 {
                    let data = applied.encode_snapshot(i, index);
                    self.peer.do_send(Snapshot { index, data });
                }
            }
        }
    }
}

/// Bare Raft peers whose service is the tester's applier.
pub struct RaftServers {
    applied: Rc<RefCell<Applied>>,
    snapshots: bool,
}

impl ServerKind for RaftServers {
    type Node = Addr<RaftPeer>;

    fn start(
        &self,
        setup: ReplicaSetup<TestStore>,
        _: &mut ServerContext,
    ) -> impl Future<Output = Result<Addr<RaftPeer>, RestoreError>> {
        let i = setup.id;
        {
            let mut applied = self.applied.borrow_mut();
            applied.last_applied[i] = 0;
            let snapshot = setup.persister.read_snapshot();
            if !snapshot.is_empty() {
                applied.ingest_snapshot(i, &snapshot, None);
            }
        }
        // The applier's address exists before it runs, so the peer and the applier can each
        // be given the other.
        let applier = Context::<TesterApplier>::new();
        let raft = RaftPeer::start(PeerSetup {
            id: i,
            peers: setup.peers,
            config: setup.raft,
            persister: Box::new(setup.persister),
            service: applier.address().recipient(),
            seed: setup.seed,
            trace: setup.trace,
            metrics: setup.metrics,
            initial_members: setup.initial_members,
            connect: setup.connect,
        });
        if let Ok(raft) = &raft {
            applier.run(TesterApplier {
                me: i,
                applied: self.applied.clone(),
                snapshots: self.snapshots,
                peer: raft.clone(),
            });
        }
        std::future::ready(raft)
    }

    fn services(&self, raft: &Addr<RaftPeer>) -> Server {
        Server::new().with_service("Raft", raft.clone().recipient())
    }

    fn raft(&self, raft: &Addr<RaftPeer>) -> Addr<RaftPeer> {
        raft.clone()
    }

    fn stop(&self, raft: &Addr<RaftPeer>) {
        raft.do_send(Stop);
    }
}

/// Statistics of the current test part (`begin` to `end`).
#[derive(Default, Clone, Copy)]
struct Part {
    t0: Option<Instant>,
    rpcs0: u64,
    bytes0: u64,
    max_index0: u64,
}

/// 6.5840's Raft test configuration. Cloning gives another handle on the same cluster, for
/// concurrent clients.
#[derive(Clone)]
pub struct RaftHarness {
    cluster: Cluster<RaftServers>,
    finished: Rc<Cell<bool>>,
    part: Rc<Cell<Part>>,
}

impl RaftHarness {
    /// `make_config(n, unreliable, false)`: starts and connects `options.servers` peers, long
    /// delays on, with 6.5840's plain applier.
    pub async fn new(sim: &Sim, options: ClusterOptions) -> RaftHarness {
        Self::build(sim, options, false).await
    }

    /// `make_config(n, unreliable, true)`: as [`RaftHarness::new`] with the applier that
    /// snapshots every [`SNAPSHOT_INTERVAL`] entries.
    pub async fn with_snapshots(sim: &Sim, options: ClusterOptions) -> RaftHarness {
        Self::build(sim, options, true).await
    }

    async fn build(sim: &Sim, options: ClusterOptions, snapshots: bool) -> RaftHarness {
        let n = options.servers;
        let applied = Applied {
            logs: vec![BTreeMap::new(); n],
            last_applied: vec![0; n],
            ..Applied::default()
        };
        let kind = RaftServers {
            applied: Rc::new(RefCell::new(applied)),
            snapshots,
        };
        let options = ClusterOptions {
            long_delays: true,
            ..options
        };
        RaftHarness {
            cluster: Cluster::start(sim, kind, options).await,
            finished: Rc::new(Cell::new(false)),
            part: Rc::new(Cell::new(Part::default())),
        }
    }

    fn applied(&self) -> &Rc<RefCell<Applied>> {
        &self.cluster.kind().applied
    }

    /// The cluster underneath, for faults the 6.5840 helpers do not name.
    pub fn cluster(&self) -> &Cluster<RaftServers> {
        &self.cluster
    }

    /// Number of peers.
    pub fn n(&self) -> usize {
        self.cluster.n()
    }

    /// A random number in `range`, from the harness's seeded generator.
    pub fn rand_range(&self, range: std::ops::Range<u64>) -> u64 {
        self.cluster.with_rng(|rng| rng.gen_range(range))
    }

    /// A random non-negative integer command (Go's `rand.Int()`).
    pub fn rand_cmd(&self) -> Cmd {
        Cmd::Int(self.cluster.with_rng(|rng| rng.gen_range(0..i64::MAX)))
    }

    /// A random string of `n` characters.
    pub fn rand_string(&self, n: usize) -> String {
        self.cluster.rand_string(n)
    }

    /// Whether server i is connected.
    pub fn is_connected(&self, i: usize) -> bool {
        self.cluster.is_connected(i)
    }

    /// Whether server i is running (not crashed).
    pub fn is_up(&self, i: usize) -> bool {
        self.cluster.is_up(i)
    }

    /// `crash1(i)`: disconnects and deletes server i, keeps a copy of what it last saved, and
    /// kills it.
    pub fn crash(&self, i: usize) {
        self.cluster.crash(i);
    }

    /// `start1(i)`: restarts server i from a copy of its persisted state, with fresh disabled
    /// ends (it stays isolated until [`RaftHarness::connect`]).
    pub async fn restart(&self, i: usize) {
        self.cluster.restart(i).await;
    }

    /// Attaches server i to the net: its ends to connected servers and theirs to it work.
    pub fn connect(&self, i: usize) {
        self.cluster.connect(i);
    }

    /// Detaches server i: none of its ends work, and no end to it works.
    pub fn disconnect(&self, i: usize) {
        self.cluster.disconnect(i);
    }

    /// `GetState()` of server i, if it is running.
    pub async fn get_state(&self, i: usize) -> Option<RaftState> {
        self.cluster.raft(i)?.send(GetState).await.ok()
    }

    /// `Start(cmd)` on server i: where the command will sit, or `None` if server i is down or
    /// not the leader (6.5840's `isLeader == false`).
    pub async fn start(&self, i: usize, cmd: &Cmd) -> Option<Proposed> {
        self.cluster
            .raft(i)?
            .send(Propose(cmd.encode()))
            .await
            .ok()?
            .ok()
    }

    /// `checkOneLeader`: the leader of the highest term, within 10 rounds of about 500 ms.
    pub async fn check_one_leader(&self) -> usize {
        self.cluster.check_one_leader().await
    }

    /// `checkTerms`: every connected server reports the same term.
    pub async fn check_terms(&self) -> u64 {
        let mut term = None;
        for i in 0..self.n() {
            if !self.is_connected(i) {
                continue;
            }
            if let Some(state) = self.get_state(i).await {
                match term {
                    None => term = Some(state.term),
                    Some(t) => assert_eq!(t, state.term, "servers disagree on term"),
                }
            }
        }
        term.unwrap_or(0)
    }

    /// `checkNoLeader`: no connected server claims to lead.
    pub async fn check_no_leader(&self) {
        for i in 0..self.n() {
            if !self.is_connected(i) {
                continue;
            }
            if let Some(state) = self.get_state(i).await {
                assert!(
                    !state.is_leader(),
                    "expected no leader among connected servers, but {i} claims to be leader"
                );
            }
        }
    }

    /// Fails the test if any applier reported an error.
    pub fn check_apply_errors(&self) {
        if let Some(error) = &self.applied().borrow().error {
            panic!("apply error: {error}");
        }
    }

    /// `nCommitted(index)`: how many servers applied `index`, and what.
    pub fn n_committed(&self, index: u64) -> (usize, Option<Cmd>) {
        self.check_apply_errors();
        let applied = self.applied().borrow();
        let mut count = 0;
        let mut cmd: Option<&Cmd> = None;
        for log in &applied.logs {
            if let Some(c) = log.get(&index) {
                if let Some(prev) = cmd {
                    assert_eq!(
                        prev, c,
                        "committed values do not match: index {index}, {prev}, {c}"
                    );
                }
                count += 1;
                cmd = Some(c);
            }
        }
        (count, cmd.cloned())
    }

    /// `wait(index, n, startTerm)`: waits for at least `n` servers to apply `index`; `None` if
    /// a term after `start_term` began meanwhile (then no agreement can be guaranteed).
    pub async fn wait(&self, index: u64, n: usize, start_term: Option<u64>) -> Option<Cmd> {
        let mut pause = Duration::from_millis(10);
        for _ in 0..30 {
            if self.n_committed(index).0 >= n {
                break;
            }
            sleep(pause).await;
            if pause < Duration::from_secs(1) {
                pause *= 2;
            }
            if let Some(start_term) = start_term {
                for i in 0..self.n() {
                    if let Some(state) = self.get_state(i).await {
                        if state.term > start_term {
                            return None;
                        }
                    }
                }
            }
        }
        let (count, cmd) = self.n_committed(index);
        assert!(
            count >= n,
            "only {count} decided for index {index}; wanted {n}"
        );
        cmd
    }

    /// `one(cmd, expectedServers, retry)`: a complete agreement on `cmd`, returning its index.
    pub async fn one(&self, cmd: impl Into<Cmd>, expected: usize, retry: bool) -> u64 {
        let cmd = cmd.into();
        let t0 = Instant::now();
        let mut starts = 0;
        while t0.elapsed() < Duration::from_secs(10) && !self.finished.get() {
            let mut index = None;
            for _ in 0..self.n() {
                starts = (starts + 1) % self.n();
                if self.is_connected(starts) {
                    if let Some(r) = self.start(starts, &cmd).await {
                        index = Some(r.index);
                        break;
                    }
                }
            }
            if let Some(index) = index {
                let t1 = Instant::now();
                while t1.elapsed() < Duration::from_secs(2) {
                    let (count, committed) = self.n_committed(index);
                    if count > 0 && count >= expected && committed.as_ref() == Some(&cmd) {
                        return index;
                    }
                    sleep(Duration::from_millis(20)).await;
                }
                assert!(retry, "one({cmd}) failed to reach agreement");
            } else {
                sleep(Duration::from_millis(50)).await;
            }
        }
        assert!(self.finished.get(), "one({cmd}) failed to reach agreement");
        0
    }

    /// `begin(description)`: prints the test name and starts the statistics.
    pub async fn begin(&self, description: &str) {
        println!("{description} ...");
        let rpcs = self.rpc_total().await;
        let bytes = self.total_bytes().await;
        self.part.set(Part {
            t0: Some(Instant::now()),
            rpcs0: rpcs,
            bytes0: bytes,
            max_index0: self.applied().borrow().max_index,
        });
    }

    /// `end()`: checks the time limit and apply errors and prints the statistics line.
    pub async fn end(&self) {
        self.cluster.check_time_limit();
        self.check_apply_errors();
        let rpcs = self.rpc_total().await;
        let bytes = self.total_bytes().await;
        let max_index = self.applied().borrow().max_index;
        let part = self.part.get();
        println!(
            "  ... Passed --  {:4.1}  {} {:4} {:7} {:4}",
            part.t0.map_or(0.0, |t0| t0.elapsed().as_secs_f64()),
            self.n(),
            rpcs - part.rpcs0,
            bytes - part.bytes0,
            max_index - part.max_index0,
        );
    }

    /// `cleanup()`: stops every peer; `one` stops retrying.
    pub fn cleanup(&self) {
        self.finished.set(true);
        self.cluster.shutdown();
        self.cluster.check_time_limit();
    }

    /// The largest persisted Raft state over all servers.
    pub fn log_size(&self) -> usize {
        self.cluster.max_raft_state_size()
    }

    /// RPCs that reached server i.
    pub async fn rpc_count(&self, i: usize) -> u64 {
        let name = self.cluster.server_name(i);
        self.cluster.sim().network().count(&name).await.unwrap_or(0)
    }

    /// Every call made on the network so far.
    pub async fn rpc_total(&self) -> u64 {
        self.cluster
            .sim()
            .network()
            .total_calls()
            .await
            .unwrap_or(0)
    }

    async fn total_bytes(&self) -> u64 {
        self.cluster
            .sim()
            .network()
            .total_bytes()
            .await
            .unwrap_or(0)
    }
}
