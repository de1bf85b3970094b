//! A leader's view of one follower: Figure 2's `match_index` and `next_index`, plus the flow
//! control state that decides when to send.
//!
//! - **Replicate**: entries are streamed. Every new entry is sent at once and `next_index`
//!   advances optimistically past what was sent, so a burst of N proposals sends each entry
//!   about once instead of resending the unacknowledged tail each time. At most
//!   [`InFlightCap`] messages and bytes are unanswered: past that, new entries wait for an
//!   answer (each success frees the messages it covers). A new leader starts
//!   every follower here (most followers are up to date). Heartbeats check the optimistic point
//!   (`prev_log_index = next_index - 1`): if a message was lost, the follower rejects it and the
//!   leader falls back to Probe, so a drop is repaired one heartbeat and one round trip later.
//! - **Probe**: after a rejection the leader does not know where the logs agree. It sends one
//!   AppendEntries and waits (`paused`) for the answer, backing up a whole term per rejected
//!   round trip, and streams again after the first success. Meanwhile each heartbeat asks the
//!   probe's question again, without the entries (the probe may have been lost).
//! - **Snapshot**: the follower needs entries the leader has compacted; the snapshot goes out
//!   one chunk per round trip, and nothing else is sent until its last chunk is answered (a
//!   heartbeat resends the chunk in flight, in case it was lost).

use std::collections::VecDeque;

use super::config::InFlightCap;

/// Flow-control state of one follower, as seen by the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// Finding the point where the logs agree: one message per round trip.
    Probe,
    /// Streaming new entries as they are proposed.
    Replicate,
    /// Sending the snapshot of the given `last_included_index`, chunk by chunk.
    Snapshot {
        /// `last_included_index` of the snapshot being sent.
        pending: u64,
        /// Where the chunk in flight starts: the bytes before it are acknowledged.
        offset: u64,
    },
}

/// Per-follower replication progress kept by the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Highest index known to be replicated on the follower (Figure 2). Never decreases within
    /// a term.
    pub match_index: u64,
    /// Index of the next entry to send (Figure 2). Always `> match_index`.
    pub next_index: u64,
    /// Flow-control state.
    pub state: ProgressState,
    /// In Probe (and Snapshot): a message is in flight, wait for its answer.
    pub paused: bool,
    /// In Replicate: the unanswered AppendEntries with entries, as (last index sent, command
    /// bytes), oldest first.
    in_flight: VecDeque<(u64, usize)>,
    /// The bytes of `in_flight`.
    in_flight_bytes: usize,
    /// When (in ticks) rejections saying the follower's log ends below `match_index` began,
    /// with no success since; see [`Progress::lost_data`].
    below_match_since: Option<u64>,
    /// The loss was reported (once a term).
    pub lost_reported: bool,
}

impl Progress {
    /// Progress for a follower at the start of a term (Figure 2: `match_index = 0`,
    /// `next_index = last log index + 1`), optimistically in Replicate.
    pub(crate) fn new(last_index: u64) -> Self {
        Progress {
            match_index: 0,
            next_index: last_index + 1,
            state: ProgressState::Replicate,
            paused: false,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            below_match_since: None,
            lost_reported: false,
        }
    }

    /// Notes, at tick `now`, a rejection saying the follower's log ends below `match_index`,
    /// and says whether such rejections have now gone on for `patience` ticks with no success.
    /// One alone is a stale reply that overtook a success; when they keep coming, the
    /// follower has lost entries it had saved and acknowledged (its data directory was wiped
    /// and it restarted under its old id, or its disk lost writes), which Raft cannot repair.
    pub(crate) fn lost_data(&mut self, now: u64, patience: u64) -> bool {
        let since = *self.below_match_since.get_or_insert(now);
        now.saturating_sub(since) >= patience
    }

    /// Records an AppendEntries sent while streaming, with entries up to `last` holding
    /// `bytes` of commands.
    pub(crate) fn sent(&mut self, last: u64, bytes: usize) {
        self.in_flight.push_back((last, bytes));
        self.in_flight_bytes += bytes;
    }

    /// Whether streaming has reached the cap: new entries wait for an answer.
    pub(crate) fn is_full(&self, cap: InFlightCap) -> bool {
        !self.in_flight.is_empty()
            && (self.in_flight.len() >= cap.messages || self.in_flight_bytes >= cap.bytes)
    }

    /// Forgets every message in flight (the follower's state is being found out anew).
    fn clear_in_flight(&mut self) {
        self.in_flight.clear();
        self.in_flight_bytes = 0;
    }

    /// Records a successful reply saying the follower matches up to `index`. Returns true if
    /// this moved `match_index` forward; a stale or duplicate reply returns false and changes
    /// nothing (so `match_index` never goes back).
    pub(crate) fn on_success(&mut self, index: u64) -> bool {
        self.paused = false;
        self.below_match_since = None;
        while let Some(&(last, bytes)) = self.in_flight.front() {
            if last > index {
                break;
            }
            self.in_flight.pop_front();
            self.in_flight_bytes -= bytes;
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index + 1);
        true
    }

    /// Switches to Probe from `next_index` (clamped above `match_index`), ready to send.
    pub(crate) fn become_probe(&mut self, next_index: u64) {
        self.state = ProgressState::Probe;
        self.next_index = next_index.max(self.match_index + 1);
        self.paused = false;
        self.clear_in_flight();
    }

    /// Switches to Replicate, streaming from just after `match_index`.
    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.paused = false;
        self.clear_in_flight();
    }

    /// Switches to Snapshot after sending the chunk at `offset` of the snapshot ending at
    /// `pending`.
    pub(crate) fn become_snapshot(&mut self, pending: u64, offset: u64) {
        self.state = ProgressState::Snapshot { pending, offset };
        self.paused = true;
        self.clear_in_flight();
    }

    /// Whether the leader may send this follower another AppendEntries now, outside a
    /// heartbeat: in Replicate until `cap` is reached, once per answer in Probe, never while a
    /// snapshot is in flight.
    pub(crate) fn can_send(&self, cap: InFlightCap) -> bool {
        match self.state {
            ProgressState::Replicate => !self.is_full(cap),
            ProgressState::Probe => !self.paused,
            ProgressState::Snapshot { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: InFlightCap = InFlightCap {
        messages: 3,
        bytes: 100,
    };

    #[test]
    fn streaming_stops_at_the_cap_and_each_answer_frees_what_it_covers() {
        let mut pr = Progress::new(0);
        for last in 1..=3 {
            assert!(pr.can_send(CAP));
            pr.sent(last, 10);
        }
        assert!(!pr.can_send(CAP), "three messages in flight");
        pr.on_success(2);
        assert!(pr.can_send(CAP), "two answered by one success");
        pr.sent(4, 10);
        pr.sent(5, 10);
        assert!(!pr.can_send(CAP));
        // A stale answer frees nothing new and moves nothing back.
        pr.on_success(1);
        assert!(!pr.can_send(CAP));
        pr.on_success(5);
        assert!(pr.can_send(CAP));
    }

    #[test]
    fn the_byte_cap_holds_but_one_message_always_goes() {
        let mut pr = Progress::new(0);
        assert!(pr.can_send(CAP));
        pr.sent(1, 500);
        assert!(!pr.can_send(CAP), "over the byte cap");
        pr.on_success(1);
        pr.sent(2, 60);
        assert!(pr.can_send(CAP));
        pr.sent(3, 60);
        assert!(!pr.can_send(CAP));
        // Probing again forgets what was in flight.
        pr.become_probe(3);
        pr.become_replicate();
        assert!(pr.can_send(CAP));
    }

    #[test]
    fn starts_streaming_from_the_leaders_end() {
        let pr = Progress::new(7);
        assert_eq!((pr.match_index, pr.next_index), (0, 8));
        assert_eq!(pr.state, ProgressState::Replicate);
        assert!(pr.can_send(CAP));
    }

    #[test]
    fn success_never_moves_match_back() {
        let mut pr = Progress::new(10);
        assert!(pr.on_success(10));
        assert_eq!((pr.match_index, pr.next_index), (10, 11));
        assert!(!pr.on_success(4));
        assert_eq!((pr.match_index, pr.next_index), (10, 11));
    }

    #[test]
    fn probe_sends_once_per_round_trip() {
        let mut pr = Progress::new(3);
        pr.become_probe(2);
        pr.paused = true;
        assert!(!pr.can_send(CAP));
        pr.on_success(3);
        assert!(pr.can_send(CAP));
    }

    #[test]
    fn replicate_back_to_streaming_after_probe_success() {
        let mut pr = Progress::new(9);
        pr.become_probe(4);
        pr.on_success(6);
        pr.become_replicate();
        assert_eq!(
            (pr.state, pr.match_index, pr.next_index),
            (ProgressState::Replicate, 6, 7)
        );
    }

    #[test]
    fn probe_never_goes_below_match() {
        let mut pr = Progress::new(5);
        pr.on_success(4);
        pr.become_probe(2);
        assert_eq!(pr.next_index, 5);
    }

    #[test]
    fn snapshot_blocks_sending() {
        let mut pr = Progress::new(5);
        pr.become_snapshot(20, 0);
        assert!(!pr.can_send(CAP));
    }
}
