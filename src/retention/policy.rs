//! A retention policy: which snapshots to keep, as rules OR'ed together
//! (a snapshot is kept when any rule keeps it), like restic's `forget`.
//! The same struct is read from `cairn.toml` (`[retention]`,
//! `[backends.NAME.retention]`) and built from `forget`'s flags.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::retention::span::CalSpan;

/// Rules of one policy. Counts are per group of snapshots (see
/// [`GroupBy`]); `max_total_size` is per replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot newer than the group's newest minus this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<CalSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<CalSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<CalSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<CalSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<CalSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<CalSpan>,
    /// Keep every snapshot that carries one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<GroupBy>,
    /// Never keep fewer than this many (the newest) per group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_keep: Option<u32>,
    /// Keep every snapshot newer than now minus this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<CalSpan>,
    /// Keep the newest snapshots no other rule keeps while the replica's
    /// estimated size after prune stays within this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "size_serde")]
    pub max_total_size: Option<u64>,
}

/// Why a policy cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the retention policy has no rules; give at least one --keep-* rule (or configure [retention])")]
    Empty,
    #[error("the retention policy keeps nothing (every count is 0); use explicit snapshot ids to forget everything")]
    KeepsNothing,
}

impl Policy {
    /// Whether any rule is set (`group_by` alone is not a rule).
    pub fn has_rules(&self) -> bool {
        let Policy {
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_within,
            keep_within_hourly,
            keep_within_daily,
            keep_within_weekly,
            keep_within_monthly,
            keep_within_yearly,
            keep_tags,
            group_by: _,
            min_keep,
            max_age,
            max_total_size,
        } = self;
        [
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            min_keep,
        ]
        .iter()
        .any(|c| c.is_some())
            || [
                keep_within,
                keep_within_hourly,
                keep_within_daily,
                keep_within_weekly,
                keep_within_monthly,
                keep_within_yearly,
                max_age,
            ]
            .iter()
            .any(|s| s.is_some())
            || !keep_tags.is_empty()
            || max_total_size.is_some()
    }

    /// Refuse a policy with no rules, or whose rules are all counts of 0
    /// (which would forget every snapshot).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !self.has_rules() {
            return Err(PolicyError::Empty);
        }
        let counts = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
            self.min_keep,
        ];
        let zeroed = Policy {
            keep_last: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            min_keep: None,
            max_total_size: self.max_total_size.filter(|n| *n > 0),
            ..self.clone()
        };
        if counts.iter().all(|c| c.unwrap_or(0) == 0) && !zeroed.has_rules() {
            return Err(PolicyError::KeepsNothing);
        }
        Ok(())
    }

    /// The grouping in effect (default: host and paths).
    pub fn group_by(&self) -> GroupBy {
        self.group_by.unwrap_or_default()
    }
}

/// Which snapshot fields make a group; each group's history is judged on
/// its own, so `keep_daily = 7` keeps 7 per host and path set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = String;

    /// `host,paths,tags` in any order and subset; empty means one group.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" | "path" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                _ => {
                    return Err(format!(
                        "{part:?} is not a grouping: use host, paths and/or tags"
                    ))
                }
            }
        }
        Ok(g)
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [
            (self.host, "host"),
            (self.paths, "paths"),
            (self.tags, "tags"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for GroupBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GroupBy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Parse a size such as `500M`, `1.5GiB` or `2000000000`; `G` is 10^9 and
/// `GiB` 2^30.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("{s:?} is not a size (e.g. 500M, 1.5GiB, 2T)"))
}

/// `max_total_size` is written as a size string or a number of bytes.
mod size_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Bytes(u64),
            Text(String),
        }
        match Size::deserialize(d)? {
            Size::Bytes(n) => Ok(Some(n)),
            Size::Text(t) => super::parse_size(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_keep_nothing_policies_are_refused() {
        assert_eq!(Policy::default().validate(), Err(PolicyError::Empty));
        let only_group = Policy {
            group_by: Some("host".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(only_group.validate(), Err(PolicyError::Empty));
        let zeros = Policy {
            keep_last: Some(0),
            keep_daily: Some(0),
            ..Default::default()
        };
        assert_eq!(zeros.validate(), Err(PolicyError::KeepsNothing));
        let no_room = Policy {
            max_total_size: Some(0),
            ..Default::default()
        };
        assert_eq!(no_room.validate(), Err(PolicyError::KeepsNothing));
        let ok = Policy {
            keep_daily: Some(0),
            keep_tags: vec!["release".into()],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn reads_the_config_keys() {
        let p: Policy = toml::from_str(
            r#"
            keep_last = 3
            keep_daily = 14
            keep_within = "1m"
            keep_tags = ["release"]
            group_by = "host,tags"
            min_keep = 2
            max_age = "2y"
            max_total_size = "500GiB"
            "#,
        )
        .unwrap();
        assert_eq!(p.keep_daily, Some(14));
        assert_eq!(p.keep_within.unwrap().months, 1);
        assert_eq!(p.group_by().to_string(), "host,tags");
        assert_eq!(p.max_total_size, Some(500 << 30));
        assert!(toml::from_str::<Policy>("keep_daily = -1").is_err());
        assert!(toml::from_str::<Policy>("keep_dayly = 1").is_err());
        assert!(toml::from_str::<Policy>("group_by = \"owner\"").is_err());
        let back: Policy = toml::from_str(&toml::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("-5G").is_err());
        assert!(parse_size("lots").is_err());
    }
}
