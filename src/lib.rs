//! cairn: encrypted, deduplicating backups written to several backends in
//! one run.
//!
//! The crate is layered; each layer only uses the ones above it:
//!
//! - [`format`]: the on-disk format, pure code with no I/O — ids, crypto,
//!   the codec, the chunker, packs, index files, trees, snapshots, keys and
//!   the repository config.
//! - [`repo`]: a repository open on several replicas — init and open, key
//!   slots, verified reads with fallback across replicas, writes, locks,
//!   listings and the tree walker. It reaches storage only through
//!   [`cairn_backends::Backend`].
//! - [`ops`]: one module per operation (backup, restore, check, sync,
//!   repair, status, ls, diff, stats), each returning a typed report.
//! - [`retention`]: pure planning of which snapshots a retention policy
//!   keeps, and why.
//! - [`config`]: what a front end opens — `cairn.toml`, default paths, and
//!   the factory from a URL and its options to a backend with its
//!   decorators. The only module that names concrete backends.
//! - [`jobs`]: jobs that run unattended — `[jobs.NAME]` checked, one run
//!   of a job (hooks, retries, timeout) through the operations, the run
//!   history, what is observed of jobs and replicas (metrics, health), and
//!   notifications.
//! - [`daemon`]: the daemon's schedule loop and its HTTP listener; the
//!   binary only adds signals and the passphrase.
//! - [`mount`]: the snapshots as a read-only FUSE file system, read
//!   through the snapshot browser.
//! - The `cairn` binary (`src/cli/`) parses arguments and renders reports.

pub mod api;
pub mod config;
pub mod daemon;
pub mod error;
pub mod format;
pub mod jobs;
pub mod mount;
pub mod ops;
pub mod repo;
pub mod retention;
pub mod sys;
#[cfg(test)]
mod test_support;

pub use cairn_backends as backends;
pub use error::{Error, Result};
