//! The `jobhost` binary: parse arguments, run, map the outcome to an exit code
//! (0 ok, 1 failed operation, 2 bad usage — clap exits with 2 on its own).

use clap::Parser;

fn main() {
    let cli = jobhost::cli::Cli::parse();
    match jobhost::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("jobhost: {e:#}");
            std::process::exit(1);
        }
    }
}
