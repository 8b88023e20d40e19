//! Prune's marks: the packs one replica's last prune found unreferenced,
//! each with the time it was first found so. A later prune deletes a
//! marked pack only once it is still unreferenced and its mark is older
//! than the grace period. Stored sealed (kind `Marker`) as
//! `markers/prune`, the JSON `{"version": 1, "packs": {"<id>": "<time>"}}`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::id::Id;

/// At most this many marks are read: more packs than a repository of
/// petabytes holds; a larger document was not written by cairn.
pub const MAX_MARKS: usize = 1 << 22;

/// The name of the one marker object of a replica.
pub const MARKER_NAME: &str = "prune";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    pub version: u32,
    /// Pack → when a prune first found it unreferenced.
    pub packs: BTreeMap<Id, Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum MarksError {
    #[error("prune marks are malformed: {0}")]
    Malformed(String),
    #[error("prune marks have version {0}; this cairn reads version 1")]
    Version(u32),
    #[error("prune marks list {0} packs, over the limit of {MAX_MARKS}")]
    TooMany(usize),
}

impl Marks {
    pub fn new() -> Marks {
        Marks {
            version: 1,
            packs: BTreeMap::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("marks serialize")
    }

    pub fn decode(data: &[u8]) -> Result<Marks, MarksError> {
        let m: Marks =
            serde_json::from_slice(data).map_err(|e| MarksError::Malformed(e.to_string()))?;
        if m.version != 1 {
            return Err(MarksError::Version(m.version));
        }
        if m.packs.len() > MAX_MARKS {
            return Err(MarksError::TooMany(m.packs.len()));
        }
        Ok(m)
    }

    /// Whether `pack`'s mark is at least `grace` old at `now`.
    pub fn is_due(&self, pack: &Id, now: Timestamp, grace: std::time::Duration) -> bool {
        self.packs.get(pack).is_some_and(|since| {
            let age = now.duration_since(*since);
            age >= jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn marks_round_trip(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..20), secs in 0i64..4_000_000_000) {
            let mut m = Marks::new();
            for id in ids {
                m.packs.insert(Id(id), Timestamp::from_second(secs).unwrap());
            }
            prop_assert_eq!(Marks::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Marks::decode(&data);
        }
    }

    #[test]
    fn due_after_grace() {
        let mut m = Marks::new();
        let t = Timestamp::from_second(1_000_000).unwrap();
        m.packs.insert(Id([1; 32]), t);
        let h = std::time::Duration::from_secs(3600);
        assert!(!m.is_due(&Id([1; 32]), t, h));
        assert!(m.is_due(&Id([1; 32]), t, std::time::Duration::ZERO));
        assert!(m.is_due(&Id([1; 32]), Timestamp::from_second(1_003_600).unwrap(), h));
        assert!(!m.is_due(&Id([2; 32]), t, std::time::Duration::ZERO));
        assert!(Marks::decode(br#"{"version":2,"packs":{}}"#).is_err());
    }
}
