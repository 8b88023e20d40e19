#![no_main]
//! The AWS profile INI files and `credential_process` output.
use cairn::backends::fuzzing::{aws_ini, aws_process_output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aws_process_output(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for (_, values) in aws_ini(text) {
            assert!(values.keys().all(|k| *k == k.to_ascii_lowercase()));
        }
    }
});
