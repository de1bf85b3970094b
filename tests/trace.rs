//! Trace events: what a known exchange records, exactly; that recording changes nothing about
//! a run (its trace hash and outcome); and that a recorded KV run traces every kind of event
//! the same way twice.

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use rainkv::messages::net::{encode, Dispatch, Rpc, RpcError, Server};
use rainkv::testkit::kv::{KvHarness, OpLog};
use rainkv::testkit::{self, ClusterOptions, Sim, TestOptions};
use rainkv::trace::{to_json, Event, EventKind, NetStep};
use serde::{Deserialize, Serialize};
use tokio::time::sleep;

/// Answers its argument back.
#[derive(Serialize, Deserialize)]
struct Ping(u32);
impl Rpc for Ping {
    const METHOD: &'static str = "Echo.Ping";
    type Reply = u32;
}

struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for Echo {
    type Result = Result<Vec<u8>, RpcError>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        msg.decode::<Ping>().and_then(|Ping(x)| encode(&x))
    }
}

fn target(file: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    dir.join(file)
}

fn traced(file: &str) -> TestOptions {
    TestOptions {
        realtime: false,
        trace: Some(target(file)),
        ..TestOptions::default()
    }
}

fn net(step: NetStep, at_ms: u64, id: u64) -> Event {
    Event {
        at: at_ms * 1_000_000,
        kind: EventKind::Net {
            step,
            id,
            kind: "Echo.Ping".into(),
            from: "a".into(),
            to: "b".into(),
            dup: false,
        },
    }
}

/// Node a calls node b once (1 ms each way), then once more on a disabled end.
#[test]
fn two_node_exchange_yields_exactly_the_expected_events() {
    let options = traced("trace-two-nodes.jsonl");
    let (events, _) = testkit::run_seed(1, &options, |sim: Sim| async move {
        let net = sim.network();
        net.add_server(
            "b",
            Server::new().with_service("Echo", Echo.start().recipient()),
        );
        let end = net.make_end("a-to-b", Some("a")).await.expect("fresh end");
        net.connect("a-to-b", "b");
        net.enable("a-to-b", true);
        assert_eq!(end.call(&Ping(7)).await, Ok(7));
        net.enable("a-to-b", false);
        assert_eq!(end.call(&Ping(8)).await, Err(RpcError::Unreachable));
        sim.trace().events()
    });
    let expected = vec![
        net(NetStep::Send, 0, 0),
        net(NetStep::Deliver, 1, 0),
        net(NetStep::Respond, 1, 0),
        net(NetStep::Reply, 2, 0),
        net(NetStep::Send, 2, 1),
        Event {
            at: 2_000_000,
            kind: EventKind::Drop {
                id: 1,
                kind: "Echo.Ping".into(),
                from: "a".into(),
                to: "b".into(),
                why: "unreachable",
            },
        },
    ];
    assert_eq!(events, expected);
    // The file holds the same events, one JSON object per line.
    let path = options.trace.expect("set above");
    let written = std::fs::read_to_string(&path).expect("the run wrote its trace");
    let lines: Vec<String> = expected.iter().map(to_json).collect();
    assert_eq!(written, lines.join("\n") + "\n");
    assert_eq!(
        lines[0],
        r#"{"t":0,"ev":"send","id":0,"kind":"Echo.Ping","from":"a","to":"b"}"#
    );
}

/// Three KV servers, one client, a partition and a crash: every kind of event happens.
async fn kv_scenario(sim: Sim) -> Vec<String> {
    let cfg = KvHarness::new(&sim, ClusterOptions::default()).await;
    let ck = cfg.make_client(&cfg.all()).await;
    let log = OpLog::new();
    let mut seen = Vec::new();
    for i in 0..5 {
        cfg.put(&ck, "k", &i.to_string(), Some(&log), 0).await;
        seen.push(cfg.get(&ck, "k", Some(&log), 0).await);
    }
    let leader = cfg.leader().await.unwrap_or(0);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    cfg.partition(&others, &[leader]);
    cfg.append(&ck, "k", "x", Some(&log), 0).await;
    cfg.shutdown_server(leader);
    sleep(Duration::from_secs(1)).await;
    cfg.start_server(leader).await;
    cfg.connect_all();
    seen.push(cfg.get(&ck, "k", Some(&log), 0).await);
    log.check_linearizable("trace_kv_scenario", Duration::from_secs(5));
    cfg.cleanup();
    seen
}

#[test]
fn recording_does_not_change_a_seeded_run() {
    let plain = TestOptions {
        realtime: false,
        ..TestOptions::default()
    };
    for seed in testkit::seeds() {
        let (outcome, hash) = testkit::run_seed(seed, &plain, kv_scenario);
        let options = traced("trace-kv-scenario.jsonl");
        let (traced_outcome, traced_hash) = testkit::run_seed(seed, &options, kv_scenario);
        assert_eq!(
            outcome, traced_outcome,
            "RAINKV_SEED={seed}: outcomes differ"
        );
        assert_eq!(
            hash, traced_hash,
            "RAINKV_SEED={seed}: recording changed the run"
        );
        let path = options.trace.clone().expect("set above");
        let first = std::fs::read_to_string(&path).expect("the run wrote its trace");
        testkit::run_seed(seed, &options, kv_scenario);
        let again = std::fs::read_to_string(&path).expect("the run wrote its trace");
        assert!(first == again, "RAINKV_SEED={seed}: two recordings differ");
        for ev in [
            "send", "deliver", "respond", "reply", "drop", "raft", "crash", "restart", "link",
            "invoke", "return", "verdict",
        ] {
            assert!(
                first.contains(&format!("\"ev\":\"{ev}\"")),
                "RAINKV_SEED={seed}: no {ev} event in {}",
                path.display()
            );
        }
        assert!(first.contains(r#""ev":"verdict","ok":true"#));
    }
}
