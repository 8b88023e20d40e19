//! Where a backup's CPU goes, stage by stage: the figures behind
//! `cairn backup --profile-stages`. Each stage adds the CPU time of the
//! thread that ran it (not wall time, which counts waiting for a core on a
//! busy machine) and the bytes it handled. Off unless asked for: reading a
//! thread's CPU clock is a system call, a few per chunk.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A step of the pipeline that is timed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `read` calls on source files.
    Read,
    /// Finding chunk boundaries (FastCDC).
    Chunk,
    /// The keyed BLAKE3 chunk id.
    Hash,
    /// zstd (or the sample that skips it).
    Compress,
    /// AES-256-GCM of each blob, appended to its pack.
    Encrypt,
    /// Sealing a pack: its footer and the BLAKE3 id of the whole pack.
    Seal,
    /// Uploads, summed over replicas and connections: wall time, waiting
    /// included, not CPU.
    Upload,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Read,
        Stage::Chunk,
        Stage::Hash,
        Stage::Compress,
        Stage::Encrypt,
        Stage::Seal,
        Stage::Upload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Chunk => "chunk",
            Stage::Hash => "hash",
            Stage::Compress => "compress",
            Stage::Encrypt => "encrypt",
            Stage::Seal => "seal",
            Stage::Upload => "upload",
        }
    }
}

/// Live per-stage counters.
#[derive(Default)]
pub struct Stages {
    on: AtomicBool,
    nanos: [AtomicU64; 7],
    bytes: [AtomicU64; 7],
}

/// A started measurement: the thread's CPU clock (or, for uploads, the
/// wall clock) when it began; nothing when profiling is off.
pub struct Started(Option<Clock>);

enum Clock {
    Cpu(Duration),
    Wall(Instant),
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl Stages {
    /// Switch the counters on (they start off).
    pub fn enable(&self) {
        self.on.store(true, Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// Start measuring `stage` on this thread.
    pub fn start(&self, stage: Stage) -> Started {
        Started(self.enabled().then(|| match stage {
            Stage::Upload => Clock::Wall(Instant::now()),
            _ => Clock::Cpu(thread_cpu()),
        }))
    }

    /// Count what happened since `started` and `bytes` against `stage`.
    pub fn stop(&self, started: Started, stage: Stage, bytes: u64) {
        let took = match started.0 {
            None => return,
            Some(Clock::Wall(t)) => t.elapsed(),
            Some(Clock::Cpu(t)) => thread_cpu().saturating_sub(t),
        };
        self.add(stage, took, bytes);
    }

    /// Run `f` on this thread, counting its CPU time and `bytes` against
    /// `stage`.
    pub fn time<R>(&self, stage: Stage, bytes: usize, f: impl FnOnce() -> R) -> R {
        let t = self.start(stage);
        let r = f();
        self.stop(t, stage, bytes as u64);
        r
    }

    pub fn add(&self, stage: Stage, took: Duration, bytes: u64) {
        let i = stage as usize;
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos[i].fetch_add(nanos, Relaxed);
        self.bytes[i].fetch_add(bytes, Relaxed);
    }

    /// The figures so far, one row per stage in pipeline order.
    pub fn profile(&self) -> Vec<StageTime> {
        Stage::ALL
            .iter()
            .map(|&s| StageTime {
                stage: s.name(),
                seconds: self.nanos[s as usize].load(Relaxed) as f64 / 1e9,
                bytes: self.bytes[s as usize].load(Relaxed),
            })
            .collect()
    }
}

/// One stage's share of a backup.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageTime {
    pub stage: &'static str,
    /// CPU seconds of the threads that ran it (for `upload`, wall seconds
    /// summed over uploads); a stage on several threads can exceed the
    /// wall time.
    pub seconds: f64,
    /// Bytes the stage handled (its input).
    pub bytes: u64,
}

impl StageTime {
    /// Seconds per 10^9 bytes of `source` (the bytes the backup read).
    pub fn per_gb(&self, source: u64) -> Option<f64> {
        (source > 0).then(|| self.seconds * 1e9 / source as f64)
    }

    /// What one thread of this stage gets through: 10^9 bytes per second.
    pub fn gb_per_s(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.bytes as f64 / self.seconds / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_add_up_their_time_and_bytes() {
        let s = Stages::default();
        s.enable();
        s.add(Stage::Compress, Duration::from_millis(500), 1_000_000_000);
        s.add(Stage::Compress, Duration::from_millis(500), 1_000_000_000);
        let got = s.time(Stage::Hash, 7, || 42);
        assert_eq!(got, 42);
        let p = s.profile();
        assert_eq!(p.len(), Stage::ALL.len());
        let c = p.iter().find(|t| t.stage == "compress").unwrap();
        assert_eq!(c.bytes, 2_000_000_000);
        assert!((c.seconds - 1.0).abs() < 1e-9);
        assert!((c.gb_per_s().unwrap() - 2.0).abs() < 1e-9);
        assert!((c.per_gb(4_000_000_000).unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(p.iter().find(|t| t.stage == "hash").unwrap().bytes, 7);
        let idle = p.iter().find(|t| t.stage == "upload").unwrap();
        assert_eq!(idle.gb_per_s(), None);
        assert_eq!(idle.per_gb(0), None);
    }

    #[test]
    fn cpu_time_is_counted_and_nothing_when_off() {
        let spin = || {
            let mut x = 0u64;
            for i in 0..20_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            x
        };
        let off = Stages::default();
        off.time(Stage::Chunk, 10, spin);
        assert!(off
            .profile()
            .iter()
            .all(|t| t.seconds == 0.0 && t.bytes == 0));

        let on = Stages::default();
        on.enable();
        on.time(Stage::Chunk, 10, spin);
        let t = on.start(Stage::Upload);
        std::thread::sleep(Duration::from_millis(20));
        on.stop(t, Stage::Upload, 1);
        let p = on.profile();
        let chunk = p.iter().find(|t| t.stage == "chunk").unwrap();
        assert!(chunk.seconds > 0.0 && chunk.bytes == 10, "{chunk:?}");
        // Sleeping costs no CPU but is upload (wall) time.
        let up = p.iter().find(|t| t.stage == "upload").unwrap();
        assert!(up.seconds >= 0.02, "{up:?}");
    }
}
