//! A replica's data dir: who it belongs to, and exclusive use of it.
//!
//! A data dir is created once, with the cluster and replica ids written to
//! `identity.json`. Every later start checks them, and refuses, with a message naming the
//! mismatch, a dir that belongs to another replica or cluster, that a newer version wrote,
//! that another process is using, or that is not a data dir at all. It never "repairs"
//! one by starting afresh: a reset replica can vote twice in a term.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::FORMAT_VERSION;

const IDENTITY_FILE: &str = "identity.json";
const LOCK_FILE: &str = "LOCK";

/// What a data dir belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format_version: u32,
    /// The operator's name for the cluster (`--cluster-name`).
    pub cluster_name: String,
    /// Derived from the name and the initial members; checked on every peer RPC.
    pub cluster_id: String,
    pub replica_id: u64,
    /// How this replica first joined: it bootstrapped the initial cluster, was added to a
    /// running one, or was seeded offline. Only an initial member ever initializes.
    pub bootstrap: Bootstrap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bootstrap {
    InitialMember,
    Joined,
    /// Seeded offline as a one-member cluster (restore from a backup, or recovery from
    /// a surviving replica); other members join it.
    Seeded,
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "data dir {path} is in use by another process (could not lock {LOCK_FILE}); \
         stop that process first"
    )]
    Locked { path: PathBuf },
    #[error(
        "data dir {path} is not empty but has no {IDENTITY_FILE}: it is not a \
         pageserver-controller data dir, or it is damaged; refusing to start rather than \
         reset it"
    )]
    NotADataDir { path: PathBuf },
    #[error("data dir {path}: {IDENTITY_FILE} is unreadable ({reason}); refusing to start")]
    CorruptIdentity { path: PathBuf, reason: String },
    #[error(
        "data dir {path} belongs to replica {found}, not replica {expected}; point --data-dir \
         at replica {expected}'s dir or pass --id {found}"
    )]
    WrongReplica {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error(
        "data dir {path} has no log/ but holds {remains}, which only a replica that had a log \
         writes: the log was deleted. Refusing to start with an empty log (it would forget its \
         vote and the entries it acknowledged); replace the data dir (README: replace a \
         replica whose disk is lost)"
    )]
    MissingLog { path: PathBuf, remains: String },
    #[error("data dir {path} belongs to cluster {found:?}, not {expected:?}; refusing to start")]
    WrongCluster {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "data dir {path} was written by a newer version (storage format {found}, this \
         binary reads up to {FORMAT_VERSION}); upgrade the binary"
    )]
    TooNew { path: PathBuf, found: u32 },
}

/// An open data dir, held exclusively until dropped.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    identity: Identity,
    _lock: File,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

impl DataDir {
    /// The identity stored in `root`, `None` if `root` is absent or fresh: empty, or
    /// holding only what a first start cut short before its identity was in place (the
    /// lock file and the identity's temporary file), since nothing else is written first.
    pub fn peek(root: &Path) -> Result<Option<Identity>, DataDirError> {
        if !root.exists() {
            return Ok(None);
        }
        let identity_tmp = Path::new(IDENTITY_FILE).with_extension("tmp");
        let mut entries = fs::read_dir(root).map_err(io_err(root))?;
        let holds_more = entries.try_fold(false, |more, entry| {
            let name = entry?.file_name();
            Ok::<_, io::Error>(more || (name != LOCK_FILE && name != identity_tmp.as_os_str()))
        });
        if !holds_more.map_err(io_err(root))? {
            return Ok(None);
        }
        let path = root.join(IDENTITY_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DataDirError::NotADataDir {
                    path: root.to_owned(),
                })
            }
            Err(e) => return Err(io_err(root)(e)),
        };
        let identity: Identity =
            serde_json::from_slice(&bytes).map_err(|e| DataDirError::CorruptIdentity {
                path: root.to_owned(),
                reason: e.to_string(),
            })?;
        if identity.format_version > FORMAT_VERSION {
            return Err(DataDirError::TooNew {
                path: root.to_owned(),
                found: identity.format_version,
            });
        }
        Ok(Some(identity))
    }

    /// Creates a fresh data dir. Fails if `root` already holds anything.
    pub fn create(root: &Path, identity: Identity) -> Result<DataDir, DataDirError> {
        if Self::peek(root)?.is_some() {
            return Err(DataDirError::Io {
                path: root.to_owned(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "already initialized"),
            });
        }
        fs::create_dir_all(root).map_err(io_err(root))?;
        let lock = Self::lock(root)?;
        let bytes = serde_json::to_vec_pretty(&identity).expect("identity serializes");
        write_atomically(&root.join(IDENTITY_FILE), &bytes).map_err(io_err(root))?;
        if let Some(parent) = root.parent() {
            // The data dir's own entry in its parent must survive a crash too: a power
            // loss that took it away would take everything acknowledged in it later.
            sync_dir(parent).map_err(|e| DataDirError::Io {
                path: parent.to_owned(),
                source: io::Error::new(
                    e.kind(),
                    format!("could not fsync the parent of the new data dir: {e}"),
                ),
            })?;
        }
        tracing::info!(path = %root.display(), replica = identity.replica_id, cluster = %identity.cluster_id, "created data dir");
        Ok(DataDir {
            root: root.to_owned(),
            identity,
            _lock: lock,
        })
    }

    /// Opens an existing data dir for `replica_id` of the cluster named `cluster_name`,
    /// refusing any mismatch.
    pub fn open(
        root: &Path,
        replica_id: u64,
        cluster_name: Option<&str>,
    ) -> Result<DataDir, DataDirError> {
        let identity = Self::peek(root)?.ok_or_else(|| DataDirError::Io {
            path: root.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no data dir here"),
        })?;
        if identity.replica_id != replica_id {
            return Err(DataDirError::WrongReplica {
                path: root.to_owned(),
                expected: replica_id,
                found: identity.replica_id,
            });
        }
        if let Some(expected) = cluster_name {
            if identity.cluster_name != expected {
                return Err(DataDirError::WrongCluster {
                    path: root.to_owned(),
                    expected: expected.to_owned(),
                    found: identity.cluster_name,
                });
            }
        }
        let lock = Self::lock(root)?;
        let dir = DataDir {
            root: root.to_owned(),
            identity,
            _lock: lock,
        };
        dir.check_log_present()?;
        Ok(dir)
    }

    /// A missing `log/` is created at start (its first creation may have been cut short),
    /// unless files that are written only after it exist: its watermark, or a snapshot.
    fn check_log_present(&self) -> Result<(), DataDirError> {
        let log = self.log_path();
        if log.exists() {
            return Ok(());
        }
        let remains = [
            crate::watermark::Watermark::path_for(&log),
            self.snapshot_path().join(crate::snapshot::CURRENT),
        ]
        .into_iter()
        .filter(|path| path.exists())
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>();
        if remains.is_empty() {
            return Ok(());
        }
        Err(DataDirError::MissingLog {
            path: self.root.clone(),
            remains: remains.join(" and "),
        })
    }

    fn lock(root: &Path) -> Result<File, DataDirError> {
        let path = root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(root))?;
        file.try_lock_exclusive()
            .map_err(|_| DataDirError::Locked {
                path: root.to_owned(),
            })?;
        Ok(file)
    }

    /// Rewrites the identity (recovery keeps the cluster but changes how it began).
    pub fn set_identity(&mut self, identity: Identity) -> Result<(), DataDirError> {
        let bytes = serde_json::to_vec_pretty(&identity).expect("identity serializes");
        write_atomically(&self.root.join(IDENTITY_FILE), &bytes).map_err(io_err(&self.root))?;
        self.identity = identity;
        Ok(())
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn snapshot_path(&self) -> PathBuf {
        self.root.join("snapshot")
    }
}

/// Writes `bytes` to `path` so that after a crash the file holds either its old content
/// or all of `bytes`: write a temporary file, fsync it, rename it over, fsync the dir.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes a directory's entries (creations, renames) durable. An empty path is the
/// current directory: what `Path::parent` gives for a bare relative name (`backup.bin`,
/// `--data-dir data`), where opening "" would fail.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Space on the file system holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSystemSpace {
    /// Bytes in use, by anyone.
    pub used_bytes: u64,
    /// Bytes an unprivileged writer may still use.
    pub available_bytes: u64,
}

/// How full the file system holding `path` is (statvfs(3)).
pub fn file_system_space(path: &Path) -> io::Result<FileSystemSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: statvfs(3) only writes the struct we pass; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let block = stat.f_frsize as u64;
    Ok(FileSystemSpace {
        used_bytes: (stat.f_blocks as u64).saturating_sub(stat.f_bfree as u64) * block,
        available_bytes: stat.f_bavail as u64 * block,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_a_bare_relative_name_can_be_synced() {
        let parent = Path::new("backup.bin").parent().unwrap();
        assert_eq!(parent, Path::new(""));
        sync_dir(parent).expect("the current directory");
        assert!(sync_dir(Path::new("/nonexistent-psc-dir")).is_err());
    }

    #[test]
    fn file_system_space_reads_the_disk_and_names_a_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let space = file_system_space(dir.path()).unwrap();
        assert!(space.available_bytes > 0, "{space:?}");
        let missing = file_system_space(&dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    fn identity(replica_id: u64) -> Identity {
        Identity {
            format_version: FORMAT_VERSION,
            cluster_name: "c1".into(),
            cluster_id: "0123".into(),
            replica_id,
            bootstrap: Bootstrap::InitialMember,
        }
    }

    #[test]
    fn fresh_dirs_are_created_and_reopened() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r1");
        assert!(DataDir::peek(&root).unwrap().is_none());
        drop(DataDir::create(&root, identity(1)).unwrap());
        let dir = DataDir::open(&root, 1, Some("c1")).unwrap();
        assert_eq!(dir.identity(), &identity(1));
    }

    #[test]
    fn a_deleted_log_is_refused_when_what_follows_it_remains() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r1");
        let dir = DataDir::create(&root, identity(1)).unwrap();
        let (log, snapshot) = (dir.log_path(), dir.snapshot_path());
        drop(dir);
        // No log yet and nothing after it: a first start cut short, opened as before.
        fs::create_dir_all(&snapshot).unwrap();
        drop(DataDir::open(&root, 1, Some("c1")).unwrap());
        for remains in [
            crate::watermark::Watermark::path_for(&log),
            snapshot.join(crate::snapshot::CURRENT),
        ] {
            fs::write(&remains, b"x").unwrap();
            let refused = DataDir::open(&root, 1, Some("c1")).unwrap_err();
            assert!(
                matches!(refused, DataDirError::MissingLog { .. }),
                "{refused}"
            );
            assert!(
                refused.to_string().contains("the log was deleted"),
                "{refused}"
            );
            fs::create_dir(&log).unwrap();
            drop(DataDir::open(&root, 1, Some("c1")).unwrap());
            fs::remove_dir(&log).unwrap();
            fs::remove_file(&remains).unwrap();
        }
    }

    #[test]
    fn a_first_start_cut_short_before_its_identity_was_written_starts_afresh() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r1");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join(LOCK_FILE), b"").unwrap();
        fs::write(root.join("identity.tmp"), b"{\"format_vers").unwrap();
        assert!(DataDir::peek(&root).unwrap().is_none());
        drop(DataDir::create(&root, identity(1)).unwrap());
        assert_eq!(DataDir::peek(&root).unwrap(), Some(identity(1)));
        // Anything else there is someone else's.
        let other = tmp.path().join("r2");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join(LOCK_FILE), b"").unwrap();
        fs::create_dir_all(other.join("log")).unwrap();
        assert!(matches!(
            DataDir::peek(&other),
            Err(DataDirError::NotADataDir { .. })
        ));
    }

    #[test]
    fn mismatches_are_refused_with_a_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r1");
        drop(DataDir::create(&root, identity(1)).unwrap());
        let err = DataDir::open(&root, 2, None).unwrap_err();
        assert!(
            matches!(
                err,
                DataDirError::WrongReplica {
                    found: 1,
                    expected: 2,
                    ..
                }
            ),
            "{err}"
        );
        let err = DataDir::open(&root, 1, Some("other")).unwrap_err();
        assert!(matches!(err, DataDirError::WrongCluster { .. }), "{err}");
    }

    #[test]
    fn a_dir_in_use_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r1");
        let _held = DataDir::create(&root, identity(1)).unwrap();
        let err = DataDir::open(&root, 1, None).unwrap_err();
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
    }

    #[test]
    fn foreign_corrupt_and_newer_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let foreign = tmp.path().join("foreign");
        fs::create_dir_all(&foreign).unwrap();
        fs::write(foreign.join("something"), b"x").unwrap();
        assert!(matches!(
            DataDir::peek(&foreign),
            Err(DataDirError::NotADataDir { .. })
        ));

        let corrupt = tmp.path().join("corrupt");
        fs::create_dir_all(&corrupt).unwrap();
        fs::write(corrupt.join(IDENTITY_FILE), b"{\"format_vers").unwrap();
        assert!(matches!(
            DataDir::peek(&corrupt),
            Err(DataDirError::CorruptIdentity { .. })
        ));

        let newer = tmp.path().join("newer");
        fs::create_dir_all(&newer).unwrap();
        let mut id = identity(1);
        id.format_version = FORMAT_VERSION + 1;
        fs::write(newer.join(IDENTITY_FILE), serde_json::to_vec(&id).unwrap()).unwrap();
        assert!(matches!(
            DataDir::peek(&newer),
            Err(DataDirError::TooNew { .. })
        ));
    }
}
