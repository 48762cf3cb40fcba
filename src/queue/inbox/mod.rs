//! Inbox folders: files dropped into a queue job's `inbox` become its messages
//! (docs/inbox.md).
//!
//! One task per inbox owns its watch. A file is taken when it is closed after writing
//! or renamed into the folder, never while it is still being written in place; files
//! already there when the watch starts (or when the kernel dropped events) are taken
//! as found. inotify only names candidates: whether a name is still a regular file to
//! take is decided when it is taken ([`take`]), so lost or doubled events cost nothing.
//!
//! The folder's problems (missing, not a folder, unreadable) are published on a
//! `watch` channel for the job's status, and the folder is looked at again every few
//! seconds until it can be used. A store that is unavailable leaves the files where
//! they are and they are tried again later; the API's enqueue never waits on an inbox.

mod folder;
mod take;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Queues;
use folder::Identity;

pub use take::guess_content_type;

/// What the inbox of one job needs.
#[derive(Debug, Clone)]
pub struct InboxSpec {
    pub job: String,
    /// Absolute.
    pub dir: PathBuf,
    pub max_payload_bytes: u64,
    pub dedupe_window: Duration,
}

/// How often the inbox looks again; shortened by the tests.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    /// While the folder has a problem, and while watched (was it deleted or replaced?).
    recheck: Duration,
    /// After the store failed, before the files left are tried again.
    retry: Duration,
    /// At most one summary line of files taken per this long.
    report: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            recheck: Duration::from_secs(2),
            retry: Duration::from_secs(5),
            report: Duration::from_secs(10),
        }
    }
}

/// Files per trip to the blocking pool: enough to make a flood cheap, few enough that
/// new events and a stop are looked at between trips.
const BATCH: usize = 256;

/// Watches `spec.dir` until `cancel`; the receiver holds the current problem with the
/// folder (None: fine).
pub fn spawn(
    spec: InboxSpec,
    queues: Arc<Queues>,
    cancel: CancellationToken,
) -> watch::Receiver<Option<String>> {
    spawn_tuned(spec, queues, cancel, Tuning::default())
}

fn spawn_tuned(
    spec: InboxSpec,
    queues: Arc<Queues>,
    cancel: CancellationToken,
    tuning: Tuning,
) -> watch::Receiver<Option<String>> {
    let (problem_tx, problem_rx) = watch::channel(None);
    let inbox = Inbox {
        target: take::Target {
            job: spec.job,
            max_payload_bytes: spec.max_payload_bytes,
            dedupe_window: spec.dedupe_window,
        },
        dir: spec.dir,
        queues,
        cancel,
        tuning,
        problem: problem_tx,
        store_down: false,
        unreported: 0,
        report_at: None,
    };
    tokio::spawn(inbox.run());
    problem_rx
}

/// What the watch reports, reduced to what the inbox acts on.
#[derive(Debug)]
enum Hint {
    /// A file closed after writing or renamed in.
    Ready(OsString),
    /// Events were lost: look at the whole folder.
    Rescan,
    /// The folder itself was deleted or moved away.
    FolderChanged,
}

/// Why watching stopped.
enum Exit {
    Cancelled,
    /// The folder went away or was replaced: start over from its check.
    FolderChanged,
}

struct Inbox {
    target: take::Target,
    dir: PathBuf,
    queues: Arc<Queues>,
    cancel: CancellationToken,
    tuning: Tuning,
    problem: watch::Sender<Option<String>>,
    /// The store failed the last time; said once in the log, and once when it is back.
    store_down: bool,
    /// Files taken and not yet told in the log, and when to tell them: a line per file
    /// would flood the log, so there is one summary line per [`Tuning::report`].
    unreported: usize,
    report_at: Option<Instant>,
}

impl Inbox {
    async fn run(mut self) {
        loop {
            let dir = self.dir.clone();
            let checked = blocking(move || folder::check(&dir)).await;
            let identity = match checked {
                Some(Ok(id)) => id,
                Some(Err(problem)) => {
                    self.set_problem(Some(problem));
                    if self.pause(self.tuning.recheck).await {
                        return;
                    }
                    continue;
                }
                // The blocking pool is gone: the runtime is shutting down.
                None => return,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let watcher = match start_watch(&self.dir, tx) {
                Ok(w) => w,
                Err(problem) => {
                    self.set_problem(Some(problem));
                    if self.pause(self.tuning.recheck).await {
                        return;
                    }
                    continue;
                }
            };
            self.set_problem(None);
            let exit = self.watching(identity, rx).await;
            drop(watcher);
            self.report(true);
            match exit {
                Exit::Cancelled => return,
                Exit::FolderChanged => continue,
            }
        }
    }

    /// Sleeps `d`; true when cancelled meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => true,
            () = tokio::time::sleep(d) => false,
        }
    }

    /// Publishes the folder's problem, and says each new one (and its end) once in
    /// the job's scheduler log.
    fn set_problem(&self, problem: Option<String>) {
        let job = &self.target.job;
        self.problem.send_if_modified(|p| {
            if *p == problem {
                return false;
            }
            match &problem {
                Some(text) => self.queues.sched_note(job, true, text),
                None => self.queues.sched_note(
                    job,
                    false,
                    &format!(
                        "inbox {} can be used again: watching it",
                        self.dir.display()
                    ),
                ),
            }
            *p = problem;
            true
        });
    }

    /// Takes files until the folder changes or `cancel`. The watch is already running,
    /// so a file arriving during the first listing is seen by one or the other.
    async fn watching(
        &mut self,
        identity: Identity,
        mut rx: mpsc::UnboundedReceiver<Hint>,
    ) -> Exit {
        let mut pending = BTreeSet::new();
        let mut retry = BTreeSet::new();
        let mut retry_at: Option<Instant> = None;
        let mut rescan = true;
        let mut tick = tokio::time::interval(self.tuning.recheck);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if rescan {
                rescan = false;
                let dir = self.dir.clone();
                match blocking(move || folder::list(&dir)).await {
                    Some(Ok(names)) => pending.extend(names),
                    // Gone or unreadable now: the check says which, and says it.
                    Some(Err(_)) => return Exit::FolderChanged,
                    None => return Exit::Cancelled,
                }
            }
            if !pending.is_empty() && !self.cancel.is_cancelled() {
                // Files waiting for the store wait for its retry, not for new events.
                pending.retain(|n| !retry.contains(n));
                let batch: Vec<OsString> = take_first(&mut pending, BATCH);
                if !batch.is_empty() {
                    let Some(left) = self.take_batch(batch).await else {
                        return Exit::Cancelled;
                    };
                    if !left.is_empty() {
                        retry.extend(left);
                        retry_at = Some(Instant::now() + self.tuning.retry);
                    }
                }
                // What arrived meanwhile joins the next batch.
                while let Ok(hint) = rx.try_recv() {
                    match hint {
                        Hint::Ready(name) => {
                            pending.insert(name);
                        }
                        Hint::Rescan => rescan = true,
                        Hint::FolderChanged => return Exit::FolderChanged,
                    }
                }
                continue;
            }
            tokio::select! {
                () = self.cancel.cancelled() => return Exit::Cancelled,
                hint = rx.recv() => match hint {
                    Some(Hint::Ready(name)) => {
                        pending.insert(name);
                    }
                    Some(Hint::Rescan) => rescan = true,
                    // The watcher stopped: start over.
                    Some(Hint::FolderChanged) | None => return Exit::FolderChanged,
                },
                _ = tick.tick() => {
                    let dir = self.dir.clone();
                    // A folder moved away, or deleted and made again, keeps no watch.
                    match blocking(move || folder::identity(&dir)).await {
                        Some(Some(now)) if now == identity => {}
                        Some(_) => return Exit::FolderChanged,
                        None => return Exit::Cancelled,
                    }
                    self.report(false);
                }
                () = sleep_until(retry_at) => {
                    retry_at = None;
                    pending.append(&mut retry);
                }
            }
        }
    }

    /// Takes one batch; the names to try again later, or `None` when the runtime is
    /// shutting down.
    async fn take_batch(&mut self, batch: Vec<OsString>) -> Option<Vec<OsString>> {
        let dir = self.dir.clone();
        let target = self.target.clone();
        let store = self.queues.store();
        let cancel = self.cancel.clone();
        let taken = blocking(move || take::take(&dir, batch, &target, &store, &cancel)).await?;
        let job = &self.target.job.clone();
        for m in &taken.stored {
            self.queues.stored(m);
        }
        if !taken.stored.is_empty() {
            self.unreported += taken.stored.len();
            if self.report_at.is_none() {
                self.report_at = Some(Instant::now() + self.tuning.report);
            }
            self.report(false);
        }
        for (error, text) in &taken.notes {
            self.queues.sched_note(job, *error, text);
        }
        match (&taken.store_error, self.store_down) {
            (Some(why), false) => {
                self.store_down = true;
                let secs = self.tuning.retry.as_secs().max(1);
                self.queues.sched_note(
                    job,
                    true,
                    &format!(
                        "inbox {}: files are left in the folder while the message store \
                         cannot take them ({why}); trying again every {secs} s",
                        self.dir.display()
                    ),
                );
            }
            (None, true) if !taken.stored.is_empty() => {
                self.store_down = false;
                self.queues.sched_note(
                    job,
                    false,
                    &format!(
                        "inbox {}: the message store takes files again",
                        self.dir.display()
                    ),
                );
            }
            _ => {}
        }
        Some(taken.left)
    }
}

impl Inbox {
    /// Writes the summary line of the files taken, when due (or now, when `now`).
    fn report(&mut self, now: bool) {
        let due = self.report_at.is_some_and(|at| now || Instant::now() >= at);
        if !due {
            return;
        }
        self.report_at = None;
        let n = std::mem::take(&mut self.unreported);
        let files = if n == 1 { "file" } else { "files" };
        self.queues.sched_note(
            &self.target.job,
            false,
            &format!(
                "inbox {}: {n} {files} taken as messages",
                self.dir.display()
            ),
        );
    }
}

fn take_first(set: &mut BTreeSet<OsString>, n: usize) -> Vec<OsString> {
    let mut out = Vec::with_capacity(n.min(set.len()));
    while out.len() < n {
        match set.pop_first() {
            Some(name) => out.push(name),
            None => break,
        }
    }
    out
}

/// Sleeps until `at`, or for ever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs `f` on the blocking pool; `None` when the runtime is shutting down.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// The watch of `dir` alone (not its sub-folders), reduced to [`Hint`]s.
fn start_watch(
    dir: &Path,
    tx: mpsc::UnboundedSender<Hint>,
) -> Result<notify::RecommendedWatcher, String> {
    let base = dir.to_path_buf();
    let handler = move |res: notify::Result<Event>| {
        let hint = match res {
            Ok(ev) => match classify(&base, &ev) {
                Some(h) => h,
                None => return,
            },
            Err(_) => Hint::Rescan,
        };
        let _ = tx.send(hint);
    };
    let shown = dir.display();
    let describe = |e: notify::Error| match e.kind {
        notify::ErrorKind::MaxFilesWatch => format!(
            "inbox {shown} cannot be watched: the inotify watch limit is reached; raise \
             fs.inotify.max_user_watches with sysctl"
        ),
        _ => format!("inbox {shown} cannot be watched: {e}"),
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(describe)?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(describe)?;
    Ok(watcher)
}

/// What an event means for the inbox at `dir`, if anything.
fn classify(dir: &Path, ev: &Event) -> Option<Hint> {
    if ev.need_rescan() {
        return Some(Hint::Rescan);
    }
    let path = ev.paths.first()?;
    if path == dir {
        return match ev.kind {
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => {
                Some(Hint::FolderChanged)
            }
            _ => None,
        };
    }
    let ready = matches!(
        ev.kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To))
    );
    if !ready || path.parent() != Some(dir) {
        return None;
    }
    let name = path.file_name()?;
    folder::takes_name(name).then(|| Hint::Ready(name.to_os_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
