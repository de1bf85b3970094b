//! The metrics port as an operator uses it: three `rainkv serve --metrics ADDR` processes,
//! `/metrics` scraped with a plain HTTP GET before and after a run of writes (the counters
//! move), `/health` 200 while the cluster is whole and 503 on a node cut off from the
//! others, and 404 for any other path.

#[path = "processes/logged.rs"]
#[allow(dead_code)]
mod logged;
mod processes;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use logged::{spawn_logged_with, LogsOnFailure};
use processes::bounded::wait_bounded;
use processes::{free_ports, write_config, Scratch, Servers};
use rainkv::deploy::client::ClusterClient;
use rainkv::deploy::cluster_file::ClusterFile;

/// How long the cluster may take to come up and elect a leader.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);
/// How many writes the test makes between the scrapes.
const WRITES: u64 = 40;

/// `GET path` on `addr`: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_get(addr, path).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// `GET path` on `addr`, or why it got no response (a port not bound yet, say).
fn try_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Ok((status, body.to_string()))
}

/// A `/metrics` page as sample (`name{labels}`) → value; checks every sample's family has
/// its HELP and TYPE lines.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, page) = get(addr, "/metrics");
    assert_eq!(status, 200, "{page}");
    let mut typed = Vec::new();
    let mut samples = BTreeMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split_whitespace().next().unwrap_or("").to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (sample, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let name = sample.split('{').next().unwrap_or("");
        assert!(name.starts_with("rainkv_"), "{line}");
        assert!(
            typed.iter().any(|family| name == family
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name == format!("{family}{suffix}"))),
            "no TYPE line before {line:?}"
        );
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line:?}"));
        samples.insert(sample.to_string(), value);
    }
    samples
}

fn value(samples: &BTreeMap<String, f64>, sample: &str) -> f64 {
    *samples
        .get(sample)
        .unwrap_or_else(|| panic!("no {sample} in {samples:#?}"))
}

/// Waits until `/health` of `addr` answers `status` (the port may not be bound yet); the
/// last body.
fn wait_health(addr: SocketAddr, status: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (got, body) = try_get(addr, "/health").unwrap_or_else(|e| (0, e.to_string()));
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/health of {addr} still {got} ({body:?}) after {limit:?}, not {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_some(config: &Path) {
    let cluster = ClusterFile::load(config).expect("config");
    actix_rt::System::new().block_on(async move {
        let client = ClusterClient::connect(&cluster);
        let clerk = client.clerk();
        for i in 0..WRITES {
            let put = clerk.put(format!("k{i}"), format!("v{i}"));
            tokio::time::timeout(Duration::from_secs(10), put)
                .await
                .expect("put acknowledged in time")
                .expect("put");
        }
        let read = clerk.get_string("k0".to_string()).await.expect("get");
        assert_eq!(read.as_deref(), Some("v0"));
        client.close();
    });
}

#[test]
fn metrics_move_with_writes_and_health_follows_the_cluster() {
    let scratch = Scratch::new("metrics");
    let _logs = LogsOnFailure(&scratch.0);
    let config = write_config(&scratch.0, "metrics-token", &free_ports());
    let http: Vec<SocketAddr> = free_ports()[..3]
        .iter()
        .map(|&port| SocketAddr::from(([127, 0, 0, 1], port)))
        .collect();
    let mut servers = Servers(Vec::new());
    for (id, addr) in http.iter().enumerate() {
        let addr = addr.to_string();
        let child = spawn_logged_with(&config, &scratch.0, id, &["--metrics", &addr]);
        servers.0.push(child);
    }
    for &addr in &http {
        let body = wait_health(addr, 200, STARTUP_LIMIT);
        assert!(body.starts_with("ok: node "), "{body}");
    }
    assert_eq!(get(http[0], "/nothing-here").0, 404);

    let started = Instant::now();
    let before: Vec<_> = http.iter().map(|&addr| scrape(addr)).collect();
    let scrape_ms = started.elapsed().as_secs_f64() * 1000.0 / 3.0;
    write_some(&config);
    let after: Vec<_> = http.iter().map(|&addr| scrape(addr)).collect();

    let leaders: Vec<usize> = (0..3)
        .filter(|&id| value(&after[id], "rainkv_raft_role{role=\"leader\"}") == 1.0)
        .collect();
    assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");
    let leader = leaders[0];
    let moved = |id: usize, sample: &str| value(&after[id], sample) - value(&before[id], sample);
    let accepted = "rainkv_raft_proposals_total{outcome=\"accepted\"}";
    // Each write is a proposal (a clerk's session registration is one more).
    assert!(
        moved(leader, accepted) >= WRITES as f64,
        "proposals moved {}",
        moved(leader, accepted)
    );
    let puts = "rainkv_client_requests_total{method=\"KVServer.PutAppend\",outcome=\"ok\"}";
    assert!(
        value(&after[leader], puts) - before[leader].get(puts).copied().unwrap_or(0.0)
            >= WRITES as f64,
        "{puts} on the leader: {:?}",
        after[leader].get(puts)
    );
    let put_latency = "rainkv_client_request_seconds_count{method=\"KVServer.PutAppend\"}";
    assert!(value(&after[leader], put_latency) >= WRITES as f64);
    let sent = format!(
        "rainkv_raft_rpcs_sent_total{{peer=\"{}\",method=\"Raft.AppendEntries\"}}",
        (leader + 1) % 3
    );
    assert!(value(&after[leader], &sent) > 0.0, "{sent}");
    for (id, after) in after.iter().enumerate() {
        let commit = moved(id, "rainkv_raft_commit_index");
        assert!(commit >= WRITES as f64, "node {id}: commit moved {commit}");
        let saves = moved(id, "rainkv_storage_saves_total");
        assert!(saves > 0.0, "node {id}: saves moved {saves}");
        assert!(value(after, "rainkv_storage_save_seconds_count") > 0.0);
        assert_eq!(value(after, "rainkv_raft_members{kind=\"voter\"}"), 3.0);
        assert_eq!(value(after, "rainkv_raft_leader_id"), leader as f64);
        assert_eq!(value(after, "rainkv_errors_total{kind=\"halt\"}"), 0.0);
    }
    let mut latency = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        scrape(http[leader]);
        latency += started.elapsed();
    }
    eprintln!(
        "scrape: first {scrape_ms:.2} ms, then {:.2} ms on average; {} samples",
        latency.as_secs_f64() * 1000.0 / 20.0,
        after[leader].len()
    );

    // A node whose two peers are gone knows no leader within an election timeout.
    let alone = (leader + 1) % 3;
    for id in (0..3).filter(|&id| id != alone) {
        let _ = servers.0[id].kill();
        wait_bounded(&mut servers.0[id], Duration::from_secs(5)).expect("killed node exits");
    }
    let body = wait_health(http[alone], 503, Duration::from_secs(5));
    assert!(body.contains("no leader"), "{body}");
    assert_eq!(value(&scrape(http[alone]), "rainkv_raft_leader_id"), -1.0);
}
