//! Between a `messages` row and a [`Message`]: the column list every query selects,
//! the decoding, and times as integer milliseconds since the epoch (UTC), the form
//! they are stored and compared in.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::queue::{Message, MessageState};

/// The columns [`message`] reads, in its order. `length(result)` reads the blob's
/// size from the record header, not the blob.
pub const COLS: &str = "id, job, content_type, payload_bytes, idempotency_key, \
    correlation_id, name, priority, not_before, reply_to, state, attempts, enqueued_at, \
    due, finished_at, last_error, length(result), runs, owner, callback_attempts, \
    callback_due";

/// How many columns [`COLS`] has: a query may select more after them.
pub const NCOLS: usize = 21;

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// `d` in milliseconds; a duration too long to count is "forever".
pub fn span(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn bad(col: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, Type::Text, what.into())
}

pub fn message(r: &Row) -> rusqlite::Result<Message> {
    let state: String = r.get(10)?;
    let state = MessageState::parse(&state)
        .ok_or_else(|| bad(10, format!("unknown message state {state:?}")))?;
    let runs: String = r.get(17)?;
    let runs: Vec<String> = serde_json::from_str(&runs)
        .map_err(|e| bad(17, format!("runs is not a JSON list of strings ({e})")))?;
    let opt_time = |i: usize| r.get::<_, Option<i64>>(i).map(|t| t.map(time));
    Ok(Message {
        id: r.get(0)?,
        job: r.get(1)?,
        content_type: r.get(2)?,
        payload_bytes: r.get::<_, i64>(3)?.max(0) as u64,
        idempotency_key: r.get(4)?,
        correlation_id: r.get(5)?,
        name: r.get(6)?,
        priority: r.get(7)?,
        not_before: opt_time(8)?,
        reply_to: r.get(9)?,
        state,
        attempts: r.get::<_, i64>(11)?.clamp(0, u32::MAX as i64) as u32,
        enqueued_at: time(r.get(12)?),
        next_attempt_at: opt_time(13)?,
        finished_at: opt_time(14)?,
        last_error: r.get(15)?,
        result_bytes: r.get::<_, Option<i64>>(16)?.map(|n| n.max(0) as u64),
        runs,
        owner: r.get(18)?,
        callback_attempts: r.get::<_, i64>(19)?.clamp(0, u32::MAX as i64) as u32,
        callback_due: opt_time(20)?,
    })
}

/// Message `id`, of `job` when given (an id of another job's queue is not found).
pub fn fetch(conn: &Connection, job: Option<&str>, id: &str) -> rusqlite::Result<Option<Message>> {
    match job {
        Some(job) => conn
            .prepare_cached(&format!(
                "SELECT {COLS} FROM messages WHERE id = ?1 AND job = ?2"
            ))?
            .query_row(params![id, job], message)
            .optional(),
        None => conn
            .prepare_cached(&format!("SELECT {COLS} FROM messages WHERE id = ?1"))?
            .query_row(params![id], message)
            .optional(),
    }
}
