//! The cluster's message store: the queues in PostgreSQL (`jobhost_messages`), shared
//! by every host started with the same store, with the semantics of the embedded
//! store (`queue::sqlite`), which the shared contract tests pin for both.
//!
//! **Claims** take due messages with `FOR UPDATE SKIP LOCKED` in one statement, so
//! hosts claiming at once never wait for each other and never get the same message.
//! **Round trips**: every change is one statement (one round trip on a connection
//! that prepared it before), committed on its own; a message's run costs two: its
//! claim, which also adds the run id the caller minted for it, and its settlement,
//! which also adds the run's record to the cluster's history (`cluster::runs`) and
//! trims it. Only rare paths add one: a minted run id that its run could not take
//! ([`QueueStore::replace_run`]). An enqueue whose idempotency key was seen before
//! takes a transaction (four or five).
//! **Durability**: a change answers once PostgreSQL committed it (its default
//! `synchronous_commit`); PostgreSQL groups concurrent commits itself.
//! **Wake-ups**: a trigger sends the job's name on `jobhost_queue` whenever one of its
//! messages becomes `Queued` and due now (enqueued, released, requeued), for
//! `cluster::listen`.
//! **Time**: message times (`enqueued_at`, due times, `finished_at`) are the `now`
//! the caller passes, as for the embedded store, so hosts' clocks are expected to
//! agree within a second (NTP); who is alive is judged by the database's clock
//! (`cluster::hosts`), and a dead host's messages are given back by the job tasks'
//! sweep (`queue::liveness`), or for all jobs at once by [`PgStore::expire_owners`].

mod rows;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::types::ToSql;

use self::rows::{COLS, NCOLS, message};
use super::{
    Claimed, Enqueued, Message, MessageState, NewMessage, QueueCounts, QueueStore, Settlement,
    StoreError, new_message_id, policy,
};
use crate::cluster::pg::{Conn, describe};
use crate::cluster::runs::{self, RunRow};
use crate::cluster::{self, ClusterError, Pool};

/// Opens the store at `url` (connecting, creating or migrating its tables).
pub fn open(url: &str) -> Result<Arc<dyn QueueStore>, StoreError> {
    Ok(Arc::new(PgStore::open(url)?))
}

/// How a store call ended when it did not answer.
#[derive(Debug)]
pub enum Failure {
    /// The change does not apply (unknown message, wrong state): nothing changed.
    Store(StoreError),
    Sql(postgres::Error),
    Cluster(ClusterError),
    /// A row this build cannot read.
    Bad(String),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<ClusterError> for Failure {
    fn from(e: ClusterError) -> Self {
        Failure::Cluster(e)
    }
}

/// The store error for `e`, about the store at `url` (shown without password).
pub fn store_error(url: &str, e: ClusterError) -> StoreError {
    let path = PathBuf::from(url);
    match e {
        ClusterError::Unusable { reason, fix, .. } | ClusterError::BadUrl { reason, fix, .. } => {
            StoreError::Unusable { path, reason, fix }
        }
        ClusterError::Connect { reason, fix, .. } => StoreError::Unavailable {
            path,
            reason: format!("cannot connect ({reason}); {fix}"),
        },
        ClusterError::Unavailable { reason, .. } => StoreError::Unavailable { path, reason },
    }
}

impl Failure {
    fn into_store(self, url: &str) -> StoreError {
        match self {
            Failure::Store(e) => e,
            Failure::Sql(e) => StoreError::Unavailable {
                path: PathBuf::from(url),
                reason: describe(&e),
            },
            Failure::Cluster(e) => store_error(url, e),
            Failure::Bad(reason) => StoreError::Unusable {
                path: PathBuf::from(url),
                reason,
                fix:
                    "upgrade jobhost on this host to the version the other hosts of the cluster run"
                        .into(),
            },
        }
    }
}

fn not_found(job: &str, id: &str) -> Failure {
    Failure::Store(StoreError::not_found(job, id))
}

fn conflict(id: &str, state: MessageState, what: &str) -> Failure {
    Failure::Store(StoreError::conflict(id, state, what))
}

const NOT_FINISHED: &str = "only a finished (Succeeded, Dead or Cancelled) message can be requeued";

const INSERT_COLS: &str = "id, job, content_type, idempotency_key, correlation_id, name, \
    priority, not_before, reply_to, state, attempts, enqueued_at, due, payload_bytes, payload";

fn insert_sql() -> String {
    format!(
        "INSERT INTO jobhost_messages ({INSERT_COLS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'Queued', 0, $10, $11, $12, $13) RETURNING {COLS}"
    )
}

/// The message inserted only if its key is new: one statement, so a first keyed
/// enqueue costs one round trip and two hosts with the same key cannot both store.
fn insert_keyed_sql() -> String {
    format!(
        "WITH d AS (INSERT INTO jobhost_dedupe (job, key, message_id, seen_at) \
             VALUES ($2, $4, $1, $10) ON CONFLICT (job, key) DO NOTHING RETURNING 1) \
         INSERT INTO jobhost_messages ({INSERT_COLS}) \
         SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bigint, \
             $8::timestamptz, $9::text, 'Queued', 0, $10::timestamptz, $11::timestamptz, \
             $12::bigint, $13::bytea FROM d RETURNING {COLS}"
    )
}

fn fetch(conn: &mut Conn, job: Option<&str>, id: &str) -> Result<Option<Message>, Failure> {
    let row = match job {
        Some(job) => conn.query_opt(
            &format!("SELECT {COLS} FROM jobhost_messages WHERE id = $1 AND job = $2"),
            &[&id, &job],
        )?,
        None => conn.query_opt(
            &format!("SELECT {COLS} FROM jobhost_messages WHERE id = $1"),
            &[&id],
        )?,
    };
    row.as_ref().map(message).transpose()
}

fn must_fetch(conn: &mut Conn, job: &str, id: &str) -> Result<Message, Failure> {
    fetch(conn, Some(job), id)?.ok_or_else(|| not_found(job, id))
}

fn enqueue_in(
    conn: &mut Conn,
    msg: NewMessage,
    window: Duration,
    now: DateTime<Utc>,
) -> Result<Enqueued, Failure> {
    let id = new_message_id(now);
    let due = msg.not_before.unwrap_or(now);
    let bytes = msg.payload.len() as i64;
    let params: [&(dyn ToSql + Sync); 13] = [
        &id,
        &msg.job,
        &msg.content_type,
        &msg.idempotency_key,
        &msg.correlation_id,
        &msg.name,
        &msg.priority,
        &msg.not_before,
        &msg.reply_to,
        &now,
        &due,
        &bytes,
        &msg.payload,
    ];
    let fresh = |row: &postgres::Row| -> Result<Enqueued, Failure> {
        Ok(Enqueued {
            message: message(row)?,
            duplicate: false,
        })
    };
    let Some(key) = &msg.idempotency_key else {
        return fresh(&conn.query_one(&insert_sql(), &params)?);
    };
    if let Some(row) = conn.query_opt(&insert_keyed_sql(), &params)? {
        return fresh(&row);
    }
    // The key is known (or was a moment ago): decide under its row's lock, so a
    // host storing the same key meanwhile waits for this decision.
    conn.transaction(|conn| {
        let seen = conn.query_opt(
            "SELECT message_id, seen_at FROM jobhost_dedupe WHERE job = $1 AND key = $2 \
             FOR UPDATE",
            &[&msg.job, key],
        )?;
        if let Some(row) = seen {
            let (first, seen_at): (String, DateTime<Utc>) = (row.try_get(0)?, row.try_get(1)?);
            if policy::remembered(seen_at, window, now)
                // A first message deleted since leaves nothing to answer with: store anew.
                && let Some(message) = fetch(conn, Some(&msg.job), &first)?
            {
                return Ok(Enqueued {
                    message,
                    duplicate: true,
                });
            }
        }
        let stored = fresh(&conn.query_one(&insert_sql(), &params)?)?;
        conn.execute(
            "INSERT INTO jobhost_dedupe (job, key, message_id, seen_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job, key) DO UPDATE SET message_id = excluded.message_id, \
             seen_at = excluded.seen_at",
            &[&msg.job, key, &id, &now],
        )?;
        Ok(stored)
    })
}

/// Due messages of one job in claiming order, taken, marked and given their run ids
/// (`$4`, one per message, in claiming order) in one statement. Each row's place in
/// claiming order (`n`, from 1) comes back so the answer can be put in that order
/// (`RETURNING` keeps none); it is numbered after the rows are locked, as PostgreSQL
/// takes no `FOR UPDATE` beside a window function.
fn claim_sql() -> String {
    format!(
        "WITH picked AS (SELECT seq AS pseq, due AS was_due, priority AS prio \
             FROM jobhost_messages WHERE job = $1 AND state = 'Queued' AND due <= $3 \
             ORDER BY priority DESC, due, seq LIMIT cardinality($4::text[]) \
             FOR UPDATE SKIP LOCKED), \
         numbered AS (SELECT pseq, row_number() OVER (ORDER BY prio DESC, was_due, pseq) \
             AS n FROM picked) \
         UPDATE jobhost_messages SET state = 'Running', owner = $2, \
             attempts = attempts + 1, due = NULL, runs = array_append(runs, ($4::text[])[n]) \
         FROM numbered WHERE seq = pseq \
         RETURNING {COLS}, payload, n"
    )
}

fn claim_in(
    conn: &mut Conn,
    job: &str,
    owner: &str,
    runs: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<Claimed>, Failure> {
    let rows = conn.query(&claim_sql(), &[&job, &owner, &now, &runs])?;
    let mut claimed = Vec::with_capacity(rows.len());
    for r in &rows {
        let n: i64 = r.try_get(NCOLS + 1)?;
        let message = message(r)?;
        let payload = r.try_get(NCOLS)?;
        claimed.push((n, Claimed { message, payload }));
    }
    claimed.sort_by_key(|(n, _)| *n);
    Ok(claimed.into_iter().map(|(_, c)| c).collect())
}

/// Where a settlement applies: the message is `Running` (for `$2` when given).
const RUNNING: &str = "WHERE id = $1 AND state = 'Running' AND ($2::text IS NULL OR owner = $2)";

/// A running message's attempt ended as `settlement`: one statement, which also adds
/// `run` to the cluster's history when given (whether or not the message was still
/// `Running`: the run happened). The message as settled; `None` when it was no longer
/// `Running` (for `owner` when given).
fn settle_in(
    conn: &mut Conn,
    id: &str,
    owner: Option<&str>,
    settlement: Settlement,
    now: DateTime<Utc>,
    run: Option<&RunRow>,
) -> Result<Option<Message>, Failure> {
    // Bound before `args` borrows them.
    let (state, result, error, due) = match settlement {
        Settlement::Succeeded { result } => (MessageState::Succeeded, result, None, None),
        Settlement::Dead { error, result } => (MessageState::Dead, result, Some(error), None),
        Settlement::Cancelled { error } => (MessageState::Cancelled, None, Some(error), None),
        Settlement::Retry { at, error } => (MessageState::Queued, None, Some(error), Some(at)),
        Settlement::Released => (MessageState::Queued, None, None, Some(now)),
    };
    let name = state.as_str();
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&id, &owner];
    let update = match (state, &error) {
        (MessageState::Queued, Some(error)) => {
            args.extend([&due as &(dyn ToSql + Sync), error]);
            format!(
                "UPDATE jobhost_messages SET state = 'Queued', due = $3, last_error = $4, \
                 owner = NULL {RUNNING}"
            )
        }
        // Released: the host stopped it, so the attempt does not count.
        (MessageState::Queued, None) => {
            args.push(&due);
            format!(
                "UPDATE jobhost_messages SET state = 'Queued', due = $3, owner = NULL, \
                 attempts = greatest(attempts - 1, 0) {RUNNING}"
            )
        }
        _ => {
            args.extend([&name as &(dyn ToSql + Sync), &now, &result, &error]);
            // A callback is owed as soon as a message with a reply_to finishes.
            format!(
                "UPDATE jobhost_messages SET state = $3::text, finished_at = $4, result = $5, \
                 last_error = $6, owner = NULL, due = NULL, callback_attempts = 0, \
                 callback_due = CASE WHEN $3::text IN ('Succeeded', 'Dead') \
                     AND reply_to IS NOT NULL THEN $4::timestamptz END \
                 {RUNNING}"
            )
        }
    };
    let sql = match run {
        None => format!("{update} RETURNING {COLS}"),
        Some(run) => {
            let (add, trim) = runs::add_and_trim_sql(args.len() + 1);
            args.extend(run.params());
            format!(
                "WITH settled AS ({update} RETURNING {COLS}), \
                 added AS ({add} RETURNING 1), trimmed AS ({trim} RETURNING 1) \
                 SELECT * FROM settled"
            )
        }
    };
    let row = conn.query_opt(&sql, &args)?;
    row.as_ref().map(message).transpose()
}

/// What sends finished messages back to `Queued`: due now, attempts reset, the
/// result and any callback not yet sent forgotten; `last_error` kept as history.
const REQUEUE: &str = "UPDATE jobhost_messages SET state = 'Queued', due = $1, attempts = 0, \
    finished_at = NULL, result = NULL, owner = NULL, callback_due = NULL, \
    callback_attempts = 0";

/// `now - d`, never before the epoch (a "forever" duration keeps everything).
fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::UNIX_EPOCH)
        .max(DateTime::UNIX_EPOCH)
}

/// The message store in one PostgreSQL database.
pub struct PgStore {
    pool: Arc<Pool>,
}

impl PgStore {
    /// Connects to `url` and brings its schema to this build's version.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let shown = cluster::pg::redact(url);
        let pool = cluster::open(url).map_err(|e| store_error(&shown, e))?;
        Ok(PgStore { pool })
    }

    /// A store on a pool whose database was migrated ([`cluster::open`]).
    pub fn new(pool: Arc<Pool>) -> PgStore {
        PgStore { pool }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    fn run<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, Failure>) -> Result<T, StoreError> {
        self.pool.with(f).map_err(|f| f.into_store(self.pool.url()))
    }

    /// As [`QueueStore::settle`], but only while `owner` still runs the message: a
    /// host that comes back after its messages were given away cannot settle the
    /// attempt another host now runs.
    pub fn settle_owned(
        &self,
        id: &str,
        owner: &str,
        settlement: Settlement,
        now: DateTime<Utc>,
    ) -> Result<Option<Message>, StoreError> {
        self.run(|c| settle_in(c, id, Some(owner), settlement, now, None))
    }

    /// Gives back the `Running` messages of the hosts named `dead` (see
    /// `cluster::hosts::dead_owners`): each is settled as `decide` says (for a host
    /// that died: `policy::settle` with `RunEnd::HostDied`, so the attempt counts).
    /// Messages another host is giving back at this moment are left to it. The
    /// messages as settled.
    pub fn expire_owners(
        &self,
        dead: &[String],
        now: DateTime<Utc>,
        decide: impl Fn(&Message) -> Settlement,
    ) -> Result<Vec<Message>, StoreError> {
        if dead.is_empty() {
            return Ok(Vec::new());
        }
        self.run(|c| {
            c.transaction(|c| {
                let held = c.query(
                    &format!(
                        "SELECT {COLS} FROM jobhost_messages WHERE state = 'Running' \
                         AND owner = ANY($1) ORDER BY seq FOR UPDATE SKIP LOCKED"
                    ),
                    &[&dead],
                )?;
                let mut settled = Vec::with_capacity(held.len());
                for row in &held {
                    let m = message(row)?;
                    let owner = m.owner.clone();
                    if let Some(s) = settle_in(c, &m.id, owner.as_deref(), decide(&m), now, None)? {
                        settled.push(s);
                    }
                }
                Ok(settled)
            })
        })
    }
}

impl QueueStore for PgStore {
    fn enqueue(
        &self,
        msg: NewMessage,
        dedupe_window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, StoreError> {
        self.run(|c| enqueue_in(c, msg, dedupe_window, now))
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
        self.run(|c| claim_in(c, job, owner, runs, now))
    }

    fn replace_run(&self, id: &str, minted: &str, actual: Option<&str>) -> Result<(), StoreError> {
        // A message deleted meanwhile has no runs to correct.
        self.run(|c| {
            c.execute(
                "UPDATE jobhost_messages SET runs = CASE WHEN $3::text IS NULL \
                     THEN array_remove(runs, $2) ELSE array_replace(runs, $2, $3) END \
                 WHERE id = $1",
                &[&id, &minted, &actual],
            )?;
            Ok(())
        })
    }

    fn settle(
        &self,
        id: &str,
        settlement: Settlement,
        now: DateTime<Utc>,
    ) -> Result<Option<Message>, StoreError> {
        self.run(|c| settle_in(c, id, None, settlement, now, None))
    }

    fn settle_as(
        &self,
        id: &str,
        owner: &str,
        settlement: Settlement,
        now: DateTime<Utc>,
    ) -> Result<Option<Message>, StoreError> {
        self.settle_owned(id, owner, settlement, now)
    }

    fn settle_recording(
        &self,
        id: &str,
        owner: &str,
        settlement: Settlement,
        now: DateTime<Utc>,
        run: &RunRow,
    ) -> Result<(Option<Message>, bool), StoreError> {
        let settled = self.run(|c| settle_in(c, id, Some(owner), settlement, now, Some(run)))?;
        Ok((settled, true))
    }

    fn get(&self, job: &str, id: &str) -> Result<Message, StoreError> {
        self.run(|c| must_fetch(c, job, id))
    }

    fn payload(&self, job: &str, id: &str) -> Result<(Vec<u8>, Option<String>), StoreError> {
        self.run(|c| {
            let row = c
                .query_opt(
                    "SELECT payload, content_type FROM jobhost_messages WHERE id = $1 AND job = $2",
                    &[&id, &job],
                )?
                .ok_or_else(|| not_found(job, id))?;
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
    }

    fn result(&self, job: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(|c| {
            let row = c
                .query_opt(
                    "SELECT result FROM jobhost_messages WHERE id = $1 AND job = $2",
                    &[&id, &job],
                )?
                .ok_or_else(|| not_found(job, id))?;
            Ok(row.try_get(0)?)
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
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&job];
        if let Some(state) = &state {
            args.push(state);
        }
        if let Some(before) = &before {
            args.push(before);
        }
        args.push(&limit);
        let sql = crate::queue::list_sql(
            "jobhost_messages",
            COLS,
            '$',
            state.is_some(),
            before.is_some(),
        );
        self.run(|c| c.query(&sql, &args)?.iter().map(message).collect())
    }

    fn requeue(&self, job: &str, id: &str, now: DateTime<Utc>) -> Result<Message, StoreError> {
        self.run(|c| {
            let row = c.query_opt(
                &format!(
                    "{REQUEUE} WHERE id = $2 AND job = $3 \
                     AND state IN ('Succeeded', 'Dead', 'Cancelled') RETURNING {COLS}"
                ),
                &[&now, &id, &job],
            )?;
            match row {
                Some(row) => message(&row),
                // Not requeued: say why.
                None => {
                    let m = must_fetch(c, job, id)?;
                    Err(conflict(id, m.state, NOT_FINISHED))
                }
            }
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
        self.run(|c| {
            Ok(c.execute(
                &format!("{REQUEUE} WHERE job = $2 AND state = $3"),
                &[&now, &job, &state.as_str()],
            )?)
        })
    }

    fn cancel(&self, job: &str, id: &str, now: DateTime<Utc>) -> Result<Message, StoreError> {
        // One statement: the row is locked and read as it was, and changed only if
        // it is not finished yet.
        let sql = format!(
            "WITH old AS (SELECT {COLS} FROM jobhost_messages WHERE id = $1 AND job = $2 \
                 FOR UPDATE), \
             upd AS (UPDATE jobhost_messages m SET state = 'Cancelled', finished_at = $3, \
                 last_error = 'cancelled', owner = NULL, due = NULL FROM old \
                 WHERE m.id = old.id AND old.state IN ('Queued', 'Running') RETURNING 1) \
             SELECT * FROM old"
        );
        self.run(|c| {
            let before = c
                .query_opt(&sql, &[&id, &job, &now])?
                .ok_or_else(|| not_found(job, id))?;
            let before = message(&before)?;
            if before.state.finished() {
                return Err(conflict(
                    id,
                    before.state,
                    "it is already finished; only a Queued or Running message can be cancelled",
                ));
            }
            Ok(before)
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
        self.run(|c| {
            let n: i64 = c
                .query_one(
                    "WITH gone AS (DELETE FROM jobhost_messages WHERE job = $1 AND state = $2 \
                         RETURNING id), \
                     forgot AS (DELETE FROM jobhost_dedupe WHERE job = $1 \
                         AND message_id IN (SELECT id FROM gone)) \
                     SELECT count(*) FROM gone",
                    &[&job, &state.as_str()],
                )?
                .try_get(0)?;
            Ok(n.max(0) as u64)
        })
    }

    fn counts(&self, job: &str, now: DateTime<Utc>) -> Result<QueueCounts, StoreError> {
        // Counted from the state index rather than kept in a tally row: a row that
        // every claim and settlement updates would make the hosts queue behind each
        // other (and deadlock as states move in different orders).
        self.run(|c| {
            let r = c.query_one(
                "SELECT count(*) FILTER (WHERE state = 'Queued'), \
                     count(*) FILTER (WHERE state = 'Running'), \
                     count(*) FILTER (WHERE state = 'Succeeded'), \
                     count(*) FILTER (WHERE state = 'Dead'), \
                     count(*) FILTER (WHERE state = 'Cancelled'), \
                     min(enqueued_at) FILTER (WHERE state = 'Queued') \
                 FROM jobhost_messages WHERE job = $1",
                &[&job],
            )?;
            let n =
                |i: usize| -> Result<u64, Failure> { Ok(r.try_get::<_, i64>(i)?.max(0) as u64) };
            let oldest: Option<DateTime<Utc>> = r.try_get(5)?;
            Ok(QueueCounts {
                queued: n(0)?,
                running: n(1)?,
                succeeded: n(2)?,
                dead: n(3)?,
                cancelled: n(4)?,
                oldest_queued_age_s: oldest.map(|t| {
                    (now.timestamp_millis()
                        .saturating_sub(t.timestamp_millis())
                        .max(0)
                        / 1000) as u64
                }),
            })
        })
    }

    fn next_due(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.run(|c| {
            Ok(c.query_one(
                "SELECT min(due) FROM jobhost_messages WHERE job = $1 AND state = 'Queued'",
                &[&job],
            )?
            .try_get(0)?)
        })
    }

    fn running(&self, job: &str) -> Result<Vec<Message>, StoreError> {
        self.run(|c| {
            c.query(
                &format!(
                    "SELECT {COLS} FROM jobhost_messages WHERE job = $1 AND state = 'Running' \
                     ORDER BY id"
                ),
                &[&job],
            )?
            .iter()
            .map(message)
            .collect()
        })
    }

    fn sweep(
        &self,
        job: &str,
        retention: Duration,
        dedupe_window: Duration,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // Not remembered once its age reaches the window (policy::remembered).
        let (finished, seen) = (before(now, retention), before(now, dedupe_window));
        self.run(|c| {
            let n: i64 = c
                .query_one(
                    "WITH gone AS (DELETE FROM jobhost_messages WHERE job = $1 \
                         AND finished_at IS NOT NULL AND finished_at < $2 RETURNING 1), \
                     forgot AS (DELETE FROM jobhost_dedupe WHERE job = $1 AND seen_at <= $3) \
                     SELECT count(*) FROM gone",
                    &[&job, &finished, &seen],
                )?
                .try_get(0)?;
            Ok(n.max(0) as u64)
        })
    }

    fn due_callbacks(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Message>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(|c| {
            c.query(
                &format!(
                    "SELECT {COLS} FROM jobhost_messages WHERE callback_due IS NOT NULL \
                     AND callback_due <= $1 ORDER BY callback_due, seq LIMIT $2"
                ),
                &[&now, &limit],
            )?
            .iter()
            .map(message)
            .collect()
        })
    }

    fn callback_tried(&self, id: &str, again_at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        self.run(|c| {
            c.execute(
                "UPDATE jobhost_messages SET callback_attempts = callback_attempts + 1, \
                 callback_due = $2 WHERE id = $1",
                &[&id, &again_at],
            )?;
            Ok(())
        })
    }
}
