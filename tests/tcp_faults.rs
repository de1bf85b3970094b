//! Storage faults on real processes, disks and TCP: `rainkv serve` nodes in child processes,
//! a client in this process (the library's clerk over TCP).
//!
//! - A second `rainkv serve` on a data directory in use exits at once with status 1, saying
//!   which directory and that another process (by pid) holds it; with the same node id too,
//!   whose ports are busy: the lock is taken before anything else.
//! - A node whose disk fails (the test hook [`FAIL_WRITES_AFTER_VAR`] makes its writes fail as
//!   a full disk would) exits with status 1, saying why, while a client keeps writing through
//!   the other two, every write succeeding. Its WAL then ends at most in a torn final write
//!   (`rainkv wal check` exits 0), and restarted without the hook it recovers and catches up.
//!
//! Every child is reaped, also when an assertion fails; node logs are printed then.

mod processes;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rainkv::deploy::client::ClusterClient;
use rainkv::deploy::cluster_file::ClusterFile;
use rainkv::storage::FAIL_WRITES_AFTER_VAR;
use tokio::time::{sleep, timeout};

use processes::{free_ports, serve_command, wait_bounded, write_config, Scratch, Servers};

/// How long a node may take to start (to take its data directory's lock).
const STARTUP_LIMIT: Duration = Duration::from_secs(10);
/// "At once": how long a refused second process may take to exit.
const REFUSAL_LIMIT: Duration = Duration::from_secs(3);
/// How long the cluster may take to elect a leader.
const ELECTION_LIMIT: Duration = Duration::from_secs(10);
/// Every write must succeed within this (a clerk retries through another node).
const OP_LIMIT: Duration = Duration::from_secs(5);
/// The failing node writes at most this much before its disk is "full": the WAL's header,
/// a few term and vote saves, then some 60 of the test's 1 KiB writes.
const DISK_BYTES: u64 = 64 << 10;
/// How long the failing node may take to exit once the writes start.
const FAIL_LIMIT: Duration = Duration::from_secs(15);
/// How long the client goes on writing once the failing node has exited.
const WRITES_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How long the restarted node may take to apply what was committed meanwhile.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The nodes of one test, each logging (stdout and stderr) to a file of its own.
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

    fn log(&self, id: usize) -> String {
        fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Starts node `id`, with the test hook's byte budget if `disk_bytes` is given.
    fn spawn(&self, id: usize, disk_bytes: Option<u64>) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open node log");
        let stderr = log.try_clone().expect("clone log handle");
        let mut command = serve_command(&self.config, id, &self.data(id));
        if let Some(bytes) = disk_bytes {
            command.env(FAIL_WRITES_AFTER_VAR, bytes.to_string());
        }
        command
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start rainkv serve")
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
            "the first node exited"
        );
        assert!(
            Instant::now() < deadline,
            "no lock within {STARTUP_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_serve_on_a_data_directory_in_use_is_refused_at_once() {
    let scratch = Scratch::new("faults-lock");
    let ports = free_ports();
    let mut nodes = Nodes {
        servers: Servers(Vec::new()),
        config: write_config(&scratch.0, "lock-token", &ports),
        dir: scratch.0.clone(),
    };
    let first = nodes.spawn(0, None);
    nodes.servers.0.push(first);
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
        let started = Instant::now();
        let mut second = serve_command(&nodes.config, id, &data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a second rainkv serve");
        let status = wait_bounded(&mut second, REFUSAL_LIMIT);
        if status.is_none() {
            let _ = second.kill();
            let _ = second.wait();
        }
        let took = started.elapsed();
        let output = second.wait_with_output().expect("the second's output");
        let stderr = text(&output.stderr);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(1),
            "id {id}: {status:?} after {took:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("the data directory {} is in use", data.display()))
                && stderr.contains(&format!("another process (pid {holder}) holds its lock")),
            "id {id}: {stderr}"
        );
        assert!(!stderr.contains("cannot listen"), "id {id}: {stderr}");
    }
    assert!(
        nodes.servers.0[0]
            .try_wait()
            .expect("poll the first")
            .is_none(),
        "the first node still runs"
    );
}

#[actix::test]
async fn a_node_whose_disk_fails_exits_and_the_other_two_keep_serving() {
    let scratch = Scratch::new("faults-disk");
    let ports = free_ports();
    let mut nodes = Nodes {
        servers: Servers(Vec::new()),
        config: write_config(&scratch.0, "disk-token", &ports),
        dir: scratch.0.clone(),
    };
    let failing = 2;
    for id in 0..3 {
        let budget = (id == failing).then_some(DISK_BYTES);
        let child = nodes.spawn(id, budget);
        nodes.servers.0.push(child);
    }
    let config = ClusterFile::load(&nodes.config).expect("load config");
    let cluster = ClusterClient::connect(&config);
    assert!(
        cluster.wait_for_leader(ELECTION_LIMIT).await.is_some(),
        "no leader within {ELECTION_LIMIT:?}"
    );

    // 1 KiB writes until the failing node has exited, then for a while more: each succeeds.
    let clerk = cluster.clerk();
    let value = "v".repeat(1024);
    let started = Instant::now();
    let (mut writes, mut exit) = (0u64, None);
    let writes_after_exit = loop {
        writes += 1;
        let key = format!("k{}", writes % 32);
        match timeout(OP_LIMIT, clerk.put(key, format!("{writes}:{value}"))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("write {writes}: {e}"),
            Err(_) => panic!("write {writes} not done within {OP_LIMIT:?}"),
        }
        match exit {
            None => {
                if let Some(status) = nodes.servers.0[failing].try_wait().expect("poll") {
                    exit = Some((status, Instant::now(), writes));
                }
                assert!(
                    started.elapsed() < FAIL_LIMIT,
                    "node {failing} still runs after {writes} writes"
                );
            }
            Some((_, at, before)) if at.elapsed() >= WRITES_AFTER_EXIT => break writes - before,
            Some(_) => {}
        }
    };
    let Some((status, _, before)) = exit else {
        unreachable!("the loop ends after the exit")
    };
    eprintln!(
        "node {failing} exited ({status}) after {before} writes in {:?}; {writes_after_exit} \
         writes succeeded after it",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(writes_after_exit >= 10, "{writes_after_exit} writes after");
    let log = nodes.log(failing);
    assert!(
        log.contains(&format!(
            "error: node {failing} stopped because its storage failed"
        )) && log.contains("no space left on device (injected by the test hook"),
        "{log}"
    );

    // What it left on disk is at most a torn final write, which a restart cuts.
    let check = Command::new(env!("CARGO_BIN_EXE_rainkv"))
        .args(["wal", "check"])
        .arg(nodes.data(failing))
        .output()
        .expect("run rainkv wal check");
    let report = text(&check.stdout);
    assert!(check.status.success(), "{report}{}", text(&check.stderr));
    let verdict = report.lines().last().unwrap_or_default();
    assert!(
        verdict.starts_with("verdict: torn tail at offset") || verdict == "verdict: ok",
        "{report}"
    );
    assert!(report.lines().count() > 2, "records listed: {report}");

    // Restarted without the hook, it recovers and applies what was committed meanwhile.
    let restarted = nodes.spawn(failing, None);
    nodes.servers.0[failing] = restarted;
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
    let last = clerk.get_string(format!("k{}", writes % 32)).await;
    assert_eq!(last, Ok(Some(format!("{writes}:{value}"))));
    cluster.close();
    eprintln!("disk-failure test took {:?}", started.elapsed());
}
