//! The `jobhost` binary: parse arguments, run, map the outcome to an exit code
//! (0 ok, 1 failed operation, 2 bad usage — clap exits with 2 on its own).

use clap::Parser;

fn main() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(jobhost::runner::spawn::EXEC_ARG)) {
        std::process::exit(jobhost::runner::spawn::exec_trampoline(args));
    }
    let cli = jobhost::cli::Cli::parse();
    match jobhost::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("jobhost: {e:#}");
            std::process::exit(1);
        }
    }
}
