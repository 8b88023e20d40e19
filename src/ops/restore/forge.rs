//! Forging snapshots with the engine's own writer: what a compromised
//! client holding the key could store — trees with any names, duplicates,
//! device nodes, set-id bits, one subtree referenced a million times.
//! Trees are stored exactly as given (neither sorted nor checked). For
//! tests of readers (restore, ls, check), not for producing backups.

use std::sync::Arc;

use bytes::Bytes;
use cairn_backends::Kind;
use jiff::Timestamp;

use crate::error::Result;
use crate::format::crypto::ObjectKind;
use crate::format::id::Id;
use crate::format::pack::BlobKind;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, RawName, Tree};
use crate::ops::backup::fanout::FanOut;
use crate::ops::backup::progress::Progress;
use crate::ops::backup::store::{BlobStore, StoreConfig};
use crate::repo::{seal_doc, Repository};

/// A snapshot being forged; call from a multi-threaded tokio runtime.
pub struct Forge<'a> {
    repo: &'a Repository,
    store: BlobStore,
}

impl<'a> Forge<'a> {
    pub async fn new(repo: &'a Repository) -> Result<Forge<'a>> {
        let index = Arc::new(repo.load_index().await?);
        let progress = Arc::new(Progress::new(
            repo.replicas().iter().map(|r| r.name.clone()),
        ));
        let rt = tokio::runtime::Handle::current();
        let fan = FanOut::start(&rt, repo.replicas(), 4, 2, progress.clone());
        let store = BlobStore::new(
            repo.shared_keyring(),
            index,
            StoreConfig {
                targets: repo.all(),
                level: repo.config().compression_level,
                pack_size: repo.config().pack_size as usize,
                workers: 1,
            },
            fan,
            progress,
        );
        Ok(Forge { repo, store })
    }

    /// Store file content as one blob; the ids for [`Node::content`].
    pub fn data(&self, data: &[u8]) -> Vec<Id> {
        tokio::task::block_in_place(|| vec![self.store.store(BlobKind::Data, data)])
    }

    /// Store a tree of exactly these entries, in this order.
    pub fn tree(&self, nodes: Vec<Node>) -> Vec<Id> {
        let bytes = Tree { nodes }.to_bytes();
        tokio::task::block_in_place(|| vec![self.store.store(BlobKind::Tree, &bytes)])
    }

    /// Write the packs, the index and a snapshot of `root` (claiming to be
    /// of `path`) to every replica; returns the snapshot's id.
    pub async fn commit(self, root: Vec<Id>, path: &str) -> Result<Id> {
        let (written, fan) = tokio::task::block_in_place(|| self.store.finish());
        if let Some(e) = fan.finish().await.into_iter().flatten().next() {
            return Err(e);
        }
        let repo = self.repo;
        let snapshot = Snapshot {
            time: Timestamp::now(),
            host: "forged".into(),
            username: "forged".into(),
            paths: vec![path.to_string()],
            tags: Vec::new(),
            parent: None,
            tree: root,
            partial: false,
            errors: Vec::new(),
            excludes: Vec::new(),
            program: "cairn forge".into(),
            summary: Summary::default(),
            original: None,
        };
        let snap = Bytes::from(seal_doc(
            repo.keyring(),
            ObjectKind::Snapshot,
            &serde_json::to_vec(&snapshot).expect("snapshot serializes"),
        ));
        let id = Id::of_stored(&snap);
        for r in repo.replicas() {
            for (name, data) in repo.seal_index_files(&written) {
                repo.put_doc(r, Kind::Index, &name, data).await?;
            }
            repo.put_doc(r, Kind::Snapshot, &id.to_hex(), snap.clone())
                .await?;
        }
        Ok(id)
    }
}

/// An entry named `name` of kind `kind`, owned by root, mode 0644 (0755
/// for a directory) with the type bits, dated 2001-09-09.
pub fn node(name: &[u8], kind: NodeKind) -> Node {
    let (ty, perm) = match kind {
        NodeKind::File => (0o100000, 0o644),
        NodeKind::Dir => (0o040000, 0o755),
        NodeKind::Symlink => (0o120000, 0o777),
        NodeKind::Fifo => (0o010000, 0o644),
        NodeKind::Chardev => (0o020000, 0o644),
        NodeKind::Blockdev => (0o060000, 0o644),
        NodeKind::Socket => (0o140000, 0o644),
    };
    Node {
        name: RawName(name.to_vec()),
        kind,
        mode: ty | perm,
        uid: 0,
        gid: 0,
        user: None,
        size: 0,
        mtime: 1_000_000_000_000_000_000,
        ctime: 1_000_000_000_000_000_000,
        inode: 0,
        device: 0,
        links: 1,
        rdev: 0,
        target: None,
        content: Vec::new(),
        subtree: Vec::new(),
    }
}

/// A file named `name` holding `data`.
pub fn file(f: &Forge, name: &[u8], data: &[u8]) -> Node {
    Node {
        size: data.len() as u64,
        content: if data.is_empty() {
            Vec::new()
        } else {
            f.data(data)
        },
        ..node(name, NodeKind::File)
    }
}

/// A directory named `name` whose tree is `subtree`.
pub fn dir(name: &[u8], subtree: Vec<Id>) -> Node {
    Node {
        subtree,
        ..node(name, NodeKind::Dir)
    }
}

/// A symlink named `name` pointing at `target`.
pub fn symlink(name: &[u8], target: &[u8]) -> Node {
    Node {
        target: Some(RawName(target.to_vec())),
        ..node(name, NodeKind::Symlink)
    }
}
