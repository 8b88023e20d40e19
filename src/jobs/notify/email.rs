//! E-mail over SMTP (lettre): one connection per notification, STARTTLS
//! or implicit TLS with the server's certificate verified against the
//! public roots plus `ca_file`, and a login when one is configured. The
//! message is plain text: the summary and the facts.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{chain, AttemptError, Notification, NotifyError, Target};
use crate::config::notify::{mailbox, EmailConfig, EmailTls};
use crate::config::ConfigError;

pub(super) struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// `server:port`, for reports.
    server: String,
    /// The login's user name, if any, for saying whose login was refused.
    user: Option<String>,
    timeout: Duration,
}

impl Email {
    pub(super) fn new(cfg: &EmailConfig, timeout: Duration) -> Result<Email, ConfigError> {
        let invalid = |key: &str, why: String| ConfigError::Invalid(format!("{key}: {why}"));
        let server = cfg.server.trim().to_string();
        let tls = match cfg.tls {
            EmailTls::None => Tls::None,
            EmailTls::Starttls | EmailTls::Tls => {
                let mut params = TlsParameters::builder(server.clone());
                if let Some(path) = &cfg.ca_file {
                    let pem = std::fs::read(path).map_err(|e| {
                        invalid(
                            "notify.email.ca_file",
                            format!("reading {}: {e}", path.display()),
                        )
                    })?;
                    let cert = Certificate::from_pem(&pem)
                        .ok()
                        .filter(|_| pem.windows(11).any(|w| w == b"-----BEGIN "))
                        .ok_or_else(|| {
                            invalid(
                                "notify.email.ca_file",
                                format!("{} holds no PEM certificate", path.display()),
                            )
                        })?;
                    params = params.add_root_certificate(cert);
                }
                let params = params.build_rustls().map_err(|e| {
                    invalid("notify.email", format!("TLS for {server}: {}", chain(&e)))
                })?;
                if cfg.tls == EmailTls::Starttls {
                    Tls::Required(params)
                } else {
                    Tls::Wrapper(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.clone())
            .port(cfg.port())
            .tls(tls)
            .timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            let password = password.resolve("notify.email.password")?;
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let to = cfg
            .to
            .iter()
            .enumerate()
            .map(|(i, t)| mailbox(&format!("notify.email.to[{i}]"), t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Email {
            transport: builder.build(),
            from: mailbox("notify.email.from", &cfg.from)?,
            to,
            server: format!("{server}:{}", cfg.port()),
            user: cfg.username.clone(),
            timeout,
        })
    }

    pub(super) fn target(&self) -> Target {
        Target::Email {
            server: self.server.clone(),
            to: self.to.iter().map(|m| m.email.to_string()).collect(),
        }
    }

    /// The message for `n`.
    pub(super) fn message(&self, n: &Notification) -> Result<Message, NotifyError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(n.title())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.clone());
        }
        b.body(n.text())
            .map_err(|e| NotifyError::Refused(format!("building the message: {e}")))
    }

    /// One attempt. A refusal (5xx: the login, an address) or a TLS
    /// failure (an untrusted certificate) would only happen again; a
    /// transient answer (4xx) or a connection problem may be retried.
    pub(super) async fn send(&self, n: &Notification) -> Result<(), AttemptError> {
        let message = self.message(n).map_err(|error| AttemptError {
            error,
            retry: false,
        })?;
        let e = match self.transport.send(message).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let text = format!("SMTP server {}: {}", self.server, chain(&e));
        let (error, retry) = if e.is_timeout() {
            (NotifyError::Timeout(self.timeout), true)
        } else if e.is_permanent() {
            let login = match (&self.user, e.status().map(|c| c.to_string())) {
                // 534/535: the credentials (RFC 4954), 530: none given.
                (Some(user), Some(code)) if matches!(code.as_str(), "530" | "534" | "535") => {
                    format!(" (the login of user {user} was refused)")
                }
                _ => String::new(),
            };
            (NotifyError::Refused(format!("{text}{login}")), false)
        } else if e.is_transient() {
            (NotifyError::Refused(text), true)
        } else if e.is_tls() || tls_refused(&e) {
            (NotifyError::Connection(text), false)
        } else {
            // Connection refused or reset, an unreadable answer.
            (
                NotifyError::Connection(text),
                !(e.is_client() || e.is_response()),
            )
        };
        Err(AttemptError { error, retry })
    }
}

/// Whether the TLS handshake failed (an untrusted or mismatched
/// certificate, no common protocol): the TLS layer reports that as an I/O
/// error of kind `InvalidData`, which another attempt would only repeat.
fn tls_refused(e: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::InvalidData;
        }
        source = s.source();
    }
    false
}
