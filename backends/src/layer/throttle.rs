//! Bandwidth limits, so a backup does not saturate the uplink.
//!
//! Each direction has a token bucket: tokens are bytes, refilled at the
//! configured rate up to one second's worth (the burst). A request takes its
//! size in tokens and may drive the bucket into debt; the request then waits
//! until the debt is paid off. Debt rather than "wait until enough tokens"
//! lets objects larger than the burst through and keeps the order of
//! requests: each one reserves its bandwidth before it sleeps.
//!
//! A `put` waits before sending its payload; a `get` waits after receiving,
//! for the size actually returned (the size is not known before). Either way
//! the long-run rate stays at the limit.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use crate::{Backend, Capabilities, Handle, Kind, ObjectMeta, PutMode, Result};

/// Bandwidth limits in bytes per second; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThrottleConfig {
    pub upload_bytes_per_sec: Option<u64>,
    pub download_bytes_per_sec: Option<u64>,
}

/// A token bucket measured in bytes. Uses tokio's clock, so tests can run it
/// on a paused clock.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Negative while in debt.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(bytes_per_sec: u64) -> Self {
        // A zero rate would never refill; treat it as one byte per second
        // rather than hang forever.
        let rate = bytes_per_sec.max(1) as f64;
        TokenBucket {
            rate,
            burst: rate,
            state: Mutex::new(BucketState {
                tokens: rate,
                last: Instant::now(),
            }),
        }
    }

    /// Take `bytes` tokens and wait until the bucket is out of debt.
    async fn take(&self, bytes: u64) {
        let wait = {
            // Poisoning needs a panic while the lock is held, and nothing
            // in this block panics; recover the state regardless.
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
            s.tokens = (s.tokens + elapsed * self.rate).min(self.burst);
            s.last = now;
            s.tokens -= bytes as f64;
            if s.tokens < 0.0 {
                Duration::from_secs_f64(-s.tokens / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Paces the requests to the backend it wraps to the configured bandwidth.
pub struct ThrottleBackend {
    inner: Arc<dyn Backend>,
    config: ThrottleConfig,
    upload: Option<TokenBucket>,
    download: Option<TokenBucket>,
}

impl ThrottleBackend {
    pub fn new(inner: Arc<dyn Backend>, config: ThrottleConfig) -> Self {
        ThrottleBackend {
            inner,
            upload: config.upload_bytes_per_sec.map(TokenBucket::new),
            download: config.download_bytes_per_sec.map(TokenBucket::new),
            config,
        }
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }
}

impl fmt::Debug for ThrottleBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleBackend")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl fmt::Display for ThrottleBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl Backend for ThrottleBackend {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        if let Some(bucket) = &self.upload {
            bucket.take(data.len() as u64).await;
        }
        self.inner.put(handle, data, mode).await
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        let data = self.inner.get(handle, range).await?;
        if let Some(bucket) = &self.download {
            bucket.take(data.len() as u64).await;
        }
        Ok(data)
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        self.inner.head(handle).await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        self.inner.list(kind).await
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        self.inner.delete(handle).await
    }

    async fn create(&self) -> Result<()> {
        self.inner.create().await
    }
}
