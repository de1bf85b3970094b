//! The tutorial's scenario (`docs/tutorial.md`): three KV servers on the simulated network, a
//! clerk, the leader cut off and a new one elected, the history checked for linearizability,
//! and the whole run recorded as a trace and drawn as an HTML timeline.
//!
//! Run it with `cargo run --release --example first_scenario [SEED]`; it prints where the
//! timeline went. `cargo test` runs the test at the bottom, which keeps it working.

use std::path::PathBuf;
use std::time::Duration;

use rainkv::testkit::kv::{KvHarness, OpLog};
use rainkv::testkit::{run_seed, ClusterOptions, Sim, TestOptions};
use rainkv::trace::timeline;
use tokio::time::sleep;

/// The scenario: returns the old and the new leader.
async fn scenario(sim: Sim) -> (usize, usize) {
    // Three servers, each a Raft peer, a replicated state machine and a KV service.
    let cfg = KvHarness::new(&sim, ClusterOptions::default()).await;
    let cluster = cfg.cluster();
    let old = cluster.check_one_leader().await;

    // A clerk that can reach every server; its operations go into a history.
    let ck = cfg.make_client(&cfg.all()).await;
    let history = OpLog::new();
    cfg.put(&ck, "greeting", "hello", Some(&history), 0).await;

    // Cut the leader off from the other two: they elect a new leader among themselves.
    cluster.disconnect(old);
    sleep(Duration::from_secs(2)).await;
    let new = cluster.check_one_leader().await;

    // The clerk finds the new leader; the cut-off one cannot commit anything.
    cfg.append(&ck, "greeting", ", world", Some(&history), 0)
        .await;
    let read = cfg.get(&ck, "greeting", Some(&history), 0).await;
    assert_eq!(read, "hello, world");

    // Heal the partition, then check every recorded operation for linearizability.
    cluster.connect(old);
    history.check_linearizable("first_scenario", Duration::from_secs(5));
    cfg.cleanup();
    (old, new)
}

/// Runs the scenario with `seed`, recording its trace; returns the leaders and the timeline.
fn run(seed: u64) -> ((usize, usize), PathBuf) {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    let trace = dir.join(format!("first-scenario-{seed}.jsonl"));
    let options = TestOptions {
        realtime: false,
        trace: Some(trace.clone()),
        ..TestOptions::default()
    };
    let (leaders, _hash) = run_seed(seed, &options, scenario);
    // What `rainkv timeline TRACE -o PAGE` does.
    let page = trace.with_extension("html");
    let jsonl = std::fs::read_to_string(&trace).expect("the run wrote its trace");
    std::fs::write(&page, timeline::render(&jsonl, "first scenario")).expect("write the page");
    (leaders, page)
}

fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let ((old, new), page) = run(seed);
    println!("seed {seed}: leader {old} was cut off, {new} took over");
    println!("timeline: {}", page.display());
}

#[test]
fn a_new_leader_takes_over_and_the_history_is_linearizable() {
    for seed in 1..=5 {
        let ((old, new), page) = run(seed);
        assert_ne!(old, new, "seed {seed}");
        let html = std::fs::read_to_string(page).expect("the page was written");
        assert!(html.contains(r#""ev":"verdict","ok":true"#), "seed {seed}");
    }
}
