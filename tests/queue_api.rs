//! The messages API and the queue commands of the CLI against the real binary:
//! enqueue and read back, listing and paging, dedupe, every refusal with its status
//! and sentence, cancel/requeue/purge, an unusable message store, and `jobhost
//! enqueue`, `messages`, `message`, `requeue`, `purge`.
//!
//! Messages whose state a test asserts strictly are enqueued with a long `delay`, so
//! no run can take them whatever the job's script does; messages that may run are
//! checked loosely.

#![allow(clippy::unwrap_used)]

mod support;

use std::ffi::OsString;
use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::Value;

use support::client::*;
use support::*;

const Q: &str = "/api/triggeredwebjobs/q/messages";
/// A delay long enough that no run takes the message during a test.
const LATER: &str = "delay=3600";

/// A host with `q` (a queue taking at most 1024 bytes), `plain` (triggered, no
/// queue), `broken` (a queue with a bad key) and `cont` (continuous).
fn host() -> (TestHost, Api) {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "q",
        &[
            ("run.sh", "#!/bin/sh\nexit 0\n"),
            ("settings.job", r#"{"queue": {"max_payload_bytes": 1024}}"#),
        ],
    );
    h.write_job(TRIGGERED, "plain", &[("run.sh", QUICK_JOB)]);
    h.write_job(
        TRIGGERED,
        "broken",
        &[
            ("run.sh", QUICK_JOB),
            ("settings.job", r#"{"queue": {"concurrency": 0}}"#),
        ],
    );
    h.write_job(CONTINUOUS, "cont", &[("run.sh", &sleeper("cont"))]);
    h.start();
    let api = connect(&h);
    for j in ["q", "plain", "broken"] {
        api.wait_code(&h, &format!("/api/triggeredwebjobs/{j}"), 200);
    }
    api.wait_code(&h, "/api/continuouswebjobs/cont", 200);
    (h, api)
}

/// `POST Q?query` with `body`; the status and JSON answer.
fn enqueue(api: &Api, query: &str, body: &[u8]) -> (u16, Value) {
    api.call(
        api.req(Method::POST, &format!("{Q}?{query}"))
            .body(body.to_vec()),
    )
}

/// Enqueues a message that waits an hour; its id.
fn later(api: &Api, body: &str) -> String {
    let (code, v) = enqueue(api, LATER, body.as_bytes());
    assert_eq!(code, 202, "{v:#}");
    v["id"].as_str().unwrap().to_string()
}

fn ids(list: &Value) -> Vec<String> {
    list["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array: {list:#}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn assert_refused(code: u16, v: &Value, want_code: u16, want: &[&str]) {
    assert_eq!(code, want_code, "{v:#}");
    for w in want {
        assert!(message(v).contains(w), "{w:?} not in {v:#}");
    }
}

#[test]
fn a_binary_payload_round_trips_exactly_with_its_content_type() {
    let (_h, api) = host();
    let payload: Vec<u8> = (0..=255u8).rev().collect();
    let r = send(
        api.req(
            Method::POST,
            &format!("{Q}?{LATER}&priority=-3&name=photo.bin&correlation_id=c-1&reply_to=http://127.0.0.1:9/done"),
        )
        .header("Content-Type", "application/x-thing; v=2")
        .header("Idempotency-Key", "k-1")
        .body(payload.clone()),
        "POST",
        Q,
    );
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let (code, v) = json_of(r);
    assert_eq!(code, 202, "{v:#}");
    assert_eq!(v["duplicate"], false);
    assert_eq!(v["state"], "Queued");
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["url"], location);
    assert!(location.ends_with(&format!("{Q}/{id}")), "{location}");

    // The very next request sees it: no wait after a write.
    let (code, m) = api.get_json(&format!("{Q}/{id}"));
    assert_eq!(code, 200, "{m:#}");
    assert_eq!(m["id"], id);
    assert_eq!(m["job"], "q");
    assert_eq!(m["state"], "Queued");
    assert_eq!(m["attempts"], 0);
    assert_eq!(m["priority"], -3);
    assert_eq!(m["payload_bytes"], 256);
    assert_eq!(m["content_type"], "application/x-thing; v=2");
    assert_eq!(m["idempotency_key"], "k-1");
    assert_eq!(m["correlation_id"], "c-1");
    assert_eq!(m["name"], "photo.bin");
    assert_eq!(m["reply_to"], "http://127.0.0.1:9/done");
    assert_eq!(m["result"], Value::Null);
    assert_eq!(m["runs"], serde_json::json!([]));
    for t in ["enqueued_at", "not_before"] {
        assert!(is_rfc3339_ms_z(m[t].as_str().unwrap()), "{t}: {m:#}");
    }
    assert!(
        m["not_before"].as_str() > m["enqueued_at"].as_str(),
        "{m:#}"
    );

    let r = api.get(&format!("{Q}/{id}/payload"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-thing; v=2");
    assert_eq!(r.bytes().unwrap().to_vec(), payload);

    let (code, v) = api.get_json(&format!("{Q}/{id}/result"));
    assert_refused(code, &v, 404, &["has no result", "Queued"]);

    // The job object counts it; a job without a queue has no `queue` field.
    let (_, job) = api.get_json("/api/triggeredwebjobs/q");
    assert_eq!(job["queue"]["queued"], 1, "{job:#}");
    assert_eq!(job["queue"]["dead"], 0, "{job:#}");
    let (_, all) = api.get_json("/api/triggeredwebjobs");
    for j in all.as_array().unwrap() {
        match j["name"].as_str().unwrap() {
            "q" => assert_eq!(j["queue"]["queued"], 1, "{j:#}"),
            _ => assert!(j.get("queue").is_none(), "{j:#}"),
        }
    }
}

#[test]
fn listing_is_newest_first_pages_with_before_and_filters_by_state() {
    let (_h, api) = host();
    let made: Vec<String> = (0..5).map(|i| later(&api, &format!("m{i}"))).collect();
    let newest: Vec<String> = made.iter().rev().cloned().collect();

    let (code, page) = api.get_json(&format!("{Q}?limit=2"));
    assert_eq!(code, 200, "{page:#}");
    assert_eq!(ids(&page), newest[..2].to_vec());
    let next = page["next_url"].as_str().unwrap();
    assert!(next.contains(&format!("before={}", newest[1])), "{next}");

    let (_, page) = api.get_json(&format!("{Q}?limit=2&before={}", newest[1]));
    assert_eq!(ids(&page), newest[2..4].to_vec());
    let (_, page) = api.get_json(&format!("{Q}?limit=2&before={}", newest[3]));
    assert_eq!(ids(&page), newest[4..].to_vec());
    assert_eq!(page["next_url"], Value::Null);

    let (_, all) = api.get_json(Q);
    assert_eq!(ids(&all), newest);
    let (_, queued) = api.get_json(&format!("{Q}?state=queued"));
    assert_eq!(ids(&queued), newest);
    let (_, dead) = api.get_json(&format!("{Q}?state=Dead"));
    assert_eq!(ids(&dead), Vec::<String>::new());

    let (code, v) = api.call(api.req(Method::DELETE, &format!("{Q}/{}", made[2])));
    assert_eq!(code, 200, "{v:#}");
    assert_eq!(v["state"], "Cancelled");
    let (_, cancelled) = api.get_json(&format!("{Q}?state=Cancelled"));
    assert_eq!(ids(&cancelled), vec![made[2].clone()]);
}

#[test]
fn the_same_idempotency_key_answers_the_first_message() {
    let (_h, api) = host();
    let send_key = |body: &str| {
        api.call(
            api.req(Method::POST, &format!("{Q}?{LATER}"))
                .header("Idempotency-Key", "order-42")
                .body(body.to_string()),
        )
    };
    let (code, first) = send_key("one");
    assert_eq!(code, 202, "{first:#}");
    let (code, again) = send_key("two");
    assert_eq!(code, 200, "{again:#}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["payload_bytes"], 3, "the first message: {again:#}");
    let (_, all) = api.get_json(Q);
    assert_eq!(ids(&all).len(), 1, "{all:#}");
}

#[test]
fn refusals_name_the_problem_and_change_nothing() {
    let (_h, api) = host();
    let kept = later(&api, "kept");

    let (code, v) = api.call(api.req(Method::POST, "/api/triggeredwebjobs/qq/messages"));
    assert_refused(
        code,
        &v,
        404,
        &["no triggered job named `qq`", "did you mean `q`"],
    );
    let (code, v) = api.call(api.req(Method::POST, "/api/triggeredwebjobs/plain/messages"));
    assert_refused(
        code,
        &v,
        409,
        &["plain has no message queue", "\"queue\": {}"],
    );
    let (code, v) = api.call(api.req(Method::POST, "/api/triggeredwebjobs/cont/messages"));
    assert_refused(code, &v, 409, &["continuous job"]);
    let (code, v) = api.call(api.req(Method::POST, "/api/triggeredwebjobs/broken/messages"));
    assert_refused(code, &v, 409, &["settings.job has errors", "concurrency"]);

    let bad: &[(&str, &[&str])] = &[
        ("delay=-1", &["`delay`", "ten years"]),
        ("delay=soon", &["`delay`"]),
        ("delay=1e12", &["`delay`"]),
        ("delay=NaN", &["`delay`"]),
        ("delay=5&not_before=2030-01-01T00:00:00Z", &["not both"]),
        ("priority=high", &["`priority`", "whole number"]),
        ("priority=1.5", &["`priority`"]),
        ("not_before=tomorrow", &["`not_before`", "RFC 3339"]),
        ("reply_to=ftp://x/y", &["`reply_to`", "http"]),
        ("reply_to=nowhere", &["`reply_to`"]),
        ("priorty=3", &["`priorty`", "did you mean `priority`"]),
    ];
    for (query, want) in bad {
        let (code, v) = enqueue(&api, query, b"x");
        assert_eq!(code, 400, "{query}: {v:#}");
        for w in *want {
            assert!(message(&v).contains(w), "{query}: {w:?} not in {v:#}");
        }
    }

    for (query, want) in [
        (
            "state=Finished",
            "Queued, Running, Succeeded, Dead, Cancelled",
        ),
        ("limit=0", "`limit`"),
        ("limit=1001", "from 1 to 1000"),
        ("limit=many", "`limit`"),
        ("before=..%2Fx", "`before`"),
    ] {
        let (code, v) = api.get_json(&format!("{Q}?{query}"));
        assert_refused(code, &v, 400, &[want]);
    }

    let (code, v) = api.get_json(&format!("{Q}/0000000000000000000000"));
    assert_refused(code, &v, 404, &["0000000000000000000000"]);
    let (code, v) = api.get_json(&format!("{Q}/0000000000000000000000/payload"));
    assert_eq!(code, 404, "{v:#}");
    let (code, v) = api.post_json(&format!("{Q}/{kept}/requeue"));
    assert_refused(code, &v, 409, &["Queued"]);

    let (code, v) = api.call(api.req(Method::DELETE, Q));
    assert_refused(code, &v, 400, &["needs `state`"]);
    let (code, v) = api.call(api.req(Method::DELETE, &format!("{Q}?state=Running")));
    assert_refused(code, &v, 409, &["Running"]);
    let (code, v) = api.post_json(&format!("{Q}/requeue?state=Queued"));
    assert_refused(code, &v, 409, &["Queued"]);

    let (_, all) = api.get_json(Q);
    assert_eq!(ids(&all), vec![kept.clone()], "{all:#}");
    let (_, m) = api.get_json(&format!("{Q}/{kept}"));
    assert_eq!(m["state"], "Queued");
}

#[test]
fn a_payload_over_max_payload_bytes_is_refused_with_413_and_nothing_stored() {
    let (_h, api) = host();
    let kept = later(&api, "kept");
    let (code, v) = enqueue(&api, LATER, &vec![b'x'; 1025]);
    assert_refused(code, &v, 413, &["1024", "max_payload_bytes"]);
    // Without a Content-Length: counted as it streams.
    let answer = raw_chunked_post(&api, &format!("{Q}?{LATER}"), 4000);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_payload_bytes"), "{answer}");
    // Exactly the limit is taken.
    let (code, v) = enqueue(&api, LATER, &vec![b'z'; 1024]);
    assert_eq!(code, 202, "{v:#}");
    let (_, all) = api.get_json(Q);
    assert_eq!(ids(&all), vec![v["id"].as_str().unwrap().to_string(), kept]);
}

/// `POST path` with a chunked body of `len` bytes, written by hand: the host may
/// answer and close before the body is all sent, which a client library reports as
/// a failed request. The answer up to its body's first bytes.
fn raw_chunked_post(api: &Api, path: &str, len: usize) -> String {
    use std::io::Read;
    use std::net::TcpStream;
    let mut s = TcpStream::connect(api.addr()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        api.addr(),
        api.token
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..len / 100 {
            if w.write_all(b"64\r\n").is_err()
                || w.write_all(&[b'y'; 100]).is_err()
                || w.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = w.write_all(b"0\r\n\r\n");
    });
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&resp).contains("max_payload") && resp.len() < 64 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    String::from_utf8_lossy(&resp).into_owned()
}

#[test]
fn cancel_then_requeue_then_purge() {
    let (h, api) = host();
    // `disable.job` pauses the queue: requeued messages (due at once) stay Queued.
    h.write_job_file(TRIGGERED, "q", "disable.job", "");
    h.wait_for("the job to be disabled", DEADLINE, || {
        api.get_json("/api/triggeredwebjobs/q").1["disabled"] == true
    });
    let a = later(&api, "a");
    let b = later(&api, "b");

    // A waiter sees the cancel: the message is finished then.
    let waiter = {
        let path = api.url(&format!("{Q}/{a}?wait=120"));
        let (http, token) = (http_client(), api.token.clone());
        std::thread::spawn(move || {
            let r = http.get(path).bearer_auth(token).send().unwrap();
            json_of(r)
        })
    };
    let (code, v) = api.call(api.req(Method::DELETE, &format!("{Q}/{a}")));
    assert_eq!(code, 200, "{v:#}");
    assert_eq!(v["state"], "Cancelled");
    let (code, waited) = waiter.join().unwrap();
    assert_eq!(code, 200, "{waited:#}");
    assert_eq!(waited["state"], "Cancelled");
    assert!(is_rfc3339_ms_z(waited["finished_at"].as_str().unwrap()));

    let (code, v) = api.call(api.req(Method::DELETE, &format!("{Q}/{a}")));
    assert_refused(code, &v, 409, &["Cancelled"]);

    // Back on the queue, due now (the job is paused, so it stays Queued).
    let (code, v) = api.post_json(&format!("{Q}/{a}/requeue"));
    assert_eq!(code, 200, "{v:#}");
    assert_eq!(v["attempts"], 0);
    let (_, m) = api.get_json(&format!("{Q}/{a}"));
    assert_eq!(m["state"], "Queued", "{m:#}");

    // Bulk: cancel b, requeue every Cancelled one, cancel again, purge.
    api.call(api.req(Method::DELETE, &format!("{Q}/{b}")));
    let (code, v) = api.post_json(&format!("{Q}/requeue?state=Cancelled"));
    assert_eq!(code, 200, "{v:#}");
    assert_eq!(v["count"], 1, "{v:#}");
    let (_, m) = api.get_json(&format!("{Q}/{b}"));
    assert_eq!(m["state"], "Queued", "{m:#}");
    api.call(api.req(Method::DELETE, &format!("{Q}/{b}")));
    let (code, v) = api.call(api.req(Method::DELETE, &format!("{Q}?state=Cancelled")));
    assert_eq!(code, 200, "{v:#}");
    assert!(v["count"].as_u64().unwrap() >= 1, "{v:#}");
    let (code, v) = api.get_json(&format!("{Q}/{b}"));
    assert_eq!(code, 404, "{v:#}");
    let (_, cancelled) = api.get_json(&format!("{Q}?state=Cancelled"));
    assert_eq!(ids(&cancelled), Vec::<String>::new());
}

#[test]
fn a_wait_that_runs_out_answers_the_message_as_it_is() {
    let (_h, api) = host();
    let id = later(&api, "x");
    let (code, m) = api.get_json(&format!("{Q}/{id}?wait=0.3"));
    assert_eq!(code, 200, "{m:#}");
    assert_eq!(m["state"], "Queued");
    let (code, v) = api.get_json(&format!("{Q}/{id}?wait=soon"));
    assert_refused(code, &v, 400, &["`wait`"]);
}

#[test]
fn an_unusable_message_store_fails_the_queue_routes_only() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "q",
        &[
            ("run.sh", "#!/bin/sh\nexit 0\n"),
            ("settings.job", r#"{"queue": {}}"#),
        ],
    );
    h.write_job(TRIGGERED, "plain", &[("run.sh", QUICK_JOB)]);
    std::fs::write(
        h.logs.join("queue.db"),
        b"this is not a database, just garbage\n".repeat(200),
    )
    .unwrap();
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/q", 200);
    api.wait_code(&h, "/api/triggeredwebjobs/plain", 200);

    let (code, v) = enqueue(&api, "", b"x");
    assert_refused(code, &v, 503, &["queue.db"]);
    let (code, v) = api.get_json(Q);
    assert_refused(code, &v, 503, &["queue.db"]);

    let (code, all) = api.get_json("/api/triggeredwebjobs");
    assert_eq!(code, 200);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"q") && names.contains(&"plain"), "{all:#}");
    let id = api.start_run("plain");
    let run = api.wait_run_end(&h, "plain", &id);
    assert_eq!(run["status"], "Success", "{run:#}");
}

// ----- the command line --------------------------------------------------------------

/// `jobhost SUB ARGS --logs LOGS` with `stdin`; code, stdout, stderr.
fn cli(h: &TestHost, sub: &str, args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    let mut all: Vec<OsString> = vec![sub.into()];
    all.extend(args.iter().map(OsString::from));
    all.push("--logs".into());
    all.push(h.logs.clone().into());
    let mut cmd = Command::new(bin());
    cmd.args(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("JOBHOST_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_queue_commands_of_the_cli() {
    let (h, api) = host();
    let file = h.root.join("payload.bin");
    std::fs::write(&file, [0u8, 1, 2, 255]).unwrap();
    let at_file = format!("@{}", file.display());

    let (code, out, err) = cli(
        &h,
        "enqueue",
        &[
            "q",
            &at_file,
            "--delay",
            "3600",
            "--name",
            "from-file",
            "--content-type",
            "application/x-bin",
        ],
        b"",
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let from_file = out.trim().to_string();
    let r = api.get(&format!("{Q}/{from_file}/payload"));
    assert_eq!(r.headers()["content-type"], "application/x-bin");
    assert_eq!(r.bytes().unwrap().to_vec(), vec![0u8, 1, 2, 255]);

    let (code, out, err) = cli(
        &h,
        "enqueue",
        &[
            "q",
            "-",
            "--delay",
            "3600",
            "--key",
            "k9",
            "--priority",
            "-2",
        ],
        b"from stdin",
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let from_stdin = out.trim().to_string();
    let (_, m) = api.get_json(&format!("{Q}/{from_stdin}"));
    assert_eq!(m["payload_bytes"], 10, "{m:#}");
    assert_eq!(m["priority"], -2, "{m:#}");
    let (_, p) = api.get_text(&format!("{Q}/{from_stdin}/payload"));
    assert_eq!(p, "from stdin");

    // The same key again: the first id, and the CLI says so.
    let (code, out, err) = cli(&h, "enqueue", &["q", "other", "--key", "k9"], b"");
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), from_stdin);
    assert!(err.contains("duplicate"), "{err}");

    let (code, out, err) = cli(&h, "messages", &["q"], b"");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("ID"), "{out}");
    let at = |id: &str| out.find(id).unwrap_or_else(|| panic!("{id} not in {out}"));
    assert!(at(&from_stdin) < at(&from_file), "newest first: {out}");
    assert!(out.contains("from-file"), "{out}");

    let (code, out, err) = cli(&h, "message", &["q", &from_file], b"");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("Queued") && out.contains("4 bytes (application/x-bin)"),
        "{out}"
    );

    let (code, out, err) = cli(&h, "message", &["q", "0000000000000000000000"], b"");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("0000000000000000000000"), "{err}");

    // Requeue of a Queued one fails; cancel it, requeue it, purge.
    let (code, _, err) = cli(&h, "requeue", &["q", &from_file], b"");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Queued"), "{err}");
    api.call(api.req(Method::DELETE, &format!("{Q}/{from_file}")));
    let (code, out, err) = cli(&h, "requeue", &["q", &from_file], b"");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("requeued"), "{out}");
    api.call(api.req(Method::DELETE, &format!("{Q}/{from_stdin}")));
    let (code, out, err) = cli(&h, "purge", &["q", "--state", "cancelled"], b"");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("1 Cancelled message(s) of q deleted"), "{out}");
    let (code, out, err) = cli(&h, "purge", &["q", "--dead"], b"");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("0 Dead"), "{out}");
    let (code, out, err) = cli(&h, "requeue", &["q", "--dead"], b"");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("0 Dead"), "{out}");

    // Unknown job: the nearest name. A job without a queue: how to give it one.
    let (code, _, err) = cli(&h, "enqueue", &["qq", "x"], b"");
    assert_eq!(code, Some(1));
    assert!(err.contains("did you mean q"), "{err}");
    let (code, _, err) = cli(&h, "messages", &["plain"], b"");
    assert_eq!(code, Some(1));
    assert!(err.contains("no message queue"), "{err}");

    // Bad usage: exit 2, and nothing was sent.
    for args in [
        &["enqueue", "q", "x", "--priority", "high"][..],
        &["enqueue", "q", "x", "--delay", "-5"],
        &["enqueue", "q", "x", "--not-before", "tomorrow"],
        &[
            "enqueue",
            "q",
            "x",
            "--delay",
            "5",
            "--not-before",
            "2030-01-01T00:00:00Z",
        ],
        &["enqueue", "q", "x", "--bogus"],
        &["messages", "q", "--state", "Finished"],
        &["messages", "q", "-n", "0"],
        &["requeue", "q"],
        &["purge", "q"],
    ] {
        let (code, out, err) = cli(&h, args[0], &args[1..], b"");
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(!err.is_empty(), "{args:?}");
    }
    let (_, all) = api.get_json(Q);
    assert_eq!(ids(&all), vec![from_file], "{all:#}");
}
