//! `restore --in-place`: a safety snapshot, only what differs rewritten,
//! and an automatic rollback on a read error, a full disk or SIGTERM; a
//! SIGKILL leaves the directory restorable from the `pre-restore`
//! snapshot (docs/restore.md).

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

const ROLLED_BACK: i32 = 7;

fn init_small_packs(env: &Env, repo: &Path) {
    env.cairn(&[repo])
        .args(["init", "--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
        .args(["--pack-size-mib", "1"])
        .assert()
        .success();
}

/// A directory with a file to change, one to keep as it is, a big one to
/// delete, and a symlink.
fn fill(dir: &Path, big: usize) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("a.txt"), "the snapshot's version\n").unwrap();
    fs::write(dir.join("sub/keep.txt"), "never changes\n").unwrap();
    fs::write(dir.join("sub/big.bin"), noise(7, big)).unwrap();
    std::os::unix::fs::symlink("a.txt", dir.join("link")).unwrap();
}

/// Change, add and delete files, as a user would after the snapshot.
fn modify(dir: &Path) {
    fs::write(dir.join("a.txt"), noise(99, 30_000)).unwrap();
    fs::write(dir.join("new.txt"), "added after the snapshot\n").unwrap();
    fs::remove_file(dir.join("sub/big.bin")).unwrap();
}

fn backup(env: &Env, repo: &Path, dir: &Path) -> String {
    let (code, v) = env.backup_json(&[repo], &[dir.as_os_str()]);
    assert_eq!(code, 0, "{v}");
    v["snapshot"].as_str().unwrap().to_string()
}

fn run(c: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn in_place(
    env: &Env,
    repo: &Path,
    snap: &str,
    dir: &Path,
    args: &[&str],
) -> (i32, String, String) {
    run(env
        .cairn(&[repo])
        .args(["restore", snap, "--in-place"])
        .arg(dir)
        .args(args))
}

/// A repository (`env.init`) and a directory made by [`fill`] with a big
/// file of `big` bytes, backed up: (repository, directory, snapshot id).
fn fixture(env: &Env, big: usize) -> (PathBuf, PathBuf, String) {
    let repo = env.path("repo");
    let dir = env.path("data");
    env.init(&[&repo]);
    fill(&dir, big);
    let snap = backup(env, &repo, &dir);
    (repo, dir, snap)
}

fn snapshot_count(repo: &Path) -> usize {
    files_in(repo, "snapshots").len()
}

#[test]
fn in_place_restore_rewrites_only_what_differs_and_deletes_only_when_asked() {
    let env = Env::new();
    let (repo, dir, snap) = fixture(&env, 300_000);
    let want = snapshot_of(&dir);
    let keep = fs::metadata(dir.join("sub/keep.txt")).unwrap();
    modify(&dir);
    let before = snapshot_count(&repo);

    let (code, out, err) = in_place(&env, &repo, &snap, &dir, &["--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report = &last_json(out.as_bytes())["in_place"];
    assert_eq!(report["outcome"], "restored", "{report}");
    assert_eq!(report["counts"]["create"], 1, "{report}");
    // a.txt, and sub (its mtime changed when big.bin went).
    assert_eq!(report["counts"]["update"], 2, "{report}");
    assert_eq!(report["counts"]["keep"], 1, "{report}");
    // With --json every entry is listed, each counted once.
    let listed = report["changes"].as_array().unwrap().len() as u64;
    let counted: u64 = report["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(listed, counted, "{report}");
    assert!(report["safety_snapshot"].is_string());
    assert_eq!(
        snapshot_count(&repo),
        before + 1,
        "one pre-restore snapshot"
    );
    // Without --delete the added file stays, everything else is restored.
    assert_eq!(
        fs::read(dir.join("new.txt")).unwrap(),
        b"added after the snapshot\n"
    );
    let mut now = snapshot_of(&dir);
    now.retain(|(p, _)| p != Path::new("new.txt"));
    assert_eq!(now, want);
    // The unchanged file was not rewritten.
    let kept = fs::metadata(dir.join("sub/keep.txt")).unwrap();
    assert_eq!(
        (kept.ino(), kept.ctime(), kept.ctime_nsec()),
        (keep.ino(), keep.ctime(), keep.ctime_nsec())
    );

    let (code, out, err) = in_place(&env, &repo, &snap, &dir, &["--delete"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 deleted"), "{out}");
    assert!(!dir.join("new.txt").exists());
    assert_eq!(snapshot_of(&dir), want);

    // The safety snapshot is tagged and puts the directory back.
    let (code, out, _) = run(env
        .cairn(&[&repo])
        .args(["snapshots", "--tag", "pre-restore"]));
    assert_eq!(code, 0);
    assert!(
        out.lines().filter(|l| l.contains("pre-restore")).count() >= 2,
        "{out}"
    );
}

/// The safety snapshot is the newest one after an in-place restore, yet
/// `latest` goes on meaning the newest real backup: running the same
/// `restore latest --in-place` again must not undo the first.
#[test]
fn latest_never_means_a_safety_snapshot() {
    let env = Env::new();
    let (repo, dir, snap) = fixture(&env, 1000);
    let want = snapshot_of(&dir);
    modify(&dir);
    for _ in 0..2 {
        let (code, out, err) = in_place(&env, &repo, "latest", &dir, &["--delete", "--json"]);
        assert_eq!(code, 0, "{out}{err}");
        let report = &last_json(out.as_bytes())["in_place"];
        assert!(
            report["snapshot"].as_str().unwrap().starts_with(&snap),
            "{report}"
        );
        assert_eq!(snapshot_of(&dir), want);
    }
    let (code, out, _) = run(env
        .cairn(&[&repo])
        .args(["snapshots", "--tag", "pre-restore"]));
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.contains("pre-restore")).count(),
        2,
        "{out}"
    );

    // Retention judges the safety snapshots apart: the day's newest
    // snapshot is one of them, yet the backup stays.
    let (code, out, err) =
        run(env
            .cairn(&[&repo])
            .args(["forget", "--keep-daily", "1", "--dry-run"]));
    assert_eq!(code, 0, "{out}{err}");
    let line = |id: &str| out.lines().find(|l| l.contains(id)).unwrap_or_default();
    assert!(line(&snap[..8]).trim_start().starts_with("keep"), "{out}");
    let safety: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("(pre-restore safety snapshot)"))
        .collect();
    assert_eq!(safety.len(), 2, "{out}");
    let kept = safety.iter().filter(|l| l.trim_start().starts_with("keep"));
    assert_eq!(kept.count(), 1, "{out}");

    // With only safety snapshots left, `latest` says what to do instead.
    env.cairn(&[&repo])
        .args(["forget", &snap])
        .assert()
        .success();
    let (code, _, err) = run(env
        .cairn(&[&repo])
        .args(["restore", "latest", "--target"])
        .arg(env.path("out")));
    assert_ne!(code, 0);
    assert!(err.contains("only `pre-restore` safety snapshots"), "{err}");
    assert!(err.contains("by its id"), "{err}");
}

#[test]
fn dry_run_lists_the_changes_and_changes_nothing() {
    let env = Env::new();
    let (repo, dir, snap) = fixture(&env, 100_000);
    modify(&dir);
    let was = snapshot_of(&dir);
    let before = snapshot_count(&repo);
    let (code, out, err) = in_place(&env, &repo, &snap, &dir, &["--dry-run", "--delete"]);
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "update file a.txt",
        "create file sub/big.bin",
        "delete file new.txt",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(
        !out.contains("keep.txt"),
        "unchanged files are not listed: {out}"
    );
    let (code, out, _) = in_place(&env, &repo, &snap, &dir, &["--dry-run", "--json"]);
    assert_eq!(code, 0);
    let report = &last_json(out.as_bytes())["in_place"];
    assert_eq!(report["outcome"], "dry_run");
    assert_eq!(report["counts"]["keep"], 1, "{report}");
    assert_eq!(report["counts"]["create"], 1, "{report}");
    assert!(report["safety_snapshot"].is_null());
    assert_eq!(snapshot_of(&dir), was);
    assert_eq!(snapshot_count(&repo), before, "no safety snapshot");
}

#[test]
fn a_read_error_during_the_restore_rolls_back() {
    let env = Env::new();
    let (repo, dir, snap) = slow_fixture(&env);
    let was = snapshot_of(&dir);
    // The big file's data (the largest packs) damaged on the only replica.
    let mut ps = packs(&repo);
    ps.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    flip_byte(&ps[0], 5000);
    let (code, out, err) = in_place(&env, &repo, &snap, &dir, &["--delete", "--json"]);
    assert_eq!(code, ROLLED_BACK, "{out}{err}");
    let report = &last_json(out.as_bytes())["in_place"];
    assert_eq!(report["outcome"], "rolled_back", "{report}");
    assert!(
        report["failure"].as_str().unwrap().contains("big.bin"),
        "{report}"
    );
    assert_eq!(snapshot_of(&dir), was, "the directory is as it was");
    let (code, _, err) = in_place(&env, &repo, &snap, &dir, &[]);
    assert_eq!(code, ROLLED_BACK);
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(snapshot_of(&dir), was);
}

/// Files are made durable and renamed into place a batch at a time (1024
/// files per file-system sync): a restore of more files than that replaces
/// every one of them, and a failure in the last batch rolls back the files
/// the earlier batches already replaced.
#[test]
fn many_files_are_replaced_batch_by_batch_and_rolled_back_across_batches() {
    let env = Env::new();
    let repo = env.path("repo");
    let dir = env.path("data");
    init_small_packs(&env, &repo);
    let n = 2600;
    for i in 0..n {
        let sub = dir.join(format!("d{}", i % 7));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(format!("f{i:05}")), format!("snapshot {i}\n")).unwrap();
    }
    // Sorts last, so it is read in the last batch; the largest packs.
    fs::write(dir.join("zz-big.bin"), noise(5, 3 << 20)).unwrap();
    let snap = backup(&env, &repo, &dir);
    let want = snapshot_of(&dir);
    let rewrite = |tag: &str| {
        for i in 0..n {
            let f = dir.join(format!("d{}/f{i:05}", i % 7));
            fs::write(f, format!("{tag} {i} after the snapshot\n")).unwrap();
        }
        fs::write(dir.join("zz-big.bin"), tag).unwrap();
    };

    rewrite("changed");
    let (code, out, err) = in_place(&env, &repo, &snap, &dir, &["--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report = &last_json(out.as_bytes())["in_place"];
    assert_eq!(report["outcome"], "restored", "{report}");
    // Every file (rewriting a file leaves its directory's times alone).
    assert_eq!(report["counts"]["update"], n + 1, "{report}");
    assert_eq!(snapshot_of(&dir), want);
    let leftovers: Vec<_> = walk_names(&dir)
        .into_iter()
        .filter(|p| p.contains(".cairn-inplace-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    rewrite("again");
    let was = snapshot_of(&dir);
    let mut ps = packs(&repo);
    ps.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    flip_byte(&ps[0], 5000);
    let (code, out, err) = in_place(&env, &repo, &snap, &dir, &["--json"]);
    assert_eq!(code, ROLLED_BACK, "{out}{err}");
    let report = &last_json(out.as_bytes())["in_place"];
    assert_eq!(report["outcome"], "rolled_back", "{report}");
    assert!(
        report["failure"].as_str().unwrap().contains("zz-big.bin"),
        "{report}"
    );
    assert_eq!(snapshot_of(&dir), was, "every replaced file is put back");
}

/// Every path below `dir`, as text.
fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_names(&p));
        }
        out.push(p.display().to_string());
    }
    out
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// None (after saying why) when mounting is not allowed here; under
    /// CI=true that fails the test instead.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        if out.status.success() {
            return Some(Tmpfs(at.to_path_buf()));
        }
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs: {why}"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here: {why}");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_during_the_restore_rolls_back_byte_for_byte() {
    let env = Env::new();
    let repo = env.path("repo");
    let dir = env.path("data");
    let Some(_mount) = Tmpfs::mount(&dir, "2m") else {
        return;
    };
    env.init(&[&repo]);
    fs::write(dir.join("a.txt"), "the snapshot's version\n").unwrap();
    fs::write(dir.join("big.bin"), noise(1, 1200 << 10)).unwrap();
    let snap = backup(&env, &repo, &dir);
    // Now the big file has other content of the same size: replacing it
    // needs room for both copies, which the 2 MiB disk does not have.
    fs::write(dir.join("a.txt"), "changed\n").unwrap();
    fs::write(dir.join("big.bin"), noise(2, 1200 << 10)).unwrap();
    fs::write(dir.join("added.txt"), "added\n").unwrap();
    let was = snapshot_of(&dir);
    let (code, out, err) = in_place(&env, &repo, &snap, &dir, &["--delete", "--json"]);
    assert_eq!(code, ROLLED_BACK, "{out}{err}");
    let report = &last_json(out.as_bytes())["in_place"];
    assert!(
        report["failure"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{report}"
    );
    assert_eq!(snapshot_of(&dir), was, "the directory is as it was");
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
}

/// Start an in-place restore slowed by a download limit; return the child
/// once it says it is restoring, with the safety snapshot's short id.
fn start_slow_restore(
    env: &Env,
    repo: &Path,
    snap: &str,
    dir: &Path,
) -> (std::process::Child, String) {
    let mut c = env.cairn(&[repo]);
    c.args(["--limit-download", "256", "restore", snap, "--in-place"])
        .arg(dir)
        .arg("--delete");
    let mut child = std_command(&c)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let needle = "(tag pre-restore); restoring";
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = err.read(&mut buf).unwrap();
        assert!(n > 0, "never started: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    let id = text
        .split("safety snapshot ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    // Keep draining stderr so the child never blocks on it.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut err, &mut std::io::sink());
    });
    (child, id)
}

/// Like [`fixture`] with 1 MiB packs and a 3 MiB big file (several packs
/// to read, one to damage), then [`modify`]d.
fn slow_fixture(env: &Env) -> (PathBuf, PathBuf, String) {
    let repo = env.path("repo");
    let dir = env.path("data");
    init_small_packs(env, &repo);
    fill(&dir, 3 << 20);
    let snap = backup(env, &repo, &dir);
    modify(&dir);
    (repo, dir, snap)
}

#[test]
fn sigterm_during_the_restore_rolls_back() {
    let env = Env::new();
    let (repo, dir, snap) = slow_fixture(&env);
    let was = snapshot_of(&dir);
    let (mut child, _) = start_slow_restore(&env, &repo, &snap, &dir);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(ROLLED_BACK), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(snapshot_of(&dir), was, "the directory is as it was");
}

#[test]
fn after_sigkill_the_pre_restore_snapshot_puts_the_directory_back() {
    let env = Env::new();
    let (repo, dir, snap) = slow_fixture(&env);
    let was = snapshot_of(&dir);
    let (mut child, safety) = start_slow_restore(&env, &repo, &snap, &dir);
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    // Killed mid-way: a staged file or a replaced one may be there.
    let (code, out, err) = in_place(&env, &repo, &safety, &dir, &["--delete"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(snapshot_of(&dir), was, "the directory is as it was");
}
