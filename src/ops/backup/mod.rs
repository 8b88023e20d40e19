//! `backup`: read the source once, write every new blob to every replica.
//!
//! Threads: one walker (this thread), `readers` file readers, `workers`
//! compressors, one tree builder; the upload tasks run on the async runtime
//! (see [`fanout`]). Every queue between them is bounded, so memory depends
//! on the configuration, not on the data (see docs/architecture.md).

pub mod fanout;
pub mod progress;
pub mod source;
pub mod stages;
pub mod store;
pub mod stream;
pub mod walk;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use cairn_backends::Kind;
use crossbeam_channel::bounded;
use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::format::crypto::ObjectKind;
use crate::format::id::Id;
use crate::format::index::IndexPack;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::Tree;
use crate::ops::Outcome;
use crate::repo::MasterIndex;
use crate::repo::{seal_doc, LockMode, Repository};
use progress::Progress;
use source::Excludes;
use store::BlobStore;
use walk::{BuildCounts, ParentTrees, Walk};

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Absolute paths to back up (ignored with `stream`).
    pub paths: Vec<PathBuf>,
    /// Back up one stream (stdin, a command's output, a SQLite database)
    /// as one file instead of `paths`.
    pub stream: Option<stream::Stream>,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub host: String,
    /// Use this snapshot as parent instead of the automatic choice.
    pub parent: Option<Id>,
    /// The snapshot's time instead of now (imports, tests).
    pub time: Option<Timestamp>,
    /// Read every file even if the parent says it is unchanged.
    pub force: bool,
    pub readers: usize,
    pub workers: usize,
    /// Packs queued per replica before the backup waits for it.
    pub queue: usize,
    /// Concurrent uploads per replica; 0 (the default): per backend,
    /// [`fanout::LOCAL_UPLOADS`] on a local disk, [`fanout::REMOTE_UPLOADS`]
    /// over the network (see [`fanout::upload_connections`]).
    pub connections: usize,
    /// Time each pipeline stage ([`BackupOutcome::stages`]).
    pub profile_stages: bool,
}

impl BackupOptions {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BackupOptions {
            paths,
            stream: None,
            tags: Vec::new(),
            excludes: Vec::new(),
            one_file_system: false,
            host: crate::sys::hostname(),
            parent: None,
            time: None,
            force: false,
            readers: cores.clamp(2, 4),
            workers: cores,
            queue: 2,
            connections: 0,
            profile_stages: false,
        }
    }
}

/// How one replica fared.
#[derive(Debug, serde::Serialize)]
pub struct ReplicaOutcome {
    pub name: String,
    /// Serialised as the error's text with its causes.
    #[serde(serialize_with = "error_text")]
    pub error: Option<Error>,
    pub packs: u64,
    pub bytes: u64,
    /// Bytes of the packs the replica's index lists once the run ended:
    /// what it listed before plus the packs this run wrote to it. `None`
    /// when the run failed on it.
    pub repo_bytes: Option<u64>,
}

fn error_text<S: serde::Serializer>(e: &Option<Error>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_some(&crate::error::chain(e)),
        None => s.serialize_none(),
    }
}

/// The result of a backup run.
#[derive(Debug, serde::Serialize)]
pub struct BackupOutcome {
    /// The snapshot id, when at least one replica got it.
    pub id: Option<Id>,
    pub snapshot: Snapshot,
    pub replicas: Vec<ReplicaOutcome>,
    /// Stopped by a cancellation: no snapshot was written.
    pub interrupted: bool,
    /// Replicas given that could not be used at all (not opened).
    pub unusable: Vec<String>,
    /// The source failed (a dump command exited non-zero, a database could
    /// not be copied): no snapshot was written anywhere.
    #[serde(serialize_with = "error_text")]
    pub source_error: Option<Error>,
    /// CPU seconds per pipeline stage, with
    /// [`BackupOptions::profile_stages`] (zeros without).
    pub stages: Vec<stages::StageTime>,
}

impl BackupOutcome {
    /// Interrupted; the source failed or the backup failed everywhere;
    /// failed on some replicas (they hold
    /// no snapshot of this run and stay consistent); some files unreadable
    /// (the snapshot is saved, marked partial); or ok.
    pub fn outcome(&self) -> Outcome {
        let failed: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.error.is_some())
            .map(|r| r.name.clone())
            .chain(self.unusable.iter().cloned())
            .collect();
        if self.interrupted {
            Outcome::Interrupted
        } else if self.id.is_none() || self.source_error.is_some() {
            Outcome::Failed
        } else if !failed.is_empty() {
            Outcome::Partial { replicas: failed }
        } else if self.snapshot.partial {
            Outcome::Incomplete
        } else {
            Outcome::Ok
        }
    }
}

struct RepoParents<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    rt: tokio::runtime::Handle,
}

impl ParentTrees for RepoParents<'_> {
    fn load(&self, ids: &[Id]) -> Option<Tree> {
        match self.rt.block_on(self.repo.load_tree(self.index, ids)) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("parent tree unreadable, reading files again: {e}");
                None
            }
        }
    }
}

/// Run a backup to every replica of `repo`.
pub async fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(Timestamp::now);
    let excludes = Excludes::new(&opts.excludes)
        .map_err(|e| Error::Invalid(format!("exclude pattern: {e}")))?;
    let paths: Vec<String> = match &opts.stream {
        Some(s) => s.snapshot_paths(),
        None => opts
            .paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
    };
    // Before reading the index: a repair or prune holding the exclusive
    // lock may be rewriting it.
    let lock = repo.lock(LockMode::Shared, "backup").await?;
    // Both only read, and each costs round trips: at once.
    let (index, snaps) = futures::try_join!(repo.load_index(), repo.list_snapshots())?;
    let index = Arc::new(index);
    let parent = match (opts.force, opts.parent) {
        (true, _) => None,
        (false, Some(id)) => Some(
            snaps
                .iter()
                .find(|s| s.id == id)
                .ok_or_else(|| Error::NotFound(format!("parent snapshot {id} not found")))?,
        ),
        (false, None) => snaps
            .iter()
            .rev()
            .find(|s| s.snapshot.matches(&opts.host, &paths)),
    };
    let parent_root = match parent {
        Some(p) => match repo.load_tree(&index, &p.snapshot.tree).await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(
                    "parent snapshot {} unreadable, reading everything: {e}",
                    p.id.short()
                );
                None
            }
        },
        None => None,
    };

    if opts.profile_stages {
        progress.stages.enable();
    }
    let rt = tokio::runtime::Handle::current();
    let fan = fanout::FanOut::start(
        &rt,
        repo.replicas(),
        opts.queue,
        opts.connections,
        progress.clone(),
    );
    let store = BlobStore::new(
        repo.shared_keyring(),
        index.clone(),
        store::StoreConfig {
            targets: repo.all(),
            level: repo.config().compression_level,
            pack_size: repo.config().pack_size as usize,
            workers: opts.workers,
        },
        fan,
        progress.clone(),
    );
    let errors = Mutex::new(Vec::new());
    let mut counts = BuildCounts::default();
    let changed = AtomicU64::new(0);
    let parents = RepoParents {
        repo,
        index: &index,
        rt: rt.clone(),
    };

    let mut source_error = None;
    let root: Option<Vec<Id>> = tokio::task::block_in_place(|| {
        if let Some(s) = &opts.stream {
            let cancel = repo.cancel_token();
            let read = stream::store(s, repo.chunker(), &store, &progress, &|| {
                cancel.is_cancelled()
            });
            return Ok::<_, Error>(Some(match read {
                Ok((root, size)) => {
                    counts.files_new = 1;
                    counts.total_bytes = size;
                    root
                }
                // Reported as the interruption it is, not as a failed source.
                Err(Error::Interrupted) => Vec::new(),
                Err(e) => {
                    source_error = Some(e);
                    Vec::new()
                }
            }));
        }
        let (file_tx, file_rx) = bounded(opts.readers * 8);
        let (dir_tx, dir_rx) = bounded(1024);
        std::thread::scope(|s| {
            for _ in 0..opts.readers.max(1) {
                let rx = file_rx.clone();
                let (chunker, store, progress) = (repo.chunker(), &store, &*progress);
                let cancel = repo.cancel_token();
                s.spawn(move || walk::reader(rx, chunker, store, progress, cancel));
            }
            drop(file_rx);
            let builder = {
                let (chunker, store, progress, errors, counts, changed) = (
                    repo.chunker(),
                    &store,
                    &*progress,
                    &errors,
                    &mut counts,
                    &changed,
                );
                s.spawn(move || {
                    walk::build_trees(dir_rx, chunker, store, errors, progress, counts, changed)
                })
            };
            let mut w = Walk {
                excludes: &excludes,
                one_file_system: opts.one_file_system,
                parent: parent_root.as_ref().map(|_| &parents as &dyn ParentTrees),
                store: &store,
                progress: &progress,
                files: file_tx,
                dirs: dir_tx,
                errors: &errors,
                next_id: 0,
                changed: &changed,
                cancel: repo.cancel_token(),
            };
            w.targets(&opts.paths, parent_root.as_ref());
            drop(w);
            Ok(builder.join().expect("tree builder panicked"))
        })
    })?;
    let root = root.ok_or_else(|| Error::Invalid("nothing to back up".into()))?;

    let (written, fan) = tokio::task::block_in_place(|| store.finish());
    let upload_errors = fan.finish().await;
    let errors = errors.into_inner().unwrap();
    let summary = Summary {
        files_new: counts.files_new,
        files_changed: counts.files_changed,
        files_unmodified: counts.files_unmodified,
        dirs: counts.dirs,
        other_entries: counts.other,
        total_bytes: counts.total_bytes,
        bytes_read: progress.bytes_read.load(Relaxed),
        blobs_new: progress.blobs_new.load(Relaxed),
        bytes_new: progress.bytes_new.load(Relaxed),
        bytes_stored: written.iter().map(|p| p.size).sum(),
        errors: errors.len() as u64,
        duration_secs: started.elapsed().as_secs_f64(),
    };
    let snapshot = Snapshot {
        time,
        host: opts.host.clone(),
        username: crate::sys::username(),
        paths,
        tags: opts.tags.clone(),
        parent: parent.map(|p| p.id),
        tree: root,
        partial: !errors.is_empty(),
        errors: errors.iter().take(100).cloned().collect(),
        excludes: opts.excludes.clone(),
        program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary,
        original: None,
    };
    let interrupted = repo.cancel_token().is_cancelled();
    // A failed source is published like an interruption: the packs and
    // their index files stay (harmless, reused or pruned later), the
    // snapshot that would call a broken dump complete is not written.
    let mut outcome = publish(
        repo,
        &written,
        &snapshot,
        upload_errors,
        interrupted || source_error.is_some(),
        &progress,
    )
    .await;
    outcome.interrupted = interrupted;
    outcome.source_error = source_error;
    // From the index read at the start, so no replica is listed again.
    let before = indexed_bytes(&index, outcome.replicas.len());
    for (r, before) in outcome.replicas.iter_mut().zip(before) {
        if r.error.is_none() {
            r.repo_bytes = Some(before + r.bytes);
        }
    }
    lock.release().await;
    Ok(outcome)
}

/// Bytes of the packs each of the first `n` replicas lists in its index.
fn indexed_bytes(index: &MasterIndex, n: usize) -> Vec<u64> {
    let mut sums = vec![0u64; n];
    for p in &index.packs {
        for r in p.replicas.iter().filter(|&r| r < n) {
            sums[r] += p.size;
        }
    }
    sums
}

/// Write the index files, then the snapshot, to every replica whose packs
/// are all durable.
pub(crate) async fn publish(
    repo: &Repository,
    written: &[IndexPack],
    snapshot: &Snapshot,
    upload_errors: Vec<Option<Error>>,
    interrupted: bool,
    progress: &Progress,
) -> BackupOutcome {
    let index_files = repo.seal_index_files(written);
    let snap_bytes = Bytes::from(seal_doc(
        repo.keyring(),
        ObjectKind::Snapshot,
        &serde_json::to_vec(snapshot).expect("snapshot serializes"),
    ));
    let snap_id = Id::of_stored(&snap_bytes);
    // Each replica on its own (at once): its index files, as many at a
    // time as its pack uploads (a first backup of a terabyte writes about
    // a thousand), and only once all of them are stored, its snapshot.
    let errors =
        futures::future::join_all(repo.replicas().iter().zip(upload_errors).map(|(r, err)| {
            let (index_files, snap_bytes) = (&index_files, &snap_bytes);
            async move {
                if let Some(e) = err {
                    return Some(e);
                }
                let at_once = fanout::upload_connections(0, &r.backend.capabilities());
                for batch in index_files.chunks(at_once) {
                    let stored = futures::future::try_join_all(
                        batch
                            .iter()
                            .map(|(name, data)| repo.put_doc(r, Kind::Index, name, data.clone())),
                    )
                    .await;
                    if let Err(e) = stored {
                        return Some(e);
                    }
                }
                // An interrupted backup read only part of its paths: its
                // packs and index files stay (the next backup reuses
                // them), its snapshot would be a lie.
                if interrupted {
                    return None;
                }
                repo.put_doc(r, Kind::Snapshot, &snap_id.to_hex(), snap_bytes.clone())
                    .await
                    .err()
            }
        }))
        .await;
    let mut replicas = Vec::new();
    let mut any = false;
    for ((i, r), error) in repo.replicas().iter().enumerate().zip(errors) {
        any |= error.is_none() && !interrupted;
        let p = &progress.replicas[i];
        replicas.push(ReplicaOutcome {
            name: r.name.clone(),
            error,
            packs: p.packs_done.load(Relaxed),
            bytes: p.bytes_done.load(Relaxed),
            repo_bytes: None,
        });
    }
    BackupOutcome {
        id: any.then_some(snap_id),
        snapshot: snapshot.clone(),
        replicas,
        interrupted,
        unusable: repo.unavailable().iter().map(|u| u.name.clone()).collect(),
        source_error: None,
        stages: progress.stages.profile(),
    }
}
