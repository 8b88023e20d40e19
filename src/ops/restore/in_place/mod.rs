//! `restore --in-place`: restore a snapshot over a live directory, with a
//! safety snapshot and an automatic rollback.
//!
//! The steps: compare the snapshot with the directory ([`compare`]); take
//! a backup of the directory tagged `pre-restore` on every replica; write
//! only what differs ([`apply`]); compare again to verify. If anything
//! fails on the way — a blob that cannot be read, a full disk, SIGTERM or
//! SIGINT — the directory is rolled back from the safety snapshot the same
//! way, and the report says whether that worked. A dry run stops after the
//! first comparison and changes nothing. See docs/restore.md.

mod apply;
mod compare;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::fs::Root;
use super::{make_plan, Plan, RestoreOptions, RestoreProgress, Writer};
use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::ops::backup::{backup, progress::Progress, BackupOptions};
use crate::ops::{ExitCode, Finding, Severity};
use crate::repo::{LockMode, MasterIndex, Repository, SnapshotEntry};
pub use apply::STAGE_PREFIX;
use apply::{Apply, Order};
use compare::Compare;
pub use compare::{Change, ChangeKind};

use crate::format::snapshot::SAFETY_TAG;

#[derive(Clone, Debug)]
pub struct InPlaceOptions {
    /// The directory restored over; it must exist.
    pub dir: PathBuf,
    /// Path inside the snapshot restored onto `dir`; None: the snapshot's
    /// only path (a snapshot of several paths needs one named).
    pub subpath: Option<String>,
    /// Remove what the directory has and the snapshot does not.
    pub delete: bool,
    /// Only compare and report; no safety snapshot, no change.
    pub dry_run: bool,
    /// List every entry in the report's `changes` (its `counts` are always
    /// there). Off, the report holds no entry by entry list: about a third
    /// of the memory of a large restore.
    pub list_changes: bool,
    pub workers: usize,
    pub allow_devices: bool,
    pub keep_setuid: bool,
}

impl InPlaceOptions {
    pub fn new(dir: PathBuf) -> InPlaceOptions {
        InPlaceOptions {
            dir,
            subpath: None,
            delete: false,
            dry_run: false,
            list_changes: true,
            workers: 2,
            allow_devices: false,
            keep_setuid: false,
        }
    }
}

/// How an in-place restore ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InPlaceOutcome {
    /// Nothing was changed: the report lists what would be.
    DryRun,
    /// The directory is as the snapshot has it, and verified.
    Restored,
    /// The restore failed (see `failure`); the directory was put back as
    /// the safety snapshot has it, and verified.
    RolledBack,
    /// The restore failed and so did the rollback (see `rollback_errors`):
    /// restore the safety snapshot by hand.
    RollbackFailed,
}

/// What each change happened to, counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChangeCounts {
    pub create: u64,
    pub update: u64,
    pub delete: u64,
    pub keep: u64,
    pub unchanged: u64,
}

/// The report of an in-place restore.
#[derive(Debug, Serialize)]
pub struct InPlaceReport {
    /// The snapshot restored.
    pub snapshot: Id,
    pub dir: PathBuf,
    pub outcome: InPlaceOutcome,
    /// The safety snapshot (`pre-restore`) of the directory as it was.
    pub safety_snapshot: Option<Id>,
    /// Counts of `changes`.
    pub counts: ChangeCounts,
    /// Every entry compared, in path order (planned, or done); empty when
    /// the options' `list_changes` is off.
    pub changes: Vec<Change>,
    /// Bytes of file content written by the restore.
    pub bytes_written: u64,
    /// Why the restore was rolled back.
    pub failure: Option<String>,
    /// What the restore could not do, one sentence per entry.
    pub errors: Vec<String>,
    /// What the rollback could not do (`rollback_failed`).
    pub rollback_errors: Vec<String>,
    /// Entries of the snapshot not restored as it has them (refused names,
    /// device nodes, cleared set-id bits), as a plain restore reports them.
    pub findings: Vec<Finding>,
}

impl InPlaceReport {
    /// 0 restored (or a dry run), 3 restored but entries refused, 7 rolled
    /// back, 8 rollback failed (docs/exit-codes.md).
    pub fn exit_code(&self) -> ExitCode {
        match self.outcome {
            InPlaceOutcome::RolledBack => ExitCode::RolledBack,
            InPlaceOutcome::RollbackFailed => ExitCode::RollbackFailed,
            _ if self.findings.iter().any(|f| f.severity == Severity::Error) => {
                ExitCode::Incomplete
            }
            _ => ExitCode::Ok,
        }
    }
}

/// Steps announced while an in-place restore runs.
#[derive(Clone, Debug)]
pub enum Phase {
    /// Backing up the directory as it is.
    SafetySnapshot,
    /// Writing the changes; the safety snapshot is saved.
    Restoring { safety: Id },
    /// Reading the directory back.
    Verifying,
    /// The restore failed for this reason; rolling back.
    RollingBack { reason: String },
}

/// Restore `spec` (`latest`, an id or a unique prefix; resolved before the
/// safety snapshot is taken) over `opts.dir`. An error means nothing in the
/// directory was changed; once it has been, the report says how it ended.
pub async fn restore_in_place(
    repo: &Repository,
    spec: &str,
    opts: &InPlaceOptions,
    progress: &RestoreProgress,
    phase: &(dyn Fn(Phase) + Sync),
) -> Result<InPlaceReport> {
    let dir = std::fs::canonicalize(&opts.dir).map_err(|e| Error::io(opts.dir.display(), e))?;
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: not a directory (--in-place restores over an existing directory)",
            dir.display()
        )));
    }
    let snaps = repo.list_snapshots().await?;
    let snap = Repository::find_snapshot(&snaps, spec)?.clone();
    let subpath = match &opts.subpath {
        Some(p) => p.clone(),
        None => match snap.snapshot.paths.as_slice() {
            [one] => one.clone(),
            paths => {
                return Err(Error::Invalid(format!(
                    "snapshot {} holds {} paths ({}): name the one to restore, as {}:PATH",
                    snap.id.short(),
                    paths.len(),
                    paths.join(", "),
                    snap.id.short()
                )))
            }
        },
    };
    let ropts = RestoreOptions {
        subpath: Some(subpath),
        workers: opts.workers.max(1),
        allow_devices: opts.allow_devices,
        keep_setuid: opts.keep_setuid,
        ..RestoreOptions::new(dir.clone())
    };
    let root = Root::open(&dir).map_err(|e| Error::io(dir.display(), e))?;
    let mut report = InPlaceReport {
        snapshot: snap.id,
        dir: dir.clone(),
        outcome: InPlaceOutcome::DryRun,
        safety_snapshot: None,
        counts: ChangeCounts::default(),
        changes: Vec::new(),
        bytes_written: 0,
        failure: None,
        errors: Vec::new(),
        rollback_errors: Vec::new(),
        findings: Vec::new(),
    };
    if opts.dry_run {
        let index = repo.load_index().await?;
        let mut plan = make_plan(repo, &index, &snap, &ropts, &root, None).await?;
        let diff = tokio::task::block_in_place(|| compare_with(repo, &root, &ropts, &plan));
        report.set_changes(&plan, &diff, opts);
        report.errors = std::mem::take(&mut plan.errors);
        report.findings = std::mem::take(&mut plan.findings);
        return Ok(report);
    }

    phase(Phase::SafetySnapshot);
    let safety = safety_snapshot(repo, &dir).await?;
    report.safety_snapshot = Some(safety);
    repo.with_lock(LockMode::Shared, "restore --in-place", async || {
        let index = repo.load_index().await?;
        let snaps = repo.list_snapshots().await?;
        let safety_entry = snaps
            .iter()
            .find(|s| s.id == safety)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("safety snapshot {safety} not found")))?;
        let mut plan = make_plan(repo, &index, &snap, &ropts, &root, None).await?;
        phase(Phase::Restoring { safety });
        let diff = tokio::task::block_in_place(|| compare_with(repo, &root, &ropts, &plan));
        report.set_changes(&plan, &diff, opts);
        report.errors = std::mem::take(&mut plan.errors);
        report.findings = std::mem::take(&mut plan.findings);

        let journal = Mutex::new(Vec::new());
        let w = writer(
            &root,
            &dir,
            &ropts,
            Some(&journal),
            Some(repo.cancel_token()),
        );
        let apply = Apply {
            repo,
            index: &index,
            w: &w,
            workers: ropts.workers,
            progress,
        };
        report.errors.extend(apply.run(
            &plan,
            &diff,
            Order::Restore {
                delete: opts.delete,
            },
        ));
        report.bytes_written = progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
        let failure = if repo.cancel_token().is_cancelled() {
            Some("interrupted (SIGINT or SIGTERM)".to_string())
        } else if let Some(e) = report.errors.first() {
            Some(match report.errors.len() {
                1 => e.clone(),
                n => format!("{e} (and {} more errors)", n - 1),
            })
        } else {
            phase(Phase::Verifying);
            let after = tokio::task::block_in_place(|| compare_with(repo, &root, &ropts, &plan));
            after
                .first_difference(&plan, opts.delete)
                .map(|p| format!("verification failed: {p} differs from the snapshot"))
        };
        let Some(reason) = failure else {
            report.outcome = InPlaceOutcome::Restored;
            return Ok(());
        };
        phase(Phase::RollingBack {
            reason: reason.clone(),
        });
        report.failure = Some(reason);
        let journal = journal.into_inner().unwrap();
        report.rollback_errors = rollback(repo, &index, &safety_entry, &dir, &root, &journal).await;
        report.outcome = if report.rollback_errors.is_empty() {
            InPlaceOutcome::RolledBack
        } else {
            InPlaceOutcome::RollbackFailed
        };
        Ok(())
    })
    .await?;
    Ok(report)
}

impl InPlaceReport {
    fn set_changes(&mut self, plan: &Plan, diff: &compare::Diff, opts: &InPlaceOptions) {
        self.counts = diff.counts(opts.delete);
        if opts.list_changes {
            self.changes = diff.changes(plan, opts.delete);
        }
    }
}

fn writer<'a>(
    root: &'a Root,
    dir: &'a Path,
    ropts: &RestoreOptions,
    journal: Option<&'a Mutex<Vec<PathBuf>>>,
    cancel: Option<&'a tokio_util::sync::CancellationToken>,
) -> Writer<'a> {
    Writer {
        root,
        target: dir,
        keep_setuid: ropts.keep_setuid,
        journal,
        staged: None,
        cancel,
    }
}

fn compare_with(
    repo: &Repository,
    root: &Root,
    ropts: &RestoreOptions,
    plan: &Plan,
) -> compare::Diff {
    let w = writer(root, &ropts.target, ropts, None, None);
    let perm = |n: &crate::format::tree::Node| w.perm(n);
    Compare {
        root,
        chunker: repo.chunker(),
        keyring: repo.keyring(),
        perm: &perm,
    }
    .diff(plan)
}

/// Back up `dir` as it is, tagged `pre-restore`; its id once it is saved.
async fn safety_snapshot(repo: &Repository, dir: &Path) -> Result<Id> {
    let mut bo = BackupOptions::new(vec![dir.to_path_buf()]);
    bo.tags = vec![SAFETY_TAG.to_string()];
    let progress = Arc::new(Progress::new(
        repo.replicas().iter().map(|r| r.name.clone()),
    ));
    let out = backup(repo, &bo, progress).await?;
    if out.interrupted {
        return Err(Error::Interrupted);
    }
    let not_saved = |why: String| {
        Error::Source(format!(
            "the safety snapshot of {} could not be saved ({why}); nothing was changed",
            dir.display()
        ))
    };
    if let Some(e) = &out.source_error {
        return Err(not_saved(e.to_string()));
    }
    if out.snapshot.partial {
        return Err(not_saved(format!(
            "some files could not be read: {}",
            out.snapshot.errors.join("; ")
        )));
    }
    let failed: Vec<String> = out
        .replicas
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name)))
        .collect();
    match out.id {
        Some(id) if failed.is_empty() => Ok(id),
        _ => Err(not_saved(format!("failed on {}", failed.join("; ")))),
    }
}

/// Put `dir` back as the safety snapshot has it, and check it; what could
/// not be put back, one sentence per entry (empty: rolled back).
async fn rollback(
    repo: &Repository,
    index: &MasterIndex,
    safety: &SnapshotEntry,
    dir: &Path,
    root: &Root,
    journal: &[PathBuf],
) -> Vec<String> {
    // The directory's own state: devices and set-id bits as they were.
    let ropts = RestoreOptions {
        subpath: Some(dir.to_string_lossy().into_owned()),
        allow_devices: true,
        keep_setuid: true,
        ..RestoreOptions::new(dir.to_path_buf())
    };
    let plan = match make_plan(repo, index, safety, &ropts, root, None).await {
        Ok(p) => p,
        Err(e) => return vec![format!("safety snapshot {}: {e}", safety.id.short())],
    };
    let mut errors = plan.errors.clone();
    let diff = tokio::task::block_in_place(|| compare_with(repo, root, &ropts, &plan));
    let w = writer(root, dir, &ropts, None, None);
    let progress = RestoreProgress::default();
    let apply = Apply {
        repo,
        index,
        w: &w,
        workers: 2,
        progress: &progress,
    };
    errors.extend(apply.run(&plan, &diff, Order::Rollback { journal }));
    let after = tokio::task::block_in_place(|| compare_with(repo, root, &ropts, &plan));
    if errors.is_empty() && !after.is_clean(true) {
        for c in after.changes(&plan, true) {
            if c.change != ChangeKind::Unchanged {
                errors.push(format!(
                    "{}: still differs from the safety snapshot",
                    c.path
                ));
            }
        }
    }
    errors
}
