//! inotify on JOBS, reduced to one signal: "something may have changed".
//!
//! Events are hints and nothing more; the supervisor decides from a rescan. Reads
//! (opens, closes without writing) are dropped here, because the host's own private
//! copies and in-place jobs read job folders all the time. If the kernel runs out of
//! inotify watches the watcher says so once and the supervisor falls back to a slow
//! periodic rescan, so changes are late rather than missed. Changes inside hidden
//! job folders (a deploy's staging folder, an editor's temp folder) are dropped too:
//! the scanner ignores those folders, and a large upload would otherwise cost a rescan
//! of JOBS for every write.

use std::path::{Component, Path, PathBuf};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Something under JOBS changed.
    Changed,
    /// The watcher cannot see everything any more (sentence says why).
    Degraded(String),
}

/// Keeps the OS watch alive; dropping it stops watching.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
}

fn is_read_only(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute)
                | AccessKind::Any
        )
    )
}

/// True for a path inside (or naming) a hidden entry of `JOBS/TYPE/`.
fn is_in_hidden_job(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    let mut parts = rel.components();
    let (Some(Component::Normal(_)), Some(Component::Normal(name))) = (parts.next(), parts.next())
    else {
        return false;
    };
    name.as_encoded_bytes().starts_with(b".")
}

/// Watches `root` recursively. An error means no watch at all: the caller falls back
/// to periodic rescans.
pub fn start(root: &Path, tx: mpsc::UnboundedSender<Hint>) -> Result<FolderWatch, String> {
    let base: PathBuf = root.to_path_buf();
    let handler = move |res: notify::Result<Event>| {
        let hint = match res {
            Ok(ev) if is_read_only(&ev.kind) => return,
            Ok(ev)
                if !ev.paths.is_empty() && ev.paths.iter().all(|p| is_in_hidden_job(&base, p)) =>
            {
                return;
            }
            Ok(_) => Hint::Changed,
            Err(e) => Hint::Degraded(describe(&e)),
        };
        let _ = tx.send(hint);
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(|e| describe(&e))?;
    watcher
        .watch(root, RecursiveMode::Recursive)
        .map_err(|e| describe(&e))?;
    Ok(FolderWatch { _watcher: watcher })
}

fn describe(e: &notify::Error) -> String {
    match e.kind {
        notify::ErrorKind::MaxFilesWatch => "the inotify watch limit is reached \
            (raise fs.inotify.max_user_watches with sysctl)"
            .to_string(),
        _ => format!("file watching failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_inside_hidden_job_folders_are_not_hints() {
        let root = Path::new("/j");
        for (path, hidden) in [
            ("/j/triggered/.deploy-x-1234/upload", true),
            ("/j/continuous/.tmp", true),
            ("/j/triggered/report/run.sh", false),
            ("/j/triggered/report/.hidden-file", false),
            ("/j/triggered/report", false),
            ("/j/triggered", false),
            ("/elsewhere/triggered/.x/y", false),
        ] {
            assert_eq!(is_in_hidden_job(root, Path::new(path)), hidden, "{path}");
        }
    }
}
