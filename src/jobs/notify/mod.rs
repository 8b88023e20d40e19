//! Notifications: telling people that a job failed, was partial, went
//! stale, or recovered, by webhook and e-mail (`[notify]`, see
//! [`crate::config::notify`]).
//!
//! The runner and the daemon decide which event happened ([`event_after`]
//! helps); this module only delivers. [`Notifier::notify`] never blocks its
//! caller: delivery runs on the tokio runtime, each attempt bounded by
//! `timeout`, a bounded number of retries with a doubling wait, and a
//! [`NotifyReport`] at the end that says what went where and what failed.
//! A repeat of the same event for the same job and replicas within
//! `repeat_after` is suppressed; a recovery always goes out and lifts the
//! suppression for its job.
//!
//! No secret (the webhook URL, the SMTP password) is ever put in a log
//! line, an error or a report: a webhook is named by its host.

mod email;
mod limit;
mod webhook;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::notify::NotifyConfig;
use crate::config::{duration, ConfigError};
use crate::jobs::{RunRecord, RunStatus};

/// What happened, as the webhook's `event` field names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// A run failed: no usable result.
    Failure,
    /// A run finished, but some replicas failed.
    Partial,
    /// A job or replica has had no success for longer than its
    /// `stale_after`.
    Stale,
    /// The first success after a failure, a partial run or staleness.
    Recovery,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Partial => "partial",
            Event::Stale => "stale",
            Event::Recovery => "recovery",
        }
    }

    /// Every event, the default of `notify.events`.
    pub fn all() -> Vec<Event> {
        vec![
            Event::Failure,
            Event::Partial,
            Event::Stale,
            Event::Recovery,
        ]
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event a run's outcome calls for, given the outcome of the job's
/// run before it (`None`: there was none): a failure or partial run always,
/// a success only when it ends a run of non-successes.
pub fn event_after(previous: Option<RunStatus>, current: RunStatus) -> Option<Event> {
    match (previous, current) {
        (_, RunStatus::Failure) => Some(Event::Failure),
        (_, RunStatus::Partial) => Some(Event::Partial),
        (Some(RunStatus::Failure | RunStatus::Partial), RunStatus::Success) => {
            Some(Event::Recovery)
        }
        (None | Some(RunStatus::Success), RunStatus::Success) => None,
    }
}

/// One notification, as the webhook's JSON body carries it (field for
/// field) and the e-mail tells it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub event: Event,
    /// The job it is about (none for a replica gone stale by itself).
    pub job: Option<String>,
    /// The replicas concerned: those that failed, or for a recovery or a
    /// stale job, those the job writes to.
    pub replicas: Vec<String>,
    /// Why, as an error chain.
    pub error: Option<String>,
    /// The snapshot the run saved, if any.
    pub snapshot: Option<String>,
    pub time: jiff::Timestamp,
    /// The machine cairn runs on.
    pub host: String,
    /// One line for a human.
    pub summary: String,
}

impl Notification {
    /// The notification of `event` about the run `run` on `host`.
    pub fn for_run(event: Event, run: &RunRecord, host: &str) -> Notification {
        let failed = run.failed_replicas();
        let all: Vec<String> = run.replicas.iter().map(|r| r.name.clone()).collect();
        let replicas = match event {
            Event::Failure | Event::Partial if !failed.is_empty() => failed,
            _ => all,
        };
        let tries = if run.attempts > 1 {
            format!(" after {} attempts", run.attempts)
        } else {
            String::new()
        };
        let summary = match event {
            Event::Failure => format!("job {} failed{tries}", run.job),
            Event::Partial => format!(
                "job {} finished, but replica{} {} failed",
                run.job,
                if replicas.len() == 1 { "" } else { "s" },
                replicas.join(", ")
            ),
            Event::Stale => format!(
                "job {} has had no successful run since its last run at {}",
                run.job, run.finished
            ),
            Event::Recovery => format!("job {} succeeded again", run.job),
        };
        let summary = match (&run.error, event) {
            (Some(e), Event::Failure | Event::Partial) => {
                format!("{summary}: {}", e.lines().next().unwrap_or_default())
            }
            _ => summary,
        };
        Notification {
            event,
            job: Some(run.job.clone()),
            replicas,
            error: run.error.clone(),
            snapshot: run.snapshot.clone(),
            time: run.finished,
            host: host.to_string(),
            summary,
        }
    }

    /// A title (an e-mail's subject): `cairn: failure of job nightly on
    /// host x`.
    pub fn title(&self) -> String {
        let of = match (&self.job, self.replicas.as_slice()) {
            (Some(job), _) => format!(" of job {job}"),
            (None, []) => String::new(),
            (None, [one]) => format!(" of replica {one}"),
            (None, many) => format!(" of replicas {}", many.join(", ")),
        };
        format!("cairn: {}{of} on host {}", self.event, self.host)
    }

    /// The facts, one per line, for a plain-text message.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.summary);
        let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<10}{v}\n"));
        line("Event:", self.event.as_str());
        if let Some(job) = &self.job {
            line("Job:", job);
        }
        if !self.replicas.is_empty() {
            line("Replicas:", &self.replicas.join(", "));
        }
        if let Some(s) = &self.snapshot {
            line("Snapshot:", s);
        }
        let time = self.time.round(jiff::Unit::Second).unwrap_or(self.time);
        line("Time:", &time.to_string());
        line("Host:", &self.host);
        if let Some(e) = &self.error {
            out.push_str("\nError:\n");
            for l in e.lines() {
                out.push_str("  ");
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// This machine's name, for [`Notification::host`].
pub fn local_host() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// Where a notification was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A webhook, named by its host only (its URL is a secret).
    Webhook { host: String },
    /// E-mail through `server` (host:port) to `to`.
    Email { server: String, to: Vec<String> },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Webhook { host } => write!(f, "webhook {host}"),
            Target::Email { server, to } => write!(f, "e-mail to {} via {server}", to.join(", ")),
        }
    }
}

/// Why one attempt at a delivery failed. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("no answer within {}", duration::format(*.0))]
    Timeout(Duration),
    /// The webhook answered with a status that is not a success.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// The connection could not be made or broke (refused, DNS, TLS).
    #[error("{0}")]
    Connection(String),
    /// The SMTP server refused (the login, the sender, a recipient, the
    /// message), with its answer.
    #[error("{0}")]
    Refused(String),
}

/// One target's delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub target: Target,
    /// Attempts made (1 + retries at most).
    pub attempts: u32,
    /// The last attempt's error; `None` when delivered.
    pub error: Option<NotifyError>,
}

impl Delivery {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.attempts;
        let s = if n == 1 { "" } else { "s" };
        match &self.error {
            None => write!(f, "{}: delivered ({n} attempt{s})", self.target),
            Some(e) => write!(f, "{}: gave up after {n} attempt{s}: {e}", self.target),
        }
    }
}

/// Why nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// The event is not in `notify.events`.
    NotSubscribed,
    /// The same event for the same job and replicas went out `ago`, less
    /// than `repeat_after` before.
    RateLimited {
        ago: Duration,
        repeat_after: Duration,
    },
}

/// What became of one notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyReport {
    pub event: Event,
    pub job: Option<String>,
    pub replicas: Vec<String>,
    /// Set when nothing was attempted, and why.
    pub skipped: Option<Skipped>,
    /// One per target (webhook, e-mail), when something was attempted.
    pub deliveries: Vec<Delivery>,
}

impl NotifyReport {
    fn new(n: &Notification) -> NotifyReport {
        NotifyReport {
            event: n.event,
            job: n.job.clone(),
            replicas: n.replicas.clone(),
            skipped: None,
            deliveries: Vec::new(),
        }
    }

    /// Whether it reached at least one target.
    pub fn delivered(&self) -> bool {
        self.deliveries.iter().any(Delivery::delivered)
    }

    /// The deliveries that gave up.
    pub fn failed(&self) -> impl Iterator<Item = &Delivery> {
        self.deliveries.iter().filter(|d| !d.delivered())
    }
}

impl fmt::Display for NotifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} notification", self.event)?;
        if let Some(job) = &self.job {
            write!(f, " for job {job}")?;
        }
        match &self.skipped {
            Some(Skipped::NotSubscribed) => write!(f, ": not sent (not in notify.events)"),
            Some(Skipped::RateLimited { ago, repeat_after }) => write!(
                f,
                ": not sent, the same went out {} ago (repeat_after = {})",
                duration::format(Duration::from_secs(ago.as_secs())),
                duration::format(*repeat_after)
            ),
            None => {
                for (i, d) in self.deliveries.iter().enumerate() {
                    write!(f, "{}{d}", if i == 0 { ": " } else { "; " })?;
                }
                Ok(())
            }
        }
    }
}

/// A failed attempt, and whether another could succeed.
struct AttemptError {
    error: NotifyError,
    retry: bool,
}

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Sends notifications as `[notify]` says. Cheap to clone: clones share the
/// clients and the rate limit.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    webhook: Option<webhook::Webhook>,
    email: Option<email::Email>,
    events: Vec<Event>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    limit: Mutex<limit::RateLimit>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The targets as shown everywhere: the webhook by its host only.
        let targets: Vec<String> = self.targets().iter().map(ToString::to_string).collect();
        f.debug_struct("Notifier")
            .field("targets", &targets)
            .field("events", &self.inner.events)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier for `cfg`, checked, its secrets read (`{ env }`,
    /// `{ file }`), its CA file loaded and its clients built. Nothing is
    /// sent or connected to yet.
    pub fn new(cfg: &NotifyConfig) -> Result<Notifier, ConfigError> {
        cfg.validate()?;
        let webhook = match &cfg.webhook {
            Some(w) => Some(webhook::Webhook::new(w, cfg.format, cfg.timeout)?),
            None => None,
        };
        let email = match &cfg.email {
            Some(e) => Some(email::Email::new(e, cfg.timeout)?),
            None => None,
        };
        Ok(Notifier {
            inner: Arc::new(Inner {
                webhook,
                email,
                events: cfg.events.clone(),
                timeout: cfg.timeout,
                retries: cfg.retries,
                backoff: cfg.backoff,
                limit: Mutex::new(limit::RateLimit::new(cfg.repeat_after)),
            }),
        })
    }

    /// Where notifications go, for a log line at start-up.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        if let Some(w) = &self.inner.webhook {
            t.push(w.target());
        }
        if let Some(e) = &self.inner.email {
            t.push(e.target());
        }
        t
    }

    /// Send `n` to every target, without blocking the caller: the delivery
    /// runs as a task on the current tokio runtime (this must be called
    /// inside one) and the handle yields its report. Dropping the handle
    /// does not stop the delivery. Whether it is rate-limited is decided
    /// here, at the call, so calls are judged in the order they are made.
    pub fn notify(&self, n: Notification) -> tokio::task::JoinHandle<NotifyReport> {
        let mut report = NotifyReport::new(&n);
        if !self.inner.events.contains(&n.event) {
            report.skipped = Some(Skipped::NotSubscribed);
            return tokio::spawn(async move { report });
        }
        let key = limit::Key::of(&n);
        let now = Instant::now();
        let admitted = self.lock_limit().admit(&key, now);
        if let limit::Admit::Suppressed { ago, repeat_after } = admitted {
            tracing::debug!(event = %n.event, job = ?n.job, "notification suppressed (repeat_after)");
            report.skipped = Some(Skipped::RateLimited { ago, repeat_after });
            return tokio::spawn(async move { report });
        }
        let this = self.clone();
        tokio::spawn(async move {
            let inner = &this.inner;
            let hook = async {
                match &inner.webhook {
                    Some(w) => Some(inner.deliver(w.target(), || w.send(&n)).await),
                    None => None,
                }
            };
            let mail = async {
                match &inner.email {
                    Some(e) => Some(inner.deliver(e.target(), || e.send(&n)).await),
                    None => None,
                }
            };
            let (hook, mail) = tokio::join!(hook, mail);
            report.deliveries = hook.into_iter().chain(mail).collect();
            for d in &report.deliveries {
                match &d.error {
                    None => tracing::info!(event = %n.event, job = ?n.job, "notification: {d}"),
                    Some(_) => tracing::warn!(event = %n.event, job = ?n.job, "notification: {d}"),
                }
            }
            // Nothing got through: the next repeat must not be held back
            // by a notification nobody saw.
            if !report.delivered() {
                this.lock_limit().forget(&key, now);
            }
            report
        })
    }

    fn lock_limit(&self) -> std::sync::MutexGuard<'_, limit::RateLimit> {
        // The limit holds no invariant a panic elsewhere could break.
        self.inner
            .limit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Attempt `send` until it succeeds, fails for good, or `retries` more
    /// attempts have failed; each attempt bounded by `timeout`, the wait
    /// between them doubling from `backoff`.
    async fn deliver<F, Fut>(&self, target: Target, send: F) -> Delivery
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), AttemptError>>,
    {
        let mut wait = self.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match tokio::time::timeout(self.timeout, send()).await {
                Ok(r) => r,
                Err(_) => Err(AttemptError {
                    error: NotifyError::Timeout(self.timeout),
                    retry: true,
                }),
            };
            match result {
                Ok(()) => {
                    return Delivery {
                        target,
                        attempts,
                        error: None,
                    }
                }
                Err(e) if !e.retry || attempts > self.retries => {
                    return Delivery {
                        target,
                        attempts,
                        error: Some(e.error),
                    }
                }
                Err(e) => {
                    tracing::debug!(
                        "notification to {target}: attempt {attempts} failed: {}",
                        e.error
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// An error and the errors under it, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    // Layers that each put their kind first repeat it ("Connection error:
    // Connection error: …"): say it once.
    let mut parts: Vec<&str> = Vec::new();
    for p in out.split(": ") {
        if parts.last() != Some(&p) {
            parts.push(p);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests;
