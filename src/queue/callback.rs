//! Callbacks: a finished message's outcome POSTed to its `reply_to` URL, signed
//! with the API token (docs/callbacks.md).
//!
//! The store is the to-do list: settling a message `Succeeded` or `Dead` with a
//! `reply_to` makes its callback due, and each attempt records when the next one is
//! due (or that none is), so callbacks survive a restart of the host and any host
//! sharing the store may send them. One task sends them, a few at once, never on the
//! job tasks' path: a slow receiver delays only other callbacks. What is sent, how it
//! is signed and when it is tried again are pure functions below; the task only acts.
//!
//! Delivery is at least once: a host stopped mid-request, or two hosts sharing a
//! store that both see a callback due, send it again. Receivers tell repeats apart by
//! the message id header.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use hmac::{KeyInit, Mac};
use http_body_util::Full;
use tokio_util::sync::CancellationToken;

use super::{Message, QueueStore, Queues, policy};

pub const SIGNATURE_HEADER: &str = "X-Jobhost-Signature";
pub const MESSAGE_ID_HEADER: &str = "X-Jobhost-Message-Id";
pub const ATTEMPT_HEADER: &str = "X-Jobhost-Delivery-Attempt";

/// The timings and limits of callback delivery. Tests shrink them; the host uses
/// [`Tuning::default`].
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Delay before the 2nd attempt; doubles per attempt.
    pub base_delay: Duration,
    /// Cap of that delay.
    pub max_delay: Duration,
    /// Attempts stop this long after the message finished.
    pub give_up_after: Duration,
    /// How long one attempt may wait for the receiver's answer.
    pub timeout: Duration,
    /// The longest pause between looks at the store: another host sharing it may
    /// have settled a message without waking this one.
    pub poll: Duration,
    /// Callbacks taken from the store per look.
    pub batch: usize,
    /// Requests in flight at once.
    pub at_once: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            base_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(300),
            give_up_after: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(5),
            batch: 32,
            at_once: 8,
        }
    }
}

/// `sha256=HEX`: the lowercase hex HMAC-SHA256 of `body`, keyed with `key` (the API
/// token's bytes).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length (long ones are hashed first), so this never fails.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256=");
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The JSON body POSTed for message `m` with its result bytes.
pub fn body(m: &Message, result: Option<&[u8]>) -> Vec<u8> {
    // A struct, not json!: its fields come out in the documented order.
    #[derive(serde::Serialize)]
    struct Body<'a> {
        id: &'a str,
        job: &'a str,
        state: &'a str,
        attempts: u32,
        correlation_id: Option<&'a str>,
        result: Option<String>,
        last_error: Option<&'a str>,
        runs: &'a [String],
    }
    let b = Body {
        id: &m.id,
        job: &m.job,
        state: m.state.as_str(),
        attempts: m.attempts,
        correlation_id: m.correlation_id.as_deref(),
        result: result.map(|r| base64::engine::general_purpose::STANDARD.encode(r)),
        last_error: m.last_error.as_deref(),
        runs: &m.runs,
    };
    // Strings and integers only: serializing cannot fail.
    serde_json::to_vec(&b).unwrap_or_default()
}

/// When to try again after `attempts` attempts (>= 1) of a callback whose message
/// finished at `finished_at`, the last one ending at `now`: the base delay doubled
/// per attempt after the first, capped, lengthened by `jitter` (0.0 to 1.0) times
/// 10%, and never past `give_up_after` from `finished_at`, where one last attempt is
/// made. `None`: give up.
pub fn next_try(
    t: &Tuning,
    finished_at: DateTime<Utc>,
    attempts: u32,
    now: DateTime<Utc>,
    jitter: f64,
) -> Option<DateTime<Utc>> {
    let deadline = finished_at + chrono::Duration::from_std(t.give_up_after).ok()?;
    if now >= deadline {
        return None;
    }
    let doublings = attempts.saturating_sub(1).min(31);
    let delay = t
        .base_delay
        .checked_mul(1u32 << doublings)
        .unwrap_or(t.max_delay)
        .min(t.max_delay);
    let delay = delay + delay.mul_f64(0.1 * jitter.clamp(0.0, 1.0));
    let at = chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(deadline);
    Some(at.min(deadline))
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered(u16),
    /// Not delivered; worth trying again (non-2xx, no answer, no connection).
    Failed(String),
    /// Can never be delivered (the URL is not one the host can send to).
    Hopeless(String),
}

/// What to record and log after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// When to try again; `None`: done (delivered or given up).
    pub again_at: Option<DateTime<Utc>>,
    /// The line for the job's scheduler log.
    pub note: String,
    pub error: bool,
}

/// What follows attempt number `m.callback_attempts + 1` of `m`'s callback ending in
/// `outcome` at `now`.
pub fn after(t: &Tuning, m: &Message, outcome: &Outcome, now: DateTime<Utc>) -> Step {
    let attempt = m.callback_attempts.saturating_add(1);
    let what = format!(
        "callback for message {} to {}",
        m.id,
        shown_url(m.reply_to.as_deref().unwrap_or("-"))
    );
    let why = match outcome {
        Outcome::Delivered(status) => {
            return Step {
                again_at: None,
                note: format!("{what}: delivered ({status}) on attempt {attempt}"),
                error: false,
            };
        }
        Outcome::Hopeless(why) => {
            return Step {
                again_at: None,
                note: format!("{what}: failed ({why}); given up"),
                error: true,
            };
        }
        Outcome::Failed(why) => why,
    };
    let finished_at = m.finished_at.unwrap_or(m.enqueued_at);
    let jitter = policy::jitter_for(&m.id, attempt);
    match next_try(t, finished_at, attempt, now, jitter) {
        Some(at) => Step {
            again_at: Some(at),
            note: format!(
                "{what}: failed ({why}) on attempt {attempt}, next try in {}",
                human((at - now).to_std().unwrap_or_default())
            ),
            error: true,
        },
        None => Step {
            again_at: None,
            note: format!(
                "{what}: failed ({why}); given up after {attempt} attempt{} in {}",
                if attempt == 1 { "" } else { "s" },
                human(t.give_up_after)
            ),
            error: true,
        },
    }
}

/// The URL as logged: without user, password, query and fragment, which may hold
/// secrets of the receiver.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.chars().take(200).collect(),
    }
}

/// `250 ms`, `10 s`, `5 min`, `1 h`: rounded, for log lines.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{} ms", d.as_millis())
    } else if s < 120 {
        format!("{s} s")
    } else if s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else {
        format!("{} min", (s + 30) / 60)
    }
}

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The HTTP(S) client of callbacks.
///
/// hyper with rustls (ring) rather than reqwest's TLS: reqwest's features are shared
/// with the command line's client, and with TLS on, every reqwest client loads the
/// system's CA certificates when built and fails on a system without them, which
/// would break every client command there for a feature only the host uses. Here the
/// certificates are loaded once, by the host, and only https callbacks need them.
/// Redirects are not followed (a 3xx counts as a failure: following one would turn
/// the POST into a GET).
#[derive(Clone)]
pub struct Sender {
    client: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    /// Why https callbacks cannot be verified (no CA certificates found).
    no_roots: Option<String>,
    timeout: Duration,
}

impl Sender {
    pub fn new(t: &Tuning) -> Sender {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        let no_roots = (added == 0).then(|| {
            let why = found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            format!(
                "no CA certificates found on this system{why}, so https callbacks cannot \
                 be verified: install the ca-certificates package or set SSL_CERT_FILE"
            )
        });
        if let Some(why) = &no_roots {
            tracing::warn!("{why}");
        }
        Sender::with_roots(t, roots, no_roots)
    }

    fn with_roots(t: &Tuning, roots: rustls::RootCertStore, no_roots: Option<String>) -> Sender {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
            // ring supports the default versions; kept for a provider that would not.
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(t.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Sender {
            client,
            no_roots,
            timeout: t.timeout,
        }
    }

    /// One POST of `body` for `m`, signed with `key`.
    pub async fn send(&self, key: &[u8], m: &Message, body: Vec<u8>) -> Outcome {
        let Some(url) = m.reply_to.as_deref() else {
            return Outcome::Hopeless("the message has no reply_to".into());
        };
        if let Err(why) = crate::spec::settings::queue::check_reply_to(url) {
            return Outcome::Hopeless(why);
        }
        let (uri, basic) = match split_credentials(url) {
            Ok(parts) => parts,
            Err(why) => return Outcome::Hopeless(why),
        };
        if let (Some(why), Some("https")) = (&self.no_roots, uri.scheme_str()) {
            return Outcome::Failed(why.clone());
        }
        let attempt = m.callback_attempts.saturating_add(1);
        let mut request = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .header(SIGNATURE_HEADER, signature(key, &body))
            .header(MESSAGE_ID_HEADER, &m.id)
            .header(ATTEMPT_HEADER, attempt.to_string());
        if let Some(basic) = basic {
            request = request.header(hyper::header::AUTHORIZATION, basic);
        }
        let request = match request.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Hopeless(format!("`{}` cannot be requested: {e}", shown_url(url)));
            }
        };
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Outcome::Failed(format!("no answer within {}", human(self.timeout))),
            Ok(Ok(resp)) if resp.status().is_success() => {
                Outcome::Delivered(resp.status().as_u16())
            }
            Ok(Ok(resp)) => Outcome::Failed(resp.status().as_u16().to_string()),
            Ok(Err(e)) => Outcome::Failed(describe(&e)),
        }
    }
}

const USER_AGENT: &str = concat!("jobhost/", env!("CARGO_PKG_VERSION"));

/// The URL without `user:password@`, and those as a Basic `Authorization` header:
/// a request target cannot carry them.
fn split_credentials(url: &str) -> Result<(hyper::Uri, Option<String>), String> {
    let bad = |e: &dyn std::fmt::Display| format!("`{}` is not a valid URL: {e}", shown_url(url));
    let mut parsed = reqwest::Url::parse(url).map_err(|e| bad(&e))?;
    let basic = match (parsed.username(), parsed.password()) {
        ("", None) => None,
        (user, password) => {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let pair = format!("{}:{}", decode(user), decode(password.unwrap_or("")));
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        }
    };
    parsed.set_fragment(None);
    let uri = parsed.as_str().parse::<hyper::Uri>().map_err(|e| bad(&e))?;
    Ok((uri, basic))
}

/// hyper's errors say "client error (Connect)"; the cause at the bottom of the
/// chain is what a reader needs ("Connection refused", "invalid peer certificate").
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let root = root.to_string();
    if e.is_connect() {
        format!("cannot connect: {root}")
    } else {
        root
    }
}

/// Sends due callbacks until `cancel`: the host's callback task.
pub async fn run(queues: Arc<Queues>, token: String, cancel: CancellationToken) {
    run_with(queues, token, cancel, Tuning::default()).await
}

/// [`run`] with its timings given.
pub async fn run_with(
    queues: Arc<Queues>,
    token: String,
    cancel: CancellationToken,
    tuning: Tuning,
) {
    let sender = Sender::new(&tuning);
    let key = token.into_bytes();
    // The earliest retry this task scheduled that is still ahead: the store is only
    // asked what is due now, and waiting a whole poll interval past it would make
    // short delays late.
    let mut ahead = None;
    loop {
        let store = match queues.store() {
            Ok(s) => s,
            // Every queue job already shows why there is no store; look again rarely.
            Err(_) => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => continue,
                }
            }
        };
        // Dropping a round mid-request on shutdown is safe: what was not recorded
        // as tried is still due and is sent by the next host to start.
        let wait = tokio::select! {
            _ = cancel.cancelled() => return,
            w = round(&queues, &store, &sender, &key, &tuning, &mut ahead) => w,
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = queues.callbacks_due.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends the callbacks due now; how long to wait before looking again.
async fn round(
    queues: &Queues,
    store: &Arc<dyn QueueStore>,
    sender: &Sender,
    key: &[u8],
    t: &Tuning,
    ahead: &mut Option<DateTime<Utc>>,
) -> Duration {
    let started = Utc::now();
    let limit = t.batch;
    let due = match blocking(store, move |s| s.due_callbacks(started, limit)).await {
        Ok(due) => due,
        Err(why) => {
            tracing::warn!("looking for due callbacks: {why}");
            return t.poll;
        }
    };
    let full = due.len() >= t.batch;
    let (soonest, store_failed) = futures_util::stream::iter(due)
        .map(|m| deliver(queues, store, sender, key, t, m))
        .buffer_unordered(t.at_once.max(1))
        .fold((None, false), |(soonest, failed), again| async move {
            match again {
                Ok(at) => (earliest(soonest, at), failed),
                Err(()) => (soonest, true),
            }
        })
        .await;
    // A retry due by the time this round looked was taken by it (or by another host).
    *ahead = earliest(ahead.filter(|at| *at > started), soonest);
    pause(t, *ahead, Utc::now(), full, store_failed)
}

/// How long to wait after a round: not at all when it took a full batch (more may
/// be due), until the earliest retry ahead, and never longer than the poll interval.
fn pause(
    t: &Tuning,
    ahead: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    full: bool,
    store_failed: bool,
) -> Duration {
    if store_failed {
        // A callback the store could not mark as tried is still due: looking again
        // at once would send it again at once.
        return t.poll;
    }
    if full {
        return Duration::ZERO;
    }
    match ahead {
        Some(at) => (at - now).to_std().unwrap_or_default().min(t.poll),
        None => t.poll,
    }
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One attempt of `m`'s callback, recorded in the store and the job's log: when it
/// is due again, or `Err` when the store could not record it.
async fn deliver(
    queues: &Queues,
    store: &Arc<dyn QueueStore>,
    sender: &Sender,
    key: &[u8],
    t: &Tuning,
    m: Message,
) -> Result<Option<DateTime<Utc>>, ()> {
    let result = match m.result_bytes {
        None => Ok(None),
        Some(_) => {
            let (job, id) = (m.job.clone(), m.id.clone());
            blocking(store, move |s| s.result(&job, &id)).await
        }
    };
    let outcome = match result {
        Ok(result) => {
            let body = body(&m, result.as_deref());
            sender.send(key, &m, body).await
        }
        Err(why) => Outcome::Failed(format!("reading its result: {why}")),
    };
    let step = after(t, &m, &outcome, Utc::now());
    queues.sched_note(&m.job, step.error, &step.note);
    let (id, again_at) = (m.id.clone(), step.again_at);
    match blocking(store, move |s| s.callback_tried(&id, again_at)).await {
        Ok(()) => Ok(again_at),
        Err(why) => {
            tracing::warn!(job = %m.job, "recording callback attempt of message {}: {why}", m.id);
            Err(())
        }
    }
}

/// A store call on the blocking pool, its error as text.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn QueueStore>,
    f: impl FnOnce(&dyn QueueStore) -> Result<T, super::StoreError> + Send + 'static,
) -> Result<T, String> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the store call failed: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::queue::MessageState;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    fn msg() -> Message {
        Message {
            id: "0190aabbccdd0001abcdef".into(),
            job: "resize".into(),
            content_type: None,
            payload_bytes: 3,
            idempotency_key: None,
            correlation_id: Some("order-7".into()),
            name: None,
            priority: 0,
            not_before: None,
            reply_to: Some("http://user:pw@example.test:8080/hook?sig=secret#x".into()),
            state: MessageState::Succeeded,
            attempts: 2,
            enqueued_at: t0() - secs(60),
            next_attempt_at: None,
            finished_at: Some(t0()),
            last_error: None,
            result_bytes: Some(4),
            runs: vec!["r1".into(), "r2".into()],
            owner: None,
            callback_attempts: 0,
            callback_due: Some(t0()),
        }
    }

    #[test]
    fn signature_is_rfc_4231_hmac_sha256_in_lowercase_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(
            signature(b"Jefe", b"what do ya want for nothing!"),
            signature(b"Jefe", b"what do ya want for nothing?")
        );
        assert_ne!(signature(b"Jeff", b"x"), signature(b"Jefe", b"x"));
        // Keys longer than a block are hashed first, not refused.
        assert_eq!(signature(&[7u8; 200], b"x").len(), 7 + 64);
    }

    #[test]
    fn body_has_the_documented_fields_in_order_and_base64_result() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let b = body(&msg(), Some(&bytes));
        let text = String::from_utf8(b.clone()).unwrap();
        let keys = [
            "\"id\"",
            "\"job\"",
            "\"state\"",
            "\"attempts\"",
            "\"correlation_id\"",
            "\"result\"",
            "\"last_error\"",
            "\"runs\"",
        ];
        let at: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["id"], "0190aabbccdd0001abcdef");
        assert_eq!(v["job"], "resize");
        assert_eq!(v["state"], "Succeeded");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["correlation_id"], "order-7");
        assert_eq!(v["last_error"], serde_json::Value::Null);
        assert_eq!(v["runs"], serde_json::json!(["r1", "r2"]));
        let back = base64::engine::general_purpose::STANDARD
            .decode(v["result"].as_str().unwrap())
            .unwrap();
        assert_eq!(back, bytes);
    }

    #[test]
    fn body_of_a_dead_message_without_result_has_nulls() {
        let mut m = msg();
        m.state = MessageState::Dead;
        m.correlation_id = None;
        m.last_error = Some("exit code 65".into());
        let v: serde_json::Value = serde_json::from_slice(&body(&m, None)).unwrap();
        assert_eq!(v["state"], "Dead");
        assert_eq!(v["result"], serde_json::Value::Null);
        assert_eq!(v["correlation_id"], serde_json::Value::Null);
        assert_eq!(v["last_error"], "exit code 65");
    }

    #[test]
    fn next_try_doubles_from_five_seconds_caps_at_five_minutes() {
        let t = Tuning::default();
        let now = t0() + secs(1);
        for (attempts, want) in [
            (1, 5),
            (2, 10),
            (3, 20),
            (4, 40),
            (5, 80),
            (6, 160),
            (7, 300),
            (8, 300),
            (40, 300),
            (u32::MAX, 300),
        ] {
            let at = next_try(&t, t0(), attempts, now, 0.0).unwrap();
            assert_eq!((at - now).num_seconds(), want, "after attempt {attempts}");
        }
    }

    #[test]
    fn next_try_jitter_adds_at_most_ten_percent() {
        let t = Tuning::default();
        let now = t0();
        let plain = next_try(&t, t0(), 7, now, 0.0).unwrap();
        let most = next_try(&t, t0(), 7, now, 1.0).unwrap();
        let over = next_try(&t, t0(), 7, now, 7.0).unwrap();
        assert_eq!((most - plain).num_seconds(), 30);
        assert_eq!(over, most);
    }

    #[test]
    fn next_try_stops_an_hour_after_the_message_finished() {
        let t = Tuning::default();
        // Near the deadline the next try is the deadline itself: one last attempt.
        let late = t0() + secs(3500);
        assert_eq!(next_try(&t, t0(), 20, late, 0.0), Some(t0() + secs(3600)));
        assert_eq!(next_try(&t, t0(), 21, t0() + secs(3600), 0.0), None);
        assert_eq!(next_try(&t, t0(), 21, t0() + secs(4000), 0.0), None);
    }

    #[test]
    fn a_receiver_that_never_answers_gets_about_twenty_tries_in_the_hour() {
        let t = Tuning::default();
        let (mut now, mut attempts) = (t0(), 0u32);
        loop {
            attempts += 1;
            match next_try(&t, t0(), attempts, now, 0.5) {
                Some(at) => {
                    assert!(at > now);
                    now = at;
                }
                None => break,
            }
        }
        assert_eq!(now, t0() + secs(3600), "the last try is at the deadline");
        assert!((15..=25).contains(&attempts), "{attempts}");
    }

    #[test]
    fn after_logs_delivery_retry_and_giving_up() {
        let t = Tuning::default();
        let mut m = msg();
        let shown = "callback for message 0190aabbccdd0001abcdef to http://example.test:8080/hook";
        let step = after(&t, &m, &Outcome::Delivered(204), t0());
        assert_eq!(step.again_at, None);
        assert!(!step.error);
        assert_eq!(step.note, format!("{shown}: delivered (204) on attempt 1"));

        m.callback_attempts = 1;
        let step = after(&t, &m, &Outcome::Failed("500".into()), t0() + secs(5));
        let at = step.again_at.unwrap();
        assert!(at >= t0() + secs(15) && at <= t0() + secs(16), "{at}");
        assert!(step.error);
        assert!(
            step.note.starts_with(&format!(
                "{shown}: failed (500) on attempt 2, next try in 1"
            )),
            "{}",
            step.note
        );

        m.callback_attempts = 21;
        let step = after(
            &t,
            &m,
            &Outcome::Failed("cannot connect: Connection refused".into()),
            t0() + secs(3600),
        );
        assert_eq!(step.again_at, None);
        assert_eq!(
            step.note,
            format!(
                "{shown}: failed (cannot connect: Connection refused); given up after 22 attempts in 1 h"
            )
        );

        m.callback_attempts = 0;
        let step = after(&t, &m, &Outcome::Hopeless("`x` is bad".into()), t0());
        assert_eq!(step.again_at, None);
        assert_eq!(step.note, format!("{shown}: failed (`x` is bad); given up"));
    }

    #[test]
    fn without_finished_at_the_hour_counts_from_enqueue() {
        let t = Tuning::default();
        let mut m = msg();
        m.finished_at = None;
        m.callback_attempts = 3;
        let step = after(
            &t,
            &m,
            &Outcome::Failed("502".into()),
            m.enqueued_at + secs(3600),
        );
        assert_eq!(step.again_at, None);
    }

    #[test]
    fn the_task_pauses_until_the_next_retry_at_most_a_poll_interval() {
        let t = Tuning::default();
        let now = t0();
        let ms = |n| Duration::from_millis(n);
        let at = |n| Some(now + chrono::Duration::milliseconds(n));
        assert_eq!(pause(&t, None, now, false, false), t.poll);
        assert_eq!(pause(&t, at(1200), now, false, false), ms(1200));
        assert_eq!(pause(&t, at(60_000), now, false, false), t.poll);
        assert_eq!(pause(&t, at(-5), now, false, false), Duration::ZERO);
        assert_eq!(pause(&t, at(1200), now, true, false), Duration::ZERO);
        assert_eq!(pause(&t, at(1200), now, true, true), t.poll);
    }

    #[test]
    fn logged_urls_lose_credentials_query_and_fragment() {
        assert_eq!(
            shown_url("https://u:p@h.test/a/b?token=s#f"),
            "https://h.test/a/b"
        );
        assert_eq!(shown_url("not a url"), "not a url");
    }

    #[test]
    fn durations_read_as_a_person_writes_them() {
        for (d, want) in [
            (Duration::from_millis(40), "40 ms"),
            (Duration::from_secs(5), "5 s"),
            (Duration::from_millis(10_900), "10 s"),
            (Duration::from_secs(119), "119 s"),
            (Duration::from_secs(300), "5 min"),
            (Duration::from_secs(330), "6 min"),
            (Duration::from_secs(3600), "1 h"),
        ] {
            assert_eq!(human(d), want);
        }
    }

    /// The callback task against a real store and a loopback receiver.
    mod live {
        use std::sync::Mutex;

        use tempfile::TempDir;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use super::*;
        use crate::queue::{JobLink, NewMessage, Settlement};

        const TOKEN: &str = "a-test-token-of-enough-length-0123456789";
        const JOB: &str = "resize";

        /// What one request brought.
        #[derive(Debug, Clone)]
        struct Got {
            target: String,
            headers: Vec<(String, String)>,
            body: Vec<u8>,
        }

        impl Got {
            fn header(&self, name: &str) -> Option<&str> {
                self.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            }
        }

        #[derive(Clone, Copy)]
        enum Answer {
            Status(u16),
            Never,
        }

        /// A tiny HTTP/1.1 server: the n-th request gets `answers[n]` (the last one
        /// repeats). Raw sockets, so nothing in it can hide what the host sent.
        struct Receiver {
            addr: std::net::SocketAddr,
            got: Arc<Mutex<Vec<Got>>>,
            task: tokio::task::JoinHandle<()>,
        }

        impl Drop for Receiver {
            fn drop(&mut self) {
                self.task.abort();
            }
        }

        impl Receiver {
            async fn start(answers: Vec<Answer>) -> Receiver {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let got = Arc::new(Mutex::new(Vec::new()));
                let seen = got.clone();
                let task = tokio::spawn(async move {
                    loop {
                        let Ok((sock, _)) = listener.accept().await else {
                            return;
                        };
                        let (seen, answers) = (seen.clone(), answers.clone());
                        tokio::spawn(async move { serve(sock, seen, answers).await });
                    }
                });
                Receiver { addr, got, task }
            }

            fn url(&self, path: &str) -> String {
                format!("http://{}{path}", self.addr)
            }

            fn got(&self) -> Vec<Got> {
                self.got.lock().unwrap().clone()
            }
        }

        async fn serve(
            mut sock: tokio::net::TcpStream,
            seen: Arc<Mutex<Vec<Got>>>,
            answers: Vec<Answer>,
        ) {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut lines = head.split("\r\n");
            let target = lines.next().unwrap_or("").to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = buf[head_end + 4..].to_vec();
            while body.len() < len {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(Got {
                    target,
                    headers,
                    body,
                });
                seen.len() - 1
            };
            match answers[n.min(answers.len() - 1)] {
                Answer::Never => std::future::pending::<()>().await,
                Answer::Status(code) => {
                    let reply = format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                }
            }
        }

        /// A store in a temp folder, the job linked to a scheduler log there.
        struct Host {
            dir: TempDir,
            queues: Arc<Queues>,
            store: Arc<dyn QueueStore>,
        }

        impl Host {
            fn open(dir: TempDir) -> Host {
                let store = crate::queue::sqlite::open(&dir.path().join("queue.db")).unwrap();
                let queues = Arc::new(Queues::new(Ok(store.clone()), "-".into()));
                let sink = crate::logsink::LogSink::new(dir.path().join("sched.log"), 1 << 20, 1);
                queues.link(
                    JOB,
                    JobLink {
                        stop: tokio::sync::mpsc::unbounded_channel().0,
                        sched_log: Arc::new(Mutex::new(sink)),
                    },
                );
                Host { dir, queues, store }
            }

            fn new() -> Host {
                Host::open(TempDir::new().unwrap())
            }

            /// A message run and settled `Succeeded` with `result`, as a job task does.
            fn finished(&self, reply_to: &str, result: &[u8]) -> String {
                let now = Utc::now();
                let m = NewMessage {
                    job: JOB.into(),
                    payload: b"in".to_vec(),
                    correlation_id: Some("order-7".into()),
                    reply_to: Some(reply_to.into()),
                    ..NewMessage::default()
                };
                let id = self
                    .store
                    .enqueue(m, Duration::from_secs(60), now)
                    .unwrap()
                    .message
                    .id;
                let run = ["000000000000000001".to_string()];
                let c = self.store.claim(JOB, "-", &run, now).unwrap();
                assert_eq!(c.len(), 1);
                let result = Some(result.to_vec());
                self.store
                    .settle(&id, Settlement::Succeeded { result }, Utc::now())
                    .unwrap()
                    .unwrap();
                id
            }

            fn get(&self, id: &str) -> Message {
                self.store.get(JOB, id).unwrap()
            }

            fn log(&self) -> String {
                std::fs::read_to_string(self.dir.path().join("sched.log")).unwrap_or_default()
            }

            /// Runs the callback task until `done` holds for the store, then stops it.
            async fn run_until(&self, t: Tuning, done: impl Fn(&Host) -> bool) {
                let cancel = CancellationToken::new();
                let task = tokio::spawn(run_with(
                    self.queues.clone(),
                    TOKEN.into(),
                    cancel.clone(),
                    t,
                ));
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while !done(self) {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "timed out; log so far:\n{}",
                        self.log()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                cancel.cancel();
                tokio::time::timeout(Duration::from_secs(30), task)
                    .await
                    .unwrap()
                    .unwrap();
            }

            fn settled(id: &str) -> impl Fn(&Host) -> bool + '_ {
                move |h| h.get(id).callback_due.is_none()
            }
        }

        fn quick() -> Tuning {
            Tuning {
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(200),
                give_up_after: Duration::from_secs(3600),
                timeout: Duration::from_secs(10),
                poll: Duration::from_millis(200),
                batch: 32,
                at_once: 8,
            }
        }

        /// Checks the signature as a receiver should: recomputed over the exact
        /// bytes received, compared in constant time.
        fn signed_by_token(g: &Got) -> bool {
            let Some(hex) = g
                .header(SIGNATURE_HEADER)
                .and_then(|v| v.strip_prefix("sha256="))
            else {
                return false;
            };
            let Some(bytes) = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()
            else {
                return false;
            };
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(TOKEN.as_bytes()).unwrap();
            mac.update(&g.body);
            mac.verify_slice(&bytes).is_ok()
        }

        #[tokio::test]
        async fn delivered_on_the_third_try_signed_each_time() {
            let rx = Receiver::start(vec![
                Answer::Status(500),
                Answer::Status(500),
                Answer::Status(200),
            ])
            .await;
            let h = Host::new();
            let result: Vec<u8> = (0..=255u8).rev().collect();
            let id = h.finished(&rx.url("/hook?k=v"), &result);
            assert!(h.get(&id).callback_due.is_some(), "settling makes it due");

            h.run_until(quick(), Host::settled(&id)).await;

            let got = rx.got();
            assert_eq!(got.len(), 3, "{got:?}");
            for (n, g) in got.iter().enumerate() {
                assert_eq!(g.target, "POST /hook?k=v HTTP/1.1");
                assert!(signed_by_token(g), "attempt {}: bad signature {g:?}", n + 1);
                assert_eq!(g.header("content-type"), Some("application/json"));
                assert_eq!(g.header(MESSAGE_ID_HEADER), Some(id.as_str()));
                assert_eq!(g.header(ATTEMPT_HEADER), Some((n + 1).to_string().as_str()));
                assert_eq!(g.body, got[0].body, "every attempt sends the same body");
            }
            let v: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
            assert_eq!(v["id"], id.as_str());
            assert_eq!(v["job"], JOB);
            assert_eq!(v["state"], "Succeeded");
            assert_eq!(v["attempts"], 1);
            assert_eq!(v["correlation_id"], "order-7");
            assert_eq!(v["last_error"], serde_json::Value::Null);
            assert_eq!(v["runs"], serde_json::json!(["000000000000000001"]));
            let back = base64::engine::general_purpose::STANDARD
                .decode(v["result"].as_str().unwrap())
                .unwrap();
            assert_eq!(back, result, "the result's bytes round-trip");

            let m = h.get(&id);
            assert_eq!((m.callback_attempts, m.callback_due), (3, None));
            assert!(h.store.due_callbacks(Utc::now(), 10).unwrap().is_empty());
            let log = h.log();
            assert!(
                log.contains("failed (500) on attempt 1, next try in"),
                "{log}"
            );
            assert!(
                log.contains("failed (500) on attempt 2, next try in"),
                "{log}"
            );
            assert!(log.contains("delivered (200) on attempt 3"), "{log}");
            assert!(!log.contains("k=v"), "queries stay out of the log: {log}");
        }

        #[tokio::test]
        async fn a_receiver_that_never_answers_times_out_until_given_up() {
            let rx = Receiver::start(vec![Answer::Never]).await;
            let h = Host::new();
            let id = h.finished(&rx.url("/slow"), b"r");
            let t = Tuning {
                timeout: Duration::from_millis(200),
                give_up_after: Duration::from_millis(900),
                ..quick()
            };
            h.run_until(t, Host::settled(&id)).await;
            let log = h.log();
            assert!(
                log.contains("failed (no answer within 200 ms) on attempt 1"),
                "{log}"
            );
            assert!(log.contains("given up after"), "{log}");
            let m = h.get(&id);
            assert!(m.callback_attempts >= 2, "{m:?}");
            assert_eq!(rx.got().len() as u32, m.callback_attempts);
        }

        #[tokio::test]
        async fn a_refused_connection_is_retried_then_given_up() {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let h = Host::new();
            let id = h.finished(&format!("http://127.0.0.1:{port}/gone"), b"r");
            let t = Tuning {
                give_up_after: Duration::from_millis(500),
                ..quick()
            };
            h.run_until(t, Host::settled(&id)).await;
            let log = h.log();
            assert!(log.contains("failed (cannot connect:"), "{log}");
            assert!(log.contains("refused"), "{log}");
            assert!(log.contains("given up after"), "{log}");
            assert!(h.get(&id).callback_attempts >= 2);
        }

        #[tokio::test]
        async fn a_bad_reply_to_is_given_up_at_once_and_others_still_go() {
            let rx = Receiver::start(vec![Answer::Status(204)]).await;
            let h = Host::new();
            let bad = h.finished("ftp://files.example/in", b"r");
            let good = h.finished(&rx.url("/ok"), b"r");
            h.run_until(quick(), |h| {
                h.get(&bad).callback_due.is_none() && h.get(&good).callback_due.is_none()
            })
            .await;
            assert_eq!(h.get(&bad).callback_attempts, 1);
            assert_eq!(h.get(&good).callback_attempts, 1);
            assert_eq!(rx.got().len(), 1);
            let log = h.log();
            assert!(
                log.contains("uses ftp: only http and https callbacks are sent); given up"),
                "{log}"
            );
            assert!(log.contains("delivered (204) on attempt 1"), "{log}");
        }

        #[tokio::test]
        async fn a_callback_still_due_when_the_host_stops_is_sent_after_a_restart() {
            let rx = Receiver::start(vec![Answer::Status(200)]).await;
            let first = Host::new();
            let id = first.finished(&rx.url("/later"), b"r");
            // The host stops before its callback task ran: only the store remembers.
            let Host { dir, .. } = first;
            let again = Host::open(dir);
            assert!(again.get(&id).callback_due.is_some());
            again.run_until(quick(), Host::settled(&id)).await;
            assert_eq!(rx.got().len(), 1);
            assert_eq!(rx.got()[0].header(MESSAGE_ID_HEADER), Some(id.as_str()));
        }

        #[tokio::test]
        async fn without_a_store_the_task_idles_until_cancelled() {
            let queues = Arc::new(Queues::new(Err("no store".into()), "-".into()));
            let cancel = CancellationToken::new();
            let task = tokio::spawn(run_with(queues, TOKEN.into(), cancel.clone(), quick()));
            tokio::task::yield_now().await;
            assert!(!task.is_finished());
            cancel.cancel();
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .unwrap()
                .unwrap();
        }

        fn message_to(url: &str) -> Message {
            Message {
                reply_to: Some(url.into()),
                ..msg()
            }
        }

        #[tokio::test]
        async fn credentials_in_the_url_go_in_an_authorization_header() {
            let rx = Receiver::start(vec![Answer::Status(202)]).await;
            let url = format!("http://hook%20user:p%40ss@{}/in#frag", rx.addr);
            let sender = Sender::new(&quick());
            let out = sender
                .send(TOKEN.as_bytes(), &message_to(&url), b"{}".to_vec())
                .await;
            assert_eq!(out, Outcome::Delivered(202));
            let g = &rx.got()[0];
            assert_eq!(g.target, "POST /in HTTP/1.1");
            let want = base64::engine::general_purpose::STANDARD.encode("hook user:p@ss");
            assert_eq!(
                g.header("authorization"),
                Some(format!("Basic {want}").as_str())
            );
        }

        #[tokio::test]
        async fn https_callbacks_are_attempted_over_tls() {
            // A server that hangs up on the TLS handshake: the attempt fails as a
            // connection failure, not as a refusal to use https.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    drop(sock);
                }
            });
            let sender = Sender::new(&quick());
            let out = sender
                .send(
                    TOKEN.as_bytes(),
                    &message_to(&format!("https://{addr}/tls")),
                    b"{}".to_vec(),
                )
                .await;
            server.abort();
            match out {
                Outcome::Failed(why) => assert!(why.starts_with("cannot connect"), "{why}"),
                other => panic!("{other:?}"),
            }
        }

        #[tokio::test]
        async fn without_ca_certificates_https_fails_with_the_fix_and_http_still_works() {
            let rx = Receiver::start(vec![Answer::Status(200)]).await;
            let sender = Sender::with_roots(
                &quick(),
                rustls::RootCertStore::empty(),
                Some("no CA certificates found on this system".into()),
            );
            let out = sender
                .send(
                    TOKEN.as_bytes(),
                    &message_to("https://hooks.example/x"),
                    b"{}".to_vec(),
                )
                .await;
            assert_eq!(
                out,
                Outcome::Failed("no CA certificates found on this system".into())
            );
            let out = sender
                .send(
                    TOKEN.as_bytes(),
                    &message_to(&rx.url("/plain")),
                    b"{}".to_vec(),
                )
                .await;
            assert_eq!(out, Outcome::Delivered(200));
        }
    }
}
