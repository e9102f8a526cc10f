//! A FUSE file system that loses every write not fsynced when it is unmounted: what a
//! power cut does to a disk's volatile cache, made deterministic.
//!
//! Killing a process (kill -9) loses nothing it wrote: the kernel's page cache keeps it.
//! Only a power loss or a kernel crash drops writes that no fsync made durable, and a
//! replica that acknowledged a write before its fsync would pass every kill -9 test. So
//! the files here live in memory (what the kernel would cache) over a backing directory
//! (what the disk holds): `fsync` of a file copies its changed pages and its length to
//! the backing file, and unmounting drops the memory. The backing directory is then the
//! image of the disk after the power came back.
//!
//! The model is strict about data and lenient about names: creating, renaming and
//! removing a file or directory reach the backing directory at once (as a journaling file
//! system would commit them), while a file's bytes and length survive only up to its
//! last `fsync` or `fdatasync`. `sync_file_range` (sled's own flush) never reaches a FUSE
//! file system, so it makes nothing durable here, as on a real disk with a volatile
//! write cache. Kept out: hard and symbolic links, extended attributes, locks across
//! processes (the kernel keeps `flock` locks of a FUSE mount itself).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

const PAGE: u64 = 4096;
/// Attributes are never cached by the kernel: sizes change behind its back at a power loss.
const TTL: Duration = Duration::ZERO;

/// What survives of the writes not fsynced when the power goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survivors {
    /// None: every file is as its last fsync left it.
    None,
    /// Each page written since its file's last fsync, and each file's new length,
    /// independently with probability one half (a seeded generator): writes reaching the
    /// disk out of order and torn between pages, as a disk's volatile cache may leave them.
    Some { seed: u64 },
}

/// What the file system saw, for a test to report (and to show that it lost something).
#[derive(Debug, Default)]
pub struct Counters {
    pub writes: AtomicU64,
    pub fsyncs: AtomicU64,
    /// Bytes written after their file's last fsync, dropped by the power loss.
    pub lost_bytes: AtomicU64,
}

/// A mounted [`VolatileFs`]; dropping it (or [`Mounted::power_loss`]) unmounts it and
/// forgets what was not fsynced.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    pub mountpoint: PathBuf,
    pub counters: Arc<Counters>,
}

impl Mounted {
    /// Mounts a file system at `mountpoint` whose durable image is `backing`.
    pub fn mount(
        backing: &Path,
        mountpoint: &Path,
        survivors: Survivors,
    ) -> std::io::Result<Mounted> {
        let counters = Arc::new(Counters::default());
        let fs = VolatileFs::new(backing.to_owned(), counters.clone(), survivors);
        let session = fuser::spawn_mount2(
            fs,
            mountpoint,
            &[MountOption::FSName("psc-volatile".into())],
        )?;
        Ok(Mounted {
            session: Some(session),
            mountpoint: mountpoint.to_owned(),
            counters,
        })
    }

    /// Cuts the power: unmounts, dropping every write not fsynced. Stop the processes
    /// using the mount first (kill -9), as the power cut stops them.
    pub fn power_loss(mut self) -> Arc<Counters> {
        self.unmount();
        self.counters.clone()
    }

    fn unmount(&mut self) {
        if let Some(session) = self.session.take() {
            session.join();
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Whether this machine can mount a FUSE file system here (`/dev/fuse`, and root or
/// `fusermount3`). The answer is a mount that was tried, not a guess.
pub fn available() -> Result<(), String> {
    let backing = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mountpoint = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mounted = Mounted::mount(backing.path(), mountpoint.path(), Survivors::None)
        .map_err(|e| format!("mounting a FUSE file system failed: {e}"))?;
    fs::write(mountpoint.path().join("probe"), b"probe")
        .map_err(|e| format!("writing to a FUSE mount failed: {e}"))?;
    drop(mounted);
    Ok(())
}

/// A file's bytes as the kernel would cache them, and which pages differ from the disk.
struct Cached {
    data: Vec<u8>,
    dirty_pages: BTreeSet<u64>,
    length_dirty: bool,
}

impl Cached {
    fn unsynced_bytes(&self) -> u64 {
        self.dirty_pages.len() as u64 * PAGE
    }
}

struct VolatileFs {
    backing: PathBuf,
    counters: Arc<Counters>,
    /// Inode number -> path relative to `backing` ("" is the root, inode 1).
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_inode: u64,
    cached: HashMap<u64, Cached>,
    survivors: Survivors,
}

type Errno = libc::c_int;

fn errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn answer(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl VolatileFs {
    fn new(backing: PathBuf, counters: Arc<Counters>, survivors: Survivors) -> Self {
        let mut fs = VolatileFs {
            backing,
            counters,
            paths: HashMap::new(),
            inodes: HashMap::new(),
            next_inode: 2,
            cached: HashMap::new(),
            survivors,
        };
        fs.paths.insert(fuser::FUSE_ROOT_ID, PathBuf::new());
        fs.inodes.insert(PathBuf::new(), fuser::FUSE_ROOT_ID);
        fs
    }

    fn relative(&self, ino: u64) -> Result<&PathBuf, Errno> {
        self.paths.get(&ino).ok_or(libc::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.relative(parent)?.join(name))
    }

    fn real(&self, relative: &Path) -> PathBuf {
        self.backing.join(relative)
    }

    fn inode_of(&mut self, relative: &Path) -> u64 {
        if let Some(&ino) = self.inodes.get(relative) {
            return ino;
        }
        let ino = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(relative.to_owned(), ino);
        self.paths.insert(ino, relative.to_owned());
        ino
    }

    /// The name is gone. A file still open keeps its inode and bytes (the snapshot
    /// receiver writes to a file it unlinked at once) until the mount ends; they are never
    /// written back, as the file has no name to be found by after a power loss.
    fn forget_path(&mut self, relative: &Path) {
        if let Some(ino) = self.inodes.remove(relative) {
            self.paths.remove(&ino);
        }
    }

    /// Attributes of a file that has lost its name but may still be open.
    fn orphan_attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let cached = self.cached.get(&ino).ok_or(libc::ENOENT)?;
        let size = cached.data.len() as u64;
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0o600,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn attr(&mut self, relative: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(self.real(relative)).map_err(|e| errno(&e))?;
        let ino = self.inode_of(relative);
        let kind = if meta.is_dir() {
            FileType::Directory
        } else if meta.is_file() {
            FileType::RegularFile
        } else {
            return Err(libc::EOPNOTSUPP);
        };
        let size = match self.cached.get(&ino) {
            Some(cached) => cached.data.len() as u64,
            None => meta.len(),
        };
        let time = |secs: i64, nanos: i64| {
            UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
        };
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: if meta.is_dir() { 2 } else { 1 },
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    /// The file's cached bytes, read from the backing file the first time.
    fn cached(&mut self, ino: u64) -> Result<&mut Cached, Errno> {
        if !self.cached.contains_key(&ino) {
            let path = self.real(self.relative(ino)?);
            let data = fs::read(path).map_err(|e| errno(&e))?;
            self.cached.insert(
                ino,
                Cached {
                    data,
                    dirty_pages: BTreeSet::new(),
                    length_dirty: false,
                },
            );
        }
        Ok(self.cached.get_mut(&ino).expect("inserted above"))
    }

    fn set_length(&mut self, ino: u64, length: u64) -> Result<(), Errno> {
        let cached = self.cached(ino)?;
        let old = cached.data.len() as u64;
        cached.data.resize(length as usize, 0);
        cached.length_dirty |= old != length;
        // Pages past the new end are gone; a grown file's new pages are zeros to write.
        cached.dirty_pages.retain(|&page| page * PAGE < length);
        for page in (old.min(length) / PAGE)..length.div_ceil(PAGE) {
            if length > old {
                cached.dirty_pages.insert(page);
            }
        }
        Ok(())
    }

    /// fsync: the changed pages and the length reach the backing file.
    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        let Ok(relative) = self.relative(ino) else {
            return Ok(()); // unlinked: nothing on disk can reach it
        };
        let path = self.real(relative);
        let Some(cached) = self.cached.get_mut(&ino) else {
            return Ok(()); // never read or written through this mount: nothing cached
        };
        if cached.dirty_pages.is_empty() && !cached.length_dirty {
            return Ok(());
        }
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| errno(&e))?;
        let length = cached.data.len() as u64;
        for &page in &cached.dirty_pages {
            let start = page * PAGE;
            let end = (start + PAGE).min(length);
            if start < end {
                file.write_all_at(&cached.data[start as usize..end as usize], start)
                    .map_err(|e| errno(&e))?;
            }
        }
        file.set_len(length).map_err(|e| errno(&e))?;
        cached.dirty_pages.clear();
        cached.length_dirty = false;
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes a name (at once: names are durable) and forgets its cached bytes.
    fn remove(
        &mut self,
        parent: u64,
        name: &OsStr,
        remove: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<(), Errno> {
        let relative = self.child(parent, name)?;
        remove(&self.real(&relative)).map_err(|e| errno(&e))?;
        self.forget_path(&relative);
        Ok(())
    }

    fn entry(&mut self, relative: &Path, reply: ReplyEntry) {
        match self.attr(relative) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }
}

/// The power goes: what was not fsynced is lost, all of it or some of it.
impl Drop for VolatileFs {
    fn drop(&mut self) {
        let Survivors::Some { seed } = self.survivors else {
            let lost: u64 = self
                .cached
                .iter()
                .filter(|(ino, _)| self.paths.contains_key(ino))
                .map(|(_, cached)| cached.unsynced_bytes())
                .sum();
            self.counters.lost_bytes.fetch_add(lost, Ordering::Relaxed);
            return;
        };
        let mut coin = Coin(seed | 1);
        let mut files: Vec<_> = self
            .cached
            .iter()
            .filter_map(|(ino, cached)| Some((self.paths.get(ino)?, cached)))
            .collect();
        files.sort_by_key(|(path, _)| path.as_path());
        for (relative, cached) in files {
            let Ok(file) = OpenOptions::new()
                .write(true)
                .open(self.backing.join(relative))
            else {
                continue;
            };
            let length = cached.data.len() as u64;
            for &page in &cached.dirty_pages {
                let (start, end) = (page * PAGE, ((page + 1) * PAGE).min(length));
                if coin.flip() && start < end {
                    file.write_all_at(&cached.data[start as usize..end as usize], start)
                        .expect("writing a surviving page to the backing file");
                } else {
                    self.counters.lost_bytes.fetch_add(PAGE, Ordering::Relaxed);
                }
            }
            if cached.length_dirty && coin.flip() {
                file.set_len(length)
                    .expect("setting a surviving length on the backing file");
            }
        }
    }
}

/// xorshift64: enough to pick pages, and the same picks from the same seed.
struct Coin(u64);

impl Coin {
    fn flip(&mut self) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 & 1 == 1
    }
}

impl Filesystem for VolatileFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name) {
            Ok(relative) => self.entry(&relative, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let result = match self.relative(ino).cloned() {
            Ok(relative) => self.attr(&relative),
            Err(_) => self.orphan_attr(ino),
        };
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let result = (|| {
            let Ok(relative) = self.relative(ino).cloned() else {
                if let Some(size) = size {
                    self.set_length(ino, size)?;
                }
                return self.orphan_attr(ino);
            };
            if let Some(mode) = mode {
                fs::set_permissions(self.real(&relative), fs::Permissions::from_mode(mode))
                    .map_err(|e| errno(&e))?;
            }
            if let Some(size) = size {
                self.set_length(ino, size)?;
            }
            self.attr(&relative)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.child(parent, name).and_then(|relative| {
            let real = self.real(&relative);
            fs::create_dir(&real).map_err(|e| errno(&e))?;
            fs::set_permissions(&real, fs::Permissions::from_mode(mode & !umask & 0o7777))
                .map_err(|e| errno(&e))?;
            Ok(relative)
        });
        match result {
            Ok(relative) => self.entry(&relative, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        answer(
            reply,
            self.remove(parent, name, |path| fs::remove_file(path)),
        );
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        answer(
            reply,
            self.remove(parent, name, |path| fs::remove_dir(path)),
        );
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags != 0 {
            return reply.error(libc::EINVAL); // RENAME_NOREPLACE and friends: unused here
        }
        let result = (|| {
            let from = self.child(parent, name)?;
            let to = self.child(newparent, newname)?;
            fs::rename(self.real(&from), self.real(&to)).map_err(|e| errno(&e))?;
            // The replaced file is gone; the moved one (and, for a directory, everything
            // below it) keeps its inode and its cached bytes under the new name.
            self.forget_path(&to);
            let moved: Vec<(PathBuf, u64)> = self
                .inodes
                .iter()
                .filter(|(path, _)| path.starts_with(&from))
                .map(|(path, &ino)| (path.clone(), ino))
                .collect();
            for (old, ino) in moved {
                // (`join` of an empty suffix would add a trailing slash)
                let suffix = old.strip_prefix(&from).expect("filtered by prefix");
                let new = if suffix.as_os_str().is_empty() {
                    to.clone()
                } else {
                    to.join(suffix)
                };
                self.inodes.remove(&old);
                self.inodes.insert(new.clone(), ino);
                self.paths.insert(ino, new);
            }
            Ok(())
        })();
        answer(reply, result);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let result = (|| {
            self.cached(ino)?;
            if flags & libc::O_TRUNC != 0 {
                self.set_length(ino, 0)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.opened(0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = (|| {
            let relative = self.child(parent, name)?;
            let real = self.real(&relative);
            let mut options = OpenOptions::new();
            options.write(true).create(true);
            if flags & libc::O_EXCL != 0 {
                options.create_new(true);
            }
            // The name is durable at once; the bytes are not.
            options.open(&real).map_err(|e| errno(&e))?;
            fs::set_permissions(&real, fs::Permissions::from_mode(mode & !umask & 0o7777))
                .map_err(|e| errno(&e))?;
            let ino = self.inode_of(&relative);
            self.cached(ino)?;
            if flags & libc::O_TRUNC != 0 {
                self.set_length(ino, 0)?;
            }
            self.attr(&relative)
        })();
        match result {
            Ok(attr) => reply.created(&TTL, &attr, 0, 0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        match self.cached(ino) {
            Ok(cached) => {
                let start = (offset.max(0) as usize).min(cached.data.len());
                let end = (start + size as usize).min(cached.data.len());
                reply.data(&cached.data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let offset = offset.max(0) as u64;
        let end = offset + data.len() as u64;
        let result = (|| {
            if end > self.cached(ino)?.data.len() as u64 {
                self.set_length(ino, end)?;
            }
            let cached = self.cached(ino)?;
            cached.data[offset as usize..end as usize].copy_from_slice(data);
            for page in offset / PAGE..end.div_ceil(PAGE) {
                cached.dirty_pages.insert(page);
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.counters.writes.fetch_add(1, Ordering::Relaxed);
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _owner: u64, reply: ReplyEmpty) {
        reply.ok(); // close(2) makes nothing durable
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        answer(reply, self.sync(ino));
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let result = (|| {
            let relative = self.relative(ino)?.clone();
            let mut entries = vec![
                (ino, FileType::Directory, OsStr::new(".").to_owned()),
                (ino, FileType::Directory, OsStr::new("..").to_owned()),
            ];
            let mut names: Vec<_> = fs::read_dir(self.real(&relative))
                .map_err(|e| errno(&e))?
                .filter_map(Result::ok)
                .collect();
            names.sort_by_key(|entry| entry.file_name());
            for entry in names {
                let kind = match entry.file_type() {
                    Ok(t) if t.is_dir() => FileType::Directory,
                    Ok(t) if t.is_file() => FileType::RegularFile,
                    _ => continue,
                };
                let child = relative.join(entry.file_name());
                entries.push((self.inode_of(&child), kind, entry.file_name()));
            }
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(ino, (i + 1) as i64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // names are durable at once in this model
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let path = std::ffi::CString::new(self.backing.as_os_str().as_bytes())
            .expect("no NUL in a temporary path");
        // SAFETY: statvfs(3) fills the struct it is given.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return reply.error(errno(&std::io::Error::last_os_error()));
        }
        reply.statfs(
            stat.f_blocks,
            stat.f_bfree,
            stat.f_bavail,
            stat.f_files,
            stat.f_ffree,
            stat.f_bsize as u32,
            stat.f_namemax as u32,
            stat.f_frsize as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(libc::EOPNOTSUPP);
        }
        let end = (offset + length).max(0) as u64;
        let result = (|| {
            if end > self.cached(ino)?.data.len() as u64 {
                self.set_length(ino, end)?;
            }
            Ok(())
        })();
        answer(reply, result);
    }
}
