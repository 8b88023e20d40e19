//! The engine's error type.

use cairn_backends::{BackendError, ErrorKind};

use crate::format::crypto::CryptoError;
use crate::format::keys::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{replica}: {source}")]
    Backend {
        replica: String,
        #[source]
        source: BackendError,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{what}: {source}")]
    Crypto {
        what: String,
        #[source]
        source: CryptoError,
    },
    #[error("{0}")]
    Corrupt(String),
    /// A replica's `config` is malformed, out of range or fails its MAC.
    #[error("{replica}: config: {reason}")]
    BadConfig { replica: String, reason: String },
    #[error("no cairn repository at {0} (run `cairn init` first)")]
    NotARepository(String),
    #[error("a repository already exists at {0}")]
    AlreadyInitialized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("every replica failed: {0}")]
    AllReplicasFailed(String),
    #[error("interrupted")]
    Interrupted,
    /// What a backup read from failed (a dump command exited non-zero or
    /// was killed, a database could not be copied).
    #[error("{0}")]
    Source(String),
    /// Another process holds a conflicting lock.
    #[error("{0}")]
    Locked(String),
}

impl Error {
    pub fn backend(replica: &str, source: BackendError) -> Error {
        Error::Backend {
            replica: replica.to_string(),
            source,
        }
    }

    /// Nothing at `replica`, as `err` (a NotFound) says; when the bucket or
    /// container itself is missing, the message says so.
    pub fn not_a_repository(replica: &str, err: &BackendError) -> Error {
        const GONE: &str = "does not exist";
        let msg = err.message();
        // `… bucket "NAME" does not exist` (or `bucket/container "NAME"`):
        // from the word before the quoted name to the end of the phrase.
        let phrase = msg.find(GONE).and_then(|end| {
            let quote = msg[..end].trim_end().strip_suffix('"')?.rfind('"')?;
            let word = msg[..quote].trim_end().rfind(' ').map_or(0, |i| i + 1);
            Some(&msg[word..end + GONE.len()])
        });
        match phrase {
            Some(p) => Error::NotARepository(format!("{replica}: {p}")),
            None => Error::NotARepository(replica.to_string()),
        }
    }

    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }

    /// Whether this says the stored data itself is damaged or gone (as
    /// opposed to a replica that could not be asked): corrupt or
    /// unauthenticated content, or an object that is not there.
    pub fn is_damage(&self) -> bool {
        match self {
            Error::Corrupt(_) | Error::Crypto { .. } | Error::BadConfig { .. } => true,
            Error::Backend { source, .. } => source.kind() == ErrorKind::NotFound,
            _ => false,
        }
    }

    /// The backend error kind, if this came from a backend.
    pub fn backend_kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Backend { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its causes, `outer: cause: root cause`, so a user sees
/// e.g. "Not a directory" and not only what cairn was doing. Causes come
/// from the backends, whose messages never carry credentials.
pub fn chain(err: &dyn std::error::Error) -> String {
    chain_of(std::iter::successors(Some(err), |e| e.source()))
}

/// [`chain`] over errors given outermost first (e.g. `anyhow::Error::chain`).
/// A cause whose text is already part of what was printed is left out:
/// several errors repeat their cause in their own message, and printing it
/// again would show every backend error two or three times.
pub fn chain_of<'a>(errs: impl IntoIterator<Item = &'a dyn std::error::Error>) -> String {
    let mut out = String::new();
    for e in errs {
        let text = e.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bucket_is_named() {
        let e = |m: &str| {
            Error::not_a_repository("s3://b/p", &BackendError::new(ErrorKind::NotFound, m))
                .to_string()
        };
        assert_eq!(
            e("get config (s3://b/p at http://x): bucket/container \"nobucket\" does not exist"),
            "no cairn repository at s3://b/p: bucket/container \"nobucket\" does not exist \
             (run `cairn init` first)"
        );
        assert_eq!(
            e("get config: HTTP 404: bucket \"b\" does not exist (gs://b/p)"),
            "no cairn repository at s3://b/p: bucket \"b\" does not exist (run `cairn init` first)"
        );
        assert_eq!(
            e("get config: HTTP 404 NoSuchKey"),
            "no cairn repository at s3://b/p (run `cairn init` first)"
        );
    }
}
