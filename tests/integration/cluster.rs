//! Hosts on "several machines" (separate JOBS and LOGS, one PostgreSQL store): they
//! list each other, share a job's queue, and a host killed with SIGKILL has its
//! messages taken over once its lease ran out.
//!
//! Needs PostgreSQL (127.0.0.1:5432, or `JOBHOST_TEST_POSTGRES`); each test makes a
//! database of its own and drops it. Without a server the tests print one line and
//! pass; `.ci/run` sets `JOBHOST_REQUIRE_POSTGRES=1`, which makes that a failure.

use std::collections::BTreeMap;
use std::io::Write;

use reqwest::Method;
use serde_json::Value;

use crate::cli::os;
use crate::cluster_support::{Proxy, TestDb, connect_instance, test_db};
use crate::support::client::{Api, json_of, send};
use crate::support::{DEADLINE, Sandbox, TRIGGERED, TestHost, run_cli_in};

/// A host named `name` on a sandbox of its own, in the cluster of `db`, with the
/// triggered job `work` (a queue of `concurrency`).
fn cluster_host(db: &TestDb, name: &str, script: &str, concurrency: u32) -> (TestHost, Api) {
    let mut h = TestHost::on(&Sandbox::new(), Some(name));
    let settings = format!(
        r#"{{"history_size": 5000, "queue": {{"concurrency": {concurrency}, "retry_delay": 0}}}}"#
    );
    h.write_job(
        TRIGGERED,
        "work",
        &[("run.sh", script), ("settings.job", &settings)],
    );
    let url = db.url.clone();
    h.start_with(|cmd| {
        cmd.arg("--store").arg(&url).arg("--lease-ttl").arg("3");
    });
    let api = connect_instance(&h, name);
    api.wait_code(&h, "/api/triggeredwebjobs/work", 200);
    (h, api)
}

fn enqueue(api: &Api, body: &str) -> String {
    let path = "/api/triggeredwebjobs/work/messages";
    let (code, v) = json_of(send(
        api.req(Method::POST, path).body(body.to_string()),
        "POST",
        path,
    ));
    assert_eq!(code, 202, "{v}");
    v["id"].as_str().unwrap().to_string()
}

fn message(api: &Api, id: &str) -> Value {
    let (code, v) = api.get_json(&format!("/api/triggeredwebjobs/work/messages/{id}"));
    assert_eq!(code, 200, "{v}");
    v
}

/// Message ids run per host, from each host's run records.
fn runs_by_host(hosts: &[&TestHost]) -> BTreeMap<String, Vec<String>> {
    let mut by = BTreeMap::new();
    for h in hosts {
        let dir = h.logs.join(TRIGGERED).join("work");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(bytes) = std::fs::read(e.path().join("status.json")) else {
                continue;
            };
            let Ok(r) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if let (Some(i), Some(m)) = (r["instance"].as_str(), r["message_id"].as_str()) {
                by.entry(i.to_string())
                    .or_insert_with(Vec::new)
                    .push(m.to_string());
            }
        }
    }
    by
}

#[test]
fn hosts_of_a_cluster_list_each_other_share_a_queue_and_take_over_a_dead_hosts_messages() {
    let Some(db) = test_db("hosts_of_a_cluster") else {
        return;
    };
    // The message `held` blocks where `$TEST_STATE/release` is missing.
    let script = r#"#!/bin/sh
p=$(cat)
if [ "$p" = held ]; then
  while [ ! -e "$TEST_STATE/release" ]; do sleep 0.05; done
fi
sleep 0.3
"#;
    let (a, api_a) = cluster_host(&db, "a", script, 2);
    let (mut b, api_b) = cluster_host(&db, "b", script, 2);
    std::fs::write(a.state.join("release"), "").unwrap();

    let (code, hosts) = api_a.get_json("/api/hosts");
    assert_eq!(code, 200, "{hosts}");
    let alive: Vec<(&str, bool)> = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap(), h["alive"].as_bool().unwrap()))
        .collect();
    assert_eq!(alive, [("a", true), ("b", true)], "{hosts}");
    assert_eq!(hosts["me"], "a");
    assert!(
        hosts["store"].as_str().unwrap().starts_with("postgres://"),
        "{hosts}"
    );

    // Enqueued on a, run by both, visible from both.
    let ids: Vec<String> = (0..30).map(|i| enqueue(&api_a, &format!("m{i}"))).collect();
    for id in &ids {
        a.wait_for("the message to succeed", DEADLINE * 2, || {
            message(&api_b, id)["state"] == "Succeeded"
        });
    }
    let by = runs_by_host(&[&a, &b]);
    assert!(by.get("a").is_some_and(|r| !r.is_empty()), "{by:?}");
    assert!(by.get("b").is_some_and(|r| !r.is_empty()), "{by:?}");
    assert_eq!(
        by.values().map(Vec::len).sum::<usize>(),
        30,
        "each ran once: {by:?}"
    );

    // Any host's history shows the cluster's runs, each pointing at its host's API.
    let mut history = Value::Null;
    b.wait_for("the 30 runs in b's history", DEADLINE, || {
        history = api_b.get_json("/api/triggeredwebjobs/work/history").1;
        history["runs"].as_array().is_some_and(|r| r.len() == 30)
    });
    let runs = history["runs"].as_array().unwrap();
    for host in ["a", "b"] {
        // Run ids are unique per host only (start time to 0.1 ms): one no other
        // host also has, so the id names this run alone.
        let unique = |r: &&Value| runs.iter().filter(|o| o["id"] == r["id"]).count() == 1;
        let run = runs
            .iter()
            .filter(unique)
            .find(|r| r["host"] == host)
            .expect("a run of each host");
        // Each host has its own token here (its own LOGS).
        let owner = if host == "a" { &api_a } else { &api_b };
        let want = &owner.base;
        let out = run["output_url"].as_str().unwrap();
        assert!(
            out.starts_with(want.as_str()),
            "{host}: {out} is not on {want}"
        );
        let id = run["id"].as_str().unwrap();
        // The run's own URL answers on the other host too.
        let (code, one) = api_b.get_json(&format!("/api/triggeredwebjobs/work/history/{id}"));
        assert_eq!(code, 200, "{one}");
        assert_eq!(one["host"], host);
        let text = api_b
            .http
            .get(out)
            .bearer_auth(&owner.token)
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(text.contains("started"), "{out}: {text}");
    }
    // The CLI's history shows the host of each run too.
    let (code, out, err) = run_cli_in(
        &std::env::temp_dir(),
        &os(&["history", "work"]),
        &[
            ("JOBHOST_URL", &api_b.base),
            ("JOBHOST_TOKEN", &api_b.token),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let header = out.lines().next().unwrap_or_default();
    assert!(header.contains("HOST"), "{out}");
    let hosts: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(hosts.len(), 30, "{out}");
    assert!(hosts.iter().all(|h| ["a", "b"].contains(h)), "{out}");

    // a pauses its queue (disable.job), so b takes `held` and blocks on it.
    a.write_job_file(TRIGGERED, "work", "disable.job", "");
    a.wait_for("a's job to be disabled", DEADLINE, || {
        api_a.get_json("/api/triggeredwebjobs/work").1["disabled"] == true
    });
    let held = enqueue(&api_a, "held");
    b.wait_for("b to run the held message", DEADLINE, || {
        message(&api_b, &held)["state"] == "Running"
    });
    assert_eq!(message(&api_a, &held)["attempts"], 1);
    // b dies with it; a, enabled again, takes it once b's lease (3 s) ran out.
    b.kill9();
    std::fs::remove_file(a.jobs.join(TRIGGERED).join("work").join("disable.job")).unwrap();
    let mut last = Value::Null;
    a.wait_for("a to finish the held message", DEADLINE * 2, || {
        last = message(&api_a, &held);
        last["state"] == "Succeeded"
    });
    assert_eq!(
        last["attempts"], 2,
        "taken over, the attempt counted: {last}"
    );
    assert!(
        last["last_error"].is_null() || last["last_error"].as_str().is_some(),
        "{last}"
    );
    let by = runs_by_host(&[&a]);
    assert!(
        by.get("a").is_some_and(|r| r.contains(&held)),
        "a ran it: {by:?}"
    );
    a.wait_for("b to be listed dead", DEADLINE, || {
        let (_, hosts) = api_a.get_json("/api/hosts");
        hosts["hosts"]
            .as_array()
            .is_some_and(|hs| hs.iter().any(|h| h["name"] == "b" && h["alive"] == false))
    });
    let out = crate::cli::cli(&a, "hosts", &["--instance", "a"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", out.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("a (this host)") && l.contains("yes")),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("b ") && l.contains(" no ")),
        "{}",
        out.stdout
    );
}

#[test]
fn a_host_outside_a_cluster_lists_itself_and_a_bad_store_url_stops_the_start() {
    let mut h = TestHost::start_new();
    let api = crate::support::client::connect(&h);
    let (code, v) = api.get_json("/api/hosts");
    assert_eq!(code, 200, "{v}");
    assert!(v["store"].is_null(), "{v}");
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["hosts"][0]["alive"], true);
    let out = crate::cli::cli(&h, "hosts", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("not in a cluster"), "{}", out.stdout);
    h.stop();

    // A store that is not a PostgreSQL URL: exit 1 before anything runs, naming it.
    let mut bad = TestHost::on(&Sandbox::new(), Some("x"));
    let (status, stderr) = bad.run_to_exit_with(|cmd| {
        cmd.arg("--store").arg("mysql://root@127.0.0.1/test");
    });
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("mysql://root@127.0.0.1/test") && stderr.contains("postgres://"),
        "{stderr}"
    );
    // A store that does not answer: the same, with the fix.
    let mut gone = TestHost::on(&Sandbox::new(), Some("y"));
    let (status, stderr) = gone.run_to_exit_with(|cmd| {
        cmd.arg("--store").arg("postgres://root@127.0.0.1:1/none");
    });
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to the cluster store"),
        "{stderr}"
    );
}

/// A host of `db`'s cluster named `name`, running the continuous singleton `solo`,
/// which notes `start TOKEN HOST SECONDS` in `shared/log` when it starts.
fn singleton_host(db: &TestDb, name: &str, shared: &std::path::Path) -> TestHost {
    let mut h = TestHost::on(&Sandbox::new(), Some(name));
    let script = r#"#!/bin/sh
echo "start $WEBJOBS_FENCING_TOKEN $HOST $(date +%s.%N)" >> "$SHARED/log"
while true; do sleep 0.1; done
"#;
    let settings = format!(
        r#"{{"is_singleton": true, "stopping_wait_time": 1, "env": {{"SHARED": "{}", "HOST": "{name}"}}}}"#,
        shared.display()
    );
    h.write_job(
        "continuous",
        "solo",
        &[("run.sh", script), ("settings.job", &settings)],
    );
    let url = db.url.clone();
    h.start_with(|cmd| {
        cmd.arg("--store").arg(&url).arg("--lease-ttl").arg("3");
    });
    h
}

/// The `start` lines so far: (token, host, seconds).
fn starts(shared: &std::path::Path) -> Vec<(i64, String, f64)> {
    std::fs::read_to_string(shared.join("log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(1);
            Some((
                f.next()?.parse().ok()?,
                f.next()?.to_string(),
                f.next()?.parse().ok()?,
            ))
        })
        .collect()
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_singleton_runs_on_one_host_and_moves_with_a_greater_token_when_its_host_dies() {
    let Some(db) = test_db("singleton_failover") else {
        return;
    };
    let shared = tempfile::tempdir().unwrap();
    let mut hosts: BTreeMap<String, TestHost> = ["a", "b", "c"]
        .iter()
        .map(|n| (n.to_string(), singleton_host(&db, n, shared.path())))
        .collect();
    let first = hosts["a"].sandbox().clone();
    first.wait_for("the singleton to start on one host", DEADLINE, || {
        !starts(shared.path()).is_empty()
    });
    let mut takeovers = Vec::new();
    for round in 0..4 {
        let before = starts(shared.path());
        let (token, holder, _) = before.last().cloned().unwrap();
        assert_eq!(before.len(), round + 1, "one start per holder: {before:?}");
        let killed_at = now_secs();
        hosts.get_mut(&holder).unwrap().kill9();
        first.wait_for("another host to take the singleton over", DEADLINE, || {
            starts(shared.path()).len() > before.len()
        });
        let after = starts(shared.path());
        let (next_token, next_host, started) = after.last().cloned().unwrap();
        assert!(next_token > token, "tokens grow: {after:?}");
        assert_ne!(next_host, holder, "{after:?}");
        assert!(
            started > killed_at,
            "the new run started after the old host died"
        );
        takeovers.push(started - killed_at);
        // The new holder's status shows its token.
        let api = connect_instance(&hosts[&next_host], &next_host);
        let (_, job) = api.get_json("/api/continuouswebjobs/solo");
        assert_eq!(job["fencing_token"], next_token, "{job}");
        // The dead host comes back (as a fresh process) and waits its turn.
        let h = hosts.get_mut(&holder).unwrap();
        let _ = std::fs::remove_file(h.logs.join(format!(".jobhost-url-{holder}")));
        let url = db.url.clone();
        h.start_with(|cmd| {
            cmd.arg("--store").arg(&url).arg("--lease-ttl").arg("3");
        });
    }
    // Never two at once: exactly one start per holder, tokens strictly increasing.
    let all = starts(shared.path());
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "{all:?}");
    let _ = writeln!(
        std::io::stderr(),
        "singleton takeovers after SIGKILL (s): {takeovers:?}"
    );
}

/// Three hosts with a job on every second; the host that fired last is killed with
/// SIGKILL. Over the whole recorded history: no occurrence ran twice, and every second
/// from the first fire to the last either ran once or came while a run was going
/// (the cluster-wide overlap rule) or while the dead host's run lease ran out.
#[test]
fn a_job_scheduled_every_second_fires_each_occurrence_on_one_host_only() {
    use chrono::{DateTime, Duration as Span, Utc};
    let Some(db) = test_db("exactly_once") else {
        return;
    };
    let ttl = 3;
    let mut hosts: Vec<TestHost> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let mut h = TestHost::on(&Sandbox::new(), Some(name));
            h.write_job(
                TRIGGERED,
                "tick",
                &[
                    ("run.sh", "#!/bin/sh\nexit 0\n"),
                    ("settings.job", r#"{"schedule": "* * * * * *"}"#),
                ],
            );
            let url = db.url.clone();
            h.start_with(|cmd| {
                cmd.arg("--store")
                    .arg(&url)
                    .arg("--lease-ttl")
                    .arg(ttl.to_string());
            });
            h
        })
        .collect();
    let time = |v: &Value| {
        v.as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    // Every run each host recorded: (occurrence, host, start, end).
    type Run = (
        DateTime<Utc>,
        String,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let runs = |hosts: &[TestHost]| -> Vec<Run> {
        let mut all = Vec::new();
        for h in hosts {
            let dir = h.logs.join(TRIGGERED).join("tick");
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let Ok(bytes) = std::fs::read(e.path().join("status.json")) else {
                    continue;
                };
                let Ok(r) = serde_json::from_slice::<Value>(&bytes) else {
                    continue;
                };
                if let (Some(at), Some(host)) = (time(&r["scheduled_for"]), r["instance"].as_str())
                {
                    all.push((
                        at,
                        host.to_string(),
                        time(&r["start_time"]),
                        time(&r["end_time"]),
                    ));
                }
            }
        }
        all.sort();
        all
    };
    hosts[0].wait_for("five occurrences fired", DEADLINE * 2, || {
        runs(&hosts).len() >= 5
    });
    let latest = runs(&hosts).pop().map(|r| r.1).unwrap();
    let victim = ["a", "b", "c"].iter().position(|n| *n == latest).unwrap();
    hosts[victim].kill9();
    let killed_at = Utc::now();
    // The dead host's lease (a run of it may have been going) is free after the ttl.
    let settled = killed_at + Span::seconds(ttl + 2);
    hosts[0].wait_for(
        "five occurrences fired after the takeover",
        DEADLINE * 3,
        || runs(&hosts).iter().filter(|r| r.0 > settled).count() >= 5,
    );
    for (i, h) in hosts.iter_mut().enumerate() {
        if i != victim {
            h.stop();
        }
    }
    let all = runs(&hosts);
    let mut by_second = BTreeMap::new();
    for (at, host, _, _) in &all {
        if let Some(before) = by_second.insert(*at, host.clone()) {
            panic!("occurrence {at} fired twice (on {before} and {host}): {all:?}");
        }
    }
    let (first, last) = (all[0].0, all[all.len() - 1].0);
    let mut at = first;
    while at <= last {
        let explained = by_second.contains_key(&at)
            || (at >= killed_at - Span::seconds(1) && at <= settled)
            // A run going (its lease given back just after its end) skips it.
            || all.iter().any(|(_, _, start, end)| {
                start.is_some_and(|s| s <= at) && end.is_some_and(|e| at <= e + Span::seconds(1))
            });
        assert!(explained, "occurrence {at} was lost: {all:?}");
        at += Span::seconds(1);
    }
    assert!(
        by_second.values().any(|h| h != &latest),
        "another host took over: {all:?}"
    );
}

#[test]
fn a_holder_cut_off_from_the_store_stops_its_run_before_another_host_starts() {
    let Some(db) = test_db("partition") else {
        return;
    };
    let shared = tempfile::tempdir().unwrap();
    let proxy = Proxy::start("127.0.0.1:5432");
    let script = r#"#!/bin/sh
trap 'echo "end $HOST $(date +%s.%N)" >> "$SHARED/log"; exit 0' TERM
echo "start $WEBJOBS_FENCING_TOKEN $HOST $(date +%s.%N)" >> "$SHARED/log"
while true; do sleep 0.05; done
"#;
    let host = |name: &str, url: String| {
        let mut h = TestHost::on(&Sandbox::new(), Some(name));
        let settings = format!(
            r#"{{"is_singleton": true, "stopping_wait_time": 5, "env": {{"SHARED": "{}", "HOST": "{name}"}}}}"#,
            shared.path().display()
        );
        h.write_job(
            "continuous",
            "solo",
            &[("run.sh", script), ("settings.job", &settings)],
        );
        h.write_job(
            TRIGGERED,
            "q",
            &[
                ("run.sh", "#!/bin/sh\nexit 0\n"),
                ("settings.job", r#"{"queue": {}}"#),
            ],
        );
        h.start_with(|cmd| {
            cmd.arg("--store").arg(&url).arg("--lease-ttl").arg("3");
        });
        h
    };
    // b, behind the proxy, starts first and holds the singleton.
    let b = host("b", proxy.url(&db.url));
    b.wait_for("b to run the singleton", DEADLINE, || {
        starts(shared.path()).iter().any(|s| s.1 == "b")
    });
    let a = host("a", db.url.clone());
    let api_b = connect_instance(&b, "b");
    connect_instance(&a, "a");

    // The cut: b cannot renew; it stops its run within the lease, and only then
    // does a start.
    proxy.cut();
    a.wait_for("a to take the singleton over", DEADLINE, || {
        starts(shared.path()).iter().any(|s| s.1 == "a")
    });
    let log = std::fs::read_to_string(shared.path().join("log")).unwrap();
    // The last line of its kind: b's final run.
    let time_of = |prefix: &str| -> f64 {
        log.lines()
            .rev()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{log}"))
    };
    // (b may have taken its lease again before the cut, on a busy machine: the
    // tokens are compared, not assumed.)
    let all = starts(shared.path());
    let first_a = all.iter().find(|s| s.1 == "a").unwrap();
    let b_tokens = all.iter().filter(|s| s.1 == "b").map(|s| s.0);
    assert!(b_tokens.clone().all(|t| t < first_a.0), "{all:?}");
    let (b_end, a_start) = (time_of("end b"), first_a.2);
    assert!(
        b_end < a_start,
        "b's run ended ({b_end}) before a's began ({a_start}):\n{log}"
    );

    // Meanwhile b answers enqueues with 503 and says why its singleton waits.
    let path = "/api/triggeredwebjobs/q/messages";
    let (code, v) = json_of(send(api_b.req(Method::POST, path).body("x"), "POST", path));
    assert_eq!(code, 503, "{v}");
    b.wait_for("b's singleton to say why it waits", DEADLINE, || {
        let (_, job) = api_b.get_json("/api/continuouswebjobs/solo");
        job["error"].as_str().is_some_and(|e| e.contains("store"))
    });

    // Back: b reconnects by itself and its enqueues are taken again.
    proxy.restore();
    b.wait_for("b to enqueue again", DEADLINE, || {
        let (code, _) = json_of(send(api_b.req(Method::POST, path).body("y"), "POST", path));
        code == 202
    });
}

#[test]
fn three_hosts_run_every_message_once_and_a_killed_hosts_messages_once_more() {
    let Some(db) = test_db("three_hosts_messages") else {
        return;
    };
    const N: usize = 1500;
    let script = "#!/bin/sh\nexit 0\n";
    let (a, api_a) = cluster_host(&db, "a", script, 4);
    let (b, _api_b) = cluster_host(&db, "b", script, 4);
    let (mut c, _api_c) = cluster_host(&db, "c", script, 4);
    // Enqueued on a by 4 clients; c is killed once a third of them succeeded.
    let api = std::sync::Arc::new(api_a);
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let api = api.clone();
            std::thread::spawn(move || {
                (0..N / 4)
                    .map(|i| enqueue(&api, &format!("{t}-{i}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let succeeded = |api: &Api| -> usize {
        let mut n = 0;
        let mut before = String::new();
        loop {
            let q = if before.is_empty() {
                String::new()
            } else {
                format!("&before={before}")
            };
            let (_, page) = api.get_json(&format!(
                "/api/triggeredwebjobs/work/messages?state=Succeeded&limit=1000{q}"
            ));
            let msgs = page["messages"].as_array().cloned().unwrap_or_default();
            n += msgs.len();
            match msgs.last().and_then(|m| m["id"].as_str()) {
                Some(id) if msgs.len() == 1000 => before = id.to_string(),
                _ => return n,
            }
        }
    };
    a.wait_for("a third of the messages to succeed", DEADLINE * 4, || {
        succeeded(&api) >= N / 3
    });
    c.kill9();
    let ids: Vec<String> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    assert_eq!(ids.len(), N);
    a.wait_for("every message to succeed", DEADLINE * 6, || {
        succeeded(&api) == N
    });
    // Runs per message across the three hosts.
    let by = runs_by_host(&[&a, &b, &c]);
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for id in by.values().flatten() {
        *runs.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!(runs.len(), N, "every message ran");
    let twice: Vec<&&str> = runs
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    for id in &twice {
        let m = message(&api, id);
        assert!(
            m["attempts"].as_u64().unwrap() > 1,
            "{id} ran twice on one attempt: {m}"
        );
        assert!(
            by.get("c").is_some_and(|c| c.iter().any(|x| x == **id)),
            "{id} ran twice without c"
        );
    }
    assert!(
        twice.len() <= 4,
        "only what c was running (concurrency 4): {twice:?}"
    );
}

#[test]
fn an_occurrence_the_store_could_not_decide_runs_once_it_is_back() {
    let Some(db) = test_db("catch_up") else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432");
    let mut h = TestHost::on(&Sandbox::new(), Some("a"));
    h.write_job(
        TRIGGERED,
        "every10",
        &[
            ("run.sh", "#!/bin/sh\nexit 0\n"),
            ("settings.job", r#"{"schedule": "*/10 * * * * *"}"#),
        ],
    );
    let url = proxy.url(&db.url);
    h.start_with(|cmd| {
        cmd.arg("--store").arg(&url).arg("--lease-ttl").arg("3");
    });
    let occurrences = |h: &TestHost| -> Vec<String> {
        let dir = h.logs.join(TRIGGERED).join("every10");
        let mut all: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("status.json")).ok())
            .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter_map(|r| r["scheduled_for"].as_str().map(str::to_string))
            .collect();
        all.sort();
        all
    };
    h.wait_for("a first occurrence", DEADLINE, || {
        !occurrences(&h).is_empty()
    });
    // The store goes away before the next occurrence, which then cannot be decided.
    proxy.cut();
    let sched = h
        .logs
        .join(TRIGGERED)
        .join("every10")
        .join("job_scheduler.log");
    h.wait_for("an occurrence the store could not decide", DEADLINE, || {
        std::fs::read_to_string(&sched)
            .is_ok_and(|l| l.contains("cannot be asked for the run lease"))
    });
    let before = occurrences(&h);
    let restored_at = chrono::Utc::now();
    proxy.restore();
    // It runs once the store answers: an occurrence from before the store came back
    // (the next regular one is up to 10 s later).
    let caught_up = |h: &TestHost| -> Vec<String> {
        occurrences(h)
            .into_iter()
            .filter(|at| !before.contains(at))
            .filter(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok_and(|t| t < restored_at))
            .collect()
    };
    h.wait_for("the missed occurrence to run", DEADLINE, || {
        !caught_up(&h).is_empty()
    });
    assert_eq!(caught_up(&h).len(), 1, "once: {:?}", occurrences(&h));
    let all = occurrences(&h);
    let unique: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no occurrence twice: {all:?}");
}

/// A host that claimed an occurrence and stopped before its run started (as if
/// killed between the two) runs it when it comes back within the 10-minute rule:
/// the occurrence is neither lost nor run twice.
#[test]
fn a_host_back_runs_the_occurrence_it_claimed_but_never_started() {
    use chrono::{DateTime, Duration as Span, Utc};
    let Some(db) = test_db("own_claim") else {
        return;
    };
    let mut a = TestHost::on(&Sandbox::new(), Some("a"));
    a.write_job(
        TRIGGERED,
        "tick",
        &[
            ("run.sh", "#!/bin/sh\nexit 0\n"),
            ("settings.job", r#"{"schedule": "*/10 * * * * *"}"#),
        ],
    );
    let url = db.url.clone();
    let start = |a: &mut TestHost| {
        a.start_with(|cmd| {
            cmd.arg("--store").arg(&url).arg("--lease-ttl").arg("3");
        })
    };
    let fired = |a: &TestHost| -> Vec<DateTime<Utc>> {
        let dir = a.logs.join(TRIGGERED).join("tick");
        let mut all: Vec<DateTime<Utc>> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("status.json")).ok())
            .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter_map(|r| {
                DateTime::parse_from_rfc3339(r["scheduled_for"].as_str()?)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            })
            .collect();
        all.sort();
        all
    };
    start(&mut a);
    a.wait_for("a first scheduled run", DEADLINE * 2, || {
        !fired(&a).is_empty()
    });
    a.stop();
    let last = *fired(&a).last().unwrap();
    let next = last + Span::seconds(10);
    // The claim of the next occurrence made, its run never started.
    db.raw()
        .execute(
            "INSERT INTO jobhost_fires (job, occurrence, host) VALUES ('tick', $1, 'a')",
            &[&next],
        )
        .unwrap();
    while Utc::now() < next + Span::milliseconds(300) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    start(&mut a);
    a.wait_for("the claimed occurrence to run", DEADLINE * 2, || {
        fired(&a).contains(&next)
    });
    a.stop();
    let runs = fired(&a);
    assert_eq!(
        runs.iter().filter(|t| **t == next).count(),
        1,
        "ran once: {runs:?}"
    );
    let claims: i64 = db
        .raw()
        .query_one(
            "SELECT count(*) FROM jobhost_fires WHERE job = 'tick' AND occurrence = $1",
            &[&next],
        )
        .unwrap()
        .get(0);
    assert_eq!(claims, 1);
}

#[test]
fn a_message_run_shows_once_in_the_clusters_history_under_the_run_id_of_its_message() {
    let Some(db) = test_db("message_history") else {
        return;
    };
    // Each message fails its first attempt and succeeds its second.
    let script = "#!/bin/sh\n[ \"$WEBJOBS_MESSAGE_ATTEMPT\" = 1 ] && exit 1\nexit 0\n";
    let (a, api) = cluster_host(&db, "a", script, 2);
    let ids: Vec<String> = (0..3).map(|i| enqueue(&api, &format!("m{i}"))).collect();
    for id in &ids {
        a.wait_for("the message to succeed", DEADLINE, || {
            message(&api, id)["state"] == "Succeeded"
        });
    }
    let mut history = Value::Null;
    a.wait_for("the 6 runs in the history", DEADLINE, || {
        history = api.get_json("/api/triggeredwebjobs/work/history").1;
        history["runs"].as_array().is_some_and(|r| r.len() >= 6)
    });
    let listed: Vec<(String, String)> = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (field("message_id"), field("id"))
        })
        .collect();
    assert_eq!(listed.len(), 6, "one entry per run: {history}");
    for id in &ids {
        let m = message(&api, id);
        let runs: Vec<String> = m["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        assert_eq!(runs.len(), 2, "two attempts: {m}");
        for run in &runs {
            let n = listed
                .iter()
                .filter(|(mid, rid)| mid == id && rid == run)
                .count();
            assert_eq!(n, 1, "run {run} of {id} listed once: {history}");
            let (code, one) = api.get_json(&format!("/api/triggeredwebjobs/work/history/{run}"));
            assert_eq!(code, 200, "{one}");
            assert_eq!(one["message_id"].as_str(), Some(id.as_str()), "{one}");
        }
    }
    // And one row each in the store's table.
    let rows: i64 = db
        .raw()
        .query_one(
            "SELECT count(*) FROM jobhost_runs WHERE job = 'work' AND host = 'a'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 6);
}
