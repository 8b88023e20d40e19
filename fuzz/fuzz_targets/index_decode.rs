#![no_main]
//! Index files after decryption and decompression (`format::index::decode`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packs) = cairn::format::index::decode(data) {
        // What decodes re-encodes to the same bytes (nothing is dropped or invented).
        assert_eq!(cairn::format::index::encode(&packs), data);
    }
});
