//! The repository's public `config` object (plain JSON, readable without
//! the key): the format version, the repository id and the parameters every
//! writer must use, authenticated by a MAC keyed from the keyring.
//!
//! The config is read before the keyring is open (it names the repository
//! id the key slots must match), so its parameters are range-checked at
//! once; its MAC is checked as soon as the keyring is unwrapped, before any
//! parameter is used. Someone who can only write to the storage cannot
//! change a parameter, nor put another repository's config in its place.

use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use aws_lc_rs::hmac;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::format::chunker::ChunkerParams;
use crate::format::id::{hex_decode, hex_encode, Id};
use crate::format::keys::Keyring;

/// The only format version this build reads and writes. Version 1 had no
/// config MAC, version 2 sealed the whole keyring into each key slot; both
/// are refused (docs/format.md: no migration, no users yet).
pub const VERSION: u32 = 3;

/// The public repository config (`config`, plain JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    pub id: Id,
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    /// Target size of data packs in bytes.
    pub pack_size: u32,
    pub created: Timestamp,
    /// HMAC-SHA256 (hex) of every other field, see [`Config::seal`].
    #[serde(default)]
    pub mac: String,
}

/// Why a config's MAC does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigAuthError {
    #[error("it carries no MAC")]
    Missing,
    #[error(
        "its MAC does not match: it was modified, or belongs to another repository \
         (restore the file from a healthy replica)"
    )]
    Mismatch,
    #[error("it names repository {found}, but the keyring is that of {expected}")]
    OtherRepository { expected: String, found: String },
}

impl Config {
    /// Range-check the parameters a writer takes from the config, so a
    /// hand-edited or planted config cannot make backups leak chunk sizes
    /// (a tiny pack size) or exhaust memory (a huge one).
    pub fn validate(&self) -> Result<(), String> {
        self.chunker.validate().map_err(|e| e.to_string())?;
        check_compression_level(self.compression_level)?;
        check_pack_size(self.pack_size)
    }

    /// Set the MAC for the current fields.
    pub fn seal(&mut self, keyring: &Keyring) {
        self.mac = hex_encode(self.tag(keyring).as_ref());
    }

    /// Check that the keyring is this repository's and that the MAC covers
    /// the fields as they are.
    pub fn verify(&self, keyring: &Keyring) -> Result<(), ConfigAuthError> {
        if self.id != keyring.repo_id() {
            return Err(ConfigAuthError::OtherRepository {
                expected: keyring.repo_id().to_hex(),
                found: self.id.to_hex(),
            });
        }
        if self.mac.is_empty() {
            return Err(ConfigAuthError::Missing);
        }
        let mac = hex_decode(&self.mac).ok_or(ConfigAuthError::Mismatch)?;
        hmac::verify(&mac_key(keyring), &self.signed_bytes(), &mac)
            .map_err(|_| ConfigAuthError::Mismatch)
    }

    fn tag(&self, keyring: &Keyring) -> hmac::Tag {
        hmac::sign(&mac_key(keyring), &self.signed_bytes())
    }

    /// What the MAC covers: a domain label and the JSON of every field but
    /// the MAC itself. Serialising the struct (not listing fields by hand)
    /// means a field added later is covered without anyone remembering to.
    fn signed_bytes(&self) -> Vec<u8> {
        let body = Config {
            mac: String::new(),
            ..self.clone()
        };
        let mut out = b"cairn config mac v2\0".to_vec();
        out.extend(serde_json::to_vec(&body).expect("config serializes"));
        out
    }
}

/// The MAC key: HKDF-SHA256 from the id key, which (unlike the data keys)
/// no key rotation changes, so rotating keys never rewrites the config.
fn mac_key(keyring: &Keyring) -> hmac::Key {
    let mut okm = Zeroizing::new([0u8; 32]);
    Salt::new(HKDF_SHA256, b"cairn config")
        .extract(&keyring.id_key.0)
        .expand(
            &[b"cairn config mac v2".as_slice(), &keyring.repo_id],
            Len32,
        )
        .and_then(|o| o.fill(&mut okm[..]))
        .expect("HKDF output length is valid");
    hmac::Key::new(hmac::HMAC_SHA256, &okm[..])
}

struct Len32;
impl aws_lc_rs::hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

pub fn check_compression_level(level: i32) -> Result<(), String> {
    if (0..=22).contains(&level) {
        Ok(())
    } else {
        Err(format!("compression level {level} is not in 0..=22"))
    }
}

pub fn check_pack_size(size: u32) -> Result<(), String> {
    if (1 << 20..=1 << 30).contains(&size) {
        Ok(())
    } else {
        Err(format!("pack size {size} is not in 1 MiB..=1 GiB"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(ring: &Keyring) -> Config {
        let mut c = Config {
            version: VERSION,
            id: ring.repo_id(),
            chunker: ChunkerParams::default(),
            compression_level: 3,
            pack_size: 16 << 20,
            created: Timestamp::now(),
            mac: String::new(),
        };
        c.seal(ring);
        c
    }

    /// The stored JSON with one field replaced, parsed back.
    fn edited(c: &Config, path: &[&str], value: serde_json::Value) -> Config {
        let mut v = serde_json::to_value(c).unwrap();
        let mut at = &mut v;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = value;
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_sealed_config_verifies_after_a_round_trip() {
        let ring = Keyring::generate();
        let c = sealed(&ring);
        let back: Config = serde_json::from_slice(&serde_json::to_vec_pretty(&c).unwrap()).unwrap();
        assert_eq!(back.verify(&ring), Ok(()));
    }

    #[test]
    fn every_field_is_covered() {
        let ring = Keyring::generate();
        let c = sealed(&ring);
        let v = serde_json::to_value(&c).unwrap();
        let mut edits: Vec<(Vec<&str>, serde_json::Value)> = vec![
            (vec!["version"], 4.into()),
            (vec!["chunker", "min_size"], (c.chunker.min_size + 1).into()),
            (vec!["chunker", "avg_size"], (c.chunker.avg_size * 2).into()),
            (vec!["chunker", "max_size"], (c.chunker.max_size + 1).into()),
            (vec!["compression_level"], 19.into()),
            (vec!["pack_size"], (32u32 << 20).into()),
            (vec!["created"], "2020-01-01T00:00:00Z".into()),
        ];
        // Every field of the stored JSON (but the MAC and the id, whose
        // change is its own error) is edited above: a field added later
        // fails this test until it is.
        let mut covered: Vec<String> = edits.iter().map(|(p, _)| p.join(".")).collect();
        covered.extend(["mac".into(), "id".into()]);
        for (k, val) in v.as_object().unwrap() {
            match val.as_object() {
                Some(inner) => {
                    for k2 in inner.keys() {
                        assert!(
                            covered.contains(&format!("{k}.{k2}")),
                            "{k}.{k2} not edited"
                        );
                    }
                }
                None => assert!(covered.contains(k), "{k} not edited"),
            }
        }
        for (path, value) in edits.drain(..) {
            let bad = edited(&c, &path, value);
            assert_ne!(bad, c, "{path:?}");
            assert_eq!(
                bad.verify(&ring),
                Err(ConfigAuthError::Mismatch),
                "{path:?}"
            );
        }
        let other = Keyring::generate();
        let bad = edited(&c, &["id"], other.repo_id().to_hex().into());
        assert!(matches!(
            bad.verify(&ring),
            Err(ConfigAuthError::OtherRepository { .. })
        ));
    }

    #[test]
    fn a_missing_or_foreign_mac_is_refused() {
        let ring = Keyring::generate();
        let mut c = sealed(&ring);
        c.mac.clear();
        assert_eq!(c.verify(&ring), Err(ConfigAuthError::Missing));
        c.mac = "zz".into();
        assert_eq!(c.verify(&ring), Err(ConfigAuthError::Mismatch));
        // Another repository's config, even with its own valid MAC.
        let other = Keyring::generate();
        let theirs = sealed(&other);
        assert!(matches!(
            theirs.verify(&ring),
            Err(ConfigAuthError::OtherRepository { .. })
        ));
        // The same id with another keyring's MAC (a keyring forged for the id).
        let mut forged = Keyring::generate();
        forged.repo_id = ring.repo_id;
        let mut f = c.clone();
        f.seal(&forged);
        assert_eq!(f.verify(&ring), Err(ConfigAuthError::Mismatch));
    }
}
