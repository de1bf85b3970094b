//! labrpc's tests (6.5840 `labrpc/test_test.go`), ported to the simulated network actor and run
//! in virtual time, plus `same_seed_same_trace`, which checks that a seed replays exactly.

use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use rainkv::actors::client_end::ClientEnd;
use rainkv::actors::network::NetworkHandle;
use rainkv::messages::net::{encode, Dispatch, Rpc, RpcError, Server};
use rainkv::testkit::{self, run_test, Sim, TestOptions};
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, timeout, Instant};

// JunkServer's methods: each request type names its method and reply type.

/// Records its argument in log1 and returns it parsed as an integer.
#[derive(Serialize, Deserialize)]
struct Handler1(String);
impl Rpc for Handler1 {
    const METHOD: &'static str = "JunkServer.Handler1";
    type Reply = i64;
}

/// Records its argument in log2 and returns `"handler2-<arg>"`.
#[derive(Serialize, Deserialize)]
struct Handler2(i64);
impl Rpc for Handler2 {
    const METHOD: &'static str = "JunkServer.Handler2";
    type Reply = String;
}

/// Sleeps 20 s, then returns `-arg`.
#[derive(Serialize, Deserialize)]
struct Handler3(i64);
impl Rpc for Handler3 {
    const METHOD: &'static str = "JunkServer.Handler3";
    type Reply = i64;
}

/// Returns the length of its argument.
#[derive(Serialize, Deserialize)]
struct Handler6(String);
impl Rpc for Handler6 {
    const METHOD: &'static str = "JunkServer.Handler6";
    type Reply = i64;
}

/// Returns `arg` times "y".
#[derive(Serialize, Deserialize)]
struct Handler7(i64);
impl Rpc for Handler7 {
    const METHOD: &'static str = "JunkServer.Handler7";
    type Reply = String;
}

#[derive(Default)]
struct JunkServer {
    log1: Vec<String>,
    log2: Vec<i64>,
}

impl Actor for JunkServer {
    type Context = Context<Self>;
}

/// How many calls reached Handler2.
#[derive(Message)]
#[rtype(result = "usize")]
struct Log2Len;

impl Handler<Log2Len> for JunkServer {
    type Result = usize;
    fn handle(&mut self, _: Log2Len, _: &mut Self::Context) -> usize {
        self.log2.len()
    }
}

fn answer<T: Serialize>(reply: Result<T, RpcError>) -> ResponseFuture<Result<Vec<u8>, RpcError>> {
    let encoded = reply.and_then(|r| encode(&r));
    Box::pin(async move { encoded })
}

impl Handler<Dispatch> for JunkServer {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        match msg.method {
            Handler1::METHOD => answer(msg.decode::<Handler1>().map(|Handler1(s)| {
                self.log1.push(s.clone());
                s.parse::<i64>().unwrap_or(-1)
            })),
            Handler2::METHOD => answer(msg.decode::<Handler2>().map(|Handler2(x)| {
                self.log2.push(x);
                format!("handler2-{x}")
            })),
            Handler3::METHOD => match msg.decode::<Handler3>() {
                Ok(Handler3(x)) => Box::pin(async move {
                    sleep(Duration::from_secs(20)).await;
                    encode(&-x)
                }),
                Err(e) => answer::<i64>(Err(e)),
            },
            Handler6::METHOD => answer(msg.decode::<Handler6>().map(|Handler6(s)| s.len() as i64)),
            Handler7::METHOD => answer(
                msg.decode::<Handler7>()
                    .map(|Handler7(n)| "y".repeat(n.max(0) as usize)),
            ),
            other => answer::<()>(Err(RpcError::UnknownMethod(other.to_string()))),
        }
    }
}

/// One JunkServer registered as `server99`, and an enabled end `end` connected to it.
async fn junk_setup(net: &NetworkHandle, end: &str) -> (Addr<JunkServer>, ClientEnd) {
    let junk = JunkServer::default().start();
    net.add_server(
        "server99",
        Server::new().with_service("JunkServer", junk.clone().recipient()),
    );
    let e = net.make_end(end, None).await.expect("fresh end name");
    net.connect(end, "server99");
    net.enable(end, true);
    (junk, e)
}

#[test]
fn basic() {
    run_test("basic", |sim: Sim| async move {
        let (_, e) = junk_setup(sim.network(), "end1-99").await;
        assert_eq!(e.call(&Handler2(111)).await, Ok("handler2-111".to_string()));
        assert_eq!(e.call(&Handler1("9099".into())).await, Ok(9099));
    });
}

#[test]
fn disconnect() {
    run_test("disconnect", |sim: Sim| async move {
        let net = sim.network();
        let (_, e) = junk_setup(net, "end1-99").await;
        net.enable("end1-99", false);
        assert_eq!(e.call(&Handler2(111)).await, Err(RpcError::Unreachable));
        net.enable("end1-99", true);
        assert_eq!(e.call(&Handler1("9099".into())).await, Ok(9099));
    });
}

#[test]
fn counts() {
    run_test("counts", |sim: Sim| async move {
        let net = sim.network();
        let (_, e) = junk_setup(net, "end1-99").await;
        for i in 0..17 {
            assert_eq!(e.call(&Handler2(i)).await, Ok(format!("handler2-{i}")));
        }
        assert_eq!(net.count("server99").await, Ok(17));
    });
}

#[test]
fn bytes() {
    run_test("bytes", |sim: Sim| async move {
        let net = sim.network();
        let (_, e) = junk_setup(net, "end1-99").await;
        let arg = "x".repeat(284);
        for _ in 0..17 {
            assert_eq!(e.call(&Handler6(arg.clone())).await, Ok(284));
        }
        let n = net.total_bytes().await.expect("network");
        assert!((4828..=6000).contains(&n), "wrong byte count {n}");

        for _ in 0..17 {
            assert_eq!(e.call(&Handler7(107)).await, Ok("y".repeat(107)));
        }
        let delta = net.total_bytes().await.expect("network") - n;
        assert!((1800..=2500).contains(&delta), "wrong byte count {delta}");
    });
}

#[test]
fn concurrent_many() {
    run_test("concurrent_many", |sim: Sim| async move {
        let net = sim.network().clone();
        let junk = JunkServer::default().start();
        net.add_server(
            "1000",
            Server::new().with_service("JunkServer", junk.recipient()),
        );
        let mut clients = Vec::new();
        for i in 0..20 {
            let name = format!("end-{i}");
            let e = net.make_end(&name, None).await.expect("fresh end");
            net.connect(&name, "1000");
            net.enable(&name, true);
            clients.push(actix::spawn(async move {
                let mut n = 0;
                for j in 0..10 {
                    let arg = i * 100 + j;
                    assert_eq!(e.call(&Handler2(arg)).await, Ok(format!("handler2-{arg}")));
                    n += 1;
                }
                n
            }));
        }
        let total: i32 = join_all(clients)
            .await
            .into_iter()
            .map(|r| r.expect("client"))
            .sum();
        assert_eq!(total, 200);
        assert_eq!(net.count("1000").await, Ok(200));
    });
}

#[test]
fn unreliable() {
    run_test("unreliable", |sim: Sim| async move {
        let net = sim.network().clone();
        let junk = JunkServer::default().start();
        net.add_server(
            "1000",
            Server::new().with_service("JunkServer", junk.recipient()),
        );
        net.set_reliable(false);
        let mut clients = Vec::new();
        for i in 0..300 {
            let name = format!("end-{i}");
            let e = net.make_end(&name, None).await.expect("fresh end");
            net.connect(&name, "1000");
            net.enable(&name, true);
            clients.push(actix::spawn(async move {
                match e.call(&Handler2(i * 100)).await {
                    Ok(reply) => {
                        assert_eq!(reply, format!("handler2-{}", i * 100));
                        1
                    }
                    Err(_) => 0,
                }
            }));
        }
        let ok: i32 = join_all(clients)
            .await
            .into_iter()
            .map(|r| r.expect("client"))
            .sum();
        assert!(
            ok != 0 && ok != 300,
            "{ok} of 300 calls succeeded on an unreliable net"
        );
    });
}

#[test]
fn concurrent_one() {
    run_test("concurrent_one", |sim: Sim| async move {
        let net = sim.network();
        let (junk, e) = junk_setup(net, "end-one").await;
        let calls = (0..20).map(|i| {
            let e = e.clone();
            actix::spawn(async move {
                assert_eq!(
                    e.call(&Handler2(100 + i)).await,
                    Ok(format!("handler2-{}", 100 + i))
                );
            })
        });
        for call in join_all(calls).await {
            call.expect("caller");
        }
        assert_eq!(junk.send(Log2Len).await, Ok(20));
        assert_eq!(net.count("server99").await, Ok(20));
    });
}

/// Calls stuck in the delay of a disabled end must not slow down a call made after enabling.
#[test]
fn regression1() {
    run_test("regression1", |sim: Sim| async move {
        let net = sim.network();
        let (junk, e) = junk_setup(net, "end").await;
        net.enable("end", false);
        let stuck: Vec<_> = (0..20)
            .map(|i| {
                let e = e.clone();
                actix::spawn(async move {
                    assert_eq!(e.call(&Handler2(i)).await, Err(RpcError::Unreachable));
                })
            })
            .collect();
        sleep(Duration::from_millis(100)).await;

        let t0 = Instant::now();
        net.enable("end", true);
        assert_eq!(e.call(&Handler2(99)).await, Ok("handler2-99".to_string()));
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(30),
            "RPC took too long ({took:?}) after enable"
        );

        for call in join_all(stuck).await {
            call.expect("caller");
        }
        assert_eq!(junk.send(Log2Len).await, Ok(1));
        assert_eq!(net.count("server99").await, Ok(1));
    });
}

/// A call whose server is deleted while its handler runs fails promptly.
#[test]
fn killed() {
    run_test("killed", |sim: Sim| async move {
        let net = sim.network();
        let (_, e) = junk_setup(net, "end1-99").await;
        let mut call = actix::spawn(async move { e.call(&Handler3(99)).await });
        sleep(Duration::from_secs(1)).await;
        assert!(
            timeout(Duration::from_millis(100), &mut call)
                .await
                .is_err(),
            "Handler3 should not have returned yet"
        );
        net.delete_server("server99");
        match timeout(Duration::from_millis(100), call).await {
            Ok(result) => assert_eq!(
                result.expect("caller"),
                Err(RpcError::Unreachable),
                "Handler3 returned successfully despite DeleteServer()"
            ),
            Err(_) => panic!("Handler3 should return after DeleteServer()"),
        }
    });
}

/// Beyond labrpc: one-way link cuts between servers, one-call partitions, and deleted ends.
#[test]
fn links_partitions_and_deleted_ends() {
    run_test("links_partitions_and_deleted_ends", |sim: Sim| async move {
        let net = sim.network();
        let mut junks = Vec::new();
        for name in ["a", "b"] {
            let junk = JunkServer::default().start();
            net.add_server(
                name,
                Server::new().with_service("JunkServer", junk.clone().recipient()),
            );
            junks.push(junk);
        }
        let handled_by_a = || junks[0].send(Log2Len);
        // a's end to b and b's end to a.
        let ab = net.make_end("a->b", Some("a")).await.expect("fresh end");
        let ba = net.make_end("b->a", Some("b")).await.expect("fresh end");
        net.connect("a->b", "b");
        net.connect("b->a", "a");
        net.enable("a->b", true);
        net.enable("b->a", true);
        let reaches = |end: &ClientEnd| {
            let end = end.clone();
            async move { end.call(&Handler2(1)).await.is_ok() }
        };
        assert!(reaches(&ab).await && reaches(&ba).await);

        net.set_link("a", "b", false);
        assert!(!reaches(&ab).await, "a -> b is cut: a's calls to b fail");
        let before = handled_by_a().await.expect("a's junk server");
        assert!(!reaches(&ba).await, "a's replies to b are lost");
        assert_eq!(
            handled_by_a().await.expect("a's junk server"),
            before + 1,
            "b's request reached a (only a's answer was lost)"
        );
        net.set_link("b", "a", false);
        net.set_link("a", "b", true);
        assert!(!reaches(&ab).await, "b's replies to a are lost");
        net.set_link("b", "a", true);
        assert!(reaches(&ab).await, "a -> b restored");

        net.partition(&[vec!["a".to_string()], vec!["b".to_string()]]);
        assert!(
            !reaches(&ab).await && !reaches(&ba).await,
            "a and b are apart"
        );
        net.partition(&[vec!["a".to_string(), "b".to_string()]]);
        assert!(reaches(&ab).await && reaches(&ba).await, "healed");

        net.delete_end("a->b");
        assert!(!reaches(&ab).await, "a deleted end reaches nothing");
    });
}

/// Beyond labrpc: with duplicates on, some requests are handled twice, yet every caller gets
/// exactly one answer.
#[test]
fn duplicated_requests_are_handled_twice_and_answered_once() {
    run_test(
        "duplicated_requests_are_handled_twice_and_answered_once",
        |sim: Sim| async move {
            let net = sim.network();
            let junk = JunkServer::default().start();
            net.add_server(
                "s",
                Server::new().with_service("JunkServer", junk.clone().recipient()),
            );
            let end = net.make_end("c", None).await.expect("fresh end");
            net.connect("c", "s");
            net.enable("c", true);
            net.set_duplicates(true);
            const CALLS: usize = 1000;
            for i in 0..CALLS {
                let reply = end.call(&Handler2(i as i64)).await;
                assert_eq!(reply, Ok(format!("handler2-{i}")));
            }
            net.set_duplicates(false);
            // Let the last copies arrive (they trail their originals by under 30 ms).
            sleep(Duration::from_millis(100)).await;
            let handled = junk.send(Log2Len).await.expect("junk server");
            // One in ten is duplicated: 100 expected, and fewer than 50 or more than 160 is off by
            // over five standard deviations.
            let copies = handled - CALLS;
            assert!(
                (50..=160).contains(&copies),
                "{copies} duplicates of {CALLS}"
            );
        },
    );
}

/// A scenario full of faults: lossy net, long delays, long reordering, ends toggled, a server
/// replaced. Returns every call's outcome with its virtual completion time.
async fn faulty_scenario(sim: Sim) -> Vec<(i64, bool, u128)> {
    let net = sim.network().clone();
    for s in 0..3 {
        let junk = JunkServer::default().start();
        net.add_server(
            &s.to_string(),
            Server::new().with_service("JunkServer", junk.recipient()),
        );
    }
    net.set_reliable(false);
    net.set_long_delays(true);
    net.set_long_reordering(true);
    let start = Instant::now();
    let mut calls = Vec::new();
    for i in 0..30i64 {
        let name = format!("end-{i}");
        let e = net.make_end(&name, None).await.expect("fresh end");
        net.connect(&name, &(i % 3).to_string());
        net.enable(&name, i % 7 != 0);
        calls.push(actix::spawn(async move {
            let mut outcomes = Vec::new();
            for j in 0..10 {
                let ok = e.call(&Handler2(i * 100 + j)).await.is_ok();
                outcomes.push((i * 100 + j, ok, start.elapsed().as_nanos()));
            }
            outcomes
        }));
    }
    sleep(Duration::from_millis(1500)).await;
    net.enable("end-0", true);
    net.enable("end-1", false);
    let junk = JunkServer::default().start();
    net.add_server(
        "2",
        Server::new().with_service("JunkServer", junk.recipient()),
    );
    join_all(calls)
        .await
        .into_iter()
        .flat_map(|r| r.expect("client"))
        .collect()
}

/// Replay is a property of virtual time, so this test always runs on the virtual clock.
#[test]
fn same_seed_same_trace() {
    let options = TestOptions {
        realtime: false,
        ..TestOptions::default()
    };
    for seed in testkit::seeds() {
        let (first, hash) = testkit::run_seed(seed, &options, faulty_scenario);
        let (again, hash_again) = testkit::run_seed(seed, &options, faulty_scenario);
        let (other, other_hash) =
            testkit::run_seed(seed.wrapping_add(1), &options, faulty_scenario);
        assert_eq!(
            first, again,
            "RAINKV_SEED={seed}: outcomes differ between two runs"
        );
        assert_eq!(
            hash, hash_again,
            "RAINKV_SEED={seed}: trace differs between two runs"
        );
        assert_ne!(
            hash, other_hash,
            "RAINKV_SEED={seed}: a different seed gave the same trace"
        );
        assert_ne!(
            first, other,
            "RAINKV_SEED={seed}: a different seed gave the same outcomes"
        );
        assert!(first.iter().any(|c| c.1) && first.iter().any(|c| !c.1));
        testkit::report_trace_hash(hash);
    }
}
