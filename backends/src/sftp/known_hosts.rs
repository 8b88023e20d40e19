//! Server host key verification: an OpenSSH `known_hosts` file or a pinned
//! fingerprint.
//!
//! russh ships a known_hosts reader, but it splits lines on single spaces,
//! does not understand wildcards, negation or the `@revoked` marker, and
//! fails the whole check on one unparsable matching line. This reader follows
//! sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT" for the parts a client needs:
//! comma-separated patterns with `*`/`?` and `!`, hashed `|1|salt|hash`
//! entries, `[host]:port` for non-standard ports, `@revoked` (refuses the key)
//! and `@cert-authority` (ignored: we pin keys, not CAs).
//!
//! Every outcome other than "this exact key is listed for this host" is a
//! refusal; nothing is ever learned or written back.

use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};
use sha1::Sha1;

use crate::{BackendError, ErrorKind, Result};

/// How the server's host key is checked.
#[derive(Clone, Debug)]
pub(crate) enum HostKeyPolicy {
    /// The key's SHA-256 fingerprint must be this (`SHA256:base64`).
    Fingerprint(String),
    /// The key must be listed for the host in this known_hosts file.
    KnownHosts(PathBuf),
}

impl HostKeyPolicy {
    /// Accept `key` presented by `host:port`, or say why not.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Result<()> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match self {
            HostKeyPolicy::Fingerprint(want) => {
                if normalize_fingerprint(want) == normalize_fingerprint(&fingerprint) {
                    Ok(())
                } else {
                    Err(refused(format!(
                        "host key for {} does not match host_key_fingerprint: server presented {} {fingerprint}, expected {want}",
                        host_label(host, port),
                        key.algorithm()
                    )))
                }
            }
            HostKeyPolicy::KnownHosts(path) => check_file(path, host, port, key, &fingerprint),
        }
    }
}

fn refused(message: String) -> BackendError {
    BackendError::new(ErrorKind::PermissionDenied, message)
}

/// `SHA256:abc=` and `SHA256:abc` are the same fingerprint (OpenSSH prints
/// it without padding).
fn normalize_fingerprint(fp: &str) -> String {
    let fp = fp.trim().trim_end_matches('=');
    match fp.split_once(':') {
        Some((alg, rest)) => format!("{}:{rest}", alg.to_ascii_uppercase()),
        None => format!("SHA256:{fp}"),
    }
}

/// The name known_hosts uses for this endpoint.
pub(crate) fn host_label(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn check_file(path: &Path, host: &str, port: u16, key: &PublicKey, fp: &str) -> Result<()> {
    let label = host_label(host, port);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(BackendError::from_io(
                format!("reading known_hosts file {}", path.display()),
                e,
            ))
        }
    };
    match lookup(&text, &label, key) {
        Verdict::Known => Ok(()),
        Verdict::Revoked(line) => Err(refused(format!(
            "host key for {label} is marked @revoked in {} line {line} ({} {fp})",
            path.display(),
            key.algorithm()
        ))),
        Verdict::Changed(lines) => Err(refused(format!(
            "host key for {label} CHANGED: the server presented {} {fp}, which is not the key \
             recorded in {} (line {}). This may be an attack, or the server was reinstalled; \
             check the new key out of band before updating known_hosts",
            key.algorithm(),
            path.display(),
            lines
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        Verdict::Unknown => Err(refused(format!(
            "host key for {label} not in known_hosts {} (server presented {} {fp}); add it with \
             `ssh-keyscan -p {port} {host} >> {}` after checking the fingerprint, or set \
             host_key_fingerprint",
            path.display(),
            key.algorithm(),
            path.display()
        ))),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Known,
    /// The line of the `@revoked` entry.
    Revoked(usize),
    /// Lines listing other keys for this host.
    Changed(Vec<usize>),
    Unknown,
}

pub(crate) fn lookup(text: &str, label: &str, key: &PublicKey) -> Verdict {
    let mut known = false;
    let mut others = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(mut first) = fields.next() else {
            continue;
        };
        let mut marker = None;
        if first.starts_with('@') {
            marker = Some(first);
            let Some(next) = fields.next() else { continue };
            first = next;
        }
        let (Some(_key_type), Some(blob)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !hosts_match(first, label) {
            continue;
        }
        // An unparsable key (unknown algorithm) cannot be the presented one.
        let listed = russh::keys::parse_public_key_base64(blob).ok();
        let same = listed
            .as_ref()
            .is_some_and(|k| k.key_data() == key.key_data());
        match marker {
            Some("@revoked") if same => return Verdict::Revoked(lineno),
            Some(_) => {}
            None if same => known = true,
            None => others.push(lineno),
        }
    }
    if known {
        Verdict::Known
    } else if !others.is_empty() {
        Verdict::Changed(others)
    } else {
        Verdict::Unknown
    }
}

/// Whether the comma-separated pattern list matches `label`: some positive
/// pattern matches and no negated one does.
fn hosts_match(patterns: &str, label: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_match(hashed, label);
    }
    let mut matched = false;
    for pat in patterns.split(',') {
        if let Some(neg) = pat.strip_prefix('!') {
            if wildcard_match(neg, label) {
                return false;
            }
        } else if wildcard_match(pat, label) {
            matched = true;
        }
    }
    matched
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, label))`.
fn hashed_match(rest: &str, label: &str) -> bool {
    let Some((salt, hash)) = rest.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(label.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// Glob with `*` and `?`, case-insensitive like OpenSSH host names.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    // Iterative matcher with backtracking to the last '*'.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAICH11tpHQCb3bTBTsDrYqSAijmUnt5STMgoRhtjOVxbi";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPFXw8N3diXI3A2rHVBBrPxmp8/zFDW23G0LmsYeT+Ue";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    #[test]
    fn plain_and_bracketed_entries() {
        let text = format!(
            "# comment\n\nexample.org ssh-ed25519 {KEY_A}\n[127.0.0.1]:2222\tssh-ed25519  {KEY_A} c\n"
        );
        assert_eq!(lookup(&text, "example.org", &key(KEY_A)), Verdict::Known);
        assert_eq!(
            lookup(&text, "[127.0.0.1]:2222", &key(KEY_A)),
            Verdict::Known
        );
        assert_eq!(lookup(&text, "127.0.0.1", &key(KEY_A)), Verdict::Unknown);
        assert_eq!(
            lookup(&text, "example.org", &key(KEY_B)),
            Verdict::Changed(vec![3])
        );
    }

    #[test]
    fn patterns_negation_and_revoked() {
        let text = format!(
            "*.example.org,!bad.example.org ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n\
             @cert-authority * ssh-ed25519 {KEY_A}\n"
        );
        assert_eq!(lookup(&text, "a.example.org", &key(KEY_A)), Verdict::Known);
        assert_eq!(
            lookup(&text, "bad.example.org", &key(KEY_A)),
            Verdict::Unknown
        );
        assert_eq!(
            lookup(&text, "a.example.org", &key(KEY_B)),
            Verdict::Revoked(2)
        );
    }

    #[test]
    fn hashed_entry() {
        // `ssh-keygen -H` form of "[127.0.0.1]:2222", salt = 20 zero bytes.
        let salt = [0u8; 20];
        let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt)
            .unwrap()
            .chain_update(b"[127.0.0.1]:2222")
            .finalize()
            .into_bytes();
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}\n",
            BASE64.encode(&salt),
            BASE64.encode(&mac)
        );
        assert_eq!(
            lookup(&line, "[127.0.0.1]:2222", &key(KEY_A)),
            Verdict::Known
        );
        assert_eq!(
            lookup(&line, "[127.0.0.1]:2223", &key(KEY_A)),
            Verdict::Unknown
        );
    }

    #[test]
    fn fingerprint_policy() {
        let k = key(KEY_A);
        let fp = k.fingerprint(HashAlg::Sha256).to_string();
        let ok = HostKeyPolicy::Fingerprint(format!("{fp}="));
        ok.check("h", 22, &k).unwrap();
        let err = HostKeyPolicy::Fingerprint(fp)
            .check("h", 22, &key(KEY_B))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "x"));
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(wildcard_match("1?.0.0.1", "10.0.0.1"));
        assert!(!wildcard_match("a*c", "abd"));
    }
}
