//! Membership change in the simulation (Raft thesis chapter 4). A KV cluster of three voters
//! takes two new servers as learners, promotes them and removes two of the original voters,
//! one server at a time, on an unreliable network while servers crash and restart, clients
//! keep writing and servers snapshot every 2 000 bytes of log; at the end the removed servers
//! are shut down for good and the new members alone serve. Five voters lose two the same
//! way. Two changes asked for at once: one is refused. A removed server cut off before it
//! heard of its removal campaigns in vain once back. Every history is checked for
//! linearizability.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use rainkv::messages::raft::{GetState, RaftState};
use rainkv::testkit::kv::{KvHarness, OpLog};
use rainkv::testkit::{run_test, ClusterOptions, Sim};
use rainkv::{ChangeMembership, Membership, MembershipChange, MembershipError};
use rand::Rng;
use tokio::time::{sleep, Instant};

/// How long the checker may search (wall time).
const LINEARIZABILITY_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Servers in every test (not all of them members at first).
const SERVERS: usize = 5;

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

/// Server `i`'s Raft state (it must be up).
async fn state(cfg: &KvHarness, i: usize) -> RaftState {
    let raft = cfg.cluster().raft(i).expect("up");
    raft.send(GetState).await.expect("alive")
}

fn learner(id: usize) -> MembershipChange {
    MembershipChange::AddLearner {
        id,
        contact: String::new(),
    }
}

/// Clients on three random keys, appending and reading until `done`; every operation goes
/// into `op_log`.
async fn start_clients(
    cfg: &KvHarness,
    sim: &Sim,
    op_log: &OpLog,
    done: &Rc<Cell<bool>>,
) -> Vec<tokio::task::JoinHandle<()>> {
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
    clients
}

/// Crashes one server at a time among `servers` and restarts it soon after, until `done`.
fn start_crasher(
    cfg: &KvHarness,
    sim: &Sim,
    servers: Vec<usize>,
    done: &Rc<Cell<bool>>,
) -> tokio::task::JoinHandle<()> {
    let (cfg, done) = (cfg.clone(), done.clone());
    let mut rng = sim.rng("crasher");
    actix::spawn(async move {
        while !done.get() {
            sleep(Duration::from_millis(rng.gen_range(200..900))).await;
            let victim = servers[rng.gen_range(0..servers.len())];
            cfg.shutdown_server(victim);
            sleep(Duration::from_millis(rng.gen_range(100..800))).await;
            cfg.start_server(victim).await;
            cfg.connect_all();
        }
    })
}

/// Stops the load, shuts the `removed` servers down for good, has the rest serve a write and
/// agree on `voters`, and checks the whole history.
async fn finish(
    cfg: &KvHarness,
    name: &str,
    op_log: &OpLog,
    done: &Rc<Cell<bool>>,
    load: Vec<tokio::task::JoinHandle<()>>,
    removed: &[usize],
    voters: &[usize],
) {
    done.set(true);
    for task in join_all(load).await {
        task.expect("a client or the crasher failed");
    }
    cfg.connect_all();
    for &gone in removed {
        cfg.shutdown_server(gone);
    }
    let ck = cfg.make_client(&cfg.all()).await;
    cfg.put(&ck, "after", "removal", Some(op_log), 99).await;
    cfg.check(&ck, "after", "removal").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for &i in voters {
        loop {
            let raft = cfg.cluster().raft(i).expect("a member is up");
            let state = raft.send(GetState).await.expect("alive");
            let now: Vec<usize> = state.membership.voters.keys().copied().collect();
            if now == voters && state.membership.learners.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server {i} still has voters {now:?}"
            );
            sleep(Duration::from_millis(100)).await;
        }
    }
    cfg.end().await;
    op_log.check_linearizable(name, LINEARIZABILITY_CHECK_TIMEOUT);
    cfg.cleanup();
}

fn options(servers: usize, voters: usize) -> ClusterOptions {
    ClusterOptions {
        servers,
        reliable: false,
        max_raft_state: Some(2000),
        initial_voters: Some(voters),
        ..Default::default()
    }
}

#[test]
fn replace_two_voters_under_load_unreliable_crashes_linearizable() {
    let name = "replace_two_voters_under_load_unreliable_crashes_linearizable";
    run_test(name, |sim: Sim| async move {
        let cfg = KvHarness::new(&sim, options(SERVERS, 3)).await;
        cfg.begin("Test: replace two of three voters, unreliable net, restarts")
            .await;
        let (op_log, done) = (OpLog::new(), Rc::new(Cell::new(false)));
        let mut load = start_clients(&cfg, &sim, &op_log, &done).await;
        load.push(start_crasher(&cfg, &sim, (0..5).collect(), &done));

        sleep(Duration::from_secs(1)).await;
        change(&cfg, learner(3), |m| m.contains(3)).await;
        change(&cfg, MembershipChange::Promote(3), |m| m.is_voter(3)).await;
        change(&cfg, learner(4), |m| m.contains(4)).await;
        change(&cfg, MembershipChange::Promote(4), |m| m.is_voter(4)).await;
        change(&cfg, MembershipChange::Remove(0), |m| !m.contains(0)).await;
        change(&cfg, MembershipChange::Remove(1), |m| !m.contains(1)).await;
        sleep(Duration::from_secs(1)).await;
        finish(&cfg, name, &op_log, &done, load, &[0, 1], &[2, 3, 4]).await;
    });
}

#[test]
fn remove_two_of_five_under_load_unreliable_crashes_linearizable() {
    let name = "remove_two_of_five_under_load_unreliable_crashes_linearizable";
    run_test(name, |sim: Sim| async move {
        let cfg = KvHarness::new(&sim, options(SERVERS, SERVERS)).await;
        cfg.begin("Test: remove two of five voters, unreliable net, restarts")
            .await;
        let (op_log, done) = (OpLog::new(), Rc::new(Cell::new(false)));
        let mut load = start_clients(&cfg, &sim, &op_log, &done).await;
        load.push(start_crasher(&cfg, &sim, (0..5).collect(), &done));

        sleep(Duration::from_secs(1)).await;
        // Whoever leads may be removed: it steps down once its removal commits.
        let (first, _) = leader_membership(&cfg)
            .await
            .unwrap_or((0, Membership::default()));
        let second = (first + 2) % 5;
        change(&cfg, MembershipChange::Remove(first), |m| {
            !m.contains(first)
        })
        .await;
        change(&cfg, MembershipChange::Remove(second), |m| {
            !m.contains(second)
        })
        .await;
        sleep(Duration::from_secs(1)).await;
        let voters: Vec<usize> = (0..5).filter(|i| ![first, second].contains(i)).collect();
        finish(&cfg, name, &op_log, &done, load, &[first, second], &voters).await;
    });
}

#[test]
fn of_two_changes_asked_at_once_one_is_refused() {
    run_test(
        "of_two_changes_asked_at_once_one_is_refused",
        |sim: Sim| async move {
            let cfg = KvHarness::new(&sim, options(SERVERS, 3)).await;
            let leader = loop {
                if let Some((leader, _)) = leader_membership(&cfg).await {
                    break leader;
                }
                sleep(Duration::from_millis(50)).await;
            };
            let raft = cfg.cluster().raft(leader).expect("up");
            let (a, b) = futures_util::join!(
                raft.send(ChangeMembership(learner(3))),
                raft.send(ChangeMembership(learner(4)))
            );
            let outcomes = [a.expect("alive"), b.expect("alive")];
            assert!(
                matches!(
                    outcomes,
                    [Ok(_), Err(MembershipError::Busy)] | [Err(MembershipError::Busy), Ok(_)]
                ),
                "{outcomes:?}"
            );
            cfg.cleanup();
        },
    );
}

#[test]
fn a_removed_server_cut_off_before_it_knew_campaigns_in_vain() {
    let name = "a_removed_server_cut_off_before_it_knew_campaigns_in_vain";
    run_test(name, |sim: Sim| async move {
        let cfg = KvHarness::new(
            &sim,
            ClusterOptions {
                reliable: true,
                ..options(5, 5)
            },
        )
        .await;
        cfg.begin("Test: a removed server that never heard of it")
            .await;
        let (leader, _) = loop {
            if let Some(found) = leader_membership(&cfg).await {
                break found;
            }
            sleep(Duration::from_millis(50)).await;
        };
        let gone = (leader + 1) % 5;
        let rest: Vec<usize> = (0..5).filter(|i| *i != gone).collect();
        cfg.partition(&rest, &[gone]);
        change(&cfg, MembershipChange::Remove(gone), |m| !m.contains(gone)).await;
        // Long enough for it to time out many times while cut off, then back.
        sleep(Duration::from_secs(3)).await;
        let before = state(&cfg, leader).await;
        cfg.connect_all();
        let (op_log, done) = (OpLog::new(), Rc::new(Cell::new(false)));
        let load = start_clients(&cfg, &sim, &op_log, &done).await;
        sleep(Duration::from_secs(5)).await;
        let after = state(&cfg, leader).await;
        assert!(after.is_leader(), "the leader lost its place");
        assert_eq!(
            after.term, before.term,
            "the removed server forced a new term"
        );
        finish(&cfg, name, &op_log, &done, load, &[gone], &rest).await;
    });
}
