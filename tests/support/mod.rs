//! Helpers shared by the test binaries (`tests/engine.rs`, `tests/e2e`).

/// Deterministic pseudo-random bytes (xorshift64): incompressible data
/// that is the same on every run.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}
