//! The daemon's loop: start each job when its schedule comes due (plus
//! jitter), never two runs of one job at once; run missed jobs once at
//! start (`catch_up`); survey the replicas for `/metrics` and `/health`;
//! reload on request; on shutdown, let running jobs finish (up to a
//! timeout), then stop them at a safe point.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::http::SharedObservations;
use crate::config::ConfigFile;
use crate::jobs::history::History;
use crate::jobs::{Job, RunRecord, Runner, Trigger};

/// What the daemon runs: the configuration, its checked jobs and a runner
/// over them. A reload builds a new one.
#[derive(Clone)]
pub struct Setup {
    pub config: Arc<ConfigFile>,
    pub jobs: Vec<Job>,
    pub runner: Runner,
}

/// Builds a [`Setup`] again from the configuration file (SIGHUP); the
/// error says why the file cannot be used (the old setup stays).
pub type Reload = Box<dyn Fn() -> Result<Setup, String> + Send + Sync>;

/// Requests from the front end (signals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Reload,
    Shutdown,
}

pub struct Options {
    pub history: Arc<History>,
    pub observations: SharedObservations,
    /// How long a shutdown waits for running jobs before stopping them.
    pub shutdown_timeout: Duration,
    /// How often replicas are surveyed (also after each job).
    pub status_interval: Duration,
}

/// What a daemon did before it stopped.
#[derive(Debug, Default, serde::Serialize)]
pub struct DaemonReport {
    pub runs: u64,
    pub failures: u64,
    pub reloads: u64,
    /// Jobs still running at shutdown after the timeout, stopped at a safe
    /// point.
    pub stopped: Vec<String>,
}

/// After a job was told to stop, how long it gets to record its run.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// How often the daemon looks for jobs and replicas gone stale, to notify
/// (more often when replicas are surveyed more often).
const STALE_CHECK: Duration = Duration::from_secs(60);
/// The loop wakes at least this often, so a clock change or a suspended
/// machine does not delay a run by more.
const MAX_SLEEP: Duration = Duration::from_secs(30);

struct Slot {
    job: Job,
    /// The cron occurrence the next run is for, and when it starts (the
    /// occurrence plus jitter).
    next: Option<(Timestamp, Timestamp)>,
    running: bool,
}

fn next_of(job: &Job, after: Timestamp) -> Option<(Timestamp, Timestamp)> {
    let base = job.schedule.as_ref()?.next_after(after)?;
    let jitter = if job.jitter.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_millis(rand::random_range(0..=job.jitter.as_millis() as u64))
    };
    Some((base, base + jitter))
}

fn observe(obs: &SharedObservations, f: impl FnOnce(&mut crate::jobs::Observations)) {
    f(&mut obs.write().unwrap_or_else(PoisonError::into_inner));
}

/// Declare `setup`'s jobs and replicas in the observations.
fn declare(obs: &SharedObservations, setup: &Setup, slots: &BTreeMap<String, Slot>) {
    observe(obs, |o| {
        let names: Vec<&str> = setup.jobs.iter().map(|j| j.name.as_str()).collect();
        o.retain_jobs(&names);
        for j in &setup.jobs {
            let next = slots.get(&j.name).and_then(|s| s.next.map(|n| n.1));
            o.set_job(&j.name, j.kind.name(), j.stale_after, next);
        }
        let replicas: Vec<&str> = setup.config.backends.keys().map(String::as_str).collect();
        o.retain_replicas(&replicas);
        for (name, b) in &setup.config.backends {
            o.set_replica(name, b.stale_after);
        }
    });
}

/// Run the daemon until [`Control::Shutdown`] (or the control channel
/// closes).
pub async fn run(
    mut setup: Setup,
    opts: Options,
    reload: Reload,
    mut control: mpsc::Receiver<Control>,
) -> DaemonReport {
    let mut report = DaemonReport::default();
    let jobs_cancel = CancellationToken::new();
    let now = Timestamp::now();
    let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
    let mut tasks: JoinSet<RunRecord> = JoinSet::new();
    let mut catch_up = Vec::new();
    for job in &setup.jobs {
        let last = opts.history.last(&job.name).ok().flatten();
        if job.catch_up {
            if let (Some(s), Some(last)) = (&job.schedule, &last) {
                if s.missed_since(last.started, now) {
                    catch_up.push(job.name.clone());
                }
            }
        }
        slots.insert(
            job.name.clone(),
            Slot {
                job: job.clone(),
                next: next_of(job, now),
                running: false,
            },
        );
    }
    declare(&opts.observations, &setup, &slots);
    let seeded: Vec<RunRecord> = setup
        .jobs
        .iter()
        .filter_map(|j| opts.history.list(Some(&j.name), 50).ok())
        .flatten()
        .collect::<Vec<_>>();
    let mut seeded = seeded;
    seeded.sort_by_key(|r| r.id);
    observe(&opts.observations, |o| o.seed_from_history(&seeded));
    tracing::info!(
        jobs = setup.jobs.len(),
        catch_up = catch_up.len(),
        "daemon started"
    );

    let start = |tasks: &mut JoinSet<RunRecord>,
                 slots: &mut BTreeMap<String, Slot>,
                 setup: &Setup,
                 name: &str,
                 trigger: Trigger| {
        let Some(slot) = slots.get_mut(name) else {
            return;
        };
        if slot.running {
            tracing::warn!(job = name, "still running: this run is skipped");
            return;
        }
        slot.running = true;
        observe(&opts.observations, |o| o.set_running(name, true));
        let (runner, job, cancel, history) = (
            setup.runner.clone(),
            slot.job.clone(),
            jobs_cancel.clone(),
            opts.history.clone(),
        );
        tasks.spawn(async move {
            let done = runner
                .run_recorded(&job, trigger, &cancel, Some(&history))
                .await;
            if let Some(notice) = done.notice {
                // Logged when delivered; the schedule does not wait for it.
                tokio::spawn(async move {
                    if let Ok(report) = notice.await {
                        if report.failed().next().is_some() {
                            tracing::warn!("notification: {report}");
                        } else {
                            tracing::info!("notification: {report}");
                        }
                    }
                });
            }
            done.record
        });
    };
    for name in &catch_up {
        start(&mut tasks, &mut slots, &setup, name, Trigger::CatchUp);
    }

    let survey_cancel = CancellationToken::new();
    let mut survey: Option<tokio::task::JoinHandle<()>> = None;
    let mut survey_wanted = true;
    let mut next_survey = tokio::time::Instant::now();
    let stale_every = STALE_CHECK.min(opts.status_interval);
    let mut next_stale_check = tokio::time::Instant::now() + stale_every;

    loop {
        let now = Timestamp::now();
        let due: Vec<String> = slots
            .iter()
            .filter(|(_, s)| s.next.is_some_and(|(_, at)| at <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            start(&mut tasks, &mut slots, &setup, &name, Trigger::Schedule);
            if let Some(slot) = slots.get_mut(&name) {
                slot.next = next_of(&slot.job, now);
                let next = slot.next.map(|n| n.1);
                observe(&opts.observations, |o| o.set_next_run(&name, next));
            }
        }
        if survey.as_ref().is_none_or(|s| s.is_finished())
            && (survey_wanted || tokio::time::Instant::now() >= next_survey)
        {
            survey_wanted = false;
            next_survey = tokio::time::Instant::now() + opts.status_interval;
            survey = Some(tokio::spawn(survey_replicas(
                setup.runner.clone(),
                opts.observations.clone(),
                survey_cancel.clone(),
            )));
        }
        if tokio::time::Instant::now() >= next_stale_check {
            next_stale_check = tokio::time::Instant::now() + stale_every;
            notify_stale(&setup, &opts.observations);
        }
        let wake = slots
            .values()
            .filter_map(|s| s.next.map(|n| n.1))
            .min()
            .map(|t| t.duration_since(Timestamp::now()))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP)
            .min(next_survey.saturating_duration_since(tokio::time::Instant::now()))
            .min(next_stale_check.saturating_duration_since(tokio::time::Instant::now()));
        tokio::select! {
            _ = tokio::time::sleep(wake) => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                finished(&mut report, &mut slots, &opts, done);
                survey_wanted = true;
            }
            c = control.recv() => match c {
                Some(Control::Reload) => match reload() {
                    Ok(new) => {
                        report.reloads += 1;
                        let now = Timestamp::now();
                        let mut new_slots = BTreeMap::new();
                        for job in &new.jobs {
                            let running = slots.get(&job.name).is_some_and(|s| s.running);
                            new_slots.insert(job.name.clone(), Slot {
                                job: job.clone(),
                                next: next_of(job, now),
                                running,
                            });
                        }
                        slots = new_slots;
                        setup = new;
                        declare(&opts.observations, &setup, &slots);
                        tracing::info!(jobs = setup.jobs.len(), "configuration reloaded");
                    }
                    Err(e) => tracing::error!("the configuration was not reloaded (the old one stays): {e}"),
                },
                Some(Control::Shutdown) | None => break,
            }
        }
    }

    // Shutdown: no new runs; running ones may finish.
    survey_cancel.cancel();
    let running: Vec<String> = slots
        .iter()
        .filter(|(_, s)| s.running)
        .map(|(n, _)| n.clone())
        .collect();
    if !running.is_empty() {
        tracing::info!(
            jobs = running.join(","),
            "shutting down: waiting up to {} for running jobs",
            crate::config::duration::format(opts.shutdown_timeout)
        );
    }
    let deadline = tokio::time::Instant::now() + opts.shutdown_timeout;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(done)) => finished(&mut report, &mut slots, &opts, done),
            Ok(None) => break,
            Err(_) => {
                report.stopped = slots
                    .iter()
                    .filter(|(_, s)| s.running)
                    .map(|(n, _)| n.clone())
                    .collect();
                tracing::warn!(
                    jobs = report.stopped.join(","),
                    "shutdown timeout: stopping running jobs at a safe point"
                );
                jobs_cancel.cancel();
                let grace = tokio::time::Instant::now() + STOP_GRACE;
                while let Ok(Some(done)) = tokio::time::timeout_at(grace, tasks.join_next()).await {
                    finished(&mut report, &mut slots, &opts, done);
                }
                tasks.abort_all();
                break;
            }
        }
    }
    if let Some(s) = survey {
        s.abort();
    }
    tracing::info!(runs = report.runs, "daemon stopped");
    report
}

fn finished(
    report: &mut DaemonReport,
    slots: &mut BTreeMap<String, Slot>,
    opts: &Options,
    done: Result<RunRecord, tokio::task::JoinError>,
) {
    let record = match done {
        Ok(r) => r,
        Err(e) => {
            // A panic in a job: the slot is not known from here, so the
            // running flags are cleared by name below.
            tracing::error!("a job's task ended abnormally: {e}");
            return;
        }
    };
    report.runs += 1;
    if record.status != crate::jobs::RunStatus::Success {
        report.failures += 1;
    }
    if let Some(slot) = slots.get_mut(&record.job) {
        slot.running = false;
    }
    observe(&opts.observations, |o| o.record_run(&record));
}

/// Tell about every job and replica without a success for longer than
/// its `stale_after`; the notifier's rate limit turns this into one
/// notification per `repeat_after` while it stays stale.
fn notify_stale(setup: &Setup, obs: &SharedObservations) {
    use crate::jobs::health::{Reason, Subject};
    use crate::jobs::notify::{Event, Notification};
    let Some(notifier) = &setup.runner.notifier else {
        return;
    };
    let now = Timestamp::now();
    let report =
        crate::jobs::health::health(&obs.read().unwrap_or_else(PoisonError::into_inner), now);
    for p in report.problems.iter().filter(|p| p.reason == Reason::Stale) {
        let (job, replicas) = match p.subject {
            Subject::Job => {
                let replicas = setup
                    .jobs
                    .iter()
                    .find(|j| j.name == p.name)
                    .and_then(|j| j.backends.clone())
                    .unwrap_or_else(|| setup.config.backends.keys().cloned().collect());
                (Some(p.name.clone()), replicas)
            }
            Subject::Replica => (None, vec![p.name.clone()]),
        };
        // Delivered in the background; the schedule does not wait for it.
        drop(notifier.notify(Notification {
            event: Event::Stale,
            job,
            replicas,
            error: Some(p.message.clone()),
            snapshot: None,
            time: now,
            host: crate::jobs::notify::local_host(),
            summary: p.message.clone(),
        }));
    }
}

/// Survey every replica (snapshots, sizes, lag) for `/metrics` and
/// `/health`; an unreachable replica is recorded as such.
async fn survey_replicas(runner: Runner, obs: SharedObservations, cancel: CancellationToken) {
    let repo = match runner.opener.open(None, cancel).await {
        Ok(r) => r,
        Err(e) => {
            let why = crate::error::chain(&e);
            tracing::warn!("surveying the replicas: {why}");
            let names: Vec<String> = runner.config.backends.keys().cloned().collect();
            observe(&obs, |o| {
                for n in names {
                    o.replica_unreachable(&n, why.clone(), Timestamp::now());
                }
            });
            return;
        }
    };
    let status = crate::ops::status::status(&repo, None).await;
    observe(&obs, |o| {
        let now = Timestamp::now();
        for u in repo.unavailable() {
            o.replica_unreachable(&u.name, crate::error::chain(&u.error), now);
        }
        match &status {
            Ok(s) => o.record_status(s, now),
            Err(e) => tracing::warn!("surveying the replicas: {}", crate::error::chain(e)),
        }
    });
}
