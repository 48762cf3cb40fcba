//! The one integration test binary: the real `jobhost` binary driven through its
//! folders, as users drive it. See `support` for the rules every test keeps (no
//! sleeping as synchronisation, nothing left running).

#![allow(clippy::unwrap_used)]

mod support;

#[path = "integration/api.rs"]
mod api;
#[path = "integration/bad_input.rs"]
mod bad_input;
#[path = "integration/browser.rs"]
mod browser;
#[path = "integration/check.rs"]
mod check;
#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/cli_polish.rs"]
mod cli_polish;
#[path = "integration/cluster.rs"]
mod cluster;
#[path = "integration/cluster_deploy.rs"]
mod cluster_deploy;
#[path = "integration/cluster_outage.rs"]
mod cluster_outage;
#[path = "integration/cluster_support.rs"]
mod cluster_support;
#[path = "integration/continuous.rs"]
mod continuous;
#[path = "integration/deploy_safety.rs"]
mod deploy_safety;
#[path = "integration/events.rs"]
mod events;
#[path = "integration/log_writer.rs"]
mod log_writer;
#[path = "integration/on_disk.rs"]
mod on_disk;
#[path = "integration/queue_crash.rs"]
mod queue_crash;
#[path = "integration/queue_disk_full.rs"]
mod queue_disk_full;
#[path = "integration/queue_runs.rs"]
mod queue_runs;
#[path = "integration/registry.rs"]
mod registry;
#[path = "integration/robustness.rs"]
mod robustness;
#[path = "integration/security.rs"]
mod security;
#[path = "integration/settings_problems.rs"]
mod settings_problems;
#[path = "integration/singleton.rs"]
mod singleton;
#[path = "integration/status_word.rs"]
mod status_word;
#[path = "integration/triggered.rs"]
mod triggered;
