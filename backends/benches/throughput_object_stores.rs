//! Throughput of the S3, Azure and GCS backends against their emulators on
//! loopback, next to a reference client on the same server (aws cli, the
//! Azure SDK, curl): 256 MiB up and down, three rounds.
//!
//! ```sh
//! scripts/test-servers start && eval "$(scripts/test-servers env)"
//! cargo bench -p cairn-backends --all-features --bench throughput_object_stores
//! ```
#![cfg(all(feature = "s3", feature = "azure", feature = "gcs"))]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_backends::azure::AzureBackend;
use cairn_backends::conformance::{fresh_location as fresh, server_from_env as configured};
use cairn_backends::gcs::GcsBackend;
use cairn_backends::s3::S3Backend;
use cairn_backends::{Backend, Handle, Kind, PutMode};

/// What the S3, Azure and GCS backends move per second through the local
/// servers, next to a reference client on the same server in the same run
/// (see docs/benchmarks/backends.md):
///
/// ```sh
/// scripts/test-servers start s3 azure gcs && eval "$(scripts/test-servers env s3 azure gcs)"
/// cargo test -p cairn-backends --all-features --release --test servers \
///     -- --ignored --nocapture throughput
/// ```
mod throughput {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    const SIZE: usize = 256 << 20;
    const ROUNDS: usize = 3;

    fn mbps(d: Duration) -> f64 {
        SIZE as f64 / 1e6 / d.as_secs_f64()
    }

    fn data() -> Bytes {
        // Incompressible, like encrypted packs.
        let mut v = vec![0u8; SIZE];
        let mut x = 0x9e3779b97f4a7c15u64;
        for chunk in v.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        Bytes::from(v)
    }

    /// A measurement: the best wall time of the rounds; the client's CPU
    /// time (user + system) and the server process's, per round on average.
    #[derive(Clone, Copy)]
    struct Sample {
        wall: Duration,
        cpu: Duration,
        server: Duration,
    }

    const EMPTY: Sample = Sample {
        wall: Duration::MAX,
        cpu: Duration::ZERO,
        server: Duration::ZERO,
    };

    fn ticks_per_second() -> f64 {
        // Asked once: a `getconf` child per reading would count as the
        // children's CPU time being measured.
        static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *HZ.get_or_init(|| {
            Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(100)
        }) as f64
    }

    /// utime + stime (`own`) or cutime + cstime of `/proc/PID/stat`.
    fn stat_cpu(pid: &str, own: bool) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<u64> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
            .unwrap_or_default();
        // After the command name, field 3 (the state) is index 0.
        let (u, s) = if own { (11, 12) } else { (13, 14) };
        let ticks = fields.get(u).unwrap_or(&0) + fields.get(s).unwrap_or(&0);
        Duration::from_secs_f64(ticks as f64 / ticks_per_second())
    }

    /// The test-servers state directory.
    fn state_dir() -> PathBuf {
        std::env::var_os("CAIRN_TEST_SERVERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/cairn-test-servers")
            })
    }

    /// CPU time of one server process (`scripts/test-servers` component).
    struct Server(Option<String>);

    impl Server {
        fn of(component: &str) -> Server {
            let pid = std::fs::read_to_string(state_dir().join(format!("run/{component}.pid")))
                .ok()
                .map(|p| p.trim().to_string())
                .filter(|p| Path::new(&format!("/proc/{p}/stat")).exists());
            Server(pid)
        }

        fn cpu(&self) -> Duration {
            self.0
                .as_deref()
                .map_or(Duration::ZERO, |p| stat_cpu(p, true))
        }
    }

    /// Put and get through a backend, `ROUNDS` times.
    async fn backend_times(b: &dyn Backend, data: &Bytes, server: &Server) -> (Sample, Sample) {
        let h = Handle::new(Kind::Pack, "ffbench");
        let (mut put, mut get) = (EMPTY, EMPTY);
        let n = ROUNDS as u32;
        for _ in 0..ROUNDS {
            let (t, c, s) = (Instant::now(), stat_cpu("self", true), server.cpu());
            b.put(&h, data.clone(), PutMode::Overwrite).await.unwrap();
            put.wall = put.wall.min(t.elapsed());
            put.cpu += stat_cpu("self", true).saturating_sub(c) / n;
            put.server += server.cpu().saturating_sub(s) / n;
            let (t, c, s) = (Instant::now(), stat_cpu("self", true), server.cpu());
            let got = b.get(&h, None).await.unwrap();
            get.wall = get.wall.min(t.elapsed());
            get.cpu += stat_cpu("self", true).saturating_sub(c) / n;
            get.server += server.cpu().saturating_sub(s) / n;
            assert_eq!(got.len(), data.len());
            assert!(got == *data, "read back different bytes");
        }
        b.delete(&h).await.unwrap();
        (put, get)
    }

    /// Run a command `ROUNDS` times; `None` (after saying why) if it fails.
    fn command_time(
        what: &str,
        server: &Server,
        mut make: impl FnMut() -> Command,
    ) -> Option<Sample> {
        let mut best = EMPTY;
        let n = ROUNDS as u32;
        for _ in 0..ROUNDS {
            let (t, c, s) = (Instant::now(), stat_cpu("self", false), server.cpu());
            let out = make().stdout(Stdio::null()).stderr(Stdio::piped()).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    println!(
                        "{what}: failed ({}): {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    return None;
                }
                Err(e) => {
                    println!("{what}: cannot run: {e}");
                    return None;
                }
            }
            best.wall = best.wall.min(t.elapsed());
            best.cpu += stat_cpu("self", false).saturating_sub(c) / n;
            best.server += server.cpu().saturating_sub(s) / n;
        }
        Some(best)
    }

    /// `sample` without the client's start-up (`setup`).
    fn minus(sample: Option<Sample>, setup: Option<Sample>) -> Option<Sample> {
        let setup = setup.unwrap_or(Sample {
            wall: Duration::ZERO,
            ..EMPTY
        });
        sample.map(|s| Sample {
            wall: s.wall.saturating_sub(setup.wall),
            cpu: s.cpu.saturating_sub(setup.cpu),
            server: s.server.saturating_sub(setup.server),
        })
    }

    fn row(what: &str, ours: Sample, theirs: Option<Sample>, tool: &str) {
        let per_gb = |d: Duration| d.as_secs_f64() / (SIZE as f64 / 1e9);
        let part = |s: Sample| {
            format!(
                "{:>6.1} MB/s {:>5.2} CPU-s/GB (server {:>5.2} CPU-s/GB, busy {:>3.0}%)",
                mbps(s.wall),
                per_gb(s.cpu),
                per_gb(s.server),
                // The server's CPU over the best round's wall time.
                100.0 * s.server.as_secs_f64() / s.wall.as_secs_f64()
            )
        };
        match theirs {
            Some(t) => println!(
                "{what:<10} cairn {} | {tool} {} | ratio {:.2}",
                part(ours),
                part(t),
                t.wall.as_secs_f64() / ours.wall.as_secs_f64()
            ),
            None => println!("{what:<10} cairn {} | ({tool} not run)", part(ours)),
        }
    }

    /// The part of `url` (`scheme://bucket/prefix`) after the bucket.
    fn bucket_and_prefix(url: &str) -> (String, String) {
        let rest = url.split_once("://").unwrap().1;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        (bucket.to_string(), prefix.trim_matches('/').to_string())
    }

    /// A Python with the given modules: the test servers' venv (boto3 comes
    /// with moto), else a venv of its own under ~/.cache/cairn-bench, made
    /// with pip on first use.
    fn python_with(module: &str, package: &str) -> Option<PathBuf> {
        let has = |py: &Path| {
            Command::new(py)
                .args(["-c", &format!("import {module}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let servers = state_dir().join("venv/bin/python");
        if has(&servers) {
            return Some(servers);
        }
        let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
        let venv = home.join(".cache/cairn-bench/venv");
        let py = venv.join("bin/python");
        if has(&py) {
            return Some(py);
        }
        println!("installing {package} into {} (pip)", venv.display());
        let made = py.exists()
            || Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
        let installed = made
            && Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    package,
                ])
                .status()
                .is_ok_and(|s| s.success());
        if installed && has(&py) {
            Some(py)
        } else {
            println!("could not install {package}: its reference run is skipped");
            None
        }
    }

    /// Builds the reference client's command for an operation (`put`,
    /// `get`, `rm`, anything else: a cheap request for its start-up).
    type MakeCommand = Box<dyn Fn(&str) -> Command>;

    /// S3 through the `aws` CLI, or boto3 (the same transfer code) when
    /// there is no CLI.
    fn s3_reference(
        scratch: &Path,
        src: &Path,
        dst: &Path,
        base: &str,
        server: &Server,
    ) -> Reference {
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .unwrap_or_else(|_| "http://127.0.0.1:9000".into());
        let (bucket, prefix) = bucket_and_prefix(&fresh(base, "bench-cli"));
        let key = format!("{prefix}/cli.bin");
        let uri = format!("s3://{bucket}/{key}");
        let aws = Command::new("aws")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                let v = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                v.split_whitespace().next().unwrap_or("aws").to_string()
            });
        let (tool, make): (String, MakeCommand) = match aws {
            Some(version) => {
                let endpoint = endpoint.clone();
                let (src, dst, uri, bucket) = (
                    src.to_path_buf(),
                    dst.to_path_buf(),
                    uri.clone(),
                    bucket.clone(),
                );
                (
                    format!("`aws s3 cp` ({version})"),
                    Box::new(move |op| {
                        let mut c = Command::new("aws");
                        c.args(["--endpoint-url", &endpoint]);
                        match op {
                            "put" => c.args(["s3", "cp", "--quiet"]).arg(&src).arg(&uri),
                            "get" => c.args(["s3", "cp", "--quiet"]).arg(&uri).arg(&dst),
                            "rm" => c.args(["s3", "rm", "--quiet", &uri]),
                            _ => c.args(["s3api", "head-bucket", "--bucket", &bucket]),
                        };
                        c
                    }),
                )
            }
            None => {
                println!("no `aws` CLI on this machine: using boto3 (upload_file/download_file, the CLI's transfer code)");
                let py = python_with("boto3", "boto3")?;
                let script = scratch.join("s3ref.py");
                std::fs::write(
                    &script,
                    "import sys, boto3\n\
                     op, endpoint, bucket, key, path = sys.argv[1:]\n\
                     s3 = boto3.client('s3', endpoint_url=endpoint)\n\
                     if op == 'put': s3.upload_file(path, bucket, key)\n\
                     elif op == 'get': s3.download_file(bucket, key, path)\n\
                     elif op == 'rm': s3.delete_object(Bucket=bucket, Key=key)\n\
                     else: s3.head_bucket(Bucket=bucket)\n",
                )
                .unwrap();
                let (src, dst) = (src.to_path_buf(), dst.to_path_buf());
                (
                    "boto3".to_string(),
                    Box::new(move |op| {
                        let mut c = Command::new(&py);
                        c.arg(&script).args([op, &endpoint, &bucket, &key]);
                        c.arg(if op == "get" { &dst } else { &src });
                        c
                    }),
                )
            }
        };
        let setup = command_time(&tool, server, || make("setup"));
        let put = minus(command_time(&tool, server, || make("put")), setup);
        let get = minus(command_time(&tool, server, || make("get")), setup);
        if let Some(setup) = setup {
            println!(
                "{tool} start-up, credentials and one request: {:.2?} (subtracted)",
                setup.wall
            );
        }
        let _ = make("rm")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        Some((tool, put, get))
    }

    /// A reference client's name and its put and get samples.
    type Reference = Option<(String, Option<Sample>, Option<Sample>)>;

    fn rows(service: &str, put: Sample, get: Sample, reference: Reference) {
        let (tool, put_ref, get_ref) = reference.unwrap_or_default();
        row(&format!("{service} put"), put, put_ref, &tool);
        row(&format!("{service} get"), get, get_ref, &tool);
    }

    /// Azure through Microsoft's Python SDK (azure-storage-blob), defaults.
    fn azure_reference(
        scratch: &Path,
        src: &Path,
        dst: &Path,
        base: &str,
        server: &Server,
    ) -> Reference {
        let py = python_with("azure.storage.blob", "azure-storage-blob")?;
        let version = Command::new(&py)
            .args(["-c", "import azure.storage.blob as b; print(b.__version__)"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let script = scratch.join("azref.py");
        std::fs::write(
            &script,
            "import os, sys\n\
             from azure.storage.blob import BlobServiceClient\n\
             op, container, blob, path = sys.argv[1:]\n\
             svc = BlobServiceClient.from_connection_string(os.environ['CAIRN_BENCH_AZURE'])\n\
             c = svc.get_container_client(container)\n\
             if op == 'put':\n    with open(path, 'rb') as f: c.upload_blob(blob, f, overwrite=True)\n\
             elif op == 'get':\n    with open(path, 'wb') as f: c.download_blob(blob).readinto(f)\n\
             elif op == 'rm': c.delete_blob(blob)\n\
             else: c.get_container_properties()\n",
        )
        .unwrap();
        let account =
            std::env::var("AZURE_STORAGE_ACCOUNT_NAME").unwrap_or("devstoreaccount1".into());
        let key = std::env::var("AZURE_STORAGE_ACCOUNT_KEY").unwrap_or_default();
        let endpoint = std::env::var("AZURE_STORAGE_ENDPOINT")
            .unwrap_or_else(|_| format!("http://127.0.0.1:10000/{account}"));
        // In the environment, not on the command line.
        let connection = format!(
            "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};BlobEndpoint={endpoint};"
        );
        let (container, prefix) = bucket_and_prefix(&fresh(base, "bench-sdk"));
        let blob = format!("{prefix}/sdk.bin");
        let make = |op: &str| {
            let mut c = Command::new(&py);
            c.env("CAIRN_BENCH_AZURE", &connection)
                .arg(&script)
                .args([op, &container, &blob])
                .arg(if op == "get" { dst } else { src });
            c
        };
        let tool = format!("azure-storage-blob {version}");
        let setup = command_time(&tool, server, || make("setup"));
        let put = minus(command_time(&tool, server, || make("put")), setup);
        let get = minus(command_time(&tool, server, || make("get")), setup);
        if let Some(setup) = setup {
            println!(
                "{tool} start-up and one request: {:.2?} (subtracted)",
                setup.wall
            );
        }
        let _ = make("rm")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        Some((tool, put, get))
    }

    /// GCS through curl against the JSON API (media upload, alt=media get).
    /// Also returns curl's time for a multipart upload (cairn's request
    /// shape: JSON metadata and data in one `multipart/related` body).
    fn gcs_reference(
        scratch: &Path,
        src: &Path,
        dst: &Path,
        base: &str,
        server: &Server,
    ) -> (Reference, Option<Sample>) {
        let endpoint =
            std::env::var("CAIRN_GCS_ENDPOINT").unwrap_or("http://127.0.0.1:4443".into());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let (bucket, prefix) = bucket_and_prefix(&fresh(base, "bench-curl"));
        let name = format!("{prefix}/curl.bin");
        let encoded = name.replace('/', "%2F");
        let object = format!("{endpoint}/storage/v1/b/{bucket}/o/{encoded}");
        // The body of a multipart upload, made once, as cairn sends it.
        let boundary = "cairn-bench-0123456789abcdef";
        let multipart = scratch.join("multipart.bin");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&multipart).unwrap();
            write!(
                f,
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{{\"name\":\"{name}\"}}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .unwrap();
            f.write_all(&std::fs::read(src).unwrap()).unwrap();
            write!(f, "\r\n--{boundary}--\r\n").unwrap();
        }
        let multipart_type = format!("Content-Type: multipart/related; boundary={boundary}");
        let make = |op: &str| {
            let mut c = Command::new("curl");
            c.args(["-sS", "--fail"]);
            match op {
                // -T streams the file (--data-binary would read it into
                // memory first); -X POST turns its PUT into the API's POST.
                "put" => c
                    .args([
                        "-X",
                        "POST",
                        "-H",
                        "Content-Type: application/octet-stream",
                        "-T",
                    ])
                    .arg(src)
                    .arg(format!(
                        "{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={encoded}"
                    )),
                "multipart" => c
                    .args(["-X", "POST", "-H", &multipart_type, "-T"])
                    .arg(&multipart)
                    .arg(format!(
                        "{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=multipart"
                    )),
                "get" => c.arg("-o").arg(dst).arg(format!("{object}?alt=media")),
                "rm" => c.args(["-X", "DELETE", &object]),
                _ => c.arg(format!("{endpoint}/storage/v1/b/{bucket}")),
            };
            c
        };
        let version = Command::new("curl")
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default();
        let tool = format!("curl {version}");
        let setup = command_time(&tool, server, || make("setup"));
        let put = minus(command_time(&tool, server, || make("put")), setup);
        let get = minus(command_time(&tool, server, || make("get")), setup);
        let put_multipart = minus(command_time(&tool, server, || make("multipart")), setup);
        if let Some(setup) = setup {
            println!(
                "{tool} start-up and one request: {:.2?} (subtracted)",
                setup.wall
            );
        }
        let _ = make("rm")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&multipart);
        (Some((tool, put, get)), put_multipart)
    }

    pub async fn throughput_256mib() {
        let data = data();
        // The clock-tick rate is asked (with a child process) before any
        // child CPU time is measured.
        let _ = ticks_per_second();
        let scratch = if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let src = scratch.path().join("src.bin");
        let dst = scratch.path().join("dst.bin");
        std::fs::write(&src, &data).unwrap();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "\n256 MiB objects, best of {ROUNDS}; load average at start: {}",
            load.trim()
        );

        if let Some(base) = configured("s3", "CAIRN_TEST_REPO_S3") {
            let server = Server::of("s3");
            let b = S3Backend::from_url(&fresh(&base, "bench"), &BTreeMap::new()).unwrap();
            b.create().await.unwrap();
            let (put, get) = backend_times(&b, &data, &server).await;
            rows(
                "s3",
                put,
                get,
                s3_reference(scratch.path(), &src, &dst, &base, &server),
            );
        }
        if let Some(base) = configured("azure", "CAIRN_TEST_REPO_AZURE") {
            let server = Server::of("azure");
            let b = AzureBackend::from_url(&fresh(&base, "bench"), &BTreeMap::new()).unwrap();
            b.create().await.unwrap();
            let (put, get) = backend_times(&b, &data, &server).await;
            rows(
                "azure",
                put,
                get,
                azure_reference(scratch.path(), &src, &dst, &base, &server),
            );
        }
        if let Some(base) = configured("gcs", "CAIRN_TEST_REPO_GCS") {
            let server = Server::of("gcs");
            let b = GcsBackend::from_url(&fresh(&base, "bench"), &BTreeMap::new()).unwrap();
            b.create().await.unwrap();
            let (put, get) = backend_times(&b, &data, &server).await;
            let (reference, multipart) = gcs_reference(scratch.path(), &src, &dst, &base, &server);
            let tool = reference.as_ref().map(|r| r.0.clone()).unwrap_or_default();
            rows("gcs", put, get, reference);
            row("gcs put", put, multipart, &format!("{tool} multipart"));
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("load average at the end: {}", load.trim());
    }
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(throughput::throughput_256mib());
}
