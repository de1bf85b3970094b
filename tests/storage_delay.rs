//! Slow disks must not make Raft forget: with the storage actor delaying every save, no vote,
//! no acknowledgement and no commit may leave a peer before the state it stands on is durable.
//!
//! Every server's Raft service sits behind an auditor that sees each request and the reply
//! the peer releases, at the moment it is released, and compares it with what the server's
//! storage holds right then:
//! - a granted vote: the voter's saved term and vote say so (or it has saved a later term);
//! - a successful AppendEntries: the saved log holds the acknowledged entries;
//! - an acknowledged InstallSnapshot: the saved state covers the snapshot;
//! - a leader's commit index, seen in its AppendEntries: a majority of saved logs hold the
//!   entry at that index (the leader may count itself only once its own save is done).
//!
//! The scenarios run a KV workload with leader crashes over disks of different speeds; the
//! auditor's findings fail the test.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use rainkv::actors::kv_server::KvNode;
use rainkv::actors::raft::{RaftPeer, RestoreError};
use rainkv::actors::rsm::ReplicaSetup;
use rainkv::messages::net::{decode, Dispatch, Rpc, RpcError, Server};
use rainkv::messages::raft::{
    AppendEntriesArgs, AppendEntriesReply, InstallSnapshotArgs, InstallSnapshotReply,
    RequestVoteArgs, RequestVoteReply,
};
use rainkv::messages::storage::SavedState;
use rainkv::storage::Persister;
use rainkv::testkit::cluster::{ServerContext, TestStore};
use rainkv::testkit::kv::KvServers;
use rainkv::testkit::{run_test, Cluster, ClusterOptions, ServerKind, Sim};
use tokio::time::sleep;

const SERVERS: usize = 3;

/// What the auditors found, shared by all of them.
type Findings = Rc<RefCell<Vec<String>>>;

/// Every server's storage, as the auditors read it (index = server).
type Stores = Rc<RefCell<Vec<Option<TestStore>>>>;

/// KV servers whose Raft service is audited.
struct Audited {
    stores: Stores,
    findings: Findings,
}

#[derive(Clone)]
struct Node {
    id: usize,
    kv: KvNode,
}

impl ServerKind for Audited {
    type Node = Node;

    fn start(
        &self,
        setup: ReplicaSetup<TestStore>,
        ctx: &mut ServerContext,
    ) -> impl Future<Output = Result<Node, RestoreError>> {
        let id = setup.id;
        self.stores.borrow_mut()[id] = Some(setup.persister.clone());
        let started = KvServers.start(setup, ctx);
        async move { started.await.map(|kv| Node { id, kv }) }
    }

    fn services(&self, node: &Node) -> Server {
        let auditor = Auditor {
            me: node.id,
            raft: node.kv.raft.clone(),
            stores: self.stores.clone(),
            findings: self.findings.clone(),
        }
        .start();
        Server::new()
            .with_service("KVServer", node.kv.kv.clone().recipient())
            .with_service("Raft", auditor.recipient())
    }

    fn raft(&self, node: &Node) -> Addr<RaftPeer> {
        node.kv.raft.clone()
    }

    fn stop(&self, node: &Node) {
        node.kv.kill();
    }
}

/// Stands in front of one peer's Raft service and checks what it releases.
struct Auditor {
    me: usize,
    raft: Addr<RaftPeer>,
    stores: Stores,
    findings: Findings,
}

impl Actor for Auditor {
    type Context = Context<Self>;
}

/// The term of the saved log entry at `index`, past the saved snapshot (`None`: not saved).
fn saved_term_after_snapshot(saved: &SavedState, index: u64) -> Option<u64> {
    let offset = usize::try_from(index.checked_sub(saved.snapshot_index + 1)?).ok()?;
    saved.entries.get(offset).map(|e| e.term)
}

/// Whether the saved state holds the entry of `term` at `index` (a snapshot holds every entry
/// it covers: they are committed).
fn holds(saved: &SavedState, index: u64, term: u64) -> bool {
    index <= saved.snapshot_index || saved_term_after_snapshot(saved, index) == Some(term)
}

impl Auditor {
    fn saved(&self, server: usize) -> Option<SavedState> {
        let stores = self.stores.borrow();
        stores[server].as_ref().and_then(|s| s.load().ok())
    }

    /// A leader announces `commit`: a majority of saved logs must hold its entry there.
    fn audit_commit(&self, args: &AppendEntriesArgs) -> Option<String> {
        let commit = args.leader_commit;
        if commit == 0 {
            return None;
        }
        // Saved logs that hold an entry at `commit`, by its term; snapshots past it hold it
        // whatever its term.
        let mut in_snapshots = 0;
        let mut by_term: BTreeMap<u64, usize> = BTreeMap::new();
        for saved in (0..SERVERS).filter_map(|s| self.saved(s)) {
            if commit <= saved.snapshot_index {
                in_snapshots += 1;
            } else if let Some(term) = saved_term_after_snapshot(&saved, commit) {
                *by_term.entry(term).or_default() += 1;
            }
        }
        let held = in_snapshots + by_term.values().max().copied().unwrap_or(0);
        (held < SERVERS / 2 + 1).then(|| {
            format!(
                "leader {} announced commit {commit} in term {} while only {held} saved logs hold it",
                args.leader_id, args.term
            )
        })
    }

    /// Checks a reply released by this peer against its saved state.
    fn audit_reply(&self, method: &str, args: &[u8], reply: &[u8]) -> Option<String> {
        let saved = self.saved(self.me)?;
        let me = self.me;
        match method {
            RequestVoteArgs::METHOD => {
                let (args, reply): (RequestVoteArgs, RequestVoteReply) =
                    (decode(args).ok()?, decode(reply).ok()?);
                if args.pre_vote {
                    return None; // a pre-vote promises nothing and changes nothing
                }
                let durable = saved.term > args.term
                    || (saved.term == args.term && saved.voted_for == Some(args.candidate_id));
                (reply.vote_granted && !durable).then(|| {
                    format!(
                        "server {me} granted its term-{} vote to {} with term {} vote {:?} saved",
                        args.term, args.candidate_id, saved.term, saved.voted_for
                    )
                })
            }
            AppendEntriesArgs::METHOD => {
                let (args, reply): (AppendEntriesArgs, AppendEntriesReply) =
                    (decode(args).ok()?, decode(reply).ok()?);
                if !reply.success || saved.term > args.term {
                    return None;
                }
                let last = args.prev_log_index + args.entries.len() as u64;
                let missing = args.entries.iter().zip(args.prev_log_index + 1..).find_map(
                    |(entry, index)| (!holds(&saved, index, entry.term)).then_some(index),
                );
                missing.map(|index| {
                    format!(
                        "server {me} acknowledged entries up to {last} (term {}) without entry {index} saved",
                        args.term
                    )
                })
            }
            InstallSnapshotArgs::METHOD => {
                let (args, reply): (InstallSnapshotArgs, InstallSnapshotReply) =
                    (decode(args).ok()?, decode(reply).ok()?);
                let acknowledged = reply.last_included_index;
                let durable = saved.term > args.term || saved.last_index() >= acknowledged;
                (acknowledged > 0 && !durable).then(|| {
                    format!("server {me} acknowledged a snapshot at {acknowledged} not saved")
                })
            }
            _ => None,
        }
    }
}

impl Handler<Dispatch> for Auditor {
    type Result = ResponseActFuture<Self, Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        if msg.method == AppendEntriesArgs::METHOD {
            if let Some(finding) = decode(&msg.args).ok().and_then(|a| self.audit_commit(&a)) {
                self.findings.borrow_mut().push(finding);
            }
        }
        let (method, args) = (msg.method, msg.args.clone());
        let forwarded = self.raft.send(msg);
        Box::pin(forwarded.into_actor(self).map(move |reply, auditor, _| {
            let reply = reply.unwrap_or(Err(RpcError::Unreachable))?;
            // The peer released this reply just now: audit it against the disk as it is.
            if let Some(finding) = auditor.audit_reply(method, &args, &reply) {
                auditor.findings.borrow_mut().push(finding);
            }
            Ok(reply)
        }))
    }
}

/// Runs a workload of puts through clerks while leaders crash, with each server's disk as slow
/// as `latency(server, leader)` says, and fails on any finding.
async fn audited_run(sim: Sim, latency: impl Fn(usize, Option<usize>) -> Duration) {
    let findings = Findings::default();
    let kind = Audited {
        stores: Rc::new(RefCell::new(vec![None; SERVERS])),
        findings: findings.clone(),
    };
    let options = ClusterOptions {
        servers: SERVERS,
        ..Default::default()
    };
    let cluster = Cluster::start(&sim, kind, options).await;
    let set_latencies = |cluster: &Cluster<Audited>, leader| {
        for i in 0..SERVERS {
            cluster.set_disk_latency(i, latency(i, leader));
        }
    };
    set_latencies(&cluster, None);
    let ends = cluster.client_ends(&cluster.all()).await;
    let clerk = rainkv::actors::clerk::Clerk::start(ends.ends.clone());
    for round in 0..4 {
        let leader = cluster.check_one_leader().await;
        set_latencies(&cluster, Some(leader));
        for k in 0..15 {
            clerk
                .append("log", format!("{round}.{k},"))
                .await
                .expect("the clerk runs");
        }
        cluster.crash(leader);
        sleep(Duration::from_millis(300)).await;
        cluster.restart(leader).await;
        cluster.connect(leader);
        set_latencies(&cluster, cluster.leader().await);
    }
    let expected: String = (0..4)
        .flat_map(|round| (0..15).map(move |k| format!("{round}.{k},")))
        .collect();
    let log = clerk.get_string("log").await.expect("the clerk runs");
    assert_eq!(log.as_deref(), Some(expected.as_str()));
    cluster.shutdown();
    let findings = findings.borrow();
    assert!(
        findings.is_empty(),
        "{} releases ahead of the disk, the first ones:\n{}",
        findings.len(),
        findings[..findings.len().min(5)].join("\n")
    );
}

/// Every disk takes 50 ms per save: votes and acknowledgements wait for them.
#[test]
fn no_vote_or_acknowledgement_leaves_before_it_is_saved() {
    run_test(
        "no_vote_or_acknowledgement_leaves_before_it_is_saved",
        |sim| async move {
            audited_run(sim, |_, _| Duration::from_millis(50)).await;
        },
    );
}

/// The leader's disk and one follower's take 200 ms per save, the other follower's none: a
/// leader that counted its own unsaved log would commit on one saved copy of three.
#[test]
fn a_leader_commits_only_on_a_saved_majority() {
    run_test(
        "a_leader_commits_only_on_a_saved_majority",
        |sim| async move {
            audited_run(sim, |i, leader| match leader {
                Some(l) if i == l || i == (l + 1) % SERVERS => Duration::from_millis(200),
                Some(_) => Duration::ZERO,
                None => Duration::from_millis(20),
            })
            .await;
        },
    );
}
