//! Durations as cairn.toml writes them: `30s`, `5m`, `1h30m`, `2d`, an ISO
//! 8601 `PT10S`, or a bare number of seconds (a TOML integer or a string).
//! The same syntax as the command line's duration flags, so a value can be
//! copied from one to the other.
//!
//! Use it on a field with `#[serde(with = "crate::config::duration")]`, or
//! `crate::config::duration::option` for an `Option<Duration>`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// `s` as a duration, or a message saying what is accepted.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let d: jiff::SignedDuration = s
        .parse()
        .or_else(|_| {
            s.parse::<jiff::Span>()
                .and_then(|sp| sp.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
        })
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 5m, 1h30m, 2d)"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?}: a duration cannot be negative"))
}

/// `d` as [`parse`] reads it back, in the friendliest units (`1h 30m`).
pub fn format(d: Duration) -> String {
    match jiff::SignedDuration::try_from(d) {
        Ok(s) if s.is_zero() => "0s".to_string(),
        Ok(s) => format!("{s:#}"),
        Err(_) => format!("{}s", d.as_secs()),
    }
}

/// A string or a whole number of seconds, as written.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Seconds(u64),
    Text(String),
}

pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    match Written::deserialize(de) {
        Ok(Written::Seconds(s)) => Ok(Duration::from_secs(s)),
        Ok(Written::Text(t)) => parse(&t).map_err(serde::de::Error::custom),
        Err(_) => Err(serde::de::Error::custom(
            "a duration is a string such as \"30s\", \"5m\" or \"1h30m\", or a whole number of seconds",
        )),
    }
}

pub fn serialize<S: Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&format(*d))
}

/// The same for an optional duration (`#[serde(default, with = …)]`).
pub mod option {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(de).map(Some)
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, ser: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => ser.serialize_str(&format(*d)),
            None => ser.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, serde::Serialize)]
    struct T {
        #[serde(with = "super")]
        d: Duration,
        #[serde(default, with = "super::option")]
        o: Option<Duration>,
    }

    #[test]
    fn durations_are_read_as_the_command_line_reads_them() {
        for (text, secs) in [
            ("30s", 30),
            ("5m", 300),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("PT10S", 10),
            ("45", 45),
            ("1h 2m 3s", 3723),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        assert!(parse("soon")
            .unwrap_err()
            .contains("\"soon\" is not a duration"));
        assert!(parse("-5s").unwrap_err().contains("cannot be negative"));
    }

    #[test]
    fn toml_takes_strings_and_seconds_and_round_trips() {
        let t: T = toml::from_str("d = \"1h30m\"\no = 10\n").unwrap();
        assert_eq!(t.d, Duration::from_secs(5400));
        assert_eq!(t.o, Some(Duration::from_secs(10)));
        let back: T = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
        assert_eq!((back.d, back.o), (t.d, t.o));
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(
            parse(&format(Duration::from_millis(1500)))
                .unwrap()
                .as_millis(),
            1500
        );
        let err = toml::from_str::<T>("d = \"ten minutes\"\n").unwrap_err();
        assert!(err.to_string().contains("is not a duration"), "{err}");
        let err = toml::from_str::<T>("d = true\n").unwrap_err();
        assert!(err.to_string().contains("a duration is a string"), "{err}");
    }
}
