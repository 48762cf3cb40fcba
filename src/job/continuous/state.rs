//! A continuous job's decisions, pure: where the job is ([`State`]), what happened
//! ([`Input`]) and the time go in; the next state and what to do ([`Effect`]) come
//! out. No I/O, no clock read, no process: the task in `mod.rs` performs the effects
//! and feeds their results back, and the tests run every transition as a table.
//!
//! Starting and stopping take a moment (a spawn, a grace period): the state says so
//! (`Starting`, `Stopping`, `Exiting`) and the effect's result is the next input.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::super::backoff;
use super::super::plan::{self, Action, Desired, Phase};
use crate::fsutil::rfc3339_string;
use crate::job::RunId;
use crate::runner::Exit;
use crate::scan::JobDefinition;
use crate::spec::settings::JobSettings;
use crate::status::{ContinuousState, ContinuousStatus, LastExit};

/// How often a host that lost the singleton race asks again: in a cluster, a dead
/// holder's lease is taken over within its ttl and this.
pub const LOCK_RETRY: Duration = Duration::from_secs(1);
/// The stop grace when neither the run's settings nor the folder's say.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// The time of a step: the monotonic instant for timers, the wall clock for what
/// the status shows.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

/// Where the job is. `attempt` counts quick exits in a row (see [`backoff`]); it lives
/// only in the states a timer-driven restart passes through, since every other start
/// (new files, enabled, fixed) begins a new streak at 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing running and nothing planned: before the first definition, or a timer
    /// that found nothing to start.
    Idle,
    /// A start is asked for: waiting for the singleton lock's answer or the spawn.
    Starting { attempt: u32 },
    Running {
        run: RunId,
        since: Instant,
        attempt: u32,
    },
    /// The run's main process ended; its leftovers and output are being finished
    /// before the restart wait is counted.
    Exiting {
        run: RunId,
        exit: Exit,
        ran_for: Duration,
        attempt: u32,
    },
    /// Waiting out the restart backoff.
    Backoff { until: Instant, attempt: u32 },
    /// Another host holds the singleton lock: ask again at `retry_at`.
    WaitingLock { retry_at: Instant, attempt: u32 },
    /// The stop sequence is running; `then` says what follows.
    Stopping { run: RunId, then: Then },
    /// disable.job is present.
    Disabled,
    /// The job folder has errors and nothing runs.
    Error { reason: String },
    /// The kernel refused these files' program: not started again until they change.
    Unrunnable { fingerprint: u64, reason: String },
    /// Removed, or the host stopped: the task ends.
    Ended,
}

/// What follows a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Start the new files (a new streak).
    Start,
    Disable,
    ShowError,
    Remove,
    Shutdown,
    /// The singleton lease was lost: let it go, ask again from `retry_at`.
    WaitLock {
        retry_at: Instant,
    },
}

/// What happened.
#[derive(Debug)]
pub enum Input {
    /// The folder was (re)scanned: the latest definition.
    Definition(Box<JobDefinition>),
    /// The answer to [`Effect::TakeLock`]: `Err(None)` when another host holds it,
    /// `Err(Some(why))` when the lock file could not be opened.
    Lock(Result<(), Option<String>>),
    /// The singleton's lease (a cluster's) could not be kept: the run must have
    /// ended within `grace`, before the lease expires and another host may start.
    LockLost { why: String, grace: Duration },
    /// The answer to [`Effect::Start`].
    Started(Result<Started, StartFailed>),
    /// The run's main process ended.
    Exited(Exit),
    /// The answer to [`Effect::Finish`].
    Finished,
    /// The answer to [`Effect::Stop`]: the run is over.
    Stopped(Exit),
    /// The state's timer ([`State::timer`]) is due.
    Timer,
    /// The job folder is gone.
    Remove,
    /// The host is stopping.
    Shutdown,
}

#[derive(Debug)]
pub struct Started {
    pub run: RunId,
    pub pid: i32,
    pub at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct StartFailed {
    pub run: RunId,
    /// Why these files can never run, with the fix (see `SpawnError::unrunnable`).
    pub unrunnable: Option<String>,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// What the task does for a step, in order. At most one effect answers with an
/// input, and it is the last.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send the status to readers and write `status.json`.
    Publish,
    /// A SYS line in the job log, tagged with the run (or no run).
    Note {
        run: Option<RunId>,
        error: bool,
        text: String,
    },
    /// A line in the host log.
    HostLog {
        level: Level,
        text: String,
    },
    /// The host log's line for a run that started, with its pid as a field.
    HostLogStarted {
        pid: i32,
    },
    /// The job log follows these settings (limits, file name).
    UseSettings(Arc<JobSettings>),
    TakeLock,
    ReleaseLock,
    /// Start a run of the current definition with these settings.
    Start(Arc<JobSettings>),
    /// The stop sequence, then the clean-up.
    Stop {
        why: String,
        grace: Duration,
    },
    /// The clean-up after the main process ended.
    Finish {
        grace: Duration,
    },
    /// Remove what the host keeps for the job (its private copy).
    ForgetJob,
}

impl State {
    /// When the task must come back without being asked.
    pub fn timer(&self) -> Option<Instant> {
        match self {
            State::Backoff { until, .. } => Some(*until),
            State::WaitingLock { retry_at, .. } => Some(*retry_at),
            _ => None,
        }
    }

    fn phase(&self) -> Phase {
        match self {
            State::Running { .. } => Phase::Running,
            State::Backoff { .. } => Phase::Backoff,
            _ => Phase::Idle,
        }
    }
}

/// The settings and files a run started from; kept while the folder turns invalid.
#[derive(Debug, Clone)]
struct Active {
    settings: Arc<JobSettings>,
    fingerprint: u64,
}

/// A continuous job's whole decision state: its [`State`], the definition, and the
/// status it shows.
#[derive(Debug, Clone)]
pub struct Machine {
    pub state: State,
    pub def: JobDefinition,
    pub status: ContinuousStatus,
    active: Option<Active>,
    /// Set by a taken lock, cleared by [`Effect::ReleaseLock`].
    holds_lock: bool,
    /// The error last written to the job log, so a rescan does not repeat it.
    shown_error: Option<String>,
    /// Why the lock could not be asked (shown as the job's error), so that the
    /// next answer, taken or held elsewhere, clears it and no other error.
    lock_error: Option<String>,
}

type Fx = Vec<Effect>;

impl Machine {
    pub fn new(def: JobDefinition, status: ContinuousStatus) -> Machine {
        Machine {
            state: State::Idle,
            def,
            status,
            active: None,
            holds_lock: false,
            shown_error: None,
            lock_error: None,
        }
    }

    /// The transition function.
    pub fn step(&mut self, input: Input, now: Now) -> Fx {
        let mut fx = Vec::new();
        match (self.state.clone(), input) {
            // The task is over: nothing more happens.
            (State::Ended, _) => {}
            (_, Input::Definition(def)) => {
                self.def = *def;
                self.status.warnings = self.def.warnings.clone();
                for w in &self.def.warnings {
                    fx.push(host_log(Level::Warn, w.clone()));
                }
                self.apply(&mut fx);
            }
            (State::Starting { attempt }, Input::Lock(Ok(()))) => {
                self.holds_lock = true;
                self.clear_lock_error();
                fx.push(note(
                    None,
                    false,
                    "singleton lock acquired: this host runs the job",
                ));
                self.spawn(attempt, &mut fx);
            }
            (State::Starting { attempt }, Input::Lock(Err(why))) => {
                match why {
                    Some(why) => {
                        self.status.error = Some(why.clone());
                        self.lock_error = Some(why);
                    }
                    // Answered: the store (or the lock file) is usable again, so
                    // why it could not be asked no longer holds.
                    None => self.clear_lock_error(),
                }
                self.wait_lock(now.at + LOCK_RETRY, attempt, &mut fx);
            }
            (state, Input::LockLost { why, grace }) if self.holds_lock => {
                let text = format!("singleton lease lost: {why}");
                fx.push(note(None, true, &text));
                fx.push(host_log(Level::Warn, text.clone()));
                let retry_at = now.at + grace + LOCK_RETRY;
                match state {
                    State::Running { run, .. } => {
                        self.status.status = ContinuousState::Stopping;
                        self.status.detailed_status = format!("stopping: {text}");
                        fx.push(Effect::Publish);
                        self.state = State::Stopping {
                            run,
                            then: Then::WaitLock { retry_at },
                        };
                        fx.push(Effect::Stop {
                            why: text,
                            grace: self.grace().min(grace),
                        });
                    }
                    // A stop already going ends the run; the lock goes with it.
                    State::Stopping { run, .. } => {
                        self.state = State::Stopping {
                            run,
                            then: Then::WaitLock { retry_at },
                        }
                    }
                    _ => {
                        self.release_lock(&mut fx);
                        self.wait_lock(retry_at, 0, &mut fx);
                    }
                }
            }
            (State::Starting { attempt }, Input::Started(Ok(s))) => {
                fx.push(Effect::HostLogStarted { pid: s.pid });
                let st = &mut self.status;
                st.status = ContinuousState::Running;
                st.detailed_status = format!("running since {}", rfc3339_string(s.at));
                st.pid = Some(s.pid);
                st.started_at = Some(s.at);
                st.next_restart_at = None;
                st.run_command = self.def.launch.as_ref().map(|l| l.display());
                self.state = State::Running {
                    run: s.run,
                    since: now.at,
                    attempt,
                };
                fx.push(Effect::Publish);
            }
            (State::Starting { attempt }, Input::Started(Err(f))) => match f.unrunnable {
                Some(reason) => {
                    // Starting the same files again fails the same way: an Error
                    // until the job's files change, not a restart loop.
                    let msg = format!("cannot run: {reason}");
                    fx.push(note(Some(f.run), true, &msg));
                    fx.push(host_log(Level::Error, msg.clone()));
                    self.state = State::Unrunnable {
                        fingerprint: self.def.fingerprint,
                        reason: msg,
                    };
                    self.show_unrunnable(&mut fx);
                }
                None => {
                    let msg = format!("could not start: {}", f.error);
                    fx.push(note(Some(f.run.clone()), true, &msg));
                    fx.push(host_log(Level::Error, msg.clone()));
                    self.status.error = Some(msg);
                    self.schedule_restart(f.run, Duration::ZERO, attempt, now, &mut fx);
                }
            },
            (
                State::Running {
                    run,
                    since,
                    attempt,
                },
                Input::Exited(exit),
            ) => {
                self.state = State::Exiting {
                    run,
                    exit,
                    ran_for: now.at.saturating_duration_since(since),
                    attempt,
                };
                fx.push(Effect::Finish {
                    grace: self.grace(),
                });
            }
            (
                State::Exiting {
                    run,
                    exit,
                    ran_for,
                    attempt,
                },
                Input::Finished,
            ) => {
                self.note_exit(exit, now, &mut fx);
                self.schedule_restart(run, ran_for, attempt, now, &mut fx);
            }
            (State::Stopping { run, then }, Input::Stopped(exit)) => {
                self.note_exit(exit, now, &mut fx);
                fx.push(note(Some(run), false, "stopped"));
                self.after_stop(then, &mut fx);
            }
            (State::Backoff { attempt, .. } | State::WaitingLock { attempt, .. }, Input::Timer) => {
                self.start(attempt, &mut fx)
            }
            (_, Input::Remove) => self.stop_then("job folder removed", Then::Remove, &mut fx),
            (_, Input::Shutdown) => self.stop_then("host shutting down", Then::Shutdown, &mut fx),
            // An answer that does not belong to the state (a timer that lost a race):
            // nothing to do.
            (_, _) => {}
        }
        fx
    }

    /// Carries out what the folder now says.
    fn apply(&mut self, fx: &mut Fx) {
        // New files (or a switch off and on) are worth another try.
        if let State::Unrunnable { fingerprint, .. } = &self.state
            && (self.def.disabled || *fingerprint != self.def.fingerprint)
        {
            self.state = State::Idle;
        }
        if matches!(self.state, State::Unrunnable { .. }) && self.def.valid() {
            // The same files the kernel refused: stay in Error with its reason.
            self.show_unrunnable(fx);
            return;
        }
        let desired = Desired {
            valid: self.def.valid(),
            disabled: self.def.disabled,
            files_changed: self
                .active
                .as_ref()
                .is_none_or(|a| a.fingerprint != self.def.fingerprint),
        };
        if self.def.valid() {
            self.shown_error = None;
            self.status.error = None;
            self.status.problems = Vec::new();
            // Valid again (fixed, or the bad settings.job deleted: defaults apply)
            // while the run went on: it no longer runs on "last valid settings". A
            // change of files restarts it below; the same files keep it as it is.
            if matches!(self.state, State::Running { .. })
                && let Some(at) = self.status.started_at
            {
                self.status.status = ContinuousState::Running;
                self.status.detailed_status = format!("running since {}", rfc3339_string(at));
            }
        }
        match plan::on_definition(self.state.phase(), desired) {
            Action::Nothing if self.def.disabled => self.disable(fx),
            Action::Nothing => fx.push(Effect::Publish),
            Action::Start => self.start(0, fx),
            Action::Restart => self.stop_then("job files changed", Then::Start, fx),
            Action::Stop if self.def.disabled => {
                self.stop_then("disabled: disable.job is present", Then::Disable, fx)
            }
            Action::Stop => self.stop_then("job files are invalid", Then::ShowError, fx),
            Action::KeepWithError => {
                self.show_error(fx);
                self.status.detailed_status =
                    "running on its last valid settings; the job folder has errors".into();
                fx.push(Effect::Publish);
            }
            Action::ShowError => self.show_error(fx),
        }
    }

    fn grace(&self) -> Duration {
        self.active
            .as_ref()
            .map(|a| a.settings.stopping_wait_time)
            .or_else(|| self.def.settings.as_ref().map(|s| s.stopping_wait_time))
            .unwrap_or(DEFAULT_GRACE)
    }

    fn singleton(&self) -> bool {
        self.def.settings.as_ref().is_some_and(|s| s.is_singleton)
    }

    /// Starts the current definition; `attempt` quick exits came before.
    fn start(&mut self, attempt: u32, fx: &mut Fx) {
        let settings = match (&self.def.settings, &self.def.launch) {
            (Some(s), Some(_)) if self.def.valid() && !self.def.disabled => s.clone(),
            // A timer from before the folder changed: nothing to start.
            _ => {
                self.state = State::Idle;
                return;
            }
        };
        fx.push(Effect::UseSettings(settings));
        if self.singleton() && !self.holds_lock {
            self.state = State::Starting { attempt };
            fx.push(Effect::TakeLock);
            return;
        }
        self.spawn(attempt, fx);
    }

    fn spawn(&mut self, attempt: u32, fx: &mut Fx) {
        let Some(settings) = self.def.settings.clone() else {
            self.state = State::Idle;
            return;
        };
        self.status.status = ContinuousState::Starting;
        fx.push(Effect::Publish);
        self.active = Some(Active {
            settings: settings.clone(),
            fingerprint: self.def.fingerprint,
        });
        self.state = State::Starting { attempt };
        fx.push(Effect::Start(settings));
    }

    /// The stop sequence when a run is going, then `then`.
    fn stop_then(&mut self, why: &str, then: Then, fx: &mut Fx) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Running { run, .. } | State::Exiting { run, .. } => {
                self.status.status = ContinuousState::Stopping;
                self.status.detailed_status = format!("stopping: {why}");
                fx.push(Effect::Publish);
                self.state = State::Stopping { run, then };
                fx.push(Effect::Stop {
                    why: why.to_string(),
                    grace: self.grace(),
                });
            }
            _ => self.after_stop(then, fx),
        }
    }

    fn after_stop(&mut self, then: Then, fx: &mut Fx) {
        self.state = State::Idle;
        match then {
            Then::Start => self.start(0, fx),
            Then::Disable => self.disable(fx),
            Then::ShowError => self.show_error(fx),
            Then::Remove => {
                self.release_lock(fx);
                fx.push(Effect::ForgetJob);
                self.state = State::Ended;
                self.set_idle(ContinuousState::Stopped, "job folder removed", fx);
            }
            Then::Shutdown => {
                self.state = State::Ended;
                self.set_idle(ContinuousState::Stopped, "host stopped", fx);
            }
            Then::WaitLock { retry_at } => {
                self.release_lock(fx);
                self.wait_lock(retry_at, 0, fx);
            }
        }
    }

    /// Another host holds the singleton: ask again at `retry_at`.
    fn clear_lock_error(&mut self) {
        if let Some(why) = self.lock_error.take()
            && self.status.error.as_ref() == Some(&why)
        {
            self.status.error = None;
        }
    }

    fn wait_lock(&mut self, retry_at: Instant, attempt: u32, fx: &mut Fx) {
        self.state = State::WaitingLock { retry_at, attempt };
        self.status.status = ContinuousState::InactiveInstance;
        self.status.detailed_status = format!(
            "singleton: another host holds it; asking again every {} s",
            LOCK_RETRY.as_secs()
        );
        self.status.pid = None;
        fx.push(Effect::Publish);
    }

    fn disable(&mut self, fx: &mut Fx) {
        self.release_lock(fx);
        self.state = State::Disabled;
        self.set_idle(
            ContinuousState::Stopped,
            "disabled: disable.job is present",
            fx,
        );
    }

    fn release_lock(&mut self, fx: &mut Fx) {
        self.holds_lock = false;
        fx.push(Effect::ReleaseLock);
    }

    fn show_error(&mut self, fx: &mut Fx) {
        let text = self.def.errors.join("; ");
        if self.shown_error.as_deref() != Some(text.as_str()) {
            fx.push(host_log(
                Level::Error,
                format!("continuous job {}: {text}", self.def.name),
            ));
            for e in &self.def.errors {
                fx.push(note(None, true, &format!("settings error: {e}")));
            }
            self.shown_error = Some(text.clone());
        }
        self.status.error = Some(text.clone());
        self.status.problems = self.def.problems.clone();
        if !matches!(self.state, State::Running { .. }) {
            self.state = State::Error { reason: text };
            self.set_idle(
                ContinuousState::Error,
                "the job folder has errors; fix them and the job starts",
                fx,
            );
        }
    }

    fn show_unrunnable(&mut self, fx: &mut Fx) {
        if let State::Unrunnable { reason, .. } = &self.state {
            self.status.error = Some(reason.clone());
        }
        self.set_idle(
            ContinuousState::Error,
            "its program cannot be executed; fix the job's files and it starts",
            fx,
        );
    }

    /// The run's exit in the status (the runner has written it to the log).
    fn note_exit(&mut self, exit: Exit, now: Now, fx: &mut Fx) {
        let (code, signal) = crate::job::code_and_signal(exit);
        self.status.last_exit = Some(LastExit {
            code,
            signal,
            at: now.wall,
        });
        self.status.pid = None;
        fx.push(host_log(Level::Info, exit.to_string()));
    }

    fn schedule_restart(
        &mut self,
        run: RunId,
        ran_for: Duration,
        attempt: u32,
        now: Now,
        fx: &mut Fx,
    ) {
        let (base, max) = self
            .active
            .as_ref()
            .map(|a| &a.settings)
            .or(self.def.settings.as_ref())
            .map(|s| (s.restart_delay, s.restart_max_delay))
            .unwrap_or_else(|| {
                let d = JobSettings::default();
                (d.restart_delay, d.restart_max_delay)
            });
        let (delay, attempt) = backoff::after_exit(base, max, attempt, ran_for);
        self.status.restarts += 1;
        self.state = State::Backoff {
            until: now.at + delay,
            attempt,
        };
        let secs = trim_float(delay.as_secs_f64());
        fx.push(note(Some(run), false, &format!("restart in {secs} s")));
        self.status.status = ContinuousState::PendingRestart;
        let at = now.wall + chrono::Duration::from_std(delay).unwrap_or_default();
        self.status.next_restart_at = Some(at);
        self.status.detailed_status = format!(
            "in restart backoff until {} (quick exit number {attempt})",
            rfc3339_string(at),
        );
        fx.push(Effect::Publish);
    }

    fn set_idle(&mut self, state: ContinuousState, why: &str, fx: &mut Fx) {
        self.status.status = state;
        self.status.detailed_status = why.to_string();
        self.status.pid = None;
        self.status.next_restart_at = None;
        fx.push(Effect::Publish);
    }
}

fn note(run: Option<RunId>, error: bool, text: &str) -> Effect {
    Effect::Note {
        run,
        error,
        text: text.to_string(),
    }
}

fn host_log(level: Level, text: String) -> Effect {
    Effect::HostLog { level, text }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
