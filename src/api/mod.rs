//! The HTTP API (SPEC section 8): Kudu's WebJobs paths and JSON shapes, token auth,
//! log streaming. Handlers only translate: they read statuses from the registry and
//! send commands to job tasks; no job logic lives here.

pub mod auth;
pub mod deploy;
pub mod dto;
pub mod follow;
pub mod routes;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::layout::LogsLayout;
use crate::supervisor::{Problems, Registry, SupervisorHandle};

/// Name of the token file under LOGS.
pub const TOKEN_FILE: &str = ".jobhost-token";

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
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading API token {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "writing API token {path}: {source}; make the logs folder writable or set JOBHOST_TOKEN"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "API token file {path} is empty: delete it (a new one is generated) or set JOBHOST_TOKEN"
    )]
    Empty { path: PathBuf },
}

/// The token: `JOBHOST_TOKEN`, else `LOGS/.jobhost-token`, generated (mode 0600) on
/// first start so the CLI on this machine can read it.
pub fn load_or_create_token(logs: &Path) -> Result<String, TokenError> {
    if let Ok(t) = std::env::var("JOBHOST_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let path = logs.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().is_empty() => Err(TokenError::Empty { path }),
        Ok(t) => Ok(t.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = format!(
                "{}{}{}{}",
                crate::ids::random_hex(16),
                crate::ids::random_hex(16),
                crate::ids::random_hex(16),
                crate::ids::random_hex(16)
            );
            // Written whole under a temporary name, then linked into place: hosts
            // starting together on one LOGS never read a half-written token, and
            // `link` fails rather than replace a token another host published.
            let tmp = logs.join(format!(".jobhost-token.{}.tmp", crate::ids::random_hex(8)));
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(token.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()?;
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                linked
            };
            match write() {
                Ok(()) => Ok(token),
                // Another host sharing LOGS wrote it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_or_create_token(logs)
                }
                Err(source) => Err(TokenError::Write { path, source }),
            }
        }
        Err(source) => Err(TokenError::Read { path, source }),
    }
}

/// Serves until `cancel` fires.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    let cancel = state.0.cancel.clone();
    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}
