//! Throughput of the SFTP and FTP backends against OpenSSH and pyftpdlib on
//! loopback, next to OpenSSH's `sftp` and curl on the same server: 256 MiB
//! up and down, three rounds.
//!
//! ```sh
//! scripts/test-servers start && eval "$(scripts/test-servers env)"
//! cargo bench -p cairn-backends --all-features --bench throughput_sftp_ftp
//! ```
#![cfg(any(feature = "sftp", feature = "ftp"))]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_backends::conformance::{fresh_location as fresh, server_from_env as configured};
use cairn_backends::{Backend, Handle, Kind, PutMode};

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Remove a directory the SFTP server wrote to (its paths are local here).
fn remove_local_dir(path: &str) {
    let p = std::path::Path::new(path);
    if p.is_absolute() && p.exists() && path.contains("-") {
        let _ = std::fs::remove_dir_all(p);
    }
}

/// Throughput of the SFTP and FTP backends against OpenSSH's `sftp` and
/// `curl` on the same servers, 256 MiB each way. Run in release mode:
///
/// ```sh
/// cargo test -p cairn-backends --features sftp,ftp --release --test sftp_ftp \
///     -- --ignored --nocapture throughput
/// ```
#[cfg(all(feature = "sftp", feature = "ftp"))]
mod throughput {
    use super::*;
    use cairn_backends::ftp::FtpBackend;
    use cairn_backends::sftp::SftpBackend;
    use std::process::{Command, Stdio};

    const SIZE: usize = 256 << 20;
    const ROUNDS: usize = 3;

    fn mbps(bytes: usize, d: Duration) -> f64 {
        bytes as f64 / 1e6 / d.as_secs_f64()
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

    /// Best of `ROUNDS` put and get times through a backend.
    /// A measurement: the best wall time of the rounds, and the client's
    /// CPU time (user + system) per round on average. CPU time moves much
    /// less than wall time when other work shares the machine.
    #[derive(Clone, Copy)]
    struct Sample {
        wall: Duration,
        cpu: Duration,
    }

    /// CPU time used so far by this process (`children == false`) or by its
    /// waited-for children, from `/proc/self/stat` (Linux).
    fn cpu_time(children: bool) -> Duration {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
            .unwrap_or_default();
        // utime, stime, cutime, cstime are fields 14 to 17 of the line;
        // after the command name, field 3 (the state) is index 0.
        let (u, s) = if children { (13, 14) } else { (11, 12) };
        let ticks = fields.get(u).unwrap_or(&0) + fields.get(s).unwrap_or(&0);
        // Asked once: a `getconf` child per reading would count as the
        // children's CPU time being measured.
        static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let hz = *HZ.get_or_init(|| {
            Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(100)
        });
        Duration::from_secs_f64(ticks as f64 / hz as f64)
    }

    /// Put and get through a backend, `ROUNDS` times.
    async fn backend_times(b: &dyn Backend, data: &Bytes) -> (Sample, Sample) {
        let h = Handle::new(Kind::Pack, "ffbench");
        let mut put = Sample {
            wall: Duration::MAX,
            cpu: Duration::ZERO,
        };
        let mut get = put;
        for _ in 0..ROUNDS {
            let (t, c) = (Instant::now(), cpu_time(false));
            b.put(&h, data.clone(), PutMode::Overwrite).await.unwrap();
            put.wall = put.wall.min(t.elapsed());
            put.cpu += cpu_time(false).saturating_sub(c) / ROUNDS as u32;
            let (t, c) = (Instant::now(), cpu_time(false));
            let got = b.get(&h, None).await.unwrap();
            get.wall = get.wall.min(t.elapsed());
            get.cpu += cpu_time(false).saturating_sub(c) / ROUNDS as u32;
            assert_eq!(got.len(), data.len());
        }
        b.delete(&h).await.unwrap();
        (put, get)
    }

    /// Run a command `ROUNDS` times.
    fn command_time(mut make: impl FnMut() -> Command) -> Option<Sample> {
        let mut best = Sample {
            wall: Duration::MAX,
            cpu: Duration::ZERO,
        };
        for _ in 0..ROUNDS {
            let (t, c) = (Instant::now(), cpu_time(true));
            let st = make().stdout(Stdio::null()).status().ok()?;
            if !st.success() {
                return None;
            }
            best.wall = best.wall.min(t.elapsed());
            best.cpu += cpu_time(true).saturating_sub(c) / ROUNDS as u32;
        }
        Some(best)
    }

    /// `sample` without the client's start-up (`setup`).
    fn minus(sample: Option<Sample>, setup: Option<Sample>) -> Option<Sample> {
        let setup = setup.unwrap_or(Sample {
            wall: Duration::ZERO,
            cpu: Duration::ZERO,
        });
        sample.map(|s| Sample {
            wall: s.wall.saturating_sub(setup.wall),
            cpu: s.cpu.saturating_sub(setup.cpu),
        })
    }

    fn row(what: &str, ours: Sample, theirs: Option<Sample>, tool: &str) {
        let cpu = |s: Sample| s.cpu.as_secs_f64() / (SIZE as f64 / 1e9);
        match theirs {
            Some(t) => println!(
                "{what:<22} cairn {:>6.1} MB/s {:>5.2} CPU-s/GB | {tool} {:>6.1} MB/s {:>5.2} CPU-s/GB | ratio {:.2}",
                mbps(SIZE, ours.wall),
                cpu(ours),
                mbps(SIZE, t.wall),
                cpu(t),
                t.wall.as_secs_f64() / ours.wall.as_secs_f64()
            ),
            None => println!(
                "{what:<22} cairn {:>6.1} MB/s {:>5.2} CPU-s/GB | ({tool} not run)",
                mbps(SIZE, ours.wall),
                cpu(ours)
            ),
        }
    }

    pub async fn throughput_256mib() {
        let data = data();
        // The clock-tick rate is asked (with a child process) before any
        // child CPU time is measured.
        let _ = cpu_time(true);
        // Local files for the command-line clients, in memory when possible.
        let scratch = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let src = scratch.path().join("src.bin");
        let dst = scratch.path().join("dst.bin");
        std::fs::write(&src, &data).unwrap();
        println!("\n256 MiB objects, best of {ROUNDS}");

        if let Some(base) = configured("sftp", "CAIRN_TEST_REPO_SFTP") {
            let url = fresh(&base, "bench");
            let remote_dir = url.split_once("://").unwrap().1;
            let remote_dir = &remote_dir[remote_dir.find('/').unwrap()..];
            for fsync in ["false", "true"] {
                let b = SftpBackend::from_url(&url, &options(&[("fsync", fsync)]))
                    .await
                    .unwrap();
                b.create().await.unwrap();
                let (put, get) = backend_times(&b, &data).await;
                let (user_host, port) = {
                    let rest = base.split_once("://").unwrap().1;
                    let authority = &rest[..rest.find('/').unwrap()];
                    let (uh, port) = authority.rsplit_once(':').unwrap();
                    (uh.to_string(), port.to_string())
                };
                let sftp = |batch: &std::path::Path| {
                    let mut c = Command::new("sftp");
                    c.args([
                        "-q",
                        "-P",
                        &port,
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "IdentitiesOnly=yes",
                    ])
                    .arg("-b")
                    .arg(batch)
                    .arg("-i")
                    .arg(std::env::var("CAIRN_SFTP_KEY").unwrap_or_default())
                    .arg("-o")
                    .arg(format!(
                        "UserKnownHostsFile={}",
                        std::env::var("CAIRN_SFTP_KNOWN_HOSTS").unwrap_or_default()
                    ))
                    .arg(&user_host);
                    c
                };
                let put_batch = scratch.path().join("put.batch");
                let get_batch = scratch.path().join("get.batch");
                std::fs::write(
                    &put_batch,
                    format!("put {} {remote_dir}/cli.bin\n", src.display()),
                )
                .unwrap();
                std::fs::write(
                    &get_batch,
                    format!("get {remote_dir}/cli.bin {}\n", dst.display()),
                )
                .unwrap();
                // The client's own start-up, key exchange and login, measured
                // with an empty batch and taken off its transfer times: our
                // backend keeps its connection between rounds.
                let noop_batch = scratch.path().join("noop.batch");
                std::fs::write(&noop_batch, "pwd\n").unwrap();
                let setup = command_time(|| sftp(&noop_batch));
                let put_cli = minus(command_time(|| sftp(&put_batch)), setup);
                let get_cli = minus(command_time(|| sftp(&get_batch)), setup);
                if let Some(setup) = setup {
                    println!(
                        "sftp(1) start-up and login: {:.2?} (subtracted)",
                        setup.wall
                    );
                }
                row(&format!("sftp put fsync={fsync}"), put, put_cli, "sftp(1)");
                row("sftp get", get, get_cli, "sftp(1)");
            }
            remove_local_dir(remote_dir);
        }

        if let Some(base) = configured("ftp", "CAIRN_TEST_REPO_FTP") {
            let url = fresh(&base, "bench");
            let b = FtpBackend::from_url(&url, &BTreeMap::new()).await.unwrap();
            b.create().await.unwrap();
            let (put, get) = backend_times(&b, &data).await;
            // curl with the password in a netrc file, not on its command line.
            let rest = url.split_once("://").unwrap().1;
            let (user, hostpath) = rest.split_once('@').unwrap();
            let host = hostpath.split([':', '/']).next().unwrap();
            let netrc = scratch.path().join("netrc");
            std::fs::write(
                &netrc,
                format!(
                    "machine {host} login {user} password {}\n",
                    std::env::var("CAIRN_FTP_PASSWORD").unwrap_or_default()
                ),
            )
            .unwrap();
            let remote = format!("ftp://{hostpath}/curl.bin");
            let put_cli = command_time(|| {
                let mut c = Command::new("curl");
                c.args(["-sS", "--netrc-file"])
                    .arg(&netrc)
                    .arg("-T")
                    .arg(&src)
                    .arg(&remote);
                c
            });
            let get_cli = command_time(|| {
                let mut c = Command::new("curl");
                c.args(["-sS", "--netrc-file"])
                    .arg(&netrc)
                    .arg("-o")
                    .arg(&dst)
                    .arg(&remote);
                c
            });
            let setup = command_time(|| {
                let mut c = Command::new("curl");
                c.args(["-sS", "--netrc-file"])
                    .arg(&netrc)
                    .arg("-I")
                    .arg(format!("ftp://{hostpath}/"));
                c
            });
            let put_cli = minus(put_cli, setup);
            let get_cli = minus(get_cli, setup);
            if let Some(setup) = setup {
                println!("curl start-up and login: {:.2?} (subtracted)", setup.wall);
            }
            row("ftp put", put, put_cli, "curl");
            row("ftp get", get, get_cli, "curl");
            // curl's 256 MiB file is not a cairn object: delete it with curl
            // (`-Q -CMD` runs after the listing of the directory).
            let dir = format!("ftp://{hostpath}/");
            let _ = Command::new("curl")
                .args(["-sS", "--netrc-file"])
                .arg(&netrc)
                .args(["-Q", "-DELE curl.bin"])
                .arg(&dir)
                .stdout(Stdio::null())
                .status();
        }
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
