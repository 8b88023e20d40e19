//! Long operations started over the API (a job run, a backup, a restore,
//! a check, a forget): each is a task with an id that `GET /jobs/{id}`
//! follows (queued, running, done, failed; its typed report when done),
//! and whose start, progress and end `GET /events` streams as
//! server-sent events. Finished tasks are kept up to [`KEEP_FINISHED`],
//! the oldest forgotten first, so the registry stays bounded.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::SharedApi;
use crate::config::api::Role;

/// Finished tasks remembered.
pub const KEEP_FINISHED: usize = 200;
/// Events a slow `/events` client may fall behind before it misses some.
const EVENT_BUFFER: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Running,
    Done,
    Failed,
}

/// A task as `GET /jobs/{id}` shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Task {
    pub id: u64,
    /// `job`, `backup`, `restore`, `check` or `forget`.
    pub kind: String,
    /// The job's name, for `kind = job`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub state: TaskState,
    /// The label of the token that started it.
    pub actor: String,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// The latest progress (counters that depend on the kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    /// The operation's report, when done (a run record for job, backup and
    /// check; the restore's counts; the forget report).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `/events` sends: the task as it is after the change.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Event {
    /// `started`, `progress` or `finished`.
    #[serde(rename = "type")]
    pub kind: String,
    pub task: Task,
}

pub struct Tasks {
    next: Mutex<(u64, BTreeMap<u64, Task>)>,
    events: broadcast::Sender<Event>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks {
            next: Mutex::new((1, BTreeMap::new())),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Task>)> {
        self.next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new task, queued.
    pub fn create(&self, kind: &str, job: Option<&str>, actor: &str) -> u64 {
        let mut m = self.map();
        let id = m.0;
        m.0 += 1;
        m.1.insert(
            id,
            Task {
                id,
                kind: kind.into(),
                job: job.map(str::to_string),
                state: TaskState::Queued,
                actor: actor.into(),
                created: jiff::Timestamp::now().to_string(),
                finished: None,
                progress: None,
                report: None,
                error: None,
            },
        );
        let finished: Vec<u64> =
            m.1.values()
                .filter(|t| matches!(t.state, TaskState::Done | TaskState::Failed))
                .map(|t| t.id)
                .collect();
        for old in finished
            .iter()
            .take(finished.len().saturating_sub(KEEP_FINISHED))
        {
            m.1.remove(old);
        }
        id
    }

    fn update(&self, id: u64, event: &str, f: impl FnOnce(&mut Task)) {
        let task = {
            let mut m = self.map();
            let Some(t) = m.1.get_mut(&id) else { return };
            f(t);
            t.clone()
        };
        let _ = self.events.send(Event {
            kind: event.into(),
            task,
        });
    }

    pub fn started(&self, id: u64) {
        self.update(id, "started", |t| t.state = TaskState::Running);
    }

    pub fn progress(&self, id: u64, progress: serde_json::Value) {
        self.update(id, "progress", |t| t.progress = Some(progress));
    }

    /// The end of a task: done with its report, or failed with why.
    pub fn finished(&self, id: u64, report: Option<serde_json::Value>, error: Option<String>) {
        self.update(id, "finished", |t| {
            t.state = if error.is_some() {
                TaskState::Failed
            } else {
                TaskState::Done
            };
            t.finished = Some(jiff::Timestamp::now().to_string());
            t.report = report;
            t.error = error;
        });
    }

    pub fn get(&self, id: u64) -> Option<Task> {
        self.map().1.get(&id).cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// How often a running task's progress is sent.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The body of a 202: the task to follow.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub id: u64,
    /// `/api/v1/jobs/{id}`.
    pub url: String,
}

impl Accepted {
    pub fn new(id: u64) -> (axum::http::StatusCode, Json<Accepted>) {
        (
            axum::http::StatusCode::ACCEPTED,
            Json(Accepted {
                id,
                url: format!("/api/v1/jobs/{id}"),
            }),
        )
    }
}

/// One task started over the API.
#[utoipa::path(get, path = "/jobs/{id}", tag = "tasks",
    params(("id" = u64, Path, description = "the id a 202 answer gave")),
    responses((status = 200, body = Task), (status = 404)),
    security(("bearer" = [])))]
pub async fn get(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    caller.at_least(Role::Viewer, "following a task")?;
    let n: u64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no task {id:?}: task ids are numbers")))?;
    api.tasks.get(n).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no task {n} (finished tasks are kept up to {KEEP_FINISHED})"
        ))
    })
}

/// Server-sent events: every task's start, progress and end, as JSON
/// [`Event`]s (`event:` is the type). Lagging clients miss events and
/// get a `lagged` event saying how many.
#[utoipa::path(get, path = "/events", tag = "tasks",
    responses((status = 200, description = "an event stream of Event objects", content_type = "text/event-stream", body = Event)),
    security(("bearer" = [])))]
pub async fn events(
    State(api): State<SharedApi>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>>> {
    caller.at_least(Role::Viewer, "following events")?;
    let rx = api.tasks.subscribe();
    let cancel = api.cancel.clone();
    let stream = futures::stream::unfold((rx, cancel), |(mut rx, cancel)| async move {
        let got = tokio::select! {
            r = rx.recv() => r,
            _ = cancel.cancelled() => return None,
        };
        let ev = match got {
            Ok(e) => SseEvent::default()
                .event(e.kind.clone())
                .json_data(&e)
                .unwrap_or_else(|_| SseEvent::default().comment("unserialisable")),
            Err(broadcast::error::RecvError::Lagged(n)) => SseEvent::default()
                .event("lagged")
                .data(format!("{{\"missed\":{n}}}")),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), (rx, cancel)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_move_through_their_states_and_old_ones_go() {
        let t = Tasks::new();
        let mut rx = t.subscribe();
        let id = t.create("backup", None, "ci");
        assert_eq!(t.get(id).unwrap().state, TaskState::Queued);
        t.started(id);
        t.finished(id, Some(serde_json::json!({"ok": true})), None);
        assert_eq!(rx.try_recv().unwrap().kind, "started");
        let e = rx.try_recv().unwrap();
        assert_eq!(e.kind, "finished");
        assert_eq!(e.task.state, TaskState::Done);
        for _ in 0..KEEP_FINISHED + 5 {
            let i = t.create("check", None, "ci");
            t.finished(i, None, Some("boom".into()));
        }
        assert!(t.get(id).is_none(), "the oldest finished task is forgotten");
        let running = t.create("restore", None, "ci");
        t.started(running);
        for _ in 0..KEEP_FINISHED + 5 {
            let i = t.create("check", None, "ci");
            t.finished(i, None, None);
        }
        assert_eq!(t.get(running).unwrap().state, TaskState::Running);
    }
}
