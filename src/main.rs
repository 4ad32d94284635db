//! `runner`: parse the command line, run the command, print its error if it has one,
//! exit with the outcome's code.

use clap::Parser;
use layered_runner::{app, cli::Cli, exit_code};

fn main() {
    // A watchdog started by a run (`RUNNER_WATCHDOG` set) never returns from here.
    layered_runner::watchdog::main_if_requested();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::PASSED
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runner: cannot start the async runtime: {e}");
            std::process::exit(exit_code::INFRASTRUCTURE);
        }
    };
    // The one place a command's error is printed.
    let code = match runtime.block_on(app::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    };
    // Every report is written by now: blocking tasks still running (a sampler between
    // two reads) are not waited for.
    runtime.shutdown_background();
    std::process::exit(code);
}
