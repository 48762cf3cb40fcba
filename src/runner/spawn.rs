//! Building a run's command: program and argv from the entry point, environment,
//! working directory, and a session of its own.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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

/// Arguments as one string for `WEBJOBS_COMMAND_ARGUMENTS`, quoted so that POSIX shell
/// rules split it back into the same argv (plain words stay bare).
pub fn quote_args(args: &[OsString]) -> OsString {
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        quote_into(arg, &mut out);
    }
    OsString::from_vec(out)
}

fn quote_into(arg: &OsStr, out: &mut Vec<u8>) {
    let bytes = arg.as_bytes();
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(b));
    if plain {
        out.extend_from_slice(bytes);
        return;
    }
    out.push(b'\'');
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_plain_words_bare_and_protects_the_rest() {
        let cases: &[(&[&str], &str)] = &[
            (&[], ""),
            (&["a", "b"], "a b"),
            (&["a b"], "'a b'"),
            (&[""], "''"),
            (&["it's"], "'it'\\''s'"),
            (&["$(rm -rf /)"], "'$(rm -rf /)'"),
            (&["x\ny"], "'x\ny'"),
        ];
        for (args, want) in cases {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            assert_eq!(quote_args(&args), OsString::from(*want), "{args:?}");
        }
    }
}
