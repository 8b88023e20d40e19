//! Hostile snapshots: trees a compromised client holding the key could
//! write (names that climb out, duplicates, symlinked parents, device
//! nodes, set-id files, a subtree repeated many times), forged with the
//! engine's own writer. Restore must write nothing outside its target and
//! name every entry it refused; `ls` must print names escaped.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::backends::local::LocalBackend;
use cairn::format::id::Id;
use cairn::format::tree::{Node, NodeKind};
use cairn::ops::restore::forge::{self, Forge};
use cairn::repo::{Replica, Repository};
use secrecy::SecretString;

use crate::common::{last_json, Env, PASSWORD};

/// Forge a snapshot of the tree `build` returns into the repository at
/// `repo` (already initialised).
fn forged(repo: &Path, build: impl FnOnce(&Forge) -> Vec<Id>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let replica = Replica {
            name: "local".into(),
            backend: Arc::new(LocalBackend::new(repo)),
        };
        let r = Repository::open(vec![replica], &SecretString::from(PASSWORD))
            .await
            .unwrap();
        let f = Forge::new(&r).await.unwrap();
        let root = build(&f);
        f.commit(root, "/").await.unwrap();
    });
}

/// Every path below `dir` (not entering `skip`) with its type, mode,
/// size, mtime and content: what must not change.
fn listing(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, (u32, u64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                fs::read(&p).unwrap()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p, (m.mode(), m.size(), m.mtime(), content));
        }
    }
    out
}

fn with_mode(n: Node, mode: u32) -> Node {
    Node { mode, ..n }
}

#[test]
fn restore_of_a_hostile_snapshot_stays_in_its_target_and_names_what_it_refused() {
    let env = Env::new();
    let repo = env.path("repo");
    env.init(&[&repo]);
    let work = env.path("work");
    let outside = work.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(work.join("sentinel"), "keep").unwrap();
    fs::write(outside.join("race"), "outside file").unwrap();
    let target = work.join("target");
    fs::create_dir_all(&target).unwrap();
    // A symlink already in the target where the snapshot has a directory.
    std::os::unix::fs::symlink(&outside, target.join("pre")).unwrap();
    let out_b = outside.as_os_str().as_encoded_bytes().to_vec();
    let mut race_target = out_b.clone();
    race_target.extend_from_slice(b"/race");

    forged(&repo, |f| {
        let inner = f.tree(vec![forge::file(f, b"owned", b"pwned")]);
        let pre = f.tree(vec![forge::file(f, b"f", b"in pre")]);
        let mut dev = with_mode(forge::node(b"dev", NodeKind::Chardev), 0o020644);
        dev.rdev = (1 << 8) | 3; // /dev/null
        f.tree(vec![
            forge::file(f, b"..", b"dotdot"),
            forge::dir(b".", inner.clone()),
            forge::file(f, b"", b"empty name"),
            forge::file(f, b"a/../../x", b"climb"),
            forge::file(f, b"/etc/cron.d/x", b"absolute"),
            forge::file(f, b"nul\0x", b"nul"),
            forge::symlink(b"esc", &out_b),
            forge::dir(b"esc", inner),
            forge::symlink(b"race", &race_target),
            forge::file(f, b"race", b"raced"),
            forge::file(f, b"ok.txt", b"fine"),
            forge::file(f, b"ctl\x1b[2J\n", b"control"),
            dev,
            with_mode(forge::file(f, b"suid", b"#!/bin/sh\n"), 0o104755),
            forge::dir(b"pre", pre),
        ])
    });

    let before = listing(&work, &target);
    let out = env
        .cairn(&[&repo])
        .args(["--json", "restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(
        listing(&work, &target),
        before,
        "outside the target changed"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);

    let doc = last_json(&out.stdout);
    let findings = doc["result"]["findings"].as_array().unwrap();
    let messages: Vec<&str> = findings
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    for name in [
        "\"..\"",
        "\".\"",
        "\"\"",
        "\"a/../../x\"",
        "\"/etc/cron.d/x\"",
        "\"nul\\0x\"",
        "\"esc\"",
        "\"race\"",
    ] {
        let refused = format!("refused entry {name} in /");
        assert!(
            messages.iter().any(|m| m.starts_with(&refused)),
            "{refused} not in {messages:#?}"
        );
    }
    assert!(findings
        .iter()
        .any(|f| f["problem"] == "not_restored" && f["path"] == "/dev"));
    assert!(findings
        .iter()
        .any(|f| f["problem"] == "mode_cleared" && f["path"] == "/suid"));

    // What was kept: the first of each duplicate (the symlinks, as links),
    // ordinary entries, the set-id file without its bits, a directory in
    // place of the symlink that was in the target.
    assert_eq!(fs::read(target.join("ok.txt")).unwrap(), b"fine");
    assert_eq!(fs::read(target.join("ctl\x1b[2J\n")).unwrap(), b"control");
    assert_eq!(fs::read_link(target.join("esc")).unwrap(), outside);
    assert!(fs::symlink_metadata(target.join("race"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(outside.join("race")).unwrap(), b"outside file");
    assert!(fs::symlink_metadata(target.join("dev")).is_err());
    assert_eq!(
        fs::metadata(target.join("suid")).unwrap().mode() & 0o7777,
        0o755
    );
    assert!(fs::symlink_metadata(target.join("pre")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("pre/f")).unwrap(), b"in pre");

    // Asked for: the device node and the set-id bits.
    let target2 = work.join("target2");
    let before = listing(&work, &target2);
    let out = env
        .cairn(&[&repo])
        .args([
            "restore",
            "latest",
            "--allow-devices",
            "--keep-setuid",
            "--target",
        ])
        .arg(&target2)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "the names are still refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"refused entry "nul\0x" in /"#),
        "{stderr}"
    );
    assert_eq!(
        fs::metadata(target2.join("suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    if rustix::process::geteuid().is_root() {
        let m = fs::symlink_metadata(target2.join("dev")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), (1 << 8) | 3);
    }
    assert_eq!(listing(&work, &target2), before, "outside target2 changed");

    // ls prints the control characters escaped, and no refused name.
    let out = env.cairn(&[&repo]).args(["ls", "latest"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("/ctl\\u{1b}[2J\\n\n"), "{text}");
    assert!(!text.contains('\x1b'));
    assert!(!text.contains("cron"), "{text}");
}

#[test]
fn a_subtree_repeated_many_times_restores_and_lists() {
    // 2^14 leaf directories, each with one file, from 15 distinct trees.
    let env = Env::new();
    let repo = env.path("repo");
    env.init(&[&repo]);
    const LEVELS: usize = 14;
    forged(&repo, |f| {
        let mut t = f.tree(vec![forge::file(f, b"f", b"x")]);
        for _ in 0..LEVELS {
            t = f.tree(vec![forge::dir(b"a", t.clone()), forge::dir(b"b", t)]);
        }
        t
    });
    let target = env.path("t");
    let started = std::time::Instant::now();
    env.cairn(&[&repo])
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    let took = started.elapsed();
    let leaf = target.join("a/b/a/b/a/b/a/b/a/b/a/b/a/b/f");
    assert_eq!(fs::read(leaf).unwrap(), b"x");
    let out = env.cairn(&[&repo]).args(["ls", "latest"]).output().unwrap();
    let lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
    // Every directory below the root (2 + 4 + … + 2^14) and every file.
    assert_eq!(lines, (1 << (LEVELS + 1)) - 2 + (1 << LEVELS));
    eprintln!(
        "restore of {} directories took {took:?}",
        (1 << (LEVELS + 1)) - 2
    );
}
