//! inotify on JOBS, reduced to one signal: "something may have changed".
//!
//! Events are hints and nothing more; the supervisor decides from a rescan. Reads
//! (opens, closes without writing) are dropped here, because the host's own private
//! copies and in-place jobs read job folders all the time. If the kernel runs out of
//! inotify watches the watcher says so once and the supervisor falls back to a slow
//! periodic rescan, so changes are late rather than missed.

use std::path::Path;

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

/// Watches `root` recursively. An error means no watch at all: the caller falls back
/// to periodic rescans.
pub fn start(root: &Path, tx: mpsc::UnboundedSender<Hint>) -> Result<FolderWatch, String> {
    let handler = move |res: notify::Result<Event>| {
        let hint = match res {
            Ok(ev) if is_read_only(&ev.kind) => return,
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
