//! A read of `/proc`: which live processes belong to a run.
//!
//! A run is found two ways. Its process group catches everything that stayed in it;
//! the run's marker variable (`JOBHOST_RUN_MARK`, inherited through fork and exec)
//! catches the processes that called `setsid` or `setpgid` to leave it. Only a process
//! that both left the group and wiped its environment escapes both, which the README
//! names as a limit.

use std::fs;

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
pub fn members(m: &Membership<'_>) -> Vec<Pid> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let needle = format!("{MARK_VAR}={}", m.mark_prefix);
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some((state, pgid)) = stat_of(pid) else {
            continue;
        };
        if state == 'Z' || state == 'X' {
            continue;
        }
        if m.groups.contains(&pgid) || environ_has(pid, needle.as_bytes()) {
            found.push(Pid::from_raw(pid));
        }
    }
    found
}

/// CPU time (user + system, in clock ticks) used so far by the live members.
pub fn cpu_ticks(m: &Membership<'_>) -> u64 {
    members(m)
        .into_iter()
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

/// State letter and process group from `/proc/PID/stat`. The command name sits in
/// parentheses and may itself contain spaces and parentheses, so parse from the last `)`.
fn stat_of(pid: i32) -> Option<(char, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((state, pgid))
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

    #[test]
    fn finds_a_marked_child_and_ignores_the_rest() {
        let mark = format!("testhost{}/run1", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARK_VAR, &mark)
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let found = members(&Membership {
            groups: &[],
            mark_prefix: &mark,
        });
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
    fn stat_parses_names_with_parentheses() {
        let (state, pgid) = stat_of(std::process::id() as i32).unwrap();
        assert!(state.is_ascii_alphabetic());
        assert!(pgid > 0);
    }
}
