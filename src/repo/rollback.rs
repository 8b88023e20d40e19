//! This host's record of a repository, kept under the local state directory
//! (`$XDG_STATE_HOME/cairn/repos/<repository id>.json`): for each replica,
//! the snapshots seen in its listing and the newest of them, the snapshots
//! this host forgot, and the key slot that last opened the repository.
//!
//! Storage can be rolled back (an old copy of `snapshots/` put back) or
//! snapshots deleted by whoever can write to it, and an old listing is
//! still perfectly authentic. Comparing each listing with what this host
//! saw before is how such a replica is noticed: its newest snapshot is
//! older than one seen, or snapshots seen are gone and this host did not
//! forget them. The record only moves forward (seen ids are kept), so the
//! warning repeats until the replica holds them again.
//!
//! The record is a convenience, never a reason to fail: one that cannot be
//! read or written is warned about and the command goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::id::Id;

/// Snapshot ids kept per replica (and forgotten ids kept): the newest
/// ones. Bounds the record to a few hundred KiB per replica.
pub const MAX_IDS: usize = 4096;
/// The largest record file read.
const MAX_RECORD_BYTES: u64 = 8 << 20;

/// What this host saw of one replica's snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSeen {
    /// The time of the newest snapshot seen.
    pub newest: Option<Timestamp>,
    pub newest_id: Option<String>,
    /// Snapshot ids seen (hex), with their times.
    pub snapshots: BTreeMap<String, Timestamp>,
}

/// The whole record of one repository.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record {
    /// The key slot that last opened the repository here: tried first.
    #[serde(default)]
    pub last_slot: Option<String>,
    /// By replica name (as given: a path, a redacted URL, a config name).
    #[serde(default)]
    pub replicas: BTreeMap<String, ReplicaSeen>,
    /// Snapshots this host forgot: their absence is expected.
    #[serde(default)]
    pub forgotten: BTreeSet<String>,
}

/// A replica whose listing went backwards.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rollback {
    pub replica: String,
    /// Snapshots seen before, now gone (and not forgotten by this host).
    pub vanished: Vec<String>,
    /// The newest snapshot seen before, when the newest listed now is older.
    pub newest_seen: Option<Timestamp>,
    pub newest_now: Option<Timestamp>,
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replica {} may have been rolled back or had snapshots deleted:",
            self.replica
        )?;
        if let Some(seen) = self.newest_seen {
            match self.newest_now {
                Some(now) => write!(
                    f,
                    " its newest snapshot is from {now}, but one from {seen} was seen"
                )?,
                None => write!(f, " it lists no snapshot, but one from {seen} was seen")?,
            }
            if !self.vanished.is_empty() {
                f.write_str(";")?;
            }
        }
        if !self.vanished.is_empty() {
            let shown: Vec<&str> = self
                .vanished
                .iter()
                .take(5)
                .map(|s| &s[..8.min(s.len())])
                .collect();
            write!(
                f,
                " {} snapshot(s) seen before are gone ({}{}) and were not forgotten by this host",
                self.vanished.len(),
                shown.join(", "),
                if self.vanished.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}

/// A replica's listing now: snapshot id → its time, when it could be read.
pub type Listing = BTreeMap<String, Option<Timestamp>>;

fn newest_of(now: &Listing) -> Option<(Timestamp, &str)> {
    now.iter()
        .filter_map(|(id, t)| t.map(|t| (t, id.as_str())))
        .max()
}

/// Whether `now` went backwards from `seen` (pure).
pub fn compare(
    replica: &str,
    seen: &ReplicaSeen,
    now: &Listing,
    forgotten: &BTreeSet<String>,
) -> Option<Rollback> {
    let vanished: Vec<String> = seen
        .snapshots
        .keys()
        .filter(|id| !now.contains_key(*id) && !forgotten.contains(*id))
        .cloned()
        .collect();
    let newest_now = newest_of(now).map(|(t, _)| t);
    let older = match (seen.newest, &seen.newest_id) {
        (Some(seen_t), Some(id)) if !forgotten.contains(id) => {
            newest_now.is_none_or(|n| n < seen_t)
        }
        _ => false,
    };
    (older || !vanished.is_empty()).then(|| Rollback {
        replica: replica.to_string(),
        vanished,
        newest_seen: if older { seen.newest } else { None },
        newest_now,
    })
}

/// Fold `now` into `seen`: ids are added, never removed (but forgotten
/// ones), the newest only moves forward; the oldest ids over [`MAX_IDS`]
/// are dropped.
pub fn merge(seen: &mut ReplicaSeen, now: &Listing, forgotten: &BTreeSet<String>) {
    for (id, t) in now {
        if let Some(t) = t {
            seen.snapshots.insert(id.clone(), *t);
        }
    }
    seen.snapshots.retain(|id, _| !forgotten.contains(id));
    if let Some((t, id)) = newest_of(now) {
        if seen.newest.is_none_or(|n| t > n) {
            seen.newest = Some(t);
            seen.newest_id = Some(id.to_string());
        }
    }
    if seen
        .newest_id
        .as_ref()
        .is_some_and(|id| forgotten.contains(id))
    {
        // What is newest now among what remains.
        let best = seen.snapshots.iter().max_by_key(|(_, t)| **t);
        seen.newest = best.map(|(_, t)| *t);
        seen.newest_id = best.map(|(id, _)| id.clone());
    }
    if seen.snapshots.len() > MAX_IDS {
        let mut by_time: Vec<(Timestamp, String)> = seen
            .snapshots
            .iter()
            .map(|(id, t)| (*t, id.clone()))
            .collect();
        by_time.sort();
        for (_, id) in &by_time[..by_time.len() - MAX_IDS] {
            seen.snapshots.remove(id);
        }
    }
}

/// The record of one repository, shared by everything that lists it in
/// this process, with the rollbacks found so far.
#[derive(Debug)]
pub struct Tracker {
    path: PathBuf,
    record: Mutex<Record>,
    found: Mutex<Vec<Rollback>>,
}

impl Tracker {
    /// The record of repository `id` under `state_dir`; an unreadable one
    /// is warned about and replaced by an empty one.
    pub fn load(state_dir: &Path, id: &Id) -> Tracker {
        let path = state_dir
            .join("repos")
            .join(format!("{}.json", id.to_hex()));
        let record = match read_record(&path) {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(
                    "ignoring the local record {} (rollback detection starts afresh): {e}",
                    path.display()
                );
                Record::default()
            }
        };
        Tracker {
            path,
            record: Mutex::new(record),
            found: Mutex::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn last_slot(&self) -> Option<String> {
        self.record.lock().unwrap().last_slot.clone()
    }

    pub fn set_last_slot(&self, slot: &str) {
        let mut r = self.record.lock().unwrap();
        if r.last_slot.as_deref() != Some(slot) {
            r.last_slot = Some(slot.to_string());
            self.save(&mut r);
        }
    }

    /// Fold in what other processes wrote to the record since it was
    /// loaded (a forget that ran meanwhile must not look like a rollback).
    fn refresh(&self, r: &mut Record) {
        if let Ok(Some(disk)) = read_record(&self.path) {
            combine(r, disk);
        }
    }

    /// Compare a replica's listing with the record (warning when it went
    /// backwards), then fold it in.
    pub fn observe(&self, replica: &str, now: &Listing) -> Option<Rollback> {
        let mut r = self.record.lock().unwrap();
        self.refresh(&mut r);
        let Record {
            replicas,
            forgotten,
            ..
        } = &mut *r;
        let seen = replicas.entry(replica.to_string()).or_default();
        let found = compare(replica, seen, now, forgotten);
        let before = seen.clone();
        merge(seen, now, forgotten);
        let changed = *seen != before;
        if let Some(f) = &found {
            tracing::warn!("{f}");
            let mut all = self.found.lock().unwrap();
            if !all.contains(f) {
                all.push(f.clone());
            }
        }
        if changed {
            self.save(&mut r);
        }
        found
    }

    /// Snapshots this host forgot: their absence from any replica is not
    /// a rollback.
    pub fn record_forgotten(&self, ids: &[Id]) {
        if ids.is_empty() {
            return;
        }
        let mut r = self.record.lock().unwrap();
        let Record {
            replicas,
            forgotten,
            ..
        } = &mut *r;
        forgotten.extend(ids.iter().map(Id::to_hex));
        while forgotten.len() > MAX_IDS {
            // Ids are random: which one goes is arbitrary, and an old
            // forget has long been folded out of every replica's record.
            let first = forgotten.iter().next().cloned().expect("not empty");
            forgotten.remove(&first);
        }
        for seen in replicas.values_mut() {
            merge(seen, &Listing::new(), forgotten);
        }
        self.save(&mut r);
    }

    /// Every rollback found by this process.
    pub fn found(&self) -> Vec<Rollback> {
        self.found.lock().unwrap().clone()
    }

    /// Write the record, merged with what other processes wrote since it
    /// was read, under a lock on the record's directory: two commands
    /// running at once must not drop each other's forgotten ids.
    fn save(&self, r: &mut Record) {
        let res = (|| {
            let dir = self.path.parent().expect("the record is in a directory");
            std::fs::create_dir_all(dir)?;
            let lock = std::fs::File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(".lock"))?;
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
            if let Ok(Some(disk)) = read_record(&self.path) {
                combine(r, disk);
            }
            write_record(&self.path, r)
        })();
        if let Err(e) = res {
            tracing::warn!(
                "could not write the local record {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Fold `disk` (the record as another process left it) into `r`: the
/// union of forgotten ids and of snapshots seen; `r`'s slot wins.
fn combine(r: &mut Record, disk: Record) {
    r.forgotten.extend(disk.forgotten);
    while r.forgotten.len() > MAX_IDS {
        let first = r.forgotten.iter().next().cloned().expect("not empty");
        r.forgotten.remove(&first);
    }
    if r.last_slot.is_none() {
        r.last_slot = disk.last_slot;
    }
    for (name, seen) in disk.replicas {
        let listing: Listing = seen
            .snapshots
            .into_iter()
            .map(|(id, t)| (id, Some(t)))
            .collect();
        merge(r.replicas.entry(name).or_default(), &listing, &r.forgotten);
    }
    for seen in r.replicas.values_mut() {
        merge(seen, &Listing::new(), &r.forgotten);
    }
}

fn read_record(path: &Path) -> std::io::Result<Option<Record>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut data = Vec::new();
    f.take(MAX_RECORD_BYTES + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_RECORD_BYTES {
        return Err(std::io::Error::other("the file is too large"));
    }
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(std::io::Error::other)
}

/// Write to a temporary name, then rename: a crash leaves the old record
/// or the new one, never half of one.
fn write_record(path: &Path, r: &Record) -> std::io::Result<()> {
    let dir = path.parent().expect("the record is in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let data = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn listing(items: &[(&str, i64)]) -> Listing {
        items
            .iter()
            .map(|(id, s)| (id.to_string(), Some(t(*s))))
            .collect()
    }

    fn seen_after(items: &[(&str, i64)]) -> ReplicaSeen {
        let mut s = ReplicaSeen::default();
        merge(&mut s, &listing(items), &BTreeSet::new());
        s
    }

    #[test]
    fn a_listing_that_only_grows_is_fine() {
        let seen = seen_after(&[("a", 1), ("b", 2)]);
        let none = BTreeSet::new();
        assert_eq!(
            compare("r", &seen, &listing(&[("a", 1), ("b", 2), ("c", 3)]), &none),
            None
        );
        assert_eq!(
            compare("r", &ReplicaSeen::default(), &listing(&[]), &none),
            None
        );
    }

    #[test]
    fn an_older_listing_is_a_rollback() {
        let seen = seen_after(&[("a", 1), ("b", 2)]);
        let none = BTreeSet::new();
        let f = compare("r", &seen, &listing(&[("a", 1)]), &none).unwrap();
        assert_eq!(f.vanished, vec!["b".to_string()]);
        assert_eq!(f.newest_seen, Some(t(2)));
        assert_eq!(f.newest_now, Some(t(1)));
        assert!(f.to_string().contains("replica r"), "{f}");
        // Everything gone.
        let f = compare("r", &seen, &listing(&[]), &none).unwrap();
        assert_eq!(f.vanished.len(), 2);
        // An old snapshot deleted, the newest still there.
        let f = compare("r", &seen, &listing(&[("b", 2)]), &none).unwrap();
        assert_eq!(f.vanished, vec!["a".to_string()]);
        assert_eq!(f.newest_seen, None);
    }

    #[test]
    fn snapshots_forgotten_here_are_not_a_rollback() {
        let mut seen = seen_after(&[("a", 1), ("b", 2)]);
        let forgot: BTreeSet<String> = ["b".to_string()].into();
        assert_eq!(compare("r", &seen, &listing(&[("a", 1)]), &forgot), None);
        merge(&mut seen, &listing(&[("a", 1)]), &forgot);
        assert_eq!(seen.newest, Some(t(1)));
        assert!(!seen.snapshots.contains_key("b"));
        assert_eq!(
            compare("r", &seen, &listing(&[("a", 1)]), &BTreeSet::new()),
            None
        );
    }

    #[test]
    fn the_record_only_moves_forward_and_stays_bounded() {
        let mut seen = seen_after(&[("a", 5)]);
        merge(&mut seen, &listing(&[("b", 1)]), &BTreeSet::new());
        assert_eq!(seen.newest, Some(t(5)));
        assert_eq!(
            seen.snapshots.len(),
            2,
            "a gone from a listing stays recorded"
        );
        let many: Listing = (0..MAX_IDS as i64 + 10)
            .map(|i| (format!("{i:08}"), Some(t(100 + i))))
            .collect();
        merge(&mut seen, &many, &BTreeSet::new());
        assert_eq!(seen.snapshots.len(), MAX_IDS);
        assert!(!seen.snapshots.contains_key("b"), "the oldest are dropped");
    }

    #[test]
    fn the_record_survives_a_restart_and_a_corrupt_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let id = Id::random();
        let tr = Tracker::load(dir.path(), &id);
        assert_eq!(tr.observe("r", &listing(&[("a", 1), ("b", 2)])), None);
        tr.set_last_slot("slot1");
        let tr = Tracker::load(dir.path(), &id);
        assert_eq!(tr.last_slot().as_deref(), Some("slot1"));
        assert!(tr.observe("r", &listing(&[("a", 1)])).is_some());
        assert_eq!(tr.found().len(), 1);
        tr.record_forgotten(&[]);
        std::fs::write(tr.path(), b"{not json").unwrap();
        let tr = Tracker::load(dir.path(), &id);
        assert_eq!(tr.observe("r", &listing(&[("a", 1)])), None);
    }

    /// Two processes share the record: what one forgot is not taken for a
    /// rollback by the other, and neither save drops the other's ids.
    #[test]
    fn concurrent_trackers_do_not_lose_each_others_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let id = Id([4; 32]);
        let (x, y) = (Id([1; 32]), Id([2; 32]));
        let listing = |ids: &[&Id]| -> Listing {
            ids.iter()
                .enumerate()
                .map(|(k, i)| (i.to_hex(), Some(t(100 + k as i64))))
                .collect()
        };
        let a = Tracker::load(dir.path(), &id);
        let b = Tracker::load(dir.path(), &id);
        assert!(a.observe("r", &listing(&[&x, &y])).is_none());
        assert!(b.observe("r", &listing(&[&x, &y])).is_none());
        // A forgets x, B forgets y, each without the other's knowledge.
        a.record_forgotten(&[x]);
        b.record_forgotten(&[y]);
        // Both are gone from the replica: neither tracker warns.
        assert!(a.observe("r", &listing(&[])).is_none());
        assert!(b.observe("r", &listing(&[])).is_none());
        let c = Tracker::load(dir.path(), &id);
        let r = c.record.lock().unwrap();
        assert!(r.forgotten.contains(&x.to_hex()) && r.forgotten.contains(&y.to_hex()));
    }
}
