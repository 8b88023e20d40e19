//! `cairn serve`: the HTTP API of `docs/api.md` on `--listen`, over TLS
//! when `[api] tls_cert`/`tls_key` are set; SIGTERM or SIGINT stops it
//! after the requests in flight.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::{cmd_jobs, exit, Global, UsageError};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The address to listen on (port 0: any free port, logged).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9181")]
    pub listen: SocketAddr,
    /// Serve plain HTTP on a non-loopback address (tokens cross the
    /// network in clear: only behind a trusted network or proxy).
    #[arg(long)]
    pub insecure_http: bool,
}

/// The API over the configuration: tokens read, repository opened, TLS
/// loaded; every mistake is refused before listening.
pub async fn api(
    config: Arc<cairn::config::ConfigFile>,
    jobs: Vec<cairn::jobs::Job>,
    runner: cairn::jobs::Runner,
    history: Arc<cairn::jobs::history::History>,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Arc<cairn::api::Api>> {
    let api = cairn::api::Api::new(config, jobs, runner, history, cancel)
        .await
        .map_err(|e| match e {
            cairn::api::ApiSetupError::Repo(e) => anyhow::Error::from(e),
            other => UsageError(other.to_string()).into(),
        })?;
    Ok(Arc::new(api))
}

pub async fn run(g: &Global, a: ServeArgs) -> anyhow::Result<i32> {
    let (config, jobs) = cmd_jobs::load_jobs(g)?;
    let problems = cairn::config::check::check(&config);
    if !problems.is_empty() {
        anyhow::bail!(UsageError(problems.join("\n")));
    }
    let tls = cairn::api::tls_from(&config.api).map_err(|e| UsageError(e.to_string()))?;
    cairn::api::check_listen(a.listen, tls.is_some(), a.insecure_http).map_err(UsageError)?;
    let opener = super::jobs_open::JobOpener::new(g, config.clone())?;
    let runner = cairn::jobs::Runner {
        config: config.clone(),
        opener: Arc::new(opener),
        notifier: cmd_jobs::notifier(&config)?,
    };
    let history = Arc::new(cmd_jobs::open_history(&config)?);
    let api = api(config, jobs, runner, history, g.cancel.clone()).await?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let (scheme, addr) = (
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?,
    );
    tracing::info!(
        "serving the API on {scheme}://{addr}/api/v1 and the dashboard on {scheme}://{addr}/"
    );
    super::signals::arm();
    cairn::api::serve(
        listener,
        tls,
        cairn::api::router(api.clone()),
        g.cancel.clone(),
    )
    .await?;
    // Running tasks were cancelled with the server: each stops at a safe
    // point and records its run before the process exits.
    let grace = super::cmd_daemon::API_TASK_GRACE;
    if !api.wait_tasks(grace).await {
        tracing::warn!("API tasks still running after {grace:?}: exiting anyway");
    }
    Ok(exit::OK)
}
