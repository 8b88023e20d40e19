#![no_main]
//! The public repository config (`format::config::Config`, JSON) and its
//! range checks.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = serde_json::from_slice::<cairn::format::config::Config>(data) {
        if c.validate().is_ok() {
            assert!(c.pack_size >= 1 << 20 && c.pack_size <= 1 << 30);
        }
    }
});
