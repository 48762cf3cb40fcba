//! Kudu's JSON shapes (snake_case fields, absolute URLs) built from our statuses.

use serde::Serialize;
use serde_json::Value;

use crate::job::triggered::TriggeredStatus;
use crate::runs::RunRecord;
use crate::scan::JobDefinition;
use crate::status::ContinuousStatus;

/// `http://HOST` as the client reached us, for absolute URLs as Kudu gives them.
#[derive(Debug, Clone)]
pub struct Base(pub String);

impl Base {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// The fields every Kudu job object has.
#[derive(Debug, Serialize)]
pub struct JobCommon {
    pub name: String,
    #[serde(rename = "type")]
    pub job_type: &'static str,
    pub url: String,
    pub run_command: String,
    pub error: Option<String>,
    pub settings: Value,
    pub using_sdk: bool,
}

#[derive(Debug, Serialize)]
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
    pub last_exit: Option<Value>,
    pub warnings: Vec<String>,
    pub disabled: bool,
}

#[derive(Debug, Serialize)]
pub struct TriggeredJob {
    #[serde(flatten)]
    pub common: JobCommon,
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
}

#[derive(Debug, Serialize)]
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
}

#[derive(Debug, Serialize)]
pub struct History {
    pub runs: Vec<Run>,
}

fn common(base: &Base, def: &JobDefinition, status_error: Option<&String>) -> JobCommon {
    JobCommon {
        name: def.name.clone(),
        job_type: def.job_type.as_str(),
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
    }
}

pub fn continuous(base: &Base, def: &JobDefinition, st: &ContinuousStatus) -> ContinuousJob {
    let common = common(base, def, st.error.as_ref());
    ContinuousJob {
        status: st.status.as_str().to_string(),
        detailed_status: st.detailed_status.clone(),
        log_url: format!("{}/log", common.url),
        common,
        pid: st.pid,
        restarts: st.restarts,
        started_at: st.started_at.map(crate::fsutil::rfc3339_string),
        next_restart_at: st.next_restart_at.map(crate::fsutil::rfc3339_string),
        last_exit: st
            .last_exit
            .as_ref()
            .and_then(|e| serde_json::to_value(e).ok()),
        warnings: st.warnings.clone(),
        disabled: def.disabled,
    }
}

pub fn triggered(base: &Base, def: &JobDefinition, st: &TriggeredStatus) -> TriggeredJob {
    let common = common(base, def, st.error.as_ref());
    TriggeredJob {
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
        warnings: def.warnings.clone(),
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
