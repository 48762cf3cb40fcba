//! Reading JOBS into job definitions: the truth the supervisor reconciles against.
//!
//! File-system events are only hints; every decision is taken from a fresh scan, so
//! lost or coalesced inotify events cannot cause wrong behaviour. A scan stats every
//! file of every job (cheap next to starting a process) and fingerprints them, so a
//! job restarts only when its own files really changed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::spec::JobType;
use crate::spec::entry::{self, Launch};
use crate::spec::name::{NameCheck, check_name};
use crate::spec::problem::Problem;
use crate::spec::settings::{self, JobSettings};

/// The switch file: never part of a job's code.
pub const DISABLE_FILE: &str = "disable.job";

/// One job as its folder says it is now.
#[derive(Debug, Clone)]
pub struct JobDefinition {
    pub name: String,
    pub job_type: JobType,
    pub dir: PathBuf,
    /// Hash of every file's path, size, mtime, mode and link target.
    pub fingerprint: u64,
    pub disabled: bool,
    /// `None` when settings.job is invalid (see `errors`). Shared: a run takes its
    /// job's settings without copying them.
    pub settings: Option<std::sync::Arc<JobSettings>>,
    pub launch: Option<Launch>,
    pub warnings: Vec<String>,
    /// `problems` flattened to one line each (`Problem`'s display), as the job tasks
    /// report them.
    pub errors: Vec<String>,
    /// Every error, structured (file, line, column, key, message, fix), for the API
    /// and `jobhost check`; `errors` in the same order.
    pub problems: Vec<Problem>,
    /// settings.job as written (comments stripped), `{}` when absent or not JSON; read
    /// here once so the API does not open every job's file on every request.
    pub settings_raw: serde_json::Value,
}

impl JobDefinition {
    pub fn valid(&self) -> bool {
        self.errors.is_empty() && self.settings.is_some() && self.launch.is_some()
    }

    pub fn key(&self) -> (JobType, String) {
        (self.job_type, self.name.clone())
    }
}

/// A scan of JOBS.
#[derive(Debug, Default)]
pub struct Scan {
    pub jobs: BTreeMap<(JobType, String), JobDefinition>,
    /// Entries under `continuous/` or `triggered/` that are not jobs (bad names,
    /// plain files), one sentence each.
    pub problems: Vec<String>,
}

pub fn scan(root: &Path, path_env: Option<&OsStr>) -> Scan {
    let mut out = Scan::default();
    for job_type in JobType::ALL {
        let type_dir = root.join(job_type.as_str());
        let Ok(entries) = std::fs::read_dir(&type_dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            match check_name(&e.file_name()) {
                NameCheck::Hidden => continue,
                NameCheck::Invalid(why) => {
                    out.problems.push(format!("{}: {why}", path.display()));
                    continue;
                }
                NameCheck::Valid => {}
            }
            // Follow a link to a folder: deploying by symlink is common.
            if !path.is_dir() {
                out.problems.push(format!(
                    "{}: is not a folder; a job is a folder holding its script (move the file into {}/NAME/)",
                    path.display(),
                    type_dir.display()
                ));
                continue;
            }
            let def = load(&path, job_type, path_env);
            out.jobs.insert(def.key(), def);
        }
    }
    out
}

/// Reads one job folder.
pub fn load(dir: &Path, job_type: JobType, path_env: Option<&OsStr>) -> JobDefinition {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    // One capped read of settings.job serves both the settings and the API's echo.
    let (settings, settings_raw) = settings::load_with_raw(dir, job_type);
    let settings = match settings {
        Ok((s, w)) => {
            warnings.extend(w.iter().map(ToString::to_string));
            Some(std::sync::Arc::new(s))
        }
        Err(e) => {
            problems.extend(e.problems);
            None
        }
    };
    let launch = match entry::resolve(dir, path_env) {
        Ok(l) => Some(l),
        Err(e) => {
            problems.push(e.problem());
            None
        }
    };
    JobDefinition {
        name,
        job_type,
        dir: dir.to_path_buf(),
        fingerprint: fingerprint(dir),
        disabled: dir.join(DISABLE_FILE).exists(),
        settings,
        launch,
        warnings,
        errors: problems.iter().map(ToString::to_string).collect(),
        problems,
        settings_raw,
    }
}

/// Files that editors and copy tools leave for a moment; a change to them is not a
/// change to the job.
fn is_noise(name: &OsStr) -> bool {
    let n = name.to_string_lossy();
    n == DISABLE_FILE
        || n == "4913"
        || n.ends_with('~')
        || n.ends_with(".swp")
        || n.ends_with(".swx")
        || n.starts_with(".#")
}

pub fn fingerprint(dir: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    hash_dir(dir, Path::new(""), &mut h, 0);
    h.finish()
}

fn hash_dir(dir: &Path, rel: &Path, h: &mut DefaultHasher, depth: usize) {
    if depth > 64 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if is_noise(&e.file_name()) {
            continue;
        }
        // lstat: a symlink is hashed as a link and never followed, so loops end.
        let Ok(md) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let rel = rel.join(e.file_name());
        rel.hash(h);
        md.mode().hash(h);
        if md.is_dir() {
            hash_dir(&e.path(), &rel, h, depth + 1);
        } else {
            md.len().hash(h);
            md.mtime().hash(h);
            md.mtime_nsec().hash(h);
            md.ino().hash(h);
            if md.file_type().is_symlink() {
                std::fs::read_link(e.path()).ok().hash(h);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn fingerprint_ignores_the_switch_and_editor_noise_but_not_code() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::write(d.join("run.sh"), "echo 1\n").unwrap();
        let a = fingerprint(d);
        fs::write(d.join(DISABLE_FILE), "").unwrap();
        fs::write(d.join(".run.sh.swp"), "x").unwrap();
        fs::write(d.join("run.sh~"), "x").unwrap();
        assert_eq!(fingerprint(d), a);
        fs::write(d.join("run.sh"), "echo 22\n").unwrap();
        assert_ne!(fingerprint(d), a);
    }

    #[test]
    fn fingerprint_survives_a_symlink_loop() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("..", tmp.path().join("sub/up")).unwrap();
        let _ = fingerprint(tmp.path());
    }

    #[test]
    fn scan_reports_bad_names_and_files_and_skips_hidden() {
        let tmp = tempfile::tempdir().unwrap();
        let c = tmp.path().join("continuous");
        fs::create_dir_all(c.join("good")).unwrap();
        fs::write(c.join("good/run.sh"), "true\n").unwrap();
        fs::create_dir_all(c.join("bad name!")).unwrap();
        fs::create_dir_all(c.join(".deploying")).unwrap();
        fs::write(c.join("plainfile"), "x").unwrap();
        let s = scan(tmp.path(), std::env::var_os("PATH").as_deref());
        let names: Vec<_> = s.jobs.keys().map(|k| k.1.as_str()).collect();
        assert_eq!(names, vec!["good"]);
        assert_eq!(s.problems.len(), 2, "{:?}", s.problems);
        assert!(s.problems.iter().any(|p| p.contains("bad name!")));
        assert!(s.problems.iter().any(|p| p.contains("not a folder")));
    }

    #[test]
    fn problems_are_structured_and_errors_are_their_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("triggered/x");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("settings.job"), "{\n  \"timeout\": -1\n}").unwrap();
        let def = load(&dir, JobType::Triggered, None);
        assert!(!def.valid());
        let got: Vec<_> = def
            .problems
            .iter()
            .map(|p| (p.file.clone(), p.line, p.key.as_deref(), p.fix.is_empty()))
            .collect();
        assert_eq!(
            got,
            vec![
                (dir.join("settings.job"), Some(2), Some("timeout"), false),
                (dir.clone(), None, None, false),
            ]
        );
        assert_eq!(def.problems[1].message, "has no entry point");
        let lines: Vec<String> = def.problems.iter().map(ToString::to_string).collect();
        assert_eq!(def.errors, lines);
    }
}
