//! Downloads: `GET /snapshots/{id}/file` (one file, streamed chunk by
//! chunk, with single byte ranges) and `GET /snapshots/{id}/archive` (a
//! directory as tar or zip, streamed). Bytes are read through the snapshot
//! browser, each chunk from the first replica with a good copy; only the
//! chunks a range covers are read.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use super::archive::{self, Entry, EntryKind, Format};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::snapshots::{find, PathQuery};
use super::SharedApi;
use crate::config::api::Role;
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind};
use crate::ops::browse::Found;
use crate::repo::SnapshotEntry;

/// A `Range` header's one range, resolved against `size`: `Ok(None)` for
/// the whole file (no header, or one this server does not serve as a
/// range, such as several ranges), `Err` when unsatisfiable.
pub fn range(value: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = value else { return Ok(None) };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            let e: u64 = b.parse().map_err(|_| ())?;
            if e < start {
                return Err(());
            }
            e.min(size.saturating_sub(1))
        };
        (start, end)
    };
    if size == 0 || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn file_node(found: Found, path: &str) -> ApiResult<Node> {
    match found {
        Found::Entry(n) if n.kind == NodeKind::File => Ok(n),
        Found::Entry(n) if n.kind == NodeKind::Dir => Err(ApiError::bad_request(format!(
            "{path}: is a directory: download it with /archive"
        ))),
        Found::Root { .. } => Err(ApiError::bad_request(
            "/: is a directory: download it with /archive",
        )),
        Found::Entry(_) => Err(ApiError::bad_request(format!("{path}: not a regular file"))),
    }
}

/// `attachment; filename="…"`, with anything unsafe in the name replaced.
fn disposition(name: &str) -> HeaderValue {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    HeaderValue::from_str(&format!("attachment; filename=\"{clean}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The bytes `from..=to` of `node`, chunk by chunk.
async fn stream_file(
    api: SharedApi,
    node: Node,
    from: u64,
    to: u64,
) -> ApiResult<impl futures::Stream<Item = Result<Bytes, crate::Error>>> {
    let sizes = api.browser().chunk_sizes(&node).await?;
    let mut pieces = Vec::new();
    let mut at = 0u64;
    for (id, size) in node.content.iter().zip(sizes) {
        let (start, stop) = (at, at + size);
        at = stop;
        if stop <= from || start > to {
            continue;
        }
        let lo = from.saturating_sub(start) as usize;
        let hi = (to + 1).min(stop) - start;
        pieces.push((*id, lo, hi as usize));
    }
    let node = Arc::new(node);
    Ok(futures::stream::iter(pieces).then(move |(id, lo, hi)| {
        let (api, _node) = (api.clone(), node.clone());
        async move {
            let data = api.browser().chunk(&id).await?;
            let hi = hi.min(data.len());
            Ok(Bytes::from(data).slice(lo.min(hi)..hi))
        }
    }))
}

/// One file of a snapshot, streamed (`Range: bytes=` for a part of it).
#[utoipa::path(get, path = "/snapshots/{id}/file", tag = "snapshots",
    params(("id" = String, Path, description = "`latest`, an id or a unique prefix"), PathQuery,
           ("Range" = Option<String>, Header, description = "one range: `bytes=START-END`, `bytes=START-`, `bytes=-LAST`")),
    responses((status = 200, description = "the file's bytes", content_type = "application/octet-stream"),
              (status = 206, description = "the range asked for, with Content-Range"),
              (status = 400, description = "a bad path, or not a regular file"), (status = 404),
              (status = 416, description = "the range is outside the file")),
    security(("bearer" = [])))]
pub async fn file(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.at_least(Role::Viewer, "downloading a file")?;
    send_file(&api, &id, &q.raw()?, &headers).await
}

/// The regular file at `raw` in snapshot `id`, with the snapshot.
pub(super) async fn file_at(
    api: &SharedApi,
    id: &str,
    raw: &[u8],
) -> ApiResult<(SnapshotEntry, Node)> {
    let shown = crate::format::tree::escape_bytes(raw);
    let s = find(api, id).await?;
    let node = file_node(api.browser().find_raw(&s.snapshot, raw).await?, &shown)?;
    Ok((s, node))
}

/// What `/file` answers (also for a download ticket).
pub(super) async fn send_file(
    api: &SharedApi,
    id: &str,
    raw: &[u8],
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let shown = crate::format::tree::escape_bytes(raw);
    let (_, node) = file_at(api, id, raw).await?;
    let size = node.size;
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let part = match range(asked, size) {
        Ok(p) => p,
        Err(()) => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("{shown}: the range is outside the file ({size} bytes)"),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return Ok(r);
        }
    };
    let name = String::from_utf8_lossy(&node.name.0).into_owned();
    let (status, from, to) = match part {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
        None => (StatusCode::OK, 0, size.saturating_sub(1)),
    };
    let len = if size == 0 { 0 } else { to - from + 1 };
    let body = if size == 0 {
        Body::empty()
    } else {
        Body::from_stream(stream_file(api.clone(), node, from, to).await?)
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_DISPOSITION, disposition(&name));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {from}-{to}/{size}")).expect("ascii"),
        );
    }
    Ok(r)
}

/// A directory and the archive format.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ArchiveQuery {
    /// The directory (default `/`), as for `/tree`.
    pub path: Option<String>,
    /// The directory's path in hex, for a name that is not UTF-8 (as a
    /// listing's `path_hex` gives it); instead of `path`.
    pub path_hex: Option<String>,
    /// `tar` (default) or `zip`.
    pub format: Option<Format>,
}

/// The entries of a directory's subtree for an archive, depth first, one
/// directory's listing at a time: what is held is the listing being sent
/// and the directories still to visit, never the whole subtree, so an
/// archive of millions of files is sent in bounded memory. Paths are
/// relative to the archive's root and keep the snapshot's bytes. Devices,
/// fifos and sockets are left out; trees are read, file contents are not.
struct Walk {
    listing: std::collections::VecDeque<(Entry, Option<Node>)>,
    dirs: Vec<(Vec<Id>, Vec<u8>)>,
}

impl Walk {
    /// The walk of `subtree`, its entries under `prefix` (empty: at the
    /// archive's root), after `first` (the directory's own entry).
    fn new(subtree: Vec<Id>, prefix: Vec<u8>, first: Option<Entry>) -> Walk {
        Walk {
            listing: first.map(|e| (e, None)).into_iter().collect(),
            dirs: vec![(subtree, prefix)],
        }
    }

    /// The next entry (with its node when it is a file), None at the end.
    async fn next(&mut self, api: &SharedApi) -> ApiResult<Option<(Entry, Option<Node>)>> {
        loop {
            if let Some(e) = self.listing.pop_front() {
                return Ok(Some(e));
            }
            let Some((ids, dir)) = self.dirs.pop() else {
                return Ok(None);
            };
            let tree = api.browser().tree(&ids).await?;
            let mut nodes: Vec<&Node> = tree.nodes.iter().collect();
            nodes.sort_by(|a, b| a.name.0.cmp(&b.name.0));
            let mut subdirs = Vec::new();
            for n in nodes {
                let mut path = dir.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(&n.name.0);
                let kind = match n.kind {
                    NodeKind::Dir => EntryKind::Dir,
                    NodeKind::File => EntryKind::File,
                    NodeKind::Symlink => EntryKind::Symlink(
                        n.target.as_ref().map(|t| t.0.clone()).unwrap_or_default(),
                    ),
                    _ => continue,
                };
                let entry = Entry {
                    path,
                    size: if kind == EntryKind::File { n.size } else { 0 },
                    kind,
                    mode: n.mode,
                    mtime: n.mtime.div_euclid(1_000_000_000),
                    uid: n.uid,
                    gid: n.gid,
                };
                if entry.kind == EntryKind::Dir {
                    subdirs.push((n.subtree.clone(), entry.path.clone()));
                }
                let node = (entry.kind == EntryKind::File).then(|| n.clone());
                self.listing.push_back((entry, node));
            }
            self.dirs.extend(subdirs.into_iter().rev());
        }
    }
}

/// A directory of a snapshot as one tar or zip archive, streamed.
#[utoipa::path(get, path = "/snapshots/{id}/archive", tag = "snapshots",
    params(("id" = String, Path, description = "`latest`, an id or a unique prefix"), ArchiveQuery),
    responses((status = 200, description = "the archive", content_type = "application/x-tar"),
              (status = 400, description = "a bad path, not a directory, or too large for zip"), (status = 404)),
    security(("bearer" = [])))]
pub async fn archive(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> ApiResult<Response> {
    caller.at_least(Role::Viewer, "downloading an archive")?;
    let raw = PathQuery {
        path: q.path.clone(),
        path_hex: q.path_hex.clone(),
    }
    .raw()?;
    let format = q.format.unwrap_or(Format::Tar);
    let source = ArchiveSource::find(&api, &id, &raw, format).await?;
    Ok(send_archive(&api, source, format))
}

/// A directory of a snapshot, checked for an archive: it is one, and a
/// zip of it can be made. A download ticket keeps it, so its download
/// neither finds nor counts the directory again.
#[derive(Clone, Debug)]
pub(super) struct ArchiveSource {
    snapshot: SnapshotEntry,
    subtree: Vec<Id>,
    /// The directory's name, the archive's top directory (None: `/`).
    root: Option<Vec<u8>>,
    first: Option<Entry>,
}

impl ArchiveSource {
    /// The directory at `raw` in snapshot `id`, to archive as `format`.
    pub(super) async fn find(
        api: &SharedApi,
        id: &str,
        raw: &[u8],
        format: Format,
    ) -> ApiResult<ArchiveSource> {
        let shown = crate::format::tree::escape_bytes(raw);
        let s = find(api, id).await?;
        let found = api.browser().find_raw(&s.snapshot, raw).await?;
        let Some(subtree) = found.subtree().map(<[_]>::to_vec) else {
            return Err(ApiError::bad_request(format!(
                "{shown}: not a directory: download it with /file"
            )));
        };
        let root: Option<Vec<u8>> = crate::ops::browse::components_raw(raw)?
            .last()
            .map(|s| s.to_vec());
        let first = match (&root, &found) {
            (Some(root), Found::Entry(n)) => Some(Entry {
                path: root.clone(),
                kind: EntryKind::Dir,
                mode: n.mode,
                size: 0,
                mtime: n.mtime.div_euclid(1_000_000_000),
                uid: n.uid,
                gid: n.gid,
            }),
            _ => None,
        };
        let source = ArchiveSource {
            snapshot: s,
            subtree,
            root,
            first,
        };
        if format == Format::Zip {
            // Counted before the first byte: a zip cannot describe more,
            // and a refusal must be an answer, not a cut download. Trees
            // only; the browser's cache keeps the second walk cheap.
            let mut totals = archive::ZipTotals::default();
            let mut w = source.walk();
            while let Some((e, _)) = w.next(api).await? {
                totals.add(&e);
                if let Some(why) = totals.refusal() {
                    return Err(ApiError::bad_request(format!("{shown}: {why}")));
                }
            }
        }
        Ok(source)
    }

    fn walk(&self) -> Walk {
        Walk::new(
            self.subtree.clone(),
            self.root.clone().unwrap_or_default(),
            self.first.clone(),
        )
    }
}

/// What `/archive` answers for `source` (also for a download ticket):
/// the archive, streamed as it is walked.
pub(super) fn send_archive(api: &SharedApi, source: ArchiveSource, format: Format) -> Response {
    let mut entries = source.walk();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let writer_api = api.clone();
    tokio::spawn(async move {
        let mut w = archive::Writer::new(format);
        loop {
            let (entry, node) = match entries.next(&writer_api).await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    // The client sees a cut archive, not a wrong one.
                    tracing::warn!("archive: {}", e.message);
                    let _ = tx.send(Err(std::io::Error::other(e.message))).await;
                    return;
                }
            };
            let size = entry.size;
            if tx.send(Ok(w.begin(entry).into())).await.is_err() {
                return;
            }
            if let Some(node) = node.filter(|_| size > 0) {
                let chunks = match stream_file(writer_api.clone(), node, 0, size - 1).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.message))).await;
                        return;
                    }
                };
                futures::pin_mut!(chunks);
                while let Some(c) = chunks.next().await {
                    let c = match c {
                        Ok(c) => c,
                        Err(e) => {
                            // The client sees a cut archive, not a wrong one.
                            tracing::warn!("archive: {}", crate::error::chain(&e));
                            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                            return;
                        }
                    };
                    if tx.send(Ok(w.data(&c).into())).await.is_err() {
                        return;
                    }
                }
            }
            if tx.send(Ok(w.end().into())).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(w.finish().into())).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let name = format!(
        "{}-{}.{}",
        source
            .root
            .as_deref()
            .map_or("snapshot".into(), String::from_utf8_lossy),
        source.snapshot.id.short(),
        format.extension()
    );
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(header::CONTENT_DISPOSITION, disposition(&name));
    r
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn ranges_are_resolved_or_refused() {
        assert_eq!(range(None, 10), Ok(None));
        assert_eq!(range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(range(Some("bytes=-30"), 10), Ok(Some((0, 9))));
        assert_eq!(range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(range(Some("items=0-1"), 10), Ok(None));
        assert_eq!(range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(range(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(range(Some("bytes=x-2"), 10), Err(()));
        assert_eq!(range(Some("bytes=-0"), 10), Err(()));
        assert_eq!(range(Some("bytes=0-"), 0), Err(()));
    }
}
