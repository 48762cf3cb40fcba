//! The file work of deploying and deleting jobs, done for the API by the job
//! registry (`PUT .../NAME`, a zip or one script; `DELETE .../NAME`). Receiving the
//! request body is the API's part (`api::upload`).
//!
//! Nothing is written into a job folder in place. A deploy is received and unpacked in
//! a hidden staging folder beside the job (`JOBS/TYPE/.deploy-NAME-RANDOM/`, ignored by
//! the scanner), checked, and then swapped with the job folder in one
//! `renameat2(RENAME_EXCHANGE)`, so the watcher sees the old job or the new one, never
//! a half-written one.
//!
//! The body is streamed to disk (`upload` in the staging folder) while it is counted
//! against [`MAX_UPLOAD`], so eight large uploads at once cost disk, not memory.
//!
//! A zip is extracted without ever following a link. Every entry's path is taken
//! apart first; an entry that passes through an entry the archive makes a link, that
//! is absolute or has `..`, or that is nested deeper than a run's private copy can
//! go, is refused before anything is written. Each link's target is resolved
//! lexically through the archive's own tree, following its other links as the kernel
//! would, and refused when it leaves the job folder. Then folders and files are
//! written, and the links last, so no write can go through one. The unpacked size is
//! capped against zip bombs.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use crate::runner::copy::MAX_DEPTH;

/// Most a deploy may unpack to.
pub const MAX_UNPACKED: u64 = 256 * 1024 * 1024;
/// Most a deploy request body may be; counted as it streams to disk.
pub const MAX_UPLOAD: usize = 64 * 1024 * 1024;
/// Most links one link's target may go through (Linux's own bound, `MAXSYMLINKS`).
pub const MAX_LINK_HOPS: usize = 40;
/// Longest link target read from a zip (`PATH_MAX`).
const MAX_LINK_TARGET: u64 = 4096;
/// Longest file name Linux takes (`NAME_MAX`).
const MAX_FILE_NAME: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the zip is not readable: {0}")]
    BadZip(String),
    #[error(
        "zip entry `{0}` would land outside the job folder (absolute path or `..`): nothing was written"
    )]
    Escapes(String),
    #[error(
        "zip entry `{name}` is a link to `{target}`, which {why}: links must stay inside the job folder; nothing was written"
    )]
    LinkEscapes {
        name: String,
        target: String,
        why: &'static str,
    },
    #[error(
        "zip entry `{name}` lies under `{link}`, which is a link in the same zip: files go into real folders only; nothing was written"
    )]
    UnderLink { name: String, link: String },
    #[error("zip entry `{name}` {why}: nothing was written")]
    Conflict { name: String, why: String },
    #[error(
        "zip entry `{name}` is nested {depth} folders deep; the host copies a job folder for each run at most {MAX_DEPTH} folders deep: flatten the zip; nothing was written"
    )]
    TooDeep { name: String, depth: usize },
    #[error("the zip unpacks to more than {} MiB: nothing was written", MAX_UNPACKED / (1024 * 1024))]
    TooLarge,
    #[error(
        "the request body is larger than {} MiB, the most a deploy may be: nothing was written; keep large data out of the job's zip",
        .limit / (1024 * 1024)
    )]
    UploadTooLarge { limit: u64 },
    #[error(
        "the request body is larger than {limit} bytes, the most {what} may be: nothing was written; shorten it"
    )]
    BodyTooLarge { what: &'static str, limit: u64 },
    #[error("the request body could not be read to its end: {0}")]
    BodyCut(String),
    #[error(
        "a single-file deploy needs `Content-Disposition: attachment; filename=run.sh` (a plain file name)"
    )]
    NoFileName,
    #[error(
        "the file name `{0}` in Content-Disposition is not a plain file name (no `/`, no NUL, not `.` or `..`, not starting with `.`, at most 255 bytes): nothing was written"
    )]
    BadFileName(String),
    #[error("Content-Disposition `filename*`: {0}; write it as `filename*=UTF-8''run.sh`")]
    BadDisposition(String),
    #[error("the deploy is empty: send a zip or a script")]
    Empty,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DeployError + 'a {
    move |source| DeployError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn bad_zip(e: impl std::fmt::Display) -> DeployError {
    DeployError::BadZip(e.to_string())
}

// ----- what the request says ---------------------------------------------------------

/// What the staged upload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    Zip,
    /// One file, with its (checked) name.
    File(String),
    /// Neither a zip content type nor a file name: a zip if it starts like one.
    Unnamed,
}

/// A name that can only ever be one file in the job folder's root.
pub fn check_file_name(name: &str) -> Result<(), DeployError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(DeployError::BadFileName(name.escape_debug().to_string()))
    }
}

// ----- the staging folder ------------------------------------------------------------

/// A hidden folder beside the job, `JOBS/TYPE/.deploy-NAME-RANDOM/`, holding the
/// upload as it arrives (`upload`) and the new job as it is built (`job/`). Removed
/// when dropped, whatever happened: a client that hangs up mid-upload included.
pub struct Staging {
    root: PathBuf,
}

impl Staging {
    pub fn new(job_dir: &Path) -> Result<Staging, DeployError> {
        let parent = job_dir.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(io("creating", parent))?;
        let name = job_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let root = parent.join(format!(".deploy-{name}-{}", crate::ids::random_hex(8)));
        fs::create_dir(&root).map_err(io("creating", &root))?;
        Ok(Staging { root })
    }

    /// The received request body.
    pub fn upload(&self) -> PathBuf {
        self.root.join("upload")
    }

    fn job(&self) -> PathBuf {
        self.root.join("job")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // On success this holds the old job (or nothing); either way it goes.
        let _ = fs::remove_dir_all(&self.root);
    }
}

// ----- building the new job ----------------------------------------------------------

/// Builds the new job from the staged upload, then swaps it in for `job_dir`.
pub fn install(staging: &Staging, job_dir: &Path, upload: Upload) -> Result<(), DeployError> {
    let upload_path = staging.upload();
    let upload = match upload {
        Upload::Unnamed if starts_like_a_zip(&upload_path)? => Upload::Zip,
        Upload::Unnamed => return Err(DeployError::NoFileName),
        other => other,
    };
    let new = staging.job();
    fs::create_dir(&new).map_err(io("creating", &new))?;
    match upload {
        Upload::File(name) => {
            check_file_name(&name)?;
            let path = new.join(&name);
            fs::rename(&upload_path, &path).map_err(io("moving the upload to", &path))?;
            if crate::spec::entry::EntryKind::from_file_name(&name)
                == Some(crate::spec::entry::EntryKind::Binary)
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
            }
        }
        Upload::Zip | Upload::Unnamed => unzip(&new, &upload_path)?,
    }
    swap_in(&new, job_dir)
}

fn starts_like_a_zip(path: &Path) -> Result<bool, DeployError> {
    let mut head = Vec::with_capacity(4);
    let f = fs::File::open(path).map_err(io("reading", path))?;
    f.take(4)
        .read_to_end(&mut head)
        .map_err(io("reading", path))?;
    Ok(head == b"PK\x03\x04")
}

/// One zip entry, planned before anything is written.
struct Planned {
    index: usize,
    /// As written in the zip, for messages.
    name: String,
    /// Normalised, relative, without `.` or `..`.
    rel: PathBuf,
    kind: Kind,
    mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link(String),
}

impl Kind {
    fn word(&self) -> &'static str {
        match self {
            Kind::Dir => "a folder",
            Kind::File => "a file",
            Kind::Link(_) => "a link",
        }
    }
}

fn unzip(new: &Path, upload: &Path) -> Result<(), DeployError> {
    let file = fs::File::open(upload).map_err(io("reading", upload))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(bad_zip)?;
    if zip.is_empty() {
        return Err(DeployError::Empty);
    }
    let plan = plan(&mut zip)?;
    write_folders_and_files(new, &mut zip, &plan)?;
    // Last, so no folder or file above was written through a link.
    for p in &plan {
        if let Kind::Link(target) = &p.kind {
            let path = new.join(&p.rel);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io("creating", dir))?;
            }
            std::os::unix::fs::symlink(target, &path).map_err(io("linking", &path))?;
        }
    }
    Ok(())
}

/// Reads every entry's name, kind and link target and checks them all together;
/// writes nothing.
fn plan<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
) -> Result<Vec<Planned>, DeployError> {
    let mut plan = Vec::with_capacity(zip.len());
    for index in 0..zip.len() {
        let f = zip.by_index(index).map_err(bad_zip)?;
        let name = f.name().map_err(bad_zip)?.into_owned();
        let rel = entry_path(&name, f.enclosed_name())?;
        if rel.as_os_str().is_empty() {
            // `./` or `/`-only names: the job folder itself.
            if f.is_dir() {
                continue;
            }
            return Err(DeployError::Escapes(name));
        }
        let mode = f.unix_mode();
        let kind = if f.is_symlink() {
            let mut target = String::new();
            f.take(MAX_LINK_TARGET + 1)
                .read_to_string(&mut target)
                .map_err(bad_zip)?;
            if target.is_empty() || target.len() as u64 > MAX_LINK_TARGET || target.contains('\0') {
                return Err(DeployError::LinkEscapes {
                    name,
                    target: target.escape_debug().take(80).collect(),
                    why: "is empty, too long or holds a NUL byte",
                });
            }
            Kind::Link(target)
        } else if f.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        let folders = rel.components().count() - usize::from(kind != Kind::Dir);
        if folders > MAX_DEPTH {
            return Err(DeployError::TooDeep {
                name,
                depth: folders,
            });
        }
        plan.push(Planned {
            index,
            name,
            rel,
            kind,
            mode,
        });
    }
    check_tree(&plan)?;
    Ok(plan)
}

/// The entry's path inside the job: refused when the name is absolute or has a `..`
/// anywhere (no real zip needs one), then normalised by the zip crate's own check.
fn entry_path(name: &str, enclosed: Option<PathBuf>) -> Result<PathBuf, DeployError> {
    let dotdot = name.split(['/', '\\']).any(|c| c == "..");
    if name.starts_with(['/', '\\']) || dotdot {
        return Err(DeployError::Escapes(name.to_string()));
    }
    let rel = enclosed.ok_or_else(|| DeployError::Escapes(name.to_string()))?;
    // Belt and braces: what the crate returned must be plain components only.
    if rel.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(rel)
    } else {
        Err(DeployError::Escapes(name.to_string()))
    }
}

/// Checks the archive as a tree: no entry under a link or under a file, no path that
/// is a link and something else, and every link resolving inside the job folder.
fn check_tree(plan: &[Planned]) -> Result<(), DeployError> {
    let mut at: HashMap<&Path, &Planned> = HashMap::new();
    for p in plan {
        if let Some(other) = at.insert(&p.rel, p) {
            // The same folder twice, or a file written twice (the last wins, as
            // unzip does), are harmless; a link that is also something else is not.
            let same = other.kind == Kind::Dir && p.kind == Kind::Dir
                || other.kind == Kind::File && p.kind == Kind::File;
            if !same {
                return Err(DeployError::Conflict {
                    name: p.name.clone(),
                    why: format!(
                        "is {} but `{}` in the same zip makes the same path {}",
                        p.kind.word(),
                        other.name,
                        other.kind.word()
                    ),
                });
            }
        }
    }
    for p in plan {
        for above in p.rel.ancestors().skip(1) {
            let Some(other) = at.get(above) else { continue };
            match other.kind {
                Kind::Link(_) => {
                    return Err(DeployError::UnderLink {
                        name: p.name.clone(),
                        link: other.name.clone(),
                    });
                }
                Kind::File => {
                    return Err(DeployError::Conflict {
                        name: p.name.clone(),
                        why: format!(
                            "lies under `{}`, which is a file in the same zip",
                            other.name
                        ),
                    });
                }
                Kind::Dir => {}
            }
        }
    }
    let links: HashMap<&Path, &str> = plan
        .iter()
        .filter_map(|p| match &p.kind {
            Kind::Link(t) => Some((p.rel.as_path(), t.as_str())),
            _ => None,
        })
        .collect();
    for p in plan {
        if let Kind::Link(target) = &p.kind {
            resolve_link(&links, &p.rel).map_err(|why| DeployError::LinkEscapes {
                name: p.name.clone(),
                target: target.clone(),
                why,
            })?;
        }
    }
    Ok(())
}

/// Where the link at `link` ends up inside the job folder, following the archive's
/// other links as the kernel would (a `..` after a link applies to where the link
/// led, not to the text before it). `Err` says why it is refused.
fn resolve_link(links: &HashMap<&Path, &str>, link: &Path) -> Result<PathBuf, &'static str> {
    let mut hops = 0;
    follow(links, link, &mut hops)
}

fn follow(
    links: &HashMap<&Path, &str>,
    link: &Path,
    hops: &mut usize,
) -> Result<PathBuf, &'static str> {
    *hops += 1;
    if *hops > MAX_LINK_HOPS {
        return Err("goes through more than 40 links (a loop?)");
    }
    let target = links.get(link).copied().unwrap_or_default();
    let mut at = link.parent().map(Path::to_path_buf).unwrap_or_default();
    for c in Path::new(target).components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err("is an absolute path");
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !at.pop() {
                    return Err("resolves outside the job folder");
                }
            }
            Component::Normal(part) => {
                at.push(part);
                if links.contains_key(at.as_path()) {
                    at = follow(links, &at, hops)?;
                }
            }
        }
    }
    Ok(at)
}

/// Folders, then files, each at its planned path; no link exists yet.
fn write_folders_and_files<R: Read + std::io::Seek>(
    new: &Path,
    zip: &mut zip::ZipArchive<R>,
    plan: &[Planned],
) -> Result<(), DeployError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    for p in plan.iter().filter(|p| p.kind == Kind::Dir) {
        let path = new.join(&p.rel);
        fs::create_dir_all(&path).map_err(io("creating", &path))?;
    }
    let mut total: u64 = 0;
    for p in plan.iter().filter(|p| p.kind == Kind::File) {
        let path = new.join(&p.rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        let mut f = zip.by_index(p.index).map_err(bad_zip)?;
        // O_NOFOLLOW: a link at the last component is refused, not written through.
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io("writing", &path))?;
        // The sizes in a zip's directory are claims; count what really comes out.
        let left = MAX_UNPACKED - total;
        let n = std::io::copy(&mut (&mut f).take(left + 1), &mut out).map_err(bad_zip)?;
        total += n;
        if total > MAX_UNPACKED {
            return Err(DeployError::TooLarge);
        }
        if let Some(mode) = p.mode {
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o777));
        }
    }
    Ok(())
}

/// Puts `new` at `job_dir` atomically; the old job (if any) ends up at `new`.
fn swap_in(new: &Path, job_dir: &Path) -> Result<(), DeployError> {
    if job_dir.exists() {
        renameat2(
            AT_FDCWD,
            new,
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
        fs::rename(new, job_dir).map_err(io("moving the new job to", job_dir))
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
    fs::rename(job_dir, &away).map_err(io("removing", job_dir))?;
    fs::remove_dir_all(&away).map_err(io("removing", &away))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use std::io::Write;

    /// What the route does, minus the network: stage the bytes, install them.
    fn deploy(job_dir: &Path, upload: Upload, bytes: &[u8]) -> Result<(), DeployError> {
        let staging = Staging::new(job_dir)?;
        fs::write(staging.upload(), bytes).unwrap();
        install(&staging, job_dir, upload)
    }

    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Link(&'a str, &'a str),
    }

    fn zip_of_entries(entries: &[E<'_>]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        for e in entries {
            match e {
                E::File(name, data) => {
                    w.start_file(*name, opts).unwrap();
                    w.write_all(data).unwrap();
                }
                E::Dir(name) => w.add_directory(*name, opts).unwrap(),
                E::Link(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let e: Vec<E<'_>> = entries.iter().map(|(n, d)| E::File(n, d)).collect();
        zip_of_entries(&e)
    }

    /// Every path under `dir`, links not followed.
    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_zip_replaces_the_job_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("continuous/web");
        fs::create_dir_all(&job).unwrap();
        fs::write(job.join("old.sh"), "old").unwrap();
        let zip = zip_of(&[("run.sh", b"echo new"), ("lib/x.txt", b"x")]);
        deploy(&job, Upload::Zip, &zip).unwrap();
        assert_eq!(fs::read_to_string(job.join("run.sh")).unwrap(), "echo new");
        assert!(job.join("lib/x.txt").exists());
        assert!(!job.join("old.sh").exists());
        // No staging folder is left behind.
        assert_eq!(listing(&tmp.path().join("continuous")).len(), 4);
        // Sniffed as a zip without a content type.
        deploy(&job, Upload::Unnamed, &zip).unwrap();
        assert!(job.join("lib/x.txt").exists());
    }

    #[test]
    fn zip_slip_is_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("triggered/t");
        for bad in [
            "../evil.sh",
            "/etc/evil",
            "a/../../evil",
            "a/../b",
            "\\evil",
        ] {
            let err = deploy(
                &job,
                Upload::Zip,
                &zip_of(&[("run.sh", b"ok"), (bad, b"x")]),
            )
            .unwrap_err();
            assert!(matches!(err, DeployError::Escapes(_)), "{bad}: {err}");
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert!(!job.exists());
            assert!(!tmp.path().join("evil.sh").exists());
            assert_eq!(listing(tmp.path()), ["triggered"], "{bad}");
        }
    }

    #[test]
    fn zip_with_a_chain_of_symlinks_cannot_write_outside_the_job_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("jobs/triggered/t");
        let two = zip_of_entries(&[
            E::Link("l1", "a/b/l2/.."),
            E::Link("a/b/l2", "../.."),
            E::File("l1/E.txt", b"x"),
        ]);
        // The same chain without the file: the link itself is what is refused.
        let two_links_only = zip_of_entries(&[
            E::File("run.sh", b"ok"),
            E::Link("l1", "a/b/l2/.."),
            E::Link("a/b/l2", "../.."),
        ]);
        // Twelve links, each one folder further up through the one before, every one
        // of them inside the job when read as text: `d/m0 -> ..`, `d/m1 -> m0/..`, ...
        let names: Vec<String> = (0..12).map(|i| format!("d/m{i}")).collect();
        let targets: Vec<String> = (0..12)
            .map(|i| match i {
                0 => "..".to_string(),
                _ => format!("m{}/..", i - 1),
            })
            .collect();
        let mut twelve = vec![E::File("run.sh", b"ok")];
        for (n, t) in names.iter().zip(&targets) {
            twelve.push(E::Link(n, t));
        }
        twelve.push(E::File("d/m11/tmp/E.txt", b"x"));
        let twelve = zip_of_entries(&twelve);
        for (what, zip) in [
            ("two", &two),
            ("two, links only", &two_links_only),
            ("twelve", &twelve),
        ] {
            let err = deploy(&job, Upload::Zip, zip).unwrap_err();
            assert!(
                matches!(
                    err,
                    DeployError::LinkEscapes { .. } | DeployError::UnderLink { .. }
                ),
                "{what}: {err}"
            );
            assert_eq!(listing(tmp.path()), ["jobs", "jobs/triggered"], "{what}");
        }
    }

    #[test]
    fn links_resolve_through_the_archive_as_the_kernel_would() {
        type Links<'a> = &'a [(&'a str, &'a str)];
        let links =
            |pairs: &[(&'static str, &'static str)]| -> HashMap<&'static Path, &'static str> {
                pairs.iter().map(|(l, t)| (Path::new(*l), *t)).collect()
            };
        let inside: &[(Links, &str, &str)] = &[
            (&[("current", "v2")], "current", "v2"),
            (&[("a/up", "..")], "a/up", ""),
            (&[("a/b/c", "../x")], "a/b/c", "a/x"),
            (&[("x", "y"), ("y", "z/w")], "x", "z/w"),
            (&[("l", "a/b/m/.."), ("a/b/m", "c")], "l", "a/b"),
        ];
        for (pairs, link, want) in inside {
            assert_eq!(
                resolve_link(&links(pairs), Path::new(link)),
                Ok(PathBuf::from(want)),
                "{pairs:?}"
            );
        }
        let outside: &[(Links, &str)] = &[
            (&[("up", "..")], "up"),
            (&[("abs", "/etc")], "abs"),
            (&[("l1", "a/b/l2/.."), ("a/b/l2", "../..")], "l1"),
            (&[("a", "b"), ("b", "a")], "a"),
            (&[("self", "self/x")], "self"),
            (&[("l", "m/.."), ("m", "../x")], "l"),
        ];
        for (pairs, link) in outside {
            assert!(
                resolve_link(&links(pairs), Path::new(link)).is_err(),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn a_legitimate_zip_with_internal_links_deploys() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("continuous/web");
        let zip = zip_of_entries(&[
            E::Link("current", "v2"),
            E::Dir("v2/"),
            E::File("v2/run.sh", b"echo v2"),
            E::Link("run.sh", "current/run.sh"),
            E::Link("v2/self", "."),
        ]);
        deploy(&job, Upload::Zip, &zip).unwrap();
        assert_eq!(fs::read_link(job.join("current")).unwrap(), Path::new("v2"));
        assert_eq!(fs::read_to_string(job.join("run.sh")).unwrap(), "echo v2");
    }

    #[test]
    fn entries_under_links_or_files_and_double_entries_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("continuous/web");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "file under an inside link",
                zip_of_entries(&[E::Link("l", "d"), E::Dir("d/"), E::File("l/x", b"x")]),
            ),
            (
                "link under a link",
                zip_of_entries(&[E::Link("l", "d"), E::Link("l/m", "x")]),
            ),
            (
                "link and file at one path",
                zip_of_entries(&[E::File("x", b"x"), E::Link("./x", "y")]),
            ),
            (
                "file under a file",
                zip_of_entries(&[E::File("x", b"x"), E::File("x/y", b"y")]),
            ),
        ];
        for (what, zip) in cases {
            let err = deploy(&job, Upload::Zip, &zip).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{what}: {err}");
            assert!(!job.exists(), "{what}");
        }
    }

    #[test]
    fn a_zip_nested_deeper_than_a_run_can_copy_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("triggered/deep");
        let path = |n: usize| (0..n).map(|i| format!("d{i}/")).collect::<String>();
        // A file in a folder MAX_DEPTH deep is fine: the copy reaches it.
        let ok = format!("{}f.txt", path(MAX_DEPTH));
        deploy(
            &job,
            Upload::Zip,
            &zip_of(&[("run.sh", b"ok"), (&ok, b"x")]),
        )
        .unwrap();
        let too = format!("{}f.txt", path(MAX_DEPTH + 1));
        let err = deploy(
            &job,
            Upload::Zip,
            &zip_of(&[("run.sh", b"new"), (&too, b"x")]),
        )
        .unwrap_err();
        assert!(matches!(err, DeployError::TooDeep { .. }), "{err}");
        assert!(err.to_string().contains(&MAX_DEPTH.to_string()), "{err}");
        assert_eq!(fs::read_to_string(job.join("run.sh")).unwrap(), "ok");
        let dir = zip_of_entries(&[E::Dir(&path(MAX_DEPTH + 1))]);
        assert!(matches!(
            deploy(&job, Upload::Zip, &dir),
            Err(DeployError::TooDeep { .. })
        ));
    }

    #[test]
    fn a_single_file_needs_a_plain_name() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("triggered/t");
        deploy(&job, Upload::File("run.py".into()), b"print(1)").unwrap();
        assert_eq!(fs::read_to_string(job.join("run.py")).unwrap(), "print(1)");
        for bad in ["../x.py", ".hidden.py", "", ".", "..", "a/b", "a\0b"] {
            assert!(
                deploy(&job, Upload::File(bad.into()), b"").is_err(),
                "{bad:?}"
            );
        }
        assert!(matches!(
            deploy(&job, Upload::Unnamed, b"echo hi"),
            Err(DeployError::NoFileName)
        ));
        assert!(job.join("run.py").exists());
    }

    #[test]
    fn delete_removes_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("continuous/web");
        fs::create_dir_all(&job).unwrap();
        fs::write(job.join("run.sh"), "x").unwrap();
        delete(&job).unwrap();
        assert!(!job.exists());
        assert_eq!(
            fs::read_dir(tmp.path().join("continuous")).unwrap().count(),
            0
        );
    }
}
