//! Building a run's command: program and argv from the entry point, environment,
//! working directory, and a session of its own.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::spec::entry::Launch;

/// Makes the child a session (and process group) leader before it execs, so the run
/// can be signalled as a group and has no controlling terminal to catch the host's
/// Ctrl-C with.
pub fn new_session(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec in the child and calls only
    // setsid(2), which is async-signal-safe, allocates nothing and takes no lock.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
}

/// Everything the environment of a run is made of.
pub struct RunEnv<'a> {
    pub extra: &'a std::collections::BTreeMap<String, String>,
    pub webjobs: Vec<(&'static str, OsString)>,
    pub mark: &'a str,
}

/// The command for one run, with stdin from /dev/null and both outputs piped.
pub fn command(launch: &Launch, run_dir: &Path, args: &[OsString], env: &RunEnv<'_>) -> Command {
    let (program, prefix) = launch.command(run_dir);
    // Through the `__exec` trampoline when we can: with no pre_exec hook std spawns
    // with posix_spawn (vfork-like), where a pre_exec hook forces a full fork() that
    // copies the host's page tables for every run. The trampoline makes the session
    // and execs the program in the same process, so the pid is the job's.
    let mut cmd = match trampoline() {
        Some(exe) => {
            let mut c = Command::new(exe);
            c.arg(EXEC_ARG).arg(program);
            c
        }
        None => {
            let mut c = Command::new(program);
            new_session(&mut c);
            c
        }
    };
    cmd.args(prefix)
        .args(args)
        .current_dir(run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env.extra {
        cmd.env(k, v);
    }
    for (k, v) in &env.webjobs {
        cmd.env(k, v);
    }
    cmd.env(super::proctable::MARK_VAR, env.mark);
    cmd
}

/// The first argument that makes `jobhost` the exec trampoline (see [`exec_trampoline`]).
pub const EXEC_ARG: &str = "__exec";

fn trampoline() -> Option<&'static std::path::PathBuf> {
    static EXE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    // /proc/self/exe, not the path: it still execs after the binary on disk was
    // replaced by an upgrade (the spawning child resolves it to our own image).
    EXE.get_or_init(|| {
        let me = std::path::PathBuf::from("/proc/self/exe");
        me.exists().then_some(me)
    })
    .as_ref()
}

/// `jobhost __exec PROGRAM ARGS...`: become a session leader, then exec PROGRAM.
/// Runs before any argument parsing, so the job's arguments are never read as ours.
/// Only returns if the exec failed: the message goes to the run's stderr (its log).
pub fn exec_trampoline(mut args: std::env::ArgsOs) -> i32 {
    let Some(program) = args.next() else {
        eprintln!("jobhost __exec: no program given");
        return 127;
    };
    if let Err(e) = nix::unistd::setsid() {
        eprintln!(
            "jobhost: cannot start a new session for {}: {e}",
            program.to_string_lossy()
        );
        return 127;
    }
    // std's exec restores default signal handling (SIGPIPE included) for the program.
    let err = Command::new(&program).args(args).exec();
    eprintln!("jobhost: cannot start {}: {err}", program.to_string_lossy());
    127
}
