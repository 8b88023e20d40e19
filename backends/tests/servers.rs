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
