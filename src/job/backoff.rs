//! Restart backoff for continuous jobs: `restart_delay`, doubling on each quick exit,
//! capped at `restart_max_delay`, reset by a run that lasted longer than the cap.
//!
//! No wait is shorter than [`MIN_DELAY`], whatever the settings say: with
//! `restart_delay: 0` a job that exits at once was restarted 3,000 times in 10 s, a
//! fork storm that starved every other job. The floor also doubles, so a zero delay
//! still backs off (0.1 s, 0.2 s, 0.4 s, ... up to `restart_max_delay`).
//!
//! Hand-written on purpose: a pure doubling function is shorter than any dependency
//! and is tested as a table.

use std::time::Duration;

/// The shortest wait before a restart, and the base of the doubling when
/// `restart_delay` is shorter.
pub const MIN_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// Quick exits in a row so far.
    pub attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The wait before restart number `attempt` (0-based) of a streak: never below
    /// [`MIN_DELAY`], even when `max` is.
    pub fn delay(base: Duration, max: Duration, attempt: u32) -> Duration {
        let (base, max) = (base.max(MIN_DELAY), max.max(MIN_DELAY));
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        base.checked_mul(factor).unwrap_or(max).min(max)
    }

    /// Records an exit after a run of `ran_for` and returns the wait before restarting.
    pub fn after_exit(&mut self, ran_for: Duration) -> Duration {
        let (d, attempt) = after_exit(self.base, self.max, self.attempt, ran_for);
        self.attempt = attempt;
        d
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// An exit after a run of `ran_for`, with `attempt` quick exits before it: the wait
/// before restarting, and the quick exits counting this one. A run longer than
/// `max` starts a new streak.
pub fn after_exit(
    base: Duration,
    max: Duration,
    attempt: u32,
    ran_for: Duration,
) -> (Duration, u32) {
    let attempt = if ran_for > max { 0 } else { attempt };
    (
        Backoff::delay(base, max, attempt),
        attempt.saturating_add(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn delay_table() {
        let cases = [
            (S(1), S(60), 0, S(1)),
            (S(1), S(60), 1, S(2)),
            (S(1), S(60), 5, S(32)),
            (S(1), S(60), 6, S(60)),
            (S(1), S(60), 40, S(60)),
            // The floor: a zero delay still waits, and still doubles.
            (S(0), S(60), 0, MS(100)),
            (S(0), S(60), 1, MS(200)),
            (S(0), S(60), 3, MS(800)),
            (S(0), S(60), 10, S(60)),
            (MS(10), S(60), 0, MS(100)),
            (S(0), S(0), 0, MS(100)),
            (S(0), S(0), 9, MS(100)),
            (MS(150), S(60), 1, MS(300)),
            (S(5), S(3), 0, S(3)),
            (Duration::from_millis(250), S(1), 2, S(1)),
        ];
        for (base, max, attempt, want) in cases {
            assert_eq!(
                Backoff::delay(base, max, attempt),
                want,
                "{base:?} {max:?} {attempt}"
            );
        }
    }

    #[test]
    fn quick_exits_double_and_a_long_run_resets() {
        let mut b = Backoff::new(S(1), S(10));
        // (ran for, expected wait)
        let script = [
            (S(0), S(1)),
            (S(2), S(2)),
            (S(3), S(4)),
            (S(1), S(8)),
            (S(10), S(10)), // exactly the cap is still quick
            (S(11), S(1)),  // longer than the cap: reset
            (S(0), S(2)),
        ];
        for (i, (ran, want)) in script.into_iter().enumerate() {
            assert_eq!(b.after_exit(ran), want, "step {i}");
        }
    }

    /// The restart loop on paused time: months of crash-restart cycles cost nothing,
    /// and the waits add up to exactly what the policy says.
    #[tokio::test(start_paused = true)]
    async fn paused_time_restart_loop_waits_exactly_the_policy() {
        let mut b = Backoff::new(S(1), S(60));
        let start = tokio::time::Instant::now();
        let mut expected = Duration::ZERO;
        for _ in 0..10_000 {
            let d = b.after_exit(Duration::ZERO);
            expected += d;
            tokio::time::sleep(d).await;
        }
        assert_eq!(start.elapsed(), expected);
        // 1+2+4+8+16+32 then 60 s for the remaining 9,994 restarts.
        assert_eq!(expected, S(63 + 60 * 9_994));
    }

    /// `restart_delay: 0` on a job that exits at once: 3,000 restarts in 10 s before
    /// the floor; now a handful, and each wait at least the floor.
    #[tokio::test(start_paused = true)]
    async fn zero_restart_delay_is_floored_on_paused_time() {
        let mut b = Backoff::new(S(0), S(60));
        let start = tokio::time::Instant::now();
        let mut restarts = 0;
        while start.elapsed() < S(10) {
            let d = b.after_exit(Duration::ZERO);
            assert!(d >= MIN_DELAY, "wait {d:?} below the floor");
            tokio::time::sleep(d).await;
            restarts += 1;
        }
        // 0.1 + 0.2 + ... + 6.4 = 12.7 s: seven restarts cover the first 10 s.
        assert_eq!(restarts, 7);
    }
}
