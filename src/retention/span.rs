//! Calendar durations for retention rules (`1y6m`, `30d`, `2w`, `12h`), as
//! restic writes them: `m` is months, not minutes. They are applied in the
//! retention time zone, so "1m" before 31 March is 28 or 29 February and a
//! day across a DST change is a calendar day.

use std::fmt;
use std::str::FromStr;

use jiff::{Span, Zoned};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A positive number of years, months, weeks, days and hours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CalSpan {
    pub years: u16,
    pub months: u16,
    pub weeks: u16,
    pub days: u16,
    pub hours: u32,
}

/// Largest value of one component: 9999 years is far past any backup.
const MAX_COMPONENT: u32 = 9999;

impl CalSpan {
    /// `t` moved back by this span in its own time zone; `None` if that
    /// leaves the supported calendar (it then keeps everything older too).
    pub fn before(&self, t: &Zoned) -> Option<Zoned> {
        let span = Span::new()
            .years(i64::from(self.years))
            .months(i64::from(self.months))
            .weeks(i64::from(self.weeks))
            .days(i64::from(self.days))
            .hours(i64::from(self.hours));
        t.checked_sub(span).ok()
    }
}

impl FromStr for CalSpan {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a duration like 1y6m, 30d, 2w or 12h (m is months)");
        let mut span = CalSpan::default();
        let mut digits = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: u32 = digits.parse().map_err(|_| bad())?;
            if n > MAX_COMPONENT {
                return Err(format!("{s:?}: {n} is over the limit of {MAX_COMPONENT}"));
            }
            digits.clear();
            // Both casts are lossless: n <= 9999.
            match c {
                'y' => span.years = n as u16,
                'm' => span.months = n as u16,
                'w' => span.weeks = n as u16,
                'd' => span.days = n as u16,
                'h' => span.hours = n,
                _ => return Err(bad()),
            }
            any |= n > 0;
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        if !any {
            return Err(format!(
                "{s:?}: a retention duration must be longer than zero"
            ));
        }
        Ok(span)
    }
}

impl fmt::Display for CalSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (u32::from(self.years), 'y'),
            (u32::from(self.months), 'm'),
            (u32::from(self.weeks), 'w'),
            (u32::from(self.days), 'd'),
            (self.hours, 'h'),
        ];
        for (n, unit) in parts {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for CalSpan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CalSpan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_restic_style() {
        let s: CalSpan = "1y6m2w3d12h".parse().unwrap();
        assert_eq!(
            s,
            CalSpan {
                years: 1,
                months: 6,
                weeks: 2,
                days: 3,
                hours: 12
            }
        );
        assert_eq!(s.to_string(), "1y6m2w3d12h");
        for bad in ["", "0d", "5", "d", "-1d", "3x", "1.5d", "99999y", "3 days"] {
            assert!(bad.parse::<CalSpan>().is_err(), "{bad}");
        }
    }

    #[test]
    fn months_are_calendar_months() {
        let t: Zoned = "2024-03-31T12:00[Europe/Berlin]".parse().unwrap();
        let m: CalSpan = "1m".parse().unwrap();
        // Jiff clamps to the last day of a shorter month (2024 is a leap year).
        assert_eq!(m.before(&t).unwrap().date().to_string(), "2024-02-29");
        let d: CalSpan = "1d".parse().unwrap();
        // 31 March 2024 is a 23-hour day in Berlin: one calendar day back
        // is the same wall-clock time.
        assert_eq!(
            d.before(&t).unwrap().datetime().to_string(),
            "2024-03-30T12:00:00"
        );
    }

    proptest! {
        #[test]
        fn display_round_trips(y in 0u16..50, m in 0u16..50, w in 0u16..50, d in 0u16..50, h in 0u32..50) {
            let s = CalSpan { years: y, months: m, weeks: w, days: d, hours: h };
            prop_assume!(s != CalSpan::default());
            prop_assert_eq!(s.to_string().parse::<CalSpan>().unwrap(), s);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,20}") {
            let _ = s.parse::<CalSpan>();
        }
    }
}
