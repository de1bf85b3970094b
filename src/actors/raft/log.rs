//! The replicated log with a compacted prefix.
//!
//! Indexes are 1-based as in the paper. Everything up to and including `snapshot_index` lives in
//! the service's snapshot; only the term of that last compacted entry (`snapshot_term`) is kept,
//! because AppendEntries' consistency check needs it. `entries[0]` therefore holds index
//! `snapshot_index + 1`. A fresh log has `snapshot_index = snapshot_term = 0`, which doubles as
//! the paper's sentinel "entry 0".
//!
//! The log also remembers the lowest index written since it was last saved, so the peer saves
//! only what changed.

use crate::messages::raft::LogEntry;

/// A Raft log whose prefix up to `snapshot_index` has been compacted into a snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RaftLog {
    /// Index of the last entry covered by the snapshot (0 when there is none).
    snapshot_index: u64,
    /// Term of the entry at `snapshot_index` (0 when there is none).
    snapshot_term: u64,
    /// Entries `snapshot_index + 1 ..= last_index()`.
    entries: Vec<LogEntry>,
    /// Lowest index appended or truncated since [`RaftLog::mark_saved`], if any.
    unsaved_from: Option<u64>,
}

impl RaftLog {
    /// An empty log with no snapshot.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The log as saved: a snapshot position and the entries after it.
    pub(crate) fn from_saved(
        snapshot_index: u64,
        snapshot_term: u64,
        entries: Vec<LogEntry>,
    ) -> Self {
        RaftLog {
            snapshot_index,
            snapshot_term,
            entries,
            unsaved_from: None,
        }
    }

    /// The lowest index written since the last save, if any.
    pub(crate) fn unsaved_from(&self) -> Option<u64> {
        self.unsaved_from
    }

    /// Everything is saved now.
    pub(crate) fn mark_saved(&mut self) {
        self.unsaved_from = None;
    }

    fn touch(&mut self, index: u64) {
        self.unsaved_from = Some(self.unsaved_from.map_or(index, |i| i.min(index)));
    }

    /// Index of the last compacted entry (0 if nothing was compacted).
    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// Term of the last compacted entry (0 if nothing was compacted).
    pub(crate) fn snapshot_term(&self) -> u64 {
        self.snapshot_term
    }

    /// Index of the last entry, counting the compacted prefix.
    pub(crate) fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    /// Term of the last entry (the snapshot's term if the suffix is empty).
    pub(crate) fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// Term of the entry at `index`, if it is known: `snapshot_index ..= last_index()`.
    /// Entries inside the snapshot (other than its last one) have no known term.
    pub(crate) fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            Some(self.snapshot_term)
        } else {
            self.entry(index).map(|e| e.term)
        }
    }

    /// The entry at `index`, if it is in the uncompacted suffix.
    pub(crate) fn entry(&self, index: u64) -> Option<&LogEntry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// The entries `lo .. hi` (half-open), clamped to the uncompacted suffix.
    pub(crate) fn slice(&self, lo: u64, hi: u64) -> &[LogEntry] {
        let lo = lo.max(self.snapshot_index + 1);
        let hi = hi.min(self.last_index() + 1);
        if lo >= hi {
            return &[];
        }
        let base = self.snapshot_index + 1;
        &self.entries[(lo - base) as usize..(hi - base) as usize]
    }

    /// Appends one entry at `last_index() + 1` and returns its index.
    pub(crate) fn append(&mut self, entry: LogEntry) -> u64 {
        self.entries.push(entry);
        let index = self.last_index();
        self.touch(index);
        index
    }

    /// Removes every entry at `index` and after. Compacted entries cannot be removed: an
    /// `index` at or below `snapshot_index` only clears the suffix.
    pub(crate) fn truncate(&mut self, index: u64) {
        let keep = index.saturating_sub(self.snapshot_index + 1);
        self.entries.truncate(keep as usize);
        self.touch(index.max(self.snapshot_index + 1));
    }

    /// Compacts the log up to and including `index`, whose term is `term`. If the log holds that
    /// entry with that term, the suffix after it is kept; otherwise the whole log is discarded
    /// and the log restarts right after the snapshot. Compacting at or below the current
    /// snapshot does nothing.
    pub(crate) fn compact(&mut self, index: u64, term: u64) {
        if index <= self.snapshot_index {
            return;
        }
        if self.term_at(index) == Some(term) {
            let drop = (index - self.snapshot_index) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Index of the first entry of the run of `term` that ends at `index`, scanning back no
    /// further than the first uncompacted entry. Used by a follower to report a conflict.
    pub(crate) fn first_index_of_term_at(&self, index: u64, term: u64) -> u64 {
        let mut first = index;
        while first > self.snapshot_index + 1 && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index whose entry has `term`, if the known part of the log (snapshot's last
    /// entry included) holds one. Used by a leader to skip a follower's conflicting term.
    pub(crate) fn last_index_of_term(&self, term: u64) -> Option<u64> {
        let mut index = self.last_index();
        loop {
            let t = self.term_at(index)?;
            if t == term {
                return Some(index);
            }
            if t < term || index == self.snapshot_index {
                return None;
            }
            index -= 1;
        }
    }

    /// Checks the invariants a decoded log must satisfy: terms never decrease along the log and
    /// none exceeds `current_term`. Returns a description of the first violation.
    pub(crate) fn validate(&self, current_term: u64) -> Result<(), String> {
        let mut prev = self.snapshot_term;
        if prev > current_term {
            return Err(format!(
                "snapshot term {} is above the current term {}",
                prev, current_term
            ));
        }
        if self.snapshot_index == 0 && self.snapshot_term != 0 {
            return Err(format!(
                "snapshot term {} without a snapshot index",
                self.snapshot_term
            ));
        }
        for (i, e) in self.entries.iter().enumerate() {
            let index = self.snapshot_index + 1 + i as u64;
            if e.term < prev || e.term > current_term || e.term == 0 {
                return Err(format!(
                    "entry {} has term {} (previous {}, current term {})",
                    index, e.term, prev, current_term
                ));
            }
            prev = e.term;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let mut log = RaftLog::new();
        for (i, &term) in terms.iter().enumerate() {
            log.append(LogEntry::command(term, vec![i as u8 + 1]));
        }
        log
    }

    #[test]
    fn empty_log_has_sentinel_entry_zero() {
        let log = RaftLog::new();
        assert_eq!(log.last_index(), 0);
        assert_eq!(log.last_term(), 0);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(1), None);
        assert!(log.slice(1, 5).is_empty());
    }

    #[test]
    fn indexes_are_one_based() {
        let log = log_with_terms(&[1, 1, 2]);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.last_term(), 2);
        assert_eq!(log.entry(1).map(|e| e.command.clone()), Some(vec![1]));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(4), None);
        assert_eq!(log.slice(2, 4).len(), 2);
        assert_eq!(log.slice(2, 100).len(), 2);
    }

    #[test]
    fn truncate_removes_suffix_only() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        log.truncate(3);
        assert_eq!(log.last_index(), 2);
        log.truncate(10);
        assert_eq!(log.last_index(), 2);
    }

    #[test]
    fn compact_keeps_suffix_and_offsets_indexes() {
        let mut log = log_with_terms(&[1, 1, 2, 2, 3]);
        log.compact(3, 2);
        assert_eq!(log.snapshot_index(), 3);
        assert_eq!(log.snapshot_term(), 2);
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(2), None);
        assert_eq!(log.entry(4).map(|e| e.command.clone()), Some(vec![4]));
        assert_eq!(log.slice(1, 6).len(), 2);
        // Truncating into the snapshot only clears the suffix.
        log.truncate(2);
        assert_eq!(log.last_index(), 3);
        // Compacting backwards is a no-op.
        log.compact(2, 1);
        assert_eq!(log.snapshot_index(), 3);
    }

    #[test]
    fn compact_past_a_mismatch_discards_everything() {
        let mut log = log_with_terms(&[1, 1, 2]);
        log.compact(2, 5);
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.last_term(), 5);
        let mut log = log_with_terms(&[1]);
        log.compact(10, 4);
        assert_eq!(
            (log.snapshot_index(), log.last_index(), log.last_term()),
            (10, 10, 4)
        );
        assert_eq!(log.append(LogEntry::command(4, vec![])), 11);
    }

    #[test]
    fn term_scans_for_conflict_backup() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.first_index_of_term_at(5, 2), 3);
        assert_eq!(log.first_index_of_term_at(2, 1), 1);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
        assert_eq!(log.last_index_of_term(4), Some(6));
        assert_eq!(log.last_index_of_term(9), None);
        let mut compacted = log.clone();
        compacted.compact(4, 2);
        assert_eq!(compacted.first_index_of_term_at(5, 2), 5);
        assert_eq!(compacted.last_index_of_term(2), Some(5));
        assert_eq!(compacted.last_index_of_term(1), None);
    }

    #[test]
    fn validate_rejects_decreasing_or_future_terms() {
        assert!(log_with_terms(&[1, 2, 2]).validate(2).is_ok());
        assert!(log_with_terms(&[1, 2, 1]).validate(2).is_err());
        assert!(log_with_terms(&[1, 3]).validate(2).is_err());
        assert!(log_with_terms(&[0]).validate(2).is_err());
    }
}
