//! Deploys in a cluster: a job deployed, changed or deleted through any host's API
//! reaches every host's JOBS (each host has its own folders here, as on machines of
//! their own), a host that joins later gets every live job, a job put in one host's
//! folder by hand stays there, and a bad package in the store is logged on each host
//! without disturbing anything else.
//!
//! Needs PostgreSQL, as `cluster.rs` (skipped in one line without it unless
//! `JOBHOST_REQUIRE_POSTGRES=1`).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use reqwest::Method;
use serde_json::Value;

use crate::cluster_support::{TestDb, connect_instance, test_db};
use crate::support::client::{Api, json_of, send};
use crate::support::{DEADLINE, Sandbox, TRIGGERED, TestHost};

/// A host of `db`'s cluster named `name`, on folders of its own, with `jobs` (type,
/// name, script) written there by hand before it starts.
fn host(db: &TestDb, name: &str, jobs: &[(&str, &str, &str)]) -> (TestHost, Api) {
    let mut h = TestHost::on(&Sandbox::new(), Some(name));
    for (t, job, script) in jobs {
        h.write_job(t, job, &[("run.sh", script)]);
    }
    let url = db.url.clone();
    h.start_with(|cmd| {
        cmd.arg("--store").arg(&url).arg("--lease-ttl").arg("3");
    });
    let api = connect_instance(&h, name);
    (h, api)
}

fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, mode) in entries {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// `PUT /api/triggeredwebjobs/NAME` with a zip: the status and the response.
fn deploy_zip(api: &Api, name: &str, zip: Vec<u8>) -> reqwest::blocking::Response {
    let path = format!("/api/triggeredwebjobs/{name}");
    send(
        api.req(Method::PUT, &path)
            .header("Content-Type", "application/zip")
            .body(zip),
        "PUT",
        &path,
    )
}

fn code(api: &Api, path: &str) -> u16 {
    api.get(path).status().as_u16()
}

/// Run records of `job` in `h`'s LOGS: (instance, status).
fn records(h: &TestHost, job: &str) -> Vec<(String, String)> {
    let dir = h.logs.join(TRIGGERED).join(job);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(bytes) = std::fs::read(e.path().join("status.json")) else {
            continue;
        };
        let Ok(r) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        out.push((
            r["instance"].as_str().unwrap_or_default().to_string(),
            r["status"].as_str().unwrap_or_default().to_string(),
        ));
    }
    out
}

/// The store's package versions: (type/name, version, origin, deleted).
fn packages(db: &TestDb) -> Vec<(String, i64, String, bool)> {
    db.raw()
        .query(
            "SELECT job_type || '/' || name, version, origin, package IS NULL \
             FROM jobhost_packages ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[test]
fn deploys_settings_and_deletes_through_any_host_reach_every_host() {
    let Some(db) = test_db("cluster_deploy") else {
        return;
    };
    let quick = "#!/bin/sh\necho \"hello from $WEBJOBS_NAME\"\n";
    // `mine` is in a's folder only, put there by hand: it stays a's.
    let (a, api_a) = host(&db, "a", &[(TRIGGERED, "mine", quick)]);
    let (b, api_b) = host(&db, "b", &[]);
    let (c, api_c) = host(&db, "c", &[]);

    // Deployed through a: b and c have it, the script's mode kept.
    let zip = zip_of(&[
        ("run.sh", quick.as_bytes(), 0o755),
        ("data/notes.txt", b"notes", 0o640),
    ]);
    let resp = deploy_zip(&api_a, "hello", zip);
    assert_eq!(resp.status(), 201, "{:?}", resp.text());
    assert!(resp.headers().get("x-jobhost-cluster-warning").is_none());
    let deployed = Instant::now();
    let mut seen = Vec::new();
    for (h, api, name) in [(&b, &api_b, "b"), (&c, &api_c, "c")] {
        h.wait_for(&format!("hello on {name}"), DEADLINE, || {
            code(api, "/api/triggeredwebjobs/hello") == 200
        });
        seen.push((name, deployed.elapsed()));
    }
    let _ = writeln!(
        std::io::stderr(),
        "deploy through a seen on b and c after {seen:?}"
    );
    let run_sh = c.jobs.join(TRIGGERED).join("hello").join("run.sh");
    let mode = std::fs::metadata(&run_sh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    assert_eq!(
        std::fs::read_to_string(c.jobs.join("triggered/hello/data/notes.txt")).unwrap(),
        "notes"
    );

    // Triggered on c: it runs there, and only there.
    let (code_run, accepted) = api_c.post_json("/api/triggeredwebjobs/hello/run");
    assert_eq!(code_run, 202, "{accepted}");
    c.wait_for("c's run of hello to succeed", DEADLINE, || {
        records(&c, "hello") == [("c".to_string(), "Success".to_string())]
    });
    assert!(records(&a, "hello").is_empty() && records(&b, "hello").is_empty());

    // Settings through b: a's and c's job show them.
    let path = "/api/triggeredwebjobs/hello/settings";
    let (put, v) = json_of(send(
        api_b
            .req(Method::PUT, path)
            .body(r#"{"stopping_wait_time": 7}"#),
        "PUT",
        path,
    ));
    assert_eq!(put, 200, "{v}");
    assert!(v["cluster_warning"].is_null(), "{v}");
    for (h, api, name) in [(&a, &api_a, "a"), (&c, &api_c, "c")] {
        h.wait_for(&format!("the new settings on {name}"), DEADLINE, || {
            api.get_json("/api/triggeredwebjobs/hello").1["settings"]["stopping_wait_time"] == 7
        });
    }

    // Deleted through c: gone from a and b.
    let (del, v) = json_of(api_c.delete("/api/triggeredwebjobs/hello"));
    assert_eq!(del, 200, "{v}");
    for (h, api, name) in [(&a, &api_a, "a"), (&b, &api_b, "b")] {
        h.wait_for(&format!("hello gone from {name}"), DEADLINE, || {
            code(api, "/api/triggeredwebjobs/hello") == 404
        });
    }
    assert!(!a.jobs.join(TRIGGERED).join("hello").exists());

    // A continuous job stopped through b (its disable.job) stops on every host.
    let path = "/api/continuouswebjobs/svc";
    let resp = send(
        api_a
            .req(Method::PUT, path)
            .header("Content-Disposition", "attachment; filename=run.sh")
            .body("#!/bin/sh\nwhile true; do sleep 1; done\n"),
        "PUT",
        path,
    );
    assert_eq!(resp.status(), 201);
    b.wait_for("svc on b", DEADLINE, || code(&api_b, path) == 200);
    let (stop, v) = api_b.post_json("/api/continuouswebjobs/svc/stop");
    assert_eq!(stop, 200, "{v}");
    for (h, api, name) in [(&a, &api_a, "a"), (&c, &api_c, "c")] {
        h.wait_for(&format!("svc stopped on {name}"), DEADLINE, || {
            let job = api.get_json(path).1;
            job["disabled"] == true && job["status"] == "Stopped"
        });
    }

    // A host that joins later gets every live job at its first sync, and not the
    // deleted one.
    let resp = deploy_zip(
        &api_b,
        "second",
        zip_of(&[("run.sh", quick.as_bytes(), 0o755)]),
    );
    assert_eq!(resp.status(), 201);
    let (d, api_d) = host(&db, "d", &[]);
    d.wait_for("second on d", DEADLINE, || {
        code(&api_d, "/api/triggeredwebjobs/second") == 200
    });
    assert_eq!(code(&api_d, "/api/triggeredwebjobs/hello"), 404);
    for h in [&a, &c] {
        h.wait_for("second everywhere", DEADLINE, || {
            h.jobs.join(TRIGGERED).join("second/run.sh").exists()
        });
    }

    // What was only in a's folder stayed there.
    assert_eq!(code(&api_a, "/api/triggeredwebjobs/mine"), 200);
    for api in [&api_b, &api_c, &api_d] {
        assert_eq!(code(api, "/api/triggeredwebjobs/mine"), 404);
    }
    // One version per change through an API: no host recorded what it installed.
    assert_eq!(
        packages(&db),
        [
            ("continuous/svc".to_string(), 2, "b".to_string(), false),
            ("triggered/hello".to_string(), 3, "c".to_string(), true),
            ("triggered/second".to_string(), 1, "b".to_string(), false),
        ]
    );
    // d noted what it applied: a restart does not install it again.
    let state = d.logs.join(".jobhost-packages-d.json");
    let state: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(state["applied"]["triggered/second"], 1, "{state}");
}

#[test]
fn a_bad_package_in_the_store_is_logged_on_each_host_and_disturbs_nothing() {
    let Some(db) = test_db("cluster_bad_package") else {
        return;
    };
    let quick = "#!/bin/sh\necho hi\n";
    let (a, api_a) = host(&db, "a", &[]);
    let (b, api_b) = host(&db, "b", &[]);
    let resp = deploy_zip(
        &api_a,
        "good",
        zip_of(&[("run.sh", quick.as_bytes(), 0o755)]),
    );
    assert_eq!(resp.status(), 201);
    b.wait_for("good on b", DEADLINE, || {
        code(&api_b, "/api/triggeredwebjobs/good") == 200
    });

    // Garbage where a zip should be, and a name that is not one, written by hand.
    db.raw()
        .batch_execute(
            "INSERT INTO jobhost_packages (job_type, name, version, package, origin) \
             VALUES ('triggered', 'junk', 1, '\\x6e6f74207a6970'::bytea, 'x'), \
                    ('triggered', 'up/../../escape', 1, '\\x00'::bytea, 'x')",
        )
        .unwrap();
    for (h, name) in [(&a, "a"), (&b, "b")] {
        h.wait_for(&format!("{name} to log the bad packages"), DEADLINE, || {
            let log = h.host_log(Some(name));
            log.lines().any(|l| {
                l.contains("triggered job junk")
                    && l.contains("not installed here")
                    && l.contains("zip is not readable")
            }) && log
                .lines()
                .any(|l| l.contains("up/../../escape") && l.contains("not a valid job name"))
        });
    }

    // Deploys go on, the others' jobs are untouched, nothing was written for them.
    let resp = deploy_zip(
        &api_b,
        "after",
        zip_of(&[("run.sh", quick.as_bytes(), 0o755)]),
    );
    assert_eq!(resp.status(), 201);
    a.wait_for("after on a", DEADLINE, || {
        code(&api_a, "/api/triggeredwebjobs/after") == 200
    });
    for (h, api, name) in [(&a, &api_a, "a"), (&b, &api_b, "b")] {
        assert_eq!(code(api, "/api/triggeredwebjobs/good"), 200, "{name}");
        assert_eq!(code(api, "/api/triggeredwebjobs/junk"), 404, "{name}");
        let mut entries: Vec<String> = std::fs::read_dir(h.jobs.join(TRIGGERED))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(entries, ["after", "good"], "{name}");
        assert!(!h.jobs.join("escape").exists() && !h.root.join("escape").exists());
        // Logged once: not tried again in a loop.
        let log = h.host_log(Some(name));
        let times = log
            .lines()
            .filter(|l| l.contains("triggered job junk") && l.contains("not installed"))
            .count();
        assert_eq!(times, 1, "{name}: {log}");
    }
}

#[test]
fn a_deploy_the_store_cannot_record_stands_on_its_host_and_the_answer_says_so() {
    let Some(db) = test_db("cluster_deploy_unrecorded") else {
        return;
    };
    let quick = "#!/bin/sh\necho hi\n";
    let (a, api_a) = host(&db, "a", &[]);
    // The packages table gone (as if the store failed): the write cannot be recorded.
    db.raw()
        .batch_execute("ALTER TABLE jobhost_packages RENAME TO jobhost_packages_away")
        .unwrap();
    let resp = deploy_zip(
        &api_a,
        "solo",
        zip_of(&[("run.sh", quick.as_bytes(), 0o755)]),
    );
    assert_eq!(resp.status(), 201, "the local deploy stands");
    let warning = resp
        .headers()
        .get("x-jobhost-cluster-warning")
        .expect("the answer says the cluster copy failed")
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        warning.contains("triggered job solo")
            && warning.contains("on this host only")
            && warning.contains("jobhost_packages")
            && warning.contains("repeat the request"),
        "{warning}"
    );
    assert_eq!(code(&api_a, "/api/triggeredwebjobs/solo"), 200);
    a.wait_for("the host log to tell", DEADLINE, || {
        a.host_log(Some("a")).contains("on this host only")
    });
    let (del, v) = json_of(api_a.delete("/api/triggeredwebjobs/solo"));
    assert_eq!(del, 200, "{v}");
    assert!(
        v["cluster_warning"]
            .as_str()
            .is_some_and(|w| w.contains("on this host only")),
        "{v}"
    );
    assert_eq!(code(&api_a, "/api/triggeredwebjobs/solo"), 404);

    // The store back: the next write is recorded, without a warning.
    db.raw()
        .batch_execute("ALTER TABLE jobhost_packages_away RENAME TO jobhost_packages")
        .unwrap();
    let resp = deploy_zip(
        &api_a,
        "solo",
        zip_of(&[("run.sh", quick.as_bytes(), 0o755)]),
    );
    assert_eq!(resp.status(), 201);
    assert!(resp.headers().get("x-jobhost-cluster-warning").is_none());
    assert_eq!(
        packages(&db),
        [("triggered/solo".to_string(), 1, "a".to_string(), false)]
    );
}
