//! The in-memory master index: the index files of every replica merged,
//! remembering per pack which replicas list it, so the backup can
//! deduplicate only against blobs that every target replica already holds
//! and reads can fall back to another replica that holds the pack.

use std::collections::HashMap;

use crate::format::codec::Codec;
use crate::format::crypto::Header;
use crate::format::id::Id;
use crate::format::index::IndexPack;
use crate::format::pack::BlobKind;
use crate::repo::ReplicaSet;

/// A pack known to the master index.
#[derive(Clone, Debug)]
pub struct PackInfo {
    pub id: Id,
    pub size: u64,
    pub header: Header,
    /// Bit r set: replica r lists this pack in one of its index files.
    pub replicas: ReplicaSet,
}

/// Location of a blob, compact: the pack is an index into `packs`.
#[derive(Clone, Copy, Debug)]
pub struct BlobLoc {
    pub pack: u32,
    pub seq: u32,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub kind: BlobKind,
    pub codec: Codec,
}

/// Every blob of every loaded index file. Memory is about 100 bytes per
/// unique blob plus 100 per pack.
#[derive(Default)]
pub struct MasterIndex {
    pub packs: Vec<PackInfo>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, BlobLoc>,
}

impl MasterIndex {
    /// Add the packs of one index file, listed by replica `replica`.
    pub fn add(&mut self, replica: usize, packs: &[IndexPack]) {
        for p in packs {
            let pos = *self.pack_pos.entry(p.id).or_insert_with(|| {
                self.packs.push(PackInfo {
                    id: p.id,
                    size: p.size,
                    header: p.header.clone(),
                    replicas: ReplicaSet::EMPTY,
                });
                (self.packs.len() - 1) as u32
            });
            self.packs[pos as usize].replicas.insert(replica);
            for b in &p.blobs {
                let loc = BlobLoc {
                    pack: pos,
                    seq: b.seq,
                    offset: b.offset,
                    stored_len: b.stored_len,
                    raw_len: b.raw_len,
                    kind: b.kind,
                    codec: b.codec,
                };
                match self.blobs.get(&b.id) {
                    // Prefer the copy held by more replicas.
                    Some(old)
                        if self.packs[old.pack as usize].replicas.len()
                            >= self.packs[pos as usize].replicas.len() => {}
                    _ => {
                        self.blobs.insert(b.id, loc);
                    }
                }
            }
        }
    }

    pub fn get(&self, id: &Id) -> Option<(&PackInfo, &BlobLoc)> {
        self.blobs
            .get(id)
            .map(|l| (&self.packs[l.pack as usize], l))
    }

    /// Whether every replica in `set` holds the blob.
    pub fn has_on_all(&self, id: &Id, set: ReplicaSet) -> bool {
        self.blobs
            .get(id)
            .is_some_and(|l| self.packs[l.pack as usize].replicas.is_superset(set))
    }

    pub fn pack(&self, id: &Id) -> Option<&PackInfo> {
        self.pack_pos.get(id).map(|p| &self.packs[*p as usize])
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn blobs(&self) -> impl Iterator<Item = (&Id, &BlobLoc)> {
        self.blobs.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::tests::pack;

    #[test]
    fn replica_masks() {
        let mut m = MasterIndex::default();
        m.add(0, &[pack(1, 2)]);
        m.add(1, &[pack(1, 2), pack(50, 1)]);
        assert!(m.has_on_all(&Id([2; 32]), ReplicaSet::all(2)));
        assert!(!m.has_on_all(&Id([51; 32]), ReplicaSet::all(2)));
        assert!(m.has_on_all(&Id([51; 32]), ReplicaSet::single(1)));
    }
}
