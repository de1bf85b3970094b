//! 6.5840's kvraft test harness (`kvraft/config.go` and the wrappers of `test_test.go`).
//!
//! [`KvHarness`] is a [`Cluster`] of KV servers ([`KvServers`]: each a network server `"i"`
//! with the "KVServer" and "Raft" services) plus clerks whose ends are shuffled and enabled
//! per server. Partitions touch only server-to-server ends, never clerks'. The op wrappers
//! ([`KvHarness::get`] and friends) count operations and record them, with virtual call and
//! return times, in an [`OpLog`] for the linearizability checker.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::cluster::{ClientEnds, Cluster, ClusterOptions, ServerContext, ServerKind, TestStore};
use super::Sim;
use crate::actors::clerk::Clerk;
use crate::actors::kv_server::KvNode;
use crate::actors::raft::{RaftPeer, RestoreError};
use crate::actors::rsm::ReplicaSetup;
use crate::check::{
    check_operations, write_html, CheckResult, KvInput, KvModel, KvOp, KvOutput, Operation,
};
use crate::messages::kv::KvCommand;
use crate::messages::net::Server;
use crate::trace::{self, EventKind, Tracer};

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
        trace::current().emit(|| match &result {
            CheckResult::Illegal(violation) => EventKind::Verdict {
                ok: false,
                text: violation.to_string(),
                ops: violation.stuck.iter().map(|stuck| stuck.op.call).collect(),
            },
            other => EventKind::Verdict {
                ok: matches!(other, CheckResult::Ok),
                text: other.to_string(),
                ops: Vec::new(),
            },
        });
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
/// and sharded KV harnesses share it. They keep the lab's string API: keys and values are text,
/// and a missing key reads as "". A clerk that stopped fails the test.
pub struct OpRecorder {
    created: Instant,
    /// Last reading of [`OpRecorder::now`].
    clock: Cell<u64>,
    ops: Cell<u64>,
    /// Where each operation's call and return are traced: the run's tracer when it was made.
    trace: Tracer,
}

impl Default for OpRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl OpRecorder {
    /// A recorder whose clock starts now; it traces to the run's tracer ([`trace::current`]).
    pub fn new() -> Self {
        OpRecorder {
            created: Instant::now(),
            clock: Cell::new(0),
            ops: Cell::new(0),
            trace: trace::current(),
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
        self.trace.emit(|| EventKind::Invoke {
            op: call,
            client,
            kind: match input.op {
                KvOp::Get => "get",
                KvOp::Put => "put",
                KvOp::Append => "append",
            }
            .to_string(),
            key: input.key.clone(),
            value: input.value.clone(),
        });
        let key = Bytes::from(input.key.clone());
        let command = match input.op {
            KvOp::Get => KvCommand::Get { key },
            KvOp::Put => KvCommand::Put {
                key,
                value: Bytes::from(input.value.clone()),
            },
            KvOp::Append => KvCommand::Append {
                key,
                value: Bytes::from(input.value.clone()),
            },
        };
        // The lab's clerks answer "" for a missing key and for a write.
        let value = match ck.run(command).await {
            Ok(value) => {
                value.map_or_else(String::new, |v| String::from_utf8_lossy(&v).into_owned())
            }
            Err(e) => panic!("client {client}: {:?} of {:?}: {e}", input.op, input.key),
        };
        let return_time = self.now();
        self.trace.emit(|| EventKind::Return {
            op: call,
            client,
            value: value.clone(),
        });
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

/// KV servers: a Raft peer, a replicated KV store and its "KVServer" face each.
pub struct KvServers;

impl ServerKind for KvServers {
    type Node = KvNode;

    fn start(
        &self,
        setup: ReplicaSetup<TestStore>,
        _: &mut ServerContext,
    ) -> impl Future<Output = Result<KvNode, RestoreError>> {
        std::future::ready(KvNode::start(setup))
    }

    fn services(&self, node: &KvNode) -> Server {
        node.server()
    }

    fn raft(&self, node: &KvNode) -> Addr<RaftPeer> {
        node.raft.clone()
    }

    fn stop(&self, node: &KvNode) {
        node.kill();
    }
}

/// A clerk made by the harness: its async API plus the harness's handle on its ends.
#[derive(Clone)]
pub struct TestClerk {
    /// The clerk itself.
    pub clerk: Clerk,
    ends: Rc<ClientEnds>,
}

/// Statistics of the current test part (`begin` to `end`).
#[derive(Default, Clone, Copy)]
struct Part {
    t0: Option<Instant>,
    rpcs0: u64,
    ops0: u64,
}

/// 6.5840's kvraft test configuration. Clones share the cluster.
#[derive(Clone)]
pub struct KvHarness {
    cluster: Cluster<KvServers>,
    recorder: Rc<OpRecorder>,
    part: Rc<Cell<Part>>,
}

impl KvHarness {
    /// `make_config(n, unreliable, maxraftstate)`: starts and connects all servers.
    pub async fn new(sim: &Sim, options: ClusterOptions) -> KvHarness {
        KvHarness {
            cluster: Cluster::start(sim, KvServers, options).await,
            recorder: Rc::new(OpRecorder::new()),
            part: Rc::new(Cell::new(Part::default())),
        }
    }

    /// The cluster underneath.
    pub fn cluster(&self) -> &Cluster<KvServers> {
        &self.cluster
    }

    /// Number of servers.
    pub fn n(&self) -> usize {
        self.cluster.n()
    }

    /// The harness's seeded generator.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
        self.cluster.with_rng(f)
    }

    /// A random value of `n` characters.
    pub fn rand_string(&self, n: usize) -> String {
        self.cluster.rand_string(n)
    }

    /// All server indexes.
    pub fn all(&self) -> Vec<usize> {
        self.cluster.all()
    }

    /// Enables the links between server i and the servers in `to`.
    pub fn connect(&self, i: usize, to: &[usize]) {
        self.cluster.connect_to(i, to);
    }

    /// Disables the links between server i and the servers in `from`.
    pub fn disconnect(&self, i: usize, from: &[usize]) {
        self.cluster.disconnect_from(i, from);
    }

    /// Every server reaches every other.
    pub fn connect_all(&self) {
        self.cluster.connect_all();
    }

    /// Servers in each side reach each other, and nothing across. Clerks are untouched.
    pub fn partition(&self, p1: &[usize], p2: &[usize]) {
        self.cluster.partition(p1, p2);
    }

    /// `makeClient(to)`: a clerk with fresh ends to every server, in shuffled order; only the
    /// ends to servers in `to` are enabled.
    pub async fn make_client(&self, to: &[usize]) -> TestClerk {
        let ends = self.cluster.client_ends(to).await;
        let mut shuffled = ends.ends.clone();
        self.with_rng(|rng| shuffled.shuffle(rng));
        TestClerk {
            clerk: Clerk::start(shuffled),
            ends: Rc::new(ends),
        }
    }

    /// Disables every end of `ck` (6.5840's `deleteClient`).
    pub fn delete_client(&self, ck: &TestClerk) {
        self.disconnect_client(ck, &self.all());
    }

    /// Enables `ck`'s ends to the servers in `to`.
    pub fn connect_client(&self, ck: &TestClerk, to: &[usize]) {
        self.cluster.set_client_links(&ck.ends, to, true);
    }

    /// Disables `ck`'s ends to the servers in `from`.
    pub fn disconnect_client(&self, ck: &TestClerk, from: &[usize]) {
        self.cluster.set_client_links(&ck.ends, from, false);
    }

    /// `ShutdownServer(i)`: cut it off, delete it, keep a copy of its storage, kill it.
    pub fn shutdown_server(&self, i: usize) {
        self.cluster.crash(i);
    }

    /// `StartServer(i)`: a new server from a copy of its storage, with fresh ends, cut off
    /// until connected again.
    pub async fn start_server(&self, i: usize) {
        self.cluster.restart(i).await;
    }

    /// The first server whose Raft says it is leader.
    pub async fn leader(&self) -> Option<usize> {
        self.cluster.leader().await
    }

    /// `make_partition`: a majority without the leader, and a minority with the leader last.
    pub async fn make_partition(&self) -> (Vec<usize>, Vec<usize>) {
        let n = self.n();
        let leader = self.leader().await.unwrap_or(0);
        let others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
        let p1 = others[..n / 2 + 1].to_vec();
        let mut p2 = others[n / 2 + 1..].to_vec();
        p2.push(leader);
        (p1, p2)
    }

    /// The largest persisted Raft state.
    pub fn log_size(&self) -> usize {
        self.cluster.max_raft_state_size()
    }

    /// The largest snapshot.
    pub fn snapshot_size(&self) -> usize {
        self.cluster.max_snapshot_size()
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
        let rpcs = self.total_calls().await;
        self.part.set(Part {
            t0: Some(Instant::now()),
            rpcs0: rpcs,
            ops0: self.recorder.ops(),
        });
    }

    /// `end()`: the time limit and the statistics line.
    pub async fn end(&self) {
        self.cluster.check_time_limit();
        let rpcs = self.total_calls().await;
        let part = self.part.get();
        println!(
            "  ... Passed --  {:4.1}  {} {:5} {:4}",
            part.t0.map_or(0.0, |t0| t0.elapsed().as_secs_f64()),
            self.n(),
            rpcs - part.rpcs0,
            self.recorder.ops() - part.ops0,
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
