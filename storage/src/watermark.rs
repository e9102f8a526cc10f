//! A second record, outside sled, of how far the log and the vote durably reached, so that
//! sled giving back less than it flushed stops the replica at start.
//!
//! Why: sled 0.34 rebuilds its state at open by reading its data file record by record
//! and takes the first record whose checksum fails for the end of a write a crash cut
//! short. A damaged byte in that file therefore does not make sled fail: it opens a
//! shorter log, or an empty one (a single flipped bit in the `db` file of a 200-entry log
//! opened an empty log in 300 of 300 tries). A replica that forgets entries or the vote it
//! acknowledged can help elect a leader that lacks a committed write, or vote twice in one
//! term. The checks at open (every value decodes, no holes) cannot see what is missing.
//!
//! The record names the vote and the last log id. It never claims more than sled holds:
//! - after a flush, the flusher writes the values that were in sled before the flush
//!   began (no fsync: if the write is lost, the record is only older), unless the record
//!   was lowered while the flush ran;
//! - before anything lowers the log's end (truncation, an offline reset), the record is
//!   lowered and fsynced first, so no crash can leave it above the log.
//!
//! At open, a vote lower than the record's, or a log that ends before the record's last
//! log id (in an earlier term, or in the same term at a lower index), is refused as a
//! damaged log. A record that fails its own checksum (a write cut short by a power loss)
//! or is missing (a data dir from before this record existed) is replaced without a
//! check.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use openraft::{LogId, Vote};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"PSCW";

/// How far the log and vote reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub vote: Option<Vote<u64>>,
    pub last: Option<LogId<u64>>,
}

impl Mark {
    /// Why `self` (what sled holds) falls short of `recorded`, if it does.
    pub fn shortfall(&self, recorded: &Mark) -> Option<String> {
        if let Some(recorded_vote) = &recorded.vote {
            let covered = self
                .vote
                .as_ref()
                .is_some_and(|vote| succeeds(vote, recorded_vote));
            if !covered {
                return Some(format!(
                    "its vote is {} but it had durably voted {recorded_vote}",
                    self.vote.map_or("none".to_owned(), |v| v.to_string())
                ));
            }
        }
        if position(&self.last) < position(&recorded.last) {
            return Some(format!(
                "its log ends at {} but it had durably written up to {}",
                self.last.map_or("nothing".to_owned(), |id| id.to_string()),
                recorded
                    .last
                    .map_or("nothing".to_owned(), |id| id.to_string()),
            ));
        }
        None
    }

    /// A mark no higher than either: the earlier vote and the shorter log (none where
    /// either has none).
    pub fn floor(&self, other: &Mark) -> Mark {
        let vote = match (self.vote, other.vote) {
            (Some(a), Some(b)) if succeeds(&a, &b) => Some(b),
            (Some(a), Some(b)) if succeeds(&b, &a) => Some(a),
            _ => None,
        };
        let last = match (self.last, other.last) {
            (Some(a), Some(b)) => Some(if position(&Some(a)) <= position(&Some(b)) {
                a
            } else {
                b
            }),
            _ => None,
        };
        Mark { vote, last }
    }
}

/// Where a log ending at `last` stands: by term, then index. A log only grows past what
/// was recorded (anything that cuts it back lowers the record first), so a log ending in
/// an earlier term than the record's, even at a higher index, is not the log that was
/// recorded: truncated entries came back and the ones written over them were lost.
fn position(last: &Option<LogId<u64>>) -> Option<(u64, u64)> {
    last.map(|id| (id.leader_id.term, id.index))
}

/// What the record file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// No record: a new data dir, or one written before the record existed.
    Missing,
    /// The record fails its checksum: a write cut short by a power loss.
    Damaged,
    Valid(Mark),
}

/// Whether a replica that durably stored `earlier` may later store `later`, in the order
/// openraft grants votes in: by leader id, term then candidate (this build has no
/// `single-term-leader`, so a voter that voted for candidate 2 in a term may vote for
/// candidate 3 in the same term, never back for 2 after 3), then committed after not.
/// (Written out rather than with `Vote`'s `PartialOrd`, whose rules for two committed
/// votes of one term depend on that feature.)
fn succeeds(later: &Vote<u64>, earlier: &Vote<u64>) -> bool {
    let (l, e) = (later.leader_id(), earlier.leader_id());
    let (l, e) = ((l.term, l.node_id), (e.term, e.node_id));
    l > e || (l == e && later.is_committed() >= earlier.is_committed())
}

/// The record's file and the mark of what has been written to sled so far.
#[derive(Debug)]
pub(crate) struct Watermark {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    /// What has been written to sled (durable or not yet).
    written: Mark,
    /// Counts the times the mark was lowered: a flush that began before the last
    /// lowering does not write (see [`Watermark::flushed`]).
    lowered: u64,
}

/// What a flush covers: the mark when it began, and which lowering it came after.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Covered {
    mark: Mark,
    lowered: u64,
}

impl Watermark {
    /// The record beside the sled directory `log_dir` (`log` -> `log.watermark`).
    pub(crate) fn path_for(log_dir: &Path) -> PathBuf {
        log_dir.with_extension("watermark")
    }

    /// Reads the record at `path`.
    pub(crate) fn read(path: &Path) -> io::Result<Recorded> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(decode(&bytes).map_or(Recorded::Damaged, Recorded::Valid)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Recorded::Missing),
            Err(e) => Err(e),
        }
    }

    /// Opens (or creates) the record at `path` without writing it: [`Watermark::start`]
    /// does, once the log has been checked against it.
    pub(crate) fn open(path: &Path) -> io::Result<Watermark> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Watermark {
            path: path.to_owned(),
            state: Mutex::new(State {
                file,
                written: Mark::default(),
                lowered: 0,
            }),
        })
    }

    /// Starts from the log's checked state at open, and records it durably, name
    /// included: [`Watermark::open`] may have just created the file, and a record whose
    /// name a power loss takes away reads as missing, which turns the check off.
    pub(crate) fn start(&self, current: Mark) -> io::Result<()> {
        let mut state = self.lock();
        state.written = current;
        write(&mut state, current, true)?;
        crate::data_dir::sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Notes a vote written to sled.
    pub(crate) fn wrote_vote(&self, vote: Vote<u64>) {
        self.lock().written.vote = Some(vote);
    }

    /// Notes that the log written to sled now ends at `last` (an append, or a purge past
    /// the last entry). Never lowers it: see [`Watermark::lower`].
    pub(crate) fn wrote_last(&self, last: LogId<u64>) {
        let mut state = self.lock();
        if position(&state.written.last) < position(&Some(last)) {
            state.written.last = Some(last);
        }
    }

    /// Before a purge up to `purged` deletes entries: where every entry left goes (the
    /// log then ends at `purged`) and the last one is of a later term (an entry a deposed
    /// leader wrote that the committed log, now in a snapshot, replaced), the log ends
    /// lower than recorded once the purge is done. Lowered durably first, as before a
    /// truncation; otherwise nothing.
    pub(crate) fn before_purge(&self, purged: LogId<u64>) -> io::Result<()> {
        let written = self.written();
        let emptied = written.last.is_none_or(|last| last.index <= purged.index);
        if emptied && position(&Some(purged)) < position(&written.last) {
            return self.lower(Mark {
                vote: written.vote,
                last: Some(purged),
            });
        }
        Ok(())
    }

    /// What sled holds so far.
    pub(crate) fn written(&self) -> Mark {
        self.lock().written
    }

    /// Taken by the flusher before a flush: what the flush will make durable.
    pub(crate) fn covered(&self) -> Covered {
        let state = self.lock();
        Covered {
            mark: state.written,
            lowered: state.lowered,
        }
    }

    /// After a flush: records what it covered. Unless the mark was lowered meanwhile:
    /// then the lowered record (already durable) stays, because what was written after
    /// the lowering may or may not be in this flush; the next flush records it.
    pub(crate) fn flushed(&self, covered: Covered) -> io::Result<()> {
        let mut state = self.lock();
        if covered.lowered != state.lowered {
            return Ok(());
        }
        write(&mut state, covered.mark, false)
    }

    /// Lowers the record durably before the log is cut back to `mark` (truncation, reset).
    pub(crate) fn lower(&self, mark: Mark) -> io::Result<()> {
        let mut state = self.lock();
        state.written = mark;
        state.lowered += 1;
        write(&mut state, mark, true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn write(state: &mut State, mark: Mark, sync: bool) -> io::Result<()> {
    // One write at offset 0 of a small, fixed place: the length prefix says where the
    // record ends, so bytes left over from a longer earlier record are never read.
    state.file.write_all_at(&encode(&mark), 0)?;
    if sync {
        state.file.sync_data()?;
    }
    Ok(())
}

fn encode(mark: &Mark) -> Vec<u8> {
    let payload = bincode::serialize(mark).expect("a mark serializes");
    let mut bytes = Vec::with_capacity(12 + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<Mark> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let payload = rest.get(4..4 + len)?;
    let crc = u32::from_le_bytes(rest.get(4 + len..8 + len)?.try_into().ok()?);
    if crc32fast::hash(payload) != crc {
        return None;
    }
    bincode::deserialize(payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn mark(term: u64, last: Option<u64>) -> Mark {
        Mark {
            vote: Some(Vote::new_committed(term, 1)),
            last: last.map(|i| id(term, i)),
        }
    }

    #[test]
    fn a_log_that_reaches_the_record_passes_and_a_shorter_one_does_not() {
        let recorded = mark(3, Some(10));
        assert_eq!(mark(3, Some(10)).shortfall(&recorded), None);
        assert_eq!(mark(4, Some(12)).shortfall(&recorded), None);
        let short = mark(3, Some(9)).shortfall(&recorded).unwrap();
        assert!(short.contains("durably written up to"), "{short}");
        // Longer, but ending in an earlier term: entries of term 2 that were truncated
        // and written over came back, and the term-3 entries are gone.
        let resurrected = Mark {
            vote: recorded.vote,
            last: Some(id(2, 12)),
        };
        let short = resurrected.shortfall(&recorded).unwrap();
        assert!(short.contains("durably written up to"), "{short}");
        assert!(Mark::default().shortfall(&recorded).is_some());
        let older_vote = mark(2, Some(10)).shortfall(&recorded).unwrap();
        assert!(older_vote.contains("durably voted"), "{older_vote}");
        // In one term, openraft grants a candidate of a higher id after a lower one (two
        // candidates timed out together), never the other way.
        for committed in [false, true] {
            let vote = |node| {
                let mut vote = Vote::new(3, node);
                vote.committed = committed;
                Some(vote)
            };
            let (lower, higher) = (
                Mark {
                    vote: vote(1),
                    last: Some(id(3, 10)),
                },
                Mark {
                    vote: vote(2),
                    last: Some(id(3, 10)),
                },
            );
            assert_eq!(higher.shortfall(&lower), None);
            let back = lower.shortfall(&higher).unwrap();
            assert!(back.contains("durably voted"), "{back}");
            assert_eq!(lower.floor(&higher), lower);
        }
        // The same vote, committed since: fine; uncommitted again: not.
        let uncommitted = Mark {
            vote: Some(Vote::new(3, 1)),
            last: Some(id(3, 10)),
        };
        assert_eq!(recorded.shortfall(&uncommitted), None);
        assert!(uncommitted.shortfall(&recorded).is_some());
        assert_eq!(recorded.shortfall(&Mark::default()), None);
        // The floor of two marks is covered by both.
        let (a, b) = (mark(3, Some(10)), mark(5, Some(4)));
        let floor = a.floor(&b);
        assert_eq!(floor, a);
        assert_eq!(a.shortfall(&floor), None);
        assert_eq!(b.shortfall(&floor), None);
    }

    #[test]
    fn the_record_round_trips_and_a_damaged_one_is_ignored() {
        let bytes = encode(&mark(7, Some(42)));
        assert_eq!(decode(&bytes), Some(mark(7, Some(42))));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert_eq!(decode(&damaged), None, "byte {at}");
        }
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        // A shorter record over a longer one: the leftover bytes are not read.
        let mut overwritten = encode(&mark(7, Some(42)));
        let shorter = encode(&Mark::default());
        overwritten[..shorter.len()].copy_from_slice(&shorter);
        assert_eq!(decode(&overwritten), Some(Mark::default()));
    }

    #[test]
    fn a_flush_never_raises_the_record_above_a_lowered_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.watermark");
        let watermark = Watermark::open(&path).unwrap();
        watermark.start(mark(1, Some(100))).unwrap();
        assert_eq!(
            Watermark::read(&path).unwrap(),
            Recorded::Valid(mark(1, Some(100)))
        );
        let before_truncation = watermark.covered();
        watermark.lower(mark(1, Some(89))).unwrap();
        // An append after the truncation, then the flush that began before the truncation
        // ends: it may not hold the append, so it records nothing.
        watermark.wrote_last(id(2, 90));
        watermark.flushed(before_truncation).unwrap();
        assert_eq!(
            Watermark::read(&path).unwrap(),
            Recorded::Valid(mark(1, Some(89)))
        );
        watermark.flushed(watermark.covered()).unwrap();
        let Recorded::Valid(recorded) = Watermark::read(&path).unwrap() else {
            panic!("no valid record");
        };
        assert_eq!(recorded.last, Some(id(2, 90)));
    }

    #[test]
    fn a_purge_past_a_later_terms_entries_lowers_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.watermark");
        let watermark = Watermark::open(&path).unwrap();
        // The log ends with an entry of term 5 that the committed log replaced; a snapshot
        // of term 4 reaching past it is installed and the log purged up to it.
        let vote = Some(Vote::new_committed(6, 2));
        watermark
            .start(Mark {
                vote,
                last: Some(id(5, 10)),
            })
            .unwrap();
        // A purge that leaves the last entry changes nothing.
        watermark.before_purge(id(4, 9)).unwrap();
        assert_eq!(watermark.written().last, Some(id(5, 10)));
        watermark.before_purge(id(4, 12)).unwrap();
        let after = Mark {
            vote,
            last: Some(id(4, 12)),
        };
        assert_eq!(Watermark::read(&path).unwrap(), Recorded::Valid(after));
        assert_eq!(after.shortfall(&after), None);
        // A purge in the same or a later term needs nothing lowered.
        watermark.before_purge(id(6, 20)).unwrap();
        assert_eq!(Watermark::read(&path).unwrap(), Recorded::Valid(after));
    }
}
