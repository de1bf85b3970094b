//! The one-command demo behind `rainkv demo`: three nodes on loopback TCP in this process,
//! clients running Gets, Puts and Appends against them while the leader is killed and
//! restarted and a node is cut off, then every recorded operation checked for
//! linearizability.
//!
//! Faults, at fixed fractions of the run: kill the leader (15%) and restart it (30%); cut the
//! current leader off from the other nodes (45%) and heal it (65%); kill the leader again
//! (75%) and restart it (88%). Clients keep going throughout; their operations stall while
//! there is no leader and resume after the election.
//!
//! With a recording tracer ([`DemoOptions::trace`]) the run is traced on the wall clock: the
//! nodes' messages and Raft states, the faults, every client operation's invoke and return
//! (its id is its call time in the checked history) and the checker's verdict.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use super::local::{LocalCluster, LocalOptions};
use super::node::NodeError;
use super::stats::{millis, Latencies};
use crate::actors::clerk::Clerk;
use crate::check::{check_operations, CheckResult, KvInput, KvModel, KvOp, KvOutput, Operation};
use crate::trace::{EventKind, Tracer};

/// How often the demo looks at the clock for faults and progress.
const TICK: Duration = Duration::from_millis(100);
/// How long the cluster may take to elect its first leader.
const FIRST_LEADER_WAIT: Duration = Duration::from_secs(10);
/// How long a fault aimed at the leader waits for one to be elected.
const FAULT_LEADER_WAIT: Duration = Duration::from_secs(3);
/// How long clients may take to finish their last operation once the faults are over.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// The demo's settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Length of the run (faults are spread over it).
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients share.
    pub keys: usize,
    /// How long the linearizability checker may search.
    pub check_timeout: Duration,
    /// Where the run's trace events go (off by default).
    pub trace: Tracer,
    /// Mutual TLS from this certificate directory (`None`: plain TCP).
    pub tls: Option<std::path::PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: Duration::from_secs(20),
            clients: 5,
            keys: 5,
            check_timeout: Duration::from_secs(60),
            trace: Tracer::off(),
            tls: None,
        }
    }
}

/// What the checker concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, consistent with real time, is legal for a KV store.
    Linearizable,
    /// No such order exists; the explanation shows where it breaks.
    NotLinearizable(String),
    /// The checker ran out of time before deciding.
    Undecided(String),
}

impl Verdict {
    /// The demo's last line: `verdict: linearizable`, `verdict: NOT linearizable` or
    /// `verdict: undecided`.
    pub fn line(&self) -> &'static str {
        match self {
            Verdict::Linearizable => "verdict: linearizable",
            Verdict::NotLinearizable(_) => "verdict: NOT linearizable",
            Verdict::Undecided(_) => "verdict: undecided",
        }
    }
}

/// What a demo run did and found.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Operations completed (all of them in the checked history).
    pub ops: usize,
    /// Length of the run, including the final drain.
    pub elapsed: Duration,
    /// Per-operation latencies (including waits for a new leader).
    pub latencies: Latencies,
    /// The faults injected, with their times.
    pub faults: Vec<String>,
    /// The checker's verdict.
    pub verdict: Verdict,
}

impl DemoReport {
    /// Completed operations per second.
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// `N operations in S s: R ops/s; latency p50 X ms, p99 Y ms, max Z ms`.
    pub fn summary(&self) -> String {
        let l = &self.latencies;
        format!(
            "{} operations in {:.1} s: {:.0} ops/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_s(),
            millis(l.percentile(50.0)),
            millis(l.percentile(99.0)),
            millis(l.percentile(100.0)),
        )
    }
}

/// Why the demo could not run to a verdict.
#[derive(Debug)]
pub enum DemoError {
    /// The cluster did not start.
    Start(NodeError),
    /// No leader was elected in time.
    NoLeader,
    /// Clients were still waiting for operations long after the faults ended.
    Stuck {
        /// Clients still waiting.
        clients: usize,
    },
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Start(e) => write!(f, "the cluster did not start: {e}"),
            DemoError::NoLeader => write!(f, "no leader was elected within {FIRST_LEADER_WAIT:?}"),
            DemoError::Stuck { clients } => write!(
                f,
                "{clients} clients were still waiting {DRAIN_WAIT:?} after the faults ended: \
                 the cluster did not recover"
            ),
        }
    }
}

impl std::error::Error for DemoError {}

/// A fault of the schedule.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillLeader,
    RestartKilled,
    IsolateLeader,
    Heal,
}

const SCHEDULE: [(f64, Fault); 6] = [
    (0.15, Fault::KillLeader),
    (0.30, Fault::RestartKilled),
    (0.45, Fault::IsolateLeader),
    (0.65, Fault::Heal),
    (0.75, Fault::KillLeader),
    (0.88, Fault::RestartKilled),
];

type History = Rc<RefCell<Vec<Operation<KvInput, KvOutput>>>>;

/// What the clients share with the demo's driver (and with the sharded demo's,
/// [`super::demo_sharded`]).
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) started: Instant,
    /// The last reading of [`Shared::now_ns`].
    clock: Rc<Cell<u64>>,
    stop: Rc<Cell<bool>>,
    pub(super) history: History,
    latencies: Rc<RefCell<Latencies>>,
    trace: Tracer,
}

impl Shared {
    /// Nothing recorded yet; the clock starts now.
    pub(super) fn new(trace: Tracer) -> Shared {
        Shared {
            started: Instant::now(),
            clock: Rc::new(Cell::new(0)),
            stop: Rc::new(Cell::new(false)),
            history: Rc::new(RefCell::new(Vec::new())),
            latencies: Rc::new(RefCell::new(Latencies::new())),
            trace,
        }
    }

    /// The latencies recorded so far.
    pub(super) fn latencies(&self) -> Latencies {
        self.latencies.borrow().clone()
    }

    /// Operations completed so far.
    pub(super) fn ops(&self) -> usize {
        self.history.borrow().len()
    }

    /// Nanoseconds since the clients started, strictly increasing, so that every call time
    /// is unique: it names its operation in the trace and in the checker's explanation.
    fn now_ns(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.clock.set(elapsed.max(self.clock.get() + 1));
        self.clock.get()
    }
}

/// What [`run_demo`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum DemoProgress<'a> {
    /// Something worth a line of its own: the cluster started, a fault, the final check.
    Note(&'a str),
    /// Where the run stands, about ten times a second while the clients run.
    Tick(DemoTick),
}

/// Where a demo run stands.
#[derive(Debug, Clone, Copy)]
pub struct DemoTick {
    /// Time since the clients started.
    pub elapsed: Duration,
    /// How long the clients run.
    pub duration: Duration,
    /// Operations completed so far.
    pub ops: usize,
    /// Operations completed in the last second.
    pub ops_last_second: usize,
    /// Faults injected so far.
    pub faults: usize,
    /// The leader, as last looked up (once a second).
    pub leader: Option<usize>,
    /// Nodes running.
    pub up: usize,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Whether this is the once-a-second report (the plain output prints only these).
    pub second: bool,
}

impl DemoTick {
    /// The once-a-second line of the plain output.
    pub fn line(&self) -> String {
        let leader = match self.leader {
            Some(l) => format!("node {l}"),
            None => "none".to_string(),
        };
        format!(
            "[{:5.1}s] {:>7} ops ({:>5} in the last second)  leader: {leader}  nodes up: {}/{}",
            self.elapsed.as_secs_f64(),
            self.ops,
            self.ops_last_second,
            self.up,
            self.nodes
        )
    }
}

/// The demo's key number `n`.
fn key_name(n: usize) -> String {
    format!("k{n}")
}

/// One client: random operations on the shared keys (key number `n` named `key_name(n)`)
/// until told to stop.
pub(super) async fn client(
    id: usize,
    clerk: Clerk,
    (keys, key_name): (usize, fn(usize) -> String),
    shared: Shared,
) {
    let mut rng = rand::thread_rng();
    let mut n = 0u64;
    while !shared.stop.get() {
        n += 1;
        let key = key_name(rng.gen_range(0..keys.max(1)));
        let roll = rng.gen_range(0..10);
        let (op, value) = match roll {
            0..=4 => (KvOp::Get, String::new()),
            5..=6 => (KvOp::Put, format!("c{id}.{n};")),
            _ => (KvOp::Append, format!("c{id}.{n};")),
        };
        let call = shared.now_ns();
        shared.trace.emit(|| EventKind::Invoke {
            op: call,
            client: id as u64,
            kind: op_name(op).to_string(),
            key: key.clone(),
            value: value.clone(),
        });
        let started = Instant::now();
        // The checker's model reads a missing key as "", and the demo's values are text.
        let done = match op {
            KvOp::Get => clerk
                .get(key.clone())
                .await
                .map(|v| v.map_or_else(String::new, |v| String::from_utf8_lossy(&v).into())),
            KvOp::Put => clerk
                .put(key.clone(), value.clone())
                .await
                .map(|()| String::new()),
            KvOp::Append => clerk
                .append(key.clone(), value.clone())
                .await
                .map(|()| String::new()),
        };
        let output = match done {
            Ok(output) => output,
            Err(e) => {
                // Only when the demo is torn down; the operation is left out of the history.
                log::warn!("client {id}: {e}");
                return;
            }
        };
        shared.latencies.borrow_mut().record(started.elapsed());
        let return_time = shared.now_ns();
        shared.trace.emit(|| EventKind::Return {
            op: call,
            client: id as u64,
            value: output.clone(),
        });
        shared.history.borrow_mut().push(Operation {
            client_id: id as u64,
            input: KvInput { op, key, value },
            call,
            output: KvOutput { value: output },
            return_time,
        });
    }
}

/// Tells the clients to stop and waits up to [`DRAIN_WAIT`] for their last operations;
/// `false` (and the clients aborted: their clerks would retry for ever against a cluster
/// about to go) if some were still waiting.
pub(super) async fn drain(shared: &Shared, clients: &mut [JoinHandle<()>]) -> bool {
    shared.stop.set(true);
    if timeout(DRAIN_WAIT, join_all(clients.iter_mut()))
        .await
        .is_ok()
    {
        return true;
    }
    for client in clients.iter() {
        client.abort();
    }
    false
}

/// The checker's verdict on every operation `shared` recorded, announced to `progress` and
/// traced.
pub(super) fn check(
    shared: &Shared,
    check_timeout: Duration,
    progress: &mut dyn FnMut(DemoProgress<'_>),
) -> Verdict {
    let history = shared.history.borrow().clone();
    note(
        progress,
        &format!(
            "checking {} operations for linearizability...",
            history.len()
        ),
    );
    let result = check_operations::<KvModel>(&history, check_timeout);
    shared.trace.emit(|| match &result {
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
    match result {
        CheckResult::Ok => Verdict::Linearizable,
        result @ CheckResult::Illegal(_) => Verdict::NotLinearizable(result.to_string()),
        result @ CheckResult::Unknown { .. } => Verdict::Undecided(result.to_string()),
    }
}

/// Tells `progress` a line of note.
fn note(progress: &mut dyn FnMut(DemoProgress<'_>), line: &str) {
    progress(DemoProgress::Note(line));
}

/// The trace's name of an operation kind.
fn op_name(op: KvOp) -> &'static str {
    match op {
        KvOp::Get => "get",
        KvOp::Put => "put",
        KvOp::Append => "append",
    }
}

/// The leader, once there is one (an election may be under way), waiting up to
/// [`FAULT_LEADER_WAIT`].
async fn wait_for_leader(cluster: &LocalCluster) -> Option<usize> {
    let deadline = Instant::now() + FAULT_LEADER_WAIT;
    loop {
        if let Some(leader) = cluster.leader().await {
            return Some(leader);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(20)).await;
    }
}

struct Faults {
    killed: Option<usize>,
    isolated: Option<usize>,
    log: Vec<String>,
}

impl Faults {
    async fn inject(&mut self, fault: Fault, cluster: &mut LocalCluster) -> String {
        match fault {
            Fault::KillLeader => match wait_for_leader(cluster).await {
                Some(leader) => {
                    cluster.kill(leader).await;
                    self.killed = Some(leader);
                    format!("killed the leader, node {leader}")
                }
                None => format!("no leader to kill within {FAULT_LEADER_WAIT:?}"),
            },
            Fault::RestartKilled => match self.killed.take() {
                Some(node) => match cluster.restart(node).await {
                    Ok(()) => format!("restarted node {node} from its store"),
                    Err(e) => format!("could not restart node {node}: {e}"),
                },
                None => "nothing to restart".to_string(),
            },
            Fault::IsolateLeader => match wait_for_leader(cluster).await {
                Some(leader) => {
                    cluster.isolate(leader, true);
                    self.isolated = Some(leader);
                    format!("cut the leader, node {leader}, off from the other nodes")
                }
                None => format!("no leader to cut off within {FAULT_LEADER_WAIT:?}"),
            },
            Fault::Heal => match self.isolated.take() {
                Some(node) => {
                    cluster.isolate(node, false);
                    format!("healed node {node}")
                }
                None => "nothing to heal".to_string(),
            },
        }
    }

    /// Undoes whatever is still in effect.
    async fn clear(&mut self, cluster: &mut LocalCluster) -> Vec<String> {
        let mut done = Vec::new();
        if self.isolated.is_some() {
            done.push(self.inject(Fault::Heal, cluster).await);
        }
        if self.killed.is_some() {
            done.push(self.inject(Fault::RestartKilled, cluster).await);
        }
        done
    }
}

/// Runs the demo. `progress` hears a note per fault and a tick ten times a second.
pub async fn run_demo(
    options: &DemoOptions,
    progress: &mut dyn FnMut(DemoProgress<'_>),
) -> Result<DemoReport, DemoError> {
    let mut cluster = LocalCluster::start(LocalOptions {
        trace: options.trace.clone(),
        tls: options.tls.clone(),
        ..LocalOptions::default()
    })
    .await
    .map_err(DemoError::Start)?;
    let nodes: Vec<String> = cluster
        .config()
        .nodes
        .iter()
        .map(|n| format!("node {} peer {} client {}", n.id, n.peer, n.client))
        .collect();
    note(
        progress,
        &format!(
            "started {} nodes on loopback: {}",
            cluster.len(),
            nodes.join("; ")
        ),
    );
    let Some((leader, state)) = cluster.client().wait_for_leader(FIRST_LEADER_WAIT).await else {
        cluster.shutdown().await;
        return Err(DemoError::NoLeader);
    };
    note(
        progress,
        &format!(
            "node {} leads term {}; {} clients start on {} keys for {:?}",
            leader, state.term, options.clients, options.keys, options.duration
        ),
    );

    let shared = Shared::new(options.trace.clone());
    let mut clients: Vec<_> = (0..options.clients)
        .map(|id| {
            let clerk = cluster.client().clerk();
            actix::spawn(client(id, clerk, (options.keys, key_name), shared.clone()))
        })
        .collect();

    let mut faults = Faults {
        killed: None,
        isolated: None,
        log: Vec::new(),
    };
    let mut next_fault = 0;
    let mut next_report = Duration::from_secs(1);
    let mut ops_at_last_report = 0;
    let mut ops_last_second = 0;
    let mut leader = Some(leader);
    let mut injected = 0;
    while shared.started.elapsed() < options.duration {
        sleep(TICK).await;
        let now = shared.started.elapsed();
        while let Some(&(at, fault)) = SCHEDULE.get(next_fault) {
            if now < options.duration.mul_f64(at) {
                break;
            }
            next_fault += 1;
            let what = faults.inject(fault, &mut cluster).await;
            injected += 1;
            let line = format!("[{:5.1}s] fault: {what}", now.as_secs_f64());
            note(progress, &line);
            faults.log.push(line);
        }
        let ops = shared.ops();
        let second = now >= next_report;
        if second {
            next_report += Duration::from_secs(1);
            leader = cluster.leader().await;
            ops_last_second = ops - ops_at_last_report;
            ops_at_last_report = ops;
        }
        let up = (0..cluster.len())
            .filter(|&i| cluster.node(i).is_some())
            .count();
        progress(DemoProgress::Tick(DemoTick {
            elapsed: now,
            duration: options.duration,
            ops,
            ops_last_second,
            faults: injected,
            leader,
            up,
            nodes: cluster.len(),
            second,
        }));
    }
    for what in faults.clear(&mut cluster).await {
        let line = format!(
            "[{:5.1}s] end of faults: {what}",
            shared.started.elapsed().as_secs_f64()
        );
        note(progress, &line);
        faults.log.push(line);
    }
    let drained = drain(&shared, &mut clients).await;
    let elapsed = shared.started.elapsed();
    cluster.shutdown().await;
    if !drained {
        return Err(DemoError::Stuck {
            clients: options.clients,
        });
    }
    let verdict = check(&shared, options.check_timeout, progress);
    let latencies = shared.latencies();
    Ok(DemoReport {
        ops: shared.ops(),
        elapsed,
        latencies,
        faults: faults.log,
        verdict,
    })
}
