//! Liveness and safety of production Raft (pre-vote, check-quorum, ReadIndex and lease reads,
//! leader transfer) under the faults plain Raft does not survive: a leader that can send but
//! not hear, a node back from a long isolation, non-transitive cuts, a leader left in a
//! minority, a stuck disk. KV clusters with clients, seeded and in virtual time like the rest.
//!
//! `RAINKV_PLAIN_RAFT=1` runs them with pre-vote and check-quorum off: the first three and
//! `check_quorum_steps_down` then fail, which is what the features are for.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use rainkv::messages::raft::{GetState, RaftState, TransferLeadership};
use rainkv::storage::Persister;
use rainkv::testkit::kv::{KvHarness, OpLog, TestClerk};
use rainkv::testkit::{run_test, ClusterOptions, Sim, StorageKind};
use rainkv::RaftConfig;
use tokio::time::{sleep, timeout, Instant};

/// The Raft timing every cluster here runs with (the defaults).
fn raft() -> RaftConfig {
    ClusterOptions::default().raft
}

fn heartbeat() -> Duration {
    raft().heartbeat_interval
}

/// The longest election timeout a peer may draw.
fn election_max() -> Duration {
    raft().election_timeout.end
}

/// How long the checker may search (wall time).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

fn options(servers: usize) -> ClusterOptions {
    ClusterOptions {
        servers,
        ..ClusterOptions::default()
    }
}

/// Server i's Raft state, if it runs.
async fn state(cfg: &KvHarness, i: usize) -> Option<RaftState> {
    cfg.cluster().raft(i)?.send(GetState).await.ok()
}

/// Polls every millisecond until `f` holds, for at most `limit`; how long it took.
async fn time_until<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() <= limit {
        if f().await {
            return Some(start.elapsed());
        }
        sleep(Duration::from_millis(1)).await;
    }
    None
}

/// What a stopped writer did.
struct Written {
    client: usize,
    /// When each append completed, in order.
    completions: Vec<Instant>,
}

impl Written {
    /// The longest time between two completions (or from `from` to the first) within
    /// `[from, to]`.
    fn longest_pause(&self, from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut longest = Duration::ZERO;
        for &t in self.completions.iter().filter(|&&t| t >= from && t <= to) {
            longest = longest.max(t - last);
            last = t;
        }
        longest.max(to - last)
    }
}

/// Starts a writer: a client appending `x {client} {j} y` to key `w{client}` through `ck` in a
/// loop, recording each operation and when it completed, until stopped.
fn start_writer(cfg: &KvHarness, ck: TestClerk, client: usize, log: &OpLog) -> WriterHandle {
    let done = Rc::new(RefCell::new(Vec::new()));
    let stop = Rc::new(RefCell::new(false));
    let (cfg, log) = (cfg.clone(), log.clone());
    let (d, s) = (done.clone(), stop.clone());
    let task = actix::spawn(async move {
        let mut j = 0;
        while !*s.borrow() {
            let value = format!("x {client} {j} y");
            cfg.append(
                &ck,
                &format!("w{client}"),
                &value,
                Some(&log),
                client as u64,
            )
            .await;
            d.borrow_mut().push(Instant::now());
            j += 1;
        }
    });
    WriterHandle {
        client,
        done,
        stop,
        task,
    }
}

/// A running writer (see [`start_writer`]).
struct WriterHandle {
    client: usize,
    done: Rc<RefCell<Vec<Instant>>>,
    stop: Rc<RefCell<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl WriterHandle {
    /// Completions so far.
    fn completed(&self) -> usize {
        self.done.borrow().len()
    }

    /// Lets the current append finish, then stops.
    async fn stop(self) -> Written {
        *self.stop.borrow_mut() = true;
        self.task.await.expect("writer task");
        Written {
            client: self.client,
            completions: self.done.borrow().clone(),
        }
    }
}

/// Every acknowledged append of each writer is in its key exactly once, in order, and the
/// whole history is linearizable.
async fn check_nothing_lost(cfg: &KvHarness, written: &[Written], log: &OpLog, test: &str) {
    let ck = cfg.make_client(&cfg.all()).await;
    for w in written {
        let v = cfg.get(&ck, &format!("w{}", w.client), None, 0).await;
        let mut last = None;
        for j in 0..w.completions.len() {
            let wanted = format!("x {} {j} y", w.client);
            let off = v.find(&wanted).unwrap_or_else(|| {
                panic!("acknowledged append {wanted:?} is lost: {v:?}");
            });
            assert_eq!(v.rfind(&wanted), Some(off), "{wanted:?} applied twice");
            assert!(last.is_none_or(|l| off > l), "{wanted:?} out of order");
            last = Some(off);
        }
    }
    log.check_linearizable(test, CHECK_TIMEOUT);
}

/// The leader's outgoing links work, its incoming links are cut (its followers' replies and
/// votes are lost, yet its heartbeats keep arriving): check-quorum makes it step down, a new
/// leader serves clients within a few election timeouts, and the old one cannot disturb it.
#[test]
fn asymmetric_partition_leader_cannot_hear() {
    run_test(
        "asymmetric_partition_leader_cannot_hear",
        |sim: Sim| async move {
            let cfg = KvHarness::new(&sim, options(3)).await;
            let log = OpLog::new();
            let ck = cfg.make_client(&cfg.all()).await;
            cfg.put(&ck, "k", "0", Some(&log), 0).await;
            let old = cfg.cluster().check_one_leader().await;
            for j in cfg.all().into_iter().filter(|&j| j != old) {
                cfg.cluster().set_one_way(j, old, false);
            }
            let cut = Instant::now();
            // Check-quorum: at most one election timeout to notice; then the followers' timers
            // run out (one more) and an election takes a few round trips.
            let limit = 3 * election_max();
            let put = timeout(limit, cfg.put(&ck, "k", "1", Some(&log), 0)).await;
            assert!(
                put.is_ok(),
                "no Put completed within {limit:?} of cutting the leader's incoming links"
            );
            println!("  a Put completed {:?} after the cut", cut.elapsed());
            let old_state = state(&cfg, old).await.expect("old leader runs");
            assert!(!old_state.is_leader(), "the deaf leader still leads");
            let new = cfg.leader().await.expect("a leader");
            let term = state(&cfg, new).await.expect("new leader runs").term;
            // The deaf node's pre-votes reach the others, which hear their leader: it disturbs
            // nothing.
            for i in 0..20 {
                cfg.put(&ck, "k", &format!("{}", i + 2), Some(&log), 0)
                    .await;
                sleep(heartbeat()).await;
            }
            let now = state(&cfg, new).await.expect("new leader runs");
            assert!(
                now.is_leader() && now.term == term,
                "leadership moved again"
            );
            for j in cfg.all() {
                cfg.cluster().set_one_way(j, old, true);
            }
            log.check_linearizable("asymmetric_partition_leader_cannot_hear", CHECK_TIMEOUT);
            cfg.cleanup();
        },
    );
}

/// A follower isolated for 50 election timeouts rejoins: with pre-vote its term did not grow
/// while it was away, so the leader keeps its term and leadership, and clients see no pause
/// longer than one heartbeat.
#[test]
fn stale_term_rejoin_does_not_disrupt() {
    run_test(
        "stale_term_rejoin_does_not_disrupt",
        |sim: Sim| async move {
            let cfg = KvHarness::new(&sim, options(3)).await;
            let log = OpLog::new();
            let leader = cfg.cluster().check_one_leader().await;
            let away = (leader + 1) % cfg.n();
            let writer = start_writer(&cfg, cfg.make_client(&cfg.all()).await, 0, &log);
            cfg.cluster().disconnect(away);
            sleep(50 * election_max()).await;
            let before = state(&cfg, leader).await.expect("leader runs");
            assert!(before.is_leader(), "the majority lost its leader");
            cfg.cluster().connect(away);
            let rejoined = Instant::now();
            let caught_up = time_until(10 * election_max(), || async {
                let f = state(&cfg, away).await.map_or(0, |s| s.commit_index);
                f >= before.commit_index
            })
            .await;
            assert!(caught_up.is_some(), "the rejoined follower never caught up");
            sleep(5 * election_max()).await;
            let after = state(&cfg, leader).await.expect("leader runs");
            assert!(
                after.is_leader() && after.term == before.term,
                "the rejoin disturbed the leader: term {} -> {}, leads: {}",
                before.term,
                after.term,
                after.is_leader()
            );
            let written = writer.stop().await;
            let pause = written.longest_pause(rejoined, Instant::now());
            println!("  longest pause after the rejoin: {pause:?}");
            assert!(
                pause <= heartbeat(),
                "clients paused {pause:?} after the rejoin (one heartbeat: {:?})",
                heartbeat()
            );
            check_nothing_lost(&cfg, &[written], &log, "stale_term_rejoin_does_not_disrupt").await;
            cfg.cleanup();
        },
    );
}

/// Five nodes with non-transitive cuts (two nodes that cannot reach each other but each
/// reach the rest): the cluster keeps one leader in one term and keeps committing.
#[test]
fn bridge_partition_stays_live() {
    run_test("bridge_partition_stays_live", |sim: Sim| async move {
        let cfg = KvHarness::new(&sim, options(5)).await;
        let log = OpLog::new();
        let leader = cfg.cluster().check_one_leader().await;
        let f: Vec<usize> = (1..5).map(|k| (leader + k) % 5).collect();
        // The leader and a follower apart; two followers apart; both at once.
        let scenarios: [&[(usize, usize)]; 3] = [
            &[(leader, f[0])],
            &[(f[1], f[2])],
            &[(leader, f[3]), (f[0], f[1])],
        ];
        let writers = vec![
            start_writer(&cfg, cfg.make_client(&cfg.all()).await, 0, &log),
            start_writer(&cfg, cfg.make_client(&cfg.all()).await, 1, &log),
        ];
        let mut pauses = Vec::new();
        for cuts in scenarios {
            let before = state(&cfg, leader).await.expect("leader runs");
            for &(a, b) in cuts {
                cfg.cluster().disconnect_from(a, &[b]);
            }
            let start = Instant::now();
            let counts: Vec<usize> = writers.iter().map(WriterHandle::completed).collect();
            sleep(10 * election_max()).await;
            let after = state(&cfg, leader).await.expect("leader runs");
            assert!(
                after.is_leader() && after.term == before.term,
                "cuts {cuts:?} moved leadership: term {} -> {}",
                before.term,
                after.term
            );
            for (w, count) in writers.iter().zip(counts) {
                assert!(
                    w.completed() > count,
                    "cuts {cuts:?}: a client made no progress"
                );
            }
            pauses.push((start, Instant::now()));
            for &(a, b) in cuts {
                cfg.cluster().connect_to(a, &[b]);
            }
        }
        let mut written = Vec::new();
        for w in writers {
            written.push(w.stop().await);
        }
        for (from, to) in pauses {
            for w in &written {
                let pause = w.longest_pause(from, to);
                assert!(
                    pause <= heartbeat(),
                    "a client paused {pause:?} under the cuts"
                );
            }
        }
        check_nothing_lost(&cfg, &written, &log, "bridge_partition_stays_live").await;
        cfg.cleanup();
    });
}

/// A leader left in a minority with clients still talking to it serves no read once the
/// majority has a new leader that committed writes: ReadIndex needs a heartbeat round it
/// cannot win, and a lease ends before anyone else can be elected. Checked with the
/// linearizability checker, for ReadIndex and for lease reads.
#[test]
fn minority_leader_serves_no_stale_read() {
    run_test(
        "minority_leader_serves_no_stale_read",
        |sim: Sim| async move {
            // ReadIndex alone (the old leader never steps down), ReadIndex with check-quorum
            // (the default), and lease reads (which need check-quorum).
            for (lease_reads, check_quorum) in [(false, false), (false, true), (true, true)] {
                let mut opts = options(5);
                opts.name = format!("lease-{lease_reads}-cq-{check_quorum}-");
                opts.raft.lease_reads = lease_reads;
                opts.raft.check_quorum = check_quorum;
                let cfg = KvHarness::new(&sim, opts).await;
                let log = OpLog::new();
                let ck = cfg.make_client(&cfg.all()).await;
                cfg.put(&ck, "k", "old", Some(&log), 0).await;
                let old = cfg.cluster().check_one_leader().await;
                let minority = vec![old, (old + 1) % 5];
                let majority: Vec<usize> = cfg
                    .all()
                    .into_iter()
                    .filter(|i| !minority.contains(i))
                    .collect();
                let stale = cfg.make_client(&minority).await;
                let fresh = cfg.make_client(&majority).await;
                // Readers keep asking the old leader's side while the partition begins.
                let reads = Rc::new(RefCell::new(Vec::new()));
                let mut readers = Vec::new();
                for r in 0..3 {
                    let (cfg, stale, log, reads) =
                        (cfg.clone(), stale.clone(), log.clone(), reads.clone());
                    readers.push(actix::spawn(async move {
                        loop {
                            let v = cfg.get(&stale, "k", Some(&log), 10 + r).await;
                            reads.borrow_mut().push((Instant::now(), v));
                        }
                    }));
                }
                sleep(heartbeat()).await;
                cfg.partition(&majority, &minority);
                cfg.put(&fresh, "k", "new", Some(&log), 1).await;
                let written = Instant::now();
                sleep(5 * election_max()).await;
                let served = reads.borrow().iter().filter(|(t, _)| *t > written).count();
                assert_eq!(
                    served, 0,
                    "the minority served {served} reads after the majority wrote \
                 (lease reads: {lease_reads}, check-quorum: {check_quorum})"
                );
                cfg.connect_all();
                cfg.connect_client(&stale, &cfg.all());
                // After the heal the readers' pending Gets complete against the new leader.
                let healed = reads.borrow().len();
                let resumed = time_until(5 * election_max(), || async {
                    reads.borrow().len() > healed + 3
                })
                .await;
                assert!(resumed.is_some(), "reads did not resume after the heal");
                for reader in readers {
                    reader.abort();
                }
                log.check_linearizable("minority_leader_serves_no_stale_read", CHECK_TIMEOUT);
                cfg.cleanup();
            }
        },
    );
}

/// Bytes in the files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Per server: its commit index, saved Raft state bytes and bytes on disk.
async fn footprint(cfg: &KvHarness, dir: &Path) -> Vec<(u64, usize, u64)> {
    let mut all = Vec::new();
    for i in cfg.all() {
        let commit = state(cfg, i).await.expect("server runs").commit_index;
        let store = cfg.cluster().storage(i).expect("server has storage");
        let files = bytes_under(&dir.join(i.to_string()));
        all.push((commit, store.raft_state_size(), files));
    }
    all
}

/// A run of Gets leaves the Raft log and the WAL untouched: no commit index moves, no byte is
/// written.
#[test]
fn read_index_writes_no_log_entry() {
    run_test("read_index_writes_no_log_entry", |sim: Sim| async move {
        let dir = std::env::temp_dir().join(format!("rainkv-read-index-{}", sim.seed()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = ClusterOptions {
            storage: StorageKind::Files(dir.clone()),
            ..options(3)
        };
        let cfg = KvHarness::new(&sim, opts).await;
        let ck = cfg.make_client(&cfg.all()).await;
        cfg.put(&ck, "k", "v", None, 0).await;
        // Let the commit of the Put reach everyone.
        sleep(2 * heartbeat()).await;
        let before = footprint(&cfg, &dir).await;
        for _ in 0..200 {
            cfg.check(&ck, "k", "v").await;
        }
        sleep(2 * heartbeat()).await;
        let after = footprint(&cfg, &dir).await;
        assert_eq!(
            before, after,
            "(commit index, Raft state bytes, bytes on disk) per server changed"
        );
        cfg.cleanup();
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Leadership moves round the cluster twice, to each follower in turn, while clients write: each takes over within one
/// round trip plus one election, and no acknowledged write is lost.
#[test]
fn leader_transfer_hands_over() {
    run_test("leader_transfer_hands_over", |sim: Sim| async move {
        let cfg = KvHarness::new(&sim, options(3)).await;
        let log = OpLog::new();
        let writers = vec![
            start_writer(&cfg, cfg.make_client(&cfg.all()).await, 0, &log),
            start_writer(&cfg, cfg.make_client(&cfg.all()).await, 1, &log),
        ];
        let mut leader = cfg.cluster().check_one_leader().await;
        // One round trip (1 ms each way), one election's two rounds, and a tick of slack
        // for each of the three steps (the target's catch-up, TimeoutNow, the election).
        let limit = Duration::from_millis(2 + 4) + 3 * raft().tick;
        for _ in 0..2 * cfg.n() {
            let to = (leader + 1) % cfg.n();
            let raft = cfg.cluster().raft(leader).expect("leader runs");
            raft.send(TransferLeadership { to })
                .await
                .expect("leader answers")
                .unwrap_or_else(|e| panic!("transfer {leader} -> {to} refused: {e:?}"));
            let took = time_until(election_max(), || async {
                state(&cfg, to).await.is_some_and(|s| s.is_leader())
            })
            .await;
            let took = took.unwrap_or_else(|| panic!("{to} did not take over from {leader}"));
            println!("  {leader} -> {to}: {took:?}");
            assert!(
                took <= limit,
                "{leader} -> {to} took {took:?} (limit {limit:?})"
            );
            leader = to;
            sleep(5 * heartbeat()).await;
        }
        let mut written = Vec::new();
        for w in writers {
            written.push(w.stop().await);
        }
        check_nothing_lost(&cfg, &written, &log, "leader_transfer_hands_over").await;
        cfg.cleanup();
    });
}

/// A leader cut off from everyone steps down within an election timeout.
#[test]
fn check_quorum_steps_down() {
    run_test("check_quorum_steps_down", |sim: Sim| async move {
        let cfg = KvHarness::new(&sim, options(3)).await;
        let leader = cfg.cluster().check_one_leader().await;
        cfg.cluster().disconnect(leader);
        let limit = election_max() + raft().tick;
        let took = time_until(2 * limit, || async {
            state(&cfg, leader).await.is_some_and(|s| !s.is_leader())
        })
        .await;
        println!("  stepped down after {took:?}");
        assert!(
            took.is_some_and(|t| t <= limit),
            "the isolated leader still led after {took:?} (limit {limit:?})"
        );
        cfg.cleanup();
    });
}

/// The leader's disk stops completing saves for 10 s: clients see no pause much longer than
/// an election timeout, and nothing acknowledged is lost when the disk comes back.
#[test]
fn leader_disk_stall() {
    run_test("leader_disk_stall", |sim: Sim| async move {
        let cfg = KvHarness::new(&sim, options(3)).await;
        let log = OpLog::new();
        let writers = vec![
            start_writer(&cfg, cfg.make_client(&cfg.all()).await, 0, &log),
            start_writer(&cfg, cfg.make_client(&cfg.all()).await, 1, &log),
        ];
        let leader = cfg.cluster().check_one_leader().await;
        let stall = Duration::from_secs(10);
        cfg.cluster().stall_disk(leader, stall);
        let start = Instant::now();
        sleep(stall + 5 * election_max()).await;
        let end = Instant::now();
        let mut written = Vec::new();
        for w in writers {
            written.push(w.stop().await);
        }
        for w in &written {
            let pause = w.longest_pause(start, end);
            println!("  client {}: longest pause {pause:?}", w.client);
            assert!(
                pause <= 2 * election_max(),
                "a client paused {pause:?} while the leader's disk stalled"
            );
        }
        check_nothing_lost(&cfg, &written, &log, "leader_disk_stall").await;
        cfg.cleanup();
    });
}
