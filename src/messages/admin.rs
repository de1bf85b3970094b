//! The admin protocol: `Admin.Status`, which an operator's tool (`rainkv-ctl status`) asks
//! every node, answered with the node's Raft role, term, commit and applied index.

use serde::{Deserialize, Serialize};

use crate::actors::raft::Role;
use crate::messages::net::Rpc;

/// `Admin.Status`: how is this node doing?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusArgs;

/// A node's role, as reported on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    /// Follows a leader (or waits for one).
    Follower,
    /// Campaigns for votes.
    Candidate,
    /// Leads its term.
    Leader,
}

impl From<Role> for NodeRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Follower => NodeRole::Follower,
            Role::Candidate => NodeRole::Candidate,
            Role::Leader => NodeRole::Leader,
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            NodeRole::Follower => "follower",
            NodeRole::Candidate => "candidate",
            NodeRole::Leader => "leader",
        };
        f.pad(name)
    }
}

/// The answer to `Admin.Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id (its index among the peers).
    pub id: usize,
    /// Its Raft role.
    pub role: NodeRole,
    /// Its current term.
    pub term: u64,
    /// Highest log index it knows committed.
    pub commit_index: u64,
    /// Highest log index handed to its state machine.
    pub last_applied: u64,
}

impl Rpc for StatusArgs {
    const METHOD: &'static str = "Admin.Status";
    type Reply = NodeStatus;
}
