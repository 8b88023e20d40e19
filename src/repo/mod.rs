//! A repository open on several replicas: everything the operations share.
//!
//! Every replica holds the same repository (same id, same keyring); each has
//! its own `index/` and `snapshots/`, which may lag behind the others.
//!
//! - [`open`]: `init` and `open` across replicas;
//! - [`keyring`]: key slots and keyring generations across replicas;
//! - [`fetch`]: verified reads with fallback from one replica to the next;
//! - [`docs`]: index files and snapshots — listing, reading, writing;
//! - [`lock`]: shared and exclusive repository locks;
//! - [`walk`]: the memoising tree walker;
//! - [`survey`]: what each replica lists and what each snapshot needs;
//! - [`master_index`]: every replica's index files merged, with a
//!   [`ReplicaSet`] per pack;
//! - [`rollback`]: this host's record of each replica's snapshots, to
//!   notice one rolled back.

pub mod docs;
pub mod fetch;
pub mod keyring;
pub mod lock;
pub mod master_index;
pub mod open;
mod replica_set;
pub mod rollback;
pub mod survey;
pub mod tree_cache;
pub mod walk;

use std::sync::Arc;

use cairn_backends::{Backend, Handle};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::chunker::Chunker;
use crate::format::config::Config;
use crate::format::keys::Keyring;
use crate::format::snapshot::SAFETY_TAG;

pub use docs::{open_doc, seal_doc, IndexFile, SnapshotEntry};
pub use fetch::{FetchFailure, ReadStats};
pub use keyring::{key_slots, OpenedSlot};
pub use lock::{LockGuard, LockMode, LockOptions};
pub use master_index::{BlobLoc, MasterIndex, PackInfo};
pub use open::{InitOptions, OpenOptions};
pub use replica_set::ReplicaSet;
pub use walk::{TreeWalker, Visit, Visitor};

/// One backend holding a copy of the repository.
#[derive(Clone, Debug)]
pub struct Replica {
    /// How the user named it (a path, a URL without secrets, or a config name).
    pub name: String,
    pub backend: Arc<dyn Backend>,
}

impl Replica {
    /// Read `h`, at most `max` bytes: one byte more is asked for, so an
    /// object that grew past what its listing said (or was planted) is
    /// refused without being downloaded whole.
    pub async fn get_at_most(&self, h: &Handle, max: u64) -> Result<bytes::Bytes> {
        let data = self
            .backend
            .get(h, Some(0..max + 1))
            .await
            .map_err(|e| Error::backend(&self.name, e))?;
        if data.len() as u64 > max {
            return Err(Error::Corrupt(format!(
                "{}: {h} is over its {max}-byte limit; not read",
                self.name
            )));
        }
        Ok(data)
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
    config: Config,
    keyring: Arc<Keyring>,
    chunker: Chunker,
    /// Replicas that answered when the repository was opened.
    replicas: Vec<Replica>,
    /// Replicas given but not usable (unreachable, not initialized, …).
    unavailable: Vec<Unavailable>,
    /// Where reads were served from (for "what came from where").
    reads: Arc<ReadStats>,
    lock_options: LockOptions,
    /// Cancelled on SIGINT/SIGTERM: operations stop at the next safe point.
    cancel: CancellationToken,
    /// This host's record of the repository (none: keep none).
    record: Option<Arc<rollback::Tracker>>,
    /// The key slot that opened the keyring.
    slot: Option<Arc<keyring::OpenedSlot>>,
    /// The keyring generation `keyring` came from.
    generation: u64,
    /// The replica reads ask first (`restore --from`), before local ones.
    preferred: Option<usize>,
}

fn be(replica: &Replica) -> impl Fn(cairn_backends::BackendError) -> Error + '_ {
    move |e| Error::backend(&replica.name, e)
}

impl Repository {
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The keyring, for work handed to other threads.
    pub fn shared_keyring(&self) -> Arc<Keyring> {
        self.keyring.clone()
    }

    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    /// The replicas that answered when the repository was opened; a
    /// replica's position in this list is its place in every [`ReplicaSet`].
    pub fn replicas(&self) -> &[Replica] {
        &self.replicas
    }

    pub fn replica(&self, i: usize) -> &Replica {
        &self.replicas[i]
    }

    /// Every replica of [`Repository::replicas`].
    pub fn all(&self) -> ReplicaSet {
        ReplicaSet::all(self.replicas.len())
    }

    /// Replicas given but not usable (unreachable, not initialized, …).
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// Where reads were served from.
    pub fn reads(&self) -> &ReadStats {
        &self.reads
    }

    pub fn lock_options(&self) -> &LockOptions {
        &self.lock_options
    }

    pub fn set_lock_options(&mut self, opts: LockOptions) {
        self.lock_options = opts;
    }

    /// The token that, once cancelled, asks operations to stop at their
    /// next safe point and report what they did.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn set_cancel_token(&mut self, token: CancellationToken) {
        self.cancel = token;
    }

    /// [`Error::Interrupted`] once cancelled.
    pub fn check_cancelled(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

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

    /// Delete an object from replica `i`; already gone is fine.
    pub async fn delete_from(&self, i: usize, h: &Handle) -> Result<()> {
        let r = &self.replicas[i];
        match r.backend.delete(h).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == cairn_backends::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::backend(&r.name, e)),
        }
    }

    /// Delete an object from every replica; already gone is fine.
    pub async fn delete_everywhere(&self, h: &Handle) -> Result<()> {
        for i in 0..self.replicas.len() {
            self.delete_from(i, h).await?;
        }
        Ok(())
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
            lock_options: self.lock_options.clone(),
            cancel: self.cancel.clone(),
            record: self.record.clone(),
            slot: self.slot.clone(),
            generation: self.generation,
            preferred: None,
        }
    }

    /// Make reads ask replica `i` first (the user chose it, e.g. `restore
    /// --from`); otherwise local replicas are asked first.
    pub fn set_preferred(&mut self, i: usize) {
        self.preferred = (i < self.replicas.len()).then_some(i);
    }

    /// The key slot (its name in `keys/`) that opened the keyring; none
    /// for a repository just created.
    pub fn opened_slot(&self) -> Option<&str> {
        self.slot.as_ref().map(|s| s.id.as_str())
    }

    /// This host's record of the repository, when one is kept.
    pub fn record(&self) -> Option<&Arc<rollback::Tracker>> {
        self.record.as_ref()
    }

    /// Replicas whose snapshot listing went backwards, found so far.
    pub fn rollbacks(&self) -> Vec<rollback::Rollback> {
        self.record.as_ref().map(|r| r.found()).unwrap_or_default()
    }

    /// Note snapshots forgotten by this host, so that their absence is not
    /// taken for a rollback. Every operation that deletes snapshots calls it.
    pub fn record_forgotten(&self, ids: &[crate::format::id::Id]) {
        if let Some(r) = &self.record {
            r.record_forgotten(ids);
        }
    }

    /// Compare what each replica lists in `snapshots/` (`names`, with the
    /// replicas listing each) with this host's record.
    fn observe_snapshots(&self, names: &[(String, ReplicaSet)], entries: &[SnapshotEntry]) {
        let Some(record) = &self.record else { return };
        let times: std::collections::HashMap<String, jiff::Timestamp> = entries
            .iter()
            .map(|e| (e.id.to_hex(), e.snapshot.time))
            .collect();
        for (i, r) in self.replicas.iter().enumerate() {
            let listing: rollback::Listing = names
                .iter()
                .filter(|(_, mask)| mask.contains(i))
                .map(|(n, _)| (n.clone(), times.get(n).copied()))
                .collect();
            record.observe(&r.name, &listing);
        }
    }

    /// Resolve `latest`, a full id or a unique prefix. `latest` is the
    /// newest snapshot that is not a safety snapshot of `restore
    /// --in-place` (tag [`SAFETY_TAG`]): otherwise the next `restore latest
    /// --in-place` would put back what the last one replaced. A safety
    /// snapshot is named by its id.
    pub fn find_snapshot<'a>(snaps: &'a [SnapshotEntry], spec: &str) -> Result<&'a SnapshotEntry> {
        if spec == "latest" {
            let newest = snaps.iter().rev().find(|s| !s.is_safety_snapshot());
            return newest.ok_or_else(|| {
                Error::NotFound(if snaps.is_empty() {
                    "the repository has no snapshots".into()
                } else {
                    format!(
                        "the repository has only `{SAFETY_TAG}` safety snapshots, which `latest` \
                         never means: name one by its id (`cairn snapshots --tag {SAFETY_TAG}`)"
                    )
                })
            });
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
}
