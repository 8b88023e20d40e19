#![no_main]
//! Tree blobs (`format::tree::Tree::from_bytes`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut t) = cairn::format::tree::Tree::from_bytes(data) {
        t.sort();
        let again =
            cairn::format::tree::Tree::from_bytes(&t.to_bytes()).expect("re-encoded tree decodes");
        assert_eq!(again.to_bytes(), t.to_bytes());
    }
});
