//! A repository replicated on several backends: its config, keyring and the
//! operations every command shares (reading documents and blobs, loading
//! indexes and snapshots).
//!
//! Every replica holds the same repository (same id, same keyring); each has
//! its own `index/` and `snapshots/`, which may lag behind the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use cairn_backends::{Backend, ErrorKind, Handle, Kind, PutMode};
use jiff::Timestamp;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::chunker::{Chunker, ChunkerParams};
use crate::codec::{self, Codec};
use crate::crypto::ObjectKind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{self, MasterIndex};
use crate::keys::{KdfParams, KeyError, KeySlot, Keyring};
use crate::pack;
use crate::snapshot::Snapshot;
use crate::tree::Tree;

/// One backend holding a copy of the repository.
#[derive(Clone, Debug)]
pub struct Replica {
    /// How the user named it (a path, a URL without secrets, or a config name).
    pub name: String,
    pub backend: Arc<dyn Backend>,
}

/// The public repository config (`config`, plain JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    pub id: Id,
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    /// Target size of data packs in bytes.
    pub pack_size: u32,
    pub created: Timestamp,
}

/// Options of `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_size: u32,
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            compression_level: 3,
            pack_size: 16 << 20,
            kdf: KdfParams::default(),
        }
    }
}

/// A replica that could not be used, and why.
#[derive(Debug)]
pub struct Unavailable {
    pub name: String,
    pub error: Error,
    /// The replica itself, so a command can still act on it (`sync` seeds
    /// a replica that holds no repository yet).
    pub replica: Replica,
}

/// An open repository.
pub struct Repository {
    pub config: Config,
    pub keyring: Arc<Keyring>,
    pub chunker: Chunker,
    /// Replicas that answered when the repository was opened.
    pub replicas: Vec<Replica>,
    /// Replicas given but not usable (unreachable, not initialized, …).
    pub unavailable: Vec<Unavailable>,
    /// Where reads were served from (for "what came from where").
    pub reads: Arc<ReadStats>,
}

/// Counts of the objects and bytes read from each replica, and of reads
/// that had to fall back to another replica.
#[derive(Debug, Default)]
pub struct ReadStats {
    per_replica: std::sync::Mutex<Vec<(u64, u64)>>,
    fallbacks: std::sync::Mutex<Vec<String>>,
}

impl ReadStats {
    fn served(&self, replica: usize, bytes: u64) {
        let mut v = self.per_replica.lock().unwrap();
        if v.len() <= replica {
            v.resize(replica + 1, (0, 0));
        }
        v[replica].0 += 1;
        v[replica].1 += bytes;
    }

    fn fell_back(&self, what: String) {
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

/// One index file: its name, the replicas listing it and the packs it
/// describes.
#[derive(Clone, Debug)]
pub struct IndexFile {
    pub name: String,
    pub replicas: u64,
    pub packs: Vec<Id>,
}

/// A snapshot with its id and the replicas that list it.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Bit r set: replica r holds this snapshot.
    pub replicas: u64,
}

fn be(replica: &Replica) -> impl Fn(cairn_backends::BackendError) -> Error + '_ {
    move |e| Error::backend(&replica.name, e)
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
            std::io::copy(&mut std::io::Read::by_ref(&mut dec).take(1 << 31), &mut out)
                .map_err(|_| corrupt())?;
            Ok(out)
        }
    }
}

use std::io::Read as _;

impl Repository {
    /// Create the repository on every replica: the same config and key slot
    /// everywhere. Refuses if any replica already holds a repository.
    pub async fn init(
        replicas: Vec<Replica>,
        pass: &SecretString,
        opts: &InitOptions,
    ) -> Result<Repository> {
        opts.chunker
            .validate()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        if !(1..=22).contains(&opts.compression_level) && opts.compression_level != 0 {
            return Err(Error::Invalid("compression level must be 0..=22".into()));
        }
        if !(1 << 20..=1 << 30).contains(&opts.pack_size) {
            return Err(Error::Invalid("pack size must be 1 MiB..1 GiB".into()));
        }
        for r in &replicas {
            match r.backend.head(&Handle::config()).await {
                Ok(_) => return Err(Error::AlreadyInitialized(r.name.clone())),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::backend(&r.name, e)),
            }
        }
        let keyring = Keyring::generate();
        let config = Config {
            version: 1,
            id: keyring.repo_id(),
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
            created: Timestamp::now(),
        };
        let slot = KeySlot::wrap(&keyring, pass, opts.kdf)?;
        let slot_bytes = Bytes::from(serde_json::to_vec_pretty(&slot).expect("slot serializes"));
        let slot_name = Id::of_stored(&slot_bytes).to_hex();
        let config_bytes =
            Bytes::from(serde_json::to_vec_pretty(&config).expect("config serializes"));
        for r in &replicas {
            r.backend.create().await.map_err(be(r))?;
            // Key slot first: a config without a key would be a dead repository.
            r.backend
                .put(
                    &Handle::new(Kind::Key, &slot_name),
                    slot_bytes.clone(),
                    PutMode::Create,
                )
                .await
                .map_err(be(r))?;
            r.backend
                .put(&Handle::config(), config_bytes.clone(), PutMode::Create)
                .await
                .map_err(be(r))?;
        }
        let chunker = Chunker::new(config.chunker, &keyring.chunker_key)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Repository {
            config,
            keyring: Arc::new(keyring),
            chunker,
            replicas,
            unavailable: Vec::new(),
            reads: Arc::default(),
        })
    }

    /// Open the repository held by `replicas`. Replicas that cannot be read
    /// are set aside in `unavailable`; it is an error only if none can.
    pub async fn open(replicas: Vec<Replica>, pass: &SecretString) -> Result<Repository> {
        let configs = futures::future::join_all(replicas.iter().map(|r| async move {
            let data = r.backend.get(&Handle::config(), None).await;
            (r, data)
        }))
        .await;
        let mut ok: Vec<(Replica, Config)> = Vec::new();
        let mut unavailable = Vec::new();
        for (r, data) in configs {
            match data {
                Ok(d) => match serde_json::from_slice::<Config>(&d) {
                    Ok(c) if c.version == 1 => ok.push((r.clone(), c)),
                    Ok(c) => unavailable.push(Unavailable {
                        replica: r.clone(),
                        name: r.name.clone(),
                        error: Error::Invalid(format!(
                            "{}: unsupported repository version {}",
                            r.name, c.version
                        )),
                    }),
                    Err(e) => unavailable.push(Unavailable {
                        replica: r.clone(),
                        name: r.name.clone(),
                        error: Error::Corrupt(format!("{}: config is malformed: {e}", r.name)),
                    }),
                },
                Err(e) if e.kind() == ErrorKind::NotFound => unavailable.push(Unavailable {
                    replica: r.clone(),
                    name: r.name.clone(),
                    error: Error::not_a_repository(&r.name, &e),
                }),
                Err(e) => unavailable.push(Unavailable {
                    replica: r.clone(),
                    name: r.name.clone(),
                    error: Error::backend(&r.name, e),
                }),
            }
        }
        let Some((_, config)) = ok.first().cloned() else {
            let mut errs = unavailable.into_iter();
            return Err(match (errs.next(), errs.len()) {
                (Some(u), 0) => u.error,
                (Some(u), _) => Error::AllReplicasFailed(format!(
                    "{}{}",
                    u.error,
                    errs.map(|u| format!("; {}", u.error)).collect::<String>()
                )),
                (None, _) => Error::Invalid("no repository given".into()),
            });
        };
        ok.retain(|(r, c)| {
            if c.id != config.id {
                unavailable.push(Unavailable {
                    replica: r.clone(),
                    name: r.name.clone(),
                    error: Error::Invalid(format!(
                        "{} holds another repository ({}, expected {})",
                        r.name,
                        c.id.short(),
                        config.id.short()
                    )),
                });
                false
            } else {
                true
            }
        });
        let keyring = Self::open_keyring(&ok, &config, pass).await?;
        let chunker = Chunker::new(config.chunker, &keyring.chunker_key)
            .map_err(|e| Error::Corrupt(format!("config: {e}")))?;
        Ok(Repository {
            config,
            keyring: Arc::new(keyring),
            chunker,
            replicas: ok.into_iter().map(|(r, _)| r).collect(),
            unavailable,
            reads: Arc::default(),
        })
    }

    async fn open_keyring(
        replicas: &[(Replica, Config)],
        config: &Config,
        pass: &SecretString,
    ) -> Result<Keyring> {
        let mut last_err = None;
        for (r, _) in replicas {
            let slots = match r.backend.list(Kind::Key).await {
                Ok(s) => s,
                Err(e) => {
                    last_err = Some(Error::backend(&r.name, e));
                    continue;
                }
            };
            let mut wrong = false;
            for meta in slots {
                let data = match r.backend.get(&meta.handle, None).await {
                    Ok(d) => d,
                    Err(e) => {
                        last_err = Some(Error::backend(&r.name, e));
                        continue;
                    }
                };
                let slot: KeySlot = match serde_json::from_slice(&data) {
                    Ok(s) => s,
                    Err(e) => {
                        last_err =
                            Some(Error::Corrupt(format!("{}: {}: {e}", r.name, meta.handle)));
                        continue;
                    }
                };
                let pass = pass.clone();
                let id = config.id;
                let res = tokio::task::spawn_blocking(move || slot.unwrap_keyring(&pass, &id))
                    .await
                    .expect("key derivation does not panic");
                match res {
                    Ok(k) => return Ok(k),
                    Err(KeyError::WrongPassphrase) => wrong = true,
                    Err(e) => last_err = Some(e.into()),
                }
            }
            if wrong {
                return Err(KeyError::WrongPassphrase.into());
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Corrupt("the repository has no key slots".into())))
    }

    /// Mask with one bit per replica.
    pub fn all_mask(&self) -> u64 {
        if self.replicas.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << self.replicas.len()) - 1
        }
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
        let mut names: BTreeMap<String, u64> = BTreeMap::new();
        for (i, r) in self.replicas.iter().enumerate() {
            for m in r.backend.list(Kind::Index).await.map_err(be(r))? {
                *names.entry(m.handle.name).or_default() |= 1 << i;
            }
        }
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
            for i in 0..self.replicas.len() {
                if mask & (1 << i) != 0 {
                    index.add(i, &packs);
                }
            }
            files.push(IndexFile {
                name,
                replicas: mask,
                packs: packs.iter().map(|p| p.id).collect(),
            });
        }
        Ok((index, files))
    }

    async fn read_index_file(&self, name: &str, mask: u64) -> Result<Vec<index::IndexPack>> {
        let h = Handle::new(Kind::Index, name);
        let data = self.get_verified(&h, mask).await?;
        let plain = open_doc(&self.keyring, ObjectKind::Index, &h.to_string(), &data)?;
        index::decode(&plain).map_err(|e| Error::Corrupt(format!("{h}: {e}")))
    }

    /// Fetch a content-addressed object (pack, index, snapshot) from the
    /// first replica in `mask` whose copy hashes to its name.
    pub async fn get_verified(&self, h: &Handle, mask: u64) -> Result<Bytes> {
        let mut last = None;
        for (i, r) in self.replicas.iter().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            match r.backend.get(h, None).await {
                Ok(d) if Id::of_stored(&d).to_hex() == h.name => {
                    self.served(i, d.len() as u64, h, last.as_ref());
                    return Ok(d);
                }
                Ok(_) => {
                    last = Some(Error::Corrupt(format!(
                        "{}: {h}: content does not match its name (damaged)",
                        r.name
                    )))
                }
                Err(e) => last = Some(Error::backend(&r.name, e)),
            }
            tracing::debug!("{}", last.as_ref().unwrap());
        }
        Err(last.unwrap_or_else(|| Error::NotFound(format!("{h}: on no replica"))))
    }

    /// Every snapshot on every replica.
    ///
    /// A snapshot file whose every copy is damaged (or vanished since the
    /// listing) is skipped with a warning: one damaged snapshot must not make
    /// the others unreachable or stop new backups (`check` reports it).
    /// Other failures (an unreachable replica) still fail the listing.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        let mut names: BTreeMap<String, u64> = BTreeMap::new();
        for (i, r) in self.replicas.iter().enumerate() {
            for m in r.backend.list(Kind::Snapshot).await.map_err(be(r))? {
                *names.entry(m.handle.name).or_default() |= 1 << i;
            }
        }
        let mut out = Vec::new();
        for (name, mask) in names {
            match self.read_snapshot(&name, mask).await {
                Ok(entry) => out.push(entry),
                Err(e) if e.is_damage() => {
                    tracing::warn!("skipping unreadable snapshot snapshots/{name}: {e}")
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|e| e.snapshot.time);
        Ok(out)
    }

    async fn read_snapshot(&self, name: &str, mask: u64) -> Result<SnapshotEntry> {
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

    /// Resolve `latest`, a full id or a unique prefix.
    pub fn find_snapshot<'a>(snaps: &'a [SnapshotEntry], spec: &str) -> Result<&'a SnapshotEntry> {
        if spec == "latest" {
            return snaps
                .last()
                .ok_or_else(|| Error::NotFound("the repository has no snapshots".into()));
        }
        let matches: Vec<_> = snaps
            .iter()
            .filter(|s| s.id.to_hex().starts_with(&spec.to_ascii_lowercase()))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::NotFound(format!("no snapshot matches {spec:?}"))),
            _ => Err(Error::Invalid(format!(
                "{spec:?} matches several snapshots"
            ))),
        }
    }

    /// Read, authenticate, decompress and verify one blob. Tries every
    /// replica that holds its pack, so one damaged copy is not fatal.
    pub async fn read_blob(&self, index: &MasterIndex, id: &Id) -> Result<Vec<u8>> {
        let (pack, loc) = index
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("blob {} is in no index", id.short())))?;
        let h = Handle::new(Kind::Pack, pack.id.to_hex());
        let range = loc.offset as u64..loc.offset as u64 + loc.stored_len as u64;
        let mut last = None;
        for (i, r) in self.replicas.iter().enumerate() {
            if pack.replicas & (1 << i) == 0 {
                continue;
            }
            let res = match r.backend.get(&h, Some(range.clone())).await {
                Ok(d) => self.decode_blob(&h, pack, loc, id, d.to_vec()),
                Err(e) => Err(Error::backend(&r.name, e)),
            };
            match res {
                Ok(v) => {
                    self.served(i, loc.stored_len as u64, &h, last.as_ref());
                    return Ok(v);
                }
                Err(e) => {
                    let e = match e {
                        Error::Backend { .. } => e,
                        other => Error::Corrupt(format!("{}: {other}", r.name)),
                    };
                    tracing::debug!("{e}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::NotFound(format!("{h}: on no replica"))))
    }

    /// Decode a blob's stored bytes (pure; used by restore and check).
    pub fn decode_blob(
        &self,
        h: &Handle,
        pack: &index::PackInfo,
        loc: &index::BlobLoc,
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
        let data = codec::decompress(loc.codec, plain, loc.raw_len as usize)
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

/// A lock object written at the start of a command (see docs/format.md).
#[derive(Debug, Serialize, Deserialize)]
pub struct LockInfo {
    pub purpose: String,
    pub host: String,
    pub pid: u32,
    pub time: Timestamp,
    pub exclusive: bool,
}

impl Repository {
    /// Write a shared lock object on every replica. Locks are advisory: they
    /// let a later exclusive command (prune) see that a backup is running.
    /// A replica that refuses the lock is left to fail on its first write.
    pub async fn lock(&self, purpose: &str) -> Vec<(usize, Handle)> {
        let info = LockInfo {
            purpose: purpose.to_string(),
            host: crate::sys::hostname(),
            pid: std::process::id(),
            time: Timestamp::now(),
            exclusive: false,
        };
        let sealed = Bytes::from(self.keyring.seal(
            ObjectKind::Lock,
            &serde_json::to_vec(&info).expect("lock serializes"),
        ));
        let h = Handle::new(Kind::Lock, Id::of_stored(&sealed).to_hex());
        let mut out = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            match r.backend.put(&h, sealed.clone(), PutMode::Create).await {
                Ok(()) => out.push((i, h.clone())),
                Err(e) => tracing::warn!("{}: cannot write lock: {e}", r.name),
            }
        }
        out
    }

    /// Remove the locks written by [`Repository::lock`].
    pub async fn unlock(&self, locks: Vec<(usize, Handle)>) {
        for (i, h) in locks {
            if let Err(e) = self.replicas[i].backend.delete(&h).await {
                tracing::warn!("{}: cannot remove lock {h}: {e}", self.replicas[i].name);
            }
        }
    }
}

impl Repository {
    /// Count a read served by replica `i`; `failed` is the error of an
    /// earlier replica that could not serve it.
    fn served(&self, i: usize, bytes: u64, h: &Handle, failed: Option<&Error>) {
        self.reads.served(i, bytes);
        if let Some(e) = failed {
            self.reads.fell_back(format!(
                "{h}: taken from {} ({})",
                self.replicas[i].name,
                crate::error::chain(e)
            ));
        }
    }

    /// A view of this repository restricted to replica `i`.
    pub fn single(&self, i: usize) -> Repository {
        Repository {
            config: self.config.clone(),
            keyring: self.keyring.clone(),
            chunker: self.chunker.clone(),
            replicas: vec![self.replicas[i].clone()],
            unavailable: Vec::new(),
            reads: Arc::default(),
        }
    }
}

impl Repository {
    /// Read `range` of a pack from the first replica that holds it and
    /// returns exactly that many bytes (blobs are authenticated by the caller).
    pub async fn read_range(
        &self,
        pack: &index::PackInfo,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes> {
        let h = Handle::new(Kind::Pack, pack.id.to_hex());
        let want = range.end - range.start;
        let mut last = None;
        for (i, r) in self.replicas.iter().enumerate() {
            if pack.replicas & (1 << i) == 0 {
                continue;
            }
            match r.backend.get(&h, Some(range.clone())).await {
                Ok(d) if d.len() as u64 == want => {
                    self.served(i, want, &h, last.as_ref());
                    return Ok(d);
                }
                Ok(d) => {
                    last = Some(Error::Corrupt(format!(
                        "{}: {h}: short read ({} of {want} bytes)",
                        r.name,
                        d.len()
                    )))
                }
                Err(e) => last = Some(Error::backend(&r.name, e)),
            }
        }
        Err(last.unwrap_or_else(|| Error::NotFound(format!("{h}: on no replica"))))
    }
}
