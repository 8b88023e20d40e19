//! Commands cairn runs for the user — the passphrase command,
//! `credential_process`, backup source commands, later hooks — start
//! without cairn's secrets in their environment.
//!
//! A child inherits the environment, and with it `CAIRN_PASSWORD` and every
//! backend credential, though it has no use for them: a password command
//! prints a passphrase, `credential_process` prints AWS credentials from
//! its own source. Whatever the child runs (a helper that logs its
//! environment, a shell with tracing on, a tool that sends crash reports)
//! would otherwise see them. Everything else (PATH, HOME, AWS_PROFILE,
//! locale, proxies) passes through.
//!
//! Which variables hold secrets:
//! - cairn's passphrase sources: `CAIRN_PASSWORD`, `CAIRN_PASSWORD_COMMAND`,
//!   `CAIRN_PASSWORD_FILE` (a path, but to the passphrase), and the
//!   `CAIRN_TO_…` counterparts of these (the target of `copy`);
//! - under the prefixes `CAIRN_`, `AWS_`, `AZURE_`, `GOOGLE_`, any name
//!   with `PASSWORD`, `PASSPHRASE`, `SECRET`, `TOKEN` or `SAS` in it, or
//!   ending in `_KEY` (`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//!   `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`,
//!   `AZURE_CLIENT_SECRET`, `CAIRN_FTP_PASSWORD`, `CAIRN_SFTP_PASSWORD`,
//!   `CAIRN_SFTP_KEY_PASSPHRASE`, `GOOGLE_SERVICE_ACCOUNT_KEY`, …) —
//!   except names ending in `_FILE`, which hold paths a child may need
//!   (`AWS_WEB_IDENTITY_TOKEN_FILE`); `GOOGLE_APPLICATION_CREDENTIALS` is
//!   a path too and passes;
//! - `AWS_ACCESS_KEY_ID`: not a secret, but without its secret key it is a
//!   half credential that AWS tools reject, and a `credential_process`
//!   run by the AWS CLI would pick it up instead of its profile;
//! - any variable a configuration names with `{ env = "VAR" }`
//!   ([`mark_secret_var`]), since an option read that way is usually a
//!   secret.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::sync::Mutex;

/// Variables named by the configuration as holding option values.
static MARKED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

const PREFIXES: [&str; 4] = ["CAIRN_", "AWS_", "AZURE_", "GOOGLE_"];
const SECRET_WORDS: [&str; 5] = ["PASSWORD", "PASSPHRASE", "SECRET", "TOKEN", "SAS"];
const ALWAYS: [&str; 3] = [
    "CAIRN_PASSWORD_FILE",
    "CAIRN_TO_PASSWORD_FILE",
    "AWS_ACCESS_KEY_ID",
];

/// Record that environment variable `name` holds a secret (an option read
/// with `{ env = "VAR" }`), so children do not inherit it.
pub fn mark_secret_var(name: &str) {
    MARKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string());
}

/// Whether a child must not inherit the variable `name` (see the module
/// docs for the rule).
pub fn is_secret_var(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if ALWAYS.contains(&upper.as_str()) {
        return true;
    }
    if MARKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(name)
    {
        return true;
    }
    PREFIXES.iter().any(|p| upper.starts_with(p))
        && !upper.ends_with("_FILE")
        && (SECRET_WORDS.iter().any(|w| upper.contains(w)) || upper.ends_with("_KEY"))
}

/// The names of this process's environment variables a child must not see.
fn secret_vars() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.to_str().is_some_and(is_secret_var))
        .collect()
}

/// `sh -c script`, to be run with [`std::process::Command`], without the
/// secret variables.
pub fn shell(script: impl AsRef<OsStr>) -> std::process::Command {
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(script);
    for k in secret_vars() {
        c.env_remove(k);
    }
    c
}

/// `program args…`, run directly (no shell), without the secret variables:
/// for sources such as `backup --stdin-from-command -- pg_dump …`.
pub fn command<I, S>(program: impl AsRef<OsStr>, args: I) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = std::process::Command::new(program);
    c.args(args);
    for k in secret_vars() {
        c.env_remove(k);
    }
    c
}

/// [`shell`] for tokio.
pub fn shell_async(script: impl AsRef<OsStr>) -> tokio::process::Command {
    tokio::process::Command::from(shell(script))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_variables_are_recognised() {
        for name in [
            "CAIRN_PASSWORD",
            "CAIRN_PASSWORD_COMMAND",
            "CAIRN_PASSWORD_FILE",
            "CAIRN_TO_PASSWORD",
            "CAIRN_TO_PASSWORD_COMMAND",
            "CAIRN_TO_PASSWORD_FILE",
            "CAIRN_FTP_PASSWORD",
            "CAIRN_SFTP_PASSWORD",
            "CAIRN_SFTP_KEY_PASSPHRASE",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCESS_KEY",
            "AZURE_STORAGE_KEY",
            "AZURE_STORAGE_SAS_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
            "AZURE_CLIENT_SECRET",
            "AZURE_STORAGE_TOKEN",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
            "CAIRN_TEST_S3_READER_SECRET",
            "CAIRN_TEST_AZURE_READER_SAS",
        ] {
            assert!(is_secret_var(name), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ENDPOINT_URL",
            "AZURE_STORAGE_ACCOUNT_NAME",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "CAIRN_REPO",
            "CAIRN_SFTP_USER",
            "MY_KEY",
        ] {
            assert!(!is_secret_var(name), "{name}");
        }
        mark_secret_var("MY_S3_SECRET_FROM_CONFIG");
        assert!(is_secret_var("MY_S3_SECRET_FROM_CONFIG"));
    }

    /// Variables only these tests set, so setting them races with no
    /// other test's reads.
    fn set_test_secrets() {
        std::env::set_var("CAIRN_TEST_CHILD_PASSWORD", "child-test-pw-1");
        std::env::set_var("CAIRN_CHILD_TEST_PLAIN", "child-test-plain");
        std::env::set_var("CAIRN_CHILD_TEST_MARKED", "child-test-marked");
        mark_secret_var("CAIRN_CHILD_TEST_MARKED");
    }

    fn check_child_env(env: &str) {
        assert!(!env.contains("child-test-pw-1"), "{env}");
        assert!(!env.contains("child-test-marked"), "{env}");
        assert!(
            env.contains("CAIRN_CHILD_TEST_PLAIN=child-test-plain"),
            "{env}"
        );
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    }

    #[test]
    fn children_do_not_inherit_secrets() {
        set_test_secrets();
        let out = shell("env").output().unwrap();
        assert!(out.status.success());
        check_child_env(&String::from_utf8_lossy(&out.stdout));
        let out = command("env", std::iter::empty::<&str>()).output().unwrap();
        assert!(out.status.success());
        check_child_env(&String::from_utf8_lossy(&out.stdout));
    }

    #[tokio::test]
    async fn async_children_do_not_inherit_secrets() {
        set_test_secrets();
        let out = shell_async("env").output().await.unwrap();
        assert!(out.status.success());
        check_child_env(&String::from_utf8_lossy(&out.stdout));
    }
}
