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
    let mut cmd = Command::new(program);
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
    new_session(&mut cmd);
    cmd
}
