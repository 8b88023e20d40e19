//! `cairn backend verify URL`: the conformance suite every backend passes in
//! cairn's own tests, run against the user's own bucket or server, in a
//! fresh random prefix that is removed afterwards.

use std::collections::BTreeMap;

use cairn::backends::conformance::{self, SuiteOptions};
use clap::{Args, Subcommand};
use serde_json::json;

use super::{exit, output, repos, Global, UsageError};

#[derive(Args, Debug)]
pub struct BackendArgs {
    #[command(subcommand)]
    pub command: BackendCommand,
}

#[derive(Subcommand, Debug)]
pub enum BackendCommand {
    /// Check that a location behaves as cairn needs (writes and deletes
    /// test objects under a random prefix inside it).
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Location to test: a path or a URL (as for --repo), or a backend name
    /// from cairn.toml.
    pub url: String,
    /// Size of the large-object test in MiB.
    #[arg(long, default_value_t = 100)]
    pub large_mib: usize,
    /// Objects in the listing test (more than one page of most APIs).
    #[arg(long, default_value_t = 1100)]
    pub many: usize,
}

pub async fn run(g: &Global, a: BackendArgs) -> anyhow::Result<i32> {
    let BackendCommand::Verify(v) = a.command;
    let config = repos::load_config(g)?;
    let (url, options) = match config.backends.get(&v.url) {
        Some(b) => (b.url.clone(), b.options.clone()),
        None => (v.url.clone(), BTreeMap::new()),
    };
    if url.is_empty() {
        anyhow::bail!(UsageError("no location given".into()));
    }
    let mut r = [0u8; 6];
    cairn::format::crypto::fill_random(&mut r);
    let prefix = format!("cairn-verify-{}", cairn::format::id::hex_encode(&r));
    let test_url = format!("{}/{prefix}", url.trim_end_matches('/'));
    let backend = repos::open_backend(&test_url, &options, repos::Limits::default())?;
    let opts = SuiteOptions {
        large_object_bytes: v.large_mib << 20,
        many_objects: v.many,
        ..SuiteOptions::default()
    };
    if !g.json && !g.quiet {
        eprintln!(
            "testing {} (in {prefix}; everything written is deleted again)",
            repos::redact(&url)
        );
    }
    let results = conformance::run(backend, &opts).await;
    if !url.contains("://") {
        // The suite deletes its objects; the local directories stay behind.
        let _ = std::fs::remove_dir_all(std::path::Path::new(&url).join(&prefix));
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    if g.json {
        output::print_json(&json!({
            "type": "backend_verify",
            "location": repos::redact(&url),
            "ok": failed == 0,
            "cases": results.iter().map(|r| json!({
                "name": r.name,
                "ok": r.passed(),
                "error": r.outcome.as_ref().err(),
                "seconds": r.elapsed.as_secs_f64(),
            })).collect::<Vec<_>>(),
        }));
    } else {
        print!("{}", conformance::report(&results));
    }
    Ok(if failed == 0 { exit::OK } else { exit::FAILURE })
}
