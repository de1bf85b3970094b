//! Mutual TLS on every connection. A cluster whose certificates come from `rainkv-ctl certs
//! init` serves clients that show the client certificate; a client with no TLS, a client
//! whose certificate another CA signed, and a node with such a certificate calling a peer
//! port are all refused at the TLS handshake, and the refusal says why; so are the client
//! certificate on a peer port and an expired certificate on either end. Then the binaries:
//! three `rainkv serve` processes with TLS on and `rainkv-ctl` against them, and a plain
//! `serve` on an address that is not loopback refuses to start.

#[path = "processes/ctl.rs"]
mod ctl;
mod processes;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ctl::{ctl, text};
use processes::bounded::run_bounded;
use processes::{free_ports, serve_command, write_config, Scratch, Servers};
use rainkv::actors::tcp::{client_end, Link};
use rainkv::deploy::certs::{self, Validity};
use rainkv::deploy::client::ClusterClient;
use rainkv::deploy::cluster_file::{ClusterFile, TlsIdentity};
use rainkv::deploy::local::{LocalCluster, LocalOptions};
use rainkv::messages::admin::StatusArgs;
use rainkv::messages::net::RpcError;
use rainkv::messages::raft::RequestVoteArgs;
use rainkv::messages::tcp::GetLinkStatus;

/// How long a refused call may take to fail.
const CALL_LIMIT: Duration = Duration::from_secs(5);

/// A fresh certificate directory `name` under `scratch`, for `nodes` nodes.
fn certificates(scratch: &Path, name: &str, nodes: usize) -> PathBuf {
    let dir = scratch.join(name);
    certs::init(&dir, nodes, Validity::default()).expect("certs init");
    dir
}

/// Calls `Admin.Status` on node 0's client port with `config`'s client identity; on failure,
/// the link's last error.
async fn status_as(config: &ClusterFile) -> Result<(), String> {
    status_of(config, 0).await
}

/// Calls `Admin.Status` on node `id`'s client port with `config`'s client identity; on
/// failure, the link's last error.
async fn status_of(config: &ClusterFile, id: usize) -> Result<(), String> {
    let client = ClusterClient::connect(config);
    let end = client.ends().remove(id);
    let answer = tokio::time::timeout(CALL_LIMIT, end.call(&StatusArgs)).await;
    let outcome = match answer {
        Ok(Ok(_)) => Ok(()),
        _ => Err(client.unreachable_reasons().await.join("; ")),
    };
    client.close();
    outcome
}

#[actix::test]
async fn only_holders_of_the_clusters_certificates_get_in() {
    let scratch = Scratch::new("tls");
    let dir = certificates(&scratch.0, "certs", 3);
    let other = certificates(&scratch.0, "other", 1);
    let mut cluster = LocalCluster::start(LocalOptions {
        tls: Some(dir.clone()),
        ..LocalOptions::default()
    })
    .await
    .expect("a TLS cluster starts");

    // The cluster's own client works, writes and reads.
    let clerk = cluster.client().clerk();
    clerk.put("k", "over TLS").await.expect("put");
    assert_eq!(clerk.get_string("k").await, Ok(Some("over TLS".into())));
    assert_eq!(status_as(cluster.config()).await, Ok(()));

    // No TLS at all: the server's TLS answer is recognised and named.
    let mut plain = cluster.config().clone();
    plain.tls = None;
    let why = status_as(&plain)
        .await
        .expect_err("a plain client is refused");
    assert!(why.contains("speaks TLS"), "{why}");

    // A certificate from another CA.
    let mut stranger = cluster.config().clone();
    stranger.tls = Some(other.clone());
    let why = status_as(&stranger)
        .await
        .expect_err("another CA is refused");
    assert!(why.contains("certificate"), "{why}");

    // A node whose certificate another CA signed calls a peer port: refused too.
    let why = vote_as(&stranger, TlsIdentity::Node(0), 1)
        .await
        .expect_err("another CA's node is refused");
    assert!(why.contains("certificate"), "{why}");

    // The cluster's own client certificate on a peer port: it is not a node's.
    let why = vote_as(cluster.config(), TlsIdentity::Client, 1)
        .await
        .expect_err("a client certificate is refused on a peer port");
    assert!(why.contains("CertificateUnknown"), "{why}");

    // The cluster never noticed.
    clerk.append("k", "!").await.expect("append");
    assert_eq!(clerk.get_string("k").await, Ok(Some("over TLS!".into())));
    cluster.shutdown().await;
}

/// Calls `Raft.RequestVote` (a pre-vote, harmless) on node `to`'s peer port as `who` with
/// `config`'s certificates; on failure (which must be `Unreachable`), the link's last error.
async fn vote_as(config: &ClusterFile, who: TlsIdentity, to: usize) -> Result<(), String> {
    let mut settings = config.tcp_settings();
    settings.tls = config.tls_config(who).expect("the TLS files");
    let link = Link::start(config.nodes[to].peer, Arc::new(settings));
    let end = client_end("caller", &link);
    let vote = RequestVoteArgs {
        term: 0,
        candidate_id: 0,
        last_log_index: 0,
        last_log_term: 0,
        pre_vote: true,
        leadership_transfer: false,
    };
    let answer = tokio::time::timeout(CALL_LIMIT, end.call(&vote)).await;
    let status = link.send(GetLinkStatus).await.expect("the link answers");
    match answer {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RpcError::Unreachable)) => Err(status.last_error.unwrap_or_default()),
        other => panic!("a refused call must be unreachable: {other:?}"),
    }
}

#[actix::test]
async fn an_expired_certificate_is_refused_on_both_ends() {
    let scratch = Scratch::new("tls-expired");
    let dir = certificates(&scratch.0, "certs", 3);
    // Node 1's certificate expired yesterday; the CA and the others are good.
    let day = Duration::from_secs(24 * 3600);
    let expired = Validity {
        not_before: SystemTime::now() - 30 * day,
        not_after: SystemTime::now() - day,
    };
    for file in ["node-1.pem", "node-1.key"] {
        std::fs::remove_file(dir.join(file)).expect("remove node 1's certificate");
    }
    certs::node(&dir, 1, expired).expect("an expired certificate for node 1");
    let mut cluster = LocalCluster::start(LocalOptions {
        tls: Some(dir.clone()),
        ..LocalOptions::default()
    })
    .await
    .expect("the cluster starts");

    // Nodes 0 and 2 are a majority and serve.
    let clerk = cluster.client().clerk();
    clerk.put("k", "v").await.expect("put");
    assert_eq!(clerk.get_string("k").await, Ok(Some("v".into())));

    // A client checks node 1's certificate and refuses it.
    let why = status_of(cluster.config(), 1)
        .await
        .expect_err("node 1's expired certificate is refused");
    assert!(why.contains("certificate expired"), "{why}");
    // Node 1 calling a peer port is refused by the node it calls.
    let why = vote_as(cluster.config(), TlsIdentity::Node(1), 0)
        .await
        .expect_err("node 1 is refused");
    assert!(why.contains("CertificateExpired"), "{why}");
    cluster.shutdown().await;
}

#[test]
fn three_serve_processes_with_tls_and_rainkv_ctl() {
    let scratch = Scratch::new("tls-processes");
    let init = Command::new(env!("CARGO_BIN_EXE_rainkv-ctl"))
        .args(["certs", "init"])
        .arg(scratch.0.join("certs"))
        .args(["--nodes", "3"])
        .output()
        .expect("rainkv-ctl certs init");
    assert!(init.status.success(), "{}", text(&init.stderr));
    // The cluster file names the directory relative to itself.
    let path = write_config(&scratch.0, "tls-token", &free_ports());
    let mut config = ClusterFile::load(&path).expect("config");
    config.tls = Some(PathBuf::from("certs"));
    std::fs::write(&path, config.to_toml().expect("TOML")).expect("write config");

    let mut servers = Servers(Vec::new());
    for id in 0..3 {
        let child = serve_command(&path, id, &scratch.0.join(format!("node-{id}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rainkv serve");
        servers.0.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let put = ctl(&path, 5, &["put", "greeting", "hello"]);
        if put.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write within 15 s: {}",
            text(&put.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let get = ctl(&path, 5, &["get", "greeting"]);
    assert_eq!(text(&get.stdout), "hello\n", "{}", text(&get.stderr));
    let status = ctl(&path, 5, &["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains("leader"));

    // A client whose TLS files are missing is told so, before anything is tried.
    let mut broken = config.clone();
    broken.tls = Some(scratch.0.join("no-such-dir"));
    let broken_path = scratch.0.join("broken.toml");
    std::fs::write(&broken_path, broken.to_toml().expect("TOML")).expect("write");
    let refused = ctl(&broken_path, 5, &["get", "greeting"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("TLS identity"),
        "{}",
        text(&refused.stderr)
    );
    drop(servers);

    // Plain TCP on an address that is not loopback: refused unless --insecure.
    let mut exposed = config;
    exposed.tls = None;
    exposed.nodes[0].peer.set_ip([0, 0, 0, 0].into());
    let exposed_path = scratch.0.join("exposed.toml");
    std::fs::write(&exposed_path, exposed.to_toml().expect("TOML")).expect("write");
    let exposed_serve = run_bounded(
        &mut serve_command(&exposed_path, 0, &scratch.0.join("exposed-data")),
        Duration::from_secs(10),
    );
    let (exited, stderr) = (exposed_serve.status, exposed_serve.stderr);
    assert!(
        exited.is_some_and(|s| !s.success()),
        "it started: {exited:?}"
    );
    assert!(stderr.contains("--insecure"), "{stderr}");
}

#[test]
fn the_demo_runs_over_tls() {
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_rainkv")).args([
            "demo",
            "--seconds",
            "2",
            "--clients",
            "3",
            "--tls",
        ]),
        Duration::from_secs(60),
    );
    let stdout = &out.stdout;
    assert!(
        out.status.is_some_and(|s| s.success()),
        "{:?}\n{stdout}{}",
        out.status,
        out.stderr
    );
    assert!(stdout.contains("mutual TLS"), "{stdout}");
    assert!(stdout.contains("verdict: linearizable"), "{stdout}");
}
