//! Sharded KV (6.5840's `ShardKV`): replica groups, each a Raft group serving the shards the
//! controller assigns it, moving shards between groups as the configs change.
//!
//! One group member is a Raft peer, an [`Rsm`] over the group's [`ShardStore`] (in [`store`]:
//! per-shard status, keys and duplicate table, and the current config), the [`ShardKv`] network
//! face below, and a [`Migrator`] that follows the controller and moves shards
//! (`actors/migrator.rs` describes the migration protocol). [`ShardKvNode`] starts and kills
//! them together; [`clerk`] is the client.
//!
//! Client operations go through the log *without* an RSM session: the store keeps one
//! duplicate table per shard, which travels with the shard, so at-most-once holds across
//! moves. A request for a shard the group does not serve at that point of the log gets
//! `WrongGroup`.
//!
//! [`ShardKv`] handles: [`Dispatch`] (`ShardKV.Get`, `ShardKV.PutAppend`, and from other
//! groups' migrators `ShardKV.PullShards`, answered from the applied state with [`Read`],
//! and `ShardKV.DeleteShards`, which goes through the log). Sends: [`Submit`] and [`Read`] to
//! its [`Rsm`].

pub mod clerk;
pub mod store;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use actix::prelude::*;

use self::store::{ShardCommand, ShardOutput, ShardStore};
use crate::actors::client_end::ClientEnd;
use crate::actors::migrator::{Migrator, StopMigrator};
use crate::actors::raft::{RaftPeer, RestoreError};
use crate::actors::rsm::{Read, Rsm, RsmConfig, Session, Shutdown, Submit};
use crate::messages::ctrler::Gid;
use crate::messages::kv::{KvCommand, KvError, KvReply};
use crate::messages::net::{encode, Dispatch, NetError, Rpc, RpcError, Server};
use crate::messages::shard::*;
use crate::storage::Persister;

/// 6.5840's `make_end`: a fresh client end to the named server, for calls across groups.
pub type EndMaker = Rc<dyn Fn(&str) -> Pin<Box<dyn Future<Output = Result<ClientEnd, NetError>>>>>;

/// The network face of one group member.
pub struct ShardKv {
    rsm: Addr<Rsm<ShardStore>>,
}

impl Actor for ShardKv {
    type Context = Context<Self>;
}

/// Runs a client operation through the log.
async fn client(
    rsm: &Addr<Rsm<ShardStore>>,
    command: KvCommand,
    session: Option<Session>,
) -> Result<String, KvError> {
    let command = ShardCommand::Client { command, session };
    match rsm
        .send(Submit {
            session: None,
            command,
        })
        .await
    {
        Ok(Ok(ShardOutput::Kv(result))) => result,
        _ => Err(KvError::WrongLeader),
    }
}

async fn serve(rsm: Addr<Rsm<ShardStore>>, msg: Dispatch) -> Result<Vec<u8>, RpcError> {
    match msg.method {
        ShardGetArgs::METHOD => {
            let key = msg.decode::<ShardGetArgs>()?.key;
            let result = client(&rsm, KvCommand::Get { key }, None).await;
            encode(&KvReply { result })
        }
        ShardPutAppendArgs::METHOD => {
            let args = msg.decode::<ShardPutAppendArgs>()?;
            let session = Some((args.client_id, args.seq));
            let result = client(&rsm, args.command(), session).await;
            encode(&KvReply { result })
        }
        PullShardsArgs::METHOD => {
            let args = msg.decode::<PullShardsArgs>()?;
            let read = Read::new(move |s: &ShardStore, _| s.frozen(args.num, &args.shards));
            let result = rsm
                .send(read)
                .await
                .unwrap_or(Err(MigrationError::WrongLeader));
            encode(&PullShardsReply { result })
        }
        DeleteShardsArgs::METHOD => {
            let args = msg.decode::<DeleteShardsArgs>()?;
            let command = ShardCommand::Delete {
                num: args.num,
                shards: args.shards,
            };
            let result = match rsm
                .send(Submit {
                    session: None,
                    command,
                })
                .await
            {
                Ok(Ok(ShardOutput::Done)) => Ok(()),
                Ok(Ok(ShardOutput::NotReady)) => Err(MigrationError::NotReady),
                _ => Err(MigrationError::WrongLeader),
            };
            encode(&DeleteShardsReply { result })
        }
        other => Err(RpcError::UnknownMethod(other.to_string())),
    }
}

impl Handler<Dispatch> for ShardKv {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        Box::pin(serve(self.rsm.clone(), msg))
    }
}

/// Everything needed to start one group member (6.5840's `StartServer` arguments).
pub struct ShardKvSetup<P> {
    /// Ends to every member's Raft service (index = member id).
    pub peers: Vec<ClientEnd>,
    /// This member's id.
    pub me: usize,
    /// Its storage.
    pub persister: P,
    /// Snapshot when the Raft state reaches this many bytes (`None`: never).
    pub max_raft_state: Option<usize>,
    /// The group's id.
    pub gid: Gid,
    /// Ends to the controller servers.
    pub ctrlers: Vec<ClientEnd>,
    /// Makes ends to other groups' servers.
    pub make_end: EndMaker,
    /// Seed for the Raft peer's randomness.
    pub seed: u64,
}

/// One running group member: Raft peer, replicated state machine, network face, migrator.
#[derive(Clone)]
pub struct ShardKvNode {
    /// The Raft peer.
    pub raft: Addr<RaftPeer>,
    /// The replicated state machine.
    pub rsm: Addr<Rsm<ShardStore>>,
    /// The ShardKV service.
    pub kv: Addr<ShardKv>,
    /// The migrator.
    pub migrator: Addr<Migrator>,
}

impl ShardKvNode {
    /// Starts a group member, restoring its persisted state. Fails on a corrupt state.
    pub fn start<P: Persister + Clone + 'static>(
        setup: ShardKvSetup<P>,
    ) -> Result<ShardKvNode, RestoreError> {
        let (rsm, raft) = Rsm::<ShardStore>::start(RsmConfig {
            peers: setup.peers,
            me: setup.me,
            persister: setup.persister,
            max_raft_state: setup.max_raft_state,
            seed: setup.seed,
        })?;
        let kv = ShardKv { rsm: rsm.clone() }.start();
        let migrator = Migrator::new(
            setup.gid,
            rsm.clone(),
            raft.clone(),
            setup.ctrlers,
            setup.make_end,
        )
        .start();
        Ok(ShardKvNode {
            raft,
            rsm,
            kv,
            migrator,
        })
    }

    /// The services to register on the network: "ShardKV" and "Raft".
    pub fn server(&self) -> Server {
        Server::new()
            .with_service("ShardKV", self.kv.clone().recipient())
            .with_service("Raft", self.raft.clone().recipient())
    }

    /// Stops the whole member (a crash): the migrator and its calls in flight, the RSM and
    /// the Raft peer. Nothing more is sent.
    pub fn kill(&self) {
        self.migrator.do_send(StopMigrator);
        self.rsm.do_send(Shutdown);
    }
}
