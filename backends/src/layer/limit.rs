//! A cap on concurrent requests to one backend, whatever number of tasks
//! the engine runs: servers (and home routers) throttle or drop clients that
//! open too many connections.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{
    Backend, BackendError, Capabilities, ErrorKind, Handle, Kind, ObjectMeta, PutMode, Result,
};

/// At most `max_concurrent` requests reach the inner backend at once; the
/// others wait their turn (first come, first served).
pub struct LimitBackend {
    inner: Arc<dyn Backend>,
    permits: Semaphore,
    max_concurrent: usize,
}

impl LimitBackend {
    /// A limit of 0 is taken as 1: a backend nobody may call is a deadlock.
    pub fn new(inner: Arc<dyn Backend>, max_concurrent: usize) -> Self {
        let max_concurrent = max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        LimitBackend {
            inner,
            permits: Semaphore::new(max_concurrent),
            max_concurrent,
        }
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Requests currently allowed to start without waiting.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>> {
        // The semaphore is never closed; map the impossible case anyway
        // rather than panic.
        self.permits.acquire().await.map_err(|e| {
            BackendError::with_source(
                ErrorKind::Other,
                format!("{self}: request limiter closed"),
                e,
            )
        })
    }
}

impl fmt::Debug for LimitBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitBackend")
            .field("inner", &self.inner)
            .field("max_concurrent", &self.max_concurrent)
            .finish()
    }
}

impl fmt::Display for LimitBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl Backend for LimitBackend {
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.inner.capabilities();
        caps.default_connections = caps.default_connections.min(self.max_concurrent);
        caps
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        let _permit = self.permit().await?;
        self.inner.put(handle, data, mode).await
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        let _permit = self.permit().await?;
        self.inner.get(handle, range).await
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        let _permit = self.permit().await?;
        self.inner.head(handle).await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        let _permit = self.permit().await?;
        self.inner.list(kind).await
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let _permit = self.permit().await?;
        self.inner.delete(handle).await
    }

    async fn create(&self) -> Result<()> {
        let _permit = self.permit().await?;
        self.inner.create().await
    }
}
