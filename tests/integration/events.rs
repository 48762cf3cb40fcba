//! `GET /api/events` (docs/dashboard.md#live-events): a snapshot, then job and run
//! changes as they happen, resumable with `Last-Event-ID` from a bounded ring.

use std::io::{BufRead, BufReader};
use std::time::Instant;

use serde_json::Value;

use crate::support::client::*;
use crate::support::*;

/// One server-sent event.
#[derive(Debug, Clone)]
struct Ev {
    id: Option<String>,
    kind: String,
    data: Value,
}

/// An open `GET /api/events` stream.
struct Events {
    lines: BufReader<reqwest::blocking::Response>,
}

impl Events {
    fn open(api: &Api, last_event_id: Option<&str>) -> Events {
        let mut rb = api
            .req(reqwest::Method::GET, "/api/events")
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            rb = rb.header("Last-Event-ID", id);
        }
        let r = rb.send().expect("GET /api/events");
        assert_eq!(r.status(), 200, "GET /api/events");
        let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ctype.starts_with("text/event-stream"), "{ctype}");
        Events {
            lines: BufReader::new(r),
        }
    }

    /// The next event (comments skipped); the client's read timeout bounds a hang.
    fn next(&mut self) -> Ev {
        let (mut id, mut kind, mut data) = (None, String::from("message"), Vec::new());
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).expect("reading the stream");
            assert!(n > 0, "the event stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                let text = data.join("\n");
                let data = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {text}"));
                return Ev { id, kind, data };
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "id" => id = Some(value),
                "event" => kind = value,
                "data" => data.push(value),
                _ => {}
            }
        }
    }

    /// Events until one matches, within the deadline; returns all read, the match last.
    fn until(&mut self, what: &str, pred: impl Fn(&Ev) -> bool) -> Vec<Ev> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            assert!(
                start.elapsed() < DEADLINE,
                "no event {what} within {DEADLINE:?}; saw {seen:#?}"
            );
            let ev = self.next();
            let hit = pred(&ev);
            seen.push(ev);
            if hit {
                return seen;
            }
        }
    }
}

fn names(snapshot: &Ev) -> Vec<String> {
    let mut v: Vec<String> = snapshot.data["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("a snapshot without jobs: {snapshot:?}"))
        .iter()
        .map(|j| j["name"].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn events_give_a_snapshot_then_job_and_run_changes_and_resume_after_the_last_event_id() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "tj",
        &[("run.sh", "#!/bin/bash\necho \"args: $*\"\n")],
    );
    h.write_job(CONTINUOUS, "c", &[("run.sh", &sleeper("c"))]);
    h.start();
    let api = connect(&h);
    api.wait_continuous_status(&h, "c", "Running");

    let mut ev = Events::open(&api, None);
    let snap = ev.next();
    assert_eq!(snap.kind, "snapshot", "{snap:?}");
    assert_eq!(names(&snap), ["c", "tj"], "{snap:?}");
    let snap_id: u64 = snap.id.as_deref().unwrap().parse().unwrap();

    // A run: its start and its end arrive as run events, ids growing.
    let id = api.start_run("tj");
    let seen = ev.until("run of tj ended", |e| {
        e.kind == "run" && e.data["run"]["id"] == id.as_str() && e.data["running"].is_null()
    });
    let ended = seen.last().unwrap().clone();
    assert_eq!(ended.data["job"], "tj");
    assert_eq!(ended.data["run"]["status"], "Success", "{ended:?}");
    let mut last = snap_id;
    for e in &seen {
        let n: u64 = e.id.as_deref().unwrap().parse().unwrap();
        assert!(n > last, "ids must grow: {seen:#?}");
        last = n;
    }
    assert!(
        seen.iter()
            .any(|e| e.kind == "job" && e.data["name"] == "tj" && e.data["running"] == id.as_str()),
        "the job object while running: {seen:#?}"
    );

    // Stop the continuous job: remember where we were, then read its change.
    let before_stop = ended.id.clone().unwrap();
    assert_eq!(api.post("/api/continuouswebjobs/c/stop").status(), 200);
    let stopped = ev.until("c stopped", |e| {
        e.kind == "job" && e.data["name"] == "c" && e.data["status"] == "Stopped"
    });
    let stopped_id = stopped.last().unwrap().id.clone().unwrap();

    // Resume from before the stop: exactly the events after it, no snapshot.
    let mut again = Events::open(&api, Some(&before_stop));
    let replay = again.until("the same stop, replayed", |e| {
        e.id.as_deref() == Some(stopped_id.as_str())
    });
    assert_eq!(
        replay.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        stopped.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        "a resume replays exactly what was missed"
    );
    assert!(replay.iter().all(|e| e.kind != "snapshot"), "{replay:#?}");

    // An id from before the ring (or another start of the host): reset, then a snapshot.
    let mut old = Events::open(&api, Some("1"));
    let r = old.next();
    assert_eq!(r.kind, "reset", "{r:?}");
    assert!(
        r.data["message"].as_str().unwrap().contains("snapshot"),
        "{r:?}"
    );
    let s = old.next();
    assert_eq!(s.kind, "snapshot", "{s:?}");
    assert_eq!(names(&s), ["c", "tj"]);
    let c = s.data["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "c")
        .unwrap();
    assert_eq!(c["status"], "Stopped", "the snapshot is current: {c:#}");

    // A deploy is a job event, a delete a removed event.
    let (code, body) = api.put_file(
        "/api/triggeredwebjobs/fresh",
        "run.sh",
        QUICK_JOB.as_bytes(),
    );
    assert_eq!(code, 201, "{body:#}");
    ev.until("the deployed job", |e| {
        e.kind == "job" && e.data["name"] == "fresh"
    });
    assert_eq!(api.delete("/api/triggeredwebjobs/fresh").status(), 200);
    ev.until("the deleted job", |e| {
        e.kind == "removed" && e.data["name"] == "fresh" && e.data["type"] == "triggered"
    });
    h.finish();
}

#[test]
fn events_need_the_token_and_a_wrong_last_event_id_is_a_reset_not_an_error() {
    let (mut h, api) = host_with_triggered("tj", QUICK_JOB);
    let r = api.http.get(api.url("/api/events")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"jobhost\"");
    let mut ev = Events::open(&api, Some("not-a-number"));
    assert_eq!(ev.next().kind, "reset");
    let s = ev.next();
    assert_eq!(s.kind, "snapshot");
    assert_eq!(names(&s), ["tj"]);
    // Nothing else was disturbed: the job still runs.
    let id = api.start_run("tj");
    assert_eq!(api.wait_run_end(&h, "tj", &id)["status"], "Success");
    h.finish();
}

#[test]
fn message_state_changes_are_events_and_resume_after_the_last_event_id() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "mq",
        &[
            ("run.sh", "#!/bin/sh\nexit 0\n"),
            ("settings.job", r#"{"queue": {}}"#),
        ],
    );
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/mq", 200);
    let mut events = Events::open(&api, None);
    events.until("snapshot", |e| e.kind == "snapshot");
    let path = "/api/triggeredwebjobs/mq/messages";
    let (code, v) = json_of(send(
        api.req(reqwest::Method::POST, path).body("x"),
        "POST",
        path,
    ));
    assert_eq!(code, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let is = |e: &Ev, state: &str| {
        e.kind == "message" && e.data["id"] == id.as_str() && e.data["state"] == state
    };
    let seen = events.until("message Succeeded", |e| is(e, "Succeeded"));
    let states: Vec<&str> = seen
        .iter()
        .filter(|e| e.kind == "message" && e.data["id"] == id.as_str())
        .filter_map(|e| e.data["state"].as_str())
        .collect();
    assert_eq!(states, ["Queued", "Running", "Succeeded"], "{seen:#?}");
    let queued = seen.iter().find(|e| is(e, "Queued")).unwrap();
    assert_eq!(queued.data["job"], "mq");

    // Resumed after the Queued event: the rest again, in order.
    let mut again = Events::open(&api, queued.id.as_deref());
    let replay = again.until("message Succeeded", |e| is(e, "Succeeded"));
    assert!(replay.iter().any(|e| is(e, "Running")), "{replay:#?}");
    assert!(!replay.iter().any(|e| is(e, "Queued")), "{replay:#?}");
}
