//! The HTTP API (docs/api.md) against the real server: token auth on every route,
//! every route and its status codes, argument passing, cancel, log streaming,
//! settings, deploy (zip, single file, zip-slip, links, zip bomb), delete, path
//! traversal, /metrics, and the JSON shapes checked against golden files in
//! `tests/data/golden/` (rewrite them with `JOBHOST_BLESS=1` and review the diff).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::Response;
use serde_json::{Value, json};

use crate::support::client::*;
use crate::support::*;

/// A request written by hand on a TCP connection, so the path reaches the server
/// exactly as given (an HTTP client would resolve `..` and `%2e%2e` itself).
fn raw_http(
    api: &Api,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let addr = api.base.strip_prefix("http://").expect("http base URL");
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        api.token,
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .unwrap_or_else(|e| panic!("reading the answer to {method} {path}: {e}"));
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in the answer to {method} {path}: {text:?}"));
    (code, text)
}

/// Method, path, extra headers and body of a `raw_http` request.
type RawRequest<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);

/// Reads a streamed body until `acc` contains `needle`; panics at end of stream.
fn read_until(r: &mut Response, acc: &mut String, needle: &str) {
    let mut buf = [0u8; 8192];
    while !acc.contains(needle) {
        let n = r.read(&mut buf).unwrap_or_else(|e| {
            panic!("reading a follow stream waiting for {needle:?}: {e}\nso far: {acc}")
        });
        assert!(
            n > 0,
            "the stream ended before {needle:?} arrived; it held:\n{acc}"
        );
        acc.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

fn assert_keys(what: &str, v: &Value, keys: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not a JSON object: {v:#}"));
    let missing: Vec<_> = keys.iter().filter(|k| !obj.contains_key(**k)).collect();
    assert!(
        missing.is_empty(),
        "{what} lacks the documented fields {missing:?}: {v:#}"
    );
}

/// Kudu's job object fields (docs/api.md).
const JOB_KEYS: [&str; 7] = [
    "name",
    "type",
    "run_command",
    "url",
    "error",
    "settings",
    "using_sdk",
];
const CONTINUOUS_KEYS: [&str; 3] = ["status", "detailed_status", "log_url"];
const TRIGGERED_KEYS: [&str; 3] = ["latest_run", "history_url", "scheduler_logs_url"];
const RUN_KEYS: [&str; 11] = [
    "id",
    "name",
    "job_name",
    "status",
    "start_time",
    "end_time",
    "duration",
    "output_url",
    "error_url",
    "url",
    "trigger",
];

fn assert_run_object(v: &Value, job: &str) {
    assert_keys("a run object", v, &RUN_KEYS);
    assert_eq!(v["name"], v["id"], "a run's name is its id: {v:#}");
    assert_eq!(v["job_name"], job, "{v:#}");
    let id = v["id"].as_str().unwrap_or_default();
    assert!(
        id.len() == 18 && id.bytes().all(|b| b.is_ascii_digit()),
        "run ids are 18 digits: {v:#}"
    );
}

// ----- golden JSON shapes --------------------------------------------------------------

/// Compares the shape of `actual` (keys, recursively, and value types) with
/// `tests/data/golden/NAME.json`; with `JOBHOST_BLESS=1` rewrites that file from
/// `actual`, volatile values (times, ids, pids, ports, paths) replaced by placeholders.
fn check_golden(name: &str, actual: &Value, api: &Api, h: &TestHost) {
    check_golden_file(name, &normalise(actual, api, h), Golden::Shape);
}

/// `check_golden` without blessing, for responses whose values differ from the one
/// that wrote the golden file (error messages of other errors).
fn check_shape(name: &str, actual: &Value) {
    assert_golden(name, actual, Golden::Shape);
}

fn normalise(v: &Value, api: &Api, h: &TestHost) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("pid" | "uptime_seconds" | "duration_ms", Value::Number(_)) => json!(0),
                        ("version", Value::String(_)) => json!("VERSION"),
                        _ => normalise(v, api, h),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalise(x, api, h)).collect()),
        Value::String(s) => {
            let s = s
                .replace(&api.base, "http://HOST")
                .replace(&h.root.display().to_string(), "SANDBOX");
            if is_timespan(&s) {
                json!("TIMESPAN")
            } else {
                Value::String(replace_run_ids(&replace_times(&s)))
            }
        }
        other => other.clone(),
    }
}

/// `hh:mm:ss.fffffff`, Kudu's duration.
fn is_timespan(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 16
        && b[b.len() - 8] == b'.'
        && b[b.len() - 11] == b':'
        && b[b.len() - 14] == b':'
        && b.iter().enumerate().all(|(i, c)| {
            c.is_ascii_digit() || [b.len() - 8, b.len() - 11, b.len() - 14].contains(&i)
        })
}

// ----- job scripts and zips ---------------------------------------------------------------

/// A triggered job that writes its argv, NUL-separated, to `$TEST_STATE/argv.RUN_ID`.
const ARGV_JOB: &str = r#"#!/bin/bash
out="$TEST_STATE/argv.$WEBJOBS_RUN_ID"
for a in "$@"; do printf '%s\0' "$a"; done > "$out.tmp"
mv "$out.tmp" "$out"
echo "got $# arguments"
"#;

/// A triggered job that prints `first`, records its pid, waits for
/// `$TEST_STATE/release.RUN_ID`, prints `last` and exits 0.
const GATED_JOB: &str = r#"#!/bin/bash
echo first
echo $$ >> "$TEST_STATE/$WEBJOBS_NAME.pids"
while [ ! -e "$TEST_STATE/release.$WEBJOBS_RUN_ID" ]; do sleep 0.05; done
echo last
"#;

fn release(h: &TestHost, id: &str) {
    fs::write(h.state_path(&format!("release.{id}")), "").unwrap();
}

/// The argv a run of `ARGV_JOB` received.
fn argv_of(h: &TestHost, id: &str) -> Vec<String> {
    let path = h.state_path(&format!("argv.{id}"));
    h.wait_for(
        &format!("{} to be written", path.display()),
        DEADLINE,
        || path.exists(),
    );
    let bytes = fs::read(&path).unwrap();
    let mut args: Vec<String> = bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // The last NUL ends the last argument.
    assert_eq!(args.pop().as_deref(), Some(""), "{bytes:?}");
    args
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(if name.ends_with(".sh") { 0o755 } else { 0o644 });
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A zip with `run.sh` and a symlink entry `link` -> `target`.
fn zip_with_link(target: &str) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("run.sh", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(QUICK_JOB.as_bytes()).unwrap();
    w.add_symlink("link", target, zip::write::SimpleFileOptions::default())
        .unwrap();
    w.finish().unwrap().into_inner()
}

// ----- a zip bomb, built by hand -------------------------------------------------------------

/// CRC-32 (IEEE) table.
fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, slot) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    t
}

fn crc32(data: &[u8]) -> u32 {
    let t = crc_table();
    let mut c = !0u32;
    for b in data {
        c = t[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// CRC-32 of `n` zero bytes without touching `n` bytes: one zero byte is a linear map
/// of the CRC register over GF(2), so `n` of them are that map to the power `n`.
fn crc32_of_zeros(mut n: u64) -> u32 {
    type Op = [u32; 32];
    fn apply(op: &Op, x: u32) -> u32 {
        (0..32)
            .filter(|i| x >> i & 1 != 0)
            .fold(0, |acc, i| acc ^ op[i])
    }
    fn compose(a: &Op, b: &Op) -> Op {
        std::array::from_fn(|i| apply(a, b[i]))
    }
    let t = crc_table();
    let mut step: Op = std::array::from_fn(|i| {
        let x = 1u32 << i;
        t[(x & 0xff) as usize] ^ (x >> 8)
    });
    let mut acc: Op = std::array::from_fn(|i| 1u32 << i);
    while n > 0 {
        if n & 1 != 0 {
            acc = compose(&step, &acc);
        }
        step = compose(&step, &step);
        n >>= 1;
    }
    !apply(&acc, !0)
}

/// A raw DEFLATE stream (one fixed-Huffman block) inflating to `n` zero bytes: one
/// literal 0, then copies of 258 bytes at distance 1, then literals for the rest.
fn deflate_zeros(n: u64) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        len: u32,
    }
    impl Bits {
        fn put(&mut self, v: u64, n: u32) {
            self.acc |= v << self.len;
            self.len += n;
            while self.len >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.len -= 8;
            }
        }
        /// A Huffman code goes out most significant bit first.
        fn code(&mut self, code: u64, n: u32) {
            let rev = (0..n).fold(0, |r, i| (r << 1) | (code >> i & 1));
            self.put(rev, n);
        }
    }
    assert!(n >= 1);
    let mut b = Bits {
        out: Vec::new(),
        acc: 0,
        len: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE 01: fixed Huffman codes
    b.code(0x30, 8); // literal 0
    let mut left = n - 1;
    // Length 258 (code 285: 11000101), distance 1 (code 0: 00000), as one 13-bit unit.
    let copy = (0..8).fold(0u64, |r, i| (r << 1) | (0xC5 >> i & 1));
    while left >= 258 {
        b.put(copy, 13);
        left -= 258;
    }
    for _ in 0..left {
        b.code(0x30, 8);
    }
    b.code(0, 7); // end of block
    if b.len > 0 {
        b.put(0, 8 - b.len);
    }
    b.out
}

/// A zip with one deflated entry `name` of `size` zero bytes, honest CRC and sizes.
fn zip_of_zeros(name: &str, size: u64) -> Vec<u8> {
    let data = deflate_zeros(size);
    let crc = crc32_of_zeros(size);
    let size = u32::try_from(size).expect("no zip64 here");
    let csize = u32::try_from(data.len()).unwrap();
    let n = u16::try_from(name.len()).unwrap();
    let mut z = Vec::new();
    let le16 = |z: &mut Vec<u8>, v: u16| z.extend_from_slice(&v.to_le_bytes());
    let le32 = |z: &mut Vec<u8>, v: u32| z.extend_from_slice(&v.to_le_bytes());
    // Local file header.
    le32(&mut z, 0x0403_4b50);
    for v in [20, 0, 8, 0, 0x21] {
        le16(&mut z, v); // version, flags, method deflate, time, date 1980-01-01
    }
    for v in [crc, csize, size] {
        le32(&mut z, v);
    }
    le16(&mut z, n);
    le16(&mut z, 0);
    z.extend_from_slice(name.as_bytes());
    z.extend_from_slice(&data);
    // Central directory.
    let cd = u32::try_from(z.len()).unwrap();
    le32(&mut z, 0x0201_4b50);
    for v in [0x031E, 20, 0, 8, 0, 0x21] {
        le16(&mut z, v); // made by unix 3.0, version, flags, method, time, date
    }
    for v in [crc, csize, size] {
        le32(&mut z, v);
    }
    for v in [n, 0, 0, 0, 0] {
        le16(&mut z, v); // name, extra, comment, disk, internal attributes
    }
    le32(&mut z, 0o100_644 << 16);
    le32(&mut z, 0); // local header offset
    z.extend_from_slice(name.as_bytes());
    let cd_size = u32::try_from(z.len()).unwrap() - cd;
    // End of central directory.
    le32(&mut z, 0x0605_4b50);
    for v in [0, 0, 1, 1] {
        le16(&mut z, v);
    }
    le32(&mut z, cd_size);
    le32(&mut z, cd);
    le16(&mut z, 0);
    z
}

// ----- auth -------------------------------------------------------------------------------

#[test]
fn health_is_open_and_every_other_route_needs_the_token() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "web", &[("run.sh", &sleeper("web"))]);
    h.write_job(TRIGGERED, "tj", &[("run.sh", QUICK_JOB)]);
    h.start();
    let api = connect(&h);
    h.wait_running("web");
    api.wait_code(&h, "/api/triggeredwebjobs/tj", 200);

    // /api/health: open, JSON, status ok.
    let r = api.http.get(api.url("/api/health")).send().unwrap();
    let (code, health) = json_of(r);
    assert_eq!(code, 200, "{health:#}");
    assert_eq!(health["status"], "ok", "{health:#}");
    check_golden("health", &health, &api, &h);

    let absent = "200001010000000000";
    // (method, path, status with the right token). Routes that change things are
    // aimed at jobs that do not exist, so the authorised calls change nothing.
    let routes: Vec<(Method, String, u16)> = vec![
        (Method::GET, "/api/webjobs".into(), 200),
        (Method::GET, "/api/continuouswebjobs".into(), 200),
        (Method::GET, "/api/continuouswebjobs/web".into(), 200),
        (Method::PUT, "/api/continuouswebjobs/nosuch".into(), 400),
        (Method::DELETE, "/api/continuouswebjobs/nosuch".into(), 404),
        (
            Method::POST,
            "/api/continuouswebjobs/nosuch/start".into(),
            404,
        ),
        (
            Method::POST,
            "/api/continuouswebjobs/nosuch/stop".into(),
            404,
        ),
        (Method::GET, "/api/continuouswebjobs/web/log".into(), 200),
        (
            Method::GET,
            "/api/continuouswebjobs/web/settings".into(),
            200,
        ),
        (
            Method::PUT,
            "/api/continuouswebjobs/nosuch/settings".into(),
            404,
        ),
        (Method::GET, "/api/triggeredwebjobs".into(), 200),
        (Method::GET, "/api/triggeredwebjobs/tj".into(), 200),
        (Method::PUT, "/api/triggeredwebjobs/nosuch".into(), 400),
        (Method::DELETE, "/api/triggeredwebjobs/nosuch".into(), 404),
        (Method::POST, "/api/triggeredwebjobs/nosuch/run".into(), 404),
        (Method::GET, "/api/triggeredwebjobs/tj/history".into(), 200),
        (
            Method::GET,
            format!("/api/triggeredwebjobs/tj/history/{absent}"),
            404,
        ),
        (
            Method::POST,
            format!("/api/triggeredwebjobs/tj/history/{absent}/cancel"),
            404,
        ),
        (
            Method::GET,
            format!("/api/triggeredwebjobs/tj/history/{absent}/output"),
            404,
        ),
        (
            Method::GET,
            "/api/triggeredwebjobs/tj/schedulerlog".into(),
            200,
        ),
        (Method::GET, "/api/triggeredwebjobs/tj/settings".into(), 200),
        (
            Method::PUT,
            "/api/triggeredwebjobs/nosuch/settings".into(),
            404,
        ),
        (Method::GET, "/metrics".into(), 200),
        (Method::GET, "/api/no-such-path".into(), 404),
    ];
    let url = |p: &str| api.url(p);
    for (m, path, ok) in &routes {
        let what = format!("{m} {path}");
        // No header.
        let r = api.http.request(m.clone(), url(path)).send().unwrap();
        assert_eq!(r.status(), 401, "{what} without a token");
        let www = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            www.to_ascii_lowercase().starts_with("bearer"),
            "{what}: 401 without a Bearer WWW-Authenticate header ({www:?})"
        );
        let (_, body) = json_of(r);
        check_shape("error", &body);
        // Wrong token, as Bearer and as Basic.
        let r = api
            .http
            .request(m.clone(), url(path))
            .bearer_auth(format!("{}x", api.token))
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{what} with a wrong Bearer token");
        let r = api
            .http
            .request(m.clone(), url(path))
            .basic_auth("jobhost", Some("not-the-token"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{what} with a wrong Basic password");
        // The token in the wrong place (as the Basic user name) is not the password.
        let r = api
            .http
            .request(m.clone(), url(path))
            .basic_auth(&api.token, None::<&str>)
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{what} with the token as Basic user name");
        // Bearer.
        let r = api.req(m.clone(), path).send().unwrap();
        assert_eq!(r.status().as_u16(), *ok, "{what} with the Bearer token");
        // Basic, any user, the token as password.
        for user in ["", "$jobhost", "anyone"] {
            let r = api
                .http
                .request(m.clone(), url(path))
                .basic_auth(user, Some(&api.token))
                .send()
                .unwrap();
            assert_eq!(
                r.status().as_u16(),
                *ok,
                "{what} with Basic user {user:?} and the token as password"
            );
        }
    }
    // Nothing above changed a job: no disable.job, no new folder, web still runs.
    assert!(!h.job_dir(CONTINUOUS, "web").join("disable.job").exists());
    assert!(!h.job_dir(CONTINUOUS, "nosuch").exists());
    assert!(!h.job_dir(TRIGGERED, "nosuch").exists());
    assert_eq!(h.read_pids("web.pids").len(), 1);
    h.finish();
}

// ----- job objects ----------------------------------------------------------------------------

#[test]
fn job_lists_and_lookups_carry_kudu_fields() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "web",
        &[
            ("run.sh", &sleeper("web")),
            (
                "settings.job",
                "// a comment\n{\"stopping_wait_time\": 3, \"env\": {\"A\": \"1\"}}\n",
            ),
        ],
    );
    h.write_job(TRIGGERED, "tj", &[("run.sh", QUICK_JOB)]);
    h.write_job(TRIGGERED, "never", &[("run.sh", QUICK_JOB)]);
    // The same name under both types: two jobs.
    h.write_job(TRIGGERED, "web", &[("run.sh", QUICK_JOB)]);
    h.start();
    let api = connect(&h);
    h.wait_running("web");
    api.wait_code(&h, "/api/triggeredwebjobs/never", 200);
    api.wait_code(&h, "/api/triggeredwebjobs/web", 200);
    let id = api.start_run("tj");
    api.wait_run_end(&h, "tj", &id);

    // All jobs.
    let (code, all) = api.get_json("/api/webjobs");
    assert_eq!(code, 200, "{all:#}");
    let all = all.as_array().expect("GET /api/webjobs is a list").clone();
    let mut pairs: Vec<(String, String)> = all
        .iter()
        .map(|j| {
            (
                j["type"].as_str().unwrap_or("?").to_string(),
                j["name"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("continuous", "web"),
            ("triggered", "never"),
            ("triggered", "tj"),
            ("triggered", "web"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string())),
        "{all:#?}"
    );
    for j in &all {
        assert_keys("a job in /api/webjobs", j, &JOB_KEYS);
        assert_eq!(j["using_sdk"], false, "{j:#}");
    }

    // Continuous.
    let (code, list) = api.get_json("/api/continuouswebjobs");
    assert_eq!(code, 200);
    let list = list.as_array().expect("a list").clone();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["name"], "web");
    let (code, web) = api.get_json("/api/continuouswebjobs/web");
    assert_eq!(code, 200, "{web:#}");
    assert_keys("a continuous job", &web, &JOB_KEYS);
    assert_keys("a continuous job", &web, &CONTINUOUS_KEYS);
    assert_eq!(web["name"], "web");
    assert_eq!(web["type"], "continuous");
    assert_eq!(web["status"], "Running", "{web:#}");
    assert_eq!(web["using_sdk"], false);
    assert_eq!(web["error"], Value::Null);
    assert_eq!(web["run_command"], "bash run.sh", "{web:#}");
    assert_eq!(
        web["url"],
        api.url("/api/continuouswebjobs/web"),
        "absolute URL of the job"
    );
    let log_url = web["log_url"].as_str().expect("log_url").to_string();
    assert!(
        log_url.starts_with(&api.base) && !log_url.contains("/vfs"),
        "log_url points at this API's own log endpoint: {log_url}"
    );
    assert_eq!(
        web["settings"],
        json!({"stopping_wait_time": 3, "env": {"A": "1"}}),
        "settings as written, comments stripped"
    );
    let (code, _) = api.get_text(log_url.strip_prefix(&api.base).unwrap());
    assert_eq!(code, 200, "GET log_url");
    check_golden("continuous_job", &web, &api, &h);

    // Triggered.
    let (code, list) = api.get_json("/api/triggeredwebjobs");
    assert_eq!(code, 200);
    let mut names: Vec<_> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|j| j["name"].as_str().unwrap_or("?").to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["never", "tj", "web"]);
    let (code, tj) = api.get_json("/api/triggeredwebjobs/tj");
    assert_eq!(code, 200, "{tj:#}");
    assert_keys("a triggered job", &tj, &JOB_KEYS);
    assert_keys("a triggered job", &tj, &TRIGGERED_KEYS);
    assert_eq!(tj["type"], "triggered");
    assert_eq!(tj["using_sdk"], false);
    assert_eq!(tj["run_command"], "bash run.sh");
    assert_eq!(tj["settings"], json!({}), "no settings.job: {{}}");
    assert_eq!(tj["url"], api.url("/api/triggeredwebjobs/tj"));
    assert_eq!(
        tj["history_url"],
        api.url("/api/triggeredwebjobs/tj/history")
    );
    assert_run_object(&tj["latest_run"], "tj");
    assert_eq!(tj["latest_run"]["id"], id.as_str());
    assert_eq!(tj["latest_run"]["status"], "Success");
    for key in ["history_url", "scheduler_logs_url"] {
        let u = tj[key].as_str().expect("a URL").to_string();
        assert!(u.starts_with(&api.base), "{key} {u}");
        let (code, _) = api.get_text(u.strip_prefix(&api.base).unwrap());
        assert_eq!(code, 200, "GET {key} {u}");
    }
    check_golden("triggered_job", &tj, &api, &h);
    let (_, never) = api.get_json("/api/triggeredwebjobs/never");
    assert_eq!(never["latest_run"], Value::Null, "{never:#}");

    // Unknown names, bad names, case.
    for (path, want) in [
        ("/api/continuouswebjobs/nosuch", 404),
        ("/api/continuouswebjobs/WEB", 404),
        ("/api/continuouswebjobs/tj", 404),
        ("/api/continuouswebjobs/-bad", 400),
        ("/api/continuouswebjobs/bad%20name", 400),
        ("/api/continuouswebjobs/.hidden", 400),
        ("/api/triggeredwebjobs/nosuch", 404),
        ("/api/triggeredwebjobs/TJ", 404),
        ("/api/triggeredwebjobs/-bad", 400),
        // 64 characters is the longest valid name; 65 is too long.
        (&format!("/api/triggeredwebjobs/{}", "a".repeat(64)), 404),
        (&format!("/api/triggeredwebjobs/{}", "a".repeat(65)), 400),
    ] {
        let (code, body) = api.get_json(path);
        assert_eq!(code, want, "GET {path}: {body:#}");
        check_shape("error", &body);
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body:#}"
        );
    }
    h.finish();
}

// ----- continuous start / stop ---------------------------------------------------------

#[test]
fn continuous_stop_and_start_flip_disable_job() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "sw", &[("run.sh", &sleeper("sw"))]);
    h.write_job(TRIGGERED, "trig", &[("run.sh", QUICK_JOB)]);
    h.start();
    let api = connect(&h);
    let pid1 = h.wait_running("sw");
    let disable = h.job_dir(CONTINUOUS, "sw").join("disable.job");

    let (code, body) = api.post_json("/api/continuouswebjobs/sw/stop");
    assert_eq!(code, 200, "{body:#}");
    assert!(disable.exists(), "stop creates disable.job");
    h.wait_dead("the stopped job's run", pid1);
    let st = api.wait_continuous_status(&h, "sw", "Stopped");
    assert_eq!(st["pid"], Value::Null, "{st:#}");
    h.wait_status("sw", "Stopped");
    // Stopping twice is fine.
    let (code, body) = api.post_json("/api/continuouswebjobs/sw/stop");
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(h.read_pids("sw.pids").len(), 1, "no start while stopped");

    let (code, body) = api.post_json("/api/continuouswebjobs/sw/start");
    assert_eq!(code, 200, "{body:#}");
    assert!(!disable.exists(), "start removes disable.job");
    let pid2 = h.wait_pids("sw.pids", 2)[1];
    assert_ne!(pid1, pid2);
    api.wait_continuous_status(&h, "sw", "Running");
    assert_eq!(h.wait_running("sw"), pid2);
    let (code, body) = api.post_json("/api/continuouswebjobs/sw/start");
    assert_eq!(code, 200, "starting a running job: {body:#}");

    for (path, want) in [
        ("/api/continuouswebjobs/nosuch/stop", 404),
        ("/api/continuouswebjobs/nosuch/start", 404),
        // A triggered job is not a continuous one.
        ("/api/continuouswebjobs/trig/stop", 404),
        ("/api/continuouswebjobs/-x/stop", 400),
        ("/api/continuouswebjobs/-x/start", 400),
    ] {
        let (code, body) = api.post_json(path);
        assert_eq!(code, want, "POST {path}: {body:#}");
        check_shape("error", &body);
    }
    assert!(!h.job_dir(TRIGGERED, "trig").join("disable.job").exists());
    h.finish();
}

// ----- triggered runs ---------------------------------------------------------------------

#[test]
fn a_run_is_accepted_with_the_location_of_the_run_and_shows_in_history() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "tj", &[("run.sh", QUICK_JOB)]);
    h.write_job(CONTINUOUS, "cont", &[("run.sh", &sleeper("cont"))]);
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/tj", 200);

    let (code, location, body) = api.trigger("tj", "");
    assert_eq!(code, 202, "{body:#}");
    let location = location.expect("202 carries a Location header");
    let id = body["id"].as_str().expect("the run id").to_string();
    assert_eq!(
        location,
        api.url(&format!("/api/triggeredwebjobs/tj/history/{id}")),
        "Location is the run's URL"
    );
    assert_eq!(body["url"], location.as_str(), "{body:#}");
    check_golden("trigger_accepted", &body, &api, &h);

    // GET on the Location works, while running or after.
    let r = api
        .http
        .get(&location)
        .bearer_auth(&api.token)
        .send()
        .unwrap();
    let (code, run) = json_of(r);
    assert_eq!(code, 200, "GET {location}: {run:#}");
    assert_run_object(&run, "tj");
    assert_eq!(run["id"], id.as_str());
    let run = api.wait_run_end(&h, "tj", &id);
    assert_run_object(&run, "tj");
    assert_eq!(run["status"], "Success", "{run:#}");
    assert_eq!(run["trigger"], "manual", "{run:#}");
    assert_eq!(run["url"], location.as_str());
    assert!(run["end_time"].is_string(), "{run:#}");
    let duration = run["duration"].as_str().expect("a duration").to_string();
    assert!(
        is_timespan(&duration),
        "duration is hh:mm:ss.fffffff: {duration}"
    );
    for key in ["start_time", "end_time"] {
        let t = run[key].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{key} is RFC 3339: {t}"
        );
    }
    check_golden("run", &run, &api, &h);
    let output_url = run["output_url"].as_str().expect("output_url").to_string();
    assert_eq!(output_url, format!("{location}/output"));
    let (code, out) = api.get_text(output_url.strip_prefix(&api.base).unwrap());
    assert_eq!(code, 200);
    assert!(out.contains("INFO] hello from tj\n"), "{out}");
    let error_url = run["error_url"].as_str().expect("error_url").to_string();
    let (code, _) = api.get_text(error_url.strip_prefix(&api.base).unwrap());
    assert_eq!(code, 200, "GET error_url {error_url}");

    // A second run: history is newest first.
    let id2 = api.start_run("tj");
    assert!(id2 > id, "run ids grow: {id} then {id2}");
    api.wait_run_end(&h, "tj", &id2);
    let (code, history) = api.get_json("/api/triggeredwebjobs/tj/history");
    assert_eq!(code, 200, "{history:#}");
    let runs = history["runs"]
        .as_array()
        .expect("{\"runs\": [...]}")
        .clone();
    let ids: Vec<_> = runs
        .iter()
        .map(|r| r["id"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(ids, [id2.as_str(), id.as_str()], "newest first");
    for r in &runs {
        assert_run_object(r, "tj");
    }
    check_golden("history", &history, &api, &h);

    // Lookups that fail.
    let unknown = "200001010000000000";
    for (path, want) in [
        (format!("/api/triggeredwebjobs/tj/history/{unknown}"), 404),
        (
            format!("/api/triggeredwebjobs/tj/history/{unknown}/output"),
            404,
        ),
        ("/api/triggeredwebjobs/tj/history/123".to_string(), 400),
        ("/api/triggeredwebjobs/tj/history/abc".to_string(), 400),
        (format!("/api/triggeredwebjobs/tj/history/{id}0"), 400),
        (
            format!("/api/triggeredwebjobs/tj/history/{}", &id[..17]),
            400,
        ),
        (
            format!("/api/triggeredwebjobs/tj/history/{id}x/output"),
            400,
        ),
        (format!("/api/triggeredwebjobs/nosuch/history/{id}"), 404),
        ("/api/triggeredwebjobs/nosuch/history".to_string(), 404),
        // A continuous job has no run history.
        ("/api/triggeredwebjobs/cont/history".to_string(), 404),
    ] {
        let (code, body) = api.get_json(&path);
        assert_eq!(code, want, "GET {path}: {body:#}");
        check_shape("error", &body);
    }
    for job in ["nosuch", "cont"] {
        let (code, _, body) = api.trigger(job, "");
        assert_eq!(code, 404, "POST run of {job}: {body:#}");
        check_shape("error", &body);
    }
    let (code, _, body) = api.trigger("-bad", "");
    assert_eq!(code, 400, "{body:#}");
    h.finish();
}

#[test]
fn run_arguments_come_from_the_query_string_or_a_json_body() {
    let (mut h, api) = host_with_triggered("argv", ARGV_JOB);

    let cases: [(&str, &[&str]); 5] = [
        ("?arguments=a%20%22b%20c%22", &["a", "b c"]),
        ("", &[]),
        // `+` is a space; quotes and backslashes as in sh; nothing expanded or
        // substituted, not even inside double quotes.
        (
            "?arguments=%22%24(touch%20pwned)%22+%27%24HOME%20%60x%60%27+back%5C%20slash+*+%24(id)",
            &["$(touch pwned)", "$HOME `x`", "back slash", "*", "$(id)"],
        ),
        ("?arguments=%22%22+x", &["", "x"]),
        ("?other=1&arguments=one", &["one"]),
    ];
    for (query, want) in cases {
        let (code, location, body) = api.trigger("argv", query);
        assert_eq!(code, 202, "run{query}: {body:#}");
        assert!(location.is_some());
        let id = body["id"].as_str().unwrap().to_string();
        let run = api.wait_run_end(&h, "argv", &id);
        assert_eq!(run["status"], "Success", "{run:#}");
        assert_eq!(argv_of(&h, &id), want, "argv of run{query}");
    }
    assert!(
        !h.tmp.join("pwned").exists() && tree_names(&h.root).iter().all(|p| !p.ends_with("pwned")),
        "arguments are never given to a shell"
    );

    // A JSON body is argv as it is.
    let path = "/api/triggeredwebjobs/argv/run";
    let r = api
        .req(Method::POST, path)
        .json(&json!({"arguments": ["x y", "z", "\"q\" 'r'", ""]}))
        .send()
        .unwrap();
    let (code, body) = json_of(r);
    assert_eq!(code, 202, "{body:#}");
    let id = body["id"].as_str().unwrap().to_string();
    api.wait_run_end(&h, "argv", &id);
    assert_eq!(argv_of(&h, &id), ["x y", "z", "\"q\" 'r'", ""]);

    // Refused: nothing runs.
    let before = api.get_json("/api/triggeredwebjobs/argv/history").1["runs"]
        .as_array()
        .unwrap()
        .len();
    for query in [
        "?arguments=a%20%22b",
        "?arguments=%27open",
        "?arguments=x%20%22y%5C%22",
    ] {
        let (code, location, body) = api.trigger("argv", query);
        assert_eq!(code, 400, "run{query} (unclosed quote): {body:#}");
        assert!(location.is_none());
        check_shape("error", &body);
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("quote"),
            "the message says what is wrong: {msg}"
        );
    }
    let r = api
        .req(Method::POST, path)
        .header("Content-Type", "application/json")
        .body("{\"arguments\": \"not a list\"}")
        .send()
        .unwrap();
    let (code, body) = json_of(r);
    assert_eq!(
        code, 400,
        "a JSON body whose arguments are not a list: {body:#}"
    );
    check_shape("error", &body);
    let after = api.get_json("/api/triggeredwebjobs/argv/history").1["runs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "a refused trigger starts no run");
    h.finish();
}

#[test]
fn a_trigger_while_a_run_is_going_is_409_with_overlap_skip() {
    let (mut h, api) = host_with_triggered("gate", GATED_JOB);

    let id = api.start_run("gate");
    h.wait_pids("gate.pids", 1);
    let (code, location, body) = api.trigger("gate", "");
    assert_eq!(code, 409, "a second run while {id} goes: {body:#}");
    assert!(location.is_none());
    check_golden("error", &body, &api, &h);
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&id) && msg.contains("skip"), "{msg}");
    let (code, _, body) = api.trigger("gate", "?arguments=x");
    assert_eq!(code, 409, "{body:#}");
    let (_, job) = api.get_json("/api/triggeredwebjobs/gate");
    assert_eq!(job["latest_run"]["id"], id.as_str(), "{job:#}");
    assert_eq!(job["latest_run"]["status"], "Running", "{job:#}");

    release(&h, &id);
    let run = api.wait_run_end(&h, "gate", &id);
    assert_eq!(run["status"], "Success", "{run:#}");
    let (_, history) = api.get_json("/api/triggeredwebjobs/gate/history");
    assert_eq!(
        history["runs"].as_array().unwrap().len(),
        1,
        "the refused triggers left no run: {history:#}"
    );
    // Free again.
    let id2 = api.start_run("gate");
    release(&h, &id2);
    assert_eq!(api.wait_run_end(&h, "gate", &id2)["status"], "Success");
    h.finish();
}

#[test]
fn with_overlap_queue_one_trigger_waits_and_the_next_is_409() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "qgate",
        &[
            ("run.sh", GATED_JOB),
            ("settings.job", r#"{"overlap": "queue"}"#),
        ],
    );
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/qgate", 200);

    let id1 = api.start_run("qgate");
    h.wait_pids("qgate.pids", 1);
    let (code, location, queued) = api.trigger("qgate", "");
    assert_eq!(code, 202, "a trigger queued behind {id1}: {queued:#}");
    assert!(location.is_some(), "202 carries a Location");
    assert_eq!(queued["id"], Value::Null, "{queued:#}");
    assert_eq!(queued["queued_behind"], id1.as_str(), "{queued:#}");
    let (code, _, body) = api.trigger("qgate", "");
    assert_eq!(code, 409, "a second pending run: {body:#}");
    check_shape("error", &body);

    release(&h, &id1);
    h.wait_pids("qgate.pids", 2);
    let mut runs = Vec::new();
    h.wait_for("the queued run in the history", DEADLINE, || {
        runs = api.get_json("/api/triggeredwebjobs/qgate/history").1["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        runs.len() == 2
    });
    let id2 = runs[0]["id"].as_str().unwrap().to_string();
    assert!(id2 > id1, "newest first: {runs:#?}");
    release(&h, &id2);
    assert_eq!(api.wait_run_end(&h, "qgate", &id1)["status"], "Success");
    assert_eq!(api.wait_run_end(&h, "qgate", &id2)["status"], "Success");
    h.finish();
}

#[test]
fn cancel_aborts_the_run_and_is_409_when_it_is_not_running() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "long", &[("run.sh", &sleeper("long"))]);
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/long", 200);

    let id = api.start_run("long");
    let pid = h.wait_pids("long.pids", 1)[0];
    let cancel = format!("/api/triggeredwebjobs/long/history/{id}/cancel");
    let (code, body) = api.post_json(&cancel);
    assert_eq!(code, 200, "POST {cancel}: {body:#}");
    let run = api.wait_run_end(&h, "long", &id);
    assert_eq!(
        run["status"], "Aborted",
        "a cancelled run ends Aborted: {run:#}"
    );
    h.wait_dead("the cancelled run", pid);

    let (code, body) = api.post_json(&cancel);
    assert_eq!(code, 409, "cancelling a run that ended: {body:#}");
    check_shape("error", &body);
    for (path, want) in [
        (
            "/api/triggeredwebjobs/long/history/200001010000000000/cancel".to_string(),
            404,
        ),
        (
            "/api/triggeredwebjobs/long/history/12/cancel".to_string(),
            400,
        ),
        (
            format!("/api/triggeredwebjobs/nosuch/history/{id}/cancel"),
            404,
        ),
    ] {
        let (code, body) = api.post_json(&path);
        assert_eq!(code, want, "POST {path}: {body:#}");
        check_shape("error", &body);
    }
    // The job still runs after a cancel.
    let id2 = api.start_run("long");
    h.wait_pids("long.pids", 2);
    let (code, body) = api.post_json(&format!("/api/triggeredwebjobs/long/history/{id2}/cancel"));
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(api.wait_run_end(&h, "long", &id2)["status"], "Aborted");
    h.finish();
}

// ----- logs ---------------------------------------------------------------------------------

#[test]
fn run_output_is_served_and_follow_streams_until_the_run_ends() {
    let (mut h, api) = host_with_triggered("gate", GATED_JOB);

    let id = api.start_run("gate");
    h.wait_pids("gate.pids", 1);
    let output = format!("/api/triggeredwebjobs/gate/history/{id}/output");
    // Without follow: what is there, and the answer ends although the run goes on.
    let mut text = String::new();
    h.wait_for("the run output to show `first`", DEADLINE, || {
        let r = api.get(&output);
        assert_eq!(r.status(), 200);
        let ctype = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ctype.starts_with("text/plain"), "{ctype}");
        text = r.text().unwrap();
        text.contains("INFO] first\n")
    });
    assert!(!text.contains("last"), "{text}");
    parse_log(text.as_bytes());

    // With follow: the stream stays open while the run goes, and ends with it.
    let mut r = api.get(&format!("{output}?follow=1"));
    assert_eq!(r.status(), 200);
    let mut acc = String::new();
    read_until(&mut r, &mut acc, "INFO] first\n");
    release(&h, &id);
    let mut rest = String::new();
    r.read_to_string(&mut rest)
        .expect("the follow stream ends when the run ends");
    acc.push_str(&rest);
    assert!(acc.contains("INFO] last\n"), "{acc}");
    let run = api.wait_run_end(&h, "gate", &id);
    assert_eq!(run["status"], "Success", "{run:#}");
    let (_, whole) = api.get_text(&output);
    assert_eq!(acc, whole, "the follow stream carried the whole output");
    parse_log(acc.as_bytes());

    // Following a run that has ended returns at once, with everything.
    let (code, again) = api.get_text(&format!("{output}?follow=1"));
    assert_eq!(code, 200);
    assert_eq!(again, whole);
    // tail=1.
    let (_, tail) = api.get_text(&format!("{output}?tail=1"));
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(whole.ends_with(&tail), "{tail}");
    h.finish();
}

#[test]
fn continuous_log_tail_and_follow() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "lines",
        &[(
            "run.sh",
            r#"#!/bin/bash
for i in $(seq 1 10); do echo "line $i"; done
while [ ! -e "$TEST_STATE/more" ]; do sleep 0.05; done
echo "more output"
exec sleep 100000
"#,
        )],
    );
    h.start();
    let api = connect(&h);
    h.wait_log("lines", "INFO] line 10\n");

    // Whole log.
    let (code, whole) = api.get_text("/api/continuouswebjobs/lines/log");
    assert_eq!(code, 200);
    assert_eq!(whole, h.read_log("lines"));
    parse_log(whole.as_bytes());

    // tail=3: the last three lines, and the offset where they start.
    let r = api.get("/api/continuouswebjobs/lines/log?tail=3");
    assert_eq!(r.status(), 200);
    let offset: usize = r
        .headers()
        .get("x-log-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("an X-Log-Offset header");
    let tail = r.text().unwrap();
    let lines: Vec<_> = tail.lines().collect();
    assert_eq!(lines.len(), 3, "{tail}");
    for (line, n) in lines.iter().zip(8..) {
        assert!(line.ends_with(&format!("INFO] line {n}")), "{tail}");
    }
    assert_eq!(offset + tail.len(), whole.len());
    let (_, none) = api.get_text("/api/continuouswebjobs/lines/log?tail=0");
    assert_eq!(none, "");
    let (_, from) = api.get_text(&format!("/api/continuouswebjobs/lines/log?offset={offset}"));
    assert_eq!(from, tail);

    // follow: the tail at once, then what the job writes later.
    let mut r = api.get("/api/continuouswebjobs/lines/log?tail=1&follow=1");
    assert_eq!(r.status(), 200);
    let mut acc = String::new();
    read_until(&mut r, &mut acc, "INFO] line 10\n");
    assert!(!acc.contains("line 9"), "tail=1 with follow: {acc}");
    fs::write(h.state_path("more"), "").unwrap();
    read_until(&mut r, &mut acc, "INFO] more output\n");

    let (code, body) = api.get_json("/api/continuouswebjobs/nosuch/log");
    assert_eq!(code, 404, "{body:#}");
    let (code, body) = api.get_json("/api/continuouswebjobs/-x/log");
    assert_eq!(code, 400, "{body:#}");

    // A follow still open does not keep the host from stopping, and it ends then.
    h.finish();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("the follow stream ends when the host stops");
}

#[test]
fn scheduler_log_is_served() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "sched",
        &[
            ("run.sh", QUICK_JOB),
            ("settings.job", r#"{"schedule": "0 0 0 1 1 *"}"#),
        ],
    );
    h.start();
    let api = connect(&h);
    let file = h.logs.join("triggered/sched/job_scheduler.log");
    h.wait_for("job_scheduler.log to have a line", DEADLINE, || {
        fs::read(&file).is_ok_and(|b| b.ends_with(b"\n"))
    });
    let r = api.get("/api/triggeredwebjobs/sched/schedulerlog");
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    let on_disk = fs::read_to_string(&file).unwrap();
    assert!(
        on_disk.starts_with(&text) && !text.is_empty(),
        "served {text:?}, file {on_disk:?}"
    );
    assert!(
        parse_log(text.as_bytes())
            .iter()
            .any(|l| l.label.starts_with("SYS"))
    );
    let (_, tail) = api.get_text("/api/triggeredwebjobs/sched/schedulerlog?tail=1");
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let (code, body) = api.get_json("/api/triggeredwebjobs/nosuch/schedulerlog");
    assert_eq!(code, 404, "{body:#}");
    h.finish();
}

// ----- settings -------------------------------------------------------------------------------

#[test]
fn settings_get_and_put() {
    let mut h = TestHost::new();
    let original =
        "// kept as written\n{\"env\": {\"GREETING\": \"v1\"}, \"stopping_wait_time\": 2}\n";
    h.write_job(
        CONTINUOUS,
        "conf",
        &[
            (
                "run.sh",
                "#!/bin/bash\necho \"greeting=$GREETING\"\necho $$ >> \"$TEST_STATE/conf.pids\"\nexec sleep 100000\n",
            ),
            ("settings.job", original),
        ],
    );
    h.write_job(
        TRIGGERED,
        "tset",
        &[("run.sh", "#!/bin/bash\necho \"color=$COLOR\"\n")],
    );
    h.start();
    let api = connect(&h);
    h.wait_log("conf", "INFO] greeting=v1\n");
    let pid1 = h.wait_pids("conf.pids", 1)[0];
    let file = h.job_dir(CONTINUOUS, "conf").join("settings.job");
    let path = "/api/continuouswebjobs/conf/settings";

    let (code, got) = api.get_json(path);
    assert_eq!(code, 200);
    assert_eq!(
        got,
        json!({"env": {"GREETING": "v1"}, "stopping_wait_time": 2})
    );

    // Refused bodies: 400 naming the problem, the file untouched, the job untouched.
    let refused: [(&[u8], &[&str]); 4] = [
        // Unclosed: the message has file, line and column.
        (b"{\"env\": {\"GREETING\": \"v2\"}", &["settings.job:1:"]),
        (
            b"{\"stopping_wait_time\": \"soon\"}",
            &["stopping_wait_time"],
        ),
        (b"{\"restart_delay\": -3}", &["restart_delay"]),
        (b"[1, 2]", &[]),
    ];
    for (body, words) in refused {
        let (code, mut resp) = api.put_settings(path, body);
        let shown = String::from_utf8_lossy(body);
        assert_eq!(code, 400, "PUT settings {shown}: {resp:#}");
        // The settings problems, structured, beside the error's message
        // (tests/integration/settings_problems.rs checks them).
        let problems = resp.as_object_mut().and_then(|o| o.remove("problems"));
        assert!(
            problems.is_some_and(|p| p.as_array().is_some_and(|a| !a.is_empty())),
            "PUT settings {shown}: {resp:#}"
        );
        check_shape("error", &resp);
        let msg = resp["message"].as_str().unwrap_or_default();
        for w in words {
            assert!(
                msg.contains(w),
                "the message for {shown} names `{w}`: {msg}"
            );
        }
        assert_eq!(
            fs::read(&file).unwrap(),
            original.as_bytes(),
            "settings.job is byte for byte unchanged after a refused PUT"
        );
    }
    // Over the body limit (1 MiB): 413.
    let mut big = b"{\"env\": {\"X\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1024 * 1024));
    big.extend_from_slice(b"\"}}");
    let r = api
        .req(Method::PUT, path)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413, "a settings body over 1 MiB");
    assert_eq!(fs::read(&file).unwrap(), original.as_bytes());
    let (code, got) = api.get_json(path);
    assert_eq!(code, 200);
    assert_eq!(got["env"]["GREETING"], "v1");
    assert_eq!(
        h.read_pids("conf.pids"),
        [pid1],
        "no restart from refused PUTs"
    );

    // Accepted: the file is the body, byte for byte, and the job picks it up.
    let new =
        b"{\n  // now v2\n  \"env\": {\"GREETING\": \"v2\"},\n  \"stopping_wait_time\": 1\n}\n";
    let (code, resp) = api.put_settings(path, new);
    assert_eq!(code, 200, "{resp:#}");
    assert_eq!(fs::read(&file).unwrap(), new.to_vec());
    h.wait_log("conf", "INFO] greeting=v2\n");
    h.wait_dead("the run with the old settings", pid1);
    let (_, got) = api.get_json(path);
    assert_eq!(
        got,
        json!({"env": {"GREETING": "v2"}, "stopping_wait_time": 1})
    );
    let (_, job) = api.get_json("/api/continuouswebjobs/conf");
    assert_eq!(
        job["settings"], got,
        "the job object shows the new settings"
    );

    // Triggered: the next run uses them.
    let tpath = "/api/triggeredwebjobs/tset/settings";
    let (code, got) = api.get_json(tpath);
    assert_eq!((code, got), (200, json!({})));
    let (code, resp) = api.put_settings(tpath, br#"{"env": {"COLOR": "green"}}"#);
    assert_eq!(code, 200, "{resp:#}");
    let mut id = String::new();
    h.wait_for("a run of tset printing the new setting", DEADLINE, || {
        id = api.start_run("tset");
        api.wait_run_end(&h, "tset", &id);
        let (_, out) = api.get_text(&format!("/api/triggeredwebjobs/tset/history/{id}/output"));
        out.contains("INFO] color=green\n")
    });

    for (p, want) in [
        ("/api/continuouswebjobs/nosuch/settings", 404),
        ("/api/triggeredwebjobs/nosuch/settings", 404),
        ("/api/continuouswebjobs/tset/settings", 404),
        ("/api/continuouswebjobs/-x/settings", 400),
    ] {
        let (code, body) = api.get_json(p);
        assert_eq!(code, want, "GET {p}: {body:#}");
        let (code, body) = api.put_settings(p, b"{}");
        assert_eq!(code, want, "PUT {p}: {body:#}");
    }
    h.finish();
}

// ----- deploy and delete ----------------------------------------------------------------------

#[test]
fn deploy_a_zip_creates_then_replaces_a_job() {
    let mut h = TestHost::start_new();
    let api = connect(&h);
    let script = |v: u32| {
        format!(
            "#!/bin/bash\necho \"version {v} $(cat data/v.txt)\"\necho $$ >> \"$TEST_STATE/dz.pids\"\nexec sleep 100000\n"
        )
    };

    let (code, body) = api.put_zip(
        "/api/continuouswebjobs/dz",
        zip_of(&[
            ("run.sh", script(1).as_bytes()),
            ("data/v.txt", b"one"),
            ("old.txt", b"only in v1"),
        ]),
    );
    assert_eq!(code, 201, "a new job: {body:#}");
    h.wait_log("dz", "INFO] version 1 one\n");
    let pid1 = h.wait_pids("dz.pids", 1)[0];
    api.wait_continuous_status(&h, "dz", "Running");
    let dir = h.job_dir(CONTINUOUS, "dz");
    assert!(dir.join("old.txt").is_file());

    let (code, body) = api.put_zip(
        "/api/continuouswebjobs/dz",
        zip_of(&[("run.sh", script(2).as_bytes()), ("data/v.txt", b"two")]),
    );
    assert_eq!(code, 200, "a re-deploy: {body:#}");
    h.wait_log("dz", "INFO] version 2 two\n");
    h.wait_dead("the run of the replaced job", pid1);
    assert!(
        !dir.join("old.txt").exists(),
        "a re-deploy replaces the folder, it does not merge"
    );
    assert_no_staging_leftovers(&h);

    // A triggered job from a zip runs when triggered.
    let (code, body) = api.put_zip(
        "/api/triggeredwebjobs/tz",
        zip_of(&[("run.sh", QUICK_JOB.as_bytes())]),
    );
    assert_eq!(code, 201, "{body:#}");
    api.assert_code("/api/triggeredwebjobs/tz", 200);
    let id = api.start_run("tz");
    let run = api.wait_run_end(&h, "tz", &id);
    assert_eq!(run["status"], "Success", "{run:#}");
    let (_, out) = api.get_text(&format!("/api/triggeredwebjobs/tz/history/{id}/output"));
    assert!(out.contains("INFO] hello from tz\n"), "{out}");

    // Bodies that are not a job.
    let (code, body) = api.put_zip(
        "/api/triggeredwebjobs/bad",
        b"PK\x03\x04 not really".to_vec(),
    );
    assert_eq!(code, 400, "a broken zip: {body:#}");
    let (code, body) = api.put_zip("/api/triggeredwebjobs/bad", zip_of(&[]));
    assert_eq!(code, 400, "an empty zip: {body:#}");
    let (code, body) = api.put_zip("/api/triggeredwebjobs/-bad", zip_of(&[("run.sh", b"x")]));
    assert_eq!(code, 400, "a bad name: {body:#}");
    assert!(!h.job_dir(TRIGGERED, "bad").exists());
    assert_no_staging_leftovers(&h);
    h.finish();
}

#[test]
fn deploy_a_single_file_named_by_content_disposition() {
    let mut h = TestHost::start_new();
    let api = connect(&h);
    let (code, body) = api.put_file(
        "/api/triggeredwebjobs/single",
        "run.sh",
        QUICK_JOB.as_bytes(),
    );
    assert_eq!(code, 201, "{body:#}");
    assert_eq!(
        fs::read_to_string(h.job_dir(TRIGGERED, "single").join("run.sh")).unwrap(),
        QUICK_JOB
    );
    api.assert_code("/api/triggeredwebjobs/single", 200);
    let id = api.start_run("single");
    assert_eq!(api.wait_run_end(&h, "single", &id)["status"], "Success");
    let (_, out) = api.get_text(&format!("/api/triggeredwebjobs/single/history/{id}/output"));
    assert!(out.contains("INFO] hello from single\n"), "{out}");

    // Quoted file name, re-deploy: 200.
    let r = api
        .req(Method::PUT, "/api/triggeredwebjobs/single")
        .header("Content-Disposition", "attachment; filename=\"run.sh\"")
        .body("#!/bin/bash\necho replaced\n")
        .send()
        .unwrap();
    let (code, body) = json_of(r);
    assert_eq!(code, 200, "{body:#}");

    // No name, or a name that is not a plain file name: 400, nothing written.
    let r = api
        .req(Method::PUT, "/api/triggeredwebjobs/noname")
        .header("Content-Type", "text/plain")
        .body("echo hi\n")
        .send()
        .unwrap();
    let (code, body) = json_of(r);
    assert_eq!(
        code, 400,
        "a single file without Content-Disposition: {body:#}"
    );
    check_shape("error", &body);
    for name in ["../escape.sh", ".hidden.sh", "sub/run.sh"] {
        let (code, body) = api.put_file("/api/triggeredwebjobs/noname", name, b"echo hi\n");
        assert_eq!(code, 400, "file name {name:?}: {body:#}");
    }
    assert!(!h.job_dir(TRIGGERED, "noname").exists());
    assert!(
        !h.jobs.join("escape.sh").exists() && !h.jobs.join(TRIGGERED).join("escape.sh").exists()
    );
    assert_no_staging_leftovers(&h);
    h.finish();
}

#[test]
fn deploy_refuses_zip_slip_and_links_out_of_the_job() {
    let (mut h, api) = host_with_triggered("keep", QUICK_JOB);
    let abs = h.root.join("abs-escape");
    let abs_name = abs.display().to_string();
    let outside = [
        h.jobs.join(TRIGGERED).join("x"),
        h.jobs.join("x"),
        h.root.join("x"),
        abs.clone(),
    ];
    let jobs_before = tree(&h.jobs);
    let root_before = tree_names(&h.root)
        .into_iter()
        .filter(|p| !p.starts_with("logs") && !p.starts_with("state") && !p.starts_with("tmp"))
        .collect::<Vec<_>>();

    let zips: Vec<(String, Vec<u8>, &str)> = vec![
        (
            "../x".into(),
            zip_of(&[("run.sh", b"ok"), ("../x", b"x")]),
            "outside",
        ),
        (
            abs_name.clone(),
            zip_of(&[("run.sh", b"ok"), (&abs_name, b"x")]),
            "outside",
        ),
        (
            "a/../../x".into(),
            zip_of(&[("run.sh", b"ok"), ("a/../../x", b"x")]),
            "outside",
        ),
        (
            "../../x".into(),
            zip_of(&[("../../x", b"x"), ("run.sh", b"ok")]),
            "outside",
        ),
        ("link -> ../../x".into(), zip_with_link("../../x"), "link"),
        (
            "link -> /etc/passwd".into(),
            zip_with_link("/etc/passwd"),
            "link",
        ),
        (
            "link -> sub/../../x".into(),
            zip_with_link("sub/../../x"),
            "link",
        ),
    ];
    for t in [CONTINUOUS, TRIGGERED] {
        for (what, zip, word) in &zips {
            for name in ["slip", "keep"] {
                let path = format!("/api/{t}webjobs/{name}");
                let (code, body) = api.put_zip(&path, zip.clone());
                assert_eq!(code, 400, "PUT {path} with {what}: {body:#}");
                check_shape("error", &body);
                let msg = body["message"].as_str().unwrap_or_default();
                assert!(msg.contains(word), "PUT {path} with {what}: {msg}");
                for p in &outside {
                    assert!(!p.exists(), "{what} wrote {}", p.display());
                }
                assert_eq!(tree(&h.jobs), jobs_before, "{what} changed JOBS");
            }
        }
    }
    let root_after = tree_names(&h.root)
        .into_iter()
        .filter(|p| !p.starts_with("logs") && !p.starts_with("state") && !p.starts_with("tmp"))
        .collect::<Vec<_>>();
    assert_eq!(root_before, root_after);
    // A link that stays inside is fine.
    let (code, body) = api.put_zip("/api/triggeredwebjobs/inlink", zip_with_link("run.sh"));
    assert_eq!(code, 201, "a link inside the job: {body:#}");
    assert_eq!(
        fs::read_link(h.job_dir(TRIGGERED, "inlink").join("link")).unwrap(),
        PathBuf::from("run.sh")
    );
    // The job that was there is intact and runs.
    let id = api.start_run("keep");
    assert_eq!(api.wait_run_end(&h, "keep", &id)["status"], "Success");
    h.finish();
}

#[test]
fn deploy_refuses_a_zip_bomb() {
    // Built by hand (one fixed-Huffman DEFLATE block, honest CRC and sizes): writing
    // 300 MiB of zeros through zip::ZipWriter takes 15-20 s in a debug build. Checked
    // first on a small one against the zip crate's reader.
    let small = zip_of_zeros("run.sh", 3 << 20);
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(small)).unwrap();
    let mut f = z.by_index(0).unwrap();
    let mut content = Vec::new();
    f.read_to_end(&mut content)
        .expect("the hand-made zip reads back");
    assert!(content.len() == 3 << 20 && content.iter().all(|b| *b == 0));
    assert_eq!(crc32_of_zeros(1000), crc32(&[0; 1000]));
    assert_eq!(
        crc32_of_zeros(3 << 20),
        0x7972_4fc6,
        "zlib.crc32(bytes(3 << 20))"
    );

    let size: u64 = 300 << 20;
    let bomb = zip_of_zeros("run.sh", size);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());

    let mut h = TestHost::start_new();
    let api = connect(&h);
    // The same construction under the cap is a job like any other.
    let (code, body) = api.put_zip(
        "/api/triggeredwebjobs/zeros",
        zip_of_zeros("data.bin", 8 << 20),
    );
    assert_eq!(code, 201, "a hand-made zip of 8 MiB: {body:#}");
    let file = h.job_dir(TRIGGERED, "zeros").join("data.bin");
    assert_eq!(fs::metadata(&file).unwrap().len(), 8 << 20);
    let (code, body) = json_of(api.delete("/api/triggeredwebjobs/zeros"));
    assert_eq!(code, 200, "{body:#}");

    let (code, body) = api.put_zip("/api/triggeredwebjobs/bomb", bomb);
    assert_eq!(code, 400, "a zip that inflates to 300 MiB: {body:#}");
    check_shape("error", &body);
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(msg.contains("256 MiB"), "{msg}");
    assert!(!h.job_dir(TRIGGERED, "bomb").exists());
    assert_no_staging_leftovers(&h);
    assert_eq!(tree_names(&h.jobs), [CONTINUOUS, TRIGGERED]);
    h.finish();
}

#[test]
fn delete_stops_the_job_removes_its_folder_and_keeps_its_logs() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "doomed", &[("run.sh", &sleeper("doomed"))]);
    h.write_job(TRIGGERED, "tdoomed", &[("run.sh", QUICK_JOB)]);
    h.start();
    let api = connect(&h);
    let pid = h.wait_running("doomed");
    api.wait_code(&h, "/api/triggeredwebjobs/tdoomed", 200);
    let id = api.start_run("tdoomed");
    api.wait_run_end(&h, "tdoomed", &id);

    let r = api.delete("/api/continuouswebjobs/doomed");
    let (code, body) = json_of(r);
    assert_eq!(code, 200, "{body:#}");
    assert!(
        !h.job_dir(CONTINUOUS, "doomed").exists(),
        "the folder is gone"
    );
    h.wait_dead("the deleted job's run", pid);
    api.assert_code("/api/continuouswebjobs/doomed", 404);
    assert!(
        h.log_dir("doomed").join("job_log.txt").is_file(),
        "logs stay"
    );
    assert!(h.read_log("doomed").contains("INFO] ready\n"));

    let (code, body) = json_of(api.delete("/api/triggeredwebjobs/tdoomed"));
    assert_eq!(code, 200, "{body:#}");
    assert!(!h.job_dir(TRIGGERED, "tdoomed").exists());
    api.assert_code("/api/triggeredwebjobs/tdoomed", 404);
    assert!(
        h.logs
            .join(format!("triggered/tdoomed/{id}/output_log.txt"))
            .is_file(),
        "run logs stay"
    );
    assert_no_staging_leftovers(&h);

    for (path, want) in [
        ("/api/continuouswebjobs/doomed", 404),
        ("/api/continuouswebjobs/nosuch", 404),
        ("/api/triggeredwebjobs/nosuch", 404),
        ("/api/continuouswebjobs/-x", 400),
    ] {
        let (code, body) = json_of(api.delete(path));
        assert_eq!(code, want, "DELETE {path}: {body:#}");
        check_shape("error", &body);
    }
    assert!(h.jobs.join(CONTINUOUS).is_dir() && h.jobs.join(TRIGGERED).is_dir());
    h.finish();
}

// ----- path traversal ------------------------------------------------------------------------

#[test]
fn path_traversal_never_reaches_outside_jobs_or_logs() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "web", &[("run.sh", &sleeper("web"))]);
    h.write_job(TRIGGERED, "tj", &[("run.sh", QUICK_JOB)]);
    // Bait outside JOBS and LOGS: `JOBS/continuous/../../secret` and
    // `LOGS/continuous/../../secret` are both `secret/` of the sandbox.
    let secret = h.root.join("secret");
    let bait = [
        ("job_log.txt", "TOP-SECRET log\n"),
        ("job_scheduler.log", "TOP-SECRET scheduler\n"),
        ("settings.job", "{\"env\": {\"TOP-SECRET\": \"1\"}}\n"),
    ];
    fs::create_dir_all(&secret).unwrap();
    for (f, text) in bait {
        fs::write(secret.join(f), text).unwrap();
    }
    fs::write(h.root.join("secret.txt"), "TOP-SECRET\n").unwrap();
    // The same folder by absolute path, encoded as one path segment.
    let abs_secret = secret.display().to_string().replace('/', "%2F");
    let abs_escaped = h
        .root
        .join("abs-escaped")
        .display()
        .to_string()
        .replace('/', "%2F");
    h.start();
    let api = connect(&h);
    let pid = h.wait_running("web");
    api.wait_code(&h, "/api/triggeredwebjobs/tj", 200);
    let id = api.start_run("tj");
    api.wait_run_end(&h, "tj", &id);
    let jobs_before = tree(&h.jobs);
    let root_before = fs::read_dir(&h.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect::<std::collections::BTreeSet<_>>();
    let abs_reads = [
        format!("/api/continuouswebjobs/{abs_secret}"),
        format!("/api/continuouswebjobs/{abs_secret}/log"),
        format!("/api/continuouswebjobs/{abs_secret}/settings"),
        format!("/api/triggeredwebjobs/{abs_secret}/schedulerlog"),
        format!("/api/triggeredwebjobs/{abs_secret}/settings"),
    ];

    let reads = [
        "/api/continuouswebjobs/..",
        "/api/continuouswebjobs/.",
        "/api/continuouswebjobs/%2e%2e",
        "/api/continuouswebjobs/%2E%2E",
        "/api/continuouswebjobs/..%2F..%2Fetc",
        "/api/continuouswebjobs/%2Fetc%2Fpasswd",
        "/api/continuouswebjobs/..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/continuouswebjobs/../../../../etc/passwd",
        "/api/continuouswebjobs/web/../../../../../../etc/passwd",
        "/api/continuouswebjobs/..%2Fsecret/log",
        "/api/continuouswebjobs/..%2F..%2Fsecret/log",
        "/api/continuouswebjobs/%2e%2e%2f%2e%2e%2fsecret/log",
        "/api/continuouswebjobs/..%2F..%2F..%2F..%2F..%2F..%2Fetc/log",
        "/api/continuouswebjobs/..%2F..%2Fsecret/settings",
        "/api/continuouswebjobs/..%5C..%5Csecret.txt",
        "/api/triggeredwebjobs/..%2Fcontinuous%2Fweb",
        "/api/triggeredwebjobs/..%2F..%2Fsecret/history",
        "/api/triggeredwebjobs/..%2F..%2Fsecret/schedulerlog",
        "/api/triggeredwebjobs/tj/history/..%2F..%2F..%2Fsecret.txt",
        "/api/triggeredwebjobs/tj/history/%2e%2e/output",
        "/api/triggeredwebjobs/tj/history/..%2F..%2F..%2F..%2Fetc%2Fpasswd/output",
        "/api/triggeredwebjobs/tj/history/%2Fetc%2Fpasswd/output",
        "/api/triggeredwebjobs/%2e%2e/history/000000000000000000/output",
        "/api/%2e%2e/%2e%2e/etc/passwd",
        "/..%2F..%2Fetc%2Fpasswd",
    ];
    for path in reads
        .iter()
        .copied()
        .chain(abs_reads.iter().map(String::as_str))
    {
        let (code, text) = raw_http(&api, "GET", path, &[], b"");
        assert!(
            code == 400 || code == 404,
            "GET {path} answered {code}:\n{text}"
        );
        assert!(
            !text.contains("root:") && !text.contains("TOP-SECRET"),
            "GET {path} leaked a file:\n{text}"
        );
    }

    let single = [
        ("Content-Type", "application/octet-stream"),
        ("Content-Disposition", "attachment; filename=run.sh"),
    ];
    let zip = zip_of(&[("run.sh", QUICK_JOB.as_bytes())]);
    let zipped = [("Content-Type", "application/zip")];
    let abs_put = format!("/api/continuouswebjobs/{abs_escaped}");
    let abs_settings = format!("/api/continuouswebjobs/{abs_secret}/settings");
    let abs_delete = format!("/api/triggeredwebjobs/{abs_secret}");
    let writes: Vec<RawRequest> = vec![
        (
            "PUT",
            "/api/continuouswebjobs/..",
            &single,
            QUICK_JOB.as_bytes(),
        ),
        ("PUT", "/api/continuouswebjobs/%2e%2e", &zipped, &zip),
        ("PUT", "/api/triggeredwebjobs/%2e%2e", &zipped, &zip),
        (
            "PUT",
            "/api/continuouswebjobs/..%2Fescaped",
            &single,
            QUICK_JOB.as_bytes(),
        ),
        (
            "PUT",
            "/api/continuouswebjobs/..%2F..%2Fescaped",
            &zipped,
            &zip,
        ),
        (
            "PUT",
            "/api/triggeredwebjobs/..%2F..%2F..%2Fescaped",
            &zipped,
            &zip,
        ),
        ("PUT", &abs_put, &single, QUICK_JOB.as_bytes()),
        ("PUT", &abs_settings, &[], b"{}"),
        ("DELETE", &abs_delete, &[], b""),
        (
            "PUT",
            "/api/continuouswebjobs/..%2F..%2Fsecret/settings",
            &[],
            b"{}",
        ),
        ("PUT", "/api/continuouswebjobs/%2e%2e/settings", &[], b"{}"),
        ("DELETE", "/api/continuouswebjobs/..", &[], b""),
        ("DELETE", "/api/continuouswebjobs/%2e%2e", &[], b""),
        (
            "DELETE",
            "/api/triggeredwebjobs/..%2Fcontinuous%2Fweb",
            &[],
            b"",
        ),
        (
            "DELETE",
            "/api/continuouswebjobs/..%2F..%2Fsecret",
            &[],
            b"",
        ),
        ("DELETE", "/api/continuouswebjobs/.", &[], b""),
        (
            "POST",
            "/api/continuouswebjobs/..%2Fcontinuous%2Fweb/stop",
            &[],
            b"",
        ),
        (
            "POST",
            "/api/continuouswebjobs/..%2F..%2Fsecret/stop",
            &[],
            b"",
        ),
        (
            "POST",
            "/api/triggeredwebjobs/..%2Ftriggered%2Ftj/run",
            &[],
            b"",
        ),
        (
            "POST",
            "/api/triggeredwebjobs/tj/history/..%2F..%2Fsecret/cancel",
            &[],
            b"",
        ),
    ];
    for (method, path, headers, body) in writes {
        let (code, text) = raw_http(&api, method, path, headers, body);
        assert!(
            code == 400 || code == 404,
            "{method} {path} answered {code}:\n{text}"
        );
    }
    assert_eq!(tree(&h.jobs), jobs_before, "JOBS changed");
    let root_after = fs::read_dir(&h.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(root_before, root_after, "the sandbox root changed");
    assert_eq!(
        fs::read_to_string(h.root.join("secret.txt")).unwrap(),
        "TOP-SECRET\n"
    );
    assert_eq!(
        tree_names(&secret),
        ["job_log.txt", "job_scheduler.log", "settings.job"],
        "nothing written beside the bait"
    );
    for (f, text) in bait {
        assert_eq!(fs::read_to_string(secret.join(f)).unwrap(), text, "{f}");
    }
    assert!(!h.root.parent().unwrap().join("escaped").exists());
    // The jobs are untouched.
    assert_eq!(h.read_pids("web.pids"), [pid]);
    assert!(pid_alive(pid));
    assert_eq!(
        api.get_json("/api/continuouswebjobs/web").1["status"],
        "Running"
    );
    let (_, history) = api.get_json("/api/triggeredwebjobs/tj/history");
    assert_eq!(history["runs"].as_array().unwrap().len(), 1, "{history:#}");
    h.finish();
}

// ----- metrics and the dashboard -------------------------------------------------------------

#[test]
fn metrics_are_prometheus_text() {
    let mut h = TestHost::new();
    h.write_job(CONTINUOUS, "web", &[("run.sh", &sleeper("web"))]);
    h.write_job(TRIGGERED, "tj", &[("run.sh", QUICK_JOB)]);
    h.start();
    let api = connect(&h);
    h.wait_running("web");
    api.wait_code(&h, "/api/triggeredwebjobs/tj", 200);
    let id = api.start_run("tj");
    api.wait_run_end(&h, "tj", &id);

    let mut text = String::new();
    h.wait_for("/metrics to count the run", DEADLINE, || {
        let r = api.get("/metrics");
        assert_eq!(r.status(), 200);
        let ctype = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            ctype.starts_with("text/plain") || ctype.starts_with("application/openmetrics-text"),
            "{ctype}"
        );
        text = r.text().unwrap();
        text.contains("jobhost_runs_total{job=\"tj\",outcome=\"Success\"} 1")
    });
    for needle in [
        "jobhost_job_status{job=\"web\",kind=\"continuous\",status=\"Running\"} 1",
        "jobhost_job_status{job=\"tj\",kind=\"triggered\",status=\"Ready\"} 1",
        "jobhost_build_info{version=\"",
        "jobhost_uptime_seconds ",
        "# TYPE jobhost_job_status gauge",
        "# TYPE jobhost_runs counter",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle:?}:\n{text}");
    }
    // Every sample line is `name{labels} value` or `name value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(
            line.starts_with("jobhost_") && value.parse::<f64>().is_ok(),
            "not a Prometheus sample: {line:?}"
        );
    }
    h.finish();
}

#[test]
fn the_dashboard_is_served_at_the_root() {
    // A dashboard at `/` (docs/dashboard.md): the page holds no data and answers
    // without the token (it asks for it in a form); the data it reads needs it.
    let mut h = TestHost::start_new();
    let api = connect(&h);
    let r = api.http.get(api.url("/api/webjobs")).send().unwrap();
    assert_eq!(r.status(), 401, "the dashboard's data needs the token");
    let r = api.http.get(api.url("/")).send().unwrap();
    let code = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = r.text().unwrap();
    assert_eq!(code, 200, "GET / (the dashboard): {body}");
    assert!(ctype.starts_with("text/html"), "{ctype}");
    h.finish();
}

/// Server-sent events carry resumable ids: a client that reconnects with
/// `Last-Event-ID` after the log rotated (twice, here) gets exactly the lines it had
/// not seen, in order, none repeated.
#[test]
fn sse_log_resumes_across_rotations_without_losing_or_repeating_lines() {
    let mut h = TestHost::new();
    h.write_job(
        CONTINUOUS,
        "sse",
        &[
            (
                "run.sh",
                r#"#!/bin/bash
for i in $(seq 1 10); do echo "n $i"; done
while [ ! -e "$TEST_STATE/more" ]; do sleep 0.05; done
for i in $(seq 11 3000); do echo "n $i padding-padding-padding"; done
echo "the end"
exec sleep 100000
"#,
            ),
            (
                "settings.job",
                r#"{"log_max_bytes": 65536, "log_keep": 10}"#,
            ),
        ],
    );
    h.start();
    let api = connect(&h);
    h.wait_log("sse", "INFO] n 10\n");

    let r = api.get("/api/continuouswebjobs/sse/log?format=sse");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let first = r.text().unwrap();
    let last_id = first
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .expect("events carry ids")
        .to_string();
    assert!(
        first.contains("data: ") && first.contains("INFO] n 10"),
        "{first}"
    );

    fs::write(h.state_path("more"), "").unwrap();
    h.wait_for(
        "the end of the output, rotated files included",
        DEADLINE,
        || String::from_utf8_lossy(&h.read_log_all("sse")).contains("INFO] the end\n"),
    );
    assert!(
        h.logs.join("continuous/sse/job_log.2.txt").exists(),
        "the log rotated at least twice"
    );

    let r = send(
        api.req(Method::GET, "/api/continuouswebjobs/sse/log?format=sse")
            .header("Last-Event-ID", &last_id),
        "GET",
        "resume",
    );
    assert_eq!(r.status(), 200);
    let rest = r.text().unwrap();
    let numbers: Vec<u32> = rest
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|l| l.split("INFO] n ").nth(1))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(numbers, (11..=3000).collect::<Vec<u32>>());
    assert!(rest.contains("INFO] the end"));

    // A position that is not one is a 400, not a stream from somewhere.
    let r = send(
        api.req(Method::GET, "/api/continuouswebjobs/sse/log?from=nonsense"),
        "GET",
        "bad from",
    );
    assert_eq!(r.status(), 400);
    h.finish();
}

// ----- read-your-writes --------------------------------------------------------------

/// The status word of a continuous job as `GET /api/continuouswebjobs/NAME` says it.
fn continuous_status_now(api: &Api, job: &str) -> (u16, String) {
    let (code, v) = api.get_json(&format!("/api/continuouswebjobs/{job}"));
    (code, v["status"].as_str().unwrap_or_default().to_string())
}

#[test]
fn a_deployed_triggered_job_can_be_triggered_and_read_by_the_very_next_request() {
    let mut h = TestHost::start_new();
    let api = connect(&h);
    // The same name over and over: a job deleted and deployed again at once must not
    // see its previous task's runs, nor be missing from the next request.
    for round in 0..15 {
        let job = if round % 2 == 0 { "ryw" } else { "ryw2" };
        let path = format!("/api/triggeredwebjobs/{job}");
        let (code, body) = api.put_file(&path, "run.sh", QUICK_JOB.as_bytes());
        assert_eq!(code, 201, "round {round}: deploy: {body:#}");
        assert_eq!(
            body["name"], job,
            "the deploy answers the job object: {body:#}"
        );
        assert_eq!(body["type"], "triggered", "{body:#}");
        assert!(body["run_command"].is_string(), "{body:#}");

        let (code, got) = api.get_json(&path);
        assert_eq!(
            code, 200,
            "round {round}: GET right after the deploy: {got:#}"
        );
        let (_, list) = api.get_json("/api/triggeredwebjobs");
        assert!(
            list.as_array().unwrap().iter().any(|j| j["name"] == job),
            "round {round}: the listing right after the deploy: {list:#}"
        );
        let id = api.start_run(job);

        let settings = br#"{"schedule": "0 0 5 * * *", "history_size": 7}"#;
        let (code, body) = api.put_settings(&format!("{path}/settings"), settings);
        assert_eq!(code, 200, "round {round}: PUT settings: {body:#}");
        let (code, got) = api.get_json(&format!("{path}/settings"));
        assert_eq!(code, 200);
        assert_eq!(
            got,
            json!({"schedule": "0 0 5 * * *", "history_size": 7}),
            "round {round}: GET settings right after PUT"
        );
        let (_, job_obj) = api.get_json(&path);
        assert_eq!(job_obj["settings"]["history_size"], 7, "{job_obj:#}");

        let run = api.wait_run_end(&h, job, &id);
        assert_eq!(run["status"], "Success", "round {round}: {run:#}");

        let r = api.delete(&path);
        assert_eq!(r.status().as_u16(), 200, "round {round}: DELETE");
        let (code, got) = api.get_json(&path);
        assert_eq!(code, 404, "round {round}: GET right after DELETE: {got:#}");
        let (_, list) = api.get_json("/api/webjobs");
        assert!(
            !list.as_array().unwrap().iter().any(|j| j["name"] == job),
            "round {round}: the listing right after DELETE: {list:#}"
        );
        let (code, _, body) = api.trigger(job, "");
        assert_eq!(
            code, 404,
            "round {round}: trigger right after DELETE: {body:#}"
        );
    }
    h.finish();
}

#[test]
fn a_stop_or_start_is_in_the_status_of_the_very_next_request() {
    let mut h = TestHost::start_new();
    let api = connect(&h);
    let script = "#!/bin/bash\ntrap 'exit 0' TERM\nwhile true; do sleep 0.2; done\n";
    let (code, body) = api.put_file("/api/continuouswebjobs/sw", "run.sh", script.as_bytes());
    assert_eq!(code, 201, "{body:#}");
    let (code, status) = continuous_status_now(&api, "sw");
    assert_eq!(code, 200);
    assert!(
        ["Starting", "Running"].contains(&status.as_str()),
        "right after the deploy: {status}"
    );
    for round in 0..10 {
        let (code, body) = api.post_json("/api/continuouswebjobs/sw/stop");
        assert_eq!(code, 200, "{body:#}");
        let (_, status) = continuous_status_now(&api, "sw");
        assert!(
            ["Stopping", "Stopped"].contains(&status.as_str()),
            "round {round}: right after stop: {status}"
        );
        let (code, body) = api.post_json("/api/continuouswebjobs/sw/start");
        assert_eq!(code, 200, "{body:#}");
        let (_, status) = continuous_status_now(&api, "sw");
        assert!(
            ["Starting", "Running"].contains(&status.as_str()),
            "round {round}: right after start: {status}"
        );
    }
    // And through the CLI: `jobhost stop` then `jobhost status` at once.
    let cli = |args: &[&str]| {
        let mut full: Vec<std::ffi::OsString> = args.iter().map(|a| (*a).into()).collect();
        full.push("--logs".into());
        full.push(h.logs.clone().into_os_string());
        run_cli(&full)
    };
    let (code, out) = cli(&["stop", "sw"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cli(&["status", "sw", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("\"Stopping\"") || out.contains("\"Stopped\""),
        "jobhost status right after jobhost stop: {out}"
    );
    h.finish();
}
