//! A client of a running cluster, over TCP: links to every node's client port, clerks that
//! call through them, and the status of each node. Used by `rainkv-ctl`, the benchmark and the
//! demo's workload.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use super::cluster_file::{ClusterFile, NodeAddrs};
use crate::actors::clerk::Clerk;
use crate::actors::client_end::ClientEnd;
use crate::actors::tcp::{client_end, Link};
use crate::messages::admin::{NodeStatus, RaftStatus, StatusArgs};
use crate::messages::lifecycle::Stop;
use crate::messages::net::RpcError;
use crate::messages::tcp::GetLinkStatus;

/// How long one status poll of [`ClusterClient::wait_for_leader`] waits for each node.
const STATUS_POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between status polls.
const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a node said when asked for its status, or why it said nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The node's addresses.
    pub node: NodeAddrs,
    /// Its status, or why it could not be had.
    pub status: Result<NodeStatus, String>,
}

/// Links to every node's client port. Clones share the links.
#[derive(Clone)]
pub struct ClusterClient {
    nodes: Vec<NodeAddrs>,
    links: Vec<Addr<Link>>,
}

impl ClusterClient {
    /// Links to the client ports of `config`'s nodes (nothing connects until the first call).
    pub fn connect(config: &ClusterFile) -> ClusterClient {
        let settings = Arc::new(config.tcp_settings());
        let links = config
            .nodes
            .iter()
            .map(|node| Link::start(node.client, settings.clone()))
            .collect();
        ClusterClient {
            nodes: config.nodes.clone(),
            links,
        }
    }

    /// One client end per node, in id order.
    pub fn ends(&self) -> Vec<ClientEnd> {
        self.links
            .iter()
            .enumerate()
            .map(|(i, link)| client_end(&format!("client-to-{i}"), link))
            .collect()
    }

    /// A new clerk with a random client id (ids must differ between clerks: the servers
    /// deduplicate retries by id).
    pub fn clerk(&self) -> Clerk {
        Clerk::start(self.ends(), rand::random())
    }

    /// Asks every node for its status, each within `timeout`.
    pub async fn status(&self, timeout: Duration) -> Vec<NodeReport> {
        let ends = self.ends();
        let asks = ends.iter().zip(&self.links).map(|(end, link)| async move {
            let answer = tokio::time::timeout(timeout, end.call(&StatusArgs)).await;
            match answer {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(RpcError::Unreachable)) | Err(_) => Err(why_unreachable(link).await),
                Ok(Err(e)) => Err(e.to_string()),
            }
        });
        let answers = join_all(asks).await;
        self.nodes
            .iter()
            .zip(answers)
            .map(|(node, status)| NodeReport {
                node: *node,
                status,
            })
            .collect()
    }

    /// Waits, up to `limit`, until some serving node reports that it leads; returns its id
    /// and its Raft state.
    pub async fn wait_for_leader(&self, limit: Duration) -> Option<(usize, RaftStatus)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let reports = self.status(STATUS_POLL_TIMEOUT).await;
            let leader = reports
                .into_iter()
                .filter_map(|r| r.status.ok())
                .filter(NodeStatus::is_leader)
                .filter_map(|s| s.raft.map(|raft| (s.id, raft)))
                .max_by_key(|(_, raft)| raft.term);
            if leader.is_some() {
                return leader;
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(STATUS_POLL_INTERVAL).await;
        }
    }

    /// Why the nodes that cannot be reached cannot be, one line per node.
    pub async fn unreachable_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        for (node, link) in self.nodes.iter().zip(&self.links) {
            if let Ok(status) = link.send(GetLinkStatus).await {
                if let Some(why) = status.last_error {
                    reasons.push(format!("node {} ({}): {why}", node.id, node.client));
                }
            }
        }
        reasons
    }

    /// Closes every link.
    pub fn close(&self) {
        for link in &self.links {
            link.do_send(Stop);
        }
    }
}

async fn why_unreachable(link: &Addr<Link>) -> String {
    match link.send(GetLinkStatus).await {
        Ok(status) => match status.last_error {
            Some(why) => format!("unreachable: {why}"),
            None => "unreachable: no answer in time".to_string(),
        },
        Err(_) => "unreachable: the client is shutting down".to_string(),
    }
}
