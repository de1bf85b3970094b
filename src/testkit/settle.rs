//! Liveness of shard migration: when a sharded cluster has settled under its latest config,
//! and how long after the last change that may take.
//!
//! A cluster is *settled* when every group's applied state (as its most advanced running
//! replica applied it) is at the controller's latest config and holds exactly the shards that
//! config gives the group, all [`ShardStatus::Serving`]: every shard serves at its owner, and
//! no copy waits for its data, for its deletion, or for the deletion to be confirmed.
//! The sharded KV harness marks every change that can hold migration up (a Join or Leave
//! answered, a group server crashed or started), watches for the settled state after it, and
//! checks the time it took against [`SettleBound`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::cluster::ClusterOptions;
use crate::actors::network::{FAIL_DELAY_MS, LONG_DELAY_MS};
use crate::actors::shardkv::store::ShardStatus;
use crate::actors::shardkv::POLL_INTERVAL;
use crate::messages::ctrler::{ConfigNum, Gid, ShardConfig};

/// What one group has applied, as its most advanced running replica applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// The group.
    pub gid: Gid,
    /// The replica's last applied log index.
    pub applied: u64,
    /// The config the group is at.
    pub num: ConfigNum,
    /// The shards it holds, with their statuses.
    pub shards: BTreeMap<usize, ShardStatus>,
}

impl GroupView {
    /// The status of `shard` here, if the group holds it.
    pub fn status(&self, shard: usize) -> Option<ShardStatus> {
        self.shards.get(&shard).copied()
    }
}

/// What keeps the groups in `views` from being settled under `config`, one line per group
/// (empty: settled).
pub fn unsettled(config: &ShardConfig, views: &[GroupView]) -> Vec<String> {
    let mut lines = Vec::new();
    for (s, gid) in config.shards.iter().enumerate() {
        if *gid != 0 && !views.iter().any(|v| v.gid == *gid) {
            lines.push(format!(
                "shard {s} belongs to group {gid}, which is not looked at"
            ));
        }
    }
    for view in views {
        let owned: BTreeMap<usize, ShardStatus> = config
            .shards_of(view.gid)
            .into_iter()
            .map(|s| (s, ShardStatus::Serving))
            .collect();
        if view.num != config.num || view.shards != owned {
            lines.push(format!(
                "group {} at config {} holds {:?}; config {} gives it {:?}",
                view.gid,
                view.num,
                view.shards,
                config.num,
                owned.keys().collect::<Vec<_>>()
            ));
        }
    }
    lines
}

/// How long a sharded cluster may take to settle after its last change, once every group
/// (and the controller) has a connected majority: `recover + (behind + 1) × per_config`,
/// where `behind` is how many configs the slowest group still had to take at the change.
///
/// - `recover` = 3 × the longest election timeout + the failure delay of an undeliverable
///   call. A crashed leader is noticed within one election timeout of its last heartbeat, and
///   pre-vote plus vote take two round trips. Two survivors that heard the same last heartbeat
///   draw their timeouts from the same 30 ticks (300–600 ms in 10 ms ticks), so they tie and
///   split the vote with probability 1/30, each split costing one more timeout; two splits in
///   a row are allowed for (seen in the sweep), a third has odds of 1 in 27 000 per election.
///   The new leader's migrator starts at once (it follows its peer's role), and a call still
///   in flight to a crashed server fails within the network's failure delay (100 ms; 7 s with
///   long delays), after which the caller tries the next server.
/// - `per_config` = the migrator's poll interval + 4 heartbeats + the failure delay. A group
///   at the lowest config can always finish it (its partners are at that config or, for
///   pulls, answer from their frozen copies), and taking one config is: wait for the next
///   poll, ask the controller, then four commits (Configure, Install, the old owner's
///   Delete, Confirmed) with their RPCs between groups, each a few milliseconds on a
///   healthy net and at most one heartbeat late when an AppendEntries or its reply is lost,
///   plus one call to a server that is down.
///
/// With the default Raft timing (elections after 300–600 ms, heartbeats every 100 ms) that is
/// 1.9 s + (behind + 1) × 0.6 s: 3 election timeouts plus 100 ms, and 1 per config to take.
/// Measured over 1 100 seeds of `tests/shardkv_liveness.rs` (a leader crashed in each step) and
/// 200 of `tests/shardkv.rs`: at most 1.54 s (a crash followed by two split votes) and
/// 1.27 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleBound {
    /// Until every group leads again and its migrator works.
    pub recover: Duration,
    /// For the slowest group to take one config and finish its transfers there.
    pub per_config: Duration,
}

impl SettleBound {
    /// The bound for groups built with `options`.
    pub fn for_groups(options: &ClusterOptions) -> SettleBound {
        let fail_delay = Duration::from_millis(match options.long_delays {
            true => LONG_DELAY_MS,
            false => FAIL_DELAY_MS,
        });
        let election = options.raft.election_timeout.end;
        SettleBound {
            recover: 3 * election + fail_delay,
            per_config: POLL_INTERVAL + 4 * options.raft.heartbeat_interval + fail_delay,
        }
    }

    /// The time allowed when the slowest group had `behind` configs still to take.
    pub fn within(&self, behind: ConfigNum) -> Duration {
        let steps = u32::try_from(behind.saturating_add(1)).unwrap_or(u32::MAX);
        self.recover + self.per_config.saturating_mul(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::ctrler::NSHARDS;

    fn view(gid: Gid, num: ConfigNum, shards: &[(usize, ShardStatus)]) -> GroupView {
        GroupView {
            gid,
            applied: 0,
            num,
            shards: shards.iter().copied().collect(),
        }
    }

    fn config(num: ConfigNum, owner: impl Fn(usize) -> Gid) -> ShardConfig {
        let mut config = ShardConfig {
            num,
            ..ShardConfig::default()
        };
        for s in 0..NSHARDS {
            config.shards[s] = owner(s);
        }
        config
    }

    #[test]
    fn settled_only_when_every_owner_serves_and_no_copy_is_left() {
        use ShardStatus::*;
        let c = config(2, |s| if s < 5 { 100 } else { 101 });
        let serving = |range: std::ops::Range<usize>| -> Vec<(usize, ShardStatus)> {
            range.map(|s| (s, Serving)).collect()
        };
        let a = view(100, 2, &serving(0..5));
        let b = view(101, 2, &serving(5..10));
        assert!(unsettled(&c, &[a.clone(), b.clone()]).is_empty());

        let behind = view(101, 1, &serving(5..10));
        assert_eq!(unsettled(&c, &[a.clone(), behind]).len(), 1);
        let mut confirming = b.clone();
        confirming.shards.insert(5, Confirming);
        assert_eq!(unsettled(&c, &[a.clone(), confirming]).len(), 1);
        let mut old_copy = a.clone();
        old_copy.shards.insert(7, Frozen);
        assert_eq!(unsettled(&c, &[old_copy, b.clone()]).len(), 1);
        let empty = view(102, 2, &[]);
        assert!(
            unsettled(&c, &[a.clone(), empty]).len() == 5,
            "101's shards are unseen"
        );
        assert!(unsettled(&c, &[a, b, view(102, 2, &[])]).is_empty());
    }

    #[test]
    fn default_bound_is_three_election_timeouts_and_one_per_config() {
        let bound = SettleBound::for_groups(&ClusterOptions::default());
        assert_eq!(bound.recover, Duration::from_millis(1900));
        assert_eq!(bound.per_config, Duration::from_millis(600));
        assert_eq!(bound.within(2), Duration::from_millis(1900 + 3 * 600));
    }
}
