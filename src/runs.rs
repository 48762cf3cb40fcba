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
    claim_after(job_logs, t, &list_ids(job_logs))
}

/// [`claim_run_dir`] with the folder's run ids already listed (oldest first).
fn claim_after(
    job_logs: &Path,
    t: DateTime<Utc>,
    ids: &[String],
) -> std::io::Result<(String, PathBuf)> {
    let mut id: u64 = run_id_at(t).parse().map_err(std::io::Error::other)?;
    // The newest existing id also bounds us: ids only grow, even if the clock went back.
    if let Some(last) = ids.last().and_then(|s| s.parse::<u64>().ok()) {
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

/// A run opened on disk by [`open_run`].
#[derive(Debug)]
pub struct OpenedRun {
    pub dir: PathBuf,
    /// The `Running` record could not be written (the run may still start).
    pub record_error: Option<crate::status::StatusError>,
}

/// Opens a run on disk with one listing of the job's folder: claims its folder for a
/// start at `t`, writes `rec` (its `id` filled in here) as the `Running` record, and
/// trims the history to `keep` folders, the new one included. The record is on disk
/// before the process starts, so for a scheduled run it also persists the fired
/// occurrence (`scheduled_for`; see [`load_last_fired`]).
pub fn open_run(
    job_logs: &Path,
    t: DateTime<Utc>,
    keep: u32,
    rec: &mut RunRecord,
) -> std::io::Result<OpenedRun> {
    std::fs::create_dir_all(job_logs)?;
    let mut ids = list_ids(job_logs);
    let (id, dir) = claim_after(job_logs, t, &ids)?;
    rec.id = id.clone();
    let record_error = write(job_logs, rec).err();
    ids.push(id.clone());
    ids.sort();
    trim_listed(job_logs, ids, keep, Some(&id));
    Ok(OpenedRun { dir, record_error })
}

/// Writes a run's final record and trims the history to `keep` folders.
pub fn close_run(
    job_logs: &Path,
    rec: &RunRecord,
    keep: u32,
) -> Result<(), crate::status::StatusError> {
    let written = write(job_logs, rec);
    trim(job_logs, keep, None);
    written
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
    trim_listed(job_logs, list_ids(job_logs), keep, protect)
}

fn trim_listed(job_logs: &Path, ids: Vec<String>, keep: u32, protect: Option<&str>) -> Vec<String> {
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

/// How many of the newest run records [`load_last_fired`] reads for a scheduled run
/// (manual runs in between have none).
const LAST_FIRED_LOOKBACK: usize = 64;

/// The last occurrence fired for this job: the newer of `scheduler_state.json` (fires
/// that ran nowhere: skipped, missed, queue full) and the `scheduled_for` of the newest
/// scheduled run's record (written before its process started).
pub fn load_last_fired(job_logs: &Path) -> Option<DateTime<Utc>> {
    let parse = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let from_state = std::fs::read(state_path(job_logs))
        .ok()
        .and_then(|b| serde_json::from_slice::<SchedulerState>(&b).ok())
        .and_then(|st| parse(st.last_fired.as_deref()?));
    let from_runs = list_ids(job_logs)
        .iter()
        .rev()
        .take(LAST_FIRED_LOOKBACK)
        .filter_map(|id| read(job_logs, id))
        .find_map(|rec| parse(rec.scheduled_for.as_deref()?));
    from_state.max(from_runs)
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

    fn running(scheduled_for: Option<DateTime<Utc>>) -> RunRecord {
        RunRecord {
            schema_version: SCHEMA_VERSION,
            id: String::new(),
            name: "job".into(),
            status: RunState::Running,
            trigger: TriggerKind::Schedule,
            arguments: Vec::new(),
            start_time: rfc3339_string(Utc::now()),
            end_time: None,
            duration_ms: None,
            exit_code: None,
            signal: None,
            error: None,
            scheduled_for: scheduled_for.map(rfc3339_string),
            lateness_ms: None,
            pid: None,
            instance: None,
        }
    }

    #[test]
    fn an_opened_run_is_on_disk_and_persists_its_occurrence_and_the_history_is_trimmed() {
        let tmp = tempfile::tempdir().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut ids = Vec::new();
        for k in 0..4 {
            let at = t + chrono::Duration::seconds(k);
            let mut rec = running(Some(at));
            let opened = open_run(tmp.path(), at, 3, &mut rec).unwrap();
            assert!(opened.record_error.is_none());
            assert_eq!(read(tmp.path(), &rec.id).unwrap(), rec);
            assert_eq!(load_last_fired(tmp.path()), Some(at));
            ids.push(rec.id);
        }
        assert_eq!(
            list_ids(tmp.path()),
            ids[1..].to_vec(),
            "three kept, the newest included"
        );
    }

    #[test]
    fn last_fired_is_the_newer_of_the_state_file_and_the_newest_scheduled_run() {
        let tmp = tempfile::tempdir().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut scheduled = running(Some(t));
        open_run(tmp.path(), t, 50, &mut scheduled).unwrap();
        // A manual run after it carries no occurrence: the scheduled one still counts.
        let mut manual = running(None);
        manual.trigger = TriggerKind::Manual;
        open_run(
            tmp.path(),
            t + chrono::Duration::seconds(1),
            50,
            &mut manual,
        )
        .unwrap();
        assert_eq!(load_last_fired(tmp.path()), Some(t));
        // A skipped occurrence is only in the state file.
        let skipped = t + chrono::Duration::seconds(2);
        save_last_fired(tmp.path(), skipped).unwrap();
        assert_eq!(load_last_fired(tmp.path()), Some(skipped));
        save_last_fired(tmp.path(), t - chrono::Duration::hours(1)).unwrap();
        assert_eq!(load_last_fired(tmp.path()), Some(t));
    }
}
