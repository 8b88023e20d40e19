//! Index files: which blob lives where, in which pack.
//!
//! An index file lists packs and, for each, its size, its header (epoch and
//! salt, so one ranged read fetches a blob) and its blobs. Encoding (then
//! zstd, then sealed as a document):
//! `"CIDX" ‖ version u8 ‖ pack_count u32 ‖ packs…`, each pack
//! `id[32] ‖ size u64 ‖ epoch u32 ‖ salt[32] ‖ blob_count u32 ‖ blobs…`, each
//! blob `id[32] ‖ kind u8 ‖ codec u8 ‖ seq u32 ‖ offset u32 ‖ stored_len u32 ‖
//! raw_len u32`. All integers little-endian.

use crate::format::codec::{Codec, MAX_BLOB_BYTES};
use crate::format::crypto::{Header, ObjectKind, HEADER_LEN, TAG_LEN};
use crate::format::id::Id;
use crate::format::pack::{BlobKind, PackEntry, MAX_PACK_BLOBS, MAX_PACK_BYTES};

/// A pack as described by an index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPack {
    pub id: Id,
    pub size: u64,
    pub header: Header,
    pub blobs: Vec<PackEntry>,
}

#[derive(Debug, thiserror::Error)]
#[error("index file is malformed: {0}")]
pub struct IndexError(&'static str);

const MAGIC: &[u8; 4] = b"CIDX";
const BLOB_LEN: usize = 32 + 2 + 16;
/// Encoded size of a pack record without its blobs.
const PACK_LEN: usize = 32 + 8 + 4 + 32 + 4;

pub fn encode(packs: &[IndexPack]) -> Vec<u8> {
    let n: usize = packs
        .iter()
        .map(|p| PACK_LEN + p.blobs.len() * BLOB_LEN)
        .sum();
    let mut out = Vec::with_capacity(9 + n);
    out.extend_from_slice(MAGIC);
    out.push(1);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.size.to_le_bytes());
        out.extend_from_slice(&p.header.epoch.to_le_bytes());
        out.extend_from_slice(&p.header.salt);
        out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
        for b in &p.blobs {
            out.extend_from_slice(&b.id.0);
            out.push(b.kind as u8);
            out.push(b.codec as u8);
            for v in [b.seq, b.offset, b.stored_len, b.raw_len] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IndexError> {
        if self.0.len() < n {
            return Err(IndexError("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, IndexError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, IndexError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn id(&mut self) -> Result<Id, IndexError> {
        Ok(Id(self.take(32)?.try_into().unwrap()))
    }
}

pub fn decode(data: &[u8]) -> Result<Vec<IndexPack>, IndexError> {
    let mut r = Reader(data);
    if r.take(4)? != MAGIC || r.take(1)? != [1] {
        return Err(IndexError("bad magic or version"));
    }
    let count = r.u32()? as usize;
    // Capacities come from the bytes present, not from the counts claimed.
    let mut packs = Vec::with_capacity(count.min(r.0.len() / PACK_LEN));
    for _ in 0..count {
        let id = r.id()?;
        let size = r.u64()?;
        if size > MAX_PACK_BYTES {
            return Err(IndexError("pack size over the limit"));
        }
        let epoch = r.u32()?;
        let salt = r.take(32)?.try_into().unwrap();
        let n = r.u32()? as usize;
        if n > MAX_PACK_BLOBS {
            return Err(IndexError("blob count over the limit"));
        }
        let mut blobs = Vec::with_capacity(n.min(r.0.len() / BLOB_LEN));
        for _ in 0..n {
            let id = r.id()?;
            let kb = r.take(2)?;
            let e = PackEntry {
                id,
                kind: BlobKind::from_u8(kb[0]).ok_or(IndexError("blob kind"))?,
                codec: Codec::from_u8(kb[1]).ok_or(IndexError("codec"))?,
                seq: r.u32()?,
                offset: r.u32()?,
                stored_len: r.u32()?,
                raw_len: r.u32()?,
            };
            // Readers fetch exactly this range of the pack: it must lie
            // after the header and inside the pack.
            let end = e.offset as u64 + e.stored_len as u64;
            if (e.offset as usize) < HEADER_LEN
                || e.stored_len < TAG_LEN as u32
                || end > size
                || e.raw_len as usize > MAX_BLOB_BYTES
            {
                return Err(IndexError("blob range outside its pack"));
            }
            blobs.push(e);
        }
        packs.push(IndexPack {
            id,
            size,
            header: Header {
                kind: ObjectKind::Pack,
                epoch,
                salt,
            },
            blobs,
        });
    }
    if !r.0.is_empty() {
        return Err(IndexError("trailing bytes"));
    }
    Ok(packs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A pack with `n` made-up blobs (also used by the master index tests).
    pub(crate) fn pack(seed: u8, n: usize) -> IndexPack {
        IndexPack {
            id: Id([seed; 32]),
            size: 1000 + seed as u64,
            header: Header::new(ObjectKind::Pack, 3),
            blobs: (0..n)
                .map(|i| PackEntry {
                    id: Id([seed.wrapping_add(i as u8 + 1); 32]),
                    kind: if i % 2 == 0 {
                        BlobKind::Data
                    } else {
                        BlobKind::Tree
                    },
                    codec: Codec::Zstd,
                    seq: i as u32,
                    offset: 42 + i as u32 * 20,
                    stored_len: 20,
                    raw_len: 30,
                })
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn encode_decode(seeds in proptest::collection::vec((any::<u8>(), 0usize..5), 0..6)) {
            let packs: Vec<_> = seeds.iter().map(|(s, n)| pack(*s, *n)).collect();
            prop_assert_eq!(decode(&encode(&packs)).unwrap(), packs);
        }
    }

    #[test]
    fn truncated_is_rejected() {
        let e = encode(&[pack(1, 3)]);
        for n in 0..e.len() {
            assert!(decode(&e[..n]).is_err());
        }
    }
    #[test]
    fn hostile_counts_and_ranges_are_refused() {
        // A count of 2^32-1 packs with no bytes behind it fails fast,
        // without reserving room for them.
        let mut e = encode(&[]);
        let at = e.len() - 4;
        e[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&e).is_err());
        // A blob that reaches past its pack's listed size.
        let mut p = pack(1, 2);
        p.blobs[1].stored_len = 5000;
        assert!(decode(&encode(&[p])).is_err());
        // A blob inside the header, or shorter than its tag.
        let mut p = pack(1, 1);
        p.blobs[0].offset = 0;
        assert!(decode(&encode(&[p])).is_err());
        let mut p = pack(1, 1);
        p.blobs[0].stored_len = 3;
        assert!(decode(&encode(&[p])).is_err());
        // A pack larger than any writer makes.
        let mut p = pack(1, 1);
        p.size = MAX_PACK_BYTES + 1;
        assert!(decode(&encode(&[p])).is_err());
    }
}
