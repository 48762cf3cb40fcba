//! A continuous job's `status.json`: its schema (docs/jobs.md), and the schema
//! version every state file the host writes carries (`status.json`, run records,
//! `scheduler_state.json`). Writing is [`crate::fsutil::write_atomic`]'s job; times
//! are [`crate::fsutil::rfc3339`]. The shapes on disk are pinned by the golden files
//! in tests/data/golden/.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::fsutil::{rfc3339, rfc3339_opt};
use crate::spec::problem::Problem;

/// Bumped when a field changes meaning; readers can tell old files apart.
pub const SCHEMA_VERSION: u32 = 1;

/// Whether this build reads a file written with schema `version`. A newer file is
/// refused with a warning naming it: a newer jobhost wrote it, and its fields may mean
/// what this build would misread (or, rewriting it, destroy).
pub fn known_schema(path: &Path, version: u32) -> bool {
    if version <= SCHEMA_VERSION {
        return true;
    }
    tracing::warn!(
        "{}: schema_version {version} is newer than this jobhost reads ({SCHEMA_VERSION}): the file is ignored and left as it is; run the jobhost version that wrote it",
        path.display()
    );
    false
}

/// Parses a state file read from `path`; `None` when it is not valid or its schema is
/// newer than this build's (said in the log, even when the newer shape does not parse).
pub fn parse_versioned<T: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    version: impl Fn(&T) -> u32,
) -> Option<T> {
    #[derive(Deserialize)]
    struct Header {
        #[serde(default)]
        schema_version: u32,
    }
    match serde_json::from_slice::<T>(bytes) {
        Ok(v) => known_schema(path, version(&v)).then_some(v),
        Err(_) => {
            if let Ok(h) = serde_json::from_slice::<Header>(bytes) {
                known_schema(path, h.schema_version);
            }
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContinuousState {
    Starting,
    Running,
    PendingRestart,
    Stopping,
    Stopped,
    Error,
    InactiveInstance,
}

impl ContinuousState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContinuousState::Starting => "Starting",
            ContinuousState::Running => "Running",
            ContinuousState::PendingRestart => "PendingRestart",
            ContinuousState::Stopping => "Stopping",
            ContinuousState::Stopped => "Stopped",
            ContinuousState::Error => "Error",
            ContinuousState::InactiveInstance => "InactiveInstance",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
}

/// `LOGS/continuous/NAME/status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuousStatus {
    pub schema_version: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub status: ContinuousState,
    /// Why the job is in this state, in words (disabled, backoff, waiting for a lock).
    pub detailed_status: String,
    pub pid: Option<i32>,
    #[serde(with = "rfc3339_opt")]
    pub started_at: Option<DateTime<Utc>>,
    pub restarts: u64,
    pub last_exit: Option<LastExit>,
    #[serde(with = "rfc3339_opt")]
    pub next_restart_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// The job folder's problems, structured (file, line, column, key, message,
    /// fix); `[]` when it has none. `error` is them flattened into one line.
    #[serde(default)]
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    pub instance: Option<String>,
    pub run_command: Option<String>,
    pub log_written_bytes: u64,
    pub log_dropped_lines: u64,
    pub log_dropped_bytes: u64,
    pub log_error: Option<String>,
    /// In a cluster, the fencing token of this host's lease on a singleton job
    /// (`WEBJOBS_FENCING_TOKEN` of its run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<i64>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl ContinuousStatus {
    pub fn new(name: &str, instance: Option<&str>) -> ContinuousStatus {
        ContinuousStatus {
            schema_version: SCHEMA_VERSION,
            name: name.to_string(),
            job_type: "continuous".to_string(),
            status: ContinuousState::Starting,
            detailed_status: String::new(),
            pid: None,
            started_at: None,
            restarts: 0,
            last_exit: None,
            next_restart_at: None,
            error: None,
            problems: Vec::new(),
            warnings: Vec::new(),
            instance: instance.map(str::to_string),
            run_command: None,
            log_written_bytes: 0,
            log_dropped_lines: 0,
            log_dropped_bytes: 0,
            log_error: None,
            fencing_token: None,
            updated_at: Utc::now(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fsutil::write_atomic;

    #[test]
    fn atomic_write_round_trips_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/status.json");
        let mut st = ContinuousStatus::new("web", Some("node1"));
        st.status = ContinuousState::Running;
        st.pid = Some(42);
        // Files keep milliseconds; compare with a time that has no finer part.
        st.updated_at = DateTime::parse_from_rfc3339("2026-11-30T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        write_atomic(&path, &st).unwrap();
        st.restarts = 3;
        write_atomic(&path, &st).unwrap();
        let back: ContinuousStatus =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, st);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("status.json")]);
    }

    #[test]
    fn a_state_file_from_a_newer_schema_is_refused_even_when_it_would_parse() {
        let mut st = ContinuousStatus::new("web", None);
        // Files keep milliseconds; compare with a time that has no finer part.
        st.updated_at = DateTime::parse_from_rfc3339("2026-11-30T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut v = serde_json::to_value(&st).unwrap();
        let path = Path::new("L/continuous/web/status.json");
        let parse = |v: &serde_json::Value| {
            parse_versioned(
                path,
                &serde_json::to_vec(v).unwrap(),
                |s: &ContinuousStatus| s.schema_version,
            )
        };
        assert_eq!(parse(&v), Some(st));
        v["schema_version"] = (SCHEMA_VERSION + 1).into();
        assert_eq!(parse(&v), None);
        // A newer shape that does not parse at all is refused too (and said so).
        v["status"] = "Hibernating".into();
        assert_eq!(parse(&v), None);
        assert!(known_schema(path, SCHEMA_VERSION));
        assert!(known_schema(path, 0));
        assert!(!known_schema(path, SCHEMA_VERSION + 1));
    }
}
