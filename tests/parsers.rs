//! No-panic properties of every parser of stored or external bytes: the
//! proptest counterparts of the fuzz targets in `fuzz/` (docs/fuzzing.md).
//! Arbitrary bytes, and mutations of valid encodings, give a value or an
//! error, never a panic; a declared size over the bound fails fast, before
//! anything of that size is allocated. `write_fuzz_seeds` (ignored)
//! regenerates the encoder-made part of the seed corpus.

use std::time::{Duration, Instant};

use cairn::backends::fuzzing as bf;
use cairn::format::codec::{self, Codec};
use cairn::format::config::Config;
use cairn::format::crypto::{Header, Key32, ObjectKind};
use cairn::format::id::Id;
use cairn::format::index::{self, IndexPack};
use cairn::format::keyring::Generation;
use cairn::format::keys::{KeySlot, Keyring, SlotSecret};
use cairn::format::pack::{read_footer, BlobKind, PackBuilder, PackEntry};
use cairn::format::snapshot::Snapshot;
use cairn::format::tree::Tree;
use proptest::prelude::*;

const REPO: [u8; 32] = [7; 32];

fn index_bytes() -> Vec<u8> {
    let blobs = (0..3)
        .map(|i| PackEntry {
            id: Id([i; 32]),
            kind: BlobKind::Data,
            codec: Codec::Zstd,
            seq: i as u32,
            offset: 42 + 100 * i as u32,
            stored_len: 100,
            raw_len: 300,
        })
        .collect();
    index::encode(&[IndexPack {
        id: Id([9; 32]),
        size: 1000,
        header: Header::new(ObjectKind::Pack, 1),
        blobs,
    }])
}

fn pack_bytes() -> Vec<u8> {
    let mut b = PackBuilder::new(1, &Key32([3; 32]), &REPO, 4096);
    b.add(Id([1; 32]), BlobKind::Data, Codec::Raw, 5, b"hello");
    b.add(Id([2; 32]), BlobKind::Tree, Codec::Raw, 2, b"{}");
    b.finish().data
}

const TREE: &str = r#"{"nodes":[{"name":"a.txt","type":"file","mode":420,"uid":1000,"gid":1000,"size":5,"mtime":1,"ctime":1,"content":["0000000000000000000000000000000000000000000000000000000000000000"],"subtree":[]},{"name":[255,1],"type":"symlink","mode":511,"uid":0,"gid":0,"size":0,"mtime":0,"ctime":0,"target":"a.txt","content":[],"subtree":[]}]}"#;
const SNAPSHOT: &str = r#"{"time":"2024-01-01T00:00:00Z","host":"h","username":"u","paths":["/home"],"tags":["t"],"parent":null,"tree":["0101010101010101010101010101010101010101010101010101010101010101"],"partial":false,"errors":[],"excludes":[],"program":"cairn 0.1.0","summary":{"files_new":1,"files_changed":0,"files_unmodified":0,"dirs":1,"other_entries":0,"total_bytes":5,"bytes_read":5,"blobs_new":1,"bytes_new":5,"bytes_stored":40,"errors":0,"duration_secs":0.5}}"#;
const CONFIG: &str = r#"{"version":1,"id":"0101010101010101010101010101010101010101010101010101010101010101","chunker":{"min_size":524288,"avg_size":1048576,"max_size":8388608},"compression_level":3,"pack_size":16777216,"created":"2024-01-01T00:00:00Z"}"#;
const KEYRING: &str = r#"{"version":1,"repository":"0707070707070707070707070707070707070707070707070707070707070707","id_key":"0101010101010101010101010101010101010101010101010101010101010101","chunker_key":"0202020202020202020202020202020202020202020202020202020202020202","epochs":[{"id":1,"key":"0303030303030303030303030303030303030303030303030303030303030303","created":"2024-01-01T00:00:00Z"}],"current_epoch":1}"#;
// Memory far over the cap: the unwrap must refuse before running Argon2.
const SLOT: &str = r#"{"version":3,"kdf":"argon2id","params":{"memory_kib":4294967295,"iterations":4294967295,"parallelism":255},"salt":"00112233","created":"2024-01-01T00:00:00Z","host":"h","username":"u","repository":"0707070707070707070707070707070707070707070707070707070707070707","public_key":"0909090909090909090909090909090909090909090909090909090909090909","private_key":"abcdef"}"#;
const GENERATION: &str = r#"{"version":3,"repository":"0707070707070707070707070707070707070707070707070707070707070707","generation":2,"created":"2024-01-01T00:00:00Z","ephemeral":"0909090909090909090909090909090909090909090909090909090909090909","recipients":[{"slot":"ab","wrapped":"abcdef"}],"keyring":"abcdef","mac":"00"}"#;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..512)
}

/// `data` with a few bytes overwritten at positions picked by `edits`.
fn mutate(mut data: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    for &(pos, b) in edits {
        if !data.is_empty() {
            let i = pos % data.len();
            data[i] = b;
        }
    }
    data
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)
}

proptest! {
    #[test]
    fn index_decode_never_panics(data in bytes(), e in edits()) {
        let _ = index::decode(&data);
        let m = mutate(index_bytes(), &e);
        if let Ok(p) = index::decode(&m) {
            prop_assert_eq!(index::encode(&p), m);
        }
    }

    #[test]
    fn pack_footer_never_panics(data in bytes(), e in edits()) {
        let k = Key32([3; 32]);
        let _ = read_footer(&data, &REPO, |_| Some(k.clone()));
        let _ = read_footer(&mutate(pack_bytes(), &e), &REPO, |_| Some(k.clone()));
    }

    #[test]
    fn json_documents_never_panic(data in bytes(), e in edits(), which in 0usize..6) {
        let seed = [TREE, SNAPSHOT, CONFIG, KEYRING, SLOT, GENERATION][which].as_bytes().to_vec();
        for d in [data, mutate(seed, &e)] {
            let _ = Tree::from_bytes(&d);
            let _ = serde_json::from_slice::<Snapshot>(&d);
            if let Ok(c) = serde_json::from_slice::<Config>(&d) {
                let _ = c.validate();
            }
            let _ = Keyring::from_json(&d);
            if let Ok(slot) = serde_json::from_slice::<KeySlot>(&d) {
                if slot.params.check().is_err() {
                    prop_assert!(slot.unlock(&"p".to_string().into(), &Id(REPO)).is_err());
                }
            }
            if let Ok(g) = Generation::parse(&d) {
                let secret = SlotSecret { private_key: Key32([5; 32]), auth_key: Key32([6; 32]) };
                prop_assert!(g.open("ab", &[9; 32], &secret, &Id(REPO)).is_err());
            }
        }
    }

    #[test]
    fn document_decompression_never_panics(data in bytes(), raw_len in 0usize..1 << 16) {
        let ring = Keyring::generate();
        let mut doc = vec![1u8];
        doc.extend_from_slice(&data);
        let _ = cairn::repo::open_doc(&ring, ObjectKind::Index, "t", &ring.seal(ObjectKind::Index, &doc));
        if let Ok(out) = codec::decompress(Codec::Zstd, data, raw_len) {
            prop_assert_eq!(out.len(), raw_len);
        }
    }

    #[test]
    fn text_parsers_never_panic(text in "\\PC{0,200}", raw in bytes()) {
        let _ = bf::url_percent_decode(&text);
        let _ = cairn::config::redact(&text);
        let _ = bf::parse_url(&text);
        let _ = bf::known_hosts(&text, "example.com", 22);
        for line in text.lines() {
            let _ = bf::ftp_list_line(line, true);
            let _ = bf::ftp_list_line(line, false);
        }
        let _ = bf::aws_ini(&text);
        let _ = bf::aws_process_output(&raw);
        let _ = bf::gcs_list_page(&raw, "");
        let _ = bf::gcs_error_detail(&text);
        let _ = bf::gcs_content_range(&text);
        let _ = bf::azure_error(403, Some(&raw), &text);
    }

    #[test]
    fn url_redaction_hides_the_password(pass in "[a-zA-Z0-9]{6,20}", user in "[a-z]{1,8}", host in "[a-z]{1,8}\\.example") {
        let url = format!("sftp://{user}:{pass}@{host}:2222/repo");
        let parsed = bf::parse_url(&url).expect("valid URL");
        prop_assert!(!parsed.redacted.contains(&pass));
        prop_assert!(!cairn::config::redact(&url).contains(&pass));
    }
}

#[test]
fn an_index_declaring_2_pow_32_packs_fails_fast() {
    let mut data = b"CIDX\x01".to_vec();
    data.extend_from_slice(&u32::MAX.to_le_bytes());
    let start = Instant::now();
    assert!(index::decode(&data).is_err());
    // Entries are one blob per 50 bytes: the count cannot exceed what the
    // bytes could hold, so a huge declared count fails on truncation.
    let mut one = index_bytes();
    one[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(index::decode(&one).is_err());
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_key_slot_over_the_kdf_limits_is_refused_before_argon2() {
    let slot: KeySlot = serde_json::from_str(SLOT).unwrap();
    let start = Instant::now();
    let err = slot
        .unlock(&"p".to_string().into(), &Id(REPO))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("limits"), "{err}");
    assert!(start.elapsed() < Duration::from_millis(200));
}

#[test]
fn a_footer_length_past_the_pack_fails_fast() {
    let mut data = pack_bytes();
    let n = data.len();
    data[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(read_footer(&data, &REPO, |_| Some(Key32([3; 32]))).is_err());
}

/// Regenerate the encoder-made seeds: `cargo test --test parsers -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let put = |target: &str, name: &str, data: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), data).unwrap();
    };
    put("index_decode", "three_blobs", &index_bytes());
    // pack_footer: mode 0 = a whole pack as stored.
    put(
        "pack_footer",
        "pack",
        &[[0u8].as_slice(), &pack_bytes()].concat(),
    );
    // mode 1 = body length ‖ footer plaintext, sealed by the harness.
    let mut footer = 1u32.to_le_bytes().to_vec();
    footer.extend_from_slice(&[1; 32]);
    footer.extend_from_slice(&[0, 0]);
    footer.extend_from_slice(&5u32.to_le_bytes());
    footer.extend_from_slice(&21u32.to_le_bytes());
    put(
        "pack_footer",
        "footer_plain",
        &[[1u8, 21, 0].as_slice(), &footer].concat(),
    );
    put("tree_decode", "two_nodes", TREE.as_bytes());
    put("snapshot_decode", "snapshot", SNAPSHOT.as_bytes());
    put("config_parse", "config", CONFIG.as_bytes());
    put(
        "key_slot",
        "keyring",
        &[b"\x00".as_slice(), KEYRING.as_bytes()].concat(),
    );
    put(
        "key_slot",
        "slot_over_limits",
        &[b"\x01".as_slice(), SLOT.as_bytes()].concat(),
    );
    let (_, z) = codec::compress(&index_bytes().repeat(4), 3);
    let z = z.expect("compressible");
    put(
        "doc_decompress",
        "zstd_doc",
        &[[0u8, 1].as_slice(), &z].concat(),
    );
    let raw = (index_bytes().len() * 4) as u32;
    put(
        "doc_decompress",
        "zstd_blob",
        &[[1u8].as_slice(), &raw.to_le_bytes(), &z].concat(),
    );
}
