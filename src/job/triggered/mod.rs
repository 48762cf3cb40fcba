//! The task that owns one triggered job: its schedule cursor, its run (one at a time),
//! the pending run of `overlap: "queue"`, the run lock, the run's time limits, the
//! scheduler log and the run records. Nothing else mutates them.
//!
//! A fire goes through the same gate as a manual trigger: overlap rule, then the
//! `run.lock` shared by every host on these LOGS, then (for scheduled fires) the
//! persisted last-fired occurrence, so each occurrence runs on exactly one host.

use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod gate;

use super::{Accepted, Begin, Ctx, JobCommand, JobHandle, JobView, TriggerError, answer};
use crate::logsink::{self, LogSink};
use crate::runner::{Exit, Run, RunLog, RunRequest};
use crate::runs::{self, RunRecord, RunState, TriggerKind};
use crate::scan::JobDefinition;
use crate::scheduler::{Cursor, Poll};
use crate::spec::JobType;
use crate::spec::settings::JobSettings;
use crate::status::rfc3339_string;
use gate::Verdict;

const NO_RUN: &str = "000000";
/// How often a run with an `idle_timeout` is checked for output and CPU use.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What readers see of a triggered job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TriggeredStatus {
    pub name: String,
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub disabled: bool,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub next_fire: Option<String>,
    pub running: Option<String>,
    pub pending: bool,
    pub latest_run: Option<RunRecord>,
    pub run_command: Option<String>,
}

pub fn spawn(
    ctx: Ctx,
    def: JobDefinition,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
    begin: Begin,
) -> JobHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let logs = ctx.layout.job_dir(JobType::Triggered, &def.name);
    let status = TriggeredStatus {
        name: def.name.clone(),
        latest_run: runs::history(&logs).into_iter().next(),
        ..Default::default()
    };
    let (status_tx, status_rx) = watch::channel(status);
    let settings = def.settings.as_deref().cloned().unwrap_or_default();
    let job = TriggeredJob {
        sched_log: Arc::new(Mutex::new(LogSink::new(
            logs.join("job_scheduler.log"),
            settings.log_max_bytes,
            settings.log_keep,
        ))),
        logs,
        ctx,
        def,
        cursor: None,
        active: None,
        pending: None,
        status_tx,
        run_ids: None,
        host_stopping: cancel.clone(),
        unrunnable: None,
    };
    tracker.spawn(job.run_loop(rx, cancel, begin));
    JobHandle {
        tx,
        view: JobView::Triggered(status_rx),
    }
}

struct PendingRun {
    trigger: TriggerKind,
    args: Vec<OsString>,
    scheduled_for: Option<DateTime<Utc>>,
}

struct ActiveRun {
    run: Run,
    record: RunRecord,
    sink: Arc<Mutex<LogSink>>,
    settings: Arc<JobSettings>,
    /// Held for the whole run: no other host runs this job meanwhile.
    _lock: Option<File>,
    timeout_at: Option<Instant>,
    idle: Option<IdleWatch>,
    /// Set when the host ends the run; the run is then `Aborted` with this reason.
    abort: Option<String>,
}

struct IdleWatch {
    limit: Duration,
    last_activity: Instant,
    last_output: u64,
    last_cpu: u64,
    next_check: Instant,
}

struct TriggeredJob {
    ctx: Ctx,
    def: JobDefinition,
    logs: PathBuf,
    cursor: Option<Cursor>,
    active: Option<ActiveRun>,
    pending: Option<PendingRun>,
    sched_log: Arc<Mutex<LogSink>>,
    /// What the API shows of this job (see [`TriggeredJob::set_status`]).
    status_tx: watch::Sender<TriggeredStatus>,
    /// The job's run ids as this task last saw them (see `runs::open_run`).
    run_ids: Option<Vec<String>>,
    /// Cancelled when the host stops: no queued run starts after that.
    host_stopping: CancellationToken,
    /// The fingerprint of files whose program the kernel refused, and why.
    unrunnable: Option<(u64, String)>,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_fire(cursor: &mut Option<Cursor>, clock: &dyn crate::scheduler::Clock) -> Poll {
    match cursor {
        Some(c) => c.next(clock).await,
        None => std::future::pending().await,
    }
}

async fn wait_active(active: &mut Option<ActiveRun>) -> Exit {
    match active {
        Some(a) => a.run.wait().await,
        None => std::future::pending().await,
    }
}

/// Runs file work (fsync, directory listings) on the blocking pool: a hundred jobs
/// firing on the same second must not queue behind each other's disk waits on the
/// two async workers. `None` only if the runtime is shutting down.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl TriggeredJob {
    async fn run_loop(
        mut self,
        mut rx: mpsc::UnboundedReceiver<JobCommand>,
        cancel: CancellationToken,
        mut begin: Begin,
    ) {
        // The job is listed from the start; while its previous task still stops, it
        // shows the status it was created with (no run, its history).
        let mut applied = begin.applied.take();
        if begin.predecessor.is_some() {
            answer(applied.take());
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = begin.predecessor_gone() => {}
            }
        }
        self.recover_stale().await;
        self.apply_definition();
        answer(applied);
        loop {
            let clock = self.ctx.clock.clone();
            let timeout_at = self.active.as_ref().and_then(|a| a.timeout_at);
            let idle_at = self
                .active
                .as_ref()
                .and_then(|a| a.idle.as_ref().map(|i| i.next_check));
            tokio::select! {
                _ = cancel.cancelled() => {
                    // Taken before the stop: the end of the run going would start it.
                    let dropped = self.pending.take();
                    self.abort_run("the host is shutting down").await;
                    if let Some(p) = dropped {
                        self.drop_pending(&p, "the host stopped before it could start");
                    }
                    break;
                }
                cmd = rx.recv() => match cmd {
                    None | Some(JobCommand::Remove) => {
                        let dropped = self.pending.take();
                        // The channel also closes when the host stops: say which.
                        let (why, lost) = if self.host_stopping.is_cancelled() {
                            ("the host is shutting down", "the host stopped before it could start")
                        } else {
                            ("the job folder was removed", "the job folder was removed before it could start")
                        };
                        self.abort_run(why).await;
                        if let Some(p) = dropped {
                            self.drop_pending(&p, lost);
                        }
                        self.ctx.runner.forget_job(JobType::Triggered, &self.def.name).await;
                        break;
                    }
                    Some(JobCommand::Update(def, applied)) => {
                        self.def = *def;
                        self.apply_definition();
                        answer(applied);
                    }
                    Some(JobCommand::Trigger { args, reply }) => {
                        let r = self.trigger(TriggerKind::Manual, args, None).await;
                        // A queued run changes the status too (pending), not only a start.
                        self.publish();
                        let _ = reply.send(r);
                    }
                    Some(JobCommand::Cancel { run_id, reply }) => {
                        let r = self.cancel(run_id).await;
                        let _ = reply.send(r);
                    }
                },
                exit = wait_active(&mut self.active) => self.on_exit(exit).await,
                poll = next_fire(&mut self.cursor, clock.as_ref()) => self.on_fire(poll).await,
                _ = sleep_until_opt(timeout_at) => {
                    let secs = self.active.as_ref().map(|a| a.settings.timeout.unwrap_or_default().as_secs()).unwrap_or(0);
                    self.abort_run(&format!("timeout: still running after {secs} s (settings.job `timeout`)")).await;
                }
                _ = sleep_until_opt(idle_at) => self.check_idle().await,
            }
        }
        self.publish();
    }

    /// A queued run that was accepted (202) and will never start: said where its
    /// caller and the operator look, the scheduler log and the host log.
    fn drop_pending(&self, p: &PendingRun, why: &str) {
        let name = &self.def.name;
        let msg = format!(
            "queued run of {name} dropped: {why} ({} trigger)",
            p.trigger.as_str()
        );
        tracing::warn!(job = %name, "{msg}");
        self.sched(&msg, true);
    }

    async fn save_last_fired(&self, at: DateTime<Utc>) {
        let logs = self.logs.clone();
        if let Some(Err(e)) = blocking(move || runs::save_last_fired(&logs, at)).await {
            tracing::error!(job = %self.def.name, "{e}");
        }
    }

    async fn load_last_fired(&self) -> Option<DateTime<Utc>> {
        let logs = self.logs.clone();
        blocking(move || runs::load_last_fired(&logs))
            .await
            .flatten()
    }

    /// Writes a run's final record.
    ///
    /// Written here, not on the blocking pool: it is a write into an existing spare file
    /// and a rename, no fsync and no file created (see `runs::write`), as cheap as the
    /// log lines the pump writes on these threads, and cheaper than the hop.
    fn close_record(&self, rec: &RunRecord) {
        if let Err(e) = runs::write(&self.logs, rec) {
            tracing::error!(job = %self.def.name, "{e}");
        }
    }

    fn settings(&self) -> Option<&JobSettings> {
        self.def.settings.as_deref()
    }

    fn sched(&self, msg: &str, error: bool) {
        logsink::note(&self.sched_log, NO_RUN, error, msg);
    }

    fn run_lock_path(&self) -> PathBuf {
        self.logs.join("run.lock")
    }

    /// The run lock, when other hosts may share these LOGS (`--instance`); a host
    /// without an instance name is alone by definition (docs/jobs.md) and needs none. `Err` when another
    /// host holds it.
    ///
    /// A busy lock is asked again for a moment: while any process of this host forks
    /// (every run start), the child holds a copy of each open descriptor until it
    /// execs, and so, for that instant, our own just-released lock.
    async fn acquire_run_lock(&self) -> Result<Option<File>, ()> {
        if self.ctx.layout.instance.is_none() {
            return Ok(None);
        }
        let _ = std::fs::create_dir_all(&self.logs);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.run_lock_path())
            .map_err(|_| ())?;
        for _ in 0..20 {
            if f.try_lock().is_ok() {
                return Ok(Some(f));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(())
    }

    /// Runs a dead host left `Running` are `Aborted` — checked under the run lock, so
    /// a run that another live host is going through is left alone.
    async fn recover_stale(&mut self) {
        let Ok(_lock) = self.acquire_run_lock().await else {
            return;
        };
        for id in runs::recover_stale(
            &self.logs,
            "the host running it stopped unexpectedly (found when a host started)",
        ) {
            tracing::warn!(job = %self.def.name, "run {id} was left Running by a host that died: marked Aborted");
            self.sched(
                &format!("run {id} was left Running by a host that died: marked Aborted"),
                true,
            );
        }
        let latest = runs::history(&self.logs).into_iter().next();
        self.set_status(|s| s.latest_run = latest);
    }

    /// Settings changed: reschedule at once; the rest applies from the next run.
    fn apply_definition(&mut self) {
        self.set_status(|s| {
            s.warnings = self.def.warnings.clone();
            s.disabled = self.def.disabled;
            s.run_command = self.def.launch.as_ref().map(|l| l.display());
        });
        for w in &self.def.warnings {
            tracing::warn!(job = %self.def.name, "{w}");
        }
        if !self.def.valid() {
            let err = self.def.errors.join("; ");
            let told = self.status_tx.borrow().error.as_deref() == Some(err.as_str());
            if !told {
                tracing::error!(job = %self.def.name, "triggered job {}: {err}", self.def.name);
                self.sched(&format!("job not scheduled: {err}"), true);
            }
            self.set_status(|s| s.error = Some(err));
            self.cursor = None;
            self.publish();
            return;
        }
        // A program the kernel refused stays the job's error until its files change.
        if self
            .unrunnable
            .as_ref()
            .is_some_and(|(fp, _)| *fp != self.def.fingerprint)
        {
            self.unrunnable = None;
        }
        let error = self.unrunnable.as_ref().map(|(_, msg)| msg.clone());
        self.set_status(|s| s.error = error);
        if let Some(s) = self.settings() {
            let (max, keep) = (s.log_max_bytes, s.log_keep);
            logsink::lock(&self.sched_log).set_limits(max, keep);
        }
        let schedule = self.settings().and_then(|s| s.schedule.clone());
        let same = match (&self.cursor, &schedule) {
            (Some(c), Some(s)) => c.schedule() == s,
            (None, None) => true,
            _ => false,
        };
        let disabled_changed = self.cursor.is_some() == self.def.disabled;
        if !same || disabled_changed || self.cursor.is_none() {
            self.reschedule(schedule);
        }
        self.publish();
    }

    fn reschedule(&mut self, schedule: Option<crate::schedule::Schedule>) {
        let now = self.ctx.clock.now();
        self.cursor = match schedule {
            Some(s) if !self.def.disabled => {
                let persisted = runs::load_last_fired(&self.logs);
                let mut c = Cursor::new(s.clone(), persisted, now);
                let next = match c.peek_next() {
                    Some(t) => rfc3339_string(t),
                    None => "never".into(),
                };
                self.sched(
                    &format!(
                        "scheduled `{}` in {}: next fire at {next}",
                        s.expr(),
                        s.timezone()
                    ),
                    false,
                );
                Some(c)
            }
            Some(_) => {
                self.sched(
                    "disable.job is present: the schedule is off (manual runs still work)",
                    false,
                );
                None
            }
            None => None,
        };
        let schedule = self
            .settings()
            .and_then(|s| s.schedule.as_ref().map(|s| s.expr().to_string()));
        let timezone = self.settings().map(|s| s.timezone.to_string());
        self.set_status(|s| {
            s.schedule = schedule;
            s.timezone = timezone;
        });
    }

    async fn on_fire(&mut self, poll: Poll) {
        match poll {
            Poll::Wait(_) => {}
            Poll::Never => {
                self.sched(
                    "the schedule has no future occurrence: nothing more will fire",
                    false,
                );
                self.cursor = None;
            }
            Poll::Missed { latest, count } => {
                self.sched(
                    &format!(
                        "missed {count} occurrence(s) up to {} while the host was down or the clock jumped (older than 10 minutes: not run)",
                        rfc3339_string(latest)
                    ),
                    true,
                );
                self.save_last_fired(latest).await;
            }
            Poll::Fire { at, skipped } => {
                if skipped > 0 {
                    self.sched(
                        &format!(
                            "missed {skipped} occurrence(s) before {} (the host was down, busy, or the clock jumped); running the latest once",
                            rfc3339_string(at)
                        ),
                        true,
                    );
                }
                if let Err(e) = self
                    .trigger(TriggerKind::Schedule, Vec::new(), Some(at))
                    .await
                {
                    match e {
                        TriggerError::Busy { run_id, .. } => self.sched(
                            &format!(
                                "skipped {}: run {run_id} is still going (overlap: skip)",
                                rfc3339_string(at)
                            ),
                            false,
                        ),
                        // Another host fired it: that is the point of the lock.
                        TriggerError::LockedElsewhere { .. } => self.sched(
                            &format!(
                                "{} fired on another host (run.lock held or this occurrence already recorded there)",
                                rfc3339_string(at)
                            ),
                            false,
                        ),
                        other => self.sched(
                            &format!("fire at {} failed: {other}", rfc3339_string(at)),
                            true,
                        ),
                    }
                }
            }
        }
        self.publish();
    }

    /// Every run goes through [`gate::gate`]; this carries out its verdict.
    async fn trigger(
        &mut self,
        trigger: TriggerKind,
        args: Vec<OsString>,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> Result<Accepted, TriggerError> {
        let settings = self.def.settings.clone();
        let schedule_disabled =
            self.def.disabled && settings.as_ref().is_some_and(|s| s.schedule.is_some());
        let mut ask = gate::Ask {
            job: self.def.name.clone(),
            host_stopping: self.host_stopping.is_cancelled(),
            invalid: (!self.def.valid()).then(|| self.def.errors.join("; ")),
            overlap: settings.as_ref().map(|s| s.overlap).unwrap_or_default(),
            running: self.active.as_ref().map(|a| a.record.id.clone()),
            queued: self.pending.is_some(),
            scheduled_for,
            lock: None,
        };
        let mut lock = None;
        loop {
            match gate::gate(&ask) {
                Verdict::Refuse { error, record_fire } => {
                    if let Some(at) = record_fire {
                        self.save_last_fired(at).await;
                    }
                    return Err(error);
                }
                Verdict::Queue { behind } => {
                    self.pending = Some(PendingRun {
                        trigger,
                        args,
                        scheduled_for,
                    });
                    self.sched(
                        &format!("{} run queued behind run {behind}", trigger.as_str()),
                        false,
                    );
                    return Ok(Accepted {
                        run_id: None,
                        queued_behind: Some(behind),
                        schedule_disabled,
                    });
                }
                Verdict::AskLock => {
                    ask.lock = Some(match self.acquire_run_lock().await {
                        Err(()) => gate::Lock::Busy,
                        Ok(file) => {
                            lock = file;
                            // Alone, only this host writes the last fire, and its
                            // cursor never repeats an occurrence: nothing to read.
                            let shared = self.ctx.layout.instance.is_some();
                            let last_fired = match scheduled_for {
                                Some(_) if shared => self.load_last_fired().await,
                                _ => None,
                            };
                            gate::Lock::Taken { last_fired }
                        }
                    });
                }
                Verdict::Start => {
                    let Some(settings) = settings else {
                        return Err(TriggerError::Invalid {
                            job: self.def.name.clone(),
                            reason: self.def.errors.join("; "),
                        });
                    };
                    // No separate write of the last fire: the run's `Running` record,
                    // on disk before its process starts, carries `scheduled_for` (see
                    // `runs::load_last_fired`).
                    let run_id = self
                        .start_run(lock, settings, trigger, args, scheduled_for)
                        .await?;
                    return Ok(Accepted {
                        run_id: Some(run_id),
                        queued_behind: None,
                        schedule_disabled,
                    });
                }
            }
        }
    }

    async fn start_run(
        &mut self,
        lock: Option<File>,
        settings: Arc<JobSettings>,
        trigger: TriggerKind,
        args: Vec<OsString>,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> Result<String, TriggerError> {
        let job = self.def.name.clone();
        let failed = |reason: String| TriggerError::Failed {
            job: job.clone(),
            reason,
        };
        let Some(launch) = self.def.launch.as_ref() else {
            return Err(failed("no entry point".into()));
        };
        let now = self.ctx.clock.now();
        let record = RunRecord::running(
            &self.def.name,
            trigger,
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            now,
            scheduled_for,
            self.ctx.layout.instance.clone(),
        );
        let log_id = crate::ids::random_hex(6);
        let data_path = std::path::absolute(&self.logs).unwrap_or(self.logs.clone());
        let runner = self.ctx.runner.clone();
        let mut prepared = runner.prepare(&RunRequest {
            job_name: &self.def.name,
            job_type: JobType::Triggered,
            job_dir: &self.def.dir,
            fingerprint: self.def.fingerprint,
            launch,
            in_place: settings.is_in_place,
            env: &settings.env,
            args: &args,
            data_path: &data_path,
            run_id: "",
            log_id: &log_id,
        });
        // Folder, record, history trim, log file, private copy and spawn in one hop to
        // the blocking pool: a hundred jobs firing on the same second must not queue
        // behind each other's disk work on the async workers, nor pay for more hops.
        let (logs, keep) = (self.logs.clone(), settings.history_size);
        let (max, keep_logs) = (settings.log_max_bytes, settings.log_keep);
        // Alone on these LOGS (no instance name, docs/jobs.md), the run ids this task saw
        // last are current: no listing of the job's folder per run.
        let mut known = match self.ctx.layout.instance {
            None => self.run_ids.take(),
            Some(_) => None,
        };
        let opened = blocking(move || {
            let mut rec = record;
            let opened = runs::open_run(&logs, now, keep, &mut rec, &mut known);
            let opened = opened.inspect_err(|_| known = None)?;
            let mut sink = LogSink::new(opened.dir.join("output_log.txt"), max, keep_logs);
            // `open_run` left the log empty.
            sink.open_empty();
            prepared.set_run_id(&rec.id);
            let spawned = runner.spawn_prepared(prepared);
            Ok::<_, std::io::Error>((rec, sink, spawned, known))
        })
        .await
        .unwrap_or_else(|| Err(std::io::Error::other("the host is stopping")));
        let (rec, sink, spawned, known) = opened.map_err(|e| {
            failed(format!(
                "creating run folder under {}: {e}",
                self.logs.display()
            ))
        })?;
        let mut record = rec;
        self.run_ids = known;
        let run_id = record.id.clone();
        let sink = Arc::new(Mutex::new(sink));
        let run = match spawned {
            Ok(spawned) => self.ctx.runner.attach(
                spawned,
                RunLog {
                    log_id: &log_id,
                    sink: sink.clone(),
                    started_note: format!(
                        "run {run_id} started (pid {{pid}}, {})",
                        match scheduled_for {
                            Some(at) => format!("scheduled for {}", rfc3339_string(at)),
                            None => "triggered manually".to_string(),
                        }
                    ),
                    log_changed: Arc::new(tokio::sync::Notify::new()),
                },
            ),
            Err(e) => {
                let unrunnable = e.unrunnable();
                let msg = match &unrunnable {
                    Some(reason) => format!("cannot run: {reason}"),
                    None => format!("could not start: {e}"),
                };
                if unrunnable.is_some() {
                    // Every run fails the same way until the files change: the job
                    // says so itself (cleared by the next definition).
                    tracing::error!(job = %self.def.name, "{msg}");
                    self.unrunnable = Some((self.def.fingerprint, msg.clone()));
                    self.set_status(|s| s.error = Some(msg.clone()));
                }
                logsink::note(&sink, &log_id, true, &msg);
                record.status = RunState::Failed;
                record.error = Some(msg.clone());
                record.end_time = Some(rfc3339_string(Utc::now()));
                record.duration_ms = Some(0);
                self.close_record(&record);
                self.sched(&format!("run {run_id} failed to start: {msg}"), true);
                self.set_status(|s| s.latest_run = Some(record));
                return Err(failed(msg));
            }
        };
        // Not written again for the pid: the log's `started` line has it, the record on
        // disk gets it when the run ends, and the API shows it from memory meanwhile.
        record.pid = Some(run.pid);
        self.sched(
            &format!("run {run_id} started ({})", trigger.as_str()),
            false,
        );
        let now_i = Instant::now();
        let idle = settings.idle_timeout.map(|limit| IdleWatch {
            limit,
            last_activity: now_i,
            last_output: 0,
            last_cpu: 0,
            next_check: now_i + IDLE_CHECK.min(limit),
        });
        self.active = Some(ActiveRun {
            timeout_at: settings.timeout.map(|t| now_i + t),
            run,
            record: record.clone(),
            sink,
            settings,
            _lock: lock,
            idle,
            abort: None,
        });
        self.set_status(|s| {
            s.running = Some(run_id.clone());
            s.latest_run = Some(record);
        });
        // Published by the caller (a fire, a trigger, the end of the run before).
        Ok(run_id)
    }

    async fn on_exit(&mut self, exit: Exit) {
        let Some(active) = self.active.take() else {
            return;
        };
        self.finish(active, exit).await;
    }

    /// Stops the run going on (if any) through the stop sequence and records it
    /// `Aborted` with `why`.
    async fn abort_run(&mut self, why: &str) {
        let Some(mut active) = self.active.take() else {
            return;
        };
        active.abort = Some(why.to_string());
        let grace = active.settings.stopping_wait_time;
        let stopped = active.run.stop(grace, why).await;
        self.finish(active, stopped.exit).await;
    }

    /// Records a run that ended (the runner has logged its exit and leftovers).
    async fn finish(&mut self, active: ActiveRun, exit: Exit) {
        let ActiveRun {
            run,
            mut record,
            settings,
            _lock,
            abort,
            ..
        } = active;
        let started = run.started;
        let (code, signal) = match exit {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(s)),
        };
        record.exit_code = code;
        record.signal = signal;
        record.status = match (&abort, exit.success()) {
            (Some(_), _) => RunState::Aborted,
            (None, true) => RunState::Success,
            (None, false) => RunState::Failed,
        };
        record.error = abort
            .clone()
            .or_else(|| (!exit.success()).then(|| exit.to_string()));
        let last_note = match &abort {
            Some(why) => (true, format!("run {} aborted: {why}", record.id)),
            None => (
                false,
                format!("run {} {}", record.id, record.status.as_str()),
            ),
        };
        run.finish_with(settings.stopping_wait_time, Some(last_note))
            .await;
        record.end_time = Some(rfc3339_string(Utc::now()));
        record.duration_ms = Some(started.elapsed().as_millis() as u64);
        self.close_record(&record);
        // The scheduler's log and the host log name runs that did not succeed; a
        // success is in the run's own log and record (a hundred jobs a second would
        // otherwise add a line each to both, and a write per run).
        if record.status == RunState::Success {
            tracing::debug!(job = %self.def.name, run = %record.id, "run ended: Success");
        } else {
            self.sched(
                &format!(
                    "run {} ended: {}{}",
                    record.id,
                    record.status.as_str(),
                    abort
                        .as_deref()
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default()
                ),
                true,
            );
            tracing::info!(job = %self.def.name, run = %record.id, "run ended: {}", record.status.as_str());
        }
        self.ctx.metrics.run_ended(
            &self.def.name,
            record.status.as_str(),
            started.elapsed().as_secs_f64(),
        );
        self.set_status(|s| {
            s.running = None;
            s.latest_run = Some(record);
        });
        drop(_lock);
        // A run that ends as the host stops leaves its queued one to be dropped (and
        // said so) by the shutdown, not started and left `Running`.
        if !self.host_stopping.is_cancelled()
            && let Some(p) = self.pending.take()
            && let Err(e) = self.trigger(p.trigger, p.args, p.scheduled_for).await
        {
            self.sched(&format!("queued run could not start: {e}"), true);
        }
        self.publish();
    }

    async fn cancel(&mut self, run_id: Option<String>) -> Result<String, TriggerError> {
        let job = self.def.name.clone();
        let Some(active) = &self.active else {
            return Err(match run_id {
                Some(run_id) => TriggerError::NotRunning { job, run_id },
                None => TriggerError::NothingToCancel { job },
            });
        };
        let id = active.record.id.clone();
        if let Some(want) = run_id
            && want != id
        {
            return Err(TriggerError::NotRunning { job, run_id: want });
        }
        self.abort_run("cancelled on request").await;
        Ok(id)
    }

    async fn check_idle(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let output = {
            let s = logsink::lock(&active.sink);
            let st = s.stats();
            st.written_bytes + st.dropped_bytes
        };
        let cpu = active.run.cpu_ticks();
        let now = Instant::now();
        let Some(idle) = active.idle.as_mut() else {
            return;
        };
        if output != idle.last_output || cpu != idle.last_cpu {
            idle.last_output = output;
            idle.last_cpu = cpu;
            idle.last_activity = now;
        }
        idle.next_check = now + IDLE_CHECK.min(idle.limit);
        if now.duration_since(idle.last_activity) >= idle.limit {
            let secs = idle.limit.as_secs();
            self.abort_run(&format!(
                "idle timeout: no output and no CPU use for {secs} s (settings.job `idle_timeout`)"
            ))
            .await;
        }
    }

    /// Changes what the API shows without waking its watchers: [`Self::publish`]
    /// does, once per event. No copy of the status is made per change.
    fn set_status(&self, change: impl FnOnce(&mut TriggeredStatus)) {
        self.status_tx.send_if_modified(|s| {
            change(s);
            false
        });
    }

    fn publish(&mut self) {
        let pending = self.pending.is_some();
        let next_fire = self
            .cursor
            .as_mut()
            .and_then(Cursor::peek_next)
            .map(rfc3339_string);
        self.status_tx.send_modify(|s| {
            s.pending = pending;
            s.next_fire = next_fire;
        });
    }
}
