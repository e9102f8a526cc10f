//! Changing who is in the cluster, on the leader: add, remove, hand leadership over.
//!
//! - Adding a member makes it a learner, waits until it has *applied* what the leader had
//!   committed (openraft's own wait only checks a replication lag threshold), and only
//!   then makes it a voter, so a slow newcomer never becomes a voter that holds back
//!   commits. Adding the same id and URL again is a no-op, so a joining replica may retry.
//! - Removing a voter is refused when the remaining voters that answer could not form a
//!   quorum of the new configuration (the cluster would stop), or, the voter removed being
//!   down, of the current one (which commits the change first), unless forced. Removing
//!   the leader first hands leadership to another voter, once the removal passed those
//!   checks.
//! - Changes through one leader run one at a time, each checked against what the one
//!   before it left; a voter change left joint by a caller that gave up is finished by
//!   the leader.
//! - Handing leadership over: openraft 0.9 has no transfer call, so the leader stops
//!   proposing writes and confirming reads (both are answered "not the leader" and
//!   re-routed), waits until the target holds its whole log, and asks the target to
//!   campaign. The old leader's own lease (openraft's, `election_timeout_max` since it
//!   was elected) must have expired for it to grant the vote; in a five-voter cluster a
//!   third vote is needed, from a follower whose lease has lapsed too, so the leader
//!   first sends nothing at all for a lease. A read round in that silence renewed every
//!   lease and made the campaign fail; a failed campaign deposes the old leader and
//!   costs an election (seen in the five-replica rolling restarts of RELIABILITY.md).
//!   A step-down (this leader stopping) hands over to a voter that accepts connections,
//!   and gives up at once when none does: when the whole cluster stops together, the last
//!   leader has no one to hand over to, and waiting out the handover budget for replicas
//!   that are gone would only delay its exit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller_raft::transport::{accepts_connections, CampaignError, HttpNetwork, PeerHttp};
use controller_raft::Member;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use crate::api::types::ClusterStatus;
use crate::auth::PeerToken;
use crate::client::Client;
use crate::replica::Replica;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MembershipError {
    #[error("this replica is not the leader (leader: {0:?})")]
    NotLeader(Option<u64>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

/// Leader-side cluster changes. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    replica: Arc<Replica>,
    network: HttpNetwork,
    http: PeerHttp,
    /// Presented when probing other members.
    peer_token: Option<PeerToken>,
    /// Probes name it, and an answer of another cluster counts as no answer.
    cluster_id: String,
    /// Held by each change from its checks to its commit, so that two changes through
    /// this leader never pass their checks against the same configuration (two removals
    /// that each leave a quorum, together none).
    changing: Arc<tokio::sync::Mutex<()>>,
}

/// How long a single probe of a member may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a step-down checks that the heir it waits for is still there.
const HEIR_PROBE_EVERY: Duration = Duration::from_millis(300);

/// How long a membership change may take to commit before the caller is told its fate is
/// unknown (it needs a quorum of the old and the new configuration).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a membership write with [`CHANGE_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    change: impl std::future::Future<Output = Result<T, RaftError<u64, ClientWriteError<u64, Member>>>>,
) -> Result<T, MembershipError> {
    match tokio::time::timeout(CHANGE_TIMEOUT, change).await {
        Ok(result) => result.map_err(from_write_error),
        Err(_) => Err(MembershipError::Unavailable(format!(
            "{what} was not committed within {CHANGE_TIMEOUT:?}; it may still complete (is a quorum of the old \
             and the new configuration up?)"
        ))),
    }
}

fn from_write_error(e: RaftError<u64, ClientWriteError<u64, Member>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            MembershipError::NotLeader(f.leader_id)
        }
        // Transient: the change ahead of it finishes in a moment; the caller retries.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(p),
        )) => MembershipError::Unavailable(format!(
            "another membership change is in progress ({p}); retry shortly"
        )),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            MembershipError::Conflict(e.to_string())
        }
        RaftError::Fatal(f) => MembershipError::Unavailable(f.to_string()),
    }
}

impl Membership {
    pub fn new(
        replica: Arc<Replica>,
        network: HttpNetwork,
        http: PeerHttp,
        peer_token: Option<PeerToken>,
        cluster_id: String,
    ) -> Self {
        Self {
            replica,
            network,
            http,
            peer_token,
            cluster_id,
            changing: Arc::default(),
        }
    }

    fn ensure_leader(&self) -> Result<(), MembershipError> {
        let metrics = self.replica.metrics().borrow().clone();
        if metrics.state == ServerState::Leader {
            Ok(())
        } else {
            Err(MembershipError::NotLeader(metrics.current_leader))
        }
    }

    /// The voters the configuration holds or, during a joint change, is heading to.
    fn voters(&self) -> BTreeSet<u64> {
        self.replica
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_joint_config()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    /// Completes a joint configuration left behind by a change whose caller stopped
    /// between openraft's two steps (its request timed out, or leadership moved): openraft
    /// drives the second step from the caller's future only, and a cluster left joint
    /// needs a quorum of both sets for every write. A change whose caller is still there
    /// is answered "in progress", and the request is retried.
    async fn finish_joint(&self) -> Result<(), MembershipError> {
        let joint = self
            .replica
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_joint_config()
            .len()
            > 1;
        if joint {
            bounded(
                "finishing the previous membership change",
                self.replica
                    .raft()
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::new()), false),
            )
            .await?;
            tracing::warn!(voters = ?self.voters(), "finished a membership change left half done");
        }
        Ok(())
    }

    fn member(&self, id: u64) -> Option<Member> {
        self.replica
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// What member `id` at `member` says of itself, if what answers there is that replica
    /// of this cluster (not a mistyped URL that reaches another member, nor a replica of
    /// another cluster, such as the one a restored cluster came from).
    async fn status_of(&self, id: u64, member: &Member) -> Option<ClusterStatus> {
        Client::with_http(&member.url, self.http.get())
            .with_token(self.peer_token.as_ref().map(PeerToken::token))
            .with_cluster(Some(self.cluster_id.clone()))
            .with_timeout(PROBE_TIMEOUT)
            .member_status(id, &self.cluster_id)
            .await
    }

    async fn committed(&self) -> u64 {
        self.replica
            .raft()
            .with_raft_state(|s| s.committed.map_or(0, |id| id.index))
            .await
            .unwrap_or(0)
    }

    /// While this replica runs: as leader, finishes a joint configuration no change is
    /// driving any more (see `finish_joint`), so that a change whose caller
    /// gave up completes once its quorums are there, without waiting for the next request.
    /// Every change through this leader holds `changing` while openraft
    /// drives it: a joint configuration seen while it is free has no driver here.
    pub async fn finish_abandoned_changes(self, stop: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(2));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let Ok(_changing) = self.changing.try_lock() else {
                continue;
            };
            if self.ensure_leader().is_err() {
                continue;
            }
            if let Err(e) = self.finish_joint().await {
                tracing::debug!(error = %e, "the membership change left half done is not finished yet");
            }
        }
    }

    /// Adds `id` at `url` as a learner, waits until it caught up, then (unless
    /// `learner_only`) promotes it to voter.
    pub async fn add(
        &self,
        id: u64,
        url: &str,
        learner_only: bool,
        catch_up: Duration,
    ) -> Result<(), MembershipError> {
        let changing = self.changing.lock().await;
        self.ensure_leader()?;
        self.finish_joint().await?;
        let member = Member::new(url);
        let is_voter = self.voters().contains(&id);
        match self.member(id) {
            Some(existing) if existing.url != member.url => {
                return Err(MembershipError::Conflict(format!(
                    "replica {id} is already a member at {existing}; remove it first to move it to {member}"
                )))
            }
            Some(_) if is_voter || learner_only => {
                tracing::info!(id, %member, "already a member; nothing to do");
                return Ok(());
            }
            Some(_) => {}
            None => {
                tracing::info!(id, %member, "adding a learner");
                bounded("adding the learner", self.replica.raft().add_learner(id, member.clone(), false)).await?;
            }
        }
        // Other changes may go ahead while the learner catches up.
        drop(changing);
        self.wait_caught_up(id, &member, catch_up).await?;
        if learner_only {
            return Ok(());
        }
        let _changing = self.changing.lock().await;
        self.ensure_leader()?;
        self.finish_joint().await?;
        match self.member(id) {
            Some(now) if now.url == member.url => {}
            _ => {
                return Err(MembershipError::Conflict(format!(
                "replica {id} at {member} was removed or replaced while it caught up; add it again"
            )))
            }
        }
        tracing::info!(id, %member, "promoting the learner to voter");
        bounded(
            "promoting the learner",
            self.replica
                .raft()
                .change_membership(ChangeMembers::AddVoterIds([id].into()), false),
        )
        .await?;
        tracing::info!(id, "replica is now a voter");
        Ok(())
    }

    /// Waits until the member has applied what the leader had committed when it looked.
    async fn wait_caught_up(
        &self,
        id: u64,
        member: &Member,
        within: Duration,
    ) -> Result<(), MembershipError> {
        let deadline = Instant::now() + within;
        let mut last_report = Instant::now();
        // Fixed when the wait begins: under a steady stream of writes a target re-read on
        // every look moves ahead of a learner that keeps up, which would never be promoted.
        let committed = self.committed().await;
        loop {
            self.ensure_leader()?;
            let applied = self
                .status_of(id, member)
                .await
                .and_then(|s| s.applied_index);
            if applied.is_some_and(|a| a >= committed) {
                tracing::info!(id, committed, "learner caught up");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(MembershipError::Unavailable(format!(
                    "replica {id} at {member} did not catch up within {within:?} (applied {applied:?} of {committed}); \
                     it stays a learner; retry to promote it"
                )));
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                tracing::info!(id, committed, applied = ?applied, "waiting for the learner to catch up");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes `id`. Handing leadership away first when `id` is this leader is the caller's
    /// job: [`MembershipError::NotLeader`] is returned after the handoff so the request is
    /// routed to the new leader.
    pub async fn remove(&self, id: u64, force: bool) -> Result<(), MembershipError> {
        let _changing = self.changing.lock().await;
        self.ensure_leader()?;
        self.finish_joint().await?;
        if self.member(id).is_none() {
            return Err(MembershipError::NotFound(format!(
                "replica {id} is not a member"
            )));
        }
        let voters = self.voters();
        if id == self.replica.id() {
            if self.successors().is_empty() {
                return Err(MembershipError::Conflict(
                    "this is the only voter; it cannot be removed".into(),
                ));
            }
            // Checked here too, so that a removal to be refused costs no handover.
            self.check_removal(id, &voters, force).await?;
            let (to, _) = self.reachable_successor(&mut BTreeMap::new()).await?;
            self.transfer(to, Duration::from_secs(5)).await?;
            return Err(MembershipError::NotLeader(Some(to)));
        }
        if voters.contains(&id) {
            let remaining = self.check_removal(id, &voters, force).await?;
            tracing::info!(id, remaining = ?remaining, force, "removing a voter");
            bounded(
                "removing the voter",
                self.replica
                    .raft()
                    .change_membership(ChangeMembers::RemoveVoters([id].into()), false),
            )
            .await?;
        } else {
            tracing::info!(id, "removing a learner");
            bounded(
                "removing the learner",
                self.replica
                    .raft()
                    .change_membership(ChangeMembers::RemoveNodes([id].into()), false),
            )
            .await?;
        }
        Ok(())
    }

    /// Whether voter `id` may be removed from `voters` (see the module docs); the voters
    /// that would remain.
    async fn check_removal(
        &self,
        id: u64,
        voters: &BTreeSet<u64>,
        force: bool,
    ) -> Result<Vec<u64>, MembershipError> {
        let remaining: Vec<u64> = voters.iter().copied().filter(|v| *v != id).collect();
        if remaining.is_empty() {
            return Err(MembershipError::Conflict(
                "cannot remove the last voter".into(),
            ));
        }
        if force {
            return Ok(remaining);
        }
        let quorum = remaining.len() / 2 + 1;
        let mut answering = 0;
        for voter in &remaining {
            answering += usize::from(self.holds_a_vote(*voter).await);
        }
        if answering < quorum {
            return Err(MembershipError::Conflict(format!(
                "refusing to remove replica {id}: of the {} remaining voters only {answering} answer, and a \
                 quorum of them needs {quorum}; the cluster would stop. Bring replicas back first, or force \
                 it (`?force=true`; `cluster remove --force`)",
                remaining.len()
            )));
        }
        // The change itself is committed by a quorum of the voters before it too (the
        // joint configuration): with an even count and the one removed down, the
        // remaining ones can be a quorum of theirs and not of the current set.
        let current_quorum = voters.len() / 2 + 1;
        if answering < current_quorum && !self.holds_a_vote(id).await {
            return Err(MembershipError::Conflict(format!(
                "refusing to remove replica {id}: it does not answer, and of the {} voters only {answering} \
                 do, short of the {current_quorum} that must commit the change; it would never complete. \
                 Bring replicas back first, or force it (`?force=true`; `cluster remove --force`)",
                voters.len()
            )));
        }
        Ok(remaining)
    }

    /// Whether voter `id` answers as a running member that can vote (this leader does).
    async fn holds_a_vote(&self, id: u64) -> bool {
        id == self.replica.id()
            || match self.member(id) {
                // A replica waiting to start, or one already removed, holds no vote.
                Some(member) => self
                    .status_of(id, &member)
                    .await
                    .is_some_and(|s| !crate::bootstrap::is_fresh(&s) && s.removed.is_none()),
                None => false,
            }
    }

    /// The other voters, the one with the most of the log first (of equals, the highest
    /// id).
    fn successors(&self) -> Vec<u64> {
        let metrics = self.replica.metrics().borrow().clone();
        let replication = metrics.replication.clone().unwrap_or_default();
        let mut voters: Vec<u64> = self
            .voters()
            .into_iter()
            .filter(|v| *v != self.replica.id())
            .collect();
        voters.sort_by_key(|v| {
            std::cmp::Reverse((replication.get(v).cloned().flatten().map(|l| l.index), *v))
        });
        voters
    }

    /// The first of [`Self::successors`], `skip` left out, that accepts a connection now;
    /// those that do not are added to `skip` with the reason. When none does, the error
    /// lists why for each.
    async fn reachable_successor(
        &self,
        skip: &mut BTreeMap<u64, String>,
    ) -> Result<(u64, Member), MembershipError> {
        for id in self.successors() {
            if skip.contains_key(&id) {
                continue;
            }
            let Some(member) = self.member(id) else {
                continue;
            };
            match accepts_connections(&member.url, PROBE_TIMEOUT).await {
                Ok(()) => return Ok((id, member)),
                Err(why) => {
                    skip.insert(id, why);
                }
            }
        }
        Err(MembershipError::Unavailable(format!(
            "no other voter can be reached to take over: {}",
            skip.iter()
                .map(|(id, why)| format!("replica {id} {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        )))
    }

    /// Hands leadership to `to` within `within`.
    pub async fn transfer(&self, to: u64, within: Duration) -> Result<(), MembershipError> {
        self.move_leadership(to, within, Instant::now(), false)
            .await
            .map(|_| ())
    }

    /// Hands leadership away before this replica stops, to the best successor; but any
    /// other replica taking over ends it as well (what matters is that this one no longer
    /// leads, and a successor that stalls should not hold the shutdown). Returns the new
    /// leader, `None` if there is no other voter.
    pub async fn step_down(&self, within: Duration) -> Result<Option<u64>, MembershipError> {
        self.ensure_leader()?;
        if self.successors().is_empty() {
            return Ok(None);
        }
        let started = Instant::now();
        let (to, _) = tokio::time::timeout(within, self.reachable_successor(&mut BTreeMap::new()))
            .await
            .map_err(|_| {
                MembershipError::Unavailable(format!(
                    "no other voter accepted a connection within {within:?}"
                ))
            })??;
        self.move_leadership(to, within, started, true)
            .await
            .map(Some)
    }

    /// Moves leadership to `to` (or, with `any_other`, to whichever other replica wins)
    /// within `within` of `started` (when the caller's budget began), and returns the new
    /// leader.
    async fn move_leadership(
        &self,
        to: u64,
        within: Duration,
        started: Instant,
        any_other: bool,
    ) -> Result<u64, MembershipError> {
        self.ensure_leader()?;
        if to == self.replica.id() {
            return Ok(to);
        }
        if !self.voters().contains(&to) {
            return Err(MembershipError::NotFound(format!(
                "replica {to} is not a voter"
            )));
        }
        let member = self
            .member(to)
            .ok_or_else(|| MembershipError::NotFound(format!("replica {to} is not a member")))?;
        let turn_within = within.saturating_sub(started.elapsed());
        let Some(_paused) = self.replica.begin_handover(turn_within).await else {
            return Err(MembershipError::Unavailable(format!(
                "another leadership handover did not finish within {within:?}; retry shortly"
            )));
        };
        // The handover this one waited for may have moved leadership already.
        self.ensure_leader()?;
        tracing::info!(to, "handing leadership over");
        // A write already handed to Raft still lengthens this leader's log; were `to`
        // asked to campaign before it reached `to`, this leader would refuse it its vote
        // (less log) and, its own term gone, win the next election itself.
        if !self
            .replica
            .writes_settled(within.saturating_sub(started.elapsed()))
            .await
        {
            tracing::debug!(to, "a write was still in flight when handing over began");
        }
        let goal = Goal {
            to,
            from: self.replica.id(),
            any_other,
        };
        let left = within.saturating_sub(started.elapsed());
        let result = self.hand_over(goal, &member, left).await;
        drop(_paused);
        match &result {
            Ok(leader) if *leader == to => tracing::info!(leader, "leadership handed over"),
            // The heir first asked was replaced, or another voter won the election.
            Ok(leader) => tracing::info!(
                asked = to,
                leader,
                "leadership handed over to another voter than the one first asked"
            ),
            Err(e) => tracing::warn!(to, error = %e, "leadership transfer did not complete"),
        }
        result
    }

    async fn hand_over(
        &self,
        goal: Goal,
        member: &Member,
        within: Duration,
    ) -> Result<u64, MembershipError> {
        let deadline = Instant::now() + within;
        let mut heir = Heir {
            goal,
            member: member.clone(),
            gone: BTreeMap::new(),
            probed: Instant::now(),
        };
        // With three voters, the old leader's vote plus the target's own are a quorum.
        // With more, other followers must vote too, and they refuse while they still hear
        // from this leader: it sends them nothing (no heartbeats; reads and writes are
        // paused by the caller) until their leases have run out.
        let quorum = self.voters().len() / 2 + 1;
        let quiet = quorum > 2;
        if quiet {
            match self.wait_matched(&mut heir, deadline).await {
                Err(MembershipError::NotLeader(Some(leader)))
                    if heir.goal.reached(Some(leader)) =>
                {
                    return Ok(leader)
                }
                other => other?,
            }
            // Back on when the caller's handover guard is dropped, however this ends.
            self.replica.raft().runtime_config().heartbeat(false);
        }
        self.campaign_until_moved(heir, quiet, deadline).await
    }

    /// Waits until the heir holds this leader's whole log.
    async fn wait_matched(
        &self,
        heir: &mut Heir,
        deadline: Instant,
    ) -> Result<(), MembershipError> {
        let mut metrics = self.replica.metrics();
        loop {
            let now = metrics.borrow().clone();
            let (matched, last) = log_held_by(&now, heir.goal.to);
            if matched >= last {
                return Ok(());
            }
            if now.state != ServerState::Leader {
                return Err(MembershipError::NotLeader(now.current_leader));
            }
            if Instant::now() >= deadline {
                return Err(MembershipError::Unavailable(format!(
                    "replica {} did not catch up with the leader's log ({matched} of {last}) in time",
                    heir.goal.to
                )));
            }
            self.replace_heir_if_gone(heir).await?;
            let _ = tokio::time::timeout(Duration::from_millis(50), metrics.changed()).await;
        }
    }

    /// Asks the heir to campaign until the goal is reached (it leads, or with
    /// [`Goal::any_other`] any replica but this one does) or `deadline` passes; returns
    /// the new leader. A campaign is only worth asking for once this leader's own lease
    /// has run out (counted from its election: it votes for the heir only then) and, when
    /// `quiet`, once the followers' have too (counted from when this leader last spoke to
    /// them: its election, or when heartbeats stopped). A campaign that failed deposed
    /// this leader; if it is elected again, the wait starts over, as the new term renewed
    /// every lease. Each campaign costs the heir a term. With [`Goal::any_other`], an heir
    /// that goes away (cannot be connected to when asked, or while it catches up) is
    /// replaced by the next best voter, and when none is left this gives up at once.
    async fn campaign_until_moved(
        &self,
        mut heir: Heir,
        quiet: bool,
        deadline: Instant,
    ) -> Result<u64, MembershipError> {
        let lease = self.replica.lease() + Duration::from_millis(50);
        let silent_since = Instant::now();
        let mut metrics = self.replica.metrics();
        let mut last_campaign: Option<Instant> = None;
        loop {
            let to = heir.goal.to;
            let now = metrics.borrow().clone();
            if let Some(leader) = now.current_leader.filter(|l| heir.goal.reached(Some(*l))) {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(MembershipError::Unavailable(format!(
                    "leadership did not move to replica {to} in time (leader: {:?})",
                    now.current_leader
                )));
            }
            let leading_long_enough = self
                .replica
                .leader_for()
                .is_some_and(|leading| leading >= lease);
            let leases_out = leading_long_enough && (!quiet || silent_since.elapsed() >= lease);
            let retry_due =
                last_campaign.is_none_or(|at| at.elapsed() >= Duration::from_millis(300));
            let (matched, last) = log_held_by(&now, to);
            if matched < last {
                if self.replace_heir_if_gone(&mut heir).await? {
                    last_campaign = None;
                }
            } else if leases_out && retry_due {
                last_campaign = Some(Instant::now());
                // A target that stalls holds the request up to its timeout; another
                // replica may take over meanwhile.
                let taken_over = self.until_reached(heir.goal);
                // (The deadline ends the wait too: the loop then gives up.)
                let asked = tokio::select! {
                    asked = self.network.request_campaign(to, &heir.member) => asked,
                    () = taken_over => Ok(()),
                    () = tokio::time::sleep_until(deadline.into()) => Ok(()),
                };
                match asked {
                    Ok(()) => {}
                    Err(e @ CampaignError::NotReachable(_)) if heir.goal.any_other => {
                        // Named as the probes name theirs ("not reachable ...") in the
                        // error if none is left.
                        self.replace_heir(&mut heir, e.to_string()).await?;
                        last_campaign = None;
                    }
                    Err(e) => {
                        tracing::debug!(to, error = %e, "campaign request failed; retrying");
                    }
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), metrics.changed()).await;
        }
    }

    /// For a step-down ([`Goal::any_other`]), while the heir catches up: checks now and
    /// then that it still accepts connections, and replaces it by the next best voter if
    /// not; true if it was replaced. An heir that died after it was chosen would never
    /// catch up, and the handover would wait out its whole budget.
    async fn replace_heir_if_gone(&self, heir: &mut Heir) -> Result<bool, MembershipError> {
        if !heir.goal.any_other || heir.probed.elapsed() < HEIR_PROBE_EVERY {
            return Ok(false);
        }
        heir.probed = Instant::now();
        match accepts_connections(&heir.member.url, PROBE_TIMEOUT).await {
            Ok(()) => Ok(false),
            Err(why) => {
                self.replace_heir(heir, why).await?;
                Ok(true)
            }
        }
    }

    /// Records why the heir is gone and makes the next reachable voter the heir.
    async fn replace_heir(&self, heir: &mut Heir, why: String) -> Result<(), MembershipError> {
        let gone = heir.goal.to;
        heir.gone.insert(gone, why);
        let (next, member) = self.reachable_successor(&mut heir.gone).await?;
        tracing::info!(
            unreachable = gone,
            to = next,
            "successor not reachable; asking another voter"
        );
        heir.goal.to = next;
        heir.member = member;
        heir.probed = Instant::now();
        Ok(())
    }

    /// Resolves once the leadership [`Goal`] is reached, as this replica sees it.
    async fn until_reached(&self, goal: Goal) {
        let mut metrics = self.replica.metrics();
        while !goal.reached(metrics.borrow().current_leader) {
            if metrics.changed().await.is_err() {
                return futures::future::pending().await;
            }
        }
    }
}

/// Who a handover is moving leadership to, and the voters found gone on the way (see
/// [`Membership::replace_heir_if_gone`]).
struct Heir {
    goal: Goal,
    member: Member,
    gone: BTreeMap<u64, String>,
    /// When the heir was last found to accept connections.
    probed: Instant,
}

/// How much of this leader's log replica `to` holds, and the log's last index, as these
/// metrics say.
fn log_held_by(metrics: &openraft::RaftMetrics<u64, Member>, to: u64) -> (u64, u64) {
    let matched = metrics
        .replication
        .as_ref()
        .and_then(|r| r.get(&to).cloned().flatten())
        .map_or(0, |l| l.index);
    (matched, metrics.last_log_index.unwrap_or(0))
}

/// Where leadership should go: to `to`, or with `any_other` to any replica but `from`.
#[derive(Debug, Clone, Copy)]
struct Goal {
    to: u64,
    from: u64,
    any_other: bool,
}

impl Goal {
    fn reached(&self, leader: Option<u64>) -> bool {
        leader.is_some_and(|l| l == self.to || (self.any_other && l != self.from))
    }
}
