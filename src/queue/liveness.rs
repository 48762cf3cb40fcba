//! Whether the host named as a running message's owner is gone, so that its message
//! can be retried. Hosts on one machine sharing LOGS tell it by their lock files
//! (`.jobhost-NAME.lock`, held by a live host, freed by the kernel when it dies); a
//! cluster store tells it by heartbeats. The job tasks ask through [`Liveness`] and
//! do not know which.

use std::path::PathBuf;
use std::time::Duration;

/// Blocking: called on the blocking pool.
pub trait Liveness: Send + Sync {
    /// Whether `owner` is gone. Only asked about messages this host's job task does
    /// not run itself, so this host's own name means its earlier life died.
    fn gone(&self, owner: &str) -> bool;
    /// How often running messages are looked at for gone owners.
    fn check_every(&self) -> Duration;
}

/// Hosts sharing one LOGS on one machine: a host's lock file tells whether it lives.
pub struct LockFiles {
    pub logs: PathBuf,
    /// This host's instance name (`None`: it holds LOGS alone).
    pub me: Option<String>,
}

impl Liveness for LockFiles {
    fn gone(&self, owner: &str) -> bool {
        if owner == self.me.as_deref().unwrap_or("-") {
            return true;
        }
        if owner == "-" {
            // A host without a name holds LOGS alone; this host runs, so it is gone.
            return true;
        }
        let path = crate::layout::instance_lock_file(&self.logs, owner);
        match std::fs::File::open(&path) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => true,
        }
    }

    fn check_every(&self) -> Duration {
        Duration::from_secs(60)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_gone_when_its_lock_is_free() {
        let logs = tempfile::tempdir().unwrap();
        let named = LockFiles {
            logs: logs.path().to_path_buf(),
            me: Some("a".into()),
        };
        assert!(named.gone("a"), "this host's own earlier life");
        assert!(
            named.gone("-"),
            "a host without a name is never beside a named one"
        );
        assert!(named.gone("b"), "no lock file");
        let _held = crate::hostlock::HostLock::acquire(logs.path(), Some("b")).unwrap();
        assert!(!named.gone("b"), "b holds its lock");
        drop(_held);
        assert!(named.gone("b"), "b let go");
        let alone = LockFiles {
            logs: logs.path().to_path_buf(),
            me: None,
        };
        assert!(alone.gone("-"));
    }
}
