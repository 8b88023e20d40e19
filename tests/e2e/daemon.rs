//! `cairn daemon`: jobs on their schedules (never overlapping, missed runs
//! caught up once), SIGHUP reloads, SIGTERM lets a running job finish,
//! `/metrics` and `/health` over HTTP, and notifications as a replica (S3
//! behind a relay the test cuts) fails and comes back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// A running `cairn daemon --listen 127.0.0.1:0`, its log collected.
struct Daemon {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(env: &Env, config: &Path) -> Daemon {
        let mut c = std_command(&env.cairn_with_config(config));
        c.args(["daemon", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let mut d = Daemon {
            child,
            port: 0,
            log,
        };
        wait_for(Duration::from_secs(30), "the daemon to listen", || {
            d.log().contains("serving /metrics")
        });
        let log = d.log();
        let at = log.find("http://127.0.0.1:").unwrap() + "http://127.0.0.1:".len();
        d.port = log[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        d
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// GET `path`: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").map_or("", |b| b.1);
        // Chunked bodies: good enough to search, not to parse.
        (code, body.to_string())
    }

    /// A request with a bearer token: status and body.
    fn call(&self, method: &str, path: &str, token: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").map_or("", |b| b.1);
        (code, body.to_string())
    }

    fn health(&self) -> (u16, Value) {
        let (code, body) = self.get("/health");
        let json = body
            .find('{')
            .and_then(|i| {
                serde_json::Deserializer::from_str(&body[i..])
                    .into_iter()
                    .next()
            })
            .and_then(|v| v.ok())
            .unwrap_or(Value::Null);
        (code, json)
    }

    /// SIGTERM, then the exit code (waiting at most `limit`).
    fn stop(mut self, limit: Duration) -> i32 {
        self.signal("TERM");
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < limit,
                "the daemon did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The run history as `cairn history --json` shows it, oldest first.
fn history(env: &Env, config: &Path) -> Vec<Value> {
    let out = env
        .cairn_with_config(config)
        .args(["history", "--json", "-n", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut runs = last_json(&out.stdout)["runs"].as_array().unwrap().clone();
    runs.reverse();
    runs
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

fn two_local(env: &Env) -> String {
    env.init(&[&env.path("r1"), &env.path("r2")]);
    format!(
        "[backends.one]\nurl = \"{}\"\n[backends.two]\nurl = \"{}\"\n[daemon]\nhistory = \"{}\"\nshutdown_timeout = \"30s\"\n\n",
        env.path("r1").display(),
        env.path("r2").display(),
        env.path("history.sqlite").display()
    )
}

#[test]
fn jobs_run_on_schedule_never_overlap_reload_on_sighup_and_finish_on_sigterm() {
    let env = Env::new();
    let base = two_local(&env);
    let config = env.path("cairn.toml");
    // Due every second, but each run takes two: runs must not overlap.
    let slow = "[jobs.slow]\nschedule = \"* * * * * *\"\n\
                command = [\"sh\", \"-c\", \"sleep 2; echo dump\"]\nfilename = \"dump.sql\"\n";
    std::fs::write(&config, format!("{base}{slow}")).unwrap();
    let d = Daemon::start(&env, &config);
    wait_for(Duration::from_secs(60), "three runs of slow", || {
        history(&env, &config).len() >= 3
    });
    let runs = history(&env, &config);
    for pair in runs.windows(2) {
        assert!(
            ts(&pair[1]["started"]) >= ts(&pair[0]["finished"]),
            "runs overlap: {pair:?}"
        );
    }
    assert!(
        runs.iter()
            .all(|r| r["status"] == "success" && r["trigger"] == "schedule"),
        "{runs:?}"
    );
    assert!(
        d.log().contains("still running: this run is skipped"),
        "{}",
        d.log()
    );
    let (code, metrics) = d.get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("cairn_job_runs_total{job_name=\"slow\"}"),
        "{metrics}"
    );

    // SIGHUP: a job added to the file is scheduled; a broken file is refused
    // and the old configuration stays.
    std::fs::write(
        &config,
        format!("{base}{slow}[jobs.broken]\nschedule = \"99 * * * *\"\nsync = true\n"),
    )
    .unwrap();
    d.signal("HUP");
    wait_for(Duration::from_secs(20), "the refused reload", || {
        d.log().contains("was not reloaded")
    });
    assert!(d.log().contains("jobs.broken.schedule"), "{}", d.log());
    std::fs::write(
        &config,
        format!("{base}{slow}[jobs.copy]\nschedule = \"* * * * * *\"\nsync = true\n"),
    )
    .unwrap();
    d.signal("HUP");
    wait_for(Duration::from_secs(30), "the new job in /metrics", || {
        d.get("/metrics").1.contains("job_name=\"copy\"")
    });
    wait_for(Duration::from_secs(30), "a run of the new job", || {
        history(&env, &config).iter().any(|r| r["job"] == "copy")
    });

    // SIGTERM while slow runs: the daemon waits for it to finish.
    wait_for(Duration::from_secs(30), "slow to be running", || {
        d.get("/metrics")
            .1
            .contains("cairn_job_running{job_name=\"slow\"} 1")
    });
    let term = jiff::Timestamp::now();
    let code = d.stop(Duration::from_secs(40));
    assert_eq!(code, 0);
    let runs = history(&env, &config);
    let last = runs.iter().rev().find(|r| r["job"] == "slow").unwrap();
    assert_eq!(last["status"], "success", "{last}");
    assert!(
        ts(&last["finished"]) > term,
        "the running job was not waited for: {last}"
    );
    env.cairn(&[&env.path("r1"), &env.path("r2")])
        .arg("check")
        .assert()
        .success();
}

#[test]
fn a_missed_run_is_caught_up_once_at_start() {
    let env = Env::new();
    let base = two_local(&env);
    let config = env.path("cairn.toml");
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    let job = |catch_up: bool| {
        format!(
            "{base}[jobs.hourly]\nschedule = \"0 * * * *\"\ncatch_up = {catch_up}\nbackup = [\"{}\"]\n",
            data.display()
        )
    };
    std::fs::write(&config, job(false)).unwrap();
    env.cairn_with_config(&config)
        .args(["run", "hourly"])
        .assert()
        .success();
    // The last run was two hours ago (the daemon was down since).
    let db = rusqlite::Connection::open(env.path("history.sqlite")).unwrap();
    let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2)).to_string();
    db.execute("UPDATE runs SET started = ?1, finished = ?1", [&old])
        .unwrap();
    drop(db);
    // Without catch_up: nothing runs at start.
    let d = Daemon::start(&env, &config);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.stop(Duration::from_secs(20)), 0);
    assert_eq!(history(&env, &config).len(), 1);
    // With it: one run, at once.
    std::fs::write(&config, job(true)).unwrap();
    let d = Daemon::start(&env, &config);
    wait_for(Duration::from_secs(30), "the catch-up run", || {
        history(&env, &config).len() == 2
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.stop(Duration::from_secs(20)), 0);
    let runs = history(&env, &config);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1]["trigger"], "catch_up");
    assert_eq!(runs[1]["status"], "success");
}

#[test]
fn a_bad_configuration_stops_the_daemon_before_it_starts() {
    let env = Env::new();
    let base = two_local(&env);
    let config = env.path("cairn.toml");
    for (jobs, key) in [
        (
            "[jobs.a]\nschedule = \"* * *\"\nsync = true\n",
            "jobs.a.schedule",
        ),
        (
            "[jobs.a]\nschedule = \"@daily\"\ntimezone = \"Atlantis/Capital\"\nsync = true\n",
            "jobs.a.timezone",
        ),
        (
            "[jobs.a]\nsync = true\nbackends = [\"three\"]\n",
            "jobs.a.backends",
        ),
        ("[jobs.a]\nsync = true\nfrobnicate = 1\n", "frobnicate"),
    ] {
        std::fs::write(&config, format!("{base}{jobs}")).unwrap();
        let out = env
            .cairn_with_config(&config)
            .args(["daemon", "--listen", "127.0.0.1:0"])
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{jobs}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key) && err.contains("line "), "{jobs}: {err}");
    }
}

// ------------------------------------------------- local + S3, for real

/// A TCP relay to the S3 server that the test can cut and restore: cut,
/// it refuses new connections and drops the ones open at their next byte.
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let d = d.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if d.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, down }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// A webhook receiver: every JSON body it gets, answered 200.
pub(crate) struct Receiver {
    pub(crate) port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.to_ascii_lowercase();
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        b.lock().unwrap().push(v);
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Receiver { port, bodies }
    }

    pub(crate) fn events(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// The evidence of issue 13: a daemon with a schedule of a few seconds
/// against local + S3. `/metrics` passes promtool; S3 cut makes the job
/// partial, the webhook says so naming S3, `/health` goes 503; S3 back,
/// the webhook says recovery and `/health` is 200 again.
#[test]
fn a_replica_failing_and_returning_is_notified_and_seen_in_health_and_metrics() {
    let Some(base) = cairn::backends::conformance::server_from_env("S3", "CAIRN_TEST_REPO_S3")
    else {
        return;
    };
    let Ok(endpoint) = std::env::var("AWS_ENDPOINT") else {
        return;
    };
    let target: std::net::SocketAddr = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let env = Env::new();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), noise(3, 200_000)).unwrap();
    let url = cairn::backends::conformance::fresh_location(&base, "daemon");
    let local = env.path("local");
    let relay = Relay::start(target);
    let hook = Receiver::start();
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[backends.local]\nurl = \"{}\"\n\n[backends.s3]\nurl = \"{url}\"\nendpoint = \"http://127.0.0.1:{}\"\nallow_http = true\n\
             stale_after = \"1h\"\n\n\
             [daemon]\nhistory = \"{}\"\nstatus_interval = \"2s\"\n\n\
             [notify]\nwebhook = \"http://127.0.0.1:{}/hook\"\nretries = 1\ntimeout = \"5s\"\n\n\
             [jobs.nightly]\nschedule = \"*/3 * * * * *\"\nbackup = [\"{}\"]\nstale_after = \"1h\"\n",
            local.display(),
            relay.port,
            env.path("history.sqlite").display(),
            hook.port,
            data.display()
        ),
    )
    .unwrap();
    env.cairn_with_config(&config)
        .args(["init", "--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
        .assert()
        .success();
    let d = Daemon::start(&env, &config);
    wait_for(
        Duration::from_secs(60),
        "a successful run and survey",
        || {
            let (code, h) = d.health();
            code == 200
                && h["jobs"]["nightly"]["last_run"]["status"] == "success"
                && d.get("/metrics")
                    .1
                    .contains("cairn_replica_snapshots{replica=\"s3\"}")
        },
    );
    let (_, metrics) = d.get("/metrics");
    if let Some(promtool) = crate::metrics::promtool() {
        crate::metrics::promtool_ok(&promtool, &["check", "metrics"], &metrics);
    }
    for m in [
        "cairn_job_last_success_timestamp_seconds{job_name=\"nightly\"}",
        "cairn_replica_up{replica=\"s3\"} 1",
        "cairn_replica_up{replica=\"local\"} 1",
    ] {
        assert!(metrics.contains(m), "{m} not in\n{metrics}");
    }

    // S3 goes away: the next run is partial, the webhook names S3, /health
    // is 503 naming the job.
    relay.set_down(true);
    wait_for(Duration::from_secs(120), "a partial notification", || {
        hook.events().iter().any(|e| e["event"] == "partial")
    });
    let partial = hook
        .events()
        .into_iter()
        .find(|e| e["event"] == "partial")
        .unwrap();
    assert_eq!(partial["job"], "nightly");
    assert_eq!(partial["replicas"], serde_json::json!(["s3"]));
    assert!(
        partial["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{partial}"
    );
    let (code, h) = d.health();
    assert_eq!(code, 503, "{h}");
    let problems = h["problems"].to_string();
    assert!(
        problems.contains("nightly") && problems.contains("s3"),
        "{problems}"
    );
    // Only once per repeat_after, though the job keeps failing.
    std::thread::sleep(Duration::from_secs(7));
    let partials = hook
        .events()
        .iter()
        .filter(|e| e["event"] == "partial")
        .count();
    assert_eq!(partials, 1, "{:?}", hook.events());

    // S3 back: recovery, and healthy again.
    relay.set_down(false);
    wait_for(Duration::from_secs(120), "a recovery notification", || {
        hook.events().iter().any(|e| e["event"] == "recovery")
    });
    wait_for(Duration::from_secs(60), "/health 200 again", || {
        d.health().0 == 200
    });
    let (_, metrics) = d.get("/metrics");
    if let Some(promtool) = crate::metrics::promtool() {
        crate::metrics::promtool_ok(&promtool, &["check", "metrics"], &metrics);
    }
    assert!(
        metrics.contains("cairn_job_failures_total{job_name=\"nightly\"}"),
        "{metrics}"
    );
    assert_eq!(d.stop(Duration::from_secs(60)), 0);
    // Both replicas hold every snapshot after a sync, and check is clean.
    env.cairn_with_config(&config)
        .arg("sync")
        .assert()
        .success();
    env.cairn_with_config(&config)
        .arg("check")
        .assert()
        .success();
}

#[test]
fn a_job_running_past_the_shutdown_timeout_is_stopped_and_recorded() {
    let env = Env::new();
    let base = two_local(&env).replace("shutdown_timeout = \"30s\"", "shutdown_timeout = \"1s\"");
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "{base}[jobs.endless]\nschedule = \"* * * * * *\"\n\
             command = [\"sleep\", \"600\"]\nfilename = \"x\"\n"
        ),
    )
    .unwrap();
    let d = Daemon::start(&env, &config);
    wait_for(Duration::from_secs(30), "the job to run", || {
        d.get("/metrics")
            .1
            .contains("cairn_job_running{job_name=\"endless\"} 1")
    });
    let started = Instant::now();
    assert_eq!(d.stop(Duration::from_secs(60)), 0);
    assert!(started.elapsed() < Duration::from_secs(50));
    let runs = history(&env, &config);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "failure");
    assert!(runs[0]["snapshot"].is_null());
    env.cairn(&[&env.path("r1"), &env.path("r2")])
        .arg("check")
        .assert()
        .success();
}

#[test]
fn a_failed_dump_is_notified_by_cairn_run_and_a_down_webhook_does_not_hold_it_up() {
    let env = Env::new();
    let base = two_local(&env);
    let hook = Receiver::start();
    let config = env.path("cairn.toml");
    let write = |port: u16| {
        std::fs::write(
            &config,
            format!(
                "{base}[notify]\nwebhook = \"http://127.0.0.1:{port}/hook\"\nretries = 2\nbackoff = \"1s\"\ntimeout = \"2s\"\n\
                 [jobs.db]\ncommand = [\"sh\", \"-c\", \"echo 'CREATE TABLE half'; exit 2\"]\nfilename = \"db.sql\"\n"
            ),
        )
        .unwrap();
    };
    write(hook.port);
    let out = env
        .cairn_with_config(&config)
        .args(["run", "db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let events = hook.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "failure");
    assert_eq!(events[0]["job"], "db");
    assert!(
        events[0]["error"]
            .as_str()
            .unwrap()
            .contains("exited with status 2"),
        "{events:?}"
    );
    assert!(events[0]["snapshot"].is_null());
    // A webhook nobody listens on: the run still ends, after bounded tries.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write(closed);
    // The previous run failed too, but a new host/port is a new target:
    // the failure is told again (and fails to be delivered).
    let started = Instant::now();
    let out = env
        .cairn_with_config(&config)
        .args(["run", "db"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(40));
    for r in ["r1", "r2"] {
        let out = env
            .cairn(&[&env.path(r)])
            .args(["snapshots", "--json"])
            .output()
            .unwrap();
        assert_eq!(last_json(&out.stdout).as_array().unwrap().len(), 0);
    }
}

#[test]
fn a_job_and_a_replica_going_stale_are_notified_and_fail_health() {
    let env = Env::new();
    let base = two_local(&env).replace("[daemon]\n", "[daemon]\nstatus_interval = \"1s\"\n");
    // `two` must have been written to within 3 s, the job must succeed
    // within 2 s; it is due once a year.
    let base = base.replacen(
        &format!("url = \"{}\"\n", env.path("r2").display()),
        &format!(
            "url = \"{}\"\nstale_after = \"3s\"\n",
            env.path("r2").display()
        ),
        1,
    );
    let hook = Receiver::start();
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "{base}[notify]\nwebhook = \"http://127.0.0.1:{}/h\"\n\
             [jobs.yearly]\nschedule = \"0 0 1 1 *\"\nsync = true\nstale_after = \"2s\"\n",
            hook.port
        ),
    )
    .unwrap();
    let d = Daemon::start(&env, &config);
    assert_eq!(d.health().0, 200, "a fresh daemon is healthy");
    wait_for(Duration::from_secs(30), "stale notifications", || {
        let e = hook.events();
        e.iter()
            .any(|e| e["event"] == "stale" && e["job"] == "yearly")
            && e.iter().any(|e| {
                e["event"] == "stale"
                    && e["job"].is_null()
                    && e["replicas"] == serde_json::json!(["two"])
            })
    });
    let (code, h) = d.health();
    assert_eq!(code, 503);
    let reasons: Vec<&str> = h["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.iter().all(|r| *r == "stale"), "{h}");
    assert!(h["problems"].to_string().contains("yearly"), "{h}");
    // Repeats are held back (repeat_after, 1h by default).
    std::thread::sleep(Duration::from_secs(3));
    let stale = hook
        .events()
        .iter()
        .filter(|e| e["event"] == "stale")
        .count();
    assert_eq!(stale, 2, "{:?}", hook.events());
    assert_eq!(d.stop(Duration::from_secs(20)), 0);
}

/// A secret from a systemd credential (`LoadCredential=`): one cairn.toml
/// names it by name, whatever the unit's credentials directory is.
#[test]
fn a_webhook_url_from_a_systemd_credential() {
    let env = Env::new();
    let base = two_local(&env);
    let hook = Receiver::start();
    let creds = env.path("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(
        creds.join("hook"),
        format!("http://127.0.0.1:{}/h\n", hook.port),
    )
    .unwrap();
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "{base}[notify]\nwebhook = {{ credential = \"hook\" }}\n\
             [jobs.bad]\ncommand = [\"false\"]\nfilename = \"x\"\n"
        ),
    )
    .unwrap();
    env.cairn_with_config(&config)
        .args(["config", "validate"])
        .assert()
        .success();
    // Outside systemd the credential cannot be read, and the error says why.
    let out = env
        .cairn_with_config(&config)
        .args(["run", "bad"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CREDENTIALS_DIRECTORY"),
        "{out:?}"
    );
    env.set_var("CREDENTIALS_DIRECTORY", Some(creds.as_os_str()));
    let out = env
        .cairn_with_config(&config)
        .args(["run", "bad"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(hook.events().len(), 1);
    assert_eq!(hook.events()[0]["event"], "failure");
}

#[test]
fn the_api_follows_a_reload_and_its_tasks_are_stopped_and_recorded_at_shutdown() {
    let env = Env::new();
    let base = two_local(&env).replace("shutdown_timeout = \"30s\"", "shutdown_timeout = \"2s\"");
    let (old, new) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
    for (f, t) in [("old.token", old), ("new.token", new)] {
        std::fs::write(env.path(f), t).unwrap();
    }
    let token = |label: &str, file: &str| {
        format!(
            "[[api.tokens]]\nlabel = \"{label}\"\nrole = \"operator\"\ntoken = {{ file = \"{}\" }}\n",
            env.path(file).display()
        )
    };
    let job =
        |name: &str| format!("[jobs.{name}]\ncommand = [\"sleep\", \"600\"]\nfilename = \"x\"\n");
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!("{base}{}{}", job("first"), token("old", "old.token")),
    )
    .unwrap();
    let d = Daemon::start(&env, &config);
    let (code, body) = d.call("GET", "/api/v1/jobs", old);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"first\"") && !body.contains("\"second\""),
        "{body}"
    );

    // A reload brings the new job and token; the old token stops working.
    std::fs::write(
        &config,
        format!(
            "{base}{}{}{}",
            job("first"),
            job("second"),
            token("new", "new.token")
        ),
    )
    .unwrap();
    d.signal("HUP");
    wait_for(Duration::from_secs(20), "the reload", || {
        d.log().contains("configuration reloaded")
    });
    let (code, body) = d.call("GET", "/api/v1/jobs", new);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"second\""), "{body}");
    assert_eq!(d.call("GET", "/api/v1/jobs", old).0, 401);

    // A file without a token is refused whole: the API keeps the last one.
    std::fs::write(&config, format!("{base}{}", job("first"))).unwrap();
    d.signal("HUP");
    wait_for(Duration::from_secs(20), "the refused reload", || {
        d.log().contains("was not reloaded")
    });
    assert!(d.log().contains("no [[api.tokens]]"), "{}", d.log());
    assert_eq!(d.call("GET", "/api/v1/jobs", new).0, 200);

    // A job started over the API is still running at SIGTERM: after the
    // shutdown timeout it is stopped at a safe point and recorded.
    let (code, body) = d.call("POST", "/api/v1/jobs/second/run", new);
    assert_eq!(code, 202, "{body}");
    wait_for(Duration::from_secs(20), "the job to start", || {
        d.call("GET", "/api/v1/jobs/1", new)
            .1
            .contains("\"running\"")
    });
    let started = Instant::now();
    assert_eq!(d.stop(Duration::from_secs(60)), 0);
    assert!(started.elapsed() >= Duration::from_secs(2), "did not wait");
    let runs = history(&env, &config);
    let run = runs
        .iter()
        .find(|r| r["job"] == "second")
        .unwrap_or_else(|| panic!("the API's run was not recorded: {runs:?}"));
    assert_eq!(run["status"], "failure", "{run}");
    assert_eq!(run["actor"], "new", "{run}");
}
