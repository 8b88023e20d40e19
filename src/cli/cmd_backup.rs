//! `cairn backup`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cairn::ops::backup::progress::Progress;
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
    /// File name for --stdin.
    #[arg(long, default_value = "stdin")]
    pub stdin_filename: String,
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
    /// Packs queued per replica before the backup waits for a slow one.
    #[arg(long, default_value_t = 2)]
    pub queue: usize,
    /// Concurrent uploads per replica.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
}

pub async fn run(g: &Global, a: BackupArgs) -> anyhow::Result<i32> {
    if a.stdin && !a.paths.is_empty() {
        anyhow::bail!(UsageError("--stdin takes no paths".into()));
    }
    if !a.stdin && a.paths.is_empty() {
        anyhow::bail!(UsageError(
            "nothing to back up: give one or more paths, or --stdin".into()
        ));
    }
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
    opts.stdin_name = a.stdin.then(|| a.stdin_filename.clone());
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
    opts.connections = a.connections;

    let progress = Arc::new(Progress::new(
        repo.replicas().iter().map(|r| r.name.clone()),
    ));
    let ticker = super::progress::show(g, progress.clone());
    let res = backup(&repo, &opts, progress.clone()).await;
    ticker.stop();
    let out = res?;

    let s = &out.snapshot.summary;
    if g.json {
        output::print_json(&json!({
            "type": "summary",
            "snapshot": out.id.map(|i| i.to_hex()),
            "partial": out.snapshot.partial,
            "interrupted": out.interrupted,
            "outcome": out.outcome(),
            "summary": s,
            "errors": out.snapshot.errors,
            "replicas": out.replicas.iter().map(|r| json!({
                "name": r.name,
                "ok": r.error.is_none(),
                "error": r.error.as_ref().map(|e| output::chain(e)),
                "packs": r.packs,
                "bytes": r.bytes,
            })).chain(repo.unavailable().iter().map(|u| json!({
                "name": u.name, "ok": false, "error": output::chain(&u.error), "packs": 0, "bytes": 0,
            }))).collect::<Vec<_>>(),
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
    }
    for e in &out.snapshot.errors {
        if !g.json {
            eprintln!("warning: could not back up {e}");
        }
    }
    let outcome = out.outcome();
    if outcome == Outcome::Failed && !g.json {
        eprintln!("error: the backup failed on every replica");
    }
    Ok(exit::of(&outcome))
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
