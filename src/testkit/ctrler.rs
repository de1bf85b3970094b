//! 6.5840's shard controller harness (`shardctrler/config.go`), also used by the shardkv
//! harness for its controller services.
//!
//! [`CtrlerConfig`] runs `n` controller servers named `{prefix}{i}`, each a network server with
//! the "ShardCtrler" and "Raft" services, on the simulation's network. Servers are started,
//! shut down and restarted as in kvraft: a restart gets a copy of the storage and fresh ends
//! that stay disabled until [`CtrlerConfig::connect_all`]. Clerks get fresh enabled ends to
//! every server, in shuffled order.

use std::cell::RefCell;
use std::rc::Rc;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::{check_time_limit, first_leader, rand_string, Sim};
use crate::actors::client_end::ClientEnd;
use crate::actors::ctrler::clerk::CtrlerClerk;
use crate::actors::ctrler::CtrlerNode;
use crate::storage::MemPersister;

struct State {
    nodes: Vec<Option<CtrlerNode>>,
    saved: Vec<MemPersister>,
    /// `end_names[i][j]`: the end server i uses to reach j.
    end_names: Vec<Vec<String>>,
    incarnations: Vec<u64>,
    rng: ChaCha8Rng,
    t0: Instant,
    rpcs0: u64,
}

/// A cluster of controller servers. Clones share it.
#[derive(Clone)]
pub struct CtrlerConfig {
    sim: Sim,
    n: usize,
    prefix: String,
    created: Instant,
    state: Rc<RefCell<State>>,
}

impl CtrlerConfig {
    /// `make_config(n)`: starts `n` servers named `{prefix}0..` and connects them. The network
    /// is left as it is (the controller tests run it reliable).
    pub async fn new(sim: &Sim, n: usize, prefix: &str) -> CtrlerConfig {
        let cfg = CtrlerConfig {
            sim: sim.clone(),
            n,
            prefix: prefix.to_string(),
            created: Instant::now(),
            state: Rc::new(RefCell::new(State {
                nodes: vec![None; n],
                saved: (0..n).map(|_| MemPersister::new()).collect(),
                end_names: vec![Vec::new(); n],
                incarnations: vec![0; n],
                rng: sim.rng(&format!("ctrler-config-{prefix}")),
                t0: Instant::now(),
                rpcs0: 0,
            })),
        };
        for i in 0..n {
            cfg.start_server(i).await;
        }
        cfg.connect_all();
        cfg
    }

    /// Number of servers.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The network name of server `i`.
    pub fn server_name(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    fn rand_string(&self, n: usize) -> String {
        rand_string(&mut self.state.borrow_mut().rng, n)
    }

    fn enable_links(&self, i: usize, to: &[usize], on: bool) {
        let state = self.state.borrow();
        let net = self.sim.network();
        for &j in to {
            if let Some(name) = state.end_names[i].get(j) {
                net.enable(name, on);
            }
            if let Some(name) = state.end_names[j].get(i) {
                net.enable(name, on);
            }
        }
    }

    /// Every server reaches every other.
    pub fn connect_all(&self) {
        let all: Vec<usize> = (0..self.n).collect();
        for i in 0..self.n {
            self.enable_links(i, &all, true);
        }
    }

    /// Fresh, enabled ends to every server, in server order, owned by `owner` (`None` for
    /// clients).
    pub async fn make_ends(&self, owner: Option<&str>) -> Vec<ClientEnd> {
        let net = self.sim.network();
        let mut ends = Vec::with_capacity(self.n);
        for j in 0..self.n {
            let name = self.rand_string(20);
            let end = net
                .make_end(&name, owner)
                .await
                .unwrap_or_else(|e| panic!("make_ends: {e}"));
            net.connect(&name, &self.server_name(j));
            net.enable(&name, true);
            ends.push(end);
        }
        ends
    }

    /// `makeClient`: a clerk with fresh enabled ends to every server, in shuffled order.
    pub async fn make_client(&self) -> CtrlerClerk {
        let mut ends = self.make_ends(None).await;
        let client_id = {
            let mut state = self.state.borrow_mut();
            ends.shuffle(&mut state.rng);
            state.rng.gen::<u64>()
        };
        CtrlerClerk::start(ends, client_id)
    }

    /// `ShutdownServer(i)`: cut it off, delete it, keep a copy of its storage, kill it.
    pub fn shutdown_server(&self, i: usize) {
        let all: Vec<usize> = (0..self.n).collect();
        self.enable_links(i, &all, false);
        self.sim.network().delete_server(&self.server_name(i));
        let mut state = self.state.borrow_mut();
        let copy = state.saved[i].copy();
        state.saved[i] = copy;
        if let Some(node) = state.nodes[i].take() {
            node.kill();
        }
    }

    /// `StartServer(i)`: a new server from a copy of its storage, with fresh disabled ends.
    pub async fn start_server(&self, i: usize) {
        let me = self.server_name(i);
        let names: Vec<String> = (0..self.n).map(|_| self.rand_string(20)).collect();
        let net = self.sim.network().clone();
        let mut ends = Vec::with_capacity(self.n);
        for (j, name) in names.iter().enumerate() {
            let end = net
                .make_end(name, Some(&me))
                .await
                .unwrap_or_else(|e| panic!("start_server({i}): {e}"));
            net.connect(name, &self.server_name(j));
            ends.push(end);
        }
        let (persister, incarnation) = {
            let mut state = self.state.borrow_mut();
            state.end_names[i] = names;
            state.incarnations[i] += 1;
            let persister = state.saved[i].copy();
            state.saved[i] = persister.clone();
            (persister, state.incarnations[i])
        };
        let seed = self.sim.derive(&format!("{me}-{incarnation}"));
        let node = CtrlerNode::start(ends, i, persister, seed)
            .unwrap_or_else(|e| panic!("start_server({i}): {e}"));
        net.add_server(&me, node.server());
        self.state.borrow_mut().nodes[i] = Some(node);
    }

    /// `Leader()`: the first running server whose Raft says it is leader.
    pub async fn leader(&self) -> Option<usize> {
        let rafts = self
            .state
            .borrow()
            .nodes
            .iter()
            .map(|n| n.as_ref().map(|n| n.raft.clone()))
            .collect();
        first_leader(rafts).await
    }

    /// `begin(description)`.
    pub async fn begin(&self, description: &str) {
        println!("{description} ...");
        let rpcs = self.sim.network().total_calls().await.unwrap_or(0);
        let mut state = self.state.borrow_mut();
        state.t0 = Instant::now();
        state.rpcs0 = rpcs;
    }

    /// `end()`: the time limit and the statistics line (virtual seconds, servers, RPCs).
    pub async fn end(&self) {
        check_time_limit(self.created);
        let rpcs = self.sim.network().total_calls().await.unwrap_or(0);
        let state = self.state.borrow();
        println!(
            "  ... Passed --  {:4.1}  {} {:5}",
            state.t0.elapsed().as_secs_f64(),
            self.n,
            rpcs - state.rpcs0,
        );
    }

    /// Stops every server.
    pub fn cleanup(&self) {
        let mut state = self.state.borrow_mut();
        for node in state.nodes.iter_mut() {
            if let Some(node) = node.take() {
                node.kill();
            }
        }
    }
}
