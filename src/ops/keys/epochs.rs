//! Data-key epochs: which objects each epoch encrypts on each replica
//! (`key status`), a new epoch (`key rotate`), and retiring an old one
//! (`key retire`) once nothing of it is left anywhere.

use std::collections::BTreeMap;

use cairn_backends::Kind;
use serde::Serialize;

use super::{audited_report, base, next_generation};
use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::keys::Keyring;
use crate::repo::{LockMode, Repository};

/// Objects of one data-key epoch on one replica.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct EpochObjects {
    pub epoch: u32,
    pub packs: u64,
    pub index_files: u64,
    pub snapshots: u64,
    /// Prune's marks (`markers/`).
    #[serde(default)]
    pub other: u64,
    /// Stored bytes of all of them.
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplicaEpochs {
    pub replica: String,
    /// By epoch, ascending.
    pub epochs: Vec<EpochObjects>,
    /// Objects whose header could not be read (damaged, or vanished).
    pub unreadable: u64,
    /// Why the replica could not be surveyed.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KeyStatus {
    /// The newest keyring generation.
    pub generation: u64,
    pub current_epoch: u32,
    /// The epochs the keyring holds, ascending.
    pub epochs: Vec<u32>,
    pub replicas: Vec<ReplicaEpochs>,
}

/// Per replica, how many objects (and bytes) each data-key epoch
/// encrypts. A pack's epoch comes from the index; index files, snapshots
/// and packs no index describes are asked for their 42-byte header.
pub async fn key_status(repo: &Repository) -> Result<KeyStatus> {
    use crate::format::crypto::{Header, HEADER_LEN};
    let index = repo.load_index().await?;
    let mut replicas = Vec::new();
    for r in repo.replicas() {
        let mut by: BTreeMap<u32, EpochObjects> = BTreeMap::new();
        let mut unreadable = 0;
        let mut error = None;
        for kind in [Kind::Pack, Kind::Index, Kind::Snapshot, Kind::Marker] {
            let metas = match r.backend.list(kind).await {
                Ok(m) => m,
                Err(e) => {
                    error = Some(crate::error::chain(&Error::backend(&r.name, e)));
                    break;
                }
            };
            for m in metas {
                let known = (kind == Kind::Pack)
                    .then(|| m.handle.name.parse::<Id>().ok())
                    .flatten()
                    .and_then(|id| index.pack(&id))
                    .map(|p| p.header.epoch);
                let epoch = match known {
                    Some(e) => e,
                    None => match r.backend.get(&m.handle, Some(0..HEADER_LEN as u64)).await {
                        Ok(h) => match Header::decode(&h) {
                            Ok(h) => h.epoch,
                            Err(_) => {
                                unreadable += 1;
                                continue;
                            }
                        },
                        Err(_) => {
                            unreadable += 1;
                            continue;
                        }
                    },
                };
                let e = by.entry(epoch).or_insert(EpochObjects {
                    epoch,
                    ..Default::default()
                });
                match kind {
                    Kind::Pack => e.packs += 1,
                    Kind::Index => e.index_files += 1,
                    Kind::Snapshot => e.snapshots += 1,
                    _ => e.other += 1,
                }
                e.bytes += m.size;
            }
        }
        replicas.push(ReplicaEpochs {
            replica: r.name.clone(),
            epochs: by.into_values().collect(),
            unreadable,
            error,
        });
    }
    let (keyring, generation, _) = repo.newest_keyring().await?;
    Ok(KeyStatus {
        generation,
        current_epoch: keyring.current_epoch,
        epochs: keyring.epochs.iter().map(|e| e.id).collect(),
        replicas,
    })
}

/// What `key rotate` did.
#[derive(Clone, Debug, Serialize)]
pub struct RotateReport {
    /// The new current epoch, and the one it replaced.
    pub epoch: u32,
    pub previous_epoch: u32,
    /// The keyring generation that made it current.
    pub generation: u64,
    /// The replicas that hold the new generation.
    pub replicas: Vec<String>,
    /// Replicas given but not reached: they get the new generation at the
    /// next key command or `sync` that reaches them.
    pub unavailable: Vec<String>,
}

impl RotateReport {
    /// Done everywhere, or done but not on the replicas that could not be
    /// reached (exit 4: they catch up at the next key command or sync).
    pub fn outcome(&self) -> crate::ops::Outcome {
        if self.unavailable.is_empty() {
            crate::ops::Outcome::Ok
        } else {
            crate::ops::Outcome::Partial {
                replicas: self.unavailable.clone(),
            }
        }
    }
}

/// A new data-key epoch, made current on every replica. Objects of older
/// epochs stay readable; `key reencrypt` rewrites them. Returns the report
/// and the new keyring (generation), for the caller to adopt.
pub async fn rotate(repo: &Repository) -> Result<(RotateReport, Keyring, u64)> {
    let res = repo
        .with_lock(LockMode::Shared, "key rotate", async || {
            let (ring, g, recipients) = base(repo).await?;
            let next = ring.with_new_epoch();
            let g = next_generation(repo, &next, g, &recipients).await?;
            let report = RotateReport {
                epoch: next.current_epoch,
                previous_epoch: ring.current_epoch,
                generation: g,
                replicas: repo.replicas().iter().map(|r| r.name.clone()).collect(),
                unavailable: repo.unavailable().iter().map(|u| u.name.clone()).collect(),
            };
            Ok((report, next, g))
        })
        .await;
    let what = |r: &(RotateReport, Keyring, u64)| {
        format!(
            "epoch {} (was {}), generation {}",
            r.0.epoch, r.0.previous_epoch, r.0.generation
        )
    };
    audited_report(repo, "key rotate", res, what).await
}

/// What `key retire` did.
#[derive(Clone, Debug, Serialize)]
pub struct RetireReport {
    pub epoch: u32,
    /// The generation without the epoch's key.
    pub generation: u64,
    /// Older generations deleted from every replica.
    pub generations_deleted: u64,
}

/// Retire `epoch`: refused while any replica holds an object of it, or
/// cannot be reached. Then a generation without its key is written and
/// every older generation deleted, so no keyring stored anywhere holds the
/// key, and a saved copy of an old `keys/` opens nothing.
pub async fn retire(repo: &Repository, epoch: u32) -> Result<RetireReport> {
    let res = repo
        .with_lock(LockMode::Shared, "key retire", async || {
            if !repo.unavailable().is_empty() {
                let names: Vec<&str> = repo.unavailable().iter().map(|u| u.name.as_str()).collect();
                return Err(Error::Invalid(format!(
                    "epoch {epoch} cannot be retired while replicas cannot be reached: {} \
                     (every replica must be checked, and lose its old keyring generations)",
                    names.join(", ")
                )));
            }
            let (ring, g, recipients) = base(repo).await?;
            if ring.epoch_key(epoch).is_none() {
                return Err(Error::NotFound(format!(
                    "epoch {epoch} is not in the keyring (epochs: {}); retired already?",
                    ring.epochs
                        .iter()
                        .map(|e| e.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if epoch == ring.current_epoch {
                return Err(Error::Invalid(format!(
                    "epoch {epoch} is the current one; rotate first (`cairn key rotate --reencrypt`)"
                )));
            }
            let status = key_status(repo).await?;
            let mut left = Vec::new();
            for r in &status.replicas {
                if let Some(e) = &r.error {
                    left.push(format!("{}: not surveyed ({e})", r.replica));
                }
                if r.unreadable > 0 {
                    left.push(format!(
                        "{}: {} objects whose epoch cannot be read",
                        r.replica, r.unreadable
                    ));
                }
                if let Some(o) = r.epochs.iter().find(|o| o.epoch == epoch) {
                    left.push(format!(
                        "{}: {} packs, {} index files, {} snapshots{} ({} bytes)",
                        r.replica,
                        o.packs,
                        o.index_files,
                        o.snapshots,
                        if o.other > 0 {
                            format!(", {} other", o.other)
                        } else {
                            String::new()
                        },
                        o.bytes
                    ));
                }
            }
            if !left.is_empty() {
                return Err(Error::Invalid(format!(
                    "epoch {epoch} still encrypts objects (run `cairn key reencrypt` first): {}",
                    left.join("; ")
                )));
            }
            // A generation without the key; writing it deletes every
            // older generation (each holds the key) on every replica.
            let next = ring.without_epoch(epoch);
            let gen = crate::format::keyring::Generation::seal(&next, g + 1, &recipients);
            let deleted = repo.put_generation(&gen).await?;
            let g = g + 1;
            Ok(RetireReport {
                epoch,
                generation: g,
                generations_deleted: deleted,
            })
        })
        .await;
    audited_report(repo, "key retire", res, |r| {
        format!(
            "epoch {}; generation {}; {} older generations deleted",
            r.epoch, r.generation, r.generations_deleted
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use cairn_backends::{Handle, PutMode};

    use super::*;
    use crate::test_support::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_counts_objects_by_epoch_on_each_replica() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let repo = init(memory_replicas(2)).await;
        backup_dir(&repo, &src).await;
        let st = key_status(&repo).await.unwrap();
        assert_eq!(st.current_epoch, 1);
        assert_eq!(st.epochs, vec![1]);
        for (i, r) in st.replicas.iter().enumerate() {
            assert_eq!(r.epochs.len(), 1, "{r:?}");
            let e = &r.epochs[0];
            let b = &repo.replica(i).backend;
            assert_eq!(e.packs as usize, b.list(Kind::Pack).await.unwrap().len());
            assert_eq!(
                e.index_files as usize,
                b.list(Kind::Index).await.unwrap().len()
            );
            assert_eq!(e.snapshots, 1);
            assert_eq!(r.unreadable, 0);
        }
        // A stray pack no index describes is read for its header; junk
        // is counted as unreadable.
        let b = &repo.replica(0).backend;
        b.put(
            &Handle::new(Kind::Pack, "ab".repeat(32)),
            Bytes::from_static(b"not a cairn object at all, just junk bytes here"),
            PutMode::Create,
        )
        .await
        .unwrap();
        let st = key_status(&repo).await.unwrap();
        assert_eq!(st.replicas[0].unreadable, 1);
    }
}
