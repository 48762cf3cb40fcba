//! The store's tables, and how a file becomes them. The schema's version is the
//! database's `PRAGMA user_version`; opening migrates an older file forward inside an
//! immediate transaction (two hosts opening the same file at once: the second waits,
//! then finds it done) and refuses a newer one, which a newer jobhost wrote and this
//! build could misread or damage.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::fault::{FIX_BROKEN, describe};
use crate::queue::StoreError;

/// Each step takes the schema from version `index` to `index + 1`; never edit a step
/// once released, add one.
const MIGRATIONS: &[&str] = &[V1];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Below this size a file is fully checked at open (`PRAGMA quick_check`); a larger
/// one would make every host start slow, and a damaged page still fails the query
/// that meets it.
const QUICK_CHECK_MAX_BYTES: u64 = 64 * 1024 * 1024;

// Payload and result come last: SQLite reads a row's columns in order, and a large
// blob before the small columns would drag its overflow pages into every listing.
// Times are milliseconds since the epoch (UTC). `due` is set only while Queued.
const V1: &str = "
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    job TEXT NOT NULL,
    content_type TEXT,
    idempotency_key TEXT,
    correlation_id TEXT,
    name TEXT,
    priority INTEGER NOT NULL,
    not_before INTEGER,
    reply_to TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    due INTEGER,
    finished_at INTEGER,
    last_error TEXT,
    runs TEXT NOT NULL DEFAULT '[]',
    owner TEXT,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_due INTEGER,
    payload_bytes INTEGER NOT NULL,
    payload BLOB NOT NULL,
    result BLOB
);
CREATE INDEX messages_claim ON messages (job, priority DESC, due, seq) WHERE state = 'Queued';
CREATE INDEX messages_next ON messages (job, due) WHERE state = 'Queued';
CREATE INDEX messages_oldest ON messages (job, enqueued_at) WHERE state = 'Queued';
CREATE INDEX messages_list ON messages (job, id);
CREATE INDEX messages_state ON messages (job, state, id);
CREATE INDEX messages_finished ON messages (job, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX messages_callback ON messages (callback_due) WHERE callback_due IS NOT NULL;

CREATE TABLE dedupe (
    job TEXT NOT NULL,
    key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (job, key)
) WITHOUT ROWID;
CREATE INDEX dedupe_seen ON dedupe (job, seen_at);

-- How many messages each job has in each state, kept by triggers so counting a
-- queue of a million messages reads one row instead of a million index entries.
CREATE TABLE tallies (
    job TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (job, state)
) WITHOUT ROWID;
CREATE TRIGGER tally_insert AFTER INSERT ON messages BEGIN
    INSERT INTO tallies (job, state, n) VALUES (NEW.job, NEW.state, 1)
        ON CONFLICT (job, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tally_delete AFTER DELETE ON messages BEGIN
    UPDATE tallies SET n = n - 1 WHERE job = OLD.job AND state = OLD.state;
END;
CREATE TRIGGER tally_update AFTER UPDATE OF state ON messages
WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE tallies SET n = n - 1 WHERE job = OLD.job AND state = OLD.state;
    INSERT INTO tallies (job, state, n) VALUES (NEW.job, NEW.state, 1)
        ON CONFLICT (job, state) DO UPDATE SET n = n + 1;
END;
";

/// How long a write waits for another host's transaction on the same file.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn unusable(path: &Path, reason: String, fix: &str) -> StoreError {
    StoreError::Unusable {
        path: path.to_path_buf(),
        reason,
        fix: fix.into(),
    }
}

/// A connection to the file at `path`, with the settings every connection of the
/// store shares.
pub fn connect(path: &Path, busy: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        unusable(
            path,
            format!("it cannot be opened ({e})"),
            "check that its folder exists and that the user running jobhost may create and write files in it",
        )
    })?;
    conn.busy_timeout(busy).map_err(|e| describe(path, &e))?;
    // A bounded page cache, so a queue of a million messages stays on disk instead of
    // in the host's memory (2 MB per connection).
    conn.pragma_update(None, "cache_size", -2000)
        .map_err(|e| describe(path, &e))?;
    Ok(conn)
}

/// Makes `conn` (just opened on `path`) a usable store: WAL mode, a sound file, the
/// current schema. Anything else is [`StoreError::Unusable`] naming what is wrong.
pub fn prepare(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // Judge the file before changing anything in it: a file that is not ours (a text
    // file, random bytes, another program's database) is refused and left as it was.
    let found = version(conn, path)?;
    check_version(path, found)?;
    if found == 0 && table_count(conn, path)? > 0 {
        return Err(unusable(
            path,
            "it is an SQLite database, but not a jobhost message store (it has other tables and no schema version)".into(),
            "move the file away, or give the queue store another path",
        ));
    }
    let small = std::fs::metadata(path)
        .map(|m| m.len() <= QUICK_CHECK_MAX_BYTES)
        .unwrap_or(true);
    if small {
        quick_check(conn, path)?;
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| describe(path, &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unusable(
            path,
            format!("SQLite could not switch it to WAL mode (it stays in {mode} mode)"),
            "put LOGS on a local file system (not a network folder)",
        ));
    }
    // After checkpoints, shrink the WAL back to this size rather than keep its peak.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(|e| describe(path, &e))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(|e| describe(path, &e))?;
    migrate(conn, path)
}

fn version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| describe(path, &e))
}

fn table_count(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| describe(path, &e))
}

fn check_version(path: &Path, found: i64) -> Result<(), StoreError> {
    if found <= VERSION {
        return Ok(());
    }
    Err(unusable(
        path,
        format!(
            "its schema version is {found}, newer than this jobhost knows ({VERSION}): a newer jobhost wrote it"
        ),
        "upgrade jobhost, or move the file away (its messages are then lost)",
    ))
}

fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| describe(path, &e))?;
    let problems = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| describe(path, &e))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(unusable(
        path,
        format!("it is damaged ({})", problems.join("; ")),
        FIX_BROKEN,
    ))
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |e: rusqlite::Error| describe(path, &e);
    // IMMEDIATE: take the write lock before reading the version, so a second host
    // opening the file at the same moment waits and then sees the finished schema.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    let result = (|| {
        // Read again under the lock: another host may have migrated it meanwhile.
        let found = version(conn, path)?;
        check_version(path, found)?;
        for (from, step) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            conn.execute_batch(step).map_err(sql)?;
            conn.pragma_update(None, "user_version", from as i64 + 1)
                .map_err(sql)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(sql),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
