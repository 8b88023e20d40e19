//! `cairn config show` and `cairn config validate`.

use clap::Subcommand;
use serde_json::json;

use super::{exit, output, repos, Global, UsageError};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the configuration as cairn reads it, secrets redacted.
    Show,
    /// Check the configuration (backends, jobs, schedules, notifications)
    /// without reading secrets or touching storage; mistakes name the
    /// file, line and key.
    Validate,
}

pub fn run(g: &Global, c: ConfigCommand) -> anyhow::Result<i32> {
    match c {
        ConfigCommand::Show => show(g),
        ConfigCommand::Validate => validate(g),
    }
}

fn show(g: &Global) -> anyhow::Result<i32> {
    let config = repos::load_config(g)?;
    let (path, table) = match &config.source {
        Some(s) => (
            Some(s.path.display().to_string()),
            toml::from_str::<toml::Table>(&s.text)?,
        ),
        None => (None, toml::Table::new()),
    };
    let table = redact_table(&table, &[]);
    if g.json {
        output::print_json(&json!({"type": "config", "file": path, "config": table}));
        return Ok(exit::OK);
    }
    match &path {
        Some(p) => println!("# {p}"),
        None => println!(
            "# no configuration file ({} does not exist): the default local repository is used",
            cairn::config::paths::default_config_file().display()
        ),
    }
    print!("{}", toml::to_string_pretty(&table)?);
    Ok(exit::OK)
}

/// Key names whose inline values are secrets.
const SECRET_KEYS: [&str; 8] = [
    "password",
    "secret",
    "token",
    "passphrase",
    "sas",
    "webhook",
    "key",
    "credentials",
];

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    // `key_file`, `ca_file`: paths, not secrets.
    !k.ends_with("_file")
        && !k.ends_with("_id")
        && SECRET_KEYS
            .iter()
            .any(|s| k.split('_').any(|part| part == *s) || k == *s)
}

/// The table with inline secrets replaced by `***` and passwords in URLs
/// redacted; `{ env = … }` and `{ file = … }` references are shown, since
/// they name where a secret is, not the secret.
fn redact_table(t: &toml::Table, path: &[&str]) -> toml::Table {
    t.iter()
        .map(|(k, v)| {
            let mut p = path.to_vec();
            p.push(k);
            (k.clone(), redact_value(k, v, &p))
        })
        .collect()
}

fn redact_value(key: &str, v: &toml::Value, path: &[&str]) -> toml::Value {
    use toml::Value;
    match v {
        Value::Table(t) => Value::Table(redact_table(t, path)),
        Value::String(_) if is_secret_key(key) => Value::String("***".into()),
        Value::String(s) if key == "url" || s.contains("://") => Value::String(repos::redact(s)),
        Value::Array(a) if is_secret_key(key) => {
            Value::Array(a.iter().map(|_| Value::String("***".into())).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| redact_value(key, x, path)).collect()),
        other => other.clone(),
    }
}

fn validate(g: &Global) -> anyhow::Result<i32> {
    let config = repos::load_config(g)?;
    let problems = cairn::config::check::check(&config);
    let file = config.source.as_ref().map(|s| s.path.display().to_string());
    if !problems.is_empty() {
        if g.json {
            output::print_json(
                &json!({"type": "config_validate", "ok": false, "file": file, "problems": problems}),
            );
            return Ok(exit::USAGE);
        }
        anyhow::bail!(UsageError(problems.join("\n")));
    }
    let jobs = config.jobs()?;
    if g.json {
        output::print_json(&json!({
            "type": "config_validate", "ok": true, "file": file,
            "backends": config.backends.keys().collect::<Vec<_>>(),
            "jobs": jobs.iter().map(|j| &j.name).collect::<Vec<_>>(),
        }));
    } else if !g.quiet {
        println!(
            "{}: ok ({} backends, {} jobs)",
            file.as_deref().unwrap_or("no configuration file"),
            config.backends.len(),
            jobs.len()
        );
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_references_kept() {
        let t: toml::Table = toml::from_str(
            "[backends.s]\nurl = \"sftp://u:pw@h/x\"\npassword = \"hunter2\"\nkey_file = \"/k\"\n\
             secret_access_key = \"abc\"\naccess_key_id = \"AKIA\"\n\
             [backends.t]\nurl = \"/x\"\npassword = { env = \"P\" }\n\
             [notify]\nwebhook = \"https://hooks.example/T/B/XYZ\"\n",
        )
        .unwrap();
        let out = toml::to_string(&redact_table(&t, &[])).unwrap();
        for secret in ["hunter2", ":pw@", "abc", "XYZ"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("key_file = \"/k\""), "{out}");
        assert!(out.contains("AKIA"), "{out}");
        assert!(out.contains("env = \"P\""), "{out}");
    }
}
