//! `[api]` in cairn.toml: who may call `cairn serve`'s API (bearer tokens
//! with a role, each read from a file or an environment variable, never
//! written into the file), where the API may restore to, and the TLS
//! certificate it serves.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// What a token may do; each role can do everything the one before can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read and download.
    Viewer,
    /// Also run jobs, back up, restore and check.
    Operator,
    /// Also forget and prune.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// `[api]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `[[api.tokens]]`.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Directories `POST /restore` may write into (and below); none: the
    /// API cannot restore.
    #[serde(default)]
    pub restore_roots: Vec<PathBuf>,
    /// PEM certificate chain and private key: the API is served over TLS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

/// One `[[api.tokens]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it: recorded in the run history for what it does.
    pub label: String,
    pub role: Role,
    /// `{ file = "PATH" }` or `{ env = "VAR" }`.
    pub token: toml::Value,
}

/// A token read, with its label and role. Not `Debug`: the secret must not
/// reach a log line by accident.
pub struct Token {
    pub label: String,
    pub role: Role,
    pub secret: zeroize::Zeroizing<String>,
}

/// Tokens shorter than this are refused: a guessable token is no lock.
pub const MIN_TOKEN_LEN: usize = 16;

impl ApiConfig {
    /// The tokens, read now. A token written into the file itself, a label
    /// used twice, a secret too short or given twice is refused; the
    /// message names the token's label, never its value.
    pub fn read_tokens(&self) -> Result<Vec<Token>, ConfigError> {
        let mut out: Vec<Token> = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let what = format!("[[api.tokens]] #{} ({:?}): token", i + 1, t.label);
            if t.label.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "[[api.tokens]] #{}: label is empty",
                    i + 1
                )));
            }
            if !matches!(t.token, toml::Value::Table(_)) {
                return Err(ConfigError::Invalid(format!(
                    "{what}: must be {{ file = \"PATH\" }} or {{ env = \"VARIABLE\" }}, not written into cairn.toml"
                )));
            }
            let secret = zeroize::Zeroizing::new(super::factory::secret_text(&what, &t.token)?);
            if secret.len() < MIN_TOKEN_LEN {
                return Err(ConfigError::Invalid(format!(
                    "{what}: shorter than {MIN_TOKEN_LEN} characters"
                )));
            }
            if out.iter().any(|o| o.label == t.label) {
                return Err(ConfigError::Invalid(format!(
                    "[[api.tokens]]: label {:?} is used twice",
                    t.label
                )));
            }
            if out.iter().any(|o| *o.secret == *secret) {
                return Err(ConfigError::Invalid(format!(
                    "{what}: the same token as {:?}",
                    out.iter().find(|o| *o.secret == *secret).map(|o| &o.label)
                )));
            }
            out.push(Token {
                label: t.label.clone(),
                role: t.role,
                secret,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ApiConfig {
        crate::config::ConfigFile::parse(text).unwrap().api
    }

    #[test]
    fn tokens_come_from_files_with_a_role() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "0123456789abcdef-secret\n").unwrap();
        let c = parse(&format!(
            "[api]\nrestore_roots = [\"/srv\"]\n[[api.tokens]]\nlabel = \"ci\"\nrole = \"operator\"\ntoken = {{ file = {:?} }}\n",
            f.display().to_string()
        ));
        let t = c.read_tokens().unwrap();
        assert_eq!(t[0].label, "ci");
        assert_eq!(t[0].role, Role::Operator);
        assert_eq!(*t[0].secret, "0123456789abcdef-secret");
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn bad_tokens_are_refused_without_showing_them() {
        let inline = parse("[[api.tokens]]\nlabel = \"a\"\nrole = \"admin\"\ntoken = \"inline-secret-0123456789\"\n");
        let e = inline.read_tokens().err().unwrap().to_string();
        assert!(e.contains("not written into cairn.toml"), "{e}");
        assert!(!e.contains("inline-secret"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "short\n").unwrap();
        let short = parse(&format!(
            "[[api.tokens]]\nlabel = \"a\"\nrole = \"admin\"\ntoken = {{ file = {:?} }}\n",
            f.display().to_string()
        ));
        let e = short.read_tokens().err().unwrap().to_string();
        assert!(e.contains("shorter") && !e.contains("short\n"), "{e}");
        assert!(crate::config::ConfigFile::parse(
            "[[api.tokens]]\nlabel = \"a\"\nrole = \"root\"\ntoken = { env = \"X\" }\n"
        )
        .is_err());
    }
}
