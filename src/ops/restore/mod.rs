//! `restore`: recreate a snapshot (or part of it) under a target directory.
//!
//! The tree is walked first to create directories and collect files; files
//! are then written by a pool of threads, each blob read from any replica
//! that holds it and authenticated; a file whose data cannot be read is
//! named in the report and the rest of the restore goes on. Directory
//! metadata is applied last, deepest first, so writing children does not
//! disturb their parents' mtimes.
//!
//! Restore is confined to its target ([`fs`]): entries whose names could
//! leave their directory are refused by the walker and named in the report;
//! nothing is created, opened or changed through a symlink; device nodes
//! and set-user/group-id bits are restored only when asked for
//! (`allow_devices`, `keep_setuid`). See docs/restore.md.

#[doc(hidden)]
pub mod forge;
mod fs;
pub mod in_place;

use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::tree::{escape_bytes, validate_name, Node, NodeKind, Refused};
use crate::ops::{Finding, Problem, Severity};
use crate::repo::{MasterIndex, TreeWalker, Visit, Visitor};
use crate::repo::{Repository, SnapshotEntry};
use fs::Root;

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
    /// Create device nodes (as root); otherwise they are skipped and
    /// reported.
    pub allow_devices: bool,
    /// Keep set-user-id and set-group-id bits of files; otherwise they are
    /// cleared and reported.
    pub keep_setuid: bool,
    /// Files planned before they are restored, at most ([`BATCH_FILES`]);
    /// their blobs are bounded at eight times as many.
    pub batch_files: usize,
}

impl RestoreOptions {
    /// Everything of the snapshot into `target`, with the safe defaults.
    pub fn new(target: PathBuf) -> RestoreOptions {
        RestoreOptions {
            target,
            subpath: None,
            include: Vec::new(),
            verify: false,
            workers: 2,
            allow_devices: false,
            keep_setuid: false,
            batch_files: BATCH_FILES,
        }
    }
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
    /// Entries not restored as the snapshot has them: refused names and
    /// device nodes (errors), cleared set-id bits (warnings).
    pub findings: Vec<Finding>,
}

impl RestoreOutcome {
    /// Incomplete when something could not be restored, or was refused or
    /// skipped; cleared set-id bits alone do not make it so.
    pub fn outcome(&self) -> crate::ops::Outcome {
        let refused = self.findings.iter().any(|f| f.severity == Severity::Error);
        if self.errors.is_empty() && !refused {
            crate::ops::Outcome::Ok
        } else {
            crate::ops::Outcome::Incomplete
        }
    }
}

/// A path below the target, made of checked names only.
struct FileItem {
    path: PathBuf,
    node: Node,
    /// Where the content is written before it is renamed to `path`, in
    /// the same directory (in-place restores: the file there stays whole
    /// until the new one is complete); None writes `path` directly.
    stage: Option<PathBuf>,
}

impl FileItem {
    /// The path the content is written to.
    fn write_path(&self) -> &Path {
        self.stage.as_deref().unwrap_or(&self.path)
    }
}

struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<FileItem>,
    others: Vec<(PathBuf, Node)>,
    /// Directories whose contents could not be read from the repository.
    errors: Vec<String>,
    findings: Vec<Finding>,
    /// Whether a directory is restored (not a single file or symlink).
    whole_dir: bool,
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
        validate_name(c.as_bytes()).map_err(|e| Error::Invalid(format!("{subpath}: {e}")))?;
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

/// Walk the part of `snap` that `opts` selects into a plan of entries
/// below `root`.
///
/// With `batch`, the plan is handed to it whenever it holds
/// `opts.batch_files` files or eight times as many blobs of them, and it takes
/// the files out: memory then stays bounded whatever the number of files.
/// Without, the plan holds every entry (an in-place restore compares the
/// whole of it with the directory first).
async fn make_plan(
    repo: &Repository,
    index: &MasterIndex,
    snap: &SnapshotEntry,
    opts: &RestoreOptions,
    root: &Root,
    batch: Option<&mut (dyn FnMut(&mut Plan) + Send)>,
) -> Result<Plan> {
    let filter = includes(&opts.include)?;
    let sub = opts.subpath.clone().unwrap_or_default();
    let (node, tree_ids) = locate(repo, index, &snap.snapshot.tree, &sub).await?;
    let mut plan = Plan {
        dirs: Vec::new(),
        files: Vec::new(),
        others: Vec::new(),
        errors: Vec::new(),
        findings: Vec::new(),
        whole_dir: true,
    };
    let snap_base = PathBuf::from("/").join(sub.trim_start_matches('/'));
    let short = snap.id.short();
    match node {
        Some(n) if n.kind != NodeKind::Dir => {
            let dest = PathBuf::from(std::ffi::OsStr::from_bytes(&n.name.0));
            plan.whole_dir = false;
            add_node(&mut plan, dest, n, &snap_base, &short, opts);
        }
        _ => {
            let mut v = Planner {
                root,
                target: &opts.target,
                snap_base: &snap_base,
                snapshot: &short,
                opts,
                filter: filter.as_ref(),
                plan: &mut plan,
                failed: None,
                batch,
                pieces: 0,
            };
            TreeWalker::new(repo, index)
                .walk(&tree_ids, &snap_base, &mut v)
                .await;
            if let Some(e) = v.failed {
                return Err(e);
            }
        }
    }
    Ok(plan)
}

/// Restore `snap` according to `opts`.
pub async fn restore(
    repo: &Repository,
    index: &MasterIndex,
    snap: &SnapshotEntry,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreOutcome> {
    let root = Root::open(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?;
    let target = opts.target.as_path();
    let shown = |rel: &Path| escape_bytes(target.join(rel).as_os_str().as_bytes());
    // The whole snapshot's totals are in its summary; a part of it is
    // counted as it is planned.
    let whole = opts.include.is_empty()
        && opts
            .subpath
            .as_deref()
            .is_none_or(|p| p.trim_matches('/').is_empty());
    if whole {
        let s = &snap.snapshot.summary;
        progress
            .total_files
            .store(s.files_new + s.files_changed + s.files_unmodified, Relaxed);
        progress.total_bytes.store(s.total_bytes, Relaxed);
    }
    let errors = Mutex::new(Vec::new());
    let rt = tokio::runtime::Handle::current();
    let w = Writer {
        root: &root,
        target,
        keep_setuid: opts.keep_setuid,
        journal: None,
        staged: None,
        cancel: None,
    };
    let mut dir_errors = Vec::new();
    let mut verified = (0u64, Vec::new());
    let mut dirs_made = 0;
    // Each batch: the directories planned so far (every file's parent is
    // planned before it), then the files, read pack by pack.
    let mut run_batch = |plan: &mut Plan| {
        for (p, _) in &plan.dirs[dirs_made..] {
            if let Err(e) = root.mkdir_all(p) {
                dir_errors.push(format!("{}: {e}", shown(p)));
            }
        }
        dirs_made = plan.dirs.len();
        if !whole {
            progress
                .total_files
                .fetch_add(plan.files.len() as u64, Relaxed);
            progress
                .total_bytes
                .fetch_add(plan.files.iter().map(|f| f.node.size).sum(), Relaxed);
        }
        tokio::task::block_in_place(|| {
            restore_files(
                repo,
                index,
                &rt,
                &w,
                &plan.files,
                opts.workers.max(1),
                progress,
                &errors,
            )
        });
        if opts.verify {
            for f in &plan.files {
                match verify_file(repo, index, &root, f) {
                    Ok(()) => verified.0 += 1,
                    Err(e) => verified
                        .1
                        .push(format!("{}: verification failed: {e}", shown(&f.path))),
                }
            }
        }
        plan.files.clear();
    };
    let mut plan = make_plan(repo, index, snap, opts, &root, Some(&mut run_batch)).await?;
    run_batch(&mut plan);
    let mut outcome = RestoreOutcome {
        errors: std::mem::take(&mut plan.errors),
        findings: std::mem::take(&mut plan.findings),
        verified_files: verified.0,
        ..Default::default()
    };
    outcome.errors.extend(dir_errors);
    outcome.errors.extend(errors.into_inner().unwrap());
    outcome.errors.extend(verified.1);
    for (p, n) in &plan.others {
        let res = match create_other(&root, p, n) {
            Ok(true) => root.set_meta(p, n, w.perm(n)),
            // Not created (a socket, or a device without root): no metadata.
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            outcome.errors.push(format!("{}: {e}", shown(p)));
        }
    }
    for (p, n) in plan.dirs.iter().rev() {
        if let Err(e) = root.set_meta(p, n, w.perm(n)) {
            outcome.errors.push(format!("{}: {e}", shown(p)));
        }
    }
    outcome.files = progress.files.load(Relaxed);
    outcome.dirs = plan.dirs.len() as u64;
    outcome.bytes = progress.bytes.load(Relaxed);
    Ok(outcome)
}

/// Where files go and which mode bits they get.
#[derive(Clone, Copy)]
struct Writer<'a> {
    root: &'a Root,
    target: &'a Path,
    keep_setuid: bool,
    /// Staged files, in the order they were renamed into place.
    journal: Option<&'a Mutex<Vec<PathBuf>>>,
    /// When set, a staged file written in full is recorded here (staged
    /// path, final path) instead of being synced and renamed at once; the
    /// caller syncs the whole batch and renames it (`in_place::apply`).
    staged: Option<&'a Mutex<Vec<(PathBuf, PathBuf)>>>,
    /// Once cancelled, no further pack is read (files not finished keep
    /// only their staged copy, for the caller to remove).
    cancel: Option<&'a tokio_util::sync::CancellationToken>,
}

impl Writer<'_> {
    fn shown(&self, rel: &Path) -> String {
        escape_bytes(self.target.join(rel).as_os_str().as_bytes())
    }

    /// The permission bits to give `n`: set-user/group-id bits only when
    /// asked for (a directory's set-group-id only picks the group of new
    /// entries, and is kept).
    fn perm(&self, n: &Node) -> u32 {
        let perm = n.mode & 0o7777;
        if self.keep_setuid || n.kind == NodeKind::Dir {
            perm
        } else {
            perm & !0o6000
        }
    }
}

/// Put `n` (restored at `dest`, below the target) into the plan, or
/// report why it is not restored as it is.
fn add_node(
    plan: &mut Plan,
    dest: PathBuf,
    n: Node,
    snap_path: &Path,
    snapshot: &str,
    opts: &RestoreOptions,
) {
    let shown = escape_bytes(snap_path.as_os_str().as_bytes());
    let is_device = matches!(n.kind, NodeKind::Chardev | NodeKind::Blockdev);
    if is_device && !opts.allow_devices {
        plan.findings.push(
            Finding::error(
                Problem::NotRestored,
                format!("{shown}: device node not restored (use --allow-devices)"),
            )
            .at(snapshot, &shown),
        );
        return;
    }
    if !opts.keep_setuid && n.kind != NodeKind::Dir && n.mode & 0o6000 != 0 {
        plan.findings.push(
            Finding::warning(
                Problem::ModeCleared,
                format!("{shown}: set-user/group-id bits cleared (use --keep-setuid)"),
            )
            .at(snapshot, &shown),
        );
    }
    match n.kind {
        NodeKind::File => plan.files.push(FileItem {
            path: dest,
            node: n,
            stage: None,
        }),
        NodeKind::Dir => plan.dirs.push((dest, n)),
        _ => plan.others.push((dest, n)),
    }
}

/// Collects everything below the restored directory into the plan.
struct Planner<'a, 'b> {
    root: &'a Root,
    target: &'a Path,
    snap_base: &'a Path,
    snapshot: &'a str,
    opts: &'a RestoreOptions,
    filter: Option<&'a GlobSet>,
    plan: &'a mut Plan,
    /// A parent directory that could not be created ends the restore.
    failed: Option<Error>,
    /// Where full batches of files go (see [`make_plan`]).
    batch: Option<&'a mut (dyn FnMut(&mut Plan) + Send + 'b)>,
    /// Blobs of the files in the plan.
    pieces: usize,
}

/// Files planned before they are restored, at most (see [`make_plan`]):
/// with each file's blob list, a few hundred bytes per file. The blobs of
/// the planned files (about 80 bytes each to plan) are bounded at eight
/// times as many.
pub const BATCH_FILES: usize = 8192;

impl Planner<'_, '_> {
    /// The path below the target for a path of the snapshot.
    fn dest(&self, snap_path: &Path) -> PathBuf {
        snap_path
            .strip_prefix(self.snap_base)
            .unwrap_or(snap_path)
            .to_path_buf()
    }
}

impl Visitor for Planner<'_, '_> {
    fn unreadable(&mut self, path: &Path, _: &[Id], e: &Error) {
        // A directory whose tree is damaged or missing is named and
        // skipped; the rest of the snapshot is still restored.
        let d = self.target.join(self.dest(path));
        self.plan.errors.push(format!(
            "{}: directory contents cannot be restored: {e}",
            escape_bytes(d.as_os_str().as_bytes())
        ));
    }

    fn refused(&mut self, dir: &Path, r: &Refused) {
        let dir = escape_bytes(dir.as_os_str().as_bytes());
        let name = r.name.escaped();
        self.plan.findings.push(
            Finding::error(
                Problem::RefusedEntry,
                format!("refused entry \"{name}\" in {dir}: {}", r.reason),
            )
            .at(self.snapshot, &dir),
        );
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
                    if let Err(e) = self.root.mkdir_all(parent) {
                        let shown = self.target.join(parent);
                        self.failed =
                            Some(Error::io(escape_bytes(shown.as_os_str().as_bytes()), e));
                        return Visit::Skip;
                    }
                }
            }
            add_node(self.plan, d, n.clone(), sp, self.snapshot, self.opts);
            if n.kind == NodeKind::File {
                self.pieces += n.content.len();
            }
            if let Some(batch) = self.batch.as_mut() {
                let most = self.opts.batch_files.max(1);
                if self.plan.files.len() >= most || self.pieces >= most * 8 {
                    batch(self.plan);
                    self.pieces = 0;
                }
            }
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
#[allow(clippy::too_many_arguments)]
fn restore_files(
    repo: &Repository,
    index: &MasterIndex,
    rt: &tokio::runtime::Handle,
    w: &Writer,
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
                    offset += loc.raw_len() as u64;
                }
                None => {
                    let mut slot = slots[i].lock().unwrap();
                    if !slot.failed {
                        slot.failed = true;
                        errors.lock().unwrap().push(format!(
                            "{}: blob {} is in no index",
                            w.shown(&f.path),
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
            finished(w, f, None, progress, errors);
        }
    }
    let packs: Vec<(u32, Vec<Piece>)> = by_pack.into_iter().collect();
    let next = Mutex::new(packs.into_iter());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if w.cancel.is_some_and(|c| c.is_cancelled()) {
                    break;
                }
                let Some((pack, mut pieces)) = next.lock().unwrap().next() else {
                    break;
                };
                pieces.sort_by_key(|p| p.loc.offset);
                for run in runs(&pieces) {
                    restore_run(
                        repo, index, rt, w, pack, run, files, &slots, progress, errors,
                    );
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
    w: &Writer,
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
        let res = blob.and_then(|b| write_piece(w, f, &mut slot, p.offset, &b).map(|()| b.len()));
        match res {
            Ok(n) => {
                progress.bytes.fetch_add(n as u64, Relaxed);
                slot.remaining -= 1;
                if slot.remaining == 0 {
                    finished(w, f, Some(slot.created), progress, errors);
                }
            }
            Err(e) => {
                slot.failed = true;
                errors
                    .lock()
                    .unwrap()
                    .push(format!("{}: {e}", w.shown(&f.path)));
            }
        }
    }
}

/// Write one blob into its file; the first write creates the file anew.
/// All-zero blobs are skipped so sparse files stay sparse.
fn write_piece(
    w: &Writer,
    f: &FileItem,
    slot: &mut FileSlot,
    offset: u64,
    data: &[u8],
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let zero = is_zero(data);
    if zero && slot.created {
        return Ok(());
    }
    let file = open_for_write(w, f, !slot.created)?;
    slot.created = true;
    if !zero {
        file.write_all_at(data, offset)
            .map_err(|e| Error::io(w.shown(&f.path), e))?;
    }
    Ok(())
}

/// Create the file (`fresh`) or open the one this restore created, never
/// through a symlink.
fn open_for_write(w: &Writer, f: &FileItem, fresh: bool) -> Result<File> {
    let r = if fresh {
        w.root.create_file(f.write_path())
    } else {
        w.root.open_file(f.write_path(), true)
    };
    r.map_err(|e| Error::io(w.shown(f.write_path()), e))
}

/// Finish `f` (see [`finish_file`]) and count it, or record why not.
fn finished(
    w: &Writer,
    f: &FileItem,
    created: Option<bool>,
    progress: &RestoreProgress,
    errors: &Mutex<Vec<String>>,
) {
    match finish_file(w, f, created) {
        Ok(()) => {
            progress.files.fetch_add(1, Relaxed);
        }
        Err(e) => errors.lock().unwrap().push(e.to_string()),
    }
}

/// Give a fully written file its length (holes at the end of sparse files)
/// and its metadata, on the open handle; a staged file is then flushed to
/// disk and renamed over its final path, or left to the caller for both
/// with its batch ([`Writer::staged`]). `created` is None for files with no
/// content at all.
fn finish_file(w: &Writer, f: &FileItem, created: Option<bool>) -> Result<()> {
    let file = open_for_write(w, f, !created.unwrap_or(false))?;
    let io = |e| Error::io(w.shown(&f.path), e);
    file.set_len(f.node.size).map_err(io)?;
    fs::set_meta_fd(&file, &f.node, w.perm(&f.node)).map_err(io)?;
    if let Some(stage) = &f.stage {
        if let Some(batch) = w.staged {
            batch.lock().unwrap().push((stage.clone(), f.path.clone()));
            return Ok(());
        }
        // Durable before it replaces the old file: a crash leaves the old
        // file or the whole new one, never a torn one.
        file.sync_all().map_err(io)?;
        w.root.rename(stage, &f.path).map_err(io)?;
        if let Some(j) = w.journal {
            j.lock().unwrap().push(f.path.clone());
        }
    }
    Ok(())
}

/// Whether `data` is all zero bytes. Compared a block at a time (memcmp),
/// not byte by byte: restoring a large sparse file checks gigabytes.
fn is_zero(data: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    data.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// Create a symlink, FIFO or device node; `Ok(false)` when the entry is
/// deliberately not created (devices were allowed by the planner).
fn create_other(root: &Root, p: &Path, n: &Node) -> std::io::Result<bool> {
    let kind = rustix::fs::FileType::from_raw_mode(n.mode);
    match n.kind {
        NodeKind::Symlink => {
            let t = n
                .target
                .as_ref()
                .map(|t| t.0.as_slice())
                .unwrap_or_default();
            root.symlink(p, t)?;
        }
        NodeKind::Fifo => root.mknod(p, rustix::fs::FileType::Fifo, 0o600, 0)?,
        NodeKind::Chardev | NodeKind::Blockdev if crate::sys::is_root() => {
            let want = if n.kind == NodeKind::Chardev {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            };
            if kind != want {
                return Err(std::io::Error::other("mode disagrees with the node type"));
            }
            root.mknod(p, want, 0o600, n.rdev)?
        }
        // Sockets cannot be restored meaningfully; devices need root.
        _ => return Ok(false),
    }
    Ok(true)
}

fn verify_file(repo: &Repository, index: &MasterIndex, root: &Root, f: &FileItem) -> Result<()> {
    let mut file = root
        .open_file(&f.path, false)
        .map_err(|e| Error::io(escape_bytes(f.path.as_os_str().as_bytes()), e))?;
    for id in &f.node.content {
        let (_, loc) = index
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("blob {} not in index", id.short())))?;
        let mut buf = vec![0u8; loc.raw_len() as usize];
        file.read_exact(&mut buf)
            .map_err(|e| Error::io(escape_bytes(f.path.as_os_str().as_bytes()), e))?;
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
        .map_err(|e| Error::io(escape_bytes(f.path.as_os_str().as_bytes()), e))?
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
            verify: true,
            ..RestoreOptions::new(target.clone())
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_restored_in_small_batches_come_back_whole_with_their_directories() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for d in 0..3 {
            let sub = src.join(format!("d{d}/deeper"));
            std::fs::create_dir_all(&sub).unwrap();
            for f in 0..7 {
                let body: Vec<u8> = (0..(f * 3000 + d)).map(|i| (i * 7 + f) as u8).collect();
                std::fs::write(sub.join(format!("f{f}")), body).unwrap();
            }
            std::fs::write(src.join(format!("d{d}/top.txt")), format!("top {d}")).unwrap();
        }
        let repo = init(memory_replicas(1)).await;
        backup_dir(&repo, &src).await;
        let index = repo.load_index().await.unwrap();
        let snaps = repo.list_snapshots().await.unwrap();
        for (name, include) in [("all", vec![]), ("some", vec!["**/d1/**".to_string()])] {
            let target = dir.path().join(name);
            let opts = RestoreOptions {
                verify: true,
                include: include.clone(),
                batch_files: 2,
                ..RestoreOptions::new(target.clone())
            };
            let progress = RestoreProgress::default();
            let out = restore(&repo, &index, &snaps[0], &opts, &progress)
                .await
                .unwrap();
            assert_eq!(out.outcome(), crate::ops::Outcome::Ok, "{:?}", out.errors);
            let want = if include.is_empty() { 24 } else { 8 };
            assert_eq!(out.files, want, "{name}");
            assert_eq!(out.verified_files, want, "{name}");
            assert_eq!(progress.total_files.load(Relaxed), want, "{name}");
            let back = target.join(src.strip_prefix("/").unwrap());
            for d in 0..3 {
                if !include.is_empty() && d != 1 {
                    assert!(!back.join(format!("d{d}")).exists());
                    continue;
                }
                for f in 0..7 {
                    let p = format!("d{d}/deeper/f{f}");
                    assert_eq!(
                        std::fs::read(src.join(&p)).unwrap(),
                        std::fs::read(back.join(&p)).unwrap(),
                        "{name} {p}"
                    );
                }
                // Directory times are set after their files were written.
                let m = |p: &Path| std::fs::metadata(p).unwrap().mtime();
                let sub = format!("d{d}/deeper");
                if include.is_empty() {
                    assert_eq!(m(&src.join(&sub)), m(&back.join(&sub)), "{sub}");
                }
            }
        }
    }
}
