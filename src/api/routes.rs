//! Routes: translation between HTTP and job tasks, nothing more.

use std::ffi::OsString;
use std::path::PathBuf;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::dto::{self, Base};
use super::follow::{self, Start, Until};
use super::upload;
use super::{ApiState, auth, guard};
use crate::job::triggered::records;
use crate::job::{JobCommand, JobView, TriggerError};
use crate::spec::JobType;
use crate::spec::name::is_valid;
use crate::supervisor::deploy::{self, Upload};
use crate::supervisor::{Installed, RegistryEntry, WriteError};
use futures_util::StreamExt;

/// Request bodies above this are refused (413).
pub const BODY_LIMIT: usize = 1024 * 1024;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard.js", get(dashboard_script))
        .route("/api/health", get(health))
        .route("/api/hosts", get(super::hosts::hosts))
        .route("/api/webjobs", get(all_jobs))
        .route("/api/events", super::events::route())
        .route("/api/continuouswebjobs", get(continuous_jobs))
        .route(
            "/api/continuouswebjobs/{name}",
            // A deploy streams its body to disk and counts it there (upload::receive).
            get(continuous_job)
                .put(deploy_continuous)
                .delete(delete_continuous),
        )
        .route("/api/continuouswebjobs/{name}/start", post(start))
        .route("/api/continuouswebjobs/{name}/stop", post(stop))
        .route("/api/continuouswebjobs/{name}/log", get(continuous_log))
        .route(
            "/api/continuouswebjobs/{name}/settings",
            get(continuous_settings).put(put_continuous_settings),
        )
        .route("/api/triggeredwebjobs", get(triggered_jobs))
        .route(
            "/api/triggeredwebjobs/{name}",
            // A deploy streams its body to disk and counts it there (upload::receive).
            get(triggered_job)
                .put(deploy_triggered)
                .delete(delete_triggered),
        )
        .route("/api/triggeredwebjobs/{name}/run", post(run))
        .route("/api/triggeredwebjobs/{name}/history", get(history))
        .route(
            "/api/triggeredwebjobs/{name}/history/{id}",
            get(history_run),
        )
        .route(
            "/api/triggeredwebjobs/{name}/history/{id}/cancel",
            post(cancel),
        )
        .route(
            "/api/triggeredwebjobs/{name}/history/{id}/output",
            get(run_output),
        )
        .route(
            "/api/triggeredwebjobs/{name}/schedulerlog",
            get(scheduler_log),
        )
        .route(
            "/api/triggeredwebjobs/{name}/settings",
            get(triggered_settings).put(put_triggered_settings),
        )
        .route("/metrics", get(metrics))
        .merge(super::messages::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // Outside the token check: a request for another host or from another site
        // is refused whoever sends it, and every answer carries the browser headers.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check_request,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// An error answer: status and a sentence.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(dto::Message { message: self.1 })).into_response()
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// This server's URL as the client addressed it. `guard::check_request` has checked
/// the Host header against the listen address (or set it to that address).
pub(super) fn base(headers: &HeaderMap) -> Base {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:7070");
    Base(format!("http://{host}"))
}

/// axum's own rejections (413, 405, 415, ...) come as plain text or empty; every
/// error of this API is `{"message": ...}`.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = match (status, text.is_empty()) {
        (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            format!("the request body is larger than this route takes ({text})")
        }
        (StatusCode::METHOD_NOT_ALLOWED, true) => "this path does not take that method".into(),
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
        (_, false) => text,
    };
    let mut out = (status, axum::Json(dto::Message { message })).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such path in the jobhost API".into(),
    )
}

/// The dashboard (docs/dashboard.md): a page and its script, open without the token
/// (they hold no data); the page asks for the token and sends it as Bearer.
async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_POLICY),
        ],
        include_str!("assets/dashboard.html"),
    )
}

/// What the dashboard may load: its script from this server (no inline script, so
/// markup slipped into a job's name or error could not run), its inline styles,
/// requests to this server only; and it may not be framed.
pub const DASHBOARD_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn dashboard_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("assets/dashboard.js"),
    )
}

async fn health(State(st): State<ApiState>) -> impl IntoResponse {
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": st.0.started.elapsed().as_secs(),
        "instance": st.0.layout.instance,
    }))
}

/// Looks a job up; names are checked against the job name rule before anything else, so
/// `..` or encoded slashes never reach the disk.
fn entry(st: &ApiState, job_type: JobType, name: &str) -> ApiResult<RegistryEntry> {
    if !is_valid(name) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("`{name}` is not a valid job name ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}})"),
        ));
    }
    st.0.registry.get(job_type, name).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no {job_type} job named `{name}`"),
        )
    })
}

fn entries(st: &ApiState) -> Vec<RegistryEntry> {
    st.0.registry.entries()
}

/// The answer to a failed write through the registry.
fn write_error(e: WriteError) -> ApiError {
    let status = match &e {
        WriteError::NoSuchJob { .. } => StatusCode::NOT_FOUND,
        WriteError::SettingsTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        WriteError::SettingsEmpty { .. } | WriteError::SettingsInvalid(_) => {
            StatusCode::BAD_REQUEST
        }
        WriteError::Deploy(d) => d.status(),
        WriteError::Io { .. } | WriteError::Save(_) | WriteError::Lost { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError(status, e.to_string())
}

/// A job object; `queues`: the `queue` field of queue jobs (`messages::summaries`).
fn job_json(
    base: &Base,
    e: &RegistryEntry,
    queues: &std::collections::BTreeMap<String, dto::QueueSummary>,
) -> serde_json::Value {
    let v = match &e.handle.view {
        JobView::Continuous(rx) => {
            serde_json::to_value(dto::continuous(base, &e.def, &rx.borrow()))
        }
        JobView::Triggered(rx) => {
            let mut job = dto::triggered(base, &e.def, &rx.borrow());
            job.queue = queues.get(&e.def.name).cloned();
            serde_json::to_value(job)
        }
    };
    v.unwrap_or_default()
}

/// The job objects of `jobs`, with their queues' counts.
async fn jobs_json(st: &ApiState, b: &Base, jobs: &[RegistryEntry]) -> Vec<serde_json::Value> {
    let queues = super::messages::summaries(st, jobs).await;
    jobs.iter().map(|e| job_json(b, e, &queues)).collect()
}

async fn one_job_json(st: &ApiState, b: &Base, e: &RegistryEntry) -> serde_json::Value {
    let queues = super::messages::summaries(st, std::slice::from_ref(e)).await;
    job_json(b, e, &queues)
}

async fn all_jobs(State(st): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    let b = base(&headers);
    axum::Json(jobs_json(&st, &b, &entries(&st)).await)
}

async fn of_type(
    st: &ApiState,
    headers: &HeaderMap,
    t: JobType,
) -> axum::Json<Vec<serde_json::Value>> {
    let b = base(headers);
    let jobs: Vec<RegistryEntry> = entries(st)
        .into_iter()
        .filter(|e| e.def.job_type == t)
        .collect();
    axum::Json(jobs_json(st, &b, &jobs).await)
}

async fn continuous_jobs(State(st): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    of_type(&st, &headers, JobType::Continuous).await
}

async fn triggered_jobs(State(st): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    of_type(&st, &headers, JobType::Triggered).await
}

async fn continuous_job(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let e = entry(&st, JobType::Continuous, &name)?;
    Ok(axum::Json(one_job_json(&st, &base(&headers), &e).await))
}

async fn triggered_job(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let e = entry(&st, JobType::Triggered, &name)?;
    Ok(axum::Json(one_job_json(&st, &base(&headers), &e).await))
}

fn settings_of(st: &ApiState, t: JobType, name: &str) -> ApiResult<axum::Json<serde_json::Value>> {
    let e = entry(st, t, name)?;
    Ok(axum::Json(e.def.settings_raw.clone()))
}

async fn continuous_settings(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    settings_of(&st, JobType::Continuous, &name)
}

async fn triggered_settings(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    settings_of(&st, JobType::Triggered, &name)
}

/// `start`/`stop` flip the `disable.job` switch, as a person touching the file would;
/// the registry shows the job stopping or starting when the answer goes out.
async fn switch(st: &ApiState, name: &str, disable: bool) -> ApiResult<Response> {
    check_name(name)?;
    let file =
        st.0.registry
            .set_disabled(JobType::Continuous, name, disable)
            .await
            .map_err(write_error)?;
    let warning = share(st, JobType::Continuous, name, false).await;
    let verb = if disable { "stop" } else { "start" };
    let body = json!({
        "message": format!("{name}: {verb} requested ({} {})", if disable { "created" } else { "removed" }, file.display()),
        "cluster_warning": warning,
    });
    Ok(warn_cluster(axum::Json(body).into_response(), warning))
}

async fn start(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    switch(&st, &name, false).await
}

async fn stop(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    switch(&st, &name, true).await
}

#[derive(Deserialize)]
struct ArgsBody {
    arguments: Vec<String>,
}

fn trigger_status(e: &TriggerError) -> StatusCode {
    // Everything else is the job's state refusing the request.
    match e {
        TriggerError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        TriggerError::Gone { .. } | TriggerError::StoreAway { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::CONFLICT,
    }
}

/// The `arguments` query value as bytes (percent-decoded, `+` as space), or the JSON
/// body's list taken as argv as it is.
fn arguments(query: Option<&str>, headers: &HeaderMap, body: &Bytes) -> ApiResult<Vec<OsString>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json && !body.is_empty() {
        let parsed: ArgsBody = serde_json::from_slice(body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"arguments\": [\"a\", \"b c\"]}}: {e}"),
            )
        })?;
        let args: Vec<OsString> = parsed.arguments.into_iter().map(OsString::from).collect();
        crate::argv::refuse_nul(&args)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("arguments: {e}")))?;
        return Ok(args);
    }
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "arguments" {
            let v = v.replace('+', " ");
            let bytes: Vec<u8> = percent_encoding::percent_decode_str(&v).collect();
            return crate::argv::split(&bytes)
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("arguments: {e}")));
        }
    }
    Ok(Vec::new())
}

async fn run(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let e = entry(&st, JobType::Triggered, &name)?;
    let args = arguments(query.as_deref(), &headers, &body)?;
    let (reply, rx) = oneshot::channel();
    e.handle
        .tx
        .send(JobCommand::Trigger { args, reply })
        .map_err(|_| gone(&name))?;
    let accepted = rx
        .await
        .map_err(|_| gone(&name))?
        .map_err(|err| ApiError(trigger_status(&err), err.to_string()))?;
    let b = base(&headers);
    // A queued run has no id until it starts: point at the history it will join.
    let location = match &accepted.run_id {
        Some(id) => format!("/api/triggeredwebjobs/{name}/history/{id}"),
        None => format!("/api/triggeredwebjobs/{name}/history"),
    };
    let mut resp = (
        StatusCode::ACCEPTED,
        axum::Json(dto::Accepted {
            id: accepted.run_id,
            queued_behind: accepted.queued_behind,
            schedule_disabled: accepted.schedule_disabled,
            url: b.url(&location),
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&b.url(&location)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

fn gone(name: &str) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{name} is being removed or the host is stopping"),
    )
}

fn job_logs(st: &ApiState, name: &str) -> PathBuf {
    st.0.layout.job_dir(JobType::Triggered, name)
}

async fn history(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    entry(&st, JobType::Triggered, &name)?;
    let b = base(&headers);
    let dir = job_logs(&st, &name);
    let mut runs: Vec<dto::Run> = from_logs(move || records::history(&dir))
        .await?
        .iter()
        .map(|r| dto::run(&b, r))
        .collect();
    if let Some(cluster) = &st.0.cluster {
        // The cluster's finished runs, and this host's runs still going (a run is in
        // the store once it ended).
        let me = cluster.me.name.clone();
        for r in &mut runs {
            r.host = Some(me.clone());
        }
        // Without the store, this host's own history is still worth showing.
        match cluster_runs(cluster, &name, None).await {
            Ok(all) => {
                runs.retain(|r| r.status == "Running");
                runs.extend(all);
            }
            Err(ApiError(_, why)) => {
                tracing::warn!(job = %name, "{why}: listing this host's runs only")
            }
        }
        runs.sort_by(|a, b| b.start_time.cmp(&a.start_time));
    }
    Ok(axum::Json(dto::History { runs }))
}

/// Runs of `job` from the cluster's history (of id `id` only, when given), each
/// with the URLs of the host that ran it.
async fn cluster_runs(
    cluster: &std::sync::Arc<crate::cluster::member::ClusterLink>,
    job: &str,
    id: Option<&str>,
) -> ApiResult<Vec<dto::Run>> {
    let (pool, job, id) = (
        cluster.pool.clone(),
        job.to_string(),
        id.map(str::to_string),
    );
    let read = tokio::task::spawn_blocking(move || {
        crate::cluster::runs::history(&pool, &job, id.as_deref(), 500)
    })
    .await;
    let found = match read {
        Ok(Ok(runs)) => runs,
        Ok(Err(e)) => return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(_) => {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the host is stopping".into(),
            ));
        }
    };
    Ok(found
        .into_iter()
        .map(|c| {
            let mut run = dto::run(&dto::Base(c.api_addr.clone()), &c.record);
            run.host = Some(c.host);
            run
        })
        .collect())
}

/// Reads LOGS on the blocking pool: a slow or network folder must not hold one of the
/// async workers that answer every other request.
async fn from_logs<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(read).await.map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the host is stopping".into(),
        )
    })
}

async fn find_run(st: &ApiState, name: &str, id: &str) -> ApiResult<records::RunRecord> {
    entry(st, JobType::Triggered, name)?;
    if !records::is_run_id(id) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a run id (18 digits)"),
        ));
    }
    let (dir, owned_id) = (job_logs(st, name), id.to_string());
    from_logs(move || records::read(&dir, &owned_id))
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("{name} has no run {id}")))
}

async fn history_run(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    match (find_run(&st, &name, &id).await, &st.0.cluster) {
        (Err(ApiError(StatusCode::NOT_FOUND, why)), Some(cluster)) => {
            // Another host's run, from the cluster's history.
            match cluster_runs(cluster, &name, Some(&id))
                .await?
                .into_iter()
                .next()
            {
                Some(run) => Ok(axum::Json(run)),
                None => Err(ApiError(StatusCode::NOT_FOUND, why)),
            }
        }
        (r, cluster) => {
            let mut run = dto::run(&base(&headers), &r?);
            run.host = cluster.as_ref().map(|c| c.me.name.clone());
            Ok(axum::Json(run))
        }
    }
}

async fn cancel(
    State(st): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    find_run(&st, &name, &id).await?;
    let e = entry(&st, JobType::Triggered, &name)?;
    let (reply, rx) = oneshot::channel();
    e.handle
        .tx
        .send(JobCommand::Cancel {
            run_id: Some(id),
            reply,
        })
        .map_err(|_| gone(&name))?;
    let id = rx
        .await
        .map_err(|_| gone(&name))?
        .map_err(|err| ApiError(trigger_status(&err), err.to_string()))?;
    Ok(axum::Json(
        json!({ "message": format!("run {id} of {name} was stopped: Aborted"), "id": id }),
    ))
}

#[derive(Deserialize, Default)]
pub struct LogQuery {
    offset: Option<u64>,
    tail: Option<usize>,
    /// `INODE:OFFSET` from an earlier stream (as `Last-Event-ID`).
    from: Option<String>,
    /// `sse` for server-sent events.
    format: Option<String>,
    #[serde(default)]
    follow: Option<String>,
}

impl LogQuery {
    fn follow(&self) -> bool {
        matches!(self.follow.as_deref(), Some("" | "1" | "true" | "yes"))
    }
}

/// A log response: plain text (bytes exact) or, for `Accept: text/event-stream` or
/// `format=sse`, server-sent events whose ids are resumable positions.
async fn text_stream(
    path: PathBuf,
    q: &LogQuery,
    headers: &HeaderMap,
    until: Until,
    st: &ApiState,
) -> ApiResult<Response> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.from.clone());
    let resume: Option<follow::Position> = resume
        .map(|pos| pos.parse())
        .transpose()
        .map_err(|e: String| ApiError(StatusCode::BAD_REQUEST, e))?;
    let (offset, tail, file) = (q.offset, q.tail, path.clone());
    let (start, first) = from_logs(move || {
        let start = match (resume, offset, tail) {
            (Some(pos), _, _) => Start::Resume(pos),
            (None, Some(o), _) => Start::Offset(o),
            (None, None, Some(n)) => Start::Offset(follow::tail_offset(&file, n)),
            (None, None, None) => Start::Offset(0),
        };
        (start, follow::start_position(&file, start))
    })
    .await?;
    let sse = q.format.as_deref() == Some("sse")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    let chunks = follow::stream(path, start, until, st.0.cancel.clone(), sse);
    let mut resp = if sse {
        follow::sse_response(chunks)
    } else {
        let mut resp = Response::new(Body::from_stream(
            chunks.map(|c| Ok::<_, std::convert::Infallible>(c.bytes)),
        ));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&first.to_string()) {
        h.insert("x-log-position", v);
    }
    if let Ok(v) = HeaderValue::from_str(&first.offset.to_string()) {
        h.insert("x-log-offset", v);
    }
    Ok(resp)
}

async fn continuous_log(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let e = entry(&st, JobType::Continuous, &name)?;
    let singleton = e.def.settings.as_ref().is_some_and(|s| s.is_singleton);
    let path = st.0.layout.job_log(&name, singleton);
    let until = if q.follow() {
        Until::Forever
    } else {
        Until::Now
    };
    text_stream(path, &q, &headers, until, &st).await
}

async fn run_output(
    State(st): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    find_run(&st, &name, &id).await?;
    let dir = job_logs(&st, &name);
    let path = st.0.layout.run_output(&name, &id);
    let until = if q.follow() {
        let (dir, id) = (dir.clone(), id.clone());
        Until::Done(std::sync::Arc::new(move || {
            records::read(&dir, &id).is_none_or(|r| r.status != records::RunState::Running)
        }))
    } else {
        Until::Now
    };
    text_stream(path, &q, &headers, until, &st).await
}

async fn scheduler_log(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    entry(&st, JobType::Triggered, &name)?;
    let path = st.0.layout.scheduler_log(&name);
    let until = if q.follow() {
        Until::Forever
    } else {
        Until::Now
    };
    text_stream(path, &q, &headers, until, &st).await
}

pub(super) fn check_name(name: &str) -> ApiResult<()> {
    if is_valid(name) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("`{name}` is not a valid job name ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}})"),
        ))
    }
}

/// `PUT .../NAME`: a zip (`Content-Type: application/zip`) or one file named by
/// `Content-Disposition`, streamed to disk and swapped in atomically. A single file
/// named `settings.job` updates the settings only, as `PUT .../NAME/settings` does.
async fn deploy_job(
    st: ApiState,
    t: JobType,
    name: String,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    check_name(&name)?;
    // A declared size past the limit is refused before a byte is read (a client that
    // sent `Expect: 100-continue` then sends nothing); the stream is counted anyway.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > deploy::MAX_UPLOAD as u64) {
        return Err(deploy_error(deploy::DeployError::UploadTooLarge {
            limit: deploy::MAX_UPLOAD as u64,
        }));
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let file_name = match headers.get(header::CONTENT_DISPOSITION) {
        Some(v) => upload::disposition_file_name(v.to_str().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "Content-Disposition is not ASCII: give the file name as filename*=UTF-8''NAME"
                    .into(),
            )
        })?)
        .map_err(deploy_error)?,
        None => None,
    };
    let is_zip = ctype.starts_with("application/zip") || ctype.starts_with("application/x-zip");
    if !is_zip && file_name.as_deref() == Some(crate::spec::settings::FILE_NAME) {
        return deploy_settings_file(st, t, name, body).await;
    }
    let upload = match file_name {
        _ if is_zip => Upload::Zip,
        Some(n) => Upload::File(n),
        None => Upload::Unnamed,
    };
    // The body streams into a staging folder beside the job here (that is HTTP); the
    // registry builds the job from it and swaps it in.
    let staging = st.0.registry.staging(t, &name).map_err(deploy_error)?;
    let size = upload::receive(&staging, body, deploy::MAX_UPLOAD as u64)
        .await
        .map_err(deploy_error)?;
    if size == 0 {
        return Err(deploy_error(deploy::DeployError::Empty));
    }
    let installed =
        st.0.registry
            .install(t, &name, staging, upload)
            .await
            .map_err(write_error)?;
    let b = base(&headers);
    let path = format!("/api/{}webjobs/{name}", t.as_str());
    let code = match installed {
        Installed::Replaced => StatusCode::OK,
        Installed::Created => StatusCode::CREATED,
    };
    // The job object, as Kudu answers a deploy; the job is already registered.
    let warning = share(&st, t, &name, false).await;
    let job = entry(&st, t, &name)?;
    let mut resp = (code, axum::Json(one_job_json(&st, &b, &job).await)).into_response();
    if let Ok(v) = HeaderValue::from_str(&b.url(&path)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(warn_cluster(resp, warning))
}

fn deploy_error(e: deploy::DeployError) -> ApiError {
    ApiError(e.status(), e.to_string())
}

/// The header that says a write was made on this host only: the cluster's copy of
/// the job failed (the reason and the fix are in it, and in the host log).
pub const CLUSTER_WARNING: &str = "x-jobhost-cluster-warning";

/// In a cluster, records the job as this host's API just left it (its folder, or its
/// removal) in the store, so every host gets it. The local write stands whatever
/// happens here: a failure is the warning to give (`None`: recorded, or no cluster).
async fn share(st: &ApiState, t: JobType, name: &str, removed: bool) -> Option<String> {
    let cluster = st.0.cluster.as_ref()?;
    let dir = (!removed).then(|| st.0.registry.folder(t, name));
    match cluster.deploys.record(t, name, dir).await {
        Ok(_) => None,
        Err(e) => {
            let warning = format!("{t} job {name}: {e}");
            tracing::error!(job = %name, "{warning}");
            Some(warning)
        }
    }
}

/// Adds the warning of [`share`] to an answer, as [`CLUSTER_WARNING`] and, for a
/// JSON object that is a message (not a job object), as `cluster_warning`.
fn warn_cluster(mut resp: Response, warning: Option<String>) -> Response {
    if let Some(w) = warning {
        // A header value is visible ASCII: anything else in a path becomes `?`.
        let ascii: String = w
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&ascii) {
            resp.headers_mut().insert(CLUSTER_WARNING, v);
        }
    }
    resp
}

/// A single file named `settings.job`: the job's settings, validated and saved as
/// `PUT .../NAME/settings` does; it never replaces the job.
async fn deploy_settings_file(
    st: ApiState,
    t: JobType,
    name: String,
    body: Body,
) -> ApiResult<Response> {
    // Asked before the body is read, so a missing job is a 404 whatever the body.
    if st.0.registry.get(t, &name).is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no {t} job named `{name}` to take this settings.job: deploy a script or zip first, then its settings"
            ),
        ));
    }
    let body = upload::collect_capped(
        body,
        crate::spec::settings::MAX_FILE_BYTES,
        "a settings.job",
    )
    .await
    .map_err(deploy_error)?;
    put_settings(st, t, name, body).await
}

async fn deploy_continuous(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    deploy_job(st, JobType::Continuous, name, headers, body).await
}

async fn deploy_triggered(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    deploy_job(st, JobType::Triggered, name, headers, body).await
}

async fn delete_job(st: ApiState, t: JobType, name: String) -> ApiResult<Response> {
    check_name(&name)?;
    st.0.registry.remove(t, &name).await.map_err(write_error)?;
    let warning = share(&st, t, &name, true).await;
    let body = json!({
        "message": format!("{t} job {name} deleted: it is stopped gracefully; its logs stay"),
        "cluster_warning": warning,
    });
    Ok(warn_cluster(axum::Json(body).into_response(), warning))
}

async fn delete_continuous(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    delete_job(st, JobType::Continuous, name).await
}

async fn delete_triggered(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    delete_job(st, JobType::Triggered, name).await
}

/// `PUT .../NAME/settings`: validated exactly as the host reads the file; a bad body
/// is a 400 naming every problem and the old file stays untouched.
async fn put_settings(st: ApiState, t: JobType, name: String, body: Bytes) -> ApiResult<Response> {
    check_name(&name)?;
    let (path, warnings) = match st.0.registry.write_settings(t, &name, body.clone()).await {
        Ok(saved) => saved,
        // A 400 like `ApiError`'s, plus the problems structured (docs/settings.md).
        Err(WriteError::SettingsInvalid(err)) => {
            let message = format!("settings not saved: {err}");
            let body = json!({ "message": message, "problems": err.problems });
            return Ok((StatusCode::BAD_REQUEST, axum::Json(body)).into_response());
        }
        Err(e) => return Err(write_error(e)),
    };
    let warning = share(&st, t, &name, false).await;
    let body = json!({
        "message": format!("{} saved", path.display()),
        "warnings": warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "settings": crate::spec::settings::raw_value(&body),
        "cluster_warning": warning,
    });
    Ok(warn_cluster(axum::Json(body).into_response(), warning))
}

async fn put_continuous_settings(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    put_settings(st, JobType::Continuous, name, body).await
}

async fn put_triggered_settings(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    put_settings(st, JobType::Triggered, name, body).await
}

async fn metrics(State(st): State<ApiState>) -> impl IntoResponse {
    use crate::metrics::{JobLabels, JobOnly, StatusLabels};
    let m = &st.0.metrics;
    m.begin_scrape();
    for e in entries(&st) {
        let job = e.def.name.clone();
        let kind = e.def.job_type.as_str().to_string();
        let status = match &e.handle.view {
            JobView::Continuous(rx) => {
                let s = rx.borrow();
                m.restarts
                    .get_or_create(&JobOnly { job: job.clone() })
                    .set(s.restarts as i64);
                let labels = JobLabels {
                    job: job.clone(),
                    kind: kind.clone(),
                };
                m.log_written
                    .get_or_create(&labels)
                    .set(s.log_written_bytes as i64);
                m.log_dropped_lines
                    .get_or_create(&labels)
                    .set(s.log_dropped_lines as i64);
                m.log_dropped_bytes
                    .get_or_create(&labels)
                    .set(s.log_dropped_bytes as i64);
                dto::status_word(&e.def, dto::Status::Continuous(&s)).to_string()
            }
            JobView::Triggered(rx) => {
                dto::status_word(&e.def, dto::Status::Triggered(&rx.borrow())).to_string()
            }
        };
        m.job_status
            .get_or_create(&StatusLabels { job, kind, status })
            .set(1);
    }
    let queue_jobs: Vec<String> = entries(&st)
        .iter()
        .filter(|e| e.def.settings.as_ref().is_some_and(|s| s.queue.is_some()))
        .map(|e| e.def.name.clone())
        .collect();
    if let (false, Ok(store)) = (queue_jobs.is_empty(), st.0.queues.store()) {
        let counted = tokio::task::spawn_blocking(move || {
            let now = chrono::Utc::now();
            queue_jobs
                .into_iter()
                .filter_map(|j| store.counts(&j, now).ok().map(|c| (j, c)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (job, c) in counted {
            m.queue_counts(&job, &c);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}
