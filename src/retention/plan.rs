//! Apply a [`Policy`] to a list of snapshots: which to keep and why. Pure:
//! the caller passes the current time, the time zone of the calendar
//! buckets and a size estimate for `max_total_size`.
//!
//! Semantics follow restic's `forget` (see docs/retention.md): snapshots are
//! grouped, each group is walked newest first, and a bucket rule such as
//! `keep_daily = 7` keeps the newest snapshot of each of the 7 newest days
//! that have one. If a rule still has counts left when it reaches a group's
//! oldest snapshot, it keeps that one too, so the history reaches back as
//! far as the counts allow.

use std::collections::BTreeMap;
use std::fmt;

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Serialize, Serializer};

use crate::format::id::Id;
use crate::format::snapshot::{is_safety_tagged, SAFETY_TAG};
use crate::retention::policy::{GroupBy, Policy, PolicyError};
use crate::retention::span::CalSpan;

/// One snapshot as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: Id,
    pub time: Timestamp,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
}

/// A calendar bucket size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    /// The bucket holding `t`: its local hour, day, ISO week, month or year,
    /// as one number that only repeats within the bucket.
    pub fn bucket(self, t: &Zoned) -> i64 {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Period::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Daily => (y * 100 + m) * 100 + d,
            Period::Weekly => {
                let w = t.date().iso_week_date();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Period::Monthly => y * 100 + m,
            Period::Yearly => y,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    fn count(self, p: &Policy) -> Option<u32> {
        match self {
            Period::Hourly => p.keep_hourly,
            Period::Daily => p.keep_daily,
            Period::Weekly => p.keep_weekly,
            Period::Monthly => p.keep_monthly,
            Period::Yearly => p.keep_yearly,
        }
    }

    fn within(self, p: &Policy) -> Option<CalSpan> {
        match self {
            Period::Hourly => p.keep_within_hourly,
            Period::Daily => p.keep_within_daily,
            Period::Weekly => p.keep_within_weekly,
            Period::Monthly => p.keep_within_monthly,
            Period::Yearly => p.keep_within_yearly,
        }
    }
}

/// Why a snapshot is kept. Displayed as `daily 3` (the third daily kept),
/// `tag release`, `within 7d`, `daily within 30d`, `min-keep`, …
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Last(u32),
    Period(Period, u32),
    Within(CalSpan),
    PeriodWithin(Period, CalSpan),
    Tag(String),
    MinKeep,
    MaxAge(CalSpan),
    MaxTotalSize,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last(n) => write!(f, "last {n}"),
            Reason::Period(p, n) => write!(f, "{} {n}", p.name()),
            Reason::Within(s) => write!(f, "within {s}"),
            Reason::PeriodWithin(p, s) => write!(f, "{} within {s}", p.name()),
            Reason::Tag(t) => write!(f, "tag {t}"),
            Reason::MinKeep => f.write_str("min-keep"),
            Reason::MaxAge(s) => write!(f, "max-age {s}"),
            Reason::MaxTotalSize => f.write_str("max-total-size"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The verdict on one candidate; kept when `reasons` is not empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Position in the candidates given to [`plan`].
    pub index: usize,
    /// The group's label, e.g. `host=db1 paths=/srv`.
    pub group: String,
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Inputs besides the policy and the snapshots.
pub struct Context<'a> {
    /// "Now", for `max_age`.
    pub now: Timestamp,
    /// The calendar of the buckets.
    pub tz: TimeZone,
    /// Estimated bytes a replica holds after prune if it keeps exactly the
    /// candidates at these positions; used by `max_total_size` only.
    pub size_of: &'a dyn Fn(&[usize]) -> u64,
}

/// Decide, for every candidate (in their order), whether `policy` keeps it.
pub fn plan(
    policy: &Policy,
    snaps: &[Candidate],
    ctx: &Context<'_>,
) -> Result<Vec<Decision>, PolicyError> {
    policy.validate()?;
    let by = policy.group_by();
    let mut decisions: Vec<Decision> = snaps
        .iter()
        .enumerate()
        .map(|(index, c)| Decision {
            index,
            group: group_label(by, c),
            reasons: Vec::new(),
        })
        .collect();
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for d in &decisions {
        groups.entry(&d.group).or_default().push(d.index);
    }
    let zoned: Vec<Zoned> = snaps
        .iter()
        .map(|c| c.time.to_zoned(ctx.tz.clone()))
        .collect();
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); snaps.len()];
    for members in groups.values() {
        let mut order = members.clone();
        newest_first(snaps, &mut order);
        plan_group(policy, &order, snaps, &zoned, ctx, &mut reasons);
    }
    if let Some(limit) = policy.max_total_size {
        fill_to_size(limit, snaps, ctx, &mut reasons);
    }
    for (d, r) in decisions.iter_mut().zip(reasons) {
        d.reasons = r;
    }
    Ok(decisions)
}

/// Newest first; equal times by id, so plans are reproducible.
fn newest_first(snaps: &[Candidate], order: &mut [usize]) {
    order.sort_by(|&a, &b| (snaps[b].time, snaps[b].id.0).cmp(&(snaps[a].time, snaps[a].id.0)));
}

fn group_label(by: GroupBy, c: &Candidate) -> String {
    let mut parts = Vec::new();
    if by.host {
        parts.push(format!("host={}", c.host));
    }
    if by.paths {
        let mut p = c.paths.clone();
        p.sort();
        parts.push(format!("paths={}", p.join(",")));
    }
    if by.tags {
        let mut t = c.tags.clone();
        t.sort();
        parts.push(format!("tags={}", t.join(",")));
    } else if is_safety_tagged(&c.tags) {
        // `restore --in-place` safety snapshots of a backed-up directory
        // share its host and paths; in the backups' group the newest of a
        // day could be one and push that day's backup out.
        parts.push(format!("tags={SAFETY_TAG}"));
    }
    parts.join(" ")
}

fn plan_group(
    policy: &Policy,
    order: &[usize],
    snaps: &[Candidate],
    zoned: &[Zoned],
    ctx: &Context<'_>,
    reasons: &mut [Vec<Reason>],
) {
    let oldest = order.len().saturating_sub(1);
    // Bucket rules with a count.
    let mut rules: Vec<(Option<Period>, u32)> = Vec::new();
    if let Some(n) = policy.keep_last {
        rules.push((None, n));
    }
    for p in Period::ALL {
        if let Some(n) = p.count(policy) {
            rules.push((Some(p), n));
        }
    }
    for (period, n) in rules {
        let mut last = None;
        let mut kept = 0;
        for (pos, &i) in order.iter().enumerate() {
            if kept == n {
                break;
            }
            let v = match period {
                Some(p) => p.bucket(&zoned[i]),
                None => pos as i64,
            };
            if last != Some(v) || pos == oldest {
                last = Some(v);
                kept += 1;
                reasons[i].push(match period {
                    Some(p) => Reason::Period(p, kept),
                    None => Reason::Last(kept),
                });
            }
        }
    }
    let Some(&newest) = order.first() else {
        return;
    };
    let within = |span: &CalSpan, i: usize| match span.before(&zoned[newest]) {
        Some(cut) => zoned[i].timestamp() > cut.timestamp(),
        None => true,
    };
    if let Some(span) = &policy.keep_within {
        for &i in order {
            if within(span, i) {
                reasons[i].push(Reason::Within(*span));
            }
        }
    }
    for p in Period::ALL {
        let Some(span) = p.within(policy) else {
            continue;
        };
        let mut last = None;
        for (pos, &i) in order.iter().enumerate() {
            if !within(&span, i) {
                break;
            }
            let v = p.bucket(&zoned[i]);
            if last != Some(v) || pos == oldest {
                last = Some(v);
                reasons[i].push(Reason::PeriodWithin(p, span));
            }
        }
    }
    for &i in order {
        for t in &snaps[i].tags {
            if policy.keep_tags.contains(t) {
                reasons[i].push(Reason::Tag(t.clone()));
            }
        }
    }
    if let Some(span) = &policy.max_age {
        let cut = span.before(&ctx.now.to_zoned(ctx.tz.clone()));
        for &i in order {
            if cut.as_ref().is_none_or(|c| snaps[i].time > c.timestamp()) {
                reasons[i].push(Reason::MaxAge(*span));
            }
        }
    }
    if let Some(n) = policy.min_keep {
        let mut have = order.iter().filter(|&&i| !reasons[i].is_empty()).count();
        for &i in order {
            if have >= n as usize {
                break;
            }
            if reasons[i].is_empty() {
                reasons[i].push(Reason::MinKeep);
                have += 1;
            }
        }
    }
}

/// Keep the newest snapshots no rule keeps while the estimate fits; stop at
/// the first that does not, so it is always the oldest that go.
fn fill_to_size(limit: u64, snaps: &[Candidate], ctx: &Context<'_>, reasons: &mut [Vec<Reason>]) {
    let mut kept: Vec<usize> = (0..snaps.len())
        .filter(|&i| !reasons[i].is_empty())
        .collect();
    let mut rest: Vec<usize> = (0..snaps.len())
        .filter(|&i| reasons[i].is_empty())
        .collect();
    newest_first(snaps, &mut rest);
    for i in rest {
        kept.push(i);
        if (ctx.size_of)(&kept) > limit {
            break;
        }
        reasons[i].push(Reason::MaxTotalSize);
    }
}
