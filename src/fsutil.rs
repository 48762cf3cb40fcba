//! Helpers for the files the host writes: atomic replacement, the one way times are
//! written in them (RFC 3339, UTC, milliseconds), and [`FileWriter`], which does a
//! task's file work on the blocking pool in the order the task asked for it.
//!
//! A file is written to a temporary name in the same folder, fsynced, then renamed
//! over the old one, so a reader sees either the old or the new file, never a partial
//! one, even if the host dies mid-write.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes `value` as pretty JSON to `path` atomically (tmp, fsync, rename).
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), WriteError> {
    write_atomic_bytes(path, &json_bytes(path, value)?)
}

/// `value` as the pretty JSON, ending in a newline, that [`write_atomic`] writes to
/// `path` (named in the error).
pub fn json_bytes<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, WriteError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| WriteError {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically (tmp, fsync, rename).
pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        // The folder usually exists: make it only when the first try says it does not.
        let mut f = match std::fs::File::create(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                std::fs::File::create(&tmp)?
            }
            other => other?,
        };
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// One task's file work, done on the blocking pool in the order asked, at most one
/// step at a time, so a slow disk delays the files and not the task.
///
/// A write replaces a write of the same file still waiting (the newest content is
/// the only one worth the fsync). A file handle given to [`FileWriter::close_after`]
/// (a lock) is closed only after the work asked before it, and can be taken back
/// while it waits. Failures go to the host log, named after `owner`.
#[derive(Clone)]
pub struct FileWriter {
    inner: Arc<WriterInner>,
}

struct WriterInner {
    owner: String,
    state: Mutex<WriterState>,
    /// Told each time the queue runs empty.
    idle: tokio::sync::Notify,
}

#[derive(Default)]
struct WriterState {
    ops: VecDeque<FileOp>,
    /// A blocking task is working through `ops`.
    running: bool,
}

enum FileOp {
    Write(PathBuf, Vec<u8>),
    Remove(PathBuf),
    Close(File),
}

impl FileWriter {
    pub fn new(owner: &str) -> Self {
        FileWriter {
            inner: Arc::new(WriterInner {
                owner: owner.to_string(),
                state: Mutex::new(WriterState::default()),
                idle: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Replaces `path` with `bytes` atomically ([`write_atomic_bytes`]).
    pub fn write(&self, path: PathBuf, bytes: Vec<u8>) {
        let mut st = self.inner.lock();
        // Only back to the last step that must stay between the two writes.
        for op in st.ops.iter_mut().rev() {
            match op {
                FileOp::Write(p, old) if *p == path => {
                    *old = bytes;
                    return;
                }
                FileOp::Remove(p) if *p == path => break,
                FileOp::Close(_) => break,
                _ => {}
            }
        }
        st.ops.push_back(FileOp::Write(path, bytes));
        self.kick(st);
    }

    /// Removes `path`; a missing file is no error.
    pub fn remove(&self, path: PathBuf) {
        let mut st = self.inner.lock();
        st.ops.push_back(FileOp::Remove(path));
        self.kick(st);
    }

    /// Closes `file` once the work asked before is done.
    pub fn close_after(&self, file: File) {
        let mut st = self.inner.lock();
        st.ops.push_back(FileOp::Close(file));
        self.kick(st);
    }

    /// Takes back a file given to [`FileWriter::close_after`] and not closed yet.
    pub fn reclaim(&self) -> Option<File> {
        let mut st = self.inner.lock();
        let at = st
            .ops
            .iter()
            .position(|op| matches!(op, FileOp::Close(_)))?;
        match st.ops.remove(at) {
            Some(FileOp::Close(file)) => Some(file),
            _ => None,
        }
    }

    /// Waits until everything asked so far is done.
    pub async fn flush(&self) {
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let st = self.inner.lock();
                if st.ops.is_empty() && !st.running {
                    return;
                }
            }
            idle.await;
        }
    }

    /// Starts working through the queue unless a task already is.
    fn kick(&self, mut st: MutexGuard<'_, WriterState>) {
        if st.running {
            return;
        }
        st.running = true;
        drop(st);
        let inner = self.inner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || inner.work());
            }
            // Outside a runtime (a tool, a test) there is no async worker to spare.
            Err(_) => inner.work(),
        }
    }
}

impl WriterInner {
    fn lock(&self) -> MutexGuard<'_, WriterState> {
        // Each change to the state is one step: sound after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        loop {
            let mut st = self.lock();
            let op = match st.ops.pop_front() {
                None => {
                    st.running = false;
                    drop(st);
                    self.idle.notify_waiters();
                    return;
                }
                // Closed under the lock: `reclaim` sees it either waiting or closed,
                // never a lock released a moment after it was looked for.
                Some(FileOp::Close(file)) => {
                    drop(file);
                    continue;
                }
                Some(op) => op,
            };
            drop(st);
            let result = match op {
                FileOp::Write(path, bytes) => write_atomic_bytes(&path, &bytes),
                FileOp::Remove(path) => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(WriteError { path, source: e })
                    }
                    _ => Ok(()),
                },
                FileOp::Close(_) => Ok(()),
            };
            if let Err(e) = result {
                tracing::error!(job = %self.owner, "{e}");
            }
        }
    }
}

/// How every file and API answer writes a time: UTC, milliseconds, `Z`.
pub fn rfc3339_string(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `#[serde(with = "rfc3339")]` for a `DateTime<Utc>` field.
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339_string(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "rfc3339_opt")]` for an `Option<DateTime<Utc>>` field.
pub mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339_string(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_bytes_replace_the_file_and_leave_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b.txt");
        write_atomic_bytes(&path, b"one").unwrap();
        write_atomic_bytes(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b.txt")]);
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Outside a runtime the work is done at once, in order.
    #[test]
    fn without_a_runtime_the_writer_works_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("d/status.json");
        let w = FileWriter::new("job");
        w.write(path.clone(), b"one".to_vec());
        assert_eq!(read(&path), "one");
        w.remove(path.clone());
        assert!(!path.exists());
    }

    /// A queue held up behind a slow step: the newest content of a file replaces the
    /// waiting one, a removal stays between the writes around it, and a lock waits
    /// for the writes asked before it and can be taken back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn latest_write_wins_and_the_order_of_the_steps_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a.json"), tmp.path().join("b.json"));
        let w = FileWriter::new("job");
        // As if a task were busy with a slow step: nothing runs until `kick` below.
        w.inner.lock().running = true;
        w.write(a.clone(), b"a1".to_vec());
        w.write(b.clone(), b"b1".to_vec());
        w.write(a.clone(), b"a2".to_vec());
        w.remove(b.clone());
        w.write(b.clone(), b"b2".to_vec());
        let lock = File::create(tmp.path().join("lock")).unwrap();
        w.close_after(lock);
        w.write(a.clone(), b"a3".to_vec());
        assert!(w.reclaim().is_some(), "the lock is taken back");
        assert!(w.reclaim().is_none());
        {
            let st = w.inner.lock();
            let steps: Vec<String> = st
                .ops
                .iter()
                .map(|op| match op {
                    FileOp::Write(p, bytes) => format!(
                        "write {} {}",
                        p.file_name().unwrap().to_string_lossy(),
                        String::from_utf8_lossy(bytes)
                    ),
                    FileOp::Remove(p) => {
                        format!("remove {}", p.file_name().unwrap().to_string_lossy())
                    }
                    FileOp::Close(_) => "close".into(),
                })
                .collect();
            assert_eq!(
                steps,
                [
                    "write a.json a2",
                    "write b.json b1",
                    "remove b.json",
                    "write b.json b2",
                    "write a.json a3"
                ]
            );
        }
        {
            let mut st = w.inner.lock();
            st.running = false;
            w.kick(st);
        }
        w.flush().await;
        assert_eq!(read(&a), "a3");
        assert_eq!(read(&b), "b2");
    }

    /// A write that fails is logged, and the steps after it still happen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_failed_step_does_not_stop_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let w = FileWriter::new("job");
        // A file where the folder should be: the write cannot succeed.
        w.write(blocker.join("status.json"), b"x".to_vec());
        w.write(tmp.path().join("ok.json"), b"ok".to_vec());
        w.flush().await;
        assert_eq!(read(&tmp.path().join("ok.json")), "ok");
    }

    #[test]
    fn times_are_rfc3339_utc_with_millis() {
        let t = DateTime::parse_from_rfc3339("2026-11-30T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339_string(t), "2026-11-30T10:00:00.123Z");
    }
}
