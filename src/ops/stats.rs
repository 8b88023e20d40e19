//! `stats`: how much the chosen snapshots hold, how much unique data they
//! need (each distinct tree's blobs counted once, as dedup stores them),
//! and what each replica stores.

use std::collections::HashSet;
use std::path::Path;

use cairn_backends::Kind;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind};
use crate::repo::{MasterIndex, Repository, SnapshotEntry, TreeWalker, Visit, Visitor};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatsReport {
    pub snapshots: usize,
    /// Files in all chosen snapshots (a file in two snapshots counts twice).
    pub files: u64,
    /// Bytes a restore of every chosen snapshot would write.
    pub restore_size: u64,
    pub unique_blobs: usize,
    pub unique_raw_bytes: u64,
    pub unique_stored_bytes: u64,
    pub replicas: Vec<ReplicaStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReplicaStats {
    pub name: String,
    pub packs: usize,
    pub bytes: u64,
}

/// Sizes of `chosen` and of every replica's packs.
pub async fn stats(
    repo: &Repository,
    index: &MasterIndex,
    chosen: &[SnapshotEntry],
) -> Result<StatsReport> {
    struct Count {
        files: u64,
        restore_size: u64,
        blobs: HashSet<Id>,
        trees_seen: HashSet<Vec<Id>>,
        /// Whether each tree being walked is walked for the first time.
        first: Vec<bool>,
        failed: Option<Error>,
    }
    impl Visitor for Count {
        fn enter(&mut self, _: &Path, ids: &[Id]) -> Visit {
            self.blobs.extend(ids.iter().copied());
            let first = self.trees_seen.insert(ids.to_vec());
            self.first.push(first);
            Visit::Descend
        }
        fn unreadable(&mut self, path: &Path, _: &[Id], e: &Error) {
            self.first.pop();
            if self.failed.is_none() {
                self.failed = Some(Error::Corrupt(format!("{}: {e}", path.display())));
            }
        }
        fn node(&mut self, _: &Path, n: &Node) -> Visit {
            if n.kind == NodeKind::File {
                self.files += 1;
                self.restore_size += n.size;
                if self.first.last().copied().unwrap_or(false) {
                    self.blobs.extend(n.content.iter().copied());
                }
            }
            Visit::Descend
        }
        fn leave(&mut self, _: &Path, _: &[Id]) {
            self.first.pop();
        }
    }
    let mut v = Count {
        files: 0,
        restore_size: 0,
        blobs: HashSet::new(),
        trees_seen: HashSet::new(),
        first: Vec::new(),
        failed: None,
    };
    let mut walker = TreeWalker::new(repo, index);
    for s in chosen {
        walker.walk(&s.snapshot.tree, Path::new("/"), &mut v).await;
    }
    if let Some(e) = v.failed {
        return Err(e);
    }
    let (mut raw, mut stored) = (0u64, 0u64);
    for id in &v.blobs {
        if let Some((_, loc)) = index.get(id) {
            raw += loc.raw_len as u64;
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
            packs: packs.len(),
            bytes: packs.iter().map(|p| p.size).sum(),
        });
    }
    Ok(StatsReport {
        snapshots: chosen.len(),
        files: v.files,
        restore_size: v.restore_size,
        unique_blobs: v.blobs.len(),
        unique_raw_bytes: raw,
        unique_stored_bytes: stored,
        replicas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_identical_snapshot_adds_files_not_unique_data() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let repo = init(memory_replicas(2)).await;
        backup_dir(&repo, &src).await;
        let index = repo.load_index().await.unwrap();
        let snaps = repo.list_snapshots().await.unwrap();
        let one = stats(&repo, &index, &snaps).await.unwrap();
        assert_eq!(one.files, 2);
        assert_eq!(one.restore_size, 3_000_000 + 50_000);
        backup_dir(&repo, &src).await;
        let index = repo.load_index().await.unwrap();
        let snaps = repo.list_snapshots().await.unwrap();
        let two = stats(&repo, &index, &snaps).await.unwrap();
        assert_eq!(two.snapshots, 2);
        assert_eq!(two.files, 4);
        assert_eq!(two.unique_blobs, one.unique_blobs);
        assert_eq!(two.replicas.len(), 2);
        assert_eq!(two.replicas[0].bytes, two.replicas[1].bytes);
    }
}
