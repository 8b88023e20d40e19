//! Which replicas a command works on: `--repo` (repeatable, or
//! `CAIRN_REPO=a,b`), named backends in `cairn.toml`, or the embedded default
//! local repository. The configuration model and the backend factory are
//! the library's ([`cairn::config`]); this module adds what comes from the
//! command line (flags, passphrase prompts, warnings) and keeps the names
//! the commands call.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn::backends::Backend;
pub use cairn::config::{redact, ConfigFile, Limits, Selection};

use super::{Global, UsageError};

/// The key file of the embedded default repository.
pub fn default_key_file() -> std::path::PathBuf {
    cairn::config::paths::default_key_file()
}

/// `--config` (or `CAIRN_CONFIG`), else the default `cairn.toml` if present.
pub fn load_config(g: &Global) -> anyhow::Result<ConfigFile> {
    Ok(ConfigFile::load(g.config.as_deref())?)
}

/// Open one backend with its decorators (see [`cairn::config::open_backend`]).
pub fn open_backend(
    url: &str,
    options: &BTreeMap<String, toml::Value>,
    limits: Limits,
) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(cairn::config::open_backend(url, options, limits)?)
}

/// Open the replicas the command line and cairn.toml name.
pub fn select(g: &Global) -> anyhow::Result<Selection> {
    let config = load_config(g)?;
    let limits = Limits {
        upload_kib: g.limit_upload,
        download_kib: g.limit_download,
    };
    warn_secrets_in_argv(&g.repos);
    Ok(cairn::config::select(&config, &g.repos, limits)?)
}

/// A password (or secret query parameter) in a `--repo` URL is accepted,
/// but the command line is visible to every user of the machine (`ps`), so
/// say where it belongs instead. A URL from `CAIRN_REPO` is not on the
/// command line: no warning for that.
fn warn_secrets_in_argv(repos: &[String]) {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for url in repos {
        let shown = redact(url);
        if shown != *url && argv.iter().any(|a| a.contains(url.as_str())) {
            tracing::warn!(
                "the repository URL {shown} on the command line holds a password, which other \
                 users of this machine can see in the process list; name the backend in cairn.toml \
                 with the password as {{ env = \"VAR\" }} or {{ file = \"PATH\" }}, or set \
                 CAIRN_SFTP_PASSWORD / CAIRN_FTP_PASSWORD, or give the URL in CAIRN_REPO"
            );
        }
    }
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
    let mut repo = open_with(g, false, sel).await?;
    if let Some(name) = from {
        // Asked first even when a local replica would be.
        if let Some(i) = repo.replicas().iter().position(|r| r.name == name) {
            repo.set_preferred(i);
        }
    }
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

/// Open another repository than the command's own (the target of
/// `copy --to`): the replicas `names` selects (paths, URLs or backends of
/// cairn.toml), with the passphrase `pass` gives. A target that holds no
/// repository anywhere is refused before the passphrase is asked for.
pub async fn open_other(
    g: &Global,
    names: &[String],
    pass: impl FnOnce() -> anyhow::Result<secrecy::SecretString>,
) -> anyhow::Result<cairn::repo::Repository> {
    use anyhow::Context;
    let config = load_config(g)?;
    let limits = Limits {
        upload_kib: g.limit_upload,
        download_kib: g.limit_download,
    };
    warn_secrets_in_argv(names);
    let sel = cairn::config::select(&config, names, limits)?;
    let handle = cairn::backends::Handle::config();
    let heads =
        futures::future::join_all(sel.replicas.iter().map(|r| r.backend.head(&handle))).await;
    let missing = heads
        .iter()
        .filter(|h| matches!(h, Err(e) if e.kind() == cairn::backends::ErrorKind::NotFound))
        .count();
    if missing == sel.replicas.len() {
        let shown: Vec<&str> = sel.replicas.iter().map(|r| r.name.as_str()).collect();
        return Err(anyhow::Error::from(cairn::Error::NotARepository(
            shown.join(", "),
        )))
        .context(format!(
            "the target must be a repository of its own: create it with its own passphrase \
                 first (`cairn {} init`)",
            shown
                .iter()
                .map(|n| format!("--repo {n}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let pass = pass()?;
    let opts = cairn::repo::OpenOptions {
        key_hint: None,
        state_dir: Some(cairn::config::paths::state_dir()),
    };
    let mut repo = cairn::repo::Repository::open_with(sel.replicas, &pass, &opts).await?;
    prepare(g, &mut repo);
    warn_unavailable(&repo, &[]);
    Ok(repo)
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
    let opts = cairn::repo::OpenOptions {
        key_hint: g.key_hint.clone(),
        state_dir: Some(cairn::config::paths::state_dir()),
    };
    let mut repo = Repository::open_with(sel.replicas, &pass, &opts).await?;
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
    super::exit::watch(repo);
    super::signals::arm();
}
