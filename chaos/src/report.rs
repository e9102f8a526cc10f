//! What a run tells a person: a one-screen summary, and on failure a folder with
//! everything needed to understand it (history, faults, verdict, timeline picture, and
//! each replica's log and data dir).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::checker::Verdict;
use crate::history::{FaultSpan, Op, Outcome};
use crate::timeline;

/// Counts of operations by what their callers learned.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpCounts {
    pub ok: usize,
    pub indeterminate: usize,
    pub refused: usize,
    pub not_sent: usize,
}

impl OpCounts {
    pub fn of(ops: &[Op]) -> OpCounts {
        let mut counts = OpCounts::default();
        for op in ops {
            match op.outcome {
                Outcome::Ok { .. } => counts.ok += 1,
                // An unreadable success is a violation the checker reports; for the
                // counts it is an answer the caller could not use.
                Outcome::Indeterminate { .. } | Outcome::Unreadable { .. } => {
                    counts.indeterminate += 1
                }
                Outcome::Refused { .. } => counts.refused += 1,
                Outcome::NotSent { .. } => counts.not_sent += 1,
            }
        }
        counts
    }

    /// Certainly not applied: refused or never sent.
    pub fn failed(&self) -> usize {
        self.refused + self.not_sent
    }
}

/// Latency percentiles of successful operations of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub kind: &'static str,
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn latencies(ops: &[Op]) -> Vec<Latency> {
    let mut by_kind: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.outcome.is_ok()) {
        by_kind
            .entry(op.request.name())
            .or_default()
            .push(op.return_us.saturating_sub(op.call_us));
    }
    by_kind
        .into_iter()
        .map(|(kind, mut us)| {
            us.sort_unstable();
            let at = |q: f64| {
                let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
                Duration::from_micros(us[rank - 1])
            };
            Latency {
                kind,
                count: us.len(),
                p50: at(0.50),
                p99: at(0.99),
                max: at(1.0),
            }
        })
        .collect()
}

/// For one fault: the longest stretch without a successful write, from the fault's
/// start to the next fault's start (or, for the last fault, to when the traffic was
/// stopped), and how long the cluster took to be healthy again after the fault was
/// undone.
#[derive(Debug, Clone, Serialize)]
pub struct FaultImpact {
    pub name: String,
    pub longest_write_gap: Duration,
    pub back_to_healthy: Option<Duration>,
}

pub fn impacts(ops: &[Op], faults: &[FaultSpan], traffic_end_us: u64) -> Vec<FaultImpact> {
    let mut acked_writes: Vec<u64> = ops
        .iter()
        .filter(|o| o.request.is_write() && o.outcome.is_ok())
        .map(|o| o.return_us)
        .collect();
    acked_writes.sort_unstable();
    faults
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            let until = faults
                .get(i + 1)
                .map_or(traffic_end_us, |next| next.start_us);
            let from = acked_writes.partition_point(|t| *t < fault.start_us);
            let to = acked_writes.partition_point(|t| *t <= until);
            let mut last = fault.start_us;
            let mut gap = 0;
            for t in &acked_writes[from..to] {
                gap = gap.max(t - last);
                last = *t;
            }
            gap = gap.max(until.saturating_sub(last));
            FaultImpact {
                name: fault.name.clone(),
                longest_write_gap: Duration::from_micros(gap),
                back_to_healthy: fault
                    .healthy_us
                    .zip(fault.healed_us)
                    .map(|(healthy, healed)| Duration::from_micros(healthy.saturating_sub(healed))),
            }
        })
        .collect()
}

/// Everything the summary shows.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub replicas: u64,
    /// Replicas checked tokens on every request (and the harness sent them).
    pub auth: bool,
    /// Every listener served TLS (clients' and peers').
    pub tls: bool,
    pub elapsed: Duration,
    pub counts: OpCounts,
    pub latencies: Vec<Latency>,
    pub impacts: Vec<FaultImpact>,
    /// Problems that are not wrong answers: a fault that never healed, a replica that
    /// exited, replicas that disagree at the end.
    pub liveness: Vec<String>,
    pub verdict: Verdict,
    /// Connections between replicas through the fault proxy.
    pub peer_connections: u64,
    /// Of those, the ones the proxy could not attribute to a sending replica: they obey
    /// only cuts of their receiver (an isolated replica), not a link between two
    /// replicas, so many of them would weaken the splits. With TLS the proxy attributes
    /// through `/proc` only.
    pub unattributed_connections: u64,
    pub replay: String,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.verdict.passed() && self.liveness.is_empty()
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// The one-screen summary.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    let mut per_kind: BTreeMap<&str, Vec<&FaultImpact>> = BTreeMap::new();
    for impact in &summary.impacts {
        per_kind.entry(&impact.name).or_default().push(impact);
    }
    let _ = writeln!(
        out,
        "chaos run: seed {}, {} replicas{}, {}, {} faults",
        summary.seed,
        summary.replicas,
        match (summary.auth, summary.tls) {
            (true, true) => " with authentication and TLS",
            (true, false) => " with authentication",
            (false, true) => " with TLS",
            (false, false) => "",
        },
        secs(summary.elapsed),
        summary.impacts.len()
    );
    let c = &summary.counts;
    let _ = writeln!(
        out,
        "ops: {} ok, {} indeterminate, {} failed ({} refused, {} not sent or not applied)",
        c.ok,
        c.indeterminate,
        c.failed(),
        c.refused,
        c.not_sent
    );
    let _ = writeln!(
        out,
        "peer connections: {} through the fault proxy, {} of them not attributed to a sender",
        summary.peer_connections, summary.unattributed_connections
    );
    let v = &summary.verdict;
    let _ = writeln!(
        out,
        "checked: {} shards, {} operations after projection, largest shard history {}",
        v.shards, v.projected_ops, v.largest_shard_history
    );
    let _ = writeln!(out, "latency of successful ops:");
    for l in &summary.latencies {
        let _ = writeln!(
            out,
            "  {:<10} {:>7} ops   p50 {:>7}   p99 {:>7}   max {:>7}",
            l.kind,
            l.count,
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        );
    }
    if !per_kind.is_empty() {
        let _ = writeln!(
            out,
            "  {:<18} {:>4}   {:>24}   {:>20}",
            "fault", "n", "longest write gap max/med", "healthy again max"
        );
    }
    for (name, impacts) in &per_kind {
        let mut gaps: Vec<Duration> = impacts.iter().map(|i| i.longest_write_gap).collect();
        gaps.sort_unstable();
        let healthy = impacts.iter().filter_map(|i| i.back_to_healthy).max();
        let _ = writeln!(
            out,
            "  {:<18} {:>4}   {:>11} / {:<10}   {:>20}",
            name,
            impacts.len(),
            secs(*gaps.last().expect("one impact at least")),
            secs(gaps[gaps.len() / 2]),
            healthy.map_or("-".into(), secs)
        );
    }
    for problem in &summary.liveness {
        let _ = writeln!(out, "LIVENESS: {problem}");
    }
    for violation in v.violations.iter().take(20) {
        let _ = writeln!(out, "VIOLATION: {violation}");
    }
    if v.violations.len() > 20 {
        let _ = writeln!(out, "... and {} more violations", v.violations.len() - 20);
    }
    for shard in &v.inconclusive {
        let _ = writeln!(
            out,
            "INCONCLUSIVE: shard {shard}: the search ran out of budget"
        );
    }
    let _ = writeln!(
        out,
        "verdict: {}",
        if summary.passed() {
            "PASS: no wrong answer, every shard's history linearizable"
        } else if !v.passed() {
            "FAIL: the history breaks the generation rules"
        } else {
            "FAIL: the cluster did not recover from a fault"
        }
    );
    let _ = writeln!(out, "replay: {}", summary.replay);
    out
}

/// Writes the failure folder's files next to the replicas' logs and data dirs.
pub fn write_folder(
    folder: &Path,
    summary: &Summary,
    ops: &[Op],
    faults: &[FaultSpan],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    crate::history::write_jsonl(ops, &folder.join("history.jsonl"))?;
    std::fs::write(
        folder.join("faults.json"),
        serde_json::to_vec_pretty(faults)?,
    )?;
    std::fs::write(
        folder.join("verdict.json"),
        serde_json::to_vec_pretty(&summary.verdict)?,
    )?;
    std::fs::write(folder.join("summary.txt"), render(summary))?;
    let highlight: Vec<u64> = summary
        .verdict
        .violations
        .iter()
        .flat_map(|v| v.ops.iter().copied())
        .collect();
    let window = timeline::window_around(ops, &highlight, 5_000_000);
    let svg = timeline::render(&timeline::TimelineInput {
        ops,
        faults,
        highlight: &highlight,
        window_us: window,
        title: format!("chaos run, seed {}", summary.seed),
    });
    std::fs::write(folder.join("timeline.svg"), svg)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Answer, Request};
    use pageserver_controller::domain::{NodeId, TenantId, TenantShardId};

    fn write(id: u64, call: u64, ret: u64) -> Op {
        Op {
            id,
            client: "c".into(),
            via: 1,
            call_us: call,
            return_us: ret,
            request: Request::Attach {
                shard: TenantShardId::unsharded(TenantId::from_bytes([1; 16])),
                node: Some(NodeId(1)),
                generation_override: None,
            },
            outcome: Outcome::Ok {
                answer: Answer::Generation {
                    generation: Some(1),
                },
            },
        }
    }

    #[test]
    fn the_write_gap_after_a_fault_is_measured_until_the_next_fault() {
        let ops = [
            write(0, 0, 1_000),
            write(1, 0, 5_000_000),
            write(2, 0, 5_500_000),
        ];
        let faults = [
            FaultSpan {
                name: "kill-leader".into(),
                targets: vec![1],
                start_us: 2_000,
                healed_us: Some(3_000),
                healthy_us: Some(4_000_000),
            },
            FaultSpan {
                name: "split".into(),
                targets: vec![2],
                start_us: 6_000_000,
                healed_us: None,
                healthy_us: None,
            },
        ];
        let impacts = impacts(&ops, &faults, 7_000_000);
        assert_eq!(
            impacts[0].longest_write_gap,
            Duration::from_micros(4_998_000)
        );
        assert_eq!(
            impacts[0].back_to_healthy,
            Some(Duration::from_micros(3_997_000))
        );
        assert_eq!(
            impacts[1].longest_write_gap,
            Duration::from_micros(1_000_000)
        );
        assert_eq!(impacts[1].back_to_healthy, None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let ops: Vec<Op> = (1..=100).map(|i| write(i, 0, i * 1_000)).collect();
        let l = &latencies(&ops)[0];
        assert_eq!(
            (l.count, l.p50, l.p99, l.max),
            (
                100,
                Duration::from_millis(50),
                Duration::from_millis(99),
                Duration::from_millis(100)
            )
        );
    }
}
