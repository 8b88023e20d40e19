//! Showing a URL without its secrets: the one function every message,
//! log line and `Display` that names a URL or an endpoint goes through.
//!
//! Two places in a URL can hold a secret: the password of the user info
//! (`scheme://user:password@host/…`) and query parameters such as an Azure
//! SAS signature (`?…&sig=…`) or a token. A URL is redacted as written, not
//! as parsed: it may be malformed (a password with a raw `/`, `?`, `#` or
//! `@`), and a message about a malformed URL must not show the password
//! either. Where the user info cannot be told apart from the path, more is
//! hidden rather than less (see [`split_userinfo`]).

/// What replaces a secret.
const MASK: &str = "***";

/// Query parameters whose value is hidden: a key containing any of these
/// (compared without case) names a secret — `sig` (Azure SAS),
/// `X-Amz-Signature`, `X-Amz-Security-Token`, `access_key`, `secret`,
/// `password`, `token`, `X-Amz-Credential`, `auth`…
const SECRET_QUERY_KEYS: [&str; 8] = [
    "sig",
    "key",
    "secret",
    "token",
    "pass",
    "pwd",
    "credential",
    "auth",
];

/// `url` as it may be shown anywhere: the password of its user info and the
/// values of secret-looking query parameters replaced by `***`. The user
/// name, host, port and path are kept. Text without `://` (a local path) is
/// returned as is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    out.push_str("://");
    let after = match split_userinfo(rest) {
        Some((userinfo, after)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            after
        }
        None => rest,
    };
    push_redacted_query(after, &mut out);
    out
}

/// Split what follows `scheme://` into the user info and the rest (host,
/// port, path, query), if there is user info.
///
/// A well-formed URL's user info ends at the last `@` before the first `/`,
/// `?` or `#`. But a password may hold any of those unescaped, and then the
/// first of them ends the authority early: `u:pa/ss@host/p` would seem to
/// have the host `u` and port `pa`. So when the text before the first
/// delimiter has a `:` before its last `@` (a password), or a `:` and no
/// `@` at all (a port, or a password cut short), the user info runs to the
/// *last* `@` anywhere. That hides the host of a URL with a port and an `@`
/// in its path (`ftp://host:21/a@b` shows as `ftp://host:***@b`): a message
/// that says too little, never one that shows a password.
pub(crate) fn split_userinfo(rest: &str) -> Option<(&str, &str)> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // A ':' before the authority's last '@' is a password's; one after it
    // (or with no '@') a port's or an IPv6 host's.
    let head = authority
        .rfind('@')
        .map_or(authority, |at| &authority[..at]);
    let mut at = if head.contains(':') {
        rest.rfind('@')
    } else {
        authority.rfind('@')
    };
    // A raw `?` or `#` in the user name ends the authority before the
    // password's `:` (`s#r:pw@host/`), yet a lenient parser takes it as user
    // info: a `:` before the first `@` and before any `/` marks a password
    // up to the last `@` (found by the `url_redact` fuzz target).
    if let (Some(colon), Some(first), Some(last)) =
        (rest.find(':'), rest.find('@'), rest.rfind('@'))
    {
        let slash = rest.find('/').unwrap_or(rest.len());
        if colon < slash && colon < first {
            at = Some(at.map_or(last, |a| a.max(last)));
        }
    }
    let at = at?;
    Some((&rest[..at], &rest[at + 1..]))
}

/// Append `s` (host, path, query, fragment) with the values of secret query
/// parameters masked.
fn push_redacted_query(s: &str, out: &mut String) {
    let Some((before, query)) = s.split_once('?') else {
        out.push_str(s);
        return;
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    out.push_str(before);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((key, _value)) if is_secret_key(key) => {
                out.push_str(key);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(pair),
        }
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_QUERY_KEYS.iter().any(|k| key.contains(k))
}

#[cfg(test)]
mod tests {

    /// Found by the `url_redact` fuzz target: a `#` in the user name.
    #[test]
    fn a_fragment_mark_in_the_user_name_does_not_reveal_the_password() {
        for url in [
            "ftps://s#r:s8s@n/u:op",
            "sftp://a?b:pw1pw@host:22/x",
            "ftp://u#x:a/b@h/",
        ] {
            let r = redact_url(url);
            assert!(
                !r.contains("s8s") && !r.contains("pw1pw") && !r.contains("a/b@"),
                "{url} -> {r}"
            );
        }
        assert_eq!(redact_url("ftp://host/path:x@y"), "ftp://host/path:x@y");
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn passwords_are_hidden() {
        for (url, shown) in [
            ("ftp://bob:secret@host:21/x", "ftp://bob:***@host:21/x"),
            ("ftp://bob:s%40c%2Fr%25t@host/x", "ftp://bob:***@host/x"),
            ("ftp://bob:s@c:r@host/x", "ftp://bob:***@host/x"),
            ("ftp://bob:pa/ss@host/x", "ftp://bob:***@host/x"),
            ("ftp://bob:pa?ss#x@host/x", "ftp://bob:***@host/x"),
            ("ftp://bob:a@b/c@host/x", "ftp://bob:***@host/x"),
            ("ftp://:pw@host", "ftp://:***@host"),
            (
                "http://u:p@127.0.0.1:9000/x",
                "http://u:***@127.0.0.1:9000/x",
            ),
            // Conservative where user info and path cannot be told apart.
            ("ftp://host:21/a@b", "ftp://host:***@b"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn what_is_not_secret_is_kept() {
        for url in [
            "sftp://bob@host/x",
            "sftp://alice@[::1]:22/srv/me@laptop",
            "s3://bucket/pre@fix",
            "/plain/path",
            "relative/p@th:x",
            "http://127.0.0.1:9000",
            "https://h/x?region=eu&versions=1#frag",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn secret_query_parameters_are_hidden() {
        assert_eq!(
            redact_url(
                "https://acct.blob.core.windows.net/c?sv=2022-11-02&ss=b&sp=rl&sig=abc%2Bdef%3D"
            ),
            "https://acct.blob.core.windows.net/c?sv=2022-11-02&ss=b&sp=rl&sig=***"
        );
        assert_eq!(
            redact_url("http://h/x?Access_Key=AK&SECRET=s&token=t&password=p&X-Amz-Signature=z#f"),
            "http://h/x?Access_Key=***&SECRET=***&token=***&password=***&X-Amz-Signature=***#f"
        );
        assert_eq!(
            redact_url("ftp://u:pw@h/x?sig=s"),
            "ftp://u:***@h/x?sig=***"
        );
    }

    /// `%XX` for every byte that is not unreserved, as a careful user
    /// writes a password into a URL.
    fn percent_encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    proptest! {
        /// Any password, written raw or percent-encoded, is hidden and the
        /// host is still shown. A password of fewer than 4 characters, or
        /// one that occurs in what is rightly shown (`***`, the host, the
        /// path…), cannot be checked by looking for it.
        #[test]
        fn no_password_survives(
            password in any::<String>(),
            user in "[a-z][a-z0-9]{0,7}",
            host in "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5})?",
            port in proptest::option::of(1u16..),
            path in "(/[a-zA-Z0-9._-]{1,8}){0,3}",
            scheme in "(ftp|ftps|sftp|http|https)",
            encode in any::<bool>(),
        ) {
            let written = if encode { percent_encode(&password) } else { password.clone() };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let url = format!("{scheme}://{user}:{written}@{host}{port}{path}");
            let shown = redact_url(&url);
            let expected = format!("{scheme}://{user}:***@{host}{port}{path}");
            prop_assert_eq!(&shown, &expected);
            if password.chars().count() >= 4 && !expected.contains(&password) {
                prop_assert!(!shown.contains(&password));
            }
            if written.chars().count() >= 4 && !expected.contains(&written) {
                prop_assert!(!shown.contains(&written));
            }
            prop_assert!(shown.contains(&host));
        }

        /// A URL without a password is shown as written.
        #[test]
        fn urls_without_password_are_unchanged(
            user in proptest::option::of("[a-z][a-z0-9]{0,7}"),
            host in "[a-z][a-z0-9.-]{0,12}",
            path in "(/[a-zA-Z0-9@._-]{1,8}){0,3}",
        ) {
            let user = user.map(|u| format!("{u}@")).unwrap_or_default();
            let url = format!("sftp://{user}{host}{path}");
            prop_assert_eq!(redact_url(&url), url);
        }
    }
}
