//! Kudu's JSON shapes (snake_case fields, absolute URLs) built from our statuses.
//!
//! The host serializes these and the CLI deserializes the same structs, so a field
//! renamed here is renamed for both (and the golden files in tests/data/golden say
//! when the wire shape changed).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::triggered::TriggeredStatus;
use crate::job::triggered::records::RunRecord;
use crate::queue::{self, MessageState};
use crate::scan::JobDefinition;
use crate::spec::JobType;
use crate::spec::problem::Problem;
use crate::status::{ContinuousStatus, LastExit};

/// `http://HOST` as the client reached us, for absolute URLs as Kudu gives them.
#[derive(Debug, Clone)]
pub struct Base(pub String);

impl Base {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// The fields every Kudu job object has.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCommon {
    pub name: String,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub url: String,
    pub run_command: String,
    pub error: Option<String>,
    pub settings: Value,
    pub using_sdk: bool,
    // Beyond Kudu: what is wrong with the job's folder (settings.job, entry point),
    // structured; `[]` when nothing is. `error` is its one-line form (or a runtime
    // error).
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContinuousJob {
    #[serde(flatten)]
    pub common: JobCommon,
    pub status: String,
    pub detailed_status: String,
    pub log_url: String,
    // Beyond Kudu:
    pub pid: Option<i32>,
    pub restarts: u64,
    pub started_at: Option<String>,
    pub next_restart_at: Option<String>,
    pub last_exit: Option<LastExit>,
    pub warnings: Vec<String>,
    pub disabled: bool,
    /// In a cluster: this host's fencing token for the singleton it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggeredJob {
    #[serde(flatten)]
    pub common: JobCommon,
    // Beyond Kudu (a continuous job's `status` has the same meaning): see `status_word`.
    pub status: String,
    pub latest_run: Option<Run>,
    pub history_url: String,
    pub scheduler_logs_url: String,
    // Beyond Kudu:
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub next_fire: Option<String>,
    pub running: Option<String>,
    pub pending: bool,
    pub disabled: bool,
    pub warnings: Vec<String>,
    /// Beyond Kudu: the job's message queue, when it has one (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueSummary>,
}

/// How a queue job's messages stand, in the triggered job object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSummary {
    pub queued: u64,
    pub running: u64,
    pub dead: u64,
    /// Seconds the oldest `Queued` message has waited; `null` when none waits.
    pub oldest_queued_age_s: Option<u64>,
    /// Why the counts could not be read (the message store is unavailable); the
    /// counts are 0 then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl QueueSummary {
    pub fn of(c: &crate::queue::QueueCounts) -> QueueSummary {
        QueueSummary {
            queued: c.queued,
            running: c.running,
            dead: c.dead,
            oldest_queued_age_s: c.oldest_queued_age_s,
            error: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub name: String,
    pub job_name: String,
    pub status: String,
    pub start_time: String,
    pub end_time: Option<String>,
    pub duration: Option<String>,
    pub output_url: String,
    pub error_url: String,
    pub url: String,
    pub trigger: String,
    // Beyond Kudu:
    pub arguments: Vec<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
    pub scheduled_for: Option<String>,
    /// The message a `message` run was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// In a cluster: the host that ran it (its URLs point at that host's API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    pub runs: Vec<Run>,
}

/// A job of either type, as `/api/webjobs` lists them: told apart by `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Job {
    Continuous(Box<ContinuousJob>),
    Triggered(Box<TriggeredJob>),
}

impl Job {
    pub fn common(&self) -> &JobCommon {
        match self {
            Job::Continuous(j) => &j.common,
            Job::Triggered(j) => &j.common,
        }
    }

    /// The word `status_word` chose for this job.
    pub fn status(&self) -> &str {
        match self {
            Job::Continuous(j) => &j.status,
            Job::Triggered(j) => &j.status,
        }
    }
}

/// Reads `type` first, so a malformed job is reported against its own type's fields
/// (an untagged enum would only say that no variant matched).
impl<'de> Deserialize<'de> for Job {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Job, D::Error> {
        use serde::de::Error;
        let v = Value::deserialize(d)?;
        let t = JobType::deserialize(v.get("type").unwrap_or(&Value::Null))
            .map_err(D::Error::custom)?;
        match t {
            JobType::Continuous => serde_json::from_value(v).map(|c| Job::Continuous(Box::new(c))),
            JobType::Triggered => serde_json::from_value(v).map(|t| Job::Triggered(Box::new(t))),
        }
        .map_err(D::Error::custom)
    }
}

/// The answer of every request whose result is a sentence (start, stop, cancel,
/// delete) and of every error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
}

/// `POST .../run`: the run started (`id`) or queued behind the one going.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub id: Option<String>,
    pub queued_behind: Option<String>,
    pub schedule_disabled: bool,
    pub url: String,
}

/// A message of a triggered job's queue (docs/api.md#messages).
///
/// `result` is the result as text when it is valid UTF-8, else `null` with the bytes
/// in `result_base64`; both are `null` in listings (read the message, or
/// `result_url`, for its result) and when there is no result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueMessage {
    pub id: String,
    pub job: String,
    pub state: MessageState,
    pub attempts: u32,
    pub priority: i64,
    pub enqueued_at: String,
    pub next_attempt_at: Option<String>,
    pub not_before: Option<String>,
    pub finished_at: Option<String>,
    pub content_type: Option<String>,
    pub payload_bytes: u64,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    pub name: Option<String>,
    pub reply_to: Option<String>,
    pub last_error: Option<String>,
    pub result: Option<String>,
    pub result_base64: Option<String>,
    pub result_bytes: Option<u64>,
    pub runs: Vec<String>,
    pub url: String,
    pub payload_url: String,
    pub result_url: String,
}

/// `m` as the API shows it; `result`: its result bytes, when read.
pub fn queue_message(base: &Base, m: &queue::Message, result: Option<&[u8]>) -> QueueMessage {
    use base64::Engine;
    let url = base.url(&format!(
        "/api/triggeredwebjobs/{}/messages/{}",
        m.job, m.id
    ));
    let (text, b64) = match result.map(std::str::from_utf8) {
        Some(Ok(t)) => (Some(t.to_string()), None),
        Some(Err(_)) => (
            None,
            result.map(|r| base64::engine::general_purpose::STANDARD.encode(r)),
        ),
        None => (None, None),
    };
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(crate::fsutil::rfc3339_string);
    QueueMessage {
        id: m.id.clone(),
        job: m.job.clone(),
        state: m.state,
        attempts: m.attempts,
        priority: m.priority,
        enqueued_at: crate::fsutil::rfc3339_string(m.enqueued_at),
        next_attempt_at: time(m.next_attempt_at),
        not_before: time(m.not_before),
        finished_at: time(m.finished_at),
        content_type: m.content_type.clone(),
        payload_bytes: m.payload_bytes,
        idempotency_key: m.idempotency_key.clone(),
        correlation_id: m.correlation_id.clone(),
        name: m.name.clone(),
        reply_to: m.reply_to.clone(),
        last_error: m.last_error.clone(),
        result: text,
        result_base64: b64,
        result_bytes: m.result_bytes,
        runs: m.runs.clone(),
        payload_url: format!("{url}/payload"),
        result_url: format!("{url}/result"),
        url,
    }
}

/// `GET .../messages`: newest first; `next_url` reads the page after this one
/// (`null` on the last page).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageList {
    pub messages: Vec<QueueMessage>,
    pub next_url: Option<String>,
}

/// `POST .../messages`: 202 with the new message's id, or 200 with `duplicate: true`
/// and the first message with the same idempotency key (all of its fields, of which
/// these are read here).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnqueueAnswer {
    pub id: String,
    pub state: MessageState,
    pub url: String,
    pub duplicate: bool,
}

/// The 200 answer to a duplicate enqueue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Duplicate {
    pub duplicate: bool,
    #[serde(flatten)]
    pub message: QueueMessage,
}

/// The answer of a change to messages (cancel, requeue, purge): a sentence, and how
/// many messages it touched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagesChanged {
    pub message: String,
    pub count: u64,
}

/// A job's status as the host holds it, for [`status_word`].
#[derive(Debug, Clone, Copy)]
pub enum Status<'a> {
    Continuous(&'a ContinuousStatus),
    Triggered(&'a TriggeredStatus),
}

/// The one word a job shows, wherever it is shown: the API's `status` field (which
/// the CLI's STATUS column and the dashboard print) and the `status` label of
/// `/metrics`. A continuous job shows its state (Running, PendingRestart, Stopped,
/// Error, …); a triggered job shows Error (it cannot run as written), Running (a run
/// is going), Disabled (disable.job switches its schedule off) or Ready.
pub fn status_word(def: &JobDefinition, st: Status<'_>) -> &'static str {
    match st {
        Status::Continuous(s) => s.status.as_str(),
        Status::Triggered(s) => {
            if s.error.is_some() || !def.errors.is_empty() {
                "Error"
            } else if s.running.is_some() || s.message_runs > 0 {
                "Running"
            } else if def.disabled {
                "Disabled"
            } else {
                "Ready"
            }
        }
    }
}

fn common(base: &Base, def: &JobDefinition, status_error: Option<&String>) -> JobCommon {
    JobCommon {
        name: def.name.clone(),
        job_type: def.job_type,
        url: base.url(&format!(
            "/api/{}webjobs/{}",
            def.job_type.as_str(),
            def.name
        )),
        run_command: def.launch.as_ref().map(|l| l.display()).unwrap_or_default(),
        error: status_error
            .cloned()
            .or_else(|| (!def.errors.is_empty()).then(|| def.errors.join("; "))),
        settings: def.settings_raw.clone(),
        using_sdk: false,
        problems: def.problems.clone(),
    }
}

pub fn continuous(base: &Base, def: &JobDefinition, st: &ContinuousStatus) -> ContinuousJob {
    let common = common(base, def, st.error.as_ref());
    ContinuousJob {
        status: status_word(def, Status::Continuous(st)).to_string(),
        detailed_status: st.detailed_status.clone(),
        log_url: format!("{}/log", common.url),
        common,
        pid: st.pid,
        restarts: st.restarts,
        started_at: st.started_at.map(crate::fsutil::rfc3339_string),
        next_restart_at: st.next_restart_at.map(crate::fsutil::rfc3339_string),
        last_exit: st.last_exit.clone(),
        warnings: st.warnings.clone(),
        disabled: def.disabled,
        fencing_token: st.fencing_token,
    }
}

pub fn triggered(base: &Base, def: &JobDefinition, st: &TriggeredStatus) -> TriggeredJob {
    let common = common(base, def, st.error.as_ref());
    TriggeredJob {
        status: status_word(def, Status::Triggered(st)).to_string(),
        latest_run: st.latest_run.as_ref().map(|r| run(base, r)),
        history_url: format!("{}/history", common.url),
        scheduler_logs_url: format!("{}/schedulerlog", common.url),
        common,
        schedule: st.schedule.clone(),
        timezone: st.timezone.clone(),
        next_fire: st.next_fire.clone(),
        running: st.running.clone(),
        pending: st.pending,
        disabled: def.disabled,
        // The folder's warnings, and the task's own (an inbox's problem).
        warnings: def
            .warnings
            .iter()
            .chain(st.warnings.iter().filter(|w| !def.warnings.contains(w)))
            .cloned()
            .collect(),
        // Counting needs the store, a blocking call: the API's handlers fill it in.
        queue: None,
    }
}

pub fn run(base: &Base, r: &RunRecord) -> Run {
    let url = base.url(&format!(
        "/api/triggeredwebjobs/{}/history/{}",
        r.name, r.id
    ));
    Run {
        id: r.id.clone(),
        name: r.id.clone(),
        job_name: r.name.clone(),
        status: r.status.as_str().to_string(),
        start_time: r.start_time.clone(),
        end_time: r.end_time.clone(),
        duration: r.duration_ms.map(timespan),
        output_url: format!("{url}/output"),
        // One file holds both streams (stderr lines are marked ERROR).
        error_url: format!("{url}/output"),
        url,
        trigger: r.trigger.as_str().to_string(),
        arguments: r.arguments.clone(),
        exit_code: r.exit_code,
        signal: r.signal,
        error: r.error.clone(),
        duration_ms: r.duration_ms,
        scheduled_for: r.scheduled_for.clone(),
        message_id: r.message_id.clone(),
        host: None,
    }
}

/// .NET TimeSpan text, as Kudu's `duration`: `hh:mm:ss.fffffff`.
pub fn timespan(ms: u64) -> String {
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, frac) = (rem / 1000, rem % 1000);
    format!("{h:02}:{m:02}:{s:02}.{:07}", frac * 10_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_look_like_dotnet() {
        assert_eq!(timespan(0), "00:00:00.0000000");
        assert_eq!(timespan(3_769), "00:00:03.7690000");
        assert_eq!(timespan(90_061_001), "25:01:01.0010000");
    }
}

/// `GET /api/hosts`: the hosts of this host's cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hosts {
    /// The store (its URL without password); `None` when the host is not in a
    /// cluster, and then `hosts` holds this host alone.
    pub store: Option<String>,
    /// This host's name (`-` without `--instance` outside a cluster).
    pub me: String,
    pub hosts: Vec<HostEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostEntry {
    pub name: String,
    pub api_addr: String,
    pub version: String,
    pub started_at: Option<String>,
    pub heartbeat_at: Option<String>,
    pub lease_expires_at: Option<String>,
    /// Its lease has not run out (by the store's clock).
    pub alive: bool,
}
