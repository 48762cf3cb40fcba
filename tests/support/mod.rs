//! Test support: a sandbox (temporary JOBS, LOGS and a state folder for job scripts)
//! and `TestHost`, the real `jobhost run` binary started on it.
//!
//! Rules every test relies on:
//! - Nothing waits for a duration. `wait_for` polls a condition until a generous
//!   deadline and, when it runs out, panics with everything a reader needs: the host's
//!   stdout and stderr, the host logs, the job logs and status files, and the state
//!   folder.
//! - Nothing is left behind. A host is SIGKILLed and reaped when its `TestHost` drops,
//!   panic or not (and dies with the test process through `PR_SET_PDEATHSIG` if the
//!   test process itself is killed). Every process a host starts inherits
//!   `TEST_STATE=<this sandbox's state folder>`; when the sandbox drops, any process
//!   still carrying it is SIGKILLed, as is every pid listed in a `state/*.kill` file
//!   (for the processes a test makes escape on purpose).
//! - Job scripts write what the test needs to know (pids, markers) into `$TEST_STATE`,
//!   one value per line, so a test can read them and assert those processes are dead.

#![allow(dead_code)]

pub mod client;

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The usual bound on a wait. The machine is shared and noisy: deadlines only bound a
/// hang, they never measure anything.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Poll period inside `wait_for`.
const POLL: Duration = Duration::from_millis(50);

pub const CONTINUOUS: &str = "continuous";
pub const TRIGGERED: &str = "triggered";

/// The environment variable that tags every process of a sandbox.
pub const STATE_VAR: &str = "TEST_STATE";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_jobhost")
}

/// Temporary JOBS, LOGS, a state folder for scripts and a private TMPDIR for the host.
pub struct Sandbox {
    dir: tempfile::TempDir,
    pub root: PathBuf,
    pub jobs: PathBuf,
    pub logs: PathBuf,
    /// `$TEST_STATE` of every run: scripts write pids and markers here.
    pub state: PathBuf,
    /// `TMPDIR` of the host, so its scratch folder (private copies, shutdown files) is
    /// inside the sandbox.
    pub tmp: PathBuf,
    staging: PathBuf,
    counter: AtomicU64,
    /// Host output files, for dumps.
    outputs: Mutex<Vec<PathBuf>>,
}

impl Sandbox {
    pub fn new() -> Arc<Sandbox> {
        let dir = tempfile::Builder::new()
            .prefix("jobhost-it-")
            .tempdir()
            .expect("creating a temporary folder for the test");
        let root = dir.path().canonicalize().expect("canonical temp path");
        let sb = Sandbox {
            jobs: root.join("jobs"),
            logs: root.join("logs"),
            state: root.join("state"),
            tmp: root.join("tmp"),
            staging: root.join("staging"),
            root,
            dir,
            counter: AtomicU64::new(0),
            outputs: Mutex::new(Vec::new()),
        };
        for d in [
            sb.jobs.join(CONTINUOUS),
            sb.jobs.join(TRIGGERED),
            sb.logs.clone(),
            sb.state.clone(),
            sb.tmp.clone(),
            sb.staging.clone(),
        ] {
            fs::create_dir_all(&d).expect("creating sandbox folders");
        }
        Arc::new(sb)
    }

    fn unique(&self, stem: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.staging.join(format!("{stem}-{n}"))
    }

    // ----- job folders -----------------------------------------------------------

    pub fn job_dir(&self, job_type: &str, name: &str) -> PathBuf {
        self.jobs.join(job_type).join(name)
    }

    /// Writes a job's files. A new job folder is assembled outside JOBS and renamed
    /// into place, so the host never sees half a job; in an existing folder each file
    /// is replaced atomically (write elsewhere, rename over). Entry points (`run`,
    /// `run.*`, `*.sh`, `*.py`) are made executable.
    pub fn write_job(&self, job_type: &str, name: &str, files: &[(&str, &str)]) {
        let files: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|(p, c)| (*p, c.as_bytes(), default_mode(p)))
            .collect();
        self.write_job_modes(job_type, name, &files);
    }

    /// `write_job` with raw bytes and explicit modes.
    pub fn write_job_modes(&self, job_type: &str, name: &str, files: &[(&str, &[u8], u32)]) {
        let dest = self.job_dir(job_type, name);
        if dest.exists() {
            for (rel, content, mode) in files {
                self.write_file_mode(&dest.join(rel), content, *mode);
            }
            return;
        }
        let stage = self.unique("job");
        fs::create_dir_all(&stage).expect("creating a staging folder");
        for (rel, content, mode) in files {
            write_with_mode(&stage.join(rel), content, *mode);
        }
        fs::rename(&stage, &dest)
            .unwrap_or_else(|e| panic!("moving job folder into {}: {e}", dest.display()));
    }

    /// Replaces one file of a job atomically.
    pub fn write_job_file(&self, job_type: &str, name: &str, rel: &str, content: &str) {
        let path = self.job_dir(job_type, name).join(rel);
        self.write_file_mode(&path, content.as_bytes(), default_mode(rel));
    }

    fn write_file_mode(&self, path: &Path, content: &[u8], mode: u32) {
        let tmp = self.unique("file");
        write_with_mode(&tmp, content, mode);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("creating parent folder");
        }
        fs::rename(&tmp, path)
            .unwrap_or_else(|e| panic!("renaming a file onto {}: {e}", path.display()));
    }

    /// Removes a job folder (as a deploy tool would: everything at once, by rename
    /// out of JOBS, then delete).
    pub fn remove_job(&self, job_type: &str, name: &str) {
        let gone = self.unique("removed");
        fs::rename(self.job_dir(job_type, name), &gone).expect("moving the job folder out");
        fs::remove_dir_all(&gone).expect("deleting the removed job folder");
    }

    // ----- logs and status -------------------------------------------------------

    pub fn log_dir(&self, name: &str) -> PathBuf {
        self.logs.join(CONTINUOUS).join(name)
    }

    pub fn host_log_path(&self, instance: Option<&str>) -> PathBuf {
        match instance {
            Some(i) => self.logs.join(format!("host-{i}.log")),
            None => self.logs.join("host.log"),
        }
    }

    pub fn host_log(&self, instance: Option<&str>) -> String {
        read_lossy(&self.host_log_path(instance))
    }

    /// `job_log.txt` of a continuous job, bytes ("" while missing).
    pub fn read_log_bytes(&self, name: &str) -> Vec<u8> {
        self.read_log_file_bytes(name, "job_log.txt")
    }

    /// `job_log.txt` of a continuous job, lossy UTF-8 ("" while missing).
    pub fn read_log(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.read_log_bytes(name)).into_owned()
    }

    pub fn read_log_file_bytes(&self, name: &str, file: &str) -> Vec<u8> {
        fs::read(self.log_dir(name).join(file)).unwrap_or_default()
    }

    pub fn read_log_file(&self, name: &str, file: &str) -> String {
        String::from_utf8_lossy(&self.read_log_file_bytes(name, file)).into_owned()
    }

    /// Every line of a continuous job's log, rotated files first (oldest first).
    pub fn read_log_all(&self, name: &str) -> Vec<u8> {
        let dir = self.log_dir(name);
        let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let num = n
                    .strip_prefix("job_log.")?
                    .strip_suffix(".txt")?
                    .parse()
                    .ok()?;
                Some((num, e.path()))
            })
            .collect();
        rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
        let mut all = Vec::new();
        for (_, p) in rotated {
            all.extend(fs::read(p).unwrap_or_default());
        }
        all.extend(fs::read(dir.join("job_log.txt")).unwrap_or_default());
        all
    }

    /// `status.json` of a continuous job; `Value::Null` while it does not exist.
    pub fn read_status(&self, name: &str) -> Value {
        self.read_status_file(name, "status.json")
    }

    /// A status file of a continuous job (`status-a.json` ...); `Null` while missing.
    /// The file is written atomically, so anything but valid JSON is a bug.
    pub fn read_status_file(&self, name: &str, file: &str) -> Value {
        let path = self.log_dir(name).join(file);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{} is not valid JSON ({e}); status files must be written atomically:\n{}",
                    path.display(),
                    String::from_utf8_lossy(&bytes)
                )
            }),
            Err(_) => Value::Null,
        }
    }

    // ----- state written by scripts ------------------------------------------------

    pub fn state_path(&self, file: &str) -> PathBuf {
        self.state.join(file)
    }

    pub fn state_exists(&self, file: &str) -> bool {
        self.state_path(file).exists()
    }

    pub fn read_state(&self, file: &str) -> String {
        read_lossy(&self.state_path(file))
    }

    /// Complete lines (ending in '\n') of a state file: a line still being written is
    /// not returned.
    pub fn read_lines(&self, file: &str) -> Vec<String> {
        let text = self.read_state(file);
        let complete = match text.rfind('\n') {
            Some(i) => &text[..i],
            None => return Vec::new(),
        };
        complete.lines().map(str::to_owned).collect()
    }

    /// Pids a script appended to `file`, one per line.
    pub fn read_pids(&self, file: &str) -> Vec<i32> {
        self.read_lines(file)
            .iter()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Waits until `file` holds at least `n` pids and returns them.
    pub fn wait_pids(&self, file: &str, n: usize) -> Vec<i32> {
        self.wait_for(
            &format!("{n} pid(s) in state file {file}"),
            DEADLINE,
            || self.read_pids(file).len() >= n,
        );
        self.read_pids(file)
    }

    // ----- waiting -----------------------------------------------------------------

    /// Polls `cond` until it holds; after `timeout` panics with `desc` and a dump of
    /// the sandbox.
    pub fn wait_for(&self, desc: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if cond() {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {:?} waiting for: {desc}\n{}",
                    timeout,
                    self.dump()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until `status.json` of `name` says `state`.
    pub fn wait_status(&self, name: &str, state: &str) -> Value {
        self.wait_status_file(name, "status.json", state)
    }

    pub fn wait_status_file(&self, name: &str, file: &str, state: &str) -> Value {
        let mut last = Value::Null;
        self.wait_for(
            &format!("{name}/{file} to say status {state}"),
            DEADLINE,
            || {
                last = self.read_status_file(name, file);
                last["status"] == state
            },
        );
        last
    }

    /// Waits until the job runs and returns its pid from `status.json`.
    pub fn wait_running(&self, name: &str) -> i32 {
        let mut pid = None;
        self.wait_for(
            &format!("{name} to be Running with a pid"),
            DEADLINE,
            || {
                let st = self.read_status(name);
                pid = st["pid"].as_i64();
                st["status"] == "Running" && pid.is_some()
            },
        );
        pid.expect("checked by the wait") as i32
    }

    /// Waits until the job log contains `needle`.
    pub fn wait_log(&self, name: &str, needle: &str) -> String {
        self.wait_log_file(name, "job_log.txt", needle)
    }

    pub fn wait_log_file(&self, name: &str, file: &str, needle: &str) -> String {
        let mut text = String::new();
        self.wait_for(
            &format!("{name}/{file} to contain {needle:?}"),
            DEADLINE,
            || {
                text = self.read_log_file(name, file);
                text.contains(needle)
            },
        );
        text
    }

    pub fn wait_dead(&self, what: &str, pid: i32) {
        self.wait_for(&format!("{what} (pid {pid}) to be dead"), DEADLINE, || {
            !pid_alive(pid)
        });
    }

    // ----- processes -----------------------------------------------------------------

    /// Live processes (zombies excluded) started by a host of this sandbox: they carry
    /// `TEST_STATE=<state folder>`. The host itself and its guardian included.
    pub fn leftover_processes(&self) -> Vec<i32> {
        let needle = format!("{STATE_VAR}={}", self.state.display());
        processes_with_env(needle.as_bytes())
    }

    /// Waits until no process of this sandbox is alive any more.
    pub fn wait_no_leftovers(&self) {
        let mut left = Vec::new();
        self.wait_for(
            "every process of the sandbox (runs, grandchildren, guardian) to be gone",
            DEADLINE,
            || {
                left = self.leftover_processes();
                left.is_empty()
            },
        );
    }

    // ----- diagnostics ---------------------------------------------------------------

    /// Everything worth reading after a failure, tails only.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("===== sandbox {}\n", self.root.display()));
        let outputs = self
            .outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for p in outputs {
            append_tail(&mut out, &p, 6000);
        }
        let mut files = Vec::new();
        walk(&self.logs, &mut files);
        walk(&self.state, &mut files);
        files.sort();
        for p in files {
            append_tail(&mut out, &p, 3000);
        }
        let mut jobs = Vec::new();
        walk(&self.jobs, &mut jobs);
        jobs.sort();
        out.push_str("===== files under JOBS\n");
        for p in jobs {
            out.push_str(&format!("  {}\n", p.display()));
        }
        let left = self.leftover_processes();
        out.push_str(&format!("===== live sandbox processes: {left:?}\n"));
        for pid in left {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            out.push_str(&format!("  {pid}: {}\n", cmd.join(" ")));
        }
        out
    }

    fn register_output(&self, p: PathBuf) {
        self.outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The hosts are dead by now (each TestHost holds an Arc to the sandbox). Their
        // guardians normally clean up within a moment; give them that, then kill
        // whatever is left so no test leaks processes into the next one.
        let needle = format!("{STATE_VAR}={}", self.state.display());
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && !processes_with_env(needle.as_bytes()).is_empty() {
            std::thread::sleep(POLL);
        }
        for _ in 0..20 {
            let left = processes_with_env(needle.as_bytes());
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Processes a test made escape on purpose (no TEST_STATE in their environment).
        for entry in fs::read_dir(&self.state).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "kill") {
                for line in read_lossy(&entry.path()).lines() {
                    if let Ok(pid) = line.trim().parse::<i32>()
                        && cmdline(pid).contains("sleep")
                    {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
        }
    }
}

fn default_mode(rel: &str) -> u32 {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    if file == "run" || file.starts_with("run.") || file.ends_with(".sh") || file.ends_with(".py") {
        0o755
    } else {
        0o644
    }
}

fn write_with_mode(path: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("creating parent folder");
    }
    let mut f =
        fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.write_all(content).expect("writing a job file");
    f.sync_all().expect("syncing a job file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            _ => out.push(p),
        }
    }
}

fn append_tail(out: &mut String, path: &Path, max: usize) {
    let bytes = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    out.push_str(&format!(
        "===== {} ({} bytes{})\n",
        path.display(),
        bytes.len(),
        if start > 0 { ", tail" } else { "" }
    ));
    out.push_str(&text[start..]);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

fn cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// Process group and session of a live process (from `/proc/PID/stat`).
pub fn pgid_and_sid(pid: i32) -> Option<(i32, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn processes_with_env(needle: &[u8]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle) && pid_alive(pid) {
            found.push(pid);
        }
    }
    found
}

// ----- the host --------------------------------------------------------------------

/// One `jobhost run` process on a sandbox. Killed (SIGKILL) and reaped on drop.
pub struct TestHost {
    sb: Arc<Sandbox>,
    pub instance: Option<String>,
    /// `--jobs` and `--logs` as passed (the sandbox's by default).
    pub jobs_arg: PathBuf,
    pub logs_arg: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Deref for TestHost {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

impl TestHost {
    /// A host on a new sandbox, not started yet (write jobs, then `start`).
    pub fn new() -> TestHost {
        TestHost::on(&Sandbox::new(), None)
    }

    /// A host on a new sandbox, started.
    pub fn start_new() -> TestHost {
        let mut h = TestHost::new();
        h.start();
        h
    }

    /// A host on an existing sandbox (hosts sharing JOBS and LOGS), not started.
    pub fn on(sb: &Arc<Sandbox>, instance: Option<&str>) -> TestHost {
        TestHost {
            sb: sb.clone(),
            instance: instance.map(str::to_owned),
            jobs_arg: sb.jobs.clone(),
            logs_arg: sb.logs.clone(),
            child: None,
            starts: 0,
        }
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sb
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn command(&mut self) -> Command {
        self.starts += 1;
        let tag = format!(
            "host-{}-{}",
            self.instance.as_deref().unwrap_or("main"),
            self.starts
        );
        let stdout = self.sb.root.join(format!("{tag}.stdout"));
        let stderr = self.sb.root.join(format!("{tag}.stderr"));
        self.sb.register_output(stdout.clone());
        self.sb.register_output(stderr.clone());
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("--jobs")
            .arg(&self.jobs_arg)
            .arg("--logs")
            .arg(&self.logs_arg)
            // Port 0: hosts of parallel tests must not fight over one address.
            .arg("--listen")
            .arg("127.0.0.1:0");
        if let Some(i) = &self.instance {
            cmd.arg("--instance").arg(i);
        }
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("JOBHOST_") {
                cmd.env_remove(k);
            }
        }
        cmd.env(STATE_VAR, &self.sb.state)
            .env("TMPDIR", &self.sb.tmp)
            .env("JOBHOST_LOG", "info")
            .current_dir(&self.sb.root)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("creating host stdout file"))
            .stderr(fs::File::create(&stderr).expect("creating host stderr file"));
        die_with_test(&mut cmd);
        cmd
    }

    /// Starts `jobhost run`; panics if this host is already running.
    pub fn start(&mut self) {
        self.start_with(|_| {});
    }

    /// Runs `jobhost run` expecting it to exit by itself (bad arguments, unusable
    /// folders). Returns the exit status and its stderr.
    pub fn run_to_exit(&mut self) -> (ExitStatus, String) {
        self.run_to_exit_with(|_| {})
    }

    /// The host's exit status if it has exited (it is reaped then), else `None`.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(s) => s,
            Err(e) => panic!("waiting for the host: {e}"),
        }
    }

    /// Sends `sig` to the host.
    pub fn signal(&self, sig: Signal) {
        let pid = self.pid().expect("host not running");
        kill(Pid::from_raw(pid), sig).expect("signalling the host");
    }

    /// SIGTERM, then waits for the host to exit (generous deadline); returns its status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let mut child = self.child.take().expect("host not running");
        match wait_child(&mut child, Duration::from_secs(40)) {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the host did not exit within 40 s of SIGTERM\n{}",
                    self.sb.dump()
                );
            }
        }
    }

    /// Stops the host, asserts it exited 0 and that nothing it started is left.
    pub fn finish(&mut self) {
        let status = self.stop();
        assert_eq!(
            status.code(),
            Some(0),
            "host exit status after SIGTERM: {status:?}\n{}",
            self.sb.dump()
        );
        self.sb.wait_no_leftovers();
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (SIGTERM, exit 0 expected) and starts the host again.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert_eq!(status.code(), Some(0), "host exit status: {status:?}");
        self.start();
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The host dies with the test process even if that one is killed before any Drop
/// runs (nextest's timeout). The host's guardian then cleans up its runs.
fn die_with_test(cmd: &mut Command) {
    // SAFETY: runs between fork and exec in the child; prctl(2) is async-signal-safe
    // and the closure allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(e) => panic!("waiting for the host: {e}"),
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Describes an exit status for messages: code or signal.
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("code {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => "?".into(),
    }
}

// ----- other commands ------------------------------------------------------------------

/// Runs `jobhost ARGS...` to completion (bounded); returns exit code and stdout+stderr.
pub fn run_cli(args: &[OsString]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("JOBHOST_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("running jobhost");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

// ----- log lines -------------------------------------------------------------------------

/// One line of a job log, as docs/logs.md frames it:
/// `[2026-11-30T10:00:00.123Z > 9a2e7d: INFO] text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub id: String,
    /// `INFO`, `ERROR`, `SYS INFO` or `SYS ERROR`.
    pub label: String,
    pub text: Vec<u8>,
}

impl LogLine {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

const LABELS: [&str; 4] = ["SYS INFO", "SYS ERROR", "INFO", "ERROR"];

/// Parses one line (without its newline) strictly; `None` if it is not in the documented form.
pub fn parse_line(line: &[u8]) -> Option<LogLine> {
    let rest = line.strip_prefix(b"[")?;
    let ts = rest.get(..24)?;
    let ts = std::str::from_utf8(ts).ok()?;
    if !is_rfc3339_ms_z(ts) {
        return None;
    }
    let rest = rest[24..].strip_prefix(b" > ")?;
    let id = std::str::from_utf8(rest.get(..6)?).ok()?;
    if !id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let rest = rest[6..].strip_prefix(b": ")?;
    for label in LABELS {
        if let Some(after) = rest.strip_prefix(label.as_bytes())
            && let Some(text) = after.strip_prefix(b"] ")
        {
            return Some(LogLine {
                time: ts.to_owned(),
                id: id.to_owned(),
                label: label.to_owned(),
                text: text.to_vec(),
            });
        }
    }
    None
}

/// `2026-11-30T10:00:00.123Z`, and a real instant.
pub fn is_rfc3339_ms_z(ts: &str) -> bool {
    let pattern = b"dddd-dd-ddTdd:dd:dd.dddZ";
    ts.len() == pattern.len()
        && ts.bytes().zip(pattern.iter()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            _ => c == *p,
        })
        && chrono::DateTime::parse_from_rfc3339(ts).is_ok()
}

/// Splits a log into lines and parses each; panics naming the first line that is not
/// in the documented form. A missing final newline is a torn line, also a failure.
pub fn parse_log(bytes: &[u8]) -> Vec<LogLine> {
    if bytes.is_empty() {
        return Vec::new();
    }
    assert!(
        bytes.ends_with(b"\n"),
        "log does not end with a newline: {:?}",
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(200)..])
    );
    bytes[..bytes.len() - 1]
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| {
            parse_line(l).unwrap_or_else(|| {
                panic!(
                    "log line {} is not in the documented form `[RFC3339-ms-Z > 6hex: LABEL] text`: {:?}",
                    i + 1,
                    String::from_utf8_lossy(&l[..l.len().min(300)])
                )
            })
        })
        .collect()
}

/// Pids from the SYS INFO "started (pid N)" lines, in order.
pub fn started_pids(lines: &[LogLine]) -> Vec<i32> {
    lines
        .iter()
        .filter(|l| l.label == "SYS INFO")
        .filter_map(|l| {
            let t = l.text();
            let at = t.find("started (pid ")? + "started (pid ".len();
            let digits: String = t[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Texts of the lines with `label`.
pub fn texts(lines: &[LogLine], label: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.label == label)
        .map(LogLine::text)
        .collect()
}

/// A bash job that appends its pid to `$TEST_STATE/<tag>.pids`, prints `ready`, and
/// sleeps (dies at once on SIGTERM).
pub fn sleeper(tag: &str) -> String {
    format!("#!/bin/bash\necho $$ >> \"$TEST_STATE/{tag}.pids\"\necho ready\nexec sleep 100000\n")
}

// ----- commands run from elsewhere ------------------------------------------------------

/// A finished `jobhost` command run from `dir` with `env` added (and no other
/// JOBHOST_* variable): code, stdout, stderr.
pub fn run_cli_in(
    dir: &Path,
    args: &[OsString],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null()).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("JOBHOST_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    die_with_test(&mut cmd);
    let out = cmd.output().expect("running jobhost");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Pids of the processes that have `path` open, by /proc/PID/fd.
pub fn processes_holding(path: &Path) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l == path))
        {
            found.push(pid);
        }
    }
    found
}

// ----- hosts with a changed command (tests/integration/security.rs) -------------------

impl TestHost {
    /// Starts `jobhost run` after `tweak` has changed its command (environment,
    /// resource limits); panics if this host is already running.
    pub fn start_with(&mut self, tweak: impl FnOnce(&mut Command)) {
        assert!(self.child.is_none(), "host already running");
        let mut cmd = self.command();
        tweak(&mut cmd);
        self.child = Some(cmd.spawn().expect("starting jobhost run"));
    }

    /// `run_to_exit` after `tweak` has changed the command.
    pub fn run_to_exit_with(&mut self, tweak: impl FnOnce(&mut Command)) -> (ExitStatus, String) {
        let mut cmd = self.command();
        tweak(&mut cmd);
        let stderr = self.sb.root.join(format!(
            "host-{}-{}.stderr",
            self.instance.as_deref().unwrap_or("main"),
            self.starts
        ));
        let mut child = cmd.spawn().expect("starting jobhost run");
        match wait_child(&mut child, DEADLINE) {
            Some(s) => (s, read_lossy(&stderr)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "jobhost run was expected to exit by itself but kept running\n{}",
                    self.sb.dump()
                );
            }
        }
    }
}

// ----- golden files ------------------------------------------------------------------

/// Golden JSON files: the API's answers and the state files the host writes.
pub const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden");

/// How much of a golden file must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Golden {
    /// Keys, recursively, and value types (every array item against the first).
    Shape,
    /// The shape and every value (volatile values masked by the caller).
    Values,
}

fn bless() -> bool {
    std::env::var_os("JOBHOST_BLESS").is_some_and(|v| v == "1")
}

/// Checks `actual` (already normalised) against `tests/data/golden/NAME.json`; with
/// `JOBHOST_BLESS=1` rewrites that file from `actual` instead.
pub fn check_golden_file(name: &str, actual: &Value, mode: Golden) {
    if bless() {
        let path = Path::new(GOLDEN_DIR).join(format!("{name}.json"));
        fs::create_dir_all(GOLDEN_DIR).unwrap();
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        fs::write(&tmp, serde_json::to_string_pretty(actual).unwrap() + "\n").unwrap();
        fs::rename(&tmp, &path).unwrap();
        return;
    }
    assert_golden(name, actual, mode);
}

/// `check_golden_file` without blessing.
pub fn assert_golden(name: &str, actual: &Value, mode: Golden) {
    let path = Path::new(GOLDEN_DIR).join(format!("{name}.json"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading golden file {} ({e}): run the tests once with JOBHOST_BLESS=1 and review it",
            path.display()
        )
    });
    let golden: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("golden file {} is not JSON: {e}", path.display()));
    let mut diffs = Vec::new();
    golden_diff("$", &golden, actual, mode, &mut diffs);
    assert!(
        diffs.is_empty(),
        "the `{name}` JSON differs from {}:\n  {}\nactual:\n{actual:#}\n\
         (if the change is intended: rerun with JOBHOST_BLESS=1 and review the diff)",
        path.display(),
        diffs.join("\n  ")
    );
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn golden_diff(at: &str, golden: &Value, actual: &Value, mode: Golden, out: &mut Vec<String>) {
    match (golden, actual) {
        (Value::Object(g), Value::Object(a)) => {
            for k in g.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{at}.{k}: missing"));
            }
            for k in a.keys().filter(|k| !g.contains_key(*k)) {
                out.push(format!("{at}.{k}: not in the golden file"));
            }
            for (k, gv) in g {
                if let Some(av) = a.get(k) {
                    golden_diff(&format!("{at}.{k}"), gv, av, mode, out);
                }
            }
        }
        (Value::Array(g), Value::Array(a)) if mode == Golden::Values => {
            if g.len() != a.len() {
                out.push(format!(
                    "{at}: golden has {} items, the file {}",
                    g.len(),
                    a.len()
                ));
            }
            for (i, (gv, av)) in g.iter().zip(a).enumerate() {
                golden_diff(&format!("{at}[{i}]"), gv, av, mode, out);
            }
        }
        (Value::Array(g), Value::Array(a)) => {
            if let Some(g0) = g.first() {
                for (i, av) in a.iter().enumerate() {
                    golden_diff(&format!("{at}[{i}]"), g0, av, mode, out);
                }
            }
        }
        _ if type_name(golden) != type_name(actual) => out.push(format!(
            "{at}: golden {} but the answer has {} ({actual})",
            type_name(golden),
            type_name(actual)
        )),
        _ if mode == Golden::Values && golden != actual => {
            out.push(format!("{at}: golden {golden} but the file has {actual}"))
        }
        _ => {}
    }
}

/// Every RFC 3339 time in `s` (`2026-11-30T10:00:00.123Z`, `...+01:00`) becomes
/// `TIME`.
pub fn replace_times(s: &str) -> String {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| {
        b.get(from..from + n)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let mut out = String::new();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let head = digits(i, 4)
            && at(i + 4, b'-')
            && digits(i + 5, 2)
            && at(i + 7, b'-')
            && digits(i + 8, 2)
            && at(i + 10, b'T')
            && digits(i + 11, 2)
            && at(i + 13, b':')
            && digits(i + 14, 2)
            && at(i + 16, b':')
            && digits(i + 17, 2);
        if !head {
            i += 1;
            continue;
        }
        let mut j = i + 19;
        if at(j, b'.') {
            j += 1;
            while digits(j, 1) {
                j += 1;
            }
        }
        if at(j, b'Z') {
            j += 1;
        } else if (at(j, b'+') || at(j, b'-'))
            && digits(j + 1, 2)
            && at(j + 3, b':')
            && digits(j + 4, 2)
        {
            j += 6;
        } else {
            i += 1;
            continue;
        }
        out.push_str(&s[copied..i]);
        out.push_str("TIME");
        copied = j;
        i = j;
    }
    out.push_str(&s[copied..]);
    out
}

/// Every run of exactly 18 digits becomes `RUN_ID`.
pub fn replace_run_ids(s: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in s.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if digits.len() == 18 {
            out.push_str("RUN_ID");
        } else {
            out.push_str(&digits);
        }
        digits.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}
