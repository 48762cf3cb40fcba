//! The job registry: the jobs the supervisor runs, as the API sees them, and the one
//! way to write into JOBS from the API.
//!
//! Reads (`get`, `entries`) take a snapshot of the supervisor's view. Writes
//! (`set_disabled`, `write_settings`, `install`, `remove`) do the file work on the
//! blocking pool, then have the supervisor rescan that one job at once and wait until
//! the job's task has applied what is there now. A write and the registry's view
//! therefore change in one call: when it returns, the very next request sees the
//! write, without waiting for the watcher (which would only rescan the same folder a
//! moment later and find nothing new).
//!
//! Route handlers stay translators: they parse a request, call one method here and
//! build the answer from its result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::deploy::{self, DeployError, Staging, Upload};
use crate::scan::{DISABLE_FILE, JobDefinition};
use crate::spec::JobType;
use crate::spec::settings::{self, SettingsError, Warning};

use super::Control;

/// How long a write waits for the job's task to apply it. A task busy stopping a run
/// that ignores SIGTERM answers late; the registry already shows the write then.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// The supervisor's view: every job task's handle and the definition it was last sent.
pub type Jobs = BTreeMap<(JobType, String), RegistryEntry>;

/// One job as the API sees it.
#[derive(Clone)]
pub struct RegistryEntry {
    pub handle: crate::job::JobHandle,
    pub def: Arc<JobDefinition>,
}

/// Problems with entries of JOBS that are not jobs (bad names, files), for the API.
pub type Problems = Arc<RwLock<Vec<String>>>;

/// What a write through the registry can meet. Each message names the file and
/// what to do; the API picks the status code.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no {job_type} job named `{name}`")]
    NoSuchJob { job_type: JobType, name: String },
    #[error(
        "settings not saved: the body is {size} bytes; settings.job may be at most {limit}: shorten it"
    )]
    SettingsTooLarge { size: usize, limit: u64 },
    #[error(
        "settings not saved: the body is empty; send a JSON object (`{{}}` resets every key to its default); {} is unchanged",
        path.display()
    )]
    SettingsEmpty { path: PathBuf },
    #[error("settings not saved: {0}")]
    SettingsInvalid(SettingsError),
    #[error("{verb} {}: {source}", path.display())]
    Io {
        verb: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A write of settings.job that failed (the atomic write's own message).
    #[error(transparent)]
    Save(#[from] crate::fsutil::WriteError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// The blocking thread doing the file work died (a panic): nothing to retry.
    #[error("{what} {}: the file work stopped unexpectedly: {why}", path.display())]
    Lost {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
}

/// What `install` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// There was no job of that name: it is new.
    Created,
    /// A job of that name was there and is replaced.
    Replaced,
}

/// The API's handle on the supervisor's registry. Cheap to clone.
#[derive(Clone)]
pub struct JobRegistry {
    jobs: Arc<RwLock<Jobs>>,
    problems: Problems,
    jobs_root: PathBuf,
    control: mpsc::UnboundedSender<Control>,
}

impl JobRegistry {
    pub(super) fn new(
        jobs: Arc<RwLock<Jobs>>,
        problems: Problems,
        jobs_root: PathBuf,
        control: mpsc::UnboundedSender<Control>,
    ) -> JobRegistry {
        JobRegistry {
            jobs,
            problems,
            jobs_root,
            control,
        }
    }

    fn view(&self) -> RwLockReadGuard<'_, Jobs> {
        self.jobs.read().unwrap_or_else(|e| e.into_inner())
    }

    /// One job, if the registry has it.
    pub fn get(&self, job_type: JobType, name: &str) -> Option<RegistryEntry> {
        self.view().get(&(job_type, name.to_string())).cloned()
    }

    /// Every job, by type then name.
    pub fn entries(&self) -> Vec<RegistryEntry> {
        self.view().values().cloned().collect()
    }

    /// Problems with entries of JOBS that are not jobs, from the last rescan.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where a job of this type and name lives (or would). The name must be valid.
    pub fn folder(&self, job_type: JobType, name: &str) -> PathBuf {
        self.jobs_root.join(job_type.as_str()).join(name)
    }

    fn existing(&self, job_type: JobType, name: &str) -> Result<RegistryEntry, WriteError> {
        self.get(job_type, name)
            .ok_or_else(|| WriteError::NoSuchJob {
                job_type,
                name: name.to_string(),
            })
    }

    /// Creates (`true`) or removes (`false`) the job's `disable.job`, as a person
    /// touching the file would. Returns the file's path.
    pub async fn set_disabled(
        &self,
        job_type: JobType,
        name: &str,
        disabled: bool,
    ) -> Result<PathBuf, WriteError> {
        let file = self.existing(job_type, name)?.def.dir.join(DISABLE_FILE);
        let at = file.clone();
        blocking("writing", &file, move || {
            let result = if disabled {
                std::fs::write(&at, b"")
            } else {
                match std::fs::remove_file(&at) {
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                }
            };
            result.map_err(|source| WriteError::Io {
                verb: if disabled { "creating" } else { "removing" },
                path: at,
                source,
            })
        })
        .await?;
        self.refresh(job_type, name).await;
        Ok(file)
    }

    /// Validates `text` exactly as the host reads settings.job and saves it
    /// atomically; a bad text leaves the old file untouched. Returns the file's path
    /// and the warnings (keys that do nothing, ...).
    pub async fn write_settings(
        &self,
        job_type: JobType,
        name: &str,
        text: Bytes,
    ) -> Result<(PathBuf, Vec<Warning>), WriteError> {
        let path = self
            .existing(job_type, name)?
            .def
            .dir
            .join(settings::FILE_NAME);
        let limit = settings::MAX_FILE_BYTES;
        if text.len() as u64 > limit {
            return Err(WriteError::SettingsTooLarge {
                size: text.len(),
                limit,
            });
        }
        // An empty body would truncate the file; `{}` is how to reset every key.
        let trimmed = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&text);
        if trimmed.trim_ascii().is_empty() {
            return Err(WriteError::SettingsEmpty { path });
        }
        let (_, warnings) =
            settings::parse(&text, &path, job_type).map_err(WriteError::SettingsInvalid)?;
        let at = path.clone();
        blocking("writing", &path, move || {
            Ok(crate::fsutil::write_atomic_bytes(&at, &text)?)
        })
        .await?;
        self.refresh(job_type, name).await;
        Ok((path, warnings))
    }

    /// A staging folder beside the job's folder, for the API to stream an upload into
    /// before [`install`](Self::install). Two mkdirs: done in place.
    pub fn staging(&self, job_type: JobType, name: &str) -> Result<Staging, DeployError> {
        Staging::new(&self.folder(job_type, name))
    }

    /// Builds the job from a staged upload and swaps it in for the job's folder (see
    /// [`deploy`]); the staging folder goes whatever happens.
    pub async fn install(
        &self,
        job_type: JobType,
        name: &str,
        staging: Staging,
        upload: Upload,
    ) -> Result<Installed, WriteError> {
        let dir = self.folder(job_type, name);
        let at = dir.clone();
        // `staging` moves into the blocking task, so removing it (perhaps a whole old
        // job, after the swap) happens there too.
        let installed = blocking("deploying", &dir, move || {
            let existed = at.exists();
            deploy::install(&staging, &at, upload)?;
            Ok(if existed {
                Installed::Replaced
            } else {
                Installed::Created
            })
        })
        .await?;
        self.refresh(job_type, name).await;
        Ok(installed)
    }

    /// Removes the job's folder (its logs stay); its task stops gracefully.
    pub async fn remove(&self, job_type: JobType, name: &str) -> Result<(), WriteError> {
        let dir = self.folder(job_type, name);
        let at = dir.clone();
        let missing = WriteError::NoSuchJob {
            job_type,
            name: name.to_string(),
        };
        blocking("removing", &dir, move || {
            if !at.is_dir() {
                return Err(missing);
            }
            Ok(deploy::delete(&at)?)
        })
        .await?;
        self.refresh(job_type, name).await;
        Ok(())
    }

    /// Rescans one job's folder and returns once the registry and the job's task
    /// show what is there now (or after [`APPLY_WAIT`]; or at once when the host is
    /// stopping).
    async fn refresh(&self, job_type: JobType, name: &str) {
        let (reply, rx) = oneshot::channel();
        let key = (job_type, name.to_string());
        if self.control.send(Control::Refresh { key, reply }).is_err() {
            return;
        }
        let Ok(waits) = rx.await else { return };
        let all = futures_util::future::join_all(waits);
        let _ = tokio::time::timeout(APPLY_WAIT, all).await;
    }
}

/// Runs file work on the blocking pool, so a slow disk stalls no async worker.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    path: &Path,
    work: impl FnOnce() -> Result<T, WriteError> + Send + 'static,
) -> Result<T, WriteError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| WriteError::Lost {
            what,
            path: path.to_path_buf(),
            why: e.to_string(),
        })?
}
