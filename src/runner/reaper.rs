//! The one place that calls `waitpid`.
//!
//! The host is a child subreaper, so besides the runs it spawns it inherits every
//! orphaned grandchild of those runs. Those must be reaped or they stay zombies, and
//! only a `waitpid(-1)` loop can reap a pid nobody announced. Such a loop would steal
//! the exit status of our own children from any other waiter, so nothing else in the
//! host waits on processes: spawns go through [`Reaper::spawn`], which holds a shared
//! gate from before the fork until the pid is registered, while the reaping loop holds
//! it exclusively, so no exit can be reaped between fork and registration. Spawns do
//! not wait on each other: a hundred runs starting together spawn in parallel.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, RwLock};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by signal {s} ({})", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

#[derive(Default)]
struct Waiters {
    by_pid: HashMap<i32, oneshot::Sender<Exit>>,
}

/// How soon the reaping loop looks again when spawns hold the gate.
const GATE_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

/// Cloneable handle on the reaping loop.
#[derive(Clone, Default)]
pub struct Reaper {
    /// Shared by spawns (fork to registration), exclusive for a reaping pass.
    gate: Arc<RwLock<()>>,
    waiters: Arc<Mutex<Waiters>>,
}

impl Reaper {
    /// Starts the reaping loop on the current tokio runtime. Must run before any spawn,
    /// so that no SIGCHLD is delivered before the handler exists.
    pub fn start() -> io::Result<Reaper> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let inner = reaper.clone();
        tokio::spawn(async move {
            loop {
                // Never block this async worker on the gate: while spawns are between
                // fork and registration, look again in a moment. Exits wait at most
                // until a burst of spawns is over.
                while !inner.try_reap() {
                    tokio::time::sleep(GATE_RETRY).await;
                }
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and returns the child with a receiver for its exit.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, oneshot::Receiver<Exit>)> {
        self.spawn_with(|| cmd.spawn(), |c| c.id() as i32)
    }

    /// Starts a run's process (see [`super::spawn::RunCommand`]) and returns it with a
    /// receiver for its exit.
    pub fn spawn_run(
        &self,
        cmd: &super::spawn::RunCommand,
    ) -> io::Result<(super::spawn::Spawned, oneshot::Receiver<Exit>)> {
        self.spawn_with(|| cmd.spawn(), |s| s.pid)
    }

    /// Holds the gate from before `start` forks until the child's pid is registered.
    fn spawn_with<T>(
        &self,
        start: impl FnOnce() -> io::Result<T>,
        pid: impl FnOnce(&T) -> i32,
    ) -> io::Result<(T, oneshot::Receiver<Exit>)> {
        let _gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let child = start()?;
        let (tx, rx) = oneshot::channel();
        self.lock().by_pid.insert(pid(&child), tx);
        Ok((child, rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        // A panic while holding this lock cannot leave the map half-updated (each
        // operation is a single insert or remove), so a poisoned lock is still usable.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One reaping pass if no spawn holds the gate; `false` if one does.
    fn try_reap(&self) -> bool {
        match self.gate.try_write() {
            Ok(gate) => self.reap_all(&gate),
            Err(std::sync::TryLockError::Poisoned(e)) => self.reap_all(&e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        }
        true
    }

    /// One reaping pass; `_gate` proves no spawn is between fork and registration.
    fn reap_all(&self, _gate: &std::sync::RwLockWriteGuard<'_, ()>) {
        let mut waiters = self.lock();
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("waitpid failed: {e}");
                    return;
                }
                Ok(s) => s,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, Exit::Code(code)),
                WaitStatus::Signaled(pid, sig, _) => (pid, Exit::Signal(sig as i32)),
                _ => continue,
            };
            match waiters.by_pid.remove(&pid.as_raw()) {
                // The receiver may be gone if its run was abandoned; nothing to tell.
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => tracing::debug!("reaped orphan {pid}: {exit}"),
            }
        }
    }
}
