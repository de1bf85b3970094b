//! 6.5840's kvraft test harness (`kvraft/config.go` and the wrappers of `test_test.go`).
//!
//! [`KvConfig`] runs `n` KV servers, each a network server `"i"` with the "KVServer" and "Raft"
//! services, and clerks whose ends are shuffled and enabled per server. Partitions touch only
//! server-to-server ends, never clerks'. The op wrappers ([`KvConfig::get`] and friends) count
//! operations and record them, with virtual call and return times, in an [`OpLog`] for the
//! linearizability checker.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::{check_time_limit, first_leader, rand_string, Sim};
use crate::actors::clerk::Clerk;
use crate::actors::kv_server::KvNode;
use crate::check::{
    check_operations, write_html, CheckResult, KvInput, KvModel, KvOp, KvOutput, Operation,
};
use crate::messages::kv::KvCommand;
use crate::storage::{MemPersister, Persister};

/// A recorded history of KV operations.
pub type KvHistory = Vec<Operation<KvInput, KvOutput>>;

/// A shared, growing history (clients append as they complete operations).
#[derive(Clone, Default)]
pub struct OpLog(Rc<RefCell<KvHistory>>);

impl OpLog {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one completed operation.
    pub fn push(&self, op: Operation<KvInput, KvOutput>) {
        self.0.borrow_mut().push(op);
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> KvHistory {
        self.0.borrow().clone()
    }

    /// Checks the history with the KV model; an `Illegal` history is written as HTML under
    /// `target/` and fails the test, and so does an `Unknown` (checker timeout) result.
    pub fn check_linearizable(&self, test: &str, timeout: Duration) {
        let history = self.snapshot();
        let result = check_operations::<KvModel>(&history, timeout);
        match &result {
            CheckResult::Ok => {}
            CheckResult::Illegal(violation) => {
                let path = std::path::PathBuf::from(format!("target/linearizability-{test}.html"));
                let written = write_html::<KvModel>(&history, &result, &path);
                let info = match written {
                    Ok(()) => format!("history visualisation in {}", path.display()),
                    Err(e) => format!("could not write the visualisation: {e}"),
                };
                panic!("history is not linearizable ({info}):\n{violation}");
            }
            CheckResult::Unknown { .. } => {
                panic!("linearizability check timed out (counts as a failure): {result}")
            }
        }
    }
}

/// 6.5840's op wrappers (`Get`, `Put`, `Append` in test_test.go): run a clerk operation, count
/// it, and record it with its call and return times for the linearizability checker. The KV
/// and sharded KV harnesses share it.
pub struct OpRecorder {
    created: Instant,
    /// Last reading of [`OpRecorder::now`].
    clock: Cell<u64>,
    ops: Cell<u64>,
}

impl Default for OpRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl OpRecorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        OpRecorder {
            created: Instant::now(),
            clock: Cell::new(0),
            ops: Cell::new(0),
        }
    }

    /// The history's clock: nanoseconds since the recorder was made, made strictly increasing.
    /// Virtual time moves in whole milliseconds, so a Get that starts after a Put returned
    /// often shares its instant; counting nanoseconds within the millisecond keeps the order in
    /// which they really happened, so the checker does not take them for concurrent.
    pub fn now(&self) -> u64 {
        let elapsed = self.created.elapsed().as_nanos() as u64;
        self.clock.set(elapsed.max(self.clock.get() + 1));
        self.clock.get()
    }

    /// Operations completed so far.
    pub fn ops(&self) -> u64 {
        self.ops.get()
    }

    async fn run(&self, ck: &Clerk, input: KvInput, log: Option<&OpLog>, client: u64) -> String {
        let call = self.now();
        let command = match input.op {
            KvOp::Get => KvCommand::Get {
                key: input.key.clone(),
            },
            KvOp::Put => KvCommand::Put {
                key: input.key.clone(),
                value: input.value.clone(),
            },
            KvOp::Append => KvCommand::Append {
                key: input.key.clone(),
                value: input.value.clone(),
            },
        };
        let value = ck.run(command).await;
        let return_time = self.now();
        self.ops.set(self.ops.get() + 1);
        if let Some(log) = log {
            let output = KvOutput {
                value: value.clone(),
            };
            log.push(Operation {
                client_id: client,
                input,
                call,
                output,
                return_time,
            });
        }
        value
    }

    /// A Get through `ck`, counted, and logged into `log` as `client` if given.
    pub async fn get(&self, ck: &Clerk, key: &str, log: Option<&OpLog>, client: u64) -> String {
        let input = KvInput {
            op: KvOp::Get,
            key: key.to_string(),
            value: String::new(),
        };
        self.run(ck, input, log, client).await
    }

    /// A Put through `ck`, counted and optionally logged.
    pub async fn put(&self, ck: &Clerk, key: &str, value: &str, log: Option<&OpLog>, client: u64) {
        let input = KvInput {
            op: KvOp::Put,
            key: key.to_string(),
            value: value.to_string(),
        };
        self.run(ck, input, log, client).await;
    }

    /// An Append through `ck`, counted and optionally logged.
    pub async fn append(
        &self,
        ck: &Clerk,
        key: &str,
        value: &str,
        log: Option<&OpLog>,
        client: u64,
    ) {
        let input = KvInput {
            op: KvOp::Append,
            key: key.to_string(),
            value: value.to_string(),
        };
        self.run(ck, input, log, client).await;
    }

    /// `check(ck, key, value)`: a Get (not logged) must return `value`.
    pub async fn check(&self, ck: &Clerk, key: &str, value: &str) {
        let v = self.get(ck, key, None, 0).await;
        assert_eq!(v, value, "Get({key}): expected:\n{value}\nreceived:\n{v}");
    }
}

struct State {
    nodes: Vec<Option<KvNode>>,
    saved: Vec<MemPersister>,
    /// `end_names[i][j]`: the end server i uses to reach j.
    end_names: Vec<Vec<String>>,
    /// Each clerk's end names, in server order.
    clerks: Vec<Vec<String>>,
    incarnations: Vec<u64>,
    rng: ChaCha8Rng,
    t0: Instant,
    rpcs0: u64,
    ops0: u64,
}

/// A clerk made by the harness: its async API plus the harness's handle on its ends.
#[derive(Clone)]
pub struct TestClerk {
    /// The clerk itself.
    pub clerk: Clerk,
    index: usize,
}

/// 6.5840's kvraft test configuration. Clones share the cluster.
#[derive(Clone)]
pub struct KvConfig {
    sim: Sim,
    n: usize,
    max_raft_state: Option<usize>,
    created: Instant,
    recorder: Rc<OpRecorder>,
    state: Rc<RefCell<State>>,
}

impl KvConfig {
    /// `make_config(n, unreliable, maxraftstate)`: starts and connects all servers, then sets
    /// the network's reliability. `max_raft_state < 0` means never snapshot.
    pub async fn new(sim: &Sim, n: usize, unreliable: bool, max_raft_state: i64) -> KvConfig {
        let cfg = KvConfig {
            sim: sim.clone(),
            n,
            max_raft_state: usize::try_from(max_raft_state).ok(),
            created: Instant::now(),
            recorder: Rc::new(OpRecorder::new()),
            state: Rc::new(RefCell::new(State {
                nodes: vec![None; n],
                saved: (0..n).map(|_| MemPersister::new()).collect(),
                end_names: vec![Vec::new(); n],
                clerks: Vec::new(),
                incarnations: vec![0; n],
                rng: sim.rng("kv-config"),
                t0: Instant::now(),
                rpcs0: 0,
                ops0: 0,
            })),
        };
        for i in 0..n {
            cfg.start_server(i).await;
        }
        cfg.connect_all();
        sim.network().set_reliable(!unreliable);
        cfg
    }

    /// Number of servers.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The harness's seeded generator.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
        f(&mut self.state.borrow_mut().rng)
    }

    /// A random value of `n` characters.
    pub fn rand_string(&self, n: usize) -> String {
        self.with_rng(|rng| rand_string(rng, n))
    }

    /// All server indexes.
    pub fn all(&self) -> Vec<usize> {
        (0..self.n).collect()
    }

    fn enable_links(&self, i: usize, to: &[usize], on: bool) {
        let state = self.state.borrow();
        let net = self.sim.network();
        for &j in to {
            if let Some(name) = state.end_names[i].get(j) {
                net.enable(name, on);
            }
            if let Some(name) = state.end_names[j].get(i) {
                net.enable(name, on);
            }
        }
    }

    /// Enables the links between server i and the servers in `to`.
    pub fn connect(&self, i: usize, to: &[usize]) {
        self.enable_links(i, to, true);
    }

    /// Disables the links between server i and the servers in `from`.
    pub fn disconnect(&self, i: usize, from: &[usize]) {
        self.enable_links(i, from, false);
    }

    /// Every server reaches every other.
    pub fn connect_all(&self) {
        let all = self.all();
        for i in 0..self.n {
            self.connect(i, &all);
        }
    }

    /// Servers in each side reach each other, and nothing across. Clerks are untouched.
    pub fn partition(&self, p1: &[usize], p2: &[usize]) {
        for &i in p1 {
            self.disconnect(i, p2);
            self.connect(i, p1);
        }
        for &i in p2 {
            self.disconnect(i, p1);
            self.connect(i, p2);
        }
    }

    /// `makeClient(to)`: a clerk with fresh ends to every server, in shuffled order; only the
    /// ends to servers in `to` are enabled.
    pub async fn make_client(&self, to: &[usize]) -> TestClerk {
        let names: Vec<String> = (0..self.n).map(|_| self.rand_string(20)).collect();
        let net = self.sim.network();
        let mut ends = Vec::with_capacity(self.n);
        for (j, name) in names.iter().enumerate() {
            let end = net
                .make_end(name, None)
                .await
                .unwrap_or_else(|e| panic!("make_client: {e}"));
            net.connect(name, &j.to_string());
            ends.push(end);
        }
        let (client_id, index) = {
            let mut state = self.state.borrow_mut();
            ends.shuffle(&mut state.rng);
            state.clerks.push(names);
            (state.rng.gen::<u64>(), state.clerks.len() - 1)
        };
        let clerk = TestClerk {
            clerk: Clerk::start(ends, client_id),
            index,
        };
        self.connect_client(&clerk, to);
        clerk
    }

    /// Disables every end of `ck` (6.5840's `deleteClient`).
    pub fn delete_client(&self, ck: &TestClerk) {
        self.disconnect_client(ck, &self.all());
    }

    /// Enables `ck`'s ends to the servers in `to`.
    pub fn connect_client(&self, ck: &TestClerk, to: &[usize]) {
        self.toggle_client(ck, to, true);
    }

    /// Disables `ck`'s ends to the servers in `from`.
    pub fn disconnect_client(&self, ck: &TestClerk, from: &[usize]) {
        self.toggle_client(ck, from, false);
    }

    fn toggle_client(&self, ck: &TestClerk, servers: &[usize], on: bool) {
        let state = self.state.borrow();
        for &j in servers {
            self.sim.network().enable(&state.clerks[ck.index][j], on);
        }
    }

    /// `ShutdownServer(i)`: cut it off, delete it, keep a copy of its storage, kill it.
    pub fn shutdown_server(&self, i: usize) {
        self.disconnect(i, &self.all());
        self.sim.network().delete_server(&i.to_string());
        let mut state = self.state.borrow_mut();
        let copy = state.saved[i].copy();
        state.saved[i] = copy;
        if let Some(node) = state.nodes[i].take() {
            node.kill();
        }
    }

    /// `StartServer(i)`: a new server from a copy of its storage, with fresh disabled ends.
    pub async fn start_server(&self, i: usize) {
        let names: Vec<String> = (0..self.n).map(|_| self.rand_string(20)).collect();
        let net = self.sim.network().clone();
        let ends = net
            .make_peer_ends(&i.to_string(), &names)
            .await
            .unwrap_or_else(|e| panic!("start_server({i}): {e}"));
        let (persister, incarnation) = {
            let mut state = self.state.borrow_mut();
            state.end_names[i] = names;
            state.incarnations[i] += 1;
            let persister = state.saved[i].copy();
            state.saved[i] = persister.clone();
            (persister, state.incarnations[i])
        };
        let seed = self.sim.derive(&format!("kv-server-{i}-{incarnation}"));
        let node = KvNode::start(ends, i, persister, self.max_raft_state, seed)
            .unwrap_or_else(|e| panic!("start_server({i}): {e}"));
        net.add_server(&i.to_string(), node.server());
        self.state.borrow_mut().nodes[i] = Some(node);
    }

    /// The first server whose Raft says it is leader.
    pub async fn leader(&self) -> Option<usize> {
        let rafts = self
            .state
            .borrow()
            .nodes
            .iter()
            .map(|n| n.as_ref().map(|n| n.raft.clone()))
            .collect();
        first_leader(rafts).await
    }

    /// `make_partition`: a majority without the leader, and a minority with the leader last.
    pub async fn make_partition(&self) -> (Vec<usize>, Vec<usize>) {
        let leader = self.leader().await.unwrap_or(0);
        let others: Vec<usize> = (0..self.n).filter(|&i| i != leader).collect();
        let p1 = others[..self.n / 2 + 1].to_vec();
        let mut p2 = others[self.n / 2 + 1..].to_vec();
        p2.push(leader);
        (p1, p2)
    }

    /// The largest persisted Raft state.
    pub fn log_size(&self) -> usize {
        let state = self.state.borrow();
        state
            .saved
            .iter()
            .map(|p| p.raft_state_size())
            .max()
            .unwrap_or(0)
    }

    /// The largest snapshot.
    pub fn snapshot_size(&self) -> usize {
        let state = self.state.borrow();
        state
            .saved
            .iter()
            .map(|p| p.snapshot_size())
            .max()
            .unwrap_or(0)
    }

    /// The history's clock (see [`OpRecorder::now`]).
    pub fn now(&self) -> u64 {
        self.recorder.now()
    }

    /// The `Get` wrapper: counts, and logs into `log` as `client` if given.
    pub async fn get(&self, ck: &TestClerk, key: &str, log: Option<&OpLog>, client: u64) -> String {
        self.recorder.get(&ck.clerk, key, log, client).await
    }

    /// The `Put` wrapper.
    pub async fn put(
        &self,
        ck: &TestClerk,
        key: &str,
        value: &str,
        log: Option<&OpLog>,
        client: u64,
    ) {
        self.recorder.put(&ck.clerk, key, value, log, client).await
    }

    /// The `Append` wrapper.
    pub async fn append(
        &self,
        ck: &TestClerk,
        key: &str,
        value: &str,
        log: Option<&OpLog>,
        client: u64,
    ) {
        self.recorder
            .append(&ck.clerk, key, value, log, client)
            .await
    }

    /// `check(ck, key, value)`: a Get (not logged) must return `value`.
    pub async fn check(&self, ck: &TestClerk, key: &str, value: &str) {
        self.recorder.check(&ck.clerk, key, value).await
    }

    /// `begin(description)`.
    pub async fn begin(&self, description: &str) {
        println!("{description} ...");
        let rpcs = self.sim.network().total_calls().await.unwrap_or(0);
        let mut state = self.state.borrow_mut();
        state.t0 = Instant::now();
        state.rpcs0 = rpcs;
        state.ops0 = self.recorder.ops();
    }

    /// `end()`: the time limit and the statistics line.
    pub async fn end(&self) {
        check_time_limit(self.created);
        let rpcs = self.sim.network().total_calls().await.unwrap_or(0);
        let state = self.state.borrow();
        println!(
            "  ... Passed --  {:4.1}  {} {:5} {:4}",
            state.t0.elapsed().as_secs_f64(),
            self.n,
            rpcs - state.rpcs0,
            self.recorder.ops() - state.ops0,
        );
    }

    /// Stops every server.
    pub fn cleanup(&self) {
        let mut state = self.state.borrow_mut();
        for node in state.nodes.iter_mut() {
            if let Some(node) = node.take() {
                node.kill();
            }
        }
    }
}
