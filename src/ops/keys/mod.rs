//! Key management across replicas: list the slots, add one (a passphrase,
//! a generated key file or a key command), remove one, change the
//! passphrase of the slot in use, rotate the data key, retire an old
//! epoch. Every change goes to every replica: a new slot, then a new
//! keyring generation naming the slots that may open it, and only then is
//! anything old deleted, so an interruption never leaves a replica without
//! a slot that opens it (docs/format.md, "Key slots and keyring
//! generations").

use std::collections::BTreeMap;

use cairn_backends::{Handle, Kind};
use jiff::Timestamp;
use secrecy::SecretString;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::keyring::Generation;
use crate::format::keys::{KdfParams, KeySlot, Keyring};
use crate::repo::{key_slots, LockMode, ReplicaSet, Repository};

mod epochs;
mod reencrypt;
pub use epochs::*;
pub use reencrypt::*;

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
    /// Whether the newest keyring generation is sealed to this slot (a
    /// slot that is not opens nothing: removed, or its `key add` was cut
    /// short).
    pub active: bool,
    /// The replicas holding it (every replica, unless one lags).
    pub replicas: Vec<String>,
}

/// Every slot on every replica, oldest first.
pub async fn list_keys(repo: &Repository) -> Result<Vec<SlotInfo>> {
    let active: Vec<String> = match repo.newest_keyring().await {
        Ok((_, _, gen)) => gen.slots(),
        Err(_) => Vec::new(),
    };
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
            active: active.contains(&id),
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
        let (slot, _) = KeySlot::create_command_key(repo.keyring(), key)?;
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
    let (slot, _) = KeySlot::create(repo.keyring(), pass, params)?;
    store_slot(repo, slot, label).await
}

/// The newest keyring and the slots its generation is sealed to (those
/// whose slot object still exists), with their public keys.
async fn base(repo: &Repository) -> Result<(Keyring, u64, Vec<(String, [u8; 32])>)> {
    repo.converge_keys().await?;
    let (ring, g, gen) = repo.newest_keyring().await?;
    let mut slots = BTreeMap::new();
    for r in repo.replicas() {
        for (name, slot) in key_slots(r).await? {
            slots.entry(name).or_insert(slot);
        }
    }
    let mut recipients = Vec::new();
    for id in gen.slots() {
        if let Some(slot) = slots.get(&id) {
            recipients.push((id, slot.public()?));
        }
    }
    Ok((ring, g, recipients))
}

/// Seal `ring` as the next generation to `recipients` and store it on
/// every replica; returns its number.
async fn next_generation(
    repo: &Repository,
    ring: &Keyring,
    g: u64,
    recipients: &[(String, [u8; 32])],
) -> Result<u64> {
    let gen = Generation::seal(ring, g + 1, recipients);
    repo.put_generation(&gen).await?;
    Ok(g + 1)
}

async fn store_slot(repo: &Repository, mut slot: KeySlot, label: Option<String>) -> Result<String> {
    slot.label = label;
    repo.with_lock(LockMode::Shared, "key add", async || {
        let (ring, g, mut recipients) = base(repo).await?;
        // The slot first: a generation must never name a slot that no
        // replica holds.
        let name = repo.put_slot(&slot).await?;
        recipients.push((name.clone(), slot.public()?));
        next_generation(repo, &ring, g, &recipients).await?;
        Ok(name)
    })
    .await
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

/// Record `operation` with its outcome; the detail of a success comes
/// from `what`.
async fn audited_report<T>(
    repo: &Repository,
    operation: &str,
    res: Result<T>,
    what: impl Fn(&T) -> String,
) -> Result<T> {
    let (outcome, detail) = match &res {
        Ok(r) => ("ok".to_string(), what(r)),
        Err(e) => (format!("failed: {}", crate::error::chain(e)), String::new()),
    };
    if let Err(e) = crate::ops::audit::record(repo, operation, &detail, &outcome).await {
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
        let (ring, g, recipients) = base(repo).await?;
        let rest: Vec<_> = recipients
            .into_iter()
            .filter(|(id, _)| *id != slot.id)
            .collect();
        if rest.is_empty() {
            return Err(Error::Invalid(format!(
                "key slot {} is the last one the keyring is sealed to: removing it would lock \
                 everyone out (add another first with `cairn key add`)",
                short(&slot.id)
            )));
        }
        // A generation without the slot first, then the slot itself: the
        // slot's secret then opens no generation written from now on.
        next_generation(repo, &ring, g, &rest).await?;
        repo.delete_everywhere(&Handle::new(Kind::Key, &slot.id))
            .await
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
