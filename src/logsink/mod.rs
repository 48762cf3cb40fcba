//! One job's log file (`job_log.txt`, or a triggered run's `output_log.txt`). Owns the
//! pending batch of framed lines, the rotating file it goes to, and the account of
//! what could not be written. Write errors never reach the caller: a job must not
//! stall or die because its log folder vanished or the disk filled up, so losses are
//! counted, reported in the log once it can be written again, and published through
//! [`LogStats`] for status.json.

pub mod line;
pub mod rotate;
pub mod writer;

use std::path::Path;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

pub use line::{LineSplitter, MAX_LINE, Stream};
pub use rotate::{LogError, RotatingFile, rotated_path};
pub use writer::LogWriter;

/// `line` flushes by itself past this, so a flood cannot grow the batch without bound.
pub const AUTO_FLUSH_BYTES: usize = 256 * 1024;

/// What the sink has done so far; the drop counters are totals over its lifetime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes that reached the file, the sink's own notes included.
    pub written_bytes: u64,
    /// Lines that did not reach the file (or only in part, when the disk filled up).
    pub dropped_lines: u64,
    /// Bytes of log text, prefixes included, that did not reach the file.
    pub dropped_bytes: u64,
    /// Rotations that failed; the file then grows past `max_bytes` until one succeeds.
    pub rotation_errors: u64,
    /// The latest write or rotation error.
    pub last_error: Option<String>,
}

/// Losses not yet told to the reader of the log.
#[derive(Debug)]
struct Loss {
    lines: u64,
    bytes: u64,
    error: String,
}

/// A log written by a run's pump and by its job task at once.
pub type SharedSink = std::sync::Arc<std::sync::Mutex<LogSink>>;

/// Locks a shared log. The sink keeps its buffers consistent at every step, so a
/// lock poisoned by a panic elsewhere is still safe to write through.
pub fn lock(sink: &std::sync::Mutex<LogSink>) -> std::sync::MutexGuard<'_, LogSink> {
    sink.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes one host note (SYS INFO, or SYS ERROR when `error`) and flushes it: notes
/// are rare and someone tailing the log should see them at once.
pub fn note(sink: &std::sync::Mutex<LogSink>, run_id: &str, error: bool, msg: &str) {
    let mut s = lock(sink);
    s.sys(run_id, error, msg);
    s.flush();
}

/// Waits, bounded, until what a log was given so far is on disk, for a caller about to
/// tell someone who may read it (a status published, an API call answered). A direct
/// sink is written at once; a handed one gets a step queued after its lines.
///
/// One wait that timed out marks the log stuck (a hung LOGS): later waits return at
/// once, without queueing more, until the step of that one has run.
#[derive(Debug, Default)]
pub struct Settle {
    stuck: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Settle {
    /// True once the lines are on disk (or failed), false when `bound` passed or the
    /// log is still stuck from an earlier wait.
    pub async fn wait(
        &mut self,
        sink: &std::sync::Mutex<LogSink>,
        bound: std::time::Duration,
    ) -> bool {
        if let Some(rx) = &mut self.stuck {
            if let Err(tokio::sync::oneshot::error::TryRecvError::Empty) = rx.try_recv() {
                return false;
            }
            self.stuck = None;
        }
        let Some(mut rx) = lock(sink).written() else {
            return true;
        };
        if tokio::time::timeout(bound, &mut rx).await.is_ok() {
            return true;
        }
        self.stuck = Some(rx);
        false
    }
}

/// One job's log. Frames lines into an in-memory batch; `flush` writes the batch.
///
/// Write errors never propagate: the batch is counted as dropped (lines and bytes),
/// the error remembered, and the next successful flush first writes a SYS ERROR line
/// "N lines (M bytes) of output were lost: <error>". After a write that takes the file
/// past `max_bytes` it rotates and writes a SYS INFO line naming the rotated file; a
/// failed rotation is a SYS ERROR line and counted in the stats, and never costs the
/// batch already written. Dropping the sink flushes it.
///
/// A sink made with [`LogSink::handed`] frames lines the same way but hands each batch
/// to the host's [`LogWriter`] thread instead of writing it: its `flush` never touches
/// the file system, and its stats are the writer's as of the latest hand-off.
pub struct LogSink {
    batch: Vec<u8>,
    batch_lines: u64,
    stamps: line::StampCache,
    /// `[time > run: LABEL] ` of the lines being added, built once per chunk.
    prefix: Vec<u8>,
    /// The run id of the latest line, used for the sink's own notes.
    run_id: String,
    end: End,
}

/// Where a sink's batches go.
enum End {
    /// Written by the caller's thread at each flush.
    Direct(FileEnd),
    /// Handed to the writer thread.
    Handed {
        out: std::sync::Arc<writer::Outbox>,
        writer: LogWriter,
        /// The writer's stats as of the latest hand-off.
        stats: LogStats,
        /// Handed bytes the writer had not taken yet, at the latest hand-off.
        backlog: usize,
    },
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink")
            .field("path", &self.path())
            .field("pending", &self.batch.len())
            .finish_non_exhaustive()
    }
}

/// The file side of a log: the rotating file and the account of what could not be
/// written. Driven by the sink's flush, or by the writer thread for a handed sink.
#[derive(Debug)]
pub(crate) struct FileEnd {
    file: RotatingFile,
    stats: LogStats,
    unreported: Option<Loss>,
    /// A write stopped inside a line (disk full), so the file does not end with '\n'.
    torn: bool,
    /// After a failed rotation, the size at which to try again.
    rotate_retry_at: u64,
    /// For the notes of its own (losses, rotation).
    stamps: line::StampCache,
    /// The run id of the latest line written, used for those notes.
    run_id: String,
}

impl LogSink {
    /// Does not touch the file system; the first flush creates the file.
    pub fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        Self::with_end(End::Direct(FileEnd::new(path, max_bytes, keep)))
    }

    /// A sink whose writes are done by `writer`'s thread (see [`LogSink`]).
    pub fn handed(path: PathBuf, max_bytes: u64, keep: u32, writer: &LogWriter) -> Self {
        let file = FileEnd::new(path.clone(), max_bytes, keep);
        Self::with_end(End::Handed {
            out: writer.outbox(path, file),
            writer: writer.clone(),
            stats: LogStats::default(),
            backlog: 0,
        })
    }

    fn with_end(end: End) -> Self {
        Self {
            batch: Vec::new(),
            batch_lines: 0,
            stamps: line::StampCache::new(),
            prefix: Vec::new(),
            run_id: String::new(),
            end,
        }
    }

    /// Opens now a file the caller has just emptied or created, so the first line does
    /// not have to (its size is known: not asked). A failure is left for the first
    /// write to report. For a handed sink, only before it is shared (on the blocking
    /// pool): this is file work.
    pub fn open_empty(&mut self) {
        match &mut self.end {
            End::Direct(f) => f.open_empty(),
            End::Handed { out, .. } => out.open_empty(),
        }
    }

    pub fn set_limits(&mut self, max_bytes: u64, keep: u32) {
        match &mut self.end {
            End::Direct(f) => f.set_limits(max_bytes, keep),
            End::Handed { out, writer, .. } => writer.limits(out, max_bytes, keep),
        }
    }

    /// Runs `step` once everything added so far is written: at once for a direct sink,
    /// on the writer thread, after those lines, for a handed one.
    pub fn then(&mut self, step: Box<dyn FnOnce() + Send>) {
        self.flush();
        match &self.end {
            End::Direct(_) => step(),
            End::Handed { out, writer, .. } => writer.then(out, step),
        }
    }

    /// Flushes; then `None` when everything added so far is on disk (or failed), else
    /// a receiver answered by the writer thread once it is. See [`Settle`].
    pub fn written(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.flush();
        match &self.end {
            End::Direct(_) => None,
            End::Handed { out, .. } if out.idle() => None,
            End::Handed { out, writer, .. } => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                writer.then(
                    out,
                    Box::new(move || {
                        let _ = tx.send(());
                    }),
                );
                Some(rx)
            }
        }
    }

    /// For a handed sink with more than `bound` bytes not yet taken by the writer (at
    /// the latest flush): the log to wait on ([`writer::Outbox::room`]) before adding
    /// more. The pump's back pressure.
    pub fn over_backlog(&self, bound: usize) -> Option<std::sync::Arc<writer::Outbox>> {
        match &self.end {
            End::Handed { out, backlog, .. } if *backlog > bound => Some(out.clone()),
            _ => None,
        }
    }

    /// Adds one line stamped with the current time. `line` excludes its newline and
    /// should contain none (feed raw output through [`LogSink::feed`]).
    pub fn line(&mut self, run_id: &str, stream: Stream, line: &[u8]) {
        self.line_at(Utc::now(), run_id, stream, line);
    }

    /// [`LogSink::line`] with a given time.
    pub fn line_at(&mut self, at: DateTime<Utc>, run_id: &str, stream: Stream, line: &[u8]) {
        self.set_prefix(at, run_id, stream);
        self.push_line(line);
    }

    /// A note of the host's; each line of a multi-line message is its own log line.
    pub fn sys_info(&mut self, run_id: &str, msg: &str) {
        self.note(run_id, Stream::SysInfo, msg);
    }

    /// Like [`LogSink::sys_info`], labelled `SYS ERROR`.
    pub fn sys_error(&mut self, run_id: &str, msg: &str) {
        self.note(run_id, Stream::SysError, msg);
    }

    /// [`LogSink::sys_error`] when `error`, else [`LogSink::sys_info`].
    pub fn sys(&mut self, run_id: &str, error: bool, msg: &str) {
        let stream = if error {
            Stream::SysError
        } else {
            Stream::SysInfo
        };
        self.note(run_id, stream, msg);
    }

    fn note(&mut self, run_id: &str, stream: Stream, msg: &str) {
        self.set_prefix(Utc::now(), run_id, stream);
        for piece in msg.split('\n') {
            self.push_line(piece.as_bytes());
        }
    }

    /// Pushes a chunk of a run's output through its stream's splitter.
    pub fn feed(
        &mut self,
        splitter: &mut LineSplitter,
        run_id: &str,
        stream: Stream,
        chunk: &[u8],
    ) {
        // One clock read and one prefix per chunk: its lines arrived together, and per
        // line both were a measurable part of a flood.
        self.set_prefix(Utc::now(), run_id, stream);
        splitter.push(chunk, |line| self.push_line(line));
    }

    /// End of a stream: writes its final line if it had no newline.
    pub fn finish_stream(&mut self, splitter: &mut LineSplitter, run_id: &str, stream: Stream) {
        self.set_prefix(Utc::now(), run_id, stream);
        splitter.finish(|line| self.push_line(line));
    }

    /// Writes the pending batch (or hands it to the writer thread). Returns the stats
    /// so the caller can publish drops in status.json.
    pub fn flush(&mut self) -> &LogStats {
        match &mut self.end {
            End::Direct(f) => {
                f.write(&self.batch, self.batch_lines, &self.run_id);
                self.batch.clear();
            }
            End::Handed {
                out,
                writer,
                stats,
                backlog,
            } => {
                let handed = out.hand(&mut self.batch, self.batch_lines, &self.run_id);
                (*stats, *backlog) = (handed.stats, handed.queued);
                if handed.tell {
                    writer.ready(out.clone());
                }
                if handed.hurry {
                    writer.hurry();
                }
            }
        }
        self.batch_lines = 0;
        self.stats()
    }

    /// Whether the writer thread does this sink's writes ([`LogSink::handed`]).
    pub fn is_handed(&self) -> bool {
        matches!(self.end, End::Handed { .. })
    }

    /// Bytes waiting for `flush`. Callers flush when this passes ~64 KiB, and whenever
    /// their input goes idle.
    pub fn pending_bytes(&self) -> usize {
        self.batch.len()
    }

    /// For a handed sink, takes the writer's stats as of its latest write (without
    /// handing anything over); a direct sink's are always current.
    pub fn refresh_stats(&mut self) -> &LogStats {
        if let End::Handed { out, stats, .. } = &mut self.end {
            *stats = out.stats();
        }
        self.stats()
    }

    /// For a handed sink, as of its latest flush (or [`LogSink::refresh_stats`]).
    pub fn stats(&self) -> &LogStats {
        match &self.end {
            End::Direct(f) => &f.stats,
            End::Handed { stats, .. } => stats,
        }
    }

    pub fn path(&self) -> &Path {
        match &self.end {
            End::Direct(f) => f.file.path(),
            End::Handed { out, .. } => out.path(),
        }
    }

    fn set_prefix(&mut self, at: DateTime<Utc>, run_id: &str, stream: Stream) {
        if self.run_id != run_id {
            self.run_id.clear();
            self.run_id.push_str(run_id);
        }
        self.prefix.clear();
        line::format_prefix(&mut self.prefix, self.stamps.get(at), run_id, stream);
    }

    fn push_line(&mut self, line: &[u8]) {
        self.batch.reserve(self.prefix.len() + line.len() + 1);
        self.batch.extend_from_slice(&self.prefix);
        self.batch.extend_from_slice(line);
        self.batch.push(b'\n');
        self.batch_lines += 1;
        if self.batch.len() >= AUTO_FLUSH_BYTES || self.due_for_rotation() {
            self.flush();
        }
    }

    /// The batch would carry the file past `log_max_bytes`: write it now so the file is
    /// rotated before the next line, and a flood read in one large gulp still leaves
    /// files of about `log_max_bytes` (one line over at most), not a batch over.
    /// A handed sink leaves this to the writer ([`FileEnd::write`] cuts its batches).
    fn due_for_rotation(&self) -> bool {
        let End::Direct(f) = &self.end else {
            return false;
        };
        let after = f.file.size() + self.batch.len() as u64;
        after > f.file.max_bytes() && after >= f.rotate_retry_at
    }
}

impl FileEnd {
    pub(crate) fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        FileEnd {
            file: RotatingFile::new(path, max_bytes, keep),
            stats: LogStats::default(),
            unreported: None,
            torn: false,
            rotate_retry_at: 0,
            stamps: line::StampCache::new(),
            run_id: String::new(),
        }
    }

    fn open_empty(&mut self) {
        let _ = self.file.open_empty();
    }

    fn set_limits(&mut self, max_bytes: u64, keep: u32) {
        self.file.set_limits(max_bytes, keep);
        self.rotate_retry_at = 0;
    }

    /// Writes `batch` (`lines` framed lines, the latest of run `run_id`), then rotates
    /// if due. With nothing to write, still delivers a pending loss report.
    pub(crate) fn write(&mut self, batch: &[u8], lines: u64, run_id: &str) {
        if batch.is_empty() && self.unreported.is_none() {
            return;
        }
        if !run_id.is_empty() && self.run_id != run_id {
            self.run_id.clear();
            self.run_id.push_str(run_id);
        }
        // A handed sink's batch gathers several flushes: it is cut after the line that
        // takes the file past its limit, so rotated files stay near `log_max_bytes`.
        let (mut rest, mut lines) = (batch, lines);
        while let Some(at) = self.cut(rest) {
            let (head, tail) = rest.split_at(at);
            let n = count_newlines(head);
            if self.write_batch(head, n) {
                self.rotate_if_due();
            }
            (rest, lines) = (tail, lines.saturating_sub(n));
        }
        if self.write_batch(rest, lines) {
            self.rotate_if_due();
        }
    }

    /// Where to cut `rest` so that its head ends with the line passing the limit; none
    /// when the whole of it can go (it does not pass, or a rotation is not due).
    fn cut(&self, rest: &[u8]) -> Option<usize> {
        let (size, max) = (self.file.size(), self.file.max_bytes());
        let after = size.saturating_add(rest.len() as u64);
        if after <= max || after < self.rotate_retry_at {
            return None;
        }
        let room = usize::try_from(max.saturating_sub(size)).unwrap_or(usize::MAX);
        let from = room.min(rest.len());
        let at = memchr::memchr(b'\n', &rest[from..])? + from + 1;
        (at < rest.len()).then_some(at)
    }

    /// Writes the batch, preceded by what a reader must know after a failure. Returns
    /// false, with the batch counted as dropped, if the write failed.
    fn write_batch(&mut self, batch: &[u8], batch_lines: u64) -> bool {
        let preamble = self.preamble();
        let joined;
        let buf: &[u8] = if preamble.is_empty() {
            batch
        } else {
            // Only after a failure: one copy buys a single write for report and batch.
            joined = [preamble.as_slice(), batch].concat();
            &joined
        };
        let result = self.file.write_all(buf);
        let written = match &result {
            Ok(()) => buf.len(),
            Err(err) => err.written(),
        };
        self.stats.written_bytes += written as u64;
        if written > 0 {
            self.torn = buf[written - 1] != b'\n';
        }
        match result {
            Ok(()) => {
                self.unreported = None;
                true
            }
            Err(err) => {
                let batch_written = written.saturating_sub(preamble.len());
                let whole_lines = count_newlines(&batch[..batch_written]);
                self.record_loss(
                    // Saturating: a caller's line with an embedded '\n' counts twice here.
                    batch_lines.saturating_sub(whole_lines),
                    (batch.len() - batch_written) as u64,
                    err.to_string(),
                );
                false
            }
        }
    }

    /// A newline to end a line torn by a partial write, and the report of lost lines.
    /// Empty (and not allocated) in the normal case.
    fn preamble(&mut self) -> Vec<u8> {
        let mut preamble = Vec::new();
        // A failed open leaves `size` at 0, so no newline goes into a file that might
        // be new; the write that follows reports the error.
        if self.torn && self.file.open().is_ok() && self.file.size() > 0 {
            preamble.push(b'\n');
        }
        if let Some(loss) = &self.unreported {
            let msg = format!(
                "{} lines ({} bytes) of output were lost: {}",
                loss.lines, loss.bytes, loss.error
            );
            format_note(
                &mut preamble,
                &mut self.stamps,
                &self.run_id,
                Stream::SysError,
                &msg,
            );
        }
        preamble
    }

    fn record_loss(&mut self, lines: u64, bytes: u64, error: String) {
        self.stats.dropped_lines += lines;
        self.stats.dropped_bytes += bytes;
        self.stats.last_error = Some(error.clone());
        match &mut self.unreported {
            Some(loss) => {
                loss.lines += lines;
                loss.bytes += bytes;
                loss.error = error;
            }
            None if lines > 0 || bytes > 0 => {
                self.unreported = Some(Loss {
                    lines,
                    bytes,
                    error,
                });
            }
            None => {}
        }
    }

    fn rotate_if_due(&mut self) {
        if !self.file.needs_rotation() || self.file.size() < self.rotate_retry_at {
            return;
        }
        let (stream, msg) = match self.file.rotate() {
            Ok(Some(newest)) => {
                self.rotate_retry_at = 0;
                let name = newest.file_name().unwrap_or(newest.as_os_str());
                let msg = format!(
                    "log rotated: previous lines are in {}",
                    name.to_string_lossy()
                );
                (Stream::SysInfo, msg)
            }
            Ok(None) => {
                self.rotate_retry_at = 0;
                let msg = "log rotated: previous lines were deleted (log_keep is 0)".to_owned();
                (Stream::SysInfo, msg)
            }
            Err(err) => {
                let error = err.to_string();
                self.stats.rotation_errors += 1;
                self.stats.last_error = Some(error.clone());
                (Stream::SysError, format!("log rotation failed: {error}"))
            }
        };
        let mut note = Vec::new();
        format_note(&mut note, &mut self.stamps, &self.run_id, stream, &msg);
        // No rotation check after this note: the file is fresh, or just failed to rotate.
        self.write_batch(&note, 1);
        if stream == Stream::SysError {
            // Retrying at every flush would fill the log with the same error; try again
            // once the file has grown by another quarter of the limit.
            let step = (self.file.max_bytes() / 4).max(1);
            self.rotate_retry_at = self.file.size().saturating_add(step);
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.flush();
    }
}

/// One line of the sink's own, stamped now. Not built through `prefix`: a note can come
/// in the middle of a chunk (an auto-flush that rotates) whose lines still need it.
fn format_note(
    out: &mut Vec<u8>,
    stamps: &mut line::StampCache,
    run_id: &str,
    stream: Stream,
    msg: &str,
) {
    line::format_prefix(out, stamps.get(Utc::now()), run_id, stream);
    out.extend_from_slice(msg.as_bytes());
    out.push(b'\n');
}

fn count_newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::fs;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap() + chrono::Duration::milliseconds(ms)
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    fn lines_of(path: &Path) -> Vec<String> {
        read(path).lines().map(str::to_owned).collect()
    }

    /// The lines of `path` without their time stamp (`[...Z `): what follows it.
    fn tails(path: &Path) -> Vec<String> {
        lines_of(path).iter().map(|l| l[26..].to_owned()).collect()
    }

    /// A sink writing `name` in a fresh folder (removed when the folder is dropped).
    fn sink_in(name: &str, max_bytes: u64, keep: u32) -> (tempfile::TempDir, PathBuf, LogSink) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let sink = LogSink::new(path.clone(), max_bytes, keep);
        (dir, path, sink)
    }

    #[test]
    fn writes_exact_lines() {
        let (_dir, path, mut sink) = sink_in("logs/continuous/web/job_log.txt", 1 << 20, 5);
        sink.line_at(t(0), "9a2e7d", Stream::SysInfo, b"started, pid 4242");
        sink.line_at(t(1), "9a2e7d", Stream::Stdout, b"hello");
        sink.line_at(t(999), "9a2e7d", Stream::Stderr, b"warning: x");
        sink.line_at(t(1000), "9a2e7d", Stream::Stdout, b"");
        let expected = "\
[2026-11-30T10:00:00.000Z > 9a2e7d: SYS INFO] started, pid 4242
[2026-11-30T10:00:00.001Z > 9a2e7d: INFO] hello
[2026-11-30T10:00:00.999Z > 9a2e7d: ERROR] warning: x
[2026-11-30T10:00:01.000Z > 9a2e7d: INFO] \n";
        assert!(!path.exists(), "nothing is written before flush");
        assert_eq!(sink.pending_bytes(), expected.len());
        let stats = sink.flush().clone();
        assert_eq!(read(&path), expected);
        assert_eq!(sink.pending_bytes(), 0);
        assert_eq!(
            stats,
            LogStats {
                written_bytes: expected.len() as u64,
                ..LogStats::default()
            }
        );
    }

    #[test]
    fn sys_notes_split_multi_line_messages() {
        let (_dir, path, mut sink) = sink_in("job_log.txt", 1 << 20, 5);
        sink.sys_error(
            "abc123",
            "settings.job is invalid:\n  line 3: bad\n  line 4: worse",
        );
        sink.sys_info("abc123", "restart in 2 s");
        sink.flush();
        assert_eq!(
            tails(&path),
            [
                "> abc123: SYS ERROR] settings.job is invalid:",
                "> abc123: SYS ERROR]   line 3: bad",
                "> abc123: SYS ERROR]   line 4: worse",
                "> abc123: SYS INFO] restart in 2 s",
            ]
        );
    }

    #[test]
    fn feed_frames_chunks_and_finish_writes_the_last_line() {
        let (_dir, path, mut sink) = sink_in("output_log.txt", 1 << 20, 5);
        let mut out = LineSplitter::new();
        let mut err = LineSplitter::new();
        sink.feed(&mut out, "r1", Stream::Stdout, b"a\nb");
        sink.feed(&mut err, "r1", Stream::Stderr, b"e1\n");
        sink.feed(&mut out, "r1", Stream::Stdout, b"c\nd");
        sink.finish_stream(&mut out, "r1", Stream::Stdout);
        sink.finish_stream(&mut err, "r1", Stream::Stderr);
        sink.flush();
        assert_eq!(
            tails(&path),
            [
                "> r1: INFO] a",
                "> r1: ERROR] e1",
                "> r1: INFO] bc",
                "> r1: INFO] d"
            ]
        );
    }

    #[test]
    fn non_utf8_bytes_round_trip() {
        let (_dir, path, mut sink) = sink_in("job_log.txt", 1 << 20, 5);
        let mut splitter = LineSplitter::new();
        let raw = b"\xff\xfe\x00bin\r\n\xc3\x28 \xe2\x82\xac\n\x80";
        for byte in raw.chunks(1) {
            sink.feed(&mut splitter, "000000", Stream::Stdout, byte);
        }
        sink.finish_stream(&mut splitter, "000000", Stream::Stdout);
        sink.flush();
        let content = fs::read(&path).unwrap();
        let bodies: Vec<&[u8]> = content
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| &l[b"[2026-11-30T10:00:00.000Z > 000000: INFO] ".len()..])
            .collect();
        assert_eq!(
            bodies,
            [&b"\xff\xfe\x00bin\r"[..], b"\xc3\x28 \xe2\x82\xac", b"\x80"]
        );
    }

    #[test]
    fn rotation_keeps_keep_files_and_notes_it_in_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_log.txt");
        // A job line is 49 bytes and the rotation note 93, so the first rotation comes
        // after line 2 and then every flush passes 100 bytes: note + one line.
        let mut sink = LogSink::new(path.clone(), 100, 2);
        for n in 0..8 {
            sink.line_at(
                t(n),
                "9a2e7d",
                Stream::Stdout,
                format!("line {n}").as_bytes(),
            );
            sink.flush();
        }
        let note = "[2026-11-30T10:00:00.000Z > 9a2e7d: SYS INFO] log rotated: previous lines are in job_log.1.txt";
        let file = |name: &str| lines_of(&dir.path().join(name));
        let job_line = |n: i64| format!("[2026-11-30T10:00:00.00{n}Z > 9a2e7d: INFO] line {n}");
        assert!(!dir.path().join("job_log.3.txt").exists());
        assert_eq!(file("job_log.2.txt")[1..], [job_line(6)]);
        assert_eq!(file("job_log.1.txt")[1..], [job_line(7)]);
        let current = lines_of(&path);
        assert_eq!(current.len(), 1);
        for lines in [&file("job_log.2.txt"), &file("job_log.1.txt"), &current] {
            // The note is stamped with the current time; compare what follows it.
            assert_eq!(lines[0][25..], note[25..]);
        }
        assert_eq!(sink.stats().rotation_errors, 0);
    }

    /// A flood fed in one gulp (the pump reads up to a megabyte per wake under load)
    /// used to land in one file whatever `log_max_bytes` said.
    #[test]
    fn a_flood_fed_at_once_is_rotated_at_the_limit_not_at_the_flush() {
        let (dir, _, mut sink) = sink_in("job_log.txt", 4096, 50);
        let mut splitter = LineSplitter::new();
        let flood: Vec<u8> = (0..1000)
            .flat_map(|n| format!("line {n:04} padding-padding-padding\n").into_bytes())
            .collect();
        sink.feed(&mut splitter, "9a2e7d", Stream::Stdout, &flood);
        sink.flush();
        let mut files = 1;
        while dir.path().join(format!("job_log.{files}.txt")).exists() {
            let len = fs::metadata(dir.path().join(format!("job_log.{files}.txt")))
                .unwrap()
                .len();
            assert!(len <= 4096 + 200, "a rotated file of {len} bytes");
            files += 1;
        }
        assert!(files > 10, "{files} files for ~80 KB at 4 KB each");
        assert_eq!(sink.stats().dropped_lines, 0);
    }

    #[test]
    fn keep_zero_deletes_the_old_log() {
        let (dir, path, mut sink) = sink_in("output_log.txt", 10, 0);
        sink.line_at(t(0), "r", Stream::Stdout, b"first");
        sink.flush();
        let current = lines_of(&path);
        assert_eq!(current.len(), 1);
        assert!(
            current[0]
                .ends_with("SYS INFO] log rotated: previous lines were deleted (log_keep is 0)")
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["output_log.txt"]);
    }

    #[test]
    fn failed_writes_are_counted_then_reported_once_the_folder_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("web");
        fs::write(&blocker, "a file where the folder should be").unwrap();
        let path = blocker.join("job_log.txt");
        let mut sink = LogSink::new(path.clone(), 1 << 20, 5);
        sink.line_at(t(0), "9a2e7d", Stream::Stdout, b"lost 1");
        sink.line_at(t(1), "9a2e7d", Stream::Stderr, b"lost 2");
        let batch = sink.pending_bytes() as u64;
        let error = format!("opening log file {}: Not a directory", path.display());
        let stats = sink.flush().clone();
        assert_eq!(
            stats,
            LogStats {
                written_bytes: 0,
                dropped_lines: 2,
                dropped_bytes: batch,
                rotation_errors: 0,
                last_error: Some(error.clone()),
            }
        );
        sink.line_at(t(2), "9a2e7d", Stream::Stdout, b"lost 3");
        let batch2 = sink.pending_bytes() as u64;
        assert_eq!(sink.flush().dropped_lines, 3);
        assert_eq!(
            sink.pending_bytes(),
            0,
            "a failed batch is dropped, not kept"
        );

        fs::remove_file(&blocker).unwrap();
        sink.line_at(t(3), "9a2e7d", Stream::Stdout, b"kept 4");
        sink.flush();
        sink.line_at(t(4), "9a2e7d", Stream::Stdout, b"kept 5");
        let stats = sink.flush().clone();
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 3, "{lines:?}");
        let report = format!(
            "> 9a2e7d: SYS ERROR] 3 lines ({} bytes) of output were lost: {error}",
            batch + batch2
        );
        assert!(lines[0].ends_with(&report), "{}", lines[0]);
        assert_eq!(lines[1], "[2026-11-30T10:00:00.003Z > 9a2e7d: INFO] kept 4");
        assert_eq!(lines[2], "[2026-11-30T10:00:00.004Z > 9a2e7d: INFO] kept 5");
        assert_eq!(stats.dropped_lines, 3);
        assert_eq!(stats.dropped_bytes, batch + batch2);
        assert_eq!(stats.written_bytes, fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn a_folder_where_the_file_should_be_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_log.txt");
        fs::create_dir(&path).unwrap();
        let mut sink = LogSink::new(path.clone(), 1 << 20, 5);
        sink.line_at(t(0), "9a2e7d", Stream::Stdout, b"lost");
        let stats = sink.flush().clone();
        assert_eq!(stats.dropped_lines, 1);
        assert_eq!(
            stats.last_error.as_deref(),
            Some(format!("opening log file {}: Is a directory", path.display()).as_str())
        );
        // Nothing to write but the report: a flush while idle still delivers it.
        fs::remove_dir(&path).unwrap();
        sink.flush();
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("SYS ERROR] 1 lines ("), "{}", lines[0]);
        sink.flush();
        assert_eq!(lines_of(&path).len(), 1, "the report is written once");
    }

    #[test]
    fn disk_full_drops_and_counts_without_panicking() {
        let mut sink = LogSink::new(PathBuf::from("/dev/full"), 1 << 20, 1);
        for n in 0..10 {
            sink.line("9a2e7d", Stream::Stdout, format!("line {n}").as_bytes());
        }
        let stats = sink.flush().clone();
        assert_eq!(stats.dropped_lines, 10);
        assert_eq!(
            stats.last_error.as_deref(),
            Some("writing log file /dev/full: No space left on device")
        );
        // The report itself cannot be written either; it is retried, not counted.
        assert_eq!(sink.flush().dropped_lines, 10);
    }

    #[test]
    fn failed_rotation_keeps_the_batch_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_log.txt");
        let obstacle = dir.path().join("job_log.1.txt");
        fs::create_dir(&obstacle).unwrap();
        fs::write(obstacle.join("inside"), "").unwrap();
        // Job lines are 49 bytes; nine of them pass 400.
        let mut sink = LogSink::new(path.clone(), 400, 1);
        for n in 0..9 {
            sink.line_at(
                t(n),
                "9a2e7d",
                Stream::Stdout,
                format!("line {n}").as_bytes(),
            );
        }
        let stats = sink.flush().clone();
        assert_eq!(stats.rotation_errors, 1);
        assert_eq!(stats.dropped_lines, 0);
        let error = stats.last_error.unwrap();
        assert!(error.starts_with("removing old log file "), "{error}");
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 10);
        assert!(lines[8].ends_with("INFO] line 8"));
        assert!(
            lines[9].ends_with(&format!("SYS ERROR] log rotation failed: {error}")),
            "{}",
            lines[9]
        );

        // Not retried at the next flush: once per quarter of the limit (100 bytes).
        sink.line_at(t(9), "9a2e7d", Stream::Stdout, b"line 9");
        assert_eq!(sink.flush().rotation_errors, 1);
        assert_eq!(lines_of(&path).len(), 11);

        fs::remove_dir_all(&obstacle).unwrap();
        for n in 10..12 {
            sink.line_at(
                t(n),
                "9a2e7d",
                Stream::Stdout,
                format!("line {n}").as_bytes(),
            );
        }
        sink.flush();
        let rotated = lines_of(&obstacle);
        assert_eq!(rotated.len(), 13);
        assert!(rotated[12].ends_with("INFO] line 11"));
        let current = lines_of(&path);
        assert_eq!(current.len(), 1);
        assert!(current[0].ends_with("SYS INFO] log rotated: previous lines are in job_log.1.txt"));
        assert_eq!(sink.stats().rotation_errors, 1);
    }

    #[test]
    fn line_flushes_by_itself_under_a_flood() {
        let (_dir, path, mut sink) = sink_in("job_log.txt", u64::MAX, 1);
        let body = [b'x'; 1000];
        for _ in 0..1000 {
            sink.line_at(t(0), "9a2e7d", Stream::Stdout, &body);
            assert!(sink.pending_bytes() < AUTO_FLUSH_BYTES);
        }
        assert!(fs::metadata(&path).unwrap().len() > 0);
    }

    #[test]
    fn dropping_the_sink_flushes_it() {
        let (_dir, path, mut sink) = sink_in("job_log.txt", 1 << 20, 1);
        sink.line_at(t(0), "9a2e7d", Stream::Stdout, b"last words");
        drop(sink);
        assert_eq!(
            read(&path),
            "[2026-11-30T10:00:00.000Z > 9a2e7d: INFO] last words\n"
        );
    }

    #[test]
    fn a_million_lines_arrive_complete_and_in_order() {
        const LINES: usize = 1_000_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_log.txt");
        // Each input line is 100 bytes with its newline: a number and padding.
        let mut input = Vec::with_capacity(LINES * 100);
        for n in 0..LINES {
            let start = input.len();
            input.extend_from_slice(format!("{n:07} ").as_bytes());
            input.resize(start + 99, b'a' + (n % 26) as u8);
            input.push(b'\n');
        }
        // Rotates a few times on the way, so rotation under load is covered too.
        let mut sink = LogSink::new(path.clone(), 48 << 20, 10);
        let mut splitter = LineSplitter::new();
        let mut rest = input.as_slice();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        while !rest.is_empty() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let size = ((seed % 70_000) as usize + 1).min(rest.len());
            sink.feed(&mut splitter, "9a2e7d", Stream::Stdout, &rest[..size]);
            rest = &rest[size..];
            if seed.is_multiple_of(7) {
                sink.flush();
            }
        }
        sink.finish_stream(&mut splitter, "9a2e7d", Stream::Stdout);
        let stats = sink.flush().clone();
        assert_eq!(stats.dropped_lines, 0);
        assert_eq!(stats.rotation_errors, 0);

        let mut files: Vec<PathBuf> = (1..=10)
            .rev()
            .map(|n| rotated_path(&path, n))
            .filter(|p| p.exists())
            .collect();
        assert!(files.len() >= 2, "expected rotations, got {files:?}");
        files.push(path.clone());
        let mut next = 0;
        let mut written = 0;
        let prefix_len = "[2026-11-30T10:00:00.000Z > 9a2e7d: INFO] ".len();
        for file in &files {
            let content = fs::read(file).unwrap();
            written += content.len() as u64;
            for line in content.split_inclusive(|&b| b == b'\n') {
                assert_eq!(line.last(), Some(&b'\n'));
                let (prefix, body) = line.split_at(prefix_len.min(line.len()));
                if prefix.ends_with(b": INFO] ") {
                    assert_eq!(body, &input[next * 100..(next + 1) * 100], "line {next}");
                    next += 1;
                } else {
                    let text = String::from_utf8_lossy(line);
                    assert!(
                        text.contains("SYS INFO] log rotated: previous lines are in job_log.1.txt"),
                        "{text}"
                    );
                }
            }
        }
        assert_eq!(next, LINES);
        assert_eq!(written, stats.written_bytes);
    }
}
