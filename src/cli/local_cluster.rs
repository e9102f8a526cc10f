//! `local-cluster`: the embedded default. Starts replicas 1..N of one cluster on loopback
//! as child `serve` processes, data under one folder, and stops them all on Ctrl-C.
//! Restarting it reuses the folder, so state survives like a real restart.
//!
//! It supervises its replicas the way systemd or a StatefulSet would: a replica that dies
//! (`kill -9` the leader to watch a failover) is started again on the same data dir while
//! the others keep serving, so a fault can be tried locally without a harness. A replica
//! that keeps dying right after it starts (a port taken, a data dir refused) is not
//! restarted forever: the whole cluster stops and says which replica failed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio::process::{Child, Command};

use crate::client::Client;
use crate::logging::LogFormat;

/// A replica that ran at least this long had started properly; dying after that is a
/// crash to recover from, not a failure to start.
const STARTED: Duration = Duration::from_secs(10);

/// Failures to start in a row after which `local-cluster` gives up.
const START_ATTEMPTS: u32 = 3;

/// Pause before a replica is started again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct LocalClusterArgs {
    /// Folder holding one data dir per replica (replica-1, replica-2, ...).
    #[arg(long, default_value = ".local-cluster")]
    pub data_dir: PathBuf,

    /// Port of replica 1; replica N listens on base-port + N - 1.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,

    /// Number of replicas (3 or 5 make sense: a majority must survive).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=7))]
    pub replicas: u64,
}

fn url(base_port: u16, id: u64) -> String {
    format!("http://127.0.0.1:{}", u64::from(base_port) + id - 1)
}

pub async fn run(args: LocalClusterArgs, log: &str, log_format: LogFormat) -> anyhow::Result<()> {
    if u64::from(args.base_port) + args.replicas > 65_536 {
        bail!(
            "--base-port {} leaves no room for {} replicas",
            args.base_port,
            args.replicas
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let ids: Vec<u64> = (1..=args.replicas).collect();
    let initial_cluster = ids
        .iter()
        .map(|id| format!("{id}={}", url(args.base_port, *id)))
        .collect::<Vec<_>>()
        .join(",");
    // Ctrl-C reaches the replicas too (one process group): from then on, an exit is
    // part of stopping, never a crash to recover from.
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            super::serve::stop_signal().await;
            stop.cancel();
        }
    });
    let spawn = |id: u64| {
        let listen = format!("127.0.0.1:{}", u64::from(args.base_port) + id - 1);
        start_replica(
            &exe,
            log,
            log_format,
            id,
            &listen,
            &args.data_dir.join(format!("replica-{id}")),
            &initial_cluster,
        )
    };
    let mut replicas = Vec::new();
    for id in &ids {
        replicas.push(Supervised {
            id: *id,
            child: spawn(*id)?,
            started: Instant::now(),
            failed_starts: 0,
        });
    }
    for id in &ids {
        println!("replica {id}: {}", url(args.base_port, *id));
    }
    println!("data: {}", args.data_dir.display());

    // Supervision starts at once; the banner comes when a leader is known, whichever
    // replica says so first (replica 1 may be the one that died).
    let urls: Vec<String> = ids.iter().map(|id| url(args.base_port, *id)).collect();
    let announce = tokio::spawn(announce(urls, stop.clone()));

    let failure = loop {
        let (index, status) = tokio::select! {
            biased;
            () = stop.cancelled() => break None,
            exit = first_exit(&mut replicas) => exit,
        };
        if stop.is_cancelled() {
            break None;
        }
        let replica = &mut replicas[index];
        let id = replica.id;
        if replica.started.elapsed() < STARTED {
            replica.failed_starts += 1;
        } else {
            replica.failed_starts = 0;
        }
        if replica.failed_starts >= START_ATTEMPTS {
            break Some(format!(
                "replica {id} exited {START_ATTEMPTS} times within {STARTED:?} of starting \
                 (last: {status}); see its log above"
            ));
        }
        eprintln!(
            "replica {id} exited ({status}); starting it again on its data dir in \
             {RESTART_PAUSE:?} (the others keep serving)"
        );
        tokio::select! {
            () = stop.cancelled() => break None,
            () = tokio::time::sleep(RESTART_PAUSE) => {}
        }
        match spawn(id) {
            Ok(child) => {
                replica.child = child;
                replica.started = Instant::now();
            }
            Err(e) => break Some(format!("{e:#}")),
        }
    };
    announce.abort();
    if let Some(reason) = &failure {
        eprintln!("{reason}; stopping the others");
    }
    for replica in &mut replicas {
        let (id, child) = (replica.id, &mut replica.child);
        if let Ok(Some(status)) = child.try_wait() {
            println!("replica {id} stopped ({status})");
            continue;
        }
        if let Some(pid) = child.id() {
            // SAFETY: plain kill(2) on a child we started; no memory is involved.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(Ok(status)) => println!("replica {id} stopped ({status})"),
            _ => {
                let _ = child.kill().await;
                println!("replica {id} killed after 10 s");
            }
        }
    }
    match failure {
        Some(reason) => bail!(reason),
        None => Ok(()),
    }
}

/// Prints how to use the cluster once a leader is known, or a hint after 30 s without one.
async fn announce(urls: Vec<String>, stop: tokio_util::sync::CancellationToken) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = Client::new(urls[0].as_str()).with_timeout(Duration::from_secs(1));
    while !stop.is_cancelled() {
        for url in &urls {
            let answer = client.at(url.as_str()).cluster_status().await;
            if let Some((leader, status)) = answer.ok().and_then(|s| Some((s.leader?, s))) {
                println!(
                    "cluster {} is up; leader is replica {leader}",
                    status.cluster_id
                );
                println!(
                    "try: curl -s -X POST {}/debug/v1/attach-hook -d '{{\"tenant_shard_id\": \
                     \"1f359dd625e519a1a4e8d7509690f6fc\", \"node_id\": 1}}'",
                    urls[0]
                );
                println!("press Ctrl-C to stop all replicas");
                return;
            }
        }
        if Instant::now() > deadline {
            eprintln!("no leader after 30 s; check the replicas' logs above");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One child replica and how its recent starts went.
struct Supervised {
    id: u64,
    child: Child,
    started: Instant,
    /// Exits within [`STARTED`] of a start, in a row.
    failed_starts: u32,
}

fn start_replica(
    exe: &Path,
    log: &str,
    log_format: LogFormat,
    id: u64,
    listen: &str,
    data_dir: &Path,
    initial_cluster: &str,
) -> anyhow::Result<Child> {
    let mut command = Command::new(exe);
    command
        .args(["--log", log, "--log-format", log_format.as_str(), "serve"])
        .args(["--id", &id.to_string(), "--listen", listen])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--initial-cluster", initial_cluster])
        .kill_on_drop(true);
    // A replica catches SIGHUP (it reloads credentials), so closing the terminal would
    // end this supervisor and leave the replicas serving; and kill_on_drop does nothing
    // when the supervisor is killed. The kernel sends each replica SIGTERM when the
    // supervisor dies, whatever ends it. (Strictly, when the thread that started it
    // ends: keep spawning from the main thread, where `run` is blocked on, not from a
    // task a worker or blocking thread may carry.)
    crate::child_process::die_with_parent(command.as_std_mut(), libc::SIGTERM);
    command
        .spawn()
        .with_context(|| format!("starting replica {id}"))
}

/// Resolves with the index of a child that exited, and how it exited.
async fn first_exit(replicas: &mut [Supervised]) -> (usize, String) {
    loop {
        for (index, replica) in replicas.iter_mut().enumerate() {
            if let Ok(Some(status)) = replica.child.try_wait() {
                return (index, status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
