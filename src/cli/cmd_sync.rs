//! `cairn sync`: copy what lagging replicas lack from the others.

use std::sync::Arc;

use cairn::ops::sync::{seed, sync, SyncOptions, SyncProgress};
use cairn::Error;
use clap::Args;
use serde_json::json;

use super::output::{self, bytes};
use super::{exit, repos, Global};

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Copy only from this replica (repeatable) [default: every other replica].
    #[arg(long, value_name = "REPO")]
    pub from: Vec<String>,
    /// Bring only this replica up to date (repeatable) [default: all]. A
    /// replica named here that holds no repository yet is created as a
    /// copy of the others.
    #[arg(long, value_name = "REPO")]
    pub to: Vec<String>,
    /// Say what would be copied, copy nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

pub async fn run(g: &Global, a: SyncArgs) -> anyhow::Result<i32> {
    let mut repo = repos::open_unwarned(g).await?;
    repos::warn_unavailable(&repo, &a.to);
    let mut seeded = Vec::new();
    for name in &a.to {
        let empty = repo
            .unavailable()
            .iter()
            .any(|u| &u.name == name && matches!(u.error, Error::NotARepository(_)));
        if empty && !a.dry_run {
            seed(&mut repo, name).await?;
            seeded.push(name.clone());
        } else if empty {
            seeded.push(name.clone());
        }
    }
    if a.to.is_empty() {
        for u in repo.unavailable() {
            if matches!(u.error, Error::NotARepository(_)) {
                eprintln!(
                    "note: {} holds no repository; `cairn sync --to {}` makes it a replica",
                    u.name, u.name
                );
            }
        }
    }
    let to: Vec<usize> = if a.to.is_empty() {
        (0..repo.replicas().len()).collect()
    } else {
        let names: Vec<String> =
            a.to.iter()
                .filter(|n| !(a.dry_run && seeded.contains(n)))
                .cloned()
                .collect();
        repos::positions(&repo, &names)?
    };
    let from = if a.from.is_empty() {
        repo.all()
    } else {
        repos::positions(&repo, &a.from)?.into_iter().collect()
    };
    let progress = Arc::new(SyncProgress::new(&repo, &to));
    let ticker = super::progress::show(g, progress.clone());
    let res = sync(
        &repo,
        &SyncOptions {
            from,
            to,
            dry_run: a.dry_run,
            only: None,
        },
        &progress,
    )
    .await;
    ticker.stop();
    let reports = res?;
    let failed = reports.iter().any(|r| r.error.is_some());
    let skipped = reports.iter().any(|r| !r.skipped.is_empty());
    if g.json {
        output::print_json(&json!({
            "type": "sync", "dry_run": a.dry_run, "seeded": seeded,
            "ok": !failed && !skipped, "replicas": reports,
        }));
    } else {
        let verb = if a.dry_run { "would copy" } else { "copied" };
        for name in &seeded {
            println!(
                "{name}: {} (config and key slots copied)",
                if a.dry_run {
                    "holds no repository; would be created"
                } else {
                    "created as a new replica"
                }
            );
        }
        for r in &reports {
            if r.packs + r.index_files + r.snapshots == 0 && r.is_ok() {
                println!("{}: up to date", r.replica);
            } else {
                println!(
                    "{}: {verb} {} packs ({}), {} index files, {} snapshots",
                    r.replica,
                    r.packs,
                    bytes(r.pack_bytes),
                    r.index_files,
                    r.snapshots
                );
            }
            for s in &r.skipped {
                println!("  not copied: {s}");
            }
            if let Some(e) = &r.error {
                println!("  FAILED: {e} (what it holds is consistent; run sync again)");
            }
        }
        for u in repo.unavailable() {
            if !matches!(u.error, Error::NotARepository(_)) {
                println!(
                    "{}: UNUSABLE: {}",
                    u.name,
                    output::chain_for(&u.name, &u.error)
                );
            }
        }
    }
    // A replica named with --to that holds nothing yet was seeded above;
    // without --to, any replica that cannot be used is a finding.
    let unusable: Vec<String> = if a.to.is_empty() {
        repo.unavailable()
            .iter()
            .filter(|u| !matches!(u.error, Error::NotARepository(_)))
            .map(|u| u.name.clone())
            .collect()
    } else {
        Vec::new()
    };
    Ok(exit::of(&cairn::ops::sync::outcome(&reports, &unusable)))
}
