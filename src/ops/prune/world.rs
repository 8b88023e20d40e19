//! What prune reads before it decides anything: every replica's listing,
//! index files (with each pack's blobs), snapshots, marks, and the blobs
//! each replica's own snapshots reach.
//!
//! A replica whose snapshots or index files cannot all be read, or whose
//! trees cannot all be walked, is *not judged*: what its unreadable
//! objects reference is unknown, so nothing on it may be freed.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cairn_backends::{ErrorKind, Handle, Kind};

use crate::error::{Error, Result};
use crate::format::crypto::ObjectKind;
use crate::format::id::Id;
use crate::format::index::IndexPack;
use crate::format::marks::{Marks, MARKER_NAME, MAX_MARKS};
use crate::format::tree::{Node, NodeKind};
use crate::repo::survey::{list_all, Listing};
use crate::repo::{open_doc, MasterIndex, ReplicaSet, Repository, SnapshotEntry};
use crate::repo::{TreeWalker, Visit, Visitor};
use crate::retention::PackDesc;

/// The largest marker read (each mark is about 100 bytes of JSON).
const MAX_MARKER_BYTES: u64 = (MAX_MARKS as u64) * 128;

pub(super) struct World {
    pub index: MasterIndex,
    /// Every pack some index file describes, with its holders and marks.
    pub packs: Vec<PackDesc>,
    /// Full descriptions, by pack (for rewriting index files).
    pub descs: HashMap<Id, IndexPack>,
    pub listings: Vec<Option<Listing>>,
    /// Per replica: the blobs its snapshots reach.
    pub live: Vec<HashSet<Id>>,
    pub marks: Vec<Marks>,
    /// Per replica: why it cannot be judged (nothing is freed there).
    pub blocked: Vec<Option<String>>,
}

impl World {
    /// Replicas that can be judged and acted on.
    pub fn usable(&self) -> ReplicaSet {
        let mut s = ReplicaSet::EMPTY;
        for (i, b) in self.blocked.iter().enumerate() {
            if b.is_none() {
                s.insert(i);
            }
        }
        s
    }

    /// Packs stored on replica `r` that none of its index files describes
    /// (left by an interrupted backup or sync, or still being written).
    pub fn strays(&self, r: usize) -> Vec<(Id, u64)> {
        let Some(l) = &self.listings[r] else {
            return Vec::new();
        };
        let mut v: Vec<(Id, u64)> = l
            .packs
            .iter()
            .filter(|(id, _)| !self.index.pack(id).is_some_and(|p| p.replicas.contains(r)))
            .map(|(id, size)| (*id, *size))
            .collect();
        v.sort();
        v
    }

    pub async fn load(repo: &Repository) -> Result<World> {
        let n = repo.replicas().len();
        let mut blocked: Vec<Option<String>> = vec![None; n];
        let listings: Vec<Option<Listing>> = list_all(repo)
            .await
            .into_iter()
            .enumerate()
            .map(|(i, l)| match l {
                Ok(l) => Some(l),
                Err(e) => {
                    blocked[i] = Some(crate::error::chain(&e));
                    None
                }
            })
            .collect();
        // Snapshots before index files: a backup writes its index files
        // before its snapshot, so every snapshot listed here has its index
        // files in the listing that follows, even while backups run.
        let snapshots = repo.list_snapshots().await?;
        let mut descs: HashMap<Id, IndexPack> = HashMap::new();
        let (index, index_files) = repo
            .load_index_each(|packs| {
                for p in packs {
                    descs.entry(p.id).or_insert_with(|| p.clone());
                }
            })
            .await?;
        let read_index: HashSet<&str> = index_files.iter().map(|f| f.name.as_str()).collect();
        let read_snaps: HashSet<String> = snapshots.iter().map(|s| s.id.to_hex()).collect();
        for (r, l) in listings.iter().enumerate() {
            let Some(l) = l else { continue };
            if let Some(name) = l.index.iter().find(|n| !read_index.contains(n.as_str())) {
                blocked[r] = Some(format!(
                    "index/{name} cannot be read, so what it describes is unknown \
                     (run `cairn check`, then `cairn repair index`)"
                ));
            } else if let Some(name) = l.snapshots.iter().find(|n| !read_snaps.contains(*n)) {
                blocked[r] = Some(format!(
                    "snapshots/{name} cannot be read, so what it needs is unknown \
                     (run `cairn check`, then `cairn repair snapshots`)"
                ));
            }
        }
        let live = live_sets(repo, &index, &snapshots, &mut blocked).await?;
        let mut marks = Vec::with_capacity(n);
        for (r, b) in blocked.iter().enumerate() {
            marks.push(if b.is_some() {
                Marks::new()
            } else {
                read_marks(repo, r).await?
            });
        }
        let mut packs: Vec<PackDesc> = descs
            .values()
            .map(|d| {
                let info = index.pack(&d.id).expect("described packs are indexed");
                let mut holders = ReplicaSet::EMPTY;
                let mut marked = ReplicaSet::EMPTY;
                for r in info.replicas.iter() {
                    let stored = listings[r]
                        .as_ref()
                        .is_some_and(|l| l.packs.contains_key(&d.id));
                    if stored && blocked[r].is_none() {
                        holders.insert(r);
                        if marks[r].packs.contains_key(&d.id) {
                            marked.insert(r);
                        }
                    }
                }
                PackDesc {
                    id: d.id,
                    size: d.size,
                    blobs: d.blobs.iter().map(|b| (b.id, b.stored_len)).collect(),
                    holders,
                    marked,
                }
            })
            .collect();
        packs.sort_by_key(|p| p.id);
        Ok(World {
            index,
            packs,
            descs,
            listings,
            live,
            marks,
            blocked,
        })
    }
}

/// The blobs (trees and file contents) each replica's snapshots reach.
/// Replicas holding the same snapshots share one walk.
async fn live_sets(
    repo: &Repository,
    index: &MasterIndex,
    snaps: &[SnapshotEntry],
    blocked: &mut [Option<String>],
) -> Result<Vec<HashSet<Id>>> {
    let n = blocked.len();
    let mut out: Vec<HashSet<Id>> = vec![HashSet::new(); n];
    let mut done: Vec<(Vec<usize>, usize)> = Vec::new();
    for r in 0..n {
        if blocked[r].is_some() {
            continue;
        }
        let held: Vec<usize> = (0..snaps.len())
            .filter(|&s| snaps[s].replicas.contains(r))
            .collect();
        if let Some((_, other)) = done.iter().find(|(h, _)| *h == held) {
            out[r] = out[*other].clone();
            continue;
        }
        let mut v = LiveVisitor::default();
        let mut walker = TreeWalker::new(repo, index).each_tree_once();
        for &s in &held {
            repo.check_cancelled()?;
            let root = &snaps[s].snapshot.tree;
            v.blobs.extend(root.iter().copied());
            walker.walk(root, Path::new("/"), &mut v).await;
        }
        if let Some(why) = v.unreadable {
            blocked[r] = Some(why);
            continue;
        }
        out[r] = v.blobs;
        done.push((held, r));
    }
    Ok(out)
}

#[derive(Default)]
struct LiveVisitor {
    blobs: HashSet<Id>,
    unreadable: Option<String>,
}

impl Visitor for LiveVisitor {
    fn unreadable(&mut self, path: &Path, _: &[Id], err: &Error) {
        self.unreadable.get_or_insert_with(|| {
            format!(
                "the tree of {} cannot be read ({}), so what is below it is unknown \
                 (run `cairn check`)",
                path.display(),
                crate::error::chain(err)
            )
        });
    }

    fn node(&mut self, _: &Path, n: &Node) -> Visit {
        match n.kind {
            NodeKind::Dir => self.blobs.extend(n.subtree.iter().copied()),
            NodeKind::File => self.blobs.extend(n.content.iter().copied()),
            _ => {}
        }
        Visit::Descend
    }
}

/// Replica `r`'s marks. A missing marker is no marks; one that cannot be
/// read is warned about and counts as none too: losing marks only delays
/// deletion, it never deletes more.
pub(crate) async fn read_marks(repo: &Repository, r: usize) -> Result<Marks> {
    let rep = repo.replica(r);
    let h = Handle::new(Kind::Marker, MARKER_NAME);
    // One byte past the limit tells a planted giant object from marks
    // without downloading it.
    let data = match rep.backend.get(&h, Some(0..MAX_MARKER_BYTES + 1)).await {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Marks::new()),
        Err(e) => return Err(Error::backend(&rep.name, e)),
    };
    if data.len() as u64 > MAX_MARKER_BYTES {
        tracing::warn!(
            "{}: {h} is over its {MAX_MARKER_BYTES}-byte limit; ignored (marks start afresh)",
            rep.name
        );
        return Ok(Marks::new());
    }
    let parsed = open_doc(repo.keyring(), ObjectKind::Marker, &h.to_string(), &data)
        .and_then(|p| Marks::decode(&p).map_err(|e| Error::Corrupt(format!("{h}: {e}"))));
    match parsed {
        Ok(m) => Ok(m),
        Err(e) => {
            tracing::warn!("{}: {e}; ignored (marks start afresh)", rep.name);
            Ok(Marks::new())
        }
    }
}
