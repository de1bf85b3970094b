//! `rainkv demo --sharded`, run as the built binary for a few seconds: a controller group and
//! three replica groups on loopback TCP while groups join and leave, a shard moves and group
//! leaders are killed mid-migration. It must exit 0, say the history is linearizable, that
//! shards moved, and that every shard ended served by its configured group.

use std::process::Command;
use std::time::Duration;

use bounded::run_bounded;

#[path = "processes/bounded.rs"]
mod bounded;

/// How long a run may take before it is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn the_sharded_demo_moves_shards_and_stays_linearizable() {
    let output = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_rainkv")).args([
            "demo",
            "--sharded",
            "--seconds",
            "3",
            "--clients",
            "3",
        ]),
        RUN_LIMIT,
    );
    let stdout = &output.stdout;
    assert!(
        output.status.is_some_and(|s| s.success()),
        "the sharded demo failed: {stdout}\n{}",
        output.stderr
    );
    assert!(stdout.contains("verdict: linearizable"), "{stdout}");
    assert!(
        stdout.contains("all shards served by their groups"),
        "{stdout}"
    );
    let moved: usize = stdout
        .lines()
        .find_map(|l| l.strip_suffix(" shards moved")?.parse().ok())
        .unwrap_or_else(|| panic!("no shards-moved line: {stdout}"));
    assert!(moved > 0, "no shard moved: {stdout}");
    for step in [
        "joined",
        "left",
        "moved from group",
        "killed group",
        "restarted node",
    ] {
        assert!(stdout.contains(step), "no {step:?} step: {stdout}");
    }
    assert!(stdout.contains("ops/s; latency p50"), "{stdout}");
    // stderr is a pipe here: plain lines, no progress bar.
    assert!(stdout.contains("ops ("), "{stdout}");
}

#[test]
fn the_sharded_demo_refuses_a_timeline() {
    let output = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_rainkv")).args([
            "demo",
            "--sharded",
            "--timeline",
            "t.html",
        ]),
        RUN_LIMIT,
    );
    assert_eq!(output.status.and_then(|s| s.code()), Some(2));
    let stderr = &output.stderr;
    assert!(
        stderr.contains("--timeline") && stderr.contains("--sharded"),
        "{stderr}"
    );
}
