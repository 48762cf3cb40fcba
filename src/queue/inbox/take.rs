//! Taking a batch of inbox files: each one read, stored as a message, and only then
//! removed; files too large are set aside under a dot-name the inbox ignores.
//!
//! One call handles a whole batch on a blocking thread, so a thousand files dropped at
//! once cost a few hops to the blocking pool rather than thousands. Each file is held
//! under an exclusive `flock` while it is taken and is taken only if it is still
//! linked once the lock is held: two hosts watching the same folder (hosts sharing
//! LOGS on one machine run the same jobs) then never both store it. A host that dies
//! mid-file releases its lock with its life, and the file, not yet removed, is taken
//! at the next start.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::queue::{Message, NewMessage, QueueStore, StoreError};

/// What a batch needs to know of its job.
#[derive(Debug, Clone)]
pub struct Target {
    pub job: String,
    pub max_payload_bytes: u64,
    pub dedupe_window: Duration,
}

/// A note for the job's scheduler log: (is an error, text).
pub type Note = (bool, String);

/// What became of a batch.
#[derive(Debug, Default)]
pub struct Taken {
    /// The messages stored (their files removed, or a note says why not).
    pub stored: Vec<Message>,
    /// Names to try again later: the store could not take them, or the batch was
    /// cancelled before them. Their files are untouched.
    pub left: Vec<OsString>,
    /// Why the store failed, when it did.
    pub store_error: Option<String>,
    pub notes: Vec<Note>,
}

enum One {
    /// Stored; the note says when its file could not be removed.
    Stored(Box<Message>, Option<Note>),
    /// Gone, taken by someone else, not a regular file: nothing to say.
    Skipped,
    Note(Note),
    StoreDown(String),
}

/// Takes the files `names` of `dir` in that order. Stops at the first store failure
/// or at `cancel`, leaving the rest in [`Taken::left`].
pub fn take(
    dir: &Path,
    names: Vec<OsString>,
    target: &Target,
    store: &Result<Arc<dyn QueueStore>, String>,
    cancel: &CancellationToken,
) -> Taken {
    let mut taken = Taken::default();
    let mut names = names.into_iter();
    while let Some(name) = names.next() {
        if cancel.is_cancelled() {
            taken.left.push(name);
            continue;
        }
        match take_one(dir, &name, target, store) {
            One::Stored(m, note) => {
                taken.stored.push(*m);
                taken.notes.extend(note);
            }
            One::Skipped => {}
            One::Note(n) => taken.notes.push(n),
            One::StoreDown(why) => {
                taken.store_error = Some(why);
                taken.left.push(name);
                taken.left.extend(names.by_ref());
            }
        }
    }
    taken
}

fn take_one(
    dir: &Path,
    name: &OsStr,
    target: &Target,
    store: &Result<Arc<dyn QueueStore>, String>,
) -> One {
    let path = dir.join(name);
    let shown = path.display();
    // No links followed and no blocking on a FIFO or device someone left there: it
    // is opened only to be looked at, and skipped unless it is a regular file.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return One::Skipped,
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return One::Skipped,
        Err(e) => {
            return One::Note((
                true,
                format!(
                    "inbox: cannot read {shown}: {e}; give the host's user read access to it, \
                     then rename it into the folder again"
                ),
            ));
        }
    };
    match file.try_lock() {
        Ok(()) => {}
        // Another host is taking it.
        Err(TryLockError::WouldBlock) => return One::Skipped,
        // A file system without locks: one host per inbox is then the user's rule.
        Err(TryLockError::Error(_)) => {}
    }
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return One::Note((true, format!("inbox: cannot read {shown}: {e}"))),
    };
    // Unlinked while we waited for it: already taken (and removed) by someone else.
    if !meta.is_file() || meta.nlink() == 0 {
        return One::Skipped;
    }
    if meta.len() > target.max_payload_bytes {
        return set_aside(dir, name, &file, meta.len(), target);
    }
    let mut payload = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    if let Err(e) = (&file)
        .take(target.max_payload_bytes.saturating_add(1))
        .read_to_end(&mut payload)
    {
        return One::Note((true, format!("inbox: cannot read {shown}: {e}")));
    }
    // It grew after it was closed (someone appends to it): still too large.
    if payload.len() as u64 > target.max_payload_bytes {
        return set_aside(dir, name, &file, payload.len() as u64, target);
    }
    let store = match store {
        Ok(s) => s,
        Err(why) => return One::StoreDown(why.clone()),
    };
    let file_name = name.to_string_lossy().into_owned();
    let msg = NewMessage {
        job: target.job.clone(),
        payload,
        content_type: guess_content_type(&file_name).map(str::to_string),
        name: Some(file_name),
        ..NewMessage::default()
    };
    let stored = match store.enqueue(msg, target.dedupe_window, Utc::now()) {
        Ok(e) => Box::new(e.message),
        Err(e @ (StoreError::Unavailable { .. } | StoreError::Unusable { .. })) => {
            return One::StoreDown(e.to_string());
        }
        Err(e) => {
            return One::Note((true, format!("inbox: storing {shown} failed: {e}")));
        }
    };
    // Remove what was read, not what may have been renamed over the name meanwhile.
    if !same_file(&path, &file) {
        return One::Stored(stored, None);
    }
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        let note = format!(
            "inbox: {shown} was stored as message {} but could not be removed: {e}; \
             remove it by hand, or it is stored again when the host next starts",
            stored.id
        );
        return One::Stored(stored, Some((true, note)));
    }
    One::Stored(stored, None)
}

/// Renames a file too large to be a message to `.NAME.too-large`: ignored from now
/// on, and still there for the user to see.
fn set_aside(dir: &Path, name: &OsStr, file: &File, size: u64, target: &Target) -> One {
    let path = dir.join(name);
    let mut aside = OsString::from(".");
    aside.push(name);
    aside.push(".too-large");
    let aside = dir.join(aside);
    let (shown, aside_shown, max) = (path.display(), aside.display(), target.max_payload_bytes);
    if !same_file(&path, file) {
        return One::Skipped;
    }
    let text = match std::fs::rename(&path, &aside) {
        Ok(()) => format!(
            "inbox: {shown} is {size} bytes, more than the job's max_payload_bytes ({max}): \
             renamed to {aside_shown}; raise `queue.max_payload_bytes` in settings.job \
             (at most 64 MiB) and rename it back to take it, or remove it"
        ),
        Err(e) => format!(
            "inbox: {shown} is {size} bytes, more than the job's max_payload_bytes ({max}), \
             and could not be renamed to {aside_shown}: {e}; move it out of the folder"
        ),
    };
    One::Note((true, text))
}

/// True when `path` still names the file `file` has open.
fn same_file(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The content type of a few common extensions; `None` for the rest (the payload is
/// then served as plain bytes).
pub fn guess_content_type(file_name: &str) -> Option<&'static str> {
    let (_, ext) = file_name.rsplit_once('.')?;
    let ty = match ext.to_ascii_lowercase().as_str() {
        "json" => "application/json",
        "xml" => "application/xml",
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "yaml" | "yml" => "application/yaml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        _ => return None,
    };
    Some(ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_from_common_extensions_only() {
        for (name, want) in [
            ("order.json", Some("application/json")),
            ("ORDER.JSON", Some("application/json")),
            ("a.b.csv", Some("text/csv")),
            ("photo.jpeg", Some("image/jpeg")),
            ("notes.txt", Some("text/plain")),
            ("README", None),
            ("archive.tar.xz", None),
            ("trailing.", None),
        ] {
            assert_eq!(guess_content_type(name), want, "{name}");
        }
    }
}
