//! Reading the source: turning `lstat` results into tree nodes, matching
//! exclude patterns, and chunking one file or stream into the blob store.

use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::stages::Stage;
use super::store::BlobStore;
use crate::format::chunker::Chunker;
use crate::format::id::Id;
use crate::format::pack::BlobKind;
use crate::format::tree::{Node, NodeKind, RawName};

/// Build a node from `lstat` metadata (no content yet).
pub fn node_from_meta(name: &[u8], meta: &Metadata, path: &Path) -> Node {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        NodeKind::File
    } else if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::Chardev
    } else if ft.is_block_device() {
        NodeKind::Blockdev
    } else {
        NodeKind::Socket
    };
    let target = (kind == NodeKind::Symlink)
        .then(|| std::fs::read_link(path).ok())
        .flatten()
        .map(|t| RawName(t.as_os_str().as_bytes().to_vec()));
    Node {
        name: RawName(name.to_vec()),
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        user: None,
        size: if kind == NodeKind::File {
            meta.size()
        } else {
            0
        },
        mtime: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        inode: meta.ino(),
        device: meta.dev(),
        links: if kind == NodeKind::Dir {
            0
        } else {
            meta.nlink()
        },
        rdev: if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
            meta.rdev()
        } else {
            0
        },
        target,
        content: Vec::new(),
        subtree: Vec::new(),
    }
}

/// Exclude patterns. A pattern without `/` matches a file name anywhere; a
/// pattern with `/` matches the whole absolute path (a relative one matches
/// at any depth).
#[derive(Clone)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes, globset::Error> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let p = p.trim_end_matches('/');
            if p.contains('/') {
                let full = if p.starts_with('/') {
                    p.to_string()
                } else {
                    format!("**/{p}")
                };
                paths.add(GlobBuilder::new(&full).literal_separator(true).build()?);
            } else {
                names.add(GlobBuilder::new(p).literal_separator(true).build()?);
            }
        }
        Ok(Excludes {
            names: names.build()?,
            paths: paths.build()?,
        })
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.names.is_match(n)) || self.paths.is_match(path)
    }
}

/// Bytes asked of the reader at a time.
const READ_SIZE: usize = 1 << 20;

/// Window the chunker is first given: at the default 1 MiB average, a cut
/// lies within 3 MiB for all but about 1 in 70 chunks; those get a longer
/// window (up to `max_size`, where a cut is forced).
const FILL: usize = 3 << 20;

/// Consumed bytes at the front of the buffer are dropped (the unconsumed
/// tail moved to the front) once there are this many: the tail is at most
/// about one window, so this moves well under half of what is read, and
/// the buffer touches about `DRAIN_AT + FILL + READ_SIZE` bytes, not two
/// maximum-size windows.
const DRAIN_AT: usize = 4 << 20;

/// Read `r` to the end, cut it into chunks and store them. Returns the
/// chunk ids and the number of bytes read.
///
/// Reads append into spare capacity without zero-filling it first (that
/// showed up as one of the largest costs in profiles). `buf` is scratch
/// space the caller keeps between files, so its pages are not mapped and
/// unmapped again for every file; it is at most `max_size + READ_SIZE`
/// (9 MiB by default) and usually touched only to about 8 MiB.
pub fn chunk_stream(
    r: &mut dyn Read,
    chunker: &Chunker,
    store: &BlobStore,
    on_bytes: &dyn Fn(u64),
    buf: &mut Vec<u8>,
) -> std::io::Result<(Vec<Id>, u64)> {
    let max = chunker.params().max_size as usize;
    let fill = FILL.min(max);
    let cap = max + READ_SIZE;
    buf.clear();
    buf.reserve(cap);
    let mut start = 0;
    let mut need = fill;
    let mut ids = Vec::new();
    let mut total = 0u64;
    let mut eof = false;
    loop {
        while !eof && buf.len() - start < need {
            if start >= DRAIN_AT || buf.len() + READ_SIZE > cap {
                buf.drain(..start);
                start = 0;
            }
            let t = store.stages().start(Stage::Read);
            let n = loop {
                match (&mut *r).take(READ_SIZE as u64).read_to_end(buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            store.stages().stop(t, Stage::Read, n as u64);
            total += n as u64;
            on_bytes(n as u64);
            // `read_to_end` stops early only at end of file: a short
            // result saw it, and one more `read` per file would only see
            // it again.
            eof = n < READ_SIZE;
        }
        loop {
            let t = store.stages().start(Stage::Chunk);
            let Some(n) = chunker.next_cut(&buf[start..], eof) else {
                break;
            };
            store.stages().stop(t, Stage::Chunk, n as u64);
            ids.push(store.store(BlobKind::Data, &buf[start..start + n]));
            start += n;
            need = fill;
        }
        if eof && start == buf.len() {
            return Ok((ids, total));
        }
        // Undecided: no cut inside the window; widen it (at `max` the
        // chunker always decides).
        if buf.len() - start >= need {
            need = (buf.len() - start + READ_SIZE).min(max);
        }
    }
}

/// Store a tree, chunking it if it is large.
pub fn store_tree(bytes: Vec<u8>, chunker: &Chunker, store: &BlobStore) -> Vec<Id> {
    if bytes.len() <= chunker.params().max_size as usize {
        return vec![store.store(BlobKind::Tree, &bytes)];
    }
    let mut ids = Vec::new();
    let mut pos = 0;
    while let Some(n) = chunker.next_cut(&bytes[pos..], true) {
        ids.push(store.store(BlobKind::Tree, &bytes[pos..pos + n]));
        pos += n;
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_names_and_paths() {
        let ex =
            Excludes::new(&["*.tmp".into(), "/data/cache".into(), "build/out".into()]).unwrap();
        assert!(ex.is_excluded(Path::new("/a/b/x.tmp")));
        assert!(!ex.is_excluded(Path::new("/a/b/x.tmpl")));
        assert!(ex.is_excluded(Path::new("/data/cache")));
        assert!(!ex.is_excluded(Path::new("/data/cache2")));
        assert!(ex.is_excluded(Path::new("/src/build/out")));
        assert!(!ex.is_excluded(Path::new("/src/build/output")));
    }
}
