//! The webhook: one POST of a JSON body per attempt, cairn's own shape or
//! a Slack-compatible message. The URL is a secret (Slack's carry their
//! token in the path), so the webhook is named by its host everywhere and
//! errors are stripped of the URL.

use std::time::Duration;

use serde_json::{json, Value};

use super::{chain, AttemptError, Event, Notification, NotifyError, Target};
use crate::config::notify::{check_webhook_url, Secret, WebhookFormat};
use crate::config::ConfigError;

pub(super) struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Host and port, the only part of the URL ever shown.
    host: String,
    format: WebhookFormat,
    timeout: Duration,
}

impl Webhook {
    pub(super) fn new(
        url: &Secret,
        format: WebhookFormat,
        timeout: Duration,
    ) -> Result<Webhook, ConfigError> {
        const KEY: &str = "notify.webhook";
        let text = url.resolve(KEY)?;
        let url = check_webhook_url(KEY, &text)?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => unreachable!("check_webhook_url requires a host"),
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect would be followed with a GET and no body; an
            // answer that is not a success is an error to report instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Invalid(format!("{KEY}: HTTP client: {}", chain(&e))))?;
        Ok(Webhook {
            client,
            url,
            host,
            format,
            timeout,
        })
    }

    pub(super) fn target(&self) -> Target {
        Target::Webhook {
            host: self.host.clone(),
        }
    }

    /// One attempt. 5xx, 408 and 429 answers and connection errors may be
    /// retried; other answers would only be given again.
    pub(super) async fn send(&self, n: &Notification) -> Result<(), AttemptError> {
        let result = self
            .client
            .post(self.url.clone())
            .json(&body(n, self.format))
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let error = if e.is_timeout() {
                    NotifyError::Timeout(self.timeout)
                } else {
                    NotifyError::Connection(self.scrub(&chain(&e.without_url())))
                };
                return Err(AttemptError { error, retry: true });
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let code = status.as_u16();
        Err(AttemptError {
            error: NotifyError::Status(code),
            retry: status.is_server_error() || code == 408 || code == 429,
        })
    }

    /// `text` without the URL or its path, should a layer under reqwest
    /// have put them in a message.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(self.url.as_str(), &self.host);
        let path = self.url.path();
        if path.len() > 1 {
            out = out.replace(path, "/***");
        }
        if let Some(q) = self.url.query().filter(|q| !q.is_empty()) {
            out = out.replace(q, "***");
        }
        out
    }
}

/// The body of the POST for `n` in `format`.
pub(super) fn body(n: &Notification, format: WebhookFormat) -> Value {
    match format {
        WebhookFormat::Json => serde_json::to_value(n).expect("a notification is plain data"),
        WebhookFormat::Slack => slack(n),
    }
}

/// A Slack message: `text` for notifications and clients without blocks,
/// and blocks with the facts as fields and the error as code.
fn slack(n: &Notification) -> Value {
    let icon = match n.event {
        Event::Failure => ":red_circle:",
        Event::Partial => ":large_orange_circle:",
        Event::Stale => ":hourglass:",
        Event::Recovery => ":large_green_circle:",
    };
    let mut fields = vec![field("Event", n.event.as_str()), field("Host", &n.host)];
    if let Some(job) = &n.job {
        fields.push(field("Job", job));
    }
    if !n.replicas.is_empty() {
        fields.push(field("Replicas", &n.replicas.join(", ")));
    }
    if let Some(s) = &n.snapshot {
        fields.push(field("Snapshot", s));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": n.title()}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("{icon} {}", escape(&n.summary))}, "fields": fields}),
    ];
    if let Some(e) = &n.error {
        // Slack refuses a text over 3000 characters.
        let e: String = e.chars().take(2900).collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{}```", e.replace("```", "'''"))}}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("cairn on {} at {}", escape(&n.host), n.time)}]}));
    json!({"text": format!("{}: {}", n.title(), n.summary), "blocks": blocks})
}

fn field(name: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", escape(value))})
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
