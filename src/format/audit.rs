//! The key-management audit trail: one entry per key operation, each its
//! own object `audit/<seq, 10 digits>`, sealed (kind 7) under a key derived
//! from the keyring's id key (which no rotation changes, so old entries
//! stay readable), and chained: every entry holds the BLAKE3 hash of the
//! previous entry's stored bytes. Someone with storage access only cannot
//! write an entry (no key), change one (authentication), reorder them (the
//! chain and the sequence number inside), or remove one from the middle
//! (a gap, or a broken chain). Removing the newest entries leaves a valid
//! shorter trail; that is what a local record of the head is for.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::crypto::{derive_key, open_document, seal_document, Key32, ObjectKind};
use crate::format::id::Id;

/// At most this many entries are read (a few per key operation).
pub const MAX_ENTRIES: usize = 1 << 20;
/// The largest audit object read.
pub const MAX_ENTRY_BYTES: u64 = 64 << 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, … in order; the object's name.
    pub seq: u64,
    /// Hex BLAKE3 of the previous entry's stored bytes; empty for seq 1.
    pub prev: String,
    pub time: Timestamp,
    pub user: String,
    pub host: String,
    /// `key add`, `key remove`, `key passwd`, …
    pub operation: String,
    /// The slot that opened the repository for it.
    pub slot: Option<String>,
    /// The data-key epoch current when it ran.
    pub epoch: u32,
    pub replicas: Vec<String>,
    /// `ok`, or what failed.
    pub outcome: String,
    /// What it acted on (a slot id, an epoch, …).
    pub detail: String,
}

/// The object name of entry `seq`.
pub fn entry_name(seq: u64) -> String {
    format!("{seq:010}")
}

/// The key entries are sealed with.
pub fn audit_key(id_key: &Key32, repo_id: &[u8; 32]) -> Key32 {
    derive_key(id_key, b"cairn audit", &[b"cairn audit v1", repo_id])
}

pub fn seal_entry(key: &Key32, repo_id: &[u8; 32], e: &AuditEntry) -> Vec<u8> {
    seal_document(
        0,
        key,
        repo_id,
        ObjectKind::Audit,
        &serde_json::to_vec(e).expect("entry serializes"),
    )
}

/// What is wrong with a trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    /// The object concerned (`audit/…`).
    pub object: String,
    pub message: String,
}

/// Open and check a trail given as `(name, stored bytes)` in any order:
/// the entries that open, in order, and every problem found (an entry that
/// does not open, a name that is not its sequence number, a gap, a broken
/// chain).
pub fn verify(
    key: &Key32,
    repo_id: &[u8; 32],
    mut objects: Vec<(String, Vec<u8>)>,
) -> (Vec<AuditEntry>, Vec<AuditProblem>) {
    objects.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut prev: Option<(u64, String)> = None;
    let problem = |name: &str, message: String| AuditProblem {
        object: format!("audit/{name}"),
        message,
    };
    for (name, data) in objects {
        let opened = open_document(&data, ObjectKind::Audit, repo_id, |e| {
            (e == 0).then_some(key)
        })
        .ok()
        .and_then(|p| serde_json::from_slice::<AuditEntry>(&p).ok());
        let Some(e) = opened else {
            problems.push(problem(
                &name,
                "does not open: altered or not written by cairn".into(),
            ));
            prev = None;
            continue;
        };
        if entry_name(e.seq) != name {
            problems.push(problem(
                &name,
                format!("holds entry {} under another name", e.seq),
            ));
        }
        let want_seq = prev.as_ref().map_or(1, |(s, _)| s + 1);
        let want_prev = prev.as_ref().map_or(String::new(), |(_, h)| h.clone());
        if e.seq != want_seq {
            problems.push(problem(
                &name,
                format!(
                    "entry {} follows entry {}: entries are missing",
                    e.seq,
                    want_seq - 1
                ),
            ));
        } else if e.prev != want_prev {
            problems.push(problem(
                &name,
                "does not chain to the entry before it: entries were replaced or reordered".into(),
            ));
        }
        prev = Some((e.seq, Id::of_stored(&data).to_hex()));
        entries.push(e);
    }
    (entries, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trail(n: u64, key: &Key32, repo: &[u8; 32]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut prev = String::new();
        for seq in 1..=n {
            let e = AuditEntry {
                seq,
                prev: prev.clone(),
                time: Timestamp::from_second(1_700_000_000 + seq as i64).unwrap(),
                user: "ann".into(),
                host: "h".into(),
                operation: "key add".into(),
                slot: Some("ab".into()),
                epoch: 1,
                replicas: vec!["a".into()],
                outcome: "ok".into(),
                detail: format!("slot {seq}"),
            };
            let data = seal_entry(key, repo, &e);
            prev = Id::of_stored(&data).to_hex();
            out.push((entry_name(seq), data));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any one removal (but of the newest), byte flip or swap of two
        /// entries is reported; an intact trail has no problems.
        #[test]
        fn tampering_is_detected(n in 2u64..8, pick in any::<usize>(), other in any::<usize>(), byte in any::<usize>(), what in 0u8..3) {
            let key = Key32([5; 32]);
            let repo = [9u8; 32];
            let t = trail(n, &key, &repo);
            let (entries, problems) = verify(&key, &repo, t.clone());
            prop_assert_eq!(entries.len() as u64, n);
            prop_assert!(problems.is_empty());
            let mut bad = t.clone();
            let i = pick % bad.len();
            match what {
                0 => {
                    // Removing the newest is undetectable here by design.
                    let i = i % (bad.len() - 1);
                    bad.remove(i);
                }
                1 => {
                    let j = byte % bad[i].1.len();
                    bad[i].1[j] ^= 1;
                }
                _ => {
                    let j = other % bad.len();
                    prop_assume!(i != j);
                    let (a, b) = (bad[i].1.clone(), bad[j].1.clone());
                    bad[i].1 = b;
                    bad[j].1 = a;
                }
            }
            let (_, problems) = verify(&key, &repo, bad);
            prop_assert!(!problems.is_empty());
        }

        #[test]
        fn arbitrary_objects_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = Key32([5; 32]);
            let (_, problems) = verify(&key, &[9u8; 32], vec![("0000000001".into(), data)]);
            prop_assert_eq!(problems.len(), 1);
        }
    }

    #[test]
    fn another_key_opens_nothing() {
        let key = Key32([5; 32]);
        let repo = [9u8; 32];
        let (_, problems) = verify(&Key32([6; 32]), &repo, trail(3, &key, &repo));
        assert_eq!(problems.len(), 3);
    }
}
