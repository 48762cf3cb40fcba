//! The CLI's side of the HTTP API: `list`, `status`, `start`, `stop`, `trigger`,
//! `logs`, `history`, `cancel`. Each call names the URL it tried when the host cannot
//! be reached, and turns the API's error sentence into the command's error.

use std::io::{Read, Write};

use anyhow::{Context, anyhow, bail};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

/// Where the host is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub token: Option<String>,
}

impl Endpoint {
    /// `--url`/`JOBHOST_URL`, else the address the host on this machine wrote into
    /// LOGS, else the default; the token from `JOBHOST_TOKEN` or LOGS/.jobhost-token.
    pub fn resolve(
        url: Option<String>,
        logs: &std::path::Path,
        instance: Option<&str>,
    ) -> Endpoint {
        let url = url
            .or_else(|| {
                std::fs::read_to_string(crate::host::url_file(logs, instance))
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "http://127.0.0.1:7070".to_string());
        let token = std::env::var("JOBHOST_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| {
                std::fs::read_to_string(logs.join(crate::api::TOKEN_FILE))
                    .ok()
                    .map(|s| s.trim().to_string())
            });
        Endpoint {
            url: url.trim_end_matches('/').to_string(),
            token,
        }
    }
}

pub struct Api {
    ep: Endpoint,
    http: Client,
}

/// Percent-encodes a path segment or query value byte by byte.
fn enc(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Api {
    pub fn new(ep: Endpoint) -> anyhow::Result<Api> {
        let http = Client::builder()
            .timeout(None)
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Api { ep, http })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.ep.url));
        match &self.ep.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn send(&self, rb: RequestBuilder, what: &str) -> anyhow::Result<Response> {
        let resp = self.reach(rb, what)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.refusal(resp, what))
    }

    /// Sends, turning "could not connect" into a sentence naming the URL tried.
    fn reach(&self, rb: RequestBuilder, what: &str) -> anyhow::Result<Response> {
        rb.send().map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                anyhow!(
                    "cannot reach the jobhost API at {} ({what}): is `jobhost run` running? Pass --url or set JOBHOST_URL if it listens elsewhere",
                    self.ep.url
                )
            } else {
                anyhow!("{what} at {}: {e}", self.ep.url)
            }
        })
    }

    /// The API's own sentence for an answer that is not a success.
    fn refusal(&self, resp: Response, what: &str) -> anyhow::Error {
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(text);
        if status == StatusCode::UNAUTHORIZED {
            return anyhow!(
                "{what}: the host refused our token ({msg}); the CLI reads LOGS/.jobhost-token (pass --logs) or JOBHOST_TOKEN"
            );
        }
        anyhow!("{what}: {msg}")
    }

    pub fn get_json(&self, path: &str, what: &str) -> anyhow::Result<Value> {
        let resp = self.send(self.req(reqwest::Method::GET, path), what)?;
        resp.json()
            .with_context(|| format!("{what}: the host sent something that is not JSON"))
    }

    /// `None` on 404: the caller tries elsewhere.
    fn try_get_json(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let what = "reading the job";
        let resp = self.reach(self.req(reqwest::Method::GET, path), what)?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(resp.json()?)),
            _ => Err(self.refusal(resp, what)),
        }
    }

    pub fn post(&self, path: &str, what: &str) -> anyhow::Result<Response> {
        self.send(self.req(reqwest::Method::POST, path), what)
    }

    /// The job under either type; continuous first.
    pub fn find_job(&self, name: &str) -> anyhow::Result<Value> {
        let n = enc(name.as_bytes());
        for kind in ["continuouswebjobs", "triggeredwebjobs"] {
            if let Some(v) = self.try_get_json(&format!("/api/{kind}/{n}"))? {
                return Ok(v);
            }
        }
        bail!(
            "no job named `{name}` on the host at {} (jobhost list shows the jobs)",
            self.ep.url
        )
    }

    /// Copies a (possibly endless) text stream to stdout as it arrives.
    pub fn stream_to_stdout(&self, path: &str, what: &str) -> anyhow::Result<()> {
        let mut resp = self.send(self.req(reqwest::Method::GET, path), what)?;
        let mut out = std::io::stdout().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow!("{what}: the stream broke: {e}")),
            };
            if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                // stdout closed (e.g. piped into `head`): a normal way to stop.
                break;
            }
        }
        Ok(())
    }
}

/// `println!` that treats a closed stdout (`jobhost list | head -1`) as the reader
/// having had enough, not as a crash.
macro_rules! outln {
    ($($arg:tt)*) => {{
        let mut out = std::io::stdout().lock();
        if writeln!(out, $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn colour(word: &str) -> String {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || std::env::var_os("NO_COLOR").is_some() {
        return word.to_string();
    }
    let code = match word {
        "Running" | "Success" => "32",
        "Error" | "Failed" | "Aborted" => "31",
        "PendingRestart" | "Starting" | "Stopping" | "InactiveInstance" => "33",
        _ => return word.to_string(),
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

fn print_table(rows: &[Vec<String>]) {
    let mut widths = vec![0; rows.first().map_or(0, Vec::len)];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(console_width(c));
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(console_width(c));
                format!("{}{}", colour(c), " ".repeat(pad))
            })
            .collect();
        outln!("{}", line.join("  ").trim_end());
    }
}

fn console_width(s: &str) -> usize {
    s.chars().count()
}

pub fn list(api: &Api, json: bool) -> anyhow::Result<i32> {
    let jobs = api.get_json("/api/webjobs", "listing jobs")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(0);
    }
    let mut rows = vec![vec![
        "NAME".into(),
        "TYPE".into(),
        "STATUS".into(),
        "SCHEDULE".into(),
        "NEXT".into(),
        "LAST RUN".into(),
        "RESTARTS".into(),
    ]];
    for j in jobs.as_array().into_iter().flatten() {
        let triggered = s(j, "type") == "triggered";
        let status = if triggered {
            if !s(j, "error").is_empty() {
                "Error".to_string()
            } else if j.get("running").is_some_and(|r| !r.is_null()) {
                "Running".to_string()
            } else if j.get("disabled").and_then(Value::as_bool) == Some(true) {
                "Disabled".to_string()
            } else {
                "Ready".to_string()
            }
        } else {
            s(j, "status").to_string()
        };
        let last = j
            .get("latest_run")
            .filter(|r| !r.is_null())
            .map(|r| format!("{} {}", s(r, "status"), s(r, "start_time")))
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            s(j, "name").to_string(),
            s(j, "type").to_string(),
            status,
            j.get("schedule")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_string(),
            j.get("next_fire")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_string(),
            if triggered { last } else { "-".into() },
            if triggered {
                "-".into()
            } else {
                j.get("restarts").map(|r| r.to_string()).unwrap_or_default()
            },
        ]);
    }
    print_table(&rows);
    Ok(0)
}

pub fn status(api: &Api, name: &str, json: bool) -> anyhow::Result<i32> {
    let job = api.find_job(name)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&job)?);
        return Ok(0);
    }
    let field = |k: &str| {
        job.get(k).filter(|v| !v.is_null()).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    outln!("{} ({})", s(&job, "name"), s(&job, "type"));
    let rows: &[(&str, &str)] = if s(&job, "type") == "continuous" {
        &[
            ("status", "status"),
            ("why", "detailed_status"),
            ("pid", "pid"),
            ("started at", "started_at"),
            ("restarts", "restarts"),
            ("last exit", "last_exit"),
            ("next restart", "next_restart_at"),
            ("disabled", "disabled"),
            ("error", "error"),
            ("command", "run_command"),
            ("settings", "settings"),
        ]
    } else {
        &[
            ("schedule", "schedule"),
            ("timezone", "timezone"),
            ("next fire", "next_fire"),
            ("running", "running"),
            ("queued", "pending"),
            ("disabled", "disabled"),
            ("error", "error"),
            ("command", "run_command"),
            ("settings", "settings"),
        ]
    };
    for (label, key) in rows {
        if let Some(v) = field(key) {
            let v = if *key == "status" { colour(&v) } else { v };
            outln!("  {label:<13} {v}");
        }
    }
    if let Some(r) = job.get("latest_run").filter(|r| !r.is_null()) {
        outln!(
            "  {:<13} {} {} {} exit {}",
            "latest run",
            s(r, "id"),
            colour(s(r, "status")),
            s(r, "start_time"),
            r.get("exit_code")
                .map(|c| c.to_string())
                .unwrap_or_default()
        );
    }
    for w in job
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        outln!("  {:<13} {}", "warning", w.as_str().unwrap_or_default());
    }
    Ok(0)
}

pub fn switch(api: &Api, name: &str, start: bool) -> anyhow::Result<i32> {
    let verb = if start { "start" } else { "stop" };
    let resp = api.post(
        &format!("/api/continuouswebjobs/{}/{verb}", enc(name.as_bytes())),
        &format!("{verb} {name}"),
    )?;
    let v: Value = resp.json().unwrap_or_default();
    outln!("{}", s(&v, "message"));
    Ok(0)
}

pub fn trigger(
    api: &Api,
    name: &str,
    args: &[std::ffi::OsString],
    wait: bool,
) -> anyhow::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let quoted = crate::argv::quote(args);
    let mut path = format!("/api/triggeredwebjobs/{}/run", enc(name.as_bytes()));
    if !args.is_empty() {
        path.push_str(&format!("?arguments={}", enc(quoted.as_bytes())));
    }
    let resp = api.post(&path, &format!("triggering {name}"))?;
    let v: Value = resp.json().context("reading the trigger answer")?;
    if v.get("schedule_disabled").and_then(Value::as_bool) == Some(true) {
        eprintln!("note: {name}'s schedule is disabled (disable.job); this manual run goes ahead");
    }
    let Some(id) = v.get("id").and_then(Value::as_str).map(str::to_string) else {
        outln!("queued behind run {}", s(&v, "queued_behind"));
        return Ok(0);
    };
    if !wait {
        outln!("{id}");
        return Ok(0);
    }
    let base = format!(
        "/api/triggeredwebjobs/{}/history/{id}",
        enc(name.as_bytes())
    );
    api.stream_to_stdout(
        &format!("{base}/output?follow=1"),
        "following the run's output",
    )?;
    let run = api.get_json(&base, "reading the run")?;
    let code = match (
        run.get("exit_code").and_then(Value::as_i64),
        run.get("signal").and_then(Value::as_i64),
    ) {
        (Some(c), _) => c as i32,
        (None, Some(sig)) => 128 + sig as i32,
        _ => 1,
    };
    if s(&run, "status") != "Success" {
        eprintln!(
            "run {id} {}{}",
            s(&run, "status"),
            run.get("error")
                .and_then(Value::as_str)
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    Ok(code)
}

pub fn logs(
    api: &Api,
    name: &str,
    run: Option<&str>,
    follow: bool,
    lines: Option<usize>,
) -> anyhow::Result<i32> {
    let job = api.find_job(name)?;
    let n = enc(name.as_bytes());
    let mut q = Vec::new();
    if follow {
        q.push("follow=1".to_string());
    }
    if let Some(l) = lines {
        q.push(format!("tail={l}"));
    }
    let qs = if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    };
    let path = if s(&job, "type") == "continuous" {
        if run.is_some() {
            bail!("{name} is a continuous job: it has one log, --run is for triggered jobs");
        }
        format!("/api/continuouswebjobs/{n}/log{qs}")
    } else {
        let id = match run {
            Some(id) => id.to_string(),
            None => job
                .get("latest_run")
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{name} has no runs yet: jobhost trigger {name}"))?,
        };
        format!(
            "/api/triggeredwebjobs/{n}/history/{}/output{qs}",
            enc(id.as_bytes())
        )
    };
    api.stream_to_stdout(&path, &format!("reading the log of {name}"))?;
    Ok(0)
}

pub fn history(api: &Api, name: &str, json: bool) -> anyhow::Result<i32> {
    let h = api.get_json(
        &format!("/api/triggeredwebjobs/{}/history", enc(name.as_bytes())),
        &format!("reading the history of {name}"),
    )?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&h)?);
        return Ok(0);
    }
    let mut rows = vec![vec![
        "ID".into(),
        "TRIGGER".into(),
        "STATUS".into(),
        "START".into(),
        "DURATION".into(),
        "EXIT".into(),
    ]];
    for r in h
        .get("runs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        rows.push(vec![
            s(r, "id").into(),
            s(r, "trigger").into(),
            s(r, "status").into(),
            s(r, "start_time").into(),
            r.get("duration_ms")
                .and_then(Value::as_u64)
                .map(|ms| format!("{:.3}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            match (
                r.get("exit_code").and_then(Value::as_i64),
                r.get("signal").and_then(Value::as_i64),
            ) {
                (Some(c), _) => c.to_string(),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => "-".into(),
            },
        ]);
    }
    print_table(&rows);
    Ok(0)
}

pub fn cancel(api: &Api, name: &str, run: Option<&str>) -> anyhow::Result<i32> {
    let n = enc(name.as_bytes());
    let id = match run {
        Some(id) => id.to_string(),
        None => {
            let job = api.get_json(
                &format!("/api/triggeredwebjobs/{n}"),
                &format!("reading {name}"),
            )?;
            job.get("running")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{name} has no run going"))?
        }
    };
    let resp = api.post(
        &format!(
            "/api/triggeredwebjobs/{n}/history/{}/cancel",
            enc(id.as_bytes())
        ),
        &format!("cancelling run {id} of {name}"),
    )?;
    let v: Value = resp.json().unwrap_or_default();
    outln!("{}", s(&v, "message"));
    Ok(0)
}
