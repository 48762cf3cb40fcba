//! What a continuous job does when its definition changes: a pure decision table.
//!
//! The continuous machine (`continuous::state`) feeds in where it is and what the
//! folder now says; this answers with one action, tested as one table.

/// Where the job task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No run and none planned (stopped, disabled, error, waiting for a lock).
    Idle,
    /// A run is going.
    Running,
    /// Waiting out the restart backoff.
    Backoff,
}

/// What the job folder says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desired {
    /// Settings and entry point are valid.
    pub valid: bool,
    pub disabled: bool,
    /// The job's files differ from those the current or last run started from.
    pub files_changed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Start,
    Stop,
    /// Graceful stop, then start with the new files.
    Restart,
    /// The new files are invalid: keep the run going on its last valid settings and
    /// show the error.
    KeepWithError,
    /// Not valid and nothing running: show the error.
    ShowError,
}

pub fn on_definition(phase: Phase, d: Desired) -> Action {
    use Action::*;
    match (phase, d.disabled, d.valid) {
        (Phase::Idle, true, _) => Nothing,
        (Phase::Running | Phase::Backoff, true, _) => Stop,
        (Phase::Running, false, false) => KeepWithError,
        (Phase::Backoff, false, false) => Stop,
        (Phase::Idle, false, false) => ShowError,
        (Phase::Running, false, true) if d.files_changed => Restart,
        (Phase::Running, false, true) => Nothing,
        // A fix during backoff is worth trying at once.
        (Phase::Backoff, false, true) if d.files_changed => Start,
        (Phase::Backoff, false, true) => Nothing,
        (Phase::Idle, false, true) => Start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Phase::*;

    #[test]
    fn decision_table() {
        // (phase, valid, disabled, files_changed) -> action
        let table = [
            (Idle, true, false, false, Start),
            (Idle, true, false, true, Start),
            (Idle, false, false, true, ShowError),
            (Idle, true, true, false, Nothing),
            (Idle, false, true, true, Nothing),
            (Running, true, false, false, Nothing),
            (Running, true, false, true, Restart),
            (Running, false, false, true, KeepWithError),
            (Running, true, true, false, Stop),
            (Running, false, true, true, Stop),
            (Backoff, true, false, false, Nothing),
            (Backoff, true, false, true, Start),
            (Backoff, false, false, true, Stop),
            (Backoff, true, true, false, Stop),
        ];
        for (phase, valid, disabled, files_changed, want) in table {
            let d = Desired {
                valid,
                disabled,
                files_changed,
            };
            assert_eq!(on_definition(phase, d), want, "{phase:?} {d:?}");
        }
    }
}
