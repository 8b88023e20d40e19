//! Typed findings: what an operation found wrong, naming the replica, the
//! object and (where a snapshot is affected) the path, so a front end can
//! filter and group them. `message` is the sentence the CLI prints.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Damage: data that cannot be read back as it was written.
    Error,
    /// Worth knowing, not damage (a replica behind, stray packs).
    Warning,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The object is there but cannot be read, opened or authenticated.
    Unreadable,
    /// Referenced (by an index file) but not stored.
    Missing,
    /// Stored with another size than the index records.
    WrongSize,
    /// Its bytes do not hash to its name.
    Damaged,
    /// A pack's footer disagrees with the index.
    FooterMismatch,
    /// A blob in a pack fails authentication or does not hash to its id.
    BadBlob,
    /// A snapshot needs data that is unusable on this replica.
    LostData,
    /// A snapshot `repair snapshots` marked damaged still lacks data.
    MarkedDamaged,
    /// Packs no index file describes (left by an interrupted backup).
    StrayPacks,
    /// Two replicas hold different bytes under one pack name.
    CopiesDiffer,
    /// A replica lacks snapshots other replicas hold.
    Behind,
    /// A tree entry whose name could leave its directory (or repeats an
    /// earlier one): not restored.
    RefusedEntry,
    /// An entry deliberately not restored (a device node without
    /// `--allow-devices`).
    NotRestored,
    /// Set-user/group-id bits cleared (without `--keep-setuid`).
    ModeCleared,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub problem: Problem,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The stored object: `data/<id>`, `index/<id>`, `snapshots/<id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The snapshot (short id) affected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The path in that snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub message: String,
}

impl Finding {
    pub fn error(problem: Problem, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            problem,
            replica: None,
            object: None,
            snapshot: None,
            path: None,
            message: message.into(),
        }
    }

    pub fn warning(problem: Problem, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(problem, message)
        }
    }

    #[must_use]
    pub fn replica(mut self, r: &str) -> Finding {
        self.replica = Some(r.to_string());
        self
    }

    #[must_use]
    pub fn object(mut self, o: impl std::fmt::Display) -> Finding {
        self.object = Some(o.to_string());
        self
    }

    #[must_use]
    pub fn at(mut self, snapshot: &str, path: impl std::fmt::Display) -> Finding {
        self.snapshot = Some(snapshot.to_string());
        self.path = Some(path.to_string());
        self
    }
}
