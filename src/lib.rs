//! jobhost: a directory-driven background job host.
//!
//! # Theory of operation
//!
//! ```text
//!  inotify ─▶ watch ──hint──▶ supervisor ──reconcile──▶ one task per job (job::continuous)
//!                             (rescan JOBS: scan)         │ start / stop / restart
//!                                                         ▼
//!                                                    runner (process group, env,
//!                                                    private copy, stop sequence)
//!                                                         │ stdout/stderr pipes
//!                                                         ▼
//!                                  runner::pump ─▶ logsink (frame, rotate) ─▶ job_log.txt
//!                                  job task     ─▶ fsutil (tmp + rename)   ─▶ status.json
//! ```
//!
//! Who owns what:
//! - The **supervisor** owns the registry of job tasks. It never touches a process;
//!   it rescans JOBS on a hint and sends each task its newest definition.
//! - A **job task** owns its run, timers, singleton lock, log sink and status. Its
//!   decisions are a pure machine (`job::*::state`: state + input + now → effects);
//!   the task performs the effects and reaches processes only through
//!   `runner::Processes`. Others read its status through a `watch` channel.
//! - The **API** translates HTTP into calls: reads from the registry, writes through
//!   the supervisor (which rescans the job at once, so the next request sees them).
//! - The **reaper** owns `waitpid`: the host is a child subreaper, so orphaned
//!   grandchildren are reaped there too, and exits are routed to the run that waits.
//! - The **guardian** (a separate process) owns the cleanup after the host dies.
//!
//! Shutdown: SIGTERM/SIGINT cancels one token; every job task runs its stop sequence
//! in parallel; the host waits for all of them (a second signal kills at once), then
//! exits, which closes the guardian's pipe; the guardian sweeps and removes scratch.

pub mod api;
pub mod argv;
pub mod check;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod coord;
pub mod fsutil;
pub mod host;
pub mod hostlock;
pub mod hostlog;
pub mod ids;
pub mod job;
pub mod layout;
pub mod logsink;
pub mod metrics;
pub mod offline;
pub mod queue;
pub mod runner;
pub mod scan;
pub mod schedule;
pub mod spec;
pub mod status;
pub mod suggest;
pub mod supervisor;
pub mod watch;
