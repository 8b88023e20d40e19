//! The daemon's HTTP over a real socket: `/metrics` accepted by
//! `promtool check metrics`, `/health` going 200 → 503 → 200 as runs fail
//! and recover, and the alert rules in `deploy/prometheus/` checked and
//! unit-tested by promtool (Debian's prometheus package, installed by
//! `scripts/test-servers start tools`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cairn::backends::conformance::server_from_env;
use cairn::daemon::http::{router, serve, SharedObservations};
use cairn::jobs::{Observations, ReplicaRun, RunRecord, RunStatus, Trigger};
use cairn::ops::status::{ReplicaStatus, Status};
use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

const HOUR: Duration = Duration::from_secs(3600);

pub fn promtool() -> Option<String> {
    server_from_env("promtool", "CAIRN_TEST_PROMTOOL")
}

/// Run promtool with `args`, `input` on its stdin.
fn promtool_run(promtool: &str, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{promtool}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// [`promtool_run`], panicking with promtool's output unless it succeeds.
pub fn promtool_ok(promtool: &str, args: &[&str], input: &str) {
    let out = promtool_run(promtool, args, input);
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{}{}\ninput:\n{input}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(
    job: &str,
    kind: &str,
    finished: Timestamp,
    status: RunStatus,
    failed: &[&str],
) -> RunRecord {
    let error = (status != RunStatus::Success)
        .then(|| format!("{}: connection refused", failed.first().unwrap_or(&job)));
    RunRecord {
        id: 0,
        job: job.into(),
        kind: kind.into(),
        trigger: Trigger::Schedule,
        started: finished - SignedDuration::from_secs(42),
        finished,
        status,
        snapshot: (status != RunStatus::Failure).then(|| "6f2a9c1e".into()),
        bytes_added: 123_456,
        attempts: 1,
        replicas: ["local", "s3", "sftp"]
            .iter()
            .map(|r| ReplicaRun {
                name: r.to_string(),
                ok: status != RunStatus::Failure && !failed.contains(r),
                error: failed
                    .contains(r)
                    .then(|| format!("{r}: connection refused")),
                bytes: 1000,
                repo_bytes: None,
            })
            .collect(),
        error,
        actor: None,
    }
}

fn survey(unreachable: &[&str], last_write: Timestamp) -> Status {
    Status {
        replicas: ["local", "s3", "sftp"]
            .iter()
            .map(|r| {
                let down = unreachable.contains(r);
                ReplicaStatus {
                    name: r.to_string(),
                    error: down.then(|| format!("{r}: connection refused")),
                    snapshots: if down { 0 } else { 30 },
                    complete: if down { 0 } else { 30 },
                    packs: 80,
                    pack_bytes: if down { 0 } else { 7_340_032 },
                    latest: None,
                    last_write: (!down).then_some(last_write),
                    behind_snapshots: u64::from(*r == "sftp"),
                    behind_bytes: if *r == "sftp" { 65_536 } else { 0 },
                    keyring_generation: Some(1),
                    keyring_behind: false,
                }
            })
            .collect(),
        snapshots: vec![],
    }
}

/// A daemon three hours up: a nightly backup that succeeded, a database
/// dump, a SQLite job that never ran yet, a weekly check, three replicas.
fn observations(now: Timestamp) -> Observations {
    let ago = |h: i64| now - SignedDuration::from_hours(h);
    let mut o = Observations::new(ago(3));
    o.set_job("nightly", "backup", Some(26 * HOUR), Some(ago(-21)));
    o.set_job("db", "command", Some(26 * HOUR), Some(ago(-1)));
    o.set_job("app-sqlite", "sqlite", Some(26 * HOUR), Some(ago(-2)));
    o.set_job("verify", "check", Some(8 * 24 * HOUR), None);
    o.set_replica("local", Some(26 * HOUR));
    o.set_replica("s3", Some(26 * HOUR));
    o.set_replica("sftp", None);
    // From the history, before this daemon started.
    o.seed_from_history(&[
        run("verify", "check", ago(50), RunStatus::Success, &[]),
        run("nightly", "backup", ago(27), RunStatus::Success, &[]),
    ]);
    o.record_run(&run("nightly", "backup", ago(2), RunStatus::Success, &[]));
    o.record_run(&run("db", "command", ago(1), RunStatus::Success, &[]));
    o.record_status(&survey(&[], ago(1)), ago(1));
    o
}

async fn get(url: &str) -> (u16, String, String) {
    let r = reqwest::get(url).await.unwrap();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (r.status().as_u16(), ct, r.text().await.unwrap())
}

async fn health(base: &str) -> (u16, serde_json::Value) {
    let (code, ct, body) = get(&format!("{base}/health")).await;
    assert_eq!(ct, "application/json");
    (code, serde_json::from_str(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_health_follows_failure_and_recovery() {
    let Some(promtool) = promtool() else { return };
    // promtool does reject what it must: an OpenMetrics-style counter.
    let bad = promtool_run(
        &promtool,
        &["check", "metrics"],
        "# HELP x X.\n# TYPE x counter\nx_total 1\n",
    );
    assert!(
        !bad.status.success(),
        "promtool accepted a counter family without its _total samples"
    );
    let now = Timestamp::now();
    let state: SharedObservations = Arc::new(RwLock::new(observations(now)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = CancellationToken::new();
    let server = tokio::spawn(serve(listener, router(state.clone()), token.clone()));

    let (code, body) = health(&base).await;
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(body["ok"], true);
    assert_eq!(
        body["jobs"]["app-sqlite"]["last_run"],
        serde_json::Value::Null
    );
    let (code, ct, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    promtool_ok(&promtool, &["check", "metrics"], &metrics);
    assert!(metrics.contains("cairn_job_runs_total{job_name=\"nightly\"} 1\n"));
    assert!(!metrics.contains("cairn_job_last_success_timestamp_seconds{job_name=\"app-sqlite\"}"));

    // The dump fails, then a backup is partial: s3 went away.
    {
        let mut o = state.write().unwrap();
        o.record_run(&run(
            "db",
            "command",
            Timestamp::now(),
            RunStatus::Failure,
            &[],
        ));
        o.record_run(&run(
            "nightly",
            "backup",
            Timestamp::now(),
            RunStatus::Partial,
            &["s3"],
        ));
        o.record_status(&survey(&["s3"], now), Timestamp::now());
    }
    let (code, body) = health(&base).await;
    assert_eq!(code, 503, "{body:#}");
    assert_eq!(body["ok"], false);
    let problems: Vec<(String, String, String)> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            (s("subject"), s("name"), s("reason"))
        })
        .collect();
    let expect = |s: &str, n: &str, r: &str| (s.to_string(), n.to_string(), r.to_string());
    assert_eq!(
        problems,
        [
            expect("job", "db", "failed"),
            expect("job", "nightly", "partial"),
            expect("replica", "s3", "unreachable"),
        ]
    );
    let message = |i: usize| body["problems"][i]["message"].as_str().unwrap().to_string();
    assert!(
        message(0).starts_with("job db: last run failed at "),
        "{}",
        message(0)
    );
    assert!(message(1).contains("was partial (failed on s3): s3: connection refused"));
    assert_eq!(
        message(2),
        "replica s3: unreachable: s3: connection refused"
    );
    assert_eq!(body["replicas"]["s3"]["reachable"], false);

    let (_, _, metrics) = get(&format!("{base}/metrics")).await;
    promtool_ok(&promtool, &["check", "metrics"], &metrics);
    assert!(metrics.contains("cairn_replica_up{replica=\"s3\"} 0\n"));
    assert!(metrics.contains("cairn_job_last_status{job_name=\"db\",status=\"failure\"} 1\n"));
    assert!(metrics.contains("cairn_job_failures_total{job_name=\"db\"} 1\n"));
    // The replica's last known size stays while it is unreachable.
    assert!(metrics.contains("cairn_replica_bytes{replica=\"s3\"} 7340032\n"));

    // s3 is back and both jobs succeed: healthy again.
    {
        let mut o = state.write().unwrap();
        o.record_status(&survey(&[], Timestamp::now()), Timestamp::now());
        o.record_run(&run(
            "db",
            "command",
            Timestamp::now(),
            RunStatus::Success,
            &[],
        ));
        o.record_run(&run(
            "nightly",
            "backup",
            Timestamp::now(),
            RunStatus::Success,
            &[],
        ));
    }
    let (code, body) = health(&base).await;
    assert_eq!(code, 200, "{body:#}");

    let (code, _, body) = get(&format!("{base}/metrics/extra")).await;
    assert_eq!((code, body.starts_with("not found")), (404, true));
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the listener stops when cancelled")
        .unwrap()
        .unwrap();
}

#[test]
fn alert_rules_pass_promtool_and_the_docs_show_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/cairn-alerts.yml")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/monitoring.md")).unwrap();
    assert!(
        docs.contains(&rules),
        "docs/monitoring.md must include deploy/prometheus/cairn-alerts.yml verbatim"
    );
    let Some(promtool) = promtool() else { return };
    let dir = root.join("deploy/prometheus");
    for args in [
        ["check", "rules", "cairn-alerts.yml"],
        ["test", "rules", "cairn-alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
