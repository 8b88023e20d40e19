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
//!   S3 (see `object_store_backend`).
//!
//! Azure cannot create containers through object_store: create it first
//! (`create()` checks that it exists).

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::ClientConfigKey;

use crate::object_store_backend::{
    client_retry, delegate_backend, map_error, parse_bool, redact_endpoint, split_url,
    CommonOptions, ObjectStoreBackend, Service,
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
        let store = builder
            .build()
            .map_err(|e| map_error(&format!("configure {url}"), container, e))?;

        let display = match (shown_endpoint, account) {
            (Some(e), _) => format!("az://{container}/{prefix} at {e}"),
            (None, Some(a)) => format!("az://{container}/{prefix} (account {a})"),
            (None, None) => format!("az://{container}/{prefix}"),
        };
        let inner =
            ObjectStoreBackend::new(Arc::new(store), Service::Azure, container, prefix, display)
                .with_storage_class(common.storage_class)
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
