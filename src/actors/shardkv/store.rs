//! The state machine of one sharded KV group: the shards it holds, each with its own status,
//! keys and duplicate table, and the config it is at. Pure code: the replicated state machine
//! layer applies each committed [`ShardCommand`] in log order on every replica of the group.
//!
//! # Shard statuses
//! - [`ShardStatus::Serving`]: owned under the current config, data here: clients are served.
//! - [`ShardStatus::Waiting`]: owned under the current config, but the data is still with the
//!   previous owner; requests get `WrongGroup` until an [`ShardCommand::Install`] brings it.
//! - [`ShardStatus::Confirming`]: owned and served; the previous owner still keeps a frozen
//!   copy and must be told to delete it ([`ShardCommand::Confirmed`] ends this).
//! - [`ShardStatus::Frozen`]: given up under the current config; the data is kept unchanged for
//!   the new owner to pull, then deleted ([`ShardCommand::Delete`]).
//!
//! A shard the group neither owns nor keeps is absent. Shards a reconfiguration does not touch
//! stay `Serving` throughout it, and a shard serves as soon as its own data is installed.
//!
//! # Reconfiguration
//! [`ShardCommand::Configure`] moves to config `num + 1` only when every shard held is
//! `Serving`: configs are taken one at a time, in order, and a group never leaves config `n`
//! before the shards it gave up there were fetched and deleted, or before the previous owners
//! of the shards it gained deleted their copies. So a frozen copy is exactly the data as of
//! config `n`, and a pull for config `n` can be answered by any replica at config `n`.
//! A shard handed to gid 0 (no group left) is dropped at once; one gained from gid 0 starts
//! empty.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::actors::kv_server::apply_to_map;
use crate::actors::rsm::StateMachine;
use crate::messages::ctrler::{key2shard, ConfigNum, Gid, ShardConfig, NSHARDS};
use crate::messages::kv::KvCommand;
use crate::messages::rsm::Session;
pub use crate::messages::shard::ShardStatus;
use crate::messages::shard::{GroupShards, MigrationError, ShardData};

/// One shard held by the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Its status.
    pub status: ShardStatus,
    /// Its keys and duplicate table.
    pub data: ShardData,
}

/// What the group's log carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardCommand {
    /// A clerk's Get, Put or Append; writes carry the clerk's session.
    Client {
        /// The operation.
        command: KvCommand,
        /// `(client, seq)` of a write, for at-most-once execution; `None` for a Get.
        session: Option<Session>,
    },
    /// Move to `config`, which must be the next one.
    Configure {
        /// This group's id.
        gid: Gid,
        /// The next config.
        config: ShardConfig,
    },
    /// Data of shards pulled from their previous owners at config `num`.
    Install {
        /// The config the shards were gained at.
        num: ConfigNum,
        /// The shards' data.
        shards: BTreeMap<usize, ShardData>,
    },
    /// The new owners installed these shards, given up at config `num`: delete the copies.
    Delete {
        /// The config the shards were given up at.
        num: ConfigNum,
        /// The shards.
        shards: Vec<usize>,
    },
    /// The previous owners deleted their copies of these shards, gained at config `num`.
    Confirmed {
        /// The config the shards were gained at.
        num: ConfigNum,
        /// The shards.
        shards: Vec<usize>,
    },
}

/// What applying a [`ShardCommand`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardOutput {
    /// A client operation was applied: the value a Get read (`None` for a missing key),
    /// `None` for a write (or a write already applied).
    Kv(Option<Bytes>),
    /// A client operation for a shard the group does not serve now: not applied.
    WrongGroup,
    /// A reconfiguration command was applied (or found already done or stale).
    Done,
    /// A `Delete` for a config this group has not reached yet.
    NotReady,
}

/// Shards to move between this group and one other group, at one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transfer {
    /// The other group.
    pub gid: Gid,
    /// Its servers, as of the config before the change.
    pub servers: Vec<String>,
    /// The shards.
    pub shards: Vec<usize>,
}

/// The migration work a group has at its current config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Work {
    /// The current config number.
    pub num: ConfigNum,
    /// Every held shard is `Serving`: the group may move to the next config.
    pub settled: bool,
    /// Shards to pull, by previous owner.
    pub pull: Vec<Transfer>,
    /// Shards whose previous owner must be told to delete its copy.
    pub confirm: Vec<Transfer>,
}

/// The replicated state of one sharded KV group.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShardStore {
    /// This group's id (0 until the first config is applied).
    gid: Gid,
    /// The current config.
    config: ShardConfig,
    /// The config before it: where gained shards come from.
    prev: ShardConfig,
    /// The shards held, by shard number.
    shards: BTreeMap<usize, Shard>,
}

impl StateMachine for ShardStore {
    type Command = ShardCommand;
    type Output = ShardOutput;

    fn apply(&mut self, command: ShardCommand) -> ShardOutput {
        match command {
            ShardCommand::Client { command, session } => self.client(command, session),
            ShardCommand::Configure { gid, config } => {
                self.configure(gid, config);
                ShardOutput::Done
            }
            ShardCommand::Install { num, shards } => {
                self.install(num, shards);
                ShardOutput::Done
            }
            ShardCommand::Delete { num, shards } => self.delete(num, &shards),
            ShardCommand::Confirmed { num, shards } => {
                self.confirmed(num, &shards);
                ShardOutput::Done
            }
        }
    }

    /// Marks the group's moves between configurations: a new config, shards installed or
    /// deleted.
    fn trace_note(&self, command: &ShardCommand, output: &ShardOutput) -> Option<String> {
        let list = |shards: &mut dyn Iterator<Item = &usize>| {
            shards.map(usize::to_string).collect::<Vec<_>>().join(",")
        };
        match (command, output) {
            (ShardCommand::Configure { config, .. }, ShardOutput::Done) => {
                Some(format!("config {}", config.num))
            }
            (ShardCommand::Install { num, shards }, ShardOutput::Done) => Some(format!(
                "installed shards {} (config {num})",
                list(&mut shards.keys())
            )),
            (ShardCommand::Delete { num, shards }, ShardOutput::Done) => Some(format!(
                "deleted shards {} (config {num})",
                list(&mut shards.iter())
            )),
            _ => None,
        }
    }
}

impl ShardStore {
    /// The current config.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The shards held, with their statuses and data.
    pub fn shards(&self) -> &BTreeMap<usize, Shard> {
        &self.shards
    }

    /// Reads `key` without changing anything: the value (`None` for a missing key), or
    /// `WrongGroup` when this group does not serve the key's shard now.
    pub fn read(&self, key: &[u8]) -> ShardOutput {
        match self.shards.get(&key2shard(key)) {
            Some(shard) if shard.status.serves_clients() => {
                ShardOutput::Kv(shard.data.kv.get(key).cloned())
            }
            _ => ShardOutput::WrongGroup,
        }
    }

    fn client(&mut self, command: KvCommand, session: Option<Session>) -> ShardOutput {
        let data = match self.shards.get_mut(&key2shard(command.key())) {
            Some(shard) if shard.status.serves_clients() => &mut shard.data,
            _ => return ShardOutput::WrongGroup,
        };
        if let Some((client, seq)) = session {
            if data.sessions.get(&client).is_some_and(|&last| last >= seq) {
                return ShardOutput::Kv(None);
            }
            data.sessions.insert(client, seq);
        }
        ShardOutput::Kv(apply_to_map(&mut data.kv, command))
    }

    fn settled(&self) -> bool {
        self.shards
            .values()
            .all(|s| s.status == ShardStatus::Serving)
    }

    fn configure(&mut self, gid: Gid, next: ShardConfig) {
        if next.num != self.config.num + 1 || !self.settled() {
            return;
        }
        if self.gid != 0 && self.gid != gid {
            log::error!(
                "group {} was asked to configure as {gid}; ignored",
                self.gid
            );
            return;
        }
        for s in 0..NSHARDS {
            let (before, after) = (self.config.shards[s], next.shards[s]);
            if before != gid && after == gid {
                let status = if before == 0 {
                    ShardStatus::Serving
                } else {
                    ShardStatus::Waiting
                };
                let data = ShardData::default();
                self.shards.insert(s, Shard { status, data });
            } else if before == gid && after != gid {
                if after == 0 {
                    self.shards.remove(&s);
                } else if let Some(shard) = self.shards.get_mut(&s) {
                    shard.status = ShardStatus::Frozen;
                }
            }
        }
        self.gid = gid;
        self.prev = std::mem::replace(&mut self.config, next);
    }

    fn install(&mut self, num: ConfigNum, shards: BTreeMap<usize, ShardData>) {
        if num != self.config.num {
            return;
        }
        for (s, data) in shards {
            if let Some(shard) = self.shards.get_mut(&s) {
                if shard.status == ShardStatus::Waiting {
                    *shard = Shard {
                        status: ShardStatus::Confirming,
                        data,
                    };
                }
            }
        }
    }

    fn delete(&mut self, num: ConfigNum, shards: &[usize]) -> ShardOutput {
        if num > self.config.num {
            return ShardOutput::NotReady;
        }
        if num == self.config.num {
            for s in shards {
                if self
                    .shards
                    .get(s)
                    .is_some_and(|shard| shard.status == ShardStatus::Frozen)
                {
                    self.shards.remove(s);
                }
            }
        }
        // Below `num`, the copies were deleted before this group could leave config `num`.
        ShardOutput::Done
    }

    fn confirmed(&mut self, num: ConfigNum, shards: &[usize]) {
        if num != self.config.num {
            return;
        }
        for s in shards {
            if let Some(shard) = self.shards.get_mut(s) {
                if shard.status == ShardStatus::Confirming {
                    shard.status = ShardStatus::Serving;
                }
            }
        }
    }

    /// The frozen data of `shards` as of config `num`, for their new owner.
    pub(crate) fn frozen(
        &self,
        num: ConfigNum,
        shards: &[usize],
    ) -> Result<BTreeMap<usize, ShardData>, MigrationError> {
        if num != self.config.num {
            return Err(MigrationError::NotReady);
        }
        shards
            .iter()
            .map(|s| match self.shards.get(s) {
                Some(shard) if shard.status == ShardStatus::Frozen => Ok((*s, shard.data.clone())),
                _ => Err(MigrationError::NotReady),
            })
            .collect()
    }

    /// The shards in `status`, grouped by their owner in the previous config.
    fn transfers(&self, status: ShardStatus) -> Vec<Transfer> {
        let mut by_gid: BTreeMap<Gid, Vec<usize>> = BTreeMap::new();
        for (s, shard) in &self.shards {
            if shard.status == status {
                let owner = self.prev.shards.get(*s).copied().unwrap_or(0);
                by_gid.entry(owner).or_default().push(*s);
            }
        }
        by_gid
            .into_iter()
            .map(|(gid, shards)| Transfer {
                gid,
                servers: self.prev.groups.get(&gid).cloned().unwrap_or_default(),
                shards,
            })
            .collect()
    }

    /// Where the group stands: its config and each held shard's status.
    pub fn report(&self) -> GroupShards {
        GroupShards {
            gid: self.gid,
            num: self.config.num,
            shards: self
                .shards
                .iter()
                .map(|(s, shard)| (*s, shard.status))
                .collect(),
        }
    }

    /// The migration work at the current config.
    pub(crate) fn work(&self) -> Work {
        Work {
            num: self.config.num,
            settled: self.settled(),
            pull: self.transfers(ShardStatus::Waiting),
            confirm: self.transfers(ShardStatus::Confirming),
        }
    }
}

#[cfg(test)]
mod tests;
