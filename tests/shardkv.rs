//! 6.5840's sharded KV tests (`shardkv/test_test.go`, 2024: 5A, 5B and both challenges),
//! ported with the same scenarios and limits in virtual time. Challenge2Unaffected indexes
//! ownership by `key2shard(key)` (the original uses the key's index), and Unreliable3's
//! history must be proven linearizable: a checker timeout fails the test.
//!
//! Added to the lab's checks: every 5B test and challenge ends with the liveness assertion
//! (`ShardKvHarness::assert_settles`: every shard serving at its owner and no old copy left,
//! within the bound of `testkit::settle` after the last change); the challenge 2 tests first
//! bring back the group they killed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use rainkv::actors::clerk::Clerk;
use rainkv::messages::ctrler::key2shard;
use rainkv::testkit::kv::OpLog;
use rainkv::testkit::shardkv::{ShardKvHarness, NGROUPS};
use rainkv::testkit::ClusterOptions;
use rainkv::testkit::{rand_string, run_test, Sim};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

/// How long the checker may search (wall time).
const LINEARIZABILITY_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Keys "0".."n-1": the first ten cover all ten shards.
fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// Puts a fresh random value of `len` characters under every key; returns the values.
async fn put_all(cfg: &ShardKvHarness, ck: &Clerk, ka: &[String], len: usize) -> Vec<String> {
    let mut va = Vec::with_capacity(ka.len());
    for k in ka {
        let v = cfg.rand_string(len);
        cfg.put(ck, k, &v, None, 0).await;
        va.push(v);
    }
    va
}

async fn check_all(cfg: &ShardKvHarness, ck: &Clerk, ka: &[String], va: &[String]) {
    for (k, v) in ka.iter().zip(va) {
        cfg.check(ck, k, v).await;
    }
}

/// For each key: check it, then append `len` random characters.
async fn check_and_append_all(
    cfg: &ShardKvHarness,
    ck: &Clerk,
    ka: &[String],
    va: &mut [String],
    len: usize,
) {
    for (k, v) in ka.iter().zip(va.iter_mut()) {
        cfg.check(ck, k, v).await;
        let x = cfg.rand_string(len);
        cfg.append(ck, k, &x, None, 0).await;
        v.push_str(&x);
    }
}

/// One appender per key, each with its own clerk: appends `len` random characters to its key
/// and records them, sleeping `pause` between appends, until `done`.
struct Appenders {
    done: Rc<Cell<bool>>,
    va: Rc<RefCell<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Appenders {
    async fn start(
        cfg: &ShardKvHarness,
        sim: &Sim,
        ka: &[String],
        va: Vec<String>,
        len: usize,
        pause: Option<Duration>,
    ) -> Appenders {
        let done = Rc::new(Cell::new(false));
        let va = Rc::new(RefCell::new(va));
        let mut tasks = Vec::with_capacity(ka.len());
        for (i, key) in ka.iter().enumerate() {
            let ck1 = cfg.make_client().await;
            let (cfg, done, va, key) = (cfg.clone(), done.clone(), va.clone(), key.clone());
            let mut rng = sim.rng(&format!("appender-{i}"));
            tasks.push(actix::spawn(async move {
                while !done.get() {
                    let x = rand_string(&mut rng, len);
                    cfg.append(&ck1, &key, &x, None, 0).await;
                    va.borrow_mut()[i].push_str(&x);
                    if let Some(pause) = pause {
                        sleep(pause).await;
                    }
                }
            }));
        }
        Appenders { done, va, tasks }
    }

    /// Tells the appenders to stop, waits for them, and returns the expected values.
    async fn stop(self) -> Vec<String> {
        self.done.set(true);
        for task in join_all(self.tasks).await {
            task.expect("an appender failed");
        }
        self.va.borrow().clone()
    }
}

/// Starts one Get per key, each on a fresh clerk from `make`, and counts the correct answers
/// that arrive before 2 s pass without one. `rejected` says a "" answer means the server
/// should have refused the request.
async fn gets_until_quiet(
    clerks: Vec<Clerk>,
    cfg: &ShardKvHarness,
    ka: &[String],
    va: &[String],
    rejected: bool,
) -> usize {
    let (tx, mut rx) = mpsc::unbounded_channel();
    for ((ck1, key), want) in clerks.into_iter().zip(ka).zip(va) {
        let (cfg, tx, key, want) = (cfg.clone(), tx.clone(), key.clone(), want.clone());
        actix::spawn(async move {
            let v = cfg.get(&ck1, &key, None, 0).await;
            let outcome = if v == want {
                Ok(())
            } else if rejected && v.is_empty() {
                Err(format!(
                    "Get({key}): returned \"\"; server should have rejected the request due to wrong shard"
                ))
            } else {
                Err(format!("Get({key}): expected:\n{want}\nreceived:\n{v}"))
            };
            let _ = tx.send(outcome);
        });
    }
    let mut ndone = 0;
    while let Ok(Some(outcome)) = timeout(Duration::from_secs(2), rx.recv()).await {
        if let Err(e) = outcome {
            panic!("{e}");
        }
        ndone += 1;
    }
    ndone
}

#[test]
fn static_shards_5a() {
    run_test("static_shards_5a", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5A): static shards").await;
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        cfg.join(1).await;
        let ka = keys(10);
        let va = put_all(&cfg, &ck, &ka, 20).await;
        check_all(&cfg, &ck, &ka, &va).await;

        // Make sure the data really is sharded: with one group down, only its shards fail.
        cfg.shutdown_group(1);
        cfg.check_logs(); // forbid snapshots
        let mut clerks = Vec::new();
        for _ in 0..ka.len() {
            clerks.push(cfg.make_client().await); // only one call allowed per client
        }
        let ndone = gets_until_quiet(clerks, &cfg, &ka, &va, false).await;
        assert_eq!(
            ndone, 5,
            "expected 5 completions with one shard dead; got {ndone}"
        );

        // Bring the crashed group back to life.
        cfg.start_group(1).await;
        check_all(&cfg, &ck, &ka, &va).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn rejection_5a() {
    run_test("rejection_5a", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5A): rejection").await;
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        cfg.join(1).await;
        let ka = keys(10);
        let va = put_all(&cfg, &ck, &ka, 20).await;
        check_all(&cfg, &ck, &ka, &va).await;

        // A separate controller that thinks group 100 is the only group, and clerks that use
        // it: group 100 must reject the keys it does not own.
        let ctl1 = cfg.start_ctrler_service().await;
        let mck1 = ctl1.make_client().await;
        cfg.join_through(&[0], &mck1).await;
        let mut clerks = Vec::new();
        for _ in 0..ka.len() {
            clerks.push(cfg.make_client_of(&ctl1).await);
        }
        let ndone = gets_until_quiet(clerks, &cfg, &ka, &va, true).await;
        assert_eq!(
            ndone, 5,
            "expected 5 completions with one shard dead; got {ndone}"
        );
        cfg.end().await;
        ctl1.cleanup();
        cfg.cleanup();
    });
}

#[test]
fn join_leave_5b() {
    run_test("join_leave_5b", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5B): join then leave").await;
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        let ka = keys(10);
        let mut va = put_all(&cfg, &ck, &ka, 5).await;
        check_all(&cfg, &ck, &ka, &va).await;

        cfg.join(1).await;
        check_and_append_all(&cfg, &ck, &ka, &mut va, 5).await;
        cfg.leave(0).await;
        check_and_append_all(&cfg, &ck, &ka, &mut va, 5).await;

        // Allow time for shards to transfer.
        sleep(Duration::from_secs(1)).await;
        cfg.check_logs();
        // Before 100 goes down: liveness is promised with a majority in every group.
        cfg.assert_settles().await;
        cfg.shutdown_group(0);
        check_all(&cfg, &ck, &ka, &va).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn snapshot_5b() {
    run_test("snapshot_5b", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                max_raft_state: Some(1000),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5B): snapshots, join, and leave").await;
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        let ka = keys(30);
        let mut va = put_all(&cfg, &ck, &ka, 20).await;
        check_all(&cfg, &ck, &ka, &va).await;

        cfg.join(1).await;
        cfg.join(2).await;
        cfg.leave(0).await;
        check_and_append_all(&cfg, &ck, &ka, &mut va, 20).await;
        cfg.leave(1).await;
        cfg.join(0).await;
        check_and_append_all(&cfg, &ck, &ka, &mut va, 20).await;

        sleep(Duration::from_secs(1)).await;
        check_all(&cfg, &ck, &ka, &va).await;
        sleep(Duration::from_secs(1)).await;
        cfg.check_logs();

        for gi in 0..NGROUPS {
            cfg.shutdown_group(gi);
        }
        for gi in 0..NGROUPS {
            cfg.start_group(gi).await;
        }
        check_all(&cfg, &ck, &ka, &va).await;
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn miss_change_5b() {
    run_test("miss_change_5b", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                max_raft_state: Some(1000),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5B): servers miss configuration changes")
            .await;
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        let ka = keys(10);
        let mut va = put_all(&cfg, &ck, &ka, 20).await;
        check_all(&cfg, &ck, &ka, &va).await;

        cfg.join(1).await;
        for gi in 0..NGROUPS {
            cfg.shutdown_server(gi, 0);
        }
        cfg.join(2).await;
        cfg.leave(1).await;
        cfg.leave(0).await;
        check_and_append_all(&cfg, &ck, &ka, &mut va, 20).await;
        cfg.join(1).await;
        check_and_append_all(&cfg, &ck, &ka, &mut va, 20).await;

        for gi in 0..NGROUPS {
            cfg.start_server(gi, 0).await;
        }
        check_and_append_all(&cfg, &ck, &ka, &mut va, 20).await;

        sleep(Duration::from_secs(2)).await;
        for gi in 0..NGROUPS {
            cfg.shutdown_server(gi, 1);
        }
        cfg.join(0).await;
        cfg.leave(2).await;
        check_and_append_all(&cfg, &ck, &ka, &mut va, 20).await;

        for gi in 0..NGROUPS {
            cfg.start_server(gi, 1).await;
        }
        check_all(&cfg, &ck, &ka, &va).await;
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn concurrent1_5b() {
    run_test("concurrent1_5b", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                max_raft_state: Some(100),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5B): concurrent puts and configuration changes")
            .await;
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        let ka = keys(10);
        let va = put_all(&cfg, &ck, &ka, 5).await;
        let ms = Duration::from_millis;
        let appenders = Appenders::start(&cfg, &sim, &ka, va, 5, Some(ms(10))).await;

        sleep(ms(150)).await;
        cfg.join(1).await;
        sleep(ms(500)).await;
        cfg.join(2).await;
        sleep(ms(500)).await;
        cfg.leave(0).await;
        cfg.shutdown_group(0);
        sleep(ms(100)).await;
        cfg.shutdown_group(1);
        sleep(ms(100)).await;
        cfg.shutdown_group(2);
        cfg.leave(2).await;
        sleep(ms(100)).await;
        cfg.start_group(0).await;
        cfg.start_group(1).await;
        cfg.start_group(2).await;
        sleep(ms(100)).await;
        cfg.join(0).await;
        cfg.leave(1).await;
        sleep(ms(500)).await;
        cfg.join(1).await;
        sleep(ms(1000)).await;

        let va = appenders.stop().await;
        check_all(&cfg, &ck, &ka, &va).await;
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn concurrent2_5b() {
    run_test("concurrent2_5b", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5B): more concurrent puts and configuration changes")
            .await;
        let ck = cfg.make_client().await;
        cfg.join(1).await;
        cfg.join(0).await;
        cfg.join(2).await;
        let ka = keys(10);
        let va = put_all(&cfg, &ck, &ka, 1).await;
        let ms = Duration::from_millis;
        let appenders = Appenders::start(&cfg, &sim, &ka, va, 1, Some(ms(50))).await;

        cfg.leave(0).await;
        cfg.leave(2).await;
        sleep(ms(3000)).await;
        cfg.join(0).await;
        cfg.join(2).await;
        cfg.leave(1).await;
        sleep(ms(3000)).await;
        cfg.join(1).await;
        cfg.leave(0).await;
        cfg.leave(2).await;
        sleep(ms(3000)).await;

        cfg.shutdown_group(1);
        cfg.shutdown_group(2);
        sleep(ms(1000)).await;
        cfg.start_group(1).await;
        cfg.start_group(2).await;
        sleep(ms(2000)).await;

        let va = appenders.stop().await;
        check_all(&cfg, &ck, &ka, &va).await;
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn concurrent3_5b() {
    run_test("concurrent3_5b", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                max_raft_state: Some(300),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5B): concurrent configuration change and restart")
            .await;
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        let ka = keys(10);
        let va = put_all(&cfg, &ck, &ka, 1).await;
        let appenders = Appenders::start(&cfg, &sim, &ka, va, 1, None).await;

        let t0 = tokio::time::Instant::now();
        let pause = || Duration::from_millis(cfg.rand_below(900));
        while t0.elapsed() < Duration::from_secs(12) {
            cfg.join(2).await;
            cfg.join(1).await;
            sleep(pause()).await;
            for gi in 0..NGROUPS {
                cfg.shutdown_group(gi);
            }
            for gi in 0..NGROUPS {
                cfg.start_group(gi).await;
            }
            sleep(pause()).await;
            cfg.leave(1).await;
            cfg.leave(2).await;
            sleep(pause()).await;
        }
        sleep(Duration::from_secs(2)).await;

        let va = appenders.stop().await;
        check_all(&cfg, &ck, &ka, &va).await;
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn unreliable1_5b() {
    run_test("unreliable1_5b", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                reliable: false,
                max_raft_state: Some(100),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5B): unreliable 1").await;
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        let ka = keys(10);
        let mut va = put_all(&cfg, &ck, &ka, 5).await;

        cfg.join(1).await;
        cfg.join(2).await;
        cfg.leave(0).await;
        for _ in 0..ka.len() * 2 {
            check_and_append_all(&cfg, &ck, &ka, &mut va, 5).await;
        }
        cfg.join(0).await;
        cfg.leave(1).await;
        for _ in 0..ka.len() * 2 {
            check_all(&cfg, &ck, &ka, &va).await;
        }
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

/// Unreliable2's and Unreliable3's schedule of joins and leaves, with workers running.
async fn unreliable_schedule(cfg: &ShardKvHarness) {
    let ms = Duration::from_millis;
    sleep(ms(150)).await;
    cfg.join(1).await;
    sleep(ms(500)).await;
    cfg.join(2).await;
    sleep(ms(500)).await;
    cfg.leave(0).await;
    sleep(ms(500)).await;
    cfg.leave(1).await;
    sleep(ms(500)).await;
    cfg.join(1).await;
    cfg.join(0).await;
    sleep(ms(2000)).await;
}

#[test]
fn unreliable2_5b() {
    run_test("unreliable2_5b", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                reliable: false,
                max_raft_state: Some(100),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5B): unreliable 2").await;
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        let ka = keys(10);
        let va = put_all(&cfg, &ck, &ka, 5).await;
        let appenders = Appenders::start(&cfg, &sim, &ka, va, 5, None).await;

        unreliable_schedule(&cfg).await;
        appenders.done.set(true);
        sim.network().set_reliable(true);
        let va = appenders.stop().await;
        check_all(&cfg, &ck, &ka, &va).await;
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn unreliable3_5b() {
    run_test("unreliable3_5b", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                reliable: false,
                max_raft_state: Some(100),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (5B): unreliable 3").await;
        let op_log = OpLog::new();
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        let ka = keys(10);
        for k in &ka {
            let v = cfg.rand_string(5);
            cfg.put(&ck, k, &v, Some(&op_log), 0).await;
        }

        let done = Rc::new(Cell::new(false));
        let mut workers = Vec::with_capacity(ka.len());
        for i in 0..ka.len() {
            let ck1 = cfg.make_client().await;
            let (cfg, done, op_log, ka) = (cfg.clone(), done.clone(), op_log.clone(), ka.clone());
            let mut rng = sim.rng(&format!("client-{i}"));
            let client = i as u64;
            workers.push(actix::spawn(async move {
                while !done.get() {
                    let key = &ka[rng.gen_range(0..ka.len())];
                    let nv = rand_string(&mut rng, 5);
                    if rng.gen_range(0..1000) < 500 {
                        cfg.append(&ck1, key, &nv, Some(&op_log), client).await;
                    } else if rng.gen_range(0..1000) < 100 {
                        cfg.put(&ck1, key, &nv, Some(&op_log), client).await;
                    } else {
                        cfg.get(&ck1, key, Some(&op_log), client).await;
                    }
                }
            }));
        }

        unreliable_schedule(&cfg).await;
        done.set(true);
        sim.network().set_reliable(true);
        for worker in join_all(workers).await {
            worker.expect("a client failed");
        }
        op_log.check_linearizable("unreliable3_5b", LINEARIZABILITY_CHECK_TIMEOUT);
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn challenge1_delete() {
    run_test("challenge1_delete", |sim: Sim| async move {
        // maxraftstate 1: snapshot after every entry.
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                max_raft_state: Some(1),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test: shard deletion (challenge 1)").await;
        let ck = cfg.make_client().await;
        cfg.join(0).await;
        // 30 000 bytes of values in total.
        let n = 30;
        let ka = keys(n);
        let va = put_all(&cfg, &ck, &ka, 1000).await;
        check_all(&cfg, &ck, &ka[..3], &va[..3]).await;

        for _ in 0..2 {
            cfg.join(1).await;
            cfg.leave(0).await;
            cfg.join(2).await;
            sleep(Duration::from_secs(3)).await;
            check_all(&cfg, &ck, &ka[..3], &va[..3]).await;
            cfg.leave(1).await;
            cfg.join(0).await;
            cfg.leave(2).await;
            sleep(Duration::from_secs(3)).await;
            check_all(&cfg, &ck, &ka[..3], &va[..3]).await;
        }
        cfg.join(1).await;
        cfg.join(2).await;
        for _ in 0..3 {
            sleep(Duration::from_secs(1)).await;
            check_all(&cfg, &ck, &ka[..3], &va[..3]).await;
        }

        let total = cfg.stored_bytes();
        // 27 keys stored once, 3 keys also in client duplicate tables, slop; on 3 replicas.
        let expected = 3 * ((n - 3) * 1000 + 2 * 3 * 1000 + 6000);
        println!("  stored: {total} bytes of Raft state and snapshots (bound {expected})");
        assert!(
            total <= expected,
            "snapshot + persisted Raft state are too big: {total} > {expected}"
        );
        check_all(&cfg, &ck, &ka, &va).await;
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn challenge2_unaffected() {
    run_test("challenge2_unaffected", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                reliable: false,
                max_raft_state: Some(100),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test: unaffected shard access (challenge 2)")
            .await;
        let ck = cfg.make_client().await;
        // Join 100, and put keys in all shards.
        cfg.join(0).await;
        let ka = keys(10);
        let mut va = vec!["100".to_string(); ka.len()];
        for (k, v) in ka.iter().zip(&va) {
            cfg.put(&ck, k, v, None, 0).await;
        }
        // Join 101; which shards does it own now?
        cfg.join(1).await;
        let c = cfg.query().await;
        let owned: Vec<bool> = c.shards.iter().map(|&gid| gid == cfg.gid(1)).collect();
        // Wait for the migration to finish and clerks to use the new config.
        sleep(Duration::from_secs(1)).await;
        for (k, v) in ka.iter().zip(va.iter_mut()) {
            if owned[key2shard(k)] {
                *v = "101".to_string();
                cfg.put(&ck, k, v, None, 0).await;
            }
        }
        // Kill 100 and make it leave: 101 can never get 100's shards.
        cfg.shutdown_group(0);
        cfg.leave(0).await;
        sleep(Duration::from_secs(1)).await;
        // Gets and Puts of the keys 101 already had must still complete.
        for (k, v) in ka.iter().zip(&va) {
            if owned[key2shard(k)] {
                cfg.check(&ck, k, v).await;
                let v1 = format!("{v}-1");
                cfg.put(&ck, k, &v1, None, 0).await;
                cfg.check(&ck, k, &v1).await;
            }
        }
        // Once 100 is back, its shards reach their owners and its copies go.
        cfg.start_group(0).await;
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn challenge2_partial() {
    run_test("challenge2_partial", |sim: Sim| async move {
        let cfg = ShardKvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                reliable: false,
                max_raft_state: Some(100),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test: partial migration shard access (challenge 2)")
            .await;
        let ck = cfg.make_client().await;
        // Join 100, 101 and 102; give them time to reconfigure.
        cfg.join_groups(&[0, 1, 2]).await;
        sleep(Duration::from_secs(1)).await;
        let ka = keys(10);
        let va = vec!["100".to_string(); ka.len()];
        for (k, v) in ka.iter().zip(&va) {
            cfg.put(&ck, k, v, None, 0).await;
        }
        let c = cfg.query().await;
        let owned: Vec<bool> = c.shards.iter().map(|&gid| gid == cfg.gid(2)).collect();
        // Kill 100, and make 100 and 102 leave: 101 can get 102's shards, not 100's.
        cfg.shutdown_group(0);
        cfg.leave_groups(&[0, 2]).await;
        // Time to start the reconfiguration and migrate 102 -> 101.
        sleep(Duration::from_secs(1)).await;
        // 101 must serve the shards it received from 102.
        for (k, v) in ka.iter().zip(&va) {
            if owned[key2shard(k)] {
                cfg.check(&ck, k, v).await;
                let v2 = format!("{v}-2");
                cfg.put(&ck, k, &v2, None, 0).await;
                cfg.check(&ck, k, &v2).await;
            }
        }
        // Once 100 is back, its shards reach their owners and its copies go.
        cfg.start_group(0).await;
        cfg.assert_settles().await;
        cfg.end().await;
        cfg.cleanup();
    });
}
