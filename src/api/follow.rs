//! Log files over HTTP: a plain read, a tail, or a follow that keeps streaming.
//!
//! A follow holds the file open and, at its end, looks at the path again: when the
//! path names another file, the log was rotated (renamed away, a new one created), so
//! the rest of the old file has already been read through the open handle and the
//! stream moves on to the new file. A run's output follow ends when the run has ended
//! and everything is read; a job log follow ends only when the client goes away or
//! the host stops. The response carries `X-Log-Offset`, the byte offset in the file
//! where it starts, so a client that reconnects can ask for `offset=` where it left.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

const CHUNK: usize = 64 * 1024;
const POLL: Duration = Duration::from_millis(200);

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

struct Cursor {
    path: PathBuf,
    file: Option<std::fs::File>,
    ino: u64,
    pos: u64,
    until: Until,
    cancel: CancellationToken,
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
        for i in (0..n).rev() {
            // The file's last newline ends the last line; it does not start one.
            if buf[i] == b'\n' && start + i as u64 + 1 != len {
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

/// A stream of the file's bytes from `offset`.
pub fn stream(
    path: PathBuf,
    offset: u64,
    until: Until,
    cancel: CancellationToken,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let cursor = Cursor {
        path,
        file: None,
        ino: 0,
        pos: offset,
        until,
        cancel,
        finished: false,
    };
    futures_util::stream::unfold(cursor, |mut c| async move {
        if c.finished {
            return None;
        }
        loop {
            if c.file.is_none()
                && let Ok(f) = std::fs::File::open(&c.path)
            {
                c.ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                c.file = Some(f);
            }
            if let Some(f) = c.file.as_mut() {
                let mut buf = vec![0u8; CHUNK];
                let n = f
                    .seek(SeekFrom::Start(c.pos))
                    .and_then(|_| f.read(&mut buf))
                    .unwrap_or(0);
                if n > 0 {
                    c.pos += n as u64;
                    buf.truncate(n);
                    return Some((Ok(Bytes::from(buf)), c));
                }
                // At the end of the open file: was it rotated away?
                let now_ino = std::fs::metadata(&c.path).map(|m| m.ino()).ok();
                if now_ino.is_some_and(|i| i != c.ino) {
                    c.file = None;
                    c.pos = 0;
                    continue;
                }
            }
            let done = match &c.until {
                Until::Now => true,
                Until::Done(f) => f(),
                Until::Forever => false,
            };
            if done {
                // One last read: the writer may have finished after our last look.
                if let Some(f) = c.file.as_mut() {
                    let mut rest = Vec::new();
                    if f.seek(SeekFrom::Start(c.pos)).is_ok()
                        && f.read_to_end(&mut rest).is_ok()
                        && !rest.is_empty()
                    {
                        c.finished = true;
                        return Some((Ok(Bytes::from(rest)), c));
                    }
                }
                return None;
            }
            tokio::select! {
                _ = c.cancel.cancelled() => return None,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
        use futures_util::StreamExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("job_log.txt");
        std::fs::write(&p, "one\n").unwrap();
        let cancel = CancellationToken::new();
        let mut s = Box::pin(stream(p.clone(), 0, Until::Forever, cancel.clone()));
        assert_eq!(s.next().await.unwrap().unwrap(), Bytes::from("one\n"));
        std::fs::rename(&p, tmp.path().join("job_log.1.txt")).unwrap();
        std::fs::write(&p, "two\n").unwrap();
        assert_eq!(s.next().await.unwrap().unwrap(), Bytes::from("two\n"));
        cancel.cancel();
        assert!(s.next().await.is_none());
    }
}
