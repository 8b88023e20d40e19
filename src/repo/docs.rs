//! The repository's documents — index files and snapshots — across
//! replicas: listing them, reading and sealing them, storing them.

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_backends::{ErrorKind, Handle, Kind, PutMode};

use super::{be, MasterIndex, Replica, ReplicaSet, Repository};
use crate::error::{Error, Result};
use crate::format::codec::{self, Codec};
use crate::format::crypto::ObjectKind;
use crate::format::id::Id;
use crate::format::index;
use crate::format::keys::Keyring;
use crate::format::snapshot::Snapshot;

/// One index file: its name, the replicas listing it and the packs it
/// describes.
#[derive(Clone, Debug)]
pub struct IndexFile {
    pub name: String,
    pub replicas: ReplicaSet,
    pub packs: Vec<Id>,
}

/// A snapshot with its id and the replicas that list it.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    pub id: Id,
    pub snapshot: Snapshot,
    /// The replicas that list this snapshot.
    pub replicas: ReplicaSet,
}

impl SnapshotEntry {
    /// Whether this is the safety snapshot `restore --in-place` took of a
    /// directory before changing it, which `latest` never means.
    pub fn is_safety_snapshot(&self) -> bool {
        crate::format::snapshot::is_safety_tagged(&self.snapshot.tags)
    }
}

/// Compress and seal a document (index, snapshot): `codec byte ‖ payload`.
pub fn seal_doc(keyring: &Keyring, kind: ObjectKind, payload: &[u8]) -> Vec<u8> {
    let (codec, compressed) = codec::compress(payload, 3);
    let mut plain = Vec::with_capacity(1 + payload.len());
    plain.push(codec as u8);
    plain.extend_from_slice(compressed.as_deref().unwrap_or(payload));
    keyring.seal(kind, &plain)
}

/// The inverse of [`seal_doc`].
pub fn open_doc(keyring: &Keyring, kind: ObjectKind, what: &str, data: &[u8]) -> Result<Vec<u8>> {
    let plain = keyring.open(kind, data).map_err(|source| Error::Crypto {
        what: what.to_string(),
        source,
    })?;
    let corrupt = || Error::Corrupt(format!("{what}: bad document encoding"));
    let (codec, body) = plain.split_first().ok_or_else(corrupt)?;
    match Codec::from_u8(*codec).ok_or_else(corrupt)? {
        Codec::Raw => Ok(body.to_vec()),
        Codec::Zstd => {
            let mut out = Vec::new();
            let mut dec = zstd::stream::read::Decoder::new(body).map_err(|_| corrupt())?;
            std::io::copy(&mut std::io::Read::take(&mut dec, MAX_DOC_PLAIN), &mut out)
                .map_err(|_| corrupt())?;
            Ok(out)
        }
    }
}

/// The largest index file read: 64 packs of small files' blobs stay far
/// below it. Larger objects in `index/` are not downloaded.
pub const MAX_INDEX_BYTES: u64 = 256 << 20;
/// The largest snapshot file read (a snapshot keeps at most 100 errors).
pub const MAX_SNAPSHOT_BYTES: u64 = 16 << 20;
/// The largest key slot read: a slot is a few hundred bytes of JSON.
pub const MAX_KEY_SLOT_BYTES: u64 = 64 << 10;
/// The largest `config` read: a few hundred bytes of JSON.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;
/// The largest plaintext a document may decompress to.
const MAX_DOC_PLAIN: u64 = 512 << 20;

impl Repository {
    /// The documents of `kind` on every replica, with the replicas that
    /// list each. A copy listed larger than `max` is not one cairn wrote:
    /// it is left out (with a warning naming it) before anything is
    /// downloaded, so a planted huge object cannot exhaust memory.
    async fn list_docs(&self, kind: Kind, max: u64) -> Result<BTreeMap<String, ReplicaSet>> {
        let mut names: BTreeMap<String, ReplicaSet> = BTreeMap::new();
        for (i, r) in self.replicas.iter().enumerate() {
            for m in r.backend.list(kind).await.map_err(be(r))? {
                if m.size > max {
                    tracing::warn!(
                        "{}: {} is {} bytes, over the {max}-byte limit of its kind; ignored",
                        r.name,
                        m.handle,
                        m.size
                    );
                    continue;
                }
                names.entry(m.handle.name).or_default().insert(i);
            }
        }
        Ok(names)
    }

    /// Read the index files of every replica into one master index.
    ///
    /// An index file whose every copy is damaged (or vanished since the
    /// listing) is skipped with a warning rather than failing the command: the
    /// blobs it lists are then simply unknown (a restore names the files
    /// that need them, a backup stores them again), and `check` reports the
    /// file itself.
    pub async fn load_index(&self) -> Result<MasterIndex> {
        Ok(self.load_index_files().await?.0)
    }

    /// Like [`Repository::load_index`], also returning each readable index
    /// file with the replicas that list it and the packs it describes.
    pub async fn load_index_files(&self) -> Result<(MasterIndex, Vec<IndexFile>)> {
        self.load_index_each(|_| {}).await
    }

    /// Like [`Repository::load_index_files`], also handing each index
    /// file's pack descriptions (with their blobs) to `each`.
    pub async fn load_index_each(
        &self,
        mut each: impl FnMut(&[index::IndexPack]),
    ) -> Result<(MasterIndex, Vec<IndexFile>)> {
        let names = self.list_docs(Kind::Index, MAX_INDEX_BYTES).await?;
        let mut index = MasterIndex::default();
        let mut files = Vec::new();
        for (name, mask) in names {
            let packs = match self.read_index_file(&name, mask).await {
                Ok(p) => p,
                Err(e) if e.is_damage() => {
                    tracing::warn!("skipping unreadable index file index/{name}: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            index.load(mask.iter(), &packs);
            each(&packs);
            files.push(IndexFile {
                name,
                replicas: mask,
                packs: packs.iter().map(|p| p.id).collect(),
            });
        }
        index.compact();
        Ok((index, files))
    }

    /// The packs index file `name` describes, read from the replicas in
    /// `mask` (the first that serves a verified copy).
    pub async fn read_index_file(
        &self,
        name: &str,
        mask: ReplicaSet,
    ) -> Result<Vec<index::IndexPack>> {
        let h = Handle::new(Kind::Index, name);
        let data = self.get_verified(&h, mask).await?;
        let plain = open_doc(&self.keyring, ObjectKind::Index, &h.to_string(), &data)?;
        index::decode(&plain).map_err(|e| Error::Corrupt(format!("{h}: {e}")))
    }

    /// Every snapshot on every replica.
    ///
    /// A snapshot file whose every copy is damaged (or vanished since the
    /// listing) is skipped with a warning: one damaged snapshot must not make
    /// the others unreachable or stop new backups (`check` reports it).
    /// Other failures (an unreachable replica) still fail the listing.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        let names: Vec<_> = self
            .list_docs(Kind::Snapshot, MAX_SNAPSHOT_BYTES)
            .await?
            .into_iter()
            .collect();
        let mut out = Vec::new();
        for (name, mask) in names.iter().cloned() {
            match self.read_snapshot(&name, mask).await {
                Ok(entry) => out.push(entry),
                Err(e) if e.is_damage() => {
                    tracing::warn!("skipping unreadable snapshot snapshots/{name}: {e}")
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|e| e.snapshot.time);
        self.observe_snapshots(&names, &out);
        Ok(out)
    }

    async fn read_snapshot(&self, name: &str, mask: ReplicaSet) -> Result<SnapshotEntry> {
        let h = Handle::new(Kind::Snapshot, name);
        let data = self.get_verified(&h, mask).await?;
        let plain = open_doc(&self.keyring, ObjectKind::Snapshot, &h.to_string(), &data)?;
        let snapshot: Snapshot =
            serde_json::from_slice(&plain).map_err(|e| Error::Corrupt(format!("{h}: {e}")))?;
        Ok(SnapshotEntry {
            id: name
                .parse()
                .map_err(|_| Error::Corrupt(format!("{h}: bad name")))?,
            snapshot,
            replicas: mask,
        })
    }

    /// Seal index files describing `packs` (64 packs per file): `(name,
    /// stored bytes)` for each.
    pub fn seal_index_files(&self, packs: &[index::IndexPack]) -> Vec<(String, Bytes)> {
        packs
            .chunks(64)
            .map(|packs| {
                let sealed = seal_doc(&self.keyring, ObjectKind::Index, &index::encode(packs));
                (Id::of_stored(&sealed).to_hex(), Bytes::from(sealed))
            })
            .collect()
    }

    /// Store a sealed document on one replica, create-only.
    pub async fn put_doc(
        &self,
        replica: &Replica,
        kind: Kind,
        name: &str,
        data: Bytes,
    ) -> Result<()> {
        let h = Handle::new(kind, name);
        match replica.backend.put(&h, data, PutMode::Create).await {
            Ok(()) => Ok(()),
            // Same name means same bytes: already there is success.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::backend(&replica.name, e)),
        }
    }
}
