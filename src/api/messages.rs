//! The message routes of a triggered job's queue (docs/api.md#messages): enqueue,
//! read, wait for, requeue, cancel and purge messages. Translation only: the
//! message store decides what a change means; these handlers check the request,
//! call the store on the blocking pool (a store call may wait for a disk flush) and
//! tell the job's task and the change stream what changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::ApiState;
use super::dto::{self, Base};
use super::routes::{ApiError, ApiResult, base, check_name};
use crate::queue::{Message, MessageState, NewMessage, QueueStore, StoreError};
use crate::spec::JobType;
use crate::spec::settings::queue::{QueueSettings, check_reply_to};

/// The longest `delay`: ten years, in seconds.
const MAX_DELAY_SECS: f64 = 10.0 * 365.25 * 86_400.0;
/// The longest `?wait` on a message; a client wanting longer asks again.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// While waiting, the store is read again this often even without a change from this
/// host: another host sharing the store may have finished the message.
const WAIT_RECHECK: Duration = Duration::from_secs(1);
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;
/// Longest idempotency key, correlation id and name.
const MAX_TEXT: usize = 1024;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/api/triggeredwebjobs/{name}/messages",
            get(list).post(enqueue).delete(purge),
        )
        .route(
            "/api/triggeredwebjobs/{name}/messages/requeue",
            post(requeue_all),
        )
        .route(
            "/api/triggeredwebjobs/{name}/messages/{id}",
            get(one).delete(cancel),
        )
        .route(
            "/api/triggeredwebjobs/{name}/messages/{id}/payload",
            get(payload),
        )
        .route(
            "/api/triggeredwebjobs/{name}/messages/{id}/result",
            get(result),
        )
        .route(
            "/api/triggeredwebjobs/{name}/messages/{id}/requeue",
            post(requeue),
        )
}

fn err(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

/// The queue settings of triggered job `name`, or why it has no queue to use.
fn queue_job(st: &ApiState, name: &str) -> ApiResult<QueueSettings> {
    check_name(name)?;
    let Some(e) = st.0.registry.get(JobType::Triggered, name) else {
        if st.0.registry.get(JobType::Continuous, name).is_some() {
            return Err(err(
                StatusCode::CONFLICT,
                format!(
                    "{name} is a continuous job: only triggered jobs have a message queue (add `\"queue\": {{}}` to the settings.job of a triggered job)"
                ),
            ));
        }
        let names: Vec<String> =
            st.0.registry
                .entries()
                .into_iter()
                .filter(|e| e.def.job_type == JobType::Triggered)
                .map(|e| e.def.name.clone())
                .collect();
        let hint = match crate::suggest::nearest(name, names.iter().map(String::as_str)) {
            Some(best) => format!("; did you mean `{best}`?"),
            None => " (GET /api/triggeredwebjobs lists them)".into(),
        };
        return Err(err(
            StatusCode::NOT_FOUND,
            format!("no triggered job named `{name}`{hint}"),
        ));
    };
    let file = e.def.dir.join(crate::spec::settings::FILE_NAME);
    match &e.def.settings {
        None => Err(err(
            StatusCode::CONFLICT,
            format!(
                "{name} cannot take messages: its settings.job has errors, so its queue is not open: {}; fix {} (`jobhost check` lists every problem)",
                e.def.errors.join("; "),
                file.display()
            ),
        )),
        Some(s) => match &s.queue {
            Some(q) => Ok(q.clone()),
            None => Err(err(
                StatusCode::CONFLICT,
                format!(
                    "{name} has no message queue: add `\"queue\": {{}}` to {} to give it one",
                    file.display()
                ),
            )),
        },
    }
}

/// The answer to a store error.
fn store_error(e: StoreError) -> ApiError {
    let status = match &e {
        StoreError::Unusable { .. } | StoreError::Unavailable { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
        StoreError::Conflict { .. } => StatusCode::CONFLICT,
    };
    err(status, e.to_string())
}

fn store(st: &ApiState) -> ApiResult<Arc<dyn QueueStore>> {
    // `why` names the store's file and the fix already.
    st.0.queues
        .store()
        .map_err(|why| err(StatusCode::SERVICE_UNAVAILABLE, why))
}

/// Runs `f` on the store, on the blocking pool.
async fn on_store<T, F>(st: &ApiState, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn QueueStore) -> Result<T, StoreError> + Send + 'static,
{
    let store = store(st)?;
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the message store call failed: {e}"),
            )
        })?
        .map_err(store_error)
}

/// Query parameters by name; an unknown one is refused with the nearest known one, so
/// a typo (`priorty=9`) is not silently ignored.
fn params(
    q: BTreeMap<String, String>,
    known: &[&str],
    route: &str,
) -> ApiResult<BTreeMap<String, String>> {
    for k in q.keys() {
        if !known.contains(&k.as_str()) {
            let hint = match crate::suggest::nearest(k, known.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None if known.is_empty() => "it takes none".into(),
                None => format!("it takes {}", known.join(", ")),
            };
            return Err(err(
                StatusCode::BAD_REQUEST,
                format!("{route} has no query parameter `{k}`: {hint}"),
            ));
        }
    }
    Ok(q)
}

fn bad(message: String) -> ApiError {
    err(StatusCode::BAD_REQUEST, message)
}

fn state_names() -> String {
    MessageState::ALL
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_state(v: &str) -> ApiResult<MessageState> {
    MessageState::parse(v).ok_or_else(|| {
        bad(format!(
            "`state` must be one of {}, got `{v}`",
            state_names()
        ))
    })
}

/// A short text parameter: at most `MAX_TEXT` bytes, no control characters.
fn text(what: &str, v: &str) -> ApiResult<String> {
    if v.len() > MAX_TEXT || v.chars().any(char::is_control) {
        return Err(bad(format!(
            "`{what}` must be at most {MAX_TEXT} bytes without control characters"
        )));
    }
    Ok(v.to_string())
}

/// When the message may first run: `delay` seconds from now, or `not_before`.
fn due_time(
    delay: Option<&String>,
    not_before: Option<&String>,
    now: DateTime<Utc>,
) -> ApiResult<Option<DateTime<Utc>>> {
    match (delay, not_before) {
        (Some(_), Some(_)) => Err(bad(
            "give `delay` (seconds from now) or `not_before` (a time), not both".into(),
        )),
        (Some(d), None) => {
            let secs = d
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && (0.0..=MAX_DELAY_SECS).contains(s))
                .ok_or_else(|| {
                    bad(format!(
                        "`delay` must be seconds from 0 to {MAX_DELAY_SECS:.0} (ten years), decimals allowed, e.g. delay=30 or delay=0.5; got `{d}`"
                    ))
                })?;
            let ms = (secs * 1000.0).round() as i64;
            Ok((ms > 0).then(|| now + chrono::Duration::milliseconds(ms)))
        }
        (None, Some(t)) => DateTime::parse_from_rfc3339(t.trim())
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| {
                bad(format!(
                    "`not_before` must be an RFC 3339 time such as 2026-12-01T08:00:00Z, got `{t}` ({e})"
                ))
            }),
        (None, None) => Ok(None),
    }
}

/// The message's URL, for `Location` and the answers.
fn message_url(b: &Base, job: &str, id: &str) -> String {
    b.url(&format!("/api/triggeredwebjobs/{job}/messages/{id}"))
}

/// `POST messages`: the body is the payload, counted as it streams in.
async fn enqueue(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    body: Body,
) -> ApiResult<Response> {
    let queue = queue_job(&st, &name)?;
    let q = params(
        q,
        &[
            "priority",
            "delay",
            "not_before",
            "correlation_id",
            "reply_to",
            "name",
        ],
        "POST messages",
    )?;
    let now = Utc::now();
    let priority = match q.get("priority") {
        Some(p) => p.trim().parse::<i64>().map_err(|_| {
            bad(format!(
                "`priority` must be a whole number (higher runs first, default 0), got `{p}`"
            ))
        })?,
        None => 0,
    };
    let not_before = due_time(q.get("delay"), q.get("not_before"), now)?;
    let reply_to = match q.get("reply_to") {
        Some(u) => {
            check_reply_to(u).map_err(|why| bad(format!("`reply_to`: {why}")))?;
            Some(u.clone())
        }
        None => queue.reply_to.clone(),
    };
    let correlation_id = q
        .get("correlation_id")
        .map(|v| text("correlation_id", v))
        .transpose()?;
    let msg_name = q.get("name").map(|v| text("name", v)).transpose()?;
    let idempotency_key = match headers.get("idempotency-key") {
        Some(v) => Some(text(
            "Idempotency-Key",
            v.to_str().map_err(|_| {
                bad("the `Idempotency-Key` header must be visible ASCII text".into())
            })?,
        )?)
        .filter(|k| !k.is_empty()),
        None => None,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Refused before reading when the store cannot take it anyway.
    store(&st)?;
    let limit = queue.max_payload_bytes;
    let too_large = |got: &str| {
        err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the payload is {got} bytes; {name} takes at most {limit} (`queue.max_payload_bytes` in its settings.job): send less, or raise the limit (up to 67108864)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        return Err(too_large(&n.to_string()));
    }
    let mut payload = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            bad(format!(
                "the payload was cut off before its end ({e}); nothing was stored"
            ))
        })?;
        if (payload.len() + chunk.len()) as u64 > limit {
            return Err(too_large(&format!("more than {limit}")));
        }
        payload.extend_from_slice(&chunk);
    }
    let new = NewMessage {
        job: name.clone(),
        payload,
        content_type,
        idempotency_key,
        correlation_id,
        name: msg_name,
        priority,
        not_before,
        reply_to,
    };
    let window = queue.dedupe_window;
    let done = on_store(&st, move |s| s.enqueue(new, window, now)).await?;
    let b = base(&headers);
    let m = done.message;
    if done.duplicate {
        let id = m.id.clone();
        let result = read_result(&st, &m).await?;
        let answer = dto::Duplicate {
            duplicate: true,
            message: dto::queue_message(&b, &m, result.as_deref()),
        };
        let mut resp = (StatusCode::OK, axum::Json(answer)).into_response();
        set_location(&mut resp, &message_url(&b, &name, &id));
        return Ok(resp);
    }
    st.0.queues.stored(&m);
    let url = message_url(&b, &name, &m.id);
    let mut resp = (
        StatusCode::ACCEPTED,
        axum::Json(dto::EnqueueAnswer {
            id: m.id.clone(),
            state: m.state,
            url: url.clone(),
            duplicate: false,
        }),
    )
        .into_response();
    set_location(&mut resp, &url);
    Ok(resp)
}

fn set_location(resp: &mut Response, url: &str) {
    if let Ok(v) = HeaderValue::from_str(url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
}

/// A message's result bytes, when it has one.
async fn read_result(st: &ApiState, m: &Message) -> ApiResult<Option<Vec<u8>>> {
    if m.result_bytes.is_none() {
        return Ok(None);
    }
    let (job, id) = (m.job.clone(), m.id.clone());
    on_store(st, move |s| s.result(&job, &id)).await
}

/// A message id as the path gave it: anything else than an id is simply not found.
fn check_id(job: &str, id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match ok {
        true => Ok(()),
        false => Err(err(
            StatusCode::NOT_FOUND,
            format!(
                "`{id}` is not a message id of {job} (GET /api/triggeredwebjobs/{job}/messages lists them)"
            ),
        )),
    }
}

async fn list(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    queue_job(&st, &name)?;
    let q = params(q, &["state", "limit", "before"], "GET messages")?;
    let state = q.get("state").map(|s| parse_state(s)).transpose()?;
    let limit = match q.get("limit") {
        Some(l) => l
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "`limit` must be a whole number from 1 to {MAX_LIMIT}, got `{l}`"
                ))
            })?,
        None => DEFAULT_LIMIT,
    };
    let before = q.get("before").cloned();
    if let Some(b) = &before {
        check_id(&name, b).map_err(|_| {
            bad(format!(
                "`before` must be a message id (the `id` of the last message of the page before), got `{b}`"
            ))
        })?;
    }
    let job = name.clone();
    let found = on_store(&st, move |s| s.list(&job, state, limit, before.as_deref())).await?;
    let b = base(&headers);
    let next_url = match (found.len() == limit, found.last()) {
        (true, Some(last)) => {
            let mut url = format!(
                "/api/triggeredwebjobs/{name}/messages?limit={limit}&before={}",
                last.id
            );
            if let Some(s) = state {
                url.push_str(&format!("&state={}", s.as_str()));
            }
            Some(b.url(&url))
        }
        _ => None,
    };
    Ok(axum::Json(dto::MessageList {
        messages: found
            .iter()
            .map(|m| dto::queue_message(&b, m, None))
            .collect(),
        next_url,
    }))
}

/// `GET messages/ID[?wait=SECONDS]`: with `wait`, the answer is held until the
/// message is finished or the time is up, and is the message as it is then.
async fn one(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    queue_job(&st, &name)?;
    check_id(&name, &id)?;
    let q = params(q, &["wait"], "GET messages/ID")?;
    let wait = match q.get("wait") {
        Some(w) => {
            let secs = w
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| {
                    bad(format!(
                        "`wait` must be seconds (0 or more, at most {} are waited), got `{w}`",
                        MAX_WAIT.as_secs()
                    ))
                })?;
            Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64()))
        }
        None => Duration::ZERO,
    };
    // Subscribed before the first read: a change between the read and the wait
    // is still in the channel.
    let mut changes = st.0.queues.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    let mut m = get_message(&st, &name, &id).await?;
    while !m.state.finished() && tokio::time::Instant::now() < deadline {
        let recheck = tokio::time::sleep(WAIT_RECHECK);
        tokio::pin!(recheck);
        loop {
            tokio::select! {
                _ = st.0.cancel.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = &mut recheck => break,
                c = changes.recv() => match c {
                    Ok(c) if c.job == name && c.id == id && c.state.finished() => break,
                    Ok(_) => continue,
                    // Missed changes: read the store again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        m = get_message(&st, &name, &id).await?;
        if st.0.cancel.is_cancelled() {
            break;
        }
    }
    let result = read_result(&st, &m).await?;
    Ok(axum::Json(dto::queue_message(
        &base(&headers),
        &m,
        result.as_deref(),
    )))
}

async fn get_message(st: &ApiState, job: &str, id: &str) -> ApiResult<Message> {
    let (job, id) = (job.to_string(), id.to_string());
    on_store(st, move |s| s.get(&job, &id)).await
}

/// A response of raw bytes; `nosniff` and a sandbox keep a payload that claims to be
/// HTML from running as a page of this API's origin.
fn bytes_response(bytes: Vec<u8>, content_type: &str) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    resp
}

async fn payload(
    State(st): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    queue_job(&st, &name)?;
    check_id(&name, &id)?;
    let (job, mid) = (name.clone(), id.clone());
    let (bytes, ctype) = on_store(&st, move |s| s.payload(&job, &mid)).await?;
    Ok(bytes_response(
        bytes,
        ctype.as_deref().unwrap_or("application/octet-stream"),
    ))
}

async fn result(
    State(st): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    queue_job(&st, &name)?;
    check_id(&name, &id)?;
    let m = get_message(&st, &name, &id).await?;
    let (job, mid) = (name.clone(), id.clone());
    let found = on_store(&st, move |s| s.result(&job, &mid)).await?;
    match found {
        Some(bytes) => {
            let ctype = match std::str::from_utf8(&bytes) {
                Ok(_) => "text/plain; charset=utf-8",
                Err(_) => "application/octet-stream",
            };
            Ok(bytes_response(bytes, ctype))
        }
        None => {
            let why = match m.state.finished() {
                true => format!(
                    "it is {} and its run wrote nothing to $WEBJOBS_RESULT_PATH",
                    m.state.as_str()
                ),
                false => format!(
                    "it is {}: a result is what its run writes to $WEBJOBS_RESULT_PATH (GET messages/{id}?wait=SECONDS waits for its end)",
                    m.state.as_str()
                ),
            };
            Err(err(
                StatusCode::NOT_FOUND,
                format!("message {id} of {name} has no result: {why}"),
            ))
        }
    }
}

async fn requeue(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    queue_job(&st, &name)?;
    check_id(&name, &id)?;
    let (job, mid) = (name.clone(), id.clone());
    let m = on_store(&st, move |s| s.requeue(&job, &mid, Utc::now())).await?;
    st.0.queues.changed(&m);
    st.0.queues.wake(&name);
    Ok(axum::Json(dto::queue_message(&base(&headers), &m, None)))
}

/// `DELETE messages/ID`: cancels it; a running message's run is stopped.
async fn cancel(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    queue_job(&st, &name)?;
    check_id(&name, &id)?;
    let (job, mid) = (name.clone(), id.clone());
    let (before, after) = on_store(&st, move |s| {
        let before = s.cancel(&job, &mid, Utc::now())?;
        let after = s.get(&job, &mid)?;
        Ok((before, after))
    })
    .await?;
    if before.state == MessageState::Running {
        st.0.queues.stop_run(&name, &id);
    }
    st.0.queues.changed(&after);
    Ok(axum::Json(dto::queue_message(
        &base(&headers),
        &after,
        None,
    )))
}

/// The `state` of a bulk change: required, and a state the change applies to.
fn bulk_state(
    q: BTreeMap<String, String>,
    route: &str,
    allowed: &[MessageState],
    refusal: &str,
) -> ApiResult<MessageState> {
    let q = params(q, &["state"], route)?;
    let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
    let s = q.get("state").ok_or_else(|| {
        bad(format!(
            "{route} needs `state`, one of {} (e.g. ?state=Dead)",
            names.join(", ")
        ))
    })?;
    let s = parse_state(s)?;
    if !allowed.contains(&s) {
        return Err(err(
            StatusCode::CONFLICT,
            format!("{route}: {} messages {refusal}", s.as_str()),
        ));
    }
    Ok(s)
}

/// `POST messages/requeue?state=S`: every finished message of state S back to Queued.
async fn requeue_all(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    queue_job(&st, &name)?;
    let state = bulk_state(
        q,
        "POST messages/requeue",
        &[
            MessageState::Dead,
            MessageState::Succeeded,
            MessageState::Cancelled,
        ],
        "are not finished: only Dead, Succeeded or Cancelled messages are requeued",
    )?;
    let job = name.clone();
    // The ids are read first so the change stream can name the messages requeued
    // (the store's bulk change answers only how many).
    let (listed, count) = on_store(&st, move |s| {
        let listed = s.list(&job, Some(state), MAX_LIMIT, None)?;
        let count = s.requeue_all(&job, state, Utc::now())?;
        Ok((listed, count))
    })
    .await?;
    for mut m in listed {
        m.state = MessageState::Queued;
        m.attempts = 0;
        st.0.queues.changed(&m);
    }
    if count > 0 {
        st.0.queues.wake(&name);
    }
    Ok(axum::Json(dto::MessagesChanged {
        message: format!("{count} {} message(s) of {name} requeued", state.as_str()),
        count,
    }))
}

/// `DELETE messages?state=S`: removes every message of state S.
async fn purge(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    queue_job(&st, &name)?;
    let state = bulk_state(
        q,
        "DELETE messages",
        &[
            MessageState::Dead,
            MessageState::Succeeded,
            MessageState::Cancelled,
            MessageState::Queued,
        ],
        "are being run: cancel them one by one (DELETE messages/ID) instead",
    )?;
    let job = name.clone();
    let count = on_store(&st, move |s| s.delete_all(&job, state)).await?;
    Ok(axum::Json(dto::MessagesChanged {
        message: format!("{count} {} message(s) of {name} deleted", state.as_str()),
        count,
    }))
}

/// The `queue` field of triggered job objects: the counts of every queue job in
/// `jobs` (one trip to the blocking pool for all of them; none when no job has a
/// queue, so listings of jobs without one never wait for the store).
pub async fn summaries(
    st: &ApiState,
    jobs: &[crate::supervisor::RegistryEntry],
) -> BTreeMap<String, dto::QueueSummary> {
    let names: Vec<String> = jobs
        .iter()
        .filter(|e| e.def.job_type == JobType::Triggered)
        .filter(|e| e.def.settings.as_ref().is_some_and(|s| s.queue.is_some()))
        .map(|e| e.def.name.clone())
        .collect();
    if names.is_empty() {
        return BTreeMap::new();
    }
    let failed = |why: String| dto::QueueSummary {
        error: Some(why),
        ..Default::default()
    };
    let store = match st.0.queues.store() {
        Ok(s) => s,
        Err(why) => {
            return names
                .into_iter()
                .map(|n| (n, failed(why.clone())))
                .collect();
        }
    };
    let counted = tokio::task::spawn_blocking(move || {
        let now = Utc::now();
        names
            .into_iter()
            .map(|n| {
                let c = match store.counts(&n, now) {
                    Ok(c) => dto::QueueSummary::of(&c),
                    Err(e) => failed(e.to_string()),
                };
                (n, c)
            })
            .collect::<BTreeMap<_, _>>()
    })
    .await;
    counted.unwrap_or_default()
}
