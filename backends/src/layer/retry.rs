//! Retrying transient failures with exponential backoff and full jitter.
//!
//! Only errors whose kind [`is_transient`](crate::ErrorKind::is_transient)
//! are retried: a missing object, a rejected credential or a full disk do
//! not get better by asking again.
//!
//! A retried request may have taken effect although its response was lost.
//! For `put` with [`PutMode::Create`] that shows as `AlreadyExists` on a
//! later attempt; it is resolved by reading the object back: the same bytes
//! mean the earlier attempt won, and the put reports success. (Two writers
//! creating the same name with identical bytes are indistinguishable, which
//! is harmless: the stored object is what both wanted.) A retried `delete`
//! that ends in `NotFound` is reported as `NotFound`: it cannot be told from
//! a delete of an object that never existed, so callers that only want the
//! object gone should accept `NotFound`.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;

use crate::{
    Backend, BackendError, Capabilities, ErrorKind, Handle, Kind, ObjectMeta, PutMode, Result,
};

/// How [`RetryBackend`] retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Upper bound of the first backoff; it doubles with each retry.
    pub base_delay: Duration,
    /// Upper bound of any backoff.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// The backoff before retry number `retry` (1 for the first retry):
    /// uniform in `[0, min(max_delay, base_delay * 2^(retry-1))]` ("full
    /// jitter"), so clients that failed together do not retry together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(31))
            .min(self.max_delay);
        let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Retries transient failures of the backend it wraps.
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    config: RetryConfig,
}

/// A failed operation and how many attempts it took.
struct Failure {
    err: BackendError,
    attempts: u32,
}

impl RetryBackend {
    /// Retry with the default policy (6 attempts, 200 ms base, 10 s cap).
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self::with_config(inner, RetryConfig::default())
    }

    pub fn with_config(inner: Arc<dyn Backend>, config: RetryConfig) -> Self {
        RetryBackend { inner, config }
    }

    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    async fn retry<T, F, Fut>(
        &self,
        op: &'static str,
        what: &(dyn fmt::Display + Sync),
        mut attempt: F,
    ) -> std::result::Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let max = self.config.max_attempts.max(1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match attempt().await {
                Ok(v) => {
                    if attempts > 1 {
                        tracing::info!(backend = %self.inner, op, object = %what, attempts, "succeeded after retrying");
                    }
                    return Ok(v);
                }
                Err(err) => err,
            };
            if !err.is_transient() {
                return Err(Failure { err, attempts });
            }
            if attempts >= max {
                let err = err.context(format_args!("gave up after {attempts} attempts"));
                return Err(Failure { err, attempts });
            }
            let delay = self.config.backoff(attempts);
            let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            // One warning per operation, not one per attempt: the later
            // attempts are in the debug log, and the outcome is reported
            // once (success after retrying, or the final error).
            if attempts == 1 {
                tracing::warn!(
                    backend = %self.inner,
                    op,
                    object = %what,
                    max_attempts = max,
                    error = %err,
                    "transient backend error, retrying"
                );
            } else {
                tracing::debug!(
                    backend = %self.inner,
                    op,
                    object = %what,
                    attempt = attempts,
                    max_attempts = max,
                    delay_ms,
                    error = %err,
                    "transient backend error, retrying"
                );
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// A create that was retried found the object present: decide whether
    /// it is ours from an earlier attempt whose response was lost.
    async fn resolve_create_conflict(
        &self,
        handle: &Handle,
        data: &Bytes,
        conflict: BackendError,
    ) -> Result<()> {
        match self
            .retry("get", handle, || self.inner.get(handle, None))
            .await
        {
            Ok(stored) if stored == *data => {
                tracing::info!(
                    backend = %self.inner,
                    object = %handle,
                    "create-only put had succeeded on an earlier attempt"
                );
                Ok(())
            }
            Ok(_) => Err(conflict),
            // Deleted in between: someone else's object, not ours.
            Err(f) if f.err.kind() == ErrorKind::NotFound => Err(conflict),
            Err(f) => Err(f.err.context(format_args!(
                "{handle} exists after a retried create and could not be read back"
            ))),
        }
    }
}

impl fmt::Debug for RetryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBackend")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl fmt::Display for RetryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl Backend for RetryBackend {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        match self
            .retry("put", handle, || self.inner.put(handle, data.clone(), mode))
            .await
        {
            Ok(()) => Ok(()),
            // Only transient failures are retried, so a second attempt means
            // an earlier one may have written the object.
            Err(f)
                if mode == PutMode::Create
                    && f.err.kind() == ErrorKind::AlreadyExists
                    && f.attempts > 1 =>
            {
                self.resolve_create_conflict(handle, &data, f.err).await
            }
            Err(f) => Err(f.err),
        }
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        self.retry("get", handle, || self.inner.get(handle, range.clone()))
            .await
            .map_err(|f| f.err)
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        self.retry("head", handle, || self.inner.head(handle))
            .await
            .map_err(|f| f.err)
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        self.retry("list", &kind, || self.inner.list(kind))
            .await
            .map_err(|f| f.err)
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        self.retry("delete", handle, || self.inner.delete(handle))
            .await
            .map_err(|f| f.err)
    }

    async fn create(&self) -> Result<()> {
        self.retry("create", &"repository", || self.inner.create())
            .await
            .map_err(|f| f.err)
    }
}
