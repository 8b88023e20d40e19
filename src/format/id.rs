//! 32-byte identifiers: chunk ids (keyed BLAKE3 of plaintext) and object
//! names (BLAKE3 of stored bytes), shown as lowercase hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Hash of stored bytes: the name of packs, index files and snapshots,
    /// checkable by anyone without the key.
    pub fn of_stored(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    pub fn random() -> Id {
        let mut b = [0u8; 32];
        crate::format::crypto::fill_random(&mut b);
        Id(b)
    }

    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    /// The first 8 hex digits, as shown in listings.
    pub fn short(&self) -> String {
        hex_encode(&self.0[..4])
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid id {0:?}: expected 64 hex digits")]
pub struct ParseIdError(String);

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = hex_decode(s).ok_or_else(|| ParseIdError(s.to_string()))?;
        let arr: [u8; 32] = v.try_into().map_err(|_| ParseIdError(s.to_string()))?;
        Ok(Id(arr))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Lowercase hex, as ids and key material are written everywhere.
pub fn hex_encode(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Hex digits in either case; `None` for an odd length or any other
/// character.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE.decode(s.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(hex_decode(&hex_encode(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn id_parses_and_rejects() {
        let id = Id::of_stored(b"x");
        assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        assert!("abc".parse::<Id>().is_err());
        assert!("zz".repeat(32).parse::<Id>().is_err());
        assert_eq!(
            id.to_hex().to_uppercase().parse::<Id>().unwrap(),
            id,
            "upper case is accepted"
        );
    }

    #[test]
    fn hex_is_strict_but_takes_either_case() {
        assert_eq!(hex_encode(&[0xab, 0x01]), "ab01");
        assert_eq!(hex_decode("aB01"), Some(vec![0xab, 0x01]));
        assert_eq!(hex_decode(""), Some(vec![]));
        for bad in ["abc", "0g", " 00", "00 ", "+1", "-1"] {
            assert_eq!(hex_decode(bad), None, "{bad:?}");
        }
    }
}
