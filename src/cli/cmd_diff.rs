//! `cairn diff`: renders [`cairn::ops::diff`].

use cairn::repo::Repository;
use clap::Args;
use serde_json::json;

use super::{exit, output, repos, Global};

#[derive(Args, Debug)]
pub struct DiffArgs {
    pub snapshot1: String,
    pub snapshot2: String,
    /// Read from this replica first; others serve what it cannot
    /// [default: a local replica first].
    #[arg(long, value_name = "REPO")]
    pub from: Option<String>,
}

pub async fn run(g: &Global, a: DiffArgs) -> anyhow::Result<i32> {
    let repo = repos::open_from(g, a.from.as_deref()).await?;
    let _lock = repo.lock(cairn::repo::LockMode::Shared, "diff").await?;
    let snaps = repo.list_snapshots().await?;
    let s1 = Repository::find_snapshot(&snaps, &a.snapshot1)?;
    let s2 = Repository::find_snapshot(&snaps, &a.snapshot2)?;
    let index = repo.load_index().await?;
    let rep = cairn::ops::diff::diff(&repo, &index, &s1.snapshot.tree, &s2.snapshot.tree).await?;
    if g.json {
        output::print_json(&json!({
            "type": "diff",
            "from": s1.id.to_hex(),
            "to": s2.id.to_hex(),
            "changes": rep.changes,
        }));
    } else {
        println!("comparing snapshot {} to {}:", s1.id.short(), s2.id.short());
        for c in &rep.changes {
            println!("{}    {}", c.change, c.path);
        }
        println!(
            "{} added, {} removed, {} modified, {} type changed",
            rep.count("+"),
            rep.count("-"),
            rep.count("M"),
            rep.count("T")
        );
    }
    output::report_fallbacks(g, &repo);
    Ok(exit::OK)
}
