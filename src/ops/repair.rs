//! `repair`: heal one replica from the others, rebuild a replica's index
//! from its packs, and deal with snapshots whose data is gone everywhere.
//!
//! Every repair can run as a dry run, which reports exactly what it would
//! do. Writes keep the replica consistent at each step: a pack is replaced
//! by a verified copy before anything else refers to it, new index files
//! are written before old ones are removed, and a marked snapshot is
//! written before the original is removed.

use std::collections::HashSet;

use bytes::Bytes;
use cairn_backends::{Handle, Kind, PutMode};
use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::crypto::{ObjectKind, HEADER_LEN};
use crate::format::id::Id;
use crate::format::index::IndexPack;
use crate::format::pack;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::ops::{Finding, Outcome, Problem};
use crate::repo::survey::{list_all, Listing, NeedsCache};
use crate::repo::MasterIndex;
use crate::repo::{seal_doc, LockMode, ReplicaSet, Repository, TreeWalker, Visit, Visitor};
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct RepairOptions {
    /// Report what would be done, change nothing.
    pub dry_run: bool,
    /// `repair packs`: also download every pack on the replica and replace
    /// those whose bytes do not hash to their name.
    pub read_data: bool,
}

/// What a repair did (or would do) on one replica.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    pub replica: String,
    pub dry_run: bool,
    /// One line per change made (or, in a dry run, planned).
    pub actions: Vec<String>,
    /// Problems the repair could not fix.
    pub unfixable: Vec<String>,
    /// The same, typed.
    pub findings: Vec<Finding>,
}

impl RepairReport {
    /// Record a problem the repair could not fix; `msg` starts with the
    /// object's name.
    fn unfixable(&mut self, msg: String) {
        let object = msg.split(':').next().unwrap_or_default().to_string();
        self.findings.push(
            Finding::error(Problem::LostData, msg.clone())
                .replica(&self.replica)
                .object(object),
        );
        self.unfixable.push(msg);
    }

    /// Damaged when something had no good copy anywhere.
    pub fn outcome(&self) -> Outcome {
        if self.unfixable.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Damaged
        }
    }

    fn new(repo: &Repository, t: usize, opts: &RepairOptions) -> RepairReport {
        RepairReport {
            replica: repo.replicas()[t].name.clone(),
            dry_run: opts.dry_run,
            ..Default::default()
        }
    }
}

fn be(repo: &Repository, i: usize) -> impl Fn(cairn_backends::BackendError) -> Error + '_ {
    move |e| Error::backend(&repo.replicas()[i].name, e)
}

/// Rewrite packs of replica `t` that are missing, have the wrong size or
/// (with `read_data`) do not hash to their name, from a replica whose copy
/// is good. The packs considered are those `t`'s index describes and those
/// `t`'s snapshots need; packs a snapshot needs that `t`'s index does not
/// describe get a new index file on `t`.
pub async fn repair_packs(
    repo: &Repository,
    t: usize,
    opts: &RepairOptions,
) -> Result<RepairReport> {
    // Exclusive: it removes or rewrites what a concurrent backup may have
    // just written (index files, snapshots, packs).
    repo.with_lock(LockMode::Exclusive, "repair packs", async || {
        repair_packs_locked(repo, t, opts).await
    })
    .await
}

async fn repair_packs_locked(
    repo: &Repository,
    t: usize,
    opts: &RepairOptions,
) -> Result<RepairReport> {
    let mut rep = RepairReport::new(repo, t, opts);
    let mut listings = list_all(repo).await;
    // The target must be listable; keep its own error (exit code).
    if listings[t].is_err() {
        listings[t] = Ok(Listing::take(repo, t).await?);
    }
    let tl = listings[t].as_ref().expect("listed above");
    let index = repo.load_index().await?;
    // What t must hold: packs of its own index, and packs its snapshots need.
    let mut wanted: HashSet<u32> = (0..index.packs.len() as u32)
        .filter(|&p| index.packs[p as usize].replicas.contains(t))
        .collect();
    let mut cache = NeedsCache::default();
    for e in repo.list_snapshots().await? {
        if tl.snapshots.contains(&e.id.to_hex()) {
            let needs = cache.of_snapshot(repo, &index, &e.snapshot).await;
            wanted.extend(needs.packs.iter().copied());
        }
    }
    let mut wanted: Vec<u32> = wanted.into_iter().collect();
    wanted.sort_unstable();

    // Find the bad ones.
    let mut bad: Vec<(u32, String)> = Vec::new();
    let mut to_read = Vec::new();
    for &p in &wanted {
        let info = &index.packs[p as usize];
        match tl.packs.get(&info.id) {
            None => bad.push((p, "missing".into())),
            Some(&size) if size != info.size => bad.push((
                p,
                format!("{size} bytes, the index says {} (damaged)", info.size),
            )),
            Some(_) if opts.read_data => to_read.push(p),
            Some(_) => {}
        }
    }
    let replica = &repo.replicas()[t];
    let connections = crate::ops::sync::connections(repo, t);
    let mut reads = futures::stream::iter(to_read.into_iter().map(|p| {
        let h = Handle::new(Kind::Pack, index.packs[p as usize].id.to_hex());
        async move {
            let res = replica.backend.get(&h, None).await;
            (p, h, res)
        }
    }))
    .buffer_unordered(connections);
    while let Some((p, h, res)) = reads.next().await {
        match res {
            Ok(d) if Id::of_stored(&d).to_hex() == h.name => {}
            Ok(_) => bad.push((p, "content does not match its name (damaged)".into())),
            Err(e) if e.kind() == cairn_backends::ErrorKind::NotFound => {
                bad.push((p, "missing".into()))
            }
            Err(e) => return Err(Error::backend(&replica.name, e)),
        }
    }
    drop(reads);
    bad.sort_by_key(|(p, _)| *p);

    // Replace them from good copies elsewhere.
    let mut new_entries: Vec<IndexPack> = Vec::new();
    for (p, why) in bad {
        let info = &index.packs[p as usize];
        let h = Handle::new(Kind::Pack, info.id.to_hex());
        let holders: ReplicaSet = (0..repo.replicas().len())
            .filter(|&i| i != t)
            .filter(|&i| {
                listings[i]
                    .as_ref()
                    .is_ok_and(|l| l.packs.contains_key(&info.id))
            })
            .collect();
        let (data, s) = match repo.get_verified_from(&h, holders).await {
            Ok(got) => got,
            Err(f) => {
                rep.unfixable(format!(
                    "{h}: {why}; no good copy on another replica{}",
                    if f.tried.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", f.reasons())
                    }
                ));
                continue;
            }
        };
        if !opts.dry_run {
            replica
                .backend
                .put(&h, data.clone(), PutMode::Overwrite)
                .await
                .map_err(be(repo, t))?;
        }
        rep.actions.push(format!(
            "{h}: {why}; {} from {}",
            if opts.dry_run { "would copy" } else { "copied" },
            repo.replicas()[s].name
        ));
        if !info.replicas.contains(t) {
            new_entries.push(index_pack(repo, info.id, &data, &data, data.len() as u64)?);
        }
    }
    // Packs t's snapshots need that t has but its index does not describe.
    for &p in &wanted {
        let info = &index.packs[p as usize];
        if !info.replicas.contains(t)
            && tl.packs.get(&info.id) == Some(&info.size)
            && !new_entries.iter().any(|e| e.id == info.id)
        {
            match read_pack_index(repo, t, info.id, info.size).await {
                Ok(e) => new_entries.push(e),
                Err(e) => rep
                    .unfixable
                    .push(format!("data/{}: {e}", info.id.to_hex())),
            }
        }
    }
    if !new_entries.is_empty() {
        for (name, data) in repo.seal_index_files(&new_entries) {
            if !opts.dry_run {
                repo.put_doc(replica, Kind::Index, &name, data).await?;
            }
            rep.actions.push(format!(
                "index/{name}: {} for packs the replica's snapshots need",
                if opts.dry_run {
                    "would write"
                } else {
                    "written"
                }
            ));
        }
    }
    Ok(rep)
}

/// Index entry of a pack from its first bytes and its last bytes.
fn index_pack(repo: &Repository, id: Id, head: &[u8], tail: &[u8], size: u64) -> Result<IndexPack> {
    let keyring = &repo.keyring();
    let (header, blobs) = pack::read_footer_parts(head, tail, size, &keyring.repo_id, |e| {
        keyring.epoch_key(e).cloned()
    })
    .map_err(|e| Error::Corrupt(format!("data/{}: {e}", id.to_hex())))?;
    Ok(IndexPack {
        id,
        size,
        header,
        blobs,
    })
}

/// Read a pack's header and footer from replica `t` (two or three ranged
/// reads, not the whole pack).
async fn read_pack_index(repo: &Repository, t: usize, id: Id, size: u64) -> Result<IndexPack> {
    const GUESS: u64 = 64 << 10;
    let b = &repo.replicas()[t].backend;
    let h = Handle::new(Kind::Pack, id.to_hex());
    let err = be(repo, t);
    if size > pack::MAX_PACK_BYTES {
        return Err(Error::Corrupt(format!(
            "{h}: {size} bytes, over the {}-byte limit of its kind (not read)",
            pack::MAX_PACK_BYTES
        )));
    }
    if size <= GUESS + HEADER_LEN as u64 {
        let all = b.get(&h, Some(0..size)).await.map_err(&err)?;
        return index_pack(repo, id, &all, &all, all.len() as u64);
    }
    let head = b.get(&h, Some(0..HEADER_LEN as u64)).await.map_err(&err)?;
    let mut tail = b.get(&h, Some(size - GUESS..size)).await.map_err(&err)?;
    let need = pack::tail_len(&tail[tail.len().saturating_sub(4)..])
        .map_err(|e| Error::Corrupt(format!("{h}: {e}")))?;
    if need > tail.len() as u64 && need <= size {
        tail = b.get(&h, Some(size - need..size)).await.map_err(&err)?;
    }
    index_pack(repo, id, &head, &tail, size)
}

/// Rebuild the index of replica `t` from the packs it holds: read every
/// pack's authenticated footer, write new index files, then remove the old
/// ones. Packs whose footer cannot be read are left out and reported.
pub async fn repair_index(
    repo: &Repository,
    t: usize,
    opts: &RepairOptions,
) -> Result<RepairReport> {
    // Exclusive: it removes or rewrites what a concurrent backup may have
    // just written (index files, snapshots, packs).
    repo.with_lock(LockMode::Exclusive, "repair index", async || {
        repair_index_locked(repo, t, opts).await
    })
    .await
}

async fn repair_index_locked(
    repo: &Repository,
    t: usize,
    opts: &RepairOptions,
) -> Result<RepairReport> {
    let mut rep = RepairReport::new(repo, t, opts);
    let listing = Listing::take(repo, t).await?;
    let connections = crate::ops::sync::connections(repo, t);
    let mut packs: Vec<(Id, u64)> = listing.packs.iter().map(|(k, v)| (*k, *v)).collect();
    packs.sort();
    let mut reads = futures::stream::iter(
        packs
            .iter()
            .map(|&(id, size)| async move { (id, read_pack_index(repo, t, id, size).await) }),
    )
    .buffer_unordered(connections);
    let mut entries = Vec::new();
    while let Some((id, res)) = reads.next().await {
        match res {
            Ok(e) => entries.push(e),
            Err(e) if e.is_damage() => rep.unfixable(format!(
                "data/{}: {e}; left out of the index (`cairn repair packs` replaces it)",
                id.to_hex()
            )),
            Err(e) => return Err(e),
        }
    }
    drop(reads);
    entries.sort_by_key(|e| e.id);
    let files = repo.seal_index_files(&entries);
    let new_names: HashSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let verb = |done: &str, planned: &str| {
        if opts.dry_run {
            planned.to_string()
        } else {
            done.to_string()
        }
    };
    for (name, data) in &files {
        if listing.index.contains(name) {
            continue;
        }
        if !opts.dry_run {
            repo.put_doc(&repo.replicas()[t], Kind::Index, name, data.clone())
                .await?;
        }
        rep.actions.push(format!(
            "index/{name}: {}",
            verb("written", "would be written")
        ));
    }
    for old in &listing.index {
        if new_names.contains(old.as_str()) {
            continue;
        }
        if !opts.dry_run {
            repo.replicas()[t]
                .backend
                .delete(&Handle::new(Kind::Index, old))
                .await
                .map_err(be(repo, t))?;
        }
        rep.actions.push(format!(
            "index/{old}: {}",
            verb("removed (replaced)", "would be removed (replaced)")
        ));
    }
    rep.actions.push(format!(
        "{} packs with {} blobs {} by {} index files",
        entries.len(),
        entries.iter().map(|e| e.blobs.len()).sum::<usize>(),
        verb("are described", "would be described"),
        files.len()
    ));
    Ok(rep)
}

/// One snapshot whose data is partly gone from every replica.
#[derive(Clone, Debug, Serialize)]
pub struct DamagedSnapshot {
    pub id: String,
    pub time: jiff::Timestamp,
    pub paths: Vec<String>,
    /// Files and directories that cannot be restored from any replica.
    pub affected: Vec<String>,
    /// What was done (or would be done).
    pub action: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SnapshotRepair {
    pub dry_run: bool,
    pub snapshots: Vec<DamagedSnapshot>,
    pub errors: Vec<String>,
    /// Replicas that refused a change (named in `errors`).
    pub failed: Vec<String>,
}

impl SnapshotRepair {
    pub fn outcome(&self) -> Outcome {
        if self.errors.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Partial {
                replicas: self.failed.clone(),
            }
        }
    }
}

/// Find snapshots that need data no replica has (a blob in no index, or
/// in a pack stored nowhere) and say which files are affected. Then either
/// mark them — replace each with a copy tagged `damaged`, `partial`, with
/// the affected paths in its errors — or, with `forget`, remove them from
/// every replica.
pub async fn repair_snapshots(
    repo: &Repository,
    forget: bool,
    opts: &RepairOptions,
) -> Result<SnapshotRepair> {
    // Exclusive: it removes or rewrites what a concurrent backup may have
    // just written (index files, snapshots, packs).
    repo.with_lock(LockMode::Exclusive, "repair snapshots", async || {
        repair_snapshots_locked(repo, forget, opts).await
    })
    .await
}

async fn repair_snapshots_locked(
    repo: &Repository,
    forget: bool,
    opts: &RepairOptions,
) -> Result<SnapshotRepair> {
    let mut out = SnapshotRepair {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let listings = list_all(repo).await;
    if let Some((i, Err(e))) = listings.iter().enumerate().find(|(_, l)| l.is_err()) {
        // A pack might be on the replica that cannot be listed: deciding
        // that data is gone needs every replica.
        return Err(Error::Invalid(format!(
            "{} cannot be listed, so lost data cannot be told from unreachable data: {}",
            repo.replicas()[i].name,
            crate::error::chain(e)
        )));
    }
    let stored: HashSet<Id> = listings
        .iter()
        .flatten()
        .flat_map(|l| l.packs.keys().copied())
        .collect();
    let index = repo.load_index().await?;
    let mut cache = NeedsCache::default();
    let mut walker = TreeWalker::new(repo, &index);
    for e in repo.list_snapshots().await? {
        let needs = cache.of_snapshot(repo, &index, &e.snapshot).await;
        let lost = |n: &crate::repo::survey::Needs| {
            n.is_broken()
                || n.packs
                    .iter()
                    .any(|&p| !stored.contains(&index.packs[p as usize].id))
        };
        if !lost(&needs) {
            continue;
        }
        let affected = affected_paths(&mut walker, &index, &stored, &e.snapshot).await;
        let name = e.id.to_hex();
        let holders: Vec<usize> = (0..repo.replicas().len())
            .filter(|&i| e.replicas.contains(i))
            .collect();
        // Removing or replacing deletes this id here: noted first, so that
        // its absence is never taken for a rollback (src/repo/rollback.rs).
        if !opts.dry_run && (forget || !e.snapshot.tags.iter().any(|t| t == "damaged")) {
            repo.record_forgotten(&[e.id]);
        }
        let action = if e.snapshot.tags.iter().any(|t| t == "damaged") && !forget {
            "already marked damaged".to_string()
        } else if forget {
            if !opts.dry_run {
                for &i in &holders {
                    if let Err(err) = repo.replicas()[i]
                        .backend
                        .delete(&Handle::new(Kind::Snapshot, &name))
                        .await
                    {
                        let r = &repo.replicas()[i].name;
                        out.errors.push(format!("{r}: snapshots/{name}: {err}"));
                        if !out.failed.contains(r) {
                            out.failed.push(r.clone());
                        }
                    }
                }
            }
            if opts.dry_run {
                "would be removed".to_string()
            } else {
                "removed".to_string()
            }
        } else {
            let mut marked: Snapshot = e.snapshot.clone();
            marked.tags.push("damaged".into());
            marked.partial = true;
            marked.errors.extend(
                affected
                    .iter()
                    .map(|p| format!("{p}: data lost from every replica")),
            );
            let sealed = Bytes::from(seal_doc(
                repo.keyring(),
                ObjectKind::Snapshot,
                &serde_json::to_vec(&marked).expect("snapshot serializes"),
            ));
            let new_name = Id::of_stored(&sealed).to_hex();
            if !opts.dry_run {
                for &i in &holders {
                    let r = &repo.replicas()[i];
                    // The marked copy first, then the original goes.
                    let res = match repo
                        .put_doc(r, Kind::Snapshot, &new_name, sealed.clone())
                        .await
                    {
                        Ok(()) => r
                            .backend
                            .delete(&Handle::new(Kind::Snapshot, &name))
                            .await
                            .map_err(|e| Error::backend(&r.name, e)),
                        Err(e) => Err(e),
                    };
                    if let Err(err) = res {
                        out.errors.push(format!("snapshots/{name}: {err}"));
                        if !out.failed.contains(&r.name) {
                            out.failed.push(r.name.clone());
                        }
                    }
                }
            }
            format!(
                "{} as {} (tag \"damaged\")",
                if opts.dry_run {
                    "would be replaced"
                } else {
                    "replaced"
                },
                &new_name[..8]
            )
        };
        out.snapshots.push(DamagedSnapshot {
            id: name,
            time: e.snapshot.time,
            paths: e.snapshot.paths.clone(),
            affected,
            action,
        });
    }
    Ok(out)
}

/// Paths in `snap` whose data is on no replica (a directory is named once,
/// with a trailing `/`, when its own tree is lost).
async fn affected_paths(
    walker: &mut TreeWalker<'_>,
    index: &MasterIndex,
    stored: &HashSet<Id>,
    snap: &Snapshot,
) -> Vec<String> {
    struct Lost<'a> {
        gone: &'a dyn Fn(&Id) -> bool,
        out: Vec<String>,
    }
    impl Visitor for Lost<'_> {
        fn enter(&mut self, path: &Path, ids: &[Id]) -> Visit {
            if ids.iter().any(self.gone) {
                self.out.push(format!(
                    "{}/ (directory and everything in it)",
                    path.display().to_string().trim_end_matches('/')
                ));
                return Visit::Skip;
            }
            Visit::Descend
        }
        fn unreadable(&mut self, path: &Path, _: &[Id], e: &Error) {
            self.out.push(format!(
                "{}/ (directory and everything in it: {e})",
                path.display().to_string().trim_end_matches('/')
            ));
        }
        fn node(&mut self, path: &Path, n: &Node) -> Visit {
            if n.kind == NodeKind::File && n.content.iter().any(self.gone) {
                self.out.push(path.display().to_string());
            }
            Visit::Descend
        }
    }
    let gone = |id: &Id| match index.get(id) {
        None => true,
        Some((p, _)) => !stored.contains(&p.id),
    };
    let mut v = Lost {
        gone: &gone,
        out: Vec::new(),
    };
    walker.walk(&snap.tree, Path::new("/"), &mut v).await;
    let mut out = v.out;
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_pack_is_copied_back_from_another_replica() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let repo = init(memory_replicas(2)).await;
        backup_dir(&repo, &src).await;
        let lost = packs(&repo, 1).await.remove(0);
        repo.replica(1).backend.delete(&lost).await.unwrap();
        let opts = RepairOptions::default();
        let rep = repair_packs(&repo, 1, &opts).await.unwrap();
        assert_eq!(rep.outcome(), Outcome::Ok, "{rep:?}");
        assert!(
            rep.actions.iter().any(|a| a.contains(&lost.name)),
            "{rep:?}"
        );
        repo.replica(1).backend.head(&lost).await.unwrap();
        // Nothing left to do, and no lock left behind.
        let again = repair_packs(&repo, 1, &opts).await.unwrap();
        assert!(again.actions.is_empty(), "{again:?}");
        assert!(repo.list_locks().await.unwrap().is_empty());
    }
}
