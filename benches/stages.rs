//! What each pure stage of the backup pipeline gets through on one thread
//! of this machine: the limits that `cairn backup --profile-stages` is read
//! against (`docs/benchmarks/stages.sh`).
//!
//! cargo bench --bench stages -- [DIR] [MB]
//!
//! The sample is up to MB (default 256) megabytes of the files under DIR,
//! read into memory first, or without DIR a synthetic half-text,
//! half-random sample. Each stage runs over the whole sample three times;
//! the best run is printed as GB/s (10^9 bytes per second) and as seconds
//! per GB, one tab-separated line per stage.

use std::time::Instant;

use cairn::format::chunker::{Chunker, ChunkerParams};
use cairn::format::codec;
use cairn::format::crypto::{Header, Key32, ObjectKey, ObjectKind};
use cairn::format::keys::Keyring;
use cairn::format::pack::{BlobKind, PackBuilder};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mb: usize = args
        .get(1)
        .map_or(256, |m| m.parse().expect("MB is a number"));
    let sample = match args.first() {
        Some(dir) => read_sample(std::path::Path::new(dir), mb << 20),
        None => synthetic(mb << 20),
    };
    let key = Key32::random();
    let chunker = Chunker::new(ChunkerParams::default(), &key).expect("default params");
    let chunks = chunker.split(&sample);
    let keyring = Keyring::generate();
    let compressed: Vec<Vec<u8>> = {
        let mut out = Vec::new();
        let mut start = 0;
        for &n in &chunks {
            let c = &sample[start..start + n];
            let mut buf = Vec::new();
            match codec::compress_into(c, 3, &mut buf) {
                codec::Codec::Zstd => out.push(buf),
                codec::Codec::Raw => out.push(c.to_vec()),
            }
            start += n;
        }
        out
    };
    let stored: usize = compressed.iter().map(Vec::len).sum();
    eprintln!(
        "sample: {} bytes, {} chunks, {:.1}% after zstd-3",
        sample.len(),
        chunks.len(),
        100.0 * stored as f64 / sample.len() as f64
    );
    println!("stage\tGB/s\ts/GB");

    report("chunk (FastCDC)", sample.len(), || {
        let n = chunker.split(&sample).len();
        assert_eq!(n, chunks.len());
    });
    report("hash (keyed BLAKE3)", sample.len(), || {
        let mut start = 0;
        for &n in &chunks {
            std::hint::black_box(keyring.chunk_id(&sample[start..start + n]));
            start += n;
        }
    });
    let mut out = Vec::new();
    report("compress (zstd-3, with skip)", sample.len(), || {
        let mut start = 0;
        for &n in &chunks {
            std::hint::black_box(codec::compress_into(&sample[start..start + n], 3, &mut out));
            start += n;
        }
    });
    let object_key = ObjectKey::derive(&key, &[1; 32], &Header::new(ObjectKind::Pack, 1));
    let mut scratch = Vec::new();
    report("encrypt (AES-256-GCM)", stored, || {
        for (i, c) in compressed.iter().enumerate() {
            scratch.clear();
            scratch.extend_from_slice(c);
            std::hint::black_box(object_key.seal_slice(i as u64, false, &mut scratch));
        }
    });
    report("pack + seal (copy, GCM, BLAKE3 id)", stored, || {
        let mut b = PackBuilder::new(1, &key, &[1; 32], 16 << 20);
        for (i, c) in compressed.iter().enumerate() {
            if b.would_overflow(c.len(), 16 << 20) {
                std::hint::black_box(b.finish());
                b = PackBuilder::new(1, &key, &[1; 32], 16 << 20);
            }
            let id = cairn::format::id::Id([i as u8; 32]);
            b.add(id, BlobKind::Data, codec::Codec::Zstd, c.len() as u32, c);
        }
        std::hint::black_box(b.finish());
    });
}

/// Run `f` three times; print the best as GB/s and s/GB of `bytes`.
fn report(name: &str, bytes: usize, mut f: impl FnMut()) {
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let gbps = bytes as f64 / best / 1e9;
    println!("{name}\t{gbps:.2}\t{:.3}", 1.0 / gbps);
}

/// Files under `dir` in name order, concatenated up to `limit` bytes.
fn read_sample(dir: &std::path::Path, limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(limit);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for p in entries.into_iter().rev() {
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                if let Ok(bytes) = std::fs::read(&p) {
                    let room = limit - out.len();
                    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    if out.len() == limit {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// Half text-like (compresses about 3:1), half random (does not).
fn synthetic(len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "backup",
        "replica ",
        "snapshot\n",
        "the ",
        "pack",
        " index",
        "chunk ",
        "of ",
        "key",
        "restore ",
        "cairn",
        ", ",
    ];
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while out.len() < len / 2 {
        out.extend_from_slice(WORDS[(next() % 12) as usize].as_bytes());
    }
    while out.len() < len {
        out.extend_from_slice(&next().to_le_bytes());
    }
    out.truncate(len);
    out
}
