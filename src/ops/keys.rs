//! Key slots across replicas: list them, add one (a passphrase or a
//! generated key file), remove one, change the passphrase of the slot in
//! use. Every change goes to every replica, a new slot before an old one
//! is removed, so an interruption never leaves a replica without a slot
//! that opens it.
//!
//! Each slot wraps the whole keyring (docs/format.md), so removing a slot
//! stops its passphrase from opening the repository *as stored now*; a
//! saved copy of the removed slot still opens it until key rotation with
//! re-encryption exists (docs/security.md, "Key management").

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_backends::{ErrorKind, Handle, Kind, PutMode};
use jiff::Timestamp;
use secrecy::SecretString;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::keys::{KdfParams, KeySlot};
use crate::repo::{key_slots, LockMode, ReplicaSet, Repository};

/// One key slot as `key list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SlotInfo {
    pub id: String,
    pub label: Option<String>,
    /// How the slot's secret is used: `passphrase` (Argon2id) or `command`
    /// (a 32-byte key printed by a key-management command).
    pub kind: String,
    pub created: Timestamp,
    pub host: String,
    pub username: String,
    pub memory_kib: u32,
    pub iterations: u32,
    /// The slot that opened the repository in this process.
    pub in_use: bool,
    /// The replicas holding it (every replica, unless one lags).
    pub replicas: Vec<String>,
}

/// Every slot on every replica, oldest first.
pub async fn list_keys(repo: &Repository) -> Result<Vec<SlotInfo>> {
    let mut by_id: BTreeMap<String, (KeySlot, ReplicaSet)> = BTreeMap::new();
    for (i, r) in repo.replicas().iter().enumerate() {
        for (name, slot) in key_slots(r).await? {
            by_id
                .entry(name)
                .or_insert((slot, ReplicaSet::EMPTY))
                .1
                .insert(i);
        }
    }
    let mut out: Vec<SlotInfo> = by_id
        .into_iter()
        .map(|(id, (slot, on))| SlotInfo {
            in_use: repo.opened_slot() == Some(id.as_str()),
            id,
            label: slot.label,
            kind: if slot.kdf == crate::format::keys::KDF_COMMAND_KEY {
                "command".into()
            } else {
                "passphrase".into()
            },
            created: slot.created,
            host: slot.host,
            username: slot.username,
            memory_kib: slot.params.memory_kib,
            iterations: slot.params.iterations,
            replicas: on.iter().map(|i| repo.replica(i).name.clone()).collect(),
        })
        .collect();
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Add a slot opened by `pass`, on every replica; returns its id.
pub async fn add_key(
    repo: &Repository,
    pass: &SecretString,
    params: KdfParams,
    label: Option<String>,
) -> Result<String> {
    let what = format!("label {}", label.as_deref().unwrap_or("-"));
    let res = add_slot(repo, pass, params, label).await;
    audited(repo, "key add", &what, res).await
}

/// Add a slot opened by the 32-byte key `key` (64 hex digits, as a
/// key-management command prints it), on every replica.
pub async fn add_command_key(
    repo: &Repository,
    key: &SecretString,
    label: Option<String>,
) -> Result<String> {
    let what = format!("key command; label {}", label.as_deref().unwrap_or("-"));
    let res = async {
        let slot = KeySlot::wrap_command_key(repo.keyring(), key)?;
        store_slot(repo, slot, label).await
    }
    .await;
    audited(repo, "key add", &what, res).await
}

async fn add_slot(
    repo: &Repository,
    pass: &SecretString,
    params: KdfParams,
    label: Option<String>,
) -> Result<String> {
    let slot = KeySlot::wrap(repo.keyring(), pass, params)?;
    store_slot(repo, slot, label).await
}

async fn store_slot(repo: &Repository, mut slot: KeySlot, label: Option<String>) -> Result<String> {
    slot.label = label;
    let data = Bytes::from(serde_json::to_vec_pretty(&slot).expect("slot serializes"));
    let name = Id::of_stored(&data).to_hex();
    repo.with_lock(LockMode::Shared, "key add", async || {
        let h = Handle::new(Kind::Key, &name);
        for r in repo.replicas() {
            match r.backend.put(&h, data.clone(), PutMode::Create).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::backend(&r.name, e)),
            }
        }
        Ok(())
    })
    .await?;
    Ok(name)
}

/// Remove the slot `spec` (an id or a unique prefix) from every replica.
/// The last slot is never removed, nor the one in use unless `force`.
pub async fn remove_key(repo: &Repository, spec: &str, force: bool) -> Result<String> {
    let res = remove_slot(repo, spec, force).await;
    audited(repo, "key remove", &format!("spec {spec:?}"), res).await
}

/// Record `operation` in the audit trail with its outcome, and return
/// `res` (with the slot id in the entry's detail when it succeeded).
async fn audited(
    repo: &Repository,
    operation: &str,
    what: &str,
    res: Result<String>,
) -> Result<String> {
    let (outcome, detail) = match &res {
        Ok(id) => ("ok".to_string(), format!("slot {id}; {what}")),
        Err(e) => (
            format!("failed: {}", crate::error::chain(e)),
            what.to_string(),
        ),
    };
    if let Err(e) = crate::ops::audit::record(repo, operation, &detail, &outcome).await {
        // The operation's own result matters more; a trail that could not
        // be written shows as a gap at the next `key audit`.
        tracing::warn!("{operation}: could not write the audit entry: {e}");
    }
    res
}

async fn remove_slot(repo: &Repository, spec: &str, force: bool) -> Result<String> {
    let slots = list_keys(repo).await?;
    let spec = spec.to_ascii_lowercase();
    let found: Vec<&SlotInfo> = slots.iter().filter(|s| s.id.starts_with(&spec)).collect();
    let slot = match found.as_slice() {
        [one] => *one,
        [] => return Err(Error::NotFound(format!("no key slot matches {spec:?}"))),
        _ => {
            return Err(Error::Invalid(format!(
                "{spec:?} matches several key slots; give more of the id"
            )))
        }
    };
    if slots.len() == 1 {
        return Err(Error::Invalid(format!(
            "key slot {} is the last one: removing it would lock everyone out \
             (add another first with `cairn key add`)",
            short(&slot.id)
        )));
    }
    if slot.in_use && !force {
        return Err(Error::Invalid(format!(
            "key slot {} is the one in use; open with another slot, or use --force",
            short(&slot.id)
        )));
    }
    repo.with_lock(LockMode::Shared, "key remove", async || {
        let h = Handle::new(Kind::Key, &slot.id);
        for r in repo.replicas() {
            match r.backend.delete(&h).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::backend(&r.name, e)),
            }
        }
        Ok(())
    })
    .await?;
    Ok(slot.id.clone())
}

/// A new passphrase for the slot in use: a new slot (with `params`, the
/// current defaults) is written everywhere, then the old one removed.
/// Returns `(new id, old id)`.
pub async fn change_passphrase(
    repo: &Repository,
    pass: &SecretString,
    params: KdfParams,
) -> Result<(String, String)> {
    let old = repo
        .opened_slot()
        .ok_or_else(|| Error::Invalid("no key slot opened this repository".into()))?
        .to_string();
    let label = list_keys(repo)
        .await?
        .into_iter()
        .find(|s| s.id == old)
        .and_then(|s| s.label);
    let new = add_slot(repo, pass, params, label).await;
    let new = audited(repo, "key passwd", &format!("replacing slot {old}"), new).await?;
    let removed = remove_slot(repo, &old, true).await;
    audited(
        repo,
        "key passwd",
        &format!("replaced by slot {new}"),
        removed,
    )
    .await?;
    Ok((new, old))
}

/// Objects of one data-key epoch on one replica.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct EpochObjects {
    pub epoch: u32,
    pub packs: u64,
    pub index_files: u64,
    pub snapshots: u64,
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
        for kind in [Kind::Pack, Kind::Index, Kind::Snapshot] {
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
                    _ => e.snapshots += 1,
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
    let keyring = repo.keyring();
    Ok(KeyStatus {
        current_epoch: keyring.current_epoch,
        epochs: keyring.epochs.iter().map(|e| e.id).collect(),
        replicas,
    })
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    fn cheap() -> KdfParams {
        KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_remove_and_passwd_on_every_replica() {
        let replicas = memory_replicas(2);
        init(replicas.clone()).await;
        let repo = open(replicas.clone()).await;
        let first = list_keys(&repo).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(first[0].in_use);
        assert_eq!(first[0].replicas.len(), 2);

        let other = SecretString::from("another passphrase");
        let id = add_key(&repo, &other, cheap(), Some("ci".into()))
            .await
            .unwrap();
        let all = list_keys(&repo).await.unwrap();
        assert_eq!(all.len(), 2);
        let added = all.iter().find(|s| s.id == id).unwrap();
        assert_eq!(added.label.as_deref(), Some("ci"));
        assert_eq!(added.replicas.len(), 2);
        // The new passphrase opens it.
        Repository::open(replicas.clone(), &other).await.unwrap();

        // The slot in use needs --force; a prefix works.
        let in_use = first[0].id.clone();
        let err = remove_key(&repo, &in_use[..6], false).await.unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        remove_key(&repo, &id[..8], false).await.unwrap();
        assert!(Repository::open(replicas.clone(), &other).await.is_err());
        // The last slot is never removed.
        let err = remove_key(&repo, &in_use, true).await.unwrap_err();
        assert!(err.to_string().contains("last"), "{err}");

        // passwd: the old passphrase stops working, the new one opens it.
        let newer = SecretString::from("a newer passphrase");
        let (new_id, old_id) = change_passphrase(&repo, &newer, cheap()).await.unwrap();
        assert_eq!(old_id, in_use);
        assert_ne!(new_id, old_id);
        assert!(Repository::open(replicas.clone(), &pass()).await.is_err());
        Repository::open(replicas, &newer).await.unwrap();
    }

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
