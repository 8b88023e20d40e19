//! Changing the directory into what a plan says, entry by entry, touching
//! only what the comparison found different.
//!
//! The order of writes is chosen so that a rollback never needs more space
//! than the restore freed: a file's new content is written next to it (a
//! temporary file in the same directory) and renamed over it only once
//! complete and on disk, so the old file stays whole until then; files not
//! finished are removed. A rollback first removes what the restore added,
//! then puts replaced files back in the reverse order they were replaced,
//! one at a time (undoing the last replacement first needs at most the
//! space that replacement freed), and re-creates removed entries last.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::super::{create_other, restore_files, FileItem, Plan, RestoreProgress, Writer};
use super::compare::{ChangeKind, Diff, Status};
use crate::format::tree::escape_bytes;
use crate::repo::{MasterIndex, Repository};

/// The prefix of staged files; leftovers of a killed restore carry it.
pub const STAGE_PREFIX: &str = ".cairn-inplace-";

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
        let staged: Vec<(FileItem, ChangeKind)> = plan
            .files
            .iter()
            .zip(&diff.files)
            .filter(|(_, s)| wanted(s))
            .map(|(f, s)| (staged_item(f), s.change))
            .collect();
        let file_errors = Mutex::new(Vec::new());
        let write = |items: &[FileItem], workers: usize| {
            let rt = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| {
                restore_files(
                    self.repo,
                    self.index,
                    &rt,
                    self.w,
                    items,
                    workers,
                    self.progress,
                    &file_errors,
                )
            });
        };
        match &order {
            Order::Restore { .. } => {
                let items: Vec<FileItem> = staged.into_iter().map(|(f, _)| f).collect();
                self.progress.total_files.store(items.len() as u64, Relaxed);
                self.progress
                    .total_bytes
                    .store(items.iter().map(|f| f.node.size).sum(), Relaxed);
                write(&items, self.workers);
                remove_staged(root, &items);
            }
            Order::Rollback { journal } => {
                let (mut updates, creates): (Vec<_>, Vec<_>) = staged
                    .into_iter()
                    .partition(|(_, c)| *c == ChangeKind::Update);
                let rank = |p: &Path| journal.iter().rposition(|j| j == p);
                // Newest replacement first; files the journal does not name
                // (not replaced by the restore) after them.
                updates.sort_by_key(|(f, _)| std::cmp::Reverse(rank(&f.path)));
                for (f, _) in updates {
                    let one = std::slice::from_ref(&f);
                    write(one, 1);
                    remove_staged(root, one);
                }
                let items: Vec<FileItem> = creates.into_iter().map(|(f, _)| f).collect();
                write(&items, self.workers);
                remove_staged(root, &items);
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
fn remove_staged(root: &super::super::fs::Root, items: &[FileItem]) {
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
