//! Tests of our own for the replicated state machine actor ([`Rsm`]), beyond the 6.5840 suites,
//! and a test of the linearizability checker against a KV service with an injected bug.
//!
//! The RSM tests drive `Rsm` directly (local [`Submit`] and [`Read`] messages, no clerk)
//! with a tiny state machine, a [`Journal`] of numbers, on the simulated network in virtual
//! time: restart replay from the log and from snapshot plus log tail, pending requests of a
//! leader that is shut down or cut off, the first submit after a full restart, duplicate
//! suppression (also across a restart), and a lagging replica that catches up through
//! InstallSnapshot. The checker test runs one partition scenario twice, once with a service
//! that answers Gets from a possibly stale local state and once with Gets through the log, and
//! expects `Illegal` (naming the key) and `Ok` respectively.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::join_all;
use rainkv::actors::clerk::Clerk;
use rainkv::actors::kv_server::KvStore;
use rainkv::actors::raft::{RaftConfig, RaftPeer, RestoreError};
use rainkv::actors::rsm::{ReplicaSetup, Rsm, SessionPolicy, StateMachine, REQUEST_TIMEOUT};
use rainkv::check::{check_operations, CheckResult, KvInput, KvModel, KvOp, KvOutput, Operation};
use rainkv::messages::kv::{
    ClerkError, GetArgs, KvError, KvReply, PutAppendArgs, RegisterArgs, RegisterReply,
};
use rainkv::messages::lifecycle::Stop;
use rainkv::messages::net::{encode, Dispatch, Rpc, RpcError, Server};
use rainkv::messages::raft::{GetState, InstallSnapshotArgs, Propose};
use rainkv::messages::rsm::{
    ClientId, GetHealth, GetSessions, Halted, Health, Read, RegisterSession, Session, Submit,
    SubmitError,
};
use rainkv::storage::Persister;
use rainkv::testkit::cluster::{ServerContext, TestStore};
use rainkv::testkit::kv::{KvHarness, OpLog};
use rainkv::testkit::{self, run_test, ClusterOptions, ServerKind, Sim, StorageKind};
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, timeout, Instant};

/// Snapshot threshold of the snapshot tests, in bytes of Raft state.
const MAX_RAFT_STATE: usize = 200;

// ---------------------------------------------------------------------------------------------
// The test state machine

/// Every number applied, in order. A command's output is the journal's length after it, so a
/// command applied twice, or out of order, shows in the outputs as well as in the state.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Journal {
    entries: Vec<u64>,
}

impl StateMachine for Journal {
    type Command = u64;
    type Output = usize;

    fn apply(&mut self, number: u64) -> usize {
        self.entries.push(number);
        self.entries.len()
    }
}

// ---------------------------------------------------------------------------------------------
// A small cluster of RSM replicas

/// Builds the extra network service of a server (registered as "KVServer") from its replica
/// and Raft peer.
type Face<S> = Box<dyn Fn(&Addr<Rsm<S>>, &Addr<RaftPeer>) -> Recipient<Dispatch>>;

/// One replica's handles.
struct Node<S: StateMachine> {
    id: usize,
    rsm: Addr<Rsm<S>>,
    raft: Addr<RaftPeer>,
}

impl<S: StateMachine> Clone for Node<S> {
    fn clone(&self) -> Self {
        Node {
            id: self.id,
            rsm: self.rsm.clone(),
            raft: self.raft.clone(),
        }
    }
}

/// Replicas of `Rsm<S>`: a "Raft" service, and the optional face as "KVServer".
struct Replicas<S: StateMachine> {
    face: Option<Face<S>>,
    /// The snapshot threshold of the next incarnations (a test may turn snapshots off).
    max_raft_state: Cell<Option<usize>>,
}

impl<S: StateMachine> ServerKind for Replicas<S> {
    type Node = Node<S>;

    fn start(
        &self,
        setup: ReplicaSetup<TestStore>,
        _: &mut ServerContext,
    ) -> impl Future<Output = Result<Node<S>, RestoreError>> {
        let id = setup.id;
        let setup = ReplicaSetup {
            max_raft_state: self.max_raft_state.get(),
            ..setup
        };
        std::future::ready(Rsm::<S>::start(setup).map(|(rsm, raft)| Node { id, rsm, raft }))
    }

    fn services(&self, node: &Node<S>) -> Server {
        let mut server = Server::new().with_service("Raft", node.raft.clone().recipient());
        if let Some(face) = &self.face {
            server = server.with_service("KVServer", face(&node.rsm, &node.raft));
        }
        server
    }

    fn raft(&self, node: &Node<S>) -> Addr<RaftPeer> {
        node.raft.clone()
    }

    fn stop(&self, node: &Node<S>) {
        node.rsm.do_send(Stop);
    }
}

/// `n` replicas of `Rsm<S>`, each a network server `"i"`, on the testkit's cluster builder
/// (crashes and restarts as 6.5840's harness does them), and the helpers these tests share.
struct Cluster<S: StateMachine> {
    cluster: testkit::Cluster<Replicas<S>>,
    n: usize,
    /// The session registered for each client a test names (a test's "client 7").
    clients: RefCell<BTreeMap<u64, ClientId>>,
}

impl<S: StateMachine> Cluster<S> {
    /// Starts `n` connected replicas.
    async fn new(
        sim: &Sim,
        n: usize,
        max_raft_state: Option<usize>,
        face: Option<Face<S>>,
    ) -> Self {
        let options = ClusterOptions {
            servers: n,
            max_raft_state,
            ..Default::default()
        };
        Self::with_options(sim, options, face).await
    }

    /// Starts `options.servers` connected replicas.
    async fn with_options(sim: &Sim, options: ClusterOptions, face: Option<Face<S>>) -> Self {
        let kind = Replicas {
            face,
            max_raft_state: Cell::new(options.max_raft_state),
        };
        let n = options.servers;
        Cluster {
            cluster: testkit::Cluster::start(sim, kind, options).await,
            n,
            clients: RefCell::new(BTreeMap::new()),
        }
    }

    /// The session of the client a test calls `name`, registered on first use.
    async fn client(&self, name: u64) -> ClientId {
        let known = self.clients.borrow().get(&name).copied();
        match known {
            Some(client) => client,
            None => {
                let client = self.register_anywhere().await;
                self.clients.borrow_mut().insert(name, client);
                client
            }
        }
    }

    /// Registers a session at whichever replica leads, retrying as a clerk would; fails the
    /// test after 10 s.
    async fn register_anywhere(&self) -> ClientId {
        let started = Instant::now();
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(10) {
            if self.is_up(i) {
                if let Ok(Ok(client)) = self.rsm(i).send(RegisterSession).await {
                    return client;
                }
            }
            i = (i + 1) % self.n;
            if i == 0 {
                sleep(Duration::from_millis(10)).await;
            }
        }
        panic!("no replica registered a session within 10 s");
    }

    /// Replica i's health.
    async fn health(&self, i: usize) -> Health {
        match self.rsm(i).send(GetHealth).await {
            Ok(health) => health,
            Err(e) => panic!("replica {i} did not answer GetHealth: {e}"),
        }
    }

    /// Waits (up to 5 s) until replica i has halted, and returns why.
    async fn wait_halted(&self, i: usize) -> String {
        let started = Instant::now();
        loop {
            if let Health::Halted { reason } = self.health(i).await {
                return reason;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "replica {i} did not halt within 5 s"
            );
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether replica i's Raft peer still runs.
    async fn raft_runs(&self, i: usize) -> bool {
        let raft = self.cluster.running(i).raft;
        raft.send(GetState).await.is_ok()
    }

    fn all(&self) -> Vec<usize> {
        self.cluster.all()
    }

    /// InstallSnapshot RPCs delivered to server i so far.
    fn installs(&self, i: usize) -> u64 {
        self.cluster.raft_traffic(i).install_snapshots
    }

    /// Bytes of server i's saved snapshot.
    fn snapshot_size(&self, i: usize) -> usize {
        self.cluster
            .storage(i)
            .map_or(0, |store| store.snapshot_size())
    }

    /// Turns snapshots off (`None`) or on for the incarnations started from now on.
    fn set_max_raft_state(&self, max_raft_state: Option<usize>) {
        self.cluster.kind().max_raft_state.set(max_raft_state);
    }

    /// Cuts replica i off, deletes its server, keeps a copy of its storage and stops it.
    fn shutdown(&self, i: usize) {
        self.cluster.crash(i);
    }

    /// Shuts every replica down, then starts and connects them all again.
    async fn restart_all(&self) {
        for i in 0..self.n {
            self.cluster.crash(i);
        }
        for i in 0..self.n {
            self.cluster.restart(i).await;
        }
        self.cluster.connect_all();
    }

    fn connect(&self, i: usize, to: &[usize]) {
        self.cluster.connect_to(i, to);
    }

    fn disconnect(&self, i: usize, from: &[usize]) {
        self.cluster.disconnect_from(i, from);
    }

    fn connect_all(&self) {
        self.cluster.connect_all();
    }

    /// Servers in each side reach each other, and nothing across.
    fn partition(&self, p1: &[usize], p2: &[usize]) {
        self.cluster.partition(p1, p2);
    }

    fn rsm(&self, i: usize) -> Addr<Rsm<S>> {
        self.cluster.running(i).rsm
    }

    fn is_up(&self, i: usize) -> bool {
        self.cluster.is_up(i)
    }

    /// 6.5840's `checkOneLeader`.
    async fn check_one_leader(&self) -> usize {
        self.cluster.check_one_leader().await
    }

    /// Submits to replica i and waits for its answer.
    async fn submit(
        &self,
        i: usize,
        session: Option<Session>,
        command: S::Command,
    ) -> Result<S::Output, SubmitError> {
        match self.rsm(i).send(Submit::new(session, command)).await {
            Ok(answer) => answer,
            Err(e) => panic!("replica {i} dropped a submit unanswered: {e}"),
        }
    }

    /// Submits with a session to whichever replica accepts it, retrying (same session) on
    /// `WrongLeader`, as a clerk would; fails the test after 10 s.
    async fn submit_anywhere(&self, session: Session, command: S::Command) -> S::Output {
        let started = Instant::now();
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(10) {
            if self.is_up(i) {
                if let Ok(output) = self.submit(i, Some(session), command.clone()).await {
                    return output;
                }
            }
            i = (i + 1) % self.n;
            if i == 0 {
                sleep(Duration::from_millis(10)).await;
            }
        }
        panic!("submit {session:?} {command:?} not accepted within 10 s");
    }

    /// Reads replica i's state and applied index through [`Read`].
    async fn inspect<R: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce(&S, u64) -> R + Send + 'static,
    ) -> R {
        match self.rsm(i).send(Read::new(f)).await {
            Ok(Ok(r)) => r,
            Ok(Err(Halted)) => panic!("replica {i} has halted"),
            Err(e) => panic!("replica {i} did not answer Read: {e}"),
        }
    }

    fn cleanup(&self) {
        self.cluster.shutdown();
    }
}

impl Cluster<Journal> {
    /// Replica i's journal and applied index.
    async fn journal(&self, i: usize) -> (Vec<u64>, u64) {
        self.inspect(i, |j: &Journal, applied| (j.entries.clone(), applied))
            .await
    }

    /// Waits (up to 5 s) until every running replica's journal is as long as `expected`, and
    /// then requires it to be `expected`.
    async fn wait_all_applied(&self, expected: &[u64]) {
        let started = Instant::now();
        for i in 0..self.n {
            if !self.is_up(i) {
                continue;
            }
            loop {
                let (entries, _) = self.journal(i).await;
                if entries.len() >= expected.len() {
                    assert_eq!(entries, expected, "replica {i} applied other commands");
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "replica {i} applied {} of {} commands within 5 s",
                    entries.len(),
                    expected.len()
                );
                sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Submits `numbers` one at a time as the client the test calls `client` with sequence numbers
/// from `first_seq`; each must come back with the journal length it makes.
async fn submit_all(
    cluster: &Cluster<Journal>,
    client: u64,
    first_seq: u64,
    numbers: &[u64],
    expected: &mut Vec<u64>,
) {
    let client = cluster.client(client).await;
    for (k, &number) in numbers.iter().enumerate() {
        let output = cluster
            .submit_anywhere((client, first_seq + k as u64), number)
            .await;
        expected.push(number);
        assert_eq!(output, expected.len(), "output of command {number}");
    }
}

// ---------------------------------------------------------------------------------------------
// RSM tests

/// With snapshots off, a full restart starts every replica from an empty state, and the state
/// is rebuilt by replaying the log; the first submit after the restart returns a journal
/// length that counts every command from before it.
#[test]
fn restart_replays_log() {
    run_test("restart_replays_log", |sim| async move {
        let cluster = Cluster::<Journal>::new(&sim, 3, None, None).await;
        let mut expected = Vec::new();
        let numbers: Vec<u64> = (1..=20).map(|k| 100 + k).collect();
        submit_all(&cluster, 1, 1, &numbers, &mut expected).await;
        cluster.wait_all_applied(&expected).await;

        cluster.restart_all().await;
        for i in 0..cluster.n {
            assert_eq!(
                cluster.journal(i).await,
                (Vec::new(), 0),
                "replica {i} has state before replaying its log (no snapshots)"
            );
        }
        cluster.check_one_leader().await;
        submit_all(&cluster, 1, 21, &[999], &mut expected).await;
        cluster.wait_all_applied(&expected).await;
        cluster.cleanup();
    });
}

/// With snapshots on, a restarted replica starts from its snapshot (a prefix of the journal at
/// the snapshot's index) and replays the log tail after it.
#[test]
fn restart_replays_snapshot_and_log_tail() {
    run_test("restart_replays_snapshot_and_log_tail", |sim| async move {
        let cluster = Cluster::<Journal>::new(&sim, 3, Some(MAX_RAFT_STATE), None).await;
        let mut expected = Vec::new();
        let numbers: Vec<u64> = (1..=60).collect();
        submit_all(&cluster, 1, 1, &numbers, &mut expected).await;
        cluster.wait_all_applied(&expected).await;
        for i in 0..cluster.n {
            assert!(cluster.snapshot_size(i) > 0, "replica {i} took no snapshot");
        }

        // Snapshots off from here on, so the commands that follow stay in the log tail.
        cluster.set_max_raft_state(None);
        cluster.restart_all().await;
        let mut snapshot_at = Vec::new();
        for i in 0..cluster.n {
            let (entries, applied) = cluster.journal(i).await;
            assert!(applied > 0, "replica {i} did not restore its snapshot");
            // The log also holds each new leader's no-op, so the journal may be shorter than
            // the applied index.
            assert!(entries.len() as u64 <= applied);
            assert_eq!(
                entries,
                expected[..entries.len()],
                "replica {i}'s snapshot at {applied} is not the journal's prefix"
            );
            snapshot_at.push(applied);
        }
        cluster.check_one_leader().await;
        submit_all(&cluster, 1, 61, &[1001, 1002, 1003], &mut expected).await;
        cluster.wait_all_applied(&expected).await;

        cluster.restart_all().await;
        for (i, &at) in snapshot_at.iter().enumerate() {
            let (entries, applied) = cluster.journal(i).await;
            assert_eq!(applied, at, "replica {i} restarted from another snapshot");
            assert_eq!(entries, expected[..entries.len()]);
            assert!(
                entries.len() < expected.len(),
                "replica {i}: the last commands must come from the log tail"
            );
        }
        cluster.check_one_leader().await;
        submit_all(&cluster, 1, 64, &[1004], &mut expected).await;
        cluster.wait_all_applied(&expected).await;
        cluster.cleanup();
    });
}

/// Requests pending at a leader that is cut off and then shut down are all answered
/// `WrongLeader` at the shutdown, and none of them is ever applied.
#[test]
fn shutdown_answers_pending_requests() {
    run_test("shutdown_answers_pending_requests", |sim| async move {
        pending_at_cut_off_leader(sim, true).await;
    });
}

/// Requests pending at a leader that is cut off (and keeps believing it leads) are all
/// answered `WrongLeader` within the request timeout plus one leadership check, and none of
/// them is ever applied.
#[test]
fn cut_off_leader_answers_pending_requests() {
    run_test(
        "cut_off_leader_answers_pending_requests",
        |sim| async move {
            pending_at_cut_off_leader(sim, false).await;
        },
    );
}

async fn pending_at_cut_off_leader(sim: Sim, shut_down: bool) {
    let cluster = Cluster::<Journal>::new(&sim, 3, None, None).await;
    let mut expected = Vec::new();
    submit_all(&cluster, 1, 1, &[1, 2, 3], &mut expected).await;
    let leader = cluster.check_one_leader().await;
    cluster.disconnect(leader, &cluster.all());

    let submitted = Instant::now();
    let pending: Vec<_> = (0..5u64)
        .map(|k| {
            let rsm = cluster.rsm(leader);
            actix::spawn(async move {
                let answer = rsm.send(Submit::new(None, 500 + k)).await;
                (answer, Instant::now())
            })
        })
        .collect();
    // Let them reach the leader's log and its table of pending requests.
    sleep(Duration::from_millis(50)).await;
    let (deadline, bound) = if shut_down {
        cluster.shutdown(leader);
        (
            Instant::now() + Duration::from_millis(10),
            "10 ms after the shutdown",
        )
    } else {
        (
            submitted + REQUEST_TIMEOUT + Duration::from_millis(10),
            "10 ms after the request timeout",
        )
    };
    let answers = match timeout(Duration::from_secs(5), join_all(pending)).await {
        Ok(answers) => answers,
        Err(_) => panic!("pending submits still unanswered 5 s later"),
    };
    for (k, answer) in answers.into_iter().enumerate() {
        let (answer, at) = answer.expect("submitting task");
        assert!(
            matches!(answer, Ok(Err(SubmitError::WrongLeader))),
            "pending submit {k} was answered {answer:?}, not WrongLeader"
        );
        assert!(
            at <= deadline,
            "pending submit {k} answered later than {bound}"
        );
    }

    // The rest elect a leader and go on while the old one is still away, so the failed
    // commands can never commit: entries of the new term follow the old leader's last
    // committed one on a majority. (Were it back before the others agreed on a leader, its
    // longer log could win it the next election, and its pending commands would commit after
    // all: `WrongLeader` after a timeout does not promise that a command is never applied.)
    submit_all(&cluster, 1, 4, &[4], &mut expected).await;
    if !shut_down {
        cluster.connect(leader, &cluster.all());
    }
    cluster.wait_all_applied(&expected).await;
    cluster.cleanup();
}

/// The first submit after a full restart, at the new leader, succeeds; it is a retry of the
/// last request before the restart (same session, another command), so it must return the
/// saved output without applying anything: the session table survives through the log.
#[test]
fn submit_after_full_restart() {
    run_test("submit_after_full_restart", |sim| async move {
        submit_after_restart_keeps_sessions(sim, None).await;
    });
}

/// As `submit_after_full_restart`, with the session table restored from snapshots.
#[test]
fn submit_after_full_restart_with_snapshots() {
    run_test(
        "submit_after_full_restart_with_snapshots",
        |sim| async move {
            submit_after_restart_keeps_sessions(sim, Some(MAX_RAFT_STATE)).await;
        },
    );
}

async fn submit_after_restart_keeps_sessions(sim: Sim, max_raft_state: Option<usize>) {
    let cluster = Cluster::<Journal>::new(&sim, 3, max_raft_state, None).await;
    let mut expected = Vec::new();
    let numbers: Vec<u64> = (1..=40).collect();
    submit_all(&cluster, 7, 1, &numbers, &mut expected).await;
    cluster.wait_all_applied(&expected).await;
    if max_raft_state.is_some() {
        for i in 0..cluster.n {
            assert!(cluster.snapshot_size(i) > 0, "replica {i} took no snapshot");
        }
    }

    cluster.restart_all().await;
    let leader = cluster.check_one_leader().await;
    let client = cluster.client(7).await;
    assert_eq!(
        cluster.submit(leader, Some((client, 40)), 7777).await,
        Ok(40),
        "a retry of the last request before the restart must get its saved output"
    );
    assert_eq!(
        cluster.submit(leader, Some((client, 41)), 41).await,
        Ok(41),
        "the next request must be applied once, after all the earlier ones"
    );
    expected.push(41);
    cluster.wait_all_applied(&expected).await;
    cluster.cleanup();
}

/// The same (client, seq) submitted twice at once goes into the log twice and is applied
/// once, both copies answering the first one's output; a later retry gets the saved output
/// without a log entry; another client with the same seq is another request.
#[test]
fn duplicate_submit_applies_once() {
    run_test("duplicate_submit_applies_once", |sim| async move {
        let cluster = Cluster::<Journal>::new(&sim, 3, None, None).await;
        let mut expected = Vec::new();
        submit_all(&cluster, 3, 1, &[1, 2, 3], &mut expected).await;
        let other = cluster.client(9).await;
        let client = cluster.client(3).await;
        let leader = cluster.check_one_leader().await;

        let (_, before) = cluster.journal(leader).await;
        let (first, second) = futures_util::future::join(
            cluster.submit(leader, Some((client, 4)), 44),
            cluster.submit(leader, Some((client, 4)), 44),
        )
        .await;
        assert_eq!((first, second), (Ok(4), Ok(4)), "the two copies' answers");
        assert_eq!(
            cluster.submit(leader, Some((client, 4)), 44).await,
            Ok(4),
            "a retry after the answer"
        );
        assert_eq!(
            cluster.submit(leader, Some((other, 4)), 99).await,
            Ok(5),
            "another client's request with the same seq"
        );
        expected.extend([44, 99]);
        cluster.wait_all_applied(&expected).await;
        let (_, applied) = cluster.journal(leader).await;
        assert_eq!(
            applied,
            before + 3,
            "log entries: both copies of the duplicate, and the other client's"
        );
        cluster.cleanup();
    });
}

/// A follower cut off while the others go on (and snapshot) is brought back through
/// InstallSnapshot, and then holds the same state as the others.
#[test]
fn lagging_replica_catches_up_through_snapshot() {
    run_test(
        "lagging_replica_catches_up_through_snapshot",
        |sim| async move {
            let cluster = Cluster::<Journal>::new(&sim, 3, Some(MAX_RAFT_STATE), None).await;
            let mut expected = Vec::new();
            submit_all(&cluster, 5, 1, &[1, 2, 3, 4, 5], &mut expected).await;
            cluster.wait_all_applied(&expected).await;
            let leader = cluster.check_one_leader().await;
            let lagging = (leader + 1) % cluster.n;
            cluster.disconnect(lagging, &cluster.all());

            let numbers: Vec<u64> = (6..=100).collect();
            submit_all(&cluster, 5, 6, &numbers, &mut expected).await;
            let (entries, _) = cluster.journal(lagging).await;
            assert_eq!(entries, expected[..5].to_vec());
            assert_eq!(cluster.installs(lagging), 0);

            cluster.connect(lagging, &cluster.all());
            cluster.wait_all_applied(&expected).await;
            assert!(
                cluster.installs(lagging) > 0,
                "the lagging replica caught up without an InstallSnapshot"
            );
            // A new leader's no-op may still be on its way to some replicas: give them a
            // moment to reach the same applied index, then every replica must be the same.
            let started = Instant::now();
            loop {
                let caught_up = cluster.journal(lagging).await;
                let mut differing = None;
                for i in 0..cluster.n {
                    let journal = cluster.journal(i).await;
                    if journal != caught_up {
                        differing = Some((i, journal));
                    }
                }
                let Some((i, journal)) = differing else {
                    break;
                };
                if started.elapsed() > Duration::from_secs(1) {
                    assert_eq!(journal, caught_up, "replicas {i} and {lagging} differ");
                }
                sleep(Duration::from_millis(20)).await;
            }
            cluster.cleanup();
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Sessions: bounded by a time-to-live in the log and a cap, alike on every replica

/// A session policy of `ttl` and `max_sessions` (the harness supplies the virtual clock).
fn session_policy(ttl: Duration, max_sessions: usize) -> SessionPolicy {
    SessionPolicy {
        ttl,
        max_sessions,
        ..SessionPolicy::default()
    }
}

/// Waits (up to 5 s) until every replica `replica(i)` of `n` lists the same sessions, and
/// returns them (asked anew each time: a restarted replica has a new address).
async fn agreed_sessions<S: StateMachine>(
    n: usize,
    replica: impl Fn(usize) -> Addr<Rsm<S>>,
) -> Vec<(ClientId, u64)> {
    let started = Instant::now();
    loop {
        let mut lists = Vec::new();
        for i in 0..n {
            match replica(i).send(GetSessions).await {
                Ok(list) => lists.push(list),
                Err(e) => panic!("replica {i} did not answer GetSessions: {e}"),
            }
        }
        if lists.windows(2).all(|pair| pair[0] == pair[1]) {
            return lists.swap_remove(0);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the replicas' sessions still differ after 5 s: {lists:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// [`agreed_sessions`] of the RSM test cluster.
async fn cluster_sessions(cluster: &Cluster<Journal>) -> Vec<(ClientId, u64)> {
    agreed_sessions(cluster.n, |i| cluster.rsm(i)).await
}

/// Three clients write; one keeps writing for longer than the session ttl while a replica is
/// down. The idle clients' sessions expire at the same entry everywhere: the replica that
/// catches up through a snapshot, and every replica after a full restart, list exactly the
/// active client; an idle client's next write is refused and never applied.
#[test]
fn idle_sessions_expire_alike_on_every_replica_across_restarts_and_snapshots() {
    run_test(
        "idle_sessions_expire_alike_on_every_replica_across_restarts_and_snapshots",
        |sim| async move {
            let options = ClusterOptions {
                servers: 3,
                max_raft_state: Some(MAX_RAFT_STATE),
                sessions: session_policy(Duration::from_secs(2), 100),
                ..Default::default()
            };
            let cluster = Cluster::<Journal>::with_options(&sim, options, None).await;
            let mut expected = Vec::new();
            for client in 1..=3 {
                submit_all(&cluster, client, 1, &[client], &mut expected).await;
            }
            let victim = (cluster.check_one_leader().await + 1) % 3;
            cluster.shutdown(victim);
            for k in 0..12 {
                sleep(Duration::from_millis(250)).await;
                submit_all(&cluster, 1, 2 + k, &[10 + k], &mut expected).await;
            }
            cluster.cluster.restart(victim).await;
            cluster.connect_all();
            cluster.wait_all_applied(&expected).await;
            assert!(
                cluster.installs(victim) > 0,
                "replica {victim} got no snapshot"
            );
            let active = cluster.client(1).await;
            assert_eq!(cluster_sessions(&cluster).await, vec![(active, 13)]);

            let idle = cluster.client(2).await;
            let leader = cluster.check_one_leader().await;
            assert_eq!(
                cluster.submit(leader, Some((idle, 2)), 99).await,
                Err(SubmitError::SessionExpired),
                "a write of an expired session"
            );
            cluster.restart_all().await;
            cluster.check_one_leader().await;
            cluster.wait_all_applied(&expected).await;
            assert_eq!(cluster_sessions(&cluster).await, vec![(active, 13)]);
            cluster.cleanup();
        },
    );
}

/// Past the cap, each registration drops the least recently active session, on every replica
/// alike; a dropped client's write is refused, a kept one's is executed.
#[test]
fn the_session_table_keeps_at_most_the_cap() {
    run_test(
        "the_session_table_keeps_at_most_the_cap",
        |sim| async move {
            let options = ClusterOptions {
                servers: 3,
                sessions: session_policy(Duration::from_secs(3600), 5),
                ..Default::default()
            };
            let cluster = Cluster::<Journal>::with_options(&sim, options, None).await;
            let mut expected = Vec::new();
            for client in 1..=20 {
                submit_all(&cluster, client, 1, &[client], &mut expected).await;
            }
            cluster.wait_all_applied(&expected).await;
            let mut kept = Vec::new();
            for client in 16..=20 {
                kept.push((cluster.client(client).await, 1));
            }
            assert_eq!(cluster_sessions(&cluster).await, kept);
            let (dropped, last) = (cluster.client(1).await, cluster.client(20).await);
            let leader = cluster.check_one_leader().await;
            assert_eq!(
                cluster.submit(leader, Some((dropped, 2)), 1001).await,
                Err(SubmitError::SessionExpired)
            );
            assert_eq!(cluster.submit(leader, Some((last, 2)), 1002).await, Ok(21));
            expected.push(1002);
            cluster.wait_all_applied(&expected).await;
            cluster.cleanup();
        },
    );
}

/// [`agreed_sessions`] of a KV harness's servers.
async fn kv_sessions(cfg: &KvHarness) -> Vec<(ClientId, u64)> {
    agreed_sessions(cfg.n(), |i| cfg.cluster().running(i).rsm).await
}

/// A KV clerk that only reads opens no session; its first write opens one; idle past the ttl,
/// its next write is refused on the first attempt and sent again under a new session, which
/// the caller never notices.
#[test]
fn a_clerk_opens_a_session_for_writes_only_and_renews_an_expired_one() {
    run_test(
        "a_clerk_opens_a_session_for_writes_only_and_renews_an_expired_one",
        |sim| async move {
            let options = ClusterOptions {
                servers: 3,
                sessions: session_policy(Duration::from_secs(2), 100),
                ..Default::default()
            };
            let cfg = KvHarness::new(&sim, options).await;
            let ck = cfg.make_client(&cfg.all()).await;
            for _ in 0..20 {
                assert_eq!(ck.clerk.get("k").await, Ok(None));
            }
            assert_eq!(kv_sessions(&cfg).await, vec![], "reads opened a session");
            ck.clerk.put("k", "1").await.expect("put");
            ck.clerk.append("k", "2").await.expect("append");
            let first = kv_sessions(&cfg).await;
            assert!(matches!(first[..], [(_, 2)]), "sessions: {first:?}");
            sleep(Duration::from_secs(3)).await;
            ck.clerk
                .append("k", "3")
                .await
                .expect("append after the ttl");
            assert_eq!(ck.clerk.get_string("k").await, Ok(Some("123".into())));
            let renewed = kv_sessions(&cfg).await;
            assert!(
                matches!(renewed[..], [(client, 1)] if client != first[0].0),
                "sessions after the ttl: {renewed:?} (before: {first:?})"
            );
            cfg.cleanup();
        },
    );
}

/// A write whose session expires while the clerk retries it (the cluster lost its majority
/// for longer than the ttl) may or may not have been applied: the clerk says so with
/// `SessionExpired` instead of sending it under a new session, so it is never applied twice;
/// the clerk's next write opens a new session and succeeds.
#[test]
fn a_write_whose_session_expires_while_it_is_retried_has_an_unknown_outcome() {
    run_test(
        "a_write_whose_session_expires_while_it_is_retried_has_an_unknown_outcome",
        |sim| async move {
            let options = ClusterOptions {
                servers: 3,
                sessions: session_policy(Duration::from_secs(2), 100),
                ..Default::default()
            };
            let cfg = KvHarness::new(&sim, options).await;
            let ck = cfg.make_client(&cfg.all()).await;
            ck.clerk.append("k", "x").await.expect("append x");
            let leader = cfg.leader().await.expect("a leader");
            let down: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
            for &i in &down {
                cfg.shutdown_server(i);
            }
            let outage = async {
                sleep(Duration::from_secs(3)).await;
                for &i in &down {
                    cfg.start_server(i).await;
                }
                cfg.connect_all();
            };
            let (appended, ()) =
                futures_util::future::join(ck.clerk.append("k", "y"), outage).await;
            assert_eq!(appended, Err(ClerkError::SessionExpired));
            ck.clerk.append("k", "z").await.expect("append z");
            let value = ck.clerk.get_string("k").await.expect("get");
            assert!(
                value == Some("xz".into()) || value == Some("xyz".into()),
                "y applied more than once, or lost z: {value:?}"
            );
            cfg.cleanup();
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Halting: what a replica cannot trust stops it, loudly and visibly

/// Checks that replica i has halted for a reason mentioning `cause`: its peer is stopped, it
/// refuses commands and reads, and it says why.
async fn assert_halted(cluster: &Cluster<Journal>, i: usize, cause: &str) {
    let reason = cluster.wait_halted(i).await;
    assert!(reason.contains(cause), "replica {i} halted for: {reason}");
    assert_eq!(
        cluster.submit(i, Some((99, 1)), 99).await,
        Err(SubmitError::Halted)
    );
    let read = cluster
        .rsm(i)
        .send(Read::new(|j: &Journal, _| j.entries.len()));
    assert_eq!(read.await.ok(), Some(Err(Halted)));
    // Stopping is asynchronous: give the peer a moment.
    sleep(Duration::from_millis(10)).await;
    assert!(
        !cluster.raft_runs(i).await,
        "replica {i}'s Raft peer still runs"
    );
}

/// A snapshot whose bytes are not a snapshot of this service (here sent by a rogue leader of a
/// later term) leaves Raft's log replaced and the state unrecoverable: the follower halts
/// instead of serving its old state, and the others go on.
#[test]
fn an_undecodable_snapshot_halts_the_replica() {
    run_test(
        "an_undecodable_snapshot_halts_the_replica",
        |sim| async move {
            let cluster = Cluster::<Journal>::new(&sim, 3, None, None).await;
            let mut expected = Vec::new();
            submit_all(&cluster, 1, 1, &[1, 2, 3], &mut expected).await;
            let leader = cluster.check_one_leader().await;
            let victim = (leader + 1) % 3;
            let state = cluster
                .cluster
                .running(victim)
                .raft
                .send(GetState)
                .await
                .expect("running");
            let rogue = cluster.cluster.client_ends(&[victim]).await;
            // No answer comes back: the follower halts before its reply could be released.
            let _ = rogue.ends[victim]
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
            assert_halted(&cluster, victim, "snapshot").await;
            // The two others elect a leader and go on (the rogue term never reached them).
            submit_all(&cluster, 1, 4, &[4], &mut expected).await;
            cluster.cleanup();
        },
    );
}

/// A committed entry that is not a command of this service halts each replica that reaches
/// it: skipping it would hide a bug, and nothing after it could be trusted. Once a majority has
/// halted, the cluster serves nothing (the last replica never learns the entry committed, and
/// cannot be elected alone): unavailable, loudly, rather than wrong.
#[test]
fn an_undecodable_log_entry_halts_the_replicas_that_reach_it() {
    run_test(
        "an_undecodable_log_entry_halts_the_replicas_that_reach_it",
        |sim| async move {
            let cluster = Cluster::<Journal>::new(&sim, 3, None, None).await;
            let mut expected = Vec::new();
            submit_all(&cluster, 1, 1, &[1, 2], &mut expected).await;
            let leader = cluster.check_one_leader().await;
            // 0xc1 is never used in MessagePack.
            let poison = cluster
                .cluster
                .running(leader)
                .raft
                .send(Propose(vec![0xc1]));
            assert!(
                matches!(poison.await, Ok(Ok(_))),
                "the leader took the entry"
            );
            sleep(Duration::from_secs(3)).await;
            let mut halted = Vec::new();
            for i in 0..3 {
                if let Health::Halted { .. } = cluster.health(i).await {
                    assert_halted(&cluster, i, "does not decode").await;
                    halted.push(i);
                }
            }
            assert!(halted.len() >= 2, "only {halted:?} halted");
            for i in (0..3).filter(|i| !halted.contains(i)) {
                assert_eq!(
                    cluster.submit(i, Some((5, 1)), 5).await,
                    Err(SubmitError::WrongLeader),
                    "the last replica serves alone"
                );
            }
            cluster.cleanup();
        },
    );
}

/// A save that fails (here: the store is closed under the running replica) halts the
/// replica: answering anything could acknowledge state that is not durable.
#[test]
fn a_failed_save_halts_the_replica() {
    run_test("a_failed_save_halts_the_replica", |sim| async move {
        let dir = std::env::temp_dir().join(format!(
            "rainkv-failed-save-{}-{}",
            sim.seed(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let options = ClusterOptions {
            servers: 3,
            storage: StorageKind::Files(dir.clone()),
            ..Default::default()
        };
        let cluster = Cluster::<Journal>::with_options(&sim, options, None).await;
        let mut expected = Vec::new();
        submit_all(&cluster, 1, 1, &[1, 2], &mut expected).await;
        let leader = cluster.check_one_leader().await;
        let victim = (leader + 1) % 3;
        match cluster.cluster.storage(victim) {
            Some(TestStore::Files(files)) => files.close(),
            _ => panic!("replica {victim} has no file store"),
        }
        submit_all(&cluster, 1, 3, &[3], &mut expected).await;
        assert_halted(&cluster, victim, "cannot save").await;
        cluster.cleanup();
        let _ = std::fs::remove_dir_all(&dir);
    });
}

// ---------------------------------------------------------------------------------------------
// The checker against an injected bug

/// A KV face like `KvServer`, with one switch for the injected bug: with `stale_reads`, a Get
/// is answered from the local state of a replica that believes it leads, without going
/// through the log. A leader cut off from the majority keeps believing it leads, and serves
/// stale values.
struct KvFace {
    rsm: Addr<Rsm<KvStore>>,
    raft: Addr<RaftPeer>,
    stale_reads: bool,
}

impl Actor for KvFace {
    type Context = Context<Self>;
}

async fn through_log(
    rsm: &Addr<Rsm<KvStore>>,
    session: Option<Session>,
    command: rainkv::messages::kv::KvCommand,
) -> Result<Option<Bytes>, KvError> {
    let submit = Submit::new(session, command);
    match rsm.send(submit).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(_)) | Err(_) => Err(KvError::WrongLeader),
    }
}

impl Handler<Dispatch> for KvFace {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        let (rsm, raft, stale_reads) = (self.rsm.clone(), self.raft.clone(), self.stale_reads);
        Box::pin(async move {
            let result = match msg.method {
                RegisterArgs::METHOD => {
                    let result = match rsm.send(RegisterSession).await {
                        Ok(Ok(client)) => Ok(client),
                        Ok(Err(_)) | Err(_) => Err(KvError::WrongLeader),
                    };
                    return encode(&RegisterReply { result });
                }
                GetArgs::METHOD => {
                    let args = msg.decode::<GetArgs>()?;
                    if !stale_reads {
                        through_log(&rsm, None, args.command()).await
                    } else if raft.send(GetState).await.is_ok_and(|s| s.is_leader()) {
                        let key = args.key;
                        let read = Read::new(move |kv: &KvStore, _| kv.get(&key).cloned());
                        match rsm.send(read).await {
                            Ok(Ok(value)) => Ok(value),
                            Ok(Err(_)) | Err(_) => Err(KvError::WrongLeader),
                        }
                    } else {
                        Err(KvError::WrongLeader)
                    }
                }
                PutAppendArgs::METHOD => {
                    let args = msg.decode::<PutAppendArgs>()?;
                    let session = Some((args.client_id, args.seq));
                    through_log(&rsm, session, args.command()).await
                }
                other => return Err(RpcError::UnknownMethod(other.to_string())),
            };
            encode(&KvReply { result })
        })
    }
}

/// A clerk named `name` whose ends reach the servers in `order` (all enabled); returns it with
/// its end names in that order.
async fn make_clerk(sim: &Sim, name: &str, order: &[usize]) -> (Clerk, Vec<String>) {
    let net = sim.network();
    let mut ends = Vec::new();
    let mut names = Vec::new();
    for &j in order {
        let end_name = format!("clerk-{name}-to-{j}");
        let end = net
            .make_end(&end_name, None)
            .await
            .unwrap_or_else(|e| panic!("make_clerk({name}): {e}"));
        net.connect(&end_name, &j.to_string());
        net.enable(&end_name, true);
        ends.push(end);
        names.push(end_name);
    }
    (Clerk::start(ends), names)
}

/// Runs one operation on `clerk` and records it in `log` as `client`, with virtual times since
/// `t0`; returns the value read (Get) or "".
async fn logged(
    log: &OpLog,
    t0: Instant,
    clerk: &Clerk,
    client: u64,
    op: KvOp,
    key: &str,
    value: &str,
) -> String {
    let call = t0.elapsed().as_nanos() as u64;
    let (k, v) = (key.to_string(), value.to_string());
    let read = match op {
        KvOp::Get => clerk.get_string(k).await.map(Option::unwrap_or_default),
        KvOp::Put => clerk.put(k, v).await.map(|()| String::new()),
        KvOp::Append => clerk.append(k, v).await.map(|()| String::new()),
    }
    .expect("the clerk runs");
    log.push(Operation {
        client_id: client,
        input: KvInput {
            op,
            key: key.to_string(),
            value: value.to_string(),
        },
        call,
        output: KvOutput {
            value: read.clone(),
        },
        return_time: t0.elapsed().as_nanos() as u64,
    });
    read
}

/// Three KV servers. A writer puts k=v0 and other=x; the leader is then cut off from the
/// other two (clerks still reach it), and the writer puts k=v1 through the majority. 100 ms
/// after that Put returned, a reader whose first end is the old leader gets k (and other); then the
/// network heals and the writer reads k. Returns the history and the value the reader got.
async fn stale_leader_scenario(sim: Sim, stale_reads: bool) -> (OpLog, String) {
    let face: Face<KvStore> = Box::new(move |rsm, raft| {
        KvFace {
            rsm: rsm.clone(),
            raft: raft.clone(),
            stale_reads,
        }
        .start()
        .recipient()
    });
    // Without check-quorum, a leader cut off from the majority believes it leads until it
    // hears of a later term: the window the injected bug needs. (With it, that window is at
    // most an election timeout, and this scenario would race the old leader's step-down.)
    let options = ClusterOptions {
        servers: 3,
        raft: RaftConfig {
            check_quorum: false,
            ..RaftConfig::default()
        },
        ..Default::default()
    };
    let cluster = Cluster::<KvStore>::with_options(&sim, options, Some(face)).await;
    let (log, t0) = (OpLog::new(), Instant::now());
    let leader = cluster.check_one_leader().await;
    let others: Vec<usize> = (0..cluster.n).filter(|&i| i != leader).collect();
    let (writer, writer_ends) = make_clerk(&sim, "writer", &cluster.all()).await;
    let reader_order: Vec<usize> = [vec![leader], others.clone()].concat();
    let (reader, _) = make_clerk(&sim, "reader", &reader_order).await;

    logged(&log, t0, &writer, 1, KvOp::Put, "k", "v0").await;
    logged(&log, t0, &writer, 1, KvOp::Put, "other", "x").await;
    cluster.partition(&[leader], &others);
    sim.network().enable(&writer_ends[leader], false);
    logged(&log, t0, &writer, 1, KvOp::Put, "k", "v1").await;
    // The checker reads operations that touch in time (same virtual instant) as concurrent;
    // the Get must start strictly after the Put returned for a stale value to be a violation.
    sleep(Duration::from_millis(100)).await;
    let read = logged(&log, t0, &reader, 2, KvOp::Get, "k", "").await;
    let other = logged(&log, t0, &reader, 2, KvOp::Get, "other", "").await;
    assert_eq!(
        other, "x",
        "the reader's Get of a key written before the partition"
    );
    cluster.connect_all();
    sim.network().enable(&writer_ends[leader], true);
    let last = logged(&log, t0, &writer, 1, KvOp::Get, "k", "").await;
    assert_eq!(last, "v1", "the writer's Get after the heal");
    cluster.cleanup();
    (log, read)
}

/// The injected bug (Gets served from a stale leader's local state) produces a history the
/// checker rejects, naming the key and the stale read.
#[test]
fn checker_catches_stale_reads() {
    run_test("checker_catches_stale_reads", |sim| async move {
        let (log, read) = stale_leader_scenario(sim, true).await;
        assert_eq!(read, "v0", "the stale leader did not serve the stale value");
        match check_operations::<KvModel>(&log.snapshot(), Duration::from_secs(10)) {
            CheckResult::Illegal(violation) => {
                assert_eq!(violation.partition, "k");
                let explanation = violation.to_string();
                assert!(
                    explanation.contains("partition 'k'")
                        && explanation.contains("get('k') -> 'v0'"),
                    "the explanation does not name the key and the stale read:\n{explanation}"
                );
            }
            other => panic!("the checker missed the stale read: {other}"),
        }
    });
}

/// The same scenario with Gets through the log: the reader waits out the stale leader, gets
/// the new value, and the history is linearizable.
#[test]
fn checker_passes_reads_through_the_log() {
    run_test("checker_passes_reads_through_the_log", |sim| async move {
        let (log, read) = stale_leader_scenario(sim, false).await;
        assert_eq!(
            read, "v1",
            "a Get through the log after the Put of v1 returned"
        );
        log.check_linearizable(
            "checker_passes_reads_through_the_log",
            Duration::from_secs(10),
        );
    });
}
