//! The metrics service of one node: writes its `/metrics` page and judges its `/health`.
//!
//! It keeps no numbers of its own. At each scrape it asks the actors that know them (the
//! Raft peer its term, role, leader, indexes and membership; the replica whether it serves;
//! each listener its connection counters) and adds what the node's [`Metrics`] registry
//! counted (proposals, reads, saves, RPCs, client requests). A node is healthy when its
//! replica serves, its peer knows a leader and has applied to within `max_lag` entries of
//! its commit index.
//!
//! Handles: [`Scrape`], [`CheckHealth`]. Sends: [`GetState`] to its Raft peer, [`GetHealth`]
//! to its replica, [`GetListenerStats`] to its listeners.

use actix::prelude::*;
use futures_util::future::join_all;

use crate::actors::raft::RaftPeer;
use crate::messages::metrics::{CheckHealth, HealthCheck, Scrape};
use crate::messages::raft::{GetState, RaftState, Role};
use crate::messages::rsm::{GetHealth, Health};
use crate::messages::tcp::{GetListenerStats, ListenerStats};
use crate::metrics::text::{Exposition, Kind};
use crate::metrics::Metrics;

/// How far behind its commit index a healthy node may have applied, by default.
pub const DEFAULT_MAX_LAG: u64 = 1000;

/// The metrics service actor.
pub struct MetricsService {
    node: usize,
    metrics: Metrics,
    raft: Addr<RaftPeer>,
    replica: Recipient<GetHealth>,
    /// Each port's name (`peer`, `client`) and listener.
    ports: Vec<(&'static str, Recipient<GetListenerStats>)>,
    max_lag: u64,
}

impl MetricsService {
    /// The service of node `id`, which counts into `metrics`, whose Raft peer is `raft`,
    /// replica `replica` and listeners `ports`.
    pub fn new(
        node: usize,
        metrics: Metrics,
        raft: Addr<RaftPeer>,
        replica: Recipient<GetHealth>,
        ports: Vec<(&'static str, Recipient<GetListenerStats>)>,
    ) -> Self {
        MetricsService {
            node,
            metrics,
            raft,
            replica,
            ports,
            max_lag: DEFAULT_MAX_LAG,
        }
    }

    /// A healthy node applies to within `max_lag` entries of its commit index.
    pub fn with_max_lag(mut self, max_lag: u64) -> Self {
        self.max_lag = max_lag;
        self
    }
}

impl Actor for MetricsService {
    type Context = Context<Self>;
}

/// What a scrape gathered from the other actors (`None`: that actor has stopped).
struct Gathered {
    raft: Option<RaftState>,
    health: Option<Health>,
    ports: Vec<(&'static str, Option<ListenerStats>)>,
}

impl MetricsService {
    fn gather(&self) -> impl std::future::Future<Output = Gathered> + 'static {
        let raft = self.raft.send(GetState);
        let health = self.replica.send(GetHealth);
        let ports: Vec<_> = self
            .ports
            .iter()
            .map(|&(name, ref listener)| {
                let stats = listener.send(GetListenerStats);
                async move { (name, stats.await.ok()) }
            })
            .collect();
        async move {
            let (raft, health, ports) = futures_util::join!(raft, health, join_all(ports));
            Gathered {
                raft: raft.ok(),
                health: health.ok(),
                ports,
            }
        }
    }
}

impl Handler<Scrape> for MetricsService {
    type Result = ResponseFuture<String>;

    fn handle(&mut self, _: Scrape, _: &mut Self::Context) -> Self::Result {
        let gathered = self.gather();
        let (node, metrics) = (self.node, self.metrics.clone());
        Box::pin(async move {
            let gathered = gathered.await;
            let mut page = Exposition::new();
            render_node(&mut page, node, &gathered);
            metrics.render(&mut page);
            render_errors(&mut page, &metrics, &gathered);
            page.finish()
        })
    }
}

impl Handler<CheckHealth> for MetricsService {
    type Result = ResponseFuture<HealthCheck>;

    fn handle(&mut self, _: CheckHealth, _: &mut Self::Context) -> Self::Result {
        let gathered = self.gather();
        let (node, max_lag) = (self.node, self.max_lag);
        Box::pin(async move { judge(node, max_lag, &gathered.await) })
    }
}

/// The verdict of `/health`.
fn judge(node: usize, max_lag: u64, gathered: &Gathered) -> HealthCheck {
    let unhealthy = |reason: String| HealthCheck {
        healthy: false,
        reason,
    };
    match &gathered.health {
        Some(Health::Serving) => {}
        Some(Health::Halted { reason }) => return unhealthy(format!("halted: {reason}")),
        None => return unhealthy("its replica has stopped".into()),
    }
    let Some(raft) = &gathered.raft else {
        return unhealthy("its Raft peer has stopped".into());
    };
    let Some(leader) = raft.leader else {
        return unhealthy(format!(
            "no leader known ({} in term {})",
            raft.role, raft.term
        ));
    };
    let lag = raft.commit_index.saturating_sub(raft.last_applied);
    if lag > max_lag {
        return unhealthy(format!(
            "applied index {} is {lag} entries behind commit index {} (at most {max_lag})",
            raft.last_applied, raft.commit_index
        ));
    }
    HealthCheck {
        healthy: true,
        reason: format!(
            "ok: node {node} is {} in term {}, leader {leader}, commit {}, applied {}",
            raft.role, raft.term, raft.commit_index, raft.last_applied
        ),
    }
}

const ROLES: [(Role, &str); 4] = [
    (Role::Follower, "follower"),
    (Role::PreCandidate, "precandidate"),
    (Role::Candidate, "candidate"),
    (Role::Leader, "leader"),
];

/// The families gathered from the node's actors.
fn render_node(page: &mut Exposition, node: usize, gathered: &Gathered) {
    let id = node.to_string();
    page.family(
        "rainkv_node_info",
        Kind::Gauge,
        "Always 1; the labels name the node and the version it runs.",
    );
    page.sample(
        "rainkv_node_info",
        &[("node", &id), ("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    let serving = matches!(gathered.health, Some(Health::Serving));
    page.single(
        "rainkv_replica_serving",
        Kind::Gauge,
        "1 while the node's replica serves; 0 once it halted (or stopped).",
        f64::from(u8::from(serving)),
    );
    if let Some(raft) = &gathered.raft {
        render_raft(page, raft);
    }
    for (name, help, value) in [
        (
            "rainkv_connections_accepted_total",
            "Connections that passed the handshake, by port.",
            (|s: &ListenerStats| s.accepted) as fn(&ListenerStats) -> u64,
        ),
        (
            "rainkv_connections_refused_total",
            "Connections refused at the handshake (wrong token or cluster, garbage, silence), by port.",
            |s| s.refused,
        ),
        (
            "rainkv_connections_dropped_total",
            "Connections closed after the handshake for bad input, by port.",
            |s| s.dropped,
        ),
    ] {
        page.family(name, Kind::Counter, help);
        for (port, stats) in &gathered.ports {
            if let Some(stats) = stats {
                page.sample(name, &[("port", port)], value(stats) as f64);
            }
        }
    }
    page.family(
        "rainkv_connections_open",
        Kind::Gauge,
        "Connections open now, by port.",
    );
    for (port, stats) in &gathered.ports {
        if let Some(stats) = stats {
            page.sample(
                "rainkv_connections_open",
                &[("port", port)],
                stats.open as f64,
            );
        }
    }
}

fn render_raft(page: &mut Exposition, raft: &RaftState) {
    page.single(
        "rainkv_raft_term",
        Kind::Gauge,
        "The Raft peer's current term.",
        raft.term as f64,
    );
    page.family(
        "rainkv_raft_role",
        Kind::Gauge,
        "1 for the Raft peer's current role, 0 for the others.",
    );
    for (role, name) in ROLES {
        let value = f64::from(u8::from(raft.role == role));
        page.sample("rainkv_raft_role", &[("role", name)], value);
    }
    page.single(
        "rainkv_raft_leader_id",
        Kind::Gauge,
        "The id of the leader this peer knows of in its term; -1 when it knows none.",
        raft.leader.map_or(-1.0, |l| l as f64),
    );
    for (name, help, value) in [
        (
            "rainkv_raft_commit_index",
            "Highest log index known committed.",
            raft.commit_index,
        ),
        (
            "rainkv_raft_applied_index",
            "Highest log index handed to the service to apply.",
            raft.last_applied,
        ),
        (
            "rainkv_raft_last_log_index",
            "Index of the last log entry (compacted ones counted).",
            raft.last_index,
        ),
        (
            "rainkv_raft_log_entries",
            "Log entries held since the snapshot (last log index minus snapshot index).",
            raft.last_index.saturating_sub(raft.snapshot_index),
        ),
        (
            "rainkv_raft_snapshot_index",
            "Index of the last entry the snapshot covers (0: none).",
            raft.snapshot_index,
        ),
        (
            "rainkv_raft_snapshot_bytes",
            "Size of the snapshot, in bytes.",
            raft.snapshot_bytes,
        ),
    ] {
        page.single(name, Kind::Gauge, help, value as f64);
    }
    page.family(
        "rainkv_raft_members",
        Kind::Gauge,
        "Members in the peer's latest membership, by kind.",
    );
    let members = &raft.membership;
    page.sample(
        "rainkv_raft_members",
        &[("kind", "voter")],
        members.voters.len() as f64,
    );
    page.sample(
        "rainkv_raft_members",
        &[("kind", "learner")],
        members.learners.len() as f64,
    );
    page.family(
        "rainkv_raft_match_index",
        Kind::Gauge,
        "A leader's match index per member: the highest entry known replicated there.",
    );
    for (member, matched) in raft.match_index.iter().enumerate() {
        let is_member =
            members.voters.contains_key(&member) || members.learners.contains_key(&member);
        if is_member {
            let member = member.to_string();
            page.sample(
                "rainkv_raft_match_index",
                &[("member", &member)],
                *matched as f64,
            );
        }
    }
}

/// `rainkv_errors_total`: the errors counted anywhere, by kind.
fn render_errors(page: &mut Exposition, metrics: &Metrics, gathered: &Gathered) {
    let name = "rainkv_errors_total";
    page.family(
        name,
        Kind::Counter,
        "Errors by kind: halt (the replica halted), save_failed, rpc_failed (Raft RPCs without \
         a reply), client_request_not_ok, connection_refused and connection_dropped (both \
         ports).",
    );
    let halted = matches!(gathered.health, Some(Health::Halted { .. }));
    page.sample(name, &[("kind", "halt")], f64::from(u8::from(halted)));
    for (kind, count) in metrics.errors() {
        page.sample(name, &[("kind", kind)], count as f64);
    }
    let ports = gathered
        .ports
        .iter()
        .filter_map(|(_, stats)| stats.as_ref());
    let (refused, dropped) = ports.fold((0, 0), |(r, d), s| (r + s.refused, d + s.dropped));
    page.sample(name, &[("kind", "connection_refused")], refused as f64);
    page.sample(name, &[("kind", "connection_dropped")], dropped as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::raft::Membership;

    fn state(leader: Option<usize>, commit: u64, applied: u64) -> RaftState {
        RaftState {
            term: 3,
            role: Role::Follower,
            leader,
            commit_index: commit,
            last_applied: applied,
            last_index: commit,
            snapshot_index: 0,
            snapshot_bytes: 0,
            match_index: Vec::new(),
            membership: Membership::with_voters(3),
        }
    }

    fn gathered(raft: Option<RaftState>, health: Option<Health>) -> Gathered {
        Gathered {
            raft,
            health,
            ports: Vec::new(),
        }
    }

    #[test]
    fn healthy_needs_a_serving_replica_a_leader_and_little_lag() {
        let ok = judge(
            1,
            10,
            &gathered(Some(state(Some(0), 50, 45)), Some(Health::Serving)),
        );
        assert!(ok.healthy, "{ok:?}");
        assert!(ok.reason.contains("leader 0"), "{ok:?}");
        let lagging = judge(
            1,
            10,
            &gathered(Some(state(Some(0), 50, 39)), Some(Health::Serving)),
        );
        assert!(!lagging.healthy && lagging.reason.contains("11 entries behind"));
        let leaderless = judge(
            1,
            10,
            &gathered(Some(state(None, 5, 5)), Some(Health::Serving)),
        );
        assert!(!leaderless.healthy && leaderless.reason.contains("no leader"));
        let halted = Health::Halted {
            reason: "disk".into(),
        };
        let halted = judge(1, 10, &gathered(Some(state(Some(0), 5, 5)), Some(halted)));
        assert!(!halted.healthy && halted.reason.contains("halted: disk"));
        let stopped = judge(1, 10, &gathered(None, Some(Health::Serving)));
        assert!(!stopped.healthy && stopped.reason.contains("stopped"));
    }

    #[test]
    fn the_node_families_name_the_role_and_members() {
        let mut raft = state(Some(2), 7, 7);
        raft.role = Role::Leader;
        raft.match_index = vec![7, 6, 7];
        let mut page = Exposition::new();
        render_node(&mut page, 2, &gathered(Some(raft), Some(Health::Serving)));
        let text = page.finish();
        for line in [
            "rainkv_raft_role{role=\"leader\"} 1",
            "rainkv_raft_role{role=\"follower\"} 0",
            "rainkv_raft_leader_id 2",
            "rainkv_raft_members{kind=\"voter\"} 3",
            "rainkv_raft_match_index{member=\"1\"} 6",
            "rainkv_replica_serving 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
