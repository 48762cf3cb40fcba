//! The host's claim on LOGS: one host per LOGS unless every host has an instance name.
//! A host of a cluster (`--store`) always holds its LOGS alone: the cluster's hosts
//! coordinate through the store, each with LOGS of its own (docs/cluster.md).
//!
//! Two hosts without `--instance` on one LOGS would both run every job, interleave
//! their lines in one `job_log.txt`, overwrite each other's `status.json` and
//! `.jobhost-url`. So a host takes an advisory `flock` on `LOGS/.jobhost.lock` for its
//! whole life: exclusively when it has no instance name (it assumes it is alone),
//! shared when it has one (hosts with distinct names may share LOGS), and then also
//! exclusively `LOGS/.jobhost-NAME.lock`, so two hosts with the same name refuse too.
//!
//! The kernel releases a `flock` when the last descriptor of the open file closes, so
//! a host killed with SIGKILL frees LOGS at once. That is also why the descriptor must
//! not be inherited: std opens files with `O_CLOEXEC`, so neither the guardian nor any
//! run (both are exec'd) holds it after the host is gone.
//!
//! The holder writes its pid into the file it holds exclusively, so a refused host can
//! say who holds LOGS. Shared holders empty `.jobhost.lock` (the pid of an earlier
//! exclusive holder would be stale) and are found through their own lock files.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::layout::{LOCK_FILE, instance_lock_file, instance_of_lock_file};

/// Held for the host's life; dropping it releases LOGS.
#[derive(Debug)]
pub struct HostLock {
    _main: File,
    _instance: Option<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostLockError {
    #[error(
        "cannot open the host lock {path}: {source}; it must be a regular file (not a symlink) in a logs folder this user can write (or pass --logs DIR)"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another jobhost{holder} already runs on the logs folder {logs} (it holds {path}): stop it first, or pass --instance NAME (a distinct name to every host) to run several hosts on one logs folder"
    )]
    Taken {
        logs: PathBuf,
        path: PathBuf,
        /// ` (pid N)`, or ` (started with --instance a, b)`, or empty.
        holder: String,
    },
    #[error(
        "a jobhost without --instance (or a host of a cluster){holder} already runs on the logs folder {logs} and holds it alone ({path}): stop it, or restart it with --instance NAME (outside a cluster), to run several hosts on one logs folder"
    )]
    TakenAlone {
        logs: PathBuf,
        path: PathBuf,
        holder: String,
    },
    #[error(
        "another jobhost{holder} already runs on the logs folder {logs} (it holds {path}): each host of a cluster keeps a logs folder of its own; pass --logs DIR"
    )]
    TakenByCluster {
        logs: PathBuf,
        path: PathBuf,
        holder: String,
    },
    #[error(
        "another jobhost{holder} already runs with --instance {instance} on the logs folder {logs} (it holds {path}): give every host sharing a logs folder its own --instance NAME"
    )]
    InstanceTaken {
        logs: PathBuf,
        path: PathBuf,
        instance: String,
        holder: String,
    },
}

impl HostLock {
    /// Takes LOGS alone for a host of a cluster named `instance` (its own lock file
    /// is held too, so the files named after it say who runs there), or says who holds
    /// it. `logs` must exist.
    pub fn acquire_for_cluster(logs: &Path, instance: &str) -> Result<HostLock, HostLockError> {
        let main_path = logs.join(LOCK_FILE);
        let main = open(&main_path)?;
        let inst_path = instance_lock_file(logs, instance);
        let inst = open(&inst_path)?;
        if !try_lock(&main, &main_path, true)? || !try_lock(&inst, &inst_path, true)? {
            return Err(HostLockError::TakenByCluster {
                holder: describe_holders(logs, &main_path),
                logs: absolute(logs),
                path: absolute(&main_path),
            });
        }
        write_pid(&main);
        write_pid(&inst);
        Ok(HostLock {
            _main: main,
            _instance: Some(inst),
        })
    }

    /// Takes LOGS for this host, or says who holds it. `logs` must exist.
    pub fn acquire(logs: &Path, instance: Option<&str>) -> Result<HostLock, HostLockError> {
        let main_path = logs.join(LOCK_FILE);
        let main = open(&main_path)?;
        let Some(instance) = instance else {
            if !try_lock(&main, &main_path, true)? {
                return Err(HostLockError::Taken {
                    holder: describe_holders(logs, &main_path),
                    logs: absolute(logs),
                    path: absolute(&main_path),
                });
            }
            write_pid(&main);
            return Ok(HostLock {
                _main: main,
                _instance: None,
            });
        };
        if !try_lock(&main, &main_path, false)? {
            return Err(HostLockError::TakenAlone {
                holder: pid_in(&main_path)
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default(),
                logs: absolute(logs),
                path: absolute(&main_path),
            });
        }
        // A pid left by an earlier exclusive holder would name a host that is gone.
        let _ = main.set_len(0);
        let inst_path = instance_lock_file(logs, instance);
        let inst = open(&inst_path)?;
        if !try_lock(&inst, &inst_path, true)? {
            return Err(HostLockError::InstanceTaken {
                holder: pid_in(&inst_path)
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default(),
                logs: absolute(logs),
                path: absolute(&inst_path),
                instance: instance.to_string(),
            });
        }
        write_pid(&inst);
        Ok(HostLock {
            _main: main,
            _instance: Some(inst),
        })
    }
}

fn open(path: &Path) -> Result<File, HostLockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        // A link planted in LOGS must not make the host truncate another file.
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| HostLockError::Open {
            path: absolute(path),
            source,
        })
}

/// `Ok(false)` when another process holds a conflicting lock.
fn try_lock(f: &File, path: &Path, exclusive: bool) -> Result<bool, HostLockError> {
    let r = if exclusive {
        f.try_lock()
    } else {
        f.try_lock_shared()
    };
    match r {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(source)) => Err(HostLockError::Lock {
            path: absolute(path),
            source,
        }),
    }
}

fn write_pid(f: &File) {
    // Best effort: the pid only makes a refusal message more helpful.
    let _ = f.set_len(0);
    let _ = f.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0);
}

/// The pid written in a lock file, if that process still exists.
fn pid_in(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Who holds `.jobhost.lock`: the exclusive holder's pid, else the live instances.
fn describe_holders(logs: &Path, main_path: &Path) -> String {
    if let Some(pid) = pid_in(main_path) {
        return format!(" (pid {pid})");
    }
    let mut names: Vec<String> = std::fs::read_dir(logs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_str()?.to_string();
            let name = instance_of_lock_file(&file)?;
            pid_in(&e.path()).map(|pid| format!("{name} (pid {pid})"))
        })
        .collect();
    names.sort();
    if names.is_empty() {
        String::new()
    } else {
        format!(" started with --instance: {}", names.join(", "))
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether `e` is one of ours refusing because another host holds LOGS.
pub fn is_taken(e: &HostLockError) -> bool {
    !matches!(e, HostLockError::Open { .. } | HostLockError::Lock { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn a_host_of_a_cluster_holds_its_logs_alone() {
        let d = logs();
        let first = HostLock::acquire_for_cluster(d.path(), "a").expect("first host");
        for err in [
            HostLock::acquire_for_cluster(d.path(), "b").expect_err("another cluster host"),
            HostLock::acquire(d.path(), Some("c")).expect_err("a named host"),
            HostLock::acquire(d.path(), None).expect_err("an unnamed host"),
        ] {
            let msg = err.to_string();
            assert!(is_taken(&err), "{msg}");
            assert!(
                msg.contains(&format!("pid {}", std::process::id())),
                "{msg}"
            );
        }
        let err = HostLock::acquire_for_cluster(d.path(), "b").expect_err("again");
        assert!(err.to_string().contains("pass --logs DIR"), "{err}");
        drop(first);
        let b = HostLock::acquire_for_cluster(d.path(), "b").expect("free once a is gone");
        drop(b);
        let named = HostLock::acquire(d.path(), Some("x")).expect("shared by named hosts");
        let err = HostLock::acquire_for_cluster(d.path(), "c").expect_err("beside x");
        drop(named);
        assert!(is_taken(&err), "{err}");
    }

    #[test]
    fn a_second_host_without_an_instance_is_refused_naming_the_holder_pid() {
        let d = logs();
        let first = HostLock::acquire(d.path(), None).expect("first host");
        let err = HostLock::acquire(d.path(), None).expect_err("second host");
        let msg = err.to_string();
        assert!(is_taken(&err), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("--instance NAME"), "{msg}");
        assert!(msg.contains(&d.path().display().to_string()), "{msg}");
        drop(first);
        HostLock::acquire(d.path(), None).expect("free again once the first is gone");
    }

    #[test]
    fn named_hosts_share_logs_but_not_a_name_and_not_with_an_unnamed_host() {
        let d = logs();
        let a = HostLock::acquire(d.path(), Some("a")).expect("a");
        let b = HostLock::acquire(d.path(), Some("b")).expect("b beside a");
        let err = HostLock::acquire(d.path(), Some("a")).expect_err("a twice");
        assert!(matches!(err, HostLockError::InstanceTaken { .. }), "{err}");
        let err = HostLock::acquire(d.path(), None).expect_err("unnamed beside a and b");
        let msg = err.to_string();
        assert!(msg.contains("--instance: a (pid"), "{msg}");
        assert!(msg.contains("b (pid"), "{msg}");
        drop((a, b));
        let alone = HostLock::acquire(d.path(), None).expect("unnamed once they are gone");
        let err = HostLock::acquire(d.path(), Some("c")).expect_err("named beside unnamed");
        assert!(matches!(err, HostLockError::TakenAlone { .. }), "{err}");
        drop(alone);
    }

    #[test]
    fn a_symlink_as_the_lock_file_is_refused_and_its_target_untouched() {
        let d = logs();
        let target = d.path().join("precious");
        std::fs::write(&target, "keep me").expect("write target");
        std::os::unix::fs::symlink(&target, d.path().join(LOCK_FILE)).expect("symlink");
        let err = HostLock::acquire(d.path(), None).expect_err("symlink");
        assert!(matches!(err, HostLockError::Open { .. }), "{err}");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&target).expect("read target"),
            "keep me"
        );
    }
}
