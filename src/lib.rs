//! cairn: encrypted, deduplicating backups written to several backends in
//! one run.
//!
//! The engine reaches storage only through [`cairn_backends::Backend`].
//! Pure stages — [`chunker`], [`codec`], [`crypto`], [`pack`], [`index`]
//! encoding — do no I/O; [`backup`], [`restore`] and [`check`] wire them to
//! the replicas of a [`repo::Repository`].

pub mod backup;
pub mod check;
pub mod chunker;
pub mod codec;
pub mod crypto;
pub mod error;
pub mod id;
pub mod index;
pub mod keys;
pub mod pack;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod snapshot;
pub mod status;
pub mod survey;
pub mod sync;
pub mod sys;
pub mod tree;

pub use cairn_backends as backends;
pub use error::{Error, Result};
