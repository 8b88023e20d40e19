//! `cairn copy`: snapshots copied into a repository with its own keyring
//! restore identically, share no pack name or blob id with the source, are
//! not copied twice, and a wrong target (passphrase, the source itself, no
//! repository) is refused without writing to it.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

const TARGET_PASSWORD: &str = "a different passphrase for the copy";

/// `init` of a target repository with its own passphrase.
fn init_target(env: &Env, repos: &[&Path]) {
    env.cairn(repos)
        .env("CAIRN_PASSWORD", TARGET_PASSWORD)
        .args(["init", "--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
        .assert()
        .success();
}

/// `copy --json` from `source` to `to` (the target passphrase from
/// `CAIRN_TO_PASSWORD`): exit code, summary, stderr.
fn copy_json(env: &Env, source: &Path, to: &[&Path], extra: &[&str]) -> (i32, serde_json::Value) {
    let mut c = env.cairn(&[source]);
    c.env("CAIRN_TO_PASSWORD", TARGET_PASSWORD)
        .args(["--json", "copy"])
        .args(extra);
    for t in to {
        c.arg("--to").arg(t);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains(TARGET_PASSWORD) && !text.contains(PASSWORD),
        "copy shows a passphrase"
    );
    (out.status.code().unwrap_or(-1), last_json(&out.stdout))
}

/// `snapshots --json` of a repository opened with `pass`.
fn snapshots(env: &Env, repo: &Path, pass: &str) -> Vec<serde_json::Value> {
    let out = env
        .cairn(&[repo])
        .env("CAIRN_PASSWORD", pass)
        .args(["--json", "snapshots"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(&out.stdout).as_array().unwrap().clone()
}

/// Every blob id in the index files of a local repository.
fn blob_ids(env: &Env, repo: &Path, pass: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    for f in files_in(repo, "index") {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let out = env
            .cairn(&[repo])
            .env("CAIRN_PASSWORD", pass)
            .args(["cat", "index", &name])
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for p in v.as_array().unwrap() {
            for b in p["blobs"].as_array().unwrap() {
                ids.insert(b["id"].as_str().unwrap().to_string());
            }
        }
    }
    ids
}

fn names(paths: &[PathBuf]) -> BTreeSet<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Every file below `root` with its size: what "nothing was written" means.
fn listing(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len()));
            }
        }
    }
    out.sort();
    out
}

fn restore(env: &Env, repo: &Path, pass: &str, id: &str, target: &Path) {
    env.cairn(&[repo])
        .env("CAIRN_PASSWORD", pass)
        .args(["restore", id, "--target"])
        .arg(target)
        .assert()
        .success();
}

/// The copy operations in a repository's audit trail (every replica).
fn copy_entries(env: &Env, repo: &Path, pass: &str) -> Vec<String> {
    let out = env
        .cairn(&[repo])
        .env("CAIRN_PASSWORD", pass)
        .args(["--json", "key", "audit"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = last_json(&out.stdout);
    v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["entries"].as_array().unwrap().clone())
        .filter(|e| e["operation"] == "copy")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn copy_re_keys_snapshots_that_restore_identically() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 5 << 20);
    fs::write(src.join("docs/nested/second-big.bin"), noise(7, 9 << 20)).unwrap();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a]);
    let (code, sum) = env.backup_json(&[&a], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    fs::write(src.join("docs/readme.txt"), "changed between the backups\n").unwrap();
    fs::write(src.join("docs/nested/new.txt"), "a new file\n".repeat(1000)).unwrap();
    let (code, sum) = env.backup_json(&[&a], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    init_target(&env, &[&b]);

    // The older snapshot first, the target's passphrase from a file.
    let sa = snapshots(&env, &a, PASSWORD);
    let pf = env.path("to-pass");
    fs::write(&pf, format!("{TARGET_PASSWORD}\n")).unwrap();
    let out = env
        .cairn(&[&a])
        .args(["--json", "copy", "--to"])
        .arg(&b)
        .arg("--to-password-file")
        .arg(&pf)
        .arg(sa[0]["short_id"].as_str().unwrap())
        .output()
        .unwrap();
    let report = last_json(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let copied = report["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 1, "{report}");
    assert!(copied[0]["target"].is_string(), "{report}");
    assert!(
        copied[0]["bytes_read"].as_u64().unwrap() > 14 << 20,
        "{report}"
    );
    assert_eq!(report["replicas"][0]["snapshots"], 1, "{report}");

    // Then the rest: what the newer snapshot shares with its parent is
    // taken from the parent's copy, not read again.
    let (code, report) = copy_json(&env, &a, &[&b], &[]);
    assert_eq!(code, 0, "{report}");
    let copied = report["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 1, "{report}");
    assert_eq!(copied[0]["source"], sa[1]["id"]);
    assert!(
        copied[0]["bytes_read"].as_u64().unwrap() < 100_000,
        "{report}"
    );
    assert_eq!(report["skipped"].as_array().unwrap().len(), 1, "{report}");

    // Same snapshots, each naming its original; parents follow.
    let sb = snapshots(&env, &b, TARGET_PASSWORD);
    assert_eq!(sb.len(), 2);
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!(y["original"], x["id"]);
        for field in ["time", "host", "username", "paths", "tags", "summary"] {
            assert_eq!(x[field], y[field], "{field}");
        }
        assert_ne!(x["tree"], y["tree"]);
    }
    assert!(sb[0].get("parent").is_none());
    assert_eq!(sb[1]["parent"], sb[0]["id"]);

    // Every copy restores exactly as its original does.
    for (i, (x, y)) in sa.iter().zip(&sb).enumerate() {
        let (ra, rb) = (env.path(&format!("ra{i}")), env.path(&format!("rb{i}")));
        restore(&env, &a, PASSWORD, x["id"].as_str().unwrap(), &ra);
        restore(&env, &b, TARGET_PASSWORD, y["id"].as_str().unwrap(), &rb);
        assert_same_tree(&restored(&ra, &src), &restored(&rb, &src));
    }
    assert_same_tree(&src, &restored(&env.path("rb1"), &src));

    // Nothing in common: other keys, other names and ids.
    let (pa, pb) = (names(&packs(&a)), names(&packs(&b)));
    assert!(!pb.is_empty());
    assert!(pa.is_disjoint(&pb), "pack names shared");
    let (ba, bb) = (
        blob_ids(&env, &a, PASSWORD),
        blob_ids(&env, &b, TARGET_PASSWORD),
    );
    assert!(bb.len() > 10);
    assert!(ba.is_disjoint(&bb), "blob ids shared");

    // A second run copies nothing and writes no data.
    let before: Vec<_> = ["data", "index", "snapshots"]
        .iter()
        .map(|d| listing(&b.join(d)))
        .collect();
    let (code, again) = copy_json(&env, &a, &[&b], &[]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2, "{again}");
    let after: Vec<_> = ["data", "index", "snapshots"]
        .iter()
        .map(|d| listing(&b.join(d)))
        .collect();
    assert_eq!(before, after);

    env.cairn(&[&b])
        .env("CAIRN_PASSWORD", TARGET_PASSWORD)
        .args(["check", "--read-data"])
        .assert()
        .success();

    // Both trails name the other repository; three runs, three entries.
    let config_id = |r: &Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(r.join("config")).unwrap()).unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    let (ea, eb) = (
        copy_entries(&env, &a, PASSWORD),
        copy_entries(&env, &b, TARGET_PASSWORD),
    );
    assert_eq!(ea.len(), 3, "{ea:?}");
    assert_eq!(eb.len(), 3, "{eb:?}");
    assert!(ea[0].contains(&config_id(&b)) && ea[0].contains("1 snapshots copied"));
    assert!(eb[2].contains(&config_id(&a)) && eb[2].contains("2 skipped"));

    // Re-encrypting the source gives its snapshots new ids; their copies
    // are still recognised.
    env.cairn(&[&a])
        .args(["key", "rotate", "--reencrypt"])
        .assert()
        .success();
    let renamed = snapshots(&env, &a, PASSWORD);
    assert_ne!(renamed[0]["id"], sa[0]["id"]);
    let (code, again) = copy_json(&env, &a, &[&b], &[]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2, "{again}");
}

#[test]
fn copy_selects_by_id_and_host_and_maps_no_missing_parent() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "one").unwrap();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a]);
    for (host, text) in [("h1", "one"), ("h2", "two"), ("h1", "three")] {
        fs::write(src.join("f"), text).unwrap();
        let host_arg = std::ffi::OsString::from(format!("--host={host}"));
        let (code, sum) = env.backup_json(&[&a], &[host_arg.as_os_str(), src.as_os_str()]);
        assert_eq!(code, 0, "{sum}");
        // The source's snapshots under two data-key epochs: copy reads both.
        if host == "h2" {
            env.cairn(&[&a]).args(["key", "rotate"]).assert().success();
        }
    }
    init_target(&env, &[&b]);
    let sa = snapshots(&env, &a, PASSWORD);
    // All three in one run: the third's parent (the first, same host) maps
    // to the first's copy.
    let c = env.path("c");
    init_target(&env, &[&c]);
    let (code, r) = copy_json(&env, &a, &[&c], &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["copied"].as_array().unwrap().len(), 3, "{r}");
    let sc = snapshots(&env, &c, TARGET_PASSWORD);
    assert_eq!(sa[2]["parent"], sa[0]["id"]);
    assert_eq!(sc[2]["parent"], sc[0]["id"]);
    assert!(sc[0].get("parent").is_none() && sc[1].get("parent").is_none());
    // Only the newest: its parent (the first h1 snapshot) is not in the
    // target, so the copy has none.
    let newest = sa[2]["short_id"].as_str().unwrap();
    let (code, r) = copy_json(&env, &a, &[&b], &[newest]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["copied"].as_array().unwrap().len(), 1);
    let sb = snapshots(&env, &b, TARGET_PASSWORD);
    assert_eq!(sb.len(), 1);
    assert_eq!(sb[0]["original"], sa[2]["id"]);
    assert!(sa[2]["parent"].is_string());
    assert!(sb[0].get("parent").is_none());
    // By host: the other h1 snapshot only.
    let (code, r) = copy_json(&env, &a, &[&b], &["--host", "h1"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["copied"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["copied"][0]["source"], sa[0]["id"]);
    assert_eq!(r["skipped"].as_array().unwrap().len(), 1, "{r}");
    let originals: BTreeSet<String> = snapshots(&env, &b, TARGET_PASSWORD)
        .iter()
        .map(|s| s["original"].as_str().unwrap().to_string())
        .collect();
    assert!(!originals.contains(sa[1]["id"].as_str().unwrap()));
    assert_eq!(originals.len(), 2);
}

#[test]
fn copy_refuses_a_wrong_passphrase_the_source_itself_and_no_repository() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a]);
    let (code, sum) = env.backup_json(&[&a], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    init_target(&env, &[&b]);
    let (before_a, before_b) = (listing(&a), listing(&b));

    let out = env
        .cairn(&[&a])
        .env("CAIRN_TO_PASSWORD", "not the target's passphrase")
        .arg("copy")
        .arg("--to")
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("not the target's"), "{stderr}");
    assert_eq!(listing(&b), before_b, "the target was written to");
    assert_eq!(listing(&a), before_a, "the source was written to");

    // The source as its own target (even named another way).
    let out = env
        .cairn(&[&a])
        .env("CAIRN_TO_PASSWORD", PASSWORD)
        .arg("copy")
        .arg("--to")
        .arg(a.join("."))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("source repository itself"), "{stderr}");
    assert_eq!(listing(&a), before_a);

    // No repository at the target: refused before any passphrase is asked.
    let empty = env.path("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = env
        .cairn(&[&a])
        .arg("copy")
        .arg("--to")
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("init"), "{stderr}");
    assert!(listing(&empty).is_empty());
}

/// From a local repository to one on the S3 server (skipped loudly
/// without it, see docs/test-servers.md).
#[test]
fn copy_from_local_to_s3() {
    let Some(base) =
        cairn::backends::conformance::server_from_env("CAIRN_TEST_REPO_S3", "CAIRN_TEST_REPO_S3")
    else {
        return;
    };
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 5 << 20);
    let a = env.path("a");
    env.init(&[&a]);
    let (code, sum) = env.backup_json(&[&a], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    let url = cairn::backends::conformance::fresh_location(&base, "copy");
    let s3 = Path::new(&url);
    init_target(&env, &[s3]);
    let (code, r) = copy_json(&env, &a, &[s3], &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["copied"].as_array().unwrap().len(), 1, "{r}");
    let rb = env.path("rb");
    restore(&env, s3, TARGET_PASSWORD, "latest", &rb);
    assert_same_tree(&src, &restored(&rb, &src));
    env.cairn(&[s3])
        .env("CAIRN_PASSWORD", TARGET_PASSWORD)
        .args(["check", "--read-data"])
        .assert()
        .success();
    let (code, r) = copy_json(&env, &a, &[s3], &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["skipped"].as_array().unwrap().len(), 1, "{r}");
}

/// A target replica that cannot be written misses the copies (exit 4),
/// the other gets them; `sync` brings the first up once it is repaired.
#[test]
fn an_unwritable_target_replica_fails_alone() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    let a = env.path("a");
    env.init(&[&a]);
    for i in 0..2 {
        if i == 1 {
            fs::write(src.join("docs/readme.txt"), "changed\n").unwrap();
        }
        let (code, sum) = env.backup_json(&[&a], &[src.as_os_str()]);
        assert_eq!(code, 0, "{sum}");
    }
    let (b1, b2) = (env.path("b1"), env.path("b2"));
    init_target(&env, &[&b1, &b2]);
    // Permissions do not stop root, so break the directory structure.
    fs::remove_dir_all(b2.join("data")).unwrap();
    fs::write(b2.join("data"), "not a directory").unwrap();
    let (code, r) = copy_json(&env, &a, &[&b1, &b2], &[]);
    assert_eq!(code, 4, "{r}");
    assert_eq!(r["outcome"]["status"], "partial", "{r}");
    assert_eq!(r["replicas"][0]["error"], serde_json::Value::Null, "{r}");
    assert_eq!(r["replicas"][0]["snapshots"], 2, "{r}");
    assert!(r["replicas"][1]["error"].is_string(), "{r}");
    assert_eq!(r["replicas"][1]["snapshots"], 0, "{r}");
    assert_eq!(files_in(&b1, "snapshots").len(), 2);
    assert!(files_in(&b2, "snapshots").is_empty());
    assert!(files_in(&b2, "index").is_empty());

    fs::remove_file(b2.join("data")).unwrap();
    fs::create_dir(b2.join("data")).unwrap();
    let (code, r) = copy_json(&env, &a, &[&b1, &b2], &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["skipped"].as_array().unwrap().len(), 2, "{r}");
    env.cairn(&[&b1, &b2])
        .env("CAIRN_PASSWORD", TARGET_PASSWORD)
        .arg("sync")
        .assert()
        .success();
    env.cairn(&[&b2])
        .env("CAIRN_PASSWORD", TARGET_PASSWORD)
        .args(["check", "--read-data"])
        .assert()
        .success();
    let rb = env.path("rb");
    restore(&env, &b2, TARGET_PASSWORD, "latest", &rb);
    assert_same_tree(&src, &restored(&rb, &src));
}
