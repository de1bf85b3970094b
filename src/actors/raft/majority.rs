//! Majority arithmetic: how many votes win an election, and which log index is stored on a
//! majority of servers (the candidate commit index).
//!
//! The leader still has to check that the entry at that index is from its own term before it
//! commits (Raft paper §5.4.2, Figure 8); that check lives in the core, not here.

/// Number of servers that form a majority of `peers`.
pub(crate) fn quorum(peers: usize) -> usize {
    peers / 2 + 1
}

/// The highest index that at least a majority of servers have replicated, given one match index
/// per server (the leader's own last index included). Sorting descending, that is the value at
/// position `quorum - 1`. Returns 0 for an empty slice.
pub(crate) fn committed_index(match_indexes: &[u64]) -> u64 {
    if match_indexes.is_empty() {
        return 0;
    }
    let mut sorted = match_indexes.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted[quorum(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_sizes() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(2), 2);
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(5), 3);
        assert_eq!(quorum(7), 4);
    }

    #[test]
    fn committed_index_is_the_majority_median() {
        assert_eq!(committed_index(&[]), 0);
        assert_eq!(committed_index(&[9]), 9);
        assert_eq!(committed_index(&[5, 3, 4]), 4);
        assert_eq!(committed_index(&[5, 0, 0]), 0);
        assert_eq!(committed_index(&[7, 7, 1, 1, 7]), 7);
        assert_eq!(committed_index(&[10, 2, 8, 6, 4]), 6);
        assert_eq!(committed_index(&[4, 4, 2, 2]), 2);
    }
}
