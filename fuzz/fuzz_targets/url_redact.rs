#![no_main]
//! Backend URL parsing (`cairn_backends` net_url, for sftp/ftp/ftps) and
//! redaction, both the backend's and the engine's (`config::redact`). A
//! password the parser accepted never shows in either redacted form.
//!
//! The check is differential: the same URL with every letter and digit of
//! the password changed must redact to the same text, as long as it parses
//! to the same user, host, port and path. (Looking for the password in the
//! output instead gave false alarms whenever the password also appeared
//! legitimately, e.g. as the host and port.)
use cairn::backends::fuzzing::{parse_url, url_percent_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let _ = url_percent_decode(url);
    let engine = cairn::config::redact(url);
    let Some(parsed) = parse_url(url) else {
        return;
    };
    if parsed.password.is_none() {
        return;
    }
    // Where the raw password sits: after the first ':' of the user info,
    // which runs to the last '@' of the authority.
    let Some((_, rest)) = url.split_once("://") else {
        return;
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return;
    };
    let Some(colon) = userinfo.find(':') else {
        return;
    };
    let start = url.len() - rest.len() + colon + 1;
    let end = url.len() - rest.len() + userinfo.len();
    let other: String = url[start..end]
        .chars()
        .map(|c| match c {
            'Q' => 'R',
            c if c.is_ascii_alphanumeric() => 'Q',
            c => c,
        })
        .collect();
    let variant = format!("{}{other}{}", &url[..start], &url[end..]);
    let Some(v) = parse_url(&variant) else {
        return;
    };
    if v.public != parsed.public {
        return;
    }
    assert_eq!(
        parsed.redacted, v.redacted,
        "backend redaction shows the password: {url:?}"
    );
    assert_eq!(
        engine,
        cairn::config::redact(&variant),
        "engine redaction shows the password: {url:?}"
    );
});
