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
    /// How the slot's secret is used: `passphrase` (Argon2id).
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
            kind: "passphrase".into(),
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
    let mut slot = KeySlot::wrap(repo.keyring(), pass, params)?;
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
    let new = add_key(repo, pass, params, label).await?;
    remove_key(repo, &old, true).await?;
    Ok((new, old))
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
}
