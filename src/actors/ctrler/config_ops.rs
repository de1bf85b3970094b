//! The shard controller's state machine: the history of configs and the operations that
//! extend it. Pure code, no I/O and no actors: the replicated state machine layer
//! ([`crate::actors::rsm`]) feeds it each committed [`CtrlerOp`] in log order, and every
//! replica computes the same configs. It is snapshotted and restored with serde like any
//! [`StateMachine`]; decoding checks that the history is one [`ConfigHistory::execute`] could
//! have built, so a corrupt snapshot is refused with a clear error instead of served.
//!
//! # Rebalancing
//! Join and Leave end with `rebalance`, which moves as few shards as possible to reach an
//! even spread:
//! 1. Shards owned by no current group (gid 0, or a group that just left) are *orphans*.
//! 2. Groups are ranked by how many shards they hold (most first; ties by smaller gid). The
//!    first `min(groups, NSHARDS)` of them hold shards: with `k` such groups, the first
//!    `NSHARDS % k` get `NSHARDS / k + 1` shards and the others `NSHARDS / k`. Groups past
//!    `NSHARDS` get none.
//! 3. A group holding more than its target gives up its highest-numbered shards; orphans and
//!    given-up shards, in shard order, fill the groups below target in gid order.
//!
//! Giving the larger targets to the groups that already hold the most is what makes the
//! number of moves minimal: a move happens only for an orphan or for a shard above its
//! group's target, and no balanced assignment has fewer shards above target. So a Join moves
//! only what the new groups need, a Leave moves only the departed groups' shards (unless a
//! Move had left the spread uneven), and joining a group to 10 groups holding one shard each
//! moves nothing. Only `BTreeMap`s and sorted vectors are iterated, so the result is
//! deterministic.
//!
//! # Join of a group already present
//! Its server list is replaced by the new one; the shards it owns stay with it (the group is
//! the same group, perhaps with new servers). The rebalance then runs as for any Join, which
//! on a balanced map moves nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::actors::rsm::StateMachine;
use crate::messages::ctrler::{ConfigNum, CtrlerError, CtrlerOp, Gid, ShardConfig, NSHARDS};

/// Every config the controller has created, config 0 first; `configs[i].num == i`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "UncheckedHistory")]
pub struct ConfigHistory {
    configs: Vec<ShardConfig>,
}

/// The wire form of a [`ConfigHistory`] before it is checked (same fields, so the same
/// encoding).
#[derive(Deserialize)]
struct UncheckedHistory {
    configs: Vec<ShardConfig>,
}

impl TryFrom<UncheckedHistory> for ConfigHistory {
    type Error = InvalidHistory;

    fn try_from(raw: UncheckedHistory) -> Result<Self, InvalidHistory> {
        let history = ConfigHistory {
            configs: raw.configs,
        };
        history.validate()?;
        Ok(history)
    }
}

impl StateMachine for ConfigHistory {
    type Command = CtrlerOp;
    type Output = Result<Option<ShardConfig>, CtrlerError>;

    fn apply(&mut self, op: CtrlerOp) -> Self::Output {
        self.execute(&op)
    }

    /// Marks each new configuration: its number and each shard's group.
    fn trace_note(&self, op: &CtrlerOp, output: &Self::Output) -> Option<String> {
        match (op, output) {
            (CtrlerOp::Query { .. }, _) | (_, Err(_)) => None,
            _ => {
                let latest = self.latest();
                let gids: Vec<String> = latest.shards.iter().map(|g| g.to_string()).collect();
                Some(format!("config {}: shards {}", latest.num, gids.join(" ")))
            }
        }
    }
}

impl Default for ConfigHistory {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigHistory {
    /// A history holding only config 0 (no groups, every shard on gid 0).
    pub fn new() -> Self {
        Self {
            configs: vec![ShardConfig::default()],
        }
    }

    /// Applies one committed operation.
    ///
    /// Join, Leave and Move append config `latest().num + 1` and return `Ok(None)`; Query
    /// returns `Ok(Some(config))` and changes nothing. On `Err` nothing changes (see the
    /// invalid-input rules in `messages::ctrler`); the outcome depends only on the history
    /// and the op, so all replicas agree on it.
    pub fn execute(&mut self, op: &CtrlerOp) -> Result<Option<ShardConfig>, CtrlerError> {
        match op {
            CtrlerOp::Query { num } => Ok(Some(self.query(*num).clone())),
            change => {
                let next = successor(self.latest(), change)?;
                self.configs.push(next);
                Ok(None)
            }
        }
    }

    /// The newest config.
    pub fn latest(&self) -> &ShardConfig {
        // Never empty: `new` starts with config 0 and decoding checks for it.
        &self.configs[self.configs.len() - 1]
    }

    /// Config `num`, or the latest one if `num` is `None` or past the latest.
    pub fn query(&self, num: Option<ConfigNum>) -> &ShardConfig {
        num.and_then(|n| usize::try_from(n).ok())
            .and_then(|i| self.configs.get(i))
            .unwrap_or_else(|| self.latest())
    }

    /// All configs, config 0 first.
    pub fn configs(&self) -> &[ShardConfig] {
        &self.configs
    }

    /// Checks that the history is one `execute` could have built: numbers in order from
    /// config 0, shards owned by existing groups, gid 0 never a group.
    fn validate(&self) -> Result<(), InvalidHistory> {
        let invalid = |why: String| Err(InvalidHistory(why));
        match self.configs.first() {
            None => return invalid("no configs".into()),
            Some(c0) if *c0 != ShardConfig::default() => {
                return invalid("config 0 is not empty".into())
            }
            Some(_) => {}
        }
        for (i, c) in self.configs.iter().enumerate() {
            if c.num != i as u64 {
                return invalid(format!("config at index {i} has number {}", c.num));
            }
            if c.groups.contains_key(&0) {
                return invalid(format!("config {i} has a group with gid 0"));
            }
            for (s, gid) in c.shards.iter().enumerate() {
                let ok = if c.groups.is_empty() {
                    *gid == 0
                } else {
                    c.groups.contains_key(gid)
                };
                if !ok {
                    return invalid(format!("config {i}: shard {s} is on gid {gid}"));
                }
            }
        }
        Ok(())
    }
}

/// The config a Join, Leave or Move turns `latest` into (the next number), or why it fails;
/// a Query changes nothing and gives `latest` back. What [`ConfigHistory::execute`] appends,
/// and what `rainkv-ctl shard ... --dry-run` shows without changing anything.
pub fn successor(latest: &ShardConfig, op: &CtrlerOp) -> Result<ShardConfig, CtrlerError> {
    let mut next = latest.clone();
    match op {
        CtrlerOp::Query { .. } => return Ok(next),
        CtrlerOp::Join { servers } => {
            if servers.contains_key(&0) {
                return Err(CtrlerError::ReservedGid);
            }
            for (gid, names) in servers {
                next.groups.insert(*gid, names.clone());
            }
            rebalance(&mut next.shards, &next.groups);
        }
        CtrlerOp::Leave { gids } => {
            for gid in gids {
                next.groups.remove(gid);
            }
            // The departed groups' shards are now orphans, which the rebalance hands out.
            rebalance(&mut next.shards, &next.groups);
        }
        CtrlerOp::Move { shard, gid } => {
            if *shard >= NSHARDS {
                return Err(CtrlerError::ShardOutOfRange { shard: *shard });
            }
            if !latest.groups.contains_key(gid) {
                return Err(CtrlerError::UnknownGid { gid: *gid });
            }
            next.shards[*shard] = *gid;
        }
    }
    next.num += 1;
    Ok(next)
}

/// Spreads the shards evenly over `groups` with as few moves as possible (see the module
/// docs for the rule). With no groups every shard goes back to gid 0.
pub(crate) fn rebalance(shards: &mut [Gid; NSHARDS], groups: &BTreeMap<Gid, Vec<String>>) {
    if groups.is_empty() {
        *shards = [0; NSHARDS];
        return;
    }

    // Each group's shards, in increasing order; shards of no group are orphans.
    let mut owned: BTreeMap<Gid, Vec<usize>> = groups.keys().map(|&g| (g, Vec::new())).collect();
    let mut spare = Vec::new();
    for (shard, gid) in shards.iter().enumerate() {
        match owned.get_mut(gid) {
            Some(list) => list.push(shard),
            None => spare.push(shard),
        }
    }

    // Rank by current load, most first, ties by smaller gid, and hand out targets in that
    // order so that the bigger targets go to the groups that already hold the most.
    let mut ranked: Vec<(Gid, usize)> = owned.iter().map(|(&g, l)| (g, l.len())).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let holders = ranked.len().min(NSHARDS);
    let (base, extra) = (NSHARDS / holders, NSHARDS % holders);
    let target: BTreeMap<Gid, usize> = ranked
        .iter()
        .enumerate()
        .map(|(rank, &(gid, _))| {
            let t = match rank {
                r if r >= holders => 0,
                r if r < extra => base + 1,
                _ => base,
            };
            (gid, t)
        })
        .collect();

    // Groups above target give up their highest-numbered shards.
    for (gid, list) in owned.iter_mut() {
        let keep = target[gid];
        if list.len() > keep {
            spare.extend(list.drain(keep..));
        }
    }
    spare.sort_unstable();

    // Groups below target, in gid order, take the spare shards in shard order. The targets
    // sum to NSHARDS, so the open slots are exactly as many as the spare shards.
    let open_slots = owned
        .iter()
        .flat_map(|(gid, list)| std::iter::repeat_n(*gid, target[gid].saturating_sub(list.len())));
    debug_assert_eq!(open_slots.clone().count(), spare.len());
    for (gid, shard) in open_slots.zip(spare) {
        shards[shard] = gid;
    }
}

/// Why a decoded [`ConfigHistory`] was refused: what is inconsistent in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InvalidHistory(pub String);

impl fmt::Display for InvalidHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "controller history is inconsistent: {}", self.0)
    }
}

impl std::error::Error for InvalidHistory {}

#[cfg(test)]
mod tests;
