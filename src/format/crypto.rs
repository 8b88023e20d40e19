//! Sealing and opening of stored objects (pure, no I/O).
//!
//! Every encrypted object starts with a header naming its kind, the data-key
//! epoch it was written under and a random 32-byte salt. The object key is
//! HKDF-SHA256(epoch key, salt, info = "cairn object v1" ‖ repository id ‖
//! kind ‖ epoch), so no two objects share a key and the AES-GCM nonce can be a plain
//! counter of the segment inside the object. The associated data binds the
//! repository id, the kind, the segment index and whether it is the final
//! segment, so segments cannot be moved, swapped between objects or
//! repositories, or cut off at the end without detection.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hkdf::{KeyType, Salt, HKDF_SHA256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Bytes of the authentication tag appended to every segment.
pub const TAG_LEN: usize = 16;
/// Bytes of the object header.
pub const HEADER_LEN: usize = 42;
const MAGIC: &[u8; 4] = b"CRN\x01";
const VERSION: u8 = 1;

/// Fill `buf` from the system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    aws_lc_rs::rand::fill(buf).expect("the system random number generator failed");
}

/// A 256-bit secret that is wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Key32(pub [u8; 32]);

impl Key32 {
    pub fn random() -> Self {
        let mut k = Key32([0; 32]);
        fill_random(&mut k.0);
        k
    }
}

impl std::fmt::Debug for Key32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key32(<redacted>)")
    }
}

/// What an encrypted object is; part of the header and of the associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    Pack = 1,
    Index = 2,
    Snapshot = 3,
    KeySlot = 4,
    Lock = 5,
    /// Prune's per-replica marks (`markers/prune`).
    Marker = 6,
    /// Entries of the key-management audit trail (`audit/`).
    Audit = 7,
    /// A keyring generation's sealed keyring, and the generation key
    /// wrapped for one slot (`keyring/`).
    Keyring = 8,
}

impl ObjectKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => ObjectKind::Pack,
            2 => ObjectKind::Index,
            3 => ObjectKind::Snapshot,
            4 => ObjectKind::KeySlot,
            5 => ObjectKind::Lock,
            6 => ObjectKind::Marker,
            7 => ObjectKind::Audit,
            8 => ObjectKind::Keyring,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("not a cairn object (bad magic or version)")]
    BadHeader,
    #[error("object is of kind {found:?}, expected {expected:?}")]
    WrongKind {
        expected: ObjectKind,
        found: ObjectKind,
    },
    #[error("object is encrypted under key epoch {0}, which this keyring does not hold")]
    UnknownEpoch(u32),
    #[error("authentication failed: the data was modified, truncated or belongs elsewhere")]
    Authentication,
    #[error("object too short")]
    Truncated,
}

/// The parsed header of an encrypted object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: ObjectKind,
    pub epoch: u32,
    pub salt: [u8; 32],
}

impl Header {
    pub fn new(kind: ObjectKind, epoch: u32) -> Self {
        let mut salt = [0; 32];
        fill_random(&mut salt);
        Header { kind, epoch, salt }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        out[5] = self.kind as u8;
        out[6..10].copy_from_slice(&self.epoch.to_le_bytes());
        out[10..42].copy_from_slice(&self.salt);
        out
    }

    pub fn decode(data: &[u8]) -> Result<Header, CryptoError> {
        if data.len() < HEADER_LEN {
            return Err(CryptoError::Truncated);
        }
        if &data[..4] != MAGIC || data[4] != VERSION {
            return Err(CryptoError::BadHeader);
        }
        let kind = ObjectKind::from_u8(data[5]).ok_or(CryptoError::BadHeader)?;
        let epoch = u32::from_le_bytes(data[6..10].try_into().unwrap());
        let salt = data[10..42].try_into().unwrap();
        Ok(Header { kind, epoch, salt })
    }
}

struct Len32;
impl KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// The key of one object, able to seal and open its segments.
pub struct ObjectKey {
    key: LessSafeKey,
    repo_id: [u8; 32],
    kind: ObjectKind,
}

/// A 32-byte key derived from `ikm` with HKDF-SHA256 (`salt`, and `info`
/// concatenated), for keys that belong to a purpose rather than an object.
pub fn derive_key(ikm: &Key32, salt: &[u8], info: &[&[u8]]) -> Key32 {
    let mut out = Key32([0; 32]);
    Salt::new(HKDF_SHA256, salt)
        .extract(&ikm.0)
        .expand(info, Len32)
        .and_then(|o| o.fill(&mut out.0))
        .expect("HKDF output length is valid");
    out
}

impl ObjectKey {
    /// Derive the key of the object described by `header` from its epoch key.
    pub fn derive(epoch_key: &Key32, repo_id: &[u8; 32], header: &Header) -> ObjectKey {
        let mut okm = Zeroizing::new([0u8; 32]);
        // The epoch is bound too, so a header edited to name another epoch
        // cannot select a key the writer did not use.
        let epoch = header.epoch.to_le_bytes();
        let info: [&[u8]; 4] = [b"cairn object v1", repo_id, &[header.kind as u8], &epoch];
        Salt::new(HKDF_SHA256, &header.salt)
            .extract(&epoch_key.0)
            .expand(&info, Len32)
            .and_then(|o| o.fill(&mut okm[..]))
            .expect("HKDF output length is valid");
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &okm[..]).expect("key length"));
        ObjectKey {
            key,
            repo_id: *repo_id,
            kind: header.kind,
        }
    }

    fn aad(&self, index: u64, last: bool) -> [u8; 50] {
        let mut a = [0u8; 50];
        a[..8].copy_from_slice(b"cairn/v1");
        a[8..40].copy_from_slice(&self.repo_id);
        a[40] = self.kind as u8;
        a[41..49].copy_from_slice(&index.to_le_bytes());
        a[49] = last as u8;
        a
    }

    fn nonce(index: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&index.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypt segment `index` in place, appending the tag. `last` marks the
    /// final segment of the object.
    pub fn seal(&self, index: u64, last: bool, buf: &mut Vec<u8>) {
        self.key
            .seal_in_place_append_tag(Self::nonce(index), Aad::from(self.aad(index, last)), buf)
            .expect("AES-GCM seal cannot fail for in-memory buffers");
    }

    /// Encrypt segment `index` in place in `buf` and return its tag, for
    /// callers that build the object in one buffer (packs).
    pub fn seal_slice(&self, index: u64, last: bool, buf: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .key
            .seal_in_place_separate_tag(Self::nonce(index), Aad::from(self.aad(index, last)), buf)
            .expect("AES-GCM seal cannot fail for in-memory buffers");
        tag.as_ref().try_into().expect("GCM tags are 16 bytes")
    }

    /// Decrypt segment `index` in place; on success the tag is removed.
    pub fn open(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), CryptoError> {
        if buf.len() < TAG_LEN {
            return Err(CryptoError::Truncated);
        }
        let n = self
            .key
            .open_in_place(Self::nonce(index), Aad::from(self.aad(index, last)), buf)
            .map_err(|_| CryptoError::Authentication)?
            .len();
        buf.truncate(n);
        Ok(())
    }
}

/// Seal a single-segment object (index files, snapshots, key-slot payloads).
pub fn seal_document(
    epoch: u32,
    epoch_key: &Key32,
    repo_id: &[u8; 32],
    kind: ObjectKind,
    plaintext: &[u8],
) -> Vec<u8> {
    let header = Header::new(kind, epoch);
    let key = ObjectKey::derive(epoch_key, repo_id, &header);
    let mut body = Vec::with_capacity(plaintext.len() + TAG_LEN);
    body.extend_from_slice(plaintext);
    key.seal(0, true, &mut body);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&body);
    out
}

/// Open a single-segment object. `epoch_key` maps an epoch id to its key.
pub fn open_document<'k>(
    data: &[u8],
    expected: ObjectKind,
    repo_id: &[u8; 32],
    epoch_key: impl Fn(u32) -> Option<&'k Key32>,
) -> Result<Vec<u8>, CryptoError> {
    let header = Header::decode(data)?;
    if header.kind != expected {
        return Err(CryptoError::WrongKind {
            expected,
            found: header.kind,
        });
    }
    let ek = epoch_key(header.epoch).ok_or(CryptoError::UnknownEpoch(header.epoch))?;
    let key = ObjectKey::derive(ek, repo_id, &header);
    let mut body = data[HEADER_LEN..].to_vec();
    key.open(0, true, &mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key_for<'a>(k: &'a Key32) -> impl Fn(u32) -> Option<&'a Key32> + 'a {
        move |e| (e == 7).then_some(k)
    }

    proptest! {
        #[test]
        fn document_round_trips(plain in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let k = Key32::random();
            let repo = [9u8; 32];
            let sealed = seal_document(7, &k, &repo, ObjectKind::Snapshot, &plain);
            let opened = open_document(&sealed, ObjectKind::Snapshot, &repo, key_for(&k)).unwrap();
            prop_assert_eq!(opened, plain);
        }

        #[test]
        fn any_flipped_bit_is_rejected(plain in proptest::collection::vec(any::<u8>(), 1..512), pos in any::<usize>(), bit in 0u8..8) {
            let k = Key32::random();
            let repo = [1u8; 32];
            let mut sealed = seal_document(7, &k, &repo, ObjectKind::Index, &plain);
            let p = pos % sealed.len();
            sealed[p] ^= 1 << bit;
            prop_assert!(open_document(&sealed, ObjectKind::Index, &repo, key_for(&k)).is_err());
        }

        #[test]
        fn truncation_is_rejected(plain in proptest::collection::vec(any::<u8>(), 1..512), cut in any::<usize>()) {
            let k = Key32::random();
            let repo = [1u8; 32];
            let sealed = seal_document(7, &k, &repo, ObjectKind::Index, &plain);
            let n = cut % sealed.len();
            prop_assert!(open_document(&sealed[..n], ObjectKind::Index, &repo, key_for(&k)).is_err());
        }
    }

    #[test]
    fn context_is_bound() {
        let k = Key32::random();
        let sealed = seal_document(7, &k, &[1; 32], ObjectKind::Index, b"hello");
        // Another repository, another kind, a missing epoch: all refused.
        assert_eq!(
            open_document(&sealed, ObjectKind::Index, &[2; 32], key_for(&k)),
            Err(CryptoError::Authentication)
        );
        assert!(matches!(
            open_document(&sealed, ObjectKind::Snapshot, &[1; 32], key_for(&k)),
            Err(CryptoError::WrongKind { .. })
        ));
        assert_eq!(
            open_document(&sealed, ObjectKind::Index, &[1; 32], |_| None),
            Err(CryptoError::UnknownEpoch(7))
        );
        // Segment position and the final flag are bound too.
        let header = Header::new(ObjectKind::Pack, 7);
        let ok = ObjectKey::derive(&k, &[1; 32], &header);
        let mut seg = b"blob".to_vec();
        ok.seal(3, false, &mut seg);
        let mut moved = seg.clone();
        assert!(ok.open(4, false, &mut moved).is_err());
        let mut as_last = seg.clone();
        assert!(ok.open(3, true, &mut as_last).is_err());
        ok.open(3, false, &mut seg).unwrap();
        assert_eq!(seg, b"blob");
    }
}
