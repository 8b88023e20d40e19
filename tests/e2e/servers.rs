//! The engine end to end against real servers on loopback: init, backup,
//! snapshots, restore, check --read-data on each network backend, and one
//! fan-out run writing to all of them at once. The servers come from
//! `scripts/test-servers start`; `eval "$(scripts/test-servers env)"` sets
//! the `CAIRN_TEST_REPO_*` variables these tests read.

use std::path::Path;

use crate::common::*;

/// The repository base URL in `var`, or `None` after a loud skip notice
/// (a failure under `CI=true`).
fn server(var: &str) -> Option<String> {
    cairn::backends::conformance::server_from_env(var, var)
}

/// A fresh repository URL under the server's base.
fn fresh(base: &str, name: &str) -> String {
    cairn::backends::conformance::fresh_location(base, name)
}

fn round_trip(var: &str, name: &str) {
    let Some(base) = server(var) else { return };
    round_trip_at(&Env::new(), &base, name);
}

fn round_trip_at(env: &Env, base: &str, name: &str) {
    let src = env.path("src");
    make_tree(&src, 3 << 20);
    let url = fresh(base, name);
    let repo = Path::new(&url);
    env.init(&[repo]);
    let (code, sum) = env.backup_json(&[repo], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    // A second backup reads nothing.
    let (code, sum) = env.backup_json(&[repo], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    assert_eq!(sum["summary"]["bytes_read"], 0);
    let out = env
        .cairn(&[repo])
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert_eq!(last_json(&out.stdout).as_array().unwrap().len(), 2);
    let target = env.path("restore");
    env.cairn(&[repo])
        .args(["restore", "latest", "--verify", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&target, &src));
    env.cairn(&[repo])
        .args(["check", "--read-data"])
        .assert()
        .success();
}

#[test]
fn s3_round_trip() {
    round_trip("CAIRN_TEST_REPO_S3", "e2e");
}

#[test]
fn azure_round_trip() {
    round_trip("CAIRN_TEST_REPO_AZURE", "e2e");
}

#[test]
fn gcs_round_trip() {
    round_trip("CAIRN_TEST_REPO_GCS", "e2e");
}

#[test]
fn sftp_round_trip() {
    round_trip("CAIRN_TEST_REPO_SFTP", "e2e");
}

/// SFTP with the key in an ssh-agent (no key file configured, no default
/// keys in `~/.ssh`): what a user with `ssh-add` does.
#[test]
fn sftp_round_trip_with_ssh_agent() {
    let Some(base) = server("CAIRN_TEST_REPO_SFTP") else {
        return;
    };
    let key = std::env::var_os("CAIRN_SFTP_KEY").expect("CAIRN_SFTP_KEY");
    let env = Env::new();
    let sock = env.path("agent.sock");
    let agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client, installed by scripts/test-servers)");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = std::process::Command::new("ssh-add")
        .arg("-q")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .status()
        .unwrap();
    assert!(added.success(), "ssh-add failed");
    env.set_var("CAIRN_SFTP_KEY", None);
    env.set_var("SSH_AUTH_SOCK", Some(sock.as_os_str()));
    round_trip_at(&env, &base, "agent");

    // Without the agent, nothing is offered: a clear error, not a hang.
    env.set_var("SSH_AUTH_SOCK", None);
    let out = env
        .cairn(&[Path::new(&fresh(&base, "agent"))])
        .args(["snapshots"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("no credentials to offer"), "{err}");
}

/// SFTP with a password only (`CAIRN_SFTP_PASSWORD`), for an account that
/// has no authorized key.
#[test]
fn sftp_round_trip_with_password() {
    let Some(base) = server("CAIRN_TEST_REPO_SFTP_PASSWORD") else {
        return;
    };
    let file = std::env::var("CAIRN_TEST_SFTP_PASSWORD_FILE").unwrap();
    let password = std::fs::read_to_string(file).unwrap();
    let env = Env::new();
    env.set_var("CAIRN_SFTP_KEY", None);
    env.set_var("CAIRN_SFTP_PASSWORD", Some(password.trim().as_ref()));
    round_trip_at(&env, &base, "password");
}

#[test]
fn ftp_round_trip() {
    round_trip("CAIRN_TEST_REPO_FTP", "e2e");
}

/// One backup, read once, written to local disk and every server at once;
/// each replica then restores the same tree on its own.
#[test]
fn fan_out_to_every_backend() {
    let vars = [
        "CAIRN_TEST_REPO_S3",
        "CAIRN_TEST_REPO_AZURE",
        "CAIRN_TEST_REPO_GCS",
        "CAIRN_TEST_REPO_SFTP",
        "CAIRN_TEST_REPO_FTP",
    ];
    let bases: Vec<String> = vars.iter().filter_map(|v| server(v)).collect();
    if bases.len() < vars.len() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 2 << 20);
    let local = env.path("local-repo").display().to_string();
    let mut urls = vec![local];
    urls.extend(bases.iter().map(|b| fresh(b, "fanout")));
    let repos: Vec<&Path> = urls.iter().map(Path::new).collect();
    env.init(&repos);
    let (code, sum) = env.backup_json(&repos, &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    let reps = sum["replicas"].as_array().unwrap();
    assert_eq!(reps.len(), urls.len());
    assert!(reps.iter().all(|r| r["ok"] == true), "{sum}");
    // The source was read once, whatever the number of replicas.
    assert_eq!(sum["summary"]["bytes_read"], sum["summary"]["total_bytes"]);
    for (i, r) in repos.iter().enumerate() {
        let target = env.path(&format!("restore-{i}"));
        env.cairn(&[r])
            .args(["restore", "latest", "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(&src, &restored(&target, &src));
    }
    env.cairn(&repos)
        .args(["check", "--read-data"])
        .assert()
        .success();
}

/// A server that is down fails its replica alone: the others get the
/// snapshot, the command exits 4 and names it.
#[test]
fn unreachable_server_fails_alone() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 100_000);
    let local = env.path("local");
    // Nothing listens on port 1 of loopback.
    let Some(_) = server("CAIRN_TEST_REPO_SFTP") else {
        return;
    };
    let dead = "sftp://nobody@127.0.0.1:1/repo".to_string();
    env.init(&[&local]);
    let (code, sum) = env.backup_json(&[&local, Path::new(&dead)], &[src.as_os_str()]);
    assert_eq!(code, 4, "{sum}");
    let reps = sum["replicas"].as_array().unwrap();
    assert!(
        reps.iter()
            .any(|r| r["ok"] == false && r["name"].as_str().unwrap().contains("127.0.0.1:1")),
        "{sum}"
    );
    assert!(sum["snapshot"].is_string());
}

/// A TCP relay in front of a real server that can be "stopped": once
/// `budget` bytes have gone up, every connection is cut and new ones are
/// refused, as when the server process dies mid-backup.
struct Relay {
    port: u16,
}

impl Relay {
    fn start(target: std::net::SocketAddr, budget: u64) -> Relay {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let dead = Arc::new(AtomicBool::new(false));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if dead.load(Ordering::SeqCst) {
                    // Refuse: close at once, like a port nobody listens on.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let pipe = |mut from: TcpStream,
                            mut to: TcpStream,
                            count: bool,
                            sent: Arc<AtomicU64>,
                            dead: Arc<AtomicBool>| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if count
                                && sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > budget
                            {
                                dead.store(true, Ordering::SeqCst);
                            }
                            if dead.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                };
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    true,
                    sent.clone(),
                    dead.clone(),
                );
                pipe(server, client, false, sent.clone(), dead.clone());
            }
        });
        Relay { port }
    }
}

/// The S3 server goes away in the middle of a backup to local + S3: S3 fails
/// after bounded retries, local completes, the command exits 4, and what
/// reached S3 is a consistent repository without this run's snapshot.
#[test]
fn server_stopped_mid_backup_fails_alone_and_stays_consistent() {
    let Some(base) = server("CAIRN_TEST_REPO_S3") else {
        return;
    };
    let Ok(endpoint) = std::env::var("AWS_ENDPOINT") else {
        return;
    };
    let target: std::net::SocketAddr = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), noise(9, 12 << 20)).unwrap();
    let url = fresh(&base, "stopped");
    let local = env.path("local");
    // Small packs, so the upload is many requests and the cut lands mid-run.
    let init = |repos: &[&Path]| {
        env.cairn(repos)
            .args([
                "init",
                "--pack-size-mib",
                "1",
                "--kdf-memory-kib",
                "8192",
                "--kdf-iterations",
                "1",
            ])
            .assert()
            .success();
    };
    init(&[&local, Path::new(&url)]);
    let relay = Relay::start(target, 5 << 20);
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[backends.local]\nurl = \"{}\"\n\n[backends.s3]\nurl = \"{url}\"\nendpoint = \"http://127.0.0.1:{}\"\nallow_http = true\n",
            local.display(),
            relay.port
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = env
        .cairn_with_config(&config)
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    let sum = last_json(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{sum}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "retries are bounded"
    );
    let reps = sum["replicas"].as_array().unwrap();
    let by_name = |n: &str| reps.iter().find(|r| r["name"] == n).unwrap().clone();
    assert_eq!(by_name("local")["ok"], true, "{sum}");
    assert_eq!(by_name("s3")["ok"], false, "{sum}");
    // Straight to the server: no snapshot of this run, and what is there checks clean.
    let direct = Path::new(&url);
    let out = env
        .cairn(&[direct])
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert_eq!(last_json(&out.stdout).as_array().unwrap().len(), 0);
    env.cairn(&[direct])
        .args(["check", "--read-data"])
        .assert()
        .success();
    let target_dir = env.path("restore");
    env.cairn(&[&local])
        .args(["restore", "latest", "--target"])
        .arg(&target_dir)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&target_dir, &src));

    // Once the server is back, sync completes the S3 replica.
    let both = [local.as_path(), direct];
    let out = env.cairn(&both).args(["sync", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", last_json(&out.stdout));
    let out = env
        .cairn(&both)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", last_json(&out.stdout));
    env.cairn(&[direct])
        .args(["check", "--read-data"])
        .assert()
        .success();
}

/// `init` on an S3 bucket that does not exist yet creates it; backup and
/// check --read-data then work against it.
#[test]
fn init_creates_a_missing_s3_bucket() {
    let Some(_) = server("CAIRN_TEST_REPO_S3") else {
        return;
    };
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    let url = format!("s3://cairn-e2e-new-{:016x}/x", rand::random::<u64>());
    let repo = Path::new(&url);
    env.init(&[repo]);
    let (code, sum) = env.backup_json(&[repo], &[src.as_os_str()]);
    assert_eq!(code, 0, "{sum}");
    env.cairn(&[repo])
        .args(["check", "--read-data"])
        .assert()
        .success();
}

/// The backend behind a test server URL, reached directly (as an attacker
/// or a broken server would change it, beneath cairn).
async fn open_direct(url: &str) -> std::sync::Arc<dyn cairn::backends::Backend> {
    use cairn::backends as b;
    let none = Default::default();
    match url.split_once("://").map(|(s, _)| s) {
        Some("s3") => std::sync::Arc::new(b::s3::S3Backend::from_url(url, &none).unwrap()),
        Some("az") => std::sync::Arc::new(b::azure::AzureBackend::from_url(url, &none).unwrap()),
        Some("gs") => std::sync::Arc::new(b::gcs::GcsBackend::from_url(url, &none).unwrap()),
        Some("sftp") => {
            std::sync::Arc::new(b::sftp::SftpBackend::from_url(url, &none).await.unwrap())
        }
        Some("ftp") => std::sync::Arc::new(b::ftp::FtpBackend::from_url(url, &none).await.unwrap()),
        other => panic!("no direct backend for {other:?}"),
    }
}

/// On every server: a pack cut to half its length on the server is caught
/// by `check --read-data` (naming it), is never restored as data (a
/// restore from that server alone names the files it could not restore and
/// every file it did restore is right), is read around from local disk by
/// `restore --from SERVER`, and is rewritten by `repair packs`.
#[test]
fn an_object_truncated_on_a_server_is_never_taken_as_valid() {
    use cairn::backends::{Handle, Kind, PutMode};
    let rt = tokio::runtime::Runtime::new().unwrap();
    for var in [
        "CAIRN_TEST_REPO_S3",
        "CAIRN_TEST_REPO_AZURE",
        "CAIRN_TEST_REPO_GCS",
        "CAIRN_TEST_REPO_SFTP",
        "CAIRN_TEST_REPO_FTP",
    ] {
        let Some(base) = server(var) else { continue };
        let env = Env::new();
        let src = env.path("src");
        make_tree(&src, 3 << 20);
        let local = env.path("local");
        let url = fresh(&base, "truncated");
        let repos = [local.as_path(), Path::new(&url)];
        env.cairn(&repos)
            .args(["init", "--pack-size-mib", "1", "--kdf-memory-kib", "8192"])
            .args(["--kdf-iterations", "1"])
            .assert()
            .success();
        let (code, sum) = env.backup_json(&repos, &[src.as_os_str()]);
        assert_eq!(code, 0, "{var}: {sum}");

        // The largest pack holds file data; cut it in half on the server.
        let pack = packs(&local)
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let name = pack.file_name().unwrap().to_str().unwrap().to_string();
        let h = Handle::new(Kind::Pack, &name);
        rt.block_on(async {
            let b = open_direct(&url).await;
            let data = b.get(&h, None).await.unwrap();
            b.put(&h, data.slice(..data.len() / 2), PutMode::Overwrite)
                .await
                .unwrap();
        });

        let out = env
            .cairn(&repos)
            .args(["check", "--read-data", "--json"])
            .output()
            .unwrap();
        let report = last_json(&out.stdout);
        assert_eq!(out.status.code(), Some(5), "{var}: {report}");
        assert!(
            report["replicas"][1]["errors"].to_string().contains(&name),
            "{var}: check does not name {name}: {report}"
        );
        assert_eq!(
            report["replicas"][0]["errors"].as_array().map(Vec::len),
            Some(0),
            "{var}: {report}"
        );

        // The server alone: what it cannot give is named, the rest is right.
        let target = env.path("alone");
        let out = env
            .cairn(&[Path::new(&url)])
            .args(["restore", "latest", "--verify", "--target"])
            .arg(&target)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{var}: {stderr}");
        let broken = compare_restore(&src, &target, &stderr);
        assert!(!broken.is_empty(), "{var}: nothing named: {stderr}");

        // With local disk as the other replica, everything comes back.
        let target = env.path("both");
        let out = env
            .cairn(&repos)
            .args(["restore", "latest", "--verify", "--json", "--from", &url])
            .arg("--target")
            .arg(&target)
            .output()
            .unwrap();
        let summary = last_json(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{var}: {summary}");
        assert_same_tree(&src, &restored(&target, &src));
        assert!(
            summary["fallbacks"].to_string().contains(&name),
            "{var}: {summary}"
        );

        env.cairn(&repos)
            .args(["repair", "packs", "--read-data", "--backend", &url])
            .assert()
            .success();
        env.cairn(&repos)
            .args(["check", "--read-data"])
            .assert()
            .success();
    }
}

/// Credentials by reference in `cairn.toml`: the S3 key id from a variable
/// of the user's choosing, the secret from a file, nothing in the standard
/// AWS variables. A missing variable is a usage error naming it; a wrong
/// secret in the file is refused and never printed.
#[test]
fn config_takes_credentials_from_named_variables_and_files() {
    let Some(base) = server("CAIRN_TEST_REPO_S3") else {
        return;
    };
    let id = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    let env = Env::new();
    let secret_file = env.path("s3.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let url = fresh(&base, "by-reference");
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[backends.offsite]\nurl = \"{url}\"\n\
             access_key_id = {{ env = \"OFFSITE_KEY_ID\" }}\n\
             secret_access_key = {{ file = \"{}\" }}\n",
            secret_file.display()
        ),
    )
    .unwrap();
    env.set_var("AWS_ACCESS_KEY_ID", None);
    env.set_var("AWS_SECRET_ACCESS_KEY", None);
    env.set_var("OFFSITE_KEY_ID", Some(id.as_ref()));
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    let with_config = || env.cairn_with_config(&config);
    with_config()
        .args(["init", "--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
        .assert()
        .success();
    with_config().arg("backup").arg(&src).assert().success();
    let out = with_config()
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert_eq!(last_json(&out.stdout).as_array().unwrap().len(), 1);

    env.set_var("OFFSITE_KEY_ID", None);
    let out = with_config().arg("snapshots").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("access_key_id") && err.contains("OFFSITE_KEY_ID is not set"),
        "{err}"
    );

    env.set_var("OFFSITE_KEY_ID", Some(id.as_ref()));
    let wrong = "wrong-secret-in-the-file-0123456789abcdef";
    std::fs::write(&secret_file, wrong).unwrap();
    let out = with_config()
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(6), "{text}");
    assert!(text.contains("unauthenticated"), "{text}");
    assert!(
        !text.contains(wrong) && !text.contains(&secret),
        "a secret was printed: {text}"
    );
}

/// A minimal HTTP/1.1 server on loopback for credential endpoints: every
/// request is answered by `answer(method, path, headers)` (status, body),
/// and recorded. One request per connection.
struct CredentialServer {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
}

/// Method, path and headers (names in lower case) of one request.
type Request = (String, String, Vec<(String, String)>);

impl CredentialServer {
    fn start(
        answer: impl Fn(&str, &str, &[(String, String)]) -> (u16, String) + Send + 'static,
    ) -> CredentialServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_string();
                let path = parts.next().unwrap_or_default().to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let (status, body) = answer(&method, &path, &headers);
                log.lock().unwrap().push((method, path, headers));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        CredentialServer { port, seen }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

/// The temporary credentials `scripts/test-servers` made (an assumed
/// role), as the JSON an instance or container credentials endpoint sends.
fn session_credentials_json() -> Option<String> {
    let id = server("CAIRN_TEST_S3_SESSION_KEY_ID")?;
    let secret = std::env::var("CAIRN_TEST_S3_SESSION_SECRET").unwrap();
    let token = std::env::var("CAIRN_TEST_S3_SESSION_TOKEN").unwrap();
    let expiration = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    Some(
        serde_json::json!({
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": id,
            "SecretAccessKey": secret,
            "Token": token,
            "Expiration": expiration.to_string(),
        })
        .to_string(),
    )
}

/// Init, back up, list and restore through `config`, with no AWS key in
/// the environment.
fn s3_round_trip_with_config(env: &Env, config: &Path) {
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        env.set_var(var, None);
    }
    let with_config = || env.cairn_with_config(config);
    let src = env.path("src");
    make_tree(&src, 1 << 20);
    with_config()
        .args(["init", "--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
        .assert()
        .success();
    with_config().arg("backup").arg(&src).assert().success();
    let target = env.path("restore");
    with_config()
        .args(["restore", "latest", "--verify", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&target, &src));
}

/// S3 credentials from the EC2 instance metadata service (IMDSv2: a
/// session token first, then the role's credentials with it), pointed at a
/// local endpoint with the `metadata_endpoint` option.
#[test]
fn s3_credentials_from_the_instance_metadata_service() {
    let (Some(base), Some(creds)) = (server("CAIRN_TEST_REPO_S3"), session_credentials_json())
    else {
        return;
    };
    const ROLE: &str = "cairn-role";
    const IMDS_TOKEN: &str = "imds-session-token-for-the-test";
    let imds = CredentialServer::start(move |method, path, headers| {
        let has = |k: &str, v: &str| headers.iter().any(|(hk, hv)| hk == k && hv == v);
        match (method, path) {
            ("PUT", "/latest/api/token")
                if headers
                    .iter()
                    .any(|(k, _)| k == "x-aws-ec2-metadata-token-ttl-seconds") =>
            {
                (200, IMDS_TOKEN.to_string())
            }
            (_, _) if !has("x-aws-ec2-metadata-token", IMDS_TOKEN) => (401, String::new()),
            ("GET", "/latest/meta-data/iam/security-credentials/") => (200, ROLE.to_string()),
            ("GET", p) if p == format!("/latest/meta-data/iam/security-credentials/{ROLE}") => {
                (200, creds.clone())
            }
            _ => (404, String::new()),
        }
    });
    let env = Env::new();
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[backends.ec2]\nurl = \"{}\"\nmetadata_endpoint = \"http://127.0.0.1:{}\"\n",
            fresh(&base, "imds"),
            imds.port
        ),
    )
    .unwrap();
    s3_round_trip_with_config(&env, &config);
    let asked = imds.requests();
    assert!(
        asked
            .iter()
            .any(|(m, p, _)| m == "PUT" && p == "/latest/api/token"),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|(_, p, _)| p.ends_with(ROLE)),
        "the role's credentials were never fetched: {asked:?}"
    );
}

/// S3 credentials from a container credentials endpoint (EKS Pod Identity:
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` with the bearer token in
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`; ECS task roles use the same
/// answer). A wrong token gets no credentials and cairn says so.
#[test]
fn s3_credentials_from_a_container_credentials_endpoint() {
    let (Some(base), Some(creds)) = (server("CAIRN_TEST_REPO_S3"), session_credentials_json())
    else {
        return;
    };
    const BEARER: &str = "pod-identity-token-for-the-test";
    let endpoint = CredentialServer::start(move |_, path, headers| {
        let authorized = headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == BEARER);
        match path {
            "/v1/credentials" if authorized => (200, creds.clone()),
            "/v1/credentials" => (403, "{\"Message\":\"bad token\"}".into()),
            _ => (404, String::new()),
        }
    });
    let env = Env::new();
    let token_file = env.path("pod-token");
    std::fs::write(&token_file, BEARER).unwrap();
    env.set_var(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        Some(format!("http://127.0.0.1:{}/v1/credentials", endpoint.port).as_ref()),
    );
    env.set_var(
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        Some(token_file.as_os_str()),
    );
    let config = env.path("cairn.toml");
    let url = fresh(&base, "pod");
    std::fs::write(&config, format!("[backends.pod]\nurl = \"{url}\"\n")).unwrap();
    s3_round_trip_with_config(&env, &config);
    assert!(!endpoint.requests().is_empty());

    // A token written with a trailing newline is refused with a message
    // (object_store would panic building the request header).
    std::fs::write(&token_file, format!("{BEARER}\n")).unwrap();
    let out = env
        .cairn_with_config(&config)
        .arg("snapshots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("trailing newline") && !err.contains("panicked"),
        "{err}"
    );

    std::fs::write(&token_file, "not-the-token").unwrap();
    let out = env
        .cairn_with_config(&config)
        .arg("snapshots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        !err.contains(BEARER) && !err.contains("not-the-token"),
        "{err}"
    );
}

/// Retention over local disk, S3 and SFTP, each with its own policy, the
/// SFTP replica having missed two days: `forget --prune` judges every
/// policy over the union, copies what SFTP lacks, and leaves each replica
/// with exactly what its policy keeps, pruned, checked and restorable.
#[test]
fn retention_across_local_s3_and_sftp() {
    let (Some(s3), Some(sftp)) = (server("CAIRN_TEST_REPO_S3"), server("CAIRN_TEST_REPO_SFTP"))
    else {
        return;
    };
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let local = env.path("local").display().to_string();
    let (s3, sftp) = (fresh(&s3, "retention"), fresh(&sftp, "retention"));
    let all: Vec<&Path> = [&local, &s3, &sftp]
        .iter()
        .map(|u| Path::new(u.as_str()))
        .collect();
    env.init(&all);
    for day in 1..=10u64 {
        std::fs::write(src.join("day"), noise(day, 200 << 10)).unwrap();
        std::fs::write(src.join("same"), noise(99, 300 << 10)).unwrap();
        let time = format!("2026-03-{day:02}T03:00:00Z");
        let repos = if day == 8 || day == 9 {
            &all[..2]
        } else {
            &all[..]
        };
        let (code, sum) =
            env.backup_json(repos, &["--time".as_ref(), time.as_ref(), src.as_os_str()]);
        assert_eq!(code, 0, "{sum}");
    }
    let cfg = env.path("cairn.toml");
    std::fs::write(
        &cfg,
        format!(
            "[backends.local]\nurl = \"{local}\"\n[backends.local.retention]\nkeep_last = 2\n\n\
             [backends.s3]\nurl = \"{s3}\"\n[backends.s3.retention]\nkeep_daily = 3\n\n\
             [backends.sftp]\nurl = \"{sftp}\"\n[backends.sftp.retention]\nkeep_weekly = 2\n"
        ),
    )
    .unwrap();
    let out = env
        .cairn_with_config(&cfg)
        .args([
            "--json",
            "forget",
            "--prune",
            "--grace",
            "0",
            "--timezone",
            "UTC",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pruned = last_json(&out.stdout);
    assert_eq!(pruned["type"], "prune", "{pruned}");
    let freed: u64 = pruned["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["freed_bytes"].as_u64().unwrap())
        .sum();
    assert!(freed > 0, "{pruned}");
    // local: days 9 and 10; s3: 8, 9, 10; sftp: the newest of ISO weeks 10
    // and 11 (days 8 — copied — and 10).
    for (repo, want) in [(all[0], 2), (all[1], 3), (all[2], 2)] {
        let out = env
            .cairn(&[repo])
            .args(["snapshots", "--json"])
            .output()
            .unwrap();
        let snaps = last_json(&out.stdout);
        assert_eq!(
            snaps.as_array().unwrap().len(),
            want,
            "{}: {snaps}",
            repo.display()
        );
        env.cairn(&[repo])
            .args(["check", "--read-data"])
            .assert()
            .success();
        let target = env.path(&format!(
            "restore-{want}-{}",
            repo.display().to_string().len()
        ));
        env.cairn(&[repo])
            .args(["restore", "latest", "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(&src, &restored(&target, &src));
    }
}

/// Key rotation on local disk, S3, Azure and SFTP at once: a slot is
/// added, a copy of `keys/` saved, the slot removed as compromised; the
/// data key rotated with re-encryption interrupted three times, and epoch
/// 1 retired. Then no pack name from before the rotation survives, every
/// replica holds the same pack names, `check --read-data` is clean
/// everywhere, every snapshot restores identically, the removed slot put
/// back from the saved copy opens nothing, and the audit log shows each
/// step on every replica.
#[test]
fn key_rotation_across_local_s3_azure_and_sftp() {
    let (Some(s3), Some(az), Some(sftp)) = (
        server("CAIRN_TEST_REPO_S3"),
        server("CAIRN_TEST_REPO_AZURE"),
        server("CAIRN_TEST_REPO_SFTP"),
    ) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = Env::new();
    let local = env.path("local").display().to_string();
    let urls = [
        local.clone(),
        fresh(&s3, "rotation"),
        fresh(&az, "rotation"),
        fresh(&sftp, "rotation"),
    ];
    let all: Vec<&Path> = urls.iter().map(|u| Path::new(u.as_str())).collect();
    let pack_names = |url: &str| -> Vec<String> {
        rt.block_on(async {
            let b = if url.contains("://") {
                open_direct(url).await
            } else {
                std::sync::Arc::new(cairn::backends::local::LocalBackend::new(url))
            };
            let mut v: Vec<String> = b
                .list(cairn::backends::Kind::Pack)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.handle.name)
                .collect();
            v.sort();
            v
        })
    };
    env.cairn(&all)
        .args(["init", "--pack-size-mib", "1", "--kdf-memory-kib", "8192"])
        .args(["--kdf-iterations", "1"])
        .assert()
        .success();
    let src = env.path("src");
    make_tree(&src, 3 << 20);
    for i in 0..6u64 {
        std::fs::write(src.join(format!("blob{i}")), noise(60 + i, 900 << 10)).unwrap();
    }
    let (code, first) = env.backup_json(&all, &[src.as_os_str()]);
    assert_eq!(code, 0, "{first}");
    std::fs::write(src.join("blob0"), noise(99, 700 << 10)).unwrap();
    let (code, second) = env.backup_json(&all, &[src.as_os_str()]);
    assert_eq!(code, 0, "{second}");
    // Each snapshot as restored before the rotation: what every restore
    // after it must reproduce.
    let mut refs = Vec::new();
    for (k, sum) in [&first, &second].into_iter().enumerate() {
        let target = env.path(&format!("ref-{k}"));
        env.cairn(&all[..1])
            .args(["restore", sum["snapshot"].as_str().unwrap(), "--target"])
            .arg(&target)
            .assert()
            .success();
        refs.push(restored(&target, &src));
    }

    // Bob's slot, a saved copy of keys/, then Bob removed as compromised.
    let pf = env.path("bob");
    std::fs::write(&pf, "bob's passphrase\n").unwrap();
    let out = env
        .cairn(&all)
        .args([
            "--json",
            "key",
            "add",
            "--label",
            "bob",
            "--new-password-file",
        ])
        .arg(&pf)
        .args(["--kdf-memory-kib", "8192", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bob = last_json(&out.stdout)["id"].as_str().unwrap().to_string();
    let saved = env.path("saved-keys");
    copy_dir(&Path::new(&local).join("keys"), &saved);
    env.cairn(&all)
        .args(["key", "remove", &bob])
        .assert()
        .success();
    let before: Vec<String> = pack_names(&local);
    assert!(before.len() >= 6, "{before:?}");

    // Rotate; re-encryption killed three times after a checkpoint, then
    // run to the end.
    env.cairn(&all).args(["key", "rotate"]).assert().success();
    for _ in 0..3 {
        let mut c = env.cairn(&all);
        c.args(["key", "reencrypt", "--batch", "1"]);
        kill_when_stderr_says(&c, "reencrypt: ");
        for r in &all {
            env.cairn(&[r]).arg("check").assert().success();
        }
    }
    let out = env
        .cairn(&all)
        .args(["--json", "key", "reencrypt"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let re = last_json(&out.stdout);
    assert_eq!(re["reencrypt"]["complete"], true, "{re}");
    env.cairn(&all)
        .args(["key", "retire", "1"])
        .assert()
        .success();

    let names: Vec<Vec<String>> = urls.iter().map(|u| pack_names(u)).collect();
    for (u, n) in urls.iter().zip(&names) {
        assert_eq!(n, &names[0], "{u} holds other packs than {}", urls[0]);
        assert!(
            n.iter().all(|p| !before.contains(p)),
            "{u}: a pack from before the rotation"
        );
    }
    // Snapshot ids changed with re-encryption: they are taken in order.
    let out = env
        .cairn(&all)
        .args(["--json", "snapshots"])
        .output()
        .unwrap();
    let snaps = last_json(&out.stdout);
    let ids: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{snaps}");
    for (i, r) in all.iter().enumerate() {
        env.cairn(&[r])
            .args(["check", "--read-data"])
            .assert()
            .success();
        for (k, id) in ids.iter().enumerate() {
            let target = env.path(&format!("restore-{i}-{k}"));
            env.cairn(&[r])
                .args(["restore", id, "--target"])
                .arg(&target)
                .assert()
                .success();
            assert_same_tree(&refs[k], &restored(&target, &src));
        }
    }

    // Bob's slot, put back from the saved copy, opens nothing.
    copy_dir(&saved, &Path::new(&local).join("keys"));
    for repos in [vec![all[0]], all.clone()] {
        let out = env
            .cairn(&repos)
            .env("CAIRN_PASSWORD", "bob's passphrase")
            .arg("snapshots")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(12),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = env
        .cairn(&all)
        .args(["--json", "key", "audit"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_audit_steps(
        &last_json(&out.stdout),
        &[
            "key add",
            "key remove",
            "key rotate epoch 2",
            "key reencrypt start",
            "key reencrypt progress",
            "key reencrypt finish",
            "key retire epoch 1",
        ],
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}
