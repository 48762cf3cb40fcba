//! Coordination by lock files in LOGS (docs/jobs.md, "Several hosts on one folder"):
//! hosts of one machine sharing a LOGS folder (each with its `--instance` name) take
//! `flock`s on files there. A continuous singleton's lock is
//! `continuous/JOB/singleton.lock` (see `LogsLayout`); a triggered job's run lock is
//! `triggered/JOB/run.lock`, taken only when other hosts may share these LOGS. Nothing is renewed: the kernel drops a lock with its holder. The latest
//! fire is read from the job's records.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, ready};

use super::{Coordination, Refused, Renewal, RunHold, RunHow, SingletonHold, SingletonHow};
use crate::fsutil::FileWriter;
use crate::job::triggered::records;
use crate::layout::LogsLayout;
use crate::spec::JobType;

/// Lock files in `layout`'s LOGS.
pub struct Files {
    layout: LogsLayout,
}

impl Files {
    pub fn new(layout: LogsLayout) -> Files {
        Files { layout }
    }

    fn run_lock_path(&self, job: &str) -> PathBuf {
        self.layout
            .job_dir(JobType::Triggered, job)
            .join("run.lock")
    }

    /// Opens (creating it and its folder, on the blocking pool: LOGS may be a slow or
    /// network folder) and locks the singleton's lock file.
    fn lock_singleton(
        &self,
        job: &str,
        files: &FileWriter,
    ) -> BoxFuture<'static, Result<SingletonHold, Option<String>>> {
        let path = self.layout.singleton_lock(job);
        let inactive = self.layout.inactive_status_file(job);
        let files = files.clone();
        async move {
            // Released a moment ago and still waiting for the status writes before it:
            // still ours.
            let file = match files.reclaim() {
                Some(file) => file,
                None => {
                    let shown = path.display().to_string();
                    let file = tokio::task::spawn_blocking(move || open_lock(&path))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                        .map_err(|e| Some(format!("opening singleton lock {shown}: {e}")))?;
                    file.try_lock().map_err(|_| None)?;
                    file
                }
            };
            // The holder writes the job's one status file: this host's inactive one goes.
            if let Some(p) = inactive {
                files.remove(p);
            }
            Ok(SingletonHold {
                how: SingletonHow::File(file),
            })
        }
        .boxed()
    }
}

impl Coordination for Files {
    fn logs_alone(&self) -> bool {
        self.layout.instance.is_none()
    }

    fn take_singleton(
        &self,
        job: &str,
        files: &FileWriter,
    ) -> BoxFuture<'static, Result<SingletonHold, Option<String>>> {
        self.lock_singleton(job, files)
    }

    fn renew_singleton<'a>(&'a self, _hold: &'a mut SingletonHold) -> BoxFuture<'a, Renewal> {
        ready(Renewal::Kept).boxed()
    }

    fn release_singleton(&self, hold: SingletonHold, files: &FileWriter) -> BoxFuture<'static, ()> {
        match hold.how {
            // Closed after the status writes asked before it: whoever takes the lock
            // next finds them on disk.
            SingletonHow::File(file) => files.close_after(file),
            SingletonHow::Lease(_) => {}
        }
        ready(()).boxed()
    }

    fn lead(&self) -> Option<Duration> {
        None
    }

    /// A busy lock is asked again for a moment: while any process of this host forks
    /// (every run start), the child holds a copy of each open descriptor until it
    /// execs, and so, for that instant, our own just-released lock.
    fn take_run(
        &self,
        job: &str,
        _fire: Option<DateTime<Utc>>,
    ) -> BoxFuture<'static, Result<Option<RunHold>, Refused>> {
        // A host without an instance name is alone on its LOGS by definition
        // (docs/jobs.md) and needs no lock.
        if self.layout.instance.is_none() {
            return ready(Ok(None)).boxed();
        }
        let path = self.run_lock_path(job);
        async move {
            // Opened on the blocking pool: LOGS may be a slow or network folder.
            let opened = tokio::task::spawn_blocking(move || open_lock(&path)).await;
            let f = opened
                .map_err(|_| Refused::Busy)?
                .map_err(|_| Refused::Busy)?;
            for _ in 0..20 {
                if f.try_lock().is_ok() {
                    return Ok(Some(RunHold {
                        how: RunHow::File(f),
                        last_fired: None,
                        claimed: None,
                    }));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(Refused::Busy)
        }
        .boxed()
    }

    fn take_run_ahead(
        &self,
        _job: &str,
        _occurrence: DateTime<Utc>,
    ) -> BoxFuture<'static, Option<RunHold>> {
        ready(None).boxed()
    }

    fn renew_run<'a>(&'a self, _job: &'a str, _hold: &'a mut RunHold) -> BoxFuture<'a, Renewal> {
        ready(Renewal::Kept).boxed()
    }

    /// The run lock and the records decide: nothing to claim.
    fn claim_fire(&self, _job: &str, _at: DateTime<Utc>) -> BoxFuture<'static, Result<(), String>> {
        ready(Ok(())).boxed()
    }

    /// Read from the job's records (its state file and its runs' `scheduled_for`), on
    /// the blocking pool.
    fn last_fired(
        &self,
        job: &str,
        _hold: Option<&RunHold>,
    ) -> BoxFuture<'static, Option<DateTime<Utc>>> {
        let logs = self.layout.job_dir(JobType::Triggered, job);
        async move {
            tokio::task::spawn_blocking(move || records::load_last_fired(&logs))
                .await
                .ok()
                .flatten()
        }
        .boxed()
    }
}

/// Opens (creating it and its folder if need be) the lock file at `path`.
fn open_lock(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}
