//! One status word per job, wherever it is shown: the API's `status` field, the
//! `status` label of `/metrics` and the CLI's STATUS column say the same thing.

use crate::cli::{cli, wait_api};
use crate::support::client::*;
use crate::support::*;

#[test]
fn a_job_shows_the_same_status_word_in_the_api_metrics_and_the_cli() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "web",
        &[("run.sh", "#!/bin/bash\nexec sleep 1000\n")],
    );
    h.write_job(TRIGGERED, "ready", &[("run.sh", "#!/bin/bash\necho hi\n")]);
    h.write_job(
        TRIGGERED,
        "off",
        &[
            ("settings.job", r#"{"schedule": "0 0 3 * * *"}"#),
            ("run.sh", "#!/bin/bash\necho hi\n"),
            ("disable.job", ""),
        ],
    );
    h.write_job(
        TRIGGERED,
        "bad",
        &[
            ("settings.job", r#"{"schedule": "not a schedule"}"#),
            ("run.sh", "#!/bin/bash\necho hi\n"),
        ],
    );
    h.write_job(
        TRIGGERED,
        "busy",
        &[("run.sh", "#!/bin/bash\nexec sleep 1000\n")],
    );
    h.start();
    let api = connect(&h);
    api.wait_continuous_status(&h, "web", "Running");
    api.wait_code(&h, "/api/triggeredwebjobs/bad", 200);
    let run = api.start_run("busy");
    let expected = [
        ("web", "continuous", "Running"),
        ("ready", "triggered", "Ready"),
        ("off", "triggered", "Disabled"),
        ("bad", "triggered", "Error"),
        ("busy", "triggered", "Running"),
    ];

    let (code, jobs) = api.get_json("/api/webjobs");
    assert_eq!(code, 200, "{jobs:#}");
    for (name, kind, word) in expected {
        let job = jobs
            .as_array()
            .and_then(|a| a.iter().find(|j| j["name"] == name))
            .unwrap_or_else(|| panic!("no {name} in {jobs:#}"));
        assert_eq!(job["status"], word, "API status of {name}: {job:#}");
        let (_, one) = api.get_json(&format!("/api/{kind}webjobs/{name}"));
        assert_eq!(one["status"], word, "API status of {name}: {one:#}");
    }

    let metrics = api.get("/metrics").text().unwrap();
    for (name, kind, word) in expected {
        let line =
            format!("jobhost_job_status{{job=\"{name}\",kind=\"{kind}\",status=\"{word}\"}} 1");
        assert!(
            metrics.contains(&line),
            "/metrics lacks {line:?}:\n{metrics}"
        );
    }

    wait_api(&h);
    let out = cli(&h, "list", &[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    for (name, kind, word) in expected {
        let row = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {}", out.all()));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.get(1..3), Some(&[kind, word][..]), "{row:?}");
    }

    let (code, body) = api.post_json(&format!("/api/triggeredwebjobs/busy/history/{run}/cancel"));
    assert_eq!(code, 200, "{body:#}");
    h.finish();
}
