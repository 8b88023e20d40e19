//! `key reencrypt`: rewrite every object of an older data-key epoch under
//! the current one, on every replica (docs/key-rotation.md).
//!
//! **Copy** (shared lock: backups go on). Old packs are taken in batches,
//! grouped by the replicas holding them. Each is read once from the
//! cheapest holder, its blobs authenticated and copied into new packs
//! built once and stored with the same bytes on every holder, and the
//! batch's index files are written to those holders. The repository itself
//! is the checkpoint: a blob already in a current-epoch pack described on
//! the same replicas is not copied again, so a run killed at any point
//! resumes where the last batch's index files left it.
//!
//! **Swap** (exclusive lock, short). On each replica, packs no index file
//! describes (the debris of interrupted runs: no backup writes under the
//! exclusive lock) are deleted, as `prune --grace 0` would; unless an
//! index file cannot be read, and then nothing is deleted there. Old packs
//! all of whose blobs now sit in current-epoch packs there are dropped: index
//! files describing what stays are written (under the current epoch) before
//! the old index files are deleted, and the old packs go last. Snapshots
//! and prune's marks of old epochs are sealed again, the new snapshot
//! stored before the old one is deleted (its id changes: it is the hash of
//! the stored bytes). Every step leaves a repository `check` accepts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use cairn_backends::{ErrorKind, Handle, Kind};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::crypto::{Header, ObjectKind, HEADER_LEN};
use crate::format::id::Id;
use crate::format::index::IndexPack;
use crate::format::marks::MARKER_NAME;
use crate::format::snapshot::Snapshot;
use crate::ops::packer::{copy_blobs, PackWriter};
use crate::repo::survey::{list_all, Listing};
use crate::repo::{seal_doc, LockMode, ReplicaSet, Repository};

/// Options of `key reencrypt`.
#[derive(Clone, Debug)]
pub struct ReencryptOptions {
    /// Old packs per batch: a batch's index files are the checkpoint.
    pub batch_packs: usize,
}

impl Default for ReencryptOptions {
    fn default() -> Self {
        ReencryptOptions { batch_packs: 32 }
    }
}

/// What re-encryption did on one replica.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicaReencrypt {
    pub replica: String,
    /// Old-epoch packs found, copied in this run, and deleted.
    pub old_packs: u64,
    pub packs_copied: u64,
    pub packs_deleted: u64,
    /// New packs and their bytes written here.
    pub new_packs: u64,
    pub new_bytes: u64,
    pub index_written: u64,
    pub index_deleted: u64,
    pub snapshots_rewritten: u64,
    /// Packs no index file describes (left by an interrupted run),
    /// deleted in the swap phase.
    pub strays_deleted: u64,
    pub error: Option<String>,
}

/// What `key reencrypt` did.
#[derive(Clone, Debug, Serialize)]
pub struct ReencryptReport {
    pub epoch: u32,
    pub replicas: Vec<ReplicaReencrypt>,
    /// Stored bytes read from old packs, and the time taken.
    pub bytes_read: u64,
    pub seconds: f64,
    /// Read throughput, MB/s (10^6 bytes).
    pub mb_per_second: f64,
    /// Old snapshot id → new id.
    pub snapshots: Vec<(Id, Id)>,
    /// Why the swap phase did not run (backups held the lock): run again.
    pub swap_skipped: Option<String>,
    /// Whether no object of an older epoch is left on any replica.
    pub complete: bool,
}

impl ReencryptReport {
    pub fn outcome(&self) -> crate::ops::Outcome {
        use crate::ops::Outcome;
        let failed: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.error.is_some())
            .map(|r| r.replica.clone())
            .collect();
        if !failed.is_empty() {
            if failed.len() == self.replicas.len() {
                Outcome::Failed
            } else {
                Outcome::Partial { replicas: failed }
            }
        } else if !self.complete {
            Outcome::Incomplete
        } else {
            Outcome::Ok
        }
    }
}

/// Progress after each batch, for a front end to show.
#[derive(Clone, Debug, Serialize)]
pub struct ReencryptProgress {
    pub packs_done: u64,
    pub packs_total: u64,
    pub bytes_read: u64,
    pub seconds: f64,
    /// Per replica: new bytes written so far.
    pub written: Vec<(String, u64)>,
}

/// Everything re-encryption reads before it acts.
struct State {
    listings: Vec<Option<Listing>>,
    descs: HashMap<Id, IndexPack>,
    /// Per pack, the replicas whose index files describe it.
    described: HashMap<Id, ReplicaSet>,
    /// The index files that could be read.
    read_index: HashSet<String>,
}

impl State {
    async fn load(repo: &Repository) -> Result<State> {
        let listings: Vec<Option<Listing>> =
            list_all(repo).await.into_iter().map(Result::ok).collect();
        let mut descs = HashMap::new();
        let (index, files) = repo
            .load_index_each(|packs| {
                for p in packs {
                    descs.entry(p.id).or_insert_with(|| p.clone());
                }
            })
            .await?;
        let described = index.packs.iter().map(|p| (p.id, p.replicas)).collect();
        Ok(State {
            listings,
            descs,
            described,
            read_index: files.into_iter().map(|f| f.name).collect(),
        })
    }

    /// Replicas that store pack `id` and describe it.
    fn holders(&self, id: &Id) -> ReplicaSet {
        let mut s = ReplicaSet::EMPTY;
        for r in self
            .described
            .get(id)
            .copied()
            .unwrap_or(ReplicaSet::EMPTY)
            .iter()
        {
            if self.listings[r]
                .as_ref()
                .is_some_and(|l| l.packs.contains_key(id))
            {
                s.insert(r);
            }
        }
        s
    }

    /// Per replica, the blobs held there in current-epoch packs.
    fn current_blobs(&self, n: usize, epoch: u32) -> Vec<HashSet<Id>> {
        let mut out = vec![HashSet::new(); n];
        for (id, d) in &self.descs {
            if d.header.epoch != epoch {
                continue;
            }
            for r in self.holders(id).iter() {
                out[r].extend(d.blobs.iter().map(|b| b.id));
            }
        }
        out
    }

    /// Packs of older epochs that some replica stores and describes.
    fn old_packs(&self, epoch: u32) -> Vec<Id> {
        let mut v: Vec<Id> = self
            .descs
            .values()
            .filter(|d| d.header.epoch < epoch && !self.holders(&d.id).is_empty())
            .map(|d| d.id)
            .collect();
        v.sort();
        v
    }
}

/// Re-encrypt every object of an older epoch on every replica of `repo`
/// (see the module docs). `progress` is called after each batch.
pub async fn reencrypt(
    repo: &Repository,
    opts: &ReencryptOptions,
    progress: &(dyn Fn(&ReencryptProgress) + Sync),
) -> Result<ReencryptReport> {
    let epoch = repo.keyring().current_epoch;
    // A replica that missed the rotation (unreachable then) gets the
    // newest keyring first.
    repo.converge_keys().await?;
    let (newest, _, _) = repo.newest_keyring().await?;
    if newest.current_epoch != epoch {
        return Err(Error::Invalid(format!(
            "epoch {} was made current since this command started (it uses {epoch}); run it again",
            newest.current_epoch
        )));
    }
    let started = Instant::now();
    let mut report = ReencryptReport {
        epoch,
        replicas: repo
            .replicas()
            .iter()
            .map(|r| ReplicaReencrypt {
                replica: r.name.clone(),
                ..Default::default()
            })
            .collect(),
        bytes_read: 0,
        seconds: 0.0,
        mb_per_second: 0.0,
        snapshots: Vec::new(),
        swap_skipped: None,
        complete: false,
    };
    for u in repo.unavailable() {
        report.replicas.push(ReplicaReencrypt {
            replica: u.name.clone(),
            error: Some(crate::error::chain(&u.error)),
            ..Default::default()
        });
    }
    crate::ops::audit::record(
        repo,
        "key reencrypt",
        &format!("start; epoch {epoch}"),
        "started",
    )
    .await
    .ok();
    let res = run(repo, opts, epoch, started, &mut report, progress).await;
    report.seconds = started.elapsed().as_secs_f64();
    report.mb_per_second = report.bytes_read as f64 / 1e6 / report.seconds.max(1e-9);
    let (outcome, detail) = match &res {
        Ok(()) => (
            if report.complete { "ok" } else { "incomplete" }.to_string(),
            format!(
                "finish; epoch {epoch}; {} packs copied, {} deleted, {} snapshots rewritten{}",
                report.replicas.iter().map(|r| r.packs_copied).sum::<u64>(),
                report.replicas.iter().map(|r| r.packs_deleted).sum::<u64>(),
                report.snapshots.len(),
                report
                    .swap_skipped
                    .as_ref()
                    .map(|w| format!("; swap skipped: {w}"))
                    .unwrap_or_default()
            ),
        ),
        Err(e) => (
            format!("failed: {}", crate::error::chain(e)),
            format!("finish; epoch {epoch}"),
        ),
    };
    crate::ops::audit::record(repo, "key reencrypt", &detail, &outcome)
        .await
        .ok();
    res.map(|()| report)
}

/// Whether every replica was surveyed and holds no object of an epoch
/// older than `epoch`.
async fn nothing_older(repo: &Repository, epoch: u32) -> Result<bool> {
    let st = crate::ops::keys::key_status(repo).await?;
    Ok(st
        .replicas
        .iter()
        .all(|r| r.error.is_none() && r.epochs.iter().all(|e| e.epoch >= epoch)))
}

async fn run(
    repo: &Repository,
    opts: &ReencryptOptions,
    epoch: u32,
    started: Instant,
    report: &mut ReencryptReport,
    progress: &(dyn Fn(&ReencryptProgress) + Sync),
) -> Result<()> {
    // Nothing to do takes no lock and deletes nothing (the swap phase
    // would also clear debris, which is prune's job when there is no
    // re-encryption to finish).
    if nothing_older(repo, epoch).await? {
        report.complete = report.replicas.iter().all(|r| r.error.is_none());
        return Ok(());
    }
    repo.with_lock(LockMode::Shared, "key reencrypt (copy)", async || {
        copy_phase(repo, opts, epoch, started, report, progress).await
    })
    .await?;
    let swapped = repo
        .with_lock(LockMode::Exclusive, "key reencrypt (swap)", async || {
            swap_phase(repo, epoch, report).await
        })
        .await;
    match swapped {
        Ok(()) => {}
        Err(Error::Locked(why)) => report.swap_skipped = Some(why),
        Err(e) => return Err(e),
    }
    report.complete =
        report.replicas.iter().all(|r| r.error.is_none()) && nothing_older(repo, epoch).await?;
    Ok(())
}

async fn copy_phase(
    repo: &Repository,
    opts: &ReencryptOptions,
    epoch: u32,
    started: Instant,
    report: &mut ReencryptReport,
    progress: &(dyn Fn(&ReencryptProgress) + Sync),
) -> Result<()> {
    let n = repo.replicas().len();
    let st = State::load(repo).await?;
    for (r, l) in st.listings.iter().enumerate() {
        if l.is_none() {
            report.replicas[r].error = Some("its objects could not be listed".into());
        }
    }
    let current = st.current_blobs(n, epoch);
    let old = st.old_packs(epoch);
    // What each old pack still needs copied, per group of holders: a blob
    // already in a current-epoch pack on every holder is done.
    let mut todo: BTreeMap<u64, (ReplicaSet, Vec<Id>)> = BTreeMap::new();
    for id in &old {
        let holders = st.holders(id);
        for r in holders.iter() {
            report.replicas[r].old_packs += 1;
        }
        let d = &st.descs[id];
        let done = d
            .blobs
            .iter()
            .all(|b| holders.iter().all(|r| current[r].contains(&b.id)));
        if !done {
            let key = holders.iter().fold(0u64, |a, i| a | (1 << i));
            todo.entry(key).or_insert((holders, Vec::new())).1.push(*id);
        }
    }
    let total: u64 = todo.values().map(|(_, v)| v.len() as u64).sum();
    let mut done = 0u64;
    for (holders, packs) in todo.into_values() {
        for batch in packs.chunks(opts.batch_packs.max(1)) {
            repo.check_cancelled()?;
            let mut out = PackWriter::new(repo, holders);
            // Blobs already re-encrypted on every holder are not copied
            // again (a resumed run).
            let mut copied: HashSet<Id> = match holders.iter().next() {
                Some(first) => current[first]
                    .iter()
                    .filter(|b| holders.iter().all(|o| current[o].contains(b)))
                    .copied()
                    .collect(),
                None => HashSet::new(),
            };
            for id in batch {
                let desc = &st.descs[id];
                let needed: HashSet<Id> = desc.blobs.iter().map(|b| b.id).collect();
                report.bytes_read +=
                    copy_blobs(repo, *id, holders, Some(&needed), &mut copied, &mut out).await?;
                for r in holders.iter() {
                    report.replicas[r].packs_copied += 1;
                }
            }
            let new = out.finish().await?;
            // The checkpoint: the new packs' index files on every holder.
            let files = repo.seal_index_files(&new);
            for r in holders.iter() {
                for (name, data) in &files {
                    repo.put_doc(repo.replica(r), Kind::Index, name, data.clone())
                        .await?;
                }
                let rep = &mut report.replicas[r];
                rep.index_written += files.len() as u64;
                rep.new_packs += new.len() as u64;
                rep.new_bytes += new.iter().map(|p| p.size).sum::<u64>();
            }
            done += batch.len() as u64;
            let p = ReencryptProgress {
                packs_done: done,
                packs_total: total,
                bytes_read: report.bytes_read,
                seconds: started.elapsed().as_secs_f64(),
                written: report
                    .replicas
                    .iter()
                    .take(n)
                    .map(|r| (r.replica.clone(), r.new_bytes))
                    .collect(),
            };
            progress(&p);
            crate::ops::audit::record(
                repo,
                "key reencrypt",
                &format!("progress; epoch {epoch}; {done}/{total} packs copied"),
                "checkpoint",
            )
            .await
            .ok();
        }
    }
    Ok(())
}

async fn swap_phase(repo: &Repository, epoch: u32, report: &mut ReencryptReport) -> Result<()> {
    let st = State::load(repo).await?;
    let n = repo.replicas().len();
    let current = st.current_blobs(n, epoch);
    for (r, held) in current.iter().enumerate() {
        repo.check_cancelled()?;
        let Some(listing) = &st.listings[r] else {
            continue;
        };
        if let Err(e) = swap_on(repo, &st, r, listing, held, epoch, report).await {
            report.replicas[r].error = Some(crate::error::chain(&e));
        }
    }
    rewrite_snapshots(repo, epoch, report).await?;
    for r in 0..n {
        if let Err(e) = reseal_marks(repo, r, epoch).await {
            report.replicas[r].error = Some(crate::error::chain(&e));
        }
    }
    Ok(())
}

/// On replica `r`: drop the old packs whose blobs all sit in current-epoch
/// packs there; rewrite its index under the current epoch.
async fn swap_on(
    repo: &Repository,
    st: &State,
    r: usize,
    listing: &Listing,
    current: &HashSet<Id>,
    epoch: u32,
    report: &mut ReencryptReport,
) -> Result<()> {
    let rep = &mut report.replicas[r];
    let described = |id: &Id| st.described.get(id).is_some_and(|s| s.contains(r));
    let mut gone = HashSet::new();
    for (id, d) in &st.descs {
        if d.header.epoch < epoch
            && described(id)
            && d.blobs.iter().all(|b| current.contains(&b.id))
        {
            gone.insert(*id);
        }
    }
    // What an unreadable index file describes is unknown: nothing may be
    // deleted here.
    if let Some(name) = listing.index.iter().find(|n| !st.read_index.contains(*n)) {
        return Err(Error::Corrupt(format!(
            "index/{name} cannot be read, so what it describes is unknown (run `cairn check`, \
             then `cairn repair index`)"
        )));
    }
    // Packs no index file describes are the debris of interrupted runs
    // (under the exclusive lock no backup is writing): they go, as with
    // `prune --grace 0`, or an old epoch would outlive the run.
    let mut strays: Vec<Id> = listing
        .packs
        .keys()
        .filter(|id| !described(id))
        .copied()
        .collect();
    strays.sort();
    for id in strays {
        repo.check_cancelled()?;
        repo.delete_from(r, &Handle::new(Kind::Pack, id.to_hex()))
            .await?;
        rep.strays_deleted += 1;
    }
    let old_index: Vec<&String> = listing.index.iter().collect();
    let needs_index = !gone.is_empty() || index_has_old_epoch(repo, r, &old_index, epoch).await;
    if !needs_index {
        return Ok(());
    }
    // Every pack the replica describes stays described (also one it lacks:
    // hiding a missing pack would hide the damage from `check`).
    let mut keep: Vec<IndexPack> = st
        .descs
        .values()
        .filter(|d| described(&d.id) && !gone.contains(&d.id))
        .cloned()
        .collect();
    keep.sort_by_key(|p| p.id);
    let files = repo.seal_index_files(&keep);
    let replica = repo.replica(r);
    let new_names: HashSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for (name, data) in &files {
        repo.put_doc(replica, Kind::Index, name, data.clone())
            .await?;
        rep.index_written += 1;
    }
    for name in old_index.iter().filter(|n| !new_names.contains(n.as_str())) {
        repo.check_cancelled()?;
        repo.delete_from(r, &Handle::new(Kind::Index, name.as_str()))
            .await?;
        rep.index_deleted += 1;
    }
    let mut gone: Vec<Id> = gone
        .into_iter()
        .filter(|id| listing.packs.contains_key(id))
        .collect();
    gone.sort();
    for id in gone {
        repo.check_cancelled()?;
        repo.delete_from(r, &Handle::new(Kind::Pack, id.to_hex()))
            .await?;
        rep.packs_deleted += 1;
    }
    Ok(())
}

/// Whether any of the replica's index files is sealed under an older epoch.
async fn index_has_old_epoch(repo: &Repository, r: usize, names: &[&String], epoch: u32) -> bool {
    for name in names {
        let h = Handle::new(Kind::Index, name.as_str());
        match repo
            .replica(r)
            .backend
            .get(&h, Some(0..HEADER_LEN as u64))
            .await
        {
            Ok(head) if Header::decode(&head).is_ok_and(|h| h.epoch >= epoch) => {}
            _ => return true,
        }
    }
    false
}

/// Seal every snapshot of an older epoch again. A snapshot whose new copy
/// already exists (a run killed between writing it and deleting the old
/// one) only loses its old copy.
async fn rewrite_snapshots(
    repo: &Repository,
    epoch: u32,
    report: &mut ReencryptReport,
) -> Result<()> {
    let snaps = repo.list_snapshots().await?;
    let mut old = Vec::new();
    let mut fresh: Vec<(Snapshot, Id, ReplicaSet)> = Vec::new();
    for s in snaps {
        let h = Handle::new(Kind::Snapshot, s.id.to_hex());
        let first = s.replicas.iter().next().unwrap_or(0);
        let head = repo
            .replica(first)
            .backend
            .get(&h, Some(0..HEADER_LEN as u64))
            .await
            .map_err(|e| Error::backend(&repo.replica(first).name, e))?;
        let e = Header::decode(&head).map_err(|e| Error::Crypto {
            what: h.to_string(),
            source: e,
        })?;
        if e.epoch < epoch {
            old.push(s);
        } else {
            fresh.push((s.snapshot, s.id, s.replicas));
        }
    }
    let mut forgotten = Vec::new();
    for s in old {
        repo.check_cancelled()?;
        let twin = fresh
            .iter()
            .find(|(f, _, on)| *f == s.snapshot && on.is_superset(s.replicas))
            .map(|(_, id, _)| *id);
        let new_id = match twin {
            Some(id) => id,
            None => {
                let json = serde_json::to_vec(&s.snapshot).expect("snapshot serializes");
                let sealed = seal_doc(repo.keyring(), ObjectKind::Snapshot, &json);
                let id = Id::of_stored(&sealed);
                let data = Bytes::from(sealed);
                for r in s.replicas.iter() {
                    repo.put_doc(repo.replica(r), Kind::Snapshot, &id.to_hex(), data.clone())
                        .await?;
                }
                id
            }
        };
        for r in s.replicas.iter() {
            repo.delete_from(r, &Handle::new(Kind::Snapshot, s.id.to_hex()))
                .await?;
            report.replicas[r].snapshots_rewritten += 1;
        }
        forgotten.push(s.id);
        report.snapshots.push((s.id, new_id));
    }
    // The old ids are gone on purpose: not a rollback.
    repo.record_forgotten(&forgotten);
    Ok(())
}

/// Seal prune's marks on replica `r` again if an older epoch sealed them
/// (read within prune's size bound: junk starts the marks afresh).
async fn reseal_marks(repo: &Repository, r: usize, epoch: u32) -> Result<()> {
    let replica = repo.replica(r);
    let h = Handle::new(Kind::Marker, MARKER_NAME);
    let head = match replica.backend.get(&h, Some(0..HEADER_LEN as u64)).await {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::backend(&replica.name, e)),
    };
    if Header::decode(&head).is_ok_and(|h| h.epoch >= epoch) {
        return Ok(());
    }
    let marks = crate::ops::prune::read_marks(repo, r).await?;
    crate::ops::prune::write_marks(repo, r, &marks).await
}
