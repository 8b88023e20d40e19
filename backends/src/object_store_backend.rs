//! A [`Backend`] on top of any `object_store` store: the shared half of the S3
//! and Azure backends.
//!
//! [`ObjectStoreBackend`] maps [`Handle::path`] under a prefix inside one
//! bucket (container), implements the parts of the trait contract that
//! object stores do not give directly (ranged reads past the end, `NotFound`
//! on deleting a missing object, listing one kind), and maps `object_store`'s
//! errors onto [`ErrorKind`].
//!
//! Retries: `object_store` retries 5xx answers, connection errors and
//! timeouts itself, by default up to 10 times over 3 minutes. cairn wraps every
//! backend in its own retry decorator (`layer`), which knows the whole
//! operation and reports what it does, so the inner retry is cut down to one
//! quick attempt ([`client_retry`]): it still hides the occasional reset of a
//! pooled keep-alive connection, but a dead server surfaces in well under a
//! second instead of minutes, and retries do not multiply (10 inner × N outer).
//! 4xx answers (bad credentials, missing bucket) are never retried by
//! `object_store`.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, BackoffConfig, GetOptions, GetRange, ObjectStore, PutOptions,
    PutPayload, RetryConfig,
};
use serde::Deserialize;

use crate::options::{out_of_range, OptionMap};
use crate::{
    clip_range, Backend, BackendError, Capabilities, ErrorKind, Handle, Kind, ObjectMeta, PutMode,
    Result,
};

/// Default per-request timeout. `object_store`'s own default (30 s) fails a
/// 100 MiB pack on anything slower than ~3.5 MiB/s; a request that makes no
/// progress for this long is better retried by the caller anyway.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default timeout for establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept. Servers close idle
/// connections on their own schedule (azurite, like any Node.js server,
/// after 5 s); a request sent on a connection the server is closing at that
/// moment fails with "connection reset". Dropping idle connections first
/// costs only a new connection after a pause.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Default number of retries `object_store` does by itself (see module docs).
pub const DEFAULT_CLIENT_RETRIES: usize = 1;

/// The options every `object_store`-based backend (S3, Azure) understands
/// besides the store's own keys. Unset means the default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientOptions {
    /// Per-request timeout in seconds (default 300).
    pub timeout_secs: Option<f64>,
    /// Connection timeout in seconds (default 10).
    pub connect_timeout_secs: Option<f64>,
    /// Idle pooled connections are closed after this many seconds (default
    /// 4: before servers close them under a request).
    pub pool_idle_timeout_secs: Option<f64>,
    /// Retries inside `object_store` (default 1: cairn's retry layer does the
    /// real retrying).
    pub retries: Option<usize>,
    /// Suggested concurrency (default 8).
    pub connections: Option<usize>,
    /// Storage class / access tier for new objects.
    pub storage_class: Option<String>,
}

/// [`ClientOptions`] checked, with the defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CommonOptions {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub retries: usize,
    pub storage_class: Option<String>,
    pub connections: usize,
}

impl CommonOptions {
    /// Check `options` (of the backend `scheme`, for messages).
    pub fn new(options: &ClientOptions, scheme: &str) -> Result<Self> {
        let secs = |key: &str, value: Option<f64>, default: Duration| match value {
            None => Ok(default),
            Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            Some(s) => Err(out_of_range(scheme, key, s, "a positive number of seconds")),
        };
        let connections = match options.connections {
            None => 8,
            Some(0) => {
                return Err(out_of_range(
                    scheme,
                    "connections",
                    0,
                    "a positive whole number",
                ))
            }
            Some(n) => n,
        };
        Ok(CommonOptions {
            timeout: secs("timeout_secs", options.timeout_secs, DEFAULT_TIMEOUT)?,
            connect_timeout: secs(
                "connect_timeout_secs",
                options.connect_timeout_secs,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            pool_idle_timeout: secs(
                "pool_idle_timeout_secs",
                options.pool_idle_timeout_secs,
                DEFAULT_POOL_IDLE_TIMEOUT,
            )?,
            retries: options.retries.unwrap_or(DEFAULT_CLIENT_RETRIES),
            storage_class: options.storage_class.clone(),
            connections,
        })
    }
}

/// An error for an option value that does not parse. Option values can be
/// secrets, so only keys known to be harmless are echoed.
pub(crate) fn bad_option(scheme: &str, key: &str, value: &str, expected: &str) -> BackendError {
    BackendError::new(
        ErrorKind::Other,
        format!("{scheme} option {key}={value:?}: expected {expected}"),
    )
}

/// An option key of the store itself (`region`, `access_key_id`, …), as
/// the store's key type `K` parses it; any other key is an unknown option
/// of `scheme`, named in the error.
pub(crate) fn store_keys<K: std::str::FromStr>(
    scheme: &str,
    options: OptionMap,
) -> Result<Vec<(K, String)>> {
    options
        .into_iter()
        .map(|(key, value)| match key.parse::<K>() {
            Ok(k) => Ok((k, value)),
            Err(_) => Err(BackendError::new(
                ErrorKind::Other,
                format!("unknown {scheme} option {key:?}"),
            )),
        })
        .collect()
}

/// The retry policy handed to `object_store` (see the module docs for why it
/// is this small).
pub(crate) fn client_retry(retries: usize, timeout: Duration) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: retries,
        retry_timeout: timeout,
    }
}

/// Split `scheme://container/prefix` into container and prefix (without
/// surrounding slashes). Query strings and credentials in the URL are refused:
/// options and the environment carry those.
pub(crate) fn split_url<'a>(url: &'a str, schemes: &[&str]) -> Result<(&'a str, &'a str)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| BackendError::new(ErrorKind::Other, format!("not a URL: {url:?}")))?;
    if !schemes.contains(&scheme) {
        return Err(BackendError::new(
            ErrorKind::Other,
            format!("URL scheme {scheme:?} is not one of {}", schemes.join(", ")),
        ));
    }
    if rest.contains(['?', '#', '@']) {
        return Err(BackendError::new(
            ErrorKind::Other,
            format!("{scheme} URL must be {scheme}://CONTAINER/PREFIX, without user, query or fragment (put settings in options)"),
        ));
    }
    let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if container.is_empty() {
        return Err(BackendError::new(
            ErrorKind::Other,
            format!("{scheme} URL has no bucket/container name"),
        ));
    }
    Ok((container, prefix.trim_matches('/')))
}

/// Parse a boolean option the way `object_store` does.
pub(crate) fn parse_bool(scheme: &str, key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(bad_option(scheme, key, value, "true or false")),
    }
}

/// An endpoint URL as it may be shown: without any user info (an endpoint
/// needs none to be recognised) and with secret query parameters masked
/// (see [`crate::redact_url`]).
pub(crate) fn redact_endpoint(endpoint: &str) -> String {
    let shown = crate::redact_url(endpoint);
    match shown.split_once("://") {
        Some((scheme, rest)) => match crate::redact::split_userinfo(rest) {
            Some((_, host_on)) => format!("{scheme}://{host_on}"),
            None => shown,
        },
        None => shown.rsplit('@').next().unwrap_or_default().to_string(),
    }
}

/// Which service is behind the store, for the few places where they differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    S3,
    Azure,
    /// Any other `object_store` store; treated like S3 (no assumptions).
    Other,
}

/// Creates a missing bucket / container with a request of its own:
/// `object_store` has no call for it. `create()` uses it only after a probe
/// found the bucket missing.
#[async_trait]
pub(crate) trait ContainerCreator: Send + Sync {
    /// Create the bucket / container; `Ok` too when it turns out to exist
    /// already and belong to the caller (a concurrent `init`). `shown` is the
    /// backend's display, for messages.
    async fn create_container(&self, shown: &str) -> Result<()>;
}

/// Deletes one object with one plain request of its own, where the store's
/// only delete call is a batch (Azure's Blob Batch, whose per-blob errors
/// come back inside a multipart answer, and which azurite answers with 500
/// when a SAS lacks the delete permission).
#[async_trait]
pub(crate) trait ObjectDeleter: Send + Sync {
    /// Delete the object at `key` (the full key in the container); a
    /// missing object is `NotFound`. `what` names the operation for messages.
    async fn delete_object(&self, key: &str, what: &str) -> Result<()>;
}

/// The answer to a request sent with [`send_signed`].
pub(crate) struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// Send `request` (signed by one of `object_store`'s authorizers) with
/// `body` on a client of its own; only a missing answer is an error. The
/// request is rare (bucket creation), so the client is not kept.
pub(crate) async fn send_signed(
    what: &str,
    request: object_store::client::HttpRequest,
    body: Bytes,
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<Answer> {
    let client = http_client(what, timeout, connect_timeout)?;
    send_with(&client, what, request, body).await
}

/// A client for [`send_with`].
pub(crate) fn http_client(
    what: &str,
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|e| BackendError::with_source(ErrorKind::Other, format!("{what}: HTTP client"), e))
}

/// [`send_signed`] on a client the caller keeps (and whose connections are
/// reused).
pub(crate) async fn send_with(
    client: &reqwest::Client,
    what: &str,
    request: object_store::client::HttpRequest,
    body: Bytes,
) -> Result<Answer> {
    // URLs can carry a SAS token: errors must not repeat them.
    let response = client
        .request(request.method().clone(), request.uri().to_string())
        .headers(request.headers().clone())
        .body(body)
        .send()
        .await
        .map_err(|e| crate::http_util::transport_error(what, e.without_url()))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .text()
        .await
        .map_err(|e| crate::http_util::transport_error(what, e.without_url()))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// One repository under `prefix` in one bucket/container of an `ObjectStore`.
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    /// Repository root inside the container, without surrounding slashes.
    prefix: String,
    /// Bucket or container name, for messages.
    container: String,
    /// What `Display` shows: the URL and the endpoint, never a secret.
    display: String,
    service: Service,
    storage_class: Option<String>,
    capabilities: Capabilities,
    /// How `create()` makes a missing container, or why it cannot.
    creator: std::result::Result<Arc<dyn ContainerCreator>, String>,
    /// How `delete()` removes one object, when not through the store.
    deleter: Option<Arc<dyn ObjectDeleter>>,
}

impl ObjectStoreBackend {
    /// Wrap `store` (already bound to `container`), keeping the repository
    /// under `prefix`. `display` is what `Display` shows and must not hold
    /// secrets.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        service: Service,
        container: impl Into<String>,
        prefix: &str,
        display: impl Into<String>,
    ) -> Self {
        ObjectStoreBackend {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            container: container.into(),
            display: display.into(),
            service,
            storage_class: None,
            capabilities: Capabilities {
                atomic_create: true,
                max_object_size: None,
                default_connections: 8,
                local: false,
            },
            creator: Err("this backend does not create it".into()),
            deleter: None,
        }
    }

    /// Delete single objects with `deleter` instead of the store's call.
    pub(crate) fn with_deleter(mut self, deleter: Arc<dyn ObjectDeleter>) -> Self {
        self.deleter = Some(deleter);
        self
    }

    /// Let `create()` make a missing bucket / container with `creator`, or
    /// say why it does not (`Err`, completing "create it first: …").
    pub(crate) fn with_creator(
        mut self,
        creator: std::result::Result<Arc<dyn ContainerCreator>, String>,
    ) -> Self {
        self.creator = creator;
        self
    }

    /// Store new objects with this storage class (S3) / access tier (Azure).
    pub fn with_storage_class(mut self, class: Option<String>) -> Self {
        self.storage_class = class;
        self
    }

    /// Replace the declared capabilities.
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// The wrapped store, for tools that need more than the trait.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key of `handle` in the store.
    fn path(&self, handle: &Handle) -> Path {
        self.join(&handle.path())
    }

    fn join(&self, rel: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{}", self.prefix, rel))
        }
    }

    /// The repository-relative part of a listed key.
    fn relative<'a>(&self, location: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(location)
        } else {
            location
                .strip_prefix(self.prefix.as_str())?
                .strip_prefix('/')
        }
    }

    fn err(&self, what: impl fmt::Display, err: object_store::Error) -> BackendError {
        map_error(&format!("{what} ({self})"), &self.container, err)
    }

    async fn head_path(&self, handle: &Handle) -> Result<u64> {
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let path = self.path(handle);
        match self.store.get_opts(&path, options).await {
            Ok(result) => Ok(result.meta.size),
            Err(e) => {
                let err = self.err(format_args!("head {handle}"), e);
                if err.kind() != ErrorKind::PermissionDenied {
                    return Err(err);
                }
                // A HEAD answer has no body, so a 403 cannot tell "wrong
                // credentials" from "not allowed"; a listing's answer can.
                match self.store.list_with_delimiter(Some(&path)).await {
                    Err(probe) if classify(&probe) == ErrorKind::Unauthenticated => {
                        Err(BackendError::with_source(
                            ErrorKind::Unauthenticated,
                            err.message().to_string(),
                            probe,
                        ))
                    }
                    _ => Err(err),
                }
            }
        }
    }

    async fn get_range(&self, handle: &Handle, range: Range<u64>) -> Result<Bytes> {
        // An empty or reversed range cannot be asked of HTTP (`bytes=5-4` is
        // invalid), and its answer depends only on the size.
        if range.start >= range.end {
            let size = self.head_path(handle).await?;
            clip_range(handle, &range, size)?;
            return Ok(Bytes::new());
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&self.path(handle), options).await {
            Ok(result) => result,
            Err(e) => {
                let err = self.err(format_args!("get {handle} bytes {range:?}"), e);
                // A range starting at or past the end gets 416 (or a local
                // check fails): the size decides between "empty" (start ==
                // size) and InvalidRange.
                if matches!(
                    err.kind(),
                    ErrorKind::NotFound
                        | ErrorKind::Unauthenticated
                        | ErrorKind::PermissionDenied
                        | ErrorKind::Unreachable
                ) {
                    return Err(err);
                }
                let size = self.head_path(handle).await?;
                let clipped = clip_range(handle, &range, size)?;
                if clipped.is_empty() {
                    return Ok(Bytes::new());
                }
                return Err(err);
            }
        };
        let expected = range.start..range.end.min(result.meta.size);
        let returned = result.range.clone();
        let data = result
            .bytes()
            .await
            .map_err(|e| self.err(format_args!("get {handle} bytes {range:?}"), e))?;
        if returned != expected || data.len() as u64 != expected.end - expected.start {
            return Err(BackendError::new(
                ErrorKind::Corrupt,
                format!(
                    "get {handle} bytes {range:?} ({self}): got {} bytes for {returned:?}, expected {expected:?}",
                    data.len()
                ),
            ));
        }
        Ok(data)
    }

    async fn delete_path(&self, handle: &Handle) -> Result<()> {
        let path = self.path(handle);
        if let Some(deleter) = &self.deleter {
            return deleter
                .delete_object(path.as_ref(), &format!("delete {handle} ({self})"))
                .await;
        }
        let mut results = self
            .store
            .delete_stream(stream::once(async { Ok(path) }).boxed());
        while let Some(r) = results.next().await {
            r.map_err(|e| self.err(format_args!("delete {handle}"), e))?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store's own Debug can include configuration; keep to the URL.
        f.debug_struct("ObjectStoreBackend")
            .field("url", &self.display)
            .field("service", &self.service)
            .finish()
    }
}

impl fmt::Display for ObjectStoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

#[async_trait]
impl Backend for ObjectStoreBackend {
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        if let Some(max) = self.capabilities.max_object_size {
            if data.len() as u64 > max {
                return Err(BackendError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "put {handle} ({self}): {} bytes is more than the {max} one request can store",
                        data.len()
                    ),
                ));
            }
        }
        let mut attributes = Attributes::new();
        if let Some(class) = &self.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        let options = PutOptions {
            mode: match mode {
                PutMode::Overwrite => object_store::PutMode::Overwrite,
                PutMode::Create => object_store::PutMode::Create,
            },
            attributes,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.path(handle), PutPayload::from(data), options)
            .await
            .map_err(|e| self.err(format_args!("put {handle}"), e))?;
        Ok(())
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        if let Some(range) = range {
            return self.get_range(handle, range).await;
        }
        let result = self
            .store
            .get_opts(&self.path(handle), GetOptions::default())
            .await
            .map_err(|e| self.err(format_args!("get {handle}"), e))?;
        let size = result.meta.size;
        let data = result
            .bytes()
            .await
            .map_err(|e| self.err(format_args!("get {handle}"), e))?;
        if data.len() as u64 != size {
            return Err(BackendError::new(
                ErrorKind::Corrupt,
                format!("get {handle} ({self}): got {} bytes of {size}", data.len()),
            ));
        }
        Ok(data)
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        Ok(ObjectMeta::new(
            handle.clone(),
            self.head_path(handle).await?,
        ))
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        // The config sits at the repository root: listing the root would walk
        // every pack. It is one object, so ask for it.
        if kind == Kind::Config {
            return match self.head(&Handle::config()).await {
                Ok(meta) => Ok(vec![meta]),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let dir = self.join(kind.dir());
        let found: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| self.err(format_args!("list {}", kind.dir()), e))?;
        Ok(found
            .into_iter()
            .filter_map(|meta| {
                let rel = self.relative(meta.location.as_ref())?;
                Some(ObjectMeta {
                    handle: Handle::from_path(kind, rel)?,
                    size: meta.size,
                    modified: Some(meta.last_modified.into()),
                })
            })
            .collect())
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        // S3 answers a DELETE of a missing key with success (and bulk delete
        // lists no error for it), so ask first; the trait wants NotFound.
        // Azure reports BlobNotFound itself.
        if self.service != Service::Azure {
            self.head_path(handle).await?;
        }
        self.delete_path(handle).await
    }

    async fn create(&self) -> Result<()> {
        // Creation is tried only when a probe says the container is missing:
        // an existing bucket needs no permission beyond the object ones, and
        // wrong credentials fail the probe (Unauthenticated) before anything
        // else is sent.
        match self.probe_container().await {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            other => return other,
        }
        let noun = self.container_noun();
        let creator = match &self.creator {
            Ok(creator) => creator,
            Err(why) => {
                return Err(BackendError::new(
                    ErrorKind::NotFound,
                    format!(
                        "{noun} {:?} does not exist ({self}); create it first: {why}",
                        self.container
                    ),
                ))
            }
        };
        creator.create_container(&self.display).await?;
        tracing::info!(backend = %self, "created {noun} {}", self.container);
        // A new bucket can take a moment to be visible everywhere (S3 says
        // so); wait until a listing works, a few seconds at most.
        let mut attempt = 0;
        loop {
            match self.probe_container().await {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound && attempt < 10 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl ObjectStoreBackend {
    /// `Ok` when the container exists and these credentials may list it.
    async fn probe_container(&self) -> Result<()> {
        let probe = self.join(".cairn-create-probe");
        match self.store.list_with_delimiter(Some(&probe)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.err(format_args!("check {}", self.container_noun()), e);
                if err.kind() == ErrorKind::NotFound {
                    Err(BackendError::new(
                        ErrorKind::NotFound,
                        format!(
                            "{} {:?} does not exist ({self})",
                            self.container_noun(),
                            self.container
                        ),
                    ))
                } else {
                    Err(err)
                }
            }
        }
    }

    fn container_noun(&self) -> &'static str {
        match self.service {
            Service::Azure => "container",
            _ => "bucket",
        }
    }
}

/// Whether `value` can be sent in an HTTP header. `object_store` unwraps
/// the header values it builds from credentials, so a key id or token with
/// a line break in it (pasted from a file, say) would panic there.
pub(crate) fn header_safe(value: &str) -> bool {
    http::HeaderValue::from_str(value).is_ok()
}

/// A configuration error for a credential that [`header_safe`] refuses;
/// names where it came from, never the value.
pub(crate) fn unsafe_credential(what: &str) -> BackendError {
    BackendError::new(
        ErrorKind::Unauthenticated,
        format!(
            "{what} contains a line break or control character (a trailing newline?): \
             give the value alone"
        ),
    )
}

/// Map an `object_store` error onto a [`BackendError`] for operation `what`
/// in `container`.
///
/// The message is complete on its own (status, the service's error code and
/// the first line of its message, or the transport failure), so the
/// object_store error is not kept as the source: its text repeats the whole
/// XML answer of the server, which buried the useful part. It goes to the
/// debug log instead (`-vv`).
pub(crate) fn map_error(what: &str, container: &str, err: object_store::Error) -> BackendError {
    let kind = classify(&err);
    tracing::debug!("{what}: {}", chain_text(&err));
    let message = if kind == ErrorKind::NotFound && is_missing_container(&err) {
        format!("{what}: bucket/container {container:?} does not exist")
    } else {
        format!("{what}: {}", summary(&err))
    };
    BackendError::new(kind, message)
}

/// The service's answer in short: `HTTP 403 SignatureDoesNotMatch: The
/// request signature …` (S3 `<Code>`/`<Message>`, Azure likewise), or the
/// innermost transport failure when there was no answer.
fn summary(err: &object_store::Error) -> String {
    let text = chain_text(err);
    let code = xml_tag(&text, "Code");
    let status = status_code(&text);
    let head = match (status, code) {
        (Some(s), Some(c)) => format!("HTTP {s} {c}"),
        (Some(s), None) => format!("HTTP {s}"),
        (None, Some(c)) => c.to_string(),
        (None, None) => {
            // No answer from the server: the innermost cause ("Connection
            // refused (os error 111)", "operation timed out") says most.
            let inner = innermost(err).unwrap_or_else(|| err.to_string());
            return crate::http_util::shorten(inner);
        }
    };
    match xml_message(&text) {
        m if m.is_empty() => head,
        m => format!("{head}: {m}"),
    }
}

fn classify(err: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    let text = chain_text(err);
    match err {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            ErrorKind::AlreadyExists
        }
        E::Unauthenticated { .. } => ErrorKind::Unauthenticated,
        E::PermissionDenied { .. } => {
            if is_auth_failure(&text) {
                ErrorKind::Unauthenticated
            } else {
                ErrorKind::PermissionDenied
            }
        }
        E::NotSupported { .. } | E::NotImplemented { .. } => ErrorKind::Unsupported,
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => ErrorKind::Other,
        _ => classify_generic(err, &text),
    }
}

/// Errors `object_store` did not sort (list, bulk delete, credentials,
/// transport): by HTTP status when there was an answer, else by transport
/// failure.
fn classify_generic(err: &object_store::Error, text: &str) -> ErrorKind {
    if is_auth_failure(text) {
        return ErrorKind::Unauthenticated;
    }
    // Per-key errors of a bulk delete carry the service's code but no
    // status: "Access Denied (code: AccessDenied)".
    if status_code(text).is_none() {
        if text.contains("code: AccessDenied") || text.contains("code: AllAccessDisabled") {
            return ErrorKind::PermissionDenied;
        }
        if text.contains("code: NoSuchKey") {
            return ErrorKind::NotFound;
        }
    }
    if let Some(status) = status_code(text) {
        return match status {
            401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            409 | 412 => ErrorKind::AlreadyExists,
            416 => ErrorKind::InvalidRange,
            507 => ErrorKind::StorageFull,
            408 | 429 | 500..=599 => ErrorKind::Transient,
            _ => ErrorKind::Other,
        };
    }
    if text.contains("InternalError") || text.contains("SlowDown") || text.contains("ServerBusy") {
        return ErrorKind::Transient;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            match io.kind() {
                Io::ConnectionRefused
                | Io::HostUnreachable
                | Io::NetworkUnreachable
                | Io::AddrNotAvailable => return ErrorKind::Unreachable,
                _ => {}
            }
        }
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as H;
            return match http.kind() {
                // A certificate problem is not going away on retry.
                H::Connect if text.contains("certificate") => ErrorKind::Other,
                H::Connect => ErrorKind::Unreachable,
                H::Timeout | H::Request | H::Interrupted | H::Decode => ErrorKind::Transient,
                _ => ErrorKind::Other,
            };
        }
        source = e.source();
    }
    ErrorKind::Other
}

/// Answers that mean "these credentials are wrong", which both services send
/// as 403 (object_store calls every 403 PermissionDenied).
pub(crate) fn is_auth_failure(text: &str) -> bool {
    const CODES: &[&str] = &[
        // S3
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "MissingSecurityHeader",
        // Azure (azurite says AuthorizationFailure with this message)
        "AuthenticationFailed",
        "Server failed to authenticate the request",
        "InvalidAuthenticationInfo",
        "NoAuthenticationInformation",
    ];
    CODES.iter().any(|c| text.contains(c))
}

fn is_missing_container(err: &object_store::Error) -> bool {
    let text = chain_text(err);
    text.contains("NoSuchBucket") || text.contains("ContainerNotFound")
}

/// The `Display` of the error and all its sources, which is where
/// `object_store` keeps the status and the service's answer.
fn chain_text(err: &object_store::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(" | ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The text of the last error in the source chain, if there is a chain.
fn innermost(err: &object_store::Error) -> Option<String> {
    let mut last = None;
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        last = Some(e.to_string());
        source = e.source();
    }
    last
}

/// The status in object_store's "status code: 404 Not Found" text.
fn status_code(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// The content of the first `<tag>…</tag>` in an XML error body.
pub(crate) fn xml_tag<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find('<')?;
    Some(text[start..start + len].trim()).filter(|s| !s.is_empty() && s.len() < 100)
}

/// The first line of the `<Message>` of an XML error body, shortened; empty
/// if there is none.
pub(crate) fn xml_message(text: &str) -> String {
    let Some(start) = text.find("<Message>").map(|i| i + "<Message>".len()) else {
        return String::new();
    };
    let rest = &text[start..];
    let end = rest.find('<').unwrap_or(rest.len());
    let first_line = rest[..end].trim().lines().next().unwrap_or_default();
    crate::http_util::shorten(first_line.trim().to_string())
}

/// Implement [`Backend`], `Debug` and `Display` for a newtype around
/// [`ObjectStoreBackend`] in its `inner` field.
macro_rules! delegate_backend {
    ($ty:ty) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(&self.inner, f)
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.inner, f)
            }
        }

        #[::async_trait::async_trait]
        impl $crate::Backend for $ty {
            fn capabilities(&self) -> $crate::Capabilities {
                self.inner.capabilities()
            }
            async fn put(
                &self,
                handle: &$crate::Handle,
                data: ::bytes::Bytes,
                mode: $crate::PutMode,
            ) -> $crate::Result<()> {
                self.inner.put(handle, data, mode).await
            }
            async fn get(
                &self,
                handle: &$crate::Handle,
                range: ::std::option::Option<::std::ops::Range<u64>>,
            ) -> $crate::Result<::bytes::Bytes> {
                self.inner.get(handle, range).await
            }
            async fn head(&self, handle: &$crate::Handle) -> $crate::Result<$crate::ObjectMeta> {
                self.inner.head(handle).await
            }
            async fn list(&self, kind: $crate::Kind) -> $crate::Result<Vec<$crate::ObjectMeta>> {
                self.inner.list(kind).await
            }
            async fn delete(&self, handle: &$crate::Handle) -> $crate::Result<()> {
                self.inner.delete(handle).await
            }
            async fn create(&self) -> $crate::Result<()> {
                self.inner.create().await
            }
        }
    };
}
pub(crate) use delegate_backend;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn urls_split() {
        assert_eq!(split_url("s3://b/p/q/", &["s3"]).unwrap(), ("b", "p/q"));
        assert_eq!(split_url("s3://b", &["s3"]).unwrap(), ("b", ""));
        assert!(split_url("az://b/p", &["s3"]).is_err());
        assert!(split_url("s3://key:secret@b/p", &["s3"]).is_err());
        assert!(split_url("s3:///p", &["s3"]).is_err());
    }

    #[test]
    fn endpoints_lose_credentials() {
        assert_eq!(
            redact_endpoint("http://u:p@127.0.0.1:9000/x"),
            "http://127.0.0.1:9000/x"
        );
        assert_eq!(redact_endpoint("http://h:1"), "http://h:1");
        assert_eq!(
            redact_endpoint("http://u:p/w@ss@h:1/x?sig=abc&sv=1"),
            "http://h:1/x?sig=***&sv=1"
        );
        assert_eq!(redact_endpoint("u:pw@h:1"), "h:1");
    }

    #[test]
    fn status_and_codes_are_found() {
        let t = "Server returned non-2xx status code: 403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code>";
        assert_eq!(status_code(t), Some(403));
        assert_eq!(xml_tag(t, "Code"), Some("SignatureDoesNotMatch"));
        assert!(is_auth_failure(t));
    }

    #[test]
    fn xml_messages_are_one_line() {
        let body = "<Error><Code>AuthorizationFailure</Code><Message>This request is not authorized.\nRequestId:1\nTime:2</Message></Error>";
        assert_eq!(xml_message(body), "This request is not authorized.");
        assert_eq!(xml_message("<Error/>"), "");
    }

    #[test]
    fn common_options_parse() {
        let o = BTreeMap::from([
            ("timeout_secs".to_string(), "12.5".to_string()),
            ("retries".to_string(), "0".to_string()),
            ("region".to_string(), "x".to_string()),
        ]);
        let (client, rest) = crate::options::split::<ClientOptions>("s3", &o).unwrap();
        let c = CommonOptions::new(&client, "s3").unwrap();
        assert_eq!(c.timeout, Duration::from_millis(12_500));
        assert_eq!(c.retries, 0);
        assert_eq!(rest.len(), 1);
        let bad = BTreeMap::from([("timeout_secs".to_string(), "-1".to_string())]);
        let (client, _) = crate::options::split::<ClientOptions>("s3", &bad).unwrap();
        assert!(CommonOptions::new(&client, "s3").is_err());
    }
}
