//! A fresh machine and the CLI's words (issue 9): one host per LOGS unless each has
//! an instance name, the CLI saying where it looked for the host and its token,
//! `logs` reading LOGS when no host runs, the start-up lines, name suggestions,
//! `status` for people, and help for every flag.

use std::ffi::OsString;
use std::fs;

use serde_json::Value;

use crate::cli::{cli, os, trigger, wait_api, wait_api_instance};
use crate::support::*;

fn url_of(sb: &Sandbox) -> String {
    fs::read_to_string(sb.logs.join(".jobhost-url"))
        .expect("the host's URL file")
        .trim()
        .to_string()
}

fn token_of(sb: &Sandbox) -> String {
    fs::read_to_string(sb.logs.join(".jobhost-token"))
        .expect("the host's token file")
        .trim()
        .to_string()
}

/// A bash job that prints `line 1` .. `line N`, records its pid and sleeps.
fn printer(tag: &str, n: usize) -> String {
    format!(
        "#!/bin/bash\necho $$ >> \"$TEST_STATE/{tag}.pids\"\nfor i in $(seq 1 {n}); do echo \"line $i\"; done\nexec sleep 100000\n"
    )
}

#[test]
fn a_second_host_on_the_same_logs_without_instance_exits_1_and_disturbs_nothing() {
    let sb = Sandbox::new();
    sb.write_job(CONTINUOUS, "svc", &[("run.sh", &sleeper("svc"))]);
    let mut a = TestHost::on(&sb, None);
    a.start();
    let pid = sb.wait_pids("svc.pids", 1)[0];
    assert_eq!(sb.wait_running("svc"), pid);
    wait_api(&sb);
    let url = url_of(&sb);
    let host_pid = a.pid().unwrap();

    let mut b = TestHost::on(&sb, None);
    let (status, stderr) = b.run_to_exit();
    assert_eq!(status.code(), Some(1), "second host: {stderr}");
    assert!(
        stderr.contains(&sb.logs.display().to_string()),
        "names LOGS: {stderr}"
    );
    assert!(
        stderr.contains("--instance NAME"),
        "names --instance: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {host_pid}")),
        "names the holder's pid {host_pid}: {stderr}"
    );
    assert!(!stderr.contains("HTTP API"), "bound no API: {stderr}");

    // A named host cannot join a host that assumes it is alone either.
    let mut c = TestHost::on(&sb, Some("x"));
    let (status, stderr) = c.run_to_exit();
    assert_eq!(
        status.code(),
        Some(1),
        "named host beside unnamed: {stderr}"
    );
    assert!(stderr.contains("without --instance"), "{stderr}");
    assert!(stderr.contains(&format!("pid {host_pid}")), "{stderr}");

    // Nothing of the first host's was touched: one run, its URL, its status, its log.
    assert_eq!(sb.read_pids("svc.pids"), vec![pid], "the job ran once");
    assert_eq!(url_of(&sb), url, "the URL file is the first host's");
    let st = sb.read_status("svc");
    assert_eq!(st["status"], "Running", "{st:#}");
    assert_eq!(st["pid"].as_i64(), Some(i64::from(pid)), "{st:#}");
    let log = sb.host_log(None);
    assert_eq!(
        log.matches(" started jobs=").count(),
        1,
        "one host started: {log}"
    );
    assert!(
        !sb.logs.join("host-x.log").exists(),
        "no log of the refused host"
    );
    let out = cli(&sb, "list", &[]);
    assert_eq!(
        out.code,
        Some(0),
        "the first host still answers: {}",
        out.all()
    );
    a.finish();
}

#[test]
fn two_hosts_with_the_same_instance_name_refuse_and_distinct_names_share_logs() {
    let sb = Sandbox::new();
    let mut a = TestHost::on(&sb, Some("a"));
    a.start();
    wait_api_instance(&sb, Some("a"));
    let mut b = TestHost::on(&sb, Some("b"));
    b.start();
    wait_api_instance(&sb, Some("b"));

    let mut again = TestHost::on(&sb, Some("a"));
    let (status, stderr) = again.run_to_exit();
    assert_eq!(status.code(), Some(1), "same instance twice: {stderr}");
    assert!(stderr.contains("--instance a"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", a.pid().unwrap())),
        "{stderr}"
    );
    // And a host without a name is refused while named hosts share LOGS.
    let mut alone = TestHost::on(&sb, None);
    let (status, stderr) = alone.run_to_exit();
    assert_eq!(status.code(), Some(1), "unnamed beside named: {stderr}");
    assert!(
        stderr.contains("a (pid") && stderr.contains("b (pid"),
        "{stderr}"
    );
    // Both hosts go before the sandbox is checked for leftovers.
    let status = a.stop();
    assert_eq!(status.code(), Some(0), "{status:?}");
    b.finish();
}

#[test]
fn a_host_killed_with_sigkill_leaves_logs_free_and_no_child_holds_the_lock() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "svc", &[("run.sh", &sleeper("svc"))]);
    h.start();
    let pid1 = h.wait_pids("svc.pids", 1)[0];
    assert_eq!(h.wait_running("svc"), pid1);
    let lock = h.logs.join(".jobhost.lock");
    // Only the host: not its guardian (which outlives it), not a run.
    assert_eq!(
        processes_holding(&lock),
        vec![h.pid().unwrap()],
        "processes holding {}",
        lock.display()
    );

    h.kill9();
    h.start();
    let pid2 = h.wait_pids("svc.pids", 2)[1];
    h.wait_for("the new host's run Running", DEADLINE, || {
        let st = h.read_status("svc");
        st["status"] == "Running" && st["pid"].as_i64() == Some(i64::from(pid2))
    });
    h.finish();
}

#[test]
fn list_from_another_folder_says_where_it_looked_for_the_token_and_how_to_point_it() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "report", &[("run.sh", "#!/bin/bash\necho hi\n")]);
    h.start();
    wait_api(&h);
    let url = url_of(&h);
    let token = token_of(&h);
    let elsewhere = h.root.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let looked = elsewhere.join("logs").join(".jobhost-token");

    // No token anywhere: say so, not "refused".
    let (code, out, err) = run_cli_in(&elsewhere, &os(&["list", "--url", &url]), &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&looked.display().to_string()),
        "names {}: {err}",
        looked.display()
    );
    for word in ["JOBHOST_TOKEN", "--logs", "JOBHOST_URL", "found none"] {
        assert!(err.contains(word), "mentions {word}: {err}");
    }
    assert!(!err.contains("refused"), "no token was sent: {err}");

    // A wrong token from the environment: say where it came from.
    let (code, _, err) = run_cli_in(
        &elsewhere,
        &os(&["list", "--url", &url]),
        &[("JOBHOST_TOKEN", "not-the-token-of-this-host")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("refused the token from JOBHOST_TOKEN"),
        "{err}"
    );

    // A wrong token file: name it.
    fs::create_dir_all(elsewhere.join("logs")).unwrap();
    fs::write(&looked, "a-token-of-some-other-host\n").unwrap();
    let (code, _, err) = run_cli_in(&elsewhere, &os(&["list", "--url", &url]), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("refused the token read from") && err.contains(&looked.display().to_string()),
        "{err}"
    );

    // A URL file of a host that is gone: name the URL and the file.
    let stale = elsewhere.join("stale");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join(".jobhost-url"), "http://127.0.0.1:1\n").unwrap();
    let (code, _, err) = run_cli_in(&elsewhere, &os(&["list", "--logs", "stale"]), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("http://127.0.0.1:1"), "{err}");
    assert!(
        err.contains(&stale.join(".jobhost-url").display().to_string()),
        "{err}"
    );
    // An explicit URL that does not answer: say it came from --url.
    let (code, _, err) = run_cli_in(
        &elsewhere,
        &os(&["list", "--url", "http://127.0.0.1:1"]),
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("from --url"), "{err}");

    // Pointed at the host, from anywhere: by --logs, or by the two variables.
    let logs = h.logs.display().to_string();
    let (code, out, err) = run_cli_in(&elsewhere, &os(&["list", "--logs", &logs]), &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("report"), "{out}");
    let (code, out, err) = run_cli_in(
        &elsewhere,
        &os(&["list"]),
        &[
            ("JOBHOST_URL", url.as_str()),
            ("JOBHOST_TOKEN", token.as_str()),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("report"), "{out}");
    h.finish();
}

#[test]
fn logs_reads_the_files_in_logs_when_the_host_is_not_running() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "svc", &[("run.sh", &printer("svc", 5))]);
    h.write_job(
        TRIGGERED,
        "report",
        &[("run.sh", "#!/bin/bash\necho \"report $1\"\n")],
    );
    h.start();
    h.wait_log("svc", "line 5");
    wait_api(&h);
    let first = trigger(&h, "report");
    crate::triggered::wait_run_ended(&h, "report", &first);
    let out = cli(&h, "trigger", &["report", "--wait", "--", "second"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    h.finish();
    // The host is gone; its URL file points at nothing that answers.
    fs::write(h.logs.join(".jobhost-url"), "http://127.0.0.1:1\n").unwrap();

    let whole = h.read_log_bytes("svc");
    let out = cli(&h, "logs", &["svc"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(out.stdout_bytes, whole, "the whole job_log.txt");
    assert!(
        out.stderr.contains("reading") && out.stderr.contains("job_log.txt"),
        "says it reads the file: {}",
        out.all()
    );
    let out = cli(&h, "logs", &["svc", "-n", "2"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let text = String::from_utf8_lossy(&whole);
    let last2: Vec<&str> = text.lines().rev().take(2).collect::<Vec<_>>();
    let got: Vec<&str> = out.stdout.lines().rev().collect();
    assert_eq!(got, last2, "the last 2 lines: {}", out.all());

    let out = cli(&h, "logs", &["report"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("report second"), "{}", out.all());
    assert!(
        !out.stdout.contains("report \n"),
        "only the latest run: {}",
        out.all()
    );
    let out = cli(&h, "logs", &["report", "--run", &first]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.stdout.contains("report second"), "{}", out.all());
    assert!(out.stdout.contains("started"), "{}", out.all());

    // Following needs the host: a clear error, no output.
    let out = cli(&h, "logs", &["svc", "-f"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.is_empty(), "{}", out.all());
    assert!(
        out.stderr.contains("needs the host") && out.stderr.contains("http://127.0.0.1:1"),
        "{}",
        out.all()
    );
    // A typo is met with the nearest job LOGS has.
    let out = cli(&h, "logs", &["svx"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("did you mean svc?"), "{}", out.all());
    // Other commands still need the host.
    let out = cli(&h, "status", &["svc"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("cannot reach"), "{}", out.all());
}

#[test]
fn start_up_lines_say_where_the_dashboard_and_the_token_are_never_the_token() {
    let mut h = TestHost::new();
    h.start();
    wait_api(&h);
    let url = url_of(&h);
    let token = token_of(&h);
    let token_file = h.logs.join(".jobhost-token");
    let log = h.host_log(None);
    assert!(
        log.contains(&format!("dashboard: {url}/")),
        "dashboard line for {url}: {log}"
    );
    assert!(
        log.contains(&format!("API token: in {}", token_file.display())),
        "token line: {log}"
    );
    let stderr = fs::read_to_string(h.root.join("host-main-1.stderr")).unwrap();
    assert!(stderr.contains(&format!("dashboard: {url}/")), "{stderr}");
    assert!(!log.contains(&token), "the host log never shows the token");
    assert!(!stderr.contains(&token), "stderr never shows the token");
    h.finish();
}

#[test]
fn unknown_names_get_the_nearest_job_and_a_job_of_the_other_type_is_named() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "report", &[("run.sh", "#!/bin/bash\necho hi\n")]);
    h.write_job(CONTINUOUS, "hello", &[("run.sh", &sleeper("hello"))]);
    h.start();
    h.wait_pids("hello.pids", 1);
    wait_api(&h);

    for (sub, args, expected) in [
        (
            "trigger",
            vec!["reprot"],
            "no triggered job named reprot; did you mean report?",
        ),
        (
            "history",
            vec!["hello"],
            "hello is a continuous job; history is for triggered jobs",
        ),
        (
            "cancel",
            vec!["hello"],
            "hello is a continuous job; cancel is for triggered jobs",
        ),
        (
            "stop",
            vec!["report"],
            "report is a triggered job; stop is for continuous jobs",
        ),
        (
            "status",
            vec!["hallo"],
            "no job named hallo; did you mean hello?",
        ),
        (
            "logs",
            vec!["Report"],
            "no job named Report; did you mean report?",
        ),
    ] {
        let out = cli(&h, sub, &args);
        assert_eq!(out.code, Some(1), "{sub} {args:?}: {}", out.all());
        assert!(
            out.stderr.contains(expected),
            "{sub} {args:?} says {expected:?}: {}",
            out.all()
        );
    }
    // Nothing was run or stopped by the mistaken commands.
    let runs = cli(&h, "history", &["report", "--json"]);
    assert_eq!(runs.code, Some(0), "{}", runs.all());
    let runs: Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs:#}");
    assert!(!h.job_dir(TRIGGERED, "report").join("disable.job").exists());
    assert_eq!(h.read_status("hello")["status"], "Running");
    // An unknown run of a known job keeps the host's own answer.
    let out = cli(&h, "cancel", &["report", "202601010000000000"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("has no run"), "{}", out.all());
    h.finish();
}

#[test]
fn status_prints_for_people_and_json_only_with_json() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "svc",
        &[
            ("run.sh", &sleeper("svc")),
            ("settings.job", r#"{"stopping_wait_time": 7}"#),
        ],
    );
    h.write_job(TRIGGERED, "job", &[("run.sh", "#!/bin/bash\nexit 3\n")]);
    h.start();
    h.wait_pids("svc.pids", 1);
    wait_api(&h);
    let id = trigger(&h, "job");
    crate::triggered::wait_run_ended(&h, "job", &id);

    for name in ["svc", "job"] {
        let out = cli(&h, "status", &[name]);
        assert_eq!(out.code, Some(0), "{}", out.all());
        for raw in ['{', '}', '"'] {
            assert!(
                !out.stdout.contains(raw),
                "no raw JSON ({raw}): {}",
                out.all()
            );
        }
        let json = cli(&h, "status", &[name, "--json"]);
        assert!(
            serde_json::from_str::<Value>(&json.stdout).is_ok(),
            "{}",
            json.all()
        );
    }
    let out = cli(&h, "status", &["svc"]);
    assert!(out.stdout.contains("stopping_wait_time=7"), "{}", out.all());
    let out = cli(&h, "status", &["job"]);
    assert!(
        out.stdout.contains(&id)
            && out.stdout.contains("Failed")
            && out.stdout.contains("exit code 3"),
        "{}",
        out.all()
    );
    h.finish();
}

#[test]
fn help_lists_the_environment_and_a_sentence_for_every_flag() {
    let (code, out) = run_cli(&[OsString::from("--help")]);
    assert_eq!(code, Some(0), "{out}");
    for var in [
        "JOBHOST_JOBS",
        "JOBHOST_LOGS",
        "JOBHOST_LISTEN",
        "JOBHOST_INSTANCE",
        "JOBHOST_URL",
        "JOBHOST_TOKEN",
        "JOBHOST_LOG",
    ] {
        assert!(
            out.contains(&format!("  {var} ")),
            "--help lists {var}: {out}"
        );
    }
    for sub in [
        "run", "check", "list", "status", "start", "stop", "trigger", "logs", "history", "cancel",
    ] {
        let (code, out) = run_cli(&os(&["help", sub]));
        assert_eq!(code, Some(0), "help {sub}: {out}");
        let lines: Vec<&str> = out.lines().collect();
        let mut section = "";
        for (i, line) in lines.iter().enumerate() {
            if line.ends_with(':') && !line.starts_with(' ') {
                section = line;
                continue;
            }
            let is_flag = line.starts_with("  -")
                || line.starts_with("      --")
                || line.starts_with("  <")
                || line.starts_with("  [");
            if (section == "Options:" || section == "Arguments:") && is_flag {
                // The flag, then its sentence on the same line (after two spaces) or,
                // in the long layout, indented on the next line.
                let same_line = line
                    .trim()
                    .split("  ")
                    .filter(|p| !p.trim().is_empty())
                    .count()
                    >= 2;
                let next_line = lines
                    .get(i + 1)
                    .is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
                assert!(
                    same_line || next_line,
                    "help {sub}: no sentence for {line:?}\n{out}"
                );
            }
        }
    }
}
