//! Copying one snapshot's trees and file contents from the source
//! repository into the target's blob store.
//!
//! Runs on a plain thread (inside `block_in_place`): source reads are
//! driven with `Handle::block_on`, and the target's store blocks when its
//! uploads fall behind. A file is streamed blob by blob through the
//! target's chunker, so memory holds a few blobs, never a whole file.
//! Directories are copied without recursion (a deep tree cannot overflow
//! the stack): each level is a frame holding the source entries and the
//! target entries built so far.
//!
//! What is not read again: a subtree or file content already copied in
//! this run, and — when the snapshot's parent was copied before, in this
//! run or an earlier one — what the snapshot shares with its parent. The
//! parent's trees and those of its copy are walked side by side, only
//! where the snapshot differs from the parent, and an entry unchanged since
//! the parent takes its ids from the parent's copy. Any id taken over that
//! way is used only if the target's index (or this snapshot's store) holds
//! it; otherwise the content is read and stored again.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::atomic::Ordering::Relaxed;

use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::ops::backup::progress::Progress;
use crate::ops::backup::source::{chunk_stream, store_tree};
use crate::ops::backup::store::BlobStore;
use crate::repo::{MasterIndex, Repository};

/// Blobs of a file fetched at once: reads of one batch overlap, and the
/// batch bounds what is held (at most this many maximum-size chunks).
const PREFETCH: usize = 4;

/// Entries remembered across snapshots before the memos are emptied, so
/// memory stays bounded on a repository with very many files.
const MEMO_LIMIT: usize = 1 << 20;

/// What copying one tree could not do.
#[derive(Debug)]
pub enum CopyError {
    /// A tree or blob of the source could not be read: the message names it.
    Source(String),
    /// The run was cancelled.
    Interrupted,
}

/// Copies trees and contents, remembering what it already copied: a
/// subtree or file content that a later snapshot repeats is not read again.
pub struct Copier<'a> {
    pub source: &'a Repository,
    pub index: &'a MasterIndex,
    pub target: &'a Repository,
    pub rt: tokio::runtime::Handle,
    pub progress: &'a Progress,
    /// Source tree blob ids → target tree blob ids.
    trees: HashMap<Vec<Id>, Vec<Id>>,
    /// Source content ids of a file → target content ids.
    contents: HashMap<Vec<Id>, Vec<Id>>,
    /// Scratch space of the chunker, kept between files.
    buf: Vec<u8>,
}

struct Frame {
    /// Source ids of this directory's tree.
    src: Vec<Id>,
    nodes: std::vec::IntoIter<Node>,
    out: Vec<Node>,
    /// The directory entry waiting for this tree (none for the root).
    entry: Option<Node>,
    /// This directory in the parent snapshot and in the parent's copy.
    hint: Option<Hint>,
}

/// A directory of the parent snapshot (`src`, in the source) and the same
/// directory of its copy (`dst`, in the target).
struct Hint {
    src: Tree,
    dst: Tree,
}

impl Hint {
    /// The parent's entry of `name` and its copy, when both exist and are
    /// of `kind`.
    fn pair(&self, name: &[u8], kind: NodeKind) -> Option<(&Node, &Node)> {
        let p = self.src.find(name).filter(|p| p.kind == kind)?;
        let d = self
            .dst
            .find(name)
            .filter(|d| d.kind == kind && d.size == p.size)?;
        Some((p, d))
    }
}

/// A snapshot's parent and the parent's copy in the target: their root
/// tree ids, and the target index the copy's trees are read with.
pub struct ParentCopy<'i> {
    pub src_root: Vec<Id>,
    pub dst_root: Vec<Id>,
    pub dst_index: &'i MasterIndex,
}

impl<'a> Copier<'a> {
    pub fn new(
        source: &'a Repository,
        index: &'a MasterIndex,
        target: &'a Repository,
        progress: &'a Progress,
    ) -> Copier<'a> {
        Copier {
            source,
            index,
            target,
            rt: tokio::runtime::Handle::current(),
            progress,
            trees: HashMap::new(),
            contents: HashMap::new(),
            buf: Vec::new(),
        }
    }

    fn load(&self, ids: &[Id]) -> Result<Tree, CopyError> {
        self.rt
            .block_on(self.source.load_tree(self.index, ids))
            .map_err(|e| {
                CopyError::Source(format!(
                    "tree {}: {}",
                    ids.first().map(|i| i.short()).unwrap_or_default(),
                    crate::error::chain(&e)
                ))
            })
    }

    /// The parent's directory `src` and its copy `dst`, or none when
    /// either cannot be read (the directory is then copied without help).
    fn hint(&self, src: &[Id], dst: &[Id], parent: Option<&ParentCopy>) -> Option<Hint> {
        let parent = parent?;
        let read = async {
            let s = self.source.load_tree(self.index, src).await?;
            let d = self.target.load_tree(parent.dst_index, dst).await?;
            Ok::<_, crate::error::Error>(Hint { src: s, dst: d })
        };
        match self.rt.block_on(read) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("the parent's copy is unreadable, reading everything: {e}");
                None
            }
        }
    }

    /// Remember the ids the parent's copy gives an entry that did not
    /// change since the parent; returns the hint for a changed directory.
    fn seed(
        &mut self,
        hint: Option<&Hint>,
        node: &Node,
        parent: Option<&ParentCopy>,
        store: &BlobStore,
    ) -> Option<Hint> {
        let hint = hint?;
        match node.kind {
            NodeKind::File => {
                let (p, d) = hint.pair(&node.name.0, NodeKind::File)?;
                if p.content == node.content && !self.contents.contains_key(&node.content) {
                    self.remember(p.content.clone(), d.content.clone(), false);
                }
                None
            }
            NodeKind::Dir => {
                let (p, d) = hint.pair(&node.name.0, NodeKind::Dir)?;
                if p.subtree == node.subtree {
                    if !self.trees.contains_key(&node.subtree) {
                        self.remember(p.subtree.clone(), d.subtree.clone(), true);
                    }
                    None
                } else if self.remembered_tree(&node.subtree, store).is_some() {
                    // Copied earlier in this run: nothing to walk.
                    None
                } else {
                    self.hint(&p.subtree, &d.subtree, parent)
                }
            }
            _ => None,
        }
    }

    /// Copy the tree `root` and everything below it into `store`; returns
    /// the target's ids of the root tree. With `parent`, what the snapshot
    /// shares with its parent is taken from the parent's copy.
    pub fn copy_tree(
        &mut self,
        root: &[Id],
        parent: Option<&ParentCopy>,
        store: &BlobStore,
    ) -> Result<Vec<Id>, CopyError> {
        let mut hint = None;
        if let Some(p) = parent {
            if p.src_root == root {
                if !self.trees.contains_key(root) {
                    self.remember(root.to_vec(), p.dst_root.clone(), true);
                }
            } else {
                hint = self.hint(&p.src_root, &p.dst_root, parent);
            }
        }
        if let Some(ids) = self.remembered_tree(root, store) {
            return Ok(ids);
        }
        let cancel = self.source.cancel_token().clone();
        let mut stack = vec![Frame {
            src: root.to_vec(),
            nodes: self.load(root)?.nodes.into_iter(),
            out: Vec::new(),
            entry: None,
            hint,
        }];
        loop {
            if cancel.is_cancelled() {
                return Err(CopyError::Interrupted);
            }
            let top = stack.last_mut().expect("the root frame is popped last");
            let Some(mut node) = top.nodes.next() else {
                let done = stack.pop().expect("non-empty");
                // Entries keep the source's order: the names are the same.
                let bytes = Tree { nodes: done.out }.to_bytes();
                let ids = store_tree(bytes, self.target.chunker(), store);
                self.remember(done.src, ids.clone(), true);
                match (done.entry, stack.last_mut()) {
                    (Some(mut dir), Some(parent)) => {
                        dir.subtree = ids;
                        parent.out.push(dir);
                        continue;
                    }
                    _ => return Ok(ids),
                }
            };
            let hint = top.hint.take();
            let sub_hint = self.seed(hint.as_ref(), &node, parent, store);
            let top = stack.last_mut().expect("non-empty");
            top.hint = hint;
            match node.kind {
                NodeKind::File if !node.content.is_empty() => {
                    node.content = self.copy_content(&node, store)?;
                    self.progress.files.fetch_add(1, Relaxed);
                    let top = stack.last_mut().expect("non-empty");
                    top.out.push(node);
                }
                NodeKind::Dir if !node.subtree.is_empty() => {
                    self.progress.dirs.fetch_add(1, Relaxed);
                    if let Some(ids) = self.remembered_tree(&node.subtree, store) {
                        node.subtree = ids;
                        let top = stack.last_mut().expect("non-empty");
                        top.out.push(node);
                        continue;
                    }
                    let src = std::mem::take(&mut node.subtree);
                    let nodes = self.load(&src)?.nodes.into_iter();
                    stack.push(Frame {
                        src,
                        nodes,
                        out: Vec::new(),
                        entry: Some(node),
                        hint: sub_hint,
                    });
                }
                kind => {
                    match kind {
                        NodeKind::File => self.progress.files.fetch_add(1, Relaxed),
                        NodeKind::Dir => self.progress.dirs.fetch_add(1, Relaxed),
                        _ => 0,
                    };
                    top.out.push(node);
                }
            }
        }
    }

    /// The target ids of a tree copied before, if every target replica
    /// holds them (the index says so) or this snapshot's store queued
    /// them; a tree stored for a snapshot whose upload failed on a replica
    /// is neither, and goes through the store again.
    fn remembered_tree(&self, src: &[Id], store: &BlobStore) -> Option<Vec<Id>> {
        let ids = self.trees.get(src)?;
        ids.iter()
            .all(|id| store.known(id) || store.queued(id))
            .then(|| ids.clone())
    }

    fn remember(&mut self, src: Vec<Id>, ids: Vec<Id>, tree: bool) {
        let memo = if tree {
            &mut self.trees
        } else {
            &mut self.contents
        };
        if memo.len() >= MEMO_LIMIT {
            memo.clear();
        }
        memo.insert(src, ids);
    }

    /// Read a file's content from the source and store it re-chunked;
    /// returns its target content ids.
    fn copy_content(&mut self, node: &Node, store: &BlobStore) -> Result<Vec<Id>, CopyError> {
        if let Some(ids) = self.contents.get(&node.content) {
            if ids.iter().all(|id| store.known(id) || store.queued(id)) {
                return Ok(ids.clone());
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        let mut reader = BlobReader {
            copier: self,
            ids: &node.content,
            next: 0,
            ready: VecDeque::new(),
            cur: Vec::new(),
            pos: 0,
        };
        let progress = self.progress;
        let on_bytes = |n| {
            progress.bytes_read.fetch_add(n, Relaxed);
        };
        let res = chunk_stream(
            &mut reader,
            self.target.chunker(),
            store,
            &on_bytes,
            &mut buf,
        );
        drop(reader);
        self.buf = buf;
        let (ids, _size) = res.map_err(|e| {
            if self.source.cancel_token().is_cancelled() {
                CopyError::Interrupted
            } else {
                CopyError::Source(format!("{}: {e}", node.name.escaped()))
            }
        })?;
        self.remember(node.content.clone(), ids.clone(), false);
        Ok(ids)
    }
}

/// A file's content as a byte stream, read blob by blob from the source
/// (a few blobs ahead).
struct BlobReader<'c, 'a> {
    copier: &'c Copier<'a>,
    ids: &'c [Id],
    next: usize,
    ready: VecDeque<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl BlobReader<'_, '_> {
    fn fill(&mut self) -> std::io::Result<()> {
        let c = self.copier;
        if c.source.cancel_token().is_cancelled() {
            return Err(std::io::Error::other("interrupted"));
        }
        let end = (self.next + PREFETCH).min(self.ids.len());
        let batch = &self.ids[self.next..end];
        let read = c.rt.block_on(futures::future::join_all(
            batch.iter().map(|id| c.source.read_blob(c.index, id)),
        ));
        for (id, r) in batch.iter().zip(read) {
            let data = r.map_err(|e| {
                std::io::Error::other(format!("blob {}: {}", id.short(), crate::error::chain(&e)))
            })?;
            self.ready.push_back(data);
        }
        self.next = end;
        Ok(())
    }
}

impl Read for BlobReader<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.ready.is_empty() {
                if self.next == self.ids.len() {
                    return Ok(0);
                }
                self.fill()?;
            }
            self.cur = self.ready.pop_front().unwrap_or_default();
            self.pos = 0;
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
