//! The record of what every client asked, when, of which replica, and what it learned.
//!
//! One [`Op`] per request *attempt* (a retried call leaves one per try), with call and
//! return times on one monotonic clock. The outcome says only what the caller can know:
//! an answer, a refusal (4xx: nothing changed), certainly not applied (the connection
//! was refused, or a 5xx marked "nothing applied"), or indeterminate (any other 5xx, a
//! timeout, a connection lost after sending: a write may have been applied, now or
//! later). The checker ([`crate::checker`]) reads nothing
//! else, so a history saved as JSON lines can be checked again offline
//! (`chaos check FILE`).
//!
//! Requests still in flight when the history is read count as indeterminate, so a check
//! in the middle of a run allows for their effects.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use pageserver_controller::client::ClientError;
use pageserver_controller::domain::{
    Command, Generation, NodeAddress, NodeId, Outcome as Applied, Refusal, TenantShardId,
};
use serde::{Deserialize, Serialize};

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// `attach-hook`: attach to `node`, or detach with `node: None`.
    Attach {
        shard: TenantShardId,
        node: Option<NodeId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation_override: Option<u32>,
    },
    /// `migrate`: move to a registered node.
    Migrate { shard: TenantShardId, node: NodeId },
    /// `re-attach`: a pageserver restarted.
    ReAttach { node: NodeId },
    /// `validate`: which of these generations are still current.
    Validate { tenants: Vec<(TenantShardId, u32)> },
    /// `inspect`: generation and node of one shard.
    Inspect { shard: TenantShardId },
}

impl Request {
    /// Whether the request may change the registry.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Attach { .. } | Request::Migrate { .. } | Request::ReAttach { .. }
        )
    }

    /// The registry command a write carries, as the API builds it (a re-attach registers
    /// its pageserver, see [`pageserver_address`]); `None` for reads.
    pub fn command(&self) -> Option<Command> {
        Some(match self {
            Request::Attach {
                shard,
                node,
                generation_override,
            } => Command::AttachHook {
                shard: *shard,
                node: *node,
                generation_override: generation_override.map(Generation),
            },
            Request::Migrate { shard, node } => Command::Migrate {
                shard: *shard,
                node: *node,
            },
            Request::ReAttach { node } => Command::ReAttach {
                node: *node,
                register: Some((pageserver_address(*node), None)),
            },
            Request::Validate { .. } | Request::Inspect { .. } => return None,
        })
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Attach { node: Some(_), .. } => "attach",
            Request::Attach { node: None, .. } => "detach",
            Request::Migrate { .. } => "migrate",
            Request::ReAttach { .. } => "re-attach",
            Request::Validate { .. } => "validate",
            Request::Inspect { .. } => "inspect",
        }
    }
}

/// What the server answered to a request that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// `attach-hook`: the new generation, `None` for a detach.
    Generation { generation: Option<u32> },
    /// `migrate`: the shard's generation afterwards.
    Migrated { generation: u32 },
    /// `re-attach`: every shard the node holds, with its new generation.
    ReAttached { tenants: Vec<(TenantShardId, u32)> },
    /// `validate`: one verdict per known shard (unknown shards are omitted).
    Validated { tenants: Vec<(TenantShardId, bool)> },
    /// `inspect`: (generation, node) while attached.
    Attachment { attachment: Option<(u32, NodeId)> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Ok {
        answer: Answer,
    },
    /// A 4xx: the server refused and changed nothing.
    Refused {
        status: u16,
        msg: String,
    },
    /// Nothing was applied, and there is no answer to retry on: the request never
    /// reached a server (connection refused), or a replica answered a 5xx that says it
    /// changed nothing (no leader, overloaded). The checker holds the server to that.
    NotSent {
        reason: String,
    },
    /// No usable answer: a 5xx, a timeout, a connection lost after sending.
    Indeterminate {
        reason: String,
    },
    /// A success whose answer the API does not allow (a body that does not parse, a
    /// re-attached shard without a generation, an outcome of the wrong kind). The write
    /// may have been applied, so the checker treats it as indeterminate, and reports it.
    Unreadable {
        reason: String,
    },
}

impl Outcome {
    /// What a caller knows from a client error.
    pub fn from_error(error: &ClientError) -> Outcome {
        match error {
            ClientError::Http { status, msg, .. } if (400..500).contains(status) => {
                Outcome::Refused {
                    status: *status,
                    msg: msg.clone(),
                }
            }
            ClientError::Http {
                not_applied: true, ..
            } => Outcome::NotSent {
                reason: error.to_string(),
            },
            ClientError::Transport {
                not_sent: true,
                reason,
                ..
            } => Outcome::NotSent {
                reason: reason.clone(),
            },
            ClientError::Decode { .. } => Outcome::Unreadable {
                reason: error.to_string(),
            },
            other => Outcome::Indeterminate {
                reason: other.to_string(),
            },
        }
    }

    /// What the caller of a write learns from what applying its command answered (the
    /// refusals get the statuses the API gives them).
    pub fn of_applied(applied: Applied) -> Outcome {
        let answer = match applied {
            Applied::Attached { generation } => Answer::Generation {
                generation: generation.map(|g| g.0),
            },
            Applied::Migrated { generation } => Answer::Migrated {
                generation: generation.0,
            },
            Applied::ReAttached { shards } => Answer::ReAttached {
                tenants: shards.into_iter().map(|(s, g)| (s, g.0)).collect(),
            },
            Applied::Refused(refusal) => {
                let status = match refusal {
                    Refusal::UnknownNode(_) | Refusal::UnknownShard(_) => 404,
                    _ => 409,
                };
                return Outcome::Refused {
                    status,
                    msg: refusal.to_string(),
                };
            }
            other => {
                return Outcome::Unreadable {
                    reason: format!("an answer no request of the history expects: {other:?}"),
                }
            }
        };
        Outcome::Ok { answer }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }

    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Outcome::Indeterminate { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    /// The sequential client that sent it (`pageserver-2`, `operator`, `final`, ...).
    pub client: String,
    /// The replica it was sent to.
    pub via: u64,
    /// Microseconds since the history began.
    pub call_us: u64,
    pub return_us: u64,
    pub request: Request,
    pub outcome: Outcome,
}

/// How simulated pageserver `node` registers (addresses derived from its id).
pub fn pageserver_address(node: NodeId) -> NodeAddress {
    NodeAddress {
        listen_pg_addr: format!("pageserver-{node}"),
        listen_pg_port: 6400,
        listen_http_addr: format!("pageserver-{node}"),
        listen_http_port: 9898,
    }
}

/// The highest generation acknowledged for each shard, by any answer (attach, migrate,
/// re-attach): what a final read must still find.
pub fn newest_generations(ops: &[Op]) -> BTreeMap<TenantShardId, u32> {
    let mut newest = BTreeMap::new();
    let mut raise = |shard: TenantShardId, g: u32| {
        let e = newest.entry(shard).or_insert(g);
        *e = (*e).max(g);
    };
    for op in ops {
        let Outcome::Ok { answer } = &op.outcome else {
            continue;
        };
        match (&op.request, answer) {
            (
                Request::Attach { shard, .. },
                Answer::Generation {
                    generation: Some(g),
                },
            )
            | (Request::Migrate { shard, .. }, Answer::Migrated { generation: g }) => {
                raise(*shard, *g)
            }
            (_, Answer::ReAttached { tenants }) => {
                for (shard, g) in tenants {
                    raise(*shard, *g);
                }
            }
            _ => {}
        }
    }
    newest
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

/// The shared recorder. Cheap to clone; every clone records into the same history.
#[derive(Clone)]
pub struct History {
    start: Instant,
    inner: Arc<Mutex<Inner>>,
}

/// A request in flight, from [`History::begin`] to [`History::end`].
#[must_use = "a call that is never ended stays indeterminate"]
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

    /// Microseconds since the history began: the clock of every record.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// When the history began.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("history lock")
    }

    /// Notes a request as it is sent; until [`History::end`] it counts as indeterminate.
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

    /// A read after the faults, as client `final`: sent through `via` with `send`, and
    /// again (after `pause`) until answered, `tries` times at most; an error if it never
    /// is, since a read never answered could hide a lost generation. Every try is
    /// recorded.
    pub async fn read_until_answered<F, Fut>(
        &self,
        via: u64,
        request: Request,
        tries: usize,
        pause: std::time::Duration,
        send: F,
    ) -> anyhow::Result<()>
    where
        F: Fn(Request) -> Fut,
        Fut: std::future::Future<Output = Outcome>,
    {
        for _ in 0..tries {
            let call = self.begin("final", via, request.clone());
            let outcome = send(request.clone()).await;
            let answered = outcome.is_ok();
            self.end(call, outcome);
            if answered {
                return Ok(());
            }
            tokio::time::sleep(pause).await;
        }
        anyhow::bail!(
            "replica {via} did not answer a final {} in {tries} tries",
            request.name()
        )
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

    /// Number of requests answered so far.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every answered request, and every one still in flight as indeterminate, by id.
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
                reason: "still in flight".into(),
            },
        }));
        ops.sort_by_key(|op| op.id);
        ops
    }

    /// Answered requests from index `from` on (in answer order), for incremental readers.
    pub fn answered_since(&self, from: usize) -> Vec<Op> {
        let inner = self.lock();
        inner
            .ops
            .get(from..)
            .map(<[Op]>::to_vec)
            .unwrap_or_default()
    }
}

/// A fault as the harness injected it, on the history's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSpan {
    /// The fault kind, e.g. `kill-leader`.
    pub name: String,
    /// The replicas it hit.
    pub targets: Vec<u64>,
    /// When it was injected.
    pub start_us: u64,
    /// When the harness undid it (restarted, resumed, reconnected); `None` if never.
    pub healed_us: Option<u64>,
    /// When the cluster was healthy again afterwards; `None` if it never was.
    pub healthy_us: Option<u64>,
}

/// Writes `ops` as JSON lines.
pub fn write_jsonl(ops: &[Op], path: &Path) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads a history written by [`write_jsonl`].
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Op>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ops = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        ops.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), n + 1))?,
        );
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pageserver_controller::domain::TenantId;

    fn shard() -> TenantShardId {
        TenantShardId::unsharded(TenantId::from_bytes([7; 16]))
    }

    #[test]
    fn a_request_in_flight_counts_as_indeterminate_until_it_ends() {
        let history = History::new();
        let request = Request::Attach {
            shard: shard(),
            node: Some(NodeId(2)),
            generation_override: None,
        };
        let call = history.begin("c", 1, request.clone());
        let ops = history.ops();
        assert_eq!(ops.len(), 1);
        assert!(ops[0].outcome.is_indeterminate());
        let answer = Outcome::Ok {
            answer: Answer::Generation {
                generation: Some(3),
            },
        };
        history.end(call, answer.clone());
        let ops = history.ops();
        assert_eq!(
            (ops.len(), &ops[0].request, &ops[0].outcome),
            (1, &request, &answer)
        );
    }

    /// What a client error tells the caller: a 4xx changed nothing, a 5xx may have, and a
    /// success whose body the client could not read is no timeout.
    #[test]
    fn client_errors_map_to_what_the_caller_knows() {
        let http = |status, not_applied| ClientError::Http {
            status,
            msg: "m".into(),
            not_applied,
        };
        assert!(matches!(
            Outcome::from_error(&http(409, true)),
            Outcome::Refused { status: 409, .. }
        ));
        assert!(matches!(
            Outcome::from_error(&http(503, true)),
            Outcome::NotSent { .. }
        ));
        assert!(Outcome::from_error(&http(503, false)).is_indeterminate());
        assert!(matches!(
            Outcome::from_error(&ClientError::Decode {
                url: "u".into(),
                reason: "expected value".into()
            }),
            Outcome::Unreadable { .. }
        ));
    }

    #[test]
    fn a_history_survives_a_round_trip_through_json_lines() {
        let history = History::new();
        let requests = [
            Request::ReAttach { node: NodeId(1) },
            Request::Validate {
                tenants: vec![(shard(), 4)],
            },
            Request::Migrate {
                shard: shard(),
                node: NodeId(3),
            },
        ];
        for request in requests {
            let call = history.begin("c", 2, request);
            history.end(
                call,
                Outcome::Indeterminate {
                    reason: "503".into(),
                },
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        write_jsonl(&history.ops(), &path).unwrap();
        assert_eq!(read_jsonl(&path).unwrap(), history.ops());
    }
}
