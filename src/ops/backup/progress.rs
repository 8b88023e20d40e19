//! Counters shared between the backup pipeline and whoever displays progress.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::stages::Stages;

/// Live counters of a running backup (all monotonic).
#[derive(Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub dirs: AtomicU64,
    pub bytes_seen: AtomicU64,
    pub bytes_read: AtomicU64,
    pub blobs_new: AtomicU64,
    pub bytes_new: AtomicU64,
    pub bytes_stored: AtomicU64,
    pub errors: AtomicU64,
    pub replicas: Vec<ReplicaProgress>,
    pub current: Mutex<String>,
    /// Time per pipeline stage.
    pub stages: Stages,
}

/// Upload counters of one replica.
#[derive(Default)]
pub struct ReplicaProgress {
    pub name: String,
    pub packs_queued: AtomicU64,
    pub packs_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub failed: AtomicBool,
}

impl Progress {
    pub fn new(replicas: impl IntoIterator<Item = String>) -> Progress {
        Progress {
            replicas: replicas
                .into_iter()
                .map(|name| ReplicaProgress {
                    name,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

impl crate::ops::progress::ProgressSource for Progress {
    fn event(&self, elapsed: std::time::Duration) -> crate::ops::progress::ProgressEvent {
        use crate::ops::progress::{BackupEvent, ProgressEvent, UploadEvent};
        ProgressEvent::Backup(BackupEvent {
            seconds: elapsed.as_secs_f64(),
            files: Progress::get(&self.files),
            dirs: Progress::get(&self.dirs),
            bytes_read: Progress::get(&self.bytes_read),
            bytes_new: Progress::get(&self.bytes_new),
            errors: Progress::get(&self.errors),
            replicas: self
                .replicas
                .iter()
                .map(|r| UploadEvent {
                    name: r.name.clone(),
                    packs_done: Progress::get(&r.packs_done),
                    packs_queued: Progress::get(&r.packs_queued),
                    bytes_done: Progress::get(&r.bytes_done),
                    failed: r.failed.load(Relaxed),
                })
                .collect(),
        })
    }
}
