//! The repository's on-disk format: pure code, no I/O.
//!
//! Everything a replica stores is defined here — how it is encoded, sealed
//! and parsed — so the format can be read (and property-tested) without a
//! backend. `docs/format.md` specifies it byte by byte.

pub mod audit;
pub mod chunker;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod id;
pub mod index;
pub mod keyring;
pub mod keys;
pub mod marks;
pub mod pack;
pub mod snapshot;
pub mod tree;
