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

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::job::{Ctx, JobCommand, JobHandle, continuous};
use crate::scan::{self, JobDefinition};
use crate::spec::JobType;
use crate::status::ContinuousStatus;
use crate::watch::Hint;

/// Quiet time after the last hint before rescanning.
const SETTLE: Duration = Duration::from_millis(100);
/// A rescan happens at most this long after the first hint, settled or not.
const SETTLE_MAX: Duration = Duration::from_millis(900);
/// Rescan period when inotify cannot be used.
const FALLBACK_PERIOD: Duration = Duration::from_secs(5);
const FOLLOW_UP: Duration = Duration::from_secs(1);

/// Read-only view of job statuses, for the API and tests.
pub type StatusBoard = Arc<RwLock<BTreeMap<String, watch::Receiver<ContinuousStatus>>>>;

pub struct Supervisor {
    ctx: Ctx,
    jobs_root: PathBuf,
    path_env: Option<OsString>,
    running: BTreeMap<String, Tracked>,
    triggered: BTreeMap<String, (u64, Vec<String>)>,
    reported: HashSet<String>,
    board: StatusBoard,
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
            triggered: BTreeMap::new(),
            reported: HashSet::new(),
            board: StatusBoard::default(),
            cancel,
            tracker,
        }
    }

    pub fn board(&self) -> StatusBoard {
        self.board.clone()
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
        let mut appeared = false;
        let mut seen = HashSet::new();
        let mut seen_triggered = HashSet::new();
        for ((job_type, name), def) in scan.jobs {
            match job_type {
                JobType::Continuous => {
                    seen.insert(name.clone());
                    appeared |= self.reconcile_continuous(name, def);
                }
                JobType::Triggered => {
                    seen_triggered.insert(name.clone());
                    self.note_triggered(name, &def);
                }
            }
        }
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(t) = self.running.remove(&name) {
                tracing::info!(job = %name, "continuous job folder removed: stopping it");
                let _ = t.handle.tx.send(JobCommand::Remove);
            }
            self.write_board().remove(&name);
        }
        self.triggered.retain(|n, _| seen_triggered.contains(n));
        appeared
    }

    fn write_board(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, watch::Receiver<ContinuousStatus>>> {
        self.board.write().unwrap_or_else(|e| e.into_inner())
    }

    fn reconcile_continuous(&mut self, name: String, def: JobDefinition) -> bool {
        let sent = (def.fingerprint, def.disabled, def.errors.clone());
        match self.running.get_mut(&name) {
            Some(t) => {
                if t.sent != sent {
                    t.sent = sent;
                    let _ = t.handle.tx.send(JobCommand::Update(Box::new(def)));
                }
                false
            }
            None => {
                tracing::info!(job = %name, "continuous job found");
                let handle =
                    continuous::spawn(self.ctx.clone(), def, self.cancel.clone(), &self.tracker);
                self.write_board()
                    .insert(name.clone(), handle.status.clone());
                self.running.insert(name, Tracked { handle, sent });
                true
            }
        }
    }

    /// Triggered jobs are validated and reported here; running them is the
    /// scheduler's (not built yet).
    fn note_triggered(&mut self, name: String, def: &JobDefinition) {
        let key = (def.fingerprint, def.errors.clone());
        if self.triggered.get(&name) == Some(&key) {
            return;
        }
        if def.errors.is_empty() {
            let schedule = def
                .settings
                .as_ref()
                .and_then(|s| s.schedule.as_ref())
                .map(|s| format!("schedule `{}` ({})", s.expr(), s.timezone()))
                .unwrap_or_else(|| "no schedule (on demand only)".into());
            tracing::info!(job = %name, "triggered job found: {schedule}");
        } else {
            tracing::error!(job = %name, "triggered job {name}: {}", def.errors.join("; "));
        }
        self.triggered.insert(name, key);
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
