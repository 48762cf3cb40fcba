//! A queue job's message runs (docs/queues.md): the triggered job's task claims due
//! messages from the store, up to `queue.concurrency` at once and beside its
//! scheduled and manual run, runs each as an ordinary triggered run (its own folder
//! and record, `trigger: "message"`), and settles it when the run ends.
//!
//! What an end means for the message (success, retry after a delay, dead letter,
//! released at shutdown) is decided by the pure `queue::policy`; this file carries
//! it out: payload and result files, the store calls (on the blocking pool, where a
//! store may wait for a disk flush), the wake-ups, and recovery of messages whose
//! host died.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::records::{self, RunRecord, RunState, TriggerKind};
use super::state::{self, IdleWatch};
use super::{Launched, TriggeredJob, blocking};
use crate::cluster::runs::RunRow;
use crate::logsink::{self, LogSink};
use crate::queue::policy::{self, RunEnd};
use crate::queue::{Claimed, Message, MessageState, QueueStore, Settlement, inbox};
use crate::runner::{Exit, Process, Processes};
use crate::spec::settings::JobSettings;
use crate::spec::settings::queue::QueueSettings;

/// The payload, as the run's stdin and `WEBJOBS_MESSAGE_PATH`, in the run's folder.
const PAYLOAD_FILE: &str = "message.payload";
/// `WEBJOBS_RESULT_PATH`, in the run's folder.
const RESULT_FILE: &str = "message.result";
/// Largest result kept; a larger one is dropped with a line in the job's scheduler log.
pub const MAX_RESULT_BYTES: u64 = 1024 * 1024;
/// How often the task looks for due messages when nothing woke it: hosts sharing a
/// store enqueue without waking each other. A host alone on its LOGS is woken by
/// every enqueue and knows when delayed messages are due; it looks rarely.
const POLL_SHARED: Duration = Duration::from_secs(1);
const POLL_ALONE: Duration = Duration::from_secs(30);
/// The longest a job task waits for the store when it looks for due messages.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// What a message's run needs on the blocking pool before its process starts.
pub(super) struct Input {
    claimed: Claimed,
    store: Arc<dyn QueueStore>,
    /// The run id the claim gave the message (the last of its runs).
    minted: String,
}

impl Input {
    /// The run id the claim gave the message: its run takes it if it can.
    pub(super) fn minted(&self) -> &str {
        &self.minted
    }

    /// Writes the payload file into the run's folder `dir`, corrects the message's
    /// runs if its run did not get the minted id, and gives the run's variables and
    /// stdin.
    pub(super) fn place(
        self,
        dir: &Path,
        run_id: &str,
    ) -> std::io::Result<(Vec<(&'static str, OsString)>, PathBuf)> {
        let payload = dir.join(PAYLOAD_FILE);
        std::fs::write(&payload, &self.claimed.payload)?;
        let _ = std::fs::remove_file(dir.join(RESULT_FILE));
        let m = &self.claimed.message;
        if run_id != self.minted
            && let Err(e) = self.store.replace_run(&m.id, &self.minted, Some(run_id))
        {
            tracing::warn!(job = %m.job, message = %m.id, "{e}");
        }
        let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        let text = |v: &Option<String>| OsString::from(v.as_deref().unwrap_or(""));
        let vars = vec![
            ("WEBJOBS_MESSAGE_ID", OsString::from(&m.id)),
            (
                "WEBJOBS_MESSAGE_ATTEMPT",
                OsString::from(m.attempts.to_string()),
            ),
            (
                "WEBJOBS_MESSAGE_PATH",
                abs(payload.clone()).into_os_string(),
            ),
            ("WEBJOBS_IDEMPOTENCY_KEY", text(&m.idempotency_key)),
            ("WEBJOBS_CORRELATION_ID", text(&m.correlation_id)),
            ("WEBJOBS_MESSAGE_NAME", text(&m.name)),
            (
                "WEBJOBS_RESULT_PATH",
                abs(dir.join(RESULT_FILE)).into_os_string(),
            ),
        ];
        Ok((vars, payload))
    }
}

/// A message's run going on.
pub(super) struct MessageRun<R> {
    message: Message,
    run: R,
    record: RunRecord,
    sink: Arc<Mutex<LogSink>>,
    settings: Arc<JobSettings>,
    timeout: Option<(Duration, Instant)>,
    idle: Option<IdleWatch>,
    /// Set when the host stops the run: how the message ends then.
    stopping: Option<RunEnd>,
}

impl<R> MessageRun<R> {
    /// When this run's time limits need a look.
    fn next_check(&self) -> Option<Instant> {
        let t = self.timeout.map(|(_, at)| at);
        let i = self.idle.as_ref().map(|i| i.next_check);
        t.into_iter().chain(i).min()
    }
}

/// A queue job's side of the task: its queue settings and wake-ups.
pub(super) struct MessageQueue {
    settings: QueueSettings,
    waker: Arc<Notify>,
    /// Ids of messages cancelled through the API whose run must stop.
    stop_rx: mpsc::UnboundedReceiver<String>,
    /// When to look for due messages again.
    due: Instant,
    next_sweep: Instant,
    inbox: Option<(PathBuf, CancellationToken, watch::Receiver<Option<String>>)>,
    /// Why the queue cannot be used (the store), shown as the job's error.
    pub(super) problem: Option<String>,
}

/// Waits for a message run's process to end: its index and exit.
pub(super) async fn wait_any<R: Process>(runs: &mut [MessageRun<R>]) -> (usize, Exit) {
    if runs.is_empty() {
        return std::future::pending().await;
    }
    let waits = runs.iter_mut().map(|r| Box::pin(r.run.wait()));
    let (exit, i, _) = futures_util::future::select_all(waits).await;
    (i, exit)
}

/// What the queue side of the task is woken for.
pub(super) enum QueueEvent {
    /// An enqueue on this host, or `due` passed: look for due messages.
    Claim,
    /// A message was cancelled: stop its run.
    Stop(String),
    /// The inbox's problem changed.
    Inbox,
}

pub(super) async fn next_event(q: &mut Option<MessageQueue>) -> QueueEvent {
    let Some(q) = q else {
        return std::future::pending().await;
    };
    let MessageQueue {
        waker,
        stop_rx,
        due,
        inbox,
        ..
    } = q;
    let inbox = async {
        match inbox.as_mut() {
            Some((_, _, rx)) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = waker.notified() => QueueEvent::Claim,
        _ = tokio::time::sleep_until(*due) => QueueEvent::Claim,
        Some(id) = stop_rx.recv() => QueueEvent::Stop(id),
        _ = inbox => QueueEvent::Inbox,
    }
}

/// The earliest time limit of the message runs.
pub(super) fn next_check<R>(runs: &[MessageRun<R>]) -> Option<Instant> {
    runs.iter().filter_map(MessageRun::next_check).min()
}

/// The text of the last stderr line in the tail of a run's log.
fn last_error_line(tail: &[u8]) -> Option<String> {
    tail.split(|b| *b == b'\n').rev().find_map(|line| {
        let at = memchr::memmem::find(line, b": ERROR] ")?;
        let text = String::from_utf8_lossy(&line[at + 9..]).trim().to_string();
        (!text.is_empty()).then_some(text)
    })
}

/// The last stderr line of the log at `path` (its last 16 KiB are read).
fn last_stderr(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)))
        .ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    last_error_line(&tail)
}

/// The run's result (what it wrote to `WEBJOBS_RESULT_PATH`), and a note when it was
/// too large to keep.
fn read_result(dir: &Path) -> (Option<Vec<u8>>, Option<String>) {
    let path = dir.join(RESULT_FILE);
    let Ok(meta) = std::fs::metadata(&path) else {
        return (None, None);
    };
    if meta.len() > MAX_RESULT_BYTES {
        let note = format!(
            "the result ({} bytes) is larger than {MAX_RESULT_BYTES} bytes and was not kept",
            meta.len()
        );
        return (None, Some(note));
    }
    match std::fs::read(&path) {
        Ok(bytes) => (Some(bytes), None),
        Err(e) => (
            None,
            Some(format!("reading the result {}: {e}", path.display())),
        ),
    }
}

pub(super) fn instant_of(at: chrono::DateTime<Utc>) -> Instant {
    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + wait
}

impl<P: Processes> TriggeredJob<P> {
    fn queue_settings(&self) -> Option<QueueSettings> {
        match self.m.def.valid() {
            true => self.settings().and_then(|s| s.queue.clone()),
            false => None,
        }
    }

    /// Follows the definition: a queue appears, changes or goes; its inbox starts,
    /// moves or stops. Runs going on are left to end.
    pub(super) fn sync_queue(&mut self) {
        let name = self.m.def.name.clone();
        let Some(settings) = self.queue_settings() else {
            if let Some(q) = self.queue.take() {
                if let Some((_, cancel, _)) = q.inbox {
                    cancel.cancel();
                }
                self.ctx.queues.unlink(&name);
            }
            return;
        };
        // Not in the job's folder: files coming and going there would be changes to
        // the job's own files.
        let inbox_dir = settings.inbox.as_ref().map(|p| self.logs.join(p));
        let q = match self.queue.as_mut() {
            Some(q) => q,
            None => {
                let (stop_tx, stop_rx) = mpsc::unbounded_channel();
                self.ctx.queues.link(
                    &name,
                    crate::queue::JobLink {
                        stop: stop_tx,
                        sched_log: self.sched_log.clone(),
                    },
                );
                let problem = self.ctx.queues.store().err();
                if let Some(why) = &problem {
                    self.sched(&format!("queue unavailable: {why}"), true);
                }
                let now = Instant::now();
                self.queue.insert(MessageQueue {
                    settings: settings.clone(),
                    waker: self.ctx.queues.waker(&name),
                    stop_rx,
                    due: now,
                    next_sweep: now,
                    inbox: None,
                    problem,
                })
            }
        };
        q.settings = settings.clone();
        q.due = Instant::now();
        let same_inbox = q.inbox.as_ref().map(|(d, _, _)| d) == inbox_dir.as_ref();
        if !same_inbox {
            if let Some((_, cancel, _)) = q.inbox.take() {
                cancel.cancel();
            }
            if let Some(dir) = inbox_dir {
                let dir = std::path::absolute(&dir).unwrap_or(dir);
                let cancel = self.host_stopping.child_token();
                let rx = inbox::spawn(
                    inbox::InboxSpec {
                        job: name.clone(),
                        dir: dir.clone(),
                        max_payload_bytes: settings.max_payload_bytes,
                        dedupe_window: settings.dedupe_window,
                    },
                    self.ctx.queues.clone(),
                    cancel.clone(),
                );
                q.inbox = Some((dir, cancel, rx));
            }
        }
        self.show_queue_problems();
    }

    /// The store's problem as the job's error; the inbox's as a warning.
    pub(super) fn show_queue_problems(&mut self) {
        let Some(q) = &self.queue else { return };
        let inbox = q
            .inbox
            .as_ref()
            .and_then(|(_, _, rx)| rx.borrow().clone())
            .map(|p| format!("queue.inbox: {p}"));
        let mut warnings = self.m.def.warnings.clone();
        warnings.extend(inbox);
        self.set_status(|s| s.warnings = warnings);
        self.show_error();
    }

    /// Claims due messages into free slots and starts their runs; sweeps now and
    /// then.
    pub(super) async fn claim_messages(&mut self) {
        let Some(q) = self.queue.as_mut() else { return };
        let now = Instant::now();
        q.due = now
            + match self.ctx.layout.instance {
                Some(_) => POLL_SHARED,
                None => POLL_ALONE,
            };
        let stopping = self.host_stopping.is_cancelled();
        let qs = q.settings.clone();
        let free = (qs.concurrency as usize).saturating_sub(self.msg_runs.len());
        if stopping || self.m.def.disabled || self.unrunnable.is_some() {
            return;
        }
        let store = match self.ctx.queues.store() {
            Ok(store) => store,
            Err(_) => return,
        };
        let sweep = (now >= q.next_sweep).then(|| {
            q.next_sweep = now + self.ctx.queues.liveness().check_every();
            (q.settings.retention, q.settings.dedupe_window)
        });
        let job = self.m.def.name.clone();
        let owner = self.ctx.queues.owner.clone();
        let liveness = self.ctx.queues.liveness();
        // Each message claimed takes one of these as its run's id in the claim itself:
        // no write of its own for it.
        let newest = self.newest_run_id();
        let runs = records::mint_run_ids(self.ctx.clock.now(), newest.as_deref(), free);
        let store2 = store.clone();
        let job2 = job.clone();
        // This task runs all of this job's messages on this host: one of this host's
        // that it does not hold was left by this host's earlier life.
        let mine: std::collections::HashSet<String> =
            self.msg_runs.iter().map(|r| r.message.id.clone()).collect();
        let look = blocking(move || {
            let mut stale = Vec::new();
            if let Some((retention, window)) = sweep {
                let _ = store2.sweep(&job2, retention, window, Utc::now());
                stale = store2
                    .running(&job2)?
                    .into_iter()
                    .filter(|m| !mine.contains(&m.id))
                    .filter(|m| liveness.gone(m.owner.as_deref().unwrap_or("-")))
                    .collect();
            }
            let claimed = match free {
                0 => Vec::new(),
                _ => store2.claim(&job2, &owner, &runs, Utc::now())?,
            };
            let due = match claimed.len() < free {
                true => store2.next_due(&job2)?,
                false => None,
            };
            Ok::<_, crate::queue::StoreError>((stale, claimed, due))
        });
        // A store that does not answer (a network cut) must not hold up the job's
        // schedule: the look is given up, and what it may still claim is found
        // Running without a run here at a later sweep and retried.
        let answer = match tokio::time::timeout(STORE_WAIT, look).await {
            Ok(a) => a,
            Err(_) => Some(Err(crate::queue::StoreError::Unavailable {
                path: std::path::PathBuf::from("the message store"),
                reason: format!("no answer within {} s", STORE_WAIT.as_secs()),
            })),
        };
        let (stale, claimed, due) = match answer {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                // The job says why it waits; the next look (at most a poll away)
                // clears it once the store answers.
                tracing::warn!(job = %job, "{e}");
                if let Some(q) = self.queue.as_mut() {
                    q.problem = Some(format!("{e}; messages wait until the store answers"));
                }
                self.show_queue_problems();
                return;
            }
            None => return,
        };
        if let Some(q) = self.queue.as_mut()
            && q.problem.take().is_some()
        {
            self.show_queue_problems();
        }
        if let (Some(q), Some(at)) = (self.queue.as_mut(), due) {
            q.due = q.due.min(instant_of(at));
        }
        for m in stale {
            let text = format!(
                "message {} was Running on host `{}`, which is gone: attempt {} counted",
                m.id,
                m.owner.as_deref().unwrap_or("-"),
                m.attempts
            );
            self.sched(&text, true);
            self.settle(&store, &m, RunEnd::HostDied, None, &qs, None)
                .await;
        }
        for c in claimed {
            if self.msg_runs.iter().any(|r| r.message.id == c.message.id) {
                // Cancelled, requeued and claimed again while its cancelled run still
                // stops: it waits for that run to end, its attempt not counted.
                let (store, id) = (store.clone(), c.message.id.clone());
                let owner = self.ctx.queues.owner.clone();
                let minted = c.message.runs.last().cloned();
                let released = move || {
                    // No run of its own: the run id the claim gave it goes.
                    if let Some(minted) = minted {
                        let _ = store.replace_run(&id, &minted, None);
                    }
                    store.settle_as(&id, &owner, Settlement::Released, Utc::now())
                };
                let _ = blocking(released).await;
                continue;
            }
            self.ctx.queues.changed(&c.message);
            self.start_message(store.clone(), c).await;
        }
    }

    /// The newest run id this task knows of the job: the newest of the ids it keeps
    /// (alone on its LOGS) and of the run it shows last (started last, or the newest
    /// on disk when it began). A run id minted below a run present is not taken
    /// (`records::open_run_as`), so this only spares a correction.
    fn newest_run_id(&self) -> Option<String> {
        let shown = self
            .status_tx
            .borrow()
            .latest_run
            .as_ref()
            .map(|r| r.id.clone());
        let kept = self.run_ids.as_ref().and_then(|ids| ids.last().cloned());
        shown.max(kept)
    }

    async fn start_message(&mut self, store: Arc<dyn QueueStore>, claimed: Claimed) {
        let Some(settings) = self.m.def.settings.clone() else {
            return;
        };
        let message = claimed.message.clone();
        let mut record = RunRecord::running(
            &self.m.def.name,
            TriggerKind::Message,
            Vec::new(),
            self.ctx.clock.now(),
            None,
            self.ctx.layout.instance.clone(),
        );
        record.message_id = Some(message.id.clone());
        let how = format!("message {}, attempt {}", message.id, message.attempts);
        let minted = message.runs.last().cloned().unwrap_or_default();
        let input = Input {
            claimed,
            store: store.clone(),
            minted: minted.clone(),
        };
        self.ctx.metrics.message_attempt(&self.m.def.name);
        match self
            .launch(&settings, record, Vec::new(), how, Some(input))
            .await
        {
            Ok(Launched { run, record, sink }) => {
                let now = Instant::now();
                let mut message = message;
                if let Some(last) = message.runs.last_mut() {
                    last.clone_from(&record.id);
                }
                let going = self.msg_runs.len() + 1;
                self.set_status(|s| {
                    s.latest_run = Some(record.clone());
                    s.message_runs = going;
                });
                self.msg_runs.push(MessageRun {
                    message,
                    run,
                    record,
                    sink,
                    timeout: settings.timeout.map(|t| (t, now + t)),
                    idle: settings.idle_timeout.map(|l| IdleWatch::new(l, now)),
                    settings,
                    stopping: None,
                });
            }
            Err((why, record)) => {
                if record.is_none() {
                    // No folder, so no run: the run id the claim gave it goes.
                    let (s, id) = (store.clone(), message.id.clone());
                    let _ = blocking(move || s.replace_run(&id, &minted, None)).await;
                }
                let qs = settings.queue.clone().unwrap_or_default();
                let end = RunEnd::StartFailed { why };
                self.settle(&store, &message, end, None, &qs, record.as_ref())
                    .await;
            }
        }
    }

    /// Settles `m`'s attempt as `end` says, under the queue settings `q` it ran with,
    /// and tells whoever waits. `run`: the record of the run that ended, which goes to
    /// the cluster's history with the settlement (one statement when the store is the
    /// cluster's), since `close_record` leaves message runs to this.
    async fn settle(
        &mut self,
        store: &Arc<dyn QueueStore>,
        m: &Message,
        end: RunEnd,
        result: Option<Vec<u8>>,
        q: &QueueSettings,
        run: Option<&RunRecord>,
    ) {
        let jitter = policy::jitter_for(&m.id, m.attempts);
        let settlement = policy::settle(q, m.attempts, end, result, Utc::now(), jitter);
        let retry = matches!(settlement, Settlement::Retry { .. });
        let (store, id) = (store.clone(), m.id.clone());
        // The owner it was claimed for: this host, or the gone host it is taken from.
        let owner = m
            .owner
            .clone()
            .unwrap_or_else(|| self.ctx.queues.owner.clone());
        let keep = self.settings().map_or(50, |s| s.history_size);
        let history = match (&self.ctx.cluster, run) {
            (Some(link), Some(rec)) => {
                let row = RunRow::new(&link.me.name, &link.me.api_addr, rec, keep).ok();
                Some((link.clone(), rec.clone(), row))
            }
            _ => None,
        };
        let row = history.as_ref().and_then(|(_, _, row)| row.clone());
        let settle = move || match &row {
            Some(row) => store.settle_recording(&id, &owner, settlement, Utc::now(), row),
            None => Ok((store.settle_as(&id, &owner, settlement, Utc::now())?, false)),
        };
        // Bounded as the claims are; an attempt not settled stays Running and is
        // retried by a later sweep, its attempt counted.
        let settled = tokio::time::timeout(STORE_WAIT, blocking(settle))
            .await
            .unwrap_or_else(|_| {
                Some(Err(crate::queue::StoreError::Unavailable {
                    path: std::path::PathBuf::from("the message store"),
                    reason: format!("no answer within {} s", STORE_WAIT.as_secs()),
                }))
            });
        // The run's record not added by the settlement (another store, or it did not
        // answer): added on its own, as other runs are. Adding it twice keeps one row.
        if let Some((link, rec, _)) = history
            && !matches!(settled, Some(Ok((_, true))))
        {
            link.record_run(&rec, keep, None);
        }
        let settled = settled.map(|r| r.map(|(after, _)| after));
        let job = &self.m.def.name;
        match settled {
            Some(Ok(Some(after))) => {
                self.ctx.queues.changed(&after);
                if after.state.finished() {
                    self.ctx.metrics.message_finished(job, after.state.as_str());
                    if after.reply_to.is_some() {
                        self.ctx.queues.callbacks_due.notify_one();
                    }
                }
                if after.state == MessageState::Dead {
                    let why = after.last_error.as_deref().unwrap_or("");
                    self.sched(&format!("message {} is Dead: {why}", after.id), true);
                }
                if retry
                    && let Some(at) = after.next_attempt_at
                    && let Some(q) = self.queue.as_mut()
                {
                    q.due = q.due.min(instant_of(at));
                }
            }
            // Cancelled or requeued meanwhile: the store has the last word.
            Some(Ok(None)) | None => {}
            Some(Err(e)) => {
                tracing::error!(job = %job, message = %m.id, "settling the message: {e}");
                self.sched(&format!("message {}: {e}", m.id), true);
            }
        }
    }

    /// A message's run ended: its record, its message, and (`claim`) the slot it
    /// freed.
    pub(super) async fn message_exited(&mut self, i: usize, exit: Exit, claim: bool) {
        let mr = self.msg_runs.swap_remove(i);
        let MessageRun {
            message,
            run,
            mut record,
            settings,
            stopping,
            ..
        } = mr;
        let abort = match &stopping {
            Some(RunEnd::Aborted { why }) => Some(why.clone()),
            Some(RunEnd::HostStopping) => Some("the host is stopping".to_string()),
            Some(RunEnd::Cancelled) => Some("the message was cancelled".to_string()),
            _ => None,
        };
        let grace = settings.stopping_wait_time;
        let (out, ran) = self
            .end_run(run, &mut record, grace, exit, abort.as_deref(), None)
            .await;
        let dir = self.logs.join(&record.id);
        let (result, note, last_stderr) = blocking(move || {
            let (result, note) = read_result(&dir);
            let last = last_stderr(&dir.join("output_log.txt"));
            let _ = std::fs::remove_file(dir.join(PAYLOAD_FILE));
            let _ = std::fs::remove_file(dir.join(RESULT_FILE));
            (result, note, last)
        })
        .await
        .unwrap_or((None, None, None));
        if let Some(note) = note {
            self.sched(&format!("run {}: {note}", record.id), true);
        }
        if let Some(line) = &out.sched {
            self.sched(&format!("{line} (message {})", message.id), true);
        }
        self.ctx
            .metrics
            .run_ended(&self.m.def.name, record.status.as_str(), ran.as_secs_f64());
        let end = match stopping {
            Some(end) => end,
            None => RunEnd::Exited {
                exit,
                last_stderr: match record.status {
                    RunState::Success => None,
                    _ => last_stderr,
                },
            },
        };
        let going = self.msg_runs.len();
        self.set_status(|s| {
            if s.latest_run.as_ref().is_some_and(|r| r.id == record.id) {
                s.latest_run = Some(record.clone());
            }
            s.message_runs = going;
        });
        match self.ctx.queues.store() {
            Ok(store) => {
                // The queue settings the run started with: the queue may be gone since.
                let qs = settings.queue.clone().unwrap_or_default();
                self.settle(&store, &message, end, result, &qs, Some(&record))
                    .await;
            }
            Err(_) => {
                if let Some(link) = &self.ctx.cluster {
                    link.record_run(&record, settings.history_size, None);
                }
            }
        }
        if claim {
            self.claim_messages().await;
        }
    }

    /// Stops the run of a message cancelled through the API.
    pub(super) async fn stop_message(&mut self, id: &str) {
        let Some(i) = self.msg_runs.iter().position(|r| r.message.id == id) else {
            return;
        };
        self.stop_message_run(i, RunEnd::Cancelled, "the message was cancelled")
            .await;
    }

    async fn stop_message_run(&mut self, i: usize, end: RunEnd, why: &str) {
        let r = &mut self.msg_runs[i];
        if r.stopping.is_some() {
            return;
        }
        r.stopping = Some(end);
        let grace = r.settings.stopping_wait_time;
        let exit = r.run.stop(grace, why).await.exit;
        self.message_exited(i, exit, true).await;
    }

    /// The time limits of the message runs that are due.
    pub(super) async fn check_message_limits(&mut self) {
        let now = Instant::now();
        let mut due = None;
        for (i, r) in self.msg_runs.iter_mut().enumerate() {
            if let Some((limit, at)) = r.timeout
                && at <= now
            {
                due = Some((i, state::timeout_why(limit)));
                break;
            }
            if let Some(idle) = r.idle.as_mut()
                && idle.next_check <= now
            {
                let output = {
                    let s = logsink::lock(&r.sink);
                    let st = s.stats();
                    st.written_bytes + st.dropped_bytes
                };
                if let Some(why) = idle.sample(output, r.run.cpu_ticks(), now) {
                    due = Some((i, why));
                    break;
                }
            }
        }
        if let Some((i, why)) = due {
            let end = RunEnd::Aborted { why: why.clone() };
            self.stop_message_run(i, end, &why).await;
        }
    }

    /// The host stops or the job goes: every message run is stopped at once (in
    /// parallel) and its message released, its attempt not counted.
    pub(super) async fn stop_all_messages(&mut self, why: &str) {
        if self.msg_runs.is_empty() {
            return;
        }
        let stops = self.msg_runs.iter_mut().map(|r| {
            r.stopping = Some(RunEnd::HostStopping);
            let grace = r.settings.stopping_wait_time;
            r.run.stop(grace, why)
        });
        let exits: Vec<Exit> = futures_util::future::join_all(stops)
            .await
            .into_iter()
            .map(|s| s.exit)
            .collect();
        // Ended from the last, so each removal leaves the others' indices alone.
        for (i, exit) in exits.into_iter().enumerate().rev() {
            self.message_exited(i, exit, false).await;
        }
        if let Some(q) = self.queue.take() {
            if let Some((_, cancel, _)) = q.inbox {
                cancel.cancel();
            }
            self.ctx.queues.unlink(&self.m.def.name);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_last_stderr_line_is_found_in_a_log_tail() {
        let tail = b"[2026-11-30T10:00:00.123Z > 9a2e7d: INFO] hello\n\
[2026-11-30T10:00:00.124Z > 9a2e7d: ERROR] first problem\n\
[2026-11-30T10:00:00.125Z > 9a2e7d: ERROR] disk on fire\n\
[2026-11-30T10:00:00.126Z > 9a2e7d: INFO] bye\n\
[2026-11-30T10:00:00.127Z > 9a2e7d: SYS INFO] run 1 Failed\n";
        assert_eq!(last_error_line(tail).as_deref(), Some("disk on fire"));
        assert_eq!(last_error_line(b"[x > y: INFO] only out\n"), None);
        assert_eq!(last_error_line(b""), None);
    }

    #[test]
    fn a_result_too_large_is_dropped_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_result(dir.path()), (None, None));
        std::fs::write(dir.path().join(RESULT_FILE), b"\x00\xffok").unwrap();
        assert_eq!(
            read_result(dir.path()).0.as_deref(),
            Some(&b"\x00\xffok"[..])
        );
        let big = vec![b'x'; MAX_RESULT_BYTES as usize + 1];
        std::fs::write(dir.path().join(RESULT_FILE), big).unwrap();
        let (r, note) = read_result(dir.path());
        assert!(r.is_none());
        assert!(note.unwrap().contains("larger than"));
    }
}
