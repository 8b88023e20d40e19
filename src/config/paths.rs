//! Where cairn keeps things by default: the embedded default repository,
//! its key file, `cairn.toml` and this host's records of repositories, under the XDG base directories. `~` in
//! paths a user writes is expanded by [`expand`] (the storage layer's, so
//! the backends and the engine agree on it).

use std::path::PathBuf;

pub use cairn_backends::home::expand;

/// `$VAR` when it is an absolute path (the XDG rule), else `~/fallback`
/// (`/fallback` without a home directory).
fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            cairn_backends::home::dir()
                .unwrap_or_else(|| "/".into())
                .join(fallback)
        })
}

/// The embedded default repository, used when nothing names one.
pub fn default_repo() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share").join("cairn/repo")
}

/// The key file that holds the default repository's passphrase.
pub fn default_key_file() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("cairn/default.key")
}

/// `cairn.toml`, read when no other configuration file is named.
pub fn default_config_file() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("cairn/cairn.toml")
}

/// This host's records of the repositories it opened (rollback detection,
/// the key slot that last opened each).
pub fn state_dir() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state").join("cairn")
}
