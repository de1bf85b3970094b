//! 6.5840's kvraft tests (`kvraft/test_test.go`, 4A and 4B), ported with the same scenarios and
//! limits, in virtual time. Every GenericTest history is checked for linearizability, and a
//! checker timeout counts as a failure.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use rainkv::actors::raft::RaftConfig;
use rainkv::testkit::kv::{KvHarness, OpLog, TestClerk};
use rainkv::testkit::ClusterOptions;
use rainkv::testkit::{run_test, Sim};
use rand::Rng;
use tokio::time::{sleep, timeout, Instant};

/// kvraft's `electionTimeout`.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the checker may search (wall time).
const LINEARIZABILITY_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// `spawn_clients_and_wait`: `n` clients, each with a fresh clerk connected to all servers.
/// 6.5840's `maxraftstate` (-1: never snapshot) as the harness takes it.
fn max_raft_state(maxraftstate: i64) -> Option<usize> {
    usize::try_from(maxraftstate).ok()
}

async fn spawn_clients_and_wait<F, Fut>(cfg: &KvHarness, n: usize, f: F)
where
    F: Fn(usize, TestClerk) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let mut clients = Vec::with_capacity(n);
    for cli in 0..n {
        let ck = cfg.make_client(&cfg.all()).await;
        let run = f(cli, ck.clone());
        let cfg = cfg.clone();
        clients.push(actix::spawn(async move {
            run.await;
            cfg.delete_client(&ck);
        }));
    }
    for client in join_all(clients).await {
        client.expect("failure");
    }
}

/// `checkClntAppends`: each of client `clnt`'s `count` appends appears exactly once, in order.
fn check_clnt_appends(clnt: usize, v: &str, count: usize) {
    let mut last_off: Option<usize> = None;
    for j in 0..count {
        let wanted = format!("x {clnt} {j} y");
        let Some(off) = v.find(&wanted) else {
            panic!("{clnt} missing element {wanted} in Append result {v}");
        };
        assert_eq!(
            v.rfind(&wanted),
            Some(off),
            "duplicate element {wanted} in Append result"
        );
        assert!(
            last_off.is_none_or(|last| off > last),
            "wrong order for element {wanted} in Append result"
        );
        last_off = Some(off);
    }
}

/// `checkConcurrentAppends`.
fn check_concurrent_appends(v: &str, counts: &[usize]) {
    for (clnt, count) in counts.iter().enumerate() {
        check_clnt_appends(clnt, v, *count);
    }
}

/// The partitioner: random two-way splits every 1–1.2 s until told to stop.
async fn partitioner(cfg: KvHarness, done: Rc<Cell<bool>>) {
    while !done.get() {
        let sides: Vec<usize> =
            cfg.with_rng(|rng| (0..cfg.n()).map(|_| rng.gen_range(0..2)).collect());
        let p0: Vec<usize> = (0..cfg.n()).filter(|&j| sides[j] == 0).collect();
        let p1: Vec<usize> = (0..cfg.n()).filter(|&j| sides[j] == 1).collect();
        cfg.partition(&p0, &p1);
        let extra = cfg.with_rng(|rng| rng.gen_range(0..200));
        sleep(ELECTION_TIMEOUT + Duration::from_millis(extra)).await;
    }
}

/// The parameters of a GenericTest run.
#[derive(Clone, Copy)]
struct Generic {
    part: &'static str,
    nclients: usize,
    nservers: usize,
    unreliable: bool,
    crash: bool,
    partitions: bool,
    maxraftstate: i64,
    randomkeys: bool,
    /// Ours, not the lab's: cut InstallSnapshot into chunks of this many bytes.
    snapshot_chunk: Option<usize>,
}

async fn generic_test(sim: Sim, test: &str, g: Generic) {
    let mut title = String::from("Test: ");
    if g.unreliable {
        title += "unreliable net, ";
    }
    if g.crash {
        title += "restarts, ";
    }
    if g.partitions {
        title += "partitions, ";
    }
    if g.maxraftstate != -1 {
        title += "snapshots, ";
    }
    if g.randomkeys {
        title += "random keys, ";
    }
    title += if g.nclients > 1 {
        "many clients"
    } else {
        "one client"
    };
    title += &format!(" ({})", g.part);

    let cfg = KvHarness::new(
        &sim,
        ClusterOptions {
            servers: g.nservers,
            reliable: !g.unreliable,
            max_raft_state: max_raft_state(g.maxraftstate),
            raft: RaftConfig {
                max_bytes_per_append: g.snapshot_chunk.unwrap_or(1 << 20),
                ..ClusterOptions::default().raft
            },
            ..Default::default()
        },
    )
    .await;
    cfg.begin(&title).await;
    let op_log = OpLog::new();
    let ck = cfg.make_client(&cfg.all()).await;

    for round in 0..3 {
        let done_clients = Rc::new(Cell::new(false));
        let done_partitioner = Rc::new(Cell::new(false));
        let counts = Rc::new(std::cell::RefCell::new(vec![0usize; g.nclients]));

        let clients = {
            let (cfg, op_log, done, counts, sim) = (
                cfg.clone(),
                op_log.clone(),
                done_clients.clone(),
                counts.clone(),
                sim.clone(),
            );
            actix::spawn(async move {
                let body = |cli: usize, myck: TestClerk| {
                    let (cfg, op_log, done, counts) =
                        (cfg.clone(), op_log.clone(), done.clone(), counts.clone());
                    let mut rng = sim.rng(&format!("client-{round}-{cli}"));
                    async move {
                        let mut j = 0;
                        let mut last = String::new();
                        let client = cli as u64;
                        if !g.randomkeys {
                            cfg.put(&myck, &cli.to_string(), &last, Some(&op_log), client)
                                .await;
                        }
                        while !done.get() {
                            let key = if g.randomkeys {
                                rng.gen_range(0..g.nclients).to_string()
                            } else {
                                cli.to_string()
                            };
                            let nv = format!("x {cli} {j} y");
                            if rng.gen_range(0..1000) < 500 {
                                cfg.append(&myck, &key, &nv, Some(&op_log), client).await;
                                if !g.randomkeys {
                                    last += &nv;
                                }
                                j += 1;
                            } else if g.randomkeys && rng.gen_range(0..1000) < 100 {
                                cfg.put(&myck, &key, &nv, Some(&op_log), client).await;
                                j += 1;
                            } else {
                                let v = cfg.get(&myck, &key, Some(&op_log), client).await;
                                assert!(
                                    g.randomkeys || v == last,
                                    "get wrong value, key {key}, wanted:\n{last}\n, got\n{v}"
                                );
                            }
                        }
                        counts.borrow_mut()[cli] = j;
                    }
                };
                spawn_clients_and_wait(&cfg, g.nclients, body).await;
            })
        };

        let partitions = if g.partitions {
            // Allow the clients to perform some operations without interruption.
            sleep(Duration::from_secs(1)).await;
            Some(actix::spawn(partitioner(
                cfg.clone(),
                done_partitioner.clone(),
            )))
        } else {
            None
        };
        sleep(Duration::from_secs(5)).await;
        done_clients.set(true);
        done_partitioner.set(true);

        if let Some(partitions) = partitions {
            partitions.await.expect("partitioner");
            // A client may have submitted a request in a minority: it returns only once that
            // server discovers a new term has started.
            cfg.connect_all();
            sleep(ELECTION_TIMEOUT).await;
        }
        if g.crash {
            for i in 0..g.nservers {
                cfg.shutdown_server(i);
            }
            // Wait for a while for servers to shut down.
            sleep(ELECTION_TIMEOUT).await;
            // Crash and re-start all.
            for i in 0..g.nservers {
                cfg.start_server(i).await;
            }
            cfg.connect_all();
        }

        clients.await.expect("clients");
        for i in 0..g.nclients {
            let j = counts.borrow()[i];
            let v = cfg.get(&ck, &i.to_string(), Some(&op_log), 0).await;
            if !g.randomkeys {
                check_clnt_appends(i, &v, j);
            }
        }
        if g.maxraftstate > 0 {
            // Check that the servers have thrown away most of their log entries.
            let size = cfg.log_size();
            assert!(
                size as i64 <= 8 * g.maxraftstate,
                "logs were not trimmed ({size} > 8*{})",
                g.maxraftstate
            );
        }
        if g.maxraftstate < 0 {
            // Check that snapshots are not used.
            let size = cfg.snapshot_size();
            assert!(
                size == 0,
                "snapshot too large ({size}), should not be used when maxraftstate = {}",
                g.maxraftstate
            );
        }
    }

    op_log.check_linearizable(test, LINEARIZABILITY_CHECK_TIMEOUT);
    if g.snapshot_chunk.is_some() {
        let chunks: u64 = (0..g.nservers)
            .map(|i| cfg.cluster().raft_traffic(i).install_snapshots)
            .sum();
        assert!(
            chunks >= 100,
            "only {chunks} InstallSnapshot chunks were delivered"
        );
    }
    cfg.end().await;
    cfg.cleanup();
}

/// `GenericTestSpeed`: 1000 sequential appends must average under 33.3 ms each.
async fn generic_test_speed(sim: Sim, part: &str, maxraftstate: i64) {
    const NUM_OPS: usize = 1000;
    let cfg = KvHarness::new(
        &sim,
        ClusterOptions {
            servers: 3,
            max_raft_state: max_raft_state(maxraftstate),
            ..Default::default()
        },
    )
    .await;
    let ck = cfg.make_client(&cfg.all()).await;
    cfg.begin(&format!("Test: ops complete fast enough ({part})"))
        .await;
    // Wait until the first op completes, so a leader is elected and the servers are ready.
    ck.clerk.get("x").await.expect("clerk");
    let start = Instant::now();
    for i in 0..NUM_OPS {
        let piece = format!("x 0 {i} y");
        ck.clerk.append("x", piece).await.expect("clerk");
    }
    let took = start.elapsed();
    let v = ck.clerk.get_string("x").await.expect("clerk");
    let v = v.unwrap_or_default();
    check_clnt_appends(0, &v, NUM_OPS);
    // Heartbeats are ~100 ms apart; require at least 3 ops per heartbeat.
    let time_per_op = Duration::from_millis(100) / 3;
    let per_op = took / NUM_OPS as u32;
    println!("  {NUM_OPS} sequential appends: {per_op:?} per op");
    assert!(
        took <= time_per_op * NUM_OPS as u32,
        "Operations completed too slowly {per_op:?}/op > {time_per_op:?}/op"
    );
    cfg.end().await;
    cfg.cleanup();
}

macro_rules! generic {
    ($name:ident, $part:expr, $nclients:expr, $nservers:expr, $unreliable:expr, $crash:expr,
     $partitions:expr, $maxraftstate:expr, $randomkeys:expr) => {
        #[test]
        fn $name() {
            run_test(stringify!($name), |sim: Sim| {
                generic_test(
                    sim,
                    stringify!($name),
                    Generic {
                        part: $part,
                        nclients: $nclients,
                        nservers: $nservers,
                        unreliable: $unreliable,
                        crash: $crash,
                        partitions: $partitions,
                        maxraftstate: $maxraftstate,
                        randomkeys: $randomkeys,
                        snapshot_chunk: None,
                    },
                )
            });
        }
    };
}

const F: bool = false;
const T: bool = true;

// ---------------------------------------------------------------- 4A

generic!(basic_4a, "4A", 1, 5, F, F, F, -1, F);

#[test]
fn speed_4a() {
    run_test("speed_4a", |sim: Sim| generic_test_speed(sim, "4A", -1));
}

generic!(concurrent_4a, "4A", 5, 5, F, F, F, -1, F);
generic!(unreliable_4a, "4A", 5, 5, T, F, F, -1, F);

#[test]
fn unreliable_one_key_4a() {
    run_test("unreliable_one_key_4a", |sim: Sim| async move {
        let cfg = KvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                reliable: false,
                ..Default::default()
            },
        )
        .await;
        let ck = cfg.make_client(&cfg.all()).await;
        cfg.begin("Test: concurrent append to same key, unreliable (4A)")
            .await;
        cfg.put(&ck, "k", "", None, 0).await;
        const NCLIENT: usize = 5;
        const UPTO: usize = 10;
        spawn_clients_and_wait(&cfg, NCLIENT, |me, myck| {
            let cfg = cfg.clone();
            async move {
                for n in 0..UPTO {
                    cfg.append(&myck, "k", &format!("x {me} {n} y"), None, 0)
                        .await;
                }
            }
        })
        .await;
        let vx = cfg.get(&ck, "k", None, 0).await;
        check_concurrent_appends(&vx, &[UPTO; NCLIENT]);
        cfg.end().await;
        cfg.cleanup();
    });
}

/// Submit a request in the minority partition and check that the request doesn't go through
/// until the partition heals. The leader in the original network ends up in the minority.
#[test]
fn one_partition_4a() {
    run_test("one_partition_4a", |sim: Sim| async move {
        let cfg = KvHarness::new(
            &sim,
            ClusterOptions {
                servers: 5,
                ..Default::default()
            },
        )
        .await;
        let op_log = OpLog::new();
        let ck = cfg.make_client(&cfg.all()).await;
        cfg.put(&ck, "1", "13", Some(&op_log), 0).await;

        cfg.begin("Test: progress in majority (4A)").await;
        let (p1, p2) = cfg.make_partition().await;
        cfg.partition(&p1, &p2);
        let ckp1 = cfg.make_client(&p1).await; // connect ckp1 to p1
        let ckp2a = cfg.make_client(&p2).await; // connect ckp2a to p2
        let ckp2b = cfg.make_client(&p2).await; // connect ckp2b to p2
        cfg.put(&ckp1, "1", "14", Some(&op_log), 1).await;
        cfg.check(&ckp1, "1", "14").await;
        cfg.end().await;

        cfg.begin("Test: no progress in minority (4A)").await;
        let mut put15 = {
            let (cfg, ckp2a, op_log) = (cfg.clone(), ckp2a.clone(), op_log.clone());
            actix::spawn(async move { cfg.put(&ckp2a, "1", "15", Some(&op_log), 2).await })
        };
        let mut get = {
            // A different clerk in p2.
            let (cfg, ckp2b, op_log) = (cfg.clone(), ckp2b.clone(), op_log.clone());
            actix::spawn(async move { cfg.get(&ckp2b, "1", Some(&op_log), 3).await })
        };
        tokio::select! {
            _ = &mut put15 => panic!("Put in minority completed"),
            _ = &mut get => panic!("Get in minority completed"),
            _ = sleep(Duration::from_secs(1)) => {}
        }
        cfg.check(&ckp1, "1", "14").await;
        cfg.put(&ckp1, "1", "16", Some(&op_log), 1).await;
        cfg.check(&ckp1, "1", "16").await;
        cfg.end().await;

        cfg.begin("Test: completion after heal (4A)").await;
        cfg.connect_all();
        cfg.connect_client(&ckp2a, &cfg.all());
        cfg.connect_client(&ckp2b, &cfg.all());
        sleep(ELECTION_TIMEOUT).await;
        timeout(Duration::from_millis(30 * 100), put15)
            .await
            .expect("Put did not complete")
            .expect("put task");
        // Our port also requires the minority Get to finish after the heal, with a value that
        // was current at some point during the call: 14, then 16, then 15.
        let v = timeout(Duration::from_millis(30 * 100), get)
            .await
            .expect("Get did not complete")
            .expect("get task");
        assert!(
            ["14", "16", "15"].contains(&v.as_str()),
            "minority Get returned {v:?}"
        );
        cfg.check(&ck, "1", "15").await;
        op_log.check_linearizable("one_partition_4a", LINEARIZABILITY_CHECK_TIMEOUT);
        cfg.end().await;
        cfg.cleanup();
    });
}

generic!(many_partitions_one_client_4a, "4A", 1, 5, F, F, T, -1, F);
generic!(many_partitions_many_clients_4a, "4A", 5, 5, F, F, T, -1, F);
generic!(persist_one_client_4a, "4A", 1, 5, F, T, F, -1, F);
generic!(persist_concurrent_4a, "4A", 5, 5, F, T, F, -1, F);
generic!(persist_concurrent_unreliable_4a, "4A", 5, 5, T, T, F, -1, F);
generic!(persist_partition_4a, "4A", 5, 5, F, T, T, -1, F);
generic!(persist_partition_unreliable_4a, "4A", 5, 5, T, T, T, -1, F);
generic!(
    persist_partition_unreliable_linearizable_4a,
    "4A",
    15,
    7,
    T,
    T,
    T,
    -1,
    T
);

// ---------------------------------------------------------------- 4B

/// If one server falls behind, then rejoins, does it recover by using the InstallSnapshot RPC?
/// Also checks that the majority discards committed log entries even if the minority doesn't
/// respond.
#[test]
fn snapshot_rpc_4b() {
    run_test("snapshot_rpc_4b", |sim: Sim| async move {
        let maxraftstate = 1000;
        let cfg = KvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                max_raft_state: max_raft_state(maxraftstate),
                ..Default::default()
            },
        )
        .await;
        let ck = cfg.make_client(&cfg.all()).await;
        cfg.begin("Test: InstallSnapshot RPC (4B)").await;
        cfg.put(&ck, "a", "A", None, 0).await;
        cfg.check(&ck, "a", "A").await;

        // A bunch of puts into the majority partition.
        cfg.partition(&[0, 1], &[2]);
        {
            let ck1 = cfg.make_client(&[0, 1]).await;
            for i in 0..50 {
                cfg.put(&ck1, &i.to_string(), &i.to_string(), None, 0).await;
            }
            sleep(ELECTION_TIMEOUT).await;
            cfg.put(&ck1, "b", "B", None, 0).await;
        }
        // Check that the majority partition has thrown away most of its log entries.
        let size = cfg.log_size();
        assert!(
            size as i64 <= 8 * maxraftstate,
            "logs were not trimmed ({size} > 8*{maxraftstate})"
        );

        // Now make a group that requires participation of the lagging server, so that it has
        // to catch up.
        cfg.partition(&[0, 2], &[1]);
        {
            let ck1 = cfg.make_client(&[0, 2]).await;
            cfg.put(&ck1, "c", "C", None, 0).await;
            cfg.put(&ck1, "d", "D", None, 0).await;
            cfg.check(&ck1, "a", "A").await;
            cfg.check(&ck1, "b", "B").await;
            cfg.check(&ck1, "1", "1").await;
            cfg.check(&ck1, "49", "49").await;
        }

        // Now everybody.
        cfg.partition(&[0, 1, 2], &[]);
        cfg.put(&ck, "e", "E", None, 0).await;
        cfg.check(&ck, "c", "C").await;
        cfg.check(&ck, "e", "E").await;
        cfg.check(&ck, "1", "1").await;
        cfg.end().await;
        cfg.cleanup();
    });
}

/// Are the snapshots not too huge? 500 bytes is a generous bound for the operations we do.
#[test]
fn snapshot_size_4b() {
    run_test("snapshot_size_4b", |sim: Sim| async move {
        let maxraftstate = 1000;
        let maxsnapshotstate = 500;
        let cfg = KvHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                max_raft_state: max_raft_state(maxraftstate),
                ..Default::default()
            },
        )
        .await;
        let ck = cfg.make_client(&cfg.all()).await;
        cfg.begin("Test: snapshot size is reasonable (4B)").await;
        for _ in 0..200 {
            cfg.put(&ck, "x", "0", None, 0).await;
            cfg.check(&ck, "x", "0").await;
            cfg.put(&ck, "x", "1", None, 0).await;
            cfg.check(&ck, "x", "1").await;
        }
        // Check that the servers have thrown away most of their log entries.
        let size = cfg.log_size();
        assert!(
            size as i64 <= 8 * maxraftstate,
            "logs were not trimmed ({size} > 8*{maxraftstate})"
        );
        // Check that the snapshots are not unreasonably large.
        let snapshot = cfg.snapshot_size();
        assert!(
            snapshot <= maxsnapshotstate,
            "snapshot too large ({snapshot} > {maxsnapshotstate})"
        );
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn speed_4b() {
    run_test("speed_4b", |sim: Sim| generic_test_speed(sim, "4B", 1000));
}

generic!(snapshot_recover_4b, "4B", 1, 5, F, T, F, 1000, F);
generic!(
    snapshot_recover_many_clients_4b,
    "4B",
    20,
    5,
    F,
    T,
    F,
    1000,
    F
);
generic!(snapshot_unreliable_4b, "4B", 5, 5, T, F, F, 1000, F);
generic!(snapshot_unreliable_recover_4b, "4B", 5, 5, T, T, F, 1000, F);
generic!(
    snapshot_unreliable_recover_concurrent_partition_4b,
    "4B",
    5,
    5,
    T,
    T,
    T,
    1000,
    F
);
generic!(
    snapshot_unreliable_recover_concurrent_partition_linearizable_4b,
    "4B",
    15,
    7,
    T,
    T,
    T,
    1000,
    T
);

// ---------------------------------------------------------------- ours

/// Beyond the lab: the linearizable 4B scenario with every snapshot cut into 64-byte
/// InstallSnapshot chunks, so each one a lagging or restarted server needs crosses the
/// unreliable network (lost and reordered chunks) in many pieces, through partitions, leader
/// changes and restarts in the middle of transfers.
#[test]
fn snapshot_chunks_unreliable_recover_concurrent_partition_linearizable() {
    let name = "snapshot_chunks_unreliable_recover_concurrent_partition_linearizable";
    run_test(name, |sim: Sim| {
        generic_test(
            sim,
            name,
            Generic {
                part: "ours",
                nclients: 15,
                nservers: 7,
                unreliable: true,
                crash: true,
                partitions: true,
                maxraftstate: 1000,
                randomkeys: true,
                snapshot_chunk: Some(64),
            },
        )
    });
}
