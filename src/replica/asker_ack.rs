//! A follower's request for a read index counts as that follower's acknowledgement of the
//! leader, so in a three-voter cluster the leader can answer it without a heartbeat round.
//!
//! A read index is safe to hand out when, at some moment after the read began, a quorum
//! of voters had not moved past the leader's leadership: then no later leader can have
//! committed anything before the read began (it would have needed a vote from that
//! quorum), and every write acknowledged before the read is at or below the leader's
//! commit index. openraft establishes this with a round of heartbeats to every voter.
//!
//! A leadership is a leader id, a term *and* a node: openraft 0.9 (without its
//! `single-term-leader` feature) orders leader ids by term, then node id, so a candidate
//! with a higher id can win the term a lower one led. Every comparison below is of the
//! whole leader id; one of terms alone would take such a successor's voter for the old
//! leader's (`a_vote_for_another_leader_of_the_same_term_is_no_acknowledgement`).
//!
//! The follower that asks already gives the same evidence. It sends, with its request,
//! the latest vote it handed to storage, read after the reads it serves arrived;
//! openraft grants or follows a vote only once storage has it, so the follower had
//! granted no vote of a later term by then. The leader, inside openraft's core (so that
//! nothing changes while it looks), checks that it still leads in that same term with a
//! committed vote, that the follower's vote names the same leader id, and that the
//! two of them are a quorum of every configuration in effect (openraft's own rule for
//! its round). It also requires an entry of its own term to be committed, so that the
//! commit index covers everything earlier leaders committed (openraft waits for its
//! first entry of the term instead). Any check that fails leaves the request to
//! openraft's round; with more than three voters the two are never a quorum, and every
//! request takes the round.
//!
//! What it saves: the round's two heartbeats and their handling by each follower's Raft
//! core, behind that follower's pending flush (BENCHMARKS.md, "A follower's request as
//! its acknowledgement").

use std::collections::BTreeSet;

use openraft::{LogId, Vote};

/// What the leader's Raft core holds, as far as the check needs it.
#[derive(Debug, Clone)]
pub struct LeaderView {
    pub id: u64,
    pub leading: bool,
    pub vote: Vote<u64>,
    pub committed: Option<LogId<u64>>,
    /// The voter sets of the configuration in effect (two during a joint change).
    pub configs: Vec<BTreeSet<u64>>,
}

/// The read index the asking follower's own vote confirms, if it does.
pub fn confirmed_index(view: &LeaderView, asker: u64, asker_vote: &Vote<u64>) -> Option<u64> {
    let leader_id = view.vote.leader_id();
    if !view.leading || !view.vote.committed || leader_id.node_id != view.id {
        return None;
    }
    if asker == view.id || asker_vote.leader_id() != leader_id {
        return None;
    }
    let committed = view.committed?;
    if committed.leader_id != *leader_id {
        return None;
    }
    let acks = [view.id, asker];
    let quorum = !view.configs.is_empty()
        && view.configs.iter().all(|voters| {
            let acked = acks.iter().filter(|id| voters.contains(id)).count();
            acked > voters.len() / 2
        });
    quorum.then_some(committed.index)
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn voters(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    /// Leader 1 of term 5, entry 40 of its term committed, voters 1, 2, 3.
    fn view() -> LeaderView {
        LeaderView {
            id: 1,
            leading: true,
            vote: Vote::new_committed(5, 1),
            committed: Some(LogId::new(CommittedLeaderId::new(5, 1), 40)),
            configs: vec![voters(&[1, 2, 3])],
        }
    }

    #[test]
    fn a_follower_of_the_same_leadership_completes_a_quorum_of_three() {
        assert_eq!(
            confirmed_index(&view(), 2, &Vote::new_committed(5, 1)),
            Some(40)
        );
        // A vote for this leader not yet committed on the follower says the same: it
        // granted nothing later.
        assert_eq!(confirmed_index(&view(), 3, &Vote::new(5, 1)), Some(40));
        // Two voters: both are the quorum.
        let two = LeaderView {
            configs: vec![voters(&[1, 2])],
            ..view()
        };
        assert_eq!(
            confirmed_index(&two, 2, &Vote::new_committed(5, 1)),
            Some(40)
        );
    }

    #[test]
    fn a_follower_that_moved_on_or_lags_confirms_nothing() {
        // It voted in a later term: a new leader may exist.
        assert_eq!(confirmed_index(&view(), 2, &Vote::new(6, 3)), None);
        assert_eq!(
            confirmed_index(&view(), 2, &Vote::new_committed(6, 1)),
            None
        );
        // It has not heard of this term: it is no evidence about it either way.
        assert_eq!(
            confirmed_index(&view(), 2, &Vote::new_committed(4, 3)),
            None
        );
        // Same term, another candidate (it voted for 3 in term 5).
        assert_eq!(confirmed_index(&view(), 2, &Vote::new(5, 3)), None);
    }

    #[test]
    fn only_a_quorum_of_every_configuration_in_effect_counts() {
        let five = LeaderView {
            configs: vec![voters(&[1, 2, 3, 4, 5])],
            ..view()
        };
        assert_eq!(confirmed_index(&five, 2, &Vote::new_committed(5, 1)), None);
        // A learner, or a replica outside the configuration, is no voter.
        assert_eq!(
            confirmed_index(&view(), 4, &Vote::new_committed(5, 1)),
            None
        );
        // Joint: {1, 2} is a quorum of the old set but not of the new one.
        let joint = LeaderView {
            configs: vec![voters(&[1, 2, 3]), voters(&[1, 4, 5])],
            ..view()
        };
        assert_eq!(confirmed_index(&joint, 2, &Vote::new_committed(5, 1)), None);
        let joint_both = LeaderView {
            configs: vec![voters(&[1, 2, 3]), voters(&[1, 2, 4])],
            ..view()
        };
        assert_eq!(
            confirmed_index(&joint_both, 2, &Vote::new_committed(5, 1)),
            Some(40)
        );
        let none = LeaderView {
            configs: vec![],
            ..view()
        };
        assert_eq!(confirmed_index(&none, 2, &Vote::new_committed(5, 1)), None);
    }

    #[test]
    fn a_leader_that_is_not_settled_in_its_term_takes_the_round() {
        let follower_vote = Vote::new_committed(5, 1);
        // Nothing of its own term committed yet: earlier leaders' entries may lie above
        // the commit index it knows.
        let fresh = LeaderView {
            committed: Some(LogId::new(CommittedLeaderId::new(4, 2), 39)),
            ..view()
        };
        assert_eq!(confirmed_index(&fresh, 2, &follower_vote), None);
        let empty = LeaderView {
            committed: None,
            ..view()
        };
        assert_eq!(confirmed_index(&empty, 2, &follower_vote), None);
        // Not leading, or a vote not yet committed (a candidate), or someone else's.
        let deposed = LeaderView {
            leading: false,
            ..view()
        };
        assert_eq!(confirmed_index(&deposed, 2, &follower_vote), None);
        let candidate = LeaderView {
            vote: Vote::new(5, 1),
            ..view()
        };
        assert_eq!(confirmed_index(&candidate, 2, &follower_vote), None);
        let other = LeaderView {
            id: 3,
            configs: vec![voters(&[1, 2, 3])],
            ..view()
        };
        assert_eq!(confirmed_index(&other, 2, &follower_vote), None);
        // Itself as the asker is no second voter.
        assert_eq!(confirmed_index(&view(), 1, &follower_vote), None);
    }
}
