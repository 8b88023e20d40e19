//! Behaviour of `LocalBackend` beyond the conformance suite: file modes,
//! leftovers of crashed writes, files damaged behind the backend's back.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bytes::Bytes;
use cairn_backends::local::LocalBackend;
use cairn_backends::{Backend, BackendError, ErrorKind, Handle, Kind, PutMode};

async fn fresh() -> (tempfile::TempDir, LocalBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().await.unwrap();
    (dir, backend)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

#[tokio::test]
async fn create_makes_the_layout() {
    let (_dir, b) = fresh().await;
    for d in ["keys", "snapshots", "index", "data", "locks"] {
        assert!(b.root().join(d).is_dir(), "{d}");
    }
    // Idempotent.
    b.create().await.unwrap();
    assert_eq!(b.to_string(), format!("local:{}", b.root().display()));
}

#[tokio::test]
async fn key_files_are_private() {
    let (_dir, b) = fresh().await;
    let key = Handle::new(Kind::Key, "k1");
    b.put(&key, Bytes::from_static(b"wrapped"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(mode(&b.root().join("keys/k1")), 0o600);
    // Also when replaced.
    b.put(&key, Bytes::from_static(b"rewrapped"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(mode(&b.root().join("keys/k1")), 0o600);
    let snap = Handle::new(Kind::Snapshot, "s1");
    b.put(&snap, Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(mode(&b.root().join("snapshots/s1")) & 0o600, 0o600);
}

#[tokio::test]
async fn leftover_temp_files_and_strays_are_not_listed() {
    let (_dir, b) = fresh().await;
    let pack = Handle::new(Kind::Pack, "abcdef");
    b.put(&pack, Bytes::from_static(b"pack"), PutMode::Create)
        .await
        .unwrap();
    let root = b.root();
    // What a crash mid-put leaves, and what users or other tools leave.
    fs::write(root.join("data/ab/.tmp-0123456789abcdef"), b"partial").unwrap();
    fs::write(root.join("data/ab/cdxx"), b"wrong directory").unwrap();
    fs::create_dir(root.join("data/ab/abdir")).unwrap();
    fs::write(root.join("data/README"), b"stray").unwrap();
    fs::create_dir(root.join("data/abc")).unwrap();
    fs::write(root.join("data/abc/abcx"), b"not a fan-out dir").unwrap();
    fs::write(root.join("keys/.tmp-1"), b"partial key").unwrap();
    fs::write(root.join("snapshots/.hidden"), b"x").unwrap();
    fs::write(root.join(".tmp-config"), b"partial config").unwrap();

    let packs = b.list(Kind::Pack).await.unwrap();
    assert_eq!(packs.len(), 1, "{packs:?}");
    assert_eq!(packs[0].handle, pack);
    assert_eq!(packs[0].size, 4);
    assert!(b.list(Kind::Key).await.unwrap().is_empty());
    assert!(b.list(Kind::Snapshot).await.unwrap().is_empty());
    assert!(b.list(Kind::Config).await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_kind_directory_lists_empty_but_missing_root_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path());
    // The root exists but was never initialised: no kind directories.
    for kind in Kind::ALL {
        assert!(b.list(kind).await.unwrap().is_empty(), "{kind}");
    }
    let gone = LocalBackend::new(dir.path().join("not-mounted"));
    let err = gone.list(Kind::Snapshot).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("not-mounted"), "{err}");
    // A put does not create the root: a missing mount must not turn into
    // a backup written to the mount point's filesystem.
    let err = gone
        .put(
            &Handle::new(Kind::Pack, "abcd"),
            Bytes::from_static(b"x"),
            PutMode::Overwrite,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!dir.path().join("not-mounted").exists());
}

#[tokio::test]
async fn truncated_file_reads_short() {
    let (_dir, b) = fresh().await;
    let h = Handle::new(Kind::Pack, "feed01");
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    b.put(&h, Bytes::from(data.clone()), PutMode::Create)
        .await
        .unwrap();
    let path = b.root().join(h.path());
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(500)
        .unwrap();

    assert_eq!(b.get(&h, None).await.unwrap(), data[..500]);
    assert_eq!(b.get(&h, Some(400..600)).await.unwrap(), data[400..500]);
    assert_eq!(b.head(&h).await.unwrap().size, 500);
    let err = b.get(&h, Some(600..700)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRange);
}

#[tokio::test]
async fn failed_create_leaves_no_temp_file() {
    let (_dir, b) = fresh().await;
    let h = Handle::new(Kind::Lock, "l1");
    b.put(&h, Bytes::from_static(b"first"), PutMode::Create)
        .await
        .unwrap();
    let err = b
        .put(&h, Bytes::from_static(b"second"), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("locks/l1"), "{err}");
    assert_eq!(b.get(&h, None).await.unwrap(), "first");
    assert!(temp_files(&b.root().join("locks")).is_empty());
}

#[tokio::test]
async fn invalid_names_are_rejected_before_touching_the_disk() {
    let (dir, b) = fresh().await;
    for name in [
        "../escape",
        "",
        ".tmp-x",
        "a/b",
        "é",
        "x".repeat(129).as_str(),
    ] {
        let h = Handle::new(Kind::Snapshot, name);
        let err = b
            .put(&h, Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Other, "{name:?}: {err}");
        assert!(b.get(&h, None).await.is_err());
        assert!(b.delete(&h).await.is_err());
    }
    assert!(!dir.path().join("escape").exists());
    // A one-character pack name would have no fan-out directory.
    let h = Handle::new(Kind::Pack, "a");
    assert!(b.put(&h, Bytes::new(), PutMode::Overwrite).await.is_err());
}

#[tokio::test]
async fn pack_directories_are_made_on_demand() {
    let (_dir, b) = fresh().await;
    assert!(!b.root().join("data/c0").exists());
    let h = Handle::new(Kind::Pack, "c0ffee");
    b.put(&h, Bytes::from_static(b"x"), PutMode::Overwrite)
        .await
        .unwrap();
    assert!(b.root().join("data/c0/c0ffee").is_file());
    assert_eq!(b.list(Kind::Pack).await.unwrap().len(), 1);
}

#[test]
fn disk_full_maps_to_storage_full() {
    let err = BackendError::from_io("writing x", std::io::Error::from_raw_os_error(libc::ENOSPC));
    assert_eq!(err.kind(), ErrorKind::StorageFull);
    let err = BackendError::from_io("writing x", std::io::Error::from_raw_os_error(libc::EDQUOT));
    assert_eq!(err.kind(), ErrorKind::StorageFull);
}
