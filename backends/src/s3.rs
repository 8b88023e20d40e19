//! Amazon S3 and S3-compatible stores, through `object_store`.
//!
//! `s3://BUCKET/PREFIX` holds one repository under `PREFIX/`. Credentials and
//! defaults come from the standard `AWS_*` environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, web identity / ECS / IMDS
//! as `object_store` supports them); options override them.
//!
//! Options (all optional):
//! - `endpoint`: an S3-compatible server, e.g. `http://127.0.0.1:9000`;
//! - `region` (default `us-east-1`);
//! - `allow_http` (`true` for a plain-HTTP endpoint);
//! - `path_style` (default `true`: `endpoint/bucket/key`; `false` for
//!   virtual-hosted `bucket.endpoint/key`);
//! - `storage_class`, e.g. `STANDARD_IA`, for new objects;
//! - `timeout_secs` (per request, default 300), `connect_timeout_secs`
//!   (default 10), `retries` (inside object_store, default 1: cairn's retry
//!   layer does the real retrying), `connections` (suggested concurrency);
//! - any other `object_store` S3 key (`access_key_id`, `secret_access_key`,
//!   `session_token`, `skip_signature`, `checksum_algorithm`, …).

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::ClientConfigKey;

use crate::object_store_backend::{
    bad_option, client_retry, delegate_backend, map_error, parse_bool, redact_endpoint, split_url,
    CommonOptions, ObjectStoreBackend, Service,
};
use crate::{BackendError, Capabilities, ErrorKind, Result};

/// Largest object one S3 PUT accepts (cairn does not use multipart uploads).
pub const MAX_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// A repository in an S3 bucket.
pub struct S3Backend {
    inner: ObjectStoreBackend,
}

impl S3Backend {
    /// Open `s3://bucket/prefix` with `options` (see the module docs) on top
    /// of the `AWS_*` environment. Builds the client only; nothing is sent
    /// until the first request.
    pub fn from_url(url: &str, options: &BTreeMap<String, String>) -> Result<Self, BackendError> {
        let (bucket, prefix) = split_url(url, &["s3", "s3a"])?;
        let mut options = options.clone();
        let common = CommonOptions::take(&mut options, "s3")?;

        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(client_retry(common.retries, common.timeout))
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}ms", common.timeout.as_millis()),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                format!("{}ms", common.connect_timeout.as_millis()),
            );
        if let Some(v) = options.remove("path_style") {
            builder =
                builder.with_virtual_hosted_style_request(!parse_bool("s3", "path_style", &v)?);
        }
        for (key, value) in &options {
            let config_key: AmazonS3ConfigKey = key.parse().map_err(|_| {
                BackendError::new(ErrorKind::Other, format!("unknown s3 option {key:?}"))
            })?;
            builder = builder.with_config(config_key, value);
        }
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .map(|e| redact_endpoint(&e));
        let store = builder
            .build()
            .map_err(|e| map_error(&format!("configure {url}"), bucket, e))?;

        let display = match endpoint {
            Some(e) => format!("s3://{bucket}/{prefix} at {e}"),
            None => format!("s3://{bucket}/{prefix}"),
        };
        if let Some(class) = &common.storage_class {
            if class.contains(char::is_whitespace) {
                return Err(bad_option(
                    "s3",
                    "storage_class",
                    class,
                    "an S3 storage class",
                ));
            }
        }
        let inner = ObjectStoreBackend::new(Arc::new(store), Service::S3, bucket, prefix, display)
            .with_storage_class(common.storage_class)
            .with_capabilities(Capabilities {
                atomic_create: true,
                max_object_size: Some(MAX_PUT_BYTES),
                default_connections: common.connections,
            });
        Ok(S3Backend { inner })
    }

    /// The generic adapter underneath.
    pub fn inner(&self) -> &ObjectStoreBackend {
        &self.inner
    }
}

delegate_backend!(S3Backend);
