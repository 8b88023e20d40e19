//! The storage layer of cairn.
//!
//! A [`Backend`] is a dumb, content-agnostic object store: it knows nothing of
//! chunks, keys or compression. The engine addresses objects by [`Handle`]
//! (a [`Kind`] plus a name) and every backend maps that onto its own
//! namespace with [`Handle::path`], so the repository layout is identical on
//! every backend.
//!
//! Implementations live in their own modules (`memory`, `local`, and the
//! network backends behind cargo features); decorators that add behaviour to
//! any backend (retry, limits, metrics, fault injection, dry-run) live in
//! [`layer`]. The [`conformance`] module is the one suite every backend must
//! pass. Each network backend takes its settings as a typed struct of
//! options, filled from text (cairn.toml, or a map) by [`options`].

mod error;
mod handle;

#[cfg(feature = "aws-profile")]
pub mod aws_profile;
#[cfg(feature = "azure")]
pub mod azure;
pub mod child;
pub mod conformance;
#[cfg(feature = "ftp")]
pub mod ftp;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "gcs")]
pub mod gcs;
pub mod home;
#[cfg(any(feature = "s3", feature = "azure", feature = "gcs"))]
mod http_util;
pub mod layer;
pub mod local;
pub mod memory;
#[cfg(any(feature = "sftp", feature = "ftp"))]
mod net_url;
#[cfg(any(feature = "s3", feature = "azure"))]
pub mod object_store_backend;
pub mod options;
pub mod redact;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "sftp")]
pub mod sftp;

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::{BackendError, ErrorKind, Result};
pub use handle::{Handle, Kind};
pub use redact::redact_url;

/// How a `put` treats an object that already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Replace any existing object (atomically where the backend can).
    Overwrite,
    /// Fail with [`ErrorKind::AlreadyExists`] if the object exists. On backends
    /// with `atomic_create` this is race-free; see [`Capabilities`].
    Create,
}

/// What a backend can guarantee. The conformance suite checks the declared
/// behaviour, and the engine reads it where a guarantee matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `PutMode::Create` fails atomically when two writers race. When false,
    /// a create checks for existence first and can lose a race (FTP).
    pub atomic_create: bool,
    /// Largest object one `put` accepts, if the backend has a limit.
    pub max_object_size: Option<u64>,
    /// A sensible default for concurrent requests to this backend.
    pub default_connections: usize,
    /// Reads are cheap (a local disk, memory): operations that may read
    /// from any replica (prune's repacking) ask these first.
    pub local: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            atomic_create: true,
            max_object_size: None,
            default_connections: 4,
            local: false,
        }
    }
}

/// Metadata of a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub handle: Handle,
    pub size: u64,
    /// When the object was written, where the backend says so cheaply in
    /// its listings (local, S3, Azure, GCS, SFTP; not FTP or memory).
    pub modified: Option<std::time::SystemTime>,
}

impl ObjectMeta {
    /// Metadata without a modification time.
    pub fn new(handle: Handle, size: u64) -> ObjectMeta {
        ObjectMeta {
            handle,
            size,
            modified: None,
        }
    }
}

/// An object store holding one cairn repository.
///
/// Contract, checked by [`conformance`]:
/// - `put` is all-or-nothing: a reader never sees a partial object, and after
///   `put` returns `Ok` the object is durable as far as the backend can say.
/// - `get` with a range returns the bytes of `range ∩ [0, size)`; a range that
///   starts past the end gives [`ErrorKind::InvalidRange`]. A missing object
///   gives [`ErrorKind::NotFound`].
/// - `list` returns every object of a kind (in no particular order), never
///   temporary or foreign files.
/// - `delete` of a missing object gives [`ErrorKind::NotFound`].
#[async_trait]
pub trait Backend: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// What this backend guarantees.
    fn capabilities(&self) -> Capabilities;

    /// Store `data` under `handle`.
    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()>;

    /// Read an object, or a byte range of it.
    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes>;

    /// Size of an object.
    async fn head(&self, handle: &Handle) -> Result<ObjectMeta>;

    /// Every object of one kind.
    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>>;

    /// Remove an object.
    async fn delete(&self, handle: &Handle) -> Result<()>;

    /// Make sure the repository's container (directory, bucket) exists; called
    /// once by `init`. The default does nothing.
    async fn create(&self) -> Result<()> {
        Ok(())
    }
}

/// Clip a requested range to an object of `size` bytes, per the trait contract.
pub fn clip_range(handle: &Handle, range: &Range<u64>, size: u64) -> Result<Range<u64>> {
    if range.start > size || range.start > range.end {
        return Err(BackendError::new(
            ErrorKind::InvalidRange,
            format!(
                "range {}..{} of {} ({} bytes)",
                range.start, range.end, handle, size
            ),
        ));
    }
    Ok(range.start..range.end.min(size))
}
