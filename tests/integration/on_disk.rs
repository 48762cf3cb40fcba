//! The state files the host writes, pinned: a continuous job's `status.json`, a
//! triggered run's record (`RUN_ID/status.json`) and `scheduler_state.json` are
//! written by a real host and compared with `tests/data/golden/` (keys, types and
//! every value that does not change from run to run; rewrite them with
//! `JOBHOST_BLESS=1` and review the diff). And a file from a newer schema is ignored
//! and left as it is, with a log line saying so.

use std::fs;
use std::path::PathBuf;

use chrono::{Duration as CDuration, SecondsFormat, Timelike, Utc};
use serde_json::{Value, json};

use crate::support::client::*;
use crate::support::*;

/// The file as JSON; `Null` while it does not exist. Written atomically, so anything
/// else is a bug.
fn read_json(path: &PathBuf) -> Value {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{} is not valid JSON ({e}):\n{}",
                path.display(),
                String::from_utf8_lossy(&bytes)
            )
        }),
        Err(_) => Value::Null,
    }
}

/// Volatile values masked: times (also inside sentences), run ids, and the numbers
/// that depend on the machine or the moment (pids, durations, lateness, log bytes).
fn mask(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        (
                            "pid" | "duration_ms" | "lateness_ms" | "log_written_bytes",
                            Value::Number(_),
                        ) => json!(0),
                        _ => mask(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(mask).collect()),
        Value::String(s) => Value::String(replace_run_ids(&replace_times(s))),
        other => other.clone(),
    }
}

fn scheduler_state(h: &TestHost, name: &str) -> PathBuf {
    h.logs
        .join(TRIGGERED)
        .join(name)
        .join("scheduler_state.json")
}

#[test]
fn status_json_run_records_and_scheduler_state_match_their_golden_files() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "web",
        &[("run.sh", "#!/bin/bash\necho up\nexec sleep 1000\n")],
    );
    // Hourly, half an hour away from now: the latest occurrence is always about 30
    // minutes old, too old to catch up, so the host records it as missed in
    // scheduler_state.json at start (the way that file is written without waiting).
    let minute = (Utc::now().minute() + 30) % 60;
    h.write_job(
        TRIGGERED,
        "tj",
        &[
            (
                "settings.job",
                &format!(r#"{{"schedule": "0 {minute} * * * *"}}"#),
            ),
            ("run.sh", "#!/bin/bash\necho hi\n"),
        ],
    );
    let day_ago = (Utc::now() - CDuration::days(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let state_path = scheduler_state(&h, "tj");
    fs::create_dir_all(state_path.parent().unwrap()).unwrap();
    fs::write(
        &state_path,
        json!({"schema_version": 1, "last_fired": day_ago}).to_string(),
    )
    .unwrap();
    h.start();
    let api = connect(&h);

    let status = h.wait_status("web", "Running");
    check_golden_file("status_continuous", &mask(&status), Golden::Values);

    let mut state = Value::Null;
    h.wait_for(
        "the host to record the missed fire in scheduler_state.json",
        DEADLINE,
        || {
            state = read_json(&state_path);
            state["last_fired"].is_string() && state["last_fired"] != day_ago.as_str()
        },
    );
    check_golden_file("scheduler_state", &mask(&state), Golden::Values);

    let id = api.start_run("tj");
    api.wait_run_end(&h, "tj", &id);
    let record = read_json(
        &h.logs
            .join(TRIGGERED)
            .join("tj")
            .join(&id)
            .join("status.json"),
    );
    check_golden_file("run_record", &mask(&record), Golden::Values);
    h.finish();
}

#[test]
fn a_run_record_and_scheduler_state_from_a_newer_schema_are_ignored_and_left_untouched() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "tj", &[("run.sh", "#!/bin/bash\necho hi\n")]);
    // What a newer jobhost could have left: a record still `Running` (a dead host's,
    // as this one would think) and a state file, both of schema 99.
    let dir = h.logs.join(TRIGGERED).join("tj");
    let newer_id = "202601010000000000";
    fs::create_dir_all(dir.join(newer_id)).unwrap();
    let record = json!({
        "schema_version": 99, "id": newer_id, "name": "tj", "status": "Running",
        "trigger": "manual", "arguments": [], "start_time": "2026-01-01T00:00:00.000Z",
        "end_time": null, "duration_ms": null, "exit_code": null, "signal": null,
        "error": null, "something_new": {"a": 1}
    })
    .to_string();
    fs::write(dir.join(newer_id).join("status.json"), &record).unwrap();
    let state = r#"{"schema_version": 99, "last_fired": {"new": "shape"}}"#;
    fs::write(dir.join("scheduler_state.json"), state).unwrap();
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/tj", 200);

    let (code, history) = api.get_json("/api/triggeredwebjobs/tj/history");
    assert_eq!(code, 200, "{history:#}");
    assert_eq!(history["runs"], json!([]), "{history:#}");
    let (code, body) = api.get_json(&format!("/api/triggeredwebjobs/tj/history/{newer_id}"));
    assert_eq!(code, 404, "{body:#}");
    h.wait_for("the host log to name the newer file", DEADLINE, || {
        h.host_log(None)
            .contains("is newer than this jobhost reads")
    });
    let log = h.host_log(None);
    assert!(log.contains(newer_id), "{log}");

    // Nothing else is disturbed: a run goes and is listed; the newer files are as
    // they were (not "recovered" as Aborted, not overwritten).
    let id = api.start_run("tj");
    let run = api.wait_run_end(&h, "tj", &id);
    assert_eq!(run["status"], "Success", "{run:#}");
    let (_, history) = api.get_json("/api/triggeredwebjobs/tj/history");
    assert_eq!(
        history["runs"].as_array().map(Vec::len),
        Some(1),
        "{history:#}"
    );
    h.finish();
    assert_eq!(
        fs::read_to_string(dir.join(newer_id).join("status.json")).unwrap(),
        record
    );
    assert_eq!(
        fs::read_to_string(dir.join("scheduler_state.json")).unwrap(),
        state
    );
}
