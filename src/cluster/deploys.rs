//! Deploys across the cluster: a job written through any host's API reaches every
//! host. This module owns the job packages in the store (`jobhost_packages`: each
//! job's whole folder as a zip, or a tombstone once deleted, with a version that grows
//! at every change and the host it came from), the recording of this host's API
//! writes there, and the sync task that writes the others' changes into this host's
//! JOBS.
//!
//! The store is the truth and a host converges on it: the sync task reads every
//! package's version (woken by `NOTIFY jobhost_deploy`, and every second in case a
//! notification was lost) and installs each one newer than what it applied, through
//! the same registry calls as the API, so the job task sees it at once. What it
//! applied is kept per job, in memory and in `LOGS/.jobhost-packages-NAME.json`, so a
//! restart does not install everything again; a host with no such file applies every
//! package at its first sync.
//!
//! A host never records what it installed from the store (the sync task calls the
//! registry directly; only API routes record), and a package it recorded itself is
//! already applied at the version the store answered, so nothing loops. A package that
//! cannot be installed is logged with the job and why; a bad package is not tried
//! again until its next version, a failure of this host (disk) once a minute.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{ClusterError, Pool};
use crate::spec::JobType;
use crate::supervisor::deploy::Upload;
use crate::supervisor::{JobRegistry, WriteError};

/// The channel every change of a package is announced on (`TYPE/NAME`).
pub use super::schema::DEPLOY_CHANNEL;

/// How often the sync task looks even without a notification.
const SAFETY_NET: Duration = Duration::from_secs(1);

/// How long a package this host failed to install (its own disk, ...) waits before
/// the next try of the same version.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// A job, as the store names it: `(type, name)` as written there, checked only when
/// the package is installed (a row may have been written by hand).
pub type Key = (String, String);

fn key_text((t, n): &Key) -> String {
    format!("{t}/{n}")
}

/// A package's latest version as listed (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub key: Key,
    pub version: i64,
    pub origin: String,
}

/// A package with its bytes: `None` is a tombstone (the job was deleted).
#[derive(Debug, Clone)]
pub struct Package {
    pub version: i64,
    pub origin: String,
    pub zip: Option<Vec<u8>>,
}

// ----- the store ---------------------------------------------------------------------

/// Records `zip` (or, `None`, the job's removal) as the job's newest package, from
/// `origin`; the version the store gave it.
pub fn record(
    pool: &Pool,
    job_type: JobType,
    name: &str,
    zip: Option<&[u8]>,
    origin: &str,
) -> Result<i64, ClusterError> {
    let what = match zip {
        Some(_) => format!("recording the package of {job_type} job {name}"),
        None => format!("recording the removal of {job_type} job {name}"),
    };
    pool.call(&what, |conn| {
        Ok(conn
            .query_one(
                "INSERT INTO jobhost_packages (job_type, name, version, package, origin) \
                 VALUES ($1, $2, 1, $3, $4) \
                 ON CONFLICT (job_type, name) DO UPDATE SET \
                     version = jobhost_packages.version + 1, package = excluded.package, \
                     origin = excluded.origin, updated_at = clock_timestamp() \
                 RETURNING version",
                &[&job_type.as_str(), &name, &zip, &origin],
            )?
            .try_get(0)?)
    })
}

/// Every package's latest version, without the bytes.
pub fn heads(pool: &Pool) -> Result<Vec<Head>, ClusterError> {
    pool.call("listing the job packages", |conn| {
        let rows = conn.query(
            "SELECT job_type, name, version, origin FROM jobhost_packages ORDER BY job_type, name",
            &[],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(Head {
                key: (r.try_get(0)?, r.try_get(1)?),
                version: r.try_get(2)?,
                origin: r.try_get(3)?,
            });
        }
        Ok(out)
    })
}

/// One job's package as it is now.
pub fn fetch(pool: &Pool, (t, n): &Key) -> Result<Option<Package>, ClusterError> {
    pool.call(&format!("reading the package of {t} job {n}"), |conn| {
        let row = conn.query_opt(
            "SELECT version, origin, package FROM jobhost_packages WHERE job_type = $1 AND name = $2",
            &[t, n],
        )?;
        Ok(match row {
            Some(r) => Some(Package {
                version: r.try_get(0)?,
                origin: r.try_get(1)?,
                zip: r.try_get(2)?,
            }),
            None => None,
        })
    })
}

// ----- a job folder as a zip ---------------------------------------------------------

/// Why a job folder could not be made a package.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("reading {path} for the cluster's copy: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} has a name that is not UTF-8, which a zip cannot carry: rename it",
        path.display()
    )]
    NotUtf8 { path: PathBuf },
    #[error("writing the zip of {} for the cluster's copy: {reason}", path.display())]
    Zip { path: PathBuf, reason: String },
}

/// The job folder `dir` as a zip: every folder, file (with its mode) and link (as a
/// link, never followed), `disable.job` included, so a stop through one host's API
/// stops the job everywhere.
pub fn pack(dir: &Path) -> Result<Vec<u8>, PackError> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let zerr = |e: &dyn std::fmt::Display| PackError::Zip {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let at = dir.join(&rel);
        let io = |source| PackError::Io {
            path: at.clone(),
            source,
        };
        let mut entries: Vec<_> = std::fs::read_dir(&at)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = rel.join(e.file_name());
            let name = rel
                .to_str()
                .ok_or_else(|| PackError::NotUtf8 { path: path.clone() })?
                .to_string();
            let io = |source| PackError::Io {
                path: path.clone(),
                source,
            };
            let meta = std::fs::symlink_metadata(&path).map_err(io)?;
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(mode);
            let kind = meta.file_type();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(io)?;
                let target = target
                    .to_str()
                    .ok_or_else(|| PackError::NotUtf8 { path: path.clone() })?;
                w.add_symlink(name, target, opts).map_err(|e| zerr(&e))?;
            } else if kind.is_dir() {
                w.add_directory(format!("{name}/"), opts)
                    .map_err(|e| zerr(&e))?;
                todo.push(rel);
            } else if kind.is_file() {
                let mut f = std::fs::File::open(&path).map_err(io)?;
                w.start_file(name, opts).map_err(|e| zerr(&e))?;
                std::io::copy(&mut f, &mut w).map_err(io)?;
            }
            // Sockets, fifos, devices: nothing a job ships.
        }
    }
    Ok(w.finish().map_err(|e| zerr(&e))?.into_inner())
}

// ----- what this host applied ----------------------------------------------------------

/// Why this host's change did not reach the cluster's copy.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "the change is made on this host only: {0}; repeat the request once the cluster store answers, so the other hosts get it"
    )]
    Store(#[from] ClusterError),
    #[error(
        "the change is made on this host only: {0}; fix that and repeat the request, so the other hosts get it"
    )]
    Pack(#[from] PackError),
    #[error("the change is made on this host only: recording it stopped unexpectedly: {0}")]
    Lost(String),
}

/// A failed install remembered, so it is not tried again in a loop.
#[derive(Debug, Clone, Copy)]
pub struct Failed {
    pub version: i64,
    pub at: Instant,
}

/// The packages to install now, in the order listed: those newer than what this host
/// applied, except a version that failed here less than [`RETRY_AFTER`] ago, and
/// except this host's own packages while it is recording one (the store may already
/// have the version the recording has not noted yet).
pub fn due(
    heads: &[Head],
    applied: &BTreeMap<Key, i64>,
    failed: &HashMap<Key, Failed>,
    me: &str,
    recording: bool,
    now: Instant,
) -> Vec<Head> {
    heads
        .iter()
        .filter(|h| applied.get(&h.key).is_none_or(|v| *v < h.version))
        .filter(|h| {
            failed
                .get(&h.key)
                .is_none_or(|f| f.version != h.version || now.duration_since(f.at) >= RETRY_AFTER)
        })
        .filter(|h| !(recording && h.origin == me))
        .cloned()
        .collect()
}

/// This host's side of the cluster's deploys: what it applied, and the recording of
/// its own API writes. Shared by the API and the sync task.
pub struct Deploys {
    pool: Arc<Pool>,
    me: String,
    state_file: PathBuf,
    applied: Mutex<BTreeMap<Key, i64>>,
    /// This host's recordings under way.
    recording: AtomicUsize,
    wake: Arc<Notify>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct StateFile {
    /// `TYPE/NAME` → the version applied.
    applied: BTreeMap<String, i64>,
}

impl Deploys {
    /// The deploys of host `me`, with what it applied before from
    /// `LOGS/.jobhost-packages-ME.json` (none: every package is applied at the first
    /// sync).
    pub fn new(pool: Arc<Pool>, me: &str, logs: &Path) -> Deploys {
        let state_file = logs.join(format!(".jobhost-packages-{me}.json"));
        let applied = match std::fs::read(&state_file) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(s) => s
                    .applied
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let (t, n) = k.split_once('/')?;
                        Some(((t.to_string(), n.to_string()), v))
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(
                        "{} is not readable ({e}): every job package of the cluster is installed again",
                        state_file.display()
                    );
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        Deploys {
            pool,
            me: me.to_string(),
            state_file,
            applied: Mutex::new(applied),
            recording: AtomicUsize::new(0),
            wake: Arc::new(Notify::new()),
        }
    }

    /// What wakes the sync task (a notification of the store).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn applied(&self) -> MutexGuard<'_, BTreeMap<Key, i64>> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes `version` of `key` as applied here and saves the list. `installed`: the
    /// sync task wrote it into JOBS. Finding a newer version noted then means this
    /// host's API wrote the job meanwhile and the install may have gone over that
    /// write: the install is noted instead, so the next look installs the store's
    /// newest again.
    fn note(&self, key: Key, version: i64, installed: bool) {
        let snapshot = {
            let mut applied = self.applied();
            let v = applied.entry(key).or_insert(version);
            *v = if installed {
                version
            } else {
                (*v).max(version)
            };
            StateFile {
                applied: applied.iter().map(|(k, v)| (key_text(k), *v)).collect(),
            }
        };
        if let Err(e) = crate::fsutil::write_atomic(&self.state_file, &snapshot) {
            // Only costs installing those packages again after a restart.
            tracing::warn!("{e}: the packages applied here may be installed again at restart");
        }
    }

    /// Records the job's folder `dir` as it is now (after this host's API changed
    /// it), or with `dir` `None` the job's removal, as this host's change; the
    /// version the store gave it. Call it from async code: the work is on the
    /// blocking pool.
    pub async fn record(
        self: &Arc<Self>,
        job_type: JobType,
        name: &str,
        dir: Option<PathBuf>,
    ) -> Result<i64, RecordError> {
        let (me, name) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            me.recording.fetch_add(1, Ordering::SeqCst);
            let result = (|| {
                let zip = dir.as_deref().map(pack).transpose()?;
                let version = record(&me.pool, job_type, &name, zip.as_deref(), &me.me)?;
                // Before `recording` drops: the sync task must find it applied.
                me.note(
                    (job_type.as_str().to_string(), name.clone()),
                    version,
                    false,
                );
                Ok(version)
            })();
            me.recording.fetch_sub(1, Ordering::SeqCst);
            result
        })
        .await
        .map_err(|e| RecordError::Lost(e.to_string()))?
    }
}

// ----- the sync task -------------------------------------------------------------------

/// Installs the cluster's packages into this host's JOBS until `cancel`: at once, then
/// whenever the store announces a change and every [`SAFETY_NET`].
pub async fn run(deploys: Arc<Deploys>, registry: JobRegistry, cancel: CancellationToken) {
    let mut failed: HashMap<Key, Failed> = HashMap::new();
    let mut unreachable = false;
    let wake = deploys.waker();
    loop {
        let d = deploys.clone();
        let listed = tokio::task::spawn_blocking(move || heads(&d.pool)).await;
        match listed {
            Ok(Ok(heads)) => {
                if unreachable {
                    tracing::info!("the cluster's job packages can be read again");
                    unreachable = false;
                }
                let todo = {
                    let recording = deploys.recording.load(Ordering::SeqCst) > 0;
                    let applied = deploys.applied();
                    due(
                        &heads,
                        &applied,
                        &failed,
                        &deploys.me,
                        recording,
                        Instant::now(),
                    )
                };
                for head in todo {
                    if cancel.is_cancelled() {
                        return;
                    }
                    sync_one(&deploys, &registry, &head, &mut failed).await;
                }
            }
            Ok(Err(e)) => {
                if !unreachable {
                    tracing::warn!(
                        "{e}: deploys through other hosts reach this one once the store answers"
                    );
                }
                unreachable = true;
            }
            Err(_) => return,
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(SAFETY_NET) => {}
        }
    }
}

/// Fetches and installs one package, noting it applied, or failed.
async fn sync_one(
    deploys: &Arc<Deploys>,
    registry: &JobRegistry,
    head: &Head,
    failed: &mut HashMap<Key, Failed>,
) {
    let (d, key) = (deploys.clone(), head.key.clone());
    let package = match tokio::task::spawn_blocking(move || fetch(&d.pool, &key)).await {
        Ok(Ok(Some(p))) => p,
        // Gone from the store meanwhile (by hand): nothing to do.
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::warn!("{e}: tried again at the next look");
            return;
        }
        Err(_) => return,
    };
    let (t, n) = &head.key;
    let what = match package.zip {
        Some(_) => "deploy",
        None => "removal",
    };
    match install(registry, &head.key, package.zip).await {
        Ok(()) => {
            tracing::info!(
                job = %n,
                "{t} job {n}: {what} from host {} (package version {}) installed",
                package.origin,
                package.version
            );
            failed.remove(&head.key);
            note_off_the_workers(deploys, head.key.clone(), package.version, true).await;
        }
        Err(Refused::Bad(why)) => {
            tracing::error!(
                job = %n,
                "{t} job {n}: the {what} from host {} (package version {}) is not installed here: {why}; this host keeps what it had until the next deploy of the job",
                package.origin,
                package.version
            );
            failed.remove(&head.key);
            note_off_the_workers(deploys, head.key.clone(), package.version, false).await;
        }
        Err(Refused::Here(why)) => {
            tracing::error!(
                job = %n,
                "{t} job {n}: the {what} from host {} (package version {}) is not installed here: {why}; tried again in {} s",
                package.origin,
                package.version,
                RETRY_AFTER.as_secs()
            );
            failed.insert(
                head.key.clone(),
                Failed {
                    version: package.version,
                    at: Instant::now(),
                },
            );
        }
    }
}

/// Why a package was not installed: the package itself (waits for its next
/// version), or this host (tried again later).
enum Refused {
    Bad(String),
    Here(String),
}

fn refused(e: WriteError) -> Refused {
    match &e {
        WriteError::Deploy(d) if d.status().is_server_error() => Refused::Here(e.to_string()),
        WriteError::Deploy(_) | WriteError::NoSuchJob { .. } => Refused::Bad(e.to_string()),
        _ => Refused::Here(e.to_string()),
    }
}

/// Installs `zip` as the job `key` (or removes it: `None`) through the registry, as
/// the API would, without recording it in the store again.
/// [`Deploys::note`] on the blocking pool: it writes and fsyncs the state file.
async fn note_off_the_workers(deploys: &Arc<Deploys>, key: Key, version: i64, installed: bool) {
    let d = deploys.clone();
    let _ = tokio::task::spawn_blocking(move || d.note(key, version, installed)).await;
}

async fn install(registry: &JobRegistry, key: &Key, zip: Option<Vec<u8>>) -> Result<(), Refused> {
    let (t, n) = key;
    let job_type = match t.as_str() {
        "continuous" => JobType::Continuous,
        "triggered" => JobType::Triggered,
        other => {
            return Err(Refused::Bad(format!(
                "`{other}` is not a job type (continuous or triggered)"
            )));
        }
    };
    // A row is not trusted to name a folder: a name with `/` or `..` never becomes one.
    if !crate::spec::name::is_valid(n) {
        return Err(Refused::Bad(format!("`{n}` is not a valid job name")));
    }
    let Some(zip) = zip else {
        return match registry.remove(job_type, n).await {
            Ok(()) | Err(WriteError::NoSuchJob { .. }) => Ok(()),
            Err(e) => Err(refused(e)),
        };
    };
    let staging = registry
        .staging(job_type, n)
        .map_err(|e| refused(e.into()))?;
    let upload = staging.upload();
    let staging = tokio::task::spawn_blocking(move || {
        std::fs::write(&upload, &zip)
            .map(|()| staging)
            .map_err(|e| format!("writing {}: {e}", upload.display()))
    })
    .await
    .map_err(|e| Refused::Here(e.to_string()))?
    .map_err(Refused::Here)?;
    registry
        .install(job_type, n, staging, Upload::Zip)
        .await
        .map(|_| ())
        .map_err(refused)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(t: &str, n: &str, version: i64, origin: &str) -> Head {
        Head {
            key: (t.into(), n.into()),
            version,
            origin: origin.into(),
        }
    }

    fn k(n: &str) -> Key {
        ("triggered".into(), n.into())
    }

    #[test]
    fn due_packages_are_the_newer_ones_never_twice_never_in_a_loop() {
        let now = Instant::now();
        let heads = [
            head("triggered", "new", 1, "b"),
            head("triggered", "same", 3, "b"),
            head("triggered", "newer", 4, "b"),
            head("triggered", "mine", 7, "a"),
            head("triggered", "mine-old", 9, "a"),
            head("triggered", "bad", 2, "b"),
            head("triggered", "bad-next", 3, "b"),
            head("triggered", "bad-stale", 5, "b"),
        ];
        let applied: BTreeMap<Key, i64> = [
            (k("same"), 3),
            (k("newer"), 3),
            (k("mine"), 7),
            (k("mine-old"), 8),
        ]
        .into();
        let failed: HashMap<Key, Failed> = [
            (
                k("bad"),
                Failed {
                    version: 2,
                    at: now,
                },
            ),
            (
                k("bad-next"),
                Failed {
                    version: 2,
                    at: now,
                },
            ),
            (
                k("bad-stale"),
                Failed {
                    version: 5,
                    at: now - RETRY_AFTER,
                },
            ),
        ]
        .into();
        let names = |recording| -> Vec<String> {
            due(&heads, &applied, &failed, "a", recording, now)
                .into_iter()
                .map(|h| h.key.1)
                .collect()
        };
        // mine-old: a version of this host the state does not have (an earlier life
        // recorded it and died before noting it): the store is the truth.
        assert_eq!(
            names(false),
            ["new", "newer", "mine-old", "bad-next", "bad-stale"]
        );
        // While this host records, its own packages wait for the next look.
        assert_eq!(names(true), ["new", "newer", "bad-next", "bad-stale"]);
        // A host with nothing applied takes every package.
        assert_eq!(
            due(&heads, &BTreeMap::new(), &HashMap::new(), "z", false, now).len(),
            heads.len()
        );
    }

    #[test]
    fn a_packed_folder_installs_as_the_same_folder_modes_and_links_kept() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("lib/deep")).unwrap();
        std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        std::fs::write(src.join("lib/deep/data.txt"), "data").unwrap();
        std::fs::write(src.join("disable.job"), "").unwrap();
        std::fs::create_dir(src.join("empty")).unwrap();
        std::os::unix::fs::symlink("lib/deep/data.txt", src.join("link")).unwrap();
        let zip = pack(&src).unwrap();

        let job = tmp.path().join("jobs/triggered/t");
        let staging = crate::supervisor::deploy::Staging::new(&job).unwrap();
        std::fs::write(staging.upload(), &zip).unwrap();
        crate::supervisor::deploy::install(&staging, &job, Upload::Zip).unwrap();
        let mode = |p: &str| std::fs::metadata(job.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("run.sh"), 0o750);
        assert_eq!(
            std::fs::read_to_string(job.join("lib/deep/data.txt")).unwrap(),
            "data"
        );
        assert!(job.join("disable.job").exists());
        assert!(job.join("empty").is_dir());
        assert_eq!(
            std::fs::read_link(job.join("link")).unwrap(),
            Path::new("lib/deep/data.txt")
        );
    }

    #[test]
    fn versions_grow_at_every_change_and_a_removal_is_a_tombstone() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        let mut raw = db.raw();
        raw.batch_execute("LISTEN jobhost_deploy").unwrap();
        assert_eq!(
            record(&pool, JobType::Triggered, "t", Some(b"zip1"), "a").unwrap(),
            1
        );
        assert_eq!(
            record(&pool, JobType::Triggered, "t", Some(b"zip2"), "b").unwrap(),
            2
        );
        assert_eq!(
            record(&pool, JobType::Continuous, "t", Some(b"c"), "a").unwrap(),
            1
        );
        assert_eq!(
            record(&pool, JobType::Triggered, "t", None, "c").unwrap(),
            3
        );
        assert_eq!(
            heads(&pool).unwrap(),
            [
                head("continuous", "t", 1, "a"),
                head("triggered", "t", 3, "c")
            ]
        );
        let p = fetch(&pool, &k("t")).unwrap().unwrap();
        assert_eq!((p.version, p.origin.as_str(), p.zip), (3, "c", None));
        assert!(fetch(&pool, &k("none")).unwrap().is_none());
        let notes: Vec<String> = {
            use postgres::fallible_iterator::FallibleIterator;
            let mut n = raw.notifications();
            // Waits only while fewer than four came: the deadline bounds a hang.
            n.timeout_iter(Duration::from_secs(10))
                .take(4)
                .map(|n| Ok(n.payload().to_string()))
                .collect()
                .unwrap()
        };
        assert_eq!(
            notes,
            ["triggered/t", "triggered/t", "continuous/t", "triggered/t"]
        );
    }
}
