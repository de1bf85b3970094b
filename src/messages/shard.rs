//! The sharded KV protocol: clerk ↔ group RPCs (`ShardKV.Get`, `ShardKV.PutAppend`, answered
//! with a [`ShardKvReply`]) and the group ↔ group migration RPCs (`ShardKV.PullShards`,
//! `ShardKV.DeleteShards`), with the shard contents ([`ShardData`]) they carry.
//!
//! A write carries the clerk's [`ClientId`] and [`Seq`]: a group keeps, per shard, the last
//! write number of each client, and that table travels with the shard, so a write retried
//! after its shard moved is still applied at most once. Reads need no number.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::messages::ctrler::ConfigNum;
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
    }
}
