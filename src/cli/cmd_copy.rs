//! `cairn copy`: copy snapshots into another repository with its own
//! keyring (see docs/copy.md).

use std::path::PathBuf;
use std::sync::Arc;

use cairn::ops::backup::progress::Progress;
use cairn::ops::copy::{copy, CopyOptions};
use cairn::ops::forget::SnapshotFilter;
use cairn::ops::Outcome;
use clap::Args;
use serde_json::json;

use super::output::{self, bytes};
use super::{exit, password, repos, Global};

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Snapshots to copy (id, unique prefix or `latest`) [default: every
    /// snapshot the filters select].
    pub snapshots: Vec<String>,
    /// The target repository: a path, URL or backend name of cairn.toml.
    /// Repeat it for each replica of the target. It must exist (`cairn
    /// init`) with a keyring of its own.
    #[arg(
        long = "to",
        value_name = "REPO",
        required = true,
        value_delimiter = ','
    )]
    pub to: Vec<String>,
    /// Read the target's passphrase from this file (first line); else
    /// CAIRN_TO_PASSWORD, CAIRN_TO_PASSWORD_COMMAND or a prompt.
    #[arg(long, env = "CAIRN_TO_PASSWORD_FILE", value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only snapshots that include this path (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Packs queued per target replica before the copy waits for a slow one.
    #[arg(long, default_value_t = 2)]
    pub queue: usize,
    /// Concurrent uploads per target replica.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
}

pub async fn run(g: &Global, a: CopyArgs) -> anyhow::Result<i32> {
    let source = repos::open(g, false).await?;
    let target = repos::open_other(g, &a.to, || {
        password::get_target(a.to_password_file.as_deref())
    })
    .await?;
    let opts = CopyOptions {
        snapshots: a.snapshots.clone(),
        filter: SnapshotFilter {
            hosts: a.hosts.clone(),
            tags: a.tags.clone(),
            paths: a.paths.clone(),
        },
        queue: a.queue,
        connections: a.connections,
        ..CopyOptions::default()
    };
    let progress = Arc::new(Progress::new(
        target.replicas().iter().map(|r| r.name.clone()),
    ));
    let ticker = super::progress::show(g, progress.clone());
    let res = copy(&source, &target, &opts, progress).await;
    ticker.stop();
    let report = res?;
    let outcome = report.outcome();
    if g.json {
        let mut v = serde_json::to_value(&report).expect("the report serializes");
        v["type"] = json!("summary");
        v["outcome"] = json!(outcome);
        output::print_json(&v);
    } else {
        for c in &report.copied {
            match (&c.target, &c.error) {
                (_, Some(e)) => eprintln!("error: snapshot {} not copied: {e}", c.source.short()),
                (Some(t), None) if !g.quiet => println!(
                    "snapshot {} copied as {}: {} files, read {}, {} new blobs ({} stored)",
                    c.source.short(),
                    t.short(),
                    c.files,
                    bytes(c.bytes_read),
                    c.blobs_new,
                    bytes(c.bytes_stored)
                ),
                (None, None) if !g.quiet => {
                    println!("snapshot {} not copied", c.source.short())
                }
                _ => {}
            }
        }
        if !g.quiet {
            for s in &report.skipped {
                println!(
                    "snapshot {} skipped: already copied as {}",
                    s.source.short(),
                    s.target.short()
                );
            }
            for r in &report.replicas {
                match &r.error {
                    None => println!(
                        "  {}: ok ({} snapshots, {} packs, {})",
                        r.name,
                        r.snapshots,
                        r.packs,
                        bytes(r.bytes)
                    ),
                    Some(e) => println!("  {}: FAILED: {e}", r.name),
                }
            }
            for u in target.unavailable() {
                println!(
                    "  {}: FAILED: {}",
                    u.name,
                    output::chain_for(&u.name, &u.error)
                );
            }
            println!(
                "{} snapshots copied, {} already there, into repository {} in {:.1}s",
                report.written(),
                report.skipped.len(),
                report.target_repository.short(),
                report.seconds
            );
            if report.interrupted {
                println!("interrupted: run `cairn copy` again to copy the rest");
            }
        }
        if outcome == Outcome::Failed {
            eprintln!("error: the copy failed on every target replica");
        }
    }
    Ok(exit::of(&outcome))
}
