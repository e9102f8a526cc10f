//! One replica: a Raft node over our storage, with the two operations the API needs.
//!
//! - [`Replica::propose_one`] commits a command through the log and returns what applying
//!   it answered. Its errors say precisely what is known: [`ProposeError::NotLeader`]
//!   means the command was never handed to Raft, so the caller may route it elsewhere;
//!   [`ProposeError::LeadershipLost`], [`ProposeError::Indeterminate`] and
//!   [`ProposeError::StoppedInFlight`] mean they may or may not commit, so nobody may
//!   retry them silently.
//!
//!   openraft answers `ForwardToLeader` both for a write it rejected before appending and
//!   for one it appended and then had to truncate when a new leader overwrote its log.
//!   The second kind is not dead: another replica may hold the same entry, win the next
//!   election and commit it. The two cannot be told apart, so both count as "fate
//!   unknown" (the chaos scenario `truncated-write-retried`, in
//!   `chaos::sim::scenario`, shows the double apply that treating them as "not
//!   applied" would cause). A write that reaches a replica which is not the leader by its
//!   own metrics is answered `NotLeader` before Raft sees it, so only a write caught by a
//!   leadership change is reported as of unknown fate.
//! - [`Replica::read`] answers from the registry only after this replica confirmed with a
//!   quorum that it is still the leader and applied everything committed before the read
//!   began (openraft's read index). A deposed leader therefore cannot answer from stale
//!   state, which is what keeps `validate` from calling a superseded generation valid.
//!   A follower's request for the read index can itself be the acknowledgement the
//!   leader needs from a quorum of three (`asker_ack`).
//!
//! Both go through `batching`: concurrent writes share log entries and concurrent reads
//! share leadership rounds, without changing any single request's answer.

mod asker_ack;
mod batching;

pub use batching::{BatchStats, MAX_BATCH};

use std::sync::Arc;
use std::time::Duration;

use controller_raft::removal::{self, Removal, Standing};
use controller_raft::timing::Timing;
use controller_raft::Member;
use controller_storage::{FlushStats, SnapshotStats};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{RaftMetrics, RaftNetworkFactory, ServerState, Vote};
use tokio::sync::watch;

use crate::consensus::{LogStore, Proposal, Raft, SharedState, StateMachine, TypeConfig};
use crate::domain::{Command, Outcome, Registry};

/// How long a replica waits on Raft before answering with an error.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// A write not committed within this is reported as indeterminate.
    pub write: Duration,
    /// A read whose leadership could not be confirmed within this fails (safe to retry).
    pub read: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            write: Duration::from_secs(5),
            read: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("this replica is not the leader (leader: {leader:?}); nothing was applied")]
    NotLeader { leader: Option<u64> },
    #[error(
        "leadership changed while the write was in flight (leader now: {leader:?}); it may or \
         may not be applied"
    )]
    LeadershipLost { leader: Option<u64> },
    #[error(
        "the write was not confirmed within {0:?}: it may or may not be applied \
         (is a quorum of replicas reachable?)"
    )]
    Indeterminate(Duration),
    #[error(
        "this leader heard from no quorum of its peers for over {0:?} while the write was in \
         flight, so it may be cut off from them; the write may or may not be applied"
    )]
    QuorumLost(Duration),
    #[error("this replica is shutting down or has stopped: {0}; nothing was applied")]
    Stopped(String),
    #[error(
        "this replica stopped while the write was in flight ({0}); it may or may not be \
         applied"
    )]
    StoppedInFlight(String),
    #[error("too many writes are queued ({0}); nothing was applied, retry later")]
    Overloaded(usize),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("this replica is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("could not confirm leadership with a quorum within {0:?}")]
    NoQuorum(Duration),
    #[error("this replica is shutting down or has stopped: {0}")]
    Stopped(String),
}

pub struct Replica {
    id: u64,
    raft: Raft,
    /// openraft's leader lease (`election_timeout_max`): a voter that heard from a leader
    /// this recently refuses to vote for anyone else.
    lease: Duration,
    /// When this replica last became leader.
    leader_since: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    state: SharedState,
    deadlines: Deadlines,
    flush_stats: Arc<FlushStats>,
    snapshot_stats: Arc<SnapshotStats>,
    batch_stats: Arc<BatchStats>,
    log: LogStore,
    writes: batching::WriteBatcher,
    handing_over: batching::HandingOver,
    /// Held by the one handover under way (see [`Replica::begin_handover`]).
    handover_turn: tokio::sync::Mutex<()>,
    /// Set once a stopping leader fell silent for good (see [`Replica::fall_silent`]);
    /// the heartbeat switch is flipped under this lock.
    silenced: std::sync::Mutex<bool>,
    reads: batching::ReadCoalescer,
    remote_read_index: Arc<std::sync::OnceLock<Arc<dyn LeaderReadIndex>>>,
    /// Whether peers reported this replica removed (see [`removal`]).
    standing: Arc<Standing>,
}

/// How a follower asks the leader for a read index (over HTTP, in the server). Without
/// one, only the leader serves reads.
pub trait LeaderReadIndex: Send + Sync + 'static {
    /// The leader's read index, after it confirmed its leadership with a quorum. `vote`
    /// is the asking replica's latest vote, which the leader may count as that replica's
    /// acknowledgement (`asker_ack`).
    fn fetch(
        &self,
        leader: u64,
        member: Member,
        vote: Option<Vote<u64>>,
    ) -> futures::future::BoxFuture<'_, Result<u64, String>>;
}

/// A handover under way on this replica (see [`Replica::begin_handover`]). Dropping it
/// resumes proposals and reads and switches heartbeats back on, which a handover among
/// more than three voters switches off while the followers' leases run out.
pub struct HandoverGuard<'a> {
    replica: &'a Replica,
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

impl Drop for HandoverGuard<'_> {
    fn drop(&mut self) {
        // Not once the replica fell silent to stop: a handover an operator asked for
        // that ends after that would keep the followers from electing a leader until
        // this process exits.
        let silenced = self
            .replica
            .silenced
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !*silenced {
            self.replica.raft.runtime_config().heartbeat(true);
        }
        drop(silenced);
        self.replica
            .handing_over
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Replica {
    /// Starts the Raft node. Storage is already open; `network` reaches the peers and
    /// reports to `standing` when they say this replica is no longer a voter.
    #[allow(clippy::too_many_arguments)]
    pub async fn start<N>(
        id: u64,
        cluster_name: &str,
        timing: &Timing,
        deadlines: Deadlines,
        network: N,
        standing: Arc<Standing>,
        log: LogStore,
        state_machine: StateMachine,
    ) -> anyhow::Result<Replica>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        let config = Arc::new(timing.config(cluster_name)?);
        let state = state_machine.shared();
        let snapshot_stats = state_machine.stats();
        let flush_stats = log.flush_stats();
        let raft = Raft::new(id, config, network, log.clone(), state_machine).await?;
        let batch_stats = Arc::new(BatchStats::default());
        let lease = Duration::from_millis(timing.election_timeout_max_ms);
        let handing_over = batching::HandingOver::default();
        let writes = batching::WriteBatcher::start(
            raft.clone(),
            deadlines.write,
            lease,
            batch_stats.clone(),
            handing_over.clone(),
        );
        let remote_read_index = Arc::new(std::sync::OnceLock::new());
        let reads = batching::ReadCoalescer::start(
            raft.clone(),
            log.clone(),
            deadlines.read,
            lease,
            batch_stats.clone(),
            remote_read_index.clone(),
            handing_over.clone(),
        );
        let leader_since = Arc::new(std::sync::Mutex::new(None));
        tokio::spawn(track_leadership(raft.metrics(), leader_since.clone()));
        tokio::spawn(removal::guard(raft.clone(), standing.clone()));
        Ok(Replica {
            id,
            raft,
            lease,
            leader_since,
            state,
            deadlines,
            flush_stats,
            snapshot_stats,
            batch_stats,
            log,
            writes,
            handing_over,
            handover_turn: tokio::sync::Mutex::new(()),
            silenced: std::sync::Mutex::new(false),
            reads,
            remote_read_index,
            standing,
        })
    }

    /// `Some` while peers report that this replica is not a voter of the membership they
    /// committed, which its own log has not reached: it was removed. It then calls no
    /// elections.
    pub fn removed(&self) -> Option<Removal> {
        self.standing.removed()
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<u64, Member>> {
        self.raft.metrics()
    }

    /// The registry as applied locally, without any leadership check. Only for figures
    /// that tolerate staleness (metrics); answers to clients go through [`Replica::read`].
    pub fn local_state(&self) -> &SharedState {
        &self.state
    }

    pub fn flush_stats(&self) -> &FlushStats {
        &self.flush_stats
    }

    pub fn snapshot_stats(&self) -> &SnapshotStats {
        &self.snapshot_stats
    }

    pub fn batch_stats(&self) -> &BatchStats {
        &self.batch_stats
    }

    pub fn log_entries(&self) -> usize {
        self.log.entry_count()
    }

    /// The leader this replica currently believes in, with its member record.
    pub fn leader(&self) -> Option<(u64, Member)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let member = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()?;
        Some((leader, member))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Commits one command, batched with concurrent ones.
    pub async fn propose_one(&self, command: Command) -> Result<Outcome, ProposeError> {
        self.writes.propose(command, self.deadlines.write).await
    }

    /// Lets this replica serve reads as a follower, asking the leader only for a read
    /// index. Set once; later calls are ignored.
    pub fn serve_follower_reads(&self, source: Arc<dyn LeaderReadIndex>) {
        let _ = self.remote_read_index.set(source);
    }

    /// Reads the registry linearizably: after applying everything committed when the read
    /// began, as confirmed by the leader with a quorum (this replica, or the leader asked
    /// for its read index when follower reads are on).
    pub async fn read<T>(&self, f: impl FnOnce(&Registry) -> T) -> Result<T, ReadError> {
        self.read_index().await?;
        let applied = self
            .state
            .read()
            .expect("state lock poisoned: a panic while applying");
        Ok(f(&applied.state))
    }

    /// A read index confirmed by the leader with a quorum after this call began, applied
    /// here before it returns. Concurrent calls share one round.
    pub async fn read_index(&self) -> Result<u64, ReadError> {
        self.reads.read_index(self.deadlines.read).await
    }

    /// On the leader, for another replica that asks with its latest vote: the read index
    /// that vote confirms by itself (`asker_ack`), else [`Replica::read_index`].
    pub async fn read_index_for(
        &self,
        asker: u64,
        vote: Option<Vote<u64>>,
    ) -> Result<u64, ReadError> {
        if let Some(vote) = vote {
            if let Some(index) = self.read_index_acked_by(asker, vote).await {
                return Ok(index);
            }
        }
        self.read_index().await
    }

    async fn read_index_acked_by(&self, asker: u64, vote: Vote<u64>) -> Option<u64> {
        if batching::handing_over(&self.handing_over) {
            return None;
        }
        let id = self.id;
        // Bounded: a core stuck on its storage would hold the asking follower's read
        // until its own timeout; openraft's round (also bounded) answers then.
        let view = tokio::time::timeout(
            self.deadlines.read,
            self.raft
                .with_raft_state(move |state| asker_ack::LeaderView {
                    id,
                    leading: state.server_state == ServerState::Leader,
                    vote: *state.vote_ref(),
                    committed: state.committed,
                    configs: state
                        .membership_state
                        .effective()
                        .membership()
                        .get_joint_config()
                        .clone(),
                }),
        )
        .await
        .ok()?
        .ok()?;
        let index = asker_ack::confirmed_index(&view, asker, &vote)?;
        self.batch_stats
            .asker_acks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(index)
    }

    /// openraft's leader lease (see the field).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How long this replica, while leader, has gone without hearing from a quorum, once
    /// that is more than twice the lease (`None` otherwise, and on a follower).
    ///
    /// openraft 0.9 keeps a leader cut off from its peers leading until it hears of a
    /// higher term; everything sent to it would wait out the deadlines and end "may or
    /// may not be applied". Past twice the lease the peers have had time to elect
    /// another leader, so writes are refused here before Raft sees them (nothing
    /// applied) and the routing layer sends callers elsewhere. Refusing is always safe;
    /// it never decides an answer.
    pub fn quorum_silence(&self) -> Option<Duration> {
        silent_leader(&self.raft.metrics().borrow(), self.lease)
    }

    /// How long this replica has been leader, if it is.
    pub fn leader_for(&self) -> Option<Duration> {
        if !self.is_leader() {
            return None;
        }
        self.leader_since
            .lock()
            .expect("leader_since lock")
            .map(|since| since.elapsed())
    }

    /// Starts handing leadership away: until the returned guard is dropped, this leader
    /// answers writes and reads "not the leader" without sending anything to its peers
    /// (whose votes for the successor would be refused by followers that just heard from
    /// this one). One handover at a time: a second waits for the first, at most `wait`,
    /// and gets `None` if it is still under way.
    ///
    /// Dropping the guard ends the pause however the handover ended, including when the
    /// future running it was dropped (its HTTP caller went away): a flag left set would
    /// have this replica refuse everything while its heartbeats, once switched back on or
    /// never off, kept any other replica from taking over.
    pub async fn begin_handover(&self, wait: Duration) -> Option<HandoverGuard<'_>> {
        let turn = tokio::time::timeout(wait, self.handover_turn.lock())
            .await
            .ok()?;
        self.handing_over
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Some(HandoverGuard {
            replica: self,
            _turn: turn,
        })
    }

    /// Stops this replica's heartbeats for the rest of its life: a leader that is stopping
    /// and could not hand over lets its followers' leases run out, so they elect another
    /// leader while it drains. No handover that ends later switches them back on.
    pub fn fall_silent(&self) {
        let mut silenced = self.silenced.lock().unwrap_or_else(|p| p.into_inner());
        *silenced = true;
        self.raft.runtime_config().heartbeat(false);
    }

    /// Waits, at most `within`, until every write handed to Raft has committed or failed.
    /// While handing over, nothing new is proposed, so the log then stops growing and a
    /// successor that holds all of it can win the votes it needs (a voter refuses a
    /// candidate with less log than its own). False if a write was still in flight.
    pub async fn writes_settled(&self, within: Duration) -> bool {
        self.writes.settled(within).await
    }

    /// Waits until this replica applied `index`, for at most `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "wait_applied")
            .await
            .is_ok()
    }

    /// Stops Raft; storage is released when the last handle drops.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

/// See [`Replica::quorum_silence`].
fn silent_leader(metrics: &RaftMetrics<u64, Member>, lease: Duration) -> Option<Duration> {
    if metrics.state != ServerState::Leader {
        return None;
    }
    let silence = Duration::from_millis(metrics.millis_since_quorum_ack?);
    (silence > 2 * lease).then_some(silence)
}

/// How often a request in flight looks at the metrics for [`until_silent`] and
/// [`leader_moved`]. Polled rather than woken by every change: the metrics change with
/// every append, and thousands of requests would wake for each.
const WATCH_POLL: Duration = Duration::from_millis(50);

/// Resolves once this leader has gone [`silent_leader`]; never on a follower.
async fn until_silent(metrics: watch::Receiver<RaftMetrics<u64, Member>>, lease: Duration) {
    while silent_leader(&metrics.borrow(), lease).is_none() {
        tokio::time::sleep(WATCH_POLL).await;
    }
}

/// Resolves `grace` after these metrics stopped naming `leader` as the leader, if they
/// still do not: a request sent to `leader` may then never be answered (it could be cut
/// off from everyone), while a deposed leader that is still reachable has had time to
/// answer "not the leader" by itself.
pub async fn leader_moved(
    metrics: watch::Receiver<RaftMetrics<u64, Member>>,
    leader: u64,
    grace: Duration,
) {
    loop {
        if metrics.borrow().current_leader != Some(leader) {
            tokio::time::sleep(grace).await;
            if metrics.borrow().current_leader != Some(leader) {
                return;
            }
        } else {
            tokio::time::sleep(WATCH_POLL).await;
        }
    }
}

/// Records when this replica becomes leader (a new term as leader counts as new).
async fn track_leadership(
    mut metrics: watch::Receiver<RaftMetrics<u64, Member>>,
    since: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
) {
    let mut leading_term = None;
    loop {
        let (state, term) = {
            let m = metrics.borrow();
            (m.state, m.current_term)
        };
        let now_leading = (state == ServerState::Leader).then_some(term);
        if now_leading != leading_term {
            *since.lock().expect("leader_since lock") =
                now_leading.map(|_| tokio::time::Instant::now());
            leading_term = now_leading;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// One log entry carrying `commands`, committed within `deadline`.
async fn propose_entry(
    raft: &Raft,
    commands: Vec<Command>,
    deadline: Duration,
    lease: Duration,
) -> Result<Vec<Outcome>, ProposeError> {
    let expected = commands.len();
    let write = tokio::time::timeout(deadline, raft.client_write(Proposal { commands }));
    // Cut off from its quorum, this leader will not learn the write's fate before the
    // deadline; saying "unknown" now lets the caller retry elsewhere sooner.
    let answer = tokio::select! {
        answer = write => answer,
        () = until_silent(raft.metrics(), lease) => {
            return Err(ProposeError::QuorumLost(2 * lease))
        }
    };
    let response = match answer {
        Err(_) => return Err(ProposeError::Indeterminate(deadline)),
        Ok(Ok(response)) => response,
        // Rejected before appending, or appended and truncated here but possibly held by
        // a replica that will commit it: see the module docs.
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            return Err(ProposeError::LeadershipLost {
                leader: forward.leader_id,
            })
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
            unreachable!("a proposal is not a membership change: {e}")
        }
        // Handed to Raft already: it may have reached other replicas, which can commit it.
        Ok(Err(RaftError::Fatal(fatal))) => {
            return Err(ProposeError::StoppedInFlight(fatal.to_string()))
        }
    };
    let outcomes = response.data.outcomes;
    assert_eq!(
        outcomes.len(),
        expected,
        "applying a proposal answers once per command"
    );
    Ok(outcomes)
}

/// One read-index round: on the leader, a quorum confirmation; on a follower, the
/// leader's read index (if follower reads are on), then waiting to apply up to it.
async fn read_index_round(
    raft: &Raft,
    remote: Option<&Arc<dyn LeaderReadIndex>>,
    vote: Option<Vote<u64>>,
    deadline: Duration,
    lease: Duration,
    stats: &BatchStats,
) -> Result<u64, ReadError> {
    let (state, leader, member, me) = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        let member = metrics
            .current_leader
            .and_then(|l| metrics.membership_config.membership().get_node(&l).cloned());
        (metrics.state, metrics.current_leader, member, metrics.id)
    };
    let (Some(remote), Some(leader), Some(member)) = (remote, leader, member) else {
        return confirm_read_index(raft, deadline).await;
    };
    // Asking itself would wait on the very round it is in (a leader that demoted itself
    // may still name itself leader): openraft's own check answers it instead.
    if state == ServerState::Leader || leader == me {
        return confirm_read_index(raft, deadline).await;
    }
    let started = tokio::time::Instant::now();
    let fetch = tokio::time::timeout(deadline, remote.fetch(leader, member, vote));
    let answer = tokio::select! {
        answer = fetch => answer,
        // The leader asked may be cut off and never answer; ask the next one.
        () = leader_moved(raft.metrics(), leader, lease) => {
            return Err(ReadError::NotLeader {
                leader: raft.metrics().borrow().current_leader,
            })
        }
    };
    let index = match answer {
        Ok(Ok(index)) => index,
        Ok(Err(e)) => {
            tracing::debug!(leader, error = %e, "no read index from the leader");
            return Err(ReadError::NotLeader {
                leader: Some(leader),
            });
        }
        Err(_) => return Err(ReadError::NoQuorum(deadline)),
    };
    let fetched = started.elapsed();
    let left = deadline.saturating_sub(fetched);
    match raft
        .wait(Some(left))
        .applied_index_at_least(Some(index), "follower read")
        .await
    {
        Ok(_) => {
            stats.follower_round(fetched, started.elapsed() - fetched);
            Ok(index)
        }
        Err(_) => Err(ReadError::NoQuorum(deadline)),
    }
}

/// Confirms leadership with a quorum and waits until the state machine caught up with the
/// read index, within `deadline`.
async fn confirm_read_index(raft: &Raft, deadline: Duration) -> Result<u64, ReadError> {
    match tokio::time::timeout(deadline, raft.ensure_linearizable()).await {
        Err(_) => Err(ReadError::NoQuorum(deadline)),
        Ok(Ok(read_log_id)) => Ok(read_log_id.map_or(0, |id| id.index)),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
            Err(ReadError::NotLeader {
                leader: forward.leader_id,
            })
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
            Err(ReadError::NoQuorum(deadline))
        }
        Ok(Err(RaftError::Fatal(fatal))) => Err(ReadError::Stopped(fatal.to_string())),
    }
}
