//! Reading objects from the replicas: the one place that decides which
//! replica is asked first, when a copy is accepted, how a bad copy is
//! reported and which replica served each read.

use bytes::Bytes;
use cairn_backends::{Handle, Kind};

use super::{BlobLoc, MasterIndex, PackInfo, ReplicaSet, Repository};
use crate::error::{Error, Result};
use crate::format::codec;
use crate::format::id::Id;
use crate::format::pack;
use crate::format::tree::Tree;

/// Counts of the objects and bytes read from each replica, and of reads
/// that had to fall back to another replica.
#[derive(Debug, Default)]
pub struct ReadStats {
    per_replica: std::sync::Mutex<Vec<(u64, u64)>>,
    fallbacks: std::sync::Mutex<Vec<String>>,
}

impl ReadStats {
    pub(super) fn served(&self, replica: usize, bytes: u64) {
        let mut v = self.per_replica.lock().unwrap();
        if v.len() <= replica {
            v.resize(replica + 1, (0, 0));
        }
        v[replica].0 += 1;
        v[replica].1 += bytes;
    }

    pub(super) fn fell_back(&self, what: String) {
        self.fallbacks.lock().unwrap().push(what);
    }

    /// `(objects, bytes)` read from each replica, by replica position.
    pub fn per_replica(&self) -> Vec<(u64, u64)> {
        self.per_replica.lock().unwrap().clone()
    }

    /// One line per read that a replica could not serve and another did:
    /// what failed where, and where it came from instead.
    pub fn fallbacks(&self) -> Vec<String> {
        self.fallbacks.lock().unwrap().clone()
    }
}

/// Every replica asked for an object, and what was wrong with its copy.
#[derive(Debug)]
pub struct FetchFailure {
    pub handle: Handle,
    /// `(replica name, error)` in the order asked.
    pub tried: Vec<(String, Error)>,
}

impl FetchFailure {
    /// `"a: damaged; b: not found"`, for reports that name every source.
    pub fn reasons(&self) -> String {
        self.tried
            .iter()
            .map(|(_, e)| crate::error::chain(e))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl From<FetchFailure> for Error {
    /// The last replica's error (every replica's is logged at debug level),
    /// or "on no replica" when none was asked.
    fn from(f: FetchFailure) -> Error {
        match f.tried.into_iter().last() {
            Some((_, e)) => e,
            None => Error::NotFound(format!("{}: on no replica", f.handle)),
        }
    }
}

impl Repository {
    /// Read `h` (or `range` of it) from the replicas in `from`, asking the
    /// preferred one ([`Repository::set_preferred`]) first, then the local
    /// ones, then the others in replica order, and return what `accept` makes of the first copy
    /// it accepts, with the position of the replica that served it.
    ///
    /// A replica whose copy is missing, unreadable or refused by `accept`
    /// is passed over; an error that does not already name its replica is
    /// prefixed with it. A read served after another replica failed is
    /// recorded in [`Repository::reads`] as a fallback.
    pub async fn fetch_with<T>(
        &self,
        h: &Handle,
        from: ReplicaSet,
        range: Option<std::ops::Range<u64>>,
        mut accept: impl FnMut(Bytes) -> Result<T>,
    ) -> Result<(T, usize), FetchFailure> {
        let mut tried: Vec<(String, Error)> = Vec::new();
        // The replica the user chose, then local ones (a read from disk is
        // cheaper than one from a bucket, and costs no egress), then the
        // others, each in replica order.
        let mut order: Vec<usize> = from.iter().filter(|&i| i < self.replicas.len()).collect();
        order.sort_by_key(|&i| {
            (
                self.preferred != Some(i),
                !self.replicas[i].backend.capabilities().local,
            )
        });
        for i in order {
            let r = &self.replicas[i];
            let res = match r.backend.get(h, range.clone()).await {
                Ok(d) => {
                    let n = d.len() as u64;
                    accept(d).map(|v| (v, n)).map_err(|e| match e {
                        Error::Backend { .. } => e,
                        other => Error::Corrupt(format!("{}: {other}", r.name)),
                    })
                }
                Err(e) => Err(Error::backend(&r.name, e)),
            };
            match res {
                Ok((v, n)) => {
                    self.served(i, n, h, tried.last().map(|(_, e)| e));
                    return Ok((v, i));
                }
                Err(e) => {
                    tracing::debug!("{}", crate::error::chain(&e));
                    tried.push((r.name.clone(), e));
                }
            }
        }
        Err(FetchFailure {
            handle: h.clone(),
            tried,
        })
    }

    /// Fetch a content-addressed object (pack, index, snapshot) from the
    /// first replica in `from` whose copy hashes to its name.
    pub async fn get_verified(&self, h: &Handle, from: ReplicaSet) -> Result<Bytes> {
        Ok(self.get_verified_from(h, from).await?.0)
    }

    /// [`Repository::get_verified`], also saying which replica served it.
    pub async fn get_verified_from(
        &self,
        h: &Handle,
        from: ReplicaSet,
    ) -> Result<(Bytes, usize), FetchFailure> {
        self.fetch_with(h, from, None, |d| {
            if Id::of_stored(&d).to_hex() == h.name {
                Ok(d)
            } else {
                Err(Error::Corrupt(format!(
                    "{h}: content does not match its name (damaged)"
                )))
            }
        })
        .await
    }

    /// Read `range` of a pack from the first replica that holds it and
    /// returns exactly that many bytes (blobs are authenticated by the caller).
    pub async fn read_range(&self, pack: &PackInfo, range: std::ops::Range<u64>) -> Result<Bytes> {
        let h = Handle::new(Kind::Pack, pack.id.to_hex());
        let want = range.end - range.start;
        let read = self.fetch_with(&h, pack.replicas, Some(range), |d| {
            if d.len() as u64 == want {
                Ok(d)
            } else {
                Err(Error::Corrupt(format!(
                    "{h}: short read ({} of {want} bytes)",
                    d.len()
                )))
            }
        });
        Ok(read.await?.0)
    }

    /// Read, authenticate, decompress and verify one blob. Tries every
    /// replica that holds its pack, so one damaged copy is not fatal.
    pub async fn read_blob(&self, index: &MasterIndex, id: &Id) -> Result<Vec<u8>> {
        let (pack, loc) = index
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("blob {} is in no index", id.short())))?;
        let h = Handle::new(Kind::Pack, pack.id.to_hex());
        let range = loc.offset as u64..loc.offset as u64 + loc.stored_len as u64;
        let read = self.fetch_with(&h, pack.replicas, Some(range), |d| {
            self.decode_blob(&h, pack, loc, id, d.to_vec())
        });
        Ok(read.await?.0)
    }

    /// Decode a blob's stored bytes (pure; used by restore and check).
    pub fn decode_blob(
        &self,
        h: &Handle,
        pack: &PackInfo,
        loc: &BlobLoc,
        id: &Id,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>> {
        if stored.len() != loc.stored_len as usize {
            return Err(Error::Corrupt(format!(
                "{h}: blob {} is truncated ({} of {} bytes)",
                id.short(),
                stored.len(),
                loc.stored_len
            )));
        }
        let ek = self.keyring.epoch_key(pack.header.epoch).ok_or_else(|| {
            Error::Corrupt(format!("{h}: unknown key epoch {}", pack.header.epoch))
        })?;
        let plain = pack::open_blob(&pack.header, ek, &self.keyring.repo_id, loc.seq, stored)
            .map_err(|source| Error::Crypto {
                what: format!("{h}: blob {}", id.short()),
                source,
            })?;
        let data = codec::decompress(loc.codec(), plain, loc.raw_len() as usize)
            .map_err(|e| Error::Corrupt(format!("{h}: blob {}: {e}", id.short())))?;
        if self.keyring.chunk_id(&data) != *id {
            return Err(Error::Corrupt(format!(
                "{h}: blob {} does not hash to its id",
                id.short()
            )));
        }
        Ok(data)
    }

    /// Load a tree stored as the blobs `ids`.
    pub async fn load_tree(&self, index: &MasterIndex, ids: &[Id]) -> Result<Tree> {
        let mut buf = Vec::new();
        for id in ids {
            buf.extend_from_slice(&self.read_blob(index, id).await?);
        }
        Tree::from_bytes(&buf).map_err(|e| Error::Corrupt(format!("tree {:?}: {e}", ids)))
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;
    use bytes::Bytes;
    use cairn_backends::PutMode;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_copy_is_read_from_the_next_replica_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let repo = init(memory_replicas(2)).await;
        backup_dir(&repo, &src).await;
        let index = repo.load_index().await.unwrap();
        // Damage every pack on the first replica.
        for h in packs(&repo, 0).await {
            let b = &repo.replica(0).backend;
            let mut data = b.get(&h, None).await.unwrap().to_vec();
            data[100] ^= 1;
            b.put(&h, Bytes::from(data), PutMode::Overwrite)
                .await
                .unwrap();
        }
        let h = packs(&repo, 0).await.remove(0);
        let (_, served) = repo.get_verified_from(&h, repo.all()).await.unwrap();
        assert_eq!(served, 1);
        let fallbacks = repo.reads().fallbacks();
        assert!(
            fallbacks.iter().any(|f| f.contains("taken from mem1")),
            "{fallbacks:?}"
        );
        // Every blob still reads, each from the second replica.
        for (id, _) in index.blobs() {
            repo.read_blob(&index, id).await.unwrap();
        }
        // With only the damaged replica, the failure names it.
        let f = repo
            .get_verified_from(&h, crate::repo::ReplicaSet::single(0))
            .await
            .unwrap_err();
        assert_eq!(f.tried.len(), 1);
        assert!(
            f.reasons().contains("mem0") && f.reasons().contains("damaged"),
            "{}",
            f.reasons()
        );
    }
}
