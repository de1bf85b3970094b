//! The admin service of one node: answers `Admin.Status` with whether the node's replica is
//! serving (or why it halted) and its Raft peer's role, term, leader, commit and applied
//! index, for `rainkv-ctl status` and the demo's progress line; passes `Admin.TransferLeader`
//! and `Admin.ChangeMember` on to its Raft peer, for `rainkv-ctl transfer-leader` and
//! `rainkv-ctl member`; and answers `Admin.Members` from its peer's membership.
//!
//! Handles: [`Dispatch`] (`Admin.Status`, `Admin.TransferLeader`, `Admin.Members`,
//! `Admin.ChangeMember`). Sends: [`GetHealth`] to its replica, [`GetState`],
//! [`TransferLeadership`] and [`ChangeMembership`] to its Raft peer.

use actix::prelude::*;

use crate::actors::raft::RaftPeer;
use crate::messages::admin::{
    ChangeMemberArgs, ChangeRefused, MemberReport, MembersArgs, MembersReport, NodeStatus,
    RaftStatus, StatusArgs, TransferLeaderArgs, TransferRefused,
};
use crate::messages::net::{encode, Dispatch, Rpc, RpcError};
use crate::messages::raft::{
    ChangeMembership, GetState, RaftState, TransferError, TransferLeadership,
};
use crate::messages::rsm::{GetHealth, Health};

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
            match msg.method {
                StatusArgs::METHOD => {
                    msg.decode::<StatusArgs>()?;
                    encode(&status(id, &replica, &raft).await?)
                }
                TransferLeaderArgs::METHOD => {
                    let args = msg.decode::<TransferLeaderArgs>()?;
                    encode(&transfer(args.to, &replica, &raft).await?)
                }
                MembersArgs::METHOD => {
                    msg.decode::<MembersArgs>()?;
                    encode(&members(id, &raft).await?)
                }
                ChangeMemberArgs::METHOD => {
                    let args = msg.decode::<ChangeMemberArgs>()?;
                    encode(&change_member(args, &replica, &raft).await?)
                }
                other => Err(RpcError::UnknownMethod(other.to_string())),
            }
        })
    }
}

/// `Admin.Status`.
async fn status(
    id: usize,
    replica: &Recipient<GetHealth>,
    raft: &Addr<RaftPeer>,
) -> Result<NodeStatus, RpcError> {
    // A replica that is gone is a dead node: the caller sees it as unreachable.
    let health = replica
        .send(GetHealth)
        .await
        .map_err(|_| RpcError::Unreachable)?;
    // A halted replica has stopped its peer: it reports its health alone.
    let raft = raft
        .send(GetState)
        .await
        .ok()
        .map(|state| raft_status(&state));
    Ok(NodeStatus { id, health, raft })
}

fn raft_status(state: &RaftState) -> RaftStatus {
    RaftStatus {
        role: state.role,
        term: state.term,
        leader: state.leader,
        commit_index: state.commit_index,
        last_applied: state.last_applied,
    }
}

/// `Admin.Members`.
async fn members(id: usize, raft: &Addr<RaftPeer>) -> Result<MembersReport, RpcError> {
    let Ok(state) = raft.send(GetState).await else {
        return Ok(MembersReport {
            id,
            raft: None,
            members: Vec::new(),
        });
    };
    let matched = |member: usize| state.match_index.get(member).copied();
    let voters = state.membership.voters.iter().map(|(id, c)| (*id, c, true));
    let learners = state
        .membership
        .learners
        .iter()
        .map(|(id, c)| (*id, c, false));
    let mut members: Vec<MemberReport> = voters
        .chain(learners)
        .map(|(member, contact, voter)| MemberReport {
            id: member,
            contact: contact.clone(),
            voter,
            match_index: matched(member),
        })
        .collect();
    members.sort_by_key(|m| m.id);
    Ok(MembersReport {
        id,
        raft: Some(raft_status(&state)),
        members,
    })
}

/// `Admin.ChangeMember`: the index of the committed change, or why there is none.
async fn change_member(
    args: ChangeMemberArgs,
    replica: &Recipient<GetHealth>,
    raft: &Addr<RaftPeer>,
) -> Result<Result<u64, ChangeRefused>, RpcError> {
    let health = replica
        .send(GetHealth)
        .await
        .map_err(|_| RpcError::Unreachable)?;
    if health != Health::Serving {
        return Ok(Err(ChangeRefused::Halted));
    }
    Ok(match raft.send(ChangeMembership(args.0)).await {
        Ok(outcome) => outcome.map_err(ChangeRefused::from),
        Err(_) => Err(ChangeRefused::Halted),
    })
}

/// `Admin.TransferLeader`: whether the peer started handing leadership to `to`.
async fn transfer(
    to: usize,
    replica: &Recipient<GetHealth>,
    raft: &Addr<RaftPeer>,
) -> Result<Result<(), TransferRefused>, RpcError> {
    let health = replica
        .send(GetHealth)
        .await
        .map_err(|_| RpcError::Unreachable)?;
    if health != Health::Serving {
        return Ok(Err(TransferRefused::Halted));
    }
    Ok(match raft.send(TransferLeadership { to }).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(TransferError::NotLeader(not_leader))) => Err(TransferRefused::NotLeader {
            term: not_leader.term,
            leader: not_leader.leader,
        }),
        Ok(Err(TransferError::NoSuchPeer(to))) => Err(TransferRefused::NoSuchNode(to)),
        // The peer stops only when its replica halts.
        Err(_) => Err(TransferRefused::Halted),
    })
}
