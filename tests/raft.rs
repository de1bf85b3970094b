//! 6.5840's Raft tests (`raft/test_test.go`, 3A–3D), ported step by step with the same limits,
//! run in virtual time on the simulated network.

use std::time::Duration;

use futures_util::future::join_all;
use rainkv::testkit::raft::{Cmd, RaftHarness, MAX_LOG_SIZE, RAFT_ELECTION_TIMEOUT};
use rainkv::testkit::ClusterOptions;
use rainkv::testkit::{run_test, Sim};
use tokio::time::sleep;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------- 3A: leader election

#[test]
fn initial_election_3a() {
    run_test("initial_election_3a", |sim: Sim| async move {
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers: 3,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3A): initial election").await;
        cfg.check_one_leader().await;
        // Sleep a bit to avoid racing with followers learning of the election.
        sleep(ms(50)).await;
        let term1 = cfg.check_terms().await;
        assert!(term1 >= 1, "term is {term1}, but should be at least 1");
        // Does the leader+term stay the same if there is no network failure?
        sleep(2 * RAFT_ELECTION_TIMEOUT).await;
        let term2 = cfg.check_terms().await;
        if term1 != term2 {
            println!("warning: term changed even though there were no failures");
        }
        cfg.check_one_leader().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn re_election_3a() {
    run_test("re_election_3a", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3A): election after network failure").await;
        let leader1 = cfg.check_one_leader().await;
        // If the leader disconnects, a new one should be elected.
        cfg.disconnect(leader1);
        cfg.check_one_leader().await;
        // If the old leader rejoins, that shouldn't disturb the new leader.
        cfg.connect(leader1);
        let leader2 = cfg.check_one_leader().await;
        // If there's no quorum, no new leader should be elected.
        cfg.disconnect(leader2);
        cfg.disconnect((leader2 + 1) % servers);
        sleep(2 * RAFT_ELECTION_TIMEOUT).await;
        cfg.check_no_leader().await;
        // If a quorum arises, it should elect a leader.
        cfg.connect((leader2 + 1) % servers);
        cfg.check_one_leader().await;
        // Re-join of the last node shouldn't prevent a leader from existing.
        cfg.connect(leader2);
        cfg.check_one_leader().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn many_elections_3a() {
    run_test("many_elections_3a", |sim: Sim| async move {
        let servers = 7;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3A): multiple elections").await;
        cfg.check_one_leader().await;
        for _ in 0..10 - 1 {
            // Disconnect three nodes (possibly the same one more than once).
            let i1 = cfg.rand_range(0..servers as u64) as usize;
            let i2 = cfg.rand_range(0..servers as u64) as usize;
            let i3 = cfg.rand_range(0..servers as u64) as usize;
            cfg.disconnect(i1);
            cfg.disconnect(i2);
            cfg.disconnect(i3);
            // Either the current leader is still alive, or the remaining four elect one.
            cfg.check_one_leader().await;
            cfg.connect(i1);
            cfg.connect(i2);
            cfg.connect(i3);
        }
        cfg.check_one_leader().await;
        cfg.end().await;
        cfg.cleanup();
    });
}

// ---------------------------------------------------------------- 3B: log replication

#[test]
fn basic_agree_3b() {
    run_test("basic_agree_3b", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3B): basic agreement").await;
        for index in 1..=3u64 {
            let (nd, _) = cfg.n_committed(index);
            assert_eq!(nd, 0, "some have committed before Start()");
            let xindex = cfg.one(index as i64 * 100, servers, false).await;
            assert_eq!(xindex, index, "got index {xindex} but expected {index}");
        }
        cfg.end().await;
        cfg.cleanup();
    });
}

/// Each command should be sent to each peer only once.
#[test]
fn rpc_bytes_3b() {
    run_test("rpc_bytes_3b", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3B): RPC byte count").await;
        cfg.one(99, servers, false).await;
        let bytes0 = sim.network().total_bytes().await.expect("network");
        let mut sent = 0u64;
        for index in 2..12u64 {
            let cmd = cfg.rand_string(5000);
            let xindex = cfg.one(cmd, servers, false).await;
            assert_eq!(xindex, index, "got index {xindex} but expected {index}");
            sent += 5000;
        }
        let got = sim.network().total_bytes().await.expect("network") - bytes0;
        let expected = servers as u64 * sent;
        assert!(
            got <= expected + 50_000,
            "too many RPC bytes; got {got}, expected {expected}"
        );
        cfg.end().await;
        cfg.cleanup();
    });
}

/// Test just failure of followers.
#[test]
fn follower_failure_3b() {
    run_test("follower_failure_3b", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3B): test progressive failure of followers")
            .await;
        cfg.one(101, servers, false).await;
        // Disconnect one follower from the network.
        let leader1 = cfg.check_one_leader().await;
        cfg.disconnect((leader1 + 1) % servers);
        // The leader and remaining follower should be able to agree despite it.
        cfg.one(102, servers - 1, false).await;
        sleep(RAFT_ELECTION_TIMEOUT).await;
        cfg.one(103, servers - 1, false).await;
        // Disconnect the remaining follower.
        let leader2 = cfg.check_one_leader().await;
        cfg.disconnect((leader2 + 1) % servers);
        cfg.disconnect((leader2 + 2) % servers);
        // Submit a command.
        let r = cfg
            .start(leader2, &Cmd::Int(104))
            .await
            .expect("leader rejected Start()");
        assert_eq!(r.index, 4, "expected index 4, got {}", r.index);
        sleep(2 * RAFT_ELECTION_TIMEOUT).await;
        // Check that the command did not commit.
        let (n, _) = cfg.n_committed(r.index);
        assert_eq!(n, 0, "{n} committed but no majority");
        cfg.end().await;
        cfg.cleanup();
    });
}

/// Test just failure of leaders.
#[test]
fn leader_failure_3b() {
    run_test("leader_failure_3b", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3B): test failure of leaders").await;
        cfg.one(101, servers, false).await;
        // Disconnect the first leader.
        let leader1 = cfg.check_one_leader().await;
        cfg.disconnect(leader1);
        // The remaining followers should elect a new leader.
        cfg.one(102, servers - 1, false).await;
        sleep(RAFT_ELECTION_TIMEOUT).await;
        cfg.one(103, servers - 1, false).await;
        // Disconnect the new leader.
        let leader2 = cfg.check_one_leader().await;
        cfg.disconnect(leader2);
        // Submit a command to each server.
        for i in 0..servers {
            cfg.start(i, &Cmd::Int(104)).await;
        }
        sleep(2 * RAFT_ELECTION_TIMEOUT).await;
        // Check that the command did not commit.
        let (n, _) = cfg.n_committed(4);
        assert_eq!(n, 0, "{n} committed but no majority");
        cfg.end().await;
        cfg.cleanup();
    });
}

/// Test that a follower participates after disconnect and re-connect.
#[test]
fn fail_agree_3b() {
    run_test("fail_agree_3b", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3B): agreement after follower reconnects")
            .await;
        cfg.one(101, servers, false).await;
        // Disconnect one follower from the network.
        let leader = cfg.check_one_leader().await;
        cfg.disconnect((leader + 1) % servers);
        // The leader and remaining follower should be able to agree despite it.
        cfg.one(102, servers - 1, false).await;
        cfg.one(103, servers - 1, false).await;
        sleep(RAFT_ELECTION_TIMEOUT).await;
        cfg.one(104, servers - 1, false).await;
        cfg.one(105, servers - 1, false).await;
        // Re-connect.
        cfg.connect((leader + 1) % servers);
        // The full set of servers should preserve previous agreements, and be able to agree on
        // new commands.
        cfg.one(106, servers, true).await;
        sleep(RAFT_ELECTION_TIMEOUT).await;
        cfg.one(107, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn fail_no_agree_3b() {
    run_test("fail_no_agree_3b", |sim: Sim| async move {
        let servers = 5;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3B): no agreement if too many followers disconnect")
            .await;
        cfg.one(10, servers, false).await;
        // 3 of 5 followers disconnect.
        let leader = cfg.check_one_leader().await;
        cfg.disconnect((leader + 1) % servers);
        cfg.disconnect((leader + 2) % servers);
        cfg.disconnect((leader + 3) % servers);
        let r = cfg
            .start(leader, &Cmd::Int(20))
            .await
            .expect("leader rejected Start()");
        assert_eq!(r.index, 2, "expected index 2, got {}", r.index);
        sleep(2 * RAFT_ELECTION_TIMEOUT).await;
        let (n, _) = cfg.n_committed(r.index);
        assert_eq!(n, 0, "{n} committed but no majority");
        // Repair.
        cfg.connect((leader + 1) % servers);
        cfg.connect((leader + 2) % servers);
        cfg.connect((leader + 3) % servers);
        // The disconnected majority may have chosen a leader from among their own ranks,
        // forgetting index 2.
        let leader2 = cfg.check_one_leader().await;
        let r2 = cfg
            .start(leader2, &Cmd::Int(30))
            .await
            .expect("leader2 rejected Start()");
        assert!((2..=3).contains(&r2.index), "unexpected index {}", r2.index);
        cfg.one(1000, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn concurrent_starts_3b() {
    run_test("concurrent_starts_3b", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3B): concurrent Start()s").await;
        let mut success = false;
        'tries: for attempt in 0..5 {
            if attempt > 0 {
                // Give the solution some time to settle.
                sleep(Duration::from_secs(3)).await;
            }
            let leader = cfg.check_one_leader().await;
            let Some(r) = cfg.start(leader, &Cmd::Int(1)).await else {
                // Leader moved on really quickly.
                continue;
            };
            let term = r.term;
            let starts = (0..5i64).map(|ii| {
                let cfg = cfg.clone();
                actix::spawn(async move {
                    match cfg.start(leader, &Cmd::Int(100 + ii)).await {
                        Some(r) if r.term == term => Some(r.index),
                        _ => None,
                    }
                })
            });
            let indexes: Vec<u64> = join_all(starts)
                .await
                .into_iter()
                .filter_map(|r| r.expect("starter"))
                .collect();
            for j in 0..servers {
                if let Some(state) = cfg.get_state(j).await {
                    if state.term != term {
                        // Term changed: can't expect low RPC counts.
                        continue 'tries;
                    }
                }
            }
            let mut cmds = Vec::new();
            for index in indexes {
                match cfg.wait(index, servers, Some(term)).await {
                    Some(Cmd::Int(x)) => cmds.push(x),
                    Some(other) => panic!("value {other} is not an int"),
                    // Peers have moved on to later terms, so we can't expect all Start()s to
                    // have succeeded.
                    None => continue 'tries,
                }
            }
            for ii in 0..5 {
                let x = 100 + ii;
                assert!(cmds.contains(&x), "cmd {x} missing in {cmds:?}");
            }
            success = true;
            break;
        }
        assert!(success, "term changed too often");
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn rejoin_3b() {
    run_test("rejoin_3b", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3B): rejoin of partitioned leader").await;
        cfg.one(101, servers, true).await;
        // Leader network failure.
        let leader1 = cfg.check_one_leader().await;
        cfg.disconnect(leader1);
        // Make the old leader try to agree on some entries.
        for x in [102, 103, 104] {
            cfg.start(leader1, &Cmd::Int(x)).await;
        }
        // New leader commits, also for index=2.
        cfg.one(103, 2, true).await;
        // New leader network failure.
        let leader2 = cfg.check_one_leader().await;
        cfg.disconnect(leader2);
        // Old leader connected again.
        cfg.connect(leader1);
        cfg.one(104, 2, true).await;
        // All together now.
        cfg.connect(leader2);
        cfg.one(105, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn backup_3b() {
    run_test("backup_3b", |sim: Sim| async move {
        let servers = 5;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3B): leader backs up quickly over incorrect follower logs")
            .await;
        let c = cfg.rand_cmd();
        cfg.one(c, servers, true).await;
        // Put leader and one follower in a partition.
        let leader1 = cfg.check_one_leader().await;
        cfg.disconnect((leader1 + 2) % servers);
        cfg.disconnect((leader1 + 3) % servers);
        cfg.disconnect((leader1 + 4) % servers);
        // Submit lots of commands that won't commit.
        for _ in 0..50 {
            let c = cfg.rand_cmd();
            cfg.start(leader1, &c).await;
        }
        sleep(RAFT_ELECTION_TIMEOUT / 2).await;
        cfg.disconnect(leader1);
        cfg.disconnect((leader1 + 1) % servers);
        // Allow the other partition to recover.
        cfg.connect((leader1 + 2) % servers);
        cfg.connect((leader1 + 3) % servers);
        cfg.connect((leader1 + 4) % servers);
        // Lots of successful commands to the new group.
        for _ in 0..50 {
            let c = cfg.rand_cmd();
            cfg.one(c, 3, true).await;
        }
        // Now another partitioned leader and one follower.
        let leader2 = cfg.check_one_leader().await;
        let mut other = (leader1 + 2) % servers;
        if leader2 == other {
            other = (leader2 + 1) % servers;
        }
        cfg.disconnect(other);
        // Lots more commands that won't commit.
        for _ in 0..50 {
            let c = cfg.rand_cmd();
            cfg.start(leader2, &c).await;
        }
        sleep(RAFT_ELECTION_TIMEOUT / 2).await;
        // Bring the original leader back to life.
        for i in 0..servers {
            cfg.disconnect(i);
        }
        cfg.connect(leader1);
        cfg.connect((leader1 + 1) % servers);
        cfg.connect(other);
        // Lots of successful commands to the new group.
        for _ in 0..50 {
            let c = cfg.rand_cmd();
            cfg.one(c, 3, true).await;
        }
        // Now everyone.
        for i in 0..servers {
            cfg.connect(i);
        }
        let c = cfg.rand_cmd();
        cfg.one(c, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn count_3b() {
    run_test("count_3b", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3B): RPC counts aren't too high").await;
        let rpcs = || async {
            let mut n = 0;
            for j in 0..servers {
                n += cfg.rpc_count(j).await;
            }
            n
        };
        let leader = cfg.check_one_leader().await;
        let total1 = rpcs().await;
        assert!(
            (1..=30).contains(&total1),
            "too many or few RPCs ({total1}) to elect initial leader"
        );

        let mut total2 = 0;
        let mut success = false;
        'tries: for attempt in 0..5 {
            if attempt > 0 {
                // Give the solution some time to settle.
                sleep(Duration::from_secs(3)).await;
            }
            let leader = cfg.check_one_leader().await;
            let total1 = rpcs().await;
            let iters = 10u64;
            let Some(r) = cfg.start(leader, &Cmd::Int(1)).await else {
                // Leader moved on really quickly.
                continue;
            };
            let (starti, term) = (r.index, r.term);
            let mut cmds = Vec::new();
            for i in 1..iters + 2 {
                let x = cfg.rand_cmd();
                cmds.push(x.clone());
                let Some(r1) = cfg.start(leader, &x).await else {
                    // No longer the leader.
                    continue 'tries;
                };
                if r1.term != term {
                    // Term changed while starting.
                    continue 'tries;
                }
                assert_eq!(r1.index, starti + i, "Start() failed");
            }
            for i in 1..=iters {
                match cfg.wait(starti + i, servers, Some(term)).await {
                    // Term changed -- try again.
                    None => continue 'tries,
                    Some(cmd) => assert_eq!(
                        cmd,
                        cmds[i as usize - 1],
                        "wrong value {cmd} committed for index {}",
                        starti + i
                    ),
                }
            }
            for j in 0..servers {
                if let Some(state) = cfg.get_state(j).await {
                    if state.term != term {
                        // Term changed -- can't expect low RPC counts; need to keep going to
                        // update total2.
                        continue 'tries;
                    }
                }
            }
            total2 = rpcs().await;
            assert!(
                total2 - total1 <= (iters + 1 + 3) * 3,
                "too many RPCs ({}) for {iters} entries",
                total2 - total1
            );
            success = true;
            break;
        }
        assert!(success, "term changed too often");
        let _ = leader;

        sleep(RAFT_ELECTION_TIMEOUT).await;
        let total3 = rpcs().await;
        assert!(
            total3 - total2 <= 3 * 20,
            "too many RPCs ({}) for 1 second of idleness",
            total3 - total2
        );
        cfg.end().await;
        cfg.cleanup();
    });
}

// ---------------------------------------------------------------- 3C: persistence

#[test]
fn persist1_3c() {
    run_test("persist1_3c", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3C): basic persistence").await;
        cfg.one(11, servers, true).await;
        // Crash and re-start all.
        for i in 0..servers {
            cfg.restart(i).await;
        }
        for i in 0..servers {
            cfg.disconnect(i);
            cfg.connect(i);
        }
        cfg.one(12, servers, true).await;
        let leader1 = cfg.check_one_leader().await;
        cfg.disconnect(leader1);
        cfg.restart(leader1).await;
        cfg.connect(leader1);
        cfg.one(13, servers, true).await;
        let leader2 = cfg.check_one_leader().await;
        cfg.disconnect(leader2);
        cfg.one(14, servers - 1, true).await;
        cfg.restart(leader2).await;
        cfg.connect(leader2);
        // Wait for leader2 to join before killing i3.
        cfg.wait(4, servers, None).await;
        let i3 = (cfg.check_one_leader().await + 1) % servers;
        cfg.disconnect(i3);
        cfg.one(15, servers - 1, true).await;
        cfg.restart(i3).await;
        cfg.connect(i3);
        cfg.one(16, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn persist2_3c() {
    run_test("persist2_3c", |sim: Sim| async move {
        let servers = 5;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3C): more persistence").await;
        let mut index = 1i64;
        for _ in 0..5 {
            cfg.one(10 + index, servers, true).await;
            index += 1;
            let leader1 = cfg.check_one_leader().await;
            cfg.disconnect((leader1 + 1) % servers);
            cfg.disconnect((leader1 + 2) % servers);
            cfg.one(10 + index, servers - 2, true).await;
            index += 1;
            cfg.disconnect(leader1 % servers);
            cfg.disconnect((leader1 + 3) % servers);
            cfg.disconnect((leader1 + 4) % servers);
            cfg.restart((leader1 + 1) % servers).await;
            cfg.restart((leader1 + 2) % servers).await;
            cfg.connect((leader1 + 1) % servers);
            cfg.connect((leader1 + 2) % servers);
            sleep(RAFT_ELECTION_TIMEOUT).await;
            cfg.restart((leader1 + 3) % servers).await;
            cfg.connect((leader1 + 3) % servers);
            cfg.one(10 + index, servers - 2, true).await;
            index += 1;
            cfg.connect((leader1 + 4) % servers);
            cfg.connect(leader1 % servers);
        }
        cfg.one(1000, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn persist3_3c() {
    run_test("persist3_3c", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3C): partitioned leader and one follower crash, leader restarts")
            .await;
        cfg.one(101, 3, true).await;
        let leader = cfg.check_one_leader().await;
        cfg.disconnect((leader + 2) % servers);
        cfg.one(102, 2, true).await;
        cfg.crash(leader % servers);
        cfg.crash((leader + 1) % servers);
        cfg.connect((leader + 2) % servers);
        cfg.restart(leader % servers).await;
        cfg.connect(leader % servers);
        cfg.one(103, 2, true).await;
        cfg.restart((leader + 1) % servers).await;
        cfg.connect((leader + 1) % servers);
        cfg.one(104, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

/// Figure 8: a leader must not commit an entry from an earlier term by counting replicas.
#[test]
fn figure8_3c() {
    run_test("figure8_3c", |sim: Sim| async move {
        let servers = 5;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3C): Figure 8").await;
        let c = cfg.rand_cmd();
        cfg.one(c, 1, true).await;
        let mut nup = servers;
        for _ in 0..1000 {
            let mut leader = None;
            for i in 0..servers {
                let c = cfg.rand_cmd();
                if cfg.start(i, &c).await.is_some() {
                    leader = Some(i);
                }
            }
            if cfg.rand_range(0..1000) < 100 {
                let ms_ = cfg.rand_range(0..(RAFT_ELECTION_TIMEOUT.as_millis() as u64 / 2));
                sleep(ms(ms_)).await;
            } else {
                let ms_ = cfg.rand_range(0..13);
                sleep(ms(ms_)).await;
            }
            if let Some(leader) = leader {
                cfg.crash(leader);
                nup -= 1;
            }
            if nup < 3 {
                let s = cfg.rand_range(0..servers as u64) as usize;
                if !cfg.is_up(s) {
                    cfg.restart(s).await;
                    cfg.connect(s);
                    nup += 1;
                }
            }
        }
        for i in 0..servers {
            if !cfg.is_up(i) {
                cfg.restart(i).await;
                cfg.connect(i);
            }
        }
        let c = cfg.rand_cmd();
        cfg.one(c, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn unreliable_agree_3c() {
    run_test("unreliable_agree_3c", |sim: Sim| async move {
        let servers = 5;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                reliable: false,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3C): unreliable agreement").await;
        let mut clients = Vec::new();
        for iters in 1..50i64 {
            for j in 0..4 {
                let cfg = cfg.clone();
                clients.push(actix::spawn(async move {
                    cfg.one(100 * iters + j, 1, true).await;
                }));
            }
            cfg.one(iters, 1, true).await;
        }
        sim.network().set_reliable(true);
        for client in join_all(clients).await {
            client.expect("client");
        }
        cfg.one(100, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn figure8_unreliable_3c() {
    run_test("figure8_unreliable_3c", |sim: Sim| async move {
        let servers = 5;
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers,
                reliable: false,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3C): Figure 8 (unreliable)").await;
        let c = cfg.rand_range(0..10_000) as i64;
        cfg.one(c, 1, true).await;
        let mut nup = servers;
        for iters in 0..1000 {
            if iters == 200 {
                sim.network().set_long_reordering(true);
            }
            let mut leader = None;
            for i in 0..servers {
                let c = Cmd::Int(cfg.rand_range(0..10_000) as i64);
                if cfg.start(i, &c).await.is_some() && cfg.is_connected(i) {
                    leader = Some(i);
                }
            }
            if cfg.rand_range(0..1000) < 100 {
                let ms_ = cfg.rand_range(0..(RAFT_ELECTION_TIMEOUT.as_millis() as u64 / 2));
                sleep(ms(ms_)).await;
            } else {
                let ms_ = cfg.rand_range(0..13);
                sleep(ms(ms_)).await;
            }
            if let Some(leader) = leader {
                if cfg.rand_range(0..1000) < RAFT_ELECTION_TIMEOUT.as_millis() as u64 / 2 {
                    cfg.disconnect(leader);
                    nup -= 1;
                }
            }
            if nup < 3 {
                let s = cfg.rand_range(0..servers as u64) as usize;
                if !cfg.is_connected(s) {
                    cfg.connect(s);
                    nup += 1;
                }
            }
        }
        for i in 0..servers {
            if !cfg.is_connected(i) {
                cfg.connect(i);
            }
        }
        let c = cfg.rand_range(0..10_000) as i64;
        cfg.one(c, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}

async fn internal_churn(cfg: RaftHarness, sim: &Sim, unreliable: bool) {
    let servers = cfg.n();
    let title = if unreliable {
        "Test (3C): unreliable churn"
    } else {
        "Test (3C): churn"
    };
    cfg.begin(title).await;
    let stop = std::rc::Rc::new(std::cell::Cell::new(false));

    let clients: Vec<_> = (0..3u64)
        .map(|me| {
            let cfg = cfg.clone();
            let stop = stop.clone();
            actix::spawn(async move {
                let mut values = Vec::new();
                while !stop.get() {
                    let x = cfg.rand_cmd();
                    let mut index = None;
                    for i in 0..servers {
                        // Try them all, maybe one of them is a leader.
                        if let Some(r) = cfg.start(i, &x).await {
                            index = Some(r.index);
                        }
                    }
                    if let Some(index) = index {
                        // Maybe leader will commit our value, maybe not. But don't wait
                        // forever.
                        for to in [10, 20, 50, 100, 200] {
                            let (nd, cmd) = cfg.n_committed(index);
                            if nd > 0 {
                                match cmd {
                                    Some(c @ Cmd::Int(_)) if c == x => values.push(c),
                                    Some(Cmd::Int(_)) => {}
                                    other => panic!("wrong command type {other:?}"),
                                }
                                break;
                            }
                            sleep(ms(to)).await;
                        }
                    } else {
                        sleep(ms(79 + me * 17)).await;
                    }
                }
                values
            })
        })
        .collect();

    for _ in 0..20 {
        if cfg.rand_range(0..1000) < 200 {
            let i = cfg.rand_range(0..servers as u64) as usize;
            cfg.disconnect(i);
        }
        if cfg.rand_range(0..1000) < 500 {
            let i = cfg.rand_range(0..servers as u64) as usize;
            if !cfg.is_up(i) {
                cfg.restart(i).await;
            }
            cfg.connect(i);
        }
        if cfg.rand_range(0..1000) < 200 {
            let i = cfg.rand_range(0..servers as u64) as usize;
            if cfg.is_up(i) {
                cfg.crash(i);
            }
        }
        // Make crash/restart infrequent enough that the peers can often keep up, but not so
        // infrequent that everything has settled down from one change to the next.
        sleep(ms(700)).await;
    }
    sleep(RAFT_ELECTION_TIMEOUT).await;
    sim.network().set_reliable(true);
    for i in 0..servers {
        if !cfg.is_up(i) {
            cfg.restart(i).await;
        }
        cfg.connect(i);
    }
    stop.set(true);
    let values: Vec<Cmd> = join_all(clients)
        .await
        .into_iter()
        .flat_map(|r| r.expect("client failed"))
        .collect();

    sleep(RAFT_ELECTION_TIMEOUT).await;
    let c = cfg.rand_cmd();
    let last_index = cfg.one(c, servers, true).await;
    let mut really = Vec::new();
    for index in 1..=last_index {
        match cfg.wait(index, servers, None).await {
            Some(c @ Cmd::Int(_)) => really.push(c),
            other => panic!("not an int: {other:?}"),
        }
    }
    for v in &values {
        assert!(really.contains(v), "didn't find a value");
    }
    cfg.end().await;
    cfg.cleanup();
}

#[test]
fn reliable_churn_3c() {
    run_test("reliable_churn_3c", |sim: Sim| async move {
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers: 5,
                ..Default::default()
            },
        )
        .await;
        internal_churn(cfg, &sim, false).await;
    });
}

#[test]
fn unreliable_churn_3c() {
    run_test("unreliable_churn_3c", |sim: Sim| async move {
        let cfg = RaftHarness::new(
            &sim,
            ClusterOptions {
                servers: 5,
                reliable: false,
                ..Default::default()
            },
        )
        .await;
        internal_churn(cfg, &sim, true).await;
    });
}

// ---------------------------------------------------------------- 3D: log compaction

const SNAPSHOT_INTERVAL: u64 = rainkv::testkit::raft::SNAPSHOT_INTERVAL;

async fn snap_common(sim: &Sim, name: &str, disconnect: bool, reliable: bool, crash: bool) {
    let iters = 30;
    let servers = 3;
    let cfg = RaftHarness::with_snapshots(
        sim,
        ClusterOptions {
            servers,
            reliable,
            ..Default::default()
        },
    )
    .await;
    cfg.begin(name).await;
    let c = cfg.rand_cmd();
    cfg.one(c, servers, true).await;
    let mut leader1 = cfg.check_one_leader().await;

    for i in 0..iters {
        let mut victim = (leader1 + 1) % servers;
        let mut sender = leader1;
        if i % 3 == 1 {
            sender = (leader1 + 1) % servers;
            victim = leader1;
        }
        if disconnect {
            cfg.disconnect(victim);
            let c = cfg.rand_cmd();
            cfg.one(c, servers - 1, true).await;
        }
        if crash {
            cfg.crash(victim);
            let c = cfg.rand_cmd();
            cfg.one(c, servers - 1, true).await;
        }
        // Perhaps send enough to get a snapshot.
        let nn = SNAPSHOT_INTERVAL / 2 + cfg.rand_range(0..SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            let c = cfg.rand_cmd();
            cfg.start(sender, &c).await;
        }
        // Let applier threads catch up with the Start()'s.
        let c = cfg.rand_cmd();
        if !disconnect && !crash {
            // Make sure all followers have caught up, so that an InstallSnapshot RPC isn't
            // required for TestSnapshotBasic3D().
            cfg.one(c, servers, true).await;
        } else {
            cfg.one(c, servers - 1, true).await;
        }
        let size = cfg.log_size();
        assert!(size < MAX_LOG_SIZE, "Log size too large: {size}");
        if disconnect {
            // Reconnect a follower, who maybe behind and needs to receive a snapshot to catch
            // up.
            cfg.connect(victim);
            let c = cfg.rand_cmd();
            cfg.one(c, servers, true).await;
            leader1 = cfg.check_one_leader().await;
        }
        if crash {
            cfg.restart(victim).await;
            cfg.connect(victim);
            let c = cfg.rand_cmd();
            cfg.one(c, servers, true).await;
            leader1 = cfg.check_one_leader().await;
        }
    }
    cfg.end().await;
    cfg.cleanup();
}

#[test]
fn snapshot_basic_3d() {
    run_test("snapshot_basic_3d", |sim: Sim| async move {
        snap_common(&sim, "Test (3D): snapshots basic", false, true, false).await;
    });
}

#[test]
fn snapshot_install_3d() {
    run_test("snapshot_install_3d", |sim: Sim| async move {
        snap_common(
            &sim,
            "Test (3D): install snapshots (disconnect)",
            true,
            true,
            false,
        )
        .await;
    });
}

#[test]
fn snapshot_install_unreliable_3d() {
    run_test("snapshot_install_unreliable_3d", |sim: Sim| async move {
        let name = "Test (3D): install snapshots (disconnect+unreliable)";
        snap_common(&sim, name, true, false, false).await;
    });
}

#[test]
fn snapshot_install_crash_3d() {
    run_test("snapshot_install_crash_3d", |sim: Sim| async move {
        snap_common(
            &sim,
            "Test (3D): install snapshots (crash)",
            false,
            true,
            true,
        )
        .await;
    });
}

#[test]
fn snapshot_install_uncrash_3d() {
    run_test("snapshot_install_uncrash_3d", |sim: Sim| async move {
        let name = "Test (3D): install snapshots (unreliable+crash)";
        snap_common(&sim, name, false, false, true).await;
    });
}

/// Do the servers persist the snapshots, and restart using snapshot along with the tail of
/// the log?
#[test]
fn snapshot_all_crash_3d() {
    run_test("snapshot_all_crash_3d", |sim: Sim| async move {
        let servers = 3;
        let iters = 5;
        let cfg = RaftHarness::with_snapshots(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3D): crash and restart all servers").await;
        let c = cfg.rand_cmd();
        cfg.one(c, servers, true).await;
        for _ in 0..iters {
            // Perhaps enough to get a snapshot.
            let nn = SNAPSHOT_INTERVAL / 2 + cfg.rand_range(0..SNAPSHOT_INTERVAL);
            for _ in 0..nn {
                let c = cfg.rand_cmd();
                cfg.one(c, servers, true).await;
            }
            let c = cfg.rand_cmd();
            let index1 = cfg.one(c, servers, true).await;
            // Crash all.
            for i in 0..servers {
                cfg.crash(i);
            }
            // Revive all.
            for i in 0..servers {
                cfg.restart(i).await;
                cfg.connect(i);
            }
            let c = cfg.rand_cmd();
            let index2 = cfg.one(c, servers, true).await;
            assert!(index2 > index1, "index decreased from {index1} to {index2}");
        }
        cfg.end().await;
        cfg.cleanup();
    });
}

/// Do servers correctly initialize their in-memory copy of the snapshot, making sure that
/// future writes to persistent state don't lose state?
#[test]
fn snapshot_init_3d() {
    run_test("snapshot_init_3d", |sim: Sim| async move {
        let servers = 3;
        let cfg = RaftHarness::with_snapshots(
            &sim,
            ClusterOptions {
                servers,
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test (3D): snapshot initialization after crash")
            .await;
        let c = cfg.rand_cmd();
        cfg.one(c, servers, true).await;
        // Enough ops to make a snapshot.
        let nn = SNAPSHOT_INTERVAL + 1;
        for _ in 0..nn {
            let c = cfg.rand_cmd();
            cfg.one(c, servers, true).await;
        }
        // Crash all.
        for i in 0..servers {
            cfg.crash(i);
        }
        // Revive all.
        for i in 0..servers {
            cfg.restart(i).await;
            cfg.connect(i);
        }
        // A single op, to get something to be written back to persistent storage.
        let c = cfg.rand_cmd();
        cfg.one(c, servers, true).await;
        // Crash all.
        for i in 0..servers {
            cfg.crash(i);
        }
        // Revive all.
        for i in 0..servers {
            cfg.restart(i).await;
            cfg.connect(i);
        }
        // Do another op to trigger potential bug.
        let c = cfg.rand_cmd();
        cfg.one(c, servers, true).await;
        cfg.end().await;
        cfg.cleanup();
    });
}
