//! `cairn snapshots` and `cairn ls`.

use cairn::ops::ls::{self, SnapshotFilter};
use cairn::repo::ReplicaSet;
use clap::Args;
use serde_json::json;

use super::output::{self, bytes};
use super::{exit, repos, Global};

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag.
    #[arg(long)]
    pub tag: Option<String>,
}

pub async fn snapshots(g: &Global, a: SnapshotsArgs) -> anyhow::Result<i32> {
    let repo = repos::open(g, false).await?;
    let filter = SnapshotFilter {
        host: a.host,
        tag: a.tag,
    };
    let snaps = ls::snapshots(&repo, &filter).await?;
    let names = |set: ReplicaSet| -> Vec<String> {
        set.iter().map(|i| repo.replica(i).name.clone()).collect()
    };
    if g.json {
        output::print_json(&serde_json::Value::Array(
            snaps
                .iter()
                .map(|s| {
                    let mut v = serde_json::to_value(&s.snapshot).expect("snapshot serializes");
                    v["id"] = json!(s.id.to_hex());
                    v["short_id"] = json!(s.id.short());
                    v["replicas"] = json!(names(s.replicas));
                    v
                })
                .collect(),
        ));
        return Ok(exit::OK);
    }
    println!(
        "{:<9} {:<20} {:<12} {:<10} {:>10}  Paths",
        "ID", "Time", "Host", "Tags", "Size"
    );
    for s in &snaps {
        let t = s.snapshot.time.strftime("%Y-%m-%d %H:%M:%S").to_string();
        let missing = repo.all().difference(s.replicas);
        println!(
            "{:<9} {:<20} {:<12} {:<10} {:>10}  {}{}{}",
            s.id.short(),
            t,
            s.snapshot.host,
            s.snapshot.tags.join(","),
            bytes(s.snapshot.summary.total_bytes),
            s.snapshot.paths.join(" "),
            if s.snapshot.partial {
                "  (partial)"
            } else {
                ""
            },
            if !missing.is_empty() {
                format!("  (missing on: {})", names(missing).join(", "))
            } else {
                String::new()
            },
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    /// Only this path (and below) inside the snapshot.
    pub path: Option<String>,
    /// Show mode, size and time.
    #[arg(short, long)]
    pub long: bool,
    /// Read from this replica first; others serve what it cannot
    /// [default: a local replica first].
    #[arg(long, value_name = "REPO")]
    pub from: Option<String>,
}

pub async fn ls(g: &Global, a: LsArgs) -> anyhow::Result<i32> {
    let repo = repos::open_from(g, a.from.as_deref()).await?;
    let listing = ls::ls(&repo, &a.snapshot, a.path.as_deref()).await?;
    if g.json {
        output::print_json(&serde_json::to_value(&listing.entries).expect("entries serialize"));
    } else {
        for e in &listing.entries {
            if a.long {
                let t = jiff::Timestamp::from_nanosecond(e.mtime as i128)
                    .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                println!(
                    "{:o} {:>5} {:>5} {:>12} {} {}",
                    e.mode,
                    e.uid,
                    e.gid,
                    e.size,
                    t,
                    e.display()
                );
            } else {
                println!("{}", e.display());
            }
        }
    }
    output::report_fallbacks(g, &repo);
    Ok(exit::OK)
}
