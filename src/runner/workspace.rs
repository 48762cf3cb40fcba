//! Private copies of job folders, reused between runs while they stay pristine.
//!
//! Every run of a job that is not `is_in_place` starts in a private copy, so a deploy
//! can replace files under a run. Copying the folder for each run costs a directory,
//! a file per file and as many deletions afterwards (on ext4, creating files next to
//! many recently deleted ones is the single largest cost of a run). So a copy is kept
//! for the job's next run when both the job folder and the copy are unchanged since
//! it was made: a run that wrote into its folder, or a deploy, gets the next run a
//! fresh copy. Kudu keeps its copies until the job changes, too.
//!
//! The job folder's side is the fingerprint of the host's last scan of it, not a new
//! walk: a run then uses the files of the same scan as its entry point and settings,
//! and starting a run does not touch JOBS (each directory opened there is an inotify
//! event for the watcher). A change is rescanned within a second; the copy follows.
//!
//! The copy's side is a [`Stamp`] of each of its folders and entries taken when it
//! was made, and checked with one `lstat` each, without listing a folder: any entry
//! made, removed or renamed moves its folder's modification time, any write moves the
//! file's, any chmod or link its change time. The copy keeps the job files' old
//! modification times (`runner::copy`), so even a write within the clock tick the
//! stamp was taken in moves the time away from it.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::copy;

/// What a write into a file or folder changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mode: u32,
    nlink: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let md = std::fs::symlink_metadata(path).ok()?;
        Some(Stamp {
            ino: md.ino(),
            mode: md.mode(),
            nlink: md.nlink(),
            len: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        })
    }
}

/// Deeper than the copy can be (`runner::copy` refuses more): a guard, not a limit.
const MAX_DEPTH: usize = 70;

/// The stamp of `dir` and of everything in it, links not followed.
fn stamps(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, Stamp)>) {
    if let Some(s) = Stamp::of(dir) {
        out.push((dir.to_path_buf(), s));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && depth < MAX_DEPTH => stamps(&path, depth + 1, out),
            _ => {
                if let Some(s) = Stamp::of(&path) {
                    out.push((path, s));
                }
            }
        }
    }
}

fn unchanged(stamps: &[(PathBuf, Stamp)]) -> bool {
    !stamps.is_empty()
        && stamps
            .iter()
            .all(|(path, s)| Stamp::of(path).as_ref() == Some(s))
}

/// A copy lent to one run.
#[derive(Debug)]
pub struct Lease {
    pub path: PathBuf,
    source: u64,
    copy: Vec<(PathBuf, Stamp)>,
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
            if kept.source == source && unchanged(&kept.copy) {
                return Ok(kept);
            }
            let _ = std::fs::remove_dir_all(&kept.path);
        }
        let path = job_scratch.join(token);
        if let Err(e) = copy::copy_tree(job_dir, &path) {
            let _ = std::fs::remove_dir_all(&path);
            return Err(e);
        }
        let mut copy = Vec::new();
        stamps(&path, 0, &mut copy);
        Ok(Lease { copy, path, source })
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
    use crate::scan::fingerprint;
    use std::fs;

    /// A job folder whose `run.sh` says `echo hi`, its scratch folder, and the
    /// workspaces that lend copies of the one into the other.
    struct Fixture {
        _tmp: tempfile::TempDir,
        src: PathBuf,
        scratch: PathBuf,
        ws: Workspaces,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let src = tmp.path().join("job");
            fs::create_dir_all(&src).unwrap();
            fs::write(src.join("run.sh"), "echo hi\n").unwrap();
            Fixture {
                scratch: tmp.path().join("scratch"),
                _tmp: tmp,
                src,
                ws: Workspaces::default(),
            }
        }

        /// A copy of the job folder as its scan now sees it.
        fn take(&self, token: &str) -> Lease {
            let fp = fingerprint(&self.src);
            self.ws
                .checkout(&self.src, fp, &self.scratch, token)
                .unwrap()
        }

        /// Hands a copy back at the end of its run.
        fn give_back(&self, lease: Lease) {
            self.ws.checkin_or_remove(&self.scratch, lease);
        }
    }

    fn read(dir: &Path, rel: &str) -> String {
        fs::read_to_string(dir.join(rel)).unwrap()
    }

    #[test]
    fn an_untouched_copy_is_reused_for_the_next_run() {
        let f = Fixture::new();
        let a = f.take("a");
        let first = a.path.clone();
        f.give_back(a);
        let b = f.take("b");
        assert_eq!(b.path, first);
        assert_eq!(read(&b.path, "run.sh"), "echo hi\n");
    }

    #[test]
    fn a_copy_the_run_wrote_into_is_replaced_by_a_fresh_one() {
        let f = Fixture::new();
        let a = f.take("a");
        fs::write(a.path.join("left-by-the-run.txt"), "x").unwrap();
        let first = a.path.clone();
        f.give_back(a);
        let b = f.take("b");
        assert_ne!(b.path, first);
        assert!(!first.exists(), "the spoilt copy is removed");
        assert!(!b.path.join("left-by-the-run.txt").exists());
    }

    #[test]
    fn any_change_to_a_copy_right_after_it_was_made_is_seen() {
        use std::os::unix::fs::PermissionsExt;
        type Change = fn(&Path);
        let changes: [(&str, Change); 6] = [
            ("same-size rewrite", |p| {
                fs::write(p.join("run.sh"), "echo ho\n").unwrap()
            }),
            ("file in a subfolder", |p| {
                fs::write(p.join("lib/new.txt"), "x").unwrap()
            }),
            ("removed file", |p| {
                fs::remove_file(p.join("lib/data.txt")).unwrap()
            }),
            ("chmod", |p| {
                fs::set_permissions(p.join("run.sh"), fs::Permissions::from_mode(0o700)).unwrap()
            }),
            ("file renamed over another", |p| {
                fs::write(p.join("tmp"), "echo hi\n").unwrap();
                fs::rename(p.join("tmp"), p.join("run.sh")).unwrap();
            }),
            ("hard link", |p| {
                fs::hard_link(p.join("run.sh"), p.join("lib/link")).unwrap()
            }),
        ];
        for (what, change) in changes {
            let f = Fixture::new();
            let src = &f.src;
            fs::create_dir(src.join("lib")).unwrap();
            fs::write(src.join("lib/data.txt"), "data").unwrap();
            // Deployed a while ago, as job files are (and on a kernel without fine
            // grained times, a file written in the same tick would look unchanged).
            let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
            for rel in ["run.sh", "lib/data.txt", "lib", ""] {
                let file = fs::File::open(src.join(rel)).unwrap();
                file.set_modified(long_ago).unwrap();
            }
            let a = f.take("a");
            // At once: within the clock tick the copy's stamps were taken in.
            change(&a.path);
            f.give_back(a);
            let b = f.take("b");
            assert_eq!(b.path, f.scratch.join("b"), "{what}: a fresh copy");
            assert_eq!(read(&b.path, "run.sh"), "echo hi\n");
            assert_eq!(read(&b.path, "lib/data.txt"), "data");
            assert!(!b.path.join("lib/new.txt").exists() && !b.path.join("lib/link").exists());
        }
    }

    #[test]
    fn a_changed_job_folder_gets_a_fresh_copy() {
        let f = Fixture::new();
        let a = f.take("a");
        f.give_back(a);
        fs::write(f.src.join("run.sh"), "echo changed\n").unwrap();
        let b = f.take("b");
        assert_eq!(read(&b.path, "run.sh"), "echo changed\n");
    }

    #[test]
    fn two_copies_out_at_once_and_forget_removes_the_kept_one() {
        let f = Fixture::new();
        let a = f.take("a");
        let b = f.take("b");
        assert_ne!(a.path, b.path);
        let (pa, pb) = (a.path.clone(), b.path.clone());
        f.give_back(a);
        f.give_back(b);
        assert!(pa.exists() && !pb.exists(), "one kept, the other removed");
        f.ws.forget(&f.scratch);
        assert!(!pa.exists());
    }
}
