//! The continuous job on paper and on paused time.
//!
//! `step_table` runs every transition of the pure [`Machine`]; the task tests drive
//! the real task loop with a fake [`Processes`] on `start_paused` tokio time, so
//! backoffs of minutes take milliseconds and every wait is exact.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::state::{Effect, Input, Machine, Now, StartFailed, Started, State, Then};
use crate::job::fake::{self, Case, Harness, Plan};
use crate::job::{JobCommand, JobView};
use crate::runner::Exit;
use crate::scan::JobDefinition;
use crate::schedule::SystemClock;
use crate::spec::JobType;
use crate::spec::settings::JobSettings;
use crate::status::{ContinuousState, ContinuousStatus};

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

fn def_with(f: impl FnOnce(&mut JobSettings)) -> JobDefinition {
    fake::definition(JobType::Continuous, f)
}

fn def() -> JobDefinition {
    def_with(|_| {})
}

fn changed(mut d: JobDefinition) -> JobDefinition {
    d.fingerprint += 1;
    d
}

fn invalid(mut d: JobDefinition) -> JobDefinition {
    d.fingerprint += 100;
    d.settings = None;
    d.errors = vec!["settings.job: bad".into()];
    d
}

fn disabled(mut d: JobDefinition) -> JobDefinition {
    d.disabled = true;
    d
}

fn singleton() -> JobDefinition {
    def_with(|s| s.is_singleton = true)
}

// ---------------------------------------------------------------------------------
// The pure step, every transition.

struct Paper {
    m: Machine,
    t0: Instant,
    /// Seconds since t0 of the next step.
    at: Duration,
}

impl Paper {
    fn new(d: JobDefinition) -> Paper {
        Paper {
            m: Machine::new(d.clone(), ContinuousStatus::new(&d.name, None)),
            t0: Instant::now(),
            at: Duration::ZERO,
        }
    }

    fn now(&self) -> Now {
        Now {
            at: self.t0 + self.at,
            wall: chrono::DateTime::UNIX_EPOCH + chrono::Duration::from_std(self.at).unwrap(),
        }
    }

    fn step(&mut self, input: Input) -> Vec<Effect> {
        let now = self.now();
        self.m.step(input, now)
    }

    fn defn(&mut self, d: JobDefinition) -> Vec<Effect> {
        self.step(Input::Definition(Box::new(d)))
    }

    fn started(&mut self) -> Vec<Effect> {
        self.step(Input::Started(Ok(Started {
            run: "aaaaaa".into(),
            pid: 42,
            at: chrono::DateTime::UNIX_EPOCH,
        })))
    }

    fn start_failed(&mut self, unrunnable: bool) -> Vec<Effect> {
        self.step(Input::Started(Err(StartFailed {
            run: "bbbbbb".into(),
            unrunnable: unrunnable.then(|| "exec format error".to_string()),
            error: "no space".into(),
        })))
    }
}

/// Where a case starts: the inputs that lead there.
fn reach(from: &str) -> Paper {
    let mut p = Paper::new(def());
    match from {
        "Idle" => {}
        "Starting" => {
            p.defn(def());
        }
        "StartingLock" => {
            p = Paper::new(singleton());
            p.defn(singleton());
        }
        "Running" => {
            p.defn(def());
            p.started();
        }
        "Exiting" => {
            p.defn(def());
            p.started();
            p.step(Input::Exited(Exit::Code(1)));
        }
        "Backoff" => {
            p.defn(def());
            p.started();
            p.step(Input::Exited(Exit::Code(1)));
            p.step(Input::Finished);
        }
        "WaitingLock" => {
            p = Paper::new(singleton());
            p.defn(singleton());
            p.step(Input::Lock(Err(None)));
        }
        "Disabled" => {
            p.defn(disabled(def()));
        }
        "Error" => {
            p.defn(invalid(def()));
        }
        "Unrunnable" => {
            p.defn(def());
            p.start_failed(true);
        }
        "Ended" => {
            p.defn(def());
            p.step(Input::Shutdown);
        }
        s if s.starts_with("Stopping") => {
            p.defn(def());
            p.started();
            match s {
                "Stopping/Start" => p.defn(changed(def())),
                "Stopping/Disable" => p.defn(disabled(def())),
                "Stopping/Remove" => p.step(Input::Remove),
                "Stopping/Shutdown" => p.step(Input::Shutdown),
                other => panic!("no such case {other}"),
            };
        }
        other => panic!("no such case {other}"),
    }
    p
}

fn name(s: &State) -> String {
    match s {
        State::Idle => "Idle".into(),
        State::Starting { attempt } => format!("Starting/{attempt}"),
        State::Running { attempt, .. } => format!("Running/{attempt}"),
        State::Exiting { attempt, .. } => format!("Exiting/{attempt}"),
        State::Backoff { attempt, .. } => format!("Backoff/{attempt}"),
        State::WaitingLock { attempt, .. } => format!("WaitingLock/{attempt}"),
        State::Stopping { then, .. } => format!("Stopping/{then:?}"),
        State::Disabled => "Disabled".into(),
        State::Error { .. } => "Error".into(),
        State::Unrunnable { .. } => "Unrunnable".into(),
        State::Ended => "Ended".into(),
    }
}

fn kinds(fx: &[Effect]) -> String {
    let k: Vec<&str> = fx
        .iter()
        .map(|e| match e {
            Effect::Publish => "Publish",
            Effect::Note { .. } => "Note",
            Effect::HostLog { .. } | Effect::HostLogStarted { .. } => "HostLog",
            Effect::UseSettings(_) => "UseSettings",
            Effect::TakeLock => "TakeLock",
            Effect::ReleaseLock => "ReleaseLock",
            Effect::Start(_) => "Start",
            Effect::Stop { .. } => "Stop",
            Effect::Finish { .. } => "Finish",
            Effect::ForgetJob => "ForgetJob",
        })
        .collect();
    k.join(" ")
}

#[test]
fn step_table() {
    let cases: &[Case<Paper, Effect>] = &[
        // (from, input, what, to, effects)
        (
            "Idle",
            "valid",
            |p| p.defn(def()),
            "Starting/0",
            "UseSettings Publish Start",
        ),
        (
            "Idle",
            "singleton",
            |p| p.defn(singleton()),
            "Starting/0",
            "UseSettings TakeLock",
        ),
        (
            "Idle",
            "invalid",
            |p| p.defn(invalid(def())),
            "Error",
            "HostLog Note Publish",
        ),
        (
            "Idle",
            "disabled",
            |p| p.defn(disabled(def())),
            "Disabled",
            "ReleaseLock Publish",
        ),
        (
            "Idle",
            "shutdown",
            |p| p.step(Input::Shutdown),
            "Ended",
            "Publish",
        ),
        ("Idle", "stray timer", |p| p.step(Input::Timer), "Idle", ""),
        (
            "StartingLock",
            "lock taken",
            |p| p.step(Input::Lock(Ok(()))),
            "Starting/0",
            "Note Publish Start",
        ),
        (
            "StartingLock",
            "lock busy",
            |p| p.step(Input::Lock(Err(None))),
            "WaitingLock/0",
            "Publish",
        ),
        (
            "Starting",
            "started",
            Paper::started,
            "Running/0",
            "HostLog Publish",
        ),
        (
            "Starting",
            "unrunnable",
            |p| p.start_failed(true),
            "Unrunnable",
            "Note HostLog Publish",
        ),
        (
            "Starting",
            "spawn failed",
            |p| p.start_failed(false),
            "Backoff/1",
            "Note HostLog Note Publish",
        ),
        (
            "Running",
            "exited",
            |p| p.step(Input::Exited(Exit::Code(3))),
            "Exiting/0",
            "Finish",
        ),
        (
            "Running",
            "same files",
            |p| p.defn(def()),
            "Running/0",
            "Publish",
        ),
        (
            "Running",
            "new files",
            |p| p.defn(changed(def())),
            "Stopping/Start",
            "Publish Stop",
        ),
        (
            "Running",
            "invalid",
            |p| p.defn(invalid(def())),
            "Running/0",
            "HostLog Note Publish",
        ),
        (
            "Running",
            "disabled",
            |p| p.defn(disabled(def())),
            "Stopping/Disable",
            "Publish Stop",
        ),
        (
            "Running",
            "removed",
            |p| p.step(Input::Remove),
            "Stopping/Remove",
            "Publish Stop",
        ),
        (
            "Running",
            "shutdown",
            |p| p.step(Input::Shutdown),
            "Stopping/Shutdown",
            "Publish Stop",
        ),
        (
            "Running",
            "stray timer",
            |p| p.step(Input::Timer),
            "Running/0",
            "",
        ),
        (
            "Exiting",
            "finished",
            |p| p.step(Input::Finished),
            "Backoff/1",
            "HostLog Note Publish",
        ),
        (
            "Backoff",
            "timer",
            |p| p.step(Input::Timer),
            "Starting/1",
            "UseSettings Publish Start",
        ),
        (
            "Backoff",
            "same files",
            |p| p.defn(def()),
            "Backoff/1",
            "Publish",
        ),
        (
            "Backoff",
            "new files",
            |p| p.defn(changed(def())),
            "Starting/0",
            "UseSettings Publish Start",
        ),
        (
            "Backoff",
            "invalid",
            |p| p.defn(invalid(def())),
            "Error",
            "HostLog Note Publish",
        ),
        (
            "Backoff",
            "disabled",
            |p| p.defn(disabled(def())),
            "Disabled",
            "ReleaseLock Publish",
        ),
        (
            "Backoff",
            "removed",
            |p| p.step(Input::Remove),
            "Ended",
            "ReleaseLock ForgetJob Publish",
        ),
        (
            "WaitingLock",
            "timer",
            |p| p.step(Input::Timer),
            "Starting/0",
            "UseSettings TakeLock",
        ),
        (
            "WaitingLock",
            "disabled",
            |p| p.defn(disabled(singleton())),
            "Disabled",
            "ReleaseLock Publish",
        ),
        (
            "WaitingLock",
            "new files",
            |p| p.defn(changed(singleton())),
            "Starting/0",
            "UseSettings TakeLock",
        ),
        (
            "Stopping/Start",
            "stopped",
            |p| p.step(Input::Stopped(Exit::Signal(15))),
            "Starting/0",
            "HostLog Note UseSettings Publish Start",
        ),
        (
            "Stopping/Disable",
            "stopped",
            |p| p.step(Input::Stopped(Exit::Signal(15))),
            "Disabled",
            "HostLog Note ReleaseLock Publish",
        ),
        (
            "Stopping/Remove",
            "stopped",
            |p| p.step(Input::Stopped(Exit::Signal(15))),
            "Ended",
            "HostLog Note ReleaseLock ForgetJob Publish",
        ),
        (
            "Stopping/Shutdown",
            "stopped",
            |p| p.step(Input::Stopped(Exit::Signal(15))),
            "Ended",
            "HostLog Note Publish",
        ),
        (
            "Disabled",
            "enabled",
            |p| p.defn(def()),
            "Starting/0",
            "UseSettings Publish Start",
        ),
        (
            "Disabled",
            "still disabled",
            |p| p.defn(disabled(def())),
            "Disabled",
            "ReleaseLock Publish",
        ),
        (
            "Error",
            "fixed",
            |p| p.defn(changed(def())),
            "Starting/0",
            "UseSettings Publish Start",
        ),
        // The same error is not written to the job log again.
        (
            "Error",
            "same error",
            |p| p.defn(invalid(def())),
            "Error",
            "Publish",
        ),
        (
            "Unrunnable",
            "same files",
            |p| p.defn(def()),
            "Unrunnable",
            "Publish",
        ),
        (
            "Unrunnable",
            "new files",
            |p| p.defn(changed(def())),
            "Starting/0",
            "UseSettings Publish Start",
        ),
        (
            "Unrunnable",
            "disabled",
            |p| p.defn(disabled(def())),
            "Disabled",
            "ReleaseLock Publish",
        ),
        (
            "Unrunnable",
            "removed",
            |p| p.step(Input::Remove),
            "Ended",
            "ReleaseLock ForgetJob Publish",
        ),
        ("Ended", "anything", |p| p.defn(def()), "Ended", ""),
        ("Ended", "removed", |p| p.step(Input::Remove), "Ended", ""),
    ];
    fake::check_table(cases, reach, |p, fx| (name(&p.m.state), kinds(fx)));
}

#[test]
fn backoff_waits_and_what_the_status_says() {
    let mut p = reach("Running");
    p.at = S(2);
    p.step(Input::Exited(Exit::Code(1)));
    let fx = p.step(Input::Finished);
    let State::Backoff { until, attempt } = p.m.state else {
        panic!("{:?}", p.m.state)
    };
    assert_eq!((until - p.t0, attempt), (S(3), 1));
    let note = fx.iter().find_map(|e| match e {
        Effect::Note { text, run, .. } => Some((run.clone(), text.clone())),
        _ => None,
    });
    assert_eq!(note, Some((Some("aaaaaa".into()), "restart in 1 s".into())));
    let st = &p.m.status;
    assert_eq!(st.status, ContinuousState::PendingRestart);
    assert_eq!(st.restarts, 1);
    assert_eq!(st.last_exit.as_ref().and_then(|e| e.code), Some(1));
    assert!(
        st.detailed_status.contains("quick exit number 1"),
        "{}",
        st.detailed_status
    );
}

#[test]
fn a_run_kept_on_its_last_valid_settings_says_so_and_recovers() {
    let mut p = reach("Running");
    p.defn(invalid(def()));
    assert_eq!(p.m.status.status, ContinuousState::Running);
    assert!(p.m.status.detailed_status.contains("last valid settings"));
    assert_eq!(p.m.status.error.as_deref(), Some("settings.job: bad"));
    // Fixed with the very files the run started from: it goes on, error gone.
    p.defn(def());
    assert_eq!(name(&p.m.state), "Running/0");
    assert_eq!(p.m.status.error, None);
    assert!(p.m.status.detailed_status.starts_with("running since"));
}

#[test]
fn a_lock_that_cannot_be_opened_is_shown_and_retried() {
    let mut p = reach("StartingLock");
    p.step(Input::Lock(Err(Some(
        "opening singleton lock x: denied".into(),
    ))));
    assert_eq!(p.m.state.timer(), Some(p.t0 + super::state::LOCK_RETRY));
    assert_eq!(p.m.status.status, ContinuousState::InactiveInstance);
    assert_eq!(
        p.m.status.error.as_deref(),
        Some("opening singleton lock x: denied")
    );
}

/// A host that could not ask the cluster store kept "the singleton waits for the
/// store" as its error after the store was back and another host held the job.
#[test]
fn a_lock_error_clears_once_the_lock_is_seen_held_elsewhere() {
    let mut p = reach("StartingLock");
    p.step(Input::Lock(Err(Some("the store is away".into()))));
    assert_eq!(p.m.status.error.as_deref(), Some("the store is away"));
    p.at = super::state::LOCK_RETRY;
    p.step(Input::Timer);
    assert_eq!(name(&p.m.state), "Starting/0");
    p.step(Input::Lock(Err(None)));
    assert_eq!(name(&p.m.state), "WaitingLock/0");
    assert_eq!(p.m.status.error, None);
    // Another error is not the lock's to clear.
    p.m.status.error = Some("could not start: x".into());
    p.at = super::state::LOCK_RETRY * 2;
    p.step(Input::Timer);
    p.step(Input::Lock(Err(None)));
    assert_eq!(p.m.status.error.as_deref(), Some("could not start: x"));
}

#[test]
fn stop_continuations_are_named() {
    // `Then::ShowError` follows a stop only in Backoff, where no run is going: it
    // never waits for a run (a running job keeps its last valid settings).
    for (case, then) in [
        ("Stopping/Start", Then::Start),
        ("Stopping/Disable", Then::Disable),
        ("Stopping/Remove", Then::Remove),
        ("Stopping/Shutdown", Then::Shutdown),
    ] {
        let p = reach(case);
        assert!(
            matches!(&p.m.state, State::Stopping { then: t, .. } if *t == then),
            "{case}: {:?}",
            p.m.state
        );
    }
}

// ---------------------------------------------------------------------------------
// The task on paused time, with fake processes.

type Task = Harness<ContinuousStatus>;

impl Harness<ContinuousStatus> {
    fn start(d: JobDefinition, plans: &[Plan]) -> Task {
        Task::start_in(tempfile::tempdir().unwrap(), d, plans)
    }

    /// [`Task::start`] with LOGS in `dir`.
    fn start_in(dir: tempfile::TempDir, d: JobDefinition, plans: &[Plan]) -> Task {
        Task::spawn(dir, Arc::new(SystemClock), d, plans, |view| match view {
            JobView::Continuous(status) => Some(status),
            JobView::Triggered(_) => None,
        })
    }

    /// Sends a definition and waits until the task has applied it.
    async fn update(&self, d: JobDefinition) {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(JobCommand::Update(Box::new(d), Some(tx)))
            .unwrap();
        let _ = rx.await;
    }

    async fn running(&mut self, restarts: u64) {
        self.until(&format!("running after {restarts} restarts"), |s| {
            s.status == ContinuousState::Running && s.restarts == restarts
        })
        .await;
    }

    async fn shut_down(self) {
        self.stop_host().await;
        let st = self.status.borrow();
        assert_eq!(
            (st.status, st.detailed_status.as_str()),
            (ContinuousState::Stopped, "host stopped")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn restart_backoff_doubles_and_a_long_run_resets_it() {
    let quick = Plan::Exit(Duration::ZERO, 1);
    let plans = [quick, quick, quick, quick, Plan::Exit(S(11), 1)];
    let mut t = Task::start(def_with(|s| s.restart_max_delay = S(10)), &plans);
    t.running(5).await;
    // 1, 2, 4, 8 s after quick exits; the 11 s run (longer than the 10 s cap) starts a
    // new attempt: 1 s.
    assert_eq!(t.fake.starts(), [S(0), S(1), S(3), S(7), S(15), S(27)]);
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_zero_restart_delay_still_waits_the_floor_and_doubles() {
    let quick = Plan::Exit(Duration::ZERO, 0);
    let mut t = Task::start(def_with(|s| s.restart_delay = S(0)), &[quick; 4]);
    t.running(4).await;
    assert_eq!(
        t.fake.starts(),
        [MS(0), MS(100), MS(300), MS(700), MS(1500)]
    );
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn stop_during_backoff_cancels_the_restart() {
    type Change = fn(JobDefinition) -> JobDefinition;
    let cases: [(&str, Change, ContinuousState); 2] = [
        ("disabled", disabled, ContinuousState::Stopped),
        ("invalid", invalid, ContinuousState::Error),
    ];
    for (what, change, want) in cases {
        let mut t = Task::start(
            def_with(|s| s.restart_delay = S(30)),
            &[Plan::Exit(S(1), 1)],
        );
        t.until("backoff", |s| s.status == ContinuousState::PendingRestart)
            .await;
        t.update(change(def())).await;
        assert_eq!(t.status.borrow().status, want, "{what}");
        assert_eq!(t.status.borrow().next_restart_at, None, "{what}");
        tokio::time::sleep(S(3600)).await;
        assert_eq!(t.fake.starts(), [S(0)], "{what}: restarted");
        // No run was going: nothing to stop.
        assert!(t.fake.stops().is_empty(), "{what}");
        t.shut_down().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_removed_job_stops_its_run_forgets_its_copy_and_ends() {
    let mut t = Task::start(def(), &[]);
    t.running(0).await;
    t.tx.send(JobCommand::Remove).unwrap();
    t.tracker.close();
    t.tracker.wait().await;
    let st = t.status.borrow().clone();
    assert_eq!(
        (st.status, st.detailed_status.as_str()),
        (ContinuousState::Stopped, "job folder removed")
    );
    assert_eq!(t.fake.stops(), ["job folder removed"]);
    assert!(t.fake.forgotten());
}

#[tokio::test(start_paused = true)]
async fn settings_changing_mid_run() {
    let mut t = Task::start(def(), &[]);
    t.running(0).await;
    // Same files (a rescan, a warning): the run goes on.
    let mut rescanned = def();
    rescanned.warnings = vec!["a warning".into()];
    t.update(rescanned).await;
    assert_eq!(t.status.borrow().warnings, ["a warning"]);
    // Invalid: the run goes on, on its last valid settings.
    t.update(invalid(def())).await;
    let st = t.status.borrow().clone();
    assert_eq!(st.status, ContinuousState::Running);
    assert!(st.detailed_status.contains("last valid settings"), "{st:?}");
    assert_eq!(t.fake.starts().len(), 1);
    // New valid files: stopped and started on them, a new attempt.
    t.update(changed(def())).await;
    assert_eq!(t.status.borrow().status, ContinuousState::Running);
    assert_eq!(t.status.borrow().error, None);
    assert_eq!(t.fake.stops(), ["job files changed"]);
    assert_eq!(t.fake.starts().len(), 2);
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn disable_then_enable() {
    let mut t = Task::start(def(), &[]);
    t.running(0).await;
    t.update(disabled(def())).await;
    let st = t.status.borrow().clone();
    assert_eq!(
        (st.status, st.detailed_status.as_str(), st.pid),
        (
            ContinuousState::Stopped,
            "disabled: disable.job is present",
            None
        )
    );
    assert_eq!(t.fake.stops(), ["disabled: disable.job is present"]);
    t.update(def()).await;
    assert_eq!(t.status.borrow().status, ContinuousState::Running);
    assert_eq!(t.fake.starts().len(), 2);
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_singleton_whose_lock_is_held_retries_every_second() {
    let dir = tempfile::tempdir().unwrap();
    let layout = crate::layout::LogsLayout::new(dir.path().to_path_buf(), None);
    // Another host (another open file description) holds the lock.
    let path = layout.singleton_lock("job");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let other = std::fs::File::create(&path).unwrap();
    other.try_lock().unwrap();
    let mut t = Task::start_in(dir, singleton(), &[]);
    t.until("inactive", |s| {
        s.status == ContinuousState::InactiveInstance
    })
    .await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert!(t.fake.starts().is_empty());
    drop(other);
    t.running(0).await;
    // Asked every second while held; released at 5.5 s; taken at the 6 s retry.
    assert_eq!(t.fake.starts(), [S(6)]);
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn an_unrunnable_program_is_an_error_until_its_files_change() {
    let mut t = Task::start(def(), &[Plan::Unrunnable]);
    t.until("error", |s| s.status == ContinuousState::Error)
        .await;
    let error = t.status.borrow().error.clone().unwrap_or_default();
    assert!(error.starts_with("cannot run: "), "{error}");
    // A rescan of the same files does not try again, however long we wait.
    t.update(def()).await;
    tokio::time::sleep(S(3600)).await;
    assert_eq!(t.status.borrow().status, ContinuousState::Error);
    assert!(t.fake.starts().is_empty());
    t.update(changed(def())).await;
    assert_eq!(t.status.borrow().status, ContinuousState::Running);
    assert_eq!(t.fake.starts().len(), 1);
    t.shut_down().await;
}

#[test]
fn a_lost_lease_stops_the_run_within_the_time_left_then_asks_again() {
    let mut p = reach("StartingLock");
    p.step(Input::Lock(Ok(())));
    p.started();
    assert_eq!(name(&p.m.state), "Running/0");
    let fx = p.step(Input::LockLost {
        why: "taken over".into(),
        grace: Duration::from_millis(700),
    });
    let stop = fx.iter().find_map(|e| match e {
        Effect::Stop { grace, why } => Some((*grace, why.clone())),
        _ => None,
    });
    let (grace, why) = stop.expect("a stop");
    assert_eq!(
        grace,
        Duration::from_millis(700),
        "the settings' 5 s capped"
    );
    assert!(why.contains("singleton lease lost: taken over"), "{why}");
    let fx = p.step(Input::Stopped(Exit::Signal(15)));
    assert!(fx.contains(&Effect::ReleaseLock), "{fx:?}");
    assert_eq!(p.m.status.status, ContinuousState::InactiveInstance);
    assert_eq!(
        p.m.state.timer(),
        Some(p.t0 + Duration::from_millis(700) + super::state::LOCK_RETRY)
    );
    // A host that holds no lock has nothing to lose.
    let mut q = reach("WaitingLock");
    let fx = q.step(Input::LockLost {
        why: "x".into(),
        grace: Duration::ZERO,
    });
    assert!(fx.is_empty(), "{fx:?}");
}
