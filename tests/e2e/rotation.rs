//! `cairn key rotate`, `key reencrypt` and `key retire` across replicas:
//! every object ends under the new epoch on every replica, snapshots
//! restore as before, `retire` is refused while an object of the epoch is
//! left, a replica that missed the rotation catches up, backups run
//! during re-encryption, and the audit trail shows each step.

use std::fs;
use std::path::Path;
use std::process::Stdio;

use crate::common::*;

fn json_of(env: &Env, repos: &[&Path], args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = env.cairn(repos).arg("--json").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let code = out.status.code().unwrap_or(-1);
    let v = if out.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        last_json(&out.stdout)
    };
    (code, v, err)
}

/// Epochs with objects, per replica, from `key status --json`.
fn epochs(env: &Env, repos: &[&Path]) -> Vec<Vec<u64>> {
    let (code, st, err) = json_of(env, repos, &["key", "status"]);
    assert_eq!(code, 0, "{err}");
    st["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["epochs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["epoch"].as_u64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn rotate_reencrypt_and_retire_on_every_replica() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    let both = [a.as_path(), b.as_path()];
    env.init(&both);
    let v1 = env.path("v1");
    make_tree(&v1, 2 << 20);
    let (code, first) = env.backup_json(&both, &[v1.as_os_str()]);
    assert_eq!(code, 0, "{first}");

    // A wrong passphrase: exit 12, nothing written.
    let before = files_in(&a, "keyring");
    let out = env
        .cairn(&both)
        .env("CAIRN_PASSWORD", "wrong")
        .args(["key", "rotate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert_eq!(files_in(&a, "keyring"), before);

    let (code, rot, err) = json_of(&env, &both, &["key", "rotate"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rot["rotate"]["epoch"], 2, "{rot}");
    assert_eq!(rot["rotate"]["previous_epoch"], 1, "{rot}");
    fs::write(v1.join("after-rotation"), noise(3, 400 << 10)).unwrap();
    let (code, second) = env.backup_json(&both, &[v1.as_os_str()]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(epochs(&env, &both), vec![vec![1, 2], vec![1, 2]]);

    // Retiring epoch 1 now is refused, naming each replica and its counts.
    let out = env
        .cairn(&both)
        .args(["key", "retire", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("still encrypts objects"), "{err}");
    for name in [&a, &b] {
        assert!(err.contains(&format!("{}: ", name.display())), "{err}");
    }
    assert!(err.contains("packs"), "{err}");

    let (code, re, err) = json_of(&env, &both, &["key", "reencrypt"]);
    assert_eq!(code, 0, "{err}");
    let re = &re["reencrypt"];
    assert_eq!(re["complete"], true, "{re}");
    assert!(re["bytes_read"].as_u64().unwrap() > 2 << 20, "{re}");
    assert!(re["mb_per_second"].as_f64().unwrap() > 0.0, "{re}");
    assert_eq!(epochs(&env, &both), vec![vec![2], vec![2]]);
    assert!(err.contains("reencrypt: ") || err.is_empty(), "{err}");
    let mut names_a = files_in(&a, "data");
    let mut names_b = files_in(&b, "data");
    names_a.iter_mut().chain(names_b.iter_mut()).for_each(|p| {
        *p = p.file_name().unwrap().into();
    });
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "the same new packs on both replicas");

    // Both snapshots restore as before, from each replica alone.
    for r in both {
        env.cairn(&[r])
            .args(["check", "--read-data"])
            .assert()
            .success();
        let target = env.path(&format!(
            "restore-{}",
            r.file_name().unwrap().to_string_lossy()
        ));
        env.cairn(&[r])
            .args(["restore", "latest", "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(&v1, &restored(&target, &v1));
    }

    env.cairn(&both)
        .args(["key", "retire", "1"])
        .assert()
        .success();
    let (_, st, _) = json_of(&env, &both, &["key", "status"]);
    assert_eq!(st["epochs"], serde_json::json!([2]), "{st}");
    // Retiring it again: it is gone.
    let out = env
        .cairn(&both)
        .args(["key", "retire", "1"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));

    let (code, audit, err) = json_of(&env, &both, &["key", "audit"]);
    assert_eq!(code, 0, "{err}");
    assert_audit_steps(
        &audit,
        &[
            "key rotate epoch 2",
            "key reencrypt start",
            "key reencrypt progress",
            "key reencrypt finish",
            "key retire epoch 1",
        ],
    );
}

/// A replica that cannot be reached during `key rotate` is named (exit
/// 4); when it is back, `key reencrypt` brings it the new keyring and
/// re-encrypts it too.
#[test]
fn a_replica_unreachable_during_rotation_catches_up() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    let both = [a.as_path(), b.as_path()];
    env.init(&both);
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    assert_eq!(env.backup_json(&both, &[src.as_os_str()]).0, 0);
    let away = env.path("b-away");
    fs::rename(&b, &away).unwrap();
    let out = env.cairn(&both).args(["key", "rotate"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains(&format!("NOT ON {}", b.display())),
        "{stdout}"
    );
    fs::rename(&away, &b).unwrap();
    let (code, re, err) = json_of(&env, &both, &["key", "reencrypt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(re["reencrypt"]["complete"], true, "{re}");
    assert_eq!(epochs(&env, &both), vec![vec![2], vec![2]]);
    assert_eq!(files_in(&a, "keyring"), {
        let mut v = files_in(&b, "keyring");
        for p in &mut v {
            *p = a.join("keyring").join(p.file_name().unwrap());
        }
        v
    });
    for r in both {
        env.cairn(&[r])
            .args(["check", "--read-data"])
            .assert()
            .success();
    }
}

/// Backups keep running while `key reencrypt` copies packs; everything
/// ends under the new epoch and every snapshot restores.
#[test]
fn backups_run_during_reencryption() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    let both = [a.as_path(), b.as_path()];
    env.cairn(&both)
        .args(["init", "--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
        .args(["--pack-size-mib", "1"])
        .assert()
        .success();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..8u64 {
        fs::write(src.join(format!("f{i}")), noise(100 + i, 800 << 10)).unwrap();
    }
    assert_eq!(env.backup_json(&both, &[src.as_os_str()]).0, 0);
    env.cairn(&both).args(["key", "rotate"]).assert().success();
    let mut c = env.cairn(&both);
    c.args(["key", "reencrypt", "--batch", "1"]);
    let child = std_command(&c)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for i in 0..3u64 {
        fs::write(src.join(format!("new{i}")), noise(500 + i, 300 << 10)).unwrap();
        // The swap phase holds the exclusive lock for a moment: a backup
        // scheduled then waits for it.
        let (code, sum) = env.backup_json(
            &both,
            &["--retry-lock".as_ref(), "2m".as_ref(), src.as_os_str()],
        );
        assert_eq!(code, 0, "{sum}");
    }
    let out = child.wait_with_output().unwrap();
    // The swap phase needs the exclusive lock: it ran, or it says to run
    // again (a backup held the lock).
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(3),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, re, err) = json_of(&env, &both, &["key", "reencrypt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(re["reencrypt"]["complete"], true, "{re}");
    assert_eq!(epochs(&env, &both), vec![vec![2], vec![2]]);
    for r in both {
        env.cairn(&[r])
            .args(["check", "--read-data"])
            .assert()
            .success();
    }
    let target = env.path("restore");
    env.cairn(&both)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&target, &src));
}

/// A replica that missed a key operation shows in `status` (exit 4) until
/// `sync` brings it the newest keyring generation.
#[test]
fn status_shows_a_lagging_keyring_and_sync_brings_it() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    let both = [a.as_path(), b.as_path()];
    env.init(&both);
    let away = env.path("b-away");
    fs::rename(&b, &away).unwrap();
    env.cairn(&[&a]).args(["key", "rotate"]).assert().success();
    fs::rename(&away, &b).unwrap();
    let (code, st, err) = json_of(&env, &both, &["status"]);
    assert_eq!(code, 4, "{st}{err}");
    assert_eq!(st["replicas"][1]["keyring_behind"], true, "{st}");
    assert_eq!(st["replicas"][0]["keyring_behind"], false, "{st}");
    let (code, sync, err) = json_of(&env, &both, &["sync"]);
    assert_eq!(code, 0, "{sync}{err}");
    let (code, st, err) = json_of(&env, &both, &["status"]);
    assert_eq!(code, 0, "{st}{err}");
    assert_eq!(st["replicas"][1]["keyring_generation"], 2, "{st}");
}
