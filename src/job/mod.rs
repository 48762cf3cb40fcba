//! Per-job tasks. Each job is owned by one task that holds its run, timers and state;
//! the supervisor (and the API) reach it through a [`JobHandle`] and read its status
//! from a `watch` channel, never from the task's own state.
//!
//! Each job type is a pure state machine (`continuous::state`, `triggered::state`:
//! state + input + now -> effects) inside a thin task that performs the effects and
//! reaches processes through the `runner::Processes` seam, and other hosts' claims
//! (singleton locks, run locks, fires) through the `coord::Coordination` seam.

pub mod backoff;
pub mod continuous;
#[cfg(test)]
pub mod fake;
pub mod plan;
pub mod triggered;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::layout::LogsLayout;
use crate::logsink::LogSink;
use crate::runner::{Processes, Runner};
use crate::scan::JobDefinition;
use crate::schedule::Clock;
use crate::spec::JobType;
use crate::status::ContinuousStatus;
use continuous::ContinuousJob;
use triggered::{TriggeredJob, TriggeredStatus};

/// A run's id, as `WEBJOBS_RUN_ID`, the API and the records name it: a triggered run's
/// folder name under the job's LOGS; for a continuous run, the 6 hex digits that also
/// tag its log lines (the runner's `log_id`, which a triggered run has apart).
pub type RunId = String;

/// What every job task shares. `P` is how runs are started: the host's [`Runner`],
/// or a fake in the job tasks' tests.
pub struct HostContext<P = Runner> {
    pub runner: P,
    pub layout: LogsLayout,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The message queues of triggered jobs with a `queue` object.
    pub queues: Arc<crate::queue::Queues>,
    /// The cluster, when the host is in one (docs/cluster.md): its history, its
    /// message store. Locks and leases go through `coord`.
    pub cluster: Option<Arc<crate::cluster::member::ClusterLink>>,
    /// Singleton locks, run locks, fire claims and the last fire: lock files in LOGS,
    /// or leases in the cluster store (`coord`).
    pub coord: Arc<dyn crate::coord::Coordination>,
    /// The host's log-writing thread: triggered runs' logs and records and
    /// `job_scheduler.log` are written there, off the async workers. `None` (tests on
    /// paused time): written in place.
    pub log_writer: Option<crate::logsink::LogWriter>,
}

pub type Ctx = Arc<HostContext>;

/// Starts the task for `def` (its type's loop, on `tracker`, ended by `cancel`) and
/// returns its handle.
pub fn spawn<P: Processes>(
    ctx: Arc<HostContext<P>>,
    def: JobDefinition,
    cancel: CancellationToken,
    tracker: &TaskTracker,
    mut begin: Begin,
) -> JobHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let view = match def.job_type {
        JobType::Continuous => {
            let (view, job) = ContinuousJob::new(ctx, def);
            tracker.spawn(job.run_loop(rx, cancel, begin));
            view
        }
        JobType::Triggered => {
            let latest = begin.history.as_mut().and_then(|h| h.latest.take());
            let (view, job) = TriggeredJob::new(ctx, def, &cancel, latest);
            tracker.spawn(job.run_loop(rx, cancel, begin));
            view
        }
    };
    JobHandle { tx, view }
}

/// A job's own log sink at `path` (the job log, the scheduler log), rotated as its
/// settings say, or as the defaults do while they are invalid; written by the host's
/// log writer thread when there is one.
fn log_sink(
    def: &JobDefinition,
    path: PathBuf,
    writer: Option<&crate::logsink::LogWriter>,
) -> Arc<Mutex<LogSink>> {
    let settings = def.settings.as_deref().cloned().unwrap_or_default();
    Arc::new(Mutex::new(new_sink(
        path,
        settings.log_max_bytes,
        settings.log_keep,
        writer,
    )))
}

/// A sink written by `writer`'s thread, or in place without one (tests on paused time).
fn new_sink(
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    writer: Option<&crate::logsink::LogWriter>,
) -> LogSink {
    match writer {
        Some(w) => LogSink::handed(path, max_bytes, keep, w),
        None => LogSink::new(path, max_bytes, keep),
    }
}

/// How long a job task waits for its log's lines to reach the disk before it tells
/// anyone (publishes a status, answers a call) that may read them. A LOGS that hangs
/// longer is waited for once (`logsink::Settle` then skips) and shown late.
const LOG_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Messages to a job task.
#[derive(Debug)]
pub enum JobCommand {
    /// The folder changed (or was rescanned): the latest definition wins.
    Update(Box<JobDefinition>, Applied),
    /// The folder is gone: stop gracefully and end the task.
    Remove,
    /// Start a run now (triggered jobs).
    Trigger {
        args: Vec<OsString>,
        reply: oneshot::Sender<Result<Accepted, TriggerError>>,
    },
    /// Stop a run (triggered jobs); `None` = the one going.
    Cancel {
        run_id: Option<String>,
        reply: oneshot::Sender<Result<String, TriggerError>>,
    },
}

/// Answered (or dropped) once a job task has taken a definition into account and
/// published the status that follows from it: an API write waits for it, so the very
/// next request sees what the write did.
pub type Applied = Option<oneshot::Sender<()>>;

/// Tells a writer waiting on [`Applied`] that its definition is applied.
pub fn answer(applied: Applied) {
    if let Some(a) = applied {
        let _ = a.send(());
    }
}

/// Sleeps until `at`, or forever: a timer arm of a task's `select!` that may be off.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// An exit as the status and records show it: (exit code, signal).
fn code_and_signal(exit: crate::runner::Exit) -> (Option<i32>, Option<i32>) {
    match exit {
        crate::runner::Exit::Code(c) => (Some(c), None),
        crate::runner::Exit::Signal(s) => (None, Some(s)),
    }
}

/// How a new job task begins.
#[derive(Default)]
pub struct Begin {
    /// Answered once the first definition is applied.
    pub applied: Applied,
    /// The task this one replaces (same type and name, removed and still stopping):
    /// its runs must be over before this task starts any, or two runs of one job
    /// would share its log and records.
    pub predecessor: Option<mpsc::UnboundedSender<JobCommand>>,
    /// A triggered job's records as read before it was listed; `None`: the task
    /// reads them (on the blocking pool) before its first status.
    pub history: Option<triggered::records::History>,
}

impl Begin {
    /// Waits until the task this one replaces has ended.
    pub async fn predecessor_gone(&mut self) {
        if let Some(p) = self.predecessor.take() {
            p.closed().await;
        }
    }
}

/// A trigger that was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The run started, or `None` when it was queued behind the one going.
    pub run_id: Option<String>,
    pub queued_behind: Option<String>,
    /// The job's schedule is switched off by disable.job (manual runs still work).
    pub schedule_disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error(
        "run {run_id} of {job} is still going and its overlap setting is \"skip\": wait for it, cancel it (jobhost cancel {job}), or set \"overlap\": \"queue\" in settings.job"
    )]
    Busy { job: String, run_id: String },
    #[error(
        "a run of {job} is going and one is already queued (overlap \"queue\" keeps one pending run)"
    )]
    QueueFull { job: String },
    #[error("{job} is a continuous job: only triggered jobs can be triggered or cancelled")]
    NotTriggered { job: String },
    #[error("{job} cannot run: {reason}")]
    Invalid { job: String, reason: String },
    #[error("{job} is running on another host (its run.lock is held)")]
    LockedElsewhere { job: String },
    #[error(
        "{job} cannot start now: the cluster store decides which host runs it and cannot be asked ({reason}); try again once it answers"
    )]
    StoreAway { job: String, reason: String },
    #[error("{job} has no run going")]
    NothingToCancel { job: String },
    #[error("run {run_id} of {job} is not going")]
    NotRunning { job: String, run_id: String },
    #[error("{job}: {reason}")]
    Failed { job: String, reason: String },
    #[error("{job} is being removed or the host is stopping")]
    Gone { job: String },
}

/// A job's status as readers see it.
#[derive(Clone)]
pub enum JobView {
    Continuous(watch::Receiver<ContinuousStatus>),
    Triggered(watch::Receiver<TriggeredStatus>),
}

/// The way to reach a job task.
#[derive(Clone)]
pub struct JobHandle {
    pub tx: mpsc::UnboundedSender<JobCommand>,
    pub view: JobView,
}
