//! One RainKV node on real TCP: its Raft peer, its replicated service and admin service, one
//! [`Link`] to each other node's peer port, and two [`Listener`]s: the peer port serves the
//! "Raft" service to the other nodes of its group, the client port serves the service and
//! "Admin" to clerks and `rainkv-ctl`. The service ([`Service`]) is the KV server of an
//! unsharded cluster ([`KvNode`]), or in a sharded deployment the shard controller
//! ([`CtrlerNode`]) or a replica group's member ([`ShardKvNode`]: its store and migrator, which
//! reaches the controller and other groups through links to their client ports, opened on first
//! use and named by address).
//!
//! With a metrics address, the node counts ([`Metrics`]): its client services and its links
//! to other nodes sit behind counting wrappers ([`MeteredService`], [`MeteredLink`]), and
//! an HTTP port (with the `cli` feature) serves `/metrics` and `/health` from its
//! [`MetricsService`]. Without one, nothing is wrapped and nothing counted.
//!
//! A node about to stop hands its leadership over first ([`TcpNode::hand_off_leadership`]):
//! the cluster then has a new leader after one election started at once, instead of after
//! its followers' election timeouts, and clients barely notice the node leave.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::net::TcpListener;

use super::cluster_file::{ClusterFile, NodeAddrs, TlsIdentity};
use super::sharded_file::{GroupName, ShardedFile};
use super::store::NodeStore;
use crate::actors::admin::Admin;
use crate::actors::client_end::{ClientEnd, EndMaker};
use crate::actors::ctrler::CtrlerNode;
use crate::actors::kv_server::KvNode;
use crate::actors::metered::{MeteredLink, MeteredService};
use crate::actors::metrics::MetricsService;
use crate::actors::raft::{Connector, RaftPeer, RestoreError};
use crate::actors::rsm::ReplicaSetup;
use crate::actors::shardkv::{ShardKvNode, ShardKvSetup};
use crate::actors::tcp::{client_end, Link, Listener, MethodTable, TcpSettings, TlsConfig};
use crate::messages::admin::{ChangeMemberArgs, MembersArgs, StatusArgs, TransferLeaderArgs};
use crate::messages::ctrler::{self, Gid, JoinArgs, LeaveArgs, MoveArgs, QueryArgs};
use crate::messages::kv::{GetArgs, PutAppendArgs, RegisterArgs};
use crate::messages::lifecycle::Stop;
use crate::messages::net::{Dispatch, NetError, Server};
use crate::messages::raft::{
    AppendEntriesArgs, GetState, InstallSnapshotArgs, Membership, RequestVoteArgs, TimeoutNowArgs,
    TransferError, TransferLeadership,
};
use crate::messages::rsm::{GetHealth, Halt, WaitHalt};
use crate::messages::shard::{
    DeleteShardsArgs, PullShardsArgs, ShardGetArgs, ShardPutAppendArgs, ShardStatusArgs,
};
use crate::messages::tcp::{
    Drain, Drained, GetLinkStatus, GetListenerStats, LinkStatus, ListenerStats, SetBlocked,
};
use crate::metrics::Metrics;
use crate::trace::Tracer;

/// The methods served on the peer port: every RPC a Raft peer handles.
pub(crate) fn peer_methods() -> MethodTable {
    MethodTable::new()
        .with::<RequestVoteArgs>()
        .with::<AppendEntriesArgs>()
        .with::<InstallSnapshotArgs>()
        .with::<TimeoutNowArgs>()
}

/// What a node replicates and serves on its client port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// The KV store of an unsharded cluster ("KVServer").
    Kv,
    /// The shard controller ("ShardCtrler").
    Controller,
    /// A member of replica group `gid` ("ShardKV"), which follows the controller whose nodes'
    /// client ports are `controller`.
    Group {
        /// The group's id.
        gid: Gid,
        /// The controller nodes' client addresses.
        controller: Vec<SocketAddr>,
    },
}

impl Service {
    /// The methods served on the client port: the service's and the admin service's.
    pub(crate) fn client_methods(&self) -> MethodTable {
        let table = match self {
            Service::Kv => MethodTable::new()
                .with::<GetArgs>()
                .with::<PutAppendArgs>()
                .with::<RegisterArgs>(),
            Service::Controller => MethodTable::new()
                .with::<JoinArgs>()
                .with::<LeaveArgs>()
                .with::<MoveArgs>()
                .with::<QueryArgs>()
                .with::<ctrler::RegisterArgs>(),
            Service::Group { .. } => MethodTable::new()
                .with::<ShardGetArgs>()
                .with::<ShardPutAppendArgs>()
                .with::<PullShardsArgs>()
                .with::<DeleteShardsArgs>()
                .with::<ShardStatusArgs>(),
        };
        table
            .with::<StatusArgs>()
            .with::<TransferLeaderArgs>()
            .with::<MembersArgs>()
            .with::<ChangeMemberArgs>()
    }
}

/// A running replica of one of the [`Service`]s.
enum Replica {
    Kv(KvNode),
    Controller(CtrlerNode),
    Group(ShardKvNode),
}

impl Replica {
    fn raft(&self) -> &Addr<RaftPeer> {
        match self {
            Replica::Kv(node) => &node.raft,
            Replica::Controller(node) => &node.raft,
            Replica::Group(node) => &node.raft,
        }
    }

    fn health(&self) -> Recipient<GetHealth> {
        match self {
            Replica::Kv(node) => node.rsm.clone().recipient(),
            Replica::Controller(node) => node.rsm.clone().recipient(),
            Replica::Group(node) => node.rsm.clone().recipient(),
        }
    }

    fn halts(&self) -> Recipient<WaitHalt> {
        match self {
            Replica::Kv(node) => node.rsm.clone().recipient(),
            Replica::Controller(node) => node.rsm.clone().recipient(),
            Replica::Group(node) => node.rsm.clone().recipient(),
        }
    }

    /// The client port's service: its name and its actor.
    fn service(&self) -> (&'static str, Recipient<Dispatch>) {
        match self {
            Replica::Kv(node) => ("KVServer", node.kv.clone().recipient()),
            Replica::Controller(node) => ("ShardCtrler", node.ctrler.clone().recipient()),
            Replica::Group(node) => ("ShardKV", node.kv.clone().recipient()),
        }
    }

    fn kill(&self) {
        match self {
            Replica::Kv(node) => node.kill(),
            Replica::Controller(node) => node.kill(),
            Replica::Group(node) => node.kill(),
        }
    }
}

/// Node `id`'s name in a trace (its lane in the timeline): `node<id>`.
pub fn trace_name(id: usize) -> String {
    format!("node{id}")
}

/// How often [`TcpNode::hand_off_leadership`] looks whether the new leader has taken over.
const HANDOFF_POLL: Duration = Duration::from_millis(2);

/// How long [`TcpNode::shutdown`] waits for the Raft peer's last save.
pub const STORAGE_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// What [`TcpNode::hand_off_leadership`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handoff {
    /// The node did not lead: there was nothing to hand over.
    NotLeader,
    /// Another node leads now.
    HandedOver {
        /// The new leader.
        to: usize,
        /// Its term.
        term: u64,
        /// From the request to the transfer until this node knew the new leader.
        took: Duration,
    },
    /// The node led, and leadership was not handed over; why.
    Failed(String),
}

impl fmt::Display for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handoff::NotLeader => write!(f, "not the leader: no leadership to hand over"),
            Handoff::HandedOver { to, term, took } => write!(
                f,
                "handed leadership to node {to} in {} ms (term {term})",
                took.as_millis()
            ),
            Handoff::Failed(why) => write!(f, "did not hand leadership over: {why}"),
        }
    }
}

/// Links by key (a node id, or an address), opened on first use and shared by clones: a
/// node's links to the other nodes' peer ports, shared with the [`Connector`] that opens links
/// to members added while the node runs; and its links to other groups' client ports.
pub(crate) struct Links<K>(Arc<Mutex<BTreeMap<K, Addr<Link>>>>);

impl<K> Clone for Links<K> {
    fn clone(&self) -> Self {
        Links(self.0.clone())
    }
}

impl<K> Default for Links<K> {
    fn default() -> Self {
        Links(Arc::default())
    }
}

impl<K: Ord + Copy> Links<K> {
    /// The link for `key` to `addr`, opened now (tracing its calls to `trace` as calls to
    /// `to`) unless it is open already.
    fn open(
        &self,
        key: K,
        addr: SocketAddr,
        settings: &Arc<TcpSettings>,
        trace: &Tracer,
        to: &str,
    ) -> Addr<Link> {
        let mut links = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        links
            .entry(key)
            .or_insert_with(|| Link::start_traced(addr, settings.clone(), trace.clone(), to))
            .clone()
    }

    fn get(&self, key: K) -> Option<Addr<Link>> {
        let links = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        links.get(&key).cloned()
    }

    fn all(&self) -> Vec<(K, Addr<Link>)> {
        let links = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        links
            .iter()
            .map(|(key, link)| (*key, link.clone()))
            .collect()
    }

    /// Stops every link.
    pub(crate) fn close(&self) {
        for (_, link) in self.all() {
            link.do_send(Stop);
        }
    }
}

impl Links<SocketAddr> {
    /// Makes ends to servers named by their client address (`host:port`, as a sharded
    /// deployment's configs name them), over these links (6.5840's `make_end`).
    pub(crate) fn end_maker(&self, settings: &Arc<TcpSettings>, trace: &Tracer) -> EndMaker {
        let (links, settings, trace) = (self.clone(), settings.clone(), trace.clone());
        std::rc::Rc::new(move |name: &str| {
            let end = match name.parse::<SocketAddr>() {
                Ok(addr) => Ok(client_end(
                    name,
                    &links.open(addr, addr, &settings, &trace, name),
                )),
                Err(_) => Err(NetError::NoSuchEnd(name.to_string())),
            };
            Box::pin(std::future::ready(end))
        })
    }
}

/// Why a node could not start.
#[derive(Debug)]
pub enum NodeError {
    /// A port could not be bound.
    Bind {
        /// Which port ("peer", "client" or "metrics").
        port: &'static str,
        /// Its address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The stored state could not be opened or is corrupt.
    Storage(String),
    /// The configuration has no such node.
    NoSuchNode(usize),
    /// The deployment has no such group (why, naming the groups it has).
    NoSuchGroup(String),
    /// A node asked to join has the id of a node of the cluster file (which is a first
    /// member, not a joining node).
    JoinsWithFileId(usize),
    /// The node's thread or event loop could not be started.
    Runtime(String),
    /// Its TLS identity could not be loaded.
    Tls(String),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Bind { port, addr, source } => {
                write!(f, "cannot listen on the {port} port {addr}: {source}")
            }
            NodeError::Storage(why) => write!(f, "cannot restore the stored state: {why}"),
            NodeError::NoSuchNode(id) => write!(f, "no node {id} in the cluster config"),
            NodeError::NoSuchGroup(why) => write!(f, "{why}"),
            NodeError::JoinsWithFileId(id) => write!(
                f,
                "node {id} is in the cluster file, so it is a first member: a joining node needs a new id"
            ),
            NodeError::Runtime(why) => write!(f, "cannot run the node: {why}"),
            NodeError::Tls(why) => write!(f, "cannot load the node's TLS identity: {why}"),
        }
    }
}

impl std::error::Error for NodeError {}

impl From<RestoreError> for NodeError {
    fn from(e: RestoreError) -> Self {
        NodeError::Storage(e.to_string())
    }
}

/// A node's listening sockets, bound before anything else starts so that a busy port is
/// reported before any state is touched.
pub struct NodeSockets {
    /// The peer port.
    pub peer: TcpListener,
    /// The client port.
    pub client: TcpListener,
    /// The metrics port, if the node has one (a std socket: the HTTP server takes those).
    pub metrics: Option<std::net::TcpListener>,
}

impl NodeSockets {
    /// Takes over two sockets bound elsewhere (for example on another thread): must be
    /// called on the arbiter that will serve them.
    pub fn from_std(
        peer: std::net::TcpListener,
        client: std::net::TcpListener,
    ) -> Result<NodeSockets, NodeError> {
        let adopt = |port: &'static str, socket: std::net::TcpListener| {
            let addr = socket
                .local_addr()
                .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
            socket
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(socket))
                .map_err(|source| NodeError::Bind { port, addr, source })
        };
        Ok(NodeSockets {
            peer: adopt("peer", peer)?,
            client: adopt("client", client)?,
            metrics: None,
        })
    }

    /// Binds the ports of `addrs`: peer, client, and metrics if it has one.
    pub async fn bind(addrs: &NodeAddrs) -> Result<NodeSockets, NodeError> {
        let bind = |port: &'static str, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { port, addr, source })
        };
        let metrics = match addrs.metrics {
            Some(addr) => {
                Some(
                    std::net::TcpListener::bind(addr).map_err(|source| NodeError::Bind {
                        port: "metrics",
                        addr,
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok(NodeSockets {
            peer: bind("peer", addrs.peer).await?,
            client: bind("client", addrs.client).await?,
            metrics,
        })
    }
}

/// The counters of a node's two ports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// The peer port.
    pub peer: ListenerStats,
    /// The client port.
    pub client: ListenerStats,
}

/// Who a node is and what it runs.
struct NodeSetup {
    me: NodeAddrs,
    /// Its group's first members (none for a node that joins a running cluster).
    initial_members: Membership,
    service: Service,
    /// The number of its TLS certificate.
    cert: usize,
}

/// One running node.
pub struct TcpNode {
    id: usize,
    /// How long a leadership handoff may take: two of the longest election timeouts.
    handoff_limit: Duration,
    /// After this long, Raft has given a leadership transfer up: the shortest election
    /// timeout.
    transfer_retry: Duration,
    replica: Replica,
    /// Links to the other nodes' peer ports, by id: the file's nodes from the start, members
    /// added since once the Raft peer first calls them.
    peer_links: Links<usize>,
    /// Links to other groups' client ports (a sharded deployment's controller and replica
    /// groups), by address.
    group_links: Links<SocketAddr>,
    peer_listener: Addr<Listener>,
    client_listener: Addr<Listener>,
    /// What it counts (off without a metrics port).
    metrics: Metrics,
    /// Its metrics service, if it counts.
    metrics_service: Option<Addr<MetricsService>>,
    /// Its HTTP port, if it has one.
    #[cfg(feature = "cli")]
    metrics_port: Option<super::http::MetricsPort>,
}

/// An end named `name` to node `to` over `link`, counted if `metrics` is on.
fn peer_end(name: &str, to: usize, link: &Addr<Link>, metrics: &Metrics) -> ClientEnd {
    if !metrics.is_on() {
        return client_end(name, link);
    }
    let metered = MeteredLink::new(to, link.clone().recipient(), metrics.clone()).start();
    ClientEnd::new(name, metered.recipient())
}

/// `service`, counted if `metrics` is on.
fn metered(service: Recipient<Dispatch>, metrics: &Metrics) -> Recipient<Dispatch> {
    if !metrics.is_on() {
        return service;
    }
    MeteredService::new(service, metrics.clone())
        .start()
        .recipient()
}

impl TcpNode {
    /// Starts node `id` of `config` on `sockets`, restoring from `store`.
    pub fn start(
        config: &ClusterFile,
        id: usize,
        sockets: NodeSockets,
        store: NodeStore,
    ) -> Result<TcpNode, NodeError> {
        TcpNode::start_traced(config, id, sockets, store, &Tracer::off())
    }

    /// As [`TcpNode::start`], tracing to `trace`: its Raft peer's state changes, the calls its
    /// peer links make and the requests its ports serve, under the name [`trace_name`]`(id)`.
    pub fn start_traced(
        config: &ClusterFile,
        id: usize,
        sockets: NodeSockets,
        store: NodeStore,
        trace: &Tracer,
    ) -> Result<TcpNode, NodeError> {
        Self::start_service(config, id, Service::Kv, id, sockets, store, trace)
    }

    /// Starts node `id` of group `group` of the sharded deployment `file`: a controller node,
    /// or a replica group's member that follows the file's controller.
    pub fn start_sharded(
        file: &ShardedFile,
        group: GroupName,
        id: usize,
        sockets: NodeSockets,
        store: NodeStore,
        trace: &Tracer,
    ) -> Result<TcpNode, NodeError> {
        let config = file.group(group).map_err(NodeError::NoSuchGroup)?;
        let service = match group {
            GroupName::Controller => Service::Controller,
            GroupName::Replica(gid) => Service::Group {
                gid,
                controller: file.controller.nodes.iter().map(|n| n.client).collect(),
            },
        };
        let cert = file
            .cert_number(group, id)
            .ok_or(NodeError::NoSuchNode(id))?;
        Self::start_service(&config, id, service, cert, sockets, store, trace)
    }

    /// Starts node `id` of the group whose cluster file (shared settings and the group's
    /// nodes) is `group`, running `service`, with TLS certificate `node-<cert>`; restores from
    /// `store` and traces to `trace` as [`TcpNode::start_traced`] does.
    pub fn start_service(
        group: &ClusterFile,
        id: usize,
        service: Service,
        cert: usize,
        sockets: NodeSockets,
        store: NodeStore,
        trace: &Tracer,
    ) -> Result<TcpNode, NodeError> {
        let me = *group.nodes.get(id).ok_or(NodeError::NoSuchNode(id))?;
        let setup = NodeSetup {
            me,
            initial_members: group.initial_members(),
            service,
            cert,
        };
        Self::run(group, setup, sockets, store, trace)
    }

    /// Starts node `me`, which is not in `config`'s file, to join the running cluster: it
    /// has no members until the leader, which an operator asked to add it as a learner
    /// (`rainkv-ctl member add`), sends it the log or a snapshot. Restarted from a data
    /// directory that holds a membership, it is whatever that membership says.
    pub fn join(
        config: &ClusterFile,
        me: NodeAddrs,
        sockets: NodeSockets,
        store: NodeStore,
    ) -> Result<TcpNode, NodeError> {
        if config.nodes.iter().any(|node| node.id == me.id) {
            return Err(NodeError::JoinsWithFileId(me.id));
        }
        let setup = NodeSetup {
            me,
            initial_members: Membership::default(),
            service: Service::Kv,
            cert: me.id,
        };
        Self::run(config, setup, sockets, store, &Tracer::off())
    }

    fn run(
        config: &ClusterFile,
        setup: NodeSetup,
        sockets: NodeSockets,
        store: NodeStore,
        trace: &Tracer,
    ) -> Result<TcpNode, NodeError> {
        let NodeSetup {
            me,
            initial_members,
            service,
            cert,
        } = setup;
        let id = me.id;
        // A node counts only if it has a port to show the counts on.
        let metrics = if sockets.metrics.is_some() {
            Metrics::on()
        } else {
            Metrics::off()
        };
        let trace = trace.for_node(&trace_name(id));
        let mut settings = config.tcp_settings();
        settings.tls = config
            .tls_config(TlsIdentity::Node(cert))
            .map_err(NodeError::Tls)?;
        let settings = Arc::new(settings);
        let peer_links = Links::default();
        let mut peers = Vec::new();
        for node in config
            .nodes
            .iter()
            .filter(|_| !initial_members.voters.is_empty())
        {
            let link = peer_links.open(node.id, node.peer, &settings, &trace, &trace_name(node.id));
            let name = format!("node-{id}-to-{}", node.id);
            peers.push(peer_end(&name, node.id, &link, &metrics));
        }
        let connect: Connector = {
            let (peer_links, settings, trace) =
                (peer_links.clone(), settings.clone(), trace.clone());
            let metrics = metrics.clone();
            Box::new(
                move |to, contact| match NodeAddrs::from_contact(to, contact) {
                    Ok(addrs) => {
                        let link =
                            peer_links.open(to, addrs.peer, &settings, &trace, &trace_name(to));
                        let name = format!("node-{id}-to-{to}");
                        Some(peer_end(&name, to, &link, &metrics))
                    }
                    Err(why) => {
                        log::error!("node {id}: cannot reach member {to}: {why}");
                        None
                    }
                },
            )
        };
        let raft = config.raft.config();
        let handoff_limit = 2 * raft.election_timeout.end;
        let transfer_retry = raft.election_timeout.start;
        let replica = ReplicaSetup {
            id,
            peers,
            initial_members,
            connect: Some(connect),
            persister: store,
            raft,
            max_raft_state: Some(config.max_raft_state),
            proportional_snapshots: true,
            seed: rand::random(),
            sessions: config.sessions.policy(),
            trace: trace.clone(),
            metrics: metrics.clone(),
        };
        let group_links = Links::default();
        let client_methods = service.client_methods();
        let replica = match service {
            Service::Kv => Replica::Kv(KvNode::start(replica)?),
            Service::Controller => Replica::Controller(CtrlerNode::start(replica)?),
            Service::Group { gid, controller } => {
                let ctrlers = controller
                    .iter()
                    .map(|addr| {
                        let name = addr.to_string();
                        let link = group_links.open(*addr, *addr, &settings, &trace, &name);
                        client_end(&name, &link)
                    })
                    .collect();
                Replica::Group(ShardKvNode::start(ShardKvSetup {
                    replica,
                    gid,
                    ctrlers,
                    make_end: group_links.end_maker(&settings, &trace),
                })?)
            }
        };
        let admin = Admin::new(id, replica.health(), replica.raft().clone()).start();
        let peer_services = Server::new().with_service("Raft", replica.raft().clone().recipient());
        let (name, service) = replica.service();
        let client_services = Server::new()
            .with_service(name, metered(service, &metrics))
            .with_service("Admin", metered(admin.recipient(), &metrics));
        let addrs = me;
        // Clients' certificates are good on the client port only.
        let peer_port_settings = Arc::new(TcpSettings {
            tls: settings.tls.as_ref().map(TlsConfig::nodes_only),
            ..(*settings).clone()
        });
        let listen = |socket: TcpListener, services, methods, port: &'static str| {
            let (addr, settings) = if port == "peer" {
                (addrs.peer, &peer_port_settings)
            } else {
                (addrs.client, &settings)
            };
            let label = format!("node {id} {port} port");
            Listener::start_traced(
                socket,
                services,
                methods,
                settings.clone(),
                &label,
                trace.clone(),
            )
            .map_err(|source| NodeError::Bind { port, addr, source })
        };
        let peer_listener = listen(sockets.peer, peer_services, peer_methods(), "peer")?;
        let client_listener = listen(sockets.client, client_services, client_methods, "client")?;
        let metrics_service = metrics.is_on().then(|| {
            let ports = vec![
                ("peer", peer_listener.clone().recipient()),
                ("client", client_listener.clone().recipient()),
            ];
            let raft = replica.raft().clone();
            MetricsService::new(id, metrics.clone(), raft, replica.health(), ports).start()
        });
        #[cfg(feature = "cli")]
        let metrics_port = match (sockets.metrics, &metrics_service) {
            (Some(socket), Some(service)) => {
                let addr = socket
                    .local_addr()
                    .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
                let port =
                    super::http::MetricsPort::start(socket, service.clone()).map_err(|source| {
                        NodeError::Bind {
                            port: "metrics",
                            addr,
                            source,
                        }
                    })?;
                Some(port)
            }
            _ => None,
        };
        #[cfg(not(feature = "cli"))]
        if sockets.metrics.is_some() {
            log::warn!("node {id}: no HTTP metrics port without the `cli` feature");
        }
        log::info!("node {id} of cluster {:?} started", config.name);
        Ok(TcpNode {
            id,
            handoff_limit,
            transfer_retry,
            replica,
            peer_links,
            group_links,
            peer_listener,
            client_listener,
            metrics,
            metrics_service,
            #[cfg(feature = "cli")]
            metrics_port,
        })
    }

    /// What it counts (off unless it has a metrics port).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Its metrics service (`/metrics` and `/health` without HTTP), if it has a metrics port.
    pub fn metrics_service(&self) -> Option<&Addr<MetricsService>> {
        self.metrics_service.as_ref()
    }

    /// Its Raft peer.
    pub fn raft(&self) -> &Addr<RaftPeer> {
        self.replica.raft()
    }

    /// Resolves when the node's replica halts, with why, or with `None` if it stops without
    /// halting (the node was shut down).
    pub async fn halted(&self) -> Option<Halt> {
        self.replica.halts().send(WaitHalt).await.ok().flatten()
    }

    /// The counters of both ports (zero for a port that has stopped).
    pub async fn port_stats(&self) -> PortStats {
        PortStats {
            peer: self
                .peer_listener
                .send(GetListenerStats)
                .await
                .unwrap_or_default(),
            client: self
                .client_listener
                .send(GetListenerStats)
                .await
                .unwrap_or_default(),
        }
    }

    /// How this node's link to node `to`'s peer port stands.
    pub async fn peer_link_status(&self, to: usize) -> Option<LinkStatus> {
        self.peer_links.get(to)?.send(GetLinkStatus).await.ok()
    }

    /// Cuts the node off from (`true`) or reconnects it to (`false`) the other nodes' peer
    /// ports, on its side only: calls it makes fail at once.
    pub fn block_peers(&self, blocked: bool) {
        for (j, link) in self.peer_links.all() {
            if j != self.id {
                link.do_send(SetBlocked(blocked));
            }
        }
    }

    /// Blocks or unblocks this node's calls to node `to`.
    pub fn block_peer(&self, to: usize, blocked: bool) {
        if let Some(link) = self.peer_links.get(to) {
            link.do_send(SetBlocked(blocked));
        }
    }

    /// If this node leads, hands leadership to the most up-to-date follower it can reach (the
    /// highest `match_index` among those its peer link is connected to), and waits until it
    /// knows the new leader, for at most two of the longest election timeouts. The transfer is
    /// Raft's (thesis §3.10): the leader stops taking proposals, brings the follower's log up
    /// to date and tells it to campaign at once, so the cluster has its next leader one
    /// election later, with no election timeout to sit out. Raft gives a transfer up after the
    /// shortest election timeout (a follower too slow to catch up, its disk stalled); while
    /// time remains, this node then asks again, to whichever follower is best placed by then.
    /// Logs the outcome; meant to be called before [`TcpNode::shutdown`].
    pub async fn hand_off_leadership(&self) -> Handoff {
        let outcome = self.try_hand_off().await;
        match &outcome {
            Handoff::Failed(_) => log::warn!("node {}: {outcome}", self.id),
            Handoff::NotLeader | Handoff::HandedOver { .. } => {
                log::info!("node {}: {outcome}", self.id)
            }
        }
        outcome
    }

    async fn try_hand_off(&self) -> Handoff {
        let raft = self.replica.raft();
        let Ok(first) = raft.send(GetState).await else {
            return Handoff::NotLeader;
        };
        if !first.is_leader() {
            return Handoff::NotLeader;
        }
        let started = Instant::now();
        // The follower last asked to take over, and when.
        let mut asked: Option<(usize, Instant)> = None;
        loop {
            let Ok(now) = raft.send(GetState).await else {
                return Handoff::Failed("the Raft peer stopped during the handoff".into());
            };
            if let Some(to) = now
                .leader
                .filter(|&l| l != self.id && now.term > first.term)
            {
                return Handoff::HandedOver {
                    to,
                    term: now.term,
                    took: started.elapsed(),
                };
            }
            if started.elapsed() >= self.handoff_limit {
                let why = match asked {
                    Some((to, _)) if now.is_leader() => format!(
                        "node {to} did not take over within {:?}",
                        self.handoff_limit
                    ),
                    _ => format!(
                        "stepped down, but saw no new leader within {:?}",
                        self.handoff_limit
                    ),
                };
                return Handoff::Failed(why);
            }
            let due = match asked {
                None => true,
                // Raft has given up by now, or the follower went away.
                Some((to, at)) => at.elapsed() >= self.transfer_retry || !self.reaches(to).await,
            };
            if now.is_leader() && due {
                // Stopping with the rest of the cluster ends here, without waiting the limit.
                let Some(to) = self.best_follower(&now.match_index).await else {
                    return Handoff::Failed("no follower is reachable".into());
                };
                match raft.send(TransferLeadership { to }).await {
                    Ok(Ok(())) => asked = Some((to, Instant::now())),
                    // Deposed since it said it leads: the next look tells by whom.
                    Ok(Err(TransferError::NotLeader(_))) => {}
                    Ok(Err(refused)) => return Handoff::Failed(format!("Raft refused: {refused}")),
                    Err(_) => return Handoff::Failed("the Raft peer has stopped".into()),
                }
            }
            tokio::time::sleep(HANDOFF_POLL).await;
        }
    }

    /// The follower with the highest match index (it needs the least catching up) among
    /// those this node reaches; ties go to the lowest id.
    async fn best_follower(&self, match_index: &[u64]) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (j, &matched) in match_index.iter().enumerate() {
            if j != self.id && best.is_none_or(|(m, _)| matched > m) && self.reaches(j).await {
                best = Some((matched, j));
            }
        }
        best.map(|(_, j)| j)
    }

    /// Whether this node's link to node `j`'s peer port is connected.
    async fn reaches(&self, j: usize) -> bool {
        self.peer_link_status(j)
            .await
            .is_some_and(|link| link.control == "up")
    }

    /// Drains the client port (a graceful shutdown's first step): the port closes, so clients
    /// go to other nodes, and the requests already in flight are answered, for at most
    /// `limit`; Raft goes on meanwhile, so writes in flight on a leader commit. Logs the
    /// outcome; meant to be called before [`TcpNode::hand_off_leadership`].
    pub async fn drain_clients(&self, limit: Duration) -> Drained {
        let drained = self
            .client_listener
            .send(Drain { limit })
            .await
            .unwrap_or_default();
        log::info!(
            "node {}: drained the client port: {} request(s) were in flight, {} cut off",
            self.id,
            drained.in_flight,
            drained.cut
        );
        drained
    }

    /// Stops the node: both ports close (callers see the connection drop), its outgoing
    /// connections close, and its Raft peer and services stop. Returns once the ports are
    /// closed and the Raft peer's storage has finished its last save (or after
    /// [`STORAGE_FLUSH_LIMIT`]), so the same addresses and files can be used again.
    pub async fn shutdown(&self) {
        #[cfg(feature = "cli")]
        if let Some(port) = &self.metrics_port {
            port.stop().await;
        }
        for listener in [&self.peer_listener, &self.client_listener] {
            // An already stopped listener has closed its port: nothing to wait for.
            let _ = listener.send(Stop).await;
        }
        self.peer_links.close();
        self.group_links.close();
        self.replica.kill();
        // The peer's storage thread is joined when the peer is dropped, after the save in
        // flight; the peer's mailbox closes in the same drop.
        let raft = self.replica.raft();
        let started = Instant::now();
        while raft.connected() && started.elapsed() < STORAGE_FLUSH_LIMIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if raft.connected() {
            log::warn!(
                "node {}: its Raft peer had not stopped after {STORAGE_FLUSH_LIMIT:?}",
                self.id
            );
        }
        log::info!("node {} stopped", self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::net::Rpc;

    #[test]
    fn the_peer_port_serves_every_raft_rpc() {
        // A method missing here is refused as unknown over TCP alone: the simulated network
        // has no table, so only the process tests would notice.
        let methods = peer_methods();
        for method in [
            RequestVoteArgs::METHOD,
            AppendEntriesArgs::METHOD,
            InstallSnapshotArgs::METHOD,
            TimeoutNowArgs::METHOD,
        ] {
            assert_eq!(methods.resolve(method), Some(method), "{method}");
        }
    }
}
