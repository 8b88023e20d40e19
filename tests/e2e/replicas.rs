//! Replicas you can trust, on local repositories: `status`, `sync`
//! (seeding a new replica, resuming after kill -9), reads that fall back to
//! another replica, `check` per replica and across replicas, and `repair`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

fn json(env: &Env, repos: &[&Path], args: &[&str]) -> (i32, Value) {
    let out = env.cairn(repos).args(args).arg("--json").output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains('{') && !text.contains('[') {
        panic!(
            "{args:?}: exit {code}, no JSON; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (code, last_json(&out.stdout))
}

fn name(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `init` with small packs (so a few MiB make several) and a cheap KDF.
fn init_small(env: &Env, repos: &[&Path]) {
    env.cairn(repos)
        .args([
            "init",
            "--pack-size-mib",
            "1",
            "--kdf-memory-kib",
            "8192",
            "--kdf-iterations",
            "1",
        ])
        .assert()
        .success();
}

fn backup(env: &Env, repos: &[&Path], src: &Path) {
    let (code, sum) = env.backup_json(repos, &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
}

fn pack_names(repo: &Path) -> BTreeSet<PathBuf> {
    packs(repo)
        .into_iter()
        .map(|p| p.strip_prefix(repo).unwrap().to_path_buf())
        .collect()
}

/// Every snapshot of a `status --json` document is complete on every replica.
fn all_complete(st: &Value) -> bool {
    st["snapshots"].as_array().unwrap().iter().all(|s| {
        s["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "complete")
    })
}

#[test]
fn status_and_sync_bring_a_lagging_replica_and_a_new_one_up_to_date() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 2 << 20);
    let (a, b, c) = (env.path("a"), env.path("b"), env.path("c"));
    init_small(&env, &[&a, &b]);
    backup(&env, &[&a, &b], &src);
    std::fs::write(src.join("later.bin"), noise(5, 1 << 20)).unwrap();
    backup(&env, &[&a], &src);

    let (code, st) = json(&env, &[&a, &b], &["status"]);
    assert_eq!(code, 4, "a replica is behind: {st}");
    let snaps = st["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1]["replicas"][0]["state"], "complete");
    assert_eq!(snaps[1]["replicas"][1]["state"], "missing");
    assert_eq!(snaps[1]["replicas"][1]["name"], name(&b));
    assert_eq!(st["replicas"][1]["behind_snapshots"], 1);
    // The last write on a is the second backup, later than b's.
    let last = |i: usize| -> jiff::Timestamp {
        st["replicas"][i]["last_write"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(last(0) >= last(1), "{st}");
    assert!(st["replicas"][1]["behind_bytes"].as_u64().unwrap() > 1 << 20);

    // A dry run says what it would copy and copies nothing.
    let before = pack_names(&b);
    let (code, out) = json(&env, &[&a, &b], &["sync", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["replicas"][1]["snapshots"], 1);
    assert_eq!(pack_names(&b), before);

    let (code, out) = json(&env, &[&a, &b], &["sync"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["replicas"][0]["packs"], 0, "a lacks nothing: {out}");
    assert_eq!(out["replicas"][1]["snapshots"], 1);
    let (code, st) = json(&env, &[&a, &b], &["status"]);
    assert_eq!(code, 0, "{st}");
    assert!(all_complete(&st), "{st}");
    // Same packs on both, byte for byte.
    assert_eq!(pack_names(&a), pack_names(&b));
    // A second sync has nothing to do.
    let (_, out) = json(&env, &[&a, &b], &["sync"]);
    assert_eq!(out["replicas"][1]["packs"], 0, "{out}");

    // A new, empty location named with --to becomes a full replica.
    let (code, out) = json(&env, &[&a, &b, &c], &["sync", "--to", name(&c)]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["seeded"][0], name(&c));
    env.cairn(&[&a, &b, &c])
        .args(["check", "--read-data", "--all-backends"])
        .assert()
        .success();
    // It restores on its own.
    let target = env.path("restore");
    env.cairn(&[&c])
        .args(["restore", "latest", "--verify", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&target, &src));
    // The human table names every replica and every snapshot.
    let out = env.cairn(&[&a, &b, &c]).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for r in [&a, &b, &c] {
        assert!(text.contains(name(r)), "{text}");
    }
    assert!(text.contains("up to date"), "{text}");
}

#[test]
fn damage_on_two_replicas_is_found_restored_around_and_repaired() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big.bin"), noise(11, 8 << 20)).unwrap();
    std::fs::write(src.join("small.txt"), "hello\n".repeat(1000)).unwrap();
    let (a, b) = (env.path("a"), env.path("b"));
    init_small(&env, &[&a, &b]);
    backup(&env, &[&a, &b], &src);
    // Damage one pack on a and delete another one on b.
    let names: Vec<PathBuf> = pack_names(&a).into_iter().collect();
    assert!(names.len() >= 3, "{names:?}");
    let flipped = a.join(&names[0]);
    let deleted = b.join(&names[1]);
    let len = std::fs::metadata(&flipped).unwrap().len() as usize;
    flip_byte(&flipped, len / 3);
    std::fs::remove_file(&deleted).unwrap();
    let id = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();

    // check names both, each on its replica.
    let (code, out) = json(&env, &[&a, &b], &["check", "--read-data"]);
    assert_eq!(code, 5, "{out}");
    let errors = |i: usize| out["replicas"][i]["errors"].to_string();
    assert!(errors(0).contains(&id(&flipped)), "{out}");
    assert!(errors(1).contains(&id(&deleted)), "{out}");
    // The same findings, typed: problem, replica and object.
    let finding = |i: usize, problem: &str, object: &Path| {
        out["replicas"][i]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| {
                f["problem"] == problem
                    && f["severity"] == "error"
                    && f["replica"] == out["replicas"][i]["replica"]
                    && f["object"]
                        .as_str()
                        .is_some_and(|o| o.ends_with(&id(object)))
            })
    };
    assert!(finding(0, "damaged", &flipped), "{out}");
    assert!(finding(1, "missing", &deleted), "{out}");
    assert_eq!(out["outcome"]["status"], "damaged", "{out}");

    // A restore from either replica succeeds, taking the bad objects from
    // the other, and says so.
    for (from, bad) in [(&a, &flipped), (&b, &deleted)] {
        let target = env.path(&format!("restore-{}", id(from)));
        let (code, out) = json(
            &env,
            &[&a, &b],
            &[
                "restore",
                "latest",
                "--verify",
                "--from",
                name(from),
                "--target",
                target.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{out}");
        assert_same_tree(&src, &restored(&target, &src));
        let fallbacks = out["fallbacks"].to_string();
        assert!(fallbacks.contains(&id(bad)), "{out}");
        assert_eq!(out["sources"][0]["replica"], name(from), "{out}");
    }
    // ls and cat read around the damage too, from either side.
    for from in [&a, &b] {
        let out = env
            .cairn(&[&a, &b])
            .args(["ls", "latest", "--from", name(from)])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains("/big.bin"));
        env.cairn(&[&a, &b])
            .args(["cat", "snapshot", "latest", "--from", name(from)])
            .assert()
            .success();
    }
    // --from must name a given repository.
    let out = env
        .cairn(&[&a, &b])
        .args(["ls", "latest", "--from", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));

    // Dry runs change nothing.
    let (code, out) = json(
        &env,
        &[&a, &b],
        &["repair", "packs", "--backend", name(&b), "--dry-run"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out["result"]["actions"].to_string().contains(&id(&deleted)));
    assert!(!deleted.exists());
    // Without --read-data, the flipped byte on a is not visible to repair.
    let (_, out) = json(&env, &[&a, &b], &["repair", "packs", "--backend", name(&a)]);
    assert_eq!(
        out["result"]["actions"].as_array().unwrap().len(),
        0,
        "{out}"
    );

    env.cairn(&[&a, &b])
        .args(["repair", "packs", "--backend", name(&b)])
        .assert()
        .success();
    let (code, out) = json(
        &env,
        &[&a, &b],
        &["repair", "packs", "--backend", name(&a), "--read-data"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out["result"]["actions"].to_string().contains(&id(&flipped)));
    let (code, out) = json(&env, &[&a, &b], &["check", "--read-data", "--all-backends"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn lost_index_is_rebuilt_and_lost_data_marks_snapshots() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("keep")).unwrap();
    std::fs::write(src.join("keep/old.bin"), noise(21, 3 << 20)).unwrap();
    let (a, b) = (env.path("a"), env.path("b"));
    init_small(&env, &[&a, &b]);
    backup(&env, &[&a, &b], &src);

    // Index files of a are gone: check says so, repair index rebuilds them.
    for f in files_in(&a, "index") {
        std::fs::remove_file(f).unwrap();
    }
    let (code, _) = json(&env, &[&a], &["check"]);
    assert_eq!(code, 5);
    let (code, out) = json(
        &env,
        &[&a, &b],
        &["repair", "index", "--backend", name(&a), "--dry-run"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(files_in(&a, "index").is_empty(), "a dry run writes nothing");
    env.cairn(&[&a, &b])
        .args(["repair", "index", "--backend", name(&a)])
        .assert()
        .success();
    env.cairn(&[&a])
        .args(["check", "--read-data"])
        .assert()
        .success();

    // A second snapshot adds one file in packs of its own; lose the data
    // pack that holds it from both replicas.
    let before = pack_names(&a);
    std::fs::write(src.join("lost.bin"), noise(22, 400 << 10)).unwrap();
    backup(&env, &[&a, &b], &src);
    let new: Vec<PathBuf> = pack_names(&a).difference(&before).cloned().collect();
    let data_pack = new
        .iter()
        .max_by_key(|p| std::fs::metadata(a.join(p)).unwrap().len())
        .unwrap()
        .clone();
    for r in [&a, &b] {
        std::fs::remove_file(r.join(&data_pack)).unwrap();
    }
    let (code, st) = json(&env, &[&a, &b], &["status"]);
    assert_eq!(code, 5, "{st}");
    assert_eq!(st["snapshots"][1]["replicas"][0]["state"], "damaged");
    assert_eq!(st["snapshots"][0]["replicas"][0]["state"], "complete");

    // repair snapshots names the lost file; a dry run changes nothing.
    let snaps_before = files_in(&a, "snapshots");
    let (code, out) = json(&env, &[&a, &b], &["repair", "snapshots", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    let damaged = out["result"]["snapshots"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{out}");
    let affected = damaged[0]["affected"].as_array().unwrap();
    assert_eq!(affected.len(), 1, "{out}");
    assert!(
        affected[0].as_str().unwrap().ends_with("/lost.bin"),
        "{out}"
    );
    assert_eq!(files_in(&a, "snapshots"), snaps_before);

    // Marking replaces it on both replicas with a copy tagged "damaged".
    env.cairn(&[&a, &b])
        .args(["repair", "snapshots"])
        .assert()
        .success();
    let (_, list) = json(&env, &[&a, &b], &["snapshots"]);
    let tags: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tags"].to_string())
        .collect();
    assert_eq!(
        tags.iter().filter(|t| t.contains("damaged")).count(),
        1,
        "{list}"
    );
    assert_eq!(files_in(&b, "snapshots").len(), 2);
    // After dropping the lost pack from each index, check is clean (the
    // known loss is a warning), and the marked snapshot restores what is left.
    for r in [&a, &b] {
        env.cairn(&[&a, &b])
            .args(["repair", "index", "--backend", name(r)])
            .assert()
            .success();
    }
    let (code, out) = json(&env, &[&a, &b], &["check", "--read-data"]);
    assert_eq!(code, 0, "{out}");
    assert!(out["replicas"][0]["warnings"]
        .to_string()
        .contains("marked damaged"));
    let target = env.path("restore");
    let out = env
        .cairn(&[&a, &b])
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "the lost file is reported");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lost.bin"));
    assert_eq!(
        std::fs::read(restored(&target, &src).join("keep/old.bin")).unwrap(),
        noise(21, 3 << 20)
    );

    // --forget removes it everywhere.
    env.cairn(&[&a, &b])
        .args(["repair", "snapshots", "--forget"])
        .assert()
        .success();
    assert_eq!(files_in(&a, "snapshots").len(), 1);
    assert_eq!(files_in(&b, "snapshots").len(), 1);
    env.cairn(&[&a, &b]).arg("check").assert().success();
}

#[test]
fn sync_killed_at_any_point_resumes_and_stays_consistent() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}.bin")), noise(30 + i, 6 << 20)).unwrap();
    }
    let (a, b) = (env.path("a"), env.path("b"));
    init_small(&env, &[&a, &b]);
    backup(&env, &[&a], &src);
    let total = packs(&a).len();
    // 24 MiB in packs of at least 1 MiB: 12 to 24 of them.
    assert!(total >= 8, "{total}");
    let count = |r: &Path| {
        if r.join("data").exists() {
            packs(r).len()
        } else {
            0
        }
    };
    // Kill the sync once b holds 1, then a quarter, half, three quarters of
    // the packs: each kill lands mid-copy.
    for want in [1, total / 4, total / 2, total * 3 / 4] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cairn"))
            .env_clear()
            .env("HOME", env.path("home"))
            .env("CAIRN_PASSWORD", PASSWORD)
            .args([
                OsStr::new("--repo"),
                a.as_os_str(),
                OsStr::new("--repo"),
                b.as_os_str(),
            ])
            .args(["sync", "-q"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while count(&b) < want && std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let held = count(&b);
        assert!(held >= want, "sync stopped early: {held} of {want} packs");
        // Whatever b holds is consistent: no snapshot without its data.
        let (code, out) = json(&env, &[&b], &["check"]);
        assert_eq!(
            code, 0,
            "after a kill with {held} of {total} packs copied: {out}"
        );
    }
    let (code, out) = json(&env, &[&a, &b], &["sync"]);
    assert_eq!(code, 0, "{out}");
    let (code, st) = json(&env, &[&a, &b], &["status"]);
    assert_eq!(code, 0, "{st}");
    env.cairn(&[&b])
        .args(["check", "--read-data"])
        .assert()
        .success();
}

#[test]
fn check_reads_subsets_and_compares_replicas() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), noise(41, 12 << 20)).unwrap();
    let (a, b) = (env.path("a"), env.path("b"));
    init_small(&env, &[&a, &b]);
    backup(&env, &[&a, &b], &src);
    let total = packs(&a).len() as u64;
    // Chunk sizes vary with the repository's keyed chunker: 12 MiB make
    // about 6 to 12 packs of 1 MiB or more.
    assert!(total >= 3, "{total}");
    let read = |args: &[&str]| {
        let (code, out) = json(&env, &[&a], args);
        assert_eq!(code, 0, "{out}");
        out["replicas"][0]["packs_read"].as_u64().unwrap()
    };
    // Parts 1/3, 2/3, 3/3 read every pack exactly once between them.
    let parts: u64 = (1..=3)
        .map(|n| read(&["check", "--read-data-subset", &format!("{n}/3")]))
        .sum();
    assert_eq!(parts, total);
    assert_eq!(read(&["check", "--read-data-subset", "100%"]), total);
    assert_eq!(
        read(&["check", "--read-data-subset", "1"]),
        1,
        "one byte: one pack"
    );
    let out = env
        .cairn(&[&a])
        .args(["check", "--read-data-subset", "4/3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The same pack name with different bytes on two replicas is damage;
    // --backend limits the check to the healthy one.
    let victim = packs(&b).into_iter().last().unwrap();
    let data = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &data[..data.len() - 10]).unwrap();
    let (code, out) = json(&env, &[&a, &b], &["check", "--all-backends"]);
    assert_eq!(code, 5, "{out}");
    let victim_id = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        out["across_replicas"]["errors"]
            .to_string()
            .contains(victim_id),
        "{out}"
    );
    let (code, out) = json(&env, &[&a, &b], &["check", "--backend", name(&a)]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["replicas"].as_array().unwrap().len(), 1);

    // A replica that lacks a snapshot is a warning across replicas, not damage.
    std::fs::write(&victim, &data).unwrap();
    std::fs::write(src.join("more.txt"), "more").unwrap();
    backup(&env, &[&a], &src);
    let (code, out) = json(&env, &[&a, &b], &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out["across_replicas"]["warnings"]
        .to_string()
        .contains("lacks 1 snapshot"));
}

/// The drill on real servers: back up to local + S3 + SFTP, delete
/// a pack from S3 and flip a byte in another on local; `check` names both,
/// `restore --from local` succeeds with the bad objects taken from the
/// others, `repair` heals both, and `check --read-data --all-backends` is
/// clean.
#[test]
fn local_s3_and_sftp_replicas_heal_each_other() {
    use cairn::backends::{Backend, Handle, Kind};
    let server = |var| cairn::backends::conformance::server_from_env(var, var);
    let (Some(s3), Some(sftp)) = (server("CAIRN_TEST_REPO_S3"), server("CAIRN_TEST_REPO_SFTP"))
    else {
        return;
    };
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 8 << 20);
    let local = env.path("local");
    let s3 = cairn::backends::conformance::fresh_location(&s3, "heal");
    let sftp = cairn::backends::conformance::fresh_location(&sftp, "heal");
    let repos = [local.as_path(), Path::new(&s3), Path::new(&sftp)];
    init_small(&env, &repos);
    backup(&env, &repos, &src);

    let names: Vec<String> = packs(&local)
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert!(names.len() >= 3, "{names:?}");
    let (flipped, deleted) = (&names[0], &names[1]);
    let path = packs(&local)[0].clone();
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip_byte(&path, len / 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = cairn::backends::s3::S3Backend::from_url(&s3, &Default::default()).unwrap();
    rt.block_on(bucket.delete(&Handle::new(Kind::Pack, deleted)))
        .unwrap();

    let (code, out) = json(&env, &repos, &["check", "--read-data"]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out["replicas"][0]["errors"]
            .to_string()
            .contains(flipped.as_str()),
        "{out}"
    );
    assert!(
        out["replicas"][1]["errors"]
            .to_string()
            .contains(deleted.as_str()),
        "{out}"
    );
    assert_eq!(
        out["replicas"][2]["errors"].as_array().unwrap().len(),
        0,
        "{out}"
    );

    let target = env.path("restore");
    let (code, out) = json(
        &env,
        &repos,
        &[
            "restore",
            "latest",
            "--verify",
            "--from",
            name(&local),
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_same_tree(&src, &restored(&target, &src));
    assert!(
        out["fallbacks"].to_string().contains(flipped.as_str()),
        "{out}"
    );

    env.cairn(&repos)
        .args(["repair", "packs", "--backend", &s3])
        .assert()
        .success();
    env.cairn(&repos)
        .args(["repair", "packs", "--read-data", "--backend", name(&local)])
        .assert()
        .success();
    let (code, out) = json(&env, &repos, &["check", "--read-data", "--all-backends"]);
    assert_eq!(code, 0, "{out}");
    let (code, st) = json(&env, &repos, &["status"]);
    assert_eq!(code, 0, "{st}");
    assert!(all_complete(&st));
}
