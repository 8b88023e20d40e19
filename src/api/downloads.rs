//! One-time download tickets. `POST /downloads` (any token) names a file,
//! or a directory as a tar or zip archive, of a snapshot and gets back a
//! URL that works once, within [`TTL`], without a token:
//! `GET /downloads/{ticket}`.
//!
//! A browser that follows a link cannot send an `Authorization` header, so
//! without a ticket the web dashboard had to fetch a download into the
//! page's memory before saving it; with one, the browser streams it to
//! disk however large it is. What a ticket may carry is bounded: it is
//! 32 random bytes, held in memory only (a restart forgets every ticket),
//! taken out by its first use, and it pins the snapshot (`latest` is
//! resolved when the ticket is made). Everything the download route would
//! refuse (a path that is not there, a directory asked as a file, a zip
//! too large) is refused when the ticket is asked for, as a JSON error
//! the page can show. A HEAD is refused without using the ticket up. A
//! ticket does not appear in the server's log; like
//! any URL it may appear in a proxy's, where it is of no use once used
//! or a minute old.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::archive::Format;
use super::auth::{Caller, ClientAddr};
use super::body::Body;
use super::error::{ApiError, ApiResult};
use super::files::{file_at, send_archive, send_file, ArchiveSource};
use super::snapshots::PathQuery;
use super::SharedApi;
use crate::config::api::Role;

/// How long a ticket works after it is made.
pub const TTL: Duration = Duration::from_secs(60);

/// The most tickets outstanding at once; past it a new one is refused
/// (429) until some are used or expire.
pub const MAX_TICKETS: usize = 256;

/// What a ticket downloads.
#[derive(Clone, Debug)]
enum What {
    /// The file at `raw` in the snapshot of that full id (found again when
    /// it is downloaded: a node may list many chunk ids, which 256 tickets
    /// should not hold).
    File { snapshot: String, raw: Vec<u8> },
    /// A directory, found and (for a zip) counted when the ticket was made.
    Archive(Box<ArchiveSource>, Format),
}

#[derive(Clone, Debug)]
struct Ticket {
    what: What,
    expires: Instant,
}

/// The tickets outstanding.
#[derive(Default)]
pub struct Tickets {
    map: Mutex<HashMap<String, Ticket>>,
}

impl Tickets {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ticket>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new ticket for `t`, or None when [`MAX_TICKETS`] are outstanding.
    fn issue(&self, t: Ticket, now: Instant) -> Option<String> {
        let mut map = self.map();
        map.retain(|_, t| t.expires > now);
        if map.len() >= MAX_TICKETS {
            return None;
        }
        let name = crate::format::id::Id::random().to_string();
        map.insert(name.clone(), t);
        Some(name)
    }

    /// The ticket `name`, taken out: None when it is unknown, used or
    /// expired.
    fn take(&self, name: &str, now: Instant) -> Option<Ticket> {
        self.map().remove(name).filter(|t| t.expires > now)
    }
}

/// What to download.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadRequest {
    /// `latest`, an id or a unique prefix; the ticket keeps the id it names
    /// now.
    pub snapshot: String,
    /// The path in the snapshot (default `/`), as for `/tree`.
    pub path: Option<String>,
    /// The path's bytes in hex, for a name that is not UTF-8; instead of
    /// `path`.
    pub path_hex: Option<String>,
    /// `tar` or `zip` for a directory as an archive; absent for a file.
    pub format: Option<Format>,
}

/// A ticket: GET `url` once, within `expires_in_seconds`, without a token.
#[derive(Debug, Serialize, ToSchema)]
pub struct DownloadTicket {
    /// `/api/v1/downloads/{ticket}`.
    pub url: String,
    pub expires_in_seconds: u64,
}

/// Ask for a one-time download URL (for a browser, which cannot send a
/// token when it follows a link).
#[utoipa::path(post, path = "/downloads", tag = "snapshots", request_body = DownloadRequest,
    responses((status = 201, body = DownloadTicket),
              (status = 400, description = "a bad path, a directory asked as a file or the reverse, too large for zip"),
              (status = 404), (status = 429, description = "too many tickets outstanding")),
    security(("bearer" = [])))]
pub async fn issue(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<DownloadRequest>,
) -> ApiResult<(StatusCode, Json<DownloadTicket>)> {
    caller.at_least(Role::Viewer, "downloading")?;
    let raw = PathQuery {
        path: req.path,
        path_hex: req.path_hex,
    }
    .raw()?;
    let what = match req.format {
        None => What::File {
            snapshot: file_at(&api, &req.snapshot, &raw).await?.0.id.to_string(),
            raw,
        },
        Some(f) => What::Archive(
            Box::new(ArchiveSource::find(&api, &req.snapshot, &raw, f).await?),
            f,
        ),
    };
    let now = Instant::now();
    let ticket = Ticket {
        what,
        expires: now + TTL,
    };
    let name = api.downloads.issue(ticket, now).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{MAX_TICKETS} download tickets are outstanding: use or let some expire ({} s)",
                TTL.as_secs()
            ),
        )
    })?;
    Ok((
        StatusCode::CREATED,
        Json(DownloadTicket {
            url: format!("/api/v1/downloads/{name}"),
            expires_in_seconds: TTL.as_secs(),
        }),
    ))
}

/// Download with a ticket from `POST /downloads`: once, no token. A
/// `Range` header is honoured for a file; a HEAD is refused (405) and
/// leaves the ticket as it was.
#[utoipa::path(get, path = "/downloads/{ticket}", tag = "snapshots",
    params(("ticket" = String, Path, description = "from `POST /downloads`")),
    responses((status = 200, description = "the file or the archive", content_type = "application/octet-stream"),
              (status = 206, description = "a range of the file"),
              (status = 404, description = "no such ticket: unknown, used or expired"),
              (status = 405, description = "a HEAD: refused, the ticket kept"),
              (status = 429, description = "too many failed attempts from this address")),
    security(()))]
pub async fn fetch(
    State(api): State<SharedApi>,
    ConnectInfo(addr): ConnectInfo<ClientAddr>,
    method: Method,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // A HEAD (a download manager's probe, a link preview) would use the
    // ticket up without a byte sent: refused, the ticket kept.
    if method == Method::HEAD {
        let mut r = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "a download ticket is for one GET",
        )
        .into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return Ok(r);
    }
    let ip: IpAddr = addr.0.ip();
    let now = Instant::now();
    // Guessing is counted as a wrong token is: 32 random bytes cannot be
    // found, but nobody gets to try for long.
    if let Some(refused) = api.auth.refuse_if_blocked(ip, now) {
        return Ok(refused);
    }
    let Some(t) = api.downloads.take(&name, now) else {
        api.auth.failed(ip, now);
        tracing::warn!(client = %ip, "API: refused a download: no such ticket");
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such download ticket: it is unknown, was used, or expired: ask for a new one",
        ));
    };
    match t.what {
        What::File { snapshot, raw } => send_file(&api, &snapshot, &raw, &headers).await,
        What::Archive(source, f) => Ok(send_archive(&api, *source, f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(expires: Instant) -> Ticket {
        Ticket {
            what: What::File {
                snapshot: "ab".into(),
                raw: b"/x".to_vec(),
            },
            expires,
        }
    }

    #[test]
    fn a_ticket_works_once_and_not_after_it_expires() {
        let t = Tickets::default();
        let now = Instant::now();
        let a = t.issue(ticket(now + TTL), now).unwrap();
        let b = t.issue(ticket(now + TTL), now).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64, "32 random bytes in hex");
        assert!(matches!(t.take(&a, now).unwrap().what, What::File { raw, .. } if raw == b"/x"));
        assert!(t.take(&a, now).is_none(), "used");
        assert!(t.take(&b, now + TTL).is_none(), "expired");
        assert!(t.take("", now).is_none());
    }

    #[test]
    fn tickets_outstanding_are_bounded_and_expired_ones_make_room() {
        let t = Tickets::default();
        let now = Instant::now();
        for _ in 0..MAX_TICKETS {
            t.issue(ticket(now + TTL), now).unwrap();
        }
        assert!(t.issue(ticket(now + TTL), now).is_none());
        let later = now + TTL;
        assert!(t.issue(ticket(later + TTL), later).is_some());
        assert_eq!(t.map().len(), 1);
    }
}
