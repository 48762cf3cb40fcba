//! `GET /api/events` (docs/dashboard.md#live-events): server-sent events of job and
//! run state changes, for the dashboard (and any client) to stay current without
//! polling.
//!
//! Built on what the API already reads, without touching the job tasks: each job's
//! `watch::Receiver` says "something changed" (a small forwarder task per job turns
//! that into a ping), and a one-second look at the registry notices jobs added,
//! removed, replaced or rescanned (new `settings.job`, `disable.job`). One hub per
//! router keeps the last JSON of every job and publishes only real differences, so
//! a continuous job writing its log (which changes its status's byte counters) sends
//! nothing.
//!
//! Events (each `data` is one JSON object):
//! - `snapshot` `{"jobs": [...]}`: every job, first on a new stream (and after `reset`);
//! - `job`: one job object, as `GET /api/webjobs` lists it, when it changed;
//! - `run` `{"job", "running", "run"}`: a triggered job's run started or ended
//!   (`run` is its latest run object);
//! - `removed` `{"name", "type"}`: the job is gone;
//! - `message` `{"job", "id", "state", "attempts"}`: a queue message changed state
//!   (docs/queues.md);
//! - `reset` `{"message"}`: the client's `Last-Event-ID` is older than the ring (or
//!   from another start of the host): a fresh `snapshot` follows.
//!
//! Ids are a sequence that starts at the host's start time in ms × 1000, so ids keep
//! growing across restarts and an id from an earlier start is never mistaken for one
//! of this start. The last [`RING`] events are kept in memory: a client that
//! reconnects with `Last-Event-ID` gets exactly the events after it, else `reset`.
//! A comment every 15 s keeps idle connections (and proxies) open.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{MethodRouter, get};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;

use super::ApiState;
use super::dto::{self, Base};
use crate::job::{JobCommand, JobView};
use crate::scan::JobDefinition;
use crate::spec::JobType;

/// Events kept for `Last-Event-ID` resumption.
pub const RING: usize = 1024;
/// Keep-alive comment period.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often the registry is looked at for added and removed jobs.
const RESCAN: Duration = Duration::from_secs(1);

type Key = (JobType, String);

/// One published event.
#[derive(Debug)]
struct Published {
    id: u64,
    kind: &'static str,
    data: String,
}

/// What the hub last published about one job.
struct Tracked {
    /// The job task's command channel: a different one means a new task (the job was
    /// removed and deployed again), whose status channel needs a new forwarder.
    tx: mpsc::UnboundedSender<JobCommand>,
    def: Arc<JobDefinition>,
    json: String,
    /// `running` and the latest run, for run events.
    run: String,
    forwarder: AbortHandle,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

struct Inner {
    /// The id of the last event published (or the starting point).
    last: u64,
    ring: VecDeque<Arc<Published>>,
    jobs: BTreeMap<Key, Tracked>,
}

/// The events of one router.
pub struct Hub {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Published>>,
    pings: OnceLock<mpsc::UnboundedSender<Key>>,
    /// Held while the first look at the registry is made.
    starting: Mutex<()>,
}

/// The `GET /api/events` handler, with its hub.
pub fn route() -> MethodRouter<ApiState> {
    let hub = Arc::new(Hub::new());
    get(move |State(st): State<ApiState>, headers: HeaderMap| {
        let hub = hub.clone();
        async move { subscribe(hub, st, headers) }
    })
}

impl Hub {
    fn new() -> Hub {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Hub {
            inner: Mutex::new(Inner {
                last: start.saturating_mul(1000),
                ring: VecDeque::with_capacity(RING),
                jobs: BTreeMap::new(),
            }),
            tx: broadcast::channel(RING).0,
            pings: OnceLock::new(),
            starting: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the watching loop on first use; the first look at the registry happens
    /// here, so the first subscriber's snapshot already lists every job.
    fn ensure_started(self: &Arc<Self>, st: &ApiState) {
        if self.pings.get().is_some() {
            return;
        }
        // A second request waits here until the first look is done.
        let _starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        let (ping_tx, ping_rx) = mpsc::unbounded_channel();
        if self.pings.set(ping_tx).is_err() {
            return; // another request started it
        }
        // Subscribed before the first snapshot goes out, so no message change after
        // it is missed.
        let messages = st.0.queues.subscribe();
        self.sync(st, None);
        let (hub, st) = (Arc::downgrade(self), st.clone());
        tokio::spawn(watch_loop(hub, st, ping_rx, messages));
    }

    /// Compares the registry with what was published and publishes the differences.
    /// `dirty`: the jobs whose status channel fired (`None`: all of them).
    fn sync(&self, st: &ApiState, dirty: Option<&BTreeSet<Key>>) {
        let Some(pings) = self.pings.get() else {
            return;
        };
        let base = base_of(st);
        let entries: Vec<_> =
            st.0.registry
                .entries()
                .into_iter()
                .map(|e| (e.def.key(), e))
                .collect();
        let mut inner = self.lock();
        let present: BTreeSet<&Key> = entries.iter().map(|(k, _)| k).collect();
        let gone: Vec<Key> = inner
            .jobs
            .keys()
            .filter(|k| !present.contains(k))
            .cloned()
            .collect();
        for key in gone {
            inner.jobs.remove(&key);
            let data = json!({ "name": key.1, "type": key.0.as_str() }).to_string();
            self.publish(&mut inner, "removed", data);
        }
        for (key, e) in entries {
            let known = inner.jobs.get(&key);
            let same_task = known.is_some_and(|t| t.tx.same_channel(&e.handle.tx));
            let same_def = known.is_some_and(|t| Arc::ptr_eq(&t.def, &e.def));
            let fired = dirty.is_none_or(|d| d.contains(&key));
            if same_task && same_def && !fired {
                continue;
            }
            let (job, run) = render(&base, &e.def, &e.handle.view);
            let job_text = job.to_string();
            let run_text = run.as_ref().map(|r| r.to_string()).unwrap_or_default();
            let (job_changed, run_changed) = match inner.jobs.get(&key) {
                Some(t) => (t.json != job_text, t.run != run_text),
                None => (true, false),
            };
            if !same_task {
                let forwarder = forward(key.clone(), &e.handle.view, pings.clone());
                inner.jobs.insert(
                    key.clone(),
                    Tracked {
                        tx: e.handle.tx.clone(),
                        def: e.def.clone(),
                        json: String::new(),
                        run: String::new(),
                        forwarder,
                    },
                );
            }
            if let Some(t) = inner.jobs.get_mut(&key) {
                t.def = e.def.clone();
                t.json = job_text.clone();
                t.run = run_text;
            }
            if job_changed {
                self.publish(&mut inner, "job", job_text);
            }
            if run_changed && let Some(run) = run {
                self.publish(&mut inner, "run", run.to_string());
            }
        }
    }

    fn publish(&self, inner: &mut Inner, kind: &'static str, data: String) {
        inner.last += 1;
        let ev = Arc::new(Published {
            id: inner.last,
            kind,
            data,
        });
        if inner.ring.len() == RING {
            inner.ring.pop_front();
        }
        inner.ring.push_back(ev.clone());
        // No subscriber is not an error.
        let _ = self.tx.send(ev);
    }
}

/// The job object and, for a triggered job, its run state.
fn render(
    base: &Base,
    def: &JobDefinition,
    view: &JobView,
) -> (serde_json::Value, Option<serde_json::Value>) {
    match view {
        JobView::Continuous(rx) => (
            serde_json::to_value(dto::continuous(base, def, &rx.borrow())).unwrap_or_default(),
            None,
        ),
        JobView::Triggered(rx) => {
            let s = rx.borrow();
            let job = serde_json::to_value(dto::triggered(base, def, &s)).unwrap_or_default();
            let run = json!({
                "job": def.name,
                "running": s.running,
                "run": s.latest_run.as_ref().map(|r| dto::run(base, r)),
            });
            (job, Some(run))
        }
    }
}

/// URLs in events cannot follow each client's `Host`: they use the listen address.
fn base_of(st: &ApiState) -> Base {
    Base(format!("http://{}", super::guard::default_host(st.0.bound)))
}

/// A task that pings the hub whenever this job's status changes; it ends when the
/// job task goes (the hub's next look then sees the job removed or replaced).
fn forward(key: Key, view: &JobView, pings: mpsc::UnboundedSender<Key>) -> AbortHandle {
    async fn each<T: Send + Sync + 'static>(
        mut rx: tokio::sync::watch::Receiver<T>,
        key: Key,
        pings: mpsc::UnboundedSender<Key>,
    ) {
        while rx.changed().await.is_ok() {
            if pings.send(key.clone()).is_err() {
                return;
            }
        }
        let _ = pings.send(key);
    }
    match view {
        JobView::Continuous(rx) => tokio::spawn(each(rx.clone(), key, pings)).abort_handle(),
        JobView::Triggered(rx) => tokio::spawn(each(rx.clone(), key, pings)).abort_handle(),
    }
}

async fn watch_loop(
    hub: std::sync::Weak<Hub>,
    st: ApiState,
    mut pings: mpsc::UnboundedReceiver<Key>,
    mut messages: broadcast::Receiver<crate::queue::MessageChange>,
) {
    let mut tick = tokio::time::interval(RESCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut dirty = BTreeSet::new();
        tokio::select! {
            _ = st.0.cancel.cancelled() => return,
            _ = tick.tick() => {}
            Some(key) = pings.recv() => { dirty.insert(key); }
            change = messages.recv() => {
                let Some(hub) = hub.upgrade() else { return };
                let mut inner = hub.lock();
                // A burst of changes is published in one go.
                let mut next = change.ok();
                while let Some(c) = next {
                    match serde_json::to_string(&c) {
                        Ok(data) => hub.publish(&mut inner, "message", data),
                        Err(e) => tracing::warn!("message event: {e}"),
                    }
                    next = messages.try_recv().ok();
                }
                continue;
            }
        }
        // Many changes at once (a burst of runs) make one pass.
        while let Ok(key) = pings.try_recv() {
            dirty.insert(key);
        }
        let Some(hub) = hub.upgrade() else { return };
        hub.sync(&st, Some(&dirty));
    }
}

/// What a new stream starts with.
enum Opening {
    Snapshot,
    Replay(Vec<Arc<Published>>),
    Reset,
}

fn subscribe(
    hub: Arc<Hub>,
    st: ApiState,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    hub.ensure_started(&st);
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>().ok());
    let (opening, rx, snapshot) = {
        let inner = hub.lock();
        // Subscribed under the lock: nothing published between the opening and the
        // first live event is lost or repeated.
        let rx = hub.tx.subscribe();
        let opening = match resume {
            None => Opening::Snapshot,
            Some(Some(id)) if id == inner.last => Opening::Replay(Vec::new()),
            Some(Some(id))
                if id < inner.last && inner.ring.front().is_some_and(|f| f.id <= id + 1) =>
            {
                Opening::Replay(inner.ring.iter().filter(|e| e.id > id).cloned().collect())
            }
            Some(_) => Opening::Reset,
        };
        (opening, rx, snapshot_of(&inner))
    };
    let first: Vec<Event> = match opening {
        Opening::Snapshot => vec![snapshot],
        Opening::Replay(list) => list.iter().map(|e| to_event(e)).collect(),
        Opening::Reset => vec![reset_event(), snapshot],
    };
    let live = futures_util::stream::unfold((hub, rx), |(hub, mut rx)| async move {
        let items = match rx.recv().await {
            Ok(ev) => vec![to_event(&ev)],
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow a reader: start it again from the current state.
                let inner = hub.lock();
                rx = hub.tx.subscribe();
                vec![reset_event(), snapshot_of(&inner)]
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((futures_util::stream::iter(items), (hub, rx)))
    });
    let cancel = st.0.cancel.clone();
    let stream = futures_util::StreamExt::take_until(
        futures_util::StreamExt::chain(
            futures_util::stream::iter(first),
            futures_util::StreamExt::flatten(live),
        ),
        async move { cancel.cancelled().await },
    );
    Sse::new(futures_util::StreamExt::map(stream, Ok))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

fn to_event(e: &Published) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event(e.kind)
        .data(&e.data)
}

fn snapshot_of(inner: &Inner) -> Event {
    let jobs: Vec<&str> = inner.jobs.values().map(|t| t.json.as_str()).collect();
    Event::default()
        .id(inner.last.to_string())
        .event("snapshot")
        .data(format!("{{\"jobs\":[{}]}}", jobs.join(",")))
}

fn reset_event() -> Event {
    Event::default().event("reset").data(
        json!({ "message": "the events after your Last-Event-ID are no longer kept (or come from an earlier start of the host): a fresh snapshot follows; reload your state from it" })
            .to_string(),
    )
}
