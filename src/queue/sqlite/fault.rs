//! What an SQLite error means for whoever called the store: a file that can no longer
//! be used at all ([`StoreError::Unusable`]: corrupt, not a database) or a store that
//! is only unavailable for now ([`StoreError::Unavailable`]: disk full, I/O error,
//! locked too long). Both name the file and say what to do, since the message ends up
//! in front of a user (an API answer, the host log, `jobhost check`).

use std::path::Path;

use rusqlite::ErrorCode;

use crate::queue::StoreError;

/// What to do about a database that cannot be read.
pub const FIX_BROKEN: &str = "stop the hosts using it, then restore it from a backup or move the file away (its messages are then lost) and start again";

/// How an error from SQLite ended a store call, before it is told to the caller.
#[derive(Debug)]
pub enum Failure {
    /// The change does not apply (unknown message, wrong state): nothing was changed.
    Store(StoreError),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl Failure {
    pub fn into_store(self, path: &Path) -> StoreError {
        match self {
            Failure::Store(e) => e,
            Failure::Sql(e) => describe(path, &e),
        }
    }
}

/// Whether `e` leaves the write transaction unusable: everything done in it so far
/// must be rolled back and every caller of the batch told, rather than only the call
/// that met it.
pub fn fatal(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::PermissionDenied
        )
    )
}

/// The store error for `e`, met while using the store at `path`.
pub fn describe(path: &Path, e: &rusqlite::Error) -> StoreError {
    let unavailable = |reason: String| StoreError::Unavailable {
        path: path.to_path_buf(),
        reason,
    };
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Unusable {
            path: path.to_path_buf(),
            reason: format!("it is not a readable SQLite database ({e})"),
            fix: FIX_BROKEN.into(),
        },
        Some(ErrorCode::DiskFull) => unavailable(format!(
            "the disk holding it is full ({e}); nothing of this request was stored: free some space and try again"
        )),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => unavailable(format!(
            "another process held it locked for too long ({e}); nothing of this request was stored: try again (is a tool holding the file open?)"
        )),
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
            unavailable(format!(
                "it cannot be written ({e}): make the file, its -wal and -shm files and their folder writable by the user running jobhost"
            ))
        }
        Some(ErrorCode::SystemIoFailure) => unavailable(format!(
            "an I/O error happened ({e}); nothing of this request was stored: check the disk (dmesg) and try again"
        )),
        _ => unavailable(e.to_string()),
    }
}
