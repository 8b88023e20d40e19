//! `cairn diff`: added (+), removed (-), modified (M) and type-changed (T)
//! paths between two snapshots.

use cairn::ops::diff::{diff, ChangeKind};
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

/// The mark of each kind of change, in the text and in `--json`.
fn mark(c: ChangeKind) -> char {
    match c {
        ChangeKind::Added => '+',
        ChangeKind::Removed => '-',
        ChangeKind::Modified => 'M',
        ChangeKind::TypeChanged => 'T',
    }
}

pub async fn run(g: &Global, a: DiffArgs) -> anyhow::Result<i32> {
    let repo = repos::open_from(g, a.from.as_deref()).await?;
    let d = diff(&repo, &a.snapshot1, &a.snapshot2).await?;
    if g.json {
        output::print_json(&json!({
            "type": "diff",
            "from": d.from.to_hex(),
            "to": d.to.to_hex(),
            "changes": d.changes.iter().map(|c| json!({"change": mark(c.change).to_string(), "path": c.path})).collect::<Vec<_>>(),
        }));
    } else {
        println!("comparing snapshot {} to {}:", d.from.short(), d.to.short());
        for c in &d.changes {
            println!("{}    {}", mark(c.change), c.path);
        }
        println!(
            "{} added, {} removed, {} modified, {} type changed",
            d.counts.added, d.counts.removed, d.counts.modified, d.counts.type_changed
        );
    }
    output::report_fallbacks(g, &repo);
    Ok(exit::OK)
}
