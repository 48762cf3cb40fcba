//! Security of the API against the real server: the token (CSPRNG, a token file the
//! host must not trust, a short `JOBHOST_TOKEN`), cross-site writes, the `Host`
//! header, framing headers, SSE field injection through a bare CR, slow clients that
//! would take every file descriptor, and the dashboard's two bugs.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

use crate::support::client::*;
use crate::support::*;

// ----- client ----------------------------------------------------------------------

impl Api {
    /// A request written by hand (so `Host` is exactly what the test says, or
    /// absent); `Connection: close`. Returns status, head and body.
    fn raw(&self, request_line: &str, headers: &[(&str, &str)], body: &str) -> Raw {
        let mut s = TcpStream::connect(self.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = format!(
            "{request_line}\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.token,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        Raw {
            code,
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }
}

struct Raw {
    code: u16,
    /// Lower-cased status line and headers.
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}\n{}", self.body, self.head))
    }
}

/// A job that appends a line to `$TEST_STATE/NAME.runs` each time it runs.
fn marker_job(name: &str) -> String {
    format!("#!/bin/bash\necho \"$$\" >> \"$TEST_STATE/{name}.runs\"\necho done\n")
}

// ----- the token ---------------------------------------------------------------------

#[test]
fn the_generated_token_is_256_random_bits_in_a_file_only_the_host_user_can_read() {
    let mut h = TestHost::start_new();
    let api = connect(&h);
    assert_eq!(api.token.len(), 64, "{}", api.token);
    assert!(api.token.chars().all(|c| c.is_ascii_hexdigit()));
    let meta = fs::symlink_metadata(h.logs.join(".jobhost-token")).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
    // Read back, not replaced, on the next start.
    assert_eq!(h.stop().code(), Some(0));
    fs::remove_file(h.logs.join(".jobhost-url")).unwrap();
    h.start();
    assert_eq!(connect(&h).token, api.token);
    h.finish();
}

/// Each case prepares LOGS/.jobhost-token (or JOBHOST_TOKEN); the host must exit
/// non-zero at start, before any job runs, naming the file or variable and the fix.
#[test]
fn a_token_file_the_host_must_not_trust_or_a_short_jobhost_token_stops_it_at_start() {
    type Prepare = fn(&TestHost);
    let cases: [(&str, Prepare, Option<&str>, &[&str]); 6] = [
        (
            // It used to recurse until the stack overflowed.
            "a dangling symlink",
            |h| {
                std::os::unix::fs::symlink(h.root.join("nowhere"), h.logs.join(".jobhost-token"))
                    .unwrap()
            },
            None,
            &[".jobhost-token", "symbolic link", "remove"],
        ),
        (
            "a symlink to a private file",
            |h| {
                let real = h.root.join("real-token");
                fs::write(&real, "0123456789abcdef0123456789\n").unwrap();
                fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
                std::os::unix::fs::symlink(&real, h.logs.join(".jobhost-token")).unwrap();
            },
            None,
            &[".jobhost-token", "symbolic link"],
        ),
        (
            "a folder",
            |h| fs::create_dir(h.logs.join(".jobhost-token")).unwrap(),
            None,
            &[".jobhost-token", "not a regular file", "a folder"],
        ),
        (
            "a file others can read",
            |h| {
                let p = h.logs.join(".jobhost-token");
                fs::write(&p, "0123456789abcdef0123456789\n").unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            },
            None,
            &[".jobhost-token", "644", "chmod 600"],
        ),
        (
            "a file the group can write",
            |h| {
                let p = h.logs.join(".jobhost-token");
                fs::write(&p, "0123456789abcdef0123456789\n").unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o620)).unwrap();
            },
            None,
            &[".jobhost-token", "620", "chmod 600"],
        ),
        (
            "a 15-byte JOBHOST_TOKEN",
            |_| {},
            Some("0123456789abcde"),
            &["JOBHOST_TOKEN", "15 bytes", "at least 16"],
        ),
    ];
    for (what, prepare, env, needles) in cases {
        let mut h = TestHost::new();
        h.write_job(CONTINUOUS, "c", &[("run.sh", &sleeper("c"))]);
        prepare(&h);
        let (status, stderr) = h.run_to_exit_with(|cmd| {
            if let Some(t) = env {
                cmd.env("JOBHOST_TOKEN", t);
            }
        });
        assert_eq!(
            status.code(),
            Some(1),
            "{what}: exit {} (a crash is not a refusal)\n{stderr}",
            describe(&status)
        );
        for n in needles {
            assert!(stderr.contains(n), "{what}: stderr lacks {n:?}:\n{stderr}");
        }
        assert!(!h.state_exists("c.pids"), "{what}: a job ran");
        assert!(
            !h.logs.join(".jobhost-url").exists(),
            "{what}: the host published an address"
        );
    }
}

#[test]
fn a_jobhost_token_of_16_bytes_is_accepted() {
    let mut h = TestHost::new();
    let token = "0123456789abcdef";
    h.start_with(|cmd| {
        cmd.env("JOBHOST_TOKEN", token);
    });
    let addr = {
        let mut a = String::new();
        h.wait_for("the URL file", DEADLINE, || {
            a = fs::read_to_string(h.logs.join(".jobhost-url")).unwrap_or_default();
            !a.trim().is_empty()
        });
        a.trim().to_string()
    };
    let http = Client::builder().no_proxy().build().unwrap();
    h.wait_for("GET /api/webjobs with the 16-byte token", DEADLINE, || {
        http.get(format!("{addr}/api/webjobs"))
            .bearer_auth(token)
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    h.finish();
}

// ----- cross-site requests --------------------------------------------------------------

#[test]
fn cross_site_simple_posts_with_cached_basic_credentials_cannot_run_stop_or_delete_jobs() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "tj", &[("run.sh", &marker_job("tj"))]);
    h.write_job(CONTINUOUS, "c", &[("run.sh", &sleeper("c"))]);
    h.start();
    let api = connect(&h);
    let pid = h.wait_running("c");
    api.wait_code(&h, "/api/triggeredwebjobs/tj", 200);
    let post = reqwest::Method::POST;

    let refused: Vec<(&str, RequestBuilder)> = vec![
        (
            "a text/plain POST from another site",
            api.basic(post.clone(), "/api/triggeredwebjobs/tj/run")
                .header("Content-Type", "text/plain")
                .header("Origin", "http://evil.example")
                .body(r#"{"arguments":["rm","-rf"]}"#),
        ),
        (
            "a form POST from another site",
            api.basic(post.clone(), "/api/triggeredwebjobs/tj/run?arguments=x")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Origin", "http://evil.example")
                .header("Sec-Fetch-Site", "cross-site")
                .body("a=b"),
        ),
        (
            "a POST from a sandboxed frame (Origin: null)",
            api.basic(post.clone(), "/api/triggeredwebjobs/tj/run")
                .header("Origin", "null"),
        ),
        (
            "a POST from a sibling site without Origin",
            api.basic(post.clone(), "/api/continuouswebjobs/c/stop")
                .header("Sec-Fetch-Site", "same-site"),
        ),
        (
            "a POST from another port of this machine",
            api.basic(post.clone(), "/api/continuouswebjobs/c/stop")
                .header(
                    "Origin",
                    format!("http://127.0.0.1:{}", port_of(api.addr()) ^ 1).as_str(),
                ),
        ),
        (
            "a DELETE from another site",
            api.basic(reqwest::Method::DELETE, "/api/triggeredwebjobs/tj")
                .header("Origin", "http://evil.example"),
        ),
        (
            "a settings PUT from another site",
            api.basic(reqwest::Method::PUT, "/api/triggeredwebjobs/tj/settings")
                .header("Content-Type", "text/plain")
                .header("Sec-Fetch-Site", "cross-site")
                .body(r#"{"schedule": "* * * * * *"}"#),
        ),
    ];
    for (what, rb) in refused {
        let r = rb.send().unwrap();
        assert_eq!(
            r.headers().get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"DENY"[..]),
            "{what}"
        );
        let (code, body) = json_of(r);
        assert_eq!(code, 403, "{what}: {body:#}");
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(msg.contains("cross-"), "{what}: {msg}");
    }
    // Nothing was disturbed: no run, the same process, the folder and settings kept.
    let (code, hist) = api.get_json("/api/triggeredwebjobs/tj/history");
    assert_eq!(code, 200);
    assert_eq!(hist["runs"].as_array().map(Vec::len), Some(0), "{hist:#}");
    assert!(!h.state_exists("tj.runs"));
    let (_, c) = api.get_json("/api/continuouswebjobs/c");
    assert_eq!(c["status"], "Running", "{c:#}");
    assert_eq!(c["pid"], pid, "{c:#}");
    assert!(h.job_dir(TRIGGERED, "tj").join("run.sh").exists());
    assert!(!h.job_dir(TRIGGERED, "tj").join("settings.job").exists());

    // Reads from elsewhere are answered but shared with no one (no CORS headers).
    let r = api
        .basic(reqwest::Method::GET, "/api/webjobs")
        .header("Origin", "http://evil.example")
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // The dashboard's own requests (same origin) work...
    let (code, body) = json_of(
        api.basic(post.clone(), "/api/triggeredwebjobs/tj/run")
            .header("Origin", format!("http://{}", api.addr()).as_str())
            .header("Sec-Fetch-Site", "same-origin")
            .send()
            .unwrap(),
    );
    assert_eq!(code, 202, "{body:#}");
    h.wait_for("the dashboard's run to start", DEADLINE, || {
        h.state_exists("tj.runs")
    });
    // ...and so do clients that are not browsers (curl -u, the CLI).
    let (code, body) = json_of(
        api.basic(post, "/api/continuouswebjobs/c/stop")
            .send()
            .unwrap(),
    );
    assert_eq!(code, 200, "{body:#}");
    h.finish();
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

// ----- Host header --------------------------------------------------------------------

#[test]
fn a_host_header_naming_another_server_is_refused_and_never_echoed() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "tj", &[("run.sh", &marker_job("tj"))]);
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/tj", 200);
    let port = port_of(api.addr());

    // DNS rebinding: the browser sends the attacker's name with our port.
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port ^ 1),
        "127.0.0.1".to_string(),
        format!("localhost:{port}/x"),
        format!("a@localhost:{port}"),
        format!("\"localhost\":{port}"),
    ] {
        let r = api.raw(
            "POST /api/triggeredwebjobs/tj/run HTTP/1.1",
            &[("Host", &host)],
            "",
        );
        assert_eq!(r.code, 400, "Host: {host}\n{}\n{}", r.head, r.body);
        let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("Host header"), "{msg}");
        assert!(!r.head.contains("location:"), "{}", r.head);
    }
    assert!(!h.state_exists("tj.runs"), "a refused request ran the job");

    // Loopback names with the bound port are echoed as given.
    for host in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let r = api.raw(
            "GET /api/triggeredwebjobs/tj HTTP/1.1",
            &[("Host", &host)],
            "",
        );
        assert_eq!(r.code, 200, "Host: {host}: {}", r.body);
        assert_eq!(
            r.json()["url"],
            format!("http://{host}/api/triggeredwebjobs/tj"),
            "Host: {host}"
        );
    }
    // Without a Host header (HTTP/1.0), the URLs name the bound address.
    let r = api.raw("GET /api/triggeredwebjobs/tj HTTP/1.0", &[], "");
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(
        r.json()["url"],
        format!("http://{}/api/triggeredwebjobs/tj", api.addr())
    );
    // The Location of an accepted run carries the checked Host.
    let r = api.raw(
        "POST /api/triggeredwebjobs/tj/run HTTP/1.1",
        &[("Host", &format!("localhost:{port}"))],
        "",
    );
    assert_eq!(r.code, 202, "{}", r.body);
    assert!(
        r.head.contains(&format!(
            "location: http://localhost:{port}/api/triggeredwebjobs/tj/history/"
        )),
        "{}",
        r.head
    );
    h.finish();
}

// ----- framing ------------------------------------------------------------------------

#[test]
fn no_response_can_be_framed_or_sniffed() {
    let mut h = TestHost::start_new();
    let api = connect(&h);
    let check = |what: &str, r: &Response| {
        let get = |k: &str| {
            r.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(get("x-frame-options"), "DENY", "{what}");
        assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
        assert!(
            get("content-security-policy").contains("frame-ancestors 'none'"),
            "{what}: {}",
            get("content-security-policy")
        );
    };
    let page = api.basic(reqwest::Method::GET, "/").send().unwrap();
    assert_eq!(page.status(), 200);
    check("the dashboard", &page);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    for (what, r) in [
        (
            "the script",
            api.basic(reqwest::Method::GET, "/dashboard.js")
                .send()
                .unwrap(),
        ),
        (
            "a job list",
            api.basic(reqwest::Method::GET, "/api/webjobs")
                .send()
                .unwrap(),
        ),
        (
            "a 401",
            api.http.get(api.url("/api/webjobs")).send().unwrap(),
        ),
        (
            "a 404",
            api.basic(reqwest::Method::GET, "/nope").send().unwrap(),
        ),
        (
            "health",
            api.http.get(api.url("/api/health")).send().unwrap(),
        ),
    ] {
        check(what, &r);
    }
    h.finish();
}

// ----- SSE ----------------------------------------------------------------------------

/// One event as an EventSource dispatches it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

/// Parses a stream as the HTML standard's EventSource does: lines end at CRLF, CR or
/// LF; `field: value`; a blank line dispatches.
fn parse_event_stream(text: &str) -> Vec<Event> {
    let mut events = Vec::new();
    let mut cur = Event::default();
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalised.split('\n') {
        if line.is_empty() {
            if cur != Event::default() {
                events.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
        match field {
            "id" => cur.id = Some(value),
            "event" => cur.event = Some(value),
            "data" => cur.data.push(value),
            _ => {}
        }
    }
    events
}

#[test]
fn a_bare_cr_in_job_output_cannot_forge_sse_id_or_event_fields() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "cr",
        &[(
            "run.sh",
            "#!/bin/bash\nprintf 'a\\rid: forged\\revent: x\\r\\n'\nprintf 'bar 10%%\\rbar 100%%\\n'\n",
        )],
    );
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/cr", 200);
    let (code, body) = json_of(
        api.basic(reqwest::Method::POST, "/api/triggeredwebjobs/cr/run")
            .send()
            .unwrap(),
    );
    assert_eq!(code, 202, "{body:#}");
    let id = body["id"].as_str().unwrap().to_string();
    let output = format!("/api/triggeredwebjobs/cr/history/{id}/output");
    let mut text = String::new();
    // follow=1 ends with the run.
    h.wait_for(
        "the run's output to hold the progress bar",
        DEADLINE,
        || {
            text = api
                .basic(reqwest::Method::GET, &format!("{output}?follow=1"))
                .header("Accept", "text/event-stream")
                .send()
                .unwrap()
                .text()
                .unwrap();
            text.contains("bar 100%")
        },
    );
    let events = parse_event_stream(&text);
    assert!(!events.is_empty(), "{text:?}");
    for e in &events {
        assert_eq!(e.event, None, "a job chose an event type: {e:?}\n{text:?}");
        let id = e.id.as_deref().unwrap_or_default();
        assert!(
            id.split_once(':')
                .is_some_and(|(i, o)| i.parse::<u64>().is_ok() && o.parse::<u64>().is_ok()),
            "an event id that is not a log position: {e:?}\n{text:?}"
        );
    }
    let data: Vec<String> = events.iter().flat_map(|e| e.data.clone()).collect();
    // The forged fields arrive as data, on lines of their own.
    assert!(data.iter().any(|d| d == "id: forged"), "{data:#?}");
    assert!(data.iter().any(|d| d == "event: x"), "{data:#?}");
    assert!(data.iter().any(|d| d == "bar 100%"), "{data:#?}");
    h.finish();
}

// ----- slow clients ---------------------------------------------------------------------

/// Opens a connection and sends half a request (headers never finished).
fn half_sent(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
        .unwrap();
    s
}

#[test]
fn half_sent_requests_beyond_the_fd_limit_leave_jobs_working_and_the_api_recovers() {
    const FD_LIMIT: u64 = 128;
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "flap",
        &[
            ("run.sh", &marker_job("flap")),
            (
                "settings.job",
                r#"{"restart_delay": 1, "restart_max_delay": 1}"#,
            ),
        ],
    );
    h.write_job(
        TRIGGERED,
        "tick",
        &[
            ("run.sh", &marker_job("tick")),
            ("settings.job", r#"{"schedule": "* * * * * *"}"#),
        ],
    );
    h.start_with(|cmd| {
        // The half-sent sockets are held until the test closes them.
        cmd.env("JOBHOST_CLIENT_TIMEOUT_MS", "600000");
        // SAFETY: setrlimit(2) between fork and exec is async-signal-safe and the
        // closure allocates nothing.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    FD_LIMIT,
                    FD_LIMIT,
                )
                .map_err(std::io::Error::from)
            });
        }
    });
    let api = connect(&h);
    h.wait_for("a first run of flap and of tick", DEADLINE, || {
        !h.read_lines("flap.runs").is_empty() && !h.read_lines("tick.runs").is_empty()
    });

    // More half-sent connections than the host has descriptors: its connection
    // limit (a quarter of them) is taken and the rest wait in the listen backlog
    // (128 connections, as std and tokio make it: a few more would not connect).
    let flood: Vec<TcpStream> = (0..FD_LIMIT + 16).map(|_| half_sent(api.addr())).collect();
    h.wait_for(
        "the host to say the API is at its connection limit",
        DEADLINE,
        || h.host_log(None).contains("connections open (the limit)"),
    );
    let (flaps, ticks) = (
        h.read_lines("flap.runs").len(),
        h.read_lines("tick.runs").len(),
    );
    let successes = || {
        crate::triggered::all_runs(&h, "tick")
            .iter()
            .filter(|r| r["status"] == "Success")
            .count()
    };
    let successes_before = successes();
    h.wait_for(
        "flap to restart twice and tick to run twice more while the API is flooded",
        DEADLINE,
        || {
            h.read_lines("flap.runs").len() >= flaps + 2
                && h.read_lines("tick.runs").len() >= ticks + 2
        },
    );
    h.wait_for("tick's new runs to write their records", DEADLINE, || {
        successes() >= successes_before + 2
    });
    let log = h.host_log(None);
    assert!(
        !log.contains("Too many open files") && !log.contains("os error 24"),
        "{log}"
    );

    // Once the slow clients go, the API answers again (the waiting ones included).
    drop(flood);
    h.wait_for("GET /api/webjobs to answer again", DEADLINE, || {
        api.basic(reqwest::Method::GET, "/api/webjobs")
            .timeout(Duration::from_secs(5))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    h.finish();
}

#[test]
fn a_client_that_never_finishes_its_headers_or_body_is_disconnected_after_the_client_timeout() {
    let mut h = TestHost::new();
    h.start_with(|cmd| {
        cmd.env("JOBHOST_CLIENT_TIMEOUT_MS", "300");
    });
    let api = connect(&h);
    let mut s = half_sent(api.addr());
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    // The server closes (a 408 at most, then EOF) instead of waiting for ever.
    let mut got = Vec::new();
    let closed = s.read_to_end(&mut got);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the half-sent connection was not closed within {DEADLINE:?}: {closed:?}"
    );
    // So is a request whose body stops coming; nothing is changed.
    h.write_job(TRIGGERED, "tj", &[("run.sh", &marker_job("tj"))]);
    let mut b = TcpStream::connect(api.addr()).unwrap();
    b.set_read_timeout(Some(DEADLINE)).unwrap();
    b.write_all(
        format!(
            "PUT /api/triggeredwebjobs/tj/settings HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"sched",
            api.addr(), api.token
        )
        .as_bytes(),
    )
    .unwrap();
    let mut answer = Vec::new();
    let closed = b.read_to_end(&mut answer);
    assert!(
        closed.is_ok(),
        "the stalled upload was not ended: {closed:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(!h.job_dir(TRIGGERED, "tj").join("settings.job").exists());
    // An idle keep-alive connection is closed the same way.
    let mut k = TcpStream::connect(api.addr()).unwrap();
    k.set_read_timeout(Some(DEADLINE)).unwrap();
    k.write_all(format!("GET /api/health HTTP/1.1\r\nHost: {}\r\n\r\n", api.addr()).as_bytes())
        .unwrap();
    let mut all = Vec::new();
    let closed = k.read_to_end(&mut all);
    assert!(closed.is_ok(), "{closed:?}");
    assert!(
        String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&all)
    );
    h.finish();
}

// ----- the dashboard ----------------------------------------------------------------

#[test]
fn the_dashboard_keeps_an_error_until_dismissed_and_offers_no_run_on_a_job_in_error() {
    let mut h = TestHost::start_new();
    let api = connect(&h);
    let page = api
        .basic(reqwest::Method::GET, "/")
        .send()
        .unwrap()
        .text()
        .unwrap();
    // No inline script or handlers (the CSP allows scripts from this server only).
    assert!(
        page.contains(r#"<script src="/dashboard.js"></script>"#),
        "{page}"
    );
    assert!(!page.contains("onclick="), "{page}");
    let r = api
        .basic(reqwest::Method::GET, "/dashboard.js")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/javascript"), "{ctype}");
    let js = r.text().unwrap();
    // Errors stay until dismissed (the browser test checks the behaviour); data is
    // only ever set as text.
    assert!(js.contains("errclose"), "a way to dismiss errors");
    assert!(!js.contains("innerHTML"), "no markup built from data");
    // A triggered job in Error: no run button, a reason instead, and no "on demand".
    assert!(
        js.contains(r#"} else if (st === "Error") {"#) && js.contains("cannot run: fix the error"),
        "{js}"
    );
    assert!(js.contains("unknown: settings have errors"), "{js}");
    h.finish();
}
