//! `cairn mount`: the snapshots as a read-only FUSE file system, compared
//! with their source, read around a damaged replica, refreshed when a new
//! snapshot appears, and unmounted by SIGINT or `fusermount3 -u`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::backends::conformance::loud_skip;

use crate::common::*;

/// Say loudly that FUSE is missing and skip, or fail under `CI=true`.
fn fuse_missing() -> bool {
    let why = if !Path::new("/dev/fuse").exists() {
        "/dev/fuse is missing"
    } else if !Command::new("fusermount3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        "fusermount3 is missing (Debian package fuse3; scripts/test installs it)"
    } else {
        return false;
    };
    let msg = format!("SKIPPED: cairn mount tests: {why}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} — CI=true, so this is a failure");
    }
    loud_skip(&msg);
    true
}

/// Whether `path` is a mount point now, from /proc/self/mountinfo.
fn is_mounted(path: &Path) -> bool {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(p) == path)
}

/// A running `cairn mount`, unmounted and killed if the test fails midway.
struct Mounted {
    child: Option<Child>,
    path: PathBuf,
    stderr: PathBuf,
}

impl Mounted {
    fn start(env: &Env, repos: &[&Path], extra: &[&str], path: &Path) -> Mounted {
        fs::create_dir_all(path).unwrap();
        let stderr = env.path(&format!(
            "mount-{}.stderr",
            path.file_name().unwrap().to_string_lossy()
        ));
        let mut c = env.cairn(repos);
        c.arg("mount").args(extra).arg(path);
        let child = std_command(&c)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mounted {
            child: Some(child),
            path: path.to_path_buf(),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mounted(path) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cairn mount exited with {status}: {}", m.stderr());
            }
            assert!(Instant::now() < deadline, "not mounted: {}", m.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), sig).unwrap();
    }

    /// Wait for the process to end; its exit code and stdout.
    fn wait(&mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "cairn mount did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.path) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(&self.path)
                .status();
        }
    }
}

/// The one entry of a directory.
fn only_entry(dir: &Path) -> String {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{}: {names:?}", dir.display());
    names.into_iter().next().unwrap()
}

/// Where the source lies in a mounted snapshot (its absolute path under it).
fn in_snapshot(snapshot_dir: &Path, src: &Path) -> PathBuf {
    snapshot_dir.join(src.strip_prefix("/").unwrap())
}

#[test]
fn mount_shows_snapshots_read_only_and_unmounts_on_sigint() {
    if fuse_missing() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 3 << 20);
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    env.cairn(&[&a, &b])
        .args(["backup", "--tag", "nightly"])
        .arg(&src)
        .assert()
        .success();
    let mnt = env.path("mnt");
    let mut m = Mounted::start(&env, &[&a, &b], &[], &mnt);

    // snapshots/<time in UTC>
    let name = only_entry(&mnt.join("snapshots"));
    assert!(
        name.len() == 20 && name.ends_with('Z') && name.as_bytes()[10] == b'T',
        "{name}"
    );
    let snap = mnt.join("snapshots").join(&name);
    // Symlinks compared as links (the source has a dangling one).
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(in_snapshot(&snap, &src))
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "diff -r: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Not only the content: modes, owners, times, symlink targets and the
    // name that is not UTF-8, as backed up.
    assert_same_tree(&src, &in_snapshot(&snap, &src));
    let big = in_snapshot(&snap, &src).join("big.bin");
    assert_eq!(
        fs::metadata(&big).unwrap().len(),
        fs::metadata(src.join("big.bin")).unwrap().len()
    );

    // latest, hosts/ and tags/ point into snapshots/.
    let target = format!("snapshots/{name}");
    assert_eq!(
        fs::read_link(mnt.join("latest")).unwrap(),
        Path::new(&target)
    );
    let via_link =
        fs::read(in_snapshot(&mnt.join("latest"), &src).join("docs/readme.txt")).unwrap();
    assert_eq!(via_link, fs::read(src.join("docs/readme.txt")).unwrap());
    let host = only_entry(&mnt.join("hosts"));
    let up = format!("../../snapshots/{name}");
    for dir in [mnt.join("hosts").join(&host), mnt.join("tags/nightly")] {
        assert_eq!(only_entry(&dir), name);
        assert_eq!(fs::read_link(dir.join(&name)).unwrap(), Path::new(&up));
        assert!(in_snapshot(&dir.join(&name), &src)
            .join("big.bin")
            .is_file());
    }
    assert_eq!(only_entry(&mnt.join("tags")), "nightly");

    // Read-only: nothing can be created, changed or removed.
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::ROFS.raw_os_error()),
            "{what}: {e}"
        );
    };
    erofs(fs::write(snap.join("new-file"), b"x"), "create");
    erofs(
        fs::OpenOptions::new().write(true).open(&big).map(|_| ()),
        "open for writing",
    );
    erofs(fs::remove_file(&big), "unlink");
    erofs(fs::create_dir(mnt.join("snapshots/new-dir")), "mkdir");
    assert_eq!(
        fs::read(src.join("big.bin")).unwrap(),
        fs::read(&big).unwrap()
    );

    // A name the mount does not have.
    assert!(!mnt.join("snapshots/1999-01-01T00:00:00Z").exists());
    assert!(!mnt.join("hosts/no-such-host").exists());

    m.signal(rustix::process::Signal::INT);
    let (code, _) = m.wait();
    assert_eq!(code, Some(0), "{}", m.stderr());
    assert!(!is_mounted(&mnt), "still mounted after SIGINT");
    assert!(m.stderr().contains("unmounted"), "{}", m.stderr());
}

#[test]
fn mount_reads_around_a_damaged_replica_and_shows_new_snapshots() {
    if fuse_missing() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), noise(7, 6 << 20)).unwrap();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    env.cairn(&[&a, &b])
        .arg("backup")
        .arg(&src)
        .assert()
        .success();
    // Every pack on a damaged: the trees and the file must come from b.
    for p in packs(&a) {
        let len = fs::metadata(&p).unwrap().len() as usize;
        flip_byte(&p, len / 2);
    }
    let mnt = env.path("mnt");
    let a_name = a.to_string_lossy().into_owned();
    let mut m = Mounted::start(&env, &[&a, &b], &["--json", "--from", &a_name], &mnt);
    let first = only_entry(&mnt.join("snapshots"));
    let big = in_snapshot(&mnt.join("snapshots").join(&first), &src).join("big.bin");
    assert_eq!(
        fs::read(&big).unwrap(),
        fs::read(src.join("big.bin")).unwrap()
    );

    // A snapshot taken while mounted shows up (the listing is kept a few
    // seconds), and its new blobs can be read.
    fs::write(src.join("later.txt"), b"written after the mount\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    env.cairn(&[&b]).arg("backup").arg(&src).assert().success();
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let names: Vec<String> = fs::read_dir(mnt.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| *n != first)
            .collect();
        if let Some(n) = names.into_iter().next() {
            break n;
        }
        assert!(Instant::now() < deadline, "the new snapshot never appeared");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        fs::read_link(mnt.join("latest")).unwrap(),
        Path::new(&format!("snapshots/{second}"))
    );
    let later = in_snapshot(&mnt.join("snapshots").join(&second), &src).join("later.txt");
    assert_eq!(fs::read(&later).unwrap(), b"written after the mount\n");

    // An unmount from outside ends cairn cleanly, with its report.
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success());
    let (code, stdout) = m.wait();
    assert_eq!(code, Some(0), "{}", m.stderr());
    let report = last_json(stdout.as_bytes());
    assert_eq!(report["ended"], "unmounted", "{report}");
    assert!(
        report["bytes_read"].as_u64().unwrap() >= 6 << 20,
        "{report}"
    );
    assert_eq!(report["read_errors"], 0, "{report}");
    assert!(
        m.stderr().contains("came from another"),
        "the fallback to b is reported: {}",
        m.stderr()
    );
    assert!(!is_mounted(&mnt));
}

/// As most people mount: as an ordinary user, through the setuid
/// `fusermount3`, without `allow_other`, and unmounted by that user with
/// `fusermount3 -u`. When the tests run as root the mount runs as `nobody`
/// (65534); as anyone else, the tests above are already this case. Where
/// `/dev/fuse` is root's alone (mode 0600: a VM or container without
/// udev, such as this project's CI), an ordinary user cannot mount at all,
/// and what is checked is that cairn says so and why.
#[test]
fn an_ordinary_user_mounts_and_unmounts_their_repository() {
    use std::os::unix::process::CommandExt;
    if fuse_missing() {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        return;
    }
    const NOBODY: u32 = 65534;
    let env = Env::new();
    // The test's own directory is root's alone; this one nobody can reach.
    let top = tempfile::Builder::new()
        .prefix("cairn-mount-user-")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = top.path();
    let chown = |p: &Path| {
        let st = Command::new("chown")
            .args(["-R", "65534:65534", "--"])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success(), "chown {}", p.display());
    };
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let src = dir.join("src");
    make_tree(&src, 1 << 20);
    // The user's own files, backed up with their owner.
    chown(&src);
    let repo = dir.join("repo");
    env.init(&[&repo]);
    env.cairn(&[&repo])
        .arg("backup")
        .arg(&src)
        .assert()
        .success();
    let (mnt, home) = (dir.join("mnt"), dir.join("home"));
    fs::create_dir_all(&mnt).unwrap();
    fs::create_dir_all(&home).unwrap();
    chown(dir);
    let as_user = |prog: &Path| {
        let mut c = Command::new(prog);
        c.uid(NOBODY)
            .gid(NOBODY)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("CAIRN_PASSWORD", PASSWORD);
        c
    };
    let stderr = dir.join("mount.stderr");
    let mut child = as_user(&assert_cmd::cargo::cargo_bin("cairn"))
        .arg("-r")
        .arg(&repo)
        .arg("mount")
        .arg(&mnt)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let log = || fs::read_to_string(&stderr).unwrap_or_default();
    let open_to_all = {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o006 == 0o006
    };
    if !open_to_all {
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{}", log());
        let err = log();
        assert!(
            err.contains("cannot open /dev/fuse as an ordinary user")
                && err.contains("chmod 0666 /dev/fuse")
                && err.contains("as root"),
            "{err}"
        );
        assert!(!is_mounted(&mnt));
        loud_skip(
            "mount as an ordinary user: /dev/fuse is root's alone here (mode 0600), so only \
             the refusal was checked, not a mount through fusermount3",
        );
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_mounted(&mnt) {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("cairn mount as nobody exited with {st}: {}", log());
        }
        assert!(Instant::now() < deadline, "not mounted: {}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The user reads the snapshot as backed up (modes and owners apply).
    let out = as_user(Path::new("diff"))
        .args(["-r", "--no-dereference"])
        .arg(in_snapshot(&mnt.join("latest"), &src))
        .arg(&src)
        .output()
        .unwrap();
    let ok = out.status.success() && out.stdout.is_empty();
    if !ok {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z", "--"])
            .arg(&mnt)
            .status();
        let _ = child.kill();
    }
    assert!(
        ok,
        "diff -r as nobody: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    let st = as_user(Path::new("fusermount3"))
        .args(["-u", "--"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "fusermount3 -u as nobody");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "cairn mount did not exit: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0), "{}", log());
    assert!(!is_mounted(&mnt));
}
