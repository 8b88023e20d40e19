//! Inode numbers and what each one names. A number is derived from its
//! parent's number and its name (a snapshot's directory from the snapshot
//! id), so the same entry keeps its number for the whole session even after
//! the kernel forgot it and looked it up again. Entries are kept only while
//! the kernel holds a reference (lookups minus forgets), so memory follows
//! what is in use, not what was ever visited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::format::id::Id;
use crate::format::tree::Node;
use crate::repo::SnapshotEntry;

pub const ROOT: u64 = 1;
pub const SNAPSHOTS: u64 = 2;
pub const HOSTS: u64 = 3;
pub const TAGS: u64 = 4;
pub const LATEST: u64 = 5;
/// Numbers below this are the fixed ones above (and 0, which FUSE reserves).
const FIRST_DERIVED: u64 = 16;

/// What an inode names.
#[derive(Clone, Debug)]
pub enum What {
    Root,
    Snapshots,
    Hosts,
    Tags,
    /// The `latest` symlink (its target follows the listing).
    Latest,
    HostDir(String),
    TagDir(String),
    /// `hosts/<host>/<name>` or `tags/<tag>/<name>`: a symlink to
    /// `../../snapshots/<name>`.
    Link(String),
    /// `snapshots/<name>`: the snapshot's root tree.
    Snapshot(Arc<SnapshotEntry>),
    /// An entry of a snapshot's tree. `node` has no content list (a large
    /// file's would be kept for nothing): opening the file reads it from
    /// the tree `dir` that holds the entry.
    Entry {
        dir: Arc<[Id]>,
        node: Node,
    },
}

impl What {
    pub fn is_dir(&self) -> bool {
        match self {
            What::Root
            | What::Snapshots
            | What::Hosts
            | What::Tags
            | What::HostDir(_)
            | What::TagDir(_)
            | What::Snapshot(_) => true,
            What::Latest | What::Link(_) => false,
            What::Entry { node, .. } => node.kind == crate::format::tree::NodeKind::Dir,
        }
    }
}

struct Slot {
    parent: u64,
    key: Vec<u8>,
    what: What,
    lookups: u64,
}

/// The inodes the kernel holds.
pub struct Inodes {
    slots: Mutex<HashMap<u64, Slot>>,
}

impl Default for Inodes {
    fn default() -> Self {
        Self::new()
    }
}

impl Inodes {
    pub fn new() -> Inodes {
        let fixed = [
            (ROOT, What::Root, &b"/"[..]),
            (SNAPSHOTS, What::Snapshots, b"snapshots"),
            (HOSTS, What::Hosts, b"hosts"),
            (TAGS, What::Tags, b"tags"),
            (LATEST, What::Latest, b"latest"),
        ];
        let slots = fixed
            .into_iter()
            .map(|(ino, what, key)| {
                let slot = Slot {
                    parent: ROOT,
                    key: key.to_vec(),
                    what,
                    // Never forgotten.
                    lookups: u64::MAX,
                };
                (ino, slot)
            })
            .collect();
        Inodes {
            slots: Mutex::new(slots),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `ino` names, if the kernel still holds it.
    pub fn get(&self, ino: u64) -> Option<What> {
        self.slots().get(&ino).map(|s| s.what.clone())
    }

    /// The parent of `ino`, if the kernel still holds it.
    pub fn parent(&self, ino: u64) -> Option<u64> {
        self.slots().get(&ino).map(|s| s.parent)
    }

    /// The number of the entry `key` under `parent`, without remembering it
    /// (for a directory listing).
    pub fn number(&self, parent: u64, key: &[u8]) -> u64 {
        free_number(&self.slots(), parent, key)
    }

    /// Remember the entry `key` under `parent` for one more lookup by the
    /// kernel; its number.
    pub fn remember(&self, parent: u64, key: &[u8], what: What) -> u64 {
        let mut slots = self.slots();
        let ino = free_number(&slots, parent, key);
        let slot = slots.entry(ino).or_insert_with(|| Slot {
            parent,
            key: key.to_vec(),
            what: what.clone(),
            lookups: 0,
        });
        // A snapshot listed again, or a tree re-read, may carry fresher
        // metadata for the same entry.
        slot.what = what;
        slot.lookups = slot.lookups.saturating_add(1);
        ino
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut slots = self.slots();
        if let Some(slot) = slots.get_mut(&ino) {
            slot.lookups = slot.lookups.saturating_sub(n);
            if slot.lookups == 0 && ino >= FIRST_DERIVED {
                slots.remove(&ino);
            }
        }
    }

    /// How many inodes are held (fixed ones included).
    pub fn len(&self) -> usize {
        self.slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots().is_empty()
    }
}

/// The derived number of `key` under `parent`: a hash, probed past numbers
/// held by other entries (a collision is not expected, but must not make
/// two entries one).
fn free_number(slots: &HashMap<u64, Slot>, parent: u64, key: &[u8]) -> u64 {
    for probe in 0u64.. {
        let mut h = blake3::Hasher::new();
        h.update(&parent.to_le_bytes());
        h.update(&probe.to_le_bytes());
        h.update(key);
        let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
        let ino = u64::from_le_bytes(bytes);
        if ino < FIRST_DERIVED {
            continue;
        }
        match slots.get(&ino) {
            Some(s) if s.parent != parent || s.key != key => continue,
            _ => return ino,
        }
    }
    unreachable!("a free number exists among 2^64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_entries_go_when_forgotten() {
        let t = Inodes::new();
        let before = t.number(ROOT, b"a");
        let a = t.remember(ROOT, b"a", What::Link("x".into()));
        assert_eq!(a, before);
        assert!(a >= FIRST_DERIVED);
        assert_ne!(t.number(ROOT, b"b"), a);
        assert_ne!(t.number(SNAPSHOTS, b"a"), a, "the parent is part of it");
        assert_eq!(t.remember(ROOT, b"a", What::Link("x".into())), a);
        t.forget(a, 1);
        assert!(t.get(a).is_some(), "one lookup is still held");
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        assert_eq!(t.remember(ROOT, b"a", What::Link("x".into())), a);
        // Fixed inodes stay.
        t.forget(ROOT, u64::MAX);
        assert!(matches!(t.get(ROOT), Some(What::Root)));
        assert_eq!(t.len(), 6);
    }
}
