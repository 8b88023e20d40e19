//! The HTTP API under `/api/v1`, served by `cairn serve` and by `cairn
//! daemon --listen`: snapshots (list, browse, download a file or a
//! directory archive), the status matrix, jobs and their history, and the
//! operations a token's role allows (back up, restore, check, forget) as
//! tasks that `GET /jobs/{id}` and `GET /events` follow. Every route but
//! `/openapi.json` and a one-time download URL (module `downloads`) needs a
//! bearer token (see [`auth`]); the OpenAPI
//! document is generated from the handlers themselves (see [`openapi`]),
//! so it lists exactly what is routed. The web dashboard ([`web`]) is
//! served beside it, at `/`. `docs/api.md` describes it for users.

pub mod archive;
pub mod auth;
mod body;
mod downloads;
mod error;
mod files;
pub mod openapi;
mod ops;
mod restore;
mod snapshots;
pub mod tasks;
pub mod tls;
pub mod web;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ConfigFile;
use crate::jobs::history::History;
use crate::jobs::{Job, Runner};
use crate::ops::browse::Browser;

pub use auth::{Auth, Caller, ClientAddr};
pub use error::ApiError;

/// The largest request body accepted (every body is a small JSON object).
pub const MAX_BODY: usize = 64 * 1024;

/// What a configuration gives the API; replaced as a whole when the
/// daemon reloads its configuration (SIGHUP).
pub struct Live {
    pub config: Arc<ConfigFile>,
    pub jobs: Vec<Job>,
    pub runner: Runner,
    /// `[api] restore_roots`, each made canonical.
    pub restore_roots: Vec<PathBuf>,
}

/// What the handlers share.
pub struct Api {
    live: RwLock<Arc<Live>>,
    pub history: Arc<History>,
    /// Reads snapshots of the repository opened at start (every replica
    /// the configuration names); opened again after a reload.
    browser: RwLock<Arc<Browser>>,
    pub auth: Auth,
    pub tasks: tasks::Tasks,
    /// One-time download URLs handed out (see the `downloads` module).
    downloads: downloads::Tickets,
    /// Cancelled when the server stops: running tasks stop at a safe point.
    pub cancel: CancellationToken,
    /// The tasks started by the API, waited for before the server exits so
    /// each stops at a safe point and records its run.
    running: TaskTracker,
}

pub type SharedApi = Arc<Api>;

impl Api {
    /// The API over `config`: its tokens read, its repository opened once
    /// for reading through the runner's opener, its restore roots checked.
    pub async fn new(
        config: Arc<ConfigFile>,
        jobs: Vec<Job>,
        runner: Runner,
        history: Arc<History>,
        cancel: CancellationToken,
    ) -> Result<Api, ApiSetupError> {
        let (live, tokens) = Live::new(config, jobs, runner)?;
        let repo = live.runner.opener.open(None, cancel.child_token()).await?;
        let browser = Browser::new(Arc::new(repo)).await?;
        Ok(Api {
            live: RwLock::new(Arc::new(live)),
            history,
            browser: RwLock::new(Arc::new(browser)),
            auth: Auth::new(tokens),
            tasks: tasks::Tasks::new(),
            downloads: downloads::Tickets::default(),
            cancel,
            running: TaskTracker::new(),
        })
    }

    /// The configuration in force.
    pub fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The snapshot browser in force.
    pub fn browser(&self) -> Arc<Browser> {
        self.browser
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Take a reloaded configuration: its tokens, jobs, restore roots and
    /// backends. A configuration the API cannot use is refused whole and the
    /// old one stays. Requests and tasks already running keep what they
    /// started with; the repository is opened again in the background and
    /// browsing switches to it once it is open.
    pub fn reload(
        self: &Arc<Self>,
        config: Arc<ConfigFile>,
        jobs: Vec<Job>,
        runner: Runner,
    ) -> Result<(), ApiSetupError> {
        let (live, tokens) = Live::new(config, jobs, runner)?;
        let opener = live.runner.opener.clone();
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(live);
        self.auth.replace(tokens);
        let api = self.clone();
        self.spawn(async move {
            let opened = async {
                let repo = opener.open(None, api.cancel.child_token()).await?;
                Browser::new(Arc::new(repo)).await
            };
            match opened.await {
                Ok(b) => {
                    *api.browser
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(b);
                    tracing::info!("API: the repository was opened again after the reload");
                }
                Err(e) => tracing::error!(
                    "API: after the reload the repository could not be opened, browsing goes \
                     on with the old one: {}",
                    crate::error::chain(&e)
                ),
            }
        });
        Ok(())
    }

    /// Run `work` as one of the API's tasks (see [`Api::wait_tasks`]).
    pub fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.running.spawn(work);
    }

    /// Wait until every task the API started has ended (they stop at a safe
    /// point once [`Api::cancel`] is cancelled), at most `limit`; false if
    /// some were still running then.
    pub async fn wait_tasks(&self, limit: std::time::Duration) -> bool {
        self.running.close();
        tokio::time::timeout(limit, self.running.wait())
            .await
            .is_ok()
    }
}

impl Live {
    fn new(
        config: Arc<ConfigFile>,
        jobs: Vec<Job>,
        runner: Runner,
    ) -> Result<(Live, Vec<crate::config::api::Token>), ApiSetupError> {
        let tokens = config.api.read_tokens()?;
        if tokens.is_empty() {
            return Err(ApiSetupError::NoTokens);
        }
        let mut restore_roots = Vec::new();
        for root in &config.api.restore_roots {
            let canonical =
                std::fs::canonicalize(root).map_err(|source| ApiSetupError::RestoreRoot {
                    path: root.clone(),
                    source,
                })?;
            restore_roots.push(canonical);
        }
        Ok((
            Live {
                config,
                jobs,
                runner,
                restore_roots,
            },
            tokens,
        ))
    }
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("[api]: no [[api.tokens]]: nobody could call the API")]
    NoTokens,
    #[error("[api] restore_roots: {path}: {source}")]
    RestoreRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Repo(#[from] crate::Error),
}

/// The API's routes under `/api/v1` (the OpenAPI document included) and
/// the web dashboard at `/` (see [`web`]), ready to be merged with other
/// routes. Serve it with
/// `into_make_service_with_connect_info::<ClientAddr>()` so failed logins
/// are counted per client address.
pub fn router(api: SharedApi) -> Router {
    let (routes, spec) = openapi::routes(api.clone()).split_for_parts();
    let spec = Arc::new(spec);
    let public = Router::new().route(
        "/api/v1/openapi.json",
        axum::routing::get(move || {
            let spec = spec.clone();
            async move { axum::Json(spec.as_ref().clone()) }
        }),
    );
    routes
        .merge(public)
        .merge(web::router())
        .layer(axum::middleware::from_fn(auth::refuse_query_tokens))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// The TLS acceptor of `[api] tls_cert`/`tls_key`, if both are set (one
/// without the other is an error).
pub fn tls_from(
    config: &crate::config::api::ApiConfig,
) -> Result<Option<tls::TlsAcceptor>, tls::TlsError> {
    match (&config.tls_cert, &config.tls_key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => tls::acceptor(cert, key).map(Some),
        _ => Err(tls::TlsError::Config(
            "set both tls_cert and tls_key, or neither".into(),
        )),
    }
}

/// Whether the API may listen on `addr`: over TLS anywhere, over plain
/// HTTP on a loopback address, or anywhere if `insecure_http` says so.
/// Tokens sent in clear over a network can be read on the way.
pub fn check_listen(
    addr: std::net::SocketAddr,
    tls: bool,
    insecure_http: bool,
) -> Result<(), String> {
    if tls || insecure_http || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "refusing to serve the API on {addr} over plain HTTP: its tokens would cross the \
             network in clear. Set [api] tls_cert and tls_key, listen on a loopback address \
             (127.0.0.1) behind a TLS proxy, or pass --insecure-http"
        ))
    }
}

/// Serve `router` on `listener` (over TLS with `tls`) until `shutdown` is
/// cancelled; requests in flight are answered before it returns. Each
/// request knows its client's address ([`ClientAddr`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tls::TlsAcceptor>,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let svc = router.into_make_service_with_connect_info::<ClientAddr>();
    let stop = async move { shutdown.cancelled().await };
    match tls {
        None => {
            axum::serve(listener, svc)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(acceptor) => {
            axum::serve(tls::TlsListener::new(listener, acceptor)?, svc)
                .with_graceful_shutdown(stop)
                .await
        }
    }
}
