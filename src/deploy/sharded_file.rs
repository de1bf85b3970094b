//! The deployment file of a sharded cluster: the shard controller's group and the replica
//! groups, each a list of nodes like an unsharded cluster's, sharing one `[cluster]` name and
//! token and the same tuning sections (the format is in [`super::cluster_file`]'s docs).
//!
//! Each group, the controller's included, is seen as a [`ClusterFile`] of its own (the shared
//! settings and that group's nodes): a node runs, and a client reaches, one group exactly as it
//! would an unsharded cluster. A replica group's servers are named, in the controller's
//! configurations, by their client addresses; that is how a group finds another to move shards
//! and how a clerk finds a key's group.

use std::fmt;
#[cfg(feature = "cli")]
use std::path::Path;
use std::str::FromStr;

#[cfg(feature = "cli")]
use super::cluster_file::{
    raw_nodes, read_file, resolve_nodes, unique_addresses, validate_ids, RawClusterFile, RawGroup,
    RawNodes,
};
use super::cluster_file::{ClusterFile, ClusterFileError, NodeAddrs};
use crate::messages::ctrler::Gid;

/// One replica group of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaGroup {
    /// Its id (never 0).
    pub gid: Gid,
    /// Its nodes, in id order (`nodes[i].id == i`).
    pub nodes: Vec<NodeAddrs>,
}

/// A sharded deployment, read and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedFile {
    /// The settings every group shares, with the shard controller's nodes as its nodes.
    pub controller: ClusterFile,
    /// The replica groups, in gid order.
    pub groups: Vec<ReplicaGroup>,
}

/// A group of a sharded deployment, as the command line names it: `controller` (or `ctrler`)
/// or a gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupName {
    /// The shard controller's group.
    Controller,
    /// The replica group with this gid.
    Replica(Gid),
}

impl FromStr for GroupName {
    type Err = String;

    fn from_str(s: &str) -> Result<GroupName, String> {
        match s {
            "controller" | "ctrler" => Ok(GroupName::Controller),
            gid => gid.parse().map(GroupName::Replica).map_err(|_| {
                format!("{gid:?} is neither `controller` nor a gid (a positive number)")
            }),
        }
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupName::Controller => write!(f, "controller"),
            GroupName::Replica(gid) => write!(f, "group {gid}"),
        }
    }
}

/// A deployment file of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployment {
    /// One Raft group serving every key (top-level `[[node]]` entries).
    Single(ClusterFile),
    /// A controller group and replica groups.
    Sharded(ShardedFile),
}

#[cfg(feature = "cli")]
impl Deployment {
    /// Reads and validates the file at `path`, whichever kind it is.
    pub fn load(path: &Path) -> Result<Deployment, ClusterFileError> {
        let origin = path.display().to_string();
        let text = read_file(path)?;
        if RawClusterFile::parse(&text, &origin)?.is_sharded() {
            ShardedFile::parse(&text, &origin).map(|mut file| {
                file.controller.resolve_tls_dir(path);
                Deployment::Sharded(file)
            })
        } else {
            ClusterFile::load(path).map(Deployment::Single)
        }
    }
}

impl ShardedFile {
    /// Reads and validates the sharded deployment file at `path`; an unsharded cluster file is
    /// refused with a message saying so.
    #[cfg(feature = "cli")]
    pub fn load(path: &Path) -> Result<ShardedFile, ClusterFileError> {
        match Deployment::load(path)? {
            Deployment::Sharded(file) => Ok(file),
            Deployment::Single(_) => Err(ClusterFileError::Invalid {
                origin: path.display().to_string(),
                message: UNSHARDED.into(),
            }),
        }
    }

    /// Parses and validates `text`; `origin` names it in errors.
    #[cfg(feature = "cli")]
    pub fn parse(text: &str, origin: &str) -> Result<ShardedFile, ClusterFileError> {
        let mut raw = RawClusterFile::parse(text, origin)?;
        let invalid = |message: String| ClusterFileError::Invalid {
            origin: origin.to_string(),
            message,
        };
        if !raw.is_sharded() {
            return Err(invalid(UNSHARDED.into()));
        }
        if !raw.node.is_empty() {
            return Err(invalid(
                "a sharded deployment lists its nodes under [[controller.node]] and \
                 [[group.node]]; top-level [[node]] entries belong to an unsharded cluster"
                    .into(),
            ));
        }
        let Some(RawNodes { node: ctrler }) = raw.controller.take() else {
            return Err(invalid(
                "[[group]] entries need the shard controller's nodes ([[controller.node]])".into(),
            ));
        };
        let controller = resolve_nodes(&ctrler, "controller ").map_err(invalid)?;
        let mut groups = Vec::new();
        for RawGroup { gid, node } in std::mem::take(&mut raw.group) {
            let nodes = resolve_nodes(&node, &format!("group {gid}: ")).map_err(invalid)?;
            groups.push(ReplicaGroup { gid, nodes });
        }
        groups.sort_by_key(|g| g.gid);
        let file = ShardedFile {
            controller: raw.common(controller),
            groups,
        };
        file.validate().map_err(invalid)?;
        Ok(file)
    }

    /// Checks everything the file format cannot express: the shared settings as for any
    /// cluster file, each group's node ids, gids, and addresses across all groups.
    pub fn validate(&self) -> Result<(), String> {
        self.controller.validate_settings()?;
        if self.controller.nodes.is_empty() {
            return Err(
                "[controller] has no nodes: the shard controller needs at least one".into(),
            );
        }
        validate_ids(&self.controller.nodes).map_err(|e| format!("controller: {e}"))?;
        if self.groups.is_empty() {
            return Err("no [[group]] entries: a sharded deployment needs a replica group".into());
        }
        for (i, group) in self.groups.iter().enumerate() {
            if group.gid == 0 {
                return Err("gid 0 is reserved (it marks a shard no group owns)".into());
            }
            if i > 0 && self.groups[i - 1].gid == group.gid {
                return Err(format!("gid {} appears twice", group.gid));
            }
            if group.nodes.is_empty() {
                return Err(format!(
                    "group {} has no nodes: a group needs at least one",
                    group.gid
                ));
            }
            validate_ids(&group.nodes).map_err(|e| format!("group {}: {e}", group.gid))?;
        }
        unique_addresses(self.all_nodes().map(|(_, node)| node))
    }

    /// Every node with its group: the controller's first, then each group's in gid order.
    pub fn all_nodes(&self) -> impl Iterator<Item = (GroupName, &NodeAddrs)> {
        let ctrler = self
            .controller
            .nodes
            .iter()
            .map(|node| (GroupName::Controller, node));
        let groups = self.groups.iter().flat_map(|group| {
            group
                .nodes
                .iter()
                .map(move |node| (GroupName::Replica(group.gid), node))
        });
        ctrler.chain(groups)
    }

    /// The gids of the file's replica groups, in order.
    pub fn gids(&self) -> Vec<Gid> {
        self.groups.iter().map(|g| g.gid).collect()
    }

    /// Group `name` seen as a cluster file of its own: the shared settings and its nodes.
    pub fn group(&self, name: GroupName) -> Result<ClusterFile, String> {
        let nodes = match name {
            GroupName::Controller => return Ok(self.controller.clone()),
            GroupName::Replica(gid) => self
                .groups
                .iter()
                .find(|g| g.gid == gid)
                .map(|g| g.nodes.clone())
                .ok_or_else(|| {
                    format!("no group {gid} in the file (its gids: {:?})", self.gids())
                })?,
        };
        Ok(ClusterFile {
            nodes,
            ..self.controller.clone()
        })
    }

    /// The names the controller's configurations give the servers of group `gid`: their
    /// client addresses.
    pub fn servers(&self, gid: Gid) -> Option<Vec<String>> {
        let group = self.groups.iter().find(|g| g.gid == gid)?;
        Some(group.nodes.iter().map(|n| n.client.to_string()).collect())
    }

    /// The number of node `id` of group `name` among all nodes (the controller's first, then
    /// each group's in gid order): with TLS, the node presents certificate `node-<number>`.
    pub fn cert_number(&self, name: GroupName, id: usize) -> Option<usize> {
        self.all_nodes()
            .position(|(group, node)| group == name && node.id == id)
    }

    /// Why this deployment must not run without TLS (see [`ClusterFile::needs_tls`]).
    pub fn needs_tls(&self) -> Option<String> {
        let everyone = ClusterFile {
            nodes: self.all_nodes().map(|(_, node)| *node).collect(),
            ..self.controller.clone()
        };
        everyone.needs_tls()
    }

    /// The deployment as a TOML file.
    #[cfg(feature = "cli")]
    pub fn to_toml(&self) -> Result<String, String> {
        let mut raw = self.controller.raw();
        raw.node = Vec::new();
        raw.controller = Some(RawNodes {
            node: raw_nodes(&self.controller.nodes),
        });
        raw.group = self
            .groups
            .iter()
            .map(|g| RawGroup {
                gid: g.gid,
                node: raw_nodes(&g.nodes),
            })
            .collect();
        toml::to_string(&raw).map_err(|e| e.to_string())
    }
}

/// What a sharded command says of an unsharded cluster file.
const UNSHARDED: &str = "it describes an unsharded cluster (top-level [[node]] entries), not a \
                         sharded deployment ([[controller.node]] and [[group]] entries)";

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[cluster]
name = "test"
token = "secret"

[[controller.node]]
id = 0
peer = "127.0.0.1:7000"
client = "127.0.0.1:7100"

[[group]]
gid = 200
[[group.node]]
id = 1
peer = "127.0.0.1:7021"
client = "127.0.0.1:7121"
[[group.node]]
id = 0
peer = "127.0.0.1:7020"
client = "127.0.0.1:7120"

[[group]]
gid = 100
[[group.node]]
id = 0
peer = "127.0.0.1:7010"
client = "127.0.0.1:7110"
"#;

    fn error_of(text: &str) -> String {
        match ShardedFile::parse(text, "shards.toml") {
            Ok(file) => panic!("accepted a bad file: {file:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_file_parses_into_groups_in_gid_order() {
        let file = ShardedFile::parse(GOOD, "shards.toml").expect("valid");
        assert_eq!(file.gids(), vec![100, 200]);
        assert_eq!(file.controller.nodes.len(), 1);
        let g200 = file.group(GroupName::Replica(200)).expect("group");
        assert_eq!(
            g200.nodes[1].client,
            "127.0.0.1:7121".parse().expect("addr")
        );
        assert_eq!(g200.token, "secret");
        assert_eq!(file.servers(100), Some(vec!["127.0.0.1:7110".to_string()]));
        assert_eq!(file.cert_number(GroupName::Controller, 0), Some(0));
        assert_eq!(file.cert_number(GroupName::Replica(100), 0), Some(1));
        assert_eq!(file.cert_number(GroupName::Replica(200), 1), Some(3));
        assert_eq!(file.cert_number(GroupName::Replica(300), 0), None);
        let e = file.group(GroupName::Replica(7)).expect_err("unknown gid");
        assert!(e.contains("no group 7") && e.contains("[100, 200]"), "{e}");
        let again = ShardedFile::parse(&file.to_toml().expect("toml"), "again").expect("valid");
        assert_eq!(again, file);
    }

    #[test]
    fn group_names_read_and_print() {
        assert_eq!("controller".parse(), Ok(GroupName::Controller));
        assert_eq!("ctrler".parse(), Ok(GroupName::Controller));
        assert_eq!("100".parse(), Ok(GroupName::Replica(100)));
        assert!("g100".parse::<GroupName>().is_err());
        assert_eq!(GroupName::Replica(5).to_string(), "group 5");
    }

    #[test]
    fn content_errors_are_explained() {
        let e = error_of(&GOOD.replace("gid = 200", "gid = 100"));
        assert!(
            e.starts_with("shards.toml: ") && e.contains("gid 100 appears twice"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("gid = 200", "gid = 0"));
        assert!(e.contains("gid 0 is reserved"), "{e}");
        let e = error_of(&GOOD.replace("127.0.0.1:7110", "127.0.0.1:7021"));
        assert!(e.contains("address 127.0.0.1:7021 is used twice"), "{e}");
        let e = error_of(&GOOD.replace("127.0.0.1:7110", "127.0.0.1:7100"));
        assert!(e.contains("used twice"), "{e}");
        let e = error_of(&GOOD.replace("id = 1", "id = 2"));
        assert!(
            e.contains("group 200: node ids") && e.contains("id 1 is missing"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("client = \"127.0.0.1:7110\"", "client = \"nowhere\""));
        assert!(e.contains("group 100: node 0: client address"), "{e}");
        let empty = format!("{GOOD}\n[[group]]\ngid = 300\n");
        let e = error_of(&empty);
        assert!(e.contains("group 300 has no nodes"), "{e}");
        let no_ctrler = GOOD.replace("[[controller.node]]", "[[group.node]]");
        let e = error_of(&no_ctrler);
        assert!(!e.is_empty(), "{e}");
        let e = error_of(&GOOD.replace("token = \"secret\"", "token = \"\""));
        assert!(e.contains("cluster.token"), "{e}");
        let e = error_of(&format!(
            "{GOOD}\n[[node]]\nid = 0\npeer = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n"
        ));
        assert!(e.contains("top-level [[node]]"), "{e}");
        let e = error_of(&format!("{GOOD}\n[raft]\nheartbeat = 5\n"));
        assert!(e.contains("heartbeat"), "{e}");
    }

    #[test]
    fn each_kind_of_file_refuses_the_other() {
        let e = ClusterFile::parse(GOOD, "shards.toml")
            .expect_err("a sharded file is no cluster file")
            .to_string();
        assert!(e.contains("sharded deployment"), "{e}");
        let single = "[cluster]\nname = \"x\"\ntoken = \"t\"\n[[node]]\nid = 0\n\
                      peer = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n";
        let e = error_of(single);
        assert!(e.contains("unsharded cluster"), "{e}");
    }
}
