//! Triggered runs on disk: `LOGS/triggered/NAME/RUN_ID/{status.json,output_log.txt}`,
//! run ids, history trimming, recovery of runs a dead host left `Running`, and the
//! scheduler's persisted last-fired occurrence.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fsutil::{WriteError, rfc3339_string, write_atomic};
use crate::layout::{RUN_OUTPUT, RUN_RECORD, SCHEDULER_STATE};
use crate::status::{SCHEMA_VERSION, parse_versioned};

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
    /// A message from the job's queue (docs/queues.md).
    Message,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Schedule => "schedule",
            TriggerKind::Manual => "manual",
            TriggerKind::Message => "message",
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
    /// The message a `message` run was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl RunRecord {
    /// The record of a run starting at `start`, before its folder gives it an id.
    pub fn running(
        name: &str,
        trigger: TriggerKind,
        arguments: Vec<String>,
        start: DateTime<Utc>,
        scheduled_for: Option<DateTime<Utc>>,
        instance: Option<String>,
    ) -> RunRecord {
        RunRecord {
            schema_version: SCHEMA_VERSION,
            id: String::new(),
            name: name.to_string(),
            status: RunState::Running,
            trigger,
            arguments,
            start_time: rfc3339_string(start),
            end_time: None,
            duration_ms: None,
            exit_code: None,
            signal: None,
            error: None,
            scheduled_for: scheduled_for.map(rfc3339_string),
            lateness_ms: scheduled_for.map(|at| (start - at).num_milliseconds()),
            pid: None,
            instance,
            message_id: None,
        }
    }
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

/// A run opened on disk by [`open_run`].
#[derive(Debug)]
pub struct OpenedRun {
    pub dir: PathBuf,
}

/// Hidden name of a run folder being prepared (never listed as a run).
const STAGING_PREFIX: &str = ".run-";

/// Opens a run on disk: its folder appears under its run id already holding the
/// `Running` record (`rec`, its `id` filled in here) and an empty `output_log.txt`,
/// and the history is trimmed to `keep` folders, the new one included.
///
/// The folder is prepared under a hidden name and renamed into place, so a reader
/// never sees it half made, and the record needs no temporary file. When the history
/// is full, the oldest run's folder is recycled as the new one (its files emptied and
/// rewritten in place) instead of deleting three files and creating three: on ext4
/// without a journal, creating files near many recently deleted ones is the largest
/// cost of a run. The record is on disk before the process starts, so for a scheduled
/// run it also persists the fired occurrence (`scheduled_for`; see
/// [`load_last_fired`]). Not fsynced, as [`write`] says why.
///
/// `known` is the job's run ids (oldest first) as this host last saw them, kept by a
/// caller that is alone on these LOGS to spare a listing per run; `None` lists them.
/// It holds the ids after this run on return (`None` after an error).
pub fn open_run(
    job_logs: &Path,
    t: DateTime<Utc>,
    keep: u32,
    rec: &mut RunRecord,
    known: &mut Option<Vec<String>>,
) -> std::io::Result<OpenedRun> {
    open_run_as(job_logs, t, keep, rec, known, None)
}

/// As [`open_run`], under the run id `wanted` (minted earlier by [`mint_run_ids`]) when
/// it is still free and newer than every run present; else under the id `open_run`
/// would give, which the caller then reads from `rec.id`.
pub fn open_run_as(
    job_logs: &Path,
    t: DateTime<Utc>,
    keep: u32,
    rec: &mut RunRecord,
    known: &mut Option<Vec<String>>,
    wanted: Option<&str>,
) -> std::io::Result<OpenedRun> {
    let remembered = known.is_some();
    let mut ids = known.take().unwrap_or_else(|| list_ids(job_logs));
    let staging = job_logs.join(format!("{STAGING_PREFIX}{}", crate::ids::random_hex(8)));
    // Folders beyond `keep` once the new one is there: the oldest is recycled, any
    // more (history_size was lowered) are deleted.
    let excess = |ids: &[String]| (ids.len() + 1).saturating_sub(keep.max(1) as usize);
    let mut recycled = excess(&ids) > 0 && recycle(job_logs, &ids[0], &staging);
    if !recycled && remembered && excess(&ids) > 0 {
        // The remembered oldest is gone (removed by hand, say): look again.
        ids = list_ids(job_logs);
        recycled = excess(&ids) > 0 && recycle(job_logs, &ids[0], &staging);
    }
    let more = excess(&ids).saturating_sub(usize::from(recycled));
    if recycled {
        ids.remove(0);
    } else if let Err(e) = std::fs::create_dir(&staging) {
        // The job's first run: its folder under LOGS is made now.
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e);
        }
        std::fs::create_dir_all(job_logs)?;
        std::fs::create_dir(&staging)?;
    }
    let opened = stage_and_publish(job_logs, &staging, t, &ids, rec, wanted);
    if opened.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let opened = opened?;
    for id in ids.drain(..more) {
        let _ = std::fs::remove_dir_all(job_logs.join(id));
    }
    // Ids only grow (see `first_id`), so the new one goes last.
    ids.push(rec.id.clone());
    *known = Some(ids);
    Ok(opened)
}

/// Moves the run folder `id` to `staging` and empties it of the old run's files but
/// the two that are rewritten. The host writes nothing else there but a rotated log,
/// which starts at `output_log.1.txt`: when a try to delete that file finds none, the
/// folder is not listed (a listing cost more than the rest of the recycling).
/// `false` if it cannot (another host took it first, say): the caller makes a new one.
fn recycle(job_logs: &Path, id: &str, staging: &Path) -> bool {
    if std::fs::rename(job_logs.join(id), staging).is_err() {
        return false;
    }
    match std::fs::remove_file(staging.join("output_log.1.txt")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
        _ => {}
    }
    let Ok(entries) = std::fs::read_dir(staging) else {
        return true;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name != RUN_OUTPUT && name != RUN_RECORD {
            let path = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
        }
    }
    true
}

/// Writes the record and an empty log into `staging`, then renames it to the first
/// free run id from `t` on (`ids`: the ids present, oldest first).
fn stage_and_publish(
    job_logs: &Path,
    staging: &Path,
    t: DateTime<Utc>,
    ids: &[String],
    rec: &mut RunRecord,
    wanted: Option<&str>,
) -> std::io::Result<OpenedRun> {
    // Emptied (a recycled folder) or made here, before anything is written to it, so
    // the close after the truncation has nothing to flush.
    std::fs::File::create(staging.join(RUN_OUTPUT))?;
    let newest = ids.last().and_then(|s| s.parse::<u64>().ok());
    // Ids only grow: a wanted id older than a run present (another host's, on shared
    // LOGS) is not taken.
    let mut id = match wanted
        .filter(|w| is_run_id(w))
        .and_then(|w| w.parse::<u64>().ok())
    {
        Some(w) if newest.is_none_or(|n| w > n) => w,
        _ => first_id(t, ids)?,
    };
    for _ in 0..10_000 {
        rec.id = format!("{id:018}");
        let mut bytes = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        overwrite(&staging.join(RUN_RECORD), &bytes)?;
        let dir = job_logs.join(&rec.id);
        match rename_noreplace(staging, &dir) {
            Ok(()) => return Ok(OpenedRun { dir }),
            // Another trigger (or host) took this id in the same 1/10000 s.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id += 1,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free run id"))
}

/// Renames the folder `from` to `to` unless `to` exists (`AlreadyExists` then). Where
/// the file system has no `RENAME_NOREPLACE`, a plain rename does the same for run
/// folders: it cannot replace a folder that holds files.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use nix::errno::Errno;
    let flags = nix::fcntl::RenameFlags::RENAME_NOREPLACE;
    match nix::fcntl::renameat2(nix::fcntl::AT_FDCWD, from, nix::fcntl::AT_FDCWD, to, flags) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => Err(std::io::ErrorKind::AlreadyExists.into()),
        Err(Errno::EINVAL | Errno::ENOSYS) => match std::fs::rename(from, to) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                Err(std::io::ErrorKind::AlreadyExists.into())
            }
            other => other,
        },
        Err(e) => Err(e.into()),
    }
}

/// The run id for a start at `t`, bounded below by the newest id present: ids only
/// grow, even if the clock went back.
fn first_id(t: DateTime<Utc>, ids: &[String]) -> std::io::Result<u64> {
    let id: u64 = run_id_at(t).parse().map_err(std::io::Error::other)?;
    Ok(match ids.last().and_then(|s| s.parse::<u64>().ok()) {
        Some(last) => id.max(last + 1),
        None => id,
    })
}

/// `n` run ids for runs about to start at `t`, minted before their folders exist (a
/// message's run id is given to it by the claim that takes it): consecutive, from the
/// id of `t` on, or after `newest` (the newest id this host knows of the job) if that
/// is later, so ids only grow. Unique among this host's runs as long as one task
/// starts the job's runs and keeps `newest`; a run whose minted id another host (on
/// shared LOGS) took meanwhile gets the next free one from [`open_run_as`].
pub fn mint_run_ids(t: DateTime<Utc>, newest: Option<&str>, n: usize) -> Vec<String> {
    let at: u64 = run_id_at(t).parse().unwrap_or(0);
    let after = newest
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(0, |n| n + 1);
    let first = at.max(after);
    (0..n as u64)
        .map(|i| format!("{:018}", first + i))
        .collect()
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
    let path = job_logs.join(id).join(RUN_RECORD);
    let bytes = std::fs::read(&path).ok()?;
    parse_versioned(&path, &bytes, |r: &RunRecord| r.schema_version)
}

/// What a triggered job's first status needs from its records: read by the
/// supervisor on the blocking pool before the job is listed, so the job's first
/// status is whole and its task reads nothing on the async workers.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub latest: Option<RunRecord>,
    pub last_fired: Option<DateTime<Utc>>,
}

impl History {
    /// Blocking: file reads.
    pub fn read(job_logs: &Path) -> History {
        History {
            latest: latest(job_logs),
            last_fired: load_last_fired(job_logs),
        }
    }
}

/// The newest run's record: [`history`]'s first, without reading the others.
pub fn latest(job_logs: &Path) -> Option<RunRecord> {
    list_ids(job_logs)
        .iter()
        .rev()
        .find_map(|id| read(job_logs, id))
}

/// Newest first, as the API's history.
pub fn history(job_logs: &Path) -> Vec<RunRecord> {
    list_ids(job_logs)
        .iter()
        .rev()
        .filter_map(|id| read(job_logs, id))
        .collect()
}

/// Spare files per job folder that a record is written into before it is swapped in.
const SPARES: usize = 4;

/// Replaces a run's record atomically, without creating or deleting a file: the new
/// record is written into one of the job folder's spare files, which is then swapped
/// with `status.json` (`renameat2(RENAME_EXCHANGE)`); the old record becomes the spare.
/// A tmp file and a rename would create one inode and free another for every run,
/// and on ext4 without a journal every free inode near recent deletions makes the
/// next creation slower. Spares are used in turn, so a reader that opened the old
/// record reads it whole unless it waits for four more writes.
///
/// Run records are not fsynced, unlike the host's other state files: a record must
/// survive a crash of the host, which the kernel's page cache guarantees, and an fsync
/// for every run start and end cost more than all the rest of a run's bookkeeping. A
/// power loss can lose the newest records; the runs they describe died with it.
pub fn write(job_logs: &Path, rec: &RunRecord) -> Result<(), WriteError> {
    let path = job_logs.join(&rec.id).join(RUN_RECORD);
    let err = |source| WriteError {
        path: path.clone(),
        source,
    };
    let mut bytes = serde_json::to_vec_pretty(rec).map_err(|e| err(e.into()))?;
    bytes.push(b'\n');
    let spare = next_spare(job_logs, rec.instance.as_deref());
    let swapped = overwrite(&spare, &bytes).and_then(|()| {
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &spare,
            nix::fcntl::AT_FDCWD,
            &path,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(std::io::Error::from)
    });
    match swapped {
        Ok(()) => Ok(()),
        // No record yet to swap with, or a file system without RENAME_EXCHANGE: the
        // spare itself moves into place (a new spare is made next time).
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EINVAL | libc::ENOTSUP)
            ) =>
        {
            std::fs::rename(&spare, &path).map_err(err)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&spare);
            Err(err(e))
        }
    }
}

/// Writes `bytes` as the whole content of `path`, created if missing. An existing
/// file is overwritten from the start and then cut to length, never truncated to zero
/// first: ext4 flushes a file truncated to zero when it is closed (`auto_da_alloc`),
/// a disk write for every record.
fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all(bytes)?;
    f.set_len(bytes.len() as u64)
}

/// The spare to write next: each job folder's spares in turn, so the one written now
/// was last written four records ago. Hosts sharing LOGS each have their own (named
/// after their instance). The turn is kept in memory: a restart starting over at the
/// first spare only shortens the wait of a reader that kept a record open across it.
fn next_spare(job_logs: &Path, instance: Option<&str>) -> PathBuf {
    static TURNS: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);
    let i = {
        let mut turns = TURNS.lock().unwrap_or_else(|e| e.into_inner());
        let turn = turns
            .get_or_insert_with(HashMap::new)
            .entry(job_logs.to_path_buf())
            .or_insert(0);
        *turn = (*turn + 1) % SPARES;
        *turn
    };
    job_logs.join(match instance {
        Some(n) => format!(".status-spare-{n}.{i}"),
        None => format!(".status-spare.{i}"),
    })
}

/// Marks runs left `Running` as `Aborted`. Only call while holding `run.lock`: then no
/// live host is running this job, so every `Running` record is a dead host's.
pub fn recover_stale(job_logs: &Path, why: &str) -> Vec<String> {
    // Run folders a dead host was preparing: never a run, nothing to keep.
    if let Ok(entries) = std::fs::read_dir(job_logs) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
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

/// `scheduler_state.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct SchedulerState {
    #[serde(default)]
    schema_version: u32,
    last_fired: Option<String>,
}

fn state_path(job_logs: &Path) -> PathBuf {
    job_logs.join(SCHEDULER_STATE)
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
    let path = state_path(job_logs);
    let from_state = std::fs::read(&path)
        .ok()
        .and_then(|b| parse_versioned(&path, &b, |s: &SchedulerState| s.schema_version))
        .and_then(|st| parse(st.last_fired.as_deref()?));
    let from_runs = list_ids(job_logs)
        .iter()
        .rev()
        .take(LAST_FIRED_LOOKBACK)
        .filter_map(|id| read(job_logs, id))
        .find_map(|rec| parse(rec.scheduled_for.as_deref()?));
    from_state.max(from_runs)
}

pub fn save_last_fired(job_logs: &Path, t: DateTime<Utc>) -> Result<(), WriteError> {
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
    use std::fs;

    #[test]
    fn run_ids_are_18_digits_of_utc_time() {
        let t = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 5).unwrap()
            + chrono::Duration::microseconds(123_456);
        assert_eq!(run_id_at(t), "202611301000051234");
        assert!(is_run_id(&run_id_at(t)));
        assert!(!is_run_id("../../etc"));
    }

    #[test]
    fn two_runs_opened_in_the_same_instant_get_two_ids_and_ids_never_go_back() {
        let tmp = tempfile::tempdir().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 5).unwrap();
        let open = |at| {
            let mut rec = running(None);
            open_run(tmp.path(), at, 50, &mut rec, &mut None).unwrap();
            rec.id
        };
        let (a, b) = (open(t), open(t));
        let c = open(t - chrono::Duration::hours(1));
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[test]
    fn minted_run_ids_follow_the_newest_known_and_are_taken_while_free_and_newest() {
        let tmp = tempfile::tempdir().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 5).unwrap();
        let ids = mint_run_ids(t, None, 3);
        assert_eq!(
            ids,
            [
                "202611301000050000",
                "202611301000050001",
                "202611301000050002"
            ]
        );
        // After a newer id this host knows (the clock went back): still growing.
        let after = mint_run_ids(t, Some("202611301000090000"), 1);
        assert_eq!(after, ["202611301000090001"]);
        assert!(mint_run_ids(t, None, 0).is_empty());

        let open = |wanted: &str, known: &mut Option<Vec<String>>| {
            let mut rec = running(None);
            open_run_as(tmp.path(), t, 50, &mut rec, known, Some(wanted)).unwrap();
            rec.id
        };
        let mut known = None;
        assert_eq!(open(&ids[1], &mut known), ids[1], "free and newest: taken");
        // Older than a run present (another host's on shared LOGS, say): the next free.
        assert_eq!(open(&ids[0], &mut known), "202611301000050002");
        // Taken meanwhile by a run this host did not know of: the next free.
        let mut unaware = Some(Vec::new());
        assert_eq!(open(&ids[2], &mut unaware), "202611301000050003");
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
        RunRecord::running(
            "job",
            TriggerKind::Schedule,
            Vec::new(),
            Utc::now(),
            scheduled_for,
            None,
        )
    }

    /// 2026-01-01 00:00:00 UTC plus `k` seconds.
    fn at(k: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(k)
    }

    /// Opens a run at `at(k)` keeping `keep` folders; returns its record.
    fn open_nth(dir: &Path, k: i64, keep: u32, known: &mut Option<Vec<String>>) -> RunRecord {
        let mut rec = running(None);
        open_run(dir, at(k), keep, &mut rec, known).unwrap();
        rec
    }

    #[test]
    fn an_opened_run_is_on_disk_and_persists_its_occurrence_and_the_history_is_trimmed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        for k in 0..4 {
            let when = at(k);
            let mut rec = running(Some(when));
            let opened = open_run(tmp.path(), when, 3, &mut rec, &mut None).unwrap();
            assert_eq!(opened.dir, tmp.path().join(&rec.id));
            assert_eq!(read(tmp.path(), &rec.id).unwrap(), rec);
            assert_eq!(fs::read(opened.dir.join("output_log.txt")).unwrap(), b"");
            assert_eq!(load_last_fired(tmp.path()), Some(when));
            ids.push(rec.id);
        }
        assert_eq!(
            list_ids(tmp.path()),
            ids[1..].to_vec(),
            "three kept, the newest included"
        );
        let names: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "no staging folder left: {names:?}");
    }

    #[test]
    fn final_records_swap_in_through_a_few_spares_and_read_back_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        for k in 0..10 {
            let mut rec = open_nth(tmp.path(), k, 50, &mut None);
            rec.status = RunState::Success;
            rec.exit_code = Some(0);
            write(tmp.path(), &rec).unwrap();
            assert_eq!(read(tmp.path(), &rec.id).unwrap(), rec);
            ids.push(rec.id);
        }
        let spares: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".status-spare"))
            .collect();
        assert!(spares.len() <= SPARES, "{spares:?}");
        for id in &ids {
            assert_eq!(read(tmp.path(), id).unwrap().status, RunState::Success);
        }
    }

    #[test]
    fn a_record_written_where_none_was_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let mut rec = running(None);
        rec.id = "202601010000000000".into();
        fs::create_dir(tmp.path().join(&rec.id)).unwrap();
        write(tmp.path(), &rec).unwrap();
        assert_eq!(read(tmp.path(), &rec.id).unwrap(), rec);
        rec.id = "202601010000000001".into();
        assert!(write(tmp.path(), &rec).is_err(), "no run folder: an error");
    }

    #[test]
    fn a_recycled_folder_holds_only_the_new_run() {
        let tmp = tempfile::tempdir().unwrap();
        let old = open_nth(tmp.path(), 0, 1, &mut None);
        let dir = tmp.path().join(&old.id);
        fs::write(dir.join("output_log.txt"), "old output\n").unwrap();
        fs::write(dir.join("output_log.1.txt"), "rotated\n").unwrap();
        fs::create_dir(dir.join("junk")).unwrap();
        let new = open_nth(tmp.path(), 1, 1, &mut None);
        let reopened = tmp.path().join(&new.id);
        assert_ne!(new.id, old.id);
        assert_eq!(list_ids(tmp.path()), vec![new.id.clone()]);
        assert_eq!(fs::read(reopened.join("output_log.txt")).unwrap(), b"");
        assert!(!reopened.join("output_log.1.txt").exists());
        assert!(!reopened.join("junk").exists());
        assert_eq!(read(tmp.path(), &new.id).unwrap(), new);
    }

    #[test]
    fn lowering_history_size_deletes_the_surplus_at_the_next_run() {
        let tmp = tempfile::tempdir().unwrap();
        for k in 0..5 {
            open_nth(tmp.path(), k, 50, &mut None);
        }
        let rec = open_nth(tmp.path(), 9, 2, &mut None);
        let ids = list_ids(tmp.path());
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert_eq!(ids[1], rec.id);
    }

    #[test]
    fn a_remembered_listing_is_kept_current_and_refreshed_when_it_is_wrong() {
        let tmp = tempfile::tempdir().unwrap();
        let mut known = None;
        for k in 0..6 {
            open_nth(tmp.path(), k, 3, &mut known);
            assert_eq!(known.as_deref(), Some(list_ids(tmp.path()).as_slice()));
        }
        // Someone removes the oldest run by hand: the next run notices and recycles
        // the next oldest, keeping three.
        let oldest = list_ids(tmp.path())[0].clone();
        fs::remove_dir_all(tmp.path().join(&oldest)).unwrap();
        open_nth(tmp.path(), 9, 3, &mut known);
        let ids = list_ids(tmp.path());
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert_eq!(known.as_deref(), Some(ids.as_slice()));
    }

    #[test]
    fn a_staging_folder_left_by_a_dead_host_is_removed_at_recovery() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join(".run-deadbeef")).unwrap();
        recover_stale(tmp.path(), "test");
        assert!(!tmp.path().join(".run-deadbeef").exists());
    }

    #[test]
    fn last_fired_is_the_newer_of_the_state_file_and_the_newest_scheduled_run() {
        let tmp = tempfile::tempdir().unwrap();
        let t = at(0);
        let mut scheduled = running(Some(t));
        open_run(tmp.path(), t, 50, &mut scheduled, &mut None).unwrap();
        // A manual run after it carries no occurrence: the scheduled one still counts.
        let mut manual = running(None);
        manual.trigger = TriggerKind::Manual;
        open_run(tmp.path(), at(1), 50, &mut manual, &mut None).unwrap();
        assert_eq!(load_last_fired(tmp.path()), Some(t));
        // A skipped occurrence is only in the state file.
        let skipped = at(2);
        save_last_fired(tmp.path(), skipped).unwrap();
        assert_eq!(load_last_fired(tmp.path()), Some(skipped));
        save_last_fired(tmp.path(), t - chrono::Duration::hours(1)).unwrap();
        assert_eq!(load_last_fired(tmp.path()), Some(t));
    }

    #[test]
    fn records_and_state_from_a_newer_schema_are_ignored_and_left_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let mut old = running(Some(at(0)));
        open_run(tmp.path(), at(0), 50, &mut old, &mut None).unwrap();
        // A newer host's record, still `Running`: neither listed nor "recovered".
        let mut newer = running(Some(at(5)));
        open_run(tmp.path(), at(5), 50, &mut newer, &mut None).unwrap();
        let newer_path = tmp.path().join(&newer.id).join(RUN_RECORD);
        let mut v: serde_json::Value =
            serde_json::from_slice(&fs::read(&newer_path).unwrap()).unwrap();
        v["schema_version"] = (SCHEMA_VERSION + 1).into();
        let newer_bytes = serde_json::to_vec_pretty(&v).unwrap();
        fs::write(&newer_path, &newer_bytes).unwrap();
        assert_eq!(read(tmp.path(), &newer.id), None);
        assert_eq!(history(tmp.path()), vec![old.clone()]);
        assert_eq!(recover_stale(tmp.path(), "test"), vec![old.id.clone()]);
        assert_eq!(fs::read(&newer_path).unwrap(), newer_bytes);
        // A newer state file does not count; the old record's occurrence does.
        fs::write(
            state_path(tmp.path()),
            format!(
                r#"{{"schema_version": {}, "last_fired": "2030-01-01T00:00:00.000Z"}}"#,
                SCHEMA_VERSION + 1
            ),
        )
        .unwrap();
        assert_eq!(load_last_fired(tmp.path()), Some(at(0)));
    }
}
