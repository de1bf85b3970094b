//! The admin protocol: `Admin.Status`, which an operator's tool (`rainkv-ctl status`) asks
//! every node, answered with the node's Raft role, term, commit and applied index.

use serde::{Deserialize, Serialize};

use crate::messages::net::Rpc;
use crate::messages::raft::Role;

/// `Admin.Status`: how is this node doing?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusArgs;

/// The answer to `Admin.Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id (its index among the peers).
    pub id: usize,
    /// Its Raft role.
    pub role: Role,
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
