#![no_main]
//! FTP `LIST` (POSIX and DOS) and `MLSD` line parsing.
use cairn::backends::fuzzing::ftp_list_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        for mlsd in [false, true] {
            if let Some((name, _, _)) = ftp_list_line(line, mlsd) {
                assert!(!name.is_empty() && name != "." && name != ".." && !name.contains('/'));
            }
        }
    }
});
