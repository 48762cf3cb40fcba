//! The command line: `jobhost run` and `jobhost check` (the commands that talk to a
//! running host over HTTP come with the API).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::host::{self, HostOptions};

#[derive(Debug, Parser)]
#[command(
    name = "jobhost",
    version,
    about = "A directory-driven background job host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host in the foreground.
    Run {
        /// The jobs folder (continuous/ and triggered/ inside).
        #[arg(long, env = "JOBHOST_JOBS", default_value = "jobs")]
        jobs: PathBuf,
        /// The logs folder.
        #[arg(long, env = "JOBHOST_LOGS", default_value = "logs")]
        logs: PathBuf,
        /// Address of the HTTP API.
        #[arg(long, env = "JOBHOST_LISTEN", default_value = "127.0.0.1:7070")]
        listen: String,
        /// This host's name when several hosts share JOBS and LOGS.
        #[arg(long, env = "JOBHOST_INSTANCE")]
        instance: Option<String>,
    },
    /// Validate every job offline; print the next 3 fire times; exit 1 on any error.
    Check {
        #[arg(long, env = "JOBHOST_JOBS", default_value = "jobs")]
        jobs: PathBuf,
    },
    /// Internal: the process that cleans up after the host (see guardian.rs).
    #[command(name = "__guardian", hide = true)]
    Guardian { host_id: String, scratch: PathBuf },
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run {
            jobs,
            logs,
            listen,
            instance,
        } => host::run(HostOptions {
            jobs,
            logs,
            listen,
            instance,
        }),
        Command::Check { jobs } => {
            let mut out = std::io::stdout().lock();
            let sum = crate::check::check(&jobs, &mut out)?;
            Ok(if sum.errors > 0 { 1 } else { 0 })
        }
        Command::Guardian { host_id, scratch } => {
            crate::guardian::run(&host_id, &scratch);
            Ok(0)
        }
    }
}
