//! The network object-store backends (S3, Azure Blob, GCS) against real
//! servers on loopback: the conformance suite, and how each backend reports
//! wrong credentials, a missing bucket and a server that is not running.
//!
//! Start the servers and load their settings first:
//!
//! ```sh
//! scripts/test-servers start && eval "$(scripts/test-servers env)"
//! cargo test -p cairn-backends --features s3,azure,gcs --test servers
//! ```
//!
//! A test whose server is not configured prints a loud `SKIPPED` line and
//! passes, except under `CI=true`, where it fails: CI must not go green
//! without having talked to the servers. The "not running" tests need no
//! server and always run.
#![cfg(all(feature = "s3", feature = "azure", feature = "gcs"))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_backends::azure::AzureBackend;
use cairn_backends::conformance::support::{closed_port, expect_fast};
use cairn_backends::conformance::{
    assert_conformance, fresh_location as fresh, server_from_env as configured, SuiteOptions,
};
use cairn_backends::gcs::GcsBackend;
use cairn_backends::s3::S3Backend;
use cairn_backends::{Backend, ErrorKind, Handle, Kind, PutMode};

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn suite() -> SuiteOptions {
    SuiteOptions::default()
}

fn key() -> Handle {
    Handle::new(Kind::Key, "probe")
}

/// Wrong credentials: put, get and list all say Unauthenticated, quickly,
/// and no message shows the secret.
async fn check_wrong_credentials(backend: &dyn Backend, secret: &str) {
    let errs = [
        expect_fast(
            "put with wrong credentials",
            ErrorKind::Unauthenticated,
            backend.put(&key(), Bytes::from_static(b"x"), PutMode::Overwrite),
        )
        .await,
        expect_fast(
            "get with wrong credentials",
            ErrorKind::Unauthenticated,
            backend.get(&key(), None),
        )
        .await,
        expect_fast(
            "head with wrong credentials",
            ErrorKind::Unauthenticated,
            backend.head(&key()),
        )
        .await,
        expect_fast(
            "list with wrong credentials",
            ErrorKind::Unauthenticated,
            backend.list(Kind::Key),
        )
        .await,
        expect_fast(
            "create with wrong credentials",
            ErrorKind::Unauthenticated,
            backend.create(),
        )
        .await,
    ];
    for e in errs {
        assert!(
            !format!("{e} {e:?}").contains(secret),
            "the secret leaked into an error"
        );
    }
    assert!(!backend.to_string().contains(secret));
    assert!(!format!("{backend:?}").contains(secret));
}

/// A missing bucket: `create` and reads say NotFound, naming the bucket.
async fn check_missing_bucket(backend: &dyn Backend, bucket: &str) {
    let err = expect_fast(
        "create in a missing bucket",
        ErrorKind::NotFound,
        backend.create(),
    )
    .await;
    assert!(
        err.to_string().contains(bucket) && err.to_string().contains("does not exist"),
        "unclear message for a missing bucket: {err}"
    );
    expect_fast(
        "get in a missing bucket",
        ErrorKind::NotFound,
        backend.get(&key(), None),
    )
    .await;
}

async fn check_unreachable(backend: &dyn Backend) {
    expect_fast(
        "create without a server",
        ErrorKind::Unreachable,
        backend.create(),
    )
    .await;
    expect_fast(
        "put without a server",
        ErrorKind::Unreachable,
        backend.put(&key(), Bytes::from_static(b"x"), PutMode::Create),
    )
    .await;
    expect_fast(
        "get without a server",
        ErrorKind::Unreachable,
        backend.get(&key(), None),
    )
    .await;
    expect_fast(
        "list without a server",
        ErrorKind::Unreachable,
        backend.list(Kind::Pack),
    )
    .await;
}

// ---------------------------------------------------------------- S3

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_conforms() {
    let Some(base) = configured("s3", "CAIRN_TEST_REPO_S3") else {
        return;
    };
    let Some(reader_id) = configured("s3 read-only user", "CAIRN_TEST_S3_READER_KEY_ID") else {
        return;
    };
    let reader_secret = std::env::var("CAIRN_TEST_S3_READER_SECRET").unwrap_or_default();
    let url = fresh(&base, "conformance");
    let backend = S3Backend::from_url(&url, &BTreeMap::new()).unwrap();
    backend.create().await.unwrap();
    let view = |o: &[(&str, &str)]| -> Arc<dyn Backend> {
        Arc::new(S3Backend::from_url(&url, &options(o)).unwrap())
    };
    let opts = SuiteOptions {
        rejected_credentials: Some(view(&[(
            "secret_access_key",
            "not-the-secret-0123456789abcdefghijklmn",
        )])),
        read_only: Some(view(&[
            ("access_key_id", &reader_id),
            ("secret_access_key", &reader_secret),
        ])),
        ..suite()
    };
    assert_conformance(Arc::new(backend), &opts).await;
}

#[tokio::test]
async fn s3_wrong_secret_is_unauthenticated() {
    let Some(base) = configured("s3", "CAIRN_TEST_REPO_S3") else {
        return;
    };
    let secret = "not-the-secret-0123456789abcdefghijklmn";
    let backend = S3Backend::from_url(
        &fresh(&base, "wrong-secret"),
        &options(&[("secret_access_key", secret)]),
    )
    .unwrap();
    check_wrong_credentials(&backend, secret).await;
}

#[tokio::test]
async fn s3_unknown_key_id_is_unauthenticated() {
    let Some(base) = configured("s3", "CAIRN_TEST_REPO_S3") else {
        return;
    };
    let secret = "unknown-secret-0123456789abcdefghijklmn";
    let backend = S3Backend::from_url(
        &fresh(&base, "unknown-key"),
        &options(&[
            ("access_key_id", "AKIAUNKNOWNUNKNOWN00"),
            ("secret_access_key", secret),
        ]),
    )
    .unwrap();
    check_wrong_credentials(&backend, secret).await;
}

#[tokio::test]
async fn s3_missing_bucket_is_not_found() {
    if configured("s3", "CAIRN_TEST_REPO_S3").is_none() {
        return;
    }
    let bucket = format!("cairn-missing-{:08x}", rand::random::<u32>());
    // `create()` would make the bucket (see s3_create_makes_a_missing_bucket).
    let backend = S3Backend::from_url(
        &format!("s3://{bucket}/repo"),
        &options(&[("create_bucket", "false")]),
    )
    .unwrap();
    check_missing_bucket(&backend, &bucket).await;
}

#[tokio::test]
async fn s3_without_server_is_unreachable() {
    // Explicit credentials: without them object_store would ask the EC2
    // metadata service, which is not on loopback.
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let backend = S3Backend::from_url(
        "s3://cairn-test/unreachable",
        &options(&[
            ("endpoint", &endpoint),
            ("allow_http", "true"),
            ("access_key_id", "AKIAEXAMPLE"),
            ("secret_access_key", "example"),
        ]),
    )
    .unwrap();
    check_unreachable(&backend).await;
}

#[test]
fn s3_display_hides_secrets() {
    let secret = "very-secret-value-0123456789";
    let backend = S3Backend::from_url(
        "s3://bucket/some/prefix",
        &options(&[
            ("endpoint", "http://user:pw@127.0.0.1:9/"),
            ("access_key_id", "AKIAEXAMPLE"),
            ("secret_access_key", secret),
        ]),
    )
    .unwrap();
    let shown = format!("{backend} {backend:?}");
    assert!(shown.contains("s3://bucket/some/prefix"), "{shown}");
    assert!(
        !shown.contains(secret) && !shown.contains(":pw@"),
        "{shown}"
    );
}

#[test]
fn s3_rejects_bad_urls_and_options() {
    let none = BTreeMap::new();
    assert!(S3Backend::from_url("gs://bucket/p", &none).is_err());
    assert!(S3Backend::from_url("s3://AKIA:secret@bucket/p", &none).is_err());
    let err = S3Backend::from_url("s3://bucket/p", &options(&[("no_such_option", "1")]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("no_such_option"), "{err}");
    assert!(S3Backend::from_url("s3://bucket/p", &options(&[("timeout_secs", "soon")])).is_err());
}

/// Credentials with a line break (a value pasted with its newline) are a
/// configuration error naming the setting, not a panic in object_store's
/// header code at the first request, and the value is not shown.
#[test]
fn credentials_with_line_breaks_are_refused_up_front() {
    for (key, value) in [
        ("access_key_id", "AKIAEXAMPLE\n"),
        ("session_token", "FwoGZXIv\r\nmore"),
        ("region", "us-east-1\n"),
    ] {
        let o = options(&[
            ("access_key_id", "AKIAEXAMPLE"),
            ("secret_access_key", "secret"),
            (key, value),
        ]);
        let err = S3Backend::from_url("s3://bucket/p", &o).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
        assert!(err.to_string().contains(key), "{key}: {err}");
        assert!(
            !err.to_string().contains(value.trim()) || key == "region",
            "{err}"
        );
    }
    let err = AzureBackend::from_url(
        "az://container/p",
        &options(&[("account", "acct\n"), ("access_key", "a2V5")]),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("account"), "{err}");
}

// ---------------------------------------------------------------- Azure

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_conforms() {
    let Some(base) = configured("azure", "CAIRN_TEST_REPO_AZURE") else {
        return;
    };
    let Some(sas) = configured("azure read-only SAS", "CAIRN_TEST_AZURE_READER_SAS") else {
        return;
    };
    let endpoint = std::env::var("AZURE_STORAGE_ENDPOINT").unwrap_or_default();
    let url = fresh(&base, "conformance");
    let backend = AzureBackend::from_url(&url, &BTreeMap::new()).unwrap();
    backend.create().await.unwrap();
    let view = |o: &[(&str, &str)]| -> Arc<dyn Backend> {
        Arc::new(AzureBackend::from_url(&url, &options(o)).unwrap())
    };
    let opts = SuiteOptions {
        // A well-formed (base64) key that is not the account's.
        rejected_credentials: Some(view(&[(
            "access_key",
            "d3JvbmctYWNjb3VudC1rZXktZm9yLWNhaXJuLXRlc3Rz",
        )])),
        // The SAS wins over the account key in the environment.
        read_only: Some(view(&[("endpoint", &endpoint), ("sas_token", &sas)])),
        ..suite()
    };
    assert_conformance(Arc::new(backend), &opts).await;
}

#[tokio::test]
async fn azure_wrong_key_is_unauthenticated() {
    let Some(base) = configured("azure", "CAIRN_TEST_REPO_AZURE") else {
        return;
    };
    // A well-formed (base64) key that is not the account's.
    let secret = "d3JvbmctYWNjb3VudC1rZXktZm9yLWNhaXJuLXRlc3Rz";
    let backend = AzureBackend::from_url(
        &fresh(&base, "wrong-key"),
        &options(&[("access_key", secret)]),
    )
    .unwrap();
    check_wrong_credentials(&backend, secret).await;
}

#[tokio::test]
async fn azure_missing_container_is_not_found() {
    if configured("azure", "CAIRN_TEST_REPO_AZURE").is_none() {
        return;
    }
    let container = format!("cairn-missing-{:08x}", rand::random::<u32>());
    let backend = AzureBackend::from_url(
        &format!("az://{container}/repo"),
        &options(&[("create_container", "false")]),
    )
    .unwrap();
    check_missing_bucket(&backend, &container).await;
}

#[tokio::test]
async fn azure_without_server_is_unreachable() {
    let endpoint = format!("http://127.0.0.1:{}/devstoreaccount1", closed_port());
    let backend = AzureBackend::from_url(
        "az://cairn-test/unreachable",
        &options(&[("use_emulator", "true"), ("endpoint", &endpoint)]),
    )
    .unwrap();
    assert!(backend.to_string().contains(&endpoint), "{backend}");
    check_unreachable(&backend).await;
}

#[tokio::test]
async fn azure_endpoint_option_reaches_the_emulator() {
    // The `endpoint` option must work in emulator mode (object_store itself
    // only reads AZURITE_BLOB_STORAGE_URL there).
    let Some(base) = configured("azure", "CAIRN_TEST_REPO_AZURE") else {
        return;
    };
    let endpoint = std::env::var("AZURITE_BLOB_STORAGE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
    let backend = AzureBackend::from_url(
        &fresh(&base, "endpoint"),
        &options(&[
            ("use_emulator", "true"),
            ("endpoint", &format!("{endpoint}/devstoreaccount1")),
        ]),
    )
    .unwrap();
    backend.create().await.unwrap();
    let h = key();
    backend
        .put(&h, Bytes::from_static(b"hello"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        backend.get(&h, Some(1..3)).await.unwrap(),
        Bytes::from_static(b"el")
    );
    assert_eq!(backend.list(Kind::Key).await.unwrap().len(), 1);
    backend.delete(&h).await.unwrap();
}

// ---------------------------------------------------------------- GCS

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_conforms() {
    let Some(base) = configured("gcs", "CAIRN_TEST_REPO_GCS") else {
        return;
    };
    let backend = GcsBackend::from_url(&fresh(&base, "conformance"), &BTreeMap::new()).unwrap();
    backend.create().await.unwrap();
    assert_conformance(Arc::new(backend), &suite()).await;
}

#[tokio::test]
async fn gcs_missing_bucket_is_not_found() {
    if configured("gcs", "CAIRN_TEST_REPO_GCS").is_none() {
        return;
    }
    let bucket = format!("cairn-missing-{:08x}", rand::random::<u32>());
    let backend = GcsBackend::from_url(
        &format!("gs://{bucket}/repo"),
        &options(&[("create_bucket", "false")]),
    )
    .unwrap();
    check_missing_bucket(&backend, &bucket).await;
}

#[tokio::test]
async fn gcs_without_server_is_unreachable() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let backend = GcsBackend::from_url(
        "gs://cairn-test/unreachable",
        &options(&[("endpoint", &endpoint)]),
    )
    .unwrap();
    check_unreachable(&backend).await;
}

// Wrong credentials cannot be tested for GCS here: fake-gcs-server does no
// authentication at all (see docs/backends-gcs.md).

// ---------------------------------------------------------------- options

/// A put with a storage class (S3) / access tier (Azure) is accepted and
/// reads back.
async fn check_storage_class(backend: &dyn Backend) {
    backend.create().await.unwrap();
    let h = Handle::new(Kind::Pack, "c1a55");
    backend
        .put(&h, Bytes::from_static(b"tiered"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        backend.get(&h, None).await.unwrap(),
        Bytes::from_static(b"tiered")
    );
    backend.delete(&h).await.unwrap();
}

#[tokio::test]
async fn s3_storage_class_is_accepted() {
    let Some(base) = configured("s3", "CAIRN_TEST_REPO_S3") else {
        return;
    };
    let backend = S3Backend::from_url(
        &fresh(&base, "class"),
        &options(&[("storage_class", "STANDARD_IA")]),
    )
    .unwrap();
    check_storage_class(&backend).await;
}

#[tokio::test]
async fn azure_access_tier_is_accepted() {
    let Some(base) = configured("azure", "CAIRN_TEST_REPO_AZURE") else {
        return;
    };
    let backend = AzureBackend::from_url(
        &fresh(&base, "tier"),
        &options(&[("storage_class", "Cool")]),
    )
    .unwrap();
    check_storage_class(&backend).await;
}

#[tokio::test]
async fn gcs_storage_class_is_accepted() {
    let Some(base) = configured("gcs", "CAIRN_TEST_REPO_GCS") else {
        return;
    };
    let backend = GcsBackend::from_url(
        &fresh(&base, "class"),
        &options(&[("storage_class", "NEARLINE")]),
    )
    .unwrap();
    check_storage_class(&backend).await;
}

// ---------------------------------------------------------------- creation

/// A bucket / container name no test has used.
fn new_bucket_name() -> String {
    format!("cairn-new-{:016x}", rand::random::<u64>())
}

/// `create()` on a missing bucket creates it; objects then round-trip; a
/// second `create()`, from the same client and from another one, is fine.
/// Then two clients create another new bucket at the same moment (both see
/// it missing; one of the creation requests finds it made by the other):
/// both succeed. `make` opens a backend on a repository in the named bucket.
async fn check_creates(make: impl Fn(&str) -> Box<dyn Backend>) {
    let bucket = new_bucket_name();
    let first = make(&bucket);
    let h = Handle::new(Kind::Pack, "c4ea7e");
    // Missing to begin with.
    let err = first.get(&h, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    first.create().await.unwrap();
    first
        .put(&h, Bytes::from_static(b"in a new bucket"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        first.get(&h, None).await.unwrap(),
        Bytes::from_static(b"in a new bucket")
    );
    first.create().await.unwrap();
    let second = make(&bucket);
    second.create().await.unwrap();
    assert_eq!(second.list(Kind::Pack).await.unwrap().len(), 1);
    second.delete(&h).await.unwrap();

    let bucket = new_bucket_name();
    let (a, b) = (make(&bucket), make(&bucket));
    let (ra, rb) = tokio::join!(a.create(), b.create());
    ra.unwrap();
    rb.unwrap();
    b.put(&h, Bytes::from_static(b"raced"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(a.get(&h, None).await.unwrap(), Bytes::from_static(b"raced"));
}

#[tokio::test]
async fn s3_create_makes_a_missing_bucket() {
    if configured("s3", "CAIRN_TEST_REPO_S3").is_none() {
        return;
    }
    check_creates(|bucket| {
        Box::new(S3Backend::from_url(&format!("s3://{bucket}/repo"), &BTreeMap::new()).unwrap())
    })
    .await;
}

#[tokio::test]
async fn s3_create_outside_us_east_1_sends_the_region() {
    // Outside us-east-1 the request carries a LocationConstraint, and is
    // signed for that region.
    if configured("s3", "CAIRN_TEST_REPO_S3").is_none() {
        return;
    }
    check_creates(|bucket| {
        Box::new(
            S3Backend::from_url(
                &format!("s3://{bucket}/repo"),
                &options(&[("region", "eu-west-1")]),
            )
            .unwrap(),
        )
    })
    .await;
}

#[tokio::test]
async fn s3_create_with_wrong_secret_is_unauthenticated_and_creates_nothing() {
    if configured("s3", "CAIRN_TEST_REPO_S3").is_none() {
        return;
    }
    let url = format!("s3://{}/repo", new_bucket_name());
    let secret = "not-the-secret-0123456789abcdefghijklmn";
    let wrong = S3Backend::from_url(&url, &options(&[("secret_access_key", secret)])).unwrap();
    let err = expect_fast(
        "create a bucket with a wrong secret",
        ErrorKind::Unauthenticated,
        wrong.create(),
    )
    .await;
    assert!(!format!("{err} {err:?}").contains(secret));
    let right = S3Backend::from_url(&url, &options(&[("create_bucket", "false")])).unwrap();
    let err = right.create().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn azure_create_makes_a_missing_container() {
    if configured("azure", "CAIRN_TEST_REPO_AZURE").is_none() {
        return;
    }
    check_creates(|container| {
        Box::new(
            AzureBackend::from_url(&format!("az://{container}/repo"), &BTreeMap::new()).unwrap(),
        )
    })
    .await;
}

#[tokio::test]
async fn azure_create_through_endpoint_option() {
    // The other way to reach azurite: an account endpoint (path-style).
    if configured("azure", "CAIRN_TEST_REPO_AZURE").is_none() {
        return;
    }
    let endpoint = std::env::var("AZURITE_BLOB_STORAGE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
    let endpoint = format!("{endpoint}/devstoreaccount1");
    check_creates(|container| {
        Box::new(
            AzureBackend::from_url(
                &format!("az://{container}/repo"),
                &options(&[("use_emulator", "true"), ("endpoint", &endpoint)]),
            )
            .unwrap(),
        )
    })
    .await;
}

#[tokio::test]
async fn azure_create_with_wrong_key_is_unauthenticated_and_creates_nothing() {
    if configured("azure", "CAIRN_TEST_REPO_AZURE").is_none() {
        return;
    }
    let url = format!("az://{}/repo", new_bucket_name());
    let secret = "d3JvbmctYWNjb3VudC1rZXktZm9yLWNhaXJuLXRlc3Rz";
    let wrong = AzureBackend::from_url(&url, &options(&[("access_key", secret)])).unwrap();
    let err = expect_fast(
        "create a container with a wrong key",
        ErrorKind::Unauthenticated,
        wrong.create(),
    )
    .await;
    assert!(!format!("{err} {err:?}").contains(secret));
    let right = AzureBackend::from_url(&url, &options(&[("create_container", "false")])).unwrap();
    let err = right.create().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn gcs_create_makes_a_missing_bucket() {
    if configured("gcs", "CAIRN_TEST_REPO_GCS").is_none() {
        return;
    }
    check_creates(|bucket| {
        Box::new(
            GcsBackend::from_url(
                &format!("gs://{bucket}/repo"),
                &options(&[("project", "test")]),
            )
            .unwrap(),
        )
    })
    .await;
}

#[tokio::test]
async fn gcs_create_without_project_names_what_is_missing() {
    if configured("gcs", "CAIRN_TEST_REPO_GCS").is_none() {
        return;
    }
    if std::env::var_os("GOOGLE_CLOUD_PROJECT").is_some() {
        eprintln!("GOOGLE_CLOUD_PROJECT is set: nothing to check here");
        return;
    }
    let bucket = new_bucket_name();
    let backend = GcsBackend::from_url(&format!("gs://{bucket}/repo"), &BTreeMap::new()).unwrap();
    let err = expect_fast(
        "create without a project",
        ErrorKind::NotFound,
        backend.create(),
    )
    .await;
    let text = err.to_string();
    assert!(
        text.contains(&bucket) && text.contains("project") && text.contains("GOOGLE_CLOUD_PROJECT"),
        "unclear message: {text}"
    );
}

// ---------------------------------------------------------------- throughput

/// What the S3, Azure and GCS backends move per second through the local
/// servers, next to a reference client on the same server in the same run
/// (see docs/benchmarks/backends.md):
///
/// ```sh
/// scripts/test-servers start s3 azure gcs && eval "$(scripts/test-servers env s3 azure gcs)"
/// cargo test -p cairn-backends --all-features --release --test servers \
///     -- --ignored --nocapture throughput
/// ```
mod throughput {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    const SIZE: usize = 256 << 20;
    const ROUNDS: usize = 3;

    fn mbps(d: Duration) -> f64 {
        SIZE as f64 / 1e6 / d.as_secs_f64()
    }

    fn data() -> Bytes {
        // Incompressible, like encrypted packs.
        let mut v = vec![0u8; SIZE];
        let mut x = 0x9e3779b97f4a7c15u64;
        for chunk in v.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        Bytes::from(v)
    }

    /// A measurement: the best wall time of the rounds; the client's CPU
    /// time (user + system) and the server process's, per round on average.
    #[derive(Clone, Copy)]
    struct Sample {
        wall: Duration,
        cpu: Duration,
        server: Duration,
    }

    const EMPTY: Sample = Sample {
        wall: Duration::MAX,
        cpu: Duration::ZERO,
        server: Duration::ZERO,
    };

    fn ticks_per_second() -> f64 {
        // Asked once: a `getconf` child per reading would count as the
        // children's CPU time being measured.
        static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *HZ.get_or_init(|| {
            Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(100)
        }) as f64
    }

    /// utime + stime (`own`) or cutime + cstime of `/proc/PID/stat`.
    fn stat_cpu(pid: &str, own: bool) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<u64> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
            .unwrap_or_default();
        // After the command name, field 3 (the state) is index 0.
        let (u, s) = if own { (11, 12) } else { (13, 14) };
        let ticks = fields.get(u).unwrap_or(&0) + fields.get(s).unwrap_or(&0);
        Duration::from_secs_f64(ticks as f64 / ticks_per_second())
    }

    /// The test-servers state directory.
    fn state_dir() -> PathBuf {
        std::env::var_os("CAIRN_TEST_SERVERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/cairn-test-servers")
            })
    }

    /// CPU time of one server process (`scripts/test-servers` component).
    struct Server(Option<String>);

    impl Server {
        fn of(component: &str) -> Server {
            let pid = std::fs::read_to_string(state_dir().join(format!("run/{component}.pid")))
                .ok()
                .map(|p| p.trim().to_string())
                .filter(|p| Path::new(&format!("/proc/{p}/stat")).exists());
            Server(pid)
        }

        fn cpu(&self) -> Duration {
            self.0
                .as_deref()
                .map_or(Duration::ZERO, |p| stat_cpu(p, true))
        }
    }

    /// Put and get through a backend, `ROUNDS` times.
    async fn backend_times(b: &dyn Backend, data: &Bytes, server: &Server) -> (Sample, Sample) {
        let h = Handle::new(Kind::Pack, "ffbench");
        let (mut put, mut get) = (EMPTY, EMPTY);
        let n = ROUNDS as u32;
        for _ in 0..ROUNDS {
            let (t, c, s) = (Instant::now(), stat_cpu("self", true), server.cpu());
            b.put(&h, data.clone(), PutMode::Overwrite).await.unwrap();
            put.wall = put.wall.min(t.elapsed());
            put.cpu += stat_cpu("self", true).saturating_sub(c) / n;
            put.server += server.cpu().saturating_sub(s) / n;
            let (t, c, s) = (Instant::now(), stat_cpu("self", true), server.cpu());
            let got = b.get(&h, None).await.unwrap();
            get.wall = get.wall.min(t.elapsed());
            get.cpu += stat_cpu("self", true).saturating_sub(c) / n;
            get.server += server.cpu().saturating_sub(s) / n;
            assert_eq!(got.len(), data.len());
            assert!(got == *data, "read back different bytes");
        }
        b.delete(&h).await.unwrap();
        (put, get)
    }

    /// Run a command `ROUNDS` times; `None` (after saying why) if it fails.
    fn command_time(
        what: &str,
        server: &Server,
        mut make: impl FnMut() -> Command,
    ) -> Option<Sample> {
        let mut best = EMPTY;
        let n = ROUNDS as u32;
        for _ in 0..ROUNDS {
            let (t, c, s) = (Instant::now(), stat_cpu("self", false), server.cpu());
            let out = make().stdout(Stdio::null()).stderr(Stdio::piped()).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    println!(
                        "{what}: failed ({}): {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    return None;
                }
                Err(e) => {
                    println!("{what}: cannot run: {e}");
                    return None;
                }
            }
            best.wall = best.wall.min(t.elapsed());
            best.cpu += stat_cpu("self", false).saturating_sub(c) / n;
            best.server += server.cpu().saturating_sub(s) / n;
        }
        Some(best)
    }

    /// `sample` without the client's start-up (`setup`).
    fn minus(sample: Option<Sample>, setup: Option<Sample>) -> Option<Sample> {
        let setup = setup.unwrap_or(Sample {
            wall: Duration::ZERO,
            ..EMPTY
        });
        sample.map(|s| Sample {
            wall: s.wall.saturating_sub(setup.wall),
            cpu: s.cpu.saturating_sub(setup.cpu),
            server: s.server.saturating_sub(setup.server),
        })
    }

    fn row(what: &str, ours: Sample, theirs: Option<Sample>, tool: &str) {
        let per_gb = |d: Duration| d.as_secs_f64() / (SIZE as f64 / 1e9);
        let part = |s: Sample| {
            format!(
                "{:>6.1} MB/s {:>5.2} CPU-s/GB (server {:>5.2} CPU-s/GB, busy {:>3.0}%)",
                mbps(s.wall),
                per_gb(s.cpu),
                per_gb(s.server),
                // The server's CPU over the best round's wall time.
                100.0 * s.server.as_secs_f64() / s.wall.as_secs_f64()
            )
        };
        match theirs {
            Some(t) => println!(
                "{what:<10} cairn {} | {tool} {} | ratio {:.2}",
                part(ours),
                part(t),
                t.wall.as_secs_f64() / ours.wall.as_secs_f64()
            ),
            None => println!("{what:<10} cairn {} | ({tool} not run)", part(ours)),
        }
    }

    /// The part of `url` (`scheme://bucket/prefix`) after the bucket.
    fn bucket_and_prefix(url: &str) -> (String, String) {
        let rest = url.split_once("://").unwrap().1;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        (bucket.to_string(), prefix.trim_matches('/').to_string())
    }

    /// A Python with the given modules: the test servers' venv (boto3 comes
    /// with moto), else a venv of its own under ~/.cache/cairn-bench, made
    /// with pip on first use.
    fn python_with(module: &str, package: &str) -> Option<PathBuf> {
        let has = |py: &Path| {
            Command::new(py)
                .args(["-c", &format!("import {module}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let servers = state_dir().join("venv/bin/python");
        if has(&servers) {
            return Some(servers);
        }
        let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
        let venv = home.join(".cache/cairn-bench/venv");
        let py = venv.join("bin/python");
        if has(&py) {
            return Some(py);
        }
        println!("installing {package} into {} (pip)", venv.display());
        let made = py.exists()
            || Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
        let installed = made
            && Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    package,
                ])
                .status()
                .is_ok_and(|s| s.success());
        if installed && has(&py) {
            Some(py)
        } else {
            println!("could not install {package}: its reference run is skipped");
            None
        }
    }

    /// Builds the reference client's command for an operation (`put`,
    /// `get`, `rm`, anything else: a cheap request for its start-up).
    type MakeCommand = Box<dyn Fn(&str) -> Command>;

    /// S3 through the `aws` CLI, or boto3 (the same transfer code) when
    /// there is no CLI.
    fn s3_reference(
        scratch: &Path,
        src: &Path,
        dst: &Path,
        base: &str,
        server: &Server,
    ) -> Reference {
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .unwrap_or_else(|_| "http://127.0.0.1:9000".into());
        let (bucket, prefix) = bucket_and_prefix(&fresh(base, "bench-cli"));
        let key = format!("{prefix}/cli.bin");
        let uri = format!("s3://{bucket}/{key}");
        let aws = Command::new("aws")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                let v = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                v.split_whitespace().next().unwrap_or("aws").to_string()
            });
        let (tool, make): (String, MakeCommand) = match aws {
            Some(version) => {
                let endpoint = endpoint.clone();
                let (src, dst, uri, bucket) = (
                    src.to_path_buf(),
                    dst.to_path_buf(),
                    uri.clone(),
                    bucket.clone(),
                );
                (
                    format!("`aws s3 cp` ({version})"),
                    Box::new(move |op| {
                        let mut c = Command::new("aws");
                        c.args(["--endpoint-url", &endpoint]);
                        match op {
                            "put" => c.args(["s3", "cp", "--quiet"]).arg(&src).arg(&uri),
                            "get" => c.args(["s3", "cp", "--quiet"]).arg(&uri).arg(&dst),
                            "rm" => c.args(["s3", "rm", "--quiet", &uri]),
                            _ => c.args(["s3api", "head-bucket", "--bucket", &bucket]),
                        };
                        c
                    }),
                )
            }
            None => {
                println!("no `aws` CLI on this machine: using boto3 (upload_file/download_file, the CLI's transfer code)");
                let py = python_with("boto3", "boto3")?;
                let script = scratch.join("s3ref.py");
                std::fs::write(
                    &script,
                    "import sys, boto3\n\
                     op, endpoint, bucket, key, path = sys.argv[1:]\n\
                     s3 = boto3.client('s3', endpoint_url=endpoint)\n\
                     if op == 'put': s3.upload_file(path, bucket, key)\n\
                     elif op == 'get': s3.download_file(bucket, key, path)\n\
                     elif op == 'rm': s3.delete_object(Bucket=bucket, Key=key)\n\
                     else: s3.head_bucket(Bucket=bucket)\n",
                )
                .unwrap();
                let (src, dst) = (src.to_path_buf(), dst.to_path_buf());
                (
                    "boto3".to_string(),
                    Box::new(move |op| {
                        let mut c = Command::new(&py);
                        c.arg(&script).args([op, &endpoint, &bucket, &key]);
                        c.arg(if op == "get" { &dst } else { &src });
                        c
                    }),
                )
            }
        };
        let setup = command_time(&tool, server, || make("setup"));
        let put = minus(command_time(&tool, server, || make("put")), setup);
        let get = minus(command_time(&tool, server, || make("get")), setup);
        if let Some(setup) = setup {
            println!(
                "{tool} start-up, credentials and one request: {:.2?} (subtracted)",
                setup.wall
            );
        }
        let _ = make("rm")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        Some((tool, put, get))
    }

    /// A reference client's name and its put and get samples.
    type Reference = Option<(String, Option<Sample>, Option<Sample>)>;

    fn rows(service: &str, put: Sample, get: Sample, reference: Reference) {
        let (tool, put_ref, get_ref) = reference.unwrap_or_default();
        row(&format!("{service} put"), put, put_ref, &tool);
        row(&format!("{service} get"), get, get_ref, &tool);
    }

    /// Azure through Microsoft's Python SDK (azure-storage-blob), defaults.
    fn azure_reference(
        scratch: &Path,
        src: &Path,
        dst: &Path,
        base: &str,
        server: &Server,
    ) -> Reference {
        let py = python_with("azure.storage.blob", "azure-storage-blob")?;
        let version = Command::new(&py)
            .args(["-c", "import azure.storage.blob as b; print(b.__version__)"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let script = scratch.join("azref.py");
        std::fs::write(
            &script,
            "import os, sys\n\
             from azure.storage.blob import BlobServiceClient\n\
             op, container, blob, path = sys.argv[1:]\n\
             svc = BlobServiceClient.from_connection_string(os.environ['CAIRN_BENCH_AZURE'])\n\
             c = svc.get_container_client(container)\n\
             if op == 'put':\n    with open(path, 'rb') as f: c.upload_blob(blob, f, overwrite=True)\n\
             elif op == 'get':\n    with open(path, 'wb') as f: c.download_blob(blob).readinto(f)\n\
             elif op == 'rm': c.delete_blob(blob)\n\
             else: c.get_container_properties()\n",
        )
        .unwrap();
        let account =
            std::env::var("AZURE_STORAGE_ACCOUNT_NAME").unwrap_or("devstoreaccount1".into());
        let key = std::env::var("AZURE_STORAGE_ACCOUNT_KEY").unwrap_or_default();
        let endpoint = std::env::var("AZURE_STORAGE_ENDPOINT")
            .unwrap_or_else(|_| format!("http://127.0.0.1:10000/{account}"));
        // In the environment, not on the command line.
        let connection = format!(
            "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};BlobEndpoint={endpoint};"
        );
        let (container, prefix) = bucket_and_prefix(&fresh(base, "bench-sdk"));
        let blob = format!("{prefix}/sdk.bin");
        let make = |op: &str| {
            let mut c = Command::new(&py);
            c.env("CAIRN_BENCH_AZURE", &connection)
                .arg(&script)
                .args([op, &container, &blob])
                .arg(if op == "get" { dst } else { src });
            c
        };
        let tool = format!("azure-storage-blob {version}");
        let setup = command_time(&tool, server, || make("setup"));
        let put = minus(command_time(&tool, server, || make("put")), setup);
        let get = minus(command_time(&tool, server, || make("get")), setup);
        if let Some(setup) = setup {
            println!(
                "{tool} start-up and one request: {:.2?} (subtracted)",
                setup.wall
            );
        }
        let _ = make("rm")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        Some((tool, put, get))
    }

    /// GCS through curl against the JSON API (media upload, alt=media get).
    /// Also returns curl's time for a multipart upload (cairn's request
    /// shape: JSON metadata and data in one `multipart/related` body).
    fn gcs_reference(
        scratch: &Path,
        src: &Path,
        dst: &Path,
        base: &str,
        server: &Server,
    ) -> (Reference, Option<Sample>) {
        let endpoint =
            std::env::var("CAIRN_GCS_ENDPOINT").unwrap_or("http://127.0.0.1:4443".into());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let (bucket, prefix) = bucket_and_prefix(&fresh(base, "bench-curl"));
        let name = format!("{prefix}/curl.bin");
        let encoded = name.replace('/', "%2F");
        let object = format!("{endpoint}/storage/v1/b/{bucket}/o/{encoded}");
        // The body of a multipart upload, made once, as cairn sends it.
        let boundary = "cairn-bench-0123456789abcdef";
        let multipart = scratch.join("multipart.bin");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&multipart).unwrap();
            write!(
                f,
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{{\"name\":\"{name}\"}}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .unwrap();
            f.write_all(&std::fs::read(src).unwrap()).unwrap();
            write!(f, "\r\n--{boundary}--\r\n").unwrap();
        }
        let multipart_type = format!("Content-Type: multipart/related; boundary={boundary}");
        let make = |op: &str| {
            let mut c = Command::new("curl");
            c.args(["-sS", "--fail"]);
            match op {
                // -T streams the file (--data-binary would read it into
                // memory first); -X POST turns its PUT into the API's POST.
                "put" => c
                    .args([
                        "-X",
                        "POST",
                        "-H",
                        "Content-Type: application/octet-stream",
                        "-T",
                    ])
                    .arg(src)
                    .arg(format!(
                        "{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={encoded}"
                    )),
                "multipart" => c
                    .args(["-X", "POST", "-H", &multipart_type, "-T"])
                    .arg(&multipart)
                    .arg(format!(
                        "{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=multipart"
                    )),
                "get" => c.arg("-o").arg(dst).arg(format!("{object}?alt=media")),
                "rm" => c.args(["-X", "DELETE", &object]),
                _ => c.arg(format!("{endpoint}/storage/v1/b/{bucket}")),
            };
            c
        };
        let version = Command::new("curl")
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default();
        let tool = format!("curl {version}");
        let setup = command_time(&tool, server, || make("setup"));
        let put = minus(command_time(&tool, server, || make("put")), setup);
        let get = minus(command_time(&tool, server, || make("get")), setup);
        let put_multipart = minus(command_time(&tool, server, || make("multipart")), setup);
        if let Some(setup) = setup {
            println!(
                "{tool} start-up and one request: {:.2?} (subtracted)",
                setup.wall
            );
        }
        let _ = make("rm")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&multipart);
        (Some((tool, put, get)), put_multipart)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark: 256 MiB transfers; run with --ignored --nocapture in release mode"]
    async fn throughput_256mib() {
        let data = data();
        // The clock-tick rate is asked (with a child process) before any
        // child CPU time is measured.
        let _ = ticks_per_second();
        let scratch = if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let src = scratch.path().join("src.bin");
        let dst = scratch.path().join("dst.bin");
        std::fs::write(&src, &data).unwrap();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "\n256 MiB objects, best of {ROUNDS}; load average at start: {}",
            load.trim()
        );

        if let Some(base) = configured("s3", "CAIRN_TEST_REPO_S3") {
            let server = Server::of("s3");
            let b = S3Backend::from_url(&fresh(&base, "bench"), &BTreeMap::new()).unwrap();
            b.create().await.unwrap();
            let (put, get) = backend_times(&b, &data, &server).await;
            rows(
                "s3",
                put,
                get,
                s3_reference(scratch.path(), &src, &dst, &base, &server),
            );
        }
        if let Some(base) = configured("azure", "CAIRN_TEST_REPO_AZURE") {
            let server = Server::of("azure");
            let b = AzureBackend::from_url(&fresh(&base, "bench"), &BTreeMap::new()).unwrap();
            b.create().await.unwrap();
            let (put, get) = backend_times(&b, &data, &server).await;
            rows(
                "azure",
                put,
                get,
                azure_reference(scratch.path(), &src, &dst, &base, &server),
            );
        }
        if let Some(base) = configured("gcs", "CAIRN_TEST_REPO_GCS") {
            let server = Server::of("gcs");
            let b = GcsBackend::from_url(&fresh(&base, "bench"), &BTreeMap::new()).unwrap();
            b.create().await.unwrap();
            let (put, get) = backend_times(&b, &data, &server).await;
            let (reference, multipart) = gcs_reference(scratch.path(), &src, &dst, &base, &server);
            let tool = reference.as_ref().map(|r| r.0.clone()).unwrap_or_default();
            rows("gcs", put, get, reference);
            row("gcs put", put, multipart, &format!("{tool} multipart"));
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("load average at the end: {}", load.trim());
    }
}
