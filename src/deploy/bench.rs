//! The benchmark behind `rainkv bench`: the workloads of our etcd reference measurement, run
//! by clerks over TCP against a cluster (a running one, or three nodes on loopback inside this
//! process). Keys are 16 bytes, values 128 bytes; every Get is linearizable (a ReadIndex read,
//! or a lease read when the cluster's `[raft]` section turns them on).
//!
//! | workload | what |
//! |---|---|
//! | `seq_put` | one client, puts one after the other |
//! | `put_64` | 64 clients, each with one put in flight |
//! | `get_64` | 64 clients, gets of keys that exist |
//! | `mixed_64` | 64 clients, half gets, half puts |

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use std::time::Duration;

use futures_util::future::join_all;
use rand::Rng;
use tokio::time::{sleep, timeout, Instant};

use super::client::ClusterClient;
use super::stats::{Latencies, WorkloadResult};
use crate::actors::clerk::Clerk;

/// How often a running workload reports how far it got.
const TICK: Duration = Duration::from_millis(200);
/// By default a client gives up on an operation with no answer after this long (a clerk
/// alone retries for ever, so a benchmark of a cluster that went away would never end).
pub const OP_PATIENCE: Duration = Duration::from_secs(30);

/// What [`run_bench`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum BenchProgress<'a> {
    /// A workload is running: `done` of its `total` operations after `elapsed` (reported
    /// once when it starts and then about five times a second).
    Running {
        /// The workload's name, e.g. `put_64`.
        name: &'a str,
        /// Operations completed.
        done: usize,
        /// Operations it will run.
        total: usize,
        /// Time since it started.
        elapsed: Duration,
    },
    /// A workload finished.
    Done(&'a WorkloadResult),
}

/// Bytes in a benchmark key.
pub(crate) const KEY_BYTES: usize = 16;
/// Bytes in a benchmark value.
pub(crate) const VALUE_BYTES: usize = 128;

/// One benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One client, puts in sequence.
    SeqPut,
    /// Many clients, puts.
    Put,
    /// Many clients, linearizable gets.
    Get,
    /// Many clients, half gets and half puts.
    Mixed,
}

impl Workload {
    /// All workloads, in the order they run.
    pub const ALL: [Workload; 4] = [
        Workload::SeqPut,
        Workload::Put,
        Workload::Get,
        Workload::Mixed,
    ];

    fn name(self, in_flight: usize) -> String {
        match self {
            Workload::SeqPut => "seq_put".to_string(),
            Workload::Put => format!("put_{in_flight}"),
            Workload::Get => format!("get_{in_flight}"),
            Workload::Mixed => format!("mixed_{in_flight}"),
        }
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seq_put" => Ok(Workload::SeqPut),
            "put_64" | "put" => Ok(Workload::Put),
            "get_64" | "get" => Ok(Workload::Get),
            "mixed_64" | "mixed" => Ok(Workload::Mixed),
            other => Err(format!(
                "unknown workload {other:?} (known: seq_put, put_64, get_64, mixed_64)"
            )),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name(64))
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The workloads, in order.
    pub workloads: Vec<Workload>,
    /// Operations of `seq_put`.
    pub seq_ops: usize,
    /// Operations of each concurrent workload.
    pub ops: usize,
    /// Clients of each concurrent workload (each with one operation in flight).
    pub in_flight: usize,
    /// Distinct keys the workloads touch.
    pub key_space: usize,
    /// Bytes of each value written.
    pub value_bytes: usize,
    /// How long a client waits for an answer before it gives up, and the benchmark with it.
    pub patience: Duration,
}

impl Default for BenchOptions {
    /// The reference measurement: 2000 sequential puts, 50 000 operations with 64 in flight,
    /// over 10 000 keys, values of 128 bytes.
    fn default() -> Self {
        BenchOptions {
            workloads: Workload::ALL.to_vec(),
            seq_ops: 2000,
            ops: 50_000,
            in_flight: 64,
            key_space: 10_000,
            value_bytes: VALUE_BYTES,
            patience: OP_PATIENCE,
        }
    }
}

/// The key number `i`: `KEY_BYTES` long (`i`'s last digit, "bench-" and the other 9 digits).
/// It starts with the last digit so that consecutive keys fall in different shards of a
/// sharded cluster (a key's shard is its first byte mod 10).
pub(crate) fn key(i: usize) -> String {
    let width = KEY_BYTES - "0bench-".len();
    format!("{}bench-{:0width$}", i % 10, i / 10)
}

/// A random value of `len` letters and digits, made from random bytes (the client shares
/// the machine with the servers it measures, so it keeps its own cost low; the slight bias
/// of `byte % 36` does not matter here).
fn value(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|&b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

/// The shape of one measured run: how many clients share how many operations, over how many
/// keys, with values of how many bytes, and how long a client waits for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Clients, each with one operation in flight.
    pub clients: usize,
    /// Operations, shared by the clients.
    pub ops: usize,
    /// Distinct keys touched.
    pub key_space: usize,
    /// Bytes in each value put.
    pub value_bytes: usize,
    /// A client waiting this long for an answer gives up, and with it the run.
    pub patience: Duration,
}

/// One client's share of a workload: `ops` operations, one at a time, each recorded in the
/// workload's `latencies`, which every client of the workload shares (a histogram is some
/// 190 KiB, too much to keep one per client).
async fn client_loop(
    clerk: Clerk,
    workload: Workload,
    ops: usize,
    shape: Shape,
    latencies: &RefCell<Latencies>,
) {
    let Shape {
        key_space,
        value_bytes,
        patience,
        ..
    } = shape;
    let mut rng = rand::thread_rng();
    for _ in 0..ops {
        let k = key(rng.gen_range(0..key_space.max(1)));
        let get = match workload {
            Workload::Get => true,
            Workload::Mixed => rng.gen_bool(0.5),
            Workload::SeqPut | Workload::Put => false,
        };
        let v = (!get).then(|| value(&mut rng, value_bytes));
        let started = Instant::now();
        let op = async {
            match v {
                None => clerk.get(k).await.map(drop),
                Some(v) => clerk.put(k, v).await,
            }
        };
        match timeout(patience, op).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::warn!("benchmark client: {e}");
                break;
            }
            Err(_) => {
                log::warn!(
                    "benchmark client: no answer within {patience:?}; giving up (is the \
                     cluster up?)"
                );
                break;
            }
        }
        latencies.borrow_mut().record(started.elapsed());
    }
}

/// Makes a clerk of the cluster measured (a new session each).
pub type NewClerk<'a> = &'a dyn Fn() -> Clerk;

/// Runs `workload` in `shape` (its clients share its operations).
pub(crate) async fn run_one(
    new_clerk: NewClerk<'_>,
    workload: Workload,
    shape: Shape,
    progress: &mut dyn FnMut(BenchProgress<'_>),
) -> WorkloadResult {
    let Shape { clients, ops, .. } = shape;
    let clients = clients.max(1);
    let name = workload.name(clients);
    let clerks: Vec<Clerk> = (0..clients).map(|_| new_clerk()).collect();
    let latencies = RefCell::new(Latencies::new());
    let started = Instant::now();
    let loops = clerks.into_iter().enumerate().map(|(i, clerk)| {
        // Spread the remainder over the first clients.
        let share = ops / clients + usize::from(i < ops % clients);
        client_loop(clerk, workload, share, shape, &latencies)
    });
    let mut all = Box::pin(join_all(loops));
    loop {
        progress(BenchProgress::Running {
            name: &name,
            done: latencies.borrow().len(),
            total: ops,
            elapsed: started.elapsed(),
        });
        tokio::select! {
            _ = &mut all => break,
            _ = sleep(TICK) => {}
        }
    }
    drop(all);
    let latencies = latencies.into_inner();
    WorkloadResult {
        name,
        ops: latencies.len(),
        planned: ops,
        elapsed: started.elapsed(),
        latencies,
    }
}

/// Writes keys number `keys` once each with values of `value_bytes`, `clients` at a time, so
/// gets find values (not measured), counting the puts done in `done`; false if a put failed
/// (logged).
pub(crate) async fn preload(
    new_clerk: NewClerk<'_>,
    clients: usize,
    (keys, value_bytes): (Range<usize>, usize),
    done: &Cell<usize>,
) -> bool {
    let clients = clients.max(1);
    let loads = (0..clients).map(|c| {
        let clerk = new_clerk();
        let keys = keys.clone();
        async move {
            let mut rng = rand::thread_rng();
            for i in keys.skip(c).step_by(clients) {
                if let Err(e) = clerk.put(key(i), value(&mut rng, value_bytes)).await {
                    log::warn!("benchmark preload: {e}");
                    return false;
                }
                done.set(done.get() + 1);
            }
            true
        }
    });
    join_all(loads).await.into_iter().all(|ok| ok)
}

/// Runs the benchmark; `progress` hears how far each workload got and each result as it is
/// measured.
pub async fn run_bench(
    client: &ClusterClient,
    options: &BenchOptions,
    progress: &mut dyn FnMut(BenchProgress<'_>),
) -> Vec<WorkloadResult> {
    run_workloads(&|| client.clerk(), options, progress).await
}

/// [`run_bench`] against any cluster a clerk can reach (a sharded one too): its clients'
/// clerks come from `new_clerk`.
pub async fn run_workloads(
    new_clerk: NewClerk<'_>,
    options: &BenchOptions,
    progress: &mut dyn FnMut(BenchProgress<'_>),
) -> Vec<WorkloadResult> {
    let mut results = Vec::new();
    let mut loaded = false;
    for &workload in &options.workloads {
        if matches!(workload, Workload::Get | Workload::Mixed) && !loaded {
            let keys = (0..options.key_space, options.value_bytes);
            preload(new_clerk, options.in_flight, keys, &Cell::new(0)).await;
            loaded = true;
        }
        let (clients, ops) = match workload {
            Workload::SeqPut => (1, options.seq_ops),
            _ => (options.in_flight, options.ops),
        };
        let shape = Shape {
            clients,
            ops,
            key_space: options.key_space,
            value_bytes: options.value_bytes,
            patience: options.patience,
        };
        let result = run_one(new_clerk, workload, shape, progress).await;
        progress(BenchProgress::Done(&result));
        let complete = result.is_complete();
        results.push(result);
        if !complete {
            // Its clients gave up: the next workload would too.
            break;
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_sixteen_bytes_and_names_parse() {
        assert_eq!(key(0).len(), KEY_BYTES);
        assert_eq!(key(9_999_999_999).len(), KEY_BYTES);
        assert_ne!(key(1), key(10));
        let first_bytes: std::collections::BTreeSet<u8> =
            (0..10).map(|i| key(i).as_bytes()[0]).collect();
        assert_eq!(first_bytes.len(), 10, "ten keys in a row start ten ways");
        assert_eq!(
            value(&mut rand::thread_rng(), VALUE_BYTES).len(),
            VALUE_BYTES
        );
        for w in Workload::ALL {
            assert_eq!(w.to_string().parse::<Workload>(), Ok(w));
        }
        assert!("bogus".parse::<Workload>().is_err());
    }
}
