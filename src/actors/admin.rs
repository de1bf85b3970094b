//! The admin service of one node: answers `Admin.Status` with the node's Raft role, term,
//! commit and applied index, for `rainkv-ctl status` and the demo's progress line.
//!
//! Handles: [`Dispatch`] (`Admin.Status`). Sends: [`GetState`] to its Raft peer.

use actix::prelude::*;

use crate::actors::raft::RaftPeer;
use crate::messages::admin::{NodeStatus, StatusArgs};
use crate::messages::net::{encode, Dispatch, Rpc, RpcError};
use crate::messages::raft::GetState;

/// The admin service actor.
pub struct Admin {
    id: usize,
    raft: Addr<RaftPeer>,
}

impl Admin {
    /// The admin service of node `id`, whose Raft peer is `raft`.
    pub fn new(id: usize, raft: Addr<RaftPeer>) -> Self {
        Admin { id, raft }
    }
}

impl Actor for Admin {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for Admin {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        let (id, raft) = (self.id, self.raft.clone());
        Box::pin(async move {
            if msg.method != StatusArgs::METHOD {
                return Err(RpcError::UnknownMethod(msg.method.to_string()));
            }
            msg.decode::<StatusArgs>()?;
            // A stopped peer is a dead node: the caller sees it as unreachable.
            let state = raft
                .send(GetState)
                .await
                .map_err(|_| RpcError::Unreachable)?;
            encode(&NodeStatus {
                id,
                role: state.role,
                term: state.term,
                commit_index: state.commit_index,
                last_applied: state.last_applied,
            })
        })
    }
}
