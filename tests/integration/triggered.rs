//! Triggered jobs end to end: schedules (every second, 5 fields, macros), run records
//! and output framing, overlap skip and queue, timeout and idle timeout, cancel and
//! the stop sequence, history trimming, crash recovery, missed fires, disable.job,
//! two hosts on one schedule, and bad settings.
//!
//! Files: `LOGS/triggered/NAME/RUN_ID/{status.json,output_log.txt}`,
//! `job_scheduler.log`, `scheduler_state.json`. The CLI helpers are in `cli.rs`.

use std::fs;
use std::path::PathBuf;

use chrono::{DateTime, Datelike, Duration as CDuration, Timelike, Utc};
use serde_json::{Value, json};

use crate::cli::{cli, status_json, trigger, wait_api, wait_status_json};
use crate::support::*;

// ----- helpers (shared with cli.rs) ------------------------------------------------

/// `LOGS/triggered/NAME`.
pub(crate) fn tdir(sb: &Sandbox, name: &str) -> PathBuf {
    sb.logs.join(TRIGGERED).join(name)
}

/// Run folders (18 digits), oldest first.
pub(crate) fn run_ids(sb: &Sandbox, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(tdir(sb, name))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.len() == 18 && n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    ids.sort();
    ids
}

/// A run's status.json; `Null` while missing. It is written atomically, so anything
/// but valid JSON is a bug.
pub(crate) fn read_run(sb: &Sandbox, name: &str, id: &str) -> Value {
    let path = tdir(sb, name).join(id).join("status.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{} is not valid JSON ({e}); it must be written atomically:\n{}",
                path.display(),
                String::from_utf8_lossy(&bytes)
            )
        }),
        Err(_) => Value::Null,
    }
}

/// Every run with a status.json, oldest first.
pub(crate) fn all_runs(sb: &Sandbox, name: &str) -> Vec<Value> {
    run_ids(sb, name)
        .iter()
        .map(|id| read_run(sb, name, id))
        .filter(|v| !v.is_null())
        .collect()
}

fn ended(r: &Value) -> bool {
    r["status"].is_string() && r["status"] != "Running"
}

/// Waits until run `id` has ended (any state but Running) and returns its record.
pub(crate) fn wait_run_ended(sb: &Sandbox, name: &str, id: &str) -> Value {
    let mut last = Value::Null;
    sb.wait_for(&format!("run {id} of {name} to end"), DEADLINE, || {
        last = read_run(sb, name, id);
        ended(&last)
    });
    last
}

fn wait_run_status(sb: &Sandbox, name: &str, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    sb.wait_for(
        &format!("run {id} of {name} to say status {status}"),
        DEADLINE,
        || {
            last = read_run(sb, name, id);
            last["status"] == status
        },
    );
    last
}

/// Waits until the job's runs satisfy `pred`; returns them (oldest first).
fn wait_runs(
    sb: &Sandbox,
    name: &str,
    desc: &str,
    mut pred: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let mut runs = Vec::new();
    sb.wait_for(&format!("{name}: {desc}"), DEADLINE, || {
        runs = all_runs(sb, name);
        pred(&runs)
    });
    runs
}

fn sched_log(sb: &Sandbox, name: &str) -> String {
    String::from_utf8_lossy(&fs::read(tdir(sb, name).join("job_scheduler.log")).unwrap_or_default())
        .into_owned()
}

fn wait_sched_log(sb: &Sandbox, name: &str, needle: &str) -> String {
    let mut text = String::new();
    sb.wait_for(
        &format!("{name}/job_scheduler.log to contain {needle:?}"),
        DEADLINE,
        || {
            text = sched_log(sb, name);
            text.contains(needle)
        },
    );
    text
}

fn output_log(sb: &Sandbox, name: &str, id: &str) -> Vec<u8> {
    fs::read(tdir(sb, name).join(id).join("output_log.txt")).unwrap_or_default()
}

fn time(r: &Value, key: &str) -> DateTime<Utc> {
    let s = r[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string: {r:#}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{key} {s:?} is not RFC 3339 ({e}): {r:#}"))
        .with_timezone(&Utc)
}

fn state_json(last_fired: DateTime<Utc>) -> String {
    json!({
        "schema_version": 1,
        "last_fired": last_fired.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
    .to_string()
}

/// Asserts that no two runs overlapped: sorted by id, each starts at or after the end
/// of the one before.
fn assert_no_overlap(runs: &[Value]) {
    for w in runs.windows(2) {
        assert!(
            ended(&w[0]),
            "a run before the last one is still Running: {:#}",
            w[0]
        );
        let (end, next) = (time(&w[0], "end_time"), time(&w[1], "start_time"));
        assert!(
            next >= end,
            "run {} started at {next} before run {} ended at {end}: two runs at once\n{:#}\n{:#}",
            w[1]["id"],
            w[0]["id"],
            w[0],
            w[1]
        );
    }
}

// ----- schedules -------------------------------------------------------------------

#[test]
fn every_second_schedule_runs_on_whole_seconds_with_framed_output() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "tick",
        &[
            ("settings.job", r#"{"schedule": "* * * * * *"}"#),
            (
                "run.sh",
                "#!/bin/bash\necho \"out $WEBJOBS_RUN_ID\"\necho \"err $WEBJOBS_RUN_ID\" >&2\n",
            ),
        ],
    );
    h.start();
    wait_runs(&h, "tick", "3 successful scheduled runs", |rs| {
        rs.iter().filter(|r| r["status"] == "Success").count() >= 3
    });
    h.finish();

    let runs = all_runs(&h, "tick");
    let ids = run_ids(&h, "tick");
    assert_eq!(runs.len(), ids.len(), "every run folder has a status.json");
    let (last, done) = runs.split_last().expect("runs");
    assert!(
        last["status"] == "Success" || last["status"] == "Aborted",
        "the last run ends Success or is Aborted by the host's shutdown: {last:#}"
    );
    let mut prev_sched: Option<DateTime<Utc>> = None;
    for (r, id) in runs.iter().zip(&ids) {
        assert_eq!(r["id"], id.as_str(), "{r:#}");
        assert_eq!(r["name"], "tick", "{r:#}");
        assert_eq!(r["trigger"], "schedule", "{r:#}");
        let sched = time(r, "scheduled_for");
        assert_eq!(
            sched.nanosecond(),
            0,
            "scheduled_for is a whole second: {r:#}"
        );
        let start = time(r, "start_time");
        assert!(start >= sched, "a run does not start early: {r:#}");
        assert_eq!(
            &id[..14],
            start.format("%Y%m%d%H%M%S").to_string(),
            "the run id is the UTC start time: {r:#}"
        );
        assert!(
            prev_sched.is_none_or(|p| sched > p),
            "each occurrence fires once, in order: {runs:#?}"
        );
        prev_sched = Some(sched);
        assert!(time(r, "end_time") >= start, "{r:#}");
    }
    let mut sorted = ids.clone();
    sorted.dedup();
    assert_eq!(sorted, ids, "distinct, increasing run ids");
    assert!(done.len() >= 2);
    for r in runs.iter().filter(|r| r["status"] == "Success") {
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["exit_code"], 0, "{r:#}");
        assert!(r["duration_ms"].is_u64(), "{r:#}");
        let lines = parse_log(&output_log(&h, "tick", id));
        assert_eq!(
            texts(&lines, "INFO"),
            vec![format!("out {id}")],
            "{lines:#?}"
        );
        assert_eq!(
            texts(&lines, "ERROR"),
            vec![format!("err {id}")],
            "{lines:#?}"
        );
        let log_id = &lines[0].id;
        assert!(
            lines.iter().all(|l| &l.id == log_id),
            "one run id in every line: {lines:#?}"
        );
        assert!(
            texts(&lines, "SYS INFO")
                .iter()
                .any(|t| t.contains("started")),
            "{lines:#?}"
        );
    }
    let sched = sched_log(&h, "tick");
    let sys = parse_log(sched.as_bytes());
    assert!(
        sys.iter().all(|l| l.label.starts_with("SYS")),
        "job_scheduler.log holds SYS lines: {sched}"
    );
    assert!(
        sched.contains("scheduled `* * * * * *` in UTC: next fire at"),
        "{sched}"
    );
    for id in &ids {
        assert!(sched.contains(&format!("run {id} started")), "{sched}");
        // A success is in the run's own log and record, not in the scheduler's.
        assert!(!sched.contains(&format!("run {id} ended")), "{sched}");
    }
}

#[test]
fn five_field_cron_and_macros_are_accepted() {
    let mut h = TestHost::new();
    let jobs = [
        ("five", "*/5 * * * *"),
        ("hourly", "@hourly"),
        ("daily", "@daily"),
        ("weekdays", "0 30 2 * * 1-5"),
    ];
    for (name, expr) in jobs {
        h.write_job(
            TRIGGERED,
            name,
            &[
                ("settings.job", &json!({ "schedule": expr }).to_string()),
                ("run.sh", "#!/bin/bash\necho hi\n"),
            ],
        );
    }
    h.start();
    wait_api(&h);
    for (name, expr) in jobs {
        let j = wait_status_json(&h, name, "a next fire time", |j| j["next_fire"].is_string());
        assert!(j["error"].is_null(), "{name}: {j:#}");
        assert_eq!(j["schedule"], expr, "{j:#}");
        let next = time(&j, "next_fire");
        assert!(next > Utc::now() - CDuration::seconds(5), "{j:#}");
        assert_eq!((next.second(), next.nanosecond()), (0, 0), "{j:#}");
        match name {
            "five" => assert_eq!(next.minute() % 5, 0, "{j:#}"),
            "hourly" => assert_eq!(next.minute(), 0, "{j:#}"),
            "daily" => assert_eq!((next.hour(), next.minute()), (0, 0), "{j:#}"),
            _ => {
                assert_eq!((next.hour(), next.minute()), (2, 30), "{j:#}");
                assert!(
                    next.weekday().number_from_monday() <= 5,
                    "Monday to Friday: {j:#}"
                );
            }
        }
        assert!(
            sched_log(&h, name).contains("next fire at"),
            "{}",
            sched_log(&h, name)
        );
    }
    h.finish();
}

// ----- overlap -------------------------------------------------------------------------

#[test]
fn overlap_skip_drops_fires_while_a_run_is_going_and_runs_never_overlap() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "slow",
        &[
            ("settings.job", r#"{"schedule": "* * * * * *"}"#),
            ("run.sh", "#!/bin/bash\necho begin\nsleep 3\necho end\n"),
        ],
    );
    h.start();
    wait_runs(&h, "slow", "2 finished runs", |rs| {
        rs.iter().filter(|r| r["status"] == "Success").count() >= 2
    });
    wait_sched_log(&h, "slow", "overlap: skip");
    h.finish();

    let runs = all_runs(&h, "slow");
    assert_no_overlap(&runs);
    let ids: Vec<String> = runs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let sched = sched_log(&h, "slow");
    let skipped: Vec<&str> = sched.lines().filter(|l| l.contains("skipped")).collect();
    assert!(!skipped.is_empty(), "{sched}");
    for line in &skipped {
        assert!(line.contains("overlap: skip"), "{line}");
        assert!(
            ids.iter().any(|id| line.contains(&format!("run {id} "))),
            "a skipped fire names the run that was going: {line}\nruns {ids:?}"
        );
    }
    for r in &runs[..runs.len() - 1] {
        assert_eq!(r["status"], "Success", "{r:#}");
    }
}

const BLOCKER: &str = r#"#!/bin/bash
echo "$WEBJOBS_RUN_ID" >> "$TEST_STATE/$WEBJOBS_NAME.ids"
while [ ! -e "$TEST_STATE/$WEBJOBS_NAME.release" ]; do sleep 0.1; done
echo released
"#;

#[test]
fn overlap_queue_keeps_exactly_one_pending_run() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "q",
        &[
            ("settings.job", r#"{"overlap": "queue"}"#),
            ("run.sh", BLOCKER),
        ],
    );
    h.start();
    wait_api(&h);
    let first = trigger(&h, "q");
    h.wait_for("the first run to start", DEADLINE, || {
        h.read_lines("q.ids").len() == 1
    });

    let out = cli(&h, "trigger", &["q"]);
    assert_eq!(
        out.code,
        Some(0),
        "a trigger while a run is going is queued: {}",
        out.all()
    );
    assert!(out.stdout.contains("queued"), "{}", out.all());
    assert!(
        out.stdout.contains(&first),
        "queued behind {first}: {}",
        out.all()
    );
    let out = cli(&h, "trigger", &["q"]);
    assert_eq!(
        out.code,
        Some(1),
        "a third trigger while one is queued fails: {}",
        out.all()
    );
    assert!(out.stderr.contains("queued"), "{}", out.all());

    fs::write(h.state_path("q.release"), "").unwrap();
    h.wait_for("the queued run to start", DEADLINE, || {
        h.read_lines("q.ids").len() >= 2
    });
    let ids = h.read_lines("q.ids");
    assert_eq!(ids[0], first);
    let second = ids[1].clone();
    assert!(second > first, "{ids:?}");
    wait_run_status(&h, "q", &first, "Success");
    let rec = wait_run_status(&h, "q", &second, "Success");
    assert_eq!(rec["trigger"], "manual", "{rec:#}");
    let j = wait_status_json(&h, "q", "nothing going or queued", |j| {
        j["running"].is_null() && j["pending"] == false
    });
    assert_eq!(
        run_ids(&h, "q"),
        vec![first.clone(), second],
        "exactly one more run: {j:#}"
    );
    assert_eq!(h.read_lines("q.ids").len(), 2);
    assert!(
        sched_log(&h, "q").contains(&format!("queued behind run {first}")),
        "{}",
        sched_log(&h, "q")
    );
    assert_no_overlap(&all_runs(&h, "q"));
    h.finish();
}

#[test]
fn status_shows_a_queued_run_as_pending() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "pend",
        &[
            ("settings.job", r#"{"overlap": "queue"}"#),
            ("run.sh", BLOCKER),
        ],
    );
    h.start();
    wait_api(&h);
    let first = trigger(&h, "pend");
    h.wait_for("the first run to start", DEADLINE, || {
        h.read_lines("pend.ids").len() == 1
    });
    let out = cli(&h, "trigger", &["pend"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("queued"), "{}", out.all());
    // The run going is released only after the status has said "pending".
    let j = wait_status_json(&h, "pend", "pending true while a run is queued", |j| {
        j["pending"] == true
    });
    assert_eq!(j["running"], first.as_str(), "{j:#}");
    let out = cli(&h, "status", &["pend"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("queued") && l.contains("a run waits")),
        "jobhost status shows the queued run: {}",
        out.all()
    );
    fs::write(h.state_path("pend.release"), "").unwrap();
    wait_status_json(&h, "pend", "nothing going or queued", |j| {
        j["running"].is_null() && j["pending"] == false && j["latest_run"]["status"] == "Success"
    });
    assert_eq!(run_ids(&h, "pend").len(), 2);
    h.finish();
}

#[test]
fn manual_trigger_while_a_run_is_going_with_overlap_skip_fails() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "busy", &[("run.sh", BLOCKER)]);
    h.start();
    wait_api(&h);
    let first = trigger(&h, "busy");
    h.wait_for("the run to start", DEADLINE, || {
        h.read_lines("busy.ids").len() == 1
    });
    let out = cli(&h, "trigger", &["busy"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("still going") && out.stderr.contains(&first),
        "the message says run {first} is going: {}",
        out.all()
    );
    assert_eq!(run_ids(&h, "busy"), vec![first.clone()], "no second run");

    fs::write(h.state_path("busy.release"), "").unwrap();
    wait_run_status(&h, "busy", &first, "Success");
    // Free again: a trigger now starts a run.
    let second = trigger(&h, "busy");
    assert_ne!(second, first);
    wait_run_status(&h, "busy", &second, "Success");
    h.finish();
}

// ----- time limits, cancel, stop sequence ---------------------------------------------

#[test]
fn timeout_aborts_a_long_run_and_kills_it() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "slowpoke",
        &[
            ("settings.job", r#"{"timeout": 2, "stopping_wait_time": 1}"#),
            (
                "run.sh",
                // Ignores SIGTERM (its sleeps inherit that): only SIGKILL ends it.
                "#!/bin/bash\ntrap '' TERM\necho $$ >> \"$TEST_STATE/slowpoke.pids\"\necho started\nsleep 100 & echo $! >> \"$TEST_STATE/slowpoke.pids\"\nwait\n",
            ),
        ],
    );
    h.start();
    wait_api(&h);
    let id = trigger(&h, "slowpoke");
    let pids = h.wait_pids("slowpoke.pids", 2);
    let rec = wait_run_ended(&h, "slowpoke", &id);
    assert_eq!(rec["status"], "Aborted", "{rec:#}");
    let err = rec["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("timeout"),
        "the error names the timeout: {rec:#}"
    );
    for pid in pids {
        h.wait_dead("a process of the timed-out run", pid);
    }
    let lines = parse_log(&output_log(&h, "slowpoke", &id));
    assert!(
        texts(&lines, "SYS ERROR")
            .iter()
            .any(|t| t.contains("timeout")),
        "{lines:#?}"
    );
    // A run that did not succeed is named in the scheduler's log too.
    wait_sched_log(&h, "slowpoke", &format!("run {id} ended: Aborted (timeout"));
    h.finish();
}

#[test]
fn idle_timeout_aborts_a_silent_run_but_not_one_that_keeps_printing() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "silent",
        &[
            ("settings.job", r#"{"idle_timeout": 2}"#),
            (
                "run.sh",
                "#!/bin/bash\necho $$ >> \"$TEST_STATE/silent.pids\"\necho hello\nexec sleep 100\n",
            ),
        ],
    );
    h.write_job(
        TRIGGERED,
        "chatty",
        &[
            ("settings.job", r#"{"idle_timeout": 3}"#),
            (
                "run.sh",
                "#!/bin/bash\nfor i in $(seq 1 10); do echo \"tick $i\"; sleep 0.5; done\n",
            ),
        ],
    );
    h.start();
    wait_api(&h);
    let silent = trigger(&h, "silent");
    let chatty = trigger(&h, "chatty");
    let pid = h.wait_pids("silent.pids", 1)[0];

    let rec = wait_run_ended(&h, "silent", &silent);
    assert_eq!(rec["status"], "Aborted", "{rec:#}");
    assert!(
        rec["error"].as_str().unwrap_or_default().contains("idle"),
        "the error names the idle timeout: {rec:#}"
    );
    h.wait_dead("the idle run", pid);

    let rec = wait_run_ended(&h, "chatty", &chatty);
    assert_eq!(
        rec["status"], "Success",
        "a run that prints every 0.5 s for 5 s is not idle: {rec:#}"
    );
    assert!(rec["duration_ms"].as_u64() >= Some(3000), "{rec:#}");
    let lines = parse_log(&output_log(&h, "chatty", &chatty));
    assert_eq!(texts(&lines, "INFO").len(), 10, "{lines:#?}");
    h.finish();
}

#[test]
fn cancel_stops_the_going_run_and_fails_when_nothing_is_going() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "long", &[("run.sh", &sleeper("long"))]);
    h.start();
    wait_api(&h);
    let id = trigger(&h, "long");
    let pid = h.wait_pids("long.pids", 1)[0];
    wait_status_json(&h, "long", "the run going", |j| j["running"] == id.as_str());

    let out = cli(&h, "cancel", &["long"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let rec = wait_run_ended(&h, "long", &id);
    assert_eq!(rec["status"], "Aborted", "{rec:#}");
    assert!(
        rec["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cancelled"),
        "{rec:#}"
    );
    h.wait_dead("the cancelled run", pid);
    wait_status_json(&h, "long", "nothing going", |j| j["running"].is_null());

    let out = cli(&h, "cancel", &["long"]);
    assert_eq!(out.code, Some(1), "nothing to cancel: {}", out.all());
    assert!(out.stderr.contains("long"), "{}", out.all());
    let out = cli(&h, "cancel", &["long", &id]);
    assert_eq!(out.code, Some(1), "that run is over: {}", out.all());
    assert_eq!(run_ids(&h, "long"), vec![id]);
    h.finish();
}

#[test]
fn cancel_creates_the_shutdown_file_and_sends_sigterm_to_the_run() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "graceful",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/graceful.pids"
term=0
trap 'term=1; echo term >> "$TEST_STATE/graceful.events"' TERM
[ -e "$WEBJOBS_SHUTDOWN_FILE" ] && echo "early" >> "$TEST_STATE/graceful.events"
echo ready
while [ ! -e "$WEBJOBS_SHUTDOWN_FILE" ] || [ "$term" = 0 ]; do sleep 0.1; done
echo "saw $WEBJOBS_SHUTDOWN_FILE" >> "$TEST_STATE/graceful.events"
echo "saw the shutdown file"
exit 0
"#,
        )],
    );
    h.start();
    wait_api(&h);
    let id = trigger(&h, "graceful");
    let pid = h.wait_pids("graceful.pids", 1)[0];
    h.wait_for("the run to print ready", DEADLINE, || {
        String::from_utf8_lossy(&output_log(&h, "graceful", &id)).contains("INFO] ready\n")
    });
    let out = cli(&h, "cancel", &["graceful", &id]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let rec = wait_run_ended(&h, "graceful", &id);
    assert_eq!(rec["status"], "Aborted", "{rec:#}");
    h.wait_dead("the run", pid);
    let events = h.read_lines("graceful.events");
    assert!(
        events.iter().any(|e| e == "term"),
        "the run got SIGTERM: {events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("saw /")),
        "the run saw WEBJOBS_SHUTDOWN_FILE appear: {events:?}"
    );
    assert!(!events.iter().any(|e| e == "early"), "{events:?}");
    let lines = parse_log(&output_log(&h, "graceful", &id));
    assert!(
        texts(&lines, "INFO").contains(&"saw the shutdown file".to_string()),
        "output written while stopping is kept: {lines:#?}"
    );
    assert!(
        !texts(&lines, "SYS ERROR")
            .iter()
            .any(|t| t.contains("SIGKILL")),
        "the run ended within its grace: {lines:#?}"
    );
    h.finish();
}

// ----- history, recovery ----------------------------------------------------------------

#[test]
fn history_size_keeps_only_the_newest_run_folders() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "trim",
        &[
            ("settings.job", r#"{"history_size": 3}"#),
            ("run.sh", "#!/bin/bash\necho \"run $WEBJOBS_RUN_ID\"\n"),
        ],
    );
    h.start();
    wait_api(&h);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = trigger(&h, "trim");
        wait_run_status(&h, "trim", &id, "Success");
        ids.push(id);
    }
    let newest = ids[2..].to_vec();
    let mut left = Vec::new();
    h.wait_for("exactly the 3 newest run folders", DEADLINE, || {
        left = run_ids(&h, "trim");
        left == newest
    });
    let out = cli(&h, "history", &["trim", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["runs"].as_array().map(Vec::len), Some(3), "{v:#}");
    h.finish();
}

#[test]
fn a_run_left_running_by_a_killed_host_is_marked_aborted_on_restart() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "doomed",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/doomed.pids"
sleep 100000 &
echo $! >> "$TEST_STATE/doomed.pids"
echo ready
wait
"#,
        )],
    );
    h.start();
    wait_api(&h);
    let id = trigger(&h, "doomed");
    let pids = h.wait_pids("doomed.pids", 2);
    wait_run_status(&h, "doomed", &id, "Running");

    h.kill9();
    for pid in &pids {
        h.wait_dead("a process of the dead host's run", *pid);
    }
    assert_eq!(
        read_run(&h, "doomed", &id)["status"],
        "Running",
        "a SIGKILLed host cannot record the end"
    );

    h.start();
    let rec = wait_run_status(&h, "doomed", &id, "Aborted");
    let err = rec["error"].as_str().unwrap_or_default();
    assert!(err.contains("host"), "the error mentions the host: {rec:#}");
    assert!(rec["end_time"].is_string(), "{rec:#}");
    wait_sched_log(&h, "doomed", &format!("run {id} was left Running"));
    for pid in &pids {
        assert!(!pid_alive(*pid));
    }
    h.finish();
}

// ----- missed fires -----------------------------------------------------------------------

#[test]
fn a_fire_missed_within_ten_minutes_runs_once_at_start() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "catchup",
        &[
            ("settings.job", r#"{"schedule": "0 * * * * *"}"#),
            ("run.sh", "#!/bin/bash\necho caught up\n"),
        ],
    );
    let now = Utc::now();
    let minute = now
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap();
    let last = minute - CDuration::minutes(5);
    fs::create_dir_all(tdir(&h, "catchup")).unwrap();
    fs::write(
        tdir(&h, "catchup").join("scheduler_state.json"),
        state_json(last),
    )
    .unwrap();
    h.start();
    let runs = wait_runs(&h, "catchup", "the catch-up run to end", |rs| {
        rs.first().is_some_and(ended)
    });
    let first = &runs[0];
    assert_eq!(first["trigger"], "schedule", "{first:#}");
    assert_eq!(first["status"], "Success", "{first:#}");
    let sf = time(first, "scheduled_for");
    let start = time(first, "start_time");
    assert!(sf > last && sf <= start, "{first:#}");
    assert_eq!((sf.second(), sf.nanosecond()), (0, 0), "{first:#}");
    assert!(
        start - sf <= CDuration::minutes(10),
        "a missed fire at most 10 minutes old: {first:#}"
    );
    let sched = wait_sched_log(&h, "catchup", "missed");
    let owed = (sf - last).num_minutes() - 1;
    let missed = sched
        .lines()
        .find(|l| l.contains("missed"))
        .expect("a missed line");
    assert!(
        missed.contains(&format!("missed {owed} occurrence(s)")),
        "the older {owed} occurrence(s) are logged as missed: {missed}"
    );
    h.finish();
    let runs = all_runs(&h, "catchup");
    let catch_ups: Vec<&Value> = runs
        .iter()
        .filter(|r| time(r, "scheduled_for") <= sf)
        .collect();
    assert_eq!(
        catch_ups.len(),
        1,
        "one catch-up run, the older occurrences not run: {runs:#?}"
    );
}

/// Private copies are kept between runs only while pristine: what one run wrote into
/// its working folder is never seen by the next.
#[test]
fn each_run_starts_from_a_pristine_copy_of_the_job_folder() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "scribbler",
        &[(
            "run.sh",
            "#!/bin/bash\nif [ -e left.txt ]; then echo FOUND; else echo clean; fi\necho x > left.txt\n",
        )],
    );
    h.start();
    wait_api(&h);
    for _ in 0..3 {
        let id = trigger(&h, "scribbler");
        wait_run_status(&h, "scribbler", &id, "Success");
        let out = String::from_utf8_lossy(&output_log(&h, "scribbler", &id)).into_owned();
        assert!(out.contains("clean") && !out.contains("FOUND"), "{out}");
    }
    assert!(
        !tdir(&h, "scribbler").join("left.txt").exists()
            && !h.job_dir(TRIGGERED, "scribbler").join("left.txt").exists(),
        "the job folder itself is untouched"
    );
    h.finish();
}

/// A scheduled run's occurrence is persisted by its `Running` record, written before
/// its process starts: a host SIGKILLed during the run must not fire the same
/// occurrence again when it comes back (here the catch-up of a missed minute, which
/// the state file alone would still call missed).
#[test]
fn a_host_killed_during_a_scheduled_run_does_not_fire_that_occurrence_again() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "once",
        &[
            ("settings.job", r#"{"schedule": "0 * * * * *"}"#),
            (
                "run.sh",
                "#!/bin/bash\necho $$ >> \"$TEST_STATE/once.pids\"\nexec sleep 100000\n",
            ),
        ],
    );
    let minute = Utc::now()
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap();
    fs::create_dir_all(tdir(&h, "once")).unwrap();
    fs::write(
        tdir(&h, "once").join("scheduler_state.json"),
        state_json(minute - CDuration::minutes(3)),
    )
    .unwrap();
    h.start();
    let pid = h.wait_pids("once.pids", 1)[0];
    let first = wait_runs(&h, "once", "the catch-up run", |rs| !rs.is_empty()).remove(0);
    let id = first["id"].as_str().unwrap_or_default().to_string();
    wait_run_status(&h, "once", &id, "Running");
    h.kill9();
    h.wait_dead("the killed host's run", pid);

    h.start();
    wait_run_status(&h, "once", &id, "Aborted");
    wait_sched_log(&h, "once", &format!("run {id} was left Running"));
    h.finish();
    let runs = all_runs(&h, "once");
    let mut occurrences: Vec<String> = runs
        .iter()
        .map(|r| r["scheduled_for"].as_str().unwrap_or_default().to_string())
        .collect();
    occurrences.sort();
    let fired = occurrences.len();
    occurrences.dedup();
    assert_eq!(
        occurrences.len(),
        fired,
        "an occurrence fired twice: {runs:#?}"
    );
}

#[test]
fn a_fire_missed_by_more_than_ten_minutes_is_logged_not_run() {
    let mut h = TestHost::new();
    // Half an hour from the current minute: the last occurrence is ~30 minutes old,
    // the next ~30 minutes away.
    let now = Utc::now();
    let m = (now.minute() + 30) % 60;
    h.write_job(
        TRIGGERED,
        "toolate",
        &[
            (
                "settings.job",
                &json!({ "schedule": format!("0 {m} * * * *") }).to_string(),
            ),
            ("run.sh", "#!/bin/bash\necho \"should not run\"\n"),
        ],
    );
    let last = now - CDuration::hours(2);
    fs::create_dir_all(tdir(&h, "toolate")).unwrap();
    fs::write(
        tdir(&h, "toolate").join("scheduler_state.json"),
        state_json(last),
    )
    .unwrap();
    h.start();
    let sched = wait_sched_log(&h, "toolate", "missed");
    let line = sched.lines().find(|l| l.contains("missed")).unwrap();
    assert!(
        line.contains("missed 2 occurrence(s)") && line.contains("not run"),
        "both hourly occurrences since {last} are logged as missed, not run: {line}"
    );
    wait_api(&h);
    let j = wait_status_json(&h, "toolate", "a next fire time", |j| {
        j["next_fire"].is_string()
    });
    let next = time(&j, "next_fire");
    assert!(next > Utc::now() + CDuration::minutes(20), "{j:#}");
    assert!(
        run_ids(&h, "toolate").is_empty(),
        "nothing older than 10 minutes runs: {:?}",
        all_runs(&h, "toolate")
    );
    assert!(j["latest_run"].is_null(), "{j:#}");
    h.finish();
    assert!(run_ids(&h, "toolate").is_empty());
}

// ----- disable.job ----------------------------------------------------------------------

#[test]
fn disable_job_turns_the_schedule_off_but_manual_runs_still_work() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "off",
        &[
            ("settings.job", r#"{"schedule": "* * * * * *"}"#),
            (
                "run.sh",
                "#!/bin/bash\necho \"$WEBJOBS_RUN_ID\" >> \"$TEST_STATE/off.ids\"\nsleep 2\n",
            ),
            ("disable.job", ""),
        ],
    );
    h.start();
    wait_sched_log(&h, "off", "disable.job is present");
    wait_api(&h);
    let j = status_json(&h, "off");
    assert_eq!(j["disabled"], true, "{j:#}");
    assert!(
        j["next_fire"].is_null(),
        "no next fire while disabled: {j:#}"
    );

    let out = cli(&h, "trigger", &["off"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stderr.contains("disabled"),
        "a note on stderr says the schedule is disabled: {}",
        out.all()
    );
    let id = out.stdout.trim().to_string();
    wait_run_status(&h, "off", &id, "Success");
    // The run lasted two seconds, every one of them an occurrence of the schedule.
    let runs = all_runs(&h, "off");
    assert_eq!(runs.len(), 1, "only the manual run: {runs:#?}");
    assert_eq!(runs[0]["trigger"], "manual");
    let sched = sched_log(&h, "off");
    assert!(
        !sched.contains("next fire at") && !sched.contains("skipped"),
        "the schedule is off: {sched}"
    );

    fs::remove_file(h.job_dir(TRIGGERED, "off").join("disable.job")).unwrap();
    let runs = wait_runs(
        &h,
        "off",
        "a scheduled run after disable.job is removed",
        |rs| rs.iter().any(|r| r["trigger"] == "schedule"),
    );
    assert_eq!(runs[0]["id"], id.as_str());
    h.finish();
}

// ----- several hosts ---------------------------------------------------------------------

#[test]
fn two_hosts_fire_each_occurrence_once() {
    let sb = Sandbox::new();
    sb.write_job(
        TRIGGERED,
        "shared",
        &[
            ("settings.job", r#"{"schedule": "* * * * * *"}"#),
            ("run.sh", "#!/bin/bash\necho \"run $WEBJOBS_RUN_ID\"\n"),
        ],
    );
    let mut a = TestHost::on(&sb, Some("a"));
    let mut b = TestHost::on(&sb, Some("b"));
    a.start();
    b.start();
    wait_runs(&sb, "shared", "8 finished scheduled runs", |rs| {
        rs.iter().filter(|r| r["status"] == "Success").count() >= 8
    });
    let sa = a.stop();
    let sbs = b.stop();
    assert_eq!(sa.code(), Some(0), "host a: {}", describe(&sa));
    assert_eq!(sbs.code(), Some(0), "host b: {}", describe(&sbs));
    sb.wait_no_leftovers();

    let runs = all_runs(&sb, "shared");
    assert_eq!(runs.len(), run_ids(&sb, "shared").len());
    let mut fired: Vec<String> = runs
        .iter()
        .map(|r| {
            assert_eq!(r["trigger"], "schedule", "{r:#}");
            r["scheduled_for"].as_str().unwrap().to_string()
        })
        .collect();
    fired.sort();
    let n = fired.len();
    fired.dedup();
    assert_eq!(fired.len(), n, "an occurrence ran on both hosts: {runs:#?}");
    assert_no_overlap(&runs);
    let by_a = runs.iter().filter(|r| r["instance"] == "a").count();
    let by_b = runs.iter().filter(|r| r["instance"] == "b").count();
    assert_eq!(by_a + by_b, n, "each run names its host: {runs:#?}");
}

// ----- bad input -------------------------------------------------------------------------

#[test]
fn bad_schedule_and_settings_are_errors_naming_the_key_and_nothing_runs() {
    let mut h = TestHost::new();
    let script = "#!/bin/bash\necho ran >> \"$TEST_STATE/$WEBJOBS_NAME.ran\"\n";
    let bad = [
        ("fields4", r#"{"schedule": "* * * *"}"#, "schedule"),
        ("fields7", r#"{"schedule": "0 0 0 * * * 2030"}"#, "schedule"),
        ("sec61", r#"{"schedule": "61 * * * * *"}"#, "schedule"),
        ("step0", r#"{"schedule": "*/0 * * * * *"}"#, "schedule"),
        (
            "badzone",
            r#"{"schedule": "* * * * * *", "timezone": "Mars/Olympus"}"#,
            "timezone",
        ),
        ("number", r#"{"schedule": 5}"#, "schedule"),
        (
            "negtimeout",
            r#"{"schedule": "* * * * * *", "timeout": -1}"#,
            "timeout",
        ),
        (
            "hist0",
            r#"{"schedule": "* * * * * *", "history_size": 0}"#,
            "history_size",
        ),
    ];
    for (name, settings, _) in bad {
        h.write_job(
            TRIGGERED,
            name,
            &[("settings.job", settings), ("run.sh", script)],
        );
    }
    h.write_job(
        TRIGGERED,
        "good",
        &[
            ("settings.job", r#"{"schedule": "* * * * * *"}"#),
            ("run.sh", script),
        ],
    );
    h.write_job(
        CONTINUOUS,
        "cont",
        &[
            ("settings.job", r#"{"schedule": "* * * * * *"}"#),
            ("run.sh", &sleeper("cont")),
        ],
    );
    h.start();
    wait_api(&h);
    for (name, _, key) in bad {
        let j = wait_status_json(&h, name, "an error", |j| j["error"].is_string());
        let err = j["error"].as_str().unwrap();
        assert!(
            err.contains(key) && err.contains("settings.job"),
            "the error of {name} names settings.job and `{key}`: {err:?}"
        );
        let out = cli(&h, "trigger", &[name]);
        assert_eq!(
            out.code,
            Some(1),
            "a job with bad settings cannot be triggered: {}",
            out.all()
        );
        assert!(out.stderr.contains(name), "{}", out.all());
    }
    // The good job's scheduled runs bound the time in which the bad ones would have
    // fired too.
    wait_runs(&h, "good", "3 scheduled runs", |rs| {
        rs.iter().filter(|r| ended(r)).count() >= 3
    });
    for (name, _, _) in bad {
        assert!(
            run_ids(&h, name).is_empty(),
            "{name} must not run: {:?}",
            all_runs(&h, name)
        );
        assert!(!h.state_exists(&format!("{name}.ran")), "{name} ran");
    }

    // A schedule on a continuous job means nothing: a warning, and the job runs.
    let pid = h.wait_pids("cont.pids", 1)[0];
    assert_eq!(h.wait_running("cont"), pid);
    let j = status_json(&h, "cont");
    assert!(j["error"].is_null(), "{j:#}");
    assert_eq!(j["status"], "Running", "{j:#}");
    let warnings = j["warnings"].to_string();
    assert!(
        warnings.contains("schedule"),
        "a warning names `schedule`: {j:#}"
    );
    h.finish();
}
