//! `cairn mount`: the snapshots as a read-only file system until SIGINT,
//! SIGTERM or an unmount from outside (`fusermount3 -u MOUNTPOINT`).

use std::path::PathBuf;
use std::sync::Arc;

use cairn::mount::{MountError, MountOptions};
use cairn::ops::browse::Browser;
use clap::Args;

use super::output::{self, bytes};
use super::{exit, repos, Global, UsageError};

#[derive(Args, Debug)]
pub struct MountArgs {
    /// An existing directory to mount on (usually empty).
    pub mountpoint: PathBuf,
    /// Let other users see the mount (each entry keeps the owner and mode
    /// it was backed up with). As a user other than root this needs
    /// `user_allow_other` in /etc/fuse.conf.
    #[arg(long)]
    pub allow_other: bool,
    /// Read from this replica first; others serve what it cannot
    /// [default: a local replica first].
    #[arg(long, value_name = "REPO")]
    pub from: Option<String>,
}

pub async fn run(g: &Global, a: MountArgs) -> anyhow::Result<i32> {
    if !a.mountpoint.is_dir() {
        anyhow::bail!(UsageError(format!(
            "{}: not a directory to mount on",
            a.mountpoint.display()
        )));
    }
    let repo = repos::open_from(g, a.from.as_deref()).await?;
    let browser = Arc::new(Browser::new(Arc::new(repo)).await?);
    let options = MountOptions {
        allow_other: a.allow_other,
        ..MountOptions::default()
    };
    let mounted = cairn::mount::mount(browser.clone(), &a.mountpoint, &options)
        .await
        .map_err(from_mount)?;
    if !g.quiet && !g.json {
        eprintln!(
            "{} snapshots mounted read-only on {}; Ctrl-C or `fusermount3 -u {}` unmounts",
            mounted.snapshots(),
            mounted.path().display(),
            mounted.path().display()
        );
    }
    let report = mounted.serve(g.cancel.clone()).await.map_err(from_mount)?;
    if g.json {
        output::print_json(&serde_json::to_value(&report).expect("report serializes"));
    } else if !g.quiet {
        eprintln!(
            "unmounted {}: {} reads, {} served{}",
            report.mountpoint.display(),
            report.reads,
            bytes(report.bytes_read),
            if report.read_errors > 0 {
                format!(", {} failed", report.read_errors)
            } else {
                String::new()
            }
        );
    }
    output::report_fallbacks(g, browser.repo());
    Ok(exit::OK)
}

/// A repository error keeps its own exit code; the rest are plain failures.
fn from_mount(e: MountError) -> anyhow::Error {
    match e {
        MountError::Repo(e) => e.into(),
        other => other.into(),
    }
}
