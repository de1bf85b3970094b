//! Crashes of real processes: three `rainkv serve` nodes, each with a data directory, under
//! load from concurrent clients in this process (the library's clerks over TCP). The leader,
//! found through the status RPC, is killed with SIGKILL and restarted from its data directory;
//! once it has caught up, the same again; then all three nodes are killed at once and
//! restarted, so from then on every value can only have come from the disks. Afterwards:
//!
//! - every acknowledged append is in place exactly once and in order: each client appends
//!   unique tokens to a key of its own, which must then hold exactly the acknowledged tokens
//!   (plus, last, the one whose outcome the client never learned, if any);
//! - the history of all operations, the final reads included, is linearizable (the testkit's
//!   checker; "unknown" fails the test).
//!
//! A clerk retries an operation until it succeeds, so operations in flight at a crash usually
//! complete once a leader is back. One that has not completed within [`OP_LIMIT`] has an
//! unknown outcome: a write is recorded as never returning (it may take effect at any time
//! after its call, or never), a read is left out, and that client stops, since its clerk is
//! still busy with the operation. Every child is reaped, also when an assertion fails; node
//! logs are printed then.

mod processes;

use std::cell::Cell;
use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rainkv::actors::clerk::Clerk;
use rainkv::check::{check_operations, CheckResult, KvInput, KvModel, KvOp, KvOutput, Operation};
use rainkv::deploy::client::ClusterClient;
use rainkv::deploy::cluster_file::ClusterFile;
use rand::Rng;
use tokio::time::{sleep, timeout};

use processes::bounded::wait_bounded;
use processes::{free_ports, serve_command, write_config, Scratch, Servers};

/// The whole test ends within this, whatever goes wrong.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long the cluster may take to elect a leader (at the start, after each crash).
const ELECTION_LIMIT: Duration = Duration::from_secs(10);
/// Load before each crash, and after the last one.
const LOAD: Duration = Duration::from_secs(2);
/// How long a killed leader stays down while the other two carry the load.
const DOWN: Duration = Duration::from_secs(1);
/// How long a restarted node may take to apply what the leader had committed at its restart.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);
/// An operation not done within this has an unknown outcome.
const OP_LIMIT: Duration = Duration::from_secs(10);
/// How long the clients may take to finish their last operation once told to stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// How long a SIGKILLed node may take to be reaped.
const EXIT_LIMIT: Duration = Duration::from_secs(5);
/// How long the linearizability checker may search.
const CHECK_LIMIT: Duration = Duration::from_secs(30);
/// Concurrent clients.
const CLIENTS: usize = 6;
/// Keys every client writes (besides its own).
const SHARED_KEYS: usize = 3;

type History = Vec<Operation<KvInput, KvOutput>>;

/// The key only client `id` appends to.
fn own_key(id: usize) -> String {
    format!("own{id}")
}

/// Every key of the test.
fn all_keys() -> Vec<String> {
    (0..CLIENTS)
        .map(own_key)
        .chain((0..SHARED_KEYS).map(|k| format!("shared{k}")))
        .collect()
}

/// The running nodes and where their data and logs are.
struct Nodes {
    servers: Servers,
    config: PathBuf,
    dir: PathBuf,
}

impl Nodes {
    fn data(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    fn log_path(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    /// Starts node `id` from its data directory, its output appended to its log.
    fn spawn(&self, id: usize) -> std::process::Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open node log");
        let stderr = log.try_clone().expect("clone log handle");
        serve_command(&self.config, id, &self.data(id))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start rainkv serve")
    }

    /// Kills node `id` with SIGKILL and reaps it; it must have been running until then.
    fn kill(&mut self, id: usize) {
        let child = &mut self.servers.0[id];
        if let Ok(Some(status)) = child.try_wait() {
            panic!("node {id} had already exited ({status}) before being killed");
        }
        child.kill().expect("send SIGKILL");
        let status = wait_bounded(child, EXIT_LIMIT);
        assert_eq!(
            status.and_then(|s| s.signal()),
            Some(9),
            "node {id} after SIGKILL: {status:?}"
        );
    }

    /// Starts node `id` again from its data directory (it must have been killed and reaped).
    fn restart(&mut self, id: usize) {
        let child = self.spawn(id);
        self.servers.0[id] = child;
    }

    /// The last lines of every node's log.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for id in 0..self.servers.0.len() {
            let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- node {id} log (last 30 lines) ---\n"));
            for line in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
    }
}

/// What the client tasks share with the driver.
#[derive(Clone)]
struct Shared {
    started: Instant,
    stop: Rc<Cell<bool>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

/// What one client did.
#[derive(Default)]
struct ClientLog {
    /// Its operations; a write with an unknown outcome returns at `u64::MAX`.
    history: History,
    /// Tokens appended to its own key and acknowledged, in order.
    acked: Vec<String>,
    /// The token of an append to its own key whose outcome it never learned.
    unknown: Option<String>,
}

/// Runs `input` through `clerk`: the value a Get read ("" for a missing key), "" for a write.
async fn run(clerk: &Clerk, input: &KvInput) -> String {
    let (key, value) = (input.key.clone(), input.value.clone());
    let done = match input.op {
        KvOp::Get => clerk.get_string(key).await.map(Option::unwrap_or_default),
        KvOp::Put => clerk.put(key, value).await.map(|()| String::new()),
        KvOp::Append => clerk.append(key, value).await.map(|()| String::new()),
    };
    done.unwrap_or_else(|e| panic!("{input:?}: {e}"))
}

/// One client: appends to its own key, writes to and reads the shared keys, reads anyone's
/// key, one operation at a time, until told to stop or an operation times out.
async fn client(id: usize, clerk: Clerk, shared: Shared) -> ClientLog {
    let mut rng = rand::thread_rng();
    let keys = all_keys();
    let mut log = ClientLog::default();
    let mut n = 0u64;
    while !shared.stop.get() {
        n += 1;
        let token = format!("c{id}.{n};");
        let shared_key = format!("shared{}", rng.gen_range(0..SHARED_KEYS));
        let (op, key, value) = match rng.gen_range(0..10) {
            0..=3 => (KvOp::Append, own_key(id), token),
            4..=5 => (KvOp::Append, shared_key, token),
            6 => (KvOp::Put, shared_key, token),
            _ => (
                KvOp::Get,
                keys[rng.gen_range(0..keys.len())].clone(),
                String::new(),
            ),
        };
        let input = KvInput { op, key, value };
        let own_append = op == KvOp::Append && input.key == own_key(id);
        let call = shared.now_ns();
        match timeout(OP_LIMIT, run(&clerk, &input)).await {
            Ok(value) => {
                if own_append {
                    log.acked.push(input.value.clone());
                }
                log.history.push(Operation {
                    client_id: id as u64,
                    input,
                    call,
                    output: KvOutput { value },
                    return_time: shared.now_ns(),
                });
            }
            Err(_) => {
                log::warn!("client {id}: {input:?} not done within {OP_LIMIT:?}; stopping");
                if own_append {
                    log.unknown = Some(input.value.clone());
                }
                if op != KvOp::Get {
                    log.history.push(Operation {
                        client_id: id as u64,
                        input,
                        call,
                        output: KvOutput::default(),
                        return_time: u64::MAX,
                    });
                }
                break;
            }
        }
    }
    log
}

/// The leader, by the status RPC, waiting up to [`ELECTION_LIMIT`] for one.
async fn leader(client: &ClusterClient) -> usize {
    match client.wait_for_leader(ELECTION_LIMIT).await {
        Some((id, _)) => id,
        None => panic!(
            "no leader within {ELECTION_LIMIT:?}: {:?}",
            client.status(Duration::from_millis(500)).await
        ),
    }
}

/// Waits until node `id` has applied everything some node reported committed on entry.
async fn caught_up(client: &ClusterClient, id: usize) {
    let target = client
        .status(Duration::from_millis(500))
        .await
        .iter()
        .filter_map(|r| r.status.as_ref().ok())
        .filter_map(|s| s.raft.map(|r| r.commit_index))
        .max()
        .unwrap_or(0);
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    loop {
        let reports = client.status(Duration::from_millis(500)).await;
        if reports[id]
            .status
            .as_ref()
            .is_ok_and(|s| s.raft.is_some_and(|r| r.last_applied >= target))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} did not apply index {target} within {CATCH_UP_LIMIT:?}: {reports:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that `value`, client `log`'s own key, holds exactly its acknowledged tokens in
/// order, then possibly its unknown one; a failure names the first token out of place.
fn check_own_key(id: usize, value: &str, log: &ClientLog) {
    let acked = log.acked.concat();
    let with_unknown = log.unknown.as_ref().map(|u| format!("{acked}{u}"));
    if value == acked || with_unknown.as_deref() == Some(value) {
        return;
    }
    let found: Vec<&str> = value.split_inclusive(';').collect();
    let agree = found
        .iter()
        .zip(&log.acked)
        .take_while(|(f, a)| **f == a.as_str())
        .count();
    panic!(
        "client {id}'s key {} lost, duplicated or reordered acknowledged appends: {} tokens \
         acknowledged (unknown outcome: {:?}), {} found; the first {agree} agree, then \
         expected {:?}, found {:?}",
        own_key(id),
        log.acked.len(),
        log.unknown,
        found.len(),
        log.acked.get(agree),
        found.get(agree),
    );
}

#[actix::test]
async fn leader_killed_twice_then_whole_cluster_under_load() {
    let _ = env_logger::builder().is_test(true).try_init();
    let started = Instant::now();
    let scratch = Scratch::new("crash");
    let ports = free_ports();
    let config_path = write_config(&scratch.0, "crash-token", &ports);
    // Dropped before the scratch directory: reaps the nodes, and prints their logs on failure.
    let mut nodes = Nodes {
        servers: Servers(Vec::new()),
        config: config_path,
        dir: scratch.0.clone(),
    };
    timeout(TEST_LIMIT, scenario(&mut nodes))
        .await
        .expect("the test exceeded its time limit");
    eprintln!("crash test took {:?}", started.elapsed());
}

async fn scenario(nodes: &mut Nodes) {
    let config = ClusterFile::load(&nodes.config).expect("load config");
    for id in 0..3 {
        let child = nodes.spawn(id);
        nodes.servers.0.push(child);
    }
    let cluster = ClusterClient::connect(&config);
    leader(&cluster).await;

    let shared = Shared {
        started: Instant::now(),
        stop: Rc::new(Cell::new(false)),
    };
    let mut clients: Vec<_> = (0..CLIENTS)
        .map(|id| actix::spawn(client(id, cluster.clerk(), shared.clone())))
        .collect();

    // Twice: the leader is killed mid-load, stays down for a while, is restarted from its
    // data directory and catches up.
    let mut restarted_at = Vec::new();
    for round in 1..=2 {
        sleep(LOAD).await;
        let victim = leader(&cluster).await;
        nodes.kill(victim);
        eprintln!(
            "[{:5.2}s] round {round}: killed the leader, node {victim}",
            shared.started.elapsed().as_secs_f64()
        );
        sleep(DOWN).await;
        nodes.restart(victim);
        caught_up(&cluster, victim).await;
        eprintln!(
            "[{:5.2}s] round {round}: node {victim} restarted and caught up",
            shared.started.elapsed().as_secs_f64()
        );
        restarted_at.push(shared.now_ns());
    }

    // Then every node at once, still under load: what comes back is what the disks held.
    sleep(LOAD).await;
    for id in 0..3 {
        nodes.kill(id);
    }
    for id in 0..3 {
        nodes.restart(id);
    }
    leader(&cluster).await;
    eprintln!(
        "[{:5.2}s] killed and restarted all three nodes; a leader is back",
        shared.started.elapsed().as_secs_f64()
    );
    restarted_at.push(shared.now_ns());
    sleep(LOAD).await;

    shared.stop.set(true);
    let drained = timeout(DRAIN_LIMIT, join_all(clients.iter_mut())).await;
    let Ok(results) = drained else {
        for c in &clients {
            c.abort();
        }
        panic!("clients were still busy {DRAIN_LIMIT:?} after being told to stop");
    };
    let logs: Vec<ClientLog> = results
        .into_iter()
        .map(|r| r.expect("client task"))
        .collect();
    let mut history: History = logs.iter().flat_map(|l| l.history.clone()).collect();
    let gave_up = logs.iter().filter(|l| l.unknown.is_some()).count();
    let unknown = history.iter().filter(|o| o.return_time == u64::MAX).count();
    eprintln!(
        "{} operations recorded ({} own-key appends acknowledged; {unknown} writes of unknown \
         outcome; {gave_up} clients gave up on an append to their own key)",
        history.len(),
        logs.iter().map(|l| l.acked.len()).sum::<usize>(),
    );

    // Not vacuous: writes were acknowledged after each restart.
    for (i, &at) in restarted_at.iter().enumerate() {
        let after = history
            .iter()
            .filter(|o| o.input.op != KvOp::Get && o.call >= at && o.return_time != u64::MAX)
            .count();
        assert!(after > 0, "no write acknowledged after restart {}", i + 1);
    }

    // The final reads, through a fresh clerk, are part of the history too.
    let reader = cluster.clerk();
    let mut finals = Vec::new();
    for key in all_keys() {
        let call = shared.now_ns();
        let value = timeout(OP_LIMIT, reader.get_string(key.clone()))
            .await
            .unwrap_or_else(|_| panic!("final read of {key} not done within {OP_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("final read of {key}: {e}"))
            .unwrap_or_default();
        history.push(Operation {
            client_id: CLIENTS as u64,
            input: KvInput {
                op: KvOp::Get,
                key: key.clone(),
                value: String::new(),
            },
            call,
            output: KvOutput {
                value: value.clone(),
            },
            return_time: shared.now_ns(),
        });
        finals.push(value);
    }
    cluster.close();

    for (id, log) in logs.iter().enumerate() {
        assert!(
            !log.acked.is_empty(),
            "client {id} had nothing acknowledged"
        );
        check_own_key(id, &finals[id], log);
    }

    let checking = Instant::now();
    match check_operations::<KvModel>(&history, CHECK_LIMIT) {
        CheckResult::Ok => {}
        other => panic!("{other}"),
    }
    eprintln!(
        "linearizable ({} operations, checked in {:?})",
        history.len(),
        checking.elapsed()
    );
}
