//! `ls`: the entries of a snapshot, or of one path in it, with their
//! metadata, sorted by path.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind};
use crate::repo::{MasterIndex, Repository, TreeWalker, Visit, Visitor};

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LsEntry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    pub mode: u32,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
}

/// Every entry at `prefix` (a path in the snapshot; `/` for all) or
/// below it, in the snapshot whose root tree is `root`. An unreadable
/// directory on the way ends the listing with its error.
pub async fn ls(
    repo: &Repository,
    index: &MasterIndex,
    root: &[Id],
    prefix: &str,
) -> Result<Vec<LsEntry>> {
    struct Collect {
        prefix: String,
        rows: Vec<LsEntry>,
        failed: Option<Error>,
    }
    impl Visitor for Collect {
        fn unreadable(&mut self, path: &Path, _: &[Id], e: &Error) {
            if self.failed.is_none() {
                self.failed = Some(Error::Corrupt(format!("{}: {e}", path.display())));
            }
        }
        fn node(&mut self, path: &Path, n: &Node) -> Visit {
            let p = path.to_string_lossy();
            let inside = self.prefix == "/"
                || p == self.prefix
                || p.starts_with(&format!("{}/", self.prefix));
            let above = self.prefix.starts_with(&format!("{p}/"));
            if inside {
                self.rows.push(LsEntry {
                    path: p.into_owned(),
                    kind: n.kind,
                    mode: n.mode,
                    size: n.size,
                    mtime: n.mtime,
                    uid: n.uid,
                    gid: n.gid,
                });
            }
            if inside || above {
                Visit::Descend
            } else {
                Visit::Skip
            }
        }
    }
    let mut v = Collect {
        prefix: format!("/{}", prefix.trim_matches('/')),
        rows: Vec::new(),
        failed: None,
    };
    TreeWalker::new(repo, index)
        .walk(root, Path::new("/"), &mut v)
        .await;
    if let Some(e) = v.failed {
        return Err(e);
    }
    v.rows.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(v.rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_everything_or_one_path() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let repo = init(memory_replicas(1)).await;
        let root = backup_dir(&repo, &src).await.snapshot.tree;
        let index = repo.load_index().await.unwrap();
        let s = src.display().to_string();
        let all = ls(&repo, &index, &root, "/").await.unwrap();
        for p in ["/sub", "/sub/random.bin", "/text.txt"] {
            assert!(all.iter().any(|e| e.path == format!("{s}{p}")), "{p}");
        }
        let sub = ls(&repo, &index, &root, &format!("{s}/sub")).await.unwrap();
        let paths: Vec<&str> = sub.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, [format!("{s}/sub"), format!("{s}/sub/random.bin")]);
        assert_eq!(sub[1].size, 3_000_000);
        assert_eq!(sub[1].kind, NodeKind::File);
    }
}
