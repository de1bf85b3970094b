//! RainKV over loopback TCP in one process: KV servers, Raft peers and clerks unchanged, the
//! simulated network replaced by the TCP transport. Real time; every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use rainkv::actors::tcp::{client_end, Link};
use rainkv::deploy::demo::{run_demo, DemoOptions, DemoProgress, Verdict};
use rainkv::deploy::local::{LocalCluster, LocalOptions};
use rainkv::deploy::node::Handoff;
use rainkv::messages::admin::StatusArgs;
use rainkv::messages::net::RpcError;
use rainkv::messages::raft::InstallSnapshotArgs;
use rainkv::messages::rsm::Health;
use tokio::time::{sleep, timeout, Instant};

/// Every test ends within this, whatever goes wrong.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long a cluster may take to elect a leader.
const ELECTION_LIMIT: Duration = Duration::from_secs(5);

async fn bounded<F: std::future::Future>(test: F) -> F::Output {
    timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit")
}

async fn cluster(options: LocalOptions) -> LocalCluster {
    let _ = env_logger::builder().is_test(true).try_init();
    let cluster = LocalCluster::start(options).await.expect("cluster starts");
    let leader = cluster.client().wait_for_leader(ELECTION_LIMIT).await;
    assert!(leader.is_some(), "no leader within {ELECTION_LIMIT:?}");
    cluster
}

/// Waits until node `i` has applied at least `index`.
async fn applied_at_least(cluster: &LocalCluster, i: usize, index: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reports = cluster.client().status(Duration::from_millis(500)).await;
        let applied = reports[i]
            .status
            .as_ref()
            .map(|s| s.raft.map_or(0, |r| r.last_applied));
        if applied.is_ok_and(|a| a >= index) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {i} did not apply index {index}: {:?}",
            reports[i]
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[actix::test]
async fn basic_operations_and_status_over_tcp() {
    bounded(async {
        let mut cluster = cluster(LocalOptions::default()).await;
        let clerk = cluster.client().clerk();
        assert_eq!(clerk.get("missing").await, Ok(None));
        clerk.put("a", "1").await.expect("put");
        clerk.append("a", "2").await.expect("append");
        clerk.append("b", "x").await.expect("append");
        assert_eq!(clerk.get("a").await, Ok(Some("12".into())));
        assert_eq!(clerk.get("b").await, Ok(Some("x".into())));
        // Another clerk sees the same state.
        let other = cluster.client().clerk();
        assert_eq!(other.get("a").await, Ok(Some("12".into())));

        let reports = cluster.client().status(Duration::from_secs(1)).await;
        let statuses: Vec<_> = reports
            .iter()
            .map(|r| r.status.clone().expect("every node answers"))
            .collect();
        let leaders = statuses.iter().filter(|s| s.is_leader()).count();
        assert_eq!(leaders, 1, "{statuses:?}");
        for (i, s) in statuses.iter().enumerate() {
            assert_eq!(s.id, i);
            assert_eq!(s.health, Health::Serving);
            let raft = s.raft.expect("its Raft peer runs");
            assert!(raft.last_applied <= raft.commit_index, "{s:?}");
        }
        cluster.shutdown().await;
    })
    .await;
}

#[actix::test]
async fn many_concurrent_clerks_each_see_their_own_appends_in_order() {
    bounded(async {
        let mut cluster = cluster(LocalOptions::default()).await;
        let clients = (0..16).map(|c| {
            let clerk = cluster.client().clerk();
            async move {
                let key = format!("client-{c}");
                let mut expected = String::new();
                for j in 0..25 {
                    let piece = format!("[{c}.{j}]");
                    expected.push_str(&piece);
                    clerk.append(key.clone(), piece).await.expect("append");
                }
                assert_eq!(clerk.get_string(key).await, Ok(Some(expected)));
                // Everyone also appends to one shared key.
                let mine = format!("<{c}>");
                clerk.append("shared", mine).await.expect("append");
            }
        });
        join_all(clients).await;
        let shared = cluster.client().clerk().get_string("shared").await;
        let shared = shared.expect("get").unwrap_or_default();
        for c in 0..16 {
            assert_eq!(shared.matches(&format!("<{c}>")).count(), 1, "{shared}");
        }
        cluster.shutdown().await;
    })
    .await;
}

#[actix::test]
async fn a_killed_node_is_unreachable_and_a_restarted_one_catches_up() {
    bounded(async {
        let mut cluster = cluster(LocalOptions::default()).await;
        let clerk = cluster.client().clerk();
        clerk.put("k", "before").await.expect("put");
        let leader = cluster.leader().await.expect("leader");
        let victim = (leader + 1) % cluster.len();
        cluster.kill(victim).await;

        // Calls to the dead node fail Unreachable, quickly.
        let end = cluster.client().ends()[victim].clone();
        for _ in 0..3 {
            let started = Instant::now();
            assert_eq!(end.call(&StatusArgs).await, Err(RpcError::Unreachable));
            assert!(started.elapsed() < Duration::from_secs(1));
        }
        // The other two still serve.
        for i in 0..20 {
            clerk.append("k", format!(" {i}")).await.expect("append");
        }
        let expected: String = std::iter::once("before".to_string())
            .chain((0..20).map(|i| format!(" {i}")))
            .collect();
        assert_eq!(clerk.get_string("k").await, Ok(Some(expected.clone())));

        // Back on its old ports: its peers reconnect, it catches up, clients reach it again.
        cluster.restart(victim).await.expect("restart");
        let reports = cluster.client().status(Duration::from_secs(1)).await;
        let commit = reports
            .iter()
            .filter_map(|r| r.status.as_ref().ok())
            .filter_map(|s| s.raft.map(|r| r.commit_index))
            .max()
            .unwrap_or(0);
        applied_at_least(&cluster, victim, commit).await;
        // With the old leader gone too, the restarted node is needed for a majority.
        cluster.kill(leader).await;
        assert_eq!(clerk.get_string("k").await, Ok(Some(expected)));
        cluster.shutdown().await;
    })
    .await;
}

/// Every node killed, then every node restarted from its data directory: nothing acknowledged
/// is lost, with snapshots and log tails both in play.
#[actix::test]
async fn a_cluster_restarted_from_its_data_directories_keeps_its_state() {
    bounded(async {
        let options = LocalOptions {
            max_raft_state: 4096,
            ..LocalOptions::default()
        };
        let mut cluster = cluster(options).await;
        let clerk = cluster.client().clerk();
        for i in 0..200 {
            let (key, value) = (format!("k{}", i % 20), format!("v{i}"));
            clerk.put(key, value).await.expect("put");
        }
        for i in 0..cluster.len() {
            cluster.kill(i).await;
        }
        for i in 0..cluster.len() {
            cluster
                .restart(i)
                .await
                .expect("restart from the data directory");
        }
        for i in 180..200 {
            let value = clerk.get_string(format!("k{}", i % 20)).await;
            assert_eq!(value, Ok(Some(format!("v{i}"))));
        }
        cluster.shutdown().await;
    })
    .await;
}

#[actix::test]
async fn a_cut_off_leader_is_replaced_and_rejoins_after_healing() {
    bounded(async {
        let mut cluster = cluster(LocalOptions::default()).await;
        let clerk = cluster.client().clerk();
        clerk.put("k", "0").await.expect("put");
        let old = cluster.leader().await.expect("leader");
        cluster.isolate(old, true);
        // The majority elects a new leader and goes on; the clerk finds it.
        clerk.put("k", "1").await.expect("put");
        let deadline = Instant::now() + ELECTION_LIMIT;
        let new = loop {
            match cluster.leader().await {
                Some(l) if l != old => break l,
                _ => assert!(Instant::now() < deadline, "no new leader"),
            }
            sleep(Duration::from_millis(50)).await;
        };
        assert_ne!(new, old);
        cluster.isolate(old, false);
        clerk.append("k", "2").await.expect("append");
        assert_eq!(clerk.get("k").await, Ok(Some("12".into())));
        let reports = cluster.client().status(Duration::from_secs(1)).await;
        let commit = reports[new]
            .status
            .as_ref()
            .ok()
            .and_then(|s| s.raft.map(|r| r.commit_index))
            .unwrap_or(0);
        applied_at_least(&cluster, old, commit).await;
        cluster.shutdown().await;
    })
    .await;
}

#[actix::test]
async fn a_lagging_node_gets_a_snapshot_over_the_bulk_lane() {
    bounded(async {
        // Tiny threshold: the leader compacts its log, so a node that missed it all must be
        // sent a snapshot; 200 values of 1 KiB make that snapshot larger than the 64 KiB
        // bulk threshold (snapshots are taken as the log since the last one outgrows it:
        // at about 4, 8, ..., 128 KiB of state).
        let options = LocalOptions {
            max_raft_state: 4096,
            ..LocalOptions::default()
        };
        let mut cluster = cluster(options).await;
        let clerk = cluster.client().clerk();
        let leader = cluster.leader().await.expect("leader");
        let lagging = (leader + 1) % cluster.len();
        cluster.kill(lagging).await;
        let value = "v".repeat(1024);
        for i in 0..200 {
            let key = format!("key-{i}");
            clerk.put(key, value.clone()).await.expect("put");
        }
        cluster.restart(lagging).await.expect("restart");
        let reports = cluster.client().status(Duration::from_secs(1)).await;
        let commit = reports[leader]
            .status
            .as_ref()
            .ok()
            .and_then(|s| s.raft.map(|r| r.commit_index))
            .unwrap_or(0);
        applied_at_least(&cluster, lagging, commit).await;
        // The snapshot went on a bulk lane to the lagging node (the leader's, whichever node
        // led when it was sent: a busy machine can delay a heartbeat into an election).
        let mut bulk_lanes = Vec::new();
        for i in (0..cluster.len()).filter(|&i| i != lagging) {
            let link = cluster
                .node(i)
                .expect("running")
                .peer_link_status(lagging)
                .await;
            bulk_lanes.push(link.map(|l| l.bulk));
        }
        assert!(bulk_lanes.contains(&Some("up")), "{bulk_lanes:?}");
        // Both lanes reached the lagging node. The leader may have compacted past it before
        // it came back and sent the snapshot first; the control lane then connects with the
        // next heartbeat.
        let node = cluster.node(lagging).expect("running");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut stats = node.port_stats().await;
        while stats.peer.accepted < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stats = node.port_stats().await;
        }
        assert!(stats.peer.accepted >= 2, "{stats:?}");
        // The snapshot holds the data: with the leader gone, the lagging node is needed.
        cluster.kill(leader).await;
        assert_eq!(clerk.get_string("key-0").await, Ok(Some(value.clone())));
        assert_eq!(clerk.get_string("key-199").await, Ok(Some(value)));
        cluster.shutdown().await;
    })
    .await;
}

#[actix::test]
async fn the_demo_runs_to_a_linearizable_verdict() {
    bounded(async {
        let _ = env_logger::builder().is_test(true).try_init();
        let options = DemoOptions {
            duration: Duration::from_secs(5),
            clients: 4,
            keys: 4,
            check_timeout: Duration::from_secs(20),
            ..DemoOptions::default()
        };
        let mut lines = Vec::new();
        let report = run_demo(&options, &mut |progress| match progress {
            DemoProgress::Note(line) => lines.push(line.to_string()),
            DemoProgress::Tick(tick) if tick.second => lines.push(tick.line()),
            DemoProgress::Tick(_) => {}
        })
        .await
        .expect("the demo runs");
        assert_eq!(report.verdict, Verdict::Linearizable, "{lines:#?}");
        assert!(report.ops > 100, "only {} operations", report.ops);
        assert_eq!(report.faults.len(), 6, "{:#?}", report.faults);
        let count = |what: &str| report.faults.iter().filter(|f| f.contains(what)).count();
        let counts = [
            count("killed the leader"),
            count("restarted node"),
            count("cut the leader"),
            count("healed node"),
        ];
        assert_eq!(counts, [2, 2, 1, 1], "{:#?}", report.faults);
    })
    .await;
}

/// A node that meets a snapshot it cannot decode halts, and says so in its status, while the
/// other two go on serving.
#[actix::test]
async fn a_halted_node_says_why_in_its_status() {
    bounded(async {
        let mut cluster = cluster(LocalOptions::default()).await;
        let clerk = cluster.client().clerk();
        clerk.put("a", "1").await.expect("put");
        let (leader, state) = cluster
            .client()
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("a leader");
        let victim = (leader + 1) % 3;
        // A rogue peer of a later term sends the victim a snapshot that is not one.
        let config = cluster.config();
        let link = Link::start(config.nodes[victim].peer, Arc::new(config.tcp_settings()));
        let rogue = client_end("rogue", &link);
        let _ = rogue
            .call(&InstallSnapshotArgs {
                term: state.term + 100,
                leader_id: leader,
                last_included_index: state.commit_index + 100,
                last_included_term: state.term + 100,
                membership: rainkv::Membership::with_voters(3),
                offset: 0,
                done: true,
                data: b"not a snapshot".to_vec(),
            })
            .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            let reports = cluster.client().status(Duration::from_secs(1)).await;
            if let Ok(status) = &reports[victim].status {
                if let Health::Halted { reason } = &status.health {
                    break (reason.clone(), status.raft);
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {victim} did not halt: {reports:?}"
            );
            sleep(Duration::from_millis(50)).await;
        };
        assert!(status.0.contains("snapshot"), "halted for: {}", status.0);
        assert_eq!(status.1, None, "its Raft peer has stopped");
        clerk.put("b", "2").await.expect("the other two serve");
        assert_eq!(clerk.get("b").await, Ok(Some("2".into())));
        cluster.shutdown().await;
    })
    .await;
}

#[actix::test]
async fn a_stopping_leader_hands_over_to_a_follower_it_reaches() {
    bounded(async {
        let mut cluster = cluster(LocalOptions::default()).await;
        let clerk = cluster.client().clerk();
        clerk.put("a", "1").await.expect("put");
        let leader = cluster.leader().await.expect("a leader");
        let (gone, left) = ((leader + 1) % 3, (leader + 2) % 3);
        let follower = cluster.node(left).expect("runs");
        assert_eq!(follower.hand_off_leadership().await, Handoff::NotLeader);

        // With one follower gone, the one the leader still reaches takes over.
        cluster.kill(gone).await;
        sleep(Duration::from_millis(200)).await;
        let node = cluster.node(leader).expect("runs");
        match node.hand_off_leadership().await {
            Handoff::HandedOver { to, .. } => assert_eq!(to, left),
            other => panic!("node {leader} did not hand over to node {left}: {other}"),
        }
        assert_eq!(cluster.leader().await, Some(left));
        clerk.put("b", "2").await.expect("the new leader serves");

        // A leader that reaches nobody says so at once instead of waiting.
        cluster.isolate(left, true);
        let asked = Instant::now();
        let outcome = cluster
            .node(left)
            .expect("runs")
            .hand_off_leadership()
            .await;
        assert_eq!(
            outcome,
            Handoff::Failed("no follower is reachable".into()),
            "node {left}"
        );
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "{:?}",
            asked.elapsed()
        );
        cluster.shutdown().await;
    })
    .await;
}
