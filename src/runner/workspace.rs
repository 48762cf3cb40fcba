//! Private copies of job folders, reused between runs while they stay pristine.
//!
//! Every run of a job that is not `is_in_place` starts in a private copy, so a deploy
//! can replace files under a run. Copying the folder for each run costs a directory,
//! a file per file and as many deletions afterwards (on ext4, creating files next to
//! many recently deleted ones is the single largest cost of a run). So a copy is kept
//! for the job's next run when both the job folder and the copy are unchanged since
//! it was made, judged by the same fingerprint the scanner uses (names, modes, sizes,
//! mtimes, inodes): a run that wrote into its folder, or a deploy, gets the next run
//! a fresh copy. Kudu keeps its copies until the job changes, too.
//!
//! The job folder's side is the fingerprint of the host's last scan of it, not a new
//! walk: a run then uses the files of the same scan as its entry point and settings,
//! and starting a run does not touch JOBS (each directory opened there is an inotify
//! event for the watcher). A change is rescanned within a second; the copy follows.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::copy;
use crate::scan::fingerprint;

/// A copy lent to one run.
#[derive(Debug)]
pub struct Lease {
    pub path: PathBuf,
    source: u64,
    copy: u64,
}

/// The idle copy of each job (by its scratch folder), ready for the next run.
#[derive(Debug, Default)]
pub struct Workspaces {
    idle: Mutex<HashMap<PathBuf, Lease>>,
}

impl Workspaces {
    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Lease>> {
        // Each operation is one insert or remove: a poisoned map is still whole.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pristine copy of `job_dir`, whose scan gave `source`, for one run: the kept
    /// one when nothing changed, else a fresh copy at `job_scratch/token`. Blocking
    /// (walks and copies files).
    pub fn checkout(
        &self,
        job_dir: &Path,
        source: u64,
        job_scratch: &Path,
        token: &str,
    ) -> io::Result<Lease> {
        if let Some(kept) = self.idle().remove(job_scratch) {
            if kept.source == source && fingerprint(&kept.path) == kept.copy {
                return Ok(kept);
            }
            let _ = std::fs::remove_dir_all(&kept.path);
        }
        let path = job_scratch.join(token);
        if let Err(e) = copy::copy_tree(job_dir, &path) {
            let _ = std::fs::remove_dir_all(&path);
            return Err(e);
        }
        Ok(Lease {
            copy: fingerprint(&path),
            path,
            source,
        })
    }

    /// Takes a copy back after its run, to keep for the next one. Returns the copy's
    /// path when another copy of the job is already kept: the caller removes it (which
    /// blocks), so giving a copy back never does.
    #[must_use = "a copy that is not kept must be removed"]
    pub fn checkin(&self, job_scratch: &Path, lease: Lease) -> Option<PathBuf> {
        let mut idle = self.idle();
        if idle.contains_key(job_scratch) {
            Some(lease.path)
        } else {
            idle.insert(job_scratch.to_path_buf(), lease);
            None
        }
    }

    /// [`Workspaces::checkin`], removing a copy that is not kept. Blocking.
    pub fn checkin_or_remove(&self, job_scratch: &Path, lease: Lease) {
        if let Some(path) = self.checkin(job_scratch, lease) {
            let _ = std::fs::remove_dir_all(path);
        }
    }

    /// Removes the kept copy of a job that is gone. Blocking.
    pub fn forget(&self, job_scratch: &Path) {
        let kept = self.idle().remove(job_scratch);
        if let Some(kept) = kept {
            let _ = std::fs::remove_dir_all(kept.path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    fn job(tmp: &Path) -> (PathBuf, PathBuf) {
        let src = tmp.join("job");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("run.sh"), "echo hi\n").unwrap();
        (src, tmp.join("scratch"))
    }

    #[test]
    fn an_untouched_copy_is_reused_for_the_next_run() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, scratch) = job(tmp.path());
        let ws = Workspaces::default();
        let a = ws.checkout(&src, fingerprint(&src), &scratch, "a").unwrap();
        let first = a.path.clone();
        ws.checkin_or_remove(&scratch, a);
        let b = ws.checkout(&src, fingerprint(&src), &scratch, "b").unwrap();
        assert_eq!(b.path, first);
        assert_eq!(
            fs::read_to_string(b.path.join("run.sh")).unwrap(),
            "echo hi\n"
        );
    }

    #[test]
    fn a_copy_the_run_wrote_into_is_replaced_by_a_fresh_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, scratch) = job(tmp.path());
        let ws = Workspaces::default();
        let a = ws.checkout(&src, fingerprint(&src), &scratch, "a").unwrap();
        fs::write(a.path.join("left-by-the-run.txt"), "x").unwrap();
        let first = a.path.clone();
        ws.checkin_or_remove(&scratch, a);
        let b = ws.checkout(&src, fingerprint(&src), &scratch, "b").unwrap();
        assert_ne!(b.path, first);
        assert!(!first.exists(), "the spoilt copy is removed");
        assert!(!b.path.join("left-by-the-run.txt").exists());
    }

    #[test]
    fn a_changed_job_folder_gets_a_fresh_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, scratch) = job(tmp.path());
        let ws = Workspaces::default();
        let a = ws.checkout(&src, fingerprint(&src), &scratch, "a").unwrap();
        ws.checkin_or_remove(&scratch, a);
        fs::write(src.join("run.sh"), "echo changed\n").unwrap();
        let b = ws.checkout(&src, fingerprint(&src), &scratch, "b").unwrap();
        assert_eq!(
            fs::read_to_string(b.path.join("run.sh")).unwrap(),
            "echo changed\n"
        );
    }

    #[test]
    fn two_copies_out_at_once_and_forget_removes_the_kept_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, scratch) = job(tmp.path());
        let ws = Workspaces::default();
        let a = ws.checkout(&src, fingerprint(&src), &scratch, "a").unwrap();
        let b = ws.checkout(&src, fingerprint(&src), &scratch, "b").unwrap();
        assert_ne!(a.path, b.path);
        let (pa, pb) = (a.path.clone(), b.path.clone());
        ws.checkin_or_remove(&scratch, a);
        ws.checkin_or_remove(&scratch, b);
        assert!(pa.exists() && !pb.exists(), "one kept, the other removed");
        ws.forget(&scratch);
        assert!(!pa.exists());
    }
}
