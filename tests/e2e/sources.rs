//! Sources beyond files: `backup --stdin-from-command` (its exit status
//! decides whether a snapshot exists), `backup --sqlite` (SQLite's online
//! backup while another process inserts rows), and PostgreSQL through
//! `pg_dump` against a real server from `scripts/test-servers`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

fn snapshots(env: &Env, repo: &Path) -> Vec<Value> {
    let out = env
        .cairn(&[repo])
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    last_json(&out.stdout).as_array().unwrap().clone()
}

/// Run `backup --json ARGS` on `repos`: exit code, summary, stderr.
fn backup(env: &Env, repos: &[&Path], args: &[&OsStr]) -> (i32, Value, String) {
    let out = env
        .cairn(repos)
        .arg("backup")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains('{') {
        panic!("backup {args:?}: exit {code}, no JSON; stderr: {stderr}");
    }
    (code, last_json(&out.stdout), stderr)
}

fn restore_file(env: &Env, repo: &Path, snap_path: &str, target: &Path) -> PathBuf {
    env.cairn(&[repo])
        .args(["restore", &format!("latest:{snap_path}"), "--target"])
        .arg(target)
        .assert()
        .success();
    target.join(snap_path.trim_start_matches('/'))
}

fn os<'a>(args: &[&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(|s| OsStr::new(*s)).collect()
}

/// A failed source: exit code 1, the error names the command (or
/// database) and `what`, no snapshot on any replica (`before` is what each
/// had), and `check` is clean.
fn assert_failed_cleanly(
    env: &Env,
    repos: &[&Path],
    before: &[usize],
    (code, sum, stderr): (i32, Value, String),
    what: &[&str],
) {
    assert_eq!(code, 1, "{sum}\n{stderr}");
    assert_eq!(sum["snapshot"], Value::Null, "{sum}");
    assert_eq!(sum["outcome"]["status"], "failed", "{sum}");
    let err = sum["source_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{sum}"));
    for w in what {
        assert!(err.contains(w), "{w:?} not in {err:?}");
    }
    for (r, n) in repos.iter().zip(before) {
        assert_eq!(snapshots(env, r).len(), *n, "{}", r.display());
        assert_eq!(files_in(r, "snapshots").len(), *n, "{}", r.display());
        env.cairn(&[r]).arg("check").assert().success();
    }
}

#[test]
fn command_output_is_one_file_without_cairns_secrets() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    let data = env.path("data");
    fs::write(&data, noise(11, 5 << 20)).unwrap();
    let (code, sum, stderr) = backup(
        &env,
        &[&a, &b],
        &[
            OsStr::new("--stdin-from-command"),
            OsStr::new("--"),
            OsStr::new("cat"),
            data.as_os_str(),
        ],
    );
    assert_eq!(code, 0, "{sum}\n{stderr}");
    assert_eq!(sum["source_error"], Value::Null);
    assert_eq!(sum["summary"]["total_bytes"], 5 << 20);
    for r in [&a, &b] {
        let snaps = snapshots(&env, r);
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0]["paths"], serde_json::json!(["/cat.out"]));
        let ls = env.cairn(&[r]).args(["ls", "latest"]).output().unwrap();
        assert!(String::from_utf8_lossy(&ls.stdout).contains("/cat.out"));
    }
    let got = restore_file(&env, &b, "/cat.out", &env.path("out"));
    assert_eq!(fs::read(got).unwrap(), fs::read(&data).unwrap());

    // The command's environment: no passphrase, and the name given.
    let (code, sum, stderr) = backup(
        &env,
        &[&a],
        &os(&[
            "--stdin-from-command",
            "--stdin-filename",
            "env.txt",
            "--",
            "sh",
            "-c",
            "env; echo marker-$((6*7))",
        ]),
    );
    assert_eq!(code, 0, "{sum}\n{stderr}");
    let got = restore_file(&env, &a, "/env.txt", &env.path("out-env"));
    let text = fs::read_to_string(got).unwrap();
    assert!(text.contains("marker-42"), "{text}");
    assert!(!text.contains("CAIRN_PASSWORD"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[test]
fn a_failing_command_saves_no_snapshot_anywhere() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    let data = env.path("data");
    fs::write(&data, noise(12, 3 << 20)).unwrap();
    let good = format!("cat {}", data.display());
    let (code, sum, _) = backup(
        &env,
        &[&a, &b],
        &os(&["--stdin-from-command", "--", "sh", "-c", &good]),
    );
    assert_eq!(code, 0, "{sum}");

    // Output first (megabytes, so packs are uploaded), then a failure.
    let script = format!("cat {}; echo dump failed >&2; exit 3", data.display());
    let run = backup(
        &env,
        &[&a, &b],
        &os(&["--stdin-from-command", "--", "sh", "-c", &script]),
    );
    assert!(
        run.2.contains("dump failed"),
        "the command's stderr: {}",
        run.2
    );
    assert_failed_cleanly(&env, &[&a, &b], &[1, 1], run, &["sh", "status 3"]);

    let script = format!("head -c 1000000 {}; kill -9 $$", data.display());
    let run = backup(
        &env,
        &[&a, &b],
        &os(&["--stdin-from-command", "--", "sh", "-c", &script]),
    );
    assert_failed_cleanly(&env, &[&a, &b], &[1, 1], run, &["sh", "signal 9"]);

    let run = backup(
        &env,
        &[&a, &b],
        &os(&["--stdin-from-command", "--", "/nonexistent/cairn-dump"]),
    );
    assert_failed_cleanly(
        &env,
        &[&a, &b],
        &[1, 1],
        run,
        &["cannot run", "/nonexistent/cairn-dump"],
    );

    // The text output says so too.
    let out = env
        .cairn(&[&a])
        .args(["backup", "--stdin-from-command", "--", "false"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the command false exited with status 1: no snapshot was saved"),
        "{stderr}"
    );
}

#[test]
fn a_large_command_output_is_streamed_in_bounded_memory() {
    const RSS_LIMIT_KIB: u64 = 256 << 10;
    let env = Env::new();
    let a = env.path("a");
    env.init(&[&a]);
    // 768 MiB of zeros: cheap to store (one chunk, deduplicated), but
    // holding the stream whole would need three times the limit.
    let mut c = env.cairn(&[&a]);
    c.args([
        "backup",
        "--json",
        "--stdin-from-command",
        "--",
        "head",
        "-c",
        "805306368",
        "/dev/zero",
    ]);
    let (out, rss) = output_with_peak_rss(&c);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(last_json(&out.stdout)["summary"]["total_bytes"], 805306368);
    assert!(rss < RSS_LIMIT_KIB, "peaked at {rss} KiB");
}

/// A child killed when the test ends, also when it fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_stops_an_endless_command_and_saves_nothing() {
    let env = Env::new();
    let a = env.path("a");
    env.init(&[&a]);
    let pidfile = env.path("pid");
    let script = format!("echo $$ > {}; exec cat /dev/zero", pidfile.display());
    let mut c = env.cairn(&[&a]);
    c.args(["backup", "--stdin-from-command", "--", "sh", "-c", &script]);
    let mut child = KillOnDrop(
        std_command(&c)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let started = Instant::now();
    while fs::read_to_string(&pidfile).map_or(true, |p| p.trim().is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the command did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dump_pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    std::thread::sleep(Duration::from_millis(500));
    // Only cairn gets the signal (as from `kill`, not a terminal's Ctrl-C
    // that reaches the whole process group).
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "cairn did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        !Path::new(&format!("/proc/{dump_pid}")).exists(),
        "the command was killed and reaped"
    );
    assert!(snapshots(&env, &a).is_empty());
    env.cairn(&[&a]).arg("check").assert().success();
}

#[test]
fn stream_sources_are_exclusive_and_need_a_command() {
    let env = Env::new();
    let a = env.path("a");
    env.init(&[&a]);
    for args in [
        vec!["--stdin", "--sqlite", "x.db"],
        vec!["--stdin-from-command"],
        vec!["--sqlite", "x.db", "/etc/hostname"],
        vec!["/etc/hostname", "--", "true"],
        vec![
            "--stdin-from-command",
            "--stdin-filename",
            "a/b",
            "--",
            "true",
        ],
    ] {
        let out = env.cairn(&[&a]).arg("backup").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    assert!(snapshots(&env, &a).is_empty());
}

/// A Python process that inserts rows into `db` one transaction at a time,
/// with a pause of a millisecond between them (an application, not a
/// benchmark), until `stop` exists; it prints the last id on exit.
fn sqlite_writer(db: &Path, stop: &Path) -> Child {
    const SCRIPT: &str = r#"
import os, sqlite3, sys, time
db, stop = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db, timeout=60, isolation_level=None)
n = c.execute("SELECT count(*) FROM t").fetchone()[0]
while not os.path.exists(stop):
    n += 1
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO t(id, payload) VALUES (?, randomblob(2000))", (n,))
    c.execute("COMMIT")
    time.sleep(0.001)
print(n)
"#;
    std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(db)
        .arg(stop)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (with its sqlite3 module) runs the writer")
}

fn rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn sqlite_is_copied_consistently_while_a_process_inserts() {
    sqlite_online_backup("delete");
}

#[test]
fn sqlite_in_wal_mode_is_copied_consistently_while_a_process_inserts() {
    sqlite_online_backup("wal");
}

/// Back up a database in `journal_mode` while another process inserts
/// rows; the restored file is intact and holds a prefix of the inserts.
fn sqlite_online_backup(journal_mode: &str) {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    let tmp = env.path("tmp");
    fs::create_dir(&tmp).unwrap();
    env.set_var("TMPDIR", Some(tmp.as_os_str()));
    let db = env.path("app.db");
    {
        // Large enough (about 30 MiB) that the copy takes many steps.
        let c = rusqlite::Connection::open(&db).unwrap();
        let mode: String = c
            .query_row(&format!("PRAGMA journal_mode = {journal_mode}"), [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(mode, journal_mode);
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 15000)
             INSERT INTO t SELECT i, randomblob(2000) FROM s;",
        )
        .unwrap();
    }
    let stop = env.path("stop");
    let mut writer = KillOnDrop(sqlite_writer(&db, &stop));
    let writer = &mut writer.0;
    let started = Instant::now();
    while rows(&db) < 15_050 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writer does not write"
        );
        assert!(writer.try_wait().unwrap().is_none(), "the writer died");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = rows(&db);
    let res = backup(&env, &[&a, &b], &[OsStr::new("--sqlite"), db.as_os_str()]);
    let after = rows(&db);
    fs::write(&stop, "").unwrap();
    let status = writer.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut writer.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "writer: {status:?} {stdout}");
    let last: i64 = stdout.trim().parse().unwrap();
    let (code, sum, stderr) = res;
    assert_eq!(code, 0, "{sum}\n{stderr}");
    assert!(
        after > before && last >= after,
        "the writer kept writing during the backup: {before} rows before, {after} after"
    );
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "the temporary copy is removed"
    );
    for r in [&a, &b] {
        assert_eq!(
            snapshots(&env, r)[0]["paths"],
            serde_json::json!(["/app.db"])
        );
    }
    let got = restore_file(&env, &b, "/app.db", &env.path("out"));
    let c = rusqlite::Connection::open(&got).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (n, max, min): (i64, i64, i64) = c
        .query_row("SELECT count(*), max(id), min(id) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    // A prefix of the inserts: ids 1..n, no gaps, at least the rows seen
    // before the backup started, at most those written until it ended.
    assert_eq!((min, max), (1, n), "ids 1..{n} without gaps");
    assert!(
        n >= before && n <= after,
        "{n} rows restored; {before} before the backup, {after} after"
    );
}

#[test]
fn a_file_that_is_not_a_database_fails_and_leaves_no_copy() {
    let env = Env::new();
    let a = env.path("a");
    env.init(&[&a]);
    let tmp = env.path("tmp");
    fs::create_dir(&tmp).unwrap();
    env.set_var("TMPDIR", Some(tmp.as_os_str()));
    let bad = env.path("notes.db");
    fs::write(&bad, noise(3, 64 << 10)).unwrap();
    let run = backup(&env, &[&a], &[OsStr::new("--sqlite"), bad.as_os_str()]);
    assert_failed_cleanly(&env, &[&a], &[0], run, &["notes.db", "not a database"]);
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    let run = backup(
        &env,
        &[&a],
        &[OsStr::new("--sqlite"), env.path("missing.db").as_os_str()],
    );
    assert_failed_cleanly(&env, &[&a], &[0], run, &["missing.db"]);
}

// ---------------------------------------------------------------- PostgreSQL

/// The server's URL and the directory of its client programs, or `None`
/// after a loud skip (a failure under `CI=true`).
fn postgres() -> Option<(String, PathBuf)> {
    let url = cairn::backends::conformance::server_from_env("PostgreSQL", "CAIRN_TEST_POSTGRES")?;
    let bin =
        cairn::backends::conformance::server_from_env("PostgreSQL", "CAIRN_TEST_POSTGRES_BIN")?;
    Some((url, PathBuf::from(bin)))
}

/// The URL of database `db` on the server at `url`.
fn db_url(url: &str, db: &str) -> String {
    let base = url.rsplit_once('/').unwrap().0;
    format!("{base}/{db}")
}

/// Run a PostgreSQL client program; its stdout.
fn pg(bin: &Path, program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(bin.join(program))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh database with a table of rows; its URL.
fn make_db(url: &str, bin: &Path, name: &str) -> String {
    let db = format!("{name}_{:08x}", rand::random::<u32>());
    pg(bin, "createdb", &["--maintenance-db", url, &db]);
    let dburl = db_url(url, &db);
    pg(
        bin,
        "psql",
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-d",
            &dburl,
            "-c",
            "CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL, total numeric(10,2));
             INSERT INTO orders (customer, total)
               SELECT 'customer ' || i, i * 1.25 FROM generate_series(1, 20000) AS i;",
        ],
    );
    dburl
}

const ROWS_QUERY: &str = "SELECT count(*), md5(string_agg(id || ':' || customer || ':' || total, ',' ORDER BY id)) FROM orders";

#[test]
fn postgres_dump_backs_up_and_restores_with_pg_restore() {
    let Some((url, bin)) = postgres() else { return };
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    let src = make_db(&url, &bin, "cairn_src");
    let want = pg(&bin, "psql", &["-tA", "-d", &src, "-c", ROWS_QUERY]);
    assert!(want.starts_with("20000|"), "{want}");
    let pg_dump = bin.join("pg_dump");
    let (code, sum, stderr) = backup(
        &env,
        &[&a, &b],
        &[
            OsStr::new("--stdin-from-command"),
            OsStr::new("--stdin-filename"),
            OsStr::new("app.dump"),
            OsStr::new("--tag"),
            OsStr::new("postgres"),
            OsStr::new("--"),
            pg_dump.as_os_str(),
            OsStr::new("--format=custom"),
            OsStr::new("--dbname"),
            OsStr::new(&src),
        ],
    );
    assert_eq!(code, 0, "{sum}\n{stderr}");
    assert_eq!(
        snapshots(&env, &b)[0]["paths"],
        serde_json::json!(["/app.dump"])
    );
    let dump = restore_file(&env, &b, "/app.dump", &env.path("out"));
    let fresh = format!("cairn_restored_{:08x}", rand::random::<u32>());
    pg(&bin, "createdb", &["--maintenance-db", &url, &fresh]);
    let fresh = db_url(&url, &fresh);
    pg(
        &bin,
        "pg_restore",
        &[
            "--exit-on-error",
            "--no-owner",
            "--dbname",
            &fresh,
            dump.to_str().unwrap(),
        ],
    );
    let got = pg(&bin, "psql", &["-tA", "-d", &fresh, "-c", ROWS_QUERY]);
    assert_eq!(got, want);
}

#[test]
fn a_pg_dump_that_fails_saves_no_snapshot() {
    let Some((url, bin)) = postgres() else { return };
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    let src = make_db(&url, &bin, "cairn_fail");
    let pg_dump = bin.join("pg_dump");
    let pg_dump = pg_dump.to_str().unwrap();
    let dump = |script: &str| {
        backup(
            &env,
            &[&a, &b],
            &os(&[
                "--stdin-from-command",
                "--stdin-filename",
                "app.dump",
                "--",
                "sh",
                "-c",
                script,
            ]),
        )
    };
    let (code, sum, _) = dump(&format!("{pg_dump} --format=custom --dbname {src}"));
    assert_eq!(code, 0, "{sum}");

    // A database that does not exist: pg_dump prints nothing and fails.
    let missing = db_url(&url, "cairn_no_such_database");
    let run = backup(
        &env,
        &[&a, &b],
        &os(&[
            "--stdin-from-command",
            "--",
            pg_dump,
            "--format=custom",
            "--dbname",
            &missing,
        ]),
    );
    assert!(
        run.2.contains("cairn_no_such_database"),
        "pg_dump's error: {}",
        run.2
    );
    assert_failed_cleanly(&env, &[&a, &b], &[1, 1], run, &["pg_dump", "status 1"]);

    // A whole dump written, then a failure (a wrapper that exits 3).
    let run = dump(&format!("{pg_dump} --format=custom --dbname {src}; exit 3"));
    assert_failed_cleanly(&env, &[&a, &b], &[1, 1], run, &["sh", "status 3"]);

    // Half a dump: pg_dump's output cut off, and pg_dump killed.
    let run = dump(&format!(
        "{pg_dump} --format=plain --dbname {src} | head -c 200000; kill -9 $$"
    ));
    assert_failed_cleanly(&env, &[&a, &b], &[1, 1], run, &["sh", "signal 9"]);
}

/// A scheduled database job whose pg_dump dies halfway: the run fails, no
/// snapshot exists anywhere, and the failure is notified.
#[test]
fn a_database_job_whose_dump_dies_halfway_is_a_notified_failure() {
    let Some((url, bin)) = postgres() else { return };
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    let src = make_db(&url, &bin, "cairn_job");
    let hook = crate::daemon::Receiver::start();
    let config = env.path("cairn.toml");
    let script = format!(
        "{} --format=plain --dbname {src} | head -c 100000; kill -9 $$",
        bin.join("pg_dump").display()
    );
    fs::write(
        &config,
        format!(
            "[backends.a]\nurl = \"{}\"\n[backends.b]\nurl = \"{}\"\n[daemon]\nhistory = \"{}\"\n\
             [notify]\nwebhook = \"http://127.0.0.1:{}/h\"\n\
             [jobs.db]\nschedule = \"0 * * * *\"\ncommand = [\"sh\", \"-c\", {script:?}]\nfilename = \"app.sql\"\n",
            a.display(),
            b.display(),
            env.path("history.sqlite").display(),
            hook.port
        ),
    )
    .unwrap();
    let out = env
        .cairn_with_config(&config)
        .args(["run", "db", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let run = &last_json(&out.stdout)["run"];
    assert_eq!(run["status"], "failure");
    assert!(run["error"].as_str().unwrap().contains("signal 9"), "{run}");
    assert!(snapshots(&env, &a).is_empty() && snapshots(&env, &b).is_empty());
    let events = hook.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "failure");
    assert_eq!(events[0]["job"], "db");
    env.cairn(&[&a, &b]).arg("check").assert().success();
}

#[test]
fn postgres_example_script_saves_the_dump_and_the_globals() {
    let Some((url, bin)) = postgres() else { return };
    let env = Env::new();
    let a = env.path("a");
    env.init(&[&a]);
    let src = make_db(&url, &bin, "cairn_example");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/postgres-backup.sh");
    let run = |extra: &[(&str, &str)]| {
        let mut c = std::process::Command::new("bash");
        c.arg(&script)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", env.path("home"))
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN", assert_cmd::cargo::cargo_bin("cairn"))
            .env("CAIRN_REPOS", &a)
            .env("PGDATABASE_URL", &src)
            .env("PG_DUMP", bin.join("pg_dump"))
            .env("PG_DUMPALL", bin.join("pg_dumpall"))
            .stdin(Stdio::null());
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&[]);
    assert!(out.status.success(), "{out:?}");
    let snaps = snapshots(&env, &a);
    let mut paths: Vec<String> = snaps.iter().map(|s| s["paths"][0].to_string()).collect();
    paths.sort();
    let name = src.rsplit('/').next().unwrap();
    assert_eq!(
        paths,
        [format!("\"/{name}.dump\""), "\"/globals.sql\"".into()]
    );
    let dump = restore_file(&env, &a, &format!("/{name}.dump"), &env.path("out"));
    let fresh = format!("cairn_example_restored_{:08x}", rand::random::<u32>());
    pg(&bin, "createdb", &["--maintenance-db", &url, &fresh]);
    let fresh = db_url(&url, &fresh);
    pg(
        &bin,
        "pg_restore",
        &[
            "--exit-on-error",
            "--no-owner",
            "--dbname",
            &fresh,
            dump.to_str().unwrap(),
        ],
    );
    assert_eq!(
        pg(&bin, "psql", &["-tA", "-d", &fresh, "-c", ROWS_QUERY]),
        pg(&bin, "psql", &["-tA", "-d", &src, "-c", ROWS_QUERY])
    );

    // A dump that fails: the script stops with cairn's failure code and
    // saves nothing more.
    let missing = db_url(&url, "cairn_no_such_database");
    let out = run(&[("PGDATABASE_URL", &missing)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let snaps = snapshots(&env, &a);
    assert_eq!(snaps.len(), 3, "the globals, and no dump: {snaps:?}");
    assert!(snaps
        .iter()
        .all(|s| s["paths"][0] != "/cairn_no_such_database.dump"));
}
