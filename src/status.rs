//! A continuous job's `status.json`: its schema (docs/jobs.md). Writing it is
//! [`crate::fsutil::write_atomic`]'s job; its times are [`crate::fsutil::rfc3339`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fsutil::{rfc3339, rfc3339_opt};

/// Bumped when a field changes meaning; readers can tell old files apart.
pub const SCHEMA_VERSION: u32 = 1;

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
    pub warnings: Vec<String>,
    pub instance: Option<String>,
    pub run_command: Option<String>,
    pub log_written_bytes: u64,
    pub log_dropped_lines: u64,
    pub log_dropped_bytes: u64,
    pub log_error: Option<String>,
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
            warnings: Vec::new(),
            instance: instance.map(str::to_string),
            run_command: None,
            log_written_bytes: 0,
            log_dropped_lines: 0,
            log_dropped_bytes: 0,
            log_error: None,
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
}
