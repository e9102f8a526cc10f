//! The safety rules, checked directly so that a violation is reported in the words of the
//! rule it breaks, with the operations that prove it.
//!
//! Each rule compares acknowledged operations ordered in real time (one returned before
//! the other was called), so it never blames a correct history: whatever order a
//! correct system applied concurrent operations in, these pairs are ordered the same way.
//! The rules are not complete on their own (the search in [`super::search`] is); they
//! exist to name what went wrong.
//!
//! Generations make the rules sharp: every acknowledged increment (an attach, or a shard
//! listed by a re-attach) answers the generation it created, so each fixes a point in
//! the shard's sequence of states, and any observation of a generation orders itself
//! against it.

use std::collections::BTreeMap;

use pageserver_controller::domain::TenantShardId;

use super::model::Step;
use super::project::TenantOp;
use super::{Rule, Violation};

/// A generation a shard was acknowledged to reach, and by which operation.
#[derive(Debug, Clone, Copy)]
struct Issued {
    op: u64,
    call_us: u64,
    return_us: u64,
    generation: u32,
}

/// Acknowledged increments of one shard: attaches and re-attach listings. (A migrate
/// answers the current generation when the shard already is on the target, so its
/// answer does not say whether it issued one.)
fn issued(ops: &[TenantOp]) -> Vec<Issued> {
    ops.iter()
        .filter_map(|o| {
            let generation = match o.step {
                Step::Attach {
                    node: Some(_),
                    observed: Some(Some(g)),
                    ..
                } => g,
                Step::ReAttach {
                    observed: Some(Some(g)),
                    ..
                } => g,
                _ => return None,
            };
            Some(Issued {
                op: o.op,
                call_us: o.call_us,
                return_us: o.return_us?,
                generation,
            })
        })
        .collect()
}

/// Answers "the highest generation acknowledged before time t" in O(log n).
struct NewestBefore {
    by_return: Vec<Issued>,
    /// Index (into `by_return`) of the highest generation among the first k+1.
    best: Vec<usize>,
}

impl NewestBefore {
    fn new(mut issued: Vec<Issued>) -> NewestBefore {
        issued.sort_by_key(|i| i.return_us);
        let mut best: Vec<usize> = Vec::with_capacity(issued.len());
        for (k, i) in issued.iter().enumerate() {
            let keep = match best.last() {
                Some(&b) if issued[b].generation >= i.generation => b,
                _ => k,
            };
            best.push(keep);
        }
        NewestBefore {
            by_return: issued,
            best,
        }
    }

    fn at(&self, t: u64) -> Option<Issued> {
        let n = self.by_return.partition_point(|i| i.return_us < t);
        Some(self.by_return[*self.best.get(n.checked_sub(1)?)?])
    }
}

/// The rules for one shard.
pub fn check_shard(shard: TenantShardId, ops: &[TenantOp], out: &mut Vec<Violation>) {
    let issued = issued(ops);
    let mut violation = |rule, ops: Vec<u64>, message: String| {
        out.push(Violation {
            rule,
            shard: Some(shard),
            ops,
            message,
        })
    };

    let mut first_issue: BTreeMap<u32, u64> = BTreeMap::new();
    for i in &issued {
        if let Some(first) = first_issue.insert(i.generation, i.op) {
            violation(
                Rule::DuplicateGeneration,
                vec![first, i.op],
                format!(
                    "generation {} was handed out twice (ops {first} and {})",
                    i.generation, i.op
                ),
            );
        }
    }

    let newest = NewestBefore::new(issued.clone());
    for i in &issued {
        if let Some(before) = newest.at(i.call_us) {
            if i.generation <= before.generation {
                violation(
                    Rule::GenerationNotIncreasing,
                    vec![before.op, i.op],
                    format!(
                        "op {} was handed generation {} after op {} had been acknowledged \
                         generation {}: a later attach must get a higher generation",
                        i.op, i.generation, before.op, before.generation
                    ),
                );
            }
        }
    }

    for o in ops {
        let Some(before) = newest.at(o.call_us) else {
            continue;
        };
        match o.step {
            Step::Validate {
                generation,
                valid: Some(true),
            } if generation < before.generation => violation(
                Rule::StaleValid,
                vec![before.op, o.op],
                format!(
                    "op {} called generation {generation} valid after op {} had been \
                     acknowledged generation {}, which supersedes it",
                    o.op, before.op, before.generation
                ),
            ),
            Step::Validate { valid: None, .. } => violation(
                Rule::LostGeneration,
                vec![before.op, o.op],
                format!(
                    "op {} did not know the shard although op {} had been acknowledged \
                     generation {} for it",
                    o.op, before.op, before.generation
                ),
            ),
            Step::Inspect {
                attachment: Some((shown, _)),
            } if shown < before.generation => violation(
                Rule::LostGeneration,
                vec![before.op, o.op],
                format!(
                    "op {} showed generation {shown} although op {} had been acknowledged \
                     generation {}: an acknowledged generation was lost",
                    o.op, before.op, before.generation
                ),
            ),
            Step::Migrate {
                observed: Some(shown),
                ..
            } if shown < before.generation => violation(
                Rule::LostGeneration,
                vec![before.op, o.op],
                format!(
                    "op {} (migrate) answered generation {shown} although op {} had been \
                     acknowledged generation {}: an acknowledged generation was lost",
                    o.op, before.op, before.generation
                ),
            ),
            _ => {}
        }
    }
}

/// Per multi-shard op: the rule it breaks if torn, the latest lower bound and the earliest
/// upper bound its shards put on its point.
type Pins = BTreeMap<u64, (Rule, Option<Bound>, Option<Bound>)>;

/// What one shard says about when a re-attach that listed it can have taken effect.
#[derive(Debug, Clone, Copy)]
struct Bound {
    shard: TenantShardId,
    op: u64,
    time_us: u64,
}

/// A re-attach applies to every shard of its node at one point of the committed history.
/// Each shard it listed with generation g pins that point between the operations on the
/// shard that saw a generation below g (it comes after their calls) and those that saw g
/// or above (it comes before their returns). If the latest such call is not before the
/// earliest such return, no single point explains the answer: the re-attach was torn
/// across states.
///
/// A validate call is answered from one state too: each shard it called valid at g pins
/// its point after the calls of operations that saw below g and before the returns of
/// those that saw above g. A shard called invalid at g pins it only once the shard had
/// certainly reached g before the call (so it was above g at the point): the point then
/// comes after the call of the first operation that may have raised it past g, and such
/// an answer is itself a sighting of a generation above g for the other operations.
pub fn check_torn(per_shard: &BTreeMap<TenantShardId, Vec<TenantOp>>, out: &mut Vec<Violation>) {
    // op id -> (the rule it breaks if torn, latest lower bound, earliest upper bound)
    let mut bounds: Pins = BTreeMap::new();
    for (shard, ops) in per_shard {
        let newest = NewestBefore::new(issued(ops));
        // Whether `o` was called after the shard had certainly reached `g`.
        let reached =
            |o: &TenantOp, g: u32| newest.at(o.call_us).is_some_and(|i| i.generation >= g);
        for r in ops {
            if let Step::Validate {
                generation,
                valid: Some(false),
            } = r.step
            {
                if let Some(raiser) =
                    first_raiser_past(ops, generation, r.op).filter(|_| reached(r, generation))
                {
                    let entry = bounds
                        .entry(r.op)
                        .or_insert((Rule::TornValidate, None, None));
                    keep_latest(&mut entry.1, Bound::call_of(*shard, raiser));
                }
                continue;
            }
            // The generation the shard had at the op's point: seen below it means
            // before, seen at `later_from` or above means after.
            let (rule, at, later_from) = match r.step {
                Step::ReAttach {
                    observed: Some(Some(listed)),
                    ..
                } => (Rule::TornReAttach, listed, listed),
                Step::Validate {
                    generation,
                    valid: Some(true),
                } => (Rule::TornValidate, generation, generation.saturating_add(1)),
                _ => continue,
            };
            let entry = bounds.entry(r.op).or_insert((rule, None, None));
            for o in ops.iter().filter(|o| o.op != r.op) {
                let Some(return_us) = o.return_us else {
                    continue;
                };
                // `exact`: the op saw `seen`; otherwise it saw `seen` or above.
                let (seen, exact) = match o.step {
                    Step::Attach {
                        node: Some(_),
                        observed: Some(Some(g)),
                        ..
                    }
                    | Step::ReAttach {
                        observed: Some(Some(g)),
                        ..
                    }
                    | Step::Migrate {
                        observed: Some(g), ..
                    }
                    | Step::Validate {
                        generation: g,
                        valid: Some(true),
                    }
                    | Step::Inspect {
                        attachment: Some((g, _)),
                    } => (g, true),
                    Step::Validate {
                        generation: g,
                        valid: Some(false),
                    } if reached(o, g) => (g.saturating_add(1), false),
                    _ => continue,
                };
                if seen < at {
                    if !exact {
                        continue;
                    }
                    keep_latest(&mut entry.1, Bound::call_of(*shard, o));
                } else if seen >= later_from {
                    let bound = Bound {
                        shard: *shard,
                        op: o.op,
                        time_us: return_us,
                    };
                    if entry.2.is_none_or(|b| b.time_us > bound.time_us) {
                        entry.2 = Some(bound);
                    }
                }
            }
        }
    }
    check_omitted(per_shard, &bounds, out);
    for (op, (rule, after, before)) in bounds {
        let (Some(after), Some(before)) = (after, before) else {
            continue;
        };
        // Within one shard the search reports it; across shards only this rule can. (Two
        // stamps of one microsecond may be in either order: not proof.)
        if after.time_us > before.time_us && after.shard != before.shard {
            let what = if rule == Rule::TornReAttach {
                "re-attach"
            } else {
                "validate"
            };
            out.push(Violation {
                rule,
                shard: None,
                ops: vec![op, after.op, before.op],
                message: format!(
                    "{what} op {op} cannot have happened at one point: on shard {} it \
                     must come after op {} was called ({} µs), on shard {} before op {} \
                     returned ({} µs)",
                    after.shard, after.op, after.time_us, before.shard, before.op, before.time_us
                ),
            });
        }
    }
}

impl Bound {
    /// The call of `op`, on `shard`.
    fn call_of(shard: TenantShardId, op: &TenantOp) -> Bound {
        Bound {
            shard,
            op: op.op,
            time_us: op.call_us,
        }
    }
}

/// Keeps in `slot` the later of it and `bound` (lower bounds: the latest one binds).
fn keep_latest(slot: &mut Option<Bound>, bound: Bound) {
    if slot.is_none_or(|b| b.time_us < bound.time_us) {
        *slot = Some(bound);
    }
}

/// Of the operations on a shard other than `except`, the one called first that may have
/// raised it past generation `g`: a write not acknowledged with `g` or below (a detach
/// and a re-attach that did not list the shard raise nothing).
fn first_raiser_past(ops: &[TenantOp], g: u32, except: u64) -> Option<&TenantOp> {
    ops.iter()
        .filter(|o| o.op != except)
        .filter(|o| match o.step {
            Step::Attach {
                node: Some(_),
                observed,
                ..
            }
            | Step::ReAttach { observed, .. } => {
                observed.is_none_or(|answer| answer.is_some_and(|seen| seen > g))
            }
            Step::Migrate { observed, .. } => observed.is_none_or(|seen| seen > g),
            _ => false,
        })
        .min_by_key(|o| o.call_us)
}

/// A time when a shard was certainly attached to a node: after an acknowledged attach or
/// migrate onto the node returned (`from_us`), and before the call of the first
/// operation that may have moved it away since (`until_us`), both exclusive.
#[derive(Debug, Clone, Copy)]
struct Held {
    op: u64,
    from_us: u64,
    until_us: u64,
}

/// The times when the shard whose operations these are was certainly on `node`.
fn held_on(ops: &[TenantOp], node: u64) -> Vec<Held> {
    // Refused requests were dropped by the projection: what is left may have moved it,
    // acknowledged or not.
    let movers: Vec<&TenantOp> = ops
        .iter()
        .filter(|o| match o.step {
            Step::Attach { node: to, .. } => to != Some(node),
            Step::Migrate { node: to, .. } => to != node,
            _ => false,
        })
        .collect();
    ops.iter()
        .filter_map(|placed| {
            let onto = match placed.step {
                Step::Attach {
                    node: Some(to),
                    observed: Some(Some(_)),
                    ..
                } => to,
                Step::Migrate {
                    node: to,
                    observed: Some(_),
                } => to,
                _ => return None,
            };
            let from_us = placed.return_us?;
            // A mover that returned before the placement was called came before it.
            let until_us = movers
                .iter()
                .filter(|m| m.return_us.is_none_or(|r| r >= placed.call_us))
                .map(|m| m.call_us)
                .min()
                .unwrap_or(u64::MAX);
            (onto == node && until_us > from_us).then_some(Held {
                op: placed.op,
                from_us,
                until_us,
            })
        })
        .collect()
}

/// An acknowledged re-attach answers from one state, so it lists every shard attached to
/// its node at its point. Each shard it left out must have been off the node then: the
/// point cannot fall where such a shard was certainly on the node. The per-shard search
/// checks each left-out shard against the re-attach's whole window; this checks them
/// together, against the window the listed shards pin it to (`pins`), so that shards
/// each off the node at some moment, but never all at one moment, are caught, and an
/// empty listing too.
fn check_omitted(
    per_shard: &BTreeMap<TenantShardId, Vec<TenantOp>>,
    pins: &Pins,
    out: &mut Vec<Violation>,
) {
    /// An acknowledged re-attach that left shards out, and when those were on its node.
    struct Omitted {
        node: u64,
        call_us: u64,
        return_us: u64,
        held: Vec<(TenantShardId, Held)>,
    }
    let mut omitted: BTreeMap<u64, Omitted> = BTreeMap::new();
    for (shard, ops) in per_shard {
        for r in ops {
            let (
                Step::ReAttach {
                    node,
                    observed: Some(None),
                },
                Some(return_us),
            ) = (r.step, r.return_us)
            else {
                continue;
            };
            let entry = omitted.entry(r.op).or_insert_with(|| Omitted {
                node,
                call_us: r.call_us,
                return_us,
                held: Vec::new(),
            });
            entry
                .held
                .extend(held_on(ops, node).into_iter().map(|h| (*shard, h)));
        }
    }
    for (op, entry) in omitted {
        let Omitted {
            node,
            call_us,
            return_us,
            mut held,
        } = entry;
        let (mut lo, mut hi) = (call_us, return_us);
        if let Some((_, after, before)) = pins.get(&op) {
            lo = lo.max(after.map_or(0, |b| b.time_us));
            hi = hi.min(before.map_or(u64::MAX, |b| b.time_us));
        }
        if lo > hi {
            continue; // torn by its listed shards alone, reported as such
        }
        // Does the union of the open intervals cover all of [lo, hi]?
        held.sort_by_key(|(_, h)| h.from_us);
        let (mut reach, mut used) = (None::<u64>, Vec::new());
        loop {
            // The next point not yet covered: lo, then the end of the covered stretch.
            let uncovered = reach.unwrap_or(lo);
            let best = held
                .iter()
                .filter(|(_, h)| h.from_us < uncovered && h.until_us > uncovered)
                .max_by_key(|(_, h)| h.until_us);
            let Some(&(shard, h)) = best else {
                break;
            };
            used.push((shard, h));
            reach = Some(h.until_us);
            if h.until_us > hi {
                let mut ops = vec![op];
                ops.extend(used.iter().map(|(_, h)| h.op));
                let shards: Vec<String> = used
                    .iter()
                    .map(|(s, h)| format!("{s} from {} to {} µs", h.from_us, h.until_us))
                    .collect();
                out.push(Violation {
                    rule: Rule::TornReAttach,
                    shard: None,
                    ops,
                    message: format!(
                        "re-attach op {op} of node {node} happened between {lo} and {hi} µs \
                         but left out shards that were on node {node} throughout: {}",
                        shards.join(", ")
                    ),
                });
                break;
            }
        }
    }
}
