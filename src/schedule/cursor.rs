//! When a triggered job fires: the schedule cursor and the clock it reads.
//!
//! The cursor remembers the last occurrence it fired and, whenever it is polled,
//! recomputes from the wall clock. That one rule covers waking on time, waking late
//! (a busy machine), the wall clock stepping forward (NTP, resume from suspend) or
//! back, and a host that was down: every occurrence fires at most once; of the ones
//! that passed unseen, the latest fires once if it is at most [`CATCH_UP`] old (as
//! Kudu does after a restart) and the rest are reported as missed. Sleeps are capped
//! at [`MAX_SLEEP`] so a wall-clock jump is noticed within that time.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Schedule;

/// How old a passed occurrence may be and still run once.
pub const CATCH_UP: Duration = Duration::from_secs(600);
/// Longest sleep before looking at the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(10);
/// Counting missed occurrences stops here (an every-second schedule down for a month).
const COUNT_CAP: u64 = 100_000;

/// Wall time, injectable so the scheduler can be tested on paused tokio time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that follows tokio's (pausable) clock from a chosen start, and can be
/// made to jump like a real one under NTP.
pub struct ManualClock {
    start_wall: DateTime<Utc>,
    start: tokio::time::Instant,
    jumped: Mutex<chrono::Duration>,
}

impl ManualClock {
    pub fn starting_at(wall: DateTime<Utc>) -> ManualClock {
        ManualClock {
            start_wall: wall,
            start: tokio::time::Instant::now(),
            jumped: Mutex::new(chrono::Duration::zero()),
        }
    }

    /// Steps the wall clock (negative: back) without any time passing.
    pub fn jump(&self, by: chrono::Duration) {
        let mut j = self.jumped.lock().unwrap_or_else(|e| e.into_inner());
        *j += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.start.elapsed()).unwrap_or_default();
        let j = *self.jumped.lock().unwrap_or_else(|e| e.into_inner());
        self.start_wall + elapsed + j
    }
}

/// What the cursor says at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Nothing due before this time.
    Wait(DateTime<Utc>),
    /// Fire the occurrence `at` now; `skipped` earlier ones passed unseen.
    Fire { at: DateTime<Utc>, skipped: u64 },
    /// Occurrences passed unseen and the latest of them is too old to run.
    Missed { latest: DateTime<Utc>, count: u64 },
    /// The schedule has no future occurrence.
    Never,
}

#[derive(Debug, Clone)]
pub struct Cursor {
    schedule: Schedule,
    last_fired: DateTime<Utc>,
    /// The occurrence after `last_fired`, computed once per fire rather than per wake.
    upcoming: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    max_sleep: Duration,
}

impl Cursor {
    /// `last_fired` is the persisted last occurrence; a job never fired before starts
    /// counting from `now` (its past is not owed).
    pub fn new(
        schedule: Schedule,
        last_fired: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Cursor {
        Cursor {
            schedule,
            last_fired: last_fired.unwrap_or(now),
            upcoming: None,
            max_sleep: MAX_SLEEP,
        }
    }

    /// Longer sleeps make paused-time tests over years fast; jumps are then noticed later.
    pub fn with_max_sleep(mut self, d: Duration) -> Cursor {
        self.max_sleep = d;
        self
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The next occurrence to fire (it may already be due).
    pub fn peek_next(&mut self) -> Option<DateTime<Utc>> {
        match self.upcoming {
            Some((after, next)) if after == self.last_fired => next,
            _ => {
                let next = self.schedule.next_after(self.last_fired);
                self.upcoming = Some((self.last_fired, next));
                next
            }
        }
    }

    pub fn poll(&mut self, now: DateTime<Utc>) -> Poll {
        let Some(first) = self.peek_next() else {
            return Poll::Never;
        };
        if first > now {
            return Poll::Wait(first);
        }
        let latest = self
            .schedule
            .prev_at_or_before(now)
            .map_or(first, |p| p.max(first));
        let mut skipped = 0;
        let mut t = first;
        while t < latest && skipped < COUNT_CAP {
            skipped += 1;
            match self.schedule.next_after(t) {
                Some(n) => t = n,
                None => break,
            }
        }
        self.last_fired = latest;
        let age = (now - latest).to_std().unwrap_or_default();
        if age <= CATCH_UP {
            Poll::Fire {
                at: latest,
                skipped,
            }
        } else {
            Poll::Missed {
                latest,
                count: skipped + 1,
            }
        }
    }

    /// Sleeps until something is due and returns it (never `Wait`).
    pub async fn next(&mut self, clock: &dyn Clock) -> Poll {
        loop {
            let now = clock.now();
            match self.poll(now) {
                Poll::Wait(at) => {
                    let d = (at - now).to_std().unwrap_or_default().min(self.max_sleep);
                    tokio::time::sleep(d).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn sched(expr: &str, tz: &str) -> Schedule {
        Schedule::parse(expr, crate::schedule::parse_timezone(tz).unwrap()).unwrap()
    }

    #[test]
    fn poll_table() {
        let s = sched("0 */5 * * * *", "UTC");
        let base = utc(2026, 1, 1, 10, 0, 0);
        // (last fired, now) -> poll
        let cases = [
            (
                base,
                base + chrono::Duration::seconds(10),
                Poll::Wait(utc(2026, 1, 1, 10, 5, 0)),
            ),
            (
                base,
                utc(2026, 1, 1, 10, 5, 0) + chrono::Duration::milliseconds(3),
                Poll::Fire {
                    at: utc(2026, 1, 1, 10, 5, 0),
                    skipped: 0,
                },
            ),
            // Woke 12 minutes late: 10:05 and 10:10 passed; 10:10 is young enough.
            (
                base,
                utc(2026, 1, 1, 10, 12, 0),
                Poll::Fire {
                    at: utc(2026, 1, 1, 10, 10, 0),
                    skipped: 1,
                },
            ),
            // Down for two hours: the 12:00 occurrence is a minute old and runs once;
            // the 23 before it are reported.
            (
                base,
                utc(2026, 1, 1, 12, 1, 0),
                Poll::Fire {
                    at: utc(2026, 1, 1, 12, 0, 0),
                    skipped: 23,
                },
            ),
            // The wall clock went back before the last fire: nothing is fired twice.
            (
                base,
                utc(2026, 1, 1, 9, 30, 0),
                Poll::Wait(utc(2026, 1, 1, 10, 5, 0)),
            ),
        ];
        for (last, now, want) in cases {
            let mut c = Cursor::new(s.clone(), Some(last), now);
            assert_eq!(c.poll(now), want, "last {last} now {now}");
        }
    }

    #[test]
    fn an_occurrence_older_than_the_catch_up_window_is_missed_not_run() {
        let s = sched("0 0 * * * *", "UTC");
        let mut c = Cursor::new(
            s,
            Some(utc(2026, 1, 1, 10, 0, 0)),
            utc(2026, 1, 1, 12, 30, 0),
        );
        let want = Poll::Missed {
            latest: utc(2026, 1, 1, 12, 0, 0),
            count: 2,
        };
        assert_eq!(c.poll(utc(2026, 1, 1, 12, 30, 0)), want);
        // Missed once is missed for good: the next poll waits for 13:00.
        assert_eq!(
            c.poll(utc(2026, 1, 1, 12, 30, 1)),
            Poll::Wait(utc(2026, 1, 1, 13, 0, 0))
        );
    }

    #[test]
    fn a_new_job_owes_nothing_from_the_past() {
        let s = sched("* * * * * *", "UTC");
        let now = utc(2026, 5, 1, 0, 0, 0) + chrono::Duration::milliseconds(500);
        let mut c = Cursor::new(s, None, now);
        assert_eq!(c.poll(now), Poll::Wait(utc(2026, 5, 1, 0, 0, 1)));
    }

    /// Three months of a 5-minute schedule on paused time: every occurrence exactly
    /// once, none late, in milliseconds of real time.
    #[tokio::test(start_paused = true)]
    async fn months_of_fires_on_paused_time() {
        let start = utc(2026, 1, 1, 0, 0, 0);
        let clock = ManualClock::starting_at(start);
        let mut c = Cursor::new(sched("0 */5 * * * *", "UTC"), None, start)
            .with_max_sleep(Duration::from_secs(3600));
        let mut fired = Vec::new();
        let end = utc(2026, 4, 1, 0, 0, 0);
        while clock.now() < end {
            match c.next(&clock).await {
                Poll::Fire { at, skipped } => {
                    assert_eq!(skipped, 0);
                    assert_eq!(clock.now(), at, "fires on its second");
                    fired.push(at);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(fired.len(), 90 * 24 * 12);
        assert!(
            fired
                .windows(2)
                .all(|w| w[1] - w[0] == chrono::Duration::minutes(5))
        );
    }

    /// A DST year in Lisbon for a daily 01:30 local schedule: 01:30 does not exist on
    /// the spring-forward day and happens twice on the fall-back day; either way it
    /// fires exactly once a day.
    #[tokio::test(start_paused = true)]
    async fn dst_days_fire_once_per_local_day() {
        let start = utc(2026, 1, 1, 0, 0, 0);
        let clock = ManualClock::starting_at(start);
        let s = sched("0 30 1 * * *", "Europe/Lisbon");
        let tz = s.timezone();
        let mut c = Cursor::new(s, None, start).with_max_sleep(Duration::from_secs(3600));
        let mut days = std::collections::BTreeSet::new();
        let mut n = 0;
        loop {
            let fired = c.next(&clock).await;
            if clock.now() >= utc(2027, 1, 1, 0, 0, 0) {
                break;
            }
            if let Poll::Fire { at, .. } = fired {
                assert!(
                    days.insert(at.with_timezone(&tz).date_naive()),
                    "twice on {at}"
                );
                n += 1;
            }
        }
        assert_eq!(n, 365);
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clock_jumps_neither_repeat_nor_lose_more_than_they_must() {
        let start = utc(2026, 3, 1, 12, 0, 0);
        let clock = ManualClock::starting_at(start);
        let mut c = Cursor::new(sched("0 * * * * *", "UTC"), None, start);
        let mut fired = Vec::new();
        for _ in 0..3 {
            if let Poll::Fire { at, .. } = c.next(&clock).await {
                fired.push(at);
            }
        }
        // Back one hour: the minutes already fired must not fire again.
        clock.jump(chrono::Duration::hours(-1));
        for _ in 0..3 {
            if let Poll::Fire { at, .. } = c.next(&clock).await {
                fired.push(at);
            }
        }
        let mut sorted = fired.clone();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            fired.len(),
            "an occurrence fired twice: {fired:?}"
        );
        assert!(fired.windows(2).all(|w| w[1] > w[0]));
        // Forward 5 minutes: the latest passed minute fires once, 4 are reported skipped.
        clock.jump(chrono::Duration::minutes(5) + chrono::Duration::hours(1));
        let now = clock.now();
        match c.next(&clock).await {
            Poll::Fire { at, skipped } => {
                assert!(at <= now && now - at < chrono::Duration::minutes(1));
                assert!(skipped >= 4, "skipped {skipped}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
