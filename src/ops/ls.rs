//! `snapshots` and `ls`: what a repository holds — its snapshots, chosen
//! by host and tag, and the entries of one snapshot or of a path in it.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::format::id::hex_encode;
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{escape_bytes, Node, NodeKind};
use crate::repo::{Repository, SnapshotEntry, TreeWalker, Visit, Visitor};

/// Which snapshots to list; a criterion left `None` matches every snapshot.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Only snapshots taken on this host.
    pub host: Option<String>,
    /// Only snapshots carrying this tag.
    pub tag: Option<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|h| &s.host == h)
            && self.tag.as_ref().is_none_or(|t| s.tags.contains(t))
    }
}

/// The snapshots `filter` selects, oldest first.
pub async fn snapshots(repo: &Repository, filter: &SnapshotFilter) -> Result<Vec<SnapshotEntry>> {
    let mut snaps = repo.list_snapshots().await?;
    snaps.retain(|s| filter.matches(&s.snapshot));
    Ok(snaps)
}

/// One entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Absolute path in the snapshot, exact when it is UTF-8; otherwise
    /// escaped (see [`escape_bytes`]) and the exact bytes are in
    /// `path_hex`.
    pub path: String,
    /// The path's bytes in hex, only when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits and file type, as in `st_mode`.
    pub mode: u32,
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
}

impl Entry {
    fn new(path: &[u8], n: &Node) -> Entry {
        let (path, path_hex) = match std::str::from_utf8(path) {
            Ok(p) => (p.to_string(), None),
            Err(_) => (escape_bytes(path), Some(hex_encode(path))),
        };
        Entry {
            path,
            path_hex,
            kind: n.kind,
            mode: n.mode,
            size: n.size,
            mtime: n.mtime,
            uid: n.uid,
            gid: n.gid,
        }
    }

    /// The path for a terminal: control characters escaped, so a hostile
    /// name cannot move the cursor or forge another line.
    pub fn display(&self) -> String {
        match self.path_hex {
            Some(_) => self.path.clone(),
            None => escape_bytes(self.path.as_bytes()),
        }
    }
}

/// The entries of one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    pub snapshot: Id,
    /// Sorted by path.
    pub entries: Vec<Entry>,
}

/// List snapshot `spec` (an id, a unique prefix or `latest`): every entry,
/// or with `path` only that path and what is below it. A path that is not
/// in the snapshot lists nothing.
pub async fn ls(repo: &Repository, spec: &str, path: Option<&str>) -> Result<Listing> {
    // Shared: a repair or prune holding the exclusive lock may be
    // rewriting the index this reads.
    repo.with_lock(crate::repo::LockMode::Shared, "ls", async || {
        ls_locked(repo, spec, path).await
    })
    .await
}

async fn ls_locked(repo: &Repository, spec: &str, path: Option<&str>) -> Result<Listing> {
    let snaps = repo.list_snapshots().await?;
    let snap = Repository::find_snapshot(&snaps, spec)?;
    let index = repo.load_index().await?;
    let prefix = format!("/{}", path.unwrap_or("/").trim_matches('/'));
    let mut v = Collect {
        below: format!("{}/", prefix.trim_end_matches('/')),
        prefix,
        entries: Vec::new(),
    };
    // Every path is listed, so every occurrence of a repeated subtree is
    // walked; a directory that cannot be read makes the listing wrong,
    // hence an error rather than a gap.
    TreeWalker::new(repo, &index)
        .try_walk(&snap.snapshot.tree, Path::new("/"), &mut v)
        .await?;
    v.entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Listing {
        snapshot: snap.id,
        entries: v.entries,
    })
}

/// Collects the entries at or below `prefix`, entering only directories
/// that are on the way there or inside it.
struct Collect {
    prefix: String,
    /// `prefix` with a trailing `/`.
    below: String,
    entries: Vec<Entry>,
}

impl Visitor for Collect {
    fn node(&mut self, path: &Path, n: &Node) -> Visit {
        let bytes = path.as_os_str().as_bytes();
        let path = path.to_string_lossy();
        let inside = path == self.prefix || path.starts_with(&self.below);
        let above = self
            .prefix
            .strip_prefix(&*path)
            .is_some_and(|rest| rest.starts_with('/'));
        if inside {
            self.entries.push(Entry::new(bytes, n));
        }
        if inside || above {
            Visit::Descend
        } else {
            Visit::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::test_support::{backup_of, memory_repo};

    fn paths(l: &Listing) -> Vec<&str> {
        l.entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_every_entry_or_one_path_and_below() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::create_dir_all(src.join("ab")).unwrap();
        fs::write(src.join("a/b/f"), "12345").unwrap();
        fs::set_permissions(src.join("a/b/f"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(src.join("ab/g"), "").unwrap();
        std::os::unix::fs::symlink("a", src.join("link")).unwrap();
        let repo = memory_repo().await;
        let id = backup_of(&repo, src.clone(), |_| {}).await;
        let s = src.display().to_string();

        let all = ls(&repo, "latest", None).await.unwrap();
        assert_eq!(all.snapshot, id);
        let mine: Vec<String> = paths(&all)
            .into_iter()
            .filter_map(|p| p.strip_prefix(&s))
            .map(String::from)
            .collect();
        assert_eq!(
            mine,
            ["", "/a", "/a/b", "/a/b/f", "/ab", "/ab/g", "/link"],
            "{all:#?}"
        );
        // The directories above the backed-up one are listed too.
        assert!(paths(&all).contains(&&*dir.path().display().to_string()));
        let mut sorted = paths(&all);
        sorted.sort();
        assert_eq!(sorted, paths(&all));
        let f = all.entries.iter().find(|e| e.path == format!("{s}/a/b/f"));
        let f = f.unwrap();
        let meta = fs::metadata(src.join("a/b/f")).unwrap();
        let want = Entry {
            path: f.path.clone(),
            path_hex: None,
            kind: NodeKind::File,
            mode: 0o100640,
            size: 5,
            mtime: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            uid: meta.uid(),
            gid: meta.gid(),
        };
        assert_eq!(*f, want);
        let link = all.entries.iter().find(|e| e.path == format!("{s}/link"));
        assert_eq!(link.unwrap().kind, NodeKind::Symlink);

        // A directory: itself and what is below it, not its namesakes
        // (`ab` is not below `a`); the same with or without slashes.
        for p in [format!("{s}/a"), format!("{}/a/", &s[1..])] {
            let sub = ls(&repo, &id.to_hex()[..8], Some(&p)).await.unwrap();
            let want: Vec<String> = ["/a", "/a/b", "/a/b/f"]
                .iter()
                .map(|x| format!("{s}{x}"))
                .collect();
            assert_eq!(paths(&sub), want, "{p}");
        }
        let file = ls(&repo, "latest", Some(&format!("{s}/a/b/f")))
            .await
            .unwrap();
        assert_eq!(paths(&file), [format!("{s}/a/b/f")]);
        let none = ls(&repo, "latest", Some(&format!("{s}/nothing")))
            .await
            .unwrap();
        assert!(none.entries.is_empty());
        assert!(ls(&repo, "ffffffffff", None).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_directory_fails_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/f"), "x").unwrap();
        let repo = memory_repo().await;
        backup_of(&repo, src, |_| {}).await;
        let index = repo.load_index().await.unwrap();
        let snaps = repo.list_snapshots().await.unwrap();
        let (pack, _) = index.get(&snaps[0].snapshot.tree[0]).unwrap();
        let h = cairn_backends::Handle::new(cairn_backends::Kind::Pack, pack.id.to_hex());
        repo.replica(0).backend.delete(&h).await.unwrap();
        let err = ls(&repo, "latest", None).await.unwrap_err();
        assert!(err.is_damage(), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_by_host_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), "x").unwrap();
        let repo = memory_repo().await;
        let path = dir.path().to_path_buf();
        let a = backup_of(&repo, path.clone(), |o| {
            o.host = "one".into();
            o.tags = vec!["db".into()];
        })
        .await;
        let b = backup_of(&repo, path.clone(), |o| o.host = "two".into()).await;
        let c = backup_of(&repo, path, |o| {
            o.host = "two".into();
            o.tags = vec!["db".into(), "daily".into()];
        })
        .await;
        let ids = |f: SnapshotFilter| {
            let repo = &repo;
            async move {
                snapshots(repo, &f)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| s.id)
                    .collect::<Vec<_>>()
            }
        };
        let f = |host: Option<&str>, tag: Option<&str>| SnapshotFilter {
            host: host.map(String::from),
            tag: tag.map(String::from),
        };
        assert_eq!(ids(f(None, None)).await, [a, b, c]);
        assert_eq!(ids(f(Some("two"), None)).await, [b, c]);
        assert_eq!(ids(f(None, Some("db"))).await, [a, c]);
        assert_eq!(ids(f(Some("two"), Some("db"))).await, [c]);
        assert!(ids(f(Some("three"), None)).await.is_empty());
        assert!(ids(f(None, Some("d"))).await.is_empty());
    }
}
