//! Power loss: every replica loses, at the same moment, what it wrote without an fsync
//! (all of it, or a random half of its pages: tests/support/volatile_fs.rs), while
//! writes are in flight, six times over. Every generation the cluster acknowledged must
//! still be there afterwards, no generation may be handed out twice, and every replica
//! must start again on what its disk kept.
//!
//! kill -9 cannot show this: the kernel keeps a killed process's writes. A replica that
//! answered before its fsync, or trusted sled's `sync_file_range`, passes every kill
//! test and fails this one.
//!
//! The same file system also fails fsyncs on demand, for what a log store, and a
//! leader under traffic, do when their disk starts failing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pageserver_controller::domain::NodeId;

use crate::support::volatile_fs::{self, Mounted, Names, Survivors};
use crate::support::{retried, shard, wait_for, TestCluster, DEADLINE};

async fn until_acknowledged(acks: &Arc<AtomicU64>, count: u64, round: usize) {
    wait_for(
        &format!("{count} acknowledged attaches in round {round}"),
        DEADLINE * 2,
        || {
            let acks = acks.clone();
            async move { (acks.load(Ordering::Relaxed) >= count).then_some(()) }
        },
    )
    .await;
}

/// The disk's backing directory, kept when the test fails so what the power loss left
/// can be examined beside the replicas' logs.
struct Disk(Option<tempfile::TempDir>);

impl Drop for Disk {
    fn drop(&mut self) {
        if let (true, Some(dir)) = (std::thread::panicking(), self.0.take()) {
            eprintln!("test failed; the disk is kept in {}", dir.keep().display());
        }
    }
}

const CLIENTS: u32 = 4;
const TENANTS_PER_CLIENT: u32 = 3;
const POWER_LOSSES: usize = 6;
/// Acknowledged attaches between two power losses (at the least; writes go on while the
/// power is cut).
const ATTACHES_PER_ROUND: u64 = 150;

/// Set to skip this test on a machine that cannot mount FUSE (no `/dev/fuse`, or neither
/// root nor `fusermount3`). Without it the test fails there, rather than pass unseen.
const SKIP_ENV: &str = "PSC_TEST_SKIP_POWER_LOSS";

/// Whether this test is skipped on purpose; panics when FUSE is missing and it is not.
fn skipped() -> bool {
    if std::env::var_os(SKIP_ENV).is_some() {
        eprintln!("NOT RUN: {SKIP_ENV} is set");
        return true;
    }
    if let Err(why) = volatile_fs::available() {
        panic!("{why}: the power-loss tests need FUSE (/dev/fuse, and root or fusermount3); set {SKIP_ENV}=1 to skip them");
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_generations_survive_every_replica_losing_power_at_once() {
    if skipped() {
        return;
    }
    let kept_disk = Disk(Some(
        tempfile::Builder::new()
            .prefix("psc-power-disk-")
            .tempdir()
            .unwrap(),
    ));
    let disk = kept_disk.0.as_ref().unwrap().path().to_owned();
    let mountpoint = tempfile::Builder::new()
        .prefix("psc-power-mnt-")
        .tempdir()
        .unwrap();
    // Odd power losses keep a random half of the unsynced pages, even ones none.
    let seed: u64 = std::env::var("PSC_POWER_LOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("PSC_POWER_LOSS_SEED={seed}");
    let survivors = |round: usize| match round % 2 {
        0 => Survivors::None,
        _ => Survivors::Some {
            seed: seed.wrapping_add(round as u64),
        },
    };
    // Two rounds with names journaled as ext4 and XFS do, two strict, two journaled,
    // unless PSC_POWER_LOSS_NAMES picks one.
    let chosen = Names::from_env();
    let names = |round: usize| {
        chosen.unwrap_or(match (round / 2) % 2 {
            0 => Names::Journaled,
            _ => Names::Strict,
        })
    };
    let mut mounted =
        Mounted::mount(&disk, mountpoint.path(), survivors(0), names(0)).expect("mount");
    // Frequent snapshots, so the power also goes out while one is written and the log
    // behind it purged.
    let mut cluster = TestCluster::start_on(
        3,
        &["--snapshot-every", "20", "--snapshot-keep-entries", "5"],
        mountpoint.path(),
    )
    .await;

    // The highest generation acknowledged for each tenant; each tenant belongs to one
    // sequential client, so its acknowledged generations must strictly increase.
    let acknowledged: Arc<Mutex<BTreeMap<u32, u32>>> = Arc::default();
    let mut lost_bytes = 0;
    for round in 0..POWER_LOSSES {
        // One replica (the leader, at times) misses the first half of the round and
        // catches up from a snapshot, whose transfer and install the power may cut.
        let lagging = round as u64 % 3 + 1;
        cluster.kill(lagging);
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let clients = attach_clients(
            &cluster,
            &stop,
            &acks,
            &acknowledged,
            &format!("round {round}"),
        );
        until_acknowledged(&acks, ATTACHES_PER_ROUND / 2, round).await;
        cluster.launch(lagging);
        cluster.wait_answering(lagging).await;
        until_acknowledged(&acks, ATTACHES_PER_ROUND, round).await;

        // The power goes out with the clients still sending.
        for id in cluster.running() {
            cluster.kill(id);
        }
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.expect("a client panicked");
        }
        let counters = mounted.power_loss();
        lost_bytes += counters.lost_bytes.load(Ordering::Relaxed);
        eprintln!(
            "power loss {round} ({:?} of the unsynced writes survive, names {:?}): {} attaches \
             acknowledged, {} writes, {} file and {} directory fsyncs reached the disk model; \
             lost: {} bytes and {} directory entries not fsynced",
            survivors(round),
            names(round),
            acks.load(Ordering::Relaxed),
            counters.writes.load(Ordering::Relaxed),
            counters.fsyncs.load(Ordering::Relaxed),
            counters.dir_fsyncs.load(Ordering::Relaxed),
            counters.lost_bytes.load(Ordering::Relaxed),
            counters.lost_entries.load(Ordering::Relaxed),
        );

        // Power back: every replica starts on what its disk kept.
        mounted = Mounted::mount(
            &disk,
            mountpoint.path(),
            survivors(round + 1),
            names(round + 1),
        )
        .expect("mount again");
        for id in 1..=3 {
            cluster.launch(id);
        }
        for id in 1..=3 {
            cluster.wait_answering(id).await;
        }
        cluster.wait_for_leader().await;
        let acknowledged = acknowledged.lock().unwrap().clone();
        assert_acknowledged_on(
            &cluster,
            &[1, 2, 3],
            &acknowledged,
            &format!("after power loss {round}"),
        )
        .await;
    }
    let installs: usize = (1..=3)
        .map(|id| cluster.log_of(id).matches("installed snapshot").count())
        .sum();
    eprintln!("{installs} snapshots installed by lagging replicas");
    assert!(
        installs > 0,
        "no lagging replica caught up from a snapshot: the test missed that path"
    );
    assert!(
        lost_bytes > 0,
        "no power loss dropped a byte: the file system model did not take effect"
    );
    drop(cluster);
    drop(mounted);
}

/// The highest generation acknowledged for each tenant.
type Acknowledged = Arc<Mutex<BTreeMap<u32, u32>>>;

/// Starts [`CLIENTS`] sequential clients attaching their own tenants through every
/// replica in turn until `stop`, counting answers in `acks` and recording the highest
/// generation acknowledged per tenant; each tenant belongs to one client, so its
/// acknowledged generations must strictly increase (checked as they come).
fn attach_clients(
    cluster: &TestCluster,
    stop: &Arc<AtomicBool>,
    acks: &Arc<AtomicU64>,
    acknowledged: &Acknowledged,
    when: &str,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|c| {
            let replicas: Vec<_> = (1..=3).map(|id| cluster.client(id)).collect();
            let (stop, acks, acknowledged) = (stop.clone(), acks.clone(), acknowledged.clone());
            let when = when.to_owned();
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let tenant = c * TENANTS_PER_CLIENT + (i as u32 % TENANTS_PER_CLIENT);
                    let node = NodeId(u64::from(i as u32 % 3 + 1));
                    let via = &replicas[(i + c as usize) % replicas.len()];
                    i += 1;
                    // An error leaves the attach's fate unknown: only answers count.
                    let Ok(Some(generation)) =
                        via.attach_hook(shard(tenant), Some(node), None).await
                    else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let mut acknowledged = acknowledged.lock().unwrap();
                    if let Some(&before) = acknowledged.get(&tenant) {
                        assert!(
                            generation > before,
                            "{when}: tenant {tenant} was given generation {generation} \
                             after generation {before} was acknowledged"
                        );
                    }
                    acknowledged.insert(tenant, generation);
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// Each of `replicas` holds, for every tenant, at least the generation acknowledged for
/// it, and calls it valid exactly when it is still the current one.
async fn assert_acknowledged_on(
    cluster: &TestCluster,
    replicas: &[u64],
    acknowledged: &BTreeMap<u32, u32>,
    when: &str,
) {
    for &id in replicas {
        let client = cluster.client(id);
        for (&tenant, &generation) in acknowledged {
            // Reads, so retried: a replica just restarted may not know the leader yet.
            let (now, _) = retried(|| client.inspect(shard(tenant)))
                .await
                .unwrap_or_else(|e| panic!("inspect of tenant {tenant} through replica {id}: {e}"))
                .unwrap_or_else(|| panic!("tenant {tenant} lost its attachment"));
            assert!(
                now >= generation,
                "{when}, replica {id} says tenant {tenant} is at generation {now}, but \
                 generation {generation} was acknowledged"
            );
            let asked = [(shard(tenant), generation)];
            let valid = retried(|| client.validate(&asked))
                .await
                .unwrap()
                .tenants
                .first()
                .map(|t| t.valid);
            assert_eq!(
                valid,
                Some(now == generation),
                "{when}, replica {id}: validate of tenant {tenant} generation {generation} \
                 (current {now})"
            );
        }
    }
}

/// The leader's disk starts failing while one follower is down: every fsync on it fails
/// with EIO from then on, so the leader and the one follower still up are the only
/// majority left, and the leader's own copy is needed for anything to be acknowledged.
/// A replica that counted its own unsynced log (a swallowed fsync error, a flush
/// reported before it happened) would go on acknowledging attaches that only that
/// follower holds. The disk then loses what no fsync made durable (a power loss) and
/// comes back working, that follower is killed, and the leader and the follower that
/// was down must hold every acknowledged generation between them. Only then is the
/// second rule checked: the leader stopped by itself, saying why, rather than serve on a
/// log it cannot trust. Each replica has a file system of its own, so only the leader's
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_starts_failing_stops_and_nothing_acknowledged_is_lost() {
    if skipped() {
        return;
    }
    let backing = Disk(Some(
        tempfile::Builder::new()
            .prefix("psc-failing-disk-")
            .tempdir()
            .unwrap(),
    ));
    let backing = backing.0.as_ref().unwrap().path().to_owned();
    let root = tempfile::Builder::new()
        .prefix("psc-failing-mnt-")
        .tempdir()
        .unwrap();
    // replica-N (the data dir TestCluster gives replica N) is a mount of its own. The
    // mounts are declared before the cluster so that, should an assertion fail, the
    // replicas are killed before their file systems are unmounted.
    let mount = |id: u64| {
        let disk = backing.join(format!("disk-{id}"));
        let data_dir = root.path().join(format!("replica-{id}"));
        std::fs::create_dir_all(&disk).unwrap();
        std::fs::create_dir_all(&data_dir).unwrap();
        Mounted::mount(&disk, &data_dir, Survivors::None, Names::Journaled).expect("mount")
    };
    let mut mounts: BTreeMap<u64, Mounted> = (1..=3).map(|id| (id, mount(id))).collect();
    let mut cluster = TestCluster::start_on(3, &[], root.path()).await;

    let acknowledged: Acknowledged = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let clients = attach_clients(&cluster, &stop, &acks, &acknowledged, "a failing disk");
    until_acknowledged(&acks, 100, 0).await; // round 0: all three up

    let failing = cluster.wait_for_leader().await;
    let (down, holder) = {
        let others: Vec<u64> = (1..=3).filter(|id| *id != failing).collect();
        (others[0], others[1])
    };
    cluster.kill(down);
    let before = acks.load(Ordering::Relaxed);
    until_acknowledged(&acks, before + 50, 1).await; // round 1: leader and one follower
    mounts[&failing]
        .faults
        .fsync_fails
        .store(true, Ordering::Relaxed);
    let at_fault = acks.load(Ordering::Relaxed);
    eprintln!("leader {failing}'s disk fails from attach {at_fault} on; {down} is down");
    // A correct leader stops at its first failed flush; a wrong one goes on answering.
    let end = std::time::Instant::now() + DEADLINE * 2;
    let stopped_by_itself = loop {
        if cluster.has_exited(failing) {
            break true;
        }
        if acks.load(Ordering::Relaxed) >= at_fault + 100 || std::time::Instant::now() > end {
            cluster.kill(failing);
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client panicked");
    }
    eprintln!(
        "{} attaches acknowledged after the fault",
        acks.load(Ordering::Relaxed) - at_fault
    );

    // Its disk loses what no fsync made durable and comes back working; the follower
    // that stayed up is killed, so the old leader and the follower that was down must
    // have every acknowledged generation between them.
    let lost = mounts.remove(&failing).expect("its mount").power_loss();
    eprintln!(
        "replica {failing}'s disk lost {} unsynced bytes",
        lost.lost_bytes.load(Ordering::Relaxed)
    );
    mounts.insert(failing, mount(failing));
    cluster.kill(holder);
    cluster.launch(failing);
    cluster.launch(down);
    cluster.wait_answering(failing).await;
    cluster.wait_answering(down).await;
    let leader = cluster.wait_for_leader().await;
    let running = cluster.running();
    cluster
        .wait_matched_by(
            leader,
            &running
                .iter()
                .copied()
                .filter(|id| *id != leader)
                .collect::<Vec<_>>(),
        )
        .await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_acknowledged_on(
        &cluster,
        &running,
        &acknowledged,
        "without the follower that stayed up",
    )
    .await;

    let log = cluster.log_of(failing);
    assert!(
        stopped_by_itself,
        "replica {failing} still ran on a failing disk:\n{log}"
    );
    assert!(
        log.contains("raft stopped with a fatal error; shutting the replica down"),
        "replica {failing} did not say why it stopped:\n{log}"
    );
    assert!(
        log.contains("Input/output error"),
        "replica {failing} never said its disk failed:\n{log}"
    );

    // And all three together again.
    cluster.launch(holder);
    cluster.wait_answering(holder).await;
    let leader = cluster.wait_for_leader().await;
    cluster.wait_matched_by_followers(leader).await;
    assert_acknowledged_on(
        &cluster,
        &[1, 2, 3],
        &acknowledged,
        "after the failing disk",
    )
    .await;
    drop(cluster);
    drop(mounts);
}

/// sled writes any message over a quarter of a segment (128 KiB) to a file of its own
/// under `blobs/`, and it rewrites a whole leaf of up to 16 log entries as one message: a
/// leaf of entries over 8 KiB each is enough, with no large value anywhere (a full batch
/// of 256 attaches encodes to about 8 KiB; these entries hold two). A log store that
/// fsyncs sled's data file but not those blob files acknowledges entries that a power
/// loss then takes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_whose_pages_sled_writes_to_blob_files_keeps_what_it_acknowledged() {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::RaftLogReader;
    use pageserver_controller::consensus::LogStore;
    use pageserver_controller::replica::MAX_BATCH;

    if skipped() {
        return;
    }
    const ENTRIES: u64 = 64;
    let disk = Disk(Some(tempfile::tempdir().unwrap()));
    let backing = disk.0.as_ref().unwrap().path().to_owned();
    let mountpoint = tempfile::tempdir().unwrap();
    let per_entry = 2 * MAX_BATCH as u32;
    let entry = |index: u64| {
        let first = index as u32 * per_entry;
        log_entry(index, first..first + per_entry)
    };
    let blobs_seen = {
        let mounted = Mounted::mount(&backing, mountpoint.path(), Survivors::None, Names::Strict)
            .expect("mount");
        let path = mountpoint.path().join("log");
        let mut blobs_seen = 0;
        {
            let mut log = LogStore::open(&path, 1, 64 << 20).expect("open the log");
            for index in 1..=ENTRIES {
                // Returns once the log store reported the entry as on disk.
                log.blocking_append([entry(index)]).await.unwrap();
                blobs_seen = blobs_seen
                    .max(std::fs::read_dir(path.join("blobs")).map_or(0, |files| files.count()));
            }
        }
        controller_storage::wait_until_released(&path).expect("sled lets go of its lock");
        mounted.power_loss();
        blobs_seen
    };
    assert!(
        blobs_seen > 0,
        "sled wrote no blob file: the test did not reach what it is about"
    );
    // The watermark, created beside the log at its first open, is there to check it.
    let watermark = backing.join("log.watermark");
    assert!(
        std::fs::metadata(&watermark).is_ok_and(|m| m.len() > 0),
        "the log's watermark ({}) did not survive the power loss: its name was never fsynced",
        watermark.display()
    );
    let _mounted = Mounted::mount(&backing, mountpoint.path(), Survivors::None, Names::Strict)
        .expect("mount again");
    let mut log = LogStore::open(&mountpoint.path().join("log"), 1, 64 << 20)
        .unwrap_or_else(|e| panic!("the log did not open after the power loss: {e}"));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(
        state.last_log_id.map(|id| id.index),
        Some(ENTRIES),
        "the last acknowledged entry is gone"
    );
    let entries = log.try_get_log_entries(1..ENTRIES + 1).await.unwrap();
    assert_eq!(entries.len() as u64, ENTRIES);
    for (got, index) in entries.iter().zip(1..) {
        assert_eq!(*got, entry(index), "entry {index} changed");
    }
}

/// Once an fsync of the log fails, nothing is acknowledged again in this process, even
/// after fsyncs work again: the kernel may have dropped the pages the failed fsync could
/// not write, and a later fsync that succeeds says nothing about them. Opened again (a
/// restart), the log holds what was acknowledged before the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_whose_fsync_failed_acknowledges_nothing_more() {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use pageserver_controller::consensus::LogStore;

    if skipped() {
        return;
    }
    let disk = Disk(Some(tempfile::tempdir().unwrap()));
    let backing = disk.0.as_ref().unwrap().path().to_owned();
    let mountpoint = tempfile::tempdir().unwrap();
    let entry = |index: u64| log_entry(index, index as u32..index as u32 + 1);
    let mounted = Mounted::mount(
        &backing,
        mountpoint.path(),
        Survivors::None,
        Names::Journaled,
    )
    .expect("mount");
    let path = mountpoint.path().join("log");
    {
        let mut log = LogStore::open(&path, 1, 64 << 20).expect("open the log");
        log.blocking_append([entry(1)])
            .await
            .expect("a healthy disk");
        mounted.faults.fsync_fails.store(true, Ordering::Relaxed);
        let failed = log.blocking_append([entry(2)]).await;
        assert!(
            failed.is_err(),
            "an append whose fsync failed was acknowledged"
        );
        mounted.faults.fsync_fails.store(false, Ordering::Relaxed);
        for index in 3..=4 {
            let after = log.blocking_append([entry(index)]).await;
            assert!(
                after.is_err(),
                "entry {index} was acknowledged by a log whose fsync had failed"
            );
        }
    }
    controller_storage::wait_until_released(&path).expect("sled lets go of its lock");
    let mut log = LogStore::open(&path, 1, 64 << 20)
        .unwrap_or_else(|e| panic!("the log did not open again: {e}"));
    let state = log.get_log_state().await.unwrap();
    assert!(
        state.last_log_id.is_some_and(|id| id.index >= 1),
        "the entry acknowledged before the failure is gone: {state:?}"
    );
    drop(log);
    controller_storage::wait_until_released(&path).expect("sled lets go of its lock");
    drop(mounted);
}

/// Log entry `index` (term 1) attaching each tenant in `tenants` to a node.
fn log_entry(
    index: u64,
    tenants: std::ops::Range<u32>,
) -> openraft::Entry<pageserver_controller::consensus::TypeConfig> {
    use pageserver_controller::consensus::Proposal;
    use pageserver_controller::domain::Command;
    openraft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(Proposal {
            commands: tenants
                .map(|tenant| Command::AttachHook {
                    shard: shard(tenant),
                    node: Some(NodeId(u64::from(tenant % 3 + 1))),
                    generation_override: None,
                })
                .collect(),
        }),
    }
}
