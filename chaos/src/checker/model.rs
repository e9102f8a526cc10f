//! The generation model of one tenant shard, as a client can observe it.
//!
//! The state is the shard's generation (none before its first attach) and the node it is
//! attached to. Every operation of the history, projected onto one shard, is a [`Step`]
//! with what the caller observed; [`step`] says which states may follow a given state,
//! and an empty answer means the observation is impossible there.
//!
//! An indeterminate write (a 5xx, a timeout) may or may not have taken effect, so it
//! yields both the unchanged and the changed state. The search therefore tracks a *set*
//! of possible states ([`States`]), which keeps it deterministic while covering every
//! resolution of every indeterminate write.
//!
//! The rules mirror `pageserver_controller::domain::Registry` as the API documents them:
//! - attach: generation + 1 (a new shard starts at its override, or 0), node set;
//!   refused (never acknowledged) where that would pass `u32::MAX`, as are a migrate and
//!   a re-attach of an attached shard there;
//! - detach: node cleared, generation kept (an unknown shard stays unknown, unless an
//!   override creates it detached);
//! - migrate to the node it is on: nothing changes and the current generation is
//!   answered; elsewhere it is an attach;
//! - re-attach of node N: a shard attached to N gets generation + 1 and is listed; any
//!   other shard is left alone and not listed;
//! - validate: `valid` is equality with the current generation, unknown shards omitted;
//! - inspect: (generation, node) while attached, nothing otherwise.

use serde::Serialize;

/// One shard's state. `Default` is a shard the registry has never heard of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ShardState {
    pub generation: Option<u32>,
    pub node: Option<u64>,
}

/// An operation projected onto one shard, with what its caller observed. `None` in an
/// answer field of a write means the write's outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Step {
    Attach {
        node: Option<u64>,
        generation_override: Option<u32>,
        /// `Some(answer)`: acknowledged with `answer` (`None` for a detach).
        observed: Option<Option<u32>>,
    },
    Migrate {
        node: u64,
        observed: Option<u32>,
    },
    ReAttach {
        node: u64,
        /// `Some(Some(g))`: listed with `g`; `Some(None)`: acknowledged, not listed.
        observed: Option<Option<u32>>,
    },
    /// Only acknowledged validates are projected; `valid: None` means omitted.
    Validate {
        generation: u32,
        valid: Option<bool>,
    },
    /// Only acknowledged inspects are projected.
    Inspect {
        attachment: Option<(u32, u64)>,
    },
}

impl Step {
    /// Whether the step may change the state.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Step::Attach { .. } | Step::Migrate { .. } | Step::ReAttach { .. }
        )
    }

    /// Whether the caller saw the outcome (reads always; writes when acknowledged).
    pub fn is_observed(&self) -> bool {
        match self {
            Step::Attach { observed, .. } | Step::ReAttach { observed, .. } => observed.is_some(),
            Step::Migrate { observed, .. } => observed.is_some(),
            Step::Validate { .. } | Step::Inspect { .. } => true,
        }
    }
}

/// The states that may follow `state` through `step`, appended to `out`.
pub fn step(state: ShardState, step: &Step, out: &mut Vec<ShardState>) {
    match *step {
        Step::Attach {
            node: Some(node),
            generation_override,
            observed,
        } => {
            // From the generation this attach starts from (an override seeds a new
            // shard), one up; none above u32::MAX, where the attach is refused.
            let from = state.generation.or(generation_override);
            let Some(issued) = from.map_or(Some(1), |g| g.checked_add(1)) else {
                // Refused, so never acknowledged; a refused attach still leaves a shard
                // its override created (detached), as the registry does.
                if observed.is_none() {
                    out.extend([
                        state,
                        ShardState {
                            generation: from,
                            node: state.node,
                        },
                    ]);
                }
                return;
            };
            let next = ShardState {
                generation: Some(issued),
                node: Some(node),
            };
            match observed {
                None => out.extend([state, next]),
                Some(answer) if answer == next.generation => out.push(next),
                Some(_) => {}
            }
        }
        Step::Attach {
            node: None,
            generation_override,
            observed,
        } => {
            let next = match (state.generation, generation_override) {
                (Some(_), _) => ShardState {
                    node: None,
                    ..state
                },
                (None, Some(g)) => ShardState {
                    generation: Some(g),
                    node: None,
                },
                (None, None) => state,
            };
            match observed {
                None => out.extend([state, next]),
                Some(None) => out.push(next),
                Some(Some(_)) => {}
            }
        }
        Step::Migrate { node, observed } => {
            // An unknown shard is refused (404), which is not projected; so a migrate
            // here found the shard.
            let Some(generation) = state.generation else {
                if observed.is_none() {
                    out.push(state);
                }
                return;
            };
            let next = if state.node == Some(node) {
                state
            } else {
                let Some(issued) = generation.checked_add(1) else {
                    // Refused (exhausted): never acknowledged, nothing changed.
                    if observed.is_none() {
                        out.push(state);
                    }
                    return;
                };
                ShardState {
                    generation: Some(issued),
                    node: Some(node),
                }
            };
            match observed {
                None => out.extend([state, next]),
                Some(answer) if Some(answer) == next.generation => out.push(next),
                Some(_) => {}
            }
        }
        Step::ReAttach { node, observed } => {
            let attached = state.node == Some(node);
            let Some(issued) = state.generation.map_or(Some(1), |g| g.checked_add(1)) else {
                // An exhausted shard attached here refuses the whole re-attach, which is
                // then never acknowledged; one attached elsewhere is not its business.
                match (observed, attached) {
                    (None, _) | (Some(None), false) => out.push(state),
                    (Some(_), _) => {}
                }
                return;
            };
            let next = ShardState {
                generation: Some(issued),
                node: Some(node),
            };
            match (observed, attached) {
                (None, true) => out.extend([state, next]),
                (None, false) | (Some(None), false) => out.push(state),
                (Some(Some(answer)), true) if Some(answer) == next.generation => out.push(next),
                (Some(_), _) => {}
            }
        }
        Step::Validate { generation, valid } => {
            let ok = match valid {
                None => state.generation.is_none(),
                Some(valid) => {
                    state.generation.is_some() && valid == (state.generation == Some(generation))
                }
            };
            if ok {
                out.push(state);
            }
        }
        Step::Inspect { attachment } => {
            let shown = match (state.generation, state.node) {
                (Some(g), Some(n)) => Some((g, n)),
                _ => None,
            };
            if shown == attachment {
                out.push(state);
            }
        }
    }
}

/// A set of possible states, sorted and without duplicates (small in practice: each
/// indeterminate write pending at most doubles it, and acknowledged answers collapse it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct States(Vec<ShardState>);

impl States {
    pub fn initial() -> States {
        States(vec![ShardState::default()])
    }

    /// Every state reachable from one of ours through `s`; empty if none.
    pub fn step(&self, s: &Step) -> States {
        let mut out = Vec::with_capacity(self.0.len() * 2);
        for state in &self.0 {
            step(*state, s, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        States(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn states(&self) -> &[ShardState] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(generation: u32, node: Option<u64>) -> ShardState {
        ShardState {
            generation: Some(generation),
            node,
        }
    }

    fn next(state: ShardState, s: Step) -> Vec<ShardState> {
        let mut out = Vec::new();
        step(state, &s, &mut out);
        out
    }

    fn attach(node: u64, observed: Option<u32>) -> Step {
        Step::Attach {
            node: Some(node),
            generation_override: None,
            observed: Some(observed),
        }
    }

    #[test]
    fn the_first_attach_is_one_and_each_next_is_one_higher() {
        assert_eq!(
            next(ShardState::default(), attach(1, Some(1))),
            [at(1, Some(1))]
        );
        assert_eq!(next(at(4, None), attach(2, Some(5))), [at(5, Some(2))]);
        assert!(next(at(4, None), attach(2, Some(4))).is_empty());
        assert!(next(at(4, None), attach(2, None)).is_empty());
    }

    #[test]
    fn an_override_seeds_only_a_new_shard() {
        let with_override = |observed| Step::Attach {
            node: Some(1),
            generation_override: Some(10),
            observed: Some(Some(observed)),
        };
        assert_eq!(
            next(ShardState::default(), with_override(11)),
            [at(11, Some(1))]
        );
        assert_eq!(next(at(3, None), with_override(4)), [at(4, Some(1))]);
    }

    #[test]
    fn detach_keeps_the_generation() {
        let detach = Step::Attach {
            node: None,
            generation_override: None,
            observed: Some(None),
        };
        assert_eq!(next(at(3, Some(1)), detach), [at(3, None)]);
        assert_eq!(next(ShardState::default(), detach), [ShardState::default()]);
    }

    #[test]
    fn an_indeterminate_write_may_or_may_not_have_happened() {
        let unknown = Step::Attach {
            node: Some(2),
            generation_override: None,
            observed: None,
        };
        assert_eq!(
            next(at(3, Some(1)), unknown),
            [at(3, Some(1)), at(4, Some(2))]
        );
    }

    /// The registry refuses to go past `u32::MAX` (409): no write is acknowledged there,
    /// so an answer at the top is never a second copy of it.
    #[test]
    fn nothing_is_acknowledged_past_the_last_generation() {
        let top = at(u32::MAX, Some(1));
        assert!(next(top, attach(2, Some(u32::MAX))).is_empty());
        let migrate = |observed| Step::Migrate { node: 2, observed };
        assert!(next(top, migrate(Some(u32::MAX))).is_empty());
        assert_eq!(next(top, migrate(None)), [top]);
        let re_attach = |node, observed| Step::ReAttach { node, observed };
        assert!(next(top, re_attach(1, Some(Some(u32::MAX)))).is_empty());
        assert!(next(top, re_attach(1, Some(None))).is_empty());
        assert_eq!(next(top, re_attach(1, None)), [top]);
        // Attached elsewhere, it does not stop another node's re-attach.
        assert_eq!(next(top, re_attach(2, Some(None))), [top]);
        // An override at the top creates the shard, detached, and refuses the attach.
        let seeded_at_top = |observed| Step::Attach {
            node: Some(1),
            generation_override: Some(u32::MAX),
            observed,
        };
        assert!(next(ShardState::default(), seeded_at_top(Some(Some(u32::MAX)))).is_empty());
        assert_eq!(
            next(ShardState::default(), seeded_at_top(None)),
            [ShardState::default(), at(u32::MAX, None)]
        );
    }

    #[test]
    fn migrate_to_the_current_node_issues_nothing() {
        let migrate = |observed| Step::Migrate {
            node: 1,
            observed: Some(observed),
        };
        assert_eq!(next(at(3, Some(1)), migrate(3)), [at(3, Some(1))]);
        assert!(next(at(3, Some(1)), migrate(4)).is_empty());
        assert_eq!(next(at(3, Some(2)), migrate(4)), [at(4, Some(1))]);
    }

    #[test]
    fn re_attach_lists_exactly_the_node_s_shards() {
        let listed = |g| Step::ReAttach {
            node: 1,
            observed: Some(Some(g)),
        };
        let not_listed = Step::ReAttach {
            node: 1,
            observed: Some(None),
        };
        assert_eq!(next(at(3, Some(1)), listed(4)), [at(4, Some(1))]);
        assert!(next(at(3, Some(1)), not_listed).is_empty());
        assert!(next(at(3, Some(2)), listed(4)).is_empty());
        assert_eq!(next(at(3, Some(2)), not_listed), [at(3, Some(2))]);
        assert!(next(at(3, None), listed(4)).is_empty());
    }

    #[test]
    fn validate_is_equality_and_omits_unknown_shards() {
        let validate = |generation, valid| Step::Validate { generation, valid };
        assert_eq!(next(at(3, None), validate(3, Some(true))).len(), 1);
        assert!(next(at(3, None), validate(2, Some(true))).is_empty());
        assert_eq!(next(at(3, None), validate(2, Some(false))).len(), 1);
        assert!(next(at(3, None), validate(3, None)).is_empty());
        assert_eq!(next(ShardState::default(), validate(3, None)).len(), 1);
    }

    #[test]
    fn inspect_shows_the_attachment_only_while_attached() {
        let inspect = |attachment| Step::Inspect { attachment };
        assert_eq!(next(at(3, Some(2)), inspect(Some((3, 2)))).len(), 1);
        assert!(next(at(3, Some(2)), inspect(Some((2, 2)))).is_empty());
        assert_eq!(next(at(3, None), inspect(None)).len(), 1);
        assert!(next(at(3, Some(2)), inspect(None)).is_empty());
    }
}
