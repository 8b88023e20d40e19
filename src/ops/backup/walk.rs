//! The directory walk and the tree builder.
//!
//! The walker thread descends the source depth-first and, for every
//! directory, emits a [`DirJob`] after the jobs of its subdirectories
//! (post-order). File contents are read by a pool of reader threads; a job
//! only holds a receiver for each file's result, so the walker runs ahead of
//! the readers, bounded by the channel capacities. The tree builder thread
//! takes the jobs in order, waits for each file's result, and stores the
//! directory's tree; subdirectory results are picked up by job id.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::progress::Progress;
use super::source::{chunk_stream, node_from_meta, store_tree, Excludes};
use super::store::BlobStore;
use crate::format::chunker::Chunker;
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind, Tree};

/// Looks up trees of the parent snapshot (for unchanged-file detection).
pub trait ParentTrees: Send + Sync {
    fn load(&self, ids: &[Id]) -> Option<Tree>;
}

/// What a file read produced.
pub struct FileDone {
    pub content: Vec<Id>,
    pub size: u64,
}

pub enum Pending {
    /// Complete (metadata only, or taken over from the parent).
    Ready(Node, FileState),
    /// A file being read by the pool.
    File(Node, Receiver<Result<FileDone, String>>),
    /// A directory whose tree is the result of job `id`.
    Dir(Node, u64),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    Unmodified,
    Other,
}

pub struct DirJob {
    pub id: u64,
    pub entries: Vec<Pending>,
}

pub struct FileJob {
    pub path: PathBuf,
    pub node_size: u64,
    pub reply: Sender<Result<FileDone, String>>,
}

/// Shared state of the walk.
pub struct Walk<'a> {
    pub excludes: &'a Excludes,
    pub one_file_system: bool,
    pub parent: Option<&'a dyn ParentTrees>,
    pub store: &'a BlobStore,
    pub progress: &'a Progress,
    pub files: Sender<FileJob>,
    pub dirs: Sender<DirJob>,
    pub errors: &'a Mutex<Vec<String>>,
    pub next_id: u64,
    pub changed: &'a std::sync::atomic::AtomicU64,
    /// Once cancelled, the walk stops adding entries; the backup then
    /// stores what it has read but writes no snapshot.
    pub cancel: &'a tokio_util::sync::CancellationToken,
}

impl Walk<'_> {
    fn error(&self, msg: String) {
        tracing::warn!("{msg}");
        self.progress.errors.fetch_add(1, Relaxed);
        self.errors.lock().unwrap().push(msg);
    }

    fn emit(&mut self, entries: Vec<Pending>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.dirs
            .send(DirJob { id, entries })
            .expect("tree builder outlives the walk");
        id
    }

    /// One entry: a node plus, for files and directories, the work for it.
    fn entry(
        &mut self,
        path: &Path,
        name: &[u8],
        parent: Option<&Tree>,
        root_dev: u64,
    ) -> Option<Pending> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.error(format!("{}: {e}", path.display()));
                return None;
            }
        };
        let node = node_from_meta(name, &meta, path);
        let old = parent.and_then(|t| t.find(name));
        match node.kind {
            NodeKind::File => {
                self.progress.files.fetch_add(1, Relaxed);
                self.progress.bytes_seen.fetch_add(node.size, Relaxed);
                if let Some(old) = old {
                    if node.unchanged_since(old)
                        && old.content.iter().all(|id| self.store.known(id))
                    {
                        let mut n = node;
                        n.content = old.content.clone();
                        return Some(Pending::Ready(n, FileState::Unmodified));
                    }
                }
                if old.is_some() {
                    self.changed.fetch_add(1, Relaxed);
                }
                let (tx, rx) = bounded(1);
                self.files
                    .send(FileJob {
                        path: path.to_path_buf(),
                        node_size: node.size,
                        reply: tx,
                    })
                    .expect("readers outlive the walk");
                Some(Pending::File(node, rx))
            }
            NodeKind::Dir => {
                self.progress.dirs.fetch_add(1, Relaxed);
                let sub = if self.one_file_system && meta.dev() != root_dev {
                    // A mount point: keep the directory, not what is mounted.
                    self.emit(Vec::new())
                } else {
                    let old_tree = old
                        .filter(|o| o.kind == NodeKind::Dir)
                        .and_then(|o| self.parent.and_then(|p| p.load(&o.subtree)));
                    self.dir(path, old_tree.as_ref(), root_dev)
                };
                Some(Pending::Dir(node, sub))
            }
            _ => Some(Pending::Ready(node, FileState::Other)),
        }
    }

    /// Walk a directory; returns the id of its job.
    fn dir(&mut self, path: &Path, parent: Option<&Tree>, root_dev: u64) -> u64 {
        let mut names: Vec<Vec<u8>> = match std::fs::read_dir(path) {
            Ok(rd) => rd
                .filter_map(|e| match e {
                    Ok(e) => Some(e.file_name().as_bytes().to_vec()),
                    Err(err) => {
                        self.error(format!("{}: {err}", path.display()));
                        None
                    }
                })
                .collect(),
            Err(e) => {
                self.error(format!("{}: {e}", path.display()));
                Vec::new()
            }
        };
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            if self.cancel.is_cancelled() {
                break;
            }
            let child = path.join(std::ffi::OsStr::from_bytes(&name));
            if self.excludes.is_excluded(&child) {
                continue;
            }
            if let Some(p) = self.entry(&child, &name, parent, root_dev) {
                entries.push(p);
            }
        }
        self.emit(entries)
    }

    /// Walk every backup target and the directories above them up to `/`;
    /// returns the id of the root job.
    pub fn targets(&mut self, targets: &[PathBuf], parent_root: Option<&Tree>) -> u64 {
        #[derive(Default)]
        struct VDir {
            children: BTreeMap<Vec<u8>, VEntry>,
        }
        enum VEntry {
            Target(PathBuf),
            Dir(VDir),
        }
        let mut root = VDir::default();
        for t in targets {
            let comps: Vec<Vec<u8>> = t
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(s) => Some(s.as_bytes().to_vec()),
                    _ => None,
                })
                .collect();
            let mut cur = &mut root;
            for (i, c) in comps.iter().enumerate() {
                if i + 1 == comps.len() {
                    cur.children.insert(c.clone(), VEntry::Target(t.clone()));
                    break;
                }
                let e = cur
                    .children
                    .entry(c.clone())
                    .or_insert_with(|| VEntry::Dir(VDir::default()));
                cur = match e {
                    VEntry::Dir(d) => d,
                    // A target inside another target: the outer walk covers it.
                    VEntry::Target(_) => break,
                };
            }
        }
        fn emit_v(w: &mut Walk, path: &Path, v: &VDir, parent: Option<&Tree>) -> u64 {
            let mut entries = Vec::new();
            for (name, e) in &v.children {
                let child = path.join(std::ffi::OsStr::from_bytes(name));
                match e {
                    VEntry::Target(t) => {
                        let dev = std::fs::symlink_metadata(t).map(|m| m.dev()).unwrap_or(0);
                        if let Some(p) = w.entry(t, name, parent, dev) {
                            entries.push(p);
                        }
                    }
                    VEntry::Dir(sub) => {
                        let meta = match std::fs::symlink_metadata(&child) {
                            Ok(m) => m,
                            Err(e) => {
                                w.error(format!("{}: {e}", child.display()));
                                continue;
                            }
                        };
                        let old = parent
                            .and_then(|t| t.find(name))
                            .filter(|o| o.kind == NodeKind::Dir)
                            .and_then(|o| w.parent.and_then(|p| p.load(&o.subtree)));
                        let id = emit_v(w, &child, sub, old.as_ref());
                        entries.push(Pending::Dir(node_from_meta(name, &meta, &child), id));
                    }
                }
            }
            w.emit(entries)
        }
        emit_v(self, Path::new("/"), &root, parent_root)
    }
}

/// Body of a reader thread: read files and store their chunks.
pub fn reader(
    jobs: Receiver<FileJob>,
    chunker: &Chunker,
    store: &BlobStore,
    progress: &Progress,
    cancel: &tokio_util::sync::CancellationToken,
) {
    let mut buf = Vec::new();
    for job in jobs {
        let res = read_file(&job, chunker, store, progress, &mut buf, cancel);
        let _ = job.reply.send(res);
    }
}

/// A reader that fails once the backup is cancelled, so a large file does
/// not keep a cancelled backup going.
struct Cancellable<'a, R> {
    inner: R,
    cancel: &'a tokio_util::sync::CancellationToken,
}

impl<R: std::io::Read> std::io::Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other(INTERRUPTED));
        }
        self.inner.read(buf)
    }
}

/// The error of a file a cancelled backup did not read.
pub const INTERRUPTED: &str = "interrupted";

fn read_file(
    job: &FileJob,
    chunker: &Chunker,
    store: &BlobStore,
    progress: &Progress,
    buf: &mut Vec<u8>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<FileDone, String> {
    if cancel.is_cancelled() {
        return Err(INTERRUPTED.into());
    }
    let f = File::open(&job.path).map_err(|e| format!("{}: {e}", job.path.display()))?;
    let mut f = Cancellable { inner: f, cancel };
    let on_bytes = |n| {
        progress.bytes_read.fetch_add(n, Relaxed);
    };
    let (content, size) = chunk_stream(&mut f, chunker, store, &on_bytes, buf)
        .map_err(|e| format!("{}: {e}", job.path.display()))?;
    if size != job.node_size {
        tracing::warn!(
            "{}: changed while being read ({} bytes expected, {} read)",
            job.path.display(),
            job.node_size,
            size
        );
    }
    Ok(FileDone { content, size })
}

/// Counters the tree builder fills for the snapshot summary.
#[derive(Default)]
pub struct BuildCounts {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub other: u64,
    pub total_bytes: u64,
}

/// Body of the tree builder thread; returns the root tree's blob ids.
pub fn build_trees(
    jobs: Receiver<DirJob>,
    chunker: &Chunker,
    store: &BlobStore,
    errors: &Mutex<Vec<String>>,
    progress: &Progress,
    counts: &mut BuildCounts,
    changed_paths: &std::sync::atomic::AtomicU64,
) -> Option<Vec<Id>> {
    let mut results: HashMap<u64, Vec<Id>> = HashMap::new();
    let mut last = None;
    for job in jobs {
        let mut tree = Tree::default();
        for p in job.entries {
            match p {
                Pending::Ready(n, state) => {
                    match (n.kind, state) {
                        (NodeKind::File, FileState::Unmodified) => {
                            counts.files_unmodified += 1;
                            counts.total_bytes += n.size;
                        }
                        (NodeKind::File, _) => counts.files_new += 1,
                        _ => counts.other += 1,
                    }
                    tree.nodes.push(n);
                }
                Pending::File(mut n, rx) => match rx.recv() {
                    Ok(Ok(done)) => {
                        n.content = done.content;
                        n.size = done.size;
                        counts.total_bytes += n.size;
                        counts.files_new += 1;
                        tree.nodes.push(n);
                    }
                    // Not an error of the source: the run stops and
                    // writes no snapshot.
                    Ok(Err(msg)) if msg == INTERRUPTED || msg.ends_with(INTERRUPTED) => {}
                    Ok(Err(msg)) => {
                        tracing::warn!("{msg}");
                        progress.errors.fetch_add(1, Relaxed);
                        errors.lock().unwrap().push(msg);
                    }
                    Err(_) => errors
                        .lock()
                        .unwrap()
                        .push("a reader thread stopped".into()),
                },
                Pending::Dir(mut n, id) => {
                    n.subtree = results.remove(&id).unwrap_or_default();
                    counts.dirs += 1;
                    tree.nodes.push(n);
                }
            }
        }
        tree.sort();
        let ids = store_tree(tree.to_bytes(), chunker, store);
        results.insert(job.id, ids.clone());
        last = Some(ids);
    }
    counts.files_changed = changed_paths.load(Relaxed).min(counts.files_new);
    counts.files_new -= counts.files_changed;
    last
}
