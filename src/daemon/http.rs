//! The daemon's HTTP listener: `GET /metrics` (Prometheus text) and
//! `GET /health` (JSON, 200 or 503), both read from the daemon's shared
//! [`Observations`]. Nothing else is served; nothing can be changed over
//! it.

use std::io;
use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::jobs::{health, metrics, Observations};

/// What the daemon observes, written by its loop and read by the handlers.
/// A std lock: it is held only to copy or render, never across an await.
pub type SharedObservations = Arc<RwLock<Observations>>;

/// The routes, over `state`.
pub fn router(state: SharedObservations) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/health", get(get_health))
        .fallback(not_found)
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` is cancelled; requests in
/// flight are answered before it returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn get_metrics(State(state): State<SharedObservations>) -> Response {
    // A writer that panicked left the observations as they were between
    // two updates: still worth showing.
    let text = metrics::render(&state.read().unwrap_or_else(PoisonError::into_inner));
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

async fn get_health(State(state): State<SharedObservations>) -> Response {
    let report = health::health(
        &state.read().unwrap_or_else(PoisonError::into_inner),
        jiff::Timestamp::now(),
    );
    let code = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report)).into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: cairn serves GET /metrics and GET /health\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::state::tests::run;
    use crate::jobs::RunStatus;

    async fn start(obs: Observations) -> (String, SharedObservations, CancellationToken) {
        let state = Arc::new(RwLock::new(obs));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let token = CancellationToken::new();
        tokio::spawn(serve(listener, router(state.clone()), token.clone()));
        (base, state, token)
    }

    #[tokio::test]
    async fn routes_answer_and_unknown_paths_are_404() {
        let mut obs = Observations::new(jiff::Timestamp::now());
        obs.set_job("nightly", "backup", None, None);
        let (base, state, token) = start(obs).await;
        let client = reqwest::Client::new();

        let r = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], metrics::CONTENT_TYPE);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("cairn_job_running{job_name=\"nightly\"} 0"));

        let r = client.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["ok"], true);

        let mut failed = run(
            "nightly",
            "backup",
            "2026-12-01T01:00:00Z",
            RunStatus::Failure,
        );
        failed.finished = jiff::Timestamp::now();
        state.write().unwrap().record_run(&failed);
        let r = client.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["problems"][0]["name"], "nightly");

        let r = client.get(format!("{base}/nope")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert!(r.text().await.unwrap().starts_with("not found"));
        let r = client.post(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 405);
        token.cancel();
    }

    #[tokio::test]
    async fn serve_returns_when_cancelled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let state = Arc::new(RwLock::new(Observations::new(jiff::Timestamp::now())));
        let server = tokio::spawn(serve(listener, router(state), token.clone()));
        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("serve stops after cancellation")
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
