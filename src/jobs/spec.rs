//! From `[jobs.NAME]` as written to a job that can run: exactly one kind,
//! a schedule that parses in its time zone, backends that exist, durations
//! in range. Every mistake is a [`Problem`] naming its key, so `config
//! validate` and `daemon` can say file, line and key.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::jobs::{CheckSetting, CommandLine, JobConfig};
use crate::config::ConfigFile;
use crate::ops::check::Subset;

use super::schedule::Schedule;

/// What a job does.
#[derive(Clone, Debug)]
pub enum JobKind {
    Backup(Vec<PathBuf>),
    Command(Vec<String>),
    Sqlite(PathBuf),
    Sync,
    Forget { prune: bool },
    Check { subset: Option<Subset> },
}

impl JobKind {
    /// The key that names the kind in cairn.toml.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Backup(_) => "backup",
            JobKind::Command(_) => "command",
            JobKind::Sqlite(_) => "sqlite",
            JobKind::Sync => "sync",
            JobKind::Forget { .. } => "forget",
            JobKind::Check { .. } => "check",
        }
    }

    /// Whether a successful run of this kind wrote to the replicas it
    /// reports (a backup or a sync), so it counts as their last write.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            JobKind::Backup(_) | JobKind::Command(_) | JobKind::Sqlite(_) | JobKind::Sync
        )
    }
}

/// Commands run around a job.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    pub before: Option<Vec<String>>,
    pub after: Option<Vec<String>>,
    pub on_failure: Option<Vec<String>>,
    pub timeout: Duration,
    pub continue_on_failure: bool,
}

/// A checked job.
#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    pub schedule: Option<Schedule>,
    pub kind: JobKind,
    /// Backend names; `None`: every backend of the configuration.
    pub backends: Option<Vec<String>>,
    pub tags: Vec<String>,
    pub exclude: Vec<String>,
    pub host: Option<String>,
    pub one_file_system: bool,
    pub filename: Option<String>,
    pub jitter: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
    pub timeout: Option<Duration>,
    pub stale_after: Option<Duration>,
    pub catch_up: bool,
    pub hooks: Hooks,
}

/// One mistake in a job's table: the key path under `jobs.NAME` and what
/// is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `["jobs", "nightly", "schedule"]`.
    pub path: Vec<String>,
    pub message: String,
}

const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(60);
/// More attempts than this are a typo, and would hide a failing job.
const MAX_RETRIES: u32 = 20;

/// Check every `[jobs]` table of `config`; the jobs, or every problem.
pub fn jobs(config: &ConfigFile) -> Result<Vec<Job>, Vec<Problem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (name, jc) in &config.jobs {
        match job(config, name, jc) {
            Ok(j) => out.push(j),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn job(config: &ConfigFile, name: &str, c: &JobConfig) -> Result<Job, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        let mut path = vec!["jobs".to_string(), name.to_string()];
        if !key.is_empty() {
            path.push(key.to_string());
        }
        problems.push(Problem { path, message });
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problem(
            "",
            format!("the job name {name:?} may hold only letters, digits, '-', '_' and '.'"),
        );
    }
    let schedule = match &c.schedule {
        None => {
            if c.timezone.is_some() {
                problem("timezone", "a time zone needs a schedule".into());
            }
            None
        }
        Some(expr) => match Schedule::parse(expr, c.timezone.as_deref()) {
            Ok(s) => Some(s),
            Err(e @ super::schedule::ScheduleError::TimeZone(_)) => {
                problem("timezone", e.to_string());
                None
            }
            Err(e) => {
                problem("schedule", e.to_string());
                None
            }
        },
    };
    let mut kinds = Vec::new();
    if let Some(paths) = &c.backup {
        if paths.is_empty() {
            problem("backup", "give at least one path to back up".into());
        }
        for p in paths {
            if !p.is_absolute() {
                problem(
                    "backup",
                    format!(
                        "{} is relative; a job's paths must be absolute",
                        p.display()
                    ),
                );
            }
        }
        kinds.push(JobKind::Backup(paths.clone()));
    }
    if let Some(argv) = &c.command {
        if argv.is_empty() || argv[0].is_empty() {
            problem("command", "give the program and its arguments".into());
        }
        kinds.push(JobKind::Command(argv.clone()));
    }
    if let Some(db) = &c.sqlite {
        if !db.is_absolute() {
            problem(
                "sqlite",
                format!("{} is relative; give an absolute path", db.display()),
            );
        }
        kinds.push(JobKind::Sqlite(db.clone()));
    }
    if c.sync == Some(true) {
        kinds.push(JobKind::Sync);
    }
    if c.forget == Some(true) {
        if config.retention.is_none() && config.backends.values().all(|b| b.retention.is_none()) {
            problem(
                "forget",
                "no retention policy: configure [retention] or [backends.NAME.retention]".into(),
            );
        }
        kinds.push(JobKind::Forget { prune: c.prune });
    }
    match &c.check {
        None | Some(CheckSetting::Enabled(false)) => {}
        Some(CheckSetting::Enabled(true)) => kinds.push(JobKind::Check { subset: None }),
        Some(CheckSetting::ReadData(s)) => match s.parse::<Subset>() {
            Ok(sub) => kinds.push(JobKind::Check { subset: Some(sub) }),
            Err(e) => problem("check", format!("{s:?}: {e}")),
        },
    }
    if c.prune && c.forget != Some(true) {
        problem("prune", "`prune = true` goes with `forget = true`".into());
    }
    if c.filename.is_some() && c.command.is_none() && c.sqlite.is_none() {
        problem(
            "filename",
            "a file name is for `command` and `sqlite` jobs".into(),
        );
    }
    if let Some(f) = &c.filename {
        if f.is_empty() || f.contains('/') || f == "." || f == ".." {
            problem("filename", format!("{f:?} is not a file name"));
        }
    }
    if let Some(names) = &c.backends {
        if names.is_empty() {
            problem(
                "backends",
                "name at least one backend, or leave it out for all".into(),
            );
        }
        for n in names {
            if !config.backends.contains_key(n) {
                let known: Vec<&str> = config.backends.keys().map(String::as_str).collect();
                problem(
                    "backends",
                    if known.is_empty() {
                        format!("{n:?} is not a backend: cairn.toml names none ([backends.NAME])")
                    } else {
                        format!(
                            "{n:?} is not a backend of cairn.toml (known: {})",
                            known.join(", ")
                        )
                    },
                );
            }
        }
    }
    if c.retries > MAX_RETRIES {
        problem(
            "retries",
            format!("{} retries: at most {MAX_RETRIES}", c.retries),
        );
    }
    for (key, d) in [
        ("timeout", c.timeout),
        ("stale_after", c.stale_after),
        ("hook_timeout", c.hook_timeout),
    ] {
        if d == Some(Duration::ZERO) {
            problem(key, "must be longer than 0".into());
        }
    }
    let hooks = Hooks {
        before: hook(&mut problem, "before", &c.before),
        after: hook(&mut problem, "after", &c.after),
        on_failure: hook(&mut problem, "on_failure", &c.on_failure),
        timeout: c.hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT),
        continue_on_failure: c.continue_on_hook_failure,
    };
    // A kind given with a bad value is its own problem, not "nothing to do".
    let kind_given = matches!(c.check, Some(CheckSetting::ReadData(_)));
    let kind = match kinds.len() {
        1 => Some(kinds.remove(0)),
        0 if kind_given => None,
        0 => {
            problem(
                "",
                "nothing to do: give one of backup, command, sqlite, sync, forget or check".into(),
            );
            None
        }
        _ => {
            let names: Vec<&str> = kinds.iter().map(JobKind::name).collect();
            problem(
                names[1],
                format!(
                    "a job does one thing, this one gives {}: make one job for each",
                    names.join(" and ")
                ),
            );
            None
        }
    };
    if c.catch_up && c.schedule.is_none() {
        problem("catch_up", "catching up needs a schedule".into());
    }
    match kind {
        Some(kind) if problems.is_empty() => Ok(Job {
            name: name.to_string(),
            schedule,
            kind,
            backends: c.backends.clone(),
            tags: c.tags.clone(),
            exclude: c.exclude.clone(),
            host: c.host.clone(),
            one_file_system: c.one_file_system,
            filename: c.filename.clone(),
            jitter: c.jitter.unwrap_or_default(),
            retries: c.retries,
            retry_delay: c.retry_delay.unwrap_or(DEFAULT_RETRY_DELAY),
            timeout: c.timeout,
            stale_after: c.stale_after,
            catch_up: c.catch_up,
            hooks,
        }),
        _ => Err(problems),
    }
}

fn hook(
    problem: &mut impl FnMut(&str, String),
    key: &str,
    c: &Option<CommandLine>,
) -> Option<Vec<String>> {
    let argv = c.as_ref()?.argv();
    if argv.is_empty() || argv.last().is_some_and(|a| a.trim().is_empty()) {
        problem(key, "the hook is empty".into());
        return None;
    }
    Some(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Vec<Job>, Vec<Problem>> {
        jobs(&ConfigFile::parse(text).unwrap())
    }

    fn keys(text: &str) -> Vec<String> {
        check(text)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path.join("."))
            .collect()
    }

    const BACKENDS: &str = "[backends.a]\nurl = \"/a\"\n[backends.b]\nurl = \"/b\"\n";

    #[test]
    fn a_good_job() {
        let jobs = check(&format!(
            "{BACKENDS}[jobs.n]\nschedule = \"0 3 * * *\"\ntimezone = \"UTC\"\nbackup = [\"/srv\"]\n\
             backends = [\"b\"]\nretries = 2\njitter = \"5m\"\nbefore = \"true\"\n"
        ))
        .unwrap();
        let j = &jobs[0];
        assert_eq!(j.kind.name(), "backup");
        assert_eq!(j.jitter, Duration::from_secs(300));
        assert_eq!(j.hooks.before.as_deref().unwrap()[0], "/bin/sh");
        assert_eq!(j.backends.as_deref(), Some(&["b".to_string()][..]));
    }

    #[test]
    fn mistakes_name_their_key() {
        let k = keys(&format!(
            "{BACKENDS}[jobs.n]\nschedule = \"61 * * * *\"\nbackup = [\"/srv\"]\n"
        ));
        assert_eq!(k, ["jobs.n.schedule"]);
        let k = keys(&format!(
            "{BACKENDS}[jobs.n]\nschedule = \"* * * * *\"\ntimezone = \"Nowhere/City\"\nsync = true\n"
        ));
        assert_eq!(k, ["jobs.n.timezone"]);
        let k = keys(&format!(
            "{BACKENDS}[jobs.n]\nsync = true\nbackends = [\"a\", \"c\"]\n"
        ));
        assert_eq!(k, ["jobs.n.backends"]);
        let k = keys(&format!("{BACKENDS}[jobs.n]\nsync = true\ncheck = true\n"));
        assert_eq!(k, ["jobs.n.check"]);
        let k = keys(&format!("{BACKENDS}[jobs.n]\nschedule = \"* * * * *\"\n"));
        assert_eq!(k, ["jobs.n"]);
        let k = keys(&format!("{BACKENDS}[jobs.n]\nforget = true\n"));
        assert_eq!(k, ["jobs.n.forget"]);
        let k = keys(&format!(
            "{BACKENDS}[jobs.n]\nbackup = [\"rel\"]\nbefore = \"\"\n"
        ));
        assert_eq!(k, ["jobs.n.backup", "jobs.n.before"]);
        let k = keys(&format!("{BACKENDS}[jobs.n]\ncheck = \"2/1\"\n"));
        assert_eq!(k, ["jobs.n.check"]);
    }
}
