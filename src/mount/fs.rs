//! The FUSE callbacks: each request is answered from the virtual layout or
//! through the snapshot [`Browser`], on fuser's threads, waiting on the
//! tokio runtime for what the browser reads. Nothing here writes: every
//! request that would change something is refused with `EROFS`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::attr;
use super::inodes::{Inodes, What, HOSTS, LATEST, ROOT, SNAPSHOTS, TAGS};
use super::layout::{showable, Layout};
use crate::error::Error;
use crate::format::id::Id;
use crate::format::tree::{escape_bytes, Node, NodeKind};
use crate::ops::browse::Browser;
use crate::repo::SnapshotEntry;

/// How long the kernel may keep what a snapshot's tree says: snapshots do
/// not change.
const TREE_TTL: Duration = Duration::from_secs(300);
/// How long for the virtual layout, which follows new and forgotten
/// snapshots.
const LAYOUT_TTL: Duration = Duration::from_secs(1);

/// Counters of what was served, for the report at unmount.
#[derive(Debug, Default)]
pub struct Served {
    pub reads: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

/// One entry of an open directory.
struct Item {
    ino: u64,
    kind: FileType,
    name: Vec<u8>,
}

/// An open directory (its entries as listed at `opendir`) or file (its
/// node with the content list).
enum Handle {
    Dir(Vec<Item>),
    File(Arc<Node>),
}

/// The last listing of the snapshots and its layout.
struct Listed {
    listing: Option<Arc<Vec<SnapshotEntry>>>,
    layout: Arc<Layout>,
}

pub struct CairnFs {
    browser: Arc<Browser>,
    rt: tokio::runtime::Handle,
    inodes: Inodes,
    listed: Mutex<Listed>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    served: Arc<Served>,
    mounted_at: SystemTime,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The errno for a failed read of the repository, logged when it is not
/// simply a missing name.
fn errno(e: &Error, what: &str) -> Errno {
    match e {
        Error::NotFound(_) => Errno::ENOENT,
        Error::Interrupted => Errno::EINTR,
        other => {
            tracing::warn!("{what}: {}", crate::error::chain(other));
            Errno::EIO
        }
    }
}

/// The key of a snapshot's directory: its id, so the inode stays when its
/// name gains a short id (a second snapshot in the same second).
fn snapshot_key(id: &Id) -> Vec<u8> {
    id.0.to_vec()
}

fn link_target(name: &str) -> Vec<u8> {
    format!("../../snapshots/{name}").into_bytes()
}

impl CairnFs {
    pub fn new(browser: Arc<Browser>, rt: tokio::runtime::Handle, served: Arc<Served>) -> CairnFs {
        CairnFs {
            browser,
            rt,
            inodes: Inodes::new(),
            listed: Mutex::new(Listed {
                listing: None,
                layout: Arc::new(Layout::default()),
            }),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            served,
            mounted_at: SystemTime::now(),
        }
    }

    /// The layout of the current listing of the snapshots. The browser
    /// lists again at most every few seconds; when a listing brings a
    /// snapshot not seen before, the index is loaded again so its new
    /// blobs can be found.
    pub async fn layout(&self) -> crate::Result<Arc<Layout>> {
        let listing = self.browser.snapshots().await?;
        let new_snapshot = {
            let listed = lock(&self.listed);
            if let Some(prev) = &listed.listing {
                if Arc::ptr_eq(prev, &listing) {
                    return Ok(listed.layout.clone());
                }
                listing.iter().any(|s| !prev.iter().any(|p| p.id == s.id))
            } else {
                false
            }
        };
        if new_snapshot {
            self.browser.refresh().await?;
        }
        let layout = Arc::new(Layout::build(&listing));
        let mut listed = lock(&self.listed);
        listed.listing = Some(listing);
        listed.layout = layout.clone();
        Ok(layout)
    }

    fn layout_now(&self) -> Result<Arc<Layout>, Errno> {
        self.rt
            .block_on(self.layout())
            .map_err(|e| errno(&e, "listing the snapshots"))
    }

    fn tree_of(&self, ids: &[Id]) -> Result<Arc<crate::format::tree::Tree>, Errno> {
        self.rt
            .block_on(self.browser.tree(ids))
            .map_err(|e| errno(&e, "reading a directory"))
    }

    /// The attributes of `ino`, which names `what`.
    fn attr_of(&self, ino: u64, what: &What) -> Result<(FileAttr, Duration), Errno> {
        Ok(match what {
            What::Root | What::Snapshots | What::Hosts | What::Tags => {
                (attr::virtual_dir(ino, self.mounted_at), LAYOUT_TTL)
            }
            What::HostDir(_) | What::TagDir(_) => {
                (attr::virtual_dir(ino, self.mounted_at), LAYOUT_TTL)
            }
            What::Latest => {
                let target = self.latest_target()?;
                (
                    attr::virtual_link(ino, &target, self.mounted_at),
                    LAYOUT_TTL,
                )
            }
            What::Link(name) => (
                attr::virtual_link(ino, &link_target(name), self.mounted_at),
                LAYOUT_TTL,
            ),
            What::Snapshot(s) => (attr::virtual_dir(ino, s.snapshot.time.into()), TREE_TTL),
            What::Entry { node, .. } => (attr::of_node(ino, node), TREE_TTL),
        })
    }

    fn latest_target(&self) -> Result<Vec<u8>, Errno> {
        let layout = self.layout_now()?;
        let name = layout.latest.as_ref().ok_or(Errno::ENOENT)?;
        Ok(format!("snapshots/{name}").into_bytes())
    }

    /// What `name` in the directory `parent` names, remembered for the
    /// kernel's lookup.
    fn lookup_in(&self, parent: u64, name: &[u8]) -> Result<(u64, What), Errno> {
        let dir = self.inodes.get(parent).ok_or(Errno::ENOENT)?;
        let (key, what) = match &dir {
            What::Root => {
                let (ino, what) = match name {
                    b"snapshots" => (SNAPSHOTS, What::Snapshots),
                    b"hosts" => (HOSTS, What::Hosts),
                    b"tags" => (TAGS, What::Tags),
                    b"latest" => (LATEST, What::Latest),
                    _ => return Err(Errno::ENOENT),
                };
                return Ok((ino, what));
            }
            What::Snapshots => {
                let layout = self.layout_now()?;
                let s = std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| layout.snapshots.get(n))
                    .ok_or(Errno::ENOENT)?;
                (snapshot_key(&s.id), What::Snapshot(s.clone()))
            }
            What::Hosts | What::Tags => {
                let layout = self.layout_now()?;
                let map = if matches!(dir, What::Hosts) {
                    &layout.hosts
                } else {
                    &layout.tags
                };
                let n = std::str::from_utf8(name)
                    .ok()
                    .filter(|n| map.contains_key(*n))
                    .ok_or(Errno::ENOENT)?
                    .to_string();
                let what = if matches!(dir, What::Hosts) {
                    What::HostDir(n)
                } else {
                    What::TagDir(n)
                };
                (name.to_vec(), what)
            }
            What::HostDir(group) | What::TagDir(group) => {
                let layout = self.layout_now()?;
                let map = if matches!(dir, What::HostDir(_)) {
                    &layout.hosts
                } else {
                    &layout.tags
                };
                let n = std::str::from_utf8(name)
                    .ok()
                    .filter(|n| map.get(group).is_some_and(|set| set.contains(*n)))
                    .ok_or(Errno::ENOENT)?;
                (name.to_vec(), What::Link(n.to_string()))
            }
            What::Snapshot(s) => self.child(&s.snapshot.tree, name)?,
            What::Entry { node, .. } if node.kind == NodeKind::Dir => {
                self.child(&node.subtree, name)?
            }
            What::Latest | What::Link(_) | What::Entry { .. } => return Err(Errno::ENOTDIR),
        };
        let ino = self.inodes.remember(parent, &key, what.clone());
        Ok((ino, what))
    }

    /// The entry `name` of the tree stored as `ids`.
    fn child(&self, ids: &[Id], name: &[u8]) -> Result<(Vec<u8>, What), Errno> {
        let tree = self.tree_of(ids)?;
        let node = tree.find(name).ok_or(Errno::ENOENT)?;
        let node = Node {
            content: Vec::new(),
            ..node.clone()
        };
        Ok((
            name.to_vec(),
            What::Entry {
                dir: ids.into(),
                node,
            },
        ))
    }

    /// The entries of the directory `ino`, `.` and `..` first.
    fn items(&self, ino: u64, what: &What) -> Result<Vec<Item>, Errno> {
        let mut items = vec![
            Item {
                ino,
                kind: FileType::Directory,
                name: b".".to_vec(),
            },
            Item {
                ino: self.inodes.parent(ino).unwrap_or(ROOT),
                kind: FileType::Directory,
                name: b"..".to_vec(),
            },
        ];
        let dir = |ino, name: &str| Item {
            ino,
            kind: FileType::Directory,
            name: name.as_bytes().to_vec(),
        };
        let link = |ino, name: &str| Item {
            ino,
            kind: FileType::Symlink,
            name: name.as_bytes().to_vec(),
        };
        match what {
            What::Root => {
                let layout = self.layout_now()?;
                items.push(dir(SNAPSHOTS, "snapshots"));
                items.push(dir(HOSTS, "hosts"));
                items.push(dir(TAGS, "tags"));
                if layout.latest.is_some() {
                    items.push(link(LATEST, "latest"));
                }
            }
            What::Snapshots => {
                let layout = self.layout_now()?;
                for (name, s) in &layout.snapshots {
                    items.push(dir(self.inodes.number(ino, &snapshot_key(&s.id)), name));
                }
            }
            What::Hosts | What::Tags => {
                let layout = self.layout_now()?;
                let map = if matches!(what, What::Hosts) {
                    &layout.hosts
                } else {
                    &layout.tags
                };
                for name in map.keys() {
                    items.push(dir(self.inodes.number(ino, name.as_bytes()), name));
                }
            }
            What::HostDir(group) | What::TagDir(group) => {
                let layout = self.layout_now()?;
                let map = if matches!(what, What::HostDir(_)) {
                    &layout.hosts
                } else {
                    &layout.tags
                };
                for name in map.get(group).into_iter().flatten() {
                    items.push(link(self.inodes.number(ino, name.as_bytes()), name));
                }
            }
            What::Snapshot(s) => self.tree_items(ino, &s.snapshot.tree, &mut items)?,
            What::Entry { node, .. } if node.kind == NodeKind::Dir => {
                self.tree_items(ino, &node.subtree, &mut items)?
            }
            What::Latest | What::Link(_) | What::Entry { .. } => return Err(Errno::ENOTDIR),
        }
        Ok(items)
    }

    fn tree_items(&self, ino: u64, ids: &[Id], items: &mut Vec<Item>) -> Result<(), Errno> {
        let tree = self.tree_of(ids)?;
        // The kernel refuses names longer than NAME_MAX; such an entry is
        // left out rather than failing the whole listing.
        items.extend(
            tree.nodes
                .iter()
                .filter(|n| showable(&n.name.0))
                .map(|n| Item {
                    ino: self.inodes.number(ino, &n.name.0),
                    kind: attr::kind_of(n.kind),
                    name: n.name.0.clone(),
                }),
        );
        Ok(())
    }

    /// The file `ino` with its content list, read again from its tree.
    fn file_node(&self, ino: u64) -> Result<Arc<Node>, Errno> {
        let Some(What::Entry { dir, node }) = self.inodes.get(ino) else {
            return Err(Errno::EISDIR);
        };
        if node.kind != NodeKind::File {
            return Err(Errno::EINVAL);
        }
        let tree = self.tree_of(&dir)?;
        let full = tree.find(&node.name.0).ok_or(Errno::ENOENT)?;
        Ok(Arc::new(full.clone()))
    }

    fn open_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        FileHandle(fh)
    }
}

impl Filesystem for CairnFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self
            .lookup_in(parent.0, name.as_bytes())
            .and_then(|(ino, what)| self.attr_of(ino, &what));
        match found {
            Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let found = self
            .inodes
            .get(ino.0)
            .ok_or(Errno::ENOENT)
            .and_then(|what| self.attr_of(ino.0, &what));
        match found {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = match self.inodes.get(ino.0) {
            Some(What::Latest) => self.latest_target(),
            Some(What::Link(name)) => Ok(link_target(&name)),
            Some(What::Entry { node, .. }) if node.kind == NodeKind::Symlink => {
                node.target.map(|t| t.0).ok_or(Errno::EIO)
            }
            Some(_) => Err(Errno::EINVAL),
            None => Err(Errno::ENOENT),
        };
        match target {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.file_node(ino.0) {
            // Snapshots do not change: the kernel may keep what it read.
            Ok(node) => reply.opened(
                self.open_handle(Handle::File(node)),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let node = match lock(&self.handles).get(&fh.0) {
            Some(Handle::File(node)) => node.clone(),
            _ => return reply.error(Errno::EBADF),
        };
        self.served.reads.fetch_add(1, Ordering::Relaxed);
        match self
            .rt
            .block_on(self.browser.read_at(&node, offset, u64::from(size)))
        {
            Ok(data) => {
                self.served
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                reply.data(&data)
            }
            Err(e) => {
                self.served.errors.fetch_add(1, Ordering::Relaxed);
                let what = format!(
                    "reading {} (inode {}) at {offset}",
                    escape_bytes(&node.name.0),
                    ino.0
                );
                reply.error(errno(&e, &what))
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let items = self
            .inodes
            .get(ino.0)
            .ok_or(Errno::ENOENT)
            .and_then(|what| self.items(ino.0, &what));
        match items {
            Ok(items) => reply.opened(self.open_handle(Handle::Dir(items)), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let handles = lock(&self.handles);
        let Some(Handle::Dir(items)) = handles.get(&fh.0) else {
            drop(handles);
            return reply.error(Errno::EBADF);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, item) in items.iter().enumerate().skip(start) {
            let name = OsStr::from_bytes(&item.name);
            if reply.add(INodeNo(item.ino), i as u64 + 1, item.kind, name) {
                break;
            }
        }
        drop(handles);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, super::layout::NAME_MAX as u32, 4096);
    }

    // Everything below would change the snapshot: refused. The mount is
    // read-only too, so the kernel refuses most of these before asking.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}
