//! The triggered job on paper and on paused time.
//!
//! `step_table` runs every transition of the pure [`Machine`]; the task tests drive
//! the real task loop with fake processes on `start_paused` tokio time and a wall
//! clock that follows it, so time limits of minutes and hours of downtime take
//! milliseconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::TriggeredStatus;
use super::gate::Lock;
use super::records::{self, RunState, TriggerKind};
use super::state::{Effect, Input, Machine, Now, Origin, Request, State, Then};
use crate::job::fake::{self, Case, Harness, Plan};
use crate::job::{Accepted, JobCommand, JobView, TriggerError};
use crate::runner::Exit;
use crate::scan::JobDefinition;
use crate::schedule::{ManualClock, Poll};
use crate::spec::JobType;
use crate::spec::settings::{JobSettings, Overlap};

const S: fn(u64) -> Duration = Duration::from_secs;

fn def_with(f: impl FnOnce(&mut JobSettings)) -> JobDefinition {
    fake::definition(JobType::Triggered, f)
}

fn def() -> JobDefinition {
    def_with(|_| {})
}

fn queue() -> JobDefinition {
    def_with(|s| s.overlap = Overlap::Queue)
}

fn utc(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, h, m, 0).unwrap()
}

// ---------------------------------------------------------------------------------
// The pure step, every transition.

fn manual() -> Request {
    Request {
        trigger: TriggerKind::Manual,
        args: Vec::new(),
        scheduled_for: None,
        origin: Origin::Caller,
    }
}

struct Paper {
    m: Machine,
    t0: Instant,
    at: Duration,
    stopping: bool,
}

impl Paper {
    fn new(d: JobDefinition) -> Paper {
        Paper {
            m: Machine::new(d),
            t0: Instant::now(),
            at: Duration::ZERO,
            stopping: false,
        }
    }

    fn step(&mut self, input: Input) -> Vec<Effect> {
        let now = Now {
            at: self.t0 + self.at,
            host_stopping: self.stopping,
        };
        self.m.step(input, now)
    }

    fn trigger(&mut self) -> Vec<Effect> {
        self.step(Input::Trigger(manual()))
    }

    fn fire(&mut self, skipped: u64) -> Vec<Effect> {
        self.step(Input::Poll(Poll::Fire {
            at: utc(10, 0),
            skipped,
        }))
    }

    fn lock(&mut self, last_fired: Option<DateTime<Utc>>) -> Vec<Effect> {
        self.step(Input::Lock(Lock::Taken { last_fired }))
    }

    fn started(&mut self) -> Vec<Effect> {
        self.step(Input::Started(Ok("20260301100000000".into())))
    }

    /// The run's idle sample `secs` s after the start: `output` new bytes, no CPU.
    fn idle_sample(&mut self, secs: u64, output: u64) -> Vec<Effect> {
        self.at = S(secs);
        self.step(Input::IdleSample { output, cpu: 0 })
    }
}

/// Where a case starts: the inputs that lead there.
fn reach(from: &str) -> Paper {
    let d = match from {
        f if f.ends_with("(queue)") => queue(),
        f if f.ends_with("(limits)") => def_with(|s| {
            s.timeout = Some(S(60));
            s.idle_timeout = Some(S(10));
        }),
        f if f.ends_with("(invalid)") => JobDefinition {
            settings: None,
            errors: vec!["bad".into()],
            ..def()
        },
        _ => def(),
    };
    let mut p = Paper::new(d);
    let base = from.split(' ').next().unwrap_or_default();
    match base {
        "Idle" => {}
        "Locking" => {
            p.trigger();
        }
        "LockingFire" => {
            p.fire(0);
        }
        "Starting" => {
            p.trigger();
            p.lock(None);
        }
        "StartingFire" => {
            p.fire(0);
            p.lock(None);
        }
        "Running" | "Stopping" | "Finishing" | "Queued" => {
            p.trigger();
            p.lock(None);
            p.started();
            match base {
                "Stopping" => {
                    p.step(Input::Cancel(None));
                }
                "Finishing" => {
                    p.step(Input::Exited(Exit::Code(0)));
                }
                "Queued" => {
                    p.trigger();
                }
                _ => {}
            }
        }
        "Ended" => {
            p.step(Input::Shutdown);
        }
        other => panic!("no such case {other}"),
    }
    p
}

fn name(s: &State) -> String {
    match s {
        State::Idle => "Idle".into(),
        State::Locking(r) => format!("Locking/{:?}", r.origin),
        State::Starting(r) => format!("Starting/{:?}", r.origin),
        State::Running(_) => "Running".into(),
        State::Stopping { then, .. } => match then {
            Then::Next => "Stopping/Next".into(),
            Then::End { .. } => "Stopping/End".into(),
        },
        State::Finishing { .. } => "Finishing".into(),
        State::Ended => "Ended".into(),
    }
}

fn kinds(fx: &[Effect]) -> String {
    let k: Vec<String> = fx
        .iter()
        .map(|e| match e {
            Effect::Sched { error, .. } => format!("Sched{}", if *error { "!" } else { "" }),
            Effect::Warn(_) => "Warn".into(),
            Effect::RecordFire(_) => "RecordFire".into(),
            Effect::ScheduleOff => "ScheduleOff".into(),
            Effect::TakeLock { fire } => format!("TakeLock({})", fire.is_some()),
            Effect::StartRun(_) => "StartRun".into(),
            Effect::Stop { .. } => "Stop".into(),
            Effect::Finish { abort, .. } => {
                format!("Finish({})", if abort.is_some() { "abort" } else { "exit" })
            }
            Effect::ForgetJob => "ForgetJob".into(),
            Effect::Answer(Ok(a)) if a.queued_behind.is_some() => "Answer(queued)".into(),
            Effect::Answer(Ok(_)) => "Answer(started)".into(),
            Effect::Answer(Err(e)) => format!("Answer({})", error_name(e)),
            Effect::CancelAnswer(Ok(_)) => "CancelAnswer(ok)".into(),
            Effect::CancelAnswer(Err(e)) => format!("CancelAnswer({})", error_name(e)),
        })
        .collect();
    k.join(" ")
}

fn error_name(e: &TriggerError) -> &'static str {
    match e {
        TriggerError::Busy { .. } => "Busy",
        TriggerError::QueueFull { .. } => "QueueFull",
        TriggerError::NotTriggered { .. } => "NotTriggered",
        TriggerError::Invalid { .. } => "Invalid",
        TriggerError::LockedElsewhere { .. } => "LockedElsewhere",
        TriggerError::StoreAway { .. } => "StoreAway",
        TriggerError::NothingToCancel { .. } => "NothingToCancel",
        TriggerError::NotRunning { .. } => "NotRunning",
        TriggerError::Failed { .. } => "Failed",
        TriggerError::Gone { .. } => "Gone",
    }
}

#[test]
fn step_table() {
    let cases: &[Case<Paper, Effect>] = &[
        // (from, input, what, to, effects)
        (
            "Idle",
            "trigger",
            Paper::trigger,
            "Locking/Caller",
            "TakeLock(false)",
        ),
        (
            "Idle",
            "fire",
            |p| p.fire(0),
            "Locking/Fire",
            "TakeLock(true)",
        ),
        (
            "Idle",
            "late fire",
            |p| p.fire(3),
            "Locking/Fire",
            "Sched! TakeLock(true)",
        ),
        (
            "Idle",
            "missed",
            |p| {
                p.step(Input::Poll(Poll::Missed {
                    latest: utc(9, 0),
                    count: 5,
                }))
            },
            "Idle",
            "Sched! RecordFire",
        ),
        (
            "Idle",
            "never",
            |p| p.step(Input::Poll(Poll::Never)),
            "Idle",
            "Sched ScheduleOff",
        ),
        (
            "Idle",
            "wait",
            |p| p.step(Input::Poll(Poll::Wait(utc(11, 0)))),
            "Idle",
            "",
        ),
        (
            "Idle",
            "cancel",
            |p| p.step(Input::Cancel(None)),
            "Idle",
            "CancelAnswer(NothingToCancel)",
        ),
        (
            "Idle",
            "cancel a run",
            |p| p.step(Input::Cancel(Some("x".into()))),
            "Idle",
            "CancelAnswer(NotRunning)",
        ),
        ("Idle", "shutdown", |p| p.step(Input::Shutdown), "Ended", ""),
        (
            "Idle",
            "removed",
            |p| p.step(Input::Remove),
            "Ended",
            "ForgetJob",
        ),
        (
            "Idle",
            "stray exit",
            |p| p.step(Input::Exited(Exit::Code(0))),
            "Idle",
            "",
        ),
        (
            "Idle (invalid)",
            "trigger",
            Paper::trigger,
            "Idle",
            "Answer(Invalid)",
        ),
        ("Idle (invalid)", "fire", |p| p.fire(0), "Idle", "Sched!"),
        (
            "Idle",
            "trigger while the host stops",
            |p| {
                p.stopping = true;
                p.trigger()
            },
            "Idle",
            "Answer(Gone)",
        ),
        (
            "Locking",
            "lock taken",
            |p| p.lock(None),
            "Starting/Caller",
            "StartRun",
        ),
        (
            "Locking",
            "lock busy",
            |p| p.step(Input::Lock(Lock::Busy)),
            "Idle",
            "Answer(LockedElsewhere)",
        ),
        (
            "LockingFire",
            "lock busy",
            |p| p.step(Input::Lock(Lock::Busy)),
            "Idle",
            "Sched",
        ),
        (
            "Locking",
            "store away",
            |p| p.step(Input::Lock(Lock::Unavailable("down".into()))),
            "Idle",
            "Answer(StoreAway)",
        ),
        (
            "LockingFire",
            "store away",
            |p| p.step(Input::Lock(Lock::Unavailable("down".into()))),
            "Idle",
            "Sched",
        ),
        (
            "LockingFire",
            "fired elsewhere",
            |p| p.lock(Some(utc(10, 0))),
            "Idle",
            "Sched",
        ),
        (
            "LockingFire",
            "older last fire",
            |p| p.lock(Some(utc(9, 59))),
            "Starting/Fire",
            "StartRun",
        ),
        (
            "Starting",
            "started",
            Paper::started,
            "Running",
            "Answer(started)",
        ),
        ("StartingFire", "started", Paper::started, "Running", ""),
        (
            "Starting",
            "failed",
            |p| {
                p.step(Input::Started(Err(TriggerError::Failed {
                    job: "job".into(),
                    reason: "disk".into(),
                })))
            },
            "Idle",
            "Answer(Failed)",
        ),
        (
            "StartingFire",
            "failed",
            |p| {
                p.step(Input::Started(Err(TriggerError::Failed {
                    job: "job".into(),
                    reason: "disk".into(),
                })))
            },
            "Idle",
            "Sched!",
        ),
        (
            "Running",
            "exited",
            |p| p.step(Input::Exited(Exit::Code(1))),
            "Finishing",
            "Finish(exit)",
        ),
        (
            "Running",
            "trigger (skip)",
            Paper::trigger,
            "Running",
            "Answer(Busy)",
        ),
        (
            "Running",
            "fire (skip)",
            |p| p.fire(0),
            "Running",
            "RecordFire Sched",
        ),
        (
            "Running (queue)",
            "trigger",
            Paper::trigger,
            "Running",
            "Sched Answer(queued)",
        ),
        (
            "Queued (queue)",
            "trigger",
            Paper::trigger,
            "Running",
            "Answer(QueueFull)",
        ),
        (
            "Queued (queue)",
            "fire",
            |p| p.fire(0),
            "Running",
            "RecordFire Sched!",
        ),
        (
            "Running",
            "cancel",
            |p| p.step(Input::Cancel(None)),
            "Stopping/Next",
            "CancelAnswer(ok) Stop",
        ),
        (
            "Running",
            "cancel it by id",
            |p| p.step(Input::Cancel(Some("20260301100000000".into()))),
            "Stopping/Next",
            "CancelAnswer(ok) Stop",
        ),
        (
            "Running",
            "cancel another",
            |p| p.step(Input::Cancel(Some("x".into()))),
            "Running",
            "CancelAnswer(NotRunning)",
        ),
        (
            "Running (limits)",
            "timeout",
            |p| p.step(Input::Timeout),
            "Stopping/Next",
            "Stop",
        ),
        (
            "Running (limits)",
            "active",
            |p| p.idle_sample(30, 1),
            "Running",
            "",
        ),
        (
            "Running (limits)",
            "quiet",
            |p| p.idle_sample(10, 0),
            "Stopping/Next",
            "Stop",
        ),
        (
            "Running (limits)",
            "quiet, not yet",
            |p| p.idle_sample(9, 0),
            "Running",
            "",
        ),
        (
            "Running",
            "no idle limit",
            |p| p.idle_sample(0, 0),
            "Running",
            "",
        ),
        (
            "Running",
            "shutdown",
            |p| p.step(Input::Shutdown),
            "Stopping/End",
            "Stop",
        ),
        (
            "Running",
            "removed",
            |p| p.step(Input::Remove),
            "Stopping/End",
            "Stop",
        ),
        (
            "Stopping",
            "stopped",
            |p| p.step(Input::Stopped(Exit::Signal(15))),
            "Finishing",
            "Finish(abort)",
        ),
        (
            "Finishing",
            "finished",
            |p| p.step(Input::Finished),
            "Idle",
            "",
        ),
        (
            "Queued (queue)",
            "end, next",
            |p| {
                p.step(Input::Exited(Exit::Code(0)));
                p.step(Input::Finished)
            },
            "Locking/Queued",
            "TakeLock(false)",
        ),
        (
            "Queued (queue)",
            "end as the host stops",
            |p| {
                p.stopping = true;
                p.step(Input::Exited(Exit::Code(0)));
                p.step(Input::Finished)
            },
            "Idle",
            "",
        ),
        (
            "Queued (queue)",
            "shutdown drops it",
            |p| {
                p.stopping = true;
                p.step(Input::Shutdown);
                p.step(Input::Stopped(Exit::Signal(15)));
                p.step(Input::Finished)
            },
            "Ended",
            "Warn Sched!",
        ),
        (
            "Queued (queue)",
            "removal drops it",
            |p| {
                p.step(Input::Remove);
                p.step(Input::Stopped(Exit::Signal(15)));
                p.step(Input::Finished)
            },
            "Ended",
            "Warn Sched! ForgetJob",
        ),
        ("Ended", "trigger", Paper::trigger, "Ended", ""),
    ];
    fake::check_table(cases, reach, |p, fx| (name(&p.m.state), kinds(fx)));
}

#[test]
fn the_words_of_each_refusal_and_drop() {
    let text = |fx: &[Effect]| -> Vec<String> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Sched { text, .. } | Effect::Warn(text) => Some(text.clone()),
                Effect::Stop { why, .. } => Some(why.clone()),
                _ => None,
            })
            .collect()
    };
    let mut p = reach("Running");
    assert_eq!(
        text(&p.fire(0)),
        ["skipped 2026-03-01T10:00:00.000Z: run 20260301100000000 is still going (overlap: skip)"]
    );
    let mut p2 = reach("Running (limits)");
    assert_eq!(
        text(&p2.step(Input::Timeout)),
        ["timeout: still running after 60 s (settings.job `timeout`)"]
    );
    let mut p3 = reach("Queued (queue)");
    p3.stopping = true;
    p3.step(Input::Shutdown);
    p3.step(Input::Stopped(Exit::Signal(15)));
    assert_eq!(
        text(&p3.step(Input::Finished)),
        [
            "queued run of job dropped: the host stopped before it could start (manual trigger)",
            "queued run of job dropped: the host stopped before it could start (manual trigger)"
        ]
    );
}

#[test]
fn outcome_table() {
    use super::state::outcome;
    let cases = [
        (
            Exit::Code(0),
            None,
            RunState::Success,
            None,
            (false, "run r Success"),
            None,
        ),
        (
            Exit::Code(2),
            None,
            RunState::Failed,
            Some("exited with code 2"),
            (false, "run r Failed"),
            Some("run r ended: Failed"),
        ),
        (
            Exit::Signal(15),
            Some("cancelled on request"),
            RunState::Aborted,
            Some("cancelled on request"),
            (true, "run r aborted: cancelled on request"),
            Some("run r ended: Aborted (cancelled on request)"),
        ),
    ];
    for (exit, abort, status, error, note, sched) in cases {
        let o = outcome("r", exit, abort);
        assert_eq!(o.status, status, "{exit:?}");
        assert_eq!(o.error.as_deref(), error, "{exit:?}");
        assert_eq!((o.last_note.0, o.last_note.1.as_str()), note, "{exit:?}");
        assert_eq!(o.sched.as_deref(), sched, "{exit:?}");
    }
}

// ---------------------------------------------------------------------------------
// The task on paused time, with fake processes.

type Task = Harness<TriggeredStatus>;

impl Harness<TriggeredStatus> {
    fn start(d: JobDefinition, plans: &[Plan]) -> Task {
        Task::start_at(tempfile::tempdir().unwrap(), d, plans, utc(10, 0))
    }

    /// LOGS in `dir`, the wall clock starting at `wall`.
    fn start_at(
        dir: tempfile::TempDir,
        d: JobDefinition,
        plans: &[Plan],
        wall: DateTime<Utc>,
    ) -> Task {
        let clock = Arc::new(ManualClock::starting_at(wall));
        Task::spawn(dir, clock, d, plans, |view| match view {
            JobView::Triggered(status) => Some(status),
            JobView::Continuous(_) => None,
        })
    }

    /// The job's folder under LOGS.
    fn logs(&self) -> PathBuf {
        self.layout.job_dir(JobType::Triggered, "job")
    }

    async fn trigger(&self) -> Result<Accepted, TriggerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(JobCommand::Trigger {
                args: Vec::new(),
                reply,
            })
            .unwrap();
        rx.await.unwrap()
    }

    async fn cancel_run(&self, run_id: Option<String>) -> Result<String, TriggerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(JobCommand::Cancel { run_id, reply }).unwrap();
        rx.await.unwrap()
    }

    /// Waits for the latest run to end and returns its state and error.
    async fn ended(&mut self) -> (RunState, Option<String>) {
        self.until("a run ended", |s| {
            s.running.is_none()
                && s.latest_run
                    .as_ref()
                    .is_some_and(|r| r.status != RunState::Running)
        })
        .await;
        let r = self.status.borrow().latest_run.clone().unwrap();
        (r.status, r.error)
    }

    fn scheduler_log(&self) -> String {
        std::fs::read_to_string(self.logs().join("job_scheduler.log")).unwrap_or_default()
    }

    async fn shut_down(self) -> Self {
        self.stop_host().await;
        self
    }
}

#[tokio::test(start_paused = true)]
async fn time_limits_abort_the_run_at_exactly_their_second() {
    type Limits = fn(&mut JobSettings);
    let cases: [(&str, Limits, Plan, Duration, &str); 3] = [
        (
            "timeout",
            |s| s.timeout = Some(S(30)),
            Plan::Forever,
            S(30),
            "timeout: still running after 30 s (settings.job `timeout`)",
        ),
        (
            "idle timeout",
            |s| s.idle_timeout = Some(S(10)),
            Plan::Forever,
            S(10),
            "idle timeout: no output and no CPU use for 10 s (settings.job `idle_timeout`)",
        ),
        (
            "busy: the idle limit never comes, the timeout does",
            |s| {
                s.idle_timeout = Some(S(10));
                s.timeout = Some(S(120));
            },
            Plan::Busy,
            S(120),
            "timeout: still running after 120 s (settings.job `timeout`)",
        ),
    ];
    for (what, limits, plan, after, why) in cases {
        let mut t = Task::start(def_with(limits), &[plan]);
        assert!(t.trigger().await.is_ok(), "{what}");
        let (state, error) = t.ended().await;
        assert_eq!(
            (state, error.as_deref()),
            (RunState::Aborted, Some(why)),
            "{what}"
        );
        assert_eq!(t.fake.elapsed(), after, "{what}");
        assert_eq!(t.fake.stops(), [why], "{what}");
        t.shut_down().await;
    }
}

#[tokio::test(start_paused = true)]
async fn overlap_skip_refuses_and_queue_keeps_one() {
    // Skip: a second trigger is refused while the first runs.
    let mut t = Task::start(def(), &[Plan::Exit(S(5), 0)]);
    let first = t.trigger().await.unwrap().run_id.unwrap();
    let busy = t.trigger().await;
    assert!(
        matches!(&busy, Err(TriggerError::Busy { run_id, .. }) if *run_id == first),
        "{busy:?}"
    );
    assert_eq!(t.ended().await.0, RunState::Success);
    assert_eq!(t.fake.starts(), [S(0)]);
    t.shut_down().await;

    // Queue: one waits and starts when the first ends; a third is refused.
    let mut t = Task::start(queue(), &[Plan::Exit(S(5), 0), Plan::Exit(S(1), 0)]);
    let first = t.trigger().await.unwrap().run_id.unwrap();
    let queued = t.trigger().await.unwrap();
    assert_eq!((queued.run_id, queued.queued_behind), (None, Some(first)));
    assert!(t.status.borrow().pending, "the status shows the queued run");
    assert!(matches!(
        t.trigger().await,
        Err(TriggerError::QueueFull { .. })
    ));
    t.until("the queued run ran", |s| {
        !s.pending && s.running.is_none() && runs_done(s)
    })
    .await;
    assert_eq!(t.fake.starts(), [S(0), S(5)]);
    t.shut_down().await;
}

fn runs_done(s: &TriggeredStatus) -> bool {
    s.latest_run
        .as_ref()
        .is_some_and(|r| r.status == RunState::Success && r.start_time.contains("10:00:05"))
}

#[tokio::test(start_paused = true)]
async fn a_queued_run_is_dropped_at_shutdown_and_said_so() {
    let t = Task::start(queue(), &[]);
    t.trigger().await.unwrap();
    assert!(t.trigger().await.unwrap().queued_behind.is_some());
    let mut t = t.shut_down().await;
    let (state, error) = t.ended().await;
    assert_eq!(
        (state, error.as_deref()),
        (RunState::Aborted, Some("the host is shutting down"))
    );
    assert_eq!(t.fake.starts().len(), 1, "the queued run never started");
    let log = t.scheduler_log();
    assert!(
        log.contains(
            "queued run of job dropped: the host stopped before it could start (manual trigger)"
        ),
        "{log}"
    );
    assert!(!t.status.borrow().pending);
}

#[tokio::test(start_paused = true)]
async fn cancel_aborts_the_run_going_and_only_it() {
    let t = Task::start(def(), &[]);
    assert!(matches!(
        t.cancel_run(None).await,
        Err(TriggerError::NothingToCancel { .. })
    ));
    let id = t.trigger().await.unwrap().run_id.unwrap();
    assert!(matches!(
        t.cancel_run(Some("other".into())).await,
        Err(TriggerError::NotRunning { .. })
    ));
    assert_eq!(t.cancel_run(Some(id.clone())).await, Ok(id));
    // Answered once the run is over: the very next look sees it ended.
    let latest = t.status.borrow().latest_run.clone().unwrap();
    assert_eq!(
        (latest.status, latest.error.as_deref()),
        (RunState::Aborted, Some("cancelled on request"))
    );
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn missed_fires_after_downtime() {
    let hourly = || {
        def_with(|s| {
            s.schedule =
                Some(crate::schedule::Schedule::parse("0 0 * * * *", chrono_tz::UTC).unwrap())
        })
    };
    // Last fired at 08:00; the host comes back at (wall). (What the scheduler log
    // says, runs at once.) The latest occurrence runs once if it is at most 10 minutes
    // old; older, it is only reported.
    let cases = [
        (
            utc(10, 5),
            "missed 1 occurrence(s) before 2026-03-01T10:00:00.000Z",
            1,
        ),
        (
            utc(10, 30),
            "missed 2 occurrence(s) up to 2026-03-01T10:00:00.000Z",
            0,
        ),
    ];
    for (wall, says, runs_now) in cases {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("triggered").join("job");
        std::fs::create_dir_all(&logs).unwrap();
        records::save_last_fired(&logs, utc(8, 0)).unwrap();
        let mut t = Task::start_at(dir, hourly(), &[Plan::Exit(S(1), 0)], wall);
        assert_eq!(t.logs(), logs);
        if runs_now == 1 {
            t.until("the latest occurrence ran", |s| s.latest_run.is_some())
                .await;
        } else {
            t.until("the schedule is on", |s| s.next_fire.is_some())
                .await;
            tokio::time::sleep(S(30)).await;
        }
        let starts: Vec<Duration> = t.fake.starts();
        assert_eq!(starts.len(), runs_now, "{wall}: {starts:?}");
        let log = t.scheduler_log();
        assert!(log.contains(says), "{wall}: {log}");
        // Either way the next occurrence fires on time.
        t.until("the next occurrence", |s| {
            s.latest_run
                .as_ref()
                .and_then(|r| r.scheduled_for.as_deref())
                .is_some_and(|f| f.starts_with("2026-03-01T11:00:00"))
        })
        .await;
        t.shut_down().await;
    }
}
