//! Storage that lies: a tampered, out-of-range or foreign `config` is
//! refused (exit 5, naming the file), and a replica whose `snapshots/` was
//! rolled back is warned about (exit 5 with `--strict`), while snapshots
//! this host forgot are not.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

fn run(env: &Env, repos: &[&Path], args: &[&str]) -> (i32, String) {
    let out = env.cairn(repos).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

type Edit = Box<dyn Fn(&mut Value)>;

fn edit_config(repo: &Path, edit: impl FnOnce(&mut Value)) {
    let p = repo.join("config");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn a_tampered_config_is_refused_with_exit_5() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a]);
    let good = std::fs::read(a.join("config")).unwrap();
    let edits: Vec<(&str, Edit)> = vec![
        (
            "pack_size",
            Box::new(|v| v["pack_size"] = (32u32 << 20).into()),
        ),
        ("pack_size 0", Box::new(|v| v["pack_size"] = 0.into())),
        (
            "compression",
            Box::new(|v| v["compression_level"] = 19.into()),
        ),
        (
            "chunker",
            Box::new(|v| v["chunker"]["avg_size"] = (2u32 << 20).into()),
        ),
        ("no mac", Box::new(|v| v["mac"] = "".into())),
    ];
    for (what, edit) in edits {
        edit_config(&a, edit);
        let (code, err) = run(&env, &[&a], &["snapshots"]);
        assert_eq!(code, 5, "{what}: {err}");
        assert!(err.contains("config"), "{what}: {err}");
        std::fs::write(a.join("config"), &good).unwrap();
    }
    env.cairn(&[&a]).arg("snapshots").assert().success();

    // Another repository's config (valid in itself) in its place.
    env.init(&[&b]);
    std::fs::copy(b.join("config"), a.join("config")).unwrap();
    let (code, err) = run(&env, &[&a], &["snapshots"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("config"), "{err}");
    std::fs::write(a.join("config"), &good).unwrap();

    // A version-1 repository is refused, saying what to do.
    edit_config(&a, |v| v["version"] = 1.into());
    let (code, err) = run(&env, &[&a], &["snapshots"]);
    assert_ne!(code, 0);
    assert!(err.contains("version 1") && err.contains("init"), "{err}");
}

#[test]
fn one_tampered_replica_is_set_aside_and_the_command_exits_5() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    edit_config(&a, |v| v["compression_level"] = 19.into());
    let out = env.cairn(&[&a, &b]).args(["snapshots"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains(a.to_str().unwrap()) && err.contains("config"),
        "{err}"
    );
}

#[test]
fn a_rolled_back_replica_is_warned_about() {
    let env = Env::new();
    let a = env.path("a");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("one"), noise(1, 100 << 10)).unwrap();
    env.init(&[&a]);
    let (code, sum) = env.backup_json(&[&a], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    let saved = env.path("saved-snapshots");
    std::fs::create_dir_all(&saved).unwrap();
    for f in files_in(&a, "snapshots") {
        std::fs::copy(&f, saved.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(src.join("two"), noise(2, 100 << 10)).unwrap();
    let (code, sum) = env.backup_json(&[&a], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    let (code, err) = run(&env, &[&a], &["snapshots"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("rolled back"), "{err}");

    // The old snapshots/ put back: the newer snapshot is gone.
    std::fs::remove_dir_all(a.join("snapshots")).unwrap();
    std::fs::create_dir_all(a.join("snapshots")).unwrap();
    for f in std::fs::read_dir(&saved).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, a.join("snapshots").join(f.file_name().unwrap())).unwrap();
    }
    let (code, err) = run(&env, &[&a], &["snapshots"]);
    assert_eq!(code, 0, "a warning only: {err}");
    assert!(
        err.contains("rolled back") && err.contains(a.to_str().unwrap()),
        "{err}"
    );
    let (code, err) = run(&env, &[&a], &["--strict", "snapshots"]);
    assert_eq!(code, 5, "{err}");
}

#[test]
fn snapshots_forgotten_by_repair_are_not_a_rollback() {
    let env = Env::new();
    let a = env.path("a");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("keep"), noise(3, 100 << 10)).unwrap();
    env.init(&[&a]);
    assert_eq!(env.backup_json(&[&a], &[src.as_os_str()]).0, 0);
    let before = packs(&a);
    std::fs::write(src.join("lost"), noise(4, 400 << 10)).unwrap();
    assert_eq!(env.backup_json(&[&a], &[src.as_os_str()]).0, 0);
    env.cairn(&[&a]).arg("snapshots").assert().success();
    let data_pack = packs(&a)
        .into_iter()
        .filter(|p| !before.contains(p))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(data_pack).unwrap();
    env.cairn(&[&a])
        .args(["repair", "snapshots", "--forget"])
        .assert()
        .success();
    assert_eq!(files_in(&a, "snapshots").len(), 1);
    let (code, err) = run(&env, &[&a], &["--strict", "snapshots"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("rolled back"), "{err}");
}

/// A giant object in place of `config` is refused from its first bytes
/// (exit 5, naming the file), never downloaded.
#[test]
fn a_giant_config_is_refused_without_reading_it() {
    let env = Env::new();
    let a = env.path("a");
    env.init(&[&a]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(a.join("config"))
        .unwrap();
    f.set_len(3 << 30).unwrap(); // sparse: 3 GiB of zeros
    drop(f);
    let mut c = env.cairn(&[&a]);
    c.arg("snapshots");
    let (out, peak_kib) = output_with_peak_rss(&c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("config"), "{err}");
    assert!(peak_kib < 256 * 1024, "peak RSS {peak_kib} KiB");
}
