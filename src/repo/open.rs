//! Creating a repository on its replicas, and opening one: reading the
//! config of every replica, setting aside those that cannot be used,
//! opening the keyring with a key slot (see [`super::keyring`]) and
//! authenticating each config with it.

use std::path::PathBuf;
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
use crate::format::keyring::{generation_name, Generation};
use crate::format::keys::{KdfParams, KeySlot, Keyring};
use crate::repo::keyring::OpenedSlot;
use crate::repo::rollback::Tracker;

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

/// How to open a repository.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// A prefix of the id of the key slot to try first (`--key-hint`).
    pub key_hint: Option<String>,
    /// Where this host keeps its record of each repository (the snapshots
    /// seen, for rollback detection; the slot that last opened it, tried
    /// next). None: keep no record.
    pub state_dir: Option<PathBuf>,
}

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
        let mut config = Config {
            version: config::VERSION,
            id: keyring.repo_id(),
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
            created: Timestamp::now(),
            mac: String::new(),
        };
        config.validate().map_err(Error::Invalid)?;
        config.seal(&keyring);
        let (slot, secret) = KeySlot::create(&keyring, pass, opts.kdf)?;
        let (slot_name, slot_bytes) = super::keyring::slot_bytes(&slot);
        let public = slot.public()?;
        let generation = Generation::seal(&keyring, 1, &[(slot_name.clone(), public)]);
        let gen_bytes = Bytes::from(generation.to_bytes());
        let config_bytes =
            Bytes::from(serde_json::to_vec_pretty(&config).expect("config serializes"));
        for r in &replicas {
            r.backend.create().await.map_err(be(r))?;
            // Key slot and keyring first: a config without them would be a
            // dead repository.
            r.backend
                .put(
                    &Handle::new(Kind::Key, &slot_name),
                    slot_bytes.clone(),
                    PutMode::Create,
                )
                .await
                .map_err(be(r))?;
            r.backend
                .put(
                    &Handle::new(Kind::Keyring, generation_name(1)),
                    gen_bytes.clone(),
                    PutMode::Create,
                )
                .await
                .map_err(be(r))?;
            r.backend
                .put(&Handle::config(), config_bytes.clone(), PutMode::Create)
                .await
                .map_err(be(r))?;
        }
        let slot = OpenedSlot {
            id: slot_name,
            public,
            secret,
        };
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
            record: None,
            slot: Some(Arc::new(slot)),
            generation: 1,
            preferred: None,
        })
    }

    /// Open the repository held by `replicas`, keeping no local record.
    pub async fn open(replicas: Vec<Replica>, pass: &SecretString) -> Result<Repository> {
        Self::open_with(replicas, pass, &OpenOptions::default()).await
    }

    /// Open the repository held by `replicas`. Replicas that cannot be read,
    /// or whose config is damaged or fails its MAC, are set aside in
    /// `unavailable`; it is an error only if none is left.
    pub async fn open_with(
        replicas: Vec<Replica>,
        pass: &SecretString,
        opts: &OpenOptions,
    ) -> Result<Repository> {
        ReplicaSet::check_count(replicas.len()).map_err(Error::Invalid)?;
        // One byte past the limit is enough to tell a planted giant object
        // from a config, without downloading it.
        let limit = super::docs::MAX_CONFIG_BYTES;
        // The listings of `keys/` and `keyring/` need nothing from the
        // config: made at the same time, so that opening costs the round
        // trips of one of them, not of all three in turn. Nothing listed is
        // trusted before the keyring is open and the config authenticated
        // with it; a replica set aside below has its listings dropped.
        let (configs, listings) = futures::join!(
            futures::future::join_all(replicas.iter().map(|r| async move {
                let data = r.backend.get(&Handle::config(), Some(0..limit + 1)).await;
                (r, data)
            })),
            futures::future::join_all(replicas.iter().map(super::keyring::KeyListings::of))
        );
        let mut ok: Vec<(Replica, Config)> = Vec::new();
        let mut unavailable = Vec::new();
        for (r, data) in configs {
            match data {
                Ok(d) if d.len() as u64 > limit => unavailable.push(bad_config(
                    r,
                    format!("over {limit} bytes: not a cairn config; not read"),
                )),
                Ok(d) => match serde_json::from_slice::<Config>(&d) {
                    Ok(c) if c.version == config::VERSION => match c.validate() {
                        Ok(()) => ok.push((r.clone(), c)),
                        Err(e) => unavailable.push(bad_config(r, e)),
                    },
                    Ok(c) => unavailable.push(Unavailable {
                        replica: r.clone(),
                        name: r.name.clone(),
                        error: Error::Invalid(format!(
                            "{}: config: repository format version {} is not supported \
                             (this build reads version {}); the format changed before any \
                             release, with no migration: create the repository anew \
                             (`cairn init`) and back up again",
                            r.name,
                            c.version,
                            config::VERSION
                        )),
                    }),
                    Err(e) => unavailable.push(bad_config(r, format!("malformed: {e}"))),
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
        let Some(id) = majority_id(&ok) else {
            if unavailable
                .iter()
                .all(|u| matches!(u.error, Error::BadConfig { .. }))
            {
                if let Some(u) = unavailable.into_iter().next() {
                    return Err(u.error);
                }
                return Err(Error::Invalid("no repository given".into()));
            }
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
        // Several ids: the one most replicas hold is the repository (a
        // single replica cannot push another repository's config on the
        // others); the rest are set aside.
        ok.retain(|(r, c)| {
            if c.id != id {
                unavailable.push(Unavailable {
                    replica: r.clone(),
                    name: r.name.clone(),
                    error: Error::BadConfig {
                        replica: r.name.clone(),
                        reason: format!(
                            "it holds another repository ({}, expected {})",
                            c.id.short(),
                            id.short()
                        ),
                    },
                });
                false
            } else {
                true
            }
        });
        let record = opts
            .state_dir
            .as_ref()
            .map(|dir| Arc::new(Tracker::load(dir, &id)));
        let mut prefer = Vec::new();
        prefer.extend(opts.key_hint.clone().filter(|h| !h.is_empty()));
        prefer.extend(record.as_ref().and_then(|r| r.last_slot()));
        let usable: Vec<Replica> = ok.iter().map(|(r, _)| r.clone()).collect();
        // The listings of the usable replicas, in their order: `usable` is
        // a subsequence of `replicas`, each matched by its backend.
        let mut listings: Vec<_> = listings.into_iter().map(Some).collect();
        let mut listed = Vec::with_capacity(usable.len());
        for u in &usable {
            let i = (0..replicas.len())
                .find(|&i| listings[i].is_some() && Arc::ptr_eq(&replicas[i].backend, &u.backend))
                .expect("a usable replica is one of those given");
            listed.push(listings[i].take().expect("not taken yet"));
        }
        let (keyring, slot, generation) =
            super::keyring::open_keyring(&usable, listed, id, pass, &prefer).await?;
        // The keyring is authentic (it opened with a passphrase); the
        // configs are not until their MAC says so, and nothing of them is
        // used before.
        ok.retain(|(r, c)| match c.verify(&keyring) {
            Ok(()) => true,
            Err(e) => {
                unavailable.push(bad_config(r, e.to_string()));
                false
            }
        });
        let Some((_, config)) = ok.first().cloned() else {
            let mut bad = unavailable
                .into_iter()
                .filter(|u| matches!(u.error, Error::BadConfig { .. }));
            return Err(bad
                .next()
                .map(|u| u.error)
                .unwrap_or_else(|| Error::Corrupt("no replica holds an authentic config".into())));
        };
        if let Some(r) = &record {
            r.set_last_slot(&slot.id);
        }
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
            record,
            slot: Some(Arc::new(slot)),
            generation,
            preferred: None,
        })
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

/// A replica set aside for its `config`: exit code 5, naming the file.
fn bad_config(r: &Replica, reason: impl Into<String>) -> Unavailable {
    Unavailable {
        replica: r.clone(),
        name: r.name.clone(),
        error: Error::BadConfig {
            replica: r.name.clone(),
            reason: reason.into(),
        },
    }
}

/// The repository id most replicas' configs name (the first on a tie).
fn majority_id(configs: &[(Replica, Config)]) -> Option<Id> {
    let mut best: Option<(Id, usize)> = None;
    for (_, c) in configs {
        let n = configs.iter().filter(|(_, o)| o.id == c.id).count();
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((c.id, n));
        }
    }
    best.map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::key_slots;

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

    /// A second slot (same passphrase) on every replica of `repo`; its name.
    async fn add_slot(repo: &Repository) -> String {
        let params = KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        };
        crate::ops::keys::add_key(repo, &crate::test_support::pass(), params, None)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_hinted_slot_is_tried_first_then_the_one_that_last_opened() {
        let repo = crate::test_support::memory_repo().await;
        let first = repo.opened_slot().unwrap().to_string();
        let second = add_slot(&repo).await;
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().to_path_buf();
        let open = |hint: Option<&str>, keep: bool| {
            let opts = OpenOptions {
                key_hint: hint.map(str::to_string),
                state_dir: keep.then(|| dir.clone()),
            };
            let replicas = repo.replicas().to_vec();
            async move {
                Repository::open_with(replicas, &crate::test_support::pass(), &opts)
                    .await
                    .unwrap()
                    .opened_slot()
                    .unwrap()
                    .to_string()
            }
        };
        for (slot, other) in [(&first, &second), (&second, &first)] {
            let opened = open(Some(&slot[..6]), false).await;
            assert_eq!(&opened, slot);
            assert_ne!(&opened, other);
        }
        // An unknown hint still opens, with some slot.
        let any = open(Some("zzzz"), false).await;
        assert!(any == first || any == second);
        // The slot that last opened the repository here is tried first.
        assert_eq!(open(Some(&second[..6]), true).await, second);
        assert_eq!(open(None, true).await, second);
        assert_eq!(open(Some(&first[..6]), true).await, first);
        assert_eq!(open(None, true).await, first);
    }

    #[tokio::test]
    async fn a_tampered_config_is_refused_and_a_tampered_replica_set_aside() {
        let repo = crate::test_support::init(crate::test_support::memory_replicas(2)).await;
        let pass = crate::test_support::pass();
        let r0 = repo.replica(0).clone();
        let good = r0.backend.get(&Handle::config(), None).await.unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["compression_level"] = 19.into();
        r0.backend
            .put(
                &Handle::config(),
                Bytes::from(v.to_string()),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        // Alone, the replica is refused: exit code 5, naming the file.
        let Err(err) = Repository::open(vec![r0.clone()], &pass).await else {
            panic!("a tampered config was accepted")
        };
        assert!(matches!(err, Error::BadConfig { .. }), "{err}");
        assert_eq!(err.exit_code(), crate::ops::ExitCode::Damaged);
        assert!(err.to_string().starts_with("mem0: config: "), "{err}");
        // With a healthy replica, it is set aside and the other used.
        let both = Repository::open(repo.replicas().to_vec(), &pass)
            .await
            .unwrap();
        assert_eq!(both.replicas().len(), 1);
        assert_eq!(both.replica(0).name, "mem1");
        assert_eq!(both.config().compression_level, 3);
        assert!(matches!(
            both.unavailable()[0].error,
            Error::BadConfig { .. }
        ));
        // Out of range is refused before any key is derived.
        v["pack_size"] = 0.into();
        r0.backend
            .put(
                &Handle::config(),
                Bytes::from(v.to_string()),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let Err(err) = Repository::open(vec![r0], &pass).await else {
            panic!("pack_size 0 was accepted")
        };
        assert!(err.to_string().contains("pack size 0"), "{err}");
        assert_eq!(err.exit_code(), crate::ops::ExitCode::Damaged);
    }
}
