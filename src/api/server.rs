//! The HTTP server: an accept loop that keeps the API from taking the host down.
//!
//! Every open connection costs a file descriptor, and the host shares its descriptor
//! limit with the work it exists for (pipes, log files, status writes, spawns). With
//! no limit, 200 clients that send half a request and wait held their sockets for
//! ever, and under a tight `ulimit -n` every job restart then failed with "Too many
//! open files". So:
//! - a connection must send its request headers within a deadline (which also ends
//!   idle keep-alive connections: waiting for the next request is waiting for
//!   headers), and a request body may not pause longer than that deadline either
//!   (`guard` enforces it, see `limit_body_pauses`);
//! - at most `connection_limit()` connections are open at once, a share of the
//!   descriptor limit that leaves most to the jobs. At the limit the loop stops
//!   accepting: new clients wait in the kernel's backlog (costing the host nothing)
//!   instead of being accepted and closed in a spin;
//! - an accept error (EMFILE when the jobs took the descriptors) is logged once per
//!   episode and retried after a pause, not in a loop that eats a core.
//!
//! At shutdown the loop stops accepting and every connection finishes its request;
//! endless log follows end on the same cancellation.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::ApiState;

/// Default time a client has to send its request headers (an idle keep-alive
/// connection, to start its next request; a body, to send its next piece).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Overrides `CLIENT_TIMEOUT`, in milliseconds (tests; very slow links).
pub const CLIENT_TIMEOUT_VAR: &str = "JOBHOST_CLIENT_TIMEOUT_MS";
/// Never more connections than this, whatever the descriptor limit.
const MAX_CONNECTIONS: usize = 512;
/// Never fewer (a tiny limit still lets the CLI and a dashboard in).
const MIN_CONNECTIONS: usize = 4;
/// Pause after an accept error before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves until `state.0.cancel` fires.
pub async fn serve(listener: TcpListener, state: ApiState) -> std::io::Result<()> {
    let cancel = state.0.cancel.clone();
    let app = super::routes::router(state);
    let limit = connection_limit(soft_nofile());
    let header_timeout = client_timeout();
    tracing::debug!(
        "HTTP API: at most {limit} connections, {} ms for request headers",
        header_timeout.as_millis()
    );
    let slots = Arc::new(Semaphore::new(limit));
    let connections = TaskTracker::new();
    // Each said at most once a minute: a flood must not flood the host log too.
    let mut limit_notice = Notice::default();
    let mut accept_notice = Notice::default();
    let mut failing = false;
    loop {
        // A free slot first, then accept: at the limit new clients wait in the
        // kernel's backlog.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if limit_notice.due() {
                    tracing::warn!(
                        "HTTP API: {limit} connections open (the limit); new ones wait until one closes"
                    );
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                }
            }
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    if accept_notice.due() {
                        failing = true;
                        tracing::warn!(
                            "HTTP API: accepting a connection failed: {e}; retrying every {} ms (jobs keep running)",
                            ACCEPT_BACKOFF.as_millis()
                        );
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                    continue;
                }
            },
        };
        if failing {
            failing = false;
            tracing::info!("HTTP API: accepting connections again");
        }
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                // Errors here are the client's (reset, timeout, bad request, which
                // hyper has answered): nothing for the host log.
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!("HTTP connection: {e}");
                },
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    connections.close();
    // A client that sends nothing keeps its connection until the header timeout;
    // shutdown does not wait that long for it.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
    Ok(())
}

/// A warning that repeats is logged once per `NOTICE_EVERY`.
const NOTICE_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Notice {
    last: Option<std::time::Instant>,
}

impl Notice {
    /// True (and remembered) when the warning may be logged now.
    fn due(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < NOTICE_EVERY)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Errors of one connection that died in the backlog: try the next.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}

/// How long the API waits for a slow client: `JOBHOST_CLIENT_TIMEOUT_MS`, else
/// `CLIENT_TIMEOUT`. Read once.
pub fn client_timeout() -> Duration {
    static TIMEOUT: std::sync::LazyLock<Duration> = std::sync::LazyLock::new(|| {
        parse_timeout(std::env::var(CLIENT_TIMEOUT_VAR).ok().as_deref())
    });
    *TIMEOUT
}

/// `value` (milliseconds) when it is a positive number, else the default.
fn parse_timeout(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(CLIENT_TIMEOUT, Duration::from_millis)
}

/// The soft `RLIMIT_NOFILE`, if it can be read.
fn soft_nofile() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// A quarter of the descriptor limit, between `MIN_CONNECTIONS` and
/// `MAX_CONNECTIONS`: the jobs keep three quarters.
pub fn connection_limit(soft_nofile: Option<u64>) -> usize {
    match soft_nofile {
        Some(n) => usize::try_from(n / 4)
            .unwrap_or(MAX_CONNECTIONS)
            .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS),
        None => MAX_CONNECTIONS / 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_most_descriptors_to_the_jobs() {
        assert_eq!(connection_limit(Some(1024)), 256);
        assert_eq!(connection_limit(Some(128)), 32);
        assert_eq!(connection_limit(Some(1 << 20)), MAX_CONNECTIONS);
        assert_eq!(connection_limit(Some(u64::MAX)), MAX_CONNECTIONS);
        assert_eq!(connection_limit(Some(8)), MIN_CONNECTIONS);
        assert_eq!(connection_limit(None), 128);
    }

    #[test]
    fn the_client_timeout_is_configurable_in_milliseconds() {
        assert_eq!(parse_timeout(None), CLIENT_TIMEOUT);
        assert_eq!(parse_timeout(Some("250")), Duration::from_millis(250));
        assert_eq!(parse_timeout(Some("0")), CLIENT_TIMEOUT);
        assert_eq!(parse_timeout(Some("soon")), CLIENT_TIMEOUT);
    }
}
