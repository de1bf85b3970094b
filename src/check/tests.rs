//! Tests of the checker on hand-made histories (legal and illegal, one key and several, equal
//! timestamps, timeouts) and on generated ones: random concurrent histories that are legal by
//! construction, and long sequential append runs, with time bounds.

use std::time::{Duration, Instant};

use super::*;

const MS: u64 = 1_000_000;

fn kv(
    client_id: u64,
    op: KvOp,
    key: &str,
    value: &str,
    call_ms: u64,
    return_ms: u64,
) -> Operation<KvInput, KvOutput> {
    let (input_value, output_value) = match op {
        KvOp::Get => (String::new(), value.to_string()),
        KvOp::Put | KvOp::Append => (value.to_string(), String::new()),
    };
    Operation {
        client_id,
        input: KvInput {
            op,
            key: key.to_string(),
            value: input_value,
        },
        call: call_ms * MS,
        output: KvOutput {
            value: output_value,
        },
        return_time: return_ms * MS,
    }
}

fn check(history: &[Operation<KvInput, KvOutput>]) -> CheckResult {
    check_operations::<KvModel>(history, Duration::from_secs(20))
}

/// Whether the violation points at history op `index`: as an operation that cannot come
/// next, or as the read such an operation would leave unsatisfiable.
fn blames(v: &Violation, index: usize) -> bool {
    v.stuck.iter().any(|s| {
        s.op.index == index || matches!(&s.why, WhyStuck::StrandsRead(r) if r.index == index)
    })
}

fn expect_violation(history: &[Operation<KvInput, KvOutput>]) -> Violation {
    match check(history) {
        CheckResult::Illegal(v) => v,
        other => panic!("expected a violation, got {other}"),
    }
}

use KvOp::{Append, Get, Put};

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(check(&[]), CheckResult::Ok);
}

#[test]
fn sequential_puts_and_gets() {
    let h = vec![
        kv(1, Get, "x", "", 0, 1),
        kv(1, Put, "x", "a", 2, 3),
        kv(2, Get, "x", "a", 4, 5),
        kv(1, Append, "x", "b", 6, 7),
        kv(2, Get, "x", "ab", 8, 9),
        kv(1, Put, "x", "c", 10, 11),
        kv(2, Get, "x", "c", 12, 13),
    ];
    assert_eq!(check(&h), CheckResult::Ok);
}

#[test]
fn overlapping_writes_legal_in_one_order_only() {
    // put(b) lies inside put(a); the read after both forces "b, then a".
    let h = vec![
        kv(1, Put, "x", "a", 0, 10),
        kv(2, Put, "x", "b", 2, 8),
        kv(3, Get, "x", "a", 12, 15),
    ];
    assert_eq!(check(&h), CheckResult::Ok);
    // Concurrent appends seen in the order opposite to their calls.
    let h = vec![
        kv(1, Append, "x", "a", 0, 10),
        kv(2, Append, "x", "b", 1, 10),
        kv(3, Get, "x", "ba", 11, 12),
    ];
    assert_eq!(check(&h), CheckResult::Ok);
    // A read concurrent with a write may see either value.
    for seen in ["", "v"] {
        let h = vec![kv(1, Put, "x", "v", 0, 10), kv(2, Get, "x", seen, 3, 4)];
        assert_eq!(check(&h), CheckResult::Ok, "get saw {seen:?}");
    }
}

#[test]
fn stale_read_after_completed_write_is_illegal() {
    let h = vec![
        kv(1, Put, "x", "a", 0, 1),
        kv(1, Put, "x", "b", 2, 3),
        kv(2, Get, "x", "a", 4, 5),
    ];
    let v = expect_violation(&h);
    assert_eq!(v.partition, "x");
    assert_eq!(v.prefix_indices(), vec![0, 1]);
    assert_eq!(v.final_state, "'b'");
    assert_eq!(v.stuck_indices(), vec![2]);
    assert_eq!(v.stuck[0].why, WhyStuck::Illegal);
}

#[test]
fn concurrent_appends_seen_in_two_orders_is_illegal() {
    let h = vec![
        kv(1, Append, "x", "a", 0, 10),
        kv(2, Append, "x", "b", 0, 10),
        kv(3, Get, "x", "ab", 11, 12),
        kv(3, Get, "x", "ba", 13, 14),
    ];
    let v = expect_violation(&h);
    assert_eq!(v.prefix.len(), 3);
    assert_eq!(v.final_state, "'ab'");
    assert_eq!(v.stuck_indices(), vec![3]);
}

#[test]
fn value_never_written_is_illegal() {
    let h = vec![
        kv(1, Put, "x", "a", 0, 10),
        kv(2, Append, "x", "b", 0, 10),
        kv(3, Get, "x", "zzz", 5, 6),
    ];
    let v = expect_violation(&h);
    assert!(blames(&v, 2));
}

#[test]
fn only_the_bad_key_is_named() {
    let h = vec![
        kv(1, Put, "a", "1", 0, 1),
        kv(2, Put, "b", "1", 0, 1),
        kv(3, Put, "c", "1", 0, 1),
        kv(1, Get, "a", "1", 2, 3),
        kv(2, Get, "b", "2", 2, 3), // never written
        kv(3, Get, "c", "1", 2, 3),
    ];
    let v = expect_violation(&h);
    assert_eq!(v.partition, "b");
    assert_eq!(v.partition_ops, 2);
    assert!(blames(&v, 4));
}

#[test]
fn first_bad_key_in_sorted_order_is_reported() {
    let mut h = Vec::new();
    for key in ["k9", "k3", "k5", "k1"] {
        h.push(kv(1, Put, key, "v", 0, 1));
        let seen = if key == "k1" { "v" } else { "stale" };
        h.push(kv(2, Get, key, seen, 2, 3));
    }
    for _ in 0..5 {
        assert_eq!(expect_violation(&h).partition, "k3");
    }
}

#[test]
fn equal_timestamps_count_as_concurrent() {
    // Zero-length operations at the same instant: either order.
    let h = vec![kv(1, Put, "x", "a", 5, 5), kv(2, Get, "x", "", 5, 5)];
    assert_eq!(check(&h), CheckResult::Ok);
    let h = vec![kv(1, Put, "x", "a", 5, 5), kv(2, Get, "x", "a", 5, 5)];
    assert_eq!(check(&h), CheckResult::Ok);
    // Called at the instant the other returned: still concurrent.
    let h = vec![kv(1, Put, "x", "a", 0, 5), kv(2, Get, "x", "", 5, 7)];
    assert_eq!(check(&h), CheckResult::Ok);
    // One tick later it is not.
    let h = vec![kv(1, Put, "x", "a", 0, 5), kv(2, Get, "x", "", 6, 7)];
    let v = expect_violation(&h);
    assert!(blames(&v, 1));
}

#[test]
fn tiny_timeout_gives_unknown_naming_the_key() {
    // Concurrent puts and appends, then a read that only one put could start but that no
    // order produces: until that put is placed, look-ahead cannot prune, and the orders of
    // the other operations before it are all distinct states.
    let mut h = Vec::new();
    for c in 0..16 {
        if c % 2 == 0 {
            h.push(kv(c, Put, "hard", &format!("p{c}"), 0, 100));
        } else {
            h.push(kv(c, Append, "hard", &format!("<{c}>"), 0, 100));
        }
    }
    h.push(kv(99, Get, "hard", "p0!", 101, 102));
    // One partition only: on a loaded machine a second one might miss the deadline first.
    match check_operations::<KvModel>(&h, Duration::from_millis(1)) {
        CheckResult::Unknown { partition, reason } => {
            assert_eq!(partition, "hard");
            assert!(
                reason.contains("no verdict") || reason.contains("not started"),
                "{reason}"
            );
        }
        other => panic!("expected Unknown, got {other}"),
    }
}

#[test]
fn explanation_names_the_key_and_the_offending_operations() {
    let h = vec![
        kv(7, Put, "user:42", "alpha", 0, 3),
        kv(8, Append, "user:42", "-beta", 4, 6),
        kv(9, Get, "user:42", "alpha", 7, 9),
    ];
    let v = expect_violation(&h);
    let text = v.to_string();
    assert!(text.contains("partition 'user:42'"), "{text}");
    assert!(text.contains("put('user:42', 'alpha')"), "{text}");
    assert!(text.contains("append('user:42', '-beta')"), "{text}");
    assert!(text.contains("get('user:42') -> 'alpha'"), "{text}");
    assert!(text.contains("client 9"), "{text}");
    assert!(text.contains("7.000 ms"), "{text}");
    assert!(text.contains("'alpha-beta'"), "{text}");
    assert!(text.contains("illegal in that state"), "{text}");
    // CheckResult's Display is the same explanation.
    assert_eq!(CheckResult::Illegal(v.clone()).to_string(), text);
    println!("{text}");
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("linz-{}-{name}", std::process::id()))
}

#[test]
fn write_html_produces_a_page() {
    let h = vec![
        kv(3, Put, "a", "1", 0, 1),
        kv(1, Put, "x", "<a&b>", 0, 3),
        kv(2, Get, "x", "stale", 4, 6),
    ];
    let result = check(&h);
    let path = temp_path("bad.html");
    write_html::<KvModel>(&h, &result, &path).expect("write html");
    let page = std::fs::read_to_string(&path).expect("read html back");
    std::fs::remove_file(&path).expect("remove html");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("NOT linearizable"));
    assert!(page.contains("put(&#39;x&#39;, &#39;&lt;a&amp;b&gt;&#39;)"));
    assert!(page.contains("#f4a6a6")); // the stuck get is drawn red
                                       // The failing key comes first.
    assert!(page.find("Partition 'x'") < page.find("Partition 'a'"));
    assert!(page.trim_end().ends_with("</html>"));

    let ok = vec![kv(1, Put, "x", "a", 0, 3)];
    let path = temp_path("ok.html");
    write_html::<KvModel>(&ok, &check(&ok), &path).expect("write html");
    let page = std::fs::read_to_string(&path).expect("read html back");
    std::fs::remove_file(&path).expect("remove html");
    assert!(page.contains("History: linearizable"));
}

/// A tiny deterministic generator (splitmix64), so tests need no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A legal history by construction: clients issue operations back to back with random
/// durations (whole milliseconds, so equal times are common); each takes effect at a random
/// instant inside its interval, and Gets return what an atomic register holds at that instant.
/// Half the operations are appends, a tenth of the rest puts, the others gets, as in the
/// 6.5840 random-keys test.
fn random_legal_history(
    seed: u64,
    clients: u64,
    keys: u64,
    ops: usize,
    max_duration_ms: u64,
) -> Vec<Operation<KvInput, KvOutput>> {
    let mut rng = Rng(seed);
    let mut free_at = vec![0u64; clients as usize];
    let mut history = Vec::with_capacity(ops);
    let mut effect_at = Vec::with_capacity(ops);
    for j in 0..ops {
        // The client that becomes free first issues the next operation.
        let c = (0..clients as usize)
            .min_by_key(|&c| (free_at[c], c))
            .unwrap_or(0);
        let call = free_at[c] + rng.below(2);
        let ret = call + rng.below(max_duration_ms + 1);
        free_at[c] = ret + rng.below(2);
        let key = format!("k{}", rng.below(keys));
        let value = format!("x {c} {j} y");
        let op = match rng.below(20) {
            0..=9 => Append,
            10 => Put,
            _ => Get,
        };
        history.push(kv(c as u64, op, &key, &value, call, ret));
        // Effect instant in ns, strictly inside or on the interval's ends.
        let span = (ret - call) * MS;
        effect_at.push((call * MS + rng.below(span + 1), j));
    }
    effect_at.sort_unstable();
    let mut register: std::collections::HashMap<String, String> = Default::default();
    for (_, j) in effect_at {
        let op = &mut history[j];
        let value = register.entry(op.input.key.clone()).or_default();
        match op.input.op {
            Get => op.output.value = value.clone(),
            Put => *value = op.input.value.clone(),
            Append => value.push_str(&op.input.value),
        }
    }
    history
}

#[test]
fn random_concurrent_history_of_10k_ops_is_ok_quickly() {
    let h = random_legal_history(1, 15, 5, 10_000, 30);
    let start = Instant::now();
    let result = check(&h);
    let took = start.elapsed();
    println!("10k ops, 15 clients, 5 keys: {took:?}");
    assert_eq!(result, CheckResult::Ok, "{result}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn random_histories_with_one_stale_read_are_caught() {
    for seed in 0..20 {
        let mut h = random_legal_history(seed, 8, 3, 600, 10);
        assert_eq!(check(&h), CheckResult::Ok, "seed {seed}");
        // Make a late get return an older value that is no longer possible.
        let last = h.len() - 1;
        h.push(kv(
            50,
            Get,
            &h[last].input.key.clone(),
            "never written",
            h[last].return_time / MS + 1,
            h[last].return_time / MS + 2,
        ));
        let v = expect_violation(&h);
        assert!(blames(&v, h.len() - 1), "seed {seed}: {v}");
    }
}

#[test]
fn long_sequential_append_run_is_fast() {
    // 3000 appends to one key, mostly back to back, with a get every tenth op: the state
    // grows to about 30 kB, which a naive string state would copy thousands of times.
    let mut h = Vec::new();
    let mut value = String::new();
    let mut t = 0;
    for j in 0..3000u64 {
        let v = format!("x 0 {j} y");
        // Every fifth append overlaps the next operation.
        let end = if j % 5 == 0 { t + 2 } else { t + 1 };
        h.push(kv(0, Append, "x", &v, t, end));
        value.push_str(&v);
        t += 1;
        if j % 10 == 9 {
            t += 1;
            h.push(kv(1, Get, "x", &value, t, t + 1));
            t += 2;
        }
    }
    h.push(kv(1, Get, "x", &value, t + 5, t + 6));
    let start = Instant::now();
    let result = check(&h);
    let took = start.elapsed();
    println!("{} sequential-ish appends: {took:?}", h.len());
    assert_eq!(result, CheckResult::Ok, "{result}");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // The same history with the final read missing one append is caught, and explained
    // without printing 30 kB states.
    let short = value[..value.len() - "x 0 2999 y".len()].to_string();
    let last = h.len() - 1;
    h[last].output.value = short;
    let v = expect_violation(&h);
    let text = v.to_string();
    assert!(text.contains("chars omitted"), "{text}");
    assert!(text.len() < 8_000, "explanation is {} bytes", text.len());
}

/// A model that uses the trait's defaults: one counter, increments and reads.
struct Counter;

impl Model for Counter {
    type State = u64;
    type Input = Option<u64>; // None = increment, Some(_) unused
    type Output = u64; // value read (reads) or ignored (increments)

    fn init() -> u64 {
        0
    }

    fn step(state: &u64, input: &Option<u64>, output: &u64) -> Option<u64> {
        match input {
            None => Some(state + 1),
            Some(_) => (output == state).then_some(*state),
        }
    }

    fn describe_operation(input: &Option<u64>, output: &u64) -> String {
        match input {
            None => "inc()".to_string(),
            Some(_) => format!("read() -> {output}"),
        }
    }
}

#[test]
fn default_partition_keeps_everything_together() {
    let op = |input, output, call, return_time| Operation {
        client_id: 0,
        input,
        call,
        output,
        return_time,
    };
    let h = vec![
        op(None, 0, 0, 10),
        op(None, 0, 0, 10),
        op(Some(0), 2, 11, 12),
    ];
    assert_eq!(Counter::partition(&h), vec![h.clone()]);
    assert_eq!(
        check_operations::<Counter>(&h, Duration::from_secs(5)),
        CheckResult::Ok
    );
    let bad = vec![op(None, 0, 0, 10), op(Some(0), 2, 11, 12)];
    let result = check_operations::<Counter>(&bad, Duration::from_secs(5));
    let v = result.violation().expect("a violation");
    assert_eq!(v.partition, "all");
    assert_eq!(v.final_state, "1");
}

/// Whether some real-time-respecting order of `h` is legal, by trying them all.
fn brute_force_linearizable(h: &[Operation<KvInput, KvOutput>]) -> bool {
    fn go(h: &[Operation<KvInput, KvOutput>], done: &mut Vec<bool>, state: &KvState) -> bool {
        if done.iter().all(|&d| d) {
            return true;
        }
        for i in 0..h.len() {
            // i may go next iff no pending op returned strictly before i was called.
            let minimal =
                !done[i] && (0..h.len()).all(|j| done[j] || h[j].return_time >= h[i].call);
            if !minimal {
                continue;
            }
            if let Some(next) = KvModel::step(state, &h[i].input, &h[i].output) {
                done[i] = true;
                let ok = go(h, done, &next);
                done[i] = false;
                if ok {
                    return true;
                }
            }
        }
        false
    }
    go(h, &mut vec![false; h.len()], &KvState::new())
}

#[test]
fn verdicts_match_brute_force_on_small_random_histories() {
    // Small, dense histories where the pruning rules (reads first, look-ahead over appends
    // and puts) all fire; gets read random plausible values, so about half are illegal.
    let mut rng = Rng(7);
    let (mut legal, mut illegal) = (0, 0);
    for _ in 0..3000 {
        let n = 2 + rng.below(6) as usize;
        let mut h = Vec::new();
        for j in 0..n {
            let call = rng.below(6);
            let ret = call + rng.below(4);
            let letter = ["a", "b", "c"][rng.below(3) as usize];
            match rng.below(5) {
                0 | 1 => h.push(kv(j as u64, Append, "k", letter, call, ret)),
                2 => h.push(kv(j as u64, Put, "k", letter, call, ret)),
                _ => {
                    let seen =
                        ["", "a", "b", "ab", "ba", "abc", "ca", "bc", "cab"][rng.below(9) as usize];
                    h.push(kv(j as u64, Get, "k", seen, call, ret));
                }
            }
        }
        let expected = brute_force_linearizable(&h);
        let result = check(&h);
        assert_eq!(result.is_ok(), expected, "history {h:#?}\nresult {result}");
        if expected {
            legal += 1;
        } else {
            illegal += 1;
            let v = result.violation().expect("a violation");
            assert!(!v.stuck.is_empty());
        }
    }
    assert!(
        legal > 300 && illegal > 300,
        "{legal} legal, {illegal} illegal"
    );
}
