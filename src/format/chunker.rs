//! Content-defined chunking (FastCDC 2020) with a keyed gear table (pure).
//!
//! The gear table — the 256 random values the rolling hash adds up — is
//! derived from the repository's chunker key with BLAKE3 in XOF mode, so chunk
//! boundaries depend on a secret and do not leak which known file a chunk
//! size pattern belongs to as easily as with a public table. The cut-point
//! search itself is `fastcdc::v2020::cut_gear` with normalisation level 1.

use fastcdc::v2020::{cut_gear, MASKS};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::format::crypto::Key32;

/// Chunk size parameters, stored in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid chunker parameters: {0}")]
pub struct ParamsError(String);

impl ChunkerParams {
    /// Check the limits FastCDC needs: 64 B ≤ min < avg < max ≤ 16 MiB, avg a power of two.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let ChunkerParams {
            min_size,
            avg_size,
            max_size,
        } = *self;
        if !(64..=1 << 20).contains(&min_size)
            || !(256..=1 << 22).contains(&avg_size)
            || !(1024..=1 << 24).contains(&max_size)
            || min_size >= avg_size
            || avg_size >= max_size
            || !avg_size.is_power_of_two()
        {
            return Err(ParamsError(format!("{self:?}")));
        }
        Ok(())
    }
}

/// A chunker for one repository: parameters plus the keyed gear tables.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

/// The gear tables are derived from the chunker key and would let
/// whoever reads them recognise chunk boundaries: wiped on drop. The tables
/// live in boxes, so moving a `Chunker` copies no table; a clone has its own
/// boxes and wipes them itself.
impl Drop for Chunker {
    fn drop(&mut self) {
        self.gear.zeroize();
        self.gear_ls.zeroize();
    }
}

impl Chunker {
    pub fn new(params: ChunkerParams, key: &Key32) -> Result<Chunker, ParamsError> {
        params.validate()?;
        let mut xof = blake3::Hasher::new_derive_key("cairn chunker gear table v1");
        xof.update(&key.0);
        // The hasher, its output reader and these bytes hold the key or
        // the table: wiped once used (blake3's `zeroize` feature).
        let mut bytes = Zeroizing::new([0u8; 256 * 8]);
        let mut reader = xof.finalize_xof();
        reader.fill(&mut bytes[..]);
        reader.zeroize();
        xof.zeroize();
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for (i, b) in bytes.chunks_exact(8).enumerate() {
            gear[i] = u64::from_le_bytes(b.try_into().unwrap());
            gear_ls[i] = gear[i] << 1;
        }
        let bits = params.avg_size.trailing_zeros() as usize;
        Ok(Chunker {
            params,
            mask_s: MASKS[bits + 1],
            mask_l: MASKS[bits - 1],
            gear,
            gear_ls,
        })
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// The length of the next chunk at the start of `buf`, or `None` when more
    /// data is needed to decide. At end of input (`eof`) the rest is a chunk.
    ///
    /// A window shorter than `max_size` decides when a cut point lies
    /// inside it: the search looks only at bytes before the cut, so more
    /// data would find the same one (it stops strictly before the end of
    /// what it was given). Readers can therefore keep a window of a few
    /// average chunks instead of a maximum-size one.
    pub fn next_cut(&self, buf: &[u8], eof: bool) -> Option<usize> {
        let full = eof || buf.len() >= self.params.max_size as usize;
        if buf.is_empty() || (!full && buf.len() <= self.params.min_size as usize) {
            return None;
        }
        let (_, len) = cut_gear(
            buf,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        (full || len < buf.len()).then_some(len)
    }

    /// Split a whole buffer into chunk lengths (for tests and small inputs).
    pub fn split(&self, data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(n) = self.next_cut(&data[pos..], true) {
            out.push(n);
            pos += n;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
        }
    }

    fn data(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Boundaries as absolute offsets.
    fn cuts(c: &Chunker, d: &[u8]) -> Vec<usize> {
        c.split(d)
            .iter()
            .scan(0, |acc, n| {
                *acc += n;
                Some(*acc)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn chunks_cover_input_within_limits(seed in any::<u64>(), len in 0usize..40_000) {
            let c = Chunker::new(small(), &Key32([3; 32])).unwrap();
            let d = data(seed, len);
            let lens = c.split(&d);
            prop_assert_eq!(lens.iter().sum::<usize>(), len);
            for (i, n) in lens.iter().enumerate() {
                prop_assert!(*n <= 4096);
                if i + 1 < lens.len() { prop_assert!(*n >= 256); }
            }
        }

        /// Inserting bytes at the front disturbs boundaries only near the
        /// edit: once one boundary of the edited data falls where one of the
        /// original data fell, every later boundary is the same (the cut
        /// search restarts from that point with the same bytes), and that
        /// happens within a few maximum chunk lengths.
        #[test]
        fn boundaries_stable_under_prefix_edit(seed in any::<u64>(), prefix in proptest::collection::vec(any::<u8>(), 1..300)) {
            let c = Chunker::new(small(), &Key32([5; 32])).unwrap();
            let d = data(seed, 60_000);
            let mut edited = prefix.clone();
            edited.extend_from_slice(&d);
            let a = cuts(&c, &d);
            let b: Vec<usize> = cuts(&c, &edited)
                .into_iter()
                .filter(|x| *x > prefix.len())
                .map(|x| x - prefix.len())
                .collect();
            let first = b.iter().position(|x| a.contains(x)).expect("boundaries resynchronise");
            prop_assert!(b[first] <= 4 * 4096, "resynchronised only at {}", b[first]);
            let from = a.iter().position(|x| *x == b[first]).unwrap();
            prop_assert_eq!(&a[from..], &b[first..]);
        }

        /// Streaming with partial buffers finds the same cuts as one pass,
        /// whatever the reads' sizes: windows shorter than `max_size`
        /// decide early only where the whole input cuts too.
        #[test]
        fn streaming_equals_whole(
            seed in any::<u64>(),
            len in 0usize..30_000,
            steps in proptest::collection::vec(1usize..6000, 1..8),
        ) {
            let c = Chunker::new(small(), &Key32([1; 32])).unwrap();
            let d = data(seed, len);
            let mut got = Vec::new();
            let mut pos = 0;
            let mut avail = 0;
            for step in steps.iter().cycle() {
                avail = (avail + step).min(len);
                let eof = avail == len;
                while let Some(n) = c.next_cut(&d[pos..avail], eof) {
                    got.push(n);
                    pos += n;
                }
                if eof { break; }
            }
            prop_assert_eq!(got, c.split(&d));
        }
    }

    #[test]
    fn key_changes_boundaries() {
        let d = data(42, 100_000);
        let a = Chunker::new(small(), &Key32([1; 32])).unwrap().split(&d);
        let b = Chunker::new(small(), &Key32([2; 32])).unwrap().split(&d);
        assert_ne!(a, b);
    }

    #[test]
    fn params_are_validated() {
        assert!(ChunkerParams::default().validate().is_ok());
        let bad = ChunkerParams {
            min_size: 10,
            avg_size: 1000,
            max_size: 100,
        };
        assert!(bad.validate().is_err());
    }
}
