//! `sync`: bring lagging replicas up to date from the others.
//!
//! Objects are copied as stored bytes (never decrypted) and verified by
//! name, since packs, index files and snapshots are named by the BLAKE3
//! hash of their stored bytes. The order keeps every target consistent at
//! every instant, as a backup does: packs first, then an index file only
//! once every pack it describes is on the target, then a snapshot only once
//! everything it needs is on the target and in the target's index. An
//! interrupted sync leaves at worst packs no index describes yet; run again,
//! it copies only what is still missing.
//!
//! Memory: per target, at most `connections` objects in flight (packs are
//! up to the repository's pack size, 16 MiB by default).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use cairn_backends::{ErrorKind, Handle, Kind, PutMode};
use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::ops::{Finding, Problem};
use crate::repo::docs::{MAX_CONFIG_BYTES, MAX_KEY_SLOT_BYTES};
use crate::repo::survey::{list_all, Listing, Needs, NeedsCache};
use crate::repo::MasterIndex;
use crate::repo::{IndexFile, LockMode, Replica, ReplicaSet, Repository, SnapshotEntry};

#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Replicas to copy from.
    pub from: ReplicaSet,
    /// Replicas to bring up to date (positions).
    pub to: Vec<usize>,
    /// Work out what would be copied, copy nothing.
    pub dry_run: bool,
    /// Copy only these snapshots and what they need (`forget` uses it to
    /// give a replica the snapshots its policy keeps); `None`: everything.
    pub only: Option<HashSet<Id>>,
}

/// What a sync did (or, in a dry run, would do) to one target.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncReport {
    pub replica: String,
    pub packs: u64,
    pub pack_bytes: u64,
    pub index_files: u64,
    pub snapshots: u64,
    /// Entries of the key audit trail the target lacked.
    pub audit_entries: u64,
    /// Key slots and keyring generations the target lacked (it missed a
    /// key operation).
    pub key_objects: u64,
    /// Objects that could not be copied, and why.
    pub skipped: Vec<String>,
    /// The same, typed.
    pub findings: Vec<Finding>,
    /// The target failed (it stays consistent; run sync again).
    pub error: Option<String>,
}

/// A target failed (it stays consistent); else a replica given could not
/// be used (`unusable`); else objects no source had; else ok.
pub fn outcome(reports: &[SyncReport], unusable: &[String]) -> crate::ops::Outcome {
    use crate::ops::Outcome;
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.replica.clone())
        .collect();
    if !failed.is_empty() {
        Outcome::Partial { replicas: failed }
    } else if !unusable.is_empty() {
        Outcome::Unreachable {
            replicas: unusable.to_vec(),
        }
    } else if reports.iter().any(|r| !r.skipped.is_empty()) {
        Outcome::Incomplete
    } else {
        Outcome::Ok
    }
}

impl SyncReport {
    /// Record an object that could not be copied; `msg` starts with the
    /// object's name (`data/…`, `index/…`, `snapshots/…`).
    fn skip(&mut self, msg: String) {
        let object = msg.split(':').next().unwrap_or_default().to_string();
        self.findings.push(
            Finding::warning(Problem::LostData, msg.clone())
                .replica(&self.replica)
                .object(object),
        );
        self.skipped.push(msg);
    }

    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.skipped.is_empty()
    }
}

/// Phases of [`TargetProgress::phase`].
pub const PHASE_PLAN: u8 = 0;
pub const PHASE_PACKS: u8 = 1;
pub const PHASE_INDEX: u8 = 2;
pub const PHASE_SNAPSHOTS: u8 = 3;
pub const PHASE_DONE: u8 = 4;

/// Live counters of one target.
#[derive(Debug, Default)]
pub struct TargetProgress {
    pub phase: AtomicU8,
    pub packs_total: AtomicU64,
    pub packs_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
}

/// Progress of every target, in the order of [`SyncOptions::to`].
#[derive(Debug, Default)]
pub struct SyncProgress {
    pub targets: Vec<(String, TargetProgress)>,
}

impl SyncProgress {
    pub fn new(repo: &Repository, to: &[usize]) -> SyncProgress {
        SyncProgress {
            targets: to
                .iter()
                .map(|&t| (repo.replicas()[t].name.clone(), TargetProgress::default()))
                .collect(),
        }
    }
}

/// Make replica `name`, which holds no repository yet, a replica of
/// `repo`: copy the config and every key slot to it (as stored bytes), then
/// count it among the replicas. Its packs, index and snapshots come from
/// [`sync`].
pub async fn seed(repo: &mut Repository, name: &str) -> Result<usize> {
    let pos = repo
        .unavailable()
        .iter()
        .position(|u| u.name == name && matches!(u.error, Error::NotARepository(_)))
        .ok_or_else(|| Error::Invalid(format!("{name} is not an empty replica")))?;
    let target = repo.unavailable()[pos].replica.clone();
    target
        .backend
        .create()
        .await
        .map_err(|e| Error::backend(&target.name, e))?;
    let mut last = None;
    for source in repo.replicas() {
        let (config, slots) = match read_seed(source).await {
            Ok(x) => x,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        // Key slots before the config, as `init` does: a config without a
        // key would be a dead repository.
        for (h, data) in slots {
            put_create(&target, &h, data).await?;
        }
        put_create(&target, &Handle::config(), config).await?;
        return repo.adopt(pos);
    }
    Err(last.unwrap_or_else(|| Error::Invalid("no replica to copy the repository from".into())))
}

/// The config and key slots of `source`, as stored.
async fn read_seed(source: &Replica) -> Result<(Bytes, Vec<(Handle, Bytes)>)> {
    let be = |e| Error::backend(&source.name, e);
    // Sizes first: a planted giant is named, never downloaded or copied.
    let size = source
        .backend
        .head(&Handle::config())
        .await
        .map_err(be)?
        .size;
    if size > MAX_CONFIG_BYTES {
        return Err(Error::Corrupt(format!(
            "{}: config is {size} bytes, over the {MAX_CONFIG_BYTES}-byte limit (not read)",
            source.name
        )));
    }
    let config = source
        .backend
        .get(&Handle::config(), None)
        .await
        .map_err(be)?;
    let mut slots = Vec::new();
    // The key slots and the keyring generations sealed to them.
    for (kind, limit) in [
        (Kind::Key, MAX_KEY_SLOT_BYTES),
        (Kind::Keyring, crate::format::keyring::MAX_GENERATION_BYTES),
    ] {
        for m in source.backend.list(kind).await.map_err(be)? {
            if m.size > limit {
                tracing::warn!(
                    "{}: {} is {} bytes, over the {limit}-byte limit; not copied",
                    source.name,
                    m.handle,
                    m.size
                );
                continue;
            }
            let data = source.get_at_most(&m.handle, limit).await?;
            slots.push((m.handle, data));
        }
    }
    if slots.is_empty() {
        return Err(Error::Corrupt(format!("{}: no key slots", source.name)));
    }
    Ok((config, slots))
}

/// Objects in flight per replica: its backend's connection count, 1 to 8.
pub(crate) fn connections(repo: &Repository, i: usize) -> usize {
    repo.replicas()[i]
        .backend
        .capabilities()
        .default_connections
        .clamp(1, 8)
}

async fn put_create(target: &Replica, h: &Handle, data: Bytes) -> Result<()> {
    match target.backend.put(h, data, PutMode::Create).await {
        Ok(()) => Ok(()),
        // Content-addressed (or identical config): already there is done.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::backend(&target.name, e)),
    }
}

/// Bring every replica in `opts.to` up to date from the replicas in
/// `opts.from`. Targets are synced concurrently; one failing target does
/// not stop the others.
pub async fn sync(
    repo: &Repository,
    opts: &SyncOptions,
    progress: &SyncProgress,
) -> Result<Vec<SyncReport>> {
    repo.with_lock(LockMode::Shared, "sync", async || {
        sync_locked(repo, opts, progress).await
    })
    .await
}

/// [`sync`] for a caller that already holds a lock (`forget`).
pub(crate) async fn sync_locked(
    repo: &Repository,
    opts: &SyncOptions,
    progress: &SyncProgress,
) -> Result<Vec<SyncReport>> {
    let listings = list_all(repo).await;
    let (index, files) = repo.load_index_files().await?;
    let snaps = repo.list_snapshots().await?;
    let listed: ReplicaSet = (0..listings.len())
        .filter(|&i| listings[i].is_ok())
        .collect();
    // Needs of every snapshot some target lacks, computed once.
    let mut cache = NeedsCache::default();
    let mut needs: HashMap<Id, Arc<Needs>> = HashMap::new();
    for e in &snaps {
        let lacking = opts.to.iter().any(|&t| {
            listings[t]
                .as_ref()
                .is_ok_and(|l| !l.snapshots.contains(&e.id.to_hex()))
        });
        let wanted = opts.only.as_ref().is_none_or(|o| o.contains(&e.id));
        if wanted && lacking && !e.replicas.intersection(opts.from).is_empty() {
            needs.insert(e.id, cache.of_snapshot(repo, &index, &e.snapshot).await);
        }
    }
    let plan = Shared {
        repo,
        listings: &listings,
        index: &index,
        files: &files,
        snaps: &snaps,
        needs: &needs,
        only: opts.only.as_ref(),
    };
    let mut reports = futures::future::join_all(opts.to.iter().enumerate().map(|(k, &t)| {
        let src = opts.from.intersection(listed).without(t);
        plan.sync_one(t, src, opts.dry_run, &progress.targets[k].1)
    }))
    .await;
    // The keyring and the key audit trail too, on a full sync (forget's
    // copies are restricted to snapshots).
    if opts.only.is_none() && !opts.dry_run {
        match repo.converge_keys().await {
            Ok(changed) => {
                for (name, n) in changed {
                    if let Some(rep) = reports.iter_mut().find(|r| r.replica == name) {
                        rep.key_objects = n;
                    }
                }
            }
            Err(e) => tracing::warn!("keyring generations not brought up to date: {e}"),
        }
    }
    if opts.only.is_none() {
        for (rep, &t) in reports.iter_mut().zip(&opts.to) {
            if rep.error.is_some() {
                continue;
            }
            let src = opts.from.intersection(listed).without(t);
            match crate::ops::audit::copy_missing(repo, t, src, opts.dry_run).await {
                Ok(n) => rep.audit_entries = n,
                Err(e) => rep.error = Some(crate::error::chain(&e)),
            }
        }
    }
    Ok(reports)
}

struct Shared<'a> {
    repo: &'a Repository,
    listings: &'a [Result<Listing>],
    index: &'a MasterIndex,
    files: &'a [IndexFile],
    snaps: &'a [SnapshotEntry],
    needs: &'a HashMap<Id, Arc<Needs>>,
    only: Option<&'a HashSet<Id>>,
}

impl Shared<'_> {
    /// With a restriction, the packs the chosen snapshots need.
    fn needed_packs(&self) -> Option<HashSet<Id>> {
        let only = self.only?;
        let mut packs = HashSet::new();
        for e in self.snaps.iter().filter(|e| only.contains(&e.id)) {
            if let Some(n) = self.needs.get(&e.id) {
                packs.extend(n.packs.iter().map(|&pk| self.index.packs[pk as usize].id));
            }
        }
        Some(packs)
    }

    /// The index files to copy to `t`: all, or with a restriction those
    /// describing a needed pack.
    fn files_to_copy(&self, t: usize, needed: Option<&HashSet<Id>>) -> Vec<&IndexFile> {
        let Some(needed) = needed else {
            return self.files.iter().collect();
        };
        let target = self.listings[t].as_ref().ok();
        self.files
            .iter()
            .filter(|f| !target.is_some_and(|l| l.index.contains(&f.name)))
            .filter(|f| f.packs.iter().any(|id| needed.contains(id)))
            .collect()
    }

    /// Source replicas whose listing holds `pred`.
    fn holders(&self, src: ReplicaSet, pred: impl Fn(&Listing) -> bool) -> ReplicaSet {
        src.iter()
            .filter(|&i| self.listings[i].as_ref().is_ok_and(&pred))
            .collect()
    }

    async fn sync_one(
        &self,
        t: usize,
        src: ReplicaSet,
        dry_run: bool,
        p: &TargetProgress,
    ) -> SyncReport {
        let name = &self.repo.replicas()[t].name;
        let mut rep = SyncReport {
            replica: name.clone(),
            ..Default::default()
        };
        let tl = match &self.listings[t] {
            Ok(l) => l,
            Err(e) => {
                rep.error = Some(crate::error::chain(e));
                p.phase.store(PHASE_DONE, Relaxed);
                return rep;
            }
        };
        if let Err(e) = self.copy_all(t, src, tl, dry_run, p, &mut rep).await {
            rep.error = Some(crate::error::chain(&e));
        }
        p.phase.store(PHASE_DONE, Relaxed);
        rep
    }

    async fn copy_all(
        &self,
        t: usize,
        src: ReplicaSet,
        tl: &Listing,
        dry_run: bool,
        p: &TargetProgress,
        rep: &mut SyncReport,
    ) -> Result<()> {
        // Packs: every pack a source's index describes that the target lacks
        // (restricted: those of the index files that describe a pack the
        // chosen snapshots need, since index files are copied whole).
        let needed = self.needed_packs();
        let files = self.files_to_copy(t, needed.as_ref());
        let wanted: Option<HashSet<Id>> = needed.as_ref().map(|n| {
            files
                .iter()
                .flat_map(|f| f.packs.iter().copied())
                .chain(n.iter().copied())
                .collect()
        });
        let mut has: HashSet<Id> = tl.packs.keys().copied().collect();
        let mut todo = Vec::new();
        for info in &self.index.packs {
            if has.contains(&info.id)
                || info.replicas.intersection(src).is_empty()
                || wanted.as_ref().is_some_and(|w| !w.contains(&info.id))
            {
                continue;
            }
            let holders = self.holders(src, |l| l.packs.contains_key(&info.id));
            if holders.is_empty() {
                rep.skip(format!(
                    "data/{}: described by a source's index but stored on no source",
                    info.id.to_hex()
                ));
                continue;
            }
            todo.push((info.id, info.size, holders));
        }
        p.packs_total.store(todo.len() as u64, Relaxed);
        p.bytes_total
            .store(todo.iter().map(|(_, s, _)| s).sum(), Relaxed);
        p.phase.store(PHASE_PACKS, Relaxed);
        let connections = connections(self.repo, t);
        let mut copies = futures::stream::iter(todo.into_iter().map(|(id, size, holders)| {
            let h = Handle::new(Kind::Pack, id.to_hex());
            async move {
                let res = if dry_run {
                    Ok(size)
                } else {
                    self.copy(&h, holders, t).await
                };
                (id, size, res)
            }
        }))
        .buffer_unordered(connections);
        while let Some((id, size, res)) = copies.next().await {
            p.packs_done.fetch_add(1, Relaxed);
            p.bytes_done.fetch_add(size, Relaxed);
            match res {
                Ok(n) => {
                    has.insert(id);
                    rep.packs += 1;
                    rep.pack_bytes += n;
                }
                Err(CopyError::Source(msg)) => rep.skip(msg),
                // The target itself fails: stop here, what it holds is
                // still consistent.
                Err(CopyError::Target(e)) => return Err(e),
            }
        }
        drop(copies);

        // Index files whose packs are all on the target now.
        p.phase.store(PHASE_INDEX, Relaxed);
        let mut indexed: HashSet<Id> = self
            .index
            .packs
            .iter()
            .filter(|info| info.replicas.contains(t))
            .map(|info| info.id)
            .collect();
        for f in files {
            if f.replicas.intersection(src).is_empty() || tl.index.contains(&f.name) {
                continue;
            }
            let absent = f.packs.iter().filter(|id| !has.contains(id)).count();
            if absent > 0 {
                rep.skip(format!(
                    "index/{}: {absent} of its packs could not be copied",
                    f.name
                ));
                continue;
            }
            let h = Handle::new(Kind::Index, &f.name);
            let holders = self.holders(src, |l| l.index.contains(&f.name));
            if !self.copy_doc(&h, holders, t, dry_run, rep).await? {
                continue;
            }
            rep.index_files += 1;
            indexed.extend(f.packs.iter().copied());
        }

        // Snapshots whose every needed pack is on the target and indexed there.
        p.phase.store(PHASE_SNAPSHOTS, Relaxed);
        for e in self.snaps {
            let name = e.id.to_hex();
            if e.replicas.intersection(src).is_empty() || tl.snapshots.contains(&name) {
                continue;
            }
            let Some(needs) = self.needs.get(&e.id) else {
                continue;
            };
            let lacking = needs
                .packs
                .iter()
                .map(|&pk| self.index.packs[pk as usize].id)
                .filter(|id| !has.contains(id) || !indexed.contains(id))
                .count();
            if needs.is_broken() || lacking > 0 {
                rep.skip(format!(
                    "snapshots/{name}: not copied, {} of the data it needs is on no source{}",
                    if lacking > 0 {
                        format!("{lacking} pack(s)")
                    } else {
                        "some".to_string()
                    },
                    if needs.is_broken() {
                        " (it is damaged; see `cairn check`)"
                    } else {
                        ""
                    }
                ));
                continue;
            }
            let h = Handle::new(Kind::Snapshot, &name);
            let holders = self.holders(src, |l| l.snapshots.contains(&name));
            if !self.copy_doc(&h, holders, t, dry_run, rep).await? {
                continue;
            }
            rep.snapshots += 1;
        }
        Ok(())
    }

    /// Copy an index file or snapshot (unless `dry_run`): `Ok(false)` when
    /// no source had a good copy (noted in `rep`), an error when the target
    /// fails.
    async fn copy_doc(
        &self,
        h: &Handle,
        holders: ReplicaSet,
        t: usize,
        dry_run: bool,
        rep: &mut SyncReport,
    ) -> Result<bool> {
        if dry_run {
            return Ok(true);
        }
        match self.copy(h, holders, t).await {
            Ok(_) => Ok(true),
            Err(CopyError::Source(msg)) => {
                rep.skip(msg);
                Ok(false)
            }
            Err(CopyError::Target(e)) => Err(e),
        }
    }

    /// Copy one content-addressed object to replica `t` from the first
    /// holder whose copy hashes to its name.
    async fn copy(&self, h: &Handle, holders: ReplicaSet, t: usize) -> Result<u64, CopyError> {
        let (data, _) = self.repo.get_verified_from(h, holders).await.map_err(|f| {
            CopyError::Source(format!("{h}: no good copy on any source ({})", f.reasons()))
        })?;
        let n = data.len() as u64;
        put_create(self.repo.replica(t), h, data)
            .await
            .map(|()| n)
            .map_err(CopyError::Target)
    }
}

enum CopyError {
    /// No source had a good copy; the target is fine.
    Source(String),
    /// Writing to the target failed.
    Target(Error),
}

impl crate::ops::progress::ProgressSource for SyncProgress {
    fn event(&self, elapsed: std::time::Duration) -> crate::ops::progress::ProgressEvent {
        use crate::ops::progress::{ProgressEvent, SyncEvent, SyncTargetEvent};
        ProgressEvent::Sync(SyncEvent {
            seconds: elapsed.as_secs_f64(),
            targets: self
                .targets
                .iter()
                .map(|(name, p)| SyncTargetEvent {
                    replica: name.clone(),
                    phase: p.phase.load(Relaxed),
                    packs_done: p.packs_done.load(Relaxed),
                    packs_total: p.packs_total.load(Relaxed),
                    bytes_done: p.bytes_done.load(Relaxed),
                    bytes_total: p.bytes_total.load(Relaxed),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_missed_a_backup_is_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let replicas = memory_replicas(2);
        init(replicas.clone()).await;
        // A backup that only reached the first replica.
        let first = open(replicas[..1].to_vec()).await;
        backup_dir(&first, &src).await;
        let repo = open(replicas).await;
        let st = crate::ops::status::status(&repo, None).await.unwrap();
        assert!(!st.all_complete());
        let opts = SyncOptions {
            from: repo.all(),
            to: vec![1],
            dry_run: false,
            only: None,
        };
        let reports = sync(&repo, &opts, &SyncProgress::new(&repo, &[1]))
            .await
            .unwrap();
        assert!(reports[0].is_ok(), "{reports:?}");
        assert_eq!(reports[0].snapshots, 1);
        assert!(reports[0].packs > 0);
        assert_eq!(outcome(&reports, &[]), crate::ops::Outcome::Ok);
        let st = crate::ops::status::status(&repo, None).await.unwrap();
        assert!(st.all_complete(), "{st:?}");
        assert_eq!(packs(&repo, 0).await.len(), packs(&repo, 1).await.len());
    }
}
