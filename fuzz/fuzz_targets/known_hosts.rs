#![no_main]
//! OpenSSH known_hosts matching (patterns, negation, hashed entries,
//! `@revoked`) for the SFTP backend.
use cairn::backends::fuzzing::known_hosts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // host ‖ 0 ‖ known_hosts text
    let Some(i) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(host), Ok(text)) = (
        std::str::from_utf8(&data[..i]),
        std::str::from_utf8(&data[i + 1..]),
    ) else {
        return;
    };
    let port = if host.len() % 2 == 0 { 22 } else { 2222 };
    let _ = known_hosts(text, host, port);
});
