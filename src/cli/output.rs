//! Output: logging set-up, human vs JSON printing, and progress displays
//! (a live display on a terminal, JSON status lines with `--json`, nothing
//! otherwise).

use std::io::IsTerminal;

use super::Global;

/// Logging on stderr. A daemon logs what it does (`info`) with times; a
/// command only warns, without times.
pub fn init_logging(g: &Global, daemon: bool) {
    let default = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) if daemon => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("cairn={default},cairn_backends={default}"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let json = g.json || g.log_format == super::LogFormat::Json;
    match (json, daemon) {
        (true, _) => builder.json().init(),
        (false, true) => builder.init(),
        (false, false) => builder.without_time().init(),
    }
}

/// Human-readable size: `512 B`, `1.5 KiB`, `12.3 MiB` (binary units, one
/// decimal).
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

pub fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

/// Print `v` as one line of JSON, written straight to standard output
/// rather than built as a `serde_json::Value` first: a report listing
/// hundreds of thousands of entries took several times its own size as a
/// value tree.
pub fn print_json_streamed(v: &impl serde::Serialize) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()
}

pub enum Mode {
    Bars,
    Json,
    None,
}

pub fn mode(g: &Global) -> Mode {
    if g.json {
        Mode::Json
    } else if !g.quiet && std::io::stderr().is_terminal() {
        Mode::Bars
    } else {
        Mode::None
    }
}

pub use cairn::error::chain;

/// [`chain`] for a line that already starts with the replica's name: the
/// name the error itself begins with is not said twice.
pub fn chain_for(name: &str, err: &dyn std::error::Error) -> String {
    let text = chain(err);
    match text.strip_prefix(name).and_then(|t| t.strip_prefix(": ")) {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// Per replica, what a command read from it, as JSON.
pub fn sources_json(repo: &cairn::repo::Repository) -> serde_json::Value {
    let per = repo.reads().per_replica();
    serde_json::Value::Array(
        repo.replicas()
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (objects, bytes) = per.get(i).copied().unwrap_or_default();
                serde_json::json!({"replica": r.name, "reads": objects, "bytes": bytes})
            })
            .collect(),
    )
}

/// "read from …" lines: where the data came from, and every read that a
/// replica could not serve and another did.
pub fn sources_lines(repo: &cairn::repo::Repository) -> Vec<String> {
    let per = repo.reads().per_replica();
    let used: Vec<String> = repo
        .replicas()
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let (objects, n) = per.get(i).copied().unwrap_or_default();
            (objects > 0).then(|| format!("{} {} ({objects} reads)", r.name, bytes(n)))
        })
        .collect();
    let mut out = Vec::new();
    let fallbacks = repo.reads().fallbacks();
    if used.len() > 1 || !fallbacks.is_empty() {
        out.push(format!("read from: {}", used.join(", ")));
    }
    if !fallbacks.is_empty() {
        out.push(format!(
            "{} object(s) could not be read from the first replica holding them and came from another:",
            fallbacks.len()
        ));
        out.extend(fallbacks.iter().take(20).map(|f| format!("  {f}")));
        if fallbacks.len() > 20 {
            out.push(format!("  … and {} more", fallbacks.len() - 20));
        }
    }
    out
}

/// On stderr (so listings on stdout stay clean): reads that fell back to
/// another replica.
pub fn report_fallbacks(g: &Global, repo: &cairn::repo::Repository) {
    if g.quiet || repo.reads().fallbacks().is_empty() {
        return;
    }
    for line in sources_lines(repo) {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_print_as_in_the_docs() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(157_594), "153.9 KiB");
        assert_eq!(bytes(12_882_912), "12.3 MiB");
        assert_eq!(bytes(5 << 40), "5.0 TiB");
    }
}
