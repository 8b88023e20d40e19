//! The keyring and the key slots that open it.
//!
//! One keyring per repository holds the repository id, the chunk-id key, the
//! chunker key and every data-key epoch. Each key slot (`keys/<id>`) holds
//! an X25519 key pair whose private half is sealed under a key-encryption
//! key derived from the slot's secret (Argon2id of a passphrase, or HKDF of
//! a key a command prints). The keyring itself is stored in generations
//! sealed to the slots' public keys ([`crate::format::keyring`]), so adding
//! a slot, removing one or rotating the data key needs no other slot's
//! secret. Objects record the epoch they were written under.

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::format::crypto::{open_document, seal_document, CryptoError, Key32, ObjectKind};
use crate::format::id::{hex_decode, hex_encode, Id};

/// Most data-key epochs one keyring may hold (one rotation a day for
/// decades; bounds what a keyring object can make a reader allocate).
pub const MAX_EPOCHS: usize = 65536;

/// One data-key epoch.
#[derive(Clone)]
pub struct Epoch {
    pub id: u32,
    pub key: Key32,
    pub created: Timestamp,
}

/// Every secret of a repository.
#[derive(Clone)]
pub struct Keyring {
    pub repo_id: [u8; 32],
    pub id_key: Key32,
    pub chunker_key: Key32,
    pub epochs: Vec<Epoch>,
    pub current_epoch: u32,
}

#[derive(Serialize, Deserialize)]
struct EpochFile {
    id: u32,
    key: String,
    created: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    version: u32,
    repository: String,
    id_key: String,
    chunker_key: String,
    epochs: Vec<EpochFile>,
    current_epoch: u32,
    /// The generation this keyring was sealed as (docs/format.md).
    #[serde(default)]
    generation: u64,
}

impl Drop for KeyringFile {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.id_key.zeroize();
        self.chunker_key.zeroize();
        for e in &mut self.epochs {
            e.key.zeroize();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("wrong passphrase: no key slot of this repository opens with it")]
    WrongPassphrase,
    #[error("key slot is malformed: {0}")]
    Malformed(String),
    #[error("key slot belongs to repository {found}, expected {expected}")]
    OtherRepository { expected: String, found: String },
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error(
        "key slot {0} opens with this secret, but no keyring generation on any replica is \
         sealed to it: the slot was removed"
    )]
    SlotRevoked(String),
}

fn key_from_hex(s: &str) -> Result<Key32, KeyError> {
    let v = Zeroizing::new(hex_decode(s).ok_or_else(|| KeyError::Malformed("bad hex".into()))?);
    let arr: [u8; 32] = v
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::Malformed("key length".into()))?;
    Ok(Key32(arr))
}

impl Keyring {
    /// A fresh keyring with a random repository id and one data-key epoch.
    pub fn generate() -> Keyring {
        Keyring {
            repo_id: Id::random().0,
            id_key: Key32::random(),
            chunker_key: Key32::random(),
            epochs: vec![Epoch {
                id: 1,
                key: Key32::random(),
                created: Timestamp::now(),
            }],
            current_epoch: 1,
        }
    }

    pub fn repo_id(&self) -> Id {
        Id(self.repo_id)
    }

    /// The epoch new objects are written under.
    pub fn current(&self) -> &Epoch {
        self.epochs
            .iter()
            .find(|e| e.id == self.current_epoch)
            .expect("keyring invariant: the current epoch exists")
    }

    pub fn epoch_key(&self, id: u32) -> Option<&Key32> {
        self.epochs.iter().find(|e| e.id == id).map(|e| &e.key)
    }

    /// The key that authenticates keyring generations: derived from the id
    /// key, which no rotation changes, so every generation of a repository
    /// verifies with the one copy each slot keeps.
    pub fn auth_key(&self) -> Key32 {
        crate::format::crypto::derive_key(&self.id_key, &self.repo_id, &[b"cairn keyring auth v3"])
    }

    /// A copy for the next epoch: a new random data key, made current.
    pub fn with_new_epoch(&self) -> Keyring {
        let mut next = self.clone();
        let id = self.epochs.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        next.epochs.push(Epoch {
            id,
            key: Key32::random(),
            created: Timestamp::now(),
        });
        next.current_epoch = id;
        next
    }

    /// A copy without epoch `id`'s key (which must not be the current one).
    pub fn without_epoch(&self, id: u32) -> Keyring {
        let mut next = self.clone();
        next.epochs
            .retain(|e| e.id != id || e.id == self.current_epoch);
        next
    }

    /// The id of a chunk: keyed BLAKE3 of its plaintext.
    pub fn chunk_id(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key.0, data).as_bytes())
    }

    /// Seal a document (index, snapshot) under the current epoch.
    pub fn seal(&self, kind: ObjectKind, plaintext: &[u8]) -> Vec<u8> {
        let e = self.current();
        seal_document(e.id, &e.key, &self.repo_id, kind, plaintext)
    }

    pub fn open(&self, kind: ObjectKind, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_document(data, kind, &self.repo_id, |e| self.epoch_key(e))
    }

    /// The keyring as sealed into generation `generation`.
    pub(crate) fn to_json_generation(&self, generation: u64) -> Zeroizing<Vec<u8>> {
        let f = KeyringFile {
            generation,
            version: 1,
            repository: hex_encode(&self.repo_id),
            id_key: hex_encode(&self.id_key.0),
            chunker_key: hex_encode(&self.chunker_key.0),
            epochs: self
                .epochs
                .iter()
                .map(|e| EpochFile {
                    id: e.id,
                    key: hex_encode(&e.key.0),
                    created: e.created,
                })
                .collect(),
            current_epoch: self.current_epoch,
        };
        Zeroizing::new(serde_json::to_vec(&f).expect("keyring serializes"))
    }

    /// The inverse of [`Keyring::to_json_generation`]: the keyring and the
    /// generation it was sealed as.
    pub fn from_json(data: &[u8]) -> Result<(Keyring, u64), KeyError> {
        let f: KeyringFile =
            serde_json::from_slice(data).map_err(|e| KeyError::Malformed(e.to_string()))?;
        let repo = hex_decode(&f.repository)
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| KeyError::Malformed("repository id".into()))?;
        let epochs = f
            .epochs
            .iter()
            .map(|e| {
                Ok(Epoch {
                    id: e.id,
                    key: key_from_hex(&e.key)?,
                    created: e.created,
                })
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        if !epochs.iter().any(|e| e.id == f.current_epoch) {
            return Err(KeyError::Malformed("current epoch missing".into()));
        }
        if epochs.len() > MAX_EPOCHS {
            return Err(KeyError::Malformed("too many epochs".into()));
        }
        let ring = Keyring {
            repo_id: repo,
            id_key: key_from_hex(&f.id_key)?,
            chunker_key: key_from_hex(&f.chunker_key)?,
            epochs,
            current_epoch: f.current_epoch,
        };
        Ok((ring, f.generation))
    }
}

/// Argon2id cost parameters, recorded in each key slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// The weakest parameters a slot may use (OWASP's minimum for Argon2id
    /// is 19 MiB with 2 passes; lower memory is only accepted for tests).
    pub const MIN_MEMORY_KIB: u32 = 8 * 1024;
    /// The costliest parameters a slot may ask for. A slot is read before
    /// anything authenticates it, so whoever can write to the storage could
    /// otherwise make every command allocate (and abort on) any amount of
    /// memory, or spin for hours, before the passphrase is even tried.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    pub const MAX_ITERATIONS: u32 = 64;
    pub const MAX_PARALLELISM: u32 = 16;

    /// Refuse parameters outside the documented range (docs/format.md).
    pub fn check(&self) -> Result<(), KeyError> {
        if self.memory_kib < KdfParams::MIN_MEMORY_KIB
            || self.iterations == 0
            || self.parallelism == 0
        {
            return Err(KeyError::Kdf(format!("parameters too weak: {self:?}")));
        }
        if self.memory_kib > KdfParams::MAX_MEMORY_KIB
            || self.iterations > KdfParams::MAX_ITERATIONS
            || self.parallelism > KdfParams::MAX_PARALLELISM
        {
            return Err(KeyError::Kdf(format!(
                "parameters over the limits (memory {} KiB, {} iterations, parallelism {}; \
                 at most {} KiB, {}, {})",
                self.memory_kib,
                self.iterations,
                self.parallelism,
                KdfParams::MAX_MEMORY_KIB,
                KdfParams::MAX_ITERATIONS,
                KdfParams::MAX_PARALLELISM
            )));
        }
        Ok(())
    }
}

/// The slot format this build writes and reads (docs/format.md).
pub const SLOT_VERSION: u32 = 3;

/// A key slot as stored in `keys/<id>` (public JSON). It holds an X25519
/// key pair: the public half in clear, so anyone with the keyring can seal
/// a new keyring generation to it; the private half sealed under a key
/// derived from the slot's secret, together with the repository's keyring
/// authentication key (see [`crate::format::keyring`]).
#[derive(Clone, Serialize, Deserialize)]
pub struct KeySlot {
    pub version: u32,
    pub kdf: String,
    pub params: KdfParams,
    pub salt: String,
    pub created: Timestamp,
    pub host: String,
    pub username: String,
    pub repository: String,
    /// X25519 public key, hex.
    pub public_key: String,
    /// The sealed [`SlotSecret`], hex.
    pub private_key: String,
    /// Who or what the slot is for ("ann laptop", "nightly job").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// What a slot's secret unlocks: its X25519 private key, and the key that
/// authenticates keyring generations (so that whoever can only write to
/// the storage cannot plant a keyring of their own).
#[derive(Clone)]
pub struct SlotSecret {
    pub private_key: Key32,
    pub auth_key: Key32,
}

#[derive(Serialize, Deserialize)]
struct SlotSecretFile {
    private_key: String,
    auth_key: String,
}

impl Drop for SlotSecretFile {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.private_key.zeroize();
        self.auth_key.zeroize();
    }
}

fn derive_kek(pass: &SecretString, salt: &[u8], p: KdfParams) -> Result<Key32, KeyError> {
    p.check()?;
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| KeyError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = Key32([0; 32]);
    argon
        .hash_password_into(pass.expose_secret().as_bytes(), salt, &mut kek.0)
        .map_err(|e| KeyError::Kdf(e.to_string()))?;
    Ok(kek)
}

/// The kdf of a slot whose secret is a 32-byte key (from a key-management
/// command): stretching a random key buys nothing, so HKDF derives the KEK.
pub const KDF_COMMAND_KEY: &str = "hkdf-sha256";

/// The 32-byte key a key command printed: 64 hex digits (surrounding
/// white space ignored).
pub fn parse_command_key(printed: &str) -> Option<Key32> {
    let raw = crate::format::id::hex_decode(printed.trim())?;
    Some(Key32(raw.try_into().ok()?))
}

/// The KEK of a slot with `kdf` for `secret` and `salt`.
fn derive_slot_kek(
    kdf: &str,
    secret: &SecretString,
    salt: &[u8],
    p: KdfParams,
) -> Result<Key32, KeyError> {
    match kdf {
        "argon2id" => derive_kek(secret, salt, p),
        KDF_COMMAND_KEY => {
            // Any other secret is simply the wrong one for this slot.
            let key = parse_command_key(secret.expose_secret()).ok_or(KeyError::WrongPassphrase)?;
            Ok(crate::format::crypto::derive_key(
                &key,
                salt,
                &[b"cairn key command v1"],
            ))
        }
        other => Err(KeyError::Malformed(format!("unsupported kdf {other}"))),
    }
}

impl KeySlot {
    /// A new slot for the repository `keyring` belongs to, opened by `pass`
    /// (Argon2id with `params`), with its secret.
    pub fn create(
        keyring: &Keyring,
        pass: &SecretString,
        params: KdfParams,
    ) -> Result<(KeySlot, SlotSecret), KeyError> {
        Self::create_with("argon2id", keyring, pass, params)
    }

    /// A new slot opened by a 32-byte key printed by a key-management
    /// command (`key`: its 64 hex digits).
    pub fn create_command_key(
        keyring: &Keyring,
        key: &SecretString,
    ) -> Result<(KeySlot, SlotSecret), KeyError> {
        let cheap = KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        };
        Self::create_with(KDF_COMMAND_KEY, keyring, key, cheap)
    }

    fn create_with(
        kdf: &str,
        keyring: &Keyring,
        pass: &SecretString,
        params: KdfParams,
    ) -> Result<(KeySlot, SlotSecret), KeyError> {
        let mut salt = [0u8; 32];
        crate::format::crypto::fill_random(&mut salt);
        let kek = derive_slot_kek(kdf, pass, &salt, params)?;
        let (private, public) = crate::format::keyring::x25519_pair();
        let secret = SlotSecretFile {
            private_key: hex_encode(&private.0),
            auth_key: hex_encode(&keyring.auth_key().0),
        };
        let plain = Zeroizing::new(serde_json::to_vec(&secret).expect("slot secret serializes"));
        let sealed = seal_document(0, &kek, &keyring.repo_id, ObjectKind::KeySlot, &plain);
        let slot = KeySlot {
            version: SLOT_VERSION,
            kdf: kdf.into(),
            params,
            salt: hex_encode(&salt),
            created: Timestamp::now(),
            host: crate::sys::hostname(),
            username: crate::sys::username(),
            repository: hex_encode(&keyring.repo_id),
            public_key: hex_encode(&public),
            private_key: hex_encode(&sealed),
            label: None,
        };
        let secret = SlotSecret {
            private_key: private,
            auth_key: keyring.auth_key(),
        };
        Ok((slot, secret))
    }

    /// The slot's X25519 public key.
    pub fn public(&self) -> Result<[u8; 32], KeyError> {
        hex_decode(&self.public_key)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| KeyError::Malformed("public key".into()))
    }

    /// Open the slot's secret with `pass`; `WrongPassphrase` when
    /// authentication fails.
    pub fn unlock(&self, pass: &SecretString, expected_repo: &Id) -> Result<SlotSecret, KeyError> {
        if self.version != SLOT_VERSION || (self.kdf != "argon2id" && self.kdf != KDF_COMMAND_KEY) {
            return Err(KeyError::Malformed(format!(
                "unsupported slot version {} / kdf {} (this build reads version {SLOT_VERSION})",
                self.version, self.kdf
            )));
        }
        if self.repository != expected_repo.to_hex() {
            return Err(KeyError::OtherRepository {
                expected: expected_repo.to_hex(),
                found: self.repository.clone(),
            });
        }
        self.public()?;
        let salt = hex_decode(&self.salt).ok_or_else(|| KeyError::Malformed("salt".into()))?;
        let sealed = hex_decode(&self.private_key)
            .ok_or_else(|| KeyError::Malformed("private key hex".into()))?;
        let kek = derive_slot_kek(&self.kdf, pass, &salt, self.params)?;
        let plain = Zeroizing::new(
            open_document(&sealed, ObjectKind::KeySlot, &expected_repo.0, |e| {
                (e == 0).then_some(&kek)
            })
            .map_err(|_| KeyError::WrongPassphrase)?,
        );
        let f: SlotSecretFile =
            serde_json::from_slice(&plain).map_err(|e| KeyError::Malformed(e.to_string()))?;
        let secret = SlotSecret {
            private_key: key_from_hex(&f.private_key)?,
            auth_key: key_from_hex(&f.auth_key)?,
        };
        // The stored public key must be the private key's, or a keyring
        // sealed to it could not be opened with it.
        if crate::format::keyring::x25519_public(&secret.private_key)? != self.public()? {
            return Err(KeyError::Malformed("public key does not match".into()));
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn unlock_and_wrong_passphrase() {
        let ring = Keyring::generate();
        let pass = SecretString::from("correct horse");
        let (slot, created) = KeySlot::create(&ring, &pass, fast()).unwrap();
        let json = serde_json::to_string(&slot).unwrap();
        for secret in [&ring.id_key, &ring.current().key, &ring.auth_key()] {
            assert!(
                !json.contains(&hex_encode(&secret.0)),
                "keys never in clear"
            );
        }
        let slot: KeySlot = serde_json::from_str(&json).unwrap();
        let secret = slot.unlock(&pass, &ring.repo_id()).unwrap();
        assert_eq!(secret.auth_key, ring.auth_key());
        assert_eq!(secret.private_key, created.private_key);
        assert!(matches!(
            slot.unlock(&SecretString::from("nope"), &ring.repo_id()),
            Err(KeyError::WrongPassphrase)
        ));
        // A public key swapped for another is noticed.
        let mut other = slot.clone();
        other.public_key = hex_encode(&crate::format::keyring::x25519_pair().1);
        assert!(matches!(
            other.unlock(&pass, &ring.repo_id()),
            Err(KeyError::Malformed(_))
        ));
    }

    #[test]
    fn a_command_key_slot_opens_with_that_key_only() {
        let ring = Keyring::generate();
        let id = ring.repo_id();
        let key = SecretString::from("ab".repeat(32));
        let (slot, _) = KeySlot::create_command_key(&ring, &key).unwrap();
        assert_eq!(slot.kdf, KDF_COMMAND_KEY);
        let json = serde_json::to_vec(&slot).unwrap();
        let slot: KeySlot = serde_json::from_slice(&json).unwrap();
        let opened = slot.unlock(&SecretString::from(format!(" {}\n", "ab".repeat(32))), &id);
        assert_eq!(opened.unwrap().auth_key, ring.auth_key());
        for wrong in ["cd".repeat(32), "a passphrase".into(), "ab".repeat(31)] {
            assert!(matches!(
                slot.unlock(&SecretString::from(wrong), &id),
                Err(KeyError::WrongPassphrase)
            ));
        }
        assert!(parse_command_key("zz").is_none());
    }

    #[test]
    fn weak_params_are_refused() {
        let ring = Keyring::generate();
        let weak = KdfParams {
            memory_kib: 64,
            ..fast()
        };
        assert!(KeySlot::create(&ring, &SecretString::from("x"), weak).is_err());
    }

    #[test]
    fn epochs_are_added_and_retired() {
        let ring = Keyring::generate();
        let next = ring.with_new_epoch();
        assert_eq!(next.current_epoch, 2);
        assert!(next.epoch_key(1).is_some());
        assert_ne!(next.current().key, ring.current().key);
        let retired = next.without_epoch(1);
        assert!(retired.epoch_key(1).is_none());
        // The current epoch is never dropped.
        assert!(retired.without_epoch(2).epoch_key(2).is_some());
        assert_eq!(retired.auth_key(), ring.auth_key());
    }
}
