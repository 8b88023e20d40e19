//! Deduplicating blob store of one backup run: chunk ids are checked against
//! the index and the blobs already queued in this run; new blobs are
//! compressed on a pool of worker threads, sealed into packs, and finished
//! packs are handed to the fan-out.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};

use super::fanout::{FanOut, PackUpload, Permit};
use super::progress::Progress;
use super::stages::{Stage, Stages};
use crate::format::codec;
use crate::format::id::Id;
use crate::format::index::IndexPack;
use crate::format::keys::Keyring;
use crate::format::pack::{BlobKind, PackBuilder};
use crate::repo::{MasterIndex, ReplicaSet};

struct Job {
    id: Id,
    kind: BlobKind,
    data: Vec<u8>,
}

struct Packers {
    /// The open data pack and its place in the fan-out's budget.
    data: Option<(PackBuilder, Permit)>,
    tree: Option<PackBuilder>,
}

/// Buffers handed back for reuse, at most `keep` of them and none larger
/// than `max_capacity`: a fresh buffer is a fresh mapping, and its page
/// faults cost more system time than the work done in it. Two pools use
/// it:
/// - chunk buffers, handed back by the compressors for the readers
///   (allocating a fresh megabyte per chunk cost more than reading it);
/// - data-pack buffers, handed back when every replica has uploaded (and
///   dropped) a pack (a fresh 16 MiB is 4096 faults). How many packs are
///   alive at once is bounded by the fan-out's budget
///   ([`FanOut::reserve`]), so the pool never holds more than that peak.
struct BufPool {
    bufs: Mutex<Vec<Vec<u8>>>,
    keep: usize,
    max_capacity: usize,
}

impl BufPool {
    /// Chunk buffers kept.
    const CHUNKS: usize = 8;
    /// Pack buffers kept.
    const PACKS: usize = 4;

    fn new(keep: usize, max_capacity: usize) -> Self {
        BufPool {
            bufs: Mutex::new(Vec::new()),
            keep,
            max_capacity,
        }
    }

    fn take(&self) -> Vec<u8> {
        self.bufs.lock().unwrap().pop().unwrap_or_default()
    }

    fn give(&self, mut v: Vec<u8>) {
        if v.capacity() <= self.max_capacity {
            let mut pool = self.bufs.lock().unwrap();
            if pool.len() < self.keep {
                v.clear();
                pool.push(v);
            }
        }
    }
}

/// The bytes of one sealed pack, shared by every replica's upload; the
/// buffer goes back to the pool when the last upload drops it.
struct PooledPack {
    data: Vec<u8>,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for PooledPack {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for PooledPack {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.data));
    }
}

struct Shared {
    pool: BufPool,
    /// Outlives the store: uploads may still hold packs after `finish`.
    packs: Arc<BufPool>,
    keyring: Arc<Keyring>,
    level: i32,
    pack_size: usize,
    packers: Mutex<Packers>,
    written: Mutex<Vec<IndexPack>>,
    fanout: FanOut,
    progress: Arc<Progress>,
}

/// The blob store; cheap to share by reference between threads.
pub struct BlobStore {
    index: Arc<MasterIndex>,
    targets: ReplicaSet,
    seen: Mutex<HashSet<Id>>,
    tx: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// How the store packs blobs.
pub struct StoreConfig {
    /// Replicas that must all hold a blob for it to count as known.
    pub targets: ReplicaSet,
    /// zstd level.
    pub level: i32,
    /// Target pack size in bytes.
    pub pack_size: usize,
    /// Compressor threads.
    pub workers: usize,
}

impl BlobStore {
    pub fn new(
        keyring: Arc<Keyring>,
        index: Arc<MasterIndex>,
        config: StoreConfig,
        fanout: FanOut,
        progress: Arc<Progress>,
    ) -> BlobStore {
        let StoreConfig {
            targets,
            level,
            pack_size,
            workers,
        } = config;
        let (tx, rx) = bounded::<Job>(workers * 2);
        let shared = Arc::new(Shared {
            pool: BufPool::new(BufPool::CHUNKS, 2 << 20),
            // A pack grown past twice its target (one large blob) is not kept.
            packs: Arc::new(BufPool::new(
                BufPool::PACKS.min(fanout.packs_alive()),
                pack_size.saturating_mul(2),
            )),
            keyring,
            level,
            pack_size,
            packers: Mutex::new(Packers {
                data: None,
                tree: None,
            }),
            written: Mutex::new(Vec::new()),
            fanout,
            progress,
        });
        let workers = (0..workers.max(1))
            .map(|n| {
                let rx = rx.clone();
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("cairn-compress-{n}"))
                    .spawn(move || worker(rx, shared))
                    .expect("spawn compress worker")
            })
            .collect();
        BlobStore {
            index,
            targets,
            seen: Mutex::new(HashSet::new()),
            tx: Some(tx),
            workers,
            shared,
        }
    }

    /// The run's per-stage timers.
    pub fn stages(&self) -> &Stages {
        &self.shared.progress.stages
    }

    pub fn keyring(&self) -> &Keyring {
        &self.shared.keyring
    }

    /// Whether every target replica already has the blob (from the index).
    pub fn known(&self, id: &Id) -> bool {
        self.index.has_on_all(id, self.targets)
    }

    /// Whether this store already queued the blob (it will be in one of
    /// the packs [`BlobStore::finish`] returns).
    pub fn queued(&self, id: &Id) -> bool {
        self.seen.lock().unwrap().contains(id)
    }

    /// Store a blob unless it is known; returns its id. The data is only
    /// copied (into a pooled buffer) when the blob is new.
    pub fn store(&self, kind: BlobKind, data: &[u8]) -> Id {
        let p = &self.shared.progress;
        let id = p.stages.time(Stage::Hash, data.len(), || {
            self.shared.keyring.chunk_id(data)
        });
        if self.known(&id) || !self.seen.lock().unwrap().insert(id) {
            return id;
        }
        p.blobs_new.fetch_add(1, Relaxed);
        p.bytes_new.fetch_add(data.len() as u64, Relaxed);
        let mut buf = self.shared.pool.take();
        buf.extend_from_slice(data);
        if let Some(tx) = &self.tx {
            tx.send(Job {
                id,
                kind,
                data: buf,
            })
            .expect("compress workers outlive the store");
        }
        id
    }

    /// Wait for the workers, flush the open packs, and return the index
    /// entries of every pack written plus the fan-out to finish.
    pub fn finish(mut self) -> (Vec<IndexPack>, FanOut) {
        drop(self.tx.take());
        for w in self.workers.drain(..) {
            w.join().expect("compress worker panicked");
        }
        let mut shared = Arc::try_unwrap(self.shared)
            .ok()
            .expect("workers have exited");
        let packers = shared.packers.get_mut().unwrap();
        let open = [
            packers.data.take().map(|(b, permit)| (b, Some(permit))),
            packers.tree.take().map(|b| (b, None)),
        ];
        let mut written = std::mem::take(shared.written.get_mut().unwrap());
        for (b, permit) in open.into_iter().flatten() {
            if !b.is_empty() {
                written.push(ship(b, permit, &shared));
            }
        }
        (written, shared.fanout)
    }
}

/// Seal a pack and queue it to every replica. A data pack (with its
/// `permit`) has a buffer from (and back to) the pack pool; a tree pack's
/// is its own.
fn ship(b: PackBuilder, permit: Option<Permit>, s: &Shared) -> IndexPack {
    let p = s.progress.stages.time(Stage::Seal, b.len(), || b.finish());
    let entry = IndexPack {
        id: p.id,
        size: p.data.len() as u64,
        header: p.header,
        blobs: p.entries,
    };
    let data = match permit {
        Some(_) => Bytes::from_owner(PooledPack {
            data: p.data,
            pool: s.packs.clone(),
        }),
        None => Bytes::from(p.data),
    };
    s.fanout.send(PackUpload {
        id: p.id,
        data,
        permit: permit.map(Arc::new),
    });
    entry
}

fn worker(rx: Receiver<Job>, s: Arc<Shared>) {
    // One output buffer per worker, reused for every chunk.
    let mut out = Vec::new();
    for job in rx {
        let raw_len = job.data.len();
        let codec = s.progress.stages.time(Stage::Compress, raw_len, || {
            codec::compress_into(&job.data, s.level, &mut out)
        });
        let payload = match codec {
            codec::Codec::Zstd => &out[..],
            codec::Codec::Raw => &job.data[..],
        };
        s.progress
            .bytes_stored
            .fetch_add(payload.len() as u64, Relaxed);
        let full = {
            let mut packers = s.packers.lock().unwrap();
            let epoch = s.keyring.current();
            let new_pack = |buf| {
                PackBuilder::with_buffer(epoch.id, &epoch.key, &s.keyring.repo_id, s.pack_size, buf)
            };
            // Close the open pack first if this blob would overflow it, so a
            // pack stays one bounded allocation.
            let overflows = |b: &PackBuilder| b.would_overflow(payload.len(), s.pack_size);
            let (b, full) = match job.kind {
                BlobKind::Data => {
                    let slot = &mut packers.data;
                    let full = slot.take_if(|(b, _)| overflows(b));
                    let (b, _) = slot.get_or_insert_with(|| {
                        // Waits while the budget of packs alive is spent.
                        let permit = s.fanout.reserve();
                        (new_pack(s.packs.take()), permit)
                    });
                    (b, full.map(|(b, permit)| (b, Some(permit))))
                }
                BlobKind::Tree => {
                    let slot = &mut packers.tree;
                    let full = slot.take_if(|b| overflows(b));
                    // Tree packs fill slowly and stay small: a fresh buffer
                    // maps only the pages they touch, a reused one is all
                    // resident.
                    let b = slot.get_or_insert_with(|| new_pack(Vec::new()));
                    (b, full.map(|b| (b, None)))
                }
            };
            s.progress.stages.time(Stage::Encrypt, payload.len(), || {
                b.add(job.id, job.kind, codec, raw_len as u32, payload)
            });
            full
        };
        s.pool.give(job.data);
        // Seal and queue outside the lock so other workers keep packing
        // while this one waits on a slow replica.
        if let Some((b, permit)) = full {
            let entry = ship(b, permit, &s);
            s.written.lock().unwrap().push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack pool as the store makes it for 1024-byte packs.
    fn pack_pool() -> Arc<BufPool> {
        Arc::new(BufPool::new(BufPool::PACKS, 2048))
    }

    fn pooled(pool: &Arc<BufPool>, capacity: usize) -> Bytes {
        let mut data = Vec::with_capacity(capacity);
        data.extend_from_slice(b"pack");
        Bytes::from_owner(PooledPack {
            data,
            pool: pool.clone(),
        })
    }

    #[test]
    fn a_pack_buffer_returns_when_the_last_upload_drops_it() {
        let pool = pack_pool();
        let a = pooled(&pool, 1024);
        let b = a.clone();
        drop(a);
        assert!(
            pool.bufs.lock().unwrap().is_empty(),
            "one upload still holds it"
        );
        assert_eq!(&b[..], b"pack");
        drop(b);
        let v = pool.take();
        assert!(v.capacity() >= 1024);
    }

    #[test]
    fn the_pool_keeps_few_buffers_and_no_oversized_one() {
        let pool = pack_pool();
        drop(pooled(&pool, 4096));
        assert!(
            pool.bufs.lock().unwrap().is_empty(),
            "grown past 2x the pack size"
        );
        let held: Vec<Bytes> = (0..BufPool::PACKS + 3)
            .map(|_| pooled(&pool, 1024))
            .collect();
        drop(held);
        assert_eq!(pool.bufs.lock().unwrap().len(), BufPool::PACKS);
    }
}
