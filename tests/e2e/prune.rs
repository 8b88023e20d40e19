//! `prune`: two-phase deletion with a grace period, repacking that writes
//! the same packs to every replica (so fallback, repair and sync keep
//! working on replicas with different policies), a backup reusing a marked
//! pack, dry runs, and bad flags.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::common::*;

/// Names and sizes of a replica's packs.
fn pack_set(repo: &Path) -> BTreeSet<(String, u64)> {
    packs(repo)
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::metadata(&p).unwrap().len(),
            )
        })
        .collect()
}

fn small_files(dir: &Path, seed: u64, n: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        fs::write(
            dir.join(format!("f{i}")),
            noise(seed * 1000 + i as u64, 40 << 10),
        )
        .unwrap();
    }
}

fn prune_json(env: &Env, repos: &[&Path], args: &[&str]) -> (i32, serde_json::Value) {
    let out = env
        .cairn(repos)
        .args(["--json", "prune"])
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0,
        "prune {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, last_json(&out.stdout))
}

fn sum(doc: &serde_json::Value, field: &str) -> u64 {
    doc["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[field].as_u64().unwrap())
        .sum()
}

fn check_read_data(env: &Env, repos: &[&Path]) {
    let out = env
        .cairn(repos)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
    );
}

fn restore_latest(env: &Env, repos: &[&Path], src: &Path, name: &str) {
    let target = env.path(name);
    let out = env
        .cairn(repos)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_same_tree(src, &restored(&target, src));
}

#[test]
fn prune_marks_first_and_deletes_after_the_grace_period() {
    let env = Env::new();
    let (a, b, src) = (env.path("a"), env.path("b"), env.path("src"));
    env.init(&[&a, &b]);
    small_files(&src.join("keep"), 1, 12);
    small_files(&src.join("gone"), 2, 12);
    assert_eq!(env.backup_json(&[&a, &b], &[src.as_os_str()]).0, 0);
    fs::remove_dir_all(src.join("gone")).unwrap();
    assert_eq!(env.backup_json(&[&a, &b], &[src.as_os_str()]).0, 0);
    env.cairn(&[&a, &b])
        .args(["forget", "--keep-last", "1"])
        .assert()
        .success();
    let before = pack_set(&a);

    // A dry run changes nothing.
    let (_, plan) = prune_json(&env, &[&a, &b], &["--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert!(sum(&plan, "repacked") > 0, "{plan}");
    assert_eq!(pack_set(&a), before);
    assert!(!a.join("markers/prune").exists());

    // First prune: the half-used pack is repacked, the old packs marked,
    // nothing deleted; the new packs are the same on both replicas.
    let (_, first) = prune_json(&env, &[&a, &b], &[]);
    assert_eq!(sum(&first, "deleted"), 0, "{first}");
    assert!(sum(&first, "marked") >= 2, "{first}");
    assert!(sum(&first, "new_packs") >= 2, "{first}");
    assert!(before.is_subset(&pack_set(&a)));
    assert_eq!(pack_set(&a), pack_set(&b));
    check_read_data(&env, &[&a]);
    check_read_data(&env, &[&b]);

    // Within the grace period, a second prune still deletes nothing.
    let (_, second) = prune_json(&env, &[&a, &b], &[]);
    assert_eq!(sum(&second, "deleted"), 0, "{second}");

    // With no grace, the marked packs go.
    let (_, last) = prune_json(&env, &[&a, &b], &["--grace", "0"]);
    assert!(sum(&last, "deleted") >= 2, "{last}");
    assert!(sum(&last, "freed_bytes") > 12 * (40 << 10), "{last}");
    assert_eq!(pack_set(&a), pack_set(&b));
    let used: u64 = pack_set(&a).iter().map(|p| p.1).sum();
    assert!(used < 14 * (40 << 10) + (64 << 10), "{used} bytes left");
    check_read_data(&env, &[&a]);
    check_read_data(&env, &[&b]);
    restore_latest(&env, &[&a], &src, "ra");
    restore_latest(&env, &[&b], &src, "rb");
}

/// `a` keeps the newest snapshot, `b` the two newest: packs `b` still
/// needs stay there only, the shared pack is repacked once for both, and
/// afterwards a damaged pack on `a` is read from `b` and repaired from it.
#[test]
fn replicas_with_different_policies_share_repacked_packs() {
    let env = Env::new();
    let (a, b, src) = (env.path("a"), env.path("b"), env.path("src"));
    env.init(&[&a, &b]);
    small_files(&src.join("k"), 1, 10);
    for v in 1..=3u64 {
        let _ = fs::remove_dir_all(src.join("x"));
        small_files(&src.join("x"), 10 + v, 6);
        assert_eq!(env.backup_json(&[&a, &b], &[src.as_os_str()]).0, 0);
    }
    let cfg = env.path("cairn.toml");
    fs::write(
        &cfg,
        format!(
            "[backends.a]\nurl = \"{}\"\n[backends.a.retention]\nkeep_last = 1\n\n\
             [backends.b]\nurl = \"{}\"\n[backends.b.retention]\nkeep_last = 2\n",
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let out = env
        .cairn_with_config(&cfg)
        .args(["forget", "--prune", "--grace", "0", "--max-unused", "0"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(files_in(&a, "snapshots").len(), 1, "{text}");
    assert_eq!(files_in(&b, "snapshots").len(), 2, "{text}");
    let (pa, pb) = (pack_set(&a), pack_set(&b));
    assert!(pa.is_subset(&pb), "a: {pa:?}\nb: {pb:?}");
    assert!(pb.len() > pa.len(), "b keeps what only its policy needs");
    for (name, _) in &pa {
        let sub = &name[..2];
        assert_eq!(
            fs::read(a.join("data").join(sub).join(name)).unwrap(),
            fs::read(b.join("data").join(sub).join(name)).unwrap()
        );
    }
    check_read_data(&env, &[&a]);
    check_read_data(&env, &[&b]);

    // Cross-replica fallback and repair still work.
    let big = packs(&a)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    flip_byte(&big, 200);
    restore_latest(&env, &[&a, &b], &src, "r1");
    env.cairn(&[&a, &b])
        .args(["repair", "packs", "--backend"])
        .arg(&a)
        .arg("--read-data")
        .assert()
        .success();
    check_read_data(&env, &[&a]);
}

/// A backup that reuses data in a marked pack (after the forget that
/// released it) keeps that pack alive: the delete phase reads the
/// snapshots again and un-marks it.
#[test]
fn a_backup_reusing_a_marked_pack_keeps_it() {
    let env = Env::new();
    let (a, src) = (env.path("a"), env.path("src"));
    env.init(&[&a]);
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x"), noise(5, 300 << 10)).unwrap();
    let (_, first) = env.backup_json(&[&a], &[src.as_os_str()]);
    let first = first["snapshot"].as_str().unwrap().to_string();
    let x = fs::read(src.join("x")).unwrap();
    fs::remove_file(src.join("x")).unwrap();
    fs::write(src.join("y"), noise(6, 300 << 10)).unwrap();
    assert_eq!(env.backup_json(&[&a], &[src.as_os_str()]).0, 0);
    env.cairn(&[&a]).args(["forget", &first]).assert().success();
    let (_, marked) = prune_json(&env, &[&a], &["--max-unused", "100%"]);
    assert!(sum(&marked, "marked") >= 1, "{marked}");

    // x comes back: the backup deduplicates against the marked pack.
    fs::write(src.join("x"), &x).unwrap();
    let (_, sum3) = env.backup_json(&[&a], &[src.as_os_str()]);
    let new = sum3["summary"]["bytes_new"].as_u64().unwrap();
    assert!(new < (100 << 10), "x was deduplicated: {sum3}");
    let (_, last) = prune_json(&env, &[&a], &["--grace", "0", "--max-unused", "100%"]);
    assert!(sum(&last, "deleted") >= 1, "old trees go: {last}");
    check_read_data(&env, &[&a]);
    restore_latest(&env, &[&a], &src, "r");
}

#[test]
fn bad_prune_flags_are_usage_errors() {
    let env = Env::new();
    let a = env.path("a");
    env.init(&[&a]);
    for (flag, value) in [
        ("--grace", "soon"),
        ("--grace", "-1h"),
        ("--max-unused", "150%"),
        ("--max-unused", "lots"),
        ("--max-repack", "-3G"),
    ] {
        let out = env
            .cairn(&[&a])
            .args(["prune", &format!("{flag}={value}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
}

/// Backups in a loop while `forget --prune --grace 1s` loops, for a
/// minute: every backup succeeds, both replicas check clean with every
/// byte read, and the latest snapshot restores identically.
#[test]
fn backups_and_prunes_run_together() {
    let env = Env::new();
    let (a, b, src) = (env.path("a"), env.path("b"), env.path("src"));
    env.init(&[&a, &b]);
    small_files(&src.join("base"), 1, 8);
    let stop = std::sync::atomic::AtomicBool::new(false);
    // The backup command's program, arguments and environment, to rebuild
    // it in the other thread (Env is not Sync).
    let template = env.cairn(&[&a, &b]);
    let program = template.get_program().to_os_string();
    let base_args: Vec<_> = template.get_args().map(|a| a.to_os_string()).collect();
    let vars: Vec<_> = template
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_os_string(), v?.to_os_string())))
        .collect();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (backups, prunes, deleted) = std::thread::scope(|s| {
        let backups = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let _ = fs::remove_dir_all(src.join("moving"));
                small_files(&src.join("moving"), 100 + n, 4);
                let out = std::process::Command::new(&program)
                    .env_clear()
                    .envs(vars.iter().map(|(k, v)| (k, v)))
                    .args(&base_args)
                    .args(["--retry-lock", "5m", "backup"])
                    .arg(&src)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "backup {n}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            n
        });
        let mut prunes = 0;
        let mut deleted = 0;
        let mut failure = None;
        while std::time::Instant::now() < until && failure.is_none() {
            let out = env
                .cairn(&[&a, &b])
                .args([
                    "--json",
                    "--retry-lock",
                    "5m",
                    "forget",
                    "--keep-last",
                    "2",
                    "--prune",
                    "--grace",
                    "1s",
                    "--max-unused",
                    "0",
                ])
                .output()
                .unwrap();
            if out.status.success() {
                prunes += 1;
                deleted += sum(&last_json(&out.stdout), "deleted");
            } else {
                failure = Some(
                    String::from_utf8_lossy(&out.stdout).into_owned()
                        + &String::from_utf8_lossy(&out.stderr),
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        // Set before anything can panic here: the scope waits for the
        // backup thread.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = failure {
            panic!("forget --prune failed: {f}");
        }
        (backups.join().unwrap(), prunes, deleted)
    });
    assert!(
        backups >= 3 && prunes >= 3,
        "{backups} backups, {prunes} prunes"
    );
    assert!(deleted > 0, "no prune deleted anything");
    check_read_data(&env, &[&a]);
    check_read_data(&env, &[&b]);
    restore_latest(&env, &[&a, &b], &src, "r");
}

/// A backup killed while it held its lock leaves the lock behind; its
/// process is gone, so the lock is stale and `prune --grace 0` (exclusive)
/// proceeds, collecting what the backup left.
#[test]
fn a_stale_lock_of_a_dead_backup_does_not_block_prune() {
    let env = Env::new();
    let (a, src) = (env.path("a"), env.path("src"));
    env.init(&[&a]);
    make_tree(&src, 24 << 20);
    let mut c = env.cairn(&[&a]);
    c.arg("backup").arg(&src);
    let mut child = std_command(&c)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while files_in(&a, "locks").is_empty() || packs(&a).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never locked"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        files_in(&a, "locks").len(),
        1,
        "the killed backup's lock stays"
    );
    let (_, report) = prune_json(&env, &[&a], &["--grace", "0"]);
    assert!(
        sum(&report, "deleted") >= 1,
        "the backup's packs go: {report}"
    );
    check_read_data(&env, &[&a]);
}

/// Prune does not hide damage: a pack one replica lost stays described by
/// its consolidated index, so `check` still names it and `repair packs`
/// still restores it from the other replica.
#[test]
fn prune_keeps_a_lost_pack_visible_to_check_and_repair() {
    let env = Env::new();
    let (a, b, src) = (env.path("a"), env.path("b"), env.path("src"));
    env.init(&[&a, &b]);
    small_files(&src.join("one"), 1, 6);
    assert_eq!(env.backup_json(&[&a, &b], &[src.as_os_str()]).0, 0);
    small_files(&src.join("two"), 2, 6);
    let (_, second) = env.backup_json(&[&a, &b], &[src.as_os_str()]);
    let lost = packs(&a)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    fs::remove_file(&lost).unwrap();
    // Something for prune to delete, so it consolidates the index.
    env.cairn(&[&a, &b])
        .args(["forget", "--keep-last", "1"])
        .assert()
        .success();
    let (_, report) = prune_json(&env, &[&a, &b], &["--grace", "0", "--max-unused", "0"]);
    assert!(sum(&report, "index_written") > 0, "{report}");
    let out = env.cairn(&[&a]).arg("check").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let name = lost.file_name().unwrap().to_string_lossy().into_owned();
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&name[..8]) && text.contains("missing"),
        "{text}"
    );
    env.cairn(&[&a, &b])
        .args(["repair", "packs", "--backend"])
        .arg(&a)
        .assert()
        .success();
    check_read_data(&env, &[&a]);
    assert!(second["snapshot"].is_string());
    restore_latest(&env, &[&a], &src, "r");
}
