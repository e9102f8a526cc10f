//! A FUSE file system that loses, when it is unmounted, everything no fsync made
//! durable: what a power cut does to a disk's volatile cache, made deterministic.
//!
//! Killing a process (kill -9) loses nothing it wrote: the kernel's page cache keeps it.
//! Only a power loss or a kernel crash drops writes that no fsync made durable, and a
//! replica that acknowledged a write before its fsync would pass every kill -9 test. So
//! the whole tree lives in memory twice: as the processes see it, and as the disk holds
//! it. `fsync` of a file makes its bytes and length durable; names (files and
//! directories created, renamed, removed) become durable at the next fsync of anything,
//! as a journaling file system (ext4, XFS) commits them, or, in [`Names::Strict`], only
//! at an fsync of their own directory, the least POSIX promises. Unmounting writes the
//! durable tree to the backing directory, which is then the disk after the power came
//! back; mounting again starts from it.
//!
//! `sync_file_range` (sled's own flush) never reaches a FUSE file system, so it makes
//! nothing durable here, as on a real disk with a volatile write cache. Kept out: hard
//! and symbolic links, extended attributes, locks across processes (the kernel keeps
//! `flock` locks of a FUSE mount itself).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

const PAGE: u64 = 4096;
/// Nothing is cached by the kernel: the tree changes behind its back at a power loss.
const TTL: Duration = Duration::ZERO;

/// What survives of the file contents not fsynced when the power goes. Directory
/// entries not fsynced never survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survivors {
    /// None: every file is as its last fsync left it.
    None,
    /// Each page written since its file's last fsync, and each file's new length,
    /// independently with probability one half (a seeded generator): writes reaching the
    /// disk out of order and torn between pages, as a disk's volatile cache may leave them.
    Some { seed: u64 },
}

/// When a directory entry (a name created, renamed or removed) becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// At the next fsync of any file or directory: one journal for the whole file
    /// system, as ext4 and XFS commit it.
    Journaled,
    /// Only at an fsync of its own directory, the least POSIX promises.
    Strict,
}

impl Names {
    /// `PSC_POWER_LOSS_NAMES=strict` or `=journaled` picks one for a whole test; unset,
    /// `None` (the test alternates).
    pub fn from_env() -> Option<Names> {
        match std::env::var("PSC_POWER_LOSS_NAMES").as_deref() {
            Ok("strict") => Some(Names::Strict),
            Ok("journaled") => Some(Names::Journaled),
            _ => None,
        }
    }
}

/// What the file system saw, for a test to report (and to show that it lost something).
#[derive(Debug, Default)]
pub struct Counters {
    pub writes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub dir_fsyncs: AtomicU64,
    /// Bytes written after their file's last fsync, dropped by the power loss.
    pub lost_bytes: AtomicU64,
    /// Directory entries created, renamed or removed and never fsynced, undone by it.
    pub lost_entries: AtomicU64,
}

/// Faults a test switches on while the file system is mounted.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every fsync (of a file or a directory) fails with EIO and makes nothing durable,
    /// as on a disk that has started to fail.
    pub fsync_fails: AtomicBool,
}

/// A mounted [`VolatileFs`]; dropping it (or [`Mounted::power_loss`]) unmounts it and
/// writes what was durable to the backing directory.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    pub mountpoint: PathBuf,
    pub counters: Arc<Counters>,
    pub faults: Arc<Faults>,
}

impl Mounted {
    /// Mounts, at `mountpoint`, a file system holding what `backing` holds.
    pub fn mount(
        backing: &Path,
        mountpoint: &Path,
        survivors: Survivors,
        names: Names,
    ) -> std::io::Result<Mounted> {
        let counters = Arc::new(Counters::default());
        let faults = Arc::new(Faults::default());
        let fs = VolatileFs::load(
            backing.to_owned(),
            counters.clone(),
            faults.clone(),
            survivors,
            names,
        )?;
        let session = fuser::spawn_mount2(
            fs,
            mountpoint,
            &[MountOption::FSName("psc-volatile".into())],
        )?;
        Ok(Mounted {
            session: Some(session),
            mountpoint: mountpoint.to_owned(),
            counters,
            faults,
        })
    }

    /// Cuts the power: unmounts, keeping only what was durable. Stop the processes
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
    let mounted = Mounted::mount(
        backing.path(),
        mountpoint.path(),
        Survivors::None,
        Names::Journaled,
    )
    .map_err(|e| format!("mounting a FUSE file system failed: {e}"))?;
    fs::write(mountpoint.path().join("probe"), b"probe")
        .map_err(|e| format!("writing to a FUSE mount failed: {e}"))?;
    drop(mounted);
    Ok(())
}

enum Body {
    File {
        data: Vec<u8>,
        /// The bytes as of the last fsync.
        durable: Vec<u8>,
        dirty_pages: BTreeSet<u64>,
        length_dirty: bool,
    },
    Dir {
        children: BTreeMap<OsString, u64>,
        /// The entries as of the last fsync of this directory.
        durable: BTreeMap<OsString, u64>,
    },
}

struct Node {
    perm: u16,
    body: Body,
}

impl Node {
    fn file(perm: u16, data: Vec<u8>) -> Node {
        Node {
            perm,
            body: Body::File {
                durable: data.clone(),
                data,
                dirty_pages: BTreeSet::new(),
                length_dirty: false,
            },
        }
    }

    fn dir(perm: u16) -> Node {
        Node {
            perm,
            body: Body::Dir {
                children: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        }
    }
}

struct VolatileFs {
    backing: PathBuf,
    counters: Arc<Counters>,
    faults: Arc<Faults>,
    survivors: Survivors,
    names: Names,
    /// Every node ever created: a removed one may still be open, or still be where a
    /// durable directory entry points.
    nodes: HashMap<u64, Node>,
    next_inode: u64,
    mounted_at: SystemTime,
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

fn answer_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, 0),
        Err(e) => reply.error(e),
    }
}

fn answer_attr(reply: ReplyAttr, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(e) => reply.error(e),
    }
}

impl VolatileFs {
    /// Reads the backing directory: everything in it is durable.
    fn load(
        backing: PathBuf,
        counters: Arc<Counters>,
        faults: Arc<Faults>,
        survivors: Survivors,
        names: Names,
    ) -> std::io::Result<Self> {
        let mut fs = VolatileFs {
            backing,
            counters,
            faults,
            survivors,
            names,
            nodes: HashMap::new(),
            next_inode: fuser::FUSE_ROOT_ID + 1,
            mounted_at: SystemTime::now(),
        };
        fs.nodes.insert(fuser::FUSE_ROOT_ID, Node::dir(0o755));
        let backing = fs.backing.clone();
        fs.load_dir(&backing, fuser::FUSE_ROOT_ID)?;
        Ok(fs)
    }

    fn load_dir(&mut self, path: &Path, ino: u64) -> std::io::Result<()> {
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let perm = (meta.permissions().mode() & 0o7777) as u16;
            let child = self.new_inode(if meta.is_dir() {
                Node::dir(perm)
            } else {
                Node::file(perm, fs::read(entry.path())?)
            });
            if meta.is_dir() {
                self.load_dir(&entry.path(), child)?;
            }
            let Body::Dir { children, durable } = &mut self.node_mut(ino).expect("loaded").body
            else {
                unreachable!("loading into a directory");
            };
            children.insert(entry.file_name(), child);
            durable.insert(entry.file_name(), child);
        }
        Ok(())
    }

    fn new_inode(&mut self, node: Node) -> u64 {
        let ino = self.next_inode;
        self.next_inode += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn children(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.nodes.get(&ino).ok_or(libc::ENOENT)?.body {
            Body::Dir { children, .. } => Ok(children),
            Body::File { .. } => Err(libc::ENOTDIR),
        }
    }

    fn children_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::Dir { children, .. } => Ok(children),
            Body::File { .. } => Err(libc::ENOTDIR),
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.children(parent)?
            .get(name)
            .copied()
            .ok_or(libc::ENOENT)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.nodes.get(&ino).ok_or(libc::ENOENT)?;
        let (kind, size) = match &node.body {
            Body::File { data, .. } => (FileType::RegularFile, data.len() as u64),
            Body::Dir { .. } => (FileType::Directory, PAGE),
        };
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm: node.perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            // SAFETY: getuid(2) and getgid(2) cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn file_mut(
        &mut self,
        ino: u64,
    ) -> Result<(&mut Vec<u8>, &mut BTreeSet<u64>, &mut bool), Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::File {
                data,
                dirty_pages,
                length_dirty,
                ..
            } => Ok((data, dirty_pages, length_dirty)),
            Body::Dir { .. } => Err(libc::EISDIR),
        }
    }

    fn set_length(&mut self, ino: u64, length: u64) -> Result<(), Errno> {
        let (data, dirty_pages, length_dirty) = self.file_mut(ino)?;
        let old = data.len() as u64;
        data.resize(length as usize, 0);
        *length_dirty |= old != length;
        dirty_pages.retain(|&page| page * PAGE < length);
        if length > old {
            dirty_pages.extend(old / PAGE..length.div_ceil(PAGE));
        }
        Ok(())
    }

    fn write_at(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
        let end = offset + bytes.len() as u64;
        if end > self.file_mut(ino)?.0.len() as u64 {
            self.set_length(ino, end)?;
        }
        let (data, dirty_pages, _) = self.file_mut(ino)?;
        data[offset as usize..end as usize].copy_from_slice(bytes);
        dirty_pages.extend(offset / PAGE..end.div_ceil(PAGE));
        Ok(())
    }

    /// fsync of a file: its bytes and length; of a directory: its entries. With
    /// [`Names::Journaled`], every directory's entries.
    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        self.node_mut(ino)?;
        if self.faults.fsync_fails.load(Ordering::Relaxed) {
            return Err(libc::EIO);
        }
        if self.names == Names::Journaled {
            for node in self.nodes.values_mut() {
                if let Body::Dir { children, durable } = &mut node.body {
                    durable.clone_from(children);
                }
            }
        }
        match &mut self.node_mut(ino)?.body {
            Body::File {
                data,
                durable,
                dirty_pages,
                length_dirty,
            } => {
                durable.resize(data.len(), 0);
                for &page in dirty_pages.iter() {
                    let bytes = page_bytes(page, data.len());
                    durable[bytes.clone()].copy_from_slice(&data[bytes]);
                }
                dirty_pages.clear();
                *length_dirty = false;
                self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            Body::Dir { children, durable } => {
                durable.clone_from(children);
                self.counters.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Adds a new node under `parent` as `name`.
    fn insert(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.children(parent)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.new_inode(node);
        self.children_mut(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(
            self.nodes.get(&ino).map(|n| &n.body),
            Some(Body::Dir { .. })
        )
    }

    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        match (dir, self.is_dir(ino)) {
            (true, false) => return Err(libc::ENOTDIR),
            (false, true) => return Err(libc::EISDIR),
            (true, true) if !self.children(ino)?.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.children_mut(parent)?.remove(name);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        self.children(new_parent)?;
        if let Ok(replaced) = self.child(new_parent, new_name) {
            if replaced == ino {
                return Ok(());
            }
            match (self.is_dir(ino), self.is_dir(replaced)) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) if !self.children(replaced)?.is_empty() => {
                    return Err(libc::ENOTEMPTY)
                }
                _ => {}
            }
        }
        self.children_mut(parent)?.remove(name);
        self.children_mut(new_parent)?
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    /// The power goes: the backing directory becomes the durable tree.
    fn write_durable_tree(&mut self) -> std::io::Result<()> {
        for entry in fs::read_dir(&self.backing)? {
            let path = entry?.path();
            if path.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
        let mut coin = match self.survivors {
            Survivors::None => None,
            Survivors::Some { seed } => Some(Coin(seed | 1)),
        };
        let backing = self.backing.clone();
        self.write_dir(&backing, fuser::FUSE_ROOT_ID, &mut coin)?;
        // What the processes saw and the disk did not keep, for the report.
        let lost_entries: u64 = self
            .nodes
            .values()
            .map(|node| match &node.body {
                Body::Dir { children, durable } => {
                    let differ = children
                        .iter()
                        .filter(|(name, ino)| durable.get(*name) != Some(ino))
                        .count()
                        + durable
                            .keys()
                            .filter(|k| !children.contains_key(*k))
                            .count();
                    differ as u64
                }
                Body::File { .. } => 0,
            })
            .sum();
        self.counters
            .lost_entries
            .fetch_add(lost_entries, Ordering::Relaxed);
        Ok(())
    }

    fn write_dir(&self, path: &Path, ino: u64, coin: &mut Option<Coin>) -> std::io::Result<()> {
        let Some(Node {
            body: Body::Dir { durable, .. },
            ..
        }) = self.nodes.get(&ino)
        else {
            return Ok(());
        };
        for (name, &child) in durable {
            let Some(node) = self.nodes.get(&child) else {
                continue;
            };
            let child_path = path.join(name);
            match &node.body {
                Body::Dir { .. } => {
                    fs::create_dir(&child_path)?;
                    self.write_dir(&child_path, child, coin)?;
                }
                Body::File {
                    data,
                    durable,
                    dirty_pages,
                    length_dirty,
                } => {
                    let mut bytes = durable.clone();
                    for &page in dirty_pages {
                        let page = page_bytes(page, data.len());
                        let survives = coin.as_mut().is_some_and(Coin::flip);
                        if survives && !page.is_empty() {
                            if bytes.len() < page.end {
                                bytes.resize(page.end, 0);
                            }
                            bytes[page.clone()].copy_from_slice(&data[page]);
                        } else {
                            self.counters.lost_bytes.fetch_add(PAGE, Ordering::Relaxed);
                        }
                    }
                    if *length_dirty && coin.as_mut().is_some_and(Coin::flip) {
                        bytes.resize(data.len(), 0);
                    }
                    fs::write(&child_path, &bytes)?;
                }
            }
            fs::set_permissions(&child_path, fs::Permissions::from_mode(node.perm.into()))?;
        }
        Ok(())
    }
}

/// The bytes of `page` in a file of `len` bytes: empty past its end, short at it.
fn page_bytes(page: u64, len: usize) -> std::ops::Range<usize> {
    let start = usize::try_from(page * PAGE).unwrap_or(usize::MAX).min(len);
    start..(start + PAGE as usize).min(len)
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

impl Drop for VolatileFs {
    fn drop(&mut self) {
        // Said, not panicked: a panic while a failed test unwinds would abort the whole
        // test binary; the test that reads the backing directory next fails on its own.
        if let Err(e) = self.write_durable_tree() {
            eprintln!("writing the durable tree to the backing directory failed: {e}");
        }
    }
}

impl Filesystem for VolatileFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        answer_entry(
            reply,
            self.child(parent, name).and_then(|ino| self.attr(ino)),
        );
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        answer_attr(reply, self.attr(ino));
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
            if let Some(mode) = mode {
                self.node_mut(ino)?.perm = (mode & 0o7777) as u16;
            }
            if let Some(size) = size {
                self.set_length(ino, size)?;
            }
            self.attr(ino)
        })();
        answer_attr(reply, result);
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
        let perm = (mode & !umask & 0o7777) as u16;
        let result = self
            .insert(parent, name, Node::dir(perm))
            .and_then(|ino| self.attr(ino));
        answer_entry(reply, result);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, self.remove(parent, name, false));
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, self.remove(parent, name, true));
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
        answer(reply, self.rename(parent, name, newparent, newname));
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let result = (|| {
            if self.is_dir(ino) {
                return Err(libc::EISDIR);
            }
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
            let ino = match self.child(parent, name) {
                Ok(_) if flags & libc::O_EXCL != 0 => return Err(libc::EEXIST),
                Ok(ino) => {
                    if flags & libc::O_TRUNC != 0 {
                        self.set_length(ino, 0)?;
                    }
                    ino
                }
                Err(_) => {
                    let perm = (mode & !umask & 0o7777) as u16;
                    let node = Node::file(perm, Vec::new());
                    self.insert(parent, name, node)?
                }
            };
            self.attr(ino)
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
        match self.file_mut(ino) {
            Ok((data, _, _)) => {
                let start = (offset.max(0) as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
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
        match self.write_at(ino, offset.max(0) as u64, data) {
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

    fn fsyncdir(
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
        let children = match self.children(ino) {
            Ok(children) => children,
            Err(e) => return reply.error(e),
        };
        let mut entries = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (ino, FileType::Directory, OsString::from("..")),
        ];
        for (name, &child) in children {
            let kind = if self.is_dir(child) {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            entries.push((child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(child, (i + 1) as i64, kind, &name) {
                break;
            }
        }
        reply.ok();
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
            if end > self.file_mut(ino)?.0.len() as u64 {
                self.set_length(ino, end)?;
            }
            Ok(())
        })();
        answer(reply, result);
    }
}
