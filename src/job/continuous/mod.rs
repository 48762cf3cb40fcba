//! The task that owns one continuous job: its run, its singleton lock, its log and its
//! status. Nothing else mutates them.
//!
//! Every decision is made by the pure [`state::Machine`]; this file is the thin loop
//! around it. It waits on five things (a command, the run's exit, the state's timer,
//! the log's counters, host shutdown), turns each into an [`Input`], and performs the
//! [`Effect`]s that come back: start or stop a run through the [`Processes`] seam, take
//! or release the lock, write a note to the job log, publish the status.

pub mod state;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Begin, HostContext, JobCommand, JobView, TriggerError, sleep_until_opt};
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
            lock: None,
            status_tx,
            log_changed: Arc::new(tokio::sync::Notify::new()),
            applied: Vec::new(),
            status_file_at: Instant::now(),
            cluster: ctx.cluster.clone(),
            lease: None,
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
    lock: Option<File>,
    /// `job_log.txt`, written by the host's log writer thread (`writer`), so a slow or
    /// hung LOGS holds the log and not the async workers; in place without a writer.
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
    /// In a cluster, a singleton is held by a lease in the store instead of a lock
    /// file (docs/cluster.md).
    cluster: Option<Arc<crate::cluster::member::ClusterLink>>,
    lease: Option<Lease>,
    /// Writes the status files, and closes the singleton lock after them, off the
    /// async workers (their fsync waits on the disk).
    files: crate::fsutil::FileWriter,
}

/// A singleton lease this host holds, and when to renew it.
struct Lease {
    held: crate::cluster::leases::Held,
    /// The last time the store confirmed it (before the call, to err on the safe side).
    confirmed_at: Instant,
    next_renew: Instant,
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
                _ = sleep_until_opt(self.lease.as_ref().map(|l| l.next_renew)) => self.renew_lease().await,
                _ = sleep_until_opt(self.m.state.timer()) => self.feed(Input::Timer).await,
            }
        }
        // The last lines and status are on disk, and the lock released, before the
        // job's next task (or the host's exit) can follow: the next task writes the
        // same log through a file end of its own.
        self.settle_log().await;
        if let Some(lock) = self.lock.take() {
            self.files.close_after(lock);
        }
        self.files.flush().await;
        // A lease is given up now, not left to expire: another host takes over at once.
        if let (Some(cluster), Some(lease)) = (self.cluster.clone(), self.lease.take()) {
            let name = self.lease_name();
            let release = tokio::task::spawn_blocking(move || {
                crate::cluster::leases::release(&cluster.pool, &name, &cluster.me.name, lease.held)
            });
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
            Effect::TakeLock => {
                let taken = match self.cluster.clone() {
                    Some(cluster) => self.take_lease(cluster).await,
                    None => self.acquire_lock(),
                };
                return Some(Input::Lock(taken));
            }
            Effect::ReleaseLock => {
                if self.lock.is_some() {
                    // The log is the holder's: its lines land before another host
                    // may take the lock and write.
                    self.settle_log().await;
                }
                if let Some(lock) = self.lock.take() {
                    self.files.close_after(lock);
                }
                self.release_lease();
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
        !self.singleton() || self.lock.is_some() || self.lease.is_some()
    }

    fn lease_name(&self) -> String {
        format!("continuous/{}", self.m.def.name)
    }

    /// Takes the singleton's lease in the cluster store: `Err(None)` when another
    /// host holds it, `Err(Some(why))` when the store cannot be asked.
    async fn take_lease(
        &mut self,
        cluster: Arc<crate::cluster::member::ClusterLink>,
    ) -> Result<(), Option<String>> {
        if self.lease.is_some() {
            return Ok(());
        }
        let (name, asked) = (self.lease_name(), Instant::now());
        let c = cluster.clone();
        let call = tokio::task::spawn_blocking(move || {
            crate::cluster::leases::acquire(&c.pool, &name, &c.me.name, c.me.ttl)
        });
        let taken = tokio::time::timeout(cluster.me.ttl / 3, call)
            .await
            .map_err(|_| {
                Some("the cluster store does not answer; the singleton waits for it".to_string())
            })?
            .map_err(|_| Some("the host is stopping".to_string()))?;
        match taken {
            Ok(Some(held)) => {
                self.lease = Some(Lease {
                    held,
                    confirmed_at: asked,
                    next_renew: asked + held.ttl / 3,
                });
                self.m.status.fencing_token = Some(held.token);
                self.m.status.error = None;
                Ok(())
            }
            Ok(None) => Err(None),
            Err(e) => Err(Some(format!("{e}; the singleton waits for the store"))),
        }
    }

    /// Renews the lease a third of its ttl after the last confirmation. One that is
    /// lost, or that cannot be confirmed for two thirds of its ttl, stops the run so
    /// that it has ended before the lease expires and another host may start.
    async fn renew_lease(&mut self) {
        let (Some(cluster), Some(lease)) = (self.cluster.clone(), self.lease.as_ref()) else {
            return;
        };
        let (name, held, asked) = (self.lease_name(), lease.held, Instant::now());
        let c = cluster.clone();
        let call = tokio::task::spawn_blocking(move || {
            crate::cluster::leases::renew(&c.pool, &name, &c.me.name, held)
        });
        // A store that does not answer (a network cut drops packets) must not hold
        // the run past its lease: the wait is bounded like a failed renewal.
        let renewed = match tokio::time::timeout(held.ttl / 3, call).await {
            Ok(r) => r,
            Err(_) => Ok(Err(crate::cluster::ClusterError::Unavailable {
                url: cluster.pool.url().to_string(),
                what: "renewing the singleton's lease".into(),
                reason: format!("no answer within {} ms", (held.ttl / 3).as_millis()),
            })),
        };
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        let why = match renewed {
            Ok(Ok(true)) => {
                lease.confirmed_at = asked;
                lease.next_renew = asked + held.ttl / 3;
                return;
            }
            Ok(Ok(false)) => "another host took it over".to_string(),
            Ok(Err(e)) => {
                let expires = lease.confirmed_at + held.ttl;
                if Instant::now() + held.ttl / 3 < expires {
                    // Asked again soon; still well inside the lease.
                    lease.next_renew = Instant::now() + Duration::from_secs(1);
                    return;
                }
                format!("it could not be renewed: {e}")
            }
            Err(_) => return,
        };
        let expires = lease.confirmed_at + held.ttl;
        // A margin for the stop's own signals and reaping.
        let grace = expires
            .saturating_duration_since(Instant::now())
            .saturating_sub(Duration::from_millis(500));
        self.lease = None;
        self.m.status.fencing_token = None;
        self.feed(Input::LockLost { why, grace }).await;
    }

    fn release_lease(&mut self) {
        let (Some(cluster), Some(lease)) = (self.cluster.clone(), self.lease.take()) else {
            return;
        };
        self.m.status.fencing_token = None;
        let name = self.lease_name();
        tokio::task::spawn_blocking(move || {
            let _ =
                crate::cluster::leases::release(&cluster.pool, &name, &cluster.me.name, lease.held);
        });
    }

    /// Takes the singleton lock: `Err(None)` when another host holds it.
    fn acquire_lock(&mut self) -> Result<(), Option<String>> {
        if self.lock.is_some() {
            return Ok(());
        }
        let name = &self.m.def.name;
        // Released a moment ago and still waiting for the status writes before it:
        // still ours.
        let file = match self.files.reclaim() {
            Some(file) => file,
            None => {
                let path = self.layout.singleton_lock(name);
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| Some(format!("opening singleton lock {}: {e}", path.display())))?;
                file.try_lock().map_err(|_| None)?;
                file
            }
        };
        self.lock = Some(file);
        if let Some(p) = self.layout.inactive_status_file(name) {
            self.files.remove(p);
        }
        Ok(())
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
        let data_path = self.layout.job_dir(JobType::Continuous, &def.name);
        let _ = std::fs::create_dir_all(&data_path);
        let data_path = std::path::absolute(&data_path).unwrap_or(data_path);
        // The lease's fencing token goes to the run.
        let fenced;
        let env = match &self.lease {
            Some(l) => {
                let mut env = settings.env.clone();
                env.insert("WEBJOBS_FENCING_TOKEN".into(), l.held.token.to_string());
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
