//! Is one shard's history linearizable? A Wing-Gong search with Lowe's memoization, as
//! Porcupine does it.
//!
//! The history is a list of call and return events in time order. At each point the
//! operations that may be linearized next are those called before the first return
//! still pending; the search tries them one by one (applies each to the current model
//! states; an operation is placed only if the model accepts what its caller observed),
//! and when none fits it takes its last placement back and tries that one's next
//! candidate. A configuration (which operations are placed, which states are possible)
//! already explored is never explored again, which keeps the search polynomial for the
//! bounded concurrency of a real run. The order of trial does not change the verdict,
//! only how soon it comes (see `candidates`).
//!
//! Operations whose outcome is unknown have no return event (they may take effect any
//! time after their call), so they never force a backtrack; since the model lets them
//! either happen or not, the search linearizes them wherever it is convenient.
//!
//! Two such operations with the same step (say two timed-out attaches of the shard to
//! node 2) are interchangeable: in any linearization they can trade places, as neither
//! has a return to respect and the later-called one is placed after its call either way.
//! So the search only ever places them in call order, which turns the 2^k subsets of k
//! such operations into k + 1 prefixes. A fault that times out dozens of writes would
//! otherwise make the search exponential.
//!
//! Nor does it place one that would add no possible state (a re-attach of a node the
//! shard is not attached to in any of them): leaving it out explains the same answers
//! (it never happened) and keeps it for later, where it may matter, so placing it could
//! only multiply the configurations to explore. Without this, a shard retired early and
//! read again at the end of an hour's run carries hundreds of such re-attaches, each
//! placed or not in every configuration, and the search ran out of budget on histories
//! that needed one placement undone from near their start.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use rand::{Rng, SeedableRng};

use super::model::States;
use super::project::TenantOp;

/// What the search concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linearizability {
    Ok,
    /// No order of the operations explains every observation. `stuck` is an operation
    /// (index into the input) that could not be placed when the search got furthest,
    /// and `placed` how many operations it had placed then.
    Violated {
        stuck: usize,
        placed: usize,
    },
    /// The search gave up after `steps` steps.
    Unknown {
        steps: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// A doubly linked list over the events, with index `n` as the head sentinel, so that
/// linearized operations can be lifted out and put back in O(1).
struct Events {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per operation: (call event, return event if any).
    of_op: Vec<(usize, Option<usize>)>,
}

const NONE: usize = usize::MAX;

impl Events {
    fn new(ops: &[TenantOp]) -> Events {
        // (time, is_return, op): at equal times calls come first, so operations that
        // touch in time count as concurrent, the permissive reading.
        let mut timed: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            timed.push((op.call_us, false, i));
            if let Some(ret) = op.return_us {
                timed.push((ret, true, i));
            }
        }
        timed.sort_unstable();
        let n = timed.len();
        let mut of_op = vec![(NONE, None); ops.len()];
        let events: Vec<Event> = timed
            .iter()
            .enumerate()
            .map(|(at, (_, is_return, op))| {
                if *is_return {
                    of_op[*op].1 = Some(at);
                } else {
                    of_op[*op].0 = at;
                }
                Event {
                    op: *op,
                    is_call: !is_return,
                }
            })
            .collect();
        let head = n;
        let mut next = vec![NONE; n + 1];
        let mut prev = vec![NONE; n + 1];
        let mut last = head;
        for (i, prev_of_i) in prev.iter_mut().enumerate().take(n) {
            next[last] = i;
            *prev_of_i = last;
            last = i;
        }
        Events {
            events,
            next,
            prev,
            of_op,
        }
    }

    fn head(&self) -> usize {
        self.events.len()
    }

    fn first(&self) -> usize {
        self.next[self.head()]
    }

    fn unlink(&mut self, at: usize) {
        let (p, n) = (self.prev[at], self.next[at]);
        self.next[p] = n;
        if n != NONE {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, at: usize) {
        let (p, n) = (self.prev[at], self.next[at]);
        self.next[p] = at;
        if n != NONE {
            self.prev[n] = at;
        }
    }

    /// Takes an operation's events out of the list.
    fn lift(&mut self, op: usize) {
        let (call, ret) = self.of_op[op];
        self.unlink(call);
        if let Some(ret) = ret {
            self.unlink(ret);
        }
    }

    /// Puts back the events of the operation lifted last.
    fn unlift(&mut self, op: usize) {
        let (call, ret) = self.of_op[op];
        if let Some(ret) = ret {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// The memo key of a configuration: which operations are linearized (a Zobrist hash:
/// the XOR of a random 128-bit value per linearized operation, updated in O(1) as the
/// search moves) combined with a hash of the possible states. 128 bits make a collision,
/// which could wrongly prune a branch, vanishingly unlikely (under 2^-80 for a
/// hundred million configurations); the values come from a fixed seed so every check of
/// a history explores the same way.
struct Memo {
    per_op: Vec<(u64, u64)>,
    linearized: (u64, u64),
    seen: HashSet<(u64, u64)>,
}

impl Memo {
    fn new(ops: usize) -> Memo {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x11ea_11ab);
        Memo {
            per_op: (0..ops).map(|_| (rng.gen(), rng.gen())).collect(),
            linearized: (0, 0),
            seen: HashSet::new(),
        }
    }

    fn toggle(&mut self, op: usize) {
        let (a, b) = self.per_op[op];
        self.linearized.0 ^= a;
        self.linearized.1 ^= b;
    }

    /// Records the configuration "linearized set plus `op`, in `states`"; false if it
    /// was explored before. On true, `op` counts as linearized.
    fn visit(&mut self, op: usize, states: &States) -> bool {
        self.toggle(op);
        let mut first = std::collections::hash_map::DefaultHasher::new();
        states.hash(&mut first);
        let mut second = std::collections::hash_map::DefaultHasher::new();
        0x5ec0_u16.hash(&mut second);
        states.hash(&mut second);
        let key = (
            self.linearized.0 ^ first.finish(),
            self.linearized.1 ^ second.finish(),
        );
        if self.seen.insert(key) {
            true
        } else {
            self.toggle(op);
            false
        }
    }
}

/// For each operation of unknown outcome, the one with the same step called just before
/// it, which must be placed first (see the module docs).
fn twins(ops: &[TenantOp]) -> Vec<Option<usize>> {
    let mut open: Vec<usize> = (0..ops.len())
        .filter(|i| ops[*i].return_us.is_none())
        .collect();
    open.sort_by_key(|i| (ops[*i].call_us, *i));
    let mut last = HashMap::new();
    let mut twin = vec![None; ops.len()];
    for i in open {
        twin[i] = last.insert(ops[i].step, i);
    }
    twin
}

/// The operations that may be placed next: those called before the first return still
/// in the list (an operation that returned must come before anything called after that).
/// Operations of unknown outcome come first, in call order and each only after its twin:
/// placing one early seldom costs anything, since the model keeps the state in which it
/// did not happen, and it keeps a wrong guess about an observed operation from being
/// buried under many placements (measured: observed-first orders exhaust the budget on
/// histories this one decides at once). Observed operations follow in call order.
fn candidates(
    events: &Events,
    ops: &[TenantOp],
    twin: &[Option<usize>],
    placed: &[bool],
) -> Vec<usize> {
    let mut observed = Vec::new();
    let mut open = Vec::new();
    let mut at = events.first();
    while at != NONE {
        let event = events.events[at];
        if !event.is_call {
            break;
        }
        if twin[event.op].is_none_or(|t| placed[t]) {
            if ops[event.op].return_us.is_some() {
                observed.push(event.op);
            } else {
                open.push(event.op);
            }
        }
        at = events.next[at];
    }
    open.extend(observed);
    open
}

/// The operation of the first return event still in the list: the one that could not be
/// placed when the search is stuck.
fn first_return(events: &Events) -> usize {
    let mut at = events.first();
    while at != NONE {
        if !events.events[at].is_call {
            return events.events[at].op;
        }
        at = events.next[at];
    }
    NONE
}

/// A placement the search may take back: the operation placed, the states before it,
/// and the other candidates it had at that point.
struct Frame {
    op: usize,
    before: States,
    candidates: Vec<usize>,
    next: usize,
}

/// Decides whether `ops` (one shard's projected history) is linearizable, giving up after
/// `max_steps` steps.
pub fn check(ops: &[TenantOp], max_steps: u64) -> Linearizability {
    let mut events = Events::new(ops);
    let mut memo = Memo::new(ops.len());
    let twin = twins(ops);
    let mut placed = vec![false; ops.len()];
    let observed_total = ops.iter().filter(|o| o.return_us.is_some()).count();
    let mut observed_placed = 0;
    let mut states = States::initial();
    let mut stack: Vec<Frame> = Vec::new();
    let mut furthest = (0usize, NONE);
    let mut steps = 0u64;
    let mut choices = candidates(&events, ops, &twin, &placed);
    let mut next = 0;
    // Every observed operation placed: the rest had unknown outcomes and may never have
    // happened.
    while observed_placed < observed_total {
        steps += 1;
        if steps > max_steps {
            return Linearizability::Unknown { steps };
        }
        let mut placed_one = false;
        while next < choices.len() {
            let op = choices[next];
            next += 1;
            let after = states.step(&ops[op].step);
            // An operation of unknown outcome that adds no possible state is not placed
            // here (see the module docs).
            if ops[op].return_us.is_none() && after == states {
                continue;
            }
            if !after.is_empty() && memo.visit(op, &after) {
                stack.push(Frame {
                    op,
                    before: std::mem::replace(&mut states, after),
                    candidates: std::mem::take(&mut choices),
                    next,
                });
                placed[op] = true;
                observed_placed += usize::from(ops[op].return_us.is_some());
                events.lift(op);
                choices = candidates(&events, ops, &twin, &placed);
                next = 0;
                placed_one = true;
                break;
            }
        }
        if placed_one {
            continue;
        }
        // Nothing fits here: take the last placement back and try its next candidate.
        if stack.len() >= furthest.0 {
            furthest = (stack.len(), first_return(&events));
        }
        let Some(frame) = stack.pop() else {
            return Linearizability::Violated {
                stuck: furthest.1,
                placed: furthest.0,
            };
        };
        events.unlift(frame.op);
        placed[frame.op] = false;
        observed_placed -= usize::from(ops[frame.op].return_us.is_some());
        memo.toggle(frame.op);
        states = frame.before;
        choices = frame.candidates;
        next = frame.next;
    }
    Linearizability::Ok
}

#[cfg(test)]
mod tests {
    use super::super::model::Step;
    use super::*;

    fn op(call: u64, ret: Option<u64>, step: Step) -> TenantOp {
        TenantOp {
            op: call,
            call_us: call,
            return_us: ret,
            step,
        }
    }

    fn attach(call: u64, ret: Option<u64>, node: u64, observed: Option<u32>) -> TenantOp {
        let step = Step::Attach {
            node: Some(node),
            generation_override: None,
            observed: ret.map(|_| observed),
        };
        op(call, ret, step)
    }

    fn validate(call: u64, ret: u64, generation: u32, valid: bool) -> TenantOp {
        op(
            call,
            Some(ret),
            Step::Validate {
                generation,
                valid: Some(valid),
            },
        )
    }

    #[test]
    fn concurrent_attaches_may_be_ordered_either_way() {
        let ops = [
            attach(0, Some(10), 1, Some(2)),
            attach(1, Some(11), 2, Some(1)),
            validate(12, 13, 2, true),
        ];
        assert_eq!(check(&ops, 1_000), Linearizability::Ok);
    }

    #[test]
    fn an_unknown_write_explains_a_gap_whenever_it_happened() {
        let ops = [
            attach(0, Some(1), 1, Some(1)),
            attach(2, None, 2, None),
            attach(10, Some(11), 1, Some(2)),
            // The unknown attach landed after the second known one.
            validate(20, 21, 2, false),
            attach(30, Some(31), 1, Some(4)),
        ];
        assert_eq!(check(&ops, 10_000), Linearizability::Ok);
    }

    #[test]
    fn a_stale_valid_is_caught_even_when_the_rules_cannot_name_it() {
        // Generation 3 was issued by a write of unknown outcome, which the direct rules
        // ignore; the validate saw it, so a later valid for 2 is stale.
        let ops = [
            attach(0, Some(1), 1, Some(1)),
            attach(2, Some(3), 1, Some(2)),
            attach(4, None, 2, None),
            validate(10, 11, 3, true),
            validate(12, 13, 2, true),
        ];
        assert!(matches!(
            check(&ops, 10_000),
            Linearizability::Violated { .. }
        ));
    }

    #[test]
    fn the_budget_is_honoured() {
        let ops: Vec<TenantOp> = (0..40).map(|i| attach(i, None, i, None)).collect();
        let mut with_read = ops.clone();
        with_read.push(validate(100, 101, 41, true));
        assert!(matches!(
            check(&with_read, 500),
            Linearizability::Unknown { .. }
        ));
    }
}
