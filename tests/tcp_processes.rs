//! The binaries as a user runs them: three `rainkv serve` processes on loopback and
//! `rainkv-ctl` against them. Every child is reaped, also when an assertion fails.
//!
//! Nodes keep their state in memory for now, so nothing here restarts a node; killing and
//! restarting `serve` processes waits for the durable store.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rainkv::deploy::config::{
    ClusterConfig, NodeAddrs, TransportOverrides, DEFAULT_MAX_RAFT_STATE,
};

/// How long the cluster may take to come up and elect a leader.
const STARTUP_LIMIT: Duration = Duration::from_secs(15);
/// How long a node may take to exit after SIGTERM.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// The `serve` processes; dropping it kills and reaps any still running.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A scratch directory for one test, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("rainkv-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Six free loopback ports (bound, read and released; nothing else on this machine is
/// expected to grab them in the moment before the servers bind them).
fn free_ports() -> Vec<u16> {
    let sockets: Vec<TcpListener> = (0..6)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("local addr").port())
        .collect()
}

fn write_config(dir: &Path, token: &str, ports: &[u16]) -> PathBuf {
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let config = ClusterConfig {
        name: "process-test".into(),
        token: token.into(),
        max_raft_state: DEFAULT_MAX_RAFT_STATE,
        nodes: (0..3)
            .map(|id| NodeAddrs {
                id,
                peer: loopback(ports[id]),
                client: loopback(ports[id + 3]),
            })
            .collect(),
        transport: TransportOverrides::default(),
    };
    let text = config.to_toml().expect("config as TOML");
    let path = dir.join(format!("cluster-{token}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn ctl(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rainkv-ctl"))
        .arg("--config")
        .arg(config)
        .args(["--timeout", "2"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rainkv-ctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits for `child` to exit, up to `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_serve_processes_and_rainkv_ctl() {
    let scratch = Scratch::new("processes");
    let ports = free_ports();
    let config = write_config(&scratch.0, "right-token", &ports);
    let mut servers = Servers(Vec::new());
    for id in 0..3 {
        let child = Command::new(env!("CARGO_BIN_EXE_rainkv"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--id", &id.to_string()])
            .arg("--data")
            .arg(scratch.0.join(format!("node-{id}")))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rainkv serve");
        servers.0.push(child);
    }

    // Up, with a leader.
    let deadline = Instant::now() + STARTUP_LIMIT;
    let status = loop {
        let out = ctl(&config, &["status"]);
        let stdout = text(&out.stdout);
        if out.status.success() && stdout.contains("leader") {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {STARTUP_LIMIT:?}: {stdout}{}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        status.lines().count(),
        4,
        "a header and a line per node:\n{status}"
    );

    // Operations.
    let put = ctl(&config, &["put", "greeting", "hello"]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    let append = ctl(&config, &["append", "greeting", ", world"]);
    assert!(append.status.success(), "{}", text(&append.stderr));
    let get = ctl(&config, &["get", "greeting"]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(text(&get.stdout), "hello, world\n");

    // The benchmark against the running cluster: one line per workload.
    let bench = Command::new(env!("CARGO_BIN_EXE_rainkv"))
        .args([
            "bench",
            "--ops",
            "200",
            "--seq-ops",
            "20",
            "--keys",
            "50",
            "--config",
        ])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run rainkv bench");
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    let lines: Vec<String> = text(&bench.stdout).lines().map(str::to_string).collect();
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("workload="))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        names,
        ["seq_put", "put_64", "get_64", "mixed_64"],
        "{lines:?}"
    );
    for line in &lines {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "{line}");
        for (field, key) in fields[1..].iter().zip(["ops_per_s=", "p50_ms=", "p99_ms="]) {
            let number = field.strip_prefix(key).map(str::parse::<f64>);
            assert!(matches!(number, Some(Ok(n)) if n > 0.0), "{line}");
        }
    }

    // A wrong token: refused, exit status 1, and the reason is shown.
    let wrong = write_config(&scratch.0, "wrong-token", &ports);
    let out = ctl(&wrong, &["get", "greeting"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("wrong cluster token"),
        "{}",
        text(&out.stderr)
    );

    // A broken config file: exit status 2, naming the file.
    let broken = scratch.0.join("broken.toml");
    std::fs::write(&broken, "[cluster]\nname = \"x\"\n").expect("write");
    let out = ctl(&broken, &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("broken.toml"),
        "{}",
        text(&out.stderr)
    );

    // SIGTERM: each node shuts down cleanly.
    for child in &mut servers.0 {
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
    }
    for (id, child) in servers.0.iter_mut().enumerate() {
        let status = wait_bounded(child, EXIT_LIMIT);
        assert!(status.is_some_and(|s| s.success()), "node {id}: {status:?}");
        let mut stdout = String::new();
        if let Some(out) = child.stdout.as_mut() {
            let _ = out.read_to_string(&mut stdout);
        }
        assert!(
            stdout.contains("SIGTERM: shutting down"),
            "node {id}: {stdout}"
        );
    }

    // With every node gone: exit status 1 and the reason per node.
    let out = ctl(&config, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("unreachable"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_demo_binary_ends_with_its_verdict() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rainkv"))
        .args(["demo", "--seconds", "3", "--clients", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rainkv demo");
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stdout = String::new();
    if let Some(out) = child.stdout.as_mut() {
        let _ = out.read_to_string(&mut stdout);
    }
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stdout}");
    assert!(stdout.contains("faults injected"), "{stdout}");
    assert!(stdout.contains("ops/s; latency p50"), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("verdict: linearizable"),
        "{stdout}"
    );
}
