//! KV servers on the durable file persister: a cluster restarted from its data directories
//! keeps every acknowledged write, with and without snapshots.

use std::path::{Path, PathBuf};

use rainkv::actors::clerk::Clerk;
use rainkv::actors::client_end::ClientEnd;
use rainkv::actors::kv_server::KvNode;
use rainkv::storage::FilePersister;
use rainkv::testkit::{run_test, Sim};

const SERVERS: usize = 3;

fn data_dir(test: &str, seed: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rainkv-durable-{test}-{seed}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Starts server `i` from `dir/i`, with fresh ends named after the incarnation.
async fn start_server(
    sim: &Sim,
    dir: &Path,
    i: usize,
    incarnation: usize,
    max_raft_state: Option<usize>,
) -> KvNode {
    let net = sim.network();
    let mut ends = Vec::new();
    for j in 0..SERVERS {
        let name = format!("{i}-{j}-{incarnation}");
        ends.push(
            net.make_end(&name, Some(&i.to_string()))
                .await
                .expect("end"),
        );
        net.connect(&name, &j.to_string());
        net.enable(&name, true);
    }
    let persister = FilePersister::open(dir.join(i.to_string())).expect("open data dir");
    let seed = sim.derive(&format!("server-{i}-{incarnation}"));
    let node = KvNode::start(ends, i, persister, max_raft_state, seed).expect("restore");
    net.add_server(&i.to_string(), node.server());
    node
}

async fn make_clerk(sim: &Sim, name: &str) -> Clerk {
    let net = sim.network();
    let mut ends: Vec<ClientEnd> = Vec::new();
    for j in 0..SERVERS {
        let end_name = format!("{name}-{j}");
        ends.push(net.make_end(&end_name, None).await.expect("end"));
        net.connect(&end_name, &j.to_string());
        net.enable(&end_name, true);
    }
    Clerk::start(ends, sim.derive(name))
}

async fn restart_keeps_writes(sim: Sim, test: &str, max_raft_state: Option<usize>) {
    let dir = data_dir(test, sim.seed());
    let mut nodes = Vec::new();
    for i in 0..SERVERS {
        nodes.push(start_server(&sim, &dir, i, 0, max_raft_state).await);
    }
    let ck = make_clerk(&sim, "ck0").await;
    for k in 0..100 {
        ck.put(&format!("k{}", k % 10), &format!("v{k}")).await;
        ck.append("log", &format!("{k},")).await;
    }
    for node in &nodes {
        node.kill();
    }
    let snapshotted = (0..SERVERS).any(|i| dir.join(i.to_string()).join("snapshot").exists());
    assert_eq!(snapshotted, max_raft_state.is_some(), "snapshot files");
    for i in 0..SERVERS {
        sim.network().delete_server(&i.to_string());
    }
    let mut restarted = Vec::new();
    for i in 0..SERVERS {
        restarted.push(start_server(&sim, &dir, i, 1, max_raft_state).await);
    }
    let ck = make_clerk(&sim, "ck1").await;
    for k in 90..100 {
        assert_eq!(ck.get(&format!("k{}", k % 10)).await, format!("v{k}"));
    }
    let expected: String = (0..100).map(|k| format!("{k},")).collect();
    assert_eq!(ck.get("log").await, expected);
    for node in &restarted {
        node.kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restart_from_log() {
    run_test("restart_from_log", |sim: Sim| {
        restart_keeps_writes(sim, "log", None)
    });
}

#[test]
fn restart_from_snapshot_and_log() {
    run_test("restart_from_snapshot_and_log", |sim: Sim| {
        restart_keeps_writes(sim, "snapshot", Some(2000))
    });
}
