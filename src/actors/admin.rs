//! The admin service of one node: answers `Admin.Status` with whether the node's replica is
//! serving (or why it halted) and its Raft peer's role, term, leader, commit and applied
//! index, for `rainkv-ctl status` and the demo's progress line.
//!
//! Handles: [`Dispatch`] (`Admin.Status`). Sends: [`GetHealth`] to its replica, [`GetState`]
//! to its Raft peer.

use actix::prelude::*;

use crate::actors::raft::RaftPeer;
use crate::messages::admin::{NodeStatus, RaftStatus, StatusArgs};
use crate::messages::net::{encode, Dispatch, Rpc, RpcError};
use crate::messages::raft::GetState;
use crate::messages::rsm::GetHealth;

/// The admin service actor.
pub struct Admin {
    id: usize,
    replica: Recipient<GetHealth>,
    raft: Addr<RaftPeer>,
}

impl Admin {
    /// The admin service of node `id`, whose replica is `replica` and Raft peer `raft`.
    pub fn new(id: usize, replica: Recipient<GetHealth>, raft: Addr<RaftPeer>) -> Self {
        Admin { id, replica, raft }
    }
}

impl Actor for Admin {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for Admin {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        let (id, replica, raft) = (self.id, self.replica.clone(), self.raft.clone());
        Box::pin(async move {
            if msg.method != StatusArgs::METHOD {
                return Err(RpcError::UnknownMethod(msg.method.to_string()));
            }
            msg.decode::<StatusArgs>()?;
            // A replica that is gone is a dead node: the caller sees it as unreachable.
            let health = replica
                .send(GetHealth)
                .await
                .map_err(|_| RpcError::Unreachable)?;
            // A halted replica has stopped its peer: it reports its health alone.
            let raft = raft.send(GetState).await.ok().map(|state| RaftStatus {
                role: state.role,
                term: state.term,
                leader: state.leader,
                commit_index: state.commit_index,
                last_applied: state.last_applied,
            });
            encode(&NodeStatus { id, health, raft })
        })
    }
}
