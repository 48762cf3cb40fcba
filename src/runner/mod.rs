//! Runs: one process tree started for a job, from spawn to the last byte of output.
//!
//! A [`Run`] owns its child's pid, the exit receiver from the [`Reaper`], the task that
//! pumps its pipes into the job's log, and its private copy of the job folder. The stop
//! sequence (shutdown file, SIGTERM to the group, grace, SIGKILL of everything left) and
//! the clean-up after any exit live here, so continuous and triggered jobs share them.

pub mod copy;
pub mod guardian;
pub mod proctable;
pub mod pump;
pub mod reaper;
pub mod spawn;
pub mod workspace;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::logsink::{self, SharedSink};
use crate::spec::JobType;
use crate::spec::entry::Launch;
use guardian::GuardianLink;
pub use reaper::{Exit, Reaper};

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("copying job folder {from} to {to}: {source}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("starting `{command}` in {dir}: {source}")]
    Start {
        command: String,
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl SpawnError {
    /// Why the job's files cannot run at all, with the fix, when starting again with
    /// the same files would fail the same way: the kernel refused the program
    /// (ENOEXEC: text without a `#!` line, or a binary for another machine), may not
    /// execute it (EACCES), or it or its `#!` interpreter does not exist (ENOENT).
    /// `None` for a failure that may pass (a full disk while copying, no memory).
    pub fn unrunnable(&self) -> Option<String> {
        let SpawnError::Start {
            command, source, ..
        } = self
        else {
            return None;
        };
        let reason = match source.raw_os_error() {
            Some(libc::ENOEXEC) => format!(
                "`{command}` is not a program this system can execute (exec format error): \
                 add a #! line naming its interpreter as its first line (e.g. #!/bin/sh), \
                 or build it for this machine ({} Linux)",
                std::env::consts::ARCH
            ),
            Some(libc::EACCES) => format!(
                "`{command}` may not be executed (permission denied): make it executable \
                 (chmod +x) and check that its folder is not on a noexec mount (runs start \
                 from a private copy under TMPDIR unless is_in_place is true)"
            ),
            Some(libc::ENOENT) => format!(
                "`{command}` could not be started: it, or the interpreter its #! line \
                 names, does not exist: fix the #! line or install the interpreter"
            ),
            _ if source.kind() == std::io::ErrorKind::NotFound => format!(
                "`{command}` could not be started: {source}: install it or fix the entry point"
            ),
            _ => return None,
        };
        Some(reason)
    }
}

/// What every run of this host shares.
#[derive(Clone)]
pub struct Runner {
    pub reaper: Reaper,
    pub guardian: Arc<GuardianLink>,
    pub host_id: String,
    /// This host's scratch folder (private copies, shutdown files).
    pub scratch: PathBuf,
    /// Leaders of the runs going on.
    pub leaders: Arc<Mutex<std::collections::HashSet<i32>>>,
    /// Private copies of job folders kept for the next run.
    pub workspaces: Arc<workspace::Workspaces>,
}

/// What to start: the job's files, entry point, environment and arguments.
pub struct RunRequest<'a> {
    pub job_name: &'a str,
    pub job_type: JobType,
    pub job_dir: &'a Path,
    /// The fingerprint of the host's last scan of `job_dir`.
    pub fingerprint: u64,
    pub launch: &'a Launch,
    pub in_place: bool,
    pub env: &'a std::collections::BTreeMap<String, String>,
    pub args: &'a [OsString],
    /// The job's folder under LOGS (`WEBJOBS_DATA_PATH`), made if need be when the run
    /// starts.
    pub data_path: &'a Path,
    /// `WEBJOBS_RUN_ID` (see [`PreparedRun::set_run_id`] when it is not known yet).
    pub run_id: &'a str,
    /// The 6-hex id in log lines (also part of the run's private names).
    pub log_id: &'a str,
}

/// A run ready to start, everything owned: made by [`Runner::prepare`] on the async
/// side, started by [`Runner::spawn_prepared`] on the blocking pool.
pub struct PreparedRun {
    job_dir: PathBuf,
    fingerprint: u64,
    in_place: bool,
    job_scratch: PathBuf,
    data_path: PathBuf,
    token: String,
    shutdown_file: PathBuf,
    launch: Launch,
    args: Vec<OsString>,
    extra: std::collections::BTreeMap<String, String>,
    webjobs: Vec<(&'static str, OsString)>,
    mark: String,
    stdin: Option<PathBuf>,
}

impl PreparedRun {
    /// Sets `WEBJOBS_RUN_ID`, for a caller that learns the run id only on the
    /// blocking pool (a triggered run's id is the folder it claims there).
    pub fn set_run_id(&mut self, run_id: &str) {
        self.webjobs.retain(|(k, _)| *k != "WEBJOBS_RUN_ID");
        self.webjobs
            .push(("WEBJOBS_RUN_ID", OsString::from(run_id)));
    }

    /// Makes the run a message's: its variables (`WEBJOBS_MESSAGE_*`) and stdin
    /// reading the payload file.
    pub fn set_message(&mut self, vars: Vec<(&'static str, OsString)>, stdin: PathBuf) {
        self.webjobs.extend(vars);
        self.stdin = Some(stdin);
    }
}

/// A process started from a [`PreparedRun`], not yet attached to its log.
pub struct SpawnedRun {
    child: spawn::Spawned,
    exit: oneshot::Receiver<Exit>,
    workspace: Option<(PathBuf, workspace::Lease)>,
    shutdown_file: PathBuf,
    mark: String,
    display: String,
}

/// Where a started run's output and notes go.
pub struct RunLog<'a> {
    /// The 6-hex id in log lines.
    pub log_id: &'a str,
    pub sink: SharedSink,
    /// The SYS INFO line written once the pid is known, before any output: `{pid}`
    /// is replaced by the pid; the command line is appended.
    pub started_note: String,
    /// Told when the log's loss counters change, so the status can show them.
    pub log_changed: Arc<tokio::sync::Notify>,
}

/// A started run.
pub struct Run {
    pub log_id: String,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
    pub started: Instant,
    pub shutdown_file: PathBuf,
    /// The stop sequence created the shutdown file: remove it when the run is over.
    shutdown_written: bool,
    exit: Option<oneshot::Receiver<Exit>>,
    exited: Option<Exit>,
    exited_at: Option<Instant>,
    pump: Option<JoinHandle<()>>,
    /// The private copy and the job's scratch folder it belongs to.
    workspace: Option<(PathBuf, workspace::Lease)>,
    mark: String,
    runner: Runner,
    /// The run's log, for the notes of the stop sequence and the exit.
    sink: SharedSink,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    pub exit: Exit,
    /// The grace time ran out and SIGKILL was needed.
    pub forced: bool,
}

/// What the clean-up after the main process's exit found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leftovers {
    /// Processes of the run still alive after its main process ended, and ended by us.
    pub killed: usize,
    /// The pipes were still held open by something we could not find; reading stopped.
    pub output_abandoned: bool,
}

/// The live processes of the run led by `leader`, from a /proc read taken after `t`.
fn run_members_after(
    t: Instant,
    leader: i32,
    mark: &str,
    skip: &std::collections::HashSet<i32>,
) -> Vec<Pid> {
    proctable::Tree::read_after(t).run_members(std::process::id() as i32, leader, mark, skip)
}

/// How long output may keep flowing after every process we know of is gone.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

impl Runner {
    fn lock_leaders(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<i32>> {
        self.leaders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pids the host started itself (run leaders, the guardian): never orphans.
    fn leaders(&self) -> std::collections::HashSet<i32> {
        let mut set = self.lock_leaders().clone();
        if let Some(g) = self.guardian.pid() {
            set.insert(g);
        }
        set
    }

    fn job_scratch(&self, job_type: JobType, name: &str) -> PathBuf {
        self.scratch.join(job_type.as_str()).join(name)
    }

    /// Removes the private copy kept for a job that is gone.
    pub async fn forget_job(&self, job_type: JobType, name: &str) {
        let (ws, scratch) = (self.workspaces.clone(), self.job_scratch(job_type, name));
        let _ = tokio::task::spawn_blocking(move || ws.forget(&scratch)).await;
    }

    /// Everything a start needs, owned, from a request. Cheap: no file work.
    pub fn prepare(&self, req: &RunRequest<'_>) -> PreparedRun {
        let token = format!("{}-{}", req.log_id, crate::ids::random_hex(6));
        let job_scratch = self.job_scratch(req.job_type, req.job_name);
        let shutdown_file = job_scratch.join(format!("{token}.shutdown"));
        PreparedRun {
            job_dir: req.job_dir.to_path_buf(),
            fingerprint: req.fingerprint,
            in_place: req.in_place,
            job_scratch,
            data_path: req.data_path.to_path_buf(),
            mark: format!("{}/{}", self.host_id, token),
            token,
            launch: req.launch.clone(),
            args: req.args.to_vec(),
            extra: req.env.clone(),
            webjobs: vec![
                ("WEBJOBS_NAME", OsString::from(req.job_name)),
                ("WEBJOBS_TYPE", OsString::from(req.job_type.as_str())),
                ("WEBJOBS_DATA_PATH", req.data_path.as_os_str().to_owned()),
                ("WEBJOBS_RUN_ID", OsString::from(req.run_id)),
                (
                    "WEBJOBS_SHUTDOWN_FILE",
                    shutdown_file.clone().into_os_string(),
                ),
                ("WEBJOBS_COMMAND_ARGUMENTS", crate::argv::quote(req.args)),
            ],
            shutdown_file,
            stdin: None,
        }
    }

    /// Blocking: the private copy, then the spawn (which waits until the child has
    /// exec'd). Call on the blocking pool.
    pub fn spawn_prepared(&self, job: PreparedRun) -> Result<SpawnedRun, SpawnError> {
        // A continuous job's data folder may not exist yet (a triggered run's is where
        // its run folder was just made). A failure shows to the run, which uses it.
        let _ = std::fs::create_dir_all(&job.data_path);
        let workspace = if job.in_place {
            let _ = std::fs::create_dir_all(&job.job_scratch);
            None
        } else {
            match self.workspaces.checkout(
                &job.job_dir,
                job.fingerprint,
                &job.job_scratch,
                &job.token,
            ) {
                Ok(lease) => Some((job.job_scratch.clone(), lease)),
                Err(source) => {
                    return Err(SpawnError::Copy {
                        from: job.job_dir.clone(),
                        to: job.job_scratch.join(&job.token),
                        source,
                    });
                }
            }
        };
        let run_dir = match &workspace {
            Some((_, lease)) => lease.path.clone(),
            None => job.job_dir.clone(),
        };
        let mut webjobs = job.webjobs;
        webjobs.push(("WEBJOBS_PATH", run_dir.clone().into_os_string()));
        let env = spawn::RunEnv {
            extra: &job.extra,
            webjobs,
            mark: &job.mark,
            stdin: job.stdin.as_deref(),
        };
        let cmd = spawn::command(&job.launch, &run_dir, &job.args, &env);
        match self.reaper.spawn_run(&cmd) {
            Ok((child, exit)) => Ok(SpawnedRun {
                child,
                exit,
                workspace,
                shutdown_file: job.shutdown_file,
                mark: job.mark,
                display: job.launch.display(),
            }),
            Err(source) => {
                if let Some((scratch, lease)) = workspace {
                    self.workspaces.checkin_or_remove(&scratch, lease);
                }
                Err(SpawnError::Start {
                    command: job.launch.display(),
                    dir: run_dir,
                    source,
                })
            }
        }
    }

    /// Takes a spawned process in: the guardian watches it, its started line is
    /// written and its output pumped into `log`.
    pub fn attach(&self, spawned: SpawnedRun, log: RunLog<'_>) -> Run {
        let SpawnedRun {
            child,
            exit,
            workspace,
            shutdown_file,
            mark,
            display,
        } = spawned;
        let pid = child.pid;
        self.guardian.watch(pid);
        self.lock_leaders().insert(pid);
        // Before the pump starts, so the started line precedes the run's output; left
        // in the batch for the pump to write with the first output (`pump::HOLD`).
        let started = log.started_note.replace("{pid}", &pid.to_string());
        logsink::lock(&log.sink).sys_info(log.log_id, &format!("{started}: {display}"));
        let pump = pump::start(
            child.stdout,
            child.stderr,
            log.sink.clone(),
            log.log_id.to_string(),
            log.log_changed,
        );
        Run {
            log_id: log.log_id.to_string(),
            pid,
            started_at: Utc::now(),
            started: Instant::now(),
            shutdown_file,
            shutdown_written: false,
            exit: Some(exit),
            exited: None,
            exited_at: None,
            pump: Some(pump),
            workspace,
            mark,
            runner: self.clone(),
            sink: log.sink,
        }
    }

    /// Prepares, spawns (on the blocking pool, one hop) and attaches a run.
    pub async fn start(&self, req: RunRequest<'_>, log: RunLog<'_>) -> Result<Run, SpawnError> {
        let prepared = self.prepare(&req);
        let this = self.clone();
        let spawned = tokio::task::spawn_blocking(move || this.spawn_prepared(prepared))
            .await
            .unwrap_or_else(|e| {
                Err(SpawnError::Start {
                    command: req.launch.display(),
                    dir: req.job_dir.to_path_buf(),
                    source: std::io::Error::other(e),
                })
            })?;
        Ok(self.attach(spawned, log))
    }
}

/// The seam between a job task and its processes: the real [`Runner`] in the host, a
/// fake on paused time in the job tasks' tests.
pub trait Processes: Clone + Send + Sync + 'static {
    type Run: Process;
    /// A run ready to start (see [`PreparedRun`]).
    type Prepared: Send + 'static;
    /// A started process not yet attached to its log (see [`SpawnedRun`]).
    type Spawned: Send + 'static;
    /// Starts a run (see [`Runner::start`]).
    fn start(
        &self,
        req: RunRequest<'_>,
        log: RunLog<'_>,
    ) -> impl std::future::Future<Output = Result<Self::Run, SpawnError>> + Send;
    /// See [`Runner::prepare`].
    fn prepare(&self, req: &RunRequest<'_>) -> Self::Prepared;
    /// See [`PreparedRun::set_run_id`].
    fn set_run_id(prepared: &mut Self::Prepared, run_id: &str);
    /// See [`PreparedRun::set_message`].
    fn set_message(
        prepared: &mut Self::Prepared,
        vars: Vec<(&'static str, OsString)>,
        stdin: PathBuf,
    );
    /// Blocking: see [`Runner::spawn_prepared`].
    fn spawn_prepared(&self, prepared: Self::Prepared) -> Result<Self::Spawned, SpawnError>;
    /// See [`Runner::attach`].
    fn attach(&self, spawned: Self::Spawned, log: RunLog<'_>) -> Self::Run;
    /// Removes what the host keeps for a job that is gone.
    fn forget_job(
        &self,
        job_type: JobType,
        name: &str,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// A started run, as a job task uses it (see [`Run`]).
pub trait Process: Send + Sync + 'static {
    fn pid(&self) -> i32;
    fn started_at(&self) -> DateTime<Utc>;
    fn ran_for(&self) -> Duration;
    /// CPU ticks used so far by the run's live processes.
    fn cpu_ticks(&self) -> u64;
    /// Waits for the main process to end. Cancel-safe.
    fn wait(&mut self) -> impl std::future::Future<Output = Exit> + Send;
    /// The stop sequence (see [`Run::stop`]).
    fn stop(
        &mut self,
        grace: Duration,
        why: &str,
    ) -> impl std::future::Future<Output = Stopped> + Send;
    /// The clean-up after the main process ended (see [`Run::finish_with`]).
    fn finish(
        self,
        grace: Duration,
        last_note: Option<(bool, String)>,
    ) -> impl std::future::Future<Output = ()> + Send;
    /// The run's log, when it has one the job task may queue steps after (the run's
    /// record goes in after its last lines).
    fn log(&self) -> Option<SharedSink> {
        None
    }
}

impl Processes for Runner {
    type Run = Run;
    type Prepared = PreparedRun;
    type Spawned = SpawnedRun;
    async fn start(&self, req: RunRequest<'_>, log: RunLog<'_>) -> Result<Run, SpawnError> {
        Runner::start(self, req, log).await
    }
    fn prepare(&self, req: &RunRequest<'_>) -> PreparedRun {
        Runner::prepare(self, req)
    }
    fn set_run_id(prepared: &mut PreparedRun, run_id: &str) {
        prepared.set_run_id(run_id);
    }
    fn set_message(
        prepared: &mut PreparedRun,
        vars: Vec<(&'static str, OsString)>,
        stdin: PathBuf,
    ) {
        prepared.set_message(vars, stdin);
    }
    fn spawn_prepared(&self, prepared: PreparedRun) -> Result<SpawnedRun, SpawnError> {
        Runner::spawn_prepared(self, prepared)
    }
    fn attach(&self, spawned: SpawnedRun, log: RunLog<'_>) -> Run {
        Runner::attach(self, spawned, log)
    }
    async fn forget_job(&self, job_type: JobType, name: &str) {
        Runner::forget_job(self, job_type, name).await
    }
}

impl Process for Run {
    fn pid(&self) -> i32 {
        self.pid
    }
    fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }
    fn ran_for(&self) -> Duration {
        Run::ran_for(self)
    }
    fn cpu_ticks(&self) -> u64 {
        Run::cpu_ticks(self)
    }
    async fn wait(&mut self) -> Exit {
        Run::wait(self).await
    }
    async fn stop(&mut self, grace: Duration, why: &str) -> Stopped {
        Run::stop(self, grace, why).await
    }
    async fn finish(self, grace: Duration, last_note: Option<(bool, String)>) {
        Run::finish_with(self, grace, last_note).await;
    }
    fn log(&self) -> Option<SharedSink> {
        Some(self.sink.clone())
    }
}

impl Run {
    /// Waits for the main process to end. Cancel-safe: can sit in a `select!`.
    pub async fn wait(&mut self) -> Exit {
        if let Some(e) = self.exited {
            return e;
        }
        let exit = match self.exit.as_mut() {
            // The reaper dropped the sender only if it stopped; treat as killed.
            Some(rx) => rx.await.unwrap_or(Exit::Signal(Signal::SIGKILL as i32)),
            None => Exit::Signal(Signal::SIGKILL as i32),
        };
        self.exit = None;
        self.exited = Some(exit);
        self.exited_at = Some(Instant::now());
        exit
    }

    /// CPU ticks used so far by the run's live processes (for idle detection).
    pub fn cpu_ticks(&self) -> u64 {
        proctable::cpu_ticks(&self.membership())
    }

    pub fn ran_for(&self) -> Duration {
        self.started.elapsed()
    }

    fn membership(&self) -> Vec<Pid> {
        self.membership_after(Instant::now() - Duration::from_millis(25))
    }

    /// Members as seen by a read of /proc taken after `t`.
    fn membership_after(&self, t: Instant) -> Vec<Pid> {
        run_members_after(t, self.pid, &self.mark, &self.runner.leaders())
    }

    /// Whether anything of the run may have outlived its main process. Cheap: a
    /// signal-0 probe of the run's group, then the host's own children (everything that
    /// left the group and lost its parent was reparented there). Only when one of them
    /// says maybe does the caller read the whole process table.
    fn may_have_leftovers(&self) -> bool {
        if killpg(Pid::from_raw(self.pid), None) != Err(nix::errno::Errno::ESRCH) {
            return true;
        }
        let Some(children) = proctable::host_children() else {
            return true;
        };
        let guardian = self.runner.guardian.pid();
        let leaders = self.runner.lock_leaders();
        children
            .iter()
            .any(|c| !leaders.contains(c) && Some(*c) != guardian)
    }

    /// [`Run::membership_after`] on the blocking pool: reading /proc for a hundred
    /// runs ending together must not stall the async workers.
    async fn membership_off_thread(&self, t: Instant) -> Vec<Pid> {
        let (skip, leader, mark) = (self.runner.leaders(), self.pid, self.mark.clone());
        tokio::task::spawn_blocking(move || run_members_after(t, leader, &mark, &skip))
            .await
            .unwrap_or_default()
    }

    fn signal_all(&self, sig: Signal) -> usize {
        let group = Pid::from_raw(self.pid);
        let _ = killpg(group, sig);
        let members = self.membership();
        for p in &members {
            // The group had it already: a second SIGTERM is "force" to many programs
            // (the host itself), so each process gets one.
            if nix::unistd::getpgid(Some(*p)) != Ok(group) {
                let _ = kill(*p, sig);
            }
        }
        members.len()
    }

    /// The stop sequence: shutdown file, SIGTERM to every process of the run, up to
    /// `grace` for the main process to end, then SIGKILL for everything left. `why`
    /// goes into the run's log with each step.
    pub async fn stop(&mut self, grace: Duration, why: &str) -> Stopped {
        if let Some(exit) = self.exited {
            return Stopped {
                exit,
                forced: false,
            };
        }
        // On the blocking pool (a slow disk must not hold the async workers), and
        // before the SIGTERM: a program may look for the file when the signal comes.
        let file = self.shutdown_file.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(dir) = file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::write(&file, b"")
        })
        .await;
        self.shutdown_written = true;
        let secs = grace.as_secs();
        logsink::note(
            &self.sink,
            &self.log_id,
            false,
            &format!("stopping ({why}): shutdown file created, SIGTERM sent, up to {secs} s grace"),
        );
        self.signal_all(Signal::SIGTERM);
        if let Ok(exit) = tokio::time::timeout(grace, self.wait()).await {
            return Stopped {
                exit,
                forced: false,
            };
        }
        self.signal_all(Signal::SIGKILL);
        logsink::note(
            &self.sink,
            &self.log_id,
            true,
            &format!("still running after {secs} s grace: killed with SIGKILL"),
        );
        let exit = self.wait().await;
        Stopped { exit, forced: true }
    }

    /// After the main process ended: ends whatever of the run is still alive (SIGTERM,
    /// up to `grace`, SIGKILL), drains the output, notes the exit (and any leftovers)
    /// in the run's log, and removes the private copy.
    pub async fn finish(self, grace: Duration) -> Leftovers {
        self.finish_with(grace, None).await
    }

    /// [`Run::finish`], with one more note (`(is_error, text)`) written after the
    /// runner's own, in the same write.
    pub async fn finish_with(
        mut self,
        grace: Duration,
        last_note: Option<(bool, String)>,
    ) -> Leftovers {
        let mut out = Leftovers::default();
        // A read from before the exit would still show processes that are gone.
        let exited_at = self.exited_at.unwrap_or_else(Instant::now);
        if self.may_have_leftovers() && !self.membership_off_thread(exited_at).await.is_empty() {
            out.killed = self.signal_all(Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            loop {
                let now = Instant::now();
                if now >= deadline || self.membership_off_thread(now).await.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let (groups, mark) = ([self.pid], self.mark.clone());
            let _ = tokio::task::spawn_blocking(move || guardian::sweep(&groups, &mark)).await;
        }
        self.runner.guardian.unwatch(self.pid);
        self.runner.lock_leaders().remove(&self.pid);
        // Drain logs before declaring the run finished: the last lines are often the
        // ones that say why it ended. A process we could not find may still hold the
        // pipe, so the wait is bounded.
        if let Some(mut pump) = self.pump.take()
            && tokio::time::timeout(DRAIN_LIMIT, &mut pump).await.is_err()
        {
            pump.abort();
            let _ = pump.await;
            out.output_abandoned = true;
        }
        // The closing notes go out in one write.
        {
            let mut log = logsink::lock(&self.sink);
            if let Some(exit) = self.exited {
                log.sys(&self.log_id, !exit.success(), &exit.to_string());
            }
            if out.killed > 0 {
                let msg = format!(
                    "ended {} leftover process(es) of the run after its main process exited",
                    out.killed
                );
                log.sys(&self.log_id, false, &msg);
            }
            if out.output_abandoned {
                log.sys(&self.log_id,
                    true,
                    "output pipes still open after the run ended (a process outside the run holds them): stopped reading",
                );
            }
            if let Some((error, msg)) = last_note {
                log.sys(&self.log_id, error, &msg);
            }
            log.flush();
        }
        if let Some((scratch, lease)) = self.workspace.take()
            && let Some(spare) = self.runner.workspaces.checkin(&scratch, lease)
        {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(spare)).await;
        }
        if self.shutdown_written {
            let file = self.shutdown_file.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(file)).await;
        }
        out
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // A run dropped without `finish` (a task that panicked or was aborted) must not
        // leave its processes behind.
        if self.exited.is_none() || self.pump.is_some() {
            self.signal_all(Signal::SIGKILL);
            self.runner.guardian.unwatch(self.pid);
            self.runner.lock_leaders().remove(&self.pid);
        }
        if let Some((_, lease)) = self.workspace.take() {
            let _ = std::fs::remove_dir_all(lease.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_error(source: std::io::Error) -> SpawnError {
        SpawnError::Start {
            command: "run".into(),
            dir: PathBuf::from("/jobs/continuous/x"),
            source,
        }
    }

    /// Failures that repeat with the same files are named with their fix; the rest
    /// (a full disk, no memory, a copy that failed) are retried as before.
    #[test]
    fn unrunnable_table() {
        let os = std::io::Error::from_raw_os_error;
        let cases: Vec<(SpawnError, Option<&str>)> = vec![
            (start_error(os(libc::ENOEXEC)), Some("add a #! line")),
            (start_error(os(libc::EACCES)), Some("chmod +x")),
            (start_error(os(libc::ENOENT)), Some("fix the #! line")),
            (
                start_error(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "python3 not found in PATH",
                )),
                Some("python3 not found in PATH: install it"),
            ),
            (start_error(os(libc::ENOSPC)), None),
            (start_error(os(libc::ENOMEM)), None),
            (start_error(os(libc::EAGAIN)), None),
            (
                SpawnError::Copy {
                    from: PathBuf::from("a"),
                    to: PathBuf::from("b"),
                    source: os(libc::ENOENT),
                },
                None,
            ),
        ];
        for (err, want) in cases {
            let got = err.unrunnable();
            match want {
                None => assert_eq!(got, None, "{err}"),
                Some(w) => {
                    let got = got.unwrap_or_else(|| panic!("{err}: not unrunnable"));
                    assert!(got.contains(w), "{err}: {got}");
                    assert!(!got.contains("os error"), "in our words: {got}");
                }
            }
        }
    }
}
