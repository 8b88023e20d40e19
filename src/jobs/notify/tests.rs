use super::*;
use crate::config::notify::WebhookFormat;
use crate::jobs::{ReplicaRun, Trigger};

fn run(status: RunStatus, replicas: &[(&str, bool)], error: Option<&str>) -> RunRecord {
    let t: jiff::Timestamp = "2026-12-04T03:00:00Z".parse().unwrap();
    RunRecord {
        id: 7,
        job: "nightly".into(),
        kind: "backup".into(),
        trigger: Trigger::Schedule,
        started: t,
        finished: t + jiff::SignedDuration::from_secs(90),
        status,
        snapshot: (status != RunStatus::Failure).then(|| "5f2c9a01".to_string()),
        bytes_added: 10,
        attempts: 2,
        replicas: replicas
            .iter()
            .map(|(name, ok)| ReplicaRun {
                name: name.to_string(),
                ok: *ok,
                error: (!ok).then(|| "connection refused".to_string()),
                bytes: 0,
                repo_bytes: None,
            })
            .collect(),
        error: error.map(String::from),
        actor: None,
    }
}

fn config(text: &str) -> NotifyConfig {
    crate::config::ConfigFile::parse(text)
        .unwrap()
        .notify
        .unwrap()
}

#[test]
fn events_follow_the_run_before() {
    use RunStatus::*;
    for (previous, current, event) in [
        (None, Failure, Some(Event::Failure)),
        (Some(Failure), Failure, Some(Event::Failure)),
        (Some(Success), Failure, Some(Event::Failure)),
        (None, Partial, Some(Event::Partial)),
        (Some(Partial), Partial, Some(Event::Partial)),
        (Some(Failure), Partial, Some(Event::Partial)),
        (Some(Failure), Success, Some(Event::Recovery)),
        (Some(Partial), Success, Some(Event::Recovery)),
        (Some(Success), Success, None),
        (None, Success, None),
    ] {
        assert_eq!(
            event_after(previous, current),
            event,
            "{previous:?} -> {current:?}"
        );
    }
    assert_eq!(
        serde_json::to_string(&Event::all()).unwrap(),
        r#"["failure","partial","stale","recovery"]"#
    );
    for e in Event::all() {
        assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
    }
}

#[test]
fn a_run_becomes_a_notification_naming_job_replicas_and_error() {
    let r = run(
        RunStatus::Partial,
        &[("local", true), ("s3", false)],
        Some("replica s3: connection refused\ncaused by: tcp connect"),
    );
    let n = Notification::for_run(Event::Partial, &r, "db1");
    assert_eq!(n.job.as_deref(), Some("nightly"));
    assert_eq!(n.replicas, ["s3"]);
    assert_eq!(n.snapshot.as_deref(), Some("5f2c9a01"));
    assert_eq!(n.time, r.finished);
    assert_eq!(
        n.summary,
        "job nightly finished, but replica s3 failed: replica s3: connection refused"
    );
    assert_eq!(n.title(), "cairn: partial of job nightly on host db1");
    let text = n.text();
    for line in [
        "Event:    partial\n",
        "Job:      nightly\n",
        "Replicas: s3\n",
        "Snapshot: 5f2c9a01\n",
        "Host:     db1\n",
        "Time:     2026-12-04T03:01:30Z\n",
        "\nError:\n  replica s3: connection refused\n  caused by: tcp connect\n",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }

    // A failure before any replica was written names them all.
    let r = run(
        RunStatus::Failure,
        &[("local", true), ("s3", true)],
        Some("hook failed"),
    );
    let n = Notification::for_run(Event::Failure, &r, "db1");
    assert_eq!(n.replicas, ["local", "s3"]);
    assert_eq!(
        n.summary,
        "job nightly failed after 2 attempts: hook failed"
    );
    let n = Notification::for_run(
        Event::Recovery,
        &run(RunStatus::Success, &[("s3", true)], None),
        "h",
    );
    assert_eq!(n.summary, "job nightly succeeded again");
    assert_eq!(n.title(), "cairn: recovery of job nightly on host h");
    let stale = Notification {
        job: None,
        replicas: vec!["s3".into(), "gcs".into()],
        ..n
    };
    assert_eq!(
        stale.title(),
        "cairn: recovery of replicas s3, gcs on host h"
    );
}

#[test]
fn webhook_bodies_have_the_documented_shape() {
    let r = run(
        RunStatus::Failure,
        &[("s3", false)],
        Some("s3: 503 <Slow Down> & retry"),
    );
    let n = Notification::for_run(Event::Failure, &r, "db1");
    let json = webhook::body(&n, WebhookFormat::Json);
    assert_eq!(
        json,
        serde_json::json!({
            "event": "failure",
            "job": "nightly",
            "replicas": ["s3"],
            "error": "s3: 503 <Slow Down> & retry",
            "snapshot": null,
            "time": "2026-12-04T03:01:30Z",
            "host": "db1",
            "summary": "job nightly failed after 2 attempts: s3: 503 <Slow Down> & retry",
        })
    );
    let back: Notification = serde_json::from_value(json).unwrap();
    assert_eq!(back, n);

    let slack = webhook::body(&n, WebhookFormat::Slack);
    assert!(slack["text"]
        .as_str()
        .unwrap()
        .starts_with("cairn: failure of job nightly on host db1: job nightly failed"));
    let blocks = slack["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(
        blocks[0]["text"]["text"],
        "cairn: failure of job nightly on host db1"
    );
    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"*Job*\nnightly"), "{fields:?}");
    assert!(fields.contains(&"*Replicas*\ns3"), "{fields:?}");
    // mrkdwn markup in the summary is escaped; the error is a code block.
    assert!(blocks[1]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("&lt;Slow Down&gt; &amp; retry"));
    assert_eq!(
        blocks[2]["text"]["text"],
        "```s3: 503 <Slow Down> & retry```"
    );
    assert_eq!(blocks.last().unwrap()["type"], "context");
}

#[test]
fn secrets_are_read_when_the_notifier_is_made() {
    let err = Notifier::new(&config(
        "[notify]\nwebhook = { env = \"CAIRN_TEST_SURELY_UNSET_HOOK\" }\n",
    ))
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "notify.webhook: environment variable CAIRN_TEST_SURELY_UNSET_HOOK is not set"
    );
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("hook");
    std::fs::write(&hook, "http://hooks.example.com/T0/B0/secret-token\n").unwrap();
    let err = Notifier::new(&config(&format!(
        "[notify]\nwebhook = {{ file = {:?} }}\n",
        hook.to_str().unwrap()
    )))
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("notify.webhook: http:// to hooks.example.com"),
        "{err}"
    );
    assert!(!err.contains("secret-token"), "{err}");

    let email = "[notify.email]\nserver = \"127.0.0.1\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n";
    let missing = dir.path().join("missing.pem");
    let err = Notifier::new(&config(&format!(
        "{email}ca_file = {:?}\n",
        missing.to_str().unwrap()
    )))
    .err()
    .unwrap()
    .to_string();
    assert!(err.starts_with("notify.email.ca_file: reading "), "{err}");
    assert!(err.contains("missing.pem"), "{err}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = Notifier::new(&config(&format!(
        "{email}ca_file = {:?}\n",
        junk.to_str().unwrap()
    )))
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("junk.pem holds no PEM certificate"), "{err}");

    let n = Notifier::new(&config(&format!(
        "[notify]\nwebhook = \"https://hooks.example.com:8443/T0/B0/secret-token\"\n{email}"
    )))
    .unwrap();
    let shown: Vec<String> = n.targets().iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "webhook hooks.example.com:8443",
            "e-mail to d@e.f via 127.0.0.1:587"
        ]
    );
    let debug = format!("{n:?}");
    assert!(debug.contains("webhook hooks.example.com:8443"), "{debug}");
    assert!(!debug.contains("secret-token"), "{debug}");
}

#[tokio::test]
async fn events_left_out_of_notify_events_are_not_sent() {
    // Nothing listens on this webhook: an attempt would fail.
    let n = Notifier::new(&config(
        "[notify]\nwebhook = \"http://127.0.0.1:9/hook\"\nevents = [\"failure\"]\n",
    ))
    .unwrap();
    let r = run(RunStatus::Success, &[("s3", true)], None);
    let report = n
        .notify(Notification::for_run(Event::Recovery, &r, "h"))
        .await
        .unwrap();
    assert_eq!(report.skipped, Some(Skipped::NotSubscribed));
    assert!(report.deliveries.is_empty());
    assert_eq!(
        report.to_string(),
        "recovery notification for job nightly: not sent (not in notify.events)"
    );
}
