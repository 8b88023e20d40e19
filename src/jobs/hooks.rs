//! Commands run around a job (`before`, `after`, `on_failure`): started
//! without cairn's secrets in their environment, told about the run by
//! `CAIRN_*` variables, killed with their whole process group when they
//! run past their timeout.

use std::time::Duration;

use tokio::io::AsyncReadExt;

/// How a hook ended, when it did not succeed: a sentence for the run's
/// error chain, naming the hook, how it ended and the end of its output.
#[derive(Debug, thiserror::Error)]
#[error("{hook} hook {how}{output}")]
pub struct HookFailed {
    pub hook: &'static str,
    pub how: String,
    output: String,
}

/// The output kept from a failed hook for its error message.
const OUTPUT_TAIL: usize = 1024;

/// Run hook `name` (`argv`) with `env` added to the environment; fails if
/// it cannot start, exits non-zero, is killed, or runs longer than
/// `timeout` (then its process group is killed).
pub async fn run(
    name: &'static str,
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<(), HookFailed> {
    let failed = |how: String, output: &[u8]| {
        let text = String::from_utf8_lossy(output);
        let text = text.trim();
        let tail: String = if text.len() > OUTPUT_TAIL {
            let cut = text.len() - OUTPUT_TAIL;
            let start = (cut..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            format!("…{}", &text[start..])
        } else {
            text.to_string()
        };
        HookFailed {
            hook: name,
            how,
            output: if tail.is_empty() {
                String::new()
            } else {
                format!(": {}", tail.replace('\n', " | "))
            },
        }
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(failed("is empty".into(), b""));
    };
    let mut cmd = tokio::process::Command::from(cairn_backends::child::command(program, args));
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group, so a timeout kills what it started too
        // (`sh -c 'sleep 1000'` leaves `sleep` holding the pipes otherwise).
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(format!("could not start {program}: {e}"), b""))?;
    let pid = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let collect = async {
        // Both pipes are drained, keeping only their end (a chatty hook
        // must not grow cairn's memory).
        let mut out = Vec::new();
        let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
        let (mut a_open, mut b_open) = (true, true);
        while a_open || b_open {
            tokio::select! {
                n = stdout.read(&mut a), if a_open => match n {
                    Ok(0) | Err(_) => a_open = false,
                    Ok(n) => out.extend_from_slice(&a[..n]),
                },
                n = stderr.read(&mut b), if b_open => match n {
                    Ok(0) | Err(_) => b_open = false,
                    Ok(n) => out.extend_from_slice(&b[..n]),
                },
            }
            if out.len() > 4 * OUTPUT_TAIL {
                out.drain(..out.len() - 2 * OUTPUT_TAIL);
            }
        }
        let status = child.wait().await;
        (status, out)
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok((Ok(status), out)) if status.success() => {
            tracing::debug!(hook = name, "hook finished");
            let _ = out;
            Ok(())
        }
        Ok((Ok(status), out)) => Err(failed(
            crate::ops::backup::stream::how_it_ended(status),
            &out,
        )),
        Ok((Err(e), out)) => Err(failed(format!("could not be waited for: {e}"), &out)),
        Err(_) => {
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            Err(failed(
                format!(
                    "ran longer than its timeout ({}) and was killed",
                    crate::config::duration::format(timeout)
                ),
                b"",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn hooks_see_the_run_and_fail_clearly() {
        let env = vec![("CAIRN_JOB".to_string(), "nightly".to_string())];
        run(
            "before",
            &sh("test \"$CAIRN_JOB\" = nightly"),
            &env,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let e = run(
            "after",
            &sh("echo out; echo oops >&2; exit 3"),
            &env,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("after hook exited with status 3"),
            "{text}"
        );
        assert!(text.contains("oops"), "{text}");
        let e = run(
            "before",
            &["/nonexistent/hook".into()],
            &env,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("could not start"), "{e}");
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        let script = format!("sleep 2; touch {}", marker.display());
        let started = std::time::Instant::now();
        let e = run(
            "before",
            &sh(&format!("({script}) & wait")),
            &[],
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "the hook's child outlived the kill");
    }
}
