//! Entry points for the fuzz targets (`fuzz/`) and the parser property
//! tests: thin wrappers around the crate's private parsers of text that
//! comes from outside (URLs, server answers, local files), so they can be
//! driven with arbitrary input without widening the real API. Not for other
//! use; nothing here changes what the parsers do.

#[cfg(any(feature = "sftp", feature = "ftp"))]
pub use self::url::*;

#[cfg(any(feature = "sftp", feature = "ftp"))]
mod url {
    use crate::net_url::{percent_decode, UrlParts};

    /// What [`parse_url`] found.
    #[derive(Debug)]
    pub struct ParsedUrl {
        pub password: Option<String>,
        pub redacted: String,
        /// The parts that are not secret (user, host, port, path).
        pub public: String,
    }

    /// Parse a network backend URL (`sftp`, `ftp`, `ftps`) and redact it.
    pub fn parse_url(url: &str) -> Option<ParsedUrl> {
        let parts = UrlParts::parse(url, &["sftp", "ftp", "ftps"]).ok()?;
        let _ = parts.host_for_url();
        Some(ParsedUrl {
            password: parts.password.clone(),
            redacted: parts.redacted(None),
            public: format!(
                "{:?} {:?} {:?} {:?}",
                parts.user, parts.host, parts.port, parts.path
            ),
        })
    }

    /// `%XX` decoding of URL parts.
    pub fn url_percent_decode(s: &str) -> Option<String> {
        percent_decode(s).ok()
    }
}

/// One line of an FTP `MLSD` (`mlsd`) or `LIST` answer: name, size and
/// whether it is a directory, `None` for lines that name nothing or do not
/// parse.
#[cfg(feature = "ftp")]
pub fn ftp_list_line(line: &str, mlsd: bool) -> Option<(String, u64, bool)> {
    crate::ftp::parse_list_line(line, mlsd).ok().flatten()
}

/// Sections of an AWS `credentials` / `config` file.
#[cfg(feature = "aws-profile")]
pub fn aws_ini(text: &str) -> Vec<(String, std::collections::BTreeMap<String, String>)> {
    crate::aws_profile::parse_ini(text)
}

/// Whether `credential_process` output is accepted.
#[cfg(feature = "aws-profile")]
pub fn aws_process_output(stdout: &[u8]) -> bool {
    crate::aws_profile::parse_process_output(stdout).is_ok()
}

/// A GCS listing page: the names of the objects found under `root`, and
/// the next page's token.
#[cfg(feature = "gcs")]
pub fn gcs_list_page(body: &[u8], root: &str) -> Option<(Vec<String>, Option<String>)> {
    let (metas, next) = crate::gcs::parse_list_page(body, root, crate::Kind::Snapshot).ok()?;
    Some((metas.into_iter().map(|m| m.handle.name).collect(), next))
}

/// The message cairn shows for a GCS error answer's body.
#[cfg(feature = "gcs")]
pub fn gcs_error_detail(body: &str) -> String {
    crate::gcs::error_detail(body)
}

/// A GCS `Content-Range` header.
#[cfg(feature = "gcs")]
pub fn gcs_content_range(value: &str) -> Option<(std::ops::Range<u64>, u64)> {
    crate::gcs::parse_content_range(value)
}

/// The error code and message cairn reads from an Azure (or S3) XML error
/// answer; listings themselves are parsed by `object_store`, not by cairn.
#[cfg(feature = "azure")]
pub fn azure_error(status: u16, error_code_header: Option<&[u8]>, body: &str) -> (String, String) {
    use crate::object_store_backend::{xml_message, Answer};
    let mut headers = http::HeaderMap::new();
    if let Some(v) = error_code_header.and_then(|v| http::HeaderValue::from_bytes(v).ok()) {
        headers.insert("x-ms-error-code", v);
    }
    let answer = Answer {
        status: reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::OK),
        headers,
        body: body.to_string(),
    };
    let code = crate::azure::error_code(&answer);
    let _ = crate::object_store_backend::is_auth_failure(&code);
    (code, xml_message(body))
}

/// The verdict of a `known_hosts` text for `host:port` presenting a fixed
/// ed25519 key ([`KNOWN_HOSTS_KEY`]): `Some(true)` known, `Some(false)`
/// revoked or changed, `None` unknown.
#[cfg(feature = "sftp")]
pub fn known_hosts(text: &str, host: &str, port: u16) -> Option<bool> {
    use crate::sftp::known_hosts::{host_label, lookup, Verdict};
    let key = russh::keys::parse_public_key_base64(KNOWN_HOSTS_KEY).expect("valid key");
    match lookup(text, &host_label(host, port), &key) {
        Verdict::Known => Some(true),
        Verdict::Revoked(_) | Verdict::Changed(_) => Some(false),
        Verdict::Unknown => None,
    }
}

/// The host key [`known_hosts`] checks (ed25519, base64 of the wire form).
#[cfg(feature = "sftp")]
pub const KNOWN_HOSTS_KEY: &str =
    "AAAAC3NzaC1lZDI1NTE5AAAAICH11tpHQCb3bTBTsDrYqSAijmUnt5STMgoRhtjOVxbi";
