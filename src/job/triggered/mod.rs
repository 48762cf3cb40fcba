//! The task that owns one triggered job: its schedule cursor, its run (one at a time),
//! the run lock, the scheduler log and the run records. Nothing else mutates them.
//!
//! Every decision (the gate, the pending run of `overlap: "queue"`, the run's time
//! limits, what a fire or the end of a run leads to) is made by the pure
//! [`state::Machine`]; this file is the loop around it that performs the effects: the
//! run lock (through the [`crate::coord::Coordination`] seam: `run.lock` in LOGS or
//! the job's run lease in the cluster store, with the occurrence it claims, taken
//! ahead of the next occurrence where the seam says so; this file does not ask which),
//! the run's folder, record and process (through the [`Processes`] seam), the
//! scheduler log and the status.

pub mod gate;
mod messages;
pub mod records;
pub mod state;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Accepted, Begin, HostContext, JobCommand, JobView, TriggerError, answer, sleep_until_opt,
};
use crate::coord::{Refused, Renewal, RunHold};
use crate::fsutil::rfc3339_string;
use crate::logsink::{self, LogSink};
use crate::runner::{Exit, Process, Processes, RunLog, RunRequest};
use crate::scan::JobDefinition;
use crate::schedule::{Cursor, Poll};
use crate::spec::JobType;
use crate::spec::settings::JobSettings;
use records::{RunRecord, RunState, TriggerKind};
use state::{Effect, Input, Machine, Now, Origin, Request, State};

const NO_RUN: &str = "000000";
/// How often an occurrence the cluster store could not decide is tried again.
const CATCH_UP_RETRY: Duration = Duration::from_secs(2);
/// How old a missed occurrence may be and still run (as after the host was down).
const CATCH_UP_LIMIT: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

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
    /// Message runs going on this host.
    pub message_runs: usize,
}

impl<P: Processes> TriggeredJob<P> {
    /// The task for `def` (not started: see [`super::spawn`]) and the view of its status;
    /// `cancel` is the host's stop.
    pub(super) fn new(
        ctx: Arc<HostContext<P>>,
        def: JobDefinition,
        cancel: &CancellationToken,
        latest_run: Option<RunRecord>,
    ) -> (JobView, Self) {
        let logs = ctx.layout.job_dir(JobType::Triggered, &def.name);
        let status = TriggeredStatus {
            name: def.name.clone(),
            latest_run,
            ..Default::default()
        };
        let (status_tx, status_rx) = watch::channel(status);
        let job = TriggeredJob {
            sched_log: super::log_sink(
                &def,
                logs.join("job_scheduler.log"),
                ctx.log_writer.as_ref(),
            ),
            sched_noted: AtomicBool::new(false),
            sched_settle: logsink::Settle::default(),
            logs,
            ctx,
            m: Machine::new(def),
            cursor: None,
            active: None,
            status_tx,
            run_ids: None,
            host_stopping: cancel.clone(),
            unrunnable: None,
            answers: Vec::new(),
            queue: None,
            msg_runs: Vec::new(),
            missed_fire: None,
            catch_up_at: None,
            store_wait: None,
            ahead: None,
            ahead_tried: None,
        };
        (JobView::Triggered(status_rx), job)
    }
}

/// The run going on: what the task holds for it beside the machine's view.
struct ActiveRun<R> {
    run: R,
    record: RunRecord,
    sink: Arc<Mutex<LogSink>>,
    settings: Arc<JobSettings>,
    /// Held for the whole run: no other host runs this job meanwhile.
    _lock: Option<RunHold>,
}

/// A run just started by [`TriggeredJob::launch`].
struct Launched<R> {
    run: R,
    record: RunRecord,
    sink: Arc<Mutex<LogSink>>,
}

/// A reply owed to a caller, sent once the step that decided it is carried out.
enum Owed {
    Trigger(Result<Accepted, TriggerError>),
    Cancel(Result<String, TriggerError>),
}

pub(super) struct TriggeredJob<P: Processes> {
    ctx: Arc<HostContext<P>>,
    /// The decisions: the run's state, the pending run, the definition.
    m: Machine,
    logs: PathBuf,
    cursor: Option<Cursor>,
    active: Option<ActiveRun<P::Run>>,
    /// `job_scheduler.log`, written by the host's log writer thread (in place without
    /// one: tests on paused time).
    sched_log: Arc<Mutex<LogSink>>,
    /// A note went to `sched_log` since the task last waited for it to be on disk
    /// (`settle_sched`). Notes are rare (errors, skips): a run writes none.
    sched_noted: AtomicBool,
    sched_settle: logsink::Settle,
    /// What the API shows of this job (see [`TriggeredJob::set_status`]).
    status_tx: watch::Sender<TriggeredStatus>,
    /// The job's run ids as this task last saw them (see `records::open_run`).
    run_ids: Option<Vec<String>>,
    /// Cancelled when the host stops: no queued run starts after that.
    host_stopping: CancellationToken,
    /// The fingerprint of files whose program the kernel refused, and why.
    unrunnable: Option<(u64, String)>,
    /// Replies decided by the step being carried out.
    answers: Vec<Owed>,
    /// In a cluster: the latest scheduled occurrence the store could not decide (it
    /// was away), and when to try it again.
    missed_fire: Option<DateTime<Utc>>,
    catch_up_at: Option<Instant>,
    /// In a cluster: why the last run asked for could not start (the store did not
    /// answer), shown as the job's error until the store answers again.
    store_wait: Option<String>,
    /// The run lock taken ahead of this occurrence (`Coordination::lead`: in a
    /// cluster), and the last occurrence it was asked for (once each).
    ahead: Option<(DateTime<Utc>, RunHold)>,
    ahead_tried: Option<DateTime<Utc>>,
    /// The job's message queue, when its settings have one.
    queue: Option<messages::MessageQueue>,
    /// Its message runs going on (beside the machine's one run).
    msg_runs: Vec<messages::MessageRun<P::Run>>,
}

async fn next_fire(cursor: &mut Option<Cursor>, clock: &dyn crate::schedule::Clock) -> Poll {
    match cursor {
        Some(c) => c.next(clock).await,
        None => std::future::pending().await,
    }
}

async fn wait_active<R: Process>(active: &mut Option<ActiveRun<R>>) -> Exit {
    match active {
        Some(a) => a.run.wait().await,
        None => std::future::pending().await,
    }
}

/// How long a run's end waits for the writer thread to put its log and record on
/// disk before it is said to have ended anyway (a hung LOGS must not hold the job).
const RECORD_WAIT: Duration = Duration::from_secs(30);

/// Waits for a record queued by [`TriggeredJob::close_record`] to be written.
async fn wait_record(job: &str, written: Option<tokio::sync::oneshot::Receiver<()>>) {
    let Some(written) = written else { return };
    if tokio::time::timeout(RECORD_WAIT, written).await.is_err() {
        tracing::warn!(job = %job, "the run's log and record are still not written after {} s (LOGS hung?): the run is shown as ended anyway", RECORD_WAIT.as_secs());
    }
}

/// Runs file work (fsync, directory listings) on the blocking pool: a hundred jobs
/// firing on the same second must not queue behind each other's disk waits on the
/// two async workers. `None` only if the runtime is shutting down.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl<P: Processes> TriggeredJob<P> {
    pub(super) async fn run_loop(
        mut self,
        mut rx: mpsc::UnboundedReceiver<JobCommand>,
        cancel: CancellationToken,
        mut begin: Begin,
    ) {
        // The job is listed from the start; while its previous task still stops, it
        // shows the status it was created with (no run, its history).
        let mut applied = begin.applied.take();
        let mut history = begin.history.take();
        if begin.predecessor.is_some() {
            answer(applied.take());
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = begin.predecessor_gone() => {}
            }
            // It may have run since its records were read.
            history = None;
        }
        let history = match history {
            Some(h) => h,
            None => {
                let logs = self.logs.clone();
                let h = blocking(move || records::History::read(&logs)).await;
                let h = h.unwrap_or_default();
                self.set_status(|s| s.latest_run = h.latest.clone());
                h
            }
        };
        // The first poll publishes the whole status (the schedule, its next fire), so a
        // reader of the job just listed does not see it fill in.
        self.apply_definition(history.last_fired);
        self.recover_stale().await;
        self.settle_sched().await;
        answer(applied);
        while self.m.state != State::Ended {
            let clock = self.ctx.clock.clone();
            let going = self.m.going();
            let timeout_at = going.and_then(|g| g.timeout_at);
            let idle_at = going.and_then(|g| g.idle.as_ref().map(|i| i.next_check));
            let limits_at = messages::next_check(&self.msg_runs);
            let renew_at = self.lease_renew_at();
            let catch_up_at = self.catch_up_at;
            let ahead_at = self.lease_ahead_at();
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.stop_all_messages("the host is stopping").await;
                    self.feed(Input::Shutdown).await
                }
                cmd = rx.recv() => match cmd {
                    None | Some(JobCommand::Remove) => {
                        self.stop_all_messages("the job was removed").await;
                        self.feed(Input::Remove).await
                    }
                    Some(JobCommand::Update(def, applied)) => {
                        self.m.step(Input::Definition(def), self.now());
                        let logs = self.logs.clone();
                        let fired = blocking(move || records::load_last_fired(&logs)).await;
                        self.apply_definition(fired.flatten());
                        self.settle_sched().await;
                        answer(applied);
                    }
                    Some(JobCommand::Trigger { args, reply }) => {
                        self.feed(Input::Trigger(Request {
                            trigger: TriggerKind::Manual,
                            args,
                            scheduled_for: None,
                            origin: Origin::Caller,
                        }))
                        .await;
                        let r = self.answers.drain(..).find_map(|a| match a {
                            Owed::Trigger(r) => Some(r),
                            Owed::Cancel(_) => None,
                        });
                        let _ = reply.send(r.unwrap_or_else(|| Err(self.gone())));
                    }
                    Some(JobCommand::Cancel { run_id, reply }) => {
                        self.feed(Input::Cancel(run_id)).await;
                        let r = self.answers.drain(..).find_map(|a| match a {
                            Owed::Cancel(r) => Some(r),
                            Owed::Trigger(_) => None,
                        });
                        let _ = reply.send(r.unwrap_or_else(|| Err(self.gone())));
                    }
                },
                exit = wait_active(&mut self.active) => self.feed(Input::Exited(exit)).await,
                poll = next_fire(&mut self.cursor, clock.as_ref()) => self.feed(Input::Poll(poll)).await,
                _ = sleep_until_opt(timeout_at) => self.feed(Input::Timeout).await,
                _ = sleep_until_opt(idle_at) => {
                    let (output, cpu) = self.activity();
                    self.feed(Input::IdleSample { output, cpu }).await;
                }
                event = messages::next_event(&mut self.queue) => match event {
                    messages::QueueEvent::Claim => {
                        self.claim_messages().await;
                        self.settle_sched().await;
                        self.publish();
                    }
                    messages::QueueEvent::Stop(id) => {
                        self.stop_message(&id).await;
                        self.settle_sched().await;
                        self.publish();
                    }
                    messages::QueueEvent::Inbox => self.show_queue_problems(),
                },
                (i, exit) = messages::wait_any(&mut self.msg_runs) => {
                    self.message_exited(i, exit, true).await;
                    self.settle_sched().await;
                    self.publish();
                }
                _ = sleep_until_opt(limits_at) => self.check_message_limits().await,
                _ = sleep_until_opt(renew_at) => self.renew_run_lease().await,
                _ = sleep_until_opt(catch_up_at) => self.catch_up().await,
                _ = sleep_until_opt(ahead_at) => self.lease_ahead().await,
            }
        }
        // The last notes are on disk before the job's next task (or the host's exit)
        // can follow.
        self.sched_noted.store(true, Ordering::Relaxed);
        self.settle_sched().await;
        self.publish();
    }

    fn gone(&self) -> TriggerError {
        TriggerError::Gone {
            job: self.m.def.name.clone(),
        }
    }

    fn now(&self) -> Now {
        Now {
            at: Instant::now(),
            host_stopping: self.host_stopping.is_cancelled(),
        }
    }

    /// One input through the machine and the effects it asks for, until no effect
    /// answers with another input; then the status is published (an idle check
    /// that changed nothing publishes nothing).
    async fn feed(&mut self, input: Input) {
        let quiet = matches!(input, Input::IdleSample { .. });
        let mut acted = false;
        let mut taken_lock: Option<RunHold> = None;
        let mut next = Some(input);
        while let Some(input) = next.take() {
            let now = self.now();
            for effect in self.m.step(input, now) {
                acted = true;
                if let Some(answer) = self.perform(effect, &mut taken_lock).await {
                    next = Some(answer);
                }
            }
        }
        // A lock taken for a run that did not start is released here.
        drop(taken_lock);
        if acted || !quiet {
            self.settle_sched().await;
            self.publish();
        }
    }

    async fn perform(&mut self, effect: Effect, taken_lock: &mut Option<RunHold>) -> Option<Input> {
        match effect {
            Effect::Sched { text, error } => self.sched(&text, error),
            Effect::Warn(text) => tracing::warn!(job = %self.m.def.name, "{text}"),
            Effect::RecordFire(at) => {
                self.save_last_fired(at).await;
                // A skipped occurrence is claimed too where the store keeps claims.
                let _ = self.ctx.coord.claim_fire(&self.m.def.name, at).await;
            }
            Effect::ScheduleOff => self.cursor = None,
            Effect::TakeLock { fire } => {
                let answer = match self.acquire_run_lock(fire).await {
                    Err(None) => gate::Lock::Busy,
                    Err(Some(why)) => gate::Lock::Unavailable(why),
                    Ok(hold) => {
                        // Alone, only this host writes the last fire, and its cursor
                        // never repeats an occurrence: nothing to read. In a cluster
                        // it came with the lease.
                        let shared = self.ctx.layout.instance.is_some();
                        let last_fired = if fire.is_some() && shared {
                            let job = &self.m.def.name;
                            self.ctx.coord.last_fired(job, hold.as_ref()).await
                        } else {
                            None
                        };
                        *taken_lock = hold;
                        gate::Lock::Taken { last_fired }
                    }
                };
                return Some(Input::Lock(answer));
            }
            Effect::StartRun(req) => {
                let Some(settings) = self.m.def.settings.clone() else {
                    return Some(Input::Started(Err(self.gone())));
                };
                // No separate write of the last fire: the run's `Running` record, on
                // disk before its process starts, carries `scheduled_for` (see
                // `records::load_last_fired`). In a cluster the occurrence is claimed
                // in the store first, under the run lease, unless the lease claimed
                // it (or will, with the run's record): it fires on one host only.
                let claimed = taken_lock.as_ref().and_then(RunHold::claimed);
                if let Some(at) = req.scheduled_for
                    && claimed != Some(at)
                    && let Err(reason) = self.ctx.coord.claim_fire(&self.m.def.name, at).await
                {
                    let job = self.m.def.name.clone();
                    return Some(Input::Started(Err(TriggerError::Failed { job, reason })));
                }
                let started = self
                    .start_run(
                        taken_lock.take(),
                        settings,
                        req.trigger,
                        req.args,
                        req.scheduled_for,
                    )
                    .await;
                return Some(Input::Started(started));
            }
            Effect::Stop { why, grace } => {
                let exit = match self.active.as_mut() {
                    Some(active) => active.run.stop(grace, &why).await.exit,
                    None => Exit::Signal(libc::SIGKILL),
                };
                return Some(Input::Stopped(exit));
            }
            Effect::Finish { exit, abort } => {
                self.finish(exit, abort).await;
                return Some(Input::Finished);
            }
            Effect::ForgetJob => {
                self.ctx
                    .runner
                    .forget_job(JobType::Triggered, &self.m.def.name)
                    .await
            }
            Effect::Answer(r) => self.answers.push(Owed::Trigger(r)),
            Effect::CancelAnswer(r) => self.answers.push(Owed::Cancel(r)),
        }
        None
    }

    async fn save_last_fired(&self, at: DateTime<Utc>) {
        let logs = self.logs.clone();
        if let Some(Err(e)) = blocking(move || records::save_last_fired(&logs, at)).await {
            tracing::error!(job = %self.m.def.name, "{e}");
        }
    }

    /// Writes a run's final record, after the run's last lines (`log`, the run's log).
    ///
    /// A log handed to the host's writer thread gets the record queued after those
    /// lines, written by that thread, and this waits until both are on disk
    /// ([`wait_record`]) before the run is said to have ended (by the caller, and here
    /// in the cluster's history), so whoever learns it finds the log complete. A log
    /// written in place (tests on paused time) has the record written at once: a write
    /// into an existing spare file and a rename, no fsync, no file created
    /// (`records::write`).
    ///
    /// In a cluster the record is also added to the cluster's history (off this
    /// thread).
    /// `lease`: the run's lease in the cluster (name, token), given up with the
    /// record's write to the store.
    async fn close_record(
        &self,
        rec: &RunRecord,
        lease: Option<(String, i64)>,
        log: Option<&logsink::SharedSink>,
    ) {
        let (logs, job) = (self.logs.clone(), self.m.def.name.clone());
        let write = move |rec: &RunRecord| {
            if let Err(e) = records::write(&logs, rec) {
                tracing::error!(job = %job, "{e}");
            }
        };
        let written = match log {
            Some(sink) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let rec = rec.clone();
                logsink::lock(sink).then(Box::new(move || {
                    write(&rec);
                    let _ = tx.send(());
                }));
                Some(rx)
            }
            None => {
                write(rec);
                None
            }
        };
        wait_record(&self.m.def.name, written).await;
        // A message's run goes to the cluster's history with its message's settlement,
        // in the same statement (`messages.rs`): one round trip for the run's end.
        if let Some(cluster) = &self.ctx.cluster
            && rec.trigger != TriggerKind::Message
        {
            let keep = self.settings().map_or(50, |s| s.history_size);
            cluster.record_run(rec, keep, lease);
        }
    }

    /// The job's error, for a valid definition: its queue's store problem, runs that
    /// wait for the cluster store, or a program the kernel refused.
    fn show_error(&self) {
        let error = self
            .queue
            .as_ref()
            .and_then(|q| q.problem.clone())
            .or_else(|| self.store_wait.clone())
            .or_else(|| self.unrunnable.as_ref().map(|(_, msg)| msg.clone()));
        self.set_status(|s| s.error = error);
    }

    fn settings(&self) -> Option<&JobSettings> {
        self.m.def.settings.as_deref()
    }

    fn sched(&self, msg: &str, error: bool) {
        logsink::note(&self.sched_log, NO_RUN, error, msg);
        self.sched_noted.store(true, Ordering::Relaxed);
    }

    /// Waits (bounded) until the scheduler notes written since the last wait are on
    /// disk, before a status is published or a caller answered: whoever reads the
    /// log next finds the note that explains what they were told.
    async fn settle_sched(&mut self) {
        if !self.sched_noted.swap(false, Ordering::Relaxed) {
            return;
        }
        let sink = self.sched_log.clone();
        if !self.sched_settle.wait(&sink, super::LOG_SETTLE).await {
            tracing::warn!(job = %self.m.def.name, "job_scheduler.log is still not written after {} s (LOGS hung?): the status is published anyway", super::LOG_SETTLE.as_secs());
        }
    }

    /// The run lock (`Coordination::take_run`): `Ok(None)` when none is needed (a
    /// host alone on its LOGS), `Err` when another host holds it or fired the
    /// occurrence, or nobody can say (then nothing runs: an occurrence must not fire
    /// unclaimed). A lock taken ahead for this occurrence is used as it is.
    async fn acquire_run_lock(
        &mut self,
        fire: Option<DateTime<Utc>>,
    ) -> Result<Option<RunHold>, Option<String>> {
        match self.ahead.take() {
            Some((at, hold)) if Some(at) == fire => return Ok(Some(hold)),
            // Another run asks (a manual one): it takes the same lock again, which
            // this host holds.
            Some((_, hold)) => hold.superseded(),
            None => {}
        }
        let taken = self.ctx.coord.take_run(&self.m.def.name, fire).await;
        let waits = match &taken {
            Err(Refused::Unavailable(e)) => Some(format!(
                "runs wait for the cluster store ({e}); a missed occurrence runs once it answers, within 10 minutes"
            )),
            _ => None,
        };
        if waits != self.store_wait {
            self.store_wait = waits;
            self.show_error();
        }
        match taken {
            Ok(hold) => Ok(hold),
            Err(Refused::Busy) => Err(None),
            Err(Refused::Unavailable(e)) => {
                self.sched(
                    &format!("no run: the cluster store cannot be asked for the run lease: {e}"),
                    true,
                );
                // A scheduled occurrence the store could not decide is tried again
                // once it answers (within the 10-minute rule).
                if let State::Locking(req) = &self.m.state
                    && req.origin == Origin::Fire
                    && let Some(at) = req.scheduled_for
                {
                    self.missed_fire = self.missed_fire.max(Some(at));
                    self.catch_up_at = Some(Instant::now() + CATCH_UP_RETRY);
                }
                Err(Some(e))
            }
        }
    }

    /// When to take the run lease ahead of the next occurrence, or to give back one
    /// taken ahead whose occurrence passed unused; `None` when there is nothing to
    /// do (not in a cluster, a run going or waiting, no schedule).
    fn lease_ahead_at(&mut self) -> Option<Instant> {
        let lead = self.ctx.coord.lead()?;
        if let Some((at, _)) = &self.ahead {
            return Some(messages::instant_of(*at) + Duration::from_secs(1));
        }
        if self.m.state != State::Idle
            || self.m.pending.is_some()
            || self.host_stopping.is_cancelled()
        {
            return None;
        }
        let next = self.cursor.as_mut()?.peek_next()?;
        if self.ahead_tried == Some(next) || next <= Utc::now() {
            return None;
        }
        let lead = chrono::TimeDelta::from_std(lead).unwrap_or_default();
        Some(messages::instant_of(next - lead))
    }

    /// Takes the run lease for the next occurrence (not its claim: that is written
    /// with the run's record, and nobody else fires it while we hold the lease), or
    /// gives back one whose occurrence passed unused.
    async fn lease_ahead(&mut self) {
        if let Some((at, _)) = &self.ahead {
            if Utc::now() > *at + chrono::TimeDelta::seconds(1) {
                // Dropped: the hold gives the lock back.
                self.ahead = None;
            }
            return;
        }
        if self.ctx.coord.lead().is_none() {
            return;
        }
        let Some(next) = self.cursor.as_mut().and_then(Cursor::peek_next) else {
            return;
        };
        self.ahead_tried = Some(next);
        // Not taken: the occurrence takes its lock when it comes, as without this.
        if let Some(hold) = self.ctx.coord.take_run_ahead(&self.m.def.name, next).await {
            self.ahead = Some((next, hold));
        }
    }

    /// Fires again the occurrence the store could not decide, once, if it is at most
    /// ten minutes old; the gate skips it when another host ran it meanwhile (or a
    /// later occurrence ran since).
    async fn catch_up(&mut self) {
        self.catch_up_at = None;
        let Some(at) = self.missed_fire.take() else {
            return;
        };
        if Utc::now() - at > CATCH_UP_LIMIT {
            self.sched(
                &format!(
                    "missed {} while the cluster store was away (older than 10 minutes: not run)",
                    rfc3339_string(at)
                ),
                true,
            );
            return;
        }
        self.feed(Input::Poll(crate::schedule::Poll::Fire { at, skipped: 0 }))
            .await;
    }

    /// When the run's lock is to be renewed.
    fn lease_renew_at(&self) -> Option<Instant> {
        self.active.as_ref()?._lock.as_ref()?.renew_at()
    }

    /// Renews the run's lock; one lost, or not confirmed for long enough, stops the
    /// run (another host may take the job once the lease expires).
    async fn renew_run_lease(&mut self) {
        let (coord, job) = (self.ctx.coord.clone(), self.m.def.name.clone());
        let Some(hold) = self.active.as_mut().and_then(|a| a._lock.as_mut()) else {
            return;
        };
        let Renewal::Lost { why, .. } = coord.renew_run(&job, hold).await else {
            return;
        };
        self.sched(&format!("stopping the run: {why}"), true);
        self.feed(Input::Cancel(None)).await;
    }

    /// Runs a dead host left `Running` are `Aborted` — checked under the run lock, so
    /// a run that another live host is going through is left alone.
    async fn recover_stale(&mut self) {
        let Ok(_lock) = self.acquire_run_lock(None).await else {
            return;
        };
        let logs = self.logs.clone();
        let Some((fixed, latest)) = blocking(move || {
            let why = "the host running it stopped unexpectedly (found when a host started)";
            (records::recover_stale(&logs, why), records::latest(&logs))
        })
        .await
        else {
            return;
        };
        for id in fixed {
            tracing::warn!(job = %self.m.def.name, "run {id} was left Running by a host that died: marked Aborted");
            self.sched(
                &format!("run {id} was left Running by a host that died: marked Aborted"),
                true,
            );
        }
        self.set_status(|s| s.latest_run = latest);
    }

    /// Settings changed: reschedule at once (from `last_fired`, the persisted last
    /// fire); the rest applies from the next run.
    fn apply_definition(&mut self, last_fired: Option<DateTime<Utc>>) {
        // The schedule may have changed: a lease taken ahead is given back (dropped).
        self.ahead = None;
        self.ahead_tried = None;
        self.set_status(|s| {
            s.warnings = self.m.def.warnings.clone();
            s.disabled = self.m.def.disabled;
            s.run_command = self.m.def.launch.as_ref().map(|l| l.display());
        });
        for w in &self.m.def.warnings {
            tracing::warn!(job = %self.m.def.name, "{w}");
        }
        if !self.m.def.valid() {
            let err = self.m.def.errors.join("; ");
            let told = self.status_tx.borrow().error.as_deref() == Some(err.as_str());
            if !told {
                tracing::error!(job = %self.m.def.name, "triggered job {}: {err}", self.m.def.name);
                self.sched(&format!("job not scheduled: {err}"), true);
            }
            self.set_status(|s| s.error = Some(err));
            self.cursor = None;
            self.sync_queue();
            self.publish();
            return;
        }
        // A program the kernel refused stays the job's error until its files change.
        if self
            .unrunnable
            .as_ref()
            .is_some_and(|(fp, _)| *fp != self.m.def.fingerprint)
        {
            self.unrunnable = None;
        }
        self.show_error();
        self.sync_queue();
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
        let disabled_changed = self.cursor.is_some() == self.m.def.disabled;
        if !same || disabled_changed || self.cursor.is_none() {
            self.reschedule(schedule, last_fired);
        }
        self.publish();
    }

    fn reschedule(
        &mut self,
        schedule: Option<crate::schedule::Schedule>,
        persisted: Option<DateTime<Utc>>,
    ) {
        let now = self.ctx.clock.now();
        self.cursor = match schedule {
            Some(s) if !self.m.def.disabled => {
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

    async fn start_run(
        &mut self,
        lock: Option<RunHold>,
        settings: Arc<JobSettings>,
        trigger: TriggerKind,
        args: Vec<OsString>,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> Result<String, TriggerError> {
        let record = RunRecord::running(
            &self.m.def.name,
            trigger,
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            self.ctx.clock.now(),
            scheduled_for,
            self.ctx.layout.instance.clone(),
        );
        let how = match scheduled_for {
            Some(at) => format!("scheduled for {}", rfc3339_string(at)),
            None => "triggered manually".to_string(),
        };
        let launched = self.launch(&settings, record, args, how, None).await;
        let Launched { run, record, sink } =
            launched.map_err(|(reason, _)| TriggerError::Failed {
                job: self.m.def.name.clone(),
                reason,
            })?;
        let run_id = record.id.clone();
        self.sched(
            &format!("run {run_id} started ({})", trigger.as_str()),
            false,
        );
        self.active = Some(ActiveRun {
            run,
            record: record.clone(),
            sink,
            settings,
            _lock: lock,
        });
        self.set_status(|s| {
            s.running = Some(run_id.clone());
            s.latest_run = Some(record);
        });
        // Published by the caller (a fire, a trigger, the end of the run before).
        Ok(run_id)
    }

    /// Makes a run's folder and record and starts its process: a scheduled or manual
    /// run, or a message's (`message`: its payload file and variables are added).
    /// `how` ends the run's `started` line. On failure the record says so already
    /// and the error is the reason, with the record when the run's folder was made.
    async fn launch(
        &mut self,
        settings: &Arc<JobSettings>,
        record: RunRecord,
        args: Vec<OsString>,
        how: String,
        message: Option<messages::Input>,
    ) -> Result<Launched<P::Run>, (String, Option<RunRecord>)> {
        let Some(launch) = self.m.def.launch.as_ref() else {
            return Err(("no entry point".into(), None));
        };
        // A message's run takes the id its claim gave it.
        let wanted = message.as_ref().map(|m| m.minted().to_string());
        let log_id = crate::ids::random_hex(6);
        let data_path = std::path::absolute(&self.logs).unwrap_or(self.logs.clone());
        let runner = self.ctx.runner.clone();
        let mut prepared = runner.prepare(&RunRequest {
            job_name: &self.m.def.name,
            job_type: JobType::Triggered,
            job_dir: &self.m.def.dir,
            fingerprint: self.m.def.fingerprint,
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
        // Message runs may overlap: enough folders are kept for all of them.
        let concurrency = settings.queue.as_ref().map_or(0, |q| q.concurrency);
        let (logs, keep) = (
            self.logs.clone(),
            settings.history_size.max(concurrency + 1),
        );
        let (max, keep_logs) = (settings.log_max_bytes, settings.log_keep);
        let writer = self.ctx.log_writer.clone();
        // Alone on these LOGS (no instance name, docs/jobs.md; or a host of a cluster,
        // which keeps its LOGS to itself), the run ids this task saw last are current:
        // no listing of the job's folder per run.
        let alone = self.ctx.coord.logs_alone();
        let mut known = if alone { self.run_ids.take() } else { None };
        let now = self.ctx.clock.now();
        let opened = blocking(move || {
            let mut rec = record;
            let opened =
                records::open_run_as(&logs, now, keep, &mut rec, &mut known, wanted.as_deref());
            let opened = opened.inspect_err(|_| known = None)?;
            let path = opened.dir.join("output_log.txt");
            let mut sink = match &writer {
                Some(w) => LogSink::handed(path, max, keep_logs, w),
                None => LogSink::new(path, max, keep_logs),
            };
            // `open_run` left the log empty.
            sink.open_empty();
            P::set_run_id(&mut prepared, &rec.id);
            if let Some(input) = message {
                let (vars, stdin) = input.place(&opened.dir, &rec.id)?;
                P::set_message(&mut prepared, vars, stdin);
            }
            let spawned = runner.spawn_prepared(prepared);
            Ok::<_, std::io::Error>((rec, sink, spawned, known))
        })
        .await
        .unwrap_or_else(|| Err(std::io::Error::other("the host is stopping")));
        let (rec, sink, spawned, known) = opened.map_err(|e| {
            let why = format!("creating run folder under {}: {e}", self.logs.display());
            (why, None)
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
                    started_note: format!("run {run_id} started (pid {{pid}}, {how})"),
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
                    tracing::error!(job = %self.m.def.name, "{msg}");
                    self.unrunnable = Some((self.m.def.fingerprint, msg.clone()));
                    self.set_status(|s| s.error = Some(msg.clone()));
                }
                logsink::note(&sink, &log_id, true, &msg);
                record.status = RunState::Failed;
                record.error = Some(msg.clone());
                record.end_time = Some(rfc3339_string(Utc::now()));
                record.duration_ms = Some(0);
                self.close_record(&record, None, Some(&sink)).await;
                self.sched(&format!("run {run_id} failed to start: {msg}"), true);
                self.set_status(|s| s.latest_run = Some(record.clone()));
                return Err((msg, Some(record)));
            }
        };
        // Not written again for the pid: the log's `started` line has it, the record on
        // disk gets it when the run ends, and the API shows it from memory meanwhile.
        record.pid = Some(run.pid());
        Ok(Launched { run, record, sink })
    }

    /// The run's output bytes and CPU ticks so far, for the idle check.
    fn activity(&self) -> (u64, u64) {
        let Some(active) = &self.active else {
            return (0, 0);
        };
        let output = {
            let s = logsink::lock(&active.sink);
            let st = s.stats();
            st.written_bytes + st.dropped_bytes
        };
        (output, active.run.cpu_ticks())
    }

    /// Closes the record of a run whose process ended, once the runner has cleaned
    /// up after it (logged its exit, ended leftovers); `abort` when the host ended
    /// it. How it ended, and how long it ran.
    async fn end_run(
        &self,
        run: P::Run,
        record: &mut RunRecord,
        grace: Duration,
        exit: Exit,
        abort: Option<&str>,
        lease: Option<(String, i64)>,
    ) -> (state::Outcome, Duration) {
        let started = std::time::Instant::now() - run.ran_for();
        let log = run.log();
        let out = state::outcome(&record.id, exit, abort);
        let (code, signal) = super::code_and_signal(exit);
        record.exit_code = code;
        record.signal = signal;
        record.status = out.status;
        record.error = out.error.clone();
        run.finish(grace, Some(out.last_note.clone())).await;
        let ran = started.elapsed();
        record.end_time = Some(rfc3339_string(Utc::now()));
        record.duration_ms = Some(ran.as_millis() as u64);
        self.close_record(record, lease, log.as_ref()).await;
        (out, ran)
    }

    /// Records a run that ended (the runner has logged its exit and leftovers);
    /// `abort` when the host ended it.
    async fn finish(&mut self, exit: Exit, abort: Option<String>) {
        let Some(ActiveRun {
            run,
            mut record,
            settings,
            mut _lock,
            ..
        }) = self.active.take()
        else {
            return;
        };
        // In a cluster the run's lease is given up with its record: one round trip.
        let lease = _lock.as_mut().and_then(RunHold::give_up_with_record);
        let grace = settings.stopping_wait_time;
        let (out, ran) = self
            .end_run(run, &mut record, grace, exit, abort.as_deref(), lease)
            .await;
        let name = &self.m.def.name;
        match &out.sched {
            None => tracing::debug!(job = %name, run = %record.id, "run ended: Success"),
            Some(line) => {
                self.sched(line, true);
                tracing::info!(job = %name, run = %record.id, "run ended: {}", record.status.as_str());
            }
        }
        self.ctx
            .metrics
            .run_ended(name, record.status.as_str(), ran.as_secs_f64());
        self.set_status(|s| {
            s.running = None;
            s.latest_run = Some(record);
        });
        drop(_lock);
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
        let pending = self.m.pending.is_some();
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
