//! `cairn backup`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cairn::ops::backup::progress::Progress;
use cairn::ops::backup::stream::Stream;
use cairn::ops::backup::{backup, BackupOptions};
use cairn::ops::Outcome;
use clap::Args;
use serde_json::json;

use super::output::{self, bytes};
use super::{exit, repos, Global, UsageError};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up.
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Exclude paths matching this glob (repeatable). Without `/` it matches
    /// a name anywhere; with `/`, a path.
    #[arg(short = 'e', long = "exclude")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from a file, one per line.
    #[arg(long)]
    pub exclude_file: Vec<PathBuf>,
    /// Do not cross file system boundaries.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Back up standard input instead of files.
    #[arg(long)]
    pub stdin: bool,
    /// Back up the standard output of the command given after `--`
    /// (`-- pg_dump --format=custom app`). A command that exits non-zero
    /// or is killed makes the backup fail: no snapshot is saved.
    #[arg(long, requires = "command")]
    pub stdin_from_command: bool,
    /// Copy this SQLite database online (consistent while others write to
    /// it) and back up the copy as one file.
    #[arg(long, value_name = "PATH")]
    pub sqlite: Option<PathBuf>,
    /// The file name in the snapshot for --stdin [default: stdin],
    /// --stdin-from-command [default: the program's name plus `.out`] or
    /// --sqlite [default: the database's file name].
    #[arg(long, value_name = "NAME")]
    pub stdin_filename: Option<String>,
    /// The command for --stdin-from-command, with its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
    /// Host name recorded in the snapshot.
    #[arg(long)]
    pub host: Option<String>,
    /// Record this as the snapshot's time instead of now: RFC 3339
    /// (2026-01-31T03:00:00Z) or `YYYY-MM-DD HH:MM:SS` in local time.
    #[arg(long, value_name = "TIME", value_parser = crate::cli::parse_time)]
    pub time: Option<jiff::Timestamp>,
    /// Parent snapshot for change detection [default: latest of same host and paths].
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, even unchanged ones.
    #[arg(long)]
    pub force: bool,
    /// Packs queued per replica before the backup waits for a slow one
    /// (within the run's budget of packs alive: the busiest replica's
    /// uploads + 1).
    #[arg(long, default_value_t = 2)]
    pub queue: usize,
    /// Concurrent uploads per replica [default: 1 on a local disk, 4 over
    /// the network, at most the backend's `connections`].
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub connections: Option<usize>,
    /// After the backup, print the CPU time each pipeline stage took (read,
    /// chunk, hash, compress, encrypt, seal; upload as wall time) in
    /// seconds, seconds per GB read and GB/s per thread, next to the
    /// process's CPU time.
    #[arg(long)]
    pub profile_stages: bool,
}

pub async fn run(g: &Global, a: BackupArgs) -> anyhow::Result<i32> {
    let stream = stream_source(&a)?;
    let mut excludes = a.excludes.clone();
    for f in &a.exclude_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading exclude file {}", f.display()))?;
        excludes.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    let mut paths = Vec::new();
    for p in &a.paths {
        let abs = std::path::absolute(p).with_context(|| format!("{}", p.display()))?;
        std::fs::symlink_metadata(&abs)
            .with_context(|| format!("cannot back up {}", p.display()))?;
        paths.push(normalize(&abs));
    }
    let repo = repos::open(g, true).await?;
    let mut opts = BackupOptions::new(paths);
    opts.stream = stream;
    opts.tags = a.tags.clone();
    opts.excludes = excludes;
    opts.one_file_system = a.one_file_system;
    if let Some(h) = &a.host {
        opts.host = h.clone();
    }
    if let Some(p) = &a.parent {
        let snaps = repo.list_snapshots().await?;
        opts.parent = Some(cairn::repo::Repository::find_snapshot(&snaps, p)?.id);
    }
    opts.time = a.time;
    opts.force = a.force;
    opts.queue = a.queue;
    if let Some(n) = a.connections {
        opts.connections = n;
    }
    opts.profile_stages = a.profile_stages;

    let progress = Arc::new(Progress::new(
        repo.replicas().iter().map(|r| r.name.clone()),
    ));
    let ticker = super::progress::show(g, progress.clone());
    let res = backup(&repo, &opts, progress.clone()).await;
    ticker.stop();
    let out = res?;

    let s = &out.snapshot.summary;
    let cpu = cairn::sys::cpu_seconds();
    if g.json {
        let stages = a.profile_stages.then(|| {
            json!({
                "stages": out.stages,
                "cpu_user_seconds": cpu.map(|c| c.0),
                "cpu_system_seconds": cpu.map(|c| c.1),
            })
        });
        output::print_json(&json!({
            "type": "summary",
            "snapshot": out.id.map(|i| i.to_hex()),
            "partial": out.snapshot.partial,
            "interrupted": out.interrupted,
            "outcome": out.outcome(),
            "summary": s,
            "errors": out.snapshot.errors,
            "source_error": out.source_error.as_ref().map(|e| output::chain(e)),
            "replicas": out.replicas.iter().map(|r| json!({
                "name": r.name,
                "ok": r.error.is_none(),
                "error": r.error.as_ref().map(|e| output::chain(e)),
                "packs": r.packs,
                "bytes": r.bytes,
            })).chain(repo.unavailable().iter().map(|u| json!({
                "name": u.name, "ok": false, "error": output::chain(&u.error), "packs": 0, "bytes": 0,
            }))).collect::<Vec<_>>(),
            "profile": stages,
        }));
    } else if !g.quiet {
        println!(
            "Files: {} new, {} changed, {} unmodified; {} dirs",
            s.files_new, s.files_changed, s.files_unmodified, s.dirs
        );
        println!(
            "Read {} of {}; added {} ({} stored) in {} new blobs; {:.1}s",
            bytes(s.bytes_read),
            bytes(s.total_bytes),
            bytes(s.bytes_new),
            bytes(s.bytes_stored),
            s.blobs_new,
            s.duration_secs
        );
        for r in &out.replicas {
            match &r.error {
                None => println!("  {}: ok ({} packs, {})", r.name, r.packs, bytes(r.bytes)),
                Some(e) => println!("  {}: FAILED: {}", r.name, output::chain_for(&r.name, e)),
            }
        }
        for u in repo.unavailable() {
            println!(
                "  {}: FAILED: {}",
                u.name,
                output::chain_for(&u.name, &u.error)
            );
        }
        match out.id {
            Some(id) => println!("snapshot {} saved", id.short()),
            None if out.interrupted => {
                println!("interrupted: no snapshot saved (what was stored is reused next time)")
            }
            None => println!("no snapshot saved"),
        }
        if a.profile_stages {
            print_profile(&out.stages, s.bytes_read, s.duration_secs, cpu);
        }
    }
    for e in &out.snapshot.errors {
        if !g.json {
            eprintln!("warning: could not back up {e}");
        }
    }
    let outcome = out.outcome();
    if !g.json {
        if let Some(e) = &out.source_error {
            eprintln!("error: {}: no snapshot was saved", output::chain(e));
        } else if outcome == Outcome::Failed {
            eprintln!("error: the backup failed on every replica");
        }
    }
    Ok(exit::of(&outcome))
}

/// The `--profile-stages` table.
fn print_profile(
    stages: &[cairn::ops::backup::stages::StageTime],
    read: u64,
    wall: f64,
    cpu: Option<(f64, f64)>,
) {
    let opt = |v: Option<f64>, nd: usize| v.map_or("-".to_string(), |v| format!("{v:.nd$}"));
    println!(
        "Stage profile ({} read, {wall:.2}s wall; CPU seconds of the threads \
         that ran each stage, upload in wall seconds summed over uploads):",
        bytes(read)
    );
    println!(
        "  {:<9} {:>9} {:>9} {:>13}",
        "stage", "seconds", "s/GB", "GB/s/thread"
    );
    for t in stages {
        println!(
            "  {:<9} {:>9.3} {:>9} {:>13}",
            t.stage,
            t.seconds,
            opt(t.per_gb(read), 2),
            opt(t.gb_per_s(), 2)
        );
    }
    if let Some((user, sys)) = cpu {
        let per_gb = (read > 0).then(|| (user + sys) * 1e9 / read as f64);
        println!(
            "  process CPU {:.2}s user + {:.2}s system = {} s/GB",
            user,
            sys,
            opt(per_gb, 2)
        );
    }
}

/// The one stream source asked for, if any; paths, --stdin,
/// --stdin-from-command and --sqlite exclude each other.
fn stream_source(a: &BackupArgs) -> anyhow::Result<Option<Stream>> {
    let given = [
        !a.paths.is_empty(),
        a.stdin,
        a.stdin_from_command,
        a.sqlite.is_some(),
    ];
    match given.iter().filter(|g| **g).count() {
        0 => anyhow::bail!(UsageError(
            "nothing to back up: give one or more paths, --stdin, \
             --stdin-from-command -- COMMAND, or --sqlite PATH"
                .into()
        )),
        1 => {}
        _ => anyhow::bail!(UsageError(
            "paths, --stdin, --stdin-from-command and --sqlite cannot be combined: \
             run one backup for each"
                .into()
        )),
    }
    if !a.command.is_empty() && !a.stdin_from_command {
        anyhow::bail!(UsageError(
            "a command after `--` needs --stdin-from-command".into()
        ));
    }
    if a.stdin_filename.is_some() && !a.paths.is_empty() {
        anyhow::bail!(UsageError(
            "--stdin-filename names a stream, not paths".into()
        ));
    }
    let name = a.stdin_filename.clone();
    let stream = if a.stdin {
        Stream::stdin(name)
    } else if a.stdin_from_command {
        Stream::command(a.command.clone(), name)
    } else if let Some(db) = &a.sqlite {
        let abs = std::path::absolute(db).with_context(|| format!("{}", db.display()))?;
        Stream::sqlite(abs, name)
    } else {
        return Ok(None);
    };
    Ok(Some(stream.map_err(|e| UsageError(e.to_string()))?))
}

/// Drop `.` and resolve `..` lexically, so snapshot paths are canonical
/// without following symlinks.
fn normalize(p: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}
