//! What the job tasks' tests share: fake processes (each run follows a [`Plan`] on
//! tokio's (paused) clock, and the fake records when runs started and why they were
//! stopped), a job definition to start from, the runner of a transition table, and a
//! [`Harness`] that starts a task on the fake and drives it through its handle.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::layout::LogsLayout;
use crate::runner::{Exit, Process, Processes, RunLog, RunRequest, SpawnError, Stopped};
use crate::scan::JobDefinition;
use crate::schedule::Clock;
use crate::spec::JobType;
use crate::spec::entry::{EntryKind, Launch};
use crate::spec::settings::JobSettings;

use super::{Begin, HostContext, JobCommand, JobHandle, JobView};

/// How the next fake run behaves.
#[derive(Debug, Clone, Copy)]
pub enum Plan {
    /// Exits with this code after this long, silent.
    Exit(Duration, i32),
    /// Runs, silent, until stopped.
    Forever,
    /// Runs until stopped, using CPU all the time.
    Busy,
    /// The kernel refuses the program.
    Unrunnable,
}

#[derive(Default)]
pub struct Record {
    plans: VecDeque<Plan>,
    /// When each run started, from the fake's creation.
    pub starts: Vec<Duration>,
    /// Why each stop was asked for.
    pub stops: Vec<String>,
    pub forgotten: bool,
}

#[derive(Clone)]
pub struct Fake {
    t0: Instant,
    pub record: Arc<Mutex<Record>>,
}

impl Fake {
    /// Runs follow `plans` in turn, then [`Plan::Forever`].
    pub fn new(plans: &[Plan]) -> Fake {
        Fake {
            t0: Instant::now(),
            record: Arc::new(Mutex::new(Record {
                plans: plans.iter().copied().collect(),
                ..Record::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn starts(&self) -> Vec<Duration> {
        self.lock().starts.clone()
    }

    pub fn stops(&self) -> Vec<String> {
        self.lock().stops.clone()
    }

    pub fn forgotten(&self) -> bool {
        self.lock().forgotten
    }

    /// Time since the fake was made (on paused time: exactly what the task waited).
    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// A host context around this fake, with LOGS at `logs`.
    pub fn context(
        &self,
        logs: PathBuf,
        instance: Option<String>,
        clock: Arc<dyn crate::schedule::Clock>,
    ) -> Arc<HostContext<Fake>> {
        let layout = LogsLayout::new(logs, instance);
        Arc::new(HostContext {
            runner: self.clone(),
            coord: Arc::new(crate::coord::files::Files::new(layout.clone())),
            layout,
            clock,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            queues: Arc::new(crate::queue::Queues::new(
                Err("no message store in these tests".into()),
                "-".into(),
            )),
            cluster: None,
            log_writer: None,
        })
    }
}

pub struct FakeRun {
    pid: i32,
    started: Instant,
    plan: Plan,
    record: Arc<Mutex<Record>>,
}

impl Processes for Fake {
    type Run = FakeRun;
    type Prepared = ();
    type Spawned = FakeRun;

    async fn start(&self, req: RunRequest<'_>, log: RunLog<'_>) -> Result<FakeRun, SpawnError> {
        self.prepare(&req);
        let spawned = self.spawn_prepared(())?;
        Ok(self.attach(spawned, log))
    }

    fn prepare(&self, _: &RunRequest<'_>) {}

    fn set_run_id(_: &mut (), _: &str) {}
    fn set_message(_: &mut (), _: Vec<(&'static str, std::ffi::OsString)>, _: std::path::PathBuf) {}

    fn spawn_prepared(&self, _: ()) -> Result<FakeRun, SpawnError> {
        let mut rec = self.lock();
        let plan = rec.plans.pop_front().unwrap_or(Plan::Forever);
        if let Plan::Unrunnable = plan {
            return Err(SpawnError::Start {
                command: "run.sh".into(),
                dir: PathBuf::from("/nonexistent/job"),
                source: std::io::Error::from_raw_os_error(libc::ENOEXEC),
            });
        }
        let now = Instant::now();
        rec.starts.push(now - self.t0);
        Ok(FakeRun {
            pid: 1000 + rec.starts.len() as i32,
            started: now,
            plan,
            record: self.record.clone(),
        })
    }

    fn attach(&self, spawned: FakeRun, _: RunLog<'_>) -> FakeRun {
        spawned
    }

    async fn forget_job(&self, _: JobType, _: &str) {
        self.lock().forgotten = true;
    }
}

impl Process for FakeRun {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn started_at(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }

    fn ran_for(&self) -> Duration {
        self.started.elapsed()
    }

    fn cpu_ticks(&self) -> u64 {
        match self.plan {
            Plan::Busy => self.started.elapsed().as_millis() as u64,
            _ => 0,
        }
    }

    async fn wait(&mut self) -> Exit {
        match self.plan {
            Plan::Exit(after, code) => {
                tokio::time::sleep_until(self.started + after).await;
                Exit::Code(code)
            }
            _ => std::future::pending().await,
        }
    }

    async fn stop(&mut self, _grace: Duration, why: &str) -> Stopped {
        let mut rec = self.record.lock().unwrap_or_else(|e| e.into_inner());
        rec.stops.push(why.to_string());
        Stopped {
            exit: Exit::Signal(libc::SIGTERM),
            forced: false,
        }
    }

    async fn finish(self, _grace: Duration, _last_note: Option<(bool, String)>) {}
}

/// A valid job named `job` of `job_type` running `run.sh`, as a scan would make it,
/// with short waits (1 s restart delay, 60 s cap, 5 s to stop) that `f` may change.
/// Its folder does not exist: the fake runs nothing.
pub fn definition(job_type: JobType, f: impl FnOnce(&mut JobSettings)) -> JobDefinition {
    let mut s = JobSettings {
        restart_delay: Duration::from_secs(1),
        restart_max_delay: Duration::from_secs(60),
        stopping_wait_time: Duration::from_secs(5),
        ..JobSettings::default()
    };
    f(&mut s);
    JobDefinition {
        name: "job".into(),
        job_type,
        dir: PathBuf::from("/nonexistent/job"),
        fingerprint: 1,
        disabled: false,
        settings: Some(Arc::new(s)),
        launch: Some(Launch {
            kind: EntryKind::Bash,
            entry: "run.sh".into(),
            interpreter: None,
        }),
        warnings: Vec::new(),
        errors: Vec::new(),
        problems: Vec::new(),
        settings_raw: serde_json::json!({}),
    }
}

/// One row of a transition table: (from, what the input is, the input, to, effects).
/// `from` names a state the table's `reach` leads a machine to; `to` and `effects`
/// are the names the table's `seen` gives the state and effects that follow.
pub type Case<P, E> = (
    &'static str,
    &'static str,
    fn(&mut P) -> Vec<E>,
    &'static str,
    &'static str,
);

/// Runs every row of a transition table and says which one went elsewhere.
pub fn check_table<P, E>(
    cases: &[Case<P, E>],
    reach: fn(&str) -> P,
    seen: fn(&P, &[E]) -> (String, String),
) {
    for (from, what, act, to, effects) in cases {
        let mut p = reach(from);
        let fx = act(&mut p);
        let (state, kinds) = seen(&p, &fx);
        assert_eq!(
            (state.as_str(), kinds.as_str()),
            (*to, *effects),
            "{from} + {what}"
        );
    }
}

/// A job task under test: started on a [`Fake`] with LOGS in a temporary folder, and
/// driven through its handle. `S` is the status its view publishes.
pub struct Harness<S> {
    pub fake: Fake,
    pub tx: mpsc::UnboundedSender<JobCommand>,
    pub status: watch::Receiver<S>,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    pub layout: LogsLayout,
    _dir: tempfile::TempDir,
}

impl<S: Debug> Harness<S> {
    /// Starts the task for `d` with LOGS in `dir`; `status` picks the type's status out
    /// of the handle's view.
    pub fn spawn(
        dir: tempfile::TempDir,
        clock: Arc<dyn Clock>,
        d: JobDefinition,
        plans: &[Plan],
        status: fn(JobView) -> Option<watch::Receiver<S>>,
    ) -> Harness<S> {
        let fake = Fake::new(plans);
        let ctx = fake.context(dir.path().to_path_buf(), None, clock);
        let layout = ctx.layout.clone();
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let JobHandle { tx, view } =
            super::spawn(ctx, d, cancel.clone(), &tracker, Begin::default());
        let Some(status) = status(view) else {
            panic!("the task's view is not of the type asked for")
        };
        Harness {
            fake,
            tx,
            status,
            cancel,
            tracker,
            layout,
            _dir: dir,
        }
    }

    /// Waits (paused time: at most a day of it) for a status.
    pub async fn until(&mut self, what: &str, f: impl Fn(&S) -> bool) {
        let waited =
            tokio::time::timeout(Duration::from_secs(86_400), self.status.wait_for(|s| f(s)))
                .await
                .is_ok_and(|r| r.is_ok());
        assert!(waited, "{what}: status is {:?}", *self.status.borrow());
    }

    /// Stops the host (as SIGTERM does) and waits for the task to end.
    pub async fn stop_host(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
