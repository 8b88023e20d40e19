//! Repository locks between processes: concurrent backups share the
//! repository, repair waits for them (or refuses), a killed holder's lock
//! is stale, and Ctrl-C leaves no lock behind.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A backup of `src` that takes several seconds: new data, uploads limited
/// to 200 KiB/s.
fn slow_backup(env: &Env, repo: &Path, src: &Path) -> Child {
    let mut c = env.cairn(&[repo]);
    c.args(["backup", "--quiet", "--limit-upload", "200"])
        .arg(src);
    std_command(&c)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn locks(repo: &Path) -> Vec<std::path::PathBuf> {
    files_in(repo, "locks")
}

/// Wait until a process holds a lock on `repo`.
fn wait_for_lock(repo: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while locks(repo).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it was seen holding its lock"
        );
        assert!(Instant::now() < deadline, "no lock appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn snapshot_count(env: &Env, repo: &Path) -> usize {
    let out = env
        .cairn(&[repo])
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    last_json(&out.stdout).as_array().unwrap().len()
}

fn assert_clean(env: &Env, repo: &Path) {
    let out = env
        .cairn(&[repo])
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(locks(repo).is_empty(), "locks left: {:?}", locks(repo));
}

fn setup(env: &Env, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let repo = env.path(&format!("{name}-repo"));
    let src = env.path(&format!("{name}-src"));
    make_tree(&src, 64 << 10);
    env.init(&[&repo]);
    env.cairn(&[&repo])
        .args(["backup", "--quiet"])
        .arg(&src)
        .assert()
        .success();
    // New data for the slow backup to upload.
    fs::write(src.join("new.bin"), noise(77, 3 << 20)).unwrap();
    (repo, src)
}

#[test]
fn two_backups_at_once_both_succeed() {
    let env = Env::new();
    let (repo, src) = setup(&env, "two");
    let mut first = slow_backup(&env, &repo, &src);
    wait_for_lock(&repo, &mut first);
    let other = env.path("other-src");
    make_tree(&other, 32 << 10);
    env.cairn(&[&repo])
        .args(["backup", "--quiet"])
        .arg(&other)
        .assert()
        .success();
    assert!(first.wait().unwrap().success());
    assert_eq!(snapshot_count(&env, &repo), 3);
    assert_clean(&env, &repo);
}

#[test]
fn repair_refuses_or_waits_while_a_backup_runs_and_nothing_is_lost() {
    let env = Env::new();
    for mode in [
        &["packs", "--backend"][..],
        &["index", "--backend"],
        &["snapshots", "--forget"],
    ] {
        let name = mode[0];
        let (repo, src) = setup(&env, name);
        let repair = |wait: Option<&str>| {
            let mut c = env.cairn(&[&repo]);
            c.arg("repair").args(mode);
            if mode[1] == "--backend" {
                c.arg(&repo);
            }
            if let Some(w) = wait {
                c.args(["--retry-lock", w]);
            }
            c.output().unwrap()
        };
        let mut backup = slow_backup(&env, &repo, &src);
        wait_for_lock(&repo, &mut backup);

        let refused = repair(None);
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(11), "repair {name}: {err}");
        assert!(
            err.contains("locked") && err.contains("backup") && err.contains("--retry-lock"),
            "repair {name}: {err}"
        );

        let started = Instant::now();
        let waited = repair(Some("5m"));
        assert!(
            waited.status.success(),
            "repair {name} --retry-lock: {}",
            String::from_utf8_lossy(&waited.stderr)
        );
        // It ran only once the backup was done.
        let status = backup.try_wait().unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "repair {name} finished before the backup ({:?})",
            started.elapsed()
        );
        assert_eq!(
            snapshot_count(&env, &repo),
            2,
            "repair {name} lost a snapshot"
        );
        assert_clean(&env, &repo);
        let target = env.path(&format!("{name}-restored"));
        env.cairn(&[&repo])
            .args(["restore", "latest", "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(&src, &restored(&target, &src));
    }
}

#[test]
fn a_killed_holders_lock_is_stale_and_unlock_removes_it() {
    let env = Env::new();
    let (repo, src) = setup(&env, "kill");
    let mut backup = slow_backup(&env, &repo, &src);
    wait_for_lock(&repo, &mut backup);
    backup.kill().unwrap(); // SIGKILL: no chance to remove the lock
    backup.wait().unwrap();
    assert_eq!(locks(&repo).len(), 1);

    // The holder is gone on this host, so its lock stops nobody.
    env.cairn(&[&repo])
        .args(["repair", "index", "--backend"])
        .arg(&repo)
        .assert()
        .success();
    let out = env.cairn(&[&repo]).arg("unlock").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("stale") && text.contains("1 lock(s) removed"),
        "{text}"
    );
    assert_clean(&env, &repo);
}

#[test]
fn unlock_keeps_live_locks_unless_told_to_remove_all() {
    let env = Env::new();
    let (repo, src) = setup(&env, "live");
    let mut backup = slow_backup(&env, &repo, &src);
    wait_for_lock(&repo, &mut backup);
    let out = env.cairn(&[&repo]).arg("unlock").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 lock(s) removed"));
    assert_eq!(locks(&repo).len(), 1);
    let out = env
        .cairn(&[&repo])
        .args(["unlock", "--remove-all", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let removed = &last_json(&out.stdout)["removed"];
    assert_eq!(removed.as_array().unwrap().len(), 1, "{removed}");
    assert_eq!(removed[0]["info"]["purpose"], "backup");
    assert!(locks(&repo).is_empty());
    assert!(backup.wait().unwrap().success());
}

#[test]
fn ctrl_c_during_a_backup_stops_it_cleanly() {
    let env = Env::new();
    let (repo, src) = setup(&env, "int");
    let mut backup = slow_backup(&env, &repo, &src);
    wait_for_lock(&repo, &mut backup);
    let pid = rustix::process::Pid::from_raw(backup.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = backup.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("SIGINT"), "{err}");
    // No snapshot of the interrupted run, no lock, nothing damaged.
    assert_eq!(snapshot_count(&env, &repo), 1);
    assert_clean(&env, &repo);
    // The next backup completes and reuses what the interrupted one stored.
    let (code, summary) = env.backup_json(&[&repo], &[src.as_os_str()]);
    assert_eq!(code, 0, "{summary}");
    let target = env.path("int-restored");
    env.cairn(&[&repo])
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&target, &src));
}
