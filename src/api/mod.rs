//! The HTTP API (docs/api.md): Kudu's WebJobs paths and JSON shapes, token auth,
//! log streaming. Handlers only translate: they read statuses from the job registry,
//! write into JOBS through it and send commands to job tasks; no job logic and no
//! file work on jobs lives here. `server` accepts connections within limits, `guard`
//! checks Host and origin before `auth` checks the token, `token` makes or reads the
//! token, and `upload` receives a deploy's body for the registry to install.

pub mod auth;
pub mod dto;
pub mod events;
pub mod follow;
pub mod guard;
pub mod hosts;
pub mod messages;
pub mod routes;
pub mod server;
pub mod token;
pub mod upload;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::layout::LogsLayout;
use crate::supervisor::JobRegistry;

pub use server::serve;
pub use token::{MIN_TOKEN_LEN, TokenError, load_or_create_token, token_origin};

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState(pub Arc<ApiInner>);

pub struct ApiInner {
    /// The jobs and their statuses; writes into JOBS go through it, so that the next
    /// request sees them.
    pub registry: JobRegistry,
    pub layout: LogsLayout,
    pub token: String,
    pub started: std::time::Instant,
    /// Fires at host shutdown, so endless log follows end and the server can stop.
    pub cancel: CancellationToken,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The message queues (docs/queues.md).
    pub queues: Arc<crate::queue::Queues>,
    /// The cluster store, when the host is in a cluster (docs/cluster.md).
    pub cluster: Option<Arc<crate::cluster::member::ClusterLink>>,
    /// Where the API listens: the `Host` header is checked against it.
    pub bound: SocketAddr,
}
