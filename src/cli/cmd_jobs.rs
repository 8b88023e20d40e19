//! `cairn run NAME`, `cairn jobs` and `cairn history`: the jobs of
//! cairn.toml run once in the foreground (through the daemon's own code
//! path), listed with their next and last runs, and the run history.

use std::sync::Arc;

use cairn::config::ConfigFile;
use cairn::jobs::history::History;
use cairn::jobs::{Job, RunRecord, RunStatus, Trigger};
use clap::Args;
use serde_json::json;

use super::output::{self, bytes};
use super::{exit, repos, Global, UsageError};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job's name (`[jobs.NAME]` in cairn.toml).
    pub name: String,
}

#[derive(Args, Debug)]
pub struct JobsArgs {}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only this job's runs.
    #[arg(long)]
    pub job: Option<String>,
    /// Show at most this many runs, newest first.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
}

/// The configuration with its jobs checked (mistakes are usage errors).
pub fn load_jobs(g: &Global) -> anyhow::Result<(Arc<ConfigFile>, Vec<Job>)> {
    let config = repos::load_config(g)?;
    let jobs = config.jobs()?;
    Ok((Arc::new(config), jobs))
}

/// The run history the configuration names (`[daemon] history`).
pub fn open_history(config: &ConfigFile) -> anyhow::Result<History> {
    let path = config
        .daemon
        .history
        .clone()
        .unwrap_or_else(History::default_path);
    Ok(History::open(&path)?)
}

/// The notifier of `[notify]`, if configured (its secrets are read now).
pub fn notifier(config: &ConfigFile) -> anyhow::Result<Option<cairn::jobs::notify::Notifier>> {
    match &config.notify {
        None => Ok(None),
        Some(n) => Ok(Some(cairn::jobs::notify::Notifier::new(n)?)),
    }
}

fn find<'a>(jobs: &'a [Job], name: &str) -> anyhow::Result<&'a Job> {
    jobs.iter().find(|j| j.name == name).ok_or_else(|| {
        let known: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        UsageError(if known.is_empty() {
            format!("no job {name:?}: the configuration has no [jobs.NAME] table")
        } else {
            format!("no job {name:?} (jobs: {})", known.join(", "))
        })
        .into()
    })
}

pub async fn run(g: &Global, a: RunArgs) -> anyhow::Result<i32> {
    let (config, jobs) = load_jobs(g)?;
    let job = find(&jobs, &a.name)?;
    let history = open_history(&config)?;
    let opener = super::jobs_open::JobOpener::new(g, config.clone())?;
    // From here a signal stops the job at a safe point (its after hooks
    // still run) instead of ending the process.
    super::signals::arm();
    let runner = cairn::jobs::Runner {
        config: config.clone(),
        opener: Arc::new(opener),
        notifier: notifier(&config)?,
    };
    let done = runner
        .run_recorded(job, Trigger::Manual, &g.cancel, Some(&history))
        .await;
    let record = done.record;
    if let Some(notice) = done.notice {
        // Delivered before exiting; its retries and timeouts bound the wait.
        match notice.await {
            Ok(report) if report.failed().next().is_some() => {
                tracing::warn!("notification: {report}")
            }
            Ok(report) => tracing::info!("notification: {report}"),
            Err(e) => tracing::warn!("notification: {e}"),
        }
    }
    if g.json {
        output::print_json(&json!({"type": "run", "run": record}));
    } else if !g.quiet {
        print_run(&record);
    }
    if g.cancel.is_cancelled() && record.status != RunStatus::Success {
        return Ok(cairn::ops::ExitCode::Interrupted.code());
    }
    Ok(code(&record))
}

/// The exit code of a run: 0 success; 4 a replica failed; 3 some items
/// were not handled; 130 interrupted; 1 failed.
pub fn code(r: &RunRecord) -> i32 {
    match r.status {
        RunStatus::Success => exit::OK,
        RunStatus::Partial if r.replicas.iter().any(|x| !x.ok) => {
            cairn::ops::ExitCode::ReplicaFailed as i32
        }
        RunStatus::Partial => cairn::ops::ExitCode::Incomplete as i32,
        RunStatus::Failure => exit::FAILURE,
    }
}

fn print_run(r: &RunRecord) {
    println!(
        "job {}: {} after {:.1}s{}",
        r.job,
        r.status.as_str(),
        r.duration_secs(),
        if r.attempts > 1 {
            format!(" ({} attempts)", r.attempts)
        } else {
            String::new()
        }
    );
    if let Some(s) = &r.snapshot {
        println!(
            "  snapshot {} ({} added)",
            &s[..s.len().min(8)],
            bytes(r.bytes_added)
        );
    }
    for x in &r.replicas {
        match &x.error {
            None => println!("  {}: ok", x.name),
            Some(e) => println!("  {}: FAILED: {e}", x.name),
        }
    }
    if let Some(e) = &r.error {
        eprintln!("error: {e}");
    }
}

pub fn jobs(g: &Global, _a: JobsArgs) -> anyhow::Result<i32> {
    let (config, jobs) = load_jobs(g)?;
    let history = open_history(&config)?;
    let now = jiff::Timestamp::now();
    let mut rows = Vec::new();
    let mut lasts = Vec::new();
    for j in &jobs {
        let last = history.last(&j.name)?;
        let last_ok = history.last_success(&j.name)?;
        rows.push(json!({
            "name": j.name,
            "kind": j.kind.name(),
            "schedule": j.schedule.as_ref().map(|s| s.text()),
            "timezone": j.schedule.as_ref().map(|s| s.tz_name()),
            "next_run": j.schedule.as_ref().and_then(|s| s.next_after(now)),
            "backends": j.backends,
            "last_run": last,
            "last_success": last_ok.map(|r| r.finished),
        }));
        lasts.push(last);
    }
    if g.json {
        output::print_json(&json!({"type": "jobs", "jobs": rows}));
        return Ok(exit::OK);
    }
    if jobs.is_empty() {
        println!("no jobs: add [jobs.NAME] tables to the configuration (see docs/operations.md)");
        return Ok(exit::OK);
    }
    println!(
        "{:<16} {:<8} {:<22} {:<20} LAST RUN",
        "JOB", "KIND", "SCHEDULE", "NEXT RUN"
    );
    for (j, last) in jobs.iter().zip(&lasts) {
        let next = match j.schedule.as_ref().and_then(|s| s.next_after(now)) {
            Some(t) => local(t),
            None => "manual".into(),
        };
        let last = match last {
            None => "never".to_string(),
            Some(r) => format!("{} {}", local(r.started), r.status.as_str()),
        };
        println!(
            "{:<16} {:<8} {:<22} {:<20} {}",
            j.name,
            j.kind.name(),
            j.schedule.as_ref().map_or("-", |s| s.text()),
            next,
            last
        );
    }
    Ok(exit::OK)
}

fn local(t: jiff::Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub fn history(g: &Global, a: HistoryArgs) -> anyhow::Result<i32> {
    let config = repos::load_config(g)?;
    let history = open_history(&config)?;
    let runs = history.list(a.job.as_deref(), a.limit)?;
    if g.json {
        output::print_json(&json!({"type": "history", "runs": runs}));
        return Ok(exit::OK);
    }
    if runs.is_empty() {
        println!("no runs recorded in {}", history.path().display());
        return Ok(exit::OK);
    }
    println!(
        "{:<6} {:<16} {:<20} {:>8} {:<8} {:<9} {:>10}  ERROR",
        "ID", "JOB", "STARTED", "SECS", "STATUS", "SNAPSHOT", "ADDED"
    );
    for r in &runs {
        println!(
            "{:<6} {:<16} {:<20} {:>8.1} {:<8} {:<9} {:>10}  {}",
            r.id,
            r.job,
            local(r.started),
            r.duration_secs(),
            r.status.as_str(),
            r.snapshot.as_deref().map_or("-", |s| &s[..s.len().min(8)]),
            bytes(r.bytes_added),
            r.error.as_deref().unwrap_or("")
        );
    }
    Ok(exit::OK)
}
