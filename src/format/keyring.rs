//! Keyring generations: the keyring sealed to the public keys of the key
//! slots (pure, no I/O).
//!
//! Generation `g` is stored as `keyring/<g, 10 digits>`. It holds the
//! keyring JSON sealed under a random generation key `K_g`, and for each
//! recipient slot `K_g` wrapped under `W_s = HKDF(X25519(e, P_s), salt =
//! E ‖ P_s, info = "cairn keyring v3" ‖ repository ‖ g ‖ slot id)`, with
//! one ephemeral pair `(e, E)` per generation. Wrapping needs only the
//! slots' public keys, so `key add`, `key remove` and `key rotate` never
//! need another slot's secret; a slot left out of a generation cannot open
//! it. The whole object is authenticated with HMAC-SHA256 under the
//! keyring's authentication key, which each slot keeps sealed beside its
//! private key: storage access alone cannot plant a generation.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin};
use aws_lc_rs::hmac;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::format::crypto::{derive_key, open_document, seal_document, Key32, ObjectKind};
use crate::format::id::{hex_decode, hex_encode, Id};
use crate::format::keys::{KeyError, Keyring, SlotSecret};

/// The largest keyring generation object read (a few hundred bytes per
/// slot and per epoch).
pub const MAX_GENERATION_BYTES: u64 = 1 << 20;
/// Most recipients one generation may name.
pub const MAX_RECIPIENTS: usize = 1024;

/// The object name of generation `g`: sorts by number.
pub fn generation_name(g: u64) -> String {
    format!("{g:010}")
}

/// The generation an object name stands for, if it is one.
pub fn parse_generation_name(name: &str) -> Option<u64> {
    (name.len() == 10 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// A fresh X25519 pair: (private, public).
pub fn x25519_pair() -> (Key32, [u8; 32]) {
    let private = PrivateKey::generate(&X25519).expect("X25519 key generation");
    let bytes: Curve25519SeedBin = private.as_be_bytes().expect("X25519 private key bytes");
    let mut k = Key32([0; 32]);
    k.0.copy_from_slice(bytes.as_ref());
    let public = x25519_public(&k).expect("a generated key is valid");
    (k, public)
}

/// The public half of an X25519 private key.
pub fn x25519_public(private: &Key32) -> Result<[u8; 32], KeyError> {
    let k = PrivateKey::from_private_key(&X25519, &private.0)
        .map_err(|_| KeyError::Malformed("X25519 private key".into()))?;
    let public = k
        .compute_public_key()
        .map_err(|_| KeyError::Malformed("X25519 private key".into()))?;
    public
        .as_ref()
        .try_into()
        .map_err(|_| KeyError::Malformed("X25519 public key".into()))
}

fn agree(private: &Key32, public: &[u8; 32]) -> Result<Key32, KeyError> {
    let k = PrivateKey::from_private_key(&X25519, &private.0)
        .map_err(|_| KeyError::Malformed("X25519 private key".into()))?;
    agreement::agree(
        &k,
        UnparsedPublicKey::new(&X25519, public),
        KeyError::Malformed("X25519 public key".into()),
        |secret| {
            let mut out = Key32([0; 32]);
            out.0.copy_from_slice(secret);
            Ok(out)
        },
    )
}

/// One slot a generation is sealed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub slot: String,
    /// `K_g` sealed under the slot's wrapping key, hex.
    pub wrapped: String,
}

/// A keyring generation as stored in `keyring/<g>` (public JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Generation {
    pub version: u32,
    pub repository: String,
    pub generation: u64,
    pub created: Timestamp,
    /// The ephemeral X25519 public key `E`, hex.
    pub ephemeral: String,
    pub recipients: Vec<Recipient>,
    /// The keyring sealed under `K_g`, hex.
    pub keyring: String,
    /// HMAC-SHA256 of the object with this field empty, hex.
    pub mac: String,
}

fn wrapping_key(
    shared: &Key32,
    ephemeral: &[u8; 32],
    public: &[u8; 32],
    repo_id: &[u8; 32],
    g: u64,
    slot: &str,
) -> Key32 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(public);
    derive_key(
        shared,
        &salt,
        &[
            b"cairn keyring v3",
            repo_id,
            &g.to_le_bytes(),
            slot.as_bytes(),
        ],
    )
}

fn mac_key(auth: &Key32) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, &auth.0)
}

impl Generation {
    /// Seal `keyring` as generation `g` to `recipients` (slot id, public key).
    pub fn seal(keyring: &Keyring, g: u64, recipients: &[(String, [u8; 32])]) -> Generation {
        let k_g = Key32::random();
        let (e, e_pub) = x25519_pair();
        let repo = keyring.repo_id;
        let wrapped = recipients
            .iter()
            .map(|(slot, public)| {
                let shared = agree(&e, public).expect("our own ephemeral key is valid");
                let w = wrapping_key(&shared, &e_pub, public, &repo, g, slot);
                Recipient {
                    slot: slot.clone(),
                    wrapped: hex_encode(&seal_document(0, &w, &repo, ObjectKind::Keyring, &k_g.0)),
                }
            })
            .collect();
        let plain = keyring.to_json_generation(g);
        let mut out = Generation {
            version: crate::format::keys::SLOT_VERSION,
            repository: hex_encode(&repo),
            generation: g,
            created: Timestamp::now(),
            ephemeral: hex_encode(&e_pub),
            recipients: wrapped,
            keyring: hex_encode(&seal_document(0, &k_g, &repo, ObjectKind::Keyring, &plain)),
            mac: String::new(),
        };
        out.mac =
            hex_encode(hmac::sign(&mac_key(&keyring.auth_key()), &out.signed_bytes()).as_ref());
        out
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.mac.clear();
        serde_json::to_vec(&unsigned).expect("generation serializes")
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("generation serializes")
    }

    /// Parse an object from `keyring/`, bounding what it may hold.
    pub fn parse(data: &[u8]) -> Result<Generation, KeyError> {
        if data.len() as u64 > MAX_GENERATION_BYTES {
            return Err(KeyError::Malformed("keyring generation too large".into()));
        }
        let g: Generation =
            serde_json::from_slice(data).map_err(|e| KeyError::Malformed(e.to_string()))?;
        if g.recipients.len() > MAX_RECIPIENTS {
            return Err(KeyError::Malformed("too many recipients".into()));
        }
        Ok(g)
    }

    /// Whether `slot` is among the recipients.
    pub fn names(&self, slot: &str) -> bool {
        self.recipients.iter().any(|r| r.slot == slot)
    }

    /// The recipients' slot ids.
    pub fn slots(&self) -> Vec<String> {
        self.recipients.iter().map(|r| r.slot.clone()).collect()
    }

    /// Open with the secret of `slot` (whose public key is `public`):
    /// checks the MAC with the slot's authentication key, unwraps `K_g`
    /// and the keyring, and checks that the keyring is the repository's
    /// and carries this generation's number.
    pub fn open(
        &self,
        slot: &str,
        public: &[u8; 32],
        secret: &SlotSecret,
        expected_repo: &Id,
    ) -> Result<Keyring, KeyError> {
        let bad = |what: &str| {
            KeyError::Malformed(format!("keyring generation {}: {what}", self.generation))
        };
        if self.version != crate::format::keys::SLOT_VERSION {
            return Err(bad("unsupported version"));
        }
        if self.repository != expected_repo.to_hex() {
            return Err(bad("belongs to another repository"));
        }
        let mac = hex_decode(&self.mac).ok_or_else(|| bad("mac"))?;
        hmac::verify(&mac_key(&secret.auth_key), &self.signed_bytes(), &mac)
            .map_err(|_| bad("authentication failed (the object was altered or planted)"))?;
        let r = self
            .recipients
            .iter()
            .find(|r| r.slot == slot)
            .ok_or_else(|| KeyError::SlotRevoked(slot.get(..8).unwrap_or(slot).to_string()))?;
        let e_pub: [u8; 32] = hex_decode(&self.ephemeral)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("ephemeral key"))?;
        let shared = agree(&secret.private_key, &e_pub)?;
        let w = wrapping_key(
            &shared,
            &e_pub,
            public,
            &expected_repo.0,
            self.generation,
            slot,
        );
        let wrapped = hex_decode(&r.wrapped).ok_or_else(|| bad("wrapped key"))?;
        let k_g = Zeroizing::new(
            open_document(&wrapped, ObjectKind::Keyring, &expected_repo.0, |e| {
                (e == 0).then_some(&w)
            })
            .map_err(|_| bad("the generation key does not open with this slot"))?,
        );
        let k_g = Key32(
            k_g.as_slice()
                .try_into()
                .map_err(|_| bad("generation key length"))?,
        );
        let sealed = hex_decode(&self.keyring).ok_or_else(|| bad("keyring hex"))?;
        let plain = Zeroizing::new(
            open_document(&sealed, ObjectKind::Keyring, &expected_repo.0, |e| {
                (e == 0).then_some(&k_g)
            })
            .map_err(|_| bad("the keyring does not open"))?,
        );
        let (ring, g) = Keyring::from_json(&plain)?;
        if ring.repo_id != expected_repo.0 || g != self.generation {
            return Err(bad("keyring does not match the object"));
        }
        if ring.auth_key() != secret.auth_key {
            return Err(bad("keyring does not match the slot"));
        }
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::{KdfParams, KeySlot};
    use secrecy::SecretString;

    fn fast() -> KdfParams {
        KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn slot(ring: &Keyring, pass: &str) -> (String, KeySlot, SlotSecret) {
        let (s, _) = KeySlot::create(ring, &SecretString::from(pass), fast()).unwrap();
        let id = Id::of_stored(&serde_json::to_vec(&s).unwrap()).to_hex();
        let secret = s
            .unlock(&SecretString::from(pass), &ring.repo_id())
            .unwrap();
        (id, s, secret)
    }

    #[test]
    fn every_recipient_opens_it_and_no_one_else() {
        let ring = Keyring::generate();
        let (a, sa, ka) = slot(&ring, "alpha");
        let (b, sb, kb) = slot(&ring, "beta");
        let (c, sc, kc) = slot(&ring, "gamma");
        let g = Generation::seal(
            &ring,
            7,
            &[
                (a.clone(), sa.public().unwrap()),
                (b.clone(), sb.public().unwrap()),
            ],
        );
        let g = Generation::parse(&g.to_bytes()).unwrap();
        for (id, s, k) in [(&a, &sa, &ka), (&b, &sb, &kb)] {
            let opened = g
                .open(id, &s.public().unwrap(), k, &ring.repo_id())
                .unwrap();
            assert_eq!(opened.current().key, ring.current().key);
            assert_eq!(opened.id_key, ring.id_key);
        }
        assert!(matches!(
            g.open(&c, &sc.public().unwrap(), &kc, &ring.repo_id()),
            Err(KeyError::SlotRevoked(_))
        ));
        // A slot cannot use another's entry.
        assert!(g
            .open(&a, &sb.public().unwrap(), &kb, &ring.repo_id())
            .is_err());
        let json = String::from_utf8(g.to_bytes()).unwrap();
        assert!(!json.contains(&hex_encode(&ring.current().key.0)));
    }

    #[test]
    fn a_planted_or_altered_generation_is_refused() {
        let ring = Keyring::generate();
        let (a, sa, ka) = slot(&ring, "alpha");
        let public = sa.public().unwrap();
        // Someone with write access but without the keyring seals a keyring
        // of their own to the (public) slot key.
        let mut theirs = Keyring::generate();
        theirs.repo_id = ring.repo_id;
        let planted = Generation::seal(&theirs, 9, &[(a.clone(), public)]);
        let Err(err) = planted.open(&a, &public, &ka, &ring.repo_id()) else {
            panic!("a planted generation opened")
        };
        assert!(err.to_string().contains("authentication failed"), "{err}");
        // A renumbered generation fails its MAC.
        let mut g = Generation::seal(&ring, 3, &[(a.clone(), public)]);
        g.generation = 4;
        assert!(g.open(&a, &public, &ka, &ring.repo_id()).is_err());
        assert_eq!(parse_generation_name(&generation_name(42)), Some(42));
        assert_eq!(parse_generation_name("42"), None);
    }
}
