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

/// Blobs loaded or added since the last compaction, at most; then they are
/// merged into the sorted table (56 MiB of loaded entries at most besides
/// it while a large index loads).
const COMPACT_AT: usize = 1 << 20;

/// Every blob of every loaded index file. Blobs live in a table sorted by
/// id, 56 bytes a blob (an id and a [`BlobLoc`]), looked up by binary
/// search. Index files being loaded ([`MasterIndex::load`]) queue their
/// blobs in a list that [`MasterIndex::compact`] merges; blobs added one
/// pack at a time afterwards ([`MasterIndex::add`]) sit in a small hash
/// table in front. Plus about 100 bytes per pack.
///
/// Where a blob is in several packs, the one listed by more replicas is
/// used (on a tie, the one seen first).
#[derive(Default)]
pub struct MasterIndex {
    pub packs: Vec<PackInfo>,
    pack_pos: HashMap<Id, u32>,
    sorted: Vec<(Id, BlobLoc)>,
    /// Loaded, not merged yet: not looked up until [`MasterIndex::compact`].
    pending: Vec<(Id, BlobLoc)>,
    recent: HashMap<Id, BlobLoc>,
}

impl MasterIndex {
    fn pack_position(&mut self, p: &IndexPack) -> u32 {
        *self.pack_pos.entry(p.id).or_insert_with(|| {
            self.packs.push(PackInfo {
                id: p.id,
                size: p.size,
                header: p.header.clone(),
                replicas: ReplicaSet::EMPTY,
            });
            (self.packs.len() - 1) as u32
        })
    }

    /// Load the packs of one index file, listed by the replicas `replicas`.
    /// Lookups see them once [`MasterIndex::compact`] ran (loading a
    /// repository's index does it at the end).
    pub fn load(&mut self, replicas: impl IntoIterator<Item = usize>, packs: &[IndexPack]) {
        let replicas: Vec<usize> = replicas.into_iter().collect();
        for p in packs {
            let pos = self.pack_position(p);
            for r in &replicas {
                self.packs[pos as usize].replicas.insert(*r);
            }
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(COMPACT_AT);
            }
            for b in &p.blobs {
                self.pending.push((b.id, loc(pos, b)));
                if self.pending.len() >= COMPACT_AT {
                    self.compact();
                    self.pending.reserve_exact(COMPACT_AT);
                }
            }
        }
    }

    /// Add the packs of one index file, listed by replica `replica`.
    pub fn add(&mut self, replica: usize, packs: &[IndexPack]) {
        for p in packs {
            let pos = self.pack_position(p);
            self.packs[pos as usize].replicas.insert(replica);
            for b in &p.blobs {
                let loc = loc(pos, b);
                match self.loc(&b.id) {
                    // Prefer the copy held by more replicas.
                    Some(old)
                        if self.packs[old.pack as usize].replicas.len()
                            >= self.packs[pos as usize].replicas.len() => {}
                    _ => {
                        self.recent.insert(b.id, loc);
                    }
                }
            }
            if self.recent.len() >= COMPACT_AT {
                self.compact();
            }
        }
    }

    /// Merge the blobs loaded or added since the last compaction into the
    /// sorted table. A loaded blob replaces a copy only if more replicas
    /// list its pack; a blob added with [`MasterIndex::add`] was judged
    /// when it was added and replaces it.
    pub fn compact(&mut self) {
        let mut loaded = std::mem::take(&mut self.pending);
        if !loaded.is_empty() {
            // Stable: among copies listed by as many replicas, the first
            // seen stays first.
            loaded.sort_by_key(|a| a.0);
            let mut w = 0;
            for r in 0..loaded.len() {
                if w > 0 && loaded[w - 1].0 == loaded[r].0 {
                    if self.count(&loaded[r].1) > self.count(&loaded[w - 1].1) {
                        loaded[w - 1] = loaded[r];
                    }
                } else {
                    loaded[w] = loaded[r];
                    w += 1;
                }
            }
            loaded.truncate(w);
            self.merge(loaded, false);
        }
        if !self.recent.is_empty() {
            let mut added: Vec<(Id, BlobLoc)> = self.recent.drain().collect();
            added.sort_unstable_by_key(|a| a.0);
            self.merge(added, true);
            self.recent.shrink_to_fit();
        }
    }

    fn count(&self, l: &BlobLoc) -> usize {
        self.packs[l.pack as usize].replicas.len()
    }

    /// Merge `added` (sorted, one entry per blob) into the table, in place
    /// from the back into room made at its end: no second copy of the
    /// table, whose size dominates. An entry for a blob already there
    /// replaces it if `replace`, or if its pack is listed by more replicas.
    fn merge(&mut self, mut added: Vec<(Id, BlobLoc)>, replace: bool) {
        let Some(&filler) = added.first() else {
            return;
        };
        let old_len = self.sorted.len();
        self.sorted.reserve_exact(added.len());
        self.sorted.resize(old_len + added.len(), filler);
        let (mut i, mut k) = (old_len, self.sorted.len());
        let mut dups = 0;
        while let Some(a) = added.pop() {
            while i > 0 && self.sorted[i - 1].0 > a.0 {
                k -= 1;
                i -= 1;
                self.sorted[k] = self.sorted[i];
            }
            k -= 1;
            if i > 0 && self.sorted[i - 1].0 == a.0 {
                i -= 1;
                dups += 1;
                let old = self.sorted[i];
                let take = replace || self.count(&a.1) > self.count(&old.1);
                self.sorted[k] = if take { a } else { old };
            } else {
                self.sorted[k] = a;
            }
        }
        // Below `i` is in place; a replaced blob left a gap to close.
        if dups > 0 {
            self.sorted.copy_within(k.., i);
            self.sorted.truncate(self.sorted.len() - dups);
        }
        self.sorted.shrink_to_fit();
    }

    fn loc(&self, id: &Id) -> Option<&BlobLoc> {
        self.recent.get(id).or_else(|| {
            self.sorted
                .binary_search_by(|e| e.0.cmp(id))
                .ok()
                .map(|i| &self.sorted[i].1)
        })
    }

    pub fn get(&self, id: &Id) -> Option<(&PackInfo, &BlobLoc)> {
        debug_assert!(self.pending.is_empty(), "compact() after load()");
        self.loc(id).map(|l| (&self.packs[l.pack as usize], l))
    }

    /// Whether every replica in `set` holds the blob.
    pub fn has_on_all(&self, id: &Id, set: ReplicaSet) -> bool {
        self.loc(id)
            .is_some_and(|l| self.packs[l.pack as usize].replicas.is_superset(set))
    }

    pub fn pack(&self, id: &Id) -> Option<&PackInfo> {
        self.pack_pos.get(id).map(|p| &self.packs[*p as usize])
    }

    pub fn blob_count(&self) -> usize {
        self.sorted.len()
            + self
                .recent
                .keys()
                .filter(|id| self.sorted.binary_search_by(|e| e.0.cmp(id)).is_err())
                .count()
    }

    /// Every blob once, in no particular order.
    pub fn blobs(&self) -> impl Iterator<Item = (&Id, &BlobLoc)> {
        self.sorted
            .iter()
            .filter(|(id, _)| !self.recent.contains_key(id))
            .map(|(id, l)| (id, l))
            .chain(self.recent.iter())
    }

    /// Bytes the blob table takes (not counting packs): for the memory
    /// figures of the benchmarks.
    pub fn blob_table_bytes(&self) -> usize {
        self.sorted.capacity() * std::mem::size_of::<(Id, BlobLoc)>()
            + self.recent.capacity() * (std::mem::size_of::<(Id, BlobLoc)>() + 1)
    }
}

fn loc(pack: u32, b: &crate::format::pack::PackEntry) -> BlobLoc {
    BlobLoc {
        pack,
        seq: b.seq,
        offset: b.offset,
        stored_len: b.stored_len,
        raw_len: b.raw_len,
        kind: b.kind,
        codec: b.codec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::tests::pack;

    use proptest::prelude::*;

    fn one_blob(pack_id: u8, blob: u8, offset: u32) -> IndexPack {
        let mut p = pack(pack_id, 1);
        p.blobs[0].id = Id([blob; 32]);
        p.blobs[0].offset = offset;
        p
    }

    proptest! {
        /// Whatever the order of adds and compactions, every blob is found
        /// once, where the last add that was not worse put it.
        #[test]
        fn lookups_match_a_plain_map(
            adds in proptest::collection::vec((0u8..3, 0u8..8, 0u8..40, any::<bool>()), 1..60)
        ) {
            let mut m = MasterIndex::default();
            // The rule, as a plain model: a pack is held by the replicas
            // that listed it; a blob stays where it was unless the new pack
            // is held by more replicas.
            let mut held: HashMap<u8, std::collections::BTreeSet<u8>> = HashMap::new();
            let mut model: HashMap<u8, u8> = HashMap::new();
            for (replica, pack_id, blob, compact) in &adds {
                m.add(*replica as usize, &[one_blob(*pack_id, *blob, u32::from(*blob) * 7 + u32::from(*pack_id))]);
                held.entry(*pack_id).or_default().insert(*replica);
                let better = model
                    .get(blob)
                    .is_none_or(|old| held[old].len() < held[pack_id].len());
                if better {
                    model.insert(*blob, *pack_id);
                }
                if *compact {
                    m.compact();
                }
            }
            let ids: std::collections::BTreeSet<u8> = adds.iter().map(|a| a.2).collect();
            prop_assert_eq!(m.blob_count(), ids.len());
            let listed: std::collections::BTreeSet<[u8; 32]> = m.blobs().map(|(id, _)| id.0).collect();
            prop_assert_eq!(listed.len(), ids.len());
            for b in &ids {
                let (p, l) = m.get(&Id([*b; 32])).unwrap();
                prop_assert_eq!(p.id, Id([model[b]; 32]));
                prop_assert_eq!(l.offset, u32::from(*b) * 7 + u32::from(model[b]));
            }
            m.compact();
            prop_assert_eq!(m.blob_count(), ids.len());
            prop_assert!(m.get(&Id([200; 32])).is_none());
        }
    }

    #[test]
    fn a_blob_costs_56_bytes_once_compacted() {
        let mut m = MasterIndex::default();
        let mut p = pack(1, 1);
        p.blobs = (0..10_000u32)
            .map(|i| {
                let mut b = p.blobs[0];
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                b.id = Id(id);
                b
            })
            .collect();
        m.add(0, &[p]);
        m.compact();
        assert_eq!(m.blob_count(), 10_000);
        assert_eq!(m.blob_table_bytes() / 10_000, 56);
    }

    #[test]
    fn loading_keeps_the_copy_more_replicas_list() {
        let mut m = MasterIndex::default();
        m.load([0], &[one_blob(1, 9, 100)]);
        m.load([0, 1], &[one_blob(2, 9, 200)]);
        m.load([0], &[one_blob(3, 7, 300)]);
        m.load([1], &[one_blob(4, 7, 400)]);
        m.compact();
        assert_eq!(m.get(&Id([9; 32])).unwrap().0.id, Id([2; 32]));
        // A tie keeps the first seen.
        assert_eq!(m.get(&Id([7; 32])).unwrap().0.id, Id([3; 32]));
        // A later load is weighed against the table.
        m.load([2], &[one_blob(5, 9, 500)]);
        m.load([0, 1, 2], &[one_blob(6, 7, 600)]);
        m.compact();
        assert_eq!(m.get(&Id([9; 32])).unwrap().0.id, Id([2; 32]));
        assert_eq!(m.get(&Id([7; 32])).unwrap().0.id, Id([6; 32]));
        assert_eq!(m.blob_count(), 2);
    }

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
