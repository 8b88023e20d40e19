//! The `[jobs.NAME]` and `[daemon]` tables of cairn.toml, as written. They
//! are checked into runnable jobs by [`crate::jobs::spec`], which names the
//! key of every mistake.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[daemon]`: how `cairn daemon` runs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Where `/metrics` and `/health` are served (`--listen` wins).
    pub listen: Option<String>,
    /// The run history database [default: the state directory's
    /// `history.sqlite`].
    pub history: Option<PathBuf>,
    /// How long SIGTERM waits for running jobs before cancelling them
    /// [default: 5m].
    #[serde(default, with = "super::duration::option")]
    pub shutdown_timeout: Option<Duration>,
    /// How often replica sizes and lag are refreshed for `/metrics`
    /// [default: 15m, and after every job].
    #[serde(default, with = "super::duration::option")]
    pub status_interval: Option<Duration>,
}

/// A hook or a command: a string run by `sh -c`, or an argv array run as is.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum CommandLine {
    Shell(String),
    Argv(Vec<String>),
}

impl CommandLine {
    /// The program and its arguments.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            CommandLine::Argv(v) => v.clone(),
        }
    }
}

/// `check = true` (structure only) or `check = "1/7"` / `"10%"` (and read
/// that subset of the data).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum CheckSetting {
    Enabled(bool),
    ReadData(String),
}

/// One `[jobs.NAME]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Cron with 5 fields, or 6 with seconds first. Without one, the job
    /// runs only when asked (`cairn run NAME`).
    pub schedule: Option<String>,
    /// The time zone of the schedule [default: the system's].
    pub timezone: Option<String>,

    // The kinds; exactly one is given.
    /// Back up these paths.
    pub backup: Option<Vec<PathBuf>>,
    /// Back up this command's standard output.
    pub command: Option<Vec<String>>,
    /// Back up this SQLite database (online copy).
    pub sqlite: Option<PathBuf>,
    /// Copy what lagging replicas lack.
    pub sync: Option<bool>,
    /// Forget snapshots by the retention policies.
    pub forget: Option<bool>,
    /// Check the repository.
    pub check: Option<CheckSetting>,

    /// With `forget`: prune afterwards.
    #[serde(default)]
    pub prune: bool,
    /// The file name in the snapshot, for `command` and `sqlite`.
    pub filename: Option<String>,
    /// The backends (names in `[backends]`) the job works on [default: all].
    pub backends: Option<Vec<String>>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The host recorded in snapshots [default: this machine's name].
    pub host: Option<String>,
    #[serde(default)]
    pub one_file_system: bool,

    /// A random delay up to this before each scheduled run.
    #[serde(default, with = "super::duration::option")]
    pub jitter: Option<Duration>,
    /// Extra attempts after a failed run.
    #[serde(default)]
    pub retries: u32,
    /// The wait between attempts [default: 1m].
    #[serde(default, with = "super::duration::option")]
    pub retry_delay: Option<Duration>,
    /// A run still going after this is cancelled and counts as failed.
    #[serde(default, with = "super::duration::option")]
    pub timeout: Option<Duration>,
    /// `/health` fails when the job has not succeeded for this long.
    #[serde(default, with = "super::duration::option")]
    pub stale_after: Option<Duration>,
    /// A run missed while the daemon was down runs once when it starts.
    #[serde(default)]
    pub catch_up: bool,

    /// Run before the job; a failure aborts it (unless
    /// `continue_on_hook_failure`).
    pub before: Option<CommandLine>,
    /// Run after the job, whatever its outcome.
    pub after: Option<CommandLine>,
    /// Run after a failed or partial run.
    pub on_failure: Option<CommandLine>,
    /// How long a hook may run [default: 5m].
    #[serde(default, with = "super::duration::option")]
    pub hook_timeout: Option<Duration>,
    #[serde(default)]
    pub continue_on_hook_failure: bool,
}
