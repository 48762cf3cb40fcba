//! `jobhost check`: validates a jobs folder offline, as the host would read it.
//!
//! It prints one block per job (entry point, warnings, errors, and for triggered jobs
//! the schedule with its next three fire times) and a summary; the caller exits 1 when
//! anything is an error. Errors are the scan's structured problems, one line each in
//! the compiler form `FILE:LINE:COLUMN: key `KEY`: MESSAGE; FIX`, so the fix quotes
//! the settings table's example for the key.

use std::io::Write;
use std::path::Path;

use chrono::Utc;

use crate::scan::{self, JobDefinition};
use crate::spec::JobType;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub jobs: usize,
    pub errors: usize,
    pub warnings: usize,
}

pub fn check(jobs_root: &Path, out: &mut dyn Write) -> std::io::Result<Summary> {
    let mut sum = Summary::default();
    if !jobs_root.is_dir() {
        writeln!(
            out,
            "error  {}: the jobs folder does not exist (jobhost run creates it; or pass --jobs DIR)",
            jobs_root.display()
        )?;
        sum.errors += 1;
        return Ok(sum);
    }
    let scan = scan::scan(jobs_root, std::env::var_os("PATH").as_deref());
    for p in &scan.problems {
        writeln!(out, "error  {p}")?;
        sum.errors += 1;
    }
    for def in scan.jobs.values() {
        sum.jobs += 1;
        sum.errors += def.problems.len();
        sum.warnings += def.warnings.len();
        report(def, out)?;
    }
    writeln!(
        out,
        "{} job(s), {} error(s), {} warning(s)",
        sum.jobs, sum.errors, sum.warnings
    )?;
    Ok(sum)
}

fn report(def: &JobDefinition, out: &mut dyn Write) -> std::io::Result<()> {
    let id = format!("{}/{}", def.job_type.as_str(), def.name);
    let verdict = if def.problems.is_empty() {
        "ok   "
    } else {
        "error"
    };
    let command = def
        .launch
        .as_ref()
        .map(|l| l.display())
        .unwrap_or_else(|| "-".into());
    let disabled = if def.disabled { " (disabled)" } else { "" };
    writeln!(out, "{verdict}  {id}: {command}{disabled}")?;
    for p in &def.problems {
        writeln!(out, "       error: {p}")?;
    }
    for w in &def.warnings {
        writeln!(out, "       warning: {w}")?;
    }
    if def.job_type == JobType::Triggered
        && let Some(settings) = &def.settings
    {
        match &settings.schedule {
            None => writeln!(out, "       schedule: none (runs on demand only)")?,
            Some(s) => {
                let tz = s.timezone();
                writeln!(
                    out,
                    "       schedule: `{}` in {tz}: {}",
                    s.expr(),
                    s.describe()
                )?;
                let mut t = Utc::now();
                for _ in 0..3 {
                    let Some(next) = s.next_after(t) else { break };
                    writeln!(
                        out,
                        "       next: {}  ({})",
                        crate::fsutil::rfc3339_string(next),
                        next.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z")
                    )?;
                    t = next;
                }
            }
        }
    }
    Ok(())
}
