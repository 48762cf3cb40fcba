//! `jobhost run`: wiring and lifecycle of the host.
//!
//! Order matters. The host becomes a child subreaper and installs its SIGCHLD reaper
//! before anything is spawned; the guardian starts before the first run, so no run
//! exists that it does not cover; the supervisor starts last. Shutdown is a broadcast
//! (one cancellation token) followed by waiting for every job task (a task tracker),
//! so all runs stop in parallel; a second signal skips the grace and kills everything.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::job::HostContext;
use crate::layout::LogsLayout;
use crate::runner::guardian::{self, GuardianLink};
use crate::runner::{Reaper, Runner};
use crate::spec::name;
use crate::supervisor::Supervisor;

/// What `jobhost run` was asked to do.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub jobs: PathBuf,
    pub logs: PathBuf,
    pub listen: String,
    pub instance: Option<String>,
    /// The cluster store's URL (docs/cluster.md); `None`: the embedded store.
    pub store: Option<String>,
    /// How long a silent host of the cluster counts as alive.
    pub lease_ttl: std::time::Duration,
}

/// Exit code after a forced (second-signal) shutdown.
pub const FORCED_EXIT: i32 = 1;

pub fn run(opts: HostOptions) -> anyhow::Result<i32> {
    if let Some(i) = &opts.instance
        && !name::is_valid(i)
    {
        bail!(
            "--instance `{i}` is not a valid instance name: use 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit"
        );
    }
    for sub in ["continuous", "triggered"] {
        let dir = opts.jobs.join(sub);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating jobs folder {}", dir.display()))?;
    }
    std::fs::create_dir_all(&opts.logs).with_context(|| {
        format!(
            "creating logs folder {}: pass --logs DIR with a folder this user can write",
            opts.logs.display()
        )
    })?;
    // Before the host log is opened, a job started or the API bound: a host refused
    // here has touched nothing the running host owns.
    let _lock = match (&opts.store, opts.instance.as_deref()) {
        (Some(_), Some(name)) => crate::hostlock::HostLock::acquire_for_cluster(&opts.logs, name)?,
        _ => crate::hostlock::HostLock::acquire(&opts.logs, opts.instance.as_deref())?,
    };
    let layout = LogsLayout::new(opts.logs.clone(), opts.instance.clone());
    let host_log = layout.host_log();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&host_log)
        .with_context(|| {
            format!(
                "cannot write the host log {}: make the logs folder writable or pass --logs DIR",
                host_log.display()
            )
        })?;
    let host_log = crate::hostlog::HostLogFile::start(file)
        .context("starting the host log's writing thread")?;
    init_tracing(host_log.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        // File work of runs (records, folders, copies, spawns) is short. A hundred
        // jobs firing together would otherwise start a hundred threads; even sixteen
        // spawning at once took the CPU from the async workers, so the fires of the
        // same second were taken late (docs/architecture.md).
        .max_blocking_threads(BLOCKING_THREADS)
        .worker_threads(worker_threads())
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(serve(opts, layout));
    if !host_log.flush(EXIT_DRAIN) {
        eprintln!(
            "the host log is still not written after {} s (LOGS hung?): exiting without its last lines",
            EXIT_DRAIN.as_secs()
        );
    }
    served
}

/// How long the exit waits for the log writer thread, and then the host log's thread,
/// to write what they were handed.
const EXIT_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Threads for blocking work (see where the runtime is built).
const BLOCKING_THREADS: usize = 4;

/// Async workers: one per two cores (at least one), or `TOKIO_WORKER_THREADS`.
///
/// The async side only moves bytes from pipes to log files and answers the API; the
/// disk work of runs is on the blocking threads, and the jobs' processes need the
/// other cores. A worker per core made every wake-up of one worker also wake its
/// idle sibling to look for work: on 2 cores a second worker cost more host CPU per
/// run and gained no lateness (figures in docs/development.md).
fn worker_threads() -> usize {
    if let Some(n) = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

/// The address a client on this machine connects to: an unspecified address (0.0.0.0,
/// ::) is not one a client can connect to, so loopback stands in for it.
fn client_addr(bound: std::net::SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        format!("127.0.0.1:{}", bound.port())
    } else {
        bound.to_string()
    }
}

fn write_url_file(path: &std::path::Path, bound: std::net::SocketAddr) {
    let host = client_addr(bound);
    if let Err(e) = crate::fsutil::write_atomic_bytes(path, format!("http://{host}\n").as_bytes()) {
        tracing::warn!("{e}");
    }
}

fn init_tracing(host_log: crate::hostlog::HostLogFile) {
    // Dependencies at WARN, repeated warnings and errors held back (see `hostlog`).
    let env = std::env::var("JOBHOST_LOG").ok();
    let filter = tracing_subscriber::EnvFilter::try_new(crate::hostlog::directives(env.as_deref()))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(crate::hostlog::directives(None)));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(crate::hostlog::RepeatGuard::new(
            crate::hostlog::REPEAT_WINDOW,
        ))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false)
                .map_event_format(crate::hostlog::NoteRepeats),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_target(false)
                .with_writer(move || host_log.clone())
                .map_event_format(crate::hostlog::NoteRepeats),
        )
        .try_init();
}

async fn serve(opts: HostOptions, layout: LogsLayout) -> anyhow::Result<i32> {
    // Before anything starts: a token file the host must not trust stops it here.
    let token = crate::api::load_or_create_token(&opts.logs)?;
    // Orphaned grandchildren of runs come back to us instead of to init, so the stop
    // sequence can find and reap them.
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper (prctl)")?;
    let reaper = Reaper::start().context("installing the SIGCHLD handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let host_id = crate::ids::random_hex(12);
    let scratch = guardian::scratch_root(&host_id);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("creating scratch folder {}", scratch.display()))?;
    let guardian = GuardianLink::start(&reaper, &host_id, &scratch)
        .context("starting the guardian process")?;

    let metrics = Arc::new(crate::metrics::Metrics::new());
    let cluster = match &opts.store {
        Some(url) => {
            let url = url.clone();
            let pool = tokio::task::spawn_blocking(move || crate::cluster::open(&url))
                .await
                .context("opening the cluster store")??;
            Some(pool)
        }
        None => None,
    };
    let name = opts.instance.clone().unwrap_or_else(|| "-".into());
    // Whether this host's heartbeat is recorded: who is dead is not judged without it.
    let own_beat = Arc::new(crate::cluster::member::OwnBeat::default());
    let queues = match &cluster {
        Some(pool) => crate::queue::Queues::new(
            Ok(Arc::new(crate::queue::postgres::PgStore::new(pool.clone()))),
            name.clone(),
        )
        .with_liveness(Arc::new(crate::cluster::member::Heartbeats::new(
            pool.clone(),
            name.clone(),
            opts.lease_ttl,
            own_beat.clone(),
        ))),
        None => crate::queue::Queues::open(&layout, opts.instance.as_deref()),
    };
    let queues = Arc::new(queues.with_metrics(metrics.clone()));
    tracing::info!(
        jobs = %opts.jobs.display(),
        logs = %opts.logs.display(),
        instance = opts.instance.as_deref().unwrap_or("-"),
        pid = std::process::id(),
        "jobhost {} started",
        env!("CARGO_PKG_VERSION")
    );
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} for the HTTP API: pass --listen ADDR:PORT with a free port",
                opts.listen
            )
        })?;
    let bound = listener
        .local_addr()
        .context("reading the API's bound address")?;
    write_url_file(
        &crate::layout::url_file(&opts.logs, opts.instance.as_deref()),
        bound,
    );
    if bound.ip().is_loopback() {
        tracing::info!("HTTP API on http://{bound}");
    } else {
        tracing::warn!(
            "HTTP API on http://{bound}: reachable from other machines (token required)"
        );
    }

    let link = cluster.clone().map(|pool| {
        Arc::new(crate::cluster::member::ClusterLink {
            deploys: Arc::new(crate::cluster::deploys::Deploys::new(
                pool.clone(),
                &name,
                &opts.logs,
            )),
            run_desk: crate::cluster::fires::RunDesk::start(
                pool.clone(),
                name.clone(),
                opts.lease_ttl,
            ),
            pool,
            me: crate::cluster::member::Member {
                name: name.clone(),
                api_addr: format!("http://{}", client_addr(bound)),
                ttl: opts.lease_ttl,
            },
        })
    });
    // Chosen once: every job task asks the same seam, whichever store is behind it.
    let coord: Arc<dyn crate::coord::Coordination> = match &link {
        Some(link) => Arc::new(crate::coord::store::Store::new(link.clone())),
        None => Arc::new(crate::coord::files::Files::new(layout.clone())),
    };
    let ctx = Arc::new(HostContext {
        runner: Runner {
            reaper,
            guardian,
            host_id: host_id.clone(),
            scratch,
            leaders: Default::default(),
            workspaces: Default::default(),
        },
        layout,
        clock: Arc::new(crate::schedule::SystemClock),
        metrics,
        queues,
        cluster: link.clone(),
        coord,
        log_writer: Some(
            crate::logsink::LogWriter::start().context("starting the log writer thread")?,
        ),
    });
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    // In a cluster: known alive before any job claims anything, and woken by the
    // store's announcements of due messages.
    let mut store_listener = None;
    if let (Some(link), Some(url)) = (&link, &opts.store) {
        let (pool, me) = (&link.pool, link.me.clone());
        let (p, m) = (pool.clone(), me.clone());
        tokio::task::spawn_blocking(move || {
            crate::cluster::hosts::heartbeat(
                &p,
                &m.name,
                &m.api_addr,
                env!("CARGO_PKG_VERSION"),
                m.ttl,
            )
        })
        .await
        .context("recording the first heartbeat")??;
        tracing::info!(store = %crate::cluster::pg::redact(url), "joined the cluster as `{name}`");
        tracker.spawn(crate::cluster::member::run(
            pool.clone(),
            me,
            cancel.clone(),
            own_beat.clone(),
        ));
        let (q, url) = (ctx.queues.clone(), url.clone());
        // The listener's client blocks on a runtime of its own: made off the workers.
        let listening = tokio::task::spawn_blocking(move || {
            crate::cluster::listen::listen(&url, move |job| match job {
                "" => q.wake_all(),
                job => q.wake(job),
            })
        })
        .await
        .context("starting the cluster store's listener")??;
        store_listener = Some(listening);
    }
    let (hint_tx, hint_rx) = mpsc::unbounded_channel();
    let (watch, degraded) = match crate::watch::start(&opts.jobs, hint_tx) {
        Ok(w) => (Some(w), false),
        Err(why) => {
            tracing::warn!("{why}; falling back to a rescan every 5 s");
            (None, true)
        }
    };
    let mut supervisor = Supervisor::new(
        ctx.clone(),
        opts.jobs.clone(),
        cancel.clone(),
        tracker.clone(),
    );
    // In a cluster: jobs deployed through the other hosts are written into JOBS,
    // woken by the store's announcements.
    let mut deploy_listener = None;
    if let (Some(link), Some(url)) = (&link, &opts.store) {
        let (wake, url) = (link.deploys.waker(), url.clone());
        let listening = tokio::task::spawn_blocking(move || {
            crate::cluster::listen::listen_on(
                &url,
                crate::cluster::deploys::DEPLOY_CHANNEL,
                move |_| wake.notify_one(),
            )
        })
        .await
        .context("starting the cluster store's deploy listener")??;
        deploy_listener = Some(listening);
        tracker.spawn(crate::cluster::deploys::run(
            link.deploys.clone(),
            supervisor.registry(),
            cancel.clone(),
        ));
    }
    let api = crate::api::ApiState(Arc::new(crate::api::ApiInner {
        registry: supervisor.registry(),
        layout: ctx.layout.clone(),
        token: token.clone(),
        started: std::time::Instant::now(),
        cancel: cancel.clone(),
        metrics: ctx.metrics.clone(),
        queues: ctx.queues.clone(),
        cluster: link.clone(),
        bound,
    }));
    tracing::info!("dashboard: http://{}/", client_addr(bound));
    tracing::info!("API token: {}", crate::api::token_origin(&opts.logs));
    // The jobs are listed before the API answers: a client that finds the host up
    // (its health answers) finds its jobs, not a 404 for a job in JOBS.
    let appeared = supervisor.scan_first().await;
    let api_task = tokio::spawn(crate::api::serve(listener, api));
    tokio::spawn(crate::queue::callback::run(
        ctx.queues.clone(),
        token,
        cancel.clone(),
    ));
    let sup_task = tokio::spawn(supervisor.run(hint_rx, degraded, appeared));

    let first = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!("{first} received: stopping every job (a second signal kills at once)");
    cancel.cancel();
    drop(watch);
    let _ = sup_task.await;
    let _ = api_task.await;
    tracker.close();
    let forced = tokio::select! {
        _ = tracker.wait() => false,
        _ = sigterm.recv() => true,
        _ = sigint.recv() => true,
    };
    if forced {
        let prefix = format!("{host_id}/");
        let killed = tokio::task::spawn_blocking(move || guardian::sweep(&[], &prefix))
            .await
            .unwrap_or(0);
        tracing::warn!("second signal: killed {killed} process(es) without grace");
        return Ok(FORCED_EXIT);
    }
    // Its thread is joined off the workers.
    let _ = tokio::task::spawn_blocking(move || drop((store_listener, deploy_listener))).await;
    // The jobs have ended (each waited for its own logs): what is still handed to the
    // log writer (a note of the queue's, a line of a task that gave up waiting) is
    // written before the exit, unless LOGS hangs.
    if let Some(writer) = &ctx.log_writer
        && tokio::time::timeout(EXIT_DRAIN, writer.drained())
            .await
            .is_err()
    {
        tracing::warn!(
            "logs still not written after {} s (LOGS hung?): exiting without them",
            EXIT_DRAIN.as_secs()
        );
    }
    tracing::info!("all jobs stopped; exiting");
    Ok(0)
}
