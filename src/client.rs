//! The CLI's side of the HTTP API: `list`, `status`, `start`, `stop`, `trigger`,
//! `logs`, `history`, `cancel`. It turns the API's error sentence into the command's
//! error, and says what a user needs to fix a failure: the URL tried and where it came
//! from when the host cannot be reached; where the token came from (or where it was
//! looked for) when the host refuses us; the nearest job name, or the job's other
//! type, on a 404. `logs` falls back to reading LOGS itself (offline.rs).

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::dto::{self, Job};
use crate::spec::JobType;

/// How to point the CLI at a host, for every message that could not find one.
const HOW_TO_POINT: &str = "point the CLI at the host with --logs DIR (the logs folder the host was started with: it holds .jobhost-url and .jobhost-token), or set JOBHOST_URL and JOBHOST_TOKEN";

/// Where the URL the CLI talks to came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    Flag,
    Env,
    /// Written by the host into LOGS.
    UrlFile(PathBuf),
    /// Nothing said otherwise; this file was looked for.
    Default {
        looked: PathBuf,
    },
}

impl fmt::Display for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlSource::Flag => write!(f, "from --url"),
            UrlSource::Env => write!(f, "from JOBHOST_URL"),
            UrlSource::UrlFile(p) => write!(f, "read from {}", p.display()),
            UrlSource::Default { looked } => {
                write!(f, "the default: there is no {}", looked.display())
            }
        }
    }
}

/// Where the token the CLI sends came from, or where it was looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env,
    File(PathBuf),
    Missing { looked: PathBuf },
    Unreadable { path: PathBuf, why: String },
}

/// Where the host is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub url_from: UrlSource,
    pub token: Option<String>,
    pub token_from: TokenSource,
    /// LOGS as given (`--logs`, `JOBHOST_LOGS` or `logs`): log files can be read
    /// from there when the host is not running.
    pub logs: PathBuf,
    pub instance: Option<String>,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Endpoint {
    /// `--url`/`JOBHOST_URL`, else the address the host on this machine wrote into
    /// LOGS, else the default; the token from `JOBHOST_TOKEN` or LOGS/.jobhost-token.
    pub fn resolve(url: Option<String>, logs: &Path, instance: Option<&str>) -> Endpoint {
        let url_file = crate::layout::url_file(logs, instance);
        let (url, url_from) = match url {
            Some(u) => {
                // clap fills the flag from the variable: tell the two apart for messages.
                let from = if std::env::var("JOBHOST_URL").ok().as_deref() == Some(u.as_str()) {
                    UrlSource::Env
                } else {
                    UrlSource::Flag
                };
                (u, from)
            }
            None => match std::fs::read_to_string(&url_file)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
            {
                Some(u) => (u, UrlSource::UrlFile(absolute(&url_file))),
                None => (
                    "http://127.0.0.1:7070".to_string(),
                    UrlSource::Default {
                        looked: absolute(&url_file),
                    },
                ),
            },
        };
        let (token, token_from) = match std::env::var("JOBHOST_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
        {
            Some(t) => (Some(t.trim().to_string()), TokenSource::Env),
            None => {
                let path = absolute(&logs.join(crate::layout::TOKEN_FILE));
                match std::fs::read_to_string(&path) {
                    Ok(t) if !t.trim().is_empty() => {
                        (Some(t.trim().to_string()), TokenSource::File(path))
                    }
                    Ok(_) => (
                        None,
                        TokenSource::Unreadable {
                            path,
                            why: "the file is empty".into(),
                        },
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        (None, TokenSource::Missing { looked: path })
                    }
                    Err(e) => (
                        None,
                        TokenSource::Unreadable {
                            path,
                            why: e.to_string(),
                        },
                    ),
                }
            }
        };
        Endpoint {
            url: url.trim_end_matches('/').to_string(),
            url_from,
            token,
            token_from,
            logs: logs.to_path_buf(),
            instance: instance.map(str::to_string),
        }
    }

    /// Whether the URL was a guess from LOGS (not named by the user), so a host that
    /// does not answer means "not running" rather than "wrong address".
    pub fn url_guessed(&self) -> bool {
        matches!(
            self.url_from,
            UrlSource::UrlFile(_) | UrlSource::Default { .. }
        )
    }

    /// Why the host refused us (401), by where the token came from.
    fn explain_refusal(&self, what: &str, msg: &str) -> String {
        let url = &self.url;
        match &self.token_from {
            TokenSource::Env => format!(
                "{what}: the host at {url} refused the token from JOBHOST_TOKEN ({msg}): set JOBHOST_TOKEN to that host's token, or unset it to use the token file in the host's logs folder"
            ),
            TokenSource::File(p) => format!(
                "{what}: the host at {url} refused the token read from {} ({msg}): that file belongs to another host; pass --logs DIR with this host's logs folder, or set JOBHOST_TOKEN",
                p.display()
            ),
            TokenSource::Missing { looked } => format!(
                "{what}: the host at {url} ({}) asks for a token and the CLI found none: JOBHOST_TOKEN is not set and there is no {}; {HOW_TO_POINT}",
                self.url_from,
                looked.display()
            ),
            TokenSource::Unreadable { path, why } => format!(
                "{what}: the host at {url} asks for a token and the CLI could not read {}: {why}; fix the file, or set JOBHOST_TOKEN",
                path.display()
            ),
        }
    }
}

/// The host did not answer at all (nothing listens, or the connection timed out).
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the jobhost API at {url} ({url_from}) while {what}: {hint}")]
pub struct Unreachable {
    pub url: String,
    pub url_from: UrlSource,
    pub what: String,
    hint: String,
}

impl Unreachable {
    fn new(ep: &Endpoint, what: &str) -> Unreachable {
        let hint = match &ep.url_from {
            UrlSource::Flag | UrlSource::Env => {
                "is `jobhost run` running there? Check --url / JOBHOST_URL".to_string()
            }
            UrlSource::UrlFile(_) => {
                "the host that wrote that file is not running (start it with `jobhost run`), or pass --url / set JOBHOST_URL if it listens elsewhere".to_string()
            }
            UrlSource::Default { .. } => format!("is `jobhost run` running? If so, {HOW_TO_POINT}"),
        };
        Unreachable {
            url: ep.url.clone(),
            url_from: ep.url_from.clone(),
            what: what.to_string(),
            hint,
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

/// What a command that names a job wants it to be, for the message on a 404.
#[derive(Debug, Clone, Copy)]
struct Named<'a> {
    name: &'a str,
    want: Option<JobType>,
    command: &'a str,
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

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
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

    /// Like `send`, but a 404 is explained for the job the command named: the nearest
    /// name, or that it is a job of the other type.
    fn send_for(&self, rb: RequestBuilder, what: &str, job: Named) -> anyhow::Result<Response> {
        let resp = self.reach(rb, what)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        if resp.status() == StatusCode::NOT_FOUND
            && let Some(msg) = self.unknown_job(job)
        {
            return Err(anyhow!(msg));
        }
        Err(self.refusal(resp, what))
    }

    /// The sentence for a job that is not there, or `None` if it is (the 404 was
    /// about something else, such as a run id).
    fn unknown_job(&self, job: Named) -> Option<String> {
        let list = self
            .get_json("/api/webjobs", "listing jobs")
            .and_then(|v| typed::<Vec<Job>>(&v, "listing jobs"));
        let jobs: Vec<(String, JobType)> = match list {
            Ok(list) => list
                .iter()
                .map(|j| (j.common().name.clone(), j.common().job_type))
                .collect(),
            // Without the list, no suggestion; the host's own answer still stands.
            Err(_) => return None,
        };
        crate::suggest::explain_unknown(job.name, job.want, job.command, &jobs)
    }

    /// Sends, turning "could not connect" into a sentence naming the URL tried and
    /// where it came from (an `Unreachable` inside the error, for callers to test).
    fn reach(&self, rb: RequestBuilder, what: &str) -> anyhow::Result<Response> {
        rb.send().map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                anyhow::Error::new(Unreachable::new(&self.ep, what))
            } else {
                anyhow!("{what} at {} ({}): {e}", self.ep.url, self.ep.url_from)
            }
        })
    }

    /// The API's own sentence for an answer that is not a success.
    fn refusal(&self, resp: Response, what: &str) -> anyhow::Error {
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let msg = serde_json::from_str::<dto::Message>(&text)
            .map(|m| m.message)
            .unwrap_or(text);
        if status == StatusCode::UNAUTHORIZED {
            return anyhow!(self.ep.explain_refusal(what, &msg));
        }
        anyhow!("{what}: {msg}")
    }

    pub fn get_json(&self, path: &str, what: &str) -> anyhow::Result<Value> {
        let resp = self.send(self.req(reqwest::Method::GET, path), what)?;
        resp.json()
            .with_context(|| format!("{what}: the host sent something that is not JSON"))
    }

    fn get_json_for(&self, path: &str, what: &str, job: Named) -> anyhow::Result<Value> {
        let resp = self.send_for(self.req(reqwest::Method::GET, path), what, job)?;
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

    fn post_for(&self, path: &str, what: &str, job: Named) -> anyhow::Result<Response> {
        self.send_for(self.req(reqwest::Method::POST, path), what, job)
    }

    /// The job under either type; continuous first. The answer as sent (for
    /// `--json`) and as read.
    pub fn find_job(&self, name: &str, command: &str) -> anyhow::Result<(Value, Job)> {
        let n = enc(name.as_bytes());
        for kind in ["continuouswebjobs", "triggeredwebjobs"] {
            if let Some(v) = self.try_get_json(&format!("/api/{kind}/{n}"))? {
                let job = typed(&v, "reading the job")?;
                return Ok((v, job));
            }
        }
        let job = Named {
            name,
            want: None,
            command,
        };
        match self.unknown_job(job) {
            Some(msg) => bail!(msg),
            None => bail!(
                "no job named {name} on the host at {} (jobhost list shows the jobs)",
                self.ep.url
            ),
        }
    }

    /// Copies a (possibly endless) text stream to stdout as it arrives.
    pub fn stream_to_stdout(&self, path: &str, what: &str) -> anyhow::Result<()> {
        let mut resp = self.send(self.req(reqwest::Method::GET, path), what)?;
        copy_to_stdout(&mut resp).map_err(|e| anyhow!("{what}: the stream broke: {e}"))
    }
}

/// Copies `from` to stdout until its end, each piece as soon as it is read (a followed
/// log shows lines as they come). A closed stdout (piped into `head`) is the reader
/// having had enough, not an error; the error returned is always `from`'s.
pub fn copy_to_stdout(from: &mut impl Read) -> std::io::Result<()> {
    copy_live(from, &mut std::io::stdout().lock())
}

/// As [`copy_to_stdout`], to stderr (a message's run logs, while stdout is kept for
/// its result).
fn copy_to_stderr(from: &mut impl Read) -> std::io::Result<()> {
    copy_live(from, &mut std::io::stderr().lock())
}

fn copy_live(from: &mut impl Read, out: &mut impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
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

/// The API's answer read into its `dto` struct: the host and the CLI share them, so
/// this fails only against a host of another version.
fn typed<T: DeserializeOwned>(v: &Value, what: &str) -> anyhow::Result<T> {
    T::deserialize(v).map_err(|e| {
        anyhow!("{what}: the host's answer is not what this CLI reads ({e}); is the CLI the same version as the host?")
    })
}

/// A sentence answer (`{"message": ...}`); an answer without one prints nothing.
fn message(resp: Response) -> String {
    resp.json::<dto::Message>()
        .map(|m| m.message)
        .unwrap_or_default()
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
    let jobs: Vec<Job> = typed(&jobs, "listing jobs")?;
    if jobs.is_empty() {
        outln!(
            "no jobs on the host at {} (a job is a folder: JOBS/continuous/NAME/ or JOBS/triggered/NAME/)",
            api.ep.url
        );
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
    for j in &jobs {
        let (schedule, next, last, restarts) = match j {
            Job::Continuous(c) => (None, None, "-".into(), c.restarts.to_string()),
            Job::Triggered(t) => (
                t.schedule.as_deref(),
                t.next_fire.as_deref(),
                t.latest_run
                    .as_ref()
                    .map(|r| format!("{} {}", r.status, r.start_time))
                    .unwrap_or_else(|| "-".into()),
                "-".into(),
            ),
        };
        rows.push(vec![
            j.common().name.clone(),
            j.common().job_type.to_string(),
            j.status().to_string(),
            schedule.unwrap_or("-").to_string(),
            next.unwrap_or("-").to_string(),
            last,
            restarts,
        ]);
    }
    print_table(&rows);
    Ok(0)
}

/// `jobhost hosts`: the hosts of the cluster as a table (or the host's JSON).
pub fn hosts(api: &Api, json: bool) -> anyhow::Result<i32> {
    let v = api.get_json("/api/hosts", "listing the hosts")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let hosts: crate::api::dto::Hosts = typed(&v, "listing the hosts")?;
    if hosts.store.is_none() {
        outln!(
            "the host at {} is not in a cluster (start hosts with --store postgres://USER@HOST/DB to make one); it is:",
            api.ep.url
        );
    }
    let mut rows = vec![vec![
        "NAME".into(),
        "ALIVE".into(),
        "API".into(),
        "VERSION".into(),
        "LAST HEARTBEAT".into(),
    ]];
    for h in &hosts.hosts {
        let me = if h.name == hosts.me {
            " (this host)"
        } else {
            ""
        };
        rows.push(vec![
            format!("{}{me}", h.name),
            if h.alive { "yes" } else { "no" }.into(),
            h.api_addr.clone(),
            h.version.clone(),
            h.heartbeat_at.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    print_table(&rows);
    Ok(0)
}

/// A field of a job or run object as a person reads it; `None` when absent or null.
fn human(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(true) => Some("yes".into()),
        Value::Bool(false) => Some("no".into()),
        Value::Object(m) if m.is_empty() => Some("(none)".into()),
        Value::Object(m) => Some(
            m.iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Value::Array(a) => Some(
            a.iter()
                .map(|x| human(x).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        other => Some(other.to_string()),
    }
}

/// An exit as words: `code 3`, `signal 9`, with the time when known.
fn exit_words(code: Option<i32>, signal: Option<i32>, at: Option<&str>) -> Option<String> {
    let what = match (code, signal) {
        (Some(c), _) => format!("code {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => return None,
    };
    Some(match at {
        Some(t) if !t.is_empty() => format!("{what} at {t}"),
        _ => what,
    })
}

pub fn status(api: &Api, name: &str, json: bool) -> anyhow::Result<i32> {
    let (raw, job) = api.find_job(name, "status")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&raw)?);
        return Ok(0);
    }
    let common = job.common();
    outln!("{} ({} job)", common.name, common.job_type);
    let row = |label: &str, value: String| outln!("  {label:<13} {value}");
    let opt = |label: &str, value: Option<&String>| {
        if let Some(v) = value {
            row(label, v.clone());
        }
    };
    match &job {
        Job::Continuous(c) => {
            row("status", colour(&c.status));
            row("why", c.detailed_status.clone());
            opt("pid", c.pid.map(|p| p.to_string()).as_ref());
            opt("started at", c.started_at.as_ref());
            row("restarts", c.restarts.to_string());
            if let Some(e) = &c.last_exit {
                let at = crate::fsutil::rfc3339_string(e.at);
                if let Some(w) = exit_words(e.code, e.signal, Some(&at)) {
                    row("last exit", w);
                }
            }
            opt("next restart", c.next_restart_at.as_ref());
            if c.disabled {
                row(
                    "disabled",
                    format!("yes: disable.job exists (jobhost start {name} removes it)"),
                );
            }
        }
        Job::Triggered(t) => {
            opt("schedule", t.schedule.as_ref());
            opt("timezone", t.timezone.as_ref());
            opt("next fire", t.next_fire.as_ref());
            opt("running run", t.running.as_ref());
            if t.pending {
                row("queued", "a run waits for the one going".into());
            }
            if t.disabled {
                row(
                    "disabled",
                    "yes: disable.job exists, the schedule does not fire (manual runs still go)"
                        .into(),
                );
            }
        }
    }
    opt("error", common.error.as_ref());
    row("command", common.run_command.clone());
    if let Some(v) = human(&common.settings) {
        row("settings", v);
    }
    let latest = match &job {
        Job::Triggered(t) => t.latest_run.as_ref(),
        Job::Continuous(_) => None,
    };
    if let Some(r) = latest {
        let mut line = format!("{} {} started {}", r.id, colour(&r.status), r.start_time);
        if let Some(w) = exit_words(r.exit_code, r.signal, None) {
            line.push_str(&format!(", exit {w}"));
        }
        if let Some(e) = &r.error {
            line.push_str(&format!(": {e}"));
        }
        row("latest run", line);
    }
    let warnings = match &job {
        Job::Continuous(c) => &c.warnings,
        Job::Triggered(t) => &t.warnings,
    };
    for w in warnings {
        row("warning", w.clone());
    }
    Ok(0)
}

pub fn switch(api: &Api, name: &str, start: bool) -> anyhow::Result<i32> {
    let verb = if start { "start" } else { "stop" };
    let resp = api.post_for(
        &format!("/api/continuouswebjobs/{}/{verb}", enc(name.as_bytes())),
        &format!("{verb} {name}"),
        Named {
            name,
            want: Some(JobType::Continuous),
            command: verb,
        },
    )?;
    outln!("{}", message(resp));
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
    let resp = api.post_for(
        &path,
        &format!("triggering {name}"),
        Named {
            name,
            want: Some(JobType::Triggered),
            command: "trigger",
        },
    )?;
    let v: Value = resp.json().context("reading the trigger answer")?;
    let accepted: dto::Accepted = typed(&v, "reading the trigger answer")?;
    if accepted.schedule_disabled {
        eprintln!("note: {name}'s schedule is disabled (disable.job); this manual run goes ahead");
    }
    let Some(id) = accepted.id else {
        outln!(
            "queued behind run {}",
            accepted.queued_behind.unwrap_or_default()
        );
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
    let run: dto::Run = typed(&api.get_json(&base, "reading the run")?, "reading the run")?;
    let code = match (run.exit_code, run.signal) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    };
    if run.status != "Success" {
        eprintln!(
            "run {id} {}{}",
            run.status,
            run.error.map(|e| format!(": {e}")).unwrap_or_default()
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
    let job = match api.find_job(name, "logs") {
        Ok((_, job)) => job,
        // No host answers where LOGS says it runs: the files are there to read.
        Err(e) if e.downcast_ref::<Unreachable>().is_some() && api.ep.url_guessed() => {
            return crate::offline::logs(api.endpoint(), name, run, follow, lines, &e);
        }
        Err(e) => return Err(e),
    };
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
    let path = if let Job::Triggered(t) = &job {
        let id = match run {
            Some(id) => id.to_string(),
            None => t
                .latest_run
                .as_ref()
                .map(|r| r.id.clone())
                .ok_or_else(|| anyhow!("{name} has no runs yet: jobhost trigger {name}"))?,
        };
        format!(
            "/api/triggeredwebjobs/{n}/history/{}/output{qs}",
            enc(id.as_bytes())
        )
    } else {
        if run.is_some() {
            bail!("{name} is a continuous job: it has one log, --run is for triggered jobs");
        }
        format!("/api/continuouswebjobs/{n}/log{qs}")
    };
    api.stream_to_stdout(&path, &format!("reading the log of {name}"))?;
    Ok(0)
}

pub fn history(api: &Api, name: &str, json: bool) -> anyhow::Result<i32> {
    let h = api.get_json_for(
        &format!("/api/triggeredwebjobs/{}/history", enc(name.as_bytes())),
        &format!("reading the history of {name}"),
        Named {
            name,
            want: Some(JobType::Triggered),
            command: "history",
        },
    )?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&h)?);
        return Ok(0);
    }
    let runs = typed::<dto::History>(&h, &format!("reading the history of {name}"))?.runs;
    if runs.is_empty() {
        outln!("{name} has no runs yet (jobhost trigger {name} starts one)");
        return Ok(0);
    }
    // In a cluster, which host ran each (its output is on that host's disk).
    let hosts = runs.iter().any(|r| r.host.is_some());
    let mut rows = vec![vec![
        "ID".into(),
        "TRIGGER".into(),
        "STATUS".into(),
        "START".into(),
        "DURATION".into(),
        "EXIT".into(),
    ]];
    if hosts {
        rows[0].insert(1, "HOST".into());
    }
    for r in runs {
        let mut row = vec![
            r.id,
            r.trigger,
            r.status,
            r.start_time,
            r.duration_ms
                .map(|ms| format!("{:.3}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            match (r.exit_code, r.signal) {
                (Some(c), _) => c.to_string(),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => "-".into(),
            },
        ];
        if hosts {
            row.insert(1, r.host.unwrap_or_else(|| "-".into()));
        }
        rows.push(row);
    }
    print_table(&rows);
    Ok(0)
}

pub fn cancel(api: &Api, name: &str, run: Option<&str>) -> anyhow::Result<i32> {
    let n = enc(name.as_bytes());
    let job = Named {
        name,
        want: Some(JobType::Triggered),
        command: "cancel",
    };
    let id = match run {
        Some(id) => id.to_string(),
        None => {
            let what = format!("reading {name}");
            let v = api.get_json_for(&format!("/api/triggeredwebjobs/{n}"), &what, job)?;
            typed::<dto::TriggeredJob>(&v, &what)?
                .running
                .ok_or_else(|| anyhow!("{name} has no run going"))?
        }
    };
    let resp = api.post_for(
        &format!(
            "/api/triggeredwebjobs/{n}/history/{}/cancel",
            enc(id.as_bytes())
        ),
        &format!("cancelling run {id} of {name}"),
        job,
    )?;
    outln!("{}", message(resp));
    Ok(0)
}

// ----- message queues (docs/cli.md#enqueue) ----------------------------------------

/// Where `enqueue` takes the payload from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadSource {
    /// The text given on the command line.
    Text(String),
    /// `@FILE`.
    File(PathBuf),
    /// `-` or nothing.
    Stdin,
}

impl PayloadSource {
    /// `PAYLOAD` as typed: `@FILE` reads a file, `-` (or nothing) reads stdin, anything
    /// else is the payload itself.
    pub fn parse(arg: Option<&str>) -> PayloadSource {
        match arg {
            None | Some("-") => PayloadSource::Stdin,
            Some(s) => match s.strip_prefix('@') {
                Some(f) => PayloadSource::File(PathBuf::from(f)),
                None => PayloadSource::Text(s.to_string()),
            },
        }
    }

    fn read(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            PayloadSource::Text(t) => Ok(t.clone().into_bytes()),
            PayloadSource::File(p) => std::fs::read(p).with_context(|| {
                format!(
                    "reading the payload file {} (PAYLOAD @FILE names a file; write the text itself without @)",
                    p.display()
                )
            }),
            PayloadSource::Stdin => {
                use std::io::IsTerminal;
                if std::io::stdin().is_terminal() {
                    eprintln!("reading the payload from stdin (end it with Ctrl-D)...");
                }
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading the payload from stdin")?;
                Ok(buf)
            }
        }
    }
}

/// What `jobhost enqueue` sends beside the payload.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    pub key: Option<String>,
    pub priority: Option<i64>,
    pub delay: Option<f64>,
    pub not_before: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub name: Option<String>,
    pub content_type: Option<String>,
}

impl EnqueueOptions {
    fn query(&self) -> String {
        let mut q = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.push(format!("{k}={}", enc(v.as_bytes())));
            }
        };
        add("priority", self.priority.map(|p| p.to_string()));
        add("delay", self.delay.map(|d| d.to_string()));
        add("not_before", self.not_before.clone());
        add("correlation_id", self.correlation_id.clone());
        add("reply_to", self.reply_to.clone());
        add("name", self.name.clone());
        match q.is_empty() {
            true => String::new(),
            false => format!("?{}", q.join("&")),
        }
    }
}

fn queue_job<'a>(name: &'a str, command: &'a str) -> Named<'a> {
    Named {
        name,
        want: Some(JobType::Triggered),
        command,
    }
}

fn messages_path(name: &str) -> String {
    format!("/api/triggeredwebjobs/{}/messages", enc(name.as_bytes()))
}

pub fn enqueue(
    api: &Api,
    name: &str,
    payload: &PayloadSource,
    opts: &EnqueueOptions,
    wait: bool,
) -> anyhow::Result<i32> {
    let body = payload.read()?;
    let mut rb = api
        .req(
            reqwest::Method::POST,
            &format!("{}{}", messages_path(name), opts.query()),
        )
        .body(body);
    if let Some(k) = &opts.key {
        rb = rb.header("Idempotency-Key", k);
    }
    if let Some(t) = &opts.content_type {
        rb = rb.header(reqwest::header::CONTENT_TYPE, t);
    }
    let what = format!("enqueueing a message for {name}");
    let resp = api.send_for(rb, &what, queue_job(name, "enqueue"))?;
    let v: Value = resp
        .json()
        .with_context(|| format!("{what}: the host sent something that is not JSON"))?;
    let answer: dto::EnqueueAnswer = typed(&v, &what)?;
    if answer.duplicate {
        eprintln!(
            "duplicate: a message with this key was already enqueued for {name} as {} ({}); nothing new was stored",
            answer.id,
            answer.state.as_str()
        );
    }
    if !wait {
        outln!("{}", answer.id);
        return Ok(0);
    }
    eprintln!("message {} enqueued; waiting for it", answer.id);
    wait_message(api, name, &answer.id)
}

/// `enqueue --wait`: the message's run logs to stderr as they come, its result to
/// stdout; 0 when it succeeded, 1 when it went dead or was cancelled.
fn wait_message(api: &Api, name: &str, id: &str) -> anyhow::Result<i32> {
    let n = enc(name.as_bytes());
    let path = format!("{}/{}", messages_path(name), enc(id.as_bytes()));
    let what = format!("waiting for message {id} of {name}");
    let mut streamed: Vec<String> = Vec::new();
    // Short holds: a new run must be seen soon to stream its log from the start.
    let mut hold = 0;
    loop {
        let v = api.get_json_for(
            &format!("{path}?wait={hold}"),
            &what,
            queue_job(name, "enqueue"),
        )?;
        let m: dto::QueueMessage = typed(&v, &what)?;
        for run in &m.runs {
            if streamed.contains(run) {
                continue;
            }
            let out = format!(
                "/api/triggeredwebjobs/{n}/history/{}/output?follow=1",
                enc(run.as_bytes())
            );
            let resp = api.reach(
                api.req(reqwest::Method::GET, &out),
                "following the message's run",
            )?;
            // Its record may not be written yet: try again on the next round.
            if resp.status() == StatusCode::NOT_FOUND {
                continue;
            }
            if !resp.status().is_success() {
                return Err(api.refusal(resp, "following the message's run"));
            }
            let mut resp = resp;
            copy_to_stderr(&mut resp)
                .map_err(|e| anyhow!("following run {run}: the stream broke: {e}"))?;
            streamed.push(run.clone());
        }
        if m.state.finished() && m.runs.iter().all(|r| streamed.contains(r)) {
            return Ok(finish_wait(&m));
        }
        hold = 2;
    }
}

fn finish_wait(m: &dto::QueueMessage) -> i32 {
    use base64::Engine;
    let result = match (&m.result, &m.result_base64) {
        (Some(t), _) => Some(t.clone().into_bytes()),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
        _ => None,
    };
    if let Some(r) = result {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&r).and_then(|_| out.flush());
    }
    match m.state {
        crate::queue::MessageState::Succeeded => 0,
        state => {
            eprintln!(
                "message {} is {} after {} attempt(s){}",
                m.id,
                state.as_str(),
                m.attempts,
                m.last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            1
        }
    }
}

/// One cell of a table: at most `max` characters, on one line.
fn cell(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.chars().count() > max {
        true => format!(
            "{}...",
            one_line
                .chars()
                .take(max.saturating_sub(3))
                .collect::<String>()
        ),
        false => one_line,
    }
}

pub fn messages(
    api: &Api,
    name: &str,
    state: Option<crate::queue::MessageState>,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<i32> {
    let mut q = Vec::new();
    if let Some(s) = state {
        q.push(format!("state={}", s.as_str()));
    }
    if let Some(l) = limit {
        q.push(format!("limit={l}"));
    }
    let path = match q.is_empty() {
        true => messages_path(name),
        false => format!("{}?{}", messages_path(name), q.join("&")),
    };
    let what = format!("listing the messages of {name}");
    let v = api.get_json_for(&path, &what, queue_job(name, "messages"))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let list: dto::MessageList = typed(&v, &what)?;
    if list.messages.is_empty() {
        let which = state
            .map(|s| format!("{} ", s.as_str()))
            .unwrap_or_default();
        outln!("{name} has no {which}messages (jobhost enqueue {name} PAYLOAD adds one)");
        return Ok(0);
    }
    let mut rows = vec![
        [
            "ID",
            "STATE",
            "ATTEMPTS",
            "PRIO",
            "ENQUEUED",
            "NAME",
            "LAST ERROR",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for m in &list.messages {
        rows.push(vec![
            m.id.clone(),
            m.state.as_str().to_string(),
            m.attempts.to_string(),
            m.priority.to_string(),
            m.enqueued_at.clone(),
            cell(m.name.as_deref().unwrap_or("-"), 30),
            cell(m.last_error.as_deref().unwrap_or("-"), 60),
        ]);
    }
    print_table(&rows);
    if list.next_url.is_some() {
        eprintln!(
            "(the newest {}; -n N shows more, up to 1000)",
            list.messages.len()
        );
    }
    Ok(0)
}

pub fn show_message(api: &Api, name: &str, id: &str, json: bool) -> anyhow::Result<i32> {
    let what = format!("reading message {id} of {name}");
    let v = api.get_json_for(
        &format!("{}/{}", messages_path(name), enc(id.as_bytes())),
        &what,
        queue_job(name, "message"),
    )?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let m: dto::QueueMessage = typed(&v, &what)?;
    outln!("message {} of {}", m.id, m.job);
    let row = |label: &str, value: String| outln!("  {label:<16} {value}");
    let opt = |label: &str, value: &Option<String>| {
        if let Some(v) = value {
            row(label, v.clone());
        }
    };
    row("state", colour(m.state.as_str()));
    row("attempts", m.attempts.to_string());
    row("priority", m.priority.to_string());
    row("enqueued at", m.enqueued_at.clone());
    opt("not before", &m.not_before);
    opt("next attempt at", &m.next_attempt_at);
    opt("finished at", &m.finished_at);
    row(
        "payload",
        format!(
            "{} bytes{}",
            m.payload_bytes,
            m.content_type
                .as_ref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default()
        ),
    );
    opt("name", &m.name);
    opt("idempotency key", &m.idempotency_key);
    opt("correlation id", &m.correlation_id);
    opt("reply to", &m.reply_to);
    opt("last error", &m.last_error);
    if !m.runs.is_empty() {
        row("runs", m.runs.join(" "));
    }
    match (&m.result, m.result_bytes) {
        (Some(t), _) => row("result", cell(t, 200)),
        (None, Some(n)) => row(
            "result",
            format!("{n} bytes, not text (GET {} reads them)", m.result_url),
        ),
        _ => {}
    }
    Ok(0)
}

/// Which messages `requeue` and `purge` act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    One(String),
    State(crate::queue::MessageState),
}

pub fn requeue(api: &Api, name: &str, which: &Which) -> anyhow::Result<i32> {
    let job = queue_job(name, "requeue");
    match which {
        Which::One(id) => {
            let what = format!("requeueing message {id} of {name}");
            let resp = api.post_for(
                &format!("{}/{}/requeue", messages_path(name), enc(id.as_bytes())),
                &what,
                job,
            )?;
            let v: Value = resp.json().with_context(|| what.clone())?;
            let m: dto::QueueMessage = typed(&v, &what)?;
            outln!(
                "message {} of {name} requeued: {}, attempts reset",
                m.id,
                m.state.as_str()
            );
        }
        Which::State(s) => {
            let what = format!("requeueing the {} messages of {name}", s.as_str());
            let resp = api.post_for(
                &format!("{}/requeue?state={}", messages_path(name), s.as_str()),
                &what,
                job,
            )?;
            let v: Value = resp.json().with_context(|| what.clone())?;
            outln!("{}", typed::<dto::MessagesChanged>(&v, &what)?.message);
        }
    }
    Ok(0)
}

pub fn purge(api: &Api, name: &str, state: crate::queue::MessageState) -> anyhow::Result<i32> {
    let what = format!("deleting the {} messages of {name}", state.as_str());
    let resp = api.send_for(
        api.req(
            reqwest::Method::DELETE,
            &format!("{}?state={}", messages_path(name), state.as_str()),
        ),
        &what,
        queue_job(name, "purge"),
    )?;
    let v: Value = resp.json().with_context(|| what.clone())?;
    outln!("{}", typed::<dto::MessagesChanged>(&v, &what)?.message);
    Ok(0)
}
