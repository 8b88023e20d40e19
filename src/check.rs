//! `check`: verify each replica on its own.
//!
//! Structure: every index file opens, every pack an index names exists with
//! the recorded size, every snapshot opens and every tree and blob it
//! references is indexed in a pack present on that replica. With
//! `read_data`, every pack is downloaded, its hash compared with its name,
//! its footer compared with the index, and every blob authenticated and
//! hashed. Problems name the object and, where a snapshot is affected, the
//! file.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cairn_backends::{Handle, Kind};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::MasterIndex;
use crate::pack;
use crate::repo::{open_doc, Repository};
use crate::snapshot::Snapshot;
use crate::tree::{NodeKind, Tree};

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub read_data: bool,
}

/// Live counters for a progress display.
#[derive(Default)]
pub struct CheckProgress {
    pub replica: std::sync::Mutex<String>,
    pub packs_total: std::sync::atomic::AtomicU64,
    pub packs_done: std::sync::atomic::AtomicU64,
    pub bytes_done: std::sync::atomic::AtomicU64,
    pub snapshots_done: std::sync::atomic::AtomicU64,
}

/// The findings for one replica.
#[derive(Debug, Default, Serialize)]
pub struct ReplicaCheck {
    pub replica: String,
    /// The replica could not be listed at all.
    pub unreachable: Option<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub snapshots: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    pub blobs: u64,
    pub packs_read: u64,
}

impl ReplicaCheck {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.unreachable.is_none()
    }
}

/// Check every replica of `repo`.
pub async fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &CheckProgress,
) -> Vec<ReplicaCheck> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = Vec::new();
    for i in 0..repo.replicas.len() {
        *progress.replica.lock().unwrap() = repo.replicas[i].name.clone();
        progress.packs_done.store(0, Relaxed);
        progress.bytes_done.store(0, Relaxed);
        progress.snapshots_done.store(0, Relaxed);
        let mut rc = ReplicaCheck {
            replica: repo.replicas[i].name.clone(),
            ..Default::default()
        };
        if let Err(e) = check_replica(repo, i, opts, &mut rc, progress).await {
            rc.unreachable = Some(crate::error::chain(&e));
        }
        out.push(rc);
    }
    out
}

/// Why a blob is unusable on this replica.
fn blob_problem(
    index: &MasterIndex,
    present: &HashMap<Id, u64>,
    bad_packs: &HashSet<Id>,
    bad_blobs: &HashSet<Id>,
    id: &Id,
) -> Option<String> {
    let Some((p, _)) = index.get(id) else {
        return Some(format!("blob {} is in no index", id.short()));
    };
    if !present.contains_key(&p.id) {
        return Some(format!(
            "blob {} is in pack {} which is missing",
            id.short(),
            p.id.short()
        ));
    }
    if bad_packs.contains(&p.id) || bad_blobs.contains(id) {
        return Some(format!(
            "blob {} is in damaged pack {}",
            id.short(),
            p.id.short()
        ));
    }
    None
}

async fn check_replica(
    repo: &Repository,
    i: usize,
    opts: &CheckOptions,
    rc: &mut ReplicaCheck,
    progress: &CheckProgress,
) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let replica = &repo.replicas[i];
    let one = repo.single(i);
    let be = |e| Error::backend(&replica.name, e);
    let packs_listed = replica.backend.list(Kind::Pack).await.map_err(be)?;
    let index_files = replica.backend.list(Kind::Index).await.map_err(be)?;
    let snap_files = replica.backend.list(Kind::Snapshot).await.map_err(be)?;
    let present: HashMap<Id, u64> = packs_listed
        .iter()
        .filter_map(|m| Some((m.handle.name.parse().ok()?, m.size)))
        .collect();
    rc.packs = present.len() as u64;
    rc.pack_bytes = present.values().sum();

    // Index files.
    let mut index = MasterIndex::default();
    for m in &index_files {
        match one.get_verified(&m.handle, 1).await.and_then(|d| {
            let plain = open_doc(
                &repo.keyring,
                crate::crypto::ObjectKind::Index,
                &m.handle.to_string(),
                &d,
            )?;
            crate::index::decode(&plain).map_err(|e| Error::Corrupt(format!("{}: {e}", m.handle)))
        }) {
            Ok(packs) => index.add(0, &packs),
            Err(e) => rc.errors.push(format!("{}: unreadable: {e}", m.handle)),
        }
    }
    rc.blobs = index.blob_count() as u64;

    // Packs named by the index.
    let mut bad_packs: HashSet<Id> = HashSet::new();
    for p in &index.packs {
        let h = Handle::new(Kind::Pack, p.id.to_hex());
        match present.get(&p.id) {
            None => {
                rc.errors
                    .push(format!("{h}: missing (listed in the index)"));
                bad_packs.insert(p.id);
            }
            Some(size) if *size != p.size => {
                rc.errors.push(format!(
                    "{h}: size {size} bytes, the index says {} (truncated or damaged)",
                    p.size
                ));
                bad_packs.insert(p.id);
            }
            Some(_) => {}
        }
    }
    let referenced: HashSet<Id> = index.packs.iter().map(|p| p.id).collect();
    let stray = present.keys().filter(|id| !referenced.contains(id)).count();
    if stray > 0 {
        rc.warnings.push(format!(
            "{stray} pack(s) are in no index (left by an interrupted backup; harmless, reclaimed by prune)"
        ));
    }

    // Read every pack.
    let mut bad_blobs: HashSet<Id> = HashSet::new();
    if opts.read_data {
        let by_pack = blobs_by_pack(&index);
        let todo: Vec<_> = index
            .packs
            .iter()
            .filter(|p| !bad_packs.contains(&p.id))
            .collect();
        progress.packs_total.store(todo.len() as u64, Relaxed);
        let next = std::sync::Mutex::new(todo.into_iter());
        let results = std::sync::Mutex::new(Vec::new());
        let rt = tokio::runtime::Handle::current();
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8);
        // Each thread downloads a pack and verifies it, so I/O of one pack
        // overlaps the decryption of another.
        tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| loop {
                        let Some(p) = next.lock().unwrap().next() else {
                            break;
                        };
                        let h = Handle::new(Kind::Pack, p.id.to_hex());
                        let res = match rt.block_on(replica.backend.get(&h, None)) {
                            Ok(data) => {
                                let expected =
                                    by_pack.get(&p.id).map(Vec::as_slice).unwrap_or_default();
                                Ok(verify_pack(&one, &index, &h, p.id, &data, expected))
                            }
                            Err(e) => Err(format!("{h}: cannot be read: {e}")),
                        };
                        progress.packs_done.fetch_add(1, Relaxed);
                        progress.bytes_done.fetch_add(p.size, Relaxed);
                        results.lock().unwrap().push((p.id, res));
                    });
                }
            })
        });
        for (id, res) in results.into_inner().unwrap() {
            match res {
                Err(msg) => {
                    rc.errors.push(msg);
                    bad_packs.insert(id);
                }
                Ok((pack_errs, blob_errs)) => {
                    rc.packs_read += 1;
                    // A damaged pack is reported as such, but only the blobs
                    // that fail authentication are lost: every indexed blob
                    // was verified on its own, so the files and trees named
                    // below are exactly those a restore cannot recover.
                    rc.errors.extend(pack_errs);
                    for (bid, msg) in blob_errs {
                        bad_blobs.insert(bid);
                        rc.errors.push(msg);
                    }
                }
            }
        }
    }

    // Snapshots and the trees below them.
    let mut seen_trees: HashSet<Vec<Id>> = HashSet::new();
    for m in &snap_files {
        let snap: Snapshot = match one.get_verified(&m.handle, 1).await.and_then(|d| {
            let plain = open_doc(
                &repo.keyring,
                crate::crypto::ObjectKind::Snapshot,
                &m.handle.to_string(),
                &d,
            )?;
            serde_json::from_slice(&plain).map_err(|e| Error::Corrupt(format!("{}: {e}", m.handle)))
        }) {
            Ok(s) => s,
            Err(e) => {
                rc.errors.push(format!("{}: unreadable: {e}", m.handle));
                continue;
            }
        };
        rc.snapshots += 1;
        progress.snapshots_done.fetch_add(1, Relaxed);
        let sid = &m.handle.name[..8];
        let mut stack: Vec<(String, Vec<Id>)> = vec![("/".into(), snap.tree.clone())];
        while let Some((path, ids)) = stack.pop() {
            if !seen_trees.insert(ids.clone()) {
                continue;
            }
            if let Some(p) = ids
                .iter()
                .find_map(|id| blob_problem(&index, &present, &bad_packs, &bad_blobs, id))
            {
                rc.errors
                    .push(format!("snapshot {sid}: directory {path}: tree {p}"));
                continue;
            }
            let tree: Tree = match one.load_tree(&index, &ids).await {
                Ok(t) => t,
                Err(e) => {
                    rc.errors
                        .push(format!("snapshot {sid}: directory {path}: {e}"));
                    continue;
                }
            };
            for n in &tree.nodes {
                let child = format!("{}/{}", path.trim_end_matches('/'), n.name.lossy());
                match n.kind {
                    NodeKind::Dir => stack.push((child, n.subtree.clone())),
                    NodeKind::File => {
                        if let Some(p) = n.content.iter().find_map(|id| {
                            blob_problem(&index, &present, &bad_packs, &bad_blobs, id)
                        }) {
                            rc.errors.push(format!("snapshot {sid}: file {child}: {p}"));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn blobs_by_pack(index: &MasterIndex) -> HashMap<Id, Vec<(Id, crate::index::BlobLoc)>> {
    let mut m: HashMap<Id, Vec<_>> = HashMap::new();
    for (id, loc) in index.blobs() {
        m.entry(index.packs[loc.pack as usize].id)
            .or_default()
            .push((*id, *loc));
    }
    m
}

/// Check one downloaded pack: name, footer, and every indexed blob.
fn verify_pack(
    repo: &Repository,
    index: &MasterIndex,
    h: &Handle,
    id: Id,
    data: &[u8],
    expected: &[(Id, crate::index::BlobLoc)],
) -> (Vec<String>, Vec<(Id, String)>) {
    let mut pack_errs = Vec::new();
    let mut blob_errs = Vec::new();
    if Id::of_stored(data) != id {
        pack_errs.push(format!("{h}: content does not match its name (damaged)"));
    }
    let keyring = Arc::clone(&repo.keyring);
    match pack::read_footer(data, &keyring.repo_id, |e| keyring.epoch_key(e).cloned()) {
        Ok((_, entries)) => {
            let footer: HashMap<Id, _> = entries.iter().map(|e| (e.id, e)).collect();
            for (bid, loc) in expected {
                if footer
                    .get(bid)
                    .is_none_or(|e| e.offset != loc.offset || e.stored_len != loc.stored_len)
                {
                    pack_errs.push(format!(
                        "{h}: footer does not match the index for blob {}",
                        bid.short()
                    ));
                }
            }
        }
        Err(e) => pack_errs.push(format!("{h}: footer: {e}")),
    }
    let info = index.pack(&id).expect("pack is indexed");
    for (bid, loc) in expected {
        let range = loc.offset as usize..(loc.offset + loc.stored_len) as usize;
        let res = match data.get(range) {
            Some(s) => repo.decode_blob(h, info, loc, bid, s.to_vec()).map(|_| ()),
            None => Err(Error::Corrupt(format!(
                "{h}: blob {} is beyond the end",
                bid.short()
            ))),
        };
        if let Err(e) = res {
            blob_errs.push((*bid, e.to_string()));
        }
    }
    (pack_errs, blob_errs)
}
