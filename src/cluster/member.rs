//! This host's membership of a cluster: its heartbeat every [`BEAT`], and the answer
//! to "is the owner of that running message gone?" by the database's view of who is
//! alive (`queue::liveness::Liveness`), so a dead host's messages come back to their
//! queues once its lease ran out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Pool, hosts};
use crate::queue::liveness::Liveness;

/// How often a host records its heartbeat.
pub const BEAT: Duration = Duration::from_secs(2);

/// What the job tasks and the API reach of the cluster: the store and who this host
/// is in it.
pub struct ClusterLink {
    pub pool: Arc<Pool>,
    pub me: Member,
    /// Where the API records its writes of jobs for the other hosts.
    pub deploys: Arc<super::deploys::Deploys>,
    /// Where the triggered jobs take their run leases and claim their occurrences.
    pub run_desk: super::fires::RunDesk,
}

impl ClusterLink {
    /// Adds a finished run's record to the cluster's history, and gives up its lease
    /// (`lease`: name and token) in the same statement, off the caller's thread (a
    /// store that does not answer must not hold up the job).
    pub fn record_run(
        self: &Arc<Self>,
        rec: &crate::job::triggered::records::RunRecord,
        keep: u32,
        lease: Option<(String, i64)>,
    ) {
        let (link, rec) = (self.clone(), rec.clone());
        tokio::task::spawn_blocking(move || {
            let lease = lease.as_ref().map(|(n, t)| (n.as_str(), *t));
            let (pool, me) = (&link.pool, &link.me);
            if let Err(e) = super::runs::record(pool, &me.name, &me.api_addr, &rec, keep, lease) {
                tracing::warn!(job = %rec.name, run = %rec.id, "{e}: the run is missing from the cluster's history");
            }
        });
    }
}

/// Who this host is in the cluster.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub api_addr: String,
    pub ttl: Duration,
}

/// Whether this host's own heartbeat is being recorded: while it is not (the store is
/// away), and for a lease's length after it is again, this host declares no other
/// host dead. After an outage of the whole store every host's lease has lapsed, and the
/// others record theirs again only at their next beat: until then they are alive,
/// not dead, and their running messages are theirs.
#[derive(Debug, Default)]
pub struct OwnBeat {
    state: Mutex<BeatState>,
}

#[derive(Debug, Default)]
struct BeatState {
    failing: bool,
    back_at: Option<Instant>,
}

impl OwnBeat {
    fn lock(&self) -> std::sync::MutexGuard<'_, BeatState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recorded(&self) {
        let mut s = self.lock();
        if s.failing {
            s.failing = false;
            s.back_at = Some(Instant::now());
        }
    }

    fn failed(&self) {
        self.lock().failing = true;
    }

    /// Whether this host may judge others dead now, with leases of `ttl`.
    fn may_judge(&self, ttl: Duration) -> bool {
        let s = self.lock();
        !s.failing && s.back_at.is_none_or(|at| at.elapsed() >= ttl)
    }
}

/// Records the heartbeat every [`BEAT`] until `cancel`, then leaves (its lease ends at
/// once, so what it held is taken over without waiting). The first heartbeat is
/// recorded before this returns: a host claims nothing before it is known alive.
/// `own` learns whether the beats are recorded.
pub async fn run(pool: Arc<Pool>, me: Member, cancel: CancellationToken, own: Arc<OwnBeat>) {
    let version = env!("CARGO_PKG_VERSION");
    let mut failing = false;
    loop {
        let (p, m) = (pool.clone(), me.clone());
        let beat = tokio::task::spawn_blocking(move || {
            hosts::heartbeat(&p, &m.name, &m.api_addr, version, m.ttl)
        })
        .await;
        match &beat {
            Ok(Ok(_)) => own.recorded(),
            Ok(Err(_)) => own.failed(),
            Err(_) => {}
        }
        match beat {
            Ok(Ok(_)) if failing => {
                tracing::info!("heartbeat recorded again in the cluster store");
                failing = false;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if !failing {
                    tracing::error!(
                        "{e}: other hosts will count this host as dead after its lease"
                    );
                }
                failing = true;
            }
            Err(_) => return,
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(BEAT) => {}
        }
    }
    let name = me.name.clone();
    let _ = tokio::task::spawn_blocking(move || hosts::leave(&pool, &name)).await;
}

/// The cluster's view of who is alive, read at most once a second.
pub struct Heartbeats {
    pool: Arc<Pool>,
    me: String,
    ttl: Duration,
    own: Arc<OwnBeat>,
    live: Mutex<Option<(Instant, Vec<String>)>>,
}

impl Heartbeats {
    pub fn new(pool: Arc<Pool>, me: String, ttl: Duration, own: Arc<OwnBeat>) -> Heartbeats {
        Heartbeats {
            pool,
            me,
            ttl,
            own,
            live: Mutex::new(None),
        }
    }

    fn live(&self) -> Option<Vec<String>> {
        let mut cached = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, names)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return Some(names.clone());
        }
        let names: Vec<String> = hosts::live_hosts(&self.pool)
            .ok()?
            .into_iter()
            .map(|h| h.name)
            .collect();
        *cached = Some((Instant::now(), names.clone()));
        Some(names)
    }
}

impl Liveness for Heartbeats {
    fn gone(&self, owner: &str) -> bool {
        if owner == self.me {
            // Only asked about messages this host's task does not run: its earlier
            // life left them.
            return true;
        }
        // The store cannot be read, or was away a moment ago: nobody is declared
        // dead on a guess.
        if !self.own.may_judge(self.ttl) {
            return false;
        }
        self.live()
            .is_some_and(|live| !live.iter().any(|n| n == owner))
    }

    fn check_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_secs(1))
    }
}
