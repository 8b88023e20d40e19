//! Google Cloud Storage through its JSON API, on `reqwest`.
//!
//! Why not `object_store`'s GCS client: it speaks only the XML API, which no
//! installable emulator implements; the official `google-cloud-storage`
//! crate lists and deletes over gRPC, which fake-gcs-server does not serve.
//! cairn needs five JSON calls, so this is a thin client of its own (see
//! `docs/backends-gcs.md`, which also lists what the emulator cannot check):
//! - put: `POST /upload/storage/v1/b/B/o?uploadType=multipart`, with
//!   `ifGenerationMatch=0` for a create-only put (412 → `AlreadyExists`);
//!   multipart because that is the upload type on which fake-gcs-server
//!   enforces the precondition too;
//! - get: `GET /storage/v1/b/B/o/NAME?alt=media`, with `Range` (206/416);
//! - head: `GET /storage/v1/b/B/o/NAME` (metadata, for the size);
//! - list: `GET /storage/v1/b/B/o?prefix=P` following `nextPageToken`;
//! - delete: `DELETE /storage/v1/b/B/o/NAME` (404 → `NotFound`).
//!
//! Credentials: against the real service, Application Default Credentials
//! through `google-cloud-auth` (`GOOGLE_APPLICATION_CREDENTIALS` key file,
//! gcloud's ADC file, or the metadata server). With an emulator endpoint
//! (option `endpoint`, or `CAIRN_GCS_ENDPOINT`, or the de-facto standard
//! `STORAGE_EMULATOR_HOST`) no credentials are sent unless `anonymous=false`.
//!
//! Options (all optional): `endpoint`, `anonymous`, `storage_class` (e.g.
//! `NEARLINE`), `timeout_secs` (per request, default 300),
//! `connect_timeout_secs` (default 10), `connections` (suggested concurrency),
//! and for bucket creation `project` (default: `GOOGLE_CLOUD_PROJECT`),
//! `location` (default: the service's, `US`) and `create_bucket` (default
//! `true`). The client does not retry by itself: cairn's retry layer does.
//!
//! Bucket creation: `create()` lists the bucket first and, only if that
//! answers 404, creates it with `POST /storage/v1/b?project=PROJECT`. Without
//! a project it says so and asks for the bucket to be made first.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_auth::credentials::{
    Builder as CredentialsBuilder, CacheableResource, Credentials,
};
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use crate::http_util::{shorten, status_kind, transport_error};
use crate::options::{self, out_of_range, OptionMap};
use crate::{
    clip_range, Backend, BackendError, Capabilities, ErrorKind, Handle, Kind, ObjectMeta, PutMode,
    Result,
};

/// The production JSON API endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// Scope of the OAuth tokens asked for.
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Objects per list page (the API's maximum).
const PAGE_SIZE: &str = "1000";

/// A repository in a GCS bucket.
pub struct GcsBackend {
    client: Client,
    /// Service root, e.g. `https://storage.googleapis.com/`.
    endpoint: Url,
    bucket: String,
    /// Repository root inside the bucket, without surrounding slashes.
    prefix: String,
    /// `None` for an emulator: send no `Authorization`.
    credentials: Option<Credentials>,
    storage_class: Option<String>,
    connections: usize,
    display: String,
    /// What `create()` may do about a missing bucket.
    creation: Creation,
}

/// Whether and where `create()` makes a missing bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Creation {
    /// In this project, at this location (`None`: the service's default).
    In {
        project: String,
        location: Option<String>,
    },
    /// Not at all, for this reason (completing "create it first: …").
    Off(String),
}

#[derive(Deserialize)]
struct ObjectResource {
    name: String,
    /// The JSON API sends 64-bit numbers as strings.
    size: String,
    /// RFC 3339 time of the last write.
    #[serde(default)]
    updated: Option<String>,
}

impl ObjectResource {
    fn modified(&self) -> Option<std::time::SystemTime> {
        let t: jiff::Timestamp = self.updated.as_deref()?.parse().ok()?;
        Some(t.into())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ObjectResource>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
}

/// The options of a GCS repository (see the module docs); unset means the
/// default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcsOptions {
    /// The JSON API's root, for an emulator (else `CAIRN_GCS_ENDPOINT` or
    /// `STORAGE_EMULATOR_HOST`, else [`DEFAULT_ENDPOINT`]).
    pub endpoint: Option<String>,
    /// Send no credentials (default: only when an emulator endpoint is set).
    pub anonymous: Option<bool>,
    /// Storage class of new objects, e.g. `NEARLINE`.
    pub storage_class: Option<String>,
    /// Per-request timeout in seconds (default 300).
    pub timeout_secs: Option<f64>,
    /// Connection timeout in seconds (default 10).
    pub connect_timeout_secs: Option<f64>,
    /// Suggested concurrency (default 8).
    pub connections: Option<usize>,
    /// The project a missing bucket is created in (default:
    /// `GOOGLE_CLOUD_PROJECT`).
    pub project: Option<String>,
    /// Where a missing bucket is created (default: the service's, `US`).
    pub location: Option<String>,
    /// Whether `create()` (run by `cairn init`) creates a missing bucket
    /// (default true).
    pub create_bucket: Option<bool>,
}

impl GcsOptions {
    /// The options as text (cairn.toml, [`GcsBackend::from_url`]); an
    /// unknown key is an error.
    pub fn from_map(text: &OptionMap) -> Result<GcsOptions> {
        options::from_map("gcs", text)
    }
}

impl GcsBackend {
    /// Open `gs://bucket/prefix` with `options` as text (see
    /// [`GcsOptions::from_map`]).
    pub fn from_url(url: &str, options: &OptionMap) -> Result<Self, BackendError> {
        Self::new(url, GcsOptions::from_map(options)?)
    }

    /// Open `gs://bucket/prefix` with `options`. Builds the client and finds
    /// the credentials' source; nothing is sent until the first request.
    pub fn new(url: &str, options: GcsOptions) -> Result<Self, BackendError> {
        let rest = url
            .strip_prefix("gs://")
            .ok_or_else(|| other(format!("a GCS URL starts with gs://, not {url:?}")))?;
        if rest.contains(['?', '#', '@']) {
            return Err(other(
                "GCS URL must be gs://BUCKET/PREFIX, without user, query or fragment (put settings in options)",
            ));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(other("GCS URL has no bucket name"));
        }
        let prefix = prefix.trim_matches('/');

        let endpoint_option = options.endpoint.or_else(emulator_from_env);
        let anonymous = options.anonymous.unwrap_or(endpoint_option.is_some());
        let timeout = seconds("timeout_secs", options.timeout_secs, DEFAULT_TIMEOUT)?;
        let connect_timeout = seconds(
            "connect_timeout_secs",
            options.connect_timeout_secs,
            DEFAULT_CONNECT_TIMEOUT,
        )?;
        let connections = match options.connections {
            None => 8,
            Some(0) => {
                return Err(out_of_range(
                    "gcs",
                    "connections",
                    0,
                    "a positive whole number",
                ))
            }
            Some(n) => n,
        };
        let storage_class = options.storage_class;
        let create_bucket = options.create_bucket.unwrap_or(true);
        let project = options
            .project
            .or_else(|| std::env::var("GOOGLE_CLOUD_PROJECT").ok())
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty());
        let location = options
            .location
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty());
        let creation = match project {
            _ if !create_bucket => Creation::Off("the option create_bucket is false".into()),
            None => Creation::Off(
                "to let cairn create it, name the Google Cloud project to create it in \
                 (option project, or GOOGLE_CLOUD_PROJECT)"
                    .into(),
            ),
            Some(project) => Creation::In { project, location },
        };

        let shown_endpoint = endpoint_option.clone();
        let mut endpoint = Url::parse(endpoint_option.as_deref().unwrap_or(DEFAULT_ENDPOINT))
            .map_err(|e| other(format!("gcs endpoint is not a URL: {e}")))?;
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(other("gcs endpoint must not contain credentials"));
        }
        if endpoint.cannot_be_a_base() {
            return Err(other("gcs endpoint must be an http(s) URL"));
        }
        endpoint.set_query(None);

        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| BackendError::with_source(ErrorKind::Other, "gcs: HTTP client", e))?;
        let credentials = if anonymous {
            None
        } else {
            Some(
                CredentialsBuilder::default()
                    .with_scopes([SCOPE])
                    .build()
                    .map_err(|e| {
                        BackendError::with_source(
                            ErrorKind::Unauthenticated,
                            "gcs: no usable Google credentials (Application Default Credentials)",
                            e,
                        )
                    })?,
            )
        };
        let display = match shown_endpoint {
            Some(e) => format!("gs://{bucket}/{prefix} at {}", endpoint_display(&e)),
            None => format!("gs://{bucket}/{prefix}"),
        };
        Ok(GcsBackend {
            client,
            endpoint,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            credentials,
            storage_class,
            connections,
            display,
            creation,
        })
    }

    /// The object name of `handle`.
    fn name(&self, handle: &Handle) -> String {
        self.join(&handle.path())
    }

    fn join(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{}", self.prefix, rel)
        }
    }

    /// `endpoint` + path segments (each percent-encoded, so `/` in an object
    /// name becomes `%2F` as the API wants).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .expect("checked in from_url: endpoint can be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn object_url(&self, name: &str) -> Url {
        self.url(&["storage", "v1", "b", &self.bucket, "o", name])
    }

    fn list_url(&self) -> Url {
        self.url(&["storage", "v1", "b", &self.bucket, "o"])
    }

    /// Send the request `make` builds, with credentials; transport failures
    /// become errors here, HTTP statuses are left to the caller.
    ///
    /// One retry, of a request whose connection closed before any answer:
    /// that is a pooled keep-alive connection the server had already closed
    /// (fake-gcs-server closes after a 416 without saying `Connection:
    /// close`; real servers close idle connections), and the server never
    /// saw the request. Everything else is left to cairn's retry layer.
    async fn send(
        &self,
        what: &str,
        make: &(dyn Fn() -> RequestBuilder + Send + Sync),
    ) -> Result<Response> {
        let mut retried = false;
        // A read can be sent again even after a reset: it changes nothing.
        let idempotent = make()
            .build()
            .is_ok_and(|r| matches!(*r.method(), reqwest::Method::GET | reqwest::Method::HEAD));
        loop {
            let request = self.authorize(what, make()).await?;
            match request.send().await {
                Ok(response) => return Ok(response),
                Err(e) if !retried && is_stale_connection(&e, idempotent) => {
                    tracing::debug!(backend = %self, what, error = %e, "stale connection, resending once");
                    retried = true;
                }
                Err(e) => return Err(self.transport_error(what, e)),
            }
        }
    }

    /// Add the credentials' headers (none for an emulator).
    async fn authorize(&self, what: &str, request: RequestBuilder) -> Result<RequestBuilder> {
        let Some(credentials) = &self.credentials else {
            return Ok(request);
        };
        match credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(request.headers(data)),
            // Only answered when the caller passes an entity tag, which this
            // client never does.
            Ok(CacheableResource::NotModified) => Err(BackendError::new(
                ErrorKind::Other,
                format!("{what} ({self}): credentials returned no headers"),
            )),
            Err(e) => {
                let kind = if e.is_transient() {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Unauthenticated
                };
                Err(BackendError::with_source(
                    kind,
                    format!("{what} ({self}): getting a Google access token failed"),
                    e,
                ))
            }
        }
    }

    fn transport_error(&self, what: &str, err: reqwest::Error) -> BackendError {
        transport_error(&format!("{what} ({self})"), err)
    }

    /// An error for a non-success answer, with the API's message.
    async fn status_error(&self, what: &str, response: Response) -> BackendError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let detail = error_detail(&body);
        let kind = status_kind(status.as_u16());
        BackendError::new(kind, format!("{what} ({self}): HTTP {status}: {detail}"))
    }

    /// The whole body, copied chunk by chunk into one buffer of the
    /// announced length (`Response::bytes` keeps every chunk until the end
    /// and then copies them all into a new buffer).
    async fn body(&self, what: &str, mut response: Response) -> Result<Bytes> {
        // The announced length is only a hint: never trust it for more than
        // a pack's worth of memory up front.
        let hint = response.content_length().unwrap_or(0).min(1 << 30);
        let mut data = bytes::BytesMut::with_capacity(hint as usize);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(what, e))?
        {
            data.extend_from_slice(&chunk);
        }
        Ok(data.freeze())
    }

    async fn object_size(&self, handle: &Handle) -> Result<u64> {
        let what = format!("head {handle}");
        let url = self.object_url(&self.name(handle));
        let response = self.send(&what, &|| self.client.get(url.clone())).await?;
        if !response.status().is_success() {
            return Err(self.status_error(&what, response).await);
        }
        let body = self.body(&what, response).await?;
        let object: ObjectResource = serde_json::from_slice(&body).map_err(|e| {
            BackendError::with_source(
                ErrorKind::Corrupt,
                format!("{what} ({self}): bad metadata"),
                e,
            )
        })?;
        parse_size(&what, &object.size)
    }

    async fn get_range(&self, handle: &Handle, range: Range<u64>) -> Result<Bytes> {
        let what = format!("get {handle} bytes {range:?}");
        // HTTP cannot ask for an empty range; the size alone answers it.
        if range.start >= range.end {
            let size = self.object_size(handle).await?;
            clip_range(handle, &range, size)?;
            return Ok(Bytes::new());
        }
        let mut url = self.object_url(&self.name(handle));
        url.query_pairs_mut().append_pair("alt", "media");
        let range_header = format!("bytes={}-{}", range.start, range.end - 1);
        let make = || {
            self.client
                .get(url.clone())
                .header(RANGE, range_header.clone())
        };
        let response = self.send(&what, &make).await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let content_range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                let data = self.body(&what, response).await?;
                let Some((returned, size)) = content_range else {
                    return Err(BackendError::new(
                        ErrorKind::Corrupt,
                        format!("{what} ({self}): 206 without a usable Content-Range"),
                    ));
                };
                let expected = range.start..range.end.min(size);
                if returned != expected || data.len() as u64 != expected.end - expected.start {
                    return Err(BackendError::new(
                        ErrorKind::Corrupt,
                        format!(
                            "{what} ({self}): got {} bytes for {returned:?}, expected {expected:?}",
                            data.len()
                        ),
                    ));
                }
                Ok(data)
            }
            // The server sent the whole object (ranges are optional in HTTP).
            StatusCode::OK => {
                let data = self.body(&what, response).await?;
                let r = clip_range(handle, &range, data.len() as u64)?;
                Ok(data.slice(r.start as usize..r.end as usize))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                // Start at or past the end: empty when exactly at the end.
                let size = self.object_size(handle).await?;
                let r = clip_range(handle, &range, size)?;
                if r.is_empty() {
                    Ok(Bytes::new())
                } else {
                    Err(BackendError::new(
                        ErrorKind::Corrupt,
                        format!("{what} ({self}): 416 for a range inside the {size}-byte object"),
                    ))
                }
            }
            _ => Err(self.status_error(&what, response).await),
        }
    }
}

impl fmt::Debug for GcsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsBackend")
            .field("url", &self.display)
            .field("authenticated", &self.credentials.is_some())
            .finish()
    }
}

impl fmt::Display for GcsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

#[async_trait]
impl Backend for GcsBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_create: true,
            max_object_size: None,
            default_connections: self.connections,
            local: false,
        }
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        let what = format!("put {handle}");
        let name = self.name(handle);
        let mut url = self.url(&["upload", "storage", "v1", "b", &self.bucket, "o"]);
        url.query_pairs_mut().append_pair("uploadType", "multipart");
        if mode == PutMode::Create {
            // Generation 0 = "no live object": the API refuses with 412 if
            // one exists, atomically.
            url.query_pairs_mut().append_pair("ifGenerationMatch", "0");
        }
        let mut metadata = serde_json::json!({ "name": name });
        if let Some(class) = &self.storage_class {
            metadata["storageClass"] = class.clone().into();
        }
        // multipart/related: JSON metadata, then the bytes. The boundary is
        // 128 random bits, so it cannot plausibly occur in the data.
        let boundary = format!("cairn-{:032x}", rand::random::<u128>());
        let head = Bytes::from(format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let length = head.len() + data.len() + tail.len();
        let size = data.len() as u64;
        let content_type =
            HeaderValue::from_str(&format!("multipart/related; boundary={boundary}"))
                .map_err(|e| BackendError::with_source(ErrorKind::Other, "gcs: boundary", e))?;
        let make = || {
            // Streamed as three pieces so a large pack is not copied (the
            // clones are reference counts).
            let body = reqwest::Body::wrap_stream(futures_util::stream::iter([
                Ok::<Bytes, std::io::Error>(head.clone()),
                Ok(data.clone()),
                Ok(tail.clone()),
            ]));
            self.client
                .request(Method::POST, url.clone())
                .header(CONTENT_TYPE, content_type.clone())
                .header(CONTENT_LENGTH, length)
                .body(body)
        };
        let response = self.send(&what, &make).await?;
        let status = response.status();
        if status == StatusCode::PRECONDITION_FAILED && mode == PutMode::Create {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                format!("{what} ({self}): object exists"),
            ));
        }
        if !status.is_success() {
            return Err(self.status_error(&what, response).await);
        }
        let body = self.body(&what, response).await?;
        // The service answers with the stored object's metadata: a size
        // mismatch means the upload was cut and stored short.
        if let Ok(object) = serde_json::from_slice::<ObjectResource>(&body) {
            let stored = parse_size(&what, &object.size)?;
            if stored != size {
                return Err(BackendError::new(
                    ErrorKind::Corrupt,
                    format!("{what} ({self}): stored {stored} bytes of {size}"),
                ));
            }
        }
        Ok(())
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        if let Some(range) = range {
            return self.get_range(handle, range).await;
        }
        let what = format!("get {handle}");
        let mut url = self.object_url(&self.name(handle));
        url.query_pairs_mut().append_pair("alt", "media");
        let response = self.send(&what, &|| self.client.get(url.clone())).await?;
        if !response.status().is_success() {
            let err = self.status_error(&what, response).await;
            return Err(self.explain_missing_config(handle, err).await);
        }
        // The stored size, when the server says it, catches a cut-off body.
        let stored = response
            .headers()
            .get("x-goog-stored-content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let data = self.body(&what, response).await?;
        if let Some(stored) = stored {
            if stored != data.len() as u64 {
                return Err(BackendError::new(
                    ErrorKind::Corrupt,
                    format!("{what} ({self}): got {} bytes of {stored}", data.len()),
                ));
            }
        }
        Ok(data)
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        match self.object_size(handle).await {
            Ok(size) => Ok(ObjectMeta::new(handle.clone(), size)),
            Err(e) => Err(self.explain_missing_config(handle, e).await),
        }
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        // The config sits at the root: listing the root would walk every pack.
        if kind == Kind::Config {
            return match self.head(&Handle::config()).await {
                Ok(meta) => Ok(vec![meta]),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let what = format!("list {}", kind.dir());
        let dir = format!("{}/", self.join(kind.dir()));
        let root = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = self.list_url();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("prefix", &dir)
                    .append_pair("maxResults", PAGE_SIZE);
                if let Some(t) = &token {
                    q.append_pair("pageToken", t);
                }
            }
            let response = self.send(&what, &|| self.client.get(url.clone())).await?;
            if !response.status().is_success() {
                return Err(self.status_error(&what, response).await);
            }
            let body = self.body(&what, response).await?;
            let (metas, next) = parse_list_page(&body, &root, kind).map_err(|e| {
                BackendError::with_source(
                    ErrorKind::Corrupt,
                    format!("{what} ({self}): bad listing"),
                    e,
                )
            })?;
            found.extend(metas);
            match next {
                Some(t) if !t.is_empty() => {
                    if token.as_deref() == Some(t.as_str()) {
                        return Err(BackendError::new(
                            ErrorKind::Corrupt,
                            format!("{what} ({self}): the same page token twice"),
                        ));
                    }
                    token = Some(t);
                }
                _ => break,
            }
        }
        Ok(found)
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let what = format!("delete {handle}");
        let url = self.object_url(&self.name(handle));
        let response = self
            .send(&what, &|| self.client.delete(url.clone()))
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(&what, response).await)
        }
    }

    async fn create(&self) -> Result<()> {
        // Creation is tried only when the probe says the bucket is missing:
        // an existing bucket needs nothing beyond the object permissions.
        match self.probe_bucket().await {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            other => return other,
        }
        let (project, location) = match &self.creation {
            Creation::In { project, location } => (project, location),
            Creation::Off(why) => {
                return Err(BackendError::new(
                    ErrorKind::NotFound,
                    format!(
                        "bucket {:?} does not exist ({self}); create it first: {why}",
                        self.bucket
                    ),
                ))
            }
        };
        let what = format!("create bucket {:?} in project {project:?}", self.bucket);
        let mut url = self.url(&["storage", "v1", "b"]);
        url.query_pairs_mut().append_pair("project", project);
        let mut body = serde_json::json!({ "name": self.bucket });
        if let Some(location) = location {
            body["location"] = location.clone().into();
        }
        let body = Bytes::from(body.to_string());
        let make = || {
            self.client
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        };
        let response = self.send(&what, &make).await?;
        let status = response.status();
        let taken = status == StatusCode::CONFLICT;
        if !status.is_success() && !taken {
            let err = self.status_error(&what, response).await;
            return Err(if err.kind() == ErrorKind::PermissionDenied {
                BackendError::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "{}; creating buckets needs storage.buckets.create on the project: create it first, or allow that",
                        err.message()
                    ),
                )
            } else {
                err
            });
        }
        if !taken {
            tracing::info!(backend = %self, "created bucket {} in project {project}", self.bucket);
        }
        // 409: the name exists. Ours (a concurrent init) if we can list it;
        // else it belongs to someone else. A new bucket should list at once
        // (GCS is strongly consistent); allow a moment all the same.
        let mut attempt = 0;
        loop {
            match self.probe_bucket().await {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound && attempt < 10 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) if taken => {
                    return Err(BackendError::new(
                        ErrorKind::PermissionDenied,
                        format!(
                            "{what} ({self}): the name is taken, and not by a bucket these credentials can use (bucket names are global): choose another ({e})"
                        ),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl GcsBackend {
    /// A missing `config` is how cairn finds that there is no repository;
    /// GCS answers a read in a missing bucket with the same 404 as a
    /// missing object, so then one more request tells which it was, and the
    /// error says "bucket … does not exist" when it is the bucket.
    async fn explain_missing_config(&self, handle: &Handle, err: BackendError) -> BackendError {
        if handle.kind != Kind::Config || err.kind() != ErrorKind::NotFound {
            return err;
        }
        match self.probe_bucket().await {
            Err(e) if e.kind() == ErrorKind::NotFound => BackendError::new(
                ErrorKind::NotFound,
                format!("{}: {}", err.message(), e.message()),
            ),
            _ => err,
        }
    }

    /// `Ok` when the bucket exists and these credentials may list it; a
    /// `NotFound` error naming the bucket when it does not exist.
    async fn probe_bucket(&self) -> Result<()> {
        let what = "check bucket";
        let mut url = self.list_url();
        url.query_pairs_mut()
            .append_pair("prefix", &self.join(".cairn-create-probe"))
            .append_pair("maxResults", "1");
        let response = self.send(what, &|| self.client.get(url.clone())).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(BackendError::new(
                ErrorKind::NotFound,
                format!("bucket {:?} does not exist ({self})", self.bucket),
            ));
        }
        if !response.status().is_success() {
            return Err(self.status_error(what, response).await);
        }
        Ok(())
    }
}

fn other(message: impl Into<String>) -> BackendError {
    BackendError::new(ErrorKind::Other, message)
}

/// The emulator endpoint from the environment, if any.
fn emulator_from_env() -> Option<String> {
    if let Some(e) = std::env::var("CAIRN_GCS_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
    {
        return Some(e);
    }
    // Google's client libraries take `host:port` here, without a scheme.
    let host = std::env::var("STORAGE_EMULATOR_HOST")
        .ok()
        .filter(|e| !e.is_empty())?;
    Some(if host.contains("://") {
        host
    } else {
        format!("http://{host}")
    })
}

fn endpoint_display(endpoint: &str) -> String {
    match Url::parse(endpoint) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "(invalid endpoint)".to_string(),
    }
}

/// A timeout option: a positive number of seconds, or `default`.
fn seconds(key: &str, value: Option<f64>, default: Duration) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(out_of_range("gcs", key, s, "a positive number of seconds")),
    }
}

/// The API's message in an error answer's body (else the body itself),
/// shortened for a message.
pub(crate) fn error_detail(body: &str) -> String {
    shorten(match serde_json::from_str::<ErrorBody>(body) {
        Ok(b) if !b.error.message.is_empty() => b.error.message,
        _ => body.trim().to_string(),
    })
}

/// The objects of `kind` under `root` in one listing page, and the next
/// page's token.
pub(crate) fn parse_list_page(
    body: &[u8],
    root: &str,
    kind: Kind,
) -> Result<(Vec<ObjectMeta>, Option<String>)> {
    let page: ListPage = serde_json::from_slice(body)
        .map_err(|e| BackendError::with_source(ErrorKind::Corrupt, "not a listing", e))?;
    let mut found = Vec::new();
    for item in page.items {
        let Some(rel) = item.name.strip_prefix(root) else {
            continue;
        };
        if let Some(handle) = Handle::from_path(kind, rel) {
            found.push(ObjectMeta {
                handle,
                size: parse_size("listing", &item.size)?,
                modified: item.modified(),
            });
        }
    }
    Ok((found, page.next_page_token))
}

fn parse_size(what: &str, size: &str) -> Result<u64> {
    size.parse().map_err(|_| {
        BackendError::new(
            ErrorKind::Corrupt,
            format!("{what}: size {size:?} is not a number"),
        )
    })
}

/// `bytes START-END/SIZE` → (START..END+1, SIZE).
pub(crate) fn parse_content_range(value: &str) -> Option<(Range<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, size): (u64, u64, u64) =
        (start.parse().ok()?, end.parse().ok()?, size.parse().ok()?);
    (start <= end).then_some((start..end + 1, size))
}

/// Whether the connection closed before the server answered anything: a
/// pooled connection the server had closed (see `GcsBackend::send`).
fn is_stale_connection(err: &reqwest::Error, idempotent: bool) -> bool {
    if err.is_timeout() || err.is_connect() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.to_string()
            .contains("connection closed before message completed")
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // The request was not fully written, so it was not processed.
            // A reset can come after the server acted, so only reads are
            // sent again after one.
            if io.kind() == std::io::ErrorKind::BrokenPipe
                || (idempotent && io.kind() == std::io::ErrorKind::ConnectionReset)
            {
                return true;
            }
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("bytes 2-5/10"), Some((2..6, 10)));
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("bytes 5-2/10"), None);
    }

    #[test]
    fn urls_encode_names_as_one_segment() {
        let options =
            BTreeMap::from([("endpoint".to_string(), "http://127.0.0.1:4443".to_string())]);
        let b = GcsBackend::from_url("gs://bkt/some/prefix/", &options).unwrap();
        assert_eq!(
            b.to_string(),
            "gs://bkt/some/prefix at http://127.0.0.1:4443"
        );
        let url = b.object_url(&b.name(&Handle::new(Kind::Pack, "abcd")));
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:4443/storage/v1/b/bkt/o/some%2Fprefix%2Fdata%2Fab%2Fabcd"
        );
        assert!(b.credentials.is_none());
    }

    #[test]
    fn bad_urls_and_options_are_refused() {
        let none = BTreeMap::new();
        assert!(GcsBackend::from_url("s3://b/p", &none).is_err());
        assert!(GcsBackend::from_url("gs:///p", &none).is_err());
        let typo = BTreeMap::from([
            ("endpoint".to_string(), "http://127.0.0.1:1".to_string()),
            ("timeout".to_string(), "5".to_string()),
        ]);
        assert!(GcsBackend::from_url("gs://b/p", &typo).is_err());
    }
}
