//! What the end of a message's run means for the message, and when a failed one is
//! tried again: pure functions of the queue's settings, the attempt, how the run
//! ended and the time, so the retry schedule and the dead-letter rule are tested on
//! their own (months of retries in microseconds).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Settlement;
use crate::runner::Exit;
use crate::spec::settings::queue::QueueSettings;

/// `EX_DATAERR`: the run says this message can never succeed.
pub const EXIT_NEVER: i32 = 65;

/// How a message's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The process exited; `last_stderr` is its last stderr line, if any.
    Exited {
        exit: Exit,
        last_stderr: Option<String>,
    },
    /// The host stopped it: `why` is the abort reason (timeout, idle timeout…).
    Aborted { why: String },
    /// The host is shutting down gracefully: not the message's fault.
    HostStopping,
    /// Cancelled through the API or CLI.
    Cancelled,
    /// The process could not be started.
    StartFailed { why: String },
    /// The host running it died (found when a host started).
    HostDied,
}

/// The delay before attempt `attempts + 1`, after `attempts` failed ones (>= 1):
/// `retry_delay` doubled per failed attempt after the first, capped at
/// `retry_max_delay`, then lengthened by `jitter` (0.0 to 1.0) times 10%, so
/// messages that failed together do not all come back in the same instant.
pub fn retry_delay(q: &QueueSettings, attempts: u32, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(40);
    let base = q
        .retry_delay
        .checked_mul(1u32 << doublings.min(31))
        .and_then(|d| match doublings > 31 {
            true => None,
            false => Some(d),
        })
        .unwrap_or(q.retry_max_delay)
        .min(q.retry_max_delay);
    base + base.mul_f64(0.1 * jitter.clamp(0.0, 1.0))
}

/// What becomes of a message whose attempt number `attempts` (1 on the first)
/// ended as `end`, with the run's `result` (from `WEBJOBS_RESULT_PATH`).
pub fn settle(
    q: &QueueSettings,
    attempts: u32,
    end: RunEnd,
    result: Option<Vec<u8>>,
    now: DateTime<Utc>,
    jitter: f64,
) -> Settlement {
    let error = match end {
        RunEnd::Exited { exit, .. } if exit.success() => {
            return Settlement::Succeeded { result };
        }
        RunEnd::HostStopping => return Settlement::Released,
        RunEnd::Cancelled => {
            return Settlement::Cancelled {
                error: "cancelled".into(),
            };
        }
        RunEnd::Exited {
            exit: Exit::Code(EXIT_NEVER),
            last_stderr,
        } => {
            return Settlement::Dead {
                error: with_stderr(
                    format!("exited with code {EXIT_NEVER} (the message can never succeed)"),
                    last_stderr,
                ),
                result,
            };
        }
        RunEnd::Exited { exit, last_stderr } => with_stderr(exit.to_string(), last_stderr),
        RunEnd::Aborted { why } => why,
        RunEnd::StartFailed { why } => format!("could not start: {why}"),
        RunEnd::HostDied => "the host running it stopped unexpectedly".into(),
    };
    if attempts >= q.max_attempts {
        return Settlement::Dead {
            error: format!("{error} (attempt {attempts} of {})", q.max_attempts),
            result,
        };
    }
    let delay = retry_delay(q, attempts, jitter);
    let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    Settlement::Retry {
        at,
        error: format!("{error} (attempt {attempts} of {})", q.max_attempts),
    }
}

fn with_stderr(head: String, last_stderr: Option<String>) -> String {
    match last_stderr {
        Some(line) if !line.trim().is_empty() => format!("{head}: {}", line.trim()),
        _ => head,
    }
}

/// Whether an idempotency key first seen at `seen` is still remembered at `now`.
pub fn remembered(seen: DateTime<Utc>, window: Duration, now: DateTime<Utc>) -> bool {
    now.signed_duration_since(seen)
        .to_std()
        .map(|age| age < window)
        .unwrap_or(true)
}

/// A jitter in 0.0..1.0 for [`retry_delay`], from the message id and attempt: the
/// same message retried on two hosts gets the same delay, different messages differ.
pub fn jitter_for(id: &str, attempts: u32) -> f64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    attempts.hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q() -> QueueSettings {
        QueueSettings::default()
    }

    fn secs(d: Duration) -> u64 {
        d.as_secs()
    }

    #[test]
    fn the_delay_doubles_from_retry_delay_and_stops_at_the_cap() {
        let q = q();
        let table = [
            (1, 10),
            (2, 20),
            (3, 40),
            (4, 80),
            (9, 2560),
            (10, 3600),
            (50, 3600),
            (u32::MAX, 3600),
        ];
        for (attempts, want) in table {
            assert_eq!(
                secs(retry_delay(&q, attempts, 0.0)),
                want,
                "attempt {attempts}"
            );
        }
    }

    #[test]
    fn jitter_adds_at_most_ten_percent() {
        let q = q();
        assert_eq!(retry_delay(&q, 1, 1.0), Duration::from_secs(11));
        assert_eq!(retry_delay(&q, 1, 0.5), Duration::from_secs_f64(10.5));
        assert_eq!(retry_delay(&q, 1, 7.0), Duration::from_secs(11), "clamped");
        for id in ["a", "b", "c", "0123456789abcdef"] {
            let j = jitter_for(id, 1);
            assert!((0.0..1.0).contains(&j));
            assert_eq!(j, jitter_for(id, 1));
        }
        assert_ne!(jitter_for("a", 1), jitter_for("b", 1));
    }

    #[test]
    fn a_zero_retry_delay_retries_at_once() {
        let q = QueueSettings {
            retry_delay: Duration::ZERO,
            ..q()
        };
        assert_eq!(retry_delay(&q, 3, 1.0), Duration::ZERO);
    }

    fn exited(code: i32) -> RunEnd {
        RunEnd::Exited {
            exit: Exit::Code(code),
            last_stderr: Some("disk on fire".into()),
        }
    }

    #[test]
    fn outcomes_table() {
        let now = Utc::now();
        let q = q();
        let s = |attempts, end| settle(&q, attempts, end, Some(b"r".to_vec()), now, 0.0);
        assert_eq!(
            s(1, exited(0)),
            Settlement::Succeeded {
                result: Some(b"r".to_vec())
            }
        );
        match s(1, exited(65)) {
            Settlement::Dead { error, .. } => {
                assert!(
                    error.contains("65") && error.contains("disk on fire"),
                    "{error}"
                )
            }
            other => panic!("{other:?}"),
        }
        match s(1, exited(1)) {
            Settlement::Retry { at, error } => {
                assert_eq!(at, now + chrono::Duration::seconds(10));
                assert!(
                    error.contains("exited with code 1: disk on fire"),
                    "{error}"
                );
                assert!(error.contains("attempt 1 of 5"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        match s(
            2,
            RunEnd::Aborted {
                why: "timeout (30 s)".into(),
            },
        ) {
            Settlement::Retry { at, error } => {
                assert_eq!(at, now + chrono::Duration::seconds(20));
                assert!(error.starts_with("timeout"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        match s(5, exited(1)) {
            Settlement::Dead { error, .. } => assert!(error.contains("attempt 5 of 5"), "{error}"),
            other => panic!("{other:?}"),
        }
        match s(
            1,
            RunEnd::Exited {
                exit: Exit::Signal(9),
                last_stderr: None,
            },
        ) {
            Settlement::Retry { error, .. } => assert!(error.contains("signal 9"), "{error}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s(5, RunEnd::HostDied), Settlement::Dead { .. }));
        assert!(matches!(s(2, RunEnd::HostDied), Settlement::Retry { .. }));
        assert!(matches!(
            s(3, RunEnd::StartFailed { why: "x".into() }),
            Settlement::Retry { .. }
        ));
        assert_eq!(
            s(5, RunEnd::HostStopping),
            Settlement::Released,
            "never counts"
        );
        assert!(matches!(
            s(1, RunEnd::Cancelled),
            Settlement::Cancelled { .. }
        ));
    }

    #[test]
    fn a_message_failing_every_time_is_dead_after_max_attempts_with_the_documented_gaps() {
        // Months of retries on a made-up clock: no time passes in the test.
        let q = QueueSettings {
            max_attempts: 12,
            ..q()
        };
        let mut now = Utc::now();
        let mut gaps = Vec::new();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match settle(&q, attempts, exited(1), None, now, 0.0) {
                Settlement::Retry { at, .. } => {
                    gaps.push((at - now).num_seconds());
                    now = at;
                }
                Settlement::Dead { .. } => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(attempts, 12);
        assert_eq!(
            gaps,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
    }

    #[test]
    fn keys_are_remembered_within_the_window_only() {
        let seen = Utc::now();
        let w = Duration::from_secs(60);
        assert!(remembered(seen, w, seen));
        assert!(remembered(seen, w, seen + chrono::Duration::seconds(59)));
        assert!(!remembered(seen, w, seen + chrono::Duration::seconds(60)));
        assert!(
            remembered(seen, w, seen - chrono::Duration::seconds(5)),
            "clock went back"
        );
    }
}
