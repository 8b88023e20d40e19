//! The conformance suite: one set of checks of the [`Backend`] contract that
//! every implementation must pass, written once and run against each of
//! them (the tests of `memory`, `local` and the decorators, the tests of the
//! network backends, and `cairn backend verify URL` against a real bucket).
//!
//! **The suite writes to and deletes from the backend it is given.** It
//! assumes an empty repository namespace (a fresh directory, bucket or
//! prefix): it writes the `config` object among others. Every other name it
//! uses contains a random run id, and it deletes what it wrote, also when a
//! case fails.
//!
//! Each case is an `async fn` returning `Result<(), String>` whose error
//! names the case's object (kind and name) and what was expected. Cases run
//! one after another, each in its own task, so a panicking backend fails
//! its case instead of the whole run.

mod cases;
mod env;
pub mod support;

pub use env::{fresh_location, loud_skip, server_from_env};

use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Backend, Kind};

use cases::Ctx;

/// Sizes of the suite's workload, and the extra views of the same location
/// that the error-mapping cases need.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Size of the object of the `large_object` case.
    pub large_object_bytes: usize,
    /// Objects written and listed by the `many_objects` case; the default
    /// is more than one page of an S3 listing (1000).
    pub many_objects: usize,
    /// Concurrent requests in the `many_objects` and `concurrent_writers`
    /// cases.
    pub concurrency: usize,
    /// The same location opened with credentials the service rejects
    /// (wrong secret, unknown key). When given, the `unauthenticated` case
    /// checks that every call through it says `Unauthenticated`.
    pub rejected_credentials: Option<Arc<dyn Backend>>,
    /// The same location opened with credentials that may read and list
    /// but not write or delete. When given, the `permission_denied` case
    /// checks reads work and writes say `PermissionDenied`.
    pub read_only: Option<Arc<dyn Backend>>,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        SuiteOptions {
            large_object_bytes: 100 * 1024 * 1024,
            many_objects: 1100,
            concurrency: 8,
            rejected_credentials: None,
            read_only: None,
        }
    }
}

/// The outcome of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub name: &'static str,
    pub outcome: Result<(), String>,
    pub elapsed: Duration,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(()) => write!(f, "ok   {} ({:.2?})", self.name, self.elapsed),
            Err(e) => write!(f, "FAIL {} ({:.2?}): {e}", self.name, self.elapsed),
        }
    }
}

fn roundtrip_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Config => "roundtrip_config",
        Kind::Key => "roundtrip_key",
        Kind::Snapshot => "roundtrip_snapshot",
        Kind::Index => "roundtrip_index",
        Kind::Pack => "roundtrip_pack",
        Kind::Lock => "roundtrip_lock",
        Kind::Marker => "roundtrip_marker",
        Kind::Audit => "roundtrip_audit",
        Kind::Keyring => "roundtrip_keyring",
    }
}

/// Run every case against `backend` and return their outcomes in order.
/// Needs a tokio runtime (cases spawn tasks); a multi-threaded one makes the
/// concurrency cases meaningful.
pub async fn run(backend: Arc<dyn Backend>, opts: &SuiteOptions) -> Vec<CaseResult> {
    let cx = Arc::new(Ctx::new(backend, opts.clone()));
    let mut results = Vec::new();
    results.push(run_case(&cx, "create", cases::create(cx.clone())).await);
    for kind in Kind::ALL {
        let case = cases::roundtrip(cx.clone(), kind);
        results.push(run_case(&cx, roundtrip_name(kind), case).await);
    }
    results.push(run_case(&cx, "ranged_reads", cases::ranged_reads(cx.clone())).await);
    results.push(run_case(&cx, "zero_byte_object", cases::zero_byte_object(cx.clone())).await);
    results.push(run_case(&cx, "large_object", cases::large_object(cx.clone())).await);
    results.push(run_case(&cx, "create_only_put", cases::create_only_put(cx.clone())).await);
    results.push(run_case(&cx, "overwrite_put", cases::overwrite_put(cx.clone())).await);
    results.push(run_case(&cx, "missing_objects", cases::missing_objects(cx.clone())).await);
    results.push(run_case(&cx, "allowed_names", cases::allowed_names(cx.clone())).await);
    results.push(run_case(&cx, "many_objects", cases::many_objects(cx.clone())).await);
    results.push(
        run_case(
            &cx,
            "concurrent_writers",
            cases::concurrent_writers(cx.clone()),
        )
        .await,
    );
    results.push(
        run_case(
            &cx,
            "no_partial_or_temporary_objects_listed",
            cases::no_partial_or_temporary_objects(cx.clone()),
        )
        .await,
    );
    // Error mapping beyond NotFound needs other credentials for the same
    // location; without them the cases are not run (and not listed).
    if let Some(rejected) = opts.rejected_credentials.clone() {
        let case = cases::unauthenticated(cx.clone(), rejected);
        results.push(run_case(&cx, "unauthenticated", case).await);
    }
    if let Some(reader) = opts.read_only.clone() {
        let case = cases::permission_denied(cx.clone(), reader);
        results.push(run_case(&cx, "permission_denied", case).await);
    }
    results.push(
        run_case(
            &cx,
            "nothing_left_behind",
            cases::nothing_left_behind(cx.clone()),
        )
        .await,
    );
    results
}

async fn run_case<F>(cx: &Arc<Ctx>, name: &'static str, case: F) -> CaseResult
where
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let start = Instant::now();
    let outcome = match tokio::spawn(case).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(format!("panicked: {}", panic_message(&*e.into_panic()))),
        Err(e) => Err(format!("task failed: {e}")),
    };
    let outcome = match (outcome, cx.cleanup().await) {
        (outcome, Ok(())) => outcome,
        (Ok(()), Err(c)) => Err(format!("cleanup failed: {c}")),
        (Err(e), Err(c)) => Err(format!("{e}; cleanup failed too: {c}")),
    };
    tracing::debug!(case = name, ok = outcome.is_ok(), "conformance case done");
    CaseResult {
        name,
        outcome,
        elapsed: start.elapsed(),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Every case with its outcome, one per line, failures included in full.
pub fn report(results: &[CaseResult]) -> String {
    let failed = results.iter().filter(|r| !r.passed()).count();
    let mut out = format!(
        "{} cases, {} passed, {} failed\n",
        results.len(),
        results.len() - failed,
        failed
    );
    for r in results {
        let _ = writeln!(out, "  {r}");
    }
    out
}

/// Run the suite and panic with a report listing every failing case.
pub async fn assert_conformance(backend: Arc<dyn Backend>, opts: &SuiteOptions) {
    let name = backend.to_string();
    let results = run(backend, opts).await;
    let failures: Vec<&CaseResult> = results.iter().filter(|r| !r.passed()).collect();
    if failures.is_empty() {
        return;
    }
    let mut msg = format!(
        "backend {name} failed {} of {} conformance cases:\n",
        failures.len(),
        results.len()
    );
    for f in &failures {
        let _ = writeln!(msg, "  {f}");
    }
    let _ = write!(msg, "full report:\n{}", report(&results));
    panic!("{msg}");
}
