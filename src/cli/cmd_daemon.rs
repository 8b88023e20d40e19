//! `cairn daemon`: the jobs of cairn.toml on their schedules, `/metrics`
//! and `/health` on `--listen`, SIGHUP to reload the configuration,
//! SIGTERM to stop after running jobs finish.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use cairn::daemon::scheduler::{self, Control, Options, Setup};
use cairn::jobs::Observations;
use clap::Args;

use super::{cmd_jobs, exit, output, Global, UsageError};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Serve /metrics and /health on this address (e.g. 127.0.0.1:9180)
    /// [default: `[daemon] listen`, else no HTTP].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// With `[[api.tokens]]`, the API is served on the same address: over
    /// plain HTTP on a non-loopback address only with this.
    #[arg(long)]
    pub insecure_http: bool,
}

const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// After the stop, how long the API's tasks get to stop at a safe point
/// and record their runs.
pub const API_TASK_GRACE: Duration = Duration::from_secs(60);

/// The configuration, its jobs and a runner, as a daemon uses them; every
/// mistake is refused here, before anything runs.
fn setup(g: &Global) -> anyhow::Result<Setup> {
    let (config, jobs) = cmd_jobs::load_jobs(g)?;
    let problems = cairn::config::check::check(&config);
    if !problems.is_empty() {
        anyhow::bail!(UsageError(problems.join("\n")));
    }
    let opener = super::jobs_open::JobOpener::new(g, config.clone())?;
    let runner = cairn::jobs::Runner {
        config: config.clone(),
        opener: Arc::new(opener),
        notifier: cmd_jobs::notifier(&config)?,
    };
    Ok(Setup {
        config,
        jobs,
        runner,
    })
}

pub async fn run(g: &Global, a: DaemonArgs) -> anyhow::Result<i32> {
    let first = setup(g)?;
    let history = Arc::new(cmd_jobs::open_history(&first.config)?);
    let listen = match a.listen {
        Some(l) => Some(l),
        None => match &first.config.daemon.listen {
            Some(l) => Some(
                l.parse()
                    .map_err(|_| UsageError(format!("[daemon] listen: {l:?} is not an address")))?,
            ),
            None => None,
        },
    };
    let observations = Arc::new(RwLock::new(Observations::new(jiff::Timestamp::now())));
    let http_stop = tokio_util::sync::CancellationToken::new();
    let mut api: Option<Arc<cairn::api::Api>> = None;
    // The API's tasks get the same time to finish as the daemon's jobs:
    // they are cancelled once `shutdown_timeout` has passed, not at the
    // signal.
    let api_cancel = tokio_util::sync::CancellationToken::new();
    let http = match listen {
        None => None,
        Some(addr) => {
            // The API too, on the same address, when tokens are configured.
            let with_api = !first.config.api.tokens.is_empty();
            let tls = if with_api {
                let tls = cairn::api::tls_from(&first.config.api)
                    .map_err(|e| UsageError(e.to_string()))?;
                cairn::api::check_listen(addr, tls.is_some(), a.insecure_http)
                    .map_err(UsageError)?;
                tls
            } else {
                None
            };
            let mut router = cairn::daemon::http::router(observations.clone());
            if with_api {
                let a = super::cmd_serve::api(
                    first.config.clone(),
                    first.jobs.clone(),
                    first.runner.clone(),
                    history.clone(),
                    api_cancel.clone(),
                )
                .await?;
                router = router.merge(cairn::api::router(a.clone()));
                api = Some(a);
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            tracing::info!(
                "serving /metrics and /health{} on {}://{}",
                if with_api {
                    " and the API (/api/v1) with its dashboard (/)"
                } else {
                    ""
                },
                if tls.is_some() { "https" } else { "http" },
                listener.local_addr()?
            );
            Some(tokio::spawn(cairn::api::serve(
                listener,
                tls,
                router,
                http_stop.clone(),
            )))
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // SIGTERM/SIGINT cancel the command's token (see signals.rs): that is
    // the daemon's shutdown; a second one ends the process at once.
    super::signals::arm();
    let shutdown_timeout = first
        .config
        .daemon
        .shutdown_timeout
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    // When the stop was asked for, plus `shutdown_timeout`.
    let stop_deadline = Arc::new(std::sync::OnceLock::new());
    {
        let (tx, cancel, deadline) = (tx.clone(), g.cancel.clone(), stop_deadline.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            let _ = deadline.set(std::time::Instant::now() + shutdown_timeout);
            let _ = tx.send(Control::Shutdown).await;
        });
    }
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot watch for SIGHUP: reloading needs a restart");
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                if tx.send(Control::Reload).await.is_err() {
                    return;
                }
            }
        });
    }
    let opts = Options {
        history,
        observations,
        shutdown_timeout,
        status_interval: first
            .config
            .daemon
            .status_interval
            .unwrap_or(DEFAULT_STATUS_INTERVAL),
    };
    let g2 = g.clone();
    let reload_api = api.clone();
    // A reload reaches the API too (tokens, jobs, restore roots, backends);
    // a configuration either of them refuses is refused whole.
    let reload: scheduler::Reload = Box::new(move || {
        let new = setup(&g2).map_err(|e| format!("{e:#}"))?;
        match &reload_api {
            Some(a) => a
                .reload(new.config.clone(), new.jobs.clone(), new.runner.clone())
                .map_err(|e| e.to_string())?,
            None if !new.config.api.tokens.is_empty() => {
                tracing::warn!("[[api.tokens]] were added: the API is served after a restart")
            }
            None => {}
        }
        Ok(new)
    });
    let report = scheduler::run(first, opts, reload, rx).await;
    http_stop.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    if let Some(a) = api {
        let left = stop_deadline.get().map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(std::time::Instant::now())
        });
        if !a.wait_tasks(left).await {
            tracing::info!("stopping the API's running tasks at a safe point");
            api_cancel.cancel();
            if !a.wait_tasks(API_TASK_GRACE).await {
                tracing::warn!("API tasks still running after {API_TASK_GRACE:?}: exiting anyway");
            }
        }
    }
    if g.json {
        output::print_json(&serde_json::json!({"type": "daemon", "report": report}));
    }
    Ok(exit::OK)
}
