//! A whole cluster inside this process, on loopback TCP: what the demo, the local benchmark and
//! the TCP tests run. Each node is a real [`TcpNode`] with its own ports and its own thread
//! (an actix `Arbiter`), as if it were a process of its own; killing one closes its ports and
//! connections and stops its thread, as a crash would, and restarting it binds the same ports
//! again and reopens its store.
//!
//! With a recording tracer ([`LocalOptions::trace`]) the nodes and the client trace their
//! messages and Raft states, and the cluster traces the crashes, restarts and cuts it makes.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::Arbiter;
use tokio::sync::oneshot;

use super::client::ClusterClient;
use super::cluster_file::{
    ClusterFile, NodeAddrs, RaftOverrides, SessionOverrides, TransportOverrides,
    DEFAULT_MAX_RAFT_STATE,
};
use super::node::{trace_name, NodeError, NodeSockets, TcpNode};
use super::store::{open_store, NodeStore};
use crate::messages::raft::GetState;
use crate::messages::raft::Role;
use crate::trace::{EventKind, Tracer};

/// How to build a local cluster.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Snapshot threshold of every node.
    pub max_raft_state: usize,
    /// Transport tuning.
    pub transport: TransportOverrides,
    /// Where the cluster's trace events go (off by default).
    pub trace: Tracer,
    /// Mutual TLS from this certificate directory (as `rainkv-ctl certs init` writes it,
    /// with at least `nodes` node certificates); `None`: plain TCP.
    pub tls: Option<PathBuf>,
    /// Give every node a metrics port (on loopback), so it counts ([`TcpNode::metrics`]).
    pub metrics: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            nodes: 3,
            max_raft_state: DEFAULT_MAX_RAFT_STATE,
            transport: TransportOverrides::default(),
            trace: Tracer::off(),
            tls: None,
            metrics: false,
        }
    }
}

/// A node and the thread it runs on.
pub(super) struct RunningNode {
    pub(super) node: TcpNode,
    arbiter: Arbiter,
}

impl RunningNode {
    /// Stops the node (its ports, its connections, its thread) and waits for its thread, so
    /// a restart never shares its files with it; `name` names it in a log line if the thread
    /// panicked.
    pub(super) async fn stop(self, name: &str) {
        self.node.shutdown().await;
        self.arbiter.stop();
        if self.arbiter.join().is_err() {
            log::error!("{name}'s thread panicked");
        }
    }

    /// Stops its thread without waiting (for `Drop`).
    pub(super) fn abandon(&self) {
        self.arbiter.stop();
    }
}

/// A cluster of [`TcpNode`]s in this process, on 127.0.0.1 ports chosen by the system.
pub struct LocalCluster {
    config: ClusterFile,
    nodes: Vec<Option<RunningNode>>,
    data_dirs: Vec<PathBuf>,
    client: ClusterClient,
    trace: Tracer,
}

pub(super) fn bind(port: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).map_err(|source| NodeError::Bind { port, addr, source })
}

pub(super) fn local_addr(
    port: &'static str,
    socket: &TcpListener,
) -> Result<SocketAddr, NodeError> {
    socket.local_addr().map_err(|source| NodeError::Bind {
        port,
        addr: ([127, 0, 0, 1], 0).into(),
        source,
    })
}

/// Starts node `id` of `config` on a thread of its own, serving the two sockets, and a
/// metrics port on the file's address for it if it has one.
async fn launch(
    config: &ClusterFile,
    id: usize,
    sockets: (TcpListener, TcpListener),
    store: NodeStore,
    trace: &Tracer,
) -> Result<RunningNode, NodeError> {
    let metrics = match config.node(id).ok().and_then(|addrs| addrs.metrics) {
        Some(addr) => Some(bind("metrics", addr)?),
        None => None,
    };
    let (trace, config) = (trace.clone(), config.clone());
    let name = format!("node {id}");
    launch_with(&name, sockets, move |mut sockets| {
        sockets.metrics = metrics;
        TcpNode::start_traced(&config, id, sockets, store, &trace)
    })
    .await
}

/// Starts the node `start` makes (`name` in errors) on a thread of its own, serving the two
/// sockets.
pub(super) async fn launch_with(
    name: &str,
    (peer, client): (TcpListener, TcpListener),
    start: impl FnOnce(NodeSockets) -> Result<TcpNode, NodeError> + Send + 'static,
) -> Result<RunningNode, NodeError> {
    let arbiter = Arbiter::try_new().map_err(|e| NodeError::Runtime(e.to_string()))?;
    let (started, result) = oneshot::channel();
    let sent = arbiter.spawn(async move {
        let node = NodeSockets::from_std(peer, client).and_then(start);
        // If nobody waits any more, the node is dropped with its thread.
        let _ = started.send(node);
    });
    let stopped = || NodeError::Runtime(format!("{name}'s thread stopped while starting"));
    if !sent {
        return Err(stopped());
    }
    match result.await {
        Ok(Ok(node)) => Ok(RunningNode { node, arbiter }),
        Ok(Err(e)) => {
            arbiter.stop();
            Err(e)
        }
        Err(_) => {
            arbiter.stop();
            Err(stopped())
        }
    }
}

impl LocalCluster {
    /// Starts the cluster with a random token.
    pub async fn start(options: LocalOptions) -> Result<LocalCluster, NodeError> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut sockets = Vec::with_capacity(options.nodes);
        let mut nodes = Vec::with_capacity(options.nodes);
        for id in 0..options.nodes {
            let (peer, client) = (bind("peer", any)?, bind("client", any)?);
            // Picked now, bound again by the node (and by its restarts).
            let metrics = match options.metrics {
                true => Some(local_addr("metrics", &bind("metrics", any)?)?),
                false => None,
            };
            nodes.push(NodeAddrs {
                id,
                peer: local_addr("peer", &peer)?,
                client: local_addr("client", &client)?,
                metrics,
            });
            sockets.push((peer, client));
        }
        let config = ClusterFile {
            name: "rainkv-local".to_string(),
            token: format!("{:032x}", rand::random::<u128>()),
            max_raft_state: options.max_raft_state,
            nodes,
            transport: options.transport,
            raft: RaftOverrides::default(),
            sessions: SessionOverrides::default(),
            tls: options.tls,
        };
        let cluster = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let data_dirs: Vec<PathBuf> = (0..options.nodes)
            .map(|id| {
                let name = format!("rainkv-local-{}-{cluster}-node-{id}", std::process::id());
                let dir = std::env::temp_dir().join(name);
                // A fresh cluster starts from empty directories.
                let _ = std::fs::remove_dir_all(&dir);
                dir
            })
            .collect();
        let mut cluster = LocalCluster {
            client: ClusterClient::connect_traced(&config, &options.trace),
            trace: options.trace.clone(),
            config,
            nodes: Vec::with_capacity(options.nodes),
            data_dirs,
        };
        for (id, sockets) in sockets.into_iter().enumerate() {
            let store = open_store(&cluster.data_dirs[id])
                .map_err(|e| NodeError::Storage(e.to_string()))?;
            let node = launch(&cluster.config, id, sockets, store, &cluster.trace).await?;
            cluster.nodes.push(Some(node));
        }
        Ok(cluster)
    }

    /// The cluster's configuration (addresses, name, token).
    pub fn config(&self) -> &ClusterFile {
        &self.config
    }

    /// A client of the cluster (shared links to every client port).
    pub fn client(&self) -> &ClusterClient {
        &self.client
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.config.nodes.len()
    }

    /// True if the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.config.nodes.is_empty()
    }

    /// Node `i`, if it is running.
    pub fn node(&self, i: usize) -> Option<&TcpNode> {
        self.nodes.get(i).and_then(Option::as_ref).map(|r| &r.node)
    }

    /// Kills node `i`: its ports and connections close and its thread stops.
    pub async fn kill(&mut self, i: usize) {
        if self.node(i).is_some() {
            self.trace.emit(|| EventKind::Crash {
                node: trace_name(i),
            });
        }
        self.stop(i).await;
    }

    /// Stops node `i` (its ports, its connections, its thread); [`LocalCluster::kill`]
    /// without the trace event: the end of the run is no crash.
    async fn stop(&mut self, i: usize) {
        if let Some(running) = self.nodes.get_mut(i).and_then(Option::take) {
            running.stop(&format!("node {i}")).await;
        }
    }

    /// Restarts a killed node `i` on its old ports, from what its store last saved.
    pub async fn restart(&mut self, i: usize) -> Result<(), NodeError> {
        if self.node(i).is_some() {
            return Ok(());
        }
        let addrs = *self.config.node(i).map_err(|_| NodeError::NoSuchNode(i))?;
        let sockets = (bind("peer", addrs.peer)?, bind("client", addrs.client)?);
        // The killed instance's thread has ended: nothing else writes to the directory.
        let store =
            open_store(&self.data_dirs[i]).map_err(|e| NodeError::Storage(e.to_string()))?;
        let node = launch(&self.config, i, sockets, store, &self.trace).await?;
        self.nodes[i] = Some(node);
        self.trace.emit(|| EventKind::Restart {
            node: trace_name(i),
        });
        Ok(())
    }

    /// Cuts node `i` off from the other nodes (`true`) or heals it (`false`): calls between
    /// it and them fail in both directions. Clients still reach it, as in 6.5840's partitions.
    pub fn isolate(&self, i: usize, cut: bool) {
        for j in (0..self.len()).filter(|&j| j != i) {
            self.trace.emit(|| EventKind::Link {
                a: trace_name(i),
                b: trace_name(j),
                up: !cut,
                one_way: false,
            });
        }
        for j in 0..self.len() {
            let Some(node) = self.node(j) else { continue };
            if j == i {
                node.block_peers(cut);
            } else {
                node.block_peer(i, cut);
            }
        }
    }

    /// The running node that believes it is leader in the highest term, if any.
    pub async fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for i in 0..self.len() {
            let Some(node) = self.node(i) else { continue };
            if let Ok(state) = node.raft().send(GetState).await {
                if state.role == Role::Leader && best.is_none_or(|(term, _)| state.term > term) {
                    best = Some((state.term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Stops every node and the client's links.
    pub async fn shutdown(&mut self) {
        self.client.close();
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

impl Drop for LocalCluster {
    /// A cluster dropped without [`LocalCluster::shutdown`] still stops its threads; its data
    /// directories are removed.
    fn drop(&mut self) {
        for running in self.nodes.iter().flatten() {
            running.abandon();
        }
        for dir in &self.data_dirs {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                log::debug!("cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// Numbers the local clusters of this process, so each gets its own data directories.
static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);
