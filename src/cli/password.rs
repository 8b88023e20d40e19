//! Where the passphrase comes from: `CAIRN_PASSWORD`, `--password-file`,
//! `CAIRN_PASSWORD_COMMAND`, the default key file, or a prompt; and the
//! target repository's of `copy`, from the `CAIRN_TO_…` counterparts.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context};
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::{Global, UsageError};

/// How to get the passphrase when none of the explicit sources is set.
pub enum Fallback<'a> {
    /// Prompt on the terminal (twice when `confirm`).
    Prompt { confirm: bool },
    /// Use (or, when `create`, generate) the default key file.
    KeyFile { path: &'a Path, create: bool },
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Whether [`get`] would prompt on the terminal (no other source is set).
pub fn would_prompt(g: &Global) -> bool {
    std::env::var_os("CAIRN_PASSWORD").is_none()
        && g.password_file.is_none()
        && std::env::var_os("CAIRN_PASSWORD_COMMAND").is_none()
}

/// Where one repository's passphrase may come from, by precedence: an
/// environment variable, a file, a command in an environment variable.
struct Sources<'a> {
    env: &'a str,
    file: Option<&'a Path>,
    file_flag: &'a str,
    command_env: &'a str,
    /// What the prompt asks for.
    prompt: &'a str,
}

pub fn get(g: &Global, fallback: Fallback) -> anyhow::Result<SecretString> {
    let sources = Sources {
        env: "CAIRN_PASSWORD",
        file: g.password_file.as_deref(),
        file_flag: "CAIRN_PASSWORD_FILE (--password-file)",
        command_env: "CAIRN_PASSWORD_COMMAND",
        prompt: "enter passphrase for repository: ",
    };
    from_sources(&sources, fallback)
}

/// The passphrase of the target repository of `copy`: `CAIRN_TO_PASSWORD`,
/// `--to-password-file`, `CAIRN_TO_PASSWORD_COMMAND`, or a prompt.
pub fn get_target(file: Option<&Path>) -> anyhow::Result<SecretString> {
    let sources = Sources {
        env: "CAIRN_TO_PASSWORD",
        file,
        file_flag: "CAIRN_TO_PASSWORD_FILE (--to-password-file)",
        command_env: "CAIRN_TO_PASSWORD_COMMAND",
        prompt: "enter passphrase for the target repository: ",
    };
    from_sources(&sources, Fallback::Prompt { confirm: false })
}

fn from_sources(src: &Sources, fallback: Fallback) -> anyhow::Result<SecretString> {
    if let Ok(p) = std::env::var(src.env) {
        return non_empty(p, src.env);
    }
    if let Some(f) = src.file {
        let s = Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading password file {}", f.display()))?,
        );
        return non_empty(first_line(&s).to_string(), "the password file");
    }
    if let Ok(cmd) = std::env::var(src.command_env) {
        // The command gets neither cairn's passphrase sources nor backend
        // credentials (see `cairn_backends::child`).
        let out = cairn::backends::child::shell(&cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", src.command_env))?;
        // The passphrase is in this buffer: wiped when it goes.
        let stdout = Zeroizing::new(out.stdout);
        if !out.status.success() {
            bail!(UsageError(format!(
                "{} failed with {}",
                src.command_env, out.status
            )));
        }
        let s = Zeroizing::new(String::from_utf8_lossy(&stdout).into_owned());
        return non_empty(first_line(&s).to_string(), src.command_env);
    }
    match fallback {
        Fallback::KeyFile { path, create } => key_file(path, create),
        Fallback::Prompt { confirm } => prompt(src, confirm),
    }
}

fn non_empty(p: String, source: &str) -> anyhow::Result<SecretString> {
    if p.is_empty() {
        bail!(UsageError(format!("the passphrase from {source} is empty")));
    }
    Ok(SecretString::from(p))
}

/// Ctrl-C at the prompt interrupts the read: that is an interruption
/// (exit 130), not an I/O failure.
fn ask(question: &str) -> anyhow::Result<String> {
    rpassword::prompt_password(question).map_err(|e| {
        if e.kind() == std::io::ErrorKind::Interrupted {
            cairn::Error::Interrupted.into()
        } else {
            anyhow::Error::from(e)
        }
    })
}

fn prompt(src: &Sources, confirm: bool) -> anyhow::Result<SecretString> {
    if !std::io::stdin().is_terminal() {
        bail!(UsageError(format!(
            "no passphrase: set {}, {} or {}",
            src.env, src.file_flag, src.command_env
        )));
    }
    let p = Zeroizing::new(ask(src.prompt)?);
    if confirm {
        let q = Zeroizing::new(ask("enter passphrase again: ")?);
        if *p != *q {
            bail!(UsageError("the passphrases do not match".into()));
        }
    }
    non_empty(p.to_string(), "the prompt")
}

/// The default key file: a random passphrase in a 0600 file.
fn key_file(path: &Path, create: bool) -> anyhow::Result<SecretString> {
    match std::fs::read_to_string(path) {
        Ok(s) => return non_empty(first_line(&Zeroizing::new(s)).to_string(), "the key file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading key file {}", path.display()));
        }
    }
    let pass = generate_key_file(path)?;
    eprintln!(
        "\n\
         *****************************************************************\n\
         * cairn generated a new key file for the default repository:    *\n\
         *   {}\n\
         * WITHOUT THIS FILE YOUR BACKUPS CANNOT BE RESTORED.             *\n\
         * Copy it somewhere safe, away from this machine, now.          *\n\
         *****************************************************************\n",
        path.display()
    );
    Ok(pass)
}

/// Write a new random passphrase (256 bits, hex) to `path`, which must not
/// exist, readable by its owner only.
fn generate_key_file(path: &Path) -> anyhow::Result<SecretString> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; 32];
    cairn::format::crypto::fill_random(&mut raw);
    let pass = Zeroizing::new(cairn::format::id::hex_encode(&raw));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    writeln!(f, "{}", pass.as_str())?;
    f.sync_all()?;
    Ok(SecretString::from(pass.to_string()))
}

/// The secret of a new key slot: `--new-password-file`, a generated
/// `--new-key-file`, `CAIRN_NEW_PASSWORD`, or a prompt (twice). The flag
/// tells whether it came from a generated key file.
pub fn new_secret(
    password_file: Option<&Path>,
    key_file: Option<&Path>,
) -> anyhow::Result<(SecretString, bool)> {
    if let Some(f) = password_file {
        let s = Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading new password file {}", f.display()))?,
        );
        return Ok((
            non_empty(first_line(&s).to_string(), "the new password file")?,
            false,
        ));
    }
    if let Some(path) = key_file {
        if path.exists() {
            bail!(UsageError(format!(
                "--new-key-file: {} exists; give a path where cairn can create the key file",
                path.display()
            )));
        }
        return Ok((generate_key_file(path)?, true));
    }
    if let Ok(p) = std::env::var("CAIRN_NEW_PASSWORD") {
        return Ok((non_empty(p, "CAIRN_NEW_PASSWORD")?, false));
    }
    if !std::io::stdin().is_terminal() {
        bail!(UsageError(
            "no new passphrase: give --new-password-file, --new-key-file or CAIRN_NEW_PASSWORD"
                .into()
        ));
    }
    let p = Zeroizing::new(ask("enter the new passphrase: ")?);
    let q = Zeroizing::new(ask("enter it again: ")?);
    if *p != *q {
        bail!(UsageError("the passphrases do not match".into()));
    }
    Ok((non_empty(p.to_string(), "the prompt")?, false))
}
