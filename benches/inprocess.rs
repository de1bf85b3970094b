//! The actor pipeline's throughput with nothing slow under it: three replicas of a batching
//! key/value state machine in one process, on the in-process network actor with no latency,
//! each on a `MemPersister` (no disk), no TCP. Many clients submit batches of puts to the
//! leader's replicated state machine, so a batch, not an operation, pays each mailbox hop,
//! log entry, AppendEntries and apply message; what remains per operation is encoding it and
//! applying it three times. Real (wall-clock) time, one thread, as `rainkv serve` runs.
//!
//! `cargo bench --bench inprocess` prints, per batch size, ops/s and the batches' latency.

// The allocator `rainkv serve` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::join_all;
use rainkv::actors::kv_server::apply_to_map;
use rainkv::actors::network::{Network, NetworkHandle};
use rainkv::actors::raft::RaftConfig;
use rainkv::actors::rsm::{ReplicaSetup, Rsm, SessionPolicy, StateMachine};
use rainkv::messages::kv::KvCommand;
use rainkv::messages::net::Server;
use rainkv::messages::raft::{GetState, Membership};
use rainkv::messages::rsm::{Submit, SubmitError};
use rainkv::metrics::Metrics;
use rainkv::storage::MemPersister;
use rainkv::trace::Tracer;
use serde::{Deserialize, Serialize};

/// Replicas.
const NODES: usize = 3;
/// Clients, each with one batch in flight.
const CLIENTS: usize = 32;
/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(3);
/// Bytes per key and per value, as in `rainkv bench`.
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 128;
/// Distinct keys.
const KEYS: usize = 10_000;

/// A key/value map whose log commands are batches of KV commands, applied in order.
#[derive(Default, Serialize, Deserialize)]
struct BatchStore {
    data: BTreeMap<Bytes, Bytes>,
}

impl StateMachine for BatchStore {
    type Command = Vec<KvCommand>;
    type Output = Vec<Option<Bytes>>;

    fn apply(&mut self, batch: Vec<KvCommand>) -> Vec<Option<Bytes>> {
        batch
            .into_iter()
            .map(|command| apply_to_map(&mut self.data, command))
            .collect()
    }
}

type Replica = Addr<Rsm<BatchStore>>;

/// Starts the three replicas on a zero-latency network; returns them and their Raft peers.
async fn start_cluster() -> Vec<(Replica, Addr<rainkv::actors::raft::RaftPeer>)> {
    let net = NetworkHandle::from_actor(Network::new(1).with_latency(Duration::ZERO));
    let mut replicas = Vec::new();
    for i in 0..NODES {
        let names: Vec<String> = (0..NODES).map(|j| format!("{i}-{j}")).collect();
        let peers = net
            .make_peer_ends(&i.to_string(), &names)
            .await
            .expect("peer ends");
        for name in &names {
            net.enable(name, true);
        }
        let (rsm, raft) = Rsm::<BatchStore>::start(ReplicaSetup {
            id: i,
            peers,
            initial_members: Membership::with_voters(NODES),
            connect: None,
            persister: MemPersister::new(),
            raft: RaftConfig::default(),
            max_raft_state: Some(8 << 20),
            proportional_snapshots: true,
            seed: i as u64 + 1,
            sessions: SessionPolicy::default(),
            trace: Tracer::off(),
            metrics: Metrics::off(),
        })
        .expect("replica starts");
        net.add_server(
            &i.to_string(),
            Server::new().with_service("Raft", raft.clone().recipient()),
        );
        replicas.push((rsm, raft));
    }
    replicas
}

/// The replica whose peer leads, once one does.
async fn leader(replicas: &[(Replica, Addr<rainkv::actors::raft::RaftPeer>)]) -> Replica {
    loop {
        for (rsm, raft) in replicas {
            if raft.send(GetState).await.is_ok_and(|s| s.is_leader()) {
                return rsm.clone();
            }
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!(
        "bench-{i:0width$}",
        width = KEY_BYTES - "bench-".len()
    ))
}

/// One client: batches of `batch` puts until `deadline`; returns (operations, batch
/// latencies).
async fn client(
    leader: Replica,
    batch: usize,
    seed: usize,
    deadline: Instant,
) -> (usize, Vec<Duration>) {
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let mut next = seed.wrapping_mul(7919);
    let (mut ops, mut latencies) = (0, Vec::new());
    while Instant::now() < deadline {
        let commands: Vec<KvCommand> = (0..batch)
            .map(|_| {
                next = (next + 104_729) % KEYS;
                KvCommand::Put {
                    key: key(next),
                    value: value.clone(),
                }
            })
            .collect();
        let started = Instant::now();
        let done: Result<Result<Vec<Option<Bytes>>, SubmitError>, _> =
            leader.send(Submit::new(None, commands)).await;
        match done {
            Ok(Ok(outputs)) => {
                assert_eq!(outputs.len(), batch);
                ops += batch;
                latencies.push(started.elapsed());
            }
            other => panic!("a batch failed: {other:?}"),
        }
    }
    (ops, latencies)
}

fn main() {
    actix_rt::System::new().block_on(async {
        let replicas = start_cluster().await;
        let leader = leader(&replicas).await;
        println!(
            "{NODES} replicas in one process (in-process network, MemPersister), {CLIENTS} \
             clients each with one batch of puts in flight ({KEY_BYTES} B keys, \
             {VALUE_BYTES} B values), {RUN:?} per row"
        );
        for batch in [1, 16, 128, 1024] {
            let deadline = Instant::now() + RUN;
            let started = Instant::now();
            let runs = (0..CLIENTS).map(|c| client(leader.clone(), batch, c, deadline));
            let results = join_all(runs).await;
            let elapsed = started.elapsed().as_secs_f64();
            let ops: usize = results.iter().map(|(ops, _)| ops).sum();
            let mut latencies: Vec<Duration> = results.into_iter().flat_map(|(_, l)| l).collect();
            latencies.sort();
            let at = |q: f64| {
                latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
            };
            println!(
                "batch={batch} ops_per_s={:.0} batches_per_s={:.0} batch_p50_ms={:.3} \
                 batch_p99_ms={:.3}",
                ops as f64 / elapsed,
                latencies.len() as f64 / elapsed,
                at(0.5).as_secs_f64() * 1e3,
                at(0.99).as_secs_f64() * 1e3,
            );
        }
        System::current().stop();
    });
}
