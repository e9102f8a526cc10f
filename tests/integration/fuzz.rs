//! Property-based fuzzing of everything decoded from the network or disk: request JSON,
//! tenant shard ids, Raft RPC bodies and log entries, snapshots, backups. None of it may
//! panic, whatever the bytes. CI runs a short pass (proptest's default case count); for a
//! long run: `PROPTEST_CASES=200000 cargo test --release --test integration fuzz`.

use proptest::prelude::*;

use pageserver_controller::api::json::parse;
use pageserver_controller::api::types::*;
use pageserver_controller::backup::{self, BackupHeader};
use pageserver_controller::consensus::{Proposal, TypeConfig};
use pageserver_controller::domain::{Command, NodeId, Registry, TenantId, TenantShardId};

fn tenant_shard_id() -> impl Strategy<Value = TenantShardId> {
    (any::<[u8; 16]>(), 0u8..=255, 0u8..=255).prop_map(|(bytes, a, b)| {
        let tenant = TenantId::from_bytes(bytes);
        let (count, number) = (a.max(b), a.min(b));
        TenantShardId::sharded(tenant, number, count).unwrap_or(TenantShardId::unsharded(tenant))
    })
}

/// Valid bytes, then damaged: truncated, bits flipped, or bytes inserted.
fn damaged(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len().max(1);
    prop_oneof![
        (0..len).prop_map({
            let valid = valid.clone();
            move |cut| valid[..cut.min(valid.len())].to_vec()
        }),
        (proptest::collection::vec((0..len, any::<u8>()), 1..8)).prop_map({
            let valid = valid.clone();
            move |flips| {
                let mut bytes = valid.clone();
                for (at, mask) in flips {
                    if let Some(b) = bytes.get_mut(at) {
                        *b ^= mask | 1;
                    }
                }
                bytes
            }
        }),
        (0..len, proptest::collection::vec(any::<u8>(), 1..16)).prop_map(move |(at, junk)| {
            let mut bytes = valid.clone();
            let at = at.min(bytes.len());
            bytes.splice(at..at, junk);
            bytes
        }),
    ]
}

fn sample_registry() -> Registry {
    let mut registry = Registry::default();
    for n in 0..20u8 {
        registry.apply(&Command::AttachHook {
            shard: TenantShardId::unsharded(TenantId::from_bytes([n; 16])),
            node: Some(NodeId(u64::from(n % 3))),
            generation_override: None,
        });
    }
    registry
}

fn sample_append() -> openraft::raft::AppendEntriesRequest<TypeConfig> {
    let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 7);
    openraft::raft::AppendEntriesRequest {
        vote: openraft::Vote::new_committed(3, 1),
        prev_log_id: Some(log_id),
        entries: vec![openraft::Entry {
            log_id,
            payload: openraft::EntryPayload::Normal(Proposal {
                commands: vec![Command::ReAttach {
                    node: NodeId(2),
                    register: None,
                }],
            }),
        }],
        leader_commit: Some(log_id),
    }
}

proptest! {
    #[test]
    fn tenant_shard_ids_parse_strictly_and_round_trip(text in "\\PC{0,40}", hexish in "[0-9a-fA-F-]{30,40}") {
        for candidate in [&text, &hexish] {
            if let Ok(id) = candidate.parse::<TenantShardId>() {
                prop_assert_eq!(&id.to_string(), candidate, "only the canonical spelling parses");
            }
        }
    }

    #[test]
    fn valid_tenant_shard_ids_round_trip(id in tenant_shard_id()) {
        prop_assert_eq!(id.to_string().parse::<TenantShardId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(&json, &format!("\"{id}\""), "JSON carries the canonical form");
        prop_assert_eq!(serde_json::from_str::<TenantShardId>(&json).unwrap(), id);
    }

    #[test]
    fn request_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), text in "\\PC{0,200}") {
        for input in [bytes.as_slice(), text.as_bytes()] {
            let _ = parse::<ReAttachRequest>(input);
            let _ = parse::<ValidateRequest>(input);
            let _ = parse::<AttachHookRequest>(input);
            let _ = parse::<InspectRequest>(input);
            let _ = parse::<NodeRegisterRequest>(input);
            let _ = parse::<NodeConfigureRequest>(input);
            let _ = parse::<TenantShardMigrateRequest>(input);
            let _ = parse::<AddMemberRequest>(input);
            let _ = parse::<TransferLeaderRequest>(input);
        }
    }

    #[test]
    fn structured_request_json_never_panics(
        ids in proptest::collection::vec("[0-9a-f]{30,34}(-[0-9a-f]{4})?", 0..8),
        gens in proptest::collection::vec(any::<i64>(), 0..8),
    ) {
        let tenants: Vec<serde_json::Value> = ids.iter().zip(gens.iter().chain(std::iter::repeat(&1)))
            .map(|(id, g)| serde_json::json!({"id": id, "gen": g}))
            .collect();
        let body = serde_json::json!({"tenants": tenants}).to_string();
        if let Ok(parsed) = parse::<ValidateRequest>(body.as_bytes()) {
            prop_assert_eq!(parsed.tenants.len(), ids.len());
        }
    }

    #[test]
    fn raft_rpc_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        use controller_raft::codec::decode;
        let _ = decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&bytes);
        let _ = decode::<openraft::raft::VoteRequest<u64>>(&bytes);
        let _ = decode::<openraft::raft::InstallSnapshotRequest<TypeConfig>>(&bytes);
        let _ = decode::<openraft::Entry<TypeConfig>>(&bytes);
        let _ = decode::<Result<openraft::raft::AppendEntriesResponse<u64>, openraft::error::RaftError<u64>>>(&bytes);
    }

    #[test]
    fn damaged_raft_rpc_bodies_never_panic(bytes in damaged(controller_raft::codec::encode(&sample_append()).unwrap())) {
        let _ = controller_raft::codec::decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&bytes);
    }

    #[test]
    fn damaged_snapshots_are_refused_without_panic(bytes in damaged({
        let meta = openraft::SnapshotMeta::<u64, controller_raft::Member> {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "fuzz".into(),
        };
        let mut registry_bytes = Vec::new();
        // Encode through the real snapshot writer to get the real layout.
        let dir = tempfile::tempdir().unwrap();
        controller_storage::write_snapshot(dir.path(), &meta, &sample_registry()).unwrap();
        registry_bytes.extend(std::fs::read(dir.path().join("current.snap")).unwrap());
        registry_bytes
    })) {
        let _ = controller_storage::decode_snapshot::<Registry>(&bytes);
    }

    #[test]
    fn damaged_backups_are_refused_without_panic(bytes in damaged(backup::encode(&BackupHeader {
        cluster_name: "c".into(),
        cluster_id: "1".into(),
        taken_at_unix_ms: 0,
        read_index: 1,
        shards: 20,
        nodes: 0,
        written_by: "fuzz".into(),
    }, &sample_registry()))) {
        let _ = backup::decode(&bytes);
    }
}
