//! What must survive a restart, and what must stop one.

mod common;

use common::{Add, Config, Sm};
use controller_raft::Member;
use controller_storage::{LogOpenError, LogStore, SnapshotError};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder,
    Vote,
};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, add: u64) -> Entry<Config> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Add(add)),
    }
}

fn open_log(dir: &std::path::Path) -> LogStore<Config> {
    wait_until_unlocked(&dir.join("log"));
    LogStore::open(&dir.join("log"), 1, 1 << 20).expect("open log")
}

/// Applies `entries` to `sm` and writes a snapshot of the result.
async fn apply_and_snapshot(
    sm: &mut Sm,
    entries: impl IntoIterator<Item = Entry<Config>, IntoIter: Send> + Send,
) -> openraft::Snapshot<Config> {
    sm.apply(entries).await.unwrap();
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

/// A reopen within one process waits for sled's I/O threads to let go of the file lock
/// (a CI run once reopened too early: "could not acquire lock").
fn wait_until_unlocked(sled_dir: &std::path::Path) {
    controller_storage::wait_until_released(sled_dir).expect("sled lets go of its lock");
}

#[tokio::test]
async fn vote_log_truncate_and_purge_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open_log(dir.path());
        log.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
        log.blocking_append((1..=10).map(|i| entry(3, i, i)))
            .await
            .unwrap();
        log.purge(log_id(3, 3)).await.unwrap();
        log.truncate(log_id(3, 8)).await.unwrap();
        log.save_committed(Some(log_id(3, 6))).await.unwrap();
        log.blocking_append([entry(4, 8, 80)]).await.unwrap();
    }
    let mut log = open_log(dir.path());
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(3, 2))
    );
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 3)));
    assert_eq!(state.last_log_id, Some(log_id(4, 8)));
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, vec![4, 5, 6, 7, 8]);
    assert_eq!(entries.last().unwrap().log_id, log_id(4, 8));
}

/// openraft 0.9 asks for a purge behind a snapshot that a follower installs without
/// waiting for the snapshot to be written; the log store waits for it, so a crash in
/// between never leaves a log purged past the only snapshot on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_not_purged_past_the_snapshot_on_disk() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let mut log = open_log(dir.path());
    let mut sm = Sm::open(&dir.path().join("snapshot")).unwrap();
    log.purge_behind(sm.durable_snapshot()).unwrap();
    log.blocking_append((1..=6).map(|i| entry(1, i, i)))
        .await
        .unwrap();

    let purge = {
        let mut log = log.clone();
        tokio::spawn(async move { log.purge(log_id(1, 4)).await })
    };
    // No snapshot on disk covers index 4: the purge waits (it cannot finish by itself,
    // so waiting here only gives a wrong implementation the time to do it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !purge.is_finished(),
        "purged before a snapshot covered the entries"
    );
    assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, None);

    // The state machine writes a snapshot at 4; then the purge goes through.
    apply_and_snapshot(&mut sm, (1..=4).map(|i| entry(1, i, i))).await;
    tokio::time::timeout(Duration::from_secs(30), purge)
        .await
        .expect("the purge finishes once the snapshot is on disk")
        .unwrap()
        .unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
}

/// A log purged past the snapshot on disk (damaged by hand, or written before the log
/// waited for the snapshot) has lost the entries between: the replica refuses to start,
/// saying so, rather than fail later in openraft with an unexplained read error.
#[tokio::test]
async fn a_log_purged_past_the_snapshot_on_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open_log(dir.path());
        log.blocking_append((1..=6).map(|i| entry(1, i, i)))
            .await
            .unwrap();
        // No snapshot given: nothing holds this purge back.
        log.purge(log_id(1, 4)).await.unwrap();
    }
    let mut sm = Sm::open(&dir.path().join("snapshot")).unwrap();
    apply_and_snapshot(&mut sm, (1..=3).map(|i| entry(1, i, i))).await;
    let mut log = open_log(dir.path());
    match log.purge_behind(sm.durable_snapshot()) {
        Err(LogOpenError::PurgedPastSnapshot {
            purged: 4,
            snapshot: Some(3),
        }) => {}
        other => panic!("expected a purged-past-snapshot refusal, got {other:?}"),
    }
    drop(log);

    // A snapshot at the purge point is enough; so is none at all for a log never purged.
    apply_and_snapshot(&mut sm, [entry(1, 4, 4)]).await;
    let mut log = open_log(dir.path());
    log.purge_behind(sm.durable_snapshot()).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let mut log = open_log(fresh.path());
    let sm = Sm::open(&fresh.path().join("snapshot")).unwrap();
    log.purge_behind(sm.durable_snapshot()).unwrap();
}

#[tokio::test]
async fn a_purge_to_the_end_keeps_the_last_log_id() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open_log(dir.path());
        log.blocking_append((1..=5).map(|i| entry(1, i, i)))
            .await
            .unwrap();
        log.purge(log_id(1, 5)).await.unwrap();
    }
    let mut log = open_log(dir.path());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    assert!(log.try_get_log_entries(0..100).await.unwrap().is_empty());
}

#[tokio::test]
async fn snapshot_build_and_install_round_trip_and_survive_reopen() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let membership = Entry::<Config> {
        log_id: log_id(1, 1),
        payload: EntryPayload::Membership(Membership::new(
            vec![[1u64, 2, 3].into_iter().collect()],
            [
                (1u64, Member::new("http://a")),
                (2, Member::new("http://b")),
                (3, Member::new("http://c")),
            ]
            .into_iter()
            .collect::<std::collections::BTreeMap<u64, Member>>(),
        )),
    };
    let snapshot = {
        let mut leader = Sm::open(&leader_dir.path().join("snapshot")).unwrap();
        leader
            .apply([membership, entry(1, 2, 5), entry(1, 3, 7)])
            .await
            .unwrap();
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));
        // Applying more after the snapshot does not change what the snapshot holds.
        leader.apply([entry(1, 4, 100)]).await.unwrap();
        assert_eq!(leader.shared().read().unwrap().state.0, 112);
        snapshot
    };

    // The leader restarts from the snapshot: the state at index 3, not 4 (the log replays
    // the rest).
    let reopened = Sm::open(&leader_dir.path().join("snapshot")).unwrap();
    {
        let applied = reopened.shared();
        let applied = applied.read().unwrap();
        assert_eq!(applied.state.0, 12);
        assert_eq!(applied.last_applied, Some(log_id(1, 3)));
        assert_eq!(applied.last_membership.membership().voter_ids().count(), 3);
    }

    {
        let mut follower = Sm::open(&follower_dir.path().join("snapshot")).unwrap();
        follower.apply([entry(1, 1, 1000)]).await.unwrap();
        let mut data = follower.begin_receiving_snapshot().await.unwrap();
        let mut source = snapshot.snapshot;
        tokio::io::copy(&mut source, &mut *data).await.unwrap();
        follower
            .install_snapshot(&snapshot.meta, data)
            .await
            .unwrap();
        assert_eq!(
            follower.shared().read().unwrap().state.0,
            12,
            "install replaces the state"
        );
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
    }
    let follower = Sm::open(&follower_dir.path().join("snapshot")).unwrap();
    assert_eq!(follower.shared().read().unwrap().state.0, 12);
    assert_eq!(
        follower.shared().read().unwrap().last_applied,
        Some(log_id(1, 3))
    );
}

/// A snapshot older than the one a replica built from its own state is refused, not
/// acknowledged: acknowledging it would make openraft apply the entries after it again.
#[tokio::test]
async fn a_snapshot_older_than_the_current_one_is_refused_and_changes_nothing() {
    let older_dir = tempfile::tempdir().unwrap();
    let newer_dir = tempfile::tempdir().unwrap();
    let older = {
        let mut sm = Sm::open(&older_dir.path().join("snapshot")).unwrap();
        sm.apply([entry(1, 1, 1), entry(1, 2, 2)]).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap()
    };
    let mut sm = Sm::open(&newer_dir.path().join("snapshot")).unwrap();
    sm.apply([entry(1, 1, 1), entry(1, 2, 2), entry(1, 3, 4)])
        .await
        .unwrap();
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 3)));
    let mut data = sm.begin_receiving_snapshot().await.unwrap();
    let mut source = older.snapshot;
    tokio::io::copy(&mut source, &mut *data).await.unwrap();
    let refused = sm.install_snapshot(&older.meta, data).await;
    assert!(refused.is_err(), "an older snapshot was acknowledged");
    let applied = {
        let shared = sm.shared();
        let applied = shared.read().unwrap();
        (applied.state.0, applied.last_applied)
    };
    assert_eq!(applied, (7, Some(log_id(1, 3))));
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, built.meta);
}

/// A counter whose snapshot encode stops half-way until the test lets it go, so a test
/// can apply entries while a snapshot of an earlier state is being written.
mod held_encode {
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use controller_storage::{ReplicatedState, StateMachineStore};
    use serde::{Deserialize, Serialize, Serializer};

    use super::common::{Add, Config, Sum};

    #[derive(Default)]
    struct Gate {
        /// (an encode is waiting, the test let it go)
        state: Mutex<(bool, bool)>,
        changed: Condvar,
    }

    static GATE: std::sync::LazyLock<Gate> = std::sync::LazyLock::new(Gate::default);

    /// Waits until an encode is held at the gate; false after `patience`.
    pub fn wait_until_held(patience: Duration) -> bool {
        let state = GATE.state.lock().unwrap();
        let (state, _) = GATE
            .changed
            .wait_timeout_while(state, patience, |(held, _)| !*held)
            .unwrap();
        state.0
    }

    pub fn release() {
        GATE.state.lock().unwrap().1 = true;
        GATE.changed.notify_all();
    }

    #[derive(Default, Serialize, Deserialize)]
    pub struct Held(pub u64);

    pub struct Frozen(u64);

    impl Serialize for Frozen {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut state = GATE.state.lock().unwrap();
            state.0 = true;
            GATE.changed.notify_all();
            let (state, timeout) = GATE
                .changed
                .wait_timeout_while(state, Duration::from_secs(20), |(_, released)| !*released)
                .unwrap();
            drop(state);
            assert!(
                !timeout.timed_out(),
                "the test never let the encode go: applying must have waited for it"
            );
            // Encoded exactly as `Held` is.
            serializer.serialize_newtype_struct("Held", &self.0)
        }
    }

    impl ReplicatedState<Config> for Held {
        fn apply(&mut self, command: &Add) -> Sum {
            self.0 += command.0;
            Sum(self.0)
        }

        type Frozen = Frozen;

        fn freeze(&self) -> Frozen {
            Frozen(self.0)
        }
    }

    pub type HeldSm = StateMachineStore<Config, Held>;
}

/// A snapshot encodes a frozen copy after letting go of the applied state: entries apply
/// while it encodes, and the snapshot still holds exactly the state at its own log id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_apply_while_a_snapshot_encodes_and_the_snapshot_holds_its_own_index() {
    use held_encode::HeldSm;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    let mut sm = HeldSm::open(&path).unwrap();
    sm.apply([entry(1, 1, 5), entry(1, 2, 7)]).await.unwrap();

    let mut builder = sm.get_snapshot_builder().await;
    let build = tokio::spawn(async move { builder.build_snapshot().await });
    let held =
        tokio::task::spawn_blocking(|| held_encode::wait_until_held(Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(held, "the snapshot build never reached its encode");

    // The encode is held: applying must not wait for it.
    let started = Instant::now();
    sm.apply([entry(1, 3, 100)]).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(sm.shared().read().unwrap().state.0, 112);
    assert_eq!(sm.shared().read().unwrap().last_applied, Some(log_id(1, 3)));
    held_encode::release();
    let snapshot = build
        .await
        .unwrap()
        .expect("the snapshot is built once let go");
    assert!(
        waited < Duration::from_secs(10),
        "applying took {waited:?} while a snapshot encoded"
    );

    // The snapshot is the state at the index it names, not the one applied meanwhile.
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 2)));
    drop(sm);
    let reopened = HeldSm::open(&path).unwrap();
    let applied = reopened.shared();
    let applied = applied.read().unwrap();
    assert_eq!(applied.state.0, 12);
    assert_eq!(applied.last_applied, Some(log_id(1, 2)));
}

#[tokio::test]
async fn a_damaged_snapshot_stops_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    {
        let mut sm = Sm::open(&path).unwrap();
        apply_and_snapshot(&mut sm, [entry(1, 1, 5)]).await;
    }
    let file = path.join("current.snap");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    match Sm::open(&path) {
        Err(SnapshotError::Checksum) => {}
        Err(other) => panic!("expected a checksum error, got {other}"),
        Ok(_) => panic!("a damaged snapshot was loaded"),
    }
}

#[tokio::test]
async fn a_damaged_log_entry_stops_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open_log(dir.path());
        log.blocking_append((1..=3).map(|i| entry(1, i, i)))
            .await
            .unwrap();
    }
    {
        wait_until_unlocked(&dir.path().join("log"));
        let db = sled::open(dir.path().join("log")).unwrap();
        let tree = db.open_tree("log").unwrap();
        tree.insert(2u64.to_be_bytes(), &b"\x01garbage"[..])
            .unwrap();
        db.flush().unwrap();
    }
    wait_until_unlocked(&dir.path().join("log"));
    match LogStore::<Config>::open(&dir.path().join("log"), 1, 1 << 20) {
        Err(LogOpenError::Corrupt { reason, .. }) => {
            assert!(reason.contains("entry 2"), "{reason}")
        }
        Err(other) => panic!("expected a corrupt-log error, got {other}"),
        Ok(_) => panic!("a damaged log was opened"),
    }
}

#[tokio::test]
async fn a_hole_in_the_log_stops_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open_log(dir.path());
        log.blocking_append((1..=3).map(|i| entry(1, i, i)))
            .await
            .unwrap();
    }
    {
        wait_until_unlocked(&dir.path().join("log"));
        let db = sled::open(dir.path().join("log")).unwrap();
        db.open_tree("log")
            .unwrap()
            .remove(2u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    wait_until_unlocked(&dir.path().join("log"));
    assert!(matches!(
        LogStore::<Config>::open(&dir.path().join("log"), 1, 1 << 20),
        Err(LogOpenError::Corrupt { .. })
    ));
}

/// A new log appears at its path only once sled's files are durable; a power loss during
/// the first start leaves at most `log.creating` behind, in any state, which the next
/// start discards (it never held a vote or an entry) before creating the log again.
#[tokio::test]
async fn a_log_whose_creation_was_cut_short_is_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let creating = dir.path().join("log.creating");
    std::fs::create_dir(&creating).unwrap();
    // sled's settings file torn, as a power cut that kept part of its write leaves it:
    // sled would refuse to open this directory.
    std::fs::write(creating.join("conf"), [0u8; 64]).unwrap();
    std::fs::write(creating.join("db"), b"\x00\x01 torn").unwrap();
    assert!(sled::Config::new().path(&creating).open().is_err());

    let mut log = LogStore::<Config>::open(&path, 1, 1 << 20).expect("a new, empty log");
    assert!(!creating.exists(), "the unfinished log is removed");
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, None);
    assert_eq!(log.read_vote().await.unwrap(), None);
    assert!(std::fs::metadata(path.join("conf")).unwrap().len() > 8);
    log.save_vote(&Vote::new(1, 1)).await.unwrap();
    drop(log);
    let mut log = open_log(dir.path());
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
}

#[tokio::test]
async fn an_unfinished_storage_snapshot_does_not_stop_the_replica() {
    // sled names a page-table snapshot `snap.<lsn>.generating` until it is written and
    // fsynced; a full disk or a kill -9 leaves one behind, and sled 0.34.7 would read it
    // as the newest snapshot and call the whole log corrupt.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open_log(dir.path());
        log.save_vote(&Vote::new_committed(2, 3)).await.unwrap();
        log.blocking_append((1..=5).map(|i| entry(2, i, i)))
            .await
            .unwrap();
    }
    let sled_dir = dir.path().join("log");
    std::fs::write(sled_dir.join("snap.00000000000000FF.generating"), b"").unwrap();
    std::fs::write(
        sled_dir.join("snap.FFFFFFFFFFFFFFFF.generating"),
        b"half of a snapshot, no checksum",
    )
    .unwrap();

    let mut log = open_log(dir.path());
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 3))
    );
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries.last().unwrap().log_id, log_id(2, 5));
    let left: Vec<String> = std::fs::read_dir(&sled_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".generating"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Copies a closed log (sled's directory and the watermark beside it) to `to`.
fn copy_log(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.join("log")).unwrap();
    for file in std::fs::read_dir(from.join("log")).unwrap() {
        let file = file.unwrap().path();
        if file.is_file() {
            std::fs::copy(&file, to.join("log").join(file.file_name().unwrap())).unwrap();
        }
    }
    let watermark = from.join("log.watermark");
    if watermark.exists() {
        std::fs::copy(&watermark, to.join("log.watermark")).unwrap();
    }
}

#[tokio::test]
async fn a_damaged_storage_file_is_refused_rather_than_opened_as_a_shorter_log() {
    // sled takes a record that fails its checksum for the end of a write cut short by a
    // crash, and opens whatever came before it: without the watermark, every flip below
    // opened an empty log.
    let base = tempfile::tempdir().unwrap();
    let pristine = base.path().join("pristine");
    {
        let mut log = open_log(&pristine);
        log.save_vote(&Vote::new_committed(2, 3)).await.unwrap();
        log.blocking_append((1..=200).map(|i| entry(2, i, i)))
            .await
            .unwrap();
    }
    wait_until_unlocked(&pristine.join("log"));
    let size = std::fs::metadata(pristine.join("log/db")).unwrap().len();
    let mut seed = 20261128u64;
    let mut refused = 0;
    for round in 0..40 {
        let dir = base.path().join(format!("damaged-{round}"));
        copy_log(&pristine, &dir);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = (seed >> 33) % size;
        let mut bytes = std::fs::read(dir.join("log/db")).unwrap();
        bytes[at as usize] ^= 1 << ((seed >> 20) % 8);
        std::fs::write(dir.join("log/db"), bytes).unwrap();
        match LogStore::<Config>::open(&dir.join("log"), 1, 1 << 20) {
            Err(LogOpenError::Corrupt { reason, .. }) => {
                assert!(reason.contains("durably"), "byte {at}: {reason}");
                refused += 1;
            }
            Err(other) => panic!("byte {at}: expected a damaged-log error, got {other}"),
            Ok(mut log) => {
                // Opened: then nothing may be missing.
                assert_eq!(
                    log.read_vote().await.unwrap(),
                    Some(Vote::new_committed(2, 3)),
                    "byte {at}"
                );
                let entries = log.try_get_log_entries(1..=200).await.unwrap();
                assert_eq!(entries.len(), 200, "byte {at}");
            }
        }
    }
    assert!(refused > 0, "no flip was noticed: the check never ran");
}

#[tokio::test]
async fn a_missing_or_torn_watermark_does_not_stop_the_replica() {
    let base = tempfile::tempdir().unwrap();
    let pristine = base.path().join("pristine");
    {
        let mut log = open_log(&pristine);
        log.blocking_append((1..=5).map(|i| entry(1, i, i)))
            .await
            .unwrap();
    }
    wait_until_unlocked(&pristine.join("log"));
    // A data dir written before the watermark existed, and one whose last watermark
    // write a power loss cut short.
    for (name, damage) in [
        ("missing", None),
        ("torn", Some(&b"PSCW\x20\x00\x00\x00garbage"[..])),
    ] {
        let dir = base.path().join(name);
        copy_log(&pristine, &dir);
        match damage {
            None => std::fs::remove_file(dir.join("log.watermark")).unwrap(),
            Some(bytes) => std::fs::write(dir.join("log.watermark"), bytes).unwrap(),
        }
        let mut log = open_log(&dir);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 5)), "{name}");
        // ... and the watermark is written again, so a later loss (here sled's whole
        // directory) is caught.
        drop(log);
        wait_until_unlocked(&dir.join("log"));
        std::fs::remove_dir_all(dir.join("log")).unwrap();
        assert!(
            matches!(
                LogStore::<Config>::open(&dir.join("log"), 1, 1 << 20),
                Err(LogOpenError::Corrupt { .. })
            ),
            "{name}"
        );
    }
}
