//! Noticing that this replica was removed from the cluster while it was not looking.
//!
//! A replica learns of its removal from the log entry that removes it, but the leader
//! stops replicating to a replica once that entry commits, and a replica that was down at
//! the time never receives it at all. Started again from its data dir, such a replica
//! still finds itself a voter in the last membership it holds and calls elections
//! forever: it cannot win them (the entry that removed it is committed, and a candidate
//! lacking a committed entry gets no majority), but it climbs through terms, and once the
//! members' leader fails its higher term can cost them an extra election round.
//!
//! So peers tell it. A replica answering a vote request from a replica that is not a voter
//! of the membership it has *applied* (hence committed) adds that membership's log id to
//! the answer ([`HEADER_NOT_A_VOTER`]); the vote itself goes to Raft unchanged, because
//! refusing votes on a membership view that may lag could stall an election that needs
//! them. The candidate stops calling elections while the reported membership is newer
//! than the last one in its own log: until it holds that committed entry, no election
//! could make it leader, so nothing is lost by not campaigning. Once its log reaches the
//! reported membership (an operator added it back and the leader replicates to it),
//! elections are allowed again, and openraft itself keeps a replica that is not a voter
//! from campaigning.

use std::sync::Arc;

use axum::http::HeaderValue;
use openraft::{CommittedLeaderId, LogId, Raft, RaftTypeConfig, StoredMembership};
use tokio::sync::watch;

use crate::{Member, ReplicaId};

/// Header on a vote answer: the log id (`term-leader-index`) of the applied membership
/// that does not count the candidate among its voters.
pub const HEADER_NOT_A_VOTER: &str = "x-controller-not-a-voter";

/// A peer's report that this replica is not a voter of the membership at `membership`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    pub reported_by: ReplicaId,
    pub membership: LogId<ReplicaId>,
}

/// This replica's standing, shared by the transport (which hears the reports), the guard
/// task (which decides) and the API (which tells operators).
pub struct Standing {
    /// The report with the newest membership heard so far.
    report: watch::Sender<Option<Removal>>,
    /// The current decision: `Some` while this replica considers itself removed.
    removed: watch::Sender<Option<Removal>>,
}

impl Default for Standing {
    fn default() -> Self {
        Self {
            report: watch::Sender::new(None),
            removed: watch::Sender::new(None),
        }
    }
}

impl Standing {
    /// Records a peer's report; an older membership than one already reported is ignored.
    pub fn report(&self, removal: Removal) {
        self.report.send_if_modified(|current| {
            let newer = current.is_none_or(|c| removal.membership > c.membership);
            if newer {
                *current = Some(removal);
            }
            newer
        });
    }

    /// `Some` while this replica considers itself removed (and does not campaign).
    pub fn removed(&self) -> Option<Removal> {
        *self.removed.borrow()
    }
}

/// Whether a replica whose last membership is `own` is removed, given the newest report.
/// Only a report of a membership newer than its own counts: a peer whose membership lags
/// (it has not yet applied the entry that added this replica) must not silence it.
pub fn is_removed(report: Option<Removal>, own: Option<LogId<ReplicaId>>) -> Option<Removal> {
    report.filter(|r| Some(r.membership) > own)
}

/// The answering side: the log id of `membership` if it is applied (`applied` reached it)
/// and does not count `candidate` as a voter; `None` otherwise.
pub fn not_a_voter(
    membership: &StoredMembership<ReplicaId, Member>,
    applied: Option<LogId<ReplicaId>>,
    candidate: ReplicaId,
) -> Option<LogId<ReplicaId>> {
    let log_id = (*membership.log_id())?;
    let applied = Some(log_id) <= applied;
    let voter = membership.voter_ids().any(|id| id == candidate);
    (applied && !voter).then_some(log_id)
}

/// The log id of the membership a replica holds, if that membership does not list
/// replica `id` at all (neither voter nor learner): it applied its own removal, or it is
/// joining and has not received the entry that added it.
pub fn unlisted(
    id: ReplicaId,
    membership: &StoredMembership<ReplicaId, Member>,
) -> Option<LogId<ReplicaId>> {
    let log_id = (*membership.log_id())?;
    membership
        .membership()
        .get_node(&id)
        .is_none()
        .then_some(log_id)
}

pub fn encode(log_id: LogId<ReplicaId>) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{}-{}-{}",
        log_id.leader_id.term, log_id.leader_id.node_id, log_id.index
    ))
    .expect("digits and dashes are a valid header value")
}

pub fn decode(value: &HeaderValue) -> Option<LogId<ReplicaId>> {
    let mut parts = value.to_str().ok()?.split('-').map(str::parse::<u64>);
    let (Some(Ok(term)), Some(Ok(node)), Some(Ok(index)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some(LogId::new(CommittedLeaderId::new(term, node), index))
}

/// Keeps elections off while this replica is removed, and on otherwise. Runs until Raft
/// stops.
pub async fn guard<C>(raft: Raft<C>, standing: Arc<Standing>)
where
    C: RaftTypeConfig<NodeId = ReplicaId, Node = Member>,
{
    // The server metrics change only with the vote, state, leader or membership (the
    // full metrics are sent again on every pass of the Raft core).
    let mut metrics = raft.server_metrics();
    let mut reports = standing.report.subscribe();
    loop {
        let own = *metrics.borrow_and_update().membership_config.log_id();
        let decision = is_removed(*reports.borrow_and_update(), own);
        let previous = standing.removed.send_replace(decision);
        match (previous, decision) {
            (None, Some(removal)) => {
                raft.runtime_config().elect(false);
                tracing::warn!(
                    reported_by = removal.reported_by,
                    membership = %removal.membership,
                    own_membership = ?own.map(|id| id.to_string()),
                    "this replica is not a voter of the cluster's committed membership: it was \
                     removed; it no longer calls elections. Stop it, or add it back with \
                     `cluster add`"
                );
            }
            (Some(_), None) => {
                raft.runtime_config().elect(true);
                tracing::info!(
                    own_membership = ?own.map(|id| id.to_string()),
                    "this replica's log reached the membership it was reported removed by; \
                     elections are allowed again"
                );
            }
            _ => {}
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            changed = reports.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::Membership;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<ReplicaId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn membership(
        at: LogId<ReplicaId>,
        voters: &[ReplicaId],
        learners: &[ReplicaId],
    ) -> StoredMembership<ReplicaId, Member> {
        let nodes: BTreeMap<ReplicaId, Member> = voters
            .iter()
            .chain(learners)
            .map(|id| (*id, Member::new(format!("http://r{id}"))))
            .collect();
        let config: BTreeSet<ReplicaId> = voters.iter().copied().collect();
        StoredMembership::new(Some(at), Membership::new(vec![config], nodes))
    }

    #[test]
    fn a_peer_reports_only_an_applied_membership_without_the_candidate_as_voter() {
        let m = membership(log_id(2, 10), &[1, 2], &[4]);
        assert_eq!(not_a_voter(&m, Some(log_id(2, 12)), 3), Some(log_id(2, 10)));
        assert_eq!(not_a_voter(&m, Some(log_id(2, 10)), 4), Some(log_id(2, 10)));
        assert_eq!(not_a_voter(&m, Some(log_id(2, 12)), 2), None, "a voter");
        assert_eq!(not_a_voter(&m, Some(log_id(2, 9)), 3), None, "not applied");
        assert_eq!(not_a_voter(&m, None, 3), None, "nothing applied");
        let fresh = StoredMembership::<ReplicaId, Member>::default();
        assert_eq!(not_a_voter(&fresh, Some(log_id(2, 9)), 3), None);
    }

    #[test]
    fn a_replica_missing_from_the_membership_it_holds_is_unlisted() {
        let m = membership(log_id(2, 10), &[1, 2], &[4]);
        assert_eq!(unlisted(3, &m), Some(log_id(2, 10)));
        assert_eq!(unlisted(1, &m), None, "a voter");
        assert_eq!(unlisted(4, &m), None, "a learner");
        let fresh = StoredMembership::<ReplicaId, Member>::default();
        assert_eq!(unlisted(3, &fresh), None, "no membership yet");
    }

    #[test]
    fn only_a_membership_newer_than_its_own_silences_a_replica() {
        let report = |term, index| {
            Some(Removal {
                reported_by: 2,
                membership: log_id(term, index),
            })
        };
        // Its log stops before the entry that removed it.
        assert!(is_removed(report(2, 10), Some(log_id(2, 7))).is_some());
        assert!(is_removed(report(2, 10), None).is_some());
        // A later term at a lower index is still newer: its own entry was overwritten.
        assert!(is_removed(report(3, 10), Some(log_id(2, 11))).is_some());
        // The peer lags: this replica holds that membership or a newer one (it was added
        // back after).
        assert!(is_removed(report(2, 10), Some(log_id(2, 10))).is_none());
        assert!(is_removed(report(2, 10), Some(log_id(4, 15))).is_none());
        assert!(is_removed(None, Some(log_id(2, 7))).is_none());
    }

    #[test]
    fn reports_keep_the_newest_membership() {
        let standing = Standing::default();
        let removal = |by, index| Removal {
            reported_by: by,
            membership: log_id(2, index),
        };
        standing.report(removal(1, 10));
        standing.report(removal(2, 8));
        assert_eq!(*standing.report.borrow(), Some(removal(1, 10)));
        standing.report(removal(2, 12));
        assert_eq!(*standing.report.borrow(), Some(removal(2, 12)));
    }

    #[test]
    fn the_header_round_trips_and_rejects_garbage() {
        let id = LogId::new(CommittedLeaderId::new(7, 3), 1234);
        assert_eq!(decode(&encode(id)), Some(id));
        for bad in ["", "7-3", "7-3-1-2", "a-3-1", "7--1", "-1-2-3"] {
            assert_eq!(decode(&HeaderValue::from_static(bad)), None, "{bad:?}");
        }
    }
}
