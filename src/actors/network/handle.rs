//! The typed front door to the network actor, for whoever builds and breaks the topology (the
//! harness). Callers get [`ClientEnd`]s from it.

use actix::prelude::*;

use super::Network;
use crate::actors::client_end::ClientEnd;
use crate::messages::net::*;

/// A cheap, cloneable handle on a running [`Network`] actor.
#[derive(Clone)]
pub struct NetworkHandle {
    addr: Addr<Network>,
}

impl NetworkHandle {
    /// Starts a network actor on the current arbiter; all its randomness comes from `seed`.
    pub fn start(seed: u64) -> Self {
        Self::from_actor(Network::new(seed))
    }

    /// Starts a network actor that was configured by hand.
    pub fn from_actor(network: Network) -> Self {
        NetworkHandle {
            addr: network.start(),
        }
    }

    /// Creates a client end named `name`, disabled and unconnected. `owner` is the server the
    /// end belongs to, used by link cuts and partitions (`None` for clients).
    pub async fn make_end(&self, name: &str, owner: Option<&str>) -> Result<ClientEnd, NetError> {
        let msg = MakeEnd {
            name: name.to_string(),
            owner: owner.map(str::to_string),
        };
        match self.addr.send(msg).await {
            Ok(result) => result?,
            Err(_) => log::warn!("network is down; end {name} will never deliver"),
        }
        Ok(ClientEnd::new(name, self.addr.clone().recipient()))
    }

    /// Makes one disabled end per name for server `owner`; end j reaches server `"j"`, as the
    /// 6.5840 harnesses wire peers.
    pub async fn make_peer_ends(
        &self,
        owner: &str,
        names: &[String],
    ) -> Result<Vec<ClientEnd>, NetError> {
        let mut ends = Vec::with_capacity(names.len());
        for (j, name) in names.iter().enumerate() {
            ends.push(self.make_end(name, Some(owner)).await?);
            self.connect(name, &j.to_string());
        }
        Ok(ends)
    }

    /// Points `end` at `server`.
    pub fn connect(&self, end: &str, server: &str) {
        self.addr.do_send(Connect {
            end: end.to_string(),
            server: server.to_string(),
        });
    }

    /// Enables or disables `end`.
    pub fn enable(&self, end: &str, enabled: bool) {
        self.addr.do_send(Enable {
            end: end.to_string(),
            enabled,
        });
    }

    /// Removes `end`.
    pub fn delete_end(&self, end: &str) {
        self.addr.do_send(DeleteEnd(end.to_string()));
    }

    /// Installs `server` under `name`, killing any previous server of that name.
    pub fn add_server(&self, name: &str, server: Server) {
        self.addr.do_send(AddServer {
            name: name.to_string(),
            server,
        });
    }

    /// Deletes server `name`: it is dead from now on.
    pub fn delete_server(&self, name: &str) {
        self.addr.do_send(DeleteServer(name.to_string()));
    }

    /// Reliable (true) or lossy (false) network.
    pub fn set_reliable(&self, reliable: bool) {
        self.addr.do_send(SetFaults::Reliable(reliable));
    }

    /// Long delays for calls that cannot be delivered.
    pub fn set_long_delays(&self, on: bool) {
        self.addr.do_send(SetFaults::LongDelays(on));
    }

    /// Long reordering of replies.
    pub fn set_long_reordering(&self, on: bool) {
        self.addr.do_send(SetFaults::LongReordering(on));
    }

    /// Delivers some requests twice ([`SetFaults::Duplicates`]).
    pub fn set_duplicates(&self, on: bool) {
        self.addr.do_send(SetFaults::Duplicates(on));
    }

    /// Cuts (`up == false`) or restores the one-way link `from → to`: calls from `from` to `to`
    /// fail, and so do `to`'s calls to `from`, after `from` has handled them ([`SetLink`]).
    pub fn set_link(&self, from: &str, to: &str, up: bool) {
        self.addr.do_send(SetLink {
            from: from.to_string(),
            to: to.to_string(),
            up,
        });
    }

    /// Splits the listed servers into groups that cannot reach each other.
    pub fn partition(&self, groups: &[Vec<String>]) {
        self.addr.do_send(Partition(groups.to_vec()));
    }

    async fn get(&self, what: GetCount) -> Result<u64, RpcError> {
        self.addr
            .send(what)
            .await
            .map_err(|_| RpcError::NetworkDown)
    }

    /// RPCs that reached `server`'s dispatch.
    pub async fn count(&self, server: &str) -> Result<u64, RpcError> {
        self.get(GetCount::Server(server.to_string())).await
    }

    /// Every call that entered the network.
    pub async fn total_calls(&self) -> Result<u64, RpcError> {
        self.get(GetCount::TotalCalls).await
    }

    /// Request bytes of every call plus delivered reply bytes.
    pub async fn total_bytes(&self) -> Result<u64, RpcError> {
        self.get(GetCount::TotalBytes).await
    }

    /// Hash over every network event so far.
    pub async fn trace_hash(&self) -> Result<u64, RpcError> {
        self.get(GetCount::TraceHash).await
    }
}
