//! `cairn restore`.

use std::path::PathBuf;
use std::sync::Arc;

use cairn::ops::restore::{restore_snapshot, RestoreOptions, RestoreProgress};
use clap::Args;
use serde_json::json;

use super::output::{self, bytes};
use super::{exit, repos, Global};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:PATH (id, unique prefix, or `latest`).
    pub snapshot: String,
    /// Directory to restore into.
    #[arg(short, long, required_unless_present = "in_place")]
    pub target: Option<PathBuf>,
    /// Restore over this existing directory: a `pre-restore` safety
    /// snapshot of it first, only what differs rewritten, the result
    /// verified, and rolled back automatically on any failure.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["target", "include", "verify"])]
    pub in_place: Option<PathBuf>,
    /// With --in-place: remove what DIR has and the snapshot does not.
    #[arg(long, requires = "in_place")]
    pub delete: bool,
    /// With --in-place: list what would change, change nothing.
    #[arg(long, requires = "in_place")]
    pub dry_run: bool,
    /// Only restore paths matching this glob (repeatable).
    #[arg(short, long)]
    pub include: Vec<String>,
    /// Re-read the restored files and compare them with the snapshot.
    #[arg(long)]
    pub verify: bool,
    /// Read from this replica first; others serve what it cannot
    /// [default: a local replica first].
    #[arg(long, value_name = "REPO")]
    pub from: Option<String>,
    /// Create device nodes the snapshot holds (needs root); without it
    /// they are skipped and reported.
    #[arg(long)]
    pub allow_devices: bool,
    /// Keep set-user-id and set-group-id bits of files; without it they
    /// are cleared and reported.
    #[arg(long)]
    pub keep_setuid: bool,
}

pub async fn run(g: &Global, a: RestoreArgs) -> anyhow::Result<i32> {
    let (spec, sub) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s.to_string(), Some(p.to_string())),
        None => (a.snapshot.clone(), None),
    };
    let repo = repos::open_from(g, a.from.as_deref()).await?;
    if let Some(dir) = &a.in_place {
        return super::cmd_restore_in_place::run(g, &a, &repo, &spec, sub, dir).await;
    }
    let target = a.target.clone().expect("clap requires --target");
    let opts = RestoreOptions {
        target: target.clone(),
        subpath: sub,
        include: a.include.clone(),
        verify: a.verify,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
        allow_devices: a.allow_devices,
        keep_setuid: a.keep_setuid,
        ..RestoreOptions::new(target.clone())
    };
    let progress = Arc::new(RestoreProgress::default());
    let ticker = super::progress::show(g, progress.clone());
    let res = restore_snapshot(&repo, &spec, &opts, &progress).await;
    ticker.stop();
    let (snap, out) = res?;
    if g.json {
        output::print_json(
            &json!({"type": "summary", "snapshot": snap.id.to_hex(), "result": out,
                    "sources": output::sources_json(&repo), "fallbacks": repo.reads().fallbacks()}),
        );
    } else {
        for f in &out.findings {
            let level = match f.severity {
                cairn::ops::Severity::Error => "error",
                cairn::ops::Severity::Warning => "warning",
            };
            eprintln!("{level}: {}", f.message);
        }
        for e in &out.errors {
            eprintln!("error: {e}");
        }
        if !g.quiet {
            for line in output::sources_lines(&repo) {
                println!("{line}");
            }
            println!(
                "restored snapshot {} to {}: {} files, {} dirs, {}{}",
                snap.id.short(),
                target.display(),
                out.files,
                out.dirs,
                bytes(out.bytes),
                if a.verify {
                    format!("; {} files verified", out.verified_files)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(exit::of(&out.outcome()))
}
