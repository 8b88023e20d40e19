//! `--dry-run`: everything is read for real, nothing is changed. Writes and
//! deletes are logged and counted and then reported as successful, so the
//! engine runs its whole course and can say what it would have done.
//!
//! The engine must not read back what it "wrote" during a dry run: a get of
//! such an object gives `NotFound`.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Backend, Capabilities, Handle, Kind, ObjectMeta, PutMode, Result};

/// Passes reads through and swallows writes.
pub struct DryRunBackend {
    inner: Arc<dyn Backend>,
    puts: AtomicU64,
    put_bytes: AtomicU64,
    deletes: AtomicU64,
}

impl DryRunBackend {
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        DryRunBackend {
            inner,
            puts: AtomicU64::new(0),
            put_bytes: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
        }
    }

    /// Puts that were skipped.
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }

    /// Bytes those puts would have written.
    pub fn put_bytes(&self) -> u64 {
        self.put_bytes.load(Ordering::Relaxed)
    }

    /// Deletes that were skipped.
    pub fn deletes(&self) -> u64 {
        self.deletes.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for DryRunBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DryRunBackend")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DryRunBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dry-run({})", self.inner)
    }
}

#[async_trait]
impl Backend for DryRunBackend {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.put_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        tracing::info!(backend = %self.inner, object = %handle, bytes = data.len(), ?mode, "dry run: would write");
        Ok(())
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        self.inner.get(handle, range).await
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        self.inner.head(handle).await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        self.inner.list(kind).await
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        self.deletes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(backend = %self.inner, object = %handle, "dry run: would delete");
        Ok(())
    }

    async fn create(&self) -> Result<()> {
        tracing::info!(backend = %self.inner, "dry run: would create the repository");
        Ok(())
    }
}
