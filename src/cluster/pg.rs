//! Connections to the cluster store: its URL (parsed, and shown without password),
//! and a small pool of connections that survives the server going away.
//!
//! The pool keeps at most [`DEFAULT_SIZE`] connections open; a caller that finds
//! them all busy waits for one. A connection that broke (server restart, network
//! cut, backend terminated) is dropped when its call ends, together with every idle
//! one (they most likely broke the same way), so the next call connects afresh: the
//! failed call itself answers [`ClusterError::Unavailable`] rather than being tried
//! again, because a statement cut off mid-way may or may not have committed and only
//! the caller knows whether repeating it is harmless. An idle connection unused for
//! a while is checked with an empty query before it is handed out.
//!
//! Each connection prepares a statement once and keeps it, so a statement costs one
//! round trip from then on; the pool counts round trips for tests and benchmarks.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::config::SslMode;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement};

use super::ClusterError;

/// Connections open at most: a handful per host, so that a cluster of hosts stays
/// far below PostgreSQL's default `max_connections` (100).
pub const DEFAULT_SIZE: usize = 8;

/// How long a call waits for a free connection before it is unavailable.
const CHECKOUT_WAIT: Duration = Duration::from_secs(30);

/// An idle connection unused this long is checked before use.
const STALE_AFTER: Duration = Duration::from_secs(30);

const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub type Params<'a> = [&'a (dyn ToSql + Sync)];

/// How to write the store's URL, for errors about it.
const URL_FORM: &str = "write it as postgres://USER@HOST[:PORT]/DATABASE (a password, if any, as postgres://USER:PASSWORD@HOST/DATABASE)";

/// `url` as it may be shown: without a password, in the user part or as a
/// `password=` parameter.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL (a key=value string): drop any password=... word.
        return url
            .split_whitespace()
            .map(|w| match w.to_ascii_lowercase().starts_with("password=") {
                true => "password=***",
                false => w,
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<&str> = query
                .split('&')
                .map(
                    |kv| match kv.to_ascii_lowercase().starts_with("password=") {
                        true => "password=***",
                        false => kv,
                    },
                )
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Parses the store's URL into a connection config with jobhost's defaults.
pub fn parse(url: &str) -> Result<Config, ClusterError> {
    let shown = redact(url);
    let bad = |reason: String| ClusterError::BadUrl {
        url: shown.clone(),
        reason,
        fix: URL_FORM.into(),
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(bad("it does not start with postgres://".into()));
    }
    let mut config = Config::from_str(url).map_err(|e| bad(e.to_string()))?;
    if config.get_hosts().is_empty() {
        return Err(bad("it names no host".into()));
    }
    if config.get_user().is_none() {
        return Err(bad("it names no user".into()));
    }
    if config.get_ssl_mode() == SslMode::Require {
        return Err(ClusterError::BadUrl {
            url: shown,
            reason: "it asks for TLS (sslmode=require), which this jobhost does not support yet"
                .into(),
            fix: "drop sslmode=require and reach the server over a private network or an SSH/stunnel tunnel"
                .into(),
        });
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("jobhost");
    }
    // Notice a dead server or a cut network within a minute, not two hours.
    config.keepalives_idle(Duration::from_secs(15));
    config.keepalives_interval(Duration::from_secs(5));
    config.keepalives_retries(6);
    Ok(config)
}

/// What a PostgreSQL error means, in words for whoever reads the log or the answer.
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} ({})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            s.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            s.push_str(&format!("; hint: {hint}"));
        }
        return s;
    }
    if e.is_closed() {
        return "the connection to the server was lost; jobhost reconnects by itself: try again"
            .into();
    }
    // The driver's own text omits the cause ("error connecting to server"): add it.
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(&format!(": {text}"));
        }
        cause = c.source();
    }
    s
}

/// The fix for a failed connection attempt.
fn connect_fix(e: &postgres::Error) -> &'static str {
    match e.code() {
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            "create the database (createdb DATABASE) or name an existing one in the URL"
        }
        Some(c)
            if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *c == SqlState::INVALID_PASSWORD =>
        {
            "check the user and password in the URL and the server's pg_hba.conf"
        }
        Some(c) if *c == SqlState::TOO_MANY_CONNECTIONS => {
            "raise max_connections on the server or run fewer hosts/tools against it"
        }
        Some(c) if *c == SqlState::CANNOT_CONNECT_NOW => {
            "the server is starting or stopping: wait and try again"
        }
        _ => {
            "check that PostgreSQL runs at that host and port and accepts TCP connections from here (listen_addresses, pg_hba.conf)"
        }
    }
}

/// A failed call through [`Pool::call`]: the driver's error (described by the pool),
/// or one already told in full.
#[derive(Debug)]
pub enum Fail {
    Pg(postgres::Error),
    Cluster(ClusterError),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<ClusterError> for Fail {
    fn from(e: ClusterError) -> Self {
        Fail::Cluster(e)
    }
}

/// One open connection and the statements it has prepared.
pub struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    last_used: Instant,
    trips: u64,
    /// A call met an error that leaves the connection unusable.
    broken: bool,
}

/// Whether `e` means the connection itself failed (rather than one statement).
fn breaks_connection(e: &postgres::Error) -> bool {
    match e.code() {
        // Not the server's answer: a lost connection, or a mere conversion error.
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|c| c.is::<std::io::Error>())
        }
        Some(c) => {
            c.code().starts_with("08")
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        }
    }
}

impl Conn {
    fn note<T>(&mut self, r: Result<T, postgres::Error>) -> Result<T, postgres::Error> {
        if let Err(e) = &r {
            self.broken |= breaks_connection(e);
        }
        r
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        self.trips += 1;
        let s = self.client.prepare(sql);
        let s = self.note(s)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub fn query(&mut self, sql: &str, params: &Params) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.trips += 1;
        let r = self.client.query(&s, params);
        self.note(r)
    }

    pub fn query_opt(
        &mut self,
        sql: &str,
        params: &Params,
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.trips += 1;
        let r = self.client.query_opt(&s, params);
        self.note(r)
    }

    pub fn query_one(&mut self, sql: &str, params: &Params) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.trips += 1;
        let r = self.client.query_one(&s, params);
        self.note(r)
    }

    pub fn execute(&mut self, sql: &str, params: &Params) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.trips += 1;
        let r = self.client.execute(&s, params);
        self.note(r)
    }

    /// Runs `sql` (statements without parameters, `;`-separated) as one message.
    pub fn batch(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.trips += 1;
        let r = self.client.batch_execute(sql);
        self.note(r)
    }

    /// Runs `f` in a transaction: committed when it answers `Ok`, rolled back
    /// otherwise.
    pub fn transaction<T, E: From<postgres::Error>>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        self.batch("BEGIN")?;
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                // A broken connection rolls back by itself; the caller's error is
                // the one worth telling.
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

struct State {
    idle: Vec<Conn>,
    /// Connections open, idle or lent out.
    open: usize,
}

/// A small pool of connections to one store.
pub struct Pool {
    config: Config,
    shown: String,
    size: usize,
    state: Mutex<State>,
    freed: Condvar,
    round_trips: AtomicU64,
    connects: AtomicU64,
}

impl Pool {
    /// A pool for `url`, after one connection proved the store reachable.
    pub fn connect(url: &str) -> Result<Pool, ClusterError> {
        Pool::connect_with(url, DEFAULT_SIZE)
    }

    /// As [`Pool::connect`] with at most `size` connections.
    pub fn connect_with(url: &str, size: usize) -> Result<Pool, ClusterError> {
        let pool = Pool {
            config: parse(url)?,
            shown: redact(url),
            size: size.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            round_trips: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        };
        let first = pool.open_conn()?;
        let mut state = pool.lock();
        state.open += 1;
        state.idle.push(first);
        drop(state);
        Ok(pool)
    }

    /// The store's URL without its password: how errors and logs name it.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The connection config (for a listener's own connection).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Round trips to the server made through this pool so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Connections opened so far (the first one included).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// An [`ClusterError::Unavailable`] for `e`, met while doing `what`.
    pub fn unavailable(&self, what: &str, e: &postgres::Error) -> ClusterError {
        ClusterError::Unavailable {
            url: self.shown.clone(),
            what: what.to_string(),
            reason: describe(e),
        }
    }

    /// Lends `f` a connection; it goes back to the pool afterwards, or is dropped if
    /// it broke meanwhile.
    pub fn with<T, E: From<ClusterError>>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut lease = Lease {
            pool: self,
            conn: Some(self.checkout()?),
        };
        match lease.conn.as_mut() {
            Some(conn) => f(conn),
            // Unreachable: the lease was just filled.
            None => Err(E::from(self.busy())),
        }
    }

    /// As [`Pool::with`], a driver error becoming [`ClusterError::Unavailable`]
    /// while doing `what`.
    pub fn call<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, ClusterError> {
        self.with(f).map_err(|e| match e {
            Fail::Pg(e) => self.unavailable(what, &e),
            Fail::Cluster(e) => e,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn busy(&self) -> ClusterError {
        ClusterError::Unavailable {
            url: self.shown.clone(),
            what: "waiting for a free connection".into(),
            reason: format!(
                "all {} connections of this host stayed busy for {}s (a slow server, or a lock held elsewhere): try again",
                self.size,
                CHECKOUT_WAIT.as_secs()
            ),
        }
    }

    fn open_conn(&self) -> Result<Conn, ClusterError> {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let client = self
            .config
            .connect(NoTls)
            .map_err(|e| ClusterError::Connect {
                url: self.shown.clone(),
                reason: describe(&e),
                fix: connect_fix(&e).into(),
            })?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
            last_used: Instant::now(),
            trips: 0,
            broken: false,
        })
    }

    fn checkout(&self) -> Result<Conn, ClusterError> {
        let deadline = Instant::now() + CHECKOUT_WAIT;
        let mut state = self.lock();
        loop {
            if let Some(mut conn) = state.idle.pop() {
                drop(state);
                let stale = conn.last_used.elapsed() > STALE_AFTER;
                let alive = !conn.client.is_closed()
                    && (!stale || {
                        conn.trips += 1;
                        conn.client.is_valid(CHECK_TIMEOUT).is_ok()
                    });
                if alive {
                    return Ok(conn);
                }
                self.round_trips.fetch_add(conn.trips, Ordering::Relaxed);
                state = self.lock();
                state.open = state.open.saturating_sub(1);
                continue;
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return self.open_conn().inspect_err(|_| {
                    self.lock().open -= 1;
                    self.freed.notify_one();
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.busy());
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn checkin(&self, mut conn: Conn) {
        self.round_trips
            .fetch_add(std::mem::take(&mut conn.trips), Ordering::Relaxed);
        let mut state = self.lock();
        if conn.broken || conn.client.is_closed() {
            // The others idle beside it most likely broke the same way (a server
            // restart): drop them too rather than fail one call per connection.
            let dropped = state.idle.len() + 1;
            state.idle.clear();
            state.open = state.open.saturating_sub(dropped);
        } else {
            conn.last_used = Instant::now();
            state.idle.push(conn);
        }
        drop(state);
        self.freed.notify_all();
    }
}

impl Drop for Pool {
    /// Closing a connection blocks on the driver's own runtime, which panics when
    /// done from async code, where the last holder of a store may well drop it:
    /// the connections are closed on a thread of their own instead.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.lock().idle);
        if idle.is_empty() {
            return;
        }
        let idle = std::sync::Arc::new(Mutex::new(Some(idle)));
        let theirs = idle.clone();
        let closer = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop(theirs.lock().map(|mut c| c.take())));
        if let Err(e) = closer {
            // No thread to close them on: leave the sockets to the process's exit
            // rather than risk the panic.
            tracing::debug!("leaving the cluster store's connections open: {e}");
            if let Ok(mut idle) = idle.lock() {
                std::mem::forget(idle.take());
            }
        }
    }
}

/// A connection lent out: back to the pool when dropped, even if the borrower
/// panicked.
struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(conn);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let cases = [
            (
                "postgres://root@127.0.0.1:5432/test",
                "postgres://root@127.0.0.1:5432/test",
            ),
            (
                "postgres://u:secret@db.example/jobs",
                "postgres://u:***@db.example/jobs",
            ),
            (
                "postgresql://u:s3:cret@h/db?password=x&application_name=a",
                "postgresql://u:***@h/db?password=***&application_name=a",
            ),
            (
                "host=h user=u password=secret",
                "host=h user=u password=***",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown);
        }
    }

    #[test]
    fn bad_urls_are_refused_naming_them_and_the_form() {
        let cases = [
            (
                "host=h user=u password=secret",
                "does not start with postgres://",
            ),
            ("postgres://u:pw@h/db?sslmode=require", "TLS"),
            ("postgres://h/db?port=notaport", "invalid"),
        ];
        for (url, why) in cases {
            let e = parse(url).err().unwrap();
            let text = e.to_string();
            assert!(matches!(e, ClusterError::BadUrl { .. }), "{text}");
            assert!(text.contains(why), "{text}");
            assert!(!text.contains("secret") && !text.contains(":pw@"), "{text}");
        }
        let e = parse("postgres://h/db").err().unwrap();
        assert!(e.to_string().contains("names no user"), "{e}");
    }
}
