use super::*;
use crate::config::ConfigFile;

fn parse(text: &str) -> Result<NotifyConfig, String> {
    let c = ConfigFile::parse(text).map_err(|e| e.to_string())?;
    let n = c.notify.expect("a [notify] table");
    n.validate().map_err(|e| e.to_string())?;
    Ok(n)
}

const EMAIL: &str = "[notify.email]\nserver = \"smtp.example.com\"\nfrom = \"cairn@example.com\"\nto = [\"ops@example.com\"]\n";

#[test]
fn the_documented_example_is_read_with_its_defaults() {
    let n = parse(
        r#"
[notify]
webhook = "https://hooks.example.com/T000/B000/XXXX"
format = "slack"
timeout = "10s"
retries = 3
repeat_after = "1h"
events = ["failure", "partial", "stale", "recovery"]
[notify.email]
server = "smtp.example.com"
port = 587
tls = "starttls"
username = "cairn"
password = { env = "SMTP_PASSWORD" }
from = "cairn@example.com"
to = ["ops@example.com"]
ca_file = "/etc/ssl/private-ca.pem"
"#,
    )
    .unwrap();
    assert_eq!(n.format, WebhookFormat::Slack);
    assert_eq!(n.timeout, Duration::from_secs(10));
    assert_eq!(n.repeat_after, Duration::from_secs(3600));
    assert_eq!(n.events, Event::all());
    let e = n.email.as_ref().unwrap();
    assert_eq!((e.port(), e.tls), (587, EmailTls::Starttls));

    let n = parse(&format!("[notify]\n{EMAIL}tls = \"tls\"\n")).unwrap();
    assert!(n.webhook.is_none());
    assert_eq!(n.format, WebhookFormat::Json);
    assert_eq!(
        (n.timeout, n.retries, n.backoff, n.repeat_after),
        (
            Duration::from_secs(10),
            3,
            Duration::from_secs(2),
            Duration::from_secs(3600)
        )
    );
    assert_eq!(n.email.unwrap().port(), 465);
}

#[test]
fn secrets_are_never_shown() {
    let n = parse(
        "[notify]\nwebhook = \"https://hooks.example.com/T000/B000/XXXX\"\n[notify.email]\n\
         server = \"smtp.example.com\"\nusername = \"u\"\npassword = \"hunter2\"\n\
         from = \"a@example.com\"\nto = [\"b@example.com\"]\n",
    )
    .unwrap();
    for shown in [
        format!("{n:?}"),
        serde_json::to_string(&n).unwrap(),
        toml::to_string(&n).unwrap(),
    ] {
        assert!(!shown.contains("XXXX"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
    let n = parse("[notify]\nwebhook = { env = \"CAIRN_HOOK\" }\n").unwrap();
    assert!(format!("{n:?}").contains("CAIRN_HOOK"));
    let err = n
        .webhook
        .unwrap()
        .resolve("notify.webhook")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "notify.webhook: environment variable CAIRN_HOOK is not set"
    );
}

#[test]
fn mistakes_name_their_key() {
    let hook = "[notify]\nwebhook = \"https://h.example.com/secret-path\"\n";
    for (text, named) in [
        // serde: the message names the key and shows the line.
        (format!("{hook}retires = 3\n"), "unknown field `retires`"),
        (format!("[notify]\n{EMAIL}tls = \"ssl\"\n"), "tls = \"ssl\""),
        (
            format!("[notify]\n{EMAIL}tls = \"ssl\"\n"),
            "unknown variant `ssl`",
        ),
        (format!("{hook}timeout = \"soon\"\n"), "timeout = \"soon\""),
        (
            format!("{hook}timeout = \"soon\"\n"),
            "\"soon\" is not a duration",
        ),
        (
            format!("{hook}events = [\"failed\"]\n"),
            "unknown variant `failed`",
        ),
        (
            format!("[notify]\n{EMAIL}sever = \"x\"\n"),
            "unknown field `sever`",
        ),
        // validate: the message starts with the key.
        (
            "[notify]\n".to_string(),
            "notify: neither webhook nor [notify.email]",
        ),
        (
            format!("{hook}timeout = \"0s\"\n"),
            "notify.timeout: 0s is not between",
        ),
        (
            format!("{hook}retries = 50\n"),
            "notify.retries: 50 is more than 10",
        ),
        (format!("{hook}events = []\n"), "notify.events: is empty"),
        (
            "[notify]\nwebhook = \"http://hooks.example.com/x\"\n".to_string(),
            "notify.webhook: http:// to hooks.example.com would send",
        ),
        (
            "[notify]\nwebhook = \"hooks.example.com/x\"\n".to_string(),
            "notify.webhook: not a URL",
        ),
        (
            "[notify]\nwebhook = { env = \"A\", file = \"B\" }\n".to_string(),
            "notify.webhook: must be a string",
        ),
        (
            format!("[notify]\n{EMAIL}tls = \"none\"\n"),
            "notify.email.tls: \"none\" would send the mail and the password to smtp.example.com",
        ),
        (
            format!("[notify]\n{EMAIL}tls = \"none\"\n"),
            "only allowed for a server on loopback",
        ),
        (
            format!("[notify]\n{EMAIL}port = 0\n"),
            "notify.email.port: 0 is not a port",
        ),
        (
            format!("[notify]\n{EMAIL}username = \"u\"\n"),
            "notify.email.password: is not set, but username is",
        ),
        (
            "[notify.email]\nserver = \"smtp://x\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n"
                .to_string(),
            "notify.email.server: \"smtp://x\" is not a host name",
        ),
        (
            "[notify.email]\nserver = \"x\"\nfrom = \"cairn\"\nto = [\"d@e.f\"]\n".to_string(),
            "notify.email.from: \"cairn\" is not an e-mail address",
        ),
        (
            "[notify.email]\nserver = \"x\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\", \"nobody\"]\n"
                .to_string(),
            "notify.email.to[1]: \"nobody\" is not an e-mail address",
        ),
        (
            "[notify.email]\nserver = \"x\"\nfrom = \"a@b.c\"\nto = []\n".to_string(),
            "notify.email.to: names no recipient",
        ),
    ] {
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains(named),
            "{text}\n---\n{err}\n--- should contain: {named}"
        );
        assert!(!err.contains("secret-path"), "{err}");
    }
}

#[test]
fn plain_connections_are_allowed_on_loopback_only() {
    for host in ["127.0.0.1", "localhost", "::1", "[::1]", "127.3.4.5"] {
        assert!(is_loopback(host), "{host}");
        parse(&format!(
            "[notify.email]\nserver = \"{host}\"\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n"
        ))
        .unwrap();
    }
    for host in ["10.0.0.1", "example.com", "localhost.example.com", "::2"] {
        assert!(!is_loopback(host), "{host}");
    }
    parse("[notify]\nwebhook = \"http://127.0.0.1:8080/hook\"\n").unwrap();
    parse("[notify]\nwebhook = \"http://[::1]:8080/hook\"\n").unwrap();
    let err = check_webhook_url("k", "https://user:pw@h.example.com/x").unwrap_err();
    assert!(
        err.to_string().contains("must not hold a user name"),
        "{err}"
    );
    assert!(!err.to_string().contains("pw"), "{err}");
}
