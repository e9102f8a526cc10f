//! The record of the traffic a Docker run sends, and the generation rules checked on it.
//!
//! One record per request *attempt* (a retried call leaves one record per try), with call
//! and return times on one monotonic clock and an outcome that says only what the caller
//! knows: answered, refused (4xx: nothing changed), certainly not sent, or indeterminate
//! (a 5xx, a timeout, a dropped connection: a write may have been applied, now or later).
//! That is the shape of the chaos harness's history, so these records can be handed to
//! its linearizability checker once it is on main; until then [`check`] asserts the
//! rules that matter directly:
//! - no generation is acknowledged twice for a shard;
//! - an attach called after another was acknowledged gets a higher generation;
//! - a generation is never called valid once a newer one was acknowledged;
//! - the latest acknowledged generation is not called invalid unless another attach
//!   (acknowledged or indeterminate) could have superseded it;
//! - an inspect never shows an older generation than one acknowledged before it (so the
//!   final inspects prove that every acknowledged generation survived).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pageserver_controller::client::ClientError;
use pageserver_controller::domain::{NodeId, TenantShardId};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    Attach {
        shard: TenantShardId,
        node: NodeId,
    },
    Validate {
        shard: TenantShardId,
        generation: u32,
    },
    Inspect {
        shard: TenantShardId,
    },
}

impl Request {
    pub fn shard(&self) -> TenantShardId {
        match self {
            Request::Attach { shard, .. }
            | Request::Validate { shard, .. }
            | Request::Inspect { shard } => *shard,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    Generation { generation: u32 },
    Valid { valid: bool },
    Attachment { attachment: Option<(u32, NodeId)> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Ok { answer: Answer },
    Refused { status: u16, msg: String },
    NotSent { reason: String },
    Indeterminate { reason: String },
}

impl Outcome {
    /// What a caller knows from a client error.
    pub fn from_error(error: &ClientError) -> Outcome {
        match error {
            ClientError::Http { status, msg } if (400..500).contains(status) => Outcome::Refused {
                status: *status,
                msg: msg.clone(),
            },
            ClientError::Transport {
                not_sent: true,
                reason,
                ..
            } => Outcome::NotSent {
                reason: reason.clone(),
            },
            other => Outcome::Indeterminate {
                reason: other.to_string(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Op {
    pub id: u64,
    /// The sequential client that sent it (`pageserver-2`, `final`, ...).
    pub client: String,
    /// The replica (id) it was sent to.
    pub via: u64,
    pub call_us: u64,
    pub return_us: u64,
    pub request: Request,
    pub outcome: Outcome,
}

/// A request sent and not answered yet.
#[derive(Debug, Clone)]
struct Pending {
    client: String,
    via: u64,
    call_us: u64,
    request: Request,
}

#[derive(Default)]
struct Inner {
    ops: Vec<Op>,
    pending: BTreeMap<u64, Pending>,
    next: u64,
}

/// The shared recorder. Cheap to clone.
#[derive(Clone)]
pub struct History {
    start: Instant,
    inner: Arc<Mutex<Inner>>,
}

/// A request in flight, from [`History::begin`] to [`History::end`].
#[must_use]
pub struct Call(u64);

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            inner: Arc::default(),
        }
    }

    /// Microseconds since the history began.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("history lock")
    }

    /// Notes a request as it is sent: until [`History::end`], it shows in [`History::ops`]
    /// as indeterminate, so a check in the middle of a run allows for its effect.
    pub fn begin(&self, client: &str, via: u64, request: Request) -> Call {
        let call_us = self.now_us();
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.pending.insert(
            id,
            Pending {
                client: client.to_owned(),
                via,
                call_us,
                request,
            },
        );
        Call(id)
    }

    /// Records the outcome of a request noted by [`History::begin`].
    pub fn end(&self, call: Call, outcome: Outcome) {
        let return_us = self.now_us();
        let mut inner = self.lock();
        let pending = inner.pending.remove(&call.0).expect("each call ends once");
        inner.ops.push(Op {
            id: call.0,
            client: pending.client,
            via: pending.via,
            call_us: pending.call_us,
            return_us,
            request: pending.request,
            outcome,
        });
    }

    /// Every answered request, and every one still in flight as indeterminate.
    pub fn ops(&self) -> Vec<Op> {
        let now = self.now_us();
        let inner = self.lock();
        let mut ops = inner.ops.clone();
        ops.extend(inner.pending.iter().map(|(id, p)| Op {
            id: *id,
            client: p.client.clone(),
            via: p.via,
            call_us: p.call_us,
            return_us: now,
            request: p.request.clone(),
            outcome: Outcome::Indeterminate {
                reason: "in flight".into(),
            },
        }));
        ops.sort_by_key(|op| op.id);
        ops
    }

    /// Writes the history as JSON lines (kept when a test fails).
    pub fn write_jsonl(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for op in self.ops() {
            serde_json::to_writer(&mut out, &op)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }
}

/// An acknowledged attach.
#[derive(Debug, Clone, Copy)]
struct Ack {
    op: u64,
    call_us: u64,
    return_us: u64,
    generation: u32,
}

/// Per shard: acknowledged attaches sorted by return time, with the running maximum of
/// their generations, to answer "the newest generation acknowledged before time t".
struct AckIndex {
    by_return: Vec<Ack>,
    prefix_max: Vec<u32>,
}

impl AckIndex {
    fn new(mut acks: Vec<Ack>) -> AckIndex {
        acks.sort_by_key(|a| a.return_us);
        let mut max = 0;
        let prefix_max = acks
            .iter()
            .map(|a| {
                max = max.max(a.generation);
                max
            })
            .collect();
        AckIndex {
            by_return: acks,
            prefix_max,
        }
    }

    /// The highest generation acknowledged strictly before `t`, with the op that got it.
    fn newest_before(&self, t: u64) -> Option<(u32, u64)> {
        let n = self.by_return.partition_point(|a| a.return_us < t);
        let generation = *self.prefix_max.get(n.checked_sub(1)?)?;
        let op = self.by_return[..n]
            .iter()
            .find(|a| a.generation == generation)
            .map(|a| a.op)?;
        Some((generation, op))
    }
}

/// Checks the rules of the module docs; every violation, described, or an empty list.
pub fn check(ops: &[Op]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut per_shard: BTreeMap<TenantShardId, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        per_shard.entry(op.request.shard()).or_default().push(op);
    }
    for (shard, ops) in per_shard {
        let acks: Vec<Ack> = ops
            .iter()
            .filter_map(|op| match (&op.request, &op.outcome) {
                (
                    Request::Attach { .. },
                    Outcome::Ok {
                        answer: Answer::Generation { generation },
                    },
                ) => Some(Ack {
                    op: op.id,
                    call_us: op.call_us,
                    return_us: op.return_us,
                    generation: *generation,
                }),
                _ => None,
            })
            .collect();
        // Attaches that may have changed the shard: acknowledged, or of unknown fate.
        let writes: Vec<(&Op, Option<u32>)> = ops
            .iter()
            .filter(|op| matches!(op.request, Request::Attach { .. }))
            .filter_map(|op| match &op.outcome {
                Outcome::Ok {
                    answer: Answer::Generation { generation },
                } => Some((*op, Some(*generation))),
                Outcome::Indeterminate { .. } => Some((*op, None)),
                _ => None,
            })
            .collect();

        let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
        for ack in &acks {
            if let Some(first) = seen.insert(ack.generation, ack.op) {
                violations.push(format!(
                    "shard {shard}: generation {} acknowledged twice (ops {first} and {})",
                    ack.generation, ack.op
                ));
            }
        }
        let index = AckIndex::new(acks.clone());
        for ack in &acks {
            if let Some((before, op)) = index.newest_before(ack.call_us) {
                if ack.generation <= before {
                    violations.push(format!(
                        "shard {shard}: attach op {} got generation {} although op {op} had been \
                         acknowledged generation {before} before it was called",
                        ack.op, ack.generation
                    ));
                }
            }
        }
        for op in &ops {
            let Outcome::Ok { answer } = &op.outcome else {
                continue;
            };
            match (&op.request, answer) {
                (Request::Validate { generation, .. }, Answer::Valid { valid: true }) => {
                    if let Some((newer, by)) = index.newest_before(op.call_us) {
                        if newer > *generation {
                            violations.push(format!(
                                "shard {shard}: validate op {} called generation {generation} valid after \
                                 op {by} had been acknowledged generation {newer}",
                                op.id
                            ));
                        }
                    }
                }
                (Request::Validate { generation, .. }, Answer::Valid { valid: false }) => {
                    let issued = acks.iter().find(|a| a.generation == *generation);
                    let Some(issued) = issued else { continue };
                    let superseded = writes.iter().any(|(write, got)| {
                        write.id != issued.op
                            && write.call_us < op.return_us
                            && got.is_none_or(|g| g > *generation)
                    });
                    if !superseded {
                        violations.push(format!(
                            "shard {shard}: validate op {} called generation {generation} (acknowledged by op \
                             {}) invalid, but no other attach could have superseded it",
                            op.id, issued.op
                        ));
                    }
                }
                (Request::Inspect { .. }, Answer::Attachment { attachment }) => {
                    if let Some((newest, by)) = index.newest_before(op.call_us) {
                        let shown = attachment.map(|(generation, _)| generation);
                        if shown.is_none_or(|g| g < newest) {
                            violations.push(format!(
                                "shard {shard}: inspect op {} shows {shown:?}, but op {by} had been \
                                 acknowledged generation {newest}: an acknowledged generation was lost",
                                op.id
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use pageserver_controller::domain::TenantId;

    fn shard() -> TenantShardId {
        TenantShardId::unsharded(TenantId::from_bytes([7; 16]))
    }

    fn op(id: u64, call: u64, ret: u64, request: Request, outcome: Outcome) -> Op {
        Op {
            id,
            client: "c".into(),
            via: 1,
            call_us: call,
            return_us: ret,
            request,
            outcome,
        }
    }

    fn attach(id: u64, call: u64, ret: u64, generation: Option<u32>) -> Op {
        let outcome = match generation {
            Some(generation) => Outcome::Ok {
                answer: Answer::Generation { generation },
            },
            None => Outcome::Indeterminate {
                reason: "503".into(),
            },
        };
        let request = Request::Attach {
            shard: shard(),
            node: NodeId(1),
        };
        op(id, call, ret, request, outcome)
    }

    fn validate(id: u64, call: u64, ret: u64, generation: u32, valid: bool) -> Op {
        let request = Request::Validate {
            shard: shard(),
            generation,
        };
        op(
            id,
            call,
            ret,
            request,
            Outcome::Ok {
                answer: Answer::Valid { valid },
            },
        )
    }

    fn inspect(id: u64, call: u64, ret: u64, generation: Option<u32>) -> Op {
        let request = Request::Inspect { shard: shard() };
        let attachment = generation.map(|g| (g, NodeId(1)));
        op(
            id,
            call,
            ret,
            request,
            Outcome::Ok {
                answer: Answer::Attachment { attachment },
            },
        )
    }

    #[test]
    fn a_correct_history_passes() {
        let ops = vec![
            attach(0, 0, 10, Some(1)),
            validate(1, 11, 12, 1, true),
            attach(2, 13, 20, None),
            attach(3, 21, 30, Some(3)),
            validate(4, 31, 32, 1, false),
            validate(5, 33, 34, 3, true),
            inspect(6, 35, 36, Some(3)),
        ];
        assert_eq!(check(&ops), Vec::<String>::new());
    }

    #[test]
    fn each_broken_rule_is_reported() {
        let cases: Vec<(Vec<Op>, &str)> = vec![
            (
                vec![attach(0, 0, 10, Some(1)), attach(1, 5, 12, Some(1))],
                "acknowledged twice",
            ),
            (
                vec![attach(0, 0, 10, Some(2)), attach(1, 11, 20, Some(1))],
                "before it was called",
            ),
            (
                vec![
                    attach(0, 0, 10, Some(1)),
                    attach(1, 11, 20, Some(2)),
                    validate(2, 21, 22, 1, true),
                ],
                "valid after",
            ),
            (
                vec![attach(0, 0, 10, Some(1)), validate(1, 11, 12, 1, false)],
                "no other attach could have superseded",
            ),
            (
                vec![attach(0, 0, 10, Some(4)), inspect(1, 11, 12, Some(3))],
                "was lost",
            ),
            (
                vec![attach(0, 0, 10, Some(4)), inspect(1, 11, 12, None)],
                "was lost",
            ),
        ];
        for (ops, expected) in cases {
            let violations = check(&ops);
            assert!(
                violations.iter().any(|v| v.contains(expected)),
                "expected {expected:?} for {ops:#?}, got {violations:?}"
            );
        }
    }

    #[test]
    fn a_request_in_flight_counts_as_indeterminate_until_it_ends() {
        let history = History::new();
        let request = Request::Attach {
            shard: shard(),
            node: NodeId(2),
        };
        let call = history.begin("c", 1, request.clone());
        let ops = history.ops();
        assert_eq!(ops.len(), 1);
        assert!(matches!(ops[0].outcome, Outcome::Indeterminate { .. }));
        let answer = Outcome::Ok {
            answer: Answer::Generation { generation: 3 },
        };
        history.end(call, answer.clone());
        let ops = history.ops();
        assert_eq!(
            (ops.len(), &ops[0].request, &ops[0].outcome),
            (1, &request, &answer)
        );
    }

    #[test]
    fn concurrent_attaches_and_a_later_indeterminate_one_are_allowed() {
        let ops = vec![
            attach(0, 0, 10, Some(2)),
            attach(1, 5, 12, Some(1)),
            attach(2, 13, 14, None),
            validate(3, 15, 16, 2, false),
        ];
        assert_eq!(check(&ops), Vec::<String>::new());
    }
}
