//! ReadIndex bookkeeping (Raft thesis §6.4): linearizable reads that write no log entry.
//!
//! A read is registered with a caller's id. When the leader can serve reads (an entry of its own
//! term is committed), every read waiting for a round gets the current commit index as its read
//! index and the number of a new heartbeat round, which the leader sends at once. Every
//! AppendEntries carries the latest round number and every reply echoes it: once a majority
//! (the leader included) has answered a round, the leader was still the leader after each read
//! of that round arrived, and the read may be served as soon as the state machine has applied
//! its read index. Later rounds confirm earlier ones, so reads that arrive while a round is out
//! share the next one, and ordinary replication traffic confirms rounds too.

use std::collections::{BTreeMap, VecDeque};

use crate::messages::raft::Membership;

/// A read the leader has confirmed: serve it once the index is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfirmedRead {
    pub ctx: u64,
    pub index: u64,
}

/// The leader's reads in flight and the heartbeat rounds that confirm them.
#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    /// The latest round started (0: none).
    round: u64,
    /// Tick at which each unconfirmed round was started, oldest first (for leases).
    started: VecDeque<(u64, u64)>,
    /// Per peer, the highest round it has answered.
    acked: BTreeMap<usize, u64>,
    /// Reads not yet in a round.
    waiting: Vec<u64>,
    /// Reads in a round: (ctx, read index, round).
    in_round: VecDeque<(u64, u64, u64)>,
    /// The tick at which the highest confirmed round was started.
    confirmed_at: Option<u64>,
}

impl ReadOnly {
    /// The round the next AppendEntries carries.
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    /// Registers a read.
    pub(crate) fn add(&mut self, ctx: u64) {
        self.waiting.push(ctx);
    }

    /// Whether reads wait for a round.
    pub(crate) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Starts a round for every waiting read, at read index `commit_index`, at `tick`.
    pub(crate) fn start_round(&mut self, commit_index: u64, tick: u64) {
        self.round += 1;
        self.started.push_back((self.round, tick));
        for ctx in self.waiting.drain(..) {
            self.in_round.push_back((ctx, commit_index, self.round));
        }
    }

    /// Records that `peer` answered an AppendEntries of `round` in the leader's term.
    pub(crate) fn ack(&mut self, peer: usize, round: u64) {
        let acked = self.acked.entry(peer).or_default();
        *acked = (*acked).max(round);
    }

    /// The reads confirmed by a majority of `members`' voters, in the order they were
    /// registered; `me` is the leader's own id (it always confirms its own rounds).
    pub(crate) fn take_confirmed(&mut self, me: usize, members: &Membership) -> Vec<ConfirmedRead> {
        let confirmed = members.committed_index(|p| {
            if p == me {
                self.round
            } else {
                self.acked.get(&p).copied().unwrap_or(0)
            }
        });
        while self.started.front().is_some_and(|(r, _)| *r <= confirmed) {
            if let Some((_, tick)) = self.started.pop_front() {
                self.confirmed_at = Some(tick);
            }
        }
        let mut reads = Vec::new();
        while self
            .in_round
            .front()
            .is_some_and(|(_, _, r)| *r <= confirmed)
        {
            if let Some((ctx, index, _)) = self.in_round.pop_front() {
                reads.push(ConfirmedRead { ctx, index });
            }
        }
        reads
    }

    /// The tick at which the latest round a majority confirmed was started: the leader was the
    /// leader at that tick, and followers that answered will refuse other candidates for an
    /// election timeout after it.
    pub(crate) fn confirmed_at(&self) -> Option<u64> {
        self.confirmed_at
    }

    /// Every read not yet confirmed (the leader is stepping down): they fail.
    pub(crate) fn drain(&mut self) -> Vec<u64> {
        let mut failed: Vec<u64> = self.waiting.drain(..).collect();
        failed.extend(self.in_round.drain(..).map(|(ctx, _, _)| ctx));
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_confirms_the_reads_before_it_once_a_majority_answered() {
        let three = Membership::with_voters(3);
        let mut reads = ReadOnly::default();
        reads.add(7);
        reads.add(8);
        reads.start_round(5, 100);
        reads.add(9); // arrives after the round went out: waits for the next
        assert!(reads.take_confirmed(0, &three).is_empty());
        reads.ack(1, 1);
        assert_eq!(
            reads.take_confirmed(0, &three),
            vec![
                ConfirmedRead { ctx: 7, index: 5 },
                ConfirmedRead { ctx: 8, index: 5 }
            ]
        );
        assert_eq!(reads.confirmed_at(), Some(100));
        assert!(reads.has_waiting());
        reads.start_round(6, 110);
        reads.ack(2, 1); // an answer to the old round confirms nothing new
        assert!(reads.take_confirmed(0, &three).is_empty());
        reads.ack(2, 2);
        assert_eq!(
            reads.take_confirmed(0, &three),
            vec![ConfirmedRead { ctx: 9, index: 6 }]
        );
    }

    #[test]
    fn stepping_down_fails_every_read_in_flight() {
        let three = Membership::with_voters(3);
        let mut reads = ReadOnly::default();
        reads.add(1);
        reads.start_round(3, 0);
        reads.add(2);
        assert_eq!(reads.drain(), vec![2, 1]);
        assert!(reads.take_confirmed(0, &three).is_empty());
    }
}
