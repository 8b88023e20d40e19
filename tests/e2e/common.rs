//! Shared helpers of the end-to-end tests: running the binary in an
//! isolated environment, generating source trees, and comparing trees.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub const PASSWORD: &str = "correct horse battery staple";

/// A scratch directory with its own HOME, so nothing leaks between tests
/// or into the user's default repository.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// Variables set (`Some`) or removed (`None`) in every command, after
    /// the ones passed through.
    overrides: std::cell::RefCell<Vec<(String, Option<std::ffi::OsString>)>>,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("cairn-e2e-")
                .tempdir()
                .unwrap(),
            overrides: Default::default(),
        }
    }

    /// Set `var` in every later command (`None`: remove it).
    pub fn set_var(&self, var: &str, value: Option<&std::ffi::OsStr>) {
        self.overrides
            .borrow_mut()
            .push((var.to_string(), value.map(|v| v.to_os_string())));
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The binary with a clean environment, the test passphrase, and the
    /// given repositories.
    pub fn cairn(&self, repos: &[&Path]) -> Command {
        let mut c = Command::cargo_bin("cairn").unwrap();
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("CAIRN_PASSWORD", PASSWORD);
        // Credentials and endpoints of the test servers pass through.
        const SERVER_VARS: [&str; 7] = [
            "AWS_",
            "AZURE_",
            "AZURITE_",
            "CAIRN_GCS_",
            "CAIRN_SFTP_",
            "CAIRN_FTP",
            "STORAGE_EMULATOR_HOST",
        ];
        for (k, v) in std::env::vars_os() {
            if SERVER_VARS
                .iter()
                .any(|p| k.to_string_lossy().starts_with(p))
            {
                c.env(k, v);
            }
        }
        for (k, v) in self.overrides.borrow().iter() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        for r in repos {
            c.arg("--repo").arg(r);
        }
        c
    }

    /// The binary with `--config FILE` and no `--repo`: the backends named
    /// in the file.
    pub fn cairn_with_config(&self, config: &Path) -> Command {
        let mut c = self.cairn(&[]);
        c.arg("--config").arg(config);
        c
    }

    /// `init` with a cheap key derivation (tests open the repository often).
    pub fn init(&self, repos: &[&Path]) {
        self.cairn(repos)
            .args(["init", "--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
            .assert()
            .success();
    }

    /// Run `backup --json` and return the summary document.
    pub fn backup_json(&self, repos: &[&Path], args: &[&OsStr]) -> (i32, serde_json::Value) {
        let out = self
            .cairn(repos)
            .arg("backup")
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), last_json(&out.stdout))
    }
}

/// The last JSON line of a command's output.
pub fn last_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{') || l.starts_with('['))
        .unwrap_or_else(|| panic!("no JSON in output: {text}"));
    serde_json::from_str(line).unwrap()
}

pub use crate::support::noise;

/// A tree with most things a backup must handle: text and random files,
/// an empty file and directory, nested directories, a symlink, a non-UTF-8
/// name, odd modes, old mtimes, and a multi-chunk file.
pub fn make_tree(root: &Path, big_bytes: usize) {
    fs::create_dir_all(root.join("docs/nested/deeper")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("docs/readme.txt"), "hello cairn\n".repeat(100)).unwrap();
    fs::write(root.join("docs/nested/random.bin"), noise(1, 300_000)).unwrap();
    fs::write(root.join("docs/nested/deeper/small"), b"x").unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(root.join("big.bin"), noise(2, big_bytes)).unwrap();
    let mut text = Vec::new();
    for i in 0..20_000 {
        text.extend_from_slice(format!("line {i} of a compressible file\n").as_bytes());
    }
    fs::write(root.join("docs/compressible.txt"), text).unwrap();
    fs::write(
        root.join(OsStr::from_bytes(b"non-utf8-\xff\xfe")),
        b"odd name",
    )
    .unwrap();
    symlink("docs/readme.txt", root.join("link-to-readme")).unwrap();
    symlink("/nonexistent/target", root.join("dangling-link")).unwrap();
    let script = root.join("docs/run.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o750)).unwrap();
    let secret = root.join("docs/secret");
    fs::write(&secret, "private").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let old =
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::new(1_234_567_890, 123_456_789);
    fs::File::options()
        .write(true)
        .open(root.join("docs/readme.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Everything about one entry that a restore must reproduce.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub mtime: (i64, i64),
    pub owner: (u32, u32),
    pub content: Option<Vec<u8>>,
    pub target: Option<PathBuf>,
}

/// Walk a tree into a sorted list of (relative path, entry).
pub fn snapshot_of(root: &Path) -> Vec<(PathBuf, Entry)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "file"
            };
            out.push((
                p.strip_prefix(root).unwrap().to_path_buf(),
                Entry {
                    kind,
                    mode: m.mode(),
                    // Directory mtimes are checked too: the restore sets them last.
                    mtime: (m.mtime(), m.mtime_nsec()),
                    owner: (m.uid(), m.gid()),
                    content: ft.is_file().then(|| fs::read(&p).unwrap()),
                    target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                },
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Assert two trees are identical in content and metadata.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot_of(expected);
    let b = snapshot_of(actual);
    let names = |v: &[(PathBuf, Entry)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "different sets of paths");
    for ((p, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x, y, "{} differs", p.display());
    }
}

/// Where a restore of `source` under `target` puts it (snapshots keep
/// absolute paths).
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap())
}

/// Every pack file of a local repository.
pub fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for sub in fs::read_dir(repo.join("data")).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// Files of one kind directory (`index`, `snapshots`, `keys`, `locks`).
pub fn files_in(repo: &Path, dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(repo.join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Flip one bit of a file in place.
pub fn flip_byte(p: &Path, at: usize) {
    let mut d = fs::read(p).unwrap();
    let i = at % d.len();
    d[i] ^= 0x40;
    fs::write(p, d).unwrap();
}

/// Compare a restore with its source. Entries the restore named as failed
/// in `stderr` (`error: PATH: …`) are skipped, a directory with everything
/// below it; every other entry must be identical in content and metadata,
/// and every error must name an entry of the source. Returns the failed
/// entries relative to the source.
pub fn compare_restore(src: &Path, target: &Path, stderr: &str) -> Vec<PathBuf> {
    let root = restored(target, src);
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .collect();
    // Restore prints paths escaped (control characters, bytes not UTF-8).
    let shown = |rel: &Path| {
        let p = root.join(rel);
        format!(
            "{}: ",
            cairn::format::tree::escape_bytes(p.as_os_str().as_bytes())
        )
    };
    let actual: BTreeMap<PathBuf, Entry> = snapshot_of(&root).into_iter().collect();
    let expected = snapshot_of(src);
    for e in &errors {
        assert!(
            expected.iter().any(|(rel, _)| e.starts_with(&shown(rel))),
            "restore reported an error for something not in the source: {e}"
        );
    }
    let mut broken: Vec<PathBuf> = Vec::new();
    for (rel, want) in &expected {
        if broken.iter().any(|b| rel.starts_with(b)) {
            continue;
        }
        if errors.iter().any(|e| e.starts_with(&shown(rel))) {
            broken.push(rel.clone());
            continue;
        }
        assert_eq!(
            actual.get(rel),
            Some(want),
            "{} was not restored correctly (stderr: {stderr})",
            rel.display()
        );
    }
    for rel in actual.keys() {
        assert!(
            expected.iter().any(|(p, _)| p == rel),
            "{} was restored but is not in the source",
            rel.display()
        );
    }
    broken
}

/// The same command as `c` (an `Env::cairn` command), as a std command
/// that can be spawned and killed.
pub fn std_command(c: &assert_cmd::Command) -> std::process::Command {
    let mut s = std::process::Command::new(c.get_program());
    s.args(c.get_args()).env_clear();
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            s.env(k, v);
        }
    }
    if let Some(d) = c.get_current_dir() {
        s.current_dir(d);
    }
    s
}

/// Run a command to completion and return its output with its peak
/// resident set size in KiB, as the kernel accounted it for that one
/// process (`wait4`), so tests running in parallel do not disturb it.
///
/// The command is started by a small Python launcher that forks, execs it
/// and reports its child's peak: a child forked (or vforked) from this
/// test process would carry the test process's own size (hundreds of MiB
/// while other tests run beside it) into its peak, because Linux keeps the
/// largest size a process had, across exec.
pub fn output_with_peak_rss(c: &assert_cmd::Command) -> (std::process::Output, u64) {
    const LAUNCHER: &str = "import os, sys\n\
        pid = os.fork()\n\
        if pid == 0:\n    os.execv(sys.argv[2], sys.argv[2:])\n\
        _, status, ru = os.wait4(pid, 0)\n\
        open(sys.argv[1], 'w').write(str(ru.ru_maxrss))\n\
        sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))\n";
    let inner = std_command(c);
    let report = tempfile::NamedTempFile::new().unwrap();
    // Debian's own Python: a pyenv shim on PATH would need the real HOME.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = std::process::Command::new(python);
    cmd.arg("-c")
        .arg(LAUNCHER)
        .arg(report.path())
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    if let Some(d) = inner.get_current_dir() {
        cmd.current_dir(d);
    }
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 (the launcher that measures peak memory) must be installed");
    let peak = std::fs::read_to_string(report.path())
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the launcher reported no peak: {output:?}"));
    (output, peak)
}

/// Run `c` and SIGKILL it as soon as its stderr contains `needle` (e.g. a
/// progress line saying a checkpoint was written).
pub fn kill_when_stderr_says(c: &Command, needle: &str) {
    use std::io::Read;
    let mut child = std_command(c)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = err.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "{needle:?} never came: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Assert that every replica's trail in `key audit --json` output has an
/// entry starting with each of `steps` ("operation detail").
pub fn assert_audit_steps(audit: &serde_json::Value, steps: &[&str]) {
    for trail in audit["replicas"].as_array().unwrap() {
        let ops: Vec<String> = trail["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["operation"].as_str().unwrap(),
                    e["detail"].as_str().unwrap_or("")
                )
            })
            .collect();
        for step in steps {
            assert!(
                ops.iter().any(|o| o.starts_with(step)),
                "{}: {step} missing from {ops:#?}",
                trail["replica"]
            );
        }
    }
}
