//! Per-job tasks. Each job is owned by one task that holds its run, timers and state;
//! the supervisor reaches it through a [`JobHandle`] and readers watch its status.

pub mod backoff;
pub mod continuous;
pub mod plan;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::layout::LogsLayout;
use crate::runner::Runner;
use crate::scan::JobDefinition;
use crate::status::ContinuousStatus;

/// What every job task shares.
pub struct HostContext {
    pub runner: Runner,
    pub layout: LogsLayout,
}

pub type Ctx = Arc<HostContext>;

/// Messages to a job task.
#[derive(Debug)]
pub enum JobCommand {
    /// The folder changed (or was rescanned): the latest definition wins.
    Update(Box<JobDefinition>),
    /// The folder is gone: stop gracefully and end the task.
    Remove,
}

/// The supervisor's way to reach a job task.
pub struct JobHandle {
    pub tx: mpsc::UnboundedSender<JobCommand>,
    pub status: watch::Receiver<ContinuousStatus>,
    pub fingerprint: u64,
    pub disabled: bool,
}
