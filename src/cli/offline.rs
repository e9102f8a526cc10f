//! Commands that work on data dirs and backup files rather than a running cluster:
//! `backup` (saves what a replica streams), `restore` and `recover`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use controller_raft::Member;

use super::ops::ClientArgs;
use crate::recovery::{self, DEFAULT_GENERATION_BUMP};

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// File to write the backup to (written atomically).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup file written by `backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// Empty (or absent) data dir for the first replica of the new cluster.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Replica id of that first replica.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// The URL its peers will reach it at (what `serve --advertise-url` would say).
    #[arg(long)]
    pub advertise_url: String,
    /// Name of the new cluster.
    #[arg(long, default_value = "pageserver-controller")]
    pub cluster_name: String,
    /// Raise every generation by this much, so none handed out after the backup was taken
    /// is ever handed out again (see README, "Backup and restore").
    #[arg(long, default_value_t = DEFAULT_GENERATION_BUMP,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub generation_bump: u32,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Data dir of a surviving replica. The process using it must be stopped.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// That replica's id.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// The URL peers will reach it at (default: what the membership last said).
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// Raise every generation by this much (see README, "Disaster recovery").
    #[arg(long, default_value_t = DEFAULT_GENERATION_BUMP,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub generation_bump: u32,
    /// Required: you have checked that the other replicas are lost for good. Recovery
    /// makes this replica a cluster of one; the lost replicas must never be started again.
    #[arg(long)]
    pub confirm_other_replicas_are_lost: bool,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let bytes = args.client.client()?.backup().await?;
    // Checked whole (length, checksum, payload) before it is saved and called a backup,
    // so that a transfer cut short or damaged is found now rather than at restore.
    let (header, _) = crate::backup::decode(&bytes)
        .context("the server sent an unreadable backup; nothing was saved")?;
    controller_storage::data_dir::write_atomically(&args.out, &bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "backup of cluster {} at log index {}: {} tenant shards, {} nodes, {} bytes -> {}",
        header.cluster_id,
        header.read_index,
        header.shards,
        header.nodes,
        bytes.len(),
        args.out.display()
    );
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.from).with_context(|| format!("reading {}", args.from.display()))?;
    let member =
        Member::parse(&args.advertise_url).map_err(|e| anyhow::anyhow!("--advertise-url: {e}"))?;
    let seeded = recovery::restore(
        &bytes,
        &args.data_dir,
        args.id,
        &member,
        &args.cluster_name,
        args.generation_bump,
    )
    .await?;
    println!(
        "restored {} tenant shards into new cluster {} (replica {} at {}); raised {} generations by {}",
        seeded.shards, seeded.cluster_id, args.id, member, seeded.raised, args.generation_bump
    );
    println!(
        "next: pageserver-controller serve --id {} --data-dir {} --cluster-name {} --listen ... , then add \
         members with serve --join {} --cluster-name {}",
        args.id,
        args.data_dir.display(),
        args.cluster_name,
        member,
        args.cluster_name
    );
    Ok(())
}

pub async fn recover(args: RecoverArgs) -> anyhow::Result<()> {
    if !args.confirm_other_replicas_are_lost {
        anyhow::bail!(
            "recover turns this replica into a cluster of one and discards the others. Only do this when a \
             majority of replicas is lost for good (disks gone), and never start the lost replicas again. \
             Re-run with --confirm-other-replicas-are-lost"
        );
    }
    let member = args
        .advertise_url
        .as_deref()
        .map(Member::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--advertise-url: {e}"))?;
    eprintln!(
        "!!! DISASTER RECOVERY: rebuilding a one-member cluster from {} !!!",
        args.data_dir.display()
    );
    let seeded = recovery::recover(
        &args.data_dir,
        args.id,
        member.as_ref(),
        args.generation_bump,
    )
    .await?;
    eprintln!(
        "!!! replica {} is now the only member of a new cluster {}; {} tenant shards, {} generations raised by {} !!!",
        args.id, seeded.cluster_id, seeded.shards, seeded.raised, args.generation_bump
    );
    eprintln!("!!! start it with serve, then add fresh replicas with serve --join; never restart the lost ones !!!");
    Ok(())
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Ed25519 private key in PKCS#8 PEM (see `keygen`, or `openssl genpkey -algorithm ed25519`).
    #[arg(long, value_name = "PATH")]
    pub private_key: PathBuf,
    /// Scope of the token: generations_api for pageservers, admin for operators, infra for
    /// node registration, controller_peer for replicas.
    #[arg(long, value_enum)]
    pub scope: crate::auth::Scope,
    /// Expire the token after this many seconds (default: never).
    #[arg(long)]
    pub expires_in_secs: Option<u64>,
    /// Optional tenant_id claim.
    #[arg(long)]
    pub tenant_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600). Keep it off the replicas.
    #[arg(long, value_name = "PATH")]
    pub private_key: PathBuf,
    /// Where to write the public key (PEM) that replicas get with --auth-public-key.
    #[arg(long, value_name = "PATH")]
    pub public_key: PathBuf,
}

/// Prints a signed token on stdout (and nothing else, so it can be redirected to a file).
pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let pem = std::fs::read(&args.private_key)
        .with_context(|| format!("reading {}", args.private_key.display()))?;
    let token = crate::auth::mint(
        &pem,
        args.scope,
        args.tenant_id,
        args.expires_in_secs.map(std::time::Duration::from_secs),
    )?;
    println!("{token}");
    Ok(())
}

/// Writes a new Ed25519 key pair.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (private, public) = crate::auth::generate_key_pair()?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.private_key)
        .and_then(|mut f| f.write_all(private.as_bytes()))
        .with_context(|| {
            format!(
                "writing {} (it must not exist yet)",
                args.private_key.display()
            )
        })?;
    std::fs::write(&args.public_key, public)
        .with_context(|| format!("writing {}", args.public_key.display()))?;
    eprintln!(
        "wrote {} (private, keep it safe) and {} (public, give it to every replica)",
        args.private_key.display(),
        args.public_key.display()
    );
    Ok(())
}
