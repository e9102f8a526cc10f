//! The closed-loop driver: N workers, each sending its next request only when the
//! previous one answered, so the offered load adapts to the server and queueing shows up
//! as latency rather than as an ever-growing backlog. Every run is bounded by an operation
//! count and a duration, whichever comes first. A run may also be paced (a cap on the
//! total rate), for traffic that should stand beside a measurement without saturating
//! the machine, as a fleet's attaches do beside its validates.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::{Samples, Summary};

/// How long and how wide one run is.
#[derive(Debug, Clone)]
pub struct Load {
    pub concurrency: usize,
    /// Stop after this many operations (counted when they start).
    pub max_ops: u64,
    /// Stop starting operations after this long.
    pub duration: Duration,
    /// Printed with progress lines.
    pub label: String,
    /// At most this many operations per second in all (each worker starts one at most
    /// every `concurrency / rate` seconds and never catches up in a burst); `None`: as
    /// fast as the answers come.
    pub rate: Option<f64>,
}

/// One operation: given (worker, sequence number), the kind of operation it was and
/// whether it succeeded.
pub type OpFuture = Pin<Box<dyn Future<Output = (usize, Result<(), String>)> + Send>>;
pub type Op = Arc<dyn Fn(usize, u64) -> OpFuture + Send + Sync>;

/// The figures of one run: one [`Summary`] per kind of operation, in kind order.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub kinds: Vec<Summary>,
}

impl RunResult {
    pub fn total_ops(&self) -> u64 {
        self.kinds.iter().map(|k| k.ops).sum()
    }
}

/// A small, fast, seedable generator (splitmix64): the bench needs uniform choices, not
/// cryptography, and a fixed seed makes runs repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Runs `op` in a closed loop and returns per-kind figures (`kinds` kinds of operation).
pub async fn run(load: &Load, kinds: usize, op: Op) -> RunResult {
    let started = Instant::now();
    let deadline = started + load.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(load.concurrency);
    for worker in 0..load.concurrency {
        let op = op.clone();
        let issued = issued.clone();
        let completed = completed.clone();
        let max_ops = load.max_ops;
        let interval = load
            .rate
            .filter(|rate| *rate > 0.0)
            .map(|rate| Duration::from_secs_f64(load.concurrency as f64 / rate));
        // Workers spread over the interval, not all starting at once.
        let mut next_start = started
            + interval
                .unwrap_or_default()
                .mul_f64(worker as f64 / load.concurrency as f64);
        workers.push(tokio::spawn(async move {
            let mut samples = vec![Samples::default(); kinds];
            loop {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next_start.into()).await;
                    next_start = (next_start + interval).max(Instant::now());
                }
                if Instant::now() >= deadline {
                    break;
                }
                let seq = issued.fetch_add(1, Ordering::Relaxed);
                if seq >= max_ops {
                    break;
                }
                let begun = Instant::now();
                let (kind, result) = op(worker, seq).await;
                let kind = kind.min(kinds - 1);
                match result {
                    Ok(()) => samples[kind].record(begun.elapsed()),
                    Err(message) => samples[kind].record_error(message),
                }
                completed.fetch_add(1, Ordering::Relaxed);
            }
            samples
        }));
    }
    let progress = (load.duration >= Duration::from_secs(8)).then(|| {
        let completed = completed.clone();
        let label = load.label.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = completed.load(Ordering::Relaxed);
                eprintln!(
                    "  [{label}] {:>5.0} s: {done} ops, {:.0}/s over the last 5 s",
                    started.elapsed().as_secs_f64(),
                    (done - last) as f64 / 5.0
                );
                last = done;
            }
        })
    });
    let mut merged = vec![Samples::default(); kinds];
    for worker in workers {
        match worker.await {
            Ok(samples) => {
                for (into, from) in merged.iter_mut().zip(samples) {
                    into.merge(from);
                }
            }
            Err(e) => merged[0].record_error(format!("worker task failed: {e}")),
        }
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let elapsed = started.elapsed();
    RunResult {
        kinds: merged.into_iter().map(|s| s.summarize(elapsed)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_uniform_enough_and_bounded() {
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[rng.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(Rng::new(5).next_u64(), Rng::new(5).next_u64());
    }

    #[tokio::test]
    async fn a_run_stops_at_its_op_budget_and_counts_errors() {
        let load = Load {
            concurrency: 4,
            max_ops: 100,
            duration: Duration::from_secs(30),
            label: "test".into(),
            rate: None,
        };
        let op: Op = Arc::new(|_, seq| {
            Box::pin(async move {
                if seq % 10 == 0 {
                    (1, Err("every tenth fails".to_owned()))
                } else {
                    (0, Ok(()))
                }
            })
        });
        let result = run(&load, 2, op).await;
        assert_eq!(result.kinds[0].ops, 90);
        assert_eq!(result.kinds[1].errors, 10);
        assert_eq!(result.total_ops(), 90);
    }

    #[tokio::test]
    async fn a_paced_run_stays_under_its_rate() {
        let load = Load {
            concurrency: 4,
            max_ops: 100_000,
            duration: Duration::from_secs(1),
            label: "paced".into(),
            rate: Some(40.0),
        };
        let op: Op = Arc::new(|_, _| Box::pin(async { (0, Ok(())) }));
        let ops = run(&load, 1, op).await.total_ops();
        // 40 starts in the second, one more per worker at most from rounding; a busy
        // machine's late timers can only make it fewer.
        assert!((10..=44).contains(&ops), "{ops} operations at 40/s for 1 s");
    }
}
