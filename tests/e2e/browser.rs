//! The web dashboard at `/`: served without a token (with its content
//! types, CSP and cache headers) while `/api/v1` still needs one, no file
//! outside the embedded ones, each backup's repository size recorded for
//! its charts; and, in headless Chromium driven over WebDriver, a user
//! who is asked for a token, sees both replicas in the overview, runs a
//! job and sees it finish, and downloads a file whose bytes match.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{find_file, rt, setup, snap_path, Server, OPERATOR, VIEWER};
use crate::common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Say loudly that `what` is missing and skip, or fail under `CI=true`.
fn skip(what: &str) {
    let msg = format!("SKIPPED: {what}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} — CI=true, so this is a failure");
    }
    cairn::backends::conformance::loud_skip(&msg);
}

/// The status line and headers of a request sent byte for byte: HTTP
/// clients resolve `..` in a URL before sending it, a hostile one does not.
fn raw_get(base: &str, target: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_dashboard_is_served_without_a_token_and_the_api_still_needs_one() {
    let env = Env::new();
    let config = setup(&env);
    let server = Server::start(&env, &config, &[]);
    assert!(
        server.log().contains("the dashboard on http://"),
        "{}",
        server.log()
    );
    rt().block_on(async {
        let c = reqwest::Client::new();
        for (path, ctype) in [
            ("/", "text/html; charset=utf-8"),
            ("/assets/app.js", "text/javascript; charset=utf-8"),
            ("/assets/style.css", "text/css; charset=utf-8"),
        ] {
            let r = c.get(server.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let h = r.headers();
            assert_eq!(h["content-type"], ctype, "{path}");
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
            assert_eq!(h["cache-control"], "no-cache", "{path}");
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        }
        let page = c.get(server.url("/")).send().await.unwrap();
        let page = page.text().await.unwrap();
        assert!(page.contains("<script type=\"module\" src=\"/assets/app.js\">"));
        // No inline script: the CSP would block it.
        assert!(!page.contains("<script>"), "{page}");

        let r = c.get(server.url("/api/v1/status")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = c
            .get(server.url("/api/v1/status"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for path in [
            "/assets/..%2F..%2F..%2Fetc%2Fpasswd",
            "/assets/%2Fetc%2Fpasswd",
            "/assets/../../Cargo.toml",
            "/etc/passwd",
            "/assets/nope.js",
            "/index.html",
        ] {
            let r = c.get(server.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 404, "{path}");
        }
    });
    for target in [
        "/../../etc/passwd",
        "/assets/../../../../etc/passwd",
        "/assets/..%2f..%2fetc%2fpasswd",
    ] {
        let answer = raw_get(&server.base, target);
        let status = answer.lines().next().unwrap_or_default();
        assert!(
            status.contains(" 404 ") || status.contains(" 400 "),
            "{target}: {answer}"
        );
        assert!(!answer.contains("root:"), "{target}: {answer}");
    }
}

#[test]
fn the_daemon_serves_the_dashboard_beside_metrics_and_health() {
    let env = Env::new();
    let config = setup(&env);
    let mut c = std_command(&env.cairn_with_config(&config));
    c.args(["daemon", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let base = loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        if n == 0 {
            let _ = child.kill();
            panic!("cairn daemon exited: {:?}", child.wait());
        }
        if line.contains("with its dashboard (/) on ") {
            break line.rsplit(" on ").next().unwrap().trim().to_string();
        }
    };
    // The rest of the log is drained so the daemon never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let page = raw_get(&base, "/");
    let metrics = raw_get(&base, "/metrics");
    let api = raw_get(&base, "/api/v1/status");
    let (head, body) = page.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    let _ = child.kill();
    let _ = child.wait();
    assert!(head.starts_with("http/1.1 200"), "{page}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(body.contains("/assets/app.js"), "{body}");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(api.starts_with("HTTP/1.1 401"), "{api}");
}

#[test]
fn a_backup_run_records_each_replicas_repository_size() {
    let env = Env::new();
    let config = setup(&env);
    let server = Server::start(&env, &config, &[]);
    rt().block_on(async {
        let c = reqwest::Client::new();
        let call = |r: reqwest::RequestBuilder| async move {
            let r = r.bearer_auth(OPERATOR).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<Value>().await.unwrap()
        };
        let task = call(c.post(server.url("/api/v1/jobs/nightly/run"))).await;
        let id = task["id"].as_u64().unwrap();
        let started = Instant::now();
        let task = loop {
            let t = call(c.get(server.url(&format!("/api/v1/jobs/{id}")))).await;
            if t["state"] == "done" || t["state"] == "failed" {
                break t;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{t}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(task["report"]["status"], "success", "{task}");
        let runs = call(c.get(server.url("/api/v1/history?job=nightly&limit=1"))).await;
        let status = call(c.get(server.url("/api/v1/status"))).await;
        for name in ["one", "two"] {
            let recorded = runs[0]["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == name)
                .unwrap_or_else(|| panic!("{name} not in {runs}"));
            let listed = status["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == name)
                .unwrap();
            // What the backup knew from the index is what a listing finds.
            assert!(recorded["repo_bytes"].as_u64().unwrap() > 0, "{recorded}");
            assert_eq!(
                recorded["repo_bytes"], listed["pack_bytes"],
                "{name}: {recorded} vs {listed}"
            );
        }
    });
}

/// A chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn ready(&mut self, c: &reqwest::Client) {
        let started = Instant::now();
        loop {
            if let Ok(r) = c.get(format!("{}/status", self.url)).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return;
                    }
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("chromedriver exited: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver session: a small client of the W3C protocol.
struct Session {
    c: reqwest::Client,
    url: String,
}

impl Session {
    async fn new(c: &reqwest::Client, driver: &Driver, profile: &Path, downloads: &Path) -> Self {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                },
            },
        }}});
        let r = c
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"));
        Session {
            c: c.clone(),
            url: format!("{}/session/{id}", driver.url),
        }
    }

    /// A command's `value`, or its W3C error (`error`, `message`).
    async fn try_cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = format!("{}{path}", self.url);
        let r = match method {
            "GET" => self.c.get(url),
            "DELETE" => self.c.delete(url),
            _ => self.c.post(url).json(&body.unwrap_or(json!({}))),
        };
        let r = r.send().await.unwrap();
        let ok = r.status().is_success();
        let v: Value = r.json().await.unwrap();
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].clone())
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn script(&self, js: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": args})),
        )
        .await
    }

    /// The first element `css` selects, waiting for it up to `secs`.
    async fn find(&self, css: &str, secs: u64) -> String {
        let started = Instant::now();
        loop {
            let found = self
                .try_cmd(
                    "POST",
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            match found {
                Ok(v) => return v[ELEMENT].as_str().unwrap().to_string(),
                Err(e) if e["error"] == "no such element" => {}
                Err(e) => panic!("finding {css}: {e}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "{css} did not appear; the page shows: {}",
                self.script("return document.body.innerText", json!([]))
                    .await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let el = self.find(css, 15).await;
        self.cmd("POST", &format!("/element/{el}/click"), None)
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css, 15).await;
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let el = self.find(css, 15).await;
        let v = self.cmd("GET", &format!("/element/{el}/text"), None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Wait until `js` (a function body) returns something truthy; that.
    /// Click a download button and wait until it says it is done (or
    /// why not): its `data-done` or `data-error`.
    async fn download(&self, button: &str, what: &str) -> Value {
        self.click(button).await;
        self.until(
            what,
            &format!(
                "const b = document.querySelector({}); return b && (b.dataset.done || b.dataset.error && 'error: ' + b.dataset.error)",
                serde_json::to_string(button).unwrap()
            ),
            15,
        )
        .await
    }

    async fn until(&self, what: &str, js: &str, secs: u64) -> Value {
        let started = Instant::now();
        loop {
            let v = self.script(js, json!([])).await;
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "{what} did not happen; the page shows: {}",
                self.script("return document.body.innerText", json!([]))
                    .await
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// The browser console's errors (a CSP violation shows there).
    async fn console_errors(&self) -> Vec<String> {
        match self
            .try_cmd("POST", "/se/log", Some(json!({"type": "browser"})))
            .await
        {
            Ok(Value::Array(entries)) => entries
                .iter()
                .filter(|e| e["level"] == "SEVERE")
                .map(|e| e["message"].to_string())
                .collect(),
            _ => Vec::new(),
        }
    }

    async fn quit(&self) {
        let _ = self.try_cmd("DELETE", "", None).await;
    }
}

/// `s` as a CSS string literal.
fn css_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The file `name` in `dir` once completely downloaded (`size` bytes).
fn downloaded(dir: &Path, name: &str, size: usize) -> PathBuf {
    let path = dir.join(name);
    let started = Instant::now();
    loop {
        if std::fs::metadata(&path).is_ok_and(|m| m.len() as usize == size) {
            return path;
        }
        let listing: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{name} was not downloaded; {} holds {listing:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn in_a_browser_a_user_signs_in_sees_the_replicas_runs_a_job_and_downloads_a_file() {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(tool).exists() {
            skip(&format!(
                "{tool} is missing (Debian packages chromium and chromium-driver; scripts/test installs them)"
            ));
            return;
        }
    }
    let started = Instant::now();
    let env = Env::new();
    let config = setup(&env);
    // A directory whose name is not UTF-8, in the snapshot the job makes.
    let odd = env
        .path("src")
        .join(std::ffi::OsStr::from_bytes(b"odd-\xff"));
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("inner.txt"), "inside a directory named in bytes\n").unwrap();
    let server = Server::start(&env, &config, &[]);
    let (profile, downloads) = (env.path("chromium-profile"), env.path("downloads"));
    std::fs::create_dir_all(&profile).unwrap();
    std::fs::create_dir_all(&downloads).unwrap();
    let mut driver = Driver::start();
    rt().block_on(async {
        let c = reqwest::Client::new();
        driver.ready(&c).await;
        let b = Session::new(&c, &driver, &profile, &downloads).await;

        // Asked for a token; a wrong one is refused and asked again.
        b.goto(&server.url("/")).await;
        b.find("#token-input", 15).await;
        b.type_into("#token-input", "not-a-token-at-all-0123456789")
            .await;
        b.click("#token-submit").await;
        b.until(
            "the refusal",
            "return document.getElementById('token-error').textContent",
            15,
        )
        .await;
        b.type_into("#token-input", OPERATOR).await;
        b.click("#token-submit").await;

        // The overview's matrix names both replicas, each holding the
        // snapshot the setup made.
        b.find("#matrix", 15).await;
        for name in ["one", "two"] {
            let row = format!("#matrix tr[data-replica={}]", css_str(name));
            b.find(&row, 5).await;
            let cells = b
                .script(
                    "return document.querySelectorAll(arguments[0] + ' td[data-state=complete]').length",
                    json!([row]),
                )
                .await;
            assert_eq!(cells, 1, "{name}");
        }
        assert!(b.text("#matrix").await.contains("one"));
        let kept = b
            .script("return sessionStorage.getItem('cairn.token')", json!([]))
            .await;
        assert_eq!(kept, OPERATOR);

        // Run now, and the task followed to its end.
        b.click("nav a[href='#/jobs']").await;
        b.click("button[data-run='nightly']").await;
        let state = b
            .until(
                "the job's end",
                "const t = document.getElementById('task-state'); \
                 return t && ['done', 'failed'].includes(t.dataset.state) && t.dataset.state",
                45,
            )
            .await;
        assert_eq!(state, "done", "{}", b.text("#task-state").await);
        let status = b
            .script(
                "return document.getElementById('task-state').dataset.status",
                json!([]),
            )
            .await;
        assert_eq!(status, "success");
        b.until(
            "the run in the history",
            "return document.getElementById('history').innerText.includes('api (ci)')",
            10,
        )
        .await;

        // The charts draw the size the run recorded, per replica.
        b.click("nav a[href='#/charts']").await;
        b.find("#chart-size g[data-series='one'] circle", 10).await;
        b.find("#chart-size g[data-series='two'] circle", 10).await;

        // Browse from the newest snapshot's root to a file; download it.
        b.click("nav a[href='#/browse']").await;
        b.click("#snapshots tbody tr:first-child a[data-path='/']")
            .await;
        let dir = snap_path(&env, "docs/nested");
        let mut at = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            at.push('/');
            at.push_str(part);
            b.click(&format!("#tree a[data-path={}]", css_str(&at)))
                .await;
            b.find(&format!("#tree[data-path={}]", css_str(&at)), 15)
                .await;
        }
        let file = format!("{dir}/random.bin");
        let button = format!("button[data-download={}]", css_str(&file));
        assert_eq!(b.download(&button, "the download").await, "1");
        let source = std::fs::read(env.path("src/docs/nested/random.bin")).unwrap();
        let got = std::fs::read(downloaded(&downloads, "random.bin", source.len())).unwrap();
        assert!(got == source, "the downloaded bytes differ from the source");
        // The directory as a tar, saved by the browser from its one-time URL.
        let button = format!("button[data-archive={}][data-format=tar]", css_str(&dir));
        assert_eq!(b.download(&button, "the archive's ticket").await, "1");
        // Saved under the server's name, which carries the snapshot's id.
        let started = Instant::now();
        let tar = loop {
            let done = std::fs::read_dir(&downloads)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with("nested-") && n.ends_with(".tar")
                });
            if let Some(p) = done {
                break p;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the tar was not downloaded"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = std::process::Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("nested/random.bin") && listing.contains("nested/deeper/small"), "{listing}");

        // Into the directory whose name is not UTF-8, by its bytes, up
        // through the crumbs; a file in it downloaded.
        let hex = |p: &Path| {
            p.as_os_str()
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let src = env.path("src").display().to_string();
        b.click(&format!("p.crumbs a[data-path={}]", css_str(&src)))
            .await;
        b.find(&format!("#tree[data-path={}]", css_str(&src)), 15)
            .await;
        b.click(&format!("#tree a[data-path={}]", css_str(&hex(&odd))))
            .await;
        b.find(&format!("#tree[data-path={}]", css_str(&hex(&odd))), 15)
            .await;
        assert!(b.text("p.crumbs").await.contains("odd-"));
        let inner = odd.join("inner.txt");
        let button = format!("button[data-download={}]", css_str(&hex(&inner)));
        assert_eq!(b.download(&button, "the file in it").await, "1");
        let want = std::fs::read(&inner).unwrap();
        let got = std::fs::read(downloaded(&downloads, "inner.txt", want.len())).unwrap();
        assert_eq!(got, want);

        // A restore from the form, then an in-place dry run over it.
        b.click("nav a[href='#/restore']").await;
        let target = env.path("restores/web");
        b.type_into("#restore-path", &snap_path(&env, "docs")).await;
        b.type_into("#restore-target", &target.display().to_string())
            .await;
        b.click("#restore-verify").await;
        b.click("#restore-form button[type=submit]").await;
        let task_end = "const t = document.getElementById('task-state'); \
             return t && ['done', 'failed'].includes(t.dataset.state) && t.dataset.state";
        let state = b.until("the restore's end", task_end, 30).await;
        assert_eq!(state, "done", "{}", b.text("#restore-result").await);
        let restored = find_file(&target, "readme.txt").expect("readme.txt restored");
        assert_eq!(
            std::fs::read(restored).unwrap(),
            std::fs::read(env.path("src/docs/readme.txt")).unwrap()
        );
        // The form keeps what was entered.
        assert_eq!(
            b.script("return document.getElementById('restore-target').value", json!([]))
                .await,
            target.display().to_string()
        );
        let first = b
            .script(
                "return document.getElementById('task-state').dataset.task",
                json!([]),
            )
            .await;
        b.click("#restore-in_place").await;
        b.click("#restore-dry_run").await;
        b.click("#restore-form button[type=submit]").await;
        let next_end = format!(
            "const t = document.getElementById('task-state'); \
             return t && t.dataset.task !== {first} && ['done', 'failed'].includes(t.dataset.state) && t.dataset.state"
        );
        let state = b.until("the dry run's end", &next_end, 30).await;
        assert_eq!(state, "done", "{}", b.text("#restore-result").await);
        assert!(
            b.text("#restore-result").await.contains("dry_run"),
            "{}",
            b.text("#restore-result").await
        );

        // The forget preview: keep_last = 10 keeps every snapshot.
        b.click("nav a[href='#/forget']").await;
        b.find("#forget-plan td[data-action='keep']", 15).await;
        let forgets = b
            .script(
                "return document.querySelectorAll('#forget-plan td[data-action=forget]').length",
                json!([]),
            )
            .await;
        assert_eq!(forgets, 0);

        // The wrong token's 401 is the one error expected (and shows the
        // console is read); a CSP violation or a script error would be
        // another.
        let errors = b.console_errors().await;
        b.quit().await;
        let (refused, others): (Vec<_>, Vec<_>) = errors
            .iter()
            .partition(|e| e.contains("/api/v1/jobs - ") && e.contains("401"));
        assert_eq!(refused.len(), 1, "console errors: {errors:?}");
        assert!(others.is_empty(), "console errors: {others:?}");
    });
    drop(driver);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the browser test took {:?}",
        started.elapsed()
    );
}
