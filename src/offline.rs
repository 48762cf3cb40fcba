//! `jobhost logs` without a host: the log files are plain files in LOGS, so when no
//! host answers where LOGS says one runs, the CLI reads them itself. A continuous
//! job's `job_log.txt` (this instance's `job_log-NAME.txt` first), a triggered job's
//! `RUN_ID/output_log.txt` (the latest run unless `--run`). Following needs a host:
//! the host is what rotates the file and ends a run, so `-f` says so instead.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::client::Endpoint;
use crate::layout::LogsLayout;
use crate::spec::JobType;

/// Prints a job's log from LOGS. `unreachable` is why the host was not asked.
pub fn logs(
    ep: &Endpoint,
    name: &str,
    run: Option<&str>,
    follow: bool,
    lines: Option<usize>,
    unreachable: &anyhow::Error,
) -> anyhow::Result<i32> {
    let logs_abs = std::path::absolute(&ep.logs).unwrap_or_else(|_| ep.logs.clone());
    if follow {
        bail!(
            "{unreachable:#}. Following a log needs the host; without -f, `jobhost logs {name}` prints the log files in {} directly",
            logs_abs.display()
        );
    }
    let layout = LogsLayout::new(ep.logs.clone(), ep.instance.clone());
    // A name that is not a job name (`../x`) must not walk out of LOGS.
    let local = crate::spec::name::is_valid(name);
    let cont = layout.job_dir(JobType::Continuous, name);
    let trig = layout.job_dir(JobType::Triggered, name);
    let path = if local && cont.is_dir() && (run.is_none() || !trig.is_dir()) {
        if run.is_some() {
            bail!("{name} is a continuous job: it has one log, --run is for triggered jobs");
        }
        let own = layout.job_log(name, false);
        if own.exists() {
            own
        } else {
            // A singleton's log carries no instance name.
            layout.job_log(name, true)
        }
    } else if local && trig.is_dir() {
        run_output(&trig, name, run)?
    } else {
        let jobs = local_jobs(&layout);
        let why = crate::suggest::explain_unknown(name, None, "logs", &jobs)
            .unwrap_or_else(|| format!("no job named {name}"));
        bail!(
            "{unreachable:#}. Read directly instead, {} has no logs of it: {why}",
            logs_abs.display()
        );
    };
    eprintln!(
        "note: no host answers at {} ({}); reading {} directly",
        ep.url,
        ep.url_from,
        std::path::absolute(&path).unwrap_or(path.clone()).display()
    );
    print_file(&path, lines)?;
    Ok(0)
}

/// The output file of run `run`, or of the latest run.
fn run_output(dir: &Path, name: &str, run: Option<&str>) -> anyhow::Result<PathBuf> {
    let id = match run {
        Some(id) => {
            if !crate::job::triggered::records::is_run_id(id) {
                bail!("`{id}` is not a run id (18 digits): jobhost history {name} lists them");
            }
            if !dir.join(id).is_dir() {
                bail!("{name} has no run {id} in {}", dir.display());
            }
            id.to_string()
        }
        None => match crate::job::triggered::records::latest(dir) {
            Some(r) => r.id,
            None => bail!("{name} has no runs yet (nothing in {})", dir.display()),
        },
    };
    Ok(dir.join(id).join(crate::layout::RUN_OUTPUT))
}

/// The jobs LOGS has folders for, to suggest a name.
fn local_jobs(layout: &LogsLayout) -> Vec<(String, JobType)> {
    let mut jobs = Vec::new();
    for t in JobType::ALL {
        let dir = layout.root.join(t.as_str());
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().is_dir()
                && let Some(n) = e.file_name().to_str()
            {
                jobs.push((n.to_string(), t));
            }
        }
    }
    jobs
}

/// Copies the file (its last `lines` lines when asked) to stdout. A log not written
/// yet prints nothing, as the host's API does.
fn print_file(path: &Path, lines: Option<usize>) -> anyhow::Result<()> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let start = lines.map_or(0, |n| crate::api::follow::tail_offset(path, n));
    f.seek(SeekFrom::Start(start))
        .with_context(|| format!("reading {}", path.display()))?;
    crate::client::copy_to_stdout(&mut f).with_context(|| format!("reading {}", path.display()))
}
