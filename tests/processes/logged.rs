//! Three-node `rainkv serve` clusters whose nodes log to files: for the process tests that
//! read node logs and time pauses against the election timeout (`tcp_processes.rs`,
//! `tcp_snapshot.rs`, `tcp_membership.rs`). Included with `#[path]` by those alone, so that the other process
//! tests do not compile helpers they never call.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use rainkv::deploy::cluster_file::{ClusterFile, RaftOverrides};

use crate::processes::{free_ports, serve_command, write_config};

/// The config of a three-node cluster whose elections time out after 1–2 s rather than the
/// default 0.3–0.6 s, written to `dir`. The tests count elections and time pauses
/// against the election timeout, and this machine, shared with builds, can stall an fsync
/// for hundreds of milliseconds: a follower whose acknowledgements wait for its disk looks
/// silent, and with the default timeouts elections start that no test asked for. A handoff
/// takes milliseconds either way; without one, clients would wait at least the shortest
/// election timeout.
pub fn write_slow_election_config(dir: &Path, token: &str) -> PathBuf {
    let path = write_config(dir, token, &free_ports());
    let mut cluster = ClusterFile::load(&path).expect("load config");
    cluster.raft = RaftOverrides {
        election_timeout_min_ms: Some(1000),
        election_timeout_max_ms: Some(2000),
        ..RaftOverrides::default()
    };
    std::fs::write(&path, cluster.to_toml().expect("config as TOML")).expect("write config");
    path
}

/// Prints every node's log if the test fails while it lives (declare it after the scratch
/// directory, so that it goes first).
pub struct LogsOnFailure<'a>(pub &'a Path);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Every node that ran, joined ones included.
            for id in 0..16 {
                if let Ok(log) = std::fs::read_to_string(log_path(self.0, id)) {
                    eprintln!("--- node {id} log ---\n{log}");
                }
            }
        }
    }
}

/// `rainkv serve` for node `id` with its data under `dir`, its stderr (the log, with Raft's
/// elections and each node's leadership handoff) appended to `node-<id>.log` there.
pub fn spawn_logged(config: &Path, dir: &Path, id: usize) -> Child {
    spawn_logged_with(config, dir, id, &[])
}

/// [`spawn_logged`] with more arguments for `rainkv serve` (`--join ...`).
pub fn spawn_logged_with(config: &Path, dir: &Path, id: usize, args: &[&str]) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log_path(dir, id))
        .expect("open node log");
    serve_command(config, id, &dir.join(format!("node-{id}")))
        .args(args)
        .env("RUST_LOG", "info,rainkv::actors::raft=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start rainkv serve")
}

pub fn log_path(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("node-{id}.log"))
}
