//! What each replica holds, and what each snapshot needs: the common ground
//! of `status`, `sync`, cross-replica `check` and `repair`.
//!
//! A snapshot is *complete* on a replica when the replica lists the
//! snapshot file and every pack holding a blob the snapshot reaches (its
//! trees and file contents) is both stored on that replica and described by
//! one of that replica's own index files, so the replica alone can restore
//! it. What a snapshot reaches is computed once per tree and shared between
//! snapshots, since unchanged directories keep their tree ids.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cairn_backends::Kind;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::repo::MasterIndex;
use crate::repo::Repository;
use crate::repo::{TreeWalker, Visit, Visitor};
use std::path::Path;

/// The objects one replica holds, by kind.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Pack id → stored size.
    pub packs: HashMap<Id, u64>,
    pub index: BTreeSet<String>,
    pub snapshots: BTreeSet<String>,
    pub keys: BTreeSet<String>,
    /// When the newest snapshot file was written (the end of the last
    /// backup or sync that completed on this replica), if the backend
    /// reports modification times.
    pub last_snapshot_write: Option<std::time::SystemTime>,
}

impl Listing {
    /// List every kind of object on replica `i`.
    pub async fn take(repo: &Repository, i: usize) -> Result<Listing> {
        let r = &repo.replicas()[i];
        let be = |e| Error::backend(&r.name, e);
        let (packs, index, snaps, keys) = futures::try_join!(
            async { r.backend.list(Kind::Pack).await.map_err(be) },
            async { r.backend.list(Kind::Index).await.map_err(be) },
            async { r.backend.list(Kind::Snapshot).await.map_err(be) },
            async { r.backend.list(Kind::Key).await.map_err(be) },
        )?;
        let last_snapshot_write = snaps.iter().filter_map(|m| m.modified).max();
        Ok(Listing {
            last_snapshot_write,
            packs: packs
                .into_iter()
                .filter_map(|m| Some((m.handle.name.parse().ok()?, m.size)))
                .collect(),
            index: index.into_iter().map(|m| m.handle.name).collect(),
            snapshots: snaps.into_iter().map(|m| m.handle.name).collect(),
            keys: keys.into_iter().map(|m| m.handle.name).collect(),
        })
    }

    pub fn pack_bytes(&self) -> u64 {
        self.packs.values().sum()
    }
}

/// Listings of every replica of `repo`, in replica order; a replica that
/// cannot be listed has its error instead.
pub async fn list_all(repo: &Repository) -> Vec<Result<Listing>> {
    futures::future::join_all((0..repo.replicas().len()).map(|i| Listing::take(repo, i))).await
}

/// What a snapshot (or a tree) needs.
#[derive(Clone, Debug, Default)]
pub struct Needs {
    /// Positions in [`MasterIndex::packs`], sorted, without duplicates.
    pub packs: Vec<u32>,
    /// Blobs referenced but described by no index file anywhere.
    pub unindexed: u64,
    /// Trees that could not be read from any replica (what is below them
    /// is unknown).
    pub unreadable_trees: u64,
}

impl Needs {
    /// Whether something the snapshot needs is lost whatever the replica.
    pub fn is_broken(&self) -> bool {
        self.unindexed > 0 || self.unreadable_trees > 0
    }

    fn absorb(&mut self, other: &Needs) {
        self.packs.extend_from_slice(&other.packs);
        self.unindexed += other.unindexed;
        self.unreadable_trees += other.unreadable_trees;
    }

    fn normalize(&mut self) {
        self.packs.sort_unstable();
        self.packs.dedup();
    }

    /// How many needed packs replica `i` lacks: not stored there per
    /// `listing`, or not described by its own index files.
    pub fn missing_on(&self, index: &MasterIndex, i: usize, listing: &Listing) -> u64 {
        self.packs
            .iter()
            .filter(|&&p| {
                let info = &index.packs[p as usize];
                !info.replicas.contains(i) || !listing.packs.contains_key(&info.id)
            })
            .count() as u64
    }
}

/// Computes [`Needs`] of snapshots, remembering every tree it has seen.
/// Memory: one sorted list of pack positions per distinct tree.
#[derive(Default)]
pub struct NeedsCache {
    memo: HashMap<Vec<Id>, Arc<Needs>>,
}

impl NeedsCache {
    pub async fn of_snapshot(
        &mut self,
        repo: &Repository,
        index: &MasterIndex,
        snap: &Snapshot,
    ) -> Arc<Needs> {
        self.of_tree(repo, index, &snap.tree).await
    }

    /// A tree's needs are its own blobs plus its subtrees' needs, so each
    /// is computed when the walk leaves it, after its children.
    pub async fn of_tree(
        &mut self,
        repo: &Repository,
        index: &MasterIndex,
        root: &[Id],
    ) -> Arc<Needs> {
        let mut v = NeedsVisitor {
            index,
            memo: &mut self.memo,
            frames: Vec::new(),
        };
        TreeWalker::new(repo, index)
            .walk(root, Path::new("/"), &mut v)
            .await;
        self.memo
            .get(root)
            .cloned()
            .expect("the root is computed last")
    }
}

/// One directory being walked: its own needs and its subtrees.
struct Frame {
    ids: Vec<Id>,
    own: Needs,
    children: Vec<Vec<Id>>,
}

struct NeedsVisitor<'a> {
    index: &'a MasterIndex,
    memo: &'a mut HashMap<Vec<Id>, Arc<Needs>>,
    frames: Vec<Frame>,
}

impl NeedsVisitor<'_> {
    fn done(&mut self, ids: Vec<Id>, mut own: Needs) {
        own.normalize();
        self.memo.insert(ids, Arc::new(own));
    }
}

impl Visitor for NeedsVisitor<'_> {
    fn enter(&mut self, _: &Path, ids: &[Id]) -> Visit {
        if self.memo.contains_key(ids) {
            return Visit::Skip;
        }
        let mut own = Needs::default();
        add_blobs(&mut own, self.index, ids);
        if own.unindexed > 0 {
            own.unreadable_trees += 1;
            self.done(ids.to_vec(), own);
            return Visit::Skip;
        }
        self.frames.push(Frame {
            ids: ids.to_vec(),
            own,
            children: Vec::new(),
        });
        Visit::Descend
    }

    fn unreadable(&mut self, _: &Path, _: &[Id], e: &Error) {
        tracing::debug!("{e}");
        let mut f = self.frames.pop().expect("entered");
        f.own.unreadable_trees += 1;
        self.done(f.ids, f.own);
    }

    fn node(&mut self, _: &Path, n: &Node) -> Visit {
        let f = self.frames.last_mut().expect("entered");
        match n.kind {
            NodeKind::Dir => f.children.push(n.subtree.clone()),
            NodeKind::File => add_blobs(&mut f.own, self.index, &n.content),
            _ => {}
        }
        Visit::Descend
    }

    fn leave(&mut self, _: &Path, _: &[Id]) {
        let mut f = self.frames.pop().expect("entered");
        for c in &f.children {
            if let Some(n) = self.memo.get(c) {
                f.own.absorb(n);
            }
        }
        self.done(f.ids, f.own);
    }
}

fn add_blobs(n: &mut Needs, index: &MasterIndex, ids: &[Id]) {
    for id in ids {
        match index.get(id) {
            Some((_, loc)) => n.packs.push(loc.pack),
            None => n.unindexed += 1,
        }
    }
}
