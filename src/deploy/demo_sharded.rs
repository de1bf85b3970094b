//! The sharded demo behind `rainkv demo --sharded`: a controller group and three replica
//! groups of three nodes each on loopback TCP in this process ([`LocalSharded`]), clients on
//! keys spread over every shard while the controller joins and leaves groups and moves
//! shards, and the leader of a group taking part in each migration is killed and restarted.
//! Every recorded operation is then checked for linearizability (per key, as
//! [`super::demo`] does), and the groups' own shard reports (`ShardKV.Status`) must show each
//! shard served by the group the last configuration gives it, with no old copy left.
//!
//! Groups 1 and 2 join before the clients start. Then, at fixed fractions of the run: group 3
//! joins and its leader is killed as shards move into it (10%), restarted (25%); a shard of
//! group 1 moves to group 3 and group 1's leader is killed while it gives the shard up (35%),
//! restarted (50%); group 1 leaves and group 2's leader is killed while its shards arrive
//! (60%), restarted (75%); group 1 joins again (85%).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};

use super::cluster_file::RaftOverrides;
use super::demo::{check, client, drain, DemoError, DemoProgress, DemoReport, Shared};
use super::local_sharded::LocalSharded;
use super::shard_client::ShardedClient;
use super::sharded_file::GroupName;
use crate::actors::ctrler::clerk::CtrlerClerk;
use crate::messages::ctrler::{ConfigNum, CtrlerError, Gid, ShardConfig, NSHARDS};
use crate::trace::Tracer;

/// How often the demo looks at the clock for steps and progress.
const TICK: Duration = Duration::from_millis(100);
/// The replica groups.
const GIDS: [Gid; 3] = [1, 2, 3];
/// Nodes per group, the controller's included.
const NODES: usize = 3;
/// How long a controller change or a group's election may take.
const STEP_WAIT: Duration = Duration::from_secs(10);
/// Pause between a change and the kill of a leader taking part in it: about when the group's
/// migrator has seen the new configuration and the shards are on their way.
const KILL_AFTER: Duration = Duration::from_millis(150);

/// The sharded demo's settings.
#[derive(Debug, Clone)]
pub struct ShardedDemoOptions {
    /// Length of the run (the steps are spread over it).
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients share, spread over the shards.
    pub keys: usize,
    /// How long the linearizability checker may search.
    pub check_timeout: Duration,
    /// How long the groups may take, after the last step, to serve every shard at its owner.
    pub settle_wait: Duration,
}

impl Default for ShardedDemoOptions {
    fn default() -> Self {
        ShardedDemoOptions {
            duration: Duration::from_secs(20),
            clients: 5,
            keys: 30,
            check_timeout: Duration::from_secs(60),
            settle_wait: Duration::from_secs(30),
        }
    }
}

/// What a sharded demo run did and found.
#[derive(Debug, Clone)]
pub struct ShardedDemoReport {
    /// Operations, latencies, the steps taken (as faults) and the checker's verdict.
    pub demo: DemoReport,
    /// Shards that changed owner (a shard given to its first owner is not counted).
    pub shards_moved: usize,
    /// The controller's last configuration, if it gave one.
    pub config: Option<ShardConfig>,
    /// What kept the groups from serving exactly their shards of that configuration when the
    /// settle wait ran out (empty: every shard served by its owner, no old copy left).
    pub unsettled: Vec<String>,
    /// How long the groups took to settle after the clients stopped.
    pub settled_in: Duration,
}

impl ShardedDemoReport {
    /// Whether every shard ended served by its configured group, and no old copy was left.
    pub fn settled(&self) -> bool {
        self.config.is_some() && self.unsettled.is_empty()
    }

    /// `shard owners at config N: 0→g 1→g ...`, or that there was no configuration.
    pub fn owners_line(&self) -> String {
        match &self.config {
            Some(c) => {
                let owners: Vec<String> = (0..NSHARDS)
                    .map(|s| format!("{s}→{}", c.shards[s]))
                    .collect();
                format!("shard owners at config {}: {}", c.num, owners.join(" "))
            }
            None => "the controller gave no configuration".to_string(),
        }
    }
}

/// What [`run_sharded_demo`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum ShardedProgress<'a> {
    /// A line of its own: the deployment started, a step, the final checks.
    Note(&'a str),
    /// Where the run stands, about ten times a second while the clients run.
    Tick(ShardedTick),
}

/// Where a sharded demo run stands.
#[derive(Debug, Clone, Copy)]
pub struct ShardedTick {
    /// Time since the clients started.
    pub elapsed: Duration,
    /// How long the clients run.
    pub duration: Duration,
    /// Operations completed so far.
    pub ops: usize,
    /// Operations completed in the last second.
    pub ops_last_second: usize,
    /// The controller's configuration number, as of the last change.
    pub config: ConfigNum,
    /// Shards moved so far.
    pub shards_moved: usize,
    /// Nodes running.
    pub up: usize,
    /// Nodes in the deployment.
    pub nodes: usize,
    /// Whether this is the once-a-second report (the plain output prints only these).
    pub second: bool,
}

impl ShardedTick {
    /// The once-a-second line of the plain output.
    pub fn line(&self) -> String {
        format!(
            "[{:5.1}s] {:>7} ops ({:>5} in the last second)  config {}  shards moved: {}  nodes up: {}/{}",
            self.elapsed.as_secs_f64(),
            self.ops,
            self.ops_last_second,
            self.config,
            self.shards_moved,
            self.up,
            self.nodes
        )
    }
}

/// A step of the schedule.
#[derive(Debug, Clone, Copy)]
enum Step {
    Join(Gid),
    Leave(Gid),
    /// The first shard of the first group moves to the second.
    Move(Gid, Gid),
    KillLeader(Gid),
    RestartKilled,
}

const SCHEDULE: [(f64, Step); 10] = [
    (0.10, Step::Join(3)),
    (0.10, Step::KillLeader(3)),
    (0.25, Step::RestartKilled),
    (0.35, Step::Move(1, 3)),
    (0.35, Step::KillLeader(1)),
    (0.50, Step::RestartKilled),
    (0.60, Step::Leave(1)),
    (0.60, Step::KillLeader(2)),
    (0.75, Step::RestartKilled),
    (0.85, Step::Join(1)),
];

/// Shards whose owner changed from one group to another between `before` and `after`.
fn moves_between(before: &ShardConfig, after: &ShardConfig) -> usize {
    (0..NSHARDS)
        .filter(|&s| before.shards[s] != 0 && before.shards[s] != after.shards[s])
        .count()
}

/// Key number `n`: its first byte, a digit, puts key numbers 0 to 9 in the ten shards.
fn key_name(n: usize) -> String {
    format!("{}k{n}", n % 10)
}

/// A controller call, waited for at most [`STEP_WAIT`].
async fn within<T>(
    call: impl std::future::Future<Output = Result<T, CtrlerError>>,
) -> Result<T, String> {
    match timeout(STEP_WAIT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {STEP_WAIT:?}")),
    }
}

/// The deployment, its client, and the steps' state.
struct Driver {
    local: LocalSharded,
    client: ShardedClient,
    killed: Vec<(GroupName, usize)>,
    config: ShardConfig,
    shards_moved: usize,
}

impl Driver {
    fn ctrler(&self) -> &CtrlerClerk {
        self.client.ctrler()
    }

    /// Reads the latest configuration after a change and counts the shards it moved.
    async fn changed(&mut self, what: String) -> Result<String, String> {
        let latest = within(self.ctrler().latest()).await?;
        let moved = moves_between(&self.config, &latest);
        self.shards_moved += moved;
        self.config = latest;
        Ok(format!(
            "{what}: config {}, {moved} shard(s) move",
            self.config.num
        ))
    }

    async fn join(&mut self, gids: &[Gid]) -> Result<String, String> {
        let servers: BTreeMap<Gid, Vec<String>> = gids
            .iter()
            .filter_map(|&gid| Some((gid, self.local.file().servers(gid)?)))
            .collect();
        within(self.ctrler().join(servers)).await?;
        self.changed(format!("group(s) {gids:?} joined")).await
    }

    async fn step(&mut self, step: Step) -> Result<String, String> {
        match step {
            Step::Join(gid) => self.join(&[gid]).await,
            Step::Leave(gid) => {
                within(self.ctrler().leave(vec![gid])).await?;
                self.changed(format!("group {gid} left")).await
            }
            Step::Move(from, to) => {
                let Some(&shard) = self.config.shards_of(from).first() else {
                    return Ok(format!("group {from} holds no shard to move"));
                };
                within(self.ctrler().move_shard(shard, to)).await?;
                self.changed(format!("shard {shard} moved from group {from} to {to}"))
                    .await
            }
            Step::KillLeader(gid) => {
                sleep(KILL_AFTER).await;
                let group = self.client.group(gid).ok_or(format!("no group {gid}"))?;
                let Some((leader, state)) = group.wait_for_leader(STEP_WAIT).await else {
                    return Ok(format!("group {gid} had no leader to kill"));
                };
                let name = GroupName::Replica(gid);
                self.local.kill(name, leader).await;
                self.killed.push((name, leader));
                Ok(format!(
                    "killed group {gid}'s leader, node {leader} (term {}), mid-migration",
                    state.term
                ))
            }
            Step::RestartKilled => {
                let mut done = Vec::new();
                for (group, id) in std::mem::take(&mut self.killed) {
                    match self.local.restart(group, id).await {
                        Ok(()) => done.push(format!("restarted node {id} of {group} from disk")),
                        Err(e) => done.push(format!("could not restart node {id} of {group}: {e}")),
                    }
                }
                match done.is_empty() {
                    true => Ok("nothing to restart".to_string()),
                    false => Ok(done.join("; ")),
                }
            }
        }
    }

    /// Nodes running, and nodes in the deployment.
    fn up(&self) -> (usize, usize) {
        let groups = std::iter::once(GroupName::Controller).chain(GIDS.map(GroupName::Replica));
        let all: Vec<(GroupName, usize)> = groups
            .flat_map(|g| (0..NODES).map(move |id| (g, id)))
            .collect();
        let up = all
            .iter()
            .filter(|(g, id)| self.local.node(*g, *id).is_some())
            .count();
        (up, all.len())
    }
}

/// Why the sharded demo could not run to a verdict.
#[derive(Debug)]
pub enum ShardedDemoError {
    /// What the unsharded demo may meet: the deployment did not start, clients stuck.
    Demo(DemoError),
    /// The first groups could not join.
    FirstJoin(String),
}

impl fmt::Display for ShardedDemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardedDemoError::Demo(e) => e.fmt(f),
            ShardedDemoError::FirstJoin(why) => write!(f, "groups 1 and 2 could not join: {why}"),
        }
    }
}

impl std::error::Error for ShardedDemoError {}

/// Runs the sharded demo. `progress` hears a note per step and a tick ten times a second.
pub async fn run_sharded_demo(
    options: &ShardedDemoOptions,
    progress: &mut dyn FnMut(ShardedProgress<'_>),
) -> Result<ShardedDemoReport, ShardedDemoError> {
    let local = LocalSharded::start(&GIDS, NODES, RaftOverrides::default())
        .await
        .map_err(|e| ShardedDemoError::Demo(DemoError::Start(e)))?;
    let mut driver = Driver {
        client: ShardedClient::connect(local.file()),
        local,
        killed: Vec::new(),
        config: ShardConfig::default(),
        shards_moved: 0,
    };
    progress(ShardedProgress::Note(&format!(
        "started a controller group and groups {GIDS:?} of {NODES} nodes each on loopback TCP"
    )));
    let joined = driver.join(&[1, 2]).await;
    let joined = match joined {
        Ok(line) => line,
        Err(why) => {
            driver.client.close();
            driver.local.shutdown().await;
            return Err(ShardedDemoError::FirstJoin(why));
        }
    };
    progress(ShardedProgress::Note(&joined));
    progress(ShardedProgress::Note(&format!(
        "{} clients start on {} keys for {:?}",
        options.clients, options.keys, options.duration
    )));

    let shared = Shared::new(Tracer::off());
    let mut clients: Vec<_> = (0..options.clients)
        .map(|id| {
            let clerk = driver.client.clerk();
            actix::spawn(client(id, clerk, (options.keys, key_name), shared.clone()))
        })
        .collect();

    let mut log = Vec::new();
    let mut next_step = 0;
    let mut next_report = Duration::from_secs(1);
    let (mut ops_at_last_report, mut ops_last_second) = (0, 0);
    let mut note = |line: String, progress: &mut dyn FnMut(ShardedProgress<'_>)| {
        progress(ShardedProgress::Note(&line));
        log.push(line);
    };
    while shared.started.elapsed() < options.duration {
        sleep(TICK).await;
        let now = shared.started.elapsed();
        while let Some(&(at, step)) = SCHEDULE.get(next_step) {
            if now < options.duration.mul_f64(at) {
                break;
            }
            next_step += 1;
            let what = driver
                .step(step)
                .await
                .unwrap_or_else(|why| format!("{step:?} failed: {why}"));
            let at = shared.started.elapsed().as_secs_f64();
            note(format!("[{at:5.1}s] {what}"), progress);
        }
        let ops = shared.ops();
        let second = now >= next_report;
        if second {
            next_report += Duration::from_secs(1);
            ops_last_second = ops - ops_at_last_report;
            ops_at_last_report = ops;
        }
        let (up, nodes) = driver.up();
        progress(ShardedProgress::Tick(ShardedTick {
            elapsed: now,
            duration: options.duration,
            ops,
            ops_last_second,
            config: driver.config.num,
            shards_moved: driver.shards_moved,
            up,
            nodes,
            second,
        }));
    }
    if !driver.killed.is_empty() {
        let what = driver
            .step(Step::RestartKilled)
            .await
            .unwrap_or_else(|why| why);
        let at = shared.started.elapsed().as_secs_f64();
        note(format!("[{at:5.1}s] end of faults: {what}"), progress);
    }
    let drained = drain(&shared, &mut clients).await;
    let elapsed = shared.started.elapsed();
    if !drained {
        driver.client.close();
        driver.local.shutdown().await;
        return Err(ShardedDemoError::Demo(DemoError::Stuck {
            clients: options.clients,
        }));
    }
    progress(ShardedProgress::Note(&format!(
        "waiting up to {:?} for every shard to be served by its group...",
        options.settle_wait
    )));
    let settling = Instant::now();
    let (config, unsettled) = driver.client.wait_settled(options.settle_wait).await;
    let settled_in = settling.elapsed();
    driver.client.close();
    driver.local.shutdown().await;
    let verdict = check(&shared, options.check_timeout, &mut |p| {
        if let DemoProgress::Note(line) = p {
            progress(ShardedProgress::Note(line));
        }
    });
    Ok(ShardedDemoReport {
        demo: DemoReport {
            ops: shared.ops(),
            elapsed,
            latencies: shared.latencies(),
            faults: log,
            verdict,
        },
        shards_moved: driver.shards_moved,
        config,
        unsettled,
        settled_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::ctrler::key2shard;

    #[test]
    fn the_first_ten_keys_cover_every_shard() {
        let shards: std::collections::BTreeSet<usize> =
            (0..NSHARDS).map(|n| key2shard(key_name(n))).collect();
        assert_eq!(shards.len(), NSHARDS);
    }

    #[test]
    fn only_changes_of_owner_count_as_moves() {
        let none = ShardConfig::default();
        let mut first = none.clone();
        first.shards = [1, 1, 1, 1, 1, 2, 2, 2, 2, 2];
        let mut second = first.clone();
        second.shards[0] = 3;
        second.shards[9] = 3;
        assert_eq!(moves_between(&none, &first), 0);
        assert_eq!(moves_between(&first, &second), 2);
    }
}
