//! The size-rotated log file. Owns the open handle and the size it has reached.
//! Rotation is by rename (`job_log.txt` -> `job_log.1.txt` -> `job_log.2.txt` ...), never
//! copy-and-truncate: a reader following the file by name (`jobhost logs -f`) then sees
//! a fresh file instead of a truncated one, and no byte is written twice or lost
//! between the copy and the truncate.
//!
//! Written by hand rather than with a rotating-file crate: those rotate by time or
//! copy-and-truncate, number files the other way round, or own the writer; here the
//! sink needs rename-only rotation in Kudu's numbering, `log_keep` files, an inode a
//! follower can track through the renames, and every failure named with its file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

/// A failed operation on a log file, naming the file and what was being done to it.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("creating log folder {}: {}", .path.display(), reason(.source))]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening log file {}: {}", .path.display(), reason(.source))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `written` bytes of the buffer reached the file before the error.
    #[error("writing log file {}: {}", .path.display(), reason(.source))]
    Write {
        path: PathBuf,
        written: usize,
        #[source]
        source: io::Error,
    },
    #[error("rotating log file {} to {}: {}", .from.display(), .to.display(), reason(.source))]
    Rotate {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("removing old log file {}: {}", .path.display(), reason(.source))]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LogError {
    /// How many bytes of the buffer given to `write_all` reached the file anyway.
    pub fn written(&self) -> usize {
        match self {
            LogError::Write { written, .. } => *written,
            _ => 0,
        }
    }
}

/// `io::Error` prints "Permission denied (os error 13)"; the code adds nothing for the
/// reader of a log line or status.json, and `source` still carries it.
fn reason(err: &io::Error) -> String {
    let mut text = err.to_string();
    if let Some(at) = text.find(" (os error ") {
        text.truncate(at);
    }
    text
}

/// The name of the `n`th rotated file: `.N` goes before the extension
/// (`job_log.txt` -> `job_log.1.txt`, `job_log-web1.txt` -> `job_log-web1.1.txt`); a
/// name without extension gets `.N` appended.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let Some(stem) = path.file_stem() else {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        return PathBuf::from(name);
    };
    let mut name = stem.to_owned();
    name.push(format!(".{n}"));
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

/// An append-mode file that rotates by rename when it passes `max_bytes`, keeping
/// `keep` rotated files. Opened lazily, and closed after any error so that the next
/// write opens the path again: the folder may have been recreated or the disk freed.
///
/// No `BufWriter`: the sink batches, so every `write_all` goes straight to the file.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl RotatingFile {
    /// Does not touch the file system; the first write opens the file.
    pub fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        Self {
            path,
            max_bytes,
            keep,
            file: None,
            size: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn set_limits(&mut self, max_bytes: u64, keep: u32) {
        self.max_bytes = max_bytes;
        self.keep = keep;
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn keep(&self) -> u32 {
        self.keep
    }

    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Size of the file as far as this handle knows (0 while closed).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Opens the file if it is not open: append mode, created with its parent folders
    /// if missing, size taken from its metadata.
    pub fn open(&mut self) -> Result<(), LogError> {
        self.handle().map(|_| ())
    }

    /// [`RotatingFile::open`] for a file the caller has just made empty (a triggered
    /// run's log): its size is known, so it is not asked for.
    pub fn open_empty(&mut self) -> Result<(), LogError> {
        if self.file.is_none() {
            self.file = Some(open_creating(&self.path)?);
            self.size = 0;
        }
        Ok(())
    }

    fn handle(&mut self) -> Result<&mut File, LogError> {
        let file = match self.file.take() {
            Some(file) => file,
            None => {
                let file = open_creating(&self.path)?;
                self.size = file
                    .metadata()
                    .map_err(|source| LogError::Open {
                        path: self.path.clone(),
                        source,
                    })?
                    .len();
                file
            }
        };
        Ok(self.file.insert(file))
    }

    /// Opens the file if needed and writes all of `buf`. On error the handle is closed
    /// so that the next call opens the path again.
    pub fn write_all(&mut self, buf: &[u8]) -> Result<(), LogError> {
        let file = self.handle()?;
        let mut written = 0;
        let mut failure = None;
        while written < buf.len() {
            match file.write(&buf[written..]) {
                Ok(0) => {
                    failure = Some(io::Error::from(ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => written += n,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        self.size += written as u64;
        match failure {
            None => Ok(()),
            Some(source) => {
                self.file = None;
                Err(LogError::Write {
                    path: self.path.clone(),
                    written,
                    source,
                })
            }
        }
    }

    /// True when the current size is past `max_bytes`.
    pub fn needs_rotation(&self) -> bool {
        self.file.is_some() && self.size > self.max_bytes
    }

    /// Renames the file and its rotated predecessors one step up, deleting what falls
    /// beyond `keep` (with `keep` 0 the file itself is deleted). Returns the newest
    /// rotated file, `None` when `keep` is 0. The fresh file is opened by the next
    /// write, so an error there is reported by that write.
    pub fn rotate(&mut self) -> Result<Option<PathBuf>, LogError> {
        // Close before renaming, or later writes would land in the rotated file.
        self.file = None;
        self.size = 0;
        // Files beyond `keep`, left when log_keep was lowered; a gap ends the search.
        let mut n = self.keep;
        while let Some(next) = n.checked_add(1) {
            n = next;
            if !remove_if_exists(&rotated_path(&self.path, n))? {
                break;
            }
        }
        if self.keep == 0 {
            remove_if_exists(&self.path)?;
            return Ok(None);
        }
        // Delete the oldest rather than rename onto it: ext4 (auto_da_alloc) flushes a
        // file renamed over another one, which made rotation a synchronous disk write.
        remove_if_exists(&rotated_path(&self.path, self.keep))?;
        for n in (1..self.keep).rev() {
            rename_if_exists(
                &rotated_path(&self.path, n),
                &rotated_path(&self.path, n + 1),
            )?;
        }
        let newest = rotated_path(&self.path, 1);
        rename_if_exists(&self.path, &newest)?;
        Ok(Some(newest))
    }

    pub fn flush(&mut self) -> Result<(), LogError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.flush().map_err(|source| {
            self.file = None;
            LogError::Write {
                path: self.path.clone(),
                written: 0,
                source,
            }
        })
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// Opens for appending; the parent folders are created only when the first try says
/// they are missing, so the common reopen costs one syscall.
fn open_creating(path: &Path) -> Result<File, LogError> {
    let file = match open_append(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|source| LogError::CreateDir {
                    path: parent.to_owned(),
                    source,
                })?;
            }
            open_append(path)
        }
        other => other,
    };
    file.map_err(|source| LogError::Open {
        path: path.to_owned(),
        source,
    })
}

/// True if a file was removed, false if there was none.
fn remove_if_exists(path: &Path) -> Result<bool, LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(LogError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> Result<(), LogError> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Rotate {
            from: from.to_owned(),
            to: to.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn rotated_names() {
        let table = [
            (
                "logs/continuous/x/job_log.txt",
                1,
                "logs/continuous/x/job_log.1.txt",
            ),
            (
                "logs/continuous/x/job_log.txt",
                12,
                "logs/continuous/x/job_log.12.txt",
            ),
            ("job_log-web1.txt", 2, "job_log-web1.2.txt"),
            ("a/output_log.txt", 3, "a/output_log.3.txt"),
            ("a/job_scheduler.log", 1, "a/job_scheduler.1.log"),
            ("a/noext", 1, "a/noext.1"),
            ("a/.hidden", 1, "a/.hidden.1"),
            ("a/x.tar.gz", 1, "a/x.tar.1.gz"),
        ];
        for (path, n, expected) in table {
            assert_eq!(
                rotated_path(Path::new(path), n),
                PathBuf::from(expected),
                "{path} {n}"
            );
        }
    }

    #[test]
    fn first_write_creates_folders_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/continuous/x/job_log.txt");
        let mut file = RotatingFile::new(path.clone(), 1000, 2);
        assert!(!path.exists(), "new() must not open");
        file.write_all(b"one\n").unwrap();
        file.write_all(b"two\n").unwrap();
        file.flush().unwrap();
        assert_eq!(read(&path), "one\ntwo\n");
        assert_eq!(file.size(), 8);
    }

    #[test]
    fn reopening_appends_and_takes_the_size_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_log.txt");
        fs::write(&path, "earlier\n").unwrap();
        let mut file = RotatingFile::new(path.clone(), 10, 1);
        file.open().unwrap();
        assert_eq!(file.size(), 8);
        assert!(!file.needs_rotation());
        file.write_all(b"later\n").unwrap();
        assert_eq!(read(&path), "earlier\nlater\n");
        assert!(file.needs_rotation());
    }

    #[test]
    fn rotation_cascades_and_keeps_only_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_log.txt");
        let mut file = RotatingFile::new(path.clone(), 4, 2);
        for round in 1..=4 {
            file.write_all(format!("round {round}\n").as_bytes())
                .unwrap();
            assert!(file.needs_rotation());
            let newest = file.rotate().unwrap();
            assert_eq!(newest, Some(dir.path().join("job_log.1.txt")));
            assert!(!path.exists());
        }
        assert_eq!(read(&dir.path().join("job_log.1.txt")), "round 4\n");
        assert_eq!(read(&dir.path().join("job_log.2.txt")), "round 3\n");
        assert!(!dir.path().join("job_log.3.txt").exists());
        file.write_all(b"fresh\n").unwrap();
        assert_eq!(read(&path), "fresh\n");
        assert_eq!(file.size(), 6);
    }

    #[test]
    fn keep_zero_deletes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_log.txt");
        let mut file = RotatingFile::new(path.clone(), 4, 0);
        file.write_all(b"gone soon\n").unwrap();
        assert_eq!(file.rotate().unwrap(), None);
        assert!(!path.exists());
        assert!(!dir.path().join("job_log.1.txt").exists());
        file.write_all(b"new\n").unwrap();
        assert_eq!(read(&path), "new\n");
    }

    #[test]
    fn lowering_keep_deletes_the_surplus() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_log.txt");
        for n in 1..=5 {
            fs::write(rotated_path(&path, n), format!("old {n}\n")).unwrap();
        }
        let mut file = RotatingFile::new(path.clone(), 4, 5);
        file.set_limits(4, 2);
        file.write_all(b"current\n").unwrap();
        file.rotate().unwrap();
        assert_eq!(read(&dir.path().join("job_log.1.txt")), "current\n");
        assert_eq!(read(&dir.path().join("job_log.2.txt")), "old 1\n");
        for n in 3..=6 {
            assert!(!rotated_path(&path, n).exists(), "{n}");
        }
    }

    #[test]
    fn open_error_names_the_path_and_the_verb() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("blocker"), "a file, not a folder").unwrap();
        let path = dir.path().join("blocker/job_log.txt");
        let mut file = RotatingFile::new(path.clone(), 1000, 1);
        let err = file.write_all(b"x\n").unwrap_err();
        assert!(matches!(err, LogError::Open { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("opening log file {}: Not a directory", path.display())
        );
        assert!(!file.is_open());
    }

    #[test]
    fn missing_folder_that_cannot_be_created_is_a_create_dir_error() {
        let dir = tempfile::tempdir().unwrap();
        // A dangling link: opening says NotFound, and creating the folder then fails.
        let link = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere/deeper"), &link).unwrap();
        let path = link.join("sub/job_log.txt");
        let err = RotatingFile::new(path, 1000, 1)
            .write_all(b"x\n")
            .unwrap_err();
        assert!(matches!(err, LogError::CreateDir { .. }), "{err:?}");
        let prefix = format!("creating log folder {}: ", link.join("sub").display());
        assert!(err.to_string().starts_with(&prefix), "{err}");
    }

    #[test]
    fn write_error_closes_the_handle_and_the_next_write_retries() {
        let mut file = RotatingFile::new(PathBuf::from("/dev/full"), u64::MAX, 1);
        let err = file.write_all(b"x\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "writing log file /dev/full: No space left on device"
        );
        assert_eq!(err.written(), 0);
        assert!(!file.is_open());
        assert!(file.write_all(b"y\n").is_err());
    }

    #[test]
    fn failed_rotation_leaves_the_file_writable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_log.txt");
        // A folder where the oldest rotated file is: it cannot be deleted as a file.
        let obstacle = dir.path().join("job_log.1.txt");
        fs::create_dir(&obstacle).unwrap();
        fs::write(obstacle.join("keepme"), "").unwrap();
        let mut file = RotatingFile::new(path.clone(), 1, 1);
        file.write_all(b"before\n").unwrap();
        let err = file.rotate().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "removing old log file {}: Is a directory",
                obstacle.display()
            )
        );
        file.write_all(b"after\n").unwrap();
        assert_eq!(read(&path), "before\nafter\n");
        assert_eq!(file.size(), 13);
        assert!(file.needs_rotation());
    }

    #[test]
    fn error_messages_name_the_path_and_the_verb() {
        let denied = || io::Error::from_raw_os_error(13);
        let path = PathBuf::from("logs/continuous/x/job_log.txt");
        let table = [
            (
                LogError::CreateDir {
                    path: PathBuf::from("logs/continuous/x"),
                    source: denied(),
                },
                "creating log folder logs/continuous/x: Permission denied",
            ),
            (
                LogError::Open {
                    path: path.clone(),
                    source: denied(),
                },
                "opening log file logs/continuous/x/job_log.txt: Permission denied",
            ),
            (
                LogError::Write {
                    path: path.clone(),
                    written: 3,
                    source: io::Error::from_raw_os_error(28),
                },
                "writing log file logs/continuous/x/job_log.txt: No space left on device",
            ),
            (
                LogError::Rotate {
                    from: path.clone(),
                    to: rotated_path(&path, 1),
                    source: denied(),
                },
                "rotating log file logs/continuous/x/job_log.txt to \
                 logs/continuous/x/job_log.1.txt: Permission denied",
            ),
            (
                LogError::Remove {
                    path: rotated_path(&path, 5),
                    source: denied(),
                },
                "removing old log file logs/continuous/x/job_log.5.txt: Permission denied",
            ),
        ];
        for (err, expected) in table {
            assert_eq!(err.to_string(), expected);
        }
        // Errors without an OS code keep their whole text.
        let custom = LogError::Write {
            path,
            written: 0,
            source: io::Error::from(ErrorKind::WriteZero),
        };
        assert_eq!(
            custom.to_string(),
            "writing log file logs/continuous/x/job_log.txt: write zero"
        );
    }
}
