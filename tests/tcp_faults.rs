//! Storage faults on real processes, disks and TCP: `rainkv serve` nodes in child processes,
//! a client in this process (the library's clerk over TCP).
//!
//! - A second `rainkv serve` on a data directory in use exits at once with status 1, saying
//!   which directory and that another process (by pid) holds it; with the same node id too,
//!   whose ports are busy: the lock is taken before anything else. The first keeps running.
//! - A node whose disk fails exits with status 1, saying why, while a client keeps writing
//!   through the other two, every write succeeding: first an fsync fails (test hook
//!   [`FAIL_FSYNC_VAR`]), then, restarted, its disk fills while it catches up (test hook
//!   [`FAIL_WRITES_AFTER_VAR`]). Each time its WAL then holds at most a torn final write
//!   (`rainkv wal check` exits 0); restarted without a hook it catches up, and every write
//!   the cluster acknowledged reads back.
//! - A WAL damaged in the middle (a record's length, or a payload byte) makes `rainkv serve`
//!   refuse to start with status 1, naming the file and the offset, and leaves the file byte
//!   for byte as it was; `rainkv wal check` exits 1 on it. The same WAL with only its final
//!   record torn starts, cut at that record.
//!
//! Every child is reaped, also when an assertion fails; node logs are printed then.

mod processes;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rainkv::deploy::client::ClusterClient;
use rainkv::deploy::cluster_file::ClusterFile;
use rainkv::messages::raft::LogEntry;
use rainkv::messages::storage::StateUpdate;
use rainkv::storage::{FilePersister, Persister, FAIL_FSYNC_VAR, FAIL_WRITES_AFTER_VAR};
use rainkv::Clerk;
use tokio::time::{sleep, timeout};

use processes::bounded::run_bounded;
use processes::{free_ports, serve_command, write_config, Scratch, Servers};

/// How long a node may take to start (to take its data directory's lock).
const STARTUP_LIMIT: Duration = Duration::from_secs(10);
/// "At once": how long a refused process may take to exit.
const REFUSAL_LIMIT: Duration = Duration::from_secs(3);
/// How long the cluster may take to elect a leader.
const ELECTION_LIMIT: Duration = Duration::from_secs(10);
/// Every write must succeed within this (a clerk retries through another node).
const OP_LIMIT: Duration = Duration::from_secs(5);
/// Which fsync of the failing node fails first: opening its new data directory takes two,
/// each save one, so some 30 writes reach its disk before.
const FAILING_FSYNC: u64 = 40;
/// The restarted node writes at most this much before its disk is "full": less than it must
/// write to catch up.
const DISK_BYTES: u64 = 64 << 10;
/// How long the failing node may take to exit once it starts.
const FAIL_LIMIT: Duration = Duration::from_secs(15);
/// How long a node whose disk failed may take from the failure to its exit.
const HALT_TO_EXIT_LIMIT: Duration = Duration::from_secs(2);
/// How long the client goes on writing once the failing node has exited.
const WRITES_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How long the restarted node may take to apply what was committed meanwhile.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);
/// The keys the writer cycles through.
const KEYS: u64 = 32;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A test hook for a node's disk: the variable and its value.
type Hook = (&'static str, u64);

/// The nodes of one test, each logging (stdout and stderr) to a file of its own.
struct Nodes {
    servers: Servers,
    config: PathBuf,
    dir: PathBuf,
}

impl Nodes {
    fn new(scratch: &Scratch, token: &str) -> Nodes {
        Nodes {
            servers: Servers(Vec::new()),
            config: write_config(&scratch.0, token, &free_ports()),
            dir: scratch.0.clone(),
        }
    }

    fn data(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    fn log_path(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    fn log(&self, id: usize) -> String {
        fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Starts node `id` (in slot `id`, replacing an exited one), with a disk hook if given.
    fn start(&mut self, id: usize, hook: Option<Hook>) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open node log");
        let stderr = log.try_clone().expect("clone log handle");
        let mut command = serve_command(&self.config, id, &self.data(id));
        if let Some((var, value)) = hook {
            command.env(var, value.to_string());
        }
        let child = command
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start rainkv serve");
        match self.servers.0.get_mut(id) {
            Some(slot) => *slot = child,
            None => {
                assert_eq!(self.servers.0.len(), id, "nodes start in id order");
                self.servers.0.push(child);
            }
        }
    }

    fn cluster(&self) -> ClusterClient {
        ClusterClient::connect(&ClusterFile::load(&self.config).expect("load config"))
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for id in 0..self.servers.0.len() {
                eprintln!("--- node {id} log ---\n{}", self.log(id));
            }
        }
    }
}

/// Waits until `child` holds the lock of `data` (it writes its pid in the lock file).
fn wait_for_lock(child: &mut Child, data: &Path) {
    let deadline = Instant::now() + STARTUP_LIMIT;
    let pid = Some(child.id().to_string());
    while fs::read_to_string(data.join("lock"))
        .ok()
        .map(|s| s.trim().to_string())
        != pid
    {
        assert!(
            child.try_wait().expect("poll the node").is_none(),
            "the node exited"
        );
        assert!(
            Instant::now() < deadline,
            "no lock within {STARTUP_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `rainkv serve` that is expected to refuse to start: its exit status (`None` if it
/// still ran after [`REFUSAL_LIMIT`]), its stderr and how long it ran.
fn run_refused(mut command: Command) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let finished = run_bounded(&mut command, REFUSAL_LIMIT);
    let took = started.elapsed();
    (
        finished.status.and_then(|s| s.code()),
        finished.stderr,
        took,
    )
}

/// `rainkv wal check DIR`.
fn wal_check(data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rainkv"))
        .args(["wal", "check"])
        .arg(data)
        .output()
        .expect("run rainkv wal check")
}

#[actix::test]
async fn a_second_serve_on_a_data_directory_in_use_is_refused_at_once() {
    let scratch = Scratch::new("faults-lock");
    let mut nodes = Nodes::new(&scratch, "lock-token");
    for id in 0..3 {
        nodes.start(id, None);
    }
    let data = nodes.data(0);
    wait_for_lock(&mut nodes.servers.0[0], &data);
    let holder = nodes.servers.0[0].id();

    // Node 1's ports are free: only the lock can refuse it. Node 0's are busy: the lock is
    // checked before they are bound, so the message is about the directory, not a port.
    for id in [1, 0] {
        // Else a failure below would blame the lock for a first node that is gone.
        let first_status = nodes.servers.0[0].try_wait().expect("poll the first");
        assert!(
            first_status.is_none(),
            "the first node exited: {first_status:?}"
        );
        let (status, stderr, took) = run_refused(serve_command(&nodes.config, id, &data));
        assert_eq!(
            status,
            Some(1),
            "id {id}: {status:?} after {took:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("the data directory {} is in use", data.display()))
                && stderr.contains(&format!("another process (pid {holder}) holds its lock")),
            "id {id}: {stderr}"
        );
        assert!(!stderr.contains("cannot listen"), "id {id}: {stderr}");
        eprintln!("a second serve (id {id}) on node 0's directory exited in {took:?}");
    }

    // The first keeps serving: it answers its status, and the cluster takes a write.
    assert!(
        nodes.servers.0[0]
            .try_wait()
            .expect("poll the first")
            .is_none(),
        "the first node still runs"
    );
    let cluster = nodes.cluster();
    assert!(
        cluster.wait_for_leader(ELECTION_LIMIT).await.is_some(),
        "no leader within {ELECTION_LIMIT:?}"
    );
    let clerk = cluster.clerk();
    let put = timeout(OP_LIMIT, clerk.put("after", "refusals")).await;
    assert!(matches!(put, Ok(Ok(()))), "{put:?}");
    let reports = cluster.status(Duration::from_millis(500)).await;
    let first = reports[0].status.as_ref().expect("node 0 answers");
    assert!(first.raft.is_some(), "node 0 runs Raft: {first:?}");
    cluster.close();
}

/// A client writing 1 KiB values round [`KEYS`] keys, remembering what was acknowledged.
struct Writer {
    clerk: Clerk,
    value: String,
    writes: u64,
    acked: BTreeMap<String, String>,
}

impl Writer {
    /// Writes one value; it must succeed within [`OP_LIMIT`].
    async fn write(&mut self) {
        self.writes += 1;
        let n = self.writes;
        let (key, value) = (format!("k{}", n % KEYS), format!("{n}:{}", self.value));
        match timeout(OP_LIMIT, self.clerk.put(key.clone(), value.clone())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("write {n}: {e}"),
            Err(_) => panic!("write {n} not done within {OP_LIMIT:?}"),
        }
        self.acked.insert(key, value);
    }
}

/// How long from the first line of the node log `log` past byte `from` that shows `failure`
/// to the node's exit line; the log is polled every 2 ms from another thread (the test's own
/// loop is busy writing).
fn watch_failure(
    log: PathBuf,
    from: usize,
    failure: &'static str,
) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + FAIL_LIMIT + HALT_TO_EXIT_LIMIT;
        let mut failed = None;
        loop {
            let text = fs::read(&log).unwrap_or_default();
            let text = String::from_utf8_lossy(text.get(from..).unwrap_or_default());
            let now = Instant::now();
            if failed.is_none() && text.contains(failure) {
                failed = Some(now);
            }
            if let Some(at) = failed {
                if text.contains("stopped because its storage failed") {
                    return now - at;
                }
            }
            assert!(now < deadline, "no failure and exit in the log: {text}");
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

/// Starts node `id` with `hook` and writes until it has exited, then for
/// [`WRITES_AFTER_EXIT`] more; every write succeeds. Checks its exit status, how soon it
/// exited after the failure, its log and its WAL.
async fn fail_node(nodes: &mut Nodes, id: usize, hook: Hook, writer: &mut Writer) {
    let log_before = nodes.log(id).len();
    let failure = if hook.0 == FAIL_FSYNC_VAR {
        "failing fsync"
    } else {
        "no space left on device (injected by the test hook"
    };
    let watcher = watch_failure(nodes.log_path(id), log_before, failure);
    nodes.start(id, Some(hook));
    let started = Instant::now();
    let first = writer.writes;
    let (status, exited) = loop {
        writer.write().await;
        if let Some(status) = nodes.servers.0[id].try_wait().expect("poll") {
            break (status, Instant::now());
        }
        assert!(
            started.elapsed() < FAIL_LIMIT,
            "node {id} ({}={}) still runs after {} writes",
            hook.0,
            hook.1,
            writer.writes - first
        );
    };
    let before = writer.writes;
    while exited.elapsed() < WRITES_AFTER_EXIT {
        writer.write().await;
    }
    let after = writer.writes - before;
    let halt_to_exit = watcher.join().expect("the log watcher");
    eprintln!(
        "node {id} ({}={}) exited ({status}) {:?} after it started, {halt_to_exit:?} after \
         its disk failed, {} writes meanwhile; {after} writes succeeded in the {:?} after",
        hook.0,
        hook.1,
        exited - started,
        before - first,
        WRITES_AFTER_EXIT
    );
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(after >= 10, "{after} writes after the exit");
    assert!(
        halt_to_exit < HALT_TO_EXIT_LIMIT,
        "{halt_to_exit:?} from the failure to the exit"
    );
    let log = nodes.log(id)[log_before..].to_string();
    assert!(
        log.contains(&format!(
            "error: node {id} stopped because its storage failed"
        )) && log.contains(failure),
        "{log}"
    );

    // What it left on disk is at most a torn final write, which a restart cuts.
    let check = wal_check(&nodes.data(id));
    let report = text(&check.stdout);
    assert!(check.status.success(), "{report}{}", text(&check.stderr));
    let verdict = report.lines().last().unwrap_or_default();
    let torn_allowed = hook.0 == FAIL_WRITES_AFTER_VAR;
    assert!(
        verdict == "verdict: ok"
            || (torn_allowed && verdict.starts_with("verdict: torn tail at offset")),
        "{report}"
    );
    assert!(
        report.contains("\nstate after a restart: term "),
        "{report}"
    );
    eprintln!("rainkv wal check after the failure:\n{}", tail(&report, 3));
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[actix::test]
async fn a_node_whose_disk_fails_exits_and_the_cluster_keeps_every_acknowledged_write() {
    let scratch = Scratch::new("faults-disk");
    let mut nodes = Nodes::new(&scratch, "disk-token");
    let failing = 2;
    for id in 0..failing {
        nodes.start(id, None);
    }
    let cluster = nodes.cluster();
    assert!(
        cluster.wait_for_leader(ELECTION_LIMIT).await.is_some(),
        "no leader within {ELECTION_LIMIT:?}"
    );
    let mut writer = Writer {
        clerk: cluster.clerk(),
        value: "v".repeat(1024),
        writes: 0,
        acked: BTreeMap::new(),
    };
    let started = Instant::now();

    // An fsync fails; restarted, its disk fills while it catches up.
    fail_node(
        &mut nodes,
        failing,
        (FAIL_FSYNC_VAR, FAILING_FSYNC),
        &mut writer,
    )
    .await;
    fail_node(
        &mut nodes,
        failing,
        (FAIL_WRITES_AFTER_VAR, DISK_BYTES),
        &mut writer,
    )
    .await;

    // Restarted without a hook, it recovers and applies what was committed meanwhile.
    nodes.start(failing, None);
    let target = cluster
        .status(Duration::from_millis(500))
        .await
        .iter()
        .filter_map(|r| r.status.as_ref().ok())
        .filter_map(|s| s.raft.map(|r| r.commit_index))
        .max()
        .unwrap_or(0);
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    loop {
        let reports = cluster.status(Duration::from_millis(500)).await;
        let applied = reports[failing]
            .status
            .as_ref()
            .ok()
            .and_then(|s| s.raft.map(|r| r.last_applied));
        if applied.is_some_and(|a| a >= target) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {failing} did not apply {target} within {CATCH_UP_LIMIT:?}: {reports:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }

    // Every acknowledged write reads back.
    assert_eq!(writer.acked.len() as u64, KEYS);
    for (key, value) in &writer.acked {
        let got = timeout(OP_LIMIT, writer.clerk.get_string(key.clone())).await;
        assert_eq!(got, Ok(Ok(Some(value.clone()))), "{key}");
    }
    cluster.close();
    eprintln!(
        "{} writes, all acknowledged and kept; the test took {:?}",
        writer.writes,
        started.elapsed()
    );
}

/// A data directory written by the library's file store (what `rainkv serve` uses): ten
/// saves of terms 1..=10, save `i` adding `i` entries; returns the WAL's path and where its
/// records end (zeros follow, preallocated).
fn saved_data_dir(data: &Path) -> (PathBuf, usize) {
    let mut store = FilePersister::open(data).expect("open the store");
    let mut first_index = 1;
    for i in 1..=10u64 {
        let entries: Vec<LogEntry> = (0..i)
            .map(|_| LogEntry::command(i, vec![i as u8; 16]))
            .collect();
        let count = entries.len() as u64;
        store
            .save(StateUpdate {
                term: i,
                voted_for: Some(1),
                snapshot: None,
                first_index,
                entries,
            })
            .expect("save");
        first_index += count;
    }
    assert!(store.read_snapshot().is_empty());
    (data.join("wal"), store.raft_state_size())
}

/// The offset of each record `rainkv wal check` lists.
fn record_offsets(report: &str) -> Vec<usize> {
    report
        .lines()
        .filter_map(|line| line.strip_prefix("record "))
        .map(|line| {
            let offset = line.split("offset ").nth(1).expect("an offset");
            offset[..offset.find(',').expect("a comma")]
                .parse()
                .expect("a number")
        })
        .collect()
}

#[test]
fn a_wal_damaged_mid_file_refuses_to_start_and_is_left_as_it_is() {
    let scratch = Scratch::new("faults-flip");
    let mut nodes = Nodes::new(&scratch, "flip-token");
    let data = nodes.data(0);
    let (wal, used) = saved_data_dir(&data);
    let good = fs::read(&wal).expect("read the WAL");
    let check = wal_check(&data);
    let report = text(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains(
            "state after a restart: term 10, vote 1, last index 55 (term 10), no snapshot"
        ),
        "{report}"
    );
    let offsets = record_offsets(&report);
    assert_eq!(offsets.len(), 10, "{report}");
    let fifth = offsets[4];

    // The fifth record's length field (its header's first byte), then a byte of its payload.
    for (what, at, reason) in [
        ("length", fifth, "header fails its checksum"),
        ("payload", fifth + 30, "payload"),
    ] {
        let mut damaged = good.clone();
        damaged[at] ^= 0x01;
        fs::write(&wal, &damaged).expect("write the damaged WAL");
        let (status, stderr, took) = run_refused(serve_command(&nodes.config, 0, &data));
        assert_eq!(
            status,
            Some(1),
            "{what}: {status:?} after {took:?}: {stderr}"
        );
        let expected = format!("{}: corrupt at offset {fifth}: ", wal.display());
        assert!(
            stderr.contains(&expected) && stderr.contains(reason),
            "{what}: {stderr}"
        );
        assert_eq!(
            fs::read(&wal).expect("read the WAL"),
            damaged,
            "{what}: the refused WAL changed"
        );
        eprintln!("serve refused a WAL with a flipped {what} byte in {took:?}");

        let check = wal_check(&data);
        let report = text(&check.stdout);
        assert_eq!(check.status.code(), Some(1), "{what}: {report}");
        let verdict = report.lines().last().unwrap_or_default();
        assert!(
            verdict.starts_with(&format!("verdict: corrupt at offset {fifth}: "))
                && verdict.contains(reason),
            "{what}: {report}"
        );
        assert!(
            !report.contains("state after a restart"),
            "{what}: {report}"
        );
        assert_eq!(record_offsets(&report), offsets[..4], "{what}: {report}");
    }

    // For contrast: only the final record torn (its last bytes never reached the disk, and
    // read as the zeros that were there). It is cut, and the node starts.
    let last = offsets[9];
    let mut torn = good.clone();
    torn[used - 3..used].fill(0);
    fs::write(&wal, &torn).expect("write the torn WAL");
    nodes.start(0, None);
    wait_for_lock(&mut nodes.servers.0[0], &data);
    let deadline = Instant::now() + STARTUP_LIMIT;
    while !nodes.log(0).contains("rainkv node 0 of cluster") {
        assert!(Instant::now() < deadline, "node 0 did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        nodes.log(0).contains(&format!(
            "{}: cutting off a torn final record at offset {last}",
            wal.display()
        )),
        "{}",
        nodes.log(0)
    );
    // Stopped, it kept the nine whole records (a lone node adds only term and vote saves).
    let node = &mut nodes.servers.0[0];
    node.kill().expect("kill node 0");
    node.wait().expect("reap node 0");
    let cut = fs::read(&wal).expect("read the WAL");
    assert_eq!(cut[..last], good[..last]);
    let check = wal_check(&data);
    let report = text(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert_eq!(record_offsets(&report)[..9], offsets[..9], "{report}");
    assert!(
        report.contains("last index 45 (term 9), no snapshot\nverdict: ok"),
        "{report}"
    );
}
