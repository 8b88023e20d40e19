//! Compression of chunk and document payloads (pure).
//!
//! The codec is recorded per blob, so a chunk that zstd cannot shrink is
//! stored raw and the level can change later without a format change.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

/// How a payload is encoded; the byte is stored in pack footers and indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    pub fn from_u8(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("decompression failed: {0}")]
    Decompress(std::io::Error),
    #[error("decoded length {got} does not match the recorded {expected}")]
    Length { expected: usize, got: usize },
    #[error("recorded length {0} is over the {MAX_BLOB_BYTES}-byte blob limit")]
    TooLarge(usize),
}

thread_local! {
    // A zstd context costs a large allocation and a memset of its tables;
    // creating one per chunk took ~15% of a backup's CPU. One per thread
    // is reused instead.
    //
    // Two per thread, by input size. zstd sizes a context's workspace by
    // the input and frees it after 128 calls in a row that need less than
    // a third of it; with one context, the small files between chunks made
    // it shrink and grow again, each time a fresh mapping whose tables
    // page-faulted as they were cleared (a quarter of a backup's faults).
    // At level 3 an input above SMALL_INPUT needs 0.48-1.3 MB, within that
    // third, so the large context keeps its workspace; a smaller one needs
    // 40-280 KB, taken from the heap.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static COMPRESSOR_SMALL: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static SAMPLER: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// Compress `data` at `level`; returns the raw codec (and no copy) when
/// compression does not save at least 1/64 of the size.
pub fn compress(data: &[u8], level: i32) -> (Codec, Option<Vec<u8>>) {
    let mut out = Vec::new();
    match compress_into(data, level, &mut out) {
        Codec::Raw => (Codec::Raw, None),
        Codec::Zstd => (Codec::Zstd, Some(out)),
    }
}

/// Like [`compress`], writing into `out` (cleared first) so a caller can
/// reuse one output buffer for every chunk. When the result is
/// [`Codec::Raw`], `out` holds nothing useful and `data` is the payload.
pub fn compress_into(data: &[u8], level: i32, out: &mut Vec<u8>) -> Codec {
    out.clear();
    if level == 0 || data.len() < 64 || looks_incompressible(data) {
        return Codec::Raw;
    }
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    let context = if data.len() <= SMALL_INPUT {
        &COMPRESSOR_SMALL
    } else {
        &COMPRESSOR
    };
    let res = context.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, c) = slot.as_mut().expect("set above");
        c.compress_to_buffer(data, out)
    });
    match res {
        Ok(n) if n + data.len() / 64 < data.len() => Codec::Zstd,
        _ => Codec::Raw,
    }
}

/// Inputs up to this size are compressed with a context of their own (see
/// `COMPRESSOR`).
const SMALL_INPUT: usize = 16 * 1024;

/// Chunks from this size on are sampled before they are compressed.
pub const SAMPLE_FROM: usize = 64 * 1024;
/// Bytes taken from each of a chunk's start, middle and end.
const SAMPLE_PART: usize = 4096;

/// Whether `data` (a chunk of at least [`SAMPLE_FROM`] bytes) would not
/// shrink: three 4 KiB samples compressed at zstd's fastest level save less
/// than 1/32 of their size. Compressed, encrypted and media files make up
/// much of a typical backup, and zstd spends nearly as long failing to
/// compress a chunk of them as it spends compressing text; a sample costs
/// about 1% of that. Data whose only redundancy is repeats farther apart
/// than a sample (a random block written twice in one chunk) is stored raw
/// by this, as borg's `auto` compression would also store it.
pub fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < SAMPLE_FROM {
        return false;
    }
    let mid = data.len() / 2 - SAMPLE_PART / 2;
    let mut sample = Vec::with_capacity(3 * SAMPLE_PART);
    sample.extend_from_slice(&data[..SAMPLE_PART]);
    sample.extend_from_slice(&data[mid..mid + SAMPLE_PART]);
    sample.extend_from_slice(&data[data.len() - SAMPLE_PART..]);
    let size = SAMPLER.with_borrow_mut(|slot| -> std::io::Result<usize> {
        if slot.is_none() {
            *slot = Some(zstd::bulk::Compressor::new(1)?);
        }
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(sample.len()));
        slot.as_mut()
            .expect("set above")
            .compress_to_buffer(&sample, &mut out)
    });
    match size {
        Ok(n) => n + sample.len() / 32 >= sample.len(),
        // Let the real compression decide.
        Err(_) => false,
    }
}

/// Largest plaintext blob: the largest chunk the chunker can cut (trees are
/// chunked like file content).
pub const MAX_BLOB_BYTES: usize = 1 << 24;

/// Decode a payload whose plaintext is known to be `raw_len` bytes.
pub fn decompress(codec: Codec, data: Vec<u8>, raw_len: usize) -> Result<Vec<u8>, CodecError> {
    // The declared size sizes the output buffer: refuse it before
    // allocating when no writer could have produced it.
    if raw_len > MAX_BLOB_BYTES {
        return Err(CodecError::TooLarge(raw_len));
    }
    let out = match codec {
        Codec::Raw => data,
        Codec::Zstd => DECOMPRESSOR
            .with_borrow_mut(|slot| {
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new()?);
                }
                slot.as_mut().expect("set above").decompress(&data, raw_len)
            })
            .map_err(CodecError::Decompress)?,
    };
    if out.len() != raw_len {
        return Err(CodecError::Length {
            expected: raw_len,
            got: out.len(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn either_context_gives_what_a_fresh_one_gives() {
        // Text-like and compressible, so every size is stored as zstd.
        let text: Vec<u8> = (0..SMALL_INPUT * 40)
            .map(|i| b"the quick brown fox "[i % 20] ^ (i / 4093) as u8)
            .collect();
        let sizes = [
            SMALL_INPUT * 40,
            100,
            SMALL_INPUT,
            SMALL_INPUT + 1,
            3000,
            SMALL_INPUT * 20,
            SMALL_INPUT - 1,
        ];
        let mut out = Vec::new();
        for n in sizes.into_iter().chain(sizes) {
            let data = &text[..n];
            assert_eq!(compress_into(data, 3, &mut out), Codec::Zstd, "{n} bytes");
            assert_eq!(out, zstd::bulk::compress(data, 3).unwrap(), "{n} bytes");
            let back = decompress(Codec::Zstd, out.clone(), n).unwrap();
            assert_eq!(back, data);
        }
    }

    proptest! {
        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..8192), rep in 1usize..8, level in 0i32..6) {
            let data = data.repeat(rep);
            let (codec, out) = compress(&data, level);
            let stored = out.unwrap_or_else(|| data.clone());
            prop_assert_eq!(decompress(codec, stored, data.len()).unwrap(), data);
        }
    }

    #[test]
    fn incompressible_is_stored_raw() {
        let mut d = vec![0u8; 4096];
        crate::format::crypto::fill_random(&mut d);
        assert_eq!(compress(&d, 3).0, Codec::Raw);
        assert_eq!(compress(&vec![7u8; 4096], 3).0, Codec::Zstd);
        // A declared size past the cap is refused before any allocation.
        assert!(matches!(
            decompress(Codec::Zstd, vec![0; 8], MAX_BLOB_BYTES + 1),
            Err(CodecError::TooLarge(_))
        ));
    }

    #[test]
    fn large_random_chunks_are_stored_raw_without_being_compressed_and_text_is_not() {
        let mut random = vec![0u8; 256 * 1024];
        crate::format::crypto::fill_random(&mut random);
        assert!(looks_incompressible(&random));
        assert_eq!(compress(&random, 3).0, Codec::Raw);
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i} of a log\n").into_bytes())
            .collect();
        assert!(text.len() >= SAMPLE_FROM);
        assert!(!looks_incompressible(&text));
        assert_eq!(compress(&text, 3).0, Codec::Zstd);
        // Random data with compressible text at its start, middle and end
        // is tried.
        let mut mixed = random.clone();
        for at in [0, mixed.len() / 2 - 8192, mixed.len() - 8192] {
            mixed[at..at + 8192].copy_from_slice(&text[..8192]);
        }
        assert!(!looks_incompressible(&mixed));
        // Below the sampling size, the real compression decides.
        assert!(!looks_incompressible(&random[..SAMPLE_FROM - 1]));
    }

    proptest! {
        #[test]
        fn sampled_chunks_still_round_trip(seed in any::<u64>(), len in SAMPLE_FROM..SAMPLE_FROM * 3, text_every in 1usize..64) {
            // Random bytes with runs of text every `text_every` KiB.
            let mut x = seed | 1;
            let mut data = Vec::with_capacity(len);
            while data.len() < len {
                if (data.len() / 1024) % text_every == 0 {
                    data.extend_from_slice(b"some text that repeats ");
                } else {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    data.extend_from_slice(&x.to_le_bytes());
                }
            }
            data.truncate(len);
            let (codec, out) = compress(&data, 3);
            let stored = out.unwrap_or_else(|| data.clone());
            prop_assert_eq!(decompress(codec, stored, data.len()).unwrap(), data);
        }
    }

    #[test]
    fn wrong_length_is_an_error() {
        let (c, out) = compress(&[1u8; 1000], 3);
        assert!(decompress(c, out.unwrap(), 999).is_err());
    }
}
