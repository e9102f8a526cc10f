//! Offline tools that seed a one-member cluster: `restore` (from a backup, into a new
//! cluster) and `recover` (from the data dir of a surviving replica after the others'
//! disks are lost for good).
//!
//! Both leave a data dir holding a snapshot of the registry at some log index `L`, a log
//! that is "committed and purged up to `L`", a membership of this one replica, a vote
//! at a term above any the source saw, and a new cluster id (so that no replica of the cluster the
//! state came from can talk to the new one). Started with `serve`, the replica elects
//! itself at once; more members are added with `serve --join`.
//!
//! Generations: the source may lack generations that were handed out after it was taken
//! (writes after a backup; writes a lost majority acknowledged but the survivor never
//! received), of shards it holds and of shards it has never seen. Handing such a
//! generation out again would break the first rule. So every shard's generation, and the
//! registry's floor that a shard never seen starts above, are raised by
//! `--generation-bump` (default 65,536) before the new cluster serves: any generation
//! issued afterwards is above everything issued before, provided no shard was attached
//! that many times in the gap. Pageservers holding old generations see `valid: false`
//! and stop deleting until they restart and re-attach, which is safe.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use controller_raft::Member;
use controller_storage::{write_snapshot, Bootstrap, DataDir, Identity, FORMAT_VERSION};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{
    CommittedLeaderId, EntryPayload, LogId, Membership, RaftLogReader, SnapshotMeta,
    StoredMembership, Vote,
};

use crate::consensus::{LogStore, StateMachine};
use crate::domain::Registry;
use crate::server::derive_cluster_id;

/// The default raise of every generation; see the module docs.
pub const DEFAULT_GENERATION_BUMP: u32 = 65_536;

/// What a seeding tool did, for the operator.
#[derive(Debug)]
pub struct Seeded {
    pub cluster_id: String,
    pub shards: usize,
    pub raised: usize,
    pub last_index: u64,
}

/// Writes the seeded state into `dir` (already created and locked), whose log the
/// caller has opened: a command opens it once, because sled releases its lock from its
/// own threads a moment after a close, and a second open in the same process can fail.
async fn seed(
    dir: &DataDir,
    log: &mut LogStore,
    registry: &Registry,
    last: LogId<u64>,
    term: u64,
    id: u64,
    member: &Member,
) -> anyhow::Result<()> {
    let membership = Membership::new(
        vec![BTreeSet::from([id])],
        BTreeMap::from([(id, member.clone())]),
    );
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("seed-{}", last.index),
    };
    write_snapshot(&dir.snapshot_path(), &meta, registry).context("writing the seeded snapshot")?;
    log.reset_to(Vote::new(term, id), last)
        .await
        .context("resetting the log")?;
    Ok(())
}

/// Raises every generation by `bump` and sets the floor for shards the registry does
/// not know (see [`Registry::bump_generations`]). A bump of 0 would hand out again the
/// generations the lost replicas (or the cluster since the backup) may have issued.
fn raise(registry: &mut Registry, bump: u32) -> anyhow::Result<usize> {
    anyhow::ensure!(bump > 0, "the generation bump must be at least 1");
    registry
        .bump_generations(bump)
        .map_err(|e| anyhow::anyhow!("cannot raise generations by {bump}: {e}"))
}

/// What makes a restored or recovered cluster's id its own: the time, and random bytes,
/// since two restores of one backup in the same millisecond (or on a clock before 1970)
/// must not give two clusters one id.
fn nonce() -> String {
    use rand_core::RngCore;
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms} {:016x}", rand_core::OsRng.next_u64())
}

/// Seeds a new one-member cluster in the empty `data_dir` from a backup file.
pub async fn restore(
    backup: &[u8],
    data_dir: &Path,
    id: u64,
    member: &Member,
    cluster_name: &str,
    bump: u32,
) -> anyhow::Result<Seeded> {
    let (header, mut registry) = crate::backup::decode(backup).context("reading the backup")?;
    if DataDir::peek(data_dir)?.is_some() {
        bail!(
            "{} already holds a data dir; restore only into an empty one",
            data_dir.display()
        );
    }
    let raised = raise(&mut registry, bump)?;
    // A restored cluster is a new cluster: its id differs from the backed-up one, so
    // replicas of the old cluster can never talk to it.
    let members = BTreeMap::from([(id, member.clone())]);
    let cluster_id = derive_cluster_id(&format!("{cluster_name}\nrestored {}", nonce()), &members);
    let dir = DataDir::create(
        data_dir,
        Identity {
            format_version: FORMAT_VERSION,
            cluster_name: cluster_name.to_owned(),
            cluster_id: cluster_id.clone(),
            replica_id: id,
            bootstrap: Bootstrap::Seeded,
        },
    )?;
    let last = LogId::new(CommittedLeaderId::new(1, id), 1);
    let mut log = LogStore::open(&dir.log_path(), id, 16 << 20)?;
    seed(&dir, &mut log, &registry, last, 1, id, member).await?;
    tracing::warn!(from_cluster = %header.cluster_id, read_index = header.read_index, %cluster_id, raised, bump, "restored a backup into a new one-member cluster");
    Ok(Seeded {
        cluster_id,
        shards: registry.shard_count(),
        raised,
        last_index: last.index,
    })
}

/// Rebuilds a one-member cluster from the data dir of a surviving replica, in place.
/// Refuses while a process uses the dir (its lock is held).
pub async fn recover(
    data_dir: &Path,
    id: u64,
    member: Option<&Member>,
    bump: u32,
) -> anyhow::Result<Seeded> {
    let mut dir = DataDir::open(data_dir, id, None)?;
    let mut state_machine =
        StateMachine::open(&dir.snapshot_path()).context("loading the snapshot")?;
    let (snapshot_applied, snapshot_membership) = state_machine.applied_state().await?;
    let mut registry: Registry = state_machine
        .shared()
        .read()
        .expect("no other user of this state")
        .state
        .clone();
    let mut log = LogStore::open(&dir.log_path(), id, 16 << 20)?;
    let vote = log.read_vote().await?.unwrap_or_default();
    let state = log.get_log_state().await?;
    let start = snapshot_applied.map_or(0, |l| l.index + 1);
    let entries = log.try_get_log_entries(start..).await?;
    // Nothing to recover from: every generation would start from the bump alone, below
    // what an earlier restore or recovery raised them to.
    anyhow::ensure!(
        snapshot_applied.is_some() || !entries.is_empty(),
        "data dir {}: this replica holds no state (it never received a snapshot or an entry, or a restore \
         into it was cut short); recover from another survivor, or restore from a backup",
        data_dir.display()
    );
    if let Some(first) = entries.first() {
        anyhow::ensure!(
            first.log_id.index == start,
            "data dir {}: its log begins at {} but its snapshot ends at {}: the entries between are missing; \
             recover from another survivor, or restore from a backup",
            data_dir.display(),
            first.log_id.index,
            start.saturating_sub(1)
        );
    }
    // Every entry the survivor holds is applied, committed or not: at worst that raises a
    // generation that was never handed out, which is harmless.
    let mut membership = snapshot_membership.membership().clone();
    for entry in &entries {
        match &entry.payload {
            EntryPayload::Normal(proposal) => {
                for command in &proposal.commands {
                    registry.apply(command);
                }
            }
            EntryPayload::Membership(m) => membership = m.clone(),
            EntryPayload::Blank => {}
        }
    }
    let last = state
        .last_log_id
        .into_iter()
        .chain(snapshot_applied)
        .max()
        .unwrap_or_else(|| LogId::new(CommittedLeaderId::new(0, id), 0));
    let member = match member {
        Some(member) => member.clone(),
        None => membership
            .get_node(&id)
            .cloned()
            .context("this replica is not in the last membership it saw; pass --advertise-url")?,
    };
    let raised = raise(&mut registry, bump)?;
    // A term above any the survivor saw, so the seeded snapshot's log id is above every
    // entry of the old log: were `recover` cut short after writing the snapshot and before
    // the log's reset was durable, the replica's start purges the old entries the
    // snapshot replaces (it purges a log that ends below the applied state) rather than
    // keeping them beside it, to be sent to members that join.
    let term = vote.leader_id().term.max(last.leader_id.term) + 1;
    // The seeded snapshot takes the place of everything up to `last`.
    let last = LogId::new(CommittedLeaderId::new(term, id), last.index.max(1));
    // The new identity goes first: cut short after it, the replica is one of a cluster
    // whose other members refuse it (below), so it stays without a quorum until
    // `recover` runs again; cut short before it, the raised state would be served under
    // the old cluster id, to which the lost replicas still belong.
    //
    // A new cluster id, as for a restore: a replica of the old cluster that was declared
    // lost but starts again on its old data dir is refused on every request between
    // replicas (votes, entries, read indexes), instead of mixing its state, which lacks
    // the raise, into the recovered cluster's.
    let mut identity = dir.identity().clone();
    let old_cluster_id = std::mem::replace(
        &mut identity.cluster_id,
        derive_cluster_id(
            &format!("{}\nrecovered {}", identity.cluster_name, nonce()),
            &BTreeMap::from([(id, member.clone())]),
        ),
    );
    identity.bootstrap = Bootstrap::Seeded;
    dir.set_identity(identity.clone())?;
    seed(&dir, &mut log, &registry, last, term, id, &member).await?;
    tracing::warn!(%member, last_index = last.index, raised, bump, from_cluster = %old_cluster_id,
        cluster = %identity.cluster_id, "recovered a one-member cluster from a surviving replica");
    Ok(Seeded {
        cluster_id: identity.cluster_id,
        shards: registry.shard_count(),
        raised,
        last_index: last.index,
    })
}
