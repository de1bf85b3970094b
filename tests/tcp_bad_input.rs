//! Bad input on a node's peer and client ports: random bytes, an oversized length prefix, a
//! wrong token, a silent (half-open) connection and a frame that stops half way. Each must be
//! refused or dropped, logged, and counted, and the node must keep serving throughout.

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rainkv::actors::tcp::{Frame, Hello, Lane, PROTOCOL_VERSION};
use rainkv::deploy::cluster_file::TransportOverrides;
use rainkv::deploy::local::{LocalCluster, LocalOptions};
use rainkv::deploy::node::PortStats;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Every test ends within this, whatever goes wrong.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// The handshake and frame timeouts of the cluster under test.
const SHORT: Duration = Duration::from_millis(300);

/// Keeps every warning logged by this test binary, so tests can check that a refusal was
/// logged (tests run in parallel: each looks for its own ports' addresses).
struct Recorder;

fn warnings() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LINES.get_or_init(|| Mutex::new(Vec::new()))
}

impl log::Log for Recorder {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = record.args().to_string();
            warnings()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(line);
        }
    }

    fn flush(&self) {}
}

fn install_recorder() {
    static INSTALL: OnceLock<()> = OnceLock::new();
    INSTALL.get_or_init(|| {
        if log::set_boxed_logger(Box::new(Recorder)).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    });
}

/// A warning about `port` that contains `needle`, if one was logged.
fn logged(port: SocketAddr, needle: &str) -> bool {
    let port = port.to_string();
    warnings()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .any(|line| line.contains(&port) && line.contains(needle))
}

async fn cluster() -> LocalCluster {
    install_recorder();
    let options = LocalOptions {
        transport: TransportOverrides {
            handshake_timeout_ms: Some(SHORT.as_millis() as u64),
            frame_timeout_ms: Some(SHORT.as_millis() as u64),
            ..TransportOverrides::default()
        },
        ..LocalOptions::default()
    };
    let cluster = LocalCluster::start(options).await.expect("cluster starts");
    let leader = cluster
        .client()
        .wait_for_leader(Duration::from_secs(5))
        .await;
    assert!(leader.is_some(), "no leader");
    cluster
}

/// Node 0's two ports, named.
fn ports(cluster: &LocalCluster) -> [(&'static str, SocketAddr); 2] {
    let node = cluster.config().nodes[0];
    [("peer", node.peer), ("client", node.client)]
}

async fn stats(cluster: &LocalCluster) -> PortStats {
    cluster.node(0).expect("node 0 runs").port_stats().await
}

/// Reads until the server closes the connection; returns what it sent. Fails the test if it
/// stays open for more than `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let closed = timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    received
}

/// The refusal frame at the start of `bytes`, if the server sent one.
fn refusal(bytes: &[u8]) -> Option<String> {
    let mut buf = bytes::BytesMut::from(bytes);
    match Frame::parse(&mut buf, 1 << 20) {
        Ok(Some(Frame::Refused { reason })) => Some(reason),
        _ => None,
    }
}

/// The node still serves clients, and node 0 answers its status.
async fn still_serving(cluster: &LocalCluster, key: &str) {
    let clerk = cluster.client().clerk();
    clerk.put(key.to_string(), "alive").await.expect("put");
    let value = clerk.get_string(key.to_string()).await;
    assert_eq!(value, Ok(Some("alive".to_string())));
    let reports = cluster.client().status(Duration::from_secs(1)).await;
    assert!(reports[0].status.is_ok(), "{:?}", reports[0]);
}

fn hello(token: &str) -> Vec<u8> {
    Frame::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        cluster: "rainkv-local".into(),
        token: token.into(),
        lane: Lane::Control,
    })
    .encode(1 << 20)
    .expect("encode")
}

async fn bounded<F: std::future::Future>(test: F) -> F::Output {
    timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit")
}

#[actix::test]
async fn random_bytes_are_refused_and_the_node_keeps_serving() {
    bounded(async {
        let mut cluster = cluster().await;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (name, port) in ports(&cluster) {
            let before = stats(&cluster).await;
            for attempt in 0..5 {
                let garbage: Vec<u8> = (0..rng.gen_range(1..4096)).map(|_| rng.gen()).collect();
                let mut stream = TcpStream::connect(port).await.expect("connect");
                // The server may close before taking all of it; that is its right.
                let _ = stream.write_all(&garbage).await;
                read_until_closed(&mut stream, SHORT * 4).await;
                still_serving(&cluster, &format!("{name}-{attempt}")).await;
            }
            let after = stats(&cluster).await;
            let refused = |s: PortStats| {
                if name == "peer" {
                    s.peer.refused
                } else {
                    s.client.refused
                }
            };
            assert_eq!(refused(after) - refused(before), 5, "{name}: {after:?}");
            assert!(logged(port, "refused connection"), "{name}: nothing logged");
        }
        cluster.shutdown().await;
    })
    .await;
}

#[actix::test]
async fn an_oversized_length_prefix_is_refused_at_once() {
    bounded(async {
        let mut cluster = cluster().await;
        for (name, port) in ports(&cluster) {
            let mut stream = TcpStream::connect(port).await.expect("connect");
            let started = Instant::now();
            stream
                .write_all(&u32::MAX.to_be_bytes())
                .await
                .expect("write");
            let reply = read_until_closed(&mut stream, SHORT * 4).await;
            // Refused on the prefix alone, without waiting for a body or a timeout.
            assert!(
                started.elapsed() < SHORT,
                "{name}: took {:?}",
                started.elapsed()
            );
            let reason = refusal(&reply).unwrap_or_default();
            assert!(reason.contains("exceeds the maximum"), "{name}: {reason:?}");
            assert!(
                logged(port, "exceeds the maximum"),
                "{name}: nothing logged"
            );
            still_serving(&cluster, name).await;
        }
        // After the handshake, too: an oversized frame drops the connection.
        let port = ports(&cluster)[1].1;
        let mut stream = TcpStream::connect(port).await.expect("connect");
        stream
            .write_all(&hello(&cluster.config().token))
            .await
            .expect("write");
        let mut prefix = [0u8; 4];
        stream
            .read_exact(&mut prefix)
            .await
            .expect("welcome length");
        let mut welcome = vec![0u8; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut welcome).await.expect("welcome");
        stream
            .write_all(&u32::MAX.to_be_bytes())
            .await
            .expect("write");
        read_until_closed(&mut stream, SHORT * 4).await;
        assert_eq!(stats(&cluster).await.client.dropped, 1);
        still_serving(&cluster, "after-handshake").await;
        cluster.shutdown().await;
    })
    .await;
}

#[actix::test]
async fn a_wrong_token_is_refused_with_the_reason() {
    bounded(async {
        let mut cluster = cluster().await;
        for (name, port) in ports(&cluster) {
            let mut stream = TcpStream::connect(port).await.expect("connect");
            stream
                .write_all(&hello("not-the-token"))
                .await
                .expect("write");
            let reply = read_until_closed(&mut stream, SHORT * 4).await;
            assert_eq!(
                refusal(&reply).as_deref(),
                Some("wrong cluster token"),
                "{name}"
            );
            assert!(
                logged(port, "wrong cluster token"),
                "{name}: nothing logged"
            );
            still_serving(&cluster, name).await;
        }
        let after = stats(&cluster).await;
        assert_eq!(
            (after.peer.refused, after.client.refused),
            (1, 1),
            "{after:?}"
        );
        cluster.shutdown().await;
    })
    .await;
}

#[actix::test]
async fn silent_and_stalled_connections_are_closed_after_their_timeouts() {
    bounded(async {
        let mut cluster = cluster().await;
        for (name, port) in ports(&cluster) {
            // Connects and says nothing: closed after the handshake timeout, and meanwhile
            // the node serves as usual.
            let mut silent = TcpStream::connect(port).await.expect("connect");
            // Half a hello, then nothing.
            let mut half = TcpStream::connect(port).await.expect("connect");
            let bytes = hello(&cluster.config().token);
            half.write_all(&bytes[..bytes.len() / 2])
                .await
                .expect("write");
            still_serving(&cluster, name).await;
            let started = Instant::now();
            read_until_closed(&mut silent, SHORT * 10).await;
            read_until_closed(&mut half, SHORT * 10).await;
            assert!(started.elapsed() < SHORT * 10);
            assert!(
                logged(port, "no handshake within"),
                "{name}: nothing logged"
            );
        }
        let after = stats(&cluster).await;
        assert_eq!(
            (after.peer.refused, after.client.refused),
            (2, 2),
            "{after:?}"
        );

        // Past the handshake, a frame that stops half way is dropped after the frame
        // timeout, while an idle connection is left alone.
        let port = ports(&cluster)[1].1;
        let mut stalled = TcpStream::connect(port).await.expect("connect");
        let mut idle = TcpStream::connect(port).await.expect("connect");
        for stream in [&mut stalled, &mut idle] {
            stream
                .write_all(&hello(&cluster.config().token))
                .await
                .expect("write");
        }
        stalled
            .write_all(&[0, 0, 0, 100, 1, 2, 3])
            .await
            .expect("write");
        read_until_closed(&mut stalled, SHORT * 10).await;
        assert!(logged(port, "did not arrive in time"), "nothing logged");
        let mut byte = [0u8; 1];
        let idle_read = timeout(SHORT * 2, async {
            // The welcome frame, then silence: the connection stays open.
            let mut welcome = [0u8; 64];
            let _ = idle.read(&mut welcome).await;
            idle.read(&mut byte).await
        })
        .await;
        assert!(
            idle_read.is_err(),
            "an idle connection was closed: {idle_read:?}"
        );
        let after = stats(&cluster).await;
        assert_eq!(after.client.dropped, 1, "{after:?}");
        still_serving(&cluster, "after-stall").await;
        cluster.shutdown().await;
    })
    .await;
}

/// Warnings logged about `port` that contain `needle`.
fn count_logged(port: SocketAddr, needle: &str) -> usize {
    let port = port.to_string();
    warnings()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .filter(|line| line.contains(&port) && line.contains(needle))
        .count()
}

#[actix::test]
async fn a_flood_of_idle_sockets_locks_no_client_out() {
    bounded(async {
        // The default handshake timeout: a flood's sockets are held as long as they would be
        // in production.
        install_recorder();
        let mut cluster = LocalCluster::start(LocalOptions::default())
            .await
            .expect("cluster starts");
        let (leader, _) = cluster
            .client()
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("a leader");
        let node = cluster.config().nodes[leader];
        // A client that keeps writing through the flood, connected before it.
        let clerk = cluster.client().clerk();
        clerk.put("flood-0", "x").await.expect("first put");
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let writer = {
            let stop = stop.clone();
            actix::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                while !stop.get() {
                    match clerk.put(format!("flood-{ok}"), "x").await {
                        Ok(()) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        };
        // 2 000 sockets that never say a word on each of the leader's ports (more than a port
        // serves), opened as fast as they go and held.
        let mut flood = Vec::new();
        for i in 0..4000 {
            let port = if i % 2 == 0 { node.client } else { node.peer };
            flood.push(TcpStream::connect(port).await.expect("connect"));
        }
        // Meanwhile a new client connects and writes, in far less than the handshake timeout.
        let fresh = rainkv::deploy::client::ClusterClient::connect(cluster.config());
        let started = Instant::now();
        let put = timeout(Duration::from_millis(500), fresh.clerk().put("fresh", "y")).await;
        assert!(
            matches!(put, Ok(Ok(()))),
            "a new client during the flood: {put:?} after {:?}",
            started.elapsed()
        );
        // Every flood socket is closed: evicted or timed out in its handshake.
        let refused = |s: PortStats| s.client.refused + s.peer.refused;
        let node_stats = || async { cluster.node(leader).expect("runs").port_stats().await };
        let settled = timeout(Duration::from_secs(10), async {
            while refused(node_stats().await) < 4000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(settled.is_ok(), "{:?}", node_stats().await);
        stop.set(true);
        let (ok, failed) = writer.await.expect("writer");
        assert_eq!(failed, 0, "{ok} writes succeeded, {failed} failed");
        assert!(ok > 0);
        // A few lines per port, not one per socket.
        for port in [node.client, node.peer] {
            let lines = count_logged(port, "connection");
            assert!((1..=20).contains(&lines), "{port}: {lines} warnings");
        }
        drop(flood);
        fresh.close();
        still_serving(&cluster, "after-flood").await;
        cluster.shutdown().await;
    })
    .await;
}
