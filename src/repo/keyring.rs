//! Key slots and keyring generations across replicas: opening the newest
//! generation a slot can open, writing a new generation to every replica,
//! bringing a lagging replica up to date, and deleting old generations.

use std::sync::Arc;

use bytes::Bytes;
use cairn_backends::{BackendError, ErrorKind, Handle, Kind, ObjectMeta, PutMode};
use secrecy::SecretString;

use super::{be, Replica, ReplicaSet, Repository};
use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::keyring::{
    generation_name, parse_generation_name, Generation, MAX_GENERATION_BYTES,
};
use crate::format::keys::{KeyError, KeySlot, Keyring, SlotSecret};

/// The largest object in `keys/` read as a key slot.
const MAX_SLOT_BYTES: u64 = super::docs::MAX_KEY_SLOT_BYTES;

/// The slot that opened a repository, kept for key operations: they seal
/// new generations and re-read the newest one with it.
pub struct OpenedSlot {
    pub id: String,
    pub public: [u8; 32],
    pub secret: SlotSecret,
}

/// Every generation any replica lists, newest first, with the replicas
/// listing it. Replicas that cannot be listed are skipped. The replicas
/// are listed at once.
pub async fn list_generations(replicas: &[Replica]) -> Vec<(u64, ReplicaSet)> {
    let listed = futures::future::join_all(
        replicas
            .iter()
            .map(|r| async move { r.backend.list(Kind::Keyring).await.ok() }),
    )
    .await;
    generations_in(&listed)
}

/// [`list_generations`] from listings of `keyring/` already made, one per
/// replica (`None`: it could not be listed).
fn generations_in(listed: &[Option<Vec<ObjectMeta>>]) -> Vec<(u64, ReplicaSet)> {
    let mut all: std::collections::BTreeMap<u64, ReplicaSet> = Default::default();
    for (i, metas) in listed.iter().enumerate() {
        for m in metas.iter().flatten() {
            if let Some(g) = parse_generation_name(&m.handle.name) {
                all.entry(g).or_insert(ReplicaSet::EMPTY).insert(i);
            }
        }
    }
    all.into_iter().rev().collect()
}

/// The listings [`open_keyring`] needs, `keys/` and `keyring/` of one
/// replica. They need nothing from the config, so opening a repository
/// makes them while it reads the configs, not after.
pub(super) struct KeyListings {
    keys: std::result::Result<Vec<ObjectMeta>, BackendError>,
    keyring: Option<Vec<ObjectMeta>>,
}

impl KeyListings {
    /// List both directories of `r`, at once.
    pub(super) async fn of(r: &Replica) -> KeyListings {
        let (keys, keyring) =
            futures::join!(r.backend.list(Kind::Key), r.backend.list(Kind::Keyring));
        KeyListings {
            keys,
            keyring: keyring.ok(),
        }
    }
}

/// Read generation `g` from the first of `holders` that serves it, never
/// downloading more than the size limit.
pub async fn read_generation(
    replicas: &[Replica],
    g: u64,
    holders: ReplicaSet,
) -> Result<(Generation, Bytes)> {
    let h = Handle::new(Kind::Keyring, generation_name(g));
    let mut last = None;
    for i in holders.iter() {
        let r = &replicas[i];
        match r.backend.get(&h, Some(0..MAX_GENERATION_BYTES + 1)).await {
            Ok(data) => {
                return Generation::parse(&data)
                    .map(|gen| (gen, data))
                    .map_err(|e| Error::Corrupt(format!("{}: {h}: {e}", r.name)))
            }
            Err(e) => last = Some(Error::backend(&r.name, e)),
        }
    }
    Err(last.unwrap_or_else(|| Error::NotFound(format!("{h} is on no replica"))))
}

/// Unlock the first slot `pass` opens (slots whose id starts with one of
/// `prefer` first) and open the newest generation sealed to it.
///
/// `listed` holds the listings of `keys/` and `keyring/`, one per replica,
/// made beforehand (see [`KeyListings`]).
pub(super) async fn open_keyring(
    replicas: &[Replica],
    listed: Vec<KeyListings>,
    id: Id,
    pass: &SecretString,
    prefer: &[String],
) -> Result<(Keyring, OpenedSlot, u64)> {
    debug_assert_eq!(replicas.len(), listed.len());
    let mut last_err = None;
    let gen_lists: Vec<_> = listed.iter().map(|l| l.keyring.clone()).collect();
    let mut generations = generations_in(&gen_lists);
    // The newest generation, read while the first slot's key is derived
    // (a second or so of CPU): one round trip less before the keyring
    // opens. It is authenticated when opened, as any other.
    let mut early: Option<(u64, Result<(Generation, Bytes)>)> = None;
    for (r, listing) in replicas.iter().zip(listed) {
        let mut slots = match listing.keys {
            Ok(s) => s,
            Err(e) => {
                last_err = Some(Error::backend(&r.name, e));
                continue;
            }
        };
        // A stable sort: an unknown hint leaves the listing order.
        slots.sort_by_key(|m| {
            prefer
                .iter()
                .position(|p| m.handle.name.starts_with(p.as_str()))
                .unwrap_or(prefer.len())
        });
        let mut wrong = false;
        for meta in slots {
            // A key slot is a few hundred bytes of JSON; a huge object in
            // keys/ is not one, and must not be downloaded.
            if meta.size > MAX_SLOT_BYTES {
                tracing::warn!(
                    "{}: {} is {} bytes, not a key slot; skipped",
                    r.name,
                    meta.handle,
                    meta.size
                );
                continue;
            }
            let slot = match read_key_slot(r, &meta.handle).await {
                Ok(s) => s,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            if let Err(e) = slot.params.check() {
                tracing::warn!("{}: key slot {}: {e}; skipped", r.name, meta.handle);
                last_err = Some(e.into());
                continue;
            }
            let public = match slot.public() {
                Ok(p) => p,
                Err(e) => {
                    last_err = Some(e.into());
                    continue;
                }
            };
            let pass = pass.clone();
            let unlock = async {
                tokio::task::spawn_blocking(move || slot.unlock(&pass, &id))
                    .await
                    .expect("key derivation does not panic")
            };
            let res = match generations.first() {
                Some(&(g, holders)) if early.is_none() => {
                    let (res, read) = futures::join!(unlock, read_generation(replicas, g, holders));
                    early = Some((g, read));
                    res
                }
                _ => unlock.await,
            };
            let secret = match res {
                Ok(s) => s,
                Err(KeyError::WrongPassphrase) => {
                    wrong = true;
                    continue;
                }
                // The slots are this repository's and the config names
                // another: the config was replaced.
                Err(KeyError::OtherRepository { expected, found }) => {
                    last_err = Some(Error::BadConfig {
                        replica: r.name.clone(),
                        reason: format!(
                            "it names repository {expected}, but the key slots in keys/ \
                             belong to {found}: the file was replaced (restore it from a \
                             healthy replica)"
                        ),
                    });
                    continue;
                }
                Err(e) => {
                    last_err = Some(e.into());
                    continue;
                }
            };
            let opened = OpenedSlot {
                id: meta.handle.name.clone(),
                public,
                secret,
            };
            let mut found = newest_for(replicas, &generations, &opened, &id, early.take()).await;
            if found
                .as_ref()
                .is_err_and(|e| e.backend_kind() == Some(ErrorKind::NotFound))
            {
                // A key operation wrote a newer generation and deleted the
                // one listed a moment ago: list again, once.
                generations = list_generations(replicas).await;
                found = newest_for(replicas, &generations, &opened, &id, None).await;
            }
            match found {
                Ok((ring, g)) => return Ok((ring, opened, g)),
                Err(e) => {
                    // The secret was right; the slot was removed (or every
                    // generation for it is damaged): try the other slots.
                    wrong = false;
                    last_err = Some(e);
                }
            }
        }
        if wrong {
            return Err(KeyError::WrongPassphrase.into());
        }
        if last_err.is_some() {
            break;
        }
    }
    Err(last_err.unwrap_or_else(|| Error::Corrupt("the repository has no key slots".into())))
}

/// The newest authentic generation, opened with `slot`. A generation that
/// fails (planted, damaged) is skipped with a warning: it must not lock
/// the repository. When the newest authentic generation is not sealed to
/// the slot, the slot was removed: an older generation that still names
/// it (on a lagging replica, or put back from a saved copy) is not used.
///
/// `early` is generation `g` read beforehand (used when it is the newest).
async fn newest_for(
    replicas: &[Replica],
    generations: &[(u64, ReplicaSet)],
    slot: &OpenedSlot,
    id: &Id,
    mut early: Option<(u64, Result<(Generation, Bytes)>)>,
) -> Result<(Keyring, u64)> {
    let mut damaged = None;
    for &(g, holders) in generations {
        let read = match early.take() {
            Some((e, read)) if e == g => read,
            _ => read_generation(replicas, g, holders).await,
        };
        let gen = match read {
            Ok((gen, _)) => gen,
            Err(e) => {
                // Gone since the listing (a key operation replaced it) is
                // not damage; the caller lists again.
                if e.backend_kind() != Some(ErrorKind::NotFound) {
                    tracing::warn!("keyring generation {g}: {e}; skipped");
                }
                damaged = Some(e);
                continue;
            }
        };
        match gen.open(&slot.id, &slot.public, &slot.secret, id) {
            Ok(ring) => return Ok((ring, g)),
            Err(e @ KeyError::SlotRevoked(_)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!("keyring generation {g}: {e}; skipped");
                damaged = Some(e.into());
            }
        }
    }
    Err(damaged.unwrap_or_else(|| KeyError::SlotRevoked(short(&slot.id).to_string()).into()))
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The key slots of `replica`, each with its name. They are public (the
/// private key in them is sealed), so no passphrase is needed.
pub async fn key_slots(replica: &Replica) -> Result<Vec<(String, KeySlot)>> {
    let mut out = Vec::new();
    for meta in replica.backend.list(Kind::Key).await.map_err(be(replica))? {
        // As when opening: a giant object in keys/ is not a slot and is
        // never downloaded.
        if meta.size > MAX_SLOT_BYTES {
            tracing::warn!(
                "{}: {} is {} bytes, not a key slot; skipped",
                replica.name,
                meta.handle,
                meta.size
            );
            continue;
        }
        let slot = read_key_slot(replica, &meta.handle).await?;
        out.push((meta.handle.name, slot));
    }
    Ok(out)
}

pub(super) async fn read_key_slot(r: &Replica, handle: &Handle) -> Result<KeySlot> {
    let data = r.get_at_most(handle, MAX_SLOT_BYTES).await?;
    serde_json::from_slice(&data).map_err(|e| Error::Corrupt(format!("{}: {handle}: {e}", r.name)))
}

/// A slot's stored bytes and its id (the hash of those bytes).
pub fn slot_bytes(slot: &KeySlot) -> (String, Bytes) {
    let data = Bytes::from(serde_json::to_vec_pretty(slot).expect("slot serializes"));
    (Id::of_stored(&data).to_hex(), data)
}

/// Store `data` as `h` on replica `r`; an object already there with the
/// same bytes is fine.
async fn put_same(r: &Replica, h: &Handle, data: &Bytes) -> Result<()> {
    match r.backend.put(h, data.clone(), PutMode::Create).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // One byte more than ours is enough to tell them apart.
            let there = r
                .backend
                .get(h, Some(0..data.len() as u64 + 1))
                .await
                .map_err(be(r))?;
            if there == *data {
                Ok(())
            } else {
                Err(Error::Locked(format!(
                    "{}: {h} was written by another key operation at the same time; \
                     run the command again",
                    r.name
                )))
            }
        }
        Err(e) => Err(Error::backend(&r.name, e)),
    }
}

impl Repository {
    /// The slot that opened this repository, with its secret.
    pub fn slot_secret(&self) -> Option<&Arc<OpenedSlot>> {
        self.slot.as_ref()
    }

    /// The keyring generation this repository was opened with.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Use `keyring` (generation `g`) from now on, after a key operation
    /// in this process changed it.
    pub fn adopt_keyring(&mut self, keyring: Keyring, g: u64) {
        self.keyring = Arc::new(keyring);
        self.generation = g;
    }

    /// The newest generation on any replica, opened with this process's
    /// slot: the base every key operation builds on (another process may
    /// have rotated since this one opened the repository).
    pub async fn newest_keyring(&self) -> Result<(Keyring, u64, Generation)> {
        let slot = self
            .slot
            .as_ref()
            .ok_or_else(|| Error::Invalid("no key slot opened this repository".into()))?;
        let gens = list_generations(&self.replicas).await;
        let (g, holders) = *gens
            .first()
            .ok_or_else(|| Error::Corrupt("no replica holds a keyring generation".into()))?;
        let (gen, _) = read_generation(&self.replicas, g, holders).await?;
        let ring = gen.open(&slot.id, &slot.public, &slot.secret, &self.config.id)?;
        Ok((ring, g, gen))
    }

    /// Store a key slot on every replica; returns its id.
    pub async fn put_slot(&self, slot: &KeySlot) -> Result<String> {
        let (name, data) = slot_bytes(slot);
        let h = Handle::new(Kind::Key, &name);
        for r in &self.replicas {
            put_same(r, &h, &data).await?;
        }
        Ok(name)
    }

    /// Store generation `gen` on every replica, the first replica first: a
    /// concurrent key operation that wrote the same number loses there,
    /// before anything else is written. Then every older generation is
    /// deleted everywhere: the new one names every slot that may open the
    /// repository and holds every epoch key, so an older one could only
    /// serve a slot removed since. Returns how many were deleted.
    pub async fn put_generation(&self, gen: &Generation) -> Result<u64> {
        let h = Handle::new(Kind::Keyring, generation_name(gen.generation));
        let data = Bytes::from(gen.to_bytes());
        for r in &self.replicas {
            put_same(r, &h, &data).await?;
        }
        let mut deleted = 0;
        for (old, _) in list_generations(&self.replicas).await {
            if old < gen.generation {
                self.delete_everywhere(&Handle::new(Kind::Keyring, generation_name(old)))
                    .await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Bring every replica's `keys/` and `keyring/` up to the newest
    /// generation: the generation and the slots it names are copied to
    /// replicas lacking them (a replica that was unreachable during a key
    /// operation). Returns the replicas changed and what was copied.
    pub async fn converge_keys(&self) -> Result<Vec<(String, u64)>> {
        let gens = list_generations(&self.replicas).await;
        let Some(&(g, holders)) = gens.first() else {
            return Ok(Vec::new());
        };
        if holders.len() == self.replicas.len() {
            return Ok(Vec::new());
        }
        let (gen, data) = read_generation(&self.replicas, g, holders).await?;
        // Only an authentic generation is spread.
        if let Some(slot) = &self.slot {
            if gen.names(&slot.id) {
                gen.open(&slot.id, &slot.public, &slot.secret, &self.config.id)?;
            }
        }
        let source = &self.replicas[holders.iter().next().expect("a holder")];
        let mut changed = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if holders.contains(i) {
                continue;
            }
            let mut copied = 0;
            for slot in gen.slots() {
                let h = Handle::new(Kind::Key, &slot);
                if r.backend.head(&h).await.is_ok() {
                    continue;
                }
                let Ok(bytes) = source.backend.get(&h, Some(0..MAX_SLOT_BYTES + 1)).await else {
                    continue;
                };
                put_same(r, &h, &bytes).await?;
                copied += 1;
            }
            put_same(r, &Handle::new(Kind::Keyring, generation_name(g)), &data).await?;
            for (old, on) in &gens {
                if *old < g && on.contains(i) {
                    let h = Handle::new(Kind::Keyring, generation_name(*old));
                    match r.backend.delete(&h).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::backend(&r.name, e)),
                    }
                }
            }
            changed.push((r.name.clone(), copied + 1));
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::KdfParams;

    /// A generation listed a moment ago and deleted since (a key operation
    /// replaced it) reads as not found, which makes the opener list again,
    /// and the repository opens.
    #[tokio::test]
    async fn a_generation_replaced_after_the_listing_is_listed_again() {
        let repo = crate::test_support::memory_repo().await;
        let replicas = repo.replicas().to_vec();
        let stale = list_generations(&replicas).await;
        assert_eq!(stale.len(), 1);
        let cheap = KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        };
        crate::ops::keys::add_key(&repo, &SecretString::from("another"), cheap, None)
            .await
            .unwrap();
        let slot = repo.slot_secret().unwrap();
        let Err(e) = newest_for(&replicas, &stale, slot, &repo.config().id, None).await else {
            panic!("a deleted generation was read");
        };
        assert_eq!(e.backend_kind(), Some(ErrorKind::NotFound), "{e}");
        let fresh = list_generations(&replicas).await;
        let (_, g) = newest_for(&replicas, &fresh, slot, &repo.config().id, None)
            .await
            .unwrap();
        assert_eq!(g, 2);
        Repository::open(replicas, &crate::test_support::pass())
            .await
            .unwrap();
    }
}
