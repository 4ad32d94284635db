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
    // One async worker thread by default: the runner's own work is waiting on
    // children, sockets and timers, and a second worker mostly adds wake-ups between
    // threads (measured: a quarter more of the runner's CPU per unit, and a slower run).
    // Blocking work (history, discovery, reports) has the runtime's blocking pool.
    // `RUNNER_WORKER_THREADS=N` overrides it.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(
        std::env::var("RUNNER_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1),
    );
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runner: cannot start the async runtime: {e}");
            std::process::exit(exit_code::INFRASTRUCTURE);
        }
    };
    // The command runs on a worker thread, never on the main thread: as a child subreaper
    // the runner gets orphans as children of its main thread, which therefore starts no
    // process of its own (see `exec`'s orphans).
    let command = runtime.spawn(app::run(cli));
    let result = match runtime.block_on(command) {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(layered_runner::error::Error::infrastructure(format!(
                "runner: the command's task failed: {e}"
            ))),
        },
    };
    // The one place a command's error is printed.
    let code = match result {
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
