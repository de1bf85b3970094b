//! The key/value protocol: clerk ↔ KV server RPCs (6.5840's `KVServer.Get` and
//! `KVServer.PutAppend`), and the commands the KV state machine applies.
//!
//! Every request carries the clerk's [`ClientId`] and a per-clerk [`Seq`], so a retried request
//! is executed at most once.

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::messages::net::Rpc;
use crate::messages::rsm::{ClientId, Seq};

/// What a KV operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Read a key ("" if missing).
    Get {
        /// The key.
        key: String,
    },
    /// Replace a key's value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Append to a key's value (a missing key counts as "").
    Append {
        /// The key.
        key: String,
        /// What to append.
        value: String,
    },
}

impl KvCommand {
    /// The key the command touches.
    pub fn key(&self) -> &str {
        match self {
            KvCommand::Get { key } | KvCommand::Put { key, .. } | KvCommand::Append { key, .. } => {
                key
            }
        }
    }
}

/// Outcome of a KV RPC (6.5840's `Err` strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvError {
    /// Get of a key that does not exist (the value is "").
    NoKey,
    /// This server cannot serve the request now (not leader, lost leadership, shutting
    /// down): try another.
    WrongLeader,
    /// The key's shard is not served by this group under its current configuration.
    WrongGroup,
}

/// One operation for a clerk actor to carry out; answers the value (for Get) or "".
#[derive(Message, Debug, Clone)]
#[rtype(result = "String")]
pub struct ClerkOp(pub KvCommand);

/// `KVServer.Get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetArgs {
    /// The key.
    pub key: String,
    /// The calling clerk.
    pub client_id: ClientId,
    /// The clerk's request number.
    pub seq: Seq,
}

/// `KVServer.PutAppend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutAppendArgs {
    /// The key.
    pub key: String,
    /// The value to store or append.
    pub value: String,
    /// `true` for Append, `false` for Put.
    pub append: bool,
    /// The calling clerk.
    pub client_id: ClientId,
    /// The clerk's request number.
    pub seq: Seq,
}

/// Reply to both KV RPCs: the value for a successful Get, "" otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvReply {
    /// `Ok(value)` or why the request was not served.
    pub result: Result<String, KvError>,
}

impl Rpc for GetArgs {
    const METHOD: &'static str = "KVServer.Get";
    type Reply = KvReply;
}

impl Rpc for PutAppendArgs {
    const METHOD: &'static str = "KVServer.PutAppend";
    type Reply = KvReply;
}

impl GetArgs {
    /// The command this request asks for.
    pub fn command(&self) -> KvCommand {
        KvCommand::Get {
            key: self.key.clone(),
        }
    }
}

impl PutAppendArgs {
    /// The command this request asks for.
    pub fn command(&self) -> KvCommand {
        let (key, value) = (self.key.clone(), self.value.clone());
        if self.append {
            KvCommand::Append { key, value }
        } else {
            KvCommand::Put { key, value }
        }
    }
}
