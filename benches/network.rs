//! Routed request/reply round trips through the simulated network actor, in wall time.
//!
//! `cargo bench --bench network` prints µs per RPC for sequential calls and for many calls in
//! flight, with the default 1 ms virtual wire latency and with none. labrpc's own note: 22 µs
//! per RPC (2016).

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use rainkv::actors::client_end::ClientEnd;
use rainkv::actors::network::{Network, NetworkHandle};
use rainkv::messages::net::{encode, Dispatch, Rpc, RpcError, Server};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Echo(u64);
impl Rpc for Echo {
    const METHOD: &'static str = "Echo.Echo";
    type Reply = u64;
}

struct EchoServer;
impl Actor for EchoServer {
    type Context = Context<Self>;
}
impl Handler<Dispatch> for EchoServer {
    type Result = Result<Vec<u8>, RpcError>;
    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        let Echo(x) = msg.decode::<Echo>()?;
        encode(&x)
    }
}

async fn setup(latency: Duration, ends: usize) -> Vec<ClientEnd> {
    let net = NetworkHandle::from_actor(Network::new(1).with_latency(latency));
    net.add_server(
        "s",
        Server::new().with_service("Echo", EchoServer.start().recipient()),
    );
    let mut out = Vec::new();
    for i in 0..ends {
        let name = format!("e{i}");
        out.push(net.make_end(&name, None).await.expect("end"));
        net.connect(&name, "s");
        net.enable(&name, true);
    }
    out
}

fn run<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    actix_rt::System::with_tokio_rt(|| rt).block_on(f());
}

fn sequential(latency: Duration, n: u64) {
    run(|| async move {
        let ends = setup(latency, 1).await;
        let t0 = Instant::now();
        for i in 0..n {
            assert_eq!(ends[0].call(&Echo(i)).await, Ok(i));
        }
        let us = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("sequential latency={latency:?}: {n} RPCs, {us:.2} µs/RPC");
    });
}

fn in_flight(latency: Duration, clients: usize, per_client: u64) {
    run(|| async move {
        let ends = setup(latency, clients).await;
        let t0 = Instant::now();
        let tasks = ends.into_iter().map(|e| {
            actix::spawn(async move {
                for i in 0..per_client {
                    assert_eq!(e.call(&Echo(i)).await, Ok(i));
                }
            })
        });
        join_all(tasks).await;
        let n = clients as u64 * per_client;
        let us = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("{clients} in flight latency={latency:?}: {n} RPCs, {us:.2} µs/RPC");
    });
}

fn main() {
    for latency in [Duration::ZERO, Duration::from_millis(1)] {
        sequential(latency, 100_000);
        in_flight(latency, 100, 1_000);
    }
}
