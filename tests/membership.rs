//! Membership change under load in the simulation (Raft thesis chapter 4): a KV cluster of
//! three voters takes two new servers as learners, promotes them and removes two of the
//! original voters, one server at a time, on an unreliable network while servers crash and
//! restart and clients keep writing. Every history is checked for linearizability, and at the
//! end the removed servers are shut down for good: the new members alone serve.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use rainkv::messages::raft::GetState;
use rainkv::testkit::kv::{KvHarness, OpLog};
use rainkv::testkit::{run_test, ClusterOptions, Sim};
use rainkv::{ChangeMembership, Membership, MembershipChange};
use rand::Rng;
use tokio::time::{sleep, Instant};

/// How long the checker may search (wall time).
const LINEARIZABILITY_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Servers in the test; the first `VOTERS` are the cluster's first members.
const SERVERS: usize = 5;
const VOTERS: usize = 3;

/// The membership the leader with the highest term holds, and that leader.
async fn leader_membership(cfg: &KvHarness) -> Option<(usize, Membership)> {
    let mut best: Option<(u64, usize, Membership)> = None;
    for i in 0..SERVERS {
        let Some(raft) = cfg.cluster().raft(i) else {
            continue;
        };
        let Ok(state) = raft.send(GetState).await else {
            continue;
        };
        if state.is_leader() && best.as_ref().is_none_or(|(term, ..)| state.term > *term) {
            best = Some((state.term, i, state.membership));
        }
    }
    best.map(|(_, i, m)| (i, m))
}

/// Makes `change` through whichever server leads, retrying through leader changes, refusals
/// (busy, lagging) and lost answers, until the leader's membership passes `made` and the
/// change's commit was acknowledged (or the next change finds it committed).
async fn change(cfg: &KvHarness, change: MembershipChange, made: impl Fn(&Membership) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "{change:?} not made within 60 s");
        if let Some((leader, membership)) = leader_membership(cfg).await {
            if made(&membership) {
                return;
            }
            if let Some(raft) = cfg.cluster().raft(leader) {
                if let Ok(Ok(_)) = raft.send(ChangeMembership(change.clone())).await {
                    return;
                }
            }
        }
        sleep(Duration::from_millis(100)).await;
    }
}

fn learner(id: usize) -> MembershipChange {
    MembershipChange::AddLearner {
        id,
        contact: String::new(),
    }
}

#[test]
fn replace_two_voters_under_load_unreliable_crashes_linearizable() {
    let name = "replace_two_voters_under_load_unreliable_crashes_linearizable";
    run_test(name, |sim: Sim| async move {
        let cfg = KvHarness::new(
            &sim,
            ClusterOptions {
                servers: SERVERS,
                reliable: false,
                max_raft_state: Some(2000),
                initial_voters: Some(VOTERS),
                ..Default::default()
            },
        )
        .await;
        cfg.begin("Test: membership change under load, unreliable net, restarts")
            .await;
        let op_log = OpLog::new();
        let done = Rc::new(Cell::new(false));

        let mut clients = Vec::new();
        for cli in 0..5u64 {
            let ck = cfg.make_client(&cfg.all()).await;
            let (cfg, op_log, done) = (cfg.clone(), op_log.clone(), done.clone());
            let mut rng = sim.rng(&format!("client-{cli}"));
            clients.push(actix::spawn(async move {
                let mut j = 0;
                while !done.get() {
                    let key = rng.gen_range(0..3).to_string();
                    if rng.gen_bool(0.6) {
                        let value = format!("x {cli} {j} y");
                        cfg.append(&ck, &key, &value, Some(&op_log), cli).await;
                        j += 1;
                    } else {
                        cfg.get(&ck, &key, Some(&op_log), cli).await;
                    }
                }
                cfg.delete_client(&ck);
            }));
        }

        // Crash and restart one server at a time, never two at once.
        let crasher = {
            let (cfg, done) = (cfg.clone(), done.clone());
            let mut rng = sim.rng("crasher");
            actix::spawn(async move {
                while !done.get() {
                    sleep(Duration::from_millis(rng.gen_range(200..900))).await;
                    let victim = rng.gen_range(0..SERVERS);
                    cfg.shutdown_server(victim);
                    sleep(Duration::from_millis(rng.gen_range(100..800))).await;
                    cfg.start_server(victim).await;
                    cfg.connect_all();
                }
            })
        };

        sleep(Duration::from_secs(1)).await;
        change(&cfg, learner(3), |m| {
            m.learners.contains_key(&3) || m.is_voter(3)
        })
        .await;
        change(&cfg, MembershipChange::Promote(3), |m| m.is_voter(3)).await;
        change(&cfg, learner(4), |m| {
            m.learners.contains_key(&4) || m.is_voter(4)
        })
        .await;
        change(&cfg, MembershipChange::Promote(4), |m| m.is_voter(4)).await;
        change(&cfg, MembershipChange::Remove(0), |m| !m.contains(0)).await;
        change(&cfg, MembershipChange::Remove(1), |m| !m.contains(1)).await;
        sleep(Duration::from_secs(1)).await;

        done.set(true);
        crasher.await.expect("crasher");
        for client in join_all(clients).await {
            client.expect("client");
        }
        cfg.connect_all();

        // The removed servers go for good; the new members alone serve a write.
        for gone in [0, 1] {
            cfg.shutdown_server(gone);
        }
        let ck = cfg.make_client(&cfg.all()).await;
        cfg.put(&ck, "after", "removal", Some(&op_log), 99).await;
        cfg.check(&ck, "after", "removal").await;
        let expected: Vec<usize> = vec![2, 3, 4];
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 2..SERVERS {
            loop {
                let raft = cfg.cluster().raft(i).expect("a member is up");
                let state = raft.send(GetState).await.expect("alive");
                let voters: Vec<usize> = state.membership.voters.keys().copied().collect();
                if voters == expected && state.membership.learners.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "server {i} still has voters {voters:?}"
                );
                sleep(Duration::from_millis(100)).await;
            }
        }
        cfg.end().await;
        op_log.check_linearizable(name, LINEARIZABILITY_CHECK_TIMEOUT);
        cfg.cleanup();
    });
}
