//! `cairn check`.

use cairn::check::{check, CheckOptions};
use clap::Args;
use serde_json::json;

use super::output::{self, bytes};
use super::{exit, repos, Global};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Download every pack and authenticate every blob.
    #[arg(long)]
    pub read_data: bool,
}

pub async fn run(g: &Global, a: CheckArgs) -> anyhow::Result<i32> {
    let repo = repos::open(g, false).await?;
    let reports = check(
        &repo,
        &CheckOptions {
            read_data: a.read_data,
        },
    )
    .await;
    let damaged = reports.iter().any(|r| !r.errors.is_empty());
    let unreachable =
        reports.iter().any(|r| r.unreachable.is_some()) || !repo.unavailable.is_empty();
    if g.json {
        output::print_json(&json!({
            "type": "check",
            "ok": !damaged && !unreachable,
            "replicas": reports,
            "unavailable": repo.unavailable.iter().map(|u| json!({"name": u.name, "error": u.error.to_string()})).collect::<Vec<_>>(),
        }));
    } else {
        for r in &reports {
            match &r.unreachable {
                Some(e) => println!("{}: UNREACHABLE: {e}", r.replica),
                None => {
                    println!(
                        "{}: {} snapshots, {} packs ({}), {} blobs{}: {}",
                        r.replica,
                        r.snapshots,
                        r.packs,
                        bytes(r.pack_bytes),
                        r.blobs,
                        if a.read_data {
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
        for u in &repo.unavailable {
            println!("{}: UNUSABLE: {}", u.name, u.error);
        }
    }
    Ok(if damaged {
        exit::DAMAGED
    } else if unreachable {
        exit::UNREACHABLE
    } else {
        exit::OK
    })
}
