//! The host log's own rules, on top of `tracing`: which targets speak, and how often
//! the same warning or error may be repeated.
//!
//! Dependencies log through `tracing` (and `log`, bridged) into the same host log. At
//! INFO they say things only their authors can read (notify: "unable to remove watch
//! descriptor from inotify ... Invalid argument" whenever a job folder is removed),
//! so they are held at WARN unless `JOBHOST_LOG` names them.
//!
//! A full disk made one error line 46,000 times in two seconds, which buried
//! everything else and filled what little disk was left. A warning or error with the
//! same text from the same place is shown once, then at most once per
//! [`REPEAT_WINDOW`], with "(repeated K times)" counting those held back since.
//!
//! The file itself is written by a thread of its own ([`HostLogFile`]): an event
//! logged on an async worker never waits on LOGS, which may be a slow or hung network
//! folder. `tracing-appender` does the same, but brings the `time` crate and a
//! rolling appender the host log does not use; this is one bounded channel.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// How long the same warning or error stays quiet after it was shown.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// Past this many distinct messages the limiter forgets the quiet ones, so a host
/// that logs many different errors does not grow without bound.
const MAX_REMEMBERED: usize = 1024;

/// The `EnvFilter` directives for `JOBHOST_LOG` (unset: `None`).
///
/// A bare level (`debug`) sets jobhost's own level and keeps dependencies at WARN;
/// anything else (`info,notify=debug`) is taken as written, for whoever wants a
/// dependency's own words.
pub fn directives(env: Option<&str>) -> String {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    match env.map(str::trim) {
        None | Some("") => "warn,jobhost=info".to_string(),
        Some(level) if LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) => {
            format!("warn,jobhost={}", level.to_ascii_lowercase())
        }
        Some(spec) => spec.to_string(),
    }
}

/// What the limiter says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Show it; `repeated` copies were held back since it was last shown.
    Show {
        repeated: u64,
    },
    Hold,
}

struct Seen {
    shown_at: Instant,
    held: u64,
}

/// Counts repeats of a key on a clock the caller gives, so tests drive time.
pub struct RepeatLimiter {
    window: Duration,
    seen: HashMap<(usize, String), Seen>,
}

impl RepeatLimiter {
    pub fn new(window: Duration) -> RepeatLimiter {
        RepeatLimiter {
            window,
            seen: HashMap::new(),
        }
    }

    /// `place` names where the message comes from (its call site), `text` what it says.
    pub fn check(&mut self, place: usize, text: &str, now: Instant) -> Verdict {
        if self.seen.len() >= MAX_REMEMBERED {
            let window = self.window;
            self.seen
                .retain(|_, s| now.saturating_duration_since(s.shown_at) < window);
        }
        let key = (place, text.to_string());
        match self.seen.get_mut(&key) {
            Some(s) if now.saturating_duration_since(s.shown_at) < self.window => {
                s.held += 1;
                Verdict::Hold
            }
            Some(s) => {
                let repeated = std::mem::take(&mut s.held);
                s.shown_at = now;
                Verdict::Show { repeated }
            }
            None => {
                self.seen.insert(
                    key,
                    Seen {
                        shown_at: now,
                        held: 0,
                    },
                );
                Verdict::Show { repeated: 0 }
            }
        }
    }
}

thread_local! {
    /// The verdict of the event being written on this thread: the guard decides in
    /// `event_enabled`, the formatters of the same event read it right after.
    static REPEATED: Cell<u64> = const { Cell::new(0) };
}

type Clock = Box<dyn Fn() -> Instant + Send + Sync>;

/// The layer that holds back repeated warnings and errors for every output.
pub struct RepeatGuard {
    limiter: Mutex<RepeatLimiter>,
    clock: Clock,
}

impl RepeatGuard {
    pub fn new(window: Duration) -> RepeatGuard {
        RepeatGuard::with_clock(window, Box::new(Instant::now))
    }

    /// For tests: time is what `clock` says.
    pub fn with_clock(window: Duration, clock: Clock) -> RepeatGuard {
        RepeatGuard {
            limiter: Mutex::new(RepeatLimiter::new(window)),
            clock,
        }
    }
}

/// All of an event's fields as one string: the message and its context (job name).
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={:?};", field.name(), value);
    }
}

impl<S: Subscriber> Layer<S> for RepeatGuard {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        REPEATED.set(0);
        let meta = event.metadata();
        // Lower levels are the normal story of the host; only trouble repeats.
        if *meta.level() > Level::WARN {
            return true;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        // The place: the call site's target, file, line and name. (Not the metadata's
        // address: events bridged from the `log` crate share one; their fields, in
        // the text, carry their own file and line.)
        let place = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (meta.target(), meta.file(), meta.line(), meta.name()).hash(&mut h);
            h.finish() as usize
        };
        let verdict = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(place, &text.0, (self.clock)());
        match verdict {
            Verdict::Hold => false,
            Verdict::Show { repeated } => {
                REPEATED.set(repeated);
                true
            }
        }
    }
}

/// Wraps a formatter to end a line with "(repeated K times)" when copies were held.
pub struct NoteRepeats<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for NoteRepeats<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let repeated = REPEATED.get();
        if repeated == 0 {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        writeln!(writer, "{line} (repeated {repeated} times)")
    }
}

/// Lines waiting for the host log's thread past which new ones are dropped (and
/// counted): the file is not taking them, and memory must not grow meanwhile.
const QUEUED_LINES: usize = 10_000;

/// The host log's writing end: formatted lines go to a thread that appends them to
/// the file. Cloned once per event (by the `tracing` layer); never blocks.
#[derive(Clone)]
pub struct HostLogFile {
    tx: SyncSender<Queued>,
    dropped: Arc<AtomicU64>,
}

enum Queued {
    Line(Vec<u8>),
    /// Answered once the lines queued before it are written.
    Flush(std::sync::mpsc::Sender<()>),
}

impl HostLogFile {
    /// Starts the thread that writes `file`.
    pub fn start(file: impl std::io::Write + Send + 'static) -> std::io::Result<HostLogFile> {
        Self::with_room(file, QUEUED_LINES)
    }

    fn with_room(
        file: impl std::io::Write + Send + 'static,
        room: usize,
    ) -> std::io::Result<HostLogFile> {
        let (tx, rx) = std::sync::mpsc::sync_channel(room);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        std::thread::Builder::new()
            .name("jobhost-hostlog".into())
            .spawn(move || write_lines(file, rx, &lost))?;
        Ok(HostLogFile { tx, dropped })
    }

    /// Waits, at most `within`, until the lines logged so far are in the file. False
    /// when they are not (the file hangs).
    pub fn flush(&self, within: Duration) -> bool {
        let (ack, done) = std::sync::mpsc::channel();
        let deadline = Instant::now() + within;
        let mut ask = Queued::Flush(ack);
        // The queue may be full: it drains while the file takes lines.
        loop {
            match self.tx.try_send(ask) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    ask = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

impl std::io::Write for HostLogFile {
    /// Queues `buf` (the `tracing` layer writes an event's whole line at once).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.tx.try_send(Queued::Line(buf.to_vec())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The thread: appends each line; after lines were dropped, says how many first.
fn write_lines(mut file: impl std::io::Write, rx: Receiver<Queued>, dropped: &AtomicU64) {
    for queued in rx {
        match queued {
            Queued::Line(line) => {
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
                    let _ = writeln!(
                        file,
                        "{now}  WARN {lost} host log lines were lost: the host log did not take them in time (a slow or hung logs folder)"
                    );
                }
                let _ = file.write_all(&line);
            }
            Queued::Flush(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file in memory.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
        }
    }

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A file that hangs: logging does not wait, the lines past the queue are dropped
    /// and counted, and once the file takes lines again the queued ones arrive in
    /// order, with the count of the dropped ones, then the lines logged since.
    #[test]
    fn a_host_log_that_hangs_never_holds_the_logger_and_counts_what_it_dropped() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let written = Buf::default();
        /// Waits for the gate before its first write: a file that hangs.
        struct Hung {
            gate: Option<std::sync::mpsc::Receiver<()>>,
            out: Buf,
        }
        impl std::io::Write for Hung {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if let Some(g) = self.gate.take() {
                    let _ = g.recv();
                }
                self.out.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let file = Hung {
            gate: Some(gate_rx),
            out: written.clone(),
        };
        let log = HostLogFile::with_room(file, 3).expect("thread");
        let mut w = log.clone();
        // The first line is taken by the thread (which then hangs), three wait, and
        // whatever else comes is dropped; none of these calls waits.
        for n in 0..50 {
            w.write_all(format!("line {n}\n").as_bytes())
                .expect("queued");
        }
        assert!(!log.flush(Duration::from_millis(50)), "the file hangs");
        let _ = gate_tx.send(());
        assert!(
            log.flush(Duration::from_secs(20)),
            "the file took the queue"
        );
        w.write_all(b"after\n").expect("queued");
        assert!(log.flush(Duration::from_secs(20)));
        let text = written.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 3, "{text}");
        let kept: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("line "))
            .collect();
        assert!(kept.len() < 50 && kept[0] == "line 0", "{text}");
        let numbers: Vec<usize> = kept.iter().map(|l| l[5..].parse().expect("n")).collect();
        assert!(numbers.windows(2).all(|p| p[0] < p[1]), "in order: {text}");
        let count: usize = lines
            .iter()
            .filter(|l| l.contains("host log lines were lost"))
            .map(|l| {
                l.split("WARN ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .expect("a number")
            })
            .sum();
        assert_eq!(count + kept.len(), 50, "every line kept or counted: {text}");
        assert_eq!(lines.last(), Some(&"after"), "{text}");
    }

    #[test]
    fn directives_keep_dependencies_at_warn() {
        let cases = [
            (None, "warn,jobhost=info"),
            (Some(""), "warn,jobhost=info"),
            (Some("info"), "warn,jobhost=info"),
            (Some("DEBUG"), "warn,jobhost=debug"),
            (Some(" trace "), "warn,jobhost=trace"),
            (Some("info,notify=debug"), "info,notify=debug"),
            (Some("jobhost=warn"), "jobhost=warn"),
        ];
        for (env, want) in cases {
            assert_eq!(directives(env), want, "{env:?}");
        }
    }

    #[test]
    fn a_repeated_message_is_shown_once_per_window_with_its_count() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut l = RepeatLimiter::new(Duration::from_secs(10));
        let show = |repeated| Verdict::Show { repeated };
        // (place, text, ms since start, verdict)
        let script = [
            (1, "disk full", 0, show(0)),
            (1, "disk full", 1, Verdict::Hold),
            (1, "disk full", 2, Verdict::Hold),
            // Another text, or the same text from another place, is its own story.
            (1, "other", 3, show(0)),
            (2, "disk full", 4, show(0)),
            (1, "disk full", 9_999, Verdict::Hold),
            // The window is over: shown, with the three held back.
            (1, "disk full", 10_000, show(3)),
            (1, "disk full", 10_001, Verdict::Hold),
            // Quiet for long: shown, counting the one held since.
            (1, "disk full", 60_000, show(1)),
            (1, "disk full", 80_000, show(0)),
        ];
        for (i, (place, text, ms, want)) in script.into_iter().enumerate() {
            assert_eq!(l.check(place, text, at(ms)), want, "step {i}");
        }
    }

    #[test]
    fn a_flood_of_one_error_gives_one_line_per_window() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::new(Duration::from_secs(10));
        // 46,000 lines in two seconds, as a full disk produced.
        let shown = (0..46_000u64)
            .filter(|i| {
                let now = t0 + Duration::from_micros(i * 2_000_000 / 46_000);
                l.check(7, "No space left on device", now) != Verdict::Hold
            })
            .count();
        assert_eq!(shown, 1);
        assert_eq!(
            l.check(7, "No space left on device", t0 + Duration::from_secs(12)),
            Verdict::Show { repeated: 45_999 }
        );
    }

    /// The whole path: the guard in a subscriber, the note on the line that follows a
    /// quiet window, other levels and messages untouched.
    #[test]
    fn a_subscriber_with_the_guard_writes_one_line_and_then_the_count() {
        use std::sync::Arc;
        use tracing_subscriber::layer::SubscriberExt;

        let now = Arc::new(Mutex::new(Instant::now()));
        let clock = {
            let now = now.clone();
            Box::new(move || *now.lock().unwrap_or_else(|e| e.into_inner()))
        };
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(RepeatGuard::with_clock(Duration::from_secs(10), clock))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .without_time()
                    .with_target(false)
                    .with_writer(move || writer.clone())
                    .map_event_format(NoteRepeats),
            );
        tracing::subscriber::with_default(subscriber, || {
            let full =
                |job: &str| tracing::error!(job, "writing status.json: No space left on device");
            for _ in 0..1000 {
                full("a");
            }
            full("b");
            for _ in 0..3 {
                tracing::info!("an info line is never held");
            }
            *now.lock().unwrap_or_else(|e| e.into_inner()) += Duration::from_secs(11);
            full("a");
        });
        let out = buf.text();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6, "{out}");
        assert!(
            lines[0].ends_with("No space left on device job=\"a\""),
            "{out}"
        );
        assert!(lines[1].contains("job=\"b\""), "{out}");
        assert!(!lines[1].contains("repeated"), "{out}");
        assert_eq!(
            out.matches("an info line is never held").count(),
            3,
            "{out}"
        );
        assert!(
            lines[5].ends_with("job=\"a\" (repeated 999 times)"),
            "{out}"
        );
    }

    #[test]
    fn the_limiter_forgets_quiet_messages_past_its_bound() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::new(Duration::from_secs(1));
        for i in 0..MAX_REMEMBERED * 3 {
            let now = t0 + Duration::from_secs(i as u64);
            assert_eq!(
                l.check(i, "x", now),
                Verdict::Show { repeated: 0 },
                "message {i}"
            );
        }
        assert!(l.seen.len() <= MAX_REMEMBERED);
    }
}
