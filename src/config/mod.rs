//! Which storage a front end works on, and how it is opened: the
//! `cairn.toml` model (named backends, each a URL plus options), the
//! default paths, and the factory that turns a URL and its options into a
//! ready backend (typed options checked, decorators stacked). Every front
//! end (the `cairn` binary today) goes through here, so a URL or an option
//! means the same in each; none of it reads a command line.

pub mod api;
pub mod check;
pub mod duration;
pub mod factory;
pub mod jobs;
pub mod locate;
pub mod notify;
pub mod paths;

use std::collections::BTreeMap;
use std::path::Path;

use cairn_backends::BackendError;
use serde::Deserialize;

pub use factory::{open_backend, select, Limits, Selection};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A mistake in what the user wrote: cairn.toml unreadable or malformed,
    /// an option unknown, unset or out of range, a scheme this build does
    /// not know, a repository given twice.
    #[error("{0}")]
    Invalid(String),
    /// A backend refused its URL or options (a configuration mistake too).
    /// The message names the URL (without a password); `error` is what the
    /// backend said, for its kind.
    #[error("{message}")]
    Backend {
        message: String,
        error: BackendError,
    },
    /// A local repository path that cannot be made absolute.
    #[error("repository path {path}")]
    Path {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// A mistake in cairn.toml, an option or a URL is a usage error (2);
    /// a path that cannot be resolved is a failure (1).
    pub fn exit_code(&self) -> crate::ops::ExitCode {
        match self {
            ConfigError::Invalid(_) | ConfigError::Backend { .. } => crate::ops::ExitCode::Usage,
            ConfigError::Path { .. } => crate::ops::ExitCode::Failure,
        }
    }
}

impl ConfigError {
    /// A backend's refusal of `url`, in a message that names the URL once.
    pub fn backend(url: &str, error: BackendError) -> ConfigError {
        // A configuration error is "error: …" by kind, which says nothing;
        // the message usually names the URL already.
        let shown = redact(url);
        let text = match error.kind() {
            cairn_backends::ErrorKind::Other => error.message().to_string(),
            _ => error.to_string(),
        };
        let message = if text.contains(&shown) {
            text
        } else {
            format!("{shown}: {text}")
        };
        ConfigError::Backend { message, error }
    }
}

/// `cairn.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Named backends: `[backends.NAME] url = "…"` plus backend options.
    #[serde(default)]
    pub backends: BTreeMap<String, BackendConfig>,
    /// The default retention policy (`[retention]`).
    #[serde(default)]
    pub retention: Option<crate::retention::Policy>,
    /// Where failures, partial runs, stale jobs and recoveries are sent
    /// (`[notify]`).
    #[serde(default)]
    pub notify: Option<notify::NotifyConfig>,
    /// Scheduled jobs (`[jobs.NAME]`), checked by [`ConfigFile::jobs`].
    #[serde(default)]
    pub jobs: BTreeMap<String, jobs::JobConfig>,
    /// How `cairn daemon` runs (`[daemon]`).
    #[serde(default)]
    pub daemon: jobs::DaemonConfig,
    /// Who may call the HTTP API, and how it is served (`[api]`).
    #[serde(default)]
    pub api: api::ApiConfig,
    /// Where the configuration was read from, to name its lines in errors.
    #[serde(skip)]
    pub source: Option<Source>,
}

/// The file a configuration was read from, and its text.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: std::path::PathBuf,
    pub text: String,
}

/// One `[backends.NAME]` table.
#[derive(Clone, Debug, Deserialize)]
pub struct BackendConfig {
    pub url: String,
    /// This backend's retention policy (`[backends.NAME.retention]`),
    /// instead of the default one.
    #[serde(default)]
    pub retention: Option<crate::retention::Policy>,
    /// `/health` fails when this replica has had no successful write for
    /// this long (`stale_after = "26h"`).
    #[serde(default, with = "duration::option")]
    pub stale_after: Option<std::time::Duration>,
    /// Backend options (endpoint, region, connections, …), as written.
    /// They are checked when the backend is opened, against the options of
    /// the backend the URL names: a backend that is not used this time
    /// cannot fail a run, and `{ env = "VAR" }` is read only when needed.
    #[serde(flatten)]
    pub options: BTreeMap<String, toml::Value>,
}

impl ConfigFile {
    /// The retention policies configured: the default and each backend's.
    pub fn policies(&self) -> crate::ops::forget::Policies {
        crate::ops::forget::Policies {
            default: self.retention.clone(),
            by_replica: self
                .backends
                .iter()
                .filter_map(|(n, b)| b.retention.clone().map(|p| (n.clone(), p)))
                .collect(),
        }
    }

    /// Read the configuration: the file `path`, or else the default
    /// ([`paths::default_config_file`]), which may be missing (no backends).
    pub fn load(path: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (paths::default_config_file(), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(ConfigFile::default())
            }
            Err(e) => {
                return Err(ConfigError::Invalid(format!(
                    "reading config {}: {e}",
                    path.display()
                )))
            }
        };
        let mut config = ConfigFile::parse(&text).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => (
                    Some(locate::line_of(&text, span.start)),
                    locate::path_at(&text, span.start),
                ),
                None => (None, None),
            };
            ConfigError::Invalid(at(&path, line, key.as_deref(), e.message().trim_end()))
        })?;
        config.source = Some(Source { path, text });
        Ok(config)
    }

    /// The configuration in `text` (TOML).
    pub fn parse(text: &str) -> Result<ConfigFile, toml::de::Error> {
        toml::from_str(text)
    }

    /// The jobs of `[jobs]`, checked; the error names the file, line and
    /// key of every mistake.
    pub fn jobs(&self) -> Result<Vec<crate::jobs::Job>, ConfigError> {
        crate::jobs::spec::jobs(self).map_err(|problems| {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| {
                    let keys: Vec<&str> = p.path.iter().map(String::as_str).collect();
                    self.at(&keys, &p.message)
                })
                .collect();
            ConfigError::Invalid(lines.join("\n"))
        })
    }
}

/// `config FILE, line N, KEY: message`.
fn at(path: &Path, line: Option<usize>, key: Option<&str>, message: &str) -> String {
    let mut out = format!("config {}", path.display());
    if let Some(l) = line {
        out.push_str(&format!(", line {l}"));
    }
    if let Some(k) = key {
        out.push_str(&format!(", {k}"));
    }
    format!("{out}: {message}")
}

/// A URL with any password (and secret query parameters) replaced by
/// `***`, for showing it anywhere: [`cairn_backends::redact_url`], which
/// every backend uses too.
pub fn redact(url: &str) -> String {
    cairn_backends::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("ftp://bob:secret@host:21/x"),
            "ftp://bob:***@host:21/x"
        );
        assert_eq!(redact("sftp://bob@host/x"), "sftp://bob@host/x");
        assert_eq!(redact("/plain/path"), "/plain/path");
        assert_eq!(redact("s3://bucket/pre@fix"), "s3://bucket/pre@fix");
        assert_eq!(redact("ftp://bob:se/cr@t@host/x"), "ftp://bob:***@host/x");
    }

    #[test]
    fn config_files_are_checked() {
        let c = ConfigFile::parse(
            "[backends.off]\nurl = \"s3://b/p\"\nregion = \"eu\"\nconnections = 8\n",
        )
        .unwrap();
        let b = &c.backends["off"];
        assert_eq!(b.url, "s3://b/p");
        assert_eq!(b.options.len(), 2);
        assert!(ConfigFile::parse("[backends.a]\nurl = 3\n").is_err());
        assert!(ConfigFile::parse("[backends.a]\nurl = \"/x\"\n[frobnicate]\n").is_err());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = ConfigFile::load(Some(&missing)).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }
}
