//! `config validate` beyond parsing: every backend's URL and options as
//! its backend would take them, the daemon's settings, and the jobs —
//! without reading secrets or touching storage, so a configuration can be
//! checked on a machine that has neither.

use std::collections::BTreeMap;

use super::{locate, ConfigError, ConfigFile, Limits};

/// Every mistake in `config`, each naming file, line and key; empty when
/// it is fine.
pub fn check(config: &ConfigFile) -> Vec<String> {
    let mut out = Vec::new();
    for (name, b) in &config.backends {
        let options: BTreeMap<String, toml::Value> = b
            .options
            .iter()
            .map(|(k, v)| (k.clone(), placeholder(v)))
            .collect();
        if let Err(e) = super::open_backend(&b.url, &options, Limits::default()) {
            // A missing CA or key file is this machine's business, not
            // the configuration's.
            if !matches!(e, ConfigError::Path { .. }) {
                out.push(config.at(&["backends", name], &e.to_string()));
            }
        }
        for (k, v) in &b.options {
            if let toml::Value::Table(t) = v {
                let fine = t.len() == 1
                    && ["env", "file", "credential"]
                        .iter()
                        .any(|key| matches!(t.get(*key), Some(toml::Value::String(_))));
                if !fine {
                    out.push(config.at(
                        &["backends", name, k],
                        "a table must be { env = \"VARIABLE\" }, { file = \"PATH\" } or \
                         { credential = \"NAME\" }",
                    ));
                }
            }
        }
    }
    if let Some(l) = &config.daemon.listen {
        if l.parse::<std::net::SocketAddr>().is_err() {
            out.push(config.at(
                &["daemon", "listen"],
                &format!("{l:?} is not an address and port (e.g. 127.0.0.1:9180)"),
            ));
        }
    }
    if let Some(n) = &config.notify {
        if let Err(e) = n.validate() {
            // Its messages start with the key they are about.
            let text = e.to_string();
            match text.split_once(": ") {
                Some((key, rest)) if key.starts_with("notify") && !key.contains(' ') => {
                    let path: Vec<&str> = key
                        .split('.')
                        .map(|k| k.split('[').next().unwrap_or(k))
                        .collect();
                    out.push(config.at(&path, rest));
                }
                _ => out.push(config.at(&["notify"], &text)),
            }
        }
    }
    if let Err(ConfigError::Invalid(e)) = config.jobs() {
        out.extend(e.lines().map(String::from));
    }
    out
}

/// A secret reference (`{ env = … }`, `{ file = … }`) stands for a value
/// that is not read while checking: a stand-in any secret option takes
/// (it is valid base64, as an Azure account key must be).
fn placeholder(v: &toml::Value) -> toml::Value {
    match v {
        toml::Value::Table(t)
            if t.contains_key("env") || t.contains_key("file") || t.contains_key("credential") =>
        {
            toml::Value::String("cGxhY2Vob2xkZXI=".into())
        }
        other => other.clone(),
    }
}

impl ConfigFile {
    /// `config FILE, line N, KEY: message` for the key `path`.
    pub fn at(&self, path: &[&str], message: &str) -> String {
        let (file, line) = match &self.source {
            Some(s) => (
                s.path.clone(),
                locate::span_of(&s.text, path).map(|r| locate::line_of(&s.text, r.start)),
            ),
            None => ("cairn.toml".into(), None),
        };
        super::at(&file, line, Some(&path.join(".")), message)
    }
}
