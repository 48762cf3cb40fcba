//! The command line. `run` and `check` work on folders; every other command talks to
//! a running host over its HTTP API (see client.rs).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::client;
use crate::host::{self, HostOptions};
use crate::queue::MessageState;

/// The environment variables, listed under `jobhost --help`.
const ENVIRONMENT: &str = "\
Environment:
  JOBHOST_JOBS      the jobs folder, as --jobs (default: ./jobs)
  JOBHOST_LOGS      the logs folder, as --logs (default: ./logs)
  JOBHOST_LISTEN    the API's address for `run`, as --listen (default: 127.0.0.1:7070)
  JOBHOST_INSTANCE  this host's name when several hosts share LOGS, as --instance
  JOBHOST_STORE     the cluster store for `run`, as --store (postgres://USER@HOST/DB)
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
        /// Join the cluster of hosts sharing this PostgreSQL store
        /// (postgres://USER@HOST/DB, docs/cluster.md); the host's name is then
        /// --instance, or the machine's hostname.
        #[arg(long, env = "JOBHOST_STORE", value_name = "URL")]
        store: Option<String>,
        /// Seconds a host of the cluster may be silent before the others count it as
        /// dead (its heartbeat comes every 2 s).
        #[arg(long, default_value_t = 10, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(3..=3600))]
        lease_ttl: u64,
    },
    /// The hosts of this host's cluster, with address, version and last heartbeat.
    Hosts {
        /// Print the host's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
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
    /// Put a message on a triggered job's queue; prints its id.
    ///
    /// The job needs a `queue` object in its settings.job. PAYLOAD is the text itself,
    /// `@FILE` for a file's bytes, `-` (or nothing) for stdin.
    #[command(
        after_help = "Examples:\n  jobhost enqueue resize @photo.jpg --content-type image/jpeg\n  echo '{\"order\": 42}' | jobhost enqueue invoice - --key order-42 --wait"
    )]
    Enqueue {
        /// The triggered job's name.
        name: String,
        /// The payload: the text itself, @FILE for a file's bytes, - (or nothing) for stdin.
        #[arg(value_name = "PAYLOAD", allow_hyphen_values = true)]
        payload: Option<String>,
        /// Idempotency key: a message with a key already seen (within the job's
        /// dedupe_window) is not stored again; the first one's id is printed.
        #[arg(long, value_name = "K")]
        key: Option<String>,
        /// Priority: higher runs first (default 0; negative allowed).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        priority: Option<i64>,
        /// Run no sooner than SECONDS from now (decimals allowed).
        #[arg(long, value_name = "SECONDS", value_parser = parse_delay, conflicts_with = "not_before")]
        delay: Option<f64>,
        /// Run no sooner than this time (RFC 3339, e.g. 2026-12-01T08:00:00Z).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        not_before: Option<String>,
        /// Your own id for the message, given to its run as WEBJOBS_CORRELATION_ID.
        #[arg(long, value_name = "ID")]
        correlation_id: Option<String>,
        /// Callback URL (http or https) told the outcome when the message finishes
        /// (default: the job's queue.reply_to).
        #[arg(long, value_name = "URL")]
        reply_to: Option<String>,
        /// A name for the message, given to its run as WEBJOBS_MESSAGE_NAME.
        #[arg(long = "name", value_name = "NAME")]
        name_: Option<String>,
        /// The payload's content type, kept with it (e.g. application/json).
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
        /// Wait for the message: stream its runs' logs to stderr, print its result to
        /// stdout, exit 0 when it succeeded, 1 when it went dead or was cancelled.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A triggered job's messages, newest first.
    Messages {
        /// The triggered job's name.
        name: String,
        /// Only messages in this state: Queued, Running, Succeeded, Dead or Cancelled.
        #[arg(long, value_name = "S", value_parser = parse_state)]
        state: Option<MessageState>,
        /// How many (default 50, at most 1000).
        #[arg(short = 'n', long = "limit", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: Option<u64>,
        /// Print the host's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One message in detail: state, attempts, last error, runs, result.
    Message {
        /// The triggered job's name.
        name: String,
        /// The message's id (see `jobhost messages NAME`).
        id: String,
        /// Print the host's JSON message object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Put a finished message (or every Dead one) back on the queue, attempts reset.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "dead", "state"])))]
    Requeue {
        /// The triggered job's name.
        name: String,
        /// The message to requeue (Succeeded, Dead or Cancelled).
        id: Option<String>,
        /// Every Dead message instead of one.
        #[arg(long)]
        dead: bool,
        /// Every message in this finished state instead of one (Dead, Succeeded, Cancelled).
        #[arg(long, value_name = "S", value_parser = parse_state)]
        state: Option<MessageState>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete every Dead message of a job (or every message in another state).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["dead", "state"])))]
    Purge {
        /// The triggered job's name.
        name: String,
        /// Delete the Dead messages.
        #[arg(long)]
        dead: bool,
        /// Delete the messages in this state instead (Dead, Succeeded, Cancelled, Queued).
        #[arg(long, value_name = "S", value_parser = parse_state)]
        state: Option<MessageState>,
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

/// `--state`: a message state, in any case.
fn parse_state(s: &str) -> Result<MessageState, String> {
    MessageState::parse(s).ok_or_else(|| {
        let names: Vec<&str> = MessageState::ALL.iter().map(|m| m.as_str()).collect();
        format!(
            "`{s}` is not a message state: use one of {}",
            names.join(", ")
        )
    })
}

/// `--delay`: seconds, 0 to ten years, decimals allowed.
fn parse_delay(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && (0.0..=10.0 * 365.25 * 86_400.0).contains(d))
        .ok_or_else(|| {
            format!("`{s}` is not a delay: give seconds from 0 to ten years, e.g. 30 or 0.5")
        })
}

/// `--not-before`: an RFC 3339 time, passed on as written.
fn parse_time(s: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|_| s.trim().to_string())
        .map_err(|e| format!("`{s}` is not an RFC 3339 time such as 2026-12-01T08:00:00Z ({e})"))
}

/// The machine's hostname, as a host name in the cluster.
fn hostname() -> anyhow::Result<String> {
    let name = nix::unistd::gethostname()
        .map_err(|e| anyhow::anyhow!("reading the hostname: {e}; pass --instance NAME"))?;
    name.into_string()
        .map_err(|_| anyhow::anyhow!("the hostname is not UTF-8: pass --instance NAME"))
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run {
            jobs,
            logs,
            listen,
            instance,
            store,
            lease_ttl,
        } => {
            // In a cluster every host has a name: the machine's, unless given.
            let instance = match (&store, instance) {
                (Some(_), None) => Some(hostname()?),
                (_, instance) => instance,
            };
            host::run(HostOptions {
                jobs,
                logs,
                listen,
                instance,
                store,
                lease_ttl: std::time::Duration::from_secs(lease_ttl),
            })
        }
        Command::Hosts { json, client } => client::hosts(&client.api()?, json),
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
        Command::Enqueue {
            name,
            payload,
            key,
            priority,
            delay,
            not_before,
            correlation_id,
            reply_to,
            name_,
            content_type,
            wait,
            client,
        } => {
            let opts = client::EnqueueOptions {
                key,
                priority,
                delay,
                not_before,
                correlation_id,
                reply_to,
                name: name_,
                content_type,
            };
            let source = client::PayloadSource::parse(payload.as_deref());
            client::enqueue(&client.api()?, &name, &source, &opts, wait)
        }
        Command::Messages {
            name,
            state,
            limit,
            json,
            client,
        } => client::messages(
            &client.api()?,
            &name,
            state,
            limit.map(|l| l as usize),
            json,
        ),
        Command::Message {
            name,
            id,
            json,
            client,
        } => client::show_message(&client.api()?, &name, &id, json),
        Command::Requeue {
            name,
            id,
            dead,
            state,
            client,
        } => {
            let which = match (id, dead, state) {
                (Some(id), _, _) => client::Which::One(id),
                (None, true, _) => client::Which::State(MessageState::Dead),
                (None, false, Some(s)) => client::Which::State(s),
                // clap's group requires one of the three.
                (None, false, None) => client::Which::State(MessageState::Dead),
            };
            client::requeue(&client.api()?, &name, &which)
        }
        Command::Purge {
            name,
            dead,
            state,
            client,
        } => {
            let state = match (dead, state) {
                (true, _) | (false, None) => MessageState::Dead,
                (false, Some(s)) => s,
            };
            client::purge(&client.api()?, &name, state)
        }
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
