//! Per-operation counters of one backend: requests, errors, bytes and
//! cumulative latency, kept in atomics so recording costs no lock. The
//! counters only grow, which is what a Prometheus exporter expects
//! (`cairn_backend_requests_total{op="put"}` and so on); an average latency
//! is `latency / requests`.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::Op;
use crate::{Backend, Capabilities, Handle, Kind, ObjectMeta, PutMode, Result};

#[derive(Debug, Default)]
struct OpCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    latency_nanos: AtomicU64,
}

/// Live counters, shared (in an `Arc`) between a [`MetricsBackend`] and
/// whoever reports them.
#[derive(Debug, Default)]
pub struct Metrics {
    ops: [OpCounters; Op::ALL.len()],
}

/// The counters of one operation at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Requests finished, successful or not.
    pub requests: u64,
    /// Requests that returned an error (of any kind, `NotFound` included).
    pub errors: u64,
    /// Payload bytes of successful puts.
    pub bytes_up: u64,
    /// Bytes returned by successful gets.
    pub bytes_down: u64,
    /// Time spent in requests, summed over all of them.
    pub latency: Duration,
}

impl OpStats {
    fn add(&mut self, other: &OpStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
        self.latency += other.latency;
    }
}

/// A copy of all counters, per operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub put: OpStats,
    pub get: OpStats,
    pub head: OpStats,
    pub list: OpStats,
    pub delete: OpStats,
    pub create: OpStats,
}

impl MetricsSnapshot {
    pub fn op(&self, op: Op) -> &OpStats {
        match op {
            Op::Put => &self.put,
            Op::Get => &self.get,
            Op::Head => &self.head,
            Op::List => &self.list,
            Op::Delete => &self.delete,
            Op::Create => &self.create,
        }
    }

    fn op_mut(&mut self, op: Op) -> &mut OpStats {
        match op {
            Op::Put => &mut self.put,
            Op::Get => &mut self.get,
            Op::Head => &mut self.head,
            Op::List => &mut self.list,
            Op::Delete => &mut self.delete,
            Op::Create => &mut self.create,
        }
    }

    /// Every operation with its counters, for exporters.
    pub fn iter(&self) -> impl Iterator<Item = (Op, &OpStats)> + '_ {
        Op::ALL.into_iter().map(move |op| (op, self.op(op)))
    }

    /// All operations added up.
    pub fn total(&self) -> OpStats {
        let mut total = OpStats::default();
        for (_, s) in self.iter() {
            total.add(s);
        }
        total
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A consistent-enough copy: each counter is read atomically, the set of
    /// them is not (a request finishing meanwhile may be half counted).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut snap = MetricsSnapshot::default();
        for op in Op::ALL {
            let c = &self.ops[op.index()];
            *snap.op_mut(op) = OpStats {
                requests: c.requests.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                bytes_up: c.bytes_up.load(Ordering::Relaxed),
                bytes_down: c.bytes_down.load(Ordering::Relaxed),
                latency: Duration::from_nanos(c.latency_nanos.load(Ordering::Relaxed)),
            };
        }
        snap
    }

    fn record(&self, op: Op, ok: bool, elapsed: Duration, bytes_up: u64, bytes_down: u64) {
        let c = &self.ops[op.index()];
        c.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes_up.fetch_add(bytes_up, Ordering::Relaxed);
        c.bytes_down.fetch_add(bytes_down, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        c.latency_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Records every request to the backend it wraps into a [`Metrics`].
pub struct MetricsBackend {
    inner: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl MetricsBackend {
    /// Record into fresh counters; see [`MetricsBackend::metrics`].
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self::with_metrics(inner, Metrics::new())
    }

    /// Record into existing counters (e.g. shared by several layers or
    /// registered with an exporter beforehand).
    pub fn with_metrics(inner: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Self {
        MetricsBackend { inner, metrics }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

impl fmt::Debug for MetricsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsBackend")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for MetricsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl Backend for MetricsBackend {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        let start = Instant::now();
        let len = data.len() as u64;
        let r = self.inner.put(handle, data, mode).await;
        let up = if r.is_ok() { len } else { 0 };
        self.metrics
            .record(Op::Put, r.is_ok(), start.elapsed(), up, 0);
        r
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        let start = Instant::now();
        let r = self.inner.get(handle, range).await;
        let down = r.as_ref().map_or(0, |d| d.len() as u64);
        self.metrics
            .record(Op::Get, r.is_ok(), start.elapsed(), 0, down);
        r
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        let start = Instant::now();
        let r = self.inner.head(handle).await;
        self.metrics
            .record(Op::Head, r.is_ok(), start.elapsed(), 0, 0);
        r
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        let start = Instant::now();
        let r = self.inner.list(kind).await;
        self.metrics
            .record(Op::List, r.is_ok(), start.elapsed(), 0, 0);
        r
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let start = Instant::now();
        let r = self.inner.delete(handle).await;
        self.metrics
            .record(Op::Delete, r.is_ok(), start.elapsed(), 0, 0);
        r
    }

    async fn create(&self) -> Result<()> {
        let start = Instant::now();
        let r = self.inner.create().await;
        self.metrics
            .record(Op::Create, r.is_ok(), start.elapsed(), 0, 0);
        r
    }
}
