//! Recorded histories the checker once could not decide.

/// In-process seed 2759 (five replicas: isolate, crash, deaf leader, isolate), recorded
/// when a write that reached a replica that had just lost its leadership still counted as
/// of unknown fate: one shard has 44 writes of unknown outcome and 24 re-attaches of
/// unknown outcome among 22 observed operations. The search used to exhaust its budget
/// on it (placing observed operations before open ones buried a wrong guess); it must
/// decide it, and it is linearizable.
#[test]
fn a_shard_with_dozens_of_writes_of_unknown_outcome_is_decided() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sim-seed-2759-history.jsonl");
    let ops = chaos::history::read_jsonl(&path).expect("reading the fixture");
    let verdict = chaos::checker::check(&ops);
    assert!(verdict.passed(), "{verdict:#?}");
    assert_eq!(verdict.shards, 6);
}
