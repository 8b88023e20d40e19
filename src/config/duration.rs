//! Durations as people write them in cairn.toml and on the command line:
//! `90s`, `5m`, `1h30m`, `2d`, ISO 8601 (`PT10M`) or plain seconds.

use std::time::Duration;

/// A duration such as `90s`, `5m`, `1h30m` or `2 days`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

/// A duration for humans: `1h30m`, `45s`, `2d`.
pub fn show(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= n {
            out.push_str(&format!("{}{unit}", secs / n));
            secs %= n;
        }
    }
    out
}

/// `#[serde(with = "…")]` for an optional duration written as a string
/// (`"5m"`) or as whole seconds (`300`).
pub mod opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Secs(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Written>::deserialize(d)? {
            None => Ok(None),
            Some(Written::Secs(s)) => Ok(Some(Duration::from_secs(s))),
            Some(Written::Text(t)) => super::parse_duration(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_usual_spellings() {
        for (text, secs) in [
            ("30", 30),
            ("90s", 90),
            ("5m", 300),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("PT10M", 600),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
            assert_eq!(
                parse_duration(&show(Duration::from_secs(secs))),
                Ok(Duration::from_secs(secs))
            );
        }
        for bad in ["5x", "", "-5m", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
