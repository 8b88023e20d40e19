//! What the daemon knows about its jobs and replicas: updated by the
//! daemon as jobs are configured, run and finish and as replicas are
//! surveyed, and read by `/metrics` ([`super::metrics`]) and `/health`
//! ([`super::health`]).
//!
//! Jobs and replicas are declared from the configuration
//! ([`Observations::set_job`], [`Observations::set_replica`]) before runs
//! and surveys are recorded: a run or survey of a job or replica that is
//! not (or no longer) configured is ignored, so a job removed by a reload
//! does not linger in the metrics and history rows of removed jobs do not
//! resurrect them.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::record::{RunRecord, RunStatus};
use crate::ops::status::Status;

/// One configured job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobState {
    /// `backup`, `command`, `sqlite`, `sync`, `forget` or `check`.
    pub kind: String,
    /// The job is stale when it has had no successful run for this long.
    pub stale_after: Option<Duration>,
    pub next_run: Option<Timestamp>,
    pub running: bool,
    pub last_run: Option<RunRecord>,
    /// When the last run with status success finished. A partial run
    /// (some replica failed) does not count: the job did not do all it is
    /// configured to do.
    pub last_success: Option<Timestamp>,
    /// Runs finished since the daemon started.
    pub runs_total: u64,
    /// Runs since the daemon started that did not succeed (status failure
    /// or partial).
    pub failures_total: u64,
    /// New data added by the runs since the daemon started.
    pub bytes_added_total: u64,
}

/// One configured replica.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaState {
    /// The replica is stale when nothing was written to it successfully
    /// for this long.
    pub stale_after: Option<Duration>,
    /// Whether the last survey reached it (true until a survey says
    /// otherwise).
    pub reachable: bool,
    /// Why the last survey could not reach it (an error chain, no secrets).
    pub error: Option<String>,
    /// Snapshot files on the replica, at the last survey that reached it
    /// (kept while it is unreachable).
    pub snapshots: u64,
    /// Bytes of packs on the replica, at the last survey that reached it.
    pub bytes: u64,
    /// Snapshots complete on another replica but not on this one.
    pub behind_snapshots: u64,
    /// Bytes of packs it needs to catch up.
    pub behind_bytes: u64,
    /// The newest successful write seen: the end of a writing run that
    /// succeeded on it, or the newest snapshot write a survey reported.
    pub last_success_write: Option<Timestamp>,
    /// When the last survey was made (reached or not).
    pub observed: Option<Timestamp>,
}

/// Everything the daemon observes.
#[derive(Clone, Debug, PartialEq)]
pub struct Observations {
    /// When the daemon started: the reference for staleness of jobs and
    /// replicas with no success at all yet.
    pub started: Timestamp,
    pub jobs: BTreeMap<String, JobState>,
    pub replicas: BTreeMap<String, ReplicaState>,
}

/// Job kinds whose successful run wrote a snapshot or data to the
/// replicas it names (forget only deletes, check only reads).
const WRITING_KINDS: [&str; 4] = ["backup", "command", "sqlite", "sync"];

impl Observations {
    pub fn new(now: Timestamp) -> Self {
        Observations {
            started: now,
            jobs: BTreeMap::new(),
            replicas: BTreeMap::new(),
        }
    }

    /// Declare a job from the configuration, or update it after a reload
    /// (its runs and counters are kept).
    pub fn set_job(
        &mut self,
        name: &str,
        kind: &str,
        stale_after: Option<Duration>,
        next_run: Option<Timestamp>,
    ) {
        let job = self
            .jobs
            .entry(name.to_string())
            .or_insert_with(|| JobState {
                kind: String::new(),
                stale_after: None,
                next_run: None,
                running: false,
                last_run: None,
                last_success: None,
                runs_total: 0,
                failures_total: 0,
                bytes_added_total: 0,
            });
        job.kind = kind.to_string();
        job.stale_after = stale_after;
        job.next_run = next_run;
    }

    /// Declare a replica from the configuration, or update it after a
    /// reload.
    pub fn set_replica(&mut self, name: &str, stale_after: Option<Duration>) {
        self.replicas
            .entry(name.to_string())
            .or_insert_with(|| ReplicaState {
                stale_after: None,
                reachable: true,
                error: None,
                snapshots: 0,
                bytes: 0,
                behind_snapshots: 0,
                behind_bytes: 0,
                last_success_write: None,
                observed: None,
            })
            .stale_after = stale_after;
    }

    /// After a reload: forget the jobs that are no longer configured.
    pub fn retain_jobs<S: AsRef<str>>(&mut self, configured: &[S]) {
        self.jobs
            .retain(|name, _| configured.iter().any(|c| c.as_ref() == name));
    }

    /// After a reload: forget the replicas that are no longer configured.
    pub fn retain_replicas<S: AsRef<str>>(&mut self, configured: &[S]) {
        self.replicas
            .retain(|name, _| configured.iter().any(|c| c.as_ref() == name));
    }

    /// A job started (`true`) or finished (`false`) running.
    pub fn set_running(&mut self, job: &str, running: bool) {
        if let Some(j) = self.jobs.get_mut(job) {
            j.running = running;
        }
    }

    /// A job's next scheduled run, after the scheduler computed it.
    pub fn set_next_run(&mut self, job: &str, next_run: Option<Timestamp>) {
        if let Some(j) = self.jobs.get_mut(job) {
            j.next_run = next_run;
        }
    }

    /// A run finished: counters, last run and last success of its job (no
    /// longer running: a job never overlaps with itself), and the last
    /// successful write of every replica it wrote to.
    pub fn record_run(&mut self, run: &RunRecord) {
        if !self.remember_run(run) {
            return;
        }
        let Some(job) = self.jobs.get_mut(&run.job) else {
            return;
        };
        job.running = false;
        job.runs_total += 1;
        if run.status != RunStatus::Success {
            job.failures_total += 1;
        }
        job.bytes_added_total += run.bytes_added;
    }

    /// A restarted daemon starts from the run history (oldest first), so
    /// last runs and last success times survive it. The counters count
    /// only runs since the start (Prometheus handles counter resets).
    pub fn seed_from_history(&mut self, runs: &[RunRecord]) {
        for run in runs {
            self.remember_run(run);
        }
    }

    /// Last run, last success and replica writes of `run`; false when its
    /// job is not configured.
    fn remember_run(&mut self, run: &RunRecord) -> bool {
        let Some(job) = self.jobs.get_mut(&run.job) else {
            return false;
        };
        // History rows and late reports can come out of order: the newest
        // finish wins.
        if job
            .last_run
            .as_ref()
            .is_none_or(|last| last.finished <= run.finished)
        {
            job.last_run = Some(run.clone());
        }
        if run.status == RunStatus::Success {
            job.last_success = job.last_success.max(Some(run.finished));
        }
        if WRITING_KINDS.contains(&run.kind.as_str()) && run.status != RunStatus::Failure {
            for r in run.replicas.iter().filter(|r| r.ok) {
                if let Some(rep) = self.replicas.get_mut(&r.name) {
                    rep.last_success_write = rep.last_success_write.max(Some(run.finished));
                }
            }
        }
        true
    }

    /// A survey of the replicas (`cairn status`) made at `now`.
    /// A survey could not use replica `name` at all (not opened): it is
    /// unreachable, and what was last known of it is kept.
    pub fn replica_unreachable(&mut self, name: &str, error: String, now: Timestamp) {
        if let Some(rep) = self.replicas.get_mut(name) {
            rep.observed = Some(now);
            rep.reachable = false;
            rep.error = Some(error);
        }
    }

    pub fn record_status(&mut self, status: &Status, now: Timestamp) {
        for r in &status.replicas {
            let Some(rep) = self.replicas.get_mut(&r.name) else {
                continue;
            };
            rep.observed = Some(now);
            rep.reachable = r.error.is_none();
            rep.error = r.error.clone();
            if r.error.is_some() {
                // An unreachable replica reports zeros: keep what was last
                // known of it.
                continue;
            }
            rep.snapshots = r.snapshots;
            rep.bytes = r.pack_bytes;
            rep.behind_snapshots = r.behind_snapshots;
            rep.behind_bytes = r.behind_bytes;
            rep.last_success_write = rep.last_success_write.max(r.last_write);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::jobs::record::{ReplicaRun, Trigger};
    use crate::ops::status::ReplicaStatus;

    pub(crate) fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub(crate) fn run(job: &str, kind: &str, finished: &str, status: RunStatus) -> RunRecord {
        let finished = ts(finished);
        RunRecord {
            id: 0,
            job: job.into(),
            kind: kind.into(),
            trigger: Trigger::Schedule,
            started: finished - jiff::SignedDuration::from_secs(90),
            finished,
            status,
            snapshot: None,
            bytes_added: 1000,
            attempts: 1,
            replicas: vec![
                ReplicaRun {
                    name: "local".into(),
                    ok: true,
                    error: None,
                    bytes: 10,
                    repo_bytes: None,
                },
                ReplicaRun {
                    name: "s3".into(),
                    ok: status == RunStatus::Success,
                    error: (status != RunStatus::Success).then(|| "s3: connection refused".into()),
                    bytes: 0,
                    repo_bytes: None,
                },
            ],
            error: (status != RunStatus::Success).then(|| "s3: connection refused".into()),
            actor: None,
        }
    }

    fn configured() -> Observations {
        let mut o = Observations::new(ts("2026-12-01T00:00:00Z"));
        o.set_job(
            "nightly",
            "backup",
            Some(Duration::from_secs(26 * 3600)),
            None,
        );
        o.set_job("verify", "check", None, None);
        o.set_replica("local", None);
        o.set_replica("s3", Some(Duration::from_secs(7200)));
        o
    }

    #[test]
    fn a_run_counts_and_sets_last_success_only_on_success() {
        let mut o = configured();
        o.set_running("nightly", true);
        assert!(o.jobs["nightly"].running);
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-01T01:00:00Z",
            RunStatus::Success,
        ));
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-02T01:00:00Z",
            RunStatus::Partial,
        ));
        let j = &o.jobs["nightly"];
        assert!(!j.running);
        assert_eq!(
            (j.runs_total, j.failures_total, j.bytes_added_total),
            (2, 1, 2000)
        );
        assert_eq!(j.last_success, Some(ts("2026-12-01T01:00:00Z")));
        assert_eq!(j.last_run.as_ref().unwrap().status, RunStatus::Partial);
        // The partial run still wrote to the replica that succeeded.
        assert_eq!(
            o.replicas["local"].last_success_write,
            Some(ts("2026-12-02T01:00:00Z"))
        );
        assert_eq!(
            o.replicas["s3"].last_success_write,
            Some(ts("2026-12-01T01:00:00Z"))
        );
    }

    #[test]
    fn runs_that_do_not_write_leave_replica_writes_alone() {
        let mut o = configured();
        o.record_run(&run(
            "verify",
            "check",
            "2026-12-01T01:00:00Z",
            RunStatus::Success,
        ));
        assert_eq!(
            o.jobs["verify"].last_success,
            Some(ts("2026-12-01T01:00:00Z"))
        );
        assert_eq!(o.replicas["local"].last_success_write, None);
        // A failed backup wrote no snapshot, even where a replica said ok.
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-01T02:00:00Z",
            RunStatus::Failure,
        ));
        assert_eq!(o.replicas["local"].last_success_write, None);
    }

    #[test]
    fn unconfigured_jobs_and_replicas_are_ignored() {
        let mut o = configured();
        let mut r = run("gone", "backup", "2026-12-01T01:00:00Z", RunStatus::Success);
        o.record_run(&r);
        assert!(!o.jobs.contains_key("gone"));
        r.job = "nightly".into();
        r.replicas[0].name = "old-nas".into();
        o.record_run(&r);
        assert!(!o.replicas.contains_key("old-nas"));
        assert_eq!(o.jobs["nightly"].runs_total, 1);
    }

    #[test]
    fn history_seeds_last_runs_but_not_counters() {
        let mut o = configured();
        o.seed_from_history(&[
            run(
                "nightly",
                "backup",
                "2026-11-29T01:00:00Z",
                RunStatus::Success,
            ),
            run(
                "nightly",
                "backup",
                "2026-11-30T01:00:00Z",
                RunStatus::Failure,
            ),
            run(
                "removed",
                "backup",
                "2026-11-30T02:00:00Z",
                RunStatus::Success,
            ),
        ]);
        let j = &o.jobs["nightly"];
        assert_eq!(j.last_success, Some(ts("2026-11-29T01:00:00Z")));
        assert_eq!(j.last_run.as_ref().unwrap().status, RunStatus::Failure);
        assert_eq!((j.runs_total, j.failures_total), (0, 0));
        assert_eq!(o.jobs.len(), 2);
        // An older record arriving late does not replace the newer one.
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-11-28T01:00:00Z",
            RunStatus::Success,
        ));
        assert_eq!(
            o.jobs["nightly"].last_run.as_ref().unwrap().finished,
            ts("2026-11-30T01:00:00Z")
        );
        assert_eq!(
            o.jobs["nightly"].last_success,
            Some(ts("2026-11-29T01:00:00Z"))
        );
    }

    #[test]
    fn reload_keeps_state_of_configured_jobs_and_drops_the_rest() {
        let mut o = configured();
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-01T01:00:00Z",
            RunStatus::Success,
        ));
        o.set_job("nightly", "backup", None, Some(ts("2026-12-02T01:00:00Z")));
        o.retain_jobs(&["nightly"]);
        o.retain_replicas(&["s3".to_string()]);
        assert_eq!(o.jobs.keys().collect::<Vec<_>>(), ["nightly"]);
        assert_eq!(o.replicas.keys().collect::<Vec<_>>(), ["s3"]);
        let j = &o.jobs["nightly"];
        assert_eq!((j.runs_total, j.stale_after), (1, None));
        assert_eq!(j.next_run, Some(ts("2026-12-02T01:00:00Z")));
    }

    pub(crate) fn replica_status(name: &str, error: Option<&str>) -> ReplicaStatus {
        ReplicaStatus {
            name: name.into(),
            error: error.map(Into::into),
            snapshots: if error.is_some() { 0 } else { 12 },
            complete: 12,
            packs: 40,
            pack_bytes: if error.is_some() { 0 } else { 5_000_000 },
            latest: None,
            last_write: error.is_none().then(|| ts("2026-12-01T03:00:00Z")),
            behind_snapshots: if error.is_some() { 12 } else { 1 },
            behind_bytes: 4096,
            keyring_generation: Some(1),
            keyring_behind: false,
        }
    }

    #[test]
    fn a_survey_updates_replicas_and_keeps_the_last_known_counts_when_unreachable() {
        let mut o = configured();
        let now = ts("2026-12-01T04:00:00Z");
        let status = |err| Status {
            replicas: vec![replica_status("s3", err)],
            snapshots: vec![],
        };
        o.record_status(&status(None), now);
        let s3 = o.replicas["s3"].clone();
        assert!(s3.reachable);
        assert_eq!(
            (s3.snapshots, s3.bytes, s3.behind_snapshots),
            (12, 5_000_000, 1)
        );
        assert_eq!(s3.last_success_write, Some(ts("2026-12-01T03:00:00Z")));
        assert_eq!(s3.observed, Some(now));
        let later = ts("2026-12-01T05:00:00Z");
        o.record_status(&status(Some("s3: connection refused")), later);
        let s3 = &o.replicas["s3"];
        assert!(!s3.reachable);
        assert_eq!(s3.error.as_deref(), Some("s3: connection refused"));
        assert_eq!(
            (s3.snapshots, s3.bytes, s3.behind_snapshots),
            (12, 5_000_000, 1)
        );
        assert_eq!(s3.last_success_write, Some(ts("2026-12-01T03:00:00Z")));
        assert_eq!(s3.observed, Some(later));
        // The local replica was not in the survey: untouched.
        assert_eq!(o.replicas["local"].observed, None);
    }
}
