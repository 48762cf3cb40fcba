//! The command line against a running host: `trigger` (argv bytes, `--wait`, exit
//! code), `list`, `status`, `start`/`stop`, `logs` (tail, follow, a run's output),
//! `history`, exit codes, and run ids of triggers that arrive together.
//!
//! The CLI finds the host through `--logs LOGS` (the URL and token files the host
//! writes there). The helpers here are shared with `triggered.rs`.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;
use crate::triggered::{read_run, run_ids, wait_run_ended};

// ----- helpers (shared with triggered.rs) ----------------------------------------

/// A finished `jobhost` command.
pub(crate) struct CliOut {
    pub code: Option<i32>,
    pub stdout_bytes: Vec<u8>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    /// stdout and stderr, for messages.
    pub fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `jobhost ARGS` with a clean environment (no JOBHOST_*), dying with the test.
fn command(args: &[OsString]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("JOBHOST_") {
            cmd.env_remove(k);
        }
    }
    // SAFETY: runs between fork and exec in the child; prctl(2) is async-signal-safe
    // and the closure allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    cmd
}

/// Runs `jobhost ARGS` to completion, bounded by a generous deadline.
pub(crate) fn jobhost(sb: &Sandbox, args: &[OsString]) -> CliOut {
    let mut child = command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting jobhost");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for jobhost") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`jobhost {}` did not finish within 60 s\n{}",
                show_args(args),
                sb.dump()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout_bytes = out_t.join().expect("stdout reader");
    let stderr = String::from_utf8_lossy(&err_t.join().expect("stderr reader")).into_owned();
    CliOut {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stdout_bytes,
        stderr,
    }
}

fn show_args(args: &[OsString]) -> String {
    args.iter()
        .map(|a| format!("{:?}", a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `SUB --logs LOGS REST...`: how a user on the host's machine reaches it.
pub(crate) fn cli_args(sb: &Sandbox, sub: &str, rest: &[OsString]) -> Vec<OsString> {
    let mut args = vec![
        OsString::from(sub),
        OsString::from("--logs"),
        sb.logs.clone().into_os_string(),
    ];
    args.extend(rest.iter().cloned());
    args
}

pub(crate) fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// `jobhost SUB --logs LOGS REST...`.
pub(crate) fn cli(sb: &Sandbox, sub: &str, rest: &[&str]) -> CliOut {
    jobhost(sb, &cli_args(sb, sub, &os(rest)))
}

/// Waits until the host has written its URL and token and answers `jobhost list`.
/// (Before the URL file exists the CLI would try its default address, which may be
/// anything on a shared machine.)
pub(crate) fn wait_api(sb: &Sandbox) {
    wait_api_instance(sb, None);
}

pub(crate) fn wait_api_instance(sb: &Sandbox, instance: Option<&str>) {
    let url = match instance {
        Some(i) => sb.logs.join(format!(".jobhost-url-{i}")),
        None => sb.logs.join(".jobhost-url"),
    };
    sb.wait_for("the host's URL and token files in LOGS", DEADLINE, || {
        fs::read_to_string(&url).is_ok_and(|s| !s.trim().is_empty())
            && fs::read_to_string(sb.logs.join(".jobhost-token"))
                .is_ok_and(|s| !s.trim().is_empty())
    });
    let mut last = String::new();
    let mut args = cli_args(sb, "list", &[]);
    if let Some(i) = instance {
        args.extend(os(&["--instance", i]));
    }
    sb.wait_for("`jobhost list` to answer", DEADLINE, || {
        let out = jobhost(sb, &args);
        last = out.all();
        out.code == Some(0)
    });
}

/// `jobhost status NAME --json`, parsed; panics unless it exits 0.
pub(crate) fn status_json(sb: &Sandbox, name: &str) -> Value {
    let out = cli(sb, "status", &[name, "--json"]);
    assert_eq!(
        out.code,
        Some(0),
        "jobhost status {name} --json: {}",
        out.all()
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", out.all()))
}

/// Waits until `jobhost status NAME --json` satisfies `pred`; returns it.
pub(crate) fn wait_status_json(
    sb: &Sandbox,
    name: &str,
    desc: &str,
    mut pred: impl FnMut(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    sb.wait_for(&format!("{name}: {desc}"), DEADLINE, || {
        let out = cli(sb, "status", &[name, "--json"]);
        if out.code != Some(0) {
            return false;
        }
        last = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        pred(&last)
    });
    last
}

/// `jobhost trigger NAME`: asserts success and returns the new run id it prints.
pub(crate) fn trigger(sb: &Sandbox, name: &str) -> String {
    let out = cli(sb, "trigger", &[name]);
    assert_eq!(out.code, Some(0), "jobhost trigger {name}: {}", out.all());
    let id = out.stdout.trim().to_string();
    assert!(
        id.len() == 18 && id.bytes().all(|b| b.is_ascii_digit()),
        "jobhost trigger prints the 18-digit run id: {}",
        out.all()
    );
    id
}

/// A `jobhost` process left running (`logs -f`), killed and reaped on drop; its
/// stdout arrives line by line on a channel.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Streaming {
    fn spawn(args: &[OsString]) -> Streaming {
        let mut child = command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting jobhost");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n') {
                let Ok(line) = line else { break };
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        Streaming { child, lines: rx }
    }

    /// Reads lines until one contains `needle`; returns every line read.
    fn read_until(&mut self, sb: &Sandbox, needle: &str, seen: &mut Vec<String>) {
        let start = Instant::now();
        while !seen.iter().any(|l| l.contains(needle)) {
            if start.elapsed() > DEADLINE {
                panic!(
                    "the follower never printed a line with {needle:?}; it printed {seen:#?}\n{}",
                    sb.dump()
                );
            }
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "the follower exited ({:?}) before printing {needle:?}; it printed {seen:#?}\n{}",
                    self.child.try_wait(),
                    sb.dump()
                ),
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_running_pid(h: &TestHost, name: &str, not: Option<i32>) -> i32 {
    let mut pid = 0;
    h.wait_for(&format!("{name} Running with a new pid"), DEADLINE, || {
        let st = h.read_status(name);
        pid = st["pid"].as_i64().unwrap_or(0) as i32;
        st["status"] == "Running" && pid > 0 && Some(pid) != not
    });
    pid
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ----- tests ---------------------------------------------------------------------

#[test]
fn trigger_wait_passes_argv_bytes_exactly_streams_output_and_returns_the_exit_code() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "argv",
        &[(
            "run.sh",
            r#"#!/bin/bash
for a in "$@"; do
  printf '%s' "$a" | od -An -v -tx1 | tr -d ' \n' >> "$TEST_STATE/argv.hex"
  echo >> "$TEST_STATE/argv.hex"
done
echo "got $# args"
echo "complaint on stderr" >&2
exit 7
"#,
        )],
    );
    h.start();
    wait_api(&h);
    let args: Vec<OsString> = vec![
        "a".into(),
        "b c".into(),
        "$(echo hi)".into(),
        "it's".into(),
        "x\ny".into(),
        OsString::from_vec(vec![0xff, 0xfe, b'z', 0x80]),
        "".into(),
        "--not-a-flag".into(),
        "\"dq\" \\ `id` *".into(),
    ];
    let mut rest = os(&["argv", "--wait", "--"]);
    rest.extend(args.iter().cloned());
    let out = jobhost(&h, &cli_args(&h, "trigger", &rest));
    assert_eq!(
        out.code,
        Some(7),
        "trigger --wait exits with the run's exit code: {}",
        out.all()
    );
    let want: Vec<String> = args.iter().map(|a| hex(a.as_bytes())).collect();
    assert_eq!(
        h.read_lines("argv.hex"),
        want,
        "each argument arrives as its own argv entry, byte for byte (hex per line)"
    );
    let lines = parse_log(&out.stdout_bytes);
    assert!(
        texts(&lines, "INFO").contains(&format!("got {} args", args.len())),
        "the run's stdout is streamed: {}",
        out.all()
    );
    assert!(
        texts(&lines, "ERROR").contains(&"complaint on stderr".to_string()),
        "the run's stderr lines are streamed too: {}",
        out.all()
    );
    let ids = run_ids(&h, "argv");
    assert_eq!(ids.len(), 1, "one run: {ids:?}");
    let rec = read_run(&h, "argv", &ids[0]);
    assert_eq!(rec["status"], "Failed", "{rec:#}");
    assert_eq!(rec["exit_code"], 7, "{rec:#}");
    assert_eq!(rec["trigger"], "manual", "{rec:#}");
    assert_eq!(
        rec["arguments"].as_array().map(Vec::len),
        Some(args.len()),
        "{rec:#}"
    );
    assert_eq!(rec["arguments"][1], "b c", "{rec:#}");
    h.finish();
}

#[test]
fn list_shows_every_job_with_type_and_status_and_json_has_kudu_fields() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "web", &[("run.sh", &sleeper("web"))]);
    h.write_job(
        CONTINUOUS,
        "parked",
        &[("run.sh", &sleeper("parked")), ("disable.job", "")],
    );
    h.write_job(
        TRIGGERED,
        "report",
        &[
            ("settings.job", r#"{"schedule": "0 0 3 * * *"}"#),
            ("run.sh", "#!/bin/bash\necho report\n"),
        ],
    );
    h.start();
    let pid = h.wait_pids("web.pids", 1)[0];
    assert_eq!(h.wait_running("web"), pid);
    h.wait_status("parked", "Stopped");
    wait_api(&h);

    let out = cli(&h, "list", &[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let row = |name: &str| -> String {
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {}", out.all()))
            .to_string()
    };
    let web = row("web");
    assert!(
        web.contains("continuous") && web.contains("Running"),
        "{web:?}"
    );
    let parked = row("parked");
    assert!(
        parked.contains("continuous") && parked.contains("Stopped"),
        "{parked:?}"
    );
    let report = row("report");
    assert!(
        report.contains("triggered") && report.contains("0 0 3 * * *"),
        "{report:?}"
    );
    assert!(
        !report.contains("Error") && !report.contains("Running"),
        "an idle triggered job: {report:?}"
    );

    let out = cli(&h, "list", &["--json"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let jobs: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("list --json is not JSON ({e}): {}", out.all()));
    let jobs = jobs.as_array().expect("list --json is an array");
    assert_eq!(jobs.len(), 3, "{jobs:#?}");
    for j in jobs {
        for k in ["name", "type", "url", "run_command"] {
            assert!(j[k].is_string(), "{k} is a string: {j:#}");
        }
        assert!(j["settings"].is_object(), "{j:#}");
        assert_eq!(j["using_sdk"], false, "{j:#}");
        assert!(j.get("error").is_some(), "{j:#}");
        let url = j["url"].as_str().unwrap();
        let name = j["name"].as_str().unwrap();
        assert!(
            url.starts_with("http://") && url.ends_with(&format!("webjobs/{name}")),
            "{url}"
        );
    }
    let by_name = |n: &str| jobs.iter().find(|j| j["name"] == n).unwrap();
    let web = by_name("web");
    assert_eq!(web["type"], "continuous");
    assert_eq!(web["status"], "Running");
    assert!(web["detailed_status"].is_string() && web["log_url"].is_string());
    assert!(web["run_command"].as_str().unwrap().contains("run.sh"));
    assert_eq!(by_name("parked")["status"], "Stopped");
    let report = by_name("report");
    assert_eq!(report["type"], "triggered");
    assert_eq!(report["settings"]["schedule"], "0 0 3 * * *");
    assert!(report.get("latest_run").is_some(), "{report:#}");
    assert!(report["history_url"].is_string() && report["scheduler_logs_url"].is_string());
    h.finish();
}

#[test]
fn status_shows_pid_of_a_running_job_and_says_disabled_for_a_disabled_one() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "svc", &[("run.sh", &sleeper("svc"))]);
    h.write_job(
        CONTINUOUS,
        "off",
        &[("run.sh", &sleeper("off")), ("disable.job", "")],
    );
    h.start();
    let pid = h.wait_pids("svc.pids", 1)[0];
    assert_eq!(h.wait_running("svc"), pid);
    h.wait_status("off", "Stopped");
    wait_api(&h);

    let out = cli(&h, "status", &["svc"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("Running"), "{}", out.all());
    assert!(
        out.stdout
            .split(|c: char| !c.is_ascii_digit())
            .any(|w| w == pid.to_string()),
        "status names the pid {pid}: {}",
        out.all()
    );
    let j = status_json(&h, "svc");
    assert_eq!(j["status"], "Running", "{j:#}");
    assert_eq!(j["pid"].as_i64(), Some(i64::from(pid)), "{j:#}");

    let out = cli(&h, "status", &["off"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.to_lowercase().contains("disabled"),
        "status of a disabled job says so: {}",
        out.all()
    );
    assert!(out.stdout.contains("Stopped"), "{}", out.all());
    let j = status_json(&h, "off");
    assert_eq!(j["status"], "Stopped", "{j:#}");
    assert_eq!(j["disabled"], true, "{j:#}");
    assert!(!h.state_exists("off.pids"), "a disabled job never ran");
    h.finish();
}

#[test]
fn stop_creates_disable_job_and_start_removes_it_and_runs_the_job_again() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "flip", &[("run.sh", &sleeper("flip"))]);
    h.start();
    let pid1 = h.wait_pids("flip.pids", 1)[0];
    assert_eq!(h.wait_running("flip"), pid1);
    wait_api(&h);
    let disable = h.job_dir(CONTINUOUS, "flip").join("disable.job");

    let out = cli(&h, "stop", &["flip"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(disable.exists(), "stop creates disable.job");
    h.wait_status("flip", "Stopped");
    h.wait_dead("the stopped job's run", pid1);
    wait_status_json(&h, "flip", "status Stopped", |j| j["status"] == "Stopped");

    let out = cli(&h, "start", &["flip"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!disable.exists(), "start removes disable.job");
    let pid2 = h.wait_pids("flip.pids", 2)[1];
    assert_ne!(pid1, pid2);
    assert_eq!(wait_running_pid(&h, "flip", Some(pid1)), pid2);
    let j = wait_status_json(&h, "flip", "status Running", |j| j["status"] == "Running");
    assert_eq!(j["pid"].as_i64(), Some(i64::from(pid2)), "{j:#}");
    h.finish();
}

#[test]
fn logs_prints_the_last_lines_follows_new_ones_and_shows_a_run() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "talk",
        &[(
            "run.sh",
            r#"#!/bin/bash
for i in 1 2 3 4 5; do echo "line $i"; done
echo $$ >> "$TEST_STATE/talk.pids"
while [ ! -e "$TEST_STATE/more" ]; do sleep 0.1; done
echo "late line"
exec sleep 100000
"#,
        )],
    );
    h.write_job(
        TRIGGERED,
        "tj",
        &[("run.sh", "#!/bin/bash\necho \"run says $WEBJOBS_RUN_ID\"\n")],
    );
    h.start();
    h.wait_pids("talk.pids", 1);
    h.wait_log("talk", "INFO] line 5\n");
    wait_api(&h);

    // The log is still until the test creates `more`.
    let out = cli(&h, "logs", &["talk", "-n", "2"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let log = h.read_log_bytes("talk");
    let text = String::from_utf8_lossy(&log);
    let last2: Vec<&str> = text.lines().rev().take(2).collect::<Vec<_>>();
    let want = format!("{}\n{}\n", last2[1], last2[0]);
    assert_eq!(
        out.stdout, want,
        "-n 2 prints the last 2 lines of job_log.txt"
    );
    assert!(want.contains("INFO] line 5"), "{want}");

    let mut follow = Streaming::spawn(&cli_args(&h, "logs", &os(&["talk", "-f"])));
    let mut seen = Vec::new();
    follow.read_until(&h, "INFO] line 5", &mut seen);
    fs::write(h.state_path("more"), "").unwrap();
    follow.read_until(&h, "INFO] late line", &mut seen);
    drop(follow);
    let framed: Vec<LogLine> = seen
        .iter()
        .map(|l| parse_line(l.as_bytes()).unwrap_or_else(|| panic!("not a log line: {l:?}")))
        .collect();
    assert_eq!(
        texts(&framed, "INFO"),
        vec![
            "line 1",
            "line 2",
            "line 3",
            "line 4",
            "line 5",
            "late line"
        ],
        "-f prints the log, then the new line, in order and once"
    );

    let id1 = trigger(&h, "tj");
    wait_run_ended(&h, "tj", &id1);
    let id2 = trigger(&h, "tj");
    wait_run_ended(&h, "tj", &id2);
    let out = cli(&h, "logs", &["tj", "--run", &id1]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains(&format!("INFO] run says {id1}\n")),
        "{}",
        out.all()
    );
    assert!(!out.stdout.contains(&id2), "only run {id1}: {}", out.all());
    assert_eq!(
        out.stdout_bytes,
        fs::read(
            h.logs
                .join(TRIGGERED)
                .join("tj")
                .join(&id1)
                .join("output_log.txt")
        )
        .unwrap(),
        "--run prints that run's output_log.txt"
    );
    let out = cli(&h, "logs", &["tj"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains(&format!("INFO] run says {id2}\n")),
        "without --run: the latest run: {}",
        out.all()
    );
    h.finish();
}

#[test]
fn history_lists_runs_newest_first_and_json_has_runs() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "hist",
        &[(
            "run.sh",
            "#!/bin/bash\necho \"arg ${1:-0}\"\nexit ${1:-0}\n",
        )],
    );
    h.start();
    wait_api(&h);
    let mut ids = Vec::new();
    for code in ["0", "3", "0"] {
        let out = cli(&h, "trigger", &["hist", "--", code]);
        assert_eq!(out.code, Some(0), "{}", out.all());
        let id = out.stdout.trim().to_string();
        wait_run_ended(&h, "hist", &id);
        ids.push(id);
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    let out = cli(&h, "history", &["hist"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first().is_some_and(|f| f.len() == 18))
        .collect();
    let listed: Vec<String> = rows.iter().map(|r| r[0].to_string()).collect();
    assert_eq!(listed, newest_first, "newest first: {}", out.all());
    let want_status = ["Success", "Failed", "Success"];
    for (row, status) in rows.iter().zip(want_status) {
        assert!(row.contains(&"manual"), "{row:?}");
        assert!(row.contains(&status), "{row:?} should say {status}");
    }

    let out = cli(&h, "history", &["hist", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("history --json is not JSON ({e}): {}", out.all()));
    let runs = v["runs"].as_array().expect("{\"runs\": [...]}");
    let json_ids: Vec<String> = runs
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(json_ids, newest_first);
    for (r, status) in runs.iter().zip(want_status) {
        assert_eq!(r["status"], status, "{r:#}");
        assert_eq!(r["trigger"], "manual", "{r:#}");
        assert_eq!(r["job_name"], "hist", "{r:#}");
        assert_eq!(r["name"], r["id"], "{r:#}");
    }
    assert_eq!(runs[1]["exit_code"], 3);
    h.finish();
}

#[test]
fn exit_codes_unknown_job_is_1_bad_usage_is_2_no_host_is_1_naming_the_url() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "exists", &[("run.sh", "#!/bin/bash\necho hi\n")]);
    h.start();
    wait_api(&h);

    for (sub, rest) in [
        ("status", vec!["nosuchjob"]),
        ("trigger", vec!["nosuchjob"]),
        ("logs", vec!["nosuchjob"]),
        ("history", vec!["nosuchjob"]),
        ("cancel", vec!["nosuchjob"]),
        ("stop", vec!["nosuchjob"]),
    ] {
        let out = cli(&h, sub, &rest);
        assert_eq!(out.code, Some(1), "{sub} of an unknown job: {}", out.all());
        assert!(
            out.stderr.contains("nosuchjob"),
            "{sub}: the message names the job: {}",
            out.all()
        );
    }

    for args in [
        vec!["trigger"],
        vec!["list", "--bogus-flag"],
        vec!["frobnicate"],
        vec!["logs", "exists", "-n", "many"],
    ] {
        let mut full = os(&args);
        full.extend(os(&["--logs"]));
        full.push(h.logs.clone().into_os_string());
        let out = jobhost(&h, &full);
        assert_eq!(out.code, Some(2), "bad usage {args:?}: {}", out.all());
        assert!(!out.stderr.is_empty(), "{}", out.all());
    }

    // Nothing listens on port 1.
    let dead = "http://127.0.0.1:1";
    let out = jobhost(&h, &os(&["list", "--url", dead]));
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains(dead), "names the URL: {}", out.all());
    // A LOGS folder whose URL file points at a host that is gone.
    let stale = h.root.join("stale-logs");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join(".jobhost-url"), format!("{dead}\n")).unwrap();
    let out = jobhost(
        &h,
        &[
            OsString::from("status"),
            OsString::from("exists"),
            OsString::from("--logs"),
            stale.into_os_string(),
        ],
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains(dead), "names the URL: {}", out.all());
    h.finish();
}

#[test]
fn triggers_arriving_together_get_distinct_run_ids() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "par",
        &[
            ("settings.job", r#"{"overlap": "queue"}"#),
            (
                "run.sh",
                "#!/bin/bash\necho \"$WEBJOBS_RUN_ID\" >> \"$TEST_STATE/par.ids\"\n",
            ),
        ],
    );
    h.start();
    wait_api(&h);
    let args = cli_args(&h, "trigger", &os(&["par"]));
    let rounds = 3;
    for round in 1..=rounds {
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| jobhost(&h, &args));
            let b = s.spawn(|| jobhost(&h, &args));
            (a.join().unwrap(), b.join().unwrap())
        });
        for out in [&a, &b] {
            assert_eq!(out.code, Some(0), "round {round}: {}", out.all());
        }
        h.wait_for(&format!("{} runs to have run", 2 * round), DEADLINE, || {
            h.read_lines("par.ids").len() >= 2 * round
        });
        // Both runs over before the next round (one run going and one queued is the
        // most a queue job takes).
        for id in run_ids(&h, "par") {
            wait_run_ended(&h, "par", &id);
        }
    }
    let mut ids = h.read_lines("par.ids");
    assert_eq!(ids.len(), 2 * rounds, "{ids:?}");
    let folders = run_ids(&h, "par");
    ids.sort();
    let mut dedup = ids.clone();
    dedup.dedup();
    assert_eq!(dedup, ids, "every run has its own id");
    assert_eq!(folders, ids, "each run has its own folder");
    h.finish();
}
