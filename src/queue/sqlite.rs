//! The embedded message store: SQLite in WAL mode, in `LOGS/queue.db`.

use std::path::Path;
use std::sync::Arc;

use super::{QueueStore, StoreError};

pub const FILE_NAME: &str = "queue.db";

/// Opens (creating or migrating) the store at `path`.
pub fn open(path: &Path) -> Result<Arc<dyn QueueStore>, StoreError> {
    Err(StoreError::Unusable {
        path: path.to_path_buf(),
        reason: "not implemented yet".into(),
        fix: "wait".into(),
    })
}
