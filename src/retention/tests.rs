//! The planner against a small reference model written the other way
//! round (bucket lists instead of a streaming walk, ISO weeks computed by
//! hand), over generated timelines that cross DST changes, ISO week 53,
//! leap days and year boundaries.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use proptest::prelude::*;

use super::*;
use crate::format::id::Id;

/// ISO 8601 week of a civil date, by the textbook rule: the week with the
/// year's first Thursday is week 1.
fn iso_week(y: i32, m: i8, d: i8) -> (i32, i32) {
    fn ordinal(y: i32, m: i8, d: i8) -> i32 {
        const CUM: [i32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        CUM[m as usize - 1] + i32::from(d) + i32::from(leap && m > 2)
    }
    fn weekday(y: i32, m: i8, d: i8) -> i32 {
        // Zeller-style (Sakamoto): 0 = Sunday; ISO wants Monday = 1 .. Sunday = 7.
        const T: [i32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
        let y = if m < 3 { y - 1 } else { y };
        let w = (y + y / 4 - y / 100 + y / 400 + T[m as usize - 1] + i32::from(d)) % 7;
        if w == 0 {
            7
        } else {
            w
        }
    }
    fn weeks_in(y: i32) -> i32 {
        let p = |y: i32| (y + y / 4 - y / 100 + y / 400) % 7;
        if p(y) == 4 || p(y - 1) == 3 {
            53
        } else {
            52
        }
    }
    let w = (ordinal(y, m, d) - weekday(y, m, d) + 10) / 7;
    if w < 1 {
        (y - 1, weeks_in(y - 1))
    } else if w > weeks_in(y) {
        (y + 1, 1)
    } else {
        (y, w)
    }
}

fn ref_bucket(p: Period, t: &Zoned) -> (i32, i32, i32, i32) {
    let (y, m, d, h) = (
        t.year() as i32,
        t.month() as i32,
        t.day() as i32,
        t.hour() as i32,
    );
    match p {
        Period::Hourly => (y, m, d, h),
        Period::Daily => (y, m, d, 0),
        Period::Weekly => {
            let (wy, w) = iso_week(i32::from(t.year()), t.month(), t.day());
            (wy, w, 0, 0)
        }
        Period::Monthly => (y, m, 0, 0),
        Period::Yearly => (y, 0, 0, 0),
    }
}

/// Keep the newest of each of the first `n` distinct buckets (newest
/// first), and the oldest snapshot when fewer than `n` buckets exist.
fn ref_buckets(
    order: &[usize],
    key: impl Fn(usize, usize) -> (i32, i32, i32, i32),
    n: Option<u32>,
) -> Vec<(usize, u32)> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        let k = key(pos, i);
        if !seen.contains(&k) {
            seen.push(k);
            if n.is_none_or(|n| seen.len() <= n as usize) {
                out.push((i, seen.len() as u32));
            }
        }
    }
    if let Some(&oldest) = order.last() {
        let room = n.is_none_or(|n| (seen.len() as u32) < n);
        if room && !out.iter().any(|(i, _)| *i == oldest) {
            out.push((oldest, seen.len() as u32 + 1));
        }
    }
    out
}

fn reference(policy: &Policy, snaps: &[Candidate], ctx: &Context<'_>) -> Vec<Vec<String>> {
    let zoned: Vec<Zoned> = snaps
        .iter()
        .map(|c| c.time.to_zoned(ctx.tz.clone()))
        .collect();
    let by = policy.group_by();
    let key = |c: &Candidate| {
        let mut p = c.paths.clone();
        p.sort();
        let mut t = c.tags.clone();
        t.sort();
        let safety = !by.tags && c.tags.iter().any(|t| t == "pre-restore");
        (
            by.host.then(|| c.host.clone()),
            by.paths.then_some(p),
            by.tags.then_some(t),
            safety,
        )
    };
    let mut groups: BTreeMap<_, Vec<usize>> = BTreeMap::new();
    for (i, c) in snaps.iter().enumerate() {
        groups.entry(key(c)).or_default().push(i);
    }
    let mut out: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
    for members in groups.values() {
        let mut order = members.clone();
        order.sort_by_key(|&i| std::cmp::Reverse((snaps[i].time, snaps[i].id.0)));
        let mut r: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
        if let Some(n) = policy.keep_last {
            for (i, k) in ref_buckets(&order, |pos, _| (pos as i32, 0, 0, 0), Some(n)) {
                r[i].push(format!("last {k}"));
            }
        }
        for (p, name, n) in [
            (Period::Hourly, "hourly", policy.keep_hourly),
            (Period::Daily, "daily", policy.keep_daily),
            (Period::Weekly, "weekly", policy.keep_weekly),
            (Period::Monthly, "monthly", policy.keep_monthly),
            (Period::Yearly, "yearly", policy.keep_yearly),
        ] {
            let Some(n) = n else { continue };
            for (i, k) in ref_buckets(&order, |_, i| ref_bucket(p, &zoned[i]), Some(n)) {
                r[i].push(format!("{name} {k}"));
            }
        }
        let newest = &zoned[order[0]];
        let within = |s: &CalSpan, i: usize| {
            s.before(newest)
                .is_none_or(|c| snaps[i].time > c.timestamp())
        };
        if let Some(s) = &policy.keep_within {
            for &i in &order {
                if within(s, i) {
                    r[i].push(format!("within {s}"));
                }
            }
        }
        for (p, name, s) in [
            (Period::Hourly, "hourly", policy.keep_within_hourly),
            (Period::Daily, "daily", policy.keep_within_daily),
            (Period::Weekly, "weekly", policy.keep_within_weekly),
            (Period::Monthly, "monthly", policy.keep_within_monthly),
            (Period::Yearly, "yearly", policy.keep_within_yearly),
        ] {
            let Some(s) = s else { continue };
            let inside: Vec<usize> = order.iter().copied().filter(|&i| within(&s, i)).collect();
            let oldest_inside = inside.last() == order.last();
            let mut picked = ref_buckets(&inside, |_, i| ref_bucket(p, &zoned[i]), None);
            if !oldest_inside {
                // The oldest rule only applies to the group's oldest.
                picked.retain(|(i, k)| {
                    !(Some(i) == inside.last() && *k as usize > distinct(&inside, p, &zoned))
                });
            }
            for (i, _) in picked {
                r[i].push(format!("{name} within {s}"));
            }
        }
        for &i in &order {
            for t in &snaps[i].tags {
                if policy.keep_tags.contains(t) {
                    r[i].push(format!("tag {t}"));
                }
            }
        }
        if let Some(s) = &policy.max_age {
            let cut = s.before(&ctx.now.to_zoned(ctx.tz.clone()));
            for &i in &order {
                if cut.as_ref().is_none_or(|c| snaps[i].time > c.timestamp()) {
                    r[i].push(format!("max-age {s}"));
                }
            }
        }
        if let Some(n) = policy.min_keep {
            let kept = order.iter().filter(|&&i| !r[i].is_empty()).count();
            let extra = (n as usize).saturating_sub(kept);
            for &i in order
                .iter()
                .filter(|&&i| r[i].is_empty())
                .take(extra)
                .collect::<Vec<_>>()
            {
                r[i].push("min-keep".into());
            }
        }
        for i in order {
            out[i] = std::mem::take(&mut r[i]);
        }
    }
    if let Some(limit) = policy.max_total_size {
        let mut kept: Vec<usize> = (0..snaps.len()).filter(|&i| !out[i].is_empty()).collect();
        let mut rest: Vec<usize> = (0..snaps.len()).filter(|&i| out[i].is_empty()).collect();
        rest.sort_by_key(|&i| std::cmp::Reverse((snaps[i].time, snaps[i].id.0)));
        for i in rest {
            kept.push(i);
            if (ctx.size_of)(&kept) > limit {
                break;
            }
            out[i].push("max-total-size".into());
        }
    }
    out
}

fn distinct(order: &[usize], p: Period, zoned: &[Zoned]) -> usize {
    let mut v: Vec<_> = order.iter().map(|&i| ref_bucket(p, &zoned[i])).collect();
    v.sort();
    v.dedup();
    v.len()
}

/// Interesting moments: DST changes in Berlin and New York (and Lord Howe's
/// half-hour one), ISO week 53 of 2020, leap days, a year boundary.
const ANCHORS: [&str; 8] = [
    "2021-03-28T01:30:00Z",
    "2021-10-31T00:30:00Z",
    "2021-11-07T05:30:00Z",
    "2020-12-31T12:00:00Z",
    "2020-02-29T23:30:00Z",
    "2024-02-29T00:30:00Z",
    "2015-12-31T23:00:00Z",
    "2022-04-02T15:00:00Z",
];
const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

fn candidate(i: usize, time: Timestamp, host: u8, path: u8, tags: u8) -> Candidate {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Candidate {
        id: Id(id),
        time,
        host: format!("h{host}"),
        paths: vec![format!("/p{path}")],
        tags: ["r", "s", "pre-restore"]
            .iter()
            .enumerate()
            .filter(|(b, _)| tags & (1 << b) != 0)
            .map(|(_, t)| t.to_string())
            .collect(),
    }
}

fn span_strategy() -> impl Strategy<Value = Option<CalSpan>> {
    prop::option::of(prop::sample::select(vec![
        "6h", "2d", "1w", "1m", "1y", "1m3d",
    ]))
    .prop_map(|s| s.map(|s| s.parse().unwrap()))
}

fn count_strategy() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(0u32..5)
}

prop_compose! {
    fn policy_strategy()(
        counts in prop::collection::vec(count_strategy(), 7),
        spans in prop::collection::vec(span_strategy(), 7),
        tag in prop::option::of(prop::sample::select(vec!["r", "s"])),
        group in prop::sample::select(vec!["host,paths", "host", "", "host,paths,tags"]),
        size in prop::option::of(0u64..20),
    ) -> Policy {
        Policy {
            keep_last: counts[0],
            keep_hourly: counts[1],
            keep_daily: counts[2],
            keep_weekly: counts[3],
            keep_monthly: counts[4],
            keep_yearly: counts[5],
            min_keep: counts[6],
            keep_within: spans[0],
            keep_within_hourly: spans[1],
            keep_within_daily: spans[2],
            keep_within_weekly: spans[3],
            keep_within_monthly: spans[4],
            keep_within_yearly: spans[5],
            max_age: spans[6],
            keep_tags: tag.into_iter().map(String::from).collect(),
            group_by: Some(group.parse().unwrap()),
            max_total_size: size,
        }
    }
}

prop_compose! {
    fn timeline_strategy()(
        points in prop::collection::vec(
            (0..ANCHORS.len(), -400i64..400, 0u8..2, 0u8..2, 0u8..8), 0..30),
    ) -> Vec<Candidate> {
        points.into_iter().enumerate().map(|(i, (a, hours, host, path, tags))| {
            let base: Timestamp = ANCHORS[a].parse().unwrap();
            // Offsets of whole and half hours land on both sides of each
            // change and into repeated local hours.
            let t = base.checked_add(jiff::SignedDuration::from_mins(hours * 30)).unwrap();
            candidate(i, t, host, path, tags)
        }).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn planner_matches_the_reference_model(
        policy in policy_strategy(),
        snaps in timeline_strategy(),
        zone in prop::sample::select(ZONES.to_vec()),
        now_after in 0i64..2000,
    ) {
        let tz = TimeZone::get(zone).unwrap();
        let newest = snaps.iter().map(|c| c.time).max().unwrap_or(Timestamp::UNIX_EPOCH);
        let now = newest.checked_add(jiff::SignedDuration::from_hours(now_after)).unwrap();
        // Each snapshot adds 3 bytes, shared data 1: a simple monotone estimate.
        let size_of = |kept: &[usize]| 1 + 3 * kept.len() as u64;
        let ctx = Context { now, tz, size_of: &size_of };
        match plan(&policy, &snaps, &ctx) {
            Err(e) => prop_assert_eq!(Some(e), policy.validate().err()),
            Ok(got) => {
                let want = reference(&policy, &snaps, &ctx);
                let mut got_r: Vec<Vec<String>> = got.iter().map(|d| d.reasons.iter().map(|r| r.to_string()).collect()).collect();
                let mut want = want;
                for v in got_r.iter_mut().chain(want.iter_mut()) {
                    v.sort();
                }
                prop_assert_eq!(got_r, want);
                // Never an empty group when a count rule keeps something.
                let groups: std::collections::BTreeSet<&str> = got.iter().map(|d| d.group.as_str()).collect();
                if policy.keep_last.unwrap_or(0) > 0 || policy.min_keep.unwrap_or(0) > 0 {
                    for g in groups {
                        prop_assert!(got.iter().any(|d| d.group == g && d.keep()), "group {} lost everything", g);
                    }
                }
            }
        }
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn run(policy: &Policy, times: &[&str], zone: &str) -> Vec<Vec<String>> {
    let snaps: Vec<Candidate> = times
        .iter()
        .enumerate()
        .map(|(i, t)| candidate(i, at(t), 0, 0, 0))
        .collect();
    let none = |_: &[usize]| 0;
    let ctx = Context {
        now: at("2030-01-01T00:00:00Z"),
        tz: TimeZone::get(zone).unwrap(),
        size_of: &none,
    };
    plan(policy, &snaps, &ctx)
        .unwrap()
        .into_iter()
        .map(|d| d.reasons.iter().map(|r| r.to_string()).collect())
        .collect()
}

#[test]
fn iso_week_53_is_one_bucket_across_new_year() {
    // 2020-12-31 (Thursday) and 2021-01-03 (Sunday) are both in 2020-W53;
    // 2021-01-04 starts 2021-W01.
    assert_eq!(iso_week(2020, 12, 31), (2020, 53));
    assert_eq!(iso_week(2021, 1, 3), (2020, 53));
    assert_eq!(iso_week(2021, 1, 4), (2021, 1));
    let weekly = Policy {
        keep_weekly: Some(5),
        ..Default::default()
    };
    let r = run(
        &weekly,
        &[
            "2020-12-31T10:00:00Z",
            "2021-01-03T10:00:00Z",
            "2021-01-04T10:00:00Z",
        ],
        "UTC",
    );
    assert_eq!(r[2], ["weekly 1"]);
    assert_eq!(r[1], ["weekly 2"]);
    // 2020-12-31 is the oldest and counts are left: kept as well.
    assert_eq!(r[0], ["weekly 3"]);
}

#[test]
fn dst_fall_back_repeats_a_local_hour() {
    // Berlin, 31 Oct 2021: 02:30 CEST (00:30Z) and 02:30 CET (01:30Z) are
    // the same local hour, one hourly bucket.
    let hourly = Policy {
        keep_hourly: Some(1),
        ..Default::default()
    };
    let r = run(
        &hourly,
        &["2021-10-31T00:30:00Z", "2021-10-31T01:30:00Z"],
        "Europe/Berlin",
    );
    assert_eq!(r, vec![Vec::<String>::new(), vec!["hourly 1".to_string()]]);
    // In UTC they are two hours.
    let r = run(
        &Policy {
            keep_hourly: Some(2),
            ..Default::default()
        },
        &[
            "2021-10-31T00:30:00Z",
            "2021-10-31T01:30:00Z",
            "2021-10-31T01:40:00Z",
        ],
        "UTC",
    );
    assert_eq!(r[0], ["hourly 2"]);
}

#[test]
fn leap_day_and_local_midnight() {
    let daily = Policy {
        keep_daily: Some(2),
        ..Default::default()
    };
    // 23:30Z on 28 Feb is already 29 Feb in Berlin.
    let r = run(
        &daily,
        &[
            "2024-02-28T22:30:00Z",
            "2024-02-28T23:30:00Z",
            "2024-03-01T08:00:00Z",
        ],
        "Europe/Berlin",
    );
    assert_eq!(r[2], ["daily 1"]);
    assert_eq!(r[1], ["daily 2"]);
    assert!(r[0].is_empty());
}

#[test]
fn typical_gfs_policy_and_reasons() {
    // One snapshot a day at 03:00 for 400 days.
    let start = at("2025-01-01T03:00:00Z");
    let times: Vec<String> = (0..400)
        .map(|d| {
            start
                .checked_add(jiff::SignedDuration::from_hours(24 * d))
                .unwrap()
                .to_string()
        })
        .collect();
    let refs: Vec<&str> = times.iter().map(String::as_str).collect();
    let p = Policy {
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(12),
        keep_yearly: Some(2),
        ..Default::default()
    };
    let r = run(&p, &refs, "UTC");
    // Days 2026-01-29..02-04; weeks ending 01-25 and 01-18 (02-01 is a
    // daily already); month ends 2025-03-31..12-31 (01-31 is a daily).
    assert_eq!(r.iter().filter(|v| !v.is_empty()).count(), 7 + 2 + 10);
    assert_eq!(r[399], ["daily 1", "weekly 1", "monthly 1", "yearly 1"]);
    assert_eq!(r[364], ["monthly 3", "yearly 2"]);
    assert!(r[0].is_empty());
    // A third year has no bucket of its own: the oldest snapshot takes it.
    let p3 = Policy {
        keep_yearly: Some(3),
        ..p
    };
    assert_eq!(run(&p3, &refs, "UTC")[0], ["yearly 3"]);
}

#[test]
fn a_safety_snapshot_never_takes_the_place_of_a_backup() {
    // A day's backup, then an in-place restore's safety snapshot of the same
    // directory later that day: keep-daily keeps the backup, and the safety
    // snapshots are judged on their own.
    let daily = Policy {
        keep_daily: Some(1),
        ..Default::default()
    };
    let snaps = vec![
        candidate(0, at("2026-12-03T01:00:00Z"), 0, 0, 0),
        candidate(1, at("2026-12-04T01:00:00Z"), 0, 0, 0),
        candidate(2, at("2026-12-04T09:00:00Z"), 0, 0, 0b100),
    ];
    let none = |_: &[usize]| 0;
    let ctx = Context {
        now: at("2026-12-05T00:00:00Z"),
        tz: TimeZone::get("UTC").unwrap(),
        size_of: &none,
    };
    let p = plan(&daily, &snaps, &ctx).unwrap();
    let kept: Vec<bool> = p.iter().map(|d| !d.reasons.is_empty()).collect();
    assert_eq!(kept, [false, true, true], "{p:?}");
    assert_ne!(p[1].group, p[2].group);
    assert!(p[2].group.ends_with("tags=pre-restore"), "{}", p[2].group);
}
