//! SIGINT and SIGTERM: the first cancels the running operation through its
//! token (it stops at the next safe point, reports what it did and releases
//! its locks); a second one ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Set once a repository is open: from then on a signal cancels the
/// operation. Before (at a passphrase prompt, say) there is nothing to stop
/// cleanly, and a signal ends the process at once, as it always did.
static ARMED: AtomicBool = AtomicBool::new(false);

/// A repository is open: let the next signal cancel instead of exiting.
pub fn arm() {
    ARMED.store(true, Ordering::Relaxed);
}

/// Watch for signals until the returned guard is dropped.
pub fn watch(cancel: CancellationToken, json: bool) -> Watch {
    let task = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot watch for signals; Ctrl-C will not stop cleanly");
            return;
        };
        let first = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        if !ARMED.load(Ordering::Relaxed) {
            std::process::exit(cairn::ops::ExitCode::Interrupted.code());
        }
        if !json {
            eprintln!("\n{first}: stopping at the next safe point (again to quit at once)");
        }
        cancel.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(cairn::ops::ExitCode::Interrupted.code());
    });
    Watch(task)
}

/// Stops watching when dropped.
pub struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}
