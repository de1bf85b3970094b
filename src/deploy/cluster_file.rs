//! The cluster configuration file: which nodes there are, where each listens, and the
//! cluster's name and shared token. TOML, read with serde; every mistake is reported with the
//! file's name and, for syntax errors, the line.
//!
//! ```toml
//! [cluster]
//! name = "rainkv-local"
//! token = "change-me"
//! # max_raft_state = 8388608    # snapshot when the Raft state reaches this many bytes and at
//! #                             # least the size of the last snapshot
//!
//! [[node]]
//! id = 0
//! peer = "127.0.0.1:7000"       # Raft traffic between nodes
//! client = "127.0.0.1:7100"     # clerks and rainkv-ctl
//! # metrics = "127.0.0.1:9100"  # optional: HTTP /metrics and /health (`rainkv serve
//! #                             # --metrics ADDR` overrides it)
//!
//! # [transport]                 # optional tuning, all in milliseconds or bytes
//! # call_timeout_ms = 2000
//!
//! # [raft]                      # optional: Raft's timing and features (see RaftConfig)
//! # election_timeout_min_ms = 300
//! # election_timeout_max_ms = 600
//! # heartbeat_ms = 100
//! # pre_vote = true
//! # check_quorum = true
//! # lease_reads = false         # needs check_quorum and clocks that drift under 10 %
//!
//! # [sessions]                  # optional: client sessions (see SessionPolicy)
//! # ttl_secs = 3600             # a session with no write for this long expires
//! # max_sessions = 100000       # past this many, the least recently active expires
//! ```
//!
//! A sharded deployment ([`ShardedFile`](super::sharded_file::ShardedFile)) has the same
//! `[cluster]`, `[tls]`, `[transport]`, `[raft]` and `[sessions]` sections, and instead of
//! top-level `[[node]]` entries the shard controller's nodes and any number of replica groups,
//! each with its `gid` and its nodes (ids 0.. within each group):
//!
//! ```toml
//! [[controller.node]]
//! id = 0
//! peer = "127.0.0.1:7000"
//! client = "127.0.0.1:7100"
//!
//! [[group]]
//! gid = 100
//! [[group.node]]
//! id = 0
//! peer = "127.0.0.1:7010"
//! client = "127.0.0.1:7110"
//! ```
//!
//! [`Deployment::load`](super::sharded_file::Deployment::load) reads either kind;
//! [`ClusterFile::load`] and [`ShardedFile::load`](super::sharded_file::ShardedFile::load)
//! read one kind and explain when the file is of the other.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
#[cfg(feature = "cli")]
use std::net::ToSocketAddrs;
#[cfg(feature = "cli")]
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::actors::raft::RaftConfig;
use crate::actors::rsm::SessionPolicy;
use crate::actors::tcp::{TcpSettings, TlsConfig, HELLO_MAX_FRAME};
use crate::messages::ctrler::Gid;
use crate::messages::raft::Membership;

/// Snapshot threshold when the file names none. A save appends only what changed, so the
/// threshold bounds what a restart replays (8 MiB: tens of milliseconds) and the log held in
/// memory, not the cost of a save; and since a node also waits until the log is as large as
/// its last snapshot, encoding snapshots costs at most about one byte per byte logged.
/// Smaller thresholds spend that encoding, on the thread that applies commands, more often
/// (measured: a quarter MiB made `put_64` snapshot a 1.5 MB state every 1.5 MB of log).
pub const DEFAULT_MAX_RAFT_STATE: usize = 8 << 20;

/// The cluster file, read and validated: the cluster's name and token, its nodes, tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFile {
    /// The cluster's name; connections from another cluster are refused.
    pub name: String,
    /// The shared token every connection must present.
    pub token: String,
    /// Snapshot when a node's Raft state reaches this many bytes.
    pub max_raft_state: usize,
    /// The nodes, in id order (`nodes[i].id == i`).
    pub nodes: Vec<NodeAddrs>,
    /// Transport tuning.
    pub transport: TransportOverrides,
    /// Raft timing and features.
    pub raft: RaftOverrides,
    /// Client sessions' lifetime and cap.
    pub sessions: SessionOverrides,
    /// Mutual TLS: the directory of the cluster's certificates (as `rainkv-ctl certs init`
    /// writes them), relative paths taken from the cluster file's directory; `None`: plain
    /// TCP.
    pub tls: Option<PathBuf>,
}

/// Who presents a certificate: node `id`, or a client (`rainkv-ctl`, the benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsIdentity {
    /// A node, with its own certificate `node-<id>.pem`.
    Node(usize),
    /// A client, with `client.pem`.
    Client,
}

/// The file names in a certificate directory.
pub mod cert_files {
    /// The cluster CA's certificate.
    pub const CA: &str = "ca.pem";
    /// The CA's key (needed only to issue certificates; keep it off the nodes).
    pub const CA_KEY: &str = "ca.key";
    /// Node `id`'s certificate.
    pub fn node_cert(id: usize) -> String {
        format!("node-{id}.pem")
    }
    /// Node `id`'s key.
    pub fn node_key(id: usize) -> String {
        format!("node-{id}.key")
    }
    /// The clients' certificate.
    pub const CLIENT: &str = "client.pem";
    /// The clients' key.
    pub const CLIENT_KEY: &str = "client.key";
}

/// Where one node listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAddrs {
    /// The node's id, its index among the Raft peers.
    pub id: usize,
    /// The port other nodes' Raft peers call.
    pub peer: SocketAddr,
    /// The port clerks and `rainkv-ctl` call.
    pub client: SocketAddr,
    /// The HTTP port serving `/metrics` and `/health`, if any (not part of the contact: no
    /// other node needs it).
    pub metrics: Option<SocketAddr>,
}

impl NodeAddrs {
    /// How a membership names this node's addresses: `peer=ADDR client=ADDR`.
    pub fn contact(&self) -> String {
        format!("peer={} client={}", self.peer, self.client)
    }

    /// Node `id` at the addresses of `contact` (as [`NodeAddrs::contact`] writes it), or what
    /// is wrong with it.
    pub fn from_contact(id: usize, contact: &str) -> Result<NodeAddrs, String> {
        let (mut peer, mut client) = (None, None);
        for part in contact.split_whitespace() {
            let (name, addr) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} in contact {contact:?} is not NAME=ADDR"))?;
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| format!("{name} address {addr:?} of node {id}: {e}"))?;
            match name {
                "peer" => peer = Some(addr),
                "client" => client = Some(addr),
                other => return Err(format!("unknown address {other:?} in {contact:?}")),
            }
        }
        match (peer, client) {
            (Some(peer), Some(client)) => Ok(NodeAddrs {
                id,
                peer,
                client,
                metrics: None,
            }),
            _ => Err(format!(
                "contact {contact:?} of node {id} lacks a peer or a client address"
            )),
        }
    }
}

/// Optional transport tuning (the `[transport]` table); unset fields keep the defaults of
/// [`TcpSettings::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportOverrides {
    /// Largest frame, in bytes.
    pub max_frame_bytes: Option<usize>,
    /// Control-lane call timeout.
    pub call_timeout_ms: Option<u64>,
    /// Bulk-lane call timeout.
    pub bulk_call_timeout_ms: Option<u64>,
    /// Limit on opening a connection.
    pub connect_timeout_ms: Option<u64>,
    /// Limit on a handshake.
    pub handshake_timeout_ms: Option<u64>,
    /// Limit on the arrival of a started frame.
    pub frame_timeout_ms: Option<u64>,
    /// First reconnection back-off.
    pub backoff_min_ms: Option<u64>,
    /// Longest reconnection back-off.
    pub backoff_max_ms: Option<u64>,
    /// Requests this large or larger take the bulk lane.
    pub bulk_threshold_bytes: Option<usize>,
    /// Connections past their handshake a port serves at once.
    pub max_connections: Option<usize>,
    /// Connections still in their handshake a port keeps (a new one closes the oldest).
    pub max_unauthenticated: Option<usize>,
    /// The same, from one IP address.
    pub max_unauthenticated_per_source: Option<usize>,
    /// Bytes that frames over 64 KiB may hold on one port while they are read.
    pub max_buffered_bytes: Option<usize>,
}

impl TransportOverrides {
    /// True if nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == TransportOverrides::default()
    }
}

/// The `[raft]` section: what differs from [`RaftConfig::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftOverrides {
    /// Shortest election timeout.
    pub election_timeout_min_ms: Option<u64>,
    /// Longest election timeout (exclusive).
    pub election_timeout_max_ms: Option<u64>,
    /// Heartbeat interval.
    pub heartbeat_ms: Option<u64>,
    /// Pre-vote.
    pub pre_vote: Option<bool>,
    /// Check-quorum and leader stickiness.
    pub check_quorum: Option<bool>,
    /// Lease reads (off by default; see [`RaftConfig::lease_reads`] for the clock assumption).
    pub lease_reads: Option<bool>,
}

impl RaftOverrides {
    /// True if nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == RaftOverrides::default()
    }

    /// [`RaftConfig::default`] with these overrides.
    pub fn config(&self) -> RaftConfig {
        let mut c = RaftConfig::default();
        let ms = Duration::from_millis;
        if let Some(v) = self.election_timeout_min_ms {
            c.election_timeout.start = ms(v);
        }
        if let Some(v) = self.election_timeout_max_ms {
            c.election_timeout.end = ms(v);
        }
        if let Some(v) = self.heartbeat_ms {
            c.heartbeat_interval = ms(v);
        }
        c.pre_vote = self.pre_vote.unwrap_or(c.pre_vote);
        c.check_quorum = self.check_quorum.unwrap_or(c.check_quorum);
        c.lease_reads = self.lease_reads.unwrap_or(c.lease_reads);
        c
    }
}

/// The `[sessions]` section: what differs from [`SessionPolicy::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionOverrides {
    /// A session with no write for this many seconds expires.
    pub ttl_secs: Option<u64>,
    /// Most live sessions.
    pub max_sessions: Option<usize>,
}

impl SessionOverrides {
    /// True if nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == SessionOverrides::default()
    }

    /// [`SessionPolicy::default`] (the wall clock) with these overrides.
    pub fn policy(&self) -> SessionPolicy {
        let mut policy = SessionPolicy::default();
        if let Some(secs) = self.ttl_secs {
            policy.ttl = Duration::from_secs(secs);
        }
        policy.max_sessions = self.max_sessions.unwrap_or(policy.max_sessions);
        policy
    }
}

/// What is wrong with a cluster file.
#[derive(Debug)]
pub enum ClusterFileError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    Parse {
        /// The file.
        origin: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The file parses but its content is wrong.
    Invalid {
        /// The file.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for ClusterFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterFileError::Read { path, source } => {
                write!(f, "cannot read cluster config {}: {source}", path.display())
            }
            ClusterFileError::Parse { origin, message } => {
                write!(
                    f,
                    "{origin} is not a valid cluster config: {}",
                    message.trim_end()
                )
            }
            ClusterFileError::Invalid { origin, message } => write!(f, "{origin}: {message}"),
        }
    }
}

impl std::error::Error for ClusterFileError {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg(feature = "cli")]
pub(super) struct RawClusterFile {
    cluster: RawCluster,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls: Option<RawTls>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) node: Vec<RawNode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) controller: Option<RawNodes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) group: Vec<RawGroup>,
    #[serde(default, skip_serializing_if = "TransportOverrides::is_empty")]
    transport: TransportOverrides,
    #[serde(default, skip_serializing_if = "RaftOverrides::is_empty")]
    raft: RaftOverrides,
    #[serde(default, skip_serializing_if = "SessionOverrides::is_empty")]
    sessions: SessionOverrides,
}

#[cfg(feature = "cli")]
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    token: String,
    max_raft_state: Option<usize>,
}

#[cfg(feature = "cli")]
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    dir: PathBuf,
}

#[cfg(feature = "cli")]
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNodes {
    #[serde(default)]
    pub(super) node: Vec<RawNode>,
}

#[cfg(feature = "cli")]
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) gid: Gid,
    #[serde(default)]
    pub(super) node: Vec<RawNode>,
}

#[cfg(feature = "cli")]
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    id: usize,
    peer: String,
    client: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metrics: Option<String>,
}

#[cfg(feature = "cli")]
impl RawClusterFile {
    /// Parses `text` into the file's shape; `origin` names it in errors.
    pub(super) fn parse(text: &str, origin: &str) -> Result<RawClusterFile, ClusterFileError> {
        toml::from_str(text).map_err(|e| ClusterFileError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })
    }

    /// Whether it has the sections of a sharded deployment.
    pub(super) fn is_sharded(&self) -> bool {
        self.controller.is_some() || !self.group.is_empty()
    }

    /// The settings every group shares, with `nodes`.
    pub(super) fn common(self, nodes: Vec<NodeAddrs>) -> ClusterFile {
        ClusterFile {
            name: self.cluster.name,
            token: self.cluster.token,
            max_raft_state: self
                .cluster
                .max_raft_state
                .unwrap_or(DEFAULT_MAX_RAFT_STATE),
            nodes,
            transport: self.transport,
            raft: self.raft,
            sessions: self.sessions,
            tls: self.tls.map(|tls| tls.dir),
        }
    }
}

/// The text of the file at `path`.
#[cfg(feature = "cli")]
pub(super) fn read_file(path: &Path) -> Result<String, ClusterFileError> {
    std::fs::read_to_string(path).map_err(|source| ClusterFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl ClusterFile {
    /// The cluster's first membership: every node of the file a voter, with its addresses.
    /// Once the cluster runs, its log is the truth, and the file seeds nothing more.
    pub fn initial_members(&self) -> Membership {
        Membership {
            voters: self
                .nodes
                .iter()
                .map(|node| (node.id, node.contact()))
                .collect(),
            learners: Default::default(),
        }
    }

    /// Reads and validates the file at `path` (with the `cli` feature, which brings `toml`);
    /// a sharded deployment file is refused with a message saying so.
    #[cfg(feature = "cli")]
    pub fn load(path: &Path) -> Result<ClusterFile, ClusterFileError> {
        let mut config = Self::parse(&read_file(path)?, &path.display().to_string())?;
        config.resolve_tls_dir(path);
        Ok(config)
    }

    /// Takes a relative TLS directory from the directory of the file at `path`.
    #[cfg(feature = "cli")]
    pub(super) fn resolve_tls_dir(&mut self, path: &Path) {
        if let (Some(dir), Some(base)) = (&mut self.tls, path.parent()) {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
    }

    /// The TLS identity of `who` from the certificate directory, or `None` if TLS is off;
    /// an error names the file that is missing or wrong.
    pub fn tls_config(&self, who: TlsIdentity) -> Result<Option<TlsConfig>, String> {
        let Some(dir) = &self.tls else {
            return Ok(None);
        };
        let (cert, key) = match who {
            TlsIdentity::Node(id) => (cert_files::node_cert(id), cert_files::node_key(id)),
            TlsIdentity::Client => (
                cert_files::CLIENT.to_string(),
                cert_files::CLIENT_KEY.to_string(),
            ),
        };
        TlsConfig::from_pem_files(&dir.join(cert_files::CA), &dir.join(cert), &dir.join(key))
            .map(Some)
    }

    /// Why this configuration must not run without TLS: an address that is not loopback
    /// (the token would cross a network in the clear); `None` when TLS is on or every
    /// address is loopback.
    pub fn needs_tls(&self) -> Option<String> {
        if self.tls.is_some() {
            return None;
        }
        let exposed = self
            .nodes
            .iter()
            .flat_map(|node| [node.peer, node.client])
            .find(|addr| !addr.ip().is_loopback())?;
        Some(format!(
            "address {exposed} is not loopback and TLS is off: the token would travel in the \
             clear. Add a [tls] section (rainkv-ctl certs init writes the certificates), or \
             pass --insecure"
        ))
    }

    /// Parses and validates `text`; `origin` names it in errors (usually the file name).
    #[cfg(feature = "cli")]
    pub fn parse(text: &str, origin: &str) -> Result<ClusterFile, ClusterFileError> {
        let raw = RawClusterFile::parse(text, origin)?;
        let invalid = |message: String| ClusterFileError::Invalid {
            origin: origin.to_string(),
            message,
        };
        if raw.is_sharded() {
            return Err(invalid(
                "it describes a sharded deployment ([[controller.node]] and [[group]]), not an \
                 unsharded cluster: use the shard commands (rainkv-ctl shard ...)"
                    .into(),
            ));
        }
        let nodes = resolve_nodes(&raw.node, "").map_err(invalid)?;
        let config = raw.common(nodes);
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Checks everything the file format cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("no [[node]] entries: a cluster needs at least one node".into());
        }
        validate_ids(&self.nodes)?;
        unique_addresses(&self.nodes)?;
        self.validate_settings()
    }

    /// Checks the settings every group of a deployment shares: name, token, tuning.
    pub(super) fn validate_settings(&self) -> Result<(), String> {
        // The hello frame carries both; keep them well inside its size limit.
        if self.name.trim().is_empty() || self.name.len() > 256 {
            return Err("cluster.name must be 1 to 256 characters".into());
        }
        if self.token.is_empty() || self.token.len() > HELLO_MAX_FRAME / 4 {
            return Err(format!(
                "cluster.token must be 1 to {} characters",
                HELLO_MAX_FRAME / 4
            ));
        }
        if self.max_raft_state == 0 {
            return Err("cluster.max_raft_state must be positive".into());
        }
        let t = &self.transport;
        if t.max_frame_bytes.is_some_and(|max| max < HELLO_MAX_FRAME) {
            return Err(format!(
                "transport.max_frame_bytes must be at least {HELLO_MAX_FRAME}"
            ));
        }
        let durations = [
            ("call_timeout_ms", t.call_timeout_ms),
            ("bulk_call_timeout_ms", t.bulk_call_timeout_ms),
            ("connect_timeout_ms", t.connect_timeout_ms),
            ("handshake_timeout_ms", t.handshake_timeout_ms),
            ("frame_timeout_ms", t.frame_timeout_ms),
            ("backoff_min_ms", t.backoff_min_ms),
            ("backoff_max_ms", t.backoff_max_ms),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, v)| *v == Some(0)) {
            return Err(format!("transport.{name} must be positive"));
        }
        let limits = [
            ("max_connections", t.max_connections),
            ("max_unauthenticated", t.max_unauthenticated),
            (
                "max_unauthenticated_per_source",
                t.max_unauthenticated_per_source,
            ),
        ];
        if let Some((name, _)) = limits.iter().find(|(_, v)| *v == Some(0)) {
            return Err(format!("transport.{name} must be positive"));
        }
        let max_frame = t
            .max_frame_bytes
            .unwrap_or(TcpSettings::new("", "").max_frame);
        if t.max_buffered_bytes.is_some_and(|b| b < max_frame) {
            return Err(format!(
                "transport.max_buffered_bytes must be at least the maximum frame ({max_frame} bytes)"
            ));
        }
        if self.sessions.ttl_secs == Some(0) || self.sessions.max_sessions == Some(0) {
            return Err("[sessions]: ttl_secs and max_sessions must be positive".into());
        }
        self.raft
            .config()
            .validate()
            .map_err(|e| format!("[raft]: {e}"))
    }

    /// Node `id`'s addresses.
    pub fn node(&self, id: usize) -> Result<&NodeAddrs, ClusterFileError> {
        self.nodes.get(id).ok_or_else(|| ClusterFileError::Invalid {
            origin: "command line".into(),
            message: format!(
                "no node {id} in the cluster config (ids are 0..{})",
                self.nodes.len()
            ),
        })
    }

    /// The transport settings this configuration asks for.
    pub fn tcp_settings(&self) -> TcpSettings {
        let mut s = TcpSettings::new(&self.name, &self.token);
        let t = &self.transport;
        let ms = Duration::from_millis;
        if let Some(v) = t.max_frame_bytes {
            s.max_frame = v;
        }
        if let Some(v) = t.call_timeout_ms {
            s.call_timeout = ms(v);
        }
        if let Some(v) = t.bulk_call_timeout_ms {
            s.bulk_call_timeout = ms(v);
        }
        if let Some(v) = t.connect_timeout_ms {
            s.connect_timeout = ms(v);
        }
        if let Some(v) = t.handshake_timeout_ms {
            s.handshake_timeout = ms(v);
        }
        if let Some(v) = t.frame_timeout_ms {
            s.frame_timeout = ms(v);
        }
        if let Some(v) = t.backoff_min_ms {
            s.backoff_min = ms(v);
        }
        if let Some(v) = t.backoff_max_ms {
            s.backoff_max = ms(v);
        }
        if let Some(v) = t.bulk_threshold_bytes {
            s.bulk_threshold = v;
        }
        if let Some(v) = t.max_connections {
            s.max_connections = v;
        }
        if let Some(v) = t.max_unauthenticated {
            s.max_unauthenticated = v;
        }
        if let Some(v) = t.max_unauthenticated_per_source {
            s.max_unauthenticated_per_source = v;
        }
        if let Some(v) = t.max_buffered_bytes {
            s.max_buffered = v;
        }
        s
    }

    /// The configuration as a TOML file.
    #[cfg(feature = "cli")]
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(&self.raw()).map_err(|e| e.to_string())
    }

    /// The file's shape, with these nodes as top-level `[[node]]` entries.
    #[cfg(feature = "cli")]
    pub(super) fn raw(&self) -> RawClusterFile {
        RawClusterFile {
            cluster: RawCluster {
                name: self.name.clone(),
                token: self.token.clone(),
                max_raft_state: Some(self.max_raft_state),
            },
            node: raw_nodes(&self.nodes),
            controller: None,
            group: Vec::new(),
            transport: self.transport.clone(),
            raft: self.raft.clone(),
            sessions: self.sessions.clone(),
            tls: self.tls.clone().map(|dir| RawTls { dir }),
        }
    }
}

/// Checks that node ids are `0..nodes.len()`, each used once (`nodes` sorted by id).
pub(super) fn validate_ids(nodes: &[NodeAddrs]) -> Result<(), String> {
    for (index, node) in nodes.iter().enumerate() {
        if node.id != index {
            return Err(format!(
                "node ids must be 0..{} with each used once; {}",
                nodes.len(),
                if nodes.iter().filter(|n| n.id == node.id).count() > 1 {
                    format!("id {} appears twice", node.id)
                } else {
                    format!("id {index} is missing")
                }
            ));
        }
    }
    Ok(())
}

/// Checks that no address is used twice among `nodes` (which may span groups).
pub(super) fn unique_addresses<'a>(
    nodes: impl IntoIterator<Item = &'a NodeAddrs>,
) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for node in nodes {
        for addr in [Some(node.peer), Some(node.client), node.metrics]
            .into_iter()
            .flatten()
        {
            if !seen.insert(addr) {
                return Err(format!("address {addr} is used twice"));
            }
        }
    }
    Ok(())
}

/// The nodes of `raw`, their addresses resolved, in id order; errors name `label`'s node.
#[cfg(feature = "cli")]
pub(super) fn resolve_nodes(raw: &[RawNode], label: &str) -> Result<Vec<NodeAddrs>, String> {
    let mut nodes = Vec::with_capacity(raw.len());
    for node in raw {
        let at = |port: &str, addr: &str| {
            resolve(addr).map_err(|e| format!("{label}node {}: {port} address {e}", node.id))
        };
        nodes.push(NodeAddrs {
            id: node.id,
            peer: at("peer", &node.peer)?,
            client: at("client", &node.client)?,
            metrics: node
                .metrics
                .as_deref()
                .map(|a| at("metrics", a))
                .transpose()?,
        });
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

#[cfg(feature = "cli")]
pub(super) fn raw_nodes(nodes: &[NodeAddrs]) -> Vec<RawNode> {
    nodes
        .iter()
        .map(|n| RawNode {
            id: n.id,
            peer: n.peer.to_string(),
            client: n.client.to_string(),
            metrics: n.metrics.map(|addr| addr.to_string()),
        })
        .collect()
}

/// Resolves `host:port` to one socket address.
#[cfg(feature = "cli")]
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let mut found = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr:?} is not a usable host:port ({e})"))?;
    found
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[cluster]
name = "test"
token = "secret"

[[node]]
id = 1
peer = "127.0.0.1:7001"
client = "127.0.0.1:7101"

[[node]]
id = 0
peer = "127.0.0.1:7000"
client = "127.0.0.1:7100"

[transport]
call_timeout_ms = 500
"#;

    fn error_of(text: &str) -> String {
        match ClusterFile::parse(text, "cluster.toml") {
            Ok(config) => panic!("accepted a bad config: {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_file_parses_with_nodes_in_id_order() {
        let config = ClusterFile::parse(GOOD, "cluster.toml").expect("valid");
        assert_eq!(config.name, "test");
        assert_eq!(config.nodes.len(), 2);
        assert_eq!(
            config.nodes[0].peer,
            "127.0.0.1:7000".parse().expect("addr")
        );
        assert_eq!(
            config.nodes[1].client,
            "127.0.0.1:7101".parse().expect("addr")
        );
        assert_eq!(config.max_raft_state, DEFAULT_MAX_RAFT_STATE);
        let settings = config.tcp_settings();
        assert_eq!(settings.call_timeout, Duration::from_millis(500));
        assert_eq!(settings.token, "secret");
    }

    #[test]
    fn a_node_may_have_a_metrics_address() {
        let text = GOOD.replace(
            "client = \"127.0.0.1:7101\"",
            "client = \"127.0.0.1:7101\"\nmetrics = \"127.0.0.1:9101\"",
        );
        let config = ClusterFile::parse(&text, "cluster.toml").expect("valid");
        assert_eq!(config.nodes[0].metrics, None);
        assert_eq!(
            config.nodes[1].metrics,
            Some("127.0.0.1:9101".parse().expect("addr"))
        );
        let again = ClusterFile::parse(&config.to_toml().expect("toml"), "again").expect("valid");
        assert_eq!(again, config);
    }

    #[test]
    fn to_toml_round_trips() {
        let config = ClusterFile::parse(GOOD, "cluster.toml").expect("valid");
        let text = config.to_toml().expect("serialisable");
        let again = ClusterFile::parse(&text, "again").expect("valid");
        assert_eq!(again, config);
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let e = error_of("[cluster]\nname = \"x\"\ntoken = \n");
        assert!(
            e.starts_with("cluster.toml is not a valid cluster config"),
            "{e}"
        );
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let e = error_of("[cluster]\nname = \"x\"\n");
        assert!(e.contains("token"), "{e}");
        let e = error_of(&GOOD.replace("call_timeout_ms", "call_timeout"));
        assert!(e.contains("call_timeout"), "{e}");
    }

    #[test]
    fn content_errors_are_explained() {
        let e = error_of(&GOOD.replace("id = 1", "id = 2"));
        assert!(e.contains("id 1 is missing"), "{e}");
        let e = error_of(&GOOD.replace("id = 1", "id = 0"));
        assert!(e.contains("appears twice"), "{e}");
        let e = error_of(&GOOD.replace("127.0.0.1:7101", "127.0.0.1:7000"));
        assert!(e.contains("used twice"), "{e}");
        let e = error_of(&GOOD.replace("127.0.0.1:7101", "127.0.0.1"));
        assert!(e.contains("node 1: client address"), "{e}");
        let e = error_of(&GOOD.replace(
            "client = \"127.0.0.1:7101\"",
            "client = \"127.0.0.1:7101\"\nmetrics = \"127.0.0.1:7100\"",
        ));
        assert!(e.contains("address 127.0.0.1:7100 is used twice"), "{e}");
        let e = error_of(&GOOD.replace(
            "client = \"127.0.0.1:7101\"",
            "client = \"127.0.0.1:7101\"\nmetrics = \"localhost\"",
        ));
        assert!(e.contains("node 1: metrics address"), "{e}");
        let e = error_of(&GOOD.replace("token = \"secret\"", "token = \"\""));
        assert!(e.contains("cluster.token"), "{e}");
        let e = error_of(&GOOD.replace("call_timeout_ms = 500", "call_timeout_ms = 0"));
        assert!(e.contains("call_timeout_ms must be positive"), "{e}");
        let e = error_of("[cluster]\nname = \"x\"\ntoken = \"t\"\n");
        assert!(e.contains("no [[node]]"), "{e}");
    }

    #[test]
    fn the_raft_section_overrides_the_defaults_and_is_checked() {
        let config = ClusterFile::parse(GOOD, "cluster.toml").expect("valid");
        assert_eq!(config.raft.config(), RaftConfig::default());
        let text = format!("{GOOD}\n[raft]\nlease_reads = true\nheartbeat_ms = 50\n");
        let config = ClusterFile::parse(&text, "cluster.toml").expect("valid");
        let raft = config.raft.config();
        assert!(raft.lease_reads && raft.check_quorum);
        assert_eq!(raft.heartbeat_interval, Duration::from_millis(50));
        let again = ClusterFile::parse(&config.to_toml().expect("toml"), "again").expect("valid");
        assert_eq!(again, config);
        let e = error_of(&format!(
            "{GOOD}\n[raft]\nlease_reads = true\ncheck_quorum = false\n"
        ));
        assert!(
            e.contains("[raft]") && e.contains("lease_reads needs check_quorum"),
            "{e}"
        );
    }

    #[test]
    fn the_sessions_section_overrides_the_defaults_and_is_checked() {
        let config = ClusterFile::parse(GOOD, "cluster.toml").expect("valid");
        assert_eq!(config.sessions.policy().ttl, SessionPolicy::default().ttl);
        let text = format!("{GOOD}\n[sessions]\nttl_secs = 60\nmax_sessions = 10\n");
        let config = ClusterFile::parse(&text, "cluster.toml").expect("valid");
        let policy = config.sessions.policy();
        assert_eq!(
            (policy.ttl, policy.max_sessions),
            (Duration::from_secs(60), 10)
        );
        let again = ClusterFile::parse(&config.to_toml().expect("toml"), "again").expect("valid");
        assert_eq!(again, config);
        let e = error_of(&format!("{GOOD}\n[sessions]\nttl_secs = 0\n"));
        assert!(e.contains("[sessions]"), "{e}");
        let e = error_of(&format!("{GOOD}\n[sessions]\nttl = 5\n"));
        assert!(e.contains("ttl"), "{e}");
    }

    #[test]
    fn a_missing_file_says_which() {
        let e = ClusterFile::load(Path::new("/nonexistent/cluster.toml"))
            .expect_err("no such file")
            .to_string();
        assert!(e.contains("/nonexistent/cluster.toml"), "{e}");
    }
}
