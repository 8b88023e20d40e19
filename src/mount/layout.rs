//! The virtual directories above the snapshots' own trees: the names that
//! `snapshots/`, `latest`, `hosts/` and `tags/` hold, made from one listing
//! of the snapshots. Hosts and tags come from snapshot documents, which
//! storage could have forged: one that is not a single valid path
//! component is left out rather than allowed to name something else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::format::tree::validate_name;
use crate::repo::SnapshotEntry;

/// The longest name a directory entry may have (Linux's `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// What the virtual directories hold.
#[derive(Debug, Default)]
pub struct Layout {
    /// `snapshots/<name>` → the snapshot.
    pub snapshots: BTreeMap<String, Arc<SnapshotEntry>>,
    /// The name of the newest snapshot, which `latest` points to.
    pub latest: Option<String>,
    /// `hosts/<host>/` → the names of its snapshots.
    pub hosts: BTreeMap<String, BTreeSet<String>>,
    /// `tags/<tag>/` → the names of the snapshots with that tag.
    pub tags: BTreeMap<String, BTreeSet<String>>,
}

/// Whether `name` can be shown as one directory entry.
pub fn showable(name: &[u8]) -> bool {
    validate_name(name).is_ok() && name.len() <= NAME_MAX
}

/// A snapshot's time in UTC to the second, as its directory is named.
pub fn time_name(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Layout {
    /// The layout of `list` (any order). Snapshots taken in the same second
    /// are told apart by their short ids (`<time>-<short id>`), all of
    /// them, so a name never moves from one snapshot to another.
    pub fn build(list: &[SnapshotEntry]) -> Layout {
        let mut by_time: BTreeMap<String, Vec<&SnapshotEntry>> = BTreeMap::new();
        for s in list {
            by_time
                .entry(time_name(s.snapshot.time))
                .or_default()
                .push(s);
        }
        let mut layout = Layout::default();
        let mut newest: Option<(&SnapshotEntry, String)> = None;
        for (time, group) in by_time {
            let shared = group.len() > 1;
            for s in group {
                let name = if shared {
                    format!("{time}-{}", s.id.short())
                } else {
                    time.clone()
                };
                // `latest` means what it means on the command line.
                let later = !s.is_safety_snapshot()
                    && newest.as_ref().is_none_or(|(n, _)| {
                        (s.snapshot.time, s.id.to_hex()) > (n.snapshot.time, n.id.to_hex())
                    });
                if later {
                    newest = Some((s, name.clone()));
                }
                if showable(s.snapshot.host.as_bytes()) {
                    layout
                        .hosts
                        .entry(s.snapshot.host.clone())
                        .or_default()
                        .insert(name.clone());
                }
                for tag in &s.snapshot.tags {
                    if showable(tag.as_bytes()) {
                        layout
                            .tags
                            .entry(tag.clone())
                            .or_default()
                            .insert(name.clone());
                    }
                }
                layout.snapshots.insert(name, Arc::new(s.clone()));
            }
        }
        layout.latest = newest.map(|(_, name)| name);
        layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::Id;
    use crate::format::snapshot::Snapshot;

    fn entry(seed: u8, time: &str, host: &str, tags: &[&str]) -> SnapshotEntry {
        SnapshotEntry {
            id: Id([seed; 32]),
            snapshot: Snapshot {
                time: time.parse().unwrap(),
                host: host.to_string(),
                username: "u".into(),
                paths: vec!["/x".into()],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                parent: None,
                tree: Vec::new(),
                partial: false,
                errors: Vec::new(),
                excludes: Vec::new(),
                program: "test".into(),
                summary: Default::default(),
                original: None,
            },
            replicas: Default::default(),
        }
    }

    #[test]
    fn snapshots_are_named_by_time_and_told_apart_within_a_second() {
        let list = [
            entry(1, "2026-12-04T11:20:02.5Z", "web", &["daily"]),
            entry(2, "2026-12-04T11:20:02.1Z", "web", &[]),
            entry(3, "2026-12-05T00:00:00+01:00", "db", &["daily", "x"]),
        ];
        let l = Layout::build(&list);
        let (a, b) = (list[0].id.short(), list[1].id.short());
        let names: Vec<&str> = l.snapshots.keys().map(String::as_str).collect();
        let mut want = vec![
            format!("2026-12-04T11:20:02Z-{a}"),
            format!("2026-12-04T11:20:02Z-{b}"),
            "2026-12-04T23:00:00Z".to_string(),
        ];
        want.sort();
        assert_eq!(names, want);
        assert_eq!(l.latest.as_deref(), Some("2026-12-04T23:00:00Z"));
        assert_eq!(l.hosts["web"].len(), 2);
        assert_eq!(l.hosts["db"].len(), 1);
        assert_eq!(l.tags["daily"].len(), 2);
        assert_eq!(l.tags["x"].len(), 1);
    }

    #[test]
    fn hosts_and_tags_that_could_name_another_path_are_left_out() {
        let long = "h".repeat(NAME_MAX + 1);
        let list = [
            entry(1, "2026-01-01T00:00:00Z", "..", &["a/b", "", "."]),
            entry(2, "2026-01-02T00:00:00Z", "x/../../etc", &["ok", "nul\0"]),
            entry(3, "2026-01-03T00:00:00Z", &long, &[&long]),
        ];
        let l = Layout::build(&list);
        assert_eq!(l.snapshots.len(), 3, "the snapshots themselves are shown");
        assert!(l.hosts.is_empty(), "{:?}", l.hosts);
        assert_eq!(l.tags.keys().collect::<Vec<_>>(), ["ok"]);
        assert!(Layout::build(&[]).latest.is_none());
    }

    #[test]
    fn latest_is_never_a_safety_snapshot() {
        let list = [
            entry(1, "2026-01-01T00:00:00Z", "h", &[]),
            entry(2, "2026-01-02T00:00:00Z", "h", &["pre-restore"]),
        ];
        let l = Layout::build(&list);
        assert_eq!(l.latest.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(l.tags["pre-restore"].len(), 1, "still shown under tags/");
        assert!(Layout::build(&list[1..]).latest.is_none());
    }
}
