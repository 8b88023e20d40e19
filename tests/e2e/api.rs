//! `cairn serve`: every route of the API against every role (401, 403,
//! 2xx), downloads (ranges, tar and zip archives that open), bad input
//! (path traversal, a token in the query, a huge or malformed body, a
//! restore outside `restore_roots`), tasks followed to their end and
//! recorded with the token's label, server-sent events, TLS, reads while
//! a backup runs, and no token in the server's log. Its server and
//! setup are shared with the dashboard's tests (browser.rs).

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

pub(crate) const VIEWER: &str = "viewer-token-0123456789abcdef";
pub(crate) const OPERATOR: &str = "operator-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";
const TOKENS: [&str; 3] = [VIEWER, OPERATOR, ADMIN];

/// A running `cairn serve`, its log collected.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub(crate) fn start(env: &Env, config: &Path, extra: &[&str]) -> Server {
        let mut c = std_command(&env.cairn_with_config(config));
        c.args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let started = Instant::now();
        let base = loop {
            let text = log.lock().unwrap().clone();
            if let Some(at) = text.find("serving the API on ") {
                let rest = &text[at + "serving the API on ".len()..];
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .trim_end_matches("/api/v1")
                    .to_string();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("cairn serve exited ({status}):\n{text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "cairn serve did not listen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Server { child, base, log }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two local replicas with a snapshot of `src`, three tokens, a restore
/// root, a retention policy and one job; the config file's path.
pub(crate) fn setup(env: &Env) -> PathBuf {
    let (r1, r2) = (env.path("r1"), env.path("r2"));
    env.init(&[&r1, &r2]);
    let src = env.path("src");
    make_tree(&src, 2_000_000);
    std::fs::create_dir_all(env.path("restores")).unwrap();
    let mut tokens = String::new();
    for (label, role, secret) in [
        ("ui", "viewer", VIEWER),
        ("ci", "operator", OPERATOR),
        ("root", "admin", ADMIN),
    ] {
        let f = env.path(&format!("{label}.token"));
        std::fs::write(&f, format!("{secret}\n")).unwrap();
        tokens.push_str(&format!(
            "[[api.tokens]]\nlabel = \"{label}\"\nrole = \"{role}\"\ntoken = {{ file = \"{}\" }}\n",
            f.display()
        ));
    }
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[backends.one]\nurl = \"{}\"\n[backends.two]\nurl = \"{}\"\n\
             [retention]\nkeep_last = 10\n\
             [daemon]\nhistory = \"{}\"\n\
             [jobs.nightly]\nbackup = [\"{}\"]\n\
             [api]\nrestore_roots = [\"{}\"]\n{tokens}",
            r1.display(),
            r2.display(),
            env.path("history.sqlite").display(),
            src.display(),
            env.path("restores").display(),
        ),
    )
    .unwrap();
    let out = env
        .cairn_with_config(&config)
        .arg("backup")
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    config
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A client whose connections come from 127.0.0.`n`: failed logins are
/// counted per address, and each test of them gets its own.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, n]))
        .build()
        .unwrap()
}

/// The path, in the snapshot, of `p` under the source.
pub(crate) fn snap_path(env: &Env, p: &str) -> String {
    format!("{}/{p}", env.path("src").display())
}

/// GET with a token: status, headers and body.
async fn get(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let (code, h) = (resp.status().as_u16(), resp.headers().clone());
    (code, h, resp.bytes().await.unwrap().to_vec())
}

async fn json_of(c: &reqwest::Client, url: &str, token: &str) -> Value {
    let (code, _, body) = get(c, url, Some(token), &[]).await;
    assert_eq!(code, 200, "{url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// A task followed until it ends.
async fn follow(c: &reqwest::Client, server: &Server, id: u64) -> Value {
    let started = Instant::now();
    loop {
        let t = json_of(c, &server.url(&format!("/api/v1/jobs/{id}")), VIEWER).await;
        if t["state"] == "done" || t["state"] == "failed" {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "task {id} did not end: {t}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The routes with the least role each needs, and a body for POSTs.
fn routes(env: &Env) -> Vec<(&'static str, String, Option<Value>, &'static str)> {
    let file = snap_path(env, "docs/readme.txt");
    let dir = snap_path(env, "docs");
    vec![
        ("GET", "/api/v1/snapshots".into(), None, "viewer"),
        ("GET", "/api/v1/snapshots/latest".into(), None, "viewer"),
        (
            "GET",
            format!("/api/v1/snapshots/latest/tree?path={dir}"),
            None,
            "viewer",
        ),
        (
            "GET",
            format!("/api/v1/snapshots/latest/file?path={file}"),
            None,
            "viewer",
        ),
        (
            "GET",
            format!("/api/v1/snapshots/latest/archive?path={dir}&format=zip"),
            None,
            "viewer",
        ),
        (
            "POST",
            "/api/v1/downloads".into(),
            Some(json!({"snapshot": "latest", "path": file})),
            "viewer",
        ),
        ("GET", "/api/v1/status".into(), None, "viewer"),
        ("GET", "/api/v1/jobs".into(), None, "viewer"),
        ("GET", "/api/v1/history".into(), None, "viewer"),
        ("POST", "/api/v1/forget".into(), Some(json!({})), "viewer"),
        ("POST", "/api/v1/jobs/nightly/run".into(), None, "operator"),
        (
            "POST",
            "/api/v1/jobs/backup".into(),
            Some(json!({"paths": [env.path("src").join("docs")]})),
            "operator",
        ),
        (
            "POST",
            "/api/v1/restore".into(),
            Some(
                json!({"snapshot": "latest", "path": dir, "target": env.path("restores/by-role")}),
            ),
            "operator",
        ),
        ("POST", "/api/v1/check".into(), Some(json!({})), "operator"),
        (
            "POST",
            "/api/v1/forget".into(),
            Some(json!({"dry_run": false})),
            "admin",
        ),
    ]
}

/// The first file named `name` under `dir`.
pub(crate) fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() && !p.is_symlink() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

fn rank(role: &str) -> usize {
    ["viewer", "operator", "admin"]
        .iter()
        .position(|r| *r == role)
        .unwrap()
}

async fn call(
    c: &reqwest::Client,
    server: &Server,
    method: &str,
    path: &str,
    body: &Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut r = match method {
        "GET" => c.get(server.url(path)),
        _ => c.post(server.url(path)),
    };
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[test]
fn every_route_answers_each_role_as_it_should_and_mutations_are_recorded_with_the_label() {
    let env = Env::new();
    let config = setup(&env);
    let server = Server::start(&env, &config, &[]);
    rt().block_on(async {
        let mut n = 10u8;
        let mut tasks = Vec::new();
        for (method, path, body, least) in routes(&env) {
            // No token, and a wrong one: 401, from an address of its own
            // (failed attempts are rate-limited per address).
            n += 1;
            let c = client_from(n);
            let (code, v) = call(&c, &server, method, &path, &body, None).await;
            assert_eq!(code, 401, "{method} {path} without a token: {v}");
            let (code, _) = call(
                &c,
                &server,
                method,
                &path,
                &body,
                Some("not-a-token-0123456789"),
            )
            .await;
            assert_eq!(code, 401, "{method} {path} with a wrong token");
            let c = reqwest::Client::new();
            for (i, token) in TOKENS.iter().enumerate() {
                // Each restore into a directory of its own.
                let mut body = body.clone();
                if let Some(b) = body.as_mut().filter(|b| b.get("target").is_some()) {
                    b["target"] = json!(env.path(&format!("restores/by-role-{i}")));
                }
                let (code, v) = call(&c, &server, method, &path, &body, Some(token)).await;
                if i < rank(least) {
                    assert_eq!(code, 403, "{method} {path} as {token}: {v}");
                    assert!(v["error"].as_str().unwrap().contains(least), "{v}");
                } else {
                    assert!(
                        code == 200 || code == 201 || code == 202,
                        "{method} {path} as {token}: {code} {v}\n{}",
                        server.log()
                    );
                    if code == 202 {
                        tasks.push((v["id"].as_u64().unwrap(), *token));
                    }
                }
            }
        }
        let c = reqwest::Client::new();
        let labels = |t: &str| match t {
            OPERATOR => "ci",
            ADMIN => "root",
            _ => "ui",
        };
        for (id, token) in &tasks {
            let t = follow(&c, &server, *id).await;
            assert_eq!(t["state"], "done", "{t}\n{}", server.log());
            assert_eq!(t["actor"], labels(token));
        }
        // Every mutation is in the run history, with its token's label.
        let history = json_of(&c, &server.url("/api/v1/history?limit=100"), VIEWER).await;
        let runs = history.as_array().unwrap();
        assert_eq!(runs.len(), tasks.len(), "{history}");
        for job in [
            "nightly",
            "api-backup",
            "api-restore",
            "api-check",
            "api-forget",
        ] {
            let of_job: Vec<&Value> = runs.iter().filter(|r| r["job"] == job).collect();
            assert!(!of_job.is_empty(), "{job} not in {history}");
            assert!(
                of_job
                    .iter()
                    .all(|r| r["actor"] == "ci" || r["actor"] == "root"),
                "{of_job:?}"
            );
            assert!(of_job.iter().all(|r| r["trigger"] == "api"), "{of_job:?}");
        }
        // The operator's restore wrote the snapshot's files.
        let restored =
            find_file(&env.path("restores/by-role-1"), "readme.txt").expect("readme.txt restored");
        assert_eq!(
            std::fs::read(&restored).unwrap(),
            std::fs::read(env.path("src/docs/readme.txt")).unwrap()
        );
        // Too many failed attempts from one address: 429, even with a
        // good token, until the minute is over.
        let c = client_from(200);
        for _ in 0..10 {
            let (code, _, _) = get(
                &c,
                &server.url("/api/v1/snapshots"),
                Some("wrong-token-0123456789"),
                &[],
            )
            .await;
            assert_eq!(code, 401);
        }
        let (code, h, _) = get(&c, &server.url("/api/v1/snapshots"), Some(VIEWER), &[]).await;
        assert_eq!(code, 429);
        assert!(h.contains_key("retry-after"));
        let (code, _, _) = get(
            &client_from(201),
            &server.url("/api/v1/snapshots"),
            Some(VIEWER),
            &[],
        )
        .await;
        assert_eq!(code, 200);
    });
    let log = server.log();
    for t in TOKENS {
        assert!(!log.contains(t), "a token is in the server's log:\n{log}");
    }
    assert!(log.contains("refused a request"), "{log}");
}

/// `tar` or `unzip` on an archive of `format`: `list` tests and lists it,
/// `extract` extracts it into `out`.
fn archive_tool(format: &str, what: &str, file: &Path, out: &Path) -> std::process::Output {
    let mut c = std::process::Command::new(if format == "tar" { "tar" } else { "unzip" });
    match (format, what) {
        ("tar", "list") => c.arg("-tf").arg(file),
        ("tar", _) => c.arg("-xf").arg(file).arg("-C").arg(out),
        (_, "list") => c.arg("-t").arg(file),
        _ => c.arg("-q").arg(file).arg("-d").arg(out),
    };
    c.output().unwrap()
}

#[test]
fn files_ranges_and_archives() {
    let env = Env::new();
    let config = setup(&env);
    let server = Server::start(&env, &config, &[]);
    let c = reqwest::Client::new();
    rt().block_on(async {
        let snaps = json_of(&c, &server.url("/api/v1/snapshots"), VIEWER).await;
        let s = &snaps[0];
        assert_eq!(s["replicas"], json!(["one", "two"]), "{s}");
        assert_eq!(s["missing"], json!([]));
        let one = json_of(
            &c,
            &server.url(&format!(
                "/api/v1/snapshots/{}",
                &s["id"].as_str().unwrap()[..8]
            )),
            VIEWER,
        )
        .await;
        assert_eq!(one["id"], s["id"]);
        let tree = json_of(
            &c,
            &server.url(&format!(
                "/api/v1/snapshots/latest/tree?path={}",
                snap_path(&env, "docs")
            )),
            VIEWER,
        )
        .await;
        let names: Vec<&str> = tree["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"readme.txt") && names.contains(&"nested"),
            "{tree}"
        );

        let want = std::fs::read(env.path("src/big.bin")).unwrap();
        let url = server.url(&format!(
            "/api/v1/snapshots/latest/file?path={}",
            snap_path(&env, "big.bin")
        ));
        let (code, h, body) = get(&c, &url, Some(VIEWER), &[]).await;
        assert_eq!(code, 200);
        assert_eq!(h["accept-ranges"], "bytes");
        assert_eq!(body, want);
        let (code, h, body) = get(
            &c,
            &url,
            Some(VIEWER),
            &[("range", "bytes=1000000-1000099")],
        )
        .await;
        assert_eq!(code, 206);
        assert_eq!(
            h["content-range"],
            format!("bytes 1000000-1000099/{}", want.len())
        );
        assert_eq!(body, want[1_000_000..1_000_100]);
        let (code, _, body) = get(&c, &url, Some(VIEWER), &[("range", "bytes=-10")]).await;
        assert_eq!(code, 206);
        assert_eq!(body, want[want.len() - 10..]);
        let (code, h, _) = get(
            &c,
            &url,
            Some(VIEWER),
            &[("range", &format!("bytes={}-", want.len()))],
        )
        .await;
        assert_eq!(code, 416);
        assert_eq!(h["content-range"], format!("bytes */{}", want.len()));

        // A name that is not UTF-8 is listed with its bytes in hex, and
        // downloaded by them.
        let top = json_of(
            &c,
            &server.url(&format!(
                "/api/v1/snapshots/latest/tree?path={}",
                env.path("src").display()
            )),
            VIEWER,
        )
        .await;
        let odd = top["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"].as_str().unwrap().starts_with("non-utf8-"))
            .unwrap_or_else(|| panic!("{top}"));
        assert!(odd["path"].is_null(), "{odd}");
        let hex = odd["path_hex"].as_str().unwrap();
        let url = server.url(&format!("/api/v1/snapshots/latest/file?path_hex={hex}"));
        let (code, _, body) = get(&c, &url, Some(VIEWER), &[]).await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, b"odd name");
        let hex_of = |p: &[u8]| p.iter().map(|b| format!("{b:02x}")).collect::<String>();
        for bad in [
            format!("path_hex={hex}&path=/x"),
            "path_hex=zz".to_string(),
            format!("path_hex={}", hex_of(b"/a/../\xff")),
            format!("path_hex={}", hex_of(b"relative/\xff")),
        ] {
            let url = server.url(&format!("/api/v1/snapshots/latest/file?{bad}"));
            assert_eq!(get(&c, &url, Some(VIEWER), &[]).await.0, 400, "{bad}");
        }

        for format in ["tar", "zip"] {
            let url = server.url(&format!(
                "/api/v1/snapshots/latest/archive?path={}&format={format}",
                snap_path(&env, "docs")
            ));
            let (code, h, body) = get(&c, &url, Some(VIEWER), &[]).await;
            assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
            assert!(h["content-disposition"]
                .to_str()
                .unwrap()
                .contains(&format!(".{format}")));
            let file = env.path(&format!("docs.{format}"));
            std::fs::write(&file, &body).unwrap();
            let out_dir = env.path(&format!("out-{format}"));
            std::fs::create_dir_all(&out_dir).unwrap();
            let list = archive_tool(format, "list", &file, &out_dir);
            let extract = archive_tool(format, "extract", &file, &out_dir);
            assert!(list.status.success(), "{format}: {list:?}");
            assert!(extract.status.success(), "{format}: {extract:?}");
            let listing = String::from_utf8_lossy(&list.stdout);
            assert!(listing.contains("docs/nested/deeper/small"), "{listing}");
            for f in [
                "readme.txt",
                "nested/random.bin",
                "compressible.txt",
                "run.sh",
                "nested/deeper/small",
            ] {
                assert_eq!(
                    std::fs::read(out_dir.join("docs").join(f)).unwrap(),
                    std::fs::read(env.path("src/docs").join(f)).unwrap(),
                    "{format}: {f}"
                );
            }
        }
        // Names that are not UTF-8 are in an archive with their bytes;
        // the directory asked for by its path in hex.
        let src_hex = hex_of(env.path("src").as_os_str().as_bytes());
        for format in ["tar", "zip"] {
            let url = server.url(&format!(
                "/api/v1/snapshots/latest/archive?path_hex={src_hex}&format={format}"
            ));
            let (code, _, body) = get(&c, &url, Some(VIEWER), &[]).await;
            assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
            let file = env.path(&format!("src.{format}"));
            std::fs::write(&file, &body).unwrap();
            let out_dir = env.path(&format!("src-{format}"));
            std::fs::create_dir_all(&out_dir).unwrap();
            let extract = archive_tool(format, "extract", &file, &out_dir);
            assert!(extract.status.success(), "{format}: {extract:?}");
            let got = out_dir.join("src");
            let odd = b"src/non-utf8-\xff\xfe";
            let stored = body.windows(odd.len()).filter(|w| w == odd).count();
            if format == "tar" {
                assert_eq!(stored, 1, "the ustar name field");
                assert_eq!(
                    std::fs::read(got.join(std::ffi::OsStr::from_bytes(&odd[4..]))).unwrap(),
                    b"odd name"
                );
            } else {
                // Local header and central directory. Debian's unzip 6.0
                // drops bytes of such a name when it writes the file (it
                // does so with Info-ZIP zip's own archives too), so only
                // the content is compared.
                assert_eq!(stored, 2, "zip names");
                let found = std::fs::read_dir(&got)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .find(|n| n.as_bytes().starts_with(b"non-utf8-"))
                    .expect("the file is extracted");
                assert_eq!(std::fs::read(got.join(found)).unwrap(), b"odd name");
            }
            assert_eq!(
                std::fs::read(got.join("big.bin")).unwrap(),
                std::fs::read(env.path("src/big.bin")).unwrap(),
                "{format}"
            );
            assert_eq!(
                std::fs::read_link(got.join("dangling-link")).unwrap(),
                std::path::Path::new("/nonexistent/target"),
                "{format}"
            );
        }
        // A file is not an archive, a directory is not a file.
        let (code, _, _) = get(
            &c,
            &server.url(&format!(
                "/api/v1/snapshots/latest/archive?path={}",
                snap_path(&env, "big.bin")
            )),
            Some(VIEWER),
            &[],
        )
        .await;
        assert_eq!(code, 400);
        let (code, _, _) = get(
            &c,
            &server.url(&format!(
                "/api/v1/snapshots/latest/file?path={}",
                snap_path(&env, "docs")
            )),
            Some(VIEWER),
            &[],
        )
        .await;
        assert_eq!(code, 400);
    });
}

#[test]
fn a_download_ticket_works_once_without_a_token() {
    let env = Env::new();
    let config = setup(&env);
    let server = Server::start(&env, &config, &[]);
    let c = reqwest::Client::new();
    let big = std::fs::read(env.path("src/big.bin")).unwrap();
    rt().block_on(async {
        let ask = |body: Value, token: Option<&'static str>| {
            let (c, url) = (c.clone(), server.url("/api/v1/downloads"));
            async move {
                let mut r = c.post(url).json(&body);
                if let Some(t) = token {
                    r = r.bearer_auth(t);
                }
                let resp = r.send().await.unwrap();
                let code = resp.status().as_u16();
                (code, resp.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let file = json!({"snapshot": "latest", "path": snap_path(&env, "big.bin")});
        assert_eq!(ask(file.clone(), None).await.0, 401);

        // A file: the URL works once, with no token.
        let (code, t) = ask(file.clone(), Some(VIEWER)).await;
        assert_eq!(code, 201, "{t}");
        assert_eq!(t["expires_in_seconds"], 60);
        let url = server.url(t["url"].as_str().unwrap());
        let ticket = url.rsplit('/').next().unwrap().to_string();
        // A probe does not use it up.
        let head = c.head(&url).send().await.unwrap();
        assert_eq!(head.status(), 405);
        assert_eq!(head.headers()["allow"], "GET");
        let (code, h, body) = get(&c, &url, None, &[]).await;
        assert_eq!(code, 200);
        assert!(body == big, "the ticket's bytes differ from the file");
        assert!(h["content-disposition"]
            .to_str()
            .unwrap()
            .contains("big.bin"));
        let (code, _, body) = get(&c, &url, None, &[]).await;
        assert_eq!(
            code,
            404,
            "a used ticket: {}",
            String::from_utf8_lossy(&body)
        );

        // A range of it.
        let (_, t) = ask(file.clone(), Some(VIEWER)).await;
        let url = server.url(t["url"].as_str().unwrap());
        let (code, _, body) = get(&c, &url, None, &[("range", "bytes=10-19")]).await;
        assert_eq!(code, 206);
        assert_eq!(body, big[10..20]);

        // A directory as a tar.
        let (code, t) = ask(
            json!({"snapshot": "latest", "path": snap_path(&env, "docs"), "format": "tar"}),
            Some(VIEWER),
        )
        .await;
        assert_eq!(code, 201, "{t}");
        let (code, h, body) = get(&c, &server.url(t["url"].as_str().unwrap()), None, &[]).await;
        assert_eq!(code, 200);
        assert_eq!(h["content-type"], "application/x-tar");
        let tar = env.path("ticket.tar");
        std::fs::write(&tar, &body).unwrap();
        let out = archive_tool("tar", "list", &tar, &tar);
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("docs/nested/deeper/small"));

        // What the download would refuse is refused when the ticket is
        // asked for, as JSON.
        for (body, want) in [
            (
                json!({"snapshot": "latest", "path": snap_path(&env, "docs")}),
                400,
            ),
            (
                json!({"snapshot": "latest", "path": snap_path(&env, "big.bin"), "format": "zip"}),
                400,
            ),
            (
                json!({"snapshot": "latest", "path": snap_path(&env, "nope")}),
                404,
            ),
            (json!({"snapshot": "latest", "path": "relative"}), 400),
            (json!({"snapshot": "zz", "path": "/"}), 400),
            (json!({"snapshot": "latest", "path": "/", "extra": 1}), 400),
        ] {
            let (code, v) = ask(body.clone(), Some(VIEWER)).await;
            assert_eq!(code, want, "{body}: {v}");
            assert!(v["error"].is_string(), "{body}: {v}");
        }
        // Not a ticket, not one made here.
        for bad in ["0".repeat(64), "..".into(), "x".repeat(500)] {
            let url = server.url(&format!("/api/v1/downloads/{bad}"));
            assert_eq!(get(&c, &url, None, &[]).await.0, 404, "{bad}");
        }
        // Guessing is limited per address as wrong tokens are: after ten
        // misses a minute, 429 with Retry-After, even for a good ticket.
        let (_, t) = ask(file.clone(), Some(VIEWER)).await;
        let good = server.url(t["url"].as_str().unwrap());
        let guesser = client_from(91);
        let bad = server.url(&format!("/api/v1/downloads/{}", "1".repeat(64)));
        let mut codes = Vec::new();
        for _ in 0..11 {
            codes.push(guesser.get(&bad).send().await.unwrap().status().as_u16());
        }
        assert_eq!(codes[..10], [404; 10]);
        assert_eq!(codes[10], 429);
        let r = guesser.get(&good).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert!(
            r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
        // Another address still gets its download with that ticket.
        assert_eq!(get(&c, &good, None, &[]).await.0, 200);
        let log = server.log();
        assert!(
            !log.contains(&ticket),
            "a ticket is in the server's log:\n{log}"
        );
    });
}

#[test]
fn traversal_query_tokens_bad_bodies_and_restores_outside_the_roots_are_refused() {
    let env = Env::new();
    let config = setup(&env);
    let server = Server::start(&env, &config, &[]);
    let c = reqwest::Client::new();
    let src = env.path("src").display().to_string();
    rt().block_on(async {
        for route in ["file", "tree", "archive"] {
            for bad in [
                format!("{src}/../../../etc/passwd"),
                format!("{src}/docs/..%2F..%2F..%2Fetc%2Fpasswd"),
                "..%2Fetc%2Fpasswd".into(),
                "etc/passwd".into(),
                "%2E%2E".into(),
                format!("{src}/./docs"),
                format!("{src}//docs"),
                format!("{src}/docs/readme.txt%00.png"),
                String::new(),
            ] {
                let url = server.url(&format!("/api/v1/snapshots/latest/{route}?path={bad}"));
                let (code, _, body) = get(&c, &url, Some(VIEWER), &[]).await;
                let text = String::from_utf8_lossy(&body);
                assert_eq!(code, 400, "{route} {bad}: {text}");
                assert!(!text.contains("root:"), "{text}");
            }
        }
        // An absolute path names the snapshot's own namespace: not there.
        let (code, _, _) = get(
            &c,
            &server.url("/api/v1/snapshots/latest/file?path=/etc/passwd"),
            Some(VIEWER),
            &[],
        )
        .await;
        assert_eq!(code, 404);
        // Slashes and dots in the snapshot id.
        for bad in ["..%2F..%2Fetc", "%2E%2E", "latest%2F..", "zz"] {
            let (code, _, _) = get(
                &c,
                &server.url(&format!("/api/v1/snapshots/{bad}")),
                Some(VIEWER),
                &[],
            )
            .await;
            assert!(code == 400 || code == 404, "{bad}: {code}");
        }
        // A token in the query string: refused, even beside a good header.
        for q in ["token", "access_token", "%74oken"] {
            let url = server.url(&format!("/api/v1/snapshots?{q}={VIEWER}"));
            let (code, _, body) = get(&c, &url, Some(VIEWER), &[]).await;
            assert_eq!(code, 400, "{q}");
            assert!(
                String::from_utf8_lossy(&body).contains("Authorization"),
                "{q}"
            );
        }
        // Bodies: too large, not JSON, not the right JSON.
        let post = |body: String| {
            c.post(server.url("/api/v1/jobs/backup"))
                .bearer_auth(OPERATOR)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        // The server answers 413 and closes the connection before reading
        // the whole body: that connection is not used again.
        let big = format!("{{\"paths\": [\"{}\"]}}", "a".repeat(200_000));
        let once = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let r = once
            .post(server.url("/api/v1/jobs/backup"))
            .bearer_auth(OPERATOR)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        for bad in [
            "{\"paths\": [",
            "not json",
            "{\"paths\": 3}",
            "{\"paths\": [\"/x\"], \"frobnicate\": 1}",
            "{\"paths\": [\"relative\"]}",
        ] {
            let r = post(bad.into()).await.unwrap();
            assert_eq!(r.status(), 400, "{bad}");
            let v: Value = r.json().await.unwrap();
            assert!(!v["error"].as_str().unwrap().is_empty(), "{bad}: {v}");
        }
        // Restores outside the roots.
        for target in [
            "/tmp/elsewhere".to_string(),
            env.path("outside").display().to_string(),
            format!("{}/../outside", env.path("restores").display()),
        ] {
            let (code, v) = call(
                &c,
                &server,
                "POST",
                "/api/v1/restore",
                &Some(json!({"snapshot": "latest", "target": target})),
                Some(OPERATOR),
            )
            .await;
            assert!(
                code == 403 || (code == 400 && target.contains("..")),
                "{target}: {code} {v}"
            );
        }
        std::os::unix::fs::symlink("/tmp", env.path("restores/escape")).unwrap();
        let (code, _) = call(
            &c,
            &server,
            "POST",
            "/api/v1/restore",
            &Some(json!({"snapshot": "latest", "target": env.path("restores/escape/x")})),
            Some(OPERATOR),
        )
        .await;
        assert_eq!(code, 403);
        assert!(!env.path("outside").exists());
    });
}

#[test]
fn events_stream_a_task_from_start_to_end() {
    let env = Env::new();
    let config = setup(&env);
    let server = Server::start(&env, &config, &[]);
    let c = reqwest::Client::new();
    rt().block_on(async {
        let mut events = c
            .get(server.url("/api/v1/events"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), 200);
        assert_eq!(events.headers()["content-type"], "text/event-stream");
        let (code, v) = call(&c, &server, "POST", "/api/v1/check", &None, Some(OPERATOR)).await;
        assert_eq!(code, 202, "{v}");
        let id = v["id"].as_u64().unwrap();
        let mut text = String::new();
        let started = Instant::now();
        while !text.contains("event: finished") {
            assert!(started.elapsed() < Duration::from_secs(120), "{text}");
            let chunk = tokio::time::timeout(Duration::from_secs(60), events.chunk())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.contains("event: started"), "{text}");
        assert!(text.contains(&format!("\"id\":{id}")), "{text}");
        let t = follow(&c, &server, id).await;
        assert_eq!(t["state"], "done");
        assert_eq!(t["report"]["status"], "success", "{t}");
    });
}

#[test]
fn reads_answer_while_a_backup_runs() {
    let env = Env::new();
    let config = setup(&env);
    let big = env.path("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..6 {
        std::fs::write(big.join(format!("f{i}")), noise(100 + i, 40_000_000)).unwrap();
    }
    let server = Server::start(&env, &config, &[]);
    let mut backup = std_command(&env.cairn_with_config(&config));
    backup
        .arg("backup")
        .arg(&big)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut backup = backup.spawn().unwrap();
    let c = reqwest::Client::new();
    let mut rounds = 0;
    rt().block_on(async {
        let started = Instant::now();
        loop {
            if backup.try_wait().unwrap().is_some() {
                break;
            }
            let calls = (0..50).map(|_| {
                let (c, url) = (c.clone(), server.url("/api/v1/snapshots"));
                async move { get(&c, &url, Some(VIEWER), &[]).await }
            });
            for (code, _, body) in futures::future::join_all(calls).await {
                let text = String::from_utf8_lossy(&body);
                assert_eq!(code, 200, "{text}");
                assert!(!text.contains("lock"), "{text}");
            }
            rounds += 1;
            if rounds >= 10 || started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
    });
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("lock"));
    // The new snapshot is seen once the server's listing (reused for two
    // seconds, docs/api.md) is made again.
    rt().block_on(async {
        let started = Instant::now();
        loop {
            let v = json_of(&c, &server.url("/api/v1/snapshots"), VIEWER).await;
            if v.as_array().unwrap().len() == 2 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{v}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    assert!(
        !server.log().to_lowercase().contains("lock"),
        "{}",
        server.log()
    );
    assert!(rounds >= 1);
}

#[test]
fn tls_and_the_loopback_rule() {
    let env = Env::new();
    let config = setup(&env);
    // Plain HTTP beyond loopback is refused before anything is opened.
    let out = env
        .cairn_with_config(&config)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-http"));
    // A private CA and a server certificate for 127.0.0.1 signed by it.
    let (ca, cert, key) = (
        env.path("ca.pem"),
        env.path("cert.pem"),
        env.path("key.pem"),
    );
    std::fs::write(
        env.path("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let sh = format!(
        "set -e; cd {d}; \
         openssl req -x509 {ec} -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem; \
         openssl req {ec} -subj /CN=localhost -keyout key.pem -out leaf.csr; \
         openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
           -extfile ext.cnf -out cert.pem",
        d = env.dir.path().display()
    );
    let ok = std::process::Command::new("sh")
        .args(["-c", &sh])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[api]\n",
        &format!(
            "[api]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&env, &config, &[]);
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    rt().block_on(async {
        let v = json_of(&c, &server.url("/api/v1/snapshots"), VIEWER).await;
        assert_eq!(v.as_array().unwrap().len(), 1);
        let plain = server
            .url("/api/v1/snapshots")
            .replace("https://", "http://");
        assert!(reqwest::Client::new()
            .get(plain)
            .bearer_auth(VIEWER)
            .send()
            .await
            .is_err());
    });
}

#[test]
fn the_openapi_document_names_every_route_and_every_route_in_it_is_served() {
    let env = Env::new();
    let config = setup(&env);
    let server = Server::start(&env, &config, &[]);
    rt().block_on(async {
        let c = reqwest::Client::new();
        let (code, _, body) = get(&c, &server.url("/api/v1/openapi.json"), None, &[]).await;
        assert_eq!(code, 200);
        let spec: Value = serde_json::from_slice(&body).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        for (method, path) in [
            ("get", "/api/v1/snapshots"),
            ("get", "/api/v1/snapshots/{id}"),
            ("get", "/api/v1/snapshots/{id}/tree"),
            ("get", "/api/v1/snapshots/{id}/file"),
            ("get", "/api/v1/snapshots/{id}/archive"),
            ("get", "/api/v1/status"),
            ("get", "/api/v1/jobs"),
            ("post", "/api/v1/jobs/{name}/run"),
            ("get", "/api/v1/history"),
            ("post", "/api/v1/jobs/backup"),
            ("post", "/api/v1/restore"),
            ("post", "/api/v1/check"),
            ("post", "/api/v1/forget"),
            ("get", "/api/v1/jobs/{id}"),
            ("get", "/api/v1/events"),
            ("post", "/api/v1/downloads"),
            ("get", "/api/v1/downloads/{ticket}"),
        ] {
            assert!(
                paths.get(path).and_then(|p| p.get(method)).is_some(),
                "{method} {path} not in the spec"
            );
        }
        // Every operation of the document is routed: without a token it
        // is refused (401), where an unknown route would be 404; the
        // download by ticket needs no token and says the ticket is unknown.
        let mut n = 50u8;
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                n += 1;
                let url = server.url(
                    &path
                        .replace("{id}", "1")
                        .replace("{name}", "nightly")
                        .replace("{ticket}", "00"),
                );
                let c = client_from(n);
                let r = match method.as_str() {
                    "get" => c.get(url),
                    "post" => c.post(url),
                    m => panic!("method {m}"),
                };
                let resp = r.send().await.unwrap();
                if path.contains("{ticket}") {
                    assert_eq!(resp.status(), 404, "{method} {path}");
                    let v: Value = resp.json().await.unwrap();
                    assert!(
                        v["error"].as_str().unwrap().contains("download ticket"),
                        "{v}"
                    );
                } else {
                    assert_eq!(resp.status(), 401, "{method} {path}");
                }
            }
        }
        let (code, _, _) = get(&c, &server.url("/api/v1/nope"), Some(VIEWER), &[]).await;
        assert_eq!(code, 404);
    });
}

#[test]
fn an_in_place_restore_over_the_api_previews_restores_and_rolls_back() {
    let env = Env::new();
    let config = setup(&env);
    // A directory under the restore root, backed up, then changed.
    let live = env.path("restores/live");
    std::fs::create_dir_all(live.join("sub")).unwrap();
    std::fs::write(live.join("a.txt"), "the snapshot's version\n").unwrap();
    std::fs::write(live.join("sub/big.bin"), noise(31, 3 << 20)).unwrap();
    let before_packs: Vec<PathBuf> = packs(&env.path("r1"))
        .into_iter()
        .chain(packs(&env.path("r2")))
        .collect();
    let out = env
        .cairn_with_config(&config)
        .arg("backup")
        .arg(&live)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let want = snapshot_of(&live);
    let change = || {
        std::fs::write(live.join("a.txt"), noise(99, 30_000)).unwrap();
        std::fs::write(live.join("new.txt"), "added after the snapshot\n").unwrap();
        std::fs::remove_file(live.join("sub/big.bin")).unwrap();
    };
    change();
    let changed = snapshot_of(&live);
    let server = Server::start(&env, &config, &[]);
    let c = reqwest::Client::new();
    let body = |extra: Value| {
        let mut b = json!({"snapshot": "latest", "path": live, "target": live, "in_place": true});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        Some(b)
    };
    rt().block_on(async {
        // delete and dry_run belong to an in-place restore.
        let (code, v) = call(
            &c,
            &server,
            "POST",
            "/api/v1/restore",
            &Some(json!({"snapshot": "latest", "target": live, "delete": true})),
            Some(OPERATOR),
        )
        .await;
        assert_eq!(code, 400, "{v}");
        // A viewer may not restore, even as a preview.
        let (code, _) = call(
            &c,
            &server,
            "POST",
            "/api/v1/restore",
            &body(json!({"dry_run": true})),
            Some(VIEWER),
        )
        .await;
        assert_eq!(code, 403);

        // The preview lists the changes and changes nothing.
        let (code, v) = call(
            &c,
            &server,
            "POST",
            "/api/v1/restore",
            &body(json!({"dry_run": true, "delete": true})),
            Some(OPERATOR),
        )
        .await;
        assert_eq!(code, 202, "{v}");
        let t = follow(&c, &server, v["id"].as_u64().unwrap()).await;
        assert_eq!(t["state"], "done", "{t}");
        let r = &t["report"];
        assert_eq!(r["outcome"], "dry_run", "{r}");
        assert_eq!(r["counts"]["delete"], 1, "{r}");
        assert_eq!(r["counts"]["create"], 1, "{r}");
        assert_eq!(
            snapshot_of(&live),
            changed,
            "a dry run changed the directory"
        );

        // The restore: a safety snapshot, then the directory as it was.
        let (code, v) = call(
            &c,
            &server,
            "POST",
            "/api/v1/restore",
            &body(json!({"delete": true})),
            Some(OPERATOR),
        )
        .await;
        assert_eq!(code, 202, "{v}");
        let t = follow(&c, &server, v["id"].as_u64().unwrap()).await;
        assert_eq!(t["state"], "done", "{t}\n{}", server.log());
        let r = &t["report"];
        assert_eq!(r["outcome"], "restored", "{r}");
        assert!(r["safety_snapshot"].is_string(), "{r}");
        assert_eq!(snapshot_of(&live), want);
        let snaps = json_of(&c, &server.url("/api/v1/snapshots"), VIEWER).await;
        assert!(
            snaps.as_array().unwrap().iter().any(|s| s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "pre-restore")),
            "no pre-restore snapshot: {snaps}"
        );

        // The live directory's data damaged on both replicas: the restore
        // fails, and the directory is rolled back as it was.
        for p in packs(&env.path("r1"))
            .into_iter()
            .chain(packs(&env.path("r2")))
            .filter(|p| !before_packs.contains(p))
            .filter(|p| std::fs::metadata(p).unwrap().len() > 1 << 20)
        {
            flip_byte(&p, 5000);
        }
        change();
        let changed = snapshot_of(&live);
        let (code, v) = call(
            &c,
            &server,
            "POST",
            "/api/v1/restore",
            &Some(
                json!({"snapshot": r["snapshot"], "path": live, "target": live,
                         "in_place": true, "delete": true}),
            ),
            Some(OPERATOR),
        )
        .await;
        assert_eq!(code, 202, "{v}");
        let t = follow(&c, &server, v["id"].as_u64().unwrap()).await;
        assert_eq!(t["state"], "failed", "{t}");
        assert_eq!(t["report"]["outcome"], "rolled_back", "{t}");
        assert!(
            t["error"].as_str().unwrap().starts_with("rolled back"),
            "{t}"
        );
        assert_eq!(snapshot_of(&live), changed, "not rolled back");
        let h = json_of(&c, &server.url("/api/v1/history"), VIEWER).await;
        let restores: Vec<&Value> = h
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["job"] == "api-restore")
            .collect();
        assert_eq!(restores.len(), 3, "{h}");
        assert!(restores.iter().all(|r| r["actor"] == "ci"), "{h}");
        assert!(restores.iter().any(|r| r["status"] == "failure"), "{h}");
    });
}
