//! The in-memory master index: the index files of every replica merged,
//! remembering per pack which replicas list it, so the backup can
//! deduplicate only against blobs that every target replica already holds
//! and reads can fall back to another replica that holds the pack.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::format::codec::{Codec, MAX_BLOB_BYTES};
use crate::format::crypto::Header;
use crate::format::id::Id;
use crate::format::index::IndexPack;
use crate::format::pack::{BlobKind, PackEntry};
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

/// Location of a blob, compact (20 bytes): the pack is an index into
/// `packs`, and the blob's kind and codec share a word with its plaintext
/// length.
#[derive(Clone, Copy, Debug)]
pub struct BlobLoc {
    pub pack: u32,
    pub seq: u32,
    pub offset: u32,
    pub stored_len: u32,
    /// The plaintext length in the low [`RAW_BITS`] bits, the kind in the
    /// next [`KIND_BITS`], the codec in the rest.
    raw_kind_codec: u32,
}

/// Bits of a blob's plaintext length. Every way into the index refuses a
/// blob over [`MAX_BLOB_BYTES`] (index files and pack footers when they are
/// decoded, the chunker when a blob is written), so 25 bits hold every
/// length; [`BlobLoc::new`] asserts it rather than truncate one.
const RAW_BITS: u32 = 25;
const KIND_BITS: u32 = 4;
const CODEC_BITS: u32 = 32 - RAW_BITS - KIND_BITS;
const _: () = assert!(MAX_BLOB_BYTES < 1 << RAW_BITS);

impl BlobLoc {
    /// Where blob `b` of the pack at position `pack` is.
    pub fn new(pack: u32, b: &PackEntry) -> BlobLoc {
        assert!(
            b.raw_len as usize <= MAX_BLOB_BYTES,
            "blob lengths are bounded when index files and packs are decoded"
        );
        let (kind, codec) = (b.kind as u32, b.codec as u32);
        assert!(kind < 1 << KIND_BITS && codec < 1 << CODEC_BITS);
        BlobLoc {
            pack,
            seq: b.seq,
            offset: b.offset,
            stored_len: b.stored_len,
            raw_kind_codec: b.raw_len | kind << RAW_BITS | codec << (RAW_BITS + KIND_BITS),
        }
    }

    /// Plaintext bytes.
    pub fn raw_len(&self) -> u32 {
        self.raw_kind_codec & ((1 << RAW_BITS) - 1)
    }

    pub fn kind(&self) -> BlobKind {
        let k = (self.raw_kind_codec >> RAW_BITS) & ((1 << KIND_BITS) - 1);
        BlobKind::from_u8(k as u8).expect("stored from a BlobKind")
    }

    pub fn codec(&self) -> Codec {
        Codec::from_u8((self.raw_kind_codec >> (RAW_BITS + KIND_BITS)) as u8)
            .expect("stored from a Codec")
    }
}

/// Blobs loaded or added since the last compaction, at most; then they are
/// merged into the sorted table (13 MiB of loaded entries at most besides
/// it while a large index loads: every compaction moves the whole table,
/// so a smaller queue costs load time).
const COMPACT_AT: usize = 1 << 18;

/// Every blob of every loaded index file. Blobs live in a table sorted by
/// id, 52 bytes a blob (an id and a [`BlobLoc`]), looked up by binary
/// search. Index files being loaded ([`MasterIndex::load`]) queue their
/// blobs in a list that [`MasterIndex::compact`] merges; blobs added one
/// pack at a time afterwards ([`MasterIndex::add`]) sit in a small hash
/// table in front. Packs are kept in the order first seen (a [`BlobLoc`]
/// names its pack by that position), about 95 bytes each: the
/// [`PackInfo`] and a hash table of positions that finds one by id.
///
/// Where a blob is in several packs, the one listed by more replicas is
/// used (on a tie, the one seen first).
pub struct MasterIndex {
    pub packs: Vec<PackInfo>,
    /// Positions in `packs`, hashed by the pack's id, which is read from
    /// `packs`: 5 to 8 bytes a pack instead of a second copy of every id.
    pack_pos: HashTable<u32>,
    hasher: RandomState,
    sorted: Vec<(Id, BlobLoc)>,
    /// Loaded, not merged yet: not looked up until [`MasterIndex::compact`].
    pending: Vec<(Id, BlobLoc)>,
    recent: HashMap<Id, BlobLoc>,
    compact_at: usize,
}

impl Default for MasterIndex {
    fn default() -> Self {
        MasterIndex {
            packs: Vec::new(),
            pack_pos: HashTable::new(),
            hasher: RandomState::new(),
            sorted: Vec::new(),
            pending: Vec::new(),
            recent: HashMap::new(),
            compact_at: COMPACT_AT,
        }
    }
}

impl MasterIndex {
    fn pack_position(&mut self, p: &IndexPack) -> u32 {
        let hash = self.hasher.hash_one(p.id);
        let packs = &self.packs;
        if let Some(&pos) = self.pack_pos.find(hash, |&q| packs[q as usize].id == p.id) {
            return pos;
        }
        let pos = u32::try_from(self.packs.len()).expect("fewer than 2^32 packs");
        self.packs.push(PackInfo {
            id: p.id,
            size: p.size,
            header: p.header.clone(),
            replicas: ReplicaSet::EMPTY,
        });
        let (packs, hasher) = (&self.packs, &self.hasher);
        self.pack_pos
            .insert_unique(hash, pos, |&q| hasher.hash_one(packs[q as usize].id));
        pos
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
                self.pending.reserve_exact(self.compact_at);
            }
            for b in &p.blobs {
                self.pending.push((b.id, BlobLoc::new(pos, b)));
                if self.pending.len() >= self.compact_at {
                    self.compact();
                    self.pending.reserve_exact(self.compact_at);
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
                let loc = BlobLoc::new(pos, b);
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
            if self.recent.len() >= self.compact_at {
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
        let hash = self.hasher.hash_one(id);
        self.pack_pos
            .find(hash, |&q| self.packs[q as usize].id == *id)
            .map(|&q| &self.packs[q as usize])
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

    /// Bytes the pack table takes: the [`PackInfo`]s and the positions
    /// that find them by id.
    pub fn pack_table_bytes(&self) -> usize {
        self.packs.capacity() * std::mem::size_of::<PackInfo>() + self.pack_pos.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::tests::pack;

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    /// Pack `pack_id` holding blob `blob` at `offset`, its kind, codec and
    /// length varied by `blob` so the packed word is exercised.
    fn one_blob(pack_id: u8, blob: u8, offset: u32) -> IndexPack {
        let mut p = pack(pack_id, 1);
        let b = &mut p.blobs[0];
        b.id = Id([blob; 32]);
        b.offset = offset;
        (b.kind, b.codec, b.raw_len) = expected_blob(blob);
        p
    }

    fn expected_blob(blob: u8) -> (BlobKind, Codec, u32) {
        let kind = if blob.is_multiple_of(2) {
            BlobKind::Data
        } else {
            BlobKind::Tree
        };
        let codec = if blob.is_multiple_of(3) {
            Codec::Raw
        } else {
            Codec::Zstd
        };
        let raw_len = if blob.is_multiple_of(5) {
            MAX_BLOB_BYTES as u32
        } else {
            u32::from(blob)
        };
        (kind, codec, raw_len)
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
            let mut held: HashMap<u8, BTreeSet<u8>> = HashMap::new();
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
            let ids: BTreeSet<u8> = adds.iter().map(|a| a.2).collect();
            prop_assert_eq!(m.blob_count(), ids.len());
            let listed: BTreeSet<[u8; 32]> = m.blobs().map(|(id, _)| id.0).collect();
            prop_assert_eq!(listed.len(), ids.len());
            for b in &ids {
                let (p, l) = m.get(&Id([*b; 32])).unwrap();
                prop_assert_eq!(p.id, Id([model[b]; 32]));
                prop_assert_eq!(l.offset, u32::from(*b) * 7 + u32::from(model[b]));
                prop_assert_eq!((l.kind(), l.codec(), l.raw_len()), expected_blob(*b));
            }
            m.compact();
            prop_assert_eq!(m.blob_count(), ids.len());
            prop_assert!(m.get(&Id([200; 32])).is_none());
        }

        /// Loading index files, with the queue merged every `every` blobs:
        /// every blob is where a plain model puts it, and every pack is
        /// found by id with the replicas that listed it.
        #[test]
        fn loading_matches_a_plain_model(
            files in proptest::collection::vec(
                (1u8..8, proptest::collection::vec((0u8..12, 0u8..40), 1..4)),
                1..40,
            ),
            every in 1usize..6,
        ) {
            let mut m = MasterIndex { compact_at: every, ..Default::default() };
            // The rule, as a plain model: a pack is held by the replicas
            // that listed it so far. Queued blobs are weighed when the
            // queue is merged, in the order loaded: a blob moves only to a
            // pack held by more replicas than the one it is in.
            let mut held: HashMap<u8, BTreeSet<u8>> = HashMap::new();
            let mut model: HashMap<u8, u8> = HashMap::new();
            let mut queue: Vec<(u8, u8)> = Vec::new();
            let merge = |queue: &mut Vec<(u8, u8)>,
                         model: &mut HashMap<u8, u8>,
                         held: &HashMap<u8, BTreeSet<u8>>| {
                for (pack_id, blob) in queue.drain(..) {
                    if model.get(&blob).is_none_or(|old| held[old].len() < held[&pack_id].len()) {
                        model.insert(blob, pack_id);
                    }
                }
            };
            for (mask, packs) in &files {
                let replicas: Vec<usize> = (0..3).filter(|r| mask & (1 << r) != 0).collect();
                let file: Vec<IndexPack> = packs
                    .iter()
                    .map(|(p, b)| one_blob(*p, *b, u32::from(*b) * 7 + u32::from(*p)))
                    .collect();
                m.load(replicas.iter().copied(), &file);
                for (p, b) in packs {
                    held.entry(*p).or_default().extend(replicas.iter().map(|r| *r as u8));
                    queue.push((*p, *b));
                    if queue.len() >= every {
                        merge(&mut queue, &mut model, &held);
                    }
                }
            }
            m.compact();
            merge(&mut queue, &mut model, &held);
            prop_assert_eq!(m.blob_count(), model.len());
            let listed: BTreeSet<[u8; 32]> = m.blobs().map(|(id, _)| id.0).collect();
            prop_assert_eq!(listed.len(), model.len());
            for (b, p) in &model {
                let (info, l) = m.get(&Id([*b; 32])).unwrap();
                prop_assert_eq!(info.id, Id([*p; 32]));
                prop_assert_eq!(l.offset, u32::from(*b) * 7 + u32::from(*p));
                prop_assert_eq!((l.kind(), l.codec(), l.raw_len()), expected_blob(*b));
            }
            prop_assert_eq!(m.packs.len(), held.len());
            for (p, replicas) in &held {
                let info = m.pack(&Id([*p; 32])).unwrap();
                let want: Vec<usize> = replicas.iter().map(|r| *r as usize).collect();
                prop_assert_eq!(info.replicas.iter().collect::<Vec<_>>(), want);
            }
            prop_assert!(m.pack(&Id([200; 32])).is_none());
            prop_assert!(m.get(&Id([200; 32])).is_none());
        }
    }

    #[test]
    fn a_blob_costs_52_bytes_once_compacted() {
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
        assert_eq!(m.blob_table_bytes() / 10_000, 52);
    }

    #[test]
    fn a_pack_costs_94_bytes_at_most() {
        let mut m = MasterIndex::default();
        let n = 14_000u32;
        let packs: Vec<IndexPack> = (0..n)
            .map(|i| {
                let mut p = pack(1, 0);
                p.id.0[..4].copy_from_slice(&i.to_be_bytes());
                p
            })
            .collect();
        m.load([0], &packs);
        m.compact();
        m.packs.shrink_to_fit();
        assert_eq!(m.packs.len(), n as usize);
        assert!(
            m.pack_table_bytes() / n as usize <= 94,
            "{}",
            m.pack_table_bytes()
        );
    }

    #[test]
    fn a_location_keeps_every_kind_codec_and_length() {
        assert_eq!(std::mem::size_of::<BlobLoc>(), 20);
        let kinds = (0..=u8::MAX).filter_map(BlobKind::from_u8);
        for kind in kinds {
            for codec in (0..=u8::MAX).filter_map(Codec::from_u8) {
                for raw_len in [0, 1, 4096, MAX_BLOB_BYTES as u32 - 1, MAX_BLOB_BYTES as u32] {
                    let mut p = pack(1, 1);
                    p.blobs[0] = PackEntry {
                        kind,
                        codec,
                        raw_len,
                        seq: u32::MAX,
                        offset: u32::MAX - 1,
                        stored_len: u32::MAX - 2,
                        ..p.blobs[0]
                    };
                    let l = BlobLoc::new(u32::MAX - 3, &p.blobs[0]);
                    assert_eq!((l.kind(), l.codec(), l.raw_len()), (kind, codec, raw_len));
                    assert_eq!(
                        (l.pack, l.seq, l.offset, l.stored_len),
                        (u32::MAX - 3, u32::MAX, u32::MAX - 1, u32::MAX - 2)
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "blob lengths are bounded")]
    fn a_length_over_the_blob_limit_is_refused() {
        let mut p = pack(1, 1);
        p.blobs[0].raw_len = MAX_BLOB_BYTES as u32 + 1;
        BlobLoc::new(0, &p.blobs[0]);
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
