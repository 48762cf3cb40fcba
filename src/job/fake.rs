//! Fake processes for the job tasks' tests: each run follows a [`Plan`] on tokio's
//! (paused) clock, and the fake records when runs started and why they were stopped.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::layout::LogsLayout;
use crate::runner::{Exit, Process, Processes, RunLog, RunRequest, SpawnError, Stopped};
use crate::spec::JobType;

use super::HostContext;

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

    /// A host context around this fake, with LOGS at `logs`.
    pub fn context(
        &self,
        logs: PathBuf,
        instance: Option<String>,
        clock: Arc<dyn crate::schedule::Clock>,
    ) -> Arc<HostContext<Fake>> {
        Arc::new(HostContext {
            runner: self.clone(),
            layout: LogsLayout::new(logs, instance),
            clock,
            metrics: Arc::new(crate::metrics::Metrics::new()),
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
