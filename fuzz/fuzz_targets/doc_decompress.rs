#![no_main]
//! Document decompression: the codec byte and zstd body of a decrypted
//! index or snapshot (`repo::open_doc`, the input sealed by the harness so
//! it authenticates), and blob decompression against a recorded length
//! (`format::codec::decompress`). Both must stay within their caps.
use std::sync::OnceLock;

use cairn::format::codec::{decompress, Codec};
use cairn::format::crypto::ObjectKind;
use cairn::format::keys::Keyring;
use libfuzzer_sys::fuzz_target;

static RING: OnceLock<Keyring> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let ring = RING.get_or_init(Keyring::generate);
        let sealed = ring.seal(ObjectKind::Index, rest);
        let _ = cairn::repo::open_doc(ring, ObjectKind::Index, "fuzz", &sealed);
    } else if rest.len() >= 4 {
        let raw_len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        if let Ok(out) = decompress(Codec::Zstd, rest[4..].to_vec(), raw_len) {
            assert_eq!(out.len(), raw_len);
        }
    }
});
