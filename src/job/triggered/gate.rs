//! The one gate every triggered run goes through, manual or scheduled, pure: the
//! overlap rule, then the `run.lock` shared by every host on these LOGS, then (for a
//! scheduled fire) the persisted last fire, so each occurrence runs on one host only.
//!
//! The gate cannot read the lock itself: it answers [`Verdict::AskLock`], the task
//! takes the lock (and reads the last fire), and asks again with the answer in
//! [`Ask::lock`].

use chrono::{DateTime, Utc};

use crate::job::TriggerError;
use crate::spec::settings::Overlap;

/// What the gate decides from.
#[derive(Debug, Clone)]
pub struct Ask {
    pub job: String,
    /// Nothing starts once the host is stopping: it would be stopped at once, or left
    /// `Running` by a host that exits.
    pub host_stopping: bool,
    /// Why the job's folder cannot run, when it cannot.
    pub invalid: Option<String>,
    pub overlap: Overlap,
    /// The run going on.
    pub running: Option<String>,
    /// A run is already queued behind it.
    pub queued: bool,
    /// The occurrence a scheduled fire is for; `None` for a manual trigger.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// The run lock's answer, once asked.
    pub lock: Option<Lock>,
}

/// The run lock's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    /// Another host holds it.
    Busy,
    /// The cluster store, which holds it, cannot be asked: why.
    Unavailable(String),
    /// Taken (or not needed: a host alone on its LOGS). `last_fired` is the
    /// occurrence last fired by any host, read under the lock when hosts share LOGS
    /// and the run is a scheduled fire.
    Taken { last_fired: Option<DateTime<Utc>> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not run. `record_fire`: the occurrence still counts as fired (persisted), so
    /// a restart does not fire it again.
    Refuse {
        error: TriggerError,
        record_fire: Option<DateTime<Utc>>,
    },
    /// Kept as the one pending run behind `behind` (`overlap: "queue"`).
    Queue { behind: String },
    /// Take the run lock, then ask again.
    AskLock,
    /// Start the run (under the lock taken).
    Start,
}

pub fn gate(ask: &Ask) -> Verdict {
    let job = ask.job.clone();
    let refuse = |error| Verdict::Refuse {
        error,
        record_fire: None,
    };
    if ask.host_stopping {
        return refuse(TriggerError::Gone { job });
    }
    if let Some(reason) = &ask.invalid {
        return refuse(TriggerError::Invalid {
            job,
            reason: reason.clone(),
        });
    }
    if let Some(run_id) = &ask.running {
        return match (ask.overlap, ask.queued) {
            (Overlap::Queue, false) => Verdict::Queue {
                behind: run_id.clone(),
            },
            (Overlap::Queue, true) => Verdict::Refuse {
                error: TriggerError::QueueFull { job },
                record_fire: ask.scheduled_for,
            },
            (Overlap::Skip, _) => Verdict::Refuse {
                error: TriggerError::Busy {
                    job,
                    run_id: run_id.clone(),
                },
                record_fire: ask.scheduled_for,
            },
        };
    }
    match &ask.lock {
        None => Verdict::AskLock,
        Some(Lock::Busy) => refuse(TriggerError::LockedElsewhere { job }),
        // Not "another host": nobody can say which host may run it.
        Some(Lock::Unavailable(reason)) => refuse(TriggerError::StoreAway {
            job,
            reason: reason.clone(),
        }),
        // Another host fired this occurrence and already finished.
        Some(Lock::Taken {
            last_fired: Some(last),
        }) if ask.scheduled_for.is_some_and(|at| *last >= at) => {
            refuse(TriggerError::LockedElsewhere { job })
        }
        Some(Lock::Taken { .. }) => Verdict::Start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, min, 0)
            .single()
            .unwrap_or_default()
    }

    fn ask() -> Ask {
        Ask {
            job: "j".into(),
            host_stopping: false,
            invalid: None,
            overlap: Overlap::Skip,
            running: None,
            queued: false,
            scheduled_for: None,
            lock: None,
        }
    }

    #[test]
    fn gate_table() {
        let busy = |a: Ask| Ask {
            running: Some("r1".into()),
            ..a
        };
        let queue = |a: Ask| Ask {
            overlap: Overlap::Queue,
            ..a
        };
        let fire = |a: Ask| Ask {
            scheduled_for: Some(at(5)),
            ..a
        };
        let taken = |last: Option<DateTime<Utc>>| Some(Lock::Taken { last_fired: last });
        let refuse = |error, record_fire| Verdict::Refuse { error, record_fire };
        let j = || "j".to_string();
        let cases: Vec<(&str, Ask, Verdict)> = vec![
            ("idle manual: take the lock", ask(), Verdict::AskLock),
            (
                "idle manual, lock taken",
                Ask {
                    lock: taken(None),
                    ..ask()
                },
                Verdict::Start,
            ),
            (
                "lock held by another host",
                Ask {
                    lock: Some(Lock::Busy),
                    ..fire(ask())
                },
                refuse(TriggerError::LockedElsewhere { job: j() }, None),
            ),
            (
                "the store cannot be asked: not fired, not \"elsewhere\"",
                Ask {
                    lock: Some(Lock::Unavailable("down".into())),
                    ..fire(ask())
                },
                refuse(
                    TriggerError::StoreAway {
                        job: j(),
                        reason: "down".into(),
                    },
                    None,
                ),
            ),
            (
                "fire already fired elsewhere",
                Ask {
                    lock: taken(Some(at(5))),
                    ..fire(ask())
                },
                refuse(TriggerError::LockedElsewhere { job: j() }, None),
            ),
            (
                "fire, last fire older: start",
                Ask {
                    lock: taken(Some(at(4))),
                    ..fire(ask())
                },
                Verdict::Start,
            ),
            (
                "manual ignores the last fire",
                Ask {
                    lock: taken(Some(at(59))),
                    ..ask()
                },
                Verdict::Start,
            ),
            (
                "skip: manual while busy",
                busy(ask()),
                refuse(
                    TriggerError::Busy {
                        job: j(),
                        run_id: "r1".into(),
                    },
                    None,
                ),
            ),
            (
                "skip: fire while busy is recorded fired",
                busy(fire(ask())),
                refuse(
                    TriggerError::Busy {
                        job: j(),
                        run_id: "r1".into(),
                    },
                    Some(at(5)),
                ),
            ),
            (
                "queue: one pending",
                busy(queue(fire(ask()))),
                Verdict::Queue {
                    behind: "r1".into(),
                },
            ),
            (
                "queue full: fire recorded fired",
                Ask {
                    queued: true,
                    ..busy(queue(fire(ask())))
                },
                refuse(TriggerError::QueueFull { job: j() }, Some(at(5))),
            ),
            (
                "queue full: manual",
                Ask {
                    queued: true,
                    ..busy(queue(ask()))
                },
                refuse(TriggerError::QueueFull { job: j() }, None),
            ),
            (
                "invalid before overlap",
                Ask {
                    invalid: Some("bad".into()),
                    ..busy(ask())
                },
                refuse(
                    TriggerError::Invalid {
                        job: j(),
                        reason: "bad".into(),
                    },
                    None,
                ),
            ),
            (
                "host stopping before anything",
                Ask {
                    host_stopping: true,
                    invalid: Some("bad".into()),
                    ..busy(ask())
                },
                refuse(TriggerError::Gone { job: j() }, None),
            ),
        ];
        for (what, ask, want) in cases {
            assert_eq!(gate(&ask), want, "{what}");
        }
    }
}
