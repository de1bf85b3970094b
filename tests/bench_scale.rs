//! `rainkv bench --scale --quick --report`, run as the built binary (a few seconds against 3
//! nodes on loopback in its process): it prints every figure as a `scale ...` line and writes
//! one HTML page with an SVG plot per figure, titled and with its axes named, and says why the
//! etcd line is absent when etcd is not measured. Shape only: no figure's value is checked.

use std::process::Command;
use std::time::Duration;

use bounded::run_bounded;

#[path = "processes/bounded.rs"]
mod bounded;

/// How long a run may take before it is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn the_quick_scale_run_writes_its_report() {
    let page = std::env::temp_dir().join(format!("rainkv-bench-scale-{}.html", std::process::id()));
    let _ = std::fs::remove_file(&page);
    let output = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_rainkv"))
            .args(["bench", "--scale", "--quick", "--no-etcd", "--report"])
            .arg(&page),
        RUN_LIMIT,
    );
    let stdout = &output.stdout;
    assert!(
        output.status.is_some_and(|s| s.success()),
        "the scale bench failed: {stdout}\n{}",
        output.stderr
    );
    for prefix in [
        "scale etcd=absent",
        "scale clients=1 system=rainkv workload=put ops_per_s=",
        "scale clients=16 system=rainkv workload=get ops_per_s=",
        "scale value_bytes=65536 system=rainkv workload=put ops_per_s=",
        "scale keys=1000 load_s=",
        "scale keys=4000 load_s=",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(prefix)),
            "no line {prefix}...: {stdout}"
        );
    }
    // Restart and catch-up were measured, not given up on.
    for line in stdout.lines().filter(|l| l.starts_with("scale keys=")) {
        assert!(!line.contains("restart_s=-"), "{line}");
        assert!(!line.contains("catch_up_s=-"), "{line}");
    }

    let html = std::fs::read_to_string(&page).expect("the report was written");
    assert!(html.starts_with("<!DOCTYPE html>"), "not an HTML page");
    assert!(
        html.trim_end().ends_with("</html>"),
        "the page is cut short"
    );
    // Self-contained: nothing loaded from elsewhere.
    for outside in ["<script src", "<link", "<img"] {
        assert!(!html.contains(outside), "the page loads {outside}");
    }
    assert_eq!(html.matches("<svg").count(), 7, "one SVG per plot");
    assert_eq!(html.matches("</svg>").count(), 7, "every SVG is closed");
    for title in [
        "Throughput vs clients",
        "p99 latency vs clients",
        "Throughput vs value size",
        "p99 latency vs value size",
        "Memory per key vs keys",
        "Snapshot time vs keys",
        "Restart and catch-up time vs keys",
    ] {
        assert!(html.contains(title), "no plot titled {title:?}");
    }
    for axis in [
        "clients",
        "ops/s",
        "p99 latency (ms)",
        "value size (bytes)",
        "bytes per key",
        "seconds",
    ] {
        assert!(html.contains(&format!("\n{axis}\n")), "no axis {axis:?}");
    }
    for line in [
        "RainKV put",
        "RainKV get",
        "restart from its data directory",
    ] {
        assert!(html.contains(line), "no line {line:?} in a legend");
    }
    assert!(
        html.contains("The etcd lines are absent: not asked for (--no-etcd)"),
        "the page does not say why etcd is absent"
    );
    let _ = std::fs::remove_file(&page);
}
