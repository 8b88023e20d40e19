//! `forget`: per-backend policies from cairn.toml reconciled across
//! replicas, explicit ids, and bad rules.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::common::*;

fn snapshot_names(repo: &Path) -> BTreeSet<String> {
    fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Ten daily backups at 03:00 UTC; `skip` days go to `a` only.
fn daily_history(env: &Env, a: &Path, b: &Path, src: &Path, skip: &[u32]) -> Vec<String> {
    let mut ids = Vec::new();
    for day in 1..=10u32 {
        fs::write(
            src.join("day"),
            format!("{day}\n").repeat(day as usize * 100),
        )
        .unwrap();
        let repos: Vec<&Path> = if skip.contains(&day) {
            vec![a]
        } else {
            vec![a, b]
        };
        let time = format!("2026-03-{day:02}T03:00:00Z");
        let (code, sum) =
            env.backup_json(&repos, &["--time".as_ref(), time.as_ref(), src.as_os_str()]);
        assert_eq!(code, 0, "{sum}");
        ids.push(sum["snapshot"].as_str().unwrap().to_string());
    }
    ids
}

fn config(env: &Env, text: &str) -> std::path::PathBuf {
    let p = env.path("cairn.toml");
    fs::write(&p, text).unwrap();
    p
}

/// Local keeps the 3 newest, the "offsite" one 4 dailies and 3 weeklies; offsite missed days 8 and 9. Each policy is judged over the
/// union, offsite receives the kept snapshots it lacks before anything is
/// removed, and each replica ends holding exactly what its policy keeps.
#[test]
fn per_backend_policies_are_reconciled_across_replicas() {
    let env = Env::new();
    let (a, b, src) = (env.path("local"), env.path("offsite"), env.path("src"));
    fs::create_dir_all(&src).unwrap();
    env.init(&[&a, &b]);
    let ids = daily_history(&env, &a, &b, &src, &[8, 9]);
    let cfg = config(
        &env,
        &format!(
            r#"
[retention]
keep_last = 3

[backends.local]
url = "{}"

[backends.offsite]
url = "{}"
[backends.offsite.retention]
keep_daily = 4
keep_weekly = 3
"#,
            a.display(),
            b.display()
        ),
    );
    // The plan first: nothing changes.
    let before = (snapshot_names(&a), snapshot_names(&b));
    let out = env
        .cairn_with_config(&cfg)
        .args(["forget", "--dry-run", "--json", "--timezone", "UTC"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = last_json(&out.stdout);
    assert_eq!(before, (snapshot_names(&a), snapshot_names(&b)));
    let verdict = |id: &str, replica: &str| -> serde_json::Value {
        plan["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["replica"] == replica)
            .unwrap()
            .clone()
    };
    // Day 9: kept by both; offsite lacks it, so it is copied there.
    assert_eq!(verdict(&ids[8], "offsite")["action"], "copy");
    assert_eq!(
        verdict(&ids[8], "local")["reasons"],
        serde_json::json!(["last 2"])
    );
    // Day 7 (a Saturday): daily 4 offsite; local forgets it.
    assert_eq!(
        verdict(&ids[6], "offsite")["reasons"],
        serde_json::json!(["daily 4"])
    );
    assert_eq!(verdict(&ids[6], "local")["action"], "forget");
    // Day 8 (a Sunday) is the newest of ISO week 10, day 1 (also a
    // Sunday) the only one of week 9.
    assert_eq!(
        verdict(&ids[7], "offsite")["reasons"],
        serde_json::json!(["daily 3", "weekly 2"])
    );
    assert_eq!(
        verdict(&ids[0], "offsite")["reasons"],
        serde_json::json!(["weekly 3"])
    );

    // status shows each replica's verdict and reasons.
    let out = env
        .cairn_with_config(&cfg)
        .args(["status", "--json", "--timezone", "UTC"])
        .output()
        .unwrap();
    let st = last_json(&out.stdout);
    let first = st["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == ids[0].as_str())
        .unwrap();
    assert_eq!(first["replicas"][0]["keep"], false, "{first}");
    assert_eq!(
        first["replicas"][1]["reasons"],
        serde_json::json!(["weekly 3"])
    );
    let out = env
        .cairn_with_config(&cfg)
        .args(["status", "--timezone", "UTC"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("retention: A forget; B weekly 3"));

    let out = env
        .cairn_with_config(&cfg)
        .args(["forget", "--timezone", "UTC"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want_a: BTreeSet<String> = ids[7..].iter().cloned().collect();
    let want_b: BTreeSet<String> = [0, 6, 7, 8, 9].iter().map(|&i| ids[i].clone()).collect();
    assert_eq!(snapshot_names(&a), want_a, "{text}");
    assert_eq!(snapshot_names(&b), want_b, "{text}");
    // Both replicas are whole, and a copied snapshot restores from offsite.
    env.cairn(&[&a, &b]).args(["check"]).assert().success();
    let target = env.path("restored");
    env.cairn(&[&b])
        .args(["restore", &ids[7], "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(restored(&target, &src).join("day")).unwrap(),
        "8\n".repeat(800)
    );
    // Run again: nothing left to do.
    let out = env
        .cairn_with_config(&cfg)
        .args(["forget", "--json", "--timezone", "UTC"])
        .output()
        .unwrap();
    let v = last_json(&out.stdout);
    for r in v["replicas"].as_array().unwrap() {
        assert_eq!(r["forgotten"], 0, "{v}");
        assert_eq!(r["copied"], 0, "{v}");
    }
}

/// A replica that cannot be reached and whose policy keeps a snapshot
/// blocks its removal everywhere: deferred, named, exit 4.
#[test]
fn an_unreachable_replica_defers_what_it_keeps() {
    let env = Env::new();
    let (a, b, src) = (env.path("a"), env.path("b"), env.path("src"));
    fs::create_dir_all(&src).unwrap();
    env.init(&[&a, &b]);
    let ids = daily_history(&env, &a, &b, &src, &[]);
    // b goes away (an unmounted disk).
    let gone = env.path("b-unmounted");
    fs::rename(&b, &gone).unwrap();
    let cfg = config(
        &env,
        &format!(
            r#"
[backends.a]
url = "{}"
[backends.a.retention]
keep_last = 2

[backends.b]
url = "{}"
[backends.b.retention]
keep_last = 5
"#,
            a.display(),
            b.display()
        ),
    );
    let out = env
        .cairn_with_config(&cfg)
        .args(["forget", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_json(&out.stdout);
    assert_eq!(
        v["outcome"]["replicas"],
        serde_json::json!(["a", "b"]),
        "{v}"
    );
    // Days 6..8 are kept by b's policy: deferred on a, waiting for b.
    let held = snapshot_names(&a);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(held.contains(id), i >= 5, "day {}", i + 1);
    }
    let deferred: Vec<&serde_json::Value> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["replicas"][0]["action"] == "deferred")
        .collect();
    assert_eq!(deferred.len(), 3, "{v}");
    assert_eq!(
        deferred[0]["replicas"][0]["waiting_for"],
        serde_json::json!(["b"])
    );
}

#[test]
fn explicit_ids_and_bad_rules() {
    let env = Env::new();
    let (a, src) = (env.path("a"), env.path("src"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    env.init(&[&a]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (code, sum) = env.backup_json(&[&a], &[src.as_os_str()]);
        assert_eq!(code, 0);
        ids.push(sum["snapshot"].as_str().unwrap().to_string());
    }
    env.cairn(&[&a])
        .args(["forget", &ids[1][..8]])
        .assert()
        .success();
    assert_eq!(
        snapshot_names(&a),
        [ids[0].clone(), ids[2].clone()].into_iter().collect()
    );
    for (args, needle) in [
        (vec!["forget", "--keep-daily=-1"], "--keep-daily"),
        (vec!["forget", "--keep-within", "3x"], "--keep-within"),
        (
            vec!["forget", "--max-total-size", "lots"],
            "--max-total-size",
        ),
        (
            vec!["forget", "--keep-last", "2", "--timezone", "Mars/Olympus"],
            "--timezone",
        ),
        (vec!["forget"], "no retention policy"),
        (vec!["forget", "--keep-last", "0"], "keeps nothing"),
    ] {
        let out = env.cairn(&[&a]).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A misspelt or negative rule in cairn.toml is a usage error naming it.
    for (text, needle) in [
        ("keep_dayly = 3", "keep_dayly"),
        ("keep_daily = -3", "keep_daily"),
        ("keep_within = \"soon\"", "soon"),
    ] {
        let cfg = config(
            &env,
            &format!(
                "[retention]\n{text}\n[backends.a]\nurl = \"{}\"\n",
                a.display()
            ),
        );
        let out = env.cairn_with_config(&cfg).arg("forget").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(needle), "{text}: {err}");
    }
    assert_eq!(snapshot_names(&a).len(), 2);
}
