//! The supervisor: rescans JOBS when told something changed and reconciles the jobs
//! found with the job tasks running. Its view of them is the job registry
//! ([`registry`]), which the API reads and writes through.
//!
//! Hints from the watcher are debounced: the supervisor waits until they stop for a
//! moment (bounded, so a folder that never settles is still picked up), then rescans
//! once. New jobs get a task, changed ones an update, removed ones a stop. A job that
//! appeared is rescanned once more a second later, because inotify can miss files
//! created right after their folder. A rescan stats every file of every job, so it
//! runs on the blocking pool; the supervisor awaits it before reconciling, so
//! reconciles keep their order.
//!
//! Writes through the API (deploy, delete, settings, start, stop) do not wait for the
//! watcher: [`JobRegistry`] writes the files, then asks the supervisor to rescan that
//! one job at once and waits until the job's task has applied the new definition, so
//! the very next request sees the write.

pub mod deploy;
pub mod registry;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::job::triggered::records;
use crate::job::{Begin, Ctx, JobCommand, JobHandle};
use crate::scan::{self, JobDefinition};
use crate::spec::JobType;
use crate::watch::Hint;

pub use registry::{Installed, JobRegistry, Jobs, Problems, RegistryEntry, WriteError};

/// Quiet time after the last hint before rescanning.
const SETTLE: Duration = Duration::from_millis(100);
/// A rescan happens at most this long after the first hint, settled or not.
const SETTLE_MAX: Duration = Duration::from_millis(900);
/// Rescan period when inotify cannot be used.
const FALLBACK_PERIOD: Duration = Duration::from_secs(5);
const FOLLOW_UP: Duration = Duration::from_secs(1);

/// Requests to the supervisor from the registry's writes.
enum Control {
    /// Rescan one job folder now; answered with the acknowledgements to wait for.
    Refresh {
        key: (JobType, String),
        reply: oneshot::Sender<Vec<oneshot::Receiver<()>>>,
    },
}

pub struct Supervisor {
    ctx: Ctx,
    jobs_root: PathBuf,
    path_env: Option<OsString>,
    running: BTreeMap<(JobType, String), Tracked>,
    reported: HashSet<String>,
    registry: Arc<RwLock<Jobs>>,
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
            registry: Arc::default(),
            problems: Problems::default(),
            cancel,
            tracker,
        }
    }

    /// The registry's handle for the API: reads the view, writes through here.
    pub fn registry(&self) -> JobRegistry {
        JobRegistry::new(
            self.registry.clone(),
            self.problems.clone(),
            self.jobs_root.clone(),
            self.control_tx.clone(),
        )
    }

    /// The first rescan, before [`Supervisor::run`]: the host lists its jobs before
    /// its API answers. True when a job appeared (as [`Supervisor::rescan`]).
    pub async fn scan_first(&mut self) -> bool {
        self.rescan().await
    }

    /// Runs until the host is cancelled, after [`Supervisor::scan_first`] (`appeared`:
    /// what it answered).
    pub async fn run(
        mut self,
        mut hints: mpsc::UnboundedReceiver<Hint>,
        mut degraded: bool,
        appeared: bool,
    ) {
        let follow = |appeared: bool| appeared.then(|| Instant::now() + FOLLOW_UP);
        let mut follow_at = follow(appeared);
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
                Some(ctl) = self.control.recv() => self.on_control(ctl).await,
                _ = sleep_opt(settled_at) => {
                    settling = None;
                    follow_at = follow(self.rescan().await).or(follow_at);
                }
                _ = sleep_opt(follow_at) => {
                    follow_at = None;
                    self.rescan().await;
                }
                _ = sleep_opt(fallback_at) => {
                    next_fallback = Instant::now() + FALLBACK_PERIOD;
                    self.rescan().await;
                }
            }
        }
    }

    async fn on_control(&mut self, ctl: Control) {
        match ctl {
            Control::Refresh { key, reply } => {
                let dir = self.jobs_root.join(key.0.as_str()).join(&key.1);
                let (job_type, path_env) = (key.0, self.path_env.clone());
                let history = self.history_to_read(&key);
                let load = move || {
                    dir.is_dir().then(|| {
                        let def = scan::load(&dir, job_type, path_env.as_deref());
                        (def, history.map(|logs| records::History::read(&logs)))
                    })
                };
                let Some(found) = off_the_workers("rescanning a job", load).await else {
                    return; // the reply dropped: the writer stops waiting
                };
                let mut waits = Vec::new();
                match found {
                    Some((def, history)) => {
                        let (tx, rx) = oneshot::channel();
                        self.reconcile(key, def, Some(tx), true, history);
                        waits.push(rx);
                    }
                    None => self.remove(key),
                }
                let _ = reply.send(waits);
            }
        }
    }

    /// Rescans and reconciles. True when a job appeared (worth a follow-up rescan).
    async fn rescan(&mut self) -> bool {
        let (root, path_env) = (self.jobs_root.clone(), self.path_env.clone());
        let (layout, known) = (self.ctx.layout.clone(), self.running_triggered());
        let scan = move || {
            let scan = scan::scan(&root, path_env.as_deref());
            // The records of the triggered jobs that appeared, for their first status.
            let histories: HashMap<String, records::History> = scan
                .jobs
                .keys()
                .filter(|(t, name)| *t == JobType::Triggered && !known.contains(name))
                .map(|(_, name)| {
                    let logs = layout.job_dir(JobType::Triggered, name);
                    (name.clone(), records::History::read(&logs))
                })
                .collect();
            (scan, histories)
        };
        let Some((scan, mut histories)) = off_the_workers("rescanning JOBS", scan).await else {
            return false; // the next hint or fallback period rescans
        };
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
            let history = match key.0 {
                JobType::Triggered => histories.remove(&key.1),
                JobType::Continuous => None,
            };
            appeared |= self.reconcile(key, def, None, false, history);
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

    fn write_registry(&self) -> std::sync::RwLockWriteGuard<'_, Jobs> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The names of the triggered jobs that have a task.
    fn running_triggered(&self) -> HashSet<String> {
        self.running
            .keys()
            .filter(|(t, _)| *t == JobType::Triggered)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// For a triggered job without a task: its records folder, to read its history
    /// from before it is listed.
    fn history_to_read(&self, key: &(JobType, String)) -> Option<PathBuf> {
        (key.0 == JobType::Triggered && !self.running.contains_key(key))
            .then(|| self.ctx.layout.job_dir(JobType::Triggered, &key.1))
    }

    /// Sends a job's definition to its task (starting one for a new job, with its
    /// `history` when it is a triggered job's, read off the workers). `force` sends
    /// it even when unchanged, so that `applied` is answered only after any update
    /// already on its way.
    fn reconcile(
        &mut self,
        key: (JobType, String),
        def: JobDefinition,
        applied: crate::job::Applied,
        force: bool,
        history: Option<records::History>,
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
                    history,
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

/// Runs file-system reading (a scan stats every file of every job) on the blocking
/// pool, so a slow disk stalls no async worker. `None` when the work panicked; said
/// in the host log.
async fn off_the_workers<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(out) => Some(out),
        Err(e) => {
            tracing::error!("{what}: {e}");
            None
        }
    }
}
