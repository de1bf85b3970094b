//! The sharded benchmark behind `rainkv bench --sharded`: the workloads of [`super::bench`]
//! against a sharded deployment in this process ([`LocalSharded`]: a controller group and
//! replica groups of three nodes on loopback TCP, each node with its own data directory and
//! fsyncs), once per group count, so the figures show how throughput grows with groups; then
//! the time one shard takes to move as a function of its size.
//!
//! A move is timed on a deployment of two groups: a shard of group 1 is filled to the size
//! (values of [`MOVE_VALUE_BYTES`]), the groups are left to settle, and the clock runs from
//! the `Move` to group 2 until every group serves exactly its shards of the new configuration
//! (group 2 serves the shard and group 1's copy is deleted), as the groups' `ShardKV.Status`
//! reports it.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use rand::RngCore;
use tokio::time::Instant;

use super::bench::{run_workloads, BenchOptions, BenchProgress};
use super::cluster_file::{RaftOverrides, TransportOverrides};
use super::local_sharded::LocalSharded;
use super::shard_client::ShardedClient;
use super::stats::WorkloadResult;
use crate::messages::ctrler::{Gid, ShardConfig};

/// Bytes in each value that fills a shard to be moved.
pub const MOVE_VALUE_BYTES: usize = 64 << 10;
/// Nodes per group, the controller's included.
const NODES: usize = 3;
/// Clients filling a shard at once.
const FILLERS: usize = 8;
/// How long a join, a move, or the groups' settling may take before the run gives up.
const STEP_LIMIT: Duration = Duration::from_secs(120);
/// Largest frame between the nodes: a shard travels whole, in one pull reply and one log
/// entry, so frames must hold the largest shard measured (the default is 64 MiB).
const MAX_FRAME: usize = 256 << 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct ShardedBenchOptions {
    /// The group counts to measure, in order.
    pub groups: Vec<usize>,
    /// The workloads, their sizes and clients.
    pub bench: BenchOptions,
    /// Sizes of the shard moved, in bytes, in order (none: no move is timed).
    pub move_sizes: Vec<usize>,
}

/// What [`run_sharded_bench`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum ShardedBenchProgress<'a> {
    /// A line of note: a deployment started, a shard being filled.
    Note(&'a str),
    /// A workload running or done, with the number of groups serving it.
    Workload(usize, BenchProgress<'a>),
    /// A shard move measured.
    Moved(&'a MoveResult),
}

/// One shard move.
#[derive(Debug, Clone)]
pub struct MoveResult {
    /// The shard moved.
    pub shard: usize,
    /// Bytes of values it held.
    pub bytes: usize,
    /// From the `Move` until the new owner served it and the old copy was deleted.
    pub elapsed: Duration,
}

impl MoveResult {
    /// `move_shard size_mib=<m> seconds=<s>`.
    pub fn line(&self) -> String {
        format!(
            "move_shard size_mib={} seconds={:.3}",
            mib(self.bytes),
            self.elapsed.as_secs_f64()
        )
    }
}

/// `bytes` in MiB, to three decimals when not a whole number.
fn mib(bytes: usize) -> String {
    match bytes % (1 << 20) {
        0 => (bytes >> 20).to_string(),
        _ => format!("{:.3}", bytes as f64 / f64::from(1 << 20)),
    }
}

/// A workload's result line with the group count: `workload=<name> groups=<n> ops_per_s=...`.
pub fn line_with_groups(result: &WorkloadResult, groups: usize) -> String {
    result
        .line()
        .replacen(" ops_per_s=", &format!(" groups={groups} ops_per_s="), 1)
}

/// A deployment of groups 1 to `groups`, all joined and settled, and its client.
async fn deployment(
    groups: usize,
    transport: TransportOverrides,
) -> Result<(LocalSharded, ShardedClient), String> {
    let gids: Vec<Gid> = (1..=groups as Gid).collect();
    let local = LocalSharded::start_with(&gids, NODES, RaftOverrides::default(), transport)
        .await
        .map_err(|e| format!("the deployment did not start: {e}"))?;
    let client = ShardedClient::connect(local.file());
    let servers: BTreeMap<Gid, Vec<String>> = gids
        .iter()
        .filter_map(|&gid| Some((gid, local.file().servers(gid)?)))
        .collect();
    let joined = tokio::time::timeout(STEP_LIMIT, client.ctrler().join(servers)).await;
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("groups {gids:?} could not join: {e}")),
        Err(_) => {
            return Err(format!(
                "groups {gids:?} did not join within {STEP_LIMIT:?}"
            ))
        }
    }
    settled(&client).await?;
    Ok((local, client))
}

/// The latest configuration once every group serves exactly its shards of it.
async fn settled(client: &ShardedClient) -> Result<ShardConfig, String> {
    match client.wait_settled(STEP_LIMIT).await {
        (Some(config), unsettled) if unsettled.is_empty() => Ok(config),
        (_, unsettled) => Err(format!(
            "the groups did not settle within {STEP_LIMIT:?}: {}",
            unsettled.join("; ")
        )),
    }
}

/// The `i`-th key of shard `shard`: its first byte, a digit, is `shard` mod 10 (as
/// [`crate::messages::ctrler::key2shard`] reads it).
fn shard_key(shard: usize, i: usize) -> String {
    // '0' is 48, and 48 mod 10 is 8: digit d lands in shard (d + 8) mod 10.
    format!("{}move-{i:08}", (shard + 2) % 10)
}

/// Fills `shard` with `bytes` of values (whole values of [`MOVE_VALUE_BYTES`], at least one)
/// through `FILLERS` clerks at once.
async fn fill(client: &ShardedClient, shard: usize, bytes: usize) -> Result<usize, String> {
    let values = bytes.div_ceil(MOVE_VALUE_BYTES).max(1);
    let value_bytes = bytes.clamp(1, MOVE_VALUE_BYTES);
    let fillers = (0..FILLERS).map(|f| {
        let clerk = client.clerk();
        async move {
            let mut value = vec![0u8; value_bytes];
            for i in (f..values).step_by(FILLERS) {
                rand::thread_rng().fill_bytes(&mut value);
                let put = clerk.put(shard_key(shard, i), Bytes::copy_from_slice(&value));
                match tokio::time::timeout(STEP_LIMIT, put).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("filling shard {shard}: {e}")),
                    Err(_) => {
                        return Err(format!("a put to shard {shard} took over {STEP_LIMIT:?}"))
                    }
                }
            }
            Ok(())
        }
    });
    join_all(fillers)
        .await
        .into_iter()
        .collect::<Result<(), _>>()?;
    Ok(values * value_bytes)
}

/// Times the move of a shard of each size from group 1 to group 2 (a fresh shard each).
async fn time_moves(
    sizes: &[usize],
    progress: &mut dyn FnMut(ShardedBenchProgress<'_>),
) -> Result<Vec<MoveResult>, String> {
    let transport = TransportOverrides {
        max_frame_bytes: Some(MAX_FRAME),
        max_buffered_bytes: Some(2 * MAX_FRAME),
        ..TransportOverrides::default()
    };
    let (mut local, client) = deployment(2, transport).await?;
    let mut results = Vec::new();
    let outcome = async {
        let mut config = settled(&client).await?;
        for &size in sizes {
            let Some(&shard) = config.shards_of(1).first() else {
                return Err("group 1 has no shard left to move".to_string());
            };
            progress(ShardedBenchProgress::Note(&format!(
                "filling shard {shard} with {} MiB, then moving it from group 1 to group 2",
                mib(size)
            )));
            let bytes = fill(&client, shard, size).await?;
            settled(&client).await?;
            let started = Instant::now();
            let moved = tokio::time::timeout(STEP_LIMIT, client.ctrler().move_shard(shard, 2));
            match moved.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("moving shard {shard}: {e}")),
                Err(_) => {
                    return Err(format!(
                        "the move of shard {shard} took over {STEP_LIMIT:?}"
                    ))
                }
            }
            config = settled(&client).await?;
            let result = MoveResult {
                shard,
                bytes,
                elapsed: started.elapsed(),
            };
            progress(ShardedBenchProgress::Moved(&result));
            results.push(result);
        }
        Ok(())
    }
    .await;
    client.close();
    local.shutdown().await;
    outcome.map(|()| results)
}

/// Runs the benchmark: the workloads once per group count, then the moves. Every result is
/// also told to `progress` as it is measured.
pub async fn run_sharded_bench(
    options: &ShardedBenchOptions,
    progress: &mut dyn FnMut(ShardedBenchProgress<'_>),
) -> Result<(Vec<(usize, Vec<WorkloadResult>)>, Vec<MoveResult>), String> {
    let mut by_groups = Vec::new();
    for &groups in &options.groups {
        let (mut local, client) = deployment(groups, TransportOverrides::default()).await?;
        progress(ShardedBenchProgress::Note(&format!(
            "{groups} group(s) of {NODES} nodes and the controller's {NODES} on loopback, joined"
        )));
        let results = run_workloads(&|| client.clerk(), &options.bench, &mut |p| {
            progress(ShardedBenchProgress::Workload(groups, p))
        })
        .await;
        client.close();
        local.shutdown().await;
        by_groups.push((groups, results));
    }
    let moves = match options.move_sizes.is_empty() {
        true => Vec::new(),
        false => time_moves(&options.move_sizes, progress).await?,
    };
    Ok((by_groups, moves))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::ctrler::{key2shard, NSHARDS};

    #[test]
    fn shard_keys_land_in_their_shard() {
        for shard in 0..NSHARDS {
            assert_eq!(key2shard(shard_key(shard, 7)), shard);
        }
    }

    #[test]
    fn sizes_print_in_mib() {
        assert_eq!(mib(64 << 20), "64");
        assert_eq!(mib(64 << 10), "0.062");
    }
}
