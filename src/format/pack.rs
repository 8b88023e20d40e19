//! Pack objects: many encrypted blobs in one stored object (pure, no I/O).
//!
//! Layout: `header (42 B) ‖ blob_0 ‖ … ‖ blob_{n-1} ‖ footer ‖ footer_len (u32 LE)`.
//! Blob `i` is segment `i` of the object (see [`crate::format::crypto`]); the footer
//! is segment `n`, marked final, and lists every blob so an index can be
//! rebuilt from the packs alone. A pack's name is the BLAKE3 hash of all its
//! bytes.

use crate::format::codec::{Codec, MAX_BLOB_BYTES};
use crate::format::crypto::{
    CryptoError, Header, Key32, ObjectKey, ObjectKind, HEADER_LEN, TAG_LEN,
};
use crate::format::id::Id;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum BlobKind {
    /// File content.
    Data = 0,
    /// Serialized directory metadata.
    Tree = 1,
}

impl BlobKind {
    pub fn from_u8(b: u8) -> Option<BlobKind> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// Where a blob sits in its pack and how to decode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub kind: BlobKind,
    pub codec: Codec,
    /// Segment number inside the pack (the AES-GCM nonce counter).
    pub seq: u32,
    pub offset: u32,
    /// Stored bytes including the authentication tag.
    pub stored_len: u32,
    /// Plaintext bytes.
    pub raw_len: u32,
}

const FOOTER_ENTRY: usize = 32 + 1 + 1 + 4 + 4;

/// Most blobs one pack may hold. Writers close a pack when it reaches this
/// many, so a reader can refuse a larger footer before reading it.
pub const MAX_PACK_BLOBS: usize = 1 << 20;

/// Largest footer (count, entries, tag) a pack may carry.
pub const MAX_FOOTER_BYTES: u64 = (4 + MAX_PACK_BLOBS * FOOTER_ENTRY + TAG_LEN) as u64;

/// Largest pack a reader accepts: the largest configurable pack size
/// (1 GiB), plus one blob of the largest chunk that can overflow it, plus
/// the footer. Anything bigger in `data/` was not written by cairn and is
/// judged from its listed size, never downloaded.
pub const MAX_PACK_BYTES: u64 = (1 << 30) + (32 << 20) + MAX_FOOTER_BYTES;

/// Accumulates sealed blobs until the pack is large enough to store.
pub struct PackBuilder {
    header: Header,
    key: ObjectKey,
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    pub id: Id,
    pub header: Header,
    pub data: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn new(epoch: u32, epoch_key: &Key32, repo_id: &[u8; 32], capacity: usize) -> Self {
        Self::with_buffer(epoch, epoch_key, repo_id, capacity, Vec::new())
    }

    /// Like [`PackBuilder::new`], writing into `buf` (cleared first): a
    /// buffer reused from an earlier pack is already mapped, so the new pack
    /// costs no page faults.
    pub fn with_buffer(
        epoch: u32,
        epoch_key: &Key32,
        repo_id: &[u8; 32],
        capacity: usize,
        mut buf: Vec<u8>,
    ) -> Self {
        let header = Header::new(ObjectKind::Pack, epoch);
        let key = ObjectKey::derive(epoch_key, repo_id, &header);
        buf.clear();
        buf.reserve(capacity + 4096);
        buf.extend_from_slice(&header.encode());
        PackBuilder {
            header,
            key,
            buf,
            entries: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether another blob of `payload_len` bytes would take the pack past
    /// `target` bytes or past [`MAX_PACK_BLOBS`] blobs (an empty pack always
    /// takes one blob).
    pub fn would_overflow(&self, payload_len: usize, target: usize) -> bool {
        !self.is_empty()
            && (self.buf.len() + payload_len > target || self.entries.len() >= MAX_PACK_BLOBS)
    }

    /// Seal `payload` (already compressed with `codec`) and append it. The
    /// payload is copied once, into the pack, and encrypted there.
    pub fn add(
        &mut self,
        id: Id,
        kind: BlobKind,
        codec: Codec,
        raw_len: u32,
        payload: &[u8],
    ) -> PackEntry {
        let seq = self.entries.len() as u32;
        let offset = self.buf.len();
        self.buf.extend_from_slice(payload);
        let tag = self
            .key
            .seal_slice(seq as u64, false, &mut self.buf[offset..]);
        self.buf.extend_from_slice(&tag);
        let entry = PackEntry {
            id,
            kind,
            codec,
            seq,
            offset: offset as u32,
            stored_len: (payload.len() + TAG_LEN) as u32,
            raw_len,
        };
        self.entries.push(entry);
        entry
    }

    /// Seal the footer and name the pack.
    pub fn finish(mut self) -> FinishedPack {
        let mut footer = Vec::with_capacity(4 + self.entries.len() * FOOTER_ENTRY + TAG_LEN);
        footer.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            footer.extend_from_slice(&e.id.0);
            footer.push(e.kind as u8);
            footer.push(e.codec as u8);
            footer.extend_from_slice(&e.raw_len.to_le_bytes());
            footer.extend_from_slice(&e.stored_len.to_le_bytes());
        }
        self.key.seal(self.entries.len() as u64, true, &mut footer);
        self.buf.extend_from_slice(&footer);
        self.buf
            .extend_from_slice(&(footer.len() as u32).to_le_bytes());
        FinishedPack {
            id: Id::of_stored(&self.buf),
            header: self.header,
            data: self.buf,
            entries: self.entries,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("pack structure is invalid: {0}")]
    Malformed(&'static str),
}

/// Parse a whole pack: authenticate its footer and return its blobs.
pub fn read_footer(
    data: &[u8],
    repo_id: &[u8; 32],
    epoch_key: impl Fn(u32) -> Option<Key32>,
) -> Result<(Header, Vec<PackEntry>), PackError> {
    read_footer_parts(data, data, data.len() as u64, repo_id, epoch_key)
}

/// How many bytes at the end of a pack [`read_footer_parts`] needs, given
/// the pack's last 4 bytes (the footer length).
pub fn tail_len(last4: &[u8]) -> Result<u64, PackError> {
    let b: [u8; 4] = last4
        .try_into()
        .map_err(|_| PackError::Malformed("too short"))?;
    let flen = u32::from_le_bytes(b) as u64;
    if flen > MAX_FOOTER_BYTES {
        return Err(PackError::Malformed("footer length over the limit"));
    }
    Ok(4 + flen)
}

/// Parse a pack's footer from its first bytes (`head`, at least the
/// header), its last bytes (`tail`, at least [`tail_len`] of them) and its
/// total size, so an index can be rebuilt without downloading whole packs.
pub fn read_footer_parts(
    head: &[u8],
    tail: &[u8],
    total_len: u64,
    repo_id: &[u8; 32],
    epoch_key: impl Fn(u32) -> Option<Key32>,
) -> Result<(Header, Vec<PackEntry>), PackError> {
    let header = Header::decode(head)?;
    if header.kind != ObjectKind::Pack {
        return Err(PackError::Malformed("not a pack"));
    }
    if total_len > MAX_PACK_BYTES {
        return Err(PackError::Malformed("pack size over the limit"));
    }
    let total = usize::try_from(total_len).map_err(|_| PackError::Malformed("too large"))?;
    if total < HEADER_LEN + 4 + TAG_LEN + 4 || tail.len() < 4 || tail.len() > total {
        return Err(PackError::Malformed("too short"));
    }
    let flen = tail_len(&tail[tail.len() - 4..])? as usize - 4;
    let fstart = total
        .checked_sub(4 + flen)
        .filter(|s| *s >= HEADER_LEN)
        .ok_or(PackError::Malformed("footer length out of range"))?;
    // Where the footer begins inside `tail`.
    let tstart = (tail.len() - 4)
        .checked_sub(flen)
        .ok_or(PackError::Malformed("footer not in the bytes read"))?;
    let ek = epoch_key(header.epoch).ok_or(CryptoError::UnknownEpoch(header.epoch))?;
    let key = ObjectKey::derive(&ek, repo_id, &header);
    let mut footer = tail[tstart..tail.len() - 4].to_vec();
    // The footer is segment n and its plaintext length fixes n, so the
    // count can be checked before trusting anything inside it.
    let n = (flen.saturating_sub(4 + TAG_LEN)) / FOOTER_ENTRY;
    key.open(n as u64, true, &mut footer)?;
    // A key holder can seal a footer too short to hold its count.
    let count_bytes = footer
        .get(..4)
        .ok_or(PackError::Malformed("footer too short"))?;
    let count = u32::from_le_bytes(count_bytes.try_into().unwrap()) as usize;
    if count != n || footer.len() != 4 + count * FOOTER_ENTRY {
        return Err(PackError::Malformed("footer entry count"));
    }
    let mut entries = Vec::with_capacity(count);
    let mut offset = HEADER_LEN;
    for (seq, e) in footer[4..].chunks_exact(FOOTER_ENTRY).enumerate() {
        let stored_len = u32::from_le_bytes(e[38..42].try_into().unwrap());
        entries.push(PackEntry {
            id: Id(e[..32].try_into().unwrap()),
            kind: BlobKind::from_u8(e[32]).ok_or(PackError::Malformed("blob kind"))?,
            codec: Codec::from_u8(e[33]).ok_or(PackError::Malformed("codec"))?,
            seq: seq as u32,
            offset: offset as u32,
            stored_len,
            raw_len: u32::from_le_bytes(e[34..38].try_into().unwrap()),
        });
        if entries[seq].raw_len as usize > MAX_BLOB_BYTES || (stored_len as usize) < TAG_LEN {
            return Err(PackError::Malformed("blob length out of range"));
        }
        offset += stored_len as usize;
    }
    if offset != fstart {
        return Err(PackError::Malformed("blob lengths do not add up"));
    }
    Ok((header, entries))
}

/// Decrypt one blob given the pack header and the blob's stored bytes.
pub fn open_blob(
    header: &Header,
    epoch_key: &Key32,
    repo_id: &[u8; 32],
    seq: u32,
    mut stored: Vec<u8>,
) -> Result<Vec<u8>, CryptoError> {
    let key = ObjectKey::derive(epoch_key, repo_id, header);
    key.open(seq as u64, false, &mut stored)?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Found by the `pack_footer` fuzz target: an authentic footer whose
    /// plaintext is shorter than its count field.
    #[test]
    fn sealed_empty_footer_is_malformed_not_a_panic() {
        let k = Key32([3; 32]);
        let repo = [7u8; 32];
        let header = Header::new(ObjectKind::Pack, 1);
        let mut pack = header.encode().to_vec();
        pack.resize(HEADER_LEN + 0x2d, 0);
        let mut footer = Vec::new();
        ObjectKey::derive(&k, &repo, &header).seal(0, true, &mut footer);
        pack.extend_from_slice(&footer);
        pack.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        let r = read_footer(&pack, &repo, |_| Some(k.clone()));
        assert!(matches!(r, Err(PackError::Malformed(_))), "{r:?}");
    }

    /// A buffer handed back from an earlier pack holds that pack's bytes;
    /// none of them may reach the next pack.
    #[test]
    fn a_reused_buffer_leaves_nothing_of_the_previous_pack() {
        let k = Key32::random();
        let repo = [4u8; 32];
        let mut a = PackBuilder::new(1, &k, &repo, 1 << 16);
        a.add(Id([1; 32]), BlobKind::Data, Codec::Raw, 5000, &[0xAA; 5000]);
        let old = a.finish().data;
        let old_len = old.len();
        let mut b = PackBuilder::with_buffer(1, &k, &repo, 1 << 16, old);
        b.add(Id([2; 32]), BlobKind::Data, Codec::Raw, 3, b"new");
        let p = b.finish();
        let mut fresh = PackBuilder::new(1, &k, &repo, 1 << 16);
        fresh.add(Id([2; 32]), BlobKind::Data, Codec::Raw, 3, b"new");
        assert_eq!(p.data.len(), fresh.finish().data.len());
        assert!(p.data.len() < old_len);
        let (h, entries) = read_footer(&p.data, &repo, |_| Some(k.clone())).unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        let stored = p.data[e.offset as usize..(e.offset + e.stored_len) as usize].to_vec();
        assert_eq!(open_blob(&h, &k, &repo, e.seq, stored).unwrap(), b"new");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn pack_round_trips(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 0..12)) {
            let k = Key32::random();
            let repo = [4u8; 32];
            let mut b = PackBuilder::new(1, &k, &repo, 1 << 16);
            for (i, blob) in blobs.iter().enumerate() {
                b.add(Id([i as u8; 32]), BlobKind::Data, Codec::Raw, blob.len() as u32, blob);
            }
            let p = b.finish();
            prop_assert_eq!(p.id, Id::of_stored(&p.data));
            let (h, entries) = read_footer(&p.data, &repo, |e| (e == 1).then(|| k.clone())).unwrap();
            prop_assert_eq!(&entries, &p.entries);
            // Reading only the header and the footer gives the same entries.
            let tail = tail_len(&p.data[p.data.len() - 4..]).unwrap() as usize;
            let (_, parts) = read_footer_parts(
                &p.data[..HEADER_LEN],
                &p.data[p.data.len() - tail..],
                p.data.len() as u64,
                &repo,
                |e| (e == 1).then(|| k.clone()),
            )
            .unwrap();
            prop_assert_eq!(&parts, &p.entries);
            for (e, blob) in entries.iter().zip(&blobs) {
                let stored = p.data[e.offset as usize..(e.offset + e.stored_len) as usize].to_vec();
                prop_assert_eq!(&open_blob(&h, &k, &repo, e.seq, stored).unwrap(), blob);
            }
        }

        #[test]
        fn tampered_pack_is_rejected(pos in any::<usize>(), bit in 0u8..8) {
            let k = Key32::random();
            let repo = [4u8; 32];
            let mut b = PackBuilder::new(1, &k, &repo, 1 << 16);
            b.add(Id([1; 32]), BlobKind::Data, Codec::Raw, 300, &[7u8; 300]);
            b.add(Id([2; 32]), BlobKind::Tree, Codec::Raw, 200, &[8u8; 200]);
            let p = b.finish();
            let mut data = p.data.clone();
            let i = pos % data.len();
            data[i] ^= 1 << bit;
            // Either the footer fails, or a blob fails to open.
            let ok = match read_footer(&data, &repo, |_| Some(k.clone())) {
                Err(_) => false,
                Ok((h, entries)) => entries.iter().all(|e| {
                    data.get(e.offset as usize..(e.offset + e.stored_len) as usize)
                        .map(|s| open_blob(&h, &k, &repo, e.seq, s.to_vec()).is_ok())
                        .unwrap_or(false)
                }),
            };
            prop_assert!(!ok);
        }
    }

    #[test]
    fn truncated_pack_is_rejected() {
        let k = Key32::random();
        let mut b = PackBuilder::new(1, &k, &[0; 32], 1024);
        b.add(Id([1; 32]), BlobKind::Data, Codec::Raw, 100, &[1; 100]);
        let p = b.finish();
        for cut in [1, 4, 20, p.data.len() - 50] {
            assert!(
                read_footer(&p.data[..p.data.len() - cut], &[0; 32], |_| Some(k.clone())).is_err()
            );
        }
    }
    #[test]
    fn oversized_claims_are_refused_before_reading() {
        // A footer length past the cap is refused from its last 4 bytes.
        assert!(tail_len(&u32::MAX.to_le_bytes()).is_err());
        let k = Key32::random();
        let mut b = PackBuilder::new(1, &k, &[0; 32], 1024);
        b.add(Id([1; 32]), BlobKind::Data, Codec::Raw, 100, &[1; 100]);
        let p = b.finish();
        let tail = tail_len(&p.data[p.data.len() - 4..]).unwrap() as usize;
        // A listed size past the largest pack is refused, whatever the bytes.
        let r = read_footer_parts(
            &p.data[..HEADER_LEN],
            &p.data[p.data.len() - tail..],
            MAX_PACK_BYTES + 1,
            &[0; 32],
            |_| Some(k.clone()),
        );
        assert!(matches!(r, Err(PackError::Malformed(_))), "{r:?}");
    }

    #[test]
    fn builder_closes_a_pack_at_its_size_or_blob_limit() {
        let k = Key32::random();
        let mut b = PackBuilder::new(1, &k, &[0; 32], 1 << 20);
        // An empty pack always takes the next blob, however large.
        assert!(!b.would_overflow(usize::MAX / 2, 10));
        b.add(Id([1; 32]), BlobKind::Data, Codec::Raw, 100, &[1; 100]);
        assert!(b.would_overflow(1 << 20, 1 << 20));
        assert!(!b.would_overflow(100, 1 << 20));
    }
}
