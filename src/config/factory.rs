//! From a URL and its options to a ready backend, and from a configuration
//! to the replicas a command works on. This is the only place that names
//! concrete backends: the engine sees `Arc<dyn Backend>` only.
//!
//! Options arrive as written in cairn.toml. Secrets need not be written
//! there (`{ env = "VAR" }`, `{ file = "PATH" }`, see [`option_text`]); the
//! layer options (`limit_upload`, `limit_download`) are taken here, and the
//! rest is checked against the typed options of the backend the URL names
//! (`S3Options`, `SftpOptions`, …), so an unknown or misspelt option is an
//! error that names it.
//!
//! Opening is synchronous: no backend does I/O before its first request
//! (beyond reading a password or CA file), so an unreachable replica does
//! not stop the others from starting.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use cairn_backends::layer::{LimitBackend, RetryBackend, ThrottleBackend, ThrottleConfig};
use cairn_backends::local::LocalBackend;
use cairn_backends::options::{self, OptionMap};
use cairn_backends::Backend;
use serde::Deserialize;

use super::{paths, redact, ConfigError, ConfigFile};
use crate::repo::Replica;

/// Bandwidth settings that apply to every backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Upload limit in KiB/s.
    pub upload_kib: Option<u64>,
    /// Download limit in KiB/s.
    pub download_kib: Option<u64>,
}

/// Options of the decorators rather than of a backend. In cairn.toml they
/// win over the [`Limits`] given for every backend: a thin off-site link can
/// be limited while a local disk runs at full speed.
#[derive(Default, Deserialize)]
#[serde(default)]
struct LayerOptions {
    /// KiB/s.
    limit_upload: Option<u64>,
    /// KiB/s.
    limit_download: Option<u64>,
}

/// A local repository takes no options.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalOptions {}

/// Open one backend and stack the decorators on it: retry for transient
/// errors (timeouts, resets, 5xx; never for permanent ones), then the
/// optional bandwidth limit, then a concurrency limit.
pub fn open_backend(
    url: &str,
    options: &BTreeMap<String, toml::Value>,
    limits: Limits,
) -> Result<Arc<dyn Backend>, ConfigError> {
    let text = options
        .iter()
        .map(|(k, v)| Ok((k.clone(), option_text(url, k, v)?)))
        .collect::<Result<OptionMap, ConfigError>>()?;
    let shown = redact(url);
    let (layer, text) = options::split::<LayerOptions>(&shown, &text)
        .map_err(|e| ConfigError::Invalid(e.message().to_string()))?;
    let mut limits = limits;
    for (key, value, slot) in [
        ("limit_upload", layer.limit_upload, &mut limits.upload_kib),
        (
            "limit_download",
            layer.limit_download,
            &mut limits.download_kib,
        ),
    ] {
        match value {
            None => {}
            Some(0) => {
                return Err(ConfigError::Invalid(format!(
                    "{shown}: option {key}: 0 is not a positive number of KiB/s"
                )))
            }
            Some(n) => *slot = Some(n),
        }
    }
    let raw = open_raw(url, &text)?;
    let connections = raw.capabilities().default_connections.max(1);
    let mut b: Arc<dyn Backend> = Arc::new(RetryBackend::new(raw));
    if limits.upload_kib.is_some() || limits.download_kib.is_some() {
        b = Arc::new(ThrottleBackend::new(
            b,
            ThrottleConfig {
                upload_bytes_per_sec: limits.upload_kib.map(|k| k * 1024),
                download_bytes_per_sec: limits.download_kib.map(|k| k * 1024),
            },
        ));
    }
    Ok(Arc::new(LimitBackend::new(b, connections)))
}

/// The text of one backend option from `cairn.toml`, as [`secret_text`]
/// reads it; messages start with the URL (without a password) and the key.
pub fn option_text(url: &str, key: &str, value: &toml::Value) -> Result<String, ConfigError> {
    secret_text(&format!("{}: option {key}", redact(url)), value)
}

/// The text of a value in `cairn.toml` that may be a secret. A secret need
/// not be written into the file: `{ env = "VAR" }` takes the value from an
/// environment variable, `{ file = "PATH" }` from the first line of a file
/// (`~/` is the home directory), `{ credential = "NAME" }` from a systemd
/// credential (`LoadCredential=NAME:…`, read from `$CREDENTIALS_DIRECTORY`,
/// so one cairn.toml serves every unit). Numbers and flags become their
/// text.
/// Messages start with `what` (the option or key) and name the variable or
/// file, never the value.
pub fn secret_text(what: &str, value: &toml::Value) -> Result<String, ConfigError> {
    use toml::Value;
    let fail = |why: String| ConfigError::Invalid(format!("{what}: {why}"));
    let table = match value {
        Value::String(s) => return Ok(s.clone()),
        Value::Table(t) => t,
        other => return Ok(other.to_string()),
    };
    if let (Some(Value::String(name)), 1) = (table.get("credential"), table.len()) {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(fail(format!("{name:?} is not a credential name")));
        }
        let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
            return Err(fail(format!(
                "credential {name}: CREDENTIALS_DIRECTORY is not set \
                 (run under systemd with LoadCredential={name}:PATH)"
            )));
        };
        return first_line(&fail, &std::path::Path::new(&dir).join(name));
    }
    match (table.get("env"), table.get("file"), table.len()) {
        (Some(Value::String(var)), None, 1) => match std::env::var(var) {
            // Commands cairn runs (a password command) must not inherit it.
            Ok(v) if !v.is_empty() => {
                cairn_backends::child::mark_secret_var(var);
                Ok(v)
            }
            _ => Err(fail(format!("environment variable {var} is not set"))),
        },
        (None, Some(Value::String(path)), 1) => first_line(&fail, &paths::expand(path)),
        _ => Err(fail(
            "a table must be { env = \"VARIABLE\" }, { file = \"PATH\" } or { credential = \"NAME\" }"
                .into(),
        )),
    }
}

/// The first line of the file at `path`, which must not be empty.
fn first_line(
    fail: &dyn Fn(String) -> ConfigError,
    path: &std::path::Path,
) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
    match text.lines().next().map(str::trim_end) {
        Some(line) if !line.is_empty() => Ok(line.to_string()),
        _ => Err(fail(format!("{} is empty", path.display()))),
    }
}

/// The concrete backend for a URL (or a plain path), its options checked
/// against that backend's typed options.
fn open_raw(url: &str, text: &OptionMap) -> Result<Arc<dyn Backend>, ConfigError> {
    let backend_error = |e| ConfigError::backend(url, e);
    let Some((scheme, rest)) = url.split_once("://") else {
        options::from_map::<LocalOptions>("local", text).map_err(backend_error)?;
        let path = std::path::absolute(url).map_err(|source| ConfigError::Path {
            path: url.to_string(),
            source,
        })?;
        return Ok(Arc::new(LocalBackend::new(&path)));
    };
    let b: Arc<dyn Backend> = match scheme {
        "file" => {
            options::from_map::<LocalOptions>("local", text).map_err(backend_error)?;
            Arc::new(LocalBackend::new(Path::new(rest)))
        }
        #[cfg(feature = "s3")]
        "s3" => {
            use cairn_backends::s3::{S3Backend, S3Options};
            let o = S3Options::from_map(text).map_err(backend_error)?;
            Arc::new(S3Backend::new(url, o).map_err(backend_error)?)
        }
        #[cfg(feature = "azure")]
        "az" | "azure" => {
            use cairn_backends::azure::{AzureBackend, AzureOptions};
            let o = AzureOptions::from_map(text).map_err(backend_error)?;
            Arc::new(AzureBackend::new(url, o).map_err(backend_error)?)
        }
        #[cfg(feature = "gcs")]
        "gs" => {
            use cairn_backends::gcs::{GcsBackend, GcsOptions};
            let o = GcsOptions::from_map(text).map_err(backend_error)?;
            Arc::new(GcsBackend::new(url, o).map_err(backend_error)?)
        }
        #[cfg(feature = "sftp")]
        "sftp" => {
            use cairn_backends::sftp::{SftpBackend, SftpOptions};
            let o = SftpOptions::from_map(text).map_err(backend_error)?;
            Arc::new(SftpBackend::new(url, o).map_err(backend_error)?)
        }
        #[cfg(feature = "ftp")]
        "ftp" | "ftps" => {
            use cairn_backends::ftp::{FtpBackend, FtpOptions};
            let o = FtpOptions::from_map(text).map_err(backend_error)?;
            Arc::new(FtpBackend::new(url, o).map_err(backend_error)?)
        }
        other => {
            return Err(ConfigError::Invalid(format!(
                "{}: the {other}:// backend is not available in this build",
                redact(url)
            )))
        }
    };
    Ok(b)
}

/// The replicas a command works on.
pub struct Selection {
    pub replicas: Vec<Replica>,
    /// Whether each replica is on local disk.
    pub local: Vec<bool>,
    /// True when nothing was configured and the default repository is used.
    pub default_repo: bool,
}

/// Open the replicas `repos` names, each a backend name from `config` or a
/// URL or path; with no `repos`, every backend in `config`; with neither,
/// the embedded default repository ([`paths::default_repo`]).
pub fn select(
    config: &ConfigFile,
    repos: &[String],
    limits: Limits,
) -> Result<Selection, ConfigError> {
    let mut specs: Vec<(String, String, BTreeMap<String, toml::Value>)> = Vec::new();
    if !repos.is_empty() {
        for r in repos.iter().filter(|r| !r.trim().is_empty()) {
            match config.backends.get(r) {
                Some(b) => specs.push((r.clone(), b.url.clone(), b.options.clone())),
                None => specs.push((redact(r), r.clone(), BTreeMap::new())),
            }
        }
    } else {
        for (name, b) in &config.backends {
            specs.push((name.clone(), b.url.clone(), b.options.clone()));
        }
    }
    let default_repo = specs.is_empty();
    if default_repo {
        let p = paths::default_repo().display().to_string();
        specs.push((p.clone(), p, BTreeMap::new()));
    }
    let mut seen = HashSet::new();
    let mut replicas = Vec::new();
    let mut local = Vec::new();
    for (name, url, options) in specs {
        if !seen.insert(url.clone()) {
            return Err(ConfigError::Invalid(format!(
                "repository {name} is given twice"
            )));
        }
        local.push(!url.contains("://") || url.starts_with("file://"));
        replicas.push(Replica {
            name,
            backend: open_backend(&url, &options, limits)?,
        });
    }
    Ok(Selection {
        replicas,
        local,
        default_repo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> toml::Value {
        toml::from_str::<toml::Table>(&format!("k = {text}")).unwrap()["k"].clone()
    }

    #[test]
    fn option_values_come_from_cairn_toml_a_variable_or_a_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t\nignored\n").unwrap();
        let get = |text: &str| option_text("s3://b/p", "secret", &value(text));
        assert_eq!(get("\"plain\"").unwrap(), "plain");
        assert_eq!(get("8").unwrap(), "8");
        assert_eq!(get("true").unwrap(), "true");
        assert_eq!(
            get(&format!("{{ file = {:?} }}", secret.to_str().unwrap())).unwrap(),
            "s3cr3t"
        );
        // PATH is set in every test environment.
        assert_eq!(
            get("{ env = \"PATH\" }").unwrap(),
            std::env::var("PATH").unwrap()
        );
        let err = get("{ env = \"CAIRN_TEST_SURELY_UNSET_VARIABLE\" }").unwrap_err();
        assert!(
            err.to_string()
                .contains("CAIRN_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{err}"
        );
        assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
        let err = get("{ file = \"/nonexistent/secret\" }").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/secret"), "{err}");
        let err = get("{ env = \"A\", file = \"B\" }").unwrap_err();
        assert!(err.to_string().contains("a table must be"), "{err}");
    }

    #[test]
    fn unknown_and_mistyped_options_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let open = |pairs: &[(&str, &str)]| {
            let options = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), value(v)))
                .collect();
            open_backend(&path, &options, Limits::default())
        };
        assert!(open(&[]).is_ok());
        assert!(open(&[("limit_upload", "100"), ("limit_download", "\"5\"")]).is_ok());
        for (pairs, named) in [
            (&[("limit_upload", "0")][..], "limit_upload"),
            (&[("limit_download", "\"fast\"")][..], "limit_download"),
            (&[("conections", "4")][..], "conections"),
        ] {
            let err = open(pairs).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains(named), "{err}");
            assert!(
                matches!(err, ConfigError::Invalid(_) | ConfigError::Backend { .. }),
                "{err:?}"
            );
        }
    }

    #[cfg(feature = "sftp")]
    #[test]
    fn network_backends_check_their_typed_options() {
        let options = |pairs: &[(&str, &str)]| -> BTreeMap<String, toml::Value> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), value(v)))
                .collect()
        };
        let url = "sftp://u:hunter2@127.0.0.1:1/srv/repo";
        let ok = options(&[("known_hosts", "\"/nonexistent\""), ("fsync", "false")]);
        assert!(open_backend(url, &ok, Limits::default()).is_ok());
        let typo = options(&[("known_host", "\"/nonexistent\"")]);
        let err = open_backend(url, &typo, Limits::default())
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("\"known_host\""), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let bad = options(&[("connections", "\"many\"")]);
        let err = open_backend(url, &bad, Limits::default())
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("connections"), "{err}");
    }
}
