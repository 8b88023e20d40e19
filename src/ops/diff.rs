//! `diff`: added (`+`), removed (`-`), modified (`M`) and type-changed
//! (`T`) paths between two snapshots. It walks both trees side by side, so
//! directories whose tree ids are equal are skipped without being read.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind};
use crate::repo::{MasterIndex, Repository, TreeWalker};

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `+`, `-`, `M` or `T`.
    pub change: String,
    pub path: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffReport {
    /// Sorted by path.
    pub changes: Vec<Change>,
}

impl DiffReport {
    /// How many changes of kind `c` (`+`, `-`, `M`, `T`).
    pub fn count(&self, c: &str) -> usize {
        self.changes.iter().filter(|x| x.change == c).count()
    }
}

fn modified(a: &Node, b: &Node) -> bool {
    a.content != b.content
        || a.mode != b.mode
        || a.mtime != b.mtime
        || a.target != b.target
        || a.uid != b.uid
        || a.gid != b.gid
}

/// Compare the trees `from` and `to` (snapshot roots).
pub async fn diff(
    repo: &Repository,
    index: &MasterIndex,
    from: &[Id],
    to: &[Id],
) -> Result<DiffReport> {
    let mut walker = TreeWalker::new(repo, index);
    let mut changes: Vec<Change> = Vec::new();
    let mut stack = vec![(String::new(), Some(from.to_vec()), Some(to.to_vec()))];
    while let Some((dir, t1, t2)) = stack.pop() {
        if t1 == t2 {
            continue;
        }
        let mut both: BTreeMap<Vec<u8>, (Option<Node>, Option<Node>)> = BTreeMap::new();
        if let Some(ids) = t1 {
            for n in &walker.load(&ids).await?.nodes {
                both.entry(n.name.0.clone()).or_default().0 = Some(n.clone());
            }
        }
        if let Some(ids) = t2 {
            for n in &walker.load(&ids).await?.nodes {
                both.entry(n.name.0.clone()).or_default().1 = Some(n.clone());
            }
        }
        for (name, (x, y)) in both {
            let path = format!("{dir}/{}", String::from_utf8_lossy(&name));
            let sub = |n: &Option<Node>| {
                n.as_ref()
                    .filter(|n| n.kind == NodeKind::Dir)
                    .map(|n| n.subtree.clone())
            };
            let change = match (&x, &y) {
                (Some(_), None) => Some("-"),
                (None, Some(_)) => Some("+"),
                (Some(p), Some(q)) if p.kind != q.kind => Some("T"),
                (Some(p), Some(q)) if p.kind != NodeKind::Dir && modified(p, q) => Some("M"),
                _ => None,
            };
            if let Some(c) = change {
                changes.push(Change {
                    change: c.to_string(),
                    path: path.clone(),
                });
            }
            if sub(&x).is_some() || sub(&y).is_some() {
                stack.push((path, sub(&x), sub(&y)));
            }
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(DiffReport { changes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn added_removed_and_modified_paths() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let repo = init(memory_replicas(1)).await;
        let a = backup_dir(&repo, &src).await.snapshot.tree;
        std::fs::write(src.join("new.txt"), "new").unwrap();
        std::fs::remove_file(src.join("text.txt")).unwrap();
        std::fs::write(src.join("sub/random.bin"), "changed").unwrap();
        let b = backup_dir(&repo, &src).await.snapshot.tree;
        let index = repo.load_index().await.unwrap();
        let rep = diff(&repo, &index, &a, &b).await.unwrap();
        let s = src.display().to_string();
        let got: Vec<(String, String)> = rep
            .changes
            .iter()
            .filter(|c| c.path.starts_with(&s) && c.path.len() > s.len())
            .map(|c| (c.change.clone(), c.path[s.len()..].to_string()))
            .collect();
        let want = [
            ("+", "/new.txt"),
            ("M", "/sub/random.bin"),
            ("-", "/text.txt"),
        ];
        assert_eq!(
            got,
            want.map(|(c, p)| (c.to_string(), p.to_string())).to_vec()
        );
        assert!(diff(&repo, &index, &a, &a)
            .await
            .unwrap()
            .changes
            .is_empty());
    }
}
