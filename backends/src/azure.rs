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
//!   `object_store` Azure key;
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

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::azure::{
    AzureAuthorizer, AzureConfigKey, AzureCredentialProvider, MicrosoftAzureBuilder,
};
use object_store::client::HttpRequestBody;
use object_store::ClientConfigKey;

use crate::http_util::status_kind;
use crate::object_store_backend::{
    client_retry, delegate_backend, is_auth_failure, map_error, parse_bool, redact_endpoint,
    send_signed, split_url, xml_message, xml_tag, CommonOptions, ContainerCreator,
    ObjectStoreBackend, Service,
};
use crate::{BackendError, Capabilities, ErrorKind, Result};

/// Largest blob one Put Blob request stores (service version 2019-12-12+).
pub const MAX_PUT_BYTES: u64 = 5000 * 1024 * 1024;

/// The public development account of azurite and the Azure SDKs.
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// Its well-known key (published by Microsoft; not a secret).
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A repository in an Azure Blob container.
pub struct AzureBackend {
    inner: ObjectStoreBackend,
}

impl AzureBackend {
    /// Open `az://container/prefix` with `options` (see the module docs) on
    /// top of the `AZURE_*` environment. Builds the client only; nothing is
    /// sent until the first request.
    pub fn from_url(url: &str, options: &BTreeMap<String, String>) -> Result<Self, BackendError> {
        let (container, prefix) = split_url(url, &["az", "azure"])?;
        let mut options = options.clone();
        let common = CommonOptions::take(&mut options, "azure")?;
        if let Some(account) = options.remove("account") {
            options.insert("account_name".into(), account);
        }
        let create_container = match options.remove("create_container") {
            Some(v) => parse_bool("azure", "create_container", &v)?,
            None => true,
        };

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
        let endpoint = options.remove("endpoint");
        for (key, value) in &options {
            let config_key: AzureConfigKey = key.parse().map_err(|_| {
                BackendError::new(ErrorKind::Other, format!("unknown azure option {key:?}"))
            })?;
            builder = builder.with_config(config_key, value);
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
                    if builder
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
        let site = ContainerSite::of(&builder, container)?;
        let store = builder
            .build()
            .map_err(|e| map_error(&format!("configure {url}"), container, e))?;
        let creator: std::result::Result<Arc<dyn ContainerCreator>, String> = match site {
            _ if !create_container => Err("the option create_container is false".into()),
            None => Err("the account's endpoint is unknown".into()),
            Some(site) => Ok(Arc::new(AzureCreator {
                site,
                credentials: Arc::clone(store.credentials()),
                timeout: common.timeout,
                connect_timeout: common.connect_timeout,
            })),
        };

        let display = match (shown_endpoint, account) {
            (Some(e), _) => format!("az://{container}/{prefix} at {e}"),
            (None, Some(a)) => format!("az://{container}/{prefix} (account {a})"),
            (None, None) => format!("az://{container}/{prefix}"),
        };
        let inner =
            ObjectStoreBackend::new(Arc::new(store), Service::Azure, container, prefix, display)
                .with_storage_class(common.storage_class)
                .with_creator(creator)
                .with_capabilities(Capabilities {
                    atomic_create: true,
                    max_object_size: Some(MAX_PUT_BYTES),
                    default_connections: common.connections,
                });
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
    /// `…/CONTAINER?restype=container`
    url: String,
    skip_signature: bool,
}

impl ContainerSite {
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
            url: format!(
                "{}/{container}?restype=container",
                service.trim_end_matches('/')
            ),
            account,
            skip_signature: flag(AzureConfigKey::SkipSignature, "skip_signature")?,
        }))
    }
}

/// Sends Create Container (see the module docs).
struct AzureCreator {
    site: ContainerSite,
    credentials: AzureCredentialProvider,
    timeout: std::time::Duration,
    connect_timeout: std::time::Duration,
}

#[async_trait]
impl ContainerCreator for AzureCreator {
    async fn create_container(&self, shown: &str) -> Result<()> {
        let site = &self.site;
        let what = format!("create container {:?} ({shown})", site.container);
        let mut request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(site.url.as_str())
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
                .map_err(|e| map_error(&what, &site.container, e))?;
            AzureAuthorizer::new(&credential, &site.account)
                .try_authorize(&mut request)
                .map_err(|e| map_error(&what, &site.container, e))?;
        }
        let answer = send_signed(
            &what,
            request,
            Bytes::new(),
            self.timeout,
            self.connect_timeout,
        )
        .await?;
        if answer.status.is_success() {
            return Ok(());
        }
        let code = answer
            .headers
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| xml_tag(&answer.body, "Code").map(str::to_string))
            .unwrap_or_default();
        let message = xml_message(&answer.body);
        let (kind, hint) = match code.as_str() {
            // Made in the meantime (a concurrent init): what we wanted.
            "ContainerAlreadyExists" => return Ok(()),
            "ContainerBeingDeleted" => (
                ErrorKind::Other,
                "; a container of this name is being deleted: try again in a minute",
            ),
            c if is_auth_failure(c) || is_auth_failure(&message) => {
                (ErrorKind::Unauthenticated, "")
            }
            _ => match status_kind(answer.status.as_u16()) {
                ErrorKind::PermissionDenied => (
                    ErrorKind::PermissionDenied,
                    "; these credentials may not create containers (an account key, an account \
                     SAS with create permission, or the role Storage Blob Data Contributor can): \
                     create it first, or allow that",
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

    #[test]
    fn container_urls_follow_object_store() {
        let b = MicrosoftAzureBuilder::new().with_account("acct");
        let s = ContainerSite::of(&b, "c").unwrap().unwrap();
        assert_eq!(
            s.url,
            "https://acct.blob.core.windows.net/c?restype=container"
        );
        let b = b.with_endpoint("http://127.0.0.1:10000/devstoreaccount1/".into());
        let s = ContainerSite::of(&b, "c").unwrap().unwrap();
        assert_eq!(
            s.url,
            "http://127.0.0.1:10000/devstoreaccount1/c?restype=container"
        );
        assert!(ContainerSite::of(&MicrosoftAzureBuilder::new(), "c")
            .unwrap()
            .is_none());
    }
}
