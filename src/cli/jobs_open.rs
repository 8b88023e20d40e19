//! How a job opens its repository from the command line's side: the
//! passphrase is read once (environment, file, command, or the default
//! repository's key file; a prompt only on a terminal), and every run
//! opens the replicas its job names with it.

use std::sync::Arc;

use cairn::config::{ConfigFile, Limits};
use cairn::repo::{LockOptions, OpenOptions, Repository};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::password::{self, Fallback};
use super::Global;

/// How long a job waits for another process's lock (a prune, another
/// job) before it fails.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

pub struct JobOpener {
    config: Arc<ConfigFile>,
    pass: SecretString,
    limits: Limits,
    key_hint: Option<String>,
    lock_wait: std::time::Duration,
}

impl JobOpener {
    /// Read the passphrase now, so a daemon asks (or fails) once at start.
    pub fn new(g: &Global, config: Arc<ConfigFile>) -> anyhow::Result<JobOpener> {
        let fallback = if config.backends.is_empty() {
            Fallback::KeyFile {
                path: &super::repos::default_key_file(),
                create: false,
            }
        } else {
            Fallback::Prompt { confirm: false }
        };
        let pass = password::get(g, fallback)?;
        Ok(JobOpener {
            config,
            pass,
            limits: Limits {
                upload_kib: g.limit_upload,
                download_kib: g.limit_download,
            },
            key_hint: g.key_hint.clone(),
            lock_wait: g.retry_lock.unwrap_or(LOCK_WAIT),
        })
    }
}

#[async_trait::async_trait]
impl cairn::jobs::Opener for JobOpener {
    async fn open(
        &self,
        backends: Option<&[String]>,
        cancel: CancellationToken,
    ) -> cairn::Result<Repository> {
        let names = backends.map(<[String]>::to_vec).unwrap_or_default();
        let sel = cairn::config::select(&self.config, &names, self.limits)
            .map_err(|e| cairn::Error::Invalid(e.to_string()))?;
        let opts = OpenOptions {
            key_hint: self.key_hint.clone(),
            state_dir: Some(cairn::config::paths::state_dir()),
        };
        let mut repo = Repository::open_with(sel.replicas, &self.pass, &opts).await?;
        repo.set_lock_options(LockOptions {
            wait: self.lock_wait,
            ..Default::default()
        });
        repo.set_cancel_token(cancel);
        Ok(repo)
    }
}
