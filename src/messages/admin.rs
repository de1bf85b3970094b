//! The admin protocol: `Admin.Status`, which an operator's tool (`rainkv-ctl status`) asks
//! every node, answered with whether the node is serving and its Raft role, term, commit and
//! applied index.

use serde::{Deserialize, Serialize};

use crate::messages::net::Rpc;
use crate::messages::raft::Role;
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
