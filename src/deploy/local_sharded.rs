//! A whole sharded deployment inside this process, on loopback TCP: a controller group and
//! replica groups, every node a real [`TcpNode`] on a thread of its own with its own ports and
//! data directory (as [`super::local`] does for one group), for a one-process sharded demo or
//! benchmark and for tests. Killing a node closes its ports and stops its thread, as a crash
//! would; restarting it binds the same ports and reopens its data directory.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use super::cluster_file::{
    ClusterFile, NodeAddrs, RaftOverrides, SessionOverrides, TransportOverrides,
    DEFAULT_MAX_RAFT_STATE,
};
use super::local::{bind, launch_with, local_addr, RunningNode};
use super::node::{NodeError, TcpNode};
use super::sharded_file::{GroupName, ReplicaGroup, ShardedFile};
use super::store::open_store;
use crate::messages::ctrler::Gid;
use crate::trace::Tracer;

/// A sharded deployment of [`TcpNode`]s in this process, on 127.0.0.1 ports chosen by the
/// system.
pub struct LocalSharded {
    file: ShardedFile,
    nodes: BTreeMap<(GroupName, usize), RunningNode>,
    data_root: PathBuf,
}

impl LocalSharded {
    /// Starts a controller group of `nodes` nodes and a replica group of `nodes` nodes for
    /// each of `gids` (none joined yet: join them through the controller), with a random
    /// token and `raft` timing, keeping data under a fresh directory of the system's temporary
    /// directory.
    pub async fn start(
        gids: &[Gid],
        nodes: usize,
        raft: RaftOverrides,
    ) -> Result<LocalSharded, NodeError> {
        Self::start_with(gids, nodes, raft, TransportOverrides::default()).await
    }

    /// [`LocalSharded::start`] with `transport` settings (larger frames, for large shards).
    pub async fn start_with(
        gids: &[Gid],
        nodes: usize,
        raft: RaftOverrides,
        transport: TransportOverrides,
    ) -> Result<LocalSharded, NodeError> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut sockets: BTreeMap<(GroupName, usize), (TcpListener, TcpListener)> = BTreeMap::new();
        let mut group = |name: GroupName| -> Result<Vec<NodeAddrs>, NodeError> {
            (0..nodes)
                .map(|id| {
                    let (peer, client) = (bind("peer", any)?, bind("client", any)?);
                    let addrs = NodeAddrs {
                        id,
                        peer: local_addr("peer", &peer)?,
                        client: local_addr("client", &client)?,
                        metrics: None,
                    };
                    sockets.insert((name, id), (peer, client));
                    Ok(addrs)
                })
                .collect()
        };
        let controller = ClusterFile {
            name: "rainkv-local-sharded".to_string(),
            token: format!("{:032x}", rand::random::<u128>()),
            max_raft_state: DEFAULT_MAX_RAFT_STATE,
            nodes: group(GroupName::Controller)?,
            transport,
            raft,
            sessions: SessionOverrides::default(),
            tls: None,
        };
        let mut groups = Vec::new();
        for &gid in gids {
            let nodes = group(GroupName::Replica(gid))?;
            groups.push(ReplicaGroup { gid, nodes });
        }
        let file = ShardedFile { controller, groups };
        let data_root = std::env::temp_dir().join(format!(
            "rainkv-local-sharded-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut deployment = LocalSharded {
            file,
            nodes: BTreeMap::new(),
            data_root,
        };
        for ((name, id), sockets) in sockets {
            deployment.launch(name, id, sockets).await?;
        }
        Ok(deployment)
    }

    /// The deployment's file (addresses, name, token), as a client needs it.
    pub fn file(&self) -> &ShardedFile {
        &self.file
    }

    /// Node `id` of group `group`, if it is running.
    pub fn node(&self, group: GroupName, id: usize) -> Option<&TcpNode> {
        self.nodes.get(&(group, id)).map(|running| &running.node)
    }

    fn data_dir(&self, group: GroupName, id: usize) -> PathBuf {
        let name = match group {
            GroupName::Controller => format!("controller-{id}"),
            GroupName::Replica(gid) => format!("g{gid}-{id}"),
        };
        self.data_root.join(name)
    }

    async fn launch(
        &mut self,
        group: GroupName,
        id: usize,
        sockets: (TcpListener, TcpListener),
    ) -> Result<(), NodeError> {
        let store =
            open_store(&self.data_dir(group, id)).map_err(|e| NodeError::Storage(e.to_string()))?;
        let file = self.file.clone();
        let name = format!("node {id} of {group}");
        let running = launch_with(&name, sockets, move |sockets| {
            TcpNode::start_sharded(&file, group, id, sockets, store, &Tracer::off())
        })
        .await?;
        self.nodes.insert((group, id), running);
        Ok(())
    }

    /// Kills node `id` of `group`: its ports and connections close and its thread stops.
    pub async fn kill(&mut self, group: GroupName, id: usize) {
        if let Some(running) = self.nodes.remove(&(group, id)) {
            running.stop(&format!("node {id} of {group}")).await;
        }
    }

    /// Restarts a killed node on its old ports, from what its data directory holds.
    pub async fn restart(&mut self, group: GroupName, id: usize) -> Result<(), NodeError> {
        if self.node(group, id).is_some() {
            return Ok(());
        }
        let config = self.file.group(group).map_err(NodeError::NoSuchGroup)?;
        let addrs = *config.nodes.get(id).ok_or(NodeError::NoSuchNode(id))?;
        let sockets = (bind("peer", addrs.peer)?, bind("client", addrs.client)?);
        self.launch(group, id, sockets).await
    }

    /// Stops every node.
    pub async fn shutdown(&mut self) {
        for ((group, id), running) in std::mem::take(&mut self.nodes) {
            running.stop(&format!("node {id} of {group}")).await;
        }
    }
}

impl Drop for LocalSharded {
    /// A deployment dropped without [`LocalSharded::shutdown`] still stops its threads; its
    /// data directories are removed.
    fn drop(&mut self) {
        for running in self.nodes.values() {
            running.abandon();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.data_root) {
            log::debug!("cannot remove {}: {e}", self.data_root.display());
        }
    }
}
