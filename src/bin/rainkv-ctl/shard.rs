//! `rainkv-ctl shard ...` and `rainkv-ctl status` for a sharded deployment.
//!
//! A change (join, leave, move) is checked against the file and the controller's latest
//! configuration before anything is sent: a gid the file does not list, a group that is not in
//! the configuration, a shard out of range and leaving the last group are refused (exit 2) and
//! nothing changes. The configuration a change produces is computed here with the
//! controller's own code (`config_ops::successor`), which is what `--dry-run` prints.

use std::collections::BTreeMap;
use std::time::Duration;

use rainkv::actors::ctrler::config_ops::successor;
use rainkv::deploy::shard_client::{settled_under, ShardNodeReport, ShardedClient};
use rainkv::messages::ctrler::{CtrlerError, CtrlerOp, ShardConfig, NSHARDS};
use rainkv::messages::rsm::Health;

use super::{Failure, ShardCmd};

/// Within `limit`, or the controller is unavailable.
async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl std::future::Future<Output = Result<T, CtrlerError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure::Unavailable(format!("{what}: {e}"))),
        Err(_) => Err(Failure::Unavailable(format!(
            "{what}: the controller did not answer within {limit:?} (no leader, or its nodes \
             are down)"
        ))),
    }
}

/// `rainkv-ctl shard COMMAND`.
pub async fn run(
    client: &ShardedClient,
    command: &ShardCmd,
    limit: Duration,
) -> Result<(), Failure> {
    let ctrler = client.ctrler();
    let (op, dry_run) = match command {
        ShardCmd::Query { num } => {
            let config = match num {
                Some(num) => within(limit, "query", ctrler.config(*num)).await?,
                None => within(limit, "query", ctrler.latest()).await?,
            };
            if num.is_some_and(|n| n != config.num) {
                println!(
                    "(no config {}: the latest is {})",
                    num.unwrap_or(0),
                    config.num
                );
            }
            print_config(&config);
            return Ok(());
        }
        ShardCmd::Join { gids, dry_run } => {
            let mut servers = BTreeMap::new();
            for gid in gids {
                let names = client.file().servers(*gid).ok_or_else(|| {
                    Failure::Usage(format!(
                        "group {gid} has no servers in the file (its groups: {:?})",
                        client.file().gids()
                    ))
                })?;
                servers.insert(*gid, names);
            }
            (CtrlerOp::Join { servers }, *dry_run)
        }
        ShardCmd::Leave { gids, dry_run } => (CtrlerOp::Leave { gids: gids.clone() }, *dry_run),
        ShardCmd::Move {
            shard,
            gid,
            dry_run,
        } => {
            if *shard >= NSHARDS {
                return Err(Failure::Usage(format!(
                    "there is no shard {shard}: shards are 0..{NSHARDS}"
                )));
            }
            let op = CtrlerOp::Move {
                shard: *shard,
                gid: *gid,
            };
            (op, *dry_run)
        }
    };
    let latest = within(limit, "query", ctrler.latest()).await?;
    check(&latest, &op)?;
    let next = successor(&latest, &op).map_err(|e| Failure::Usage(e.to_string()))?;
    if dry_run {
        println!("dry run: nothing changed; config {} would be:", next.num);
        print_config(&next);
        print_moves(&latest, &next);
        return Ok(());
    }
    let change = async {
        match op {
            CtrlerOp::Join { servers } => ctrler.join(servers).await,
            CtrlerOp::Leave { gids } => ctrler.leave(gids).await,
            CtrlerOp::Move { shard, gid } => ctrler.move_shard(shard, gid).await,
            CtrlerOp::Query { .. } => Ok(()),
        }
    };
    match tokio::time::timeout(limit, change).await {
        Ok(Ok(())) => {}
        // Refused by the controller: nothing changed.
        Ok(Err(
            e @ (CtrlerError::UnknownGid { .. }
            | CtrlerError::ShardOutOfRange { .. }
            | CtrlerError::ReservedGid),
        )) => return Err(Failure::Usage(e.to_string())),
        Ok(Err(e)) => return Err(Failure::Unavailable(e.to_string())),
        Err(_) => {
            return Err(Failure::Unavailable(format!(
                "the controller did not confirm the change within {limit:?} (outcome unknown: \
                 it may still be made; see `shard query`)"
            )))
        }
    }
    let now = within(limit, "query", ctrler.latest()).await?;
    println!("done: config {}", now.num);
    print_config(&now);
    print_moves(&latest, &now);
    Ok(())
}

/// Refuses a change the configuration `latest` makes no sense of (exit 2, nothing sent).
fn check(latest: &ShardConfig, op: &CtrlerOp) -> Result<(), Failure> {
    match op {
        CtrlerOp::Leave { gids } => {
            if let Some(gid) = gids.iter().find(|g| !latest.groups.contains_key(g)) {
                return Err(Failure::Usage(format!(
                    "group {gid} is not in config {} (its groups: {:?})",
                    latest.num,
                    latest.groups.keys().collect::<Vec<_>>()
                )));
            }
            if latest.groups.keys().all(|g| gids.contains(g)) {
                return Err(Failure::Usage(format!(
                    "leaving {gids:?} would leave no group to own the shards (their data would \
                     be dropped); join another group first"
                )));
            }
        }
        CtrlerOp::Move { gid, .. } if !latest.groups.contains_key(gid) => {
            return Err(Failure::Usage(format!(
                "group {gid} is not in config {} (its groups: {:?}); join it first",
                latest.num,
                latest.groups.keys().collect::<Vec<_>>()
            )));
        }
        _ => {}
    }
    Ok(())
}

/// The configuration as two tables: shard → gid, gid → servers.
fn print_config(config: &ShardConfig) {
    println!("config {}", config.num);
    println!("{:<6} {:>6}", "shard", "gid");
    for (shard, gid) in config.shards.iter().enumerate() {
        println!("{shard:<6} {gid:>6}");
    }
    println!("{:<6} servers", "gid");
    for (gid, servers) in &config.groups {
        println!("{gid:<6} {}", servers.join(", "));
    }
}

/// The shards whose owner differs between `from` and `to`.
fn print_moves(from: &ShardConfig, to: &ShardConfig) {
    let moves: Vec<String> = (0..NSHARDS)
        .filter(|&s| from.shards[s] != to.shards[s])
        .map(|s| format!("shard {s}: {} -> {}", from.shards[s], to.shards[s]))
        .collect();
    if moves.is_empty() {
        println!("no shard moves");
    } else {
        println!("{} shard(s) move: {}", moves.len(), moves.join("; "));
    }
}

/// `rainkv-ctl status` for a sharded deployment: the controller's nodes, then per group its
/// nodes (role, term, config) and each shard's state as its leader (or, without one, the most
/// advanced node) sees it. Ends with one line saying whether every shard is served by its
/// owner in the latest configuration.
pub async fn status(client: &ShardedClient, limit: Duration) -> Result<(), Failure> {
    let reports = client.controller().status(limit).await;
    println!("controller");
    let mut ctrler_answered = 0;
    for report in &reports {
        let line = match &report.status {
            Ok(s) => {
                ctrler_answered += 1;
                match (&s.health, s.raft) {
                    (Health::Halted { reason }, _) => format!("halted: {reason}"),
                    (_, Some(r)) => format!("{:<10} term {}", r.role.to_string(), r.term),
                    (_, None) => "its Raft peer has stopped".into(),
                }
            }
            Err(why) => why.clone(),
        };
        println!(
            "  node {:<3} {:<22} {line}",
            report.node.id,
            report.node.client.to_string()
        );
    }
    let latest = tokio::time::timeout(limit, client.ctrler().latest()).await;
    let latest = match latest {
        Ok(Ok(config)) => Some(config),
        _ => None,
    };
    let mut unsettled = 0;
    let mut unanswered = Vec::new();
    for gid in client.file().gids() {
        let Some(nodes) = client.group_status(gid, limit).await else {
            continue;
        };
        let owned = latest
            .as_ref()
            .map(|c| c.shards_of(gid))
            .unwrap_or_default();
        let joined = latest.as_ref().is_some_and(|c| c.groups.contains_key(&gid));
        println!(
            "group {gid}{}",
            if joined {
                ""
            } else {
                " (not in the latest config)"
            }
        );
        for node in &nodes {
            println!("  {}", node_line(node));
        }
        let view = nodes
            .iter()
            .filter_map(|n| Some((n.node.status.as_ref().ok()?, n.shards.as_ref().ok()?)))
            .max_by_key(|(status, shards)| (status.is_leader(), shards.num));
        let Some((status, shards)) = view else {
            unanswered.push(gid);
            continue;
        };
        let whose = match status.raft.filter(|_| status.is_leader()) {
            Some(r) => format!("leader node {} (term {})", status.id, r.term),
            None => format!("no leader; node {}", status.id),
        };
        println!("  config {}, as {whose} sees it:", shards.num);
        let mut held: BTreeMap<usize, String> = shards
            .shards
            .iter()
            .map(|(s, st)| (*s, st.to_string()))
            .collect();
        for s in &owned {
            held.entry(*s).or_insert_with(|| "not here yet".into());
        }
        for (shard, state) in &held {
            println!("    shard {shard:<3} {state}");
        }
        let settled = latest
            .as_ref()
            .map_or(shards.num == 0 && shards.shards.is_empty(), |c| {
                settled_under(gid, shards, c)
            });
        if !settled {
            unsettled += 1;
        }
    }
    if ctrler_answered <= reports.len() / 2 {
        return Err(Failure::Unavailable(format!(
            "only {ctrler_answered} of {} controller nodes answered",
            reports.len()
        )));
    }
    match (&latest, unanswered.is_empty(), unsettled) {
        (None, _, _) => println!("the controller gave no configuration in time"),
        (Some(_), false, _) => println!("groups {unanswered:?} did not answer"),
        (Some(c), true, 0) => println!("all shards serving at config {}", c.num),
        (Some(c), true, n) => println!(
            "migration in progress: {n} group(s) not yet serving exactly their shards of config {}",
            c.num
        ),
    }
    Ok(())
}

/// One node of a group: its address, role, term and config.
fn node_line(report: &ShardNodeReport) -> String {
    let node = &report.node.node;
    let head = format!("node {:<3} {:<22}", node.id, node.client.to_string());
    match (&report.node.status, &report.shards) {
        (Err(why), _) => format!("{head} {why}"),
        (Ok(s), _) if matches!(s.health, Health::Halted { .. }) => format!("{head} halted"),
        (Ok(s), shards) => {
            let raft = s
                .raft
                .map(|r| format!("{:<10} term {:<4}", r.role.to_string(), r.term))
                .unwrap_or_else(|| "stopped".into());
            let config = shards
                .as_ref()
                .map(|g| format!("config {}", g.num))
                .unwrap_or_else(|e| e.clone());
            format!("{head} {raft} {config}")
        }
    }
}
