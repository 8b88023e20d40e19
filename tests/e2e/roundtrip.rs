//! Backup to several repositories, restore from each, compare every byte
//! and attribute; incremental backups; stdin; excludes; diff, ls, stats.

use std::fs;

use crate::common::*;

#[test]
fn backup_to_two_repos_and_restore_from_each() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 20 << 20);
    let (r1, r2) = (env.path("repo1"), env.path("repo2"));
    env.init(&[&r1, &r2]);
    let (code, sum) = env.backup_json(&[&r1, &r2], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    assert_eq!(sum["replicas"][0]["ok"], true);
    assert_eq!(sum["replicas"][1]["ok"], true);
    let id = sum["snapshot"].as_str().unwrap().to_string();

    // Same repository id, same packs, same snapshot name on both.
    assert_eq!(
        fs::read(r1.join("config")).unwrap(),
        fs::read(r2.join("config")).unwrap()
    );
    let names = |r: &std::path::Path| {
        packs(r)
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&r1), names(&r2));
    assert!(r1.join("snapshots").join(&id).exists() && r2.join("snapshots").join(&id).exists());

    for r in [&r1, &r2] {
        let target = env.path(&format!(
            "restore-{}",
            r.file_name().unwrap().to_string_lossy()
        ));
        env.cairn(&[r.as_path()])
            .args(["restore", "latest", "--verify", "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(&src, &restored(&target, &src));
        env.cairn(&[r.as_path()])
            .args(["check", "--read-data"])
            .assert()
            .success();
    }
}

#[test]
fn data_at_rest_is_encrypted() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let marker = "PLAINTEXT-MARKER-THAT-MUST-NOT-APPEAR";
    fs::write(src.join(format!("{marker}.txt")), marker.repeat(1000)).unwrap();
    let r = env.path("repo");
    env.init(&[&r]);
    env.cairn(&[&r]).arg("backup").arg(&src).assert().success();
    let mut stack = vec![r.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let data = fs::read(&p).unwrap();
                assert!(
                    !data.windows(marker.len()).any(|w| w == marker.as_bytes()),
                    "{} holds plaintext",
                    p.display()
                );
            }
        }
    }
    // Key slots are private to the owner.
    use std::os::unix::fs::PermissionsExt;
    for k in files_in(&r, "keys") {
        assert_eq!(
            fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn incremental_backup_reads_only_changes() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 5 << 20);
    let r = env.path("repo");
    env.init(&[&r]);
    let (_, first) = env.backup_json(&[&r], &[src.as_os_str()]);
    let files = first["summary"]["files_new"].as_u64().unwrap();
    assert!(files > 5);

    let (code, second) = env.backup_json(&[&r], &[src.as_os_str()]);
    assert_eq!(code, 0);
    assert_eq!(second["summary"]["bytes_read"], 0, "{second}");
    assert_eq!(
        second["summary"]["files_unmodified"].as_u64().unwrap(),
        files
    );
    // The source tree is unchanged; only the trees of the directories above
    // it (whose mtimes other processes may touch, e.g. /tmp) can be new.
    assert!(
        second["summary"]["blobs_new"].as_u64().unwrap() <= 2,
        "{second}"
    );
    assert!(
        second["summary"]["bytes_new"].as_u64().unwrap() < 4096,
        "{second}"
    );

    fs::write(src.join("docs/nested/deeper/small"), b"changed content").unwrap();
    let (_, third) = env.backup_json(&[&r], &[src.as_os_str()]);
    assert_eq!(third["summary"]["bytes_read"], 15, "{third}");
    assert_eq!(third["summary"]["files_changed"], 1);

    // diff names exactly the change.
    let out = env
        .cairn(&[&r])
        .args(["diff", "--json"])
        .arg(second["snapshot"].as_str().unwrap())
        .arg(third["snapshot"].as_str().unwrap())
        .output()
        .unwrap();
    let diff = last_json(&out.stdout);
    let changes = diff["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{diff}");
    assert_eq!(changes[0]["change"], "M");
    assert!(changes[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("docs/nested/deeper/small"));
}

#[test]
fn stdin_backup_restores_to_a_file() {
    let env = Env::new();
    let r = env.path("repo");
    env.init(&[&r]);
    let data = noise(7, 3 << 20);
    env.cairn(&[&r])
        .args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "dump.sql",
            "--tag",
            "db",
        ])
        .write_stdin(data.clone())
        .assert()
        .success();
    let target = env.path("out");
    env.cairn(&[&r])
        .args(["restore", "latest:/dump.sql", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(fs::read(target.join("dump.sql")).unwrap(), data);
    let out = env
        .cairn(&[&r])
        .args(["snapshots", "--json", "--tag", "db"])
        .output()
        .unwrap();
    let snaps = last_json(&out.stdout);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["paths"][0], "/dump.sql");
}

#[test]
fn excludes_ls_include_and_subpath_restore() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    fs::write(src.join("docs/skip.tmp"), "temp").unwrap();
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("cache/blob"), "cached").unwrap();
    let r = env.path("repo");
    env.init(&[&r]);
    let exclude_file = env.path("excludes");
    fs::write(&exclude_file, "# comment\ncache\n").unwrap();
    env.cairn(&[&r])
        .arg("backup")
        .arg(&src)
        .args(["--exclude", "*.tmp", "--exclude-file"])
        .arg(&exclude_file)
        .assert()
        .success();
    let out = env.cairn(&[&r]).args(["ls", "latest"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("docs/readme.txt"));
    assert!(
        !listing.contains("skip.tmp") && !listing.contains("cache"),
        "{listing}"
    );

    let target = env.path("only-docs");
    let sub = format!("latest:{}", src.join("docs").display());
    env.cairn(&[&r])
        .args(["restore", &sub, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert!(target.join("readme.txt").exists());
    assert!(!target.join("big.bin").exists());

    let target = env.path("included");
    env.cairn(&[&r])
        .args(["restore", "latest", "--include", "*.txt", "--target"])
        .arg(&target)
        .assert()
        .success();
    let base = restored(&target, &src);
    assert!(base.join("docs/readme.txt").exists());
    assert!(!base.join("big.bin").exists());
}

#[test]
fn repository_from_env_and_config_file() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 100_000);
    let (r1, r2) = (env.path("a"), env.path("b"));
    let config = env.path("cairn.toml");
    fs::write(
        &config,
        format!(
            "[backends.first]\nurl = \"{}\"\n\n[backends.second]\nurl = \"{}\"\n",
            r1.display(),
            r2.display()
        ),
    )
    .unwrap();
    env.cairn(&[])
        .arg("--config")
        .arg(&config)
        .args(["init", "--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
        .assert()
        .success();
    env.cairn(&[])
        .arg("--config")
        .arg(&config)
        .arg("backup")
        .arg(&src)
        .assert()
        .success();
    // CAIRN_REPO with a comma-separated list reaches both as well.
    let list = format!("{},{}", r1.display(), r2.display());
    let out = env
        .cairn(&[])
        .env("CAIRN_REPO", &list)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    let snaps = last_json(&out.stdout);
    assert_eq!(snaps[0]["replicas"].as_array().unwrap().len(), 2, "{snaps}");
    // Password from a file and from a command.
    let pw = env.path("pw");
    fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    env.cairn(&[&r1])
        .env_remove("CAIRN_PASSWORD")
        .arg("--password-file")
        .arg(&pw)
        .arg("snapshots")
        .assert()
        .success();
    env.cairn(&[&r1])
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_PASSWORD_COMMAND", format!("cat {}", pw.display()))
        .arg("snapshots")
        .assert()
        .success();
}

#[test]
fn default_repository_with_generated_key_file() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 100_000);
    let out = env
        .cairn(&[])
        .env_remove("CAIRN_PASSWORD")
        .arg("backup")
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WITHOUT THIS FILE YOUR BACKUPS CANNOT BE RESTORED"),
        "{stderr}"
    );
    let key = env.path("home/.config/cairn/default.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let repo = env.path("home/.local/share/cairn/repo");
    assert!(repo.join("config").exists());
    // A second run reuses key and repository, and the warning is not repeated.
    let out = env
        .cairn(&[])
        .env_remove("CAIRN_PASSWORD")
        .arg("backup")
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("WITHOUT THIS FILE"));
    let target = env.path("out");
    env.cairn(&[])
        .env_remove("CAIRN_PASSWORD")
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn stats_and_cat() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    let r = env.path("repo");
    env.init(&[&r]);
    env.cairn(&[&r]).arg("backup").arg(&src).assert().success();
    let out = env.cairn(&[&r]).args(["stats", "--json"]).output().unwrap();
    let s = last_json(&out.stdout);
    assert!(s["restore_size"].as_u64().unwrap() > 1 << 20);
    // Config is public and needs no passphrase.
    let out = env
        .cairn(&[&r])
        .env_remove("CAIRN_PASSWORD")
        .args(["cat", "config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["version"], 3);
    assert!(cfg["mac"].as_str().is_some_and(|m| m.len() == 64), "{cfg}");
    let out = env.cairn(&[&r]).args(["cat", "keys"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("argon2id") && !text.contains("keyring"),
        "slot listing shows no wrapped key: {text}"
    );
}

/// `backup --time` records the given time (imports, retention tests); a
/// bad time is a usage error naming the flag.
#[test]
fn backup_time_is_recorded() {
    let env = Env::new();
    let repo = env.path("repo");
    let src = env.path("src");
    make_tree(&src, 1 << 12);
    env.init(&[&repo]);
    for t in ["2021-10-31T01:30:00Z", "2020-02-29T12:00:00+02:00"] {
        env.cairn(&[&repo])
            .args(["backup", "--quiet", "--time", t])
            .arg(&src)
            .assert()
            .success();
    }
    let out = env
        .cairn(&[&repo])
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    let v = last_json(&out.stdout);
    let mut times: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["time"].as_str().unwrap())
        .collect();
    times.sort();
    assert_eq!(times, ["2020-02-29T10:00:00Z", "2021-10-31T01:30:00Z"]);
    let out = env
        .cairn(&[&repo])
        .args(["backup", "--time", "last tuesday"])
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--time"));
}

/// `cairn completions` prints scripts generated from the live command
/// line definition (bash parses its script and completes a subcommand),
/// and `cairn man` writes a page per command, readable by `man`.
#[test]
fn completions_and_man_pages_cover_every_command() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = env
            .cairn(&[])
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        for word in ["reencrypt", "retire", "copy", "restore"] {
            assert!(text.contains(word), "{shell} lacks {word}");
        }
    }
    let script = env.path("cairn.bash");
    let out = env
        .cairn(&[])
        .args(["completions", "bash"])
        .output()
        .unwrap();
    std::fs::write(&script, &out.stdout).unwrap();
    // Source the script and ask it to complete `cairn key re`.
    let probe = format!(
        "source {}; COMP_WORDS=(cairn key re); COMP_CWORD=2; _cairn cairn re key; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &probe])
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for w in ["reencrypt", "retire", "remove"] {
        assert!(
            words.split_whitespace().any(|x| x == w),
            "{w} not in {words:?}"
        );
    }
    let dir = env.path("man");
    let out = env.cairn(&[]).arg("man").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "cairn.1",
        "cairn-backup.1",
        "cairn-key-rotate.1",
        "cairn-copy.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text:.80}"
        );
    }
    let out = env
        .cairn(&[])
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn profile_stages_reports_each_stage_of_the_pipeline() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 8 << 20);
    let r = env.path("repo");
    env.init(&[&r]);
    let (code, sum) = env.backup_json(&[&r], &["--profile-stages".as_ref(), src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    let stages = sum["profile"]["stages"].as_array().expect("stages listed");
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["read", "chunk", "hash", "compress", "encrypt", "seal", "upload"]
    );
    let read = sum["summary"]["bytes_read"].as_u64().unwrap();
    for s in stages {
        assert!(s["bytes"].as_u64().unwrap() > 0, "{s}");
        assert!(s["seconds"].as_f64().unwrap() >= 0.0, "{s}");
    }
    assert_eq!(stages[0]["bytes"].as_u64(), Some(read));
    assert!(sum["profile"]["cpu_user_seconds"].as_f64().unwrap() > 0.0);

    // Without the flag there is no profile, and the text form has a table.
    let (_, plain) = env.backup_json(&[&r], &[src.as_os_str()]);
    assert!(plain["profile"].is_null());
    let out = env
        .cairn(&[&r])
        .args(["backup", "--force", "--profile-stages"])
        .arg(&src)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains("Stage profile") && text.contains("compress"),
        "{text}"
    );
}
