//! Jobs of cairn.toml run once: `cairn run NAME` (hooks, retries, timeout,
//! every kind), `cairn jobs`, `cairn history`, and `cairn config
//! validate`/`show` naming the file, line and key of each mistake.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// A configuration with two local backends and the given job tables.
struct Setup {
    env: Env,
    config: PathBuf,
    data: PathBuf,
}

impl Setup {
    fn new(jobs: &str) -> Setup {
        let env = Env::new();
        let data = env.path("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("a.txt"), "hello").unwrap();
        fs::write(data.join("b.bin"), noise(1, 50_000)).unwrap();
        env.init(&[&env.path("r1"), &env.path("r2")]);
        let config = env.path("cairn.toml");
        let s = Setup { env, config, data };
        s.write(jobs);
        s
    }

    fn write(&self, jobs: &str) {
        let text = format!(
            "[backends.one]\nurl = \"{}\"\n[backends.two]\nurl = \"{}\"\n\
             [retention]\nkeep_last = 1\n[daemon]\nhistory = \"{}\"\n\n{}",
            self.env.path("r1").display(),
            self.env.path("r2").display(),
            self.env.path("history.sqlite").display(),
            jobs.replace("DATA", &self.data.display().to_string())
                .replace("DIR", &self.env.dir.path().display().to_string())
        );
        fs::write(&self.config, text).unwrap();
    }

    fn cairn(&self) -> assert_cmd::Command {
        self.env.cairn_with_config(&self.config)
    }

    /// `cairn run NAME --json`: exit code and the run record.
    fn run(&self, name: &str) -> (i32, Value, String) {
        let out = self.cairn().args(["run", name, "--json"]).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains('{'),
            "run {name}: exit {code}, no JSON; stderr: {stderr}"
        );
        (code, last_json(&out.stdout)["run"].clone(), stderr)
    }

    fn history(&self) -> Vec<Value> {
        let out = self.cairn().args(["history", "--json"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        last_json(&out.stdout)["runs"].as_array().unwrap().clone()
    }

    fn snapshot_count(&self, repo: &str) -> usize {
        let out = self
            .env
            .cairn(&[&self.env.path(repo)])
            .args(["snapshots", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        last_json(&out.stdout).as_array().unwrap().len()
    }
}

#[test]
fn a_backup_job_runs_with_its_hooks_and_is_recorded() {
    let s = Setup::new(
        "[jobs.nightly]\nschedule = \"0 3 * * *\"\ntimezone = \"UTC\"\nbackup = [\"DATA\"]\n\
         tags = [\"nightly\"]\nexclude = [\"*.bin\"]\n\
         before = \"env | grep ^CAIRN_ | sort > DIR/before.env\"\n\
         after = [\"sh\", \"-c\", \"env | grep ^CAIRN_ | sort > DIR/after.env\"]\n",
    );
    let (code, run, stderr) = s.run("nightly");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(run["status"], "success");
    assert_eq!(run["trigger"], "manual");
    let snap = run["snapshot"].as_str().unwrap().to_string();
    assert_eq!(s.snapshot_count("r1"), 1);
    assert_eq!(s.snapshot_count("r2"), 1);
    let before = fs::read_to_string(s.env.path("before.env")).unwrap();
    assert!(before.contains("CAIRN_JOB=nightly"), "{before}");
    assert!(before.contains("CAIRN_HOOK=before"), "{before}");
    assert!(
        !before.contains("CAIRN_PASSWORD"),
        "hooks must not see the passphrase: {before}"
    );
    let after = fs::read_to_string(s.env.path("after.env")).unwrap();
    for want in [
        "CAIRN_STATUS=success".to_string(),
        format!("CAIRN_SNAPSHOT={snap}"),
        "CAIRN_REPLICAS=one,two".into(),
        "CAIRN_REPLICAS_FAILED=\n".into(),
    ] {
        assert!(after.contains(&want), "{want} not in {after}");
    }
    // The exclude applied: only a.txt is in the snapshot.
    let out = s
        .env
        .cairn(&[&s.env.path("r1")])
        .args(["ls", "latest", "--json"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("a.txt") && !listing.contains("b.bin"),
        "{listing}"
    );
    let h = s.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["job"], "nightly");
    assert_eq!(h[0]["snapshot"].as_str(), Some(snap.as_str()));
    // `jobs` shows the next run and the last one.
    let out = s.cairn().args(["jobs", "--json"]).output().unwrap();
    let jobs = last_json(&out.stdout);
    let j = &jobs["jobs"][0];
    assert_eq!(j["name"], "nightly");
    assert!(
        j["next_run"].as_str().unwrap().ends_with("03:00:00Z"),
        "{j}"
    );
    assert_eq!(j["last_run"]["status"], "success");
    let text = s.cairn().arg("jobs").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("nightly") && text.contains("success"),
        "{text}"
    );
}

#[test]
fn a_failing_before_hook_aborts_the_job_unless_told_to_go_on() {
    let job = "[jobs.j]\nbackup = [\"DATA\"]\nbefore = \"echo cannot quiesce >&2; exit 3\"\n\
               on_failure = \"echo $CAIRN_STATUS > DIR/failed\"\n";
    let s = Setup::new(job);
    let (code, run, _) = s.run("j");
    assert_eq!(code, 1);
    assert_eq!(run["status"], "failure");
    let err = run["error"].as_str().unwrap();
    assert!(err.contains("before hook exited with status 3"), "{err}");
    assert!(err.contains("cannot quiesce"), "{err}");
    assert_eq!(s.snapshot_count("r1"), 0);
    assert_eq!(
        fs::read_to_string(s.env.path("failed")).unwrap().trim(),
        "failure"
    );
    s.write(&format!("{job}continue_on_hook_failure = true\n"));
    let (code, run, _) = s.run("j");
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["status"], "success");
    assert!(
        run["error"].as_str().unwrap().contains("before hook"),
        "{run}"
    );
    assert_eq!(s.snapshot_count("r1"), 1);
}

#[test]
fn a_failing_dump_is_retried_and_never_becomes_a_snapshot() {
    let s = Setup::new(
        "[jobs.db]\ncommand = [\"sh\", \"-c\", \"echo half a dump; exit 3\"]\nfilename = \"db.sql\"\n\
         retries = 1\nretry_delay = \"1s\"\n",
    );
    let (code, run, _) = s.run("db");
    assert_eq!(code, 1);
    assert_eq!(run["status"], "failure");
    assert_eq!(run["attempts"], 2);
    assert!(run["snapshot"].is_null());
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("exited with status 3"),
        "{run}"
    );
    assert_eq!(s.snapshot_count("r1"), 0);
    assert_eq!(s.snapshot_count("r2"), 0);
    s.env
        .cairn(&[&s.env.path("r1"), &s.env.path("r2")])
        .arg("check")
        .assert()
        .success();
}

#[test]
fn a_job_past_its_timeout_is_stopped_and_reported() {
    // The command prints nothing and would run for a minute.
    let s = Setup::new("[jobs.hang]\ncommand = [\"sleep\", \"60\"]\ntimeout = \"2s\"\n");
    let started = Instant::now();
    let (code, run, _) = s.run("hang");
    assert_eq!(code, 1);
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the hung command was not stopped"
    );
    assert_eq!(run["status"], "failure");
    let err = run["error"].as_str().unwrap();
    assert!(err.contains("timeout (2s)"), "{err}");
    assert_eq!(s.snapshot_count("r1"), 0);
    assert_eq!(s.history()[0]["status"], "failure");
}

#[test]
fn every_kind_of_job_runs() {
    let s = Setup::new(
        "[jobs.files]\nbackup = [\"DATA\"]\nbackends = [\"one\"]\n\
         [jobs.db]\nsqlite = \"DIR/app.db\"\n\
         [jobs.stream]\ncommand = [\"echo\", \"dump\"]\nfilename = \"dump.sql\"\n\
         [jobs.replicate]\nsync = true\n\
         [jobs.retention]\nforget = true\nprune = true\n\
         [jobs.verify]\ncheck = \"1/2\"\n",
    );
    {
        let c = rusqlite::Connection::open(s.env.path("app.db")).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    for job in ["files", "db", "stream"] {
        let (code, run, stderr) = s.run(job);
        assert_eq!(code, 0, "{job}: {run} {stderr}");
    }
    // `files` wrote only to `one`; the sync brings it to `two`.
    assert_eq!(s.snapshot_count("r1"), 3);
    assert_eq!(s.snapshot_count("r2"), 2);
    let (code, run, _) = s.run("replicate");
    assert_eq!(code, 0, "{run}");
    assert_eq!(s.snapshot_count("r2"), 3);
    let (code, run, _) = s.run("retention");
    assert_eq!(code, 0, "{run}");
    // keep_last = 1 per host/paths group: three groups stay.
    assert_eq!(s.snapshot_count("r1"), 3);
    let (code, run, _) = s.run("verify");
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["kind"], "check");
    assert_eq!(s.history().len(), 6);
}

#[test]
fn an_unusable_replica_makes_a_partial_run() {
    let s = Setup::new("[jobs.j]\nbackup = [\"DATA\"]\n");
    // `two` is replaced by a location that holds no repository.
    fs::rename(s.env.path("r2"), s.env.path("r2-gone")).unwrap();
    let (code, run, _) = s.run("j");
    assert_eq!(code, 4, "{run}");
    assert_eq!(run["status"], "partial");
    let two = run["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "two")
        .unwrap();
    assert_eq!(two["ok"], false);
    assert_eq!(s.snapshot_count("r1"), 1);
}

/// `config validate` output for a configuration text.
fn validate(text: &str) -> (i32, String) {
    let env = Env::new();
    let path = env.path("cairn.toml");
    fs::write(&path, text).unwrap();
    let out = env
        .cairn_with_config(&path)
        .args(["config", "validate"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_validate_names_file_line_and_key() {
    let base = "[backends.a]\nurl = \"/tmp/a\"\n\n";
    for (jobs, line, key) in [
        (
            "[jobs.n]\nschedule = \"61 * * * *\"\nsync = true\n",
            5,
            "jobs.n.schedule",
        ),
        (
            "[jobs.n]\nsync = true\nschedule = \"* * * * *\"\ntimezone = \"Mars/Base\"\n",
            7,
            "jobs.n.timezone",
        ),
        (
            "[jobs.n]\nsync = true\nbackends = [\"b\"]\n",
            6,
            "jobs.n.backends",
        ),
        (
            "[jobs.n]\nsync = true\nfrobnicate = 1\n",
            6,
            "jobs.n.frobnicate",
        ),
        (
            "[jobs.n]\nsync = true\nretries = \"x\"\n",
            6,
            "jobs.n.retries",
        ),
        (
            "[jobs.n]\nsync = true\njitter = \"soon\"\n",
            6,
            "jobs.n.jitter",
        ),
        ("[daemon]\nlisten = \"nowhere\"\n", 5, "daemon.listen"),
    ] {
        let (code, stderr) = validate(&format!("{base}{jobs}"));
        assert_eq!(code, 2, "{jobs}: {stderr}");
        assert!(stderr.contains("cairn.toml"), "{stderr}");
        assert!(stderr.contains(&format!("line {line}")), "{jobs}: {stderr}");
        assert!(stderr.contains(key), "{jobs}: {stderr}");
    }
    let (code, stderr) = validate(&format!(
        "{base}[jobs.n]\nsync = true\nschedule = \"*/5 * * * * *\"\n"
    ));
    assert_eq!(code, 0, "{stderr}");
    // A backend with an option its backend does not know.
    let (code, stderr) = validate("[backends.s3]\nurl = \"s3://b/p\"\nregoin = \"x\"\n");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("line 1") && stderr.contains("regoin"),
        "{stderr}"
    );
}

#[test]
fn config_show_redacts_secrets() {
    let env = Env::new();
    let path = env.path("cairn.toml");
    fs::write(
        &path,
        "[backends.f]\nurl = \"ftp://bob:hunter2@127.0.0.1/x\"\n\
         [backends.s]\nurl = \"sftp://u@h/x\"\npassword = \"s3cr3t-pass\"\n",
    )
    .unwrap();
    for json in [false, true] {
        let mut c = env.cairn_with_config(&path);
        c.args(["config", "show"]);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("hunter2") && !text.contains("s3cr3t"),
            "{text}"
        );
        assert!(text.contains("sftp://u@h/x"), "{text}");
    }
}

#[test]
fn an_unknown_job_names_the_known_ones() {
    let s = Setup::new("[jobs.a]\nsync = true\n[jobs.b]\nsync = true\n");
    let out = s.cairn().args(["run", "c"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no job \"c\"") && e.contains("a, b"), "{e}");
}
