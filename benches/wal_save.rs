//! One save's latency on the durable store: [`FilePersister::save`] of one log entry with a
//! 200-byte command (one WAL record and its fsync), alone and with three stores saving at once
//! in three threads (a 3-node cluster on one machine shares one disk); a new store's first
//! save, which grows the WAL by its preallocated zeros, beside its second; then how long
//! opening a store takes: the recovery read of a WAL of one record (and the zeros after it).
//!
//! `cargo bench --bench wal_save` prints the latencies' percentiles in microseconds. The data
//! directories are made under the system's temporary directory and removed at the end.

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rainkv::messages::raft::LogEntry;
use rainkv::messages::storage::StateUpdate;
use rainkv::storage::{FilePersister, Persister};

/// Saves each store makes per measurement.
const SAVES: u64 = 3000;
/// Bytes of each entry's command.
const COMMAND_BYTES: usize = 200;
/// How many times a store is opened to time recovery, and new stores made to time their
/// first saves.
const OPENS: usize = 20;

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rainkv-bench-wal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Saves the entry at `index` to `store`; returns how long that took.
fn save(store: &mut FilePersister, index: u64) -> Duration {
    let update = StateUpdate {
        term: 1,
        voted_for: Some(0),
        snapshot: None,
        first_index: index,
        entries: vec![LogEntry::command(1, vec![b'v'; COMMAND_BYTES])],
    };
    let began = Instant::now();
    store.save(update).expect("save");
    began.elapsed()
}

/// [`SAVES`] saves of one entry each to a new store in `dir`; their latencies in
/// microseconds. `start` lines the threads up so that their saves overlap.
fn saves(dir: &Path, start: &Barrier) -> Histogram<u64> {
    let mut store = FilePersister::open(dir).expect("open the store");
    let mut latencies = Histogram::new(3).expect("a histogram");
    start.wait();
    for index in 1..=SAVES {
        latencies
            .record(save(&mut store, index).as_micros() as u64)
            .expect("record a latency");
    }
    latencies
}

/// Runs [`saves`] in `stores` threads at once; prints their latencies together.
fn measure(stores: usize) {
    let dirs: Vec<PathBuf> = (0..stores)
        .map(|i| data_dir(&format!("{stores}-{i}")))
        .collect();
    let start = Barrier::new(stores);
    let mut all = Histogram::<u64>::new(3).expect("a histogram");
    std::thread::scope(|scope| {
        let threads: Vec<_> = dirs
            .iter()
            .map(|dir| scope.spawn(|| saves(dir, &start)))
            .collect();
        for thread in threads {
            all.add(thread.join().expect("a saving thread"))
                .expect("merge the latencies");
        }
    });
    println!(
        "{stores} store(s) saving at once, {} saves: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        all.len(),
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        all.value_at_quantile(0.999),
        all.max()
    );
    for dir in dirs {
        std::fs::remove_dir_all(dir).expect("remove the data directory");
    }
}

/// The median and slowest of `times`.
fn median_and_max(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    )
}

/// The first and second saves of [`OPENS`] new stores, one after the other; prints both.
fn measure_first_saves() {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for round in 0..OPENS {
        let dir = data_dir(&format!("first-{round}"));
        let mut store = FilePersister::open(&dir).expect("open the store");
        first.push(save(&mut store, 1));
        second.push(save(&mut store, 2));
        drop(store);
        std::fs::remove_dir_all(dir).expect("remove the data directory");
    }
    println!(
        "a new store's first save: {}; its second: {}",
        median_and_max(first),
        median_and_max(second)
    );
}

/// Opens a store whose WAL holds one save, [`OPENS`] times; prints the median and slowest.
fn measure_open() {
    let dir = data_dir("open");
    let mut store = FilePersister::open(&dir).expect("open the store");
    save(&mut store, 1);
    drop(store);
    let wal_bytes = std::fs::metadata(dir.join("wal")).expect("the WAL").len();
    let took: Vec<Duration> = (0..OPENS)
        .map(|_| {
            let began = Instant::now();
            let store = FilePersister::open(&dir).expect("reopen the store");
            let took = began.elapsed();
            assert_eq!(store.load().expect("load").entries.len(), 1);
            took
        })
        .collect();
    println!(
        "open a store whose WAL holds one save ({wal_bytes} bytes on disk): {}",
        median_and_max(took)
    );
    std::fs::remove_dir_all(dir).expect("remove the data directory");
}

fn main() {
    measure(1);
    measure(3);
    measure_first_saves();
    measure_open();
}
