//! Nothing acknowledged is lost: messages enqueued by concurrent clients while the
//! host is SIGKILLed and restarted all end `Succeeded`, and a message runs more than
//! once only when a run of it died with the host.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::Value;

use crate::support::client::{Api, connect};
use crate::support::{DEADLINE, TRIGGERED, TestHost};

const TOTAL: usize = 1000;
const CLIENTS: usize = 8;
const CONCURRENCY: usize = 4;
const KILLS: usize = 2;

#[test]
fn acknowledged_messages_survive_sigkill_of_the_host() {
    let mut h = TestHost::new();
    let script = r#"#!/bin/sh
echo "start $WEBJOBS_MESSAGE_ID" >> "$TEST_STATE/log-$$"
echo "done $WEBJOBS_MESSAGE_ID" >> "$TEST_STATE/log-$$"
"#;
    h.write_job(
        TRIGGERED,
        "crash",
        &[
            ("run.sh", script),
            (
                "settings.job",
                r#"{"queue": {"concurrency": 4, "retry_delay": 0, "max_attempts": 100}}"#,
            ),
        ],
    );
    h.start();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut kills = 0;
    while acked.lock().unwrap().len() < TOTAL {
        let api = Arc::new(connect(&h));
        let (sent, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (api, acked, sent, stop) =
                    (api.clone(), acked.clone(), sent.clone(), stop.clone());
                std::thread::spawn(move || client(c, &api, &acked, &sent, &stop))
            })
            .collect();
        // Kill the host while clients are sending (after a third of the messages,
        // then two thirds), or let this round finish them.
        let target = (kills + 1) * TOTAL / (KILLS + 1);
        h.wait_for("clients to send", DEADLINE * 4, || {
            acked.lock().unwrap().len() >= target.min(TOTAL)
                || clients.iter().all(|c| c.is_finished())
        });
        if kills < KILLS {
            h.kill9();
            kills += 1;
        }
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
        if h.pid().is_none() {
            // The dead host's URL file must not be read as the new host's.
            let _ = std::fs::remove_file(h.logs.join(".jobhost-url"));
            h.start();
        }
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(
        unique.len(),
        acked.len(),
        "every acknowledged id is distinct"
    );

    // Every acknowledged message ends Succeeded.
    let api = connect(&h);
    let mut finished: HashMap<String, Value> = HashMap::new();
    h.wait_for(
        "every acknowledged message to succeed",
        DEADLINE * 6,
        || {
            for id in &acked {
                if finished.contains_key(id) {
                    continue;
                }
                let (code, m) = api.get_json(&format!("/api/triggeredwebjobs/crash/messages/{id}"));
                assert_eq!(code, 200, "acknowledged message {id} is lost: {m}");
                match m["state"].as_str() {
                    Some("Succeeded") => {
                        finished.insert(id.clone(), m);
                    }
                    Some("Queued" | "Running") => return false,
                    other => panic!("message {id} ended {other:?}: {m}"),
                }
            }
            true
        },
    );

    // Runs per message, from the runs' own notes.
    let mut starts: HashMap<String, usize> = HashMap::new();
    for entry in std::fs::read_dir(&h.state).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("log-")
        {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if let Some(id) = line.strip_prefix("start ") {
                *starts.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    let mut repeated = 0;
    for id in &acked {
        let n = starts.get(id).copied().unwrap_or(0);
        assert!(n >= 1, "message {id} never ran");
        let attempts = finished[id]["attempts"].as_u64().unwrap() as usize;
        if n > 1 {
            repeated += 1;
            // A repeat is an attempt the host counted for a run that died with it.
            assert!(
                attempts > 1,
                "message {id} ran {n} times but counts {attempts} attempt(s)"
            );
        }
    }
    assert!(
        repeated <= KILLS * CONCURRENCY,
        "{repeated} messages ran twice; only the {CONCURRENCY} running at each of {KILLS} kills may"
    );
}

/// Sends messages until `stop` or `TOTAL` acknowledged; records the acknowledged ids.
fn client(c: usize, api: &Api, acked: &Mutex<Vec<String>>, sent: &AtomicUsize, stop: &AtomicBool) {
    let path = "/api/triggeredwebjobs/crash/messages";
    while !stop.load(Ordering::SeqCst) {
        let n = sent.fetch_add(1, Ordering::SeqCst);
        if acked.lock().unwrap().len() >= TOTAL {
            return;
        }
        let body = format!("client {c} message {n}");
        let Ok(r) = api.req(Method::POST, path).body(body).send() else {
            // The host is gone: not acknowledged, so it may be lost.
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        };
        if r.status() != 202 {
            continue;
        }
        let Ok(v) = r.json::<Value>() else { continue };
        if let Some(id) = v["id"].as_str() {
            let mut a = acked.lock().unwrap();
            if a.len() < TOTAL {
                a.push(id.to_string());
            }
        }
    }
}
