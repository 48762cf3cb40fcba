//! The one thread that writes: group commit. Callers hand it their change with a reply
//! channel; it takes whatever is waiting (up to [`MAX_BATCH`]), runs all of it in one
//! `BEGIN IMMEDIATE` transaction, commits once and answers each caller. While one
//! commit waits for the disk, the next callers queue up and share the following one,
//! so a thousand concurrent enqueues cost a handful of flushes instead of a thousand.
//!
//! Each change runs in its own savepoint: one that does not apply (unknown message,
//! wrong state, a constraint) is undone alone and only its caller told. An error that
//! leaves the transaction unusable (disk full, I/O, locked too long, corruption) or a
//! commit that fails rolls back the whole batch and every caller of it gets the error:
//! nothing is half stored and nobody is told "stored" for a change that was not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::fault::{Failure, describe, fatal};
use crate::queue::StoreError;

/// Most changes committed together.
pub const MAX_BATCH: usize = 512;

/// One caller's change, as the writer thread sees it.
trait Request: Send {
    /// Whether its commit must reach the disk before the caller is answered.
    fn durable(&self) -> bool;
    /// Runs the change inside the batch's transaction. `Err`: the transaction is lost.
    fn run(&mut self, conn: &Connection, path: &Path) -> Result<(), rusqlite::Error>;
    /// Tells the caller: its own outcome, or why the whole batch was lost.
    fn answer(self: Box<Self>, lost: Option<&rusqlite::Error>, path: &Path);
}

type Work<T> = Box<dyn FnOnce(&Connection) -> Result<T, Failure> + Send>;

struct Call<T> {
    durable: bool,
    work: Option<Work<T>>,
    out: Option<Result<T, StoreError>>,
    reply: mpsc::SyncSender<Result<T, StoreError>>,
}

impl<T: Send> Request for Call<T> {
    fn durable(&self) -> bool {
        self.durable
    }

    fn run(&mut self, conn: &Connection, path: &Path) -> Result<(), rusqlite::Error> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        conn.execute_batch("SAVEPOINT call")?;
        match work(conn) {
            Ok(v) => {
                conn.execute_batch("RELEASE call")?;
                self.out = Some(Ok(v));
            }
            // SQLite may already have rolled the transaction back by itself.
            Err(Failure::Sql(e)) if fatal(&e) || conn.is_autocommit() => return Err(e),
            Err(f) => {
                conn.execute_batch("ROLLBACK TO call; RELEASE call")?;
                self.out = Some(Err(f.into_store(path)));
            }
        }
        Ok(())
    }

    fn answer(self: Box<Self>, lost: Option<&rusqlite::Error>, path: &Path) {
        let out = match (lost, self.out) {
            (Some(e), _) => Err(describe(path, e)),
            (None, Some(out)) => out,
            (None, None) => Err(StoreError::Unavailable {
                path: path.to_path_buf(),
                reason: "the change was not run (a bug in jobhost: please report it)".into(),
            }),
        };
        // The caller may have given up waiting; nothing to tell then.
        let _ = self.reply.send(out);
    }
}

pub struct Writer {
    path: PathBuf,
    tx: Option<mpsc::Sender<Box<dyn Request>>>,
    thread: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
    /// Changes handed to the writer, and taken by it into a transaction.
    handed: AtomicUsize,
    taken: Arc<AtomicUsize>,
}

impl Writer {
    /// Starts the thread that owns `conn` (prepared, on `path`).
    pub fn start(conn: Connection, path: &Path) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Box<dyn Request>>();
        let commits = Arc::new(AtomicU64::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn({
                let path = path.to_path_buf();
                let commits = commits.clone();
                let taken = taken.clone();
                move || serve(conn, &path, rx, &commits, &taken)
            })
            .map_err(|e| StoreError::Unavailable {
                path: path.to_path_buf(),
                reason: format!(
                    "cannot start its writer thread ({e}): the host is out of threads or memory"
                ),
            })?;
        Ok(Writer {
            path: path.to_path_buf(),
            tx: Some(tx),
            thread: Some(thread),
            commits,
            handed: AtomicUsize::new(0),
            taken,
        })
    }

    /// Runs `work` in the next write transaction and answers once it is committed
    /// (and, when `durable`, flushed to disk).
    pub fn call<T: Send + 'static>(
        &self,
        durable: bool,
        work: impl FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let call = Call {
            durable,
            work: Some(Box::new(work)),
            out: None,
            reply,
        };
        let stopped = || StoreError::Unavailable {
            path: self.path.clone(),
            reason: "its writer thread stopped (see the host log); restart the host".into(),
        };
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        self.handed.fetch_add(1, Ordering::SeqCst);
        if tx.send(Box::new(call)).is_err() {
            return Err(stopped());
        }
        answer.recv().map_err(|_| stopped())?
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Changes handed to the writer so far, and taken by it into a transaction.
    pub fn traffic(&self) -> (usize, usize) {
        (
            self.handed.load(Ordering::SeqCst),
            self.taken.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what is queued and return.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    conn: Connection,
    path: &Path,
    rx: mpsc::Receiver<Box<dyn Request>>,
    commits: &AtomicU64,
    taken: &AtomicUsize,
) {
    let mut full_sync: Option<bool> = None;
    let mut carried: Option<Box<dyn Request>> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => {
                    taken.fetch_add(1, Ordering::SeqCst);
                    r
                }
                Err(_) => return,
            },
        };
        let durable = first.durable();
        let mut batch = vec![first];
        // FULL makes the commit flush the WAL before returning: an acknowledged
        // enqueue survives a power cut. It cannot change inside a transaction, so a
        // batch's level is its first change's.
        if full_sync != Some(durable) {
            let level = if durable { "FULL" } else { "NORMAL" };
            match conn.pragma_update(None, "synchronous", level) {
                Ok(()) => full_sync = Some(durable),
                Err(e) => {
                    answer_all(batch, Some(&e), path);
                    continue;
                }
            }
        }
        if let Err(e) = begin(&conn) {
            answer_all(batch, Some(&e), path);
            continue;
        }
        // Taken after BEGIN: callers who came while it waited for the lock join in.
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    taken.fetch_add(1, Ordering::SeqCst);
                    if r.durable() && !durable {
                        carried = Some(r);
                        break;
                    }
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let mut lost = None;
        for r in batch.iter_mut() {
            if let Err(e) = r.run(&conn, path) {
                lost = Some(e);
                break;
            }
        }
        if lost.is_none() {
            match conn.execute_batch("COMMIT") {
                Ok(()) => {
                    commits.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => lost = Some(e),
            }
        }
        if lost.is_some() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Some(e) = &lost {
            tracing::warn!(
                "message store {}: {} change(s) not stored: {e}",
                path.display(),
                batch.len()
            );
        }
        answer_all(batch, lost.as_ref(), path);
    }
}

fn answer_all(batch: Vec<Box<dyn Request>>, lost: Option<&rusqlite::Error>, path: &Path) {
    for r in batch {
        r.answer(lost, path);
    }
}

/// `BEGIN IMMEDIATE`, asked again for a while when SQLite answers "busy" without
/// waiting: its busy handler covers a lock held by another connection, not every
/// busy answer (another host opening the same new file, or recovering its WAL, gets
/// one at once). Nothing is started until it succeeds.
fn begin(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}
