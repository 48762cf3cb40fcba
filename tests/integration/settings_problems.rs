//! Problems stay structured: a bad `settings.job` shows as `problems` (file, line,
//! column, key, message, fix) on the API's job objects and in the 400 of a refused
//! `PUT .../settings`, beside Kudu's one-line `error`.

use serde_json::{Value, json};

use crate::support::client::*;
use crate::support::*;

const BAD_TRIGGERED: &str = "{\n  \"schedule\": \"@daily\",\n  \"timeout\": -1\n}\n";
const BAD_CONTINUOUS: &str = "{\n  // copied from Kudu\n  \"is_singleton\": \"yes\"\n}\n";

fn only_problem(job: &Value) -> &Value {
    let problems = job["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "one problem: {job:#}");
    &problems[0]
}

#[test]
fn a_bad_settings_job_shows_its_structured_problem_on_both_job_types() {
    let mut h = TestHost::new();
    let script = "#!/bin/bash\necho hi\n";
    h.write_job(
        TRIGGERED,
        "tbad",
        &[("settings.job", BAD_TRIGGERED), ("run.sh", script)],
    );
    h.write_job(
        CONTINUOUS,
        "cbad",
        &[
            ("settings.job", BAD_CONTINUOUS),
            ("run.sh", "#!/bin/bash\nexec sleep 60\n"),
        ],
    );
    h.write_job(TRIGGERED, "tgood", &[("run.sh", script)]);
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/tbad", 200);
    api.wait_code(&h, "/api/continuouswebjobs/cbad", 200);

    let tfile = h.job_dir(TRIGGERED, "tbad").join("settings.job");
    let (code, tj) = api.get_json("/api/triggeredwebjobs/tbad");
    assert_eq!(code, 200);
    assert_eq!(
        only_problem(&tj),
        &json!({
            "file": tfile.display().to_string(),
            "line": 3,
            "column": 14,
            "key": "timeout",
            "message": "must be a whole number of seconds >= 0, got -1",
            "fix": "fix the value, e.g. `\"timeout\": 3600`",
        }),
        "{tj:#}"
    );
    // Kudu's `error` stays, as the one-line form of the same problem.
    let error = tj["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "{}:3:14: key `timeout`: must be a whole number of seconds >= 0, got -1; fix the value",
            tfile.display()
        )),
        "{tj:#}"
    );

    let cfile = h.job_dir(CONTINUOUS, "cbad").join("settings.job");
    let cj = api.wait_continuous_status(&h, "cbad", "Error");
    let p = only_problem(&cj);
    assert_eq!(p["file"], json!(cfile.display().to_string()), "{cj:#}");
    assert_eq!(
        (&p["line"], &p["column"]),
        (&json!(3), &json!(19)),
        "{cj:#}"
    );
    assert_eq!(p["key"], "is_singleton", "{cj:#}");
    assert_eq!(p["message"], "must be true or false, got \"yes\"", "{cj:#}");
    assert_eq!(
        p["fix"], "write true or false, e.g. `\"is_singleton\": true`",
        "{cj:#}"
    );

    // A fine job says so with an empty array, in the listings too.
    let (_, good) = api.get_json("/api/triggeredwebjobs/tgood");
    assert_eq!(good["problems"], json!([]), "{good:#}");
    let (_, all) = api.get_json("/api/webjobs");
    for job in all.as_array().unwrap() {
        let want = if job["name"] == "tgood" { 0 } else { 1 };
        assert_eq!(
            job["problems"].as_array().map(Vec::len),
            Some(want),
            "{job:#}"
        );
    }
    h.finish();
}

#[test]
fn a_refused_settings_put_answers_the_problems_and_changes_nothing() {
    let (mut h, api) = host_with_triggered("tj", "#!/bin/bash\necho hi\n");
    let path = "/api/triggeredwebjobs/tj";
    let file = h.job_dir(TRIGGERED, "tj").join("settings.job");
    let body = b"{\n  \"overlap\": \"Queue\",\n  \"history_size\": 0,\n  \"colour\": 1\n}";
    let (code, resp) = api.put_settings(&format!("{path}/settings"), body);
    assert_eq!(code, 400, "{resp:#}");
    let problems = resp["problems"].as_array().unwrap();
    let got: Vec<(&Value, &Value, &Value, &Value)> = problems
        .iter()
        .map(|p| (&p["key"], &p["line"], &p["column"], &p["fix"]))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                &json!("overlap"),
                &json!(2),
                &json!(14),
                &json!("fix the value, e.g. `\"overlap\": \"queue\"`")
            ),
            (
                &json!("history_size"),
                &json!(3),
                &json!(19),
                &json!("fix the value, e.g. `\"history_size\": 200`")
            ),
        ],
        "errors only (the unknown key is a warning), in file order: {resp:#}"
    );
    assert_eq!(problems[0]["file"], json!(file.display().to_string()));
    assert_eq!(
        problems[0]["message"],
        "must be \"skip\" or \"queue\", got \"Queue\""
    );
    let message = message(&resp);
    assert!(
        message.starts_with("settings not saved: ") && message.contains("history_size"),
        "{resp:#}"
    );
    // Nothing was written and the job is untouched.
    assert!(!file.exists(), "no settings.job was written");
    let (_, job) = api.get_json(path);
    assert_eq!(
        (&job["problems"], &job["settings"]),
        (&json!([]), &json!({})),
        "{job:#}"
    );

    // Invalid JSON: a position, no key.
    let (code, resp) = api.put_settings(&format!("{path}/settings"), b"{\"timeout\": 5,}");
    assert_eq!(code, 400, "{resp:#}");
    let p = &resp["problems"][0];
    assert_eq!(
        (&p["line"], &p["key"], &p["fix"]),
        (&json!(1), &Value::Null, &json!("fix the syntax")),
        "{resp:#}"
    );

    // A good PUT clears nothing that was not there and shows at once.
    let (code, resp) = api.put_settings(&format!("{path}/settings"), b"{\"timeout\": 5}");
    assert_eq!(code, 200, "{resp:#}");
    let (_, job) = api.get_json(path);
    assert_eq!(job["problems"], json!([]), "{job:#}");
    assert_eq!(job["settings"], json!({"timeout": 5}), "{job:#}");
    h.finish();
}

#[test]
fn fixing_a_bad_settings_job_through_the_api_clears_its_problems_at_once() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "tbad",
        &[
            ("settings.job", BAD_TRIGGERED),
            ("run.sh", "#!/bin/bash\necho hi\n"),
        ],
    );
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/tbad", 200);
    let path = "/api/triggeredwebjobs/tbad";
    let (_, job) = api.get_json(path);
    assert_eq!(only_problem(&job)["key"], "timeout", "{job:#}");
    let (code, resp) = api.put_settings(&format!("{path}/settings"), b"{\"timeout\": 60}");
    assert_eq!(code, 200, "{resp:#}");
    let (_, job) = api.get_json(path);
    assert_eq!(job["problems"], json!([]), "the very next GET: {job:#}");
    h.finish();
}

#[test]
fn check_prints_each_problem_with_its_position_key_and_fix() {
    let sb = Sandbox::new();
    sb.write_job(
        TRIGGERED,
        "tbad",
        &[
            ("settings.job", BAD_TRIGGERED),
            ("run.sh", "#!/bin/bash\necho hi\n"),
        ],
    );
    let (code, out) = run_cli(&[
        std::ffi::OsString::from("check"),
        std::ffi::OsString::from("--jobs"),
        sb.jobs.clone().into(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    let file = sb.job_dir(TRIGGERED, "tbad").join("settings.job");
    let want = format!(
        "error: {}:3:14: key `timeout`: must be a whole number of seconds >= 0, got -1; \
         fix the value, e.g. `\"timeout\": 3600`",
        file.display()
    );
    assert!(out.contains(&want), "{want}\nin:\n{out}");
    assert!(out.contains("1 job(s), 1 error(s), 0 warning(s)"), "{out}");
}
