//! Small helpers for the requests cairn sends with `reqwest` itself: every
//! GCS call, and the bucket / container creation of S3 and Azure (which
//! `object_store` does not offer).

use crate::{BackendError, ErrorKind};

/// The [`ErrorKind`] of a request that got no HTTP answer.
pub(crate) fn transport_kind(err: &reqwest::Error) -> ErrorKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            if matches!(
                io.kind(),
                Io::ConnectionRefused
                    | Io::HostUnreachable
                    | Io::NetworkUnreachable
                    | Io::AddrNotAvailable
            ) {
                return ErrorKind::Unreachable;
            }
        }
        source = e.source();
    }
    if err.is_timeout() {
        ErrorKind::Transient
    } else if err.is_connect() {
        // A certificate problem will not go away on retry.
        if format!("{err:?}").contains("certificate") {
            ErrorKind::Other
        } else {
            ErrorKind::Unreachable
        }
    } else if err.is_request() || err.is_body() || err.is_decode() {
        ErrorKind::Transient
    } else {
        ErrorKind::Other
    }
}

/// A [`BackendError`] for a request that got no HTTP answer; `what` names
/// the operation and the backend. The innermost cause ("Connection refused
/// (os error 111)") says most, so that is what the message shows.
pub(crate) fn transport_error(what: &str, err: reqwest::Error) -> BackendError {
    let kind = transport_kind(&err);
    let mut cause = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        cause = e.to_string();
        source = e.source();
    }
    BackendError::with_source(kind, format!("{what}: {cause}"), err)
}

/// The [`ErrorKind`] of an HTTP error status, the same for every service.
pub(crate) fn status_kind(status: u16) -> ErrorKind {
    match status {
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        409 | 412 => ErrorKind::AlreadyExists,
        416 => ErrorKind::InvalidRange,
        507 => ErrorKind::StorageFull,
        408 | 429 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// `text` cut to at most 300 bytes (on a character boundary), for messages.
pub(crate) fn shorten(mut text: String) -> String {
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
