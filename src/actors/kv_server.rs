//! The KV server: 6.5840's `KVServer`, a thin network face on the replicated state machine.
//!
//! [`KvStore`] is the state machine (a sorted map of byte strings, changed by
//! `apply_to_map`, which the sharded KV's shards use too); [`KvServer`] is the actor the
//! network delivers `KVServer.Get`, `KVServer.PutAppend` and `KVServer.Register` to. A clerk
//! registers a session ([`RegisterSession`]) before its first write; a write becomes a
//! [`Submit`] with that session, so retries execute once; a read becomes a [`LinearizableRead`],
//! which writes no log entry (the leader confirms its leadership with one heartbeat round,
//! shared by every read that arrived meanwhile). The outcome goes back as a [`KvReply`].
//! [`KvNode`] starts and stops one whole server (Raft peer, RSM, KV face).
//!
//! Handles: [`Dispatch`]. Sends: [`Submit`], [`RegisterSession`] and [`LinearizableRead`] to
//! its [`Rsm`].

use std::collections::BTreeMap;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::actors::raft::{RaftPeer, RestoreError};
use crate::actors::rsm::{ReplicaSetup, Rsm, StateMachine};
use crate::messages::kv::*;
use crate::messages::lifecycle::Stop;
use crate::messages::net::{encode, Dispatch, Rpc, RpcError, Server};
use crate::messages::rsm::{LinearizableRead, RegisterSession, Submit, SubmitError};
use crate::storage::Persister;

/// The replicated key/value map.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KvStore {
    data: BTreeMap<Bytes, Bytes>,
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    /// The value a Get read (`None` for a missing key); `None` for a write.
    type Output = Option<Bytes>;

    fn apply(&mut self, command: KvCommand) -> Option<Bytes> {
        apply_to_map(&mut self.data, command)
    }
}

impl KvStore {
    /// The value of `key`, if any (for inspection).
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.data.get(key)
    }
}

/// Applies a Get, Put or Append to a map of keys to values: the value a Get reads (`None` for
/// a missing key), `None` for a write.
pub fn apply_to_map(map: &mut BTreeMap<Bytes, Bytes>, command: KvCommand) -> Option<Bytes> {
    match command {
        KvCommand::Get { key } => map.get(&key).cloned(),
        KvCommand::Put { key, value } => {
            map.insert(key, value);
            None
        }
        KvCommand::Append { key, value } => {
            let old = map.entry(key).or_default();
            // Grow the value in place when nothing else holds it (no reply or snapshot in
            // flight), so a run of appends does not copy the whole value each time.
            let mut joined = std::mem::take(old)
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            joined.extend_from_slice(&value);
            *old = joined.freeze();
            None
        }
    }
}

/// The network-facing KV service of one server.
pub struct KvServer {
    rsm: Addr<Rsm<KvStore>>,
}

impl Actor for KvServer {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for KvServer {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        let rsm = self.rsm.clone();
        Box::pin(async move {
            if msg.method == RegisterArgs::METHOD {
                msg.decode::<RegisterArgs>()?;
                let result = match rsm.send(RegisterSession).await {
                    Ok(Ok(client)) => Ok(client),
                    Ok(Err(e)) => Err(kv_error(e)),
                    Err(_) => Err(KvError::WrongLeader),
                };
                return encode(&RegisterReply { result });
            }
            let answer = match msg.method {
                // A read changes nothing: no log entry, no session (ReadIndex).
                GetArgs::METHOD => {
                    let key = msg.decode::<GetArgs>()?.key;
                    let read = LinearizableRead::new(move |kv: &KvStore, _| kv.get(&key).cloned());
                    rsm.send(read).await
                }
                PutAppendArgs::METHOD => {
                    let args = msg.decode::<PutAppendArgs>()?;
                    let submit = Submit::new(Some((args.client_id, args.seq)), args.command());
                    rsm.send(submit).await
                }
                other => return Err(RpcError::UnknownMethod(other.to_string())),
            };
            let result = match answer {
                Ok(Ok(output)) => Ok(output),
                Ok(Err(e)) => Err(kv_error(e)),
                Err(_) => Err(KvError::WrongLeader),
            };
            encode(&KvReply { result })
        })
    }
}

/// What a clerk hears when the replica could not serve its request.
fn kv_error(e: SubmitError) -> KvError {
    match e {
        SubmitError::SessionExpired => KvError::SessionExpired,
        SubmitError::WrongLeader | SubmitError::Halted => KvError::WrongLeader,
    }
}

/// One running KV server: its Raft peer, replicated state machine and network face.
#[derive(Clone)]
pub struct KvNode {
    /// The Raft peer.
    pub raft: Addr<RaftPeer>,
    /// The replicated state machine.
    pub rsm: Addr<Rsm<KvStore>>,
    /// The KV service.
    pub kv: Addr<KvServer>,
}

impl KvNode {
    /// 6.5840's `StartKVServer`: one KV server, restoring what its storage holds. Fails on a
    /// corrupt stored state.
    pub fn start<P: Persister + Clone + Send + 'static>(
        setup: ReplicaSetup<P>,
    ) -> Result<KvNode, RestoreError> {
        let (rsm, raft) = Rsm::<KvStore>::start(setup)?;
        let kv = KvServer { rsm: rsm.clone() }.start();
        Ok(KvNode { raft, rsm, kv })
    }

    /// The services to register on the network: "KVServer" and "Raft".
    pub fn server(&self) -> Server {
        Server::new()
            .with_service("KVServer", self.kv.clone().recipient())
            .with_service("Raft", self.raft.clone().recipient())
    }

    /// Stops the whole server (a crash: nothing more is sent, pending requests fail).
    pub fn kill(&self) {
        self.rsm.do_send(Stop);
    }
}
