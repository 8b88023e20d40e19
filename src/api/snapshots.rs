//! `GET /snapshots`, `GET /snapshots/{id}` and `GET /snapshots/{id}/tree`:
//! what the repository holds, which replicas hold each snapshot, and the
//! entries of a directory in one, read through the snapshot browser.

use axum::extract::{Extension, Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::SharedApi;
use crate::config::api::Role;
use crate::format::tree::{Node, NodeKind};
use crate::repo::{ReplicaSet, Repository, SnapshotEntry};

/// One snapshot, and where it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotInfo {
    /// The full id (hex).
    pub id: String,
    pub short_id: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    pub host: String,
    pub username: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// Some entries could not be read when it was taken.
    pub partial: bool,
    /// The replicas that hold it.
    pub replicas: Vec<String>,
    /// The replicas that do not.
    pub missing: Vec<String>,
    /// Counts and sizes of the backup that made it (as `cairn snapshots --json`).
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
}

impl SnapshotInfo {
    pub fn new(repo: &Repository, s: &SnapshotEntry) -> SnapshotInfo {
        let names = |set: ReplicaSet| -> Vec<String> {
            set.iter().map(|i| repo.replica(i).name.clone()).collect()
        };
        SnapshotInfo {
            id: s.id.to_hex(),
            short_id: s.id.short(),
            time: s.snapshot.time.to_string(),
            host: s.snapshot.host.clone(),
            username: s.snapshot.username.clone(),
            paths: s.snapshot.paths.clone(),
            tags: s.snapshot.tags.clone(),
            partial: s.snapshot.partial,
            replicas: names(s.replicas),
            missing: names(repo.all().difference(s.replicas)),
            summary: serde_json::to_value(&s.snapshot.summary).unwrap_or_default(),
        }
    }
}

/// `latest`, a full id or a unique prefix of one.
pub async fn find(api: &SharedApi, spec: &str) -> ApiResult<SnapshotEntry> {
    let ok = spec == "latest"
        || (!spec.is_empty() && spec.len() <= 64 && spec.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(ApiError::bad_request(format!(
            "snapshot {spec:?}: give `latest`, an id or a prefix of one (hex)"
        )));
    }
    let snaps = api.browser().snapshots().await?;
    Ok(Repository::find_snapshot(&snaps, spec)?.clone())
}

/// The snapshots, oldest first, with the replicas that hold each.
#[utoipa::path(get, path = "/snapshots", tag = "snapshots",
    responses((status = 200, body = [SnapshotInfo]), (status = 401), (status = 429)),
    security(("bearer" = [])))]
pub async fn list(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<SnapshotInfo>>> {
    caller.at_least(Role::Viewer, "listing snapshots")?;
    let browser = api.browser();
    let repo = browser.repo();
    let snaps = browser.snapshots().await?;
    Ok(Json(
        snaps.iter().map(|s| SnapshotInfo::new(repo, s)).collect(),
    ))
}

/// One snapshot: `latest`, an id or a unique prefix.
#[utoipa::path(get, path = "/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "`latest`, an id or a unique prefix")),
    responses((status = 200, body = SnapshotInfo), (status = 400), (status = 404)),
    security(("bearer" = [])))]
pub async fn get(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<SnapshotInfo>> {
    caller.at_least(Role::Viewer, "reading a snapshot")?;
    let s = find(&api, &id).await?;
    Ok(Json(SnapshotInfo::new(&api.browser().repo().clone(), &s)))
}

/// A path in a snapshot, as `ls` shows it.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PathQuery {
    /// Absolute, `/`-separated; no empty, `.` or `..` components. Default `/`.
    pub path: Option<String>,
    /// The path's bytes in hex, for a name that is not UTF-8 (as a listing's
    /// `path_hex` gives it); instead of `path`.
    pub path_hex: Option<String>,
}

/// The longest `path_hex` accepted (a path of 32 KiB).
const MAX_PATH_HEX: usize = 64 * 1024;

impl PathQuery {
    /// The path's bytes, checked: 400 for both `path` and `path_hex`, bad
    /// hex, or a path [`crate::ops::browse::components_raw`] refuses.
    pub fn raw(&self) -> ApiResult<Vec<u8>> {
        let raw = match (&self.path, &self.path_hex) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("give path or path_hex, not both"))
            }
            (_, Some(h)) if h.len() > MAX_PATH_HEX => {
                return Err(ApiError::bad_request("path_hex: too long"))
            }
            (_, Some(h)) => crate::format::id::hex_decode(h)
                .ok_or_else(|| ApiError::bad_request("path_hex: not hex"))?,
            (p, None) => p.as_deref().unwrap_or("/").as_bytes().to_vec(),
        };
        crate::ops::browse::components_raw(&raw)?;
        Ok(raw)
    }
}

/// One entry of a directory.
#[derive(Debug, Serialize, ToSchema)]
pub struct TreeEntry {
    /// Its name (invalid UTF-8 replaced).
    pub name: String,
    /// Its path, to pass as `path=` (absent when it is not UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its path's bytes in hex, to pass as `path_hex=`, when it is not
    /// UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// `file`, `dir`, `symlink`, `fifo`, `chardev`, `blockdev` or `socket`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    /// Permission bits and file type, as in `st_mode`.
    pub mode: u32,
    /// Last modification (RFC 3339).
    pub mtime: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

pub fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::Chardev => "chardev",
        NodeKind::Blockdev => "blockdev",
        NodeKind::Socket => "socket",
    }
}

pub fn mtime(n: &Node) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(i128::from(n.mtime)).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn entry(dir: &[u8], n: &Node) -> TreeEntry {
    let end = dir.iter().rposition(|b| *b != b'/').map_or(0, |i| i + 1);
    let mut full = dir[..end].to_vec();
    full.push(b'/');
    full.extend_from_slice(&n.name.0);
    let (path, path_hex) = match String::from_utf8(full) {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(crate::format::id::hex_encode(e.as_bytes()))),
    };
    TreeEntry {
        name: String::from_utf8_lossy(&n.name.0).into_owned(),
        path,
        path_hex,
        kind: kind_name(n.kind).into(),
        size: n.size,
        mode: n.mode,
        mtime: mtime(n).to_string(),
        uid: n.uid,
        gid: n.gid,
        user: n.user.clone(),
        target: n
            .target
            .as_ref()
            .map(|t| String::from_utf8_lossy(&t.0).into_owned()),
    }
}

/// The listing of a directory.
#[derive(Debug, Serialize, ToSchema)]
pub struct Listing {
    pub snapshot: String,
    pub path: String,
    pub entries: Vec<TreeEntry>,
}

/// The entries of the directory `path` in a snapshot, sorted by name.
#[utoipa::path(get, path = "/snapshots/{id}/tree", tag = "snapshots",
    params(("id" = String, Path, description = "`latest`, an id or a unique prefix"), PathQuery),
    responses((status = 200, body = Listing), (status = 400, description = "a bad path, or not a directory"), (status = 404)),
    security(("bearer" = [])))]
pub async fn tree(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<Listing>> {
    caller.at_least(Role::Viewer, "browsing a snapshot")?;
    let raw = q.raw()?;
    let s = find(&api, &id).await?;
    let nodes = api.browser().list_raw(&s.snapshot, &raw).await?;
    Ok(Json(Listing {
        snapshot: s.id.to_hex(),
        path: crate::format::tree::escape_bytes(&raw),
        entries: nodes.iter().map(|n| entry(&raw, n)).collect(),
    }))
}
