//! Smoke test: the bench binary runs tiny scenarios against a local cluster it starts
//! itself and prints its table. No figure is asserted (targets live in BENCHMARKS.md,
//! never in tests); only that the tool works end to end and counts no errors.

use std::path::PathBuf;
use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_bench");

/// The server binary of the same build, next to the bench binary. `cargo test
/// --workspace` builds it (the root package's integration tests need it); a lone
/// `cargo test -p bench` may not have, and then there is nothing to smoke-test against.
fn server_bin() -> Option<PathBuf> {
    let bin = PathBuf::from(BENCH).with_file_name("pageserver-controller");
    bin.exists().then_some(bin)
}

fn run_bench(args: &[&str]) -> std::process::Output {
    let server = server_bin().expect("checked by the caller");
    Command::new(BENCH)
        .arg("--server-bin")
        .arg(&server)
        .args(["--duration", "1", "--runs", "1", "--ops", "300"])
        .args(args)
        .env_remove("PAGESERVER_CONTROLLER_TOKEN")
        .output()
        .expect("running the bench")
}

fn bench(args: &[&str]) -> String {
    let output = run_bench(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The error counts of every table row (the ninth column).
fn error_counts(table: &str) -> Vec<u64> {
    table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario") && !l.starts_with("| ---"))
        .map(|l| {
            let cell = l.split('|').nth(9).unwrap();
            cell.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn tiny_scenarios_run_against_a_local_cluster() {
    if server_bin().is_none() {
        eprintln!("skipped: build pageserver-controller first (cargo test --workspace does)");
        return;
    }
    let out = bench(&[
        "attach",
        "--tenants",
        "50",
        "--concurrency",
        "4",
        "--via",
        "leader,follower",
    ]);
    assert!(out.contains("| attach | leader c=4"), "{out}");
    assert!(out.contains("| attach | follower c=4"), "{out}");
    assert!(out.contains("Raft entries appended during"), "{out}");
    assert_eq!(error_counts(&out), vec![0, 0], "{out}");

    let out = bench(&[
        "validate",
        "--tenants",
        "64",
        "--batch",
        "8",
        "--concurrency",
        "2",
        "--background",
        "2",
    ]);
    assert_eq!(error_counts(&out), vec![0, 0], "{out}");
    assert!(
        out.contains("reads/read-index round"),
        "each follower's sharing: {out}"
    );

    let out = bench(&["re-attach", "--shards", "20"]);
    assert!(out.contains("| re-attach | 20 shards, via leader"), "{out}");
    assert_eq!(error_counts(&out), vec![0, 0], "{out}");
}

/// Runs the server binary's offline helpers (`keygen`, `token`).
fn controller(args: &[&str]) -> String {
    let output = Command::new(server_bin().expect("checked by the caller"))
        .args(args)
        .output()
        .expect("running pageserver-controller");
    assert!(
        output.status.success(),
        "pageserver-controller {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_cluster_that_checks_tokens_is_driven_with_a_token_file() {
    if server_bin().is_none() {
        eprintln!("skipped: build pageserver-controller first (cargo test --workspace does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (private, public) = (path("key.pem"), path("key.pub.pem"));
    controller(&["keygen", "--private-key", &private, "--public-key", &public]);
    for (scope, file) in [("admin", "admin.jwt"), ("controller_peer", "peer.jwt")] {
        let token = controller(&["token", "--private-key", &private, "--scope", scope]);
        std::fs::write(path(file), token).unwrap();
    }
    let auth_key = format!("--serve-arg=--auth-public-key={public}");
    let peer_token = format!("--serve-arg=--peer-token-file={}", path("peer.jwt"));
    let attach = [
        "attach",
        "--tenants",
        "20",
        "--concurrency",
        "2",
        "--via",
        "follower",
    ];

    // Without a token the bench stops at once and says why, instead of timing out.
    let started = std::time::Instant::now();
    let refused = run_bench(&[&[auth_key.as_str(), peer_token.as_str()][..], &attach[..]].concat());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("401") && stderr.contains("--token-file"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "{stderr}"
    );

    // With the admin token, every request is accepted.
    let admin = path("admin.jwt");
    let out = bench(
        &[
            &[
                auth_key.as_str(),
                peer_token.as_str(),
                "--token-file",
                admin.as_str(),
            ][..],
            &attach[..],
        ]
        .concat(),
    );
    assert!(out.contains("| attach | follower c=2"), "{out}");
    assert_eq!(error_counts(&out), vec![0], "{out}");
}

/// The pids of `pid`'s children, from every one of its threads.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether `pid` is a process that still runs (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// A bench started with a local cluster and a long attach run; returns it once its
/// replicas are running, with the cluster's folder and the replicas' pids.
fn bench_mid_run() -> (std::process::Child, PathBuf, Vec<u32>) {
    let scenario = [
        "attach",
        "--tenants",
        "20",
        "--concurrency",
        "1",
        "--via",
        "leader",
    ];
    bench_mid(&scenario, 3)
}

/// A bench started with `scenario` (which starts a local cluster) for a long run;
/// returns it once it has `children` processes running, with the cluster's folder and
/// their pids.
fn bench_mid(scenario: &[&str], children: usize) -> (std::process::Child, PathBuf, Vec<u32>) {
    use std::io::BufRead;
    let mut bench = Command::new(BENCH)
        .arg("--server-bin")
        .arg(server_bin().unwrap())
        .args(["--duration", "300", "--runs", "1"])
        .args(scenario)
        .env_remove("PAGESERVER_CONTROLLER_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running the bench");
    // The bench says where its cluster lives once every replica has been started; the
    // rest of its stderr is drained, so that it never writes to a closed pipe.
    let stderr = std::io::BufReader::new(bench.stderr.take().unwrap());
    let (found, root) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(dir) = line.strip_prefix("started a local cluster in ") {
                let _ = found.send(PathBuf::from(dir.trim()));
            }
        }
    });
    let root = root.recv_timeout(std::time::Duration::from_secs(60));
    let root = root.expect("the bench started a local cluster");
    // What the bench starts after its cluster comes a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut pids = children_of(bench.id());
    while pids.len() < children && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        pids = children_of(bench.id());
    }
    assert_eq!(pids.len(), children, "the bench's children: {pids:?}");
    assert!(pids.iter().all(|pid| running(*pid)), "{pids:?}");
    (bench, root, pids)
}

/// Waits (generously) for every one of `pids` to stop running; kills and returns those
/// that did not.
fn outlived(pids: &[u32]) -> Vec<u32> {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left = pids.to_vec();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left.retain(|pid| running(*pid));
    }
    for pid in &left {
        // Do not leave them behind for the next test either.
        // SAFETY: kill(2) with a pid read from /proc; at worst it names no process.
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
    }
    left
}

/// A bench killed with SIGKILL mid-run (no destructor runs) takes its local cluster's
/// replicas with it: an interrupted run must leave nothing that loads the next one.
#[test]
fn replicas_die_with_a_killed_bench() {
    if server_bin().is_none() {
        eprintln!("skipped: build pageserver-controller first (cargo test --workspace does)");
        return;
    }
    let (mut bench, root, replicas) = bench_mid_run();
    bench.kill().expect("kill -9 the bench");
    bench.wait().unwrap();
    let left = outlived(&replicas);
    let _ = std::fs::remove_dir_all(&root);
    assert!(left.is_empty(), "replicas {left:?} outlived the bench");
}

/// `compare` starts a do-nothing HTTP server besides its cluster; a killed bench leaves
/// neither behind (a peer left listening would skew the next run's ceiling).
#[test]
fn a_killed_compare_leaves_no_server_behind() {
    if server_bin().is_none() {
        eprintln!("skipped: build pageserver-controller first (cargo test --workspace does)");
        return;
    }
    let scenario = ["compare", "--tenants", "20", "--concurrency", "1"];
    let (mut bench, root, children) = bench_mid(&scenario, 4);
    bench.kill().expect("kill -9 the bench");
    bench.wait().unwrap();
    let left = outlived(&children);
    let _ = std::fs::remove_dir_all(&root);
    assert!(left.is_empty(), "processes {left:?} outlived the bench");
}

/// Ctrl-C stops a bench mid-run the way an error would: its replicas are stopped and
/// its cluster's folder (data dirs of up to a million shards) is removed.
#[test]
fn an_interrupted_bench_stops_its_replicas_and_removes_its_folder() {
    if server_bin().is_none() {
        eprintln!("skipped: build pageserver-controller first (cargo test --workspace does)");
        return;
    }
    let (mut bench, root, replicas) = bench_mid_run();
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(bench.id() as libc::pid_t, libc::SIGINT) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            bench.kill().unwrap();
            bench.wait().unwrap();
            let _ = outlived(&replicas);
            let _ = std::fs::remove_dir_all(&root);
            panic!("the bench did not stop within a minute of SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let left = outlived(&replicas);
    let folder_left = root.exists();
    let _ = std::fs::remove_dir_all(&root);
    assert!(!status.success(), "{status}");
    assert!(left.is_empty(), "replicas {left:?} outlived the bench");
    assert!(!folder_left, "{} was left behind", root.display());
}
