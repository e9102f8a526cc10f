//! Nodes and tenant shards come into existence and, in these histories, never leave: a
//! re-attach registers its pageserver, an attach creates its shard, and the traffic
//! deletes neither. That makes two checks cheap and sound (they never blame a correct
//! history; they are not complete) without the search:
//! an acknowledged migrate needs a node that could have been registered by then, and a
//! refusal needs a state that could have refused. The per-shard search cannot see either,
//! because it leaves refused requests out and knows nothing of nodes.

use std::collections::BTreeMap;

use pageserver_controller::domain::TenantShardId;

use super::{Rule, Violation};
use crate::history::{Answer, Op, Outcome, Request};

/// Both checks.
pub fn check(ops: &[Op], out: &mut Vec<Violation>) {
    check_registration(ops, out);
    check_refusals(ops, out);
}

/// A migrate is refused (404) unless its target node is registered, and nodes register
/// only by re-attaching (the history's re-attaches carry their registration, which a
/// re-attach refused as exhausted keeps). So a migrate acknowledged onto node N needs a
/// re-attach of N that may have taken effect before the migrate returned: one
/// acknowledged, refused with 409, or of unknown outcome, called before then.
fn check_registration(ops: &[Op], out: &mut Vec<Violation>) {
    // The earliest call of a re-attach of each node that may have been applied.
    let mut registered_from: BTreeMap<u64, u64> = BTreeMap::new();
    for op in ops {
        if let (
            Request::ReAttach { node },
            Outcome::Ok { .. }
            | Outcome::Refused { status: 409, .. }
            | Outcome::Indeterminate { .. }
            | Outcome::Unreadable { .. },
        ) = (&op.request, &op.outcome)
        {
            let first = registered_from.entry(node.0).or_insert(op.call_us);
            *first = (*first).min(op.call_us);
        }
    }
    for op in ops {
        let (Request::Migrate { shard, node }, Outcome::Ok { .. }) = (&op.request, &op.outcome)
        else {
            continue;
        };
        if registered_from
            .get(&node.0)
            .is_none_or(|&call| call >= op.return_us)
        {
            out.push(Violation {
                rule: Rule::UnregisteredNode,
                shard: Some(*shard),
                ops: vec![op.id],
                message: format!(
                    "migrate to node {} acknowledged, but no re-attach of that node (which \
                     registers it) was called before the migrate returned",
                    node.0
                ),
            });
        }
    }
}

/// The first acknowledged operation that proves something exists: (its return, its id).
#[derive(Debug, Clone, Copy)]
struct Proof {
    return_us: u64,
    op: u64,
}

fn note<K: Ord>(map: &mut BTreeMap<K, Proof>, key: K, op: &Op) {
    let proof = Proof {
        return_us: op.return_us,
        op: op.id,
    };
    let first = map.entry(key).or_insert(proof);
    if proof.return_us < first.return_us {
        *first = proof;
    }
}

/// A refusal (4xx) says the server changed nothing because the state did not allow the
/// request. The harness sends only well-formed, authorized requests to nodes and shards
/// it names itself, so the registry's refusals are the only ones a correct server gives,
/// each only where some state at the request's time explains it:
/// - 404 to a migrate, whose node or shard may not exist yet; wrong once an acknowledged
///   re-attach had registered the node and an acknowledged operation had shown the
///   shard before the migrate was called (neither is ever removed);
/// - 409, a generation exhausted, which needs a generation within reach of `u32::MAX`:
///   wrong when no override in the history comes within its number of writes of it (a
///   re-attach's node always registers with the same addresses, so no node conflict);
/// - nothing else: any other refusal is a wrong answer. (A replica configured to refuse
///   what the harness sends, such as a validate bound below its largest validate,
///   fails this on purpose.)
///
/// Sound, not complete: a refusal that only the search could prove wrong (the node's
/// one registering re-attach is of unknown outcome, but a later answer needs it) passes.
fn check_refusals(ops: &[Op], out: &mut Vec<Violation>) {
    let mut nodes: BTreeMap<u64, Proof> = BTreeMap::new();
    let mut shards: BTreeMap<TenantShardId, Proof> = BTreeMap::new();
    let mut writes = 0u64;
    let mut highest_override = 0u64;
    for op in ops {
        if op.request.is_write() {
            writes += 1;
        }
        // A re-attach refused as exhausted has registered its node all the same.
        if let (Request::ReAttach { node }, Outcome::Refused { status: 409, .. }) =
            (&op.request, &op.outcome)
        {
            note(&mut nodes, node.0, op);
        }
        if let Request::Attach {
            generation_override: Some(g),
            ..
        } = op.request
        {
            highest_override = highest_override.max(u64::from(g));
        }
        let Outcome::Ok { answer } = &op.outcome else {
            continue;
        };
        match (&op.request, answer) {
            (Request::ReAttach { node }, Answer::ReAttached { tenants }) => {
                note(&mut nodes, node.0, op);
                for (shard, _) in tenants {
                    note(&mut shards, *shard, op);
                }
            }
            // A detach creates its shard only with an override (and proves nothing
            // without one); an attach answers a generation only for a shard it holds.
            (
                Request::Attach {
                    shard,
                    node: None,
                    generation_override: Some(_),
                },
                Answer::Generation { .. },
            )
            | (
                Request::Attach { shard, .. },
                Answer::Generation {
                    generation: Some(_),
                },
            )
            | (Request::Migrate { shard, .. }, Answer::Migrated { .. })
            | (
                Request::Inspect { shard },
                Answer::Attachment {
                    attachment: Some(_),
                },
            ) => note(&mut shards, *shard, op),
            (Request::Validate { .. }, Answer::Validated { tenants }) => {
                // Unknown shards are left out of the answer: those in it are known.
                for (shard, _) in tenants {
                    note(&mut shards, *shard, op);
                }
            }
            _ => {}
        }
    }
    let exhaustible = highest_override + writes >= u64::from(u32::MAX);
    let before =
        |proof: Option<&Proof>, call_us: u64| proof.filter(|p| p.return_us < call_us).copied();

    for op in ops {
        let Outcome::Refused { status, msg } = &op.outcome else {
            continue;
        };
        let why = match (status, &op.request) {
            (409, _) if exhaustible => continue,
            (409, _) => format!(
                "no generation can have been exhausted: the highest override is \
                 {highest_override} and the history has {writes} writes"
            ),
            (404, Request::Migrate { shard, node }) => {
                let (Some(node_proof), Some(shard_proof)) = (
                    before(nodes.get(&node.0), op.call_us),
                    before(shards.get(shard), op.call_us),
                ) else {
                    continue;
                };
                format!(
                    "node {} was registered (op {}) and the shard known (op {}) before it \
                     was called",
                    node.0, node_proof.op, shard_proof.op
                )
            }
            _ => format!(
                "a {} is never refused with {status} to the requests the harness sends",
                op.request.name()
            ),
        };
        out.push(Violation {
            rule: Rule::WrongRefusal,
            shard: match op.request {
                Request::Attach { shard, .. }
                | Request::Migrate { shard, .. }
                | Request::Inspect { shard } => Some(shard),
                Request::ReAttach { .. } | Request::Validate { .. } => None,
            },
            ops: vec![op.id],
            message: format!(
                "op {} ({}) was refused with {status} \"{msg}\", but {why}",
                op.id,
                op.request.name()
            ),
        });
    }
}
