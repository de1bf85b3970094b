//! Shard migration with a group leader crashing in the middle of each migration step (issue 13,
//! item 7): while the moving shard is frozen at its old owner, while the new owner pulls it,
//! right after the new owner installed it, and before the old owner deleted its copy.
//!
//! Clients read, put and append on every shard throughout; the test moves shards by joining
//! and leaving groups, watches the two groups' applied state (through the harness, every
//! millisecond of virtual time) until the shard reaches the step, and crashes the leader of
//! the group that acts next. The crashed server comes back either soon (before the rest of
//! its group can elect a new leader) or after the rest of its group finished the move. After every crash the liveness assertion
//! must hold (every shard serving at its owner, no old copy left, within the bound of
//! `testkit::settle`), and at the end the whole history, final reads of every key included,
//! must be linearizable.
//!
//! Sweep it: `RAINKV_SEED=1 RAINKV_SEEDS=500 cargo test --release --test shardkv_liveness`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use rainkv::actors::shardkv::store::ShardStatus;
use rainkv::messages::ctrler::{Gid, ShardConfig, NSHARDS};
use rainkv::testkit::kv::OpLog;
use rainkv::testkit::settle::GroupView;
use rainkv::testkit::shardkv::{ShardKvHarness, NGROUPS};
use rainkv::testkit::{rand_string, run_test, ClusterOptions, Sim};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::time::{sleep, Instant};

/// How long the checker may search (wall time).
const LINEARIZABILITY_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the test looks at the groups for the step: a step lasts at least one commit,
/// two 1 ms hops of the simulated wire.
const LOOK: Duration = Duration::from_millis(1);
/// Give up looking for a step after this long; the liveness assertion judges what follows.
const LOOK_LIMIT: Duration = Duration::from_secs(10);
/// Moves tried per step before the test gives up on catching the shard at it.
const TRIES: usize = 6;
/// Every step is crashed into this many times per seed.
const ROUNDS: usize = 2;
const NCLIENTS: usize = 5;

/// A step of one shard's move from its old owner (the source) to its new owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The source froze it; the destination has not installed it yet.
    Frozen,
    /// The destination waits for it.
    Pulling,
    /// The destination installed it and must still have the source delete its copy.
    Installed,
    /// Installed, and the source still keeps its frozen copy.
    Deleting,
}

/// Which group's leader a step crashes.
enum Side {
    Source,
    Destination,
}

impl Step {
    const ALL: [Step; 4] = [Step::Frozen, Step::Pulling, Step::Installed, Step::Deleting];

    fn seen(self, shard: usize, src: &GroupView, dst: &GroupView) -> bool {
        use ShardStatus::{Confirming, Frozen, Waiting};
        let (at_src, at_dst) = (src.status(shard), dst.status(shard));
        match self {
            Step::Frozen => at_src == Some(Frozen) && matches!(at_dst, None | Some(Waiting)),
            Step::Pulling => at_dst == Some(Waiting),
            Step::Installed => at_dst == Some(Confirming),
            Step::Deleting => at_dst == Some(Confirming) && at_src == Some(Frozen),
        }
    }

    fn victim(self) -> Side {
        match self {
            Step::Frozen | Step::Deleting => Side::Source,
            Step::Pulling | Step::Installed => Side::Destination,
        }
    }
}

fn group_of(cfg: &ShardKvHarness, gid: Gid) -> usize {
    (0..NGROUPS)
        .find(|&gi| cfg.gid(gi) == gid)
        .unwrap_or_else(|| panic!("no group {gid}"))
}

/// Joins or leaves one group (never the last one), so shards move between groups; returns
/// the configs before and after.
async fn reconfigure(
    cfg: &ShardKvHarness,
    joined: &mut Vec<usize>,
    rng: &mut ChaCha8Rng,
) -> (ShardConfig, ShardConfig) {
    let before = cfg.query().await;
    let out: Vec<usize> = (0..NGROUPS).filter(|gi| !joined.contains(gi)).collect();
    let join = joined.len() == 1 || (!out.is_empty() && rng.gen_bool(0.5));
    if join {
        let gi = *out.choose(rng).expect("a group to join");
        cfg.join(gi).await;
        joined.push(gi);
    } else {
        let gi = joined.remove(rng.gen_range(0..joined.len()));
        cfg.leave(gi).await;
    }
    (before, cfg.query().await)
}

/// Looks at the two groups until `shard` is at `step` (true), or the cluster settled first
/// or too long went by (false).
async fn look_for(cfg: &ShardKvHarness, step: Step, shard: usize, src: usize, dst: usize) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < LOOK_LIMIT {
        let views = (cfg.group_view(src).await, cfg.group_view(dst).await);
        if let (Some(s), Some(d)) = views {
            if step.seen(shard, &s, &d) {
                return true;
            }
        }
        if cfg.unsettled().await.is_empty() {
            return false;
        }
        sleep(LOOK).await;
    }
    false
}

/// Moves shards until one is caught at `step`, crashes the leader of the group that acts next
/// there, restarts it, and checks liveness; returns the longest settling time seen.
async fn crash_at(
    cfg: &ShardKvHarness,
    step: Step,
    joined: &mut Vec<usize>,
    rng: &mut ChaCha8Rng,
) -> Duration {
    for _ in 0..TRIES {
        let (before, after) = reconfigure(cfg, joined, rng).await;
        let moving: Vec<usize> = (0..NSHARDS)
            .filter(|&s| before.shards[s] != 0 && after.shards[s] != 0)
            .filter(|&s| before.shards[s] != after.shards[s])
            .collect();
        let Some(&shard) = moving.choose(rng) else {
            cfg.assert_settles().await;
            continue;
        };
        let src = group_of(cfg, before.shards[shard]);
        let dst = group_of(cfg, after.shards[shard]);
        let victim = match step.victim() {
            Side::Source => src,
            Side::Destination => dst,
        };
        let leader = match look_for(cfg, step, shard, src, dst).await {
            true => cfg.group_leader(victim).await,
            false => None,
        };
        let Some(leader) = leader else {
            cfg.assert_settles().await;
            continue;
        };
        println!(
            "  {step:?}: shard {shard} of config {}, {} -> {}: crash {}'s leader, server {leader}",
            after.num,
            cfg.gid(src),
            cfg.gid(dst),
            cfg.gid(victim)
        );
        cfg.shutdown_server(victim, leader);
        let settled = if rng.gen_bool(0.5) {
            // Back before the others can elect a new leader (the shortest election timeout
            // is 300 ms): it restarts mid-migration from what it saved, into the election.
            sleep(Duration::from_millis(rng.gen_range(0..300))).await;
            cfg.start_server(victim, leader).await;
            cfg.assert_settles().await
        } else {
            let settled = cfg.assert_settles().await;
            cfg.start_server(victim, leader).await;
            settled
        };
        return settled;
    }
    panic!("{step:?}: no shard caught at this step in {TRIES} moves");
}

#[test]
fn leader_crash_at_each_migration_step() {
    run_test(
        "leader_crash_at_each_migration_step",
        |sim: Sim| async move {
            let cfg = ShardKvHarness::new(
                &sim,
                ClusterOptions {
                    servers: 3,
                    max_raft_state: Some(1000),
                    ..Default::default()
                },
            )
            .await;
            cfg.begin("Test: a group leader crashes in each migration step")
                .await;
            let op_log = OpLog::new();
            let ka: Vec<String> = (0..NSHARDS).map(|i| i.to_string()).collect();
            let ck = cfg.make_client().await;
            cfg.join(0).await;
            let mut joined = vec![0];
            for k in &ka {
                let v = cfg.rand_string(5);
                cfg.put(&ck, k, &v, Some(&op_log), NCLIENTS as u64).await;
            }

            let done = Rc::new(Cell::new(false));
            let mut clients = Vec::with_capacity(NCLIENTS);
            for i in 0..NCLIENTS {
                let ck1 = cfg.make_client().await;
                let (cfg, done, op_log, ka) =
                    (cfg.clone(), done.clone(), op_log.clone(), ka.clone());
                let mut rng = sim.rng(&format!("client-{i}"));
                let client = i as u64;
                clients.push(actix::spawn(async move {
                    while !done.get() {
                        let key = &ka[rng.gen_range(0..ka.len())];
                        let nv = rand_string(&mut rng, 5);
                        match rng.gen_range(0..10) {
                            0..=4 => cfg.append(&ck1, key, &nv, Some(&op_log), client).await,
                            5 => cfg.put(&ck1, key, &nv, Some(&op_log), client).await,
                            _ => {
                                cfg.get(&ck1, key, Some(&op_log), client).await;
                            }
                        }
                        sleep(Duration::from_millis(rng.gen_range(0..10))).await;
                    }
                }));
            }

            let mut rng = sim.rng("crash-steps");
            let mut worst = Duration::ZERO;
            for _ in 0..ROUNDS {
                for step in Step::ALL {
                    worst = worst.max(crash_at(&cfg, step, &mut joined, &mut rng).await);
                }
            }
            println!(
                "  longest settling after a change: {} ms",
                worst.as_millis()
            );

            done.set(true);
            for client in join_all(clients).await {
                client.expect("a client failed");
            }
            // Final reads: a write lost in a move would show here at the latest.
            for k in &ka {
                cfg.get(&ck, k, Some(&op_log), NCLIENTS as u64).await;
            }
            op_log.check_linearizable(
                "leader_crash_at_each_migration_step",
                LINEARIZABILITY_CHECK_TIMEOUT,
            );
            cfg.assert_settles().await;
            cfg.end().await;
            cfg.cleanup();
        },
    );
}
