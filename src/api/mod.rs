//! The HTTP API (docs/api.md): Kudu's WebJobs paths and JSON shapes, token auth,
//! log streaming. Handlers only translate: they read statuses from the registry and
//! send commands to job tasks; no job logic lives here. `server` accepts connections
//! within limits, `guard` checks Host and origin before `auth` checks the token, and
//! `token` makes or reads the token.

pub mod auth;
pub mod deploy;
pub mod dto;
pub mod events;
pub mod follow;
pub mod guard;
pub mod routes;
pub mod server;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::layout::LogsLayout;
use crate::supervisor::{Problems, Registry, SupervisorHandle};

pub use server::serve;
pub use token::{MIN_TOKEN_LEN, TOKEN_FILE, TokenError, load_or_create_token};

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState(pub Arc<ApiInner>);

pub struct ApiInner {
    pub registry: Registry,
    /// Writes go through it so that the next request sees them.
    pub supervisor: SupervisorHandle,
    pub problems: Problems,
    pub layout: LogsLayout,
    pub jobs_root: PathBuf,
    pub token: String,
    pub started: std::time::Instant,
    /// Fires at host shutdown, so endless log follows end and the server can stop.
    pub cancel: CancellationToken,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where the API listens: the `Host` header is checked against it.
    pub bound: SocketAddr,
}
