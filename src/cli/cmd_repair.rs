//! `cairn repair packs|index|snapshots`.

use cairn::ops::repair::{
    repair_index, repair_packs, repair_snapshots, RepairOptions, RepairReport,
};
use clap::{Args, Subcommand};
use serde_json::json;

use super::output;
use super::{exit, repos, Global};

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(subcommand)]
    pub what: RepairCommand,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Replace missing or damaged packs of one replica with good copies
    /// from the others.
    Packs {
        /// The replica to repair (as named with --repo or in cairn.toml).
        #[arg(long, value_name = "REPO")]
        backend: String,
        /// Also download every pack of the replica to find damaged bytes
        /// (otherwise only missing packs and wrong sizes are found).
        #[arg(long)]
        read_data: bool,
        /// Say what would be done, change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Rebuild one replica's index files from the packs it holds.
    Index {
        /// The replica to repair.
        #[arg(long, value_name = "REPO")]
        backend: String,
        /// Say what would be done, change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Mark (or with --forget remove) snapshots whose data is gone from
    /// every replica, naming the affected files.
    Snapshots {
        /// Remove damaged snapshots instead of marking them.
        #[arg(long)]
        forget: bool,
        /// Say what would be done, change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
}

pub async fn run(g: &Global, a: RepairArgs) -> anyhow::Result<i32> {
    let repo = repos::open(g, false).await?;
    match a.what {
        RepairCommand::Packs {
            backend,
            read_data,
            dry_run,
        } => {
            let t = repos::positions(&repo, &[backend])?[0];
            let rep = repair_packs(&repo, t, &RepairOptions { dry_run, read_data }).await?;
            Ok(report(g, "packs", read_data, &rep))
        }
        RepairCommand::Index { backend, dry_run } => {
            let t = repos::positions(&repo, &[backend])?[0];
            let opts = RepairOptions {
                dry_run,
                read_data: false,
            };
            let rep = repair_index(&repo, t, &opts).await?;
            Ok(report(g, "index", false, &rep))
        }
        RepairCommand::Snapshots { forget, dry_run } => {
            let opts = RepairOptions {
                dry_run,
                read_data: false,
            };
            let rep = repair_snapshots(&repo, forget, &opts).await?;
            if g.json {
                output::print_json(&json!({"type": "repair", "what": "snapshots", "result": rep}));
            } else {
                if rep.snapshots.is_empty() {
                    println!("no snapshot needs data that is gone from every replica");
                }
                for s in &rep.snapshots {
                    println!(
                        "snapshot {} ({}, {}): {} path(s) lost; {}",
                        &s.id[..8],
                        s.time.strftime("%Y-%m-%d %H:%M:%S"),
                        s.paths.join(" "),
                        s.affected.len(),
                        s.action
                    );
                    for p in &s.affected {
                        println!("  {p}");
                    }
                }
                for e in &rep.errors {
                    println!("error: {e}");
                }
                if !rep.snapshots.is_empty() && !dry_run {
                    println!(
                        "the lost packs are still listed in the index files; `cairn repair index --backend REPO` on each replica drops them"
                    );
                }
            }
            Ok(exit::of(&rep.outcome()))
        }
    }
}

fn report(g: &Global, what: &str, read_data: bool, rep: &RepairReport) -> i32 {
    if g.json {
        output::print_json(&json!({"type": "repair", "what": what, "result": rep}));
    } else {
        if rep.actions.is_empty() && rep.unfixable.is_empty() {
            println!(
                "{}: nothing to repair{}",
                rep.replica,
                if what == "packs" && !read_data {
                    " (packs were checked for presence and size; add --read-data to verify their contents)"
                } else {
                    ""
                }
            );
        }
        for a in &rep.actions {
            println!("{}: {a}", rep.replica);
        }
        for u in &rep.unfixable {
            println!("{}: NOT REPAIRED: {u}", rep.replica);
        }
        if rep.dry_run && !rep.actions.is_empty() {
            println!("(dry run: nothing was changed)");
        }
    }
    exit::of(&rep.outcome())
}
