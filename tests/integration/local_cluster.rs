//! `local-cluster`, the command README.md gives for running the service: it serves, a
//! replica killed under it is started again while the others keep answering, and it
//! stops cleanly on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pageserver_controller::client::Client;
use pageserver_controller::domain::NodeId;

use crate::support::{retried, run_binary, shard, wait_for, wait_ready, BIN, DEADLINE};

/// The pid of the process serving `127.0.0.1:port` (a child of `local-cluster`).
fn pid_listening_on(port: u16) -> Option<i32> {
    let needle = format!("127.0.0.1:{port}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let serving = args.iter().any(|a| *a == b"serve")
                && args
                    .windows(2)
                    .any(|w| w[0] == b"--listen" && w[1] == needle.as_bytes());
            serving.then_some(pid)
        })
}

/// `local-cluster` and its log; on a failed test, stopped and its log printed.
struct Supervisor(Child, std::path::PathBuf);

impl Drop for Supervisor {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // SIGTERM stops the replicas too.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        // Not waited on forever: a shutdown that hangs must not turn a failure into a
        // hung test run. Its replicas get SIGTERM when it dies (PR_SET_PDEATHSIG).
        let end = std::time::Instant::now() + DEADLINE;
        while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let log = std::fs::read_to_string(&self.1).unwrap_or_default();
        eprintln!("local-cluster's output:\n{log}");
    }
}

/// Starts `local-cluster` in `dir` on three free ports and waits until every replica is
/// ready; returns it and the first port.
async fn start_local_cluster(dir: &std::path::Path) -> (Supervisor, u16) {
    // local-cluster takes base, base + 1 and base + 2.
    let base = pageserver_controller::loopback::free_ports(3).expect("three free ports");
    let log_path = dir.join("local-cluster.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(BIN);
    // As a terminal starts it: a test runner started under `nohup` leaves SIGHUP ignored
    // in every process it starts, and the tests close the "terminal" with SIGHUP.
    // SAFETY: signal(2) is async-signal-safe; between fork and exec it only resets the
    // disposition the child inherited.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    let supervisor = Supervisor(
        command
            .args([
                "local-cluster",
                "--base-port",
                &base.to_string(),
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
        log_path,
    );
    for port in base..base + 3 {
        wait_ready(&Client::new(format!("http://127.0.0.1:{port}"))).await;
    }
    (supervisor, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_restarts_a_killed_replica_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut supervisor, base) = start_local_cluster(dir.path()).await;
    let log_path = supervisor.1.clone();
    let url = |id: u16| format!("http://127.0.0.1:{}", base + id - 1);
    let client = |id: u16| Client::new(url(id));

    let shard = shard(1);
    let first_via = client(2);
    let first = retried(|| first_via.attach_hook(shard, Some(NodeId(1)), None))
        .await
        .unwrap()
        .unwrap();
    let leader = wait_for("replica 1 to know the leader", DEADLINE, || async {
        client(1).cluster_status().await.ok().and_then(|s| s.leader)
    })
    .await;
    let leader_port = base + leader as u16 - 1;
    let killed = pid_listening_on(leader_port).expect("the leader's process");
    // SAFETY: kill(2) on a replica this test started (through local-cluster).
    unsafe { libc::kill(killed, libc::SIGKILL) };

    // The others elect a leader and keep issuing generations.
    let survivor = if leader == 1 { 2 } else { 1 };
    let via = client(survivor);
    let second = retried(|| via.attach_hook(shard, Some(NodeId(2)), None))
        .await
        .unwrap()
        .unwrap();
    assert!(second > first, "{second} after {first}");

    // The killed replica comes back as a new process on its data dir and catches up.
    wait_for(
        "the killed replica to be started again",
        DEADLINE,
        || async { pid_listening_on(leader_port).filter(|pid| *pid != killed) },
    )
    .await;
    let back = client(leader as u16);
    wait_ready(&back).await;
    let seen = wait_for(
        "the restarted replica to see the new generation",
        DEADLINE,
        || {
            let back = back.clone();
            async move { back.inspect(shard).await.ok().flatten() }
        },
    )
    .await;
    assert_eq!(seen, (second, NodeId(2)));

    // A follower's own answer says where the replication progress it lacks can be seen.
    let mut follower = None;
    for id in 1..=3u16 {
        if client(id)
            .cluster_status()
            .await
            .is_ok_and(|s| s.state == "follower")
        {
            follower = Some(id);
        }
    }
    let follower = follower.expect("a follower among the three");
    let (ok, report) = run_binary(&["cluster", "status", "--url", &url(follower)]);
    assert!(ok, "{report}");
    assert!(
        report.contains("MATCHED is known to the leader only"),
        "{report}"
    );
    // The last entry's term, which the disaster-recovery runbook compares.
    assert!(
        report.lines().any(|l| l.starts_with("log: last ")
            && l.contains("(term ")
            && !l.contains("(term -)")),
        "{report}"
    );

    // Every member answers for itself again, and they agree on the leader.
    // (An election during the survey shows as disagreement: asked again until they agree.)
    let report = wait_for("the three members to agree on a leader", DEADLINE, || {
        let (ok, report) = run_binary(&["cluster", "status", "--all", "--url", &url(survivor)]);
        async move { (ok && report.contains("all 3 members see leader")).then_some(report) }
    })
    .await;
    assert!(!report.contains("unreachable"), "{report}");

    // A command run by a person states its error once (only `serve` also logs it).
    let (ok, failed) = run_binary(&[
        "attach",
        &shard.to_string(),
        "--node",
        "1",
        "--url",
        "http://127.0.0.1:1",
    ]);
    assert!(!ok);
    assert_eq!(failed.matches("no answer from").count(), 1, "{failed}");

    // SIGTERM stops the supervisor and every replica, with success.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(supervisor.0.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_for("local-cluster to stop", DEADLINE, || {
        let exited = supervisor.0.try_wait().unwrap();
        async move { exited }
    })
    .await;
    let output = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{status}:\n{output}");
    assert!(
        output.contains(&format!("replica {leader} exited (signal: 9")),
        "{output}"
    );
    for id in 1..=3 {
        assert_eq!(
            pid_listening_on(base + id - 1),
            None,
            "replica {id} still runs"
        );
    }
}

/// The replicas do not outlive `local-cluster`: closing the terminal it runs in (SIGHUP),
/// or killing it, stops them rather than leaving them serving on their ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_replicas_stop_when_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let (mut supervisor, base) = start_local_cluster(dir.path()).await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(supervisor.0.id() as libc::pid_t, libc::SIGHUP) };
    let exited_by = std::time::Instant::now() + DEADLINE;
    while supervisor.0.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < exited_by,
            "local-cluster did not end on SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = std::time::Instant::now() + DEADLINE;
    let left = loop {
        let left: Vec<i32> = (base..base + 3).filter_map(pid_listening_on).collect();
        if left.is_empty() || std::time::Instant::now() > end {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for pid in &left {
        // SAFETY: kill(2) on a replica this test started (through local-cluster).
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "replicas outlived local-cluster: {left:?}");
}
