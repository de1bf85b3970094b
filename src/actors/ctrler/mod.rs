//! The shard controller: 6.5840's `ShardCtrler`, a thin network face on the replicated state
//! machine.
//!
//! [`ConfigHistory`] (in [`config_ops`]) is the state machine: the numbered configs and the
//! minimal-move rebalance. [`ShardCtrler`] is the actor the network delivers
//! `ShardCtrler.Join` / `.Leave` / `.Move` / `.Query` / `.Register` to; it turns each request
//! into a [`Submit`] with the clerk's session (Join, Leave, Move), a [`LinearizableRead`]
//! (Query: no log entry, yet it reflects every change that completed before it) or a
//! [`RegisterSession`], and maps the outcome back to a [`CtrlerResult`]. [`CtrlerNode`] starts and stops one whole controller server;
//! [`clerk`] is its client.
//!
//! Handles: [`Dispatch`]. Sends: [`Submit`], [`RegisterSession`] and [`LinearizableRead`] to
//! its [`Rsm`].

pub mod clerk;
pub mod config_ops;

use actix::prelude::*;

pub use self::config_ops::ConfigHistory;
use crate::actors::raft::{RaftPeer, RestoreError};
use crate::actors::rsm::{ReplicaSetup, Rsm};
use crate::messages::ctrler::*;
use crate::messages::lifecycle::Stop;
use crate::messages::net::{encode, Dispatch, Rpc, RpcError, Server};
use crate::messages::rsm::{LinearizableRead, RegisterSession, Session, Submit, SubmitError};
use crate::storage::Persister;

/// The network-facing controller service of one server.
pub struct ShardCtrler {
    rsm: Addr<Rsm<ConfigHistory>>,
}

impl Actor for ShardCtrler {
    type Context = Context<Self>;
}

/// Decodes a controller request into its session (if it changes anything) and operation.
fn request(msg: &Dispatch) -> Result<(Option<Session>, CtrlerOp), RpcError> {
    match msg.method {
        JoinArgs::METHOD => msg.decode::<JoinArgs>().map(|a| {
            let op = CtrlerOp::Join { servers: a.servers };
            (Some((a.client_id, a.seq)), op)
        }),
        LeaveArgs::METHOD => msg.decode::<LeaveArgs>().map(|a| {
            let op = CtrlerOp::Leave { gids: a.gids };
            (Some((a.client_id, a.seq)), op)
        }),
        MoveArgs::METHOD => msg.decode::<MoveArgs>().map(|a| {
            let op = CtrlerOp::Move {
                shard: a.shard,
                gid: a.gid,
            };
            (Some((a.client_id, a.seq)), op)
        }),
        QueryArgs::METHOD => msg
            .decode::<QueryArgs>()
            .map(|a| (None, CtrlerOp::Query { num: a.num })),
        other => Err(RpcError::UnknownMethod(other.to_string())),
    }
}

impl Handler<Dispatch> for ShardCtrler {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        let rsm = self.rsm.clone();
        if msg.method == RegisterArgs::METHOD {
            return Box::pin(async move {
                msg.decode::<RegisterArgs>()?;
                let opened = match rsm.send(RegisterSession).await {
                    Ok(Ok(client)) => Ok(client),
                    Ok(Err(e)) => Err(ctrler_error(e)),
                    Err(_) => Err(CtrlerError::WrongLeader),
                };
                encode(&opened)
            });
        }
        let request = request(&msg);
        Box::pin(async move {
            let result: CtrlerResult = match request? {
                (_, CtrlerOp::Query { num }) => {
                    let read =
                        LinearizableRead::new(move |h: &ConfigHistory, _| h.query(num).clone());
                    match rsm.send(read).await {
                        Ok(Ok(config)) => Ok(CtrlerReply::Config(config)),
                        Ok(Err(_)) | Err(_) => Err(CtrlerError::WrongLeader),
                    }
                }
                (session, change) => match rsm.send(Submit::new(session, change)).await {
                    Ok(Ok(output)) => output.map(CtrlerReply::from),
                    Ok(Err(e)) => Err(ctrler_error(e)),
                    Err(_) => Err(CtrlerError::WrongLeader),
                },
            };
            encode(&result)
        })
    }
}

/// What a clerk hears when the replica could not serve its request.
fn ctrler_error(e: SubmitError) -> CtrlerError {
    match e {
        SubmitError::SessionExpired => CtrlerError::SessionExpired,
        SubmitError::WrongLeader | SubmitError::Halted => CtrlerError::WrongLeader,
    }
}

/// One running controller server: its Raft peer, replicated state machine and network face.
#[derive(Clone)]
pub struct CtrlerNode {
    /// The Raft peer.
    pub raft: Addr<RaftPeer>,
    /// The replicated state machine.
    pub rsm: Addr<Rsm<ConfigHistory>>,
    /// The controller service.
    pub ctrler: Addr<ShardCtrler>,
}

impl CtrlerNode {
    /// 6.5840's `shardctrler.StartServer`: one controller server, restoring what its storage
    /// holds. (The lab never snapshots the controller's small state: its tests give
    /// `max_raft_state: None`.)
    pub fn start<P: Persister + Clone + Send + 'static>(
        setup: ReplicaSetup<P>,
    ) -> Result<CtrlerNode, RestoreError> {
        let (rsm, raft) = Rsm::<ConfigHistory>::start(setup)?;
        let ctrler = ShardCtrler { rsm: rsm.clone() }.start();
        Ok(CtrlerNode { raft, rsm, ctrler })
    }

    /// The services to register on the network: "ShardCtrler" and "Raft".
    pub fn server(&self) -> Server {
        Server::new()
            .with_service("ShardCtrler", self.ctrler.clone().recipient())
            .with_service("Raft", self.raft.clone().recipient())
    }

    /// Stops the whole server (a crash: nothing more is sent, pending requests fail).
    pub fn kill(&self) {
        self.rsm.do_send(Stop);
    }
}
