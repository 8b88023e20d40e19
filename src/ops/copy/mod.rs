//! `copy`: copy snapshots into another repository, one with its own
//! keyring (id key, chunker key, data keys) — the answer to a suspected
//! compromise of the whole keyring.
//!
//! Nothing is copied as bytes: every blob a copied snapshot references is
//! read and authenticated with the source's keys, re-chunked with the
//! target's chunker (so later backups into the target deduplicate against
//! it), identified with the target's id key and sealed with its data key by
//! the backup's own blob store, which deduplicates against the target's
//! index and fans the packs out to every target replica. Trees are rebuilt
//! with the new ids, and each snapshot is written with its original
//! metadata plus `original`, the source snapshot's id, so a second run
//! skips what is already copied.
//!
//! Each snapshot is a unit with the backup's write ordering (packs, index
//! files, snapshot): an interrupted or failed run leaves the target
//! consistent, and a rerun continues with the snapshots not yet copied.

mod content;
pub mod plan;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::ops::backup::fanout::FanOut;
use crate::ops::backup::progress::Progress;
use crate::ops::backup::store::{BlobStore, StoreConfig};
use crate::ops::forget::SnapshotFilter;
use crate::ops::Outcome;
use crate::repo::{LockMode, MasterIndex, ReplicaSet, Repository, SnapshotEntry};
use content::{Copier, CopyError, ParentCopy};

/// What to copy and how.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Source snapshots (ids, unique prefixes or `latest`); none: every
    /// snapshot `filter` selects.
    pub snapshots: Vec<String>,
    pub filter: SnapshotFilter,
    /// Compressor threads.
    pub workers: usize,
    /// Packs queued per target replica before the copy waits for it.
    pub queue: usize,
    /// Concurrent uploads per target replica.
    pub connections: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        CopyOptions {
            snapshots: Vec::new(),
            filter: SnapshotFilter::default(),
            workers: cores,
            queue: 2,
            connections: 2,
        }
    }
}

/// One source snapshot this run copied (or tried to).
#[derive(Debug, Serialize)]
pub struct CopiedSnapshot {
    pub source: Id,
    /// The copy's id; none when no target replica got it.
    pub target: Option<Id>,
    pub time: jiff::Timestamp,
    /// Target replicas that hold the copy.
    pub replicas: Vec<String>,
    /// Files copied (whose content was read, or taken over from an
    /// identical file copied before in this run).
    pub files: u64,
    /// Plaintext bytes read from the source.
    pub bytes_read: u64,
    /// Blobs the target did not hold yet.
    pub blobs_new: u64,
    /// Stored (compressed, encrypted) bytes of those blobs' packs.
    pub bytes_stored: u64,
    /// Why the snapshot was not copied: a source tree or blob that could
    /// not be read (no target replica got the snapshot).
    pub error: Option<String>,
}

/// A source snapshot the target already holds a copy of.
#[derive(Debug, Serialize)]
pub struct SkippedSnapshot {
    pub source: Id,
    pub target: Id,
}

/// How one target replica fared over the whole run.
#[derive(Debug, Serialize)]
pub struct TargetReplica {
    pub name: String,
    /// The first error that made it miss a snapshot.
    pub error: Option<String>,
    /// Snapshots written to it.
    pub snapshots: u64,
    pub packs: u64,
    pub bytes: u64,
}

/// The result of a copy run.
#[derive(Debug, Serialize)]
pub struct CopyReport {
    pub source_repository: Id,
    pub target_repository: Id,
    pub copied: Vec<CopiedSnapshot>,
    pub skipped: Vec<SkippedSnapshot>,
    pub replicas: Vec<TargetReplica>,
    /// Target replicas given that could not be used at all.
    pub unusable: Vec<String>,
    /// Stopped by a cancellation; snapshots not listed in `copied` with a
    /// target id were not copied.
    pub interrupted: bool,
    pub seconds: f64,
}

impl CopyReport {
    /// Interrupted; a source snapshot unreadable (damaged); a target
    /// replica that missed a snapshot; nothing written anywhere; or ok.
    pub fn outcome(&self) -> Outcome {
        let failed: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.error.is_some())
            .map(|r| r.name.clone())
            .chain(self.unusable.iter().cloned())
            .collect();
        let mut o = Outcome::Ok;
        if self.interrupted {
            o = o.worst(Outcome::Interrupted);
        }
        if self.copied.iter().any(|c| c.error.is_some()) {
            o = o.worst(Outcome::Damaged);
        }
        let written = self.copied.iter().filter(|c| c.target.is_some()).count();
        if written == 0 && self.copied.iter().any(|c| c.error.is_none()) && !self.interrupted {
            o = o.worst(Outcome::Failed);
        } else if !failed.is_empty() {
            o = o.worst(Outcome::Partial { replicas: failed });
        }
        o
    }

    /// Snapshots written to at least one target replica.
    pub fn written(&self) -> usize {
        self.copied.iter().filter(|c| c.target.is_some()).count()
    }
}

/// Copy the snapshots `opts` selects from `source` into `target`, a
/// different repository, on every target replica. The run is recorded in
/// both repositories' audit trails.
pub async fn copy(
    source: &Repository,
    target: &Repository,
    opts: &CopyOptions,
    progress: Arc<Progress>,
) -> Result<CopyReport> {
    let (sid, tid) = (source.config().id, target.config().id);
    if sid == tid {
        return Err(plan::same_repository(sid));
    }
    let res = run(source, target, opts, progress).await;
    let (outcome, counts) = match &res {
        Ok(r) => (
            match r.outcome() {
                Outcome::Ok => "ok".to_string(),
                o => serde_json::to_value(&o)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "failed".into()),
            },
            format!(
                "{} snapshots copied, {} skipped",
                r.written(),
                r.skipped.len()
            ),
        ),
        Err(e) => (format!("failed: {}", crate::error::chain(e)), String::new()),
    };
    for (repo, detail) in [
        (source, format!("to repository {}; {counts}", tid.to_hex())),
        (
            target,
            format!("from repository {}; {counts}", sid.to_hex()),
        ),
    ] {
        if let Err(e) = crate::ops::audit::record(repo, "copy", &detail, &outcome).await {
            // The copy's own result matters more; a missing entry shows as
            // a gap at the next `key audit`.
            tracing::warn!("copy: could not write the audit entry: {e}");
        }
    }
    res
}

async fn run(
    source: &Repository,
    target: &Repository,
    opts: &CopyOptions,
    progress: Arc<Progress>,
) -> Result<CopyReport> {
    let started = Instant::now();
    let src_lock = source.lock(LockMode::Shared, "copy").await?;
    // The lock a backup takes: an exclusive command on the target (which
    // may delete what is not referenced yet) waits for the copy.
    let dst_lock = match target.lock(LockMode::Shared, "copy").await {
        Ok(l) => l,
        Err(e) => {
            src_lock.release().await;
            return Err(e);
        }
    };
    let res = copy_locked(source, target, opts, &progress, started).await;
    dst_lock.release().await;
    src_lock.release().await;
    res
}

async fn copy_locked(
    source: &Repository,
    target: &Repository,
    opts: &CopyOptions,
    progress: &Arc<Progress>,
    started: Instant,
) -> Result<CopyReport> {
    let src_snaps = source.list_snapshots().await?;
    let dst_snaps = target.list_snapshots().await?;
    let plan = plan::plan(&src_snaps, &dst_snaps, &opts.snapshots, &opts.filter)?;
    let src_index = source.load_index().await?;
    let mut dst_index = Some(target.load_index().await?);
    let by_id: HashMap<Id, &SnapshotEntry> = src_snaps.iter().map(|s| (s.id, s)).collect();
    let mut copies = plan.copies.clone();
    // Root trees of the target's snapshots, for the parents' copies.
    let mut dst_trees: HashMap<Id, Vec<Id>> = dst_snaps
        .iter()
        .map(|s| (s.id, s.snapshot.tree.clone()))
        .collect();
    let mut report = CopyReport {
        source_repository: source.config().id,
        target_repository: target.config().id,
        copied: Vec::new(),
        skipped: plan
            .skip
            .iter()
            .map(|&(source, target)| SkippedSnapshot { source, target })
            .collect(),
        replicas: target
            .replicas()
            .iter()
            .map(|r| TargetReplica {
                name: r.name.clone(),
                error: None,
                snapshots: 0,
                packs: 0,
                bytes: 0,
            })
            .collect(),
        unusable: target
            .unavailable()
            .iter()
            .map(|u| u.name.clone())
            .collect(),
        interrupted: false,
        seconds: 0.0,
    };
    let mut copier = Copier::new(source, &src_index, target, progress);
    for id in &plan.copy {
        if source.cancel_token().is_cancelled() {
            report.interrupted = true;
            break;
        }
        // Every target replica failed: the rest would be written nowhere.
        if progress.replicas.iter().all(|r| r.failed.load(Relaxed)) {
            break;
        }
        let entry = by_id[id];
        *progress.current.lock().unwrap() = format!("snapshot {}", id.short());
        let parent_roots = entry.snapshot.parent.and_then(|p| {
            let src = by_id.get(&p)?.snapshot.tree.clone();
            let dst = dst_trees.get(copies.get(&p)?)?.clone();
            Some((src, dst))
        });
        let (index, done) = copy_one(
            &mut copier,
            dst_index.take().expect("the index is put back"),
            entry,
            parent_roots,
            &copies,
            opts,
            progress,
        )
        .await;
        dst_index = Some(index);
        let (copied, outcome, tree) = done;
        for (r, o) in report.replicas.iter_mut().zip(&outcome.replicas) {
            if let (Some(e), None) = (&o.error, &r.error) {
                r.error = Some(crate::error::chain(e));
            }
            r.packs = o.packs;
            r.bytes = o.bytes;
            if copied.replicas.contains(&r.name) {
                r.snapshots += 1;
            }
        }
        if let (Some(t), Some(tree)) = (copied.target, &tree) {
            copies.insert(*id, t);
            dst_trees.insert(t, tree.clone());
        }
        let interrupted = outcome.interrupted && copied.error.is_none();
        report.copied.push(copied);
        if interrupted {
            report.interrupted = true;
            break;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Copy one snapshot: its blobs through a fresh store (so its packs are
/// durable before its index files and snapshot are written), then the
/// snapshot. `parent_roots` are the root trees of the snapshot's parent
/// and of the parent's copy, when the target holds one. Returns the target
/// index with this snapshot's packs added for the replicas that hold them,
/// and the copy's root tree.
#[allow(clippy::type_complexity)]
async fn copy_one(
    copier: &mut Copier<'_>,
    index: MasterIndex,
    entry: &SnapshotEntry,
    parent_roots: Option<(Vec<Id>, Vec<Id>)>,
    copies: &HashMap<Id, Id>,
    opts: &CopyOptions,
    progress: &Arc<Progress>,
) -> (
    MasterIndex,
    (
        CopiedSnapshot,
        crate::ops::backup::BackupOutcome,
        Option<Vec<Id>>,
    ),
) {
    let target = copier.target;
    let before = (
        progress.files.load(Relaxed),
        progress.bytes_read.load(Relaxed),
        progress.blobs_new.load(Relaxed),
    );
    // A replica that failed earlier in this run gets nothing more: its
    // fan-out queue skips it (the flag is shared by the run), so it must
    // not get this snapshot's index files or snapshot either, and the
    // store deduplicates against the replicas still in the run only.
    let failed_before: ReplicaSet = (0..target.replicas().len())
        .filter(|&i| progress.replicas[i].failed.load(Relaxed))
        .collect();
    let index = Arc::new(index);
    let rt = tokio::runtime::Handle::current();
    let fan = FanOut::start(
        &rt,
        target.replicas(),
        opts.queue,
        opts.connections,
        progress.clone(),
    );
    let store = BlobStore::new(
        target.shared_keyring(),
        index.clone(),
        StoreConfig {
            targets: target.all().difference(failed_before),
            level: target.config().compression_level,
            pack_size: target.config().pack_size as usize,
            workers: opts.workers,
        },
        fan,
        progress.clone(),
    );
    let parent = parent_roots.map(|(src_root, dst_root)| ParentCopy {
        src_root,
        dst_root,
        dst_index: &index,
    });
    let walked = tokio::task::block_in_place(|| {
        copier.copy_tree(&entry.snapshot.tree, parent.as_ref(), &store)
    });
    drop(parent);
    let (written, fan) = tokio::task::block_in_place(|| store.finish());
    let mut upload_errors = fan.finish().await;
    for i in failed_before.iter() {
        upload_errors[i] = Some(Error::Invalid(format!(
            "{}: left out after an earlier failure in this run",
            target.replica(i).name
        )));
    }
    let s = &entry.snapshot;
    let (tree, error, stop) = match walked {
        Ok(t) => (t, None, false),
        Err(CopyError::Source(msg)) => (Vec::new(), Some(msg), true),
        Err(CopyError::Interrupted) => (Vec::new(), None, true),
    };
    let root = (!stop).then(|| tree.clone());
    let snapshot = Snapshot {
        parent: plan::map_parent(s.parent, copies),
        tree,
        original: Some(entry.id),
        ..s.clone()
    };
    // With `stop`, the packs' index files are still written (a rerun
    // reuses them) but not the snapshot.
    let outcome =
        crate::ops::backup::publish(target, &written, &snapshot, upload_errors, stop, progress)
            .await;
    let mut index = Arc::try_unwrap(index)
        .ok()
        .expect("the store that shared the index is finished");
    for (i, r) in outcome.replicas.iter().enumerate() {
        if r.error.is_none() {
            index.add(i, &written);
        }
    }
    let copied = CopiedSnapshot {
        source: entry.id,
        target: if stop { None } else { outcome.id },
        time: s.time,
        replicas: outcome
            .replicas
            .iter()
            .filter(|r| r.error.is_none() && !stop)
            .map(|r| r.name.clone())
            .collect(),
        files: progress.files.load(Relaxed) - before.0,
        bytes_read: progress.bytes_read.load(Relaxed) - before.1,
        blobs_new: progress.blobs_new.load(Relaxed) - before.2,
        bytes_stored: written.iter().map(|p| p.size).sum(),
        error,
    };
    (index, (copied, outcome, root))
}
