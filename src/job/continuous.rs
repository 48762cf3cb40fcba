//! The task that owns one continuous job: its run, its restart timer, its singleton
//! lock, its log and its status. Nothing else mutates them.
//!
//! The loop waits on four things: a command from the supervisor, the run's exit, the
//! restart timer and host shutdown. Decisions come from the pure pieces
//! ([`plan::on_definition`], [`Backoff`]); this file only carries them out and writes
//! what happened to the job log and `status.json`.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::plan::{self, Action, Desired, Phase};
use super::{Begin, Ctx, JobCommand, JobHandle, JobView, TriggerError};
use crate::fsutil::{rfc3339_string, write_atomic};
use crate::logsink::{self, LogSink};
use crate::runner::{Exit, Run, RunLog, RunRequest};
use crate::scan::JobDefinition;
use crate::spec::JobType;
use crate::spec::settings::JobSettings;
use crate::status::{ContinuousState, ContinuousStatus, LastExit};

/// How often a host that lost the singleton race asks again.
const LOCK_RETRY: Duration = Duration::from_secs(3);
/// Id used on SYS lines that belong to no run.
const NO_RUN: &str = "000000";
/// While a run writes, the API's view of its log counters is this fresh...
const LOG_STATS_VIEW: Duration = Duration::from_secs(1);
/// ...and `status.json` at most this stale: a flood of output must not cost a status
/// file write (and its rename) per line.
const LOG_STATS_FILE: Duration = Duration::from_secs(5);

/// Starts the task for `def` and returns its handle.
pub fn spawn(
    ctx: Ctx,
    def: JobDefinition,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
    begin: Begin,
) -> JobHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let status = ContinuousStatus::new(&def.name, ctx.layout.instance.as_deref());
    let (status_tx, status_rx) = watch::channel(status.clone());
    let handle = JobHandle {
        tx,
        view: JobView::Continuous(status_rx),
    };
    let singleton = def.settings.as_ref().is_some_and(|s| s.is_singleton);
    let sink_path = ctx.layout.job_log(&def.name, singleton);
    let settings = def.settings.as_deref().cloned().unwrap_or_default();
    let job = ContinuousJob {
        sink: Arc::new(Mutex::new(LogSink::new(
            sink_path,
            settings.log_max_bytes,
            settings.log_keep,
        ))),
        backoff: Backoff::new(settings.restart_delay, settings.restart_max_delay),
        ctx,
        def,
        active: None,
        run: None,
        restart_at: None,
        lock_retry_at: None,
        lock: None,
        status,
        status_tx,
        shown_error: None,
        log_changed: Arc::new(tokio::sync::Notify::new()),
        applied: Vec::new(),
        unrunnable: None,
        status_file_at: Instant::now(),
    };
    tracker.spawn(job.run_loop(rx, cancel, begin));
    handle
}

/// The configuration a run started from; kept while the folder turns invalid.
struct Active {
    settings: Arc<JobSettings>,
    fingerprint: u64,
}

struct ContinuousJob {
    ctx: Ctx,
    def: JobDefinition,
    active: Option<Active>,
    run: Option<Run>,
    restart_at: Option<Instant>,
    lock_retry_at: Option<Instant>,
    lock: Option<File>,
    sink: Arc<Mutex<LogSink>>,
    backoff: Backoff,
    status: ContinuousStatus,
    status_tx: watch::Sender<ContinuousStatus>,
    /// The error last written to the job log, so a rescan does not repeat it.
    shown_error: Option<String>,
    /// The pump says when lines were lost or the log recovered.
    log_changed: Arc<tokio::sync::Notify>,
    /// Writers waiting to see their definition applied: answered by the next publish.
    applied: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The fingerprint of files whose program the kernel refused to execute, and
    /// why: not started again until the files change.
    unrunnable: Option<(u64, String)>,
    /// When `status.json` was last written.
    status_file_at: Instant,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl ContinuousJob {
    async fn run_loop(
        mut self,
        mut rx: mpsc::UnboundedReceiver<JobCommand>,
        cancel: CancellationToken,
        mut begin: Begin,
    ) {
        if begin.predecessor.is_some() {
            self.applied.extend(begin.applied.take());
            self.status.detailed_status = "waiting for the job's previous run to stop".into();
            self.publish();
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = begin.predecessor_gone() => {}
            }
        }
        self.applied.extend(begin.applied.take());
        self.log_warnings();
        self.apply().await;
        self.applied.clear();
        let mut log_stats = tokio::time::interval(LOG_STATS_VIEW);
        log_stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.stop_run("host shutting down").await;
                    self.set_idle(ContinuousState::Stopped, "host stopped");
                    break;
                }
                cmd = rx.recv() => {
                    // Coalesce a burst: only the newest definition matters.
                    let mut latest = None;
                    let mut removed = false;
                    let mut next = cmd;
                    loop {
                        match next {
                            None | Some(JobCommand::Remove) => removed = true,
                            Some(JobCommand::Update(def, applied)) => {
                                latest = Some(def);
                                self.applied.extend(applied);
                            }
                            Some(JobCommand::Trigger { reply, .. }) => {
                                let _ = reply.send(Err(self.not_triggered()));
                            }
                            Some(JobCommand::Cancel { reply, .. }) => {
                                let _ = reply.send(Err(self.not_triggered()));
                            }
                        }
                        match rx.try_recv() {
                            Ok(more) => next = Some(more),
                            Err(_) => break,
                        }
                    }
                    // The channel also closes when the host stops (its senders go
                    // with the API): that is a shutdown, not a removal.
                    if removed && cancel.is_cancelled() {
                        self.stop_run("host shutting down").await;
                        self.set_idle(ContinuousState::Stopped, "host stopped");
                        break;
                    }
                    if removed {
                        self.stop_run("job folder removed").await;
                        self.release_lock();
                        self.ctx.runner.forget_job(JobType::Continuous, &self.def.name).await;
                        self.set_idle(ContinuousState::Stopped, "job folder removed");
                        break;
                    }
                    if let Some(def) = latest {
                        self.def = *def;
                        self.log_warnings();
                        self.apply().await;
                    }
                    // Whatever applying published has answered the writers; any left
                    // (nothing was published) learn it from the dropped sender.
                    self.applied.clear();
                }
                _ = self.log_changed.notified() => self.publish(),
                _ = log_stats.tick(), if self.run.is_some() => self.refresh_log_stats(),
                exit = wait_run(&mut self.run) => {
                    self.on_exit(exit).await;
                }
                _ = sleep_until_opt(self.restart_at) => {
                    self.restart_at = None;
                    self.start().await;
                }
                _ = sleep_until_opt(self.lock_retry_at) => {
                    self.lock_retry_at = None;
                    self.start().await;
                }
            }
        }
    }

    fn not_triggered(&self) -> TriggerError {
        TriggerError::NotTriggered {
            job: self.def.name.clone(),
        }
    }

    fn phase(&self) -> Phase {
        if self.run.is_some() {
            Phase::Running
        } else if self.restart_at.is_some() {
            Phase::Backoff
        } else {
            Phase::Idle
        }
    }

    fn grace(&self) -> Duration {
        self.active
            .as_ref()
            .map(|a| a.settings.stopping_wait_time)
            .or_else(|| self.def.settings.as_ref().map(|s| s.stopping_wait_time))
            .unwrap_or(Duration::from_secs(5))
    }

    fn singleton(&self) -> bool {
        self.def.settings.as_ref().is_some_and(|s| s.is_singleton)
    }

    /// A singleton's files belong to the lock holder alone.
    fn may_write(&self) -> bool {
        !self.singleton() || self.lock.is_some()
    }

    /// Carries out what the folder now says.
    async fn apply(&mut self) {
        if self.def.disabled
            || self
                .unrunnable
                .as_ref()
                .is_some_and(|(fp, _)| *fp != self.def.fingerprint)
        {
            // New files (or a switch off and on) are worth another try.
            self.unrunnable = None;
        }
        if self.unrunnable.is_some() && self.def.valid() {
            // The same files the kernel refused: stay in Error with its reason.
            self.show_unrunnable();
            return;
        }
        let desired = Desired {
            valid: self.def.valid(),
            disabled: self.def.disabled,
            files_changed: self
                .active
                .as_ref()
                .is_none_or(|a| a.fingerprint != self.def.fingerprint),
        };
        if self.def.valid() {
            self.shown_error = None;
            self.status.error = None;
            // Valid again (fixed, or the bad settings.job deleted: defaults apply)
            // while the run went on: it no longer runs on "last valid settings". A
            // change of files restarts it below; the same files keep it as it is.
            if self.run.is_some()
                && let Some(at) = self.status.started_at
            {
                self.status.status = ContinuousState::Running;
                self.status.detailed_status = format!("running since {}", rfc3339_string(at));
            }
        }
        match plan::on_definition(self.phase(), desired) {
            Action::Nothing => {
                if self.def.disabled {
                    self.release_lock();
                    self.set_idle(ContinuousState::Stopped, "disabled: disable.job is present");
                } else {
                    self.publish();
                }
            }
            Action::Start => {
                self.restart_at = None;
                self.backoff.reset();
                self.start().await;
            }
            Action::Restart => {
                self.stop_run("job files changed").await;
                self.backoff.reset();
                self.start().await;
            }
            Action::Stop => {
                let why = if self.def.disabled {
                    "disabled: disable.job is present"
                } else {
                    "job files are invalid"
                };
                self.stop_run(why).await;
                self.restart_at = None;
                if self.def.disabled {
                    self.release_lock();
                    self.set_idle(ContinuousState::Stopped, why);
                } else {
                    self.show_error();
                }
            }
            Action::KeepWithError => {
                self.show_error();
                self.status.detailed_status =
                    "running on its last valid settings; the job folder has errors".into();
                self.publish();
            }
            Action::ShowError => self.show_error(),
        }
    }

    fn error_text(&self) -> String {
        self.def.errors.join("; ")
    }

    fn show_error(&mut self) {
        let text = self.error_text();
        if self.shown_error.as_deref() != Some(text.as_str()) {
            tracing::error!(job = %self.def.name, "continuous job {}: {text}", self.def.name);
            for e in &self.def.errors {
                self.sys_error(NO_RUN, &format!("settings error: {e}"));
            }
            self.shown_error = Some(text.clone());
        }
        self.status.error = Some(text);
        if self.run.is_none() {
            self.set_idle(
                ContinuousState::Error,
                "the job folder has errors; fix them and the job starts",
            );
        }
    }

    fn show_unrunnable(&mut self) {
        self.status.error = self.unrunnable.as_ref().map(|(_, msg)| msg.clone());
        self.set_idle(
            ContinuousState::Error,
            "its program cannot be executed; fix the job's files and it starts",
        );
    }

    fn log_warnings(&mut self) {
        self.status.warnings = self.def.warnings.clone();
        for w in &self.def.warnings {
            tracing::warn!(job = %self.def.name, "{w}");
        }
    }

    /// Takes the singleton lock if the job needs it. False when another host holds it.
    fn acquire_lock(&mut self) -> bool {
        if !self.singleton() || self.lock.is_some() {
            return true;
        }
        let path = self.ctx.layout.singleton_lock(&self.def.name);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = match std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                self.status.error = Some(format!("opening singleton lock {}: {e}", path.display()));
                return false;
            }
        };
        match file.try_lock() {
            Ok(()) => {
                self.lock = Some(file);
                if let Some(p) = self.ctx.layout.inactive_status_file(&self.def.name) {
                    let _ = std::fs::remove_file(p);
                }
                self.sys_info(NO_RUN, "singleton lock acquired: this host runs the job");
                true
            }
            Err(_) => false,
        }
    }

    fn release_lock(&mut self) {
        self.lock = None;
    }

    async fn start(&mut self) {
        if !self.def.valid() || self.def.disabled || self.run.is_some() {
            return;
        }
        if self
            .unrunnable
            .as_ref()
            .is_some_and(|(fp, _)| *fp == self.def.fingerprint)
        {
            return;
        }
        let (Some(settings), Some(launch)) = (self.def.settings.clone(), self.def.launch.clone())
        else {
            return;
        };
        self.reconfigure_sink(&settings);
        self.backoff.base = settings.restart_delay;
        self.backoff.max = settings.restart_max_delay;
        if !self.acquire_lock() {
            self.lock_retry_at = Some(Instant::now() + LOCK_RETRY);
            self.status.status = ContinuousState::InactiveInstance;
            self.status.detailed_status =
                "singleton: another host holds singleton.lock; retrying every 3 s".into();
            self.status.pid = None;
            self.publish();
            return;
        }
        self.status.status = ContinuousState::Starting;
        self.publish();
        let log_id = crate::ids::random_hex(6);
        let data_path = self.ctx.layout.job_dir(JobType::Continuous, &self.def.name);
        let _ = std::fs::create_dir_all(&data_path);
        let data_path = std::path::absolute(&data_path).unwrap_or(data_path);
        let started = self
            .ctx
            .runner
            .start(
                RunRequest {
                    job_name: &self.def.name,
                    job_type: JobType::Continuous,
                    job_dir: &self.def.dir,
                    fingerprint: self.def.fingerprint,
                    launch: &launch,
                    in_place: settings.is_in_place,
                    env: &settings.env,
                    args: &[],
                    data_path: &data_path,
                    run_id: &log_id,
                    log_id: &log_id,
                },
                RunLog {
                    log_id: &log_id,
                    sink: self.sink.clone(),
                    started_note: "started (pid {pid})".to_string(),
                    log_changed: self.log_changed.clone(),
                },
            )
            .await;
        self.active = Some(Active {
            settings,
            fingerprint: self.def.fingerprint,
        });
        match started {
            Ok(run) => {
                tracing::info!(job = %self.def.name, pid = run.pid, "started");
                self.status.status = ContinuousState::Running;
                self.status.detailed_status =
                    format!("running since {}", rfc3339_string(run.started_at));
                self.status.pid = Some(run.pid);
                self.status.started_at = Some(run.started_at);
                self.status.next_restart_at = None;
                self.status.run_command = Some(launch.display());
                self.run = Some(run);
                self.publish();
            }
            Err(e) => {
                if let Some(reason) = e.unrunnable() {
                    // Starting the same files again fails the same way: an Error
                    // until the job's files change, not a restart loop.
                    let msg = format!("cannot run: {reason}");
                    self.sys_error(&log_id, &msg);
                    tracing::error!(job = %self.def.name, "{msg}");
                    self.unrunnable = Some((self.def.fingerprint, msg));
                    self.show_unrunnable();
                    return;
                }
                let msg = format!("could not start: {e}");
                self.sys_error(&log_id, &msg);
                tracing::error!(job = %self.def.name, "{msg}");
                self.status.error = Some(msg);
                self.schedule_restart(&log_id, Duration::ZERO);
            }
        }
    }

    /// The sink follows the settings: limits, and the file name when `is_singleton`
    /// changes which name is right.
    fn reconfigure_sink(&mut self, settings: &JobSettings) {
        let want = self
            .ctx
            .layout
            .job_log(&self.def.name, settings.is_singleton);
        let mut sink = logsink::lock(&self.sink);
        if sink.path() != want {
            drop(sink);
            self.sink = Arc::new(Mutex::new(LogSink::new(
                want,
                settings.log_max_bytes,
                settings.log_keep,
            )));
        } else {
            sink.set_limits(settings.log_max_bytes, settings.log_keep);
        }
    }

    async fn on_exit(&mut self, exit: Exit) {
        let Some(run) = self.run.take() else { return };
        let ran_for = run.ran_for();
        let log_id = run.log_id.clone();
        run.finish(self.grace()).await;
        self.note_exit(exit);
        self.schedule_restart(&log_id, ran_for);
    }

    /// The run's exit in the status (the runner has written it to the log).
    fn note_exit(&mut self, exit: Exit) {
        let (code, signal) = match exit {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(s)),
        };
        self.status.last_exit = Some(LastExit {
            code,
            signal,
            at: Utc::now(),
        });
        self.status.pid = None;
        tracing::info!(job = %self.def.name, "{exit}");
    }

    fn schedule_restart(&mut self, log_id: &str, ran_for: Duration) {
        let delay = self.backoff.after_exit(ran_for);
        self.status.restarts += 1;
        self.restart_at = Some(Instant::now() + delay);
        let secs = delay.as_secs_f64();
        self.sys_info(log_id, &format!("restart in {} s", trim_float(secs)));
        self.status.status = ContinuousState::PendingRestart;
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.status.next_restart_at = Some(at);
        self.status.detailed_status = format!(
            "in restart backoff until {} (quick exit number {})",
            rfc3339_string(at),
            self.backoff.attempt
        );
        self.publish();
    }

    /// Runs the stop sequence on the current run, if any, and waits for it to end.
    async fn stop_run(&mut self, why: &str) {
        self.restart_at = None;
        self.lock_retry_at = None;
        let Some(mut run) = self.run.take() else {
            return;
        };
        let grace = self.grace();
        let log_id = run.log_id.clone();
        self.status.status = ContinuousState::Stopping;
        self.status.detailed_status = format!("stopping: {why}");
        self.publish();
        let stopped = run.stop(grace, why).await;
        run.finish(grace).await;
        self.note_exit(stopped.exit);
        self.sys_info(&log_id, "stopped");
    }

    fn set_idle(&mut self, state: ContinuousState, why: &str) {
        self.status.status = state;
        self.status.detailed_status = why.to_string();
        self.status.pid = None;
        self.status.next_restart_at = None;
        self.publish();
    }

    fn sys_info(&self, log_id: &str, msg: &str) {
        if self.may_write() {
            logsink::note(&self.sink, log_id, false, msg);
        }
    }

    fn sys_error(&self, log_id: &str, msg: &str) {
        if self.may_write() {
            logsink::note(&self.sink, log_id, true, msg);
        }
    }

    /// Copies the log's counters into the status; true when they changed.
    fn take_log_stats(&mut self) -> bool {
        let s = logsink::lock(&self.sink);
        let stats = s.stats();
        let st = &mut self.status;
        let changed = st.log_written_bytes != stats.written_bytes
            || st.log_dropped_lines != stats.dropped_lines
            || st.log_dropped_bytes != stats.dropped_bytes
            || st.log_error != stats.last_error;
        st.log_written_bytes = stats.written_bytes;
        st.log_dropped_lines = stats.dropped_lines;
        st.log_dropped_bytes = stats.dropped_bytes;
        st.log_error = stats.last_error.clone();
        changed
    }

    /// A run that keeps writing changes nothing else: its log counters reach the API
    /// (and `/metrics`) every second, and `status.json` every few seconds.
    fn refresh_log_stats(&mut self) {
        if !self.take_log_stats() {
            return;
        }
        if self.status_file_at.elapsed() >= LOG_STATS_FILE {
            self.publish();
        } else {
            self.status.updated_at = Utc::now();
            self.status_tx.send_replace(self.status.clone());
        }
    }

    /// Sends the status to watchers and writes the status file this host may write.
    fn publish(&mut self) {
        self.take_log_stats();
        self.status_file_at = Instant::now();
        self.status.updated_at = Utc::now();
        self.status_tx.send_replace(self.status.clone());
        for w in self.applied.drain(..) {
            let _ = w.send(());
        }
        let path: Option<PathBuf> = if self.may_write() {
            Some(
                self.ctx
                    .layout
                    .status_file(&self.def.name, self.singleton()),
            )
        } else {
            self.ctx.layout.inactive_status_file(&self.def.name)
        };
        if let Some(path) = path
            && let Err(e) = write_atomic(&path, &self.status)
        {
            tracing::error!(job = %self.def.name, "{e}");
        }
    }
}

async fn wait_run(run: &mut Option<Run>) -> Exit {
    match run {
        Some(r) => r.wait().await,
        None => std::future::pending().await,
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
