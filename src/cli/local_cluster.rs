//! `local-cluster`: the embedded default. Starts replicas 1..N of one cluster on loopback
//! as child `serve` processes, data under one folder, and stops them all on Ctrl-C.
//! Restarting it reuses the folder, so state survives like a real restart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio::process::{Child, Command};

use crate::client::Client;
use crate::logging::LogFormat;

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
    let mut children: Vec<(u64, Child)> = Vec::new();
    for id in &ids {
        let listen = format!("127.0.0.1:{}", u64::from(args.base_port) + id - 1);
        let child = Command::new(&exe)
            .args(["--log", log, "--log-format", log_format.as_str(), "serve"])
            .args(["--id", &id.to_string(), "--listen", &listen])
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("replica-{id}")))
            .args(["--initial-cluster", &initial_cluster])
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting replica {id}"))?;
        children.push((*id, child));
    }
    for id in &ids {
        println!("replica {id}: {}", url(args.base_port, *id));
    }
    println!("data: {}", args.data_dir.display());

    let first = Client::new(url(args.base_port, 1));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = first.cluster_status().await {
            if let Some(leader) = status.leader {
                println!(
                    "cluster {} is up; leader is replica {leader}",
                    status.cluster_id
                );
                println!("try: curl -s -X POST {}/debug/v1/attach-hook -d '{{\"tenant_shard_id\": \"1f359dd625e519a1a4e8d7509690f6fc\", \"node_id\": 1}}'", url(args.base_port, 1));
                println!("press Ctrl-C to stop all replicas");
                break;
            }
        }
        if Instant::now() > deadline {
            eprintln!("no leader after 30 s; check the replicas' logs above");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut exited = None;
    tokio::select! {
        () = super::serve::stop_signal() => {}
        (id, status) = first_exit(&mut children) => exited = Some((id, status)),
    }
    if let Some((id, status)) = &exited {
        eprintln!("replica {id} exited ({status}); stopping the others");
    }
    for (id, child) in &mut children {
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
    match exited {
        Some((id, status)) => bail!("replica {id} exited unexpectedly ({status})"),
        None => Ok(()),
    }
}

/// Resolves when any child exits.
async fn first_exit(children: &mut [(u64, Child)]) -> (u64, String) {
    loop {
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return (*id, status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
