//! When a cluster of containers has settled after a change.
//!
//! Every step of the deploy tests (a kill, a disconnection, a roll, a scale, `compose
//! up`) must wait for the same thing before it goes on and judges what it did: the
//! replicas it expects to be up all answer `/ready`, all name the same leader, and that
//! leader reports exactly the expected voters, no learner and no half-done change. A step
//! that went on earlier would measure the previous step's recovery, not its own. Both
//! Docker tests ask the question here, so they cannot drift into two meanings of
//! "settled".

use std::time::Duration;

use pageserver_controller::client::{poll_until, Client};

/// How often the deploy tests look again: containers change state more slowly than
/// processes.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// The leader's id if the cluster has settled now: every one of `members` is ready and
/// names the same leader, and that leader (reached through `client_of`, which may be one
/// of `members` or not) leads with exactly `voters` as members, all voters, outside a
/// joint configuration. `None` otherwise, also when anyone does not answer.
pub async fn settled_leader(
    members: &[Client],
    voters: &[u64],
    client_of: impl Fn(u64) -> Option<Client>,
) -> Option<u64> {
    let mut leader = None;
    for member in members {
        member.ready().await.ok()?;
        let theirs = member.cluster_status().await.ok()?.leader?;
        if leader.is_some_and(|l| l != theirs) {
            return None;
        }
        leader = Some(theirs);
    }
    let leader = leader?;
    let view = client_of(leader)?.cluster_status().await.ok()?;
    let mut expected = voters.to_vec();
    expected.sort_unstable();
    let mut got: Vec<u64> = view
        .members
        .iter()
        .filter(|m| m.role == "voter")
        .map(|m| m.id)
        .collect();
    got.sort_unstable();
    let settled = view.replica_id == leader
        && view.state == "leader"
        && got == expected
        && view.members.len() == expected.len()
        && !view.joint;
    settled.then_some(leader)
}

/// Waits until [`settled_leader`] names a leader; its id.
pub async fn wait_until_settled(
    members: &[Client],
    voters: &[u64],
    client_of: impl Fn(u64) -> Option<Client>,
    deadline: Duration,
) -> anyhow::Result<u64> {
    let urls: Vec<&str> = members.iter().map(Client::base_url).collect();
    Ok(poll_until(
        &format!("{urls:?} to be ready and agree on one leader with voters {voters:?}"),
        deadline,
        POLL_EVERY,
        || settled_leader(members, voters, &client_of),
    )
    .await?)
}
