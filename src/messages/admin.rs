//! The admin protocol, what an operator's tool (`rainkv-ctl`) asks a node: `Admin.Status`,
//! asked of every node and answered with whether the node is serving and its Raft role, term,
//! commit and applied index; `Admin.TransferLeader`, asked of the leader, which hands
//! leadership to another node (Raft thesis §3.10); `Admin.Members`, the members as the node's
//! log says (with how far each has the log, from a leader); and `Admin.ChangeMember`, asked
//! of the leader, which changes the members by one node (thesis chapter 4).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::messages::net::Rpc;
use crate::messages::raft::{MembershipChange, MembershipError, Role};
use crate::messages::rsm::Health;

/// `Admin.Status`: how is this node doing?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusArgs;

/// The answer to `Admin.Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id (its index among the peers).
    pub id: usize,
    /// Whether its replica serves, or why it halted.
    pub health: Health,
    /// Its Raft peer's state; `None` once the peer has stopped (a halted node).
    pub raft: Option<RaftStatus>,
}

/// A Raft peer's state, as reported on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    /// Its Raft role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader of that term, if it knows one.
    pub leader: Option<usize>,
    /// Highest log index it knows committed.
    pub commit_index: u64,
    /// Highest log index handed to its state machine.
    pub last_applied: u64,
}

impl NodeStatus {
    /// Whether the node serves and its peer leads.
    pub fn is_leader(&self) -> bool {
        self.health == Health::Serving && self.raft.is_some_and(|r| r.role == Role::Leader)
    }
}

impl Rpc for StatusArgs {
    const METHOD: &'static str = "Admin.Status";
    type Reply = NodeStatus;
}

/// `Admin.TransferLeader`: hand this node's leadership to node `to`. The leader brings `to`'s
/// log up to date, takes no proposals meanwhile, and tells it to campaign at once; the answer
/// says only whether the transfer started (an unreachable `to` never takes over, and the
/// leader gives up after an election timeout and takes proposals again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeaderArgs {
    /// The node to take over.
    pub to: usize,
}

/// Why a node did not start handing over its leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferRefused {
    /// It does not lead.
    NotLeader {
        /// Its current term.
        term: u64,
        /// The leader of that term, if it knows one.
        leader: Option<usize>,
    },
    /// `to` is not another node of the cluster.
    NoSuchNode(usize),
    /// Its replica has halted and its Raft peer has stopped.
    Halted,
}

impl fmt::Display for TransferRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferRefused::NotLeader {
                term,
                leader: Some(leader),
            } => write!(f, "it is not the leader (node {leader} leads term {term})"),
            TransferRefused::NotLeader { term, leader: None } => {
                write!(f, "it is not the leader (term {term}, no leader known)")
            }
            TransferRefused::NoSuchNode(to) => write!(f, "there is no other node {to}"),
            TransferRefused::Halted => write!(f, "its replica has halted"),
        }
    }
}

impl Rpc for TransferLeaderArgs {
    const METHOD: &'static str = "Admin.TransferLeader";
    type Reply = Result<(), TransferRefused>;
}

/// `Admin.Members`: who is in the cluster, as this node's log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersArgs;

/// The answer to `Admin.Members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReport {
    /// The answering node.
    pub id: usize,
    /// Its Raft state; `None` once its peer has stopped.
    pub raft: Option<RaftStatus>,
    /// The members, by id.
    pub members: Vec<MemberReport>,
}

/// One member, as `Admin.Members` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// Its id.
    pub id: usize,
    /// How the deployment reaches it (`peer=ADDR client=ADDR`).
    pub contact: String,
    /// A voter (or a learner).
    pub voter: bool,
    /// The highest log index known replicated on it, if the answering node leads (its own
    /// entry is its last index).
    pub match_index: Option<u64>,
}

impl Rpc for MembersArgs {
    const METHOD: &'static str = "Admin.Members";
    type Reply = MembersReport;
}

/// `Admin.ChangeMember`: change the members by one node; answered once the change is
/// committed, with the index of its entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMemberArgs(pub MembershipChange);

/// Why a membership change did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeRefused {
    /// The node does not lead (or stopped leading before the change committed: it may still
    /// commit).
    NotLeader {
        /// Its current term.
        term: u64,
        /// The leader of that term, if it knows one.
        leader: Option<usize>,
    },
    /// Another change is in progress.
    Busy,
    /// The change does not apply to the members (the reason says why).
    Invalid(String),
    /// The learner to promote is too far behind.
    Lagging {
        /// Its last replicated index as the leader knows it.
        matched: u64,
        /// The leader's last index.
        last: u64,
    },
    /// The node's replica has halted.
    Halted,
}

impl From<MembershipError> for ChangeRefused {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::NotLeader(n) => ChangeRefused::NotLeader {
                term: n.term,
                leader: n.leader,
            },
            MembershipError::Busy => ChangeRefused::Busy,
            MembershipError::Invalid(why) => ChangeRefused::Invalid(why),
            MembershipError::Lagging { matched, last } => ChangeRefused::Lagging { matched, last },
        }
    }
}

impl fmt::Display for ChangeRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeRefused::NotLeader { term, leader } => write!(
                f,
                "the node does not lead (term {term}, leader {leader:?}); a change already proposed may still commit"
            ),
            ChangeRefused::Busy => write!(f, "another membership change is in progress"),
            ChangeRefused::Invalid(why) => write!(f, "invalid change: {why}"),
            ChangeRefused::Lagging { matched, last } => write!(
                f,
                "the learner has {matched} of the leader's {last} entries; promote it once it has caught up"
            ),
            ChangeRefused::Halted => write!(f, "the node's replica has halted"),
        }
    }
}

impl Rpc for ChangeMemberArgs {
    const METHOD: &'static str = "Admin.ChangeMember";
    type Reply = Result<u64, ChangeRefused>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::net::encode;

    #[test]
    fn a_transfer_and_its_answers_round_trip() {
        let args = TransferLeaderArgs { to: 2 };
        let bytes = encode(&args).expect("encode");
        assert_eq!(
            rmp_serde::from_slice::<TransferLeaderArgs>(&bytes).ok(),
            Some(args)
        );
        for reply in [
            Ok(()),
            Err(TransferRefused::NotLeader {
                term: 7,
                leader: Some(1),
            }),
            Err(TransferRefused::NoSuchNode(9)),
            Err(TransferRefused::Halted),
        ] {
            let bytes = encode(&reply).expect("encode");
            let back = rmp_serde::from_slice::<<TransferLeaderArgs as Rpc>::Reply>(&bytes);
            assert_eq!(back.ok(), Some(reply));
        }
    }
}
