//! The embedded message store: one SQLite database in WAL mode (`LOGS/queue.db`),
//! shared by the hosts of one machine that share those LOGS.
//!
//! **Durability.** A commit that contains an enqueue runs with `synchronous=FULL`: the
//! WAL is flushed before the enqueue answers, so an acknowledged message survives a
//! crash, a SIGKILL or a power cut. Every other change (claims, settlements, runs,
//! requeues) commits with `synchronous=NORMAL`: in WAL mode a process crash still
//! loses nothing, and a power cut may undo the last of them — which at worst runs a
//! message again or leaves it to be retried, what at-least-once delivery allows.
//!
//! **Throughput.** All writes go through one thread per store ([`writer`]) that
//! commits whatever is waiting as one transaction (group commit); reads use their own
//! connections, which WAL lets run beside the writer.
//!
//! **Several hosts, one file.** Every write transaction is `BEGIN IMMEDIATE` with a
//! busy timeout, so two stores on one file take turns: a message is claimed by
//! exactly one of them. The schema is versioned ([`schema`]).
//!
//! **Memory.** Messages live on disk: each connection's page cache is bounded (2 MB)
//! and nothing indexes messages in memory, so a million queued messages cost disk,
//! not RSS. Listings are paged (`limit`, `before`).

mod fault;
mod rows;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use self::fault::{Failure, describe};
use self::rows::{COLS, NCOLS, fetch, message, ms, span, time};
use self::writer::Writer;
use super::{
    Claimed, Enqueued, Message, MessageState, NewMessage, QueueCounts, QueueStore, Settlement,
    StoreError, new_message_id, policy,
};

pub const FILE_NAME: &str = "queue.db";

/// Read connections kept open between calls.
const IDLE_READERS: usize = 4;

/// Opens (creating or migrating) the store at `path`.
pub fn open(path: &Path) -> Result<Arc<dyn QueueStore>, StoreError> {
    Ok(Arc::new(SqliteStore::open(path)?))
}

/// The store on one file: its writer thread and a few idle read connections.
pub struct SqliteStore {
    path: PathBuf,
    busy: Duration,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, schema::BUSY_TIMEOUT)
    }

    /// `busy`: how long a change waits for another host's transaction before the
    /// store answers [`StoreError::Unavailable`].
    pub fn open_with(path: &Path, busy: Duration) -> Result<SqliteStore, StoreError> {
        let conn = schema::connect(path, busy)?;
        // Hosts opening a new file together: switching it to WAL and creating the
        // tables answer "busy" at once (SQLite's busy handler does not cover them),
        // so the preparation is tried again for a while.
        let deadline = std::time::Instant::now() + busy.min(Duration::from_secs(10));
        loop {
            match schema::prepare(&conn, path) {
                Err(StoreError::Unavailable { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other?,
            }
        }
        Ok(SqliteStore {
            path: path.to_path_buf(),
            busy,
            writer: Writer::start(conn, path)?,
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Write transactions committed so far (group commit shares them).
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Changes handed to the writer so far, and taken by it into a transaction: the
    /// difference is how many wait for the next one.
    pub fn traffic(&self) -> (usize, usize) {
        self.writer.traffic()
    }

    fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.call(false, work)
    }

    fn read<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = schema::connect(&self.path, self.busy)?;
                // A reader never writes: a bug that tried would fail loudly here.
                // Readers run point lookups and index walks: half the writer's cache.
                conn.execute_batch("PRAGMA query_only = 1; PRAGMA cache_size = -1000")
                    .map_err(|e| describe(&self.path, &e))?;
                conn
            }
        };
        let out = work(&conn).map_err(|f| f.into_store(&self.path));
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

fn not_found(job: &str, id: &str) -> Failure {
    Failure::Store(StoreError::not_found(job, id))
}

fn conflict(id: &str, state: MessageState, what: &str) -> Failure {
    Failure::Store(StoreError::conflict(id, state, what))
}

fn must_fetch(conn: &Connection, job: &str, id: &str) -> Result<Message, Failure> {
    fetch(conn, Some(job), id)?.ok_or_else(|| not_found(job, id))
}

/// Inserts `msg` as a new `Queued` message; the message as stored.
fn insert(conn: &Connection, msg: NewMessage, now: DateTime<Utc>) -> rusqlite::Result<Message> {
    let id = new_message_id(now);
    let due = msg.not_before.unwrap_or(now);
    conn.prepare_cached(
        "INSERT INTO messages (id, job, content_type, idempotency_key, correlation_id, name, \
         priority, not_before, reply_to, state, attempts, enqueued_at, due, payload_bytes, payload) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'Queued', 0, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        id,
        msg.job,
        msg.content_type,
        msg.idempotency_key,
        msg.correlation_id,
        msg.name,
        msg.priority,
        msg.not_before.map(ms),
        msg.reply_to,
        ms(now),
        ms(due),
        msg.payload.len() as i64,
        msg.payload,
    ])?;
    Ok(Message {
        id,
        job: msg.job,
        content_type: msg.content_type,
        payload_bytes: msg.payload.len() as u64,
        idempotency_key: msg.idempotency_key,
        correlation_id: msg.correlation_id,
        name: msg.name,
        priority: msg.priority,
        // Stored as milliseconds: answer what a later read will say.
        not_before: msg.not_before.map(|t| time(ms(t))),
        reply_to: msg.reply_to,
        state: MessageState::Queued,
        attempts: 0,
        enqueued_at: time(ms(now)),
        next_attempt_at: Some(time(ms(due))),
        finished_at: None,
        last_error: None,
        result_bytes: None,
        runs: Vec::new(),
        owner: None,
        callback_attempts: 0,
        callback_due: None,
    })
}

fn enqueue_in(
    conn: &Connection,
    msg: NewMessage,
    window: Duration,
    now: DateTime<Utc>,
) -> Result<Enqueued, Failure> {
    let key = msg.idempotency_key.clone();
    if let Some(key) = &key {
        let seen: Option<(String, i64)> = conn
            .prepare_cached("SELECT message_id, seen_at FROM dedupe WHERE job = ?1 AND key = ?2")?
            .query_row(params![msg.job, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((first, seen_at)) = seen
            && policy::remembered(time(seen_at), window, now)
            // A first message deleted since leaves nothing to answer with: store anew.
            && let Some(message) = fetch(conn, Some(&msg.job), &first)?
        {
            return Ok(Enqueued {
                message,
                duplicate: true,
            });
        }
    }
    let message = insert(conn, msg, now)?;
    if let Some(key) = &key {
        conn.prepare_cached(
            "INSERT INTO dedupe (job, key, message_id, seen_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (job, key) DO UPDATE SET message_id = excluded.message_id, \
             seen_at = excluded.seen_at",
        )?
        .execute(params![message.job, key, message.id, ms(now)])?;
    }
    Ok(Enqueued {
        message,
        duplicate: false,
    })
}

/// Due messages in claiming order. The index is named: without statistics SQLite
/// would rather seek by due time and sort every due message for each claim.
fn claim_sql() -> String {
    format!(
        "SELECT {COLS}, payload FROM messages INDEXED BY messages_claim \
         WHERE job = ?1 AND state = 'Queued' AND due <= ?2 \
         ORDER BY priority DESC, due, seq LIMIT ?3"
    )
}

fn claim_in(
    conn: &Connection,
    job: &str,
    owner: &str,
    runs: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<Claimed>, Failure> {
    let found = conn
        .prepare_cached(&claim_sql())?
        .query_map(params![job, ms(now), runs.len() as i64], |r| {
            Ok((message(r)?, r.get::<_, Vec<u8>>(NCOLS)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut update = conn.prepare_cached(
        "UPDATE messages SET state = 'Running', owner = ?2, attempts = attempts + 1, \
         due = NULL, runs = json_insert(runs, '$[#]', ?3) WHERE id = ?1",
    )?;
    let mut claimed = Vec::with_capacity(found.len());
    for ((mut m, payload), run) in found.into_iter().zip(runs) {
        update.execute(params![m.id, owner, run])?;
        m.state = MessageState::Running;
        m.owner = Some(owner.to_string());
        m.attempts = m.attempts.saturating_add(1);
        m.next_attempt_at = None;
        m.runs.push(run.clone());
        claimed.push(Claimed {
            message: m,
            payload,
        });
    }
    Ok(claimed)
}

fn settle_in(
    conn: &Connection,
    id: &str,
    settlement: Settlement,
    now: DateTime<Utc>,
) -> Result<Option<Message>, Failure> {
    let Some(m) = fetch(conn, None, id)? else {
        return Ok(None);
    };
    if m.state != MessageState::Running {
        return Ok(None);
    }
    let now = ms(now);
    let finish = |state: MessageState, result: Option<Vec<u8>>, error: Option<String>| {
        // A callback is owed as soon as a message with a reply_to finishes.
        let callback = match state {
            MessageState::Succeeded | MessageState::Dead => m.reply_to.as_ref().map(|_| now),
            _ => None,
        };
        conn.prepare_cached(
            "UPDATE messages SET state = ?2, finished_at = ?3, result = ?4, last_error = ?5, \
             owner = NULL, due = NULL, callback_due = ?6, callback_attempts = 0 WHERE id = ?1",
        )?
        .execute(params![id, state.as_str(), now, result, error, callback])
    };
    match settlement {
        Settlement::Succeeded { result } => finish(MessageState::Succeeded, result, None)?,
        Settlement::Dead { error, result } => finish(MessageState::Dead, result, Some(error))?,
        Settlement::Cancelled { error } => finish(MessageState::Cancelled, None, Some(error))?,
        Settlement::Retry { at, error } => conn
            .prepare_cached(
                "UPDATE messages SET state = 'Queued', due = ?2, last_error = ?3, owner = NULL \
                 WHERE id = ?1",
            )?
            .execute(params![id, ms(at), error])?,
        // The host stopped it: the attempt does not count.
        Settlement::Released => conn
            .prepare_cached(
                "UPDATE messages SET state = 'Queued', due = ?2, owner = NULL, \
                 attempts = max(attempts - 1, 0) WHERE id = ?1",
            )?
            .execute(params![id, now])?,
    };
    Ok(fetch(conn, None, id)?)
}

/// What sends a finished message back to `Queued`: due now, attempts reset, its
/// result and any callback not yet sent forgotten; `last_error` kept as history.
const REQUEUE: &str = "UPDATE messages SET state = 'Queued', due = ?1, attempts = 0, \
    finished_at = NULL, result = NULL, owner = NULL, callback_due = NULL, \
    callback_attempts = 0";

const NOT_FINISHED: &str = "only a finished (Succeeded, Dead or Cancelled) message can be requeued";

impl QueueStore for SqliteStore {
    fn enqueue(
        &self,
        msg: NewMessage,
        dedupe_window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, StoreError> {
        self.writer
            .call(true, move |c| enqueue_in(c, msg, dedupe_window, now))
    }

    fn claim(
        &self,
        job: &str,
        owner: &str,
        runs: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        // Nothing due is the common answer (every enqueue wakes the job, delayed
        // messages pile up): found on a reader through the due-time index, without
        // the writer, where a claim must walk the queue in priority order.
        let due = self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM messages INDEXED BY messages_next \
                 WHERE job = ?1 AND state = 'Queued' AND due <= ?2)",
            )?
            .query_row(params![job, ms(now)], |r| r.get::<_, bool>(0))?)
        })?;
        if !due {
            return Ok(Vec::new());
        }
        let (job, owner) = (job.to_string(), owner.to_string());
        let runs = runs.to_vec();
        self.write(move |c| claim_in(c, &job, &owner, &runs, now))
    }

    fn replace_run(&self, id: &str, minted: &str, actual: Option<&str>) -> Result<(), StoreError> {
        let (id, minted, actual) = (
            id.to_string(),
            minted.to_string(),
            actual.map(str::to_string),
        );
        // A message deleted meanwhile has no runs to correct.
        self.write(move |c| {
            let Some(mut m) = fetch(c, None, &id)? else {
                return Ok(());
            };
            m.runs = m
                .runs
                .into_iter()
                .filter_map(|r| match r == minted {
                    true => actual.clone(),
                    false => Some(r),
                })
                .collect();
            let runs = serde_json::to_string(&m.runs)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            c.prepare_cached("UPDATE messages SET runs = ?2 WHERE id = ?1")?
                .execute(params![id, runs])?;
            Ok(())
        })
    }

    fn settle(
        &self,
        id: &str,
        settlement: Settlement,
        now: DateTime<Utc>,
    ) -> Result<Option<Message>, StoreError> {
        let id = id.to_string();
        self.write(move |c| settle_in(c, &id, settlement, now))
    }

    fn get(&self, job: &str, id: &str) -> Result<Message, StoreError> {
        self.read(|c| must_fetch(c, job, id))
    }

    fn payload(&self, job: &str, id: &str) -> Result<(Vec<u8>, Option<String>), StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT payload, content_type FROM messages WHERE id = ?1 AND job = ?2",
            )?
            .query_row(params![id, job], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or_else(|| not_found(job, id))
        })
    }

    fn result(&self, job: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT result FROM messages WHERE id = ?1 AND job = ?2")?
                .query_row(params![id, job], |r| r.get(0))
                .optional()?
                .ok_or_else(|| not_found(job, id))
        })
    }

    fn list(
        &self,
        job: &str,
        state: Option<MessageState>,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<Message>, StoreError> {
        // Ids sort by enqueue time, so `before` pages correctly even when the message
        // it names was deleted meanwhile.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let state = state.map(MessageState::as_str);
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&job];
        if let Some(state) = &state {
            args.push(state);
        }
        if let Some(before) = &before {
            args.push(before);
        }
        args.push(&limit);
        let sql = crate::queue::list_sql("messages", COLS, '?', state.is_some(), before.is_some());
        self.read(|c| {
            let found = c
                .prepare_cached(&sql)?
                .query_map(args.as_slice(), message)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(found)
        })
    }

    fn requeue(&self, job: &str, id: &str, now: DateTime<Utc>) -> Result<Message, StoreError> {
        let (job, id) = (job.to_string(), id.to_string());
        self.write(move |c| {
            let m = must_fetch(c, &job, &id)?;
            if !m.state.finished() {
                return Err(conflict(&id, m.state, NOT_FINISHED));
            }
            c.prepare_cached(&format!("{REQUEUE} WHERE id = ?2"))?
                .execute(params![ms(now), id])?;
            must_fetch(c, &job, &id)
        })
    }

    fn requeue_all(
        &self,
        job: &str,
        state: MessageState,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if !state.finished() {
            return Err(StoreError::Conflict {
                id: "*".into(),
                state: state.as_str(),
                what: format!("{NOT_FINISHED}; name Succeeded, Dead or Cancelled"),
            });
        }
        let job = job.to_string();
        self.write(move |c| {
            let n = c
                .prepare_cached(&format!("{REQUEUE} WHERE job = ?2 AND state = ?3"))?
                .execute(params![ms(now), job, state.as_str()])?;
            Ok(n as u64)
        })
    }

    fn cancel(&self, job: &str, id: &str, now: DateTime<Utc>) -> Result<Message, StoreError> {
        let (job, id) = (job.to_string(), id.to_string());
        self.write(move |c| {
            let m = must_fetch(c, &job, &id)?;
            if m.state.finished() {
                return Err(conflict(
                    &id,
                    m.state,
                    "it is already finished; only a Queued or Running message can be cancelled",
                ));
            }
            c.prepare_cached(
                "UPDATE messages SET state = 'Cancelled', finished_at = ?2, \
                 last_error = 'cancelled', owner = NULL, due = NULL WHERE id = ?1",
            )?
            .execute(params![id, ms(now)])?;
            Ok(m)
        })
    }

    fn delete_all(&self, job: &str, state: MessageState) -> Result<u64, StoreError> {
        if state == MessageState::Running {
            return Err(StoreError::Conflict {
                id: "*".into(),
                state: state.as_str(),
                what: "running messages cannot be deleted: cancel them first".into(),
            });
        }
        let job = job.to_string();
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM dedupe WHERE job = ?1 AND message_id IN \
                 (SELECT id FROM messages WHERE job = ?1 AND state = ?2)",
            )?
            .execute(params![job, state.as_str()])?;
            let n = c
                .prepare_cached("DELETE FROM messages WHERE job = ?1 AND state = ?2")?
                .execute(params![job, state.as_str()])?;
            Ok(n as u64)
        })
    }

    fn counts(&self, job: &str, now: DateTime<Utc>) -> Result<QueueCounts, StoreError> {
        self.read(|c| {
            let mut counts = QueueCounts::default();
            let tallies = c
                .prepare_cached("SELECT state, n FROM tallies WHERE job = ?1")?
                .query_map(params![job], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (state, n) in tallies {
                let n = n.max(0) as u64;
                match MessageState::parse(&state) {
                    Some(MessageState::Queued) => counts.queued = n,
                    Some(MessageState::Running) => counts.running = n,
                    Some(MessageState::Succeeded) => counts.succeeded = n,
                    Some(MessageState::Dead) => counts.dead = n,
                    Some(MessageState::Cancelled) => counts.cancelled = n,
                    None => {}
                }
            }
            let oldest: Option<i64> = c
                .prepare_cached(
                    "SELECT min(enqueued_at) FROM messages WHERE job = ?1 AND state = 'Queued'",
                )?
                .query_row(params![job], |r| r.get(0))?;
            counts.oldest_queued_age_s =
                oldest.map(|t| (ms(now).saturating_sub(t).max(0) / 1000) as u64);
            Ok(counts)
        })
    }

    fn next_due(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(|c| {
            let due: Option<i64> = c
                .prepare_cached(
                    "SELECT min(due) FROM messages WHERE job = ?1 AND state = 'Queued'",
                )?
                .query_row(params![job], |r| r.get(0))?;
            Ok(due.map(time))
        })
    }

    fn running(&self, job: &str) -> Result<Vec<Message>, StoreError> {
        self.read(|c| {
            let found = c
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM messages WHERE job = ?1 AND state = 'Running' ORDER BY id"
                ))?
                .query_map(params![job], message)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(found)
        })
    }

    fn sweep(
        &self,
        job: &str,
        retention: Duration,
        dedupe_window: Duration,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let job = job.to_string();
        let now = ms(now);
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM messages WHERE job = ?1 AND finished_at IS NOT NULL \
                     AND finished_at < ?2",
                )?
                .execute(params![job, now.saturating_sub(span(retention))])?;
            // Not remembered once its age reaches the window (policy::remembered).
            c.prepare_cached("DELETE FROM dedupe WHERE job = ?1 AND seen_at <= ?2")?
                .execute(params![job, now.saturating_sub(span(dedupe_window))])?;
            Ok(n as u64)
        })
    }

    fn due_callbacks(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Message>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            let found = c
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM messages WHERE callback_due IS NOT NULL \
                     AND callback_due <= ?1 ORDER BY callback_due, seq LIMIT ?2"
                ))?
                .query_map(params![ms(now), limit], message)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(found)
        })
    }

    fn callback_tried(&self, id: &str, again_at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE messages SET callback_attempts = callback_attempts + 1, \
                 callback_due = ?2 WHERE id = ?1",
            )?
            .execute(params![id, again_at.map(ms)])?;
            Ok(())
        })
    }
}

/// The reference an enqueue benchmark is compared with: `n` messages inserted into a
/// fresh store file at `path`, one durable (`synchronous=FULL`) commit each, from one
/// thread, with none of the store's machinery. Inserts per second.
pub fn bare_insert_rate(path: &Path, n: usize) -> Result<f64, StoreError> {
    let conn = schema::connect(path, schema::BUSY_TIMEOUT)?;
    schema::prepare(&conn, path)?;
    let sql = |e: rusqlite::Error| describe(path, &e);
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    let start = Instant::now();
    for i in 0..n {
        let msg = NewMessage {
            job: "bench".into(),
            payload: format!("message {i}").into_bytes(),
            ..NewMessage::default()
        };
        insert(&conn, msg, Utc::now()).map_err(sql)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests;
