//! A read of `/proc`: which live processes belong to a run.
//!
//! A run is found two ways. Its process group catches everything that stayed in it;
//! the run's marker variable (`JOBHOST_RUN_MARK`, inherited through fork and exec)
//! catches the processes that called `setsid` or `setpgid` to leave it. Only a process
//! that both left the group and wiped its environment escapes both, which the README
//! names as a limit.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

/// The environment variable every run carries; its value is `HOSTID/RUNTOKEN`.
pub const MARK_VAR: &str = "JOBHOST_RUN_MARK";

/// Which processes to look for.
#[derive(Debug, Clone)]
pub struct Membership<'a> {
    /// Process groups whose members belong (a run's group id is its leader's pid).
    pub groups: &'a [i32],
    /// A prefix of the marker value: `HOSTID/RUNTOKEN` for one run, `HOSTID/` for a host.
    pub mark_prefix: &'a str,
}

/// Live (not zombie) processes that belong, never including the caller itself.
/// Reads every process's environment: for the guardian, after the host is gone and
/// the process tree no longer leads to the runs.
pub fn members(m: &Membership<'_>) -> Vec<Pid> {
    let me = std::process::id() as i32;
    let needle = format!("{MARK_VAR}={}", m.mark_prefix);
    live_pids()
        .filter(|&(pid, _, pgid)| {
            pid != me && (m.groups.contains(&pgid) || environ_has(pid, needle.as_bytes()))
        })
        .map(|(pid, _, _)| Pid::from_raw(pid))
        .collect()
}

/// `(pid, ppid, pgid)` of every process in /proc that is not a zombie.
fn live_pids() -> impl Iterator<Item = (i32, i32, i32)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let (state, ppid, pgid) = stat_full(pid)?;
            (state != 'Z' && state != 'X').then_some((pid, ppid, pgid))
        })
}

/// Every live process's parent and group, from one pass over `/proc/*/stat`.
///
/// A run's processes are its leader's subtree, plus orphans of it that the kernel
/// reparented to the host (we are a subreaper) and that carry the run's marker. So a
/// run is found from the tree and a few environment reads, not by reading the
/// environment of every process on the machine for every run.
#[derive(Debug, Default)]
pub struct Tree {
    /// pid -> (ppid, pgid)
    procs: HashMap<i32, (i32, i32)>,
    children: HashMap<i32, Vec<i32>>,
}

/// How long a tree read may be reused. Stopping a hundred runs at once then costs a
/// few reads of /proc instead of hundreds; anything forked after the read is caught
/// by the next pass of the stop sequence, which looks again until nothing is left.
const TREE_TTL: Duration = Duration::from_millis(25);

static CACHE: Mutex<Option<(Instant, Arc<Tree>)>> = Mutex::new(None);

impl Tree {
    pub fn read() -> Tree {
        let mut t = Tree::default();
        for (pid, ppid, pgid) in live_pids() {
            t.procs.insert(pid, (ppid, pgid));
            t.children.entry(ppid).or_default().push(pid);
        }
        t
    }

    /// A recent read, shared by everyone who asks within [`TREE_TTL`].
    pub fn recent() -> Arc<Tree> {
        Tree::read_after(Instant::now() - TREE_TTL)
    }

    /// A read taken after `t` (shared if one is cached), e.g. after a process exited.
    pub fn read_after(t: Instant) -> Arc<Tree> {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, tree)) = cache.as_ref()
            && *at >= t
            && at.elapsed() < TREE_TTL
        {
            return tree.clone();
        }
        let tree = Arc::new(Tree::read());
        *cache = Some((Instant::now(), tree.clone()));
        tree
    }

    fn subtree(&self, root: i32, out: &mut Vec<i32>, seen: &mut HashSet<i32>) {
        let mut stack = vec![root];
        while let Some(p) = stack.pop() {
            if !seen.insert(p) {
                continue;
            }
            if self.procs.contains_key(&p) {
                out.push(p);
            }
            if let Some(kids) = self.children.get(&p) {
                stack.extend(kids.iter().copied());
            }
        }
    }

    /// The live processes of the run led by `leader` (its group id) in the host `host`:
    /// the leader's subtree, members of its group, and the subtrees of the host's
    /// other children that carry `mark` (orphans reparented to the host). `skip` are
    /// host children known not to be orphans (other runs' leaders, the guardian).
    pub fn run_members(&self, host: i32, leader: i32, mark: &str, skip: &HashSet<i32>) -> Vec<Pid> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.subtree(leader, &mut out, &mut seen);
        let needle = format!("{MARK_VAR}={mark}");
        for &child in self.children.get(&host).into_iter().flatten() {
            if child == leader || skip.contains(&child) || seen.contains(&child) {
                continue;
            }
            if environ_has(child, needle.as_bytes()) {
                self.subtree(child, &mut out, &mut seen);
            }
        }
        for (&pid, &(_, pgid)) in &self.procs {
            if pgid == leader && seen.insert(pid) {
                out.push(pid);
            }
        }
        let me = std::process::id() as i32;
        out.retain(|&p| p != me);
        out.into_iter().map(Pid::from_raw).collect()
    }
}

/// The host's direct children as its main thread sees them, which is where the kernel
/// reparents orphans of a subreaper (the first live thread of the process). `None`
/// where the kernel does not offer the list (`CONFIG_PROC_CHILDREN`).
pub fn host_children() -> Option<Vec<i32>> {
    use std::os::unix::fs::FileExt;
    // Opened once and read from the start each time (a read at offset 0 makes the
    // kernel list them anew): asked at the end of every run.
    static FILE: std::sync::OnceLock<Option<fs::File>> = std::sync::OnceLock::new();
    let file = FILE
        .get_or_init(|| {
            let me = std::process::id();
            fs::File::open(format!("/proc/{me}/task/{me}/children")).ok()
        })
        .as_ref()?;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let len = file.read_at(&mut buf, all.len() as u64).ok()?;
        all.extend_from_slice(&buf[..len]);
        // A short read is the end: the list is a few pids long.
        if len < buf.len() {
            return Some(parse_pids(&all));
        }
    }
}

fn parse_pids(text: &[u8]) -> Vec<i32> {
    String::from_utf8_lossy(text)
        .split_ascii_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn stat_full(pid: i32) -> Option<(char, i32, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((state, ppid, pgid))
}

/// CPU time (user + system, in clock ticks) used so far by these processes.
pub fn cpu_ticks(pids: &[Pid]) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &text[text.rfind(')')? + 1..];
            // After the name: state(0) ppid pgrp session tty tpgid flags minflt cminflt
            // majflt cmajflt utime(11) stime(12).
            let f: Vec<&str> = rest.split_ascii_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn environ_has(pid: i32, needle: &[u8]) -> bool {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    env.split(|b| *b == 0).any(|var| var.starts_with(needle))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn finds_a_marked_child_and_ignores_the_rest() {
        let mark = format!("testhost{}/run1", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARK_VAR, &mark)
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        // Until the child has exec'd, its environment is still a copy of ours.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let found = loop {
            let found = members(&Membership {
                groups: &[],
                mark_prefix: &mark,
            });
            if !found.is_empty() || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let other = members(&Membership {
            groups: &[],
            mark_prefix: "nobody-has-this/",
        });
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, vec![pid]);
        assert!(other.is_empty());
    }

    #[test]
    fn the_tree_finds_a_subtree_and_a_marked_orphan_but_not_strangers() {
        let me = std::process::id() as i32;
        let mark = format!("treetest{me}/run");
        // `sh` is the run's leader with a sleeping child; a second, marked `sleep` is a
        // child of ours standing in for an orphan reparented to the host.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let mut orphan = std::process::Command::new("sleep")
            .arg("30")
            .env(MARK_VAR, &mark)
            .spawn()
            .unwrap();
        let mut stranger = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let lid = leader.id() as i32;
        let mut found = Vec::new();
        for _ in 0..200 {
            found = Tree::read().run_members(me, lid, &mark, &HashSet::new());
            if found.len() >= 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = nix::sys::signal::killpg(Pid::from_raw(lid), nix::sys::signal::Signal::SIGKILL);
        for c in [&mut leader, &mut orphan, &mut stranger] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let found: HashSet<i32> = found.into_iter().map(Pid::as_raw).collect();
        assert!(found.contains(&lid));
        assert!(found.contains(&(orphan.id() as i32)));
        assert!(!found.contains(&(stranger.id() as i32)));
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn stat_parses_names_with_parentheses() {
        let (state, ppid, pgid) = stat_full(std::process::id() as i32).unwrap();
        assert!(state.is_ascii_alphabetic());
        assert!(ppid > 0 && pgid > 0);
    }
}
