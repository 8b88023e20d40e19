//! The keyring and the key slots that wrap it.
//!
//! One keyring per repository holds the repository id, the chunk-id key, the
//! chunker key and every data-key epoch. Each key slot (`keys/<id>`) holds
//! the keyring sealed under a key-encryption key derived with Argon2id from
//! one passphrase, so adding or changing a passphrase only re-wraps the
//! keyring. Objects record the epoch they were written under, so a later
//! data-key rotation adds an epoch without a format change.

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::format::crypto::{open_document, seal_document, CryptoError, Key32, ObjectKind};
use crate::format::id::{hex_decode, hex_encode, Id};

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

    fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let f = KeyringFile {
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

    pub fn from_json(data: &[u8]) -> Result<Keyring, KeyError> {
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
        Ok(Keyring {
            repo_id: repo,
            id_key: key_from_hex(&f.id_key)?,
            chunker_key: key_from_hex(&f.chunker_key)?,
            epochs,
            current_epoch: f.current_epoch,
        })
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

/// A key slot as stored in `keys/<id>` (public JSON; the keyring inside is sealed).
#[derive(Serialize, Deserialize)]
pub struct KeySlot {
    pub version: u32,
    pub kdf: String,
    pub params: KdfParams,
    pub salt: String,
    pub created: Timestamp,
    pub host: String,
    pub username: String,
    pub repository: String,
    pub keyring: String,
    /// Who or what the slot is for ("ann laptop", "nightly job").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
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
    /// Wrap `keyring` under `pass`.
    pub fn wrap(
        keyring: &Keyring,
        pass: &SecretString,
        params: KdfParams,
    ) -> Result<KeySlot, KeyError> {
        Self::wrap_with("argon2id", keyring, pass, params)
    }

    /// Wrap `keyring` under a 32-byte key printed by a key-management
    /// command (`key`: its 64 hex digits).
    pub fn wrap_command_key(keyring: &Keyring, key: &SecretString) -> Result<KeySlot, KeyError> {
        let cheap = KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        };
        Self::wrap_with(KDF_COMMAND_KEY, keyring, key, cheap)
    }

    fn wrap_with(
        kdf: &str,
        keyring: &Keyring,
        pass: &SecretString,
        params: KdfParams,
    ) -> Result<KeySlot, KeyError> {
        let mut salt = [0u8; 32];
        crate::format::crypto::fill_random(&mut salt);
        let kek = derive_slot_kek(kdf, pass, &salt, params)?;
        let sealed = seal_document(
            0,
            &kek,
            &keyring.repo_id,
            ObjectKind::KeySlot,
            &keyring.to_json(),
        );
        Ok(KeySlot {
            version: 1,
            kdf: kdf.into(),
            params,
            salt: hex_encode(&salt),
            created: Timestamp::now(),
            host: crate::sys::hostname(),
            username: crate::sys::username(),
            repository: hex_encode(&keyring.repo_id),
            keyring: hex_encode(&sealed),
            label: None,
        })
    }

    /// Unwrap with `pass`; `WrongPassphrase` when authentication fails.
    pub fn unwrap_keyring(
        &self,
        pass: &SecretString,
        expected_repo: &Id,
    ) -> Result<Keyring, KeyError> {
        if self.version != 1 || (self.kdf != "argon2id" && self.kdf != KDF_COMMAND_KEY) {
            return Err(KeyError::Malformed(format!(
                "unsupported slot version {} / kdf {}",
                self.version, self.kdf
            )));
        }
        if self.repository != expected_repo.to_hex() {
            return Err(KeyError::OtherRepository {
                expected: expected_repo.to_hex(),
                found: self.repository.clone(),
            });
        }
        let salt = hex_decode(&self.salt).ok_or_else(|| KeyError::Malformed("salt".into()))?;
        let sealed =
            hex_decode(&self.keyring).ok_or_else(|| KeyError::Malformed("keyring hex".into()))?;
        let kek = derive_slot_kek(&self.kdf, pass, &salt, self.params)?;
        let plain = Zeroizing::new(
            open_document(&sealed, ObjectKind::KeySlot, &expected_repo.0, |e| {
                (e == 0).then_some(&kek)
            })
            .map_err(|_| KeyError::WrongPassphrase)?,
        );
        let ring = Keyring::from_json(&plain)?;
        if ring.repo_id != expected_repo.0 {
            return Err(KeyError::Malformed("keyring repository id mismatch".into()));
        }
        Ok(ring)
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
    fn wrap_unwrap_and_wrong_passphrase() {
        let ring = Keyring::generate();
        let pass = SecretString::from("correct horse");
        let slot = KeySlot::wrap(&ring, &pass, fast()).unwrap();
        let json = serde_json::to_string(&slot).unwrap();
        assert!(
            !json.contains(&hex_encode(&ring.id_key.0)),
            "keys never in clear"
        );
        let slot: KeySlot = serde_json::from_str(&json).unwrap();
        let back = slot.unwrap_keyring(&pass, &ring.repo_id()).unwrap();
        assert_eq!(back.id_key, ring.id_key);
        assert_eq!(back.current().key, ring.current().key);
        assert!(matches!(
            slot.unwrap_keyring(&SecretString::from("nope"), &ring.repo_id()),
            Err(KeyError::WrongPassphrase)
        ));
    }

    #[test]
    fn a_command_key_slot_opens_with_that_key_only() {
        let ring = Keyring::generate();
        let id = ring.repo_id();
        let key = SecretString::from("ab".repeat(32));
        let slot = KeySlot::wrap_command_key(&ring, &key).unwrap();
        assert_eq!(slot.kdf, KDF_COMMAND_KEY);
        let json = serde_json::to_vec(&slot).unwrap();
        let slot: KeySlot = serde_json::from_slice(&json).unwrap();
        let opened =
            slot.unwrap_keyring(&SecretString::from(format!(" {}\n", "ab".repeat(32))), &id);
        assert_eq!(opened.unwrap().repo_id, ring.repo_id);
        for wrong in ["cd".repeat(32), "a passphrase".into(), "ab".repeat(31)] {
            assert!(matches!(
                slot.unwrap_keyring(&SecretString::from(wrong), &id),
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
        assert!(KeySlot::wrap(&ring, &SecretString::from("x"), weak).is_err());
    }
}
