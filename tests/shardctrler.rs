//! 6.5840's shard controller tests (`shardctrler/test_test.go`, 5A), ported with the same
//! scenarios in virtual time. Each test runs its Go sub-tests in order on one cluster. The
//! MinimalTransfer checks look at the groups that actually exist (the original checks gids
//! 1..10, which are never groups there), and AgreeConfig re-evaluates the leader while it
//! waits for one.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use rainkv::actors::ctrler::clerk::CtrlerClerk;
use rainkv::messages::ctrler::{ConfigNum, Gid, ShardConfig, NSHARDS};
use rainkv::testkit::ctrler::CtrlerHarness;
use rainkv::testkit::ClusterOptions;
use rainkv::testkit::{run_test, Sim};
use tokio::time::sleep;

const NSERVERS: usize = 3;

async fn make_config(sim: &Sim) -> CtrlerHarness {
    let options = ClusterOptions {
        servers: NSERVERS,
        name: "ctrler".into(),
        ..Default::default()
    };
    CtrlerHarness::new(sim, options).await
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// One group's Join argument.
fn group(gid: Gid, servers: &[&str]) -> BTreeMap<Gid, Vec<String>> {
    BTreeMap::from([(gid, names(servers))])
}

/// `ck.Query(num)`: config `num`, or the latest for `None` (the lab's `Query(-1)`).
async fn query(ck: &CtrlerClerk, num: Option<ConfigNum>) -> ShardConfig {
    let config = match num {
        None => ck.latest().await,
        Some(num) => ck.config(num).await,
    };
    config.unwrap_or_else(|e| panic!("Query({num:?}): {e}"))
}

async fn join(ck: &CtrlerClerk, servers: BTreeMap<Gid, Vec<String>>) {
    ck.join(servers.clone())
        .await
        .unwrap_or_else(|e| panic!("Join({servers:?}): {e}"));
}

async fn leave(ck: &CtrlerClerk, gids: &[Gid]) {
    ck.leave(gids.to_vec())
        .await
        .unwrap_or_else(|e| panic!("Leave({gids:?}): {e}"));
}

/// 6.5840's `check(groups)`: exactly these groups, every shard on one of them, balanced.
async fn check(ck: &CtrlerClerk, groups: &[Gid]) -> ShardConfig {
    let c = query(ck, None).await;
    assert_eq!(
        c.groups.len(),
        groups.len(),
        "wanted {} groups, got {}",
        groups.len(),
        c.groups.len()
    );
    for g in groups {
        assert!(c.groups.contains_key(g), "missing group {g}");
    }
    if !groups.is_empty() {
        for (s, g) in c.shards.iter().enumerate() {
            assert!(c.groups.contains_key(g), "shard {s} -> invalid group {g}");
        }
    }
    let count = |g: &Gid| c.shards.iter().filter(|&s| s == g).count();
    let max = c.groups.keys().map(count).max().unwrap_or(0);
    let min = c.groups.keys().map(count).min().unwrap_or(0);
    assert!(max <= min + 1, "max {max} too much larger than min {min}");
    c
}

/// 6.5840's `check_same_config`.
fn check_same_config(c1: &ShardConfig, c2: &ShardConfig) {
    assert_eq!(c1.num, c2.num, "Num wrong");
    assert_eq!(c1.shards, c2.shards, "Shards wrong");
    assert_eq!(
        c1.groups.len(),
        c2.groups.len(),
        "number of Groups is wrong"
    );
    for (gid, sa) in &c1.groups {
        assert_eq!(Some(sa), c2.groups.get(gid), "len(Groups) wrong for {gid}");
    }
}

fn check_servers(c: &ShardConfig, gid: Gid, want: &[&str]) {
    assert_eq!(
        c.groups.get(&gid),
        Some(&names(want)),
        "wrong servers for gid {gid}"
    );
}

/// The fixed MinimalTransfer check: a shard that a surviving group owns in `after` was
/// already its own in `before`.
fn check_no_gain(before: &ShardConfig, after: &ShardConfig, survivors: &[Gid], what: &str) {
    for &g in survivors {
        for s in 0..NSHARDS {
            if after.shards[s] == g {
                assert_eq!(before.shards[s], g, "non-minimal transfer after {what}");
            }
        }
    }
}

/// The fixed MinimalTransferAfterLeave check: every shard a surviving group owns in `before`
/// is still its own in `after`.
fn check_no_loss(before: &ShardConfig, after: &ShardConfig, survivors: &[Gid], what: &str) {
    for &g in survivors {
        for s in 0..NSHARDS {
            if before.shards[s] == g {
                assert_eq!(after.shards[s], g, "non-minimal transfer after {what}");
            }
        }
    }
}

/// Runs one task per clerk concurrently and waits for all of them.
async fn concurrently<F, Fut>(cfg: &CtrlerHarness, n: usize, f: F)
where
    F: Fn(usize, CtrlerClerk) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let ck = cfg.make_client().await;
        tasks.push(actix::spawn(f(i, ck)));
    }
    for task in join_all(tasks).await {
        task.expect("a concurrent clerk failed");
    }
}

#[test]
fn basic_5a() {
    run_test("basic_5a", |sim: Sim| async move {
        let cfg = make_config(&sim).await;
        let ck = cfg.make_client().await;

        cfg.begin("Test: Basic leave/join").await;
        let mut cfa = vec![ShardConfig::default(); 6];
        cfa[0] = query(&ck, None).await;
        check(&ck, &[]).await;
        let (gid1, gid2) = (1, 2);
        join(&ck, group(gid1, &["x", "y", "z"])).await;
        check(&ck, &[gid1]).await;
        cfa[1] = query(&ck, None).await;
        join(&ck, group(gid2, &["a", "b", "c"])).await;
        check(&ck, &[gid1, gid2]).await;
        cfa[2] = query(&ck, None).await;
        let cfx = query(&ck, None).await;
        check_servers(&cfx, gid1, &["x", "y", "z"]);
        check_servers(&cfx, gid2, &["a", "b", "c"]);
        leave(&ck, &[gid1]).await;
        check(&ck, &[gid2]).await;
        cfa[4] = query(&ck, None).await;
        leave(&ck, &[gid2]).await;
        cfa[5] = query(&ck, None).await;
        cfg.end().await;

        cfg.begin("Test: Historical queries").await;
        for s in 0..NSERVERS {
            cfg.shutdown_server(s);
            for c in &cfa {
                let got = query(&ck, Some(c.num)).await;
                check_same_config(&got, c);
            }
            cfg.start_server(s).await;
            cfg.connect_all();
        }
        cfg.end().await;

        cfg.begin("Test: Move").await;
        let (gid3, gid4) = (503, 504);
        join(&ck, group(gid3, &["3a", "3b", "3c"])).await;
        join(&ck, group(gid4, &["4a", "4b", "4c"])).await;
        for i in 0..NSHARDS {
            let cf = query(&ck, None).await;
            let target = if i < NSHARDS / 2 { gid3 } else { gid4 };
            ck.move_shard(i, target)
                .await
                .unwrap_or_else(|e| panic!("Move({i}, {target}): {e}"));
            if cf.shards[i] != target {
                let cf1 = query(&ck, None).await;
                assert!(cf1.num > cf.num, "Move should increase ShardConfig.Num");
            }
        }
        let cf2 = query(&ck, None).await;
        for i in 0..NSHARDS {
            let want = if i < NSHARDS / 2 { gid3 } else { gid4 };
            assert_eq!(
                cf2.shards[i], want,
                "expected shard {i} on gid {want} actually {}",
                cf2.shards[i]
            );
        }
        leave(&ck, &[gid3]).await;
        leave(&ck, &[gid4]).await;
        cfg.end().await;

        cfg.begin("Test: Concurrent leave/join").await;
        const NPARA: usize = 10;
        let gids: Vec<Gid> = (0..NPARA as Gid).map(|xi| xi * 10 + 100).collect();
        let tasks = gids.clone();
        concurrently(&cfg, NPARA, move |i, cki| {
            let gid = tasks[i];
            async move {
                let (sid1, sid2) = (format!("s{gid}a"), format!("s{gid}b"));
                join(&cki, group(gid + 1000, &[&sid1])).await;
                join(&cki, group(gid, &[&sid2])).await;
                leave(&cki, &[gid + 1000]).await;
            }
        })
        .await;
        check(&ck, &gids).await;
        cfg.end().await;

        cfg.begin("Test: Minimal transfers after joins").await;
        let c1 = query(&ck, None).await;
        for i in 0..5 {
            let gid = (NPARA + 1 + i) as Gid;
            let (a, b) = (format!("{gid}a"), format!("{gid}b"));
            join(&ck, group(gid, &[&a, &b, &b])).await;
        }
        let c2 = query(&ck, None).await;
        check_no_gain(&c1, &c2, &gids, "Join()s");
        check_no_loss(&c1, &c2, &gids, "Join()s");
        cfg.end().await;

        cfg.begin("Test: Minimal transfers after leaves").await;
        for i in 0..5 {
            leave(&ck, &[(NPARA + 1 + i) as Gid]).await;
        }
        let c3 = query(&ck, None).await;
        check_no_loss(&c2, &c3, &gids, "Leave()s");
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn multi_5a() {
    run_test("multi_5a", |sim: Sim| async move {
        let cfg = make_config(&sim).await;
        let ck = cfg.make_client().await;

        cfg.begin("Test: Multi-group join/leave").await;
        check(&ck, &[]).await;
        let (gid1, gid2, gid3) = (1, 2, 3);
        let mut both = group(gid1, &["x", "y", "z"]);
        both.extend(group(gid2, &["a", "b", "c"]));
        join(&ck, both).await;
        check(&ck, &[gid1, gid2]).await;
        join(&ck, group(gid3, &["j", "k", "l"])).await;
        check(&ck, &[gid1, gid2, gid3]).await;
        let cfx = query(&ck, None).await;
        check_servers(&cfx, gid1, &["x", "y", "z"]);
        check_servers(&cfx, gid2, &["a", "b", "c"]);
        check_servers(&cfx, gid3, &["j", "k", "l"]);
        leave(&ck, &[gid1, gid3]).await;
        check(&ck, &[gid2]).await;
        let cfx = query(&ck, None).await;
        check_servers(&cfx, gid2, &["a", "b", "c"]);
        leave(&ck, &[gid2]).await;
        cfg.end().await;

        cfg.begin("Test: Concurrent multi leave/join").await;
        const NPARA: usize = 10;
        let gids: Vec<Gid> = (0..NPARA as Gid).map(|xi| xi + 1000).collect();
        let tasks = gids.clone();
        concurrently(&cfg, NPARA, move |i, cki| {
            let gid = tasks[i];
            async move {
                let (a, b, c) = (format!("{gid}a"), format!("{gid}b"), format!("{gid}c"));
                let (d, e) = (format!("{}a", gid + 1000), format!("{}a", gid + 2000));
                let mut servers = group(gid, &[&a, &b, &c]);
                servers.extend(group(gid + 1000, &[&d]));
                servers.extend(group(gid + 2000, &[&e]));
                join(&cki, servers).await;
                leave(&cki, &[gid + 1000, gid + 2000]).await;
            }
        })
        .await;
        check(&ck, &gids).await;
        cfg.end().await;

        cfg.begin("Test: Minimal transfers after multijoins").await;
        let c1 = query(&ck, None).await;
        let mut m = BTreeMap::new();
        for i in 0..5 {
            let gid = (NPARA + 1 + i) as Gid;
            m.insert(gid, vec![format!("{gid}a"), format!("{gid}b")]);
        }
        join(&ck, m).await;
        let c2 = query(&ck, None).await;
        check_no_gain(&c1, &c2, &gids, "multijoins");
        check_no_loss(&c1, &c2, &gids, "multijoins");
        cfg.end().await;

        cfg.begin("Test: Minimal transfers after multileaves").await;
        let l: Vec<Gid> = (0..5).map(|i| (NPARA + 1 + i) as Gid).collect();
        leave(&ck, &l).await;
        let c3 = query(&ck, None).await;
        check_no_loss(&c2, &c3, &gids, "multileaves");
        cfg.end().await;

        cfg.begin("Test: Check Same config on servers").await;
        let leader = cfg.leader().await.expect("Leader not found");
        let c = query(&ck, None).await; // the config the leader claims
        cfg.shutdown_server(leader);
        let mut attempts = 0;
        while cfg.leader().await.is_none() {
            attempts += 1;
            assert!(attempts < 3, "Leader not found");
            sleep(Duration::from_secs(1)).await;
        }
        let c1 = query(&ck, None).await;
        check_same_config(&c, &c1);
        cfg.end().await;
        cfg.cleanup();
    });
}

#[test]
fn minimal_again_5a() {
    run_test("minimal_again_5a", |sim: Sim| async move {
        let cfg = make_config(&sim).await;
        let ck = cfg.make_client().await;

        cfg.begin("Test: Minimal transfers after join").await;
        join(&ck, group(1, &["a"])).await;
        join(&ck, group(2, &["b"])).await;
        let c1 = query(&ck, None).await;
        join(&ck, group(3, &["c"])).await;
        let c2 = query(&ck, None).await;
        let mut changed = 0;
        for i in 0..NSHARDS {
            if c2.shards[i] != 3 {
                assert_eq!(c1.shards[i], c2.shards[i], "shard {i} moved needlessly");
            }
            if c1.shards[i] != c2.shards[i] {
                changed += 1;
            }
        }
        assert!(
            changed <= NSHARDS / 3 + 1,
            "too many shards moved on join: {changed}"
        );
        cfg.end().await;

        cfg.begin("Test: Minimal transfers after leave").await;
        leave(&ck, &[1]).await;
        let c3 = query(&ck, None).await;
        let mut changed = 0;
        for i in 0..NSHARDS {
            if c2.shards[i] != 1 {
                assert_eq!(c2.shards[i], c3.shards[i], "shard {i} moved needlessly");
            }
            if c2.shards[i] != c3.shards[i] {
                changed += 1;
            }
        }
        assert!(
            changed <= NSHARDS / 3 + 1,
            "too many shards moved on leave: {changed}"
        );
        cfg.end().await;
        cfg.cleanup();
    });
}
