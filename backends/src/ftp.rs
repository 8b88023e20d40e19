//! FTP and FTPS backend.
//!
//! `ftp://[user[:password]@]host[:port]/path` for plain FTP,
//! `ftps://…` for explicit TLS (`AUTH TLS`, then `PBSZ 0` / `PROT P` so the
//! data connections are encrypted too), and `ftps://…` with option
//! `implicit_tls = true` for implicit TLS (port 990 by default). The path is
//! relative to the login directory as in RFC 1738 (`ftp://h/repo` and
//! `ftp://h//srv/repo` for an absolute one); it is resolved once with `PWD`.
//! Data connections are passive; they always go to the address of the
//! control connection, whatever address the server's `PASV` reply names.
//!
//! TLS certificates are verified against the webpki (Mozilla) roots plus the
//! certificates in option `ca_file`; the name checked is the URL's host (or
//! option `tls_server_name`). There is no way to switch verification off.
//!
//! **Atomicity.** An upload goes to a temporary `.tmp-<random>` in the
//! target directory, its size is checked with `SIZE` (a dropped data
//! connection looks like a complete upload in FTP's stream mode), and it is
//! then published with `RNFR`/`RNTO`, which replaces an existing object
//! atomically on POSIX servers. FTP has no create-if-absent: for
//! [`PutMode::Create`] the backend checks with `SIZE` that the object is
//! absent, uploads, checks again and renames. Two writers racing between the
//! last check and the rename both succeed and the later one wins, so the
//! backend declares `atomic_create: false`. cairn's objects are
//! content-addressed (same name, same bytes) except the config and locks,
//! which the engine guards separately on such backends.
//!
//! **Ranged reads** use `REST` + `RETR` and read only the bytes asked for.
//! When less than [`DRAIN_LIMIT`] bytes of the object remain after the range
//! they are read and discarded, which keeps the connection in a known state;
//! otherwise the connection is closed (replies to `ABOR` differ between
//! servers, and one left unread desynchronises the connection) and the pool
//! opens a new one.
//!
//! Each FTP connection carries one transfer at a time, so the backend keeps
//! a small pool (option `connections`, default 4). Idle connections are
//! checked with `NOOP` before reuse.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Deserialize;
use suppaftp::list::ListParser;
use suppaftp::tokio::{
    AsyncRustlsConnector, AsyncRustlsStream, AsyncTlsConnector, ImplAsyncFtpStream, TokioTlsStream,
};
use suppaftp::types::FileType;
use suppaftp::{FtpError, FtpResult};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls;

use crate::net_url::{has_control, read_secret_file, temp_name, UrlParts};
use crate::options::{self, OptionMap};
use crate::{
    clip_range, Backend, BackendError, Capabilities, ErrorKind, Handle, Kind, ObjectMeta, PutMode,
    Result,
};

/// After a ranged read, a remainder up to this size is read and dropped
/// instead of sending `ABOR`.
pub const DRAIN_LIMIT: u64 = 1024 * 1024;

/// Bytes handed to the data connection per write, each under the timeout:
/// the timeout then bounds a stall, not the whole transfer.
const IO_CHUNK: usize = 1024 * 1024;

/// A pooled connection idle for longer than this is probed with `NOOP`.
const PROBE_AFTER: Duration = Duration::from_secs(15);

/// The options of an FTP(S) repository; unset means the default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FtpOptions {
    /// File whose first line is the password. The password is the URL's if
    /// it has one, else this file's, else env `CAIRN_FTP_PASSWORD`, else
    /// empty (enough for `anonymous`).
    pub password_file: Option<PathBuf>,
    /// Login name when the URL has none (env `CAIRN_FTP_USER`, default
    /// `anonymous`).
    pub user: Option<String>,
    /// Pool size (default 4, at most 64).
    pub connections: Option<usize>,
    /// Connect, command and stall timeout in seconds (default 60).
    pub timeout_secs: Option<u64>,
    /// PEM certificates trusted besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Implicit FTPS (`ftps://` only; default false: explicit `AUTH TLS`).
    pub implicit_tls: Option<bool>,
    /// The name the certificate must carry, when it is not the URL's host.
    pub tls_server_name: Option<String>,
}

impl FtpOptions {
    /// The options as text (cairn.toml, [`FtpBackend::from_url`]); an
    /// unknown key is an error.
    pub fn from_map(text: &OptionMap) -> Result<FtpOptions> {
        options::from_map("ftp", text)
    }
}

/// A directory entry: name, size, whether it is a directory.
type Entry = (String, u64, bool);

type FtpStream = ImplAsyncFtpStream<FlushingTls>;

/// The rustls stream of suppaftp, made to flush what it buffers.
///
/// tokio-rustls accepts a write into its TLS buffer even when the socket
/// cannot take it at that moment, and sends it only on a later write or
/// flush. suppaftp writes each command without flushing and then waits for
/// the reply, so a command could stay in the buffer while client and server
/// both wait: a hang seen against vsftpd with several TLS connections busy.
/// This wrapper flushes after every write, and a write whose flush could
/// not finish is completed before the next read or write.
#[derive(Debug)]
struct FlushingTls {
    inner: AsyncRustlsStream,
    /// Bytes were accepted but may not have reached the socket yet.
    dirty: bool,
}

impl FlushingTls {
    fn poll_pending_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.dirty {
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            self.dirty = false;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for FlushingTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // A reply can only come after the command has left.
        ready!(this.poll_pending_flush(cx))?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlushingTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending_flush(cx))?;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            // The bytes are taken; the next read or write finishes the job
            // (the waker is registered for the socket becoming writable).
            Poll::Pending => this.dirty = true,
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.dirty = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl TokioTlsStream for FlushingTls {
    type InnerStream = <AsyncRustlsStream as TokioTlsStream>::InnerStream;

    fn tcp_stream(self) -> FtpResult<tokio::net::TcpStream> {
        self.inner.tcp_stream()
    }

    fn get_ref(&self) -> &tokio::net::TcpStream {
        self.inner.get_ref()
    }

    fn mut_ref(&mut self) -> &mut Self::InnerStream {
        self.inner.mut_ref()
    }
}

/// suppaftp's rustls connector, producing [`FlushingTls`] streams.
#[derive(Debug)]
struct FlushingConnector(AsyncRustlsConnector);

#[async_trait]
impl AsyncTlsConnector for FlushingConnector {
    type Stream = FlushingTls;

    async fn connect(
        &self,
        domain: &str,
        stream: tokio::net::TcpStream,
    ) -> FtpResult<Self::Stream> {
        let inner = self.0.connect(domain, stream).await?;
        Ok(FlushingTls {
            inner,
            dirty: false,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tls {
    None,
    Explicit,
    Implicit,
}

/// What a connection needs. Debug by hand: the password must not leak.
struct Config {
    host: String,
    port: u16,
    user: String,
    password: String,
    tls: Tls,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    server_name: String,
    timeout: Duration,
    connections: usize,
    /// The URL path, not yet resolved against the login directory.
    path: String,
}

struct Idle {
    ftp: FtpStream,
    since: Instant,
}

/// A borrowed connection and its pool slot.
struct Lease {
    ftp: Option<FtpStream>,
    _permit: OwnedSemaphorePermit,
}

/// An FTP server holding one repository.
pub struct FtpBackend {
    cfg: Config,
    /// Absolute directory of the repository, ending in `/`.
    root: OnceLock<String>,
    /// Whether the server lists with `MLSD` (else `LIST`).
    mlsd: OnceLock<bool>,
    idle: Mutex<Vec<Idle>>,
    slots: Arc<Semaphore>,
    display: String,
}

impl fmt::Debug for FtpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpBackend")
            .field("url", &self.display)
            .field("tls", &self.cfg.tls)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FtpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// One line of a `MLSD` (when `mlsd`) or `LIST` answer as an entry; `None`
/// for lines that name nothing (`total`, `.`, `..`).
pub(crate) fn parse_list_line(
    line: &str,
    mlsd: bool,
) -> std::result::Result<Option<Entry>, suppaftp::list::ParseError> {
    if !mlsd && line.starts_with("total ") {
        return Ok(None);
    }
    let f = if mlsd {
        ListParser::parse_mlsd(line)?
    } else {
        ListParser::parse_posix(line).or_else(|_| ListParser::parse_dos(line))?
    };
    let name = f.name().rsplit('/').next().unwrap_or_default().to_string();
    if name == "." || name == ".." || name.is_empty() {
        return Ok(None);
    }
    Ok(Some((name, f.size() as u64, f.is_directory())))
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The reply code of a failed command (suppaftp maps codes it does not
/// know to 0, so read the digits of the reply itself).
fn reply_code(e: &FtpError) -> Option<u32> {
    match e {
        FtpError::UnexpectedResponse(r) => r
            .body
            .get(..3)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse().ok())
            .or(Some(r.status.code())),
        _ => None,
    }
}

fn reply_text(e: &FtpError) -> String {
    match e {
        FtpError::UnexpectedResponse(r) => String::from_utf8_lossy(&r.body).trim().to_string(),
        other => other.to_string(),
    }
}

/// Whether a (lower-case) reply text says the action is not allowed, as
/// opposed to the file being missing.
fn says_not_allowed(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "permission",
        "denied",
        "privilege",
        "not permitted",
        "not allowed",
        "forbidden",
        "read-only",
        "read only",
    ];
    WORDS.iter().any(|w| text.contains(w))
}

/// Kind of a failure, and whether the connection is unusable after it.
fn classify(e: &FtpError) -> (ErrorKind, bool) {
    match e {
        FtpError::ConnectionError(io) => {
            let k = BackendError::from_io("", std::io::Error::new(io.kind(), "")).kind();
            // An I/O error in the middle of a session is never "not found".
            let k = if k.is_transient() {
                k
            } else {
                ErrorKind::Transient
            };
            (k, true)
        }
        FtpError::SecureError(msg) => {
            let m = msg.to_ascii_lowercase();
            if m.contains("certificate")
                || m.contains("unknownissuer")
                || m.contains("notvalidforname")
            {
                (ErrorKind::PermissionDenied, true)
            } else {
                (ErrorKind::Transient, true)
            }
        }
        FtpError::BadResponse => (ErrorKind::Corrupt, true),
        FtpError::InvalidAddress(_) => (ErrorKind::Corrupt, true),
        FtpError::DataConnectionAlreadyOpen => (ErrorKind::Other, true),
        FtpError::UnexpectedResponse(_) => {
            let code = reply_code(e).unwrap_or(0);
            let text = reply_text(e).to_ascii_lowercase();
            let kind = match code {
                530 | 332 | 532 => ErrorKind::Unauthenticated,
                552 | 452 => ErrorKind::StorageFull,
                // Servers word it differently: vsftpd "Permission denied",
                // pyftpdlib "Not enough privileges", ProFTPD "Operation
                // not permitted", others "Access denied", "read-only".
                550 | 553 | 450 if says_not_allowed(&text) => ErrorKind::PermissionDenied,
                550 => ErrorKind::NotFound,
                // 421: the server is closing the connection.
                421 => return (ErrorKind::Transient, true),
                400..=499 => ErrorKind::Transient,
                _ => ErrorKind::Other,
            };
            (kind, false)
        }
    }
}

async fn timed<T>(
    t: Duration,
    fut: impl std::future::Future<Output = FtpResult<T>>,
) -> FtpResult<T> {
    match tokio::time::timeout(t, fut).await {
        Ok(r) => r,
        Err(_) => Err(FtpError::ConnectionError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}s", t.as_secs()),
        ))),
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| {
                BackendError::with_source(
                    ErrorKind::Other,
                    format!("ftp: reading ca_file {}", path.display()),
                    e,
                )
            })?;
        if certs.is_empty() {
            return Err(BackendError::new(
                ErrorKind::Other,
                format!("ftp: ca_file {} holds no PEM certificate", path.display()),
            ));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                BackendError::with_source(
                    ErrorKind::Other,
                    format!("ftp: bad certificate in ca_file {}", path.display()),
                    e,
                )
            })?;
        }
    }
    // An explicit provider: `ClientConfig::builder()` panics when the
    // dependency graph enables more than one rustls crypto backend.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::with_source(ErrorKind::Other, "ftp: TLS setup", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl FtpBackend {
    /// [`FtpBackend::new`] with the options as text (see
    /// [`FtpOptions::from_map`]). Async only for the callers written
    /// against it: nothing is contacted here either.
    pub async fn from_url(url: &str, options: &OptionMap) -> Result<Self> {
        Self::new(url, FtpOptions::from_map(options)?)
    }

    /// Parse the URL and check the options (reads `password_file` and
    /// `ca_file`). Nothing is contacted yet: the first operation connects,
    /// so one unreachable backend does not stop a multi-backend run from
    /// starting; a wrong address, certificate or password is reported by
    /// that operation.
    pub fn new(url: &str, options: FtpOptions) -> Result<Self> {
        let u = UrlParts::parse(url, &["ftp", "ftps"])?;
        let user = u
            .user
            .clone()
            .or(options.user)
            .or_else(|| env_nonempty("CAIRN_FTP_USER"))
            .unwrap_or_else(|| "anonymous".to_string());
        let display = u.redacted(Some(&user));
        let implicit = options.implicit_tls.unwrap_or(false);
        let tls = match (u.scheme.as_str(), implicit) {
            ("ftp", false) => Tls::None,
            ("ftp", true) => {
                return Err(BackendError::new(
                    ErrorKind::Other,
                    format!("{display}: implicit_tls needs an ftps:// URL"),
                ))
            }
            (_, false) => Tls::Explicit,
            (_, true) => Tls::Implicit,
        };
        let password = match (&u.password, options.password_file.map(crate::home::expand)) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => read_secret_file("ftp", "password_file", &f)?,
            (None, None) => env_nonempty("CAIRN_FTP_PASSWORD").unwrap_or_default(),
        };
        // A line break would end the USER/PASS command and start another.
        if has_control(&user) || has_control(&password) {
            return Err(BackendError::new(
                ErrorKind::Unauthenticated,
                "the user name or password (URL, user, password_file, CAIRN_FTP_USER or \
                 CAIRN_FTP_PASSWORD) contains a control character (line break?)",
            ));
        }
        let ca_file = options.ca_file.map(crate::home::expand);
        let tls_config = match tls {
            Tls::None => None,
            _ => Some(tls_config(ca_file.as_deref())?),
        };
        let connections = options.connections.unwrap_or(4).clamp(1, 64);
        let cfg = Config {
            host: u.host.clone(),
            port: u
                .port
                .unwrap_or(if tls == Tls::Implicit { 990 } else { 21 }),
            user,
            password,
            tls,
            tls_config,
            server_name: options.tls_server_name.unwrap_or_else(|| u.host.clone()),
            timeout: Duration::from_secs(options.timeout_secs.unwrap_or(60).max(1)),
            connections,
            path: u.path.clone(),
        };
        Ok(FtpBackend {
            cfg,
            root: OnceLock::new(),
            mlsd: OnceLock::new(),
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(connections)),
            display,
        })
    }

    fn err(&self, e: FtpError, what: &str, path: &str) -> BackendError {
        let (kind, _) = classify(&e);
        let text = reply_text(&e);
        let sep = if path.is_empty() { "" } else { " " };
        BackendError::with_source(
            kind,
            format!("{what}{sep}{path} on {}: {text}", self.display),
            e,
        )
    }

    /// Dial, secure, log in, switch to binary, and learn the root and the
    /// listing command on the first connection.
    async fn dial(&self) -> Result<FtpStream> {
        let c = &self.cfg;
        let t = c.timeout;
        let label = &self.display;
        let addr: SocketAddr =
            match tokio::time::timeout(t, tokio::net::lookup_host((c.host.as_str(), c.port))).await
            {
                Ok(Ok(mut addrs)) => addrs.next(),
                Ok(Err(_)) | Err(_) => None,
            }
            .ok_or_else(|| {
                BackendError::new(
                    ErrorKind::Unreachable,
                    format!("cannot resolve host {} for {label}", c.host),
                )
            })?;

        // Each connection gets its own TLS session cache: a data connection
        // must resume the session of *its* control connection (vsftpd's
        // `require_ssl_reuse`, on by default, refuses anything else, and
        // each vsftpd session process has its own ticket keys), while a
        // cache shared by the pool hands out whichever session came last.
        let per_connection = c.tls_config.as_ref().map(|base| {
            let mut cfg = (**base).clone();
            cfg.resumption = rustls::client::Resumption::in_memory_sessions(16);
            Arc::new(cfg)
        });
        let connector = || {
            FlushingConnector(AsyncRustlsConnector::from(
                tokio_rustls::TlsConnector::from(
                    per_connection
                        .clone()
                        .expect("TLS config exists for TLS modes"),
                ),
            ))
        };
        let connect_err = |e: FtpError| {
            let (kind, _) = classify(&e);
            let kind = match kind {
                ErrorKind::Transient if matches!(e, FtpError::ConnectionError(_)) => {
                    ErrorKind::Unreachable
                }
                k => k,
            };
            let what = match (&e, kind) {
                (FtpError::SecureError(_), ErrorKind::PermissionDenied) => {
                    format!("TLS certificate of {} refused", c.server_name)
                }
                _ => "connecting".to_string(),
            };
            BackendError::with_source(kind, format!("{label}: {what}: {}", reply_text(&e)), e)
        };

        let mut ftp = match c.tls {
            Tls::Implicit => {
                timed(
                    t,
                    FtpStream::connect_secure_implicit(addr, connector(), &c.server_name),
                )
                .await
            }
            // The whole greeting, not only the TCP connect, is bounded: a
            // server that accepts and then says nothing must not hang us.
            _ => timed(t, FtpStream::connect_timeout(addr, t)).await,
        }
        .map_err(connect_err)?;
        if c.tls == Tls::Explicit {
            ftp = timed(t, ftp.into_secure(connector(), &c.server_name))
                .await
                .map_err(|e| match e {
                    FtpError::UnexpectedResponse(_) => BackendError::with_source(
                        ErrorKind::Other,
                        format!("{label}: the server refused AUTH TLS: {}", reply_text(&e)),
                        e,
                    ),
                    e => connect_err(e),
                })?;
        }
        if c.tls == Tls::Implicit {
            // `into_secure` negotiates data protection for explicit TLS;
            // with implicit TLS it is ours to do (RFC 4217 §9), or the
            // server refuses data connections ("522 Data connections must
            // be encrypted") or, worse, runs them in the clear.
            for cmd in ["PBSZ 0", "PROT P"] {
                timed(t, ftp.custom_command(cmd, &[suppaftp::Status::CommandOk]))
                    .await
                    .map_err(|e| self.err(e, cmd, ""))?;
            }
        }
        // Never follow a PASV address elsewhere (FTP bounce, NAT confusion).
        ftp.set_passive_nat_workaround(true);
        timed(t, ftp.login(c.user.as_str(), c.password.as_str()))
            .await
            .map_err(|e| {
                let (kind, _) = classify(&e);
                let kind = if reply_code(&e).is_some_and(|c| (500..600).contains(&c)) {
                    ErrorKind::Unauthenticated
                } else {
                    kind
                };
                BackendError::with_source(
                    kind,
                    format!("{label}: login as {} failed: {}", c.user, reply_text(&e)),
                    e,
                )
            })?;
        timed(t, ftp.transfer_type(FileType::Binary))
            .await
            .map_err(|e| self.err(e, "TYPE I", ""))?;

        if self.root.get().is_none() {
            let root = self.resolve_root(&mut ftp).await?;
            let _ = self.root.set(root);
        }
        if self.mlsd.get().is_none() {
            // No FEAT support at all means no MLSD either.
            let mlsd = match timed(t, ftp.feat()).await {
                Ok(f) => f.keys().any(|k| k.eq_ignore_ascii_case("MLST")),
                Err(e) if classify(&e).1 => return Err(self.err(e, "FEAT", "")),
                Err(_) => false,
            };
            let _ = self.mlsd.set(mlsd);
        }
        Ok(ftp)
    }

    /// The absolute repository directory: the URL path below the login
    /// directory, or absolute when it starts with `//` (RFC 1738's `%2F`).
    async fn resolve_root(&self, ftp: &mut FtpStream) -> Result<String> {
        let p = self.cfg.path.as_str();
        let rel = p.strip_prefix('/').unwrap_or(p);
        let joined = if rel.starts_with('/') {
            rel.to_string()
        } else {
            let pwd = timed(self.cfg.timeout, ftp.pwd())
                .await
                .map_err(|e| self.err(e, "PWD", ""))?;
            format!("{}/{rel}", pwd.trim_end_matches('/'))
        };
        let trimmed = joined.trim_end_matches('/');
        Ok(if trimmed.is_empty() {
            "/".into()
        } else {
            format!("{trimmed}/")
        })
    }

    fn full(&self, rel: &str) -> String {
        format!(
            "{}{rel}",
            self.root.get().map(String::as_str).unwrap_or("/")
        )
    }

    /// A connection for one operation: an idle one that still answers, or a
    /// new one, within the pool's size.
    async fn lease(&self) -> Result<Lease> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the pool semaphore is never closed");
        loop {
            let idle = self.idle.lock().unwrap().pop();
            let Some(mut idle) = idle else { break };
            if idle.since.elapsed() < PROBE_AFTER {
                return Ok(Lease {
                    ftp: Some(idle.ftp),
                    _permit: permit,
                });
            }
            // Servers close idle sessions (vsftpd after 300 s); find out now
            // rather than in the middle of an operation.
            if timed(self.cfg.timeout, idle.ftp.noop()).await.is_ok() {
                return Ok(Lease {
                    ftp: Some(idle.ftp),
                    _permit: permit,
                });
            }
        }
        let ftp = self.dial().await?;
        Ok(Lease {
            ftp: Some(ftp),
            _permit: permit,
        })
    }

    /// Return a connection to the pool, unless it is `broken`.
    fn give_back(&self, mut lease: Lease, broken: bool) {
        if let Some(ftp) = lease.ftp.take() {
            if !broken {
                self.idle.lock().unwrap().push(Idle {
                    ftp,
                    since: Instant::now(),
                });
            }
        }
    }
}

/// Run `$body` with `$s` bound to a [`Session`] on a pooled connection, and
/// return the connection afterwards unless the body broke it. (A macro, as a
/// closure taking a `&mut Session` and returning a future borrowing both it
/// and the caller's arguments cannot be typed with today's closures.)
macro_rules! with_session {
    ($backend:expr, |$s:ident| $body:expr) => {{
        let backend = $backend;
        let mut lease = backend.lease().await?;
        let ftp = lease.ftp.as_mut().expect("a lease holds a connection");
        let mut $s = Session {
            b: backend,
            ftp,
            broken: false,
        };
        let r = $body;
        let broken = $s.broken;
        backend.give_back(lease, broken);
        r
    }};
}

/// One operation on one connection; records whether the connection broke.
struct Session<'a> {
    b: &'a FtpBackend,
    ftp: &'a mut FtpStream,
    broken: bool,
}

impl Session<'_> {
    fn t(&self) -> Duration {
        self.b.cfg.timeout
    }

    fn fail(&mut self, e: FtpError, what: &str, path: &str) -> BackendError {
        if classify(&e).1 {
            self.broken = true;
        }
        self.b.err(e, what, path)
    }

    /// `SIZE`: `None` when the file does not exist.
    async fn size(&mut self, path: &str) -> Result<Option<u64>> {
        match timed(self.t(), self.ftp.size(path)).await {
            Ok(n) => Ok(Some(n as u64)),
            Err(e) if reply_code(&e) == Some(550) => Ok(None),
            Err(e) => Err(self.fail(e, "SIZE", path)),
        }
    }

    /// `MKD -p`, tolerating directories that exist.
    async fn ensure_dir(&mut self, dir: &str) -> Result<()> {
        let mut pending = vec![dir.trim_end_matches('/').to_string()];
        while let Some(d) = pending.last().cloned() {
            if d.is_empty() {
                pending.pop();
                continue;
            }
            match timed(self.t(), self.ftp.mkdir(&d)).await {
                Ok(()) => {
                    pending.pop();
                }
                Err(e) if classify(&e).1 => return Err(self.fail(e, "MKD", &d)),
                Err(e) => {
                    // Exists already, or the parent is missing: CWD tells
                    // (all our paths are absolute, so moving is harmless).
                    if timed(self.t(), self.ftp.cwd(&d)).await.is_ok() {
                        pending.pop();
                        continue;
                    }
                    match d.rfind('/') {
                        Some(i) if i > 0 && !pending.contains(&d[..i].to_string()) => {
                            pending.push(d[..i].to_string())
                        }
                        _ => return Err(self.fail(e, "MKD", &d)),
                    }
                }
            }
        }
        Ok(())
    }

    async fn stor(&mut self, path: &str, data: &Bytes) -> FtpResult<()> {
        let t = self.t();
        let mut stream = timed(t, self.ftp.put_with_stream(path)).await?;
        for chunk in data.chunks(IO_CHUNK) {
            timed(t, async {
                stream
                    .write_all(chunk)
                    .await
                    .map_err(FtpError::ConnectionError)
            })
            .await?;
        }
        timed(t, stream.finish()).await
    }

    async fn put(&mut self, handle: &Handle, data: &Bytes, mode: PutMode) -> Result<()> {
        let path = self.b.full(&handle.path());
        let dir = path
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        let already = |b: &FtpBackend| {
            BackendError::new(
                ErrorKind::AlreadyExists,
                format!("{handle} on {}", b.display),
            )
        };
        if mode == PutMode::Create && self.size(&path).await?.is_some() {
            return Err(already(self.b));
        }
        let tmp = format!("{dir}/{}", temp_name());
        let stored = match self.stor(&tmp, data).await {
            Err(e) if matches!(reply_code(&e), Some(550 | 553)) => {
                self.ensure_dir(&dir).await?;
                self.stor(&tmp, data).await
            }
            r => r,
        };
        if let Err(e) = stored {
            let err = self.fail(e, "STOR", &tmp);
            self.remove_quietly(&tmp).await;
            return Err(err);
        }
        let result = async {
            match self.size(&tmp).await? {
                Some(n) if n == data.len() as u64 => {}
                got => {
                    return Err(BackendError::new(
                        ErrorKind::Transient,
                        format!(
                            "STOR {tmp} on {}: the server holds {} bytes of {}; the upload was cut short",
                            self.b.display,
                            got.map_or("no".to_string(), |n| n.to_string()),
                            data.len()
                        ),
                    ))
                }
            }
            // Narrow the race window of a create as far as FTP allows.
            if mode == PutMode::Create && self.size(&path).await?.is_some() {
                return Err(already(self.b));
            }
            let (t, ftp) = (self.t(), &mut *self.ftp);
            match timed(t, ftp.rename(&tmp, &path)).await {
                Ok(()) => Ok(()),
                Err(e) => Err(self.fail(e, "RNFR/RNTO", &path)),
            }
        }
        .await;
        if result.is_err() && !self.broken {
            self.remove_quietly(&tmp).await;
        }
        result
    }

    async fn remove_quietly(&mut self, path: &str) {
        if self.broken {
            return;
        }
        if let Err(e) = timed(self.t(), self.ftp.rm(path)).await {
            if classify(&e).1 {
                self.broken = true;
            }
            tracing::debug!("ftp {}: leaving temporary {path}: {e}", self.b.display);
        }
    }

    async fn get(&mut self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        let path = self.b.full(&handle.path());
        let t = self.t();
        let (r, size) = match range {
            None => (None, None),
            Some(r) => {
                let size = self.size(&path).await?.ok_or_else(|| {
                    BackendError::new(
                        ErrorKind::NotFound,
                        format!("{handle} on {}", self.b.display),
                    )
                })?;
                (Some(clip_range(handle, &r, size)?), Some(size))
            }
        };
        if let Some(r) = &r {
            if r.is_empty() {
                return Ok(Bytes::new());
            }
            if r.start > 0 {
                let _ = self.ftp.resume_transfer(r.start as usize).await;
            }
        }
        let mut stream = match timed(t, self.ftp.retr_as_stream(&path)).await {
            Ok(s) => s,
            Err(e) => return Err(self.fail(e, "RETR", &path)),
        };
        let mut out = Vec::with_capacity(r.as_ref().map_or(0, |r| (r.end - r.start) as usize));
        let read = match &r {
            None => loop {
                let mut buf = vec![0u8; IO_CHUNK];
                match timed(t, async {
                    stream
                        .read(&mut buf)
                        .await
                        .map_err(FtpError::ConnectionError)
                })
                .await
                {
                    Ok(0) => break Ok(()),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => break Err(e),
                }
            },
            Some(r) => {
                out.resize((r.end - r.start) as usize, 0);
                let mut filled = 0;
                loop {
                    if filled == out.len() {
                        break Ok(());
                    }
                    let end = (filled + IO_CHUNK).min(out.len());
                    match timed(t, async {
                        stream
                            .read(&mut out[filled..end])
                            .await
                            .map_err(FtpError::ConnectionError)
                    })
                    .await
                    {
                        Ok(0) => {
                            break Err(FtpError::ConnectionError(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!("the transfer ended at byte {} of the range", filled),
                            )))
                        }
                        Ok(n) => filled += n,
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        if let Err(e) = read {
            drop(stream);
            self.broken = true;
            return Err(self.b.err(e, "RETR", &path));
        }
        let remaining = match (&r, size) {
            (Some(r), Some(size)) => size - r.end,
            _ => 0,
        };
        let finished = if remaining == 0 {
            timed(t, stream.finish()).await
        } else if remaining <= DRAIN_LIMIT {
            let mut sink = Vec::new();
            match timed(t, async {
                stream
                    .read_to_end(&mut sink)
                    .await
                    .map_err(FtpError::ConnectionError)
            })
            .await
            {
                Ok(_) => timed(t, stream.finish()).await,
                Err(e) => Err(e),
            }
        } else {
            // The bytes are in hand. Servers answer ABOR in different ways
            // (426 then 226, 225, or 226 alone), and a reply left unread
            // desynchronises every later command on this connection, so the
            // connection is closed instead and the pool opens a new one.
            drop(stream);
            self.broken = true;
            Ok(())
        };
        if let Err(e) = finished {
            return Err(self.fail(e, "RETR", &path));
        }
        Ok(Bytes::from(out))
    }

    /// Entries of `dir`: `(name, size, is_dir)`. A missing directory is empty.
    async fn list_dir(&mut self, dir: &str) -> Result<Vec<Entry>> {
        let mlsd = self.b.mlsd.get().copied().unwrap_or(false);
        let t = self.t();
        let lines = if mlsd {
            timed(t, self.ftp.mlsd(Some(dir))).await
        } else {
            timed(t, self.ftp.list(Some(dir))).await
        };
        let lines = match lines {
            Ok(l) => l,
            Err(e) if reply_code(&e) == Some(550) && classify(&e).0 == ErrorKind::NotFound => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(self.fail(e, "listing", dir)),
        };
        let mut out = Vec::with_capacity(lines.len());
        for line in lines {
            // An entry we cannot read could be an object: failing is safer
            // than a listing that silently misses it.
            let entry = parse_list_line(&line, mlsd).map_err(|e| {
                BackendError::with_source(
                    ErrorKind::Corrupt,
                    format!("listing {dir} on {}: cannot parse {line:?}", self.b.display),
                    e,
                )
            })?;
            out.extend(entry);
        }
        Ok(out)
    }

    async fn create_dirs(&mut self) -> Result<()> {
        let root = self.b.full("");
        self.ensure_dir(&root).await?;
        for kind in Kind::ALL {
            if kind != Kind::Config {
                let dir = self.b.full(kind.dir());
                self.ensure_dir(&dir).await?;
            }
        }
        Ok(())
    }

    async fn delete(&mut self, handle: &Handle) -> Result<()> {
        let path = self.b.full(&handle.path());
        match timed(self.t(), self.ftp.rm(&path)).await {
            Ok(()) => Ok(()),
            // 550 means "missing" on some servers and "not allowed" on
            // others (vsftpd: "Delete operation failed"): ask.
            Err(e) if reply_code(&e) == Some(550) => match self.size(&path).await? {
                None => Err(BackendError::new(
                    ErrorKind::NotFound,
                    format!("{handle} on {}", self.b.display),
                )),
                Some(_) => {
                    let text = reply_text(&e);
                    Err(BackendError::with_source(
                        ErrorKind::PermissionDenied,
                        format!("DELE {path} on {}: {text}", self.b.display),
                        e,
                    ))
                }
            },
            Err(e) => Err(self.fail(e, "DELE", &path)),
        }
    }
}

#[async_trait]
impl Backend for FtpBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_create: false,
            max_object_size: None,
            default_connections: self.cfg.connections,
            local: false,
        }
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        with_session!(self, |s| s.put(handle, &data, mode).await)
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        with_session!(self, |s| s.get(handle, range).await)
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        // The path is built once connected: the first connection resolves
        // the repository root.
        let size = with_session!(self, |s| {
            let path = s.b.full(&handle.path());
            s.size(&path).await
        })?;
        match size {
            Some(size) => Ok(ObjectMeta::new(handle.clone(), size)),
            None => Err(BackendError::new(
                ErrorKind::NotFound,
                format!("{handle} on {}", self.display),
            )),
        }
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        match kind {
            Kind::Config => {
                let size = with_session!(self, |s| {
                    let path = s.b.full("config");
                    s.size(&path).await
                })?;
                return Ok(size
                    .map(|size| ObjectMeta::new(Handle::config(), size))
                    .into_iter()
                    .collect());
            }
            Kind::Pack => {}
            k => {
                let dir = k.dir();
                let entries = with_session!(self, |s| {
                    let path = s.b.full(dir);
                    s.list_dir(&path).await
                })?;
                return Ok(entries
                    .into_iter()
                    .filter(|(_, _, is_dir)| !is_dir)
                    .filter_map(|(name, size, _)| {
                        let handle = Handle::from_path(k, &format!("{dir}/{name}"))?;
                        Some(ObjectMeta::new(handle, size))
                    })
                    .collect());
            }
        }
        // 256 sub-directories, one data connection each: list them on all
        // pooled connections at once.
        let subs: Vec<String> = with_session!(self, |s| {
            let data = s.b.full("data");
            s.list_dir(&data).await
        })?
        .into_iter()
        .filter(|(name, _, is_dir)| *is_dir && name.len() == 2)
        .map(|(name, ..)| name)
        .collect();
        let listed: Vec<(String, Vec<Entry>)> = stream::iter(subs)
            .map(|sub| async move {
                let entries = with_session!(self, |s| {
                    let dir = s.b.full(&format!("data/{sub}"));
                    s.list_dir(&dir).await
                })?;
                Ok::<_, BackendError>((sub, entries))
            })
            .buffer_unordered(self.cfg.connections)
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for (sub, entries) in listed {
            for (name, size, is_dir) in entries {
                if is_dir {
                    continue;
                }
                if let Some(h) = Handle::from_path(kind, &format!("data/{sub}/{name}")) {
                    out.push(ObjectMeta::new(h, size));
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        with_session!(self, |s| s.delete(handle).await)
    }

    async fn create(&self) -> Result<()> {
        with_session!(self, |s| s.create_dirs().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configure_and_display() {
        let b = FtpBackend::new(
            "ftp://bob:hunter2@127.0.0.1:2121/repos",
            FtpOptions::default(),
        )
        .unwrap();
        assert_eq!(b.to_string(), "ftp://bob:***@127.0.0.1:2121/repos");
        assert!(!format!("{b:?}").contains("hunter2"));
        assert_eq!(b.cfg.tls, Tls::None);
        assert!(!b.capabilities().atomic_create);

        let o = FtpOptions {
            implicit_tls: Some(true),
            ..FtpOptions::default()
        };
        let b = FtpBackend::new("ftps://h/x", o.clone()).unwrap();
        assert_eq!((b.cfg.tls, b.cfg.port), (Tls::Implicit, 990));
        assert!(FtpBackend::new("ftp://h/x", o).is_err());
    }

    #[test]
    fn reply_classes() {
        let resp = |code: u32, text: &str| {
            FtpError::UnexpectedResponse(suppaftp::types::Response::new(
                suppaftp::Status::from(code),
                format!("{code} {text}\r\n").into_bytes(),
            ))
        };
        assert_eq!(
            classify(&resp(530, "Login incorrect.")),
            (ErrorKind::Unauthenticated, false)
        );
        assert_eq!(
            classify(&resp(550, "No such file")),
            (ErrorKind::NotFound, false)
        );
        assert_eq!(
            classify(&resp(550, "Permission denied.")),
            (ErrorKind::PermissionDenied, false)
        );
        assert_eq!(
            classify(&resp(550, "Not enough privileges.")),
            (ErrorKind::PermissionDenied, false)
        );
        assert_eq!(
            classify(&resp(553, "Could not create file: read-only file system")),
            (ErrorKind::PermissionDenied, false)
        );
        assert_eq!(
            classify(&resp(552, "Quota")),
            (ErrorKind::StorageFull, false)
        );
        assert_eq!(
            classify(&resp(452, "Insufficient storage")),
            (ErrorKind::StorageFull, false)
        );
        assert_eq!(classify(&resp(450, "busy")), (ErrorKind::Transient, false));
        assert_eq!(
            classify(&resp(421, "Timeout")),
            (ErrorKind::Transient, true)
        );
    }
}
