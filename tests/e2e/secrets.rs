//! Secrets stay secret: commands cairn runs do not inherit them, and no
//! output — errors, warnings, trace logs — shows a passphrase or a
//! password from a URL.

use std::ffi::OsStr;

use crate::common::{Env, PASSWORD};

/// Everything the command printed, both streams.
fn output_of(cmd: &mut assert_cmd::Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn password_command_inherits_no_secrets() {
    let env = Env::new();
    let repo = env.path("repo");
    let seen = env.path("seen-env");
    env.set_var("CAIRN_PASSWORD", None);
    env.set_var(
        "CAIRN_PASSWORD_COMMAND",
        Some(OsStr::new(&format!(
            "env > '{}'; echo '{PASSWORD}'",
            seen.display()
        ))),
    );
    env.set_var("AWS_SECRET_ACCESS_KEY", Some(OsStr::new("aws-secret-e2e")));
    env.set_var("AWS_SESSION_TOKEN", Some(OsStr::new("aws-token-e2e")));
    env.set_var(
        "AZURE_STORAGE_ACCOUNT_KEY",
        Some(OsStr::new("azure-key-e2e")),
    );
    env.set_var("CAIRN_FTP_PASSWORD", Some(OsStr::new("ftp-password-e2e")));
    env.set_var("AWS_PROFILE", Some(OsStr::new("profile-e2e")));
    env.init(&[&repo]);
    let seen = std::fs::read_to_string(&seen).unwrap();
    for secret in [
        "aws-secret-e2e",
        "aws-token-e2e",
        "azure-key-e2e",
        "ftp-password-e2e",
        "CAIRN_PASSWORD_COMMAND",
    ] {
        assert!(
            !seen.contains(secret),
            "{secret} reached the command:\n{seen}"
        );
    }
    assert!(seen.contains("AWS_PROFILE=profile-e2e"), "{seen}");
    assert!(seen.lines().any(|l| l.starts_with("PATH=")), "{seen}");
    assert!(seen.lines().any(|l| l.starts_with("HOME=")), "{seen}");
}

#[test]
fn wrong_passphrase_at_trace_level_shows_no_passphrase() {
    let env = Env::new();
    let repo = env.path("repo");
    env.init(&[&repo]);
    let wrong = "wrong passphrase e2e";
    let (code, text) = output_of(
        env.cairn(&[&repo])
            .env("CAIRN_PASSWORD", wrong)
            .env("CAIRN_LOG", "trace")
            .args(["snapshots", "--json"]),
    );
    assert_eq!(code, Some(12), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[cfg(feature = "ftp")]
mod urls {
    use super::*;

    const SECRET: &str = "Sup3rS3cretE2e";

    #[test]
    fn a_password_on_the_command_line_is_warned_about_never_shown() {
        let env = Env::new();
        // Nothing listens on port 1: the command fails fast.
        let url = format!("ftp://bob:{SECRET}@127.0.0.1:1/x");
        let (code, text) = output_of(
            env.cairn(&[])
                .arg("--repo")
                .arg(&url)
                .env("CAIRN_LOG", "trace")
                .arg("snapshots"),
        );
        assert_ne!(code, Some(0), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("holds a password"), "{text}");
        assert!(text.contains("ftp://bob:***@127.0.0.1:1/x"), "{text}");

        // From the environment it is not in the process list: no warning.
        let (code, text) = output_of(env.cairn(&[]).env("CAIRN_REPO", &url).arg("snapshots"));
        assert_ne!(code, Some(0), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("holds a password"), "{text}");
    }

    #[test]
    fn a_malformed_password_url_is_refused_without_showing_it() {
        let env = Env::new();
        for url in [
            format!("ftp://bob:{SECRET}/x@127.0.0.1:1/x"),
            format!("ftp://bob:{SECRET}/1@127.0.0.1:1/x"),
        ] {
            let (code, text) = output_of(env.cairn(&[]).arg("--repo").arg(&url).arg("snapshots"));
            assert_eq!(code, Some(2), "{text}");
            assert!(!text.contains(SECRET), "{text}");
            assert!(text.contains("cannot be told apart"), "{text}");
        }
    }
}

/// The list scripts/check-secrets searches the suite's output for names
/// the passphrases the tests use.
#[test]
fn the_secret_list_names_the_test_passphrases() {
    let list =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/secrets.txt")).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    for p in [
        PASSWORD,
        "wrong passphrase e2e",
        "aws-secret-e2e",
        "ftp-password-e2e",
        "Sup3rS3cretE2e",
    ] {
        assert!(lines.contains(&p), "tests/secrets.txt lacks a test secret");
    }
}

/// `--json` documents and trace-level logs of everyday commands carry no
/// passphrase.
#[test]
fn json_and_trace_output_show_no_passphrase() {
    let env = Env::new();
    let (a, src) = (env.path("a"), env.path("src"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"some data").unwrap();
    env.init(&[&a]);
    let runs: [&[&str]; 6] = [
        &["--json", "backup"],
        &["-vvv", "backup"],
        &["--json", "check"],
        &["--json", "snapshots"],
        &["--json", "status"],
        &["--json", "key", "list"],
    ];
    for args in runs {
        let mut c = env.cairn(&[&a]);
        c.args(args);
        if args.last() == Some(&"backup") {
            c.arg(&src);
        }
        let (code, text) = output_of(&mut c);
        assert_eq!(code, Some(0), "{args:?}: {text}");
        assert!(!text.contains(PASSWORD), "{args:?} shows the passphrase");
    }
}
