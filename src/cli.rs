//! The command line. `run` and `check` work on folders; every other command talks to
//! a running host over its HTTP API (see client.rs).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::client;
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
    /// Jobs with type, status, schedule, next fire and last run.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One job in detail, including why it is not running.
    Status {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a continuous job (removes its disable.job).
    Start {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a continuous job and keep it stopped (creates its disable.job).
    Stop {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a run of a triggered job now; arguments after `--` become its argv.
    Trigger {
        name: String,
        /// Stream the run's output and exit with its exit code.
        #[arg(long)]
        wait: bool,
        #[arg(last = true)]
        args: Vec<std::ffi::OsString>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print or follow a job's log (a triggered job's latest run unless --run).
    Logs {
        name: String,
        #[arg(long)]
        run: Option<String>,
        /// Keep streaming new lines (across log rotation and job restarts).
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long = "lines")]
        lines: Option<usize>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A triggered job's runs, newest first.
    History {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a triggered run (default: the one going); it ends Aborted.
    Cancel {
        name: String,
        run_id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Internal: the process that cleans up after the host (see guardian.rs).
    #[command(name = "__guardian", hide = true)]
    Guardian { host_id: String, scratch: PathBuf },
}

/// How a client command finds the host.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The host's API, e.g. http://127.0.0.1:7070 (default: what the host on this
    /// machine wrote into LOGS, else http://127.0.0.1:7070).
    #[arg(long, env = "JOBHOST_URL")]
    url: Option<String>,
    /// The host's logs folder, where its token (and address) are.
    #[arg(long, env = "JOBHOST_LOGS", default_value = "logs")]
    logs: PathBuf,
    /// The host's instance name, when several share LOGS.
    #[arg(long, env = "JOBHOST_INSTANCE")]
    instance: Option<String>,
}

impl ClientArgs {
    fn api(self) -> anyhow::Result<client::Api> {
        client::Api::new(client::Endpoint::resolve(
            self.url,
            &self.logs,
            self.instance.as_deref(),
        ))
    }
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
        Command::List { json, client } => client::list(&client.api()?, json),
        Command::Status { name, json, client } => client::status(&client.api()?, &name, json),
        Command::Start { name, client } => client::switch(&client.api()?, &name, true),
        Command::Stop { name, client } => client::switch(&client.api()?, &name, false),
        Command::Trigger {
            name,
            wait,
            args,
            client,
        } => client::trigger(&client.api()?, &name, &args, wait),
        Command::Logs {
            name,
            run,
            follow,
            lines,
            client,
        } => client::logs(&client.api()?, &name, run.as_deref(), follow, lines),
        Command::History { name, json, client } => client::history(&client.api()?, &name, json),
        Command::Cancel {
            name,
            run_id,
            client,
        } => client::cancel(&client.api()?, &name, run_id.as_deref()),
        Command::Guardian { host_id, scratch } => {
            crate::guardian::run(&host_id, &scratch);
            Ok(0)
        }
    }
}
