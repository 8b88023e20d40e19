//! The conformance suite against every backend of this crate: memory, local
//! (with the full 100 MiB large object) and each decorator around memory.

use std::sync::Arc;

use cairn_backends::conformance::{assert_conformance, run, SuiteOptions};
use cairn_backends::layer::{
    FaultPlan, FaultyBackend, LimitBackend, MetricsBackend, Op, RetryBackend, RetryConfig,
    ThrottleBackend, ThrottleConfig,
};
use cairn_backends::local::LocalBackend;
use cairn_backends::memory::MemoryBackend;
use cairn_backends::{Backend, ErrorKind};

/// Smaller than the default large object: memory and decorators do not
/// need 100 MiB to show a bug, and debug builds copy it several times.
fn small() -> SuiteOptions {
    SuiteOptions {
        large_object_bytes: 8 << 20,
        ..SuiteOptions::default()
    }
}

fn memory() -> Arc<dyn Backend> {
    Arc::new(MemoryBackend::new())
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_attempts: 10,
        base_delay: std::time::Duration::from_micros(100),
        max_delay: std::time::Duration::from_millis(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_conforms() {
    assert_conformance(memory(), &small()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
    assert_conformance(backend, &SuiteOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_conforms() {
    assert_conformance(Arc::new(RetryBackend::new(memory())), &small()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_conforms() {
    assert_conformance(Arc::new(LimitBackend::new(memory(), 3)), &small()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttle_unlimited_conforms() {
    let b = ThrottleBackend::new(memory(), ThrottleConfig::default());
    assert_conformance(Arc::new(b), &small()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_conforms() {
    let b = Arc::new(MetricsBackend::new(memory()));
    let metrics = b.metrics().clone();
    assert_conformance(b, &small()).await;
    let snap = metrics.snapshot();
    assert!(snap.put.requests > 1100, "{snap:?}");
    assert!(snap.get.bytes_down >= 8 << 20, "{snap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faulty_without_faults_conforms() {
    let b = FaultyBackend::new(memory(), FaultPlan::default());
    assert_conformance(Arc::new(b), &small()).await;
}

/// Random transient failures, before the call or with the response lost
/// after it, are invisible through a retry layer: the suite still passes.
/// (Except a lost response to a delete: the retry then sees `NotFound`,
/// which the retry layer reports as is; see `layer::RetryBackend`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_over_transient_faults_conforms() {
    for fail_after_call in [false, true] {
        let faulty = Arc::new(FaultyBackend::new(
            memory(),
            FaultPlan {
                seed: 7,
                fail_fraction: 0.1,
                fail_kind: ErrorKind::Transient,
                fail_after_call,
                fail_ops: if fail_after_call {
                    vec![Op::Put, Op::Get, Op::Head, Op::List, Op::Create]
                } else {
                    Op::ALL.to_vec()
                },
                ..FaultPlan::default()
            },
        ));
        let retry = RetryBackend::with_config(faulty.clone(), fast_retry());
        assert_conformance(Arc::new(retry), &small()).await;
        assert!(
            faulty.injected() > 100,
            "only {} faults injected",
            faulty.injected()
        );
    }
}

/// A stack as the engine might build it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stacked_layers_conform() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
    let limited = Arc::new(LimitBackend::new(local, 4));
    let metered = Arc::new(MetricsBackend::new(limited));
    let retry = Arc::new(RetryBackend::with_config(metered, fast_retry()));
    let opts = SuiteOptions {
        large_object_bytes: 1 << 20,
        many_objects: 300,
        concurrency: 8,
        ..SuiteOptions::default()
    };
    assert_conformance(retry, &opts).await;
}

/// The suite reports failures instead of panicking: a backend that is down
/// fails cases with messages naming the objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_reports_a_broken_backend() {
    let faulty = FaultyBackend::new(memory(), FaultPlan::default());
    faulty.set_failing(true);
    let results = run(Arc::new(faulty), &small()).await;
    assert!(results.iter().all(|r| r.outcome.is_err()), "{results:?}");
    let roundtrip = results.iter().find(|r| r.name == "roundtrip_pack").unwrap();
    let msg = roundtrip.outcome.as_ref().unwrap_err();
    assert!(msg.contains("pack") && msg.contains("unreachable"), "{msg}");
}

/// A backend whose create-only put overwrites fails the create cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_catches_a_create_that_overwrites() {
    #[derive(Debug)]
    struct Sloppy(MemoryBackend);
    impl std::fmt::Display for Sloppy {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("sloppy")
        }
    }
    #[async_trait::async_trait]
    impl Backend for Sloppy {
        fn capabilities(&self) -> cairn_backends::Capabilities {
            self.0.capabilities()
        }
        async fn put(
            &self,
            h: &cairn_backends::Handle,
            data: bytes::Bytes,
            _mode: cairn_backends::PutMode,
        ) -> cairn_backends::Result<()> {
            self.0
                .put(h, data, cairn_backends::PutMode::Overwrite)
                .await
        }
        async fn get(
            &self,
            h: &cairn_backends::Handle,
            r: Option<std::ops::Range<u64>>,
        ) -> cairn_backends::Result<bytes::Bytes> {
            self.0.get(h, r).await
        }
        async fn head(
            &self,
            h: &cairn_backends::Handle,
        ) -> cairn_backends::Result<cairn_backends::ObjectMeta> {
            self.0.head(h).await
        }
        async fn list(
            &self,
            k: cairn_backends::Kind,
        ) -> cairn_backends::Result<Vec<cairn_backends::ObjectMeta>> {
            self.0.list(k).await
        }
        async fn delete(&self, h: &cairn_backends::Handle) -> cairn_backends::Result<()> {
            self.0.delete(h).await
        }
    }
    let results = run(Arc::new(Sloppy(MemoryBackend::new())), &small()).await;
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.outcome.is_err())
        .map(|r| r.name)
        .collect();
    assert_eq!(
        failed,
        ["create_only_put", "concurrent_writers"],
        "{results:#?}"
    );
}

/// A view of `inner` on which every `ops` call fails with `kind`.
fn failing_view(inner: &Arc<dyn Backend>, ops: Vec<Op>, kind: ErrorKind) -> Arc<dyn Backend> {
    Arc::new(FaultyBackend::new(
        inner.clone(),
        FaultPlan {
            fail_fraction: 1.0,
            fail_kind: kind,
            fail_ops: ops,
            ..FaultPlan::default()
        },
    ))
}

fn outcome<'a>(
    results: &'a [cairn_backends::conformance::CaseResult],
    name: &str,
) -> &'a Result<(), String> {
    &results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("case {name} did not run: {results:#?}"))
        .outcome
}

/// The error-mapping cases pass for views that map errors as the contract
/// says, and catch views that do not: rejected credentials reported as
/// NotFound (which would make `init` overwrite a repository it cannot
/// see), and "read-only" credentials that can write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_checks_error_mapping_when_given_other_credentials() {
    let store = memory();
    let good = SuiteOptions {
        rejected_credentials: Some(failing_view(
            &store,
            Op::ALL.to_vec(),
            ErrorKind::Unauthenticated,
        )),
        read_only: Some(failing_view(
            &store,
            vec![Op::Put, Op::Delete],
            ErrorKind::PermissionDenied,
        )),
        ..small()
    };
    assert_conformance(store, &good).await;

    let store = memory();
    let bad = SuiteOptions {
        rejected_credentials: Some(failing_view(&store, Op::ALL.to_vec(), ErrorKind::NotFound)),
        // Reads fine, but writes go through.
        read_only: Some(store.clone()),
        ..small()
    };
    let results = run(store, &bad).await;
    let unauth = outcome(&results, "unauthenticated").as_ref().unwrap_err();
    assert!(unauth.contains("expected unauthenticated"), "{unauth}");
    let denied = outcome(&results, "permission_denied").as_ref().unwrap_err();
    assert!(denied.contains("expected permission denied"), "{denied}");
    // Without the views, the cases do not run.
    let results = run(memory(), &small()).await;
    assert!(!results
        .iter()
        .any(|r| r.name == "unauthenticated" || r.name == "permission_denied"));
}
