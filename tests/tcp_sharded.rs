//! A sharded deployment as an operator runs it: twelve `rainkv serve` processes (a controller
//! group and three replica groups of three nodes each) on loopback, driven with `rainkv-ctl
//! shard` while a writer appends through the sharded clerk. Groups 100 and 200 join; group 300
//! joins and its leader is SIGKILLed as the shards move into it; group 100 leaves and its
//! leader is SIGKILLed as the shards move out of it; both are restarted from their data
//! directories and finish the migrations they were in. Afterwards every acknowledged append is
//! read back with `rainkv-ctl get`, `shard query` gives every shard to a live group, and
//! `status` shows every shard serving. Then the bad input an operator may type (a gid not in
//! the file, shard 10 of 10, leaving the last groups, a group not in the config, a shard
//! command on an unsharded cluster) is refused with exit status 2, and nothing changes.

#[path = "processes/ctl.rs"]
mod ctl;
mod processes;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ctl::{ctl, text};
use processes::bounded::wait_bounded;
use processes::{free_ports, serve_command, write_config, Scratch, Servers};
use rainkv::deploy::cluster_file::{
    NodeAddrs, RaftOverrides, SessionOverrides, TransportOverrides, DEFAULT_MAX_RAFT_STATE,
};
use rainkv::deploy::local_sharded::LocalSharded;
use rainkv::deploy::shard_client::ShardedClient;
use rainkv::deploy::sharded_file::{GroupName, ReplicaGroup, ShardedFile};
use rainkv::ClusterFile;

/// How long the deployment may take to come up, or a group to elect a leader.
const STARTUP_LIMIT: Duration = Duration::from_secs(15);
/// How long the groups may take to settle after the last change.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// An append not acknowledged within this fails the test.
const WRITE_LIMIT: Duration = Duration::from_secs(15);
/// The keys the writer appends to, in turn.
const KEYS: usize = 30;
/// The groups, and the node slots: the controller's three nodes, then each group's.
const GIDS: [u64; 3] = [100, 200, 300];

/// The deployment file: every node on loopback, elections after 1–2 s (twelve processes share
/// two cores with fsyncs; the default timeouts would start elections nobody asked for).
fn deployment(dir: &Path) -> (ShardedFile, PathBuf) {
    let mut ports = Vec::new();
    while ports.len() < 24 {
        ports.extend(free_ports());
    }
    let mut ports = ports.into_iter();
    let mut nodes = |n: usize| -> Vec<NodeAddrs> {
        (0..n)
            .map(|id| {
                let mut next = || SocketAddr::from(([127, 0, 0, 1], ports.next().expect("port")));
                NodeAddrs {
                    id,
                    peer: next(),
                    client: next(),
                    metrics: None,
                }
            })
            .collect()
    };
    let controller = ClusterFile {
        name: "sharded-process-test".into(),
        token: "shard-token".into(),
        max_raft_state: DEFAULT_MAX_RAFT_STATE,
        nodes: nodes(3),
        transport: TransportOverrides::default(),
        raft: RaftOverrides {
            election_timeout_min_ms: Some(1000),
            election_timeout_max_ms: Some(2000),
            ..RaftOverrides::default()
        },
        sessions: SessionOverrides::default(),
        tls: None,
    };
    let groups = GIDS
        .iter()
        .map(|&gid| ReplicaGroup {
            gid,
            nodes: nodes(3),
        })
        .collect();
    let file = ShardedFile { controller, groups };
    let path = dir.join("sharded.toml");
    std::fs::write(&path, file.to_toml().expect("toml")).expect("write the file");
    (file, path)
}

/// Slot of node `id` of `group` among the twelve processes.
fn slot(group: GroupName, id: usize) -> usize {
    match group {
        GroupName::Controller => id,
        GroupName::Replica(gid) => 3 + 3 * GIDS.iter().position(|&g| g == gid).expect("gid") + id,
    }
}

fn group_arg(group: GroupName) -> String {
    match group {
        GroupName::Controller => "controller".into(),
        GroupName::Replica(gid) => gid.to_string(),
    }
}

/// `rainkv serve --group G --id N`, its log appended to `node-<slot>.log`.
fn spawn(config: &Path, dir: &Path, group: GroupName, id: usize) -> Child {
    let n = slot(group, id);
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("node-{n}.log")))
        .expect("open node log");
    serve_command(config, id, &dir.join(format!("node-{n}")))
        .args(["--group", &group_arg(group)])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start rainkv serve")
}

/// Prints every node's log if the test fails.
struct LogsOnFailure<'a>(&'a Path);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in 0..12 {
                if let Ok(log) = std::fs::read_to_string(self.0.join(format!("node-{n}.log"))) {
                    eprintln!("--- node slot {n} log ---\n{log}");
                }
            }
        }
    }
}

/// The leader of group `gid`, once one leads.
fn leader(file: &ShardedFile, gid: u64) -> usize {
    let file = file.clone();
    actix_rt::System::new().block_on(async move {
        let client = ShardedClient::connect(&file);
        let leader = client
            .group(gid)
            .expect("group")
            .wait_for_leader(STARTUP_LIMIT)
            .await
            .map(|(id, _)| id);
        client.close();
        leader.unwrap_or_else(|| panic!("group {gid} has no leader"))
    })
}

/// `rainkv-ctl --config F ARGS`, which must succeed; its stdout.
fn ctl_ok(config: &Path, args: &[&str]) -> String {
    let out = ctl(config, 10, args);
    assert!(
        out.status.success(),
        "rainkv-ctl {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The owner of each shard, as `shard query` prints it, and the config number.
fn query(config: &Path) -> (u64, Vec<u64>) {
    let out = ctl_ok(config, &["shard", "query"]);
    let num = out
        .lines()
        .find_map(|l| l.strip_prefix("config ")?.trim().parse().ok())
        .expect("a config number");
    let owners = out
        .lines()
        .skip_while(|l| !l.starts_with("shard"))
        .skip(1)
        .take_while(|l| !l.starts_with("gid"))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields[1].parse().expect("a gid")
        })
        .collect();
    (num, owners)
}

/// Appends `<i>,` to key `k<i mod KEYS>` for i = 0, 1, ... through the sharded clerk, one at
/// a time, until told to stop; returns how many were acknowledged.
struct Appender {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<usize>,
}

impl Appender {
    fn start(file: ShardedFile) -> Appender {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let client = ShardedClient::connect(&file);
                let clerk = client.clerk();
                let mut acked = 0;
                while !stopped.load(Ordering::Relaxed) {
                    let append = clerk.append(format!("k{}", acked % KEYS), format!("{acked},"));
                    match tokio::time::timeout(WRITE_LIMIT, append).await {
                        Ok(Ok(())) => acked += 1,
                        Ok(Err(e)) => panic!("append {acked}: {e}"),
                        Err(_) => panic!("append {acked} not acknowledged within {WRITE_LIMIT:?}"),
                    }
                }
                client.close();
                acked
            })
        });
        Appender { stop, thread }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the appender failed")
    }
}

/// Changes the configuration with `shard ARGS` and, as the shards move, SIGKILLs the leader
/// of group `gid` (a shard's new or old owner), then restarts it from its data directory.
fn change_and_kill_leader(
    file: &ShardedFile,
    config: &Path,
    dir: &Path,
    servers: &mut Servers,
    args: &[&str],
    gid: u64,
) {
    let victim = leader(file, gid);
    let out = ctl_ok(config, args);
    assert!(
        out.contains("shard(s) move"),
        "{args:?} moved nothing: {out}"
    );
    let group = GroupName::Replica(gid);
    let child = &mut servers.0[slot(group, victim)];
    child.kill().expect("SIGKILL the leader");
    assert!(
        wait_bounded(child, Duration::from_secs(5)).is_some(),
        "a SIGKILLed node lives"
    );
    std::thread::sleep(Duration::from_millis(1500));
    *child = spawn(config, dir, group, victim);
}

#[test]
fn a_sharded_deployment_moves_shards_through_leader_crashes() {
    let started = Instant::now();
    let scratch = Scratch::new("sharded");
    let _logs = LogsOnFailure(&scratch.0);
    let (file, config) = deployment(&scratch.0);
    let mut servers = Servers(Vec::new());
    let groups = std::iter::once(GroupName::Controller).chain(GIDS.map(GroupName::Replica));
    for group in groups {
        for id in 0..3 {
            servers.0.push(spawn(&config, &scratch.0, group, id));
        }
    }

    // Before any join, every shard is on gid 0.
    let (num, owners) = query(&config);
    assert_eq!((num, owners), (0, vec![0; 10]));
    ctl_ok(&config, &["shard", "join", "100", "200"]);
    let (_, owners) = query(&config);
    assert_eq!(
        owners.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&100, &200])
    );

    let appender = Appender::start(file.clone());
    std::thread::sleep(Duration::from_secs(2));
    // Shards move into 300 while its leader dies; then out of 100 while its leader dies.
    change_and_kill_leader(
        &file,
        &config,
        &scratch.0,
        &mut servers,
        &["shard", "join", "300"],
        300,
    );
    std::thread::sleep(Duration::from_secs(1));
    change_and_kill_leader(
        &file,
        &config,
        &scratch.0,
        &mut servers,
        &["shard", "leave", "100"],
        100,
    );
    std::thread::sleep(Duration::from_secs(1));
    let acked = appender.stop();
    assert!(acked > 0, "no append was acknowledged");

    // Every shard reaches its owner, which serves it; no old copy is left.
    let deadline = Instant::now() + SETTLE_LIMIT;
    let status = loop {
        let out = ctl(&config, 5, &["status"]);
        let stdout = text(&out.stdout);
        if out.status.success() && stdout.contains("all shards serving at config") {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "not settled in {SETTLE_LIMIT:?}:\n{stdout}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (num, owners) = query(&config);
    assert_eq!(
        num, 3,
        "join (100 and 200), join, leave: config 3\n{status}"
    );
    let live = BTreeSet::from([200, 300]);
    assert!(owners.iter().all(|g| live.contains(g)), "owners {owners:?}");
    for gid in [200, 300] {
        assert!(
            owners.contains(&gid),
            "group {gid} owns nothing: {owners:?}"
        );
    }
    for bad in ["pulling", "frozen", "awaiting deletion", "not here yet"] {
        assert!(!status.contains(bad), "{bad} after settling:\n{status}");
    }

    // Every acknowledged append, read back with rainkv-ctl.
    for key in 0..KEYS {
        let expected: String = (key..acked)
            .step_by(KEYS)
            .map(|i| format!("{i},"))
            .collect();
        let value = ctl_ok(&config, &["get", &format!("k{key}")]);
        assert_eq!(
            value.trim_end(),
            expected,
            "key k{key} after {acked} appends"
        );
    }

    // A dry run changes nothing but says what would move.
    let out = ctl_ok(&config, &["shard", "leave", "200", "--dry-run"]);
    assert!(out.contains("dry run") && out.contains("config 4"), "{out}");
    assert!(out.contains("shard(s) move"), "{out}");
    assert_eq!(query(&config).0, 3);

    // Bad input: exit status 2, a clear message, nothing changed.
    let unsharded = write_config(&scratch.0, "unsharded", &free_ports());
    let bad: [(&Path, &[&str], &str); 6] = [
        (
            &config,
            &["shard", "join", "999"],
            "group 999 has no servers in the file",
        ),
        (
            &config,
            &["shard", "move", "10", "200"],
            "there is no shard 10",
        ),
        (
            &config,
            &["shard", "leave", "200", "300"],
            "would leave no group",
        ),
        (
            &config,
            &["shard", "move", "0", "100"],
            "group 100 is not in config 3",
        ),
        (
            &config,
            &["shard", "leave", "100"],
            "group 100 is not in config 3",
        ),
        (&unsharded, &["shard", "query"], "unsharded cluster"),
    ];
    for (path, args, message) in bad {
        let out = ctl(path, 5, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert_eq!(query(&config), (num, owners));
    eprintln!(
        "{acked} appends acknowledged and kept; took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The same deployment inside one process ([`LocalSharded`], what a one-process sharded demo
/// or benchmark starts): two groups join, keys written through the sharded clerk, a shard
/// moved while the leader of its new owner is killed and restarted; every key reads back.
#[actix::test]
async fn a_one_process_deployment_serves_keys_across_a_move_and_a_restart() {
    let _ = env_logger::builder().is_test(true).try_init();
    let limit = Duration::from_secs(30);
    let mut local = LocalSharded::start(&[1, 2], 3, RaftOverrides::default())
        .await
        .expect("the deployment starts");
    let client = ShardedClient::connect(local.file());
    let ctrler = client.ctrler();
    let servers = |gid| local.file().servers(gid).expect("servers");
    let join = BTreeMap::from([(1, servers(1)), (2, servers(2))]);
    tokio::time::timeout(limit, ctrler.join(join))
        .await
        .expect("join in time")
        .expect("join");
    let clerk = client.clerk();
    for i in 0..20 {
        let put = clerk.put(format!("key{i}"), format!("value{i}"));
        tokio::time::timeout(limit, put)
            .await
            .expect("put in time")
            .expect("put");
    }
    let config = ctrler.latest().await.expect("config");
    let shard = config.shards_of(1)[0];
    let (leader, _) = client
        .group(2)
        .expect("group 2")
        .wait_for_leader(limit)
        .await
        .expect("group 2 leads");
    tokio::time::timeout(limit, ctrler.move_shard(shard, 2))
        .await
        .expect("move in time")
        .expect("move");
    local.kill(GroupName::Replica(2), leader).await;
    local
        .restart(GroupName::Replica(2), leader)
        .await
        .expect("restart");
    for i in 0..20 {
        let get = clerk.get_string(format!("key{i}"));
        let value = tokio::time::timeout(limit, get).await.expect("get in time");
        assert_eq!(value.expect("get"), Some(format!("value{i}")));
    }
    client.close();
    local.shutdown().await;
}
