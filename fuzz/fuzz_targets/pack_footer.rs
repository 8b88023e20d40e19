#![no_main]
//! Pack headers, footers and blob locations (`format::pack::read_footer`,
//! `read_footer_parts`, `tail_len`). The first byte picks raw bytes (which
//! almost never authenticate) or a footer plaintext the harness seals with
//! the right key, so the parsing behind the authentication is reached.
use cairn::format::crypto::{Header, Key32, ObjectKey, ObjectKind, HEADER_LEN};
use cairn::format::pack::{read_footer, read_footer_parts, tail_len};
use libfuzzer_sys::fuzz_target;

const REPO: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let key = Key32([3; 32]);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pack = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // body length (u16) ‖ footer plaintext
        if rest.len() < 2 {
            return;
        }
        let body = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let plain = &rest[2..];
        let header = Header::new(ObjectKind::Pack, 1);
        let okey = ObjectKey::derive(&key, &REPO, &header);
        let mut pack = header.encode().to_vec();
        pack.resize(HEADER_LEN + body, 0);
        let mut footer = plain.to_vec();
        let n = plain.len().saturating_sub(4) / 42;
        okey.seal(n as u64, true, &mut footer);
        pack.extend_from_slice(&footer);
        pack.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        pack
    };
    let keys = |e: u32| (e == 1).then(|| key.clone());
    let whole = read_footer(&pack, &REPO, keys);
    if let Ok((_, entries)) = &whole {
        for e in entries {
            let end = e.offset as u64 + e.stored_len as u64;
            assert!(end <= pack.len() as u64, "blob past the pack's end");
        }
    }
    if pack.len() >= 4 {
        if let Ok(t) = tail_len(&pack[pack.len() - 4..]) {
            let t = (t as usize).min(pack.len());
            let head = &pack[..pack.len().min(HEADER_LEN)];
            let parts = read_footer_parts(
                head,
                &pack[pack.len() - t..],
                pack.len() as u64,
                &REPO,
                keys,
            );
            assert_eq!(parts.is_ok(), whole.is_ok());
        }
    }
});
