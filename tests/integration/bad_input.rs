//! Bad job folders and settings: each is reported clearly (status, host log, job log)
//! and disturbs nothing else. Every test runs a healthy job alongside and checks at the
//! end that it is still the same, never restarted, process.

use std::fs;
use std::os::unix::fs::symlink;

use serde_json::Value;

use crate::support::*;

/// Adds the healthy neighbour (before the host starts).
fn add_healthy(h: &TestHost) {
    h.write_job(CONTINUOUS, "healthy", &[("run.sh", &sleeper("healthy"))]);
}

/// The healthy job's pid, once it runs.
fn healthy_pid(h: &TestHost) -> i32 {
    let pid = h.wait_pids("healthy.pids", 1)[0];
    assert_eq!(h.wait_running("healthy"), pid);
    pid
}

/// The healthy neighbour still runs as the same process, never restarted.
fn assert_undisturbed(h: &TestHost, pid: i32) {
    assert!(pid_alive(pid), "the healthy job's process must still run");
    assert_eq!(
        h.read_pids("healthy.pids"),
        vec![pid],
        "the healthy job must not have been restarted"
    );
    let st = h.read_status("healthy");
    assert_eq!(st["status"], "Running", "{st:#}");
    assert_eq!(st["pid"].as_i64(), Some(i64::from(pid)), "{st:#}");
}

fn error_of(st: &Value) -> String {
    st["error"].as_str().unwrap_or_default().to_string()
}

/// `line N` or `:N:` (file:line:column), the two usual ways to give a line.
fn mentions_line(text: &str, line: u32) -> bool {
    let t = text.to_lowercase();
    t.contains(&format!("line {line}")) || t.contains(&format!(":{line}:"))
}

/// A job with `settings` must not start: status `Error` whose message names every
/// string in `must_mention`, a SYS ERROR line in its log, the neighbour undisturbed.
fn settings_error_case(name: &str, settings: &str, must_mention: &[&str]) -> String {
    let mut h = TestHost::new();
    add_healthy(&h);
    h.write_job(
        CONTINUOUS,
        name,
        &[("settings.job", settings), ("run.sh", &sleeper(name))],
    );
    h.start();
    let healthy = healthy_pid(&h);
    let st = h.wait_status(name, "Error");
    let err = error_of(&st);
    for m in must_mention {
        assert!(
            err.contains(m),
            "the error of {name} should mention {m:?}: {err:?}"
        );
    }
    assert!(
        !h.state_exists(&format!("{name}.pids")),
        "a job with invalid settings must not start"
    );
    let log = h.wait_log(name, "SYS ERROR]");
    assert!(
        log.lines()
            .any(|l| l.contains("SYS ERROR]") && l.contains("settings.job")),
        "the job log names settings.job in a SYS ERROR line:\n{log}"
    );
    assert_undisturbed(&h, healthy);
    h.finish();
    err
}

#[test]
fn invalid_json_settings_is_an_error_with_file_and_line() {
    let err = settings_error_case(
        "badjson",
        "{\n  \"stopping_wait_time\": 5,,\n}\n",
        &["settings.job"],
    );
    assert!(mentions_line(&err, 2), "the error gives line 2: {err:?}");
}

#[test]
fn json_array_settings_is_an_error() {
    settings_error_case("arrayjob", "[1, 2, 3]\n", &["settings.job"]);
}

#[test]
fn wrong_type_in_settings_is_an_error_naming_the_key() {
    let err = settings_error_case(
        "wrongtype",
        "{\n  \"stopping_wait_time\": 5,\n  \"is_singleton\": \"yes\"\n}\n",
        &["settings.job", "is_singleton"],
    );
    assert!(mentions_line(&err, 3), "the error gives line 3: {err:?}");
}

#[test]
fn negative_number_in_settings_is_an_error_naming_the_key() {
    settings_error_case(
        "negative",
        r#"{"stopping_wait_time": -1}"#,
        &["settings.job", "stopping_wait_time"],
    );
}

#[test]
fn huge_number_in_settings_is_an_error_naming_the_key() {
    settings_error_case(
        "huge",
        r#"{"stopping_wait_time": 18446744073709551616}"#,
        &["settings.job", "stopping_wait_time"],
    );
}

#[test]
fn unknown_settings_key_is_a_warning_and_the_job_runs() {
    let mut h = TestHost::new();
    add_healthy(&h);
    h.write_job(
        CONTINUOUS,
        "unknownkey",
        &[
            ("settings.job", r#"{"colour": "blue"}"#),
            ("run.sh", &sleeper("unknownkey")),
        ],
    );
    h.start();
    let healthy = healthy_pid(&h);
    let pid = h.wait_pids("unknownkey.pids", 1)[0];
    assert_eq!(h.wait_running("unknownkey"), pid);
    assert!(
        h.read_status("unknownkey")["error"].is_null(),
        "an unknown key is no error"
    );
    h.wait_for("a warning naming `colour` in host.log", DEADLINE, || {
        h.host_log(None)
            .lines()
            .any(|l| l.contains("WARN") && l.contains("colour"))
    });
    assert_undisturbed(&h, healthy);
    h.finish();
}

#[test]
fn settings_with_bom_and_comments_are_accepted() {
    let mut h = TestHost::new();
    add_healthy(&h);
    let settings = "\u{feff}// deploy notes\n{\n  /* grace */ \"stopping_wait_time\": 1, // seconds\n  \"env\": {\"GREETING\": \"hi there\"}\n}\n";
    h.write_job(
        CONTINUOUS,
        "commented",
        &[
            ("settings.job", settings),
            (
                "run.sh",
                "#!/bin/bash\necho $$ >> \"$TEST_STATE/commented.pids\"\necho \"greeting=$GREETING\"\nexec sleep 100000\n",
            ),
        ],
    );
    h.start();
    let healthy = healthy_pid(&h);
    let pid = h.wait_pids("commented.pids", 1)[0];
    assert_eq!(h.wait_running("commented"), pid);
    assert!(h.read_status("commented")["error"].is_null());
    h.wait_log("commented", "INFO] greeting=hi there\n");
    assert_undisturbed(&h, healthy);
    h.finish();
}

#[test]
fn a_regular_file_where_a_job_folder_belongs_is_reported() {
    let mut h = TestHost::new();
    add_healthy(&h);
    fs::write(h.jobs.join(CONTINUOUS).join("notafolder"), "echo hi\n").unwrap();
    h.start();
    let healthy = healthy_pid(&h);
    h.wait_for("host.log to name notafolder", DEADLINE, || {
        h.host_log(None).contains("notafolder")
    });
    assert!(!h.log_dir("notafolder").exists());
    assert_undisturbed(&h, healthy);
    h.finish();
}

#[test]
fn a_folder_with_a_bad_name_is_reported_and_not_run() {
    let mut h = TestHost::new();
    add_healthy(&h);
    h.write_job(CONTINUOUS, "bad name!", &[("run.sh", &sleeper("badname"))]);
    h.start();
    let healthy = healthy_pid(&h);
    h.wait_for("host.log to name `bad name!`", DEADLINE, || {
        h.host_log(None).contains("bad name!")
    });
    assert!(
        !h.state_exists("badname.pids"),
        "a badly named job must not run"
    );
    assert!(!h.log_dir("bad name!").exists());
    assert_undisturbed(&h, healthy);
    h.finish();
}

#[test]
fn a_hidden_folder_is_ignored_silently() {
    let mut h = TestHost::new();
    add_healthy(&h);
    h.write_job(CONTINUOUS, ".tmp-deploy", &[("run.sh", &sleeper("hidden"))]);
    h.start();
    let healthy = healthy_pid(&h);
    // A change elsewhere, then the neighbour's steadiness, shows a later scan passed.
    h.write_job(CONTINUOUS, "later", &[("run.sh", &sleeper("later"))]);
    h.wait_pids("later.pids", 1);
    assert!(
        !h.state_exists("hidden.pids"),
        "a hidden folder must not run"
    );
    assert!(!h.host_log(None).contains(".tmp-deploy"), "nor be reported");
    assert!(!h.log_dir(".tmp-deploy").exists());
    assert_undisturbed(&h, healthy);
    h.finish();
}

#[test]
fn an_empty_folder_is_an_error_without_entry_point() {
    let mut h = TestHost::new();
    add_healthy(&h);
    fs::create_dir(h.job_dir(CONTINUOUS, "empty")).unwrap();
    h.start();
    let healthy = healthy_pid(&h);
    let st = h.wait_status("empty", "Error");
    assert!(
        error_of(&st).contains("no entry point"),
        "{:?}",
        error_of(&st)
    );
    assert_undisturbed(&h, healthy);
    h.finish();
}

#[test]
fn a_run_file_without_execute_bit_is_an_error() {
    let mut h = TestHost::new();
    add_healthy(&h);
    h.write_job_modes(
        CONTINUOUS,
        "noexec",
        &[("run", sleeper("noexec").as_bytes(), 0o644)],
    );
    h.start();
    let healthy = healthy_pid(&h);
    let st = h.wait_status("noexec", "Error");
    assert!(
        error_of(&st).to_lowercase().contains("execut"),
        "the error says the execute bit is missing: {:?}",
        error_of(&st)
    );
    assert!(!h.state_exists("noexec.pids"));
    assert_undisturbed(&h, healthy);
    h.finish();
}

#[test]
fn a_symlink_loop_inside_a_job_folder_does_not_stop_the_job() {
    let mut h = TestHost::new();
    add_healthy(&h);
    h.write_job(
        CONTINUOUS,
        "loopy",
        &[("run.sh", &sleeper("loopy")), ("sub/keep.txt", "x\n")],
    );
    let dir = h.job_dir(CONTINUOUS, "loopy");
    symlink("..", dir.join("sub/up")).unwrap();
    symlink("self", dir.join("self")).unwrap();
    h.start();
    let healthy = healthy_pid(&h);
    let pid = h.wait_pids("loopy.pids", 1)[0];
    assert_eq!(h.wait_running("loopy"), pid);
    h.wait_log("loopy", "INFO] ready\n");
    assert!(h.read_status("loopy")["error"].is_null());
    assert_undisturbed(&h, healthy);
    h.finish();
}

#[test]
fn settings_turning_invalid_keep_the_run_and_a_fix_recovers() {
    let mut h = TestHost::new();
    add_healthy(&h);
    h.write_job(
        CONTINUOUS,
        "victim",
        &[
            ("settings.job", r#"{"stopping_wait_time": 1}"#),
            ("run.sh", &sleeper("victim")),
        ],
    );
    h.start();
    let healthy = healthy_pid(&h);
    let pid = h.wait_pids("victim.pids", 1)[0];
    assert_eq!(h.wait_running("victim"), pid);

    h.write_job_file(
        CONTINUOUS,
        "victim",
        "settings.job",
        "{\"stopping_wait_time\": \"soon\"}\n",
    );
    let mut st = Value::Null;
    h.wait_for(
        "victim's status to show the settings error",
        DEADLINE,
        || {
            st = h.read_status("victim");
            error_of(&st).contains("settings.job")
        },
    );
    assert!(
        error_of(&st).contains("stopping_wait_time"),
        "{:?}",
        error_of(&st)
    );
    assert_eq!(st["status"], "Running", "it keeps running: {st:#}");
    assert_eq!(st["pid"].as_i64(), Some(i64::from(pid)), "same run: {st:#}");
    assert!(pid_alive(pid));
    assert_eq!(h.read_pids("victim.pids"), vec![pid], "not restarted");

    h.write_job_file(
        CONTINUOUS,
        "victim",
        "settings.job",
        "{\"stopping_wait_time\": 2}\n",
    );
    h.wait_for("victim Running again with no error", DEADLINE, || {
        let st = h.read_status("victim");
        st["status"] == "Running" && st["error"].is_null() && st["pid"].is_i64()
    });
    let now = h.read_status("victim")["pid"].as_i64().unwrap() as i32;
    assert!(pid_alive(now));
    assert_undisturbed(&h, healthy);
    h.finish();
}

#[test]
fn logs_folder_under_a_regular_file_fails_the_start_naming_the_path() {
    let mut h = TestHost::new();
    let file = h.root.join("afile");
    fs::write(&file, "not a folder").unwrap();
    h.logs_arg = file.join("logs");
    let (status, stderr) = h.run_to_exit();
    assert!(
        !status.success(),
        "the host must not run without a logs folder: {}",
        describe(&status)
    );
    assert!(
        stderr.contains(&*file.join("logs").to_string_lossy()),
        "stderr names the logs path: {stderr}"
    );
}

#[test]
fn a_missing_jobs_folder_is_created() {
    let mut h = TestHost::new();
    let jobs = h.root.join("fresh/jobs");
    h.jobs_arg = jobs.clone();
    h.start();
    h.wait_for(
        "JOBS/continuous and JOBS/triggered to be created",
        DEADLINE,
        || jobs.join(CONTINUOUS).is_dir() && jobs.join(TRIGGERED).is_dir(),
    );
    // And it is watched: a job dropped in runs.
    let stage = h.root.join("staging/fresh-job");
    fs::create_dir_all(&stage).unwrap();
    fs::write(stage.join("run.sh"), sleeper("fresh")).unwrap();
    fs::rename(&stage, jobs.join(CONTINUOUS).join("fresh")).unwrap();
    let pid = h.wait_pids("fresh.pids", 1)[0];
    assert_eq!(h.wait_running("fresh"), pid);
    h.finish();
}
