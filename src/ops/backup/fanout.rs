//! Fan-out of finished packs to every replica.
//!
//! Each replica has its own bounded queue and its own upload task with a
//! concurrency limit, so a slow replica makes the producer wait (bounded
//! memory) and a failed one is dropped from the run without disturbing the
//! others: its queue is closed, later packs skip it, and it gets no index or
//! snapshot from this run.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cairn_backends::{Capabilities, Handle, Kind, PutMode};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::progress::Progress;
use super::stages::Stage;
use crate::error::Error;
use crate::format::id::Id;
use crate::repo::Replica;

/// Concurrent pack uploads per replica on a local disk (or in memory) when
/// none is asked for. Writing a pack into the page cache takes a fraction
/// of the time filling the next one does, so a second upload hardly ever
/// overlapped the first; it only let one more 16 MiB pack be alive.
pub const LOCAL_UPLOADS: usize = 1;

/// Concurrent pack uploads per replica over the network when none is asked
/// for. Each upload also waits out round trips besides moving its bytes
/// (S3: the request and its answer; SFTP: open, fsync, close, rename), so
/// with two a link with 50 ms RTT sat idle between packs and reached 0.75 of
/// the same rate cap without the delay; four keep it busy
/// (docs/benchmarks/results-latency-2026-12-04.md). Memory: each is a pack
/// held until its upload ends, shared by every replica (see the memory
/// bound in docs/architecture.md).
pub const REMOTE_UPLOADS: usize = 4;

/// Concurrent pack uploads for a replica with `caps`: `requested` if it is
/// not 0 (`--connections`), else [`LOCAL_UPLOADS`] or [`REMOTE_UPLOADS`],
/// the latter never above the backend's own connection limit.
pub fn upload_connections(requested: usize, caps: &Capabilities) -> usize {
    if requested > 0 {
        requested
    } else if caps.local {
        LOCAL_UPLOADS
    } else {
        REMOTE_UPLOADS.min(caps.default_connections).max(1)
    }
}

/// A pack ready to upload: name and bytes shared by every queue.
#[derive(Clone)]
pub struct PackUpload {
    pub id: Id,
    pub data: Bytes,
    /// Its place in the run's budget of packs ([`FanOut::reserve`]),
    /// given back when every replica is done with it: uploaded, failed or
    /// skipped. Not tied to the bytes, which a backend may keep.
    pub permit: Option<Arc<Permit>>,
}

/// One place in the run's budget of packs alive ([`FanOut::reserve`]);
/// given back on drop.
pub type Permit = tokio::sync::OwnedSemaphorePermit;

pub struct FanOut {
    /// Places for packs being filled or uploaded; `packs_alive` of them.
    budget: Arc<Semaphore>,
    packs_alive: usize,
    senders: Vec<Option<mpsc::Sender<PackUpload>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    errors: Arc<Mutex<Vec<Option<Error>>>>,
    progress: Arc<Progress>,
}

impl FanOut {
    /// Start one upload task per replica on `rt`, each with
    /// [`upload_connections`]`(connections, …)` uploads at a time (0: the
    /// default for that replica's backend).
    pub fn start(
        rt: &tokio::runtime::Handle,
        replicas: &[Replica],
        queue: usize,
        connections: usize,
        progress: Arc<Progress>,
    ) -> FanOut {
        let errors = Arc::new(Mutex::new((0..replicas.len()).map(|_| None).collect()));
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        let mut max_uploads = 1;
        for (i, r) in replicas.iter().enumerate() {
            let (tx, rx) = mpsc::channel::<PackUpload>(queue.max(1));
            senders.push(Some(tx));
            let uploads = upload_connections(connections, &r.backend.capabilities());
            max_uploads = max_uploads.max(uploads);
            tasks.push(rt.spawn(upload_task(
                i,
                r.clone(),
                rx,
                uploads,
                errors.clone(),
                progress.clone(),
            )));
        }
        // One uploading per connection of the busiest replica, plus the one
        // being filled, keep every replica busy; more would only hold
        // memory. At least two: a worker takes the next pack's place while
        // it still holds the full one it is about to ship.
        let packs_alive = (max_uploads + 1).max(2);
        FanOut {
            budget: Arc::new(Semaphore::new(packs_alive)),
            packs_alive,
            senders,
            tasks,
            errors,
            progress,
        }
    }

    /// Packs the run may have alive at once (being filled or uploaded).
    pub fn packs_alive(&self) -> usize {
        self.packs_alive
    }

    /// A place for one more pack; waits while [`FanOut::packs_alive`] packs
    /// are being filled or uploaded, so the packs of a run take at most
    /// that many times the pack size however fast the readers are. Call
    /// from a plain thread, never from inside the runtime.
    pub fn reserve(&self) -> Permit {
        futures::executor::block_on(self.budget.clone().acquire_owned())
            .expect("the budget is never closed")
    }

    /// Queue a pack to every replica still alive; blocks while a queue is
    /// full. Call from a plain thread, never from inside the runtime.
    pub fn send(&self, pack: PackUpload) {
        for (i, tx) in self.senders.iter().enumerate() {
            let Some(tx) = tx else { continue };
            if self.progress.replicas[i].failed.load(Relaxed) {
                continue;
            }
            self.progress.replicas[i].packs_queued.fetch_add(1, Relaxed);
            // An error means the task closed its queue after a failure.
            let _ = tx.blocking_send(pack.clone());
        }
    }

    /// Close the queues, wait for the uploads, and return per replica
    /// `None` (every pack is durable there) or the error that stopped it.
    pub async fn finish(mut self) -> Vec<Option<Error>> {
        self.senders.iter_mut().for_each(|s| *s = None);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        std::mem::take(&mut *self.errors.lock().unwrap())
    }
}

async fn upload_task(
    i: usize,
    replica: Replica,
    mut rx: mpsc::Receiver<PackUpload>,
    connections: usize,
    errors: Arc<Mutex<Vec<Option<Error>>>>,
    progress: Arc<Progress>,
) {
    let mut running: JoinSet<Result<u64, Error>> = JoinSet::new();
    let fail = |e: Error, rx: &mut mpsc::Receiver<PackUpload>| {
        tracing::error!("replica {} failed: {e}", replica.name);
        progress.replicas[i].failed.store(true, Relaxed);
        errors.lock().unwrap()[i].get_or_insert(e);
        rx.close();
    };
    loop {
        tokio::select! {
            biased;
            Some(done) = running.join_next(), if !running.is_empty() => {
                match done {
                    Ok(Ok(n)) => {
                        progress.replicas[i].packs_done.fetch_add(1, Relaxed);
                        progress.replicas[i].bytes_done.fetch_add(n, Relaxed);
                    }
                    Ok(Err(e)) => fail(e, &mut rx),
                    Err(join) => fail(Error::Invalid(format!("upload task panicked: {join}")), &mut rx),
                }
            }
            next = rx.recv(), if running.len() < connections => {
                let Some(pack) = next else { break };
                if progress.replicas[i].failed.load(Relaxed) {
                    continue; // drain what was queued before the failure
                }
                let r = replica.clone();
                let progress = progress.clone();
                running.spawn(async move {
                    let PackUpload { id, data, permit } = pack;
                    let h = Handle::new(Kind::Pack, id.to_hex());
                    let n = data.len() as u64;
                    let t = progress.stages.start(Stage::Upload);
                    let put = r.backend.put(&h, data, PutMode::Create).await;
                    progress.stages.stop(t, Stage::Upload, n);
                    drop(permit);
                    match put {
                        Ok(()) => Ok(n),
                        // Packs are named by their bytes: an existing one is this one.
                        Err(e) if e.kind() == cairn_backends::ErrorKind::AlreadyExists => Ok(n),
                        Err(e) => Err(Error::backend(&r.name, e)),
                    }
                });
            }
            else => break,
        }
    }
    while let Some(done) = running.join_next().await {
        match done {
            Ok(Ok(n)) => {
                progress.replicas[i].packs_done.fetch_add(1, Relaxed);
                progress.replicas[i].bytes_done.fetch_add(n, Relaxed);
            }
            Ok(Err(e)) => fail(e, &mut rx),
            Err(join) => fail(
                Error::Invalid(format!("upload task panicked: {join}")),
                &mut rx,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(local: bool, default_connections: usize) -> Capabilities {
        Capabilities {
            local,
            default_connections,
            ..Capabilities::default()
        }
    }

    /// A third reserve waits until one of two packs is done on every
    /// replica, even though the memory backend keeps the pack's bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_budget_frees_a_place_when_every_replica_is_done() {
        let replicas = crate::test_support::memory_replicas(2);
        let progress = Arc::new(Progress::new(replicas.iter().map(|r| r.name.clone())));
        let fan = FanOut::start(
            &tokio::runtime::Handle::current(),
            &replicas,
            2,
            0,
            progress,
        );
        assert_eq!(fan.packs_alive(), LOCAL_UPLOADS + 1);
        let fan = Arc::new(fan);
        let (held, sent) = tokio::task::spawn_blocking({
            let fan = fan.clone();
            move || {
                let held: Vec<Permit> = (0..fan.packs_alive()).map(|_| fan.reserve()).collect();
                let (tx, rx) = std::sync::mpsc::channel();
                let waiter = {
                    let fan = fan.clone();
                    std::thread::spawn(move || {
                        let p = fan.reserve();
                        tx.send(()).unwrap();
                        p
                    })
                };
                assert!(
                    rx.recv_timeout(std::time::Duration::from_millis(300))
                        .is_err(),
                    "the budget is spent: reserve waits"
                );
                let mut held = held;
                let permit = held.pop().map(Arc::new);
                fan.send(PackUpload {
                    id: Id([7; 32]),
                    data: Bytes::from_static(b"pack"),
                    permit,
                });
                rx.recv_timeout(std::time::Duration::from_secs(20))
                    .expect("uploaded to both replicas: its place is free");
                (held, waiter.join().unwrap())
            }
        })
        .await
        .unwrap();
        drop((held, sent));
        let fan = Arc::into_inner(fan).unwrap();
        assert!(fan.finish().await.iter().all(Option::is_none));
        for r in &replicas {
            let h = Handle::new(Kind::Pack, Id([7; 32]).to_hex());
            assert_eq!(&r.backend.get(&h, None).await.unwrap()[..], b"pack");
        }
    }

    #[test]
    fn upload_connections_default_by_backend() {
        // Local disks and memory: one.
        assert_eq!(upload_connections(0, &caps(true, 4)), LOCAL_UPLOADS);
        assert_eq!(upload_connections(0, &caps(true, 64)), LOCAL_UPLOADS);
        assert_eq!(LOCAL_UPLOADS, 1);
        // Network: four, within the backend's connection limit.
        assert_eq!(upload_connections(0, &caps(false, 8)), REMOTE_UPLOADS);
        assert_eq!(upload_connections(0, &caps(false, 4)), 4);
        assert_eq!(upload_connections(0, &caps(false, 2)), 2);
        assert_eq!(upload_connections(0, &caps(false, 0)), 1);
        // Asked for: as asked, whatever the backend.
        assert_eq!(upload_connections(3, &caps(true, 4)), 3);
        assert_eq!(upload_connections(1, &caps(false, 8)), 1);
        assert_eq!(upload_connections(16, &caps(false, 8)), 16);
    }
}
