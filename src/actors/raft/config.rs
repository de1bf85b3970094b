//! Raft's tunables: [`RaftConfig`], what an embedder or operator may set, in real durations.
//!
//! The peer runs the pure core on a logical clock of `tick`-long ticks; [`Ticks`] is the
//! configuration in those units, which is all the core sees.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

/// How a Raft peer times elections and heartbeats and how much one message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// The length of one tick of the peer's logical clock; the durations below are rounded
    /// down to whole ticks.
    pub tick: Duration,
    /// A follower or candidate that hears nothing for a timeout drawn from this range (anew
    /// each time) starts an election.
    pub election_timeout: Range<Duration>,
    /// A leader sends AppendEntries to every follower at this interval.
    pub heartbeat_interval: Duration,
    /// The most entries one AppendEntries carries.
    pub max_entries_per_append: usize,
    /// The most command bytes one AppendEntries carries (it always carries at least one
    /// entry, however large), and the most snapshot bytes one InstallSnapshot chunk carries.
    pub max_bytes_per_append: usize,
    /// Flow control: the most AppendEntries carrying entries that may be unanswered to one
    /// streaming follower, and the most command bytes they may carry between them (one
    /// message is always allowed, however large). A slow follower then holds at most this
    /// much of the leader's sends in queues, instead of every entry proposed since it fell
    /// behind; heartbeats still go, without entries.
    pub max_appends_in_flight: usize,
    /// See `max_appends_in_flight`.
    pub max_bytes_in_flight: usize,
    /// Pre-vote (Raft thesis §9.6): a peer whose election timer fires first asks whether it
    /// could win, without raising its term; only with a majority's yes does it campaign. A
    /// peer back from isolation, or cut off from the leader alone, then cannot force the
    /// cluster into a new term.
    pub pre_vote: bool,
    /// Check-quorum: a leader that has not heard from a majority within an election timeout
    /// steps down, and a peer that heard from its leader within the minimum election timeout
    /// refuses to help elect another (leader stickiness). Needed for lease reads.
    pub check_quorum: bool,
    /// Lease reads: a leader answers read-index requests without a heartbeat round while a
    /// majority acknowledged it within 90% of the minimum election timeout.
    ///
    /// Safe only if no peer's clock runs more than 10% slower than the leader's over an
    /// election timeout: followers that acknowledged the leader refuse other candidates for
    /// the minimum election timeout *by their own clocks*, and the lease must end first by the
    /// leader's. A paused process (a VM migration, a long GC-like stall) breaks this, so the
    /// default is off.
    pub lease_reads: bool,
    /// A learner is promoted to voter only while it is at most this many entries behind the
    /// leader's log: a voter far behind would make commits wait for it.
    pub promote_lag: u64,
}

impl Default for RaftConfig {
    /// A 10 ms tick, elections after 300–600 ms of silence, heartbeats every 100 ms (6.5840
    /// allows at most 10 per second and wants a new leader within 5 s), at most 256 entries
    /// and 1 MiB of commands per AppendEntries, at most 64 of them and 16 MiB unanswered per
    /// follower; pre-vote and check-quorum on, lease reads off;
    /// learners promoted within 1 000 entries of the leader.
    fn default() -> Self {
        RaftConfig {
            tick: Duration::from_millis(10),
            election_timeout: Duration::from_millis(300)..Duration::from_millis(600),
            heartbeat_interval: Duration::from_millis(100),
            max_entries_per_append: 256,
            max_bytes_per_append: 1 << 20,
            max_appends_in_flight: 64,
            max_bytes_in_flight: 16 << 20,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            promote_lag: 1000,
        }
    }
}

/// Why a [`RaftConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig(pub String);

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid Raft config: {}", self.0)
    }
}

impl std::error::Error for InvalidConfig {}

/// How much a leader may have unanswered to one streaming follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InFlightCap {
    /// AppendEntries carrying entries.
    pub messages: usize,
    /// Command bytes they carry.
    pub bytes: usize,
}

/// A [`RaftConfig`] in ticks, as the core uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticks {
    pub election: Range<u32>,
    pub heartbeat: u32,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub in_flight: InFlightCap,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// How long a leader's lease lasts, from the start of a heartbeat round a majority
    /// answered (`None`: no lease reads).
    pub lease: Option<u64>,
    pub promote_lag: u64,
}

impl RaftConfig {
    /// The configuration in ticks, checked: a tick of at least 1 ms, a heartbeat of at least
    /// one tick, a non-empty election range starting above the heartbeat, and positive caps.
    pub(crate) fn ticks(&self) -> Result<Ticks, InvalidConfig> {
        let invalid = |why: String| Err(InvalidConfig(why));
        if self.tick < Duration::from_millis(1) {
            return invalid(format!("tick {:?} is shorter than 1 ms", self.tick));
        }
        let in_ticks = |d: Duration| {
            u32::try_from(d.as_nanos() / self.tick.as_nanos())
                .map_err(|_| InvalidConfig(format!("{d:?} is too many ticks")))
        };
        let heartbeat = in_ticks(self.heartbeat_interval)?;
        let election = in_ticks(self.election_timeout.start)?..in_ticks(self.election_timeout.end)?;
        if heartbeat == 0 {
            return invalid(format!(
                "heartbeat interval {:?} is shorter than the tick {:?}",
                self.heartbeat_interval, self.tick
            ));
        }
        if election.is_empty() {
            return invalid(format!(
                "election timeout range {:?} is empty at a {:?} tick",
                self.election_timeout, self.tick
            ));
        }
        if election.start <= heartbeat {
            return invalid(format!(
                "election timeouts {:?} must start above the heartbeat interval {:?}",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.max_entries_per_append == 0
            || self.max_bytes_per_append == 0
            || self.max_appends_in_flight == 0
            || self.max_bytes_in_flight == 0
        {
            return invalid(
                "max_entries_per_append, max_bytes_per_append, max_appends_in_flight and \
                 max_bytes_in_flight must be positive"
                    .into(),
            );
        }
        if self.lease_reads && !self.check_quorum {
            return invalid("lease_reads needs check_quorum".into());
        }
        let lease = self.lease_reads.then(|| u64::from(election.start) * 9 / 10);
        Ok(Ticks {
            election,
            heartbeat,
            max_entries: self.max_entries_per_append,
            max_bytes: self.max_bytes_per_append,
            in_flight: InFlightCap {
                messages: self.max_appends_in_flight,
                bytes: self.max_bytes_in_flight,
            },
            pre_vote: self.pre_vote,
            check_quorum: self.check_quorum,
            lease,
            promote_lag: self.promote_lag,
        })
    }

    /// Checks the configuration (see the rules on [`RaftConfig`]'s fields).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.ticks().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_labs_timing_in_ticks() {
        let ticks = RaftConfig::default().ticks().expect("valid");
        assert_eq!((ticks.election, ticks.heartbeat), (30..60, 10));
    }

    #[test]
    fn invalid_configs_are_rejected_with_the_reason() {
        let ms = Duration::from_millis;
        let cases = [
            RaftConfig {
                tick: Duration::ZERO,
                ..RaftConfig::default()
            },
            RaftConfig {
                heartbeat_interval: ms(5),
                ..RaftConfig::default()
            },
            RaftConfig {
                election_timeout: ms(300)..ms(300),
                ..RaftConfig::default()
            },
            RaftConfig {
                election_timeout: ms(100)..ms(200),
                ..RaftConfig::default()
            },
            RaftConfig {
                max_entries_per_append: 0,
                ..RaftConfig::default()
            },
            RaftConfig {
                lease_reads: true,
                check_quorum: false,
                ..RaftConfig::default()
            },
        ];
        for config in cases {
            assert!(config.validate().is_err(), "{config:?} was accepted");
        }
    }
}
