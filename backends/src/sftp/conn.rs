//! One SSH connection carrying a few SFTP channels, and its (re)connection.
//!
//! SFTP requests on one channel are answered in order by one server process
//! (OpenSSH forks one `sftp-server` per channel), so concurrent operations
//! spread over several channels; each channel also pipelines the reads and
//! writes of a single transfer. All channels share one TCP connection and
//! one key exchange.
//!
//! A connection that fails at the transport level (I/O error, timeout, closed
//! session) is dropped from the [`Pool`]; the next operation dials again. The
//! failed operation itself reports [`ErrorKind::Transient`] so the retry
//! decorator can repeat it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::rawsession::Limits;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{Packet, StatusCode};

use super::known_hosts::HostKeyPolicy;
use crate::{BackendError, ErrorKind, Result};

/// OpenSSH's sftp-server accepts requests up to 256 KiB and answers reads
/// of up to 255 KiB ("limits@openssh.com"); the SFTP drafts only promise
/// 32 KiB, which is what a server without the limits extension gets.
const MAX_IO_LEN: u64 = 255 * 1024;
const SAFE_IO_LEN: u64 = 32 * 1024;
/// Largest incoming SFTP packet we accept: a full read reply plus headers.
const MAX_PACKET_LEN: u32 = 256 * 1024 + 1024;

/// Where to connect and how to prove who we are.
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: Auth,
    pub host_keys: HostKeyPolicy,
    pub timeout: Duration,
    /// SFTP channels per SSH connection.
    pub channels: usize,
    /// Shown in messages, never contains a secret.
    pub label: String,
}

/// Credentials. Debug is implemented by hand so a password never reaches a
/// log line.
pub(crate) struct Auth {
    /// An explicit private key: only this key is offered (like OpenSSH's
    /// `IdentitiesOnly`), then the password if one is set.
    pub key_file: Option<PathBuf>,
    pub key_passphrase: Option<String>,
    pub password: Option<String>,
    /// Without an explicit key: try ssh-agent (`SSH_AUTH_SOCK`) and then the
    /// default key files.
    pub default_keys: Vec<PathBuf>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("key_file", &self.key_file)
            .field(
                "key_passphrase",
                &self.key_passphrase.as_ref().map(|_| "***"),
            )
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("default_keys", &self.default_keys)
            .finish()
    }
}

/// Which optional server features a channel has.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Features {
    pub posix_rename: bool,
    pub fsync: bool,
    pub statvfs: bool,
    /// Bytes per read request.
    pub read_len: u32,
    /// Bytes of payload per write request.
    pub write_len: u32,
}

/// One SFTP channel.
pub(crate) struct Channel {
    pub raw: RawSftpSession,
    pub features: Features,
}

/// An authenticated SSH connection with its SFTP channels.
pub(crate) struct Conn {
    ssh: Handle<Client>,
    channels: Vec<Arc<Channel>>,
    next: AtomicUsize,
}

impl Conn {
    fn is_closed(&self) -> bool {
        self.ssh.is_closed()
    }

    /// The next channel, round robin.
    pub fn channel(&self) -> Arc<Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }
}

/// The current connection, dialled on first use and again after a failure.
pub(crate) struct Pool {
    target: Arc<Target>,
    slot: Mutex<Option<Arc<Conn>>>,
    /// Serialises dialling so a burst of requests after a drop makes one
    /// connection, not one each.
    dialling: tokio::sync::Mutex<()>,
}

impl Pool {
    pub fn new(target: Arc<Target>) -> Self {
        Pool {
            target,
            slot: Mutex::new(None),
            dialling: tokio::sync::Mutex::new(()),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn current(&self) -> Option<Arc<Conn>> {
        let slot = self.slot.lock().unwrap();
        slot.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// A live connection, dialling if there is none.
    pub async fn get(&self) -> Result<Arc<Conn>> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _guard = self.dialling.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let conn = Arc::new(connect(&self.target).await?);
        *self.slot.lock().unwrap() = Some(conn.clone());
        Ok(conn)
    }

    /// Forget `conn` after a transport failure (if it is still the current one).
    pub fn invalidate(&self, conn: &Arc<Conn>) {
        let mut slot = self.slot.lock().unwrap();
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            tracing::debug!("sftp {}: dropping failed connection", self.target.label);
            *slot = None;
        }
    }
}

/// Whether an SFTP error means the channel or connection is gone (rather
/// than the server refusing one request).
pub(crate) fn is_transport_error(e: &SftpError) -> bool {
    match e {
        SftpError::Status(s) => matches!(
            s.status_code,
            StatusCode::NoConnection | StatusCode::ConnectionLost
        ),
        SftpError::Limited(_) => false,
        SftpError::IO(_)
        | SftpError::Timeout
        | SftpError::UnexpectedPacket
        | SftpError::UnexpectedBehavior(_) => true,
    }
}

/// The russh handler: only host key verification.
pub(crate) struct Client {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
}

/// russh wants the handler's error type to absorb its own errors; a refused
/// host key is carried through as the finished [`BackendError`].
#[derive(Debug)]
pub(crate) enum ClientError {
    Ssh(russh::Error),
    HostKey(BackendError),
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Ssh(e)
    }
}

impl client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        // A host certificate is checked by the key it certifies: we pin keys,
        // we do not trust CAs.
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        match self.policy.check(&self.host, self.port, &key) {
            Ok(()) => Ok(true),
            Err(e) => Err(ClientError::HostKey(e)),
        }
    }
}

fn map_russh(label: &str, what: &str, e: russh::Error) -> BackendError {
    use russh::Error as E;
    match e {
        E::IO(io) => BackendError::from_io(format!("{what} {label}"), io),
        E::Disconnect | E::HUP | E::ConnectionTimeout | E::KeepaliveTimeout | E::SendError => {
            BackendError::with_source(ErrorKind::Transient, format!("{what} {label}"), e)
        }
        other => BackendError::with_source(ErrorKind::Other, format!("{what} {label}"), other),
    }
}

fn map_client(label: &str, what: &str, e: ClientError) -> BackendError {
    match e {
        ClientError::HostKey(e) => e,
        ClientError::Ssh(e) => map_russh(label, what, e),
    }
}

async fn with_timeout<T>(
    t: Duration,
    label: &str,
    what: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(t, fut).await {
        Ok(r) => r,
        Err(_) => Err(BackendError::new(
            ErrorKind::Transient,
            format!("{what} {label}: timed out after {}s", t.as_secs()),
        )),
    }
}

/// Dial, check the host key, authenticate and open the SFTP channels.
async fn connect(target: &Target) -> Result<Conn> {
    let label = &target.label;
    let t = target.timeout;
    // Resolve first so a bad name says so instead of surfacing as an I/O error.
    let addrs: Vec<_> = with_timeout(t, label, "resolving", async {
        tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| {
                BackendError::with_source(
                    ErrorKind::Unreachable,
                    format!("cannot resolve host {} for {label}", target.host),
                    e,
                )
            })
    })
    .await?
    .collect();

    let config = client::Config {
        // A larger window than russh's 2 MiB default keeps loopback and
        // long-haul downloads from stalling on window adjustments.
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 32 * 1024,
        nodelay: true,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        ..Default::default()
    };
    let handler = Client {
        host: target.host.clone(),
        port: target.port,
        policy: target.host_keys.clone(),
    };
    let mut ssh = match tokio::time::timeout(
        t,
        client::connect(Arc::new(config), addrs.as_slice(), handler),
    )
    .await
    {
        Ok(r) => r.map_err(|e| map_client(label, "connecting to", e))?,
        Err(_) => {
            return Err(BackendError::new(
                ErrorKind::Unreachable,
                format!("connecting to {label}: timed out after {}s", t.as_secs()),
            ))
        }
    };

    with_timeout(
        t,
        label,
        "authenticating to",
        authenticate(&mut ssh, target),
    )
    .await?;

    // All at once: each channel takes three round trips (open, init,
    // limits; the subsystem request is not waited for), so opening them
    // one after the other cost 12 round trips with the default 4, 0.6 s at
    // 50 ms RTT, before the first request.
    let ssh_ref = &ssh;
    let channels = futures_util::future::try_join_all((0..target.channels.max(1)).map(|_| async {
        with_timeout(
            t,
            label,
            "opening an SFTP channel on",
            open_channel(ssh_ref, target),
        )
        .await
        .map(Arc::new)
    }))
    .await?;
    tracing::debug!(
        "sftp {label}: connected with {} channels, {:?}",
        channels.len(),
        channels[0].features
    );
    Ok(Conn {
        ssh,
        channels,
        next: AtomicUsize::new(0),
    })
}

async fn open_channel(ssh: &Handle<Client>, target: &Target) -> Result<Channel> {
    let label = &target.label;
    let ch = ssh
        .channel_open_session()
        .await
        .map_err(|e| map_russh(label, "opening a channel on", e))?;
    // Without waiting for the server's answer: the SFTP init goes out
    // right behind the request, on the same channel, and the server handles
    // a channel's messages in order (RFC 4254, 5 and 6.5; OpenSSH's own
    // client does not wait either). A server that refuses the subsystem
    // closes the channel, and the init below fails with the message that
    // says so. One round trip less per connection.
    ch.request_subsystem(false, "sftp")
        .await
        .map_err(|e| map_russh(label, "starting the sftp subsystem on", e))?;
    let cfg = russh_sftp::client::Config {
        max_packet_len: MAX_PACKET_LEN,
        request_timeout_secs: target.timeout.as_secs(),
        ..Default::default()
    };
    let mut raw = RawSftpSession::new_with_config(ch.into_stream(), cfg);
    let version = raw.init().await.map_err(|e| {
        BackendError::with_source(
            ErrorKind::Transient,
            format!("SFTP handshake with {label} failed (is the sftp subsystem enabled?)"),
            e,
        )
    })?;
    let has = |name: &str, ver: &str| version.extensions.get(name).is_some_and(|v| v == ver);
    let mut features = Features {
        posix_rename: has("posix-rename@openssh.com", "1"),
        fsync: has("fsync@openssh.com", "1"),
        statvfs: has("statvfs@openssh.com", "2"),
        read_len: SAFE_IO_LEN as u32,
        write_len: SAFE_IO_LEN as u32,
    };
    if has("limits@openssh.com", "1") {
        if let Ok(l) = raw.limits().await {
            let limits = Limits::from(l);
            // The client library enforces the limits itself; our request
            // sizes stay within them below.
            raw.set_limits(limits);
            let cap =
                |v: Option<u64>| v.unwrap_or(MAX_IO_LEN).clamp(SAFE_IO_LEN, MAX_IO_LEN) as u32;
            features.read_len = cap(limits.read_len);
            // A write request carries the handle and headers besides the
            // payload; keep the whole packet under the server's limit.
            let packet_cap = limits.packet_len.map(|p| p.saturating_sub(1024));
            features.write_len = cap(match (limits.write_len, packet_cap) {
                (Some(w), Some(p)) => Some(w.min(p)),
                (w, p) => w.or(p),
            });
        }
    }
    Ok(Channel { raw, features })
}

async fn authenticate(ssh: &mut Handle<Client>, target: &Target) -> Result<()> {
    let label = &target.label;
    let user = target.user.as_str();
    let auth = &target.auth;
    let mut tried: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let rsa_hash = ssh
        .best_supported_rsa_hash()
        .await
        .map_err(|e| map_russh(label, "authenticating to", e))?
        .flatten();

    let ok = |r: std::result::Result<AuthResult, russh::Error>| -> Result<bool> {
        r.map(|a| a.success())
            .map_err(|e| map_russh(label, "authenticating to", e))
    };

    if let Some(path) = &auth.key_file {
        let key = load_key(path, auth.key_passphrase.as_deref())?;
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash);
        if ok(ssh.authenticate_publickey(user, key).await)? {
            return Ok(());
        }
        tried.push(format!("key {}", path.display()));
    } else {
        #[cfg(unix)]
        if std::env::var_os("SSH_AUTH_SOCK").is_some() {
            match agent_auth(ssh, user, rsa_hash).await {
                Ok(true) => return Ok(()),
                Ok(false) => tried.push("ssh-agent keys".into()),
                Err(why) => notes.push(format!("ssh-agent not used: {why}")),
            }
        }
        for path in &auth.default_keys {
            if !path.exists() {
                continue;
            }
            let key = match load_key(path, auth.key_passphrase.as_deref()) {
                Ok(k) => k,
                Err(e) => {
                    notes.push(e.message().to_string());
                    continue;
                }
            };
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash);
            if ok(ssh.authenticate_publickey(user, key).await)? {
                return Ok(());
            }
            tried.push(format!("key {}", path.display()));
        }
    }
    if let Some(pw) = &auth.password {
        if ok(ssh.authenticate_password(user, pw.as_str()).await)? {
            return Ok(());
        }
        tried.push("password".into());
    }
    let mut msg = format!("ssh authentication as {user} to {label} failed");
    if tried.is_empty() {
        msg.push_str(
            ": no credentials to offer (set key_file / CAIRN_SFTP_KEY, run ssh-agent, \
             or set CAIRN_SFTP_PASSWORD / password_file)",
        );
    } else {
        msg.push_str(&format!("; tried: {}", tried.join(", ")));
    }
    if !notes.is_empty() {
        msg.push_str(&format!(" ({})", notes.join("; ")));
    }
    Err(BackendError::new(ErrorKind::Unauthenticated, msg))
}

fn load_key(path: &std::path::Path, passphrase: Option<&str>) -> Result<russh::keys::PrivateKey> {
    russh::keys::load_secret_key(path, passphrase).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => BackendError::new(
            ErrorKind::Unauthenticated,
            format!(
                "key file {} is encrypted: set CAIRN_SFTP_KEY_PASSPHRASE or load it into ssh-agent",
                path.display()
            ),
        ),
        russh::keys::Error::IO(io) => {
            BackendError::from_io(format!("reading key file {}", path.display()), io)
        }
        // The error of a wrong passphrase or a broken file; its text names
        // no secret.
        other => BackendError::with_source(
            ErrorKind::Unauthenticated,
            format!("cannot load key file {}", path.display()),
            other,
        ),
    })
}

/// Offer every key the agent holds. `Err` only when the agent itself is
/// unusable, which is reported but does not stop other methods.
#[cfg(unix)]
async fn agent_auth(
    ssh: &mut Handle<Client>,
    user: &str,
    rsa_hash: Option<russh::keys::HashAlg>,
) -> std::result::Result<bool, String> {
    use russh::keys::agent::client::AgentClient;
    use russh::keys::agent::AgentIdentity;

    let mut agent = AgentClient::connect_env()
        .await
        .map_err(|e| e.to_string())?;
    if let Some(binding) = ssh.agent_session_binding() {
        // Destination-constrained keys need the binding; older agents
        // refuse the extension, which is harmless.
        let _ = agent.bind_session(binding, false).await;
    }
    let ids = agent
        .request_identities()
        .await
        .map_err(|e| e.to_string())?;
    for id in ids {
        let AgentIdentity::PublicKey { key, .. } = id else {
            continue;
        };
        let hash = if key.algorithm().is_rsa() {
            rsa_hash
        } else {
            None
        };
        match ssh
            .authenticate_publickey_with(user, key, hash, &mut agent)
            .await
        {
            Ok(r) if r.success() => return Ok(true),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(false)
}

/// Encode an SFTP `string` (u32 length + bytes) for extension requests.
pub(crate) fn ssh_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `posix-rename@openssh.com`: rename that replaces the target atomically.
pub(crate) async fn posix_rename(
    raw: &RawSftpSession,
    from: &str,
    to: &str,
) -> std::result::Result<(), SftpError> {
    let mut data = Vec::with_capacity(8 + from.len() + to.len());
    ssh_string(&mut data, from);
    ssh_string(&mut data, to);
    match raw.extended("posix-rename@openssh.com", data).await? {
        Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
        Packet::Status(s) => Err(SftpError::Status(s)),
        _ => Err(SftpError::UnexpectedPacket),
    }
}
