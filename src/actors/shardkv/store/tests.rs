//! Unit tests of the group state machine: shard statuses through a hand-off between two
//! groups, duplicate tables travelling with shards, and the rules that keep configs in order.

use super::*;

const A: Gid = 100;
const B: Gid = 101;

fn config(num: u64, shards: [Gid; NSHARDS]) -> ShardConfig {
    let mut groups = BTreeMap::new();
    for gid in shards {
        if gid != 0 {
            groups.insert(
                gid,
                vec![format!("server-{gid}-0"), format!("server-{gid}-1")],
            );
        }
    }
    ShardConfig {
        num,
        shards,
        groups,
    }
}

/// Config 1: all on A. Config 2: shards 0..5 move to B.
fn c1() -> ShardConfig {
    config(1, [A; NSHARDS])
}

fn c2() -> ShardConfig {
    config(2, [B, B, B, B, B, A, A, A, A, A])
}

/// A key of shard `s` (keys "0".."9" are shards 8, 9, 0, 1, ...).
fn key(s: usize) -> String {
    ((s + 2) % NSHARDS).to_string()
}

fn put(store: &mut ShardStore, k: &str, v: &str, client: u64, seq: u64) -> ShardOutput {
    store.apply(ShardCommand::Client {
        command: KvCommand::Put {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        },
        session: Some((client, seq)),
    })
}

fn append(store: &mut ShardStore, k: &str, v: &str, client: u64, seq: u64) -> ShardOutput {
    store.apply(ShardCommand::Client {
        command: KvCommand::Append {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        },
        session: Some((client, seq)),
    })
}

fn get(store: &mut ShardStore, k: &str) -> ShardOutput {
    store.apply(ShardCommand::Client {
        command: KvCommand::Get {
            key: Bytes::copy_from_slice(k.as_bytes()),
        },
        session: None,
    })
}

/// What a Get that reads `v` answers.
fn ok(v: &str) -> ShardOutput {
    ShardOutput::Kv(Some(Bytes::copy_from_slice(v.as_bytes())))
}

/// What an applied write answers.
const WRITTEN: ShardOutput = ShardOutput::Kv(None);

fn configure(store: &mut ShardStore, gid: Gid, config: ShardConfig) {
    assert_eq!(
        store.apply(ShardCommand::Configure { gid, config }),
        ShardOutput::Done
    );
}

fn status(store: &ShardStore, s: usize) -> Option<ShardStatus> {
    store.shards().get(&s).map(|shard| shard.status)
}

#[test]
fn key_helper_matches_key2shard() {
    for s in 0..NSHARDS {
        assert_eq!(key2shard(key(s)), s);
    }
}

#[test]
fn shards_gained_from_gid_0_serve_at_once() {
    let mut a = ShardStore::default();
    assert_eq!(get(&mut a, "x"), ShardOutput::WrongGroup);
    configure(&mut a, A, c1());
    assert_eq!(a.config().num, 1);
    assert!((0..NSHARDS).all(|s| status(&a, s) == Some(ShardStatus::Serving)));
    assert_eq!(get(&mut a, "x"), ShardOutput::Kv(None));
    assert_eq!(put(&mut a, "x", "1", 7, 1), WRITTEN);
    assert_eq!(append(&mut a, "x", "2", 7, 2), WRITTEN);
    assert_eq!(get(&mut a, "x"), ok("12"));
    assert!(a.work().settled);
}

#[test]
fn duplicate_writes_are_applied_once() {
    let mut a = ShardStore::default();
    configure(&mut a, A, c1());
    append(&mut a, "x", "a", 7, 1);
    append(&mut a, "x", "a", 7, 1);
    append(&mut a, "x", "b", 7, 3);
    // A late retry of an earlier write is not applied either.
    append(&mut a, "x", "a", 7, 1);
    // Another client's numbers are its own.
    append(&mut a, "x", "c", 8, 1);
    assert_eq!(get(&mut a, "x"), ok("abc"));
}

#[test]
fn configs_are_taken_one_at_a_time_in_order() {
    let mut a = ShardStore::default();
    configure(&mut a, A, c2());
    assert_eq!(a.config().num, 0, "config 2 cannot follow config 0");
    configure(&mut a, A, c1());
    configure(&mut a, A, c1());
    assert_eq!(a.config().num, 1);
    configure(&mut a, A, c2());
    assert_eq!(a.config().num, 2);
    // Not settled (shards frozen): config 3 must wait.
    configure(&mut a, A, config(3, [A; NSHARDS]));
    assert_eq!(a.config().num, 2);
}

#[test]
fn hand_off_between_two_groups() {
    let (mut a, mut b) = (ShardStore::default(), ShardStore::default());
    configure(&mut a, A, c1());
    configure(&mut b, B, c1());
    for s in 0..NSHARDS {
        put(&mut a, &key(s), &format!("v{s}"), 7, s as u64 + 1);
    }
    configure(&mut a, A, c2());
    configure(&mut b, B, c2());

    // A froze what it lost and keeps serving the rest; B waits for its data.
    for s in 0..5 {
        assert_eq!(status(&a, s), Some(ShardStatus::Frozen));
        assert_eq!(status(&b, s), Some(ShardStatus::Waiting));
        assert_eq!(get(&mut a, &key(s)), ShardOutput::WrongGroup);
        assert_eq!(get(&mut b, &key(s)), ShardOutput::WrongGroup);
    }
    for s in 5..NSHARDS {
        assert_eq!(get(&mut a, &key(s)), ok(&format!("v{s}")));
        assert_eq!(status(&b, s), None);
    }
    let work = b.work();
    assert!(!work.settled);
    assert_eq!(
        work.pull,
        vec![Transfer {
            gid: A,
            servers: c1().groups[&A].clone(),
            shards: vec![0, 1, 2, 3, 4],
        }]
    );
    assert!(work.confirm.is_empty());
    assert!(a.work().pull.is_empty() && !a.work().settled);

    // B pulls; A only answers for the config it is at.
    assert_eq!(a.frozen(1, &[0]), Err(MigrationError::NotReady));
    assert_eq!(a.frozen(2, &[0, 5]), Err(MigrationError::NotReady));
    let data = a.frozen(2, &work.pull[0].shards).expect("frozen data");
    assert_eq!(data.len(), 5);
    // An install for another config changes nothing.
    b.apply(ShardCommand::Install {
        num: 1,
        shards: data.clone(),
    });
    assert_eq!(status(&b, 0), Some(ShardStatus::Waiting));
    b.apply(ShardCommand::Install {
        num: 2,
        shards: data.clone(),
    });
    for s in 0..5 {
        assert_eq!(status(&b, s), Some(ShardStatus::Confirming));
        assert_eq!(get(&mut b, &key(s)), ok(&format!("v{s}")));
    }
    // The duplicate table came along: a retried write is not applied twice.
    assert_eq!(put(&mut b, &key(0), "again", 7, 1), WRITTEN);
    assert_eq!(get(&mut b, &key(0)), ok("v0"));
    // A second install of the same data does not overwrite newer writes.
    append(&mut b, &key(1), "+", 9, 1);
    b.apply(ShardCommand::Install {
        num: 2,
        shards: data,
    });
    assert_eq!(get(&mut b, &key(1)), ok("v1+"));

    // B tells A to delete; A does, then B stops reminding it.
    let confirm = b.work().confirm;
    assert_eq!(confirm.len(), 1);
    assert_eq!(
        a.apply(ShardCommand::Delete {
            num: 3,
            shards: confirm[0].shards.clone()
        }),
        ShardOutput::NotReady
    );
    assert_eq!(
        a.apply(ShardCommand::Delete {
            num: 2,
            shards: confirm[0].shards.clone()
        }),
        ShardOutput::Done
    );
    assert!((0..5).all(|s| status(&a, s).is_none()));
    assert!(a.work().settled);
    b.apply(ShardCommand::Confirmed {
        num: 2,
        shards: confirm[0].shards.clone(),
    });
    assert!(b.work().settled);
    assert!((0..5).all(|s| status(&b, s) == Some(ShardStatus::Serving)));
    // A stale delete is harmless.
    assert_eq!(
        a.apply(ShardCommand::Delete {
            num: 1,
            shards: vec![5]
        }),
        ShardOutput::Done
    );
    assert_eq!(status(&a, 5), Some(ShardStatus::Serving));
}

#[test]
fn shards_handed_to_no_group_are_dropped() {
    let mut a = ShardStore::default();
    configure(&mut a, A, c1());
    put(&mut a, "x", "1", 7, 1);
    configure(&mut a, A, config(2, [0; NSHARDS]));
    assert!(a.shards().is_empty());
    assert!(a.work().settled);
}

#[test]
fn a_group_configured_as_another_gid_refuses() {
    let mut a = ShardStore::default();
    configure(&mut a, A, c1());
    configure(&mut a, B, c2());
    assert_eq!(a.config().num, 1);
}

#[test]
fn state_round_trips_through_rmp_serde() {
    let mut a = ShardStore::default();
    configure(&mut a, A, c1());
    put(&mut a, "x", "1", 7, 1);
    configure(&mut a, A, c2());
    let bytes = rmp_serde::to_vec(&a).expect("encode");
    let back: ShardStore = rmp_serde::from_slice(&bytes).expect("decode");
    assert_eq!(back.config(), a.config());
    assert_eq!(back.shards(), a.shards());
    assert_eq!(back.work(), a.work());
}
