//! `status.json` files: their schema and their atomic writing.
//!
//! A status file is written to a temporary name in the same folder, fsynced, then
//! renamed over the old one, so a reader sees either the old or the new file, never a
//! partial one, even if the host dies mid-write.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

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

#[derive(Debug, thiserror::Error)]
#[error("writing status file {path}: {source}")]
pub struct StatusError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes `value` as pretty JSON to `path` atomically (tmp, fsync, rename).
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StatusError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StatusError {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    bytes.push(b'\n');
    write_atomic_bytes(path, &bytes)
}

/// Writes `bytes` to `path` atomically (tmp, fsync, rename).
pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<(), StatusError> {
    let err = |source| StatusError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        // The folder usually exists: make it only when the first try says it does not.
        let mut f = match std::fs::File::create(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                std::fs::File::create(&tmp)?
            }
            other => other?,
        };
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

pub fn rfc3339_string(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339_string(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339_string(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
    fn times_are_rfc3339_utc_with_millis() {
        let t = DateTime::parse_from_rfc3339("2026-11-30T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339_string(t), "2026-11-30T10:00:00.123Z");
    }
}
