//! Who a listener lets in, and how much memory its connections may hold.
//!
//! A connection that has not finished its handshake costs a stranger nothing to open, so those
//! get a small pool of their own, apart from the authenticated connections: at most
//! `max_unauthenticated` in all and `max_unauthenticated_per_source` from one IP address, and
//! when a new one arrives at either limit the *oldest* waiting one is closed. A flood of idle
//! sockets therefore only ever displaces itself: a real client or peer finishes its handshake
//! in a round trip, long before a flood can push it out, and connections that already passed
//! the handshake are never touched. Authenticated connections count against
//! `max_connections`.
//!
//! Frames of more than [`UNCOUNTED_FRAME`] bytes draw on one [`FrameBudget`] per listener
//! (`max_buffered` bytes) while they are read, so a token holder who starts many large frames
//! and stalls cannot make the node buffer more than that; a frame that cannot get its share
//! before its frame timeout closes its connection.
//!
//! Refusals are logged through a [`RateLimitedLog`]: one line per second at most, with a count
//! of those left out.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::{timeout_at, Instant};

use super::settings::TcpSettings;

/// Frames up to this size are read without drawing on the [`FrameBudget`]: the calls of the
/// control lane (heartbeats, votes, client requests) never wait for memory.
pub(crate) const UNCOUNTED_FRAME: usize = 64 << 10;

/// A listener's connections, by stage.
pub(crate) struct Admission {
    max_unauthenticated: usize,
    max_per_source: usize,
    max_authenticated: usize,
    next_ticket: u64,
    /// Connections still in their handshake, oldest first: source and a handle to close them.
    waiting: BTreeMap<u64, (IpAddr, AbortHandle)>,
    waiting_per_source: BTreeMap<IpAddr, usize>,
    authenticated: usize,
}

/// What the accept loop should do with a new connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Serve it under `ticket`, after closing the older waiting connections of `evict`
    /// (their tickets).
    Yes { ticket: u64, evict: Vec<u64> },
    /// Refuse it: the authenticated connections are at their limit.
    Full,
}

impl Admission {
    /// The admission state of a listener with `settings`' limits.
    pub(crate) fn new(settings: &TcpSettings) -> Self {
        Admission {
            max_unauthenticated: settings.max_unauthenticated.max(1),
            max_per_source: settings.max_unauthenticated_per_source.max(1),
            max_authenticated: settings.max_connections,
            next_ticket: 0,
            waiting: BTreeMap::new(),
            waiting_per_source: BTreeMap::new(),
            authenticated: 0,
        }
    }

    /// Decides on a connection from `source`. On `Yes`, the caller spawns its task and
    /// registers it with [`Admission::waiting`], then closes the tasks of the evicted tickets
    /// (taken with [`Admission::take_evicted`]).
    pub(crate) fn admit(&mut self, source: IpAddr) -> Admit {
        if self.authenticated >= self.max_authenticated {
            return Admit::Full;
        }
        let mut evict = Vec::new();
        if self.waiting_per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            let oldest = self.waiting.iter().find(|(_, (from, _))| *from == source);
            evict.extend(oldest.map(|(ticket, _)| *ticket));
        }
        if self.waiting.len() - evict.len() >= self.max_unauthenticated {
            let oldest = self.waiting.keys().find(|ticket| !evict.contains(ticket));
            evict.extend(oldest.copied());
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        Admit::Yes { ticket, evict }
    }

    /// Registers the task of a connection admitted under `ticket`.
    pub(crate) fn waiting(&mut self, ticket: u64, source: IpAddr, task: AbortHandle) {
        self.waiting.insert(ticket, (source, task));
        *self.waiting_per_source.entry(source).or_default() += 1;
    }

    /// Forgets an evicted waiting connection and returns the handle that closes its task.
    pub(crate) fn take_evicted(&mut self, ticket: u64) -> Option<AbortHandle> {
        let (source, task) = self.waiting.remove(&ticket)?;
        self.forget_source(source);
        Some(task)
    }

    /// The connection under `ticket` passed its handshake; `false` if the authenticated
    /// connections are at their limit (the caller closes it).
    pub(crate) fn authenticated(&mut self, ticket: u64) -> bool {
        if let Some((source, _)) = self.waiting.remove(&ticket) {
            self.forget_source(source);
        }
        if self.authenticated >= self.max_authenticated {
            return false;
        }
        self.authenticated += 1;
        true
    }

    /// The connection under `ticket` ended (`authenticated`: after passing its handshake).
    pub(crate) fn closed(&mut self, ticket: u64, authenticated: bool) {
        if authenticated {
            self.authenticated = self.authenticated.saturating_sub(1);
        } else if let Some((source, _)) = self.waiting.remove(&ticket) {
            self.forget_source(source);
        }
    }

    /// Connections in their handshake now.
    #[cfg(test)]
    pub(crate) fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    fn forget_source(&mut self, source: IpAddr) {
        if let Some(count) = self.waiting_per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.waiting_per_source.remove(&source);
            }
        }
    }
}

/// The memory that frames larger than [`UNCOUNTED_FRAME`] may hold on one listener, in KiB.
#[derive(Clone)]
pub(crate) struct FrameBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

/// Why a frame got no memory.
#[derive(Debug)]
pub(crate) struct OverBudget;

impl FrameBudget {
    /// A budget of `bytes`, which must hold at least one frame of `max_frame` bytes.
    pub(crate) fn new(bytes: usize, max_frame: usize) -> Self {
        let total_kib = u32::try_from(bytes.max(max_frame).div_ceil(1024)).unwrap_or(u32::MAX);
        // Semaphore::MAX_PERMITS is far above any u32 we produce.
        FrameBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Waits until `len` bytes are free, or fails at `deadline`.
    pub(crate) async fn reserve(
        &self,
        len: usize,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, OverBudget> {
        let kib = u32::try_from(len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.total_kib);
        match timeout_at(deadline, self.kib.clone().acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; either way there is no memory to be had.
            Ok(Err(_)) | Err(_) => Err(OverBudget),
        }
    }

    /// Bytes free now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.kib.available_permits() * 1024
    }
}

/// A warning that repeats often under attack, logged at most once per interval with a count
/// of the occurrences left out; the others go to the debug level.
pub(crate) struct RateLimitedLog {
    interval: Duration,
    last: Option<Instant>,
    left_out: u64,
}

impl RateLimitedLog {
    /// At most one line per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        RateLimitedLog {
            interval,
            last: None,
            left_out: 0,
        }
    }

    /// Logs `what` as a warning unless one was logged less than the interval ago.
    pub(crate) fn warn(&mut self, what: fmt::Arguments<'_>) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + self.interval) {
            self.left_out += 1;
            log::debug!("{what}");
            return;
        }
        if self.left_out > 0 {
            log::warn!(
                "{what} ({} more like it since the last line)",
                self.left_out
            );
        } else {
            log::warn!("{what}");
        }
        self.last = Some(now);
        self.left_out = 0;
    }

    /// Occurrences not logged as warnings since the last line.
    #[cfg(test)]
    pub(crate) fn left_out(&self) -> u64 {
        self.left_out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn settings(unauthenticated: usize, per_source: usize, authenticated: usize) -> TcpSettings {
        let mut s = TcpSettings::new("c", "t");
        s.max_unauthenticated = unauthenticated;
        s.max_unauthenticated_per_source = per_source;
        s.max_connections = authenticated;
        s
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    /// Admits a connection with a task that never ends; returns its ticket and evictions.
    fn admit(
        a: &mut Admission,
        source: IpAddr,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> (u64, Vec<u64>) {
        match a.admit(source) {
            Admit::Yes { ticket, evict } => {
                let handle = tasks.spawn(std::future::pending());
                a.waiting(ticket, source, handle);
                for &e in &evict {
                    a.take_evicted(e)
                        .expect("evicted ticket is waiting")
                        .abort();
                }
                (ticket, evict)
            }
            Admit::Full => panic!("unexpected Full"),
        }
    }

    #[tokio::test]
    async fn a_flood_from_one_source_displaces_only_its_own_oldest_connections() {
        let mut tasks = tokio::task::JoinSet::new();
        let mut a = Admission::new(&settings(8, 3, 100));
        let (first, _) = admit(&mut a, ip(1), &mut tasks);
        let (other, _) = admit(&mut a, ip(2), &mut tasks);
        admit(&mut a, ip(1), &mut tasks);
        admit(&mut a, ip(1), &mut tasks);
        // The fourth from ip 1 closes ip 1's oldest, not ip 2's.
        let (_, evicted) = admit(&mut a, ip(1), &mut tasks);
        assert_eq!(evicted, vec![first]);
        for _ in 0..50 {
            let (_, evicted) = admit(&mut a, ip(1), &mut tasks);
            assert_eq!(evicted.len(), 1);
            assert_ne!(evicted[0], other);
        }
        assert_eq!(a.waiting_count(), 4);
        assert!(a.authenticated(other), "ip 2's handshake still completes");
    }

    #[tokio::test]
    async fn the_total_limit_closes_the_oldest_waiting_connection() {
        let mut tasks = tokio::task::JoinSet::new();
        let mut a = Admission::new(&settings(3, 3, 100));
        let tickets: Vec<u64> = (1..=3)
            .map(|i| admit(&mut a, ip(i), &mut tasks).0)
            .collect();
        let (_, evicted) = admit(&mut a, ip(9), &mut tasks);
        assert_eq!(evicted, vec![tickets[0]]);
        assert_eq!(a.waiting_count(), 3);
    }

    #[tokio::test]
    async fn authenticated_connections_have_their_own_limit() {
        let mut tasks = tokio::task::JoinSet::new();
        let mut a = Admission::new(&settings(4, 4, 2));
        let t1 = admit(&mut a, ip(1), &mut tasks).0;
        let t2 = admit(&mut a, ip(1), &mut tasks).0;
        let t3 = admit(&mut a, ip(1), &mut tasks).0;
        assert!(a.authenticated(t1));
        assert!(a.authenticated(t2));
        assert!(
            !a.authenticated(t3),
            "a third authenticated connection is over the limit"
        );
        assert_eq!(a.admit(ip(2)), Admit::Full);
        a.closed(t1, true);
        assert!(matches!(a.admit(ip(2)), Admit::Yes { .. }));
        assert_eq!(a.waiting_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_frame_budget_makes_large_frames_wait_and_then_fail() {
        let budget = FrameBudget::new(3 << 20, 2 << 20);
        let soon = || Instant::now() + Duration::from_secs(1);
        let big = budget.reserve(2 << 20, soon()).await.expect("room for one");
        assert_eq!(budget.available(), 1 << 20);
        assert!(
            budget.reserve(2 << 20, soon()).await.is_err(),
            "no room for a second"
        );
        drop(big);
        assert!(budget.reserve(2 << 20, soon()).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_warnings_are_counted_not_printed() {
        let mut log = RateLimitedLog::new(Duration::from_secs(1));
        for _ in 0..100 {
            log.warn(format_args!("refused"));
        }
        assert_eq!(log.left_out(), 99);
        tokio::time::advance(Duration::from_secs(1)).await;
        log.warn(format_args!("refused"));
        assert_eq!(log.left_out(), 0);
    }
}
