//! `cairn init`.

use anyhow::Context;
use cairn::format::chunker::ChunkerParams;
use cairn::format::keys::KdfParams;
use cairn::repo::{InitOptions, Repository};
use clap::Args;

use super::password::{self, Fallback};
use super::{exit, output, repos, Global};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// zstd level for new data (0 stores uncompressed).
    #[arg(long, default_value_t = 3)]
    pub compression: i32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16)]
    pub pack_size_mib: u32,
    /// Average chunk size in KiB (a power of two; min is a half, max 8x).
    #[arg(long, default_value_t = 1024)]
    pub chunk_avg_kib: u32,
    /// Argon2id memory cost in KiB for the key slot.
    #[arg(long, default_value_t = KdfParams::default().memory_kib, hide = true)]
    pub kdf_memory_kib: u32,
    /// Argon2id passes for the key slot.
    #[arg(long, default_value_t = KdfParams::default().iterations, hide = true)]
    pub kdf_iterations: u32,
}

impl InitArgs {
    pub fn options(&self) -> InitOptions {
        let avg = self.chunk_avg_kib.saturating_mul(1024);
        InitOptions {
            chunker: ChunkerParams {
                min_size: avg / 2,
                avg_size: avg,
                max_size: avg.saturating_mul(8),
            },
            compression_level: self.compression,
            pack_size: self.pack_size_mib.saturating_mul(1 << 20),
            kdf: KdfParams {
                memory_kib: self.kdf_memory_kib,
                iterations: self.kdf_iterations,
                parallelism: 1,
            },
        }
    }
}

pub async fn run(g: &Global, a: InitArgs) -> anyhow::Result<i32> {
    let sel = repos::select(g)?;
    let key_file = repos::default_key_file();
    let pass = password::get(
        g,
        if sel.default_repo {
            Fallback::KeyFile {
                path: &key_file,
                create: true,
            }
        } else {
            Fallback::Prompt { confirm: true }
        },
    )?;
    let names: Vec<String> = sel.replicas.iter().map(|r| r.name.clone()).collect();
    let repo = Repository::init(sel.replicas, &pass, &a.options())
        .await
        .context("init")?;
    if g.json {
        output::print_json(&serde_json::json!({
            "type": "init",
            "id": repo.config().id.to_hex(),
            "replicas": names,
        }));
    } else if !g.quiet {
        for n in &names {
            println!(
                "created cairn repository {} at {n}",
                repo.config().id.short()
            );
        }
        println!("Keep the passphrase safe: without it the data cannot be restored.");
    }
    Ok(exit::OK)
}
