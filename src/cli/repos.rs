//! Which replicas a command works on: `--repo` (repeatable, or
//! `CAIRN_REPO=a,b`), named backends in `cairn.toml`, or the embedded default
//! local repository. This is the only place that names concrete backends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use cairn::backends::layer::{LimitBackend, RetryBackend, ThrottleBackend, ThrottleConfig};
use cairn::backends::local::LocalBackend;
use cairn::backends::Backend;
use cairn::repo::Replica;
use serde::Deserialize;

use super::{Global, UsageError};

/// `cairn.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Named backends: `[backends.NAME] url = "…"` plus backend options.
    #[serde(default)]
    pub backends: BTreeMap<String, BackendConfig>,
}

#[derive(Debug, Deserialize)]
pub struct BackendConfig {
    pub url: String,
    /// Backend-specific options (endpoint, region, connections, …).
    #[serde(flatten)]
    pub options: BTreeMap<String, toml::Value>,
}

/// The replicas a command was pointed at.
pub struct Selection {
    pub replicas: Vec<Replica>,
    /// Whether each replica is on local disk.
    pub local: Vec<bool>,
    /// True when nothing was configured and the default repository is used.
    pub default_repo: bool,
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            cairn::backends::home::dir()
                .unwrap_or_else(|| "/".into())
                .join(fallback)
        })
}

/// The embedded default repository and its key file.
pub fn default_repo_path() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share").join("cairn/repo")
}

pub fn default_key_file() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("cairn/default.key")
}

pub fn load_config(g: &Global) -> anyhow::Result<ConfigFile> {
    let (path, explicit) = match &g.config {
        Some(p) => (p.clone(), true),
        None => (
            xdg("XDG_CONFIG_HOME", ".config").join("cairn/cairn.toml"),
            false,
        ),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(ConfigFile::default())
        }
        Err(e) => return Err(UsageError(format!("reading config {}: {e}", path.display())).into()),
    };
    toml::from_str(&text).map_err(|e| UsageError(format!("config {}: {e}", path.display())).into())
}

/// Remove a password from a URL before it is shown anywhere.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match auth.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                url.to_string()
            }
        }
        None => url.to_string(),
    }
}

/// Bandwidth settings that apply to every backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Upload limit in KiB/s.
    pub upload_kib: Option<u64>,
    /// Download limit in KiB/s.
    pub download_kib: Option<u64>,
}

/// Open one backend and stack the decorators on it: retry for transient
/// errors (timeouts, resets, 5xx; never for permanent ones), then the
/// optional bandwidth limit, then a concurrency limit.
pub fn open_backend(
    url: &str,
    options: &BTreeMap<String, toml::Value>,
    limits: Limits,
) -> anyhow::Result<Arc<dyn Backend>> {
    let mut opts = options
        .iter()
        .map(|(k, v)| Ok((k.clone(), option_value(url, k, v)?)))
        .collect::<anyhow::Result<BTreeMap<String, String>>>()?;
    // Per-backend limits in cairn.toml win over the global flags: a thin
    // off-site link can be limited while a local disk runs at full speed.
    let mut limits = limits;
    for (key, slot) in [
        ("limit_upload", &mut limits.upload_kib),
        ("limit_download", &mut limits.download_kib),
    ] {
        if let Some(v) = opts.remove(key) {
            match v.parse::<u64>() {
                Ok(n) if n > 0 => *slot = Some(n),
                _ => bail!(UsageError(format!(
                    "{}: option {key}: {v:?} is not a positive number of KiB/s",
                    redact(url)
                ))),
            }
        }
    }
    let raw = open_raw(url, &opts)?;
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

/// The text of one backend option from `cairn.toml`. A secret need not
/// be written into the file: `{ env = "VAR" }` takes the value from an
/// environment variable, `{ file = "PATH" }` from the first line of a file
/// (`~/` is the home directory). Messages name the variable or file, never
/// the value.
fn option_value(url: &str, key: &str, value: &toml::Value) -> anyhow::Result<String> {
    use toml::Value;
    let fail = |why: String| -> anyhow::Error {
        UsageError(format!("{}: option {key}: {why}", redact(url))).into()
    };
    let table = match value {
        Value::String(s) => return Ok(s.clone()),
        Value::Table(t) => t,
        other => return Ok(other.to_string()),
    };
    match (table.get("env"), table.get("file"), table.len()) {
        (Some(Value::String(var)), None, 1) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(fail(format!("environment variable {var} is not set"))),
        },
        (None, Some(Value::String(path)), 1) => {
            let path = cairn::backends::home::expand(path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
            match text.lines().next().map(str::trim_end) {
                Some(line) if !line.is_empty() => Ok(line.to_string()),
                _ => Err(fail(format!("{} is empty", path.display()))),
            }
        }
        _ => Err(fail(
            "a table must be { env = \"VARIABLE\" } or { file = \"PATH\" }".into(),
        )),
    }
}

#[allow(dead_code)] // used only by the network backends' arms
fn backend_error(url: &str, e: cairn::backends::BackendError) -> anyhow::Error {
    // A configuration error is "error: …" by kind, which says nothing; the
    // message usually names the URL already.
    let shown = redact(url);
    let text = match e.kind() {
        cairn::backends::ErrorKind::Other => e.message().to_string(),
        _ => e.to_string(),
    };
    if text.contains(&shown) {
        UsageError(text).into()
    } else {
        UsageError(format!("{shown}: {text}")).into()
    }
}

/// The concrete backend for a URL (or a plain path). Network backends
/// connect lazily, so an unreachable one fails at its first request and
/// does not stop the others.
fn open_raw(url: &str, opts: &BTreeMap<String, String>) -> anyhow::Result<Arc<dyn Backend>> {
    let Some((scheme, rest)) = url.split_once("://") else {
        let path = std::path::absolute(url).with_context(|| format!("repository path {url}"))?;
        return Ok(Arc::new(LocalBackend::new(&path)));
    };
    let _ = opts;
    let b: Arc<dyn Backend> = match scheme {
        "file" => Arc::new(LocalBackend::new(Path::new(rest))),
        #[cfg(feature = "s3")]
        "s3" => Arc::new(
            cairn::backends::s3::S3Backend::from_url(url, opts)
                .map_err(|e| backend_error(url, e))?,
        ),
        #[cfg(feature = "azure")]
        "az" | "azure" => Arc::new(
            cairn::backends::azure::AzureBackend::from_url(url, opts)
                .map_err(|e| backend_error(url, e))?,
        ),
        #[cfg(feature = "gcs")]
        "gs" => Arc::new(
            cairn::backends::gcs::GcsBackend::from_url(url, opts)
                .map_err(|e| backend_error(url, e))?,
        ),
        #[cfg(feature = "sftp")]
        "sftp" => Arc::new(
            futures::executor::block_on(cairn::backends::sftp::SftpBackend::from_url(url, opts))
                .map_err(|e| backend_error(url, e))?,
        ),
        #[cfg(feature = "ftp")]
        "ftp" | "ftps" => Arc::new(
            futures::executor::block_on(cairn::backends::ftp::FtpBackend::from_url(url, opts))
                .map_err(|e| backend_error(url, e))?,
        ),
        other => bail!(UsageError(format!(
            "{}: the {other}:// backend is not available in this build",
            redact(url)
        ))),
    };
    Ok(b)
}

pub fn select(g: &Global) -> anyhow::Result<Selection> {
    let config = load_config(g)?;
    let limits = Limits {
        upload_kib: g.limit_upload,
        download_kib: g.limit_download,
    };
    let mut specs: Vec<(String, String, BTreeMap<String, toml::Value>)> = Vec::new();
    if !g.repos.is_empty() {
        for r in g.repos.iter().filter(|r| !r.trim().is_empty()) {
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
        let p = default_repo_path();
        specs.push((
            p.display().to_string(),
            p.display().to_string(),
            BTreeMap::new(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut replicas = Vec::new();
    let mut local = Vec::new();
    for (name, url, options) in specs {
        if !seen.insert(url.clone()) {
            bail!(UsageError(format!("repository {name} is given twice")));
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

/// Open the repository on the selected replicas, warning about replicas
/// that cannot be used. With `autoinit`, the embedded default repository is
/// created on first use.
pub async fn open(g: &Global, autoinit: bool) -> anyhow::Result<cairn::repo::Repository> {
    let repo = open_with(g, autoinit, select(g)?).await?;
    warn_unavailable(&repo, &[]);
    Ok(repo)
}

/// Warn about replicas that cannot be used, except those named in `quiet`
/// (a command that handles them itself, such as `sync --to` seeding one).
pub fn warn_unavailable(repo: &cairn::repo::Repository, quiet: &[String]) {
    for u in repo.unavailable() {
        if !quiet.contains(&u.name) {
            tracing::warn!("replica {} is not usable: {}", u.name, u.error);
        }
    }
}

/// Open without warning about unusable replicas (the caller reports them).
pub async fn open_unwarned(g: &Global) -> anyhow::Result<cairn::repo::Repository> {
    open_with(g, false, select(g)?).await
}

/// Open the repository for reading: the replica named by `from` is asked
/// first, else replicas on local disk come first; the others serve what the
/// first cannot (a missing or damaged object).
pub async fn open_from(g: &Global, from: Option<&str>) -> anyhow::Result<cairn::repo::Repository> {
    let mut sel = select(g)?;
    let first = match from {
        Some(name) => Some(
            sel.replicas
                .iter()
                .position(|r| r.name == name)
                .ok_or_else(|| unknown_replica(name, sel.replicas.iter().map(|r| &r.name)))?,
        ),
        None => sel.local.iter().position(|l| *l),
    };
    if let Some(i) = first {
        let r = sel.replicas.remove(i);
        sel.replicas.insert(0, r);
    }
    let repo = open_with(g, false, sel).await?;
    warn_unavailable(&repo, &[]);
    Ok(repo)
}

/// The usage error for a `--from`/`--to`/`--backend` that names no replica.
pub fn unknown_replica<'a>(name: &str, names: impl Iterator<Item = &'a String>) -> anyhow::Error {
    UsageError(format!(
        "{name:?} is not one of the repositories given: {}",
        names
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .into()
}

/// Positions of the replicas named in `names` (as given with `--repo` or in
/// cairn.toml).
pub fn positions(repo: &cairn::repo::Repository, names: &[String]) -> anyhow::Result<Vec<usize>> {
    names
        .iter()
        .map(|n| {
            repo.replicas()
                .iter()
                .position(|r| &r.name == n)
                .ok_or_else(|| match repo.unavailable().iter().find(|u| &u.name == n) {
                    Some(u) => super::ReplicaUnusable(format!(
                        "{n} cannot be used: {}",
                        cairn::error::chain(&u.error)
                    ))
                    .into(),
                    None => unknown_replica(n, repo.replicas().iter().map(|r| &r.name)),
                })
        })
        .collect()
}

async fn open_with(
    g: &Global,
    autoinit: bool,
    sel: Selection,
) -> anyhow::Result<cairn::repo::Repository> {
    use super::password::{self, Fallback};
    use cairn::repo::{InitOptions, Repository};
    let key_file = default_key_file();
    if sel.default_repo {
        let exists = sel.replicas[0]
            .backend
            .head(&cairn::backends::Handle::config())
            .await
            .is_ok();
        if !exists && autoinit {
            let pass = password::get(
                g,
                Fallback::KeyFile {
                    path: &key_file,
                    create: true,
                },
            )?;
            if !g.quiet && !g.json {
                eprintln!(
                    "creating the default repository at {}",
                    sel.replicas[0].name
                );
            }
            let mut repo = Repository::init(sel.replicas, &pass, &InitOptions::default()).await?;
            prepare(g, &mut repo);
            return Ok(repo);
        }
    }
    let fallback = if sel.default_repo {
        Fallback::KeyFile {
            path: &key_file,
            create: false,
        }
    } else {
        Fallback::Prompt { confirm: false }
    };
    // Before asking someone to type a passphrase, make sure there is a
    // repository to open it with. Only then: with an unreachable replica
    // this costs that replica's retries once more.
    if !sel.default_repo && password::would_prompt(g) {
        let config = cairn::backends::Handle::config();
        let heads =
            futures::future::join_all(sel.replicas.iter().map(|r| r.backend.head(&config))).await;
        let missing: Vec<_> = sel
            .replicas
            .iter()
            .zip(&heads)
            .filter_map(|(r, h)| match h {
                Err(e) if e.kind() == cairn::backends::ErrorKind::NotFound => Some((r, e)),
                _ => None,
            })
            .collect();
        if missing.len() == sel.replicas.len() {
            if let [(r, e)] = missing[..] {
                return Err(cairn::Error::not_a_repository(&r.name, e).into());
            }
            let names: Vec<&str> = sel.replicas.iter().map(|r| r.name.as_str()).collect();
            return Err(cairn::Error::NotARepository(names.join(", ")).into());
        }
    }
    let pass = password::get(g, fallback)?;
    let mut repo = Repository::open(sel.replicas, &pass).await?;
    prepare(g, &mut repo);
    Ok(repo)
}

/// What every open repository takes from the command line: how long to
/// wait for a lock, and the token Ctrl-C cancels.
fn prepare(g: &Global, repo: &mut cairn::repo::Repository) {
    repo.set_lock_options(cairn::repo::LockOptions {
        wait: g.retry_lock.unwrap_or_default(),
        ..Default::default()
    });
    repo.set_cancel_token(g.cancel.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_come_from_cairn_toml_a_variable_or_a_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t\nignored\n").unwrap();
        let v = |text: &str| -> toml::Value {
            toml::from_str::<toml::Table>(&format!("k = {text}")).unwrap()["k"].clone()
        };
        let get = |text: &str| option_value("s3://b/p", "secret", &v(text));
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
        assert!(err.downcast_ref::<UsageError>().is_some());
        let err = get("{ file = \"/nonexistent/secret\" }").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/secret"), "{err}");
        let err = get("{ env = \"A\", file = \"B\" }").unwrap_err();
        assert!(err.to_string().contains("a table must be"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("ftp://bob:secret@host:21/x"),
            "ftp://bob:***@host:21/x"
        );
        assert_eq!(redact("sftp://bob@host/x"), "sftp://bob@host/x");
        assert_eq!(redact("/plain/path"), "/plain/path");
        assert_eq!(redact("s3://bucket/pre@fix"), "s3://bucket/pre@fix");
    }
}
