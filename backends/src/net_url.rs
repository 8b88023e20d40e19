//! URL parsing and small helpers shared by the SFTP and FTP backends.
//!
//! Both take `scheme://[user[:password]@]host[:port]/path` (their options
//! are typed structs, see [`crate::options`]). A password in the URL is accepted (people
//! paste them) but never shown: [`UrlParts::redacted`] is what `Display`
//! prints, and a message about a URL that does not parse shows it through
//! [`crate::redact_url`].

use std::path::PathBuf;

use crate::{BackendError, ErrorKind, Result};

/// The pieces of a backend URL, percent-decoded.
#[derive(Clone)]
pub(crate) struct UrlParts {
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Without the brackets of an IPv6 literal.
    pub host: String,
    pub port: Option<u16>,
    /// Everything after the authority, starting with `/` (or empty).
    pub path: String,
}

fn invalid(url_for_msg: &str, why: &str) -> BackendError {
    let sep = if url_for_msg.is_empty() { "" } else { " " };
    BackendError::new(
        ErrorKind::Other,
        format!("invalid URL{sep}{url_for_msg}: {why}"),
    )
}

impl UrlParts {
    /// Parse `url`, which must use one of `schemes`.
    pub fn parse(url: &str, schemes: &[&str]) -> Result<UrlParts> {
        // Error messages must not repeat a password, so they name only the
        // scheme and host part once those are known.
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("", "expected scheme://host/path"))?;
        let scheme = scheme.to_ascii_lowercase();
        if !schemes.contains(&scheme.as_str()) {
            return Err(invalid(
                &format!("{scheme}://…"),
                &format!("scheme must be one of {}", schemes.join(", ")),
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // Where the user info does not end before the first '/' (a raw '/',
        // '?' or '#' in the password, or an '@' in the path after a port),
        // the URL means two things; parsing it one way could show a piece
        // of the password as a host or port in a message.
        if let Some((userinfo, _)) = crate::redact::split_userinfo(rest) {
            if userinfo.len() > authority.len() {
                return Err(invalid(
                    &crate::redact_url(url),
                    "the user info and the path cannot be told apart: write '/', '?', '#' and '@' \
                     in a password as %2F, %3F, %23 and %40, and '@' in a path as %40",
                ));
            }
        }
        if path.contains(['?', '#']) {
            return Err(invalid(
                &format!("{scheme}://…"),
                "query strings and fragments are not supported; put options in the config",
            ));
        }
        // The password may itself contain '@' when not percent-encoded: the
        // last '@' ends the user info.
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        // The redactor must see the same user info as this parser, or a
        // message could show part of a password (a raw '#' or '[' before the
        // last '@' is where the two readings part).
        if let Some(ui) = userinfo {
            let redactor = crate::redact::split_userinfo(rest).map(|(u, _)| u);
            if redactor != Some(ui) || ui.contains(['[', ']']) {
                // Not even the redacted URL: the redactor misreads it.
                return Err(invalid(
                    &format!("{scheme}://…"),
                    "the user info is ambiguous: write '[', ']', '#', '?', '/' and '@' in a user \
                     name or password as %5B, %5D, %23, %3F, %2F and %40",
                ));
            }
        }
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(percent_decode(u)?), Some(percent_decode(p)?)),
                None => (Some(percent_decode(ui)?), None),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid(&format!("{scheme}://…"), "unclosed '[' in host"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| {
                    invalid(&format!("{scheme}://[{h}]…"), "expected ':' after ']'")
                })?),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(invalid(&format!("{scheme}://…"), "no host"));
        }
        // A host name, an IPv4 address or (in brackets) an IPv6 address
        // with an optional zone: anything else is a mistyped URL, and
        // would only reach the resolver.
        let host_ok = if hostport.starts_with('[') {
            host.chars().all(|c| {
                c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '%') || c.is_ascii_alphanumeric()
            })
        } else {
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        };
        if !host_ok {
            return Err(invalid(
                &format!("{scheme}://…"),
                "the host is not a host name or an IP address",
            ));
        }
        let port =
            match port {
                None | Some("") => None,
                Some(p) => Some(p.parse::<u16>().map_err(|_| {
                    invalid(&format!("{scheme}://{host}:{p}"), "port is not a number")
                })?),
            };
        let path = percent_decode(path)?;
        // FTP is a line protocol: a CR or LF (or `%0d%0a`) in a name would
        // end a command and start another.
        for (what, value) in [
            ("the user name", user.as_deref()),
            ("the password", password.as_deref()),
            ("the path", Some(path.as_str())),
        ] {
            if value.is_some_and(has_control) {
                return Err(invalid(
                    &format!("{scheme}://{host}"),
                    &format!("{what} contains a control character (line break?)"),
                ));
            }
        }
        Ok(UrlParts {
            scheme,
            user: user.filter(|u| !u.is_empty()),
            password,
            host,
            port,
            path,
        })
    }

    /// `host` or `[v6]`, for building addresses and messages.
    pub fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The URL as it may be shown: any password replaced by `***`.
    pub fn redacted(&self, user: Option<&str>) -> String {
        let mut s = format!("{}://", self.scheme);
        if let Some(u) = user.or(self.user.as_deref()) {
            s.push_str(u);
            if self.password.is_some() {
                s.push_str(":***");
            }
            s.push('@');
        }
        s.push_str(&self.host_for_url());
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s.push_str(&self.path);
        s
    }
}

/// Whether `s` holds a control character (CR, LF, NUL, …).
pub(crate) fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Decode `%XX` escapes; anything else is kept as is.
pub(crate) fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid("", "bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("", "%-escapes do not form UTF-8"))
}

/// Read a secret from a file: the first line, without its line ending.
pub(crate) fn read_secret_file(backend: &str, key: &str, path: &PathBuf) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BackendError::from_io(format!("{backend}: reading {key} {}", path.display()), e)
    })?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// A random name for a temporary upload next to its target. The leading dot
/// keeps it out of listings ([`crate::Handle::from_path`] rejects it).
pub(crate) fn temp_name() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!(".tmp-{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused() {
        for url in [
            "ftp://bob:pw%0d%0aDELE%20x@host/p",
            "ftp://bo%0ab@host/p",
            "ftp://bob@host/p%0aq",
        ] {
            let err = UrlParts::parse(url, &["ftp"]).err().unwrap();
            assert!(err.to_string().contains("control character"), "{err}");
            assert!(!err.to_string().contains("DELE"), "{err}");
        }
    }

    #[test]
    fn parses_and_redacts() {
        let u = UrlParts::parse("ftp://bob:s%40cret@example.org:2121/a%20b", &["ftp"]).unwrap();
        assert_eq!(u.user.as_deref(), Some("bob"));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.host, "example.org");
        assert_eq!(u.port, Some(2121));
        assert_eq!(u.path, "/a b");
        assert_eq!(u.redacted(None), "ftp://bob:***@example.org:2121/a b");

        let u = UrlParts::parse("sftp://alice@[::1]/srv/repo", &["sftp"]).unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, None);
        assert_eq!(u.redacted(None), "sftp://alice@[::1]/srv/repo");

        // An unescaped '@' in the password: the last '@' ends the user info.
        let u = UrlParts::parse("ftp://bob:p@ss@h/x", &["ftp"]).unwrap();
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.host, "h");

        assert!(UrlParts::parse("http://h/x", &["ftp"]).is_err());
        assert!(UrlParts::parse("ftp://h:port/x", &["ftp"]).is_err());
        let Err(err) = UrlParts::parse("ftp://u:secret@h/x?y", &["ftp"]) else {
            panic!("a query string must be refused");
        };
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn ambiguous_user_info_is_refused_without_showing_the_password() {
        for url in [
            "ftp://bob:pa/ss@host/x",
            "ftp://bob:1234/5678@host/x",
            "ftp://bob:x@y/z@host/x",
        ] {
            let err = UrlParts::parse(url, &["ftp", "sftp"]).err().unwrap();
            let text = err.to_string();
            assert!(text.contains("cannot be told apart"), "{text}");
            assert!(text.contains("@host/x"), "{text}");
            for piece in ["pa/ss", "1234", "5678", "x@y", "y/z"] {
                assert!(!text.contains(piece), "{piece} in {text}");
            }
        }
        // Where redactor and parser disagree, or a bracket sits in the user
        // info, the URL is refused (found by fuzzing url_redact).
        for url in [
            "ftp://as@[::sf#p@hossftp://user:p://as@",
            "ftp://u:p[x@host/x",
        ] {
            let err = UrlParts::parse(url, &["ftp"]).err().unwrap();
            assert!(err.to_string().contains("ambiguous"), "{err}");
            assert!(!err.to_string().contains("sf#p"), "{err}");
        }
        // A host must be a host name or an address (fuzzing found
        // `ftps://%40:@#f@#f~~o&ps` accepted with the host `#f~~o&ps`).
        for url in [
            "ftps://%40:@#f@#f~~o&ps",
            "sftp://u@ho st/x",
            "sftp://u@h!/x",
        ] {
            let err = UrlParts::parse(url, &["ftps", "sftp"]).err().unwrap();
            assert!(err.to_string().contains("not a host name"), "{err}");
        }
        for url in [
            "sftp://u@my-host.example_1/x",
            "sftp://u@[fe80::1%eth0]:22/x",
            "sftp://10.0.0.1/x",
        ] {
            UrlParts::parse(url, &["sftp"]).unwrap();
        }
        // A raw '?' ends no authority here (that ends at the first '/').
        let u = UrlParts::parse("sftp://bob:a?b@host/x", &["sftp"]).unwrap();
        assert_eq!(u.password.as_deref(), Some("a?b"));
        // Written as it should be, the same password is fine.
        let u = UrlParts::parse("ftp://bob:pa%2Fss@host/x", &["ftp"]).unwrap();
        assert_eq!(u.password.as_deref(), Some("pa/ss"));
        // An '@' in a path is fine without a port, and escaped after one.
        let u = UrlParts::parse("sftp://host/me@laptop", &["sftp"]).unwrap();
        assert_eq!(u.path, "/me@laptop");
        let u = UrlParts::parse("sftp://host:22/me%40laptop", &["sftp"]).unwrap();
        assert_eq!(u.path, "/me@laptop");
    }
}
