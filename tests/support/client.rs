//! The API client of the integration tests: a running host's address and token, read
//! from the files it writes, and the calls the tests make. Also the file-tree helpers
//! that deploy tests use to show what a refused deploy left alone.

use std::fs;
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

use super::*;

/// A triggered job that prints one line and exits 0.
pub const QUICK_JOB: &str = "#!/bin/bash\necho \"hello from $WEBJOBS_NAME\"\n";

/// The API of one running host: its base URL and token, from the files it writes.
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: Client,
}

pub fn http_client() -> Client {
    Client::builder()
        // Per read, not in total: it only bounds a hang.
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building the HTTP client")
}

/// Waits for `LOGS/.jobhost-url` and `LOGS/.jobhost-token`, then for the server to
/// answer `/api/health`.
/// The API of the host running on `logs` right now, from the files it wrote (no wait).
pub fn at(logs: &Path) -> Api {
    let read = |f: &str| {
        fs::read_to_string(logs.join(f))
            .unwrap_or_else(|e| panic!("reading LOGS/{f}: {e}"))
            .trim()
            .to_string()
    };
    Api {
        base: read(".jobhost-url"),
        token: read(".jobhost-token"),
        http: http_client(),
    }
}

pub fn connect(h: &TestHost) -> Api {
    let url_file = h.logs.join(".jobhost-url");
    let token_file = h.logs.join(".jobhost-token");
    let (mut base, mut token) = (String::new(), String::new());
    h.wait_for(
        "the host to write LOGS/.jobhost-url and LOGS/.jobhost-token",
        DEADLINE,
        || {
            base = fs::read_to_string(&url_file)
                .unwrap_or_default()
                .trim()
                .to_string();
            token = fs::read_to_string(&token_file)
                .unwrap_or_default()
                .trim()
                .to_string();
            !base.is_empty() && !token.is_empty()
        },
    );
    assert!(
        base.starts_with("http://127.0.0.1:"),
        "the URL file holds {base:?}"
    );
    let api = Api {
        base,
        token,
        http: http_client(),
    };
    h.wait_for("GET /api/health to answer 200", DEADLINE, || {
        api.http
            .get(api.url("/api/health"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    api
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request carrying the token.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    pub fn get(&self, path: &str) -> Response {
        send(self.req(Method::GET, path), "GET", path)
    }

    pub fn post(&self, path: &str) -> Response {
        send(self.req(Method::POST, path), "POST", path)
    }

    pub fn delete(&self, path: &str) -> Response {
        send(self.req(Method::DELETE, path), "DELETE", path)
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        json_of(self.get(path))
    }

    pub fn post_json(&self, path: &str) -> (u16, Value) {
        json_of(self.post(path))
    }

    pub fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.get(path);
        let code = r.status().as_u16();
        (code, r.text().expect("reading a text body"))
    }

    /// `PUT` of a zip.
    pub fn put_zip(&self, path: &str, zip: Vec<u8>) -> (u16, Value) {
        json_of(send(
            self.req(Method::PUT, path)
                .header("Content-Type", "application/zip")
                .body(zip),
            "PUT",
            path,
        ))
    }

    /// `PUT` of one file named by `Content-Disposition`.
    pub fn put_file(&self, path: &str, file_name: &str, bytes: &[u8]) -> (u16, Value) {
        json_of(send(
            self.req(Method::PUT, path)
                .header("Content-Type", "application/octet-stream")
                .header(
                    "Content-Disposition",
                    format!("attachment; filename={file_name}"),
                )
                .body(bytes.to_vec()),
            "PUT",
            path,
        ))
    }

    pub fn put_settings(&self, path: &str, body: &[u8]) -> (u16, Value) {
        json_of(send(
            self.req(Method::PUT, path)
                .header("Content-Type", "application/json")
                .body(body.to_vec()),
            "PUT",
            path,
        ))
    }

    /// `POST .../run`: the status, the `Location` header and the body.
    pub fn trigger(&self, job: &str, query: &str) -> (u16, Option<String>, Value) {
        let path = format!("/api/triggeredwebjobs/{job}/run{query}");
        let r = self.post(&path);
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (code, body) = json_of(r);
        (code, location, body)
    }

    /// Triggers a run that must be accepted and returns its id.
    pub fn start_run(&self, job: &str) -> String {
        let (code, _, body) = self.trigger(job, "");
        assert_eq!(code, 202, "POST run of {job}: {body:#}");
        body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("202 body without an id: {body:#}"))
            .to_string()
    }

    /// Waits until run `id` of `job` has ended and returns its run object.
    pub fn wait_run_end(&self, h: &TestHost, job: &str, id: &str) -> Value {
        let path = format!("/api/triggeredwebjobs/{job}/history/{id}");
        let mut last = Value::Null;
        h.wait_for(&format!("run {id} of {job} to end"), DEADLINE, || {
            let (code, v) = self.get_json(&path);
            last = v;
            code == 200 && last["status"].is_string() && last["status"] != "Running"
        });
        last
    }

    /// Waits until the API reports `job` (continuous) with `status`.
    pub fn wait_continuous_status(&self, h: &TestHost, job: &str, status: &str) -> Value {
        let path = format!("/api/continuouswebjobs/{job}");
        let mut last = Value::Null;
        h.wait_for(
            &format!("GET {path} to say status {status}"),
            DEADLINE,
            || {
                let (code, v) = self.get_json(&path);
                last = v;
                code == 200 && last["status"] == status
            },
        );
        last
    }

    /// Waits until `GET path` answers `code`.
    /// Asserts the answer of the very next request: after a write through the API,
    /// nothing may need a wait to be seen.
    pub fn assert_code(&self, path: &str, code: u16) {
        let (got, body) = self.get_json(path);
        assert_eq!(got, code, "GET {path} right after the write: {body:#}");
    }

    /// Sends a request built with [`Api::req`] and reads its JSON answer.
    pub fn call(&self, rb: RequestBuilder) -> (u16, Value) {
        json_of(rb.send().unwrap_or_else(|e| panic!("request failed: {e}")))
    }

    /// A request with the token as a Basic password, as a browser caches it.
    pub fn basic(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .basic_auth("any", Some(&self.token))
    }

    /// `PUT` of one file with the `Content-Disposition` given as it is.
    pub fn put_disposition(&self, path: &str, disposition: &str, body: &[u8]) -> (u16, Value) {
        json_of(send(
            self.req(Method::PUT, path)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Disposition", disposition)
                .body(body.to_vec()),
            "PUT",
            path,
        ))
    }

    /// `127.0.0.1:PORT`, for requests written by hand.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn wait_code(&self, h: &TestHost, path: &str, code: u16) {
        h.wait_for(&format!("GET {path} to answer {code}"), DEADLINE, || {
            self.get(path).status().as_u16() == code
        });
    }
}

pub fn send(rb: RequestBuilder, method: &str, path: &str) -> Response {
    rb.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Status and JSON body; panics (showing the body) if the body is not JSON.
pub fn json_of(r: Response) -> (u16, Value) {
    let code = r.status().as_u16();
    let url = r.url().to_string();
    let text = r.text().expect("reading a response body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("{url} answered {code} with a body that is not JSON ({e}): {text:?}")
    });
    (code, v)
}

/// The `message` of an error answer.
pub fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

/// Every path under `dir` with its content (files) or target (links), sorted; links
/// are not followed.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &p, out);
            } else if t.is_symlink() {
                out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
            } else {
                out.push(format!("{rel} = {:?}", fs::read(&p).unwrap_or_default()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every path under `dir`, relative and sorted, without contents (links not followed).
pub fn tree_names(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .map(|l| {
            let path = l.split(" = ").next().unwrap_or_default();
            let path = path.split(" -> ").next().unwrap_or_default();
            path.trim_end_matches('/').to_string()
        })
        .collect()
}

/// Asserts that no deploy left its staging folder behind under JOBS.
pub fn assert_no_staging_leftovers(h: &TestHost) {
    let left = staging_leftovers(h);
    assert!(left.is_empty(), "deploy leftovers under JOBS: {left:?}");
}

/// A host started on a sandbox holding one triggered job, once the API lists it.
pub fn host_with_triggered(name: &str, script: &str) -> (TestHost, Api) {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, name, &[("run.sh", script)]);
    h.start();
    let api = connect(&h);
    api.wait_code(&h, &format!("/api/triggeredwebjobs/{name}"), 200);
    (h, api)
}

/// Hidden deploy leftovers (`.deploy-*`, `.deleted-*`) under JOBS.
pub fn staging_leftovers(h: &TestHost) -> Vec<String> {
    tree(&h.jobs)
        .into_iter()
        .filter(|p| p.contains("/.deploy-") || p.contains("/.deleted-"))
        .collect()
}
