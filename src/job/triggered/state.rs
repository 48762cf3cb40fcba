//! A triggered job's decisions, pure: a fire, a manual trigger, the run's exit, its
//! time limits, a cancel and the host stopping go in with the time; the next state
//! and what to do ([`Effect`]) come out. The task in `mod.rs` performs the effects
//! (the run lock, the run's folder and record, the process) and feeds their results
//! back. Every run passes [`gate::gate`].

use std::ffi::OsString;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::gate::{self, Verdict};
use crate::fsutil::rfc3339_string;
use crate::job::triggered::records::{RunState, TriggerKind};
use crate::job::{Accepted, RunId, TriggerError};
use crate::runner::Exit;
use crate::scan::JobDefinition;
use crate::schedule::Poll;

/// How often a run with an `idle_timeout` is checked for output and CPU use.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The time of a step, and whether the host is stopping by then.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub host_stopping: bool,
}

/// Who asked for a run, and so who hears how it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The API: answered with [`Effect::Answer`].
    Caller,
    /// The schedule: a refusal is a line in the scheduler log.
    Fire,
    /// The run queued behind the one that just ended.
    Queued,
}

/// A run asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub trigger: TriggerKind,
    pub args: Vec<OsString>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub origin: Origin,
}

/// The `idle_timeout` watch: the run's output and CPU counters at the last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleWatch {
    pub limit: Duration,
    pub last_activity: Instant,
    pub last_output: u64,
    pub last_cpu: u64,
    pub next_check: Instant,
}

impl IdleWatch {
    pub fn new(limit: Duration, now: Instant) -> IdleWatch {
        IdleWatch {
            limit,
            last_activity: now,
            last_output: 0,
            last_cpu: 0,
            next_check: now + IDLE_CHECK.min(limit),
        }
    }

    /// Takes a sample of the run's output bytes and CPU ticks: why the run must stop
    /// when it has been quiet for the whole limit.
    pub fn sample(&mut self, output: u64, cpu: u64, now: Instant) -> Option<String> {
        if output != self.last_output || cpu != self.last_cpu {
            self.last_output = output;
            self.last_cpu = cpu;
            self.last_activity = now;
        }
        self.next_check = now + IDLE_CHECK.min(self.limit);
        (now.duration_since(self.last_activity) >= self.limit).then(|| {
            format!(
                "idle timeout: no output and no CPU use for {} s (settings.job `idle_timeout`)",
                self.limit.as_secs()
            )
        })
    }
}

/// Why a run that passed its `timeout` is stopped.
pub fn timeout_why(limit: Duration) -> String {
    format!(
        "timeout: still running after {} s (settings.job `timeout`)",
        limit.as_secs()
    )
}

/// Where the job's run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No run going.
    Idle,
    /// A request passed the overlap rule: waiting for the run lock.
    Locking(Request),
    /// The lock is taken: the run's folder, record and process are being made.
    Starting(Request),
    Running(Going),
    /// The stop sequence is running; the run ends `Aborted` with `why`.
    Stopping {
        run: RunId,
        why: String,
        then: Then,
    },
    /// The run is over; its record is being closed.
    Finishing {
        then: Then,
    },
    /// Removed, or the host stopped: the task ends.
    Ended,
}

/// A run going, with its time limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Going {
    pub run: RunId,
    pub timeout: Option<Duration>,
    pub timeout_at: Option<Instant>,
    pub idle: Option<IdleWatch>,
    pub grace: Duration,
}

/// What follows the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// The queued run, if any (and the host is not stopping).
    Next,
    /// The task ends: the queued run (taken when the stop began) is dropped with
    /// `lost` as the reason; a removed job's private copy is forgotten.
    End {
        dropped: Option<Request>,
        lost: &'static str,
        removed: bool,
    },
}

#[derive(Debug)]
pub enum Input {
    /// The folder was (re)scanned.
    Definition(Box<JobDefinition>),
    /// A manual trigger.
    Trigger(Request),
    /// The schedule cursor's answer.
    Poll(Poll),
    /// The answer to [`Effect::TakeLock`].
    Lock(gate::Lock),
    /// The answer to [`Effect::StartRun`]: the run's id, or why it did not start
    /// (its record says so already).
    Started(Result<RunId, TriggerError>),
    /// The run's main process ended.
    Exited(Exit),
    /// The answer to [`Effect::Stop`].
    Stopped(Exit),
    /// The answer to [`Effect::Finish`].
    Finished,
    /// The run's `timeout` is due.
    Timeout,
    /// The idle check is due: the run's output bytes and CPU ticks so far.
    IdleSample {
        output: u64,
        cpu: u64,
    },
    /// Stop a run on request (`None`: the one going).
    Cancel(Option<RunId>),
    Shutdown,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A line in the job's scheduler log.
    Sched {
        text: String,
        error: bool,
    },
    /// A warning in the host log.
    Warn(String),
    /// Persist `at` as fired, so it is not fired again.
    RecordFire(DateTime<Utc>),
    /// The schedule has nothing more to fire.
    ScheduleOff,
    /// Take the run lock; for a scheduled run (`fire`: its occurrence) read the last
    /// fire too when hosts share these LOGS, and in a cluster claim the occurrence
    /// with the lease.
    TakeLock {
        fire: Option<DateTime<Utc>>,
    },
    /// Make the run's folder and record and start its process.
    StartRun(Request),
    Stop {
        why: String,
        grace: Duration,
    },
    /// Close the run's record: `abort` when the host ended it.
    Finish {
        exit: Exit,
        abort: Option<String>,
    },
    /// Remove the job's private copy.
    ForgetJob,
    /// The answer to a manual trigger.
    Answer(Result<Accepted, TriggerError>),
    /// The answer to a cancel.
    CancelAnswer(Result<RunId, TriggerError>),
}

/// How a run ended, for its record and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: RunState,
    pub error: Option<String>,
    /// The last line of the run's own log: (is error, text).
    pub last_note: (bool, String),
    /// The scheduler log's line, for a run that did not succeed.
    pub sched: Option<String>,
}

/// What a run's record and logs say about its end.
pub fn outcome(run: &str, exit: Exit, abort: Option<&str>) -> Outcome {
    let status = match (abort, exit.success()) {
        (Some(_), _) => RunState::Aborted,
        (None, true) => RunState::Success,
        (None, false) => RunState::Failed,
    };
    let error = abort
        .map(str::to_string)
        .or_else(|| (!exit.success()).then(|| exit.to_string()));
    let last_note = match abort {
        Some(why) => (true, format!("run {run} aborted: {why}")),
        None => (false, format!("run {run} {}", status.as_str())),
    };
    // The scheduler's log names runs that did not succeed; a success is in the run's
    // own log and record (a hundred jobs a second would otherwise add a line each).
    let sched = (status != RunState::Success).then(|| {
        let why = abort.map(|w| format!(" ({w})")).unwrap_or_default();
        format!("run {run} ended: {}{why}", status.as_str())
    });
    Outcome {
        status,
        error,
        last_note,
        sched,
    }
}

/// A triggered job's whole decision state.
#[derive(Debug, Clone)]
pub struct Machine {
    pub state: State,
    pub def: JobDefinition,
    /// The one pending run of `overlap: "queue"`.
    pub pending: Option<Request>,
}

type Fx = Vec<Effect>;

impl Machine {
    pub fn new(def: JobDefinition) -> Machine {
        Machine {
            state: State::Idle,
            def,
            pending: None,
        }
    }

    /// The run going, if any.
    pub fn going(&self) -> Option<&Going> {
        match &self.state {
            State::Running(g) => Some(g),
            _ => None,
        }
    }

    /// The transition function.
    pub fn step(&mut self, input: Input, now: Now) -> Fx {
        let mut fx = Vec::new();
        match (self.state.clone(), input) {
            (State::Ended, _) => {}
            (_, Input::Definition(def)) => self.def = *def,
            (_, Input::Trigger(req)) => self.ask(req, None, now, &mut fx),
            (_, Input::Poll(poll)) => self.on_poll(poll, now, &mut fx),
            (State::Locking(req), Input::Lock(lock)) => self.ask(req, Some(lock), now, &mut fx),
            (State::Starting(req), Input::Started(Ok(run))) => {
                let settings = self.def.settings.clone().unwrap_or_default();
                let idle = settings
                    .idle_timeout
                    .map(|limit| IdleWatch::new(limit, now.at));
                self.state = State::Running(Going {
                    run: run.clone(),
                    timeout: settings.timeout,
                    timeout_at: settings.timeout.map(|t| now.at + t),
                    idle,
                    grace: settings.stopping_wait_time,
                });
                self.answer(
                    &req,
                    Ok(Accepted {
                        run_id: Some(run),
                        queued_behind: None,
                        schedule_disabled: self.schedule_disabled(),
                    }),
                    &mut fx,
                );
            }
            (State::Starting(req), Input::Started(Err(e))) => {
                self.state = State::Idle;
                self.answer(&req, Err(e), &mut fx);
            }
            (State::Running(_), Input::Exited(exit)) => {
                self.state = State::Finishing { then: Then::Next };
                fx.push(Effect::Finish { exit, abort: None });
            }
            (State::Stopping { why, then, .. }, Input::Stopped(exit)) => {
                self.state = State::Finishing { then };
                fx.push(Effect::Finish {
                    exit,
                    abort: Some(why),
                });
            }
            (State::Finishing { then }, Input::Finished) => self.after_run(then, now, &mut fx),
            (State::Running(g), Input::Timeout) => {
                let why = timeout_why(g.timeout.unwrap_or_default());
                self.stop(why, Then::Next, &mut fx);
            }
            (State::Running(mut g), Input::IdleSample { output, cpu }) => {
                let Some(idle) = g.idle.as_mut() else {
                    return fx;
                };
                let quiet = idle.sample(output, cpu, now.at);
                self.state = State::Running(g);
                if let Some(why) = quiet {
                    self.stop(why, Then::Next, &mut fx);
                }
            }
            (state, Input::Cancel(want)) => {
                let job = self.def.name.clone();
                let answer = match (&state, want) {
                    (State::Running(g), Some(want)) if want != g.run => {
                        Err(TriggerError::NotRunning { job, run_id: want })
                    }
                    (State::Running(g), _) => Ok(g.run.clone()),
                    (_, Some(run_id)) => Err(TriggerError::NotRunning { job, run_id }),
                    (_, None) => Err(TriggerError::NothingToCancel { job }),
                };
                let ok = answer.is_ok();
                fx.push(Effect::CancelAnswer(answer));
                if ok {
                    self.stop("cancelled on request".into(), Then::Next, &mut fx);
                }
            }
            (_, input @ (Input::Shutdown | Input::Remove)) => {
                // Taken before the stop: the end of the run going would start it.
                let dropped = self.pending.take();
                let removed = matches!(input, Input::Remove);
                // The command channel also closes when the host stops: say which.
                let (why, lost) = if removed && !now.host_stopping {
                    (
                        "the job folder was removed",
                        "the job folder was removed before it could start",
                    )
                } else {
                    (
                        "the host is shutting down",
                        "the host stopped before it could start",
                    )
                };
                let then = Then::End {
                    dropped,
                    lost,
                    removed,
                };
                self.stop(why.into(), then, &mut fx);
            }
            // An answer that does not belong to the state (a timer that lost a race).
            (_, _) => {}
        }
        fx
    }

    fn schedule_disabled(&self) -> bool {
        self.def.disabled
            && self
                .def
                .settings
                .as_ref()
                .is_some_and(|s| s.schedule.is_some())
    }

    /// Through the gate; `lock` once the run lock answered.
    fn ask(&mut self, req: Request, lock: Option<gate::Lock>, now: Now, fx: &mut Fx) {
        let running = match &self.state {
            State::Running(g) => Some(g.run.clone()),
            State::Stopping { run, .. } => Some(run.clone()),
            _ => None,
        };
        let ask = gate::Ask {
            job: self.def.name.clone(),
            host_stopping: now.host_stopping,
            invalid: (!self.def.valid()).then(|| self.def.errors.join("; ")),
            overlap: self
                .def
                .settings
                .as_ref()
                .map(|s| s.overlap)
                .unwrap_or_default(),
            running,
            queued: self.pending.is_some(),
            scheduled_for: req.scheduled_for,
            lock,
        };
        if matches!(self.state, State::Locking(_)) {
            self.state = State::Idle;
        }
        match gate::gate(&ask) {
            Verdict::Refuse { error, record_fire } => {
                if let Some(at) = record_fire {
                    fx.push(Effect::RecordFire(at));
                }
                self.answer(&req, Err(error), fx);
            }
            Verdict::Queue { behind } => {
                fx.push(Effect::Sched {
                    text: format!("{} run queued behind run {behind}", req.trigger.as_str()),
                    error: false,
                });
                let accepted = Accepted {
                    run_id: None,
                    queued_behind: Some(behind),
                    schedule_disabled: self.schedule_disabled(),
                };
                self.answer(&req, Ok(accepted), fx);
                self.pending = Some(req);
            }
            Verdict::AskLock => {
                fx.push(Effect::TakeLock {
                    fire: req.scheduled_for,
                });
                self.state = State::Locking(req);
            }
            Verdict::Start => {
                self.state = State::Starting(req.clone());
                fx.push(Effect::StartRun(req));
            }
        }
    }

    /// Tells whoever asked for `req` how it went.
    fn answer(&self, req: &Request, result: Result<Accepted, TriggerError>, fx: &mut Fx) {
        match (req.origin, result) {
            (Origin::Caller, result) => fx.push(Effect::Answer(result)),
            (_, Ok(_)) => {}
            (Origin::Fire, Err(e)) => {
                let at = rfc3339_string(req.scheduled_for.unwrap_or_default());
                let (text, error) = match e {
                    TriggerError::Busy { run_id, .. } => (
                        format!("skipped {at}: run {run_id} is still going (overlap: skip)"),
                        false,
                    ),
                    // Not fired elsewhere: the task tries it again (its catch-up);
                    // the reason is in the note before this one.
                    TriggerError::StoreAway { .. } => (
                        format!(
                            "{at} waits for the cluster store: it runs once the store answers if it is at most 10 minutes old and no host ran the job since"
                        ),
                        false,
                    ),
                    // Another host fired it: that is the point of the lock.
                    TriggerError::LockedElsewhere { .. } => (
                        format!(
                            "{at} fired on another host (run.lock held or this occurrence already recorded there)"
                        ),
                        false,
                    ),
                    other => (format!("fire at {at} failed: {other}"), true),
                };
                fx.push(Effect::Sched { text, error });
            }
            (Origin::Queued, Err(e)) => fx.push(Effect::Sched {
                text: format!("queued run could not start: {e}"),
                error: true,
            }),
        }
    }

    fn on_poll(&mut self, poll: Poll, now: Now, fx: &mut Fx) {
        match poll {
            Poll::Wait(_) => {}
            Poll::Never => {
                fx.push(Effect::Sched {
                    text: "the schedule has no future occurrence: nothing more will fire".into(),
                    error: false,
                });
                fx.push(Effect::ScheduleOff);
            }
            Poll::Missed { latest, count } => {
                fx.push(Effect::Sched {
                    text: format!(
                        "missed {count} occurrence(s) up to {} while the host was down or the clock jumped (older than 10 minutes: not run)",
                        rfc3339_string(latest)
                    ),
                    error: true,
                });
                fx.push(Effect::RecordFire(latest));
            }
            Poll::Fire { at, skipped } => {
                if skipped > 0 {
                    fx.push(Effect::Sched {
                        text: format!(
                            "missed {skipped} occurrence(s) before {} (the host was down, busy, or the clock jumped); running the latest once",
                            rfc3339_string(at)
                        ),
                        error: true,
                    });
                }
                let req = Request {
                    trigger: TriggerKind::Schedule,
                    args: Vec::new(),
                    scheduled_for: Some(at),
                    origin: Origin::Fire,
                };
                self.ask(req, None, now, fx);
            }
        }
    }

    /// The stop sequence for the run going, if any, then `then`.
    fn stop(&mut self, why: String, then: Then, fx: &mut Fx) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Running(g) => {
                fx.push(Effect::Stop {
                    why: why.clone(),
                    grace: g.grace,
                });
                self.state = State::Stopping {
                    run: g.run,
                    why,
                    then,
                };
            }
            other => {
                self.state = other;
                if let Then::End { .. } = then {
                    self.end(then, fx);
                }
            }
        }
    }

    fn after_run(&mut self, then: Then, now: Now, fx: &mut Fx) {
        self.state = State::Idle;
        match then {
            // A run that ends as the host stops leaves its queued one to be dropped
            // (and said so) by the shutdown, not started and left `Running`.
            Then::Next if now.host_stopping => {}
            Then::Next => {
                if let Some(mut req) = self.pending.take() {
                    req.origin = Origin::Queued;
                    self.ask(req, None, now, fx);
                }
            }
            end @ Then::End { .. } => self.end(end, fx),
        }
    }

    fn end(&mut self, then: Then, fx: &mut Fx) {
        self.state = State::Ended;
        let Then::End {
            dropped,
            lost,
            removed,
        } = then
        else {
            return;
        };
        if let Some(p) = dropped {
            // A queued run was accepted (202) and will never start: said where its
            // caller and the operator look.
            let text = format!(
                "queued run of {} dropped: {lost} ({} trigger)",
                self.def.name,
                p.trigger.as_str()
            );
            fx.push(Effect::Warn(text.clone()));
            fx.push(Effect::Sched { text, error: true });
        }
        if removed {
            fx.push(Effect::ForgetJob);
        }
    }
}
