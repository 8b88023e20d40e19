//! Object names and kinds, and the one mapping from them to paths.

use std::fmt;

/// The kinds of object in a repository; each has its own directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The public repository config (one object, name ignored).
    Config,
    /// Key slots: the keyring wrapped by one credential each.
    Key,
    /// Encrypted snapshot manifests.
    Snapshot,
    /// Encrypted index files.
    Index,
    /// Encrypted packs, fanned out into 256 sub-directories.
    Pack,
    /// Lock objects.
    Lock,
    /// Bookkeeping of one replica's garbage collection: the packs `prune`
    /// found unreferenced, with when (one object, `markers/prune`).
    Marker,
    /// The key-management audit trail: one sealed, hash-chained entry per
    /// object, named by its sequence number.
    Audit,
    /// Keyring generations: the keyring sealed to the key slots' public
    /// keys, one object per generation, named by its number.
    Keyring,
}

impl Kind {
    /// Every kind, in the order a repository is laid out.
    pub const ALL: [Kind; 9] = [
        Kind::Config,
        Kind::Key,
        Kind::Snapshot,
        Kind::Index,
        Kind::Pack,
        Kind::Lock,
        Kind::Marker,
        Kind::Audit,
        Kind::Keyring,
    ];

    /// The directory holding objects of this kind (`""` for config).
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Config => "",
            Kind::Key => "keys",
            Kind::Snapshot => "snapshots",
            Kind::Index => "index",
            Kind::Pack => "data",
            Kind::Lock => "locks",
            Kind::Marker => "markers",
            Kind::Audit => "audit",
            Kind::Keyring => "keyring",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Config => "config",
            Kind::Key => "key",
            Kind::Snapshot => "snapshot",
            Kind::Index => "index",
            Kind::Pack => "pack",
            Kind::Lock => "lock",
            Kind::Marker => "marker",
            Kind::Audit => "audit",
            Kind::Keyring => "keyring",
        })
    }
}

/// The address of one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle {
    pub kind: Kind,
    pub name: String,
}

impl Handle {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Handle {
            kind,
            name: name.into(),
        }
    }

    /// The repository config.
    pub fn config() -> Self {
        Handle::new(Kind::Config, "config")
    }

    /// Whether `name` is acceptable for this kind: non-empty, ASCII letters,
    /// digits, `-`, `_` and `.`, not starting with `.` (backends use leading
    /// dots for temporary files), at most 128 bytes. Packs need at least two
    /// characters for their sub-directory.
    pub fn is_valid_name(kind: Kind, name: &str) -> bool {
        let ok_chars = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        match kind {
            Kind::Config => name == "config",
            Kind::Pack => ok_chars && name.len() >= 2,
            _ => ok_chars,
        }
    }

    /// The path of this object relative to the repository root, with `/`
    /// separators: `config`, `keys/<n>`, `data/<first two chars>/<n>`, …
    pub fn path(&self) -> String {
        match self.kind {
            Kind::Config => "config".to_string(),
            // `get` rather than slicing: an invalid (non-ASCII) name must not
            // panic while being displayed in an error message.
            Kind::Pack => format!("data/{}/{}", self.name.get(..2).unwrap_or("__"), self.name),
            k => format!("{}/{}", k.dir(), self.name),
        }
    }

    /// The inverse of [`Handle::path`], for listings: `None` for anything that
    /// is not a valid object path of `kind` (temporary files, strays).
    pub fn from_path(kind: Kind, path: &str) -> Option<Handle> {
        let name = match kind {
            Kind::Config => (path == "config").then_some("config")?,
            Kind::Pack => {
                let rest = path.strip_prefix("data/")?;
                let (sub, name) = rest.split_once('/')?;
                if sub.len() != 2 || !name.starts_with(sub) {
                    return None;
                }
                name
            }
            k => path.strip_prefix(k.dir())?.strip_prefix('/')?,
        };
        Handle::is_valid_name(kind, name).then(|| Handle::new(kind, name))
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        for kind in Kind::ALL {
            let name = if kind == Kind::Config {
                "config"
            } else {
                "ab12cd"
            };
            let h = Handle::new(kind, name);
            assert_eq!(Handle::from_path(kind, &h.path()), Some(h));
        }
        assert_eq!(Handle::new(Kind::Pack, "abcd").path(), "data/ab/abcd");
        assert_eq!(Handle::from_path(Kind::Pack, "data/ab/.tmp-abcd"), None);
        assert_eq!(Handle::from_path(Kind::Pack, "data/ab/cdef"), None);
        assert_eq!(Handle::from_path(Kind::Index, "index/x/y"), None);
    }
}
