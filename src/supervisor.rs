//! The registry of jobs: rescans JOBS when told something changed and reconciles the
//! jobs found with the job tasks running.
//!
//! Hints from the watcher are debounced: the supervisor waits until they stop for a
//! moment (bounded, so a folder that never settles is still picked up), then rescans
//! once. New jobs get a task, changed ones an update, removed ones a stop. A job that
//! appeared is rescanned once more a second later, because inotify can miss files
//! created right after their folder.
//!
//! Writes through the API (deploy, delete, settings, start, stop) do not wait for the
//! watcher: the API asks the supervisor to rescan that one job at once
//! ([`SupervisorHandle::refresh`]) and waits until the job's task has applied the new
//! definition, so the very next request sees the write.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::job::{Begin, Ctx, JobCommand, JobHandle};
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
/// How long a write waits for the job's task to apply it. A task busy stopping a run
/// that ignores SIGTERM answers late; the registry already shows the write then.
const APPLY_WAIT: Duration = Duration::from_secs(10);

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

/// Requests to the supervisor from the API.
enum Control {
    /// Rescan one job folder now; answered with the acknowledgements to wait for.
    Refresh {
        key: (JobType, String),
        reply: oneshot::Sender<Vec<oneshot::Receiver<()>>>,
    },
}

/// The API's way to make a write visible at once.
#[derive(Clone)]
pub struct SupervisorHandle(mpsc::UnboundedSender<Control>);

impl SupervisorHandle {
    /// Rescans one job's folder (after the API wrote into it) and returns once the
    /// registry and the job's task show what is there now.
    pub async fn refresh(&self, job_type: JobType, name: &str) {
        let (reply, rx) = oneshot::channel();
        let key = (job_type, name.to_string());
        if self.0.send(Control::Refresh { key, reply }).is_err() {
            return;
        }
        let Ok(waits) = rx.await else { return };
        let all = futures_util::future::join_all(waits);
        let _ = tokio::time::timeout(APPLY_WAIT, all).await;
    }
}

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
    control_tx: mpsc::UnboundedSender<Control>,
    control: mpsc::UnboundedReceiver<Control>,
    /// Tasks of removed jobs, until they end: a job of the same name that comes back
    /// meanwhile starts its runs only after them.
    retiring: BTreeMap<(JobType, String), mpsc::UnboundedSender<JobCommand>>,
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
        let (control_tx, control) = mpsc::unbounded_channel();
        Supervisor {
            control_tx,
            control,
            retiring: BTreeMap::new(),
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

    pub fn handle(&self) -> SupervisorHandle {
        SupervisorHandle(self.control_tx.clone())
    }

    /// Runs until the host is cancelled.
    pub async fn run(mut self, mut hints: mpsc::UnboundedReceiver<Hint>, mut degraded: bool) {
        let follow = |appeared: bool| appeared.then(|| Instant::now() + FOLLOW_UP);
        let mut follow_at = follow(self.rescan());
        let mut next_fallback = Instant::now() + FALLBACK_PERIOD;
        // Hints are debounced: a rescan waits until they stop for SETTLE, at most
        // SETTLE_MAX after the first. Requests from the API are answered meanwhile.
        let mut settling: Option<(Instant, Instant)> = None;
        loop {
            let fallback_at = degraded.then_some(next_fallback);
            let settled_at = settling.map(|(quiet, max)| quiet.min(max));
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                hint = hints.recv(), if !hints.is_closed() => {
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
                    let now = Instant::now();
                    let max = settling.map_or(now + SETTLE_MAX, |(_, max)| max);
                    settling = Some((now + SETTLE, max));
                }
                Some(ctl) = self.control.recv() => self.on_control(ctl),
                _ = sleep_opt(settled_at) => {
                    settling = None;
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

    fn on_control(&mut self, ctl: Control) {
        match ctl {
            Control::Refresh { key, reply } => {
                let dir = self.jobs_root.join(key.0.as_str()).join(&key.1);
                let mut waits = Vec::new();
                if dir.is_dir() {
                    let def = scan::load(&dir, key.0, self.path_env.as_deref());
                    let (tx, rx) = oneshot::channel();
                    self.reconcile(key, def, Some(tx), true);
                    waits.push(rx);
                } else {
                    self.remove(key);
                }
                let _ = reply.send(waits);
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
            self.remove(key);
        }
        self.retiring.retain(|_, tx| !tx.is_closed());
        for (key, def) in scan.jobs {
            appeared |= self.reconcile(key, def, None, false);
        }
        appeared
    }

    /// The job's folder is gone: its task stops gracefully and it is no longer listed.
    fn remove(&mut self, key: (JobType, String)) {
        if let Some(t) = self.running.remove(&key) {
            tracing::info!(job = %key.1, "{} job folder removed: stopping it", key.0);
            let _ = t.handle.tx.send(JobCommand::Remove);
            self.retiring.insert(key.clone(), t.handle.tx);
        }
        self.write_registry().remove(&key);
    }

    fn write_registry(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(JobType, String), RegistryEntry>> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a job's definition to its task (starting one for a new job). `force`
    /// sends it even when unchanged, so that `applied` is answered only after any
    /// update already on its way.
    fn reconcile(
        &mut self,
        key: (JobType, String),
        def: JobDefinition,
        applied: crate::job::Applied,
        force: bool,
    ) -> bool {
        let sent = (def.fingerprint, def.disabled, def.errors.clone());
        match self.running.get_mut(&key) {
            Some(t) => {
                if force || t.sent != sent {
                    t.sent = sent;
                    let shared = Arc::new(def.clone());
                    let _ = t.handle.tx.send(JobCommand::Update(Box::new(def), applied));
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
                let begin = Begin {
                    applied,
                    predecessor: self.retiring.remove(&key).filter(|tx| !tx.is_closed()),
                };
                let handle = crate::job::spawn(ctx, def, cancel, &self.tracker, begin);
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
