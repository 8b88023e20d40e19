//! Compression of chunk and document payloads (pure).
//!
//! The codec is recorded per blob, so a chunk that zstd cannot shrink is
//! stored raw and the level can change later without a format change.

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
}

/// Compress `data` at `level`; returns the raw codec (and no copy) when
/// compression does not save at least 1/64 of the size.
pub fn compress(data: &[u8], level: i32) -> (Codec, Option<Vec<u8>>) {
    if level == 0 || data.len() < 64 {
        return (Codec::Raw, None);
    }
    match zstd::bulk::compress(data, level) {
        Ok(c) if c.len() + data.len() / 64 < data.len() => (Codec::Zstd, Some(c)),
        _ => (Codec::Raw, None),
    }
}

/// Decode a payload whose plaintext is known to be `raw_len` bytes.
pub fn decompress(codec: Codec, data: Vec<u8>, raw_len: usize) -> Result<Vec<u8>, CodecError> {
    let out = match codec {
        Codec::Raw => data,
        Codec::Zstd => zstd::bulk::decompress(&data, raw_len).map_err(CodecError::Decompress)?,
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
        crate::crypto::fill_random(&mut d);
        assert_eq!(compress(&d, 3).0, Codec::Raw);
        assert_eq!(compress(&vec![7u8; 4096], 3).0, Codec::Zstd);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let (c, out) = compress(&[1u8; 1000], 3);
        assert!(decompress(c, out.unwrap(), 999).is_err());
    }
}
