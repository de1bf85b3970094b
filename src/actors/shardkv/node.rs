//! One sharded KV group member, assembled: its Raft peer, replicated state machine, network
//! face and migrator, started and stopped together.

use actix::prelude::*;

use super::migrator::Migrator;
use super::server::ShardKv;
use super::store::ShardStore;
use crate::actors::client_end::{ClientEnd, EndMaker};
use crate::actors::raft::{RaftPeer, RestoreError};
use crate::actors::rsm::{ReplicaSetup, Rsm};
use crate::messages::ctrler::Gid;
use crate::messages::lifecycle::Stop;
use crate::messages::net::Server;
use crate::storage::Persister;

/// Everything needed to start one group member (6.5840's `StartServer` arguments).
pub struct ShardKvSetup<P> {
    /// The member as a replica of its group's state machine.
    pub replica: ReplicaSetup<P>,
    /// The group's id.
    pub gid: Gid,
    /// Ends to the controller servers.
    pub ctrlers: Vec<ClientEnd>,
    /// Makes ends to other groups' servers.
    pub make_end: EndMaker,
}

/// One running group member: Raft peer, replicated state machine, network face, migrator.
#[derive(Clone)]
pub struct ShardKvNode {
    /// The Raft peer.
    pub raft: Addr<RaftPeer>,
    /// The replicated state machine.
    pub rsm: Addr<Rsm<ShardStore>>,
    /// The ShardKV service.
    pub kv: Addr<ShardKv>,
    /// The migrator.
    pub migrator: Addr<Migrator>,
}

impl ShardKvNode {
    /// Starts a group member, restoring its persisted state. Fails on a corrupt state.
    pub fn start<P: Persister + Clone + Send + 'static>(
        setup: ShardKvSetup<P>,
    ) -> Result<ShardKvNode, RestoreError> {
        let (rsm, raft) = Rsm::<ShardStore>::start(setup.replica)?;
        let kv = ShardKv { rsm: rsm.clone() }.start();
        let migrator = Migrator::new(
            setup.gid,
            rsm.clone(),
            raft.clone(),
            setup.ctrlers,
            setup.make_end,
        )
        .start();
        Ok(ShardKvNode {
            raft,
            rsm,
            kv,
            migrator,
        })
    }

    /// The services to register on the network: "ShardKV" and "Raft".
    pub fn server(&self) -> Server {
        Server::new()
            .with_service("ShardKV", self.kv.clone().recipient())
            .with_service("Raft", self.raft.clone().recipient())
    }

    /// Stops the whole member (a crash): the migrator and its calls in flight, the RSM and
    /// the Raft peer. Nothing more is sent.
    pub fn kill(&self) {
        self.migrator.do_send(Stop);
        self.rsm.do_send(Stop);
    }
}
