//! Many concurrent requests, few Raft rounds.
//!
//! Writes: commands from concurrent requests queue here; whenever one of a few proposal
//! slots is free, everything queued (up to [`MAX_BATCH`]) becomes ONE log entry, so it
//! costs one append, one fsync per replica and one replication round, and each command
//! still gets exactly the outcome it would have had alone (they are applied in order).
//! While the slots are busy the queue fills, so batches grow with load and latency stays
//! near one round.
//!
//! Reads: a linearizable read needs a read index, i.e. a round of heartbeats confirming
//! leadership with a quorum (on a follower: one request to the leader for its read
//! index, then waiting to apply up to it). Reads that arrived before a round starts
//! share it; a read that arrives while a round is running waits for the next one,
//! because a round begun before the read was invoked could miss a write the reader
//! already saw acknowledged.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;

use super::{ProposeError, ReadError};
use crate::consensus::{LogStore, Raft};
use crate::domain::{Command, Outcome};

/// Most commands in one log entry (about 8 KiB of attaches): an entry stays far below
/// sled's blob threshold, though a leaf of such entries may not (the log store fsyncs
/// blob files for that reason).
pub const MAX_BATCH: usize = 256;

/// Proposals in flight at once: one committing while the next one fills.
pub const PROPOSAL_SLOTS: usize = 2;

/// While waiting for a free slot, how often to check whether the leader lost its quorum.
const SLOT_WAIT_CHECK: Duration = Duration::from_millis(100);

/// Commands waiting for a slot; beyond this, new writes are refused as overload.
pub const QUEUE_CAPACITY: usize = 16_384;

struct PendingWrite {
    command: Command,
    reply: oneshot::Sender<Result<Outcome, ProposeError>>,
}

/// Statistics for metrics: how many entries carried how many commands.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub entries: std::sync::atomic::AtomicU64,
    pub commands: std::sync::atomic::AtomicU64,
    pub read_rounds: std::sync::atomic::AtomicU64,
    pub reads: std::sync::atomic::AtomicU64,
    /// Read indexes this leader handed out on the asking follower's own acknowledgement,
    /// without a round (`super::asker_ack`).
    pub asker_acks: std::sync::atomic::AtomicU64,
    /// A follower's read rounds that got a read index from the leader and applied it,
    /// and the microseconds they spent on each phase: asking the leader, then waiting to
    /// apply what the leader had committed (which this replica learns from the leader's
    /// next message). Where a validate through a follower waits.
    pub follower_rounds: std::sync::atomic::AtomicU64,
    pub follower_fetch_micros: std::sync::atomic::AtomicU64,
    pub follower_apply_micros: std::sync::atomic::AtomicU64,
}

impl BatchStats {
    /// One more of `what`, carrying `items` (commands of an entry, reads of a round).
    fn count(what: &std::sync::atomic::AtomicU64, of: &std::sync::atomic::AtomicU64, items: usize) {
        what.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        of.fetch_add(items as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// One more follower read round, which spent `asking` on the leader's answer and
    /// `applying` on applying its read index.
    pub(super) fn follower_round(&self, asking: Duration, applying: Duration) {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.follower_rounds.fetch_add(1, relaxed);
        self.follower_fetch_micros
            .fetch_add(micros(asking), relaxed);
        self.follower_apply_micros
            .fetch_add(micros(applying), relaxed);
    }
}

/// Set while leadership is being handed away: this leader then neither proposes nor
/// confirms reads, and answers both "not the leader" (nothing applied) so the routing
/// layer sends them to the next leader. A read round would also renew every follower's
/// lease, and a follower whose lease is fresh refuses to vote for the new leader.
pub(super) type HandingOver = Arc<std::sync::atomic::AtomicBool>;

pub(super) fn handing_over(flag: &HandingOver) -> bool {
    flag.load(std::sync::atomic::Ordering::SeqCst)
}

pub(super) struct WriteBatcher {
    queue: mpsc::Sender<PendingWrite>,
    /// Batches past the [`HandingOver`] check that have not yet committed or failed.
    in_flight: Arc<watch::Sender<usize>>,
}

/// Counts one batch in flight for as long as it lives.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(counter: &Arc<watch::Sender<usize>>) -> Self {
        counter.send_modify(|n| *n += 1);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl WriteBatcher {
    /// `lease`: openraft's leader lease, see [`super::Replica::quorum_silence`].
    pub(super) fn start(
        raft: Raft,
        deadline: Duration,
        lease: Duration,
        stats: Arc<BatchStats>,
        paused: HandingOver,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let in_flight = Arc::new(watch::Sender::new(0));
        tokio::spawn(run_writes(
            raft,
            rx,
            in_flight.clone(),
            deadline,
            lease,
            stats,
            paused,
        ));
        Self { queue, in_flight }
    }

    /// Waits, at most `within`, until no batch is in flight: each one handed to Raft has
    /// committed or failed. With new proposals paused ([`HandingOver`], set before this
    /// is called) the leader's log then stops growing. False if one was still in flight.
    pub(super) async fn settled(&self, within: Duration) -> bool {
        let mut count = self.in_flight.subscribe();
        let zero = tokio::time::timeout(within, count.wait_for(|n| *n == 0)).await;
        matches!(zero, Ok(Ok(_)))
    }

    /// Proposes `command` in the next batch; answers within `deadline`.
    pub(super) async fn propose(
        &self,
        command: Command,
        deadline: Duration,
    ) -> Result<Outcome, ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(PendingWrite { command, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded(QUEUE_CAPACITY),
                mpsc::error::TrySendError::Closed(_) => {
                    ProposeError::Stopped("the proposal queue is closed".into())
                }
            })?;
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => result,
            // The batcher went away with the command: it may have been proposed.
            Ok(Err(_)) => Err(ProposeError::StoppedInFlight(
                "the proposal was dropped".into(),
            )),
            // Queued or in flight: it may still be applied.
            Err(_) => Err(ProposeError::Indeterminate(deadline)),
        }
    }
}

async fn run_writes(
    raft: Raft,
    mut rx: mpsc::Receiver<PendingWrite>,
    in_flight: Arc<watch::Sender<usize>>,
    deadline: Duration,
    lease: Duration,
    stats: Arc<BatchStats>,
    paused: HandingOver,
) {
    let slots = Arc::new(Semaphore::new(PROPOSAL_SLOTS));
    loop {
        let slot = loop {
            match tokio::time::timeout(SLOT_WAIT_CHECK, slots.clone().acquire_owned()).await {
                Ok(Ok(slot)) => break slot,
                Ok(Err(_)) => return,
                // The slots are held by proposals that have not committed. If this leader
                // lost its quorum they never will in time, and neither would what waits
                // behind them: answer that now, while it is certain nothing was applied.
                Err(_) => {
                    if super::silent_leader(&raft.metrics().borrow(), lease).is_some() {
                        while let Ok(pending) = rx.try_recv() {
                            let _ = pending
                                .reply
                                .send(Err(ProposeError::NotLeader { leader: None }));
                        }
                    }
                }
            }
        };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // A caller that gave up (timed out, disconnected) no longer needs its command;
        // leaving it out is safe because it was never proposed.
        batch.retain(|pending| !pending.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        // Counted before the check, so that a handover that set the flag after this
        // check finds the batch counted (see [`WriteBatcher::settled`]).
        let counted = InFlight::start(&in_flight);
        if handing_over(&paused) {
            for pending in batch {
                let _ = pending
                    .reply
                    .send(Err(ProposeError::NotLeader { leader: None }));
            }
            continue;
        }
        // Raft refuses a write on a replica that is not the leader with the same answer
        // it gives for a write appended and later truncated, whose fate is unknown. A
        // request routed by a view that just went stale is common after an election;
        // checking first answers it "not the leader, nothing applied", which the routing
        // layer sends on to the leader, instead of "may or may not be applied".
        if let Some(leader) = not_leading(&raft, lease) {
            for pending in batch {
                let _ = pending.reply.send(Err(ProposeError::NotLeader { leader }));
            }
            continue;
        }
        BatchStats::count(&stats.entries, &stats.commands, batch.len());
        let raft = raft.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            match super::propose_entry(&raft, commands, deadline, lease).await {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(slot);
            drop(counted);
        });
    }
}

/// `Some(the leader it knows of)` unless this replica is the leader, and `Some(None)` if
/// it leads but has not heard from a quorum for long ([`super::silent_leader`]).
fn not_leading(raft: &Raft, lease: Duration) -> Option<Option<u64>> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    if metrics.state != openraft::ServerState::Leader {
        return Some(metrics.current_leader);
    }
    super::silent_leader(&metrics, lease).map(|_| None)
}

type ReadWaiter = oneshot::Sender<Result<u64, ReadError>>;

pub(super) struct ReadCoalescer {
    queue: mpsc::UnboundedSender<ReadWaiter>,
}

impl ReadCoalescer {
    pub(super) fn start(
        raft: Raft,
        log: LogStore,
        deadline: Duration,
        lease: Duration,
        stats: Arc<BatchStats>,
        remote: Arc<std::sync::OnceLock<Arc<dyn super::LeaderReadIndex>>>,
        paused: HandingOver,
    ) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let reads = Reads {
            raft,
            log,
            deadline,
            lease,
            stats,
            remote,
            paused,
        };
        tokio::spawn(reads.run(rx));
        Self { queue }
    }

    /// A read index from a leadership round that began after this call.
    pub(super) async fn read_index(&self, deadline: Duration) -> Result<u64, ReadError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(reply)
            .map_err(|_| ReadError::Stopped("the read queue is closed".into()))?;
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ReadError::Stopped("the read was dropped".into())),
            Err(_) => Err(ReadError::NoQuorum(deadline)),
        }
    }
}

/// The loop behind [`ReadCoalescer`]: one read-index round at a time, for every read
/// that arrived before it began.
struct Reads {
    raft: Raft,
    /// Where this replica's latest vote is read, for the leader (see
    /// [`super::asker_ack`]).
    log: LogStore,
    deadline: Duration,
    lease: Duration,
    stats: Arc<BatchStats>,
    remote: Arc<std::sync::OnceLock<Arc<dyn super::LeaderReadIndex>>>,
    paused: HandingOver,
}

impl Reads {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<ReadWaiter>) {
        while let Some(first) = rx.recv().await {
            let mut waiters = vec![first];
            while let Ok(next) = rx.try_recv() {
                waiters.push(next);
            }
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                continue;
            }
            BatchStats::count(&self.stats.read_rounds, &self.stats.reads, waiters.len());
            let started = Instant::now();
            let leading = self.raft.metrics().borrow().state == openraft::ServerState::Leader;
            let result = if leading && handing_over(&self.paused) {
                Err(ReadError::NotLeader { leader: None })
            } else {
                // Read after every waiter above arrived: what the leader may count as
                // this replica's acknowledgement of it.
                let vote = self.log.written_vote();
                super::read_index_round(
                    &self.raft,
                    self.remote.get(),
                    vote,
                    self.deadline,
                    self.lease,
                    &self.stats,
                )
                .await
            };
            tracing::trace!(
                readers = waiters.len(),
                micros = started.elapsed().as_micros() as u64,
                "read round"
            );
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }
}
