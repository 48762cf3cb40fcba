//! The cluster store: one PostgreSQL database that hosts on several machines share,
//! so that what must be decided once for the whole cluster (who takes a message, who
//! is alive) is decided there (docs/cluster.md).
//!
//! This module owns the way in: [`pg`] parses the store's URL and keeps a small pool
//! of connections that mends itself after the server went away; [`schema`] creates
//! or migrates the tables once per database, however many hosts start at once;
//! [`hosts`] records each host's heartbeat and says, by the database's clock, which
//! hosts are alive; [`listen`] turns `NOTIFY` into calls so waiting tasks wake without
//! polling; [`deploys`] keeps every job deployed through a host's API in the store and
//! writes the others' into each host's JOBS. The message queue on top of it is
//! `queue::postgres`.
//!
//! The `postgres` crate (rust-postgres, synchronous) is used because the store sits
//! behind synchronous traits that callers run on the blocking pool; it brings its own
//! small runtime per connection, so its calls must not be made from async code
//! directly (they panic there); dropping a pool is safe anywhere.
//! Connections are plain TCP or Unix sockets: TLS is not built in yet (it would add
//! a TLS connector crate for a first version meant for a private network), and a URL
//! that demands it (`sslmode=require`) is refused with that explanation.

pub mod deploys;
pub mod fires;
pub mod hosts;
pub mod leases;
pub mod listen;
pub mod member;
pub mod pg;
pub mod runs;
pub mod schema;

#[cfg(test)]
pub mod testdb;

use std::sync::Arc;

pub use self::pg::Pool;

/// Why the cluster store could not be used. Every variant names the store by its URL
/// without the password, says what failed and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster store URL {url:?} is not valid: {reason}; {fix}")]
    BadUrl {
        url: String,
        reason: String,
        fix: String,
    },
    #[error("cannot connect to the cluster store {url}: {reason}; {fix}")]
    Connect {
        url: String,
        reason: String,
        fix: String,
    },
    /// A call failed; the store may work again (the server restarts, the network
    /// comes back): nothing of that call was changed unless it says so.
    #[error("the cluster store {url} is unavailable while {what}: {reason}")]
    Unavailable {
        url: String,
        what: String,
        reason: String,
    },
    /// The database cannot be used by this build at all (a newer schema).
    #[error("the cluster store {url} cannot be used: {reason}; {fix}")]
    Unusable {
        url: String,
        reason: String,
        fix: String,
    },
}

impl ClusterError {
    /// The URL (without password) of the store this error is about.
    pub fn url(&self) -> &str {
        match self {
            ClusterError::BadUrl { url, .. }
            | ClusterError::Connect { url, .. }
            | ClusterError::Unavailable { url, .. }
            | ClusterError::Unusable { url, .. } => url,
        }
    }
}

/// Connects to the store at `url` and brings its schema to this build's version: what
/// a host does once at start before using the store.
pub fn open(url: &str) -> Result<Arc<Pool>, ClusterError> {
    let pool = Pool::connect(url)?;
    schema::migrate(&pool)?;
    Ok(Arc::new(pool))
}
