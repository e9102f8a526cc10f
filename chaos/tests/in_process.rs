//! Hundreds of seeded fault schedules with the replicas in this process (see
//! `chaos::sim`): isolate, cut one way, partition, lose and delay messages, make the
//! leader deaf, crash and restart from disk, under concurrent clients; every history is
//! checked. A failing seed is replayed alone with `cargo run -p chaos -- sim
//! --first-seed N --seeds 1`; more seeds: `cargo run --release -p chaos -- sim --seeds
//! 5000`.

/// One test of this file at a time: each runs clusters with second-long deadlines, and
/// the schedules already run eight at once on a machine that may have two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fault_schedules_give_no_wrong_answer() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos-sim");
    let results = chaos::sim::run_seeds(1, 200, 8, &root, 4)
        .await
        .expect("running the schedules");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            format!(
                "seed {} ({} replicas; {}): {:?} {:?} inconclusive {:?} (history in {})",
                r.seed,
                r.replicas,
                r.faults.join(", "),
                r.liveness,
                r.verdict.violations,
                r.verdict.inconclusive,
                root.join(format!("seed-{}", r.seed)).display()
            )
        })
        .collect();
    assert_eq!(results.len(), 200);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Runs the named in-process scenario (see `chaos::sim::scenario`) and asserts it passed.
async fn scenario_passes(name: &str) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos-sim");
    let result = chaos::sim::scenario::run(name, &root)
        .await
        .expect("a scenario by that name")
        .expect("the scenario ran");
    eprintln!("{result:#?}");
    assert!(result.passed(), "{result:#?}");
}

/// The regression scenario `truncated-write-retried`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_truncated_on_a_deposed_leader_is_not_applied_twice() {
    scenario_passes("truncated-write-retried").await;
}

/// The regression scenario `isolated-leader-refuses`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_refuses_writes_it_cannot_commit() {
    scenario_passes("isolated-leader-refuses").await;
}

/// The regression scenario `handover-waits-for-writes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_waits_for_the_writes_in_flight() {
    scenario_passes("handover-waits-for-writes").await;
}
