//! `cairn key rotate`, `key reencrypt` and `key retire`: data-key epochs
//! across replicas, rendered from the engine's reports.

use cairn::ops::keys::{reencrypt as reencrypt_op, retire as retire_op, rotate as rotate_op};
use cairn::ops::keys::{ReencryptOptions, ReencryptProgress, ReencryptReport};
use cairn::ops::Outcome;
use cairn::repo::Repository;
use clap::Args;
use serde_json::json;

use super::{exit, output, Global};

#[derive(Args, Debug, Clone)]
pub struct ReencryptFlags {
    /// Old packs per checkpoint (their new index files are written after
    /// each batch, so an interrupted run resumes from there).
    #[arg(long, value_name = "N", default_value_t = 32)]
    batch: usize,
}

impl ReencryptFlags {
    fn options(&self) -> ReencryptOptions {
        ReencryptOptions {
            batch_packs: self.batch.max(1),
        }
    }
}

pub async fn rotate(
    g: &Global,
    repo: &mut Repository,
    reencrypt: bool,
    flags: &ReencryptFlags,
) -> anyhow::Result<i32> {
    let (report, ring, generation) = rotate_op(repo).await?;
    let outcome = report.outcome();
    if !reencrypt {
        if g.json {
            output::print_json(
                &json!({ "type": "key_rotate", "outcome": outcome, "rotate": report }),
            );
        } else {
            print_rotate(&report);
        }
        return Ok(exit::of(&outcome));
    }
    if !g.json {
        print_rotate(&report);
    }
    repo.adopt_keyring(ring, generation);
    let re = run_reencrypt(g, repo, flags).await?;
    let outcome = outcome.worst(re.outcome());
    if g.json {
        output::print_json(&json!({
            "type": "key_rotate",
            "outcome": outcome,
            "rotate": report,
            "reencrypt": re,
        }));
    } else {
        print_reencrypt(&re);
    }
    Ok(exit::of(&outcome))
}

fn print_rotate(r: &cairn::ops::keys::RotateReport) {
    println!(
        "epoch {} is current (was {}); keyring generation {} on {}",
        r.epoch,
        r.previous_epoch,
        r.generation,
        r.replicas.join(", ")
    );
    if !r.unavailable.is_empty() {
        println!(
            "NOT ON {}: unreachable; run any `cairn key` command (or `cairn sync`) when it is \
             back, and `cairn key reencrypt` there",
            r.unavailable.join(", ")
        );
    }
}

pub async fn reencrypt(
    g: &Global,
    repo: &Repository,
    flags: &ReencryptFlags,
) -> anyhow::Result<i32> {
    let re = run_reencrypt(g, repo, flags).await?;
    let outcome = re.outcome();
    if g.json {
        output::print_json(
            &json!({ "type": "key_reencrypt", "outcome": outcome, "reencrypt": re }),
        );
    } else {
        print_reencrypt(&re);
    }
    Ok(exit::of(&outcome))
}

async fn run_reencrypt(
    g: &Global,
    repo: &Repository,
    flags: &ReencryptFlags,
) -> anyhow::Result<ReencryptReport> {
    let show = !g.json && !g.quiet;
    let progress = move |p: &ReencryptProgress| {
        if !show {
            return;
        }
        let written: Vec<String> = p
            .written
            .iter()
            .map(|(name, b)| format!("{name} {}", output::bytes(*b)))
            .collect();
        eprintln!(
            "reencrypt: {}/{} old packs, {} read, {:.1} MB/s; written: {}",
            p.packs_done,
            p.packs_total,
            output::bytes(p.bytes_read),
            p.bytes_read as f64 / 1e6 / p.seconds.max(1e-9),
            written.join(", ")
        );
    };
    Ok(reencrypt_op(repo, &flags.options(), &progress).await?)
}

fn print_reencrypt(re: &ReencryptReport) {
    let idle = re.replicas.iter().all(|r| {
        r.error.is_none() && r.old_packs == 0 && r.packs_deleted == 0 && r.strays_deleted == 0
    });
    if re.complete && idle && re.snapshots.is_empty() {
        println!(
            "nothing to re-encrypt: every object on every replica is under epoch {}",
            re.epoch
        );
        return;
    }
    println!(
        "re-encrypted under epoch {}: {} read in {:.1} s ({:.1} MB/s)",
        re.epoch,
        output::bytes(re.bytes_read),
        re.seconds,
        re.mb_per_second
    );
    for r in &re.replicas {
        println!("{}:", r.replica);
        if let Some(e) = &r.error {
            println!("  FAILED: {e}");
            continue;
        }
        println!(
            "  {} old packs: {} copied into {} new ({}), {} deleted; index {} written, {} removed; {} snapshots rewritten",
            r.old_packs,
            r.packs_copied,
            r.new_packs,
            output::bytes(r.new_bytes),
            r.packs_deleted,
            r.index_written,
            r.index_deleted,
            r.snapshots_rewritten
        );
        if r.strays_deleted > 0 {
            println!(
                "  {} packs no index described (left by an interrupted run) deleted",
                r.strays_deleted
            );
        }
    }
    for (old, new) in &re.snapshots {
        println!("snapshot {} is now {}", old.short(), new.short());
    }
    if let Some(why) = &re.swap_skipped {
        println!("old objects not yet replaced ({why}): run `cairn key reencrypt` again");
    }
    if re.complete {
        println!("no object of an older epoch is left on any replica");
    } else {
        println!("objects of older epochs remain: see `cairn key status`");
    }
}

pub async fn retire(g: &Global, repo: &Repository, epoch: u32) -> anyhow::Result<i32> {
    let r = retire_op(repo, epoch).await?;
    if g.json {
        output::print_json(&json!({ "type": "key_retire", "outcome": Outcome::Ok, "retire": r }));
    } else {
        println!(
            "epoch {} retired: keyring generation {} holds no key of it; {} older generations deleted",
            r.epoch, r.generation, r.generations_deleted
        );
    }
    Ok(0)
}
