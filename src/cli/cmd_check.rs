//! `cairn check`.

use std::sync::Arc;

use cairn::ops::check::{check, cross_check, CheckOptions, CheckProgress, Subset};
use clap::Args;
use serde_json::json;

use super::output::{self, bytes};
use super::{exit, repos, Global};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Download every pack and authenticate every blob.
    #[arg(long)]
    pub read_data: bool,
    /// Download and authenticate only part of the packs: N/M (part N of M,
    /// the same packs on every run), P% (a random sample) or a size such as
    /// 500M (random packs up to that many bytes).
    #[arg(long, value_name = "N/M|P%|SIZE", conflicts_with = "read_data")]
    pub read_data_subset: Option<Subset>,
    /// Check only this replica (repeatable).
    #[arg(long, value_name = "REPO", conflicts_with = "all_backends")]
    pub backend: Vec<String>,
    /// Check every replica and compare them with each other (the default
    /// when no --backend is given).
    #[arg(long)]
    pub all_backends: bool,
}

pub async fn run(g: &Global, a: CheckArgs) -> anyhow::Result<i32> {
    let repo = repos::open(g, false).await?;
    let only = if a.backend.is_empty() {
        None
    } else {
        Some(repos::positions(&repo, &a.backend)?)
    };
    let progress = Arc::new(CheckProgress::default());
    let ticker = super::progress::show(g, progress.clone());
    let reports = check(
        &repo,
        &CheckOptions {
            read_data: a.read_data,
            subset: a.read_data_subset,
            only: only.clone(),
        },
        &progress,
    )
    .await;
    let cross = cross_check(&repo, only.as_deref()).await;
    ticker.stop();
    let reports = reports?;
    let unusable: Vec<String> = repo.unavailable().iter().map(|u| u.name.clone()).collect();
    let outcome = cairn::ops::check::outcome(&reports, &cross, &unusable);
    if g.json {
        output::print_json(&json!({
            "type": "check",
            "ok": outcome.is_ok(),
            "outcome": outcome,
            "replicas": reports,
            "across_replicas": cross,
            "unavailable": repo.unavailable().iter().map(|u| json!({"name": u.name, "error": output::chain(&u.error)})).collect::<Vec<_>>(),
        }));
    } else {
        for r in &reports {
            match &r.unreachable {
                Some(e) => println!("{}: CANNOT BE READ: {e}", r.replica),
                None => {
                    println!(
                        "{}: {} snapshots, {} packs ({}), {} blobs{}: {}",
                        r.replica,
                        r.snapshots,
                        r.packs,
                        bytes(r.pack_bytes),
                        r.blobs,
                        if a.read_data || a.read_data_subset.is_some() {
                            format!(", {} packs read", r.packs_read)
                        } else {
                            String::new()
                        },
                        if r.errors.is_empty() {
                            "no errors".to_string()
                        } else {
                            format!("{} ERRORS", r.errors.len())
                        }
                    );
                    for w in &r.warnings {
                        println!("  warning: {w}");
                    }
                    for e in &r.errors {
                        println!("  error: {e}");
                    }
                }
            }
        }
        for e in &cross.errors {
            println!("across replicas: error: {e}");
        }
        for w in &cross.warnings {
            println!("across replicas: warning: {w}");
        }
        for u in repo.unavailable() {
            println!(
                "{}: UNUSABLE: {}",
                u.name,
                output::chain_for(&u.name, &u.error)
            );
        }
    }
    Ok(exit::of(&outcome))
}
