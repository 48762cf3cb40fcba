//! The command line. `run` and `check` work on folders; every other command talks to
//! a running host over its HTTP API (see client.rs).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::client;
use crate::host::{self, HostOptions};

/// The environment variables, listed under `jobhost --help`.
const ENVIRONMENT: &str = "\
Environment:
  JOBHOST_JOBS      the jobs folder, as --jobs (default: ./jobs)
  JOBHOST_LOGS      the logs folder, as --logs (default: ./logs)
  JOBHOST_LISTEN    the API's address for `run`, as --listen (default: 127.0.0.1:7070)
  JOBHOST_INSTANCE  this host's name when several hosts share LOGS, as --instance
  JOBHOST_URL       the host's API for client commands, as --url
                    (default: what the host wrote into LOGS/.jobhost-url)
  JOBHOST_TOKEN     the API token: `run` uses it instead of generating LOGS/.jobhost-token;
                    client commands send it instead of reading LOGS/.jobhost-token
  JOBHOST_LOG       jobhost's own log level, e.g. debug (libraries stay at warn); a full
                    filter such as `info,notify=debug` is taken as written
                    (default: warn,jobhost=info)
  JOBHOST_CLIENT_TIMEOUT_MS  how long the API waits for a client's headers, an idle
                    keep-alive connection or a paused request body (default: 10000)

Exit codes: 0 ok, 1 failed operation, 2 bad usage.
`jobhost help COMMAND` explains a command and each of its flags.";

#[derive(Debug, Parser)]
#[command(
    name = "jobhost",
    version,
    about = "A directory-driven background job host",
    after_help = ENVIRONMENT
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host in the foreground: start every job in JOBS, log into LOGS, serve the API.
    Run {
        /// The jobs folder (continuous/ and triggered/ inside); created if missing.
        #[arg(long, env = "JOBHOST_JOBS", default_value = "jobs", value_name = "DIR")]
        jobs: PathBuf,
        /// The logs folder: job logs, status files, the host log, the API token and
        /// address; created if missing. One host per folder unless each has --instance.
        #[arg(long, env = "JOBHOST_LOGS", default_value = "logs", value_name = "DIR")]
        logs: PathBuf,
        /// Address of the HTTP API and dashboard (port 0 picks a free port).
        #[arg(
            long,
            env = "JOBHOST_LISTEN",
            default_value = "127.0.0.1:7070",
            value_name = "ADDR"
        )]
        listen: String,
        /// This host's name when several hosts share JOBS and LOGS (a distinct name
        /// for each host).
        #[arg(long, env = "JOBHOST_INSTANCE", value_name = "NAME")]
        instance: Option<String>,
    },
    /// Validate every job offline; print the next 3 fire times; exit 1 on any error.
    Check {
        /// The jobs folder to check (continuous/ and triggered/ inside).
        #[arg(long, env = "JOBHOST_JOBS", default_value = "jobs", value_name = "DIR")]
        jobs: PathBuf,
    },
    /// Jobs with type, status, schedule, next fire and last run.
    List {
        /// Print the host's JSON (Kudu's fields) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One job in detail, including why it is not running.
    Status {
        /// The job's name (its folder's name).
        name: String,
        /// Print the host's JSON job object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a continuous job (removes its disable.job).
    Start {
        /// The continuous job's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a continuous job and keep it stopped (creates its disable.job).
    Stop {
        /// The continuous job's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a run of a triggered job now; arguments after `--` become its argv.
    Trigger {
        /// The triggered job's name.
        name: String,
        /// Stream the run's output and exit with its exit code.
        #[arg(long)]
        wait: bool,
        /// Arguments for the run, after `--` (e.g. `jobhost trigger report -- --day 3`).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<std::ffi::OsString>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print or follow a job's log (a triggered job's latest run unless --run).
    ///
    /// When no host answers where LOGS says one runs, prints the log files in LOGS
    /// directly (following needs the host).
    Logs {
        /// The job's name.
        name: String,
        /// A triggered job's run id (18 digits, see `jobhost history NAME`).
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// Keep streaming new lines (across log rotation and job restarts); needs the host.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A triggered job's runs, newest first.
    History {
        /// The triggered job's name.
        name: String,
        /// Print the host's JSON (`{"runs": [...]}`) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a triggered run (default: the one going); it ends Aborted.
    Cancel {
        /// The triggered job's name.
        name: String,
        /// The run to stop (default: the run going now).
        run_id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Internal: the process that cleans up after the host (see runner/guardian.rs).
    #[command(name = "__guardian", hide = true)]
    Guardian { host_id: String, scratch: PathBuf },
}

/// How a client command finds the host.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The host's API, e.g. http://127.0.0.1:7070 (default: the address the host wrote
    /// into LOGS/.jobhost-url, else http://127.0.0.1:7070).
    #[arg(long, env = "JOBHOST_URL")]
    url: Option<String>,
    /// The host's logs folder: the CLI reads the host's address and token there.
    #[arg(long, env = "JOBHOST_LOGS", default_value = "logs", value_name = "DIR")]
    logs: PathBuf,
    /// The host's instance name, when several hosts share LOGS.
    #[arg(long, env = "JOBHOST_INSTANCE", value_name = "NAME")]
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
            crate::runner::guardian::run(&host_id, &scratch);
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_and_argument_of_every_command_has_help_text() {
        let cli = Cli::command();
        for sub in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
            assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some_and(|h| h.to_string().len() > 10),
                    "jobhost {} {id}: no help text",
                    sub.get_name()
                );
            }
        }
    }

    #[test]
    fn the_help_lists_every_environment_variable_the_commands_read() {
        let cli = Cli::command();
        let mut envs: Vec<String> = cli
            .get_subcommands()
            .flat_map(|c| c.get_arguments())
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        envs.extend(
            ["JOBHOST_TOKEN", "JOBHOST_LOG", "JOBHOST_CLIENT_TIMEOUT_MS"].map(String::from),
        );
        for e in envs {
            assert!(
                ENVIRONMENT.contains(&format!("  {e} ")),
                "{e} is missing from --help"
            );
        }
    }
}
