//! Between a `jobhost_messages` row and a [`Message`]: the column list every query
//! selects and its decoding. Times are `timestamptz` (microseconds): what a change
//! answers is read back from the row it wrote (`RETURNING`), so it always equals
//! what a later read says.

use chrono::{DateTime, Utc};
use postgres::Row;

use super::Failure;
use crate::queue::{Message, MessageState};

/// The columns [`message`] reads, in its order; a query may select more after them.
/// `octet_length(result)` reads the stored size, not the bytes.
pub const COLS: &str = "id, job, content_type, payload_bytes, idempotency_key, \
    correlation_id, name, priority, not_before, reply_to, state, attempts, enqueued_at, \
    due, finished_at, last_error, octet_length(result)::bigint, runs, owner, \
    callback_attempts, callback_due";

/// How many columns [`COLS`] has.
pub const NCOLS: usize = 21;

pub fn message(r: &Row) -> Result<Message, Failure> {
    let state: String = r.try_get(10)?;
    // The table's CHECK keeps other states out; a newer jobhost could add one.
    let state = MessageState::parse(&state)
        .ok_or_else(|| Failure::Bad(format!("a message has the unknown state {state:?}")))?;
    let count = |i: usize| -> Result<u32, Failure> { Ok(r.try_get::<_, i32>(i)?.max(0) as u32) };
    Ok(Message {
        id: r.try_get(0)?,
        job: r.try_get(1)?,
        content_type: r.try_get(2)?,
        payload_bytes: r.try_get::<_, i64>(3)?.max(0) as u64,
        idempotency_key: r.try_get(4)?,
        correlation_id: r.try_get(5)?,
        name: r.try_get(6)?,
        priority: r.try_get(7)?,
        not_before: r.try_get::<_, Option<DateTime<Utc>>>(8)?,
        reply_to: r.try_get(9)?,
        state,
        attempts: count(11)?,
        enqueued_at: r.try_get(12)?,
        next_attempt_at: r.try_get(13)?,
        finished_at: r.try_get(14)?,
        last_error: r.try_get(15)?,
        result_bytes: r.try_get::<_, Option<i64>>(16)?.map(|n| n.max(0) as u64),
        runs: r.try_get(17)?,
        owner: r.try_get(18)?,
        callback_attempts: count(19)?,
        callback_due: r.try_get(20)?,
    })
}
