//! Notifications delivered for real: a webhook to an HTTP receiver on
//! loopback (answering, failing, holding the request, or not there at
//! all), and e-mail through the aiosmtpd server of `scripts/test-servers`
//! (STARTTLS, a login, a private CA).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::backends::conformance::server_from_env;
use cairn::config::notify::NotifyConfig;
use cairn::config::ConfigFile;
use cairn::jobs::notify::{Event, Notification, Notifier, NotifyError, Skipped, Target};
use cairn::jobs::{ReplicaRun, RunRecord, RunStatus, Trigger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// The secret part of every test webhook URL (tests/secrets.txt lists it,
/// so scripts/check-secrets fails the run if it is ever printed).
const HOOK_SECRET: &str = "hook-secret-e2e";

fn config(text: &str) -> NotifyConfig {
    let n = ConfigFile::parse(text)
        .unwrap()
        .notify
        .expect("a [notify] table");
    n.validate().unwrap();
    n
}

fn run(job: &str, status: RunStatus, failed: &[&str]) -> RunRecord {
    let now = jiff::Timestamp::now();
    RunRecord {
        id: 1,
        job: job.into(),
        kind: "backup".into(),
        trigger: Trigger::Schedule,
        started: now,
        finished: now,
        status,
        snapshot: (status != RunStatus::Failure).then(|| "0a1b2c3d".to_string()),
        bytes_added: 0,
        attempts: 1,
        replicas: ["local", "s3"]
            .iter()
            .map(|r| ReplicaRun {
                name: r.to_string(),
                ok: !failed.contains(r),
                error: failed.contains(r).then(|| "connection refused".to_string()),
                bytes: 0,
                repo_bytes: None,
            })
            .collect(),
        error: (status != RunStatus::Success).then(|| "replica s3: connection refused".into()),
        actor: None,
    }
}

fn failure(job: &str) -> Notification {
    Notification::for_run(
        Event::Failure,
        &run(job, RunStatus::Failure, &["s3"]),
        "test-host",
    )
}

// ------------------------------------------------------------ the receiver

/// What the receiver does with a request.
#[derive(Clone)]
enum Answer {
    Status(u16),
    /// 200, once a permit is added to the semaphore.
    Hold(Arc<Semaphore>),
    /// Nothing: read the request and keep the connection open.
    Silent,
}

struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP/1.1 receiver on loopback that records every request.
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    hits: watch::Receiver<usize>,
}

impl Receiver {
    async fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (tx, hits) = watch::channel(0);
        let tx = Arc::new(tx);
        let recorded = requests.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let (recorded, tx, answer) = (recorded.clone(), tx.clone(), answer.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut sock).await else {
                        return;
                    };
                    recorded.lock().unwrap().push(request);
                    tx.send_modify(|n| *n += 1);
                    let code = match answer {
                        Answer::Status(code) => code,
                        Answer::Hold(gate) => {
                            gate.acquire().await.unwrap().forget();
                            200
                        }
                        Answer::Silent => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {code} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = sock.write_all(response.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Receiver {
            port,
            requests,
            hits,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/T000/B000/{HOOK_SECRET}", self.port)
    }

    fn hits(&self) -> usize {
        *self.hits.borrow()
    }

    async fn wait_for_hits(&mut self, n: usize) {
        tokio::time::timeout(Duration::from_secs(30), self.hits.wait_for(|h| *h >= n))
            .await
            .expect("the receiver got no request within 30 s")
            .unwrap();
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut request = Request {
        head,
        body: buf[end..].to_vec(),
    };
    let len: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while request.body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        request.body.extend_from_slice(&chunk[..n]);
    }
    Some(request)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ------------------------------------------------------------ webhook

#[tokio::test]
async fn the_webhook_gets_the_json_body_at_its_url() {
    let rx = Receiver::start(Answer::Status(200)).await;
    let notifier =
        Notifier::new(&config(&format!("[notify]\nwebhook = {:?}\n", rx.url()))).unwrap();
    let n = failure("nightly");
    let report = notifier.notify(n.clone()).await.unwrap();
    assert!(report.delivered(), "{report}");
    assert_eq!(report.deliveries.len(), 1);
    let d = &report.deliveries[0];
    assert_eq!(d.attempts, 1);
    assert_eq!(
        d.target,
        Target::Webhook {
            host: format!("127.0.0.1:{}", rx.port)
        }
    );
    let requests = rx.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert!(
        r.head.starts_with("POST "),
        "{}",
        r.head.lines().next().unwrap()
    );
    assert_eq!(r.path(), format!("/T000/B000/{HOOK_SECRET}"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({
            "event": "failure",
            "job": "nightly",
            "replicas": ["s3"],
            "error": "replica s3: connection refused",
            "snapshot": null,
            "time": n.time.to_string(),
            "host": "test-host",
            "summary": "job nightly failed: replica s3: connection refused",
        })
    );
}

#[tokio::test]
async fn the_slack_format_sends_text_and_blocks() {
    let rx = Receiver::start(Answer::Status(200)).await;
    let notifier = Notifier::new(&config(&format!(
        "[notify]\nwebhook = {:?}\nformat = \"slack\"\n",
        rx.url()
    )))
    .unwrap();
    let n = Notification::for_run(
        Event::Partial,
        &run("nightly", RunStatus::Partial, &["s3"]),
        "test-host",
    );
    assert!(notifier.notify(n).await.unwrap().delivered());
    let body = rx.requests.lock().unwrap()[0].json();
    assert_eq!(
        body["text"],
        "cairn: partial of job nightly on host test-host: job nightly finished, but replica s3 \
         failed: replica s3: connection refused"
    );
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[1]["type"], "section");
    assert!(blocks.iter().all(|b| b["type"].is_string()));
    assert!(body.get("event").is_none(), "{body}");
}

#[tokio::test]
async fn a_failing_webhook_is_tried_one_plus_retries_times_then_given_up() {
    let mut rx = Receiver::start(Answer::Status(500)).await;
    let notifier = Notifier::new(&config(&format!(
        "[notify]\nwebhook = {:?}\nretries = 2\nbackoff = \"10ms\"\n",
        rx.url()
    )))
    .unwrap();
    let report = notifier.notify(failure("nightly")).await.unwrap();
    rx.wait_for_hits(3).await;
    assert_eq!(rx.hits(), 3);
    assert!(!report.delivered());
    let d = &report.deliveries[0];
    assert_eq!((d.attempts, &d.error), (3, &Some(NotifyError::Status(500))));
    let shown = report.to_string();
    assert_eq!(
        shown,
        format!(
            "failure notification for job nightly: webhook 127.0.0.1:{}: gave up after 3 \
             attempts: answered HTTP 500",
            rx.port
        )
    );

    // An answer that another attempt would not change is not retried.
    let rx = Receiver::start(Answer::Status(404)).await;
    let notifier = Notifier::new(&config(&format!(
        "[notify]\nwebhook = {:?}\nretries = 3\nbackoff = \"10ms\"\n",
        rx.url()
    )))
    .unwrap();
    let report = notifier.notify(failure("nightly")).await.unwrap();
    assert_eq!(report.deliveries[0].attempts, 1);
    assert_eq!(report.deliveries[0].error, Some(NotifyError::Status(404)));
    assert_eq!(rx.hits(), 1);
}

#[tokio::test]
async fn a_webhook_that_is_down_is_retried_and_named_by_its_host_only() {
    let port = closed_port();
    let notifier = Notifier::new(&config(&format!(
        "[notify]\nwebhook = \"http://127.0.0.1:{port}/T000/B000/{HOOK_SECRET}\"\n\
         retries = 2\nbackoff = \"10ms\"\n"
    )))
    .unwrap();
    let report = notifier.notify(failure("nightly")).await.unwrap();
    assert!(!report.delivered());
    let d = &report.deliveries[0];
    assert_eq!(d.attempts, 3);
    assert!(matches!(d.error, Some(NotifyError::Connection(_))), "{d}");
    let shown = report.to_string();
    assert!(
        shown.contains(&format!(
            "webhook 127.0.0.1:{port}: gave up after 3 attempts: "
        )),
        "{shown}"
    );
    assert!(
        !shown.contains(HOOK_SECRET) && !shown.contains("/T000"),
        "the URL is shown"
    );
}

#[tokio::test]
async fn a_webhook_that_does_not_answer_times_out_each_attempt() {
    let mut rx = Receiver::start(Answer::Silent).await;
    let notifier = Notifier::new(&config(&format!(
        "[notify]\nwebhook = {:?}\ntimeout = \"300ms\"\nretries = 1\nbackoff = \"10ms\"\n",
        rx.url()
    )))
    .unwrap();
    let report = notifier.notify(failure("nightly")).await.unwrap();
    rx.wait_for_hits(2).await;
    let d = &report.deliveries[0];
    assert_eq!(d.attempts, 2);
    assert_eq!(
        d.error,
        Some(NotifyError::Timeout(Duration::from_millis(300)))
    );
    assert!(d.to_string().ends_with("no answer within 300ms"), "{d}");
}

/// The caller gets its handle back while the receiver still holds the
/// request: a slow or hanging webhook never holds up a job.
#[tokio::test]
async fn notify_returns_before_the_delivery_is_done() {
    let gate = Arc::new(Semaphore::new(0));
    let mut rx = Receiver::start(Answer::Hold(gate.clone())).await;
    let notifier =
        Notifier::new(&config(&format!("[notify]\nwebhook = {:?}\n", rx.url()))).unwrap();
    let handle = notifier.notify(failure("nightly"));
    rx.wait_for_hits(1).await;
    // The request is in and unanswered: the delivery cannot be done.
    assert!(!handle.is_finished());
    gate.add_permits(1);
    let report = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("delivery finished once the receiver answered")
        .unwrap();
    assert!(report.delivered(), "{report}");
}

/// A webhook that is down or failing leaves the caller free while the
/// delivery waits to retry (an hour here, so a slow machine cannot make
/// the delivery finish first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_or_failing_webhook_does_not_hold_up_the_caller() {
    let config = |url: &str| config(&format!("[notify]\nwebhook = {url:?}\nbackoff = \"1h\"\n"));
    let mut rx = Receiver::start(Answer::Status(500)).await;
    let failing = Notifier::new(&config(&rx.url())).unwrap();
    let down = Notifier::new(&config(&format!(
        "http://127.0.0.1:{}/{HOOK_SECRET}",
        closed_port()
    )))
    .unwrap();
    let a = failing.notify(failure("nightly"));
    let b = down.notify(failure("nightly"));
    rx.wait_for_hits(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The first attempts failed; both deliveries wait for their retry, and
    // the caller is here.
    assert!(!a.is_finished() && !b.is_finished());
    assert_eq!(rx.hits(), 1);
    a.abort();
    b.abort();
}

#[tokio::test]
async fn repeats_are_suppressed_until_a_recovery() {
    let rx = Receiver::start(Answer::Status(204)).await;
    let notifier = Notifier::new(&config(&format!(
        "[notify]\nwebhook = {:?}\nrepeat_after = \"1h\"\n",
        rx.url()
    )))
    .unwrap();
    assert!(notifier
        .notify(failure("nightly"))
        .await
        .unwrap()
        .delivered());
    let again = notifier.notify(failure("nightly")).await.unwrap();
    assert!(
        matches!(
            again.skipped,
            Some(Skipped::RateLimited { repeat_after, .. }) if repeat_after == Duration::from_secs(3600)
        ),
        "{again}"
    );
    assert!(again.deliveries.is_empty());
    assert!(
        again.to_string().contains("not sent, the same went out"),
        "{again}"
    );
    // Another job's failure is news.
    assert!(notifier
        .notify(failure("weekly"))
        .await
        .unwrap()
        .delivered());
    assert_eq!(rx.hits(), 2);

    let ok = run("nightly", RunStatus::Success, &[]);
    let recovery = Notification::for_run(Event::Recovery, &ok, "test-host");
    assert!(notifier.notify(recovery).await.unwrap().delivered());
    // After the recovery, the next failure goes out again.
    assert!(notifier
        .notify(failure("nightly"))
        .await
        .unwrap()
        .delivered());
    assert!(notifier
        .notify(failure("weekly"))
        .await
        .unwrap()
        .skipped
        .is_some());
    let events: Vec<(String, String)> = rx
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            let b = r.json();
            (
                b["event"].as_str().unwrap().into(),
                b["job"].as_str().unwrap().into(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = events
        .iter()
        .map(|(e, j)| (e.as_str(), j.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("failure", "nightly"),
            ("failure", "weekly"),
            ("recovery", "nightly"),
            ("failure", "nightly")
        ]
    );
}

#[tokio::test]
async fn a_notification_nobody_got_does_not_suppress_the_next() {
    let port = closed_port();
    let notifier = Notifier::new(&config(&format!(
        "[notify]\nwebhook = \"http://127.0.0.1:{port}/{HOOK_SECRET}\"\nretries = 0\n"
    )))
    .unwrap();
    let first = notifier.notify(failure("nightly")).await.unwrap();
    assert!(!first.delivered());
    let second = notifier.notify(failure("nightly")).await.unwrap();
    assert_eq!(second.skipped, None);
    assert_eq!(second.deliveries[0].attempts, 1);
}

// ------------------------------------------------------------ e-mail

struct Smtp {
    host: String,
    port: u16,
    user: String,
    ca: String,
    maildir: std::path::PathBuf,
}

fn smtp() -> Option<Smtp> {
    let addr = server_from_env("SMTP", "CAIRN_TEST_SMTP")?;
    let (host, port) = addr.rsplit_once(':').expect("CAIRN_TEST_SMTP is HOST:PORT");
    let var = |v: &str| std::env::var(v).unwrap_or_else(|_| panic!("{v} is not set"));
    // The password is read from the environment by the notifier itself.
    var("CAIRN_TEST_SMTP_PASSWORD");
    Some(Smtp {
        host: host.into(),
        port: port.parse().unwrap(),
        user: var("CAIRN_TEST_SMTP_USER"),
        ca: var("CAIRN_TEST_SMTP_CA"),
        maildir: var("CAIRN_TEST_SMTP_MAILDIR").into(),
    })
}

impl Smtp {
    fn config(&self, password: &str, ca_file: bool) -> NotifyConfig {
        let ca = if ca_file {
            format!("ca_file = {:?}\n", self.ca)
        } else {
            String::new()
        };
        config(&format!(
            "[notify]\nretries = 1\nbackoff = \"10ms\"\n[notify.email]\nserver = {:?}\n\
             port = {}\ntls = \"starttls\"\nusername = {:?}\npassword = {password}\n\
             from = \"cairn@example.com\"\nto = [\"ops@example.com\", \"Backup Team <backup@example.com>\"]\n{ca}",
            self.host, self.port, self.user
        ))
    }

    /// The saved messages that mention `needle`, removed from the maildir.
    fn take_messages_with(&self, needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for e in std::fs::read_dir(&self.maildir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'))
            {
                continue;
            }
            let Ok(m) = std::fs::read_to_string(&p) else {
                continue;
            };
            if m.contains(needle) {
                std::fs::remove_file(&p).unwrap();
                found.push(m);
            }
        }
        found
    }
}

fn fresh_job(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

#[tokio::test]
async fn email_goes_out_over_starttls_with_a_login_and_a_private_ca() {
    let Some(s) = smtp() else { return };
    let notifier =
        Notifier::new(&s.config("{ env = \"CAIRN_TEST_SMTP_PASSWORD\" }", true)).unwrap();
    let job = fresh_job("mail");
    let report = notifier.notify(failure(&job)).await.unwrap();
    assert!(report.delivered(), "{report}");
    assert_eq!(
        report.deliveries[0].target,
        Target::Email {
            server: format!("{}:{}", s.host, s.port),
            to: vec!["ops@example.com".into(), "backup@example.com".into()]
        }
    );
    let messages = s.take_messages_with(&job);
    assert_eq!(messages.len(), 1, "one message names the job");
    let m = &messages[0];
    assert!(
        m.contains(&format!(
            "Subject: cairn: failure of job {job} on host test-host\r\n"
        )),
        "{m}"
    );
    assert!(
        m.contains("X-Envelope-To: ops@example.com, backup@example.com\r\n"),
        "{m}"
    );
    assert!(m.contains("From: cairn@example.com\r\n"), "{m}");
    for line in [
        format!("job {job} failed: replica s3: connection refused"),
        "Event:    failure".into(),
        format!("Job:      {job}"),
        "Replicas: s3".into(),
        "Host:     test-host".into(),
    ] {
        assert!(m.contains(&line), "{line:?} not in\n{m}");
    }
}

#[tokio::test]
async fn a_wrong_smtp_password_is_refused_without_showing_it() {
    let Some(s) = smtp() else { return };
    let notifier = Notifier::new(&s.config("\"wrong-smtp-password-e2e\"", true)).unwrap();
    let job = fresh_job("badpw");
    let report = notifier.notify(failure(&job)).await.unwrap();
    assert!(!report.delivered());
    let d = &report.deliveries[0];
    // A refused login is final: no retry.
    assert_eq!(d.attempts, 1, "{d}");
    assert!(matches!(d.error, Some(NotifyError::Refused(_))), "{d}");
    let shown = report.to_string();
    assert!(
        shown.contains(&format!("SMTP server {}:{}", s.host, s.port)),
        "{shown}"
    );
    assert!(
        shown.contains("535") && shown.contains("the login of user cairn was refused"),
        "{shown}"
    );
    assert!(
        !shown.contains("wrong-smtp-password-e2e"),
        "the password is shown"
    );
    assert!(s.take_messages_with(&job).is_empty());
}

#[tokio::test]
async fn an_smtp_certificate_from_an_unknown_ca_is_refused() {
    let Some(s) = smtp() else { return };
    let notifier =
        Notifier::new(&s.config("{ env = \"CAIRN_TEST_SMTP_PASSWORD\" }", false)).unwrap();
    let job = fresh_job("noca");
    let report = notifier.notify(failure(&job)).await.unwrap();
    assert!(!report.delivered());
    let d = &report.deliveries[0];
    assert_eq!(
        d.attempts, 1,
        "an untrusted certificate is not retried: {d}"
    );
    assert!(matches!(d.error, Some(NotifyError::Connection(_))), "{d}");
    assert!(d.to_string().contains("certificate"), "{d}");
    assert!(s.take_messages_with(&job).is_empty());
}
