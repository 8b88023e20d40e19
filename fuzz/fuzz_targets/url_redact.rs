#![no_main]
//! Backend URL parsing (`cairn_backends` net_url, for sftp/ftp/ftps) and
//! redaction, both the backend's and the engine's (`config::redact`). A
//! password the parser accepted never appears in either redacted form.
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
    let Some(pass) = parsed.password else {
        return;
    };
    // The raw (still %-encoded) password text, as it appears in the URL.
    let rest = url.split_once("://").map(|r| r.1).unwrap_or("");
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some((userinfo, after)) = authority.rsplit_once('@') else {
        return;
    };
    let raw = userinfo.split_once(':').map(|p| p.1).unwrap_or("");
    // Only a password that cannot show up legitimately elsewhere is checked.
    let elsewhere = |p: &str| {
        p.len() < 3
            || after.contains(p)
            || rest[authority.len()..].contains(p)
            // The path is shown decoded: the password may be written there.
            || url_percent_decode(&rest[authority.len()..]).is_some_and(|d| d.contains(p))
            // The scheme is shown lowercased.
            || url[..url.len() - rest.len()].to_ascii_lowercase().contains(p)
            || userinfo.split(':').next().unwrap_or("").contains(p)
            // The user name is shown decoded: the password may be part of it.
            || url_percent_decode(userinfo.split(':').next().unwrap_or(""))
                .is_some_and(|u| u.contains(p))
            // The mask itself, or text that joins it (`u` + `:***`).
            || p.contains('*')
            || format!("@{after}").contains(p)
            || format!("{}:", userinfo.split(':').next().unwrap_or("")).contains(p)
            || url_percent_decode(userinfo.split(':').next().unwrap_or(""))
                .is_some_and(|u| format!("{u}:").contains(p))
    };
    if !elsewhere(&pass) {
        assert!(
            !parsed.redacted.contains(&pass),
            "backend redaction shows the password: {url:?}"
        );
        assert!(
            !engine.contains(&pass),
            "engine redaction shows the password: {url:?}"
        );
    }
    if !elsewhere(raw) {
        assert!(
            !engine.contains(raw),
            "engine redaction shows the password: {url:?}"
        );
    }
});
