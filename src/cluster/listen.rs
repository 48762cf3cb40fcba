//! Wake-ups from the cluster store: a thread that holds one connection of its own in
//! `LISTEN jobhost_queue` and calls back with each job name announced there, so job
//! tasks wait for "a message may be due" instead of polling the database. The deploy
//! sync has a listener of its own on `jobhost_deploy` (`listen_on`).
//!
//! Notifications are hints, not the truth: PostgreSQL forgets those sent while the
//! connection was down. So after every reconnection the callback gets an empty name,
//! meaning "anything may have changed: look again".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls};

use super::schema::QUEUE_CHANNEL;
use super::{ClusterError, pg};

/// How often the thread looks at its stop flag while no notification comes.
const POLL: Duration = Duration::from_millis(250);

const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A running listener; dropping it stops its thread and closes its connection.
pub struct Listener {
    stop: Arc<AtomicBool>,
    reconnects: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// How many times the connection was made again after it broke.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Listens on the queue channel of the store at `url`: `on_notify` is called with the
/// job whose message became `Queued`, or with `""` after a reconnection. The first
/// connection is made before this returns, so a store that cannot be reached is an
/// error here; later breaks are mended by the thread itself.
pub fn listen(
    url: &str,
    on_notify: impl Fn(&str) + Send + 'static,
) -> Result<Listener, ClusterError> {
    listen_on(url, QUEUE_CHANNEL, on_notify)
}

/// As [`listen`], on `channel` (a constant of `schema`).
pub fn listen_on(
    url: &str,
    channel: &'static str,
    on_notify: impl Fn(&str) + Send + 'static,
) -> Result<Listener, ClusterError> {
    let mut config = pg::parse(url)?;
    config.application_name("jobhost listener");
    let shown = pg::redact(url);
    let client = subscribe(&config, channel).map_err(|e| ClusterError::Connect {
        url: shown.clone(),
        reason: pg::describe(&e),
        fix: "check that PostgreSQL runs at that host and port and accepts connections from here"
            .into(),
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let reconnects = Arc::new(AtomicU64::new(0));
    let (stop2, reconnects2) = (stop.clone(), reconnects.clone());
    let thread = std::thread::Builder::new()
        .name("pg-listen".into())
        .spawn(move || {
            run(
                client,
                &config,
                channel,
                &shown,
                &stop2,
                &reconnects2,
                on_notify,
            )
        })
        .map_err(|e| ClusterError::Unavailable {
            url: pg::redact(url),
            what: "starting the listener thread".into(),
            reason: e.to_string(),
        })?;
    Ok(Listener {
        stop,
        reconnects,
        thread: Some(thread),
    })
}

fn subscribe(config: &Config, channel: &str) -> Result<Client, postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!("LISTEN {channel}"))?;
    Ok(client)
}

fn run(
    mut client: Client,
    config: &Config,
    channel: &str,
    shown: &str,
    stop: &AtomicBool,
    reconnects: &AtomicU64,
    on_notify: impl Fn(&str),
) {
    while !stop.load(Ordering::Relaxed) {
        let broke = {
            let mut notes = client.notifications();
            let mut iter = notes.timeout_iter(POLL);
            loop {
                match iter.next() {
                    Ok(Some(n)) => on_notify(n.payload()),
                    Ok(None) => break None,
                    Err(e) => break Some(pg::describe(&e)),
                }
            }
        };
        let broke = broke.or_else(|| client.is_closed().then(|| "it was closed".to_string()));
        let Some(why) = broke else {
            continue;
        };
        tracing::warn!(
            "the listener of the cluster store {shown} lost its connection ({why}); reconnecting"
        );
        let mut wait = RETRY_MIN;
        client = loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match subscribe(config, channel) {
                Ok(c) => break c,
                Err(e) => {
                    tracing::debug!("reconnecting to {shown}: {}", pg::describe(&e));
                    std::thread::park_timeout(wait);
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        };
        reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!("the listener of the cluster store {shown} is connected again");
        on_notify("");
    }
}
