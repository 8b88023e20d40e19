//! `cairn status`: the snapshot × replica matrix.

use cairn::ops::status::{short, status, Presence, Retention, Status};
use clap::Args;

use super::output::{self, bytes};
use super::{exit, repos, Global};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Time zone of the retention policies' calendar buckets [default: local].
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
}

pub async fn run(g: &Global, a: StatusArgs) -> anyhow::Result<i32> {
    let tz = super::cmd_forget::timezone(a.timezone.as_deref())?;
    let policies = repos::load_config(g)?.policies();
    let repo = repos::open(g, false).await?;
    let retention = Retention {
        policies: &policies,
        tz,
        now: jiff::Timestamp::now(),
    };
    let configured = policies.default.is_some() || !policies.by_replica.is_empty();
    let st = status(&repo, configured.then_some(&retention)).await?;
    if g.json {
        output::print_json(&to_json(&st));
    } else {
        print(&st);
    }
    Ok(code(&st))
}

/// The status as JSON, each snapshot's per-replica entry carrying the
/// replica's name so a reader need not match positions.
fn to_json(st: &Status) -> serde_json::Value {
    let mut v = serde_json::to_value(st).expect("status serializes");
    if let Some(snaps) = v["snapshots"].as_array_mut() {
        for snap in snaps {
            if let Some(entries) = snap["replicas"].as_array_mut() {
                for (entry, r) in entries.iter_mut().zip(&st.replicas) {
                    entry["name"] = r.name.clone().into();
                }
            }
            // Each replica's retention verdict goes into its entry.
            if let Some(ret) = snap.as_object_mut().and_then(|o| o.remove("retention")) {
                let entries = snap["replicas"].as_array_mut().expect("replicas");
                for (entry, r) in entries.iter_mut().zip(ret.as_array().into_iter().flatten()) {
                    if !r.is_null() {
                        entry["keep"] = (!r.as_array().is_some_and(|a| a.is_empty())).into();
                        entry["reasons"] = r.clone();
                    }
                }
            }
        }
    }
    v
}

fn code(st: &Status) -> i32 {
    exit::of(&st.outcome())
}

fn letter(i: usize) -> String {
    if i < 26 {
        ((b'A' + i as u8) as char).to_string()
    } else {
        format!("R{i}")
    }
}

fn print(st: &Status) {
    let w = st
        .replicas
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("Replica".len());
    println!(
        "{:<3} {:<w$} {:>9} {:>8} {:>7} {:>10}  {:<19}  {:<19}  Behind",
        "", "Replica", "Snapshots", "Complete", "Packs", "Size", "Latest complete", "Last write"
    );
    for (i, r) in st.replicas.iter().enumerate() {
        if let Some(e) = &r.error {
            // The message names the replica too; the row says it already.
            let e = e
                .strip_prefix(r.name.as_str())
                .and_then(|t| t.strip_prefix(": "))
                .unwrap_or(e);
            println!("{:<3} {:<w$} UNUSABLE: {e}", letter(i), r.name);
            continue;
        }
        let mut behind = if r.behind_snapshots == 0 {
            "up to date".to_string()
        } else {
            format!(
                "{} snapshot(s), {} to copy",
                r.behind_snapshots,
                bytes(r.behind_bytes)
            )
        };
        if r.keyring_behind {
            behind.push_str("; keyring behind (missed a key operation: run `cairn sync`)");
        }
        println!(
            "{:<3} {:<w$} {:>9} {:>8} {:>7} {:>10}  {:<19}  {:<19}  {behind}",
            letter(i),
            r.name,
            r.snapshots,
            r.complete,
            r.packs,
            bytes(r.pack_bytes),
            r.latest
                .map_or("-".into(), |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string()),
            r.last_write
                .map_or("-".into(), |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string()),
        );
    }
    println!();
    let cols: String = (0..st.replicas.len())
        .map(|i| format!(" {:^5}", letter(i)))
        .collect();
    println!("{:<9} {:<19} {:<12}{cols}  Paths", "ID", "Time", "Host");
    for s in &st.snapshots {
        let cells: String = s
            .replicas
            .iter()
            .map(|p| {
                format!(
                    " {:^5}",
                    match p {
                        Presence::Complete => "ok".to_string(),
                        Presence::Missing => "-".to_string(),
                        Presence::Incomplete { packs } => format!("-{packs}p"),
                        Presence::Damaged => "LOST".to_string(),
                        Presence::Unreachable => "?".to_string(),
                    }
                )
            })
            .collect();
        println!(
            "{:<9} {:<19} {:<12}{cells}  {}{}{}",
            short(&s.id),
            s.time.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            s.host,
            s.paths.join(" "),
            if s.tags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", s.tags.join(","))
            },
            kept_by(s),
        );
    }
    if st.snapshots.iter().any(|s| !s.retention.is_empty()) {
        println!("\nretention: why each replica's policy keeps the snapshot (\"forget\": it does not; `cairn forget --dry-run` for the plan)");
    }
    println!(
        "\nok: complete  -: missing (`cairn sync`)  -Np: N packs missing (`cairn sync` or `cairn repair packs`)  LOST: data on no replica (`cairn repair snapshots`)  ?: replica unusable"
    );
}

/// "  retention: A daily 1, weekly 1; B forget" for replicas with a policy.
fn kept_by(s: &cairn::ops::status::SnapshotStatus) -> String {
    let parts: Vec<String> = s
        .retention
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.as_ref().map(|reasons| {
                if reasons.is_empty() {
                    format!("{} forget", letter(i))
                } else {
                    let why: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
                    format!("{} {}", letter(i), why.join(", "))
                }
            })
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("  retention: {}", parts.join("; "))
    }
}
