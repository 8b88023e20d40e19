//! The user's home directory, and `~` in paths written by hand (cairn.toml,
//! backend options, `AWS_CONFIG_FILE` and the like). One definition, so a
//! path means the same wherever cairn reads it.

use std::path::{Path, PathBuf};

/// `$HOME`, when it is set and not empty.
pub fn dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// `~` and `~/rest` with the home directory put in; any other path, and
/// every path when there is no home directory, unchanged. `~user` is not
/// expanded: that would need the password database, and nobody has asked.
pub fn expand(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    match (path.strip_prefix("~"), dir()) {
        (Ok(rest), Some(home)) if rest.as_os_str().is_empty() => home,
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_leading_tilde_is_expanded() {
        // The tests do not change HOME (other tests run in parallel).
        if let Some(home) = dir() {
            assert_eq!(expand("~/a/b"), home.join("a/b"));
            assert_eq!(expand("~"), home);
        }
        assert_eq!(expand("/a/~/b"), PathBuf::from("/a/~/b"));
        assert_eq!(expand("~user/x"), PathBuf::from("~user/x"));
        assert_eq!(expand("rel/x"), PathBuf::from("rel/x"));
    }
}
