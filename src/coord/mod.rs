//! The coordination seam: who may run what, when several hosts could. A continuous
//! singleton's lock, a triggered job's run lock (with the scheduled occurrence it
//! claims, and the lock taken ahead of the next occurrence), the claim of an
//! occurrence skipped, and the latest occurrence fired, all behind one trait,
//! [`Coordination`], held by the job tasks as `Arc<dyn Coordination>` in
//! `HostContext` and chosen once by the host:
//!
//! - [`files::Files`]: lock files in LOGS taken with `flock` (docs/jobs.md, "Several
//!   hosts on one folder"): hosts of one machine sharing LOGS through `--instance`; a
//!   host without an instance name is alone and takes no run lock.
//! - [`store::Store`]: leases in the cluster's PostgreSQL store (`cluster::leases`,
//!   `cluster::fires`), renewed while held, with a fencing token (docs/cluster.md).
//!
//! What a hold carries (its fencing token, when to renew it, the occurrence claimed
//! with it, the latest fire read with it) lives in the hold types here, so the tasks
//! ask the hold instead of asking which store they are in. The pure machines
//! (`continuous::state`, `triggered::{state, gate}`) only ever see "taken", "busy" and
//! "last fire".

pub mod files;
pub mod store;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::fs::File;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::fsutil::FileWriter;

/// Locks and leases for the job tasks. Dyn-compatible: the async methods return boxed
/// futures.
pub trait Coordination: Send + Sync {
    /// This host alone writes its LOGS, so what a job task last saw there is current
    /// (no listing per run): a host without an instance name, or a host of a cluster
    /// (which keeps its LOGS to itself).
    fn logs_alone(&self) -> bool;

    /// Takes continuous job `job`'s singleton lock: `Err(None)` when another host holds
    /// it, `Err(Some(why))` when it cannot be asked. `files` is the job's status
    /// writer: a lock file released a moment ago, still waiting for the status writes
    /// before it, is taken back from it.
    fn take_singleton(
        &self,
        job: &str,
        files: &FileWriter,
    ) -> BoxFuture<'static, Result<SingletonHold, Option<String>>>;

    /// Renews a singleton's hold (due at [`SingletonHold::renew_at`]). `Lost`: the run
    /// must have ended within `grace`, before another host may start it.
    fn renew_singleton<'a>(&'a self, hold: &'a mut SingletonHold) -> BoxFuture<'a, Renewal>;

    /// Gives a singleton's hold up. A lock file is closed after the status writes
    /// already asked of `files` (at once, before this returns); a lease is given up
    /// when the future is polled, so the caller chooses to wait for it or spawn it.
    fn release_singleton(&self, hold: SingletonHold, files: &FileWriter) -> BoxFuture<'static, ()>;

    /// How long before its next occurrence an idle job takes its run lock, so the run
    /// starts on time without asking anyone; `None`: never taken ahead.
    fn lead(&self) -> Option<Duration>;

    /// Takes triggered job `job`'s run lock; for a scheduled run (`fire`) its
    /// occurrence is claimed with it where the store does so. `Ok(None)`: no lock is
    /// needed (a host alone on its LOGS).
    fn take_run(
        &self,
        job: &str,
        fire: Option<DateTime<Utc>>,
    ) -> BoxFuture<'static, Result<Option<RunHold>, Refused>>;

    /// Takes the run lock ahead of `occurrence` (see [`Coordination::lead`]), only if
    /// the occurrence was not fired yet; its claim is written with the run's record.
    /// `None`: not taken (busy, fired, or the store is slow: the occurrence takes
    /// its lock when it comes).
    fn take_run_ahead(
        &self,
        job: &str,
        occurrence: DateTime<Utc>,
    ) -> BoxFuture<'static, Option<RunHold>>;

    /// Renews a run's hold (due at [`RunHold::renew_at`]). `Lost`: the run must stop.
    fn renew_run<'a>(&'a self, job: &'a str, hold: &'a mut RunHold) -> BoxFuture<'a, Renewal>;

    /// Claims occurrence `at` of `job` (a skipped one, or one whose run lock did not
    /// claim it): `Err(why)` when another host fired it or nobody can say.
    fn claim_fire(&self, job: &str, at: DateTime<Utc>) -> BoxFuture<'static, Result<(), String>>;

    /// The latest occurrence of `job` fired, as known with `hold` (read with the lease)
    /// or from the job's records in LOGS.
    fn last_fired(
        &self,
        job: &str,
        hold: Option<&RunHold>,
    ) -> BoxFuture<'static, Option<DateTime<Utc>>>;
}

/// Why a run lock was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Another host holds it, or fired the occurrence.
    Busy,
    /// Nobody could say (the store does not answer): why.
    Unavailable(String),
}

/// What a renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours (or asked again soon, still well inside it).
    Kept,
    /// Lost, or not confirmed for too long: why, and how long the run may still go
    /// before the hold expires.
    Lost { why: String, grace: Duration },
}

/// A continuous singleton's lock, held. Dropping it gives up nothing: a lost lease is
/// not released, and a lock is given up through [`Coordination::release_singleton`].
pub struct SingletonHold {
    how: SingletonHow,
}

enum SingletonHow {
    File(File),
    Lease(store::Lease),
}

impl SingletonHold {
    /// The fencing token the run gets (`WEBJOBS_FENCING_TOKEN`), for a lease.
    pub fn fencing_token(&self) -> Option<i64> {
        match &self.how {
            SingletonHow::File(_) => None,
            SingletonHow::Lease(l) => Some(l.held.token),
        }
    }

    /// When to renew it; `None`: held until released.
    pub fn renew_at(&self) -> Option<Instant> {
        match &self.how {
            SingletonHow::File(_) => None,
            SingletonHow::Lease(l) => Some(l.next_renew),
        }
    }
}

/// A triggered job's run lock, held for the run. Dropped, it is given up (a lease off
/// the caller's thread), unless handed to the run's record
/// ([`RunHold::give_up_with_record`]) or to the next take ([`RunHold::superseded`]).
pub struct RunHold {
    how: RunHow,
    /// The latest occurrence fired in the cluster, read with the lease.
    last_fired: Option<DateTime<Utc>>,
    /// The occurrence claimed with it (or, taken ahead, to be claimed with the run's
    /// record).
    claimed: Option<DateTime<Utc>>,
}

enum RunHow {
    /// `run.lock` in the job's LOGS; closed when dropped.
    File(#[allow(dead_code)] File),
    Lease(store::RunLease),
}

impl RunHold {
    /// The occurrence claimed with this hold, if any.
    pub fn claimed(&self) -> Option<DateTime<Utc>> {
        self.claimed
    }

    /// When to renew it; `None`: held until dropped.
    pub fn renew_at(&self) -> Option<Instant> {
        match &self.how {
            RunHow::File(_) => None,
            RunHow::Lease(l) => Some(l.lease.next_renew),
        }
    }

    /// The hold is given up with the run's record (`ClusterLink::record_run`, one
    /// round trip): the lease's name and token, and nothing done when it drops.
    pub fn give_up_with_record(&mut self) -> Option<(String, i64)> {
        match &mut self.how {
            RunHow::File(_) => None,
            RunHow::Lease(l) => {
                l.released = true;
                Some((l.lease.name.clone(), l.lease.held.token))
            }
        }
    }

    /// Dropped without giving it up: this host takes the same lock again at once (a
    /// manual run asks while the lock taken ahead is held), so it stays held.
    pub fn superseded(mut self) {
        if let RunHow::Lease(l) = &mut self.how {
            l.released = true;
        }
    }
}
