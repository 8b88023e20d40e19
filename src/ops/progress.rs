//! One progress stream for every operation.
//!
//! An operation keeps cheap atomic counters that its threads update (see
//! each operation's `*Progress` type); each of those is a
//! [`ProgressSource`] that can say where the operation stands as one
//! [`ProgressEvent`]. A [`ProgressStream`] samples a source on its own
//! thread and hands the events to a [`ProgressSink`]: the CLI's sinks draw
//! bars on a terminal or print JSON lines, [`LatestProgress`] keeps the
//! newest event for the daemon and the API to read or await.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Where an operation stands. Serialised, each variant is the `status`
/// line of the CLI's `--json` output for that operation (docs/json.md).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ProgressEvent {
    Backup(BackupEvent),
    Restore(RestoreEvent),
    Check(CheckEvent),
    Sync(SyncEvent),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackupEvent {
    pub seconds: f64,
    pub files: u64,
    pub dirs: u64,
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub errors: u64,
    pub replicas: Vec<UploadEvent>,
}

/// Uploads to one replica during a backup.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UploadEvent {
    pub name: String,
    pub packs_done: u64,
    pub packs_queued: u64,
    pub bytes_done: u64,
    pub failed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RestoreEvent {
    pub seconds: f64,
    pub files: u64,
    pub total_files: u64,
    pub bytes: u64,
    pub total_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckEvent {
    pub seconds: f64,
    /// The replica being checked.
    pub replica: String,
    pub packs_done: u64,
    pub packs_total: u64,
    pub bytes_done: u64,
    pub snapshots_done: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SyncEvent {
    pub seconds: f64,
    pub targets: Vec<SyncTargetEvent>,
}

/// Copies to one target of a sync.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SyncTargetEvent {
    pub replica: String,
    /// See [`crate::ops::sync::PHASE_PLAN`] and the other phases.
    pub phase: u8,
    pub packs_done: u64,
    pub packs_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Something that can say how far it is.
pub trait ProgressSource: Send + Sync {
    fn event(&self, elapsed: Duration) -> ProgressEvent;
}

/// Where progress events go.
pub trait ProgressSink: Send + Sync {
    fn event(&self, e: &ProgressEvent);
    /// The operation is over (the last event was sent).
    fn finish(&self) {}
}

/// Samples a source every `every` and sends the events to a sink, until
/// stopped; a last event is sent on stop, so a sink always sees the end.
pub struct ProgressStream {
    stop: Option<std::sync::mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ProgressStream {
    pub fn start(
        source: Arc<dyn ProgressSource>,
        sink: Arc<dyn ProgressSink>,
        every: Duration,
    ) -> ProgressStream {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            // Waiting on the channel, not sleeping: a stop wakes the
            // thread at once, so stopping never delays the command.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                sink.event(&source.event(start.elapsed()));
            }
            sink.event(&source.event(start.elapsed()));
            sink.finish();
        });
        ProgressStream {
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// A stream that shows nothing (no thread at all).
    pub fn none() -> ProgressStream {
        ProgressStream {
            stop: None,
            handle: None,
        }
    }

    /// Stop sampling, after the last event was delivered.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ProgressStream {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Keeps the newest event, for readers that poll (`/progress`) or await
/// changes (a dashboard's live view).
#[derive(Clone)]
pub struct LatestProgress {
    tx: Arc<tokio::sync::watch::Sender<Option<ProgressEvent>>>,
}

impl Default for LatestProgress {
    fn default() -> Self {
        LatestProgress {
            tx: Arc::new(tokio::sync::watch::Sender::new(None)),
        }
    }
}

impl LatestProgress {
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<ProgressEvent>> {
        self.tx.subscribe()
    }
}

impl ProgressSink for LatestProgress {
    fn event(&self, e: &ProgressEvent) {
        self.tx.send_replace(Some(e.clone()));
    }
}

/// A sink that drops everything (no terminal, `--quiet`).
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn event(&self, _: &ProgressEvent) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Count(AtomicU64);

    impl ProgressSource for Count {
        fn event(&self, elapsed: Duration) -> ProgressEvent {
            ProgressEvent::Restore(RestoreEvent {
                seconds: elapsed.as_secs_f64(),
                files: self.0.load(Ordering::Relaxed),
                total_files: 10,
                bytes: 0,
                total_bytes: 0,
            })
        }
    }

    #[test]
    fn a_subscriber_sees_the_final_state() {
        let source = Arc::new(Count(AtomicU64::new(0)));
        let latest = LatestProgress::default();
        let rx = latest.subscribe();
        let stream = ProgressStream::start(
            source.clone(),
            Arc::new(latest.clone()),
            Duration::from_millis(10),
        );
        for _ in 0..10 {
            source.0.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
        stream.stop();
        let last = rx.borrow().clone().unwrap();
        match last {
            ProgressEvent::Restore(r) => assert_eq!(r.files, 10),
            other => panic!("{other:?}"),
        }
        let json = serde_json::to_value(&*rx.borrow()).unwrap();
        assert_eq!(json["total_files"], 10, "{json}");
    }
}
