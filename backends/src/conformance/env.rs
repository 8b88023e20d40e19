//! Finding the test servers from the environment, shared by every test
//! that talks to a real server (this crate's and the engine's).

/// The value of `var` (set by `eval "$(scripts/test-servers env)"`), or
/// `None` after a loud `SKIPPED` notice. Under `CI=true` a missing server
/// is a failure, not a skip, so a green CI run always exercised it.
pub fn server_from_env(what: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let msg = format!(
                "SKIPPED: {what} server not configured (run scripts/test-servers start; \
                 eval \"$(scripts/test-servers env)\"): {var} is not set"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg} — CI=true, so this is a failure");
            }
            loud_skip(&msg);
            None
        }
    }
}

/// A fresh location under `base`, so runs and tests never share objects.
pub fn fresh_location(base: &str, test: &str) -> String {
    format!(
        "{}/{test}-{:016x}",
        base.trim_end_matches('/'),
        rand::random::<u64>()
    )
}

/// Say on the terminal that a test skipped something, even while the test
/// harness captures output: `eprintln!` inside a test is captured and shown
/// only for failures, and a skip must be seen. Writing to the `stderr`
/// handle goes past the capture.
pub fn loud_skip(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\n*** {msg} ***\n");
}
