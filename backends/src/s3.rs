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
//!   layer does the real retrying), `connections` (suggested concurrency),
//!   `pool_idle_timeout_secs` (default 4: idle connections are dropped
//!   before servers close them under a request);
//! - `create_bucket` (default `true`): whether `create()` (run by `cairn
//!   init`) creates a missing bucket;
//! - `profile`: an AWS profile from `~/.aws/credentials` / `~/.aws/config`
//!   (cargo feature `aws-profile`; `AWS_PROFILE` works too, see
//!   [`crate::aws_profile`]);
//! - any other `object_store` S3 key (`access_key_id`, `secret_access_key`,
//!   `session_token`, `skip_signature`, `checksum_algorithm`, …);
//!   `disable_bulk_delete` defaults to `true` here (one `DELETE /key` per
//!   object: cairn deletes one at a time), unless `AWS_DISABLE_BULK_DELETE`
//!   or the option says otherwise.
//!
//! Bucket creation: `create()` lists the bucket first and, only if that says
//! `NoSuchBucket`, sends a SigV4-signed `PUT /BUCKET` (path-style or
//! virtual-hosted as configured) with a `LocationConstraint` for any region
//! but `us-east-1`. `object_store` has no call for this, but exposes its
//! signer ([`AwsAuthorizer`]) and the store's credential provider, so the
//! request is signed with exactly the credentials every other request uses.
//! `BucketAlreadyOwnedByYou` counts as success; `BucketAlreadyExists` (the
//! name belongs to another account) is a `PermissionDenied` error.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer, AwsCredentialProvider};
use object_store::client::HttpRequestBody;
use object_store::ClientConfigKey;
use serde::Deserialize;

use crate::http_util::status_kind;
use crate::object_store_backend::{
    bad_option, client_retry, delegate_backend, header_safe, is_auth_failure, map_error,
    parse_bool, redact_endpoint, send_signed, split_url, store_keys, unsafe_credential,
    xml_message, xml_tag, ClientOptions, CommonOptions, ContainerCreator, ObjectStoreBackend,
    Service,
};
use crate::options::{self, OptionMap};
use crate::{BackendError, Capabilities, ErrorKind, Result};

/// Largest object one S3 PUT accepts (cairn does not use multipart uploads).
pub const MAX_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// Credentials that are not valid HTTP header values (the key id, the
/// session token, a container credentials token (EKS Pod Identity)),
/// typically ones with a trailing newline, make `object_store` panic when it
/// builds a request; refuse them here with a message instead.
fn check_credentials(builder: &AmazonS3Builder) -> Result<(), BackendError> {
    for (key, what) in [
        (
            AmazonS3ConfigKey::AccessKeyId,
            "the S3 access key id (AWS_ACCESS_KEY_ID or access_key_id)",
        ),
        (
            AmazonS3ConfigKey::Token,
            "the S3 session token (AWS_SESSION_TOKEN or session_token)",
        ),
        (
            AmazonS3ConfigKey::Region,
            "the S3 region (AWS_REGION or region)",
        ),
    ] {
        if builder
            .get_config_value(&key)
            .is_some_and(|v| !header_safe(&v))
        {
            return Err(unsafe_credential(what));
        }
    }
    let (Some(_), Some(path)) = (
        builder.get_config_value(&AmazonS3ConfigKey::ContainerCredentialsFullUri),
        builder.get_config_value(&AmazonS3ConfigKey::ContainerAuthorizationTokenFile),
    ) else {
        return Ok(());
    };
    // Unreadable: object_store reports that itself, at the first request.
    let Ok(token) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    if header_safe(&token) {
        return Ok(());
    }
    Err(unsafe_credential(&format!(
        "the container credentials token in {path} (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)"
    )))
}

/// The options of an S3 repository (see the module docs); unset means the
/// default, or what the `AWS_*` environment says.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Timeouts, retries, connections and storage class.
    pub client: ClientOptions,
    /// `endpoint/bucket/key` (default) rather than virtual-hosted
    /// `bucket.endpoint/key`.
    pub path_style: Option<bool>,
    /// Whether `create()` (run by `cairn init`) creates a missing bucket
    /// (default true).
    pub create_bucket: Option<bool>,
    /// An AWS profile (cargo feature `aws-profile`).
    pub profile: Option<String>,
    /// Any other `object_store` S3 key (`endpoint`, `region`,
    /// `access_key_id`, `allow_http`, …), passed on as given.
    pub store: Vec<(AmazonS3ConfigKey, String)>,
}

/// The keys of [`S3Options`] that are cairn's rather than `object_store`'s.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct OwnOptions {
    path_style: Option<bool>,
    create_bucket: Option<bool>,
    profile: Option<String>,
}

impl S3Options {
    /// The options as text (cairn.toml, [`S3Backend::from_url`]). A key that
    /// is neither cairn's nor an `object_store` S3 key is an error.
    pub fn from_map(text: &OptionMap) -> Result<S3Options> {
        let (client, rest) = options::split::<ClientOptions>("s3", text)?;
        let (own, rest) = options::split::<OwnOptions>("s3", &rest)?;
        Ok(S3Options {
            client,
            path_style: own.path_style,
            create_bucket: own.create_bucket,
            profile: own.profile,
            store: store_keys("s3", rest)?,
        })
    }
}

/// A repository in an S3 bucket.
pub struct S3Backend {
    inner: ObjectStoreBackend,
}

impl S3Backend {
    /// Open `s3://bucket/prefix` with `options` as text (see
    /// [`S3Options::from_map`]).
    pub fn from_url(url: &str, options: &OptionMap) -> Result<Self, BackendError> {
        Self::new(url, S3Options::from_map(options)?)
    }

    /// Open `s3://bucket/prefix` with `options` on top of the `AWS_*`
    /// environment. Builds the client only; nothing is sent until the first
    /// request.
    pub fn new(url: &str, options: S3Options) -> Result<Self, BackendError> {
        let (bucket, prefix) = split_url(url, &["s3", "s3a"])?;
        let common = CommonOptions::new(&options.client, "s3")?;

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
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::PoolIdleTimeout),
                format!("{}ms", common.pool_idle_timeout.as_millis()),
            );
        if let Some(path_style) = options.path_style {
            builder = builder.with_virtual_hosted_style_request(!path_style);
        }
        let create_bucket = options.create_bucket.unwrap_or(true);
        // cairn deletes one object per call: a plain `DELETE /key` answers
        // with a status of its own (403, 404, 5xx) where `DeleteObjects`
        // nests per-key errors in an XML body, and it works on S3-compatible
        // stores without `DeleteObjects`. Still an option (and env var) for
        // those who want the bulk request.
        if std::env::var_os("AWS_DISABLE_BULK_DELETE").is_none() {
            builder = builder.with_disable_bulk_delete(true);
        }
        for (key, value) in options.store {
            builder = builder.with_config(key, value);
        }
        builder = apply_profile(builder, options.profile)?;
        check_credentials(&builder)?;
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .map(|e| redact_endpoint(&e));
        let creation = BucketSite::of(&builder, bucket)?;
        let store = builder
            .build()
            .map_err(|e| map_error(&format!("configure {url}"), bucket, e))?;
        let creator: std::result::Result<Arc<dyn ContainerCreator>, String> = if !create_bucket {
            Err("the option create_bucket is false".into())
        } else if creation.s3_express {
            Err("cairn does not create S3 Express directory buckets".into())
        } else {
            Ok(Arc::new(S3Creator {
                site: creation,
                credentials: Arc::clone(store.credentials()),
                timeout: common.timeout,
                connect_timeout: common.connect_timeout,
            }))
        };

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
            .with_creator(creator)
            .with_capabilities(Capabilities {
                atomic_create: true,
                max_object_size: Some(MAX_PUT_BYTES),
                default_connections: common.connections,
                local: false,
            });
        Ok(S3Backend { inner })
    }

    /// The generic adapter underneath.
    pub fn inner(&self) -> &ObjectStoreBackend {
        &self.inner
    }
}

delegate_backend!(S3Backend);

/// Use the AWS profile named by `profile` (or `AWS_PROFILE`), when cairn is
/// built with the `aws-profile` feature.
#[cfg(feature = "aws-profile")]
fn apply_profile(builder: AmazonS3Builder, profile: Option<String>) -> Result<AmazonS3Builder> {
    crate::aws_profile::apply(builder, profile.as_deref())
}

#[cfg(not(feature = "aws-profile"))]
fn apply_profile(builder: AmazonS3Builder, profile: Option<String>) -> Result<AmazonS3Builder> {
    match profile {
        None => Ok(builder),
        Some(_) => Err(BackendError::new(
            ErrorKind::Unsupported,
            "s3 option profile: this cairn was built without the aws-profile feature \
             (build with --features aws-profile, or export the profile's keys with \
             `aws configure export-credentials --format env`)",
        )),
    }
}

/// Where and how a `CreateBucket` request goes, worked out from the builder
/// the way `object_store` works out its own bucket URL.
struct BucketSite {
    bucket: String,
    /// `https://s3.REGION.amazonaws.com/BUCKET`, `ENDPOINT/BUCKET`, or the
    /// virtual-hosted equivalent.
    url: String,
    region: String,
    skip_signature: bool,
    s3_express: bool,
}

impl BucketSite {
    fn of(builder: &AmazonS3Builder, bucket: &str) -> Result<BucketSite> {
        let flag = |key: AmazonS3ConfigKey, name: &str| -> Result<bool> {
            match builder.get_config_value(&key) {
                Some(v) => parse_bool("s3", name, &v),
                None => Ok(false),
            }
        };
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".to_string());
        let virtual_hosted = flag(
            AmazonS3ConfigKey::VirtualHostedStyleRequest,
            "virtual_hosted_style_request",
        )?;
        // As in object_store: the S3-specific endpoint wins; with
        // virtual-hosted requests an endpoint already names the bucket.
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        let url = match (endpoint, virtual_hosted) {
            (Some(e), true) => e,
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        Ok(BucketSite {
            bucket: bucket.to_string(),
            url,
            region,
            skip_signature: flag(AmazonS3ConfigKey::SkipSignature, "skip_signature")?,
            s3_express: flag(AmazonS3ConfigKey::S3Express, "s3_express")?,
        })
    }

    /// The `CreateBucket` body: none in us-east-1 (which refuses a
    /// constraint naming itself), else the region.
    fn body(&self) -> Bytes {
        if self.region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            ))
        }
    }
}

/// Sends `CreateBucket` (see the module docs).
struct S3Creator {
    site: BucketSite,
    credentials: AwsCredentialProvider,
    timeout: std::time::Duration,
    connect_timeout: std::time::Duration,
}

#[async_trait]
impl ContainerCreator for S3Creator {
    async fn create_container(&self, shown: &str) -> Result<()> {
        let site = &self.site;
        let what = format!("create bucket {:?} ({shown})", site.bucket);
        let body = site.body();
        let mut request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(site.url.as_str())
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| {
                BackendError::with_source(ErrorKind::Other, format!("{what}: bad URL"), e)
            })?;
        if !site.skip_signature {
            let credential = self
                .credentials
                .get_credential()
                .await
                .map_err(|e| map_error(&what, &site.bucket, e))?;
            AwsAuthorizer::new(&credential, "s3", &site.region)
                .try_authorize(&mut request, None)
                .map_err(|e| map_error(&what, &site.bucket, e))?;
        }
        let answer = send_signed(&what, request, body, self.timeout, self.connect_timeout).await?;
        if answer.status.is_success() {
            return Ok(());
        }
        let code = xml_tag(&answer.body, "Code").unwrap_or_default();
        let message = xml_message(&answer.body);
        let (kind, hint) = match code {
            // Created earlier by these credentials (a concurrent init, or a
            // probe that raced with another client): what we wanted.
            "BucketAlreadyOwnedByYou" => return Ok(()),
            "BucketAlreadyExists" => (
                ErrorKind::PermissionDenied,
                "; the name belongs to another account (S3 bucket names are global): choose another",
            ),
            c if is_auth_failure(c) => (ErrorKind::Unauthenticated, ""),
            _ => match status_kind(answer.status.as_u16()) {
                ErrorKind::PermissionDenied => (
                    ErrorKind::PermissionDenied,
                    "; these credentials may not create buckets (s3:CreateBucket): create it first, or allow that",
                ),
                kind => (kind, ""),
            },
        };
        Err(BackendError::new(
            kind,
            format!(
                "{what}: HTTP {} {code}{}{message}{hint}",
                answer.status.as_u16(),
                if message.is_empty() { "" } else { ": " }
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(pairs: &[(&str, &str)]) -> BucketSite {
        let mut b = AmazonS3Builder::new();
        for (k, v) in pairs {
            b = b.with_config(k.parse().unwrap(), *v);
        }
        BucketSite::of(&b, "bkt").unwrap()
    }

    #[test]
    fn bucket_urls_follow_object_store() {
        let s = site(&[]);
        assert_eq!(s.url, "https://s3.us-east-1.amazonaws.com/bkt");
        assert!(s.body().is_empty());
        let s = site(&[
            ("region", "eu-west-1"),
            ("virtual_hosted_style_request", "true"),
        ]);
        assert_eq!(s.url, "https://bkt.s3.eu-west-1.amazonaws.com");
        assert!(std::str::from_utf8(&s.body())
            .unwrap()
            .contains("<LocationConstraint>eu-west-1</LocationConstraint>"));
        let s = site(&[("endpoint", "http://127.0.0.1:9000/")]);
        assert_eq!(s.url, "http://127.0.0.1:9000/bkt");
        let s = site(&[
            ("endpoint", "http://127.0.0.1:9000"),
            ("aws_endpoint_url_s3", "http://s3.local:9000"),
        ]);
        assert_eq!(s.url, "http://s3.local:9000/bkt");
        assert!(!s.skip_signature && !s.s3_express);
    }

    #[cfg(not(feature = "aws-profile"))]
    #[test]
    fn profile_needs_the_feature() {
        let o = std::collections::BTreeMap::from([("profile".to_string(), "work".to_string())]);
        let err = S3Backend::from_url("s3://b/p", &o).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("aws-profile"), "{err}");
    }
}
