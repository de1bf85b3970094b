//! Our own sharded KV scenarios, beyond the 6.5840 suite (`tests/shardkv.rs`).

use std::time::Duration;

use rainkv::testkit::run_test;
use rainkv::testkit::shardkv::ShardKvHarness;
use rainkv::testkit::ClusterOptions;
use rainkv::testkit::Sim;
use tokio::time::sleep;

/// Challenge 1 with whole-group crashes: the old owner crashes before it hands its shards off,
/// and the new owner crashes while the hand-off is under way. After both restart, the hand-off
/// must finish, the old copies must be gone (the storage bound of `challenge1_delete`, which
/// two full copies of the data would exceed), and every value must be intact.
#[test]
fn challenge1_delete_across_group_crashes() {
    run_test(
        "challenge1_delete_across_group_crashes",
        |sim: Sim| async move {
            let cfg = ShardKvHarness::new(
                &sim,
                ClusterOptions {
                    servers: 3,
                    max_raft_state: Some(1),
                    ..Default::default()
                },
            )
            .await;
            cfg.begin("Test: shard deletion across whole-group crashes (ours)")
                .await;
            let ck = cfg.make_client().await;
            cfg.join(0).await;
            let n = 30;
            let ka: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            let mut va = Vec::with_capacity(n);
            for k in &ka {
                let v = cfg.rand_string(1000);
                cfg.put(&ck, k, &v, None, 0).await;
                va.push(v);
            }

            // Every shard moves from 100 to 101; 100 dies before it can hand anything off.
            cfg.join(1).await;
            cfg.leave(0).await;
            cfg.shutdown_group(0);
            sleep(Duration::from_secs(1)).await;
            cfg.start_group(0).await;
            // 101 dies while it pulls, installs and has 100 delete.
            sleep(Duration::from_millis(600)).await;
            cfg.shutdown_group(1);
            sleep(Duration::from_secs(1)).await;
            cfg.start_group(1).await;
            sleep(Duration::from_secs(3)).await;

            for (k, v) in ka.iter().zip(&va) {
                cfg.check(&ck, k, v).await;
            }
            let total = cfg.stored_bytes();
            let expected = 3 * ((n - 3) * 1000 + 2 * 3 * 1000 + 6000);
            println!("  stored: {total} bytes of Raft state and snapshots (bound {expected})");
            assert!(
                total <= expected,
                "snapshot + persisted Raft state are too big: {total} > {expected}"
            );
            cfg.end().await;
            cfg.cleanup();
        },
    );
}
