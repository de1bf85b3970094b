//! Raft under everything at once: a lossy network (with long reordering in some runs),
//! disconnections, crashes and restarts of random peers and of the leader, snapshots in some
//! runs, and proposals on every peer throughout, so deposed leaders in a minority keep taking
//! entries that must never commit. A monitor checks Election Safety (at most one leader per
//! term) every 10 ms, and the tester's appliers check that every peer applies the same command
//! at every index, in order. Once the faults stop, the cluster must agree on a new command
//! and every peer must apply the whole log (liveness).
//!
//! The same seed gives the same run: `raft_chaos_replays_from_its_seed` runs one twice and
//! compares the network's trace hash.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use rainkv::testkit::raft::{Cmd, RaftHarness};
use rainkv::testkit::{run_seed, run_test, seeds, ClusterOptions, Sim, TestOptions};
use tokio::time::{sleep, Instant};

const SERVERS: usize = 5;

/// How the faults are mixed.
#[derive(Clone, Copy)]
struct Chaos {
    /// Two thirds of replies are held for 200-2199 ms.
    long_reordering: bool,
    /// Peers snapshot every 10 applied entries.
    snapshots: bool,
    /// How long the faults go on (virtual time).
    duration: Duration,
}

/// Watches every peer's role every 10 ms until stopped; panics on two leaders in one term.
fn watch_leaders(cfg: RaftHarness) -> Rc<RefCell<bool>> {
    let stop = Rc::new(RefCell::new(false));
    let stopped = stop.clone();
    actix::spawn(async move {
        let mut leaders: BTreeMap<u64, usize> = BTreeMap::new();
        while !*stopped.borrow() {
            for i in 0..cfg.n() {
                let Some(state) = cfg.get_state(i).await else {
                    continue;
                };
                if !state.is_leader() {
                    continue;
                }
                let first = *leaders.entry(state.term).or_insert(i);
                assert_eq!(
                    first, i,
                    "two leaders in term {}: {first} and {i}",
                    state.term
                );
            }
            sleep(Duration::from_millis(10)).await;
        }
    });
    stop
}

async fn chaos(sim: Sim, mix: Chaos) -> u64 {
    let options = ClusterOptions {
        servers: SERVERS,
        reliable: false,
        ..Default::default()
    };
    let cfg = if mix.snapshots {
        RaftHarness::with_snapshots(&sim, options).await
    } else {
        RaftHarness::new(&sim, options).await
    };
    let net = sim.network();
    net.set_long_reordering(mix.long_reordering);
    cfg.begin("Test (ours): chaos").await;
    let stop_watching = watch_leaders(cfg.clone());
    let mut next_cmd = 1i64;
    let t0 = Instant::now();
    while t0.elapsed() < mix.duration {
        // Start on every peer, as the Figure 8 tests do: only leaders accept, and a deposed
        // leader cut off in a minority accepts entries that must never commit.
        let mut leader = None;
        for i in 0..SERVERS {
            if cfg.rand_range(0..2) == 0 && cfg.start(i, &Cmd::Int(next_cmd)).await.is_some() {
                next_cmd += 1;
                leader = Some(i);
            }
        }
        match cfg.rand_range(0..100) {
            0..=5 => cfg.disconnect(cfg.rand_range(0..SERVERS as u64) as usize),
            6..=9 => {
                if let Some(l) = leader {
                    cfg.disconnect(l);
                }
            }
            10..=24 => {
                let i = cfg.rand_range(0..SERVERS as u64) as usize;
                if !cfg.is_up(i) {
                    cfg.restart(i).await;
                }
                cfg.connect(i);
            }
            25..=27 => {
                let i = cfg.rand_range(0..SERVERS as u64) as usize;
                if cfg.is_up(i) {
                    cfg.crash(i);
                }
            }
            28..=29 => {
                if let Some(l) = leader.filter(|&l| cfg.is_up(l)) {
                    cfg.crash(l);
                }
            }
            _ => {}
        }
        sleep(Duration::from_millis(10 * (1 + cfg.rand_range(0..10)))).await;
    }

    // The faults stop: everyone comes back on a reliable network.
    net.set_reliable(true);
    net.set_long_reordering(false);
    for i in 0..SERVERS {
        if !cfg.is_up(i) {
            cfg.restart(i).await;
        }
        cfg.connect(i);
    }
    // Replies held by long reordering drain within 2.2 s.
    sleep(Duration::from_secs(3)).await;
    let last = cfg.one(Cmd::Int(i64::MAX), SERVERS, true).await;
    for index in 1..=last {
        cfg.wait(index, SERVERS, None).await;
    }
    *stop_watching.borrow_mut() = true;
    cfg.end().await;
    cfg.cleanup();
    last
}

const TWENTY_SECONDS: Duration = Duration::from_secs(20);

#[test]
fn raft_chaos() {
    run_test("raft_chaos", |sim| async move {
        chaos(
            sim,
            Chaos {
                long_reordering: false,
                snapshots: false,
                duration: TWENTY_SECONDS,
            },
        )
        .await;
    });
}

#[test]
fn raft_chaos_with_long_reordering() {
    run_test("raft_chaos_with_long_reordering", |sim| async move {
        chaos(
            sim,
            Chaos {
                long_reordering: true,
                snapshots: false,
                duration: TWENTY_SECONDS,
            },
        )
        .await;
    });
}

#[test]
fn raft_chaos_with_snapshots() {
    run_test("raft_chaos_with_snapshots", |sim| async move {
        chaos(
            sim,
            Chaos {
                long_reordering: true,
                snapshots: true,
                duration: TWENTY_SECONDS,
            },
        )
        .await;
    });
}

/// A chaos run replays exactly from its seed: same network trace, same log.
#[test]
fn raft_chaos_replays_from_its_seed() {
    let mix = Chaos {
        long_reordering: true,
        snapshots: true,
        duration: Duration::from_secs(5),
    };
    // Replaying is a property of virtual time; real-time runs are not expected to repeat.
    let options = TestOptions {
        realtime: false,
        ..TestOptions::default()
    };
    for seed in seeds() {
        let first = run_seed(seed, &options, |sim| chaos(sim, mix));
        let second = run_seed(seed, &options, |sim| chaos(sim, mix));
        assert_eq!(
            first, second,
            "seed {seed}: (log length, trace hash) differ between two runs"
        );
    }
}
