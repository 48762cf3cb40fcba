//! Moves a run's stdout and stderr into the job's log.
//!
//! Both pipes are read by one task so the log sees them in arrival order. Each wake
//! drains whatever is buffered (bounded, for fairness between the two streams) and
//! then flushes once, so a flood is written in large blocks while a quiet job's lines
//! still reach the file as soon as they are printed. Reading never waits on the log
//! file: a failing write is counted by the sink and the pipes keep draining, so the
//! job never blocks on a full pipe because of the host. A log handed to the host's
//! writer thread is the exception that bounds memory: while more than [`BACKLOG`]
//! bytes of it wait for a stuck writer, the pump stops reading, and the job's pipe
//! fills as it would behind a slow reader.
//!
//! A pump whose log is handed paces itself in a flood. It no longer waits on its own
//! writes, so it would come back to the pipe at once and find a line or two there: a
//! wake, a read and a hand-off per line cost the host several times the CPU of the
//! job's own writes. So while reads come less than [`PACE`] apart and find little,
//! the pump waits [`PACE`] before the next, and once a read finds the pipe full it
//! widens the job's pipes ([`WIDE_PIPE`]) so that the job can go on writing meanwhile.
//! Measured in docs/development.md.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::net::unix::pipe::Receiver;
use tokio::task::JoinHandle;

use crate::logsink::line::{LineSplitter, Stream};
use crate::logsink::{LogSink, lock};

const CHUNK: usize = 64 * 1024;
/// Reads per stream per wake before the other stream gets its turn.
const READS_PER_WAKE: usize = 16;

/// How long the lines already in the log's batch when the pump starts (the run's
/// `started` note) wait for the first output to be written with it: one write for
/// both, instead of two, for the many runs that print at once. A silent run's log
/// shows its `started` line after this.
const HOLD: std::time::Duration = std::time::Duration::from_millis(250);

/// Bytes of a handed log not yet taken by the writer thread past which the pump waits
/// (see the module note). A few floods' worth of reads: a working writer takes them
/// every few milliseconds, so only a stuck one is ever waited for.
const BACKLOG: usize = 4 << 20;

/// A handed pump's pause between reads in a flood (see the module note).
const PACE: std::time::Duration = std::time::Duration::from_millis(1);

/// A read under this after one less than [`PACE`] before: the pump paces itself.
const SHORT_READ: usize = CHUNK / 2;

/// A read this large found the job's pipe (64 KiB unless widened) full, or nearly:
/// a page short, since small writes that do not fit the rest of a page start a new one.
const FULL_READ: usize = CHUNK - 4096;

/// What a flooding job's pipes are widened to: several [`PACE`]s of a fast writer's
/// output, so it does not wait on the pipe while the pump pauses. Linux's default
/// cap for an unprivileged process (`/proc/sys/fs/pipe-max-size`); a refusal leaves
/// the pipe as it was. Only a pipe found full is widened: the kernel counts widened
/// pipes against a per-user allowance, and past it makes every new pipe small.
const WIDE_PIPE: usize = 1 << 20;

struct Source {
    pipe: Option<Receiver>,
    splitter: LineSplitter,
    stream: Stream,
}

pub fn start(
    stdout: OwnedFd,
    stderr: OwnedFd,
    sink: Arc<Mutex<LogSink>>,
    log_id: String,
    log_changed: Arc<tokio::sync::Notify>,
) -> JoinHandle<()> {
    // The spawn made them non-blocking pipes (`spawn::Spawned`): nothing to check.
    let open = |fd: OwnedFd| Receiver::from_owned_fd_unchecked(fd).ok();
    let mut out = Source {
        pipe: open(stdout),
        splitter: LineSplitter::new(),
        stream: Stream::Stdout,
    };
    let mut err = Source {
        pipe: open(stderr),
        splitter: LineSplitter::new(),
        stream: Stream::Stderr,
    };
    tokio::spawn(async move {
        let mut seen = loss_state(&sink);
        // Every drain flushes; until the first, what was in the batch waits (`HOLD`).
        let held = tokio::time::sleep(HOLD);
        tokio::pin!(held);
        let mut holding = lock(&sink).pending_bytes() > 0;
        let handed = lock(&sink).is_handed();
        let mut pace = Pace::new(handed);
        while out.pipe.is_some() || err.pipe.is_some() {
            let behind = lock(&sink).over_backlog(BACKLOG);
            if let Some(log) = behind {
                log.room(BACKLOG).await;
            }
            if pace.pausing {
                tokio::time::sleep(PACE).await;
            }
            let drained = tokio::select! {
                r = readable(&out), if out.pipe.is_some() => {
                    holding = false;
                    if r.is_err() { close(&mut out, &sink, &log_id); continue; }
                    drain(&mut out, &sink, &log_id)
                }
                r = readable(&err), if err.pipe.is_some() => {
                    holding = false;
                    if r.is_err() { close(&mut err, &sink, &log_id); continue; }
                    drain(&mut err, &sink, &log_id)
                }
                () = &mut held, if holding => {
                    holding = false;
                    let mut s = lock(&sink);
                    s.flush();
                    Drained { loss: loss_of(&s), read: 0, full: false }
                }
            };
            if pace.after(&drained) {
                widen(&out);
                widen(&err);
            }
            if drained.loss != seen {
                seen = drained.loss;
                log_changed.notify_one();
            }
        }
    })
}

/// What one wake read.
struct Drained {
    /// The log's loss state after it (see [`loss_state`]).
    loss: (u64, bool),
    read: usize,
    /// A read took nearly a whole default pipe's worth ([`FULL_READ`]).
    full: bool,
}

/// A handed pump's pacing (see the module note).
struct Pace {
    handed: bool,
    last_wake: tokio::time::Instant,
    /// Wait [`PACE`] before the next read.
    pausing: bool,
    widened: bool,
}

impl Pace {
    fn new(handed: bool) -> Pace {
        Pace {
            handed,
            last_wake: tokio::time::Instant::now(),
            pausing: false,
            widened: false,
        }
    }

    /// Takes in a wake's reads; true when the pipes are to be widened now.
    fn after(&mut self, d: &Drained) -> bool {
        if !self.handed {
            return false;
        }
        let now = tokio::time::Instant::now();
        let soon = now.duration_since(self.last_wake) < PACE;
        self.last_wake = now;
        self.pausing = soon && d.read < SHORT_READ;
        let widen = d.full && !self.widened;
        self.widened |= widen;
        widen
    }
}

/// Asks for a wider pipe; refused (the per-user allowance is spent), it stays as it is.
fn widen(src: &Source) {
    if let Some(p) = &src.pipe {
        let _ = nix::fcntl::fcntl(p, nix::fcntl::FcntlArg::F_SETPIPE_SZ(WIDE_PIPE as i32));
    }
}

/// What the status shows of the log's health: lines lost, and whether it is failing.
fn loss_state(sink: &Mutex<LogSink>) -> (u64, bool) {
    loss_of(&lock(sink))
}

fn loss_of(s: &LogSink) -> (u64, bool) {
    (s.stats().dropped_lines, s.stats().last_error.is_some())
}

async fn readable(src: &Source) -> std::io::Result<()> {
    match &src.pipe {
        Some(p) => p.readable().await,
        None => std::future::pending().await,
    }
}

thread_local! {
    /// The read buffer, one per worker thread: `drain` never awaits while using it, and
    /// a run then costs no 64 KiB allocation (a hundred runs a second start here).
    static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHUNK]);
}

/// Reads what is buffered, frames it, flushes once.
fn drain(src: &mut Source, sink: &Mutex<LogSink>, log_id: &str) -> Drained {
    BUF.with_borrow_mut(|buf| drain_into(src, buf, sink, log_id))
}

fn drain_into(src: &mut Source, buf: &mut [u8], sink: &Mutex<LogSink>, log_id: &str) -> Drained {
    let Some(pipe) = &src.pipe else {
        return Drained {
            loss: loss_state(sink),
            read: 0,
            full: false,
        };
    };
    let (mut eof, mut read, mut full) = (false, 0, false);
    let mut sink_guard = lock(sink);
    for _ in 0..READS_PER_WAKE {
        match pipe.try_read(buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                read += n;
                full |= n >= FULL_READ;
                sink_guard.feed(&mut src.splitter, log_id, src.stream, &buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                eof = true;
                break;
            }
        }
    }
    if eof {
        sink_guard.finish_stream(&mut src.splitter, log_id, src.stream);
        src.pipe = None;
    }
    sink_guard.flush();
    Drained {
        // Read under the lock already held: this runs on every wake.
        loss: loss_of(&sink_guard),
        read,
        full,
    }
}

fn close(src: &mut Source, sink: &Mutex<LogSink>, log_id: &str) {
    let mut s = lock(sink);
    s.finish_stream(&mut src.splitter, log_id, src.stream);
    s.flush();
    src.pipe = None;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;
    use std::time::{Duration, Instant};

    fn log_text(path: &std::path::Path) -> String {
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
    }

    async fn wait_for(path: &std::path::Path, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = log_text(path);
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A handed pump pauses only while reads come at once and find little, and widens
    /// its pipes once, the first time a read finds one full; a pump that writes its
    /// own log never paces.
    #[tokio::test(start_paused = true)]
    async fn a_handed_pump_paces_only_a_flood_and_widens_once() {
        let read = |read, full| Drained {
            loss: (0, false),
            read,
            full,
        };
        let mut pace = Pace::new(true);
        tokio::time::advance(PACE * 5).await;
        assert!(!pace.after(&read(100, false)));
        assert!(!pace.pausing, "the first read after a quiet spell");
        assert!(!pace.after(&read(100, false)));
        assert!(pace.pausing, "a second short read at once");
        pace.after(&read(SHORT_READ, false));
        assert!(!pace.pausing, "a long read");
        assert!(
            pace.after(&read(FULL_READ, true)),
            "the first full read widens"
        );
        assert!(!pace.after(&read(FULL_READ, true)), "only once");
        tokio::time::advance(PACE).await;
        pace.after(&read(1, false));
        assert!(!pace.pausing, "a short read a pause after the last");
        let mut direct = Pace::new(false);
        direct.after(&read(1, false));
        assert!(!direct.after(&read(FULL_READ, true)));
        assert!(!direct.pausing);
    }

    #[tokio::test]
    async fn a_widened_pipe_holds_a_mebibyte() {
        let (r, _w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        let src = Source {
            pipe: Receiver::from_owned_fd_unchecked(r).ok(),
            splitter: LineSplitter::new(),
            stream: Stream::Stdout,
        };
        let size = |src: &Source| {
            nix::fcntl::fcntl(
                src.pipe.as_ref().unwrap(),
                nix::fcntl::FcntlArg::F_GETPIPE_SZ,
            )
            .unwrap()
        };
        assert!(size(&src) < WIDE_PIPE as i32);
        widen(&src);
        assert_eq!(size(&src), WIDE_PIPE as i32);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_held_note_is_written_alone_after_the_hold_and_before_any_output() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.txt");
        let sink = Arc::new(Mutex::new(LogSink::new(path.clone(), 1 << 20, 1)));
        lock(&sink).sys_info("a1b2c3", "started (pid 1)");
        let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        let notify = Arc::new(tokio::sync::Notify::new());
        let pump = start(out_r, err_r, sink.clone(), "a1b2c3".into(), notify);
        // Nothing printed, pipes still open: the note shows anyway once the hold ends.
        let text = wait_for(&path, "started (pid 1)").await;
        assert!(text.contains("SYS INFO] started (pid 1)"), "{text:?}");
        nix::unistd::write(&out_w, b"hello\n").unwrap();
        let text = wait_for(&path, "hello").await;
        let (note, line) = (
            text.find("started").unwrap(),
            text.find("INFO] hello").unwrap(),
        );
        assert!(note < line, "the note precedes the output: {text:?}");
        drop((out_w, err_w));
        tokio::time::timeout(Duration::from_secs(20), pump)
            .await
            .unwrap()
            .unwrap();
    }
}
