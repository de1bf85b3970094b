//! Messages of the shard controller protocol (6.5840 Lab 5A): the [`ShardConfig`] it hands out,
//! the operations clients submit ([`CtrlerOp`]), what they get back ([`CtrlerReply`] or
//! [`CtrlerError`]), and the RPCs that carry them (`ShardCtrler.Join`, `.Leave`, `.Move`,
//! `.Query`, and `.Register`, which opens a clerk's session).
//!
//! These are plain data: the state machine that applies them lives in
//! `actors::ctrler::config_ops`. Every type round-trips through rmp-serde, which is how the
//! network deep-copies and counts messages. Join, Leave and Move carry the clerk's session
//! (client id from `Register`, sequence number) so a retry is applied at most once; Query is a
//! read and needs none.
//!
//! # Invalid input
//! The 6.5840 tests only submit valid operations. We still define what happens otherwise,
//! because a replicated state machine must answer every input the same way on every replica:
//! - `Join` of gid 0 fails with [`CtrlerError::ReservedGid`] (gid 0 means "unassigned").
//! - `Move` of a shard `>= NSHARDS` fails with [`CtrlerError::ShardOutOfRange`].
//! - `Move` to a gid that is not a group of the latest config (including gid 0) fails with
//!   [`CtrlerError::UnknownGid`].
//! - `Leave` of a gid that is not a group is not an error: that gid is ignored (the other gids
//!   of the same `Leave` still leave, and a new config is still created).
//! - `Query` of a number past the latest returns the latest config (as `None` does).
//!
//! A failed operation changes nothing and creates no config.

use std::collections::BTreeMap;
use std::fmt;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::messages::net::Rpc;
use crate::messages::rsm::{ClientId, Seq};

/// Number of shards the key space is split into (6.5840's `NShards`).
pub const NSHARDS: usize = 10;

/// A replica group id. Gid 0 is reserved: it marks a shard that no group owns.
pub type Gid = u64;

/// A config number: config 0 is the initial one, and each change creates the next.
pub type ConfigNum = u64;

/// One numbered configuration: which group owns each shard, and the servers of each group.
///
/// `ShardConfig::default()` is config 0: number 0, no groups, every shard on gid 0.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ShardConfig {
    /// Config number; each Join, Leave or Move creates number + 1.
    pub num: ConfigNum,
    /// Owner of each shard, indexed by shard (0 = unassigned).
    pub shards: [Gid; NSHARDS],
    /// Server names of each group, in the order the group was joined with.
    pub groups: BTreeMap<Gid, Vec<String>>,
}

impl ShardConfig {
    /// The shards owned by `gid`, in increasing order.
    pub fn shards_of(&self, gid: Gid) -> Vec<usize> {
        (0..NSHARDS).filter(|&s| self.shards[s] == gid).collect()
    }
}

/// An operation submitted to the shard controller (and written to its Raft log).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CtrlerOp {
    /// Add groups (or replace the server list of groups already present), then rebalance.
    Join {
        /// The new groups and their server names.
        servers: BTreeMap<Gid, Vec<String>>,
    },
    /// Remove groups and give their shards to the remaining groups, then rebalance.
    Leave {
        /// The groups that leave; gids that are not groups are ignored.
        gids: Vec<Gid>,
    },
    /// Assign one shard to one group, without rebalancing. A later Join or Leave may undo it.
    Move {
        /// The shard, `0..NSHARDS`.
        shard: usize,
        /// The group that gets it; must be a group of the latest config.
        gid: Gid,
    },
    /// Read a config.
    Query {
        /// The config number wanted; `None`, or a number past the latest, gives the latest.
        num: Option<ConfigNum>,
    },
}

/// A successful answer to a [`CtrlerOp`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CtrlerReply {
    /// A Join, Leave or Move was applied.
    Done,
    /// The config a Query asked for.
    Config(ShardConfig),
}

impl From<Option<ShardConfig>> for CtrlerReply {
    /// Turns the state machine's answer (`Some` only for a Query) into a reply.
    fn from(config: Option<ShardConfig>) -> Self {
        match config {
            Some(config) => CtrlerReply::Config(config),
            None => CtrlerReply::Done,
        }
    }
}

/// Why a controller operation failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CtrlerError {
    /// The server asked is not the leader (or lost leadership before the op committed); the
    /// clerk should try another server.
    WrongLeader,
    /// A Move named a shard outside `0..NSHARDS`.
    ShardOutOfRange {
        /// The shard asked for.
        shard: usize,
    },
    /// A Move named a gid that is not a group of the latest config.
    UnknownGid {
        /// The gid asked for.
        gid: Gid,
    },
    /// A Join tried to add gid 0, which is reserved for "unassigned".
    ReservedGid,
    /// The client side could not get an answer (its clerk stopped, or a reply of the wrong
    /// kind came back); says what happened.
    Unavailable(String),
    /// The change's session is gone (expired, or evicted by newer ones) while the clerk
    /// retried it: the change may or may not have been applied.
    SessionExpired,
}

impl fmt::Display for CtrlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtrlerError::WrongLeader => write!(f, "wrong leader"),
            CtrlerError::ShardOutOfRange { shard } => {
                write!(f, "shard {shard} out of range (there are {NSHARDS} shards)")
            }
            CtrlerError::UnknownGid { gid } => {
                write!(f, "gid {gid} is not a group of the latest config")
            }
            CtrlerError::ReservedGid => write!(f, "gid 0 is reserved and cannot join"),
            CtrlerError::Unavailable(why) => write!(f, "controller unavailable: {why}"),
            CtrlerError::SessionExpired => write!(
                f,
                "outcome unknown: the clerk's session expired while it retried the change"
            ),
        }
    }
}

impl std::error::Error for CtrlerError {}

/// The whole answer to a controller RPC.
pub type CtrlerResult = Result<CtrlerReply, CtrlerError>;

/// One controller operation for a controller clerk actor to carry out.
#[derive(Message, Debug, Clone)]
#[rtype(result = "CtrlerResult")]
pub struct CtrlerCall(pub CtrlerOp);

/// `ShardCtrler.Join`: add groups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct JoinArgs {
    /// The new groups and their server names.
    pub servers: BTreeMap<Gid, Vec<String>>,
    /// The calling clerk.
    pub client_id: ClientId,
    /// The clerk's request number.
    pub seq: Seq,
}

/// `ShardCtrler.Leave`: remove groups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LeaveArgs {
    /// The groups that leave.
    pub gids: Vec<Gid>,
    /// The calling clerk.
    pub client_id: ClientId,
    /// The clerk's request number.
    pub seq: Seq,
}

/// `ShardCtrler.Move`: assign one shard to one group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MoveArgs {
    /// The shard.
    pub shard: usize,
    /// The group that gets it.
    pub gid: Gid,
    /// The calling clerk.
    pub client_id: ClientId,
    /// The clerk's request number.
    pub seq: Seq,
}

/// `ShardCtrler.Query`: read a config.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QueryArgs {
    /// The config number wanted; `None`, or a number past the latest, gives the latest.
    pub num: Option<ConfigNum>,
}

impl Rpc for JoinArgs {
    const METHOD: &'static str = "ShardCtrler.Join";
    type Reply = CtrlerResult;
}

impl Rpc for LeaveArgs {
    const METHOD: &'static str = "ShardCtrler.Leave";
    type Reply = CtrlerResult;
}

impl Rpc for MoveArgs {
    const METHOD: &'static str = "ShardCtrler.Move";
    type Reply = CtrlerResult;
}

impl Rpc for QueryArgs {
    const METHOD: &'static str = "ShardCtrler.Query";
    type Reply = CtrlerResult;
}

/// `ShardCtrler.Register`: open a session, for changes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterArgs;

impl Rpc for RegisterArgs {
    const METHOD: &'static str = "ShardCtrler.Register";
    /// The new session's client id, or why none was opened.
    type Reply = Result<ClientId, CtrlerError>;
}

/// The shard a key belongs to: its first byte mod [`NSHARDS`], and shard 0 for the empty key
/// (as 6.5840's `key2shard`). Takes any bytes: a `&str`, a `Bytes`, a `&[u8]`.
pub fn key2shard(key: impl AsRef<[u8]>) -> usize {
    key.as_ref()
        .first()
        .map_or(0, |&b| usize::from(b) % NSHARDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(value: &T)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug,
    {
        let bytes = rmp_serde::to_vec(value).expect("encode");
        let back: T = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(&back, value);
    }

    fn sample_config() -> ShardConfig {
        ShardConfig {
            num: 7,
            shards: [1, 1, 2, 2, 3, 3, 1, 2, 3, 1],
            groups: BTreeMap::from([
                (1, vec!["x".to_string(), "y".to_string()]),
                (2, vec!["a".to_string()]),
                (3, vec![]),
            ]),
        }
    }

    #[test]
    fn every_message_round_trips_through_rmp_serde() {
        round_trip(&ShardConfig::default());
        round_trip(&sample_config());
        round_trip(&CtrlerOp::Join {
            servers: sample_config().groups,
        });
        round_trip(&CtrlerOp::Leave { gids: vec![1, 3] });
        round_trip(&CtrlerOp::Move { shard: 4, gid: 2 });
        round_trip(&CtrlerOp::Query { num: None });
        round_trip(&CtrlerOp::Query { num: Some(3) });
        round_trip(&CtrlerReply::Done);
        round_trip(&CtrlerReply::Config(sample_config()));
        for err in [
            CtrlerError::WrongLeader,
            CtrlerError::ShardOutOfRange { shard: 10 },
            CtrlerError::UnknownGid { gid: 9 },
            CtrlerError::ReservedGid,
            CtrlerError::Unavailable("gone".into()),
            CtrlerError::SessionExpired,
        ] {
            round_trip(&err);
        }
        round_trip::<CtrlerResult>(&Ok(CtrlerReply::Done));
        round_trip::<CtrlerResult>(&Err(CtrlerError::WrongLeader));
        round_trip(&JoinArgs {
            servers: sample_config().groups,
            client_id: 3,
            seq: 9,
        });
        round_trip(&LeaveArgs {
            gids: vec![1, 2],
            client_id: 3,
            seq: 10,
        });
        round_trip(&MoveArgs {
            shard: 2,
            gid: 1,
            client_id: 3,
            seq: 11,
        });
        round_trip(&QueryArgs { num: None });
        round_trip(&RegisterArgs);
        round_trip::<Result<ClientId, CtrlerError>>(&Ok(12));
        round_trip(&QueryArgs {
            num: Some(u64::MAX),
        });
    }

    #[test]
    fn config_zero_is_the_default() {
        let c = ShardConfig::default();
        assert_eq!(c.num, 0);
        assert_eq!(c.shards, [0; NSHARDS]);
        assert!(c.groups.is_empty());
    }

    #[test]
    fn key2shard_matches_6_5840() {
        // Keys "0".."9" cover shards 8, 9, 0, 1, ..., 7 (TESTS.md section 7).
        let shards: Vec<usize> = (0..10).map(|i| key2shard(i.to_string())).collect();
        assert_eq!(shards, vec![8, 9, 0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(key2shard(""), 0);
        assert!((10..20).all(|i| key2shard(i.to_string()) == 9));
        assert!((20..30).all(|i| key2shard(i.to_string()) == 0));
        // Only the first byte counts, and multi-byte characters use their first byte.
        assert_eq!(key2shard("1zzz"), 9);
        assert_eq!(key2shard("é"), 0xC3 % NSHARDS);
        assert_eq!(key2shard(b"\xff\0".as_slice()), 0xFF % NSHARDS);
    }

    #[test]
    fn shards_of_lists_owned_shards() {
        let c = sample_config();
        assert_eq!(c.shards_of(1), vec![0, 1, 6, 9]);
        assert_eq!(c.shards_of(4), Vec::<usize>::new());
    }

    #[test]
    fn reply_from_state_machine_answer() {
        assert_eq!(CtrlerReply::from(None), CtrlerReply::Done);
        assert_eq!(
            CtrlerReply::from(Some(sample_config())),
            CtrlerReply::Config(sample_config())
        );
    }
}
