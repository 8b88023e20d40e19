//! When a job runs: a cron expression (5 fields, or 6 with seconds first)
//! evaluated in a time zone, so `0 2 * * *` means 02:00 local time across
//! daylight-saving changes. Pure: times in, times out.

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
    text: String,
}

impl Schedule {
    /// Parse `expr` in time zone `tz` (an IANA name; `None`: the system's).
    /// Errors are whole sentences naming what is wrong.
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Schedule, ScheduleError> {
        let tz = match tz {
            None => TimeZone::system(),
            Some(name) => {
                TimeZone::get(name).map_err(|_| ScheduleError::TimeZone(name.to_string()))?
            }
        };
        let fields = expr.split_whitespace().count();
        let nickname = expr.trim_start().starts_with('@');
        if !nickname && !(5..=6).contains(&fields) {
            return Err(ScheduleError::Cron {
                expr: expr.to_string(),
                why: format!(
                    "it has {fields} fields; give 5 (minute hour day month weekday) \
                     or 6 (second first)"
                ),
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_string(),
                why: e.to_string(),
            })?;
        let s = Schedule {
            cron,
            tz,
            text: expr.to_string(),
        };
        // A pattern that can never match (`0 0 31 2 *`) is a mistake too.
        if s.next_after(Timestamp::now()).is_none() {
            return Err(ScheduleError::Cron {
                expr: expr.to_string(),
                why: "it never comes due".into(),
            });
        }
        Ok(s)
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The time zone's name.
    pub fn tz_name(&self) -> &str {
        self.tz.iana_name().unwrap_or("local")
    }

    /// The first time the schedule comes due strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence::<Zoned>(&z, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last time the schedule came due at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(self.tz.clone());
        self.cron
            .find_previous_occurrence::<Zoned>(&z, true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// Whether a run came due after `last` (the last run's start) and at
    /// or before `now`: a run that was missed.
    pub fn missed_since(&self, last: Timestamp, now: Timestamp) -> bool {
        self.next_after(last).is_some_and(|due| due <= now)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("{0:?} is not a known time zone (use an IANA name such as Europe/Berlin or UTC)")]
    TimeZone(String),
    #[error("{expr:?} is not a valid cron expression: {why}")]
    Cron { expr: String, why: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn five_and_six_fields() {
        let s = Schedule::parse("30 2 * * *", Some("UTC")).unwrap();
        assert_eq!(
            s.next_after(ts("2026-03-01T00:00:00Z")),
            Some(ts("2026-03-01T02:30:00Z"))
        );
        let s = Schedule::parse("*/10 * * * * *", Some("UTC")).unwrap();
        assert_eq!(
            s.next_after(ts("2026-03-01T00:00:05Z")),
            Some(ts("2026-03-01T00:00:10Z"))
        );
        for bad in [
            "* * * *",
            "* * * * * * *",
            "61 * * * *",
            "nonsense",
            "0 0 31 2 *",
        ] {
            assert!(Schedule::parse(bad, Some("UTC")).is_err(), "{bad}");
        }
        assert!(matches!(
            Schedule::parse("* * * * *", Some("Mars/Olympus")),
            Err(ScheduleError::TimeZone(_))
        ));
    }

    #[test]
    fn local_time_across_daylight_saving() {
        // Berlin moves from UTC+1 to UTC+2 on 2026-03-29.
        let s = Schedule::parse("0 3 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            s.next_after(ts("2026-03-28T12:00:00Z")),
            Some(ts("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-03-29T12:00:00Z")),
            Some(ts("2026-03-30T01:00:00Z"))
        );
    }

    #[test]
    fn missed_runs() {
        let s = Schedule::parse("0 * * * *", Some("UTC")).unwrap();
        assert!(s.missed_since(ts("2026-03-01T00:00:00Z"), ts("2026-03-01T01:00:00Z")));
        assert!(!s.missed_since(ts("2026-03-01T00:00:00Z"), ts("2026-03-01T00:59:59Z")));
        assert_eq!(
            s.last_at_or_before(ts("2026-03-01T05:30:00Z")),
            Some(ts("2026-03-01T05:00:00Z"))
        );
    }
}
