//! The rules a pageserver relies on, one test each, including Neon's own cases.

use super::*;

fn shard(n: u8) -> TenantShardId {
    TenantShardId::unsharded(TenantId::from_bytes([n; 16]))
}

fn attach(reg: &mut Registry, s: TenantShardId, node: u64) -> Outcome {
    reg.apply(&Command::AttachHook {
        shard: s,
        node: Some(NodeId(node)),
        generation_override: None,
    })
}

fn gen_of(outcome: Outcome) -> u32 {
    match outcome {
        Outcome::Attached {
            generation: Some(g),
        } => g.0,
        other => panic!("expected an attach with a generation, got {other:?}"),
    }
}

fn address(http_port: u16) -> NodeAddress {
    NodeAddress {
        listen_pg_addr: "ps-1".into(),
        listen_pg_port: 6400,
        listen_http_addr: "ps-1".into(),
        listen_http_port: http_port,
    }
}

fn register(reg: &mut Registry, node: u64, http_port: u16) -> Outcome {
    reg.apply(&Command::RegisterNode {
        node: NodeId(node),
        address: address(http_port),
        availability_zone_id: None,
    })
}

fn validate(reg: &Registry, s: TenantShardId, generation: u32) -> Option<bool> {
    let answers = reg.validate([(s, Generation(generation))]);
    answers.first().map(|v| v.valid)
}

#[test]
fn first_attach_is_generation_one() {
    let mut reg = Registry::default();
    assert_eq!(gen_of(attach(&mut reg, shard(1), 1)), 1);
    assert_eq!(reg.attachment(&shard(1)), Some((Generation(1), NodeId(1))));
}

#[test]
fn every_attach_is_strictly_higher_even_to_the_same_node() {
    let mut reg = Registry::default();
    let gens: Vec<u32> = (0..5)
        .map(|i| gen_of(attach(&mut reg, shard(1), 1 + i % 2)))
        .collect();
    assert_eq!(gens, vec![1, 2, 3, 4, 5]);
}

#[test]
fn detach_keeps_the_generation_and_the_next_attach_is_above_it() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    attach(&mut reg, shard(1), 1);
    let detached = reg.apply(&Command::AttachHook {
        shard: shard(1),
        node: None,
        generation_override: None,
    });
    assert_eq!(detached, Outcome::Attached { generation: None });
    assert_eq!(
        reg.attachment(&shard(1)),
        None,
        "inspect shows no attachment"
    );
    assert_eq!(
        reg.shard(&shard(1)).unwrap().generation,
        Some(Generation(2))
    );
    assert_eq!(gen_of(attach(&mut reg, shard(1), 2)), 3);
}

#[test]
fn detaching_an_unknown_shard_creates_nothing() {
    let mut reg = Registry::default();
    reg.apply(&Command::AttachHook {
        shard: shard(9),
        node: None,
        generation_override: None,
    });
    assert_eq!(reg.shard_count(), 0);
}

#[test]
fn override_seeds_a_new_shard_so_first_attach_is_override_plus_one() {
    let mut reg = Registry::default();
    let outcome = reg.apply(&Command::AttachHook {
        shard: shard(1),
        node: Some(NodeId(1)),
        generation_override: Some(Generation(41)),
    });
    assert_eq!(gen_of(outcome), 42);
}

#[test]
fn override_never_rewinds_an_existing_shard() {
    let mut reg = Registry::default();
    for _ in 0..5 {
        attach(&mut reg, shard(1), 1);
    }
    let outcome = reg.apply(&Command::AttachHook {
        shard: shard(1),
        node: Some(NodeId(1)),
        generation_override: Some(Generation(1)),
    });
    assert_eq!(gen_of(outcome), 6);
}

#[test]
fn re_attach_lists_only_the_callers_shards_and_increments_them() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    attach(&mut reg, shard(2), 1);
    attach(&mut reg, shard(2), 1);
    attach(&mut reg, shard(3), 2);
    let outcome = reg.apply(&Command::ReAttach {
        node: NodeId(1),
        register: None,
    });
    assert_eq!(
        outcome,
        Outcome::ReAttached {
            shards: vec![(shard(1), Generation(2)), (shard(2), Generation(3))]
        }
    );
    assert_eq!(
        reg.shard(&shard(3)).unwrap().generation,
        Some(Generation(1))
    );
}

#[test]
fn re_attach_again_increments_again() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    let re_attach = Command::ReAttach {
        node: NodeId(1),
        register: None,
    };
    reg.apply(&re_attach);
    let outcome = reg.apply(&re_attach);
    assert_eq!(
        outcome,
        Outcome::ReAttached {
            shards: vec![(shard(1), Generation(3))]
        }
    );
}

#[test]
fn re_attach_of_an_unknown_node_lists_nothing() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    let outcome = reg.apply(&Command::ReAttach {
        node: NodeId(7),
        register: None,
    });
    assert_eq!(outcome, Outcome::ReAttached { shards: vec![] });
}

#[test]
fn re_attach_does_not_list_shards_moved_elsewhere() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    attach(&mut reg, shard(1), 2);
    let outcome = reg.apply(&Command::ReAttach {
        node: NodeId(1),
        register: None,
    });
    assert_eq!(outcome, Outcome::ReAttached { shards: vec![] });
}

#[test]
fn re_attach_registers_inline_and_refuses_conflicting_addresses() {
    let mut reg = Registry::default();
    let first = reg.apply(&Command::ReAttach {
        node: NodeId(1),
        register: Some((address(9898), Some("az-1".into()))),
    });
    assert_eq!(first, Outcome::ReAttached { shards: vec![] });
    assert_eq!(
        reg.node(&NodeId(1))
            .unwrap()
            .availability_zone_id
            .as_deref(),
        Some("az-1")
    );
    attach(&mut reg, shard(1), 1);
    let conflicting = reg.apply(&Command::ReAttach {
        node: NodeId(1),
        register: Some((address(9999), None)),
    });
    assert!(matches!(
        conflicting,
        Outcome::Refused(Refusal::NodeConflict { .. })
    ));
    assert_eq!(
        reg.shard(&shard(1)).unwrap().generation,
        Some(Generation(1)),
        "a refused re-attach increments nothing"
    );
}

#[test]
fn attach_elsewhere_invalidates_the_old_generation() {
    let mut reg = Registry::default();
    let old = gen_of(attach(&mut reg, shard(1), 1));
    assert_eq!(validate(&reg, shard(1), old), Some(true));
    let new = gen_of(attach(&mut reg, shard(1), 2));
    assert_eq!(validate(&reg, shard(1), old), Some(false));
    assert_eq!(validate(&reg, shard(1), new), Some(true));
}

#[test]
fn validate_is_equality_not_at_least() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    attach(&mut reg, shard(1), 1);
    assert_eq!(validate(&reg, shard(1), 1), Some(false));
    assert_eq!(validate(&reg, shard(1), 2), Some(true));
    assert_eq!(
        validate(&reg, shard(1), 3),
        Some(false),
        "a future generation is not valid"
    );
}

#[test]
fn validate_omits_unknown_shards_and_keeps_order() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    attach(&mut reg, shard(3), 1);
    let answers = reg.validate([
        (shard(3), Generation(1)),
        (shard(2), Generation(1)),
        (shard(1), Generation(7)),
    ]);
    assert_eq!(
        answers,
        vec![
            Validity {
                shard: shard(3),
                valid: true
            },
            Validity {
                shard: shard(1),
                valid: false
            },
        ]
    );
}

#[test]
fn register_is_idempotent_and_conflicting_addresses_are_refused() {
    let mut reg = Registry::default();
    assert_eq!(register(&mut reg, 1, 9898), Outcome::NodeRegistered);
    assert_eq!(register(&mut reg, 1, 9898), Outcome::NodeRegistered);
    assert!(matches!(
        register(&mut reg, 1, 9899),
        Outcome::Refused(Refusal::NodeConflict {
            node: NodeId(1),
            ..
        })
    ));
    assert_eq!(reg.node(&NodeId(1)).unwrap().address, address(9898));
    assert_eq!(reg.node_count(), 1);
}

#[test]
fn a_node_registered_again_in_another_zone_takes_it_and_one_without_a_zone_keeps_it() {
    let mut reg = Registry::default();
    let in_zone = |zone: Option<&str>| Command::RegisterNode {
        node: NodeId(1),
        address: address(9898),
        availability_zone_id: zone.map(str::to_owned),
    };
    let zone = |reg: &Registry| reg.node(&NodeId(1)).unwrap().availability_zone_id.clone();
    assert_eq!(reg.apply(&in_zone(Some("az-1"))), Outcome::NodeRegistered);
    // A pageserver moved to another zone must still be able to register (and re-attach):
    // the zone decides no generation.
    assert_eq!(reg.apply(&in_zone(Some("az-2"))), Outcome::NodeRegistered);
    assert_eq!(zone(&reg).as_deref(), Some("az-2"));
    // An older pageserver sends no zone: what was known stays.
    assert_eq!(reg.apply(&in_zone(None)), Outcome::NodeRegistered);
    assert_eq!(zone(&reg).as_deref(), Some("az-2"));
}

#[test]
fn migrate_moves_to_a_registered_node_with_a_new_generation() {
    let mut reg = Registry::default();
    register(&mut reg, 2, 9898);
    attach(&mut reg, shard(1), 1);
    let moved = reg.apply(&Command::Migrate {
        shard: shard(1),
        node: NodeId(2),
    });
    assert_eq!(
        moved,
        Outcome::Migrated {
            generation: Generation(2)
        }
    );
    assert_eq!(reg.attachment(&shard(1)), Some((Generation(2), NodeId(2))));
    assert_eq!(reg.attached_to(&NodeId(1)), 0);
    assert_eq!(reg.attached_to(&NodeId(2)), 1);
}

#[test]
fn migrate_to_the_current_node_issues_nothing() {
    let mut reg = Registry::default();
    register(&mut reg, 1, 9898);
    attach(&mut reg, shard(1), 1);
    let outcome = reg.apply(&Command::Migrate {
        shard: shard(1),
        node: NodeId(1),
    });
    assert_eq!(
        outcome,
        Outcome::Migrated {
            generation: Generation(1)
        }
    );
    assert_eq!(validate(&reg, shard(1), 1), Some(true));
}

#[test]
fn migrate_refuses_unknown_nodes_and_shards() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    assert_eq!(
        reg.apply(&Command::Migrate {
            shard: shard(1),
            node: NodeId(5)
        }),
        Outcome::Refused(Refusal::UnknownNode(NodeId(5)))
    );
    register(&mut reg, 5, 9898);
    assert_eq!(
        reg.apply(&Command::Migrate {
            shard: shard(2),
            node: NodeId(5)
        }),
        Outcome::Refused(Refusal::UnknownShard(shard(2)))
    );
}

#[test]
fn generation_exhaustion_is_refused_not_wrapped() {
    let mut reg = Registry::default();
    let outcome = reg.apply(&Command::AttachHook {
        shard: shard(1),
        node: Some(NodeId(1)),
        generation_override: Some(Generation(u32::MAX - 1)),
    });
    assert_eq!(gen_of(outcome), u32::MAX);
    assert_eq!(
        attach(&mut reg, shard(1), 1),
        Outcome::Refused(Refusal::GenerationExhausted(shard(1)))
    );
    assert_eq!(
        reg.apply(&Command::ReAttach {
            node: NodeId(1),
            register: None
        }),
        Outcome::Refused(Refusal::GenerationExhausted(shard(1)))
    );
    assert_eq!(validate(&reg, shard(1), u32::MAX), Some(true));
}

/// The floor a bump sets stays below the top, so that an attach of a shard seeded at it
/// can succeed: seeded at u32::MAX, the attach that created the shard would be refused,
/// leaving behind a shard no one was given a generation of. (Refused offline, at the
/// restore: changing what an attach does in the log would make replicas of two versions
/// disagree during an upgrade.)
#[test]
fn a_bump_never_puts_the_floor_at_the_top() {
    let mut reg = Registry::default();
    assert_eq!(reg.bump_generations(u32::MAX), Err(Refusal::FloorExhausted));
    assert_eq!(reg.floor(), None, "a refused bump changed the floor");
    assert_eq!(reg.bump_generations(u32::MAX - 1), Ok(0));
    assert_eq!(gen_of(attach(&mut reg, shard(1), 1)), u32::MAX);
    assert_eq!(validate(&reg, shard(1), u32::MAX), Some(true));
}

#[test]
fn delete_node_is_refused_while_shards_are_attached() {
    let mut reg = Registry::default();
    register(&mut reg, 1, 9898);
    attach(&mut reg, shard(1), 1);
    assert_eq!(
        reg.apply(&Command::DeleteNode { node: NodeId(1) }),
        Outcome::Refused(Refusal::NodeInUse {
            node: NodeId(1),
            attached: 1
        })
    );
    reg.apply(&Command::AttachHook {
        shard: shard(1),
        node: None,
        generation_override: None,
    });
    assert_eq!(
        reg.apply(&Command::DeleteNode { node: NodeId(1) }),
        Outcome::NodeDeleted
    );
    assert!(reg.node(&NodeId(1)).is_none());
}

#[test]
fn configure_node_sets_scheduling() {
    let mut reg = Registry::default();
    register(&mut reg, 1, 9898);
    reg.apply(&Command::ConfigureNode {
        node: NodeId(1),
        scheduling: SchedulingPolicy::Draining,
    });
    assert_eq!(
        reg.node(&NodeId(1)).unwrap().scheduling,
        SchedulingPolicy::Draining
    );
}

#[test]
fn snapshot_round_trip_rebuilds_the_attachment_index() {
    let mut reg = Registry::default();
    register(&mut reg, 1, 9898);
    for n in 0..20 {
        attach(&mut reg, shard(n), u64::from(n % 3));
    }
    let bytes = bincode::serialize(&reg).unwrap();
    let mut restored: Registry = bincode::deserialize(&bytes).unwrap();
    assert_eq!(restored, reg);
    let re_attach = Command::ReAttach {
        node: NodeId(2),
        register: None,
    };
    assert_eq!(restored.apply(&re_attach), reg.apply(&re_attach));
}

#[test]
fn a_frozen_registry_encodes_as_the_registry_did_and_misses_later_writes() {
    let mut reg = Registry::default();
    register(&mut reg, 1, 9898);
    for n in 0..20 {
        attach(&mut reg, shard(n), 1);
    }
    let before = bincode::serialize(&reg).unwrap();
    let frozen = reg.frozen();
    assert_eq!((frozen.shard_count(), frozen.node_count()), (20, 1));
    // Writes after the freeze: a re-attach of every shard, a new shard, a new node.
    reg.apply(&Command::ReAttach {
        node: NodeId(1),
        register: None,
    });
    attach(&mut reg, shard(200), 1);
    register(&mut reg, 2, 9899);
    assert_eq!(bincode::serialize(&frozen).unwrap(), before);
    let restored: Registry = bincode::deserialize(&before).unwrap();
    assert!(restored.validate([(shard(3), Generation(1))])[0].valid);
    assert!(!reg.validate([(shard(3), Generation(1))])[0].valid);
}

#[test]
fn replicas_applying_the_same_commands_agree() {
    // Determinism: two registries fed the same sequence answer identically.
    let commands: Vec<Command> = (0..200u32)
        .map(|i| match i % 4 {
            0 | 1 => Command::AttachHook {
                shard: shard((i % 7) as u8),
                node: Some(NodeId(u64::from(i % 3))),
                generation_override: None,
            },
            2 => Command::ReAttach {
                node: NodeId(u64::from(i % 3)),
                register: None,
            },
            _ => Command::AttachHook {
                shard: shard((i % 5) as u8),
                node: None,
                generation_override: None,
            },
        })
        .collect();
    let (mut a, mut b) = (Registry::default(), Registry::default());
    for command in &commands {
        assert_eq!(a.apply(command), b.apply(command));
    }
    assert_eq!(a, b);
}

#[test]
fn bumping_raises_every_generation_and_keeps_attachments() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    attach(&mut reg, shard(2), 2);
    reg.apply(&Command::AttachHook {
        shard: shard(2),
        node: None,
        generation_override: None,
    });
    assert_eq!(reg.bump_generations(1000), Ok(2));
    assert_eq!(
        reg.attachment(&shard(1)),
        Some((Generation(1001), NodeId(1)))
    );
    assert_eq!(
        reg.shard(&shard(2)).unwrap().generation,
        Some(Generation(1001))
    );
    assert_eq!(
        validate(&reg, shard(1), 1),
        Some(false),
        "old generations are superseded"
    );
    assert_eq!(gen_of(attach(&mut reg, shard(2), 3)), 1002);
    let re_attached = reg.apply(&Command::ReAttach {
        node: NodeId(1),
        register: None,
    });
    assert_eq!(
        re_attached,
        Outcome::ReAttached {
            shards: vec![(shard(1), Generation(1002))]
        }
    );
}

/// A backup (or a survivor) does not hold the shards created after it was taken, yet
/// pageservers may hold generations of them: after the bump such a shard starts above
/// the floor, not at 1, and an override below the floor does not lower it. The floor is
/// the highest generation held plus the bump, so a shard split after the backup (its
/// children created with the parent's generation as their override) starts above what
/// its children were given.
#[test]
fn after_a_bump_a_shard_never_seen_starts_above_the_floor() {
    let mut reg = Registry::default();
    assert_eq!(reg.floor(), None);
    attach(&mut reg, shard(1), 1);
    for _ in 0..499 {
        attach(&mut reg, shard(1), 1);
    }
    // After the backup: a child of shard 1 created at its generation (500) and attached.
    // The backup is all that is left; the child's first attach after the bump must be
    // above 501.
    assert_eq!(reg.bump_generations(1000), Ok(1));
    assert_eq!(reg.floor(), Some(Generation(1500)));
    assert_eq!(
        reg.shard(&shard(1)).unwrap().generation,
        Some(Generation(1500))
    );
    assert_eq!(gen_of(attach(&mut reg, shard(2), 1)), 1501);
    let seeded_low = reg.apply(&Command::AttachHook {
        shard: shard(3),
        node: Some(NodeId(1)),
        generation_override: Some(Generation(5)),
    });
    assert_eq!(gen_of(seeded_low), 1501);
    let seeded_high = reg.apply(&Command::AttachHook {
        shard: shard(4),
        node: Some(NodeId(1)),
        generation_override: Some(Generation(5000)),
    });
    assert_eq!(gen_of(seeded_high), 5001);
    // A detach that seeds a shard seeds it at the floor at least.
    reg.apply(&Command::AttachHook {
        shard: shard(5),
        node: None,
        generation_override: Some(Generation(7)),
    });
    assert_eq!(
        reg.shard(&shard(5)).unwrap().generation,
        Some(Generation(1500))
    );
    // Bumps add up, from the highest generation held (shard 4's 5001).
    assert_eq!(reg.bump_generations(1000), Ok(5));
    assert_eq!(reg.floor(), Some(Generation(6001)));
    assert_eq!(gen_of(attach(&mut reg, shard(6), 1)), 6002);
    assert!(matches!(
        reg.bump_generations(u32::MAX),
        Err(Refusal::GenerationExhausted(_))
    ));
    // With no shard to refuse it, the floor itself may not wrap.
    let mut empty = Registry::default();
    assert_eq!(empty.bump_generations(u32::MAX - 1), Ok(0));
    assert_eq!(empty.bump_generations(10), Err(Refusal::FloorExhausted));
    assert_eq!(empty.floor(), Some(Generation(u32::MAX - 1)));
}

/// The floor is encoded after the shards and nodes, and only when there is one: a
/// registry without one encodes as before the floor existed, both decode to what was
/// encoded, and a version that knows no floor refuses one that has it (trailing bytes).
#[test]
fn the_floor_is_encoded_only_when_there_is_one() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    let without = controller_raft::codec::encode(&reg).unwrap();
    let decoded: Registry = controller_raft::codec::decode(&without).unwrap();
    assert_eq!((decoded.floor(), &decoded), (None, &reg));
    reg.bump_generations(10).unwrap();
    let with = controller_raft::codec::encode(&reg).unwrap();
    let decoded: Registry = controller_raft::codec::decode(&with).unwrap();
    assert_eq!((decoded.floor(), &decoded), (Some(Generation(11)), &reg));
    assert_eq!(
        with.len(),
        without.len() + 4,
        "the floor adds its u32 and nothing else"
    );
    assert_eq!(controller_raft::codec::encode(&reg.frozen()).unwrap(), with);
    // The layout before the floor, as earlier versions decode it: shards, then nodes.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Earlier {
        shards: super::shard_map::ShardMap,
        nodes: std::collections::BTreeMap<NodeId, NodeRecord>,
    }
    assert!(controller_raft::codec::decode::<Earlier>(&without).is_ok());
    assert!(controller_raft::codec::decode::<Earlier>(&with).is_err());
}

/// No command stores a shard without a generation, but a crafted or foreign backup may
/// hold one: after a restore set the floor, it starts above the floor like a shard not
/// seen before, whether an attach or a re-attach gives it its first generation.
#[test]
fn a_stored_shard_without_a_generation_starts_above_the_floor() {
    let mut shards = super::shard_map::ShardMap::default();
    for (s, node) in [(1, 1), (2, 2)] {
        shards.insert(
            shard(s),
            ShardRecord {
                generation: None,
                node: Some(NodeId(node)),
            },
        );
    }
    let nodes = std::collections::BTreeMap::<NodeId, NodeRecord>::new();
    let bytes = controller_raft::codec::encode(&(shards, nodes, Generation(500))).unwrap();
    let mut reg: Registry = controller_raft::codec::decode(&bytes).unwrap();
    assert_eq!(reg.floor(), Some(Generation(500)));
    assert_eq!(
        attach(&mut reg, shard(1), 3),
        Outcome::Attached {
            generation: Some(Generation(501))
        }
    );
    assert_eq!(
        reg.apply(&Command::ReAttach {
            node: NodeId(2),
            register: None
        }),
        Outcome::ReAttached {
            shards: vec![(shard(2), Generation(501))]
        }
    );
}

#[test]
fn bumping_past_u32_is_refused_whole() {
    let mut reg = Registry::default();
    attach(&mut reg, shard(1), 1);
    reg.apply(&Command::AttachHook {
        shard: shard(2),
        node: Some(NodeId(1)),
        generation_override: Some(Generation(u32::MAX - 5)),
    });
    assert_eq!(
        reg.bump_generations(10),
        Err(Refusal::GenerationExhausted(shard(2)))
    );
    assert_eq!(
        reg.shard(&shard(1)).unwrap().generation,
        Some(Generation(1))
    );
}
