//! Deploying and deleting jobs over the API: `PUT .../NAME` (a zip, or one script
//! named by `Content-Disposition`), `PUT .../NAME/settings`, `DELETE .../NAME`.
//!
//! Nothing is written into a job folder in place. A deploy is unpacked into a hidden
//! temporary folder beside the job (hidden names are ignored by the watcher), checked,
//! and then swapped with the job folder in one `renameat2(RENAME_EXCHANGE)`, so the
//! watcher sees the old job or the new one, never a half-written one. A zip entry with
//! `..`, an absolute path, or a link pointing outside the job is refused before
//! anything is written; the unpacked size is capped against zip bombs.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

/// Most a deploy may unpack to.
pub const MAX_UNPACKED: u64 = 256 * 1024 * 1024;
/// Most a deploy request body may be.
pub const MAX_UPLOAD: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the zip is not readable: {0}")]
    BadZip(String),
    #[error(
        "zip entry `{0}` would land outside the job folder (absolute path or `..`): nothing was written"
    )]
    Escapes(String),
    #[error("zip entry `{0}` is a link pointing outside the job folder: nothing was written")]
    LinkEscapes(String),
    #[error("the zip unpacks to more than {} MiB: nothing was written", MAX_UNPACKED / (1024 * 1024))]
    TooLarge,
    #[error(
        "a single-file deploy needs `Content-Disposition: attachment; filename=run.sh` (a plain file name)"
    )]
    NoFileName,
    #[error("the file name `{0}` is not a plain file name")]
    BadFileName(String),
    #[error("the deploy is empty")]
    Empty,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DeployError {
    /// Bad input (400) rather than a failure of ours (500).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, DeployError::Io { .. })
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DeployError + 'a {
    move |source| DeployError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What the request carries.
pub enum Upload<'a> {
    Zip(&'a [u8]),
    File { name: &'a str, bytes: &'a [u8] },
}

/// The file name in a `Content-Disposition` header value.
pub fn disposition_file_name(value: &str) -> Option<String> {
    value.split(';').map(str::trim).find_map(|part| {
        let (k, v) = part.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("filename")).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Builds the new job in a hidden folder beside `job_dir`, then swaps it in.
pub fn deploy(job_dir: &Path, upload: Upload<'_>) -> Result<(), DeployError> {
    let parent = job_dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    let name = job_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".deploy-{name}-{}", crate::ids::random_hex(8)));
    std::fs::create_dir(&staging).map_err(io("creating", &staging))?;
    let result = fill(&staging, upload).and_then(|()| swap_in(&staging, job_dir));
    // On success `staging` holds the old job (or nothing); either way it goes.
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn fill(staging: &Path, upload: Upload<'_>) -> Result<(), DeployError> {
    match upload {
        Upload::File { name, bytes } => {
            let ok = !name.is_empty()
                && !name.starts_with('.')
                && !name.contains('/')
                && !name.contains('\0');
            if !ok {
                return Err(DeployError::BadFileName(name.to_string()));
            }
            let path = staging.join(name);
            std::fs::write(&path, bytes).map_err(io("writing", &path))?;
            if crate::spec::entry::EntryKind::from_file_name(name)
                == Some(crate::spec::entry::EntryKind::Binary)
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
            }
            Ok(())
        }
        Upload::Zip(bytes) => unzip(staging, bytes),
    }
}

/// Lexically resolves `rel` under the job root; `None` if it leaves it.
fn inside(rel: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn entry_name<R: Read>(f: &zip::read::ZipFile<'_, R>) -> Result<String, DeployError> {
    f.name()
        .map(|n| n.into_owned())
        .map_err(|e| DeployError::BadZip(e.to_string()))
}

fn unzip(staging: &Path, bytes: &[u8]) -> Result<(), DeployError> {
    use std::os::unix::fs::PermissionsExt;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| DeployError::BadZip(e.to_string()))?;
    if zip.is_empty() {
        return Err(DeployError::Empty);
    }
    // First pass: check every entry before writing anything.
    for i in 0..zip.len() {
        let f = zip
            .by_index(i)
            .map_err(|e| DeployError::BadZip(e.to_string()))?;
        let name = entry_name(&f)?;
        let Some(rel) = inside(Path::new(&name)) else {
            return Err(DeployError::Escapes(name));
        };
        if f.is_symlink() {
            let mut target = String::new();
            f.take(4096)
                .read_to_string(&mut target)
                .map_err(|e| DeployError::BadZip(e.to_string()))?;
            let base = rel.parent().unwrap_or(Path::new(""));
            if Path::new(&target).is_absolute() || inside(&base.join(&target)).is_none() {
                return Err(DeployError::LinkEscapes(name));
            }
        }
    }
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| DeployError::BadZip(e.to_string()))?;
        let name = entry_name(&f)?;
        let rel = inside(Path::new(&name)).ok_or(DeployError::Escapes(name))?;
        let path = staging.join(&rel);
        if f.is_dir() {
            std::fs::create_dir_all(&path).map_err(io("creating", &path))?;
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        if f.is_symlink() {
            let mut target = String::new();
            (&mut f)
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|e| DeployError::BadZip(e.to_string()))?;
            std::os::unix::fs::symlink(&target, &path).map_err(io("linking", &path))?;
            continue;
        }
        // The sizes in a zip's directory are claims; count what really comes out.
        let mut out = std::fs::File::create(&path).map_err(io("writing", &path))?;
        let left = MAX_UNPACKED - total;
        let n = std::io::copy(&mut (&mut f).take(left + 1), &mut out)
            .map_err(|e| DeployError::BadZip(e.to_string()))?;
        total += n;
        if total > MAX_UNPACKED {
            return Err(DeployError::TooLarge);
        }
        if let Some(mode) = f.unix_mode() {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o777));
        }
    }
    Ok(())
}

/// Puts `staging` at `job_dir` atomically; the old job (if any) ends up at `staging`.
fn swap_in(staging: &Path, job_dir: &Path) -> Result<(), DeployError> {
    if job_dir.exists() {
        renameat2(
            AT_FDCWD,
            staging,
            AT_FDCWD,
            job_dir,
            RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| DeployError::Io {
            what: "swapping in the new job at",
            path: job_dir.to_path_buf(),
            source: e.into(),
        })
    } else {
        std::fs::rename(staging, job_dir).map_err(io("moving the new job to", job_dir))?;
        // Recreate the staging name so the caller's cleanup has something to remove.
        let _ = std::fs::create_dir(staging);
        Ok(())
    }
}

/// Removes a job folder: renamed away first (so the watcher sees one clean removal),
/// then deleted.
pub fn delete(job_dir: &Path) -> Result<(), DeployError> {
    let parent = job_dir.parent().unwrap_or(Path::new("."));
    let name = job_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let away = parent.join(format!(".deleted-{name}-{}", crate::ids::random_hex(8)));
    std::fs::rename(job_dir, &away).map_err(io("removing", job_dir))?;
    std::fs::remove_dir_all(&away).map_err(io("removing", &away))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn a_zip_replaces_the_job_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("continuous/web");
        std::fs::create_dir_all(&job).unwrap();
        std::fs::write(job.join("old.sh"), "old").unwrap();
        deploy(
            &job,
            Upload::Zip(&zip_of(&[("run.sh", b"echo new"), ("lib/x.txt", b"x")])),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(job.join("run.sh")).unwrap(),
            "echo new"
        );
        assert!(job.join("lib/x.txt").exists());
        assert!(!job.join("old.sh").exists());
        // No staging folder is left behind.
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("continuous"))
            .unwrap()
            .collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn zip_slip_is_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("triggered/t");
        for bad in ["../evil.sh", "/etc/evil", "a/../../evil"] {
            let err = deploy(
                &job,
                Upload::Zip(&zip_of(&[("run.sh", b"ok"), (bad, b"x")])),
            )
            .unwrap_err();
            assert!(matches!(err, DeployError::Escapes(_)), "{bad}: {err}");
            assert!(!job.exists());
            assert!(!tmp.path().join("evil.sh").exists());
        }
    }

    #[test]
    fn a_single_file_needs_a_plain_name() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("triggered/t");
        deploy(
            &job,
            Upload::File {
                name: "run.py",
                bytes: b"print(1)",
            },
        )
        .unwrap();
        assert!(job.join("run.py").exists());
        for bad in ["../x.py", ".hidden.py", ""] {
            assert!(
                deploy(
                    &job,
                    Upload::File {
                        name: bad,
                        bytes: b""
                    }
                )
                .is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            disposition_file_name("attachment; filename=\"run.sh\"").as_deref(),
            Some("run.sh")
        );
    }

    #[test]
    fn delete_removes_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("continuous/web");
        std::fs::create_dir_all(&job).unwrap();
        std::fs::write(job.join("run.sh"), "x").unwrap();
        delete(&job).unwrap();
        assert!(!job.exists());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("continuous"))
                .unwrap()
                .count(),
            0
        );
    }
}
