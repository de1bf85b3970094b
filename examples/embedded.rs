//! RainKV embedded in an actix application: three KV servers (Raft peer, replicated state
//! machine, KV service each) on the simulated network inside this process, in real time, and
//! a clerk using the async API.
//!
//! Run it with `cargo run --release --example embedded`. `cargo test` runs the test at the
//! bottom, which keeps this example working.

use std::process::ExitCode;

use rainkv::metrics::Metrics;
use rainkv::trace::Tracer;
use rainkv::{
    Clerk, ClientEnd, KvNode, MemPersister, Membership, NetworkHandle, RaftConfig, ReplicaSetup,
    SessionPolicy,
};

/// Servers in the cluster.
const SERVERS: usize = 3;
/// Each server snapshots when its Raft state reaches this many bytes.
const MAX_RAFT_STATE: usize = 64 << 10;

/// An end on `net` from `owner` (a server's name, or `None` for a client) to server `to`,
/// connected and enabled.
async fn end(
    net: &NetworkHandle,
    name: &str,
    owner: Option<&str>,
    to: usize,
) -> Result<ClientEnd, String> {
    let end = net
        .make_end(name, owner)
        .await
        .map_err(|e| format!("cannot make end {name}: {e}"))?;
    net.connect(name, &to.to_string());
    net.enable(name, true);
    Ok(end)
}

/// Starts the cluster, stores and reads a greeting through a clerk, stops the cluster, and
/// returns what the clerk read.
pub async fn run() -> Result<String, String> {
    let net = NetworkHandle::start(rand::random());
    let mut servers = Vec::with_capacity(SERVERS);
    for i in 0..SERVERS {
        let me = i.to_string();
        let mut peers = Vec::with_capacity(SERVERS);
        for j in 0..SERVERS {
            peers.push(end(&net, &format!("server-{i}-to-{j}"), Some(&me), j).await?);
        }
        let node = KvNode::start(ReplicaSetup {
            id: i,
            peers,
            initial_members: Membership::with_voters(SERVERS),
            connect: None,
            persister: MemPersister::new(),
            raft: RaftConfig::default(),
            max_raft_state: Some(MAX_RAFT_STATE),
            proportional_snapshots: true,
            seed: rand::random(),
            sessions: SessionPolicy::default(),
            // No trace events (see the README's "Trace" section for recording them).
            trace: Tracer::off(),
            // Nothing counted (a node on TCP counts when it has a metrics port).
            metrics: Metrics::off(),
        })
        .map_err(|e| format!("server {i} did not start: {e}"))?;
        net.add_server(&me, node.server());
        servers.push(node);
    }

    let mut ends = Vec::with_capacity(SERVERS);
    for j in 0..SERVERS {
        ends.push(end(&net, &format!("client-to-{j}"), None, j).await?);
    }
    // Client ids must differ between clerks: servers deduplicate retried requests by them.
    let clerk = Clerk::start(ends);
    let greeting = async {
        clerk.put("greeting", "hello").await?;
        clerk.append("greeting", ", world").await?;
        clerk.get_string("greeting").await
    }
    .await;

    for server in &servers {
        server.kill();
    }
    let greeting = greeting.map_err(|e| format!("clerk: {e}"))?;
    Ok(greeting.unwrap_or_default())
}

#[actix::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(greeting) => {
            println!("greeting = {greeting:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[actix::test]
    async fn the_embedded_cluster_serves_the_clerk() {
        let greeting = tokio::time::timeout(Duration::from_secs(20), super::run())
            .await
            .expect("the example finishes within 20 s");
        assert_eq!(greeting, Ok("hello, world".to_string()));
    }
}
