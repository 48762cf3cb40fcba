//! Inbox folders: files dropped into a queue job's `inbox` become its messages.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Queues;

pub struct InboxSpec {
    pub job: String,
    pub dir: PathBuf,
    pub max_payload_bytes: u64,
    pub dedupe_window: Duration,
}

/// Watches `spec.dir` until `cancel`; the receiver holds the current problem with
/// the folder (`None`: fine).
pub fn spawn(
    spec: InboxSpec,
    queues: Arc<Queues>,
    cancel: CancellationToken,
) -> tokio::sync::watch::Receiver<Option<String>> {
    let _ = (spec, queues, cancel);
    tokio::sync::watch::channel(None).1
}
