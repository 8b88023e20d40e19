//! The snapshot browser: a path in a snapshot to its entry, the listing of
//! a directory, and a file's bytes read lazily at any offset, each blob
//! from the first replica that has a good copy. The HTTP API (tree, file,
//! archive) and `cairn mount` both read snapshots through it, so a path
//! means the same in each and neither loads more than it shows.
//!
//! Paths are what `ls` shows: absolute, `/`-separated, in the snapshot's
//! own namespace. A path with an empty, `.` or `..` component is refused,
//! never normalised: nothing outside the snapshot can be named. Entries a
//! tree holds with names that could escape (see [`Tree::take_refused`])
//! are not shown and cannot be reached.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::repo::tree_cache::TreeCache;
use crate::repo::{MasterIndex, Repository, SnapshotEntry};

/// Trees kept decoded: the directories of the paths being browsed, bounded
/// (with their entries, see [`TreeCache`]) so memory does not grow with
/// the snapshot.
const CACHE_TREES: usize = 1024;

/// Chunks kept decoded for [`Browser::read_at`]: a reader going through a
/// file in pieces smaller than a chunk (the kernel asks `cairn mount` for
/// 128 KiB at a time) reads each chunk once, not once per piece. At most
/// this many times the largest chunk (8 MiB by default).
const CACHE_CHUNKS: usize = 4;

/// A path's components, checked; `/` is the empty list.
pub fn components(path: &str) -> Result<Vec<&str>> {
    let bad = |why: &str| Error::Invalid(format!("path {path:?}: {why}"));
    if !path.starts_with('/') {
        return Err(bad("must be absolute, as `ls` shows it"));
    }
    if path.contains('\0') {
        return Err(bad("holds a NUL byte"));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed[1..]
        .split('/')
        .map(|c| match c {
            "" => Err(bad("has an empty component (`//`)")),
            "." | ".." => Err(bad("may not hold `.` or `..`")),
            c => Ok(c),
        })
        .collect()
}

/// A path given as its raw bytes (a name that is not UTF-8), checked as
/// [`components`] checks a path; its components as bytes.
pub fn components_raw(path: &[u8]) -> Result<Vec<&[u8]>> {
    match std::str::from_utf8(path) {
        Ok(p) => Ok(components(p)?.into_iter().map(str::as_bytes).collect()),
        Err(_) => {
            let shown = crate::format::tree::escape_bytes(path);
            let bad = |why: &str| Error::Invalid(format!("path \"{shown}\": {why}"));
            if path.first() != Some(&b'/') {
                return Err(bad("must be absolute, as `ls` shows it"));
            }
            if path.contains(&0) {
                return Err(bad("holds a NUL byte"));
            }
            // Not UTF-8, so not all slashes: something is left after the first.
            let end = path.iter().rposition(|b| *b != b'/').map_or(1, |i| i + 1);
            path[1..end]
                .split(|b| *b == b'/')
                .map(|c| match c {
                    b"" => Err(bad("has an empty component (`//`)")),
                    b"." | b".." => Err(bad("may not hold `.` or `..`")),
                    c => Ok(c),
                })
                .collect()
        }
    }
}

/// What a path names.
#[derive(Clone, Debug)]
pub enum Found {
    /// The snapshot's root directory.
    Root { tree: Vec<Id> },
    /// An entry (a directory's subtree is in `node.subtree`).
    Entry(Node),
}

impl Found {
    /// The tree to list, for a directory.
    pub fn subtree(&self) -> Option<&[Id]> {
        match self {
            Found::Root { tree } => Some(tree),
            Found::Entry(n) if n.kind == NodeKind::Dir => Some(&n.subtree),
            Found::Entry(_) => None,
        }
    }
}

/// Whether `e` may come from an index read before a backup or prune
/// changed the repository: a blob in no index, or its pack gone or
/// unreadable. Loading the index again may cure it.
fn stale(e: &Error) -> bool {
    e.is_damage() || matches!(e, Error::NotFound(_))
}

/// Reads snapshots of one repository.
pub struct Browser {
    repo: Arc<Repository>,
    index: RwLock<Arc<MasterIndex>>,
    trees: Mutex<TreeCache<Arc<Tree>>>,
    /// The chunks read last by [`Browser::read_at`], newest last.
    chunks: Mutex<std::collections::VecDeque<(Id, Arc<Vec<u8>>)>>,
    /// The last listing of the snapshots and when it was made. The lock is
    /// held while listing, so callers arriving meanwhile share that one
    /// listing instead of each reading every snapshot document again.
    listing: tokio::sync::Mutex<Option<(Instant, Arc<Vec<SnapshotEntry>>)>>,
    /// How long a listing is reused ([`LISTING_FRESH`]), and how long
    /// after loading the index it is not loaded again for a missed blob.
    fresh: Duration,
    /// When the index was last loaded again for a missed blob.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

/// How long a listing of the snapshots is reused.
pub const LISTING_FRESH: Duration = Duration::from_secs(2);

impl Browser {
    /// A browser over `repo`, with its index loaded now.
    pub async fn new(repo: Arc<Repository>) -> Result<Browser> {
        let index = repo.load_index().await?;
        Ok(Browser {
            repo,
            index: RwLock::new(Arc::new(index)),
            trees: Mutex::new(TreeCache::new(CACHE_TREES)),
            chunks: Mutex::new(std::collections::VecDeque::new()),
            listing: tokio::sync::Mutex::new(None),
            fresh: LISTING_FRESH,
            refreshed: tokio::sync::Mutex::new(None),
        })
    }

    /// Reuse a listing of the snapshots for `fresh` instead.
    pub fn with_listing_fresh(mut self, fresh: Duration) -> Browser {
        self.fresh = fresh;
        self
    }

    /// The snapshots, oldest first, listed at most [`LISTING_FRESH`] ago.
    pub async fn snapshots(&self) -> Result<Arc<Vec<SnapshotEntry>>> {
        let mut last = self.listing.lock().await;
        if let Some((at, list)) = last.as_ref() {
            if at.elapsed() < self.fresh {
                return Ok(list.clone());
            }
        }
        let list = Arc::new(self.repo.list_snapshots().await?);
        *last = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Forget the last listing: the next one reads the replicas, and the
    /// next blob missed loads the index (after a change made through this
    /// process, such as a backup or a forget).
    pub async fn forget_listing(&self) {
        *self.listing.lock().await = None;
        // The next missed blob loads the index at once.
        *self.refreshed.lock().await = None;
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    fn index(&self) -> Arc<MasterIndex> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Load the index again: after a prune or a backup, blobs may have
    /// moved to other packs or appeared.
    pub async fn refresh(&self) -> Result<()> {
        let index = Arc::new(self.repo.load_index().await?);
        *self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = index;
        Ok(())
    }

    /// Load the index again after a blob was missed at `missed`, unless
    /// that was done since (callers missing at once share one load) or
    /// less than [`LISTING_FRESH`] ago: trees that name blobs in no index
    /// (a damaged or hostile repository) must not make every request load
    /// the whole index.
    async fn refresh_after_miss(&self, missed: Instant) -> Result<()> {
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|t| t >= missed || t.elapsed() < self.fresh) {
            return Ok(());
        }
        self.refresh().await?;
        *last = Some(Instant::now());
        Ok(())
    }

    /// The decoded tree stored as `ids`, without refused entries.
    pub async fn tree(&self, ids: &[Id]) -> Result<Arc<Tree>> {
        if let Some(t) = self.cache().get(ids) {
            return Ok(t);
        }
        let missed = Instant::now();
        let mut tree = match self.repo.load_tree(&self.index(), ids).await {
            Err(e) if stale(&e) => {
                // A prune may have moved the blobs since the index was read,
                // or a backup added them.
                self.refresh_after_miss(missed).await?;
                self.repo.load_tree(&self.index(), ids).await?
            }
            r => r?,
        };
        let _ = tree.take_refused();
        // Stored trees are sorted, but storage is not trusted: sorted here,
        // a name is found by binary search ([`Tree::find`]) and listed in
        // order.
        tree.sort();
        let tree = Arc::new(tree);
        self.cache().insert(ids, tree.clone(), tree.nodes.len());
        Ok(tree)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TreeCache<Arc<Tree>>> {
        self.trees
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What `path` names in `snapshot`; [`Error::NotFound`] if nothing.
    pub async fn find(&self, snapshot: &Snapshot, path: &str) -> Result<Found> {
        self.find_raw(snapshot, path.as_bytes()).await
    }

    /// [`Browser::find`] for a path given as bytes.
    pub async fn find_raw(&self, snapshot: &Snapshot, raw: &[u8]) -> Result<Found> {
        let path = crate::format::tree::escape_bytes(raw);
        let parts = components_raw(raw)?;
        let mut tree = snapshot.tree.clone();
        let mut found = Found::Root { tree: tree.clone() };
        for (i, part) in parts.iter().enumerate() {
            let t = self.tree(&tree).await?;
            let node = t
                .nodes
                .iter()
                .find(|n| n.name.0 == *part)
                .ok_or_else(|| Error::NotFound(format!("{path}: not in the snapshot")))?;
            if i + 1 < parts.len() {
                if node.kind != NodeKind::Dir {
                    return Err(Error::NotFound(format!(
                        "{path}: /{} is not a directory",
                        crate::format::tree::escape_bytes(&parts[..=i].join(&b'/'))
                    )));
                }
                tree = node.subtree.clone();
            }
            found = Found::Entry(node.clone());
        }
        Ok(found)
    }

    /// The entries of the directory `path` in `snapshot`, sorted by name.
    pub async fn list(&self, snapshot: &Snapshot, path: &str) -> Result<Vec<Node>> {
        self.list_raw(snapshot, path.as_bytes()).await
    }

    /// [`Browser::list`] for a path given as bytes.
    pub async fn list_raw(&self, snapshot: &Snapshot, raw: &[u8]) -> Result<Vec<Node>> {
        let found = self.find_raw(snapshot, raw).await?;
        let Some(ids) = found.subtree() else {
            return Err(Error::Invalid(format!(
                "{}: not a directory",
                crate::format::tree::escape_bytes(raw)
            )));
        };
        let mut nodes = self.tree(ids).await?.nodes.clone();
        nodes.sort_by(|a, b| a.name.0.cmp(&b.name.0));
        Ok(nodes)
    }

    /// The sizes of a file's chunks, from the index (nothing is read; it
    /// is loaded again if a chunk is missing, as for a snapshot made since
    /// it was read). A chunk in no index is an error naming it.
    pub async fn chunk_sizes(&self, node: &Node) -> Result<Vec<u64>> {
        let missed = Instant::now();
        match Self::sizes_in(&self.index(), node) {
            Err(_) => {
                self.refresh_after_miss(missed).await?;
                Self::sizes_in(&self.index(), node)
            }
            ok => ok,
        }
    }

    fn sizes_in(index: &MasterIndex, node: &Node) -> Result<Vec<u64>> {
        node.content
            .iter()
            .map(|id| {
                index
                    .get(id)
                    .map(|(_, loc)| u64::from(loc.raw_len()))
                    .ok_or_else(|| {
                        Error::NotFound(format!("data blob {} is in no index", id.short()))
                    })
            })
            .collect()
    }

    /// One chunk of a file, read, authenticated and checked against its id,
    /// from the first replica with a good copy.
    pub async fn chunk(&self, id: &Id) -> Result<Vec<u8>> {
        let missed = Instant::now();
        match self.repo.read_blob(&self.index(), id).await {
            Err(e) if stale(&e) => {
                self.refresh_after_miss(missed).await?;
                self.repo.read_blob(&self.index(), id).await
            }
            r => r,
        }
    }

    /// [`Browser::chunk`], kept among the last [`CACHE_CHUNKS`] read.
    async fn recent_chunk(&self, id: &Id) -> Result<Arc<Vec<u8>>> {
        let recent = || {
            self.chunks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((_, data)) = recent().iter().find(|(c, _)| c == id) {
            return Ok(data.clone());
        }
        let data = Arc::new(self.chunk(id).await?);
        let mut chunks = recent();
        if chunks.len() >= CACHE_CHUNKS {
            chunks.pop_front();
        }
        chunks.push_back((*id, data.clone()));
        Ok(data)
    }

    /// Up to `len` bytes of file `node` from `offset` (fewer at its end);
    /// only the chunks that hold them are read.
    pub async fn read_at(&self, node: &Node, offset: u64, len: u64) -> Result<Vec<u8>> {
        let sizes = self.chunk_sizes(node).await?;
        let mut out = Vec::new();
        let end = offset.saturating_add(len);
        let mut at = 0u64;
        for (id, size) in node.content.iter().zip(sizes) {
            let (start, stop) = (at, at + size);
            at = stop;
            if stop <= offset {
                continue;
            }
            if start >= end {
                break;
            }
            let data = self.recent_chunk(id).await?;
            let from = offset.saturating_sub(start) as usize;
            let to = (end.min(stop) - start) as usize;
            out.extend_from_slice(&data[from.min(data.len())..to.min(data.len())]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn paths_are_checked_not_normalised() {
        assert_eq!(components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(components("/a/b/").unwrap(), ["a", "b"]);
        for bad in ["a/b", "/a/../b", "/..", "/a//b", "/./a", "", "/a\0b"] {
            assert!(components(bad).is_err(), "{bad:?}");
        }
        let odd: &[u8] = b"/a/\xff\xfe/";
        assert_eq!(components_raw(odd).unwrap(), [&b"a"[..], &b"\xff\xfe"[..]]);
        for bad in [
            &b"a/\xff"[..],
            b"/\xff/../b",
            b"/\xff//b",
            b"/\xff/./b",
            b"/\xff\0",
        ] {
            assert!(components_raw(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_are_found_listed_and_read_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let repo = Arc::new(init(memory_replicas(2)).await);
        backup_dir(&repo, &src).await;
        let snap = repo.list_snapshots().await.unwrap().remove(0).snapshot;
        let b = Browser::new(repo.clone()).await.unwrap();
        let root = b.list(&snap, "/").await.unwrap();
        assert!(!root.is_empty());
        // Down the source's own path to a file with content.
        let mut path = String::new();
        for part in src.components().skip(1) {
            path.push('/');
            path.push_str(&part.as_os_str().to_string_lossy());
        }
        let files = b.list(&snap, &path).await.unwrap();
        let file = files
            .iter()
            .filter(|n| n.kind == NodeKind::File && n.size > 0)
            .max_by_key(|n| n.size)
            .unwrap();
        let name = String::from_utf8(file.name.0.clone()).unwrap();
        let want = std::fs::read(src.join(&name)).unwrap();
        let node = match b.find(&snap, &format!("{path}/{name}")).await.unwrap() {
            Found::Entry(n) => n,
            Found::Root { .. } => unreachable!(),
        };
        assert_eq!(b.read_at(&node, 0, u64::MAX).await.unwrap(), want);
        let mid = want.len() as u64 / 3;
        assert_eq!(
            b.read_at(&node, mid, 1000).await.unwrap(),
            want[mid as usize..(mid as usize + 1000).min(want.len())]
        );
        // Pieces of a chunk read last are served without reading it again.
        let objects = || repo.reads().per_replica().iter().map(|r| r.0).sum::<u64>();
        let before = objects();
        for at in [0u64, 100, 5000] {
            assert_eq!(
                b.read_at(&node, at, 10).await.unwrap(),
                want[at as usize..at as usize + 10]
            );
        }
        assert_eq!(objects(), before);
        assert!(b
            .read_at(&node, want.len() as u64 + 5, 10)
            .await
            .unwrap()
            .is_empty());
        assert!(matches!(
            b.find(&snap, &format!("{path}/no-such-file")).await,
            Err(Error::NotFound(_))
        ));
        assert!(b.list(&snap, &format!("{path}/{name}")).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_snapshot_listing_is_shared_for_a_moment_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let repo = Arc::new(init(memory_replicas(1)).await);
        backup_dir(&repo, &src).await;
        let b = Browser::new(repo.clone())
            .await
            .unwrap()
            .with_listing_fresh(Duration::from_secs(3600));
        let first = b.snapshots().await.unwrap();
        assert_eq!(first.len(), 1);
        backup_dir(&repo, &src).await;
        // While fresh, the same listing is given again...
        assert!(Arc::ptr_eq(&first, &b.snapshots().await.unwrap()));
        // ...unless it was forgotten.
        b.forget_listing().await;
        assert_eq!(b.snapshots().await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_made_after_the_browser_started_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let repo = Arc::new(init(memory_replicas(1)).await);
        backup_dir(&repo, &src).await;
        let b = Browser::new(repo.clone()).await.unwrap();
        // New content: its trees and chunks are in no index the browser read.
        std::fs::write(src.join("new.bin"), vec![7u8; 300_000]).unwrap();
        backup_dir(&repo, &src).await;
        let snap = repo.list_snapshots().await.unwrap().pop().unwrap().snapshot;
        let mut path = String::new();
        for part in src.components().skip(1) {
            path.push('/');
            path.push_str(&part.as_os_str().to_string_lossy());
        }
        assert!(b.list(&snap, &path).await.unwrap().len() > 1);
        let Found::Entry(node) = b.find(&snap, &format!("{path}/new.bin")).await.unwrap() else {
            unreachable!()
        };
        assert_eq!(
            b.read_at(&node, 0, u64::MAX).await.unwrap(),
            vec![7u8; 300_000]
        );
    }
}
