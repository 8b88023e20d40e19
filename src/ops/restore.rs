//! `restore`: recreate a snapshot (or part of it) under a target directory.
//!
//! The tree is walked first to create directories and collect files; files
//! are then written by a pool of threads, each blob read from any replica
//! that holds it and authenticated; a file whose data cannot be read is
//! named in the report and the rest of the restore goes on. Directory
//! metadata is applied last, deepest first, so writing children does not
//! disturb their parents' mtimes.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind};
use crate::repo::{MasterIndex, TreeWalker, Visit, Visitor};
use crate::repo::{Repository, SnapshotEntry};

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Path inside the snapshot to restore (`/` or empty for everything).
    pub subpath: Option<String>,
    /// Only restore entries whose snapshot path matches one of these globs.
    pub include: Vec<String>,
    /// Re-read restored files and check them against the snapshot.
    pub verify: bool,
    pub workers: usize,
}

/// Counters for progress display.
#[derive(Default)]
pub struct RestoreProgress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreOutcome {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Files that could not be restored (or verified), with the reason.
    pub errors: Vec<String>,
    pub verified_files: u64,
}

impl RestoreOutcome {
    pub fn outcome(&self) -> crate::ops::Outcome {
        if self.errors.is_empty() {
            crate::ops::Outcome::Ok
        } else {
            crate::ops::Outcome::Incomplete
        }
    }
}

struct FileItem {
    path: PathBuf,
    node: Node,
}

struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<FileItem>,
    others: Vec<(PathBuf, Node)>,
    /// Directories whose contents could not be read from the repository.
    errors: Vec<String>,
}

fn includes(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = if p.starts_with('/') {
            p.clone()
        } else {
            format!("**/{p}")
        };
        b.add(Glob::new(&p).map_err(|e| Error::Invalid(format!("include pattern: {e}")))?);
        // A directory that matches brings everything below it.
        b.add(Glob::new(&format!("{p}/**")).map_err(|e| Error::Invalid(e.to_string()))?);
    }
    Ok(Some(b.build().map_err(|e| Error::Invalid(e.to_string()))?))
}

/// Find the node at `subpath` (None: the root tree itself).
async fn locate(
    repo: &Repository,
    index: &MasterIndex,
    root: &[Id],
    subpath: &str,
) -> Result<(Option<Node>, Vec<Id>)> {
    let mut ids = root.to_vec();
    let mut tree = repo.load_tree(index, root).await?;
    let mut node = None;
    let comps: Vec<&str> = subpath.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in comps.iter().enumerate() {
        let n = tree
            .find(c.as_bytes())
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("{subpath}: not in the snapshot")))?;
        if n.kind == NodeKind::Dir {
            ids = n.subtree.clone();
            if i + 1 != comps.len() {
                tree = repo.load_tree(index, &ids).await?;
            }
        } else if i + 1 != comps.len() {
            return Err(Error::NotFound(format!("{subpath}: not in the snapshot")));
        }
        node = Some(n);
    }
    Ok((node, ids))
}

/// Restore the snapshot `spec` (`latest`, an id or a unique prefix)
/// under a shared lock, loading the snapshot list and the index itself:
/// what a front end calls. Returns the snapshot restored and the report.
pub async fn restore_snapshot(
    repo: &Repository,
    spec: &str,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<(SnapshotEntry, RestoreOutcome)> {
    repo.with_lock(crate::repo::LockMode::Shared, "restore", async || {
        let snaps = repo.list_snapshots().await?;
        let snap = Repository::find_snapshot(&snaps, spec)?.clone();
        let index = repo.load_index().await?;
        let out = restore(repo, &index, &snap, opts, progress).await?;
        Ok((snap, out))
    })
    .await
}

/// Restore `snap` according to `opts`.
pub async fn restore(
    repo: &Repository,
    index: &MasterIndex,
    snap: &SnapshotEntry,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreOutcome> {
    let filter = includes(&opts.include)?;
    let sub = opts.subpath.clone().unwrap_or_default();
    let (node, tree_ids) = locate(repo, index, &snap.snapshot.tree, &sub).await?;
    fs::create_dir_all(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?;
    let mut plan = Plan {
        dirs: Vec::new(),
        files: Vec::new(),
        others: Vec::new(),
        errors: Vec::new(),
    };
    let snap_base = PathBuf::from("/").join(sub.trim_start_matches('/'));
    match node {
        Some(n) if n.kind != NodeKind::Dir => {
            let dest = opts.target.join(std::ffi::OsStr::from_bytes(&n.name.0));
            add_node(&mut plan, dest, n);
        }
        _ => {
            let mut v = Planner {
                target: &opts.target,
                snap_base: &snap_base,
                filter: filter.as_ref(),
                plan: &mut plan,
                failed: None,
            };
            TreeWalker::new(repo, index)
                .walk(&tree_ids, &snap_base, &mut v)
                .await;
            if let Some(e) = v.failed {
                return Err(e);
            }
        }
    }
    let mut outcome = RestoreOutcome {
        errors: std::mem::take(&mut plan.errors),
        ..Default::default()
    };
    progress.total_files.store(plan.files.len() as u64, Relaxed);
    progress
        .total_bytes
        .store(plan.files.iter().map(|f| f.node.size).sum(), Relaxed);
    for (p, _) in &plan.dirs {
        if let Err(e) = fs::create_dir_all(p) {
            outcome.errors.push(format!("{}: {e}", p.display()));
        }
    }
    let errors = Mutex::new(Vec::new());
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        restore_files(
            repo,
            index,
            &rt,
            &plan.files,
            opts.workers.max(1),
            progress,
            &errors,
        )
    });
    outcome.errors.extend(errors.into_inner().unwrap());
    for (p, n) in &plan.others {
        let res = match create_other(p, n) {
            Ok(true) => apply_meta(p, n),
            // Not created (a socket, or a device without root): no metadata.
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            outcome.errors.push(format!("{}: {e}", p.display()));
        }
    }
    for (p, n) in plan.dirs.iter().rev() {
        if let Err(e) = apply_meta(p, n) {
            outcome.errors.push(format!("{}: {e}", p.display()));
        }
    }
    outcome.files = progress.files.load(Relaxed);
    outcome.dirs = plan.dirs.len() as u64;
    outcome.bytes = progress.bytes.load(Relaxed);
    if opts.verify {
        for f in &plan.files {
            match verify_file(repo, index, f) {
                Ok(()) => outcome.verified_files += 1,
                Err(e) => outcome
                    .errors
                    .push(format!("{}: verification failed: {e}", f.path.display())),
            }
        }
    }
    Ok(outcome)
}

fn add_node(plan: &mut Plan, dest: PathBuf, n: Node) {
    match n.kind {
        NodeKind::File => plan.files.push(FileItem {
            path: dest,
            node: n,
        }),
        NodeKind::Dir => plan.dirs.push((dest, n)),
        _ => plan.others.push((dest, n)),
    }
}

/// Collects everything below the restored directory into the plan.
struct Planner<'a> {
    target: &'a Path,
    snap_base: &'a Path,
    filter: Option<&'a GlobSet>,
    plan: &'a mut Plan,
    /// A parent directory that could not be created ends the restore.
    failed: Option<Error>,
}

impl Planner<'_> {
    fn dest(&self, snap_path: &Path) -> PathBuf {
        self.target
            .join(snap_path.strip_prefix(self.snap_base).unwrap_or(snap_path))
    }
}

impl Visitor for Planner<'_> {
    fn unreadable(&mut self, path: &Path, _: &[Id], e: &Error) {
        // A directory whose tree is damaged or missing is named and
        // skipped; the rest of the snapshot is still restored.
        let d = self.dest(path);
        self.plan.errors.push(format!(
            "{}: directory contents cannot be restored: {e}",
            d.display()
        ));
    }

    fn node(&mut self, sp: &Path, n: &Node) -> Visit {
        if self.failed.is_some() {
            return Visit::Skip;
        }
        let d = self.dest(sp);
        let wanted = self.filter.is_none_or(|f| f.is_match(sp));
        if n.kind == NodeKind::Dir {
            if wanted {
                self.plan.dirs.push((d, n.clone()));
            }
            return Visit::Descend;
        }
        if wanted {
            if let Some(parent) = d.parent() {
                if self.filter.is_some() && !self.plan.dirs.iter().any(|(p, _)| p == parent) {
                    // Parents of an included file are created, without metadata.
                    if let Err(e) = fs::create_dir_all(parent) {
                        self.failed = Some(Error::io(parent.display(), e));
                        return Visit::Skip;
                    }
                }
            }
            add_node(self.plan, d, n.clone());
        }
        Visit::Descend
    }
}

/// One blob of one file, to be written at `offset`.
struct Piece {
    file: usize,
    offset: u64,
    id: Id,
    loc: crate::repo::BlobLoc,
}

/// Write state of one file, guarded so that writes from different packs
/// do not interleave with its creation or its final metadata.
struct FileSlot {
    created: bool,
    remaining: usize,
    failed: bool,
}

/// Restore file contents pack by pack: each pack (or each run of needed
/// blobs in it) is read with one request and every blob in it is written
/// to the files that use it. A backup of many small files packs thousands
/// of them together, so this turns one request, one thread hand-off and one
/// decryption set-up per file into one per pack.
fn restore_files(
    repo: &Repository,
    index: &MasterIndex,
    rt: &tokio::runtime::Handle,
    files: &[FileItem],
    workers: usize,
    progress: &RestoreProgress,
    errors: &Mutex<Vec<String>>,
) {
    let slots: Vec<Mutex<FileSlot>> = files
        .iter()
        .map(|f| {
            Mutex::new(FileSlot {
                created: false,
                remaining: f.node.content.len(),
                failed: false,
            })
        })
        .collect();
    let mut by_pack: std::collections::BTreeMap<u32, Vec<Piece>> = Default::default();
    for (i, f) in files.iter().enumerate() {
        let mut offset = 0u64;
        for id in &f.node.content {
            match index.get(id) {
                Some((_, loc)) => {
                    by_pack.entry(loc.pack).or_default().push(Piece {
                        file: i,
                        offset,
                        id: *id,
                        loc: *loc,
                    });
                    offset += loc.raw_len as u64;
                }
                None => {
                    let mut slot = slots[i].lock().unwrap();
                    if !slot.failed {
                        slot.failed = true;
                        errors.lock().unwrap().push(format!(
                            "{}: blob {} is in no index",
                            f.path.display(),
                            id.short()
                        ));
                    }
                    slot.remaining = 0;
                    break;
                }
            }
        }
    }
    // Empty files (and files already failed) are finished here.
    for (i, f) in files.iter().enumerate() {
        let slot = slots[i].lock().unwrap();
        if slot.remaining == 0 && !slot.failed {
            finished(f, None, progress, errors);
        }
    }
    let packs: Vec<(u32, Vec<Piece>)> = by_pack.into_iter().collect();
    let next = Mutex::new(packs.into_iter());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let Some((pack, mut pieces)) = next.lock().unwrap().next() else {
                    break;
                };
                pieces.sort_by_key(|p| p.loc.offset);
                for run in runs(&pieces) {
                    restore_run(repo, index, rt, pack, run, files, &slots, progress, errors);
                }
            });
        }
    });
}

/// Split a pack's pieces (sorted by offset) into runs worth one read each:
/// a gap of more than 1 MiB of unneeded bytes, or a run reaching 4 MiB,
/// starts a new one. The cap bounds restore memory to about 4 MiB per
/// worker whatever the pack size.
fn runs(pieces: &[Piece]) -> Vec<&[Piece]> {
    const GAP: u32 = 1 << 20;
    const SPAN: u32 = 4 << 20;
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0u32;
    for i in 0..=pieces.len() {
        let split = i == pieces.len()
            || (i > start
                && (pieces[i].loc.offset > end.saturating_add(GAP)
                    || pieces[i].loc.offset + pieces[i].loc.stored_len - pieces[start].loc.offset
                        > SPAN));
        if i > start && split {
            out.push(&pieces[start..i]);
            start = i;
        }
        if i < pieces.len() {
            end = if i == start {
                pieces[i].loc.offset + pieces[i].loc.stored_len
            } else {
                end.max(pieces[i].loc.offset + pieces[i].loc.stored_len)
            };
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn restore_run(
    repo: &Repository,
    index: &MasterIndex,
    rt: &tokio::runtime::Handle,
    pack: u32,
    run: &[Piece],
    files: &[FileItem],
    slots: &[Mutex<FileSlot>],
    progress: &RestoreProgress,
    errors: &Mutex<Vec<String>>,
) {
    let info = &index.packs[pack as usize];
    let h = cairn_backends::Handle::new(cairn_backends::Kind::Pack, info.id.to_hex());
    let start = run.iter().map(|p| p.loc.offset).min().unwrap_or(0) as u64;
    let end = run
        .iter()
        .map(|p| p.loc.offset + p.loc.stored_len)
        .max()
        .unwrap_or(0) as u64;
    // One read for the run from the first replica that answers; a blob that
    // then fails to decode is fetched on its own, from any replica.
    let data = rt.block_on(repo.read_range(info, start..end)).ok();
    for p in run {
        let blob = data
            .as_ref()
            .and_then(|d| {
                d.get(
                    (p.loc.offset as u64 - start) as usize
                        ..(p.loc.offset as u64 - start + p.loc.stored_len as u64) as usize,
                )
            })
            .and_then(|stored| {
                repo.decode_blob(&h, info, &p.loc, &p.id, stored.to_vec())
                    .ok()
            });
        let blob = match blob {
            Some(b) => Ok(b),
            None => rt.block_on(repo.read_blob(index, &p.id)),
        };
        let f = &files[p.file];
        let mut slot = slots[p.file].lock().unwrap();
        if slot.failed {
            continue;
        }
        let res = blob.and_then(|b| write_piece(f, &mut slot, p.offset, &b).map(|()| b.len()));
        match res {
            Ok(n) => {
                progress.bytes.fetch_add(n as u64, Relaxed);
                slot.remaining -= 1;
                if slot.remaining == 0 {
                    finished(f, Some(slot.created), progress, errors);
                }
            }
            Err(e) => {
                slot.failed = true;
                errors
                    .lock()
                    .unwrap()
                    .push(format!("{}: {e}", f.path.display()));
            }
        }
    }
}

/// Write one blob into its file; the first write creates (truncates) the
/// file. All-zero blobs are skipped so sparse files stay sparse.
fn write_piece(f: &FileItem, slot: &mut FileSlot, offset: u64, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let path = &f.path;
    let zero = is_zero(data);
    if zero && slot.created {
        return Ok(());
    }
    let file = open_for_write(path, !slot.created)?;
    slot.created = true;
    if !zero {
        file.write_all_at(data, offset)
            .map_err(|e| Error::io(path.display(), e))?;
    }
    Ok(())
}

fn open_for_write(path: &Path, truncate: bool) -> Result<File> {
    if truncate {
        // A symlink or directory in the way is replaced, never followed.
        if fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
            let _ = fs::remove_file(path);
        }
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode_0600()
        .open(path)
        .map_err(|e| Error::io(path.display(), e))
}

/// Finish `f` (see [`finish_file`]) and count it, or record why not.
fn finished(
    f: &FileItem,
    created: Option<bool>,
    progress: &RestoreProgress,
    errors: &Mutex<Vec<String>>,
) {
    match finish_file(f, created) {
        Ok(()) => {
            progress.files.fetch_add(1, Relaxed);
        }
        Err(e) => errors
            .lock()
            .unwrap()
            .push(format!("{}: {e}", f.path.display())),
    }
}

/// Give a fully written file its length (holes at the end of sparse files)
/// and its metadata. `created` is None for files with no content at all.
fn finish_file(f: &FileItem, created: Option<bool>) -> Result<()> {
    let file = open_for_write(&f.path, !created.unwrap_or(false))?;
    file.set_len(f.node.size)
        .map_err(|e| Error::io(f.path.display(), e))?;
    drop(file);
    apply_meta(&f.path, &f.node).map_err(|e| Error::io(f.path.display(), e))
}

/// Whether `data` is all zero bytes. Compared a block at a time (memcmp),
/// not byte by byte: restoring a large sparse file checks gigabytes.
fn is_zero(data: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    data.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        // Readable by the owner only until the snapshot's mode is applied.
        self.mode(0o600)
    }
}

/// Create a symlink, FIFO or device node; `Ok(false)` when the entry is
/// deliberately not created.
fn create_other(p: &Path, n: &Node) -> std::io::Result<bool> {
    let _ = fs::remove_file(p);
    match n.kind {
        NodeKind::Symlink => {
            let t = n.target.as_ref().map(|t| t.0.clone()).unwrap_or_default();
            symlink(std::ffi::OsStr::from_bytes(&t), p)?;
        }
        NodeKind::Fifo => crate::sys::mknod(p, libc::S_IFIFO | (n.mode & 0o7777), 0)?,
        NodeKind::Chardev | NodeKind::Blockdev if crate::sys::is_root() => {
            crate::sys::mknod(p, n.mode, n.rdev)?
        }
        // Sockets cannot be restored meaningfully; devices need root.
        _ => return Ok(false),
    }
    Ok(true)
}

/// Ownership (as root), permissions and timestamps.
fn apply_meta(p: &Path, n: &Node) -> std::io::Result<()> {
    if crate::sys::is_root() {
        crate::sys::lchown(p, n.uid, n.gid)?;
    }
    if n.kind != NodeKind::Symlink && std::fs::symlink_metadata(p).is_ok() {
        fs::set_permissions(p, fs::Permissions::from_mode(n.mode & 0o7777))?;
    }
    crate::sys::set_times_nofollow(p, n.mtime, n.mtime)
}

fn verify_file(repo: &Repository, index: &MasterIndex, f: &FileItem) -> Result<()> {
    let mut file = File::open(&f.path).map_err(|e| Error::io(f.path.display(), e))?;
    for id in &f.node.content {
        let (_, loc) = index
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("blob {} not in index", id.short())))?;
        let mut buf = vec![0u8; loc.raw_len as usize];
        file.read_exact(&mut buf)
            .map_err(|e| Error::io(f.path.display(), e))?;
        if repo.keyring().chunk_id(&buf) != *id {
            return Err(Error::Corrupt(format!(
                "content differs from blob {}",
                id.short()
            )));
        }
    }
    let mut rest = [0u8; 1];
    if file
        .read(&mut rest)
        .map_err(|e| Error::io(f.path.display(), e))?
        != 0
    {
        return Err(Error::Corrupt("file is longer than in the snapshot".into()));
    }
    Ok(())
}

impl crate::ops::progress::ProgressSource for RestoreProgress {
    fn event(&self, elapsed: std::time::Duration) -> crate::ops::progress::ProgressEvent {
        crate::ops::progress::ProgressEvent::Restore(crate::ops::progress::RestoreEvent {
            seconds: elapsed.as_secs_f64(),
            files: self.files.load(Relaxed),
            total_files: self.total_files.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            total_bytes: self.total_bytes.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_restores_byte_for_byte_even_with_one_replica_gone() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let repo = init(memory_replicas(2)).await;
        backup_dir(&repo, &src).await;
        for h in packs(&repo, 0).await {
            repo.replica(0).backend.delete(&h).await.unwrap();
        }
        let index = repo.load_index().await.unwrap();
        let snaps = repo.list_snapshots().await.unwrap();
        let target = dir.path().join("restored");
        let opts = RestoreOptions {
            target: target.clone(),
            subpath: None,
            include: Vec::new(),
            verify: true,
            workers: 2,
        };
        let out = restore(&repo, &index, &snaps[0], &opts, &RestoreProgress::default())
            .await
            .unwrap();
        assert_eq!(out.outcome(), crate::ops::Outcome::Ok, "{:?}", out.errors);
        let back = target.join(src.strip_prefix("/").unwrap());
        for f in ["sub/random.bin", "text.txt"] {
            assert_eq!(
                std::fs::read(src.join(f)).unwrap(),
                std::fs::read(back.join(f)).unwrap(),
                "{f}"
            );
        }
    }
}
