//! A client of a running sharded deployment, over TCP: the sharded clerk (it finds the
//! controller, caches the configuration, routes each key to its group and asks the controller
//! again on `WrongGroup`: [`crate::actors::shardkv::clerk`]), the controller's clerk for
//! joins, leaves, moves and queries, and each group's status: every node's Raft state
//! (`Admin.Status`, through a [`ClusterClient`] per group) and where each shard stands on it
//! (`ShardKV.Status`). Used by `rainkv-ctl` and the process tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::client::{ClusterClient, NodeReport};
use super::cluster_file::TlsIdentity;
use super::node::Links;
use super::sharded_file::{GroupName, ShardedFile};
use crate::actors::clerk::Clerk;
use crate::actors::ctrler::clerk::CtrlerClerk;
use crate::actors::shardkv::clerk;
use crate::messages::ctrler::{Gid, ShardConfig};
use crate::messages::shard::{GroupShards, ShardStatus, ShardStatusArgs};
use crate::trace::Tracer;

/// How long [`ShardedClient::wait_settled`] waits for one answer of the controller or a node.
const SETTLE_ASK: Duration = Duration::from_secs(1);

/// One node of a replica group, as the group status sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardNodeReport {
    /// Its Raft state, or why it said nothing.
    pub node: NodeReport,
    /// Its config and shard statuses, or why it said nothing.
    pub shards: Result<GroupShards, String>,
}

/// Whether group `gid`'s shard report shows it settled under `config`: at that config,
/// holding exactly the shards `config` gives the group, all serving (none pulling, frozen or awaiting the
/// old owner's deletion).
pub fn settled_under(gid: Gid, shards: &GroupShards, config: &ShardConfig) -> bool {
    let owned = config.shards_of(gid);
    shards.num == config.num
        && shards.shards.len() == owned.len()
        && owned
            .iter()
            .all(|s| shards.shards.get(s) == Some(&ShardStatus::Serving))
}

/// The shard report of a group's most advanced answering node: its leader's if it answered,
/// else the one at the highest config.
pub fn most_advanced(nodes: &[ShardNodeReport]) -> Option<&GroupShards> {
    nodes
        .iter()
        .filter_map(|n| Some((n.node.status.as_ref().ok()?, n.shards.as_ref().ok()?)))
        .max_by_key(|(status, shards)| (status.is_leader(), shards.num))
        .map(|(_, shards)| shards)
}

/// A client of a sharded deployment; one per thread (its clerks are actors of that thread).
pub struct ShardedClient {
    file: ShardedFile,
    controller: ClusterClient,
    groups: BTreeMap<Gid, ClusterClient>,
    ctrler: CtrlerClerk,
    /// Links of the sharded clerks to the groups' client ports, by address.
    links: Links<SocketAddr>,
}

impl ShardedClient {
    /// Links to every group's client ports (nothing connects until the first call). With TLS
    /// on, it presents the client certificate (see [`ClusterClient::connect`]).
    pub fn connect(file: &ShardedFile) -> ShardedClient {
        let controller = ClusterClient::connect(&file.controller);
        let groups = file
            .gids()
            .into_iter()
            .filter_map(|gid| {
                let group = file.group(GroupName::Replica(gid)).ok()?;
                Some((gid, ClusterClient::connect(&group)))
            })
            .collect();
        let ctrler = CtrlerClerk::start(controller.ends());
        ShardedClient {
            file: file.clone(),
            controller,
            groups,
            ctrler,
            links: Links::default(),
        }
    }

    /// The deployment file it was made from.
    pub fn file(&self) -> &ShardedFile {
        &self.file
    }

    /// The controller's clerk (one session, shared by the callers of this client).
    pub fn ctrler(&self) -> &CtrlerClerk {
        &self.ctrler
    }

    /// A client of the controller's group (its nodes' status, leader).
    pub fn controller(&self) -> &ClusterClient {
        &self.controller
    }

    /// A client of replica group `gid`'s nodes, if the file has that group.
    pub fn group(&self, gid: Gid) -> Option<&ClusterClient> {
        self.groups.get(&gid)
    }

    /// A new sharded clerk with a random client id, reaching groups by the addresses the
    /// controller's configurations name.
    pub fn clerk(&self) -> Clerk {
        let mut settings = self.file.controller.tcp_settings();
        match self.file.controller.tls_config(TlsIdentity::Client) {
            Ok(tls) => settings.tls = tls,
            Err(why) => log::error!("cannot load the client's TLS identity: {why}"),
        }
        let make_end = self.links.end_maker(&Arc::new(settings), &Tracer::off());
        let ctrler = CtrlerClerk::start(self.controller.ends());
        clerk::start(ctrler, make_end, rand::random())
    }

    /// Every node of group `gid` (in id order): its Raft state and shard statuses, each asked
    /// within `timeout`; `None` if the file has no such group.
    pub async fn group_status(&self, gid: Gid, timeout: Duration) -> Option<Vec<ShardNodeReport>> {
        let client = self.groups.get(&gid)?;
        let ends = client.ends();
        let asks = ends.iter().map(|end| async move {
            match tokio::time::timeout(timeout, end.call(&ShardStatusArgs)).await {
                Ok(Ok(Ok(shards))) => Ok(shards),
                Ok(Ok(Err(e))) => Err(format!("no shard status: {e:?}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer in time".to_string()),
            }
        });
        let (nodes, shards) = futures_util::join!(client.status(timeout), join_all(asks));
        Some(
            nodes
                .into_iter()
                .zip(shards)
                .map(|(node, shards)| ShardNodeReport { node, shards })
                .collect(),
        )
    }

    /// What keeps the file's groups from being settled under `config` (see [`settled_under`]),
    /// one line per group, each group's status asked within `timeout` (empty: settled).
    pub async fn unsettled(&self, config: &ShardConfig, timeout: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        for gid in self.groups.keys() {
            let Some(nodes) = self.group_status(*gid, timeout).await else {
                continue;
            };
            match most_advanced(&nodes) {
                None => lines.push(format!("group {gid}: no node answered")),
                Some(shards) if !settled_under(*gid, shards, config) => lines.push(format!(
                    "group {gid} at config {} holds {:?}; config {} gives it shards {:?}",
                    shards.num,
                    shards.shards,
                    config.num,
                    config.shards_of(*gid)
                )),
                Some(_) => {}
            }
        }
        lines
    }

    /// Waits up to `limit` for every group of the file to serve exactly its shards of the
    /// controller's latest configuration, asking every 50 ms; that configuration (if the
    /// controller gave one) and what was still unsettled (empty: settled).
    pub async fn wait_settled(&self, limit: Duration) -> (Option<ShardConfig>, Vec<String>) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let latest = tokio::time::timeout(SETTLE_ASK, self.ctrler.latest()).await;
            let (config, unsettled) = match latest {
                Ok(Ok(config)) => {
                    let unsettled = self.unsettled(&config, SETTLE_ASK).await;
                    (Some(config), unsettled)
                }
                Ok(Err(e)) => (None, vec![format!("the controller: {e}")]),
                Err(_) => (None, vec!["the controller did not answer".to_string()]),
            };
            if (config.is_some() && unsettled.is_empty()) || tokio::time::Instant::now() >= deadline
            {
                return (config, unsettled);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Why the nodes that cannot be reached cannot be, one line per node, over all groups.
    pub async fn unreachable_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        for (name, client) in std::iter::once((GroupName::Controller, &self.controller)).chain(
            self.groups
                .iter()
                .map(|(gid, client)| (GroupName::Replica(*gid), client)),
        ) {
            for reason in client.unreachable_reasons().await {
                reasons.push(format!("{name}: {reason}"));
            }
        }
        reasons
    }

    /// Closes every link.
    pub fn close(&self) {
        self.controller.close();
        for client in self.groups.values() {
            client.close();
        }
        self.links.close();
    }
}
