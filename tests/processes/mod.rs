//! What the tests that run `rainkv serve` as child processes share: the children (killed and
//! reaped whenever the test ends, passing or not), a scratch directory, free loopback ports,
//! a cluster config on them, the command line that starts a node, and bounded waits
//! ([`bounded`]).

pub mod bounded;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};

use rainkv::deploy::cluster_file::{
    ClusterFile, NodeAddrs, RaftOverrides, SessionOverrides, TransportOverrides,
    DEFAULT_MAX_RAFT_STATE,
};

/// The `serve` processes, one slot per node id; dropping it kills and reaps any still running.
pub struct Servers(pub Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A scratch directory for one test, removed afterwards.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("rainkv-{name}-{}", std::process::id()));
        // Left over from an earlier run with the same pid: start clean.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The next port [`free_ports`] tries, shared by the tests of one binary (which run at once).
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Six free loopback ports, each bound once to check it is free, then released. They come
/// from below the kernel's ephemeral range (32768 and up), so no outgoing connection of a
/// running node is ever given one before its server binds it, and no two calls in this process
/// hand out the same port (a port the kernel picks for `bind(0)` and the test releases may be
/// picked again, for another test's node or for a node's outgoing connection, before the
/// server it was meant for binds it).
pub fn free_ports() -> Vec<u16> {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    // A start of its own per test process, so consecutive binaries do not reuse ports that
    // may still be in TIME_WAIT.
    let start = (std::process::id() % u32::from(SPAN)) as u16;
    let _ = NEXT_PORT.compare_exchange(0, start.max(1), Ordering::SeqCst, Ordering::SeqCst);
    let mut ports = Vec::new();
    for _ in 0..u32::from(SPAN) {
        if ports.len() == 6 {
            break;
        }
        let port = FIRST + NEXT_PORT.fetch_add(1, Ordering::SeqCst) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(
        ports.len(),
        6,
        "no six free ports in {FIRST}..{}",
        FIRST + SPAN
    );
    ports
}

/// The config of a three-node cluster on `ports` (peer ports first, then client ports),
/// written to `dir`; returns its path.
pub fn write_config(dir: &Path, token: &str, ports: &[u16]) -> PathBuf {
    let config = cluster_file(token, ports);
    let text = config.to_toml().expect("config as TOML");
    let path = dir.join(format!("cluster-{token}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// The configuration [`write_config`] writes.
fn cluster_file(token: &str, ports: &[u16]) -> ClusterFile {
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    ClusterFile {
        name: "process-test".into(),
        token: token.into(),
        max_raft_state: DEFAULT_MAX_RAFT_STATE,
        nodes: (0..3)
            .map(|id| NodeAddrs {
                id,
                peer: loopback(ports[id]),
                client: loopback(ports[id + 3]),
                metrics: None,
            })
            .collect(),
        transport: TransportOverrides::default(),
        raft: RaftOverrides::default(),
        sessions: SessionOverrides::default(),
        tls: None,
    }
}

/// `rainkv serve` for node `id` with its data in `data`; the caller chooses stdout and
/// stderr. Logs at `warn` unless `RUST_LOG` says otherwise.
pub fn serve_command(config: &Path, id: usize, data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rainkv"));
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--id", &id.to_string()])
        .arg("--data")
        .arg(data)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string()),
        )
        .stdin(Stdio::null());
    command
}
