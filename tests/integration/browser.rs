//! The dashboard (docs/dashboard.md) in a real browser: a host with a few jobs, then
//! `node tests/browser/e2e.mjs` drives Debian's Chromium through playwright-core
//! against it (log in, live log, stop/start, a failed run, deploy, XSS, cross-origin).
//!
//! Without `node`, `/usr/bin/chromium` or `tests/browser/node_modules` the browser
//! test prints one line naming what is missing and passes, so `cargo test` works with
//! the Rust toolchain alone; `.ci/run` installs them and sets
//! `JOBHOST_REQUIRE_BROWSER=1`, which makes a missing piece a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::client::*;
use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser run; only bounds a hang.
const BROWSER_DEADLINE: Duration = Duration::from_secs(300);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What is missing to run the browser tests, if anything.
fn missing_piece() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("`node` is not on PATH (install Node 20)".into());
    }
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    if !browser_dir().join("node_modules/playwright-core").is_dir() {
        return Some(
            "tests/browser/node_modules is missing (run `npm ci` in tests/browser)".into(),
        );
    }
    None
}

/// True when the browser test must be skipped, after saying why on one line (past
/// the test harness's capture, so `cargo test` shows it).
fn skip_browser(test: &str) -> bool {
    let Some(missing) = missing_piece() else {
        return false;
    };
    assert!(
        std::env::var("JOBHOST_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "JOBHOST_REQUIRE_BROWSER=1 but {missing}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "browser test {test} skipped: {missing}; .ci/run installs what is missing and makes it mandatory"
    );
    true
}

fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts")
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        let opts = zip::write::SimpleFileOptions::default()
            .unix_permissions(if name.ends_with(".sh") { 0o755 } else { 0o644 });
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Runs a script of tests/browser against the host; panics with its output on failure.
fn run_node(h: &TestHost, api: &Api, script: &str, env: &[(&str, String)]) -> String {
    let out_path = h.root.join(format!("{script}.out"));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join(script))
        .current_dir(browser_dir())
        .env("E2E_URL", &api.base)
        .env("E2E_TOKEN", &api.token)
        .env("E2E_STATE", &h.state)
        .env("E2E_ARTIFACTS", artifacts_dir())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("starting node");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > BROWSER_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "{script} failed ({status:?}); screenshots in {}:\n{text}\n{}",
        artifacts_dir().display(),
        h.dump()
    );
    text
}

#[test]
fn the_dashboard_logs_in_follows_runs_stops_deploys_and_shows_hostile_text_as_text() {
    if skip_browser(
        "the_dashboard_logs_in_follows_runs_stops_deploys_and_shows_hostile_text_as_text",
    ) {
        return;
    }
    let mut h = TestHost::new();
    // Waits for the test's go-ahead so the browser sees its log arrive live.
    h.write_job(
        TRIGGERED,
        "greet",
        &[(
            "run.sh",
            "#!/bin/bash\nfor a in \"$@\"; do echo \"arg=[$a]\"; done\nwhile [ ! -e \"$TEST_STATE/go\" ]; do sleep 0.1; done\necho 'after go'\n",
        )],
    );
    h.write_job(CONTINUOUS, "web", &[("run.sh", &sleeper("web"))]);
    // Numbered lines, for the check that a resumed log has no gap or repeat.
    h.write_job(
        CONTINUOUS,
        "tick",
        &[(
            "run.sh",
            "#!/bin/bash\ni=0\nwhile true; do i=$((i+1)); echo \"tick $i\"; sleep 0.1; done\n",
        )],
    );
    h.write_job(
        TRIGGERED,
        "fails",
        &[(
            "run.sh",
            "#!/bin/bash\necho working\necho 'boom: disk full' >&2\nexit 3\n",
        )],
    );
    h.write_job(
        TRIGGERED,
        "xss",
        &[
            (
                "run.sh",
                "#!/bin/bash\necho '<img src=x onerror=alert(1)>'\n",
            ),
            (
                "settings.job",
                r#"{"stopping_wait_time": 5, "env": {"NOTE": "<img src=y onerror=alert(2)>"}}"#,
            ),
        ],
    );
    h.write_job(
        TRIGGERED,
        "nightly",
        &[
            ("run.sh", QUICK_JOB),
            ("settings.job", r#"{"schedule": "0 0 3 * * *"}"#),
        ],
    );
    h.write_job(
        TRIGGERED,
        "broken",
        &[("run.sh", QUICK_JOB), ("settings.job", "{\"schedule\": 42")],
    );
    h.start();
    let api = connect(&h);
    api.wait_continuous_status(&h, "web", "Running");
    for job in ["fails", "xss"] {
        let id = api.start_run(job);
        api.wait_run_end(&h, job, &id);
    }
    let zip = h.root.join("deployme.zip");
    std::fs::write(
        &zip,
        zip_of(&[("run.sh", b"#!/bin/bash\necho deployed by zip\n")]),
    )
    .unwrap();
    let out = run_node(
        &h,
        &api,
        "e2e.mjs",
        &[("E2E_ZIP", zip.display().to_string())],
    );
    assert!(out.contains("all browser checks passed"), "{out}");

    // What the browser did is what the API shows; the cross-origin page did nothing.
    let (_, hist) = api.get_json("/api/triggeredwebjobs/greet/history");
    assert_eq!(
        hist["runs"].as_array().unwrap().len(),
        1,
        "one run from the dashboard, none from the other origin: {hist:#}"
    );
    assert_eq!(api.get("/api/triggeredwebjobs/deployed").status(), 200);
    h.finish();
}

#[test]
fn the_api_never_asks_a_browser_for_basic_credentials() {
    let (mut h, api) = host_with_triggered("tj", QUICK_JOB);
    // The page and its script hold no data: they answer without the token.
    for path in ["/", "/dashboard.js"] {
        let r = api.http.get(api.url(path)).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    for path in ["/api/webjobs", "/api/events", "/metrics", "/nope"] {
        let r = api.http.get(api.url(path)).send().unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
        assert_eq!(challenges, ["Bearer realm=\"jobhost\""], "{path}");
    }
    // A wrong Basic password is refused the same way (no Basic challenge to retry).
    let r = api
        .http
        .get(api.url("/api/webjobs"))
        .basic_auth("any", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"jobhost\"");
    // Kudu clients that send Basic with the token still work.
    assert_eq!(
        api.basic(reqwest::Method::GET, "/api/webjobs")
            .send()
            .unwrap()
            .status(),
        200
    );
    h.finish();
}

#[test]
fn the_dashboard_shows_a_queue_its_dead_letters_and_requeues_and_deletes_them() {
    if skip_browser("the_dashboard_shows_a_queue_its_dead_letters_and_requeues_and_deletes_them") {
        return;
    }
    let mut h = TestHost::new();
    // "bad" can never succeed (65: dead at once); the others wait for the test's
    // go-ahead, so the browser sees messages queued and running, then write a result.
    h.write_job(
        TRIGGERED,
        "q",
        &[
            (
                "run.sh",
                "#!/bin/bash\npayload=$(cat)\nif [ \"$payload\" = bad ]; then echo 'cannot parse payload: bad' >&2; exit 65; fi\nwhile [ ! -e \"$TEST_STATE/go\" ]; do sleep 0.1; done\nprintf 'ok:%s' \"$payload\" > \"$WEBJOBS_RESULT_PATH\"\n",
            ),
            ("settings.job", r#"{"queue": {}}"#),
        ],
    );
    h.write_job(TRIGGERED, "plain", &[("run.sh", QUICK_JOB)]);
    h.start();
    let api = connect(&h);
    let out = run_node(&h, &api, "queues.mjs", &[]);
    assert!(out.contains("all browser checks passed"), "{out}");

    // What the browser did is what the API shows.
    let (_, dead) = api.get_json("/api/triggeredwebjobs/q/messages?state=Dead");
    assert_eq!(dead["messages"], serde_json::json!([]), "{dead:#}");
    let (_, done) = api.get_json("/api/triggeredwebjobs/q/messages?state=Succeeded");
    assert_eq!(
        done["messages"].as_array().unwrap().len(),
        3,
        "good1, good2 and the form's: {done:#}"
    );
    let (_, job) = api.get_json("/api/triggeredwebjobs/q");
    assert_eq!(job["queue"]["dead"], 0, "{job:#}");
    assert_eq!(job["queue"]["queued"], 21, "{job:#}");
    h.finish();
}
