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

use cairn_backends::{Handle, Kind};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::pack;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::ops::{Finding, Outcome, Problem, Severity};
use crate::repo::MasterIndex;
use crate::repo::{open_doc, Repository, TreeWalker, Visit, Visitor};
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub read_data: bool,
    /// Read only this part of the packs (implies reading data).
    pub subset: Option<Subset>,
    /// Check only these replicas (positions); all when `None`.
    pub only: Option<Vec<usize>>,
}

/// Which packs `--read-data-subset` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Part `n` (1-based) of `m`: the same packs on every replica and every
    /// run, so `1/7` … `7/7` on seven days read everything once.
    Part { n: u32, m: u32 },
    /// A random sample of this percentage of the packs.
    Percent(f64),
    /// Random packs up to this many bytes.
    Bytes(u64),
}

impl std::str::FromStr for Subset {
    type Err = String;

    fn from_str(s: &str) -> Result<Subset, String> {
        let bad = || {
            format!("invalid subset {s:?}: use N/M (e.g. 2/7), a percentage (e.g. 10%) or a size (e.g. 500M)")
        };
        let s = s.trim();
        if let Some((n, m)) = s.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| bad())?;
            let m: u32 = m.trim().parse().map_err(|_| bad())?;
            if m == 0 || n == 0 || n > m {
                return Err(bad());
            }
            return Ok(Subset::Part { n, m });
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Subset::Percent(p));
        }
        let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
            None => (s, 1u64),
            Some((i, _)) => {
                let mult = match s[i..]
                    .to_ascii_uppercase()
                    .trim_end_matches("IB")
                    .trim_end_matches('B')
                {
                    "" => 1,
                    "K" => 1 << 10,
                    "M" => 1 << 20,
                    "G" => 1 << 30,
                    "T" => 1 << 40,
                    _ => return Err(bad()),
                };
                (&s[..i], mult)
            }
        };
        let n: f64 = num.trim().parse().map_err(|_| bad())?;
        if n.is_nan() || n <= 0.0 {
            return Err(bad());
        }
        Ok(Subset::Bytes((n * mult as f64) as u64))
    }
}

impl Subset {
    /// The packs to read among `packs` (id, size).
    pub fn select(&self, packs: &[(Id, u64)]) -> HashSet<Id> {
        match *self {
            Subset::Part { n, m } => packs
                .iter()
                .filter(|(id, _)| u32::from(u16::from_be_bytes([id.0[0], id.0[1]])) % m == n - 1)
                .map(|(id, _)| *id)
                .collect(),
            Subset::Percent(p) => {
                let want = ((packs.len() as f64) * p / 100.0).ceil() as usize;
                shuffled(packs)
                    .into_iter()
                    .take(want)
                    .map(|(id, _)| id)
                    .collect()
            }
            Subset::Bytes(limit) => {
                let mut total = 0u64;
                shuffled(packs)
                    .into_iter()
                    .take_while(|(_, size)| {
                        let go = total < limit;
                        total += size;
                        go
                    })
                    .map(|(id, _)| id)
                    .collect()
            }
        }
    }
}

fn shuffled(packs: &[(Id, u64)]) -> Vec<(Id, u64)> {
    use rand::seq::SliceRandom;
    let mut v = packs.to_vec();
    v.sort();
    v.shuffle(&mut rand::rng());
    v
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
    /// The messages of the error findings (kept for `--json` readers of
    /// the first format).
    pub errors: Vec<String>,
    /// The messages of the warning findings.
    pub warnings: Vec<String>,
    /// Every finding, typed.
    pub findings: Vec<Finding>,
    pub snapshots: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    pub blobs: u64,
    pub packs_read: u64,
}

impl ReplicaCheck {
    /// Record a finding about this replica.
    fn add(&mut self, f: Finding) {
        let f = f.replica(&self.replica);
        match f.severity {
            Severity::Error => self.errors.push(f.message.clone()),
            Severity::Warning => self.warnings.push(f.message.clone()),
        }
        self.findings.push(f);
    }

    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.unreachable.is_none()
    }
}

/// Check every replica of `repo`, under a shared lock (a repair or prune
/// holding the exclusive one may be rewriting what this reads). Only the
/// lock can fail; each replica's problems are in its report.
pub async fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &CheckProgress,
) -> Result<Vec<ReplicaCheck>> {
    repo.with_lock(crate::repo::LockMode::Shared, "check", async || {
        Ok(check_locked(repo, opts, progress).await)
    })
    .await
}

async fn check_locked(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &CheckProgress,
) -> Vec<ReplicaCheck> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = Vec::new();
    let all: Vec<usize> = (0..repo.replicas().len()).collect();
    for &i in opts.only.as_ref().unwrap_or(&all) {
        *progress.replica.lock().unwrap() = repo.replicas()[i].name.clone();
        progress.packs_done.store(0, Relaxed);
        progress.bytes_done.store(0, Relaxed);
        progress.snapshots_done.store(0, Relaxed);
        let mut rc = ReplicaCheck {
            replica: repo.replicas()[i].name.clone(),
            ..Default::default()
        };
        if let Err(e) = check_replica(repo, i, opts, &mut rc, progress).await {
            rc.unreachable = Some(crate::error::chain(&e));
        }
        out.push(rc);
    }
    out
}

/// The packs a replica lists, with their sizes, sorted by id.
struct Listing(Vec<(Id, u64)>);

impl Listing {
    fn get(&self, id: &Id) -> Option<&u64> {
        let i = self.0.binary_search_by(|p| p.0.cmp(id)).ok()?;
        Some(&self.0[i].1)
    }
}

/// Why a blob is unusable on this replica.
fn blob_problem(
    index: &MasterIndex,
    present: &Listing,
    bad_packs: &HashSet<Id>,
    bad_blobs: &HashSet<Id>,
    id: &Id,
) -> Option<String> {
    let Some((p, _)) = index.get(id) else {
        return Some(format!("blob {} is in no index", id.short()));
    };
    if present.get(&p.id).is_none() {
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
    let replica = &repo.replicas()[i];
    let one = repo.single(i);
    let be = |e| Error::backend(&replica.name, e);
    // Only what `present` keeps of the listing outlives this line: a
    // listing entry is several times its size, and the index loaded next
    // is the peak of a check's memory. Sorted rather than hashed: 40 bytes
    // a pack instead of about 65.
    let mut present: Vec<(Id, u64)> = replica
        .backend
        .list(Kind::Pack)
        .await
        .map_err(be)?
        .into_iter()
        .filter_map(|m| Some((m.handle.name.parse().ok()?, m.size)))
        .collect();
    present.sort_unstable_by_key(|p| p.0);
    present.dedup_by_key(|p| p.0);
    present.shrink_to_fit();
    let present = Listing(present);
    // The listing's names were freed above; without this their pages stay
    // resident (about 1 byte a blob at 16 blobs a pack) under the index.
    crate::sys::release_free_memory();
    let index_files = replica.backend.list(Kind::Index).await.map_err(be)?;
    let snap_files = replica.backend.list(Kind::Snapshot).await.map_err(be)?;
    rc.packs = present.0.len() as u64;
    rc.pack_bytes = present.0.iter().map(|p| p.1).sum();

    // Index files.
    let mut index = MasterIndex::default();
    for m in &index_files {
        if too_big(rc, m, crate::repo::docs::MAX_INDEX_BYTES) {
            continue;
        }
        match one.get_verified(&m.handle, one.all()).await.and_then(|d| {
            let plain = open_doc(
                repo.keyring(),
                crate::format::crypto::ObjectKind::Index,
                &m.handle.to_string(),
                &d,
            )?;
            crate::format::index::decode(&plain)
                .map_err(|e| Error::Corrupt(format!("{}: {e}", m.handle)))
        }) {
            Ok(packs) => index.load([0], &packs),
            Err(e) => rc.add(
                Finding::error(
                    Problem::Unreadable,
                    format!("{}: unreadable: {e}", m.handle),
                )
                .object(&m.handle),
            ),
        }
    }
    index.compact();
    rc.blobs = index.blob_count() as u64;

    // Packs named by the index.
    let mut bad_packs: HashSet<Id> = HashSet::new();
    for p in &index.packs {
        let h = Handle::new(Kind::Pack, p.id.to_hex());
        match present.get(&p.id) {
            None => {
                rc.add(
                    Finding::error(
                        Problem::Missing,
                        format!("{h}: missing (listed in the index)"),
                    )
                    .object(&h),
                );
                bad_packs.insert(p.id);
            }
            Some(size) if *size != p.size => {
                rc.add(
                    Finding::error(
                        Problem::WrongSize,
                        format!(
                            "{h}: size {size} bytes, the index says {} (truncated or damaged)",
                            p.size
                        ),
                    )
                    .object(&h),
                );
                bad_packs.insert(p.id);
            }
            Some(_) => {}
        }
    }
    for (id, size) in &present.0 {
        if *size > crate::format::pack::MAX_PACK_BYTES {
            let h = Handle::new(Kind::Pack, id.to_hex());
            rc.add(
                Finding::error(
                    Problem::Unreadable,
                    format!(
                        "{h}: {size} bytes, over the {}-byte limit of its kind (not read)",
                        crate::format::pack::MAX_PACK_BYTES
                    ),
                )
                .object(&h),
            );
        }
    }
    let stray = present
        .0
        .iter()
        .filter(|p| index.pack(&p.0).is_none())
        .count();
    if stray > 0 {
        rc.add(Finding::warning(
            Problem::StrayPacks,
            format!(
                "{stray} pack(s) are in no index (left by an interrupted backup; harmless, reclaimed by prune)"
            ),
        ));
    }

    // Read every pack.
    let mut bad_blobs: HashSet<Id> = HashSet::new();
    if opts.read_data || opts.subset.is_some() {
        let by_pack = blobs_by_pack(&index);
        let chosen = opts.subset.map(|sub| {
            let all: Vec<(Id, u64)> = index.packs.iter().map(|p| (p.id, p.size)).collect();
            sub.select(&all)
        });
        let todo: Vec<_> = index
            .packs
            .iter()
            .filter(|p| !bad_packs.contains(&p.id))
            .filter(|p| chosen.as_ref().is_none_or(|c| c.contains(&p.id)))
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
                        let res = match rt.block_on(replica.backend.get(&h, Some(0..p.size))) {
                            Ok(data) => {
                                let expected =
                                    by_pack.get(&p.id).map(Vec::as_slice).unwrap_or_default();
                                Ok(verify_pack(&one, &index, &h, p.id, &data, expected))
                            }
                            Err(e) => Err(Finding::error(
                                Problem::Unreadable,
                                format!("{h}: cannot be read: {e}"),
                            )
                            .object(&h)),
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
                Err(f) => {
                    rc.add(f);
                    bad_packs.insert(id);
                }
                Ok((pack_errs, blob_errs)) => {
                    rc.packs_read += 1;
                    // A damaged pack is reported as such, but only the blobs
                    // that fail authentication are lost: every indexed blob
                    // was verified on its own, so the files and trees named
                    // below are exactly those a restore cannot recover.
                    for f in pack_errs {
                        rc.add(f);
                    }
                    for (bid, f) in blob_errs {
                        bad_blobs.insert(bid);
                        rc.add(f);
                    }
                }
            }
        }
    }

    // Snapshots and the trees below them, each distinct tree once.
    let mut walker = TreeWalker::new(&one, &index).each_tree_once();
    for m in &snap_files {
        if too_big(rc, m, crate::repo::docs::MAX_SNAPSHOT_BYTES) {
            continue;
        }
        let snap: Snapshot = match one.get_verified(&m.handle, one.all()).await.and_then(|d| {
            let plain = open_doc(
                repo.keyring(),
                crate::format::crypto::ObjectKind::Snapshot,
                &m.handle.to_string(),
                &d,
            )?;
            serde_json::from_slice(&plain).map_err(|e| Error::Corrupt(format!("{}: {e}", m.handle)))
        }) {
            Ok(s) => s,
            Err(e) => {
                rc.add(
                    Finding::error(
                        Problem::Unreadable,
                        format!("{}: unreadable: {e}", m.handle),
                    )
                    .object(&m.handle),
                );
                continue;
            }
        };
        rc.snapshots += 1;
        progress.snapshots_done.fetch_add(1, Relaxed);
        let mut v = SnapshotProblems {
            sid: &m.handle.name[..8],
            problem: &|id: &Id| blob_problem(&index, &present, &bad_packs, &bad_blobs, id),
            found: Vec::new(),
        };
        walker.walk(&snap.tree, Path::new("/"), &mut v).await;
        let found = v.found;
        // `repair snapshots` marks a snapshot whose data is lost everywhere
        // as damaged: its losses are known, not news.
        if snap.tags.iter().any(|t| t == "damaged") {
            if !found.is_empty() {
                rc.add(
                    Finding::warning(
                        Problem::MarkedDamaged,
                        format!(
                            "snapshot {} is marked damaged: {} known problem(s), listed in its errors",
                            &m.handle.name[..8],
                            found.len()
                        ),
                    )
                    .object(&m.handle),
                );
            }
        } else {
            for f in found {
                rc.add(f);
            }
        }
    }
    Ok(())
}

/// A document listed larger than cairn ever writes one is reported, not
/// downloaded.
fn too_big(rc: &mut ReplicaCheck, m: &cairn_backends::ObjectMeta, max: u64) -> bool {
    if m.size <= max {
        return false;
    }
    rc.add(
        Finding::error(
            Problem::Unreadable,
            format!(
                "{}: {} bytes, over the {max}-byte limit of its kind (not read)",
                m.handle, m.size
            ),
        )
        .object(&m.handle),
    );
    true
}

/// Collects what is wrong with the trees and files of one snapshot.
struct SnapshotProblems<'a> {
    sid: &'a str,
    problem: &'a (dyn Fn(&Id) -> Option<String> + Sync),
    found: Vec<Finding>,
}

impl Visitor for SnapshotProblems<'_> {
    fn enter(&mut self, path: &Path, ids: &[Id]) -> Visit {
        match ids.iter().find_map(self.problem) {
            Some(p) => {
                let sid = self.sid;
                self.found.push(
                    Finding::error(
                        Problem::LostData,
                        format!("snapshot {sid}: directory {}: tree {p}", path.display()),
                    )
                    .at(sid, path.display()),
                );
                Visit::Skip
            }
            None => Visit::Descend,
        }
    }

    fn unreadable(&mut self, path: &Path, _: &[Id], e: &Error) {
        let sid = self.sid;
        self.found.push(
            Finding::error(
                Problem::LostData,
                format!("snapshot {sid}: directory {}: {e}", path.display()),
            )
            .at(sid, path.display()),
        );
    }

    fn node(&mut self, path: &Path, n: &Node) -> Visit {
        if n.kind == NodeKind::File {
            if let Some(p) = n.content.iter().find_map(self.problem) {
                let sid = self.sid;
                self.found.push(
                    Finding::error(
                        Problem::LostData,
                        format!("snapshot {sid}: file {}: {p}", path.display()),
                    )
                    .at(sid, path.display()),
                );
            }
        }
        Visit::Descend
    }
}

fn blobs_by_pack(index: &MasterIndex) -> HashMap<Id, Vec<(Id, crate::repo::BlobLoc)>> {
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
    expected: &[(Id, crate::repo::BlobLoc)],
) -> (Vec<Finding>, Vec<(Id, Finding)>) {
    let mut pack_errs = Vec::new();
    let mut blob_errs = Vec::new();
    if Id::of_stored(data) != id {
        pack_errs.push(
            Finding::error(
                Problem::Damaged,
                format!("{h}: content does not match its name (damaged)"),
            )
            .object(h),
        );
    }
    let keyring = repo.shared_keyring();
    match pack::read_footer(data, &keyring.repo_id, |e| keyring.epoch_key(e).cloned()) {
        Ok((_, entries)) => {
            let footer: HashMap<Id, _> = entries.iter().map(|e| (e.id, e)).collect();
            for (bid, loc) in expected {
                if footer
                    .get(bid)
                    .is_none_or(|e| e.offset != loc.offset || e.stored_len != loc.stored_len)
                {
                    pack_errs.push(
                        Finding::error(
                            Problem::FooterMismatch,
                            format!(
                                "{h}: footer does not match the index for blob {}",
                                bid.short()
                            ),
                        )
                        .object(h),
                    );
                }
            }
        }
        Err(e) => pack_errs
            .push(Finding::error(Problem::FooterMismatch, format!("{h}: footer: {e}")).object(h)),
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
            blob_errs.push((
                *bid,
                Finding::error(Problem::BadBlob, e.to_string()).object(h),
            ));
        }
    }
    (pack_errs, blob_errs)
}

/// How a check ended: damage found anywhere wins over replicas that could
/// not be read (`unusable`: given but not opened).
pub fn outcome(reports: &[ReplicaCheck], cross: &CrossCheck, unusable: &[String]) -> Outcome {
    if reports.iter().any(|r| !r.errors.is_empty()) || !cross.errors.is_empty() {
        return Outcome::Damaged;
    }
    let unreachable: Vec<String> = reports
        .iter()
        .filter(|r| r.unreachable.is_some())
        .map(|r| r.replica.clone())
        .chain(unusable.iter().cloned())
        .collect();
    if unreachable.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Unreachable {
            replicas: unreachable,
        }
    }
}

/// Findings that need several replicas side by side.
#[derive(Debug, Default, Serialize)]
pub struct CrossCheck {
    /// Damage: the same pack name with different sizes on two replicas
    /// (one copy is damaged, since names are hashes of the bytes).
    pub errors: Vec<String>,
    /// Differences that are not damage: a replica lacking snapshots the
    /// others have (`cairn sync` copies them).
    pub warnings: Vec<String>,
    /// Both, typed.
    pub findings: Vec<Finding>,
}

impl CrossCheck {
    fn add(&mut self, f: Finding) {
        match f.severity {
            Severity::Error => self.errors.push(f.message.clone()),
            Severity::Warning => self.warnings.push(f.message.clone()),
        }
        self.findings.push(f);
    }
}

/// Compare the replicas in `only` (all when `None`) with each other.
pub async fn cross_check(repo: &Repository, only: Option<&[usize]>) -> CrossCheck {
    let mut out = CrossCheck::default();
    let all: Vec<usize> = (0..repo.replicas().len()).collect();
    let which = only.unwrap_or(&all);
    if which.len() < 2 {
        return out;
    }
    let listings = crate::repo::survey::list_all(repo).await;
    let ok: Vec<(usize, &crate::repo::survey::Listing)> = which
        .iter()
        .filter_map(|&i| listings[i].as_ref().ok().map(|l| (i, l)))
        .collect();
    let mut sizes: HashMap<Id, Vec<(usize, u64)>> = HashMap::new();
    for (i, l) in &ok {
        for (id, size) in &l.packs {
            sizes.entry(*id).or_default().push((*i, *size));
        }
    }
    let mut mismatched: Vec<_> = sizes
        .into_iter()
        .filter(|(_, v)| v.iter().any(|(_, s)| *s != v[0].1))
        .collect();
    mismatched.sort_by_key(|(id, _)| *id);
    for (id, v) in mismatched {
        out.add(Finding::error(Problem::CopiesDiffer, format!(
            "data/{}: copies differ in size ({}); the one that does not hash to its name is damaged (`cairn check --read-data` names it)",
            id.to_hex(),
            v.iter()
                .map(|(i, s)| format!("{} {s} bytes", repo.replicas()[*i].name))
                .collect::<Vec<_>>()
                .join(", ")
        )).object(format!("data/{}", id.to_hex())));
    }
    let union = |f: fn(&crate::repo::survey::Listing) -> &std::collections::BTreeSet<String>| {
        ok.iter()
            .flat_map(|(_, l)| f(l).iter().cloned())
            .collect::<HashSet<String>>()
    };
    // Index files may differ legitimately (`repair index` rewrites one
    // replica's); snapshot sets should not, unless a replica lags.
    let snaps = union(|l| &l.snapshots);
    for (i, l) in &ok {
        let lacks = snaps.iter().filter(|s| !l.snapshots.contains(*s)).count();
        if lacks > 0 {
            let name = &repo.replicas()[*i].name;
            out.add(
                Finding::warning(
                    Problem::Behind,
                    format!(
                        "{name} lacks {lacks} snapshot(s) other replicas hold (`cairn status` shows which; `cairn sync` copies them)"
                    ),
                )
                .replica(name),
            );
        }
    }
    out
}

impl crate::ops::progress::ProgressSource for CheckProgress {
    fn event(&self, elapsed: std::time::Duration) -> crate::ops::progress::ProgressEvent {
        use std::sync::atomic::Ordering::Relaxed;
        crate::ops::progress::ProgressEvent::Check(crate::ops::progress::CheckEvent {
            seconds: elapsed.as_secs_f64(),
            replica: self.replica.lock().unwrap().clone(),
            packs_done: self.packs_done.load(Relaxed),
            packs_total: self.packs_total.load(Relaxed),
            bytes_done: self.bytes_done.load(Relaxed),
            snapshots_done: self.snapshots_done.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subsets_parse() {
        assert_eq!("2/7".parse(), Ok(Subset::Part { n: 2, m: 7 }));
        assert_eq!("10%".parse(), Ok(Subset::Percent(10.0)));
        assert_eq!("500M".parse(), Ok(Subset::Bytes(500 << 20)));
        assert_eq!("1.5GiB".parse(), Ok(Subset::Bytes(3 << 29)));
        assert_eq!("4096".parse(), Ok(Subset::Bytes(4096)));
        for bad in ["0/3", "4/3", "1/0", "0%", "101%", "x", "5Q", "-1M", ""] {
            assert!(bad.parse::<Subset>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parts_partition_the_packs(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..200), m in 1u32..10) {
            let packs: Vec<(Id, u64)> = ids.iter().map(|b| (Id(*b), 10)).collect();
            let mut seen = HashSet::new();
            for n in 1..=m {
                for id in (Subset::Part { n, m }).select(&packs) {
                    prop_assert!(seen.insert(id), "a pack is in two parts");
                }
            }
            let all: HashSet<Id> = packs.iter().map(|p| p.0).collect();
            prop_assert_eq!(seen, all);
        }

        #[test]
        fn samples_have_the_asked_size(n in 0usize..300, p in 1u32..=100, limit in 1u64..5000) {
            let packs: Vec<(Id, u64)> = (0..n).map(|i| (Id([i as u8, (i >> 8) as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 100)).collect();
            let got = Subset::Percent(p as f64).select(&packs).len();
            prop_assert_eq!(got, ((n as f64) * p as f64 / 100.0).ceil() as usize);
            let got = Subset::Bytes(limit).select(&packs).len();
            prop_assert_eq!(got, (limit.div_ceil(100) as usize).min(n));
        }
    }
}
