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
        while out.pipe.is_some() || err.pipe.is_some() {
            let behind = lock(&sink).over_backlog(BACKLOG);
            if let Some(log) = behind {
                log.room(BACKLOG).await;
            }
            let now = tokio::select! {
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
                    loss_of(&s)
                }
            };
            if now != seen {
                seen = now;
                log_changed.notify_one();
            }
        }
    })
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

/// Reads what is buffered, frames it, flushes once; returns the log's loss state.
fn drain(src: &mut Source, sink: &Mutex<LogSink>, log_id: &str) -> (u64, bool) {
    BUF.with_borrow_mut(|buf| drain_into(src, buf, sink, log_id))
}

fn drain_into(
    src: &mut Source,
    buf: &mut [u8],
    sink: &Mutex<LogSink>,
    log_id: &str,
) -> (u64, bool) {
    let Some(pipe) = &src.pipe else {
        return loss_state(sink);
    };
    let mut eof = false;
    let mut sink_guard = lock(sink);
    for _ in 0..READS_PER_WAKE {
        match pipe.try_read(buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => sink_guard.feed(&mut src.splitter, log_id, src.stream, &buf[..n]),
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
    // Read under the lock already held: this runs on every wake.
    loss_of(&sink_guard)
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
