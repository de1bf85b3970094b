//! What a node counts for its `/metrics` page: the few numbers no actor keeps already.
//!
//! A [`Metrics`] handle is handed to the actors that count (the Raft peer: proposals, reads,
//! snapshots; its storage actor: saves and their latency; the deploy layer's wrappers around
//! the client port's services and the peer links: requests, RPCs and bytes). Off
//! ([`Metrics::off`], the default) it holds nothing, and each count is one branch on a
//! `None`, like [`Tracer::off`](crate::trace::Tracer::off). On, clones share one
//! [`Registry`] of atomic counters and fixed-bucket [`Histogram`]s; the labelled ones (per
//! peer and method, per client method and outcome) sit in small maps behind a mutex, taken
//! for a few nanoseconds per count. Numbers an actor already knows (term, role, commit and
//! applied index, membership, connection counters) are not counted here: the metrics
//! service asks for them at scrape time. [`text`] writes the Prometheus text format.

pub mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use text::{Exposition, Kind};

/// The latency buckets, in seconds: from half a millisecond (a local fsync, a read) to ten
/// seconds (a write that waited out elections).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with fixed buckets: each observation goes into the first bucket whose upper
/// bound (in seconds) it does not exceed, or into the last, unbounded one.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then the overflow (not cumulative).
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram with upper bounds `bounds` (ascending, in seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Its counts now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// The buckets' upper bounds, in seconds.
    pub bounds: &'static [f64],
    /// One count per bound, then the overflow (not cumulative).
    pub counts: Vec<u64>,
    /// The sum of all observations, in seconds.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// How many observations it holds.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The RPCs sent to one peer with one method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RpcCounts {
    /// Calls made.
    pub sent: u64,
    /// Calls that got no reply (unreachable, timed out, connection lost).
    pub failed: u64,
    /// Request bytes (the encoded arguments).
    pub bytes_sent: u64,
    /// Reply bytes (the encoded replies).
    pub bytes_received: u64,
}

/// Reads one of an [`RpcCounts`]' numbers.
type RpcField = fn(&RpcCounts) -> u64;

/// The requests of one client method.
#[derive(Debug)]
struct MethodStats {
    /// By outcome (`ok`, `wrong_leader`, `unreachable`, ...).
    outcomes: BTreeMap<&'static str, u64>,
    latency: Histogram,
}

/// What the last snapshot this node took cost: it is encoded on the service's applying
/// thread, then saved (snapshot file and WAL record, fsync included) by the storage actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotCost {
    /// The last log index it covers.
    pub index: u64,
    /// Its encoded size.
    pub bytes: u64,
    /// How long encoding it took.
    pub encode: Duration,
    /// How long the save that wrote it took (`None` until it is written).
    pub save: Option<Duration>,
}

/// Everything a node counts. Reached through a [`Metrics`] handle.
#[derive(Debug)]
pub struct Registry {
    proposals: [AtomicU64; 2],
    reads: [AtomicU64; 2],
    snapshots_taken: AtomicU64,
    saves: AtomicU64,
    snapshot_saves: AtomicU64,
    save_errors: AtomicU64,
    save_seconds: Histogram,
    last_snapshot: Mutex<Option<SnapshotCost>>,
    rpcs: Mutex<BTreeMap<(usize, &'static str), RpcCounts>>,
    requests: Mutex<BTreeMap<&'static str, MethodStats>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            proposals: Default::default(),
            reads: Default::default(),
            snapshots_taken: AtomicU64::new(0),
            saves: AtomicU64::new(0),
            snapshot_saves: AtomicU64::new(0),
            save_errors: AtomicU64::new(0),
            save_seconds: Histogram::new(LATENCY_BUCKETS),
            last_snapshot: Mutex::new(None),
            rpcs: Mutex::new(BTreeMap::new()),
            requests: Mutex::new(BTreeMap::new()),
        }
    }
}

/// A mutex's contents, also after a panic elsewhere (counters stay usable).
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}

/// A handle that counts into a shared [`Registry`], or does nothing when off. Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Option<Arc<Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("on", &self.is_on())
            .finish()
    }
}

impl Metrics {
    /// A handle that counts nothing.
    pub fn off() -> Self {
        Metrics::default()
    }

    /// A handle that counts into a new registry.
    pub fn on() -> Self {
        Metrics {
            registry: Some(Arc::new(Registry::default())),
        }
    }

    /// Whether it counts.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.registry.is_some()
    }

    /// A proposal reached the Raft peer: `accepted` if it led and appended it.
    #[inline]
    pub fn proposal(&self, accepted: bool) {
        if let Some(r) = &self.registry {
            add(&r.proposals[usize::from(accepted)]);
        }
    }

    /// A read-index request reached the Raft peer: `accepted` if it led and took it.
    #[inline]
    pub fn read_index(&self, accepted: bool) {
        if let Some(r) = &self.registry {
            add(&r.reads[usize::from(accepted)]);
        }
    }

    /// The service handed the Raft peer a snapshot.
    #[inline]
    pub fn snapshot_taken(&self) {
        if let Some(r) = &self.registry {
            add(&r.snapshots_taken);
        }
    }

    /// The service encoded a snapshot of `bytes` bytes up to `index` in `took`.
    pub fn snapshot_encoded(&self, index: u64, bytes: usize, took: Duration) {
        if let Some(r) = &self.registry {
            *locked(&r.last_snapshot) = Some(SnapshotCost {
                index,
                bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
                encode: took,
                save: None,
            });
        }
    }

    /// The last snapshot this node took and what it cost, if it took one since it started.
    pub fn last_snapshot(&self) -> Option<SnapshotCost> {
        self.registry
            .as_ref()
            .and_then(|r| *locked(&r.last_snapshot))
    }

    /// A save (a WAL record and its fsync; with `snapshot`, a snapshot file too) took `took`;
    /// `ok` unless it failed.
    #[inline]
    pub fn save(&self, took: Duration, ok: bool, snapshot: bool) {
        if let Some(r) = &self.registry {
            add(&r.saves);
            if snapshot {
                add(&r.snapshot_saves);
                // The first snapshot save after an encoding writes that snapshot.
                if let Some(cost) = locked(&r.last_snapshot).as_mut() {
                    cost.save.get_or_insert(took);
                }
            }
            if !ok {
                add(&r.save_errors);
            }
            r.save_seconds.observe(took);
        }
    }

    /// An RPC `method` to peer `to` with `sent` request bytes came back with a reply of
    /// `received` bytes (`None`: it failed).
    #[inline]
    pub fn rpc(&self, to: usize, method: &'static str, sent: usize, received: Option<usize>) {
        if let Some(r) = &self.registry {
            let mut rpcs = locked(&r.rpcs);
            let counts = rpcs.entry((to, method)).or_default();
            counts.sent += 1;
            counts.bytes_sent += sent as u64;
            match received {
                Some(bytes) => counts.bytes_received += bytes as u64,
                None => counts.failed += 1,
            }
        }
    }

    /// A client request `method` was answered with `outcome` after `took`.
    #[inline]
    pub fn client_request(&self, method: &'static str, outcome: &'static str, took: Duration) {
        if let Some(r) = &self.registry {
            let mut requests = locked(&r.requests);
            let stats = requests.entry(method).or_insert_with(|| MethodStats {
                outcomes: BTreeMap::new(),
                latency: Histogram::new(LATENCY_BUCKETS),
            });
            *stats.outcomes.entry(outcome).or_default() += 1;
            stats.latency.observe(took);
        }
    }

    /// The RPC counts so far, by peer and method (none when off).
    pub fn rpcs(&self) -> BTreeMap<(usize, &'static str), RpcCounts> {
        self.registry
            .as_ref()
            .map(|r| locked(&r.rpcs).clone())
            .unwrap_or_default()
    }

    /// Failed saves, RPCs without a reply and client requests not answered `ok`, so far:
    /// the counted kinds of `rainkv_errors_total`.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        let Some(r) = &self.registry else {
            return Vec::new();
        };
        let rpc_failed = locked(&r.rpcs).values().map(|c| c.failed).sum();
        let client_failed = locked(&r.requests)
            .values()
            .flat_map(|s| s.outcomes.iter())
            .filter(|(outcome, _)| **outcome != "ok")
            .map(|(_, n)| n)
            .sum();
        vec![
            ("save_failed", r.save_errors.load(Ordering::Relaxed)),
            ("rpc_failed", rpc_failed),
            ("client_request_not_ok", client_failed),
        ]
    }

    /// Writes every family it counts to `page` (nothing when off).
    pub fn render(&self, page: &mut Exposition) {
        let Some(r) = &self.registry else {
            return;
        };
        let name = "rainkv_raft_proposals_total";
        page.family(
            name,
            Kind::Counter,
            "Commands proposed to the Raft peer, by outcome (accepted: it led and appended it).",
        );
        page.sample(name, &[("outcome", "accepted")], get(&r.proposals[1]));
        page.sample(name, &[("outcome", "not_leader")], get(&r.proposals[0]));
        let name = "rainkv_raft_read_index_total";
        page.family(
            name,
            Kind::Counter,
            "Read-index requests (linearizable reads) to the Raft peer, by outcome.",
        );
        page.sample(name, &[("outcome", "accepted")], get(&r.reads[1]));
        page.sample(name, &[("outcome", "not_leader")], get(&r.reads[0]));
        page.single(
            "rainkv_snapshots_taken_total",
            Kind::Counter,
            "Snapshots the service handed to its Raft peer.",
            get(&r.snapshots_taken),
        );
        page.single(
            "rainkv_storage_saves_total",
            Kind::Counter,
            "Saves of the Raft state: one WAL record and one fsync each.",
            get(&r.saves),
        );
        page.single(
            "rainkv_storage_snapshot_saves_total",
            Kind::Counter,
            "Saves that wrote a snapshot file (taken here or installed from the leader).",
            get(&r.snapshot_saves),
        );
        if let Some(cost) = *locked(&r.last_snapshot) {
            page.single(
                "rainkv_last_snapshot_bytes",
                Kind::Gauge,
                "Size of the last snapshot this node took.",
                cost.bytes as f64,
            );
            page.single(
                "rainkv_last_snapshot_encode_seconds",
                Kind::Gauge,
                "How long encoding the last snapshot this node took lasted (on the applying thread).",
                cost.encode.as_secs_f64(),
            );
            if let Some(save) = cost.save {
                page.single(
                    "rainkv_last_snapshot_save_seconds",
                    Kind::Gauge,
                    "How long the save that wrote the last snapshot this node took lasted.",
                    save.as_secs_f64(),
                );
            }
        }
        let name = "rainkv_storage_save_seconds";
        page.family(
            name,
            Kind::Histogram,
            "How long a save took, fsync included.",
        );
        page.histogram(name, &[], &r.save_seconds.snapshot());
        self.render_rpcs(r, page);
        self.render_requests(r, page);
    }

    fn render_rpcs(&self, r: &Registry, page: &mut Exposition) {
        let rpcs = locked(&r.rpcs).clone();
        let families: [(&str, &str, RpcField); 4] = [
            (
                "rainkv_raft_rpcs_sent_total",
                "Raft RPCs sent, by destination peer and method.",
                |c| c.sent,
            ),
            (
                "rainkv_raft_rpcs_failed_total",
                "Raft RPCs that got no reply, by destination peer and method.",
                |c| c.failed,
            ),
            (
                "rainkv_raft_rpc_sent_bytes_total",
                "Bytes of Raft requests sent (encoded arguments), by peer and method.",
                |c| c.bytes_sent,
            ),
            (
                "rainkv_raft_rpc_received_bytes_total",
                "Bytes of Raft replies received, by peer and method.",
                |c| c.bytes_received,
            ),
        ];
        for (name, help, value) in families {
            page.family(name, Kind::Counter, help);
            for ((to, method), counts) in &rpcs {
                let peer = to.to_string();
                let labels = [("peer", peer.as_str()), ("method", *method)];
                page.sample(name, &labels, value(counts) as f64);
            }
        }
    }

    fn render_requests(&self, r: &Registry, page: &mut Exposition) {
        let requests = locked(&r.requests);
        let name = "rainkv_client_requests_total";
        page.family(
            name,
            Kind::Counter,
            "Requests on the client port, by method and outcome.",
        );
        for (method, stats) in requests.iter() {
            for (outcome, n) in &stats.outcomes {
                page.sample(name, &[("method", method), ("outcome", outcome)], *n as f64);
            }
        }
        let name = "rainkv_client_request_seconds";
        page.family(
            name,
            Kind::Histogram,
            "How long the node took to answer a request on the client port, by method.",
        );
        for (method, stats) in requests.iter() {
            page.histogram(name, &[("method", method)], &stats.latency.snapshot());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_counts_nothing_and_renders_nothing() {
        let metrics = Metrics::off();
        metrics.proposal(true);
        metrics.save(Duration::from_millis(1), true, false);
        metrics.rpc(1, "Raft.AppendEntries", 10, Some(5));
        let mut page = Exposition::new();
        metrics.render(&mut page);
        assert_eq!(page.finish(), "");
        assert!(metrics.rpcs().is_empty() && metrics.errors().is_empty());
    }

    #[test]
    fn clones_count_into_one_registry() {
        let metrics = Metrics::on();
        let clone = metrics.clone();
        clone.proposal(true);
        metrics.proposal(false);
        clone.save(Duration::from_millis(3), false, true);
        clone.rpc(2, "Raft.AppendEntries", 100, Some(7));
        clone.rpc(2, "Raft.AppendEntries", 50, None);
        clone.client_request("KVServer.Get", "ok", Duration::from_micros(300));
        clone.client_request("KVServer.Get", "wrong_leader", Duration::from_micros(300));
        let mut page = Exposition::new();
        metrics.render(&mut page);
        let text = page.finish();
        for line in [
            "rainkv_raft_proposals_total{outcome=\"accepted\"} 1",
            "rainkv_raft_proposals_total{outcome=\"not_leader\"} 1",
            "rainkv_storage_saves_total 1",
            "rainkv_storage_snapshot_saves_total 1",
            "rainkv_storage_save_seconds_bucket{le=\"0.005\"} 1",
            "rainkv_storage_save_seconds_count 1",
            "rainkv_raft_rpcs_sent_total{peer=\"2\",method=\"Raft.AppendEntries\"} 2",
            "rainkv_raft_rpcs_failed_total{peer=\"2\",method=\"Raft.AppendEntries\"} 1",
            "rainkv_raft_rpc_sent_bytes_total{peer=\"2\",method=\"Raft.AppendEntries\"} 150",
            "rainkv_raft_rpc_received_bytes_total{peer=\"2\",method=\"Raft.AppendEntries\"} 7",
            "rainkv_client_requests_total{method=\"KVServer.Get\",outcome=\"ok\"} 1",
            "rainkv_client_requests_total{method=\"KVServer.Get\",outcome=\"wrong_leader\"} 1",
            "rainkv_client_request_seconds_count{method=\"KVServer.Get\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert_eq!(
            metrics.errors(),
            [
                ("save_failed", 1),
                ("rpc_failed", 1),
                ("client_request_not_ok", 1)
            ]
        );
    }
}
