//! The timeline page in a real browser: a small KV scenario's trace is rendered, loaded in
//! headless Chromium (`--dump-dom`, after the page's script ran, and `--screenshot`), and the
//! DOM must show one lane per node, one arrow per request and per reply the trace holds, and
//! the checker's verdict; a hand-written trace with a violation must highlight the offending
//! operation. Without Chromium (`.ci/run` installs Debian's) the test says SKIP and passes.
//! The page and the screenshot stay under the target directory for a person to look at.

mod browser;

use std::io::Write;
use std::time::Duration;

use browser::{chromium, count, headless, target};

use rainkv::testkit::kv::{KvHarness, OpLog};
use rainkv::testkit::{self, ClusterOptions, Sim, TestOptions};
use rainkv::trace::timeline;

/// Three servers, one client, a partition of the leader.
async fn small_scenario(sim: Sim) {
    let cfg = KvHarness::new(&sim, ClusterOptions::default()).await;
    let ck = cfg.make_client(&cfg.all()).await;
    let log = OpLog::new();
    for i in 0..3 {
        cfg.put(&ck, "k", &i.to_string(), Some(&log), 0).await;
        cfg.get(&ck, "k", Some(&log), 0).await;
    }
    let leader = cfg.leader().await.unwrap_or(0);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    cfg.partition(&others, &[leader]);
    cfg.append(&ck, "k", "x", Some(&log), 0).await;
    cfg.connect_all();
    log.check_linearizable("timeline_browser", Duration::from_secs(5));
    cfg.cleanup();
}

#[test]
fn the_timeline_renders_in_a_real_browser() {
    let Some(browser) = chromium() else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP the_timeline_renders_in_a_real_browser: no chromium (apt-get install chromium)"
        );
        return;
    };
    let trace = target("timeline-browser.jsonl");
    let options = TestOptions {
        realtime: false,
        trace: Some(trace.clone()),
        ..TestOptions::default()
    };
    testkit::run_seed(4, &options, small_scenario);
    let jsonl = std::fs::read_to_string(&trace).expect("the run wrote its trace");
    let arrows = count(&jsonl, r#""ev":"send""#) + count(&jsonl, r#""ev":"respond""#);
    let page = target("timeline-browser.html");
    std::fs::write(&page, timeline::render(&jsonl, "browser test")).expect("write the page");

    let dom = String::from_utf8_lossy(&headless(&browser, &page, "--dump-dom")).into_owned();
    assert_eq!(count(&dom, r#"<g class="lane""#), 3, "one lane per node");
    assert_eq!(
        count(&dom, r#"class="msg "#),
        arrows,
        "one arrow per request and reply"
    );
    assert!(arrows > 50, "the scenario sends messages ({arrows})");
    assert!(
        count(&dom, r#"class="msg request dropped"#) > 0,
        "the partition drops calls"
    );
    assert!(dom.contains(r#"<span id="verdict" class="ok">linearizable</span>"#));
    assert!(
        count(&dom, r#"class="role""#) >= 3,
        "each lane shows its roles"
    );

    let shot = target("timeline-browser.png");
    let _ = std::fs::remove_file(&shot);
    headless(&browser, &page, &format!("--screenshot={}", shot.display()));
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}

#[test]
fn a_violation_highlights_the_offending_operations() {
    let Some(browser) = chromium() else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP a_violation_highlights_the_offending_operations: no chromium"
        );
        return;
    };
    let jsonl = [
        r#"{"t":0,"ev":"raft","node":"0","role":"leader","term":1,"leader":0,"commit":0,"applied":0,"last":0}"#,
        r#"{"t":1000000,"ev":"invoke","op":1,"client":0,"kind":"put","key":"k","value":"a"}"#,
        r#"{"t":3000000,"ev":"return","op":1,"client":0,"value":""}"#,
        r#"{"t":4000000,"ev":"invoke","op":2,"client":1,"kind":"get","key":"k","value":""}"#,
        r#"{"t":6000000,"ev":"return","op":2,"client":1,"value":"b"}"#,
        r#"{"t":7000000,"ev":"verdict","ok":false,"text":"get('k') -> 'b' cannot follow put('k', 'a')","ops":[2]}"#,
    ]
    .join("\n");
    let page = target("timeline-violation.html");
    std::fs::write(&page, timeline::render(&jsonl, "violation")).expect("write the page");
    let dom = String::from_utf8_lossy(&headless(&browser, &page, "--dump-dom")).into_owned();
    assert!(dom.contains(r#"<span id="verdict" class="bad">NOT linearizable</span>"#));
    assert_eq!(count(&dom, r#"class="op bad""#), 1);
    assert_eq!(count(&dom, r#"class="op""#), 1);
    assert!(dom.contains("cannot follow"));
}
