//! `/metrics`: the daemon's [`Observations`] in the Prometheus text
//! exposition format 0.0.4 (`text/plain; version=0.0.4`), rendered afresh
//! on every scrape.
//!
//! Rendered from the observations on each scrape rather than kept in a
//! registry: the observations are the one record of what the daemon knows,
//! so the metrics cannot drift from `/health`, and a job removed by a
//! reload disappears without a registry to clean up. A scrape renders a few
//! dozen lines.
//!
//! Written here rather than with prometheus-client's encoder, which writes
//! OpenMetrics only: `promtool check metrics` (Prometheus 2.x, Debian's
//! package) reads the 0.0.4 format and rejects OpenMetrics counters
//! (`# TYPE x counter` with samples `x_total`) and the `info` type, and
//! prometheus-client 0.24 does not escape label values. Every Prometheus
//! server reads 0.0.4.
//!
//! Job metrics carry the job's name in the label `job_name`, not `job`:
//! Prometheus gives every scraped series its scrape job as `job` and would
//! rename cairn's to `exported_job` (kube-state-metrics names Kubernetes
//! jobs `job_name` for the same reason).
//!
//! A sample is only written when its value is known: a job that never
//! succeeded has no `cairn_job_last_success_timestamp_seconds` (a 0 would
//! read as "last success in 1970"); alert on its absence with `absent()`,
//! or on `/health`, which judges a job with no success from the daemon's
//! start. See docs/monitoring.md for every metric.

use std::fmt::Write as _;

use jiff::Timestamp;

use super::record::RunStatus;
use super::state::Observations;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics of `obs` in the Prometheus text format.
pub fn render(obs: &Observations) -> String {
    let mut out = Exposition::default();
    out.family(
        "cairn_build_info",
        Type::Gauge,
        "Always 1; the version of cairn running, as a label.",
        [(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    );
    out.family(
        "cairn_daemon_start_time_seconds",
        Type::Gauge,
        "When the daemon started, in seconds since the Unix epoch.",
        [(vec![], seconds(obs.started))],
    );

    let jobs: Vec<_> = obs.jobs.iter().map(|(n, j)| (n.as_str(), j)).collect();
    let job_family = |out: &mut Exposition,
                      name: &str,
                      ty: Type,
                      help: &str,
                      value: &dyn Fn(&super::state::JobState) -> Option<f64>| {
        out.family(
            name,
            ty,
            help,
            jobs.iter()
                .filter_map(|(n, j)| value(j).map(|v| (vec![("job_name", *n)], v))),
        )
    };
    job_family(
        &mut out,
        "cairn_job_last_success_timestamp_seconds",
        Type::Gauge,
        "When the job's last successful run finished (absent if none is known).",
        &|j| j.last_success.map(seconds),
    );
    job_family(
        &mut out,
        "cairn_job_last_run_timestamp_seconds",
        Type::Gauge,
        "When the job's last run finished, whatever its status.",
        &|j| j.last_run.as_ref().map(|r| seconds(r.finished)),
    );
    job_family(
        &mut out,
        "cairn_job_last_duration_seconds",
        Type::Gauge,
        "How long the job's last run took.",
        &|j| j.last_run.as_ref().map(|r| r.duration_secs()),
    );
    out.family(
        "cairn_job_last_status",
        Type::Gauge,
        "1 for the status of the job's last run (success, partial or failure), 0 for the others.",
        jobs.iter().flat_map(|(n, j)| {
            let last = j.last_run.as_ref().map(|r| r.status);
            [RunStatus::Success, RunStatus::Partial, RunStatus::Failure]
                .into_iter()
                .filter(move |_| last.is_some())
                .map(move |s| {
                    (
                        vec![("job_name", *n), ("status", s.as_str())],
                        f64::from(u8::from(last == Some(s))),
                    )
                })
        }),
    );
    job_family(
        &mut out,
        "cairn_job_last_bytes_added",
        Type::Gauge,
        "New data (before compression) added by the job's last run.",
        &|j| j.last_run.as_ref().map(|r| r.bytes_added as f64),
    );
    job_family(
        &mut out,
        "cairn_job_bytes_added_total",
        Type::Counter,
        "New data (before compression) added by the job's runs since the daemon started.",
        &|j| Some(j.bytes_added_total as f64),
    );
    job_family(
        &mut out,
        "cairn_job_runs_total",
        Type::Counter,
        "Runs of the job finished since the daemon started.",
        &|j| Some(j.runs_total as f64),
    );
    job_family(
        &mut out,
        "cairn_job_failures_total",
        Type::Counter,
        "Runs of the job since the daemon started that failed or were partial.",
        &|j| Some(j.failures_total as f64),
    );
    job_family(
        &mut out,
        "cairn_job_running",
        Type::Gauge,
        "1 while the job runs.",
        &|j| Some(f64::from(u8::from(j.running))),
    );
    job_family(
        &mut out,
        "cairn_job_next_run_timestamp_seconds",
        Type::Gauge,
        "When the job is next scheduled to run.",
        &|j| j.next_run.map(seconds),
    );
    job_family(
        &mut out,
        "cairn_job_stale_after_seconds",
        Type::Gauge,
        "The job's stale_after: /health reports it when its last success is older.",
        &|j| j.stale_after.map(|d| d.as_secs_f64()),
    );

    // Survey results only once a survey was made: zeros would be a claim.
    let replicas: Vec<_> = obs.replicas.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let replica_family =
        |out: &mut Exposition,
         name: &str,
         help: &str,
         value: &dyn Fn(&super::state::ReplicaState) -> Option<f64>| {
            out.family(
                name,
                Type::Gauge,
                help,
                replicas
                    .iter()
                    .filter_map(|(n, r)| value(r).map(|v| (vec![("replica", *n)], v))),
            )
        };
    replica_family(
        &mut out,
        "cairn_replica_up",
        "1 if the last survey reached the replica, 0 if it could not.",
        &|r| r.observed.map(|_| f64::from(u8::from(r.reachable))),
    );
    replica_family(
        &mut out,
        "cairn_replica_snapshots",
        "Snapshot files on the replica at the last survey that reached it.",
        &|r| r.observed.map(|_| r.snapshots as f64),
    );
    replica_family(
        &mut out,
        "cairn_replica_bytes",
        "Bytes of packs on the replica at the last survey that reached it.",
        &|r| r.observed.map(|_| r.bytes as f64),
    );
    replica_family(
        &mut out,
        "cairn_replica_behind_snapshots",
        "Snapshots complete on another replica but not on this one.",
        &|r| r.observed.map(|_| r.behind_snapshots as f64),
    );
    replica_family(
        &mut out,
        "cairn_replica_behind_bytes",
        "Bytes of packs the replica needs to catch up (what cairn sync would copy).",
        &|r| r.observed.map(|_| r.behind_bytes as f64),
    );
    replica_family(
        &mut out,
        "cairn_replica_last_success_write_timestamp_seconds",
        "When a snapshot was last written to the replica successfully.",
        &|r| r.last_success_write.map(seconds),
    );
    replica_family(
        &mut out,
        "cairn_replica_last_survey_timestamp_seconds",
        "When the replica was last surveyed, reached or not.",
        &|r| r.observed.map(seconds),
    );
    replica_family(
        &mut out,
        "cairn_replica_stale_after_seconds",
        "The replica's stale_after: /health reports it when its last successful write is older.",
        &|r| r.stale_after.map(|d| d.as_secs_f64()),
    );
    out.text
}

/// Seconds since the Unix epoch, to the millisecond.
fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

#[derive(Clone, Copy)]
enum Type {
    Gauge,
    Counter,
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// One metric family; nothing when it has no sample (a family without
    /// samples says nothing, and some parsers dislike it).
    fn family<'a>(
        &mut self,
        name: &str,
        ty: Type,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        let ty = match ty {
            Type::Gauge => "gauge",
            Type::Counter => "counter",
        };
        let t = &mut self.text;
        let _ = writeln!(t, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(t, "# TYPE {name} {ty}");
        for (labels, value) in samples {
            t.push_str(name);
            if !labels.is_empty() {
                t.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        t.push(',');
                    }
                    let _ = write!(t, "{k}=\"{}\"", escape(v, true));
                }
                t.push('}');
            }
            // Rust prints finite floats in plain decimal, which every
            // Prometheus parser reads; the values here are never NaN or
            // infinite.
            let _ = writeln!(t, " {value}");
        }
    }
}

/// The text format's escapes: backslash and newline everywhere, double
/// quotes in label values too.
fn escape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::state::tests::{replica_status, run, ts};
    use crate::ops::status::Status;
    use std::time::Duration;

    fn lines_of<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} "))
            })
            .collect()
    }

    #[test]
    fn a_job_that_never_ran_has_counters_but_no_timestamps() {
        let mut o = Observations::new(ts("2026-12-01T00:00:00Z"));
        o.set_job("new", "backup", None, Some(ts("2026-12-01T03:00:00Z")));
        let text = render(&o);
        assert_eq!(
            lines_of(&text, "cairn_job_runs_total"),
            ["cairn_job_runs_total{job_name=\"new\"} 0"]
        );
        assert_eq!(
            lines_of(&text, "cairn_job_next_run_timestamp_seconds"),
            ["cairn_job_next_run_timestamp_seconds{job_name=\"new\"} 1796094000"]
        );
        assert!(lines_of(&text, "cairn_job_last_success_timestamp_seconds").is_empty());
        assert!(!text.contains("cairn_job_last_status"));
        assert_eq!(
            lines_of(&text, "cairn_daemon_start_time_seconds"),
            ["cairn_daemon_start_time_seconds 1796083200"]
        );
        assert!(text.contains(&format!(
            "cairn_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn runs_and_surveys_show_in_the_metrics() {
        let mut o = Observations::new(ts("2026-12-01T00:00:00Z"));
        o.set_job("nightly", "backup", Some(Duration::from_secs(93600)), None);
        o.set_replica("s3", None);
        o.set_replica("local", None);
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-01T01:00:00.5Z",
            RunStatus::Success,
        ));
        o.record_run(&run(
            "nightly",
            "backup",
            "2026-12-01T02:00:00Z",
            RunStatus::Partial,
        ));
        let status = Status {
            replicas: vec![replica_status("s3", Some("s3: connection refused"))],
            snapshots: vec![],
        };
        o.record_status(&status, ts("2026-12-01T02:01:00Z"));
        let text = render(&o);
        assert_eq!(
            lines_of(&text, "cairn_job_last_success_timestamp_seconds"),
            ["cairn_job_last_success_timestamp_seconds{job_name=\"nightly\"} 1796086800.5"]
        );
        assert_eq!(
            lines_of(&text, "cairn_job_last_status"),
            [
                "cairn_job_last_status{job_name=\"nightly\",status=\"success\"} 0",
                "cairn_job_last_status{job_name=\"nightly\",status=\"partial\"} 1",
                "cairn_job_last_status{job_name=\"nightly\",status=\"failure\"} 0",
            ]
        );
        assert_eq!(
            lines_of(&text, "cairn_job_failures_total"),
            ["cairn_job_failures_total{job_name=\"nightly\"} 1"]
        );
        assert_eq!(
            lines_of(&text, "cairn_job_last_duration_seconds"),
            ["cairn_job_last_duration_seconds{job_name=\"nightly\"} 90"]
        );
        assert_eq!(
            lines_of(&text, "cairn_job_stale_after_seconds"),
            ["cairn_job_stale_after_seconds{job_name=\"nightly\"} 93600"]
        );
        // Surveyed and unreachable: down; never surveyed: no sample.
        assert_eq!(
            lines_of(&text, "cairn_replica_up"),
            ["cairn_replica_up{replica=\"s3\"} 0"]
        );
        assert_eq!(
            lines_of(&text, "cairn_replica_last_success_write_timestamp_seconds"),
            [
                "cairn_replica_last_success_write_timestamp_seconds{replica=\"local\"} 1796090400",
                "cairn_replica_last_success_write_timestamp_seconds{replica=\"s3\"} 1796086800.5",
            ]
        );
        let help = text.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(help, types);
        assert!(text.contains("# TYPE cairn_job_runs_total counter\n"));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut o = Observations::new(ts("2026-12-01T00:00:00Z"));
        o.set_job("we\"ird\\name\nx", "backup", None, None);
        let text = render(&o);
        assert!(
            text.contains("cairn_job_running{job_name=\"we\\\"ird\\\\name\\nx\"} 0\n"),
            "{text}"
        );
        assert_eq!(escape("a\\b\n\"c\"", false), "a\\\\b\\n\"c\"");
    }
}
