//! AWS profiles (cargo feature `aws-profile`) against the moto S3 server:
//! the test writes a `credentials` and a `config` file holding moto's key,
//! points `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE` at them, takes
//! the key out of the environment, and round-trips objects with the key
//! coming from the profile only.
//!
//! ```sh
//! scripts/test-servers start s3 && eval "$(scripts/test-servers env s3)"
//! cargo test -p cairn-backends --features aws-profile --test aws_profile
//! ```
//!
//! One test function: it changes this process's environment, which a test
//! binary of its own can do without racing other tests.
#![cfg(feature = "aws-profile")]

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_backends::conformance::{fresh_location, server_from_env};
use cairn_backends::s3::S3Backend;
use cairn_backends::{Backend, ErrorKind, Handle, Kind, PutMode};

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn round_trip(backend: &S3Backend, what: &str) {
    backend
        .create()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let h = Handle::new(Kind::Key, "profile");
    let data = Bytes::from(format!("written with {what}"));
    backend
        .put(&h, data.clone(), PutMode::Overwrite)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(backend.get(&h, None).await.unwrap(), data, "{what}");
    backend.delete(&h).await.unwrap();
}

#[tokio::test]
async fn profiles_supply_credentials() {
    let Some(base) = server_from_env("s3", "CAIRN_TEST_REPO_S3") else {
        return;
    };
    let id = std::env::var("AWS_ACCESS_KEY_ID").expect("the s3 test server's key id");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("the s3 test server's secret");
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    let config = dir.path().join("config");
    std::fs::write(
        &credentials,
        format!(
            "[cairn-moto]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n\n\
             [cairn-wrong]\naws_access_key_id = {id}\naws_secret_access_key = wrong-{secret}\n"
        ),
    )
    .unwrap();
    let process_json = format!(
        r#"{{"Version": 1, "AccessKeyId": "{id}", "SecretAccessKey": "{secret}", "Expiration": "2999-01-01T00:00:00Z"}}"#
    );
    std::fs::write(
        &config,
        format!(
            "[profile cairn-moto]\nregion = us-east-1\n\n\
             [profile cairn-process]\nregion = us-east-1\ncredential_process = printf '%s' '{process_json}'\n"
        ),
    )
    .unwrap();
    // The key now comes from the files only. (Endpoint and allow-http stay.)
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &credentials);
    std::env::set_var("AWS_CONFIG_FILE", &config);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
    ] {
        std::env::remove_var(var);
    }

    // Static keys, profile named by the option.
    let url = fresh_location(&base, "profile");
    let b = S3Backend::from_url(&url, &options(&[("profile", "cairn-moto")])).unwrap();
    round_trip(&b, "profile option").await;

    // credential_process, profile named by AWS_PROFILE.
    std::env::set_var("AWS_PROFILE", "cairn-process");
    let b = S3Backend::from_url(&url, &BTreeMap::new()).unwrap();
    round_trip(&b, "AWS_PROFILE + credential_process").await;

    // Keys given directly win over AWS_PROFILE (as in the AWS SDKs) ...
    std::env::set_var("AWS_PROFILE", "cairn-wrong");
    let b = S3Backend::from_url(
        &url,
        &options(&[("access_key_id", &id), ("secret_access_key", &secret)]),
    )
    .unwrap();
    round_trip(&b, "keys given over AWS_PROFILE").await;

    // ... and the profile's keys are what is used: a wrong one is refused.
    let b = S3Backend::from_url(&url, &BTreeMap::new()).unwrap();
    let err = b
        .put(
            &Handle::new(Kind::Key, "x"),
            Bytes::from_static(b"x"),
            PutMode::Overwrite,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(!format!("{err} {err:?}").contains(&secret));

    // A profile that is not there is an error when the backend is opened.
    let err = S3Backend::from_url(&url, &options(&[("profile", "no-such-profile")]))
        .expect_err("a missing profile is refused");
    assert!(err.to_string().contains("no-such-profile"), "{err}");
    std::env::remove_var("AWS_PROFILE");
}
