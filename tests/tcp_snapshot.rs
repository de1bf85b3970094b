//! A large state on real processes: three `rainkv serve` nodes, one follower down while the
//! other two are loaded with 200 MiB (200 values of 1 MiB; the leader's log is compacted far
//! past the follower). Restarted, the follower catches up by a snapshot sent in 1 MiB chunks;
//! the first time it is killed 20 ms after the leader starts the transfer (it takes about a
//! second) and restarted, so the transfer starts over. Throughout, a client keeps writing without an error, and the leader stays the
//! leader in the same term. At the end the caught-up follower is made leader and every value
//! is read back from it.

#[path = "processes/logged.rs"]
mod logged;
mod processes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use logged::{log_path, spawn_logged, write_slow_election_config, LogsOnFailure};
use processes::bounded::wait_bounded;
use processes::{Scratch, Servers};
use rainkv::deploy::client::ClusterClient;
use rainkv::deploy::cluster_file::ClusterFile;
use rainkv::messages::raft::Role;

/// Values loaded, of [`VALUE_BYTES`] each.
const VALUES: usize = 200;
const VALUE_BYTES: usize = 1 << 20;
/// How long any one operation may take before the test fails.
const OP_LIMIT: Duration = Duration::from_secs(30);
/// How long the wiped follower may take to catch up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

/// The value stored under `big-<i>`: 1 MiB of one letter, a different one per key.
fn value(i: usize) -> Vec<u8> {
    vec![b'a' + (i % 26) as u8; VALUE_BYTES]
}

/// The cluster file, with elections after 1–2 s: loading 200 MiB makes fsyncs slow on a
/// shared machine, and the test is about the leader keeping its place through a catch-up.
fn write_cluster(dir: &Path) -> (PathBuf, ClusterFile) {
    let path = write_slow_election_config(dir, "big-state");
    let cluster = ClusterFile::load(&path).expect("load config");
    (path, cluster)
}

/// Each node's (role, term, last applied), `None` for a node that does not answer.
fn roles(cluster: &ClusterFile) -> Vec<Option<(Role, u64, u64)>> {
    block_on(cluster, |client| async move {
        let reports = client.status(Duration::from_secs(1)).await;
        reports
            .into_iter()
            .map(|r| {
                let raft = r.status.ok()?.raft?;
                Some((raft.role, raft.term, raft.last_applied))
            })
            .collect()
    })
}

/// Runs `f` with a client of `cluster` in an actix system of its own.
fn block_on<T, F, Fut>(cluster: &ClusterFile, f: F) -> T
where
    F: FnOnce(ClusterClient) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let cluster = cluster.clone();
    actix_rt::System::new().block_on(async move {
        let client = ClusterClient::connect(&cluster);
        let out = f(client.clone()).await;
        client.close();
        out
    })
}

/// The leader and its term, waiting up to 15 s.
fn leader(cluster: &ClusterFile) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leaders: Vec<(usize, u64)> = roles(cluster)
            .iter()
            .enumerate()
            .filter_map(|(id, r)| match r {
                Some((Role::Leader, term, _)) => Some((id, *term)),
                _ => None,
            })
            .collect();
        if let Some(&found) = leaders.iter().max_by_key(|(_, term)| *term) {
            return found;
        }
        assert!(Instant::now() < deadline, "no leader within 15 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Puts small values one at a time on a thread of its own until stopped; counts the writes
/// and fails on the first error or on one not acknowledged within [`OP_LIMIT`].
struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<usize>,
}

impl Writer {
    fn start(cluster: &ClusterFile) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let cluster = cluster.clone();
        let thread = std::thread::spawn(move || {
            block_on(&cluster, |client| async move {
                let clerk = client.clerk();
                let mut written = 0;
                while !stopped.load(Ordering::Relaxed) {
                    let put = clerk.put(format!("w{written}"), format!("v{written}"));
                    match tokio::time::timeout(OP_LIMIT, put).await {
                        Ok(Ok(())) => written += 1,
                        Ok(Err(e)) => panic!("put w{written}: {e}"),
                        Err(_) => panic!("put w{written} not acknowledged within {OP_LIMIT:?}"),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                written
            })
        });
        Writer { stop, thread }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the writer failed")
    }
}

#[test]
fn a_lagging_follower_catches_up_200_mib_by_chunked_snapshot() {
    let scratch = Scratch::new("big-state");
    let _logs = LogsOnFailure(&scratch.0);
    let (config, cluster) = write_cluster(&scratch.0);
    let mut servers = Servers(
        (0..3)
            .map(|id| spawn_logged(&config, &scratch.0, id))
            .collect(),
    );
    let (first_leader, _) = leader(&cluster);
    let follower = (first_leader + 1) % 3;
    let _ = servers.0[follower].kill();
    assert!(wait_bounded(&mut servers.0[follower], OP_LIMIT).is_some());

    let loading = Instant::now();
    block_on(&cluster, |client| async move {
        let loaders = (0..4).map(|k| {
            let clerk = client.clerk();
            async move {
                for i in (k..VALUES).step_by(4) {
                    let put = clerk.put(format!("big-{i}"), value(i));
                    match tokio::time::timeout(OP_LIMIT, put).await {
                        Ok(Ok(())) => {}
                        other => panic!("loading big-{i}: {other:?}"),
                    }
                }
            }
        });
        join_all(loaders).await;
    });
    println!(
        "  loaded {VALUES} x {} KiB in {:?}",
        VALUE_BYTES >> 10,
        loading.elapsed()
    );

    // Loading 1 MiB values with one node down may cost an election on a busy machine; from
    // here on, through the catch-up, the leader must keep its place.
    let (leader_id, term) = leader(&cluster);
    let writer = Writer::start(&cluster);
    let target = roles(&cluster)[leader_id].map_or(0, |(_, _, applied)| applied);
    let leader_log = log_path(&scratch.0, leader_id);
    let started = format!("InstallSnapshot to {follower} at");
    let transfers = || {
        let log = std::fs::read_to_string(&leader_log).unwrap_or_default();
        log.lines().filter(|line| line.contains(&started)).count()
    };
    let before = transfers();
    servers.0[follower] = spawn_logged(&config, &scratch.0, follower);
    // Killed in the middle of the transfer: 20 ms after it started (200 MiB take longer).
    let deadline = Instant::now() + OP_LIMIT;
    while transfers() == before {
        assert!(
            Instant::now() < deadline,
            "node {leader_id} started no snapshot transfer to node {follower}; the nodes now: {:?}",
            roles(&cluster)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(20));
    let _ = servers.0[follower].kill();
    assert!(wait_bounded(&mut servers.0[follower], OP_LIMIT).is_some());
    let interrupted = roles(&cluster);
    let restarted = Instant::now();
    servers.0[follower] = spawn_logged(&config, &scratch.0, follower);
    let caught_up = loop {
        let now = roles(&cluster);
        if let Some((_, _, applied)) = now[follower] {
            if applied >= target {
                break restarted.elapsed();
            }
        }
        assert!(
            restarted.elapsed() < CATCH_UP_LIMIT,
            "node {follower} did not catch up within {CATCH_UP_LIMIT:?}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let written = writer.stop();
    println!(
        "  node {follower} restarted (interrupted once, cluster then {interrupted:?}): \
         caught up with index {target} in {caught_up:?}; {written} writes meanwhile, none failed"
    );
    assert_eq!(
        roles(&cluster)[leader_id].map(|(role, term, _)| (role, term)),
        Some((Role::Leader, term)),
        "node {leader_id} stopped leading in term {term}"
    );

    // The caught-up follower serves every value.
    let transferred = block_on(&cluster, |client| async move {
        client
            .transfer_leadership(follower, Duration::from_secs(10))
            .await
    });
    assert!(
        transferred.is_ok(),
        "transfer to node {follower}: {transferred:?}"
    );
    let wrong: Vec<usize> = block_on(&cluster, |client| async move {
        let clerk = client.clerk();
        let mut wrong = Vec::new();
        for i in 0..VALUES {
            let read = tokio::time::timeout(OP_LIMIT, clerk.get(format!("big-{i}"))).await;
            if !matches!(read, Ok(Ok(Some(v))) if v[..] == value(i)[..]) {
                wrong.push(i);
            }
        }
        wrong
    });
    assert!(wrong.is_empty(), "values read back wrong: {wrong:?}");
    assert_eq!(leader(&cluster).0, follower);
}
