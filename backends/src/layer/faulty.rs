//! Fault injection, **for tests only**: the engine's tests (and ours) use it
//! to check what happens when a backend misbehaves. It is compiled only with
//! the cargo feature `testing`, which the crates of this workspace enable in
//! their dev-dependencies alone, so no shipped binary contains it.
//!
//! A [`FaultPlan`] says what goes wrong: a seeded fraction of calls failing
//! with a given kind, a disk that fills up, latency, a call that hangs
//! forever, reads that come back short. At run time the backend can be
//! switched "down" and back up ([`FaultyBackend::set_failing`]), and the
//! next N calls can be made to fail ([`FaultyBackend::fail_next`]).

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Op;
use crate::{
    Backend, BackendError, Capabilities, ErrorKind, Handle, Kind, ObjectMeta, PutMode, Result,
};

/// What a [`FaultyBackend`] does wrong. The default does nothing wrong.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Seed of the generator that picks the failing calls, so a failing
    /// test can be replayed (given the same order of calls).
    pub seed: u64,
    /// Fraction of calls (among `fail_ops`) that fail, 0.0 to 1.0.
    pub fail_fraction: f64,
    /// The kind of the injected failures (also used by `fail_next`).
    pub fail_kind: ErrorKind,
    /// The operations `fail_fraction` applies to.
    pub fail_ops: Vec<Op>,
    /// Inject failures *after* a successful call to the inner backend
    /// instead of before it: the operation took effect but the caller sees
    /// an error, as when a response is lost. Applies to `fail_fraction` and
    /// `fail_next`.
    pub fail_after_call: bool,
    /// Puts fail with `StorageFull` ("disk full") once the bytes written by
    /// successful puts would exceed this. Deletes do not free space.
    pub disk_full_after_bytes: Option<u64>,
    /// Added to every call, before it reaches the inner backend.
    pub latency: Option<Duration>,
    /// The Nth call (1-based, counting every operation) never returns.
    pub hang_on_call: Option<u64>,
    /// Every successful get returns this many bytes fewer (at the end), as
    /// a server that sends a short object.
    pub truncate_reads_by: Option<u64>,
    /// The kind of error every call gets while the backend is switched down
    /// with [`FaultyBackend::set_failing`].
    pub down_kind: ErrorKind,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            seed: 0,
            fail_fraction: 0.0,
            fail_kind: ErrorKind::Transient,
            fail_ops: Op::ALL.to_vec(),
            fail_after_call: false,
            disk_full_after_bytes: None,
            latency: None,
            hang_on_call: None,
            truncate_reads_by: None,
            down_kind: ErrorKind::Unreachable,
        }
    }
}

/// Wraps a backend and makes it fail according to a [`FaultPlan`]. Test-only.
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: Mutex<FaultPlan>,
    rng: Mutex<StdRng>,
    failing: AtomicBool,
    /// Queued one-shot failures from `fail_next`.
    queued: Mutex<VecDeque<ErrorKind>>,
    calls: AtomicU64,
    injected: AtomicU64,
    written: AtomicU64,
}

/// Lock a mutex of this module; none is held across a panic that matters,
/// so a poisoned one still has valid contents.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> Self {
        FaultyBackend {
            inner,
            rng: Mutex::new(StdRng::seed_from_u64(plan.seed)),
            plan: Mutex::new(plan),
            failing: AtomicBool::new(false),
            queued: Mutex::new(VecDeque::new()),
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Switch the backend down (every call fails with the plan's
    /// `down_kind`) or back up, to simulate an outage and its recovery.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// The next `count` calls (of any operation) fail with `kind`, before or
    /// after reaching the inner backend as the plan's `fail_after_call` says.
    pub fn fail_next(&self, count: usize, kind: ErrorKind) {
        lock(&self.queued).extend(std::iter::repeat_n(kind, count));
    }

    /// Replace the plan (and reseed the generator) at run time. The call
    /// counter and the bytes written are kept.
    pub fn set_plan(&self, plan: FaultPlan) {
        *lock(&self.rng) = StdRng::seed_from_u64(plan.seed);
        *lock(&self.plan) = plan;
    }

    pub fn plan(&self) -> FaultPlan {
        lock(&self.plan).clone()
    }

    /// Calls received so far, all operations together.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Failures injected so far (down, queued, random and disk full).
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// Bytes written by successful puts, as counted for `disk_full_after_bytes`.
    pub fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    fn fault(
        &self,
        kind: ErrorKind,
        why: &str,
        op: Op,
        what: &(dyn fmt::Display + Sync),
    ) -> BackendError {
        self.injected.fetch_add(1, Ordering::SeqCst);
        BackendError::new(
            kind,
            format!("{what} ({self}): injected fault: {why} on {op}"),
        )
    }

    /// Everything that happens before the inner call. Returns the failure
    /// to inject after the call, if any.
    async fn before(&self, op: Op, what: &(dyn fmt::Display + Sync)) -> Result<Option<ErrorKind>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let plan = self.plan();
        if plan.hang_on_call == Some(n) {
            tracing::debug!(call = n, %op, "injected hang");
            std::future::pending::<()>().await;
        }
        if let Some(latency) = plan.latency {
            tokio::time::sleep(latency).await;
        }
        if self.is_failing() {
            return Err(self.fault(plan.down_kind, "backend down", op, what));
        }
        let chosen = lock(&self.queued).pop_front().or_else(|| {
            let hit = plan.fail_fraction > 0.0
                && plan.fail_ops.contains(&op)
                && lock(&self.rng).random::<f64>() < plan.fail_fraction;
            hit.then_some(plan.fail_kind)
        });
        match chosen {
            Some(kind) if !plan.fail_after_call => {
                Err(self.fault(kind, "planned failure", op, what))
            }
            other => Ok(other),
        }
    }

    /// Apply a failure chosen by `before` to a call that has completed.
    fn after<T>(
        &self,
        pending: Option<ErrorKind>,
        op: Op,
        what: &(dyn fmt::Display + Sync),
        r: Result<T>,
    ) -> Result<T> {
        match (pending, r) {
            // Only a call that succeeded can lose its response: a failure
            // stays the failure it is.
            (Some(kind), Ok(_)) => Err(self.fault(kind, "lost response", op, what)),
            (_, r) => r,
        }
    }

    /// Reserve `len` bytes of the simulated disk, or fail as a full disk.
    fn reserve(
        &self,
        len: u64,
        limit: Option<u64>,
        what: &(dyn fmt::Display + Sync),
    ) -> Result<()> {
        let Some(limit) = limit else {
            self.written.fetch_add(len, Ordering::SeqCst);
            return Ok(());
        };
        self.written
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                w.checked_add(len).filter(|&t| t <= limit)
            })
            .map(|_| ())
            .map_err(|_| self.fault(ErrorKind::StorageFull, "disk full", Op::Put, what))
    }
}

impl fmt::Debug for FaultyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("inner", &self.inner)
            .field("plan", &*lock(&self.plan))
            .field("failing", &self.is_failing())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FaultyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "faulty({})", self.inner)
    }
}

#[async_trait]
impl Backend for FaultyBackend {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        let pending = self.before(Op::Put, handle).await?;
        let len = data.len() as u64;
        let limit = lock(&self.plan).disk_full_after_bytes;
        self.reserve(len, limit, handle)?;
        let r = self.inner.put(handle, data, mode).await;
        if r.is_err() {
            self.written.fetch_sub(len, Ordering::SeqCst);
        }
        self.after(pending, Op::Put, handle, r)
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        let pending = self.before(Op::Get, handle).await?;
        let r = self.inner.get(handle, range).await;
        let truncate = lock(&self.plan).truncate_reads_by;
        let r = match (r, truncate) {
            (Ok(data), Some(by)) => {
                let keep = (data.len() as u64).saturating_sub(by);
                // keep <= data.len(), which is a usize.
                Ok(data.slice(..usize::try_from(keep).unwrap_or(data.len())))
            }
            (r, _) => r,
        };
        self.after(pending, Op::Get, handle, r)
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        let pending = self.before(Op::Head, handle).await?;
        let r = self.inner.head(handle).await;
        self.after(pending, Op::Head, handle, r)
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        let pending = self.before(Op::List, &kind).await?;
        let r = self.inner.list(kind).await;
        self.after(pending, Op::List, &kind, r)
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let pending = self.before(Op::Delete, handle).await?;
        let r = self.inner.delete(handle).await;
        self.after(pending, Op::Delete, handle, r)
    }

    async fn create(&self) -> Result<()> {
        let pending = self.before(Op::Create, &"repository").await?;
        let r = self.inner.create().await;
        self.after(pending, Op::Create, &"repository", r)
    }
}
