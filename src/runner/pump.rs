//! Moves a run's stdout and stderr into the job's log.
//!
//! Both pipes are read by one task so the log sees them in arrival order. Each wake
//! drains whatever is buffered (bounded, for fairness between the two streams) and
//! then flushes once, so a flood is written in large blocks while a quiet job's lines
//! still reach the file as soon as they are printed. Reading never waits on the log
//! file: a failing write is counted by the sink and the pipes keep draining, so the
//! job never blocks on a full pipe because of the host.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::net::unix::pipe::Receiver;
use tokio::task::JoinHandle;

use crate::logsink::line::{LineSplitter, Stream};
use crate::logsink::{LogSink, lock};

const CHUNK: usize = 64 * 1024;
/// Reads per stream per wake before the other stream gets its turn.
const READS_PER_WAKE: usize = 16;

struct Source {
    pipe: Option<Receiver>,
    splitter: LineSplitter,
    stream: Stream,
}

pub fn start(
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    sink: Arc<Mutex<LogSink>>,
    log_id: String,
    log_changed: Arc<tokio::sync::Notify>,
) -> JoinHandle<()> {
    // The spawn made them non-blocking pipes (`spawn::Spawned`): nothing to check.
    let open = |fd: Option<OwnedFd>| fd.and_then(|fd| Receiver::from_owned_fd_unchecked(fd).ok());
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
        while out.pipe.is_some() || err.pipe.is_some() {
            let now = tokio::select! {
                r = readable(&out), if out.pipe.is_some() => {
                    if r.is_err() { close(&mut out, &sink, &log_id); continue; }
                    drain(&mut out, &sink, &log_id)
                }
                r = readable(&err), if err.pipe.is_some() => {
                    if r.is_err() { close(&mut err, &sink, &log_id); continue; }
                    drain(&mut err, &sink, &log_id)
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
