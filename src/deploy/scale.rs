//! How cost grows, behind `rainkv bench --scale`: the benchmark's workloads (reused from
//! [`bench`](mod@super::bench)) swept over the number of clients and the value size, and a
//! cluster loaded with more and more keys, measured at each count for memory per key, the
//! last snapshot's encoding and writing, a node's restart and a wiped node's catch-up.
//! Everything runs against three nodes on loopback in this process ([`LocalCluster`]: real
//! TCP, real disks, fsync on). An [`EtcdBench`], when given, measures etcd at the same
//! points of the first two sweeps, before any RainKV node starts.
//!
//! Each figure is also a line of text (`scale ...`), handed to the caller as it is measured.

use std::cell::Cell;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::bench::{preload, run_one, BenchProgress, Shape, Workload, OP_PATIENCE, VALUE_BYTES};
use super::client::ClusterClient;
use super::cluster_file::NodeAddrs;
use super::local::{bind, launch_with, local_addr, LocalCluster, LocalOptions};
use super::node::{NodeError, TcpNode};
use super::stats::{millis, WorkloadResult};
use super::store::open_store;
use crate::messages::raft::{GetState, MembershipChange};
use crate::messages::rsm::Health;
use crate::metrics::SnapshotCost;

/// How long to wait for a leader, a restarted node or a catch-up before giving up.
const PATIENCE: Duration = Duration::from_secs(900);
/// How often a load looks for a new snapshot, and a wait asks a node how far it got.
const POLL: Duration = Duration::from_millis(100);
/// Bytes in each value of the key-count sweep: small, so that a key's cost is the store's
/// own rather than its payload's.
pub const KEY_SWEEP_VALUE_BYTES: usize = 16;

/// What to sweep.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Client counts of the first sweep (puts, then linearizable gets, over 10 000 keys).
    pub clients: Vec<usize>,
    /// Operations per client at each client count, within `ops_range`.
    pub ops_per_client: usize,
    /// The fewest and the most operations of one measured run.
    pub ops_range: (usize, usize),
    /// Value sizes of the second sweep (puts by `value_clients` clients).
    pub value_sizes: Vec<usize>,
    /// Clients of the value-size sweep.
    pub value_clients: usize,
    /// Bytes each value-size run puts in all (so big values run fewer operations), and the
    /// most bytes its keys may hold (so big values use fewer keys).
    pub value_budget: (usize, usize),
    /// Key counts of the third sweep, ascending: the cluster is loaded up to each in turn.
    pub key_counts: Vec<usize>,
    /// Clients loading keys.
    pub load_clients: usize,
}

impl ScaleOptions {
    /// The full sweep: 1 to 256 clients, 16 B to 1 MiB values, 10 thousand to 10 million keys.
    pub fn full() -> Self {
        ScaleOptions {
            clients: vec![1, 4, 16, 64, 256],
            ops_per_client: 250,
            ops_range: (2000, 20_000),
            value_sizes: vec![16, 256, 4 << 10, 64 << 10, 1 << 20],
            value_clients: 16,
            value_budget: (64 << 20, 16 << 20),
            key_counts: vec![10_000, 100_000, 1_000_000, 10_000_000],
            load_clients: 256,
        }
    }

    /// A few seconds' worth of every sweep, for tests and a first look.
    pub fn quick() -> Self {
        ScaleOptions {
            clients: vec![1, 4, 16],
            ops_per_client: 20,
            ops_range: (50, 200),
            value_sizes: vec![16, 4 << 10, 64 << 10],
            value_clients: 4,
            value_budget: (2 << 20, 1 << 20),
            key_counts: vec![1000, 4000],
            load_clients: 16,
        }
    }

    /// Operations of a run with `clients` clients.
    fn client_ops(&self, clients: usize) -> usize {
        let (least, most) = self.ops_range;
        (clients * self.ops_per_client).clamp(least, most.max(least))
    }

    /// Operations and key space of a run with values of `bytes`.
    fn value_shape(&self, bytes: usize) -> (usize, usize) {
        let (put, held) = self.value_budget;
        let (least, most) = self.ops_range;
        let ops = (put / bytes.max(1)).clamp(least.min(100), most.max(least));
        let keys = (held / bytes.max(1)).clamp(self.value_clients.max(1), CLIENT_SWEEP_KEYS);
        (ops, keys)
    }
}

/// Keys of the client-count sweep (the reference benchmark's).
pub const CLIENT_SWEEP_KEYS: usize = 10_000;

/// Throughput and tail latency of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Completed operations per second.
    pub ops_per_s: f64,
    /// The 99th percentile latency.
    pub p99: Duration,
}

impl From<&WorkloadResult> for Measured {
    fn from(result: &WorkloadResult) -> Self {
        Measured {
            ops_per_s: result.ops_per_s(),
            p99: result.latencies.percentile(99.0),
        }
    }
}

/// One run of etcd's load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdRun {
    /// Puts (`false`: linearizable gets).
    pub put: bool,
    /// Requests in flight.
    pub clients: usize,
    /// Requests measured.
    pub ops: usize,
    /// Keys, preloaded.
    pub key_space: usize,
    /// Bytes in each value.
    pub value_bytes: usize,
}

/// Measures etcd (a 3-member cluster it started) with the load generator.
pub trait EtcdBench {
    /// Runs `run`.
    fn measure(&mut self, run: EtcdRun) -> Result<Measured, String>;
}

/// A point of the client-count sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientsPoint {
    /// Clients, each with one request in flight.
    pub clients: usize,
    /// RainKV's puts and gets.
    pub put: Measured,
    /// RainKV's linearizable gets.
    pub get: Measured,
    /// etcd's puts and gets, if etcd was measured.
    pub etcd: Option<(Measured, Measured)>,
}

/// A point of the value-size sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct ValuePoint {
    /// Bytes in each value.
    pub value_bytes: usize,
    /// RainKV's puts.
    pub put: Measured,
    /// etcd's puts, if etcd was measured.
    pub etcd: Option<Measured>,
}

/// A point of the key-count sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct KeysPoint {
    /// Keys in the store.
    pub keys: usize,
    /// How long loading up to here from the previous point took.
    pub load: Duration,
    /// The process's resident memory growth since the empty cluster started, per key (three
    /// replicas and the client: one process), if the system tells it.
    pub rss_per_key: Option<f64>,
    /// The last snapshot the leader took (its encoding and writing), and about how many keys
    /// it held.
    pub snapshot: Option<(usize, SnapshotCost)>,
    /// A follower killed and restarted from its data directory, until it answers as serving
    /// with everything committed before it was killed applied (`Err`: why not).
    pub restart: Result<Duration, String>,
    /// A new node started from an empty data directory and added as a learner, until it has
    /// applied everything committed when it started (it is removed again afterwards).
    pub catch_up: Result<Duration, String>,
}

/// Everything measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleReport {
    /// The client-count sweep.
    pub clients: Vec<ClientsPoint>,
    /// The value-size sweep (and its clients).
    pub values: (usize, Vec<ValuePoint>),
    /// The key-count sweep.
    pub keys: Vec<KeysPoint>,
    /// Every snapshot the leader took while keys were loaded: about how many keys it held,
    /// and its cost.
    pub snapshots: Vec<(usize, SnapshotCost)>,
    /// Why etcd was not measured, if it was not.
    pub etcd_absent: Option<String>,
}

/// `ops_per_s=<n> p99_ms=<x>`.
fn figures(m: &Measured) -> String {
    format!("ops_per_s={:.0} p99_ms={:.3}", m.ops_per_s, millis(m.p99))
}

/// Seconds with three decimals, or `-` and why in a comment.
fn seconds(d: &Result<Duration, String>) -> String {
    match d {
        Ok(d) => format!("{:.3}", d.as_secs_f64()),
        Err(_) => "-".to_string(),
    }
}

impl KeysPoint {
    /// `scale keys=<n> ...`: the point's figures on one line.
    pub fn line(&self) -> String {
        let mut line = format!(
            "scale keys={} load_s={:.1} rss_bytes_per_key={} restart_s={} catch_up_s={}",
            self.keys,
            self.load.as_secs_f64(),
            self.rss_per_key
                .map_or("-".to_string(), |b| format!("{b:.0}")),
            seconds(&self.restart),
            seconds(&self.catch_up),
        );
        if let Some((keys, cost)) = &self.snapshot {
            line.push_str(&format!(" last_snapshot:{}", snapshot_line(*keys, cost)));
        }
        line
    }
}

/// `keys=<n> bytes=<n> encode_s=<x> save_s=<x>`.
pub fn snapshot_line(keys: usize, cost: &SnapshotCost) -> String {
    format!(
        "keys={keys} bytes={} encode_s={:.3} save_s={}",
        cost.bytes,
        cost.encode.as_secs_f64(),
        cost.save
            .map_or("-".to_string(), |d| format!("{:.3}", d.as_secs_f64())),
    )
}

/// The measured etcd figures of both etcd sweeps, in sweep order.
type EtcdFigures = (Vec<(Measured, Measured)>, Vec<Measured>);

/// Runs etcd at every point of the first two sweeps.
fn measure_etcd(
    etcd: &mut dyn EtcdBench,
    options: &ScaleOptions,
    say: &mut dyn FnMut(&str),
) -> Result<EtcdFigures, String> {
    let mut clients = Vec::new();
    for &c in &options.clients {
        let mut run = EtcdRun {
            put: true,
            clients: c,
            ops: options.client_ops(c),
            key_space: CLIENT_SWEEP_KEYS,
            value_bytes: VALUE_BYTES,
        };
        let put = etcd.measure(run)?;
        run.put = false;
        let get = etcd.measure(run)?;
        say(&format!(
            "scale clients={c} system=etcd workload=put {}",
            figures(&put)
        ));
        say(&format!(
            "scale clients={c} system=etcd workload=get {}",
            figures(&get)
        ));
        clients.push((put, get));
    }
    let mut values = Vec::new();
    for &bytes in &options.value_sizes {
        let (ops, key_space) = options.value_shape(bytes);
        let put = etcd.measure(EtcdRun {
            put: true,
            clients: options.value_clients,
            ops,
            key_space,
            value_bytes: bytes,
        })?;
        say(&format!(
            "scale value_bytes={bytes} system=etcd workload=put {}",
            figures(&put)
        ));
        values.push(put);
    }
    Ok((clients, values))
}

/// The resident memory of this process, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Starts three nodes that count (for their snapshots' costs) and waits for a leader.
async fn start_cluster() -> Result<LocalCluster, String> {
    let cluster = LocalCluster::start(LocalOptions {
        metrics: true,
        ..LocalOptions::default()
    })
    .await
    .map_err(|e: NodeError| format!("cannot start the local cluster: {e}"))?;
    if cluster.client().wait_for_leader(PATIENCE).await.is_none() {
        return Err("the local cluster elected no leader".into());
    }
    Ok(cluster)
}

/// Runs the sweeps; `say` hears each figure's line as it is measured. `etcd`, if given, is
/// measured first; if it fails, the report says why and goes on without it.
pub async fn run_scale(
    options: &ScaleOptions,
    etcd: Result<&mut dyn EtcdBench, String>,
    say: &mut dyn FnMut(&str),
) -> Result<ScaleReport, String> {
    let (etcd_figures, etcd_absent) = match etcd {
        Ok(etcd) => match measure_etcd(etcd, options, say) {
            Ok(figures) => (Some(figures), None),
            Err(why) => (None, Some(format!("etcd failed: {why}"))),
        },
        Err(why) => (None, Some(why)),
    };
    if let Some(why) = &etcd_absent {
        say(&format!("scale etcd=absent why={why:?}"));
    }
    let (etcd_clients, etcd_values) = match etcd_figures {
        Some((c, v)) => (
            c.into_iter().map(Some).collect(),
            v.into_iter().map(Some).collect(),
        ),
        None => (vec![], vec![]),
    };
    // Keys first, so that the memory the process grows by is theirs alone (the allocator
    // keeps what a stopped cluster freed, which would hide the growth).
    let (keys, snapshots) = key_sweep(options, say).await?;
    let mut cluster = start_cluster().await?;
    let clients = client_sweep(cluster.client(), options, &etcd_clients, say).await;
    let values = value_sweep(cluster.client(), options, &etcd_values, say).await;
    cluster.shutdown().await;
    Ok(ScaleReport {
        clients,
        values: (options.value_clients, values),
        keys,
        snapshots,
        etcd_absent,
    })
}

/// Runs `workload` in `shape` without progress reports.
async fn measure(client: &ClusterClient, workload: Workload, shape: Shape) -> Measured {
    Measured::from(
        &run_one(
            &|| client.clerk(),
            workload,
            shape,
            &mut |_: BenchProgress<'_>| {},
        )
        .await,
    )
}

async fn client_sweep(
    client: &ClusterClient,
    options: &ScaleOptions,
    etcd: &[Option<(Measured, Measured)>],
    say: &mut dyn FnMut(&str),
) -> Vec<ClientsPoint> {
    let keys = (0..CLIENT_SWEEP_KEYS, VALUE_BYTES);
    preload(&|| client.clerk(), 64, keys, &Cell::new(0)).await;
    let mut points = Vec::new();
    for (i, &clients) in options.clients.iter().enumerate() {
        let shape = Shape {
            clients,
            ops: options.client_ops(clients),
            key_space: CLIENT_SWEEP_KEYS,
            value_bytes: VALUE_BYTES,
            patience: OP_PATIENCE,
        };
        let put = measure(client, Workload::Put, shape).await;
        let get = measure(client, Workload::Get, shape).await;
        say(&format!(
            "scale clients={clients} system=rainkv workload=put {}",
            figures(&put)
        ));
        say(&format!(
            "scale clients={clients} system=rainkv workload=get {}",
            figures(&get)
        ));
        points.push(ClientsPoint {
            clients,
            put,
            get,
            etcd: etcd.get(i).copied().flatten(),
        });
    }
    points
}

async fn value_sweep(
    client: &ClusterClient,
    options: &ScaleOptions,
    etcd: &[Option<Measured>],
    say: &mut dyn FnMut(&str),
) -> Vec<ValuePoint> {
    let mut points = Vec::new();
    for (i, &value_bytes) in options.value_sizes.iter().enumerate() {
        let (ops, key_space) = options.value_shape(value_bytes);
        let shape = Shape {
            clients: options.value_clients,
            ops,
            key_space,
            value_bytes,
            patience: OP_PATIENCE,
        };
        let put = measure(client, Workload::Put, shape).await;
        say(&format!(
            "scale value_bytes={value_bytes} system=rainkv workload=put {}",
            figures(&put)
        ));
        points.push(ValuePoint {
            value_bytes,
            put,
            etcd: etcd.get(i).copied().flatten(),
        });
    }
    points
}

/// The leader's last snapshot, if it took one.
async fn leader_snapshot(cluster: &LocalCluster) -> Option<SnapshotCost> {
    let leader = cluster.leader().await?;
    cluster.node(leader)?.metrics().last_snapshot()
}

/// Loads the cluster up to each key count in turn and measures it there.
async fn key_sweep(
    options: &ScaleOptions,
    say: &mut dyn FnMut(&str),
) -> Result<(Vec<KeysPoint>, Vec<(usize, SnapshotCost)>), String> {
    let mut cluster = start_cluster().await?;
    let empty = resident_bytes();
    let mut points = Vec::new();
    let mut snapshots: Vec<(usize, SnapshotCost)> = Vec::new();
    let mut loaded = 0;
    for &keys in &options.key_counts {
        let started = Instant::now();
        let done = Cell::new(loaded);
        let range = (loaded..keys.max(loaded), KEY_SWEEP_VALUE_BYTES);
        let new_clerk = || cluster.client().clerk();
        let load = preload(&new_clerk, options.load_clients, range, &done);
        let mut load = Box::pin(load);
        // While loading, note each new snapshot the leader takes and the keys loaded by then.
        let ok = loop {
            tokio::select! {
                ok = &mut load => break ok,
                _ = sleep(POLL) => {}
            }
            if let Some(cost) = leader_snapshot(&cluster).await {
                match snapshots.last_mut() {
                    // Seen before: its save may have finished since.
                    Some((_, last)) if last.index == cost.index => *last = cost,
                    _ => snapshots.push((done.get(), cost)),
                }
            }
        };
        drop(load);
        if !ok {
            return Err(format!("loading {keys} keys failed (see the log)"));
        }
        loaded = keys.max(loaded);
        let load = started.elapsed();
        let rss_per_key = match (empty, resident_bytes()) {
            (Some(empty), Some(now)) => Some(now.saturating_sub(empty) as f64 / loaded as f64),
            _ => None,
        };
        let snapshot = match leader_snapshot(&cluster).await {
            Some(cost) => {
                let seen = snapshots.iter_mut().find(|(_, c)| c.index == cost.index);
                let keys = match seen {
                    Some((keys, last)) => {
                        *last = cost;
                        *keys
                    }
                    None => loaded,
                };
                Some((keys, cost))
            }
            None => None,
        };
        let restart = restart_follower(&mut cluster).await;
        let catch_up = catch_up_learner(&cluster, points.len()).await;
        let point = KeysPoint {
            keys: loaded,
            load,
            rss_per_key,
            snapshot,
            restart,
            catch_up,
        };
        say(&point.line());
        points.push(point);
    }
    for (keys, cost) in &snapshots {
        say(&format!("scale snapshot {}", snapshot_line(*keys, cost)));
    }
    cluster.shutdown().await;
    Ok((points, snapshots))
}

/// The leader's commit index, asked over its client port.
async fn leader_commit(cluster: &LocalCluster) -> Result<u64, String> {
    let leader = cluster.leader().await.ok_or("no leader")?;
    let reports = cluster.client().status(Duration::from_secs(5)).await;
    reports
        .get(leader)
        .and_then(|r| r.status.as_ref().ok())
        .and_then(|s| s.raft)
        .map(|r| r.commit_index)
        .ok_or_else(|| "the leader gave no status".to_string())
}

/// Kills a follower, restarts it from its data directory, and times it from the restart
/// until it answers on its client port as serving, with everything committed at the kill
/// applied.
async fn restart_follower(cluster: &mut LocalCluster) -> Result<Duration, String> {
    let leader = cluster.leader().await.ok_or("no leader")?;
    let follower = (0..cluster.len())
        .find(|&i| i != leader)
        .ok_or("no follower")?;
    let target = leader_commit(cluster).await?;
    cluster.kill(follower).await;
    let started = Instant::now();
    cluster.restart(follower).await.map_err(|e| e.to_string())?;
    while started.elapsed() < PATIENCE {
        let reports = cluster.client().status(Duration::from_secs(5)).await;
        let status = reports.get(follower).and_then(|r| r.status.as_ref().ok());
        if let Some(status) = status {
            if let Health::Halted { reason } = &status.health {
                return Err(format!("node {follower} halted: {reason}"));
            }
            if status.raft.is_some_and(|r| r.last_applied >= target) {
                return Ok(started.elapsed());
            }
        }
        sleep(POLL / 5).await;
    }
    Err(format!(
        "node {follower} did not catch up within {PATIENCE:?}"
    ))
}

/// Brings up a new node from an empty data directory and adds it as a learner (the
/// README's way to replace a lost node), times it until it has applied everything committed
/// when it started, then removes it again. `round` numbers it (ids are not reused).
async fn catch_up_learner(cluster: &LocalCluster, round: usize) -> Result<Duration, String> {
    let id = cluster.len() + round;
    let any = ([127, 0, 0, 1], 0).into();
    let (peer, client) = (
        bind("peer", any).map_err(|e| e.to_string())?,
        bind("client", any).map_err(|e| e.to_string())?,
    );
    let me = NodeAddrs {
        id,
        peer: local_addr("peer", &peer).map_err(|e| e.to_string())?,
        client: local_addr("client", &client).map_err(|e| e.to_string())?,
        metrics: None,
    };
    let dir =
        std::env::temp_dir().join(format!("rainkv-scale-{}-learner-{id}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = open_store(&dir).map_err(|e| e.to_string())?;
    let target = leader_commit(cluster).await?;
    let started = Instant::now();
    let config = cluster.config().clone();
    let node = launch_with(&format!("learner {id}"), (peer, client), move |sockets| {
        TcpNode::join(&config, me, sockets, store)
    })
    .await
    .map_err(|e| e.to_string())?;
    let client = cluster.client();
    let add = MembershipChange::AddLearner {
        id,
        contact: me.contact(),
    };
    let caught_up = async {
        client
            .change_member(add, PATIENCE)
            .await
            .map_err(|e| format!("adding learner {id}: {e}"))?;
        while started.elapsed() < PATIENCE {
            if let Ok(state) = node.node.raft().send(GetState).await {
                if state.last_applied >= target {
                    return Ok(started.elapsed());
                }
            }
            sleep(POLL / 5).await;
        }
        Err(format!("learner {id} did not catch up within {PATIENCE:?}"))
    }
    .await;
    if let Err(e) = client
        .change_member(MembershipChange::Remove(id), PATIENCE)
        .await
    {
        log::warn!("removing learner {id}: {e}");
    }
    node.stop(&format!("learner {id}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    caught_up
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_stay_within_their_bounds() {
        let full = ScaleOptions::full();
        assert_eq!(full.client_ops(1), 2000);
        assert_eq!(full.client_ops(256), 20_000);
        // 64 MiB of 1 MiB values: fewer operations than the least, held to 100.
        assert_eq!(full.value_shape(1 << 20), (100, 16));
        assert_eq!(full.value_shape(16), (20_000, CLIENT_SWEEP_KEYS));
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
