//! Hand-made histories, good and bad: a checker that cannot fail proves nothing.

use pageserver_controller::domain::{NodeId, TenantId, TenantShardId};

use super::*;
use crate::history::{Answer, Op, Outcome, Request};

fn shard(n: u8) -> TenantShardId {
    TenantShardId::unsharded(TenantId::from_bytes([n; 16]))
}

/// Builds histories with readable times (call, return in µs).
#[derive(Default)]
struct H(Vec<Op>);

impl H {
    fn push(&mut self, call: u64, ret: u64, request: Request, outcome: Outcome) -> &mut Self {
        let id = self.0.len() as u64;
        self.0.push(Op {
            id,
            client: format!("c{id}"),
            via: 1,
            call_us: call,
            return_us: ret,
            request,
            outcome,
        });
        self
    }

    fn ok(&mut self, call: u64, ret: u64, request: Request, answer: Answer) -> &mut Self {
        self.push(call, ret, request, Outcome::Ok { answer })
    }

    fn attach(&mut self, call: u64, ret: u64, s: u8, node: u64, generation: u32) -> &mut Self {
        self.ok(
            call,
            ret,
            attach_request(s, Some(node)),
            Answer::Generation {
                generation: Some(generation),
            },
        )
    }

    fn attach_unknown(&mut self, call: u64, ret: u64, s: u8, node: u64) -> &mut Self {
        self.push(
            call,
            ret,
            attach_request(s, Some(node)),
            Outcome::Indeterminate {
                reason: "503 may or may not".into(),
            },
        )
    }

    fn detach(&mut self, call: u64, ret: u64, s: u8) -> &mut Self {
        self.ok(
            call,
            ret,
            attach_request(s, None),
            Answer::Generation { generation: None },
        )
    }

    fn validate(&mut self, call: u64, ret: u64, s: u8, generation: u32, valid: bool) -> &mut Self {
        self.ok(
            call,
            ret,
            Request::Validate {
                tenants: vec![(shard(s), generation)],
            },
            Answer::Validated {
                tenants: vec![(shard(s), valid)],
            },
        )
    }

    /// One validate call about several shards: (shard, generation, answered valid).
    fn validate_many(&mut self, call: u64, ret: u64, asked: &[(u8, u32, bool)]) -> &mut Self {
        self.ok(
            call,
            ret,
            Request::Validate {
                tenants: asked.iter().map(|(s, g, _)| (shard(*s), *g)).collect(),
            },
            Answer::Validated {
                tenants: asked.iter().map(|(s, _, v)| (shard(*s), *v)).collect(),
            },
        )
    }

    fn inspect(&mut self, call: u64, ret: u64, s: u8, attachment: Option<(u32, u64)>) -> &mut Self {
        self.ok(
            call,
            ret,
            Request::Inspect { shard: shard(s) },
            Answer::Attachment {
                attachment: attachment.map(|(g, n)| (g, NodeId(n))),
            },
        )
    }

    fn re_attach(&mut self, call: u64, ret: u64, node: u64, listed: &[(u8, u32)]) -> &mut Self {
        self.ok(
            call,
            ret,
            Request::ReAttach { node: NodeId(node) },
            Answer::ReAttached {
                tenants: listed.iter().map(|(s, g)| (shard(*s), *g)).collect(),
            },
        )
    }

    fn re_attach_unknown(&mut self, call: u64, ret: u64, node: u64) -> &mut Self {
        self.push(
            call,
            ret,
            Request::ReAttach { node: NodeId(node) },
            Outcome::Indeterminate {
                reason: "503 may or may not".into(),
            },
        )
    }

    /// An attach of shard `s` to `node` with an override one below `u32::MAX`: the
    /// shard is at the top, and no attach or re-attach can raise it again.
    fn attach_at_the_top(&mut self, call: u64, ret: u64, s: u8, node: u64) -> &mut Self {
        self.ok(
            call,
            ret,
            Request::Attach {
                shard: shard(s),
                node: Some(NodeId(node)),
                generation_override: Some(u32::MAX - 1),
            },
            Answer::Generation {
                generation: Some(u32::MAX),
            },
        )
    }

    /// A re-attach of `node` refused because a shard on it has used every generation.
    fn re_attach_exhausted(&mut self, call: u64, ret: u64, node: u64) -> &mut Self {
        self.refused(
            call,
            ret,
            Request::ReAttach { node: NodeId(node) },
            409,
            "tenant shard has used every generation",
        )
    }

    /// A request the server refused with `status` (a 4xx).
    fn refused(
        &mut self,
        call: u64,
        ret: u64,
        request: Request,
        status: u16,
        msg: &str,
    ) -> &mut Self {
        self.push(
            call,
            ret,
            request,
            Outcome::Refused {
                status,
                msg: msg.into(),
            },
        )
    }

    fn verdict(&self) -> Verdict {
        check(&self.0)
    }
}

fn attach_request(s: u8, node: Option<u64>) -> Request {
    Request::Attach {
        shard: shard(s),
        node: node.map(NodeId),
        generation_override: None,
    }
}

fn assert_passes(h: &H) {
    let verdict = h.verdict();
    assert!(verdict.passed(), "expected a pass, got {verdict:#?}");
}

fn assert_breaks(h: &H, rule: Rule) {
    let verdict = h.verdict();
    assert!(
        verdict.breaks(rule),
        "expected {rule} to be broken, got {verdict:#?}"
    );
    assert!(
        search_rejects(h),
        "every safety violation is also a linearizability violation, which the search must \
         find on its own (the checker skips it for shards that broke a named rule)"
    );
}

/// Whether the linearizability search alone rejects some shard of the history.
fn search_rejects(h: &H) -> bool {
    let (per_shard, _) = project::project(&h.0);
    per_shard.values().any(|ops| {
        matches!(
            search::check(ops, DEFAULT_MAX_STEPS),
            search::Linearizability::Violated { .. }
        )
    })
}

#[test]
fn a_neon_shaped_history_passes() {
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .attach(0, 10, 2, 1, 1)
        .validate(11, 12, 1, 1, true)
        // pageserver 1 restarts
        .re_attach(13, 20, 1, &[(1, 2), (2, 2)])
        .validate(21, 22, 1, 1, false)
        // the operator moves shard 2 to pageserver 2
        .attach(23, 30, 2, 2, 3)
        .validate(31, 32, 2, 2, false)
        .validate(31, 32, 2, 3, true)
        .re_attach(33, 40, 1, &[(1, 3)])
        .detach(41, 42, 1)
        .inspect(43, 44, 1, None)
        .validate(45, 46, 1, 3, true)
        .attach(47, 50, 1, 2, 4)
        .inspect(51, 52, 1, Some((4, 2)))
        .inspect(51, 52, 2, Some((3, 2)));
    assert_passes(&h);
}

#[test]
fn writes_of_unknown_outcome_may_land_late_or_never() {
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        // Two writes time out: one lands long after its client gave up, one never does.
        .attach_unknown(11, 20, 1, 2)
        .attach_unknown(12, 21, 1, 3)
        .validate(22, 23, 1, 1, true)
        .attach(30, 40, 1, 1, 2)
        .validate(41, 42, 1, 2, false)
        .inspect(43, 44, 1, Some((3, 3)));
    assert_passes(&h);
}

/// The freedom of a write of unknown outcome has two bounds: it cannot take effect before
/// it was called, and it takes effect at most once.
#[test]
fn a_write_of_unknown_outcome_lands_after_its_call_and_at_most_once() {
    // Seen on node 2 before anything asked for node 2.
    let mut early = H::default();
    early
        .attach(0, 10, 1, 1, 1)
        .inspect(20, 30, 1, Some((2, 2)))
        .attach_unknown(40, 50, 1, 2);
    assert!(!early.verdict().passed(), "{:#?}", early.verdict());
    assert!(search_rejects(&early));
    // One attach of unknown outcome, seen as two.
    let mut twice = H::default();
    twice
        .attach(0, 10, 1, 1, 1)
        .attach_unknown(20, 30, 1, 2)
        .inspect(40, 50, 1, Some((3, 2)));
    assert!(!twice.verdict().passed(), "{:#?}", twice.verdict());
    assert!(search_rejects(&twice));
    // Seen once, after its call: fine.
    let mut once = H::default();
    once.attach(0, 10, 1, 1, 1)
        .attach_unknown(20, 30, 1, 2)
        .inspect(40, 50, 1, Some((2, 2)));
    assert_passes(&once);
}

#[test]
fn concurrent_attaches_may_be_ordered_either_way() {
    let mut h = H::default();
    h.attach(0, 100, 1, 1, 2)
        .attach(10, 50, 1, 2, 1)
        .validate(101, 102, 1, 2, true)
        .validate(101, 102, 1, 1, false);
    assert_passes(&h);
}

#[test]
fn a_generation_handed_out_twice_is_caught() {
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1).attach(5, 12, 1, 2, 1);
    assert_breaks(&h, Rule::DuplicateGeneration);
}

#[test]
fn a_lower_generation_after_a_higher_one_is_caught() {
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .attach(11, 20, 1, 1, 2)
        .attach_unknown(21, 25, 1, 1)
        .attach(30, 40, 1, 2, 2);
    let verdict = h.verdict();
    assert!(
        verdict.breaks(Rule::GenerationNotIncreasing),
        "{verdict:#?}"
    );
    assert!(verdict.breaks(Rule::DuplicateGeneration), "{verdict:#?}");
}

#[test]
fn a_superseded_generation_called_valid_is_caught() {
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .attach(11, 20, 1, 2, 2)
        .validate(21, 22, 1, 1, true);
    assert_breaks(&h, Rule::StaleValid);
}

#[test]
fn a_stale_valid_from_a_deposed_leader_is_caught_even_when_concurrent_with_nothing() {
    // The classic: the old leader answers a validate after the new leader acknowledged a
    // newer generation; the validate started after that acknowledgement.
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 5)
        .attach(100, 200, 1, 2, 6)
        .validate(201, 900, 1, 5, true);
    assert_breaks(&h, Rule::StaleValid);
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .attach(11, 20, 1, 1, 2)
        .inspect(1_000, 1_010, 1, Some((1, 1)));
    assert_breaks(&h, Rule::LostGeneration);

    let mut forgotten = H::default();
    forgotten
        .attach(0, 10, 1, 1, 1)
        .validate(1_000, 1_010, 1, 1, true)
        .ok(
            1_020,
            1_030,
            Request::Validate {
                tenants: vec![(shard(1), 1)],
            },
            Answer::Validated { tenants: vec![] },
        );
    assert_breaks(&forgotten, Rule::LostGeneration);
}

#[test]
fn a_re_attach_torn_across_two_states_is_caught() {
    // Node 1 holds shards 1 and 2. While its re-attach runs, another client attaches both
    // again. The re-attach lists shard 1 from before that client's first attach and shard
    // 2 from after its second: no single point explains both.
    let mut h = H::default();
    h.attach(0, 5, 1, 1, 1)
        .attach(0, 5, 2, 1, 1)
        .re_attach(10, 100, 1, &[(1, 2), (2, 3)])
        .attach(20, 30, 1, 1, 3)
        .attach(40, 50, 2, 1, 2);
    let verdict = h.verdict();
    assert!(verdict.breaks(Rule::TornReAttach), "{verdict:#?}");
    // Each shard on its own is fine: only the cross-shard rule sees it.
    assert!(!verdict.breaks(Rule::NotLinearizable), "{verdict:#?}");
    assert!(!search_rejects(&h));
}

#[test]
fn a_validate_whose_invalid_answer_comes_from_a_later_state_is_caught() {
    // Shard 1 is certainly at 1 when the validate is called; "1 is invalid" means it was
    // past 1 at the validate's point, after the move to 2 was called at 20. "1 is valid
    // for shard 2" puts the point before shard 2 moved to 2 (returned at 11).
    let mut torn = H::default();
    torn.attach(0, 1, 1, 1, 1)
        .attach(0, 1, 2, 1, 1)
        .attach(10, 11, 2, 1, 2)
        .attach(20, 21, 1, 1, 2)
        .validate_many(5, 30, &[(1, 1, false), (2, 1, true)]);
    let verdict = torn.verdict();
    assert!(verdict.breaks(Rule::TornValidate), "{verdict:#?}");
    assert!(!search_rejects(&torn));
    // Shard 1 moved before shard 2 did: any state between the first move's call and the
    // second's return explains both answers.
    let mut whole = H::default();
    whole
        .attach(0, 1, 1, 1, 1)
        .attach(0, 1, 2, 1, 1)
        .attach(10, 11, 1, 1, 2)
        .attach(20, 21, 2, 1, 2)
        .validate_many(5, 30, &[(1, 1, false), (2, 1, true)]);
    assert_passes(&whole);
    // Shard 1 not certainly at 1 when the validate was called (its attach returned
    // later): "invalid" may mean not there yet, which pins nothing.
    let mut early = H::default();
    early
        .attach(0, 1, 2, 1, 1)
        .attach(0, 8, 1, 1, 1)
        .attach(10, 11, 2, 1, 2)
        .attach(20, 21, 1, 1, 2)
        .validate_many(5, 30, &[(1, 1, false), (2, 1, true)]);
    assert_passes(&early);
}

#[test]
fn a_re_attach_after_an_invalid_answer_it_preceded_is_caught() {
    // The re-attach lists shard 1 at 2 and shard 2 at 3. "1 is invalid" for shard 1 at
    // [8, 9], once it was certainly at 1, shows it past 1 by 9: the re-attach came
    // before 9. Shard 2 reached 2 only at 10 (call), so a listing of 3 puts it after.
    let mut torn = H::default();
    torn.attach(0, 1, 1, 1, 1)
        .attach(0, 1, 2, 1, 1)
        .re_attach(5, 100, 1, &[(1, 2), (2, 3)])
        .validate(8, 9, 1, 1, false)
        .attach(10, 11, 2, 1, 2);
    let verdict = torn.verdict();
    assert!(verdict.breaks(Rule::TornReAttach), "{verdict:#?}");
    assert!(!search_rejects(&torn));
}

#[test]
fn a_validate_answered_from_two_states_is_caught() {
    // One long validate asks about shards 1 and 2. Shard 1 moved to generation 2 early,
    // shard 2 late, with a read of shard 2 at 1 in between: "1 is valid for shard 1"
    // puts the validate before 20, "2 is valid for shard 2" after 30.
    let mut torn = H::default();
    torn.attach(0, 5, 1, 1, 1)
        .attach(0, 5, 2, 1, 1)
        .validate_many(8, 1000, &[(1, 1, true), (2, 2, true)])
        .attach(10, 20, 1, 1, 2)
        .inspect(30, 40, 2, Some((1, 1)))
        .attach(50, 60, 2, 1, 2);
    let verdict = torn.verdict();
    assert!(verdict.breaks(Rule::TornValidate), "{verdict:#?}");
    // Each shard on its own is fine: only the cross-shard rule sees it.
    assert!(!search_rejects(&torn));
    // Both answers from before the first move: one state explains them.
    let mut whole = H::default();
    whole
        .attach(0, 5, 1, 1, 1)
        .attach(0, 5, 2, 1, 1)
        .validate_many(8, 1000, &[(1, 1, true), (2, 1, true)])
        .attach(10, 20, 1, 1, 2)
        .inspect(30, 40, 2, Some((1, 1)))
        .attach(50, 60, 2, 1, 2);
    assert_passes(&whole);
}

#[test]
fn a_re_attach_that_misses_a_shard_or_lists_a_foreign_one_is_caught() {
    let mut missed = H::default();
    missed
        .attach(0, 10, 1, 1, 1)
        .attach(0, 10, 2, 1, 1)
        .re_attach(20, 30, 1, &[(1, 2)]);
    assert!(missed.verdict().breaks(Rule::NotLinearizable));
    assert!(search_rejects(&missed));

    let mut foreign = H::default();
    foreign
        .attach(0, 10, 1, 1, 1)
        .attach(0, 10, 2, 2, 1)
        .re_attach(20, 30, 1, &[(1, 2), (2, 2)]);
    assert!(foreign.verdict().breaks(Rule::NotLinearizable));
}

#[test]
fn a_re_attach_leaving_out_a_shard_at_the_point_its_listing_pins_is_caught() {
    // Node 1 holds shards 1 and 2. Its re-attach lists shard 1 at 2, so it came before
    // another attach of shard 1 returned (at 18); shard 2 was still on node 1 until a
    // detach was called at 20, yet the re-attach left it out. Shard 2 alone is
    // explained (the re-attach after the detach), so only the shards together show it.
    let omitted = |detach_call: u64| {
        let mut h = H::default();
        h.attach(0, 5, 1, 1, 1)
            .attach(0, 5, 2, 1, 1)
            .re_attach(10, 100, 1, &[(1, 2)])
            .attach(15, 18, 1, 1, 3)
            .detach(detach_call, 30, 2)
            .attach(50, 60, 2, 1, 2);
        h
    };
    let h = omitted(20);
    let verdict = h.verdict();
    assert!(verdict.breaks(Rule::TornReAttach), "{verdict:#?}");
    assert!(!search_rejects(&h));
    // A detach called before 18 may have come first: then one state explains it.
    assert_passes(&omitted(12));
}

#[test]
fn a_re_attach_listing_nothing_while_some_shard_was_always_on_its_node_is_caught() {
    // Over the re-attach's whole call, shard 1 was on node 1 until 50 and shard 2 from
    // 45: each alone was off node 1 for a while, but never both at once.
    let empty = |attach_return: u64| {
        let mut h = H::default();
        h.attach(0, 5, 1, 1, 1)
            .attach(0, 5, 2, 2, 1)
            .re_attach(10, 100, 1, &[])
            .attach(40, attach_return, 2, 1, 2)
            .detach(50, 60, 1);
        h
    };
    let h = empty(45);
    let verdict = h.verdict();
    assert!(verdict.breaks(Rule::TornReAttach), "{verdict:#?}");
    assert!(!search_rejects(&h));
    // Shard 2's attach returning after the detach was called may have landed after it.
    assert_passes(&empty(55));
}

#[test]
fn a_wrong_node_is_caught_by_the_search_alone() {
    // No generation rule is broken; only the model knows that the shard is on node 2.
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .attach(11, 20, 1, 2, 2)
        .inspect(21, 22, 1, Some((2, 1)));
    let verdict = h.verdict();
    assert_eq!(
        verdict
            .violations
            .iter()
            .map(|v| v.rule)
            .collect::<Vec<_>>(),
        [Rule::NotLinearizable],
        "{verdict:#?}"
    );
}

#[test]
fn an_answer_about_a_shard_not_asked_is_malformed() {
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1).ok(
        11,
        12,
        Request::Validate {
            tenants: vec![(shard(1), 1)],
        },
        Answer::Validated {
            tenants: vec![(shard(1), true), (shard(9), true)],
        },
    );
    assert!(h.verdict().breaks(Rule::MalformedAnswer));
}

/// A success the API does not allow (here a re-attach listing a shard without a
/// generation) is reported, not passed over as a timeout would be.
#[test]
fn an_unreadable_success_is_reported() {
    let re_attach_ending = |outcome| {
        let mut h = H::default();
        h.attach(0, 10, 1, 1, 1)
            .push(11, 12, Request::ReAttach { node: NodeId(1) }, outcome);
        h.verdict()
    };
    let unreadable = re_attach_ending(Outcome::Unreadable {
        reason: "re-attach answered generation None in mode Secondary".into(),
    });
    assert!(unreadable.breaks(Rule::MalformedAnswer), "{unreadable:#?}");
    // The same call lost to a timeout is no violation.
    let timed_out = re_attach_ending(Outcome::Indeterminate {
        reason: "timed out".into(),
    });
    assert!(timed_out.violations.is_empty(), "{timed_out:#?}");
}

#[test]
fn refused_and_unsent_requests_change_nothing() {
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .push(
            11,
            12,
            attach_request(1, Some(2)),
            Outcome::NotSent {
                reason: "connection refused".into(),
            },
        )
        .push(
            13,
            14,
            Request::Migrate {
                shard: shard(1),
                node: NodeId(7),
            },
            Outcome::Refused {
                status: 404,
                msg: "node 7 is not registered".into(),
            },
        )
        .validate(15, 16, 1, 1, true);
    assert_passes(&h);
    // Had the unsent attach been applied, generation 1 would be stale: the checker
    // relies on "not sent" meaning exactly that.
    let mut lied = H::default();
    lied.attach(0, 10, 1, 1, 1)
        .push(
            11,
            12,
            attach_request(1, Some(2)),
            Outcome::NotSent {
                reason: "connection refused".into(),
            },
        )
        .inspect(15, 16, 1, Some((2, 2)));
    assert!(lied.verdict().breaks(Rule::NotLinearizable));
}

#[test]
fn migrate_to_where_the_shard_is_keeps_its_generation() {
    let mut h = H::default();
    // Nodes 1 and 2 register (a migrate onto an unregistered node is refused).
    h.re_attach(0, 1, 1, &[]).re_attach(0, 1, 2, &[]);
    h.attach(2, 10, 1, 1, 1)
        .ok(
            11,
            20,
            Request::Migrate {
                shard: shard(1),
                node: NodeId(1),
            },
            Answer::Migrated { generation: 1 },
        )
        .ok(
            21,
            30,
            Request::Migrate {
                shard: shard(1),
                node: NodeId(2),
            },
            Answer::Migrated { generation: 2 },
        )
        .validate(31, 32, 1, 2, true);
    assert_passes(&h);
}

#[test]
fn a_migrate_to_another_node_that_keeps_the_generation_is_caught() {
    // Moving to another node must hand out a new generation: answering the old one gives
    // the same generation to two pageservers. The named rules cannot tell a move from a
    // migrate to where the shard already is (which keeps it); the search can.
    let mut h = H::default();
    h.re_attach(0, 1, 2, &[]);
    h.attach(0, 10, 1, 1, 1).ok(
        11,
        20,
        Request::Migrate {
            shard: shard(1),
            node: NodeId(2),
        },
        Answer::Migrated { generation: 1 },
    );
    assert_breaks(&h, Rule::NotLinearizable);
}

/// Nodes register by re-attaching, and a migrate onto a node not registered is refused:
/// one acknowledged when no re-attach of its node had been called before it returned is
/// a wrong answer. A re-attach of unknown outcome, or one that overlaps the migrate, may
/// have registered it.
#[test]
fn a_migrate_onto_a_node_never_registered_is_caught() {
    let migrate = |node| Request::Migrate {
        shard: shard(1),
        node: NodeId(node),
    };
    let moved = Answer::Migrated { generation: 2 };
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .ok(11, 20, migrate(7), moved.clone());
    let verdict = h.verdict();
    assert!(verdict.breaks(Rule::UnregisteredNode), "{verdict:#?}");
    // Node 7 re-attached only after the migrate had returned: still caught.
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .ok(11, 20, migrate(7), moved.clone())
        .re_attach(21, 22, 7, &[(1, 3)]);
    assert!(h.verdict().breaks(Rule::UnregisteredNode));
    // A re-attach of unknown outcome called while the migrate ran may have registered it.
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .re_attach_unknown(12, 30, 7)
        .ok(11, 20, migrate(7), moved.clone());
    assert!(
        !h.verdict().breaks(Rule::UnregisteredNode),
        "{:#?}",
        h.verdict()
    );
    // A re-attach refused as exhausted (shard 2, on node 7, is at u32::MAX) still
    // registered node 7: the whole history is a correct one.
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .attach_at_the_top(0, 1, 2, 7)
        .re_attach_exhausted(2, 5, 7)
        .ok(11, 20, migrate(7), moved);
    assert_passes(&h);
}

/// A refusal is an answer too: the server says the state did not allow the request.
/// A migrate refused as unknown after its node had registered and its shard had been
/// attached, an attach refused as exhausted far from `u32::MAX`, or any refusal the
/// registry never gives, is a wrong answer; a refusal some state at the time explains
/// is not.
#[test]
fn a_refusal_no_state_explains_is_caught() {
    // The last operation of the history, and only it, is a wrong refusal.
    let wrong = |h: &H| {
        let last = h.0.len() as u64 - 1;
        let flagged: Vec<Vec<u64>> = h
            .verdict()
            .violations
            .into_iter()
            .filter(|v| v.rule == Rule::WrongRefusal)
            .map(|v| v.ops)
            .collect();
        flagged == [vec![last]]
    };
    // No operation at all is flagged as a wrong refusal.
    let right = |h: &H| !h.verdict().breaks(Rule::WrongRefusal);
    // A migrate of shard 1 to node 2, refused as unknown, from 11 to 20.
    let refused_migrate = |h: &mut H| {
        let migrate = Request::Migrate {
            shard: shard(1),
            node: NodeId(2),
        };
        h.refused(11, 20, migrate, 404, "node 2 is not registered");
    };

    // Node 2 registered and the shard attached, both acknowledged before the call.
    let mut h = H::default();
    h.re_attach(0, 5, 2, &[]).attach(1, 10, 1, 1, 1);
    refused_migrate(&mut h);
    assert!(wrong(&h), "{:#?}", h.verdict());
    // The shard was known only from a validate's answer: still known.
    let mut h = H::default();
    h.re_attach(0, 5, 2, &[])
        .attach_unknown(1, 8, 1, 1)
        .validate(9, 10, 1, 1, true);
    refused_migrate(&mut h);
    assert!(wrong(&h), "{:#?}", h.verdict());

    // The registering re-attach overlapped the migrate, or its outcome is unknown: the
    // migrate may have come first.
    let mut h = H::default();
    h.attach(1, 10, 1, 1, 1).re_attach(12, 30, 2, &[]);
    refused_migrate(&mut h);
    assert!(right(&h), "{:#?}", h.verdict());
    let mut h = H::default();
    h.re_attach_unknown(0, 5, 2).attach(1, 10, 1, 1, 1);
    refused_migrate(&mut h);
    assert!(right(&h), "{:#?}", h.verdict());
    // The shard's only attach is of unknown outcome: it may not exist.
    let mut h = H::default();
    h.re_attach(0, 5, 2, &[]).attach_unknown(1, 10, 1, 1);
    refused_migrate(&mut h);
    assert!(right(&h), "{:#?}", h.verdict());
    // Other proofs that node 2 and the shard exist: a re-attach of node 2 refused as
    // exhausted (it registers all the same), a detach with an override (it creates the
    // shard), an inspect that shows it, a migrate acknowledged for it.
    // Shard 5, on node 2, at u32::MAX: a re-attach of node 2 is refused, rightly.
    let detach_with_override = Request::Attach {
        shard: shard(1),
        node: None,
        generation_override: Some(7),
    };
    let mut h = H::default();
    h.attach_at_the_top(0, 1, 5, 2).re_attach_exhausted(2, 5, 2);
    h.ok(
        1,
        10,
        detach_with_override,
        Answer::Generation { generation: None },
    );
    refused_migrate(&mut h);
    assert!(wrong(&h), "{:#?}", h.verdict());
    let mut h = H::default();
    h.re_attach(0, 5, 2, &[])
        .attach_unknown(1, 8, 1, 1)
        .inspect(9, 10, 1, Some((1, 1)));
    refused_migrate(&mut h);
    assert!(wrong(&h), "{:#?}", h.verdict());
    let mut h = H::default();
    h.re_attach(0, 5, 2, &[]).attach_unknown(1, 8, 1, 1).ok(
        9,
        10,
        Request::Migrate {
            shard: shard(1),
            node: NodeId(2),
        },
        Answer::Migrated { generation: 2 },
    );
    refused_migrate(&mut h);
    assert!(wrong(&h), "{:#?}", h.verdict());

    // Exhausted, with no generation anywhere near u32::MAX.
    let exhausted = "tenant shard has used every generation";
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .refused(11, 20, attach_request(1, Some(2)), 409, exhausted);
    assert!(wrong(&h), "{:#?}", h.verdict());
    // After an override at the top, it may be.
    let mut h = H::default();
    h.attach_at_the_top(0, 10, 1, 1)
        .refused(11, 20, attach_request(1, Some(2)), 409, exhausted);
    assert!(right(&h), "{:#?}", h.verdict());

    // The registry never refuses a validate.
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1).refused(
        11,
        20,
        Request::Validate {
            tenants: vec![(shard(1), 1)],
        },
        400,
        "bad request",
    );
    assert!(wrong(&h), "{:#?}", h.verdict());
}

#[test]
fn an_exhausted_budget_is_inconclusive_not_a_pass() {
    let mut h = H::default();
    for i in 0..30 {
        h.attach_unknown(i, i + 1, 1, i + 1);
    }
    h.validate(100, 101, 1, 31, true);
    let verdict = check_with_budget(&h.0, 1_000);
    assert!(!verdict.passed());
    assert_eq!(verdict.inconclusive, [shard(1)]);
}

/// A shard retired early and read again at the end of a long run: an attach of unknown
/// outcome explains the final answer (it landed between two early operations, or after
/// the last read), and in between come hundreds of re-attaches of its nodes, some of
/// unknown outcome too, none of which can touch it while it is detached. The search must
/// decide this within the default budget both ways (it once ran out of it on such shards
/// of an hour's run).
#[test]
fn a_late_answer_explained_by_an_early_write_of_unknown_outcome_is_decided() {
    let mut h = H::default();
    h.attach(0, 10, 1, 1, 1)
        .detach(20, 30, 1)
        .attach_unknown(40, 50, 1, 2)
        .inspect(60, 80, 1, None)
        .detach(70, 75, 1);
    for round in 0..400u64 {
        let at = 1_000 + round * 100;
        let node = 1 + round % 2;
        h.re_attach(at, at + 60, node, &[])
            .re_attach_unknown(at + 10, at + 20, 3 - node)
            .inspect(at + 30, at + 90, 1, None);
    }
    h.inspect(100_000, 100_010, 1, None)
        .validate(100_020, 100_030, 1, 2, true);
    assert_passes(&h);
    // Then generation 1 again: generations never go back, whatever landed when.
    h.validate(100_040, 100_050, 1, 1, true);
    assert!(search_rejects(&h), "{:#?}", h.verdict());
}

/// Histories of a correct system, generated from the real registry: operations take
/// effect one at a time at points inside their call windows, some writes lose their
/// answer (and may or may not take effect), and clients are sequential. The checker must
/// accept every one: a false alarm would make every chaos run fail for nothing. This
/// also holds the checker's model to the registry's actual rules.
#[test]
fn histories_of_the_real_registry_always_pass() {
    use pageserver_controller::domain::{Generation, Registry};
    use rand::{Rng, SeedableRng};

    for seed in 0..300u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut registry = Registry::default();
        let clients = rng.gen_range(2..6usize);
        let shards: Vec<TenantShardId> = (0..rng.gen_range(1..4u8)).map(shard).collect();
        let mut client_free_at = vec![0u64; clients];
        let mut ops = Vec::new();
        let mut point = 0u64;
        for id in 0..rng.gen_range(20..120u64) {
            point += rng.gen_range(1..20);
            // A client that is free by this point issues the operation.
            let ready: Vec<usize> = (0..clients)
                .filter(|c| client_free_at[*c] <= point)
                .collect();
            let Some(&client) = ready.get(rng.gen_range(0..ready.len().max(1))) else {
                continue;
            };
            let call = point - rng.gen_range(0..=(point - client_free_at[client]).min(30));
            let ret = point + rng.gen_range(0..30);
            client_free_at[client] = ret + 1;
            let s = shards[rng.gen_range(0..shards.len())];
            let node = NodeId(rng.gen_range(1..4));
            let request = match rng.gen_range(0..7) {
                0 | 1 => Request::Attach {
                    shard: s,
                    node: Some(node),
                    generation_override: rng.gen_bool(0.1).then_some(7),
                },
                2 => Request::Attach {
                    shard: s,
                    node: None,
                    generation_override: None,
                },
                3 => Request::Migrate { shard: s, node },
                4 => Request::ReAttach { node },
                5 => Request::Validate {
                    tenants: vec![(s, rng.gen_range(1..6))],
                },
                _ => Request::Inspect { shard: s },
            };
            let lost = request.is_write() && rng.gen_bool(0.15);
            let applies = !lost || rng.gen_bool(0.5);
            let outcome = match &request {
                _ if lost => {
                    if applies {
                        let command = request.command().expect("a write");
                        registry.apply(&command);
                    }
                    Outcome::Indeterminate {
                        reason: "answer lost".into(),
                    }
                }
                Request::Validate { tenants } => Outcome::Ok {
                    answer: Answer::Validated {
                        tenants: registry
                            .validate(tenants.iter().map(|(s, g)| (*s, Generation(*g))))
                            .into_iter()
                            .map(|v| (v.shard, v.valid))
                            .collect(),
                    },
                },
                Request::Inspect { shard } => Outcome::Ok {
                    answer: Answer::Attachment {
                        attachment: registry.attachment(shard).map(|(g, n)| (g.0, n)),
                    },
                },
                // An answer or the registry's own refusal, with the status the API
                // gives it.
                write => Outcome::of_applied(registry.apply(&write.command().expect("a write"))),
            };
            ops.push(Op {
                id,
                client: format!("c{client}"),
                via: 1,
                call_us: call,
                return_us: ret,
                request,
                outcome,
            });
        }
        let verdict = check(&ops);
        assert!(
            verdict.passed(),
            "seed {seed}: a correct history was rejected: {verdict:#?}\n{ops:#?}"
        );
    }
}
