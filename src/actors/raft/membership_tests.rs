//! Membership change in the pure core, through its public API: a handful of cores exchange
//! messages through a synchronous pump (every save is durable at once), so each test reads
//! as a scenario — add a learner, promote it, remove the leader — with every step checked.

use std::collections::{BTreeMap, BTreeSet};

use super::core::{Message, RaftCore, Ready};
use super::RaftConfig;
use crate::messages::apply::ApplyMsg;
use crate::messages::raft::{Membership, MembershipChange, MembershipError, RequestVoteArgs};
use crate::messages::storage::SavedState;

/// Cores wired to each other; messages to or from a cut core are lost.
struct Pump {
    cores: BTreeMap<usize, RaftCore>,
    cut: BTreeSet<usize>,
    /// What each core handed its service, in order.
    applied: BTreeMap<usize, Vec<ApplyMsg>>,
    /// Membership change outcomes, by ctx.
    changes: BTreeMap<u64, Result<u64, MembershipError>>,
    next_ctx: u64,
}

impl Pump {
    /// Voters `0..voters` and joining peers `voters..total` (empty membership).
    fn new(voters: usize, total: usize) -> Pump {
        let cores = (0..total)
            .map(|id| {
                let initial = if id < voters {
                    Membership::with_voters(voters)
                } else {
                    Membership::default()
                };
                let core = RaftCore::new(id, initial, &RaftConfig::default(), id as u64 + 7)
                    .expect("valid");
                (id, core)
            })
            .collect();
        Pump {
            cores,
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            changes: BTreeMap::new(),
            next_ctx: 0,
        }
    }

    fn core(&mut self, id: usize) -> &mut RaftCore {
        self.cores.get_mut(&id).expect("a core of the pump")
    }

    /// Drains one core's ready (saving at once) and delivers its messages and their replies.
    fn drain(&mut self, id: usize) {
        let ready: Ready = {
            let core = self.core(id);
            let ready = core.take_ready();
            if core.take_unsaved().is_some() {
                core.saved();
            }
            ready
        };
        assert_eq!(ready.fault, None, "peer {id} broke an invariant");
        self.applied.entry(id).or_default().extend(ready.apply);
        self.changes.extend(ready.changes);
        for (to, message) in ready.messages {
            if self.cut.contains(&id) || self.cut.contains(&to) || !self.cores.contains_key(&to) {
                continue;
            }
            let target = self.core(to);
            match message {
                Message::RequestVote(args) => {
                    let reply = target.handle_request_vote(id, args);
                    self.core(id).handle_request_vote_reply(to, reply);
                }
                Message::AppendEntries(args) => {
                    let reply = target.handle_append_entries(id, args);
                    self.core(id).handle_append_entries_reply(to, reply);
                }
                Message::InstallSnapshot(args) => {
                    let reply = target.handle_install_snapshot(id, args);
                    self.core(id).handle_install_snapshot_reply(to, reply);
                }
                Message::TimeoutNow(args) => {
                    let reply = target.handle_timeout_now(id, args);
                    self.core(id).handle_timeout_now_reply(to, reply);
                }
            }
        }
    }

    /// One tick of every core, then everything it produced, until quiet.
    fn tick(&mut self) {
        let ids: Vec<usize> = self.cores.keys().copied().collect();
        for &id in &ids {
            self.core(id).tick();
        }
        for _ in 0..20 {
            for &id in &ids {
                self.drain(id);
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        self.cores
            .iter()
            .find(|(id, core)| core.is_leader() && !self.cut.contains(id))
            .map(|(id, _)| *id)
    }

    /// Ticks until a leader that is not cut off exists.
    fn elect(&mut self) -> usize {
        for _ in 0..2000 {
            if let Some(leader) = self.leader() {
                return leader;
            }
            self.tick();
        }
        panic!("no leader after 2000 ticks");
    }

    /// Has the leader commit a command, and ticks until every member that is not cut off
    /// has applied it.
    fn commit(&mut self, command: &[u8]) -> u64 {
        let leader = self.elect();
        let proposed = self.core(leader).propose(command.to_vec()).expect("leader");
        for _ in 0..200 {
            self.tick();
            let members: Vec<usize> = self.cores[&leader].membership().ids().collect();
            if members
                .iter()
                .filter(|id| !self.cut.contains(id))
                .all(|id| self.cores[id].last_applied() >= proposed.index)
            {
                return proposed.index;
            }
        }
        panic!("{command:?} not applied everywhere");
    }

    /// Asks the leader for `change` and ticks until its outcome.
    fn change(&mut self, change: MembershipChange) -> Result<u64, MembershipError> {
        let leader = self.elect();
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        self.core(leader).change_membership(ctx, change)?;
        for _ in 0..500 {
            self.tick();
            if let Some(outcome) = self.changes.remove(&ctx) {
                return outcome;
            }
        }
        panic!("no outcome for change {ctx}");
    }

    fn voters(&self, id: usize) -> Vec<usize> {
        self.cores[&id]
            .membership()
            .voters
            .keys()
            .copied()
            .collect()
    }

    fn learners(&self, id: usize) -> Vec<usize> {
        self.cores[&id]
            .membership()
            .learners
            .keys()
            .copied()
            .collect()
    }
}

fn add_learner(id: usize) -> MembershipChange {
    MembershipChange::AddLearner {
        id,
        contact: format!("node-{id}"),
    }
}

#[test]
fn a_learner_catches_up_then_is_promoted_and_the_leader_removed() {
    let mut pump = Pump::new(3, 4);
    pump.commit(b"before");
    let added = pump.change(add_learner(3)).expect("added");
    // The learner gets the log, the change included, and applies it.
    pump.commit(b"after");
    for id in 0..4 {
        assert_eq!(
            (pump.voters(id), pump.learners(id)),
            (vec![0, 1, 2], vec![3])
        );
    }
    let leader = pump.elect();
    let last = pump.core(leader).last_index();
    assert_eq!(pump.core(3).last_index(), last);
    assert!(pump.applied[&3].iter().any(|m| matches!(
        m, ApplyMsg::Membership { index, .. } if *index == added
    )));

    pump.change(MembershipChange::Promote(3)).expect("promoted");
    assert_eq!(pump.voters(leader), vec![0, 1, 2, 3]);

    // The leader removes itself: it steps down once the change commits; the others go on.
    pump.change(MembershipChange::Remove(leader))
        .expect("removed");
    pump.tick();
    assert!(!pump.core(leader).is_leader());
    let next = pump.elect();
    assert_ne!(next, leader);
    let voters = pump.voters(next);
    assert_eq!(voters.len(), 3);
    assert!(!voters.contains(&leader));
    pump.commit(b"with the new members");
}

#[test]
fn a_learner_never_campaigns_and_its_vote_counts_for_nothing() {
    let mut pump = Pump::new(3, 4);
    pump.commit(b"x");
    pump.change(add_learner(3)).expect("added");
    let leader = pump.elect();
    // Cut every voter: the learner, alone, waits forever rather than campaign.
    for id in 0..3 {
        pump.cut.insert(id);
    }
    let term = pump.core(3).term();
    for _ in 0..500 {
        pump.tick();
    }
    assert_eq!(pump.core(3).term(), term, "the learner campaigned");
    // A voter does not count a learner's grant, and a learner grants nothing.
    pump.cut.clear();
    let mut asks = RequestVoteArgs {
        term: term + 1,
        candidate_id: leader,
        last_log_index: u64::MAX,
        last_log_term: u64::MAX,
        pre_vote: false,
        leadership_transfer: true,
    };
    assert!(
        !pump
            .core(3)
            .handle_request_vote(leader, asks.clone())
            .vote_granted
    );
    // Nor do voters vote for it.
    asks.candidate_id = 3;
    let voter = (0..3).find(|id| *id != leader).expect("a follower");
    assert!(!pump.core(voter).handle_request_vote(3, asks).vote_granted);
}

#[test]
fn a_new_leader_commits_an_entry_of_its_term_before_a_change() {
    let mut pump = Pump::new(3, 4);
    let leader = pump.elect();
    // Nothing of the leader's term is committed yet: a restatement of the members goes
    // first, then the change; a second change meanwhile is refused.
    let before = pump.core(leader).last_index();
    pump.core(leader)
        .change_membership(100, add_learner(3))
        .expect("taken");
    assert_eq!(
        pump.core(leader)
            .change_membership(101, MembershipChange::Remove(1)),
        Err(MembershipError::Busy)
    );
    for _ in 0..50 {
        pump.tick();
    }
    assert_eq!(pump.changes.remove(&100), Some(Ok(before + 2)));
    let entries: Vec<Membership> = pump.applied[&leader]
        .iter()
        .filter_map(|m| match m {
            ApplyMsg::Membership { membership, .. } => Some(membership.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0], Membership::with_voters(3), "the restatement");
    assert!(entries[1].learners.contains_key(&3));
}

#[test]
fn changes_that_cannot_be_made_are_refused_with_the_reason() {
    let mut pump = Pump::new(3, 3);
    pump.commit(b"x");
    let leader = pump.elect();
    let follower = (0..3).find(|id| *id != leader).expect("a follower");
    assert!(matches!(
        pump.core(follower).change_membership(0, add_learner(5)),
        Err(MembershipError::NotLeader(_))
    ));
    assert!(matches!(
        pump.change(add_learner(1)),
        Err(MembershipError::Invalid(_))
    ));
    assert!(matches!(
        pump.change(MembershipChange::Promote(7)),
        Err(MembershipError::Invalid(_))
    ));
    // A learner that is not there cannot catch up: its promotion is refused.
    pump.change(add_learner(9)).expect("a learner nobody runs");
    for i in 0..1100u32 {
        let leader = pump.elect();
        pump.core(leader)
            .propose(i.to_be_bytes().to_vec())
            .expect("leader");
    }
    pump.tick();
    assert!(matches!(
        pump.change(MembershipChange::Promote(9)),
        Err(MembershipError::Lagging { matched: 0, .. })
    ));
}

/// The membership of peer `id` restarted from `saved` (as a first member of three).
fn restored_membership(id: usize, saved: SavedState) -> Membership {
    let back = RaftCore::restore(
        id,
        Membership::with_voters(3),
        &RaftConfig::default(),
        1,
        saved,
        Default::default(),
    )
    .expect("restores");
    back.membership().clone()
}

#[test]
fn the_membership_survives_a_restart_and_a_snapshot_and_travels_in_one() {
    let mut pump = Pump::new(3, 5);
    pump.commit(b"x");
    pump.change(add_learner(3)).expect("added");
    let leader = pump.elect();
    let expected = pump.core(leader).membership().clone();
    // Restart a follower from its saved state: the log says who is in.
    let follower = (0..3).find(|id| *id != leader).expect("a follower");
    let saved = pump.core(follower).saved_state();
    assert_eq!(restored_membership(follower, saved), expected);
    // Compact past the change on every member: the snapshot keeps the membership.
    let applied = pump.commit(b"y");
    for id in 0..4 {
        pump.core(id).snapshot(applied, vec![1, 2, 3]);
    }
    pump.tick();
    let saved = pump.core(follower).saved_state();
    assert_eq!(saved.entries.len(), 0);
    assert_eq!(saved.snapshot_membership.as_ref(), Some(&expected));
    assert_eq!(restored_membership(follower, saved), expected);
    // A learner added now gets the snapshot, and the members with it.
    pump.change(add_learner(4)).expect("added");
    pump.commit(b"z");
    assert!(pump.applied[&4]
        .iter()
        .any(|m| matches!(m, ApplyMsg::Snapshot { index, .. } if *index == applied)));
    assert_eq!(pump.learners(4), vec![3, 4]);
}

/// The scenario that breaks single-server changes without the rule that a leader first
/// commits an entry of its own term (Ongaro, raft-dev, 2015). Leader `l1` of four voters
/// promotes learner 4, which only 4 receives; cut off, `l1` loses leadership to `l2`, which
/// removes `l1` while `c` is cut off. Without the rule, the removal commits on `l2` and one
/// other voter (a majority of the three left), and then `l1`, 4 and `c` — a majority of the
/// five in `l1`'s membership — elect `l1`, whose log lacks the committed removal. With the
/// rule, `l2` must first commit an entry of its term, which needs `c`: nothing commits, and
/// no committed entry is ever overwritten (the pump fails on any invariant a core reports).
#[test]
fn a_change_waits_for_an_entry_of_the_leaders_term() {
    let mut pump = Pump::new(4, 5);
    pump.commit(b"x");
    pump.change(add_learner(4)).expect("added");
    pump.commit(b"y");
    let l1 = pump.elect();
    let others: Vec<usize> = (0..4).filter(|id| *id != l1).collect();
    // Only learner 4 hears of its promotion.
    pump.cut.extend(others.iter().copied());
    pump.core(l1)
        .change_membership(7, MembershipChange::Promote(4))
        .expect("taken");
    for _ in 0..5 {
        pump.tick();
    }
    assert!(pump.core(4).membership().is_voter(4));
    assert!(!pump.core(others[0]).membership().is_voter(4));
    // l1 and 4 are cut off; the other three elect l2, which starts removing l1 while c is cut.
    pump.cut = BTreeSet::from([l1, 4]);
    let l2 = pump.elect();
    let c = *others.iter().find(|id| **id != l2).expect("a follower");
    pump.cut.insert(c);
    pump.core(l2)
        .change_membership(8, MembershipChange::Remove(l1))
        .expect("taken");
    for _ in 0..200 {
        pump.tick();
    }
    assert!(
        !matches!(pump.changes.get(&8), Some(Ok(_))),
        "the removal committed without c"
    );
    // l2's side is cut off; l1, 4 and c form a majority of l1's five voters.
    pump.cut = others.iter().copied().filter(|id| *id != c).collect();
    let leader = pump.elect();
    assert_eq!(leader, l1);
    // Everyone back: the log converges on l1's, with nothing committed lost.
    pump.cut.clear();
    pump.commit(b"z");
    // Both callers heard "not leader" (each leader stepped down when it heard no majority);
    // l1's change committed later, as the error says it may.
    for ctx in [7, 8] {
        assert!(matches!(
            pump.changes.remove(&ctx),
            Some(Err(MembershipError::NotLeader(_)))
        ));
    }
    for id in 0..5 {
        assert_eq!(pump.voters(id), vec![0, 1, 2, 3, 4]);
    }
}
