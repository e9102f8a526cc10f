//! The chaos harness against real processes, as CI runs it: a three-replica and a
//! five-replica cluster, each through one round of every fault kind (in an order drawn
//! from its seed) under Neon-shaped traffic. Either fails on any wrong answer, and on a
//! fault the cluster does not recover from.
//!
//! A longer run is `cargo run -p chaos -- --duration-secs 1800` (see RELIABILITY.md).

use std::time::Duration;

use chaos::cluster::ServerCommand;
use chaos::faults::{FaultKind, Timings};
use chaos::run::{run, RunConfig};
use chaos::traffic::TrafficConfig;

fn config(seed: u64, replicas: u64, faults: Vec<FaultKind>) -> RunConfig {
    RunConfig {
        seed,
        replicas,
        // One round: every listed fault once.
        duration: Duration::ZERO,
        faults,
        script: None,
        out: std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos"),
        server: ServerCommand::embedded(env!("CARGO_BIN_EXE_chaos")),
        serve_args: RunConfig::default_serve_args(),
        traffic: TrafficConfig {
            seed,
            ..TrafficConfig::default()
        },
        timings: Timings::default(),
        quiet_ms: (200, 600),
        check_every: 0,
        keep: false,
        auth: false,
        tls: false,
        progress_every: Duration::from_secs(10),
        replay: format!("cargo test -p chaos --test processes (seed {seed})"),
    }
}

/// One cluster at a time: on two busy cores, parallel clusters starve each other's
/// heartbeats, and the health checks would measure the machine rather than the faults.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `config`, asserts it passed with its faults really applied, and answers the run
/// folder if it was kept.
async fn assert_passes(config: RunConfig) -> Option<std::path::PathBuf> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let result = run(config).await.expect("the run itself failed");
    let text = chaos::report::render(&result.summary);
    eprintln!("{text}");
    assert!(
        result.summary.passed(),
        "{text}\nrun folder (history, logs, data dirs, timeline.svg): {:?}",
        result.folder
    );
    // The cuts between two replicas were real: the proxy knew who sent nearly every
    // peer connection (with TLS it can only ask /proc).
    let (all, unattributed) = (
        result.summary.peer_connections,
        result.summary.unattributed_connections,
    );
    assert!(
        unattributed * 20 <= all.max(100),
        "{unattributed} of {all} peer connections were not attributed to a sender:\n{text}"
    );
    result.folder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_under_traffic_gives_no_wrong_answer() {
    assert_passes(config(20261127, 3, FaultKind::ALL.to_vec())).await;
}

/// With authentication on, as the StatefulSet deploys it: every Raft request, join and
/// forwarded call is checked with tokens through every fault. (Not with `--tls` here:
/// the proxy can then only attribute connections through `/proc`, and on a loaded
/// two-core machine five replicas' reconnects outran it until the cluster fell apart;
/// TLS runs are made by hand, see RELIABILITY.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_on_five_replicas_with_authentication_gives_no_wrong_answer() {
    let mut config = config(5, 5, FaultKind::ALL.to_vec());
    config.auth = true;
    config.replay += " with --auth";
    assert_passes(config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_regression_scenarios_give_no_wrong_answer() {
    for scenario in chaos::scenarios::SCENARIOS {
        let mut config = config(11, scenario.replicas, Vec::new());
        config.script = Some(scenario.steps.to_vec());
        config.replay = format!("cargo run -p chaos -- scenario {} --seed 11", scenario.name);
        eprintln!("scenario {}", scenario.name);
        assert_passes(config).await;
    }
}

/// A full disk stops the replica with a message, a start on the still-full disk is
/// refused with one, and once there is space it starts from the same data dir: for the
/// leader and for a follower, under traffic, with no wrong answer. Each replica's data
/// dir is then a tmpfs of its own, which only root may mount. The run is kept, and its
/// folder must hold each replica's data dir, copied off its disk before the unmount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_one_replica_with_a_message_and_loses_nothing() {
    let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if let Err(e) = chaos::cluster::can_mount_disks(&scratch) {
        eprintln!(
            "NOT RUN: the disk-full faults need to mount a tmpfs per replica ({e:#}); \
             run the tests as root to cover them"
        );
        return;
    }
    let mut config = config(28, 3, FaultKind::DISK_FULL.to_vec());
    config.keep = true;
    let folder = assert_passes(config)
        .await
        .expect("a kept run has a folder");
    for id in 1..=3 {
        let identity = folder.join(format!("replica-{id}")).join("identity.json");
        assert!(identity.is_file(), "{} was not kept", identity.display());
    }
    std::fs::remove_dir_all(&folder).expect("removing the kept run");
}
