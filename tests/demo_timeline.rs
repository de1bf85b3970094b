//! `rainkv demo --timeline`, run as the built binary for a few seconds: the page it writes
//! holds the wall-clock trace of the real TCP demo (every node's Raft states and messages, the
//! faults, the client operations) and the checker's verdict; with Chromium on the machine the
//! page is rendered too and must show a lane per node, message arrows, operations and the
//! verdict. The page, its trace and the screenshot stay under the target directory.

mod browser;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use browser::{chromium, count, headless, target};

#[test]
fn the_demo_writes_its_timeline() {
    let page = target("demo-timeline.html");
    let trace = target("demo-timeline.jsonl");
    for file in [&page, &trace] {
        let _ = std::fs::remove_file(file);
    }
    let output = Command::new(env!("CARGO_BIN_EXE_rainkv"))
        .args(["demo", "--seconds", "3", "--clients", "2", "--timeline"])
        .arg(&page)
        .arg("--trace")
        .arg(&trace)
        .stdin(Stdio::null())
        .output()
        .expect("rainkv demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("verdict: linearizable"), "{stdout}");
    assert!(stdout.contains("timeline: "), "{stdout}");
    // stderr is a pipe here: plain lines, no progress bar.
    assert!(stdout.contains("ops ("), "{stdout}");

    let html = std::fs::read_to_string(&page).expect("the demo wrote its timeline");
    let jsonl = std::fs::read_to_string(&trace).expect("the demo wrote its trace");
    for node in ["node0", "node1", "node2"] {
        let raft = format!(r#""ev":"raft","node":"{node}""#);
        assert!(html.contains(&raft), "no Raft state of {node}");
        // A node that stays a follower all run sends no request, but every node is sent some.
        let from = format!(r#""from":"{node}""#);
        let to = format!(r#""to":"{node}""#);
        assert!(
            html.contains(&from) || html.contains(&to),
            "no message to or from {node}"
        );
    }
    for ev in [
        "send", "deliver", "respond", "reply", "invoke", "return", "crash",
    ] {
        let needle = format!(r#""ev":"{ev}""#);
        assert!(count(&jsonl, &needle) > 0, "no {ev} event in the trace");
    }
    // The serving side's deliver pairs with the calling side's send by id.
    let ids = |ev: &str| -> BTreeSet<u64> {
        let tag = format!(r#""ev":"{ev}","id":"#);
        jsonl
            .lines()
            .filter_map(|line| line.split_once(&tag))
            .filter_map(|(_, rest)| rest.split(',').next()?.parse().ok())
            .collect()
    };
    let (sent, delivered) = (ids("send"), ids("deliver"));
    assert!(!delivered.is_empty() && delivered.is_subset(&sent));
    assert!(ids("reply").is_subset(&ids("respond")));
    assert!(jsonl.contains(r#""kind":"Raft.AppendEntries""#));
    assert!(jsonl.contains(r#""from":"client""#), "no client calls");
    assert!(html.contains(r#""ev":"verdict","ok":true"#), "no verdict");
    // The page is the trace and the viewer: every event of the trace is in it.
    assert_eq!(count(&html, r#"{"t":"#), jsonl.lines().count());

    let Some(browser) = chromium() else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP rendering the demo's timeline: no chromium (apt-get install chromium)"
        );
        return;
    };
    let dom = String::from_utf8_lossy(&headless(&browser, &page, "--dump-dom")).into_owned();
    assert_eq!(count(&dom, r#"<g class="lane""#), 3, "one lane per node");
    for node in ["node0", "node1", "node2"] {
        assert!(
            dom.contains(&format!(r#"data-node="{node}""#)),
            "no lane {node}"
        );
    }
    assert!(dom.contains(r#"<span id="verdict" class="ok">linearizable</span>"#));
    assert!(
        count(&dom, r#"class="role""#) >= 3,
        "each lane shows its roles"
    );
    assert!(count(&dom, r#"class="op"#) > 0, "the operations are drawn");
    let shot = target("demo-timeline.png");
    let _ = std::fs::remove_file(&shot);
    headless(&browser, &page, &format!("--screenshot={}", shot.display()));
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"));
}
