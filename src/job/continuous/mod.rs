//! The task that owns one continuous job: its run, its singleton lock, its log and its
//! status. Nothing else mutates them.
//!
//! Every decision is made by the pure [`state::Machine`]; this file is the thin loop
//! around it. It waits on five things (a command, the run's exit, the state's timer,
//! the log's counters, host shutdown), turns each into an [`Input`], and performs the
//! [`Effect`]s that come back: start or stop a run through the [`Processes`] seam, take
//! or release the singleton's lock through the [`Coordination`] seam (a lock file or a
//! lease: this file does not ask which), write a note to the job log, publish the
//! status.

pub mod state;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Begin, HostContext, JobCommand, JobView, TriggerError, sleep_until_opt};
use crate::coord::{Coordination, Renewal, SingletonHold};
use crate::layout::LogsLayout;
use crate::logsink::{self, LogSink};
use crate::runner::{Exit, Process, Processes, RunLog, RunRequest};
use crate::scan::JobDefinition;
use crate::spec::JobType;
use crate::spec::settings::JobSettings;
use crate::status::ContinuousStatus;
use state::{Effect, Input, Level, Machine, Now, StartFailed, Started, State};

/// Id used on SYS lines that belong to no run.
const NO_RUN: &str = "000000";
/// While a run writes, the API's view of its log counters is this fresh...
const LOG_STATS_VIEW: Duration = Duration::from_secs(1);
/// ...and `status.json` at most this stale: a flood of output must not cost a status
/// file write (and its rename) per line.
const LOG_STATS_FILE: Duration = Duration::from_secs(5);

/// Starts the task for `def` and returns its handle.
impl<P: Processes> ContinuousJob<P> {
    /// The task for `def` (not started: see [`super::spawn`]) and the view of its status.
    pub(super) fn new(ctx: Arc<HostContext<P>>, def: JobDefinition) -> (JobView, Self) {
        let layout = ctx.layout.clone();
        let def_name = def.name.clone();
        let status = ContinuousStatus::new(&def.name, layout.instance.as_deref());
        let (status_tx, status_rx) = watch::channel(status.clone());
        let singleton = def.settings.as_ref().is_some_and(|s| s.is_singleton);
        let writer = ctx.log_writer.clone();
        let sink = super::log_sink(&def, layout.job_log(&def.name, singleton), writer.as_ref());
        let job = ContinuousJob {
            sink,
            writer,
            settle: logsink::Settle::default(),
            procs: ctx.runner.clone(),
            layout,
            m: Machine::new(def, status),
            run: None,
            hold: None,
            status_tx,
            log_changed: Arc::new(tokio::sync::Notify::new()),
            applied: Vec::new(),
            status_file_at: Instant::now(),
            coord: ctx.coord.clone(),
            files: crate::fsutil::FileWriter::new(&def_name),
        };
        (JobView::Continuous(status_rx), job)
    }
}

pub(super) struct ContinuousJob<P: Processes> {
    procs: P,
    layout: LogsLayout,
    /// The decisions, and the status they lead to.
    m: Machine,
    run: Option<P::Run>,
    /// The singleton's lock, while this host holds it.
    hold: Option<SingletonHold>,
    /// `job_log.txt`: through the host's log writer thread (when it has one: not on
    /// paused time), so a slow or hung LOGS holds the log and not the async workers.
    sink: Arc<Mutex<LogSink>>,
    writer: Option<logsink::LogWriter>,
    /// Notes (the job's own and the runner's) are on disk before the status that
    /// follows them is published, or the singleton lock let go: see `settle_log`.
    settle: logsink::Settle,
    status_tx: watch::Sender<ContinuousStatus>,
    /// The pump says when lines were lost or the log recovered.
    log_changed: Arc<tokio::sync::Notify>,
    /// Writers waiting to see their definition applied: answered by the next publish.
    applied: Vec<tokio::sync::oneshot::Sender<()>>,
    /// When `status.json` was last written.
    status_file_at: Instant,
    /// Where the singleton's lock is taken: a lock file in LOGS, or a lease in the
    /// cluster store (docs/cluster.md).
    coord: Arc<dyn Coordination>,
    /// Writes the status files, and closes the singleton's lock file after them, off
    /// the async workers (their fsync waits on the disk).
    files: crate::fsutil::FileWriter,
}

async fn wait_run<R: Process>(run: &mut Option<R>) -> Exit {
    match run {
        Some(r) => r.wait().await,
        None => std::future::pending().await,
    }
}

fn now() -> Now {
    Now {
        at: Instant::now(),
        wall: Utc::now(),
    }
}

impl<P: Processes> ContinuousJob<P> {
    pub(super) async fn run_loop(
        mut self,
        mut rx: mpsc::UnboundedReceiver<JobCommand>,
        cancel: CancellationToken,
        mut begin: Begin,
    ) {
        if begin.predecessor.is_some() {
            self.applied.extend(begin.applied.take());
            self.m.status.detailed_status = "waiting for the job's previous run to stop".into();
            self.publish();
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = begin.predecessor_gone() => {}
            }
        }
        self.applied.extend(begin.applied.take());
        let def = Box::new(self.m.def.clone());
        self.feed(Input::Definition(def)).await;
        self.applied.clear();
        let mut log_stats = tokio::time::interval(LOG_STATS_VIEW);
        log_stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.m.state != State::Ended {
            tokio::select! {
                _ = cancel.cancelled() => self.feed(Input::Shutdown).await,
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
                        self.feed(Input::Shutdown).await;
                    } else if removed {
                        self.feed(Input::Remove).await;
                    } else if let Some(def) = latest {
                        self.feed(Input::Definition(def)).await;
                    }
                    // Whatever applying published has answered the writers; any left
                    // (nothing was published) learn it from the dropped sender.
                    self.applied.clear();
                }
                _ = self.log_changed.notified() => self.publish(),
                _ = log_stats.tick(), if self.run.is_some() => self.refresh_log_stats(),
                exit = wait_run(&mut self.run) => self.feed(Input::Exited(exit)).await,
                _ = sleep_until_opt(self.hold.as_ref().and_then(|h| h.renew_at())) => self.renew_lock().await,
                _ = sleep_until_opt(self.m.state.timer()) => self.feed(Input::Timer).await,
            }
        }
        // The last lines and status are on disk, and the lock released, before the
        // job's next task (or the host's exit) can follow: the next task writes the
        // same log through a file end of its own. A lock file is closed after the
        // status writes; a lease is given up now, not left to expire, so another host
        // takes over at once (bounded: a store that does not answer lets it expire).
        self.settle_log().await;
        let release = self
            .hold
            .take()
            .map(|hold| self.coord.release_singleton(hold, &self.files));
        self.files.flush().await;
        if let Some(release) = release {
            let _ = tokio::time::timeout(Duration::from_secs(2), release).await;
        }
    }

    fn not_triggered(&self) -> TriggerError {
        TriggerError::NotTriggered {
            job: self.m.def.name.clone(),
        }
    }

    /// One input through the machine, and the effects it asks for, until no effect
    /// answers with another input.
    async fn feed(&mut self, input: Input) {
        let mut next = Some(input);
        while let Some(input) = next.take() {
            for effect in self.m.step(input, now()) {
                if let Some(answer) = self.perform(effect).await {
                    next = Some(answer);
                }
            }
        }
    }

    async fn perform(&mut self, effect: Effect) -> Option<Input> {
        let name = &self.m.def.name;
        match effect {
            Effect::Publish => {
                self.settle_log().await;
                self.publish();
            }
            Effect::Note { run, error, text } => {
                if self.may_write() {
                    logsink::note(&self.sink, run.as_deref().unwrap_or(NO_RUN), error, &text);
                }
            }
            Effect::HostLog { level, text } => match level {
                Level::Info => tracing::info!(job = %name, "{text}"),
                Level::Warn => tracing::warn!(job = %name, "{text}"),
                Level::Error => tracing::error!(job = %name, "{text}"),
            },
            Effect::HostLogStarted { pid } => tracing::info!(job = %name, pid, "started"),
            Effect::UseSettings(settings) => self.reconfigure_sink(&settings),
            Effect::TakeLock => return Some(Input::Lock(self.take_lock().await)),
            Effect::ReleaseLock => {
                if self.hold.is_some() {
                    // The log is the holder's: its lines land before another host
                    // may take the lock and write.
                    self.settle_log().await;
                }
                self.release_lock();
            }
            Effect::Start(settings) => return Some(Input::Started(self.start(settings).await)),
            Effect::Stop { why, grace } => {
                let run = self.run.take();
                let exit = match run {
                    Some(mut run) => {
                        let stopped = run.stop(grace, &why).await;
                        run.finish(grace, None).await;
                        stopped.exit
                    }
                    None => Exit::Signal(libc::SIGKILL),
                };
                return Some(Input::Stopped(exit));
            }
            Effect::Finish { grace } => {
                if let Some(run) = self.run.take() {
                    run.finish(grace, None).await;
                }
                return Some(Input::Finished);
            }
            Effect::ForgetJob => {
                self.procs
                    .forget_job(JobType::Continuous, &self.m.def.name)
                    .await
            }
        }
        None
    }

    fn singleton(&self) -> bool {
        self.m.def.settings.as_ref().is_some_and(|s| s.is_singleton)
    }

    /// A singleton's files belong to the lock holder alone.
    fn may_write(&self) -> bool {
        !self.singleton() || self.hold.is_some()
    }

    /// Takes the singleton's lock (`Err(None)`: another host holds it) through the
    /// coordination seam; its fencing token goes to the status and the run.
    async fn take_lock(&mut self) -> Result<(), Option<String>> {
        if self.hold.is_some() {
            return Ok(());
        }
        let hold = self
            .coord
            .take_singleton(&self.m.def.name, &self.files)
            .await?;
        // A lease's token goes to the status (and the run); the store answered, so
        // the error it left while the singleton waited for it is over.
        if let Some(token) = hold.fencing_token() {
            self.m.status.fencing_token = Some(token);
            self.m.status.error = None;
        }
        self.hold = Some(hold);
        Ok(())
    }

    /// Renews the lock when it is due. One that is lost, or that cannot be confirmed
    /// for long enough, stops the run so that it has ended before the lock expires
    /// and another host may start.
    async fn renew_lock(&mut self) {
        let coord = self.coord.clone();
        let Some(hold) = self.hold.as_mut() else {
            return;
        };
        if let Renewal::Lost { why, grace } = coord.renew_singleton(hold).await {
            // Lost: nothing to give up.
            self.hold = None;
            self.m.status.fencing_token = None;
            self.feed(Input::LockLost { why, grace }).await;
        }
    }

    /// Gives the lock up: a lock file after the status writes asked before it, a
    /// lease off this task.
    fn release_lock(&mut self) {
        let Some(hold) = self.hold.take() else {
            return;
        };
        self.m.status.fencing_token = None;
        let release = self.coord.release_singleton(hold, &self.files);
        tokio::spawn(release);
    }

    /// Starts a run of the current definition.
    async fn start(&mut self, settings: Arc<JobSettings>) -> Result<Started, StartFailed> {
        let run_id = crate::ids::random_hex(6);
        let def = &self.m.def;
        let Some(launch) = def.launch.as_ref() else {
            return Err(StartFailed {
                run: run_id,
                unrunnable: None,
                error: "no entry point".into(),
            });
        };
        // Made by the runner, on the blocking pool.
        let data_path = self.layout.job_dir(JobType::Continuous, &def.name);
        let data_path = std::path::absolute(&data_path).unwrap_or(data_path);
        // The lease's fencing token goes to the run.
        let fenced;
        let env = match self.hold.as_ref().and_then(|h| h.fencing_token()) {
            Some(token) => {
                let mut env = settings.env.clone();
                env.insert("WEBJOBS_FENCING_TOKEN".into(), token.to_string());
                fenced = env;
                &fenced
            }
            None => &settings.env,
        };
        let started = self
            .procs
            .start(
                RunRequest {
                    job_name: &def.name,
                    job_type: JobType::Continuous,
                    job_dir: &def.dir,
                    fingerprint: def.fingerprint,
                    launch,
                    in_place: settings.is_in_place,
                    env,
                    args: &[],
                    data_path: &data_path,
                    run_id: &run_id,
                    log_id: &run_id,
                },
                RunLog {
                    log_id: &run_id,
                    sink: self.sink.clone(),
                    started_note: "started (pid {pid})".to_string(),
                    log_changed: self.log_changed.clone(),
                },
            )
            .await;
        match started {
            Ok(run) => {
                let ok = Started {
                    run: run_id,
                    pid: run.pid(),
                    at: run.started_at(),
                };
                self.run = Some(run);
                Ok(ok)
            }
            Err(e) => Err(StartFailed {
                run: run_id,
                unrunnable: e.unrunnable(),
                error: e.to_string(),
            }),
        }
    }

    /// The sink follows the settings: limits, and the file name when `is_singleton`
    /// changes which name is right.
    fn reconfigure_sink(&mut self, settings: &JobSettings) {
        let want = self.layout.job_log(&self.m.def.name, settings.is_singleton);
        let mut sink = logsink::lock(&self.sink);
        if sink.path() != want {
            drop(sink);
            self.sink = Arc::new(Mutex::new(super::new_sink(
                want,
                settings.log_max_bytes,
                settings.log_keep,
                self.writer.as_ref(),
            )));
        } else {
            sink.set_limits(settings.log_max_bytes, settings.log_keep);
        }
    }

    /// Waits (bounded) until the log's lines so far are on disk: whoever reads the
    /// status next, or takes the lock, finds the notes that led to it. A log written
    /// in place (no writer: tests on paused time) already is.
    async fn settle_log(&mut self) {
        let sink = self.sink.clone();
        if !self.settle.wait(&sink, super::LOG_SETTLE).await {
            tracing::warn!(job = %self.m.def.name, "job_log.txt is still not written after {} s (LOGS hung?): the status is published anyway", super::LOG_SETTLE.as_secs());
        }
    }

    /// Copies the log's counters into the status; true when they changed.
    fn take_log_stats(&mut self) -> bool {
        let mut s = logsink::lock(&self.sink);
        let stats = s.refresh_stats();
        let st = &mut self.m.status;
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
            self.m.status.updated_at = Utc::now();
            self.status_tx.send_replace(self.m.status.clone());
        }
    }

    /// Sends the status to watchers and writes the status file this host may write.
    fn publish(&mut self) {
        self.take_log_stats();
        self.status_file_at = Instant::now();
        self.m.status.updated_at = Utc::now();
        self.status_tx.send_replace(self.m.status.clone());
        for w in self.applied.drain(..) {
            let _ = w.send(());
        }
        let name = &self.m.def.name;
        let path: Option<PathBuf> = if self.may_write() {
            Some(self.layout.status_file(name, self.singleton()))
        } else {
            self.layout.inactive_status_file(name)
        };
        if let Some(path) = path {
            match crate::fsutil::json_bytes(&path, &self.m.status) {
                Ok(bytes) => self.files.write(path, bytes),
                Err(e) => tracing::error!(job = %name, "{e}"),
            }
        }
    }
}
