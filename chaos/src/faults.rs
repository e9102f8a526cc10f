//! The faults, each named, each injected and undone by the harness.
//!
//! A fault takes a healthy cluster, breaks something a minority of replicas can suffer,
//! holds it for a while (a duration drawn from the run's seed), and undoes it. Waiting
//! for the cluster to be healthy again is the runner's job (see `crate::run`).
//!
//! | Fault | What happens |
//! | --- | --- |
//! | `kill-leader` | kill -9 the leader, restart it on its data dir |
//! | `restart-leader` | kill -9 the leader and start it again at once, its peer links cut until just before the followers could elect another: it is back, in its old term, before anyone else could lead, with reads waiting on it when the links return |
//! | `kill-follower` | kill -9 a follower, restart it |
//! | `pause-leader` | SIGSTOP the leader past the election timeout, then SIGCONT: it wakes up believing it leads |
//! | `isolate-leader` | cut the leader off from its peers (clients still reach it), then reconnect |
//! | `deaf-leader` | the leader's messages reach its peers but their answers do not reach it (it appends writes it can never commit), then it is cut off entirely and a new leader commits them |
//! | `split` | partition a minority from a majority (1 / 2, or 2 / 3), the leader on a random side |
//! | `snapshot-catch-up` | cut a follower off until the leader has purged the log it needs, reconnect, and check it installed a snapshot |
//! | `delay-peers` | delay every peer message by tens to hundreds of milliseconds |
//! | `drop-peers` | lose a share of peer messages (each loss breaks a connection) |
//! | `member-replace` | the runbook for a lost disk: remove a member, kill it; start it on its old data dir until it notices it was removed (as a careless supervisor would); kill it, wipe its data dir, start it with `--join` |
//! | `disk-loss` | kill a member and wipe its data dir, then restart it with its old flags (it must not vote as the member it was) |
//! | `rolling-restart` | SIGTERM, restart and wait for each replica in turn; in half the rolls (the seed picks) each replica is first asked to step down, as a StatefulSet's preStop hook does |
//! | `disk-full-leader`, `disk-full-follower` | fill the replica's disk until it stops; start it on the full disk (it must stop again, saying so); give the space back and start it again. Not in the default set: each replica then gets a tmpfs of its own, which needs root |

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pageserver_controller::client::Client;
use pageserver_controller::domain::{NodeId, TenantId, TenantShardId};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::history::{FaultSpan, History, Outcome, Request};
use crate::proxy::Link;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    KillLeader,
    RestartLeader,
    KillFollower,
    PauseLeader,
    IsolateLeader,
    DeafLeader,
    Split,
    SnapshotCatchUp,
    DelayPeers,
    DropPeers,
    MemberReplace,
    DiskLoss,
    RollingRestart,
    AbandonedTransfer,
    DiskFullLeader,
    DiskFullFollower,
}

impl FaultKind {
    pub const ALL: [FaultKind; 14] = [
        FaultKind::KillLeader,
        FaultKind::RestartLeader,
        FaultKind::KillFollower,
        FaultKind::PauseLeader,
        FaultKind::IsolateLeader,
        FaultKind::DeafLeader,
        FaultKind::Split,
        FaultKind::SnapshotCatchUp,
        FaultKind::DelayPeers,
        FaultKind::DropPeers,
        FaultKind::MemberReplace,
        FaultKind::DiskLoss,
        FaultKind::RollingRestart,
        FaultKind::AbandonedTransfer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::RestartLeader => "restart-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::DeafLeader => "deaf-leader",
            FaultKind::Split => "split",
            FaultKind::SnapshotCatchUp => "snapshot-catch-up",
            FaultKind::DelayPeers => "delay-peers",
            FaultKind::DropPeers => "drop-peers",
            FaultKind::MemberReplace => "member-replace",
            FaultKind::DiskLoss => "disk-loss",
            FaultKind::RollingRestart => "rolling-restart",
            FaultKind::AbandonedTransfer => "abandoned-transfer",
            FaultKind::DiskFullLeader => "disk-full-leader",
            FaultKind::DiskFullFollower => "disk-full-follower",
        }
    }

    /// The faults that need each replica's data dir on a disk of its own (and root).
    pub const DISK_FULL: [FaultKind; 2] = [FaultKind::DiskFullLeader, FaultKind::DiskFullFollower];

    pub fn needs_own_disks(self) -> bool {
        Self::DISK_FULL.contains(&self)
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How long faults last. Elections take about a second with the default timings, so a
/// fault held for one to four seconds spans at least one.
#[derive(Debug, Clone)]
pub struct Timings {
    pub hold_ms: (u64, u64),
    /// How long a member change or catch-up may take before the fault counts as stuck.
    pub patience: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            hold_ms: (800, 3_000),
            patience: Duration::from_secs(60),
        }
    }
}

/// What a fault needs: the cluster, the run's random stream, and the history (whose
/// clock the fault's span uses, and which records the filler writes of
/// `snapshot-catch-up`).
pub struct Injector<'a> {
    pub cluster: &'a mut Cluster,
    pub rng: &'a mut ChaCha8Rng,
    pub history: &'a History,
    pub timings: &'a Timings,
    /// Filler shards are numbered from here on.
    pub filler_counter: &'a mut u64,
    /// The replica a fault that hits one replica of its choice hits, instead of one drawn
    /// from the seed (named scenarios aim at a replica a previous fault hit).
    pub aim: Option<u64>,
}

impl Injector<'_> {
    fn hold(&mut self) -> Duration {
        let (min, max) = self.timings.hold_ms;
        Duration::from_millis(self.rng.gen_range(min..=max))
    }

    fn span(&self, kind: FaultKind, targets: Vec<u64>) -> FaultSpan {
        FaultSpan {
            name: kind.name().to_owned(),
            targets,
            start_us: self.history.now_us(),
            healed_us: None,
            healthy_us: None,
        }
    }

    fn now(&self) -> Option<u64> {
        Some(self.history.now_us())
    }

    fn followers(&self, leader: u64) -> Vec<u64> {
        self.cluster
            .members()
            .iter()
            .copied()
            .filter(|m| *m != leader)
            .collect()
    }

    fn pick(&mut self, among: &[u64]) -> anyhow::Result<u64> {
        if let Some(aim) = self.aim.filter(|a| self.cluster.members().contains(a)) {
            return Ok(aim);
        }
        among
            .choose(self.rng)
            .copied()
            .context("no replica to pick from")
    }

    /// Injects `kind` into a healthy cluster led by `leader`, holds it, and undoes it.
    pub async fn inject(&mut self, kind: FaultKind, leader: u64) -> anyhow::Result<FaultSpan> {
        match kind {
            FaultKind::KillLeader => self.kill(kind, leader).await,
            FaultKind::RestartLeader => {
                let mut span = self.span(kind, vec![leader]);
                let killed = Instant::now();
                self.cluster.kill(leader)?;
                self.cluster.proxy().isolate(leader);
                self.cluster.launch(leader)?;
                // The followers campaign 0.65 s at the earliest after the last heartbeat
                // (raft/src/timing.rs); reconnect before, at a time the seed picks.
                let back_at = Duration::from_millis(self.rng.gen_range(250..=500));
                tokio::time::sleep(back_at.saturating_sub(killed.elapsed())).await;
                self.cluster.proxy().heal();
                span.healed_us = self.now();
                Ok(span)
            }
            FaultKind::KillFollower => {
                let target = self.pick(&self.followers(leader))?;
                self.kill(kind, target).await
            }
            FaultKind::PauseLeader => {
                let mut span = self.span(kind, vec![leader]);
                self.cluster.pause(leader)?;
                let hold = self.hold() + Duration::from_millis(800);
                tokio::time::sleep(hold).await;
                self.cluster.resume(leader)?;
                span.healed_us = self.now();
                Ok(span)
            }
            FaultKind::IsolateLeader => {
                let mut span = self.span(kind, vec![leader]);
                self.cluster.proxy().isolate(leader);
                tokio::time::sleep(self.hold() + Duration::from_millis(800)).await;
                self.cluster.proxy().heal();
                span.healed_us = self.now();
                Ok(span)
            }
            FaultKind::DeafLeader => {
                let mut span = self.span(kind, vec![leader]);
                for follower in self.followers(leader) {
                    self.cluster.proxy().set_link(follower, leader, Link::Down);
                }
                tokio::time::sleep(self.hold() / 2).await;
                self.cluster.proxy().isolate(leader);
                tokio::time::sleep(self.hold() + Duration::from_millis(800)).await;
                self.cluster.proxy().heal();
                span.healed_us = self.now();
                Ok(span)
            }
            FaultKind::Split => self.split(kind, leader).await,
            FaultKind::SnapshotCatchUp => self.snapshot_catch_up(kind, leader).await,
            FaultKind::DelayPeers => {
                let ms = self.rng.gen_range(20..=250);
                self.degrade(
                    kind,
                    Link::Delay {
                        ms,
                        jitter_ms: ms / 2,
                    },
                )
                .await
            }
            FaultKind::DropPeers => {
                let drop_probability = self.rng.gen_range(0.02..0.25);
                self.degrade(kind, Link::Lossy { drop_probability }).await
            }
            FaultKind::MemberReplace => self.member_replace(kind, leader).await,
            FaultKind::DiskLoss => {
                let target = self.pick(&self.followers(leader))?;
                let mut span = self.span(kind, vec![target]);
                self.cluster.kill(target)?;
                self.cluster.wipe(target)?;
                tokio::time::sleep(self.hold()).await;
                self.cluster.launch(target)?;
                span.healed_us = self.now();
                Ok(span)
            }
            FaultKind::RollingRestart => self.rolling_restart(kind, leader).await,
            FaultKind::AbandonedTransfer => self.abandoned_transfer(kind, leader).await,
            FaultKind::DiskFullLeader => self.disk_full(kind, leader).await,
            FaultKind::DiskFullFollower => {
                let target = self.pick(&self.followers(leader))?;
                self.disk_full(kind, target).await
            }
        }
    }

    /// Fills `target`'s disk while traffic runs and waits for the replica to stop on its
    /// first failed write (saying why); starts it on the full disk, where it must not
    /// keep running (it refuses at start, or stops at its first write, saying why); then
    /// gives the space back and starts it again from the same data dir, which must work.
    async fn disk_full(&mut self, kind: FaultKind, target: u64) -> anyhow::Result<FaultSpan> {
        let mut span = self.span(kind, vec![target]);
        self.cluster.fill_disk(target)?;
        let stopped_twice = self.stop_twice_on_a_full_disk(target).await;
        // The space comes back whatever happened, so the run can go on or wind down.
        self.cluster.free_disk(target)?;
        stopped_twice?;
        self.cluster.launch(target)?;
        span.healed_us = self.now();
        Ok(span)
    }

    async fn stop_twice_on_a_full_disk(&mut self, target: u64) -> anyhow::Result<()> {
        self.wait_exit(target).await?;
        self.cluster.launch(target)?;
        self.wait_exit(target).await
    }

    /// Waits for `target` to exit on its own, with a log that says its disk is full.
    async fn wait_exit(&mut self, target: u64) -> anyhow::Result<()> {
        let end = Instant::now() + self.timings.patience;
        loop {
            if let Some(status) = self.cluster.reap(target) {
                let tail = self.cluster.log_tail(target, 5);
                if !tail.contains("No space left on device") && !tail.contains("is full") {
                    bail!("replica {target} exited ({status}) without saying its disk is full:\n{tail}");
                }
                tracing::info!(target, %status, "stopped on a full disk");
                return Ok(());
            }
            if Instant::now() >= end {
                bail!(
                    "replica {target} kept running on a full disk for {:?}:\n{}",
                    self.timings.patience,
                    self.cluster.log_tail(target, 10)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `abandoned-transfer`: an operator asks the leader to hand leadership to a follower
    /// that is paused, so the handover stalls, and gives up after a time drawn from the
    /// seed (an interrupted command, a client timeout). Leadership handovers pause the
    /// leader's writes; with the caller gone the leader must take writes again while the
    /// target still sleeps (bug 19: it stayed paused for good). The writes that prove it
    /// are recorded in the history.
    async fn abandoned_transfer(
        &mut self,
        kind: FaultKind,
        leader: u64,
    ) -> anyhow::Result<FaultSpan> {
        let target = self.pick(&self.followers(leader))?;
        let mut span = self.span(kind, vec![leader, target]);
        self.cluster.pause(target)?;
        let patience = Duration::from_millis(self.rng.gen_range(50..=800));
        let answer = self
            .cluster
            .client(leader, patience)
            .transfer_leader(target)
            .await;
        if let Ok(status) = &answer {
            if status.leader == Some(target) {
                self.cluster.resume(target)?;
                bail!("a transfer to paused replica {target} reported it leads: {status:?}");
            }
        }
        // A handover ends at the latest when its own budget (5 s) runs out; a leader
        // still refusing writes well after that kept the pause of an abandoned handover.
        let gave_up = Instant::now();
        let deadline = gave_up + Duration::from_secs(15);
        let writer = self.cluster.client(leader, Duration::from_secs(2));
        loop {
            if self.filler_write(&writer, leader).await {
                break;
            }
            if Instant::now() >= deadline {
                self.cluster.resume(target)?;
                bail!(
                    "no write through replica {leader} succeeded within {:?} after the caller of \
                     a transfer to paused replica {target} gave up",
                    deadline - gave_up
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(self.hold()).await;
        self.cluster.resume(target)?;
        span.healed_us = self.now();
        Ok(span)
    }

    /// Attaches the next filler shard through `client` (which reaches replica `via`),
    /// recorded in the history; `true` if it was acknowledged.
    async fn filler_write(&mut self, client: &Client, via: u64) -> bool {
        *self.filler_counter += 1;
        let request = Request::Attach {
            shard: filler_shard(*self.filler_counter),
            node: Some(NodeId(1)),
            generation_override: None,
        };
        let call = self.history.begin("filler", via, request.clone());
        let outcome = crate::traffic::execute(client, &request).await;
        let written = matches!(outcome, Outcome::Ok { .. });
        self.history.end(call, outcome);
        written
    }

    async fn kill(&mut self, kind: FaultKind, target: u64) -> anyhow::Result<FaultSpan> {
        let mut span = self.span(kind, vec![target]);
        self.cluster.kill(target)?;
        tokio::time::sleep(self.hold()).await;
        self.cluster.launch(target)?;
        span.healed_us = self.now();
        Ok(span)
    }

    async fn split(&mut self, kind: FaultKind, leader: u64) -> anyhow::Result<FaultSpan> {
        let mut members = self.cluster.members().to_vec();
        members.shuffle(self.rng);
        let minority_size = (members.len() - 1) / 2;
        // Put the leader on the side the seed picks.
        let leader_in_minority = self.rng.gen_bool(0.5);
        members.retain(|m| *m != leader);
        let (mut minority, mut majority): (Vec<u64>, Vec<u64>) = {
            let (a, b) =
                members.split_at(minority_size.saturating_sub(usize::from(leader_in_minority)));
            (a.to_vec(), b.to_vec())
        };
        if leader_in_minority {
            minority.push(leader);
        } else {
            majority.push(leader);
        }
        minority.sort_unstable();
        majority.sort_unstable();
        let mut span = self.span(kind, minority.clone());
        self.cluster
            .proxy()
            .partition(&[minority.clone(), majority.clone()]);
        tracing::info!(?minority, ?majority, "partitioned");
        tokio::time::sleep(self.hold() + Duration::from_millis(800)).await;
        self.cluster.proxy().heal();
        span.healed_us = self.now();
        Ok(span)
    }

    async fn degrade(&mut self, kind: FaultKind, link: Link) -> anyhow::Result<FaultSpan> {
        let members = self.cluster.members().to_vec();
        let mut span = self.span(kind, members.clone());
        for from in &members {
            for to in &members {
                if from != to {
                    self.cluster.proxy().set_link(*from, *to, link);
                }
            }
        }
        tracing::info!(?link, "peer links degraded");
        tokio::time::sleep(self.hold() + Duration::from_millis(1_500)).await;
        self.cluster.proxy().heal();
        span.healed_us = self.now();
        Ok(span)
    }

    /// Isolates a follower, writes until the leader purged the log past the follower's
    /// end, reconnects it, and checks it caught up from a snapshot.
    async fn snapshot_catch_up(
        &mut self,
        kind: FaultKind,
        leader: u64,
    ) -> anyhow::Result<FaultSpan> {
        let target = self.pick(&self.followers(leader))?;
        let mut span = self.span(kind, vec![target]);
        self.cluster.proxy().isolate(target);
        let end = Instant::now() + self.timings.patience;
        let behind = self
            .cluster
            .status(target)
            .await
            .and_then(|s| s.last_log_index)
            .unwrap_or(0);
        let filler = self.cluster.client(leader, Duration::from_secs(5));
        let purged = loop {
            let now_leading = self.cluster.leader().await.unwrap_or(leader);
            if let Some(purged) = self
                .cluster
                .status(now_leading)
                .await
                .and_then(|s| s.purged_index)
                .filter(|p| *p > behind)
            {
                break purged;
            }
            if Instant::now() >= end {
                self.cluster.proxy().heal();
                bail!(
                    "the leader did not purge its log past index {behind} within {:?}",
                    self.timings.patience
                );
            }
            // One write at a time: each becomes its own log entry.
            for _ in 0..20 {
                self.filler_write(&filler, leader).await;
            }
        };
        self.cluster.proxy().heal();
        span.healed_us = self.now();
        loop {
            let snapshot = self
                .cluster
                .status(target)
                .await
                .and_then(|s| s.snapshot_index);
            if snapshot.is_some_and(|s| s >= purged) {
                break;
            }
            if Instant::now() >= end {
                bail!(
                    "replica {target} did not install a snapshot covering index {purged} within {:?} (its \
                     snapshot: {snapshot:?})",
                    self.timings.patience
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(span)
    }

    async fn member_replace(&mut self, kind: FaultKind, leader: u64) -> anyhow::Result<FaultSpan> {
        let members = self.cluster.members().to_vec();
        let target = self.pick(&members)?;
        let mut span = self.span(kind, vec![target]);
        self.cluster
            .remove_member(target, self.timings.patience)
            .await?;
        self.cluster.kill(target)?;
        // A supervisor starts it again on its data dir before the operator gets to it:
        // it must notice that it was removed and stay out of the members' way.
        self.cluster.launch(target)?;
        self.wait_until_removed(target).await?;
        self.cluster.kill(target)?;
        self.cluster.wipe(target)?;
        let others: Vec<u64> = members.iter().copied().filter(|m| *m != target).collect();
        let via = if others.contains(&leader) {
            leader
        } else {
            self.pick(&others)?
        };
        self.cluster.rejoin_through(target, via);
        self.cluster.launch(target)?;
        self.cluster.expect_member(target);
        span.healed_us = self.now();
        Ok(span)
    }

    /// Waits until removed replica `id` knows it is out: peers reported its removal (its
    /// log lacks the entry), or the last membership its log holds leaves it out.
    async fn wait_until_removed(&self, id: u64) -> anyhow::Result<()> {
        let end = Instant::now() + self.timings.patience;
        loop {
            let status = self.cluster.status(id).await;
            let out = status.as_ref().is_some_and(|s| {
                s.removed.is_some() || !s.members.iter().any(|m| m.id == id && m.role == "voter")
            });
            if out {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!(
                    "removed replica {id}, started again on its data dir, did not notice its \
                     removal within {:?} (its view: {status:?}):\n{}",
                    self.timings.patience,
                    self.cluster.log_tail(id, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn rolling_restart(&mut self, kind: FaultKind, leader: u64) -> anyhow::Result<FaultSpan> {
        // Followers first, the leader last, as an operator would.
        let mut order = self.followers(leader);
        order.shuffle(self.rng);
        order.push(leader);
        let mut span = self.span(kind, order.clone());
        let pre_stop = self.rng.gen_bool(0.5);
        for id in order {
            if pre_stop {
                self.step_down(id).await?;
            }
            let clean = self.cluster.stop(id, Duration::from_secs(30)).await?;
            if !clean {
                bail!(
                    "replica {id} did not exit cleanly on SIGTERM:\n{}",
                    self.cluster.log_tail(id, 20)
                );
            }
            self.cluster.launch(id)?;
            self.cluster.wait_healthy(self.timings.patience).await?;
        }
        span.healed_us = self.now();
        Ok(span)
    }

    /// What a StatefulSet's preStop hook does before SIGTERM (`cluster step-down`). A
    /// step-down that fails leaves the handover to SIGTERM, as in a pod; one that says it
    /// succeeded while the replica still leads is a bug.
    async fn step_down(&mut self, id: u64) -> anyhow::Result<()> {
        match self
            .cluster
            .client(id, Duration::from_secs(10))
            .step_down()
            .await
        {
            Ok(answer) if answer.was_leader && answer.leader == Some(id) => {
                if self.cluster.members().len() > 1 {
                    bail!("replica {id} answered its step-down but still leads: {answer:?}");
                }
            }
            Ok(answer) => tracing::info!(
                id,
                was_leader = answer.was_leader,
                leader = ?answer.leader,
                "asked to step down before SIGTERM"
            ),
            Err(e) => tracing::warn!(id, error = %e,
                "step-down before SIGTERM failed; SIGTERM hands leadership over instead"),
        }
        Ok(())
    }
}

/// Shards written by `snapshot-catch-up` to push the log forward: a few, reused, so
/// that the final reads stay few however many such faults a run injects.
fn filler_shard(n: u64) -> TenantShardId {
    let mut bytes = [0u8; 16];
    bytes[0] = 0xf1;
    bytes[8..].copy_from_slice(&(n % 32).to_be_bytes());
    TenantShardId::unsharded(TenantId::from_bytes(bytes))
}
