//! Mutual TLS on every connection. A cluster whose certificates come from `rainkv-ctl certs
//! init` serves clients that show the client certificate; a client with no TLS, a client
//! whose certificate another CA signed, and a node with such a certificate calling a peer
//! port are all refused at the TLS handshake, and the refusal says why. Then the binaries:
//! three `rainkv serve` processes with TLS on and `rainkv-ctl` against them, and a plain
//! `serve` on an address that is not loopback refuses to start.

mod processes;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use processes::{free_ports, serve_command, wait_bounded, write_config, Scratch, Servers};
use rainkv::actors::tcp::{client_end, Link};
use rainkv::deploy::certs;
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
    certs::init(&dir, nodes).expect("certs init");
    dir
}

/// Calls `Admin.Status` on node 0's client port with `config`'s client identity; on failure,
/// the link's last error.
async fn status_as(config: &ClusterFile) -> Result<(), String> {
    let client = ClusterClient::connect(config);
    let end = client.ends().remove(0);
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
    let mut settings = stranger.tcp_settings();
    settings.tls = stranger
        .tls_config(TlsIdentity::Node(0))
        .expect("the other CA's node certificate");
    let link = Link::start(cluster.config().nodes[1].peer, Arc::new(settings));
    let end = client_end("rogue-node", &link);
    let vote = RequestVoteArgs {
        term: 99,
        candidate_id: 0,
        last_log_index: 0,
        last_log_term: 0,
        pre_vote: true,
        leadership_transfer: false,
    };
    let answer = tokio::time::timeout(CALL_LIMIT, end.call(&vote)).await;
    assert!(
        matches!(answer, Ok(Err(RpcError::Unreachable))),
        "{answer:?}"
    );
    let status = link.send(GetLinkStatus).await.expect("the link answers");
    let why = status.last_error.unwrap_or_default();
    assert!(why.contains("certificate"), "{why}");

    // The cluster never noticed.
    clerk.append("k", "!").await.expect("append");
    assert_eq!(clerk.get_string("k").await, Ok(Some("over TLS!".into())));
    cluster.shutdown().await;
}

fn ctl(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rainkv-ctl"))
        .arg("--config")
        .arg(config)
        .args(["--timeout", "5"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rainkv-ctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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
        let put = ctl(&path, &["put", "greeting", "hello"]);
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
    let get = ctl(&path, &["get", "greeting"]);
    assert_eq!(text(&get.stdout), "hello\n", "{}", text(&get.stderr));
    let status = ctl(&path, &["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains("leader"));

    // A client whose TLS files are missing is told so, before anything is tried.
    let mut broken = config.clone();
    broken.tls = Some(scratch.0.join("no-such-dir"));
    let broken_path = scratch.0.join("broken.toml");
    std::fs::write(&broken_path, broken.to_toml().expect("TOML")).expect("write");
    let refused = ctl(&broken_path, &["get", "greeting"]);
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
    let mut exposed_serve = serve_command(&exposed_path, 0, &scratch.0.join("exposed-data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rainkv serve");
    let exited = wait_bounded(&mut exposed_serve, Duration::from_secs(10));
    if exited.is_none() {
        // It started: stop it before reading what it said (the pipe stays open until then).
        let _ = exposed_serve.kill();
        let _ = exposed_serve.wait();
    }
    let mut stderr = String::new();
    if let Some(pipe) = exposed_serve.stderr.as_mut() {
        std::io::Read::read_to_string(pipe, &mut stderr).expect("read stderr");
    }
    assert!(
        exited.is_some_and(|s| !s.success()),
        "it started: {exited:?}"
    );
    assert!(stderr.contains("--insecure"), "{stderr}");
}
