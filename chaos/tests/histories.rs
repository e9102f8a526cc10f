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

/// `chaos check` reads a saved history again, and its `--max-steps` is the search's
/// budget: the same fixture is inconclusive (a failed verdict, never a pass) with almost
/// no budget and passes with the default one.
#[test]
fn chaos_check_gives_its_verdict_within_the_budget_it_is_given() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sim-seed-2759-history.jsonl");
    let check = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_chaos"))
            .arg("check")
            .arg(&path)
            .args(extra)
            .output()
            .expect("running chaos check");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (passed, out) = check(&[]);
    assert!(passed && out.contains("verdict: PASS"), "{out}");
    assert!(!out.contains("INCONCLUSIVE"), "{out}");

    let (passed, out) = check(&["--max-steps", "1"]);
    assert!(!passed, "{out}");
    assert!(out.contains("INCONCLUSIVE: shard"), "{out}");
    assert!(out.contains("verdict: FAIL"), "{out}");
    assert!(!out.contains("VIOLATION"), "{out}");
}
