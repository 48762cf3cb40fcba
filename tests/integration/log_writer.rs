//! Logs written by the host's log writer thread (`src/logsink/writer.rs`): what a
//! reader may count on although the lines reach the disk after the async workers hand
//! them over. A status that says a job stopped comes after the notes that led to it,
//! and the host's exit comes after everything its jobs printed.

use crate::support::client::*;
use crate::support::*;

/// The API's "Stopped" is published after the run's stop and exit notes are on disk:
/// read at once, not polled.
#[test]
fn a_continuous_jobs_stop_notes_are_on_disk_when_its_status_says_stopped() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "noted", &[("run.sh", &sleeper("noted"))]);
    h.start();
    let api = connect(&h);
    let pid = h.wait_running("noted");
    let (code, body) = api.post_json("/api/continuouswebjobs/noted/stop");
    assert_eq!(code, 200, "{body:#}");
    api.wait_continuous_status(&h, "noted", "Stopped");
    let lines = parse_log(&h.read_log_bytes("noted"));
    let sys = texts(&lines, "SYS INFO");
    assert!(
        sys.iter().any(|t| t.starts_with("stopping (")),
        "the stop note: {lines:#?}"
    );
    let exit = lines
        .iter()
        .rposition(|l| l.text().starts_with("killed by signal 15"));
    let stop = lines
        .iter()
        .position(|l| l.text().starts_with("stopping ("));
    assert!(
        exit.is_some() && stop < exit,
        "the exit note, after the stop note: {lines:#?}"
    );
    assert!(!pid_alive(pid));
    h.finish();
}

/// A run that prints a flood as it is told to stop: the host exits only once every
/// line of it, and the notes after, are in `job_log.txt`.
#[test]
fn everything_a_continuous_job_printed_is_in_its_log_when_the_host_has_exited() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "lastwords",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/lastwords.pids"
# The stop may signal the shell more than once: the flood is written once, whole.
trap 'trap "" TERM; seq 1 20000; echo "the end"; exit 0' TERM
echo ready
while :; do sleep 0.2; done
"#,
        )],
    );
    h.start();
    let pid = h.wait_pids("lastwords.pids", 1)[0];
    h.wait_log("lastwords", "INFO] ready\n");
    let status = h.stop();
    assert_eq!(status.code(), Some(0), "host exit: {}", describe(&status));
    assert!(!pid_alive(pid));
    let lines = parse_log(&h.read_log_all("lastwords"));
    assert_numbered(&lines, 20000);
    let end = lines.iter().position(|l| l.text() == "the end");
    let exit = lines
        .iter()
        .position(|l| l.text().starts_with("exited with code 0"));
    assert!(
        end.is_some() && end < exit,
        "the last line, then the exit note: {:#?}",
        &lines[lines.len().saturating_sub(5)..]
    );
}

/// A job log nobody can write: a FIFO nobody reads, so the writer thread hangs opening
/// it, as it would on a hung network LOGS. That holds the logs and nothing else: the
/// API answers, the job is stopped on request, and once the log can be written again
/// every line the job printed arrives, whole and in order.
#[test]
fn a_hung_job_log_holds_the_logs_and_not_the_api_or_the_job() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "stuck",
        &[(
            "run.sh",
            r#"#!/bin/bash
echo $$ >> "$TEST_STATE/stuck.pids"
seq 1 3000
exec sleep 100000
"#,
        )],
    );
    let dir = h.log_dir("stuck");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("job_log.txt");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    h.start();
    let api = connect(&h);
    let pid = h.wait_pids("stuck.pids", 1)[0];
    let (code, body) = api.get_json("/api/continuouswebjobs/stuck");
    assert_eq!(code, 200, "{body:#}");
    let (code, body) = api.get_json("/api/continuouswebjobs");
    assert_eq!(code, 200, "{body:#}");
    let (code, body) = api.post_json("/api/continuouswebjobs/stuck/stop");
    assert_eq!(code, 200, "{body:#}");
    api.wait_continuous_status(&h, "stuck", "Stopped");
    h.wait_dead("the stopped job", pid);
    // The log can be written again: a reader takes the FIFO to its end, which comes
    // when the host, exiting, closes it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(&fifo));
    });
    let status = h.stop();
    assert_eq!(status.code(), Some(0), "host exit: {}", describe(&status));
    let text = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the log's reader reached its end")
        .unwrap();
    let lines = parse_log(&text);
    assert_numbered(&lines, 3000);
    let sys = texts(&lines, "SYS INFO");
    assert!(
        sys.iter().any(|t| t.starts_with("stopping (")),
        "the stop note: {sys:#?}"
    );
}

/// The job's output lines that are numbers are exactly 1..=`count`, in order (what
/// `seq 1 COUNT` printed), whole.
fn assert_numbered(lines: &[LogLine], count: usize) {
    let numbers: Vec<String> = texts(lines, "INFO")
        .into_iter()
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let want: Vec<String> = (1..=count).map(|n| n.to_string()).collect();
    if numbers != want {
        let first_bad = numbers.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "{} numbered lines of {count}, first difference at {first_bad:?}: {:?}",
            numbers.len(),
            first_bad.map(|i| &numbers[i.saturating_sub(2)..(i + 3).min(numbers.len())])
        );
    }
}
