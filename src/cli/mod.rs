//! Command-line interface (binary only): argument parsing, choosing the
//! replicas, passphrases, output and progress. The engine lives in the
//! library; only this module names concrete backends.

mod cmd_backend;
mod cmd_backup;
mod cmd_check;
mod cmd_config;
mod cmd_copy;
mod cmd_daemon;
mod cmd_diff;
mod cmd_docs;
mod cmd_forget;
mod cmd_init;
mod cmd_jobs;
mod cmd_key;
mod cmd_key_epochs;
mod cmd_ls;
mod cmd_mount;
mod cmd_prune;
mod cmd_repair;
mod cmd_restore;
mod cmd_restore_in_place;
mod cmd_serve;
mod cmd_stats;
mod cmd_status;
mod cmd_sync;
mod cmd_unlock;
mod exit;
mod jobs_open;
mod output;
mod password;
mod progress;
mod repos;
mod signals;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A mistake in the command line or configuration (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A replica named on the command line cannot be used (exit code 6).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReplicaUnusable(pub String);

/// Encrypted, deduplicating backups written to several repositories in one run.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "Repositories: a path (local disk) or, with network backends, a URL. \
Give --repo several times (or CAIRN_REPO=a,b) to write every backup to all of them.\n\
Without any repository, cairn uses a default local repository under ~/.local/share/cairn.\n\
Exit codes: 0 ok, 1 error, 2 usage, 3 incomplete, 4 a replica failed, 5 damaged, \
6 unreachable, 10 no repository, 11 locked, 12 wrong passphrase, 130 interrupted \
(see docs/exit-codes.md).";

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository location; repeat to replicate to several.
    #[arg(
        short = 'r',
        long = "repo",
        global = true,
        env = "CAIRN_REPO",
        value_delimiter = ','
    )]
    pub repos: Vec<String>,
    /// Configuration file naming backends [default: ~/.config/cairn/cairn.toml if present].
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read the passphrase from this file (first line).
    #[arg(long, global = true, env = "CAIRN_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Machine-readable output: one JSON document, or JSON lines for progress.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Limit uploads to this many KiB/s per backend (at least 1).
    #[arg(
        long,
        global = true,
        env = "CAIRN_LIMIT_UPLOAD",
        value_name = "KiB/s",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub limit_upload: Option<u64>,
    /// Limit downloads to this many KiB/s per backend (at least 1).
    #[arg(
        long,
        global = true,
        env = "CAIRN_LIMIT_DOWNLOAD",
        value_name = "KiB/s",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub limit_download: Option<u64>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When the repository is locked by another process, keep trying this
    /// long (e.g. 30s, 5m, 1h) instead of failing at once.
    #[arg(long, global = true, env = "CAIRN_RETRY_LOCK", value_name = "DURATION",
          value_parser = parse_duration)]
    pub retry_lock: Option<std::time::Duration>,
    /// Try the key slot whose id starts with this first (see `cairn cat keys`);
    /// the others are still tried after it.
    #[arg(long, global = true, env = "CAIRN_KEY_HINT", value_name = "SLOT-ID")]
    pub key_hint: Option<String>,
    /// A replica whose snapshot listing went backwards since this host last
    /// saw it (rolled back, or snapshots deleted) fails the command with
    /// exit code 5, not only a warning.
    #[arg(long, global = true, env = "CAIRN_STRICT")]
    pub strict: bool,
    /// Log lines as text or as JSON objects (one per line).
    #[arg(long, global = true, env = "CAIRN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Cancelled by SIGINT or SIGTERM (not an argument).
    #[arg(skip)]
    pub cancel: tokio_util::sync::CancellationToken,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A duration such as `90s`, `5m`, `1h30m` or `2 days`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    cairn::config::duration::parse(s)
}

/// A point in time: RFC 3339 with an offset, or `YYYY-MM-DD HH:MM[:SS]`
/// (a space or `T` between) in the local time zone.
pub fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    let s = s.trim();
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::DateTime>()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::system()))
        .map(|z| z.timestamp())
        .map_err(|_| {
            format!(
                "{s:?} is not a time: use RFC 3339 (2026-01-31T03:00:00Z) or YYYY-MM-DD HH:MM:SS"
            )
        })
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository on every given location.
    Init(cmd_init::InitArgs),
    /// Back up files and directories, standard input, a command's output
    /// (`pg_dump`) or a SQLite database.
    Backup(cmd_backup::BackupArgs),
    /// List snapshots and which replicas hold them.
    Snapshots(cmd_ls::SnapshotsArgs),
    /// List the contents of a snapshot.
    Ls(cmd_ls::LsArgs),
    /// Restore a snapshot (or a path in it) into a directory.
    Restore(cmd_restore::RestoreArgs),
    /// Show the snapshots as a read-only file system (FUSE):
    /// snapshots/<time>/…, latest, hosts/<host>/ and tags/<tag>/. Files
    /// are read when opened, each piece from the first replica with a good
    /// copy. Ctrl-C (or `fusermount3 -u MOUNTPOINT`) unmounts.
    Mount(cmd_mount::MountArgs),
    /// Which replica holds which snapshot, and how far each is behind.
    Status(cmd_status::StatusArgs),
    /// Copy what lagging replicas lack from the others (encrypted, verified).
    Sync(cmd_sync::SyncArgs),
    /// Copy snapshots into another repository with its own keyring
    /// (decrypted, re-chunked and re-encrypted).
    Copy(cmd_copy::CopyArgs),
    /// Forget snapshots by retention policy (per replica, reconciled) or by id.
    Forget(cmd_forget::ForgetArgs),
    /// Free the space of data no snapshot needs (mark, then delete after a
    /// grace period; repack partly used packs).
    Prune(cmd_prune::PruneArgs),
    /// Manage keys: the slots that open the repository (list, add, remove,
    /// passwd) and the data key (rotate, reencrypt, retire, status, audit).
    #[command(subcommand)]
    Key(cmd_key::KeyCommand),
    /// Verify the repository on every replica.
    Check(cmd_check::CheckArgs),
    /// Heal a replica from the others, rebuild an index, or deal with lost data.
    Repair(cmd_repair::RepairArgs),
    /// Show what changed between two snapshots.
    Diff(cmd_diff::DiffArgs),
    /// Sizes of snapshots and of the repository.
    Stats(cmd_stats::StatsArgs),
    /// Print a repository object (config, snapshot, index, keys).
    Cat(cmd_stats::CatArgs),
    /// Test a storage location with the backend conformance suite.
    Backend(cmd_backend::BackendArgs),
    /// Remove stale locks (left by a killed process), or every lock.
    Unlock(cmd_unlock::UnlockArgs),
    /// Run one job of cairn.toml now, in the foreground (for systemd
    /// timers, cron and Kubernetes CronJobs).
    Run(cmd_jobs::RunArgs),
    /// List the jobs of cairn.toml with their next and last runs.
    Jobs(cmd_jobs::JobsArgs),
    /// Run the jobs of cairn.toml on their schedules, with /metrics and
    /// /health over HTTP (SIGHUP reloads, SIGTERM stops after running jobs).
    Daemon(cmd_daemon::DaemonArgs),
    /// Serve the HTTP API (snapshots, downloads, status, jobs, restore;
    /// see docs/api.md) with the bearer tokens of [[api.tokens]].
    Serve(cmd_serve::ServeArgs),
    /// Show the run history of the jobs.
    History(cmd_jobs::HistoryArgs),
    /// Show or check the configuration.
    #[command(subcommand)]
    Config(cmd_config::ConfigCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd_docs::CompletionsArgs),
    /// Write man pages for cairn and every command into a directory.
    Man(cmd_docs::ManArgs),
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    let long_running = matches!(
        cli.command,
        Command::Daemon(_) | Command::Serve(_) | Command::Mount(_)
    );
    // Before the runtime starts its threads (see the function's docs).
    cairn::sys::tune_allocator(long_running || matches!(cli.command, Command::Backup(_)));
    output::init_logging(&cli.global, long_running);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let json = cli.global.json;
    let log_json = cli.global.log_format == LogFormat::Json;
    let strict = cli.global.strict;
    let mut cli = cli;
    cli.global.cancel = tokio_util::sync::CancellationToken::new();
    let cancel = cli.global.cancel.clone();
    let result = rt.block_on(async move {
        let _signals = signals::watch(cancel, json || log_json);
        let res = run(cli).await;
        // Locks of guards dropped on an error or cancellation path.
        cairn::repo::lock::wait_released().await;
        res
    });
    match result {
        Ok(code) => exit::with_integrity(code, strict),
        Err(e) => {
            let code = exit::with_integrity(exit::code_for(&e), strict);
            let message = cairn::error::chain_of(e.chain().map(|c| c as &dyn std::error::Error));
            if json {
                println!(
                    "{}",
                    serde_json::json!({"type": "error", "message": message, "exit_code": code})
                );
            } else {
                eprintln!("error: {message}");
            }
            code
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let g = cli.global;
    let cancel = g.cancel.clone();
    // A backup or a copy stops by itself when cancelled (it stores what it
    // read and reports it); any other command is dropped at its next await point,
    // which releases its lock and leaves every replica as consistent as
    // the write ordering keeps it at any instant.
    // An in-place restore rolls back when cancelled, so it must not be
    // dropped mid-way.
    let stops_itself = matches!(
        &cli.command,
        Command::Backup(_)
            | Command::Copy(_)
            | Command::Run(_)
            | Command::Daemon(_)
            | Command::Serve(_)
            | Command::Mount(_)
    ) || matches!(&cli.command, Command::Restore(a) if a.in_place.is_some());
    let command = run_command(&g, cli.command);
    if stops_itself {
        return command.await;
    }
    tokio::select! {
        res = command => res,
        _ = cancel.cancelled() => Err(cairn::Error::Interrupted.into()),
    }
}

async fn run_command(g: &Global, command: Command) -> anyhow::Result<i32> {
    let g = g.clone();
    match command {
        Command::Init(a) => cmd_init::run(&g, a).await,
        Command::Backup(a) => cmd_backup::run(&g, a).await,
        Command::Snapshots(a) => cmd_ls::snapshots(&g, a).await,
        Command::Ls(a) => cmd_ls::ls(&g, a).await,
        Command::Restore(a) => cmd_restore::run(&g, a).await,
        Command::Mount(a) => cmd_mount::run(&g, a).await,
        Command::Status(a) => cmd_status::run(&g, a).await,
        Command::Sync(a) => cmd_sync::run(&g, a).await,
        Command::Copy(a) => cmd_copy::run(&g, a).await,
        Command::Forget(a) => cmd_forget::run(&g, a).await,
        Command::Prune(a) => cmd_prune::run(&g, a).await,
        Command::Key(c) => cmd_key::run(&g, c).await,
        Command::Check(a) => cmd_check::run(&g, a).await,
        Command::Repair(a) => cmd_repair::run(&g, a).await,
        Command::Diff(a) => cmd_diff::run(&g, a).await,
        Command::Stats(a) => cmd_stats::stats(&g, a).await,
        Command::Cat(a) => cmd_stats::cat(&g, a).await,
        Command::Backend(a) => cmd_backend::run(&g, a).await,
        Command::Unlock(a) => cmd_unlock::run(&g, a).await,
        Command::Run(a) => cmd_jobs::run(&g, a).await,
        Command::Jobs(a) => cmd_jobs::jobs(&g, a),
        Command::Daemon(a) => cmd_daemon::run(&g, a).await,
        Command::Serve(a) => cmd_serve::run(&g, a).await,
        Command::History(a) => cmd_jobs::history(&g, a),
        Command::Config(c) => cmd_config::run(&g, c),
        Command::Completions(a) => cmd_docs::completions(a),
        Command::Man(a) => cmd_docs::man(a),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_in_rfc3339_or_local_civil_form() {
        assert_eq!(
            parse_time("2026-01-31T03:00:00+01:00").unwrap().to_string(),
            "2026-01-31T02:00:00Z"
        );
        let local = jiff::civil::date(2026, 1, 31)
            .at(3, 0, 0, 0)
            .to_zoned(jiff::tz::TimeZone::system())
            .unwrap()
            .timestamp();
        assert_eq!(parse_time("2026-01-31 03:00:00"), Ok(local));
        assert_eq!(parse_time("2026-01-31T03:00"), Ok(local));
        for bad in ["yesterday", "2026-13-01 00:00:00", "", "2026-01-31 25:00"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
