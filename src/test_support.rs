//! Helpers of the library's unit tests: a repository on in-memory
//! backends with a cheap key derivation, and a backup into it.

use std::path::Path;
use std::sync::Arc;

use cairn_backends::memory::MemoryBackend;
use cairn_backends::Backend;
use secrecy::SecretString;

use crate::format::keys::KdfParams;
use crate::ops::backup::{backup, progress::Progress, BackupOptions, BackupOutcome};
use crate::repo::{InitOptions, Replica, Repository};

pub fn pass() -> SecretString {
    SecretString::from("unit test")
}

/// `n` empty in-memory replicas.
pub fn memory_replicas(n: usize) -> Vec<Replica> {
    (0..n)
        .map(|i| {
            let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
            Replica {
                name: format!("mem{i}"),
                backend: b,
            }
        })
        .collect()
}

/// A new repository on `replicas`, with the cheapest key derivation.
pub async fn init(replicas: Vec<Replica>) -> Repository {
    let opts = InitOptions {
        kdf: KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        },
        ..Default::default()
    };
    Repository::init(replicas, &pass(), &opts).await.unwrap()
}

/// Open the repository on `replicas` again (another "process").
pub async fn open(replicas: Vec<Replica>) -> Repository {
    Repository::open(replicas, &pass()).await.unwrap()
}

/// Back up `src` to every replica of `repo`.
pub async fn backup_dir(repo: &Repository, src: &Path) -> BackupOutcome {
    let progress = Arc::new(Progress::new(
        repo.replicas().iter().map(|r| r.name.clone()),
    ));
    let mut opts = BackupOptions::new(vec![src.to_path_buf()]);
    opts.workers = 2;
    let out = backup(repo, &opts, progress).await.unwrap();
    // Every report serialises (it is what the API will return).
    let json = serde_json::to_value(&out).expect("backup report serializes");
    assert_eq!(
        json["replicas"].as_array().map(Vec::len),
        Some(repo.replicas().len())
    );
    out
}

/// A small source tree: a random file big enough for several packs'
/// worth of chunks, and a text file.
pub fn source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(src.join("sub/random.bin"), data).unwrap();
    std::fs::write(src.join("text.txt"), "some text\n".repeat(5000)).unwrap();
    src
}

/// Every pack on replica `i`.
pub async fn packs(repo: &Repository, i: usize) -> Vec<cairn_backends::Handle> {
    repo.replica(i)
        .backend
        .list(cairn_backends::Kind::Pack)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.handle)
        .collect()
}

/// A new repository on one in-memory replica.
pub async fn memory_repo() -> Repository {
    init(memory_replicas(1)).await
}

/// Back up `path` with the options `adjust` sets; the new snapshot's id.
pub async fn backup_of(
    repo: &Repository,
    path: std::path::PathBuf,
    adjust: impl FnOnce(&mut BackupOptions),
) -> crate::format::id::Id {
    let mut opts = BackupOptions::new(vec![path]);
    adjust(&mut opts);
    let progress = Arc::new(Progress::new(
        repo.replicas().iter().map(|r| r.name.clone()),
    ));
    let out = backup(repo, &opts, progress).await.unwrap();
    out.id.expect("the snapshot was written")
}
