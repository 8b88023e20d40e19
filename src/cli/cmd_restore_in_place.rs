//! `cairn restore SNAPSHOT[:PATH] --in-place DIR`: renders the library's
//! in-place restore (cairn::ops::restore::in_place).

use std::path::Path;
use std::sync::Arc;

use cairn::ops::restore::in_place::{
    restore_in_place, ChangeKind, InPlaceOptions, InPlaceOutcome, Phase,
};
use cairn::ops::restore::RestoreProgress;
use cairn::repo::Repository;
use serde_json::json;

use super::cmd_restore::RestoreArgs;
use super::output::{self, bytes};
use super::Global;

pub async fn run(
    g: &Global,
    a: &RestoreArgs,
    repo: &Repository,
    spec: &str,
    sub: Option<String>,
    dir: &Path,
) -> anyhow::Result<i32> {
    let opts = InPlaceOptions {
        subpath: sub,
        delete: a.delete,
        dry_run: a.dry_run,
        // Text output lists the entries of a dry run only.
        list_changes: g.json || a.dry_run,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
        allow_devices: a.allow_devices,
        keep_setuid: a.keep_setuid,
        ..InPlaceOptions::new(dir.to_path_buf())
    };
    let json = g.json;
    let quiet = g.quiet;
    // Steps go to stderr (JSON lines on stdout with --json), so a log shows which
    // safety snapshot to restore if the process is killed mid-way.
    let phase = move |p: Phase| {
        let (step, text) = match &p {
            Phase::SafetySnapshot => ("safety_snapshot", "taking the safety snapshot".into()),
            Phase::Restoring { safety } => (
                "restoring",
                format!(
                    "safety snapshot {} saved (tag pre-restore); restoring",
                    safety.short()
                ),
            ),
            Phase::Verifying => ("verifying", "verifying".into()),
            Phase::RollingBack { reason } => (
                "rolling_back",
                format!("restore failed: {reason}; rolling back"),
            ),
        };
        if json {
            let safety = match &p {
                Phase::Restoring { safety } => Some(safety.to_hex()),
                _ => None,
            };
            output::print_json(
                &json!({"type": "in_place_step", "step": step, "safety_snapshot": safety}),
            );
        } else if !quiet || matches!(p, Phase::RollingBack { .. }) {
            eprintln!("in-place: {text}");
        }
    };
    let progress = Arc::new(RestoreProgress::default());
    let ticker = super::progress::show(g, progress.clone());
    let res = restore_in_place(repo, spec, &opts, &progress, &phase).await;
    ticker.stop();
    let report = res?;
    if g.json {
        // Keys in the order a `json!` map would give them.
        #[derive(serde::Serialize)]
        struct Summary<'a> {
            exit_code: i32,
            in_place: &'a cairn::ops::restore::in_place::InPlaceReport,
            #[serde(rename = "type")]
            kind: &'static str,
        }
        output::print_json_streamed(&Summary {
            exit_code: report.exit_code().code(),
            in_place: &report,
            kind: "summary",
        })?;
        return Ok(report.exit_code().code());
    }
    for f in &report.findings {
        let level = match f.severity {
            cairn::ops::Severity::Error => "error",
            cairn::ops::Severity::Warning => "warning",
        };
        eprintln!("{level}: {}", f.message);
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.outcome == InPlaceOutcome::DryRun {
        for c in &report.changes {
            let what = match c.change {
                ChangeKind::Create => "create",
                ChangeKind::Update => "update",
                ChangeKind::Delete => "delete",
                ChangeKind::Keep => "keep  ",
                ChangeKind::Unchanged => continue,
            };
            println!("{what} {} {}", c.entry, c.path);
        }
    }
    let c = &report.counts;
    let counts = format!(
        "{} created, {} updated, {} deleted, {} kept (not in the snapshot), {} unchanged",
        c.create, c.update, c.delete, c.keep, c.unchanged
    );
    let snap = report.snapshot.short();
    let shown = report.dir.display();
    let safety = report
        .safety_snapshot
        .map(|s| s.short())
        .unwrap_or_default();
    match report.outcome {
        InPlaceOutcome::DryRun => {
            println!("dry run, nothing changed: restoring {snap} over {shown} would leave {counts}")
        }
        InPlaceOutcome::Restored => {
            if !g.quiet {
                println!(
                    "restored snapshot {snap} over {shown} and verified it: {counts}; {} written; safety snapshot {safety}",
                    bytes(report.bytes_written)
                );
            }
        }
        InPlaceOutcome::RolledBack => eprintln!(
            "error: restore of {snap} over {shown} failed ({}); rolled back: {shown} is as it was (safety snapshot {safety})",
            report.failure.as_deref().unwrap_or("unknown")
        ),
        InPlaceOutcome::RollbackFailed => {
            for e in &report.rollback_errors {
                eprintln!("error: rollback: {e}");
            }
            eprintln!(
                "error: restore of {snap} over {shown} failed ({}) and so did the rollback; \
                 put it back with: cairn restore {safety} --in-place {shown} --delete",
                report.failure.as_deref().unwrap_or("unknown")
            );
        }
    }
    Ok(report.exit_code().code())
}
