//! Triggered runs on disk: `LOGS/triggered/NAME/RUN_ID/{status.json,output_log.txt}`,
//! run ids, history trimming, recovery of runs a dead host left `Running`, and the
//! scheduler's persisted last-fired occurrence.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::status::{SCHEMA_VERSION, rfc3339_string, write_atomic};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    Running,
    Success,
    Failed,
    Aborted,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "Running",
            RunState::Success => "Success",
            RunState::Failed => "Failed",
            RunState::Aborted => "Aborted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    Schedule,
    Manual,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Schedule => "schedule",
            TriggerKind::Manual => "manual",
        }
    }
}

/// `RUN_ID/status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(default)]
    pub schema_version: u32,
    pub id: String,
    pub name: String,
    pub status: RunState,
    pub trigger: TriggerKind,
    pub arguments: Vec<String>,
    pub start_time: String,
    pub end_time: Option<String>,
    pub duration_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    /// The occurrence a scheduled run was fired for.
    #[serde(default)]
    pub scheduled_for: Option<String>,
    /// Start minus the scheduled second, for scheduled runs.
    #[serde(default)]
    pub lateness_ms: Option<i64>,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub instance: Option<String>,
}

/// `YYYYMMDDHHMMSSffff`: UTC to 1/10000 s, as Kudu.
pub fn run_id_at(t: DateTime<Utc>) -> String {
    format!(
        "{}{:04}",
        t.format("%Y%m%d%H%M%S"),
        t.timestamp_subsec_micros() / 100
    )
}

pub fn is_run_id(s: &str) -> bool {
    s.len() == 18 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Claims a fresh run folder under `job_logs` for a run starting at `t`. Creating the
/// folder is the claim, so two triggers in the same 1/10000 s (or two hosts) get two
/// ids: the later one takes the next free number.
pub fn claim_run_dir(job_logs: &Path, t: DateTime<Utc>) -> std::io::Result<(String, PathBuf)> {
    std::fs::create_dir_all(job_logs)?;
    let mut id: u64 = run_id_at(t).parse().map_err(std::io::Error::other)?;
    // The newest existing id also bounds us: ids only grow, even if the clock went back.
    if let Some(last) = list_ids(job_logs)
        .last()
        .and_then(|s| s.parse::<u64>().ok())
    {
        id = id.max(last + 1);
    }
    for _ in 0..10_000 {
        let s = format!("{id:018}");
        let dir = job_logs.join(&s);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((s, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id += 1,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free run id"))
}

/// Run ids present, oldest first.
pub fn list_ids(job_logs: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(job_logs) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_run_id(n))
        .collect();
    ids.sort();
    ids
}

pub fn read(job_logs: &Path, id: &str) -> Option<RunRecord> {
    if !is_run_id(id) {
        return None;
    }
    let bytes = std::fs::read(job_logs.join(id).join("status.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Newest first, as the API's history.
pub fn history(job_logs: &Path) -> Vec<RunRecord> {
    list_ids(job_logs)
        .iter()
        .rev()
        .filter_map(|id| read(job_logs, id))
        .collect()
}

pub fn write(job_logs: &Path, rec: &RunRecord) -> Result<(), crate::status::StatusError> {
    write_atomic(&job_logs.join(&rec.id).join("status.json"), rec)
}

/// Deletes the oldest run folders beyond `keep`, never `protect` (the run going on).
pub fn trim(job_logs: &Path, keep: u32, protect: Option<&str>) -> Vec<String> {
    let ids = list_ids(job_logs);
    let excess = ids.len().saturating_sub(keep as usize);
    let mut removed = Vec::new();
    for id in ids.into_iter().take(excess) {
        if Some(id.as_str()) == protect {
            continue;
        }
        if std::fs::remove_dir_all(job_logs.join(&id)).is_ok() {
            removed.push(id);
        }
    }
    removed
}

/// Marks runs left `Running` as `Aborted`. Only call while holding `run.lock`: then no
/// live host is running this job, so every `Running` record is a dead host's.
pub fn recover_stale(job_logs: &Path, why: &str) -> Vec<String> {
    let mut fixed = Vec::new();
    for id in list_ids(job_logs) {
        let Some(mut rec) = read(job_logs, &id) else {
            continue;
        };
        if rec.status != RunState::Running {
            continue;
        }
        rec.status = RunState::Aborted;
        rec.error = Some(why.to_string());
        rec.end_time = Some(rfc3339_string(Utc::now()));
        if write(job_logs, &rec).is_ok() {
            fixed.push(id);
        }
    }
    fixed
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct SchedulerState {
    schema_version: u32,
    last_fired: Option<String>,
}

fn state_path(job_logs: &Path) -> PathBuf {
    job_logs.join("scheduler_state.json")
}

pub fn load_last_fired(job_logs: &Path) -> Option<DateTime<Utc>> {
    let bytes = std::fs::read(state_path(job_logs)).ok()?;
    let st: SchedulerState = serde_json::from_slice(&bytes).ok()?;
    DateTime::parse_from_rfc3339(&st.last_fired?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub fn save_last_fired(
    job_logs: &Path,
    t: DateTime<Utc>,
) -> Result<(), crate::status::StatusError> {
    let st = SchedulerState {
        schema_version: SCHEMA_VERSION,
        last_fired: Some(rfc3339_string(t)),
    };
    write_atomic(&state_path(job_logs), &st)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn run_ids_are_18_digits_of_utc_time() {
        let t = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 5).unwrap()
            + chrono::Duration::microseconds(123_456);
        assert_eq!(run_id_at(t), "202611301000051234");
        assert!(is_run_id(&run_id_at(t)));
        assert!(!is_run_id("../../etc"));
    }

    #[test]
    fn two_claims_in_the_same_instant_get_two_ids_and_ids_never_go_back() {
        let tmp = tempfile::tempdir().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 5).unwrap();
        let (a, _) = claim_run_dir(tmp.path(), t).unwrap();
        let (b, _) = claim_run_dir(tmp.path(), t).unwrap();
        let (c, _) = claim_run_dir(tmp.path(), t - chrono::Duration::hours(1)).unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[test]
    fn trim_keeps_the_newest_and_the_protected() {
        let tmp = tempfile::tempdir().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let ids: Vec<String> = (0..5)
            .map(|i| {
                claim_run_dir(tmp.path(), t + chrono::Duration::seconds(i))
                    .unwrap()
                    .0
            })
            .collect();
        let removed = trim(tmp.path(), 2, Some(&ids[0]));
        assert_eq!(removed, vec![ids[1].clone(), ids[2].clone()]);
        assert_eq!(
            list_ids(tmp.path()),
            vec![ids[0].clone(), ids[3].clone(), ids[4].clone()]
        );
    }

    #[test]
    fn last_fired_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(load_last_fired(tmp.path()), None);
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 5, 0).unwrap();
        save_last_fired(tmp.path(), t).unwrap();
        assert_eq!(load_last_fired(tmp.path()), Some(t));
    }
}
