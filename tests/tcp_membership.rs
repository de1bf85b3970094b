//! Replacing a dead node, as the README's runbook does it, with the binaries: three
//! `rainkv serve` processes under a writer; one follower is SIGKILLed and its data directory
//! wiped (a lost machine); `rainkv-ctl member add 3 --learner`, a fresh `rainkv serve --join`,
//! `member promote 3` once it caught up, `member remove` of the dead one. No acknowledged
//! write is lost, the cluster is back to three voters, and the new node can lead. And the
//! wrong way, a wiped node restarted under its old id: reported by both ends, not a hang.

#[path = "processes/ctl.rs"]
mod ctl;
#[path = "processes/logged.rs"]
mod logged;
mod processes;
#[path = "processes/writer.rs"]
mod writer;

use std::path::Path;
use std::time::{Duration, Instant};

use ctl::{ctl, text};
use logged::{spawn_logged, spawn_logged_with, write_slow_election_config, LogsOnFailure};
use processes::bounded::wait_bounded;
use processes::{free_ports, Scratch, Servers};
use rainkv::deploy::client::ClusterClient;
use rainkv::deploy::cluster_file::ClusterFile;
use writer::{assert_acknowledged_writes_kept, Writer};

/// How long the cluster may take to come up and elect a leader.
const STARTUP_LIMIT: Duration = Duration::from_secs(15);
/// How long the new node may take to catch up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);
/// A learner is caught up once it lags the leader by at most this many entries.
const CAUGHT_UP_LAG: u64 = 100;

/// The leader's id, asked through the nodes' status.
fn leader(config: &ClusterFile) -> Option<usize> {
    let config = config.clone();
    actix_rt::System::new().block_on(async move {
        let client = ClusterClient::connect_members(&config, Duration::from_secs(2)).await;
        let leader = client
            .wait_for_leader(STARTUP_LIMIT)
            .await
            .map(|(id, _)| id);
        client.close();
        leader
    })
}

/// `member list` as (id, role, lag) rows.
fn members(config: &Path) -> Vec<(usize, String, Option<u64>)> {
    let out = ctl(config, 5, &["member", "list"]);
    assert!(out.status.success(), "member list: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let id = fields.first()?.parse().ok()?;
            let lag = fields.last()?.parse().ok();
            Some((id, fields.get(1)?.to_string(), lag))
        })
        .collect()
}

/// Runs `rainkv-ctl member ARGS` until it succeeds or `limit` passes.
fn member_until_done(config: &Path, args: &[&str], limit: Duration) -> Duration {
    let started = Instant::now();
    let mut args_all = vec!["member"];
    args_all.extend_from_slice(args);
    loop {
        let out = ctl(config, 5, &args_all);
        if out.status.success() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "member {args:?} failed for {limit:?}: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three nodes of `config` logging under `dir`, and a writer that has run for half a second:
/// the servers, the leader's id and the writer.
fn start_under_a_writer(
    config_path: &Path,
    config: &ClusterFile,
    dir: &Path,
) -> (Servers, usize, Writer) {
    let servers = Servers(
        (0..3)
            .map(|id| spawn_logged(config_path, dir, id))
            .collect(),
    );
    let first = leader(config).expect("a leader");
    let writer = Writer::start(config.clone());
    std::thread::sleep(Duration::from_millis(500));
    (servers, first, writer)
}

/// A follower's machine lost: the node after `leader` is SIGKILLed and its data directory
/// under `dir` removed. Returns its id.
fn lose_a_follower(servers: &mut Servers, dir: &Path, leader: usize) -> usize {
    let lost = (leader + 1) % 3;
    servers.0[lost].kill().expect("SIGKILL");
    wait_bounded(&mut servers.0[lost], Duration::from_secs(10)).expect("reaped");
    std::fs::remove_dir_all(dir.join(format!("node-{lost}"))).expect("wipe");
    lost
}

#[test]
fn a_dead_node_is_replaced_by_a_learner_promoted_while_writes_go_on() {
    let scratch = Scratch::new("membership");
    let _logs = LogsOnFailure(&scratch.0);
    let config_path = write_slow_election_config(&scratch.0, "member-token");
    let config = ClusterFile::load(&config_path).expect("the config");
    let spare = free_ports();
    let (peer3, client3) = (
        format!("127.0.0.1:{}", spare[0]),
        format!("127.0.0.1:{}", spare[1]),
    );

    let (mut servers, first, writer) = start_under_a_writer(&config_path, &config, &scratch.0);

    // A follower's machine is lost: killed, its disk gone.
    let dead = lose_a_follower(&mut servers, &scratch.0, first);

    // Its replacement: a learner first, on a new machine (new addresses), fed by the leader.
    let started = Instant::now();
    let add = ctl(
        &config_path,
        5,
        &[
            "member",
            "add",
            "3",
            "--peer",
            &peer3,
            "--client",
            &client3,
            "--learner",
        ],
    );
    assert!(add.status.success(), "member add: {}", text(&add.stderr));
    let join = ["--join", "--peer", &peer3, "--client", &client3];
    servers
        .0
        .push(spawn_logged_with(&config_path, &scratch.0, 3, &join));
    let caught_up = loop {
        let rows = members(&config_path);
        if let Some((_, role, Some(lag))) = rows.iter().find(|(id, ..)| *id == 3) {
            assert_eq!(role, "learner");
            if *lag <= CAUGHT_UP_LAG {
                break started.elapsed();
            }
        }
        assert!(
            started.elapsed() < CATCH_UP_LIMIT,
            "node 3 did not catch up: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    member_until_done(&config_path, &["promote", "3"], CATCH_UP_LIMIT);
    let promoted = started.elapsed();
    member_until_done(&config_path, &["remove", &dead.to_string()], CATCH_UP_LIMIT);
    let replaced = started.elapsed();
    println!(
        "node {dead} replaced by node 3: caught up {caught_up:?}, promoted {promoted:?}, \
         old one removed {replaced:?} after member add"
    );
    std::thread::sleep(Duration::from_millis(500));
    let acked = writer.stop();
    assert!(!acked.is_empty(), "no write acknowledged");
    assert_acknowledged_writes_kept(&config, acked.len());

    // `status` shows every member, the joined one too, and says the file is out of date.
    let status = ctl(&config_path, 5, &["status"]);
    let said = text(&status.stdout);
    assert!(said.contains("only the first members"), "{said}");
    assert!(said.lines().any(|l| l.starts_with("3 ")), "{said}");
    // The leader led throughout: losing a follower and changing members costs no election.
    assert_eq!(leader(&config), Some(first), "leadership moved");
    // Three voters again, the dead one gone; the new node takes the lead and serves.
    let mut voters: Vec<usize> = members(&config_path)
        .into_iter()
        .filter(|(_, role, _)| role == "voter")
        .map(|(id, ..)| id)
        .collect();
    voters.sort_unstable();
    let mut expected: Vec<usize> = [0, 1, 2, 3].into_iter().filter(|id| *id != dead).collect();
    expected.sort_unstable();
    assert_eq!(voters, expected);
    let moved = ctl(&config_path, 5, &["transfer-leader", "--to", "3"]);
    assert!(
        moved.status.success(),
        "transfer-leader: {}",
        text(&moved.stderr)
    );
    let put = ctl(&config_path, 5, &["put", "after", "replacement"]);
    assert!(put.status.success(), "put: {}", text(&put.stderr));
    let get = ctl(&config_path, 5, &["get", "w0"]);
    assert_eq!(text(&get.stdout), "v0\n", "{}", text(&get.stderr));
}

/// Waits up to `limit` for node `id`'s log under `dir` to contain `needle` `times` times.
fn log_says(dir: &Path, id: usize, needle: &str, times: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let log = std::fs::read_to_string(logged::log_path(dir, id)).unwrap_or_default();
        if log.matches(needle).count() >= times {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The wrong way to replace a node: its data directory wiped and the node restarted under its
/// old id. It cannot catch up (the leader never rewinds what a follower acknowledged), and
/// instead of a silent hang both ends say why: the node that its state is gone, the leader
/// that this follower lost data it had acknowledged, with the runbook's fix. The cluster
/// serves throughout and keeps every acknowledged write.
#[test]
fn a_follower_wiped_and_restarted_under_its_old_id_is_reported() {
    const REPORT_LIMIT: Duration = Duration::from_secs(15);
    let scratch = Scratch::new("wiped-follower");
    let _logs = LogsOnFailure(&scratch.0);
    let config_path = write_slow_election_config(&scratch.0, "wiped-token");
    let config = ClusterFile::load(&config_path).expect("the config");
    let (mut servers, first, writer) = start_under_a_writer(&config_path, &config, &scratch.0);

    let wiped = lose_a_follower(&mut servers, &scratch.0, first);
    servers.0[wiped] = spawn_logged(&config_path, &scratch.0, wiped);

    // Said at the first start of the new cluster, and again at the restart.
    let fresh = "no saved Raft state";
    assert!(
        log_says(&scratch.0, wiped, fresh, 2, REPORT_LIMIT),
        "node {wiped} did not say its state is gone"
    );
    let lost = format!("follower {wiped} keeps saying its log ends at");
    assert!(
        log_says(&scratch.0, first, &lost, 1, REPORT_LIMIT),
        "leader {first} did not report follower {wiped}"
    );
    assert!(log_says(
        &scratch.0,
        first,
        "member remove",
        1,
        REPORT_LIMIT
    ));

    std::thread::sleep(Duration::from_millis(300));
    let acked = writer.stop();
    assert!(!acked.is_empty(), "no write acknowledged");
    assert_acknowledged_writes_kept(&config, acked.len());
    assert_eq!(leader(&config), Some(first), "leadership moved");
}
