//! Faults: bad input, corruption, kills, full disks, unreadable sources.
//!
//! Every test asserts three things: the exit code, a message that names
//! what went wrong, and that nothing else was lost (the other replica, the
//! other files, the next backup).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run a command to completion: (exit code, stdout, stderr).
fn run(c: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// `init` with a cheap key derivation and a given pack size.
fn init_with(env: &Env, repos: &[&Path], pack_mib: u32) {
    env.cairn(repos)
        .args(["init", "--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
        .args(["--pack-size-mib", &pack_mib.to_string()])
        .assert()
        .success();
}

fn check(env: &Env, repos: &[&Path], read_data: bool) -> (i32, String, String) {
    let mut c = env.cairn(repos);
    c.arg("check");
    if read_data {
        c.arg("--read-data");
    }
    run(&mut c)
}

fn restore(env: &Env, repos: &[&Path], snap: &str, target: &Path) -> (i32, String, String) {
    run(env
        .cairn(repos)
        .args(["restore", snap, "--target"])
        .arg(target))
}

/// A new, unused path in the environment.
fn fresh(env: &Env, what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    env.path(&format!("{what}-{}", N.fetch_add(1, Ordering::Relaxed)))
}

/// The same command run as user and group `nobody` (65534).
fn as_nobody(c: &assert_cmd::Command) -> assert_cmd::Command {
    let inner = std_command(c);
    let mut s = std::process::Command::new("setpriv");
    s.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear();
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            s.env(k, v);
        }
    }
    assert_cmd::Command::from_std(s)
}

/// Whether this process runs as root (the owner of a file it creates).
fn is_root(env: &Env) -> bool {
    let probe = fresh(env, "uid-probe");
    fs::write(&probe, b"").unwrap();
    let uid = fs::metadata(&probe).unwrap().uid();
    fs::remove_file(&probe).unwrap();
    uid == 0
}

/// Deterministic random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The seed of a randomized test: `CAIRN_FAULT_SEED` if set (to replay a
/// failure), else a fixed one. Printed either way.
fn seed(default: u64) -> u64 {
    let s = std::env::var("CAIRN_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {s} (set CAIRN_FAULT_SEED to replay)");
    s
}

/// Where a blob sits, from `cairn cat index`.
#[derive(Clone, Debug)]
struct Blob {
    id: String,
    pack: String,
    kind: String,
    offset: usize,
    stored_len: usize,
    raw_len: usize,
}

/// Every blob listed by the index files of `repo`.
fn index_blobs(env: &Env, repo: &Path) -> Vec<Blob> {
    let mut out = Vec::new();
    for f in files_in(repo, "index") {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let (code, stdout, stderr) = run(env.cairn(&[repo]).args(["cat", "index", &name]));
        assert_eq!(code, 0, "cat index {name}: {stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        for p in v.as_array().unwrap() {
            for b in p["blobs"].as_array().unwrap() {
                let n = |k: &str| b[k].as_u64().unwrap() as usize;
                out.push(Blob {
                    id: b["id"].as_str().unwrap().to_string(),
                    pack: p["pack"].as_str().unwrap().to_string(),
                    kind: b["kind"].as_str().unwrap().to_ascii_lowercase(),
                    offset: n("offset"),
                    stored_len: n("stored_len"),
                    raw_len: n("raw_len"),
                });
            }
        }
    }
    out
}

/// A pack's path relative to the repository, as messages show it.
fn pack_rel(pack: &str) -> String {
    format!("data/{}/{pack}", &pack[..2])
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Sum of allocated bytes below `root` (what `du` reports).
fn disk_usage(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        total += m.blocks() * 512;
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    total
}

/// BLAKE3 of a file, read in 1 MiB pieces (never the whole file in memory).
fn hash_file(p: &Path) -> blake3::Hash {
    let mut f = fs::File::open(p).unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return h.finalize();
        }
        h.update(&buf[..n]);
    }
}

/// BLAKE3 of `size` bytes that are zero except for `pieces` (offset, bytes),
/// computed without any file: what a sparse file written so must hold.
fn hash_sparse(size: u64, pieces: &[(u64, &[u8])]) -> blake3::Hash {
    let zeros = vec![0u8; 1 << 20];
    let mut h = blake3::Hasher::new();
    let mut pos = 0;
    for &(at, bytes) in pieces {
        while pos < at {
            let n = (at - pos).min(zeros.len() as u64);
            h.update(&zeros[..n as usize]);
            pos += n;
        }
        h.update(bytes);
        pos += bytes.len() as u64;
    }
    while pos < size {
        let n = (size - pos).min(zeros.len() as u64);
        h.update(&zeros[..n as usize]);
        pos += n;
    }
    h.finalize()
}

// ---------------------------------------------------------------------------
// 1, 2: bad input
// ---------------------------------------------------------------------------

#[test]
fn wrong_passphrase_exits_12_and_touches_nothing() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    let repo = env.path("repo");
    env.init(&[&repo]);
    env.cairn(&[&repo])
        .arg("backup")
        .arg(&src)
        .assert()
        .success();
    let before = snapshot_of(&repo);
    let target = env.path("target");

    let commands: Vec<Vec<&std::ffi::OsStr>> = vec![
        vec!["backup".as_ref(), src.as_os_str()],
        vec!["snapshots".as_ref()],
        vec!["ls".as_ref(), "latest".as_ref()],
        vec!["check".as_ref(), "--read-data".as_ref()],
        vec![
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ],
        vec!["stats".as_ref()],
        vec!["cat".as_ref(), "snapshot".as_ref(), "latest".as_ref()],
    ];
    for args in commands {
        let (code, out, err) = run(env
            .cairn(&[&repo])
            .env("CAIRN_PASSWORD", "not the passphrase")
            .args(&args));
        assert_eq!(code, 12, "{args:?}: {out}{err}");
        assert!(err.contains("wrong passphrase"), "{args:?}: {err}");
        assert_eq!(
            snapshot_of(&repo),
            before,
            "{args:?} with a wrong passphrase changed the repository"
        );
        assert!(files_in(&repo, "locks").is_empty());
    }
    assert!(!target.exists(), "restore created its target anyway");

    // With --json the error is the last line, with the exit code.
    let (code, out, _) = run(env
        .cairn(&[&repo])
        .env("CAIRN_PASSWORD", "not the passphrase")
        .args(["--json", "check"]));
    assert_eq!(code, 12);
    let v = last_json(out.as_bytes());
    assert_eq!(v["type"], "error");
    assert_eq!(v["exit_code"], 12);
    assert!(v["message"].as_str().unwrap().contains("wrong passphrase"));
    assert_eq!(snapshot_of(&repo), before);

    // The right passphrase still works.
    env.cairn(&[&repo]).args(["check"]).assert().success();
}

#[test]
fn no_repository_exits_10() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    let missing = env.path("no-such-repo");
    let empty = env.path("empty-dir");
    fs::create_dir_all(&empty).unwrap();
    let target = env.path("target");
    for repo in [&missing, &empty] {
        for args in [
            vec!["snapshots".as_ref()],
            vec!["check".as_ref()],
            vec![
                "restore".as_ref(),
                "latest".as_ref(),
                "-t".as_ref(),
                target.as_os_str(),
            ],
        ] {
            let (code, out, err) = run(env.cairn(&[repo]).args(&args));
            assert_eq!(code, 10, "{args:?} on {}: {out}{err}", repo.display());
            assert!(
                err.contains(&format!("no cairn repository at {}", repo.display())),
                "{err}"
            );
            assert!(
                err.contains("cairn init"),
                "the message says what to do: {err}"
            );
        }
        let (code, _, err) = run(env.cairn(&[repo]).arg("backup").arg(&src));
        assert_eq!(code, 10, "{err}");
        assert!(err.contains("no cairn repository at"), "{err}");
    }
    // Nothing was created: a missing repository (an unmounted disk) must
    // not be silently made on the mount point.
    assert!(!missing.exists());
    assert!(!target.exists());
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
}

#[test]
fn malformed_config_exits_2_naming_the_file() {
    let env = Env::new();
    let repo = env.path("repo");
    env.init(&[&repo]);
    let cfg = env.path("cairn.toml");
    for bad in [
        "backends = [\n",
        "[backends.offsite]\nurl = 3\n",
        "[backends.a]\nurl = \"/x\"\n[frobnicate]\n",
    ] {
        fs::write(&cfg, bad).unwrap();
        for repos in [vec![], vec![repo.as_path()]] {
            let (code, out, err) =
                run(env.cairn(&repos).arg("--config").arg(&cfg).arg("snapshots"));
            assert_eq!(code, 2, "{bad:?}: {out}{err}");
            assert!(err.contains(&cfg.display().to_string()), "{bad:?}: {err}");
        }
        // Also through the environment.
        let (code, _, err) = run(env.cairn(&[]).env("CAIRN_CONFIG", &cfg).arg("snapshots"));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&cfg.display().to_string()), "{err}");
    }
    // A config file that does not exist, named explicitly, is an error too.
    let (code, _, err) = run(env
        .cairn(&[&repo])
        .arg("--config")
        .arg(env.path("nope.toml"))
        .arg("snapshots"));
    assert_ne!(code, 0);
    assert!(err.contains("nope.toml"), "{err}");
}

#[test]
fn missing_passphrase_without_tty_exits_2() {
    // assert_cmd gives the child a pipe for stdin: no terminal.
    let env = Env::new();
    let repo = env.path("repo");
    env.init(&[&repo]);
    let before = snapshot_of(&repo);
    for args in [vec!["snapshots"], vec!["check"]] {
        let (code, out, err) = run(env.cairn(&[&repo]).env_remove("CAIRN_PASSWORD").args(&args));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("CAIRN_PASSWORD"), "{err}");
    }
    // init asks for the passphrase too.
    let other = env.path("repo2");
    let (code, _, err) = run(env
        .cairn(&[&other])
        .env_remove("CAIRN_PASSWORD")
        .arg("init"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CAIRN_PASSWORD"), "{err}");
    assert!(!other.exists());
    assert_eq!(snapshot_of(&repo), before);
}

/// A bandwidth limit of 0 would never send a byte: refused up front, with
/// a usage error naming the flag, for the flag, its variable and the
/// per-backend option in cairn.toml alike.
#[test]
fn zero_bandwidth_limit_is_a_usage_error() {
    let env = Env::new();
    let repo = env.path("repo");
    for (flag, var) in [
        ("--limit-upload", "CAIRN_LIMIT_UPLOAD"),
        ("--limit-download", "CAIRN_LIMIT_DOWNLOAD"),
    ] {
        let (code, _, err) = run(env.cairn(&[&repo]).args(["init", flag, "0"]));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(flag), "{err}");
        let (code, _, err) = run(env.cairn(&[&repo]).env(var, "0").arg("init"));
        assert_eq!(code, 2, "{err}");
    }
    // The same in cairn.toml, per backend.
    let cfg = env.path("cairn.toml");
    for bad in ["0", "\"fast\""] {
        std::fs::write(
            &cfg,
            format!(
                "[backends.r]\nurl = \"{}\"\nlimit_upload = {bad}\n",
                repo.display()
            ),
        )
        .unwrap();
        let (code, _, err) = run(env.cairn(&[]).arg("--config").arg(&cfg).arg("init"));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("limit_upload"), "{err}");
    }
    assert!(!repo.exists());
    std::fs::write(
        &cfg,
        format!(
            "[backends.r]\nurl = \"{}\"\nlimit_upload = 100000\nlimit_download = 100000\n",
            repo.display()
        ),
    )
    .unwrap();
    let (code, _, err) =
        run(env
            .cairn(&[])
            .arg("--config")
            .arg(&cfg)
            .args(["init", "--kdf-memory-kib", "8192"]));
    assert_eq!(code, 0, "{err}");
}

// ---------------------------------------------------------------------------
// 3: corruption of one replica
// ---------------------------------------------------------------------------

/// Size of `victim.bin`: below the minimum chunk size, so one blob, and a
/// raw length no other blob of the fixture has.
const VICTIM_LEN: usize = 400_000;

/// Two replicas with two snapshots: A of `src` (make_tree plus
/// `victim.bin`), then B of `src2` (new files plus `victim-copy.bin`, whose
/// only blob was stored by A and is listed in A's index file).
struct Fixture {
    env: Env,
    r1: PathBuf,
    r2: PathBuf,
    src: PathBuf,
    src2: PathBuf,
    snap_a: String,
    snap_b: String,
    /// The index file written by backup A.
    index_a: String,
    /// The blob of victim.bin.
    victim: Blob,
}

impl Fixture {
    fn new() -> Fixture {
        let env = Env::new();
        let (r1, r2) = (env.path("r1"), env.path("r2"));
        // Small packs, so one damaged pack is not all the data.
        init_with(&env, &[&r1, &r2], 1);
        let src = env.path("src");
        make_tree(&src, 3 << 20);
        fs::write(src.join("victim.bin"), noise(77, VICTIM_LEN)).unwrap();
        for i in 0..6 {
            fs::write(src.join(format!("extra-{i}.bin")), noise(100 + i, 250_000)).unwrap();
        }
        let (code, a) = env.backup_json(&[&r1, &r2], &[src.as_os_str()]);
        assert_eq!(code, 0, "{a}");
        let index_a = files_in(&r1, "index");
        assert_eq!(index_a.len(), 1);
        let index_a = name_of(&index_a[0]);

        let src2 = env.path("src2");
        fs::create_dir_all(&src2).unwrap();
        fs::write(src2.join("fresh.bin"), noise(200, 700_000)).unwrap();
        fs::write(src2.join("fresh.txt"), "new\n".repeat(1000)).unwrap();
        fs::write(src2.join("victim-copy.bin"), noise(77, VICTIM_LEN)).unwrap();
        let (code, b) = env.backup_json(&[&r1, &r2], &[src2.as_os_str()]);
        assert_eq!(code, 0, "{b}");
        assert_eq!(files_in(&r1, "index").len(), 2);

        let victims: Vec<Blob> = index_blobs(&env, &r1)
            .into_iter()
            .filter(|b| b.kind == "data" && b.raw_len == VICTIM_LEN)
            .collect();
        assert_eq!(victims.len(), 1, "{victims:?}");
        Fixture {
            snap_a: a["snapshot"].as_str().unwrap().to_string(),
            snap_b: b["snapshot"].as_str().unwrap().to_string(),
            victim: victims[0].clone(),
            index_a,
            env,
            r1,
            r2,
            src,
            src2,
        }
    }

    fn victim_file(&self) -> String {
        format!("file {}", self.src.join("victim.bin").display())
    }

    fn victim_copy_file(&self) -> String {
        format!("file {}", self.src2.join("victim-copy.bin").display())
    }

    /// `repo` alone checks clean (reading every pack) and restores both
    /// snapshots identically.
    fn assert_whole(&self, repo: &Path) {
        let (code, out, err) = check(&self.env, &[repo], true);
        assert_eq!(
            code,
            0,
            "{} does not check clean: {out}{err}",
            repo.display()
        );
        assert!(out.contains("no errors"), "{out}");
        self.assert_restores(&[repo]);
    }

    /// Both snapshots restore from `repos` with exit 0, identically.
    fn assert_restores(&self, repos: &[&Path]) {
        for (snap, src) in [(&self.snap_a, &self.src), (&self.snap_b, &self.src2)] {
            let t = fresh(&self.env, "restore");
            let (code, _, err) = restore(&self.env, repos, snap, &t);
            assert_eq!(code, 0, "restore {snap} from {repos:?}: {err}");
            assert_same_tree(src, &restored(&t, src));
        }
    }

    /// Restore `snap` of `src` from `repo` alone: exit 3, the failed files
    /// named, every other entry identical. Returns the failed entries.
    fn restore_damaged(&self, repo: &Path, snap: &str, src: &Path) -> Vec<PathBuf> {
        let t = fresh(&self.env, "restore");
        let (code, _, err) = restore(&self.env, &[repo], snap, &t);
        assert_eq!(
            code,
            3,
            "restore from the damaged {}: {err}",
            repo.display()
        );
        let broken = compare_restore(src, &t, &err);
        assert!(!broken.is_empty(), "exit 3 but nothing named: {err}");
        broken
    }
}

#[test]
fn bit_flip_anywhere_in_a_pack_is_caught() {
    let f = Fixture::new();
    let (bad, good) = (&f.r2, &f.r1);
    let v = &f.victim;
    let pack = bad.join(pack_rel(&v.pack));
    let in_pack: Vec<Blob> = index_blobs(&f.env, bad)
        .into_iter()
        .filter(|b| b.pack == v.pack)
        .collect();
    let orig = fs::read(&pack).unwrap();
    let len = orig.len();
    let mut rng = Rng(seed(0xB17F11B));
    // The header, the victim's first, middle and last byte, the footer and
    // its length field, and random places.
    let mut positions = vec![
        0,
        41,
        v.offset,
        v.offset + v.stored_len / 2,
        v.offset + v.stored_len - 1,
        len - 20,
        len - 1,
    ];
    positions.extend((0..10).map(|_| rng.below(len)));
    for pos in positions {
        flip_byte(&pack, pos);
        let (code, out, err) = check(&f.env, &[bad], true);
        assert_eq!(
            code, 5,
            "a flip at byte {pos} of {len} was not caught: {out}{err}"
        );
        assert!(
            out.contains(&format!("error: {}: ", pack_rel(&v.pack))),
            "flip at {pos}: the pack is not named: {out}"
        );
        // A flip inside a blob loses that blob: the files that need it are
        // named (by path for the victim, by blob for the others). A flip
        // in the header or footer loses no data (the index holds both).
        if let Some(b) = in_pack
            .iter()
            .find(|b| (b.offset..b.offset + b.stored_len).contains(&pos))
        {
            let short = &b.id[..8];
            assert!(
                out.lines().any(|l| l.contains("snapshot ")
                    && (l.contains(": file /") || l.contains(": directory /"))
                    && l.contains(&format!("blob {short} "))),
                "flip at {pos} in blob {short}: no file or directory is named: {out}"
            );
            if b.id == v.id {
                assert!(out.contains(&f.victim_file()), "flip at {pos}: {out}");
                assert!(out.contains(&f.victim_copy_file()), "flip at {pos}: {out}");
            }
        } else {
            assert!(
                !out.contains("snapshot "),
                "flip at {pos} outside every blob, yet a file is reported lost: {out}"
            );
        }
        fs::write(&pack, &orig).unwrap();
    }
    assert_eq!(check(&f.env, &[bad], true).0, 0);

    // Damage the victim's blob for good.
    flip_byte(&pack, v.offset + v.stored_len / 3);
    let (code, out, _) = check(&f.env, &[bad], true);
    assert_eq!(code, 5, "{out}");
    // Exactly the two files that share the blob are lost on this replica.
    let lost: Vec<&str> = out.lines().filter(|l| l.contains(": file /")).collect();
    assert_eq!(lost.len(), 2, "{out}");
    assert!(
        out.contains(&f.victim_file()) && out.contains(&f.victim_copy_file()),
        "{out}"
    );
    // The other replica is whole; both together restore everything, the
    // damaged one first (its blob fails, the other copy is used).
    f.assert_whole(good);
    f.assert_restores(&[bad, good]);
    // The damaged replica alone loses exactly the files of that blob.
    assert_eq!(
        f.restore_damaged(bad, &f.snap_a, &f.src),
        [PathBuf::from("victim.bin")]
    );
    assert_eq!(
        f.restore_damaged(bad, &f.snap_b, &f.src2),
        [PathBuf::from("victim-copy.bin")]
    );
}

#[test]
fn damaged_tree_blob_names_the_directory_and_the_rest_restores() {
    let f = Fixture::new();
    let (bad, good) = (&f.r1, &f.r2);
    // The smallest tree blob is the empty tree of `empty-dir`.
    let tree = index_blobs(&f.env, bad)
        .into_iter()
        .filter(|b| b.kind == "tree")
        .min_by_key(|b| b.raw_len)
        .unwrap();
    flip_byte(&bad.join(pack_rel(&tree.pack)), tree.offset + 3);
    let (code, out, _) = check(&f.env, &[bad], true);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains(&pack_rel(&tree.pack)), "{out}");
    let dir = format!("directory {}", f.src.join("empty-dir").display());
    assert!(out.contains(&dir), "{out}");
    f.assert_whole(good);
    f.assert_restores(&[bad, good]);
    // Alone, the directory is named and everything else restored.
    assert_eq!(
        f.restore_damaged(bad, &f.snap_a, &f.src),
        [PathBuf::from("empty-dir")]
    );
}

#[test]
fn truncated_pack_is_reported_and_the_rest_restores() {
    let f = Fixture::new();
    let (bad, good) = (&f.r1, &f.r2);
    let v = &f.victim;
    let pack = bad.join(pack_rel(&v.pack));
    fs::File::options()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len((v.offset + v.stored_len / 2) as u64)
        .unwrap();
    // The structure check alone sees it (the size differs from the index).
    for read_data in [false, true] {
        let (code, out, _) = check(&f.env, &[bad], read_data);
        assert_eq!(code, 5, "{out}");
        assert!(out.contains(&pack_rel(&v.pack)), "{out}");
        assert!(out.contains("truncated"), "{out}");
        assert!(out.contains(&f.victim_file()), "{out}");
    }
    f.assert_whole(good);
    f.assert_restores(&[bad, good]);
    let broken = f.restore_damaged(bad, &f.snap_a, &f.src);
    assert!(broken.contains(&PathBuf::from("victim.bin")), "{broken:?}");
}

#[test]
fn missing_pack_is_reported_and_the_rest_restores() {
    let f = Fixture::new();
    let (bad, good) = (&f.r2, &f.r1);
    let v = &f.victim;
    fs::remove_file(bad.join(pack_rel(&v.pack))).unwrap();
    let (code, out, _) = check(&f.env, &[bad], false);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains(&pack_rel(&v.pack)), "{out}");
    assert!(out.contains("missing"), "{out}");
    assert!(out.contains(&f.victim_file()), "{out}");
    assert!(out.contains(&f.victim_copy_file()), "{out}");
    f.assert_whole(good);
    f.assert_restores(&[bad, good]);
    let broken = f.restore_damaged(bad, &f.snap_a, &f.src);
    assert!(broken.contains(&PathBuf::from("victim.bin")), "{broken:?}");
    assert_eq!(
        f.restore_damaged(bad, &f.snap_b, &f.src2),
        [PathBuf::from("victim-copy.bin")]
    );
}

/// After damage to A's index file on `bad`: snapshot B restores from `bad`
/// alone except the file whose blob only A's index lists; A (whose trees
/// are listed there too) cannot be restored from `bad` alone; a new backup
/// to `bad` alone works and stores the data again.
fn after_index_damage(f: &Fixture, bad: &Path, good: &Path) {
    f.assert_whole(good);
    f.assert_restores(&[bad, good]);
    assert_eq!(
        f.restore_damaged(bad, &f.snap_b, &f.src2),
        [PathBuf::from("victim-copy.bin")]
    );
    let t = fresh(&f.env, "restore");
    let (code, _, err) = restore(&f.env, &[bad], &f.snap_a, &t);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in no index"), "{err}");

    let (code, sum) = f.env.backup_json(&[bad], &[f.src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    let t = fresh(&f.env, "restore");
    let (code, _, err) = restore(&f.env, &[bad], "latest", &t);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&f.src, &restored(&t, &f.src));
}

#[test]
fn bit_flipped_index_file_is_reported_and_nothing_is_lost() {
    let f = Fixture::new();
    let (bad, good) = (&f.r1, &f.r2);
    flip_byte(&bad.join("index").join(&f.index_a), 100);
    let (code, out, _) = check(&f.env, &[bad], false);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains(&format!("index/{}", f.index_a)), "{out}");
    assert!(out.contains(&f.victim_copy_file()), "{out}");
    // Restoring names the unreadable index file.
    let t = fresh(&f.env, "restore");
    let (_, _, err) = restore(&f.env, &[bad], &f.snap_b, &t);
    assert!(err.contains(&format!("index/{}", f.index_a)), "{err}");
    after_index_damage(&f, bad, good);
}

#[test]
fn missing_index_file_is_reported_and_nothing_is_lost() {
    let f = Fixture::new();
    let (bad, good) = (&f.r2, &f.r1);
    fs::remove_file(bad.join("index").join(&f.index_a)).unwrap();
    // The missing file itself cannot be named (nothing else records its
    // name); what it listed is reported: the files and trees that need it,
    // and the packs no index lists any more.
    let (code, out, _) = check(&f.env, &[bad], false);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains(&f.victim_copy_file()), "{out}");
    assert!(out.contains("is in no index"), "{out}");
    assert!(out.contains("pack(s) are in no index"), "{out}");
    after_index_damage(&f, bad, good);
}

#[test]
fn bit_flipped_snapshot_is_reported_and_nothing_else_is_lost() {
    let f = Fixture::new();
    let (bad, good) = (&f.r1, &f.r2);
    flip_byte(&bad.join("snapshots").join(&f.snap_a), 50);
    let (code, out, _) = check(&f.env, &[bad], false);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains(&format!("snapshots/{}", f.snap_a)), "{out}");
    f.assert_whole(good);
    // The other replica's copy is used when both are given.
    f.assert_restores(&[bad, good]);
    // Alone, the damaged snapshot is gone (and named), the other one is not.
    let t = fresh(&f.env, "restore");
    let (code, _, err) = restore(&f.env, &[bad], &f.snap_a, &t);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("snapshots/{}", f.snap_a)), "{err}");
    let t = fresh(&f.env, "restore");
    let (code, _, err) = restore(&f.env, &[bad], &f.snap_b, &t);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&f.src2, &restored(&t, &f.src2));
    // Backups to the damaged replica go on.
    let (code, sum) = f.env.backup_json(&[bad], &[f.src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    let t = fresh(&f.env, "restore");
    let (code, _, err) = restore(&f.env, &[bad], "latest", &t);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&f.src, &restored(&t, &f.src));
}

#[test]
fn missing_snapshot_is_visible_across_replicas_and_nothing_else_is_lost() {
    let f = Fixture::new();
    let (bad, good) = (&f.r2, &f.r1);
    fs::remove_file(bad.join("snapshots").join(&f.snap_a)).unwrap();
    // NOTE: a snapshot file that is gone leaves nothing behind on its own
    // replica to point at it (its packs are still indexed, its trees still
    // readable), so `check` of that replica alone cannot call it damage:
    // it is what a replica that missed a backup (exit 4 at the time) looks
    // like. The loss is visible when the replicas are listed together.
    let (code, out, _) = check(&f.env, &[bad], true);
    assert_eq!(code, 0, "{out}");
    let (code, out, err) = run(f.env.cairn(&[good, bad]).args(["--json", "snapshots"]));
    assert_eq!(code, 0, "{err}");
    let list = last_json(out.as_bytes());
    let a = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == f.snap_a.as_str())
        .unwrap();
    assert_eq!(
        a["replicas"],
        serde_json::json!([good.display().to_string()])
    );
    let (_, out, _) = run(f.env.cairn(&[good, bad]).arg("snapshots"));
    assert!(
        out.contains(&format!("missing on: {}", bad.display())),
        "{out}"
    );

    f.assert_whole(good);
    f.assert_restores(&[bad, good]);
    let t = fresh(&f.env, "restore");
    let (code, _, err) = restore(&f.env, &[bad], &f.snap_a, &t);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no snapshot matches"), "{err}");
    let t = fresh(&f.env, "restore");
    let (code, _, err) = restore(&f.env, &[bad], &f.snap_b, &t);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&f.src2, &restored(&t, &f.src2));
}

// ---------------------------------------------------------------------------
// 4: SIGKILL at random points
// ---------------------------------------------------------------------------

#[test]
fn sigkill_at_random_points_leaves_consistent_repositories() {
    const ITERATIONS: usize = 15;
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 6 << 20);
    for i in 0..6 {
        fs::write(src.join(format!("medium-{i}.bin")), noise(300 + i, 3 << 20)).unwrap();
    }
    fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..150 {
        let data = noise(1000 + i, 1000 + 130 * i as usize);
        fs::write(src.join(format!("many/small-{i:03}")), data).unwrap();
    }
    let backup = |r1: &Path, r2: &Path| {
        let mut c = env.cairn(&[r1, r2]);
        c.arg("backup").arg("--quiet").arg(&src);
        c
    };

    // How long a whole backup takes here.
    let (m1, m2) = (env.path("measure-1"), env.path("measure-2"));
    init_with(&env, &[&m1, &m2], 2);
    let started = Instant::now();
    backup(&m1, &m2).assert().success();
    let full = started.elapsed();
    fs::remove_dir_all(&m1).unwrap();
    fs::remove_dir_all(&m2).unwrap();
    eprintln!("a whole backup takes {full:?}");

    let mut rng = Rng(seed(0x5161_4B11));
    let mut killed = 0;
    let mut keep: Option<(PathBuf, PathBuf)> = None;
    for i in 0..ITERATIONS {
        let (r1, r2) = (env.path(&format!("k{i}-1")), env.path(&format!("k{i}-2")));
        init_with(&env, &[&r1, &r2], 2);
        // Spread over the run (and a little past it), one per stratum.
        let delay = full.mul_f64((i as f64 + rng.unit()) / ITERATIONS as f64 * 1.1);
        let mut child = std_command(&backup(&r1, &r2))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let interrupted = match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "backup failed on its own: {status}");
                false
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
                true
            }
        };
        eprintln!("iteration {i}: delay {delay:?}, killed: {interrupted}");
        for r in [&r1, &r2] {
            let (code, out, err) = check(&env, &[r], true);
            assert_eq!(
                code,
                0,
                "iteration {i}: {} is inconsistent after SIGKILL at {delay:?}: {out}{err}",
                r.display()
            );
        }
        if interrupted {
            if let Some((o1, o2)) = keep.replace((r1, r2)) {
                fs::remove_dir_all(o1).unwrap();
                fs::remove_dir_all(o2).unwrap();
            }
        } else {
            fs::remove_dir_all(&r1).unwrap();
            fs::remove_dir_all(&r2).unwrap();
        }
    }
    eprintln!("{killed} of {ITERATIONS} backups killed in flight");
    assert!(killed >= ITERATIONS / 3, "too few kills landed in a backup");

    // A backup over the debris of the last kill completes, and each replica
    // alone restores the source.
    let (r1, r2) = keep.unwrap();
    backup(&r1, &r2).assert().success();
    for r in [&r1, &r2] {
        let (code, out, err) = check(&env, &[r], true);
        assert_eq!(code, 0, "{out}{err}");
        let t = fresh(&env, "restore");
        let (code, _, err) = restore(&env, &[r], "latest", &t);
        assert_eq!(code, 0, "{err}");
        assert_same_tree(&src, &restored(&t, &src));
    }
}

/// Version `n` of a small source: a part every version shares, a part
/// that changes with `n`, and files that come and go.
fn write_version(dir: &Path, n: u64) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("same")).unwrap();
    fs::create_dir_all(dir.join("moving")).unwrap();
    for i in 0..6u64 {
        fs::write(dir.join(format!("same/s{i}")), noise(7000 + i, 30 << 10)).unwrap();
        fs::write(
            dir.join(format!("moving/m{i}")),
            noise(n * 100 + i, 30 << 10),
        )
        .unwrap();
    }
    fs::write(dir.join("big"), noise(9000 + n % 3, 700 << 10)).unwrap();
}

/// SIGKILL at random points of forget, prune's mark and repack, and its
/// delete phase, 20 trials on two replicas. After each kill both replicas
/// check clean; at the end every snapshot that is left restores, from
/// each replica alone, exactly as it was backed up.
#[test]
fn sigkill_during_forget_and_prune_leaves_consistent_repositories() {
    const TRIALS: u64 = 20;
    let env = Env::new();
    let src = env.path("src");
    let (r1, r2) = (env.path("p1"), env.path("p2"));
    init_with(&env, &[&r1, &r2], 1);
    let mut version_of: BTreeMap<String, u64> = BTreeMap::new();
    let ops: [&[&str]; 4] = [
        &["forget", "--keep-last", "3"],
        &["prune", "--max-unused", "0"],
        &["prune", "--grace", "0", "--max-unused", "0"],
        &[
            "forget",
            "--keep-last",
            "3",
            "--prune",
            "--grace",
            "0",
            "--max-unused",
            "0",
        ],
    ];
    // How long each operation took when it was not killed.
    let mut took = [Duration::from_millis(400); 4];
    let mut rng = Rng(seed(0x9121_4E55));
    let mut killed = 0;
    for i in 0..TRIALS {
        write_version(&src, i);
        let (code, sum) = env.backup_json(&[&r1, &r2], &[src.as_os_str()]);
        assert_eq!(code, 0, "{sum}");
        version_of.insert(sum["snapshot"].as_str().unwrap().to_string(), i);
        let op = (i % 4) as usize;
        let mut c = env.cairn(&[&r1, &r2]);
        c.args(ops[op]);
        let delay = took[op].mul_f64(rng.unit() * 0.9);
        let started = Instant::now();
        let mut child = std_command(&c)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let interrupted = match child.try_wait().unwrap() {
            Some(status) => {
                assert!(
                    status.success(),
                    "{:?} failed on its own: {status}",
                    ops[op]
                );
                took[op] = started.elapsed();
                false
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                true
            }
        };
        eprintln!(
            "trial {i}: {:?} after {delay:?}, killed: {interrupted}",
            ops[op]
        );
        for r in [&r1, &r2] {
            let (code, out, err) = check(&env, &[r], false);
            assert_eq!(
                code,
                0,
                "trial {i}: {} is inconsistent after SIGKILL of {:?} at {delay:?}: {out}{err}",
                r.display(),
                ops[op]
            );
        }
    }
    eprintln!("{killed} of {TRIALS} operations killed in flight");
    assert!(killed >= TRIALS / 3, "too few kills landed");

    // The debris is collected by a prune that runs to the end.
    env.cairn(&[&r1, &r2])
        .args(["prune", "--grace", "0", "--max-unused", "0"])
        .assert()
        .success();
    for r in [&r1, &r2] {
        let (code, out, err) = check(&env, &[r], true);
        assert_eq!(code, 0, "{out}{err}");
        let left: Vec<String> = files_in(r, "snapshots")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(left.len() >= 3, "{left:?}");
        for id in left {
            let n = version_of[&id];
            let expect = env.path(&format!("expect-{n}"));
            if !expect.exists() {
                write_version(&expect, n);
            }
            let t = fresh(&env, "restore");
            let (code, _, err) = restore(&env, &[r], &id, &t);
            assert_eq!(code, 0, "{err}");
            let got = restored(&t, &src);
            // Contents only: `expect` was written later than the backup.
            for e in fs::read_dir(&expect).unwrap() {
                let dir = e.unwrap().path();
                let name = dir.file_name().unwrap().to_owned();
                let files: Vec<PathBuf> = if dir.is_dir() {
                    fs::read_dir(&dir)
                        .unwrap()
                        .map(|f| f.unwrap().path())
                        .collect()
                } else {
                    vec![dir.clone()]
                };
                for f in files {
                    let rel = f.strip_prefix(&expect).unwrap();
                    assert!(
                        fs::read(&f).unwrap() == fs::read(got.join(rel)).unwrap(),
                        "snapshot {id} (version {n}) on {}: {} differs",
                        r.display(),
                        rel.display()
                    );
                }
                assert!(got.join(&name).exists());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 5, 6: one replica cannot be written
// ---------------------------------------------------------------------------

/// Unmounts a file system when dropped (also when the test panics).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

#[test]
fn disk_full_on_one_replica() {
    let env = Env::new();
    let mnt = env.path("small-disk");
    fs::create_dir_all(&mnt).unwrap();
    let mounted = is_root(&env)
        && std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(&mnt)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        cairn::backends::conformance::loud_skip("SKIPPED: disk-full test needs root + tmpfs");
        return;
    }
    let _unmount = Unmount(mnt.clone());

    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("incompressible.bin"), noise(5, 10 << 20)).unwrap();
    fs::write(src.join("small.txt"), "small\n").unwrap();
    let (r1, r2) = (env.path("r1"), mnt.join("r2"));
    env.init(&[&r1, &r2]);
    let (code, sum) = env.backup_json(&[&r1, &r2], &[src.as_os_str()]);
    assert_eq!(code, 4, "{sum}");
    assert_eq!(sum["replicas"][0]["ok"], true, "{sum}");
    assert_eq!(sum["replicas"][1]["ok"], false, "{sum}");
    assert_eq!(sum["replicas"][1]["name"], r2.display().to_string());
    let error = sum["replicas"][1]["error"].as_str().unwrap();
    assert!(
        error.contains("storage full") || error.contains("No space"),
        "{error}"
    );
    let id = sum["snapshot"].as_str().unwrap();
    assert!(r1.join("snapshots").join(id).exists());
    // The full replica got no snapshot and no index of this run: nothing
    // there refers to the packs that did not fit.
    assert!(files_in(&r2, "snapshots").is_empty());
    assert!(files_in(&r2, "index").is_empty());
    let (code, out, err) = check(&env, &[&r2], true);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = check(&env, &[&r1], true);
    assert_eq!(code, 0, "{out}{err}");
    let t = fresh(&env, "restore");
    let (code, _, err) = restore(&env, &[&r1], "latest", &t);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn unwritable_replica_fails_alone() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    let (r1, r2) = (env.path("r1"), env.path("r2"));
    env.init(&[&r1, &r2]);
    // Permissions do not stop root, so break the directory structure.
    fs::remove_dir_all(r2.join("data")).unwrap();
    fs::write(r2.join("data"), "not a directory").unwrap();

    let (code, sum) = env.backup_json(&[&r1, &r2], &[src.as_os_str()]);
    assert_eq!(code, 4, "{sum}");
    assert_eq!(sum["replicas"][0]["ok"], true, "{sum}");
    assert_eq!(sum["replicas"][1]["ok"], false, "{sum}");
    assert_eq!(sum["replicas"][1]["name"], r2.display().to_string());
    assert!(
        sum["replicas"][1]["error"]
            .as_str()
            .unwrap()
            .contains(&r2.display().to_string()),
        "{sum}"
    );
    // The human summary names it too.
    let (code, out, err) = run(env.cairn(&[&r1, &r2]).arg("backup").arg(&src));
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains(&format!("{}: FAILED", r2.display())), "{out}");
    assert!(out.contains(&format!("{}: ok", r1.display())), "{out}");
    assert_eq!(files_in(&r1, "snapshots").len(), 2);
    assert!(files_in(&r2, "snapshots").is_empty());
    assert!(files_in(&r2, "index").is_empty());
    let t = fresh(&env, "restore");
    let (code, _, err) = restore(&env, &[&r1], "latest", &t);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &restored(&t, &src));

    // Repaired, the replica catches up with the next backup.
    fs::remove_file(r2.join("data")).unwrap();
    fs::create_dir(r2.join("data")).unwrap();
    let (code, sum) = env.backup_json(&[&r1, &r2], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    let (code, out, err) = check(&env, &[&r2], true);
    assert_eq!(code, 0, "{out}{err}");
    let t = fresh(&env, "restore");
    let (code, _, err) = restore(&env, &[&r2], "latest", &t);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &restored(&t, &src));
}

// ---------------------------------------------------------------------------
// 7, 8, 9: awkward sources
// ---------------------------------------------------------------------------

#[test]
fn unreadable_files_make_a_partial_snapshot() {
    let env = Env::new();
    let root = is_root(&env);
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    let locked_file = src.join("docs/locked-file");
    let locked_dir = src.join("locked-dir");
    fs::write(&locked_file, "you cannot read me").unwrap();
    fs::create_dir_all(locked_dir.join("sub")).unwrap();
    fs::write(locked_dir.join("inside"), "nor me").unwrap();
    let repo = env.path("repo");

    // Root reads everything: run cairn as `nobody`, owning the tree.
    let nobody = root
        && std::process::Command::new("setpriv")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if root && !nobody {
        cairn::backends::conformance::loud_skip(
            "SKIPPED: unreadable-files test as root needs setpriv",
        );
        return;
    }
    let cmd = |repos: &[&Path]| {
        let c = env.cairn(repos);
        if nobody {
            as_nobody(&c)
        } else {
            c
        }
    };
    if nobody {
        fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(&repo).unwrap();
        for top in [&src, &repo] {
            let mut stack = vec![top.to_path_buf()];
            while let Some(p) = stack.pop() {
                std::os::unix::fs::lchown(&p, Some(65534), Some(65534)).unwrap();
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    for e in fs::read_dir(&p).unwrap() {
                        stack.push(e.unwrap().path());
                    }
                }
            }
        }
    }
    cmd(&[&repo])
        .args(["init", "--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
        .assert()
        .success();
    let dir_mtime = fs::metadata(&locked_dir).unwrap().modified().unwrap();
    fs::set_permissions(&locked_file, fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(&locked_dir, fs::Permissions::from_mode(0o000)).unwrap();

    let (code, out, err) = run(cmd(&[&repo]).arg("backup").arg(&src));
    assert_eq!(code, 3, "{out}{err}");
    for p in [&locked_file, &locked_dir] {
        assert!(
            err.contains(&format!("could not back up {}", p.display())),
            "{} is not named: {err}",
            p.display()
        );
    }
    let (code, out, err) = run(cmd(&[&repo]).args(["--json", "snapshots"]));
    assert_eq!(code, 0, "{err}");
    let snaps = last_json(out.as_bytes());
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["partial"], true, "{snaps}");
    let errors = snaps[0]["errors"].to_string();
    assert!(
        errors.contains("locked-file") && errors.contains("locked-dir"),
        "{errors}"
    );

    // Everything else restores; the unreadable directory comes back empty
    // with its metadata, the unreadable file not at all.
    let t = fresh(&env, "restore");
    let (code, _, err) = run(env
        .cairn(&[&repo])
        .args(["restore", "latest", "--target"])
        .arg(&t));
    assert_eq!(code, 0, "{err}");
    let back = restored(&t, &src);
    assert!(!back.join("docs/locked-file").exists());
    let d = fs::metadata(back.join("locked-dir")).unwrap();
    assert!(d.is_dir());
    assert_eq!(d.permissions().mode() & 0o777, 0);
    assert_eq!(d.modified().unwrap(), dir_mtime);
    // Compare the rest (chmod does not touch mtimes).
    fs::set_permissions(&locked_dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(back.join("locked-dir"), fs::Permissions::from_mode(0o755)).unwrap();
    let got: BTreeMap<PathBuf, Entry> = snapshot_of(&back).into_iter().collect();
    let mut expected = 0;
    for (rel, want) in snapshot_of(&src) {
        let locked = Path::new("locked-dir");
        if rel == Path::new("docs/locked-file") || (rel.starts_with(locked) && rel != locked) {
            assert!(!got.contains_key(&rel), "{} was restored", rel.display());
            continue;
        }
        assert_eq!(got.get(&rel), Some(&want), "{} differs", rel.display());
        expected += 1;
    }
    assert_eq!(got.len(), expected);
}

#[test]
fn fifo_and_socket_are_recorded_not_read() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("before"), "regular file\n").unwrap();
    let fifo = src.join("pipe");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    // Nobody ever writes to the FIFO: opening it to read would hang.
    let _listener = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    fs::write(src.join("zafter"), "another regular file\n").unwrap();

    let repo = env.path("repo");
    env.init(&[&repo]);
    let started = Instant::now();
    let out = env
        .cairn(&[&repo])
        .arg("backup")
        .arg("--json")
        .arg(&src)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "backup hung or failed after {:?}: {}",
        started.elapsed(),
        text(&out.stderr)
    );
    let sum = last_json(&out.stdout);
    assert_eq!(sum["partial"], false, "{sum}");
    assert_eq!(sum["summary"]["other_entries"], 2, "{sum}");

    let (code, out, err) = run(env.cairn(&[&repo]).args(["--json", "ls", "latest"]));
    assert_eq!(code, 0, "{err}");
    let ls = last_json(out.as_bytes());
    let kind = |name: &str| {
        let p = src.join(name).display().to_string();
        ls.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == p.as_str())
            .map(|e| e["type"].clone())
    };
    assert_eq!(kind("pipe"), Some(serde_json::json!("fifo")));
    assert_eq!(kind("sock"), Some(serde_json::json!("socket")));

    let t = fresh(&env, "restore");
    let (code, _, err) = run(env
        .cairn(&[&repo])
        .args(["restore", "latest", "--target"])
        .arg(&t)
        .timeout(Duration::from_secs(120)));
    assert_eq!(code, 0, "{err}");
    let back = restored(&t, &src);
    assert!(fs::symlink_metadata(back.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    for f in ["before", "zafter"] {
        assert_eq!(
            fs::read(back.join(f)).unwrap(),
            fs::read(src.join(f)).unwrap()
        );
    }
}

#[test]
fn huge_sparse_file_is_stored_small_and_restored_sparse() {
    const SIZE: u64 = 4 << 30;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let img = src.join("disk.img");
    let pieces: [(u64, &[u8]); 2] = [
        (1 << 30, b"data in the middle of nowhere"),
        (SIZE - 8, b"THE END!"),
    ];
    {
        let mut f = fs::File::create(&img).unwrap();
        f.set_len(SIZE).unwrap();
        for (at, bytes) in pieces {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(bytes).unwrap();
        }
    }
    assert_eq!(fs::metadata(&img).unwrap().len(), SIZE);
    let allocated = fs::metadata(&img).unwrap().blocks() * 512;
    if allocated > SIZE / 64 {
        cairn::backends::conformance::loud_skip(
            "SKIPPED: the temporary file system does not keep files sparse",
        );
        return;
    }

    let repo = env.path("repo");
    env.init(&[&repo]);
    let started = Instant::now();
    let (code, sum) = env.backup_json(&[&repo], &[src.as_os_str()]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{sum}");
    let stored = disk_usage(&repo);
    eprintln!("backup of a {SIZE}-byte sparse file: {took:?}, repository {stored} bytes");
    assert!(stored < 20 << 20, "the repository takes {stored} bytes");
    assert_eq!(sum["summary"]["total_bytes"], SIZE);

    let t = fresh(&env, "restore");
    let started = Instant::now();
    let (code, _, err) = restore(&env, &[&repo], "latest", &t);
    eprintln!("restore: {:?}", started.elapsed());
    assert_eq!(code, 0, "{err}");
    let back = restored(&t, &src).join("disk.img");
    let m = fs::metadata(&back).unwrap();
    assert_eq!(m.len(), SIZE);
    assert!(
        m.blocks() * 512 < SIZE / 64,
        "the restored file is not sparse: {} bytes allocated",
        m.blocks() * 512
    );
    assert_eq!(m.mtime(), fs::metadata(&img).unwrap().mtime());
    // Reading a 4 GiB hole is slow on some machines: the source is not read
    // again but its content, known by construction, hashed from memory.
    let started = Instant::now();
    assert_eq!(
        hash_file(&back),
        hash_sparse(SIZE, &pieces),
        "restored content differs"
    );
    eprintln!("comparing: {:?}", started.elapsed());
}

/// With no passphrase source set, a missing repository is reported before
/// anyone is asked to type a passphrase.
#[test]
fn no_repository_is_reported_before_the_passphrase_is_asked() {
    let env = Env::new();
    let nothing = env.path("nothing");
    let out = env
        .cairn(&[&nothing])
        .env_remove("CAIRN_PASSWORD")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no cairn repository"), "{err}");
    assert!(!err.contains("passphrase"), "{err}");
}

// ---------------------------------------------------------------------------
// Hostile key slots
// ---------------------------------------------------------------------------

/// Someone with write access to the storage plants key slots that ask for
/// absurd Argon2 costs, or a huge object in keys/: commands still open the
/// repository with the right passphrase, and say what they skipped.
#[test]
fn planted_key_slots_with_absurd_costs_are_skipped_with_a_warning() {
    let env = Env::new();
    let repo = env.path("repo");
    let src = env.path("src");
    make_tree(&src, 1 << 16);
    env.init(&[&repo]);
    let slots = files_in(&repo, "keys");
    let mut slot: serde_json::Value =
        serde_json::from_slice(&fs::read(&slots[0]).unwrap()).unwrap();
    for (i, (mem, iters)) in [(u32::MAX, 1u32), (8192, u32::MAX)].into_iter().enumerate() {
        slot["params"]["memory_kib"] = mem.into();
        slot["params"]["iterations"] = iters.into();
        let name = format!("{}{i}", "0".repeat(63));
        fs::write(repo.join("keys").join(name), slot.to_string()).unwrap();
    }
    fs::write(repo.join("keys").join("1".repeat(64)), vec![b' '; 1 << 20]).unwrap();
    // The right passphrase opens the repository, whichever slot the
    // listing gives first.
    let out = env
        .cairn(&[&repo])
        .arg("backup")
        .arg(&src)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // A wrong one tries every slot: each planted one is named and skipped,
    // nothing aborts, and the answer is "wrong passphrase".
    let out = env
        .cairn(&[&repo])
        .env("CAIRN_PASSWORD", "not the passphrase")
        .arg("snapshots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(12), "{err}");
    assert_eq!(err.matches("over the limits").count(), 2, "{err}");
    assert!(err.contains("not a key slot"), "{err}");
}

/// A 3 GiB object planted in `snapshots/`, `index/`, `keys/`, `locks/` and
/// `data/` (sparse files, so the test writes nothing) is named and ignored
/// without being read: the listing's size is checked before any download,
/// and no command's memory grows with it.
#[test]
fn huge_planted_objects_are_ignored_before_download() {
    const RSS_LIMIT_KIB: u64 = 256 << 10;
    let env = Env::new();
    let repo = env.path("repo");
    let src = env.path("src");
    make_tree(&src, 1 << 16);
    env.init(&[&repo]);
    env.cairn(&[&repo])
        .args(["backup", "--quiet"])
        .arg(&src)
        .assert()
        .success();
    let name = "f".repeat(64);
    let planted = |dir: &str| {
        if dir == "data" {
            format!("data/ff/{name}")
        } else {
            format!("{dir}/{name}")
        }
    };
    for dir in ["snapshots", "index", "locks", "keys", "data"] {
        let p = repo.join(planted(dir));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::File::create(p).unwrap().set_len(3 << 30).unwrap();
    }
    let run = |args: &[&str]| {
        let mut c = env.cairn(&[&repo]);
        c.args(args);
        let (out, rss) = output_with_peak_rss(&c);
        assert!(
            rss < RSS_LIMIT_KIB,
            "{args:?} peaked at {rss} KiB: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let out = run(&["snapshots", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(last_json(&out.stdout).as_array().unwrap().len(), 1);
    assert!(err.contains(&planted("snapshots")), "{err}");
    // Every slot is tried only when the passphrase fits none: the planted
    // one is then named, and never downloaded.
    let mut c = env.cairn(&[&repo]);
    c.env("CAIRN_PASSWORD", "not the passphrase")
        .arg("snapshots");
    let (out, rss) = output_with_peak_rss(&c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(rss < RSS_LIMIT_KIB, "wrong passphrase peaked at {rss} KiB");
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(err.contains(&planted("keys")), "{err}");
    // A backup reads the index: it names the planted one and goes on.
    let out = run(&["backup", src.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&planted("index")) && err.contains("limit"),
        "{err}"
    );
    // check reports each as damage without downloading it.
    let out = run(&["check", "--read-data"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    for dir in ["snapshots", "index", "data"] {
        assert!(text.contains(&planted(dir)), "{dir}: {text}");
    }
    // Rebuilding the index leaves the planted pack out, by its size.
    let out = run(&[
        "repair",
        "index",
        "--dry-run",
        "--backend",
        repo.to_str().unwrap(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&planted("data")) && text.contains("limit"),
        "{text}"
    );
    // Seeding a new replica from it copies neither planted slot nor pack.
    let new = env.path("new");
    let mut c = env.cairn(&[&repo, &new]);
    c.args(["sync", "--to", new.to_str().unwrap()]);
    let (out, rss) = output_with_peak_rss(&c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(rss < RSS_LIMIT_KIB, "sync peaked at {rss} KiB: {err}");
    assert!(err.contains(&planted("keys")), "{err}");
    assert!(!new.join(planted("keys")).exists());
    assert!(!new.join(planted("data")).exists());
    env.cairn(&[&new]).arg("check").assert().success();
    // The data is all still there.
    let target = env.path("restored");
    let out = run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &restored(&target, &src));
}

/// Pack names stored on a local replica, sorted.
fn pack_names(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = packs(repo)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `key reencrypt` killed at random points, over many rotations: both
/// replicas pass `check` after every kill, and the run that follows
/// completes. A run killed after its first checkpoint is resumed without
/// copying the finished packs again.
#[test]
fn sigkill_during_reencrypt_leaves_consistent_repositories() {
    const TRIALS: u64 = 12;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..10u64 {
        fs::write(src.join(format!("f{i}")), noise(4000 + i, 900 << 10)).unwrap();
    }
    let (r1, r2) = (env.path("k1"), env.path("k2"));
    init_with(&env, &[&r1, &r2], 1);
    assert_eq!(env.backup_json(&[&r1, &r2], &[src.as_os_str()]).0, 0);
    let mut rng = Rng(seed(0x5EE_C0DE));
    let mut took = Duration::from_millis(600);
    let mut killed = 0;
    for i in 0..TRIALS {
        env.cairn(&[&r1, &r2])
            .args(["key", "rotate"])
            .assert()
            .success();
        let mut c = env.cairn(&[&r1, &r2]);
        c.args(["key", "reencrypt", "--batch", "1"]);
        let delay = took.mul_f64(rng.unit() * 0.9);
        let started = Instant::now();
        let mut child = std_command(&c)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "reencrypt failed on its own: {status}");
                took = started.elapsed();
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
            }
        }
        eprintln!("trial {i}: killed after {delay:?}: {killed} so far");
        for r in [&r1, &r2] {
            let (code, out, err) = check(&env, &[r], false);
            assert_eq!(
                code,
                0,
                "trial {i}: {} after SIGKILL at {delay:?}: {out}{err}",
                r.display()
            );
        }
    }
    assert!(killed >= TRIALS / 3, "too few kills landed: {killed}");

    // Killed after its first checkpoint, then resumed. On a loaded machine
    // the kill can land after the run copied everything (it goes on while
    // the line that triggers the kill travels to this test); such a trial
    // shows nothing about resuming and is tried again.
    //
    // The kills above leave each replica at a point of its own, and a run
    // copies the packs of one group of holders after the other (only r2's,
    // then both's, ...): the first checkpoint could then cover r2 alone and
    // r1 rightly start over. A finished run and a prune make the replicas
    // alike, so every old pack below is held by both and the first
    // checkpoint covers both.
    env.cairn(&[&r1, &r2])
        .args(["key", "reencrypt"])
        .assert()
        .success();
    env.cairn(&[&r1, &r2])
        .args(["prune", "--grace", "0", "--max-unused", "0"])
        .assert()
        .success();
    assert_eq!(pack_names(&r1), pack_names(&r2));
    let mut resumed = None;
    for _ in 0..5 {
        env.cairn(&[&r1, &r2])
            .args(["key", "rotate"])
            .assert()
            .success();
        let mut c = env.cairn(&[&r1, &r2]);
        c.args(["key", "reencrypt", "--batch", "1"]);
        kill_when_stderr_says(&c, "reencrypt: 1/");
        let (code, out, err) = run(env.cairn(&[&r1, &r2]).args(["--json", "key", "reencrypt"]));
        assert_eq!(code, 0, "{out}{err}");
        let re = last_json(out.as_bytes());
        assert_eq!(re["reencrypt"]["complete"], true, "{re}");
        if re["reencrypt"]["replicas"][0]["old_packs"]
            .as_u64()
            .unwrap()
            > 0
        {
            resumed = Some(re);
            break;
        }
        eprintln!("the kill landed after the copy finished; again");
    }
    let re = resumed.expect("no kill landed before the copy finished in 5 tries");
    for r in re["reencrypt"]["replicas"].as_array().unwrap() {
        assert!(
            r["packs_copied"].as_u64().unwrap() < r["old_packs"].as_u64().unwrap(),
            "the resumed run copied everything again: {re}"
        );
    }

    // Every object is under the newest epoch; the debris of the killed
    // runs goes with a prune; both replicas agree and restore the source.
    let (_, out, _) = run(env.cairn(&[&r1, &r2]).args(["--json", "key", "status"]));
    let st = last_json(out.as_bytes());
    for r in st["replicas"].as_array().unwrap() {
        let epochs = r["epochs"].as_array().unwrap();
        assert_eq!(epochs.len(), 1, "{st}");
        assert_eq!(epochs[0]["epoch"], st["current_epoch"], "{st}");
    }
    env.cairn(&[&r1, &r2])
        .args(["prune", "--grace", "0", "--max-unused", "0"])
        .assert()
        .success();
    assert_eq!(pack_names(&r1), pack_names(&r2));
    for r in [&r1, &r2] {
        let (code, out, err) = check(&env, &[r], true);
        assert_eq!(code, 0, "{out}{err}");
        let target = env.path(&format!(
            "restore-{}",
            r.file_name().unwrap().to_string_lossy()
        ));
        let (code, out, err) = restore(&env, &[r], "latest", &target);
        assert_eq!(code, 0, "{out}{err}");
        assert_same_tree(&src, &restored(&target, &src));
    }
}
