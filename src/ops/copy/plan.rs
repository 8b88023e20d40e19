//! Which source snapshots a `copy` run copies, which it skips because the
//! target already holds a copy of them, and what each copy's parent is in
//! the target. Pure: no I/O, unit-tested.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::ops::forget::SnapshotFilter;
use crate::repo::{Repository, SnapshotEntry};

/// The snapshots of one run, oldest first.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Source snapshots to copy.
    pub copy: Vec<Id>,
    /// `(source, target)`: source snapshots the target already holds a
    /// copy of.
    pub skip: Vec<(Id, Id)>,
    /// Source snapshot id → the target snapshot copied from it, for every
    /// copy the target holds (parents are mapped through it).
    pub copies: HashMap<Id, Id>,
}

/// Select the source snapshots `specs` names (ids, unique prefixes or
/// `latest`), or, with none, every one `filter` matches; `source` and
/// `target` are the two repositories' snapshot listings.
pub fn plan(
    source: &[SnapshotEntry],
    target: &[SnapshotEntry],
    specs: &[String],
    filter: &SnapshotFilter,
) -> Result<Plan> {
    let mut selected: Vec<&SnapshotEntry> = if specs.is_empty() {
        source.iter().filter(|s| filter.matches(s)).collect()
    } else {
        let mut v = Vec::new();
        for spec in specs {
            let s = Repository::find_snapshot(source, spec)?;
            if !v.iter().any(|e: &&SnapshotEntry| e.id == s.id) {
                v.push(s);
            }
        }
        v
    };
    // Oldest first, so a parent is copied before its children and maps.
    selected.sort_by_key(|s| (s.snapshot.time, s.id));
    let source_ids: HashSet<Id> = source.iter().map(|s| s.id).collect();
    let mut copies = HashMap::new();
    // Copies whose original the source no longer lists under that id.
    let mut stale = Vec::new();
    for t in target {
        if let Some(orig) = t.snapshot.original {
            if source_ids.contains(&orig) {
                // Two copies of one snapshot (two runs racing): either will do.
                copies.entry(orig).or_insert(t.id);
            } else {
                stale.push(t);
            }
        }
    }
    // A snapshot's id is the hash of its stored bytes, so `key reencrypt`
    // of the source gives every snapshot a new id. Its copy is then found
    // by what `copy` keeps of it.
    for s in source {
        if copies.contains_key(&s.id) {
            continue;
        }
        if let Some(pos) = stale
            .iter()
            .position(|t| same_snapshot(&s.snapshot, &t.snapshot))
        {
            copies.insert(s.id, stale.swap_remove(pos).id);
        }
    }
    let mut plan = Plan::default();
    for s in selected {
        match copies.get(&s.id) {
            Some(t) => plan.skip.push((s.id, *t)),
            None => plan.copy.push(s.id),
        }
    }
    plan.copies = copies;
    Ok(plan)
}

/// Whether `copy` is a copy of `original`: everything `copy` keeps is
/// equal (the summary's counts and duration make two distinct snapshots
/// with equal metadata all but impossible).
fn same_snapshot(original: &Snapshot, copy: &Snapshot) -> bool {
    original.time == copy.time
        && original.host == copy.host
        && original.username == copy.username
        && original.paths == copy.paths
        && original.tags == copy.tags
        && original.excludes == copy.excludes
        && original.program == copy.program
        && original.partial == copy.partial
        && original.summary == copy.summary
}

/// The parent of a copy: the target's copy of the source parent, when the
/// target holds one (or this run made one); else none — a parent only
/// speeds up the next backup, and a wrong one would be worse than none.
pub fn map_parent(parent: Option<Id>, copies: &HashMap<Id, Id>) -> Option<Id> {
    parent.and_then(|p| copies.get(&p).copied())
}

/// The error for a target that is the source itself (or holds its
/// repository): copying under the same keyring protects nothing.
pub fn same_repository(id: Id) -> Error {
    Error::Invalid(format!(
        "the target is the source repository itself ({}): `copy` writes into a repository \
         with its own keyring; create one with `cairn --repo NEW init` and copy into it",
        id.short()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::Summary;
    use crate::repo::ReplicaSet;

    fn snap(n: u8, secs: i64, host: &str, original: Option<u8>) -> SnapshotEntry {
        SnapshotEntry {
            id: Id([n; 32]),
            snapshot: Snapshot {
                time: jiff::Timestamp::from_second(secs).unwrap(),
                host: host.into(),
                username: "u".into(),
                paths: vec!["/p".into()],
                tags: if host == "b" {
                    vec!["t".into()]
                } else {
                    vec![]
                },
                parent: None,
                tree: vec![],
                partial: false,
                errors: vec![],
                excludes: vec![],
                program: "test".into(),
                summary: Summary::default(),
                original: original.map(|o| Id([o; 32])),
            },
            replicas: ReplicaSet::single(0),
        }
    }

    #[test]
    fn copies_oldest_first_and_skips_what_the_target_holds() {
        let source = vec![
            snap(3, 30, "a", None),
            snap(1, 10, "a", None),
            snap(2, 20, "b", None),
        ];
        let target = vec![snap(9, 10, "a", Some(1)), snap(8, 5, "x", None)];
        let p = plan(&source, &target, &[], &SnapshotFilter::default()).unwrap();
        assert_eq!(p.copy, vec![Id([2; 32]), Id([3; 32])]);
        assert_eq!(p.skip, vec![(Id([1; 32]), Id([9; 32]))]);
        assert_eq!(p.copies.len(), 1);
    }

    #[test]
    fn a_copy_whose_original_was_rewritten_is_found_by_its_metadata() {
        // The source re-encrypted: snapshot 1 is now 5, with equal content.
        let source = vec![snap(5, 10, "a", None), snap(2, 20, "a", None)];
        let mut copy = snap(9, 10, "a", Some(1));
        let mut other = snap(8, 20, "a", Some(3));
        other.snapshot.summary.files_new = 7;
        let p = plan(&source, &[copy.clone(), other], &[], &Default::default()).unwrap();
        assert_eq!(p.skip, vec![(Id([5; 32]), Id([9; 32]))]);
        assert_eq!(p.copy, vec![Id([2; 32])]);
        // Different metadata: not a copy of it.
        copy.snapshot.host = "b".into();
        let p = plan(&source, &[copy], &[], &Default::default()).unwrap();
        assert_eq!(p.copy.len(), 2);
    }

    #[test]
    fn ids_prefixes_and_filters_select() {
        let source = vec![snap(0x11, 10, "a", None), snap(0x22, 20, "b", None)];
        let p = plan(
            &source,
            &[],
            &["22".into(), "2222".into()],
            &Default::default(),
        )
        .unwrap();
        assert_eq!(p.copy, vec![Id([0x22; 32])]);
        let p = plan(&source, &[], &["latest".into()], &Default::default()).unwrap();
        assert_eq!(p.copy, vec![Id([0x22; 32])]);
        let hosts = SnapshotFilter {
            hosts: vec!["a".into()],
            ..Default::default()
        };
        let p = plan(&source, &[], &[], &hosts).unwrap();
        assert_eq!(p.copy, vec![Id([0x11; 32])]);
        let tags = SnapshotFilter {
            tags: vec!["t".into()],
            ..Default::default()
        };
        assert_eq!(
            plan(&source, &[], &[], &tags).unwrap().copy,
            vec![Id([0x22; 32])]
        );
        assert!(plan(&source, &[], &["33".into()], &Default::default()).is_err());
    }

    #[test]
    fn parents_map_to_the_targets_copy_or_to_none() {
        let copies = HashMap::from([(Id([1; 32]), Id([9; 32]))]);
        assert_eq!(map_parent(Some(Id([1; 32])), &copies), Some(Id([9; 32])));
        assert_eq!(map_parent(Some(Id([2; 32])), &copies), None);
        assert_eq!(map_parent(None, &copies), None);
    }
}
