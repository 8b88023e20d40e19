//! Helpers the backend test binaries share: a port where nothing listens,
//! and the assertion that an operation fails quickly with the right kind
//! (a permanent error must not be retried until it times out).

use std::time::{Duration, Instant};

use crate::{BackendError, ErrorKind};

/// How long a request that must fail fast (bad credentials, nothing
/// listening) may take: long enough for a slow CI machine, far shorter than
/// any retry storm (object_store alone would retry for up to 3 minutes).
pub const FAST: Duration = Duration::from_secs(10);

/// A port on loopback where nothing listens (one just released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local address").port()
}

/// `op` must fail with `want` within [`FAST`]; returns the error.
pub async fn expect_fast<T: std::fmt::Debug>(
    what: &str,
    want: ErrorKind,
    op: impl std::future::Future<Output = Result<T, BackendError>>,
) -> BackendError {
    let start = Instant::now();
    let result = op.await;
    let elapsed = start.elapsed();
    let err = match result {
        Ok(v) => panic!("{what}: expected {want}, but it succeeded: {v:?}"),
        Err(e) => e,
    };
    eprintln!("{what}: {elapsed:.2?}: {err}");
    assert_eq!(err.kind(), want, "{what}: wrong kind for error: {err}");
    assert!(
        elapsed < FAST,
        "{what}: took {elapsed:?} to fail (retrying a permanent error?): {err}"
    );
    err
}
