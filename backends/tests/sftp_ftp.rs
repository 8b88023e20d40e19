//! The SFTP and FTP(S) backends against real servers on loopback: the
//! conformance suite, host key and certificate checks, wrong credentials, a
//! server that is not running, reconnection, and (ignored by default) a
//! throughput comparison with OpenSSH's `sftp` and `curl`.
//!
//! ```sh
//! scripts/test-servers start sftp ftp && eval "$(scripts/test-servers env sftp ftp)"
//! cargo test -p cairn-backends --features sftp,ftp --test sftp_ftp
//! cargo test -p cairn-backends --features sftp,ftp --release --test sftp_ftp -- --ignored --nocapture throughput
//! ```
//!
//! Environment (from `scripts/test-servers env`):
//! - SFTP: `CAIRN_TEST_REPO_SFTP` (`sftp://USER@127.0.0.1:2222/abs/path`),
//!   `CAIRN_SFTP_KEY`, `CAIRN_SFTP_KNOWN_HOSTS` (read by the backend itself);
//! - FTP: `CAIRN_TEST_REPO_FTP`, `CAIRN_TEST_REPO_FTPS`, `CAIRN_FTP_PASSWORD`
//!   (read by the backend), `CAIRN_FTPS_CA_FILE`;
//! - `CAIRN_TEST_REPO_FTPS_IMPLICIT` (implicit TLS, same CA);
//! - for the error-mapping cases: `CAIRN_TEST_SFTP_READER_KEY` (a key whose
//!   sessions are read-only), `CAIRN_TEST_FTP_READER_USER` (a read-only
//!   FTP user with the same password), and for password logins
//!   `CAIRN_TEST_REPO_SFTP_PASSWORD` with `CAIRN_TEST_SFTP_PASSWORD_FILE`.
//!
//! A test whose server is not configured prints a loud `SKIPPED` line and
//! passes, except under `CI=true`, where it fails. The "not running" tests
//! need no server and always run.
#![cfg(any(feature = "sftp", feature = "ftp"))]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use cairn_backends::conformance::support::{closed_port, expect_fast};
use cairn_backends::conformance::{
    fresh_location as fresh, report, run, server_from_env as configured, SuiteOptions,
};
use cairn_backends::{Backend, BackendError, ErrorKind, Handle, Kind, PutMode};

/// Run the conformance suite, print its report (timings are useful when
/// comparing servers), and fail on any failed case.
async fn conformance(backend: Arc<dyn Backend>, opts: &SuiteOptions) {
    let name = backend.to_string();
    let results = run(backend, opts).await;
    let text = report(&results);
    println!("conformance of {name}: {text}");
    assert!(
        results.iter().all(|r| r.passed()),
        "{name} failed conformance:\n{text}"
    );
}

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn probe() -> Handle {
    Handle::new(Kind::Key, "probe")
}

/// The whole error chain as one string, to look for secrets in it.
fn chain(e: &BackendError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(" / ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(feature = "sftp")]
/// Remove a test repository directory of the loopback SFTP server (the
/// empty directories the suite leaves), when it is on this machine.
fn remove_local_dir(path: &str) {
    let p = std::path::Path::new(path);
    if p.is_absolute() && p.exists() && path.contains("-") {
        let _ = std::fs::remove_dir_all(p);
    }
}

/// A TCP relay whose connections can be cut, to simulate a dropped link.
struct Relay {
    port: u16,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let c2 = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c2.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay {
            port,
            conns,
            accept,
        }
    }

    /// Drop every relayed connection (both sockets close).
    fn cut(&self) -> usize {
        let conns: Vec<_> = self.conns.lock().unwrap().drain(..).collect();
        for c in &conns {
            c.abort();
        }
        conns.len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// After the relay cut the link, the next operations fail at most with a
/// transient error, and one of the first few succeeds over a new connection.
async fn check_reconnects(backend: &dyn Backend, relay: &Relay) {
    let h = Handle::new(Kind::Snapshot, "reconnect");
    backend
        .put(&h, Bytes::from_static(b"before"), PutMode::Overwrite)
        .await
        .unwrap();
    assert!(relay.cut() >= 1, "the backend did not go through the relay");
    let mut ok = false;
    for attempt in 0..3 {
        match backend.get(&h, None).await {
            Ok(d) => {
                assert_eq!(&d[..], b"before");
                ok = true;
                break;
            }
            Err(e) => assert!(
                e.is_transient(),
                "attempt {attempt} after a dropped connection: {e} is not transient"
            ),
        }
    }
    assert!(ok, "no reconnection within 3 attempts");
    backend.delete(&h).await.unwrap();
}

#[cfg(feature = "sftp")]
mod sftp {
    use super::*;
    use cairn_backends::sftp::SftpBackend;

    fn base() -> Option<String> {
        configured("sftp", "CAIRN_TEST_REPO_SFTP")
    }

    /// `(host, port, path)` of an `sftp://user@host:port/path` URL.
    fn split(url: &str) -> (String, u16, String) {
        let rest = url.split_once("://").unwrap().1;
        let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
        let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = hostport
            .rsplit_once(':')
            .map_or((hostport, 22), |(h, p)| (h, p.parse().unwrap()));
        (host.to_string(), port, path.to_string())
    }

    /// The server's host key as listed in `CAIRN_SFTP_KNOWN_HOSTS`.
    fn server_key() -> russh::keys::PublicKey {
        let kh = std::env::var("CAIRN_SFTP_KNOWN_HOSTS").expect("CAIRN_SFTP_KNOWN_HOSTS");
        let text = std::fs::read_to_string(&kh).unwrap();
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap();
        let blob = line.split_whitespace().nth(2).unwrap();
        russh::keys::parse_public_key_base64(blob).unwrap()
    }

    fn fingerprint() -> String {
        server_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string()
    }

    /// A fresh ed25519 key the server does not know, in `dir`.
    fn unknown_key(dir: &std::path::Path) -> std::path::PathBuf {
        let key = dir.join("id_ed25519");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen (installed by scripts/test-servers)");
        assert!(status.success(), "ssh-keygen failed");
        key
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sftp_conformance() {
        let Some(base) = base() else { return };
        let Some(reader_key) = configured("sftp read-only key", "CAIRN_TEST_SFTP_READER_KEY")
        else {
            return;
        };
        let url = fresh(&base, "conformance");
        let backend = SftpBackend::from_url(&url, &BTreeMap::new()).await.unwrap();
        assert!(backend.capabilities().atomic_create);
        backend.create().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wrong_key = unknown_key(dir.path());
        let opts = SuiteOptions {
            rejected_credentials: Some(Arc::new(
                SftpBackend::from_url(&url, &options(&[("key_file", wrong_key.to_str().unwrap())]))
                    .await
                    .unwrap(),
            )),
            // sshd gives this key's sessions `internal-sftp -R`.
            read_only: Some(Arc::new(
                SftpBackend::from_url(&url, &options(&[("key_file", &reader_key)]))
                    .await
                    .unwrap(),
            )),
            ..SuiteOptions::default()
        };
        conformance(Arc::new(backend), &opts).await;
        remove_local_dir(&split(&url).2);
    }

    /// Password authentication, for an account that has no authorized key
    /// (the test key, offered first from `CAIRN_SFTP_KEY`, is refused): the
    /// right password logs in and the suite passes; a wrong one does not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sftp_password_login() {
        let Some(base) = configured("sftp password user", "CAIRN_TEST_REPO_SFTP_PASSWORD") else {
            return;
        };
        let pwfile = std::env::var("CAIRN_TEST_SFTP_PASSWORD_FILE").unwrap();
        let url = fresh(&base, "password");
        let o = options(&[("password_file", &pwfile)]);
        let backend = SftpBackend::from_url(&url, &o).await.unwrap();
        backend.create().await.unwrap();
        let small = SuiteOptions {
            large_object_bytes: 4 << 20,
            many_objects: 50,
            concurrency: 4,
            ..SuiteOptions::default()
        };
        conformance(Arc::new(backend), &small).await;

        let dir = tempfile::tempdir().unwrap();
        let wrong = dir.path().join("pw");
        std::fs::write(&wrong, "not-the-password\n").unwrap();
        let o = options(&[("password_file", wrong.to_str().unwrap())]);
        let backend = SftpBackend::from_url(&url, &o).await.unwrap();
        let err = expect_fast(
            "wrong password",
            ErrorKind::Unauthenticated,
            backend.list(Kind::Key),
        )
        .await;
        assert!(chain(&err).contains("password"), "{err}");
    }

    /// Key slots are readable by their owner only (checked on the server's
    /// file system, which is this machine's).
    #[tokio::test]
    async fn sftp_key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let Some(base) = base() else { return };
        let url = fresh(&base, "keymode");
        let backend = SftpBackend::from_url(&url, &BTreeMap::new()).await.unwrap();
        let h = Handle::new(Kind::Key, "k1");
        backend
            .put(&h, Bytes::from_static(b"wrapped"), PutMode::Create)
            .await
            .unwrap();
        let path = format!("{}/keys/k1", split(&url).2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path} has mode {mode:o}");
        let dir = split(&url).2;
        let strays: Vec<_> = std::fs::read_dir(format!("{dir}/keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "k1")
            .collect();
        assert!(strays.is_empty(), "temporary files left: {strays:?}");
        backend.delete(&h).await.unwrap();
        remove_local_dir(&dir);
    }

    /// Gets read the size and the first piece (one read request, 255 KiB
    /// here) at once, and a put of at most one write request sends write,
    /// fsync and close back to back: objects around those sizes, whole and
    /// in ranges that start before, at and after the first piece's end and
    /// past the object's end, read exactly what the memory backend reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sftp_reads_and_writes_around_one_request() {
        let Some(base) = base() else { return };
        let url = fresh(&base, "pieces");
        let sftp = SftpBackend::from_url(&url, &BTreeMap::new()).await.unwrap();
        sftp.create().await.unwrap();
        let memory = cairn_backends::memory::MemoryBackend::new();
        const PIECE: u64 = 261_120; // OpenSSH's read and write limit, less headers
        for (i, len) in [0, 1, 4096, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 7]
            .into_iter()
            .enumerate()
        {
            let data = Bytes::from(
                (0..len)
                    .map(|b| (b.wrapping_mul(31) ^ (b >> 9)) as u8)
                    .collect::<Vec<_>>(),
            );
            let h = Handle::new(Kind::Index, format!("{i:02}{len:062x}"));
            for b in [&sftp as &dyn Backend, &memory] {
                b.put(&h, data.clone(), PutMode::Create).await.unwrap();
            }
            assert_eq!(sftp.get(&h, None).await.unwrap(), data, "{len} bytes");
            let mut ranges = vec![0..0, 0..1, 0..len, 0..len + 10, 5..PIECE + 5];
            ranges.extend([PIECE - 1..PIECE + 1, PIECE..2 * PIECE, len..len + 1]);
            ranges.extend([len.saturating_sub(3)..len, len + 1..len + 5]);
            for r in ranges {
                let want = memory.get(&h, Some(r.clone())).await;
                let got = sftp.get(&h, Some(r.clone())).await;
                match (want, got) {
                    (Ok(w), Ok(g)) => assert_eq!(g, w, "{len} bytes, range {r:?}"),
                    (Err(w), Err(g)) => assert_eq!(g.kind(), w.kind(), "{len} bytes, {r:?}"),
                    (w, g) => panic!("{len} bytes, range {r:?}: memory {w:?}, sftp {g:?}"),
                }
            }
            // Create-only: the second put of the same name is refused.
            let again = sftp.put(&h, data.clone(), PutMode::Create).await;
            assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);
            // Overwrite of a small object goes the same pipelined way.
            sftp.put(&h, Bytes::from_static(b"new"), PutMode::Overwrite)
                .await
                .unwrap();
            assert_eq!(
                sftp.get(&h, None).await.unwrap(),
                Bytes::from_static(b"new")
            );
        }
        // No temporary files left behind, and exactly the objects written.
        assert_eq!(sftp.list(Kind::Index).await.unwrap().len(), 7);
        remove_local_dir(&split(&url).2);
    }

    /// A put into a directory that does not exist yet sends `mkdir` and the
    /// open together; the directory is made whether its parent exists (a
    /// new `data/xx/`) or not (no `data/` either: the `mkdir -p` walk), and
    /// a put into a directory another process made works too. Listings read
    /// two replies at once: directories of 0, 1, 100 (one reply) and 250
    /// entries (three replies) list exactly what is there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sftp_new_directories_and_listings_of_every_length() {
        let Some(base) = base() else { return };
        let url = fresh(&base, "dirs");
        let root = split(&url).2;
        let pack = |first: u8, n: u8| {
            Handle::new(
                Kind::Pack,
                format!("{first:02x}{}", format!("{n:02x}").repeat(31)),
            )
        };
        // No create(): not even the repository directory exists.
        let sftp = SftpBackend::from_url(&url, &BTreeMap::new()).await.unwrap();
        let a = pack(0xab, 1);
        sftp.put(&a, Bytes::from_static(b"first"), PutMode::Create)
            .await
            .unwrap();
        // data/ exists now: a new data/xx/ goes the one-round-trip way.
        let b = pack(0xcd, 2);
        sftp.put(&b, Bytes::from_static(b"second"), PutMode::Create)
            .await
            .unwrap();
        // Known directory now: straight to the open.
        let c = pack(0xcd, 3);
        sftp.put(&c, Bytes::from_static(b"third"), PutMode::Create)
            .await
            .unwrap();
        for d in ["data/ab", "data/cd"] {
            assert!(std::path::Path::new(&format!("{root}/{d}")).is_dir(), "{d}");
        }
        // Another process (a second backend) made data/ef/: this one does
        // not know it, its mkdir fails unread, the open succeeds.
        let other = SftpBackend::from_url(&url, &BTreeMap::new()).await.unwrap();
        let d = pack(0xef, 4);
        other
            .put(&d, Bytes::from_static(b"fourth"), PutMode::Create)
            .await
            .unwrap();
        let e = pack(0xef, 5);
        sftp.put(&e, Bytes::from_static(b"fifth"), PutMode::Create)
            .await
            .unwrap();
        for (h, want) in [
            (&a, "first"),
            (&b, "second"),
            (&c, "third"),
            (&d, "fourth"),
            (&e, "fifth"),
        ] {
            assert_eq!(sftp.get(h, None).await.unwrap(), Bytes::from(want), "{h}");
        }
        // Create-only still refuses an existing object in a known directory.
        let again = sftp
            .put(&c, Bytes::from_static(b"x"), PutMode::Create)
            .await;
        assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);
        let mut packs: Vec<String> = sftp
            .list(Kind::Pack)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.handle.name)
            .collect();
        packs.sort();
        let mut want: Vec<String> = [&a, &b, &c, &d, &e]
            .iter()
            .map(|h| h.name.clone())
            .collect();
        want.sort();
        assert_eq!(packs, want);

        // Listings: a directory never written is empty; then 1, 100, 250.
        assert!(sftp.list(Kind::Lock).await.unwrap().is_empty());
        let mut written = 0;
        for n in [1usize, 100, 250] {
            while written < n {
                let h = Handle::new(Kind::Lock, format!("{written:064x}"));
                sftp.put(&h, Bytes::from_static(b"l"), PutMode::Create)
                    .await
                    .unwrap();
                written += 1;
            }
            let mut names: Vec<String> = sftp
                .list(Kind::Lock)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.handle.name)
                .collect();
            names.sort();
            let want: Vec<String> = (0..n).map(|i| format!("{i:064x}")).collect();
            assert_eq!(names, want, "{n} entries");
        }
        // Many listings in a row on the same connection: the directory
        // handles closed without waiting do not pile up or get in the way.
        for _ in 0..50 {
            assert_eq!(sftp.list(Kind::Lock).await.unwrap().len(), 250);
        }
        remove_local_dir(&root);
    }

    #[tokio::test]
    async fn sftp_unknown_host_key_is_refused() {
        let Some(base) = base() else { return };
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("known_hosts");
        std::fs::write(&empty, "").unwrap();
        let o = options(&[("known_hosts", empty.to_str().unwrap())]);
        let backend = SftpBackend::from_url(&fresh(&base, "unknown"), &o)
            .await
            .unwrap();
        let err = expect_fast(
            "unknown host key",
            ErrorKind::PermissionDenied,
            backend.list(Kind::Key),
        )
        .await;
        assert!(err.to_string().contains("not in known_hosts"), "{err}");
        // A missing file is the same as an empty one.
        let o = options(&[("known_hosts", "/nonexistent/known_hosts")]);
        let backend = SftpBackend::from_url(&fresh(&base, "unknown"), &o)
            .await
            .unwrap();
        expect_fast(
            "no known_hosts",
            ErrorKind::PermissionDenied,
            backend.head(&probe()),
        )
        .await;
    }

    #[tokio::test]
    async fn sftp_changed_host_key_is_refused() {
        let Some(base) = base() else { return };
        let (host, port, _) = split(&base);
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        // Another ed25519 key recorded for this host (and a hashed entry of
        // an unrelated host, which must not confuse the reader).
        std::fs::write(
            &kh,
            format!(
                "|1|AAAAAAAAAAAAAAAAAAAAAAAAAAA=|AAAAAAAAAAAAAAAAAAAAAAAAAAA= ssh-ed25519 {OTHER_KEY}\n\
                 [{host}]:{port} ssh-ed25519 {OTHER_KEY}\n"
            ),
        )
        .unwrap();
        let o = options(&[("known_hosts", kh.to_str().unwrap())]);
        let backend = SftpBackend::from_url(&fresh(&base, "changed"), &o)
            .await
            .unwrap();
        let err = expect_fast(
            "changed host key",
            ErrorKind::PermissionDenied,
            backend.list(Kind::Key),
        )
        .await;
        assert!(err.to_string().contains("CHANGED"), "{err}");
    }

    /// Some other ed25519 public key.
    const OTHER_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPFXw8N3diXI3A2rHVBBrPxmp8/zFDW23G0LmsYeT+Ue";

    #[tokio::test]
    async fn sftp_host_key_fingerprint_pins_the_key() {
        let Some(base) = base() else { return };
        let o = options(&[
            ("host_key_fingerprint", &fingerprint()),
            ("known_hosts", "/nonexistent"),
        ]);
        let backend = SftpBackend::from_url(&fresh(&base, "pinned"), &o)
            .await
            .unwrap();
        assert!(backend.list(Kind::Key).await.unwrap().is_empty());

        let o = options(&[(
            "host_key_fingerprint",
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )]);
        let backend = SftpBackend::from_url(&fresh(&base, "pinned"), &o)
            .await
            .unwrap();
        let err = expect_fast(
            "wrong fingerprint",
            ErrorKind::PermissionDenied,
            backend.list(Kind::Key),
        )
        .await;
        assert!(err.to_string().contains("host_key_fingerprint"), "{err}");
    }

    #[tokio::test]
    async fn sftp_wrong_key_or_password_is_unauthenticated() {
        let Some(base) = base() else { return };
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            cairn_backends::conformance::loud_skip("SKIPPED: sftp wrong-key test needs ssh-keygen");
            return;
        }
        let pwfile = dir.path().join("pw");
        let secret = "not-the-password-7f3a";
        std::fs::write(&pwfile, format!("{secret}\n")).unwrap();
        let o = options(&[
            ("key_file", key.to_str().unwrap()),
            ("password_file", pwfile.to_str().unwrap()),
        ]);
        let backend = SftpBackend::from_url(&fresh(&base, "wrongkey"), &o)
            .await
            .unwrap();
        let errs = [
            expect_fast(
                "put",
                ErrorKind::Unauthenticated,
                backend.put(&probe(), Bytes::from_static(b"x"), PutMode::Overwrite),
            )
            .await,
            expect_fast(
                "get",
                ErrorKind::Unauthenticated,
                backend.get(&probe(), None),
            )
            .await,
            expect_fast("list", ErrorKind::Unauthenticated, backend.list(Kind::Key)).await,
        ];
        for e in &errs {
            assert!(!chain(e).contains(secret), "secret in error: {e}");
        }
        assert!(!format!("{backend} {backend:?}").contains(secret));

        // The password in the URL is accepted and never shown.
        let url = base.replacen("://", &format!("://{}:{secret}@", "nobody"), 1);
        let url = match url.split_once('@') {
            Some((a, b)) if b.contains('@') => format!("{a}@{}", b.split_once('@').unwrap().1),
            _ => url,
        };
        let o = options(&[("key_file", key.to_str().unwrap())]);
        let backend = SftpBackend::from_url(&url, &o).await.unwrap();
        assert!(backend.to_string().contains(":***@"), "{backend}");
        let e = expect_fast(
            "password in URL",
            ErrorKind::Unauthenticated,
            backend.list(Kind::Key),
        )
        .await;
        assert!(!chain(&e).contains(secret), "secret in error: {e}");
    }

    #[tokio::test]
    async fn sftp_server_not_running_is_unreachable() {
        let o = options(&[("known_hosts", "/nonexistent")]);
        let url = format!("sftp://nobody@127.0.0.1:{}/repo", closed_port());
        let backend = SftpBackend::from_url(&url, &o).await.unwrap();
        expect_fast(
            "put",
            ErrorKind::Unreachable,
            backend.put(&probe(), Bytes::from_static(b"x"), PutMode::Overwrite),
        )
        .await;
        expect_fast("list", ErrorKind::Unreachable, backend.list(Kind::Key)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sftp_reconnects_after_a_dropped_connection() {
        let Some(base) = base() else { return };
        let (host, port, path) = split(&base);
        let target = tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap()
            .next()
            .unwrap();
        let relay = Relay::start(target).await;
        let user = base
            .split_once("://")
            .unwrap()
            .1
            .split_once('@')
            .map(|(u, _)| u.to_string());
        let url = fresh(
            &format!(
                "sftp://{}127.0.0.1:{}{path}",
                user.map(|u| format!("{u}@")).unwrap_or_default(),
                relay.port
            ),
            "reconnect",
        );
        // Through the relay the host is "[127.0.0.1]:relay-port", which no
        // known_hosts lists: pin the key instead.
        let o = options(&[("host_key_fingerprint", &fingerprint())]);
        let backend = SftpBackend::from_url(&url, &o).await.unwrap();
        check_reconnects(&backend, &relay).await;
        remove_local_dir(&split(&url).2);
    }
}

#[cfg(feature = "ftp")]
mod ftp {
    use super::*;
    use cairn_backends::ftp::FtpBackend;

    fn ca_options() -> BTreeMap<String, String> {
        match std::env::var("CAIRN_FTPS_CA_FILE") {
            Ok(ca) if !ca.is_empty() => options(&[("ca_file", &ca)]),
            _ => BTreeMap::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn ftp_conformance() {
        let Some(base) = configured("ftp", "CAIRN_TEST_REPO_FTP") else {
            return;
        };
        let Some(reader) = configured("ftp read-only user", "CAIRN_TEST_FTP_READER_USER") else {
            return;
        };
        let url = fresh(&base, "conformance");
        let backend = FtpBackend::from_url(&url, &BTreeMap::new()).await.unwrap();
        assert!(!backend.capabilities().atomic_create);
        backend.create().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wrong = dir.path().join("pw");
        std::fs::write(&wrong, "wrong-password-5e1d\n").unwrap();
        let view = |url: String, o: BTreeMap<String, String>| async move {
            Arc::new(FtpBackend::from_url(&url, &o).await.unwrap()) as Arc<dyn Backend>
        };
        // The URL's user wins over the `user` option.
        let (scheme, rest) = url.split_once("://").unwrap();
        let hostpath = rest.split_once('@').map_or(rest, |(_, r)| r);
        let reader_url = format!("{scheme}://{reader}@{hostpath}");
        let opts = SuiteOptions {
            rejected_credentials: Some(
                view(
                    url.clone(),
                    options(&[("password_file", wrong.to_str().unwrap())]),
                )
                .await,
            ),
            read_only: Some(view(reader_url, BTreeMap::new()).await),
            ..SuiteOptions::default()
        };
        conformance(Arc::new(backend), &opts).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn ftps_conformance() {
        let Some(base) = configured("ftps", "CAIRN_TEST_REPO_FTPS") else {
            return;
        };
        let backend = FtpBackend::from_url(&fresh(&base, "conformance"), &ca_options())
            .await
            .unwrap();
        backend.create().await.unwrap();
        conformance(Arc::new(backend), &SuiteOptions::default()).await;
    }

    /// Implicit TLS (TLS from the first byte; the test server's third port).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn ftps_implicit_conformance() {
        let Some(base) = configured("implicit ftps", "CAIRN_TEST_REPO_FTPS_IMPLICIT") else {
            return;
        };
        let mut o = ca_options();
        o.insert("implicit_tls".into(), "true".into());
        let backend = FtpBackend::from_url(&fresh(&base, "implicit"), &o)
            .await
            .unwrap();
        let small = SuiteOptions {
            large_object_bytes: 8 << 20,
            many_objects: 50,
            concurrency: 4,
            ..SuiteOptions::default()
        };
        backend.create().await.unwrap();
        conformance(Arc::new(backend), &small).await;
    }

    #[tokio::test]
    async fn ftps_untrusted_or_mismatched_certificate_is_refused() {
        let Some(base) = configured("ftps", "CAIRN_TEST_REPO_FTPS") else {
            return;
        };
        // Only the webpki roots: the test CA is not among them.
        let backend = FtpBackend::from_url(&fresh(&base, "untrusted"), &BTreeMap::new())
            .await
            .unwrap();
        let err = expect_fast(
            "untrusted CA",
            ErrorKind::PermissionDenied,
            backend.list(Kind::Key),
        )
        .await;
        assert!(err.to_string().contains("certificate"), "{err}");

        // Another CA, made here with openssl when it is installed.
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other-ca.pem");
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=other CA",
                "-keyout",
            ])
            .arg(dir.path().join("other-ca.key"))
            .arg("-out")
            .arg(&other)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if made {
            let o = options(&[("ca_file", other.to_str().unwrap())]);
            let backend = FtpBackend::from_url(&fresh(&base, "otherca"), &o)
                .await
                .unwrap();
            expect_fast(
                "other CA",
                ErrorKind::PermissionDenied,
                backend.list(Kind::Key),
            )
            .await;
        } else {
            eprintln!("*** note: openssl not found, other-CA case not run ***");
        }

        // The right CA, but the certificate is not for this name.
        let mut o = ca_options();
        if o.is_empty() {
            return;
        }
        o.insert("tls_server_name".into(), "not-this-host.example".into());
        let backend = FtpBackend::from_url(&fresh(&base, "wrongname"), &o)
            .await
            .unwrap();
        expect_fast(
            "wrong server name",
            ErrorKind::PermissionDenied,
            backend.list(Kind::Key),
        )
        .await;
    }

    #[tokio::test]
    async fn ftp_wrong_password_is_unauthenticated() {
        let Some(base) = configured("ftp", "CAIRN_TEST_REPO_FTP") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let pwfile = dir.path().join("pw");
        let secret = "wrong-password-91c2";
        std::fs::write(&pwfile, format!("{secret}\n")).unwrap();
        let o = options(&[("password_file", pwfile.to_str().unwrap())]);
        let backend = FtpBackend::from_url(&fresh(&base, "wrongpw"), &o)
            .await
            .unwrap();
        let errs = [
            expect_fast(
                "put",
                ErrorKind::Unauthenticated,
                backend.put(&probe(), Bytes::from_static(b"x"), PutMode::Overwrite),
            )
            .await,
            expect_fast(
                "get",
                ErrorKind::Unauthenticated,
                backend.get(&probe(), None),
            )
            .await,
            expect_fast("list", ErrorKind::Unauthenticated, backend.list(Kind::Key)).await,
        ];
        for e in &errs {
            assert!(!chain(e).contains(secret), "secret in error: {e}");
        }

        // In the URL: accepted, redacted, refused by the server.
        let rest = base.split_once("://").unwrap().1;
        let hostpath = rest.split_once('@').map_or(rest, |(_, r)| r);
        let url = fresh(&format!("ftp://cairn:{secret}@{hostpath}"), "wrongpw");
        let backend = FtpBackend::from_url(&url, &BTreeMap::new()).await.unwrap();
        assert!(
            backend.to_string().starts_with("ftp://cairn:***@"),
            "{backend}"
        );
        assert!(!format!("{backend:?}").contains(secret));
        let e = expect_fast(
            "password in URL",
            ErrorKind::Unauthenticated,
            backend.list(Kind::Key),
        )
        .await;
        assert!(!chain(&e).contains(secret), "secret in error: {e}");
    }

    #[tokio::test]
    async fn ftp_server_not_running_is_unreachable() {
        let url = format!("ftp://nobody@127.0.0.1:{}/repo", closed_port());
        let backend = FtpBackend::from_url(&url, &BTreeMap::new()).await.unwrap();
        expect_fast(
            "put",
            ErrorKind::Unreachable,
            backend.put(&probe(), Bytes::from_static(b"x"), PutMode::Overwrite),
        )
        .await;
        expect_fast("list", ErrorKind::Unreachable, backend.list(Kind::Key)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ftp_reconnects_after_a_dropped_connection() {
        let Some(base) = configured("ftp", "CAIRN_TEST_REPO_FTP") else {
            return;
        };
        let rest = base.split_once("://").unwrap().1;
        let (user, hostpath) = rest.split_once('@').unwrap_or(("", rest));
        let (hostport, path) = hostpath.split_at(hostpath.find('/').unwrap_or(hostpath.len()));
        let target = tokio::net::lookup_host(hostport)
            .await
            .unwrap()
            .next()
            .unwrap();
        let relay = Relay::start(target).await;
        // Data connections go straight to the server (passive mode uses the
        // control connection's address with the server's port); only the
        // control connection is relayed and cut.
        let url = fresh(
            &format!("ftp://{user}@127.0.0.1:{}{path}", relay.port),
            "reconnect",
        );
        let backend = FtpBackend::from_url(&url, &BTreeMap::new()).await.unwrap();
        check_reconnects(&backend, &relay).await;
    }
}
