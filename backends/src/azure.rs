//! Azure Blob Storage, through `object_store`.
//!
//! `az://CONTAINER/PREFIX` holds one repository under `PREFIX/`. The account,
//! credentials and endpoint come from the standard `AZURE_STORAGE_*`
//! environment variables (`AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`, client secret,
//! workload / managed identity, Azure CLI, and `AZURE_STORAGE_USE_EMULATOR`
//! with `AZURITE_BLOB_STORAGE_URL` for azurite); options override them.
//!
//! Options (all optional):
//! - `account` (or `account_name`), `access_key`, `sas_token`, …: any
//!   `object_store` Azure key. A `sas_token` option is used even when the
//!   environment holds an account key (`credential_type = "sas_token"` is
//!   implied unless another credential type is given);
//! - `endpoint`: the blob service URL including the account for path-style
//!   servers, e.g. `http://127.0.0.1:10000/devstoreaccount1`. Given together
//!   with emulator mode, it replaces the emulator URL (object_store's emulator
//!   mode only reads `AZURITE_BLOB_STORAGE_URL`) and keeps the emulator's
//!   account and key unless others are given;
//! - `use_emulator`, `allow_http`;
//! - `storage_class`: the access tier of new blobs (`Hot`, `Cool`, `Cold`,
//!   `Archive`);
//! - `timeout_secs`, `connect_timeout_secs`, `retries`, `connections`: as for
//!   S3 (see `object_store_backend`);
//! - `create_container` (default `true`): whether `create()` (run by `cairn
//!   init`) creates a missing container.
//!
//! Container creation: `create()` lists the container first and, only if
//! that says `ContainerNotFound`, sends `PUT …/CONTAINER?restype=container`
//! (no public access) authorized by `object_store`'s own [`AzureAuthorizer`]
//! with the store's credential provider: shared key, SAS or a bearer token
//! (client secret, managed or workload identity, Azure CLI), exactly as the
//! other requests. `ContainerAlreadyExists` counts as success.
//!
//! Deletion: one object is removed with a plain `DELETE …/CONTAINER/KEY`
//! signed the same way, not with `object_store`'s Blob Batch request (its
//! only delete): the answer's status and `x-ms-error-code` then say exactly
//! what went wrong (404 `BlobNotFound`, 403 `AuthorizationPermissionMismatch`
//! for a SAS without delete permission), where a batch nests them in a
//! multipart body, and azurite answers such a batch with a bare 500.
//! These requests go through a client of cairn's own (reqwest, with the
//! timeouts of the other requests and the usual `HTTPS_PROXY` variables).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::azure::{
    AzureAuthorizer, AzureConfigKey, AzureCredentialProvider, MicrosoftAzureBuilder,
};
use object_store::client::HttpRequestBody;
use object_store::ClientConfigKey;
use serde::Deserialize;

use crate::http_util::status_kind;
use crate::object_store_backend::{
    client_retry, delegate_backend, header_safe, http_client, is_auth_failure, map_error,
    parse_bool, redact_endpoint, send_with, split_url, store_keys, unsafe_credential, xml_message,
    xml_tag, Answer, ClientOptions, CommonOptions, ContainerCreator, ObjectDeleter,
    ObjectStoreBackend, Service,
};
use crate::options::{self, OptionMap};
use crate::{BackendError, Capabilities, ErrorKind, Result};

/// Largest blob one Put Blob request stores (service version 2019-12-12+).
pub const MAX_PUT_BYTES: u64 = 5000 * 1024 * 1024;

/// The public development account of azurite and the Azure SDKs.
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// Its well-known key (published by Microsoft; not a secret).
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The options of an Azure repository (see the module docs); unset means
/// the default, or what the `AZURE_*` environment says.
#[derive(Clone, Debug, Default)]
pub struct AzureOptions {
    /// Timeouts, retries, connections and access tier.
    pub client: ClientOptions,
    /// The storage account (the same as `object_store`'s `account_name`,
    /// and wins over it).
    pub account: Option<String>,
    /// The blob service URL, including the account for path-style servers.
    pub endpoint: Option<String>,
    /// Whether `create()` (run by `cairn init`) creates a missing container
    /// (default true).
    pub create_container: Option<bool>,
    /// Any other `object_store` Azure key (`access_key`, `sas_token`,
    /// `use_emulator`, …), passed on as given.
    pub store: Vec<(AzureConfigKey, String)>,
}

/// The keys of [`AzureOptions`] that are cairn's rather than `object_store`'s.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct OwnOptions {
    account: Option<String>,
    endpoint: Option<String>,
    create_container: Option<bool>,
}

impl AzureOptions {
    /// The options as text (cairn.toml, [`AzureBackend::from_url`]). A key
    /// that is neither cairn's nor an `object_store` Azure key is an error.
    pub fn from_map(text: &OptionMap) -> Result<AzureOptions> {
        let (client, rest) = options::split::<ClientOptions>("azure", text)?;
        let (own, rest) = options::split::<OwnOptions>("azure", &rest)?;
        Ok(AzureOptions {
            client,
            account: own.account,
            endpoint: own.endpoint,
            create_container: own.create_container,
            store: store_keys("azure", rest)?,
        })
    }
}

/// A repository in an Azure Blob container.
pub struct AzureBackend {
    inner: ObjectStoreBackend,
}

impl AzureBackend {
    /// Open `az://container/prefix` with `options` as text (see
    /// [`AzureOptions::from_map`]).
    pub fn from_url(url: &str, options: &OptionMap) -> Result<Self, BackendError> {
        Self::new(url, AzureOptions::from_map(options)?)
    }

    /// Open `az://container/prefix` with `options` on top of the `AZURE_*`
    /// environment. Builds the client only; nothing is sent until the first
    /// request.
    pub fn new(url: &str, options: AzureOptions) -> Result<Self, BackendError> {
        let (container, prefix) = split_url(url, &["az", "azure"])?;
        let common = CommonOptions::new(&options.client, "azure")?;
        let mut store = options.store;
        if let Some(account) = options.account {
            store.push((AzureConfigKey::AccountName, account));
        }
        let create_container = options.create_container.unwrap_or(true);

        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_container_name(container)
            .with_retry(client_retry(common.retries, common.timeout))
            .with_config(
                AzureConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}ms", common.timeout.as_millis()),
            )
            .with_config(
                AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
                format!("{}ms", common.connect_timeout.as_millis()),
            )
            .with_config(
                AzureConfigKey::Client(ClientConfigKey::PoolIdleTimeout),
                format!("{}ms", common.pool_idle_timeout.as_millis()),
            );
        let endpoint = options.endpoint;
        // A SAS given as an option is what the user wants used, even where
        // the environment also holds an account key (which object_store
        // would otherwise prefer).
        let explicit_sas = store.iter().any(|(k, _)| *k == AzureConfigKey::SasKey);
        if explicit_sas
            && !store
                .iter()
                .any(|(k, _)| *k == AzureConfigKey::CredentialType)
        {
            store.push((AzureConfigKey::CredentialType, "sas_token".into()));
        }
        for (key, value) in store {
            builder = builder.with_config(key, value);
        }
        let emulator = match builder.get_config_value(&AzureConfigKey::UseEmulator) {
            Some(v) => parse_bool("azure", "use_emulator", &v)?,
            None => false,
        };
        let shown_endpoint = match &endpoint {
            Some(endpoint) => {
                if emulator {
                    // Talk to this endpoint as to a normal account, with the
                    // emulator's account and key unless others were given.
                    builder = builder.with_use_emulator(false);
                    if builder
                        .get_config_value(&AzureConfigKey::AccountName)
                        .is_none()
                    {
                        builder = builder.with_account(EMULATOR_ACCOUNT);
                    }
                    if !explicit_sas
                        && builder
                            .get_config_value(&AzureConfigKey::AccessKey)
                            .is_none()
                    {
                        builder = builder.with_access_key(EMULATOR_KEY);
                    }
                    if endpoint.starts_with("http://") {
                        builder = builder.with_allow_http(true);
                    }
                }
                builder = builder.with_endpoint(endpoint.clone());
                Some(redact_endpoint(endpoint))
            }
            None if emulator => Some(redact_endpoint(
                &std::env::var("AZURITE_BLOB_STORAGE_URL")
                    .unwrap_or_else(|_| "http://127.0.0.1:10000".into()),
            )),
            None => None,
        };
        let account = builder.get_config_value(&AzureConfigKey::AccountName);
        // object_store unwraps the Authorization header it builds from the
        // account name: a line break in it would panic there.
        if account.as_deref().is_some_and(|a| !header_safe(a)) {
            return Err(unsafe_credential(
                "the Azure account name (AZURE_STORAGE_ACCOUNT_NAME or account)",
            ));
        }
        let site = ContainerSite::of(&builder, container)?;
        let store = builder
            .build()
            .map_err(|e| map_error(&format!("configure {url}"), container, e))?;
        let rest = match site {
            None => None,
            Some(site) => Some(Arc::new(AzureRest {
                site,
                credentials: Arc::clone(store.credentials()),
                client: http_client(
                    &format!("az://{container}"),
                    common.timeout,
                    common.connect_timeout,
                )?,
            })),
        };
        let creator: std::result::Result<Arc<dyn ContainerCreator>, String> = match &rest {
            _ if !create_container => Err("the option create_container is false".into()),
            None => Err("the account's endpoint is unknown".into()),
            Some(rest) => Ok(rest.clone()),
        };

        let display = match (shown_endpoint, account) {
            (Some(e), _) => format!("az://{container}/{prefix} at {e}"),
            (None, Some(a)) => format!("az://{container}/{prefix} (account {a})"),
            (None, None) => format!("az://{container}/{prefix}"),
        };
        let mut inner =
            ObjectStoreBackend::new(Arc::new(store), Service::Azure, container, prefix, display)
                .with_storage_class(common.storage_class)
                .with_creator(creator)
                .with_capabilities(Capabilities {
                    atomic_create: true,
                    max_object_size: Some(MAX_PUT_BYTES),
                    default_connections: common.connections,
                    local: false,
                });
        if let Some(rest) = rest {
            inner = inner.with_deleter(rest);
        }
        Ok(AzureBackend { inner })
    }

    /// The generic adapter underneath.
    pub fn inner(&self) -> &ObjectStoreBackend {
        &self.inner
    }
}

delegate_backend!(AzureBackend);

/// Where a Create Container request goes, worked out from the builder the
/// way `object_store` works out its own URLs.
struct ContainerSite {
    container: String,
    account: String,
    /// `SERVICE/CONTAINER`, without a query.
    base: String,
    skip_signature: bool,
}

impl ContainerSite {
    /// `…/CONTAINER?restype=container`
    fn container_url(&self) -> String {
        format!("{}?restype=container", self.base)
    }

    /// The URL of the blob `key`, each path segment percent-encoded.
    fn blob_url(&self, key: &str) -> String {
        let mut url = self.base.clone();
        for segment in key.split('/') {
            url.push('/');
            for b in segment.bytes() {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    url.push(b as char);
                } else {
                    url.push_str(&format!("%{b:02X}"));
                }
            }
        }
        url
    }

    /// `None` when the builder lacks an account (the build fails then).
    fn of(builder: &MicrosoftAzureBuilder, container: &str) -> Result<Option<ContainerSite>> {
        let flag = |key: AzureConfigKey, name: &str| -> Result<bool> {
            match builder.get_config_value(&key) {
                Some(v) => parse_bool("azure", name, &v),
                None => Ok(false),
            }
        };
        let emulator = flag(AzureConfigKey::UseEmulator, "use_emulator")?;
        let account = builder.get_config_value(&AzureConfigKey::AccountName);
        // The emulator's URLs are path-style (`host/ACCOUNT/CONTAINER`);
        // an account endpoint is `https://ACCOUNT.blob.core.windows.net` or
        // whatever `endpoint` says (including the account for path-style
        // servers).
        let (account, service) = if emulator {
            let account = account.unwrap_or_else(|| EMULATOR_ACCOUNT.to_string());
            let base = std::env::var("AZURITE_BLOB_STORAGE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
            let service = format!("{}/{account}", base.trim_end_matches('/'));
            (account, service)
        } else {
            let Some(account) = account else {
                return Ok(None);
            };
            let service = match builder.get_config_value(&AzureConfigKey::Endpoint) {
                Some(e) => e,
                None if flag(AzureConfigKey::UseFabricEndpoint, "use_fabric_endpoint")? => {
                    format!("https://{account}.blob.fabric.microsoft.com")
                }
                None => format!("https://{account}.blob.core.windows.net"),
            };
            (account, service)
        };
        Ok(Some(ContainerSite {
            container: container.to_string(),
            base: format!("{}/{container}", service.trim_end_matches('/')),
            account,
            skip_signature: flag(AzureConfigKey::SkipSignature, "skip_signature")?,
        }))
    }
}

/// The requests cairn sends itself, signed by `object_store`'s own
/// [`AzureAuthorizer`]: Create Container (see the module docs), and Delete
/// Blob, because `object_store` deletes only through Blob Batch.
struct AzureRest {
    site: ContainerSite,
    credentials: AzureCredentialProvider,
    /// Kept, so that deletes reuse connections.
    client: reqwest::Client,
}

impl AzureRest {
    /// Sign and send `method url`; the answer, whatever its status.
    async fn send(&self, what: &str, method: http::Method, url: &str) -> Result<Answer> {
        let site = &self.site;
        let mut request = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::CONTENT_LENGTH, "0")
            .body(HttpRequestBody::empty())
            .map_err(|e| {
                BackendError::with_source(ErrorKind::Other, format!("{what}: bad URL"), e)
            })?;
        if !site.skip_signature {
            let credential = self
                .credentials
                .get_credential()
                .await
                .map_err(|e| map_error(what, &site.container, e))?;
            AzureAuthorizer::new(&credential, &site.account)
                .try_authorize(&mut request)
                .map_err(|e| map_error(what, &site.container, e))?;
        }
        send_with(&self.client, what, request, Bytes::new()).await
    }
}

/// The service's error code of an answer (`x-ms-error-code`, or the
/// `<Code>` of its body).
pub(crate) fn error_code(answer: &Answer) -> String {
    answer
        .headers
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| xml_tag(&answer.body, "Code").map(str::to_string))
        .unwrap_or_default()
}

/// The kind of a failed answer: auth failures (which Azure sends as 403,
/// like a missing permission) are `Unauthenticated`.
fn answer_kind(answer: &Answer, code: &str, message: &str) -> ErrorKind {
    if is_auth_failure(code) || is_auth_failure(message) {
        ErrorKind::Unauthenticated
    } else {
        status_kind(answer.status.as_u16())
    }
}

fn answer_error(
    what: &str,
    answer: &Answer,
    code: &str,
    message: &str,
    kind: ErrorKind,
    hint: &str,
) -> BackendError {
    BackendError::new(
        kind,
        format!(
            "{what}: HTTP {} {code}{}{message}{hint}",
            answer.status.as_u16(),
            if message.is_empty() { "" } else { ": " }
        ),
    )
}

#[async_trait]
impl ContainerCreator for AzureRest {
    async fn create_container(&self, shown: &str) -> Result<()> {
        let site = &self.site;
        let what = format!("create container {:?} ({shown})", site.container);
        let answer = self
            .send(&what, http::Method::PUT, &site.container_url())
            .await?;
        if answer.status.is_success() {
            return Ok(());
        }
        let code = error_code(&answer);
        let message = xml_message(&answer.body);
        let (kind, hint) = match code.as_str() {
            // Made in the meantime (a concurrent init): what we wanted.
            "ContainerAlreadyExists" => return Ok(()),
            "ContainerBeingDeleted" => (
                ErrorKind::Other,
                "; a container of this name is being deleted: try again in a minute",
            ),
            _ => match answer_kind(&answer, &code, &message) {
                ErrorKind::PermissionDenied => (
                    ErrorKind::PermissionDenied,
                    "; these credentials may not create containers (an account key, an account \
                     SAS with create permission, or the role Storage Blob Data Contributor can): \
                     create it first, or allow that",
                ),
                kind => (kind, ""),
            },
        };
        Err(answer_error(&what, &answer, &code, &message, kind, hint))
    }
}

#[async_trait]
impl ObjectDeleter for AzureRest {
    async fn delete_object(&self, key: &str, what: &str) -> Result<()> {
        let answer = self
            .send(what, http::Method::DELETE, &self.site.blob_url(key))
            .await?;
        if answer.status.is_success() {
            return Ok(());
        }
        let code = error_code(&answer);
        let message = xml_message(&answer.body);
        if code == "ContainerNotFound" {
            return Err(BackendError::new(
                ErrorKind::NotFound,
                format!(
                    "{what}: bucket/container {:?} does not exist",
                    self.site.container
                ),
            ));
        }
        let kind = answer_kind(&answer, &code, &message);
        Err(answer_error(what, &answer, &code, &message, kind, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_urls_follow_object_store() {
        let b = MicrosoftAzureBuilder::new().with_account("acct");
        let s = ContainerSite::of(&b, "c").unwrap().unwrap();
        assert_eq!(
            s.container_url(),
            "https://acct.blob.core.windows.net/c?restype=container"
        );
        assert_eq!(
            s.blob_url("repo dir/data/ab/ab12"),
            "https://acct.blob.core.windows.net/c/repo%20dir/data/ab/ab12"
        );
        let b = b.with_endpoint("http://127.0.0.1:10000/devstoreaccount1/".into());
        let s = ContainerSite::of(&b, "c").unwrap().unwrap();
        assert_eq!(
            s.container_url(),
            "http://127.0.0.1:10000/devstoreaccount1/c?restype=container"
        );
        assert!(ContainerSite::of(&MicrosoftAzureBuilder::new(), "c")
            .unwrap()
            .is_none());
    }
}
