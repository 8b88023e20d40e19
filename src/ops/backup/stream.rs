//! Sources that are one stream, stored as one file: standard input, a
//! command's standard output (`pg_dump`, `mysqldump`, …), and a SQLite
//! database copied online with SQLite's backup API.
//!
//! The snapshot of such a source holds the one file `/<name>` and its
//! `paths` are `["/<name>"]`, so `restore latest:/<name>` and `ls` find it
//! and retention groups the backups of one dump together. The command line
//! is not recorded: its arguments may hold credentials (a connection string
//! with a password).
//!
//! The stream is read once and chunked as it arrives, never held whole. A
//! source that fails — a command that exits non-zero or is killed, a
//! database that cannot be copied — returns [`Error::Source`]; the backup
//! then writes no snapshot anywhere (see docs/sources.md).

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::progress::Progress;
use super::source;
use super::store::BlobStore;
use crate::error::{Error, Result};
use crate::format::chunker::Chunker;
use crate::format::id::Id;
use crate::format::tree::{Node, NodeKind, RawName, Tree};

/// Where the stream comes from.
#[derive(Clone, Debug)]
pub enum StreamSource {
    /// This process's standard input.
    Stdin,
    /// The standard output of `argv[0] argv[1..]`, run without a shell and
    /// without cairn's secrets in its environment. Its exit status decides
    /// whether a snapshot is written.
    Command(Vec<OsString>),
    /// A SQLite database, copied consistently while others write to it.
    Sqlite(PathBuf),
}

/// A stream source and the name of the file it becomes.
#[derive(Clone, Debug)]
pub struct Stream {
    pub name: String,
    pub source: StreamSource,
}

impl Stream {
    /// Standard input, stored as `name` (default `stdin`).
    pub fn stdin(name: Option<String>) -> Result<Stream> {
        Stream::named(name.unwrap_or_else(|| "stdin".into()), StreamSource::Stdin)
    }

    /// A command's output, stored as `name` (default: the program's base
    /// name plus `.out`, e.g. `pg_dump.out`).
    pub fn command(argv: Vec<OsString>, name: Option<String>) -> Result<Stream> {
        let program = argv
            .first()
            .ok_or_else(|| Error::Invalid("no command given".into()))?;
        let name = name.unwrap_or_else(|| {
            let base = Path::new(program)
                .file_name()
                .map_or_else(|| "command".into(), |b| b.to_string_lossy());
            format!("{base}.out")
        });
        Stream::named(name, StreamSource::Command(argv))
    }

    /// A SQLite database, stored under its own file name unless `name` is
    /// given.
    pub fn sqlite(path: PathBuf, name: Option<String>) -> Result<Stream> {
        let name = match name {
            Some(n) => n,
            None => path
                .file_name()
                .ok_or_else(|| {
                    Error::Invalid(format!("{}: not a database file name", path.display()))
                })?
                .to_string_lossy()
                .into_owned(),
        };
        Stream::named(name, StreamSource::Sqlite(path))
    }

    fn named(name: String, source: StreamSource) -> Result<Stream> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(Error::Invalid(format!(
                "{name:?} cannot be a file name in the snapshot (no '/', not empty, '.' or '..')"
            )));
        }
        Ok(Stream { name, source })
    }

    /// The snapshot's `paths`.
    pub fn snapshot_paths(&self) -> Vec<String> {
        vec![format!("/{}", self.name)]
    }
}

/// Read the stream into the store; return the root tree, or the error that
/// makes this backup a failure.
pub(super) fn store(
    stream: &Stream,
    chunker: &Chunker,
    store: &BlobStore,
    progress: &Progress,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<(Vec<Id>, u64)> {
    let on_bytes = |n| {
        progress.bytes_read.fetch_add(n, Relaxed);
    };
    let mut buf = Vec::new();
    let mut mode = 0o100600;
    let mut owner = (crate::sys::uid(), 0);
    let (content, size) = match &stream.source {
        StreamSource::Stdin => {
            let mut input = Cancellable {
                inner: std::io::stdin().lock(),
                cancelled,
            };
            source::chunk_stream(&mut input, chunker, store, &on_bytes, &mut buf).map_err(|e| {
                if cancelled() {
                    Error::Interrupted
                } else {
                    Error::io("standard input", e)
                }
            })?
        }
        StreamSource::Command(argv) => {
            let read = |r: &mut dyn Read| {
                let mut r = Cancellable {
                    inner: r,
                    cancelled,
                };
                source::chunk_stream(&mut r, chunker, store, &on_bytes, &mut buf)
            };
            run_command(argv, read, cancelled).map_err(|e| {
                if cancelled() {
                    Error::Interrupted
                } else {
                    e
                }
            })?
        }
        StreamSource::Sqlite(db) => {
            let meta = std::fs::metadata(db).map_err(|e| sqlite_error(db, e))?;
            mode = 0o100000 | (meta.mode() & 0o7777);
            owner = (meta.uid(), meta.gid());
            let dir = tempfile::Builder::new()
                .prefix("cairn-sqlite-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .map_err(|e| Error::io("a temporary directory for the SQLite copy", e))?;
            let copy = dir.path().join("copy.db");
            copy_sqlite(db, &copy, cancelled)?;
            let mut f = std::fs::File::open(&copy).map_err(|e| Error::io(copy.display(), e))?;
            let read = source::chunk_stream(&mut f, chunker, store, &on_bytes, &mut buf)
                .map_err(|e| Error::io(copy.display(), e))?;
            // Removed here, and by the guard's drop on every error above.
            dir.close()
                .map_err(|e| Error::io("the temporary SQLite copy", e))?;
            read
        }
    };
    progress.files.fetch_add(1, Relaxed);
    let now = Timestamp::now().as_nanosecond() as i64;
    let tree = Tree {
        nodes: vec![Node {
            name: RawName(stream.name.as_bytes().to_vec()),
            kind: NodeKind::File,
            mode,
            uid: owner.0,
            gid: owner.1,
            user: None,
            size,
            mtime: now,
            ctime: now,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            target: None,
            content,
            subtree: Vec::new(),
        }],
    };
    Ok((source::store_tree(tree.to_bytes(), chunker, store), size))
}

/// A reader that fails once the backup is cancelled, so a stream that
/// never ends (or a dump of hours) does not hold up Ctrl-C or SIGTERM: the
/// command is then killed and no snapshot is written.
struct Cancellable<'a, R> {
    inner: R,
    cancelled: &'a dyn Fn() -> bool,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if (self.cancelled)() {
            // Not ErrorKind::Interrupted: readers retry that.
            return Err(std::io::Error::other("interrupted"));
        }
        self.inner.read(buf)
    }
}

/// Run `argv`, hand its output to `read`, and check how it ended. A
/// cancellation (Ctrl-C, SIGTERM, a job's timeout) kills the command even
/// while it prints nothing, which would otherwise block the read forever.
fn run_command<T>(
    argv: &[OsString],
    read: impl FnOnce(&mut dyn Read) -> std::io::Result<T>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<T> {
    let program = argv[0].to_string_lossy();
    let mut child = cairn_backends::child::command(&argv[0], &argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Source(format!("cannot run the command {program}: {e}")))?;
    let mut out = child.stdout.take().expect("stdout is piped");
    let pid = rustix::process::Pid::from_raw(child.id() as i32);
    let done = std::sync::atomic::AtomicBool::new(false);
    let res = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Relaxed) {
                if cancelled() {
                    if let Some(pid) = pid {
                        // The child is not reaped before `done`, so the pid
                        // still names it.
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let res = read(&mut out);
        done.store(true, Relaxed);
        res
    });
    // Closed before waiting: a command still writing gets EPIPE instead of
    // blocking forever on a pipe nobody reads.
    drop(out);
    if res.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| Error::Source(format!("waiting for the command {program}: {e}")))?;
    let value = res.map_err(|e| Error::Source(format!("reading the output of {program}: {e}")))?;
    check_status(&program, status)?;
    Ok(value)
}

/// A command's failure, named with its exit status or signal.
fn check_status(program: &str, status: ExitStatus) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    Err(Error::Source(format!(
        "the command {program} {}",
        how_it_ended(status)
    )))
}

/// How a process that did not succeed ended: `exited with status 3`,
/// `was killed by signal 9 (SIGKILL)` (source commands and hooks).
pub fn how_it_ended(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}{}", signal_name(s)),
        _ => format!("failed ({status})"),
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        1 => " (SIGHUP)",
        2 => " (SIGINT)",
        3 => " (SIGQUIT)",
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        13 => " (SIGPIPE)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// Pages copied per step of the online backup: small, so writers get the
/// database back between steps.
const PAGES_PER_STEP: i32 = 256;
/// The pause between steps, in which writers progress.
const PAUSE: Duration = Duration::from_millis(5);
/// SQLite starts an online backup over when another connection writes to
/// the source. After this many restarts the rest is copied in one step,
/// which holds the read lock until done: a busy database still gets backed
/// up, writers wait for that one step (in WAL mode they do not wait at all).
const MAX_RESTARTS: u32 = 3;

fn sqlite_error(db: &Path, e: impl std::fmt::Display) -> Error {
    Error::Source(format!("SQLite database {}: {e}", db.display()))
}

/// Copy the database `db` into `dest` with SQLite's online backup API.
fn copy_sqlite(db: &Path, dest: &Path, cancelled: &dyn Fn() -> bool) -> Result<()> {
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sqlite_error(db, e))?;
    src.busy_timeout(Duration::from_secs(30))
        .map_err(|e| sqlite_error(db, e))?;
    let mut dst = Connection::open(dest).map_err(|e| sqlite_error(dest, e))?;
    let backup = Backup::new(&src, &mut dst).map_err(|e| sqlite_error(db, e))?;
    let mut restarts = 0;
    let mut last_remaining = i32::MAX;
    loop {
        if cancelled() {
            return Err(Error::Interrupted);
        }
        let pages = if restarts >= MAX_RESTARTS {
            -1
        } else {
            PAGES_PER_STEP
        };
        match backup.step(pages).map_err(|e| sqlite_error(db, e))? {
            StepResult::Done => {
                tracing::debug!(
                    "SQLite copy of {}: {} pages, {restarts} restarts",
                    db.display(),
                    backup.progress().pagecount
                );
                return Ok(());
            }
            StepResult::More => {
                let remaining = backup.progress().remaining;
                // Without a restart, every step leaves fewer pages to copy.
                if remaining >= last_remaining {
                    restarts += 1;
                }
                last_remaining = remaining;
            }
            // Busy, Locked: another connection holds the lock; try again.
            _ => {}
        }
        std::thread::sleep(PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_and_bad_names() {
        let s = Stream::command(vec!["/usr/bin/pg_dump".into(), "app".into()], None).unwrap();
        assert_eq!(s.name, "pg_dump.out");
        assert_eq!(s.snapshot_paths(), ["/pg_dump.out"]);
        let s = Stream::sqlite("/srv/app/data.db".into(), None).unwrap();
        assert_eq!(s.name, "data.db");
        assert_eq!(Stream::stdin(None).unwrap().name, "stdin");
        assert!(Stream::command(Vec::new(), None).is_err());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(Stream::stdin(Some(bad.into())).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_failing_command_is_an_error_naming_it() {
        let ok = run_command(
            &["sh".into(), "-c".into(), "echo hi".into()],
            |r| {
                let mut s = String::new();
                r.read_to_string(&mut s).map(|_| s)
            },
            &|| false,
        )
        .unwrap();
        assert_eq!(ok, "hi\n");
        let drain = |r: &mut dyn Read| std::io::copy(r, &mut std::io::sink());
        let err = run_command(
            &["sh".into(), "-c".into(), "echo part; exit 3".into()],
            drain,
            &|| false,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "the command sh exited with status 3");
        let err = run_command(
            &["sh".into(), "-c".into(), "kill -9 $$".into()],
            drain,
            &|| false,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "the command sh was killed by signal 9 (SIGKILL)");
        let err = run_command(&["/nonexistent/cairn-no-such-tool".into()], drain, &|| {
            false
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("cannot run the command /nonexistent/cairn-no-such-tool"),
            "{err}"
        );
    }

    #[test]
    fn a_silent_command_is_killed_when_cancelled() {
        let start = std::time::Instant::now();
        let drain = |r: &mut dyn Read| std::io::copy(r, &mut std::io::sink());
        let cancel = || start.elapsed() > Duration::from_millis(200);
        let err = run_command(&["sleep".into(), "30".into()], drain, &cancel).unwrap_err();
        assert!(err.to_string().contains("killed by signal 9"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn sqlite_copy_is_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        let copy = dir.path().join("b.db");
        copy_sqlite(&db, &copy, &|| false).unwrap();
        let n: i64 = Connection::open(&copy)
            .unwrap()
            .query_row("SELECT sum(x) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
        std::fs::write(
            dir.path().join("not.db"),
            b"this is not a database at all, no",
        )
        .unwrap();
        let err = copy_sqlite(
            &dir.path().join("not.db"),
            &dir.path().join("c.db"),
            &|| false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not.db"), "{err}");
    }
}
