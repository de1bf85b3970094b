//! The binaries as a user runs them: three `rainkv serve` processes on loopback and
//! `rainkv-ctl` against them. Every child is reaped, also when an assertion fails.
//!
//! Each node keeps its state in a data directory of its own; killing nodes with SIGKILL and
//! restarting them from their data directories under load is `tcp_crash.rs`. The helpers both
//! files use are in `processes/`. Leadership moves here in the two ways an operator moves it:
//! `rainkv-ctl transfer-leader`, and SIGTERM to the leader in a rolling restart, which hands
//! leadership over before the process exits. And `rainkv bench` gives up, saying why, on a
//! cluster that goes away while it runs.

#[path = "processes/ctl.rs"]
mod ctl;
#[path = "processes/logged.rs"]
mod logged;
mod processes;
#[path = "processes/writer.rs"]
mod writer;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ctl::{ctl, text};
use logged::{log_path, spawn_logged, write_slow_election_config, LogsOnFailure};
use processes::bounded::{run_bounded, wait_bounded, Finished};
use processes::{free_ports, serve_command, write_config, Scratch, Servers};
use rainkv::deploy::cluster_file::ClusterFile;
use writer::{assert_acknowledged_writes_kept, Writer};

/// How long the cluster may take to come up and elect a leader.
const STARTUP_LIMIT: Duration = Duration::from_secs(15);
/// How long a node may take to exit after SIGTERM.
const EXIT_LIMIT: Duration = Duration::from_secs(10);
/// How long a restarted node may take to catch up and take the lead.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

#[test]
fn three_serve_processes_and_rainkv_ctl() {
    let scratch = Scratch::new("processes");
    let ports = free_ports();
    let config = write_config(&scratch.0, "right-token", &ports);
    let mut servers = Servers(Vec::new());
    for id in 0..3 {
        let child = serve_command(&config, id, &scratch.0.join(format!("node-{id}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rainkv serve");
        servers.0.push(child);
    }

    // Up, with a leader.
    let deadline = Instant::now() + STARTUP_LIMIT;
    let status = loop {
        let out = ctl(&config, 2, &["status"]);
        let stdout = text(&out.stdout);
        if out.status.success() && stdout.contains("leader") {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {STARTUP_LIMIT:?}: {stdout}{}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        status.lines().count(),
        4,
        "a header and a line per node:\n{status}"
    );

    // Operations.
    let put = ctl(&config, 2, &["put", "greeting", "hello"]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    let append = ctl(&config, 2, &["append", "greeting", ", world"]);
    assert!(append.status.success(), "{}", text(&append.stderr));
    let get = ctl(&config, 2, &["get", "greeting"]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(text(&get.stdout), "hello, world\n");

    // Bytes: a value with a NUL byte put and read back as hex; printed as text it is refused.
    let put = ctl(&config, 2, &["--hex", "put", "6b00", "00ff0041"]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    let get = ctl(&config, 2, &["get", "--hex", "6b00"]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(text(&get.stdout), "00ff0041\n");
    let put = ctl(&config, 2, &["--hex", "put", "6269", "ff"]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    let refused = ctl(&config, 2, &["get", "bi"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("--hex"),
        "{}",
        text(&refused.stderr)
    );
    // A value from a file, and a literal leading '@'.
    let file = scratch.0.join("value.bin");
    std::fs::write(&file, b"from\0a file").expect("write the value file");
    let at_file = format!("@{}", file.display());
    let put = ctl(&config, 2, &["put", "filed", &at_file]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    let get = ctl(&config, 2, &["--hex", "get", "66696c6564"]);
    assert_eq!(text(&get.stdout), "66726f6d00612066696c65\n");
    let put = ctl(&config, 2, &["put", "at", "@@home"]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    assert_eq!(text(&ctl(&config, 2, &["get", "at"]).stdout), "@home\n");
    // A value from standard input, larger than a command line holds (4 MiB).
    let big: String = (0..4 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut put = Command::new(env!("CARGO_BIN_EXE_rainkv-ctl"))
        .arg("--config")
        .arg(&config)
        .args(["put", "big", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rainkv-ctl");
    if let Some(mut stdin) = put.stdin.take() {
        stdin.write_all(big.as_bytes()).expect("pipe the value");
    }
    let put = put.wait_with_output().expect("rainkv-ctl put big -");
    assert!(put.status.success(), "{}", text(&put.stderr));
    let get = ctl(&config, 2, &["get", "big"]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert!(
        text(&get.stdout) == format!("{big}\n"),
        "the 4 MiB value read back differs"
    );
    // Bad hex and an unreadable file: exit status 2, saying why.
    let bad = ctl(&config, 2, &["--hex", "put", "6b", "0g"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("not hex"),
        "{}",
        text(&bad.stderr)
    );
    let missing = scratch.0.join("no-such-file");
    let at_missing = format!("@{}", missing.display());
    let unreadable = ctl(&config, 2, &["put", "k", &at_missing]);
    assert_eq!(unreadable.status.code(), Some(2));
    assert!(
        text(&unreadable.stderr).contains("cannot read the value file"),
        "{}",
        text(&unreadable.stderr)
    );

    // The benchmark against the running cluster: one line per workload.
    let bench = Command::new(env!("CARGO_BIN_EXE_rainkv"))
        .args([
            "bench",
            "--ops",
            "200",
            "--seq-ops",
            "20",
            "--keys",
            "50",
            "--config",
        ])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run rainkv bench");
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    let lines: Vec<String> = text(&bench.stdout).lines().map(str::to_string).collect();
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("workload="))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        names,
        ["seq_put", "put_64", "get_64", "mixed_64"],
        "{lines:?}"
    );
    for line in &lines {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "{line}");
        for (field, key) in fields[1..].iter().zip(["ops_per_s=", "p50_ms=", "p99_ms="]) {
            let number = field.strip_prefix(key).map(str::parse::<f64>);
            assert!(matches!(number, Some(Ok(n)) if n > 0.0), "{line}");
        }
    }

    // A wrong token: refused, exit status 1, and the reason is shown.
    let wrong = write_config(&scratch.0, "wrong-token", &ports);
    let out = ctl(&wrong, 2, &["get", "greeting"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("wrong cluster token"),
        "{}",
        text(&out.stderr)
    );

    // A broken config file: exit status 2, naming the file.
    let broken = scratch.0.join("broken.toml");
    std::fs::write(&broken, "[cluster]\nname = \"x\"\n").expect("write");
    let out = ctl(&broken, 2, &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("broken.toml"),
        "{}",
        text(&out.stderr)
    );

    // SIGTERM: each node shuts down cleanly.
    for child in &mut servers.0 {
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
    }
    for (id, child) in servers.0.iter_mut().enumerate() {
        let status = wait_bounded(child, EXIT_LIMIT);
        assert!(status.is_some_and(|s| s.success()), "node {id}: {status:?}");
        let mut stdout = String::new();
        if let Some(out) = child.stdout.as_mut() {
            let _ = out.read_to_string(&mut stdout);
        }
        assert!(
            stdout.contains("SIGTERM: shutting down"),
            "node {id}: {stdout}"
        );
    }

    // With every node gone: exit status 1 and the reason per node; a write that timed out
    // says its outcome is unknown, a read does not.
    let out = ctl(&config, 2, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("unreachable"),
        "{}",
        text(&out.stdout)
    );
    let write = ctl(&config, 2, &["put", "late", "v"]);
    assert_eq!(write.status.code(), Some(1));
    assert!(
        text(&write.stderr).contains("outcome unknown"),
        "{}",
        text(&write.stderr)
    );
    let read = ctl(&config, 2, &["get", "late"]);
    assert_eq!(read.status.code(), Some(1));
    assert!(
        !text(&read.stderr).contains("outcome unknown"),
        "{}",
        text(&read.stderr)
    );
}

#[test]
fn the_demo_binary_ends_with_its_verdict() {
    let Finished { status, stdout, .. } = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_rainkv")).args([
            "demo",
            "--seconds",
            "3",
            "--clients",
            "3",
        ]),
        Duration::from_secs(60),
    );
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stdout}");
    assert!(stdout.contains("faults injected"), "{stdout}");
    assert!(stdout.contains("ops/s; latency p50"), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("verdict: linearizable"),
        "{stdout}"
    );
}

/// One line per node of `rainkv-ctl status`: (id, role, term) of the nodes that answered.
fn roles(config: &Path) -> Vec<(usize, String, u64)> {
    let out = ctl(config, 2, &["status"]);
    text(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let id = fields.first()?.parse().ok()?;
            let term = fields.get(3)?.parse().ok()?;
            Some((id, fields.get(2)?.to_string(), term))
        })
        .collect()
}

/// The leader and its term, by `rainkv-ctl status`, waiting up to [`STARTUP_LIMIT`].
fn wait_for_leader(config: &Path) -> (usize, u64) {
    let deadline = Instant::now() + STARTUP_LIMIT;
    loop {
        let leaders: Vec<(usize, u64)> = roles(config)
            .into_iter()
            .filter(|(_, role, _)| role == "leader")
            .map(|(id, _, term)| (id, term))
            .collect();
        if let Some(&leader) = leaders.iter().max_by_key(|(_, term)| *term) {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {STARTUP_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send_sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
}

#[test]
fn transfer_leader_moves_leadership() {
    let scratch = Scratch::new("transfer");
    let _logs = LogsOnFailure(&scratch.0);
    let config = write_slow_election_config(&scratch.0, "transfer-token");
    let mut servers = Servers(
        (0..3)
            .map(|id| spawn_logged(&config, &scratch.0, id))
            .collect(),
    );
    let (leader, term) = wait_for_leader(&config);

    // To each other node in turn, and back.
    let mut current = (leader, term);
    for step in 1..=3 {
        let to = (leader + step) % 3;
        let out = ctl(&config, 2, &["transfer-leader", "--to", &to.to_string()]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        println!("  {}", stdout.trim_end());
        assert!(
            stdout.starts_with(&format!("leader is now node {to} (term ")),
            "{stdout}"
        );
        // A transfer is one election: the term moves by one.
        let status = roles(&config);
        assert!(
            status.contains(&(to, "leader".to_string(), current.1 + 1)),
            "node {to} does not lead term {} after the transfer: {status:?}",
            current.1 + 1
        );
        current = (to, current.1 + 1);
    }
    let put = ctl(&config, 2, &["put", "moved", "yes"]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    let get = ctl(&config, 2, &["get", "moved"]);
    assert_eq!(text(&get.stdout), "yes\n", "{}", text(&get.stderr));

    // To the leader itself: nothing to do.
    let out = ctl(
        &config,
        2,
        &["transfer-leader", "--to", &current.0.to_string()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("already leads"),
        "{}",
        text(&out.stdout)
    );
    // A node the cluster does not have: a usage error.
    let out = ctl(&config, 2, &["transfer-leader", "--to", "7"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no node 7 in the cluster"),
        "{}",
        text(&out.stderr)
    );
    // A node that is down cannot take over; the leader is not even asked, and keeps serving.
    let down = (current.0 + 1) % 3;
    servers.0[down].kill().expect("kill a follower");
    let _ = servers.0[down].wait();
    let out = ctl(&config, 2, &["transfer-leader", "--to", &down.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("node {down} cannot take over: unreachable")),
        "{stderr}"
    );
    let put = ctl(&config, 2, &["put", "still", "served"]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    // With the leader gone too, the last node leads nobody: no leader to ask.
    servers.0[current.0].kill().expect("kill the leader");
    let _ = servers.0[current.0].wait();
    let last = 3 - down - current.0;
    let out = ctl(&config, 2, &["transfer-leader", "--to", &last.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no node leads"),
        "{}",
        text(&out.stderr)
    );
}

/// The longest time between two consecutive acknowledgements that spans part of `from..to`.
fn longest_gap(acked: &[Instant], from: Instant, to: Instant) -> Duration {
    acked
        .windows(2)
        .filter(|pair| pair[1] >= from && pair[0] <= to)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default()
}

#[test]
fn sigterm_hands_leadership_over_in_a_rolling_restart() {
    let scratch = Scratch::new("handoff");
    let _logs = LogsOnFailure(&scratch.0);
    let config = write_slow_election_config(&scratch.0, "handoff-token");
    let cluster = ClusterFile::load(&config).expect("load config");
    let election_timeout = cluster.raft.config().election_timeout;
    let mut servers = Servers(
        (0..3)
            .map(|id| spawn_logged(&config, &scratch.0, id))
            .collect(),
    );
    let (old, term) = wait_for_leader(&config);

    let writer = Writer::start(cluster.clone());
    std::thread::sleep(Duration::from_millis(500));
    let sigterm = Instant::now();
    send_sigterm(&servers.0[old]);
    let status = wait_bounded(&mut servers.0[old], EXIT_LIMIT);
    let exited = Instant::now();
    assert!(
        status.is_some_and(|s| s.success()),
        "node {old}: {status:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let acked = writer.stop();

    let (new, new_term) = wait_for_leader(&config);
    let gap = longest_gap(&acked, sigterm, exited);
    let after = acked.iter().filter(|&&t| t > exited).count();
    println!(
        "  node {old} -> node {new}: longest write gap {gap:?} around the handoff \
         ({} writes acknowledged, {after} after node {old} exited; node {old} took {:?} to exit)",
        acked.len(),
        exited - sigterm
    );

    // The old leader handed over before it exited, to the node that leads now, in one
    // election: the term moved by one.
    let log = std::fs::read_to_string(log_path(&scratch.0, old)).unwrap_or_default();
    let handed = format!("node {old}: handed leadership to node {new} in ");
    let Some(line) = log.lines().find(|line| line.contains(&handed)) else {
        panic!("node {old}'s log does not say it handed over to node {new}:\n{log}");
    };
    println!("  {line}");
    assert_eq!(new_term, term + 1, "node {new} leads term {new_term}");
    // Before that it drained its client port: what was in flight was answered, none cut
    // off; and it stopped only after its storage had.
    let drained = format!("node {old}: drained the client port: ");
    let Some(line) = log.lines().find(|line| line.contains(&drained)) else {
        panic!("node {old}'s log does not say it drained its client port:\n{log}");
    };
    println!("  {line}");
    assert!(line.ends_with(", 0 cut off"), "{line}");
    assert!(
        log.contains(&format!("node {old} stopped")),
        "node {old}'s log does not say it stopped:\n{log}"
    );

    // Writers barely noticed: no pause near an election timeout.
    assert!(after > 0, "no write acknowledged after node {old} exited");
    assert!(
        gap < election_timeout.start,
        "writes paused {gap:?} during the handoff (election timeout {election_timeout:?})"
    );

    // The old leader restarts from its disk, catches up and leads again: every acknowledged
    // write reads back from its state.
    servers.0[old] = spawn_logged(&config, &scratch.0, old);
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    loop {
        let out = ctl(&config, 2, &["transfer-leader", "--to", &old.to_string()]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {old} did not take the lead back within {CATCH_UP_LIMIT:?}: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_acknowledged_writes_kept(&cluster, acked.len());
    // Only its first start, with an empty directory, warned of no saved state.
    let log = std::fs::read_to_string(log_path(&scratch.0, old)).unwrap_or_default();
    assert_eq!(log.matches("no saved Raft state").count(), 1, "{log}");
}

fn send_signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} {}", child.id());
}

/// The leader's process is frozen (SIGSTOP) for 4 s under a writing client, with the default
/// election timeouts: a new leader is elected, and the client finds it at once instead of
/// waiting out its call timeout (2 s) on the frozen node, so writes pause for about one
/// election, never two election timeouts; when the old leader thaws, it follows, and nothing
/// acknowledged is lost.
#[test]
fn a_frozen_leader_costs_writers_about_one_election() {
    let scratch = Scratch::new("frozen");
    let _logs = LogsOnFailure(&scratch.0);
    let config = write_config(&scratch.0, "frozen-token", &free_ports());
    let cluster = ClusterFile::load(&config).expect("load config");
    let election_timeout = cluster.raft.config().election_timeout;
    let servers = Servers(
        (0..3)
            .map(|id| spawn_logged(&config, &scratch.0, id))
            .collect(),
    );
    let (old, term) = wait_for_leader(&config);

    let writer = Writer::start(cluster.clone());
    std::thread::sleep(Duration::from_millis(500));
    let frozen = Instant::now();
    send_signal(&servers.0[old], "STOP");
    std::thread::sleep(Duration::from_secs(4));
    send_signal(&servers.0[old], "CONT");
    let thawed = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let acked = writer.stop();

    let gap = longest_gap(&acked, frozen, thawed);
    let during = acked.iter().filter(|&&t| t > frozen && t < thawed).count();
    println!(
        "  node {old} frozen for 4 s: longest write gap {gap:?} ({} writes acknowledged, \
         {during} while it was frozen)",
        acked.len()
    );
    assert!(
        during > 0,
        "no write acknowledged while node {old} was frozen"
    );
    let bound = election_timeout.end * 2;
    assert!(
        gap < bound,
        "writes paused {gap:?} (bound {bound:?}: two of the longest election timeouts)"
    );
    let (new, new_term) = wait_for_leader(&config);
    assert!(
        new_term > term,
        "node {new} leads term {new_term}, as before the freeze"
    );

    assert_acknowledged_writes_kept(&cluster, acked.len());
}

/// `rainkv bench --config` against a cluster that goes away mid-run: its clients give up after
/// `--give-up-after`, it prints the workload as incomplete and exits 1 saying why, instead of
/// retrying for ever.
#[test]
fn the_bench_gives_up_on_a_cluster_that_went_away() {
    const GIVE_UP_AFTER: Duration = Duration::from_secs(2);
    let scratch = Scratch::new("bench-gives-up");
    let config = write_config(&scratch.0, "bench-token", &free_ports());
    let mut servers = Servers(
        (0..3)
            .map(|id| {
                serve_command(&config, id, &scratch.0.join(format!("node-{id}")))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start rainkv serve")
            })
            .collect(),
    );
    wait_for_leader(&config);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        for child in &mut servers.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    });
    let started = Instant::now();
    let bench = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_rainkv"))
            .args(["bench", "--config"])
            .arg(&config)
            .args(["--workloads", "put_64,get_64", "--ops", "100000000"])
            .args(["--give-up-after", &GIVE_UP_AFTER.as_secs().to_string()]),
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    killer.join().expect("the killer thread");
    assert_eq!(
        bench.status.and_then(|s| s.code()),
        Some(1),
        "{}{}",
        bench.stdout,
        bench.stderr
    );
    let lines: Vec<&str> = bench.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "put_64 only: {}", bench.stdout);
    assert!(
        lines[0].starts_with("workload=put_64 ") && lines[0].contains(" incomplete="),
        "{}",
        bench.stdout
    );
    assert!(
        bench.stderr.contains("put_64: ") && bench.stderr.contains("gave up after 2s"),
        "{}",
        bench.stderr
    );
    // Killed after 1 s; the clients' last calls then wait 2 s (and the cluster client's own
    // timeouts), well short of the 60 s bound.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}
