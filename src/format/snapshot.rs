//! Snapshot manifests: what was backed up, when, from where, and the root
//! tree. Stored sealed in `snapshots/<hash of stored bytes>`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::id::Id;

/// Counters of one backup run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub other_entries: u64,
    /// Source bytes of all files in the snapshot.
    pub total_bytes: u64,
    /// Source bytes read (files not taken over from the parent).
    pub bytes_read: u64,
    pub blobs_new: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_new: u64,
    /// Stored bytes (compressed, encrypted) of new blobs.
    pub bytes_stored: u64,
    pub errors: u64,
    pub duration_secs: f64,
}

/// The tag of the snapshot `restore --in-place` takes of a directory before
/// it changes it: `latest` never means one, and retention judges them apart
/// from the backups of the same host and paths.
pub const SAFETY_TAG: &str = "pre-restore";

/// Whether `tags` mark a safety snapshot ([`SAFETY_TAG`]).
pub fn is_safety_tagged(tags: &[String]) -> bool {
    tags.iter().any(|t| t == SAFETY_TAG)
}

/// A snapshot manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time: Timestamp,
    pub host: String,
    pub username: String,
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// Blob ids of the root tree.
    pub tree: Vec<Id>,
    /// Some entries could not be read; the snapshot holds the rest.
    #[serde(default)]
    pub partial: bool,
    /// The first few entries that could not be read, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default)]
    pub excludes: Vec<String>,
    pub program: String,
    pub summary: Summary,
    /// The snapshot this one was copied from, in the repository `cairn
    /// copy` read it from; none for a snapshot taken by a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
}

impl Snapshot {
    /// Whether this snapshot can serve as parent for a backup of `paths`
    /// from `host` (same host, same set of paths).
    pub fn matches(&self, host: &str, paths: &[String]) -> bool {
        let mut a = self.paths.clone();
        let mut b = paths.to_vec();
        a.sort();
        b.sort();
        self.host == host && a == b
    }
}
