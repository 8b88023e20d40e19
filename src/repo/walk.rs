//! The tree walker: every operation that goes through a snapshot's
//! directories (check, restore, repair, survey, ls, stats) uses it.
//!
//! It walks without recursion (a deep tree cannot overflow the stack),
//! calls a [`Visitor`] before a directory's tree is loaded, for each of its
//! entries and after everything below it, and keeps recently loaded trees,
//! so a subtree that appears many times is fetched and decoded once. With
//! [`TreeWalker::each_tree_once`], a tree already walked is not walked
//! again at all: a tree that repeats one subtree a million times then costs
//! one visit, which is what whole-repository passes (check, survey, stats)
//! want. A walk that needs every path (restore, ls) visits every
//! occurrence.
//!
//! Entries whose names could leave their directory or repeat an earlier
//! name ([`Tree::take_refused`]) never reach [`Visitor::node`]: they are
//! reported through [`Visitor::refused`], so every walk builds paths from
//! safe components only.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::tree_cache::TreeCache;
use super::{MasterIndex, Repository};
use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind, Refused, Tree};

/// Whether to go below a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    Descend,
    Skip,
}

/// What a walk does at each step. Every method has a default, so a visitor
/// implements only what it needs.
pub trait Visitor {
    /// Before the tree `ids` of directory `path` is loaded.
    fn enter(&mut self, _path: &Path, _ids: &[Id]) -> Visit {
        Visit::Descend
    }

    /// The tree of `path` could not be loaded: what is below it is unknown.
    fn unreadable(&mut self, _path: &Path, _ids: &[Id], _err: &Error) {}

    /// One entry at `path`. For a directory, `Skip` does not enter it.
    fn node(&mut self, _path: &Path, _node: &Node) -> Visit {
        Visit::Descend
    }

    /// An entry of directory `dir` was refused for its name: it is not
    /// visited (nor anything below it).
    fn refused(&mut self, _dir: &Path, _entry: &Refused) {}

    /// After everything below `path` was visited.
    fn leave(&mut self, _path: &Path, _ids: &[Id]) {}
}

/// Trees kept in memory: enough for the directories of a deep path and
/// the subtrees a snapshot repeats, bounded (with their entries, see
/// [`TreeCache`]) so memory does not grow with the repository.
const CACHE_TREES: usize = 4096;

/// Walks trees of one repository with one index.
pub struct TreeWalker<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    once: bool,
    seen: HashSet<Vec<Id>>,
    cache: TreeCache<Loaded>,
    loads: u64,
}

/// A decoded tree without its refused entries, and those entries.
type Loaded = (Arc<Tree>, Arc<Vec<Refused>>);

enum Step {
    Enter(PathBuf, Vec<Id>),
    Leave(PathBuf, Vec<Id>),
}

impl<'a> TreeWalker<'a> {
    pub fn new(repo: &'a Repository, index: &'a MasterIndex) -> Self {
        TreeWalker {
            repo,
            index,
            once: false,
            seen: HashSet::new(),
            cache: TreeCache::new(CACHE_TREES),
            loads: 0,
        }
    }

    /// Walk each distinct tree once, across every later [`TreeWalker::walk`]
    /// of this walker.
    #[must_use]
    pub fn each_tree_once(mut self) -> Self {
        self.once = true;
        self
    }

    /// Load a tree, from the cache when it was loaded recently; refused
    /// entries are taken out (see [`Tree::take_refused`]).
    pub async fn load(&mut self, ids: &[Id]) -> Result<Arc<Tree>> {
        Ok(self.load_checked(ids).await?.0)
    }

    async fn load_checked(&mut self, ids: &[Id]) -> Result<Loaded> {
        if let Some(t) = self.cache.get(ids) {
            return Ok(t);
        }
        let mut tree = self.repo.load_tree(self.index, ids).await?;
        self.loads += 1;
        let refused = tree.take_refused();
        let loaded = (Arc::new(tree), Arc::new(refused));
        self.cache.insert(ids, loaded.clone(), loaded.0.nodes.len());
        Ok(loaded)
    }

    /// How many trees were fetched and decoded so far (cache misses).
    pub fn loads(&self) -> u64 {
        self.loads
    }

    /// Walk the tree `root`, whose directory is `root_path` (`/` for a
    /// snapshot's root).
    pub async fn walk(&mut self, root: &[Id], root_path: &Path, v: &mut impl Visitor) {
        let walked = self.run(root, root_path, v, false).await;
        debug_assert!(walked.is_ok(), "only try_walk stops at a tree");
    }

    /// Like [`TreeWalker::walk`], but the first tree that cannot be loaded
    /// ends the walk with its error ([`Visitor::unreadable`] is not
    /// called): for results that would be wrong if a directory were
    /// missing (a listing, a total), where the error itself (and the exit
    /// code it carries) is what the caller must report.
    pub async fn try_walk(
        &mut self,
        root: &[Id],
        root_path: &Path,
        v: &mut impl Visitor,
    ) -> Result<()> {
        self.run(root, root_path, v, true).await
    }

    async fn run(
        &mut self,
        root: &[Id],
        root_path: &Path,
        v: &mut impl Visitor,
        fail_fast: bool,
    ) -> Result<()> {
        let mut stack = vec![Step::Enter(root_path.to_path_buf(), root.to_vec())];
        while let Some(step) = stack.pop() {
            let (path, ids) = match step {
                Step::Leave(path, ids) => {
                    v.leave(&path, &ids);
                    continue;
                }
                Step::Enter(path, ids) => (path, ids),
            };
            if self.once && self.seen.contains(&ids) {
                continue;
            }
            if v.enter(&path, &ids) == Visit::Skip {
                continue;
            }
            if self.once {
                self.seen.insert(ids.clone());
            }
            let loaded = match self.load_checked(&ids).await {
                Ok(t) => t,
                Err(e) if fail_fast => return Err(e),
                Err(e) => {
                    v.unreadable(&path, &ids, &e);
                    continue;
                }
            };
            let (tree, refused) = &loaded;
            for r in refused.iter() {
                v.refused(&path, r);
            }
            stack.push(Step::Leave(path.clone(), ids));
            let first_dir = stack.len();
            for n in &tree.nodes {
                let child = path.join(OsStr::from_bytes(&n.name.0));
                if v.node(&child, n) == Visit::Descend && n.kind == NodeKind::Dir {
                    stack.push(Step::Enter(child, n.subtree.clone()));
                }
            }
            // Directories in name order.
            stack[first_dir..].reverse();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Record {
        events: Vec<String>,
    }

    impl Visitor for Record {
        fn enter(&mut self, path: &Path, _: &[Id]) -> Visit {
            self.events.push(format!("enter {}", path.display()));
            Visit::Descend
        }
        fn node(&mut self, path: &Path, n: &Node) -> Visit {
            self.events
                .push(format!("node {} {:?}", path.display(), n.kind));
            if path.ends_with("skipped") {
                Visit::Skip
            } else {
                Visit::Descend
            }
        }
        fn leave(&mut self, path: &Path, _: &[Id]) {
            self.events.push(format!("leave {}", path.display()));
        }
    }

    async fn backed_up(src: &Path) -> (Repository, Vec<Id>) {
        use crate::test_support::{backup_dir, init, memory_replicas};
        let repo = init(memory_replicas(1)).await;
        let root = backup_dir(&repo, src).await.snapshot.tree;
        (repo, root)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visits_in_order_skips_and_leaves_after_children() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        for d in ["a/x", "b", "skipped/deep"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        std::fs::write(src.join("a/x/f"), "1").unwrap();
        std::fs::write(src.join("b/g"), "2").unwrap();
        let (repo, root) = backed_up(&src).await;
        let index = repo.load_index().await.unwrap();
        let mut rec = Record::default();
        TreeWalker::new(&repo, &index)
            .walk(&root, Path::new("/"), &mut rec)
            .await;
        let s = src.display().to_string();
        let ev: Vec<String> = rec
            .events
            .iter()
            .filter(|e| e.contains(&s) || !e.contains('/') || e.ends_with(" /"))
            .map(|e| e.replace(&s, "S"))
            .collect();
        let want = [
            "node S/a Dir",
            "node S/b Dir",
            "node S/skipped Dir",
            "enter S/a",
            "node S/a/x Dir",
            "enter S/a/x",
            "node S/a/x/f File",
            "leave S/a/x",
            "leave S/a",
            "enter S/b",
            "node S/b/g File",
            "leave S/b",
        ];
        let got: Vec<&str> = ev
            .iter()
            .map(String::as_str)
            .skip_while(|e| !e.starts_with("node S/"))
            .take(want.len())
            .collect();
        assert_eq!(got, want, "{:#?}", rec.events);
        assert!(!rec.events.iter().any(|e| e.contains("deep")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_tree_once_walks_a_repeated_subtree_once() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        // Directories holding the same entries have the same tree: one
        // file hard-linked into each (same inode, times and link count).
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(dir.path().join("f"), "same").unwrap();
        for i in 0..50 {
            std::fs::create_dir_all(src.join(format!("d{i:02}/same"))).unwrap();
            std::fs::hard_link(dir.path().join("f"), src.join(format!("d{i:02}/same/f"))).unwrap();
        }
        let (repo, root) = backed_up(&src).await;
        let index = repo.load_index().await.unwrap();
        let count = |rec: &Record| {
            rec.events
                .iter()
                .filter(|e| e.starts_with("enter") && e.ends_with("same"))
                .count()
        };
        let mut all = Record::default();
        TreeWalker::new(&repo, &index)
            .walk(&root, Path::new("/"), &mut all)
            .await;
        assert_eq!(count(&all), 50);
        let mut once = Record::default();
        TreeWalker::new(&repo, &index)
            .each_tree_once()
            .walk(&root, Path::new("/"), &mut once)
            .await;
        assert_eq!(count(&once), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn try_walk_stops_at_an_unreadable_tree_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), "1").unwrap();
        let (repo, root) = backed_up(&src).await;
        let index = repo.load_index().await.unwrap();
        let (pack, _) = index.get(&root[0]).unwrap();
        let h = cairn_backends::Handle::new(cairn_backends::Kind::Pack, pack.id.to_hex());
        repo.replica(0).backend.delete(&h).await.unwrap();

        #[derive(Default)]
        struct Unreadable(usize);
        impl Visitor for Unreadable {
            fn unreadable(&mut self, _: &Path, _: &[Id], _: &Error) {
                self.0 += 1;
            }
        }
        let mut v = Unreadable::default();
        TreeWalker::new(&repo, &index)
            .walk(&root, Path::new("/"), &mut v)
            .await;
        assert_eq!(v.0, 1);
        let mut v = Unreadable::default();
        let err = TreeWalker::new(&repo, &index)
            .try_walk(&root, Path::new("/"), &mut v)
            .await
            .unwrap_err();
        assert!(err.is_damage(), "{err}");
        assert_eq!(v.0, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subtree_referenced_a_million_times_is_loaded_once() {
        use crate::ops::restore::forge::{self, Forge};
        use crate::test_support::{init, memory_replicas};
        // A binary DAG 20 levels deep: 2^20 leaf directories, 21 trees.
        const LEVELS: usize = 20;
        let repo = init(memory_replicas(1)).await;
        let f = Forge::new(&repo).await.unwrap();
        let mut t = f.tree(vec![forge::node(b"f", NodeKind::File)]);
        for _ in 0..LEVELS {
            t = f.tree(vec![forge::dir(b"a", t.clone()), forge::dir(b"b", t)]);
        }
        f.commit(t.clone(), "/").await.unwrap();
        let index = repo.load_index().await.unwrap();

        #[derive(Default)]
        struct Count(u64);
        impl Visitor for Count {
            fn node(&mut self, _: &Path, n: &Node) -> Visit {
                self.0 += u64::from(n.kind == NodeKind::File);
                Visit::Descend
            }
        }
        let mut c = Count::default();
        let mut w = TreeWalker::new(&repo, &index);
        let started = std::time::Instant::now();
        w.walk(&t, Path::new("/"), &mut c).await;
        eprintln!("walked 2^{LEVELS} leaves in {:?}", started.elapsed());
        assert_eq!(c.0, 1 << LEVELS);
        assert_eq!(w.loads(), LEVELS as u64 + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tree_cache_is_bounded_by_entries_not_only_by_trees() {
        use crate::ops::restore::forge::{self, Forge};
        use crate::test_support::{init, memory_replicas};
        // 800 directories of 100 files: 80,000 entries, more than the cache
        // may hold, in far fewer trees than its tree limit.
        let repo = init(memory_replicas(1)).await;
        let f = Forge::new(&repo).await.unwrap();
        let dirs: Vec<_> = (0..800u32)
            .map(|d| {
                let files = (0..100u32)
                    .map(|i| forge::node(format!("{d}-{i}").as_bytes(), NodeKind::File))
                    .collect();
                forge::dir(format!("d{d:04}").as_bytes(), f.tree(files))
            })
            .collect();
        let t = f.tree(dirs);
        f.commit(t.clone(), "/").await.unwrap();
        let index = repo.load_index().await.unwrap();

        struct Files(u64);
        impl Visitor for Files {
            fn node(&mut self, _: &Path, n: &Node) -> Visit {
                self.0 += u64::from(n.kind == NodeKind::File);
                Visit::Descend
            }
        }
        let mut c = Files(0);
        let mut w = TreeWalker::new(&repo, &index);
        w.walk(&t, Path::new("/"), &mut c).await;
        assert_eq!(c.0, 80_000);
        let held = w.cache.nodes();
        assert!(
            held <= crate::repo::tree_cache::CACHE_NODES,
            "{held} entries cached"
        );
        assert!(w.cache.len() < 800);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_entries_are_reported_not_visited() {
        use crate::ops::restore::forge::{self, Forge};
        use crate::test_support::{init, memory_replicas};
        let repo = init(memory_replicas(1)).await;
        let f = Forge::new(&repo).await.unwrap();
        let inner = f.tree(vec![forge::node(b"x", NodeKind::File)]);
        let t = f.tree(vec![
            forge::dir(b"..", inner.clone()),
            forge::node(b"ok", NodeKind::File),
            forge::node(b"ok", NodeKind::File),
        ]);
        f.commit(t.clone(), "/").await.unwrap();
        let index = repo.load_index().await.unwrap();

        #[derive(Default)]
        struct Seen(Vec<String>);
        impl Visitor for Seen {
            fn node(&mut self, p: &Path, _: &Node) -> Visit {
                self.0.push(format!("node {}", p.display()));
                Visit::Descend
            }
            fn refused(&mut self, dir: &Path, r: &Refused) {
                self.0.push(format!(
                    "refused {} {} {}",
                    dir.display(),
                    r.name.lossy(),
                    r.reason
                ));
            }
        }
        let mut s = Seen::default();
        TreeWalker::new(&repo, &index)
            .walk(&t, Path::new("/"), &mut s)
            .await;
        assert_eq!(
            s.0,
            [
                "refused / .. name `.` or `..`",
                "refused / ok name appears twice in its directory",
                "node /ok",
            ]
        );
    }
}
