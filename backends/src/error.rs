//! The one error type of the storage layer.
//!
//! Each implementation maps its own failures onto an [`ErrorKind`]; the
//! engine and the decorators act on the kind (retry only what is transient,
//! report "unauthenticated" without retrying, …). Messages name the object
//! and the backend but never a credential.

use std::fmt;

/// What went wrong, as far as a caller needs to know to react.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object (or the container) does not exist.
    NotFound,
    /// A create-only put found the object already there.
    AlreadyExists,
    /// A ranged read started past the end of the object.
    InvalidRange,
    /// The credentials were accepted but do not allow this.
    PermissionDenied,
    /// The credentials were rejected, or none were found.
    Unauthenticated,
    /// The backend cannot do this at all.
    Unsupported,
    /// No space left on the device or quota exceeded.
    StorageFull,
    /// A failure that may go away when retried (timeouts, 5xx, resets).
    Transient,
    /// The backend could not be reached at all (DNS, refused connection).
    Unreachable,
    /// The backend answered something that violates its protocol, or the
    /// object read back is not what was stored (short read, bad length).
    Corrupt,
    /// Anything else; permanent.
    Other,
}

impl ErrorKind {
    /// Whether retrying the same request can help.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Unreachable)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidRange => "invalid range",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Unsupported => "not supported",
            ErrorKind::StorageFull => "storage full",
            ErrorKind::Transient => "transient failure",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Corrupt => "corrupt response",
            ErrorKind::Other => "error",
        })
    }
}

/// An error from a backend: a kind, a message naming what was being done,
/// and the underlying cause.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl BackendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        BackendError {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying can help (see [`ErrorKind::is_transient`]).
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// Map an I/O error of an operation on `what` onto a kind.
    pub fn from_io(what: impl fmt::Display, err: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::PermissionDenied => ErrorKind::PermissionDenied,
            Io::StorageFull | Io::QuotaExceeded => ErrorKind::StorageFull,
            Io::TimedOut
            | Io::Interrupted
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::BrokenPipe
            | Io::WouldBlock
            | Io::UnexpectedEof => ErrorKind::Transient,
            Io::ConnectionRefused
            | Io::HostUnreachable
            | Io::NetworkUnreachable
            | Io::AddrNotAvailable => ErrorKind::Unreachable,
            Io::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Other,
        };
        BackendError::with_source(kind, what.to_string(), err)
    }

    /// Prefix the message with the name of the backend, for reports that
    /// cover several backends.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;
