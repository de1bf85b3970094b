//! A whole cluster inside this process, on loopback TCP: what the demo, the local benchmark and
//! the TCP tests run. Each node is a real [`TcpNode`] with its own ports; killing one closes
//! its ports and connections as a crash would, and restarting it binds the same ports again
//! and reopens its store.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use super::client::ClusterClient;
use super::config::{ClusterConfig, NodeAddrs, TransportOverrides, DEFAULT_MAX_RAFT_STATE};
use super::node::{NodeError, NodeSockets, TcpNode};
use super::store::{open_store, reopen_store, NodeStore};
use crate::messages::admin::NodeRole;
use crate::messages::raft::GetState;

/// How to build a local cluster.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Snapshot threshold of every node.
    pub max_raft_state: usize,
    /// Transport tuning.
    pub transport: TransportOverrides,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            nodes: 3,
            max_raft_state: DEFAULT_MAX_RAFT_STATE,
            transport: TransportOverrides::default(),
        }
    }
}

/// A cluster of [`TcpNode`]s in this process, on 127.0.0.1 ports chosen by the system.
pub struct LocalCluster {
    config: ClusterConfig,
    nodes: Vec<Option<TcpNode>>,
    stores: Vec<NodeStore>,
    data_dirs: Vec<PathBuf>,
    client: ClusterClient,
}

async fn bind_any() -> Result<TcpListener, NodeError> {
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind {
            port: "loopback",
            addr,
            source,
        })
}

fn local_addr(socket: &TcpListener) -> Result<SocketAddr, NodeError> {
    socket.local_addr().map_err(|source| NodeError::Bind {
        port: "loopback",
        addr: ([127, 0, 0, 1], 0).into(),
        source,
    })
}

impl LocalCluster {
    /// Starts the cluster with a random token.
    pub async fn start(options: LocalOptions) -> Result<LocalCluster, NodeError> {
        let mut sockets = Vec::with_capacity(options.nodes);
        let mut nodes = Vec::with_capacity(options.nodes);
        for id in 0..options.nodes {
            let socket = NodeSockets {
                peer: bind_any().await?,
                client: bind_any().await?,
            };
            nodes.push(NodeAddrs {
                id,
                peer: local_addr(&socket.peer)?,
                client: local_addr(&socket.client)?,
            });
            sockets.push(socket);
        }
        let config = ClusterConfig {
            name: "rainkv-local".to_string(),
            token: format!("{:032x}", rand::random::<u128>()),
            max_raft_state: options.max_raft_state,
            nodes,
            transport: options.transport,
        };
        let data_dirs: Vec<PathBuf> = (0..options.nodes)
            .map(|id| {
                std::env::temp_dir().join(format!("rainkv-local-{}-node-{id}", std::process::id()))
            })
            .collect();
        let mut stores = Vec::with_capacity(options.nodes);
        let mut running = Vec::with_capacity(options.nodes);
        for (id, socket) in sockets.into_iter().enumerate() {
            let store =
                open_store(&data_dirs[id]).map_err(|e| NodeError::Storage(e.to_string()))?;
            running.push(Some(TcpNode::start(&config, id, socket, store.clone())?));
            stores.push(store);
        }
        let client = ClusterClient::connect(&config);
        Ok(LocalCluster {
            config,
            nodes: running,
            stores,
            data_dirs,
            client,
        })
    }

    /// The cluster's configuration (addresses, name, token).
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// A client of the cluster (shared links to every client port).
    pub fn client(&self) -> &ClusterClient {
        &self.client
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`, if it is running.
    pub fn node(&self, i: usize) -> Option<&TcpNode> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// Kills node `i`: its ports and connections close and its actors stop.
    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i).and_then(Option::take) {
            node.shutdown().await;
        }
    }

    /// Restarts a killed node `i` on its old ports, from what its store last saved.
    pub async fn restart(&mut self, i: usize) -> Result<(), NodeError> {
        if self.node(i).is_some() {
            return Ok(());
        }
        let addrs = *self.config.node(i).map_err(|_| NodeError::NoSuchNode(i))?;
        let sockets = NodeSockets::bind(&addrs).await?;
        let store = reopen_store(&self.stores[i], &self.data_dirs[i])
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let node = TcpNode::start(&self.config, i, sockets, store.clone())?;
        self.stores[i] = store;
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Cuts node `i` off from the other nodes (`true`) or heals it (`false`): calls between
    /// it and them fail in both directions. Clients still reach it, as in 6.5840's partitions.
    pub fn isolate(&self, i: usize, cut: bool) {
        for (j, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
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
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            if let Ok(state) = node.kv().raft.send(GetState).await {
                if NodeRole::from(state.role) == NodeRole::Leader
                    && best.is_none_or(|(term, _)| state.term > term)
                {
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
            self.kill(i).await;
        }
    }
}
