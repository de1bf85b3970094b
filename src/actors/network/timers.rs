//! A deadline queue: one ordered map of pending events instead of one timer per message.
//!
//! The network actor holds a single armed timer for the earliest deadline; when it fires, every
//! due event is popped in (deadline, insertion) order, so events due at the same instant keep
//! the order in which they were scheduled: a requirement for replayable runs.

use std::collections::BTreeMap;

use tokio::time::Instant;

/// Events ordered by deadline, ties broken by insertion order.
pub(crate) struct DeadlineQueue<E> {
    events: BTreeMap<(Instant, u64), E>,
    next_seq: u64,
}

impl<E> DeadlineQueue<E> {
    pub(crate) fn new() -> Self {
        Self {
            events: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Schedules `event` at `deadline`.
    pub(crate) fn push(&mut self, deadline: Instant, event: E) {
        self.events.insert((deadline, self.next_seq), event);
        self.next_seq += 1;
    }

    /// The earliest deadline, if any event is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.events.keys().next().map(|(deadline, _)| *deadline)
    }

    /// Removes and returns the earliest event if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<E> {
        let first = self.events.first_entry()?;
        if first.key().0 <= now {
            Some(first.remove())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_then_insertion_order() {
        let t0 = Instant::now();
        let mut q = DeadlineQueue::new();
        q.push(t0 + Duration::from_millis(5), "late");
        q.push(t0, "first");
        q.push(t0, "second");
        assert_eq!(q.next_deadline(), Some(t0));
        assert_eq!(q.pop_due(t0), Some("first"));
        assert_eq!(q.pop_due(t0), Some("second"));
        assert_eq!(q.pop_due(t0), None);
        assert_eq!(q.pop_due(t0 + Duration::from_millis(5)), Some("late"));
    }
}
