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
}

const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(15 * 60);

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
    let http = match listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            tracing::info!(
                "serving /metrics and /health on http://{}",
                listener.local_addr()?
            );
            let router = cairn::daemon::http::router(observations.clone());
            Some(tokio::spawn(cairn::daemon::http::serve(
                listener,
                router,
                http_stop.clone(),
            )))
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // SIGTERM/SIGINT cancel the command's token (see signals.rs): that is
    // the daemon's shutdown; a second one ends the process at once.
    super::signals::arm();
    {
        let (tx, cancel) = (tx.clone(), g.cancel.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
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
        shutdown_timeout: first
            .config
            .daemon
            .shutdown_timeout
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        status_interval: first
            .config
            .daemon
            .status_interval
            .unwrap_or(DEFAULT_STATUS_INTERVAL),
    };
    let g2 = g.clone();
    let reload: scheduler::Reload = Box::new(move || setup(&g2).map_err(|e| format!("{e:#}")));
    let report = scheduler::run(first, opts, reload, rx).await;
    http_stop.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    if g.json {
        output::print_json(&serde_json::json!({"type": "daemon", "report": report}));
    }
    Ok(exit::OK)
}
