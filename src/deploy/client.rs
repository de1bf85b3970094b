//! A client of a running cluster, over TCP: links to every node's client port, clerks that
//! call through them, the status of each node, and leadership transfers. Used by
//! `rainkv-ctl`, the benchmark and the demo's workload.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use super::cluster_file::{ClusterFile, NodeAddrs, TlsIdentity};
use super::node::trace_name;
use crate::actors::clerk::Clerk;
use crate::actors::client_end::ClientEnd;
use crate::actors::tcp::TcpSettings;
use crate::actors::tcp::{client_end, Link};
use crate::messages::admin::{
    ChangeMemberArgs, ChangeRefused, MembersArgs, MembersReport, NodeStatus, RaftStatus,
    StatusArgs, TransferLeaderArgs, TransferRefused,
};
use crate::messages::lifecycle::Stop;
use crate::messages::net::RpcError;
use crate::messages::raft::MembershipChange;
use crate::messages::rsm::Health;
use crate::messages::tcp::GetLinkStatus;
use crate::trace::Tracer;

/// How long one status poll of [`ClusterClient::wait_for_leader`] waits for each node.
const STATUS_POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between status polls.
const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Pause between the polls of [`ClusterClient::transfer_leadership`], which times the
/// transfer with them.
const TRANSFER_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// What [`ClusterClient::transfer_leadership`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transferred {
    /// The node asked for already led: nothing was done.
    AlreadyLeader {
        /// Its term.
        term: u64,
    },
    /// Leadership moved to the node asked for.
    Moved {
        /// The node that led before.
        from: usize,
        /// The new leader's term.
        term: u64,
        /// From the request to the old leader until the new one reported that it leads.
        took: Duration,
    },
}

/// Why [`ClusterClient::transfer_leadership`] did not move leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferFailure {
    /// The cluster has no node with this id.
    NoSuchNode {
        /// The id asked for.
        to: usize,
        /// How many nodes the cluster has (ids `0..nodes`).
        nodes: usize,
    },
    /// The node asked for cannot take over: it cannot be reached, or it does not serve.
    TargetUnavailable {
        /// The node.
        to: usize,
        /// Why.
        why: String,
    },
    /// No node reported that it leads.
    NoLeader,
    /// The leader could not be asked: it answered the request with an error (an older
    /// version without `Admin.TransferLeader`, for one).
    CannotAsk {
        /// The leader.
        leader: usize,
        /// The error.
        why: String,
    },
    /// The leader refused to start the transfer.
    Refused {
        /// The leader asked.
        leader: usize,
        /// Why it refused.
        why: TransferRefused,
    },
    /// The node asked for did not report that it leads in time.
    TimedOut {
        /// The node.
        to: usize,
        /// How long it was given.
        limit: Duration,
    },
}

impl fmt::Display for TransferFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferFailure::NoSuchNode { to, nodes } => write!(
                f,
                "no node {to} in the cluster (its nodes are 0..={})",
                nodes.saturating_sub(1)
            ),
            TransferFailure::TargetUnavailable { to, why } => {
                write!(f, "node {to} cannot take over: {why}")
            }
            TransferFailure::NoLeader => write!(f, "no node leads; nothing to transfer"),
            TransferFailure::CannotAsk { leader, why } => {
                write!(f, "the leader, node {leader}, cannot be asked: {why}")
            }
            TransferFailure::Refused { leader, why } => {
                write!(f, "the leader, node {leader}, refused the transfer: {why}")
            }
            TransferFailure::TimedOut { to, limit } => {
                write!(f, "node {to} did not take over within {limit:?}")
            }
        }
    }
}

impl std::error::Error for TransferFailure {}

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
    settings: Arc<TcpSettings>,
}

/// Why [`ClusterClient::change_member`] did not change the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeFailure {
    /// The leader refused it for good (an invalid change, a lagging learner).
    Refused(ChangeRefused),
    /// No leader took it within the time limit (the last refusal or error says why).
    TimedOut(String),
}

impl fmt::Display for ChangeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeFailure::Refused(why) => write!(f, "the leader refused: {why}"),
            ChangeFailure::TimedOut(last) => write!(
                f,
                "no leader made the change in time (last: {last}); it may still be made"
            ),
        }
    }
}

impl std::error::Error for ChangeFailure {}

impl ClusterClient {
    /// Links to the client ports of `config`'s nodes (nothing connects until the first call).
    /// With TLS on, it presents the client certificate; if that cannot be loaded, the error
    /// is logged and every connection fails its TLS handshake (`rainkv-ctl` checks first).
    pub fn connect(config: &ClusterFile) -> ClusterClient {
        ClusterClient::connect_traced(config, &Tracer::off())
    }

    /// As [`ClusterClient::connect`], tracing every call to `trace` as made by `client`.
    pub fn connect_traced(config: &ClusterFile, trace: &Tracer) -> ClusterClient {
        let mut settings = config.tcp_settings();
        match config.tls_config(TlsIdentity::Client) {
            Ok(tls) => settings.tls = tls,
            Err(why) => log::error!("cannot load the client's TLS identity: {why}"),
        }
        let settings = Arc::new(settings);
        let trace = trace.for_node("client");
        let links = config
            .nodes
            .iter()
            .map(|node| {
                let to = trace_name(node.id);
                Link::start_traced(node.client, settings.clone(), trace.clone(), &to)
            })
            .collect();
        ClusterClient {
            nodes: config.nodes.clone(),
            links,
            settings,
        }
    }

    /// Links to `config`'s nodes and to every member the cluster's log names besides them
    /// (nodes that joined since the file was written), asked within `limit`. The added nodes
    /// come after the file's, in id order.
    pub async fn connect_members(config: &ClusterFile, limit: Duration) -> ClusterClient {
        let mut client = ClusterClient::connect(config);
        if let Ok(report) = client.members(limit).await {
            for member in report.members {
                if client.nodes.iter().any(|node| node.id == member.id) {
                    continue;
                }
                match NodeAddrs::from_contact(member.id, &member.contact) {
                    Ok(node) => {
                        client
                            .links
                            .push(Link::start(node.client, client.settings.clone()));
                        client.nodes.push(node);
                    }
                    Err(why) => log::warn!("member {} cannot be reached: {why}", member.id),
                }
            }
        }
        client
    }

    /// The members as the cluster's log says, asked of every node within `timeout`: a
    /// leader's answer (with how far each member has the log) if one leads, else the
    /// answer of the node with the highest term.
    pub async fn members(&self, timeout: Duration) -> Result<MembersReport, String> {
        let ends = self.ends();
        let asks = ends
            .iter()
            .map(|end| tokio::time::timeout(timeout, end.call(&MembersArgs)));
        let mut best: Option<MembersReport> = None;
        let mut last_error = String::from("no node answered");
        for answer in join_all(asks).await {
            match answer {
                Ok(Ok(report)) => {
                    let rank = |r: &MembersReport| {
                        r.raft
                            .map(|s| (s.role == crate::messages::raft::Role::Leader, s.term))
                    };
                    if best.as_ref().is_none_or(|b| rank(&report) > rank(b)) {
                        best = Some(report);
                    }
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "no answer in time".to_string(),
            }
        }
        best.ok_or(last_error)
    }

    /// Changes the members by one node (`Admin.ChangeMember`), within `limit`: asks whichever
    /// node leads, again when leadership moves or another change is in progress, and returns
    /// the index of the committed change.
    pub async fn change_member(
        &self,
        change: MembershipChange,
        limit: Duration,
    ) -> Result<u64, ChangeFailure> {
        let deadline = tokio::time::Instant::now() + limit;
        let ends = self.ends();
        let mut last = String::from("no node leads");
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Some((leader, _)) = self.wait_for_leader(left).await {
                let position = self.nodes.iter().position(|node| node.id == leader);
                if let Some(end) = position.and_then(|p| ends.get(p)) {
                    let args = ChangeMemberArgs(change.clone());
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match tokio::time::timeout(left, end.call(&args)).await {
                        Ok(Ok(Ok(index))) => return Ok(index),
                        Ok(Ok(Err(
                            why @ (ChangeRefused::Invalid(_) | ChangeRefused::Lagging { .. }),
                        ))) => return Err(ChangeFailure::Refused(why)),
                        Ok(Ok(Err(why))) => last = why.to_string(),
                        Ok(Err(e)) => last = e.to_string(),
                        Err(_) => last = "no answer in time".to_string(),
                    }
                } else {
                    last = format!("node {leader} leads but cannot be reached from here");
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ChangeFailure::TimedOut(last));
            }
            tokio::time::sleep(STATUS_POLL_INTERVAL).await;
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
        Clerk::start(self.ends())
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

    /// Moves leadership to node `to` (Raft thesis §3.10), within `limit`: finds the leader
    /// through the nodes' status, asks it (`Admin.TransferLeader`) to hand over to `to`, and
    /// waits until `to` reports that it leads a later term. Checks first that `to` answers and
    /// serves, since a leader handing over to a node that cannot take over refuses proposals
    /// until it gives up. A `to` that already leads is left alone.
    pub async fn transfer_leadership(
        &self,
        to: usize,
        limit: Duration,
    ) -> Result<Transferred, TransferFailure> {
        if to >= self.nodes.len() {
            return Err(TransferFailure::NoSuchNode {
                to,
                nodes: self.nodes.len(),
            });
        }
        let ends = self.ends();
        let deadline = tokio::time::Instant::now() + limit;
        let poll_timeout = STATUS_POLL_TIMEOUT.min(limit);
        // Find the leader and ask it, again if leadership moves meanwhile.
        let mut leader_seen = false;
        let (from, term, started) = loop {
            let reports = self.status(poll_timeout).await;
            if let Some(report) = reports.get(to) {
                can_take_over(to, report)?;
            }
            // By position, not by the id a node reports: ids from the wire index nothing.
            let leader = reports
                .iter()
                .enumerate()
                .filter_map(|(id, r)| Some((id, r.status.as_ref().ok()?)))
                .filter(|(_, s)| s.is_leader())
                .filter_map(|(id, s)| Some((id, s.raft?.term)))
                .max_by_key(|&(_, term)| term);
            if let Some((leader, term)) = leader {
                if leader == to {
                    return Ok(Transferred::AlreadyLeader { term });
                }
                leader_seen = true;
                let started = tokio::time::Instant::now();
                let args = TransferLeaderArgs { to };
                let ask = ends[leader].call(&args);
                match tokio::time::timeout(poll_timeout, ask).await {
                    Ok(Ok(Ok(()))) => break (leader, term, started),
                    // It lost the lead since it said it had it, or did not answer: look again.
                    Ok(Ok(Err(TransferRefused::NotLeader { .. })))
                    | Ok(Err(RpcError::Unreachable))
                    | Err(_) => {}
                    Ok(Ok(Err(why))) => return Err(TransferFailure::Refused { leader, why }),
                    Ok(Err(e)) => {
                        let why = e.to_string();
                        return Err(TransferFailure::CannotAsk { leader, why });
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(if leader_seen {
                    TransferFailure::TimedOut { to, limit }
                } else {
                    TransferFailure::NoLeader
                });
            }
            tokio::time::sleep(STATUS_POLL_INTERVAL).await;
        };
        let end = &ends[to];
        loop {
            let answer = tokio::time::timeout(poll_timeout, end.call(&StatusArgs)).await;
            if let Ok(Ok(status)) = answer {
                if let Some(raft) = status.raft.filter(|r| status.is_leader() && r.term > term) {
                    return Ok(Transferred::Moved {
                        from,
                        term: raft.term,
                        took: started.elapsed(),
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TransferFailure::TimedOut { to, limit });
            }
            tokio::time::sleep(TRANSFER_POLL_INTERVAL).await;
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

/// Whether node `to`, as `report` shows it, can take over: it answers and serves.
fn can_take_over(to: usize, report: &NodeReport) -> Result<(), TransferFailure> {
    let unavailable = |why: String| Err(TransferFailure::TargetUnavailable { to, why });
    match &report.status {
        Err(why) => unavailable(why.clone()),
        Ok(NodeStatus {
            health: Health::Halted { reason },
            ..
        }) => unavailable(format!("it has halted: {reason}")),
        Ok(NodeStatus { raft: None, .. }) => unavailable("its Raft peer has stopped".into()),
        Ok(_) => Ok(()),
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
