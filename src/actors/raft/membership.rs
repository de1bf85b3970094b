//! Membership arithmetic (Raft thesis chapter 4): who votes, what a majority is, and what one
//! single-server change makes of a membership.
//!
//! The core keeps the latest [`Membership`] in its log, committed or not; this module only
//! answers questions about one membership. Changing one server at a time means any majority
//! of the old voters overlaps any majority of the new ones, so the cluster never has two
//! majorities that could each elect a leader.

use std::collections::BTreeSet;

use super::majority;
use crate::messages::raft::{Membership, MembershipChange};

impl Membership {
    /// Voters `0..n`, with empty contacts: a simulated cluster's first membership.
    pub fn with_voters(n: usize) -> Self {
        Membership {
            voters: (0..n).map(|id| (id, String::new())).collect(),
            learners: Default::default(),
        }
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: usize) -> bool {
        self.voters.contains_key(&id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: usize) -> bool {
        self.voters.contains_key(&id) || self.learners.contains_key(&id)
    }

    /// Every member's id (voters and learners), ascending.
    pub fn ids(&self) -> impl Iterator<Item = usize> + '_ {
        let all: BTreeSet<usize> = self
            .voters
            .keys()
            .chain(self.learners.keys())
            .copied()
            .collect();
        all.into_iter()
    }

    /// The membership after `change`, or why the change does not apply to this one.
    pub fn apply(&self, change: &MembershipChange) -> Result<Membership, String> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner { id, contact } => {
                if self.contains(*id) {
                    return Err(format!("{id} is already a member"));
                }
                next.learners.insert(*id, contact.clone());
            }
            MembershipChange::Promote(id) => {
                let Some(contact) = next.learners.remove(id) else {
                    return Err(if self.is_voter(*id) {
                        format!("{id} is already a voter")
                    } else {
                        format!("{id} is not a learner")
                    });
                };
                next.voters.insert(*id, contact);
            }
            MembershipChange::Remove(id) => {
                if next.learners.remove(id).is_none() {
                    if next.voters.remove(id).is_none() {
                        return Err(format!("{id} is not a member"));
                    }
                    if next.voters.is_empty() {
                        return Err(format!("{id} is the last voter"));
                    }
                }
            }
        }
        Ok(next)
    }

    /// Whether the voters in `granted` form a majority of the voters.
    pub(crate) fn has_majority(&self, granted: &BTreeSet<usize>) -> bool {
        let yes = self.voters.keys().filter(|id| granted.contains(id)).count();
        !self.voters.is_empty() && yes >= majority::quorum(self.voters.len())
    }

    /// The highest index at least a majority of the voters hold, given each one's.
    pub(crate) fn committed_index(&self, matched: impl Fn(usize) -> u64) -> u64 {
        let matches: Vec<u64> = self.voters.keys().map(|&id| matched(id)).collect();
        majority::committed_index(&matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learner(id: usize) -> MembershipChange {
        MembershipChange::AddLearner {
            id,
            contact: format!("node-{id}"),
        }
    }

    #[test]
    fn a_learner_is_added_promoted_and_removed() {
        let three = Membership::with_voters(3);
        let four = three.apply(&learner(3)).expect("new id");
        assert!(four.contains(3) && !four.is_voter(3));
        assert_eq!(four.ids().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        let promoted = four.apply(&MembershipChange::Promote(3)).expect("learner");
        assert!(promoted.is_voter(3));
        assert_eq!(promoted.voters[&3], "node-3");
        let back = promoted
            .apply(&MembershipChange::Remove(0))
            .expect("a voter");
        assert_eq!(
            back.voters.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn changes_that_do_not_apply_say_why() {
        let one = Membership::with_voters(1);
        assert_eq!(one.apply(&learner(0)), Err("0 is already a member".into()));
        assert_eq!(
            one.apply(&MembershipChange::Promote(0)),
            Err("0 is already a voter".into())
        );
        assert_eq!(
            one.apply(&MembershipChange::Promote(5)),
            Err("5 is not a learner".into())
        );
        assert_eq!(
            one.apply(&MembershipChange::Remove(5)),
            Err("5 is not a member".into())
        );
        assert_eq!(
            one.apply(&MembershipChange::Remove(0)),
            Err("0 is the last voter".into())
        );
    }

    #[test]
    fn only_voters_count_towards_a_majority() {
        let m = Membership::with_voters(3).apply(&learner(3)).expect("new");
        assert!(!m.has_majority(&[0, 3].into_iter().collect()));
        assert!(m.has_majority(&[0, 2].into_iter().collect()));
        assert_eq!(m.committed_index(|id| [5, 1, 1, 9][id]), 1);
        assert_eq!(m.committed_index(|id| [5, 5, 1, 0][id]), 5);
        assert!(!Membership::default().has_majority(&BTreeSet::new()));
    }
}
