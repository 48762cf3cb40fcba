//! The inbox folder itself: whether it can be used (and, if not, the sentence that
//! tells the user why and what to do), which folder it is (so a folder deleted or
//! replaced while watched is noticed), and its listing of candidate files.
//!
//! Everything here is a blocking file-system call: callers run it on the blocking pool.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{AccessFlags, access};

/// Which folder the path named when it was checked: a folder deleted and created
/// again under the same name is another folder, with no watch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
}

/// The folder's identity, or the problem that keeps it from being an inbox.
pub fn check(dir: &Path) -> Result<Identity, String> {
    let shown = dir.display();
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "inbox {shown} does not exist: create it, or fix `queue.inbox` in settings.job"
            ));
        }
        Err(e) => {
            return Err(format!(
                "inbox {shown} cannot be read: {e}; give the host's user access to it, \
                 or fix `queue.inbox` in settings.job"
            ));
        }
    };
    if !meta.is_dir() {
        return Err(format!(
            "inbox {shown} is not a folder: point `queue.inbox` in settings.job at a folder, \
             or move the file away and create the folder"
        ));
    }
    if let Err(e) = std::fs::read_dir(dir) {
        return Err(format!(
            "inbox {shown} cannot be read: {e}; give the host's user read access to it"
        ));
    }
    // Files are removed once stored: without write access every file would be stored
    // again at each start, so this is a problem of the folder, said before any file.
    if let Err(e) = access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
        return Err(format!(
            "inbox {shown} is not writable by the host's user ({e}): taken files could not \
             be removed; give the user write access to the folder"
        ));
    }
    Ok(Identity {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// The folder's identity now, `None` when it is gone or no longer a folder.
pub fn identity(dir: &Path) -> Option<Identity> {
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| Identity {
            dev: m.dev(),
            ino: m.ino(),
        })
}

/// True for a name the inbox takes: dot-names are the feeder's temporary files and
/// the inbox's own `.NAME.too-large`.
pub fn takes_name(name: &std::ffi::OsStr) -> bool {
    !name.is_empty() && !name.as_encoded_bytes().starts_with(b".")
}

/// The regular files in `dir` the inbox takes, by name. Sub-folders, links and
/// special files are left alone.
pub fn list(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if takes_name(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_folder_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let e = check(&missing).unwrap_err();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert!(
            e.contains("does not exist") && e.contains("create it"),
            "{e}"
        );

        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = check(&file).unwrap_err();
        assert!(
            e.contains("is not a folder") && e.contains("`queue.inbox`"),
            "{e}"
        );

        let below_file = file.join("inbox");
        let e = check(&below_file).unwrap_err();
        assert!(e.contains(&below_file.display().to_string()), "{e}");

        assert!(check(tmp.path()).is_ok());
    }

    #[test]
    fn a_folder_made_again_is_another_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        let first = check(&dir).unwrap();
        assert_eq!(identity(&dir), Some(first));
        // Keep the old inode alive elsewhere so the new folder cannot reuse its number.
        std::fs::rename(&dir, tmp.path().join("old")).unwrap();
        assert_eq!(identity(&dir), None);
        std::fs::create_dir(&dir).unwrap();
        assert_ne!(identity(&dir), Some(first));
    }

    #[test]
    fn listing_keeps_regular_files_with_plain_names() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("b.json"), b"{}").unwrap();
        std::fs::write(d.join("a"), b"").unwrap();
        std::fs::write(d.join(".partial"), b"x").unwrap();
        std::fs::write(d.join(".big.too-large"), b"x").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("link")).unwrap();
        let mut names = list(d).unwrap();
        names.sort();
        assert_eq!(names, vec![OsString::from("a"), OsString::from("b.json")]);
    }
}
