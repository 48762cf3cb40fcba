//! Message runs of a queue job: payload on stdin and in a file, the message
//! variables, results, retries and dead letters, concurrency and order, cancel, and
//! what a graceful stop or a SIGKILL of the host does to running messages.

use reqwest::Method;
use reqwest::blocking::RequestBuilder;
use serde_json::Value;

use crate::support::client::{Api, connect, json_of, send};
use crate::support::{DEADLINE, TRIGGERED, TestHost};

/// A host with one triggered job `name` (script `run.sh`, `settings.job`).
fn queue_host(name: &str, settings: &str, script: &str) -> (TestHost, Api) {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        name,
        &[("run.sh", script), ("settings.job", settings)],
    );
    h.start();
    let api = connect(&h);
    api.wait_code(&h, &format!("/api/triggeredwebjobs/{name}"), 200);
    (h, api)
}

fn messages(job: &str) -> String {
    format!("/api/triggeredwebjobs/{job}/messages")
}

/// Enqueues `body` with `query`; the new message's id.
fn enqueue(api: &Api, job: &str, query: &str, body: &[u8]) -> String {
    let path = format!("{}{query}", messages(job));
    let rb: RequestBuilder = api.req(Method::POST, &path).body(body.to_vec());
    let (code, v) = json_of(send(rb, "POST", &path));
    assert_eq!(code, 202, "enqueue: {v}");
    v["id"].as_str().expect("an id").to_string()
}

/// The message once it is finished (GET ?wait in a loop, bounded).
fn wait_finished(h: &TestHost, api: &Api, job: &str, id: &str) -> Value {
    let mut last = Value::Null;
    h.wait_for(&format!("message {id} to finish"), DEADLINE * 2, || {
        let (code, v) = api.get_json(&format!("{}/{id}?wait=5", messages(job)));
        assert_eq!(code, 200, "{v}");
        last = v;
        matches!(
            last["state"].as_str(),
            Some("Succeeded" | "Dead" | "Cancelled")
        )
    });
    last
}

fn message(api: &Api, job: &str, id: &str) -> Value {
    let (code, v) = api.get_json(&format!("{}/{id}", messages(job)));
    assert_eq!(code, 200, "{v}");
    v
}

#[test]
fn a_message_runs_with_its_payload_and_variables_and_its_result_comes_back() {
    let script = r#"#!/bin/sh
cat > "$TEST_STATE/stdin"
cp "$WEBJOBS_MESSAGE_PATH" "$TEST_STATE/file"
env | grep '^WEBJOBS_' | sort > "$TEST_STATE/env"
printf 'done:%s' "$WEBJOBS_MESSAGE_ATTEMPT" > "$WEBJOBS_RESULT_PATH"
"#;
    let (h, api) = queue_host("work", r#"{"queue": {}}"#, script);
    let payload: Vec<u8> = (0..=255u8).chain(*b"\nend").collect();
    let id = enqueue(
        &api,
        "work",
        "?correlation_id=corr-1&name=photo.bin",
        &payload,
    );
    let m = wait_finished(&h, &api, "work", &id);
    assert_eq!(m["state"], "Succeeded", "{m}");
    assert_eq!(m["attempts"], 1, "{m}");
    assert_eq!(std::fs::read(h.state.join("stdin")).unwrap(), payload);
    assert_eq!(std::fs::read(h.state.join("file")).unwrap(), payload);
    let env = h.read_state("env");
    for want in [
        format!("WEBJOBS_MESSAGE_ID={id}"),
        "WEBJOBS_MESSAGE_ATTEMPT=1".to_string(),
        "WEBJOBS_CORRELATION_ID=corr-1".to_string(),
        "WEBJOBS_MESSAGE_NAME=photo.bin".to_string(),
        "WEBJOBS_IDEMPOTENCY_KEY=".to_string(),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing in:\n{env}");
    }
    assert!(env.contains("WEBJOBS_RESULT_PATH=/"), "{env}");
    let (code, result) = api.get_text(&format!("{}/{id}/result", messages("work")));
    assert_eq!((code, result.as_str()), (200, "done:1"));

    // The run is an ordinary triggered run, with its message named in its record.
    let runs = m["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{m}");
    let run = runs[0].as_str().unwrap();
    let dir = h.logs.join(TRIGGERED).join("work").join(run);
    let record: Value =
        serde_json::from_slice(&std::fs::read(dir.join("status.json")).unwrap()).unwrap();
    assert_eq!(record["trigger"], "message", "{record}");
    assert_eq!(record["message_id"], id.as_str(), "{record}");
    assert_eq!(record["status"], "Success", "{record}");
    let (code, r) = api.get_json(&format!("/api/triggeredwebjobs/work/history/{run}"));
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (r["trigger"].as_str(), r["message_id"].as_str()),
        (Some("message"), Some(id.as_str()))
    );
    // The payload and result files do not outlive the run.
    assert!(!dir.join("message.payload").exists());
    assert!(!dir.join("message.result").exists());
}

#[test]
fn failures_are_retried_then_dead_and_exit_65_is_dead_at_once() {
    let script = r#"#!/bin/sh
echo "attempt $WEBJOBS_MESSAGE_ATTEMPT" >> "$TEST_STATE/attempts-$(cat)"
echo "the disk is on fire" >&2
case "$WEBJOBS_MESSAGE_NAME" in never) exit 65 ;; esac
exit 3
"#;
    let settings = r#"{"queue": {"max_attempts": 3, "retry_delay": 0}}"#;
    let (h, api) = queue_host("flaky", settings, script);
    let retried = enqueue(&api, "flaky", "", b"a");
    let never = enqueue(&api, "flaky", "?name=never", b"b");

    let m = wait_finished(&h, &api, "flaky", &retried);
    assert_eq!(m["state"], "Dead", "{m}");
    assert_eq!(m["attempts"], 3, "{m}");
    assert_eq!(m["runs"].as_array().unwrap().len(), 3, "{m}");
    let why = m["last_error"].as_str().unwrap();
    assert!(
        why.contains("exited with code 3") && why.contains("the disk is on fire"),
        "{why}"
    );
    assert_eq!(
        h.read_lines("attempts-a"),
        ["attempt 1", "attempt 2", "attempt 3"]
    );

    let m = wait_finished(&h, &api, "flaky", &never);
    assert_eq!(m["state"], "Dead", "{m}");
    assert_eq!(m["attempts"], 1, "{m}");
    assert!(m["last_error"].as_str().unwrap().contains("65"), "{m}");
    assert_eq!(h.read_lines("attempts-b"), ["attempt 1"]);

    // The dead letters are listed, and a requeue runs one again.
    let (code, dead) = api.get_json(&format!("{}?state=Dead", messages("flaky")));
    assert_eq!(code, 200, "{dead}");
    let ids: Vec<String> = list_of(&dead)
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, [never.clone(), retried.clone()], "newest first");
    let (code, v) = api.post_json(&format!("{}/{never}/requeue", messages("flaky")));
    assert_eq!(code, 200, "{v}");
    let m = wait_finished(&h, &api, "flaky", &never);
    assert_eq!(
        (m["state"].as_str(), m["attempts"].as_u64()),
        (Some("Dead"), Some(1))
    );
    assert_eq!(h.read_lines("attempts-b"), ["attempt 1", "attempt 1"]);
}

/// The messages of a listing answer (an array, or an object holding one).
fn list_of(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => other["messages"].as_array().cloned().unwrap_or_default(),
    }
}

/// Each run notes its payload and waits for the test's go file.
const WAIT_FOR_GO: &str = r#"#!/bin/sh
p=$(cat)
echo "$p" >> "$TEST_STATE/started"
while [ ! -e "$TEST_STATE/go" ]; do sleep 0.05; done
"#;

#[test]
fn messages_run_concurrency_at_a_time() {
    let (h, api) = queue_host("pool", r#"{"queue": {"concurrency": 3}}"#, WAIT_FOR_GO);
    let ids: Vec<String> = (1..=6)
        .map(|i| enqueue(&api, "pool", "", format!("m{i}").as_bytes()))
        .collect();
    h.wait_for("three runs to start", DEADLINE, || {
        h.read_lines("started").len() == 3
    });
    let (code, job) = api.get_json("/api/triggeredwebjobs/pool");
    assert_eq!(code, 200);
    assert_eq!(job["queue"]["running"], 3, "{job}");
    assert_eq!(job["queue"]["queued"], 3, "{job}");
    assert_eq!(
        job["status"], "Running",
        "message runs make the job Running: {job}"
    );
    assert_eq!(
        h.read_lines("started").len(),
        3,
        "never more than concurrency"
    );
    std::fs::write(h.state.join("go"), "").unwrap();
    for id in &ids {
        assert_eq!(wait_finished(&h, &api, "pool", id)["state"], "Succeeded");
    }
    let mut started = h.read_lines("started");
    started.sort();
    assert_eq!(started, ["m1", "m2", "m3", "m4", "m5", "m6"]);
}

#[test]
fn messages_run_by_priority_then_due_time_then_order() {
    let (h, api) = queue_host("order", r#"{"queue": {}}"#, WAIT_FOR_GO);
    let first = enqueue(&api, "order", "", b"first");
    h.wait_for("the first run", DEADLINE, || {
        h.read_lines("started").len() == 1
    });
    // Queued behind it: low, then high priority, then two of the default, the second
    // one held back until a time already past (due before the first of them).
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let ids = [
        enqueue(&api, "order", "?priority=-5", b"low"),
        enqueue(&api, "order", "?priority=10", b"high"),
        enqueue(&api, "order", "", b"plain"),
        enqueue(
            &api,
            "order",
            &format!("?not_before={}", urlencode(&past)),
            b"early",
        ),
    ];
    std::fs::write(h.state.join("go"), "").unwrap();
    for id in std::iter::once(&first).chain(&ids) {
        assert_eq!(wait_finished(&h, &api, "order", id)["state"], "Succeeded");
    }
    assert_eq!(
        h.read_lines("started"),
        ["first", "high", "early", "plain", "low"]
    );
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[test]
fn a_delayed_message_waits_and_a_cancelled_running_one_is_stopped() {
    let script = r#"#!/bin/sh
echo $$ >> "$TEST_STATE/pids"
sleep 300
"#;
    let (h, api) = queue_host("slow", r#"{"queue": {}, "stopping_wait_time": 1}"#, script);
    let later = enqueue(&api, "slow", "?delay=3600", b"later");
    let now = enqueue(&api, "slow", "", b"now");
    let pid = h.wait_pids("pids", 1)[0];
    let m = message(&api, "slow", &now);
    assert_eq!(m["state"], "Running", "{m}");
    let m = message(&api, "slow", &later);
    assert_eq!(m["state"], "Queued", "{m}");
    assert!(m["next_attempt_at"].is_string(), "{m}");
    // A running message cannot be requeued; nothing changes.
    let (code, v) = api.post_json(&format!("{}/{now}/requeue", messages("slow")));
    assert_eq!(code, 409, "{v}");
    assert_eq!(message(&api, "slow", &now)["state"], "Running");

    let (code, v) = json_of(api.delete(&format!("{}/{now}", messages("slow"))));
    assert!(code == 200 || code == 202, "{code} {v}");
    let m = wait_finished(&h, &api, "slow", &now);
    assert_eq!(m["state"], "Cancelled", "{m}");
    h.wait_for("the cancelled run's process to be gone", DEADLINE, || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
    });
    // The delayed one still waits: one process started in all.
    assert_eq!(message(&api, "slow", &later)["state"], "Queued");
    assert_eq!(h.read_pids("pids").len(), 1);
}

#[test]
fn a_graceful_stop_requeues_without_an_attempt_and_a_sigkill_counts_one() {
    // The first run of each message blocks until the host goes; later ones succeed.
    let script = r#"#!/bin/sh
echo "$WEBJOBS_MESSAGE_ATTEMPT" >> "$TEST_STATE/runs"
if [ ! -e "$TEST_STATE/pass" ]; then sleep 300; fi
"#;
    let settings = r#"{"queue": {"retry_delay": 0}, "stopping_wait_time": 1}"#;
    let (mut h, api) = queue_host("sturdy", settings, script);
    let id = enqueue(&api, "sturdy", "", b"x");
    h.wait_for("the first run", DEADLINE, || {
        h.read_lines("runs").len() == 1
    });
    h.stop();
    let _ = std::fs::remove_file(h.logs.join(".jobhost-url"));

    // Back to Queued with its attempt not counted; it runs again on the next start.
    h.start();
    let api = connect(&h);
    h.wait_for("the second run", DEADLINE, || {
        h.read_lines("runs").len() == 2
    });
    assert_eq!(
        h.read_lines("runs"),
        ["1", "1"],
        "a graceful stop counts no attempt"
    );

    // SIGKILL of the host: the attempt counts, and the message runs again.
    h.kill9();
    std::fs::write(h.state.join("pass"), "").unwrap();
    let _ = std::fs::remove_file(h.logs.join(".jobhost-url"));
    h.start();
    let api2 = connect(&h);
    let m = wait_finished(&h, &api2, "sturdy", &id);
    assert_eq!(m["state"], "Succeeded", "{m}");
    assert_eq!(m["attempts"], 2, "{m}");
    assert_eq!(h.read_lines("runs"), ["1", "1", "2"]);
    drop(api);
}

#[test]
fn a_corrupt_store_fails_queue_jobs_only() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "queued",
        &[
            ("run.sh", "#!/bin/sh\nexit 0\n"),
            ("settings.job", r#"{"queue": {}}"#),
        ],
    );
    h.write_job(TRIGGERED, "plain", &[("run.sh", "#!/bin/sh\nexit 0\n")]);
    std::fs::create_dir_all(&h.logs).unwrap();
    std::fs::write(
        h.logs.join("queue.db"),
        b"this is not a database, it is a poem\n".repeat(200),
    )
    .unwrap();
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/queued", 200);
    let (_, job) = api.get_json("/api/triggeredwebjobs/queued");
    let error = job["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("queue.db"),
        "the error names the file: {job}"
    );
    let path = messages("queued");
    let (code, v) = json_of(send(api.req(Method::POST, &path).body("x"), "POST", &path));
    assert_eq!(code, 503, "{v}");
    // The other job runs as ever.
    let run = api.start_run("plain");
    let end = api.wait_run_end(&h, "plain", &run);
    assert_eq!(end["status"], "Success", "{end}");
}

#[test]
fn enqueue_wait_streams_the_run_and_prints_the_result_and_the_dead_letter_commands() {
    let script = r#"#!/bin/sh
p=$(cat)
echo "working on $p"
case "$p" in bad) echo "cannot parse $p" >&2; exit 65 ;; esac
printf 'thumbnail of %s' "$p" > "$WEBJOBS_RESULT_PATH"
"#;
    let (h, api) = queue_host("thumbs", r#"{"queue": {}}"#, script);
    crate::cli::wait_api(&h);

    let out = crate::cli::cli(&h, "enqueue", &["thumbs", "photo", "--wait"]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout, "thumbnail of photo",
        "stdout is the result alone"
    );
    assert!(out.stderr.contains("working on photo"), "{}", out.stderr);

    let out = crate::cli::cli(&h, "enqueue", &["thumbs", "bad", "--wait"]);
    assert_eq!(
        out.code,
        Some(1),
        "a dead message exits 1: {}{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains("cannot parse bad"), "{}", out.stderr);

    // The dead letter is listed with its reason, requeued, dead again, and purged.
    let out = crate::cli::cli(&h, "messages", &["thumbs", "--state", "Dead"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("Dead") && out.stdout.contains("65"),
        "{}",
        out.stdout
    );
    let out = crate::cli::cli(&h, "requeue", &["thumbs", "--dead"]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    h.wait_for("the requeued message to be dead again", DEADLINE, || {
        let (_, v) = api.get_json(&format!("{}?state=Dead", messages("thumbs")));
        let dead = list_of(&v);
        dead.len() == 1 && dead[0]["runs"].as_array().is_some_and(|r| r.len() == 2)
    });
    let out = crate::cli::cli(&h, "purge", &["thumbs", "--dead"]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let (_, v) = api.get_json(&format!("{}?state=Dead", messages("thumbs")));
    assert!(list_of(&v).is_empty(), "{v}");
    let (_, v) = api.get_json(&format!("{}?state=Succeeded", messages("thumbs")));
    assert_eq!(
        list_of(&v).len(),
        1,
        "the purge of dead letters left the rest: {v}"
    );

    // /metrics counts them.
    let (code, text) = api.get_text("/metrics");
    assert_eq!(code, 200);
    for want in [
        r#"jobhost_queue_messages{job="thumbs",state="Succeeded"} 1"#,
        r#"jobhost_queue_messages{job="thumbs",state="Dead"} 0"#,
        r#"jobhost_messages_enqueued_total{job="thumbs"} 2"#,
        r#"jobhost_message_attempts_total{job="thumbs"} 3"#,
        r#"jobhost_messages_finished_total{job="thumbs",state="Dead"} 2"#,
    ] {
        assert!(text.contains(want), "{want} missing in:\n{text}");
    }
}

/// A loopback receiver: answers 500 to the first `fail` requests, then 200; sends
/// each request's signature header and body to the test.
fn callback_receiver(fail: usize) -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook?x=1", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut len, mut sig) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-jobhost-signature:") {
                    sig = line["x-jobhost-signature:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let status = if n < fail {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if tx.send((sig, body)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn a_finished_message_is_called_back_signed_until_the_receiver_takes_it() {
    use hmac::{KeyInit, Mac};
    let script = "#!/bin/sh\nprintf 'r\\000\\377' > \"$WEBJOBS_RESULT_PATH\"\n";
    let (h, api) = queue_host("hook", r#"{"queue": {}}"#, script);
    let (url, calls) = callback_receiver(1);
    let reply_to: String = url
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let id = enqueue(
        &api,
        "hook",
        &format!("?reply_to={reply_to}&correlation_id=c7"),
        b"p",
    );
    assert_eq!(wait_finished(&h, &api, "hook", &id)["state"], "Succeeded");
    let token = std::fs::read_to_string(h.logs.join(".jobhost-token")).unwrap();
    // The first try is refused with 500; the second is taken. Both are signed.
    for attempt in 1..=2 {
        let (sig, body) = calls.recv_timeout(DEADLINE * 2).expect("a callback");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.trim().as_bytes()).unwrap();
        mac.update(&body);
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, format!("sha256={want}"), "attempt {attempt}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["state"], "Succeeded");
        assert_eq!(v["correlation_id"], "c7");
        assert_eq!(v["result"], "cgD/", "base64 of the result bytes");
    }
    let path = h
        .logs
        .join(TRIGGERED)
        .join("hook")
        .join("job_scheduler.log");
    h.wait_for("both attempts in the scheduler log", DEADLINE, || {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        log.contains("failed (500)") && log.contains("delivered (200)")
    });
}

#[test]
fn files_dropped_in_the_inbox_become_messages_and_a_missing_inbox_is_shown() {
    let script = r#"#!/bin/sh
printf '%s=%s\n' "$WEBJOBS_MESSAGE_NAME" "$(cat)" >> "$TEST_STATE/taken"
"#;
    let settings = r#"{"queue": {"inbox": "incoming", "concurrency": 4}}"#;
    let (h, api) = queue_host("drop", settings, script);
    // `incoming` is read from the job's data folder in LOGS, and it is not there yet.
    let inbox = h.logs.join(TRIGGERED).join("drop").join("incoming");
    h.wait_for("the job to show the missing inbox", DEADLINE, || {
        let (_, job) = api.get_json("/api/triggeredwebjobs/drop");
        job.to_string().contains("queue.inbox") && job.to_string().contains("incoming")
    });
    // API enqueue still works meanwhile.
    let id = enqueue(&api, "drop", "?name=api", b"direct");
    assert_eq!(wait_finished(&h, &api, "drop", &id)["state"], "Succeeded");

    std::fs::create_dir_all(&inbox).unwrap();
    let outside = h.root.join("staging");
    std::fs::create_dir_all(&outside).unwrap();
    for i in 0..50 {
        let f = outside.join(format!("f{i:02}.txt"));
        std::fs::write(&f, format!("payload {i}")).unwrap();
        std::fs::rename(&f, inbox.join(format!("f{i:02}.txt"))).unwrap();
    }
    std::fs::write(inbox.join(".hidden"), "ignored").unwrap();
    h.wait_for("50 inbox files to run", DEADLINE * 2, || {
        h.read_lines("taken").len() == 51
    });
    let mut taken = h.read_lines("taken");
    taken.sort();
    assert_eq!(taken[0], "api=direct");
    assert_eq!(taken[1], "f00.txt=payload 0");
    assert_eq!(taken[50], "f49.txt=payload 49");
    h.wait_for("the inbox to be emptied of taken files", DEADLINE, || {
        let left: Vec<String> = std::fs::read_dir(&inbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left == [".hidden"]
    });
    let (_, job) = api.get_json("/api/triggeredwebjobs/drop");
    assert!(
        !job.to_string().contains("queue.inbox"),
        "the problem is gone: {job}"
    );
    let (_, text) = api.get_text("/metrics");
    let want = r#"jobhost_messages_enqueued_total{job="drop"} 51"#;
    assert!(text.contains(want), "{want} missing in:\n{text}");
}

#[test]
fn a_message_running_when_its_queue_is_removed_from_the_settings_still_settles() {
    let (h, api) = queue_host("fickle", r#"{"queue": {}}"#, WAIT_FOR_GO);
    let id = enqueue(&api, "fickle", "", b"m");
    h.wait_for("the run", DEADLINE, || h.read_lines("started").len() == 1);
    let (code, v) = api.put_settings("/api/triggeredwebjobs/fickle/settings", b"{}");
    assert!(code == 200 || code == 204, "{code} {v}");
    let path = messages("fickle");
    let (code, v) = json_of(send(api.req(Method::POST, &path).body("x"), "POST", &path));
    assert_eq!(code, 409, "no queue any more: {v}");
    std::fs::write(h.state.join("go"), "").unwrap();
    h.wait_for("the run to end", DEADLINE, || {
        let (_, job) = api.get_json("/api/triggeredwebjobs/fickle");
        job["latest_run"]["status"] == "Success"
    });
    let (code, v) = api.put_settings("/api/triggeredwebjobs/fickle/settings", br#"{"queue": {}}"#);
    assert!(code == 200 || code == 204, "{code} {v}");
    let m = wait_finished(&h, &api, "fickle", &id);
    assert_eq!(
        (m["state"].as_str(), m["attempts"].as_u64()),
        (Some("Succeeded"), Some(1)),
        "{m}"
    );
}
