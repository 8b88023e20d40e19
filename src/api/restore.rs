//! `POST /restore`: a snapshot, or a path in it, restored into a
//! directory on the server under one of `[api] restore_roots` — into a new
//! or empty directory as `cairn restore` does, or over an existing one as
//! `cairn restore --in-place` does (safety snapshot, verification,
//! automatic rollback). Each runs as a task and is recorded in the run
//! history with the label of the token that asked.

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::body::Body;
use super::error::{ApiError, ApiResult};
use super::tasks::{Accepted, PROGRESS_EVERY};
use super::SharedApi;
use crate::config::api::Role;
use crate::jobs::{RunRecord, RunStatus, Trigger};
use crate::ops::restore::in_place::{restore_in_place, InPlaceOptions, InPlaceOutcome, Phase};
use crate::ops::restore::{restore_snapshot, RestoreOptions, RestoreProgress};

/// A restore to a directory on the server.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// `latest`, an id or a unique prefix.
    pub snapshot: String,
    /// A path in the snapshot (default: all of it).
    #[serde(default)]
    pub path: Option<String>,
    /// An absolute directory under one of `[api] restore_roots`.
    pub target: String,
    /// Re-read the restored files and check them (a plain restore; an
    /// in-place restore always verifies).
    #[serde(default)]
    pub verify: bool,
    /// Restore over `target`, an existing directory, as `cairn restore
    /// --in-place`: a `pre-restore` safety snapshot first, unchanged files
    /// left alone, the result verified, and an automatic rollback on any
    /// failure.
    #[serde(default)]
    pub in_place: bool,
    /// With `in_place`: remove what `target` has and the snapshot does not.
    #[serde(default)]
    pub delete: bool,
    /// With `in_place`: only list what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// `target` made canonical (through the part of it that exists), if it
/// is under a restore root: 400 if it is not an absolute plain path, 403
/// if it is outside every root.
pub fn restore_target(roots: &[PathBuf], target: &str) -> ApiResult<PathBuf> {
    let p = FsPath::new(target);
    if !p.is_absolute()
        || target.contains('\0')
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(ApiError::bad_request(format!(
            "target: {target:?} must be an absolute path without `.` or `..`"
        )));
    }
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut canonical = std::fs::canonicalize(&existing)
        .map_err(|e| ApiError::bad_request(format!("target: {}: {e}", existing.display())))?;
    for name in rest.into_iter().rev() {
        canonical.push(name);
    }
    if roots.iter().any(|r| canonical.starts_with(r)) {
        Ok(canonical)
    } else {
        Err(ApiError::forbidden(format!(
            "target: {} is outside the configured restore_roots{}",
            canonical.display(),
            if roots.is_empty() {
                " (none are configured: the API cannot restore)"
            } else {
                ""
            }
        )))
    }
}

/// Restore a snapshot, or a path in it, into a directory on the server;
/// with `"in_place": true`, over an existing directory, rolled back
/// automatically if anything fails.
#[utoipa::path(post, path = "/restore", tag = "operations", request_body = RestoreRequest,
    responses((status = 202, body = Accepted), (status = 400), (status = 403, description = "role too low, or the target is outside restore_roots"), (status = 404)),
    security(("bearer" = [])))]
pub async fn restore(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<RestoreRequest>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    caller.at_least(Role::Operator, "restoring")?;
    let target = restore_target(&api.live().restore_roots, &req.target)?;
    if let Some(p) = &req.path {
        crate::ops::browse::components(p)?;
    }
    if !req.in_place && (req.delete || req.dry_run) {
        return Err(ApiError::bad_request(
            "delete and dry_run apply to an in-place restore: add \"in_place\": true",
        ));
    }
    if req.in_place && !target.is_dir() {
        return Err(ApiError::bad_request(format!(
            "target: {}: an in-place restore goes over an existing directory",
            target.display()
        )));
    }
    let snap = super::snapshots::find(&api, &req.snapshot).await?;
    let id = api.tasks.create("restore", None, &caller.label);
    let label = caller.label.clone();
    tracing::info!(task = id, actor = %label, target = %target.display(),
        in_place = req.in_place, "API: restore started");
    let api = api.clone();
    let task = api.clone();
    task.spawn(async move {
        api.tasks.started(id);
        let started = jiff::Timestamp::now();
        let spec = snap.id.to_hex();
        let progress = Arc::new(RestoreProgress::default());
        let work = {
            let (api, progress, target) = (api.clone(), progress.clone(), target.clone());
            async move {
                if req.in_place {
                    in_place(&api, id, &spec, &req, target, &progress).await
                } else {
                    plain(&api, &spec, &req, target, &progress).await
                }
            }
        };
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tokio::time::sleep(PROGRESS_EVERY) => api.tasks.progress(id, serde_json::json!({
                    "files": progress.files.load(Ordering::Relaxed),
                    "bytes": progress.bytes.load(Ordering::Relaxed),
                    "total_files": progress.total_files.load(Ordering::Relaxed),
                    "total_bytes": progress.total_bytes.load(Ordering::Relaxed),
                })),
            }
        };
        let mut record = RunRecord {
            id: 0,
            job: "api-restore".into(),
            kind: "restore".into(),
            trigger: Trigger::Api,
            started,
            finished: jiff::Timestamp::now(),
            status: RunStatus::Success,
            snapshot: Some(snap.id.to_hex()),
            bytes_added: 0,
            attempts: 1,
            replicas: Vec::new(),
            error: None,
            actor: Some(label),
        };
        let (report, error) = match result {
            Ok(Ended {
                mut report,
                status,
                error,
            }) => {
                record.status = status;
                record.error = error.clone();
                report["snapshot"] = serde_json::json!(snap.id.to_hex());
                report["target"] = serde_json::json!(target.display().to_string());
                // A rolled-back restore failed: the task says why, and its
                // report says what was put back.
                (Some(report), error.filter(|_| status == RunStatus::Failure))
            }
            Err(e) => {
                let why = crate::error::chain(&e);
                record.status = RunStatus::Failure;
                record.error = Some(why.clone());
                (None, Some(why))
            }
        };
        if let Err(e) = api.history.record(&mut record) {
            tracing::error!(
                "the API's restore could not be recorded: {}",
                crate::error::chain(&e)
            );
        }
        // What the task wrote (a snapshot, a forget) shows at once.
        api.browser().forget_listing().await;
        api.tasks.finished(id, report, error);
    });
    Ok(Accepted::new(id))
}

/// How a restore task ended, for its record and its task.
struct Ended {
    report: serde_json::Value,
    status: RunStatus,
    error: Option<String>,
}

/// The repository, opened for this task; it stops at a safe point when
/// the server stops.
async fn open_repo(api: &SharedApi) -> crate::Result<crate::repo::Repository> {
    api.live()
        .runner
        .opener
        .open(None, api.cancel.child_token())
        .await
}

async fn plain(
    api: &SharedApi,
    spec: &str,
    req: &RestoreRequest,
    target: PathBuf,
    progress: &RestoreProgress,
) -> crate::Result<Ended> {
    let mut opts = RestoreOptions::new(target);
    opts.subpath = req.path.clone();
    opts.verify = req.verify;
    let repo = open_repo(api).await?;
    let (_, out) = restore_snapshot(&repo, spec, &opts, progress).await?;
    let (status, error) = if out.errors.is_empty() {
        (RunStatus::Success, None)
    } else {
        (
            RunStatus::Partial,
            Some(format!(
                "{} items could not be restored: {}",
                out.errors.len(),
                out.errors
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        )
    };
    Ok(Ended {
        report: serde_json::to_value(&out).unwrap_or_default(),
        status,
        error,
    })
}

async fn in_place(
    api: &SharedApi,
    task: u64,
    spec: &str,
    req: &RestoreRequest,
    target: PathBuf,
    progress: &RestoreProgress,
) -> crate::Result<Ended> {
    let mut opts = InPlaceOptions::new(target);
    opts.subpath = req.path.clone();
    opts.delete = req.delete;
    opts.dry_run = req.dry_run;
    let repo = open_repo(api).await?;
    // Each step is announced on the task (and so on /events) as it starts.
    let phase = |p: Phase| {
        let step = match p {
            Phase::SafetySnapshot => serde_json::json!({"phase": "safety_snapshot"}),
            Phase::Restoring { safety } => {
                serde_json::json!({"phase": "restoring", "safety_snapshot": safety.to_hex()})
            }
            Phase::Verifying => serde_json::json!({"phase": "verifying"}),
            Phase::RollingBack { reason } => {
                serde_json::json!({"phase": "rolling_back", "reason": reason})
            }
        };
        api.tasks.progress(task, step);
    };
    let report = restore_in_place(&repo, spec, &opts, progress, &phase).await?;
    let (status, error) = match report.outcome {
        InPlaceOutcome::DryRun | InPlaceOutcome::Restored => (
            if report.errors.is_empty() {
                RunStatus::Success
            } else {
                RunStatus::Partial
            },
            None,
        ),
        InPlaceOutcome::RolledBack => (
            RunStatus::Failure,
            Some(format!(
                "rolled back: {}",
                report.failure.as_deref().unwrap_or("the restore failed")
            )),
        ),
        InPlaceOutcome::RollbackFailed => (
            RunStatus::Failure,
            Some(format!(
                "the restore failed ({}) and so did the rollback: restore the pre-restore \
                 snapshot {} by hand",
                report.failure.as_deref().unwrap_or("?"),
                report
                    .safety_snapshot
                    .map(|s| s.to_hex())
                    .unwrap_or_default()
            )),
        ),
    };
    Ok(Ended {
        report: serde_json::to_value(&report).unwrap_or_default(),
        status,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_targets_stay_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("r");
        std::fs::create_dir(&root).unwrap();
        let outside = root.parent().unwrap().join("o");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let roots = [root.clone()];
        let ok = |t: &FsPath| restore_target(&roots, t.to_str().unwrap());
        assert_eq!(
            ok(&root.join("new/deeper")).unwrap(),
            root.join("new/deeper")
        );
        assert_eq!(ok(&root).unwrap(), root);
        let code = |t: &str| restore_target(&roots, t).unwrap_err().status;
        assert_eq!(code(outside.to_str().unwrap()), StatusCode::FORBIDDEN);
        // Through a symlink that leaves the root.
        assert_eq!(
            code(root.join("link/x").to_str().unwrap()),
            StatusCode::FORBIDDEN
        );
        assert_eq!(code("relative/path"), StatusCode::BAD_REQUEST);
        assert_eq!(
            code(&format!("{}/../o", root.display())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(code("/"), StatusCode::FORBIDDEN);
        assert_eq!(
            restore_target(&[], root.to_str().unwrap())
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
    }
}
