//! The guardian: a tiny process that outlives the host by a moment and kills what the
//! host leaves behind.
//!
//! A parent-death signal reaches only a direct child, and Linux ties it to the thread
//! that spawned it (a tokio pool thread may exit at any time), so it cannot guarantee
//! that a SIGKILLed host takes its runs' grandchildren along. Instead the host starts
//! this process (the same binary, `jobhost __guardian`) in its own session, with a pipe
//! as stdin, and tells it each run's process group as runs start and end. When the
//! pipe reaches end of file, the host is gone, however it died: the guardian then
//! SIGKILLs every process group it was told about and every process that carries the
//! host's run marker (which catches grandchildren that left their group), repeats the
//! sweep until nothing is left, removes the host's scratch folder and exits.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::unistd::Pid;

use super::proctable::{self, Membership};
use super::reaper::{Exit, Reaper};
use tokio::sync::oneshot;

/// The host's end of the guardian pipe.
///
/// Messages are batched: a hundred runs starting and ending every second would
/// otherwise wake the guardian two hundred times a second. A run the guardian has not
/// heard of yet is still found by its marker when it sweeps, so the delay costs
/// nothing but for a process that wiped its environment in its first moments.
///
/// The host watches its guardian: if it dies (an operator's `kill -9`, the OOM
/// killer), a host killed later would orphan every run. So a new guardian is started
/// at once and told every process group still registered (the marks it finds by the
/// host id it is given), and the host log says so.
pub struct GuardianLink {
    conn: Mutex<Conn>,
    /// Lines not yet written.
    pending: Mutex<String>,
    /// Every process group registered and not yet unregistered: what a new guardian
    /// must be told.
    groups: Mutex<BTreeSet<i32>>,
    /// Wakes the flusher when `pending` was empty.
    wake: Arc<tokio::sync::Notify>,
    reaper: Reaper,
    host_id: String,
    scratch: PathBuf,
}

/// The guardian process of the moment.
struct Conn {
    stdin: Option<ChildStdin>,
    pid: Option<i32>,
}

/// How long a message may wait for others to share its write.
const BATCH_DELAY: Duration = Duration::from_millis(20);
/// A guardian that dies sooner than this after its start is replaced only after this
/// long, so a guardian that cannot live does not make the host fork in a loop.
const RESPAWN_PAUSE: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GuardianLink {
    /// Starts the guardian for the host identified by `host_id`, the task that writes
    /// to it and the task that replaces it if it dies (in the current tokio runtime).
    pub fn start(
        reaper: &Reaper,
        host_id: &str,
        scratch: &Path,
    ) -> std::io::Result<Arc<GuardianLink>> {
        let (child, exit) = spawn_guardian(reaper, host_id, scratch)?;
        let link = Arc::new(GuardianLink {
            conn: Mutex::new(Conn {
                stdin: None,
                pid: None,
            }),
            pending: Mutex::new(String::new()),
            groups: Mutex::new(BTreeSet::new()),
            wake: Arc::new(tokio::sync::Notify::new()),
            reaper: reaper.clone(),
            host_id: host_id.to_string(),
            scratch: scratch.to_path_buf(),
        });
        link.adopt(child);
        let (weak, wake) = (Arc::downgrade(&link), link.wake.clone());
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                tokio::time::sleep(BATCH_DELAY).await;
                let Some(link) = weak.upgrade() else { return };
                link.flush();
            }
        });
        tokio::spawn(watch_guardian(Arc::downgrade(&link), exit));
        Ok(link)
    }

    /// Makes `child` the guardian of the moment.
    fn adopt(&self, mut child: std::process::Child) {
        let mut conn = lock(&self.conn);
        conn.pid = Some(child.id() as i32);
        conn.stdin = child.stdin.take();
    }

    pub fn pid(&self) -> Option<i32> {
        lock(&self.conn).pid
    }

    pub fn watch(&self, pgid: i32) {
        lock(&self.groups).insert(pgid);
        self.send(&format!("+{pgid}\n"));
    }

    pub fn unwatch(&self, pgid: i32) {
        lock(&self.groups).remove(&pgid);
        self.send(&format!("-{pgid}\n"));
    }

    fn send(&self, line: &str) {
        let mut pending = lock(&self.pending);
        let was_empty = pending.is_empty();
        pending.push_str(line);
        drop(pending);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Writes the pending lines (a pipe write the guardian drains at once).
    fn flush(&self) {
        let batch = std::mem::take(&mut *lock(&self.pending));
        if batch.is_empty() {
            return;
        }
        let mut conn = lock(&self.conn);
        if let Some(stdin) = conn.stdin.as_mut()
            && let Err(e) = stdin.write_all(batch.as_bytes())
        {
            // The watcher replaces a guardian that died; until then, nothing to do.
            tracing::debug!("writing to the guardian: {e}");
            conn.stdin = None;
        }
    }

    /// Starts a new guardian after the last one died and tells it every process group
    /// registered; returns its pid and exit, and how many groups it was told.
    fn replace(&self) -> std::io::Result<(i32, oneshot::Receiver<Exit>, usize)> {
        let (child, exit) = spawn_guardian(&self.reaper, &self.host_id, &self.scratch)?;
        let pid = child.id() as i32;
        // Under the link's lock, so no delta is written between the new pipe and the
        // full list; a delta written after it repeats what the list says (harmless).
        let mut conn = lock(&self.conn);
        conn.pid = Some(pid);
        let mut child = child;
        conn.stdin = child.stdin.take();
        let groups = lock(&self.groups).clone();
        let all: String = groups.iter().map(|g| format!("+{g}\n")).collect();
        if let Some(stdin) = conn.stdin.as_mut()
            && let Err(e) = stdin.write_all(all.as_bytes())
        {
            tracing::debug!("writing to the new guardian: {e}");
            conn.stdin = None;
        }
        Ok((pid, exit, groups.len()))
    }
}

fn spawn_guardian(
    reaper: &Reaper,
    host_id: &str,
    scratch: &Path,
) -> std::io::Result<(std::process::Child, oneshot::Receiver<Exit>)> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("__guardian")
        .arg(host_id)
        .arg(scratch)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .env_remove(proctable::MARK_VAR);
    super::spawn::new_session(&mut cmd);
    reaper.spawn(&mut cmd)
}

/// Waits for the guardian of the moment to die and replaces it, for as long as the
/// host lives.
async fn watch_guardian(link: Weak<GuardianLink>, mut exit: oneshot::Receiver<Exit>) {
    let mut started = tokio::time::Instant::now();
    loop {
        // No exit without a reaped process: the reaper is gone with the host, and a
        // guardian that may still live must keep its pipe (closing it is its signal
        // to kill every run).
        let Ok(how) = (&mut exit).await else { return };
        if started.elapsed() < RESPAWN_PAUSE {
            tokio::time::sleep(RESPAWN_PAUSE).await;
        }
        let Some(link) = link.upgrade() else { return };
        let old = link
            .pid()
            .map_or_else(|| "?".to_string(), |p| p.to_string());
        let replaced = tokio::task::spawn_blocking({
            let link = link.clone();
            move || link.replace()
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match replaced {
            Ok((pid, next, groups)) => {
                tracing::warn!(
                    "the guardian process (pid {old}) died ({how}): started a new one (pid {pid}), told about the {groups} run process group(s) going"
                );
                exit = next;
                started = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::error!(
                    "the guardian process (pid {old}) died ({how}) and a new one could not be started ({e}): if the host is killed now, its runs may outlive it"
                );
                return;
            }
        }
    }
}

/// Body of `jobhost __guardian HOST_ID SCRATCH`. Never returns an error to anyone: it
/// runs after its only audience has died.
pub fn run(host_id: &str, scratch: &Path) {
    // Terminal signals and `pkill jobhost` must not take the guardian before the host:
    // blocked signals stay pending forever, which in a single-threaded process is the
    // same as ignoring them, without an unsafe signal handler.
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(sig);
    }
    let _ = set.thread_block();

    let mut groups = BTreeSet::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let (op, num) = line.split_at(line.len().min(1));
        let Ok(pgid) = num.parse::<i32>() else {
            continue;
        };
        match op {
            "+" => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    let groups: Vec<i32> = groups.into_iter().collect();
    sweep(&groups, &format!("{host_id}/"));
    if scratch.starts_with(std::env::temp_dir()) {
        let _ = std::fs::remove_dir_all(scratch);
    }
}

/// Kills every member until none is left (a dying parent may have forked once more),
/// bounded so the guardian itself always ends.
pub fn sweep(groups: &[i32], mark_prefix: &str) -> usize {
    let mut killed = 0;
    for _ in 0..50 {
        for g in groups {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
        }
        let left = proctable::members(&Membership {
            groups,
            mark_prefix,
        });
        if left.is_empty() {
            break;
        }
        for pid in &left {
            if kill(*pid, Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

/// The scratch folder of one host: private copies of job folders and shutdown files.
pub fn scratch_root(host_id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("jobhost-{host_id}"))
}
