//! `cairn prune`: free the space of packs no snapshot a replica holds
//! still needs, in two phases (mark, then delete after a grace period),
//! repacking partly used packs; also run by `forget --prune`.

use cairn::ops::prune::{prune, PruneOptions, PruneReport};
use cairn::repo::Repository;
use cairn::retention::parse_size;
use clap::Args;
use serde_json::json;

use super::output;
use super::{exit, parse_duration, repos, Global};

#[derive(Args, Debug, Clone)]
pub struct PruneFlags {
    /// Delete an unneeded pack only once a prune found it unneeded this
    /// long ago (0: at once, under an exclusive lock).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "24h")]
    pub grace: std::time::Duration,
    /// Repack packs whose unneeded share is above this (e.g. 10%, 25%).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent, default_value = "10%")]
    pub max_unused: f64,
    /// Repack at most SIZE of packs in this run (e.g. 2G) [default: no limit].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_repack: Option<u64>,
}

impl PruneFlags {
    pub fn options(&self, dry_run: bool) -> PruneOptions {
        PruneOptions {
            grace: self.grace,
            max_unused: self.max_unused,
            max_repack: self.max_repack.unwrap_or(u64::MAX),
            dry_run,
        }
    }
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub flags: PruneFlags,
    /// Print what would be marked, repacked and deleted; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// `25%`, `25` (percent) or `0.25`.
fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, pct) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (t, false),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 10%)"))?;
    let v = if pct || v > 1.0 { v / 100.0 } else { v };
    if !(0.0..=1.0).contains(&v) || v.is_nan() {
        return Err(format!("{s:?}: must be between 0% and 100%"));
    }
    Ok(v)
}

pub async fn run(g: &Global, a: PruneArgs) -> anyhow::Result<i32> {
    let repo = repos::open(g, false).await?;
    run_on(g, &repo, &a.flags, a.dry_run).await
}

/// Prune `repo` and render the report (also after `forget --prune`).
pub async fn run_on(
    g: &Global,
    repo: &Repository,
    flags: &PruneFlags,
    dry_run: bool,
) -> anyhow::Result<i32> {
    let report = prune(repo, &flags.options(dry_run)).await?;
    let outcome = report.outcome();
    if g.json {
        output::print_json(&json!({
            "type": "prune",
            "dry_run": report.dry_run,
            "grace_seconds": report.grace_seconds,
            "outcome": outcome,
            "delete_skipped": report.delete_skipped,
            "replicas": report.replicas,
        }));
    } else {
        print_text(&report);
    }
    Ok(exit::of(&outcome))
}

fn print_text(report: &PruneReport) {
    let (would, del, rep, wrote) = if report.dry_run {
        (
            "dry run: nothing is changed\n",
            "would delete",
            "would repack",
            "would write",
        )
    } else {
        ("", "deleted", "repacked", "wrote")
    };
    print!("{would}");
    for r in &report.replicas {
        println!(
            "{}: {} packs, {}",
            r.replica,
            r.packs,
            output::bytes(r.bytes)
        );
        if let Some(e) = &r.error {
            println!("  NOT PRUNED: {e}");
            continue;
        }
        if r.repacked > 0 {
            println!(
                "  {rep} {} packs: {wrote} {} new ({})",
                r.repacked,
                r.new_packs,
                output::bytes(r.new_bytes)
            );
        }
        println!(
            "  {del} {} packs, {} freed",
            r.deleted,
            output::bytes(r.freed_bytes)
        );
        if r.marked > 0 {
            println!(
                "  {} packs ({}) unneeded, deleted by a prune after the grace period of {}",
                r.marked,
                output::bytes(r.marked_bytes),
                grace(report.grace_seconds)
            );
        }
        if r.index_written + r.index_deleted > 0 {
            println!(
                "  index: {} files written, {} removed",
                r.index_written, r.index_deleted
            );
        }
    }
    if let Some(why) = &report.delete_skipped {
        println!("deletion postponed to a later prune: {why}");
    }
}

/// `24h`, `90m`, `45s`: the grace period as it was probably given.
fn grace(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
