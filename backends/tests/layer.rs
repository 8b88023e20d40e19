//! Behaviour of each decorator of `layer`. Timing is measured on tokio's
//! paused clock (`start_paused`), never on the wall clock.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_backends::layer::{
    DryRunBackend, FaultPlan, FaultyBackend, LimitBackend, Metrics, MetricsBackend, Op,
    RetryBackend, RetryConfig, ThrottleBackend, ThrottleConfig,
};
use cairn_backends::memory::MemoryBackend;
use cairn_backends::{Backend, Capabilities, ErrorKind, Handle, Kind, ObjectMeta, PutMode, Result};
use tokio::time::Instant;

fn pack(name: &str) -> Handle {
    Handle::new(Kind::Pack, name)
}

fn memory() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::new())
}

fn faulty(inner: Arc<dyn Backend>, plan: FaultPlan) -> Arc<FaultyBackend> {
    Arc::new(FaultyBackend::new(inner, plan))
}

fn quick_retry(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
    }
}

// ---- retry ----

#[tokio::test(start_paused = true)]
async fn retry_succeeds_after_transient_failures() {
    let mem = memory();
    mem.put(&pack("aa01"), Bytes::from_static(b"data"), PutMode::Create)
        .await
        .unwrap();
    let f = faulty(mem, FaultPlan::default());
    let r = RetryBackend::with_config(f.clone(), quick_retry(6));
    f.fail_next(3, ErrorKind::Transient);
    assert_eq!(r.get(&pack("aa01"), None).await.unwrap(), "data");
    assert_eq!(f.calls(), 4);
    f.fail_next(2, ErrorKind::Unreachable);
    assert_eq!(r.head(&pack("aa01")).await.unwrap().size, 4);
    assert_eq!(f.calls(), 7);
}

#[tokio::test(start_paused = true)]
async fn retry_stops_on_permanent_errors() {
    let f = faulty(memory(), FaultPlan::default());
    let r = RetryBackend::with_config(f.clone(), quick_retry(6));
    for kind in [
        ErrorKind::PermissionDenied,
        ErrorKind::Unauthenticated,
        ErrorKind::StorageFull,
        ErrorKind::Corrupt,
        ErrorKind::Other,
    ] {
        let before = f.calls();
        f.fail_next(1, kind);
        let err = r.list(Kind::Index).await.unwrap_err();
        assert_eq!(err.kind(), kind);
        assert_eq!(f.calls() - before, 1, "{kind} was retried");
    }
    // NotFound and AlreadyExists from the backend itself.
    let before = f.calls();
    assert_eq!(
        r.get(&pack("ab01"), None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    r.put(&pack("ab01"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    let err = r
        .put(&pack("ab01"), Bytes::from_static(b"y"), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(f.calls() - before, 3);
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_after_max_attempts_within_the_backoff_bounds() {
    let f = faulty(memory(), FaultPlan::default());
    let config = RetryConfig {
        max_attempts: 5,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(300),
    };
    let r = RetryBackend::with_config(f.clone(), config);
    f.fail_next(100, ErrorKind::Transient);
    let start = Instant::now();
    let err = r.head(&pack("ac01")).await.unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(
        err.to_string().contains("gave up after 5 attempts"),
        "{err}"
    );
    assert_eq!(f.calls(), 5);
    // Full jitter: each backoff is at most min(cap, base * 2^n):
    // 100 + 200 + 300 + 300 ms.
    assert!(elapsed <= Duration::from_millis(900), "{elapsed:?}");
}

#[test]
fn backoff_is_bounded_and_jittered() {
    let c = RetryConfig::default();
    let mut seen = std::collections::HashSet::new();
    for retry in 1..40 {
        let cap = Duration::from_millis(200)
            .saturating_mul(1 << (retry - 1).min(31))
            .min(Duration::from_secs(10));
        for _ in 0..20 {
            let d = c.backoff(retry);
            assert!(d <= cap, "retry {retry}: {d:?} > {cap:?}");
            seen.insert(d);
        }
    }
    assert!(seen.len() > 100, "backoff is not random");
}

#[tokio::test(start_paused = true)]
async fn retried_create_whose_first_attempt_succeeded_is_ok() {
    let mem = memory();
    // The first attempt writes the object, then its response is "lost".
    let f = faulty(
        mem.clone(),
        FaultPlan {
            fail_after_call: true,
            ..FaultPlan::default()
        },
    );
    let r = RetryBackend::with_config(f.clone(), quick_retry(6));
    let lock = Handle::new(Kind::Lock, "mine");
    f.fail_next(1, ErrorKind::Transient);
    r.put(&lock, Bytes::from_static(b"my lock"), PutMode::Create)
        .await
        .unwrap();
    // put (lost), put (AlreadyExists), get (verification)
    assert_eq!(f.calls(), 3);
    assert_eq!(mem.get(&lock, None).await.unwrap(), "my lock");
}

#[tokio::test(start_paused = true)]
async fn retried_create_that_finds_someone_elses_object_fails() {
    let mem = memory();
    let lock = Handle::new(Kind::Lock, "theirs");
    mem.put(&lock, Bytes::from_static(b"their lock"), PutMode::Create)
        .await
        .unwrap();
    let f = faulty(mem.clone(), FaultPlan::default());
    let r = RetryBackend::with_config(f.clone(), quick_retry(6));
    f.fail_next(1, ErrorKind::Transient);
    let err = r
        .put(&lock, Bytes::from_static(b"my lock"), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(mem.get(&lock, None).await.unwrap(), "their lock");
    // A create that was not retried does not read back.
    let before = f.calls();
    let err = r
        .put(&lock, Bytes::from_static(b"their lock"), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(f.calls() - before, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_rides_out_an_outage() {
    let mem = memory();
    mem.put(&pack("ad01"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    let f = faulty(mem, FaultPlan::default());
    let config = RetryConfig {
        max_attempts: 20,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    let r = Arc::new(RetryBackend::with_config(f.clone(), config));
    f.set_failing(true);
    let task = {
        let r = r.clone();
        tokio::spawn(async move { r.get(&pack("ad01"), None).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!task.is_finished());
    assert!(f.calls() >= 2);
    f.set_failing(false);
    assert_eq!(task.await.unwrap().unwrap(), "x");
}

// ---- limit ----

/// Counts requests in flight and remembers the most seen at once.
#[derive(Debug, Default)]
struct Gauge {
    inner: MemoryBackend,
    now: AtomicUsize,
    max: AtomicUsize,
}

impl std::fmt::Display for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gauge")
    }
}

impl Gauge {
    async fn busy<T>(&self, r: Result<T>) -> Result<T> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

#[async_trait]
impl Backend for Gauge {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            default_connections: 16,
            ..Capabilities::default()
        }
    }
    async fn put(&self, h: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        let r = self.inner.put(h, data, mode).await;
        self.busy(r).await
    }
    async fn get(&self, h: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        let r = self.inner.get(h, range).await;
        self.busy(r).await
    }
    async fn head(&self, h: &Handle) -> Result<ObjectMeta> {
        let r = self.inner.head(h).await;
        self.busy(r).await
    }
    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        let r = self.inner.list(kind).await;
        self.busy(r).await
    }
    async fn delete(&self, h: &Handle) -> Result<()> {
        let r = self.inner.delete(h).await;
        self.busy(r).await
    }
}

#[tokio::test(start_paused = true)]
async fn limit_caps_concurrent_requests() {
    let gauge = Arc::new(Gauge::default());
    let limited = Arc::new(LimitBackend::new(gauge.clone(), 3));
    assert_eq!(limited.capabilities().default_connections, 3);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let b = limited.clone();
        tasks.spawn(async move {
            let h = Handle::new(Kind::Index, format!("i{i}"));
            b.put(&h, Bytes::from_static(b"x"), PutMode::Create).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(gauge.max.load(Ordering::SeqCst), 3);
    // 12 requests of 100 ms, 3 at a time.
    assert_eq!(start.elapsed(), Duration::from_millis(400));
    assert_eq!(limited.available(), 3);
}

// ---- throttle ----

#[tokio::test(start_paused = true)]
async fn throttle_paces_uploads_and_downloads() {
    let mem = memory();
    let t = ThrottleBackend::new(
        mem.clone(),
        ThrottleConfig {
            upload_bytes_per_sec: Some(1000),
            download_bytes_per_sec: Some(500),
        },
    );
    let data = Bytes::from(vec![7u8; 5000]);
    let start = Instant::now();
    // The bucket starts with one second's worth (1000 bytes) of burst.
    t.put(&pack("ae01"), data.clone(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    t.put(&pack("ae02"), data.slice(..2000), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(6));

    // Downloads are paced by the size actually returned.
    let start = Instant::now();
    assert_eq!(
        t.get(&pack("ae01"), Some(0..1500)).await.unwrap().len(),
        1500
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        t.get(&pack("ae01"), Some(4900..9000)).await.unwrap().len(),
        100
    );
    assert_eq!(start.elapsed(), Duration::from_millis(2200));
    // Metadata requests are not paced.
    t.head(&pack("ae01")).await.unwrap();
    t.list(Kind::Pack).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(2200));
}

#[tokio::test(start_paused = true)]
async fn throttle_refills_while_idle_and_shares_bandwidth() {
    let t = Arc::new(ThrottleBackend::new(
        memory(),
        ThrottleConfig {
            upload_bytes_per_sec: Some(1000),
            download_bytes_per_sec: None,
        },
    ));
    let start = Instant::now();
    // Ten concurrent 1000-byte puts: 10000 bytes at 1000 B/s with a 1000
    // byte burst finish after 9 s, whatever their interleaving.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let t = t.clone();
        tasks.spawn(async move {
            t.put(
                &pack(&format!("af{i}")),
                Bytes::from(vec![0u8; 1000]),
                PutMode::Create,
            )
            .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_secs(9));
    // After a long pause the burst is back, but no more than one second's worth.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let start = Instant::now();
    t.put(&pack("ag01"), Bytes::from(vec![0u8; 1000]), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    t.put(&pack("ag02"), Bytes::from(vec![0u8; 1000]), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // Downloads are unlimited here.
    let start = Instant::now();
    t.get(&pack("ag01"), None).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// ---- metrics ----

#[tokio::test(start_paused = true)]
async fn metrics_count_requests_errors_bytes_and_latency() {
    let metrics = Metrics::new();
    let slow = faulty(
        memory(),
        FaultPlan {
            latency: Some(Duration::from_millis(10)),
            ..FaultPlan::default()
        },
    );
    let m = MetricsBackend::with_metrics(slow, metrics.clone());
    m.create().await.unwrap();
    m.put(&pack("b001"), Bytes::from(vec![1u8; 100]), PutMode::Create)
        .await
        .unwrap();
    m.put(&pack("b002"), Bytes::from(vec![1u8; 50]), PutMode::Create)
        .await
        .unwrap();
    assert!(m
        .put(&pack("b002"), Bytes::from(vec![1u8; 70]), PutMode::Create)
        .await
        .is_err());
    assert_eq!(m.get(&pack("b001"), None).await.unwrap().len(), 100);
    assert_eq!(m.get(&pack("b001"), Some(10..30)).await.unwrap().len(), 20);
    assert!(m.get(&pack("b404"), None).await.is_err());
    m.head(&pack("b001")).await.unwrap();
    m.list(Kind::Pack).await.unwrap();
    m.delete(&pack("b001")).await.unwrap();

    let s = metrics.snapshot();
    assert_eq!((s.put.requests, s.put.errors, s.put.bytes_up), (3, 1, 150));
    assert_eq!(
        (s.get.requests, s.get.errors, s.get.bytes_down),
        (3, 1, 120)
    );
    assert_eq!(
        (
            s.head.requests,
            s.list.requests,
            s.delete.requests,
            s.create.requests
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(s.put.latency, Duration::from_millis(30));
    assert_eq!(s.get.latency, Duration::from_millis(30));
    let total = s.total();
    assert_eq!((total.requests, total.errors), (10, 2));
    assert_eq!(total.latency, Duration::from_millis(100));
    let labels: Vec<&str> = s.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(labels, ["put", "get", "head", "list", "delete", "create"]);
    assert_eq!(s.op(Op::Get), &s.get);
}

// ---- faulty ----

#[tokio::test]
async fn faulty_disk_fills_up() {
    let f = faulty(
        memory(),
        FaultPlan {
            disk_full_after_bytes: Some(1000),
            ..FaultPlan::default()
        },
    );
    f.put(&pack("c001"), Bytes::from(vec![0u8; 600]), PutMode::Create)
        .await
        .unwrap();
    let err = f
        .put(&pack("c002"), Bytes::from(vec![0u8; 600]), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StorageFull);
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(
        f.get(&pack("c002"), None).await.is_err(),
        "a failed put must not write"
    );
    f.put(&pack("c003"), Bytes::from(vec![0u8; 400]), PutMode::Create)
        .await
        .unwrap();
    let err = f
        .put(&pack("c004"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StorageFull);
    assert_eq!(f.bytes_written(), 1000);
    // A put the inner backend rejects does not use space.
    let err = f
        .put(&pack("c001"), Bytes::new(), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(f.bytes_written(), 1000);
}

#[tokio::test]
async fn faulty_fraction_is_reproducible() {
    let outcomes = |seed| async move {
        let f = faulty(
            memory(),
            FaultPlan {
                seed,
                fail_fraction: 0.5,
                fail_kind: ErrorKind::Transient,
                fail_ops: vec![Op::List],
                ..FaultPlan::default()
            },
        );
        let mut v = Vec::new();
        for _ in 0..200 {
            v.push(f.list(Kind::Lock).await.is_ok());
        }
        // Other operations are not affected.
        for _ in 0..50 {
            assert!(f.head(&pack("zz01")).await.unwrap_err().kind() == ErrorKind::NotFound);
        }
        v
    };
    let a = outcomes(42).await;
    assert_eq!(a, outcomes(42).await);
    assert_ne!(a, outcomes(43).await);
    let failures = a.iter().filter(|ok| !**ok).count();
    assert!((60..140).contains(&failures), "{failures} of 200");
}

#[tokio::test(start_paused = true)]
async fn faulty_hangs_on_the_nth_call() {
    let f = faulty(
        memory(),
        FaultPlan {
            hang_on_call: Some(2),
            ..FaultPlan::default()
        },
    );
    f.list(Kind::Index).await.unwrap();
    let hung = tokio::time::timeout(Duration::from_secs(3600), f.list(Kind::Index)).await;
    assert!(hung.is_err(), "second call returned");
    f.list(Kind::Index).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn faulty_adds_latency_and_truncates_reads() {
    let f = faulty(
        memory(),
        FaultPlan {
            latency: Some(Duration::from_millis(250)),
            truncate_reads_by: Some(10),
            ..FaultPlan::default()
        },
    );
    let start = Instant::now();
    f.put(&pack("d001"), Bytes::from(vec![5u8; 100]), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(f.get(&pack("d001"), None).await.unwrap().len(), 90);
    assert_eq!(f.get(&pack("d001"), Some(0..5)).await.unwrap().len(), 0);
    assert_eq!(start.elapsed(), Duration::from_millis(750));
}

#[tokio::test]
async fn faulty_goes_down_and_recovers() {
    let f = faulty(memory(), FaultPlan::default());
    f.put(&pack("e001"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    f.set_failing(true);
    let err = f.get(&pack("e001"), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable);
    assert!(err.is_transient());
    assert!(f
        .put(&pack("e002"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .is_err());
    f.set_failing(false);
    assert_eq!(f.get(&pack("e001"), None).await.unwrap(), "x");
    assert!(
        f.get(&pack("e002"), None).await.is_err(),
        "a put while down must not write"
    );
    assert_eq!(f.injected(), 2);
}

#[tokio::test]
async fn faulty_lost_response_still_takes_effect() {
    let mem = memory();
    let f = faulty(
        mem.clone(),
        FaultPlan {
            fail_after_call: true,
            ..FaultPlan::default()
        },
    );
    f.fail_next(1, ErrorKind::Transient);
    let err = f
        .put(&pack("f001"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(mem.get(&pack("f001"), None).await.unwrap(), "x");
    // A call that fails by itself keeps its own error.
    f.fail_next(1, ErrorKind::Transient);
    let err = f.get(&pack("f404"), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

// ---- dry run ----

#[tokio::test]
async fn dry_run_reads_but_does_not_write() {
    let mem = memory();
    mem.put(&pack("g001"), Bytes::from_static(b"old"), PutMode::Create)
        .await
        .unwrap();
    let d = DryRunBackend::new(mem.clone());
    assert_eq!(d.get(&pack("g001"), None).await.unwrap(), "old");
    assert_eq!(d.list(Kind::Pack).await.unwrap().len(), 1);
    d.put(&pack("g002"), Bytes::from_static(b"new"), PutMode::Create)
        .await
        .unwrap();
    d.put(
        &pack("g001"),
        Bytes::from_static(b"over"),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    d.delete(&pack("g001")).await.unwrap();
    d.create().await.unwrap();
    assert_eq!(mem.list(Kind::Pack).await.unwrap().len(), 1);
    assert_eq!(mem.get(&pack("g001"), None).await.unwrap(), "old");
    assert_eq!((d.puts(), d.put_bytes(), d.deletes()), (2, 7, 1));
    assert!(d.to_string().starts_with("dry-run("));
}
