//! Rendering the library's progress stream: bars on a terminal (one line
//! per replica or target), JSON status lines with `--json`, nothing
//! otherwise (no terminal, `--quiet`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::ops::progress::{ProgressEvent, ProgressSink, ProgressSource, ProgressStream};
use cairn::ops::sync::{PHASE_DONE, PHASE_INDEX, PHASE_PACKS, PHASE_PLAN};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::{bytes, mode, print_json, Mode};
use super::Global;

/// Show the progress of `source` as `g` asks until the stream is stopped.
pub fn show(g: &Global, source: Arc<dyn ProgressSource>) -> ProgressStream {
    match mode(g) {
        Mode::Json => ProgressStream::start(source, Arc::new(JsonLines), Duration::from_secs(1)),
        Mode::Bars => ProgressStream::start(
            source,
            Arc::new(Bars::default()),
            Duration::from_millis(200),
        ),
        Mode::None => ProgressStream::none(),
    }
}

/// `{"type": "status", …the event…}` per event.
struct JsonLines;

impl ProgressSink for JsonLines {
    fn event(&self, e: &ProgressEvent) {
        let mut v = serde_json::to_value(e).expect("progress serializes");
        if let Some(m) = v.as_object_mut() {
            m.insert("type".into(), "status".into());
        }
        print_json(&v);
    }
}

#[derive(Default)]
struct Bars {
    state: Mutex<Option<(MultiProgress, Vec<ProgressBar>)>>,
}

impl ProgressSink for Bars {
    fn event(&self, e: &ProgressEvent) {
        let mut state = self.state.lock().unwrap();
        let (multi, bars) = state.get_or_insert_with(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Vec::new(),
            )
        });
        let style = ProgressStyle::with_template("{spinner} {msg}").expect("template");
        let text = lines(e);
        while bars.len() < text.len() {
            let b = multi.add(ProgressBar::new_spinner());
            b.set_style(style.clone());
            bars.push(b);
        }
        for (b, t) in bars.iter().zip(text) {
            b.set_message(t);
            b.tick();
        }
    }

    fn finish(&self) {
        if let Some((_, bars)) = self.state.lock().unwrap().take() {
            for b in bars {
                b.finish_and_clear();
            }
        }
    }
}

/// The text of each line of the display.
fn lines(e: &ProgressEvent) -> Vec<String> {
    match e {
        ProgressEvent::Backup(b) => {
            let secs = b.seconds.max(0.001);
            let mut out = vec![format!(
                "[{:>5.0}s] {} files, {} dirs, read {} ({}/s), new {}{}",
                secs,
                b.files,
                b.dirs,
                bytes(b.bytes_read),
                bytes((b.bytes_read as f64 / secs) as u64),
                bytes(b.bytes_new),
                match b.errors {
                    0 => String::new(),
                    n => format!(", {n} errors"),
                }
            )];
            for r in &b.replicas {
                out.push(format!(
                    "  {}: {} of {} packs, {}{}",
                    r.name,
                    r.packs_done,
                    r.packs_queued,
                    bytes(r.bytes_done),
                    if r.failed { " FAILED" } else { "" }
                ));
            }
            out
        }
        ProgressEvent::Restore(r) => vec![format!(
            "[{:>5.0}s] restored {} of {} files, {} of {}",
            r.seconds,
            r.files,
            r.total_files,
            bytes(r.bytes),
            bytes(r.total_bytes),
        )],
        ProgressEvent::Check(c) => vec![format!(
            "[{:>5.0}s] {}: {} of {} packs read ({}), {} snapshots checked",
            c.seconds,
            c.replica,
            c.packs_done,
            c.packs_total,
            bytes(c.bytes_done),
            c.snapshots_done,
        )],
        ProgressEvent::Sync(s) => s
            .targets
            .iter()
            .map(|t| {
                let what = match t.phase {
                    PHASE_PLAN => "planning".to_string(),
                    PHASE_PACKS => format!(
                        "packs {} of {} ({} of {})",
                        t.packs_done,
                        t.packs_total,
                        bytes(t.bytes_done),
                        bytes(t.bytes_total)
                    ),
                    PHASE_INDEX => "index files".to_string(),
                    PHASE_DONE => "done".to_string(),
                    _ => "snapshots".to_string(),
                };
                format!("[{:>5.0}s] {}: {what}", s.seconds, t.replica)
            })
            .collect(),
    }
}
