//! Changing the directory into what a plan says, entry by entry, touching
//! only what the comparison found different.
//!
//! The order of writes is chosen so that a rollback never needs more space
//! than the restore freed: a file's new content is written next to it (a
//! temporary file in the same directory) and renamed over it only once
//! complete and on disk, so the old file stays whole until then; files not
//! finished are removed. Files are made durable in batches (up to
//! [`BATCH_FILES`] files or [`BATCH_BYTES`] bytes, one file-system sync each)
//! rather than one `fsync` at a time, which cost a journal commit per file;
//! a batch's old files are kept until the whole batch is on disk, so the
//! restore needs up to one batch of space more than the files it writes.
//! A rollback first removes what the restore added,
//! then puts replaced files back in the reverse order they were replaced,
//! one at a time (undoing the last replacement first needs at most the
//! space that replacement freed), and re-creates removed entries last.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::super::fs::Root;
use super::super::{create_other, restore_files, FileItem, Plan, RestoreProgress, Writer};
use super::compare::{ChangeKind, Diff, Status};
use crate::format::tree::escape_bytes;
use crate::repo::{MasterIndex, Repository};

/// The prefix of staged files; leftovers of a killed restore carry it.
pub const STAGE_PREFIX: &str = ".cairn-inplace-";

/// Staged files made durable by one file-system sync, at most.
pub const BATCH_FILES: usize = 1024;
/// Bytes of staged files made durable by one file-system sync, at most (a
/// larger file is a batch of its own).
pub const BATCH_BYTES: u64 = 64 << 20;

/// Which way the changes go.
pub(super) enum Order<'j> {
    /// The restore: files written in parallel, pack by pack; removals
    /// (with `delete`) after every write.
    Restore { delete: bool },
    /// The rollback, given the restore's journal of replaced files:
    /// removals first, then replaced files one at a time, newest first,
    /// then everything re-created.
    Rollback { journal: &'j [PathBuf] },
}

pub(super) struct Apply<'a> {
    pub repo: &'a Repository,
    pub index: &'a MasterIndex,
    pub w: &'a Writer<'a>,
    pub workers: usize,
    pub progress: &'a RestoreProgress,
}

fn wanted(s: &Status) -> bool {
    matches!(s.change, ChangeKind::Create | ChangeKind::Update)
}

impl Apply<'_> {
    fn shown(&self, rel: &Path) -> String {
        self.w.shown(rel)
    }

    /// Make the staged files `done` (staged path, final path) durable with
    /// one `sync` of the file system, then rename each into place and
    /// journal it; how many were renamed.
    fn publish(
        &self,
        sync: fn(&Root) -> std::io::Result<()>,
        done: Vec<(PathBuf, PathBuf)>,
        errors: &Mutex<Vec<String>>,
    ) -> usize {
        let root = self.w.root;
        if let Err(e) = sync(root) {
            let mut errors = errors.lock().unwrap();
            for (_, p) in &done {
                errors.push(format!("{}: cannot flush to disk: {e}", self.shown(p)));
            }
            return 0;
        }
        let mut renamed = 0;
        for (staged, path) in done {
            match root.rename(&staged, &path) {
                Ok(()) => {
                    renamed += 1;
                    if let Some(j) = self.w.journal {
                        j.lock().unwrap().push(path);
                    }
                }
                Err(e) => errors
                    .lock()
                    .unwrap()
                    .push(format!("{}: {e}", self.shown(&path))),
            }
        }
        renamed
    }

    /// Make the directory match `plan` where `diff` says it differs; the
    /// errors, one sentence per entry.
    pub fn run(&self, plan: &Plan, diff: &Diff, order: Order) -> Vec<String> {
        let mut errors = Vec::new();
        let root = self.w.root;
        let remove_extras = |errors: &mut Vec<String>| {
            for (p, _) in &diff.extras {
                if let Err(e) = root.remove_all(p) {
                    errors.push(format!("{}: cannot remove: {e}", self.shown(p)));
                }
            }
        };
        if matches!(order, Order::Rollback { .. }) {
            remove_extras(&mut errors);
        }
        // A directory where the snapshot has a file, symlink or FIFO.
        let in_the_way = plan
            .files
            .iter()
            .map(|f| &f.path)
            .zip(&diff.files)
            .chain(plan.others.iter().map(|(p, _)| p).zip(&diff.others));
        for (p, s) in in_the_way {
            if s.dir_in_the_way {
                if let Err(e) = root.remove_all(p) {
                    errors.push(format!("{}: cannot replace: {e}", self.shown(p)));
                }
            }
        }
        for ((p, _), s) in plan.dirs.iter().zip(&diff.dirs) {
            if wanted(s) {
                if let Err(e) = root.mkdir_all(p) {
                    errors.push(format!("{}: {e}", self.shown(p)));
                }
            }
        }
        // Indices into `plan.files`; a staged copy of each is made only for
        // the batch being written, so memory holds one batch of them.
        let wanted_files: Vec<usize> = (0..plan.files.len())
            .filter(|&i| wanted(&diff.files[i]))
            .collect();
        let stage = |idx: &[usize]| -> Vec<FileItem> {
            idx.iter().map(|&i| staged_item(&plan.files[i])).collect()
        };
        let file_errors = Mutex::new(Vec::new());
        let write_with = |w: &Writer, items: &[FileItem], workers: usize| {
            let rt = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| {
                restore_files(
                    self.repo,
                    self.index,
                    &rt,
                    w,
                    items,
                    workers,
                    self.progress,
                    &file_errors,
                )
            });
        };
        let cancelled = || self.w.cancel.is_some_and(|c| c.is_cancelled());
        // Write the files `idx` names, a batch at a time; where the file
        // system can be synced as a whole, one sync makes a batch durable
        // before any of its files is renamed into place.
        let write_batched = |idx: &[usize]| {
            for batch in batches(idx, |i| plan.files[i].node.size) {
                let items = stage(batch);
                let done = Mutex::new(Vec::new());
                let w = Writer {
                    staged: BATCH_SYNC.and(Some(&done)),
                    ..*self.w
                };
                write_with(&w, &items, self.workers);
                let done = done.into_inner().unwrap();
                let all_renamed = match BATCH_SYNC {
                    // Each file was synced and renamed as it was finished.
                    None => false,
                    // Not renamed: their staged copies go below.
                    Some(_) if cancelled() => false,
                    Some(sync) => self.publish(sync, done, &file_errors) == items.len(),
                };
                if !all_renamed {
                    remove_staged(root, &items);
                }
                if cancelled() {
                    return;
                }
            }
        };
        match &order {
            Order::Restore { .. } => {
                let files = wanted_files.iter().map(|&i| &plan.files[i]);
                self.progress
                    .total_files
                    .store(wanted_files.len() as u64, Relaxed);
                self.progress
                    .total_bytes
                    .store(files.map(|f| f.node.size).sum(), Relaxed);
                write_batched(&wanted_files);
            }
            Order::Rollback { journal } => {
                let (mut updates, creates): (Vec<usize>, Vec<usize>) = wanted_files
                    .into_iter()
                    .partition(|&i| diff.files[i].change == ChangeKind::Update);
                let rank: HashMap<&Path, usize> = journal
                    .iter()
                    .enumerate()
                    .map(|(n, p)| (p.as_path(), n))
                    .collect();
                // Newest replacement first; files the journal does not name
                // (not replaced by the restore) after them.
                updates.sort_by_key(|&i| {
                    std::cmp::Reverse(rank.get(plan.files[i].path.as_path()).copied())
                });
                for i in updates {
                    let one = stage(&[i]);
                    write_with(self.w, &one, 1);
                    remove_staged(root, &one);
                }
                write_batched(&creates);
            }
        }
        errors.extend(file_errors.into_inner().unwrap());
        for ((p, n), s) in plan.others.iter().zip(&diff.others) {
            if !wanted(s) {
                continue;
            }
            let res = match create_other(root, p, n) {
                Ok(true) => root.set_meta(p, n, self.w.perm(n)),
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                errors.push(format!("{}: {e}", self.shown(p)));
            }
        }
        if let Order::Restore { delete: true } = order {
            remove_extras(&mut errors);
        }
        // Every directory, deepest first: writing and removing entries
        // changed the times of directories that were otherwise unchanged.
        for (p, n) in plan.dirs.iter().rev() {
            if let Err(e) = root.set_meta(p, n, self.w.perm(n)) {
                errors.push(format!("{}: {e}", self.shown(p)));
            }
        }
        errors
    }
}

/// How a batch of staged files is made durable at once (`syncfs`), where
/// the file system can be synced as a whole; elsewhere None, and each file
/// is synced on its own before its rename.
#[cfg(any(target_os = "linux", target_os = "android"))]
const BATCH_SYNC: Option<fn(&Root) -> std::io::Result<()>> = Some(Root::sync_fs);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const BATCH_SYNC: Option<fn(&Root) -> std::io::Result<()>> = None;

/// `idx` cut into runs of at most [`BATCH_FILES`] files and [`BATCH_BYTES`]
/// bytes by `size` (a larger file alone).
fn batches(idx: &[usize], size: impl Fn(usize) -> u64) -> impl Iterator<Item = &[usize]> {
    let mut rest = idx;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0u64;
        let n = rest
            .iter()
            .take(BATCH_FILES)
            .position(|&i| {
                bytes += size(i);
                bytes > BATCH_BYTES
            })
            .map_or(rest.len().min(BATCH_FILES), |i| i.max(1));
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        Some(batch)
    })
}

/// `f`, to be written to a temporary file next to its path.
fn staged_item(f: &FileItem) -> FileItem {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{STAGE_PREFIX}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed)
    );
    let stage = match f.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(name),
        _ => PathBuf::from(name),
    };
    FileItem {
        path: f.path.clone(),
        node: f.node.clone(),
        stage: Some(stage),
    }
}

/// Remove the temporary files of files not finished (failed or stopped).
fn remove_staged(root: &Root, items: &[FileItem]) {
    for f in items {
        if let Some(s) = &f.stage {
            if let Err(e) = root.remove_all(s) {
                tracing::warn!(
                    "cannot remove temporary file {}: {e}",
                    escape_bytes(s.as_os_str().as_bytes())
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn batches_cover_every_file_once_within_the_limits(
            sizes in proptest::collection::vec(
                prop_oneof![0u64..5000, 0u64..(BATCH_BYTES * 2)], 0..3000)
        ) {
            let idx: Vec<usize> = (0..sizes.len()).collect();
            let got: Vec<&[usize]> = batches(&idx, |i| sizes[i]).collect();
            prop_assert_eq!(got.concat(), idx.clone());
            for b in &got {
                prop_assert!(!b.is_empty() && b.len() <= BATCH_FILES);
                let bytes: u64 = b.iter().map(|&i| sizes[i]).sum();
                prop_assert!(b.len() == 1 || bytes <= BATCH_BYTES, "{} files, {bytes} B", b.len());
            }
        }
    }
}
