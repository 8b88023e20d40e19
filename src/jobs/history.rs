//! The local run history: one row per job run (start, end, outcome,
//! snapshot, bytes, replicas, error chain) in a SQLite database under the
//! state directory. The daemon and `cairn run` both write it (SQLite's
//! locking keeps them apart); `cairn history`, `cairn jobs`, `/metrics`
//! and `/health` read it. It keeps the newest [`KEEP_PER_JOB`] runs of
//! each job, so it does not grow without bound.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::record::{ReplicaRun, RunRecord, RunStatus, Trigger};

/// Runs kept per job; older ones are deleted as new ones are recorded.
pub const KEEP_PER_JOB: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("run history {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("run history {path}: creating its directory: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An open run history.
pub struct History {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("path", &self.path).finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    started     TEXT NOT NULL,
    finished    TEXT NOT NULL,
    status      TEXT NOT NULL,
    snapshot    TEXT,
    bytes_added INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 1,
    replicas    TEXT NOT NULL DEFAULT '[]',
    error       TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, id);
";

/// Columns added after the first schema, each added to an older database
/// when it is opened.
const ADDED_COLUMNS: &[(&str, &str)] = &[("actor", "ALTER TABLE runs ADD COLUMN actor TEXT")];

impl History {
    /// The default place: `history.sqlite` in the state directory.
    pub fn default_path() -> PathBuf {
        crate::config::paths::state_dir().join("history.sqlite")
    }

    /// Open (creating) the history at `path`.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let db = |source| HistoryError::Db {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        // Another process (a `cairn run` beside the daemon) may be writing.
        conn.busy_timeout(Duration::from_secs(30)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        for (column, add) in ADDED_COLUMNS {
            let has: bool = conn
                .query_row(
                    "SELECT count(*) FROM pragma_table_info('runs') WHERE name = ?1",
                    params![column],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(db)?
                > 0;
            if !has {
                conn.execute_batch(add).map_err(db)?;
            }
        }
        Ok(History {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> HistoryError {
        HistoryError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Store `run`; its id is set to the new row's.
    pub fn record(&self, run: &mut RunRecord) -> Result<(), HistoryError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let replicas = serde_json::to_string(&run.replicas).unwrap_or_else(|_| "[]".into());
        conn.execute(
            "INSERT INTO runs (job, kind, trigger, started, finished, status, snapshot,
                               bytes_added, attempts, replicas, error, actor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                run.job,
                run.kind,
                run.trigger.as_str(),
                run.started.to_string(),
                run.finished.to_string(),
                run.status.as_str(),
                run.snapshot,
                i64::try_from(run.bytes_added).unwrap_or(i64::MAX),
                run.attempts,
                replicas,
                run.error,
                run.actor,
            ],
        )
        .map_err(|e| self.err(e))?;
        run.id = conn.last_insert_rowid();
        conn.execute(
            "DELETE FROM runs WHERE job = ?1 AND id <= (
                 SELECT id FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![run.job, KEEP_PER_JOB],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The newest runs first, of one job or of all, at most `limit`.
    pub fn list(&self, job: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, HistoryError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = conn
            .prepare(
                "SELECT id, job, kind, trigger, started, finished, status, snapshot,
                        bytes_added, attempts, replicas, error, actor
                 FROM runs WHERE (?1 IS NULL OR job = ?1) ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![job, limit], row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The newest run of `job`.
    pub fn last(&self, job: &str) -> Result<Option<RunRecord>, HistoryError> {
        Ok(self.list(Some(job), 1)?.pop())
    }

    /// The newest successful run of `job`.
    pub fn last_success(&self, job: &str) -> Result<Option<RunRecord>, HistoryError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row(
            "SELECT id, job, kind, trigger, started, finished, status, snapshot,
                    bytes_added, attempts, replicas, error, actor
             FROM runs WHERE job = ?1 AND status = 'success' ORDER BY id DESC LIMIT 1",
            params![job],
            row,
        )
        .optional()
        .map_err(|e| self.err(e))
    }
}

/// A row of `runs` as a record; unreadable fields (written by a newer
/// cairn) become neutral values rather than failing the whole listing.
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let time = |s: String| s.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let replicas: String = r.get(10)?;
    Ok(RunRecord {
        id: r.get(0)?,
        job: r.get(1)?,
        kind: r.get(2)?,
        trigger: Trigger::parse(&r.get::<_, String>(3)?).unwrap_or(Trigger::Manual),
        started: time(r.get(4)?),
        finished: time(r.get(5)?),
        status: RunStatus::parse(&r.get::<_, String>(6)?).unwrap_or(RunStatus::Failure),
        snapshot: r.get(7)?,
        bytes_added: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
        attempts: r.get(9)?,
        replicas: serde_json::from_str::<Vec<ReplicaRun>>(&replicas).unwrap_or_default(),
        error: r.get(11)?,
        actor: r.get(12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str, status: RunStatus, secs: i64) -> RunRecord {
        let t = jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap();
        RunRecord {
            id: 0,
            job: job.into(),
            kind: "backup".into(),
            trigger: Trigger::Schedule,
            started: t,
            finished: t,
            status,
            snapshot: Some("abcd".into()),
            bytes_added: 42,
            attempts: 1,
            replicas: vec![ReplicaRun {
                name: "s3".into(),
                ok: status == RunStatus::Success,
                error: None,
                bytes: 7,
                // Kept in the JSON `replicas` column (the equality below).
                repo_bytes: Some(7_000),
            }],
            error: None,
            actor: None,
        }
    }

    #[test]
    fn runs_are_kept_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("sub/history.sqlite")).unwrap();
        let mut a = run("a", RunStatus::Success, 0);
        h.record(&mut a).unwrap();
        h.record(&mut run("a", RunStatus::Failure, 10)).unwrap();
        h.record(&mut run("b", RunStatus::Partial, 20)).unwrap();
        let all = h.list(None, 10).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].job, "b");
        assert_eq!(h.last("a").unwrap().unwrap().status, RunStatus::Failure);
        assert_eq!(h.last_success("a").unwrap().unwrap(), a);
        assert!(h.last_success("b").unwrap().is_none());
        // A second connection (another process) sees the same rows.
        let h2 = History::open(h.path()).unwrap();
        assert_eq!(h2.list(Some("a"), 10).unwrap().len(), 2);
    }

    #[test]
    fn the_actor_is_kept_and_old_databases_gain_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        {
            // A history written before the actor column existed.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO runs (job, kind, trigger, started, finished, status)
                 VALUES ('old', 'backup', 'manual', '2026-01-01T00:00:00Z',
                         '2026-01-01T00:00:00Z', 'success')",
                [],
            )
            .unwrap();
        }
        let h = History::open(&path).unwrap();
        assert_eq!(h.last("old").unwrap().unwrap().actor, None);
        let mut r = run("a", RunStatus::Success, 0);
        r.actor = Some("ci-token".into());
        h.record(&mut r).unwrap();
        assert_eq!(
            h.last("a").unwrap().unwrap().actor.as_deref(),
            Some("ci-token")
        );
    }

    #[test]
    fn old_runs_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("h.sqlite")).unwrap();
        for i in 0..KEEP_PER_JOB + 5 {
            h.record(&mut run("a", RunStatus::Success, i)).unwrap();
        }
        h.record(&mut run("b", RunStatus::Success, 0)).unwrap();
        assert_eq!(h.list(Some("a"), 5000).unwrap().len() as i64, KEEP_PER_JOB);
        assert_eq!(h.list(Some("b"), 5000).unwrap().len(), 1);
    }
}
