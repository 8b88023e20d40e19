//! Creating a repository on its replicas, and opening one: reading the
//! config of every replica, setting aside those that cannot be used, and
//! unwrapping the keyring from a key slot.

use std::sync::Arc;

use bytes::Bytes;
use cairn_backends::{ErrorKind, Handle, Kind, PutMode};
use jiff::Timestamp;
use secrecy::SecretString;

use super::{be, Replica, ReplicaSet, Repository, Unavailable};
use crate::error::{Error, Result};
use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::config::{self, Config};
use crate::format::id::Id;
use crate::format::keys::{KdfParams, KeyError, KeySlot, Keyring};

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

/// The largest object in `keys/` read as a key slot.
const MAX_SLOT_BYTES: u64 = 64 << 10;

impl Repository {
    /// Create the repository on every replica: the same config and key slot
    /// everywhere. Refuses if any replica already holds a repository.
    pub async fn init(
        replicas: Vec<Replica>,
        pass: &SecretString,
        opts: &InitOptions,
    ) -> Result<Repository> {
        ReplicaSet::check_count(replicas.len()).map_err(Error::Invalid)?;
        for r in &replicas {
            match r.backend.head(&Handle::config()).await {
                Ok(_) => return Err(Error::AlreadyInitialized(r.name.clone())),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::backend(&r.name, e)),
            }
        }
        let keyring = Keyring::generate();
        let config = Config {
            version: config::VERSION,
            id: keyring.repo_id(),
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
            created: Timestamp::now(),
        };
        config.validate().map_err(Error::Invalid)?;
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
            lock_options: Default::default(),
            cancel: Default::default(),
        })
    }

    /// Open the repository held by `replicas`. Replicas that cannot be read
    /// are set aside in `unavailable`; it is an error only if none can.
    pub async fn open(replicas: Vec<Replica>, pass: &SecretString) -> Result<Repository> {
        ReplicaSet::check_count(replicas.len()).map_err(Error::Invalid)?;
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
                    Ok(c) if c.version == config::VERSION => match c.validate() {
                        Ok(()) => ok.push((r.clone(), c)),
                        Err(e) => unavailable.push(Unavailable {
                            replica: r.clone(),
                            name: r.name.clone(),
                            error: Error::Corrupt(format!("{}: config: {e}", r.name)),
                        }),
                    },
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
            lock_options: Default::default(),
            cancel: Default::default(),
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
                // A key slot is a few hundred bytes of JSON; a huge object
                // in keys/ is not one, and must not be downloaded.
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

    /// Count the unavailable replica at `pos` (just seeded with the config
    /// and key slots) among the replicas; returns its new position.
    pub fn adopt(&mut self, pos: usize) -> Result<usize> {
        ReplicaSet::check_count(self.replicas.len() + 1).map_err(Error::Invalid)?;
        let u = self.unavailable.remove(pos);
        self.replicas.push(u.replica);
        Ok(self.replicas.len() - 1)
    }
}

/// The key slots of `replica`, each with its name. They are public (the
/// keyring in them is wrapped), so no passphrase is needed.
pub async fn key_slots(replica: &Replica) -> Result<Vec<(String, KeySlot)>> {
    let mut out = Vec::new();
    for meta in replica.backend.list(Kind::Key).await.map_err(be(replica))? {
        let slot = read_key_slot(replica, &meta.handle).await?;
        out.push((meta.handle.name, slot));
    }
    Ok(out)
}

async fn read_key_slot(r: &Replica, handle: &Handle) -> Result<KeySlot> {
    let data = r.backend.get(handle, None).await.map_err(be(r))?;
    serde_json::from_slice(&data).map_err(|e| Error::Corrupt(format!("{}: {handle}: {e}", r.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_slots_are_read_without_the_passphrase() {
        let repo = crate::test_support::memory_repo().await;
        let slots = key_slots(repo.replica(0)).await.unwrap();
        assert_eq!(slots.len(), 1);
        let (name, slot) = &slots[0];
        assert!(!name.is_empty());
        assert_eq!(slot.kdf, "argon2id");
        assert_eq!(slot.params.memory_kib, KdfParams::MIN_MEMORY_KIB);
        assert_eq!(slot.host, crate::sys::hostname());

        let h = Handle::new(Kind::Key, name);
        let r = repo.replica(0);
        r.backend
            .put(&h, Bytes::from_static(b"not json"), PutMode::Overwrite)
            .await
            .unwrap();
        let Err(err) = key_slots(r).await else {
            panic!("a slot that is not JSON was read")
        };
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
        assert!(err.to_string().contains(&h.to_string()), "{err}");
    }
}
