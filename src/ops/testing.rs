//! What the operations' unit tests share: a repository on the in-memory
//! backend, and backups into it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::format::id::Id;
use crate::format::keys::KdfParams;
use crate::ops::backup::{backup, progress::Progress, BackupOptions};
use crate::repo::{InitOptions, Replica, Repository};

/// A new repository on one in-memory replica named `mem`.
pub async fn memory_repo() -> Repository {
    let b: Arc<dyn cairn_backends::Backend> =
        Arc::new(cairn_backends::memory::MemoryBackend::new());
    let opts = InitOptions {
        // The cheapest key derivation allowed: tests are not attacked.
        kdf: KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        },
        ..Default::default()
    };
    Repository::init(
        vec![Replica {
            name: "mem".into(),
            backend: b,
        }],
        &secrecy::SecretString::from("test"),
        &opts,
    )
    .await
    .unwrap()
}

/// Back up `path` with the options `adjust` sets; the
/// new snapshot's id.
pub async fn backup_of(
    repo: &Repository,
    path: PathBuf,
    adjust: impl FnOnce(&mut BackupOptions),
) -> Id {
    let mut opts = BackupOptions::new(vec![path]);
    adjust(&mut opts);
    let progress = Arc::new(Progress::new(["mem".to_string()]));
    let out = backup(repo, &opts, progress).await.unwrap();
    out.id.expect("the snapshot was written")
}
