//! `stats`: how much the snapshots hold once restored, what the
//! repository stores for them after deduplication and compression, and
//! how much each replica holds.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cairn_backends::Kind;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind};
use crate::repo::{Repository, TreeWalker, Visit, Visitor};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Files in them: a file in two snapshots, or twice in one, counts
    /// twice.
    pub files: u64,
    /// Bytes a restore of every counted snapshot would write.
    pub restore_size: u64,
    /// Distinct blobs (file contents and trees) the snapshots reference.
    pub unique_blobs: u64,
    /// Plaintext bytes of those of them the index knows.
    pub unique_raw_bytes: u64,
    /// Stored (compressed, encrypted) bytes of those of them the index
    /// knows.
    pub unique_stored_bytes: u64,
    pub replicas: Vec<ReplicaStats>,
}

/// What one replica stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplicaStats {
    pub name: String,
    pub packs: u64,
    /// Bytes of its packs.
    pub bytes: u64,
}

/// Statistics of snapshot `spec` (an id, a unique prefix or `latest`), or
/// of every snapshot.
pub async fn stats(repo: &Repository, spec: Option<&str>) -> Result<Stats> {
    // Shared: a repair or prune holding the exclusive lock may be
    // rewriting the index this reads.
    repo.with_lock(crate::repo::LockMode::Shared, "stats", async || {
        stats_locked(repo, spec).await
    })
    .await
}

async fn stats_locked(repo: &Repository, spec: Option<&str>) -> Result<Stats> {
    let snaps = repo.list_snapshots().await?;
    let chosen = match spec {
        Some(s) => vec![Repository::find_snapshot(&snaps, s)?],
        None => snaps.iter().collect(),
    };
    let index = repo.load_index().await?;
    let mut v = Count::default();
    // Each distinct tree is walked once, however often snapshots repeat
    // it; its file totals are remembered and added for every occurrence.
    let mut walker = TreeWalker::new(repo, &index).each_tree_once();
    let (mut files, mut restore_size) = (0, 0);
    for s in &chosen {
        // A tree that cannot be read would make every total wrong.
        walker
            .try_walk(&s.snapshot.tree, Path::new("/"), &mut v)
            .await?;
        let t = v.totals.get(&s.snapshot.tree).copied().unwrap_or_default();
        files += t.files;
        restore_size += t.bytes;
    }
    let (mut raw, mut stored) = (0u64, 0u64);
    for id in &v.blobs {
        if let Some((_, loc)) = index.get(id) {
            raw += loc.raw_len() as u64;
            stored += loc.stored_len as u64;
        }
    }
    let mut replicas = Vec::new();
    for r in repo.replicas() {
        let packs = r
            .backend
            .list(Kind::Pack)
            .await
            .map_err(|e| Error::backend(&r.name, e))?;
        replicas.push(ReplicaStats {
            name: r.name.clone(),
            packs: packs.len() as u64,
            bytes: packs.iter().map(|p| p.size).sum(),
        });
    }
    Ok(Stats {
        snapshots: chosen.len() as u64,
        files,
        restore_size,
        unique_blobs: v.blobs.len() as u64,
        unique_raw_bytes: raw,
        unique_stored_bytes: stored,
        replicas,
    })
}

/// Files and their bytes below a tree, every occurrence counted.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    files: u64,
    bytes: u64,
}

/// A directory being walked: its own files and its subtrees, whose totals
/// are known once they are left.
struct Frame {
    ids: Vec<Id>,
    own: Totals,
    children: Vec<Vec<Id>>,
}

#[derive(Default)]
struct Count {
    blobs: HashSet<Id>,
    totals: HashMap<Vec<Id>, Totals>,
    frames: Vec<Frame>,
}

impl Visitor for Count {
    fn enter(&mut self, _: &Path, ids: &[Id]) -> Visit {
        self.blobs.extend(ids.iter().copied());
        self.frames.push(Frame {
            ids: ids.to_vec(),
            own: Totals::default(),
            children: Vec::new(),
        });
        Visit::Descend
    }

    fn node(&mut self, _: &Path, n: &Node) -> Visit {
        let f = self.frames.last_mut().expect("entered");
        match n.kind {
            NodeKind::File => {
                f.own.files += 1;
                f.own.bytes += n.size;
                self.blobs.extend(n.content.iter().copied());
            }
            NodeKind::Dir => f.children.push(n.subtree.clone()),
            _ => {}
        }
        Visit::Descend
    }

    fn leave(&mut self, _: &Path, _: &[Id]) {
        let f = self.frames.pop().expect("entered");
        let mut t = f.own;
        // Every subtree was left before its parent, in this walk or an
        // earlier one (a tree cannot contain itself).
        for c in &f.children {
            let c = self.totals.get(c).copied().unwrap_or_default();
            t.files += c.files;
            t.bytes += c.bytes;
        }
        self.totals.insert(f.ids, t);
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::repo::SnapshotEntry;
    use crate::test_support::{backup_of, memory_repo};

    /// The totals as `cairn stats` computed them before it used the
    /// walker: every occurrence of every tree loaded and counted, content
    /// blobs taken from the first occurrence of a tree.
    async fn by_hand(repo: &Repository, snaps: &[SnapshotEntry]) -> (u64, u64, u64, u64, u64) {
        let index = repo.load_index().await.unwrap();
        let (mut files, mut size) = (0, 0);
        let mut blobs = HashSet::new();
        let mut seen = HashSet::new();
        for s in snaps {
            let mut stack = vec![s.snapshot.tree.clone()];
            while let Some(ids) = stack.pop() {
                blobs.extend(ids.iter().copied());
                let first = seen.insert(ids.clone());
                for n in repo.load_tree(&index, &ids).await.unwrap().nodes {
                    if n.kind == NodeKind::File {
                        files += 1;
                        size += n.size;
                        if first {
                            blobs.extend(n.content.iter().copied());
                        }
                    }
                    if n.kind == NodeKind::Dir {
                        stack.push(n.subtree.clone());
                    }
                }
            }
        }
        let loc = |id: &Id| index.get(id).map(|(_, l)| *l);
        let raw = blobs
            .iter()
            .filter_map(loc)
            .map(|l| l.raw_len() as u64)
            .sum();
        let stored = blobs
            .iter()
            .filter_map(loc)
            .map(|l| l.stored_len as u64)
            .sum();
        (files, size, blobs.len() as u64, raw, stored)
    }

    fn numbers(s: &Stats) -> (u64, u64, u64, u64, u64) {
        (
            s.files,
            s.restore_size,
            s.unique_blobs,
            s.unique_raw_bytes,
            s.unique_stored_bytes,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_subtrees_count_every_time_and_their_blobs_once() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        // Directories holding the same entries have the same tree: one
        // file hard-linked into each (same inode, times and link count).
        fs::create_dir_all(&src).unwrap();
        fs::write(dir.path().join("f"), "same content").unwrap();
        for i in 0..20 {
            fs::create_dir_all(src.join(format!("d{i:02}/same"))).unwrap();
            fs::hard_link(dir.path().join("f"), src.join(format!("d{i:02}/same/f"))).unwrap();
        }
        fs::write(src.join("other"), vec![7u8; 100_000]).unwrap();
        let repo = memory_repo().await;
        let first = backup_of(&repo, src.clone(), |_| {}).await;
        fs::write(src.join("new"), "new").unwrap();
        backup_of(&repo, src.clone(), |_| {}).await;
        let snaps = repo.list_snapshots().await.unwrap();

        let all = stats(&repo, None).await.unwrap();
        assert_eq!(all.snapshots, 2);
        assert_eq!(numbers(&all), by_hand(&repo, &snaps).await);
        // 20 + 1 files in the first snapshot, one more in the second.
        assert_eq!(all.files, 21 + 22);
        assert_eq!(all.restore_size, 2 * (20 * 12 + 100_000) + 3);
        assert!(all.unique_stored_bytes > 0 && all.unique_raw_bytes > 0);
        assert_eq!(all.replicas.len(), 1);
        assert_eq!(all.replicas[0].name, "mem0");
        assert!(all.replicas[0].packs > 0 && all.replicas[0].bytes > 0);

        let one = stats(&repo, Some(&first.to_hex()[..10])).await.unwrap();
        assert_eq!(one.snapshots, 1);
        assert_eq!(numbers(&one), by_hand(&repo, &snaps[..1]).await);
        assert_eq!(one.files, 21);
        assert!(one.unique_blobs < all.unique_blobs);
        assert_eq!(
            stats(&repo, Some("latest")).await.unwrap().files,
            22,
            "latest is the second snapshot"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_repository_has_nothing() {
        let repo = memory_repo().await;
        let s = stats(&repo, None).await.unwrap();
        assert_eq!(numbers(&s), (0, 0, 0, 0, 0));
        assert_eq!(s.snapshots, 0);
        assert!(stats(&repo, Some("latest")).await.is_err());
    }
}
