#![no_main]
//! Snapshot documents after decryption (`format::snapshot::Snapshot`, JSON).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = serde_json::from_slice::<cairn::format::snapshot::Snapshot>(data) {
        let _ = s.matches("host", &["/".to_string()]);
        let _ = serde_json::to_vec(&s).expect("snapshot serializes");
    }
});
