//! `diff`: the paths added, removed, modified or changed in type between
//! two snapshots.
//!
//! The two trees are compared side by side, directory by directory; a
//! directory whose tree is the same in both is skipped without being read,
//! so comparing two snapshots of mostly unchanged data reads little more
//! than the changed directories.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind};
use crate::repo::{Repository, TreeWalker};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// In both, with other content or metadata (directories are never
    /// modified themselves: what changed is below them).
    Modified,
    /// In both, as different types (a file that became a directory, …).
    TypeChanged,
}

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub change: ChangeKind,
    /// Absolute path in the snapshots; bytes of a name that are not UTF-8
    /// show as U+FFFD.
    pub path: String,
    /// The entry's type: in the second snapshot, or in the first for a
    /// removed one.
    #[serde(rename = "type")]
    pub kind: NodeKind,
}

/// How many changes of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub type_changed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    pub from: Id,
    pub to: Id,
    /// Sorted by path.
    pub changes: Vec<Change>,
    pub counts: Counts,
}

/// Whether a non-directory entry changed: its content, or the metadata a
/// restore would set.
fn modified(a: &Node, b: &Node) -> bool {
    a.content != b.content
        || a.mode != b.mode
        || a.mtime != b.mtime
        || a.target != b.target
        || a.uid != b.uid
        || a.gid != b.gid
}

/// Compare snapshot `from` with snapshot `to` (each an id, a unique prefix
/// or `latest`).
pub async fn diff(repo: &Repository, from: &str, to: &str) -> Result<Diff> {
    // Shared: a repair or prune holding the exclusive lock may be
    // rewriting the index this reads.
    repo.with_lock(crate::repo::LockMode::Shared, "diff", async || {
        diff_locked(repo, from, to).await
    })
    .await
}

async fn diff_locked(repo: &Repository, from: &str, to: &str) -> Result<Diff> {
    let snaps = repo.list_snapshots().await?;
    let s1 = Repository::find_snapshot(&snaps, from)?;
    let s2 = Repository::find_snapshot(&snaps, to)?;
    let index = repo.load_index().await?;
    // Only the loader: the walk goes through two trees at once.
    let mut trees = TreeWalker::new(repo, &index);
    let mut changes = Vec::new();
    let mut stack = vec![(
        String::new(),
        Some(s1.snapshot.tree.clone()),
        Some(s2.snapshot.tree.clone()),
    )];
    while let Some((dir, t1, t2)) = stack.pop() {
        if t1 == t2 {
            continue;
        }
        let t1 = match t1 {
            Some(ids) => Some(trees.load(&ids).await?),
            None => None,
        };
        let t2 = match t2 {
            Some(ids) => Some(trees.load(&ids).await?),
            None => None,
        };
        let mut both: BTreeMap<&[u8], (Option<&Node>, Option<&Node>)> = BTreeMap::new();
        for n in t1.iter().flat_map(|t| &t.nodes) {
            both.entry(&n.name.0).or_default().0 = Some(n);
        }
        for n in t2.iter().flat_map(|t| &t.nodes) {
            both.entry(&n.name.0).or_default().1 = Some(n);
        }
        for (name, (x, y)) in both {
            let path = format!("{dir}/{}", String::from_utf8_lossy(name));
            let change = match (x, y) {
                (Some(p), None) => Some((ChangeKind::Removed, p.kind)),
                (None, Some(q)) => Some((ChangeKind::Added, q.kind)),
                (Some(p), Some(q)) if p.kind != q.kind => Some((ChangeKind::TypeChanged, q.kind)),
                (Some(p), Some(q)) if p.kind != NodeKind::Dir && modified(p, q) => {
                    Some((ChangeKind::Modified, q.kind))
                }
                _ => None,
            };
            if let Some((change, kind)) = change {
                changes.push(Change {
                    change,
                    path: path.clone(),
                    kind,
                });
            }
            let sub = |n: Option<&Node>| {
                n.filter(|n| n.kind == NodeKind::Dir)
                    .map(|n| n.subtree.clone())
            };
            let (d1, d2) = (sub(x), sub(y));
            if d1.is_some() || d2.is_some() {
                stack.push((path, d1, d2));
            }
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    let mut counts = Counts::default();
    for c in &changes {
        *match c.change {
            ChangeKind::Added => &mut counts.added,
            ChangeKind::Removed => &mut counts.removed,
            ChangeKind::Modified => &mut counts.modified,
            ChangeKind::TypeChanged => &mut counts.type_changed,
        } += 1;
    }
    Ok(Diff {
        from: s1.id,
        to: s2.id,
        changes,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::test_support::{backup_of, memory_repo};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_every_change_below_changed_directories() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        for d in ["same/deep", "gone", "a"] {
            fs::create_dir_all(src.join(d)).unwrap();
        }
        fs::write(src.join("same/deep/f"), "unchanged").unwrap();
        fs::write(src.join("gone/x"), "x").unwrap();
        fs::write(src.join("a/edit"), "before").unwrap();
        fs::write(src.join("a/becomes-dir"), "file").unwrap();
        let repo = memory_repo().await;
        let first = backup_of(&repo, src.clone(), |_| {}).await;

        fs::remove_dir_all(src.join("gone")).unwrap();
        fs::write(src.join("a/edit"), "after, longer").unwrap();
        fs::remove_file(src.join("a/becomes-dir")).unwrap();
        fs::create_dir_all(src.join("a/becomes-dir")).unwrap();
        fs::write(src.join("a/becomes-dir/inner"), "i").unwrap();
        fs::write(src.join("added"), "new").unwrap();
        let second = backup_of(&repo, src.clone(), |_| {}).await;

        let d = diff(&repo, &first.to_hex(), "latest").await.unwrap();
        assert_eq!((d.from, d.to), (first, second));
        let s = src.display().to_string();
        let mine: Vec<(ChangeKind, String, NodeKind)> = d
            .changes
            .iter()
            .filter_map(|c| {
                let p = c.path.strip_prefix(&s)?;
                Some((c.change, p.to_string(), c.kind))
            })
            .collect();
        use ChangeKind::*;
        use NodeKind::{Dir, File};
        assert_eq!(
            mine,
            [
                (TypeChanged, "/a/becomes-dir".into(), Dir),
                (Added, "/a/becomes-dir/inner".into(), File),
                (Modified, "/a/edit".into(), File),
                (Added, "/added".into(), File),
                (Removed, "/gone".into(), Dir),
                (Removed, "/gone/x".into(), File),
            ],
            "{d:#?}"
        );
        // A directory is never modified itself, so the directories above
        // the backed-up one (whose times other processes touch) are not
        // named.
        assert_eq!(mine.len(), d.changes.len());
        assert_eq!(
            d.counts,
            Counts {
                added: 2,
                removed: 2,
                modified: 1,
                type_changed: 1
            }
        );

        let back = diff(&repo, "latest", &first.to_hex()[..8]).await.unwrap();
        assert_eq!(back.counts.added, 2);
        assert_eq!(back.counts.removed, 2);
        let same = diff(&repo, "latest", "latest").await.unwrap();
        assert!(same.changes.is_empty());
        assert_eq!(same.counts, Counts::default());
    }
}
