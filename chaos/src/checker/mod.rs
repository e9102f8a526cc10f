//! Does a history prove the controller right? The checker's verdict on a history.
//!
//! Three layers, each able to fail a run:
//! 1. **Projection** ([`project`]): the history becomes one history per tenant shard;
//!    answers that are wrong whatever the state (a validate answering about a shard it
//!    was not asked about) are reported here.
//! 2. **Rules** ([`rules`]): the safety rules, checked directly between operations
//!    ordered in real time, so that a violation is named: a generation handed out twice,
//!    a generation not above one acknowledged earlier, a superseded generation called
//!    valid, an acknowledged generation lost, a re-attach whose answer no single state
//!    explains; and ([`existence`]) what nodes and shards must exist: a migrate
//!    acknowledged onto a node nobody had registered yet, a refusal no state explains.
//! 3. **Linearizability** ([`search`]): each shard's history against the generation
//!    model ([`model`]), treating writes of unknown outcome as possibly applied at any
//!    time after their call. Per shard is enough for single-shard operations
//!    (linearizability is compositional). Re-attach and validate span shards, and per
//!    shard, nothing ties their shards to one state: the rules' torn checks cover an
//!    *acknowledged* re-attach, and a validate's `valid: true` answers, that no single
//!    point between the other operations' calls and returns explains, and an
//!    acknowledged re-attach that left out shards certainly on its node throughout the
//!    window its listing allows. They miss what only the order of the spanning operation
//!    itself against another one that spans the same shards would show, and a re-attach
//!    of unknown outcome applied to some of its shards (RELIABILITY.md, "What is not
//!    covered"). The server applies each re-attach as one log entry and answers each
//!    validate from one locked state.
//!
//! A search that runs out of budget is *inconclusive*: reported, and a failure, because a
//! run whose history cannot be checked proves nothing. The traffic keeps each shard's
//! history short (see `crate::traffic`) so that this does not happen.

pub mod existence;
pub mod model;
pub mod project;
pub mod rules;
pub mod search;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use pageserver_controller::domain::TenantShardId;
use serde::Serialize;

use crate::history::Op;
use project::TenantOp;
use search::Linearizability;

/// Steps a single shard's search may take before it is declared inconclusive.
pub const DEFAULT_MAX_STEPS: u64 = 2_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// An answer that no state explains (asked about A, answered about B).
    MalformedAnswer,
    /// The same generation acknowledged to two operations.
    DuplicateGeneration,
    /// An attach acknowledged a generation not above one acknowledged before it began.
    GenerationNotIncreasing,
    /// `valid: true` for a generation an acknowledged attach had superseded.
    StaleValid,
    /// A read showed less than an acknowledged write had established.
    LostGeneration,
    /// A re-attach's answers come from more than one state.
    TornReAttach,
    /// A validate call's answers come from more than one state.
    TornValidate,
    /// No order of the shard's operations explains what their callers observed.
    NotLinearizable,
    /// A migrate acknowledged onto a node that no request could have registered yet.
    UnregisteredNode,
    /// A request refused (4xx) that no state at its time would have refused.
    WrongRefusal,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub rule: Rule,
    pub shard: Option<TenantShardId>,
    /// The operations that prove it.
    pub ops: Vec<u64>,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shard {
            Some(shard) => write!(f, "[{}] shard {shard}: {}", self.rule, self.message),
            None => write!(f, "[{}] {}", self.rule, self.message),
        }
    }
}

/// The checker's conclusion about a history.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    /// Shards whose search ran out of budget.
    pub inconclusive: Vec<TenantShardId>,
    pub shards: usize,
    /// Operations after projection onto shards.
    pub projected_ops: usize,
    /// The largest single-shard history.
    pub largest_shard_history: usize,
}

impl Verdict {
    /// No violation, and every shard decided.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.inconclusive.is_empty()
    }

    pub fn breaks(&self, rule: Rule) -> bool {
        self.violations.iter().any(|v| v.rule == rule)
    }
}

/// Checks a whole history.
pub fn check(ops: &[Op]) -> Verdict {
    check_with_budget(ops, DEFAULT_MAX_STEPS)
}

pub fn check_with_budget(ops: &[Op], max_steps: u64) -> Verdict {
    let (per_shard, malformed) = project::project(ops);
    let mut verdict = Verdict {
        shards: per_shard.len(),
        projected_ops: per_shard.values().map(Vec::len).sum(),
        largest_shard_history: per_shard.values().map(Vec::len).max().unwrap_or(0),
        ..Verdict::default()
    };
    verdict
        .violations
        .extend(malformed.into_iter().map(|m| Violation {
            rule: Rule::MalformedAnswer,
            shard: m.shard,
            ops: vec![m.op],
            message: m.message,
        }));
    for (shard, ops) in &per_shard {
        rules::check_shard(*shard, ops, &mut verdict.violations);
    }
    rules::check_torn(&per_shard, &mut verdict.violations);
    existence::check(ops, &mut verdict.violations);

    // A shard that already broke a named rule is not linearizable; searching it would
    // only spend the budget proving so (an exhaustive search of a wrong history is the
    // expensive case).
    let named: BTreeSet<TenantShardId> =
        verdict.violations.iter().filter_map(|v| v.shard).collect();
    let to_search: BTreeMap<TenantShardId, Vec<TenantOp>> = per_shard
        .iter()
        .filter(|(shard, _)| !named.contains(shard))
        .map(|(shard, ops)| (*shard, ops.clone()))
        .collect();
    for (shard, result) in search_all(&to_search, max_steps) {
        match result {
            Linearizability::Ok => {}
            Linearizability::Unknown { .. } => verdict.inconclusive.push(shard),
            Linearizability::Violated { stuck, placed } => {
                let ops = &per_shard[&shard];
                let stuck = ops.get(stuck);
                verdict.violations.push(Violation {
                    rule: Rule::NotLinearizable,
                    shard: Some(shard),
                    ops: stuck.map(|o| o.op).into_iter().collect(),
                    message: match stuck {
                        Some(o) => format!(
                            "no order of its {} operations explains every answer; at best {placed} \
                             could be ordered before op {} ({:?}) had returned unexplained",
                            ops.len(),
                            o.op,
                            o.step
                        ),
                        None => format!(
                            "no order of its {} operations explains every answer",
                            ops.len()
                        ),
                    },
                });
            }
        }
    }
    verdict.violations.sort_by(|a, b| {
        (a.shard, a.rule, &a.ops, &a.message).cmp(&(b.shard, b.rule, &b.ops, &b.message))
    });
    verdict.inconclusive.sort();
    verdict
}

/// Runs each shard's search, spread over the machine's cores.
fn search_all(
    per_shard: &BTreeMap<TenantShardId, Vec<TenantOp>>,
    max_steps: u64,
) -> Vec<(TenantShardId, Linearizability)> {
    let work: Vec<(&TenantShardId, &Vec<TenantOp>)> = per_shard.iter().collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8)
        .min(work.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(work.len()));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((shard, ops)) = work.get(i) else {
                    return;
                };
                let result = search::check(ops, max_steps);
                results
                    .lock()
                    .expect("results lock")
                    .push((**shard, result));
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(shard, _)| *shard);
    results
}
