//! Private copies of job folders, so a deploy can replace files while a run goes on.
//!
//! Files are copied with `std::fs::copy`, which on Linux uses `copy_file_range`: file
//! systems that can share extents (btrfs, XFS, bcachefs, NFS 4.2 server-side copy)
//! do so instead of moving bytes. Hard links are never used: an in-place edit of the
//! original would change the running job's file under it. Symbolic links are copied
//! as links and never followed, so a link loop cannot recurse; a relative link that
//! points out of the job folder is rewritten to the absolute path it meant, so it
//! still resolves from the copy.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Copies the tree at `src` into `dst` (which must not exist yet).
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    copy_dir(src, dst, src, 0)
}

/// Deepest folder nesting a private copy follows; a deploy refuses deeper zips.
pub const MAX_DEPTH: usize = 64;

fn copy_dir(src: &Path, dst: &Path, root: &Path, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "{} is nested more than {MAX_DEPTH} folders deep",
            src.display()
        )));
    }
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&from, &to, root, depth + 1)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&from)?;
            let target = relink(&from, &target, root);
            std::os::unix::fs::symlink(target, &to)?;
            keep_times(&from, &to)?;
        } else if kind.is_file() {
            fs::copy(&from, &to).map_err(|e| {
                io::Error::new(e.kind(), format!("copying {}: {e}", from.display()))
            })?;
            keep_times(&from, &to)?;
        }
        // Sockets, FIFOs and devices are not job code: left out of the copy.
    }
    let perms = fs::metadata(src)?.permissions();
    fs::set_permissions(dst, perms)?;
    // Last: every entry made above moved the folder's own times.
    keep_times(src, dst)
}

/// Gives `to` the access and modification times of `from` (of links themselves,
/// never of what they point to).
fn keep_times(from: &Path, to: &Path) -> io::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(from)?;
    let atime = TimeSpec::new(md.atime(), md.atime_nsec());
    let mtime = TimeSpec::new(md.mtime(), md.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        to,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Keeps a link that stays inside the job folder relative (it then points into the
/// copy); makes one that leaves it absolute.
fn relink(link: &Path, target: &Path, root: &Path) -> PathBuf {
    if target.is_absolute() {
        return target.to_path_buf();
    }
    let base = link.parent().unwrap_or(root);
    let joined = normalize(&base.join(target));
    if joined.starts_with(normalize(root)) {
        target.to_path_buf()
    } else {
        joined
    }
}

/// Lexical normalisation: `a/b/../c` → `a/c`. Never touches the disk.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn copies_files_modes_and_links_without_following_loops() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("job");
        fs::create_dir_all(src.join("lib")).unwrap();
        fs::write(src.join("run.sh"), "echo hi\n").unwrap();
        fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(src.join("lib/data.txt"), "data").unwrap();
        symlink("..", src.join("lib/loop")).unwrap();
        symlink("data.txt", src.join("lib/alias")).unwrap();
        fs::write(tmp.path().join("outside.txt"), "out").unwrap();
        symlink("../outside.txt", src.join("out")).unwrap();

        let dst = tmp.path().join("copy");
        copy_tree(&src, &dst).unwrap();

        assert_eq!(fs::read_to_string(dst.join("run.sh")).unwrap(), "echo hi\n");
        let mode = fs::metadata(dst.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(dst.join("lib/loop")).unwrap(),
            Path::new("..")
        );
        assert_eq!(fs::read_to_string(dst.join("lib/alias")).unwrap(), "data");
        assert_eq!(
            fs::read_link(dst.join("out")).unwrap(),
            tmp.path().join("outside.txt")
        );
        // Modification times are the originals' (set long ago here, so a copy made
        // now could not have them by chance).
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        for rel in ["run.sh", "lib/data.txt", "lib", ""] {
            fs::File::open(src.join(rel))
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let dst = tmp.path().join("copy2");
        copy_tree(&src, &dst).unwrap();
        for rel in ["", "run.sh", "lib", "lib/data.txt"] {
            let (a, b) = (
                fs::symlink_metadata(src.join(rel)).unwrap(),
                fs::symlink_metadata(dst.join(rel)).unwrap(),
            );
            assert_eq!(
                (a.modified().unwrap(), a.is_dir()),
                (b.modified().unwrap(), b.is_dir()),
                "{rel}"
            );
        }
        // A copy, not a hard link: editing the original leaves the copy alone.
        fs::write(src.join("run.sh"), "echo changed\n").unwrap();
        assert_eq!(fs::read_to_string(dst.join("run.sh")).unwrap(), "echo hi\n");
    }
}
