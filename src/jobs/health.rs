//! `/health`: whether every job and replica is doing its work, judged from
//! the daemon's [`Observations`], with the reason for each problem.
//!
//! Healthy when, for every configured job and replica:
//!
//! - the job's last run (if any) succeeded: a failed run is a problem, and
//!   so is a partial one (it names the replicas that failed);
//! - the job has a successful run newer than its `stale_after`, and the
//!   replica a successful write newer than its own;
//! - the replica was reachable at the last survey.
//!
//! A job or replica with no success at all yet (a fresh install, a job
//! just added) is judged from the daemon's start: it is healthy until its
//! `stale_after` has passed since then, so a new daemon is not unhealthy
//! before its jobs had a chance to run. Without `stale_after`, age is never
//! a problem.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::record::RunStatus;
use super::state::{JobState, Observations, ReplicaState};

/// The answer of `/health` (HTTP 200 when `ok`, else 503).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthReport {
    pub ok: bool,
    /// When it was judged.
    pub checked: Timestamp,
    pub daemon_started: Timestamp,
    /// Every problem, jobs first, each in name order.
    pub problems: Vec<Problem>,
    pub jobs: BTreeMap<String, JobHealth>,
    pub replicas: BTreeMap<String, ReplicaHealth>,
}

/// What a problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    Job,
    Replica,
}

/// Why it is a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The job's last run failed.
    Failed,
    /// The job's last run failed on some replicas.
    Partial,
    /// No success for longer than `stale_after`.
    Stale,
    /// The last survey could not reach the replica.
    Unreachable,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    pub subject: Subject,
    /// The job's or replica's name.
    pub name: String,
    pub reason: Reason,
    /// For people: `job nightly: last run failed at …: <error>`.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobHealth {
    pub ok: bool,
    pub kind: String,
    pub running: bool,
    pub last_run: Option<LastRun>,
    pub last_success: Option<Timestamp>,
    pub stale_after_seconds: Option<u64>,
    pub next_run: Option<Timestamp>,
}

/// The part of a job's last run that says how it went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LastRun {
    pub started: Timestamp,
    pub finished: Timestamp,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_replicas: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicaHealth {
    pub ok: bool,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub last_success_write: Option<Timestamp>,
    pub stale_after_seconds: Option<u64>,
    pub behind_snapshots: u64,
    /// When it was last surveyed.
    pub observed: Option<Timestamp>,
}

/// Judge `obs` at `now`.
pub fn health(obs: &Observations, now: Timestamp) -> HealthReport {
    let mut problems = Vec::new();
    let mut jobs = BTreeMap::new();
    for (name, job) in &obs.jobs {
        let before = problems.len();
        job_problems(name, job, obs.started, now, &mut problems);
        jobs.insert(name.clone(), job_health(job, problems.len() == before));
    }
    let mut replicas = BTreeMap::new();
    for (name, rep) in &obs.replicas {
        let before = problems.len();
        replica_problems(name, rep, obs.started, now, &mut problems);
        replicas.insert(
            name.clone(),
            ReplicaHealth {
                ok: problems.len() == before,
                reachable: rep.reachable,
                error: rep.error.clone(),
                last_success_write: rep.last_success_write,
                stale_after_seconds: rep.stale_after.map(|d| d.as_secs()),
                behind_snapshots: rep.behind_snapshots,
                observed: rep.observed,
            },
        );
    }
    HealthReport {
        ok: problems.is_empty(),
        checked: now,
        daemon_started: obs.started,
        problems,
        jobs,
        replicas,
    }
}

fn job_health(job: &JobState, ok: bool) -> JobHealth {
    JobHealth {
        ok,
        kind: job.kind.clone(),
        running: job.running,
        last_run: job.last_run.as_ref().map(|r| LastRun {
            started: r.started,
            finished: r.finished,
            status: r.status,
            snapshot: r.snapshot.clone(),
            failed_replicas: r.failed_replicas(),
            error: r.error.clone(),
        }),
        last_success: job.last_success,
        stale_after_seconds: job.stale_after.map(|d| d.as_secs()),
        next_run: job.next_run,
    }
}

fn job_problems(
    name: &str,
    job: &JobState,
    started: Timestamp,
    now: Timestamp,
    out: &mut Vec<Problem>,
) {
    let mut problem = |reason, message: String| {
        out.push(Problem {
            subject: Subject::Job,
            name: name.to_string(),
            reason,
            message: format!("job {name}: {message}"),
        })
    };
    if let Some(run) = &job.last_run {
        let error = run
            .error
            .as_ref()
            .map_or(String::new(), |e| format!(": {e}"));
        match run.status {
            RunStatus::Success => {}
            RunStatus::Failure => problem(
                Reason::Failed,
                format!("last run failed at {}{error}", show(run.finished)),
            ),
            RunStatus::Partial => {
                let failed = run.failed_replicas();
                let on = if failed.is_empty() {
                    String::new()
                } else {
                    format!(" (failed on {})", failed.join(", "))
                };
                problem(
                    Reason::Partial,
                    format!("last run at {} was partial{on}{error}", show(run.finished)),
                )
            }
        }
    }
    if let Some(since) = stale_since(job.last_success, job.stale_after, started, now) {
        problem(
            Reason::Stale,
            format!(
                "no successful run since {since} (stale_after {})",
                show_duration(job.stale_after.unwrap_or_default())
            ),
        );
    }
}

fn replica_problems(
    name: &str,
    rep: &ReplicaState,
    started: Timestamp,
    now: Timestamp,
    out: &mut Vec<Problem>,
) {
    let mut problem = |reason, message: String| {
        out.push(Problem {
            subject: Subject::Replica,
            name: name.to_string(),
            reason,
            message: format!("replica {name}: {message}"),
        })
    };
    if !rep.reachable {
        problem(
            Reason::Unreachable,
            match &rep.error {
                Some(e) => format!("unreachable: {e}"),
                None => "unreachable".to_string(),
            },
        );
    }
    if let Some(since) = stale_since(rep.last_success_write, rep.stale_after, started, now) {
        problem(
            Reason::Stale,
            format!(
                "no successful write since {since} (stale_after {})",
                show_duration(rep.stale_after.unwrap_or_default())
            ),
        );
    }
}

/// When the last success is older than `stale_after` at `now`, what to
/// say it dates from (the daemon's start when there was none).
fn stale_since(
    last: Option<Timestamp>,
    stale_after: Option<Duration>,
    started: Timestamp,
    now: Timestamp,
) -> Option<String> {
    let limit = SignedDuration::try_from(stale_after?).unwrap_or(SignedDuration::MAX);
    let since = last.unwrap_or(started);
    (now.duration_since(since) > limit).then(|| match last {
        Some(t) => show(t),
        None => format!("the daemon started at {}", show(started)),
    })
}

/// RFC 3339 to the second (truncated: a run that finished at :45.6 did
/// not finish at :46): what a person reading the message needs.
fn show(t: Timestamp) -> String {
    let whole = jiff::TimestampRound::new()
        .smallest(jiff::Unit::Second)
        .mode(jiff::RoundMode::Trunc);
    t.round(whole).unwrap_or(t).to_string()
}

/// `2h`, `26h`, `1h 30m`: jiff's friendly format.
fn show_duration(d: Duration) -> String {
    match SignedDuration::try_from(d) {
        Ok(d) => format!("{d:#}"),
        Err(_) => format!("{}s", d.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::state::tests::{replica_status, run, ts};
    use crate::ops::status::Status;
    use proptest::prelude::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn fresh() -> Observations {
        let mut o = Observations::new(ts("2026-12-01T00:00:00Z"));
        o.set_job("nightly", "backup", Some(26 * HOUR), None);
        o.set_replica("local", None);
        o.set_replica("s3", Some(2 * HOUR));
        o
    }

    fn messages(r: &HealthReport) -> Vec<&str> {
        r.problems.iter().map(|p| p.message.as_str()).collect()
    }

    #[test]
    fn a_fresh_daemon_is_healthy_until_stale_after_passes_since_its_start() {
        let o = fresh();
        let r = health(&o, ts("2026-12-01T01:59:59Z"));
        assert!(r.ok, "{:?}", messages(&r));
        let r = health(&o, ts("2026-12-01T02:00:01Z"));
        assert_eq!(
            messages(&r),
            [
                "replica s3: no successful write since the daemon started at \
              2026-12-01T00:00:00Z (stale_after 2h)"
            ]
        );
        let r = health(&o, ts("2026-12-02T02:00:01Z"));
        assert_eq!(
            messages(&r)[0],
            "job nightly: no successful run since the daemon started at \
             2026-12-01T00:00:00Z (stale_after 26h)"
        );
        assert!(!r.jobs["nightly"].ok && !r.replicas["s3"].ok && r.replicas["local"].ok);
    }

    #[test]
    fn a_successful_run_keeps_job_and_replicas_healthy_for_stale_after() {
        let mut o = fresh();
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-01T01:00:00Z",
            RunStatus::Success,
        ));
        assert!(health(&o, ts("2026-12-01T02:59:00Z")).ok);
        let r = health(&o, ts("2026-12-01T03:00:01Z"));
        assert_eq!(
            messages(&r),
            ["replica s3: no successful write since 2026-12-01T01:00:00Z (stale_after 2h)"]
        );
        assert_eq!(r.problems[0].reason, Reason::Stale);
        assert_eq!(r.problems[0].subject, Subject::Replica);
    }

    #[test]
    fn a_failed_or_partial_last_run_is_unhealthy_until_a_success() {
        let mut o = fresh();
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-01T01:00:00.9Z",
            RunStatus::Failure,
        ));
        let r = health(&o, ts("2026-12-01T01:00:05Z"));
        assert_eq!(
            messages(&r),
            ["job nightly: last run failed at 2026-12-01T01:00:00Z: s3: connection refused"]
        );
        assert_eq!(r.problems[0].reason, Reason::Failed);
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-01T01:10:00Z",
            RunStatus::Partial,
        ));
        let r = health(&o, ts("2026-12-01T01:10:05Z"));
        assert_eq!(
            messages(&r),
            [
                "job nightly: last run at 2026-12-01T01:10:00Z was partial (failed on s3): \
              s3: connection refused"
            ]
        );
        assert_eq!(
            r.jobs["nightly"].last_run.as_ref().unwrap().failed_replicas,
            ["s3"]
        );
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-01T01:20:00Z",
            RunStatus::Success,
        ));
        assert!(health(&o, ts("2026-12-01T01:20:05Z")).ok);
    }

    #[test]
    fn an_unreachable_replica_is_unhealthy_until_a_survey_reaches_it() {
        let mut o = fresh();
        let status = |err| Status {
            replicas: vec![replica_status("local", err)],
            snapshots: vec![],
        };
        let now = ts("2026-12-01T00:30:00Z");
        o.record_status(&status(Some("local: /mnt/backup: not found")), now);
        let r = health(&o, now);
        assert_eq!(
            messages(&r),
            ["replica local: unreachable: local: /mnt/backup: not found"]
        );
        assert_eq!(r.problems[0].reason, Reason::Unreachable);
        o.record_status(&status(None), now);
        assert!(health(&o, now).ok);
    }

    #[test]
    fn the_report_serializes_to_the_documented_json() {
        let mut o = fresh();
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-01T01:00:00Z",
            RunStatus::Partial,
        ));
        let v = serde_json::to_value(health(&o, ts("2026-12-01T01:00:05Z"))).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["problems"][0]["subject"], "job");
        assert_eq!(v["problems"][0]["name"], "nightly");
        assert_eq!(v["problems"][0]["reason"], "partial");
        assert_eq!(v["jobs"]["nightly"]["last_run"]["status"], "partial");
        assert_eq!(v["jobs"]["nightly"]["stale_after_seconds"], 26 * 3600);
        assert_eq!(v["replicas"]["s3"]["ok"], true);
        assert_eq!(
            v["replicas"]["local"]["stale_after_seconds"],
            serde_json::Value::Null
        );
    }

    /// Random observations: jobs with any last status and age, replicas
    /// reachable or not, any stale_after.
    fn observations() -> impl Strategy<Value = Observations> {
        let stale = proptest::option::of(1u64..100).prop_map(|h| h.map(|h| h * 3600));
        let status = prop_oneof![
            Just(None),
            Just(Some(RunStatus::Success)),
            Just(Some(RunStatus::Partial)),
            Just(Some(RunStatus::Failure)),
        ];
        let job = (
            stale.clone(),
            status,
            0i64..200,
            proptest::option::of(0i64..200),
        );
        let replica = (stale, any::<bool>(), proptest::option::of(0i64..200));
        (
            proptest::collection::vec(job, 0..4),
            proptest::collection::vec(replica, 0..4),
        )
            .prop_map(|(jobs, replicas)| {
                let t0 = ts("2026-12-01T00:00:00Z");
                let at = |h: i64| t0 + SignedDuration::from_hours(h);
                let mut o = Observations::new(at(100));
                for (i, (stale, status, ran, succeeded)) in jobs.into_iter().enumerate() {
                    let name = format!("job{i}");
                    o.set_job(&name, "backup", stale.map(Duration::from_secs), None);
                    if let Some(status) = status {
                        let mut r = run(&name, "backup", "2026-12-01T00:00:00Z", status);
                        r.finished = at(ran);
                        o.record_run(&r);
                    }
                    if let Some(h) = succeeded {
                        let j = o.jobs.get_mut(&name).unwrap();
                        j.last_success = j.last_success.max(Some(at(h)));
                    }
                }
                for (i, (stale, reachable, wrote)) in replicas.into_iter().enumerate() {
                    let name = format!("rep{i}");
                    o.set_replica(&name, stale.map(Duration::from_secs));
                    let r = o.replicas.get_mut(&name).unwrap();
                    r.reachable = reachable;
                    r.error = (!reachable).then(|| "connection refused".into());
                    r.last_success_write = wrote.map(at);
                }
                o
            })
    }

    proptest! {
        #[test]
        fn ok_means_no_problem_and_every_problem_names_its_subject(
            o in observations(), h in 0i64..400,
        ) {
            let now = ts("2026-12-01T00:00:00Z") + SignedDuration::from_hours(h);
            let r = health(&o, now);
            prop_assert_eq!(r.ok, r.problems.is_empty());
            for (name, j) in &r.jobs {
                let mine = r.problems.iter().any(|p| p.subject == Subject::Job && &p.name == name);
                prop_assert_eq!(j.ok, !mine);
            }
            for (name, rep) in &r.replicas {
                let mine = r.problems.iter().any(|p| p.subject == Subject::Replica && &p.name == name);
                prop_assert_eq!(rep.ok, !mine);
                prop_assert_eq!(rep.reachable, !r.problems.iter().any(|p| &p.name == name && p.reason == Reason::Unreachable));
            }
            for p in &r.problems {
                let subject = match p.subject { Subject::Job => "job", Subject::Replica => "replica" };
                let prefix = format!("{} {}: ", subject, p.name);
                prop_assert!(p.message.starts_with(&prefix));
            }
        }

        #[test]
        fn time_alone_never_heals(o in observations(), h in 0i64..400, later in 0i64..400) {
            let now = ts("2026-12-01T00:00:00Z") + SignedDuration::from_hours(h);
            let before = health(&o, now);
            let after = health(&o, now + SignedDuration::from_hours(later));
            for p in &before.problems {
                prop_assert!(after.problems.iter().any(|q| q.name == p.name && q.reason == p.reason));
            }
        }

        #[test]
        fn a_job_is_healthy_exactly_when_its_last_run_succeeded_and_is_fresh(
            o in observations(), h in 0i64..400,
        ) {
            let now = ts("2026-12-01T00:00:00Z") + SignedDuration::from_hours(h);
            let r = health(&o, now);
            for (name, j) in &o.jobs {
                let last_ok = j.last_run.as_ref().is_none_or(|r| r.status == RunStatus::Success);
                let fresh = j.stale_after.is_none_or(|s| {
                    let since = j.last_success.unwrap_or(o.started);
                    now.duration_since(since) <= SignedDuration::try_from(s).unwrap()
                });
                prop_assert_eq!(r.jobs[name].ok, last_ok && fresh, "{}: {:?}", name, r.problems);
            }
        }
    }
}
