//! Durable message queues, one per triggered job with a `queue` object in its
//! settings (docs/queues.md).
//!
//! The queue lives behind [`QueueStore`], a synchronous, object-safe trait, so that a
//! second implementation (PostgreSQL, for hosts on several machines) can stand beside
//! the embedded one ([`sqlite::SqliteStore`]) without the job tasks or the API
//! knowing which one they talk to. Callers run its methods on the blocking pool: a
//! store call may wait for a disk flush.
//!
//! What a run's end means for its message is decided by the pure [`policy`]; the
//! triggered job's task claims messages, runs them and settles them; [`Queues`] is
//! what the host, the API and the job tasks share: the store (or why it could not be
//! opened), the wake-ups of the job tasks and the stream of message changes.

pub mod callback;
#[cfg(test)]
mod contract;
pub mod inbox;
pub mod liveness;
pub mod policy;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, broadcast};

/// The states of a message (docs/queues.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum MessageState {
    Queued,
    Running,
    Succeeded,
    Dead,
    Cancelled,
}

impl MessageState {
    pub const ALL: [MessageState; 5] = [
        MessageState::Queued,
        MessageState::Running,
        MessageState::Succeeded,
        MessageState::Dead,
        MessageState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "Queued",
            MessageState::Running => "Running",
            MessageState::Succeeded => "Succeeded",
            MessageState::Dead => "Dead",
            MessageState::Cancelled => "Cancelled",
        }
    }

    /// Case-insensitive, as users type it on the command line.
    pub fn parse(s: &str) -> Option<MessageState> {
        MessageState::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }

    /// Succeeded, Dead or Cancelled: nothing more happens to it by itself.
    pub fn finished(self) -> bool {
        matches!(
            self,
            MessageState::Succeeded | MessageState::Dead | MessageState::Cancelled
        )
    }
}

/// A message to store.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub job: String,
    pub payload: Vec<u8>,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    pub name: Option<String>,
    pub priority: i64,
    pub not_before: Option<DateTime<Utc>>,
    pub reply_to: Option<String>,
}

/// A stored message, without its payload and result bytes (see
/// [`QueueStore::payload`] and [`QueueStore::result`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub job: String,
    pub content_type: Option<String>,
    pub payload_bytes: u64,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    pub name: Option<String>,
    pub priority: i64,
    pub not_before: Option<DateTime<Utc>>,
    pub reply_to: Option<String>,
    pub state: MessageState,
    pub attempts: u32,
    pub enqueued_at: DateTime<Utc>,
    /// When a `Queued` message is due (its `not_before`, or its retry time).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub result_bytes: Option<u64>,
    /// Its run ids, oldest first.
    pub runs: Vec<String>,
    /// The host running it (`Running` only): its instance name, or `-`.
    pub owner: Option<String>,
    /// Callback attempts made so far (see [`QueueStore::due_callbacks`]).
    pub callback_attempts: u32,
    /// When the next callback attempt is due; `None` when none is owed.
    pub callback_due: Option<DateTime<Utc>>,
}

/// A message taken for a run: the message (now `Running`, its attempt counted) and
/// its payload.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub message: Message,
    pub payload: Vec<u8>,
}

/// The answer to an enqueue.
#[derive(Debug, Clone)]
pub struct Enqueued {
    /// The message stored, or the first one with the same idempotency key.
    pub message: Message,
    pub duplicate: bool,
}

/// How a message's attempt ended, decided by [`policy::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Succeeded {
        result: Option<Vec<u8>>,
    },
    /// `Queued` again, due at `at`.
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    Dead {
        error: String,
        result: Option<Vec<u8>>,
    },
    /// `Queued` again at once, its attempt not counted (the host stopped it).
    Released,
    /// Cancelled while it ran.
    Cancelled {
        error: String,
    },
}

/// How many messages a job has in each state, and how long the oldest due one waited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Seconds since the oldest `Queued` message was enqueued.
    pub oldest_queued_age_s: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be used at all (corrupt, not a database, newer schema).
    #[error("the message store {path} cannot be used: {reason}; {fix}")]
    Unusable {
        path: PathBuf,
        reason: String,
        fix: String,
    },
    /// The disk is full, the database is locked too long, or I/O failed: try again.
    #[error("the message store {path} is unavailable: {reason}")]
    Unavailable { path: PathBuf, reason: String },
    #[error("no message {id} in the queue of {job}")]
    NotFound { job: String, id: String },
    /// The change does not apply to the message's state (e.g. requeue while Running).
    #[error("message {id} is {state}: {what}")]
    Conflict {
        id: String,
        state: &'static str,
        what: String,
    },
}

impl StoreError {
    pub fn not_found(job: &str, id: &str) -> StoreError {
        StoreError::NotFound {
            job: job.to_string(),
            id: id.to_string(),
        }
    }

    pub fn conflict(id: &str, state: MessageState, what: &str) -> StoreError {
        StoreError::Conflict {
            id: id.to_string(),
            state: state.as_str(),
            what: what.to_string(),
        }
    }
}

/// A durable message store. Synchronous and object safe: callers run it on the
/// blocking pool. Every method that changes a message answers only once the change
/// is committed; `enqueue` only once it is durable on disk.
pub trait QueueStore: Send + Sync {
    /// Stores `msg` (or finds the message with the same idempotency key seen within
    /// `dedupe_window`).
    fn enqueue(
        &self,
        msg: NewMessage,
        dedupe_window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, StoreError>;

    /// Takes up to `runs.len()` due `Queued` messages of `job` (priority, then due
    /// time, then enqueue order), marks them `Running` for `owner`, counts an attempt
    /// and adds to each its run id: `runs[i]` to the `i`-th in that order, which is
    /// the order of the answer. The ids are minted by the caller before the claim, so
    /// that a message's run costs no write of its own; those left over (fewer
    /// messages were due) are simply not used.
    fn claim(
        &self,
        job: &str,
        owner: &str,
        runs: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// The claim gave message `id` the run id `minted`, but its run got the id
    /// `actual` (the minted one was taken meanwhile), or no run started (`None`):
    /// the message's runs say so. Whatever the message's state: a run started just
    /// before a cancel still belongs to its history. Rare, so a write of its own.
    fn replace_run(&self, id: &str, minted: &str, actual: Option<&str>) -> Result<(), StoreError>;

    /// Ends a running message's attempt. `None` when it is no longer `Running` (it
    /// was cancelled or requeued meanwhile).
    fn settle(
        &self,
        id: &str,
        settlement: Settlement,
        now: DateTime<Utc>,
    ) -> Result<Option<Message>, StoreError>;

    /// As [`QueueStore::settle`], but only while `owner` still runs the message. A
    /// store shared by hosts on several machines must check it: a host cut off from
    /// it may come back after its messages were given to others. On one machine a
    /// message changes hands only once its host is gone, so the default does not.
    fn settle_as(
        &self,
        id: &str,
        owner: &str,
        settlement: Settlement,
        now: DateTime<Utc>,
    ) -> Result<Option<Message>, StoreError> {
        let _ = owner;
        self.settle(id, settlement, now)
    }

    /// As [`QueueStore::settle_as`], at the end of a run whose record belongs in the
    /// cluster's history (`run`). A store shared by the cluster adds it in the
    /// settlement's own statement, so a message's run ends in one round trip, and
    /// answers `true`; any other store leaves it to the caller (`false`, the default).
    /// The row is added even when the message is no longer `Running`: the run
    /// happened.
    fn settle_recording(
        &self,
        id: &str,
        owner: &str,
        settlement: Settlement,
        now: DateTime<Utc>,
        run: &crate::cluster::runs::RunRow,
    ) -> Result<(Option<Message>, bool), StoreError> {
        let _ = run;
        Ok((self.settle_as(id, owner, settlement, now)?, false))
    }

    fn get(&self, job: &str, id: &str) -> Result<Message, StoreError>;
    /// The payload bytes and their content type.
    fn payload(&self, job: &str, id: &str) -> Result<(Vec<u8>, Option<String>), StoreError>;
    /// The result bytes (`None`: no result).
    fn result(&self, job: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Newest first, at most `limit`, older than `before` when given.
    fn list(
        &self,
        job: &str,
        state: Option<MessageState>,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<Message>, StoreError>;

    /// A finished message back to `Queued`, due now, its attempts reset.
    fn requeue(&self, job: &str, id: &str, now: DateTime<Utc>) -> Result<Message, StoreError>;
    /// Every message of `state` (a finished one) back to `Queued`; how many.
    fn requeue_all(
        &self,
        job: &str,
        state: MessageState,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Cancels a `Queued` or `Running` message (the caller stops its run); the
    /// message as it was before.
    fn cancel(&self, job: &str, id: &str, now: DateTime<Utc>) -> Result<Message, StoreError>;
    /// Removes every message of `state` (not `Running`); how many.
    fn delete_all(&self, job: &str, state: MessageState) -> Result<u64, StoreError>;

    fn counts(&self, job: &str, now: DateTime<Utc>) -> Result<QueueCounts, StoreError>;
    /// When the earliest `Queued` message of `job` that is not due yet is due.
    fn next_due(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// The `Running` messages of `job` and who runs them.
    fn running(&self, job: &str) -> Result<Vec<Message>, StoreError>;

    /// Removes `job`'s finished messages older than `retention` and forgets its
    /// idempotency keys older than `dedupe_window`; how many messages went.
    fn sweep(
        &self,
        job: &str,
        retention: Duration,
        dedupe_window: Duration,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Finished messages with a `reply_to` whose callback is due (oldest first).
    /// A message settled `Succeeded` or `Dead` with a `reply_to` gets its callback
    /// due at once; requeueing it clears a callback not yet sent.
    fn due_callbacks(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// The end of one callback attempt: `None` when it is done (delivered, or given
    /// up), else when to try again. Counts the attempt.
    fn callback_tried(&self, id: &str, again_at: Option<DateTime<Utc>>) -> Result<(), StoreError>;
}

/// A change of one message's state, for `GET /api/events`, `?wait` and callbacks.
#[derive(Debug, Clone, Serialize)]
pub struct MessageChange {
    pub job: String,
    pub id: String,
    pub state: MessageState,
    pub attempts: u32,
}

/// What the host, the API and the job tasks share about queues.
pub struct Queues {
    store: Result<Arc<dyn QueueStore>, String>,
    changes: broadcast::Sender<MessageChange>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Each queue job's task: where to ask it to stop a message's run, and its
    /// scheduler log (callbacks and the inbox write their lines there).
    jobs: Mutex<HashMap<String, JobLink>>,
    /// Notified when a callback may be due.
    pub callbacks_due: Notify,
    /// Counts the messages this host stores (`None` in tests).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Whether the owner of a running message is gone.
    liveness: Arc<dyn liveness::Liveness>,
    /// This host's name in `owner` columns: its instance name, or `-`.
    pub owner: String,
}

impl Queues {
    /// `store`: the opened store, or why it could not be opened (every queue job
    /// shows it as its error).
    pub fn new(store: Result<Arc<dyn QueueStore>, String>, owner: String) -> Queues {
        Queues {
            store,
            changes: broadcast::channel(4096).0,
            wakers: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
            callbacks_due: Notify::new(),
            metrics: None,
            liveness: Arc::new(liveness::LockFiles {
                logs: PathBuf::new(),
                me: (owner != "-").then(|| owner.clone()),
            }),
            owner,
        }
    }

    /// The embedded store in LOGS (docs/queues.md), or why it cannot be used; a
    /// store that cannot be opened fails the queue jobs only.
    pub fn open(layout: &crate::layout::LogsLayout, instance: Option<&str>) -> Queues {
        let path = layout.root.join(sqlite::FILE_NAME);
        let store = sqlite::open(&path).map_err(|e| {
            tracing::error!("{e}");
            e.to_string()
        });
        Queues::new(store, instance.unwrap_or("-").to_string()).with_liveness(Arc::new(
            liveness::LockFiles {
                logs: layout.root.clone(),
                me: instance.map(str::to_string),
            },
        ))
    }

    /// Tells gone owners of running messages by `liveness`.
    pub fn with_liveness(mut self, liveness: Arc<dyn liveness::Liveness>) -> Queues {
        self.liveness = liveness;
        self
    }

    pub fn liveness(&self) -> Arc<dyn liveness::Liveness> {
        self.liveness.clone()
    }

    /// Counts stored messages in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Queues {
        self.metrics = Some(metrics);
        self
    }

    /// A new message was stored (not a duplicate): it is announced, counted, and
    /// its job's task woken.
    pub fn stored(&self, m: &Message) {
        self.changed(m);
        if let Some(metrics) = &self.metrics {
            metrics.message_enqueued(&m.job);
        }
        self.wake(&m.job);
    }

    /// The store, or why there is none.
    pub fn store(&self) -> Result<Arc<dyn QueueStore>, String> {
        self.store.clone()
    }

    /// The wake-up of `job`'s task: notified when a message may be due.
    pub fn waker(&self, job: &str) -> Arc<Notify> {
        lock(&self.wakers)
            .entry(job.to_string())
            .or_default()
            .clone()
    }

    pub fn wake(&self, job: &str) {
        self.waker(job).notify_one();
    }

    /// Wakes every queue job's task (after a lost connection to a shared store,
    /// when any message may have become due unannounced).
    pub fn wake_all(&self) {
        for w in lock(&self.wakers).values() {
            w.notify_one();
        }
    }

    pub fn changed(&self, m: &Message) {
        let _ = self.changes.send(MessageChange {
            job: m.job.clone(),
            id: m.id.clone(),
            state: m.state,
            attempts: m.attempts,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<MessageChange> {
        self.changes.subscribe()
    }

    /// Called by a queue job's task while it runs.
    pub fn link(&self, job: &str, link: JobLink) {
        lock(&self.jobs).insert(job.to_string(), link);
    }

    pub fn unlink(&self, job: &str) {
        lock(&self.jobs).remove(job);
    }

    /// Asks `job`'s task to stop the run of message `id` (it was cancelled).
    pub fn stop_run(&self, job: &str, id: &str) {
        if let Some(link) = lock(&self.jobs).get(job) {
            let _ = link.stop.send(id.to_string());
        }
    }

    /// A line in `job`'s scheduler log (`job_scheduler.log`), or in the host log when
    /// the job has no task on this host.
    pub fn sched_note(&self, job: &str, error: bool, text: &str) {
        let sink = lock(&self.jobs).get(job).map(|l| l.sched_log.clone());
        match sink {
            Some(sink) => crate::logsink::note(&sink, "000000", error, text),
            None if error => tracing::warn!(job = %job, "{text}"),
            None => tracing::info!(job = %job, "{text}"),
        }
    }
}

/// What [`Queues`] keeps of a queue job's task.
pub struct JobLink {
    pub stop: tokio::sync::mpsc::UnboundedSender<String>,
    pub sched_log: Arc<Mutex<crate::logsink::LogSink>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A page of a listing for a store's SQL: `job`, then `state` and `before` when
/// `filtered`/`paged`, then the limit, numbered parameters written `{mark}N` (`?` for
/// SQLite, `$` for PostgreSQL). One statement per shape: a condition like
/// `(?2 IS NULL OR state = ?2)` would keep the database from seeking in its index.
pub(crate) fn list_sql(table: &str, cols: &str, mark: char, filtered: bool, paged: bool) -> String {
    let mut sql = format!("SELECT {cols} FROM {table} WHERE job = {mark}1");
    let mut n = 1;
    if filtered {
        n += 1;
        sql.push_str(&format!(" AND state = {mark}{n}"));
    }
    if paged {
        n += 1;
        sql.push_str(&format!(" AND id < {mark}{n}"));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {mark}{}", n + 1));
    sql
}

/// Message ids: 12 hex digits of milliseconds since the epoch, 4 of a per-process
/// sequence and 6 random ones, so ids sort by enqueue time and never repeat, even
/// between hosts sharing a store.
pub fn new_message_id(now: DateTime<Utc>) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let ms = now.timestamp_millis().max(0) as u64;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) & 0xffff;
    format!(
        "{:012x}{:04x}{}",
        ms & 0xffff_ffff_ffff,
        seq,
        crate::ids::random_hex(6)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_in_any_case_and_round_trip() {
        for s in MessageState::ALL {
            assert_eq!(MessageState::parse(s.as_str()), Some(s));
            assert_eq!(MessageState::parse(&s.as_str().to_lowercase()), Some(s));
        }
        assert_eq!(MessageState::parse("Finished"), None);
    }

    #[test]
    fn ids_sort_by_time_and_differ() {
        let t = Utc::now();
        let a = new_message_id(t);
        let b = new_message_id(t + chrono::Duration::milliseconds(1));
        assert_eq!(a.len(), 22);
        assert!(a < b);
        assert_ne!(new_message_id(t), new_message_id(t));
    }
}
