//! State that stays true and limits that protect the host: a deleted bad settings.job
//! is a fix, log counters that keep up with a job that logs, no dependency noise in
//! the host log, no queued run started by a shutdown, a guardian that is replaced when
//! it dies, and a program the kernel cannot execute is an Error, not a restart loop.

use std::fs;

use serde_json::Value;

use crate::cli::{cli, wait_api, wait_status_json};
use crate::support::*;
use crate::triggered::{read_run, run_ids, tdir};

/// `GET path` on the host's API with its token; the body as text.
fn api_get(sb: &Sandbox, path: &str) -> String {
    let (code, text) = crate::support::client::at(&sb.logs).get_text(path);
    assert_eq!(code, 200, "GET {path}: {text}");
    text
}

/// The value of `log_written_bytes` for `job` in `/metrics` (0 when absent).
fn metric_log_written(sb: &Sandbox, job: &str) -> f64 {
    let text = api_get(sb, "/metrics");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.contains("log_written_bytes") && l.contains(&format!("job=\"{job}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

/// `jobhost __guardian` processes whose parent is `host`.
fn guardians_of(host: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`: the comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(host) && cmd.split(|b| *b == 0).any(|a| a == b"__guardian") {
            out.push(pid);
        }
    }
    out
}

#[test]
fn deleting_a_bad_settings_job_is_a_fix_and_the_status_says_running_again() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "keeper", &[("run.sh", &sleeper("keeper"))]);
    h.start();
    let pid = h.wait_pids("keeper.pids", 1)[0];
    assert_eq!(h.wait_running("keeper"), pid);

    h.write_job_file(
        CONTINUOUS,
        "keeper",
        "settings.job",
        "{\"stopping_wait_time\": \"soon\"}\n",
    );
    h.wait_for(
        "keeper to say it runs on its last valid settings",
        DEADLINE,
        || {
            let st = h.read_status("keeper");
            st["detailed_status"]
                .as_str()
                .is_some_and(|d| d.contains("last valid settings"))
                && st["error"].is_string()
        },
    );

    fs::remove_file(h.job_dir(CONTINUOUS, "keeper").join("settings.job")).unwrap();
    let mut st = Value::Null;
    h.wait_for(
        "keeper's error to clear once settings.job is gone",
        DEADLINE,
        || {
            st = h.read_status("keeper");
            st["error"].is_null()
        },
    );
    assert_eq!(st["status"], "Running", "{st:#}");
    let detail = st["detailed_status"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("running since"),
        "no stale 'last valid settings' once the folder is valid: {st:#}"
    );
    assert_eq!(st["pid"].as_i64(), Some(i64::from(pid)), "same run: {st:#}");
    assert_eq!(h.read_pids("keeper.pids"), vec![pid], "not restarted");
    h.finish();
}

#[test]
fn log_written_bytes_keeps_up_with_a_job_that_logs_without_restarting() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "chatty",
        &[(
            "run.sh",
            "#!/bin/bash\necho $$ >> \"$TEST_STATE/chatty.pids\"\n\
             while true; do echo \"tick $(date +%s%N)\"; sleep 0.05; done\n",
        )],
    );
    h.start();
    wait_api(&h);
    let pid = h.wait_pids("chatty.pids", 1)[0];
    assert_eq!(h.wait_running("chatty"), pid);

    // status.json: the counter grows while the run goes on (twice, so it is not
    // only the value written at the start).
    let mut first = 0;
    h.wait_for("status.json to count the log's bytes", DEADLINE, || {
        first = h.read_status("chatty")["log_written_bytes"]
            .as_u64()
            .unwrap_or(0);
        first > 0
    });
    h.wait_for("status.json's log_written_bytes to grow", DEADLINE, || {
        h.read_status("chatty")["log_written_bytes"]
            .as_u64()
            .is_some_and(|n| n > first)
    });
    // /metrics (the API's view) too.
    let mut seen = 0.0;
    h.wait_for("/metrics to count chatty's log bytes", DEADLINE, || {
        seen = metric_log_written(&h, "chatty");
        seen > 0.0
    });
    h.wait_for("/metrics' log_written_bytes to grow", DEADLINE, || {
        metric_log_written(&h, "chatty") > seen
    });
    assert_eq!(h.read_pids("chatty.pids"), vec![pid], "one run throughout");
    assert_eq!(h.read_status("chatty")["restarts"], 0);
    h.finish();
}

#[test]
fn removing_a_job_folder_puts_no_inotify_noise_in_the_host_log() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "gone", &[("run.sh", &sleeper("gone"))]);
    h.start();
    let pid = h.wait_pids("gone.pids", 1)[0];
    assert_eq!(h.wait_running("gone"), pid);
    h.remove_job(CONTINUOUS, "gone");
    h.wait_dead("gone's run", pid);
    // Another job seen after the removal: the watcher has handled the removal's
    // events by then (they come first).
    h.write_job(CONTINUOUS, "after", &[("run.sh", &sleeper("after"))]);
    let after = h.wait_pids("after.pids", 1)[0];
    assert_eq!(h.wait_running("after"), after);
    h.finish();
    let log = h.host_log(None);
    assert!(
        !log.contains("watch descriptor"),
        "a dependency's INFO noise reached the host log:\n{log}"
    );
    assert!(
        log.contains("started"),
        "the host's own lines are still there:\n{log}"
    );
}

#[test]
fn sigterm_drops_a_queued_run_and_leaves_no_record_running() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "queued",
        &[
            (
                "settings.job",
                r#"{"overlap": "queue", "stopping_wait_time": 2}"#,
            ),
            ("run.sh", &sleeper("queued")),
        ],
    );
    h.start();
    wait_api(&h);
    let first = cli(&h, "trigger", &["queued"]);
    assert_eq!(first.code, Some(0), "{}", first.all());
    let pid = h.wait_pids("queued.pids", 1)[0];
    let second = cli(&h, "trigger", &["queued"]);
    assert_eq!(
        second.code,
        Some(0),
        "the second is queued: {}",
        second.all()
    );
    wait_status_json(&h, "queued", "a run pending", |v| {
        v.to_string().contains("\"pending\":true") || v["pending"] == true
    });

    let status = h.stop();
    assert_eq!(status.code(), Some(0), "{}", describe(&status));
    h.wait_no_leftovers();
    assert!(!pid_alive(pid));

    let ids = run_ids(&h, "queued");
    assert_eq!(
        ids.len(),
        1,
        "the queued run never started: {ids:?}\n{}",
        h.dump()
    );
    for id in &ids {
        let rec = read_run(&h, "queued", id);
        assert_ne!(rec["status"], "Running", "{rec:#}");
    }
    assert_eq!(
        h.read_pids("queued.pids"),
        vec![pid],
        "one process ever started"
    );
    let want = "queued run of queued dropped: the host stopped before it could start";
    let sched = fs::read_to_string(tdir(&h, "queued").join("job_scheduler.log")).unwrap();
    assert!(sched.contains(want), "job_scheduler.log says so:\n{sched}");
    let log = h.host_log(None);
    assert!(log.contains(want), "the host log says so:\n{log}");
}

#[test]
fn a_killed_guardian_is_replaced_and_still_kills_the_runs_of_a_killed_host() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "family",
        &[(
            "run.sh",
            "#!/bin/bash\necho $$ >> \"$TEST_STATE/family.pids\"\n\
             sleep 100000 &\necho $! >> \"$TEST_STATE/family-child.pids\"\n\
             exec sleep 100000\n",
        )],
    );
    h.write_job(TRIGGERED, "long", &[("run.sh", &sleeper("long"))]);
    h.start();
    wait_api(&h);
    let run = h.wait_pids("family.pids", 1)[0];
    let child = h.wait_pids("family-child.pids", 1)[0];
    let out = cli(&h, "trigger", &["long"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let long = h.wait_pids("long.pids", 1)[0];

    let host = h.pid().unwrap();
    let mut old = Vec::new();
    h.wait_for("the host's guardian process", DEADLINE, || {
        old = guardians_of(host);
        old.len() == 1
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    h.wait_for(
        "the host log to say a new guardian started",
        DEADLINE,
        || h.host_log(None).contains("started a new one"),
    );
    let log = h.host_log(None);
    assert!(
        log.contains(&format!("guardian process (pid {})", old[0])),
        "{log}"
    );
    let mut new = Vec::new();
    h.wait_for("a new guardian process", DEADLINE, || {
        new = guardians_of(host);
        new.len() == 1 && new[0] != old[0]
    });

    h.kill9();
    for (what, pid) in [
        ("the run", run),
        ("its child", child),
        ("the triggered run", long),
    ] {
        h.wait_dead(what, pid);
    }
    h.wait_dead("the new guardian", new[0]);
    h.wait_no_leftovers();
}

#[test]
fn a_continuous_program_the_kernel_cannot_execute_is_an_error_until_its_files_change() {
    let mut h = TestHost::new();
    // An executable `run` holding text without a #! line: execve says ENOEXEC.
    h.write_job(CONTINUOUS, "noexec", &[("run", "echo no shebang here\n")]);
    h.write_job(
        CONTINUOUS,
        "bystander",
        &[("run.sh", &sleeper("bystander"))],
    );
    h.start();
    let bystander = h.wait_pids("bystander.pids", 1)[0];
    let st = h.wait_status("noexec", "Error");
    let error = st["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not a program this system can execute") && error.contains("#!"),
        "the reason and the fix: {st:#}"
    );
    assert!(!error.contains("os error"), "in our words: {error}");

    // Any rescan (another job appearing) does not try the same files again.
    h.write_job(CONTINUOUS, "later", &[("run.sh", &sleeper("later"))]);
    let later = h.wait_pids("later.pids", 1)[0];
    assert_eq!(h.wait_running("later"), later);
    let st = h.read_status("noexec");
    assert_eq!(st["status"], "Error", "{st:#}");
    let log = h.read_log("noexec");
    assert_eq!(
        log.matches("cannot run").count(),
        1,
        "one attempt, not a restart loop:\n{log}"
    );

    // Fixing the file starts the job.
    h.write_job_file(CONTINUOUS, "noexec", "run", &sleeper("noexec"));
    let pid = h.wait_pids("noexec.pids", 1)[0];
    assert_eq!(h.wait_running("noexec"), pid);
    assert!(h.read_status("noexec")["error"].is_null());
    assert!(pid_alive(bystander));
    h.finish();
}

#[test]
fn a_triggered_program_the_kernel_cannot_execute_fails_its_run_with_the_reason() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "badexec", &[("run", "echo no shebang here\n")]);
    h.start();
    wait_api(&h);
    let out = cli(&h, "trigger", &["badexec"]);
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        out.all().contains("not a program this system can execute"),
        "the CLI says why: {}",
        out.all()
    );
    let ids = run_ids(&h, "badexec");
    assert_eq!(ids.len(), 1, "{ids:?}");
    let rec = read_run(&h, "badexec", &ids[0]);
    assert_eq!(rec["status"], "Failed", "{rec:#}");
    assert!(
        rec["error"]
            .as_str()
            .is_some_and(|e| e.contains("add a #! line")),
        "{rec:#}"
    );
    let st = wait_status_json(&h, "badexec", "the job to show the error", |v| {
        v["error"].is_string()
    });
    assert!(
        st["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a program this system can execute")),
        "{st:#}"
    );
    h.finish();
}

#[test]
fn restart_delay_zero_still_waits_at_least_the_floor_and_doubles() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "quick",
        &[
            ("settings.job", r#"{"restart_delay": 0}"#),
            (
                "run.sh",
                "#!/bin/bash\necho $$ >> \"$TEST_STATE/quick.pids\"\nexit 1\n",
            ),
        ],
    );
    h.start();
    h.wait_pids("quick.pids", 4);
    let lines = parse_log(&h.read_log_all("quick"));
    let waits: Vec<String> = texts(&lines, "SYS INFO")
        .into_iter()
        .filter(|t| t.starts_with("restart in"))
        .take(3)
        .collect();
    assert_eq!(
        waits,
        ["restart in 0.1 s", "restart in 0.2 s", "restart in 0.4 s"],
        "{lines:#?}"
    );
    h.finish();
}
