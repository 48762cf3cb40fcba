//! Coordination by leases in the cluster's PostgreSQL store (docs/cluster.md): a
//! continuous singleton holds `continuous/JOB` (`cluster::leases`), a triggered run
//! holds `triggered/JOB`, taken through the host's `RunDesk` with its occurrence's
//! claim in the same statement (`cluster::fires`), or ahead of the occurrence and
//! claimed with the run's record. A lease is renewed every third of its ttl; one that
//! is lost, or not confirmed for two thirds of its ttl, is reported lost so its run
//! ends before the lease expires. Every call to the store is bounded (a third of the
//! ttl): a store that does not answer must not hold up a job's task.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, ready};
use tokio::time::Instant;

use super::{Coordination, Refused, Renewal, RunHold, RunHow, SingletonHold, SingletonHow};
use crate::cluster::ClusterError;
use crate::cluster::fires::{Take, Taken};
use crate::cluster::leases::{self, Held};
use crate::cluster::member::ClusterLink;
use crate::fsutil::FileWriter;

/// How long before its next occurrence an idle job takes its run lease.
const LEASE_AHEAD: Duration = Duration::from_millis(300);

/// Leases in the cluster store, for this host (`link.me`).
pub struct Store {
    link: Arc<ClusterLink>,
}

impl Store {
    pub fn new(link: Arc<ClusterLink>) -> Store {
        Store { link }
    }
}

/// A lease held, and when to renew it.
pub(super) struct Lease {
    pub(super) name: String,
    pub(super) held: Held,
    /// The last time the store confirmed it (before the call, to err on the safe side).
    pub(super) confirmed_at: Instant,
    pub(super) next_renew: Instant,
}

impl Lease {
    fn new(name: String, held: Held, asked: Instant) -> Lease {
        Lease {
            name,
            held,
            confirmed_at: asked,
            next_renew: asked + held.ttl / 3,
        }
    }
}

/// A run lease: given up when dropped unless given up otherwise.
pub(super) struct RunLease {
    link: Arc<ClusterLink>,
    pub(super) lease: Lease,
    /// Given up already (with the run's record), or taken again by this host.
    pub(super) released: bool,
}

impl Drop for RunLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (link, name, held) = (self.link.clone(), self.lease.name.clone(), self.lease.held);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(move || {
                let _ = leases::release(&link.pool, &name, &link.me.name, held);
            });
        }
    }
}

/// What to say of a renewal, for the two kinds of lease.
struct Words {
    what: &'static str,
    taken_over: &'static str,
    failed: &'static str,
}

/// Renews `lease` a third of its ttl after its last confirmation. A store that fails
/// is asked again in a second while the lease is still well inside its ttl (`retry`
/// is told why); `Lost` once it is lost or could not be confirmed for two thirds of
/// its ttl, with the time left before it expires (less a margin for the stop's own
/// signals and reaping).
async fn renew(
    link: &Arc<ClusterLink>,
    lease: &mut Lease,
    words: Words,
    retry: impl FnOnce(&ClusterError),
) -> Renewal {
    let (name, held, asked) = (lease.name.clone(), lease.held, Instant::now());
    let c = link.clone();
    let call = tokio::task::spawn_blocking(move || leases::renew(&c.pool, &name, &c.me.name, held));
    // A store that does not answer (a network cut drops packets) must not hold the
    // run past its lease: the wait is bounded like a failed renewal.
    let renewed = match tokio::time::timeout(held.ttl / 3, call).await {
        Ok(r) => r,
        Err(_) => Ok(Err(ClusterError::Unavailable {
            url: link.pool.url().to_string(),
            what: words.what.into(),
            reason: format!("no answer within {} ms", (held.ttl / 3).as_millis()),
        })),
    };
    let why = match renewed {
        Ok(Ok(true)) => {
            lease.confirmed_at = asked;
            lease.next_renew = asked + held.ttl / 3;
            return Renewal::Kept;
        }
        Ok(Ok(false)) => words.taken_over.to_string(),
        Ok(Err(e)) if Instant::now() + held.ttl / 3 < lease.confirmed_at + held.ttl => {
            // Asked again soon; still well inside the lease.
            retry(&e);
            lease.next_renew = Instant::now() + Duration::from_secs(1);
            return Renewal::Kept;
        }
        Ok(Err(e)) => format!("{}: {e}", words.failed),
        // The host is stopping: its stop ends the run.
        Err(_) => return Renewal::Kept,
    };
    let expires = lease.confirmed_at + held.ttl;
    let grace = expires
        .saturating_duration_since(Instant::now())
        .saturating_sub(Duration::from_millis(500));
    Renewal::Lost { why, grace }
}

fn singleton_lease(job: &str) -> String {
    format!("continuous/{job}")
}

fn run_lease(job: &str) -> String {
    format!("triggered/{job}")
}

impl Coordination for Store {
    fn logs_alone(&self) -> bool {
        // A host of a cluster holds its LOGS alone (refused beside another host).
        true
    }

    fn take_singleton(
        &self,
        job: &str,
        _files: &FileWriter,
    ) -> BoxFuture<'static, Result<SingletonHold, Option<String>>> {
        let (link, name) = (self.link.clone(), singleton_lease(job));
        async move {
            let asked = Instant::now();
            let (c, n) = (link.clone(), name.clone());
            let call = tokio::task::spawn_blocking(move || {
                leases::acquire(&c.pool, &n, &c.me.name, c.me.ttl)
            });
            let taken = tokio::time::timeout(link.me.ttl / 3, call)
                .await
                .map_err(|_| {
                    Some(
                        "the cluster store does not answer; the singleton waits for it".to_string(),
                    )
                })?
                .map_err(|_| Some("the host is stopping".to_string()))?;
            match taken {
                Ok(Some(held)) => Ok(SingletonHold {
                    how: SingletonHow::Lease(Lease::new(name, held, asked)),
                }),
                Ok(None) => Err(None),
                Err(e) => Err(Some(format!("{e}; the singleton waits for the store"))),
            }
        }
        .boxed()
    }

    fn renew_singleton<'a>(&'a self, hold: &'a mut SingletonHold) -> BoxFuture<'a, Renewal> {
        let SingletonHow::Lease(lease) = &mut hold.how else {
            return ready(Renewal::Kept).boxed();
        };
        let words = Words {
            what: "renewing the singleton's lease",
            taken_over: "another host took it over",
            failed: "it could not be renewed",
        };
        renew(&self.link, lease, words, |_| {}).boxed()
    }

    fn release_singleton(
        &self,
        hold: SingletonHold,
        _files: &FileWriter,
    ) -> BoxFuture<'static, ()> {
        let SingletonHow::Lease(lease) = hold.how else {
            return ready(()).boxed();
        };
        let link = self.link.clone();
        async move {
            let release = tokio::task::spawn_blocking(move || {
                leases::release(&link.pool, &lease.name, &link.me.name, lease.held)
            });
            let _ = release.await;
        }
        .boxed()
    }

    fn lead(&self) -> Option<Duration> {
        Some(LEASE_AHEAD)
    }

    /// Through the host's `RunDesk` (one statement for all the runs asked at once);
    /// a scheduled run's occurrence is claimed in the same statement. Refused when
    /// another host holds the lease or fired the occurrence; unavailable when the
    /// store cannot say (then nothing runs: an occurrence must not fire unclaimed).
    fn take_run(
        &self,
        job: &str,
        fire: Option<DateTime<Utc>>,
    ) -> BoxFuture<'static, Result<Option<RunHold>, Refused>> {
        let link = self.link.clone();
        let name = run_lease(job);
        let take = Take {
            lease: name.clone(),
            job: job.to_string(),
            occurrence: fire,
            claim: fire.is_some(),
        };
        async move {
            let asked = Instant::now();
            // Bounded: a store that does not answer must not hold up the job's task
            // (a claim answered too late is given back by the desk).
            let (url, wait) = (link.pool.url().to_string(), link.me.ttl / 3);
            let taken = match tokio::time::timeout(wait, link.run_desk.take(take)).await {
                Ok(taken) => taken,
                Err(_) => Err(ClusterError::Unavailable {
                    url,
                    what: "taking the run lease".into(),
                    reason: format!("no answer within {} ms", wait.as_millis()),
                }),
            };
            match taken {
                Ok(Taken {
                    held: Some(held),
                    last_fired,
                    claimed,
                }) => {
                    // Taken, but another host claimed the occurrence meanwhile: the
                    // gate sees it as fired (the hold gives the lease back). Claimed:
                    // no later one was fired (the latest may be this host's own
                    // claim, granted again: see `cluster::fires`).
                    let last_fired = match (fire, claimed) {
                        (Some(at), false) => last_fired.max(Some(at)),
                        (Some(at), true) => last_fired.filter(|l| *l < at),
                        (None, _) => last_fired,
                    };
                    Ok(Some(RunHold {
                        how: RunHow::Lease(RunLease {
                            link,
                            lease: Lease::new(name, held, asked),
                            released: false,
                        }),
                        last_fired,
                        claimed: fire.filter(|_| claimed),
                    }))
                }
                Ok(_) => Err(Refused::Busy),
                Err(e) => Err(Refused::Unavailable(e.to_string())),
            }
        }
        .boxed()
    }

    /// The lease only (not the claim: that is written with the run's record, and
    /// nobody else fires the occurrence while this host holds the lease).
    fn take_run_ahead(
        &self,
        job: &str,
        occurrence: DateTime<Utc>,
    ) -> BoxFuture<'static, Option<RunHold>> {
        let link = self.link.clone();
        let name = run_lease(job);
        let take = Take {
            lease: name.clone(),
            job: job.to_string(),
            occurrence: Some(occurrence),
            claim: false,
        };
        async move {
            let asked = Instant::now();
            let wait = LEASE_AHEAD.max(link.me.ttl / 3);
            let Ok(Ok(taken)) = tokio::time::timeout(wait, link.run_desk.take(take)).await else {
                return None;
            };
            let held = taken.held?;
            Some(RunHold {
                how: RunHow::Lease(RunLease {
                    link,
                    lease: Lease::new(name, held, asked),
                    released: false,
                }),
                last_fired: None,
                // Claimed with the run's record (`cluster::runs`).
                claimed: Some(occurrence),
            })
        }
        .boxed()
    }

    fn renew_run<'a>(&'a self, job: &'a str, hold: &'a mut RunHold) -> BoxFuture<'a, Renewal> {
        let RunHow::Lease(run) = &mut hold.how else {
            return ready(Renewal::Kept).boxed();
        };
        let words = Words {
            what: "renewing the run lease",
            taken_over: "another host took the run lease over",
            failed: "the run lease could not be renewed",
        };
        async move {
            let renewal = renew(&self.link, &mut run.lease, words, |e| {
                tracing::warn!(job = %job, "{e}: renewing the run lease again in 1 s");
            })
            .await;
            if let Renewal::Lost { .. } = renewal {
                // Not renewed again: the run is stopped.
                run.lease.next_renew = Instant::now() + Duration::from_secs(3600);
            }
            renewal
        }
        .boxed()
    }

    fn claim_fire(&self, job: &str, at: DateTime<Utc>) -> BoxFuture<'static, Result<(), String>> {
        let (link, job) = (self.link.clone(), job.to_string());
        async move {
            let claimed = tokio::task::spawn_blocking(move || {
                crate::cluster::fires::claim(&link.pool, &job, at, &link.me.name)
            })
            .await;
            match claimed {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err(format!(
                    "the occurrence {} was already fired by another host",
                    crate::fsutil::rfc3339_string(at)
                )),
                Ok(Err(e)) => Err(format!("claiming the occurrence in the cluster store: {e}")),
                Err(_) => Err("the host is stopping".into()),
            }
        }
        .boxed()
    }

    /// Read with the lease: the store's, not this host's records.
    fn last_fired(
        &self,
        _job: &str,
        hold: Option<&RunHold>,
    ) -> BoxFuture<'static, Option<DateTime<Utc>>> {
        ready(hold.and_then(|h| h.last_fired)).boxed()
    }
}
