//! The TCP transport on its own, over loopback: a test service behind a [`Listener`], called
//! through [`Link`]s. Real time, every wait bounded.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use rainkv::actors::client_end::ClientEnd;
use rainkv::actors::tcp::*;
use rainkv::messages::lifecycle::Stop;
use rainkv::messages::net::{encode, Dispatch, Rpc, RpcError, Server};
use rainkv::messages::tcp::{Drain, Drained, GetLinkStatus, GetListenerStats, ListenerStats};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::time::{sleep, timeout, Instant};

/// Every test ends within this, whatever goes wrong.
const TEST_LIMIT: Duration = Duration::from_secs(20);

/// `Test.Echo`: answers its payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Echo(#[serde(with = "serde_bytes")] Vec<u8>);

impl Rpc for Echo {
    const METHOD: &'static str = "Test.Echo";
    type Reply = Vec<u8>;
}

/// `Test.Sleep`: answers after the given number of milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sleep(u64);

impl Rpc for Sleep {
    const METHOD: &'static str = "Test.Sleep";
    type Reply = ();
}

/// `Test.Missing`: registered with no service behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Missing;

impl Rpc for Missing {
    const METHOD: &'static str = "Other.Missing";
    type Reply = ();
}

/// The test service; records the size of each request in arrival order.
struct TestService {
    arrivals: Rc<RefCell<Vec<usize>>>,
}

impl Actor for TestService {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for TestService {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        self.arrivals.borrow_mut().push(msg.args.len());
        Box::pin(async move {
            match msg.method {
                Echo::METHOD => encode(&msg.decode::<Echo>()?.0),
                Sleep::METHOD => {
                    sleep(Duration::from_millis(msg.decode::<Sleep>()?.0)).await;
                    encode(&())
                }
                other => Err(RpcError::UnknownMethod(other.to_string())),
            }
        })
    }
}

struct Fixture {
    addr: SocketAddr,
    listener: Addr<Listener>,
    arrivals: Rc<RefCell<Vec<usize>>>,
}

fn settings() -> TcpSettings {
    let mut settings = TcpSettings::new("test-cluster", "test-token");
    settings.call_timeout = Duration::from_millis(500);
    settings.backoff_min = Duration::from_millis(10);
    settings.backoff_max = Duration::from_millis(100);
    settings
}

async fn serve_on(addr: SocketAddr, settings: TcpSettings) -> Fixture {
    let socket = TcpListener::bind(addr).await.expect("bind loopback");
    let addr = socket.local_addr().expect("local addr");
    let arrivals = Rc::new(RefCell::new(Vec::new()));
    let service = TestService {
        arrivals: arrivals.clone(),
    }
    .start();
    let methods = MethodTable::new()
        .with::<Echo>()
        .with::<Sleep>()
        .with::<Missing>();
    let server = Server::new().with_service("Test", service.recipient());
    let listener =
        Listener::start(socket, server, methods, Arc::new(settings), "test port").expect("listen");
    Fixture {
        addr,
        listener,
        arrivals,
    }
}

async fn serve() -> Fixture {
    serve_on(([127, 0, 0, 1], 0).into(), settings()).await
}

fn end_to(addr: SocketAddr, settings: TcpSettings) -> (ClientEnd, Addr<Link>) {
    let link = Link::start(addr, Arc::new(settings));
    (client_end("test-end", &link), link)
}

async fn stats(listener: &Addr<Listener>) -> ListenerStats {
    listener
        .send(GetListenerStats)
        .await
        .expect("listener alive")
}

async fn bounded<F: std::future::Future>(test: F) -> F::Output {
    timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit")
}

#[actix::test]
async fn calls_round_trip_over_loopback() {
    bounded(async {
        let fixture = serve().await;
        let (end, _link) = end_to(fixture.addr, settings());
        let reply = end.call(&Echo(b"hello".to_vec())).await;
        assert_eq!(reply, Ok(b"hello".to_vec()));
        let reply = end.call(&Echo(Vec::new())).await;
        assert_eq!(reply, Ok(Vec::new()));
        assert_eq!(stats(&fixture.listener).await.accepted, 1);
    })
    .await;
}

#[actix::test]
async fn many_calls_in_flight_share_one_connection_and_match_their_replies() {
    bounded(async {
        let fixture = serve().await;
        let (end, _link) = end_to(fixture.addr, settings());
        // Replies come back in a different order from the requests: the slow ones sleep.
        let calls = (0..500u32).map(|i| {
            let end = end.clone();
            async move {
                if i % 10 == 0 {
                    end.call(&Sleep(u64::from(i % 50)))
                        .await
                        .map(|()| Vec::new())
                } else {
                    end.call(&Echo(i.to_be_bytes().to_vec())).await
                }
            }
        });
        let replies = join_all(calls).await;
        for (i, reply) in replies.into_iter().enumerate() {
            let expected = if i % 10 == 0 {
                Vec::new()
            } else {
                (i as u32).to_be_bytes().to_vec()
            };
            assert_eq!(reply, Ok(expected), "call {i}");
        }
        let stats = stats(&fixture.listener).await;
        assert_eq!(stats.accepted, 1, "{stats:?}");
    })
    .await;
}

#[actix::test]
async fn large_requests_travel_on_their_own_connection_ahead_of_nothing() {
    bounded(async {
        let fixture = serve().await;
        let (end, _link) = end_to(fixture.addr, settings());
        let big = vec![7u8; 32 << 20];
        // Warm both lanes up, so the measurement below involves no dialling.
        assert_eq!(end.call(&Echo(vec![1])).await, Ok(vec![1]));
        assert_eq!(
            end.call(&Echo(vec![2; 100 << 10])).await.map(|r| r.len()),
            Ok(100 << 10)
        );
        assert_eq!(stats(&fixture.listener).await.accepted, 2);
        fixture.arrivals.borrow_mut().clear();

        // A 32 MiB request goes out first; five small calls are made one after the other
        // behind it. On one shared connection they would arrive after it; on the control lane
        // they are served while it is still in transit.
        let big_call = {
            let end = end.clone();
            let big = big.clone();
            actix::spawn(async move { end.call(&Echo(big)).await })
        };
        tokio::task::yield_now().await;
        for i in 0..5u8 {
            assert_eq!(end.call(&Echo(vec![i])).await, Ok(vec![i]));
        }
        let reply = big_call.await.expect("big call task");
        assert_eq!(reply.map(|r| r.len()), Ok(big.len()));
        let arrivals = fixture.arrivals.borrow().clone();
        let big_position = arrivals.iter().position(|&len| len > 1000);
        assert_eq!(
            big_position,
            Some(5),
            "the small calls should reach the server before the large one: {arrivals:?}"
        );
    })
    .await;
}

#[actix::test]
async fn a_call_with_no_reply_in_time_is_unreachable() {
    bounded(async {
        let fixture = serve().await;
        let (end, _link) = end_to(fixture.addr, settings());
        let started = Instant::now();
        assert_eq!(end.call(&Sleep(3000)).await, Err(RpcError::Unreachable));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_millis(1500),
            "failed after {waited:?}, the timeout is 500 ms"
        );
        // The connection answered nothing in that time: it is dropped and redialled.
        assert_eq!(end.call(&Echo(vec![9])).await, Ok(vec![9]));
    })
    .await;
}

#[actix::test]
async fn a_dead_server_fails_calls_at_once_and_a_restarted_one_is_reconnected() {
    bounded(async {
        let fixture = serve().await;
        let (end, link) = end_to(fixture.addr, settings());
        assert_eq!(end.call(&Echo(vec![1])).await, Ok(vec![1]));

        // A call in flight when the server dies fails when the connection drops, long before
        // its timeout would have struck.
        let in_flight = {
            let end = end.clone();
            actix::spawn(async move { end.call(&Sleep(10_000)).await })
        };
        sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        fixture.listener.send(Stop).await.expect("stop");
        assert_eq!(in_flight.await.expect("task"), Err(RpcError::Unreachable));
        assert!(started.elapsed() < Duration::from_millis(400));

        // While it is down, calls fail fast.
        for _ in 0..3 {
            let started = Instant::now();
            assert_eq!(end.call(&Echo(vec![2])).await, Err(RpcError::Unreachable));
            assert!(started.elapsed() < Duration::from_millis(400));
        }
        let status = link.send(GetLinkStatus).await.expect("link");
        assert!(status.last_error.is_some(), "{status:?}");

        // Back on the same port: the link reconnects after its back-off (at most 125 ms here).
        let restarted = serve_on(fixture.addr, settings()).await;
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut reply = end.call(&Echo(vec![3])).await;
        while reply.is_err() && Instant::now() < deadline {
            sleep(Duration::from_millis(20)).await;
            reply = end.call(&Echo(vec![3])).await;
        }
        assert_eq!(reply, Ok(vec![3]));
        assert_eq!(stats(&restarted.listener).await.accepted, 1);
        let status = link.send(GetLinkStatus).await.expect("link");
        assert_eq!((status.control, status.last_error), ("up", None));
    })
    .await;
}

#[actix::test]
async fn a_draining_listener_answers_the_calls_in_flight_and_takes_no_more() {
    bounded(async {
        let fixture = serve().await;
        let (end, _link) = end_to(fixture.addr, settings());
        assert_eq!(end.call(&Echo(vec![1])).await, Ok(vec![1]));
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let end = end.clone();
                actix::spawn(async move { end.call(&Sleep(300)).await })
            })
            .collect();
        sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let drain = fixture.listener.send(Drain {
            limit: Duration::from_secs(5),
        });
        // The port closes at once: a new connection is refused while the three finish.
        sleep(Duration::from_millis(50)).await;
        let (late, _late_link) = end_to(fixture.addr, settings());
        assert_eq!(late.call(&Echo(vec![2])).await, Err(RpcError::Unreachable));
        let drained = drain.await.expect("the listener answers the drain");
        assert_eq!(
            drained,
            Drained {
                in_flight: 3,
                cut: 0
            }
        );
        for call in calls {
            assert_eq!(call.await.expect("task"), Ok(()));
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // The existing connection closed too: the next call fails at once.
        assert_eq!(end.call(&Echo(vec![3])).await, Err(RpcError::Unreachable));

        // A call that outlasts the limit is cut off.
        let fixture = serve().await;
        let (end, _link) = end_to(fixture.addr, settings());
        let slow = actix::spawn(async move { end.call(&Sleep(2_000)).await });
        sleep(Duration::from_millis(50)).await;
        let drained = fixture
            .listener
            .send(Drain {
                limit: Duration::from_millis(100),
            })
            .await
            .expect("the listener answers the drain");
        assert_eq!(
            drained,
            Drained {
                in_flight: 1,
                cut: 1
            }
        );
        assert_eq!(slow.await.expect("task"), Err(RpcError::Unreachable));
    })
    .await;
}

#[actix::test]
async fn a_wrong_token_or_cluster_is_refused_and_the_caller_told_why() {
    bounded(async {
        let fixture = serve().await;
        let mut wrong_token = settings();
        wrong_token.token = "not-the-token".into();
        let (end, link) = end_to(fixture.addr, wrong_token);
        assert_eq!(end.call(&Echo(vec![1])).await, Err(RpcError::Unreachable));
        let status = link.send(GetLinkStatus).await.expect("link");
        let why = status.last_error.unwrap_or_default();
        assert!(why.contains("wrong cluster token"), "{why}");

        let mut wrong_cluster = settings();
        wrong_cluster.cluster = "other-cluster".into();
        let (end, link) = end_to(fixture.addr, wrong_cluster);
        assert_eq!(end.call(&Echo(vec![1])).await, Err(RpcError::Unreachable));
        let status = link.send(GetLinkStatus).await.expect("link");
        let why = status.last_error.unwrap_or_default();
        assert!(why.contains("cluster name"), "{why}");

        let stats = stats(&fixture.listener).await;
        assert_eq!((stats.accepted, stats.refused), (0, 2), "{stats:?}");
        // The port still serves the right credentials.
        let (end, _link) = end_to(fixture.addr, settings());
        assert_eq!(end.call(&Echo(vec![1])).await, Ok(vec![1]));
    })
    .await;
}

#[actix::test]
async fn unknown_methods_and_oversized_requests_are_errors_not_hangs() {
    bounded(async {
        let fixture = serve().await;
        let (end, _link) = end_to(fixture.addr, settings());
        // Registered on the wire but no "Other" service.
        let reply = end.call(&Missing).await;
        assert_eq!(reply, Err(RpcError::UnknownMethod("Other.Missing".into())));
        // Not registered at all.
        let reply = end
            .call_raw("Test.Nope", encode(&()).expect("encode"))
            .await;
        assert_eq!(reply, Err(RpcError::UnknownMethod("Test.Nope".into())));
        // Over the maximum frame size: refused before anything is sent.
        let mut small_frames = settings();
        small_frames.max_frame = 64 << 10;
        let (end, _link) = end_to(fixture.addr, small_frames);
        let reply = end.call(&Echo(vec![0; 100 << 10])).await;
        assert!(matches!(reply, Err(RpcError::Codec(_))), "{reply:?}");
    })
    .await;
}
