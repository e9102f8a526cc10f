//! `cluster status --all`: every member's own view, side by side.
//!
//! One replica's `/v1/cluster` is what that replica believes. A follower cannot say how
//! far its peers got, and during an incident the question is usually which replica
//! disagrees: one that lags, one still following a deposed leader, one in a higher term
//! that keeps calling elections, one that does not answer at all. So the CLI asks each
//! member the asked replica lists (as `etcdctl endpoint status --cluster` does), and
//! prints each member's own state, term, leader and applied index next to the last index
//! the leader knows it holds. Members are asked at the URLs their peers use, so the CLI
//! must run where those resolve (inside the cluster's network, or on the loopback of a
//! local cluster); a member it cannot reach is shown as such, not left out.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::api::types::ClusterStatus;
use crate::client::Client;

/// How long one member may take to answer: a member that is paused or cut off should
/// not hold the whole report up.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// What one member said about itself, or why it said nothing.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: u64,
    pub url: String,
    /// `voter` or `learner`, as the asked replica's configuration has it.
    pub role: String,
    pub status: Option<ClusterStatus>,
    pub error: Option<String>,
}

/// The asked replica's answer and each listed member's own.
#[derive(Debug, Clone, Serialize)]
pub struct Survey {
    pub asked: ClusterStatus,
    pub members: Vec<MemberView>,
}

/// Asks every member that `asked` lists for its own `/v1/cluster`, all at once.
pub async fn survey(client: &Client, asked: ClusterStatus) -> Survey {
    let calls = asked.members.iter().map(|member| {
        let member_client = client.at(&member.url).with_timeout(MEMBER_TIMEOUT);
        async move { view_of(member, member_client.cluster_status().await) }
    });
    let members = futures::future::join_all(calls).await;
    Survey { asked, members }
}

/// What `member` said about itself, given its answer.
fn view_of(
    member: &crate::api::types::ClusterMember,
    answer: Result<ClusterStatus, crate::client::ClientError>,
) -> MemberView {
    let (status, error) = match answer {
        // A URL that answers for another replica (a stale address, a typo in the
        // configuration) is an error worth showing, not a view of this member.
        Ok(status) if status.replica_id != member.id => (
            None,
            Some(format!(
                "{} answered as replica {}",
                member.url, status.replica_id
            )),
        ),
        Ok(status) => (Some(status), None),
        Err(e) => (None, Some(e.to_string())),
    };
    MemberView {
        id: member.id,
        url: member.url.clone(),
        role: member.role.clone(),
        status,
        error,
    }
}

impl Survey {
    /// The answer of the member that calls itself leader in the highest term: the only
    /// one whose replication progress is current.
    fn leader(&self) -> Option<&ClusterStatus> {
        self.members
            .iter()
            .filter_map(|m| m.status.as_ref())
            .filter(|s| s.state == "leader")
            .max_by_key(|s| s.term)
    }

    /// One line on whether the members that answered agree on the leader and term.
    fn agreement(&self) -> String {
        let answered: Vec<&ClusterStatus> = self
            .members
            .iter()
            .filter_map(|m| m.status.as_ref())
            .collect();
        let views: BTreeSet<(Option<u64>, u64)> =
            answered.iter().map(|s| (s.leader, s.term)).collect();
        let silent = self.members.len() - answered.len();
        let silent_note = match silent {
            0 => String::new(),
            1 => "; 1 member did not answer".to_owned(),
            n => format!("; {n} members did not answer"),
        };
        let n = answered.len();
        match views.iter().next() {
            None => "no member answered".to_owned(),
            Some((leader, term)) if views.len() == 1 => {
                let who = match (silent, n) {
                    (0, _) => format!("all {n} members see"),
                    (_, 1) => "the only member that answered sees".to_owned(),
                    _ => format!("the {n} members that answered see"),
                };
                let leader =
                    leader.map_or_else(|| "no leader".to_owned(), |l| format!("leader {l}"));
                format!("{who} {leader} in term {term}{silent_note}")
            }
            Some(_) => format!(
                "the members disagree about the leader or the term (an election may be under \
                 way, or a member is cut off){silent_note}"
            ),
        }
    }

    /// The report for a person: one row per member, then notes.
    pub fn render(&self) -> String {
        let leader = self.leader();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cluster {}: {}",
            self.asked.cluster_id,
            self.agreement()
        );
        let _ = writeln!(
            out,
            "{:<4} {:<8} {:<12} {:>6} {:>6} {:>10} {:>10} {:>10}  URL",
            "ID", "ROLE", "STATE", "TERM", "LEADER", "COMMITTED", "APPLIED", "MATCHED"
        );
        for member in &self.members {
            let matched = leader
                .and_then(|l| l.members.iter().find(|m| m.id == member.id))
                .and_then(|m| m.matched_index);
            let mark = if leader.is_some_and(|l| l.replica_id == member.id) {
                "*"
            } else {
                ""
            };
            let id = format!("{}{mark}", member.id);
            let own = member.status.as_ref();
            // A replica told it was removed may still call itself a candidate.
            let state = own.map_or("unreachable", |s| match s.removed {
                Some(_) => "removed",
                None => s.state.as_str(),
            });
            let _ = writeln!(
                out,
                "{:<4} {:<8} {:<12} {:>6} {:>6} {:>10} {:>10} {:>10}  {}",
                id,
                member.role,
                state,
                or_dash(own.map(|s| s.term)),
                or_dash(own.and_then(|s| s.leader)),
                or_dash(own.and_then(|s| s.committed_index)),
                or_dash(own.and_then(|s| s.applied_index)),
                or_dash(matched),
                member.url
            );
        }
        if leader.is_none() {
            let _ = writeln!(
                out,
                "MATCHED is unknown: no member that answered is a leader"
            );
        }
        for member in &self.members {
            if let Some(error) = &member.error {
                let _ = writeln!(out, "replica {}: {error}", member.id);
            }
        }
        out
    }
}

pub(super) fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::ClusterMember;

    fn member(id: u64, matched: Option<u64>) -> ClusterMember {
        ClusterMember {
            id,
            url: format!("http://127.0.0.1:700{id}"),
            role: "voter".into(),
            matched_index: matched,
        }
    }

    fn status(id: u64, state: &str, leader: Option<u64>, term: u64, applied: u64) -> ClusterStatus {
        let leading = state == "leader";
        ClusterStatus {
            cluster_name: "test".into(),
            cluster_id: "c0ffee".into(),
            replica_id: id,
            state: state.into(),
            leader,
            term,
            members: (1..=3)
                .map(|m| member(m, leading.then_some(40 + m)))
                .collect(),
            last_log_index: Some(applied),
            last_log_term: Some(term),
            committed_index: Some(applied),
            applied_index: Some(applied),
            snapshot_index: None,
            purged_index: None,
            millis_since_quorum_ack: None,
            joint: false,
            removed: None,
            seen_fresh: Vec::new(),
        }
    }

    fn view(id: u64, status: Option<ClusterStatus>, error: Option<&str>) -> MemberView {
        MemberView {
            id,
            url: format!("http://127.0.0.1:700{id}"),
            role: "voter".into(),
            status,
            error: error.map(str::to_owned),
        }
    }

    fn row<'a>(report: &'a str, id: &str) -> Vec<&'a str> {
        report
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no row {id} in:\n{report}"))
            .split_whitespace()
            .collect()
    }

    #[test]
    fn a_followers_answer_is_completed_with_the_leaders_progress() {
        let survey = Survey {
            asked: status(1, "follower", Some(2), 5, 42),
            members: vec![
                view(1, Some(status(1, "follower", Some(2), 5, 41)), None),
                view(2, Some(status(2, "leader", Some(2), 5, 43)), None),
                view(
                    3,
                    None,
                    Some("no answer from http://127.0.0.1:7003: refused"),
                ),
            ],
        };
        let report = survey.render();
        assert!(
            report.contains(
                "the 2 members that answered see leader 2 in term 5; 1 member did not answer"
            ),
            "{report}"
        );
        assert_eq!(
            row(&report, "1"),
            [
                "1",
                "voter",
                "follower",
                "5",
                "2",
                "41",
                "41",
                "41",
                "http://127.0.0.1:7001"
            ]
        );
        assert_eq!(row(&report, "2*")[2], "leader");
        // The leader still knows how far the silent member got.
        assert_eq!(
            row(&report, "3"),
            [
                "3",
                "voter",
                "unreachable",
                "-",
                "-",
                "-",
                "-",
                "43",
                "http://127.0.0.1:7003"
            ]
        );
        assert!(report.contains("replica 3: no answer from"), "{report}");
    }

    #[test]
    fn an_address_that_answers_for_another_replica_is_not_taken_as_its_view() {
        let listed = member(3, None);
        let wrong = view_of(&listed, Ok(status(1, "follower", Some(2), 5, 42)));
        assert!(wrong.status.is_none());
        assert_eq!(
            wrong.error.as_deref(),
            Some("http://127.0.0.1:7003 answered as replica 1")
        );
        let right = view_of(&listed, Ok(status(3, "follower", Some(2), 5, 42)));
        assert_eq!(right.status.map(|s| s.replica_id), Some(3));
        assert!(right.error.is_none());
    }

    #[test]
    fn split_views_are_called_out() {
        let survey = Survey {
            asked: status(1, "follower", Some(2), 5, 42),
            members: vec![
                view(1, Some(status(1, "follower", Some(2), 5, 42)), None),
                view(2, Some(status(2, "leader", Some(2), 5, 42)), None),
                view(3, Some(status(3, "candidate", None, 7, 40)), None),
            ],
        };
        let report = survey.render();
        assert!(report.contains("disagree"), "{report}");
        assert_eq!(row(&report, "3")[2], "candidate");
    }

    #[test]
    fn without_a_leader_the_progress_column_says_why_it_is_empty() {
        let survey = Survey {
            asked: status(1, "candidate", None, 9, 42),
            members: vec![
                view(1, Some(status(1, "candidate", None, 9, 42)), None),
                view(2, None, Some("timed out")),
                view(3, None, Some("timed out")),
            ],
        };
        let report = survey.render();
        assert!(
            report.contains(
                "the only member that answered sees no leader in term 9; 2 members did not answer"
            ),
            "{report}"
        );
        assert!(report.contains("MATCHED is unknown"), "{report}");
        assert_eq!(row(&report, "1")[7], "-");
    }

    #[test]
    fn a_member_that_knows_it_was_removed_shows_as_removed() {
        // Asked through the removed replica itself, whose stale membership still lists it.
        let mut removed = status(3, "candidate", None, 9, 40);
        removed.removed = Some(crate::api::types::RemovedStatus {
            reported_by: 1,
            membership_index: 43,
        });
        let survey = Survey {
            asked: removed.clone(),
            members: vec![
                view(1, Some(status(1, "leader", Some(1), 2, 50)), None),
                view(2, Some(status(2, "follower", Some(1), 2, 50)), None),
                view(3, Some(removed), None),
            ],
        };
        let report = survey.render();
        assert_eq!(row(&report, "3")[2], "removed", "{report}");
        assert_eq!(row(&report, "2")[2], "follower", "{report}");
    }

    #[test]
    fn of_two_leaders_the_one_in_the_higher_term_counts() {
        // A deposed leader that has not heard of the new term still calls itself leader.
        let survey = Survey {
            asked: status(1, "leader", Some(1), 4, 30),
            members: vec![
                view(1, Some(status(1, "leader", Some(1), 4, 30)), None),
                view(2, Some(status(2, "leader", Some(2), 6, 50)), None),
                view(3, Some(status(3, "follower", Some(2), 6, 50)), None),
            ],
        };
        assert_eq!(survey.leader().map(|l| l.replica_id), Some(2));
        let report = survey.render();
        assert!(report.contains("disagree"), "{report}");
        assert!(row(&report, "2*").contains(&"leader"), "{report}");
    }
}
