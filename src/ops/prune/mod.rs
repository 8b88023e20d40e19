//! `prune`: free, on each replica, the packs that replica's own snapshots
//! no longer need, without ever stopping a backup (docs/retention.md).
//!
//! Two phases. **Mark** (shared lock, so backups go on): every pack a
//! replica holds but does not need, and every pack it stores that none of
//! its index files describes, is recorded in the replica's marks
//! (`markers/prune`) with the time it was first found so; packs whose
//! unneeded share passes `max_unused` are repacked first: their needed
//! blobs are written into new packs on every replica holding them, which
//! frees the old ones. **Delete** (exclusive lock, taken only when some
//! mark is older than the grace period): everything is read again — a
//! backup may have reused a marked pack since — and a marked pack is
//! deleted only if it is still not needed and its mark is old enough.
//! Index files are consolidated then: new ones describing what stays are
//! written before the old ones are deleted, and packs are deleted last,
//! so an interruption at any point leaves a repository `check` accepts.
//!
//! With a zero grace period both phases run under one exclusive lock.

mod repack;
mod world;

pub(crate) use world::read_marks;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use cairn_backends::{Handle, Kind, PutMode};
use jiff::Timestamp;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::crypto::ObjectKind;
use crate::format::id::Id;
use crate::format::marks::{Marks, MARKER_NAME};
use crate::ops::Outcome;
use crate::repo::{seal_doc, LockMode, ReplicaSet, Repository};
use crate::retention::{plan_gc, RepackRules};
use world::World;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// A pack is deleted only once it was found unneeded this long ago.
    pub grace: Duration,
    /// Repack a pack whose unneeded share of its size is above this (0–1).
    pub max_unused: f64,
    /// Repack at most this many bytes of packs in one run.
    pub max_repack: u64,
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::from_secs(24 * 3600),
            max_unused: 0.10,
            max_repack: u64::MAX,
            dry_run: false,
        }
    }
}

/// What prune did (or, in a dry run, would do) on one replica.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicaPrune {
    pub replica: String,
    /// Packs stored, and their bytes, before.
    pub packs: u64,
    pub bytes: u64,
    /// Packs this replica does not need (or no index file describes),
    /// marked and waiting for the grace period.
    pub marked: u64,
    pub marked_bytes: u64,
    /// Partly used packs repacked: their needed blobs moved to new packs.
    pub repacked: u64,
    pub new_packs: u64,
    pub new_bytes: u64,
    /// Packs deleted and the bytes freed.
    pub deleted: u64,
    pub freed_bytes: u64,
    pub index_written: u64,
    pub index_deleted: u64,
    /// Why nothing (more) was done on this replica.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub grace_seconds: u64,
    pub replicas: Vec<ReplicaPrune>,
    /// Why the delete phase did not run, when it had work.
    pub delete_skipped: Option<String>,
}

impl PruneReport {
    /// A replica that could not be judged or finished ends with exit 4
    /// (damage found: exit 5); a skipped delete phase is not a failure.
    pub fn outcome(&self) -> Outcome {
        let failed: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.error.is_some())
            .map(|r| r.replica.clone())
            .collect();
        if failed.is_empty() {
            Outcome::Ok
        } else if failed.len() == self.replicas.len() {
            Outcome::Failed
        } else {
            Outcome::Partial { replicas: failed }
        }
    }
}

/// Prune every replica of `repo` (see the module docs).
pub async fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    if !(0.0..=1.0).contains(&opts.max_unused) {
        return Err(Error::Invalid(
            "max-unused must be between 0% and 100%".into(),
        ));
    }
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        grace_seconds: opts.grace.as_secs(),
        replicas: repo
            .replicas()
            .iter()
            .map(|r| ReplicaPrune {
                replica: r.name.clone(),
                ..Default::default()
            })
            .collect(),
        delete_skipped: None,
    };
    for u in repo.unavailable() {
        report.replicas.push(ReplicaPrune {
            replica: u.name.clone(),
            error: Some(crate::error::chain(&u.error)),
            ..Default::default()
        });
    }
    if opts.grace.is_zero() {
        repo.with_lock(LockMode::Exclusive, "prune", async || {
            let mut w = World::load(repo).await?;
            mark(repo, &mut w, opts, &mut report).await?;
            if !opts.dry_run {
                delete(repo, &mut w, opts, &mut report).await?;
            }
            Ok(())
        })
        .await?;
        return Ok(report);
    }
    let due = repo
        .with_lock(LockMode::Shared, "prune (mark)", async || {
            let mut w = World::load(repo).await?;
            mark(repo, &mut w, opts, &mut report).await?;
            let now = Timestamp::now();
            Ok(w.usable().iter().any(|r| {
                w.marks[r]
                    .packs
                    .keys()
                    .any(|p| w.marks[r].is_due(p, now, opts.grace))
            }))
        })
        .await?;
    if due && !opts.dry_run {
        let res = repo
            .with_lock(LockMode::Exclusive, "prune (delete)", async || {
                let mut w = World::load(repo).await?;
                delete(repo, &mut w, opts, &mut report).await
            })
            .await;
        match res {
            Ok(()) => {}
            // Backups are running: deletion waits for a later prune.
            Err(Error::Locked(why)) => report.delete_skipped = Some(why),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// The mark phase: repack, then record what each replica can free.
async fn mark(
    repo: &Repository,
    w: &mut World,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    let now = Timestamp::now();
    for (r, rep) in report.replicas.iter_mut().enumerate().take(w.blocked.len()) {
        if let Some(l) = &w.listings[r] {
            rep.packs = l.packs.len() as u64;
            rep.bytes = l.pack_bytes();
        }
        rep.error = w.blocked[r].clone();
    }
    let rules = RepackRules {
        max_unused: opts.max_unused,
        max_repack: opts.max_repack,
    };
    let gc = plan_gc(&w.packs, &w.live, rules);
    let old_packs = w.packs.len();
    for &p in &gc.repack {
        for r in w.packs[p].holders.iter() {
            report.replicas[r].repacked += 1;
        }
    }
    if !gc.repack.is_empty() {
        if opts.dry_run {
            for &p in &gc.repack {
                for r in w.packs[p].holders.iter() {
                    report.replicas[r].new_bytes += gc.usage[p].needed_bytes;
                }
            }
        } else {
            repack::run(repo, w, &gc, report).await?;
        }
    }
    for r in w.usable().iter() {
        let mut next = Marks::new();
        let mut bytes = 0;
        for p in 0..old_packs {
            if gc.frees(&w.packs, p, r) {
                let id = w.packs[p].id;
                next.packs
                    .insert(id, *w.marks[r].packs.get(&id).unwrap_or(&now));
                bytes += w.packs[p].size;
            }
        }
        for (id, size) in w.strays(r) {
            next.packs
                .insert(id, *w.marks[r].packs.get(&id).unwrap_or(&now));
            bytes += size;
        }
        let rep = &mut report.replicas[r];
        rep.marked = next.packs.len() as u64;
        rep.marked_bytes = bytes;
        if !opts.dry_run && next != w.marks[r] {
            if let Err(e) = write_marks(repo, r, &next).await {
                rep.error = Some(crate::error::chain(&e));
                w.blocked[r] = rep.error.clone();
                continue;
            }
        }
        w.marks[r] = next;
    }
    // The delete phase of `--grace 0` plans on this world: repacked packs
    // must rank as marked, or a repacked pack could claim its blobs ahead
    // of their new home and be kept beside it.
    for p in &mut w.packs {
        p.marked = ReplicaSet::EMPTY;
        for (r, m) in w.marks.iter().enumerate() {
            if m.packs.contains_key(&p.id) {
                p.marked.insert(r);
            }
        }
    }
    if opts.dry_run {
        // What a delete phase would do now.
        for r in w.usable().iter() {
            let due: Vec<&Id> = w.marks[r]
                .packs
                .keys()
                .filter(|p| w.marks[r].is_due(p, now, opts.grace))
                .collect();
            let rep = &mut report.replicas[r];
            rep.deleted = due.len() as u64;
            rep.freed_bytes = due
                .iter()
                .filter_map(|p| w.listings[r].as_ref()?.packs.get(p))
                .sum();
        }
    }
    Ok(())
}

/// The delete phase, on a world read under the exclusive lock.
async fn delete(
    repo: &Repository,
    w: &mut World,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    let now = Timestamp::now();
    let never = RepackRules {
        max_unused: 1.0,
        max_repack: 0,
    };
    let gc = plan_gc(&w.packs, &w.live, never);
    for r in w.usable().iter() {
        repo.check_cancelled()?;
        let Some(listing) = w.listings[r].clone() else {
            continue;
        };
        let mut free: HashSet<Id> = (0..w.packs.len())
            .filter(|&p| gc.frees(&w.packs, p, r))
            .map(|p| w.packs[p].id)
            .collect();
        free.extend(w.strays(r).into_iter().map(|(id, _)| id));
        let due: Vec<Id> = free
            .iter()
            .filter(|id| w.marks[r].is_due(id, now, opts.grace))
            .copied()
            .collect();
        // Marks of packs needed again (reused by a backup) or gone are
        // dropped; the others wait for their grace period.
        let mut next = Marks::new();
        for (id, since) in &w.marks[r].packs {
            if free.contains(id) && !due.contains(id) {
                next.packs.insert(*id, *since);
            }
        }
        let rep = &mut report.replicas[r];
        if !due.is_empty() {
            if let Err(e) = delete_on(repo, w, r, &listing, &due, rep).await {
                rep.error = Some(crate::error::chain(&e));
                continue;
            }
        }
        rep.marked = next.packs.len() as u64;
        rep.marked_bytes = next.packs.keys().filter_map(|p| listing.packs.get(p)).sum();
        if next != w.marks[r] {
            if let Err(e) = write_marks(repo, r, &next).await {
                rep.error = Some(crate::error::chain(&e));
            }
        }
        w.marks[r] = next;
    }
    Ok(())
}

/// Rewrite replica `r`'s index without `due`, then delete `due`.
async fn delete_on(
    repo: &Repository,
    w: &World,
    r: usize,
    listing: &crate::repo::survey::Listing,
    due: &[Id],
    rep: &mut ReplicaPrune,
) -> Result<()> {
    let replica = repo.replica(r);
    let gone: HashSet<&Id> = due.iter().collect();
    // Every pack the replica's index files describe stays described, also
    // one it lacks: hiding a missing pack would hide the damage from
    // `check` and `repair`.
    let mut keep: Vec<_> = w
        .packs
        .iter()
        .filter(|p| {
            w.index.pack(&p.id).is_some_and(|i| i.replicas.contains(r)) && !gone.contains(&p.id)
        })
        .map(|p| w.descs[&p.id].clone())
        .collect();
    keep.sort_by_key(|p| p.id);
    let files = repo.seal_index_files(&keep);
    let new_names: HashSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for (name, data) in &files {
        if !listing.index.contains(name) {
            repo.put_doc(replica, Kind::Index, name, data.clone())
                .await?;
            rep.index_written += 1;
        }
    }
    for name in listing
        .index
        .iter()
        .filter(|n| !new_names.contains(n.as_str()))
    {
        repo.check_cancelled()?;
        repo.delete_from(r, &Handle::new(Kind::Index, name)).await?;
        rep.index_deleted += 1;
    }
    for id in due {
        repo.check_cancelled()?;
        repo.delete_from(r, &Handle::new(Kind::Pack, id.to_hex()))
            .await?;
        rep.deleted += 1;
        rep.freed_bytes += listing.packs.get(id).copied().unwrap_or(0);
    }
    Ok(())
}

pub(crate) async fn write_marks(repo: &Repository, r: usize, marks: &Marks) -> Result<()> {
    let replica = repo.replica(r);
    let sealed = seal_doc(repo.keyring(), ObjectKind::Marker, &marks.encode());
    replica
        .backend
        .put(
            &Handle::new(Kind::Marker, MARKER_NAME),
            Bytes::from(sealed),
            PutMode::Overwrite,
        )
        .await
        .map_err(|e| Error::backend(&replica.name, e))
}

#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;
    use cairn_backends::memory::MemoryBackend;
    use cairn_backends::{Backend, BackendError, Capabilities, ObjectMeta};

    use super::*;
    use crate::ops::forget::{forget, ForgetOptions, Policies};
    use crate::repo::Replica;
    use crate::test_support::*;

    /// A backend that is not local, counting the packs read from it.
    #[derive(Debug)]
    struct Remote {
        inner: MemoryBackend,
        pack_reads: AtomicU64,
    }

    impl std::fmt::Display for Remote {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("remote")
        }
    }

    #[async_trait]
    impl Backend for Remote {
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                local: false,
                ..Capabilities::default()
            }
        }
        async fn put(
            &self,
            h: &Handle,
            data: Bytes,
            mode: PutMode,
        ) -> std::result::Result<(), BackendError> {
            self.inner.put(h, data, mode).await
        }
        async fn get(
            &self,
            h: &Handle,
            range: Option<Range<u64>>,
        ) -> std::result::Result<Bytes, BackendError> {
            if h.kind == Kind::Pack {
                self.pack_reads.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.get(h, range).await
        }
        async fn head(&self, h: &Handle) -> std::result::Result<ObjectMeta, BackendError> {
            self.inner.head(h).await
        }
        async fn list(&self, kind: Kind) -> std::result::Result<Vec<ObjectMeta>, BackendError> {
            self.inner.list(kind).await
        }
        async fn delete(&self, h: &Handle) -> std::result::Result<(), BackendError> {
            self.inner.delete(h).await
        }
    }

    /// The remote replica comes first, yet repacking reads every pack from
    /// the local one, and writes the same new packs to both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repacking_reads_from_the_local_replica() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let remote = Arc::new(Remote {
            inner: MemoryBackend::new(),
            pack_reads: AtomicU64::new(0),
        });
        let local: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let replicas = vec![
            Replica {
                name: "remote".into(),
                backend: remote.clone(),
            },
            Replica {
                name: "local".into(),
                backend: local.clone(),
            },
        ];
        let repo = init(replicas).await;
        let first = backup_dir(&repo, &src).await.id.unwrap();
        std::fs::write(src.join("another"), b"x".repeat(5000)).unwrap();
        backup_dir(&repo, &src).await;
        let mut f = ForgetOptions::new(Policies::default());
        f.ids = vec![first];
        forget(&repo, &f).await.unwrap();
        remote.pack_reads.store(0, Ordering::Relaxed);
        let opts = PruneOptions {
            grace: Duration::ZERO,
            max_unused: 0.0,
            ..Default::default()
        };
        let report = prune(&repo, &opts).await.unwrap();
        assert!(report.replicas[0].repacked > 0, "{report:?}");
        // With no grace, the repacked packs go in the same run.
        for r in &report.replicas {
            assert!(r.deleted >= r.repacked, "{report:?}");
        }
        assert_eq!(remote.pack_reads.load(Ordering::Relaxed), 0);
        let names = |b: Vec<ObjectMeta>| {
            let mut v: Vec<String> = b.into_iter().map(|m| m.handle.name).collect();
            v.sort();
            v
        };
        assert_eq!(
            names(remote.list(Kind::Pack).await.unwrap()),
            names(local.list(Kind::Pack).await.unwrap())
        );
    }
}
