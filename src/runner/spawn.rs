//! Starting a run's process: program and argv from the entry point, environment,
//! working directory, a session of its own, stdin from /dev/null (or a message's
//! payload file) and both outputs piped.
//!
//! Runs start through `posix_spawn` with `POSIX_SPAWN_SETSID` and a `chdir` file
//! action (glibc 2.29+, musl 1.1.24+): the C library starts the child vfork-style, so
//! no page tables of the large multi-threaded host are copied, and the job's program
//! is the only image ever executed in the child. std's `Command` cannot ask for a new
//! session without a `pre_exec` hook, which forces a full `fork()`; that path is kept
//! only for a C library that refuses the flag.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
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
    /// The file stdin reads (a message's payload); `None`: /dev/null.
    pub stdin: Option<&'a Path>,
}

/// A run's process, ready to start.
#[derive(Debug)]
pub struct RunCommand {
    /// As the entry point names it: a path, or an interpreter found through PATH.
    program: PathBuf,
    /// argv[1..].
    args: Vec<OsString>,
    /// The run's own variables (the job's `env`, WEBJOBS_*, the run marker), later
    /// entries of the same name winning; they replace the host's of the same name.
    env: Vec<(OsString, OsString)>,
    dir: PathBuf,
    stdin: Option<PathBuf>,
}

/// A started process: its pid and the read ends of its stdout and stderr, which are
/// pipes in non-blocking mode.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// One variable of the host's environment: its name, and `NAME=value` for the child.
struct HostVar {
    name: OsString,
    value: OsString,
    entry: CString,
}

/// The host's own environment, read and converted once: nothing in the host changes
/// it, and a hundred runs a second would otherwise copy it variable by variable.
fn host_env() -> &'static [HostVar] {
    static ENV: std::sync::OnceLock<Vec<HostVar>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        std::env::vars_os()
            .filter(|(k, _)| k != super::proctable::MARK_VAR)
            .filter_map(|(name, value)| {
                let entry = env_entry(&name, &value).ok()?;
                Some(HostVar { name, value, entry })
            })
            .collect()
    })
}

fn env_entry(name: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut kv = Vec::with_capacity(name.len() + value.len() + 1);
    kv.extend_from_slice(name.as_bytes());
    kv.push(b'=');
    kv.extend_from_slice(value.as_bytes());
    cstring(OsStr::from_bytes(&kv))
}

/// The command for one run.
pub fn command(launch: &Launch, run_dir: &Path, args: &[OsString], env: &RunEnv<'_>) -> RunCommand {
    let (program, prefix) = launch.command(run_dir);
    let mut all: Vec<(OsString, OsString)> = Vec::with_capacity(env.extra.len() + 9);
    all.extend(
        env.extra
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    all.extend(
        env.webjobs
            .iter()
            .map(|(k, v)| (OsString::from(k), v.clone())),
    );
    all.push((super::proctable::MARK_VAR.into(), env.mark.into()));
    RunCommand {
        program,
        args: prefix.into_iter().chain(args.iter().cloned()).collect(),
        env: all,
        dir: run_dir.to_path_buf(),
        stdin: env.stdin.map(Path::to_path_buf),
    }
}

impl RunCommand {
    /// Starts the process. Blocking (the exec of the child is waited for, so a missing
    /// program or a bad working directory is an error here, not an exit code).
    pub fn spawn(&self) -> io::Result<Spawned> {
        match self.spawn_resolved(true) {
            // The program the cache named is gone: look it up again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.spawn_resolved(false),
            other => other,
        }
    }

    fn spawn_resolved(&self, cached: bool) -> io::Result<Spawned> {
        let own = self.own_entries()?;
        let env: Vec<&std::ffi::CStr> = host_env()
            .iter()
            .filter(|h| !self.env.iter().any(|(k, _)| *k == h.name))
            .map(|h| h.entry.as_c_str())
            .chain(own.iter().map(CString::as_c_str))
            .collect();
        let program = self.resolve(cached)?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let argv: Vec<CString> = std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(cstring)
            .collect::<io::Result<_>>()?;
        let dir = cstring(self.dir.as_os_str())?;
        let stdin = match &self.stdin {
            Some(path) => cstring(path.as_os_str())?,
            None => c"/dev/null".to_owned(),
        };
        let program = cstring(program.as_os_str())?;
        let pid = match ffi::spawn(&ffi::Request {
            program: &program,
            argv: &argv,
            envp: &env,
            dir: &dir,
            stdin: &stdin,
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
        }) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return self.spawn_forked(),
            other => other?,
        };
        Ok(Spawned {
            pid,
            stdout: out_r,
            stderr: err_r,
        })
    }

    /// The same start through std's `Command` and a full fork: for a C library without
    /// `POSIX_SPAWN_SETSID` or the `chdir` file action.
    fn spawn_forked(&self) -> io::Result<Spawned> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .env_clear()
            .envs(host_env().iter().map(|h| (&h.name, &h.value)))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(match &self.stdin {
                Some(path) => Stdio::from(std::fs::File::open(path)?),
                None => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        new_session(&mut cmd);
        let mut child = cmd.spawn()?;
        let missing = || io::Error::other("the child's pipes were not created");
        Ok(Spawned {
            pid: child.id() as i32,
            stdout: non_blocking(child.stdout.take().ok_or_else(missing)?.into())?,
            stderr: non_blocking(child.stderr.take().ok_or_else(missing)?.into())?,
        })
    }

    /// `NAME=value` of the run's own variables, one per name, the last given winning.
    fn own_entries(&self) -> io::Result<Vec<CString>> {
        let mut out = Vec::with_capacity(self.env.len());
        for (i, (k, v)) in self.env.iter().enumerate() {
            if self.env[i + 1..].iter().any(|(later, _)| later == k) {
                continue;
            }
            out.push(env_entry(k, v)?);
        }
        Ok(out)
    }

    /// A program named without a slash is looked up in the run's PATH (the job's own
    /// `env` may set one), as execvp would in the child. Lookups are remembered per
    /// name and PATH (`cached`), as a shell's hash table does: an interpreter is looked
    /// up for every run.
    fn resolve(&self, cached: bool) -> io::Result<PathBuf> {
        type Lookups = std::collections::HashMap<(PathBuf, OsString), PathBuf>;
        static FOUND: std::sync::Mutex<Option<Lookups>> = std::sync::Mutex::new(None);
        if self.program.as_os_str().as_bytes().contains(&b'/') {
            return Ok(self.program.clone());
        }
        let path = self
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| {
                host_env()
                    .iter()
                    .find(|h| h.name == "PATH")
                    .map(|h| h.value.clone())
            })
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        let key = (self.program.clone(), path);
        let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
        let found = found.get_or_insert_with(Default::default);
        if cached && let Some(p) = found.get(&key) {
            return Ok(p.clone());
        }
        let hit = std::env::split_paths(&key.1)
            .map(|d| d.join(&self.program))
            .find(|p| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} not found in PATH", self.program.display()),
                )
            })?;
        found.insert(key, hit.clone());
        Ok(hit)
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", s.to_string_lossy()),
        )
    })
}

/// A pipe for a child's output, `(ours, the child's)`: ours does not block (the pump
/// reads it on the async side), the child's does, as programs expect of their output.
/// Both close on exec; the child's end is duplicated onto 1 or 2, which clears that.
/// Made non-blocking here, one flag for one end, rather than asked and set later.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let (ours, theirs) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // O_NONBLOCK belongs to each end's open file: clearing it here leaves ours alone.
    fcntl(&theirs, FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok((ours, theirs))
}

/// Our end of a pipe std's `Command` made (blocking) made non-blocking, like [`pipe`]'s.
fn non_blocking(fd: OwnedFd) -> io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok(fd)
}

/// The one place with raw `posix_spawn` calls: neither std nor nix offers a session
/// or a working directory for it.
#[allow(unsafe_code)]
mod ffi {
    use std::ffi::{CStr, CString};
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::RawFd;

    pub struct Request<'a> {
        pub program: &'a CStr,
        pub argv: &'a [CString],
        pub envp: &'a [&'a CStr],
        pub dir: &'a CStr,
        /// Opened read-only as stdin.
        pub stdin: &'a CStr,
        pub stdout: RawFd,
        pub stderr: RawFd,
    }

    fn check(rc: libc::c_int) -> io::Result<()> {
        match rc {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    struct FileActions(libc::posix_spawn_file_actions_t);

    impl Drop for FileActions {
        fn drop(&mut self) {
            // SAFETY: initialised in `spawn` before this value was made.
            unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
        }
    }

    struct Attr(libc::posix_spawnattr_t);

    impl Drop for Attr {
        fn drop(&mut self) {
            // SAFETY: initialised in `spawn` before this value was made.
            unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
        }
    }

    fn null_terminated<S: AsRef<CStr>>(v: &[S]) -> Vec<*mut libc::c_char> {
        v.iter()
            .map(|s| s.as_ref().as_ptr().cast_mut())
            .chain(std::iter::once(std::ptr::null_mut()))
            .collect()
    }

    /// Starts `program` in a new session, in `dir`, stdin from `stdin`, stdout and
    /// stderr on the given descriptors, no signal blocked and every signal's handling
    /// at its default (the host ignores SIGPIPE). `EINVAL` means the C library lacks
    /// a feature asked for.
    pub fn spawn(r: &Request<'_>) -> io::Result<i32> {
        // SAFETY: each libc object is initialised before use and destroyed by its
        // guard; every pointer passed points into a value that outlives the call;
        // argv and envp are NULL-terminated arrays of NUL-terminated strings.
        unsafe {
            let mut fa = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
            check(libc::posix_spawn_file_actions_init(fa.as_mut_ptr()))?;
            let mut fa = FileActions(fa.assume_init());
            let mut attr = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
            check(libc::posix_spawnattr_init(attr.as_mut_ptr()))?;
            let mut attr = Attr(attr.assume_init());

            check(libc::posix_spawn_file_actions_addopen(
                &mut fa.0,
                0,
                r.stdin.as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut fa.0, r.stdout, 1,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut fa.0, r.stderr, 2,
            ))?;
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut fa.0,
                r.dir.as_ptr(),
            ))?;

            let mut none = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(none.as_mut_ptr());
            let mut all = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigfillset(all.as_mut_ptr());
            check(libc::posix_spawnattr_setsigmask(&mut attr.0, none.as_ptr()))?;
            check(libc::posix_spawnattr_setsigdefault(
                &mut attr.0,
                all.as_ptr(),
            ))?;
            let flags = libc::POSIX_SPAWN_SETSID
                | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
                | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
            check(libc::posix_spawnattr_setflags(&mut attr.0, flags))?;

            let argv = null_terminated(r.argv);
            let envp = null_terminated(r.envp);
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                r.program.as_ptr(),
                &fa.0,
                &attr.0,
                argv.as_ptr(),
                envp.as_ptr(),
            ))?;
            Ok(pid)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    fn cmd(program: &str, args: &[&str], dir: &Path) -> RunCommand {
        RunCommand {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: vec![
                ("PATH".into(), std::env::var_os("PATH").unwrap_or_default()),
                ("A".into(), "first".into()),
                ("A".into(), "second".into()),
            ],
            dir: dir.to_path_buf(),
            stdin: None,
        }
    }

    #[test]
    fn stdin_reads_the_given_file_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let payload: Vec<u8> = (0..=255u8).chain(b"\n\0end".iter().copied()).collect();
        let file = tmp.path().join("payload");
        std::fs::write(&file, &payload).unwrap();
        for forked in [false, true] {
            let mut c = cmd("cat", &[], tmp.path());
            c.stdin = Some(file.clone());
            let s = match forked {
                false => c.spawn().unwrap(),
                true => c.spawn_forked().unwrap(),
            };
            use nix::fcntl::{FcntlArg, OFlag, fcntl};
            fcntl(&s.stdout, FcntlArg::F_SETFL(OFlag::empty())).unwrap();
            let mut out = Vec::new();
            std::fs::File::from(s.stdout).read_to_end(&mut out).unwrap();
            wait(s.pid);
            assert_eq!(out, payload, "forked: {forked}");
        }
    }

    /// Reads one of a child's outputs to its end (our ends do not block: wait for data).
    fn read_all(fd: OwnedFd) -> String {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty())).unwrap();
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text).unwrap();
        text
    }

    fn wait(pid: i32) -> nix::sys::wait::WaitStatus {
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap()
    }

    #[test]
    fn starts_in_its_own_session_and_folder_with_piped_output_and_stdin_from_null() {
        let tmp = tempfile::tempdir().unwrap();
        let script = "echo \"$A $(pwd) $(cut -d' ' -f6 /proc/$$/stat) $$\"; echo err >&2; cat";
        let s = cmd("sh", &["-c", script], tmp.path()).spawn().unwrap();
        let (out, err) = (read_all(s.stdout), read_all(s.stderr));
        wait(s.pid);
        let dir = tmp.path().canonicalize().unwrap();
        assert_eq!(
            out.trim(),
            format!("second {} {} {}", dir.display(), s.pid, s.pid)
        );
        assert_eq!(err, "err\n");
    }

    #[test]
    fn our_ends_of_the_pipes_do_not_block_and_the_childs_do() {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let tmp = tempfile::tempdir().unwrap();
        let s = cmd("sh", &["-c", "grep flags /proc/$$/fdinfo/1"], tmp.path())
            .spawn()
            .unwrap();
        for fd in [&s.stdout, &s.stderr] {
            let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
            assert!(flags.contains(OFlag::O_NONBLOCK), "{flags:?}");
        }
        let out = read_all(s.stdout);
        wait(s.pid);
        let octal = out.split_whitespace().nth(1).unwrap();
        let flags = i32::from_str_radix(octal, 8).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0, "the child's stdout: {out}");
    }

    #[test]
    fn a_missing_program_or_folder_is_an_error_not_an_exit() {
        let tmp = tempfile::tempdir().unwrap();
        let e = cmd("no-such-program-here", &[], tmp.path())
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = cmd("sh", &["-c", "true"], &tmp.path().join("gone"))
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn sigpipe_is_back_to_its_default_in_the_child() {
        let tmp = tempfile::tempdir().unwrap();
        // An ignored SIGPIPE would survive the exec, and the shell with it.
        let s = cmd("sh", &["-c", "kill -PIPE $$"], tmp.path())
            .spawn()
            .unwrap();
        drop((s.stdout, s.stderr));
        assert!(matches!(
            wait(s.pid),
            nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGPIPE, _)
        ));
    }
}
