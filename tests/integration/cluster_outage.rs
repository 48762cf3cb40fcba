//! An outage of the cluster store: three hosts reach PostgreSQL through one loopback
//! proxy, which cuts every connection at once and later lets them in again
//! (docs/cluster.md, "When the store is away"). Through the outage a continuous job
//! that is not a singleton keeps its process, the singleton's run ends before its
//! lease could expire and its status says why it waits, `POST messages` answers 503
//! and the queue job says its messages wait, and a scheduled occurrence that falls in
//! the outage is not fired. Once the store is back, the hosts reconnect by themselves:
//! exactly one host runs the singleton again under a greater fencing token, a message
//! enqueued then runs once, and the missed occurrence runs once (within the 10-minute
//! rule) on one host.
//!
//! The assertions read the whole recorded history (the jobs' own notes in a shared
//! folder, every host's run records), not a sample of it. Needs PostgreSQL, as the
//! other cluster tests.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration as Span, Utc};
use reqwest::Method;
use serde_json::Value;

use crate::cluster_support::{Proxy, TestDb, connect_instance, test_db};
use crate::support::client::{Api, json_of, message, send};
use crate::support::{DEADLINE, Sandbox, TRIGGERED, TestHost};

/// Notes `start HOST PID` when it starts and `end HOST PID` when told to stop.
const KEEP: &str = r#"#!/bin/sh
echo "start $HOST $$" >> "$SHARED/keep"
trap 'echo "end $HOST $$" >> "$SHARED/keep"; exit 0' TERM
while true; do sleep 0.2; done
"#;

/// Notes `start TOKEN HOST SECONDS` and `end TOKEN HOST SECONDS` (wall clock).
const SOLO: &str = r#"#!/bin/sh
trap 'echo "end $WEBJOBS_FENCING_TOKEN $HOST $(date +%s.%N)" >> "$SHARED/solo"; exit 0' TERM
echo "start $WEBJOBS_FENCING_TOKEN $HOST $(date +%s.%N)" >> "$SHARED/solo"
while true; do sleep 0.05; done
"#;

/// Notes `HOST PAYLOAD MESSAGE ATTEMPT` for each message it runs; `m…` payloads
/// then take a second.
const Q: &str = r#"#!/bin/sh
p=$(cat)
echo "$HOST $p $WEBJOBS_MESSAGE_ID $WEBJOBS_MESSAGE_ATTEMPT" >> "$SHARED/q"
case "$p" in m*) sleep 1;; esac
"#;

/// A host of the cluster named `name`, reaching the store at `url`, with the four jobs
/// of the test, each noting what it does in `shared`.
fn outage_host(name: &str, url: &str, shared: &Path) -> (TestHost, Api) {
    let mut h = TestHost::on(&Sandbox::new(), Some(name));
    let env = format!(
        r#""env": {{"SHARED": "{}", "HOST": "{name}"}}"#,
        shared.display()
    );
    h.write_job(
        "continuous",
        "keep",
        &[("run.sh", KEEP), ("settings.job", &format!("{{{env}}}"))],
    );
    let solo = format!(r#"{{"is_singleton": true, "stopping_wait_time": 1, {env}}}"#);
    h.write_job(
        "continuous",
        "solo",
        &[("run.sh", SOLO), ("settings.job", &solo)],
    );
    let q = format!(r#"{{"queue": {{"retry_delay": 0}}, {env}}}"#);
    h.write_job(TRIGGERED, "q", &[("run.sh", Q), ("settings.job", &q)]);
    h.write_job(
        TRIGGERED,
        "tick",
        &[
            ("run.sh", "#!/bin/sh\nexit 0\n"),
            ("settings.job", r#"{"schedule": "*/10 * * * * *"}"#),
        ],
    );
    h.start_with(|cmd| {
        cmd.arg("--store").arg(url).arg("--lease-ttl").arg("3");
    });
    let api = connect_instance(&h, name);
    (h, api)
}

fn lines(shared: &Path, file: &str) -> Vec<String> {
    std::fs::read_to_string(shared.join(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// One line of the singleton's notes.
#[derive(Debug, Clone, PartialEq)]
struct SoloNote {
    start: bool,
    token: i64,
    host: String,
    at: f64,
}

fn solo_notes(shared: &Path) -> Vec<SoloNote> {
    lines(shared, "solo")
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let parsed = match f.as_slice() {
                [kind @ ("start" | "end"), token, host, at] => token
                    .parse()
                    .ok()
                    .zip(at.parse().ok())
                    .map(|(token, at)| SoloNote {
                        start: *kind == "start",
                        token,
                        host: host.to_string(),
                        at,
                    }),
                _ => None,
            };
            parsed.unwrap_or_else(|| panic!("a singleton note not understood: {l:?}"))
        })
        .collect()
}

/// One triggered run as its host recorded it.
#[derive(Debug, Clone)]
struct Run {
    host: String,
    scheduled_for: Option<DateTime<Utc>>,
    message_id: Option<String>,
    start: Option<DateTime<Utc>>,
}

/// Every run of `job` that the hosts recorded in their LOGS.
fn runs(hosts: &[TestHost], job: &str) -> Vec<Run> {
    let time = |v: &Value| {
        v.as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let mut all = Vec::new();
    for h in hosts {
        let dir = h.logs.join(TRIGGERED).join(job);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(bytes) = std::fs::read(e.path().join("status.json")) else {
                continue;
            };
            let Ok(r) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let Some(host) = r["instance"].as_str() else {
                continue;
            };
            all.push(Run {
                host: host.to_string(),
                scheduled_for: time(&r["scheduled_for"]),
                message_id: r["message_id"].as_str().map(str::to_string),
                start: time(&r["start_time"]),
            });
        }
    }
    all.sort_by_key(|r| (r.scheduled_for, r.start));
    all
}

fn occurrences(hosts: &[TestHost]) -> Vec<DateTime<Utc>> {
    runs(hosts, "tick")
        .into_iter()
        .filter_map(|r| r.scheduled_for)
        .collect()
}

/// The occurrences that the scheduler on `h` says wait for the store (not fired, not
/// "fired on another host": nobody could decide them).
fn undecided(h: &TestHost) -> Vec<DateTime<Utc>> {
    let log = h
        .logs
        .join(TRIGGERED)
        .join("tick")
        .join("job_scheduler.log");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (_, note) = l.split_once("] ")?;
            let (at, _) = note.split_once(" waits for the cluster store: ")?;
            DateTime::parse_from_rfc3339(at)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
        .collect()
}

fn enqueue(api: &Api, body: &str) -> (u16, Value) {
    let path = "/api/triggeredwebjobs/q/messages";
    json_of(send(
        api.req(Method::POST, path).body(body.to_string()),
        "POST",
        path,
    ))
}

fn error_of(api: &Api, path: &str) -> String {
    let (_, v) = api.get_json(path);
    v["error"].as_str().unwrap_or_default().to_string()
}

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Three hosts (`NAMES`) of a fresh cluster, all reaching PostgreSQL through `proxy`,
/// sharing `dir` for their jobs' notes.
struct Outage {
    db: TestDb,
    dir: tempfile::TempDir,
    proxy: Proxy,
    hosts: Vec<TestHost>,
    apis: Vec<Api>,
}

impl Outage {
    /// `None` (the test skips) without PostgreSQL.
    fn start(test: &str) -> Option<Outage> {
        let db = test_db(test)?;
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start("127.0.0.1:5432");
        let url = proxy.url(&db.url);
        let (hosts, apis) = NAMES
            .iter()
            .map(|n| outage_host(n, &url, dir.path()))
            .unzip();
        Some(Outage {
            db,
            dir,
            proxy,
            hosts,
            apis,
        })
    }
}

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9
}

#[test]
fn a_store_outage_stops_singletons_refuses_messages_and_everything_resumes_once_it_is_back() {
    let Some(Outage {
        db,
        dir,
        proxy,
        mut hosts,
        apis,
    }) = Outage::start("outage")
    else {
        return;
    };
    let (shared, names) = (dir.path(), NAMES);
    let h0 = &hosts[0];

    // ----- before: everything runs ------------------------------------------------
    let keep_pid = |api: &Api| -> Option<i64> {
        let (_, v) = api.get_json("/api/continuouswebjobs/keep");
        (v["status"] == "Running")
            .then(|| v["pid"].as_i64())
            .flatten()
    };
    let mut pids = Vec::new();
    for (h, api) in hosts.iter().zip(&apis) {
        let mut pid = None;
        h.wait_for("keep to run with a pid", DEADLINE, || {
            pid = keep_pid(api);
            pid.is_some()
        });
        pids.push(pid.unwrap());
    }
    h0.wait_for("the singleton to run on a host", DEADLINE, || {
        solo_notes(shared).iter().any(|n| n.start)
    });
    let first = solo_notes(shared)[0].clone();
    let (code, v) = enqueue(&apis[1], "before");
    assert_eq!(code, 202, "{v}");
    let before_id = v["id"].as_str().unwrap().to_string();
    h0.wait_for(
        "the message enqueued before the outage to run",
        DEADLINE,
        || lines(shared, "q").len() == 1,
    );
    // Cut just after an occurrence, so that the next one (10 s later) falls in the
    // outage and the one after that is far from the catch-up.
    h0.wait_for("a first scheduled occurrence", DEADLINE, || {
        !occurrences(&hosts).is_empty()
    });

    // ----- the outage -------------------------------------------------------------
    proxy.cut();
    let cut_at = Utc::now();

    // The holder ends its singleton's run before its lease, frozen in the store
    // since the cut, could expire (the test reads the store directly, not through
    // the proxy).
    h0.wait_for("the singleton's run to end", DEADLINE, || {
        solo_notes(shared).iter().any(|n| !n.start)
    });
    let (holder, token, expires_at): (String, i64, DateTime<Utc>) = {
        let row = db
            .raw()
            .query_one(
                "SELECT holder, token, expires_at FROM jobhost_leases WHERE name = 'continuous/solo'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!((holder.as_str(), token), (first.host.as_str(), first.token));
    let ended = solo_notes(shared).into_iter().find(|n| !n.start).unwrap();
    assert_eq!((&ended.host, ended.token), (&first.host, first.token));
    assert!(
        ended.at < secs(expires_at),
        "the run ended ({}) before its lease expired ({expires_at}): {:?}",
        ended.at,
        solo_notes(shared)
    );

    for (h, api) in hosts.iter().zip(&apis) {
        // Every host says why the singleton waits.
        h.wait_for(
            "the singleton to say it waits for the store",
            DEADLINE,
            || error_of(api, "/api/continuouswebjobs/solo").contains("waits for the store"),
        );
        // Messages are refused with the reason, and the queue job says they wait.
        let (code, v) = enqueue(api, "during");
        assert_eq!(code, 503, "{v}");
        assert!(message(&v).contains("store"), "{v}");
        h.wait_for("the queue job to say its messages wait", DEADLINE, || {
            error_of(api, "/api/triggeredwebjobs/q")
                .contains("messages wait until the store answers")
        });
        // A manual run is refused as one that cannot be decided now, not as one
        // running elsewhere.
        let path = "/api/triggeredwebjobs/tick/run";
        let (code, v) = json_of(send(api.req(Method::POST, path), "POST", path));
        assert_eq!(code, 503, "{v}");
        assert!(message(&v).contains("cluster store"), "{v}");
    }
    // The occurrence after the cut cannot be decided on any host; the store comes
    // back at once, long before the next one.
    for h in &hosts {
        h.wait_for(
            "the occurrence in the outage to be undecided",
            DEADLINE,
            || undecided(h).iter().any(|t| *t > cut_at),
        );
    }
    // And the scheduled job's status says why it waits, on every host.
    for (h, api) in hosts.iter().zip(&apis) {
        h.wait_for("the scheduled job to say it waits", DEADLINE, || {
            error_of(api, "/api/triggeredwebjobs/tick").contains("wait for the cluster store")
        });
    }
    // The latest undecided one is caught up (an earlier one, had the outage covered
    // two, is not: the catch-up is one fire).
    let missed = hosts.iter().flat_map(undecided).max().unwrap();
    // Nothing needing no decision stopped.
    for (api, pid) in apis.iter().zip(&pids) {
        assert_eq!(keep_pid(api), Some(*pid), "keep runs on, same process");
    }

    // ----- the store is back -------------------------------------------------------
    // Taken before the restore: whatever needed the store happened after it.
    let restored_at = Utc::now();
    proxy.restore();

    h0.wait_for("the singleton to run again", DEADLINE, || {
        solo_notes(shared).iter().filter(|n| n.start).count() >= 2
    });
    let again = solo_notes(shared)
        .into_iter()
        .filter(|n| n.start)
        .nth(1)
        .unwrap();
    assert!(again.token > first.token, "a greater token: {again:?}");
    let owner = names.iter().position(|n| *n == again.host).unwrap();
    hosts[owner].wait_for("its host to show the new token", DEADLINE, || {
        let (_, v) = apis[owner].get_json("/api/continuouswebjobs/solo");
        v["fencing_token"] == again.token && v["error"].is_null()
    });

    // The hosts that wait for the singleton no longer blame the store.
    for (h, api) in hosts.iter().zip(&apis) {
        h.wait_for("the singleton's store error to clear", DEADLINE, || {
            !error_of(api, "/api/continuouswebjobs/solo").contains("store")
        });
    }

    // Enqueued once every host recorded its heartbeat again (a message claimed
    // before that: `messages_claimed_just_after_a_store_outage_run_once`).
    h0.wait_for("every host to be alive again", DEADLINE, || {
        let (_, v) = apis[0].get_json("/api/hosts");
        v["hosts"]
            .as_array()
            .is_some_and(|hs| hs.iter().filter(|h| h["alive"] == true).count() == names.len())
    });
    let mut after_id = String::new();
    // Every answer to the enqueues tried while the hosts reconnect.
    let mut refused = Vec::new();
    h0.wait_for("an enqueue to be taken again", DEADLINE, || {
        let (code, v) = enqueue(&apis[2], "after");
        match code {
            202 => {
                after_id = v["id"].as_str().unwrap().to_string();
                true
            }
            503 => {
                refused.push(v);
                false
            }
            _ => panic!("enqueue after the outage: {code} {v}"),
        }
    });
    h0.wait_for(
        "the message enqueued after the outage to run",
        DEADLINE,
        || lines(shared, "q").iter().any(|l| l.contains(" after ")),
    );
    for (h, api) in hosts.iter().zip(&apis) {
        h.wait_for("the queue job's error to clear", DEADLINE, || {
            error_of(api, "/api/triggeredwebjobs/q").is_empty()
        });
    }

    h0.wait_for("the missed occurrence to be caught up", DEADLINE, || {
        occurrences(&hosts).contains(&missed)
    });
    // The host that ran it asked the store: its scheduled job's error is gone.
    let ran_it = hosts
        .iter()
        .zip(&apis)
        .find(|(h, _)| occurrences(std::slice::from_ref(*h)).contains(&missed));
    if let Some((h, api)) = ran_it {
        h.wait_for("the scheduled job's error to clear", DEADLINE, || {
            error_of(api, "/api/triggeredwebjobs/tick").is_empty()
        });
    }
    for (api, pid) in apis.iter().zip(&pids) {
        assert_eq!(keep_pid(api), Some(*pid), "keep ran through, same process");
    }

    // ----- the whole history -------------------------------------------------------
    // Each host started keep once and never stopped it.
    let keep = lines(shared, "keep");
    let mut want: Vec<String> = names
        .iter()
        .zip(&pids)
        .map(|(n, p)| format!("start {n} {p}"))
        .collect();
    let mut got = keep.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "keep's whole history: {keep:?}");

    // The singleton: one run before the outage, ended before its lease expired, and
    // exactly one after it, on one host, under a greater token.
    let solo = solo_notes(shared);
    let starts: Vec<&SoloNote> = solo.iter().filter(|n| n.start).collect();
    assert_eq!(starts.len(), 2, "two runs in all: {solo:?}");
    assert_eq!(solo[0], first, "{solo:?}");
    assert_eq!(solo[1], ended, "the first run ended first: {solo:?}");
    assert_eq!(solo[2], again, "{solo:?}");
    assert_eq!(solo.len(), 3, "the second run goes on: {solo:?}");
    assert!(ended.at < again.at, "{solo:?}");
    assert!(again.at > secs(restored_at), "{solo:?}");

    // The queue: the two messages taken ran once each; the refused ones never.
    let q = lines(shared, "q");
    let mut payloads: Vec<&str> = q.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    payloads.sort();
    assert_eq!(
        payloads,
        ["after", "before"],
        "{q:?}; accepted {after_id}, refused before it: {refused:?}"
    );
    let mut ran: Vec<String> = runs(&hosts, "q")
        .into_iter()
        .filter_map(|r| r.message_id)
        .collect();
    ran.sort();
    let mut taken = vec![before_id, after_id];
    taken.sort();
    assert_eq!(ran, taken, "each message ran once");

    // The schedule: no occurrence twice across the hosts, none lost but the ones
    // the outage covered, of which the latest ran once after the store was back.
    let ticks = runs(&hosts, "tick");
    let mut by_occurrence: BTreeMap<DateTime<Utc>, Vec<&Run>> = BTreeMap::new();
    for r in &ticks {
        if let Some(at) = r.scheduled_for {
            by_occurrence.entry(at).or_default().push(r);
        }
    }
    for (at, rs) in &by_occurrence {
        assert_eq!(rs.len(), 1, "occurrence {at} fired once: {ticks:?}");
    }
    let in_outage: Vec<&DateTime<Utc>> = by_occurrence
        .keys()
        .filter(|at| **at > cut_at && **at < restored_at)
        .collect();
    assert_eq!(in_outage, [&missed], "{ticks:?}");
    let caught = by_occurrence[&missed][0];
    assert!(names.contains(&caught.host.as_str()), "{caught:?}");
    assert!(
        caught.start.is_some_and(|s| s >= restored_at),
        "run after the store was back: {caught:?}"
    );
    let (first_at, last_at) = (
        *by_occurrence.keys().next().unwrap(),
        *by_occurrence.keys().last().unwrap(),
    );
    let mut at = first_at;
    while at <= last_at {
        let superseded = at > cut_at && at < missed;
        assert!(
            superseded || by_occurrence.contains_key(&at),
            "occurrence {at} was lost: {ticks:?}"
        );
        at += Span::seconds(10);
    }

    for h in hosts.iter_mut() {
        let status = h.stop();
        assert_eq!(status.code(), Some(0), "{status:?}\n{}", h.dump());
    }
    drop(proxy);
}

/// After an outage longer than `--lease-ttl`, every host's heartbeat lease has lapsed
/// in the store, and the others record theirs again only at their next beat (up to
/// 2 s later). A host back from the outage judges nobody dead for a lease's length
/// (`cluster::member::OwnBeat`), so a message claimed in that window is not given back
/// as a dead host's: each runs once, one attempt.
#[test]
fn messages_claimed_just_after_a_store_outage_run_once() {
    let Some(Outage {
        db,
        dir,
        proxy,
        hosts,
        apis,
    }) = Outage::start("outage_takeover")
    else {
        return;
    };
    let shared = dir.path();
    let h0 = &hosts[0];
    proxy.cut();
    // Cut for longer than the ttl: every host's lease lapses (read directly).
    h0.wait_for("every host's lease to lapse", DEADLINE, || {
        let live: i64 = db
            .raw()
            .query_one(
                "SELECT count(*) FROM jobhost_hosts WHERE lease_expires_at > clock_timestamp()",
                &[],
            )
            .unwrap()
            .get(0);
        live == 0
    });
    proxy.restore();
    // Messages enqueued as soon as the store answers, each run long enough to be
    // looked at by the other hosts' sweeps.
    let mut ids = Vec::new();
    h0.wait_for("20 enqueues to be taken", DEADLINE, || {
        let api = &apis[ids.len() % apis.len()];
        let (code, v) = enqueue(api, &format!("m{}", ids.len()));
        if code == 202 {
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        ids.len() == 20
    });
    for (i, id) in ids.iter().enumerate() {
        let api = &apis[i % apis.len()];
        let mut m = Value::Null;
        h0.wait_for("the message to succeed", DEADLINE, || {
            m = api
                .get_json(&format!("/api/triggeredwebjobs/q/messages/{id}"))
                .1;
            m["state"] == "Succeeded"
        });
        assert_eq!(m["attempts"], 1, "{m}\n{:?}", lines(shared, "q"));
    }
    assert_eq!(lines(shared, "q").len(), 20, "{:?}", lines(shared, "q"));
}
