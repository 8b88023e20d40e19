//! The status matrix, the jobs and their history, and the operations:
//! `POST /jobs/{name}/run`, `POST /jobs/backup`, `POST /check` and
//! `POST /forget` (`POST /restore` is in [`super::restore`]). Each operation runs as a task (202
//! with its id) and is recorded in the run history with the label of the
//! token that asked; jobs, backups, checks and forgets go through the
//! job runner, so they behave as `cairn run` does.

use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::body::Body;
use super::error::{ApiError, ApiResult};
use super::tasks::{Accepted, PROGRESS_EVERY};
use super::SharedApi;
use crate::config::api::Role;
use crate::jobs::spec::Hooks;
use crate::jobs::{Job, JobKind, RunRecord, RunStatus, Trigger};

/// The snapshot × replica matrix, as `cairn status --json`.
#[utoipa::path(get, path = "/status", tag = "repository",
    responses((status = 200, description = "replicas (with size, last write, how far behind) and snapshots (which replica holds each, and why retention keeps it)", body = Object)),
    security(("bearer" = [])))]
pub async fn status(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<crate::ops::status::Status>> {
    caller.at_least(Role::Viewer, "reading the status")?;
    let policies = api.live().config.policies();
    let retention = crate::ops::status::Retention {
        policies: &policies,
        tz: jiff::tz::TimeZone::system(),
        now: jiff::Timestamp::now(),
    };
    let configured = policies.default.is_some() || !policies.by_replica.is_empty();
    let st = crate::ops::status::status(
        &api.browser().repo().clone(),
        configured.then_some(&retention),
    )
    .await?;
    Ok(Json(st))
}

/// A job of cairn.toml and its last runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobInfo {
    pub name: String,
    /// `backup`, `command`, `sqlite`, `sync`, `forget` or `check`.
    pub kind: String,
    /// Its cron expression, if it is scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The backends it writes (none: every backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub last_run: Option<RunRecord>,
    /// When its last successful run ended (RFC 3339).
    pub last_success: Option<String>,
}

/// The jobs of cairn.toml.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses((status = 200, body = [JobInfo])),
    security(("bearer" = [])))]
pub async fn jobs(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<JobInfo>>> {
    caller.at_least(Role::Viewer, "listing jobs")?;
    let mut out = Vec::new();
    for j in &api.live().jobs {
        out.push(JobInfo {
            name: j.name.clone(),
            kind: j.kind.name().into(),
            schedule: j.schedule.as_ref().map(|s| s.text().to_string()),
            backends: j.backends.clone(),
            last_run: api.history.last(&j.name)?,
            last_success: api
                .history
                .last_success(&j.name)?
                .map(|r| r.finished.to_string()),
        });
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Only this job's runs (ad-hoc API runs are `api-backup`,
    /// `api-restore`, `api-check`, `api-forget`).
    pub job: Option<String>,
    /// At most this many, newest first (default 50, at most 1000).
    pub limit: Option<usize>,
}

/// The run history, newest first.
#[utoipa::path(get, path = "/history", tag = "jobs", params(HistoryQuery),
    responses((status = 200, description = "run records, as `cairn history --json`", body = [Object])),
    security(("bearer" = [])))]
pub async fn history(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Vec<RunRecord>>> {
    caller.at_least(Role::Viewer, "reading the history")?;
    let limit = q.limit.unwrap_or(50).min(1000);
    Ok(Json(api.history.list(q.job.as_deref(), limit)?))
}

/// A job that is not in cairn.toml: what the API runs for an ad-hoc
/// backup, a check or a forget.
fn adhoc(name: &str, kind: JobKind) -> Job {
    Job {
        name: name.into(),
        schedule: None,
        kind,
        backends: None,
        tags: Vec::new(),
        exclude: Vec::new(),
        host: None,
        one_file_system: false,
        filename: None,
        jitter: Duration::ZERO,
        retries: 0,
        retry_delay: Duration::ZERO,
        timeout: None,
        stale_after: None,
        catch_up: false,
        hooks: Hooks {
            before: None,
            after: None,
            on_failure: None,
            timeout: Duration::from_secs(300),
            continue_on_failure: false,
        },
    }
}

/// Run `job` as a task through the job runner, recorded with the
/// caller's label.
fn spawn_job(api: &SharedApi, job: Job, kind: &str, caller: &Caller) -> u64 {
    let named = (kind == "job").then_some(job.name.as_str());
    let id = api.tasks.create(kind, named, &caller.label);
    let (api, label) = (api.clone(), caller.label.clone());
    tracing::info!(task = id, job = %job.name, actor = %label, "API: {kind} started");
    let task = api.clone();
    task.spawn(async move {
        api.tasks.started(id);
        let started = std::time::Instant::now();
        let live = api.live();
        let run = live.runner.run_recorded_by(
            &job,
            Trigger::Api,
            Some(&label),
            &api.cancel,
            Some(&api.history),
        );
        tokio::pin!(run);
        let recorded = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tokio::time::sleep(PROGRESS_EVERY) => api.tasks.progress(
                    id,
                    serde_json::json!({"elapsed_secs": started.elapsed().as_secs()}),
                ),
            }
        };
        let r = recorded.record;
        let error = (r.status == RunStatus::Failure)
            .then(|| r.error.clone().unwrap_or_else(|| "the run failed".into()));
        // What the task wrote (a snapshot, a forget) shows at once.
        api.browser().forget_listing().await;
        api.tasks.finished(id, serde_json::to_value(&r).ok(), error);
    });
    id
}

/// Run a job of cairn.toml now.
#[utoipa::path(post, path = "/jobs/{name}/run", tag = "jobs",
    params(("name" = String, Path, description = "a job of cairn.toml")),
    responses((status = 202, body = Accepted), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn run_job(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    caller.at_least(Role::Operator, "running a job")?;
    let job = api
        .live()
        .jobs
        .iter()
        .find(|j| j.name == name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no job {name:?} in the configuration")))?;
    if matches!(job.kind, JobKind::Forget { .. }) {
        caller.at_least(Role::Admin, "running a forget job")?;
    }
    Ok(Accepted::new(spawn_job(&api, job, "job", &caller)))
}

/// An ad-hoc backup.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Absolute paths on the server.
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Glob patterns to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Backend names of cairn.toml (default: all).
    #[serde(default)]
    pub backends: Option<Vec<String>>,
}

/// Back up paths on the server now (as `cairn backup`).
#[utoipa::path(post, path = "/jobs/backup", tag = "jobs", request_body = BackupRequest,
    responses((status = 202, body = Accepted), (status = 400), (status = 403), (status = 413)),
    security(("bearer" = [])))]
pub async fn backup(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<BackupRequest>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    caller.at_least(Role::Operator, "backing up")?;
    if req.paths.is_empty() {
        return Err(ApiError::bad_request("paths: give at least one path"));
    }
    for p in &req.paths {
        if !FsPath::new(p).is_absolute() || p.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "paths: {p:?} is not an absolute path"
            )));
        }
    }
    if let Some(names) = &req.backends {
        for n in names {
            if !api.live().config.backends.contains_key(n) {
                return Err(ApiError::bad_request(format!(
                    "backends: no backend {n:?} in the configuration"
                )));
            }
        }
    }
    let mut job = adhoc(
        "api-backup",
        JobKind::Backup(req.paths.iter().map(PathBuf::from).collect()),
    );
    job.tags = req.tags;
    job.exclude = req.exclude;
    job.backends = req.backends;
    Ok(Accepted::new(spawn_job(&api, job, "backup", &caller)))
}

/// A check of every replica.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Backend names of cairn.toml (default: all).
    #[serde(default)]
    pub backends: Option<Vec<String>>,
}

/// Check the repository on every replica (structure, as `cairn check`).
#[utoipa::path(post, path = "/check", tag = "operations", request_body = CheckRequest,
    responses((status = 202, body = Accepted), (status = 403)),
    security(("bearer" = [])))]
pub async fn check(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<CheckRequest>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    caller.at_least(Role::Operator, "checking")?;
    let mut job = adhoc("api-check", JobKind::Check { subset: None });
    job.backends = req.backends;
    Ok(Accepted::new(spawn_job(&api, job, "check", &caller)))
}

/// Forget snapshots by the configured retention policies.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    /// Only show what would be forgotten (the default).
    #[serde(default = "yes")]
    pub dry_run: bool,
    /// Also prune (free the space) after forgetting.
    #[serde(default)]
    pub prune: bool,
}

fn yes() -> bool {
    true
}

/// Forget by policy: a preview (200 with the plan: which snapshots each
/// replica keeps and why) unless `"dry_run": false`, which forgets (and
/// prunes with `"prune": true`) as a task.
#[utoipa::path(post, path = "/forget", tag = "operations", request_body = ForgetRequest,
    responses((status = 200, description = "the plan (dry run), as `cairn forget --dry-run --json`", body = Object),
              (status = 202, body = Accepted), (status = 400, description = "no retention policy"), (status = 403)),
    security(("bearer" = [])))]
pub async fn forget(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<ForgetRequest>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let policies = api.live().config.policies();
    if policies.default.is_none() && policies.by_replica.is_empty() {
        return Err(ApiError::bad_request(
            "no retention policy: configure [retention] or [backends.NAME.retention]",
        ));
    }
    if req.dry_run {
        if req.prune {
            return Err(ApiError::bad_request(
                "prune needs \"dry_run\": false (a dry run changes nothing)",
            ));
        }
        caller.at_least(Role::Viewer, "previewing a forget")?;
        let mut opts = crate::ops::forget::ForgetOptions::new(policies);
        opts.dry_run = true;
        let report = crate::ops::forget::forget(&api.browser().repo().clone(), &opts).await?;
        return Ok(Json(report).into_response());
    }
    caller.at_least(
        Role::Admin,
        if req.prune {
            "forgetting and pruning"
        } else {
            "forgetting"
        },
    )?;
    let job = adhoc("api-forget", JobKind::Forget { prune: req.prune });
    Ok(Accepted::new(spawn_job(&api, job, "forget", &caller)).into_response())
}
