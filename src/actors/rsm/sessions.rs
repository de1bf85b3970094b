//! The session table of the replicated state machine (Raft thesis §6.3): per registered
//! client, what at-most-once execution needs and nothing more: the last request number and the
//! output of that request.
//!
//! A client registers first; its id is the log index of its registration, so ids are never
//! reused and an unknown id can only mean a session that expired (or never existed): a request
//! under it is refused as [`SubmitError::SessionExpired`](crate::messages::rsm::SubmitError),
//! never executed, so no retry is ever applied twice. Sessions expire by the time carried in
//! the log (the proposing leader's clock, made monotonic), never by a replica's own clock, so
//! every replica, restarted or restored from a snapshot, drops the same sessions at the same
//! entry. A cap on live sessions drops the least recently active first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::messages::rsm::{ClientId, Seq};

/// How long sessions live and how many there may be.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// A session with no request for this long (by the log's clock) expires.
    pub ttl: Duration,
    /// Most live sessions; one more registration expires the least recently active.
    pub max_sessions: usize,
    /// Where the leader reads the time it writes into each entry.
    pub clock: SessionClock,
}

impl Default for SessionPolicy {
    /// One hour, 100 000 sessions, the wall clock.
    fn default() -> Self {
        SessionPolicy {
            ttl: Duration::from_secs(3600),
            max_sessions: 100_000,
            clock: SessionClock::Wall,
        }
    }
}

/// The clock a leader stamps its entries with. Only the proposing leader reads it; replicas
/// take the time from the entries, and never let it go backwards, so a leader with a clock
/// behind its predecessor's expires nothing early. A leader whose clock runs far ahead expires
/// sessions early: their clients see `SessionExpired`, never a duplicate.
#[derive(Debug, Clone, Copy)]
pub enum SessionClock {
    /// Milliseconds since the Unix epoch (deployments: leaders on different machines).
    Wall,
    /// Milliseconds since this instant of the runtime's clock (the simulation, where time is
    /// virtual and every server shares one runtime).
    Since(tokio::time::Instant),
}

impl SessionClock {
    /// The time now, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        let elapsed = match self {
            SessionClock::Wall => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
            SessionClock::Since(origin) => origin.elapsed(),
        };
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

/// One client's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session<O> {
    /// Its last executed request and that request's output (`None`: none yet).
    last: Option<Executed<O>>,
    /// The log's time of its registration or last request.
    active: u64,
}

/// A request a session executed. A struct, not a bare `Option<O>` beside the number: an
/// output that is itself `None` (a KV write's) must not read back from a snapshot as "no
/// output", which would answer the request's retry with nothing, forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Executed<O> {
    seq: Seq,
    output: O,
}

/// What to do with a request, by its session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict<'a, O> {
    /// A new request: execute it.
    Execute,
    /// A retry of the last request: answer its output again.
    Duplicate(&'a O),
    /// Older than the last request: its caller has moved on; answer nothing.
    Stale,
    /// No such session: refuse it.
    Expired,
}

/// Every live session, with the log's clock.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SessionTable<O> {
    sessions: BTreeMap<ClientId, Session<O>>,
    /// The latest time applied from the log, in milliseconds.
    clock: u64,
    /// `(active, client)` of every session, least recently active first.
    #[serde(skip)]
    by_activity: BTreeSet<(u64, ClientId)>,
}

impl<O> Default for SessionTable<O> {
    fn default() -> Self {
        SessionTable {
            sessions: BTreeMap::new(),
            clock: 0,
            by_activity: BTreeSet::new(),
        }
    }
}

impl<O: Clone> SessionTable<O> {
    /// Rebuilds the activity index after deserialization.
    pub(crate) fn reindexed(mut self) -> Self {
        self.by_activity = self.sessions.iter().map(|(c, s)| (s.active, *c)).collect();
        self
    }

    /// Moves the log's clock to `stamp` (never back) and expires the sessions idle for `ttl`.
    pub(crate) fn advance(&mut self, stamp: u64, ttl: Duration) {
        self.clock = self.clock.max(stamp);
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        while let Some(&(active, client)) = self.by_activity.first() {
            if active.saturating_add(ttl) > self.clock {
                break;
            }
            self.by_activity.pop_first();
            self.sessions.remove(&client);
        }
    }

    /// Opens a session for `client`, dropping the least recently active ones past `max`.
    pub(crate) fn register(&mut self, client: ClientId, max: usize) {
        let session = Session {
            last: None,
            active: self.clock,
        };
        if let Some(old) = self.sessions.insert(client, session) {
            self.by_activity.remove(&(old.active, client));
        }
        self.by_activity.insert((self.clock, client));
        while self.sessions.len() > max.max(1) {
            let Some((_, oldest)) = self.by_activity.pop_first() else {
                break;
            };
            self.sessions.remove(&oldest);
        }
    }

    /// What to do with request `seq` of `client`.
    pub(crate) fn verdict(&self, client: ClientId, seq: Seq) -> Verdict<'_, O> {
        let Some(session) = self.sessions.get(&client) else {
            return Verdict::Expired;
        };
        match &session.last {
            Some(last) if seq == last.seq => Verdict::Duplicate(&last.output),
            Some(last) if seq < last.seq => Verdict::Stale,
            // Request 0 is the registration itself: nothing to execute or repeat.
            None if seq == 0 => Verdict::Stale,
            _ => Verdict::Execute,
        }
    }

    /// Records that request `seq` of `client` was executed with `output`.
    pub(crate) fn executed(&mut self, client: ClientId, seq: Seq, output: O) {
        let Some(session) = self.sessions.get_mut(&client) else {
            return;
        };
        self.by_activity.remove(&(session.active, client));
        session.active = self.clock;
        session.last = Some(Executed { seq, output });
        self.by_activity.insert((self.clock, client));
    }

    /// The live sessions: client and last request number, by client.
    pub(crate) fn list(&self) -> Vec<(ClientId, Seq)> {
        let seq = |s: &Session<O>| s.last.as_ref().map_or(0, |last| last.seq);
        self.sessions.iter().map(|(c, s)| (*c, seq(s))).collect()
    }

    /// Live sessions.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn a_request_executes_once_and_its_retry_gets_the_same_output() {
        let mut t = SessionTable::default();
        t.register(7, 10);
        assert_eq!(t.verdict(7, 1), Verdict::Execute);
        t.executed(7, 1, "one");
        assert_eq!(t.verdict(7, 1), Verdict::Duplicate(&"one"));
        assert_eq!(t.verdict(7, 0), Verdict::Stale);
        assert_eq!(t.verdict(7, 2), Verdict::Execute);
        assert_eq!(t.verdict(8, 1), Verdict::Expired, "never registered");
    }

    #[test]
    fn idle_sessions_expire_by_the_log_clock_which_never_goes_back() {
        let mut t = SessionTable::default();
        t.advance(1_000, TTL);
        t.register(1, 10);
        t.advance(5_000, TTL);
        t.register(2, 10);
        t.advance(9_000, TTL);
        t.executed(1, 1, ());
        // A leader whose clock is behind: the table keeps its time.
        t.advance(2_000, TTL);
        t.advance(14_999, TTL);
        assert_eq!(t.list(), vec![(1, 1), (2, 0)]);
        t.advance(15_000, TTL);
        assert_eq!(
            t.verdict(2, 1),
            Verdict::Expired,
            "idle since 5 000 for the whole ttl"
        );
        assert_eq!(t.verdict(1, 2), Verdict::Execute, "active at 9 000");
        t.advance(19_000, TTL);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_million_one_write_clients_leave_at_most_the_cap() {
        let mut t = SessionTable::default();
        for client in 1..=1_000_000u64 {
            t.advance(client, TTL);
            t.register(client, 1000);
            assert_eq!(t.verdict(client, 1), Verdict::Execute);
            t.executed(client, 1, ());
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.verdict(1, 2), Verdict::Expired, "the oldest went first");
        assert_eq!(t.verdict(1_000_000, 2), Verdict::Execute);
        assert!(t.by_activity.len() == 1000);
    }

    #[test]
    fn a_table_read_back_expires_the_same_sessions() {
        let mut t = SessionTable::default();
        for client in 1..=50u64 {
            t.advance(client * 100, TTL);
            t.register(client, 40);
        }
        let bytes = rmp_serde::to_vec(&t).expect("encode");
        let mut back: SessionTable<()> = rmp_serde::from_slice::<SessionTable<()>>(&bytes)
            .expect("decode")
            .reindexed();
        assert_eq!(back.list(), t.list());
        for table in [&mut t, &mut back] {
            table.advance(13_000, TTL);
        }
        assert_eq!(back.list(), t.list());
        assert_eq!(t.len(), 20);
    }

    #[test]
    fn an_output_of_none_is_repeated_after_a_snapshot() {
        let mut t: SessionTable<Option<u8>> = SessionTable::default();
        t.register(3, 10);
        t.executed(3, 1, None);
        let bytes = rmp_serde::to_vec(&t).expect("encode");
        let back = rmp_serde::from_slice::<SessionTable<Option<u8>>>(&bytes)
            .expect("decode")
            .reindexed();
        assert_eq!(back.verdict(3, 1), Verdict::Duplicate(&None));
        assert_eq!(back.verdict(3, 0), Verdict::Stale);
        assert_eq!(back.verdict(3, 2), Verdict::Execute);
    }
}
