//! The key/value protocol: clerk ↔ KV server RPCs (6.5840's `KVServer.Get` and
//! `KVServer.PutAppend`, and `KVServer.Register`, which opens a clerk's session), the commands the KV state machine applies, and what a clerk actor
//! answers ([`ClerkOp`], [`ClerkError`]).
//!
//! Keys and values are bytes ([`Bytes`]): any byte string is a key or a value, and each travels
//! as one msgpack `bin`, about as long as the bytes themselves. Every write carries the
//! clerk's session ([`ClientId`], from `KVServer.Register`) and a per-session [`Seq`], so a
//! retried write is executed at most once. A Get needs no session: it writes nothing.

use std::fmt;

use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::messages::net::Rpc;
use crate::messages::rsm::{ClientId, Seq};

/// What a KV operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Read a key.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Replace a key's value.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Append to a key's value (a missing key counts as empty).
    Append {
        /// The key.
        key: Bytes,
        /// What to append.
        value: Bytes,
    },
}

impl KvCommand {
    /// The key the command touches.
    pub fn key(&self) -> &Bytes {
        match self {
            KvCommand::Get { key } | KvCommand::Put { key, .. } | KvCommand::Append { key, .. } => {
                key
            }
        }
    }
}

/// The two writes `PutAppend` RPCs carry (6.5840's `Op` string, "Put" or "Append").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Replace the key's value.
    Put,
    /// Append to the key's value.
    Append,
}

impl WriteOp {
    /// The command that writes `value` to `key` this way.
    pub fn command(self, key: Bytes, value: Bytes) -> KvCommand {
        match self {
            WriteOp::Put => KvCommand::Put { key, value },
            WriteOp::Append => KvCommand::Append { key, value },
        }
    }
}

/// Why a KV server did not serve a request (a missing key is an answer, `None`, and groups are
/// the sharded KV's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvError {
    /// This server cannot serve the request now (not leader, lost leadership, shutting
    /// down): try another.
    WrongLeader,
    /// The write's session is gone (expired, or evicted by newer ones): the write was not
    /// executed, and an earlier attempt of it may or may not have been.
    SessionExpired,
}

/// One operation for a clerk actor to carry out: answers the value of a Get (`None` for a
/// missing key), `None` for a Put or an Append.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Option<Bytes>, ClerkError>")]
pub struct ClerkOp(pub KvCommand);

/// Why a clerk could not carry out an operation. Our clerks retry until the service answers,
/// so there are two ways to fail: to have no clerk any more, or to lose the session while a
/// write's outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClerkError {
    /// The clerk actor stopped (or was stopped) before it answered: the operation may or may
    /// not have taken effect, and this clerk takes no more.
    Stopped,
    /// The clerk's session expired while it retried a write: the write may or may not have
    /// taken effect (an earlier attempt may have been applied before the session went). The
    /// clerk opens a new session for its next operation.
    SessionExpired,
}

impl fmt::Display for ClerkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClerkError::Stopped => write!(f, "the clerk has stopped and takes no more operations"),
            ClerkError::SessionExpired => write!(
                f,
                "outcome unknown: the clerk's session expired while it retried the write, which \
                 may or may not have taken effect"
            ),
        }
    }
}

impl std::error::Error for ClerkError {}

/// `KVServer.Get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetArgs {
    /// The key.
    pub key: Bytes,
}

/// `KVServer.PutAppend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutAppendArgs {
    /// The key.
    pub key: Bytes,
    /// The value to store or append.
    pub value: Bytes,
    /// Put or Append.
    pub op: WriteOp,
    /// The calling clerk's session.
    pub client_id: ClientId,
    /// The request's number in that session (the first is 1).
    pub seq: Seq,
}

/// `KVServer.Register`: open a session, for writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterArgs;

/// Reply to `KVServer.Register`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterReply {
    /// The new session's client id, or why none was opened.
    pub result: Result<ClientId, KvError>,
}

/// Reply to `KVServer.Get` and `KVServer.PutAppend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvReply {
    /// The value a Get read (`None` for a missing key), `None` for a Put or an Append; or why
    /// the request was not served.
    pub result: Result<Option<Bytes>, KvError>,
}

impl Rpc for GetArgs {
    const METHOD: &'static str = "KVServer.Get";
    type Reply = KvReply;
}

impl Rpc for PutAppendArgs {
    const METHOD: &'static str = "KVServer.PutAppend";
    type Reply = KvReply;

    fn payload_len(&self) -> usize {
        self.key.len() + self.value.len()
    }
}

impl Rpc for RegisterArgs {
    const METHOD: &'static str = "KVServer.Register";
    type Reply = RegisterReply;
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
        self.op.command(self.key.clone(), self.value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(value: &T) -> usize
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug,
    {
        let bytes = rmp_serde::to_vec(value).expect("encode");
        let back: T = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(&back, value);
        bytes.len()
    }

    #[test]
    fn keys_and_values_are_encoded_as_msgpack_bin_not_arrays() {
        // As an array of integers, bytes of 0x80 and above take two bytes each.
        let value = Bytes::from(vec![0xff; 128]);
        assert_eq!(
            round_trip(&value),
            130,
            "bin 8: a marker, a length, the bytes"
        );
        // In a request, a 16-byte key and a 128-byte value cost exactly their own bytes over
        // an empty key and value (whose bin 8 headers are already counted).
        let put = |key: Bytes, value: Bytes| PutAppendArgs {
            key,
            value,
            op: WriteOp::Put,
            client_id: u64::MAX,
            seq: u64::MAX,
        };
        let key = Bytes::from(vec![0xee; 16]);
        let full = round_trip(&put(key.clone(), value.clone()));
        let empty = round_trip(&put(Bytes::new(), Bytes::new()));
        assert_eq!(full - empty, 16 + 128, "PutAppendArgs: {full} bytes");
        let command = |key, value| KvCommand::Put { key, value };
        let full = round_trip(&command(key, value));
        let empty = round_trip(&command(Bytes::new(), Bytes::new()));
        assert_eq!(full - empty, 16 + 128, "KvCommand: {full} bytes");
    }

    #[test]
    fn a_put_append_request_asks_for_its_op() {
        let args = |op| PutAppendArgs {
            key: "k".into(),
            value: "v".into(),
            op,
            client_id: 1,
            seq: 2,
        };
        let (key, value) = (Bytes::from("k"), Bytes::from("v"));
        let (put, append) = (args(WriteOp::Put), args(WriteOp::Append));
        round_trip(&put);
        round_trip(&append);
        let want = KvCommand::Put {
            key: key.clone(),
            value: value.clone(),
        };
        assert_eq!(put.command(), want);
        assert_eq!(append.command(), KvCommand::Append { key, value });
    }

    #[test]
    fn any_bytes_round_trip() {
        let odd = Bytes::from_static(b"\0\xff\xfe not utf-8 \x80");
        round_trip(&GetArgs { key: odd.clone() });
        round_trip(&RegisterArgs);
        round_trip(&RegisterReply { result: Ok(7) });
        round_trip(&RegisterReply {
            result: Err(KvError::SessionExpired),
        });
        round_trip(&KvCommand::Append {
            key: Bytes::new(),
            value: odd.clone(),
        });
        round_trip(&KvReply {
            result: Ok(Some(odd)),
        });
        round_trip(&KvReply { result: Ok(None) });
        round_trip(&KvReply {
            result: Err(KvError::WrongLeader),
        });
    }

    #[test]
    fn clerk_error_says_what_happened() {
        let e: Box<dyn std::error::Error> = Box::new(ClerkError::Stopped);
        assert!(e.to_string().contains("stopped"), "{e}");
        let e = ClerkError::SessionExpired.to_string();
        assert!(e.starts_with("outcome unknown"), "{e}");
    }
}
