//! Continuous jobs end to end: output framing and environment, discovery of changes,
//! disable.job, crashes and backoff, the stop sequence, process-tree cleanup, pipes,
//! log lines, rotation and log write failures.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

fn canonical(p: &str) -> PathBuf {
    Path::new(p)
        .canonicalize()
        .unwrap_or_else(|e| panic!("canonicalizing {p}: {e}"))
}

/// The value of `KEY=value` among the INFO lines.
fn info_value(lines: &[LogLine], key: &str) -> String {
    let prefix = format!("{key}=");
    texts(lines, "INFO")
        .into_iter()
        .find_map(|t| t.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no INFO line {prefix}...: {lines:#?}"))
}

#[test]
fn output_is_framed_and_the_run_gets_its_environment() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "basic",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo "NAME=$WEBJOBS_NAME"
echo "TYPE=$WEBJOBS_TYPE"
echo "PATH=$WEBJOBS_PATH"
echo "DATA_PATH=$WEBJOBS_DATA_PATH"
echo "RUN_ID=$WEBJOBS_RUN_ID"
echo "SHUTDOWN_FILE=$WEBJOBS_SHUTDOWN_FILE"
echo "CWD=$(pwd)"
[ -e run.sh ] && echo "HAS_SCRIPT=yes"
echo "to stderr" >&2
echo $$ >> "$TEST_STATE/basic.pids"
echo ready
exec sleep 100000
"#,
        )],
    );
    h.start();
    let pid = h.wait_pids("basic.pids", 1)[0];
    h.wait_log("basic", "INFO] ready\n");
    h.wait_log("basic", "ERROR] to stderr\n");

    let lines = wait_started(&h, "basic", 1);
    assert_eq!(
        started_pids(&lines),
        vec![pid],
        "one start, with the script's pid"
    );
    let started = lines
        .iter()
        .find(|l| l.label == "SYS INFO" && l.text().contains("started (pid "))
        .expect("a started line");
    assert!(
        lines.iter().all(|l| l.id == started.id),
        "every line of the run carries its id {}: {lines:#?}",
        started.id
    );
    assert_eq!(texts(&lines, "ERROR"), vec!["to stderr".to_string()]);

    let st = h.read_status("basic");
    assert_eq!(st["status"], "Running", "{st:#}");
    assert_eq!(st["pid"].as_i64(), Some(i64::from(pid)), "{st:#}");
    assert_eq!(st["name"], "basic", "{st:#}");
    assert_eq!(st["type"], "continuous", "{st:#}");
    assert!(pid_alive(pid));

    assert_eq!(info_value(&lines, "NAME"), "basic");
    assert_eq!(info_value(&lines, "TYPE"), "continuous");
    let run_path = info_value(&lines, "PATH");
    let job_dir = h.job_dir(CONTINUOUS, "basic").canonicalize().unwrap();
    assert!(
        Path::new(&run_path).is_absolute(),
        "WEBJOBS_PATH {run_path}"
    );
    assert_ne!(
        canonical(&run_path),
        job_dir,
        "not is_in_place: the run must start from a private copy"
    );
    assert!(
        !canonical(&run_path).starts_with(&job_dir),
        "the private copy must not be inside the job folder: {run_path}"
    );
    assert_eq!(canonical(&info_value(&lines, "CWD")), canonical(&run_path));
    assert_eq!(info_value(&lines, "HAS_SCRIPT"), "yes");
    assert_eq!(
        canonical(&info_value(&lines, "DATA_PATH")),
        h.log_dir("basic").canonicalize().unwrap()
    );
    assert!(!info_value(&lines, "RUN_ID").is_empty());
    let shutdown = info_value(&lines, "SHUTDOWN_FILE");
    assert!(
        Path::new(&shutdown).is_absolute(),
        "WEBJOBS_SHUTDOWN_FILE {shutdown:?}"
    );
    assert!(
        !Path::new(&shutdown).exists(),
        "the shutdown file must not exist while the job runs"
    );

    h.finish();
    assert!(
        !Path::new(&run_path).exists(),
        "the private copy {run_path} is removed after the run"
    );
}

#[test]
fn in_place_job_runs_in_its_own_folder() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "inplace",
        &[
            ("settings.job", r#"{"is_in_place": true}"#),
            (
                "run.sh",
                "#!/bin/bash\necho \"PATH=$WEBJOBS_PATH\"\necho \"CWD=$(pwd)\"\necho ready\nexec sleep 100000\n",
            ),
        ],
    );
    h.start();
    h.wait_log("inplace", "INFO] ready\n");
    let lines = parse_log(&h.read_log_bytes("inplace"));
    let job_dir = h.job_dir(CONTINUOUS, "inplace").canonicalize().unwrap();
    assert_eq!(canonical(&info_value(&lines, "PATH")), job_dir);
    assert_eq!(canonical(&info_value(&lines, "CWD")), job_dir);
    h.finish();
}

#[test]
fn new_folder_starts_an_edit_restarts_and_removal_stops() {
    let mut h = TestHost::start_new();
    let script = |v: u32| {
        format!(
            "#!/bin/bash\necho $$ >> \"$TEST_STATE/dyn.pids\"\necho \"version {v}\"\nexec sleep 100000\n"
        )
    };
    h.write_job(CONTINUOUS, "dyn", &[("run.sh", &script(1))]);
    let pid1 = h.wait_pids("dyn.pids", 1)[0];
    h.wait_log("dyn", "INFO] version 1\n");
    assert_eq!(h.wait_running("dyn"), pid1);

    h.write_job_file(CONTINUOUS, "dyn", "run.sh", &script(2));
    let pid2 = h.wait_pids("dyn.pids", 2)[1];
    assert_ne!(pid1, pid2);
    h.wait_log("dyn", "INFO] version 2\n");
    h.wait_dead("the first run", pid1);
    h.wait_for("status pid to be the new run", DEADLINE, || {
        let st = h.read_status("dyn");
        st["status"] == "Running" && st["pid"].as_i64() == Some(i64::from(pid2))
    });
    assert_eq!(h.read_pids("dyn.pids").len(), 2, "exactly one restart");

    h.remove_job(CONTINUOUS, "dyn");
    h.wait_dead("the run of the removed job", pid2);
    h.wait_status("dyn", "Stopped");
    let log = h.read_log("dyn");
    assert!(log.contains("INFO] version 1\n") && log.contains("INFO] version 2\n"));
    assert!(
        h.log_dir("dyn").join("job_log.txt").is_file(),
        "job_log.txt stays"
    );
    parse_log(&h.read_log_bytes("dyn"));
    h.finish();
}

#[test]
fn disable_job_stops_the_job_across_a_host_restart_and_removing_it_starts_it() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "sw", &[("run.sh", &sleeper("sw"))]);
    h.write_job(CONTINUOUS, "other", &[("run.sh", &sleeper("other"))]);
    h.start();
    let pid1 = h.wait_pids("sw.pids", 1)[0];
    assert_eq!(h.wait_running("sw"), pid1);

    h.write_job_file(CONTINUOUS, "sw", "disable.job", "");
    h.wait_status("sw", "Stopped");
    h.wait_dead("the disabled job's run", pid1);

    let status = h.stop();
    assert_eq!(status.code(), Some(0), "{}", describe(&status));
    let restarted_at = chrono::Utc::now() - chrono::Duration::milliseconds(5);
    h.start();
    // The other job starting again shows the new host has scanned JOBS.
    h.wait_pids("other.pids", 2);
    h.wait_for(
        "sw status.json rewritten by the new host, saying Stopped",
        DEADLINE,
        || {
            let st = h.read_status("sw");
            let updated = st["updated_at"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            st["status"] == "Stopped" && updated.is_some_and(|u| u >= restarted_at)
        },
    );
    assert_eq!(
        h.read_pids("sw.pids"),
        vec![pid1],
        "a disabled job must not start after a host restart"
    );

    fs::remove_file(h.job_dir(CONTINUOUS, "sw").join("disable.job")).unwrap();
    let pid2 = h.wait_pids("sw.pids", 2)[1];
    h.wait_for("sw Running with its new pid", DEADLINE, || {
        let st = h.read_status("sw");
        st["status"] == "Running" && st["pid"].as_i64() == Some(i64::from(pid2))
    });
    h.finish();
}

#[test]
fn crashing_job_is_logged_and_restarted_with_backoff() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "crash",
        &[(
            "run.sh",
            "#!/bin/bash\necho $$ >> \"$TEST_STATE/crash.pids\"\necho crashing\nexit 3\n",
        )],
    );
    h.start();
    h.wait_for("status.json restarts >= 2", DEADLINE, || {
        h.read_status("crash")["restarts"].as_u64() >= Some(2)
    });
    h.wait_pids("crash.pids", 2);
    let st = h.read_status("crash");
    assert_eq!(st["last_exit"]["code"], 3, "{st:#}");

    let lines = parse_log(&h.read_log_bytes("crash"));
    let sys: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l.label.starts_with("SYS"))
        .map(|l| (l.label.clone(), l.text()))
        .collect();
    let find = |from: usize, label: &str, needle: &str| {
        sys.iter()
            .enumerate()
            .skip(from)
            .find(|(_, (l, t))| l == label && t.contains(needle))
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no {label} line with {needle:?} after #{from}: {sys:#?}"))
    };
    let s1 = find(0, "SYS INFO", "started (pid ");
    let e1 = find(s1, "SYS ERROR", "exited with code 3");
    let r1 = find(e1, "SYS INFO", "restart in 1 s");
    let s2 = find(r1, "SYS INFO", "started (pid ");
    let e2 = find(s2, "SYS ERROR", "exited with code 3");
    find(e2, "SYS INFO", "restart in 2 s");
    let pids = h.read_pids("crash.pids");
    assert_eq!(&started_pids(&lines)[..2], &pids[..2]);
    assert!(
        texts(&lines, "INFO")
            .iter()
            .filter(|t| *t == "crashing")
            .count()
            >= 2
    );
    h.finish();
}

#[test]
fn host_sigterm_lets_a_term_trapping_job_finish_and_exits_0() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "trap",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/trap.pids"
trap 'echo "got TERM" > "$TEST_STATE/trap.marker"; echo "bye from trap"; exit 0' TERM
echo ready
while :; do sleep 0.2; done
"#,
        )],
    );
    h.start();
    let pid = h.wait_pids("trap.pids", 1)[0];
    h.wait_log("trap", "INFO] ready\n");
    let status = h.stop();
    assert_eq!(status.code(), Some(0), "host exit: {}", describe(&status));
    assert_eq!(h.read_state("trap.marker"), "got TERM\n");
    assert!(!pid_alive(pid));
    let lines = parse_log(&h.read_log_bytes("trap"));
    assert!(
        texts(&lines, "INFO").contains(&"bye from trap".to_string()),
        "output written while stopping is kept: {lines:#?}"
    );
    assert!(
        texts(&lines, "SYS INFO")
            .iter()
            .any(|t| t.contains("exited with code 0")),
        "{lines:#?}"
    );
    h.wait_no_leftovers();
    h.wait_for("the host's scratch folder to be removed", DEADLINE, || {
        fs::read_dir(&h.tmp).map(|d| d.count() == 0).unwrap_or(true)
    });
}

#[test]
fn host_sigterm_kills_a_term_ignoring_job_after_its_grace() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "stubborn",
        &[
            ("settings.job", r#"{"stopping_wait_time": 1}"#),
            (
                "run.sh",
                "#!/bin/bash\ntrap '' TERM\necho $$ >> \"$TEST_STATE/stubborn.pids\"\necho ready\nwhile :; do sleep 0.2; done\n",
            ),
        ],
    );
    h.start();
    let pid = h.wait_pids("stubborn.pids", 1)[0];
    h.wait_log("stubborn", "INFO] ready\n");
    let status = h.stop();
    assert_eq!(status.code(), Some(0), "host exit: {}", describe(&status));
    assert!(!pid_alive(pid), "the TERM-ignoring job must be dead");
    let lines = parse_log(&h.read_log_bytes("stubborn"));
    let killed: Vec<String> = texts(&lines, "SYS ERROR")
        .into_iter()
        .filter(|t| t.contains("killed with SIGKILL"))
        .collect();
    assert_eq!(
        killed.len(),
        1,
        "one SYS ERROR `killed with SIGKILL`: {lines:#?}"
    );
    assert!(
        killed[0].contains(" 1 s"),
        "the grace is stopping_wait_time (1 s) from settings.job: {:?}",
        killed[0]
    );
    h.wait_no_leftovers();
}

#[test]
fn shutdown_file_is_created_when_the_job_is_stopped() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "sd",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/sd.pids"
trap 'echo term >> "$TEST_STATE/sd.events"' TERM
echo ready
while [ ! -e "$WEBJOBS_SHUTDOWN_FILE" ]; do sleep 0.1; done
echo "saw $WEBJOBS_SHUTDOWN_FILE" >> "$TEST_STATE/sd.events"
echo "saw the shutdown file"
exit 0
"#,
        )],
    );
    h.start();
    h.wait_pids("sd.pids", 1);
    h.wait_log("sd", "INFO] ready\n");
    assert!(!h.read_state("sd.events").contains("saw"));
    let status = h.stop();
    assert_eq!(status.code(), Some(0), "host exit: {}", describe(&status));
    assert!(
        h.read_state("sd.events").contains("saw /"),
        "the job must see WEBJOBS_SHUTDOWN_FILE appear: events {:?}",
        h.read_state("sd.events")
    );
    assert!(h.read_log("sd").contains("INFO] saw the shutdown file\n"));
    h.wait_no_leftovers();
}

/// The stop sequence signals the run's group and then each process it found, and the
/// main process is in both: it got SIGTERM twice, and a job whose second SIGTERM
/// means "force" (as the host's own) lost its graceful stop.
#[test]
fn a_stopped_run_gets_one_sigterm_not_two() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "once",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/once.pids"
trap 'echo term >> "$TEST_STATE/once.events"' TERM
echo ready
while [ ! -s "$TEST_STATE/once.events" ]; do sleep 0.05; done
# A second SIGTERM sent with the first arrives within this second and is noted.
sleep 1
exit 0
"#,
        )],
    );
    h.start();
    h.wait_pids("once.pids", 1);
    h.wait_log("once", "INFO] ready\n");
    let status = h.stop();
    assert_eq!(status.code(), Some(0), "host exit: {}", describe(&status));
    assert_eq!(h.read_lines("once.events"), ["term"]);
    h.wait_no_leftovers();
}

const FORKER: &str = r#"#!/bin/bash
echo $$ >> "$TEST_STATE/main.pids"
setsid bash -c 'echo $$ >> "$TEST_STATE/escaped.pids"; exec sleep 100000' </dev/null >/dev/null 2>&1 &
sleep 100000 </dev/null >/dev/null 2>&1 &
echo $! >> "$TEST_STATE/plain.pids"
echo ready
exec sleep 100000
"#;

/// Starts the forker job and returns (main, escaped grandchild, plain grandchild).
fn start_forker(h: &mut TestHost) -> (i32, i32, i32) {
    h.write_job(CONTINUOUS, "forker", &[("run.sh", FORKER)]);
    h.start();
    let main = h.wait_pids("main.pids", 1)[0];
    let escaped = h.wait_pids("escaped.pids", 1)[0];
    let plain = h.wait_pids("plain.pids", 1)[0];
    h.wait_log("forker", "INFO] ready\n");
    let main_ids = pgid_and_sid(main).expect("main process alive");
    let escaped_ids = pgid_and_sid(escaped).expect("escaped grandchild alive");
    assert_ne!(
        main_ids.1, escaped_ids.1,
        "the fixture must really leave the run's session"
    );
    assert_ne!(main_ids.0, escaped_ids.0);
    (main, escaped, plain)
}

#[test]
fn stopping_a_job_kills_a_grandchild_that_left_with_setsid() {
    let mut h = TestHost::new();
    let (main, escaped, plain) = start_forker(&mut h);
    h.remove_job(CONTINUOUS, "forker");
    h.wait_dead("main process", main);
    h.wait_dead("grandchild in the run's group", plain);
    h.wait_dead("grandchild that called setsid", escaped);
    h.wait_status("forker", "Stopped");
    h.finish();
}

#[test]
fn sigkill_of_the_host_kills_every_process_of_its_runs() {
    let mut h = TestHost::new();
    let (main, escaped, plain) = start_forker(&mut h);
    h.kill9();
    h.wait_dead("main process", main);
    h.wait_dead("grandchild in the run's group", plain);
    h.wait_dead("grandchild that called setsid", escaped);
    h.wait_no_leftovers();
}

#[test]
fn closing_stdout_keeps_the_job_running_and_its_stderr_flowing() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "closer",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/closer.pids"
echo "last stdout line"
exec >&-
i=0
while :; do i=$((i+1)); echo "tick $i" >&2; sleep 0.1; done
"#,
        )],
    );
    h.start();
    let pid = h.wait_pids("closer.pids", 1)[0];
    h.wait_log("closer", "ERROR] tick 10\n");
    assert!(pid_alive(pid), "closing stdout must not end the run");
    let lines = wait_started(&h, "closer", 1);
    assert_eq!(started_pids(&lines), vec![pid], "no restart: {lines:#?}");
    assert!(texts(&lines, "INFO").contains(&"last stdout line".to_string()));
    assert!(
        !lines.iter().any(|l| l.text().contains("exited")),
        "{lines:#?}"
    );
    let st = h.read_status("closer");
    assert_eq!(st["status"], "Running", "{st:#}");
    assert_eq!(st["pid"].as_i64(), Some(i64::from(pid)));
    h.finish();
}

#[test]
fn exit_while_a_background_grandchild_holds_the_pipe_still_restarts() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "holder",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/holder.pids"
sleep 100000 &
echo $! >> "$TEST_STATE/holder-child.pids"
echo "main exits now"
exit 0
"#,
        )],
    );
    h.start();
    let pids = h.wait_pids("holder.pids", 2);
    let child = h.read_pids("holder-child.pids")[0];
    h.wait_dead("the first run's background grandchild", child);
    let lines = wait_started(&h, "holder", 2);
    assert!(
        texts(&lines, "SYS INFO")
            .iter()
            .any(|t| t.contains("exited with code 0")),
        "{lines:#?}"
    );
    assert_eq!(&started_pids(&lines)[..2], &pids[..2]);
    h.finish();
}

/// The host skips the full process-table read at a run's end when the run's group is
/// empty and nothing new was reparented to it; a grandchild that left the group with
/// setsid, whose parent then exited, is such a reparented process and must still be
/// found and ended.
#[test]
fn exit_ends_a_grandchild_that_left_the_group_and_was_reparented_to_the_host() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "escaper",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/escaper.pids"
setsid bash -c 'echo $$ >> "$TEST_STATE/escaper-child.pids"; exec sleep 100000' </dev/null >/dev/null 2>&1 &
while [ ! -s "$TEST_STATE/escaper-child.pids" ]; do sleep 0.01; done
exit 0
"#,
        )],
    );
    h.start();
    let escaped = h.wait_pids("escaper-child.pids", 1)[0];
    h.wait_dead("the first run's setsid grandchild", escaped);
    let lines = wait_started(&h, "escaper", 2);
    assert!(
        texts(&lines, "SYS INFO")
            .iter()
            .any(|t| t.contains("leftover process")),
        "the clean-up is noted: {lines:#?}"
    );
    h.finish();
}

#[test]
fn exit_while_an_unfindable_process_holds_the_pipe_still_restarts() {
    let mut h = TestHost::new();
    // `setsid env -i` leaves the group and wipes the environment (run marker and
    // TEST_STATE included): the host cannot find it, and it holds the pipes. The
    // sandbox kills it by the pid in `unfindable.kill`.
    h.write_job(
        CONTINUOUS,
        "unfindable",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/unfindable.pids"
SLEEP=$(command -v sleep)
setsid env -i "$SLEEP" 100000 &
echo $! >> "$TEST_STATE/unfindable.kill"
echo "main exits now"
exit 0
"#,
        )],
    );
    h.start();
    h.wait_pids("unfindable.pids", 2);
    let lines = wait_started(&h, "unfindable", 2);
    let sys: Vec<String> = lines
        .iter()
        .filter(|l| l.label.starts_with("SYS"))
        .map(LogLine::text)
        .collect();
    let exited = sys
        .iter()
        .position(|t| t.contains("exited with code 0"))
        .unwrap_or_else(|| panic!("the exit is noted: {sys:#?}"));
    assert!(
        sys[exited..].iter().any(|t| t.contains("started (pid ")),
        "then the job restarts: {sys:#?}"
    );
    h.finish();
}

/// Waits until the job log has at least `n` "started (pid N)" lines (the host writes
/// that line after the spawn, so a script's own pid file can be ahead of it) and
/// returns the parsed log.
fn wait_started(h: &TestHost, name: &str, n: usize) -> Vec<LogLine> {
    let mut lines = Vec::new();
    h.wait_for(
        &format!("{n} started lines in {name}'s log"),
        DEADLINE,
        || {
            lines = parse_log(&h.read_log_bytes(name));
            started_pids(&lines).len() >= n
        },
    );
    lines
}

/// Waits until the job log has at least `n` INFO lines and returns the parsed log.
fn wait_info_lines(h: &TestHost, name: &str, n: usize) -> Vec<LogLine> {
    let mut lines = Vec::new();
    h.wait_for(&format!("{n} INFO lines in {name}'s log"), DEADLINE, || {
        lines = parse_log(&h.read_log_bytes(name));
        lines.iter().filter(|l| l.label == "INFO").count() >= n
    });
    lines
}

#[test]
fn a_long_line_without_newline_is_split_into_64k_pieces() {
    let mut h = TestHost::new();
    let big: Vec<u8> = (0..200 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    h.write_job_modes(
        CONTINUOUS,
        "long",
        &[
            ("big.txt", &big, 0o644),
            (
                "run.sh",
                b"#!/bin/bash\ncat big.txt\nexec >&-\necho 'stdout closed' >&2\nexec sleep 100000\n",
                0o755,
            ),
        ],
    );
    h.start();
    let lines = wait_info_lines(&h, "long", 4);
    let info: Vec<&LogLine> = lines.iter().filter(|l| l.label == "INFO").collect();
    let sizes: Vec<usize> = info.iter().map(|l| l.text.len()).collect();
    assert_eq!(sizes, vec![65536, 65536, 65536, 8192]);
    let joined: Vec<u8> = info.iter().flat_map(|l| l.text.clone()).collect();
    assert!(joined == big, "the pieces concatenate to the input");
    h.finish();
}

/// Issue 2's bad input: a 100 MB line with no newline at all. It arrives as 64 KiB
/// log lines (the last one shorter) that concatenate to every byte, and the host keeps
/// going.
#[test]
fn a_hundred_megabyte_line_without_newline_is_split_and_complete() {
    const TOTAL: usize = 100_000_000;
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "huge",
        &[
            (
                "run.sh",
                "#!/bin/bash\nhead -c 100000000 /dev/zero | tr '\\0' x\nexec >&-\nexec sleep 100000\n",
            ),
            // No rotation: the whole line stays in one file to be checked.
            ("settings.job", r#"{"log_max_bytes": 400000000}"#),
        ],
    );
    h.start();
    let pieces = TOTAL.div_ceil(65536);
    // Every INFO line is a 42-byte prefix, the piece and a newline.
    let info_bytes = (TOTAL + pieces * 43) as u64;
    let log = h.logs.join("continuous/huge/job_log.txt");
    h.wait_for(
        "the whole 100 MB line in the log",
        Duration::from_secs(120),
        || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) >= info_bytes,
    );
    let lines = parse_log(&h.read_log_bytes("huge"));
    let info: Vec<&LogLine> = lines.iter().filter(|l| l.label == "INFO").collect();
    assert_eq!(info.len(), pieces);
    assert!(info[..pieces - 1].iter().all(|l| l.text.len() == 65536));
    assert_eq!(info[pieces - 1].text.len(), TOTAL - (pieces - 1) * 65536);
    assert!(info.iter().all(|l| l.text.iter().all(|&b| b == b'x')));
    h.finish();
}

#[test]
fn non_utf8_bytes_pass_through_verbatim() {
    let mut h = TestHost::new();
    let odd: &[u8] = b"\x00\x01\x7f\x80\xfe\xff\r\t\x1b[0m\xc3\x28 end";
    let mut data = b"plain\n".to_vec();
    data.extend_from_slice(odd);
    data.extend_from_slice("\n\u{e9} \u{fc} \u{65e5}\u{672c}\nlast without newline".as_bytes());
    h.write_job_modes(
        CONTINUOUS,
        "bin",
        &[
            ("bin.dat", &data, 0o644),
            (
                "run.sh",
                b"#!/bin/bash\ncat bin.dat\nexec >&-\necho 'stdout closed' >&2\nexec sleep 100000\n",
                0o755,
            ),
        ],
    );
    h.start();
    let lines = wait_info_lines(&h, "bin", 4);
    let info: Vec<Vec<u8>> = lines
        .iter()
        .filter(|l| l.label == "INFO")
        .map(|l| l.text.clone())
        .collect();
    let want: Vec<Vec<u8>> = vec![
        b"plain".to_vec(),
        odd.to_vec(),
        "\u{e9} \u{fc} \u{65e5}\u{672c}".as_bytes().to_vec(),
        b"last without newline".to_vec(),
    ];
    assert_eq!(info, want);
    h.finish();
}

#[test]
fn two_hundred_thousand_lines_arrive_complete_and_in_order() {
    const N: usize = 200_000;
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "flood",
        &[(
            "run.sh",
            "#!/bin/bash\nseq 1 200000\necho done >&2\nexec sleep 100000\n",
        )],
    );
    h.start();
    let last = format!("INFO] {N}\n");
    h.wait_for(
        "the last numbered line in the log",
        Duration::from_secs(60),
        || {
            // Cheap: only the tail of the current file.
            let bytes = h.read_log_bytes("flood");
            let tail = &bytes[bytes.len().saturating_sub(4096)..];
            String::from_utf8_lossy(tail).contains(&last)
        },
    );
    let lines = parse_log(&h.read_log_all("flood"));
    let info = texts(&lines, "INFO");
    assert_eq!(info.len(), N, "every line arrives, none twice");
    for (i, t) in info.iter().enumerate() {
        assert_eq!(
            *t,
            (i + 1).to_string(),
            "line {} out of order or altered",
            i + 1
        );
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.label == "SYS ERROR" && l.text().contains("lost")),
        "no loss reported"
    );
    h.finish();
}

#[test]
fn log_rotation_keeps_log_keep_files() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "rot",
        &[
            ("settings.job", r#"{"log_max_bytes": 65536, "log_keep": 2}"#),
            (
                "run.sh",
                "#!/bin/bash\nseq 1 20000\necho done >&2\nexec sleep 100000\n",
            ),
        ],
    );
    h.start();
    h.wait_for("the last numbered line in the kept logs", DEADLINE, || {
        String::from_utf8_lossy(&h.read_log_all("rot")).contains("INFO] 20000\n")
    });
    let dir = h.log_dir("rot");
    assert!(dir.join("job_log.1.txt").is_file(), "job_log.1.txt exists");
    assert!(dir.join("job_log.2.txt").is_file(), "job_log.2.txt exists");
    assert!(
        !dir.join("job_log.3.txt").exists(),
        "log_keep 2: no job_log.3.txt"
    );
    let lines = parse_log(&h.read_log_all("rot"));
    assert!(
        texts(&lines, "SYS INFO")
            .iter()
            .any(|t| t.contains("rotated")),
        "a SYS INFO line notes the rotation"
    );
    // What is kept is an unbroken, ordered tail of the output.
    let nums: Vec<u64> = texts(&lines, "INFO")
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(nums.last(), Some(&20000));
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "kept lines are consecutive"
    );
    assert!(nums.len() < 20000, "older lines were rotated away");
    h.finish();
}

#[test]
fn log_write_failure_is_counted_and_reported_once_writing_works_again() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "wf",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/wf.pids"
line=$(printf 'x%.0s' {1..1000})
i=0
while :; do
  i=$((i+1))
  for j in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do echo "tick $i.$j $line"; done
  echo $i >> "$TEST_STATE/wf.count"
  sleep 0.05
done
"#,
        )],
    );
    // A folder where the log file should be: every write fails.
    let blocker = h.log_dir("wf").join("job_log.txt");
    fs::create_dir_all(&blocker).unwrap();
    h.start();
    let pid = h.wait_pids("wf.pids", 1)[0];
    h.wait_for("status.json log_dropped_lines > 0", DEADLINE, || {
        h.read_status("wf")["log_dropped_lines"].as_u64() > Some(0)
    });
    // 40 rounds of 16 KiB: far more than a pipe holds, so the host is draining.
    h.wait_for("the job to keep printing (40 rounds)", DEADLINE, || {
        h.read_lines("wf.count").len() >= 40
    });
    assert!(pid_alive(pid), "the job keeps running while its log fails");
    assert_eq!(h.read_pids("wf.pids"), vec![pid], "and is not restarted");
    assert_eq!(h.read_status("wf")["status"], "Running");

    fs::remove_dir(&blocker).unwrap();
    let mut lines = Vec::new();
    h.wait_for(
        "a SYS ERROR line about lost lines, then new output",
        DEADLINE,
        || {
            if !blocker.is_file() {
                return false;
            }
            lines = parse_log(&h.read_log_bytes("wf"));
            let lost = lines
                .iter()
                .position(|l| l.label == "SYS ERROR" && l.text().contains("lost"));
            lost.is_some_and(|i| lines[i..].iter().any(|l| l.label == "INFO"))
        },
    );
    let lost = lines
        .iter()
        .find(|l| l.label == "SYS ERROR" && l.text().contains("lost"))
        .unwrap();
    assert!(
        lost.text().chars().any(|c| c.is_ascii_digit()),
        "the loss report says how much: {:?}",
        lost.text()
    );
    assert_eq!(h.read_pids("wf.pids"), vec![pid]);
    h.finish();
}
