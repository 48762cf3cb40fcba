//! Membership: which hosts are in the cluster and which of them are alive.
//!
//! A host records its heartbeat every few seconds; each heartbeat extends its lease
//! by `ttl` from the **database's** clock, so hosts whose own clocks drift apart
//! still agree on who is alive. A host whose lease ran out is dead until its next
//! heartbeat. Its running messages are then given back by the live hosts: each job
//! task's sweep asks `member::Heartbeats` whether a message's owner is alive (its
//! singleton leases simply expire). [`dead_owners`] with
//! `queue::postgres::PgStore::expire_owners` does the same for every job at once
//! (for tools and tests; the host uses the per-job sweep). A host must record its
//! first heartbeat before it claims anything: an owner with no heartbeat at all
//! counts as dead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::Row;

use super::{ClusterError, Pool};

/// A host of the cluster as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub name: String,
    /// Where its API answers (`http://HOST:PORT`).
    pub api_addr: String,
    /// The jobhost version it runs.
    pub version: String,
    /// When it first joined under this name, or rejoined after being dead.
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// When it is dead unless it beats again (database clock).
    pub lease_expires_at: DateTime<Utc>,
}

const COLS: &str = "name, api_addr, version, started_at, heartbeat_at, lease_expires_at";

fn host(r: &Row) -> Result<HostInfo, postgres::Error> {
    Ok(HostInfo {
        name: r.try_get(0)?,
        api_addr: r.try_get(1)?,
        version: r.try_get(2)?,
        started_at: r.try_get(3)?,
        heartbeat_at: r.try_get(4)?,
        lease_expires_at: r.try_get(5)?,
    })
}

/// Records that host `name` is alive, its API at `api_addr`, running `version`, for
/// `ttl` from now by the database's clock; the host as recorded. A host coming back
/// after its lease ran out starts anew (`started_at`).
pub fn heartbeat(
    pool: &Pool,
    name: &str,
    api_addr: &str,
    version: &str,
    ttl: Duration,
) -> Result<HostInfo, ClusterError> {
    let ttl = ttl.as_secs_f64();
    let sql = format!(
        "INSERT INTO jobhost_hosts AS h ({COLS}) \
         VALUES ($1, $2, $3, clock_timestamp(), clock_timestamp(), \
                 clock_timestamp() + make_interval(secs => $4)) \
         ON CONFLICT (name) DO UPDATE SET api_addr = excluded.api_addr, \
             version = excluded.version, heartbeat_at = excluded.heartbeat_at, \
             lease_expires_at = excluded.lease_expires_at, \
             started_at = CASE WHEN h.lease_expires_at <= excluded.heartbeat_at \
                 THEN excluded.started_at ELSE h.started_at END \
         RETURNING {COLS}"
    );
    pool.call(&format!("recording the heartbeat of host {name}"), |conn| {
        Ok(host(
            &conn.query_one(&sql, &[&name, &api_addr, &version, &ttl])?,
        )?)
    })
}

/// The hosts whose lease has not run out, by name.
pub fn live_hosts(pool: &Pool) -> Result<Vec<HostInfo>, ClusterError> {
    let sql = format!(
        "SELECT {COLS} FROM jobhost_hosts WHERE lease_expires_at > clock_timestamp() ORDER BY name"
    );
    pool.call("listing the live hosts", |conn| {
        Ok(conn
            .query(&sql, &[])?
            .iter()
            .map(host)
            .collect::<Result<_, _>>()?)
    })
}

/// Every host ever recorded, alive or not, by name.
pub fn all_hosts(pool: &Pool) -> Result<Vec<HostInfo>, ClusterError> {
    let sql = format!("SELECT {COLS} FROM jobhost_hosts ORDER BY name");
    pool.call("listing the hosts", |conn| {
        Ok(conn
            .query(&sql, &[])?
            .iter()
            .map(host)
            .collect::<Result<_, _>>()?)
    })
}

/// The owners of `Running` messages that are not alive: their lease ran out, or they
/// never recorded a heartbeat. Their messages are to be given back.
pub fn dead_owners(pool: &Pool) -> Result<Vec<String>, ClusterError> {
    const SQL: &str = "SELECT DISTINCT m.owner FROM jobhost_messages m \
        LEFT JOIN jobhost_hosts h ON h.name = m.owner \
        WHERE m.state = 'Running' AND m.owner IS NOT NULL \
        AND (h.name IS NULL OR h.lease_expires_at <= clock_timestamp()) \
        ORDER BY m.owner";
    pool.call("looking for dead hosts' messages", |conn| {
        Ok(conn
            .query(SQL, &[])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?)
    })
}

/// Ends host `name`'s lease now (it stops cleanly): what it held can be taken at
/// once instead of after its lease.
pub fn leave(pool: &Pool, name: &str) -> Result<(), ClusterError> {
    pool.call(&format!("recording that host {name} left"), |conn| {
        conn.execute(
            "UPDATE jobhost_hosts SET lease_expires_at = clock_timestamp() WHERE name = $1",
            &[&name],
        )?;
        Ok(())
    })
}
