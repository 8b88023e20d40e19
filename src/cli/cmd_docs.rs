//! `cairn completions SHELL` and `cairn man DIR`: shell completion scripts
//! and man pages, generated from the same clap definitions that parse the
//! command line, so they cannot drift from it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};

use super::Cli;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write `cairn.1` and one page per command
    /// (`cairn-backup.1`, `cairn-key-rotate.1`, …) into; created if missing.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Print the completion script for `a.shell` to stdout
/// (e.g. `cairn completions bash > /etc/bash_completion.d/cairn`).
pub fn completions(a: CompletionsArgs) -> anyhow::Result<i32> {
    use std::io::Write;
    let mut cmd = Cli::command();
    // Into a buffer first: clap_complete panics when its writer fails, and
    // a reader that stops early (`| head`) closes the pipe.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "cairn", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the completion script")
        }
        _ => Ok(0),
    }
}

/// Write the man pages into `a.dir`; prints the files written.
pub fn man(a: ManArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, &a.dir)
        .with_context(|| format!("writing man pages into {}", a.dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(&a.dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cairn") && n.ends_with(".1"))
        .collect();
    pages.sort();
    println!("{} man pages in {}", pages.len(), a.dir.display());
    Ok(0)
}
