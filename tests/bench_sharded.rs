//! `rainkv bench --sharded`, run as the built binary on a tiny configuration (few operations,
//! shards of a few KiB): one result line per workload and group count, one per move, in the
//! agreed shape. A benchmark, so the shape is checked, never the speed.

use std::process::Command;
use std::time::Duration;

use bounded::run_bounded;

#[path = "processes/bounded.rs"]
mod bounded;

/// How long a run may take before it is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The value of `field=` in `line`.
fn field<'a>(line: &'a str, field: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(field)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {field} in {line:?}"))
}

#[test]
fn the_sharded_bench_prints_a_line_per_group_count_and_per_move() {
    let output = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_rainkv"))
            .args(["bench", "--sharded", "--groups", "1,2", "--ops", "200"])
            .args(["--keys", "50", "--move-kib", "16,64"]),
        RUN_LIMIT,
    );
    let stdout = &output.stdout;
    assert!(
        output.status.is_some_and(|s| s.success()),
        "the sharded bench failed: {stdout}\n{}",
        output.stderr
    );
    let workloads: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("workload="))
        .collect();
    assert_eq!(workloads.len(), 2, "{stdout}");
    for (line, groups) in workloads.iter().zip(["1", "2"]) {
        assert_eq!(field(line, "workload"), "mixed_64", "{line}");
        assert_eq!(field(line, "groups"), groups, "{line}");
        for number in ["ops_per_s", "p50_ms", "p99_ms"] {
            let value: f64 = field(line, number).parse().expect("a number");
            assert!(value > 0.0, "{line}");
        }
    }
    let moves: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("move_shard "))
        .collect();
    assert_eq!(moves.len(), 2, "{stdout}");
    for (line, size) in moves.iter().zip(["0.016", "0.062"]) {
        assert_eq!(field(line, "size_mib"), size, "{line}");
        let seconds: f64 = field(line, "seconds").parse().expect("a number");
        assert!(seconds > 0.0, "{line}");
    }
}

#[test]
fn the_sharded_bench_refuses_a_cluster_file() {
    let output = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_rainkv")).args([
            "bench",
            "--sharded",
            "--config",
            "cluster.toml",
        ]),
        RUN_LIMIT,
    );
    assert_eq!(output.status.and_then(|s| s.code()), Some(2));
}
