//! The registry of jobs: rescans JOBS when told something changed and reconciles the
//! jobs found with the job tasks running.
//!
//! Hints from the watcher are debounced: the supervisor waits until they stop for a
//! moment (bounded, so a folder that never settles is still picked up), then rescans
//! once. New jobs get a task, changed ones an update, removed ones a stop. A job that
//! appeared is rescanned once more a second later, because inotify can miss files
//! created right after their folder.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::job::{Ctx, JobCommand, JobHandle, continuous, triggered};
use crate::scan::{self, JobDefinition};
use crate::spec::JobType;
use crate::watch::Hint;

/// Quiet time after the last hint before rescanning.
const SETTLE: Duration = Duration::from_millis(100);
/// A rescan happens at most this long after the first hint, settled or not.
const SETTLE_MAX: Duration = Duration::from_millis(900);
/// Rescan period when inotify cannot be used.
const FALLBACK_PERIOD: Duration = Duration::from_secs(5);
const FOLLOW_UP: Duration = Duration::from_secs(1);

/// Every job task's handle, for the API: it sends commands and reads statuses here.
pub type Registry = Arc<RwLock<BTreeMap<(JobType, String), RegistryEntry>>>;

/// One job as the API sees it.
#[derive(Clone)]
pub struct RegistryEntry {
    pub handle: JobHandle,
    pub def: Arc<JobDefinition>,
}

/// Problems with entries of JOBS that are not jobs (bad names, files), for the API.
pub type Problems = Arc<RwLock<Vec<String>>>;

pub struct Supervisor {
    ctx: Ctx,
    jobs_root: PathBuf,
    path_env: Option<OsString>,
    running: BTreeMap<(JobType, String), Tracked>,
    reported: HashSet<String>,
    registry: Registry,
    problems: Problems,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

struct Tracked {
    handle: JobHandle,
    /// What was last sent, so an unchanged rescan sends nothing.
    sent: (u64, bool, Vec<String>),
}

impl Supervisor {
    pub fn new(
        ctx: Ctx,
        jobs_root: PathBuf,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Supervisor {
        Supervisor {
            ctx,
            jobs_root,
            path_env: std::env::var_os("PATH"),
            running: BTreeMap::new(),
            reported: HashSet::new(),
            registry: Registry::default(),
            problems: Problems::default(),
            cancel,
            tracker,
        }
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    pub fn problems(&self) -> Problems {
        self.problems.clone()
    }

    /// Runs until the host is cancelled.
    pub async fn run(mut self, mut hints: mpsc::UnboundedReceiver<Hint>, mut degraded: bool) {
        let follow = |appeared: bool| appeared.then(|| Instant::now() + FOLLOW_UP);
        let mut follow_at = follow(self.rescan());
        let mut next_fallback = Instant::now() + FALLBACK_PERIOD;
        loop {
            let fallback_at = degraded.then_some(next_fallback);
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                hint = hints.recv() => {
                    let Some(hint) = hint else {
                        degraded = true;
                        continue;
                    };
                    if let Hint::Degraded(why) = &hint
                        && !degraded
                    {
                        tracing::warn!("{why}; falling back to a rescan every {} s", FALLBACK_PERIOD.as_secs());
                        degraded = true;
                    }
                    self.settle(&mut hints).await;
                    follow_at = follow(self.rescan()).or(follow_at);
                }
                _ = sleep_opt(follow_at) => {
                    follow_at = None;
                    self.rescan();
                }
                _ = sleep_opt(fallback_at) => {
                    next_fallback = Instant::now() + FALLBACK_PERIOD;
                    self.rescan();
                }
            }
        }
    }

    /// Waits until hints stop arriving for SETTLE, at most SETTLE_MAX.
    async fn settle(&self, hints: &mut mpsc::UnboundedReceiver<Hint>) {
        let deadline = Instant::now() + SETTLE_MAX;
        loop {
            let quiet_until = (Instant::now() + SETTLE).min(deadline);
            tokio::select! {
                h = hints.recv() => if h.is_none() { return },
                _ = tokio::time::sleep_until(quiet_until) => return,
            }
            if Instant::now() >= deadline {
                return;
            }
        }
    }

    /// Rescans and reconciles. True when a job appeared (worth a follow-up rescan).
    fn rescan(&mut self) -> bool {
        let scan = scan::scan(&self.jobs_root, self.path_env.as_deref());
        for p in &scan.problems {
            if self.reported.insert(p.clone()) {
                tracing::error!("{p}");
            }
        }
        *self.problems.write().unwrap_or_else(|e| e.into_inner()) = scan.problems.clone();
        let mut appeared = false;
        let gone: Vec<(JobType, String)> = self
            .running
            .keys()
            .filter(|k| !scan.jobs.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(t) = self.running.remove(&key) {
                tracing::info!(job = %key.1, "{} job folder removed: stopping it", key.0);
                let _ = t.handle.tx.send(JobCommand::Remove);
            }
            self.write_registry().remove(&key);
        }
        for (key, def) in scan.jobs {
            appeared |= self.reconcile(key, def);
        }
        appeared
    }

    fn write_registry(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(JobType, String), RegistryEntry>> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    fn reconcile(&mut self, key: (JobType, String), def: JobDefinition) -> bool {
        let sent = (def.fingerprint, def.disabled, def.errors.clone());
        match self.running.get_mut(&key) {
            Some(t) => {
                if t.sent != sent {
                    t.sent = sent;
                    let shared = Arc::new(def.clone());
                    let _ = t.handle.tx.send(JobCommand::Update(Box::new(def)));
                    if let Some(e) = self.write_registry().get_mut(&key) {
                        e.def = shared;
                    }
                }
                false
            }
            None => {
                tracing::info!(job = %key.1, "{} job found", key.0);
                let shared = Arc::new(def.clone());
                let (ctx, cancel) = (self.ctx.clone(), self.cancel.clone());
                let handle = match key.0 {
                    JobType::Continuous => continuous::spawn(ctx, def, cancel, &self.tracker),
                    JobType::Triggered => triggered::spawn(ctx, def, cancel, &self.tracker),
                };
                self.write_registry().insert(
                    key.clone(),
                    RegistryEntry {
                        handle: handle.clone(),
                        def: shared,
                    },
                );
                self.running.insert(key, Tracked { handle, sent });
                true
            }
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
