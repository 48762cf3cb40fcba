//! Where things live under LOGS (docs/jobs.md, docs/logs.md), in one place: the host
//! writes these names and the CLI (online and offline) reads them, so both take them
//! from here.
//!
//! With an instance name, files that two hosts sharing LOGS would both write carry
//! it; a singleton's files do not, because only the lock holder writes them.

use std::path::{Path, PathBuf};

use crate::spec::JobType;

/// The API token, created by the first host on LOGS (docs/security.md).
pub const TOKEN_FILE: &str = ".jobhost-token";
/// The lock every host takes on LOGS (exclusive or shared, see `hostlock`).
pub const LOCK_FILE: &str = ".jobhost.lock";
/// A triggered run's output, in its `RUN_ID` folder.
pub const RUN_OUTPUT: &str = "output_log.txt";
/// A triggered run's record, in its `RUN_ID` folder.
pub const RUN_RECORD: &str = "status.json";
/// A triggered job's scheduler log, in its job folder.
pub const SCHEDULER_LOG: &str = "job_scheduler.log";
/// A triggered job's last fired occurrence, in its job folder.
pub const SCHEDULER_STATE: &str = "scheduler_state.json";

/// Where the CLI on this machine finds the running host's address.
pub fn url_file(logs: &Path, instance: Option<&str>) -> PathBuf {
    match instance {
        Some(i) => logs.join(format!(".jobhost-url-{i}")),
        None => logs.join(".jobhost-url"),
    }
}

/// The lock a host with an instance name takes exclusively.
pub fn instance_lock_file(logs: &Path, instance: &str) -> PathBuf {
    logs.join(format!(".jobhost-{instance}.lock"))
}

/// The instance name in a file name written by [`instance_lock_file`].
pub fn instance_of_lock_file(file_name: &str) -> Option<&str> {
    file_name.strip_prefix(".jobhost-")?.strip_suffix(".lock")
}

#[derive(Debug, Clone)]
pub struct LogsLayout {
    pub root: PathBuf,
    pub instance: Option<String>,
}

impl LogsLayout {
    pub fn new(root: PathBuf, instance: Option<String>) -> LogsLayout {
        LogsLayout { root, instance }
    }

    pub fn host_log(&self) -> PathBuf {
        match &self.instance {
            Some(i) => self.root.join(format!("host-{i}.log")),
            None => self.root.join("host.log"),
        }
    }

    pub fn job_dir(&self, job_type: JobType, name: &str) -> PathBuf {
        self.root.join(job_type.as_str()).join(name)
    }

    fn per_instance(&self, dir: &Path, stem: &str, ext: &str, singleton: bool) -> PathBuf {
        match (&self.instance, singleton) {
            (Some(i), false) => dir.join(format!("{stem}-{i}.{ext}")),
            _ => dir.join(format!("{stem}.{ext}")),
        }
    }

    pub fn job_log(&self, name: &str, singleton: bool) -> PathBuf {
        let dir = self.job_dir(JobType::Continuous, name);
        self.per_instance(&dir, "job_log", "txt", singleton)
    }

    pub fn status_file(&self, name: &str, singleton: bool) -> PathBuf {
        let dir = self.job_dir(JobType::Continuous, name);
        self.per_instance(&dir, "status", "json", singleton)
    }

    /// Where a singleton's non-holder reports itself (`InactiveInstance`), when named.
    pub fn inactive_status_file(&self, name: &str) -> Option<PathBuf> {
        let dir = self.job_dir(JobType::Continuous, name);
        self.instance
            .as_ref()
            .map(|i| dir.join(format!("status-{i}.json")))
    }

    pub fn singleton_lock(&self, name: &str) -> PathBuf {
        self.job_dir(JobType::Continuous, name)
            .join("singleton.lock")
    }

    /// A triggered run's output file.
    pub fn run_output(&self, name: &str, run_id: &str) -> PathBuf {
        self.job_dir(JobType::Triggered, name)
            .join(run_id)
            .join(RUN_OUTPUT)
    }

    pub fn scheduler_log(&self, name: &str) -> PathBuf {
        self.job_dir(JobType::Triggered, name).join(SCHEDULER_LOG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_only_where_two_hosts_would_collide() {
        let alone = LogsLayout::new("L".into(), None);
        let named = LogsLayout::new("L".into(), Some("web1".into()));
        assert_eq!(alone.host_log(), Path::new("L/host.log"));
        assert_eq!(named.host_log(), Path::new("L/host-web1.log"));
        assert_eq!(
            alone.job_log("a", false),
            Path::new("L/continuous/a/job_log.txt")
        );
        assert_eq!(
            named.job_log("a", false),
            Path::new("L/continuous/a/job_log-web1.txt")
        );
        assert_eq!(
            named.job_log("a", true),
            Path::new("L/continuous/a/job_log.txt")
        );
        assert_eq!(
            named.status_file("a", false),
            Path::new("L/continuous/a/status-web1.json")
        );
        assert_eq!(
            named.status_file("a", true),
            Path::new("L/continuous/a/status.json")
        );
    }
}
