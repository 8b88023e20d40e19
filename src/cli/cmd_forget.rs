//! `cairn forget`: apply retention policies (from the flags, or each
//! backend's from cairn.toml), reconciled across replicas.

use cairn::format::snapshot::{is_safety_tagged, SAFETY_TAG};
use cairn::ops::forget::{forget, Action, ForgetOptions, Policies, SnapshotFilter};
use cairn::repo::Repository;
use cairn::retention::{parse_size, CalSpan, GroupBy, Policy};
use clap::Args;
use serde_json::json;

use super::output;
use super::{exit, repos, Global, UsageError};

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to forget (id, unique prefix or `latest`), whatever the
    /// policies say.
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// … days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// … ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// … months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// … years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within DURATION of the group's newest (e.g.
    /// 1y6m, 30d, 2w, 12h; m is months).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<CalSpan>,
    /// Keep one per hour within DURATION of the group's newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<CalSpan>,
    /// Keep one per day within DURATION of the group's newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<CalSpan>,
    /// Keep one per week within DURATION of the group's newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<CalSpan>,
    /// Keep one per month within DURATION of the group's newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<CalSpan>,
    /// Keep one per year within DURATION of the group's newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<CalSpan>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Never keep fewer than N snapshots per group (the newest).
    #[arg(long, value_name = "N")]
    pub min_keep: Option<u32>,
    /// Keep every snapshot younger than DURATION (from now).
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<CalSpan>,
    /// Keep the newest snapshots no other rule keeps while the replica's
    /// estimated size stays under SIZE (e.g. 500G, 2TiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_total_size: Option<u64>,
    /// Group snapshots by these fields before applying the rules.
    #[arg(long, value_name = "host,paths,tags")]
    pub group_by: Option<GroupBy>,
    /// Only consider snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only consider snapshots with this tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only consider snapshots that include this path (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Time zone of the hour/day/week/month/year buckets [default: local].
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// Print the plan per replica, change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Do not copy kept snapshots to replicas that lack them; report them.
    #[arg(long)]
    pub no_copy: bool,
    /// Run `prune` afterwards (with --grace, --max-unused, --max-repack).
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_flags: super::cmd_prune::PruneFlags,
}

impl ForgetArgs {
    fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            keep_within_hourly: self.keep_within_hourly,
            keep_within_daily: self.keep_within_daily,
            keep_within_weekly: self.keep_within_weekly,
            keep_within_monthly: self.keep_within_monthly,
            keep_within_yearly: self.keep_within_yearly,
            keep_tags: self.keep_tag.clone(),
            group_by: self.group_by,
            min_keep: self.min_keep,
            max_age: self.max_age,
            max_total_size: self.max_total_size,
        }
    }
}

/// Rules on the command line apply to every replica; without them, the
/// policies of cairn.toml do (`--group-by` alone overrides their grouping).
fn policies(g: &Global, a: &ForgetArgs) -> anyhow::Result<Policies> {
    let flags = a.policy();
    if flags.has_rules() {
        return Ok(Policies::uniform(flags));
    }
    let mut p = repos::load_config(g)?.policies();
    if let Some(by) = a.group_by {
        for pol in p.default.iter_mut().chain(p.by_replica.values_mut()) {
            pol.group_by = Some(by);
        }
    }
    Ok(p)
}

pub async fn run(g: &Global, a: ForgetArgs) -> anyhow::Result<i32> {
    let policies = policies(g, &a)?;
    if policies.default.is_none() && policies.by_replica.is_empty() && a.snapshots.is_empty() {
        anyhow::bail!(UsageError(
            "no retention policy: give --keep-* rules or snapshot ids, or configure [retention] in cairn.toml"
                .into()
        ));
    }
    let tz = timezone(a.timezone.as_deref())?;
    let repo = repos::open(g, false).await?;
    let mut opts = ForgetOptions::new(policies);
    if !a.snapshots.is_empty() {
        let snaps = repo.list_snapshots().await?;
        for s in &a.snapshots {
            opts.ids.push(Repository::find_snapshot(&snaps, s)?.id);
        }
    }
    opts.filter = SnapshotFilter {
        hosts: a.hosts.clone(),
        tags: a.tags.clone(),
        paths: a.paths.clone(),
    };
    opts.tz = tz;
    opts.dry_run = a.dry_run;
    opts.no_copy = a.no_copy;
    let report = forget(&repo, &opts).await?;
    let outcome = report.outcome();
    if g.json {
        output::print_json(&json!({
            "type": "forget",
            "dry_run": report.dry_run,
            "outcome": outcome,
            "replicas": report.replicas,
            "snapshots": report.snapshots,
        }));
        return then_prune(g, &repo, &a, exit::of(&outcome)).await;
    }
    if report.dry_run {
        println!("dry run: nothing is changed");
    }
    for (r, rep) in report.replicas.iter().enumerate() {
        let policy = match &rep.policy {
            Some(p) => toml::to_string(p)
                .unwrap_or_default()
                .lines()
                .map(|l| l.replace('_', "-").replace(" = ", " "))
                .collect::<Vec<_>>()
                .join(", "),
            None => "none (keeps what it holds)".into(),
        };
        println!("{}  [{policy}]", rep.replica);
        if let Some(e) = &rep.error {
            println!("  FAILED: {e}");
        }
        for s in &report.snapshots {
            let Some(v) = s.replicas.get(r) else {
                continue;
            };
            if v.action == Action::Absent {
                continue;
            }
            let (word, why) = match v.action {
                Action::Keep => ("keep", join(&v.reasons)),
                Action::Copy if report.dry_run => {
                    ("copy", format!("would copy; {}", join(&v.reasons)))
                }
                Action::Copy => ("copied", join(&v.reasons)),
                Action::Missing => (
                    "MISSING",
                    format!("kept ({}) but not held", join(&v.reasons)),
                ),
                Action::Forget if s.requested => ("forget", "requested".into()),
                Action::Forget => ("forget", String::new()),
                Action::Deferred => (
                    "DEFERRED",
                    format!(
                        "kept by {}, which does not hold it",
                        v.waiting_for.join(", ")
                    ),
                ),
                Action::Absent => unreachable!(),
            };
            // Judged in a group of its own: say why it is kept beside the
            // backup of the same paths.
            let why = match is_safety_tagged(&s.tags) {
                false => why,
                true if why.is_empty() => format!("({SAFETY_TAG} safety snapshot)"),
                true => format!("{why} ({SAFETY_TAG} safety snapshot)"),
            };
            let line = format!(
                "  {word:<8} {}  {}  {:<12} {:<24} {why}",
                s.id.short(),
                s.time.strftime("%Y-%m-%d %H:%M:%S"),
                s.host,
                s.paths.join(" "),
            );
            println!("{}", line.trim_end());
        }
        let forgot = if report.dry_run {
            "would forget"
        } else {
            "forgot"
        };
        println!(
            "  {} kept, {forgot} {}, {} copied, {} missing, {} deferred",
            rep.kept, rep.forgotten, rep.copied, rep.missing, rep.deferred
        );
    }
    if report.replicas.iter().any(|r| r.forgotten > 0) && !report.dry_run && !a.prune {
        println!("run `cairn prune` to free the space of forgotten snapshots");
    }
    then_prune(g, &repo, &a, exit::of(&outcome)).await
}

/// With `--prune`, prune after forgetting; the worse exit code wins.
async fn then_prune(
    g: &Global,
    repo: &Repository,
    a: &ForgetArgs,
    code: i32,
) -> anyhow::Result<i32> {
    if !a.prune {
        return Ok(code);
    }
    let pruned = super::cmd_prune::run_on(g, repo, &a.prune_flags, a.dry_run).await?;
    Ok(if code != 0 { code } else { pruned })
}

fn join(r: &[cairn::retention::Reason]) -> String {
    r.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--timezone NAME`, or the system's.
pub fn timezone(name: Option<&str>) -> anyhow::Result<jiff::tz::TimeZone> {
    match name {
        Some(name) => Ok(jiff::tz::TimeZone::get(name)
            .map_err(|_| UsageError(format!("--timezone: {name:?} is not a known time zone")))?),
        None => Ok(jiff::tz::TimeZone::system()),
    }
}
