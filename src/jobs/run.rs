//! Running one job once: the `before` hook, the operation (with retries
//! and a timeout), the `on_failure` and `after` hooks, and the record of
//! what happened. `cairn run NAME` and the daemon both come here.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use super::record::{ReplicaRun, RunRecord, RunStatus, Trigger};
use super::spec::{Job, JobKind};
use crate::config::ConfigFile;
use crate::error::chain;
use crate::ops::Outcome;
use crate::repo::Repository;

/// Opens the repository a job works on. The front end supplies it: it
/// knows where the passphrase comes from (the library never prompts) and
/// how long to wait for locks.
#[async_trait::async_trait]
pub trait Opener: Send + Sync {
    /// The repository on `backends` (names in cairn.toml; `None`: all of
    /// them), cancelled by `cancel`.
    async fn open(
        &self,
        backends: Option<&[String]>,
        cancel: CancellationToken,
    ) -> crate::Result<Repository>;
}

/// What a run needs besides the job.
#[derive(Clone)]
pub struct Runner {
    pub config: Arc<ConfigFile>,
    pub opener: Arc<dyn Opener>,
    /// Where failures, partial runs and recoveries are told (`[notify]`).
    pub notifier: Option<super::notify::Notifier>,
}

/// A run as recorded, and the notification it caused, still being
/// delivered (a caller about to exit awaits it; the daemon does not).
pub struct Recorded {
    pub record: RunRecord,
    pub notice: Option<tokio::task::JoinHandle<super::notify::NotifyReport>>,
}

/// After a timeout, how long the operation gets to stop at a safe point
/// before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// What one attempt did.
struct Attempt {
    status: RunStatus,
    snapshot: Option<String>,
    bytes_added: u64,
    replicas: Vec<ReplicaRun>,
    error: Option<String>,
}

impl Attempt {
    fn failed(error: String) -> Attempt {
        Attempt {
            status: RunStatus::Failure,
            snapshot: None,
            bytes_added: 0,
            replicas: Vec::new(),
            error: Some(error),
        }
    }
}

impl Runner {
    /// Run `job` once (with its retries); `cancel` stops it at a safe
    /// point (the daemon's shutdown). Never fails: what went wrong is in
    /// the record.
    pub async fn run(&self, job: &Job, trigger: Trigger, cancel: &CancellationToken) -> RunRecord {
        let started = Timestamp::now();
        let mut record = RunRecord {
            id: 0,
            job: job.name.clone(),
            kind: job.kind.name().to_string(),
            trigger,
            started,
            finished: started,
            status: RunStatus::Failure,
            snapshot: None,
            bytes_added: 0,
            attempts: 0,
            replicas: Vec::new(),
            error: None,
            actor: None,
        };
        tracing::info!(job = %job.name, trigger = trigger.as_str(), "job started");
        let mut notes = Vec::new();
        let go_on = match &job.hooks.before {
            None => true,
            Some(argv) => match super::hooks::run(
                "before",
                argv,
                &env(job, &record, "before"),
                job.hooks.timeout,
            )
            .await
            {
                Ok(()) => true,
                Err(e) if job.hooks.continue_on_failure => {
                    tracing::warn!(job = %job.name, "{e}; going on (continue_on_hook_failure)");
                    notes.push(e.to_string());
                    true
                }
                Err(e) => {
                    record.error = Some(format!("{e}: the job did not run"));
                    false
                }
            },
        };
        if go_on {
            loop {
                record.attempts += 1;
                let a = self.attempt_with_timeout(job, cancel).await;
                record.status = a.status;
                record.snapshot = a.snapshot;
                record.bytes_added = a.bytes_added;
                record.replicas = a.replicas;
                record.error = a.error;
                if record.status != RunStatus::Failure
                    || record.attempts > job.retries
                    || cancel.is_cancelled()
                {
                    break;
                }
                tracing::warn!(
                    job = %job.name,
                    attempt = record.attempts,
                    "attempt failed, retrying in {}: {}",
                    crate::config::duration::format(job.retry_delay),
                    record.error.as_deref().unwrap_or("")
                );
                tokio::select! {
                    _ = tokio::time::sleep(job.retry_delay) => {}
                    _ = cancel.cancelled() => break,
                }
            }
        }
        if record.status != RunStatus::Success {
            if let Some(argv) = &job.hooks.on_failure {
                if let Err(e) = super::hooks::run(
                    "on_failure",
                    argv,
                    &env(job, &record, "on_failure"),
                    job.hooks.timeout,
                )
                .await
                {
                    notes.push(e.to_string());
                }
            }
        }
        if let Some(argv) = &job.hooks.after {
            if let Err(e) = super::hooks::run(
                "after",
                argv,
                &env(job, &record, "after"),
                job.hooks.timeout,
            )
            .await
            {
                notes.push(e.to_string());
            }
        }
        if !notes.is_empty() {
            // A failing after hook does not undo a good backup; it is said.
            let mut all: Vec<String> = record.error.take().into_iter().collect();
            all.extend(notes);
            record.error = Some(all.join("; "));
        }
        record.finished = Timestamp::now();
        tracing::info!(
            job = %job.name,
            status = record.status.as_str(),
            snapshot = record.snapshot.as_deref().unwrap_or(""),
            bytes_added = record.bytes_added,
            duration_secs = record.duration_secs(),
            error = record.error.as_deref().unwrap_or(""),
            "job finished"
        );
        record
    }

    async fn attempt_with_timeout(&self, job: &Job, cancel: &CancellationToken) -> Attempt {
        let token = cancel.child_token();
        // Its own task: a backup reads files on this thread (in place), and
        // the timer must fire meanwhile.
        let task = {
            let (runner, job, token) = (self.clone(), job.clone(), token.clone());
            tokio::spawn(async move { runner.attempt(&job, token).await })
        };
        tokio::pin!(task);
        let joined = |r: Result<Attempt, tokio::task::JoinError>| {
            r.unwrap_or_else(|e| Attempt::failed(format!("the job's task ended: {e}")))
        };
        let Some(limit) = job.timeout else {
            return joined(task.await);
        };
        tokio::select! {
            a = &mut task => joined(a),
            _ = tokio::time::sleep(limit) => {
                token.cancel();
                let why = format!(
                    "the job ran longer than its timeout ({}) and was stopped",
                    crate::config::duration::format(limit)
                );
                match tokio::time::timeout(STOP_GRACE, &mut task).await {
                    Ok(a) => {
                        let mut a = joined(a);
                        a.status = RunStatus::Failure;
                        a.snapshot = None;
                        a.error = Some(match a.error {
                            Some(e) => format!("{why}: {e}"),
                            None => why,
                        });
                        a
                    }
                    Err(_) => {
                        task.abort();
                        Attempt::failed(why)
                    }
                }
            }
        }
    }

    async fn attempt(&self, job: &Job, cancel: CancellationToken) -> Attempt {
        let repo = match self
            .opener
            .open(job.backends.as_deref(), cancel.clone())
            .await
        {
            Ok(r) => r,
            Err(e) => return Attempt::failed(chain(&e)),
        };
        let mut a = match &job.kind {
            JobKind::Backup(_) | JobKind::Command(_) | JobKind::Sqlite(_) => {
                backup(&repo, job).await
            }
            JobKind::Sync => sync(&repo).await,
            JobKind::Forget { prune } => forget(&repo, &self.config, *prune).await,
            JobKind::Check { subset } => check(&repo, *subset).await,
        };
        for u in repo.unavailable() {
            a.replicas.push(ReplicaRun {
                name: u.name.clone(),
                ok: false,
                error: Some(chain(&u.error)),
                bytes: 0,
                repo_bytes: None,
            });
            if a.status == RunStatus::Success {
                a.status = RunStatus::Partial;
            }
        }
        if a.status != RunStatus::Success && a.error.is_none() {
            let failed: Vec<String> = a
                .replicas
                .iter()
                .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name)))
                .collect();
            if !failed.is_empty() {
                a.error = Some(failed.join("; "));
            }
        }
        if cancel.is_cancelled() && a.status == RunStatus::Success {
            a.status = RunStatus::Failure;
        }
        a
    }
}

/// The run's status from an operation's outcome.
fn status(o: &Outcome) -> RunStatus {
    match o {
        Outcome::Ok => RunStatus::Success,
        Outcome::Incomplete | Outcome::Partial { .. } | Outcome::Unreachable { .. } => {
            RunStatus::Partial
        }
        Outcome::Damaged | Outcome::Failed | Outcome::Interrupted => RunStatus::Failure,
    }
}

async fn backup(repo: &Repository, job: &Job) -> Attempt {
    use crate::ops::backup::stream::Stream;
    use crate::ops::backup::{backup, progress::Progress, BackupOptions};
    let stream = match &job.kind {
        JobKind::Command(argv) => Some(Stream::command(
            argv.iter().map(Into::into).collect(),
            job.filename.clone(),
        )),
        JobKind::Sqlite(db) => Some(Stream::sqlite(db.clone(), job.filename.clone())),
        _ => None,
    };
    let stream = match stream.transpose() {
        Ok(s) => s,
        Err(e) => return Attempt::failed(chain(&e)),
    };
    let paths = match &job.kind {
        JobKind::Backup(p) => p.clone(),
        _ => Vec::new(),
    };
    let mut opts = BackupOptions::new(paths);
    opts.stream = stream;
    opts.tags = job.tags.clone();
    opts.excludes = job.exclude.clone();
    opts.one_file_system = job.one_file_system;
    if let Some(h) = &job.host {
        opts.host = h.clone();
    }
    let progress = Arc::new(Progress::new(
        repo.replicas().iter().map(|r| r.name.clone()),
    ));
    let out = match backup(repo, &opts, progress).await {
        Ok(o) => o,
        Err(e) => return Attempt::failed(chain(&e)),
    };
    let outcome = out.outcome();
    let mut error = out.source_error.as_ref().map(|e| chain(e));
    if error.is_none() && !out.snapshot.errors.is_empty() {
        let shown: Vec<String> = out
            .snapshot
            .errors
            .iter()
            .take(5)
            .map(|e| e.to_string())
            .collect();
        error = Some(format!(
            "{} items could not be read: {}{}",
            out.snapshot.errors.len(),
            shown.join("; "),
            if out.snapshot.errors.len() > 5 {
                "; …"
            } else {
                ""
            }
        ));
    }
    if error.is_none() && out.interrupted {
        error = Some("interrupted: no snapshot was saved".into());
    }
    Attempt {
        status: status(&outcome),
        snapshot: out.id.map(|i| i.to_hex()),
        bytes_added: out.snapshot.summary.bytes_new,
        replicas: out
            .replicas
            .iter()
            .map(|r| ReplicaRun {
                name: r.name.clone(),
                ok: r.error.is_none(),
                error: r.error.as_ref().map(|e| chain(e)),
                bytes: r.bytes,
                repo_bytes: r.repo_bytes,
            })
            .collect(),
        error,
    }
}

async fn sync(repo: &Repository) -> Attempt {
    use crate::ops::sync::{sync, SyncOptions, SyncProgress};
    let to: Vec<usize> = (0..repo.replicas().len()).collect();
    let progress = SyncProgress::new(repo, &to);
    let opts = SyncOptions {
        from: repo.all(),
        to,
        dry_run: false,
        only: None,
    };
    let reports = match sync(repo, &opts, &progress).await {
        Ok(r) => r,
        Err(e) => return Attempt::failed(chain(&e)),
    };
    let unusable: Vec<String> = repo.unavailable().iter().map(|u| u.name.clone()).collect();
    Attempt {
        status: status(&crate::ops::sync::outcome(&reports, &unusable)),
        snapshot: None,
        bytes_added: reports.iter().map(|r| r.pack_bytes).sum(),
        replicas: reports
            .iter()
            .map(|r| ReplicaRun {
                name: r.replica.clone(),
                ok: r.error.is_none(),
                error: r.error.clone(),
                bytes: r.pack_bytes,
                repo_bytes: None,
            })
            .collect(),
        error: None,
    }
}

async fn forget(repo: &Repository, config: &ConfigFile, prune: bool) -> Attempt {
    use crate::ops::forget::{forget, ForgetOptions};
    let report = match forget(repo, &ForgetOptions::new(config.policies())).await {
        Ok(r) => r,
        Err(e) => return Attempt::failed(chain(&e)),
    };
    let mut a = Attempt {
        status: status(&report.outcome()),
        snapshot: None,
        bytes_added: 0,
        replicas: report
            .replicas
            .iter()
            .map(|r| ReplicaRun {
                name: r.replica.clone(),
                ok: r.error.is_none(),
                error: r.error.clone(),
                bytes: 0,
                repo_bytes: None,
            })
            .collect(),
        error: None,
    };
    if prune && a.status != RunStatus::Failure {
        use crate::ops::prune::{prune, PruneOptions};
        let opts = PruneOptions {
            grace: Duration::from_secs(24 * 3600),
            max_unused: 0.10,
            max_repack: u64::MAX,
            dry_run: false,
        };
        match prune(repo, &opts).await {
            Ok(p) => {
                let s = status(&p.outcome());
                if s != RunStatus::Success && a.status == RunStatus::Success {
                    a.status = s;
                    a.error = Some(format!("prune: {:?}", p.outcome()));
                }
            }
            Err(e) => {
                a.status = RunStatus::Partial;
                a.error = Some(format!("forgot, but the prune failed: {}", chain(&e)));
            }
        }
    }
    a
}

async fn check(repo: &Repository, subset: Option<crate::ops::check::Subset>) -> Attempt {
    use crate::ops::check::{check, cross_check, CheckOptions, CheckProgress};
    let progress = CheckProgress::default();
    let opts = CheckOptions {
        read_data: false,
        subset,
        only: None,
    };
    let reports = match check(repo, &opts, &progress).await {
        Ok(r) => r,
        Err(e) => return Attempt::failed(chain(&e)),
    };
    let cross = cross_check(repo, None).await;
    let unusable: Vec<String> = repo.unavailable().iter().map(|u| u.name.clone()).collect();
    let outcome = crate::ops::check::outcome(&reports, &cross, &unusable);
    let mut errors: Vec<String> = reports
        .iter()
        .flat_map(|r| r.errors.iter().map(move |e| format!("{}: {e}", r.replica)))
        .chain(cross.errors.iter().cloned())
        .collect();
    let n = errors.len();
    errors.truncate(5);
    Attempt {
        status: status(&outcome),
        snapshot: None,
        bytes_added: 0,
        replicas: reports
            .iter()
            .map(|r| ReplicaRun {
                name: r.replica.clone(),
                ok: r.unreachable.is_none() && r.errors.is_empty(),
                error: r.unreachable.clone().or_else(|| {
                    (!r.errors.is_empty()).then(|| format!("{} errors", r.errors.len()))
                }),
                bytes: 0,
                repo_bytes: None,
            })
            .collect(),
        error: (n > 0).then(|| format!("{n} errors: {}", errors.join("; "))),
    }
}

/// The environment a hook sees: what the job is and, after it ran, how it
/// went. Nothing secret.
fn env(job: &Job, r: &RunRecord, hook: &str) -> Vec<(String, String)> {
    let mut v = vec![
        ("CAIRN_JOB".into(), job.name.clone()),
        ("CAIRN_JOB_KIND".into(), job.kind.name().into()),
        ("CAIRN_HOOK".into(), hook.into()),
        ("CAIRN_TRIGGER".into(), r.trigger.as_str().into()),
        ("CAIRN_STARTED".into(), r.started.to_string()),
    ];
    if hook != "before" {
        v.extend([
            ("CAIRN_STATUS".into(), r.status.as_str().into()),
            (
                "CAIRN_SNAPSHOT".into(),
                r.snapshot.clone().unwrap_or_default(),
            ),
            ("CAIRN_BYTES_ADDED".into(), r.bytes_added.to_string()),
            ("CAIRN_ATTEMPTS".into(), r.attempts.to_string()),
            (
                "CAIRN_REPLICAS".into(),
                r.replicas
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "CAIRN_REPLICAS_FAILED".into(),
                r.failed_replicas().join(","),
            ),
            ("CAIRN_ERROR".into(), r.error.clone().unwrap_or_default()),
            (
                "CAIRN_DURATION_SECONDS".into(),
                format!(
                    "{:.0}",
                    Timestamp::now().duration_since(r.started).as_secs_f64()
                ),
            ),
        ]);
    }
    v
}

impl Runner {
    /// [`Runner::run`], then store the record in `history` (a failure to
    /// store is logged: the run happened either way) and notify what
    /// changed since the job's previous run: a failure, a partial run, or
    /// the first success after either.
    pub async fn run_recorded(
        &self,
        job: &Job,
        trigger: Trigger,
        cancel: &CancellationToken,
        history: Option<&super::history::History>,
    ) -> Recorded {
        self.run_recorded_by(job, trigger, None, cancel, history)
            .await
    }

    /// [`Runner::run_recorded`] on behalf of `actor` (an API token's
    /// label), which the record keeps.
    pub async fn run_recorded_by(
        &self,
        job: &Job,
        trigger: Trigger,
        actor: Option<&str>,
        cancel: &CancellationToken,
        history: Option<&super::history::History>,
    ) -> Recorded {
        let previous = history
            .and_then(|h| h.last(&job.name).ok().flatten())
            .map(|r| r.status);
        let mut record = self.run(job, trigger, cancel).await;
        record.actor = actor.map(str::to_string);
        if let Some(h) = history {
            if let Err(e) = h.record(&mut record) {
                tracing::error!(job = %job.name, "the run could not be recorded: {}", chain(&e));
            }
        }
        let notice = match (
            &self.notifier,
            super::notify::event_after(previous, record.status),
        ) {
            (Some(n), Some(event)) => Some(n.notify(super::notify::Notification::for_run(
                event,
                &record,
                &super::notify::local_host(),
            ))),
            _ => None,
        };
        Recorded { record, notice }
    }
}
