//! KV servers on the durable file persister: a cluster restarted from its data directories
//! keeps every acknowledged write, with and without snapshots.

use std::path::PathBuf;

use rainkv::testkit::kv::KvHarness;
use rainkv::testkit::{run_test, ClusterOptions, Sim, StorageKind};

fn data_dir(test: &str, seed: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rainkv-durable-{test}-{seed}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn restart_keeps_writes(sim: Sim, test: &str, max_raft_state: Option<usize>) {
    let dir = data_dir(test, sim.seed());
    let options = ClusterOptions {
        servers: 3,
        max_raft_state,
        storage: StorageKind::Files(dir.clone()),
        ..Default::default()
    };
    let cfg = KvHarness::new(&sim, options).await;
    let ck = cfg.make_client(&cfg.all()).await.clerk;
    for k in 0..100 {
        ck.put(format!("k{}", k % 10), format!("v{k}"))
            .await
            .expect("put");
        ck.append("log", format!("{k},")).await.expect("append");
    }
    for i in cfg.all() {
        cfg.shutdown_server(i);
    }
    let snapshotted = cfg
        .all()
        .iter()
        .any(|i| dir.join(i.to_string()).join("snapshot").exists());
    assert_eq!(snapshotted, max_raft_state.is_some(), "snapshot files");
    // Each server reopens its data directory: only what is on disk survives.
    for i in cfg.all() {
        cfg.start_server(i).await;
    }
    cfg.connect_all();
    let ck = cfg.make_client(&cfg.all()).await.clerk;
    for k in 90..100 {
        let value = ck.get_string(format!("k{}", k % 10)).await;
        assert_eq!(value, Ok(Some(format!("v{k}"))));
    }
    let expected: String = (0..100).map(|k| format!("{k},")).collect();
    assert_eq!(ck.get_string("log").await, Ok(Some(expected)));
    cfg.cleanup();
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
