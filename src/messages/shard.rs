//! The sharded KV protocol: clerk ↔ group RPCs (`ShardKV.Get`, `ShardKV.PutAppend`, answered
//! with a [`ShardKvReply`]) and the group ↔ group migration RPCs (`ShardKV.PullShards`,
//! `ShardKV.DeleteShards`), with the shard contents ([`ShardData`]) they carry; and
//! `ShardKV.Status`, an operator's question: which config a member is at and where each shard
//! it holds stands ([`ShardStatus`]).
//!
//! A write carries the clerk's [`ClientId`] and [`Seq`]: a group keeps, per shard, the last
//! write number of each client, and that table travels with the shard, so a write retried
//! after its shard moved is still applied at most once. Reads need no number.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::messages::ctrler::{ConfigNum, Gid};
use crate::messages::kv::{KvCommand, WriteOp};
use crate::messages::net::Rpc;
use crate::messages::rsm::{ClientId, Seq};

/// `ShardKV.Get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardGetArgs {
    /// The key.
    pub key: Bytes,
}

/// `ShardKV.PutAppend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPutAppendArgs {
    /// The key.
    pub key: Bytes,
    /// The value to store or append.
    pub value: Bytes,
    /// Put or Append.
    pub op: WriteOp,
    /// The calling clerk.
    pub client_id: ClientId,
    /// The clerk's request number.
    pub seq: Seq,
}

/// Why a group member did not serve a client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardKvError {
    /// This server cannot serve the request now (not leader, lost leadership, shutting
    /// down): try another server of the group.
    WrongLeader,
    /// The key's shard is not served by this group at this point of its log (it is not the
    /// owner, or the shard's data has not arrived yet): ask the controller for a newer config.
    WrongGroup,
}

/// Reply to `ShardKV.Get` and `ShardKV.PutAppend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardKvReply {
    /// The value a Get read (`None` for a missing key), `None` for a Put or an Append; or why
    /// the request was not served.
    pub result: Result<Option<Bytes>, ShardKvError>,
}

impl Rpc for ShardGetArgs {
    const METHOD: &'static str = "ShardKV.Get";
    type Reply = ShardKvReply;
}

impl Rpc for ShardPutAppendArgs {
    const METHOD: &'static str = "ShardKV.PutAppend";
    type Reply = ShardKvReply;

    fn payload_len(&self) -> usize {
        self.key.len() + self.value.len()
    }
}

impl ShardPutAppendArgs {
    /// The command this request asks for.
    pub fn command(&self) -> KvCommand {
        self.op.command(self.key.clone(), self.value.clone())
    }
}

/// Everything a group holds for one shard: its keys and the duplicate table of its writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardData {
    /// The shard's keys and values.
    pub kv: BTreeMap<Bytes, Bytes>,
    /// Per client, the number of its last write applied to this shard.
    pub sessions: BTreeMap<ClientId, Seq>,
}

/// Why a migration RPC was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrationError {
    /// The group is not at the asked config (or holds no frozen copy of those shards there):
    /// ask again later.
    NotReady,
    /// This server cannot commit the request: ask another server of the group.
    WrongLeader,
}

/// `ShardKV.PullShards`: the new owner asks the old owner for shards it gave up at config
/// `num`. Any replica of the old owner that has reached config `num` can answer, because the
/// data of a shard handed off there is frozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullShardsArgs {
    /// The config at which the shards changed owner.
    pub num: ConfigNum,
    /// The shards wanted.
    pub shards: Vec<usize>,
}

/// Reply to [`PullShardsArgs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullShardsReply {
    /// Every requested shard's data, or why not.
    pub result: Result<BTreeMap<usize, ShardData>, MigrationError>,
}

impl Rpc for PullShardsArgs {
    const METHOD: &'static str = "ShardKV.PullShards";
    type Reply = PullShardsReply;
}

/// `ShardKV.DeleteShards`: the new owner has installed the shards it pulled at config `num`;
/// the old owner may delete its frozen copies. Answered once the deletion is in the old
/// owner's log (or was already done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteShardsArgs {
    /// The config at which the shards changed owner.
    pub num: ConfigNum,
    /// The shards to delete.
    pub shards: Vec<usize>,
}

/// Reply to [`DeleteShardsArgs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteShardsReply {
    /// `Ok` once the copies are gone.
    pub result: Result<(), MigrationError>,
}

impl Rpc for DeleteShardsArgs {
    const METHOD: &'static str = "ShardKV.DeleteShards";
    type Reply = DeleteShardsReply;
}

/// Where one shard stands in a group (the group's state machine moves it through these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardStatus {
    /// Owned and served.
    Serving,
    /// Owned; waiting for the data from the previous owner (pulling it).
    Waiting,
    /// Owned and served; the previous owner must still delete its copy.
    Confirming,
    /// Given up; kept unchanged for the new owner to pull, then deleted.
    Frozen,
}

impl ShardStatus {
    /// Whether the group answers clients' reads and writes of a shard in this status.
    pub fn serves_clients(self) -> bool {
        matches!(self, ShardStatus::Serving | ShardStatus::Confirming)
    }
}

impl std::fmt::Display for ShardStatus {
    /// What an operator reads: `serving`, `pulling`, `awaiting deletion` (served here, the
    /// old owner's copy not yet deleted) or `frozen` (given up, kept for the new owner).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShardStatus::Serving => "serving",
            ShardStatus::Waiting => "pulling",
            ShardStatus::Confirming => "awaiting deletion",
            ShardStatus::Frozen => "frozen",
        })
    }
}

/// `ShardKV.Status`: where this member's replica stands, from its applied state (no log
/// entry, no leadership needed; a follower's answer may lag its leader's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStatusArgs;

/// The answer to [`ShardStatusArgs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupShards {
    /// The group's id as its state knows it (0 before its first config).
    pub gid: Gid,
    /// The config it is at.
    pub num: ConfigNum,
    /// The shards it holds, by shard number; a shard it does not hold is absent.
    pub shards: BTreeMap<usize, ShardStatus>,
}

impl Rpc for ShardStatusArgs {
    const METHOD: &'static str = "ShardKV.Status";
    type Reply = Result<GroupShards, MigrationError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(value: &T)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let bytes = rmp_serde::to_vec(value).expect("encode");
        let back: T = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(&back, value);
    }

    #[test]
    fn every_message_round_trips_through_rmp_serde() {
        let data = ShardData {
            kv: BTreeMap::from([(Bytes::from("k"), Bytes::from_static(b"\0\xff"))]),
            sessions: BTreeMap::from([(7, 3)]),
        };
        round_trip(&ShardGetArgs { key: "k".into() });
        let put = ShardPutAppendArgs {
            key: "k".into(),
            value: "v".into(),
            op: WriteOp::Append,
            client_id: 7,
            seq: 4,
        };
        round_trip(&put);
        assert_eq!(
            put.command(),
            KvCommand::Append {
                key: "k".into(),
                value: "v".into()
            }
        );
        round_trip(&ShardKvReply {
            result: Err(ShardKvError::WrongGroup),
        });
        round_trip(&ShardKvReply {
            result: Err(ShardKvError::WrongLeader),
        });
        round_trip(&ShardKvReply {
            result: Ok(Some(Bytes::from_static(b"\xff"))),
        });
        round_trip(&ShardKvReply { result: Ok(None) });
        round_trip(&PullShardsArgs {
            num: 3,
            shards: vec![1, 2],
        });
        round_trip(&PullShardsReply {
            result: Ok(BTreeMap::from([
                (1, data.clone()),
                (2, ShardData::default()),
            ])),
        });
        round_trip(&PullShardsReply {
            result: Err(MigrationError::NotReady),
        });
        round_trip(&DeleteShardsArgs {
            num: 3,
            shards: vec![1],
        });
        round_trip(&DeleteShardsReply { result: Ok(()) });
        round_trip(&DeleteShardsReply {
            result: Err(MigrationError::WrongLeader),
        });
        round_trip(&ShardStatusArgs);
        round_trip(&GroupShards {
            gid: 100,
            num: 4,
            shards: BTreeMap::from([(0, ShardStatus::Waiting), (3, ShardStatus::Frozen)]),
        });
    }
}
