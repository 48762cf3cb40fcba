//! Writes through the job registry: the API's start, stop, settings, deploy and
//! delete write JOBS only through it, and its view changes with the write. Also the
//! continuous `status.json`'s structured `problems`, taken from the same definition
//! as its `error`.

use serde_json::{Value, json};

use crate::support::client::*;
use crate::support::*;

const BAD_CONTINUOUS: &str = "{\n  \"is_singleton\": \"yes\"\n}\n";

#[test]
fn continuous_status_json_carries_the_structured_problems_and_clears_them_once_fixed() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "cbad",
        &[
            ("settings.job", BAD_CONTINUOUS),
            ("run.sh", "#!/bin/bash\nexec sleep 60\n"),
        ],
    );
    h.start();
    let api = connect(&h);
    let file = h.job_dir(CONTINUOUS, "cbad").join("settings.job");
    let status = h.wait_status("cbad", "Error");
    let problems = status["problems"].as_array().cloned().unwrap_or_default();
    assert_eq!(problems.len(), 1, "{status:#}");
    assert_eq!(
        problems[0],
        json!({
            "file": file.display().to_string(),
            "line": 2,
            "column": 19,
            "key": "is_singleton",
            "message": "must be true or false, got \"yes\"",
            "fix": "write true or false, e.g. `\"is_singleton\": true`",
        }),
        "{status:#}"
    );
    // The same problems as the API's job object, and `error` their one-line form.
    let (_, job) = api.get_json("/api/continuouswebjobs/cbad");
    assert_eq!(job["problems"], status["problems"], "{job:#}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("key `is_singleton`"), "{status:#}");

    let (code, body) = api.put_settings("/api/continuouswebjobs/cbad/settings", b"{}");
    assert_eq!(code, 200, "{body:#}");
    // The registry's view changed with the write: the very next request shows it.
    let (_, job) = api.get_json("/api/continuouswebjobs/cbad");
    assert_eq!(job["problems"], json!([]), "{job:#}");
    let status = h.wait_status("cbad", "Running");
    assert_eq!(status["problems"], json!([]), "{status:#}");
    assert_eq!(status["error"], Value::Null, "{status:#}");
    h.finish();
}

#[test]
fn writes_to_a_job_the_registry_does_not_have_are_refused_and_create_nothing() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "tj", &[("run.sh", "#!/bin/bash\necho hi\n")]);
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/tj", 200);
    let before = api.get_json("/api/webjobs");

    for (method, path) in [
        ("POST", "/api/continuouswebjobs/ghost/start"),
        ("POST", "/api/continuouswebjobs/ghost/stop"),
        ("DELETE", "/api/continuouswebjobs/ghost"),
        ("DELETE", "/api/triggeredwebjobs/ghost"),
    ] {
        let resp = match method {
            "POST" => api.post(path),
            _ => api.delete(path),
        };
        let code = resp.status().as_u16();
        let body: Value = resp.json().unwrap_or_default();
        assert_eq!(code, 404, "{method} {path}: {body:#}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("job named `ghost`")),
            "{method} {path}: {body:#}"
        );
    }
    for path in [
        "/api/continuouswebjobs/ghost/settings",
        "/api/triggeredwebjobs/ghost/settings",
    ] {
        let (code, body) = api.put_settings(path, b"{}");
        assert_eq!(code, 404, "PUT {path}: {body:#}");
    }
    // Neither JOBS nor the registry changed: no folder, no disable.job, the same list.
    for t in [CONTINUOUS, TRIGGERED] {
        let dir = h.job_dir(t, "ghost");
        assert!(!dir.exists(), "{} exists", dir.display());
    }
    assert_eq!(api.get_json("/api/webjobs"), before);
    h.finish();
}

/// A client that finds the host up finds every job of JOBS listed: the first scan is
/// done before the API answers (read at once, not polled).
#[test]
fn the_api_answers_once_every_job_in_jobs_is_listed() {
    let mut h = TestHost::new();
    for n in 0..400 {
        h.write_job(
            TRIGGERED,
            &format!("t{n:03}"),
            &[("run.sh", "#!/bin/sh\nexit 0\n")],
        );
    }
    h.start();
    let api = connect(&h);
    let (code, body) = api.get_json("/api/triggeredwebjobs");
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(body.as_array().map(Vec::len), Some(400), "{body:#}");
    h.finish();
}
