//! How a replica with an empty data dir comes to life, decided before Raft starts.
//!
//! A replica that lost its disk has also forgotten its vote and the entries it
//! acknowledged. If it came back as the same voter it could grant its vote to a
//! candidate lacking an acknowledged entry, and that generation would be lost (the
//! `amnesia` integration test). So a replica never starts Raft on an empty data dir while
//! a running cluster lists it as a member: it first asks the cluster to remove it (the
//! check that the remaining voters form a quorum still applies), then joins like a new
//! replica, as a learner that catches up before it votes. That is the runbook "remove,
//! wipe, join", done by the replica itself; a late first start of an initial member takes
//! the same path.

use std::time::Duration;

use anyhow::bail;

use crate::api::types::ClusterStatus;
use crate::client::Client;

/// Whether a peer's answer shows a cluster that has run: it knows a leader, or holds log
/// entries beyond the initial membership entry (index 0), which only an elected leader
/// writes. An initial member that initialized and is still campaigning is not: it
/// needs the other members' votes.
pub fn is_running(status: &ClusterStatus) -> bool {
    status.leader.is_some() || status.last_log_index.is_some_and(|i| i > 0)
}

/// Whether a peer's answer shows a replica without any log: in its waiting room, or
/// serving but not initialized yet. Such a replica holds no data and no vote.
pub fn is_fresh(status: &ClusterStatus) -> bool {
    status.leader.is_none() && status.last_log_index.is_none()
}

/// The answers of the peers that answer, each checked to be of this cluster.
pub async fn probe(
    peers: &[String],
    cluster_name: &str,
    http: &reqwest::Client,
    token: Option<String>,
) -> anyhow::Result<Vec<(String, ClusterStatus)>> {
    let asks = peers.iter().map(|url| {
        let client = Client::with_http(url, http.clone())
            .with_token(token.clone())
            .with_timeout(Duration::from_secs(2));
        async move { (url.clone(), client.cluster_status().await) }
    });
    let mut answers = Vec::new();
    for (url, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(status) if status.cluster_name != cluster_name => bail!(
                "peer {url} belongs to cluster {:?}, not {cluster_name:?}: check --cluster-name and \
                 --peer-url-template",
                status.cluster_name
            ),
            Ok(status) => answers.push((url, status)),
            Err(e) => tracing::debug!(%url, error = %e, "peer did not answer"),
        }
    }
    Ok(answers)
}

/// Asks the running cluster, through `via`, to remove replica `id` so that it can join
/// again with its empty data dir. Succeeds if the replica is no longer a member.
pub async fn leave_to_rejoin(
    via: &str,
    id: u64,
    http: &reqwest::Client,
    token: Option<String>,
) -> anyhow::Result<()> {
    tracing::warn!(id, %via,
        "the data dir is empty but the running cluster lists this replica: it lost its data (or first \
         started late). Asking the cluster to remove it, then joining again as a learner, so that it never \
         votes with an empty log");
    let client = Client::with_http(via, http.clone())
        .with_token(token)
        .with_timeout(Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match client.remove_member(id, false).await {
            Ok(_) => return Ok(()),
            Err(e) if e.status() == Some(404) => return Ok(()),
            Err(e) if e.is_refusal() => bail!(
                "the cluster refused to remove replica {id} so that it can rejoin: {e}. Fix the cluster (or \
                 remove it by hand with `cluster remove --id {id}`), then start this replica again"
            ),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "asking to be removed again shortly");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => bail!("could not get replica {id} removed from the running cluster: {e}"),
        }
    }
}
