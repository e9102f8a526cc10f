//! From a history of requests to one history per tenant shard.
//!
//! Most requests name one shard. Two name many: a validate call (one verdict per shard it
//! asked about) and a re-attach (every shard the node holds gets a new generation). Each
//! becomes one projected operation per shard it may concern:
//! - a validate, on every shard it asked about (omitted from the answer: unknown);
//! - an acknowledged re-attach, on every shard it listed (with the generation it got),
//!   and, as "not listed", on every shard that some request ever tried to attach or
//!   migrate to that node (no other shard can have been attached to it, so on those the
//!   projection would say nothing);
//! - an indeterminate re-attach, on those same shards, as "may have incremented".
//!
//! Refused and unsent requests changed nothing and are dropped, as are reads that got no
//! answer. An indeterminate write may take effect at any time after it was called, so
//! its window has no end (`return_us: None`).

use std::collections::{BTreeMap, BTreeSet};

use pageserver_controller::domain::TenantShardId;

use super::model::Step;
use crate::history::{Answer, Op, Outcome, Request};

/// One operation as seen by one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantOp {
    /// The id of the request it came from.
    pub op: u64,
    pub call_us: u64,
    /// `None`: the operation may take effect at any time after its call.
    pub return_us: Option<u64>,
    pub step: Step,
}

/// Answers that cannot be right whatever the state (a validate answering about a shard
/// it was not asked about, a re-attach listing a shard twice), found while projecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub op: u64,
    pub shard: Option<TenantShardId>,
    pub message: String,
}

/// Per-shard histories, ordered by call time, and the malformed answers seen.
pub fn project(ops: &[Op]) -> (BTreeMap<TenantShardId, Vec<TenantOp>>, Vec<Malformed>) {
    let mut per_shard: BTreeMap<TenantShardId, Vec<TenantOp>> = BTreeMap::new();
    let mut malformed = Vec::new();
    // Shards that some request may have attached to each node.
    let mut involved: BTreeMap<u64, BTreeSet<TenantShardId>> = BTreeMap::new();
    for op in ops {
        if !matches!(
            op.outcome,
            Outcome::Ok { .. } | Outcome::Indeterminate { .. } | Outcome::Unreadable { .. }
        ) {
            continue;
        }
        match &op.request {
            Request::Attach {
                shard,
                node: Some(node),
                ..
            }
            | Request::Migrate { shard, node } => {
                involved.entry(node.0).or_default().insert(*shard);
            }
            _ => {}
        }
        // Every shard the history mentions gets a history of its own, even if nothing
        // but reads ever touched it.
        match &op.request {
            Request::Attach { shard, .. }
            | Request::Migrate { shard, .. }
            | Request::Inspect { shard } => {
                per_shard.entry(*shard).or_default();
            }
            Request::Validate { tenants } => {
                for (shard, _) in tenants {
                    per_shard.entry(*shard).or_default();
                }
            }
            Request::ReAttach { .. } => {}
        }
    }

    for op in ops {
        let answer = match &op.outcome {
            Outcome::Ok { answer } => Some(answer),
            Outcome::Indeterminate { .. } => None,
            Outcome::Unreadable { reason } => {
                malformed.push(Malformed {
                    op: op.id,
                    shard: None,
                    message: format!(
                        "{} answered what the API does not allow: {reason}",
                        op.request.name()
                    ),
                });
                None
            }
            Outcome::Refused { .. } | Outcome::NotSent { .. } => continue,
        };
        let mut push = |shard: TenantShardId, step: Step, observed: bool| {
            per_shard.entry(shard).or_default().push(TenantOp {
                op: op.id,
                call_us: op.call_us,
                return_us: observed.then_some(op.return_us),
                step,
            });
        };
        let mut malformed_answer = |shard: Option<TenantShardId>, message: String| {
            malformed.push(Malformed {
                op: op.id,
                shard,
                message,
            })
        };
        match (&op.request, answer) {
            (
                Request::Attach {
                    shard,
                    node,
                    generation_override,
                },
                answer,
            ) => {
                let observed = match answer {
                    None => None,
                    Some(Answer::Generation { generation }) => Some(*generation),
                    Some(other) => {
                        malformed_answer(Some(*shard), format!("attach answered {other:?}"));
                        continue;
                    }
                };
                let step = Step::Attach {
                    node: node.map(|n| n.0),
                    generation_override: *generation_override,
                    observed,
                };
                push(*shard, step, observed.is_some());
            }
            (Request::Migrate { shard, node }, answer) => {
                let observed = match answer {
                    None => None,
                    Some(Answer::Migrated { generation }) => Some(*generation),
                    Some(other) => {
                        malformed_answer(Some(*shard), format!("migrate answered {other:?}"));
                        continue;
                    }
                };
                let step = Step::Migrate {
                    node: node.0,
                    observed,
                };
                push(*shard, step, observed.is_some());
            }
            (Request::ReAttach { node }, None) => {
                for shard in involved.get(&node.0).into_iter().flatten() {
                    let step = Step::ReAttach {
                        node: node.0,
                        observed: None,
                    };
                    push(*shard, step, false);
                }
            }
            (Request::ReAttach { node }, Some(Answer::ReAttached { tenants })) => {
                let mut listed = BTreeMap::new();
                for (shard, generation) in tenants {
                    if listed.insert(*shard, *generation).is_some() {
                        malformed_answer(
                            Some(*shard),
                            format!("re-attach of node {node} listed shard {shard} twice"),
                        );
                    }
                }
                for (shard, generation) in &listed {
                    let step = Step::ReAttach {
                        node: node.0,
                        observed: Some(Some(*generation)),
                    };
                    push(*shard, step, true);
                }
                for shard in involved.get(&node.0).into_iter().flatten() {
                    if !listed.contains_key(shard) {
                        let step = Step::ReAttach {
                            node: node.0,
                            observed: Some(None),
                        };
                        push(*shard, step, true);
                    }
                }
            }
            (Request::Validate { .. }, None) | (Request::Inspect { .. }, None) => {}
            (Request::Validate { tenants }, Some(Answer::Validated { tenants: verdicts })) => {
                let asked: BTreeMap<TenantShardId, u32> = tenants.iter().copied().collect();
                let mut answered = BTreeMap::new();
                for (shard, valid) in verdicts {
                    if !asked.contains_key(shard) {
                        malformed_answer(
                            Some(*shard),
                            format!("validate answered about shard {shard}, which it was not asked about"),
                        );
                    } else if answered.insert(*shard, *valid).is_some() {
                        malformed_answer(
                            Some(*shard),
                            format!("validate answered twice about shard {shard}"),
                        );
                    }
                }
                for (shard, generation) in asked {
                    let step = Step::Validate {
                        generation,
                        valid: answered.get(&shard).copied(),
                    };
                    push(shard, step, true);
                }
            }
            (Request::Inspect { shard }, Some(Answer::Attachment { attachment })) => {
                let step = Step::Inspect {
                    attachment: attachment.map(|(g, n)| (g, n.0)),
                };
                push(*shard, step, true);
            }
            (request, Some(answer)) => {
                malformed_answer(None, format!("{} answered {answer:?}", request.name()))
            }
        }
    }
    for ops in per_shard.values_mut() {
        ops.sort_by_key(|o| (o.call_us, o.op));
    }
    (per_shard, malformed)
}
