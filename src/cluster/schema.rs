//! The cluster store's tables, and how a database becomes them. The schema's version
//! is the one row of `jobhost_schema`. Every host migrates at start inside one
//! transaction that first takes a transaction-scoped advisory lock, so hosts starting
//! together take turns: the first creates the tables, the others wait and then find
//! them done. A database whose version is newer than this build knows is refused: a
//! newer jobhost wrote it and this one could misread or damage it.
//!
//! Every table is prefixed `jobhost_`, so the store may share a database with other
//! applications' tables.

use super::{ClusterError, Pool};

/// Each step takes the schema from version `index` to `index + 1`; never edit a step
/// once released, add one.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version this build writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock that serialises migrations (any constant: "jobhost" in ASCII).
const MIGRATION_LOCK: i64 = 0x006a_6f62_686f_7374;

/// The channel a message's job name is sent on when it becomes `Queued`.
pub const QUEUE_CHANNEL: &str = "jobhost_queue";

/// The channel a job package's `TYPE/NAME` is sent on whenever it changes.
pub const DEPLOY_CHANNEL: &str = "jobhost_deploy";

// Ids and names compare byte by byte (COLLATE "C"): ids sort by enqueue time
// only in that order, whatever the database's locale. Times are the hosts' `now` for messages (what the queue trait is given), and the
// database's own clock for hosts' heartbeats and leases. `due` is set only while a
// message is Queued. The trigger announces every message that becomes Queued and
// due now (enqueued, released, requeued) on QUEUE_CHANNEL; PostgreSQL folds the
// same job's announcements within one transaction into one. A message due later
// (delayed, or a retry) is not announced: every host looks for due messages at least
// once a second, and no host is woken to find nothing due.
const V1: &str = r#"
CREATE TABLE jobhost_messages (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text COLLATE "C" NOT NULL UNIQUE,
    job text COLLATE "C" NOT NULL,
    content_type text,
    idempotency_key text,
    correlation_id text,
    name text,
    priority bigint NOT NULL,
    not_before timestamptz,
    reply_to text,
    state text NOT NULL
        CHECK (state IN ('Queued', 'Running', 'Succeeded', 'Dead', 'Cancelled')),
    attempts integer NOT NULL,
    enqueued_at timestamptz NOT NULL,
    due timestamptz,
    finished_at timestamptz,
    last_error text,
    runs text[] NOT NULL DEFAULT '{}',
    owner text COLLATE "C",
    callback_attempts integer NOT NULL DEFAULT 0,
    callback_due timestamptz,
    payload_bytes bigint NOT NULL,
    payload bytea NOT NULL,
    result bytea
);
CREATE INDEX jobhost_messages_claim ON jobhost_messages (job, priority DESC, due, seq)
    WHERE state = 'Queued';
CREATE INDEX jobhost_messages_next ON jobhost_messages (job, due) WHERE state = 'Queued';
CREATE INDEX jobhost_messages_oldest ON jobhost_messages (job, enqueued_at)
    WHERE state = 'Queued';
CREATE INDEX jobhost_messages_list ON jobhost_messages (job, id);
CREATE INDEX jobhost_messages_state ON jobhost_messages (job, state, id);
CREATE INDEX jobhost_messages_finished ON jobhost_messages (job, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX jobhost_messages_callback ON jobhost_messages (callback_due)
    WHERE callback_due IS NOT NULL;
CREATE INDEX jobhost_messages_owner ON jobhost_messages (owner) WHERE state = 'Running';

CREATE TABLE jobhost_dedupe (
    job text COLLATE "C" NOT NULL,
    key text NOT NULL,
    message_id text COLLATE "C" NOT NULL,
    seen_at timestamptz NOT NULL,
    PRIMARY KEY (job, key)
);
CREATE INDEX jobhost_dedupe_seen ON jobhost_dedupe (job, seen_at);

CREATE FUNCTION jobhost_queue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobhost_queue', NEW.job);
    RETURN NULL;
END
$$;
CREATE TRIGGER jobhost_messages_queued
    AFTER INSERT OR UPDATE OF state ON jobhost_messages
    FOR EACH ROW WHEN (NEW.state = 'Queued' AND (NEW.due IS NULL OR NEW.due <= now()))
    EXECUTE FUNCTION jobhost_queue_notify();

-- Every finished triggered run of every host (docs/cluster.md#history): the record as
-- the host wrote it, and where that host's API answers (its output stays there).
CREATE TABLE jobhost_runs (
    job text COLLATE "C" NOT NULL,
    host text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    api_addr text NOT NULL,
    started_at timestamptz NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (job, host, id)
);
CREATE INDEX jobhost_runs_recent ON jobhost_runs (job, started_at DESC);

-- Leases of things one host at a time may hold (a singleton job): the holder, until
-- when (the database's clock), and the fencing token, one greater at every change of
-- holder.
CREATE TABLE jobhost_leases (
    name text COLLATE "C" PRIMARY KEY,
    holder text COLLATE "C" NOT NULL,
    token bigint NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Scheduled occurrences fired: one row per (job, occurrence), so each fires on exactly
-- one host of the cluster.
CREATE TABLE jobhost_fires (
    job text COLLATE "C" NOT NULL,
    occurrence timestamptz NOT NULL,
    host text COLLATE "C" NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job, occurrence)
);

-- Each job deployed through a host's API in the cluster: its whole folder as a zip, or
-- NULL once deleted (a tombstone, so a host that was away removes it too); version
-- grows by one at every change; origin is the host whose API took the change. Every
-- change is announced on jobhost_deploy as TYPE/NAME.
CREATE TABLE jobhost_packages (
    job_type text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    package bytea,
    origin text COLLATE "C" NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_type, name)
);
CREATE FUNCTION jobhost_deploy_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobhost_deploy', NEW.job_type || '/' || NEW.name);
    RETURN NULL;
END
$$;
CREATE TRIGGER jobhost_packages_changed
    AFTER INSERT OR UPDATE ON jobhost_packages
    FOR EACH ROW EXECUTE FUNCTION jobhost_deploy_notify();

-- One row per host that ever joined. heartbeat_at and lease_expires_at come from the
-- database's clock, so hosts whose clocks disagree still agree on who is alive.
CREATE TABLE jobhost_hosts (
    name text COLLATE "C" PRIMARY KEY,
    api_addr text NOT NULL,
    version text NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    lease_expires_at timestamptz NOT NULL
);
"#;

// A triggered job's run lease row also keeps the latest occurrence fired under it
// (`fired`) and the one last asked for (`asked`), so a lease taken ahead of its
// occurrence (`cluster::fires`) checks "not fired yet" on the very row it locks, not
// on a snapshot taken before another host's run began and ended.
const V2: &str = r#"
ALTER TABLE jobhost_leases ADD COLUMN fired timestamptz;
ALTER TABLE jobhost_leases ADD COLUMN asked timestamptz;
"#;

/// Brings the database's schema to [`VERSION`], or refuses a newer one.
pub fn migrate(pool: &Pool) -> Result<(), ClusterError> {
    pool.call("creating or upgrading its tables", |conn| {
        conn.transaction(|conn| {
            // Taken before anything is read: a second host waits here until the
            // first committed, then reads the version it wrote.
            conn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            conn.batch("CREATE TABLE IF NOT EXISTS jobhost_schema (version integer NOT NULL)")?;
            let found: i32 = conn
                .query_one("SELECT coalesce(max(version), 0) FROM jobhost_schema", &[])?
                .try_get(0)?;
            check_version(pool, found)?;
            for (from, step) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
                conn.batch(step)?;
                let to = from as i32 + 1;
                conn.execute("DELETE FROM jobhost_schema", &[])?;
                conn.execute("INSERT INTO jobhost_schema (version) VALUES ($1)", &[&to])?;
            }
            Ok(())
        })
    })
}

/// The schema version of the database `pool` reaches (0: none yet).
pub fn version(pool: &Pool) -> Result<i32, ClusterError> {
    pool.call("reading its schema version", |conn| {
        let exists: bool = conn
            .query_one("SELECT to_regclass('jobhost_schema') IS NOT NULL", &[])?
            .try_get(0)?;
        if !exists {
            return Ok(0);
        }
        Ok(conn
            .query_one("SELECT coalesce(max(version), 0) FROM jobhost_schema", &[])?
            .try_get(0)?)
    })
}

fn check_version(pool: &Pool, found: i32) -> Result<(), ClusterError> {
    if found <= VERSION {
        return Ok(());
    }
    Err(ClusterError::Unusable {
        url: pool.url().to_string(),
        reason: format!(
            "its schema version is {found}, newer than this jobhost knows ({VERSION}): a newer jobhost wrote it"
        ),
        fix: "upgrade jobhost on this host to the version the other hosts of the cluster run"
            .into(),
    })
}
