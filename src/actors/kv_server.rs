//! The KV server: 6.5840's `KVServer`, a thin network face on the replicated state machine.
//!
//! [`KvStore`] is the state machine (a sorted map of strings); [`KvServer`] is the actor the
//! network delivers `KVServer.Get` and `KVServer.PutAppend` to. It turns each request into a
//! [`Submit`] with the clerk's session, so retries execute once, and maps the outcome back to
//! a [`KvReply`]. [`KvNode`] starts and stops one whole server (Raft peer, RSM, KV face).
//!
//! Handles: [`Dispatch`]. Sends: [`Submit`] to its [`Rsm`].

use std::collections::BTreeMap;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::actors::raft::{RaftPeer, RestoreError};
use crate::actors::rsm::{ReplicaSetup, Rsm, StateMachine};
use crate::messages::kv::*;
use crate::messages::lifecycle::Stop;
use crate::messages::net::{encode, Dispatch, Rpc, RpcError, Server};
use crate::messages::rsm::Submit;
use crate::storage::Persister;

/// The replicated key/value map.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KvStore {
    data: BTreeMap<String, String>,
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Output = Result<String, KvError>;

    fn apply(&mut self, command: KvCommand) -> Self::Output {
        match command {
            KvCommand::Get { key } => self.data.get(&key).cloned().ok_or(KvError::NoKey),
            KvCommand::Put { key, value } => {
                self.data.insert(key, value);
                Ok(String::new())
            }
            KvCommand::Append { key, value } => {
                self.data.entry(key).or_default().push_str(&value);
                Ok(String::new())
            }
        }
    }
}

impl KvStore {
    /// The value of `key`, if any (for inspection).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
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
        let request = match msg.method {
            GetArgs::METHOD => msg
                .decode::<GetArgs>()
                .map(|a| ((a.client_id, a.seq), a.command())),
            PutAppendArgs::METHOD => msg
                .decode::<PutAppendArgs>()
                .map(|a| ((a.client_id, a.seq), a.command())),
            other => Err(RpcError::UnknownMethod(other.to_string())),
        };
        let rsm = self.rsm.clone();
        Box::pin(async move {
            let (session, command) = request?;
            let submit = Submit::new(Some(session), command);
            let result = match rsm.send(submit).await {
                Ok(Ok(output)) => output,
                Ok(Err(_)) | Err(_) => Err(KvError::WrongLeader),
            };
            encode(&KvReply { result })
        })
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
