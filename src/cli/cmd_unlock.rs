//! `cairn unlock`: remove stale locks, or every lock.

use clap::Args;

use super::{exit, output, repos, Global};

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones. Only when no other cairn
    /// process is using the repository.
    #[arg(long)]
    pub remove_all: bool,
}

pub async fn run(g: &Global, a: UnlockArgs) -> anyhow::Result<i32> {
    let repo = repos::open(g, false).await?;
    let removed = repo.remove_locks(a.remove_all).await?;
    if g.json {
        output::print_json(&serde_json::json!({ "removed": removed }));
    } else if !g.quiet {
        for l in &removed {
            println!("removed {l}");
        }
        println!("{} lock(s) removed", removed.len());
    }
    Ok(exit::OK)
}
