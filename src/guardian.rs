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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::unistd::Pid;

use crate::runner::proctable::{self, Membership};
use crate::runner::reaper::Reaper;

/// The host's end of the guardian pipe.
///
/// Messages are batched: a hundred runs starting and ending every second would
/// otherwise wake the guardian two hundred times a second. A run the guardian has not
/// heard of yet is still found by its marker when it sweeps, so the delay costs
/// nothing but for a process that wiped its environment in its first moments.
pub struct GuardianLink {
    stdin: Mutex<Option<ChildStdin>>,
    /// Lines not yet written.
    pending: Mutex<String>,
    /// Wakes the flusher when `pending` was empty.
    wake: Arc<tokio::sync::Notify>,
    pid: Option<i32>,
}

/// How long a message may wait for others to share its write.
const BATCH_DELAY: Duration = Duration::from_millis(20);

impl GuardianLink {
    /// Starts the guardian for the host identified by `host_id`, and the task that
    /// writes to it (in the current tokio runtime).
    pub fn start(
        reaper: &Reaper,
        host_id: &str,
        scratch: &Path,
    ) -> std::io::Result<Arc<GuardianLink>> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("__guardian")
            .arg(host_id)
            .arg(scratch)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .env_remove(proctable::MARK_VAR);
        crate::runner::spawn::new_session(&mut cmd);
        let (mut child, _exit) = reaper.spawn(&mut cmd)?;
        let link = Arc::new(GuardianLink {
            stdin: Mutex::new(child.stdin.take()),
            pending: Mutex::new(String::new()),
            wake: Arc::new(tokio::sync::Notify::new()),
            pid: Some(child.id() as i32),
        });
        let (weak, wake) = (Arc::downgrade(&link), link.wake.clone());
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                tokio::time::sleep(BATCH_DELAY).await;
                let Some(link) = weak.upgrade() else { return };
                link.flush();
            }
        });
        Ok(link)
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    pub fn watch(&self, pgid: i32) {
        self.send(&format!("+{pgid}\n"));
    }

    pub fn unwatch(&self, pgid: i32) {
        self.send(&format!("-{pgid}\n"));
    }

    fn send(&self, line: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = pending.is_empty();
        pending.push_str(line);
        drop(pending);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Writes the pending lines (a pipe write the guardian drains at once).
    fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return;
        }
        let mut guard = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stdin) = guard.as_mut()
            && let Err(e) = stdin.write_all(batch.as_bytes())
        {
            tracing::error!(
                "the guardian process is gone ({e}): if the host is killed now, its runs may outlive it"
            );
            *guard = None;
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
