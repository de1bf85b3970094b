//! What a node's HTTP port asks its metrics service: the `/metrics` page and the `/health`
//! verdict. Nothing here crosses the wire between nodes.

use actix::prelude::*;

/// Asks for the node's metrics, as a Prometheus text page.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "String")]
pub struct Scrape;

/// Asks whether the node is healthy: its replica serves, it knows a leader, and it has
/// applied close enough to its commit index.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "HealthCheck")]
pub struct CheckHealth;

/// The answer to [`CheckHealth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Healthy (`/health` answers 200) or not (503).
    pub healthy: bool,
    /// One line: the node's state when healthy, else why it is not.
    pub reason: String,
}
