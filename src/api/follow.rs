//! Log files over HTTP: a plain read, a tail, or a follow that keeps streaming, as
//! plain text or as server-sent events that a client can resume.
//!
//! A follow holds the file open and, at its end, looks at the path again: when the
//! path names another file, the log was rotated (renamed away, a new one created), so
//! the rest of the old file has already been read through the open handle and the
//! stream moves on to the new file. A run's output follow ends when the run has ended
//! and everything is read; a job log follow ends only when the client goes away or
//! the host stops.
//!
//! Positions are `INODE:OFFSET`: an offset alone means nothing once a file has been
//! rotated, but the inode follows the file through its renames. Each SSE event's id
//! is the position after it (and the text response's `X-Log-Position` the position
//! where it starts), so a client that reconnects with `Last-Event-ID` (or
//! `from=INODE:OFFSET`) gets the rest of that file, now `job_log.N.txt`, then every
//! newer one: no line is missed or repeated while the rotated files are kept.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

const CHUNK: usize = 64 * 1024;
const POLL: Duration = Duration::from_millis(200);
/// Rotated files looked at when resuming (`log_keep` is at most this).
const MAX_ROTATED: u32 = 1000;

/// When a follow ends.
#[derive(Clone)]
pub enum Until {
    /// Read what is there and stop.
    Now,
    /// Stop once this returns true and the file is fully read (a run that ended).
    Done(std::sync::Arc<dyn Fn() -> bool + Send + Sync>),
    /// Never (a continuous job's log): the client or the host ends it.
    Forever,
}

/// A place in a log: which file (by inode, stable across renames) and where in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub ino: u64,
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ino, self.offset)
    }
}

impl std::str::FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Position, String> {
        let bad = || format!("`{s}` is not a log position (INODE:OFFSET, as in the event ids)");
        let (i, o) = s.trim().split_once(':').ok_or_else(bad)?;
        Ok(Position {
            ino: i.parse().map_err(|_| bad())?,
            offset: o.parse().map_err(|_| bad())?,
        })
    }
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// A byte offset in the current file.
    Offset(u64),
    /// Where an earlier stream left off, possibly in a file rotated since.
    Resume(Position),
}

/// One piece of a stream and the position right after it.
pub struct Chunk {
    pub bytes: Bytes,
    pub end: Position,
}

struct Cursor {
    path: PathBuf,
    /// Where an earlier stream left off: the backlog is opened at the first step.
    resume: Option<Position>,
    /// Rotated files still to read, oldest first, before the live file.
    backlog: VecDeque<(File, u64)>,
    file: Option<File>,
    ino: u64,
    pos: u64,
    until: Until,
    /// SSE: hand out whole lines only, so every event id is a line boundary.
    whole_lines: bool,
    finished: bool,
}

/// Byte offset where the last `lines` lines of `path` start.
pub fn tail_offset(path: &std::path::Path, lines: usize) -> u64 {
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return 0;
    };
    if lines == 0 {
        return len;
    }
    let mut end = len;
    let mut seen = 0usize;
    let mut buf = vec![0u8; CHUNK];
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let n = (end - start) as usize;
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_exact(&mut buf[..n]).is_err() {
            return 0;
        }
        for i in memchr::memrchr_iter(b'\n', &buf[..n]) {
            // The file's last newline ends the last line; it does not start one.
            if start + i as u64 + 1 != len {
                seen += 1;
                if seen == lines {
                    return start + i as u64 + 1;
                }
            }
        }
        end = start;
    }
    0
}

/// Opens the rotated files newer than the one with `pos.ino`, for a resume.
fn backlog_for(path: &Path, pos: Position) -> (VecDeque<(File, u64)>, u64) {
    let live = std::fs::metadata(path).map(|m| m.ino()).ok();
    if live == Some(pos.ino) {
        return (VecDeque::new(), pos.offset);
    }
    let mut rotated = Vec::new();
    for n in 1..=MAX_ROTATED {
        let p = crate::logsink::rotate::rotated_path(path, n);
        match File::open(&p) {
            Ok(f) => rotated.push(f),
            Err(_) => break,
        }
    }
    // Oldest first.
    rotated.reverse();
    let found = rotated
        .iter()
        .position(|f| f.metadata().map(|m| m.ino()).ok() == Some(pos.ino));
    let mut out = VecDeque::new();
    // Not found: rotated away beyond log_keep; everything still kept follows.
    let (from, first_offset) = match found {
        Some(i) => (i, pos.offset),
        None => (0, 0),
    };
    for (i, f) in rotated.into_iter().enumerate().skip(from) {
        out.push_back((f, if i == from { first_offset } else { 0 }));
    }
    (out, 0)
}

/// The position a text response starts at, for `X-Log-Position`.
pub fn start_position(path: &Path, start: Start) -> Position {
    let ino = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
    match start {
        Start::Offset(offset) => Position { ino, offset },
        Start::Resume(p) => p,
    }
}

/// Reads up to one chunk at `pos`; in whole-line mode, only up to the last newline.
fn read_at(f: &mut File, pos: u64, whole_lines: bool) -> Vec<u8> {
    let mut buf = vec![0u8; CHUNK];
    let n = f
        .seek(SeekFrom::Start(pos))
        .and_then(|_| f.read(&mut buf))
        .unwrap_or(0);
    buf.truncate(n);
    if whole_lines {
        match memchr::memrchr(b'\n', &buf) {
            Some(i) => buf.truncate(i + 1),
            // A line longer than a chunk cannot happen in our logs (64 KiB pieces plus
            // a prefix can): hand it out as it is rather than stall.
            None if n == CHUNK => {}
            None => buf.clear(),
        }
    }
    buf
}

/// A stream of the log at `path` from `start`. The file work (opening, reading,
/// looking for a rotation, the `until` check) runs on the blocking pool, one chunk at
/// a time: LOGS may be a slow or network folder, and a follow must not hold an async
/// worker while it waits on it.
pub fn stream(
    path: PathBuf,
    start: Start,
    until: Until,
    cancel: CancellationToken,
    whole_lines: bool,
) -> impl futures_util::Stream<Item = Chunk> + Send {
    let (resume, pos) = match start {
        Start::Offset(o) => (None, o),
        Start::Resume(p) => (Some(p), 0),
    };
    let cursor = Cursor {
        path,
        resume,
        backlog: VecDeque::new(),
        file: None,
        ino: 0,
        pos,
        until,
        whole_lines,
        finished: false,
    };
    futures_util::stream::unfold(cursor, move |mut c| {
        let cancel = cancel.clone();
        async move {
            loop {
                let stepped = tokio::task::spawn_blocking(move || {
                    let step = c.step();
                    (c, step)
                })
                .await;
                // Only when the runtime shuts down.
                let Ok((next, step)) = stepped else {
                    return None;
                };
                c = next;
                match step {
                    Step::Chunk(chunk) => return Some((chunk, c)),
                    Step::End => return None,
                    Step::Wait => {}
                }
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    })
}

/// What a cursor found.
enum Step {
    Chunk(Chunk),
    /// Nothing new for now: look again after [`POLL`].
    Wait,
    End,
}

impl Cursor {
    /// Reads the next chunk, if there is one. Blocking file work.
    fn step(&mut self) -> Step {
        if self.finished {
            return Step::End;
        }
        if let Some(p) = self.resume.take() {
            (self.backlog, self.pos) = backlog_for(&self.path, p);
        }
        loop {
            // Rotated files first: complete, they only need reading to the end.
            if let Some((f, off)) = self.backlog.front_mut() {
                let bytes = read_at(f, *off, self.whole_lines);
                if bytes.is_empty() {
                    self.backlog.pop_front();
                    continue;
                }
                *off += bytes.len() as u64;
                let end = Position {
                    ino: f.metadata().map(|m| m.ino()).unwrap_or(0),
                    offset: *off,
                };
                return Step::Chunk(Chunk {
                    bytes: Bytes::from(bytes),
                    end,
                });
            }
            if self.file.is_none()
                && let Ok(f) = File::open(&self.path)
            {
                self.ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                self.file = Some(f);
            }
            if let Some(f) = self.file.as_mut() {
                let bytes = read_at(f, self.pos, self.whole_lines);
                if !bytes.is_empty() {
                    self.pos += bytes.len() as u64;
                    return Step::Chunk(self.chunk(bytes));
                }
                // At the end of the open file: was it rotated away?
                let now_ino = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
                if now_ino.is_some_and(|i| i != self.ino) {
                    self.file = None;
                    self.pos = 0;
                    continue;
                }
            }
            let done = match &self.until {
                Until::Now => true,
                Until::Done(f) => f(),
                Until::Forever => false,
            };
            if !done {
                return Step::Wait;
            }
            // One last read: the writer may have finished after our last look.
            if let Some(f) = self.file.as_mut() {
                let mut rest = Vec::new();
                if f.seek(SeekFrom::Start(self.pos)).is_ok()
                    && f.read_to_end(&mut rest).is_ok()
                    && !rest.is_empty()
                {
                    self.pos += rest.len() as u64;
                    self.finished = true;
                    return Step::Chunk(self.chunk(rest));
                }
            }
            return Step::End;
        }
    }

    /// `bytes` just read from the live file, ending at `pos`.
    fn chunk(&self, bytes: Vec<u8>) -> Chunk {
        Chunk {
            bytes: Bytes::from(bytes),
            end: Position {
                ino: self.ino,
                offset: self.pos,
            },
        }
    }
}

/// How often an idle event stream sends a comment, so proxies and clients that drop
/// quiet connections keep a follow of a log that has nothing new to say.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One server-sent event: the lines as `data:` fields, the end position as `id`.
/// SSE is text: bytes that are not UTF-8 are replaced (the plain text form keeps them).
///
/// The SSE grammar ends a line at `\r\n`, `\r` or `\n`, so the data is split at every
/// one of them: a bare `\r` left inside a `data:` line would end that line in the
/// client, and what follows it (`id: forged`, `event: x`) would be read as fields of
/// the event, chosen by the job. axum's `Event::data` splits at `\r` too, but keeps a
/// `\r\n` as two line ends (an empty line the job never wrote) and turns a final
/// newline into an empty last line; so the lines are cut here, as a log line is read,
/// and handed to axum joined by `\n` alone.
pub fn sse_event(chunk: &Chunk) -> axum::response::sse::Event {
    let text = String::from_utf8_lossy(&chunk.bytes);
    axum::response::sse::Event::default()
        .id(chunk.end.to_string())
        .data(sse_lines(&text).join("\n"))
}

/// The event-stream response for `chunks`: axum's SSE sets the event-stream type and
/// `no-cache`, and sends a keep-alive comment (`:`) whenever the log is quiet for
/// [`SSE_KEEP_ALIVE`].
pub fn sse_response(
    chunks: impl futures_util::Stream<Item = Chunk> + Send + 'static,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use axum::response::sse::{KeepAlive, Sse};
    use futures_util::StreamExt;
    let events = chunks.map(|c| Ok::<_, std::convert::Infallible>(sse_event(&c)));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
        .into_response()
}

/// `text` cut at `\r\n`, `\r` and `\n`; a final terminator ends the last line and
/// makes no empty one. The pieces contain neither `\r` nor `\n`.
fn sse_lines(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut lines = Vec::new();
    let mut start = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', bytes) {
        if i < start {
            // The `\n` of a `\r\n` already taken.
            continue;
        }
        lines.push(&text[start..i]);
        start = if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i + 2
        } else {
            i + 1
        };
    }
    if start < bytes.len() || lines.is_empty() {
        lines.push(&text[start..]);
    }
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn tail_offsets() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("log");
        std::fs::write(&p, "a\nbb\nccc\n").unwrap();
        assert_eq!(tail_offset(&p, 1), 5);
        assert_eq!(tail_offset(&p, 2), 2);
        assert_eq!(tail_offset(&p, 3), 0);
        assert_eq!(tail_offset(&p, 10), 0);
        assert_eq!(tail_offset(&p, 0), 9);
        std::fs::write(&p, "a\nbb").unwrap();
        assert_eq!(tail_offset(&p, 1), 2);
    }

    #[tokio::test]
    async fn follow_crosses_a_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("job_log.txt");
        std::fs::write(&p, "one\n").unwrap();
        let cancel = CancellationToken::new();
        let mut s = Box::pin(stream(
            p.clone(),
            Start::Offset(0),
            Until::Forever,
            cancel.clone(),
            false,
        ));
        assert_eq!(s.next().await.unwrap().bytes, Bytes::from("one\n"));
        std::fs::rename(&p, tmp.path().join("job_log.1.txt")).unwrap();
        std::fs::write(&p, "two\n").unwrap();
        assert_eq!(s.next().await.unwrap().bytes, Bytes::from("two\n"));
        cancel.cancel();
        assert!(s.next().await.is_none());
    }

    /// A client that read "a" and disconnected; the log then rotated twice. Resuming
    /// from the id it got yields exactly the lines it missed, in order, across files.
    #[tokio::test]
    async fn resume_after_rotations_misses_and_repeats_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("job_log.txt");
        std::fs::write(&p, "a\nb\n").unwrap();
        let first = {
            let mut s = Box::pin(stream(
                p.clone(),
                Start::Offset(0),
                Until::Now,
                CancellationToken::new(),
                true,
            ));
            s.next().await.unwrap()
        };
        // The client saw "a\nb\n" but pretend it only kept "a\n".
        let seen = Position {
            ino: first.end.ino,
            offset: 2,
        };
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        std::fs::rename(&p, tmp.path().join("job_log.1.txt")).unwrap();
        std::fs::write(&p, "d\n").unwrap();
        std::fs::rename(
            tmp.path().join("job_log.1.txt"),
            tmp.path().join("job_log.2.txt"),
        )
        .unwrap();
        std::fs::rename(&p, tmp.path().join("job_log.1.txt")).unwrap();
        std::fs::write(&p, "e\n").unwrap();
        let s = stream(
            p.clone(),
            Start::Resume(seen),
            Until::Now,
            CancellationToken::new(),
            true,
        );
        let got: Vec<u8> = s
            .flat_map(|c| futures_util::stream::iter(c.bytes.to_vec()))
            .collect()
            .await;
        assert_eq!(String::from_utf8(got).unwrap(), "b\nc\nd\ne\n");
    }

    /// The bytes axum sends for `events`, keep-alive aside.
    async fn wire(events: Vec<axum::response::sse::Event>) -> Bytes {
        use axum::response::IntoResponse;
        let stream =
            futures_util::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
        let resp = axum::response::sse::Sse::new(stream).into_response();
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_event_stream_sends_a_keep_alive_comment_every_15_s() {
        let chunk = Chunk {
            bytes: Bytes::from("x\n"),
            end: Position { ino: 1, offset: 2 },
        };
        let quiet = futures_util::stream::iter([chunk]).chain(futures_util::stream::pending());
        let resp = sse_response(quiet);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body().into_data_stream();
        let start = tokio::time::Instant::now();
        assert_eq!(
            body.next().await.unwrap().unwrap(),
            Bytes::from("id: 1:2\ndata: x\n\n")
        );
        for n in 1..=2 {
            assert_eq!(body.next().await.unwrap().unwrap(), Bytes::from(":\n\n"));
            // Paused time: the clock moved only as far as the keep-alive timer.
            assert_eq!(start.elapsed(), SSE_KEEP_ALIVE * n);
        }
    }

    #[tokio::test]
    async fn positions_and_events() {
        let p: Position = "12:345".parse().unwrap();
        assert_eq!(
            p,
            Position {
                ino: 12,
                offset: 345
            }
        );
        assert_eq!(p.to_string(), "12:345");
        assert!("12".parse::<Position>().is_err());
        let ev = sse_event(&Chunk {
            bytes: Bytes::from("x\ny\n"),
            end: p,
        });
        assert_eq!(
            wire(vec![ev]).await,
            Bytes::from("id: 12:345\ndata: x\ndata: y\n\n")
        );
    }

    #[tokio::test]
    async fn a_bare_cr_in_output_cannot_forge_sse_fields() {
        let ev = sse_event(&Chunk {
            bytes: Bytes::from("a\rid: forged\revent: x\r\nb\r\n\nc\n"),
            end: Position { ino: 1, offset: 2 },
        });
        assert_eq!(
            wire(vec![ev]).await,
            Bytes::from(
                "id: 1:2\ndata: a\ndata: id: forged\ndata: event: x\ndata: b\ndata: \ndata: c\n\n"
            )
        );
        assert_eq!(sse_lines("x"), ["x"]);
        assert_eq!(sse_lines(""), [""]);
        assert_eq!(sse_lines("x\r"), ["x"]);
        assert_eq!(sse_lines("x\r\r\ny"), ["x", "", "y"]);
        assert_eq!(sse_lines("\r\n\n\r"), ["", "", ""]);
    }
}
