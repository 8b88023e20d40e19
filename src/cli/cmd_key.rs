//! `cairn key`: the key slots that open the repository and the data-key
//! epochs, on every replica at once (list, add, remove, passwd, status,
//! audit; rotate, reencrypt and retire are in `cmd_key_epochs`).

use std::path::PathBuf;

use cairn::format::keys::KdfParams;
use cairn::ops::keys::{
    add_command_key, add_key, change_passphrase, key_status, list_keys, remove_key,
};
use clap::{Args, Subcommand};
use serde_json::json;

use super::{output, password, repos, Global};

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Every key slot: id, label, created, host, user, and the one in use.
    List,
    /// Add a key slot (a new passphrase, a generated key file, or a key
    /// from a key-management command) on every replica; prints its id.
    Add {
        /// Who or what the slot is for.
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
        /// A slot opened by the 32-byte key COMMAND prints (64 hex digits),
        /// e.g. from Vault or a KMS decrypt. Open it later with
        /// CAIRN_PASSWORD_COMMAND set to the same command.
        #[arg(long, value_name = "COMMAND", conflicts_with_all = ["new_password_file", "new_key_file"])]
        new_key_command: Option<String>,
        #[command(flatten)]
        secret: NewSecret,
    },
    /// Remove a key slot (an id or a unique prefix) from every replica. The
    /// last slot is never removed; the slot in use only with --force.
    Remove {
        #[arg(value_name = "SLOT")]
        slot: String,
        #[arg(long)]
        force: bool,
    },
    /// Per replica, how many objects (and bytes) each data-key epoch
    /// encrypts.
    Status,
    /// The audit trail of key operations, verified on every replica (exit 5
    /// when an entry is missing, altered or out of order).
    Audit,
    /// A new passphrase for the slot in use (with the current Argon2id
    /// costs): the new slot is written everywhere, then the old removed.
    Passwd {
        #[command(flatten)]
        secret: NewSecret,
    },
    /// A new data-key epoch, made current on every replica: everything
    /// written from now on uses it; older objects stay readable.
    Rotate {
        /// Re-encrypt every object of older epochs right after.
        #[arg(long)]
        reencrypt: bool,
        #[command(flatten)]
        opts: super::cmd_key_epochs::ReencryptFlags,
    },
    /// Re-encrypt every object of older epochs (packs, index files,
    /// snapshots) under the current one, on every replica. Resumable: run
    /// it again after an interruption.
    Reencrypt {
        #[command(flatten)]
        opts: super::cmd_key_epochs::ReencryptFlags,
    },
    /// Delete an old epoch's key from every keyring generation stored
    /// anywhere (older generations are deleted). Refused while any replica
    /// holds an object of that epoch, or cannot be reached.
    Retire {
        #[arg(value_name = "EPOCH")]
        epoch: u32,
    },
}

#[derive(Args, Debug)]
pub struct NewSecret {
    /// Read the new passphrase from this file (first line); otherwise
    /// CAIRN_NEW_PASSWORD, or a prompt.
    #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
    new_password_file: Option<PathBuf>,
    /// Generate a random key into FILE (created 0600; it must not exist)
    /// and add a slot it opens (use it with --password-file).
    #[arg(long, value_name = "FILE")]
    new_key_file: Option<PathBuf>,
    /// Argon2id memory cost in KiB for the new slot.
    #[arg(long, default_value_t = KdfParams::default().memory_kib, hide = true)]
    kdf_memory_kib: u32,
    /// Argon2id passes for the new slot.
    #[arg(long, default_value_t = KdfParams::default().iterations, hide = true)]
    kdf_iterations: u32,
}

impl NewSecret {
    fn get(&self) -> anyhow::Result<(secrecy::SecretString, KdfParams)> {
        let (secret, generated) = password::new_secret(
            self.new_password_file.as_deref(),
            self.new_key_file.as_deref(),
        )?;
        // A generated key has 256 bits of entropy: stretching it buys
        // nothing, so it gets the cheapest costs.
        let params = if generated {
            KdfParams {
                memory_kib: KdfParams::MIN_MEMORY_KIB,
                iterations: 1,
                parallelism: 1,
            }
        } else {
            KdfParams {
                memory_kib: self.kdf_memory_kib,
                iterations: self.kdf_iterations,
                parallelism: 1,
            }
        };
        Ok((secret, params))
    }
}

pub async fn run(g: &Global, cmd: KeyCommand) -> anyhow::Result<i32> {
    let mut repo = repos::open(g, false).await?;
    match cmd {
        KeyCommand::Rotate { reencrypt, opts } => {
            super::cmd_key_epochs::rotate(g, &mut repo, reencrypt, &opts).await
        }
        KeyCommand::Reencrypt { opts } => super::cmd_key_epochs::reencrypt(g, &repo, &opts).await,
        KeyCommand::Retire { epoch } => super::cmd_key_epochs::retire(g, &repo, epoch).await,
        KeyCommand::List => {
            let slots = list_keys(&repo).await?;
            if g.json {
                output::print_json(&json!(slots));
                return Ok(0);
            }
            for s in &slots {
                println!(
                    "{}{}  {}  {}@{}  {}{}",
                    if s.in_use { "* " } else { "  " },
                    &s.id[..s.id.len().min(12)],
                    s.created.strftime("%Y-%m-%d %H:%M:%S"),
                    s.username,
                    s.host,
                    s.label.as_deref().unwrap_or("-"),
                    if s.replicas.len() < repo.replicas().len() {
                        format!("  (only on {})", s.replicas.join(", "))
                    } else {
                        String::new()
                    }
                );
            }
            Ok(0)
        }
        KeyCommand::Audit => {
            let trails = cairn::ops::audit::read_audit(&repo).await?;
            let bad = trails
                .iter()
                .any(|t| !t.problems.is_empty() || t.error.is_some());
            let code = if bad { 5 } else { 0 };
            if g.json {
                output::print_json(&json!({ "replicas": trails }));
                return Ok(code);
            }
            for t in &trails {
                println!("{}: {} entries", t.replica, t.entries.len());
                if let Some(e) = &t.error {
                    println!("  FAILED: {e}");
                }
                for e in &t.entries {
                    println!(
                        "  {:>4}  {}  {}@{}  {:<11} {}  [{}]",
                        e.seq,
                        e.time.strftime("%Y-%m-%d %H:%M:%S"),
                        e.user,
                        e.host,
                        e.operation,
                        e.detail,
                        e.outcome
                    );
                }
                for p in &t.problems {
                    println!("  TAMPERED: {}: {}", p.object, p.message);
                }
            }
            Ok(code)
        }
        KeyCommand::Status => {
            let st = key_status(&repo).await?;
            if g.json {
                output::print_json(&json!(st));
                return Ok(if st.replicas.iter().any(|r| r.error.is_some()) {
                    4
                } else {
                    0
                });
            }
            let epochs: Vec<String> = st.epochs.iter().map(|e| e.to_string()).collect();
            println!(
                "epochs in the keyring: {} (current {}; keyring generation {})",
                epochs.join(", "),
                st.current_epoch,
                st.generation
            );
            for r in &st.replicas {
                println!("{}", r.replica);
                if let Some(e) = &r.error {
                    println!("  FAILED: {e}");
                    continue;
                }
                for e in &r.epochs {
                    println!(
                        "  epoch {}: {} packs, {} index files, {} snapshots{}, {}",
                        e.epoch,
                        e.packs,
                        e.index_files,
                        e.snapshots,
                        if e.other > 0 {
                            format!(", {} other", e.other)
                        } else {
                            String::new()
                        },
                        output::bytes(e.bytes)
                    );
                }
                if r.unreadable > 0 {
                    println!(
                        "  {} objects with an unreadable header (run `cairn check`)",
                        r.unreadable
                    );
                }
            }
            Ok(if st.replicas.iter().any(|r| r.error.is_some()) {
                4
            } else {
                0
            })
        }
        KeyCommand::Add {
            label,
            new_key_command: Some(cmd),
            ..
        } => {
            let key = run_key_command(&cmd)?;
            let id = add_command_key(&repo, &key, label).await?;
            if g.json {
                output::print_json(&json!({ "id": id }));
            } else {
                println!("added key slot {id} (opened by the key `{cmd}` prints)");
            }
            Ok(0)
        }
        KeyCommand::Add { label, secret, .. } => {
            let (pass, params) = secret.get()?;
            let id = add_key(&repo, &pass, params, label).await?;
            if g.json {
                output::print_json(&json!({ "id": id }));
            } else {
                println!("added key slot {id}");
            }
            Ok(0)
        }
        KeyCommand::Remove { slot, force } => {
            let id = remove_key(&repo, &slot, force).await?;
            if g.json {
                output::print_json(&json!({ "removed": id }));
            } else {
                println!("removed key slot {id}");
            }
            Ok(0)
        }
        KeyCommand::Passwd { secret } => {
            let (pass, params) = secret.get()?;
            let (new, old) = change_passphrase(&repo, &pass, params).await?;
            if g.json {
                output::print_json(&json!({ "id": new, "removed": old }));
            } else {
                println!("key slot {old} replaced by {new}");
            }
            Ok(0)
        }
    }
}

/// Run a key-management command (without cairn's secrets in its
/// environment) and take the 32-byte key it prints as 64 hex digits.
fn run_key_command(cmd: &str) -> anyhow::Result<secrecy::SecretString> {
    use anyhow::Context;
    let out = cairn::backends::child::shell(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the key command")?;
    let stdout = zeroize::Zeroizing::new(out.stdout);
    if !out.status.success() {
        anyhow::bail!(super::UsageError(format!(
            "the key command failed with {}",
            out.status
        )));
    }
    let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&stdout).trim().to_string());
    if cairn::format::keys::parse_command_key(&text).is_none() {
        anyhow::bail!(super::UsageError(
            "the key command must print a 32-byte key as 64 hex digits".into()
        ));
    }
    Ok(secrecy::SecretString::from(text.to_string()))
}
