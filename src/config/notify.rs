//! The `[notify]` table of cairn.toml: where the daemon and `cairn run` send
//! word of failures, partial runs, stale jobs and recoveries (a webhook,
//! e-mail over SMTP, or both), how hard they try, and how often a repeat
//! may go out. [`NotifyConfig::validate`] checks what serde cannot, naming
//! the key; [`crate::jobs::notify::Notifier`] resolves the secrets and
//! delivers.
//!
//! The webhook URL and the SMTP password are secrets: they may be written
//! as `{ env = "VAR" }` or `{ file = "PATH" }` (see
//! [`super::factory::secret_text`]), and neither `Debug`, `Serialize` nor
//! an error message ever shows them.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, factory, ConfigError};
use crate::jobs::notify::Event;

/// Attempts after the first are capped: a notification that cannot go out
/// in this many must not keep a task alive for long.
pub const MAX_RETRIES: u32 = 10;
/// The longest `timeout` one attempt may be given.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// `[notify]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The URL notifications are POSTed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Secret>,
    /// The webhook body: cairn's JSON or a Slack-compatible message.
    #[serde(default)]
    pub format: WebhookFormat,
    /// How long one attempt may take (connect, send, answer).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Attempts after a failed first one (at most [`MAX_RETRIES`]).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The wait before the first retry; it doubles for each further one
    /// (capped at a minute).
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// The same event for the same job and replicas is not sent again
    /// within this (`0s`: every time).
    #[serde(default = "default_repeat_after", with = "duration")]
    pub repeat_after: Duration,
    /// Which events are sent (default: all).
    #[serde(default = "Event::all")]
    pub events: Vec<Event>,
    /// E-mail over SMTP (`[notify.email]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailConfig>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_secs(2)
}
fn default_repeat_after() -> Duration {
    Duration::from_secs(3600)
}

/// The body a webhook gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"event": …, "job": …, "replicas": […], …}`.
    #[default]
    Json,
    /// `{"text": …, "blocks": […]}`, what Slack's incoming webhooks (and
    /// the chat tools compatible with them) take.
    Slack,
}

/// `[notify.email]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name or address.
    pub server: String,
    /// Default: 587 with STARTTLS, 465 with implicit TLS, 25 without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: EmailTls,
    /// Login, with `password`; both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    /// A PEM file of extra trust roots (a private CA), on top of the
    /// public ones. Certificates are always verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS, which is required.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption: only for a server on loopback.
    None,
}

impl EmailTls {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailTls::Starttls => "starttls",
            EmailTls::Tls => "tls",
            EmailTls::None => "none",
        }
    }
}

impl EmailConfig {
    /// The port, or the usual one for `tls`.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            EmailTls::Starttls => 587,
            EmailTls::Tls => 465,
            EmailTls::None => 25,
        })
    }
}

/// A value that is a secret: written in cairn.toml as a string, or taken
/// from `{ env = "VAR" }`, `{ file = "PATH" }` or `{ credential = "NAME" }`
/// (a systemd credential) when it is used. Shown as
/// `***` when written out; the variable or file it comes from is shown.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(toml::Value);

impl Secret {
    /// The secret's text; errors start with `key` (`notify.webhook`).
    pub fn resolve(&self, key: &str) -> Result<String, ConfigError> {
        factory::secret_text(key, &self.0)
    }

    /// The value as written in cairn.toml, when it is written there.
    pub fn literal(&self) -> Option<&str> {
        self.0.as_str()
    }

    fn check(&self, key: &str) -> Result<(), ConfigError> {
        let ok = match &self.0 {
            toml::Value::String(_) => true,
            toml::Value::Table(t) => {
                t.len() == 1
                    && ["env", "file", "credential"]
                        .iter()
                        .any(|k| t.get(*k).is_some_and(toml::Value::is_str))
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(invalid(
                key,
                "must be a string, { env = \"VARIABLE\" }, { file = \"PATH\" } or \
                 { credential = \"NAME\" }",
            ))
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            toml::Value::Table(t) => write!(f, "{t}"),
            _ => f.write_str("\"***\""),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            toml::Value::Table(t) => t.serialize(ser),
            _ => ser.serialize_str("***"),
        }
    }
}

fn invalid(key: &str, why: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("{key}: {why}"))
}

/// Whether `host` (a name, or an address with or without brackets) is this
/// machine's loopback.
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A webhook URL checked: http(s), a host, and plain http only on
/// loopback (the URL is a secret and must not cross a network in clear).
/// Errors name `key` and the host, never the path or query.
pub fn check_webhook_url(key: &str, text: &str) -> Result<reqwest::Url, ConfigError> {
    let url =
        reqwest::Url::parse(text.trim()).map_err(|e| invalid(key, format!("not a URL ({e})")))?;
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err(invalid(key, "the URL has no host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => {
            return Err(invalid(
                key,
                format!(
                    "http:// to {host} would send the URL (a secret) and every \
                     notification in clear text; use https://, or http:// only on \
                     loopback (127.0.0.1, ::1, localhost)"
                ),
            ))
        }
        other => {
            return Err(invalid(
                key,
                format!("{other}:// is not a webhook URL (https:// expected)"),
            ))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            key,
            format!("the URL for {host} must not hold a user name or password"),
        ));
    }
    Ok(url)
}

impl NotifyConfig {
    /// Check what serde cannot: values in range, addresses well-formed, a
    /// webhook URL usable, `tls = "none"` only on loopback. Errors name
    /// the key (`notify.email.port`). Secrets from `{ env }`/`{ file }`
    /// are read later, by [`crate::jobs::notify::Notifier::new`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.webhook.is_none() && self.email.is_none() {
            return Err(invalid(
                "notify",
                "neither webhook nor [notify.email] is set; set one, or remove [notify]",
            ));
        }
        if let Some(w) = &self.webhook {
            w.check("notify.webhook")?;
            if let Some(text) = w.literal() {
                check_webhook_url("notify.webhook", text)?;
            }
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(invalid(
                "notify.timeout",
                format!(
                    "{} is not between 1s and {}",
                    duration::format(self.timeout),
                    duration::format(MAX_TIMEOUT)
                ),
            ));
        }
        if self.retries > MAX_RETRIES {
            return Err(invalid(
                "notify.retries",
                format!("{} is more than {MAX_RETRIES}", self.retries),
            ));
        }
        if self.events.is_empty() {
            return Err(invalid(
                "notify.events",
                "is empty; leave it out to send every event",
            ));
        }
        if let Some(e) = &self.email {
            e.validate()?;
        }
        Ok(())
    }
}

impl EmailConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let server = self.server.trim();
        if server.is_empty() || server.contains("://") || server.contains(char::is_whitespace) {
            return Err(invalid(
                "notify.email.server",
                format!(
                    "{:?} is not a host name or address (e.g. smtp.example.com)",
                    self.server
                ),
            ));
        }
        if self.port == Some(0) {
            return Err(invalid("notify.email.port", "0 is not a port"));
        }
        if self.tls == EmailTls::None && !is_loopback(server) {
            return Err(invalid(
                "notify.email.tls",
                format!(
                    "\"none\" would send the mail and the password to {server} in clear \
                     text, so it is only allowed for a server on loopback (127.0.0.1, ::1, \
                     localhost); use \"starttls\" or \"tls\""
                ),
            ));
        }
        if self.tls == EmailTls::None && self.ca_file.is_some() {
            return Err(invalid(
                "notify.email.ca_file",
                "is of no use with tls = \"none\"",
            ));
        }
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return Err(invalid(
                    "notify.email.password",
                    "is not set, but username is (set both or neither)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "notify.email.username",
                    "is not set, but password is (set both or neither)",
                ))
            }
            _ => {}
        }
        if let Some(p) = &self.password {
            p.check("notify.email.password")?;
        }
        mailbox("notify.email.from", &self.from)?;
        if self.to.is_empty() {
            return Err(invalid("notify.email.to", "names no recipient"));
        }
        for (i, to) in self.to.iter().enumerate() {
            mailbox(&format!("notify.email.to[{i}]"), to)?;
        }
        Ok(())
    }
}

/// `text` as an e-mail address (`ops@example.com` or
/// `Ops <ops@example.com>`).
pub fn mailbox(key: &str, text: &str) -> Result<lettre::message::Mailbox, ConfigError> {
    text.trim()
        .parse()
        .map_err(|e| invalid(key, format!("{text:?} is not an e-mail address ({e})")))
}

#[cfg(test)]
mod tests;
