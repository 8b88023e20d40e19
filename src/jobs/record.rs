//! What one job run did, as the run history stores it and every front end
//! (CLI, daemon, metrics, health, notifications) reads it.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Done on every replica the job names.
    Success,
    /// Done, but some replicas failed (they are named) or some items could
    /// not be handled.
    Partial,
    /// Nothing was done, or what was done is not usable (no snapshot).
    Failure,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Partial => "partial",
            RunStatus::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        match s {
            "success" => Some(RunStatus::Success),
            "partial" => Some(RunStatus::Partial),
            "failure" => Some(RunStatus::Failure),
            _ => None,
        }
    }
}

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Its schedule came due in the daemon.
    Schedule,
    /// A run missed while the daemon was down (`catch_up = true`).
    CatchUp,
    /// `cairn run NAME`.
    Manual,
    /// The HTTP API.
    Api,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch_up",
            Trigger::Manual => "manual",
            Trigger::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        match s {
            "schedule" => Some(Trigger::Schedule),
            "catch_up" => Some(Trigger::CatchUp),
            "manual" => Some(Trigger::Manual),
            "api" => Some(Trigger::Api),
            _ => None,
        }
    }
}

/// One replica's part in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRun {
    pub name: String,
    pub ok: bool,
    /// Why it failed (the error chain, never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes written to it by this run.
    #[serde(default)]
    pub bytes: u64,
    /// The replica's repository size (bytes of the packs its index lists)
    /// once a backup run ended on it; the dashboard charts it over time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_bytes: Option<u64>,
}

/// One run of one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The history's row id (0 before it is stored).
    pub id: i64,
    pub job: String,
    /// `backup`, `command`, `sqlite`, `sync`, `forget` or `check`.
    pub kind: String,
    pub trigger: Trigger,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub status: RunStatus,
    /// The snapshot saved, for a backup job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// New data added (before compression), for a backup job.
    #[serde(default)]
    pub bytes_added: u64,
    /// Attempts made (1 unless `retries` was used).
    pub attempts: u32,
    pub replicas: Vec<ReplicaRun>,
    /// Why the run failed or was partial, as an error chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who asked for it over the HTTP API: the token's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

impl RunRecord {
    pub fn duration_secs(&self) -> f64 {
        self.finished.duration_since(self.started).as_secs_f64()
    }

    /// The replicas that failed in this run.
    pub fn failed_replicas(&self) -> Vec<String> {
        self.replicas
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_runs_recorded_before_repo_bytes_still_read() {
        let old: ReplicaRun = serde_json::from_str(r#"{"name":"s3","ok":true,"bytes":5}"#).unwrap();
        assert_eq!(old.repo_bytes, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("repo_bytes"));
        let new = ReplicaRun {
            repo_bytes: Some(9),
            ..old
        };
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains(r#""repo_bytes":9"#), "{json}");
    }
}
